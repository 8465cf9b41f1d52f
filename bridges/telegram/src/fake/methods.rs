//! The Bot API methods the fake implements, one function each, checking
//! their parameters in the order the real server does: the method's own
//! arguments (text, entities, media JSON) first, then the chat, the topic
//! and the replied message, then what Telegram's servers check last
//! (lengths, file contents, flood control).
//!
//! Real Telegram methods the fake does not implement answer `501 Not
//! Implemented` (so a test sees at once what is missing); names Telegram does
//! not have answer `404 Not Found: method not found`.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult, Success};
use super::media;
use super::params::{to_integer, Params, Upload};
use super::state::{
    chat_member, now_unix, reply_thread, Chat, ChatKind, FileKind, Shared, State, Stored, Webhook,
};
use super::text::{self, Formatted};
use super::updates::{self, BY_SET_WEBHOOK};
use super::BotStatus;

/// Methods the fake implements, spelled as documented.
const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "sendPhoto",
    "sendDocument",
    "sendVideo",
    "sendAudio",
    "sendVoice",
    "sendAnimation",
    "sendSticker",
    "sendMediaGroup",
    "getFile",
    "editMessageText",
    "editMessageCaption",
    "deleteMessage",
    "setMessageReaction",
    "getChat",
    "getChatMember",
    "sendChatAction",
    "getUserProfilePhotos",
];

/// Real methods the fake does not implement.
const NOT_IMPLEMENTED: &[&str] = &[
    "logOut",
    "close",
    "forwardMessage",
    "forwardMessages",
    "copyMessage",
    "copyMessages",
    "sendVideoNote",
    "sendPaidMedia",
    "sendLocation",
    "sendVenue",
    "sendContact",
    "sendPoll",
    "sendDice",
    "sendInvoice",
    "deleteMessages",
    "editMessageMedia",
    "editMessageReplyMarkup",
    "editMessageLiveLocation",
    "stopPoll",
    "answerCallbackQuery",
    "answerInlineQuery",
    "pinChatMessage",
    "unpinChatMessage",
    "unpinAllChatMessages",
    "getChatMemberCount",
    "getChatAdministrators",
    "leaveChat",
    "banChatMember",
    "unbanChatMember",
    "restrictChatMember",
    "promoteChatMember",
    "setChatTitle",
    "setChatDescription",
    "setChatPhoto",
    "deleteChatPhoto",
    "exportChatInviteLink",
    "createChatInviteLink",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "setMyName",
    "getMyName",
    "setMyDescription",
    "getMyDescription",
    "createForumTopic",
    "editForumTopic",
    "closeForumTopic",
    "deleteForumTopic",
    "getForumTopicIconStickers",
    "getStickerSet",
    "getUserChatBoosts",
    "setChatMenuButton",
    "getChatMenuButton",
];

/// A method name as documented, found case-insensitively, and whether the
/// fake implements it.
pub(crate) fn lookup(name: &str) -> Option<(&'static str, bool)> {
    let find = |list: &[&'static str]| list.iter().find(|m| m.eq_ignore_ascii_case(name)).copied();
    find(METHODS)
        .map(|m| (m, true))
        .or_else(|| find(NOT_IMPLEMENTED).map(|m| (m, false)))
}

/// Runs one call.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    method: &'static str,
    p: &Params,
) -> ApiResult<Success> {
    if method == "getUpdates" {
        return updates::get_updates(shared, p).await;
    }
    let result = {
        let mut st = shared.lock();
        call(&mut st, method, p)
    };
    if matches!(method, "setWebhook" | "deleteWebhook") {
        // A terminated long poll has to notice.
        shared.wake.notify_waiters();
    }
    result
}

fn call(st: &mut State, method: &str, p: &Params) -> ApiResult<Success> {
    match method {
        "getMe" => Ok(st.bot.user.clone().into()),
        "setWebhook" => set_webhook(st, p),
        "deleteWebhook" => delete_webhook(st, p),
        "getWebhookInfo" => Ok(webhook_info(st).into()),
        "sendMessage" => send_message(st, p),
        "sendPhoto" => send_media(st, p, FileKind::Photo),
        "sendDocument" => send_media(st, p, FileKind::Document),
        "sendVideo" => send_media(st, p, FileKind::Video),
        "sendAudio" => send_media(st, p, FileKind::Audio),
        "sendVoice" => send_media(st, p, FileKind::Voice),
        "sendAnimation" => send_media(st, p, FileKind::Animation),
        "sendSticker" => send_sticker(st, p),
        "sendMediaGroup" => send_media_group(st, p),
        "getFile" => get_file(st, p),
        "editMessageText" => edit_message_text(st, p),
        "editMessageCaption" => edit_message_caption(st, p),
        "deleteMessage" => delete_message(st, p),
        "setMessageReaction" => set_message_reaction(st, p),
        "getChat" => {
            let chat_id = resolve_chat(st, p, Access::Read)?;
            Ok(chat(st, chat_id)?.full_json().into())
        }
        "getChatMember" => get_chat_member(st, p),
        "setMyCommands" => set_my_commands(st, p),
        "getMyCommands" => get_my_commands(st, p),
        "deleteMyCommands" => delete_my_commands(st, p),
        "sendChatAction" => send_chat_action(st, p),
        "getUserProfilePhotos" => get_user_profile_photos(st, p),
        other => Err(ApiError::new(
            501,
            format!("Not Implemented: the fake does not implement {other}"),
        )),
    }
}

fn bad(reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(reason)
}

// --- chats, topics, replies ---------------------------------------------------

/// What the call does to the chat: writes to an upgraded group are refused
/// with `migrate_to_chat_id`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

fn resolve_chat(st: &State, p: &Params, access: Access) -> ApiResult<i64> {
    let raw = p.arg("chat_id").ok_or_else(|| bad("chat_id is empty"))?;
    // The fake's chats have no public usernames.
    let found = if raw.starts_with('@') {
        None
    } else {
        st.chats.get(&to_integer(&raw))
    };
    let chat = found
        .filter(|c| !c.missing)
        .ok_or_else(|| bad("chat not found"))?;
    if let (Access::Write, Some(to)) = (access, chat.migrated_to) {
        return Err(ApiError::migrated(to));
    }
    if let Some(refused) = chat.access_error(access == Access::Write) {
        return Err(refused);
    }
    Ok(chat.id)
}

/// A restricted bot may not send: `not enough rights to send <what> to the
/// chat`, in TDLib's words (`what`: "text messages", "photos"...).
fn may_send(chat: &Chat, what: &str) -> ApiResult<()> {
    if chat.bot_status == BotStatus::Restricted {
        return Err(bad(format!("not enough rights to send {what} to the chat")));
    }
    Ok(())
}

/// What TDLib calls a kind of file when refusing to send it.
fn rights_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Photo | FileKind::Thumbnail => "photos",
        FileKind::Document => "documents",
        FileKind::Video => "videos",
        FileKind::Audio => "music",
        FileKind::Voice => "voice notes",
        FileKind::Animation => "animations",
        FileKind::Sticker => "stickers",
    }
}

fn chat(st: &State, chat_id: i64) -> ApiResult<&Chat> {
    st.chats.get(&chat_id).ok_or_else(|| bad("chat not found"))
}

fn chat_mut(st: &mut State, chat_id: i64) -> ApiResult<&mut Chat> {
    st.chats
        .get_mut(&chat_id)
        .ok_or_else(|| bad("chat not found"))
}

/// The forum topic to post into and the message to reply to.
fn thread_and_reply(chat: &Chat, p: &Params) -> ApiResult<(Option<i64>, Option<Value>)> {
    let requested = p.int("message_thread_id").unwrap_or(0);
    let mut thread = None;
    if requested > 0 && chat.is_forum {
        // Topic 1 is "General", which takes no message_thread_id.
        if requested == 1 || !chat.topics.contains(&requested) {
            return Err(bad("message thread not found"));
        }
        thread = Some(requested);
    }
    let reply = reply_target(chat, p)?;
    if thread.is_none() {
        // A reply goes to the replied message's topic, or in a supergroup
        // without topics into its reply thread.
        thread = reply.as_ref().and_then(|r| reply_thread(chat, r));
    }
    Ok((thread, reply))
}

/// `reply_parameters` (or the legacy `reply_to_message_id`), resolved to the
/// replied message as `reply_to_message` shows it: one level, no nesting.
fn reply_target(chat: &Chat, p: &Params) -> ApiResult<Option<Value>> {
    let (message_id, allow_without, other_chat) = match p.arg("reply_parameters") {
        Some(raw) => {
            let value: Value = serde_json::from_str(&raw)
                .map_err(|_| bad("can't parse reply parameters JSON object"))?;
            let Value::Object(o) = value else {
                return Err(bad("object expected as reply parameters"));
            };
            let int = |v: &Value| match v {
                Value::Number(n) => n.as_i64().unwrap_or(0),
                Value::String(s) => to_integer(s),
                _ => 0,
            };
            let allow = match o.get("allow_sending_without_reply") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => super::params::to_bool(s),
                _ => false,
            };
            // Replies into another chat (external replies) are not modelled.
            let other = o.get("chat_id").is_some_and(|c| int(c) != chat.id);
            (o.get("message_id").map_or(0, int), allow, other)
        }
        None => (
            p.int("reply_to_message_id").unwrap_or(0),
            p.flag("allow_sending_without_reply"),
            false,
        ),
    };
    if message_id <= 0 {
        return Ok(None);
    }
    let found = if other_chat {
        None
    } else {
        chat.messages.get(&message_id)
    };
    match found {
        Some(stored) => {
            let mut target = stored.message.clone();
            if let Some(o) = target.as_object_mut() {
                o.remove("reply_to_message");
            }
            Ok(Some(target))
        }
        None if allow_without => Ok(None),
        None => Err(bad("message to be replied not found")),
    }
}

/// The skeleton of a message the bot sends now.
fn new_message(
    st: &mut State,
    chat_id: i64,
    thread: Option<i64>,
    reply: Option<Value>,
) -> ApiResult<Map<String, Value>> {
    let bot = st.bot.sender.clone();
    let chat = chat_mut(st, chat_id)?;
    let mut m = Map::new();
    m.insert("message_id".into(), chat.next_message_id().into());
    if chat.kind == ChatKind::Channel {
        m.insert("sender_chat".into(), chat.json());
    } else {
        m.insert("from".into(), bot);
    }
    m.insert("chat".into(), chat.json());
    m.insert("date".into(), now_unix().into());
    if let Some(thread) = thread {
        m.insert("message_thread_id".into(), thread.into());
        // Only a forum's topics are topics; elsewhere it is a reply thread.
        if chat.is_forum {
            m.insert("is_topic_message".into(), true.into());
        }
    }
    if let Some(reply) = reply {
        m.insert("reply_to_message".into(), reply);
    }
    Ok(m)
}

/// Stores a message the bot sent and returns it.
fn store(st: &mut State, chat_id: i64, message: Map<String, Value>) -> ApiResult<Value> {
    let id = message
        .get("message_id")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let message = Value::Object(message);
    chat_mut(st, chat_id)?.messages.insert(
        id,
        Stored {
            message: message.clone(),
            from_bot: true,
            bot_reaction: Vec::new(),
        },
    );
    Ok(message)
}

// --- text ---------------------------------------------------------------------

fn check_parse_mode(mode: Option<&str>) -> ApiResult<()> {
    let Some(mode) = mode else { return Ok(()) };
    match mode.to_ascii_lowercase().as_str() {
        "none" => Ok(()),
        "markdown" | "markdownv2" | "html" => Err(bad(
            "unsupported parse_mode in this fake (send entities instead)",
        )),
        _ => Err(bad("unsupported parse_mode")),
    }
}

/// `text` + `entities` + `parse_mode` of sendMessage and editMessageText.
fn message_text(p: &Params) -> ApiResult<Formatted> {
    let raw = p.arg("text").ok_or_else(|| bad("message text is empty"))?;
    check_parse_mode(p.arg("parse_mode").as_deref())?;
    let entities = text::parse_entities(p.arg("entities").as_deref())?;
    text::normalize(&raw, entities, false)
}

/// `caption` + `caption_entities` + `parse_mode`.
fn caption(p: &Params) -> ApiResult<Formatted> {
    let Some(raw) = p.arg("caption") else {
        return Ok(Formatted::default());
    };
    check_parse_mode(p.arg("parse_mode").as_deref())?;
    let entities = text::parse_entities(p.arg("caption_entities").as_deref())?;
    text::normalize(&raw, entities, true)
}

fn set_formatted(m: &mut Map<String, Value>, text_key: &str, entities_key: &str, f: Formatted) {
    if f.text.is_empty() {
        m.remove(text_key);
    } else {
        m.insert(text_key.into(), f.text.into());
    }
    if f.entities.is_empty() {
        m.remove(entities_key);
    } else {
        m.insert(entities_key.into(), Value::Array(f.entities));
    }
}

fn send_message(st: &mut State, p: &Params) -> ApiResult<Success> {
    let text = message_text(p)?;
    let chat_id = resolve_chat(st, p, Access::Write)?;
    may_send(chat(st, chat_id)?, "text messages")?;
    let (thread, reply) = thread_and_reply(chat(st, chat_id)?, p)?;
    if text.utf16_len() > text::MAX_TEXT {
        return Err(bad("message is too long"));
    }
    st.rate.admit(chat_id, 1)?;
    let mut m = new_message(st, chat_id, thread, reply)?;
    set_formatted(&mut m, "text", "entities", text);
    Ok(store(st, chat_id, m)?.into())
}

// --- files --------------------------------------------------------------------

/// Where a file to send comes from.
enum Source<'a> {
    Upload(&'a Upload),
    FileId(String),
}

/// A file checked and ready to store.
enum Prepared {
    Photo {
        bytes: Arc<Vec<u8>>,
        width: u32,
        height: u32,
    },
    File {
        kind: FileKind,
        bytes: Arc<Vec<u8>>,
        name: Option<String>,
        mime: Option<String>,
        extra: Map<String, Value>,
    },
    /// Sent again by file_id: what the message shows.
    Existing(Value),
}

/// A file parameter: an upload in the part of the same name, `attach://`
/// naming another part, or a file_id. A URL would make the real server
/// download it; the fake has no web to download from.
fn source<'a>(p: &'a Params, field: &str) -> ApiResult<Source<'a>> {
    let missing = || bad(format!("there is no {field} in the request"));
    match p.arg(field) {
        Some(value) => match value.strip_prefix("attach://") {
            Some(part) => p.file(part).map(Source::Upload).ok_or_else(missing),
            None if is_url(&value) => Err(bad("failed to get HTTP URL content")),
            None => Ok(Source::FileId(value)),
        },
        None => p.file(field).map(Source::Upload).ok_or_else(missing),
    }
}

/// TDLib reads a file parameter with a dot in it as a URL.
fn is_url(value: &str) -> bool {
    value.contains('.') || value.contains("://")
}

/// The kind's own fields, from the request (clamped as the server does).
fn media_extras(
    kind: FileKind,
    int: &dyn Fn(&str) -> Option<i64>,
    string: &dyn Fn(&str) -> Option<String>,
) -> Map<String, Value> {
    let clamp = |name: &str, max: i64| Value::from(int(name).unwrap_or(0).clamp(0, max));
    let mut extra = Map::new();
    match kind {
        FileKind::Video | FileKind::Animation => {
            extra.insert("duration".into(), clamp("duration", 86_400));
            extra.insert("width".into(), clamp("width", 10_000));
            extra.insert("height".into(), clamp("height", 10_000));
        }
        FileKind::Audio => {
            extra.insert("duration".into(), clamp("duration", 86_400));
            for key in ["performer", "title"] {
                if let Some(value) = string(key) {
                    extra.insert(key.into(), value.into());
                }
            }
        }
        FileKind::Voice => {
            extra.insert("duration".into(), clamp("duration", 86_400));
        }
        FileKind::Photo | FileKind::Document | FileKind::Sticker | FileKind::Thumbnail => {}
    }
    extra
}

/// The MIME type Telegram records for an upload of this kind.
fn kind_mime(kind: FileKind, name: Option<&str>, part: Option<&str>) -> String {
    let by_name = media::mime_for(name);
    let chosen = match kind {
        FileKind::Photo => Some("image/jpeg"),
        FileKind::Document => by_name,
        FileKind::Video | FileKind::Animation => by_name
            .filter(|m| m.starts_with("video/"))
            .or(Some("video/mp4")),
        FileKind::Audio => by_name
            .filter(|m| m.starts_with("audio/"))
            .or(Some("audio/mpeg")),
        FileKind::Voice => by_name
            .filter(|m| ["audio/ogg", "audio/mpeg", "audio/mp4"].contains(m))
            .or(Some("audio/ogg")),
        // Not sent through send_media: stickers have no MIME type.
        FileKind::Sticker | FileKind::Thumbnail => None,
    };
    match (chosen, name, part) {
        (Some(mime), _, _) => mime.to_string(),
        // A nameless document keeps the type its part declared.
        (None, None, Some(part)) => part.split(';').next().unwrap_or(part).trim().to_string(),
        _ => "application/octet-stream".to_string(),
    }
}

/// Checks a file for sending as `kind`, without storing anything yet.
fn prepare(
    st: &State,
    kind: FileKind,
    source: &Source,
    extra: Map<String, Value>,
) -> ApiResult<Prepared> {
    match source {
        Source::FileId(file_id) => {
            let file = st
                .files
                .get(file_id)
                .ok_or_else(|| bad("wrong file identifier/HTTP URL specified"))?;
            if (file.kind == FileKind::Photo) != (kind == FileKind::Photo) {
                return Err(bad(format!(
                    "can't use file of type {} as {}",
                    file.kind.tdlib_name(),
                    kind.tdlib_name()
                )));
            }
            if file.kind == kind {
                return Ok(Prepared::Existing(file.media.clone()));
            }
            // Documents, videos, audio and voice notes are one class to
            // TDLib: the message shows the requested kind.
            let mut object = extra;
            for (k, v) in file.media.as_object().into_iter().flatten() {
                let keep = matches!(k.as_str(), "file_id" | "file_unique_id" | "file_size")
                    || (k == "mime_type")
                    || (k == "file_name" && kind != FileKind::Voice);
                if keep {
                    object.insert(k.clone(), v.clone());
                }
            }
            Ok(Prepared::Existing(Value::Object(object)))
        }
        Source::Upload(upload) => {
            let bytes = &upload.bytes;
            if bytes.is_empty() {
                return Err(bad("file must be non-empty"));
            }
            if kind != FileKind::Photo {
                let name = upload.file_name.clone();
                let mime = kind_mime(kind, name.as_deref(), upload.mime.as_deref());
                return Ok(Prepared::File {
                    kind,
                    bytes: Arc::new(bytes.clone()),
                    name,
                    mime: Some(mime),
                    extra,
                });
            }
            const MAX_PHOTO: usize = 10 << 20;
            if bytes.len() > MAX_PHOTO {
                return Err(bad(format!(
                    "file of size {} bytes is too big for a photo; the maximum size is {MAX_PHOTO} bytes",
                    bytes.len()
                )));
            }
            let (width, height) =
                media::image_size(bytes).ok_or_else(|| bad("IMAGE_PROCESS_FAILED"))?;
            if !media::photo_dimensions_ok(width, height) {
                return Err(bad("PHOTO_INVALID_DIMENSIONS"));
            }
            Ok(Prepared::Photo {
                bytes: Arc::new(bytes.clone()),
                width,
                height,
            })
        }
    }
}

/// Stores a prepared file; returns what the message shows.
fn commit(st: &mut State, prepared: Prepared) -> Value {
    match prepared {
        Prepared::Photo {
            bytes,
            width,
            height,
        } => st.files.add_photo(bytes, width, height),
        Prepared::File {
            kind,
            bytes,
            name,
            mime,
            extra,
        } => st.files.add_file(kind, bytes, name, mime, extra),
        Prepared::Existing(media) => media,
    }
}

fn send_media(st: &mut State, p: &Params, kind: FileKind) -> ApiResult<Success> {
    let field = kind.field();
    let source = source(p, field)?;
    let caption = caption(p)?;
    let chat_id = resolve_chat(st, p, Access::Write)?;
    may_send(chat(st, chat_id)?, rights_name(kind))?;
    let (thread, reply) = thread_and_reply(chat(st, chat_id)?, p)?;
    let extra = media_extras(kind, &|n| p.int(n), &|n| p.arg(n));
    let prepared = prepare(st, kind, &source, extra)?;
    if caption.utf16_len() > text::MAX_CAPTION {
        return Err(bad("message caption is too long"));
    }
    st.rate.admit(chat_id, 1)?;
    let media = commit(st, prepared);
    let mut m = new_message(st, chat_id, thread, reply)?;
    if kind == FileKind::Animation {
        // The server sets `document` beside `animation`, for old clients.
        let mut document = media.clone();
        if let Some(d) = document.as_object_mut() {
            for key in ["duration", "width", "height"] {
                d.remove(key);
            }
        }
        m.insert("document".into(), document);
    }
    m.insert(field.into(), media);
    set_formatted(&mut m, "caption", "caption_entities", caption);
    Ok(store(st, chat_id, m)?.into())
}

/// One item of an album.
struct AlbumItem<'a> {
    kind: FileKind,
    source: Source<'a>,
    caption: Formatted,
    extra: Map<String, Value>,
}

/// Reads one InputMedia; a refusal reads `can't parse InputMedia: ...`.
fn album_item<'a>(p: &'a Params, item: &Value) -> ApiResult<AlbumItem<'a>> {
    let parse_error = |reason: &str| bad(format!("can't parse InputMedia: {reason}"));
    // A nested refusal, reworded under the InputMedia prefix.
    let nested = |e: ApiError| {
        let reason = e
            .description
            .trim_start_matches("Bad Request: ")
            .to_string();
        parse_error(&reason)
    };
    let Value::Object(o) = item else {
        return Err(parse_error("expected an Object"));
    };
    let string = |name: &str| -> Option<String> {
        match o.get(name)? {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let caption = match string("caption") {
        Some(raw) => {
            check_parse_mode(string("parse_mode").as_deref()).map_err(nested)?;
            let entities =
                text::parse_entities(string("caption_entities").as_deref()).map_err(nested)?;
            text::normalize(&raw, entities, true).map_err(nested)?
        }
        None => Formatted::default(),
    };
    let kind = match o.get("type") {
        None => return Err(parse_error("Can't find field \"type\"")),
        Some(Value::String(t)) => match t.as_str() {
            "photo" => FileKind::Photo,
            "video" => FileKind::Video,
            "document" => FileKind::Document,
            "audio" => FileKind::Audio,
            "animation" => {
                return Err(parse_error(
                    "type \"animation\" can't be used in sendMediaGroup",
                ))
            }
            other => return Err(parse_error(&format!("type \"{other}\" is unsupported"))),
        },
        Some(_) => return Err(parse_error("Field \"type\" must be of type String")),
    };
    let media = string("media").unwrap_or_default();
    let source = match media.strip_prefix("attach://") {
        Some(part) => Source::Upload(p.file(part).ok_or_else(|| parse_error("media not found"))?),
        None if media.is_empty() => return Err(parse_error("media not found")),
        None if is_url(&media) => return Err(bad("failed to get HTTP URL content")),
        None => Source::FileId(media),
    };
    let int = |name: &str| match o.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => Some(to_integer(s)),
        _ => None,
    };
    let extra = media_extras(kind, &int, &string);
    Ok(AlbumItem {
        kind,
        source,
        caption,
        extra,
    })
}

fn send_media_group(st: &mut State, p: &Params) -> ApiResult<Success> {
    let raw = p
        .arg("media")
        .ok_or_else(|| bad("parameter \"media\" is required"))?;
    let value: Value =
        serde_json::from_str(&raw).map_err(|_| bad("can't parse media JSON object"))?;
    let Value::Array(items) = value else {
        return Err(bad("expected an Array of InputMedia"));
    };
    let album = items
        .iter()
        .map(|item| album_item(p, item))
        .collect::<ApiResult<Vec<_>>>()?;
    let chat_id = resolve_chat(st, p, Access::Write)?;
    if let Some(first) = album.first() {
        may_send(chat(st, chat_id)?, rights_name(first.kind))?;
    }
    let (thread, reply) = thread_and_reply(chat(st, chat_id)?, p)?;
    if album.is_empty() {
        return Err(bad("there are no messages to send"));
    }
    if album.len() > 10 {
        return Err(bad("too many messages to send as an album"));
    }
    // Documents and audio files only go with their own kind.
    if let Some(lonely) = album.iter().find(|a| {
        matches!(a.kind, FileKind::Document | FileKind::Audio)
            && album.iter().any(|b| b.kind != a.kind)
    }) {
        return Err(bad(format!(
            "{} can't be mixed with other media types",
            lonely.kind.field()
        )));
    }
    let mut prepared = Vec::with_capacity(album.len());
    for (i, item) in album.iter().enumerate() {
        let ready = prepare(st, item.kind, &item.source, item.extra.clone()).map_err(|e| {
            // What Telegram's servers (not TDLib) refuse names the item.
            let server_error = e
                .description
                .strip_prefix("Bad Request: ")
                .filter(|d| matches!(*d, "IMAGE_PROCESS_FAILED" | "PHOTO_INVALID_DIMENSIONS"));
            match server_error {
                Some(name) => bad(format!(
                    "failed to send message #{} with the error message \"{name}\"",
                    i + 1
                )),
                None => e,
            }
        })?;
        if item.caption.utf16_len() > text::MAX_CAPTION {
            return Err(bad("message caption is too long"));
        }
        prepared.push(ready);
    }
    st.rate.admit(chat_id, album.len())?;
    // A single item is sent as an ordinary message, outside any album.
    let group = (album.len() > 1).then(|| st.next_media_group());
    let mut sent = Vec::with_capacity(album.len());
    for (item, ready) in album.into_iter().zip(prepared) {
        let media = commit(st, ready);
        let mut m = new_message(st, chat_id, thread, reply.clone())?;
        m.insert(item.kind.field().into(), media);
        set_formatted(&mut m, "caption", "caption_entities", item.caption);
        if let Some(group) = &group {
            m.insert("media_group_id".into(), group.clone().into());
        }
        sent.push(store(st, chat_id, m)?);
    }
    Ok(Value::Array(sent).into())
}

/// `sendSticker`: an uploaded `.WEBP`, `.TGS` or `.WEBM` sticker, or a
/// sticker's file_id. No caption; `emoji` names an upload's emoji.
fn send_sticker(st: &mut State, p: &Params) -> ApiResult<Success> {
    let source = source(p, "sticker")?;
    let chat_id = resolve_chat(st, p, Access::Write)?;
    may_send(chat(st, chat_id)?, "stickers")?;
    let (thread, reply) = thread_and_reply(chat(st, chat_id)?, p)?;
    let sticker = match source {
        Source::FileId(file_id) => {
            let file = st
                .files
                .get(&file_id)
                .ok_or_else(|| bad("wrong file identifier/HTTP URL specified"))?;
            if file.kind != FileKind::Sticker {
                return Err(bad(format!(
                    "can't use file of type {} as Sticker",
                    file.kind.tdlib_name()
                )));
            }
            file.media.clone()
        }
        Source::Upload(upload) => {
            if upload.bytes.is_empty() {
                return Err(bad("file must be non-empty"));
            }
            // The fake's own wording: the documented formats only.
            if media::sticker_format(&upload.bytes).is_none() {
                return Err(bad(
                    "the sticker must be a .WEBP, .TGS or .WEBM file (fake)",
                ));
            }
            st.rate.admit(chat_id, 1)?;
            let emoji = p.arg("emoji").unwrap_or_default();
            let bytes = Arc::new(upload.bytes.clone());
            let sticker = st.files.add_sticker(bytes, &emoji, "");
            let mut m = new_message(st, chat_id, thread, reply)?;
            m.insert("sticker".into(), sticker);
            return Ok(store(st, chat_id, m)?.into());
        }
    };
    st.rate.admit(chat_id, 1)?;
    let mut m = new_message(st, chat_id, thread, reply)?;
    m.insert("sticker".into(), sticker);
    Ok(store(st, chat_id, m)?.into())
}

/// `getChatMember`: the bot's own standing (its status in the chat), or
/// that of a user it has seen (`member`).
fn get_chat_member(st: &mut State, p: &Params) -> ApiResult<Success> {
    let user_id = p.int("user_id").unwrap_or(0);
    if user_id <= 0 {
        return Err(bad("invalid user_id specified"));
    }
    let chat_id = resolve_chat(st, p, Access::Read)?;
    if user_id == st.bot.id {
        let status = chat(st, chat_id)?.bot_status;
        return Ok(chat_member(&st.bot.sender, status).into());
    }
    let user = st
        .users
        .get(&user_id)
        .cloned()
        .ok_or_else(|| bad("user not found"))?;
    let status = chat(st, chat_id)?
        .member_status
        .get(&user_id)
        .cloned()
        .unwrap_or_else(|| "member".into());
    Ok(super::state::user_member(&user, &status).into())
}

// --- the bot's command menu ------------------------------------------------
//
// setMyCommands, getMyCommands and deleteMyCommands
// (https://core.telegram.org/bots/api#setmycommands). The checks are
// tdlib's `set_commands` (td/telegram/BotCommand.cpp: a command is trimmed
// and loses a leading `/`, then must be 1-32 characters; a description
// 1-256 after trimming; a language code empty or two lowercase letters),
// then Telegram's own (`BOT_COMMAND_INVALID` for characters other than
// lowercase letters, digits and `_`; `BOT_COMMANDS_TOO_MUCH` beyond 100).
// The Bot API server words tdlib's errors with a lowercase first letter.

/// The scope's key in the command table: its JSON with sorted keys;
/// `default` when absent. Only the scope types the Bot API knows.
fn command_scope(p: &Params) -> ApiResult<String> {
    let Some(raw) = p.arg("scope") else {
        return Ok(json!({"type": "default"}).to_string());
    };
    let scope: Value =
        serde_json::from_str(&raw).map_err(|_| bad("can't parse BotCommandScope JSON object"))?;
    let kind = scope
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("BotCommandScope must have a field \"type\""))?;
    if ![
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    ]
    .contains(&kind)
    {
        return Err(bad("unsupported type specified"));
    }
    // serde_json's maps are sorted: one key per scope however it is written.
    Ok(scope.to_string())
}

fn command_language(p: &Params) -> ApiResult<String> {
    let code = p.arg("language_code").unwrap_or_default();
    if code.is_empty() || (code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase())) {
        Ok(code)
    } else {
        Err(bad("invalid language code specified"))
    }
}

fn set_my_commands(st: &mut State, p: &Params) -> ApiResult<Success> {
    let raw = p
        .arg("commands")
        .ok_or_else(|| bad("parameter \"commands\" is required"))?;
    let list: Value =
        serde_json::from_str(&raw).map_err(|_| bad("can't parse commands JSON object"))?;
    let list = list
        .as_array()
        .ok_or_else(|| bad("expected an Array of BotCommand"))?;
    let (scope, language) = (command_scope(p)?, command_language(p)?);
    let mut clean = Vec::new();
    for c in list {
        let field = |k: &str| c.get(k).and_then(Value::as_str).map(str::trim);
        let command = field("command").ok_or_else(|| bad("command must be non-empty"))?;
        let command = command.strip_prefix('/').unwrap_or(command);
        if command.is_empty() {
            return Err(bad("command must be non-empty"));
        }
        if command.chars().count() > 32 {
            return Err(bad("command length must not exceed 32"));
        }
        let description = field("description").unwrap_or_default();
        if description.is_empty() {
            return Err(bad("command description must be non-empty"));
        }
        if description.chars().count() > 256 {
            return Err(bad("command description length must not exceed 256"));
        }
        if !command
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad("BOT_COMMAND_INVALID"));
        }
        clean.push(json!({"command": command, "description": description}));
    }
    if clean.len() > 100 {
        return Err(bad("BOT_COMMANDS_TOO_MUCH"));
    }
    st.commands.insert((scope, language), Value::Array(clean));
    Ok(Value::Bool(true).into())
}

fn get_my_commands(st: &mut State, p: &Params) -> ApiResult<Success> {
    let key = (command_scope(p)?, command_language(p)?);
    Ok(st
        .commands
        .get(&key)
        .cloned()
        .unwrap_or_else(|| json!([]))
        .into())
}

fn delete_my_commands(st: &mut State, p: &Params) -> ApiResult<Success> {
    let key = (command_scope(p)?, command_language(p)?);
    st.commands.remove(&key);
    Ok(Value::Bool(true).into())
}

fn get_file(st: &mut State, p: &Params) -> ApiResult<Success> {
    let file_id = p
        .arg("file_id")
        .ok_or_else(|| bad("file_id not specified"))?;
    let file = st
        .files
        .get(&file_id)
        .ok_or_else(|| bad("invalid file_id"))?;
    const MAX_DOWNLOAD: usize = 20 << 20;
    if file.bytes.len() > MAX_DOWNLOAD {
        return Err(bad("file is too big"));
    }
    let (unique_id, size) = (file.unique_id.clone(), file.bytes.len());
    let path = st
        .files
        .path(&file_id)
        .ok_or_else(|| bad("invalid file_id"))?;
    Ok(json!({
        "file_id": file_id,
        "file_unique_id": unique_id,
        "file_size": size,
        "file_path": path,
    })
    .into())
}

// --- edits, deletes, reactions -------------------------------------------------

const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply \
                            markup are exactly the same as a current content and reply markup \
                            of the message";

/// Message fields that make a message a media message (with a caption).
const MEDIA_FIELDS: &[&str] = &["photo", "document", "video", "audio", "voice", "animation"];

/// The chat and message an edit names.
fn edit_target(st: &State, p: &Params) -> ApiResult<(i64, i64)> {
    let message_id = p.int("message_id").unwrap_or(0);
    if p.arg("chat_id").is_none() && message_id == 0 {
        // Inline messages: the fake sends none, so none can be found.
        return Err(match p.arg("inline_message_id") {
            Some(_) => bad("MESSAGE_ID_INVALID"),
            None => bad("message identifier is not specified"),
        });
    }
    let chat_id = resolve_chat(st, p, Access::Write)?;
    if message_id <= 0 {
        return Err(bad("message to edit not found"));
    }
    Ok((chat_id, message_id))
}

/// The bot's own, editable message.
fn editable(st: &mut State, chat_id: i64, message_id: i64) -> ApiResult<&mut Stored> {
    let stored = chat_mut(st, chat_id)?
        .messages
        .get_mut(&message_id)
        .ok_or_else(|| bad("message to edit not found"))?;
    if !stored.from_bot {
        return Err(bad("message can't be edited"));
    }
    Ok(stored)
}

fn current(message: &Value, text_key: &str, entities_key: &str) -> Formatted {
    Formatted {
        text: message
            .get(text_key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        entities: message
            .get(entities_key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    }
}

fn edit_message_text(st: &mut State, p: &Params) -> ApiResult<Success> {
    let text = message_text(p)?;
    let (chat_id, message_id) = edit_target(st, p)?;
    let stored = editable(st, chat_id, message_id)?;
    if stored.message.get("text").is_none() {
        return Err(bad("there is no text in the message to edit"));
    }
    if text.utf16_len() > text::MAX_TEXT {
        return Err(bad("message is too long"));
    }
    if current(&stored.message, "text", "entities") == text {
        return Err(bad(NOT_MODIFIED));
    }
    st.rate.admit(chat_id, 1)?;
    let stored = editable(st, chat_id, message_id)?;
    apply_edit(stored, "text", "entities", text)
}

fn edit_message_caption(st: &mut State, p: &Params) -> ApiResult<Success> {
    let caption = caption(p)?;
    let (chat_id, message_id) = edit_target(st, p)?;
    let stored = editable(st, chat_id, message_id)?;
    if !MEDIA_FIELDS.iter().any(|f| stored.message.get(f).is_some()) {
        return Err(bad("there is no caption in the message to edit"));
    }
    if caption.utf16_len() > text::MAX_CAPTION {
        return Err(bad("message caption is too long"));
    }
    if current(&stored.message, "caption", "caption_entities") == caption {
        return Err(bad(NOT_MODIFIED));
    }
    st.rate.admit(chat_id, 1)?;
    let stored = editable(st, chat_id, message_id)?;
    apply_edit(stored, "caption", "caption_entities", caption)
}

fn apply_edit(
    stored: &mut Stored,
    text_key: &str,
    entities_key: &str,
    new: Formatted,
) -> ApiResult<Success> {
    let Some(m) = stored.message.as_object_mut() else {
        return Err(bad("message to edit not found"));
    };
    set_formatted(m, text_key, entities_key, new);
    m.insert("edit_date".into(), now_unix().into());
    Ok(stored.message.clone().into())
}

fn delete_message(st: &mut State, p: &Params) -> ApiResult<Success> {
    if p.arg("chat_id").is_none() {
        return Err(bad("chat identifier is not specified"));
    }
    let message_id = p.int("message_id").unwrap_or(0).max(0);
    if message_id == 0 {
        return Err(bad("message identifier is not specified"));
    }
    let chat_id = resolve_chat(st, p, Access::Write)?;
    let chat = chat_mut(st, chat_id)?;
    let stored = chat
        .messages
        .get(&message_id)
        .ok_or_else(|| bad("message to delete not found"))?;
    // In groups a bot deletes others' messages only as an admin.
    if chat.is_group() && !stored.from_bot && !chat.bot_is_admin() {
        return Err(bad("message can't be deleted"));
    }
    let date = stored
        .message
        .get("date")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if now_unix() - date > 48 * 3600 {
        return Err(bad("message can't be deleted for everyone"));
    }
    chat.messages.remove(&message_id);
    Ok(Value::Bool(true).into())
}

/// The `reaction` parameter: a JSON array of ReactionType.
fn parse_reactions(arg: Option<&str>) -> ApiResult<Vec<Value>> {
    let Some(raw) = arg else {
        return Ok(Vec::new());
    };
    let value: Value =
        serde_json::from_str(raw).map_err(|_| bad("can't parse reaction types JSON object"))?;
    let Value::Array(items) = value else {
        return Err(bad("expected an Array of ReactionType"));
    };
    let item_error = |reason: &str| bad(format!("can't parse ReactionType: {reason}"));
    items
        .into_iter()
        .map(|item| {
            let Value::Object(o) = item else {
                return Err(item_error("expected an Object"));
            };
            let field = |name: &str| match o.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) if name == "custom_emoji_id" => Ok(n.to_string()),
                Some(_) => Err(item_error(&format!(
                    "Field \"{name}\" must be of type String"
                ))),
                None => Err(item_error(&format!("Can't find field \"{name}\""))),
            };
            match field("type")?.as_str() {
                "emoji" => Ok(json!({ "type": "emoji", "emoji": field("emoji")? })),
                "custom_emoji" => Ok(json!({
                    "type": "custom_emoji",
                    "custom_emoji_id": field("custom_emoji_id")?,
                })),
                _ => Err(item_error("invalid reaction type specified")),
            }
        })
        .collect()
}

fn set_message_reaction(st: &mut State, p: &Params) -> ApiResult<Success> {
    let reactions = parse_reactions(p.arg("reaction").as_deref())?;
    let chat_id = resolve_chat(st, p, Access::Write)?;
    let message_id = p.int("message_id").unwrap_or(0);
    let stored = chat_mut(st, chat_id)?
        .messages
        .get_mut(&message_id)
        .filter(|_| message_id > 0)
        .ok_or_else(|| bad("message to react not found"))?;
    for reaction in &reactions {
        let emoji = reaction.get("emoji").and_then(Value::as_str);
        // Bots have no Premium: standard emoji only.
        if !emoji.is_some_and(|e| text::REACTION_EMOJI.contains(&e)) {
            return Err(bad("REACTION_INVALID"));
        }
    }
    if reactions.len() > 1 {
        return Err(bad("REACTIONS_TOO_MANY"));
    }
    stored.bot_reaction = reactions;
    Ok(Value::Bool(true).into())
}

// --- the rest -------------------------------------------------------------------

fn send_chat_action(st: &mut State, p: &Params) -> ApiResult<Success> {
    const ACTIONS: &[&str] = &[
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "record_audio",
        "upload_audio",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ];
    let action = p.arg("action").map(|a| a.to_ascii_lowercase());
    if !action.is_some_and(|a| ACTIONS.contains(&a.as_str())) {
        return Err(bad("wrong parameter action in request"));
    }
    resolve_chat(st, p, Access::Write)?;
    Ok(Value::Bool(true).into())
}

fn get_user_profile_photos(st: &mut State, p: &Params) -> ApiResult<Success> {
    let user_id = p.int("user_id").unwrap_or(0).max(0);
    if user_id == 0 {
        return Err(bad("invalid user_id specified"));
    }
    if user_id != st.bot.id && !st.users.contains_key(&user_id) {
        return Err(bad("user not found"));
    }
    let offset = p.int("offset").unwrap_or(0).max(0) as usize;
    let limit = p.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    let all = st.avatars.get(&user_id).cloned().unwrap_or_default();
    let photos: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    Ok(json!({ "total_count": all.len(), "photos": photos }).into())
}

fn set_webhook(st: &mut State, p: &Params) -> ApiResult<Success> {
    let Some(url) = p.arg("url") else {
        return delete_webhook(st, p);
    };
    let now = std::time::Instant::now();
    if st.next_webhook_set.is_some_and(|at| now < at) {
        return Err(ApiError::flood(1));
    }
    st.next_webhook_set = Some(now + std::time::Duration::from_secs(1));
    if !url.to_ascii_lowercase().starts_with("https://") {
        return Err(bad(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    if p.flag("drop_pending_updates") {
        st.updates.clear();
    }
    st.updates.set_allowed(p.arg("allowed_updates").as_deref());
    // The server's default is its --max-webhook-connections, 40 on the
    // public one; a value out of 1-100 is clamped.
    let max_connections = p.int("max_connections").unwrap_or(40).clamp(1, 100) as usize;
    let secret_token = p.arg("secret_token").filter(|t| !t.is_empty());
    let same = st.webhook.as_ref().is_some_and(|w| {
        w.url == url && w.max_connections == max_connections && w.secret_token == secret_token
    });
    st.webhook = Some(Webhook {
        url,
        secret_token,
        max_connections,
    });
    st.updates.abort_long_poll(BY_SET_WEBHOOK);
    Ok(Success {
        result: Value::Bool(true),
        description: Some(if same {
            "Webhook is already set"
        } else {
            "Webhook was set"
        }),
    })
}

fn delete_webhook(st: &mut State, p: &Params) -> ApiResult<Success> {
    if p.flag("drop_pending_updates") {
        st.updates.clear();
    }
    let was_set = st.webhook.take().is_some();
    st.updates.webhook_reset();
    Ok(Success {
        result: Value::Bool(true),
        description: Some(if was_set {
            "Webhook was deleted"
        } else {
            "Webhook is already deleted"
        }),
    })
}

fn webhook_info(st: &State) -> Value {
    let mut info = json!({
        "url": st.webhook.as_ref().map_or("", |w| w.url.as_str()),
        "has_custom_certificate": false,
        "pending_update_count": st.updates.pending(now_unix()),
    });
    if let Some(w) = &st.webhook {
        info["max_connections"] = w.max_connections.into();
    }
    info
}
