//! [`MatrixAdapter`]: rooms joined, events received (a `/sync` loop in bot
//! mode, pushed transactions in appservice mode) and sends.
//!
//! Both modes share everything but how events arrive and who sends: in bot
//! mode the account itself, with the author's name in front; in appservice
//! mode a ghost user per remote author (see [`crate::appservice`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use ruma::api::client as api;
use ruma::events::{AnySyncStateEvent, AnySyncTimelineEvent, StateEventType};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId, OwnedUserId, UserId};
use switchboard_core::{
    AccountId, Adapter, Attachment, Batch, Capabilities, ChannelId, Cursor, DeliverError,
    EventKind, Host, NewEvent, Outbound, Pacing, Reactions, Receipt, ReceiveHealth, RichText,
    RunError, SendError, Shutdown, TextLimit, TextUnit, DEFAULT_NICK_FORMAT,
};

use crate::client::{Client, MxError};
use crate::config::{Login, MatrixConfig, Mode};
use crate::convert::{self, Media, Names, Read};

/// Largest text sent in one event, in UTF-8 bytes: an edit carries its
/// text four times (body and HTML, twice) inside Matrix's 64 KiB event.
const TEXT_MAX: usize = 12_000;

/// How long a send waits for the homeserver.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest JSON answer read (a `/sync` of many rooms is large).
const MAX_JSON: u64 = 64 << 20;

/// The notice posted in an encrypted room switchboard was asked to bridge.
pub const ENCRYPTED_NOTICE: &str =
    "switchboard does not bridge end-to-end encrypted rooms yet; messages here are not relayed.";

/// One Matrix account: a relay bot or an application service.
pub struct MatrixAdapter {
    pub(crate) cfg: MatrixConfig,
    /// The gateway channels of this account: room ids and aliases.
    channels: BTreeSet<ChannelId>,
    pub(crate) client: Client,
    /// The account's own user (the bot, or the appservice's bot user).
    pub(crate) own: OwnedUserId,
    pub(crate) host: Mutex<Option<Arc<dyn Host>>>,
    /// Room id → the channel id the gateways use (an alias maps here).
    rooms: Mutex<HashMap<OwnedRoomId, ChannelId>>,
    /// Display names by (room, user), from membership events.
    names: Mutex<HashMap<(String, String), String>>,
    /// Rooms found encrypted: nothing is bridged there.
    encrypted: Mutex<BTreeSet<OwnedRoomId>>,
    pub(crate) this: Weak<Self>,
}

struct RoomNames<'a>(&'a MatrixAdapter, &'a str);

impl Names for RoomNames<'_> {
    fn name(&self, user: &str) -> Option<String> {
        self.0
            .names
            .lock()
            .expect("names lock")
            .get(&(self.1.to_owned(), user.to_owned()))
            .cloned()
    }
}

pub(crate) async fn nap(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown => false,
    }
}

/// A transaction id from the outbox's idempotency key (part `i` of a send
/// that creates several events), so a retried send never duplicates.
fn txn(key: &str, i: usize) -> OwnedTransactionId {
    let base: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if i == 0 {
        base.into()
    } else {
        format!("{base}.{i}").into()
    }
}

impl MatrixAdapter {
    /// An adapter for `cfg`, serving `channels`.
    ///
    /// # Panics
    /// Never: the configuration was validated.
    #[must_use]
    pub fn new(cfg: MatrixConfig, channels: BTreeSet<ChannelId>) -> Arc<Self> {
        let client = Client::new(&cfg.homeserver);
        let own = match &cfg.mode {
            Mode::Bot { user, login } => {
                if let Login::Token(t) = login {
                    client.set_token(t);
                }
                user.clone()
            }
            Mode::Appservice(a) => {
                client.set_token_always(&a.as_token);
                a.bot_user()
            }
        };
        let own = UserId::parse(own.as_str()).expect("validated user id");
        // Room ids need no lookup: known before anything arrives.
        let rooms = channels
            .iter()
            .filter_map(|c| ruma::RoomId::parse(c.as_str()).ok().map(|r| (r, c.clone())))
            .collect();
        Arc::new_cyclic(|this| Self {
            cfg,
            channels,
            client,
            own,
            host: Mutex::new(None),
            rooms: Mutex::new(rooms),
            names: Mutex::new(HashMap::new()),
            encrypted: Mutex::new(BTreeSet::new()),
            this: this.clone(),
        })
    }

    /// The gateway channels of this account.
    pub(crate) fn channels(&self) -> impl Iterator<Item = &ChannelId> {
        self.channels.iter()
    }

    pub(crate) fn host(&self) -> Result<Arc<dyn Host>, SendError> {
        self.host.lock().expect("host lock").clone().ok_or_else(|| {
            SendError::transient(
                "the Matrix account is starting",
                Some(Duration::from_secs(1)),
            )
        })
    }

    /// Whether `user` is this bridge (its bot, or one of its ghosts).
    pub(crate) fn is_own(&self, user: &str) -> bool {
        match &self.cfg.mode {
            Mode::Bot { .. } => user == self.own.as_str(),
            Mode::Appservice(a) => a.owns(user),
        }
    }

    /// The channel id the gateways use for `room`, when configured.
    pub(crate) fn channel_of(&self, room: &OwnedRoomId) -> Option<ChannelId> {
        self.rooms.lock().expect("rooms lock").get(room).cloned()
    }

    /// The room a channel names (resolving an alias once).
    pub(crate) async fn room_of(&self, channel: &ChannelId) -> Result<OwnedRoomId, MxError> {
        if let Some((room, _)) = self
            .rooms
            .lock()
            .expect("rooms lock")
            .iter()
            .find(|(_, c)| *c == channel)
        {
            return Ok(room.clone());
        }
        let room = if channel.as_str().starts_with('#') {
            let alias = ruma::RoomAliasId::parse(channel.as_str())
                .map_err(|e| MxError::Build(e.to_string()))?;
            self.client
                .call(
                    api::alias::get_alias::v3::Request::new(alias),
                    None,
                    SEND_TIMEOUT,
                    MAX_JSON,
                )
                .await?
                .room_id
        } else {
            ruma::RoomId::parse(channel.as_str()).map_err(|e| MxError::Build(e.to_string()))?
        };
        self.rooms
            .lock()
            .expect("rooms lock")
            .insert(room.clone(), channel.clone());
        Ok(room)
    }

    /// Signs in (bot mode): a stored token first, else a password login
    /// whose token is stored so restarts do not pile up devices.
    async fn sign_in(&self, host: &dyn Host, fresh: bool) -> Result<(), MxError> {
        let Mode::Bot {
            user,
            login: Login::Password(password),
        } = &self.cfg.mode
        else {
            return Ok(());
        };
        if !fresh {
            if let Ok(Some(token)) = host.state("access_token").await {
                self.client.set_token(&token);
                return Ok(());
            }
        }
        use api::session::login::v3::{LoginInfo, Password, Request};
        let id =
            api::uiaa::UserIdentifier::Matrix(api::uiaa::MatrixUserIdentifier::new(user.clone()));
        let mut req = Request::new(LoginInfo::Password(Password::new(id, password.clone())));
        req.initial_device_display_name = Some("switchboard".into());
        let res = self.client.call(req, None, SEND_TIMEOUT, MAX_JSON).await?;
        self.client.set_token(&res.access_token);
        // Not fatal: the next start logs in again.
        let _ = host.set_state("access_token", &res.access_token).await;
        tracing::info!(account = %self.cfg.account, user = %res.user_id, "Logged in to Matrix.");
        Ok(())
    }

    /// Joins every configured room (accepting an invite to it), and finds
    /// the encrypted ones.
    async fn join_rooms(&self, host: &dyn Host) -> Result<(), MxError> {
        for channel in &self.channels {
            let room = match self.room_of(channel).await {
                Ok(r) => r,
                Err(e @ (MxError::Connect(_) | MxError::Timeout | MxError::Network(_))) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::error!(account = %self.cfg.account, %channel, error = %e, "Cannot find the room; it is skipped.");
                    continue;
                }
            };
            self.join(&room, None).await.or_else(|e| match e {
                MxError::Connect(_) | MxError::Timeout | MxError::Network(_) => Err(e),
                e => {
                    tracing::error!(account = %self.cfg.account, %channel, error = %e, "Cannot join the room; invite the bridge to it.");
                    Ok(())
                }
            })?;
            self.check_encryption(host, &room).await;
        }
        Ok(())
    }

    pub(crate) async fn join(
        &self,
        room: &OwnedRoomId,
        as_user: Option<&UserId>,
    ) -> Result<(), MxError> {
        self.client
            .call(
                api::membership::join_room_by_id_or_alias::v3::Request::new(room.clone().into()),
                as_user,
                SEND_TIMEOUT,
                MAX_JSON,
            )
            .await
            .map(|_| ())
    }

    /// An encrypted room is not silently broken: an error in the log and
    /// one notice in the room saying it is not bridged.
    async fn check_encryption(&self, host: &dyn Host, room: &OwnedRoomId) {
        let req = api::state::get_state_event_for_key::v3::Request::new(
            room.clone(),
            StateEventType::RoomEncryption,
            String::new(),
        );
        if self
            .client
            .call(req, None, SEND_TIMEOUT, MAX_JSON)
            .await
            .is_ok()
        {
            self.mark_encrypted(host, room).await;
        }
    }

    pub(crate) async fn mark_encrypted(&self, host: &dyn Host, room: &OwnedRoomId) {
        if !self
            .encrypted
            .lock()
            .expect("encrypted lock")
            .insert(room.clone())
        {
            return;
        }
        tracing::error!(
            account = %self.cfg.account, %room,
            "The room is end-to-end encrypted, which switchboard does not support yet; nothing is bridged there."
        );
        let key = format!("encrypted_notice:{room}");
        if matches!(host.state(&key).await, Ok(Some(_))) {
            return;
        }
        let content = convert::text_content(&RichText::plain(ENCRYPTED_NOTICE), true);
        if let Ok(req) =
            api::message::send_message_event::v3::Request::new(room.clone(), txn(&key, 0), &content)
        {
            if self
                .client
                .call(req, None, SEND_TIMEOUT, MAX_JSON)
                .await
                .is_ok()
            {
                let _ = host.set_state(&key, "sent").await;
            }
        }
    }

    fn is_encrypted(&self, room: &OwnedRoomId) -> bool {
        self.encrypted
            .lock()
            .expect("encrypted lock")
            .contains(room)
    }

    /// Learns display names from membership events.
    pub(crate) fn learn_names(&self, room: &OwnedRoomId, events: &[Raw<AnySyncStateEvent>]) {
        let mut names = self.names.lock().expect("names lock");
        for raw in events {
            if let Ok(AnySyncStateEvent::RoomMember(ruma::events::SyncStateEvent::Original(m))) =
                raw.deserialize()
            {
                if let Some(name) = m
                    .content
                    .displayname
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                {
                    names.insert((room.to_string(), m.state_key.to_string()), name);
                }
            }
        }
    }

    /// Asks the homeserver for a sender's display name in `room` when no
    /// membership event told it (an appservice sees no room state; a lazy
    /// sync may leave one out). Best effort: the localpart stands in.
    async fn learn_name(&self, room: &OwnedRoomId, user: &UserId) {
        let key = (room.to_string(), user.to_string());
        if self.names.lock().expect("names lock").contains_key(&key) {
            return;
        }
        let req = api::state::get_state_event_for_key::v3::Request::new(
            room.clone(),
            StateEventType::RoomMember,
            user.to_string(),
        );
        let name = match self
            .client
            .call(req, None, Duration::from_secs(10), 1 << 20)
            .await
        {
            Ok(res) => serde_json::from_str::<serde_json::Value>(res.event_or_content.get())
                .ok()
                .and_then(|v| v["displayname"].as_str().map(str::to_owned))
                .filter(|n| !n.trim().is_empty()),
            Err(e) => {
                tracing::debug!(account = %self.cfg.account, %room, %user, error = %e, "No display name.");
                None
            }
        };
        let name = name.unwrap_or_else(|| convert::localpart(user.as_str()).to_owned());
        self.names.lock().expect("names lock").insert(key, name);
    }

    /// Turns timeline events of a room into events to deliver, fetching
    /// their media. `Err` when a fetch could not complete (retry the whole
    /// batch later).
    pub(crate) async fn read_room(
        &self,
        host: &dyn Host,
        room: &OwnedRoomId,
        events: &[Raw<AnySyncTimelineEvent>],
        out: &mut Vec<NewEvent>,
    ) -> Result<(), MxError> {
        let Some(channel) = self.channel_of(room) else {
            return Ok(());
        };
        for raw in events {
            let ev = match raw.deserialize() {
                Ok(ev) => ev,
                Err(e) => {
                    let ty = raw
                        .get_field::<String>("type")
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    if ty == "m.room.encrypted" || ty == "m.room.encryption" {
                        self.mark_encrypted(host, room).await;
                    } else {
                        tracing::warn!(account = %self.cfg.account, %room, r#type = %ty, error = %e, "Skipping a malformed event.");
                    }
                    continue;
                }
            };
            if let AnySyncTimelineEvent::State(AnySyncStateEvent::RoomMember(_)) = &ev {
                self.learn_names(room, &[raw.clone().cast_unchecked()]);
            }
            if self.is_own(ev.sender().as_str()) {
                continue;
            }
            self.learn_name(room, ev.sender()).await;
            let read = convert::read_event(
                &self.cfg.account,
                &channel,
                &ev,
                &RoomNames(self, room.as_str()),
            );
            match read {
                Read::Encrypted => self.mark_encrypted(host, room).await,
                Read::Skip(why) => {
                    tracing::debug!(account = %self.cfg.account, %room, event = %ev.event_id(), why, "Not bridged.")
                }
                _ if self.is_encrypted(room) => {}
                Read::Redaction { mut event, redacts } => {
                    // A redacted reaction is a reaction taken back.
                    if let Ok(Some(v)) = host.state(&format!("reaction:{redacts}")).await {
                        if let Some((target, emoji)) = v.split_once('\t') {
                            if let Ok(t) = switchboard_core::RemoteId::new(target) {
                                event.kind = EventKind::Reaction {
                                    target: switchboard_core::TargetRef::Remote(t),
                                    emoji: emoji.to_owned(),
                                    removed: true,
                                };
                            }
                        }
                    }
                    out.push(*event);
                }
                Read::Deliver(mut event, media) => {
                    if let EventKind::Reaction {
                        target: switchboard_core::TargetRef::Remote(t),
                        emoji,
                        ..
                    } = &event.kind
                    {
                        let _ = host
                            .set_state(
                                &format!("reaction:{}", ev.event_id()),
                                &format!("{}\t{emoji}", t.as_str()),
                            )
                            .await;
                    }
                    self.fetch_media(host, &mut event, media).await?;
                    out.push(*event);
                }
            }
        }
        Ok(())
    }

    /// Downloads a message's media into the hub's blob store; one too
    /// large, or gone, becomes a line saying so.
    async fn fetch_media(
        &self,
        host: &dyn Host,
        event: &mut NewEvent,
        media: Vec<Media>,
    ) -> Result<(), MxError> {
        let mut got = Vec::new();
        let mut lines = Vec::new();
        for m in media {
            if m.size.is_some_and(|s| s > self.cfg.max_download) {
                lines.push(format!("[file {} is too large to bridge]", m.name));
                continue;
            }
            let fetched = if self.client.authenticated_media() {
                match api::authenticated_media::get_content::v1::Request::from_uri(&m.mxc) {
                    Ok(req) => self
                        .client
                        .call(req, None, SEND_TIMEOUT, self.cfg.max_download)
                        .await
                        .map(|r| (r.file, r.content_type)),
                    Err(e) => Err(MxError::Build(e.to_string())),
                }
            } else {
                #[allow(deprecated)]
                match api::media::get_content::v3::Request::from_url(&m.mxc) {
                    Ok(req) => self
                        .client
                        .call(req, None, SEND_TIMEOUT, self.cfg.max_download)
                        .await
                        .map(|r| (r.file, r.content_type)),
                    Err(e) => Err(MxError::Build(e.to_string())),
                }
            };
            let (bytes, served_mime) = match fetched {
                Ok(f) => f,
                Err(MxError::TooLarge(_)) => {
                    lines.push(format!("[file {} is too large to bridge]", m.name));
                    continue;
                }
                Err(e @ (MxError::Connect(_) | MxError::Timeout | MxError::Network(_))) => {
                    return Err(e)
                }
                Err(e) if e.send_error().retry_kind() != switchboard_core::RetryKind::Permanent => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::warn!(account = %self.cfg.account, mxc = %m.mxc, error = %e, "Cannot fetch a file.");
                    lines.push(format!("[file {} could not be fetched]", m.name));
                    continue;
                }
            };
            let mime = if m.mime == "application/octet-stream" {
                served_mime.unwrap_or(m.mime)
            } else {
                m.mime
            };
            let size = bytes.len() as u64;
            let content = loop {
                match host.put_blob(&mime, bytes.clone()).await {
                    Ok(b) => break b,
                    Err(DeliverError::Stopping) => return Err(MxError::Network("stopping".into())),
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            };
            got.push(Attachment {
                alt: None,
                kind: m.kind,
                name: m.name,
                mime,
                size,
                content,
            });
        }
        if let EventKind::Message {
            body, attachments, ..
        } = &mut event.kind
        {
            *attachments = got;
            for line in lines {
                if !body.text.is_empty() {
                    body.text.push('\n');
                }
                body.text.push_str(&line);
            }
        }
        Ok(())
    }

    /// Hands a batch to the hub until it is committed (or the hub stops).
    pub(crate) async fn deliver(
        host: &dyn Host,
        batch: Batch,
        shutdown: Option<&mut Shutdown>,
    ) -> bool {
        let mut shutdown = shutdown;
        loop {
            match host.deliver(batch.clone()).await {
                Ok(_) => return true,
                Err(DeliverError::Stopping) => return false,
                Err(DeliverError::Unavailable(error)) => {
                    tracing::warn!(%error, "The store cannot take the batch; trying again.");
                    match shutdown.as_deref_mut() {
                        Some(s) => {
                            if !nap(Duration::from_secs(1), s).await {
                                return false;
                            }
                        }
                        // An appservice transaction answers 503 instead.
                        None => return false,
                    }
                }
            }
        }
    }

    /// The bot mode's receive loop: `/sync`, the `since` token committed
    /// with the events it covers.
    async fn sync_loop(
        &self,
        host: &dyn Host,
        shutdown: &mut Shutdown,
        started_ms: u64,
    ) -> Result<(), RunError> {
        use api::filter::{FilterDefinition, RoomEventFilter};
        let account = &self.cfg.account;
        let mut filter = FilterDefinition::default();
        let rooms: Vec<OwnedRoomId> = self
            .rooms
            .lock()
            .expect("rooms lock")
            .keys()
            .cloned()
            .collect();
        filter.room.rooms = Some(rooms);
        let mut timeline = RoomEventFilter::default();
        timeline.types = Some(
            [
                "m.room.message",
                "m.reaction",
                "m.room.redaction",
                "m.room.member",
                "m.room.encrypted",
                "m.room.encryption",
            ]
            .map(String::from)
            .to_vec(),
        );
        timeline.limit = Some(ruma::UInt::from(100u32));
        filter.room.timeline = timeline;
        filter.room.state.lazy_load_options = api::filter::LazyLoadOptions::Enabled {
            include_redundant_members: false,
        };
        filter.presence.types = Some(Vec::new());
        filter.account_data.types = Some(Vec::new());
        filter.room.account_data.types = Some(Vec::new());
        filter.room.ephemeral.types = Some(Vec::new());
        let mut since = match host.cursor("since").await {
            Ok(s) => s,
            Err(_) => return Err(RunError("the store is unavailable".into())),
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut req = api::sync::sync_events::v3::Request::new();
            req.filter = Some(api::sync::sync_events::v3::Filter::FilterDefinition(
                filter.clone(),
            ));
            req.since.clone_from(&since);
            req.timeout = Some(if since.is_some() {
                self.cfg.sync_timeout
            } else {
                Duration::ZERO
            });
            let wait = self.cfg.sync_timeout + Duration::from_secs(30);
            let res = tokio::select! {
                r = self.client.call(req, None, wait, MAX_JSON) => r,
                () = &mut *shutdown => return Ok(()),
            };
            let res = match res {
                Ok(r) => r,
                Err(e)
                    if e.is_auth()
                        && matches!(
                            &self.cfg.mode,
                            Mode::Bot {
                                login: Login::Password(_),
                                ..
                            }
                        ) =>
                {
                    tracing::warn!(%account, error = %e, "The access token was refused; logging in again.");
                    if let Err(e) = self.sign_in(host, true).await {
                        host.health(ReceiveHealth::NeedsAction {
                            what: format!("Matrix refused the login: {e}"),
                        });
                        if !nap(Duration::from_secs(60), shutdown).await {
                            return Ok(());
                        }
                    }
                    continue;
                }
                Err(e) if e.is_auth() => {
                    host.health(ReceiveHealth::NeedsAction {
                        what: format!(
                            "Matrix refused the access token ({e}); give the account a new one"
                        ),
                    });
                    if !nap(Duration::from_secs(60), shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(%account, %error, "Sync failed; retrying.");
                    host.health(ReceiveHealth::Reconnecting { error });
                    let wait = match &e {
                        MxError::Api {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => backoff,
                    };
                    if !nap(wait, shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            host.health(ReceiveHealth::Connected);
            let first = since.is_none();
            let mut events = Vec::new();
            let mut failed = None;
            for (room, joined) in &res.rooms.join {
                if self.channel_of(room).is_none() {
                    continue;
                }
                if let api::sync::sync_events::v3::State::Before(state) = &joined.state {
                    self.learn_names(room, &state.events);
                    if state.events.iter().any(|e| {
                        e.get_field::<String>("type").ok().flatten().as_deref()
                            == Some("m.room.encryption")
                    }) {
                        self.mark_encrypted(host, room).await;
                    }
                }
                let mut timeline = joined.timeline.events.clone();
                if first {
                    // The first sync ever: history from before switchboard
                    // started is not bridged, what came since is.
                    timeline.retain(|e| {
                        e.get_field::<u64>("origin_server_ts")
                            .ok()
                            .flatten()
                            .is_some_and(|ts| ts >= started_ms)
                    });
                }
                if joined.timeline.limited && !first {
                    if let (Some(prev), Some(old)) = (&joined.timeline.prev_batch, &since) {
                        match self.backfill(room, prev, old).await {
                            Ok(mut earlier) => {
                                earlier.extend(timeline);
                                timeline = earlier;
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
                if let Err(e) = self.read_room(host, room, &timeline, &mut events).await {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                tracing::warn!(%account, error = %e, "Could not read a sync; reading it again.");
                if !nap(backoff, shutdown).await {
                    return Ok(());
                }
                continue;
            }
            for room in res.rooms.invite.keys() {
                if self.channel_of(room).is_some() {
                    if let Err(e) = self.join(room, None).await {
                        tracing::warn!(%account, %room, error = %e, "Cannot accept the invite.");
                    }
                }
            }
            for room in res.rooms.leave.keys() {
                if self.channel_of(room).is_some() {
                    tracing::error!(%account, %room, "The bridge was removed from a configured room; invite it back.");
                }
            }
            let batch = Batch {
                events,
                cursor: Some(Cursor {
                    name: "since".into(),
                    value: res.next_batch.clone(),
                }),
            };
            if !Self::deliver(host, batch, Some(shutdown)).await {
                return Ok(());
            }
            since = Some(res.next_batch);
        }
    }

    /// Events a limited sync skipped: `/messages` backwards from the
    /// timeline's start to the previous sync's token, oldest first.
    async fn backfill(
        &self,
        room: &OwnedRoomId,
        from: &str,
        to: &str,
    ) -> Result<Vec<Raw<AnySyncTimelineEvent>>, MxError> {
        let mut out = Vec::new();
        let mut from = from.to_owned();
        // Bounded: a gap longer than this is logged, not read forever.
        for _ in 0..50 {
            let mut req = api::message::get_message_events::v3::Request::backward(room.clone());
            req.from = Some(from.clone());
            req.to = Some(to.to_owned());
            req.limit = ruma::UInt::from(100u32);
            let res = self.client.call(req, None, SEND_TIMEOUT, MAX_JSON).await?;
            let done = res.chunk.is_empty() || res.end.is_none();
            out.extend(
                res.chunk
                    .into_iter()
                    .map(|e| e.cast_unchecked::<AnySyncTimelineEvent>()),
            );
            match res.end {
                Some(end) if !done => from = end,
                _ => {
                    out.reverse();
                    return Ok(out);
                }
            }
        }
        tracing::warn!(account = %self.cfg.account, %room, "A gap of more than 5,000 events was not read completely.");
        out.reverse();
        Ok(out)
    }

    async fn start(&self, host: &dyn Host, shutdown: &mut Shutdown) -> bool {
        let mut backoff = Duration::from_secs(1);
        loop {
            let step = async {
                self.client.discover().await?;
                self.sign_in(host, false).await?;
                if let Mode::Appservice(_) = &self.cfg.mode {
                    self.register(self.own.localpart()).await?;
                }
                self.join_rooms(host).await
            };
            let r = tokio::select! {
                r = step => r,
                () = &mut *shutdown => return false,
            };
            match r {
                Ok(()) => return true,
                Err(e) if e.is_auth() => {
                    let what = format!("Matrix refused the account's credentials: {e}");
                    tracing::error!(account = %self.cfg.account, %what);
                    host.health(ReceiveHealth::NeedsAction { what });
                    if let Mode::Bot {
                        login: Login::Password(_),
                        ..
                    } = &self.cfg.mode
                    {
                        let _ = self.sign_in(host, true).await;
                    }
                }
                Err(e) => {
                    let error = format!("cannot reach the homeserver: {e}");
                    tracing::warn!(account = %self.cfg.account, %error, "Retrying.");
                    host.health(ReceiveHealth::Reconnecting { error });
                }
            }
            if !nap(backoff, shutdown).await {
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Sends one content as `sender` (None: the account itself).
    pub(crate) async fn send_content<C>(
        &self,
        room: &OwnedRoomId,
        sender: Option<&UserId>,
        content: &C,
        txn_id: OwnedTransactionId,
    ) -> Result<OwnedEventId, MxError>
    where
        C: ruma::events::MessageLikeEventContent,
    {
        let req = api::message::send_message_event::v3::Request::new(room.clone(), txn_id, content)
            .map_err(|e| MxError::Build(e.to_string()))?;
        Ok(self
            .client
            .call(req, sender, SEND_TIMEOUT, MAX_JSON)
            .await?
            .event_id)
    }

    async fn redact(
        &self,
        room: &OwnedRoomId,
        sender: Option<&UserId>,
        id: &str,
        txn_id: OwnedTransactionId,
    ) -> Result<(), MxError> {
        let event_id = ruma::EventId::parse(id).map_err(|e| MxError::Build(e.to_string()))?;
        let req = api::redact::redact_event::v3::Request::new(room.clone(), event_id, txn_id);
        match self.client.call(req, sender, SEND_TIMEOUT, MAX_JSON).await {
            // A ghost may not redact another's event: the bot may.
            Err(MxError::Api { status: 403, .. }) if sender.is_some() => {
                let event_id =
                    ruma::EventId::parse(id).map_err(|e| MxError::Build(e.to_string()))?;
                let req =
                    api::redact::redact_event::v3::Request::new(room.clone(), event_id, txn(id, 0));
                self.client
                    .call(req, None, SEND_TIMEOUT, MAX_JSON)
                    .await
                    .map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    /// Uploads a blob (once: its content URI is remembered by hash).
    pub(crate) async fn upload(
        &self,
        host: &dyn Host,
        a: &switchboard_core::BlobRef,
        mime: &str,
        name: &str,
    ) -> Result<ruma::OwnedMxcUri, SendError> {
        let key = format!("mxc:{}", a.sha256);
        if let Ok(Some(uri)) = host.state(&key).await {
            return Ok(uri.into());
        }
        let bytes = host
            .blob(a)
            .await
            .map_err(|e| SendError::transient(e.to_string(), None))?
            .ok_or_else(|| SendError::permanent("the file is no longer in the blob store"))?;
        let mut req = api::media::create_content::v3::Request::new(bytes);
        req.content_type = Some(mime.to_owned());
        req.filename = Some(name.to_owned());
        let res = self
            .client
            .call(req, None, SEND_TIMEOUT * 5, MAX_JSON)
            .await
            .map_err(|e| e.send_error())?;
        let _ = host.set_state(&key, res.content_uri.as_str()).await;
        Ok(res.content_uri)
    }

    async fn send_op(&self, op: &Outbound, key: &str) -> Result<Receipt, SendError> {
        let host = self.host()?;
        let room = self
            .room_of(&op.channel)
            .await
            .map_err(|e| e.send_error())?;
        if self.is_encrypted(&room) {
            return Err(SendError::permanent(
                "the room is end-to-end encrypted, which switchboard does not bridge yet",
            ));
        }
        let err = |e: MxError| e.send_error();
        // Who posts: the bot itself, or the author's ghost.
        // An edit or a redaction comes from whoever sent the original
        // (Matrix shows an edit only from its sender).
        let ghost = match (&self.cfg.mode, &op.event.kind, &op.target) {
            (Mode::Appservice(_), EventKind::Notice { .. }, _) => None,
            (Mode::Appservice(_), EventKind::Edit { .. } | EventKind::Delete { .. }, Some(t)) => {
                Some(self.ghost_for(host.as_ref(), &t.event, &room).await?)
            }
            (Mode::Appservice(_), _, _) => {
                Some(self.ghost_for(host.as_ref(), &op.event, &room).await?)
            }
            _ => None,
        };
        let sender = ghost.as_deref();
        let template = op.nick_format.as_deref().unwrap_or(DEFAULT_NICK_FORMAT);
        let named = |body: &RichText| {
            if ghost.is_some() {
                body.clone()
            } else {
                switchboard_core::with_nick(template, op, body)
            }
        };
        let target = || -> Result<OwnedEventId, SendError> {
            let t = op
                .target
                .as_ref()
                .ok_or_else(|| SendError::permanent("the target was never bridged here"))?;
            ruma::EventId::parse(t.first().as_str())
                .map_err(|e| SendError::permanent(e.to_string()))
        };
        match &op.event.kind {
            EventKind::Message {
                body,
                attachments,
                reply_to,
            } => {
                let reply = match (reply_to, &op.target) {
                    (Some(_), Some(t)) => ruma::EventId::parse(t.first().as_str()).ok(),
                    _ => None,
                };
                // A thread of another network (a Telegram forum topic)
                // becomes a Matrix thread rooted at the first message of it
                // bridged here.
                let thread_key = op.event.origin.thread.as_ref().map(|t| {
                    format!(
                        "thread:{}:{}:{t}:{room}",
                        op.event.origin.account, op.event.origin.channel
                    )
                });
                let root = match &thread_key {
                    Some(k) => host
                        .state(k)
                        .await
                        .map_err(|e| SendError::transient(e.to_string(), None))?
                        .and_then(|id| ruma::EventId::parse(id).ok()),
                    None => None,
                };
                let mut ids = Vec::new();
                let text = named(body);
                if !body.text.is_empty() || attachments.is_empty() {
                    let mut content = convert::text_content(&text, false);
                    convert::set_reply(&mut content, reply.clone(), root.clone());
                    let id = self
                        .send_content(&room, sender, &content, txn(key, 0))
                        .await
                        .map_err(err)?;
                    ids.push(id);
                } else if ghost.is_none() {
                    // A file without a caption still says who sent it.
                    let content = convert::text_content(&named(&RichText::plain("")), false);
                    let id = self
                        .send_content(&room, sender, &content, txn(key, 0))
                        .await
                        .map_err(err)?;
                    ids.push(id);
                }
                for (i, a) in attachments.iter().enumerate() {
                    let mxc = self
                        .upload(host.as_ref(), &a.content, &a.mime, &a.name)
                        .await?;
                    let mut content = convert::media_content(a, mxc);
                    if ids.is_empty() {
                        convert::set_reply(&mut content, reply.clone(), root.clone());
                    } else if root.is_some() {
                        convert::set_reply(&mut content, None, root.clone());
                    }
                    let id = self
                        .send_content(&room, sender, &content, txn(key, i + 1))
                        .await
                        .map_err(err)?;
                    ids.push(id);
                }
                if let (Some(k), None, Some(first)) = (&thread_key, &root, ids.first()) {
                    // Not fatal: without it the next message starts a new thread.
                    let _ = host.set_state(k, first.as_str()).await;
                }
                let ids = ids
                    .into_iter()
                    .filter_map(|id| switchboard_core::RemoteId::new(id.to_string()).ok())
                    .collect();
                Ok(Receipt { ids })
            }
            EventKind::Edit { body, .. } => {
                let content = convert::edit_content(target()?, &named(body));
                self.send_content(&room, sender, &content, txn(key, 0))
                    .await
                    .map_err(err)?;
                Ok(Receipt::none())
            }
            EventKind::Delete { .. } => {
                let t = op
                    .target
                    .as_ref()
                    .ok_or_else(|| SendError::permanent("the target was never bridged here"))?;
                for (i, id) in t.ids.iter().enumerate() {
                    self.redact(&room, sender, id.as_str(), txn(key, i))
                        .await
                        .map_err(err)?;
                }
                Ok(Receipt::none())
            }
            EventKind::Reaction { emoji, removed, .. } => {
                let target = target()?;
                let who = sender.map_or_else(|| self.own.to_string(), ToString::to_string);
                let state_key = format!("sent_reaction:{room}:{target}:{who}:{emoji}");
                if *removed {
                    if let Ok(Some(id)) = host.state(&state_key).await {
                        self.redact(&room, sender, &id, txn(key, 0))
                            .await
                            .map_err(err)?;
                    }
                    return Ok(Receipt::none());
                }
                let content = convert::reaction_content(target, emoji);
                match self
                    .send_content(&room, sender, &content, txn(key, 0))
                    .await
                {
                    Ok(id) => {
                        let _ = host.set_state(&state_key, id.as_str()).await;
                        Ok(Receipt::one(
                            switchboard_core::RemoteId::new(id.to_string())
                                .map_err(|e| SendError::permanent(e.to_string()))?,
                        ))
                    }
                    // The bot already reacted so (two remote people, one bot).
                    Err(MxError::Api { errcode, .. }) if errcode == "M_DUPLICATE_ANNOTATION" => {
                        Ok(Receipt::none())
                    }
                    Err(e) => Err(err(e)),
                }
            }
            EventKind::Notice { body } => {
                let content = convert::text_content(body, true);
                let id = self
                    .send_content(&room, None, &content, txn(key, 0))
                    .await
                    .map_err(err)?;
                Ok(Receipt::one(
                    switchboard_core::RemoteId::new(id.to_string())
                        .map_err(|e| SendError::permanent(e.to_string()))?,
                ))
            }
            _ => Ok(Receipt::none()),
        }
    }
}

#[async_trait]
impl Adapter for MatrixAdapter {
    fn account(&self) -> &AccountId {
        &self.cfg.account
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sticker_formats: None,
            edits: true,
            edit_window: None,
            deletes: true,
            delete_window: None,
            reactions: Reactions::Any,
            replies: true,
            threads: true,
            formatting: true,
            text: TextLimit {
                max: TEXT_MAX,
                unit: TextUnit::Bytes,
            },
            caption: TextLimit {
                max: TEXT_MAX,
                unit: TextUnit::Bytes,
            },
            max_upload_bytes: 50 * 1024 * 1024,
            renders_time: false,
            pacing: Pacing::default(),
            min_upload_rate: 256 * 1024,
        }
    }

    fn ingress(&self) -> Option<(std::net::SocketAddr, Arc<dyn switchboard_core::Ingress>)> {
        match &self.cfg.mode {
            Mode::Bot { .. } => None,
            Mode::Appservice(a) => Some((
                a.listen,
                Arc::new(crate::appservice::Transactions {
                    adapter: self.this.clone(),
                    hs_token: a.hs_token.clone(),
                }),
            )),
        }
    }

    async fn run(
        self: Arc<Self>,
        host: Arc<dyn Host>,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        *self.host.lock().expect("host lock") = Some(host.clone());
        // A few seconds of slack for clocks that differ a little.
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .saturating_sub(5_000);
        let r = async {
            if !self.start(host.as_ref(), &mut shutdown).await {
                return Ok(());
            }
            match &self.cfg.mode {
                Mode::Bot { .. } => {
                    self.sync_loop(host.as_ref(), &mut shutdown, started_ms)
                        .await
                }
                Mode::Appservice(_) => {
                    // Events arrive through the ingress; this only waits.
                    host.health(ReceiveHealth::Connected);
                    shutdown.await;
                    Ok(())
                }
            }
        }
        .await;
        self.host.lock().expect("host lock").take();
        r
    }

    /// Sending needs the account signed in and the rooms joined, nothing
    /// from `/sync` or pushed transactions.
    fn sends_without_receiving(&self) -> bool {
        true
    }

    async fn serve_sends(
        self: Arc<Self>,
        host: Arc<dyn Host>,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        *self.host.lock().expect("host lock") = Some(host.clone());
        if self.start(host.as_ref(), &mut shutdown).await {
            host.health(ReceiveHealth::Connected);
            shutdown.await;
        }
        self.host.lock().expect("host lock").take();
        Ok(())
    }

    async fn send(&self, op: &Outbound, idempotency_key: &str) -> Result<Receipt, SendError> {
        self.send_op(op, idempotency_key).await
    }
}
