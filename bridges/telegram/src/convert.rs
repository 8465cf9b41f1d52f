//! Telegram ↔ the normalized model, without I/O: entities to and from
//! [`RichText`], updates to [`NewEvent`]s (files still to be fetched listed
//! beside them), and the ids switchboard keys Telegram events by.
//!
//! Keys: a message is `(chat, message_id)`; an edit reuses the message id,
//! so it is keyed `edit:<message_id>:<edit_date>`; a reaction has no id, so
//! it is keyed by message, user, emoji, date and direction.

use switchboard_core::richtext::Utf16Span;
use switchboard_core::{
    AccountId, AttachmentKind, Author, ChannelId, EventKind, Membership, NewEvent, Origin,
    RemoteId, RichText, Style, TargetRef,
};
use time::OffsetDateTime;

use crate::wire::{Entity, Message, ReactionType, ReactionUpdated, User};

/// Entities to rich text. An entity Telegram would never send (off the
/// text, splitting a surrogate pair) is dropped, the text kept; kinds with
/// no style (hashtag, bot_command, custom_emoji, ...) stay plain text.
#[must_use]
pub fn entities_to_rich(text: &str, entities: &[Entity]) -> RichText {
    let spans: Vec<Utf16Span> = entities
        .iter()
        .filter_map(|e| {
            let style = match e.kind.as_str() {
                "bold" => Style::Bold,
                "italic" => Style::Italic,
                "underline" => Style::Underline,
                "strikethrough" => Style::Strike,
                "spoiler" => Style::Spoiler,
                "code" => Style::Code,
                "pre" => Style::Pre {
                    language: e.language.clone().filter(|l| !l.is_empty()),
                },
                "text_link" => Style::Link {
                    url: e.url.clone()?,
                },
                "blockquote" | "expandable_blockquote" => Style::Blockquote,
                "text_mention" => Style::Mention {
                    user_id: e.user.as_ref()?.id.to_string(),
                },
                // "@name" with no user id: the name is the best id there is.
                "mention" => Style::Mention {
                    user_id: String::new(),
                },
                "url" => Style::Link { url: String::new() },
                _ => return None,
            };
            Some(Utf16Span {
                offset: e.offset,
                length: e.length,
                style,
            })
        })
        .collect();
    // Each span on its own, so one bad entity costs only itself.
    let mut out = RichText::plain(text);
    for s in spans {
        if let Ok(one) = RichText::from_utf16(text, std::slice::from_ref(&s)) {
            let mut span = one.spans.into_iter().next().expect("one span in, one out");
            let covered = &text[span.start..span.end];
            match &mut span.style {
                Style::Mention { user_id } if user_id.is_empty() => {
                    *user_id = covered.to_owned();
                }
                Style::Link { url } if url.is_empty() => *url = covered.to_owned(),
                _ => {}
            }
            out.spans.push(span);
        }
    }
    out
}

/// Rich text to entities. Mentions of users on other networks have no
/// Telegram user to point at and stay plain text; a mention of a Telegram
/// user by id becomes a `text_mention`.
#[must_use]
pub fn rich_to_entities(rt: &RichText, same_network: bool) -> Vec<Entity> {
    let mut out: Vec<Entity> = rt
        .to_utf16()
        .into_iter()
        .filter(|s| s.length > 0)
        .filter_map(|s| {
            let mut e = Entity {
                kind: String::new(),
                offset: s.offset,
                length: s.length,
                url: None,
                user: None,
                language: None,
            };
            e.kind = match s.style {
                Style::Bold => "bold",
                Style::Italic => "italic",
                Style::Underline => "underline",
                Style::Strike => "strikethrough",
                Style::Spoiler => "spoiler",
                Style::Code => "code",
                Style::Pre { language } => {
                    e.language = language;
                    "pre"
                }
                Style::Link { url } => {
                    if !(url.starts_with("http://")
                        || url.starts_with("https://")
                        || url.starts_with("tg://"))
                    {
                        return None;
                    }
                    e.url = Some(url);
                    "text_link"
                }
                Style::Blockquote => "blockquote",
                Style::Mention { user_id } => {
                    let id = user_id.parse::<i64>().ok().filter(|_| same_network)?;
                    e.user = Some(User {
                        id,
                        is_bot: false,
                        first_name: String::from("user"),
                        last_name: None,
                        username: None,
                        can_read_all_group_messages: None,
                    });
                    "text_mention"
                }
                _ => return None,
            }
            .to_owned();
            Some(e)
        })
        .collect();
    out.sort_by_key(|e| (e.offset, std::cmp::Reverse(e.length)));
    out
}

/// A file of a message, still to be fetched with `getFile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFile {
    /// What sort of file.
    pub kind: AttachmentKind,
    /// For getFile.
    pub file_id: String,
    /// A name to give it.
    pub name: String,
    /// Its MIME type.
    pub mime: String,
    /// Its size, when Telegram said.
    pub size: Option<u64>,
}

/// An event built from an update, with the files it still needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The event, its attachments still empty.
    pub event: NewEvent,
    /// Files to fetch, in order.
    pub files: Vec<PendingFile>,
}

/// Where a chat's messages go: the chat's channel, or a forum topic's own
/// channel (`<chat>/<thread>`) when a gateway lists it.
pub trait Channels {
    /// The channel and thread for a message of `chat` in `thread`.
    fn channel_for(&self, chat: i64, thread: Option<i64>) -> (ChannelId, Option<String>);
}

/// Who wrote a message.
#[must_use]
pub fn author_of(msg: &Message) -> Author {
    if let Some(u) = &msg.from {
        // Anonymous admins and channels post as a chat: name the chat.
        if let Some(chat) = &msg.sender_chat {
            return Author {
                remote_id: chat.id.to_string(),
                display_name: chat.title.clone().unwrap_or_else(|| u.full_name()),
                username: None,
                avatar: None,
                is_bot: false,
            };
        }
        return user_author(u);
    }
    Author {
        remote_id: msg.chat.id.to_string(),
        display_name: msg.chat.title.clone().unwrap_or_default(),
        ..Author::default()
    }
}

/// A Telegram user as an author.
#[must_use]
pub fn user_author(u: &User) -> Author {
    Author {
        remote_id: u.id.to_string(),
        display_name: u.full_name(),
        username: u.username.clone(),
        avatar: None,
        is_bot: u.is_bot,
    }
}

fn time_of(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn remote(id: i64) -> RemoteId {
    RemoteId::new(id.to_string()).expect("a number is a valid id")
}

/// The files of a message, the photo in its largest size.
#[must_use]
pub fn files_of(msg: &Message) -> Vec<PendingFile> {
    let mut out = Vec::new();
    let mut push = |kind, f: &crate::wire::FileInfo, default_name: &str, default_mime: &str| {
        out.push(PendingFile {
            kind,
            file_id: f.file_id.clone(),
            name: f
                .file_name
                .clone()
                .unwrap_or_else(|| default_name.to_owned()),
            mime: f
                .mime_type
                .clone()
                .unwrap_or_else(|| default_mime.to_owned()),
            size: f.file_size,
        });
    };
    if let Some(p) = msg.photo.last() {
        push(AttachmentKind::Image, p, "photo.jpg", "image/jpeg");
    }
    if let Some(f) = &msg.document {
        push(AttachmentKind::File, f, "file", "application/octet-stream");
    }
    if let Some(f) = &msg.video {
        push(AttachmentKind::Video, f, "video.mp4", "video/mp4");
    }
    if let Some(f) = &msg.animation {
        push(AttachmentKind::Video, f, "animation.mp4", "video/mp4");
    }
    if let Some(f) = &msg.audio {
        push(AttachmentKind::Audio, f, "audio.mp3", "audio/mpeg");
    }
    if let Some(f) = &msg.voice {
        push(AttachmentKind::Voice, f, "voice.ogg", "audio/ogg");
    }
    if let Some(f) = &msg.sticker {
        push(AttachmentKind::Sticker, f, "sticker.webp", "image/webp");
    }
    out
}

/// The text of a message (its caption for media), with its styles.
#[must_use]
pub fn body_of(msg: &Message) -> RichText {
    match (&msg.text, &msg.caption) {
        (Some(t), _) => entities_to_rich(t, &msg.entities),
        (None, Some(c)) => entities_to_rich(c, &msg.caption_entities),
        (None, None) => RichText::default(),
    }
}

/// A `message` or `edited_message` as an event; `None` for what is not
/// bridged (service messages other than joins and leaves, polls, dice...).
#[must_use]
pub fn message_draft(
    account: &AccountId,
    channels: &dyn Channels,
    msg: &Message,
    edited: bool,
) -> Option<Draft> {
    let (channel, thread) = channels.channel_for(
        msg.chat.id,
        msg.message_thread_id
            .filter(|_| msg.is_topic_message == Some(true)),
    );
    let origin = Origin {
        account: account.clone(),
        channel,
        remote_id: remote(msg.message_id),
        thread,
    };
    let author = author_of(msg);
    if edited {
        let at = time_of(msg.edit_date.unwrap_or(msg.date));
        let body = body_of(msg);
        return Some(Draft {
            event: NewEvent {
                origin,
                key: Some(format!(
                    "edit:{}:{}",
                    msg.message_id,
                    msg.edit_date.unwrap_or(msg.date)
                )),
                author,
                at,
                kind: EventKind::Edit {
                    target: TargetRef::Remote(remote(msg.message_id)),
                    body,
                },
            },
            files: Vec::new(),
        });
    }
    let at = time_of(msg.date);
    let membership = |change, who: &User| NewEvent {
        origin: origin.clone(),
        key: None,
        author: user_author(who),
        at,
        kind: EventKind::Membership { change },
    };
    if let Some(u) = msg.new_chat_members.first() {
        return Some(Draft {
            event: membership(Membership::Joined, u),
            files: Vec::new(),
        });
    }
    if let Some(u) = &msg.left_chat_member {
        return Some(Draft {
            event: membership(Membership::Left, u),
            files: Vec::new(),
        });
    }
    let files = files_of(msg);
    let body = body_of(msg);
    if body.text.is_empty() && files.is_empty() {
        return None;
    }
    // A reply to the topic's opening message is how Telegram marks every
    // message of a topic: not a reply anyone wrote.
    let reply_to = msg
        .reply_to_message
        .as_ref()
        .filter(|r| Some(r.message_id) != msg.message_thread_id)
        .map(|r| TargetRef::Remote(remote(r.message_id)));
    Some(Draft {
        event: NewEvent {
            origin,
            key: None,
            author,
            at,
            kind: EventKind::Message {
                body,
                attachments: Vec::new(),
                reply_to,
            },
        },
        files,
    })
}

/// A reaction change as events: one per emoji added or taken back.
/// Custom emoji and paid reactions are not bridged.
#[must_use]
pub fn reaction_events(
    account: &AccountId,
    channels: &dyn Channels,
    r: &ReactionUpdated,
) -> Vec<NewEvent> {
    let emoji = |list: &[ReactionType]| -> Vec<String> {
        list.iter()
            .filter_map(|t| match t {
                ReactionType::Emoji { emoji } => Some(emoji.clone()),
                _ => None,
            })
            .collect()
    };
    let (old, new) = (emoji(&r.old_reaction), emoji(&r.new_reaction));
    let author = match (&r.user, &r.actor_chat) {
        (Some(u), _) => user_author(u),
        (None, Some(c)) => Author {
            remote_id: c.id.to_string(),
            display_name: c.title.clone().unwrap_or_default(),
            ..Author::default()
        },
        (None, None) => Author::default(),
    };
    let (channel, thread) = channels.channel_for(r.chat.id, None);
    let changes = new
        .iter()
        .filter(|e| !old.contains(e))
        .map(|e| (e, false))
        .chain(old.iter().filter(|e| !new.contains(e)).map(|e| (e, true)));
    changes
        .map(|(e, removed)| NewEvent {
            origin: Origin {
                account: account.clone(),
                channel: channel.clone(),
                remote_id: remote(r.message_id),
                thread: thread.clone(),
            },
            key: Some(format!(
                "react:{}:{}:{}:{}:{}",
                r.message_id,
                author.remote_id,
                r.date,
                if removed { '-' } else { '+' },
                e
            )),
            author: author.clone(),
            at: time_of(r.date),
            kind: EventKind::Reaction {
                target: TargetRef::Remote(remote(r.message_id)),
                emoji: e.clone(),
                removed,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests;
