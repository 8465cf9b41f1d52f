//! What a network can render, and the pure planner that degrades an
//! operation to what it can.

use std::time::Duration;

use crate::adapter::Outbound;
use crate::model::{Attachment, EventKind, TargetRef};
use crate::richtext::RichText;

/// What a network can render. The hub reads it to degrade predictably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether sent messages can be edited.
    pub edits: bool,
    /// How long after sending an edit is still accepted.
    pub edit_window: Option<Duration>,
    /// Whether sent messages can be deleted.
    pub deletes: bool,
    /// Whether reactions can be set.
    pub reactions: bool,
    /// Whether a message can natively reply to another.
    pub replies: bool,
    /// Whether channels have threads or topics.
    pub threads: bool,
    /// Whether style spans are rendered.
    pub formatting: bool,
    /// Longest text in characters.
    pub max_text_chars: usize,
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
}

impl Capabilities {
    /// A network that renders everything (the bot API, webhooks).
    #[must_use]
    pub fn everything() -> Self {
        Self {
            edits: true,
            edit_window: None,
            deletes: true,
            reactions: true,
            replies: true,
            threads: true,
            formatting: true,
            max_text_chars: usize::MAX,
            max_upload_bytes: u64::MAX,
        }
    }
}

/// Rewrites one outbound operation into what the destination can render:
/// an edit it cannot apply becomes a corrected copy, a reaction a short
/// reply, an over-long text several messages, a too-large file a notice.
/// An operation with nothing left to do (a delete of a message the network
/// never got) yields no parts.
#[must_use]
pub fn degrade(out: &Outbound, caps: &Capabilities) -> Vec<Outbound> {
    let mut out = out.clone();
    let who = out.event.author.display_name.clone();
    let reply_target = |out: &Outbound| {
        out.target
            .clone()
            .filter(|_| caps.replies)
            .and_then(|_| out.event.kind.target().cloned())
    };
    match &out.event.kind {
        EventKind::Edit { body, .. } if !caps.edits || out.target.is_none() => {
            let reply_to = reply_target(&out);
            if reply_to.is_none() {
                out.target = None;
            }
            out.event.kind = EventKind::Message {
                body: body.prefixed("✏️ "),
                attachments: Vec::new(),
                reply_to,
            };
        }
        EventKind::Delete { .. } if !caps.deletes || out.target.is_none() => return Vec::new(),
        EventKind::Reaction { removed: true, .. } if !caps.reactions || out.target.is_none() => {
            return Vec::new()
        }
        EventKind::Reaction { emoji, .. } if !caps.reactions || out.target.is_none() => {
            let text = format!("{who} reacted {emoji}");
            let reply_to = reply_target(&out);
            if reply_to.is_none() {
                out.target = None;
            }
            out.event.kind = EventKind::Message {
                body: RichText::plain(text),
                attachments: Vec::new(),
                reply_to,
            };
        }
        EventKind::Message { .. } if !caps.replies || out.target.is_none() => {
            out.target = None;
        }
        _ => {}
    }
    if let EventKind::Message {
        body, attachments, ..
    } = &mut out.event.kind
    {
        let (fit, too_big): (Vec<Attachment>, Vec<Attachment>) = attachments
            .drain(..)
            .partition(|a| a.size <= caps.max_upload_bytes);
        *attachments = fit;
        for a in too_big {
            body.text.push_str(&format!(
                "\n[file {} ({} bytes) is too large for this network]",
                a.name, a.size
            ));
        }
        if !caps.formatting {
            body.spans.clear();
        }
    }
    let body = match &out.event.kind {
        EventKind::Message { body, .. } if body.char_len() > caps.max_text_chars => body.clone(),
        _ => return vec![out],
    };
    body.split(caps.max_text_chars)
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut part = out.clone();
            if let EventKind::Message {
                body,
                attachments,
                reply_to,
            } = &mut part.event.kind
            {
                *body = piece;
                // Files and the reply go with the first piece only.
                if i > 0 {
                    attachments.clear();
                    *reply_to = None::<TargetRef>;
                    part.target = None;
                }
            }
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::ids::{ChannelId, EventId, GatewayName, RemoteId};
    use crate::model::{Author, Event, Origin};

    fn outbound(kind: EventKind, target: Option<&str>) -> Outbound {
        let event = Event {
            id: EventId(2),
            origin: Origin {
                account: "api.bots".parse().unwrap(),
                channel: ChannelId::new("api").unwrap(),
                remote_id: RemoteId::new("r").unwrap(),
                thread: None,
            },
            author: Author {
                display_name: "ann".into(),
                ..Author::default()
            },
            at: OffsetDateTime::UNIX_EPOCH,
            kind: kind.clone(),
        };
        Outbound {
            gateway: GatewayName::new("gw").unwrap(),
            channel: ChannelId::new("c").unwrap(),
            target: target.map(|t| crate::adapter::Reference {
                event: Box::new(event.clone()),
                ids: vec![RemoteId::new(t).unwrap()],
            }),
            event: Event {
                id: EventId(2),
                origin: Origin {
                    account: "api.bots".parse().unwrap(),
                    channel: ChannelId::new("api").unwrap(),
                    remote_id: RemoteId::new("r").unwrap(),
                    thread: None,
                },
                author: Author {
                    display_name: "ann".into(),
                    ..Author::default()
                },
                at: OffsetDateTime::UNIX_EPOCH,
                kind,
            },
        }
    }

    fn text_of(o: &Outbound) -> &str {
        match &o.event.kind {
            EventKind::Message { body, .. } => &body.text,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn edit_without_edit_support_becomes_corrected_copy() {
        let caps = Capabilities {
            edits: false,
            ..Capabilities::everything()
        };
        let edit = EventKind::Edit {
            target: TargetRef::Event(EventId(1)),
            body: RichText::plain("fixed"),
        };
        let parts = degrade(&outbound(edit, Some("m1")), &caps);
        assert_eq!(parts.len(), 1);
        assert_eq!(text_of(&parts[0]), "✏️ fixed");
        assert_eq!(parts[0].target.as_ref().unwrap().first().as_str(), "m1");
    }

    #[test]
    fn reaction_becomes_short_reply_and_delete_of_unknown_is_dropped() {
        let caps = Capabilities {
            reactions: false,
            ..Capabilities::everything()
        };
        let react = EventKind::Reaction {
            target: TargetRef::Event(EventId(1)),
            emoji: "👍".into(),
            removed: false,
        };
        let parts = degrade(&outbound(react, Some("m1")), &caps);
        assert_eq!(text_of(&parts[0]), "ann reacted 👍");
        let delete = EventKind::Delete {
            target: TargetRef::Event(EventId(1)),
        };
        assert!(degrade(&outbound(delete, None), &Capabilities::everything()).is_empty());
    }

    #[test]
    fn long_text_is_split_and_only_first_piece_replies() {
        let caps = Capabilities {
            max_text_chars: 5,
            ..Capabilities::everything()
        };
        let msg = EventKind::Message {
            body: RichText::plain("abcdefghij"),
            attachments: Vec::new(),
            reply_to: Some(TargetRef::Event(EventId(1))),
        };
        let parts = degrade(&outbound(msg, Some("m1")), &caps);
        assert_eq!(parts.len(), 2);
        assert_eq!(text_of(&parts[0]), "abcde");
        assert!(parts[0].target.is_some());
        assert!(parts[1].target.is_none());
    }
}
