//! Telegram ↔ the normalized model, without I/O: entities to and from
//! [`RichText`], updates to [`NewEvent`]s (files still to be fetched listed
//! beside them), and the ids switchboard keys Telegram events by.
//!
//! Keys: a message is `(chat, message_id)`; an edit reuses the message id,
//! and a reaction has none, so each is keyed by the update that brought it
//! (`edit:<message_id>:u<update_id>`, `react:<message_id>:u<update_id>:+👍`).
//! Telegram's `update_id` is unique and the same when an update comes again
//! (an unconfirmed poll, a webhook retry), where `edit_date` and `date` are
//! whole seconds: two edits within one second are two edits.
//!
//! Times: `date` is Unix seconds; one that cannot be a time (milliseconds,
//! out of range, before Telegram existed, days ahead) gives way to the time
//! the update was received ([`Draft::bad_date`] says so, for the log).

use switchboard_core::richtext::Utf16Span;
use switchboard_core::{
    AccountId, AttachmentKind, Author, ChannelId, EventKind, Membership, NewEvent, Origin,
    RemoteId, RichText, Style, TargetRef,
};
use time::OffsetDateTime;

use crate::wire::{Entity, FileInfo, Message, ReactionType, ReactionUpdated, Sticker, User};

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
    /// A still image to send instead where the format cannot be shown (a
    /// sticker's thumbnail); its name and type are settled by its bytes.
    pub alt: Option<Box<PendingFile>>,
}

/// An event built from an update, with the files it still needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The event, its attachments still empty.
    pub event: NewEvent,
    /// Files to fetch, in order.
    pub files: Vec<PendingFile>,
    /// The update's `date` when it could not be a time; the event carries
    /// the time it was received instead.
    pub bad_date: Option<i64>,
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

/// The day Telegram opened (2013-08-14): no message is older.
const TELEGRAM_BEGAN: i64 = 1_376_438_400;

/// A `date` as a time, or `None` when it cannot be one: milliseconds
/// (out of range), before Telegram existed, or more than a day after it
/// was received (clocks differ by seconds, not days).
#[must_use]
pub fn plausible_time(secs: i64, received: OffsetDateTime) -> Option<OffsetDateTime> {
    let at = OffsetDateTime::from_unix_timestamp(secs).ok()?;
    (secs >= TELEGRAM_BEGAN && at <= received + time::Duration::days(1)).then_some(at)
}

/// The time of a `date`, or the time received; and the date when refused.
fn time_or_received(secs: i64, received: OffsetDateTime) -> (OffsetDateTime, Option<i64>) {
    match plausible_time(secs, received) {
        Some(at) => (at, None),
        None => (received, Some(secs)),
    }
}

fn remote(id: i64) -> RemoteId {
    RemoteId::new(id.to_string()).expect("a number is a valid id")
}

/// The files of a message, the photo in its largest size.
#[must_use]
pub fn files_of(msg: &Message) -> Vec<PendingFile> {
    let mut out = Vec::new();
    let mut push = |kind, f: &FileInfo, default_name: &str, default_mime: &str| {
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
            alt: None,
        });
    };
    if let Some(p) = msg.photo.last() {
        push(AttachmentKind::Image, p, "photo.jpg", "image/jpeg");
    }
    // With an animation, `document` is the same file again ("for backward
    // compatibility", the Bot API says): one file, one attachment.
    if let Some(f) = msg.document.as_ref().filter(|_| msg.animation.is_none()) {
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
    if let Some(s) = &msg.sticker {
        out.push(sticker_file(s));
    }
    out
}

/// A sticker in its own format (the Sticker object names it only by
/// `is_animated` and `is_video`), with its thumbnail as the still image for
/// networks that cannot show that format.
#[must_use]
pub fn sticker_file(s: &Sticker) -> PendingFile {
    let (name, mime) = if s.is_video {
        ("sticker.webm", STICKER_WEBM)
    } else if s.is_animated {
        ("sticker.tgs", STICKER_TGS)
    } else {
        ("sticker.webp", STICKER_WEBP)
    };
    PendingFile {
        kind: AttachmentKind::Sticker,
        file_id: s.file_id.clone(),
        name: name.to_owned(),
        mime: mime.to_owned(),
        size: s.file_size,
        alt: s.thumbnail.as_ref().map(|t| {
            Box::new(PendingFile {
                kind: AttachmentKind::Image,
                file_id: t.file_id.clone(),
                // Settled by the bytes once fetched (WebP or JPEG).
                name: "sticker.webp".to_owned(),
                mime: STICKER_WEBP.to_owned(),
                size: t.file_size,
                alt: None,
            })
        }),
    }
}

/// A static sticker.
pub const STICKER_WEBP: &str = "image/webp";
/// An animated sticker: gzipped Lottie JSON.
pub const STICKER_TGS: &str = "application/x-tgsticker";
/// A video sticker.
pub const STICKER_WEBM: &str = "video/webm";

/// What a still image is, from its first bytes: its name and MIME type,
/// for a thumbnail Telegram gives without either. `None` for what is not a
/// still image (an animated thumbnail).
#[must_use]
pub fn still_image(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some(("sticker.webp", "image/webp"))
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(("sticker.jpg", "image/jpeg"))
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(("sticker.png", "image/png"))
    } else {
        None
    }
}

/// The text of a message (its caption for media), with its styles; a
/// sticker's emoji, which says what it shows where it cannot be shown.
#[must_use]
pub fn body_of(msg: &Message) -> RichText {
    match (&msg.text, &msg.caption) {
        (Some(t), _) => entities_to_rich(t, &msg.entities),
        (None, Some(c)) => entities_to_rich(c, &msg.caption_entities),
        (None, None) => msg
            .sticker
            .as_ref()
            .and_then(|s| s.emoji.as_deref())
            .map(RichText::plain)
            .unwrap_or_default(),
    }
}

/// [`message_draft_for`] a message whose update is not at hand (tools,
/// the fuzz harness): keyed as update 0, received now.
#[must_use]
pub fn message_draft(
    account: &AccountId,
    channels: &dyn Channels,
    msg: &Message,
    edited: bool,
) -> Option<Draft> {
    message_draft_for(account, channels, msg, edited, 0, OffsetDateTime::now_utc())
}

/// A `message` or `edited_message` as an event; `None` for what is not
/// bridged (service messages other than joins and leaves, polls, dice...).
/// `update_id` is the update that brought it, `received` when.
#[must_use]
pub fn message_draft_for(
    account: &AccountId,
    channels: &dyn Channels,
    msg: &Message,
    edited: bool,
    update_id: i64,
    received: OffsetDateTime,
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
        let (at, bad_date) = time_or_received(msg.edit_date.unwrap_or(msg.date), received);
        let body = body_of(msg);
        return Some(Draft {
            event: NewEvent {
                origin,
                key: Some(format!("edit:{}:u{update_id}", msg.message_id)),
                author,
                at,
                kind: EventKind::Edit {
                    target: TargetRef::Remote(remote(msg.message_id)),
                    body,
                },
            },
            files: Vec::new(),
            bad_date,
        });
    }
    let (at, bad_date) = time_or_received(msg.date, received);
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
            bad_date,
        });
    }
    if let Some(u) = &msg.left_chat_member {
        return Some(Draft {
            event: membership(Membership::Left, u),
            files: Vec::new(),
            bad_date,
        });
    }
    let files = files_of(msg);
    let body = body_of(msg);
    if body.text.is_empty() && files.is_empty() {
        return None;
    }
    // In a forum topic, a message that answers nobody still carries the
    // topic's opening message as `reply_to_message`: not a reply anyone
    // wrote. Only there: in a supergroup without topics every reply
    // carries `message_thread_id` (the reply chain's first message), and
    // a reply to that message is a reply like any other.
    let in_topic = msg.is_topic_message == Some(true);
    let reply_to = msg
        .reply_to_message
        .as_ref()
        .filter(|r| !(in_topic && Some(r.message_id) == msg.message_thread_id))
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
        bad_date,
    })
}

/// [`reaction_events_on`] the chat's own channel, for a reaction whose
/// update is not at hand (tools, the fuzz harness): update 0, received now.
#[must_use]
pub fn reaction_events(
    account: &AccountId,
    channels: &dyn Channels,
    r: &ReactionUpdated,
) -> Vec<NewEvent> {
    let place = channels.channel_for(r.chat.id, None);
    reaction_events_on(account, place, r, 0, OffsetDateTime::now_utc())
}

/// A reaction change as events on `channel` (the caller knows which of
/// the chat's channels holds the message: the update names only the chat):
/// one per emoji added or taken back. Custom emoji and paid reactions are
/// not bridged.
#[must_use]
pub fn reaction_events_on(
    account: &AccountId,
    (channel, thread): (ChannelId, Option<String>),
    r: &ReactionUpdated,
    update_id: i64,
    received: OffsetDateTime,
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
    let (at, _) = time_or_received(r.date, received);
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
                "react:{}:u{update_id}:{}{e}",
                r.message_id,
                if removed { '-' } else { '+' },
            )),
            author: author.clone(),
            at,
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
