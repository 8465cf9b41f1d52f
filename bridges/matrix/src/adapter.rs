//! [`MatrixAdapter`]: one Matrix account, a relay bot or an application
//! service. Both modes share everything but how events arrive and who
//! sends: in bot mode the account itself, with the author's name in front
//! and the author's per-message profile; in appservice mode a ghost user
//! per remote author (see [`crate::appservice`]).
//!
//! # Layout
//! - here: the account's state, signing in (always as the same device),
//!   joining rooms, what the account can render, its health;
//! - [`crate::receive`]: the `/sync` loop (bot mode) and reading events
//!   and their files (both modes);
//! - [`crate::send`]: sends, paced by [`crate::pacer`] in bot mode.
//!
//! # Commands
//! With `links = true` on the account, it syncs every room it is in and
//! accepts every invite: a message starting with the command prefix is
//! delivered as a command (see [`crate::commands`]); of the rooms no
//! gateway reads, nothing else is.
//!
//! # Ready
//! Until the account has signed in and joined its rooms (and while it
//! signs in again after the homeserver refused its token), a send answers
//! [`SendError::not_ready`]: the outbox waits for the account instead of
//! counting a failure, and the `Connected` report that follows lets the
//! waiting sends go at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ruma::api::client as api;
use ruma::events::{AnySyncStateEvent, StateEventType};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedTransactionId, OwnedUserId, UserId};
use switchboard_core::{
    AccountId, Adapter, Capabilities, ChannelId, CommandForm, Host, Outbound, Pacing, Reactions,
    Receipt, ReceiveHealth, RichText, RunError, SendError, Shutdown, TextLimit, TextUnit,
};

use crate::client::{Client, MxError};
use crate::config::{Login, MatrixConfig, Mode};
use crate::convert::{self, Names};
use crate::pacer::Pacer;

/// Largest text sent in one event, in UTF-8 bytes: an edit carries its
/// text four times (body and HTML, twice) inside Matrix's 64 KiB event.
const TEXT_MAX: usize = 12_000;

/// How long a send waits for the homeserver.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest JSON answer read (a `/sync` of many rooms is large).
pub(crate) const MAX_JSON: u64 = 64 << 20;

/// The largest upload until the homeserver says (`/media/config`).
const DEFAULT_MAX_UPLOAD: u64 = 50 * 1024 * 1024;

/// The sticker formats Element shows as stickers; another (an animated
/// Telegram sticker) goes as its still image, or as a line saying so.
pub const STICKER_FORMATS: &[&str] = &["image/png", "image/webp", "image/gif", "image/jpeg"];

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
    /// Room id → the channel id the gateways use (an alias maps here).
    pub(crate) rooms: Mutex<HashMap<OwnedRoomId, ChannelId>>,
    /// Display names by (room, user), from membership events.
    names: Mutex<HashMap<(String, String), String>>,
    /// Rooms found encrypted: nothing is bridged there.
    encrypted: Mutex<BTreeSet<OwnedRoomId>>,
    pub(crate) this: Weak<Self>,
    /// Signed in and joined: sends go out. False while starting and while
    /// signing in again after a refused token.
    pub(crate) ready: AtomicBool,
    /// Why the account cannot get ready, when it tried and failed (the
    /// homeserver unreachable, the login refused): a send then fails as
    /// the account being down, which is an outage people are told about,
    /// not a start to wait for.
    pub(crate) unready: Mutex<Option<String>>,
    /// A send found the access token refused: the sync loop signs in again
    /// now instead of after its long poll.
    pub(crate) relogin: tokio::sync::Notify,
    /// The relay bot's model of the homeserver's rate limit (bot mode);
    /// std mutex, never held across await.
    pub(crate) pacer: Mutex<Pacer>,
    /// The largest upload the homeserver takes, from `/media/config`.
    max_upload: AtomicU64,
    /// Why files cannot be fetched from the homeserver, while they cannot:
    /// the account reports `degraded` with it.
    pub(crate) files_failing: Mutex<Option<String>>,
    /// How commands are written here, when the account takes them: then
    /// it receives from every room it is in (see [`crate::commands`]).
    pub(crate) commands: Option<CommandForm>,
}

pub(crate) struct RoomNames<'a>(pub(crate) &'a MatrixAdapter, pub(crate) &'a str);

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

pub(crate) use switchboard_core::kit::nap;

/// A transaction id from the outbox's idempotency key (part `i` of a send
/// that creates several events), so a retried send never duplicates.
pub(crate) fn txn(key: &str, i: usize) -> OwnedTransactionId {
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
    /// An adapter for `cfg`, serving `channels`; `commands`: it takes the
    /// hub's commands (`!sb link`) and so every room it is in.
    ///
    /// # Panics
    /// Never: the configuration was validated.
    #[must_use]
    pub fn new(
        cfg: MatrixConfig,
        channels: BTreeSet<ChannelId>,
        commands: Option<CommandForm>,
    ) -> Arc<Self> {
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
            rooms: Mutex::new(rooms),
            names: Mutex::new(HashMap::new()),
            encrypted: Mutex::new(BTreeSet::new()),
            this: this.clone(),
            ready: AtomicBool::new(false),
            unready: Mutex::new(None),
            relogin: tokio::sync::Notify::new(),
            pacer: Mutex::new(Pacer::new(Instant::now())),
            max_upload: AtomicU64::new(DEFAULT_MAX_UPLOAD),
            files_failing: Mutex::new(None),
            commands,
        })
    }

    /// The gateway channels of this account.
    pub(crate) fn channels(&self) -> impl Iterator<Item = &ChannelId> {
        self.channels.iter()
    }

    /// Whether this account is a relay bot (paced, named per message).
    pub(crate) fn is_bot(&self) -> bool {
        matches!(self.cfg.mode, Mode::Bot { .. })
    }

    /// Whether the account signs in with a password (and so can sign in
    /// again by itself when its token is refused).
    pub(crate) fn has_password(&self) -> bool {
        matches!(
            self.cfg.mode,
            Mode::Bot {
                login: Login::Password(_),
                ..
            }
        )
    }

    /// The account is ready (`Ok`) or not: `why` it failed to get ready,
    /// `None` while it is still trying for the first time.
    pub(crate) fn set_ready(&self, ready: Result<(), Option<String>>) {
        let (ready, why) = match ready {
            Ok(()) => (true, None),
            Err(why) => (false, why),
        };
        *self.unready.lock().expect("unready lock") = why;
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Reports the account connected, or degraded while files fail.
    pub(crate) fn report_up(&self, host: &dyn Host) {
        let failing = self.files_failing.lock().expect("files lock").clone();
        host.health(match failing {
            Some(reason) => ReceiveHealth::Degraded { reason },
            None => ReceiveHealth::Connected,
        });
    }

    /// Whether `user` is this bridge (its bot, or one of its ghosts).
    pub(crate) fn is_own(&self, user: &str) -> bool {
        match &self.cfg.mode {
            Mode::Bot { .. } => user == self.own.as_str(),
            Mode::Appservice(a) => a.owns(user),
        }
    }

    /// The channel id the gateways use for `room`, when configured; with
    /// commands, every room is a channel (by its id), so its admins can
    /// link it.
    pub(crate) fn channel_of(&self, room: &OwnedRoomId) -> Option<ChannelId> {
        let known = self.rooms.lock().expect("rooms lock").get(room).cloned();
        known.or_else(|| {
            self.commands
                .as_ref()
                .and_then(|_| ChannelId::new(room.as_str()).ok())
        })
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
    /// whose token is stored so restarts do not pile up devices. Every
    /// login names the device of the first one: the homeserver scopes
    /// transaction ids to a device, so a send retried across a login (after
    /// a refused token, a soft logout) is recognised instead of posted
    /// twice, and the account keeps one device.
    pub(crate) async fn sign_in(&self, host: &dyn Host, fresh: bool) -> Result<(), MxError> {
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
        let device = host.state("device_id").await.ok().flatten();
        req.device_id = device.as_deref().map(Into::into);
        req.initial_device_display_name = Some("switchboard".into());
        let res = self.client.call(req, None, SEND_TIMEOUT, MAX_JSON).await?;
        self.client.set_token(&res.access_token);
        // Not fatal: the next start logs in again (as the same device, once
        // it is stored).
        let _ = host.set_state("access_token", &res.access_token).await;
        let _ = host.set_state("device_id", res.device_id.as_str()).await;
        tracing::info!(
            account = %self.cfg.account, user = %res.user_id, device = %res.device_id,
            same_device = device.is_some(), "Logged in to Matrix."
        );
        Ok(())
    }

    /// Reads the largest upload the homeserver takes. Best effort: the
    /// default stands until it answers.
    async fn learn_upload_limit(&self) {
        let size = if self.client.authenticated_media() {
            let req = api::authenticated_media::get_media_config::v1::Request::new();
            self.client
                .call_small(req, None)
                .await
                .map(|r| r.upload_size)
        } else {
            #[allow(deprecated)]
            let req = api::media::get_media_config::v3::Request::new();
            self.client
                .call_small(req, None)
                .await
                .map(|r| r.upload_size)
        };
        match size {
            Ok(n) => {
                self.max_upload.store(u64::from(n), Ordering::Relaxed);
                tracing::debug!(account = %self.cfg.account, max_upload = u64::from(n), "The homeserver's upload limit.");
            }
            Err(e) => {
                tracing::debug!(account = %self.cfg.account, error = %e, "No upload limit from the homeserver; assuming 50 MiB.");
            }
        }
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
        if self
            .send_content(room, None, &content, txn(&key, 0), None)
            .await
            .is_ok()
        {
            let _ = host.set_state(&key, "sent").await;
        }
    }

    pub(crate) fn is_encrypted(&self, room: &OwnedRoomId) -> bool {
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
    pub(crate) async fn learn_name(&self, room: &OwnedRoomId, user: &UserId) {
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

    async fn start(&self, host: &dyn Host, shutdown: &mut Shutdown) -> bool {
        let mut backoff = switchboard_core::kit::Backoff::reconnect();
        // One fresh login per refused stored token before telling anyone.
        let mut fresh_tried = false;
        loop {
            let step = async {
                self.client.discover().await?;
                self.sign_in(host, false).await?;
                if let Mode::Appservice(_) = &self.cfg.mode {
                    self.register(self.own.localpart()).await?;
                }
                self.learn_upload_limit().await;
                self.join_rooms(host).await
            };
            let r = tokio::select! {
                r = step => r,
                () = &mut *shutdown => return false,
            };
            match r {
                Ok(()) => {
                    // Ready: sends that waited for the sign-in go now.
                    self.set_ready(Ok(()));
                    self.report_up(host);
                    return true;
                }
                Err(e) if e.is_auth() && self.has_password() && !fresh_tried => {
                    // The stored token expired or was revoked: a password
                    // account logs in again (as the same device) by itself.
                    fresh_tried = true;
                    tracing::warn!(account = %self.cfg.account, error = %e, "The stored access token was refused; logging in again.");
                    match self.sign_in(host, true).await {
                        Ok(()) => continue,
                        Err(e) => {
                            let what = format!("Matrix refused the login: {e}");
                            tracing::error!(account = %self.cfg.account, %what);
                            self.set_ready(Err(Some(what.clone())));
                            host.health(ReceiveHealth::NeedsAction { what });
                        }
                    }
                }
                Err(e) if e.is_auth() => {
                    let what = format!("Matrix refused the account's credentials: {e}");
                    tracing::error!(account = %self.cfg.account, %what);
                    self.set_ready(Err(Some(what.clone())));
                    host.health(ReceiveHealth::NeedsAction { what });
                    fresh_tried = false;
                }
                Err(e) => {
                    let error = format!("cannot reach the homeserver: {e}");
                    tracing::warn!(account = %self.cfg.account, %error, "Retrying.");
                    self.set_ready(Err(Some(error.clone())));
                    host.health(ReceiveHealth::Reconnecting { error });
                }
            }
            if !nap(backoff.fail(), shutdown).await {
                return false;
            }
        }
    }
}

#[async_trait]
impl Adapter for MatrixAdapter {
    fn account(&self) -> &AccountId {
        &self.cfg.account
    }

    fn capabilities(&self) -> Capabilities {
        // The relay bot is one user on its homeserver: its sends are spaced
        // so they do not outrun its rate limit. An application service is
        // exempt (its registration says `rate_limited: false`).
        let per_account = self.is_bot().then(|| {
            self.pacer
                .lock()
                .expect("pacer lock")
                .spacing(Instant::now())
        });
        Capabilities {
            sticker_formats: Some(STICKER_FORMATS),
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
            max_upload_bytes: self.max_upload.load(Ordering::Relaxed),
            renders_time: false,
            pacing: Pacing {
                per_channel: None,
                per_account,
            },
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
        // A few seconds of slack for clocks that differ a little.
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .saturating_sub(5_000);
        self.set_ready(Err(None));
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
                    shutdown.await;
                    Ok(())
                }
            }
        }
        .await;
        self.set_ready(Err(None));
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
        self.set_ready(Err(None));
        if self.start(host.as_ref(), &mut shutdown).await {
            shutdown.await;
        }
        self.set_ready(Err(None));
        Ok(())
    }

    async fn send(
        &self,
        host: &dyn Host,
        op: &Outbound,
        idempotency_key: &str,
    ) -> Result<Receipt, SendError> {
        if !self.ready.load(Ordering::SeqCst) {
            // Still getting ready: the send waits. Failed to: the account
            // is down.
            return Err(match self.unready.lock().expect("unready lock").clone() {
                None => SendError::not_ready("not signed in to the homeserver yet"),
                Some(why) => SendError::account_down(why, None),
            });
        }
        self.send_op(host, op, idempotency_key).await
    }
}
