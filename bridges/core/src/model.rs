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
    /// An avatar URL or media reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Whether the author is a bot.
    #[serde(default)]
    pub is_bot: bool,
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
pub enum Membership {
    /// Someone joined the channel.
    Joined,
    /// Someone left the channel.
    Left,
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
            Self::Unknown => "unknown",
        }
    }

    /// The referenced message, for the kinds that have one.
    #[must_use]
    pub fn target(&self) -> Option<&TargetRef> {
        match self {
            Self::Message { reply_to, .. } => reply_to.as_ref(),
            Self::Edit { target, .. } | Self::Delete { target } | Self::Reaction { target, .. } => {
                Some(target)
            }
            _ => None,
        }
    }

    /// Mutable access to the referenced message, used by the hub to resolve it.
    pub fn target_mut(&mut self) -> Option<&mut TargetRef> {
        match self {
            Self::Message { reply_to, .. } => reply_to.as_mut(),
            Self::Edit { target, .. } | Self::Delete { target } | Self::Reaction { target, .. } => {
                Some(target)
            }
            _ => None,
        }
    }
}

/// What sort of file an attachment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
}

/// An event as an adapter hands it to the hub, before it has a hub id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Where it was said.
    pub origin: Origin,
    /// Who said it.
    pub author: Author,
    /// When the network says it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: EventKind,
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
    }
}
