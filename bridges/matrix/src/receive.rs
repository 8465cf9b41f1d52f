//! Receiving: the relay bot's `/sync` loop, and reading timeline events
//! (from a sync or an appservice transaction) into the events the hub
//! commits, with their files.
//!
//! # Files
//! A file is fetched before its message is delivered (the hub keeps its
//! bytes, so a queued message survives restarts). A fetch gets a time
//! budget that grows with the file's size ([`Budget`]) and a few tries;
//! when they run out, the message goes on with the "file not bridged" line
//! every adapter uses, the account reports `degraded` with the reason, and
//! nothing behind it waits. While files keep failing, each gets one try
//! only, so a homeserver whose media repository is down costs one budget
//! per file, not three. Only an unreachable homeserver (nothing answers at
//! all) holds the batch back, to be read again: then nothing else flows
//! either, and nothing is lost.
//!
//! # Who may do what
//! A redaction names only what it removes. Whether its sender is a
//! moderator of the room (a power level that allows `redact`) when it is
//! not the original's sender is asked of the homeserver, so the hub can
//! accept a moderator's delete and refuse anyone else's; a redacted
//! reaction is a reaction taken back by the redaction's sender.

use std::time::{Duration, Instant};

use ruma::api::client as api;
use ruma::events::{AnySyncStateEvent, AnySyncTimelineEvent};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, UserId};
use serde_json::Value;
use switchboard_core::kit;
use switchboard_core::{
    not_bridged, push_line, Attachment, Batch, Cursor, EventKind, Host, NewEvent, ReceiveHealth,
    RunError, Shutdown,
};

/// How long a downloaded file may wait for the hub's store before the
/// message goes on with a line saying it was not bridged.
const STORE_BUDGET: Duration = Duration::from_secs(600);

use crate::adapter::{nap, MatrixAdapter, RoomNames, MAX_JSON, SEND_TIMEOUT};
use crate::client::{Budget, MxError};
use crate::convert::{self, Media, Read};

/// Tries of one file while files work; one while they fail.
const DOWNLOAD_TRIES: u32 = 3;

/// The slowest download rate allowed for: a file's budget grows by one
/// second per 256 KiB.
const MIN_DOWNLOAD_RATE: u64 = 256 * 1024;

/// How long an appservice transaction may spend on its files: the
/// homeserver gives up on a push after 60 s (Synapse), then backs off and
/// queues everything after it.
pub(crate) const TRANSACTION_FILES_BUDGET: Duration = Duration::from_secs(40);

/// The event types the relay bot syncs.
const SYNC_TYPES: [&str; 7] = [
    "m.room.message",
    "m.sticker",
    "m.reaction",
    "m.room.redaction",
    "m.room.member",
    "m.room.encrypted",
    "m.room.encryption",
];

/// Why one file was not fetched.
enum Missed {
    /// Larger than `max_download`.
    TooLarge,
    /// The homeserver could not give it in time: what went wrong, for the
    /// log and the account's health (people read only that it could not
    /// be fetched).
    Failed(String),
}

impl MatrixAdapter {
    /// Turns timeline events of a room into events to deliver, fetching
    /// their files. `Err` only when the homeserver cannot be reached at all
    /// (read the whole batch again later). `files_by`: when the files of
    /// this batch must be fetched by (an appservice transaction).
    pub(crate) async fn read_room(
        &self,
        host: &dyn Host,
        room: &OwnedRoomId,
        events: &[Raw<AnySyncTimelineEvent>],
        out: &mut Vec<NewEvent>,
        files_by: Option<Instant>,
    ) -> Result<(), MxError> {
        let Some(channel) = self.channel_of(room) else {
            return Ok(());
        };
        // A room only commands come from (no gateway reads it, yet).
        let reads = host.reads(&channel);
        for raw in events {
            let ev = match raw.deserialize() {
                Ok(ev) => ev,
                Err(_) if !reads => continue,
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
                Read::Deliver(mut event, _) if self.command_in(&event).is_some() => {
                    let command = self.command_in(&event).expect("a command");
                    self.make_command(room, &mut event, command).await?;
                    out.push(*event);
                }
                _ if !reads => {}
                Read::Encrypted => self.mark_encrypted(host, room).await,
                Read::Skip(why) => {
                    tracing::debug!(account = %self.cfg.account, %room, event = %ev.event_id(), why, "Not bridged.");
                }
                _ if self.is_encrypted(room) => {}
                Read::Redaction { mut event, redacts } => {
                    // A redacted reaction is a reaction taken back, by the
                    // redaction's sender (the hub compares it with who
                    // added it).
                    let reaction = host.state(&format!("reaction:{redacts}")).await;
                    if let Ok(Some(v)) = reaction {
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
                    if let EventKind::Delete { by_moderator, .. } = &mut event.kind {
                        *by_moderator = self.by_moderator(room, &redacts, ev.sender()).await?;
                    }
                    out.push(*event);
                }
                Read::Deliver(mut event, media) => {
                    // Another relay bot's message names its author.
                    if let Ok(Some(content)) = raw.get_field::<Value>("content") {
                        convert::apply_profile(&mut event, &content);
                    }
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
                    self.fetch_media(host, &mut event, media, files_by).await?;
                    out.push(*event);
                }
            }
        }
        Ok(())
    }

    /// Whether `redactor`, who redacted `redacts`, did it as a moderator:
    /// not the original's sender, and allowed to redact others' events by
    /// the room's power levels. `Err` only when the homeserver cannot be
    /// reached (the batch is read again).
    async fn by_moderator(
        &self,
        room: &OwnedRoomId,
        redacts: &OwnedEventId,
        redactor: &UserId,
    ) -> Result<bool, MxError> {
        let req = api::room::get_room_event::v3::Request::new(room.clone(), redacts.clone());
        let original = match self.client.call_small(req, None).await {
            Ok(res) => res.event.get_field::<String>("sender").ok().flatten(),
            Err(e @ (MxError::Connect(_) | MxError::Timeout | MxError::Network(_))) => {
                return Err(e)
            }
            Err(e) => {
                tracing::debug!(account = %self.cfg.account, %room, event = %redacts, error = %e, "Cannot read the redacted event.");
                None
            }
        };
        if original.as_deref() == Some(redactor.as_str()) {
            return Ok(false);
        }
        let req = api::state::get_state_events::v3::Request::new(room.clone());
        let state: Vec<Value> = match self.client.call(req, None, SEND_TIMEOUT, MAX_JSON).await {
            Ok(res) => res
                .room_state
                .iter()
                .filter_map(|e| e.deserialize_as::<Value>().ok())
                .collect(),
            Err(e @ (MxError::Connect(_) | MxError::Timeout | MxError::Network(_))) => {
                return Err(e)
            }
            Err(e) => {
                tracing::warn!(account = %self.cfg.account, %room, error = %e, "Cannot read the room's power levels; the redaction counts as not a moderator's.");
                return Ok(false);
            }
        };
        let allowed = may_redact_others(&state, redactor.as_str());
        tracing::debug!(account = %self.cfg.account, %room, %redactor, allowed, "A redaction of someone else's message.");
        Ok(allowed)
    }

    /// Downloads a message's files into the hub's blob store; one too
    /// large, or that cannot be fetched within its tries, becomes a line
    /// saying so.
    async fn fetch_media(
        &self,
        host: &dyn Host,
        event: &mut NewEvent,
        media: Vec<Media>,
        files_by: Option<Instant>,
    ) -> Result<(), MxError> {
        let mut got = Vec::new();
        let mut lines = Vec::new();
        for m in media {
            let (bytes, served_mime) = match self.fetch_one(&m, files_by).await? {
                Ok(f) => f,
                Err(Missed::TooLarge) => {
                    let why = format!(
                        "larger than this bridge fetches ({})",
                        switchboard_core::human_size(self.cfg.max_download)
                    );
                    lines.push(not_bridged(&m.name, m.size, &why));
                    continue;
                }
                Err(Missed::Failed(error)) => {
                    let why = "could not be fetched from the homeserver";
                    lines.push(not_bridged(&m.name, m.size, why));
                    self.files_fail(host, &error);
                    continue;
                }
            };
            self.files_work(host);
            let mime = if m.mime == "application/octet-stream" {
                served_mime.unwrap_or(m.mime)
            } else {
                m.mime
            };
            let size = bytes.len() as u64;
            // The store's own outage is bounded too: after its budget the
            // message goes on with the shared line instead of the file.
            let mut never: Shutdown = Box::pin(std::future::pending());
            let content = match kit::store_file(
                host,
                &m.name,
                &mime,
                bytes,
                STORE_BUDGET,
                &mut never,
            )
            .await
            {
                kit::Stored::Blob(b) => b,
                kit::Stored::NotBridged(line) => {
                    lines.push(line);
                    continue;
                }
                kit::Stored::Stopped => return Err(MxError::Network("stopping".into())),
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
                push_line(body, &line);
            }
        }
        Ok(())
    }

    /// One file, within its tries: its bytes and the served content type,
    /// or why it is missed. `Err` when the homeserver cannot be reached.
    async fn fetch_one(
        &self,
        m: &Media,
        files_by: Option<Instant>,
    ) -> Result<Result<(Vec<u8>, Option<String>), Missed>, MxError> {
        if m.size.is_some_and(|s| s > self.cfg.max_download) {
            return Ok(Err(Missed::TooLarge));
        }
        let failing = self.files_failing.lock().expect("files lock").is_some();
        let tries = if failing { 1 } else { DOWNLOAD_TRIES };
        let mut budget = Budget {
            first_byte: self.cfg.download_timeout,
            min_rate: MIN_DOWNLOAD_RATE,
            by: files_by,
        };
        let mut last = String::new();
        for attempt in 0..tries {
            if let Some(by) = files_by {
                let left = by.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Err(Missed::Failed(format!(
                        "no time left in the homeserver's transaction{}",
                        if last.is_empty() {
                            String::new()
                        } else {
                            format!(" (last: {last})")
                        }
                    ))));
                }
                budget.first_byte = budget.first_byte.min(left);
            }
            match self.download(m, budget).await {
                Ok(f) => return Ok(Ok(f)),
                Err(MxError::TooLarge(_)) => return Ok(Err(Missed::TooLarge)),
                // Nothing answers: the homeserver is down, not this file.
                Err(e @ MxError::Connect(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        account = %self.cfg.account, mxc = %m.mxc, attempt = attempt + 1, tries,
                        error = %e, "Cannot fetch a file."
                    );
                    last = e.to_string();
                    // Gone or refused: another try cannot help.
                    let lasting =
                        e.send_error().retry_kind() == switchboard_core::RetryKind::Permanent;
                    if lasting {
                        break;
                    }
                    if attempt + 1 < tries {
                        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                    }
                }
            }
        }
        Ok(Err(Missed::Failed(last)))
    }

    /// One try at one file.
    async fn download(
        &self,
        m: &Media,
        budget: Budget,
    ) -> Result<(Vec<u8>, Option<String>), MxError> {
        let max = self.cfg.max_download;
        if self.client.authenticated_media() {
            let req = api::authenticated_media::get_content::v1::Request::from_uri(&m.mxc)
                .map_err(|e| MxError::Build(e.to_string()))?;
            let r = self.client.download(req, budget, max).await?;
            Ok((r.file, r.content_type))
        } else {
            #[allow(deprecated)]
            let req = api::media::get_content::v3::Request::from_url(&m.mxc)
                .map_err(|e| MxError::Build(e.to_string()))?;
            let r = self.client.download(req, budget, max).await?;
            Ok((r.file, r.content_type))
        }
    }

    /// A file could not be fetched: the account is degraded until one can.
    fn files_fail(&self, host: &dyn Host, error: &str) {
        let reason = format!(
            "files cannot be fetched from the homeserver (last: {error}); their messages go on without them"
        );
        let first = self
            .files_failing
            .lock()
            .expect("files lock")
            .replace(reason.clone())
            .is_none();
        if first {
            tracing::warn!(account = %self.cfg.account, %reason, "Files fail; the account is degraded.");
        }
        host.health(ReceiveHealth::Degraded { reason });
    }

    /// A file was fetched: if files failed, they work again.
    fn files_work(&self, host: &dyn Host) {
        if self
            .files_failing
            .lock()
            .expect("files lock")
            .take()
            .is_some()
        {
            tracing::info!(account = %self.cfg.account, "Files can be fetched again.");
            self.report_up(host);
        }
    }

    /// Hands a batch to the hub until it is committed (or the hub stops).
    pub(crate) async fn deliver(
        host: &dyn Host,
        batch: Batch,
        shutdown: Option<&mut Shutdown>,
    ) -> bool {
        match shutdown {
            Some(s) => kit::deliver(host, batch, s).await.is_some(),
            // An appservice transaction answers 503 instead of waiting.
            None => host.deliver(batch).await.is_ok(),
        }
    }

    /// Signs in again after the homeserver refused the token (a revoked
    /// session, a soft logout): sends wait meanwhile, and the account
    /// reports connected again as soon as it is signed in, so what waited
    /// goes at once. False when the hub stops.
    async fn sign_in_again(&self, host: &dyn Host, shutdown: &mut Shutdown, error: &str) -> bool {
        self.set_ready(Err(None));
        tracing::warn!(account = %self.cfg.account, %error, "The access token was refused; logging in again.");
        host.health(ReceiveHealth::Reconnecting {
            error: format!("the homeserver refused the access token ({error}); logging in again"),
        });
        let mut backoff = kit::Backoff::reconnect();
        loop {
            let wait = match self.sign_in(host, true).await {
                Ok(()) => {
                    self.set_ready(Ok(()));
                    self.report_up(host);
                    return true;
                }
                Err(e) if e.is_auth() => {
                    let what = format!("Matrix refused the login: {e}");
                    self.set_ready(Err(Some(what.clone())));
                    host.health(ReceiveHealth::NeedsAction { what });
                    Duration::from_secs(60)
                }
                // Not refused: the homeserver is away, or limits logins.
                Err(e) => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "Cannot log in yet; retrying.");
                    let error = format!("cannot log in again yet: {e}");
                    self.set_ready(Err(Some(error.clone())));
                    host.health(ReceiveHealth::Reconnecting { error });
                    match &e {
                        MxError::Api {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => backoff.fail(),
                    }
                }
            };
            if !nap(wait, shutdown).await {
                return false;
            }
        }
    }

    /// The bot mode's receive loop: `/sync`, the `since` token committed
    /// with the events it covers.
    pub(crate) async fn sync_loop(
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
        // With commands, every room: its admins may link it.
        if self.commands.is_none() {
            filter.room.rooms = Some(rooms);
        }
        let mut timeline = RoomEventFilter::default();
        timeline.types = Some(SYNC_TYPES.map(String::from).to_vec());
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
        let mut backoff = kit::Backoff::reconnect();
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
                // A send found the token refused: sign in again now.
                () = self.relogin.notified() => {
                    if !self.ready.load(std::sync::atomic::Ordering::SeqCst)
                        && !self.sign_in_again(host, shutdown, "a send was refused").await
                    {
                        return Ok(());
                    }
                    continue;
                }
                () = &mut *shutdown => return Ok(()),
            };
            let res = match res {
                Ok(r) => r,
                Err(e) if e.is_auth() && self.has_password() => {
                    if !self.sign_in_again(host, shutdown, &e.to_string()).await {
                        return Ok(());
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
                        _ => backoff.fail(),
                    };
                    if !nap(wait, shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            backoff.reset();
            self.report_up(host);
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
                if let Err(e) = self
                    .read_room(host, room, &timeline, &mut events, None)
                    .await
                {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                tracing::warn!(%account, error = %e, "Could not read a sync; reading it again.");
                if !nap(backoff.fail(), shutdown).await {
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
                let configured = self.rooms.lock().expect("rooms lock").contains_key(room);
                if configured {
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
}

/// A power level as rooms store it: a number, or (in old rooms) a string.
fn level(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Whether the room's state (full events) lets `user` redact others'
/// events: their power level reaches `redact` (default 50), or, from room
/// version 12, they created the room (creators outrank every level).
#[must_use]
pub fn may_redact_others(state: &[Value], user: &str) -> bool {
    let of = |ty: &str| {
        state
            .iter()
            .find(|e| e["type"] == ty && e["state_key"] == "")
    };
    if let Some(create) = of("m.room.create") {
        let version = create["content"]["room_version"].as_str().unwrap_or("1");
        let creators_rule = version.parse::<u32>().is_ok_and(|v| v >= 12)
            || version.starts_with("org.matrix.hydra");
        let additional = create["content"]["additional_creators"]
            .as_array()
            .is_some_and(|a| a.iter().any(|u| u == user));
        if creators_rule && (create["sender"] == user || additional) {
            return true;
        }
    }
    let Some(levels) = of("m.room.power_levels").map(|e| &e["content"]) else {
        // No power levels: only the creator may act (the default rules).
        return of("m.room.create").is_some_and(|c| c["sender"] == user);
    };
    let users_default = level(&levels["users_default"]).unwrap_or(0);
    let mine = level(&levels["users"][user]).unwrap_or(users_default);
    let redact = level(&levels["redact"]).unwrap_or(50);
    mine >= redact
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn who_may_redact_others_is_read_from_the_power_levels() {
        let state = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": "@owner:x", "content": {"room_version": "10"}}),
            json!({"type": "m.room.power_levels", "state_key": "", "sender": "@owner:x",
                "content": {"users": {"@owner:x": 100, "@mod:x": 50, "@old:x": "60"}, "users_default": 0, "redact": 50}}),
        ];
        assert!(may_redact_others(&state, "@owner:x"));
        assert!(may_redact_others(&state, "@mod:x"));
        assert!(may_redact_others(&state, "@old:x"));
        assert!(!may_redact_others(&state, "@someone:x"));
        // Room version 12: the creator outranks levels it is not listed in.
        let v12 = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": "@owner:x", "content": {"room_version": "12", "additional_creators": ["@co:x"]}}),
            json!({"type": "m.room.power_levels", "state_key": "", "content": {"users": {}, "redact": 50}}),
        ];
        assert!(may_redact_others(&v12, "@owner:x"));
        assert!(may_redact_others(&v12, "@co:x"));
        assert!(!may_redact_others(&v12, "@someone:x"));
    }
}
