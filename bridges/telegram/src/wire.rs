//! The Bot API objects switchboard reads, as Telegram sends them. Only the
//! fields used are declared; unknown fields are ignored, so a newer Bot API
//! does not break decoding. (Why not teloxide-core's types: see the crate
//! docs.)

use serde::{Deserialize, Serialize};

/// One entry of `getUpdates` (or one webhook body).
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    /// Increasing id; the next poll's offset is the last one plus one.
    pub update_id: i64,
    /// A new message.
    #[serde(default)]
    pub message: Option<Message>,
    /// A new version of a message (same `message_id`, with `edit_date`).
    #[serde(default)]
    pub edited_message: Option<Message>,
    /// A post in a channel.
    #[serde(default)]
    pub channel_post: Option<Message>,
    /// An edited channel post.
    #[serde(default)]
    pub edited_channel_post: Option<Message>,
    /// A user's reactions to a message changed.
    #[serde(default)]
    pub message_reaction: Option<ReactionUpdated>,
    /// The bot's own standing in a chat changed (added, promoted, removed).
    #[serde(default)]
    pub my_chat_member: Option<ChatMemberUpdated>,
}

impl Update {
    /// The chat the update is about, when it names one.
    #[must_use]
    pub fn chat_id(&self) -> Option<i64> {
        self.message
            .as_ref()
            .or(self.edited_message.as_ref())
            .or(self.channel_post.as_ref())
            .or(self.edited_channel_post.as_ref())
            .map(|m| m.chat.id)
            .or_else(|| self.message_reaction.as_ref().map(|r| r.chat.id))
            .or_else(|| self.my_chat_member.as_ref().map(|m| m.chat.id))
    }
}

/// A user or bot.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Whether it is a bot.
    #[serde(default)]
    pub is_bot: bool,
    /// First name (required by Telegram).
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// `@username` without the `@`.
    #[serde(default)]
    pub username: Option<String>,
    /// getMe only: whether privacy mode is off.
    #[serde(default)]
    pub can_read_all_group_messages: Option<bool>,
}

impl User {
    /// "First Last".
    #[must_use]
    pub fn full_name(&self) -> String {
        match &self.last_name {
            Some(l) if !l.is_empty() => format!("{} {l}", self.first_name),
            _ => self.first_name.clone(),
        }
    }
}

/// A chat.
#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    /// Its id (negative for groups; up to 52 bits).
    pub id: i64,
    /// private, group, supergroup or channel.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// A group's title.
    #[serde(default)]
    pub title: Option<String>,
}

/// A message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// Unique within its chat.
    pub message_id: i64,
    /// The sender (absent for channel posts).
    #[serde(default)]
    pub from: Option<User>,
    /// The chat sending on behalf of itself (channels, anonymous admins).
    #[serde(default)]
    pub sender_chat: Option<Chat>,
    /// Unix seconds.
    pub date: i64,
    /// The chat.
    pub chat: Chat,
    /// Unix seconds of the last edit.
    #[serde(default)]
    pub edit_date: Option<i64>,
    /// The forum topic.
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// Whether it was sent in a forum topic.
    #[serde(default)]
    pub is_topic_message: Option<bool>,
    /// What it answers (one level, never nested deeper).
    #[serde(default)]
    pub reply_to_message: Option<Box<Message>>,
    /// Shared by the messages of one album.
    #[serde(default)]
    pub media_group_id: Option<String>,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
    /// The text's entities.
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// A media message's caption.
    #[serde(default)]
    pub caption: Option<String>,
    /// The caption's entities.
    #[serde(default)]
    pub caption_entities: Vec<Entity>,
    /// A photo in several sizes, the largest last.
    #[serde(default)]
    pub photo: Vec<FileInfo>,
    /// A file.
    #[serde(default)]
    pub document: Option<FileInfo>,
    /// A video.
    #[serde(default)]
    pub video: Option<FileInfo>,
    /// A music file.
    #[serde(default)]
    pub audio: Option<FileInfo>,
    /// A voice note.
    #[serde(default)]
    pub voice: Option<FileInfo>,
    /// A GIF or silent video. Telegram sets `document` to the same file
    /// beside it, for clients older than animations.
    #[serde(default)]
    pub animation: Option<FileInfo>,
    /// A sticker.
    #[serde(default)]
    pub sticker: Option<Sticker>,
    /// Users who joined.
    #[serde(default)]
    pub new_chat_members: Vec<User>,
    /// A user who left.
    #[serde(default)]
    pub left_chat_member: Option<User>,
    /// The group became this supergroup.
    #[serde(default)]
    pub migrate_to_chat_id: Option<i64>,
    /// This supergroup was that group.
    #[serde(default)]
    pub migrate_from_chat_id: Option<i64>,
}

/// Any file object (PhotoSize, Document, Video, ...): the common fields.
#[derive(Debug, Clone, Deserialize)]
pub struct FileInfo {
    /// For getFile.
    pub file_id: String,
    /// Stable across bots.
    #[serde(default)]
    pub file_unique_id: String,
    /// Bytes, when known.
    #[serde(default)]
    pub file_size: Option<u64>,
    /// The name the sender gave.
    #[serde(default)]
    pub file_name: Option<String>,
    /// The MIME type the sender gave.
    #[serde(default)]
    pub mime_type: Option<String>,
}

/// A sticker: a static WebP, an animated TGS (gzipped Lottie) or a video
/// WebM, told apart by `is_animated` and `is_video` (the object has no
/// name or MIME type of its own).
#[derive(Debug, Clone, Deserialize)]
pub struct Sticker {
    /// For getFile.
    pub file_id: String,
    /// Bytes, when known.
    #[serde(default)]
    pub file_size: Option<u64>,
    /// A TGS animation.
    #[serde(default)]
    pub is_animated: bool,
    /// A WebM video.
    #[serde(default)]
    pub is_video: bool,
    /// The emoji it stands for.
    #[serde(default)]
    pub emoji: Option<String>,
    /// A still image of it (WebP or JPEG), for who cannot play it.
    #[serde(default)]
    pub thumbnail: Option<FileInfo>,
}

/// A change of a chat member's standing (`my_chat_member`: the bot's own).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMemberUpdated {
    /// The chat.
    pub chat: Chat,
    /// Before.
    pub old_chat_member: ChatMember,
    /// After.
    pub new_chat_member: ChatMember,
}

/// A member of a chat, as getChatMember answers and `my_chat_member`
/// carries it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMember {
    /// creator, administrator, member, restricted, left or kicked.
    pub status: String,
    /// restricted: whether it may still send text messages.
    #[serde(default)]
    pub can_send_messages: Option<bool>,
}

impl ChatMember {
    /// Whether Telegram sends this member `message_reaction` updates (only
    /// administrators get them).
    #[must_use]
    pub fn sees_reactions(&self) -> bool {
        matches!(self.status.as_str(), "creator" | "administrator")
    }
}

/// A style or a special part of a text.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Entity {
    /// bold, italic, text_link, mention, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Start, in UTF-16 code units.
    pub offset: usize,
    /// Length, in UTF-16 code units.
    pub length: usize,
    /// text_link: where it points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// text_mention: who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// pre: the language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// `getFile`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct File {
    /// Bytes, when known.
    #[serde(default)]
    pub file_size: Option<u64>,
    /// Where to download it (`/file/bot<token>/<file_path>`).
    #[serde(default)]
    pub file_path: Option<String>,
}

/// A change of one user's reactions to a message.
#[derive(Debug, Clone, Deserialize)]
pub struct ReactionUpdated {
    /// The chat.
    pub chat: Chat,
    /// The message reacted to.
    pub message_id: i64,
    /// Who (absent for anonymous admins).
    #[serde(default)]
    pub user: Option<User>,
    /// On behalf of which chat, for anonymous reactions.
    #[serde(default)]
    pub actor_chat: Option<Chat>,
    /// Unix seconds.
    pub date: i64,
    /// Before.
    #[serde(default)]
    pub old_reaction: Vec<ReactionType>,
    /// After.
    #[serde(default)]
    pub new_reaction: Vec<ReactionType>,
}

/// One reaction.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReactionType {
    /// A standard emoji.
    Emoji {
        /// The emoji.
        emoji: String,
    },
    /// A custom emoji (not bridged: other networks cannot show it).
    CustomEmoji {
        /// Its id.
        #[serde(default)]
        custom_emoji_id: String,
    },
    /// A paid reaction, or a kind newer than this code.
    #[serde(other)]
    Other,
}

/// `getUserProfilePhotos`' answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ProfilePhotos {
    /// Each photo in its sizes, largest last.
    #[serde(default)]
    pub photos: Vec<Vec<FileInfo>>,
}
