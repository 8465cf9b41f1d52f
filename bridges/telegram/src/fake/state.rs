//! Everything the fake server remembers, behind one mutex: chats and their
//! messages, known users and avatars, stored files, the update queue, the
//! flood-control windows, scripted faults and the call log.
//!
//! Also the two rules that decide whether an incoming message becomes an
//! update for the bot: privacy mode (a bot that cannot read all group
//! messages and is not an admin only gets commands, replies to itself,
//! mentions of itself and service messages) and the update type filter.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};

use super::error::ApiError;
use super::media;
use super::updates::UpdateQueue;
use super::{BotStatus, Call, Fault, Outage};

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the server task and the control API share.
pub(crate) struct Shared {
    pub token: String,
    state: Mutex<State>,
    /// Woken whenever an update is queued or a long poll is aborted.
    pub wake: Notify,
    /// The current outage, watched by requests held during [`Outage::Hang`].
    pub outage: watch::Sender<Outage>,
}

impl Shared {
    pub fn new(token: String, state: State) -> Self {
        Shared {
            token,
            state: Mutex::new(state),
            wake: Notify::new(),
            outage: watch::Sender::new(Outage::Up),
        }
    }

    /// The state. A panic elsewhere while holding the lock leaves the data
    /// usable, so poisoning is ignored rather than turned into more panics.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who the bot is.
pub(crate) struct BotInfo {
    pub id: i64,
    pub username: String,
    /// The getMe User object.
    pub user: Value,
    /// The User object of the bot's messages (no getMe-only fields).
    pub sender: Value,
    pub can_read_all_group_messages: bool,
}

/// The four chat types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChatKind {
    Private,
    Group,
    Supergroup,
    Channel,
}

impl ChatKind {
    pub fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "private" => ChatKind::Private,
            "group" => ChatKind::Group,
            "supergroup" => ChatKind::Supergroup,
            "channel" => ChatKind::Channel,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Private => "private",
            ChatKind::Group => "group",
            ChatKind::Supergroup => "supergroup",
            ChatKind::Channel => "channel",
        }
    }
}

/// A message as stored in its chat.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The Message object, with edits applied.
    pub message: Value,
    pub from_bot: bool,
    /// The bot's own reaction (ReactionType objects).
    pub bot_reaction: Vec<Value>,
}

/// One chat of the chat table.
pub(crate) struct Chat {
    pub id: i64,
    pub kind: ChatKind,
    pub title: String,
    pub is_forum: bool,
    /// The bot's own standing in the chat (what getChatMember answers for
    /// it, and what decides which writes and updates it gets).
    pub bot_status: BotStatus,
    /// The chat is gone for the bot (deleted, or never seen): every call
    /// naming it answers `chat not found`, and it sends no updates.
    pub missing: bool,
    /// Set once a basic group became a supergroup.
    pub migrated_to: Option<i64>,
    /// Forum topics the bot may post into (by `message_thread_id`).
    pub topics: BTreeSet<i64>,
    /// Other users' standing (`creator`, `administrator`, `restricted`,
    /// `left`, `kicked`) as getChatMember answers it; anyone else the bot
    /// has seen is a `member`.
    pub member_status: BTreeMap<i64, String>,
    last_message_id: i64,
    pub messages: BTreeMap<i64, Stored>,
}

impl Chat {
    pub fn new(id: i64, kind: ChatKind, title: &str, is_forum: bool) -> Self {
        Chat {
            id,
            kind,
            title: title.to_string(),
            is_forum: is_forum && kind == ChatKind::Supergroup,
            // Bots in channels are always administrators.
            bot_status: if kind == ChatKind::Channel {
                BotStatus::Administrator
            } else {
                BotStatus::Member
            },
            missing: false,
            migrated_to: None,
            topics: BTreeSet::new(),
            member_status: BTreeMap::new(),
            last_message_id: 0,
            messages: BTreeMap::new(),
        }
    }

    /// The next message id: one counter per chat, shared by everyone's
    /// messages.
    pub fn next_message_id(&mut self) -> i64 {
        self.last_message_id += 1;
        self.last_message_id
    }

    /// The Chat object messages carry.
    pub fn json(&self) -> Value {
        let mut chat = json!({ "id": self.id, "type": self.kind.as_str() });
        if self.kind == ChatKind::Private {
            chat["first_name"] = self.title.clone().into();
        } else {
            chat["title"] = self.title.clone().into();
        }
        if self.is_forum {
            chat["is_forum"] = true.into();
        }
        chat
    }

    /// The ChatFullInfo object getChat answers.
    pub fn full_json(&self) -> Value {
        let mut chat = self.json();
        chat["accent_color_id"] = 0.into();
        chat["max_reaction_count"] = 11.into();
        chat
    }

    pub fn is_group(&self) -> bool {
        matches!(self.kind, ChatKind::Group | ChatKind::Supergroup)
    }

    /// Whether the bot is an administrator here.
    pub fn bot_is_admin(&self) -> bool {
        self.bot_status == BotStatus::Administrator
    }

    /// Whether the bot is in the chat at all (and the chat exists for it).
    pub fn bot_present(&self) -> bool {
        !self.missing && !matches!(self.bot_status, BotStatus::Left | BotStatus::Kicked)
    }

    /// "group", "supergroup" or "channel", as the access errors name it.
    fn access_name(&self) -> &'static str {
        match self.kind {
            ChatKind::Group => "group",
            ChatKind::Channel => "channel",
            ChatKind::Private | ChatKind::Supergroup => "supergroup",
        }
    }

    /// The refusal for a call on this chat by a bot that left it or was
    /// removed, in the server's words (`check_chat_access`): a supergroup
    /// or channel refuses every call, a basic group only writes.
    pub fn access_error(&self, write: bool) -> Option<ApiError> {
        if self.kind == ChatKind::Private {
            return None;
        }
        let name = self.access_name();
        let everything = self.kind != ChatKind::Group;
        match self.bot_status {
            BotStatus::Kicked if write || everything => Some(ApiError::new(
                403,
                format!("Forbidden: bot was kicked from the {name} chat"),
            )),
            BotStatus::Left if write || everything => Some(ApiError::new(
                403,
                format!("Forbidden: bot is not a member of the {name} chat"),
            )),
            _ => None,
        }
    }
}

/// The kinds of stored file, with how Telegram names and files them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Photo,
    Document,
    Video,
    Audio,
    Voice,
    Animation,
    /// A sticker (WebP, TGS or WebM; no name or MIME type of its own).
    Sticker,
    /// A thumbnail of another file (a sticker's still image).
    Thumbnail,
}

impl FileKind {
    /// The Message field (and the send method's parameter).
    pub fn field(self) -> &'static str {
        match self {
            FileKind::Photo => "photo",
            FileKind::Document => "document",
            FileKind::Video => "video",
            FileKind::Audio => "audio",
            FileKind::Voice => "voice",
            FileKind::Animation => "animation",
            FileKind::Sticker => "sticker",
            FileKind::Thumbnail => "thumbnail",
        }
    }

    /// The name TDLib uses in "can't use file of type X as Y".
    pub fn tdlib_name(self) -> &'static str {
        match self {
            FileKind::Photo => "Photo",
            FileKind::Document => "Document",
            FileKind::Video => "Video",
            FileKind::Audio => "Audio",
            FileKind::Voice => "VoiceNote",
            FileKind::Animation => "Animation",
            FileKind::Sticker => "Sticker",
            FileKind::Thumbnail => "Thumbnail",
        }
    }

    fn directory(self) -> &'static str {
        match self {
            FileKind::Photo => "photos",
            FileKind::Document => "documents",
            FileKind::Video => "videos",
            FileKind::Audio => "music",
            FileKind::Voice => "voice",
            FileKind::Animation => "animations",
            FileKind::Sticker => "stickers",
            FileKind::Thumbnail => "thumbnails",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            FileKind::Photo => "AgAC",
            FileKind::Document => "BQAC",
            FileKind::Video => "BAAC",
            FileKind::Audio => "CQAC",
            FileKind::Voice => "AwAC",
            FileKind::Animation => "CgAC",
            FileKind::Sticker => "CAAC",
            FileKind::Thumbnail => "AAMC",
        }
    }
}

/// One stored file (each photo size is its own file).
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub kind: FileKind,
    pub unique_id: String,
    pub bytes: Arc<Vec<u8>>,
    pub file_name: Option<String>,
    pub mime: Option<String>,
    /// Assigned by the first getFile.
    pub path: Option<String>,
    /// What a message shows for it: the object, or for a photo the whole
    /// PhotoSize array of its set.
    pub media: Value,
}

/// The file store.
#[derive(Default)]
pub(crate) struct Files {
    by_id: HashMap<String, StoredFile>,
    by_path: HashMap<String, String>,
    counter: u64,
}

impl Files {
    fn ids(&mut self, kind: FileKind) -> (String, String) {
        self.counter += 1;
        let n = self.counter;
        (
            format!("{}AgADfake{n:08}", kind.id_prefix()),
            format!("AQADfake{n:06}"),
        )
    }

    /// Stores a photo and its sizes; returns the PhotoSize array.
    pub fn add_photo(&mut self, bytes: Arc<Vec<u8>>, width: u32, height: u32) -> Value {
        let mut entries = Vec::new();
        let sizes: Vec<Value> = media::photo_sizes(width, height)
            .into_iter()
            .map(|(w, h)| {
                let (file_id, unique_id) = self.ids(FileKind::Photo);
                entries.push((file_id.clone(), unique_id.clone()));
                json!({
                    "file_id": file_id,
                    "file_unique_id": unique_id,
                    "file_size": bytes.len(),
                    "width": w,
                    "height": h,
                })
            })
            .collect();
        let set = Value::Array(sizes);
        for (file_id, unique_id) in entries {
            self.by_id.insert(
                file_id,
                StoredFile {
                    kind: FileKind::Photo,
                    unique_id,
                    bytes: bytes.clone(),
                    file_name: None,
                    mime: Some("image/jpeg".into()),
                    path: None,
                    media: set.clone(),
                },
            );
        }
        set
    }

    /// Stores a non-photo file; `extra` are the kind's own fields
    /// (duration, width...). Returns the object a message shows.
    pub fn add_file(
        &mut self,
        kind: FileKind,
        bytes: Arc<Vec<u8>>,
        file_name: Option<String>,
        mime: Option<String>,
        extra: Map<String, Value>,
    ) -> Value {
        let (file_id, unique_id) = self.ids(kind);
        let mut object = extra;
        if kind != FileKind::Voice {
            if let Some(name) = &file_name {
                object.insert("file_name".into(), name.clone().into());
            }
        }
        if let Some(mime) = &mime {
            object.insert("mime_type".into(), mime.clone().into());
        }
        object.insert("file_id".into(), file_id.clone().into());
        object.insert("file_unique_id".into(), unique_id.clone().into());
        object.insert("file_size".into(), bytes.len().into());
        let media = Value::Object(object);
        self.by_id.insert(
            file_id,
            StoredFile {
                kind,
                unique_id,
                bytes,
                file_name,
                mime,
                path: None,
                media: media.clone(),
            },
        );
        media
    }

    /// Stores a sticker and a WebP still of it as its thumbnail; returns
    /// the Sticker object (see `FakeTelegram::store_sticker`).
    pub fn add_sticker(&mut self, bytes: Arc<Vec<u8>>, emoji: &str, set_name: &str) -> Value {
        let format = media::sticker_format(&bytes);
        let still = Arc::new(media::webp(128, 128));
        let (thumb_id, thumb_unique) = self.ids(FileKind::Thumbnail);
        let thumbnail = json!({
            "file_id": thumb_id,
            "file_unique_id": thumb_unique,
            "file_size": still.len(),
            "width": 128,
            "height": 128,
        });
        self.by_id.insert(
            thumb_id,
            StoredFile {
                kind: FileKind::Thumbnail,
                unique_id: thumb_unique,
                bytes: still,
                file_name: None,
                mime: None,
                path: None,
                media: thumbnail.clone(),
            },
        );
        let (file_id, unique_id) = self.ids(FileKind::Sticker);
        // The server's field order (JsonSticker); `thumb` is the old name
        // it still sends beside `thumbnail`.
        let mut sticker = json!({ "width": 512, "height": 512 });
        if !emoji.is_empty() {
            sticker["emoji"] = emoji.into();
        }
        sticker["set_name"] = set_name.into();
        sticker["is_animated"] = (format == Some(media::StickerFormat::Tgs)).into();
        sticker["is_video"] = (format == Some(media::StickerFormat::Webm)).into();
        sticker["type"] = "regular".into();
        sticker["thumbnail"] = thumbnail.clone();
        sticker["thumb"] = thumbnail;
        sticker["file_id"] = file_id.clone().into();
        sticker["file_unique_id"] = unique_id.clone().into();
        sticker["file_size"] = bytes.len().into();
        self.by_id.insert(
            file_id,
            StoredFile {
                kind: FileKind::Sticker,
                unique_id,
                bytes,
                file_name: None,
                mime: None,
                path: None,
                media: sticker.clone(),
            },
        );
        sticker
    }

    pub fn get(&self, file_id: &str) -> Option<&StoredFile> {
        self.by_id.get(file_id)
    }

    /// The file's download path, assigned on first use as the real server
    /// does on getFile.
    pub fn path(&mut self, file_id: &str) -> Option<String> {
        if let Some(path) = &self.by_id.get(file_id)?.path {
            return Some(path.clone());
        }
        self.counter += 1;
        let n = self.counter;
        let file = self.by_id.get_mut(file_id)?;
        let ext = match file.kind {
            FileKind::Photo => Some("jpg".to_string()),
            FileKind::Document => media::extension(file.file_name.as_deref()),
            FileKind::Video | FileKind::Animation => {
                Some(media::extension(file.file_name.as_deref()).unwrap_or_else(|| "mp4".into()))
            }
            FileKind::Audio => Some(
                media::extension(file.file_name.as_deref())
                    .filter(|e| ["ogg", "oga", "mp3", "mpeg3", "m4a"].contains(&e.as_str()))
                    .unwrap_or_else(|| "mp3".into()),
            ),
            FileKind::Voice => Some(
                match file.mime.as_deref() {
                    Some("audio/mpeg") => "mp3",
                    Some("audio/mp4") => "m4a",
                    _ => "oga",
                }
                .into(),
            ),
            // Named by what the bytes are, as the server's file types do.
            FileKind::Sticker | FileKind::Thumbnail => {
                media::sticker_format(&file.bytes).map(|f| f.extension().to_string())
            }
        };
        let dir = file.kind.directory();
        let path = match ext {
            Some(ext) => format!("{dir}/file_{n}.{ext}"),
            None => format!("{dir}/file_{n}"),
        };
        file.path = Some(path.clone());
        self.by_path.insert(path.clone(), file_id.to_string());
        Some(path)
    }

    pub fn by_path(&self, path: &str) -> Option<&StoredFile> {
        self.by_id.get(self.by_path.get(path)?)
    }
}

/// The ChatMember object getChatMember and `my_chat_member` show for
/// `user` with `status` (the rights an administrator bot usually has).
pub(crate) fn chat_member(user: &Value, status: BotStatus) -> Value {
    let mut member = json!({ "user": user, "status": status.as_str() });
    match status {
        BotStatus::Administrator => {
            for (key, value) in [
                ("can_be_edited", false),
                ("is_anonymous", false),
                ("can_manage_chat", true),
                ("can_delete_messages", true),
                ("can_manage_video_chats", true),
                ("can_restrict_members", true),
                ("can_promote_members", false),
                ("can_change_info", true),
                ("can_invite_users", true),
                ("can_post_stories", false),
                ("can_edit_stories", false),
                ("can_delete_stories", false),
                ("can_pin_messages", true),
            ] {
                member[key] = value.into();
            }
        }
        BotStatus::Restricted => {
            member["is_member"] = true.into();
            for key in [
                "can_send_messages",
                "can_send_audios",
                "can_send_documents",
                "can_send_photos",
                "can_send_videos",
                "can_send_video_notes",
                "can_send_voice_notes",
                "can_send_polls",
                "can_send_other_messages",
                "can_add_web_page_previews",
            ] {
                member[key] = false.into();
            }
            member["until_date"] = 0.into();
        }
        BotStatus::Kicked => member["until_date"] = 0.into(),
        BotStatus::Member | BotStatus::Left => {}
    }
    member
}

/// A user's ChatMember object (getChatMember) with `status` as a chat's
/// admin set it: `creator` (ChatMemberOwner), `administrator`
/// (ChatMemberAdministrator), `member`, `restricted`, `left` or `kicked`
/// (https://core.telegram.org/bots/api#chatmember).
pub(crate) fn user_member(user: &Value, status: &str) -> Value {
    match status {
        "creator" => json!({ "user": user, "status": "creator", "is_anonymous": false }),
        "administrator" => chat_member(user, BotStatus::Administrator),
        "restricted" => chat_member(user, BotStatus::Restricted),
        "left" => chat_member(user, BotStatus::Left),
        "kicked" => chat_member(user, BotStatus::Kicked),
        _ => chat_member(user, BotStatus::Member),
    }
}

/// The `message_thread_id` a reply to `target` carries (the server's
/// `get_forum_topic_id` of the message's topic): in a forum, the target's
/// topic; in a supergroup without topics, the reply thread, that is the
/// message that started the reply chain (the target's own thread, or the
/// target itself), without `is_topic_message`. Basic groups, channels and
/// private chats have none.
pub(crate) fn reply_thread(chat: &Chat, target: &Value) -> Option<i64> {
    let own = target.get("message_thread_id").and_then(Value::as_i64);
    match chat.kind {
        ChatKind::Supergroup if chat.is_forum => own,
        ChatKind::Supergroup => own.or_else(|| target.get("message_id").and_then(Value::as_i64)),
        _ => None,
    }
}

/// Flood control as Telegram applies it to bots: per group or channel
/// (negative chat id) per minute, and overall per second. Sliding windows
/// over the times of accepted messages.
pub(crate) struct RateLimiter {
    pub per_chat_per_minute: Option<u32>,
    pub per_bot_per_second: Option<u32>,
    per_chat: HashMap<i64, VecDeque<Instant>>,
    overall: VecDeque<Instant>,
}

impl RateLimiter {
    pub fn new(per_chat_per_minute: Option<u32>, per_bot_per_second: Option<u32>) -> Self {
        RateLimiter {
            per_chat_per_minute,
            per_bot_per_second,
            per_chat: HashMap::new(),
            overall: VecDeque::new(),
        }
    }

    /// Admits `n` messages into `chat_id` now, or says how many seconds to
    /// wait (429 with `retry_after`).
    pub fn admit(&mut self, chat_id: i64, n: usize) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut wait: Option<Duration> = None;
        let mut check = |log: &mut VecDeque<Instant>, limit: Option<u32>, window: Duration| {
            let Some(limit) = limit else { return };
            while log
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                log.pop_front();
            }
            let limit = limit as usize;
            if log.len() + n <= limit {
                return;
            }
            // The slot that must expire before n more fit.
            let need = log.len() + n - limit;
            let until = match log.get(need.saturating_sub(1)) {
                Some(t) if need <= log.len() => (*t + window).saturating_duration_since(now),
                _ => window,
            };
            wait = Some(wait.map_or(until, |w| w.max(until)));
        };
        if chat_id < 0 {
            let log = self.per_chat.entry(chat_id).or_default();
            check(log, self.per_chat_per_minute, Duration::from_secs(60));
        }
        check(
            &mut self.overall,
            self.per_bot_per_second,
            Duration::from_secs(1),
        );
        if let Some(wait) = wait {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::flood(secs.max(1)));
        }
        for _ in 0..n {
            if chat_id < 0 && self.per_chat_per_minute.is_some() {
                self.per_chat.entry(chat_id).or_default().push_back(now);
            }
            if self.per_bot_per_second.is_some() {
                self.overall.push_back(now);
            }
        }
        Ok(())
    }
}

/// A scripted fault: the next `remaining` calls of `method` get it.
pub(crate) struct FaultRule {
    /// Lower-case method name, or `*`.
    pub method: String,
    pub fault: Fault,
    pub remaining: usize,
}

/// The webhook, while one is set.
pub(crate) struct Webhook {
    pub url: String,
    /// Sent in `X-Telegram-Bot-Api-Secret-Token` with every delivery.
    pub secret_token: Option<String>,
    /// Most deliveries in flight at once (`max_connections`, default 40).
    pub max_connections: usize,
}

/// The whole state.
pub(crate) struct State {
    pub bot: BotInfo,
    pub chats: BTreeMap<i64, Chat>,
    /// Users the bot has seen (getUserProfilePhotos answers only for them).
    pub users: BTreeMap<i64, Value>,
    /// Profile photos per user, newest first; each a PhotoSize array.
    pub avatars: BTreeMap<i64, Vec<Value>>,
    pub files: Files,
    pub updates: UpdateQueue,
    pub rate: RateLimiter,
    pub webhook: Option<Webhook>,
    /// Where the webhook's HTTPS URL really arrives (the test's listener,
    /// as a reverse proxy in front of it would forward it); deliveries
    /// wait until one is known.
    pub webhook_target: Option<std::net::SocketAddr>,
    /// Answer every getUpdates at once, ignoring `timeout` (a proxy, a
    /// local server under load, an emulator).
    pub polls_at_once: bool,
    /// setWebhook with a URL may be called once a second.
    pub next_webhook_set: Option<Instant>,
    pub faults: Vec<FaultRule>,
    pub calls: Vec<Call>,
    pub last_media_group: i64,
    /// The bot's command lists (setMyCommands) by scope (its JSON, keys
    /// sorted) and language code.
    pub commands: BTreeMap<(String, String), Value>,
}

/// Message fields that make a message a service message, which privacy
/// mode always lets through.
const SERVICE_FIELDS: &[&str] = &[
    "new_chat_members",
    "left_chat_member",
    "new_chat_title",
    "new_chat_photo",
    "delete_chat_photo",
    "group_chat_created",
    "supergroup_chat_created",
    "channel_chat_created",
    "migrate_to_chat_id",
    "migrate_from_chat_id",
    "pinned_message",
    "message_auto_delete_timer_changed",
    "forum_topic_created",
    "forum_topic_edited",
    "forum_topic_closed",
    "forum_topic_reopened",
    "general_forum_topic_hidden",
    "general_forum_topic_unhidden",
    "video_chat_started",
    "video_chat_ended",
    "video_chat_scheduled",
    "video_chat_participants_invited",
];

impl State {
    /// Takes the next scripted fault for a method, if any.
    pub fn take_fault(&mut self, method: &str) -> Option<Fault> {
        let method = method.to_ascii_lowercase();
        let i = self
            .faults
            .iter()
            .position(|r| r.remaining > 0 && (r.method == "*" || r.method == method))?;
        let rule = &mut self.faults[i];
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        if rule.remaining == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }

    /// Remembers a user the bot has now seen.
    pub fn see_user(&mut self, user: &Value) {
        if let Some(id) = user.get("id").and_then(Value::as_i64) {
            if id != self.bot.id {
                self.users.insert(id, user.clone());
            }
        }
    }

    /// Queues the update for an incoming (or edited) message, if privacy
    /// mode and the update filter let the bot see it. Returns the update id.
    pub fn deliver(&mut self, chat_id: i64, message: &Value, edited: bool) -> Option<i64> {
        let chat = self.chats.get(&chat_id)?;
        if !chat.bot_present() || !self.bot_sees(chat, message) {
            return None;
        }
        let kind = match (chat.kind == ChatKind::Channel, edited) {
            (false, false) => "message",
            (false, true) => "edited_message",
            (true, false) => "channel_post",
            (true, true) => "edited_channel_post",
        };
        // Message updates expire a day after the message (or its edit).
        let date = message
            .get("edit_date")
            .or_else(|| message.get("date"))
            .and_then(Value::as_i64)
            .unwrap_or_else(now_unix);
        self.updates.push(kind, message.clone(), date + 86_400)
    }

    /// Privacy mode: in groups, a bot that cannot read all messages and is
    /// not an admin sees only what is addressed to it.
    fn bot_sees(&self, chat: &Chat, message: &Value) -> bool {
        if !chat.is_group() || self.bot.can_read_all_group_messages || chat.bot_is_admin() {
            return true;
        }
        if SERVICE_FIELDS.iter().any(|f| message.get(f).is_some()) {
            return true;
        }
        let reply_author = message
            .pointer("/reply_to_message/from/id")
            .and_then(Value::as_i64);
        if reply_author == Some(self.bot.id) {
            return true;
        }
        let text = message
            .get("text")
            .or_else(|| message.get("caption"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let handle = format!("@{}", self.bot.username).to_lowercase();
        if let Some(command) = text.strip_prefix('/') {
            let word = command.split_whitespace().next().unwrap_or("");
            match word.split_once('@') {
                None => return true,
                Some((_, to)) if format!("@{to}").to_lowercase() == handle => return true,
                Some(_) => {}
            }
        }
        text.to_lowercase().contains(&handle)
    }

    /// Where a reaction update may go: only to bots that are admins (always
    /// so in private chats), and only if the filter lists it.
    pub fn reaction_visible(&self, chat_id: i64) -> bool {
        self.chats
            .get(&chat_id)
            .is_some_and(|c| c.bot_present() && (c.kind == ChatKind::Private || c.bot_is_admin()))
    }

    /// A fresh media_group_id.
    pub fn next_media_group(&mut self) -> String {
        self.last_media_group += 1;
        format!("{}", 13_000_000_000_000_000 + self.last_media_group)
    }
}
