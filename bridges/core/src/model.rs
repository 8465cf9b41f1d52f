//! The normalized model: what every network's messages are translated into.
//!
//! An adapter builds a [`NewEvent`] from what its network said and hands it to
//! the hub; the hub commits it and gives it an [`EventId`], making it an
//! [`Event`]. References between messages (`reply_to`, edit/delete/reaction
//! targets) are [`TargetRef`]s: an adapter only knows its network's
//! [`RemoteId`], the hub resolves it to an [`EventId`] through its message map.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AccountId, ChannelId, EventId, RemoteId};
use crate::richtext::RichText;

/// Where an event was said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The account that received it.
    pub account: AccountId,
    /// The conversation on that account.
    pub channel: ChannelId,
    /// The network's id for it; with `account` and `channel` this is the
    /// de-duplication key for redelivered events.
    pub remote_id: RemoteId,
    /// A thread or topic within the channel, where the network has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// Who said it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// The author's id on the origin network.
    pub remote_id: String,
    /// The name to show.
    pub display_name: String,
    /// A handle, where the network has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The author's picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<Avatar>,
    /// Whether the author is a bot.
    #[serde(default)]
    pub is_bot: bool,
}

/// An author's picture: bytes the hub stored (what network adapters give,
/// since a network's own file URL may carry a secret, as Telegram's carry
/// the bot token), or a public URL a bot named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Avatar {
    /// Stored in the hub's blob store.
    Blob(BlobRef),
    /// A URL given by a bot through the API (older rows store this form).
    Url(String),
}

impl Avatar {
    /// A URL for clients: the URL itself, or the bot API's blob route.
    #[must_use]
    pub fn url(&self) -> String {
        match self {
            Self::Url(u) => u.clone(),
            Self::Blob(b) => format!("/v1/blobs/{}", b.sha256),
        }
    }
}

/// A reference to another message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "id", rename_all = "snake_case")]
pub enum TargetRef {
    /// The hub's id: always what a committed event holds when the target was known.
    Event(EventId),
    /// The origin network's id, as an adapter reports it before resolution;
    /// it stays like this when the target was never seen by the hub.
    Remote(RemoteId),
}

impl TargetRef {
    /// The hub id, if the reference was resolved.
    #[must_use]
    pub fn event_id(&self) -> Option<EventId> {
        match self {
            Self::Event(id) => Some(*id),
            Self::Remote(_) => None,
        }
    }
}

/// A join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Membership {
    /// Someone joined the channel.
    Joined,
    /// Someone left the channel.
    Left,
    /// A change written by a newer switchboard.
    #[serde(other)]
    Other,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new message.
    Message {
        /// The text with its styles.
        body: RichText,
        /// Files, each stored by the hub as a blob.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Attachment>,
        /// The message this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<TargetRef>,
    },
    /// A message's text was changed.
    Edit {
        /// The edited message.
        target: TargetRef,
        /// Its new text.
        body: RichText,
    },
    /// A message was deleted.
    Delete {
        /// The deleted message.
        target: TargetRef,
        /// Deleted by a moderator of the channel (a Matrix user whose power
        /// level allows `redact`, a Telegram chat admin) rather than by the
        /// message's author, as the origin network says. The hub accepts a
        /// delete only from the author or a moderator.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_moderator: bool,
    },
    /// A reaction was added or removed.
    Reaction {
        /// The message reacted to.
        target: TargetRef,
        /// The emoji.
        emoji: String,
        /// True when the reaction was taken back.
        #[serde(default)]
        removed: bool,
    },
    /// Someone joined or left.
    Membership {
        /// Which of the two.
        change: Membership,
    },
    /// A status message of the bridge itself.
    Notice {
        /// The notice text.
        body: RichText,
    },
    /// A command to switchboard itself, written in its chat in the
    /// network's own form (`/link`, `!sb link`): the hub acts on it and
    /// answers in that chat; it is never routed (see [`crate::commands`]).
    Command {
        /// The command's name, lowercase (`link`).
        name: String,
        /// The words after it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
        /// Whether the network says the sender administers the chat;
        /// `None` when it could not say (it did not answer).
        #[serde(default)]
        sender_is_admin: Option<bool>,
        /// The chat's name as people see it (a group's title), where the
        /// network has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_name: Option<String>,
    },
    /// A kind written by a newer switchboard; kept so old code can skip it.
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// The short name used in APIs and metrics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::Reaction { .. } => "reaction",
            Self::Membership { .. } => "membership",
            Self::Notice { .. } => "notice",
            Self::Command { .. } => "command",
            Self::Unknown => "unknown",
        }
    }

    /// The referenced message, for the kinds that have one.
    #[must_use]
    pub fn target(&self) -> Option<&TargetRef> {
        match self {
            Self::Message { reply_to, .. } => reply_to.as_ref(),
            Self::Edit { target, .. }
            | Self::Delete { target, .. }
            | Self::Reaction { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Mutable access to the referenced message, used by the hub to resolve it.
    pub fn target_mut(&mut self) -> Option<&mut TargetRef> {
        match self {
            Self::Message { reply_to, .. } => reply_to.as_mut(),
            Self::Edit { target, .. }
            | Self::Delete { target, .. }
            | Self::Reaction { target, .. } => Some(target),
            _ => None,
        }
    }
}

/// What sort of file an attachment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttachmentKind {
    /// A picture.
    Image,
    /// A video.
    Video,
    /// An audio file.
    Audio,
    /// A voice note.
    Voice,
    /// Any other file.
    File,
    /// A sticker.
    Sticker,
    /// A kind written by a newer switchboard: treated as a file.
    #[serde(other)]
    Other,
}

/// Content the hub stored by its SHA-256, so a queued message keeps its bytes
/// across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// What sort of file it is.
    pub kind: AttachmentKind,
    /// Its file name.
    pub name: String,
    /// Its MIME type.
    pub mime: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where the hub keeps its bytes.
    pub content: BlobRef,
    /// What to send instead where the destination cannot show this file's
    /// format ([`Capabilities::sticker_formats`](crate::Capabilities)): a
    /// still image of an animated sticker, as Telegram gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<Box<Attachment>>,
}

impl Attachment {
    /// This file and its stand-in, for what must keep both (blob
    /// references, validation).
    pub fn with_alt(&self) -> impl Iterator<Item = &Attachment> {
        std::iter::once(self).chain(self.alt.as_deref())
    }
}

/// Limits [`NewEvent::validate`] applies.
pub mod limits {
    /// Longest text body, in bytes.
    pub const TEXT_BYTES: usize = 1 << 20;
    /// Longest name, id or emoji field, in bytes.
    pub const FIELD_BYTES: usize = 4096;
    /// Most attachments on one message.
    pub const ATTACHMENTS: usize = 100;
}

/// An event as an adapter hands it to the hub, before it has a hub id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Where it was said.
    pub origin: Origin,
    /// The event's de-duplication key on its channel when the message id in
    /// `origin.remote_id` does not identify the event itself (an edit
    /// reuses the edited message's id; a reaction has none). `None`: the
    /// remote id is the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Who said it.
    pub author: Author,
    /// When the network says it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: EventKind,
}

impl NewEvent {
    /// The key a redelivery of this event is recognised by.
    #[must_use]
    pub fn dedupe_key(&self) -> &str {
        self.key
            .as_deref()
            .unwrap_or(self.origin.remote_id.as_str())
    }

    /// Checks what every store and every network needs of an event: spans
    /// on character boundaries, a time that can be written down, bounded
    /// lengths, no control characters in keys. The hub rejects (skips and
    /// logs) an event that fails, instead of failing its commit forever.
    ///
    /// # Errors
    /// The first problem found, as a sentence.
    pub fn validate(&self) -> Result<(), String> {
        let year = self.at.year();
        if !(1970..=9999).contains(&year) {
            return Err(format!("timestamp year {year} is outside 1970-9999"));
        }
        if let Some(k) = &self.key {
            if k.is_empty() || k.len() > 255 || k.chars().any(char::is_control) {
                return Err("key must be 1-255 bytes without control characters".into());
            }
        }
        let field = |what: &str, v: &str| {
            if v.len() > limits::FIELD_BYTES {
                Err(format!(
                    "{what} is longer than {} bytes",
                    limits::FIELD_BYTES
                ))
            } else {
                Ok(())
            }
        };
        field("author id", &self.author.remote_id)?;
        field("author name", &self.author.display_name)?;
        if let Some(u) = &self.author.username {
            field("author username", u)?;
        }
        if let Some(t) = &self.origin.thread {
            field("thread", t)?;
        }
        let text = |body: &RichText| {
            if body.text.len() > limits::TEXT_BYTES {
                return Err(format!("text is longer than {} bytes", limits::TEXT_BYTES));
            }
            body.validate()
        };
        match &self.kind {
            EventKind::Message {
                body, attachments, ..
            } => {
                text(body)?;
                if attachments.len() > limits::ATTACHMENTS {
                    return Err(format!("more than {} attachments", limits::ATTACHMENTS));
                }
                for a in attachments.iter().flat_map(Attachment::with_alt) {
                    field("attachment name", &a.name)?;
                    field("attachment type", &a.mime)?;
                    let hex = &a.content.sha256;
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err("attachment content is not a SHA-256 reference".into());
                    }
                }
            }
            EventKind::Edit { body, .. } | EventKind::Notice { body } => text(body)?,
            EventKind::Reaction { emoji, .. } => {
                if emoji.is_empty() {
                    return Err("a reaction needs an emoji".into());
                }
                field("emoji", emoji)?;
            }
            EventKind::Command {
                name,
                args,
                channel_name,
                ..
            } => {
                if name.is_empty()
                    || name.len() > 64
                    || name.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err("a command's name is one word of 1-64 bytes".into());
                }
                if args.len() > crate::commands::MAX_ARGS {
                    return Err(format!(
                        "more than {} words after a command",
                        crate::commands::MAX_ARGS
                    ));
                }
                for a in args {
                    field("command word", a)?;
                }
                if let Some(n) = channel_name {
                    field("channel name", n)?;
                }
            }
            EventKind::Unknown => return Err("unknown event kind".into()),
            EventKind::Delete { .. } | EventKind::Membership { .. } => {}
        }
        Ok(())
    }
}

/// An event the hub has committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The hub's id.
    pub id: EventId,
    /// Where it was said.
    pub origin: Origin,
    /// Who said it.
    pub author: Author,
    /// When the network says it happened; late deliveries keep this time.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// Gives a new event its committed id.
    #[must_use]
    pub fn from_new(id: EventId, new: NewEvent) -> Self {
        // The dedupe key is the hub's business, not part of the event.
        Self {
            id,
            origin: new.origin,
            author: new.author,
            at: new.at,
            kind: new.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_what_cannot_be_stored_or_sent() {
        let ok = NewEvent {
            origin: Origin {
                account: "telegram.main".parse().unwrap(),
                channel: crate::ids::ChannelId::new("-100").unwrap(),
                remote_id: RemoteId::new("7").unwrap(),
                thread: None,
            },
            key: None,
            author: Author::default(),
            at: OffsetDateTime::UNIX_EPOCH,
            kind: EventKind::Message {
                body: RichText::plain("héllo"),
                attachments: Vec::new(),
                reply_to: None,
            },
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.dedupe_key(), "7");
        let mut off_boundary = ok.clone();
        off_boundary.kind = EventKind::Message {
            body: RichText {
                text: "héllo".into(),
                spans: vec![crate::richtext::Span {
                    start: 0,
                    end: 2,
                    style: crate::richtext::Style::Bold,
                }],
            },
            attachments: Vec::new(),
            reply_to: None,
        };
        assert!(off_boundary.validate().is_err());
        let mut far = ok.clone();
        far.at = OffsetDateTime::from_unix_timestamp(-70_000_000_000).unwrap();
        assert!(far.validate().unwrap_err().contains("year"));
        let mut keyed = ok;
        keyed.key = Some("edit\u{0}".into());
        assert!(keyed.validate().is_err());
    }

    #[test]
    fn avatars_read_old_url_rows_and_blob_refs() {
        let old: Avatar = serde_json::from_str(r#""https://x/a.png""#).unwrap();
        assert_eq!(old, Avatar::Url("https://x/a.png".into()));
        let blob = Avatar::Blob(BlobRef {
            sha256: "ab".repeat(32),
        });
        let json = serde_json::to_string(&blob).unwrap();
        assert_eq!(serde_json::from_str::<Avatar>(&json).unwrap(), blob);
    }

    #[test]
    fn event_kinds_serialize_tagged_and_unknown_kinds_survive() {
        let kind = EventKind::Reaction {
            target: TargetRef::Event(EventId(7)),
            emoji: "👍".into(),
            removed: false,
        };
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(
            json,
            r#"{"type":"reaction","target":{"by":"event","id":7},"emoji":"👍","removed":false}"#
        );
        assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), kind);
        let future: EventKind = serde_json::from_str(r#"{"type":"poll"}"#).unwrap();
        assert_eq!(future, EventKind::Unknown);
        // Every enum a stored row holds reads values a newer version wrote.
        let style: crate::richtext::Style = serde_json::from_str(r#"{"style":"rainbow"}"#).unwrap();
        assert_eq!(style, crate::richtext::Style::Unknown);
        let kind: AttachmentKind = serde_json::from_str(r#""hologram""#).unwrap();
        assert_eq!(kind, AttachmentKind::Other);
        let change: Membership = serde_json::from_str(r#""banned""#).unwrap();
        assert_eq!(change, Membership::Other);
    }
}
