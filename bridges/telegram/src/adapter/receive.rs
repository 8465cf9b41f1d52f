//! Receiving: the long-poll loop (an album held across polls until it is
//! whole, a server that answers long polls at once polled calmly), updates
//! into events (files and a sticker's still fetched, a reaction put on the
//! channel that holds its message), the check of the bot's rights behind
//! reactions, and the health the account shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_core::kit;
use switchboard_core::{
    not_bridged, push_line, Attachment, AttachmentKind, Batch, BlobRef, ChannelId, Cursor,
    Delivered, EventKind, Host, NewEvent, ReceiveHealth, RunError, Shutdown,
};
use time::OffsetDateTime;

/// How long a downloaded file may wait for the hub's store before the
/// message goes on with a line saying it was not bridged.
const STORE_BUDGET: Duration = Duration::from_secs(600);

use super::{
    decode_updates, merge_album_part, nap, remote, trailing_album, Decoded, TelegramAdapter,
    ALLOWED_UPDATES, AVATAR_TTL, CALL_TIMEOUT, POLL_GRACE,
};
use crate::client::CallError;
use crate::config::Receive;
use crate::convert::{self, Channels, Draft, PendingFile};
use crate::wire::{ChatMember, File, ReactionUpdated, User};

/// How long an album is waited for after a poll brought a new part of it.
/// Telegram's apps send an album in one request, so its parts come
/// together.
const ALBUM_SETTLE: Duration = Duration::from_millis(700);
/// telegram-bot-api answers a poll of the same offset as the previous one
/// with at most one update when the previous one began less than 0.5 s
/// before (`process_get_updates_query`); a little more, for clocks.
const SAME_OFFSET_THROTTLE: Duration = Duration::from_millis(600);
/// The longest an album is held for parts still missing.
const ALBUM_PATIENCE: Duration = Duration::from_secs(5);
/// Telegram's largest album.
const ALBUM_MAX: usize = 10;
/// The pause after a long poll answered empty long before its timeout.
const HASTY_PAUSE: Duration = Duration::from_secs(1);
/// Early empty answers in a row before the account shows them.
const HASTY_REPORT: u32 = 3;
/// How often the bot's rights in its groups are asked again, besides the
/// `my_chat_member` updates that tell of each change.
pub(super) const RIGHTS_RECHECK: Duration = Duration::from_secs(15 * 60);

/// An album whose updates the last poll left unconfirmed.
struct Holding {
    group: String,
    /// Its parts seen so far.
    parts: usize,
    /// When it was first seen.
    since: Instant,
    /// When a poll last brought a new part of it.
    grew: Instant,
}

impl TelegramAdapter {
    /// The receive loop: long polling, or the webhook registered and
    /// served by the ingress.
    pub(super) async fn receive(
        self: Arc<Self>,
        host: &dyn Host,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let Some(me) = self.hello(host, &mut shutdown).await else {
            return Ok(());
        };
        let _ = self.me.set(me);
        if self.check_rights(&mut shutdown).await.is_none() {
            return Ok(());
        }
        self.register_commands().await;
        if let Receive::Webhook { url, secret, .. } = &self.cfg.receive {
            return self.run_webhook(host, url, secret, shutdown).await;
        }
        self.poll(host, shutdown).await
    }

    /// Long polling until shutdown.
    async fn poll(&self, host: &dyn Host, mut shutdown: Shutdown) -> Result<(), RunError> {
        // Polling takes the place of a webhook set earlier (Telegram
        // refuses getUpdates while one is set); its queued updates stay.
        if let Err(e) = self
            .client
            .call::<Value>(
                "deleteWebhook",
                &json!({"drop_pending_updates": false}),
                CALL_TIMEOUT,
            )
            .await
        {
            tracing::debug!(account = %self.cfg.account, error = %e, "deleteWebhook failed; polling will say why.");
        }
        let Some(offset) = kit::until_stored("read the update offset", &mut shutdown, || {
            host.cursor("offset")
        })
        .await
        else {
            return Ok(());
        };
        let mut offset: i64 = offset.and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut backoff = kit::Backoff::reconnect();
        // The album whose updates the last poll left unconfirmed.
        let mut holding: Option<Holding> = None;
        // When the last poll began: the server's throttle counts from there.
        let mut last_poll = Instant::now();
        // Empty answers long before their timeout, in a row.
        let mut hasty = 0;
        let mut rights_checked = Instant::now();
        loop {
            if rights_checked.elapsed() >= RIGHTS_RECHECK {
                if self.check_rights(&mut shutdown).await.is_none() {
                    return Ok(());
                }
                rights_checked = Instant::now();
            }
            let wait = if let Some(h) = &holding {
                // The album's other parts get a moment after its last new
                // one; and never sooner than 0.5 s after the last poll
                // began, or the same offset is answered with one update.
                let until = (h.grew + ALBUM_SETTLE).max(last_poll + SAME_OFFSET_THROTTLE);
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    () = &mut shutdown => return Ok(()),
                }
                0
            } else {
                self.cfg.poll_timeout.as_secs()
            };
            let params = json!({
                "offset": offset,
                "limit": 100,
                "timeout": wait,
                "allowed_updates": ALLOWED_UPDATES,
            });
            last_poll = Instant::now();
            let polled = tokio::select! {
                r = self.client.call::<Value>("getUpdates", &params, Duration::from_secs(wait) + POLL_GRACE) => r,
                () = &mut shutdown => return Ok(()),
            };
            // A success is a success: `null` is no updates.
            let polled = polled.and_then(|v| match v {
                Value::Array(list) => Ok(list),
                Value::Null => Ok(Vec::new()),
                other => Err(CallError::Decode(format!(
                    "getUpdates answered {other} instead of a list"
                ))),
            });
            let raw = match polled {
                Ok(raw) => {
                    backoff.reset();
                    raw
                }
                Err(e) => {
                    let wait = self.report_poll_error(host, &e, backoff.fail());
                    if !nap(wait, &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            // An empty answer long before the timeout: the server (or a
            // proxy in front of it) does not hold long polls. Polling
            // again at once would spin; wait a moment instead.
            let took = last_poll.elapsed();
            let early = raw.is_empty() && wait > 0 && took < Duration::from_secs(wait) / 2;
            if early {
                hasty += 1;
                if hasty >= HASTY_REPORT {
                    self.hasty_polls(Some((took, wait)));
                }
            } else if raw.is_empty() && wait > 0 {
                hasty = 0;
                self.hasty_polls(None);
            }
            self.report(host);
            if early {
                if !nap(HASTY_PAUSE, &mut shutdown).await {
                    return Ok(());
                }
                continue;
            }
            let (updates, next) = decode_updates(&self.cfg.account, raw, offset);
            // An album still arriving: confirm what comes before it only,
            // and poll its parts again while they keep coming.
            let (take, next) = match trailing_album(&updates) {
                Some((first, group)) => {
                    let parts = updates.len() - first;
                    let (since, grew) = match &holding {
                        Some(h) if h.group == group => (h.since, parts > h.parts),
                        _ => (Instant::now(), true),
                    };
                    if grew && parts < ALBUM_MAX && since.elapsed() < ALBUM_PATIENCE {
                        holding = Some(Holding {
                            group,
                            parts,
                            since,
                            grew: Instant::now(),
                        });
                        (first, updates[first].update_id)
                    } else {
                        holding = None;
                        (updates.len(), next)
                    }
                }
                None => {
                    holding = None;
                    (updates.len(), next)
                }
            };
            if take == 0 && next == offset {
                continue;
            }
            let Some(batch) = self.translate(host, &updates[..take], &mut shutdown).await else {
                return Ok(());
            };
            let Some(()) = self.commit(host, batch, next, &mut shutdown).await else {
                return Ok(());
            };
            offset = next;
        }
    }

    /// `getMe` until it answers; warns when privacy mode hides messages.
    async fn hello(&self, host: &dyn Host, shutdown: &mut Shutdown) -> Option<User> {
        let mut backoff = kit::Backoff::reconnect();
        let none = json!({});
        loop {
            let r = tokio::select! {
                r = self.client.call::<User>("getMe", &none, CALL_TIMEOUT) => r,
                () = &mut *shutdown => return None,
            };
            match r {
                Ok(me) => {
                    if me.can_read_all_group_messages == Some(false) {
                        tracing::warn!(
                            account = %self.cfg.account,
                            bot = me.username.as_deref().unwrap_or_default(),
                            "Privacy mode is on: in groups this bot sees only commands and replies to it. \
                             Turn it off in @BotFather (/setprivacy, Disable), then remove the bot from each group and add it again."
                        );
                    }
                    tracing::info!(account = %self.cfg.account, bot = me.username.as_deref().unwrap_or_default(), "Connected to Telegram.");
                    return Some(me);
                }
                Err(e) => {
                    let wait = self.report_poll_error(host, &e, backoff.fail());
                    if !nap(wait, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Reports a failed poll to the health board and says how long to wait.
    pub(super) fn report_poll_error(
        &self,
        host: &dyn Host,
        e: &CallError,
        backoff: Duration,
    ) -> Duration {
        let account = &self.cfg.account;
        match e {
            CallError::Api {
                code: 401 | 404,
                description,
                ..
            } => {
                let what = format!(
                    "Telegram refused the bot token ({description}); check the token from @BotFather in [{account}]"
                );
                tracing::error!(%account, "{what}");
                host.health(ReceiveHealth::NeedsAction { what });
                backoff.max(Duration::from_secs(30))
            }
            CallError::Api {
                code: 409,
                description,
                ..
            } => {
                let what = format!(
                    "another client receives this bot's updates ({description}): stop the other switchboard or bot instance, or delete its webhook"
                );
                tracing::error!(%account, "{what}");
                host.health(ReceiveHealth::NeedsAction { what });
                backoff.max(Duration::from_secs(5))
            }
            CallError::Api {
                code: 429,
                retry_after,
                ..
            } => {
                let wait = Duration::from_secs(retry_after.unwrap_or(1));
                host.health(ReceiveHealth::Reconnecting {
                    error: e.to_string(),
                });
                tracing::warn!(%account, error = %e, "Polling rate-limited.");
                wait
            }
            _ => {
                tracing::warn!(%account, error = %e, "Polling Telegram failed; retrying.");
                host.health(ReceiveHealth::Reconnecting {
                    error: e.to_string(),
                });
                backoff
            }
        }
    }

    /// Asks Telegram for the bot's standing in each bridged group
    /// (`getChatMember`): Telegram sends reactions only to administrators.
    /// Private chats always get them. `None` on shutdown.
    pub(super) async fn check_rights(&self, shutdown: &mut Shutdown) -> Option<()> {
        let me = self.me.get()?.id;
        for chat in self.chats.iter().copied().filter(|c| *c < 0) {
            let params = json!({"chat_id": chat, "user_id": me});
            let r = tokio::select! {
                r = self.client.call::<ChatMember>("getChatMember", &params, CALL_TIMEOUT) => r,
                () = &mut *shutdown => return None,
            };
            match r {
                Ok(member) => self.rights_changed(chat, &member),
                // Removed, or the chat is gone: no reactions from there
                // either (the sends say the rest).
                Err(CallError::Api {
                    code: 400 | 403,
                    description,
                    ..
                }) => self.reactions_hidden(chat, Some(description)),
                Err(e) => {
                    tracing::debug!(account = %self.cfg.account, chat, error = %e, "Cannot ask for the bot's rights in a chat; asking again later.");
                }
            }
        }
        Some(())
    }

    /// The bot's standing in `chat` is now `member`.
    fn rights_changed(&self, chat: i64, member: &ChatMember) {
        if chat > 0 || !self.chats.contains(&chat) {
            return;
        }
        let why = (!member.sees_reactions()).then(|| format!("the bot is {} there", member.status));
        self.reactions_hidden(chat, why);
    }

    /// Records whether Telegram hides reactions in `chat` from the bot, and
    /// why (`None`: it sends them).
    fn reactions_hidden(&self, chat: i64, why: Option<String>) {
        let mut d = self.degraded.lock().expect("degraded lock");
        match why {
            Some(why) => {
                d.no_reactions.insert(chat, why);
            }
            None => {
                d.no_reactions.remove(&chat);
            }
        }
    }

    /// Records whether long polls are answered at once (`Some((after,
    /// asked))`: an empty answer after `after` of `asked` seconds).
    fn hasty_polls(&self, seen: Option<(Duration, u64)>) {
        let mut d = self.degraded.lock().expect("degraded lock");
        match seen {
            Some((after, asked)) => {
                if d.hasty_polls.is_none() {
                    d.hasty_polls = Some(format!(
                        "the Bot API server answers long polls at once (empty after {} ms of the {asked} s asked): polled once a second instead",
                        after.as_millis()
                    ));
                }
                if !d.told_hasty {
                    d.told_hasty = true;
                    tracing::warn!(
                        account = %self.cfg.account,
                        after_ms = after.as_millis(),
                        asked_s = asked,
                        "The Bot API server answers long polls at once, empty: it is polled once a second instead of in a loop. \
                         A proxy's read timeout, or a local Bot API server under load, does this."
                    );
                }
            }
            None => d.hasty_polls = None,
        }
    }

    /// Tells the hub how receiving goes: degraded with every reason that
    /// holds, or connected. Each chat without reactions is named in the
    /// log once, with the fix.
    pub(super) fn report(&self, host: &dyn Host) {
        let (reasons, newly) = {
            let mut d = self.degraded.lock().expect("degraded lock");
            let hidden: Vec<i64> = d.no_reactions.keys().copied().collect();
            // A chat that was fixed and broke again is named again.
            d.told_reactions.retain(|c| hidden.contains(c));
            let newly: Vec<i64> = hidden
                .iter()
                .copied()
                .filter(|c| !d.told_reactions.contains(c))
                .collect();
            d.told_reactions.extend(newly.iter().copied());
            let mut reasons = Vec::new();
            if !hidden.is_empty() {
                let list: Vec<String> = d
                    .no_reactions
                    .iter()
                    .map(|(chat, why)| format!("{chat} ({why})"))
                    .collect();
                reasons.push(format!(
                    "reactions from {} are not bridged: Telegram sends them only to admins; promote the bot there",
                    list.join(", ")
                ));
            }
            if let Some(h) = &d.hasty_polls {
                reasons.push(h.clone());
            }
            (reasons, newly)
        };
        if !newly.is_empty() {
            let chats: Vec<String> = newly.iter().map(i64::to_string).collect();
            let chats = chats.join(", ");
            tracing::warn!(
                account = %self.cfg.account,
                %chats,
                "Telegram sends reactions only to administrators: make the bot an administrator in {chats} to bridge reactions from there."
            );
        }
        host.health(if reasons.is_empty() {
            ReceiveHealth::Connected
        } else {
            ReceiveHealth::Degraded {
                reason: reasons.join("; "),
            }
        });
    }

    /// Events for decoded updates: albums merged into one message, files
    /// fetched into the blob store, reactions on the channel that holds
    /// their message. `None` on shutdown.
    pub(super) async fn translate(
        &self,
        host: &dyn Host,
        updates: &[Decoded],
        shutdown: &mut Shutdown,
    ) -> Option<Vec<NewEvent>> {
        let account = &self.cfg.account;
        let me = self.me.get().map(|u| u.id);
        let received = OffsetDateTime::now_utc();
        let mut drafts: Vec<Draft> = Vec::new();
        let mut albums: std::collections::HashMap<(i64, String), usize> =
            std::collections::HashMap::new();
        // Reported once the batch is read: a promotion and a demotion in
        // one batch end where the second leaves them.
        let mut rights_changed = false;
        for d in updates {
            let Some(u) = &d.update else { continue };
            if let Some(m) = u.message.as_ref().or(u.channel_post.as_ref()) {
                if m.from.as_ref().map(|f| f.id) == me {
                    continue;
                }
                if let Some(to) = m.migrate_to_chat_id {
                    self.follow_migration(host, m.chat.id, to, shutdown).await?;
                    continue;
                }
                if let Some(command) = self.command_in(m) {
                    drafts.push(Draft {
                        event: self.command_event(m, command, received).await,
                        files: Vec::new(),
                        bad_date: None,
                    });
                    continue;
                }
                let Some(draft) =
                    convert::message_draft_for(account, self, m, false, d.update_id, received)
                else {
                    tracing::debug!(%account, update = u.update_id, "Update of a kind not bridged; skipped.");
                    continue;
                };
                if let Some(group) = &m.media_group_id {
                    if let Some(&i) = albums.get(&(m.chat.id, group.clone())) {
                        merge_album_part(&mut drafts[i], draft);
                        continue;
                    }
                    albums.insert((m.chat.id, group.clone()), drafts.len());
                }
                drafts.push(draft);
            } else if let Some(m) = u.edited_message.as_ref().or(u.edited_channel_post.as_ref()) {
                if m.from.as_ref().map(|f| f.id) == me {
                    continue;
                }
                if let Some(draft) =
                    convert::message_draft_for(account, self, m, true, d.update_id, received)
                {
                    drafts.push(draft);
                }
            } else if let Some(r) = &u.message_reaction {
                if r.user.as_ref().map(|f| f.id) == me {
                    continue;
                }
                let place = self.reaction_channel(host, r, shutdown).await?;
                drafts.extend(
                    convert::reaction_events_on(account, place, r, d.update_id, received)
                        .into_iter()
                        .map(|event| Draft {
                            event,
                            files: Vec::new(),
                            bad_date: None,
                        }),
                );
            } else if let Some(change) = &u.my_chat_member {
                tracing::info!(%account, chat = change.chat.id, from = %change.old_chat_member.status, to = %change.new_chat_member.status, "The bot's standing in a chat changed.");
                self.rights_changed(change.chat.id, &change.new_chat_member);
                rights_changed = true;
            } else {
                tracing::debug!(%account, update = u.update_id, "Update of a kind not bridged; skipped.");
            }
        }
        if rights_changed {
            self.report(host);
        }
        let mut events = Vec::with_capacity(drafts.len());
        for mut d in drafts {
            if let Some(date) = d.bad_date {
                tracing::warn!(%account, channel = %d.event.origin.channel, remote_id = %d.event.origin.remote_id, date, "A Telegram update's date is not a plausible time (milliseconds, or out of range); bridged with the time it was received.");
            }
            if !d.files.is_empty() {
                let mut fetched = Vec::new();
                let mut notes = Vec::new();
                for f in &d.files {
                    match self.fetch(host, f, shutdown).await? {
                        Ok(a) => fetched.push(a),
                        Err(note) => notes.push(note),
                    }
                }
                if let EventKind::Message {
                    body, attachments, ..
                } = &mut d.event.kind
                {
                    *attachments = fetched;
                    for note in notes {
                        push_line(body, &note);
                    }
                }
            }
            if d.event.author.avatar.is_none() && matches!(d.event.kind, EventKind::Message { .. })
            {
                d.event.author.avatar = self.avatar(host, &d.event.author.remote_id).await;
            }
            events.push(d.event);
        }
        Some(events)
    }

    /// Where a reaction goes. It names the chat, not the forum topic; when
    /// topics of that chat are channels of their own, the hub says which of
    /// them (or the chat) holds the message. `None` on shutdown.
    async fn reaction_channel(
        &self,
        host: &dyn Host,
        r: &ReactionUpdated,
        shutdown: &mut Shutdown,
    ) -> Option<(ChannelId, Option<String>)> {
        let chat = self.channel_for(r.chat.id, None);
        let mut among = self.topics_of(r.chat.id);
        if among.is_empty() {
            return Some(chat);
        }
        among.push(chat.0.clone());
        let message = remote(r.message_id);
        let found = kit::until_stored("look up a reaction's message", shutdown, || {
            host.channel_of(&message, &among)
        })
        .await?;
        Some(match found {
            Some(found) if found != chat.0 => (found, None),
            _ => chat,
        })
    }

    /// Commits events and the offset after them; `None` on shutdown.
    async fn commit(
        &self,
        host: &dyn Host,
        events: Vec<NewEvent>,
        next: i64,
        shutdown: &mut Shutdown,
    ) -> Option<()> {
        let channels: Vec<ChannelId> = events.iter().map(|e| e.origin.channel.clone()).collect();
        let batch = Batch {
            events,
            cursor: Some(Cursor {
                name: "offset".into(),
                value: next.to_string(),
            }),
        };
        // Not confirmed to Telegram until committed: the updates stay there.
        let answers = kit::deliver(host, batch, shutdown).await?;
        self.note_answers(answers, &channels);
        Some(())
    }

    /// Logs what the hub said about committed events: a rejection, or the
    /// first message from a chat no gateway lists.
    pub(super) fn note_answers(&self, answers: Vec<Delivered>, channels: &[ChannelId]) {
        for (a, channel) in answers.into_iter().zip(channels) {
            match a {
                Delivered::Rejected(reason) => {
                    tracing::warn!(account = %self.cfg.account, %channel, %reason, "Telegram update rejected by the hub; skipped.");
                }
                // How an admin finds a group's id: write there.
                Delivered::Ignored
                    if self
                        .unlisted
                        .lock()
                        .expect("unlisted lock")
                        .insert(channel.clone()) =>
                {
                    tracing::info!(account = %self.cfg.account, %channel, "A message from a chat no gateway lists; add it as a gateway member (channel = \"{channel}\") to bridge it.");
                }
                _ => {}
            }
        }
    }

    /// A group became a supergroup: its messages now come from `to`.
    async fn follow_migration(
        &self,
        host: &dyn Host,
        from: i64,
        to: i64,
        shutdown: &mut Shutdown,
    ) -> Option<()> {
        let (Ok(from), Ok(to)) = (
            ChannelId::new(from.to_string()),
            ChannelId::new(to.to_string()),
        ) else {
            return Some(());
        };
        kit::until_stored("record the chat's migration", shutdown, || {
            host.moved(&from, &to)
        })
        .await
    }

    /// Downloads one file into the blob store, with its still image when it
    /// has one. `Ok(Err(line))` when it cannot be had (too large, gone): the
    /// message says so instead. `None` on shutdown.
    async fn fetch(
        &self,
        host: &dyn Host,
        f: &PendingFile,
        shutdown: &mut Shutdown,
    ) -> Option<Result<Attachment, String>> {
        let bytes = match self.download(f, shutdown).await? {
            Ok(b) => b,
            Err(line) => return Some(Err(line)),
        };
        let size = bytes.len() as u64;
        let content = match self.store(host, &f.name, &f.mime, bytes, shutdown).await? {
            Ok(b) => b,
            Err(line) => return Some(Err(line)),
        };
        let mut attachment = Attachment {
            alt: None,
            kind: f.kind,
            name: f.name.clone(),
            mime: f.mime.clone(),
            size,
            content,
        };
        if let Some(still) = &f.alt {
            attachment.alt = self.fetch_still(host, still, shutdown).await?.map(Box::new);
        }
        Some(Ok(attachment))
    }

    /// A still image of a file (a sticker's thumbnail), named and typed by
    /// its bytes; `Some(None)` when there is none to be had (best effort:
    /// the file itself goes anyway). `None` on shutdown.
    async fn fetch_still(
        &self,
        host: &dyn Host,
        f: &PendingFile,
        shutdown: &mut Shutdown,
    ) -> Option<Option<Attachment>> {
        let Ok(bytes) = self.download(f, shutdown).await? else {
            return Some(None);
        };
        let Some((name, mime)) = convert::still_image(&bytes) else {
            tracing::debug!(account = %self.cfg.account, "A sticker's thumbnail is not a still image; the sticker goes without one.");
            return Some(None);
        };
        let size = bytes.len() as u64;
        // A still image is a nicety: without the store, the sticker goes on.
        let Ok(content) = self.store(host, name, mime, bytes, shutdown).await? else {
            return Some(None);
        };
        Some(Some(Attachment {
            alt: None,
            kind: AttachmentKind::Image,
            name: name.to_owned(),
            mime: mime.to_owned(),
            size,
            content,
        }))
    }

    /// A file's bytes from Telegram (getFile, then the download), or the
    /// line the message carries instead. `None` on shutdown.
    async fn download(
        &self,
        f: &PendingFile,
        shutdown: &mut Shutdown,
    ) -> Option<Result<Vec<u8>, String>> {
        let max = self.cfg.max_download;
        let too_big = || {
            let why = format!(
                "over the {} download limit",
                switchboard_core::human_size(max)
            );
            not_bridged(&f.name, f.size, &why)
        };
        if f.size.is_some_and(|s| s > max) {
            return Some(Err(too_big()));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = async {
                let file: File = self
                    .client
                    .call("getFile", &json!({"file_id": f.file_id}), CALL_TIMEOUT)
                    .await?;
                let path = file
                    .file_path
                    .ok_or_else(|| CallError::Decode("no file_path".into()))?;
                self.client
                    .download(&path, max, Duration::from_secs(300))
                    .await
            };
            let r = tokio::select! {
                r = r => r,
                () = &mut *shutdown => return None,
            };
            match r {
                Ok(b) => return Some(Ok(b)),
                Err(CallError::Api {
                    code: 400 | 413,
                    description,
                    ..
                }) if description.contains("too big") || description.contains("larger than") => {
                    return Some(Err(too_big()));
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "Fetching a file failed; retrying.");
                    if !nap(Duration::from_secs(1), shutdown).await {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "A file could not be fetched; the message says so.");
                    return Some(Err(not_bridged(
                        &f.name,
                        f.size,
                        "could not be fetched from Telegram",
                    )));
                }
            }
        }
    }

    /// Keeps bytes in the blob store, retrying while it is unavailable for
    /// at most [`STORE_BUDGET`]; `Err` is the line the message carries
    /// instead of a file that could not be stored. `None` on shutdown.
    async fn store(
        &self,
        host: &dyn Host,
        name: &str,
        mime: &str,
        bytes: Vec<u8>,
        shutdown: &mut Shutdown,
    ) -> Option<Result<BlobRef, String>> {
        match kit::store_file(host, name, mime, bytes, STORE_BUDGET, shutdown).await {
            kit::Stored::Blob(b) => Some(Ok(b)),
            kit::Stored::NotBridged(line) => Some(Err(line)),
            kit::Stored::Stopped => None,
        }
    }

    /// A user's profile photo, fetched once per user and [`AVATAR_TTL`],
    /// kept as a blob. Best effort: a failure leaves the author without one.
    async fn avatar(&self, host: &dyn Host, user: &str) -> Option<switchboard_core::Avatar> {
        if let Some((known, at)) = self.avatars.lock().expect("avatars lock").get(user) {
            if at.elapsed() < AVATAR_TTL {
                return known.clone().map(switchboard_core::Avatar::Blob);
            }
        }
        let id: i64 = user.parse().ok().filter(|id| *id > 0)?;
        let got = async {
            let photos: crate::wire::ProfilePhotos = self
                .client
                .call(
                    "getUserProfilePhotos",
                    &json!({"user_id": id, "limit": 1}),
                    CALL_TIMEOUT,
                )
                .await
                .ok()?;
            let Some(photo) = photos.photos.first().and_then(|sizes| sizes.last()) else {
                return Some(None);
            };
            let file: File = self
                .client
                .call("getFile", &json!({"file_id": photo.file_id}), CALL_TIMEOUT)
                .await
                .ok()?;
            let bytes = self
                .client
                .download(
                    file.file_path.as_deref()?,
                    self.cfg.max_download,
                    CALL_TIMEOUT,
                )
                .await
                .ok()?;
            Some(host.put_blob("image/jpeg", bytes).await.ok())
        }
        .await;
        // A failed lookup is tried again with the author's next message.
        let found = got?;
        self.avatars
            .lock()
            .expect("avatars lock")
            .insert(user.to_owned(), (found.clone(), std::time::Instant::now()));
        found.map(switchboard_core::Avatar::Blob)
    }
}
