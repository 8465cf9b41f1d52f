//! What a network can render, and the pure planner that degrades an
//! operation to what it can.
//!
//! [`degrade`] reads the capabilities, the referenced message and the clock
//! (passed in, so it stays pure): an edit the network cannot apply (no
//! edits, the target never arrived, or the edit window closed) becomes a
//! corrected copy replying to the original; a reaction it cannot show
//! becomes a short reply; an over-long text is split in the network's own
//! unit; files that do not fit become a line saying so; a message delivered
//! late shows its original time where the network only renders text.

use std::time::Duration;

use time::OffsetDateTime;

use crate::adapter::Outbound;
use crate::lines::{human_size, not_bridged, push_line};
use crate::model::{Attachment, AttachmentKind, EventKind, TargetRef};
use crate::richtext::{RichText, TextUnit};

/// A length limit in a network's own unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimit {
    /// The most units allowed.
    pub max: usize,
    /// What is counted.
    pub unit: TextUnit,
}

impl TextLimit {
    /// No limit.
    pub const NONE: Self = Self {
        max: usize::MAX,
        unit: TextUnit::Chars,
    };
}

/// Which reactions a network can set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reactions {
    /// None: a reaction becomes a short reply.
    None,
    /// Any emoji.
    Any,
    /// Only these (Telegram's allowed set): others become a short reply.
    /// Compared without variation selectors (U+FE0F). A static list, so
    /// the capabilities asked for on every send allocate nothing.
    OneOf(&'static [&'static str]),
}

/// How fast the outbox may send to a network, beyond its retry-after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pacing {
    /// Least time between two sends to one channel.
    pub per_channel: Option<Duration>,
    /// Least time between two sends on the whole account.
    pub per_account: Option<Duration>,
}

/// What a network can render. The hub reads it to degrade predictably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether sent messages can be edited.
    pub edits: bool,
    /// How long after sending an edit is still accepted.
    pub edit_window: Option<Duration>,
    /// Whether sent messages can be deleted.
    pub deletes: bool,
    /// How long after sending a delete is still accepted.
    pub delete_window: Option<Duration>,
    /// Which reactions can be set.
    pub reactions: Reactions,
    /// Whether a message can natively reply to another.
    pub replies: bool,
    /// Whether channels have threads or topics.
    pub threads: bool,
    /// Whether style spans are rendered.
    pub formatting: bool,
    /// Longest text of a message without files.
    pub text: TextLimit,
    /// Longest text sent with files (a caption); a longer one goes in
    /// messages of its own after the files.
    pub caption: TextLimit,
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
    /// The sticker formats (MIME types) the network shows as stickers; a
    /// sticker in another format (an animated Telegram sticker on Matrix)
    /// goes as its still image ([`Attachment::alt`]) or, without one, as a
    /// line saying it was not bridged, never as a file nobody can open.
    /// `None`: any format.
    pub sticker_formats: Option<&'static [&'static str]>,
    /// Whether each message shows its own time to readers (the bot API and
    /// webhooks carry `at`); where not, a late message says when it was
    /// written.
    pub renders_time: bool,
    /// Sending pace the network wants.
    pub pacing: Pacing,
    /// The slowest upload rate to allow for, in bytes per second: a send's
    /// timeout grows by its files' size at this rate, so a large upload is
    /// not cut off (and sent again) like a stalled text.
    pub min_upload_rate: u64,
}

impl Capabilities {
    /// A network that renders everything (the bot API, webhooks).
    #[must_use]
    pub fn everything() -> Self {
        Self {
            edits: true,
            edit_window: None,
            deletes: true,
            delete_window: None,
            reactions: Reactions::Any,
            replies: true,
            threads: true,
            formatting: true,
            text: TextLimit::NONE,
            caption: TextLimit::NONE,
            max_upload_bytes: u64::MAX,
            sticker_formats: None,
            renders_time: true,
            pacing: Pacing::default(),
            min_upload_rate: 256 * 1024,
        }
    }

    /// The timeout for one attempt at `op`: `base`, plus the time its files
    /// take at [`min_upload_rate`](Self::min_upload_rate).
    #[must_use]
    pub fn send_timeout(&self, op: &Outbound, base: Duration) -> Duration {
        let bytes: u64 = match &op.event.kind {
            EventKind::Message { attachments, .. } => attachments.iter().map(|a| a.size).sum(),
            _ => 0,
        };
        let rate = self.min_upload_rate.max(1);
        base.saturating_add(Duration::from_millis(bytes.saturating_mul(1000) / rate))
    }

    /// Whether the network shows a sticker of this MIME type as a sticker.
    #[must_use]
    pub fn shows_sticker(&self, mime: &str) -> bool {
        match self.sticker_formats {
            None => true,
            Some(formats) => formats.iter().any(|f| f.eq_ignore_ascii_case(mime)),
        }
    }

    fn can_react(&self, emoji: &str) -> bool {
        match &self.reactions {
            Reactions::None => false,
            Reactions::Any => true,
            // "❤️" and "❤" are one reaction: networks differ on U+FE0F.
            Reactions::OneOf(set) => {
                let bare = |s: &str| s.replace('\u{FE0F}', "");
                set.iter().any(|e| bare(e) == bare(emoji))
            }
        }
    }
}

/// What [`degrade`] needs besides the operation and the capabilities.
#[derive(Debug, Clone, Copy)]
pub struct DegradeContext {
    /// Now.
    pub now: OffsetDateTime,
    /// A message this much later than its time shows its time, where the
    /// network does not render one; `None`: never.
    pub late_after: Option<Duration>,
}

/// Whether `at` is longer ago than `window` (a closed edit or delete window).
fn closed(window: Option<Duration>, at: OffsetDateTime, now: OffsetDateTime) -> bool {
    window.is_some_and(|w| now - at > w)
}

/// Rewrites one outbound operation into what the destination can render:
/// an edit it cannot apply becomes a corrected copy, a reaction a short
/// reply, an over-long text several messages, a too-large file a notice.
/// An operation with nothing left to do (a delete of a message the network
/// never got, or past its delete window) yields no parts.
#[must_use]
pub fn degrade(out: &Outbound, caps: &Capabilities, cx: DegradeContext) -> Vec<Outbound> {
    let mut out = out.clone();
    if !adapt_kind(&mut out, caps, cx) {
        return Vec::new();
    }
    let late = !caps.renders_time
        && cx
            .late_after
            .is_some_and(|after| cx.now - out.event.at > after);
    if let EventKind::Message {
        body, attachments, ..
    } = &mut out.event.kind
    {
        fit_files(body, attachments, caps);
        if late {
            let at = out.event.at.to_offset(time::UtcOffset::UTC);
            let when = format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute()
            );
            *body = body.prefixed(&format!("[{when}] "));
        }
        if !caps.formatting {
            body.spans.clear();
        }
    }
    split_long(out, caps)
}

/// What the network cannot do with the operation's kind, done another way
/// (in place): an edit it cannot apply becomes a corrected copy replying to
/// the original, a reaction it cannot show a short reply, a reply it cannot
/// render a plain message. False when nothing is left to send: a delete
/// (or a reaction's removal) of what the network never got or can no
/// longer change.
fn adapt_kind(out: &mut Outbound, caps: &Capabilities, cx: DegradeContext) -> bool {
    let who = out.event.author.display_name.clone();
    // When the referenced message was sent: the window counts from there.
    let target_at = out.target.as_ref().map(|t| t.event.at);
    let reply_target = |out: &Outbound| {
        out.target
            .clone()
            .filter(|_| caps.replies)
            .and_then(|_| out.event.kind.target().cloned())
    };
    let edit_closed = target_at.is_some_and(|at| closed(caps.edit_window, at, cx.now));
    let delete_closed = target_at.is_some_and(|at| closed(caps.delete_window, at, cx.now));
    match &out.event.kind {
        EventKind::Edit { body, .. } if !caps.edits || out.target.is_none() || edit_closed => {
            let reply_to = reply_target(out);
            if reply_to.is_none() {
                out.target = None;
            }
            out.event.kind = EventKind::Message {
                body: body.prefixed("✏️ "),
                attachments: Vec::new(),
                reply_to,
            };
        }
        EventKind::Delete { .. } if !caps.deletes || out.target.is_none() || delete_closed => {
            return false
        }
        EventKind::Reaction {
            removed: true,
            emoji,
            ..
        } if !caps.can_react(emoji) || out.target.is_none() => return false,
        EventKind::Reaction { emoji, .. } if !caps.can_react(emoji) || out.target.is_none() => {
            let text = format!("{who} reacted {emoji}");
            let reply_to = reply_target(out);
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
    true
}

/// Keeps the files the network takes: a sticker in a format it cannot
/// show goes as its still image (still a sticker), or a line; a file
/// larger than it takes becomes a line (the shared "not bridged" wording).
fn fit_files(body: &mut RichText, attachments: &mut Vec<Attachment>, caps: &Capabilities) {
    let mut lines = Vec::new();
    let mut fit = Vec::with_capacity(attachments.len());
    for a in attachments.drain(..) {
        let a = match a {
            a if a.kind != AttachmentKind::Sticker || caps.shows_sticker(&a.mime) => a,
            // Still a sticker, in a format the network shows (Matrix sends
            // it as `m.sticker`, not a photo).
            Attachment {
                alt: Some(alt),
                kind,
                ..
            } => Attachment { kind, ..*alt },
            a => {
                let why = "a sticker in a format this network cannot show";
                lines.push(not_bridged(&a.name, Some(a.size), why));
                continue;
            }
        };
        if a.size > caps.max_upload_bytes {
            let why = format!(
                "larger than this network takes ({})",
                human_size(caps.max_upload_bytes)
            );
            lines.push(not_bridged(&a.name, Some(a.size), &why));
            continue;
        }
        fit.push(a);
    }
    *attachments = fit;
    for line in lines {
        push_line(body, &line);
    }
}

/// A message too long for the network in pieces of its text limit, in its
/// own unit. With files whose caption cannot hold the text: the files
/// first (with the reply), then the text. The reply goes with the first
/// piece only.
fn split_long(out: Outbound, caps: &Capabilities) -> Vec<Outbound> {
    let (body, has_files) = match &out.event.kind {
        EventKind::Message {
            body, attachments, ..
        } => (body.clone(), !attachments.is_empty()),
        _ => return vec![out],
    };
    let limit = if has_files { caps.caption } else { caps.text };
    if body.len_in(limit.unit) <= limit.max {
        return vec![out];
    }
    let mut parts = Vec::new();
    let mut rest = out.clone();
    if has_files {
        let mut files = out;
        if let EventKind::Message { body, .. } = &mut files.event.kind {
            *body = RichText::default();
        }
        parts.push(files);
        if let EventKind::Message {
            attachments,
            reply_to,
            ..
        } = &mut rest.event.kind
        {
            attachments.clear();
            *reply_to = None::<TargetRef>;
        }
        rest.target = None;
    }
    for (i, piece) in body
        .split_in(caps.text.max, caps.text.unit)
        .into_iter()
        .enumerate()
    {
        let mut part = rest.clone();
        if let EventKind::Message {
            body,
            attachments,
            reply_to,
        } = &mut part.event.kind
        {
            *body = piece;
            if i > 0 {
                attachments.clear();
                *reply_to = None::<TargetRef>;
                part.target = None;
            }
        }
        parts.push(part);
    }
    parts
}

#[cfg(test)]
mod tests {
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
            nick_format: None,
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

    fn cx() -> DegradeContext {
        DegradeContext {
            now: OffsetDateTime::UNIX_EPOCH,
            late_after: None,
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
        let parts = degrade(&outbound(edit, Some("m1")), &caps, cx());
        assert_eq!(parts.len(), 1);
        assert_eq!(text_of(&parts[0]), "✏️ fixed");
        assert_eq!(parts[0].target.as_ref().unwrap().first().as_str(), "m1");
    }

    #[test]
    fn reaction_becomes_short_reply_and_delete_of_unknown_is_dropped() {
        let caps = Capabilities {
            reactions: Reactions::None,
            ..Capabilities::everything()
        };
        let react = EventKind::Reaction {
            target: TargetRef::Event(EventId(1)),
            emoji: "👍".into(),
            removed: false,
        };
        let parts = degrade(&outbound(react, Some("m1")), &caps, cx());
        assert_eq!(text_of(&parts[0]), "ann reacted 👍");
        let delete = EventKind::Delete {
            by_moderator: false,
            target: TargetRef::Event(EventId(1)),
        };
        assert!(degrade(&outbound(delete, None), &Capabilities::everything(), cx()).is_empty());
    }

    #[test]
    fn long_text_is_split_and_only_first_piece_replies() {
        let caps = Capabilities {
            text: TextLimit {
                max: 5,
                unit: TextUnit::Chars,
            },
            ..Capabilities::everything()
        };
        let msg = EventKind::Message {
            body: RichText::plain("abcdefghij"),
            attachments: Vec::new(),
            reply_to: Some(TargetRef::Event(EventId(1))),
        };
        let parts = degrade(&outbound(msg, Some("m1")), &caps, cx());
        assert_eq!(parts.len(), 2);
        assert_eq!(text_of(&parts[0]), "abcde");
        assert!(parts[0].target.is_some());
        assert!(parts[1].target.is_none());
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use crate::adapter::Reference;
    use crate::ids::{ChannelId, EventId, GatewayName, RemoteId};
    use crate::model::{AttachmentKind, Author, BlobRef, Event, Origin};

    fn event(kind: EventKind, at: OffsetDateTime) -> Event {
        Event {
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
            at,
            kind,
        }
    }

    fn op(kind: EventKind, at: OffsetDateTime, target_at: Option<OffsetDateTime>) -> Outbound {
        Outbound {
            gateway: GatewayName::new("gw").unwrap(),
            channel: ChannelId::new("c").unwrap(),
            target: target_at.map(|t| Reference {
                event: Box::new(event(
                    EventKind::Message {
                        body: RichText::plain("orig"),
                        attachments: Vec::new(),
                        reply_to: None,
                    },
                    t,
                )),
                ids: vec![RemoteId::new("m1").unwrap()],
            }),
            event: event(kind, at),
            nick_format: None,
        }
    }

    fn text(o: &Outbound) -> String {
        match &o.event.kind {
            EventKind::Message { body, .. } => body.text.clone(),
            other => panic!("{other:?}"),
        }
    }

    const T0: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    #[test]
    fn an_edit_after_the_window_becomes_a_corrected_copy_and_a_late_delete_nothing() {
        let caps = Capabilities {
            edit_window: Some(Duration::from_secs(48 * 3600)),
            delete_window: Some(Duration::from_secs(48 * 3600)),
            ..Capabilities::everything()
        };
        let edit = EventKind::Edit {
            target: TargetRef::Event(EventId(1)),
            body: RichText::plain("fixed"),
        };
        let within = DegradeContext {
            now: T0 + Duration::from_secs(3600),
            late_after: None,
        };
        let after = DegradeContext {
            now: T0 + Duration::from_secs(49 * 3600),
            late_after: None,
        };
        let parts = degrade(&op(edit.clone(), within.now, Some(T0)), &caps, within);
        assert!(matches!(parts[0].event.kind, EventKind::Edit { .. }));
        let parts = degrade(&op(edit, after.now, Some(T0)), &caps, after);
        assert_eq!(text(&parts[0]), "✏️ fixed");
        let delete = EventKind::Delete {
            by_moderator: false,
            target: TargetRef::Event(EventId(1)),
        };
        assert_eq!(
            degrade(&op(delete.clone(), within.now, Some(T0)), &caps, within).len(),
            1
        );
        assert!(degrade(&op(delete, after.now, Some(T0)), &caps, after).is_empty());
    }

    #[test]
    fn reactions_outside_the_allowed_set_become_a_reply() {
        let caps = Capabilities {
            reactions: Reactions::OneOf(&["👍"]),
            ..Capabilities::everything()
        };
        let react = |e: &str| EventKind::Reaction {
            target: TargetRef::Event(EventId(1)),
            emoji: e.into(),
            removed: false,
        };
        let cx = DegradeContext {
            now: T0,
            late_after: None,
        };
        let ok = degrade(&op(react("👍"), T0, Some(T0)), &caps, cx);
        assert!(matches!(ok[0].event.kind, EventKind::Reaction { .. }));
        let other = degrade(&op(react("🦀"), T0, Some(T0)), &caps, cx);
        assert_eq!(text(&other[0]), "ann reacted 🦀");
    }

    #[test]
    fn text_is_split_in_the_networks_unit_and_files_go_first_when_the_caption_is_too_short() {
        // 3 emoji = 6 UTF-16 units; a limit of 4 units takes two per piece.
        let caps = Capabilities {
            text: TextLimit {
                max: 4,
                unit: TextUnit::Utf16,
            },
            caption: TextLimit {
                max: 2,
                unit: TextUnit::Utf16,
            },
            ..Capabilities::everything()
        };
        let file = Attachment {
            alt: None,
            kind: AttachmentKind::Image,
            name: "a.png".into(),
            mime: "image/png".into(),
            size: 10,
            content: BlobRef {
                sha256: "ab".repeat(32),
            },
        };
        let msg = EventKind::Message {
            body: RichText::plain("😀😀😀"),
            attachments: vec![file],
            reply_to: Some(TargetRef::Event(EventId(1))),
        };
        let cx = DegradeContext {
            now: T0,
            late_after: None,
        };
        let parts = degrade(&op(msg, T0, Some(T0)), &caps, cx);
        let texts: Vec<String> = parts.iter().map(text).collect();
        assert_eq!(texts, ["", "😀😀", "😀"]);
        let EventKind::Message { attachments, .. } = &parts[0].event.kind else {
            panic!()
        };
        assert_eq!(attachments.len(), 1, "the files first");
        assert!(parts[0].target.is_some(), "with the reply");
        assert!(parts[1..].iter().all(|p| p.target.is_none()));
    }

    #[test]
    fn a_late_message_shows_its_time_where_the_network_does_not() {
        let caps = Capabilities {
            renders_time: false,
            ..Capabilities::everything()
        };
        let msg = EventKind::Message {
            body: RichText::plain("hi"),
            attachments: Vec::new(),
            reply_to: None,
        };
        let late = DegradeContext {
            now: T0 + Duration::from_secs(600),
            late_after: Some(Duration::from_secs(120)),
        };
        let parts = degrade(&op(msg.clone(), T0, None), &caps, late);
        assert_eq!(text(&parts[0]), "[1970-01-01 00:00 UTC] hi");
        let on_time = DegradeContext {
            now: T0 + Duration::from_secs(60),
            ..late
        };
        assert_eq!(
            text(&degrade(&op(msg.clone(), T0, None), &caps, on_time)[0]),
            "hi"
        );
        // The bot API shows `at` itself: no prefix there.
        let api = Capabilities::everything();
        assert_eq!(text(&degrade(&op(msg, T0, None), &api, late)[0]), "hi");
    }

    #[test]
    fn a_sticker_the_network_cannot_show_goes_as_its_still_or_a_line() {
        let caps = Capabilities {
            sticker_formats: Some(&["image/webp"]),
            ..Capabilities::everything()
        };
        let file = |mime: &str, alt: Option<Attachment>| Attachment {
            kind: AttachmentKind::Sticker,
            name: "sticker".into(),
            mime: mime.into(),
            size: 10,
            content: BlobRef {
                sha256: "ab".repeat(32),
            },
            alt: alt.map(Box::new),
        };
        let still = Attachment {
            kind: AttachmentKind::Image,
            mime: "image/webp".into(),
            name: "sticker.webp".into(),
            ..file("image/webp", None)
        };
        let msg = |a: Attachment| EventKind::Message {
            body: RichText::plain("😀"),
            attachments: vec![a],
            reply_to: None,
        };
        let cx = DegradeContext {
            now: T0,
            late_after: None,
        };
        let animated = file("application/x-tgsticker", Some(still.clone()));
        let parts = degrade(&op(msg(animated), T0, None), &caps, cx);
        let EventKind::Message { attachments, .. } = &parts[0].event.kind else {
            panic!()
        };
        assert_eq!(attachments[0].mime, "image/webp", "its still image");
        assert_eq!(
            attachments[0].kind,
            AttachmentKind::Sticker,
            "still a sticker"
        );
        let bare = file("video/webm", None);
        let parts = degrade(&op(msg(bare), T0, None), &caps, cx);
        let EventKind::Message {
            attachments, body, ..
        } = &parts[0].event.kind
        else {
            panic!()
        };
        assert!(attachments.is_empty(), "never a file nobody can open");
        assert!(
            body.text.contains("[file not bridged: sticker"),
            "{}",
            body.text
        );
        // A network that shows the format gets the sticker itself.
        let webp = file("image/webp", Some(still));
        let parts = degrade(&op(msg(webp), T0, None), &caps, cx);
        let EventKind::Message { attachments, .. } = &parts[0].event.kind else {
            panic!()
        };
        assert_eq!(attachments[0].name, "sticker");
    }

    #[test]
    fn uploads_get_time_in_proportion_to_their_size() {
        let caps = Capabilities {
            min_upload_rate: 1_000_000,
            ..Capabilities::everything()
        };
        let file = Attachment {
            alt: None,
            kind: AttachmentKind::File,
            name: "big".into(),
            mime: "application/octet-stream".into(),
            size: 40_000_000,
            content: BlobRef {
                sha256: "ab".repeat(32),
            },
        };
        let msg = EventKind::Message {
            body: RichText::plain(""),
            attachments: vec![file],
            reply_to: None,
        };
        let base = Duration::from_secs(10);
        assert_eq!(
            caps.send_timeout(&op(msg, T0, None), base),
            Duration::from_secs(50)
        );
    }
}
