//! [`SignalAdapter`]: receives `receive` notifications on a manual
//! subscription and sends with `send`, `sendReaction` and `remoteDelete`.
//!
//! # Connecting
//! Every call names the account (`account`), so a daemon serving several
//! accounts (started without `-a`, as signal-cli's docs run it) acts on the
//! right one. At connect the adapter asks the daemon which accounts it
//! serves (`listAccounts`; a daemon started with `-a` does not know the
//! method and serves just its one); when ours is not among them the account
//! shows `needs_action` with the fix (register or link it, or start the
//! daemon with it), sends wait, and the adapter asks again with growing
//! backoff. Notifications for other accounts are dropped. A lost connection
//! shows as reconnecting at once, and reconnecting reports the account
//! connected again (which lets the outbox's breaker probe at once); retries
//! back off from 1 s to a minute, and a failure that repeats is logged once.
//!
//! # The account's own ACI
//! Signal users quote and react to the bridged copies by the account's ACI,
//! so sent messages are recorded under it. It is learned from the daemon's
//! own store (`listContacts` of the account itself, a local read), else
//! the directory (`getUserStatus`, rate-limited), and kept in the account's
//! state, so a restart knows it even when both fail. Until it is known,
//! sends wait (`not_ready`) and the account shows degraded.
//!
//! # Receiving, and the window that remains
//! The daemon runs with `--receive-mode=manual`: it takes messages off
//! Signal's server only while this adapter is subscribed, so nothing is
//! taken while switchboard is away. signal-cli has no client
//! acknowledgement: once it has handed a message over, it has already
//! acknowledged it to Signal. A crash between that hand-over and the hub's
//! commit (milliseconds; the notifications of one read are committed as one
//! batch) loses those messages. The docs say so. While the store is
//! unavailable the adapter unsubscribes, so what arrives meanwhile stays on
//! Signal's server; what was handed over already waits in this process and
//! is committed first when the store is back.
//!
//! # Commands
//! With `links = true` on the account, a message that starts with its
//! command prefix (`!sb link`) is delivered as a command, with whether its
//! sender is one of the group's admins (`commands`).
//!
//! # Sending
//! One request per attempt, classified by [`crate::errors`]. Files go by
//! path through the spool directory where the daemon can read it (see
//! [`crate::config`]), else as data URIs, which signal-cli reads only up to
//! 20,000,000 characters: the capabilities advertise what the transport can
//! carry, so a larger file becomes a line saying it was not bridged. A
//! send with files may take as long as its upload at the outbox's slowest
//! expected rate before it counts as failed (and is retried, which would
//! post the file twice).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Value};
use switchboard_core::kit::{self, nap, Backoff};
use switchboard_core::{
    not_bridged, push_line, AccountId, Adapter, Attachment, Batch, Capabilities, CommandForm,
    DeliverError, Delivered, EventKind, Host, Outbound, Pacing, Reactions, Receipt, ReceiveHealth,
    RemoteId, RunError, SendError, Shutdown, TextLimit, TextUnit, DEFAULT_NICK_FORMAT,
};

mod commands;

use crate::client::{Conn, Notes, RpcError, MAX_STRING_CHARS};
use crate::config::{Daemon, SignalConfig};
use crate::convert::{self, message_id};
use crate::errors::{self, classify, code};

/// How long a received file may wait for the hub's store before the
/// message goes on with a line saying the file was not bridged.
const STORE_BUDGET: Duration = Duration::from_secs(600);

/// How long a stopping receive side keeps committing what signal-cli
/// handed over before the subscription stopped (the hub cuts a receive
/// side after `receivers::STOP_WITHIN`, 10 s), and how long it waits for
/// more of it once the subscription has stopped (or cannot be: HTTP).
const HAND_OVER: Duration = Duration::from_secs(8);
const HAND_OVER_IDLE: Duration = Duration::from_millis(250);

/// The `unsubscribeReceive` a stopping receive side sends, in flight.
type Unsubscribing<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>> + Send + 'a>>;

/// base64 longer than this is decoded (and files this large encoded) on a
/// blocking thread, not on an async worker.
const OFF_WORKER_CHARS: usize = 256 * 1024;

/// Signal accepts edits and deletes for everyone within 24 hours.
const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Signal's largest attachment.
pub const SIGNAL_MAX_FILE: u64 = 100 * 1024 * 1024;

/// Room for a data URI's `data:<type>;filename=<name>;base64,` before the
/// base64 (a longer prefix is shortened: the name goes).
const DATA_URI_PREFIX_ROOM: usize = 1024;

/// The largest file a data URI carries: signal-cli reads at most
/// 20,000,000 characters of base64 (and the prefix), about 14.3 MiB.
pub const DATA_URI_MAX_FILE: u64 = ((MAX_STRING_CHARS - DATA_URI_PREFIX_ROOM) / 4 * 3) as u64;

/// The formats Signal shows as pictures when another network's sticker
/// arrives: signal-cli sends stickers only from packs installed on the
/// account, so a bridged sticker goes as an image attachment. WebP, PNG,
/// JPEG and GIF display inline in every Signal app; Telegram's animated
/// `application/x-tgsticker` (gzipped Lottie) and `video/webm` stickers do
/// not, so they go as their still image (or a line).
const STICKER_FORMATS: &[&str] = &["image/webp", "image/png", "image/jpeg", "image/gif"];

/// Reconnect delays: from 1 s, doubling, to a minute (a daemon that is
/// restarting takes a while; a minute keeps a long outage quiet).
fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
}

/// When a connection asks signal-cli for the ACI again while it is not
/// known (see [`SignalAdapter::retry_aci`]).
struct AciRetry {
    backoff: Backoff,
    at: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl AciRetry {
    fn new() -> Self {
        let mut backoff = reconnect_backoff();
        let at = Box::pin(tokio::time::sleep(backoff.fail()));
        Self { backoff, at }
    }
}

/// Where the connection stands, for sends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// Not connected yet since `run` started.
    Starting,
    /// Connected, subscribed, the account served and its ACI known.
    Up,
    /// Connected, but the account's ACI is not known yet.
    NoAci,
    /// The daemon cannot be reached (the reason).
    Down(String),
    /// The daemon does not serve the account (what to do).
    Missing(String),
}

/// One signal-cli account.
pub struct SignalAdapter {
    cfg: SignalConfig,
    /// The connection in force; `None` while reconnecting.
    conn: Mutex<Option<Arc<Conn>>>,
    /// Where the connection stands (what a send without one answers).
    link: Mutex<Link>,
    /// The account's own ids: its number, then its ACI once known. Its
    /// messages, and what it sent from other devices, are never bridged
    /// back; its sent messages are recorded under the ACI.
    own: Mutex<Vec<String>>,
    /// Contacts' profile or contact names by number and ACI, and the
    /// account's own; read at connect and when someone unnamed appears.
    names: Mutex<HashMap<String, String>>,
    /// When the contacts were last read: at most once a minute.
    names_read: Mutex<Option<Instant>>,
    /// The disappearing-message timer last announced per channel.
    timers: Mutex<HashMap<String, u64>>,
    /// Set while Signal asks for a captcha: the next success clears it.
    captcha: AtomicBool,
    /// The daemon reads the spool directory (until a spooled file fails).
    spool_ok: AtomicBool,
    /// Another account's message was seen (warned once).
    foreign_seen: AtomicBool,
    /// How commands are written here, when the account takes them.
    commands: Option<CommandForm>,
}

impl SignalAdapter {
    /// An adapter for `cfg`; `commands`: it takes the hub's commands
    /// (`!sb link`).
    #[must_use]
    pub fn new(cfg: SignalConfig, commands: Option<CommandForm>) -> Arc<Self> {
        let own = vec![cfg.number.clone()];
        let spool_ok = cfg.spool.is_some();
        Arc::new(Self {
            cfg,
            conn: Mutex::new(None),
            link: Mutex::new(Link::Starting),
            own: Mutex::new(own),
            names: Mutex::new(HashMap::new()),
            names_read: Mutex::new(None),
            timers: Mutex::new(HashMap::new()),
            captcha: AtomicBool::new(false),
            spool_ok: AtomicBool::new(spool_ok),
            foreign_seen: AtomicBool::new(false),
            commands,
        })
    }

    /// The connection to send on, or what the outbox should do without one.
    fn conn(&self) -> Result<Arc<Conn>, SendError> {
        let link = self.link.lock().expect("link lock").clone();
        let conn = self
            .conn
            .lock()
            .expect("conn lock")
            .clone()
            .filter(|c| c.is_open());
        match (link, conn) {
            (Link::Up, Some(c)) => Ok(c),
            (Link::Starting, _) => Err(SendError::not_ready("connecting to signal-cli")),
            (Link::NoAci, _) => Err(SendError::not_ready(
                "learning the Signal account's ACI from signal-cli",
            )),
            (Link::Missing(what), _) => Err(SendError::account_down(what, None)),
            (Link::Down(why), _) => Err(SendError::account_down(why, None)),
            (Link::Up, None) => Err(SendError::account_down(
                "the connection to signal-cli closed",
                None,
            )),
        }
    }

    fn set_link(&self, link: Link) {
        *self.link.lock().expect("link lock") = link;
    }

    /// The id this account's messages have: its ACI (sends wait until it is
    /// known).
    fn own_id(&self) -> String {
        let own = self.own.lock().expect("own lock");
        own.last().cloned().unwrap_or_default()
    }

    fn aci_known(&self) -> bool {
        self.own.lock().expect("own lock").len() > 1
    }

    fn set_aci(&self, aci: &str) {
        let mut own = self.own.lock().expect("own lock");
        own.truncate(1);
        own.push(aci.to_owned());
    }

    /// Sends go over `conn` from now on: the link is up when the
    /// account's ACI is known (then the account is reported connected),
    /// else sends wait for it. Whether it is known.
    fn use_connection(&self, conn: &Arc<Conn>, host: &dyn Host) -> bool {
        self.spool_ok
            .store(self.cfg.spool.is_some(), Ordering::Relaxed);
        *self.conn.lock().expect("conn lock") = Some(conn.clone());
        if self.aci_known() {
            self.set_link(Link::Up);
            host.health(ReceiveHealth::Connected);
            true
        } else {
            self.set_link(Link::NoAci);
            false
        }
    }

    fn spool_usable(&self) -> bool {
        self.cfg.spool.is_some() && self.spool_ok.load(Ordering::Relaxed)
    }
}

/// Whether signal-cli hands this connection messages. signal-cli
/// acknowledges what it hands over, so while the store cannot take them
/// the adapter stops the subscription and they stay on Signal's server.
struct Intake {
    /// The subscription's id over a socket or TCP; `None` over HTTP, where
    /// the event stream is the subscription and cannot be stopped.
    subscription: Option<Value>,
    /// Unsubscribed: nothing more comes on this connection.
    held: bool,
}

impl Intake {
    /// The parameters of `unsubscribeReceive` for a subscription still
    /// running; `None` over HTTP or once held.
    fn unsubscribe_params(&self) -> Option<Value> {
        let id = self.subscription.as_ref().filter(|_| !self.held)?;
        Some(json!({"subscription": id}))
    }

    /// Stops taking messages off Signal (once; a no-op over HTTP).
    async fn hold(&mut self, conn: &Conn, timeout: Duration, account: &AccountId) {
        let Some(params) = self.unsubscribe_params() else {
            return;
        };
        self.held = conn
            .call("unsubscribeReceive", params, timeout)
            .await
            .is_ok();
        if self.held {
            tracing::warn!(%account, "No more messages taken off Signal until the store takes them.");
        }
    }

    /// Takes messages off Signal again, after [`Intake::hold`].
    async fn release(&mut self, conn: &Conn, timeout: Duration, account: &AccountId) {
        match conn.call("subscribeReceive", json!({}), timeout).await {
            Ok(id) => {
                self.subscription = Some(id).filter(|id| !id.is_null());
                self.held = false;
                tracing::info!(%account, "Taking messages off Signal again.");
            }
            Err(e) => {
                tracing::warn!(%account, error = %e, "Cannot subscribe again; reconnecting once what was received is committed.");
            }
        }
    }
}

/// Logs a failure that repeats once: at warn when it is new, at debug
/// while it stays the same.
#[derive(Default)]
struct Quiet {
    last: Option<String>,
}

impl Quiet {
    fn warn(&mut self, account: &AccountId, error: &str, what: &str) {
        if self.last.as_deref() == Some(error) {
            tracing::debug!(%account, %error, "{what}");
        } else {
            tracing::warn!(%account, %error, "{what}");
            self.last = Some(error.to_owned());
        }
    }
}

/// Why a connection attempt did not get as far as receiving.
enum Setback {
    /// The daemon is unreachable or failed (reconnecting).
    Down(String),
    /// The daemon does not serve the account (needs an admin).
    Missing(String),
}

#[async_trait]
impl Adapter for SignalAdapter {
    fn account(&self) -> &AccountId {
        &self.cfg.account
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sticker_formats: Some(STICKER_FORMATS),
            edits: true,
            edit_window: Some(WINDOW),
            deletes: true,
            delete_window: Some(WINDOW),
            reactions: Reactions::Any,
            replies: true,
            threads: false,
            formatting: true,
            // Signal's own limit is about 2,000 characters per message body.
            text: TextLimit {
                max: 2000,
                unit: TextUnit::Utf16,
            },
            caption: TextLimit {
                max: 2000,
                unit: TextUnit::Utf16,
            },
            // What the transport carries: by path, Signal's own limit; in
            // the request, what signal-cli's JSON reader takes.
            max_upload_bytes: if self.spool_usable() {
                SIGNAL_MAX_FILE
            } else {
                DATA_URI_MAX_FILE
            },
            renders_time: false,
            pacing: Pacing::default(),
            min_upload_rate: 256 * 1024,
        }
    }

    async fn run(self: Arc<Self>, host: Arc<dyn Host>, shutdown: Shutdown) -> Result<(), RunError> {
        let r = self.clone().receive(host.as_ref(), shutdown).await;
        self.conn.lock().expect("conn lock").take();
        r
    }

    /// Over a socket or TCP a connection receives only once it subscribes;
    /// over HTTP the event stream is the subscription, so only the instance
    /// receiving for the account sends for it.
    fn sends_without_receiving(&self) -> bool {
        !matches!(self.cfg.daemon, Daemon::Http(_))
    }

    async fn serve_sends(
        self: Arc<Self>,
        host: Arc<dyn Host>,
        shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let r = self.clone().send_only(host.as_ref(), shutdown).await;
        self.conn.lock().expect("conn lock").take();
        r
    }

    async fn send(
        &self,
        host: &dyn Host,
        op: &Outbound,
        _idempotency_key: &str,
    ) -> Result<Receipt, SendError> {
        let conn = self.conn()?;
        let mut params = target(&op.channel);
        let template = op.nick_format.as_deref().unwrap_or(DEFAULT_NICK_FORMAT);
        let t = self.cfg.request_timeout;
        match &op.event.kind {
            EventKind::Message {
                body,
                attachments,
                reply_to,
            } => {
                let mut text = switchboard_core::with_nick(template, op, body);
                if let (Some(_), Some(target)) = (reply_to, &op.target) {
                    if let Some((author, ts)) = split_id(target.first()) {
                        params["quoteTimestamp"] = json!(ts);
                        params["quoteAuthor"] = json!(author);
                        if let EventKind::Message { body, .. } = &target.event.kind {
                            params["quoteMessage"] = json!(body.text);
                        }
                    }
                }
                let mut spooled = Vec::new();
                if !attachments.is_empty() {
                    let (files, lines, dir) = self.files(host, attachments).await?;
                    for line in lines {
                        push_line(&mut text, &line);
                    }
                    params["attachments"] = json!(files);
                    spooled.extend(dir);
                }
                params["message"] = json!(text.text);
                params["textStyle"] = json!(convert::text_styles(&text));
                // The upload happens before signal-cli answers: as long as
                // the outbox waits for it.
                let t = self.capabilities().send_timeout(op, t);
                let result = self.call(host, &conn, "send", params, t).await;
                for dir in spooled {
                    let _ = tokio::fs::remove_dir_all(dir).await;
                }
                let result = match result {
                    Err(e) => return Err(self.spool_failure(host, e)),
                    Ok(r) => r,
                };
                self.check_partial(&result);
                let ts = result.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
                Ok(Receipt::one(
                    RemoteId::new(message_id(&self.own_id(), ts)).expect("an id"),
                ))
            }
            EventKind::Notice { body } => {
                params["message"] = json!(body.text);
                let result = self.call(host, &conn, "send", params, t).await?;
                let ts = result.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
                Ok(Receipt::one(
                    RemoteId::new(message_id(&self.own_id(), ts)).expect("an id"),
                ))
            }
            EventKind::Edit { body, .. } => {
                let Some((_, ts)) = op.target.as_ref().and_then(|t| split_id(t.first())) else {
                    return Ok(Receipt::none());
                };
                let text = switchboard_core::with_nick(template, op, body);
                params["message"] = json!(text.text);
                params["textStyle"] = json!(convert::text_styles(&text));
                params["editTimestamp"] = json!(ts);
                let result = self.call(host, &conn, "send", params, t).await?;
                self.check_partial(&result);
                Ok(Receipt::none())
            }
            EventKind::Delete { .. } => {
                let Some(target) = &op.target else {
                    return Ok(Receipt::none());
                };
                for id in &target.ids {
                    if let Some((_, ts)) = split_id(id) {
                        let mut p = params.clone();
                        p["targetTimestamp"] = json!(ts);
                        self.call(host, &conn, "remoteDelete", p, t).await?;
                    }
                }
                Ok(Receipt::none())
            }
            EventKind::Reaction { emoji, removed, .. } => {
                let Some((author, ts)) = op.target.as_ref().and_then(|t| split_id(t.first()))
                else {
                    return Ok(Receipt::none());
                };
                params["emoji"] = json!(emoji);
                params["targetAuthor"] = json!(author);
                params["targetTimestamp"] = json!(ts);
                params["remove"] = json!(removed);
                self.call(host, &conn, "sendReaction", params, t).await?;
                Ok(Receipt::none())
            }
            _ => Ok(Receipt::none()),
        }
    }
}

impl SignalAdapter {
    async fn receive(
        self: Arc<Self>,
        host: &dyn Host,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let account = self.cfg.account.clone();
        let mut backoff = reconnect_backoff();
        let mut quiet = Quiet::default();
        // The ACI kept from an earlier run, until the daemon confirms it.
        if let Ok(Some(aci)) = host.state("aci").await {
            self.set_aci(&aci);
        }
        loop {
            let setup = tokio::select! {
                s = self.connect(host) => s,
                () = &mut shutdown => return Ok(()),
            };
            let (conn, mut notes, mut intake) = match setup {
                Ok(c) => c,
                Err(Setback::Down(error)) => {
                    quiet.warn(&account, &error, "Cannot use signal-cli; retrying.");
                    self.set_link(Link::Down(error.clone()));
                    host.health(ReceiveHealth::Reconnecting { error });
                    if !nap(backoff.fail(), &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(Setback::Missing(what)) => {
                    // The status names the number and the fix; the log
                    // does not carry numbers.
                    quiet.warn(
                        &account,
                        "signal-cli does not serve this account (`switchboard status` says what to do)",
                        "Waiting for the account; asking signal-cli again later.",
                    );
                    self.set_link(Link::Missing(what.clone()));
                    host.health(ReceiveHealth::NeedsAction { what });
                    if !nap(backoff.fail(), &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if !self.use_connection(&conn, host) {
                host.health(ReceiveHealth::Degraded {
                    reason: "the Signal account's ACI is not known yet (signal-cli could not say); sends wait".into(),
                });
            }
            tracing::info!(%account, "Connected to signal-cli.");
            quiet = Quiet::default();
            backoff.reset();
            let mut aci = AciRetry::new();
            // Set once told to stop (shutdown, or the account's lease given
            // to another instance of a cluster): signal-cli acknowledged to
            // Signal what it handed over, so that is committed before the
            // connection closes, until this deadline. The unsubscribe's
            // answer comes after everything handed over before it, so it
            // is awaited while draining (the reader reads on only as far
            // as the queue is emptied).
            let mut stopping: Option<tokio::time::Instant> = None;
            let mut unsubscribing: Option<Unsubscribing<'_>> = None;
            loop {
                // Unsubscribed with nothing left of what was handed over:
                // nothing more can come on this connection; a new one
                // subscribes anew.
                if intake.held && notes.is_empty() && stopping.is_none() {
                    break;
                }
                let first = if let Some(deadline) = stopping {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        if unsubscribing.is_some() || !notes.is_empty() {
                            tracing::warn!(%account, "Stopped before everything signal-cli handed over was committed.");
                        }
                        return Ok(());
                    }
                    // Until the subscription has stopped, more may come.
                    let until = if unsubscribing.is_some() {
                        deadline
                    } else {
                        (now + HAND_OVER_IDLE).min(deadline)
                    };
                    tokio::select! {
                        biased;
                        n = notes.recv() => match n {
                            Some(n) => Some(n),
                            None => return Ok(()),
                        },
                        r = async { unsubscribing.as_mut().expect("checked").await }, if unsubscribing.is_some() => {
                            if let Err(e) = r {
                                tracing::debug!(%account, error = %e, "Cannot unsubscribe while stopping; committing what comes until the deadline.");
                            }
                            unsubscribing = None;
                            continue;
                        }
                        () = tokio::time::sleep_until(until) => {
                            if unsubscribing.is_none() {
                                return Ok(());
                            }
                            continue;
                        }
                    }
                } else {
                    tokio::select! {
                        n = notes.recv() => n,
                        () = &mut aci.at, if !self.aci_known() => {
                            self.retry_aci(&conn, host, &mut aci).await;
                            continue;
                        }
                        () = &mut shutdown => {
                            tracing::debug!(%account, "Stopping: committing what signal-cli handed over.");
                            let deadline = tokio::time::Instant::now() + HAND_OVER;
                            if let Some(params) = intake.unsubscribe_params() {
                                unsubscribing = Some(Box::pin(conn.call("unsubscribeReceive", params, HAND_OVER)));
                            }
                            // Never subscribed again from here (and a store
                            // failure while stopping does not unsubscribe
                            // twice).
                            intake.held = true;
                            stopping = Some(deadline);
                            // Storing a file or committing gives up at the
                            // deadline too.
                            shutdown = Box::pin(tokio::time::sleep_until(deadline));
                            continue;
                        }
                    }
                };
                let Some(first) = first else { break };
                // What arrived together is committed together.
                let mut batch = vec![first];
                while batch.len() < 100 {
                    match notes.try_recv() {
                        Ok(n) => batch.push(n),
                        Err(_) => break,
                    }
                }
                let (took, started) = (batch.len(), Instant::now());
                let Some((events, timers)) = self
                    .translate(&conn, host, batch, &mut intake, &mut shutdown)
                    .await
                else {
                    return Ok(());
                };
                if events.is_empty() {
                    // A file was stored meanwhile: the store is back.
                    if intake.held && stopping.is_none() {
                        intake
                            .release(&conn, self.cfg.request_timeout, &account)
                            .await;
                    }
                    continue;
                }
                let translated = started.elapsed();
                let batch = Batch {
                    events,
                    cursor: None,
                };
                let answers = match host.deliver(batch.clone()).await {
                    Ok(answers) => answers,
                    Err(DeliverError::Stopping) => return Ok(()),
                    Err(e) => {
                        // Stop taking messages off Signal while the store
                        // cannot commit them, then wait for it.
                        tracing::warn!(%account, error = %e, "Cannot commit Signal messages; retrying.");
                        intake.hold(&conn, self.cfg.request_timeout, &account).await;
                        match kit::deliver(host, batch, &mut shutdown).await {
                            Some(answers) => answers,
                            None => return Ok(()),
                        }
                    }
                };
                tracing::debug!(%account, notifications = took, translate_ms = translated.as_secs_f64() * 1e3, ms = started.elapsed().as_secs_f64() * 1e3, "Signal messages committed.");
                for a in answers {
                    if let Delivered::Rejected(reason) = a {
                        tracing::warn!(%account, %reason, "Signal message rejected by the hub; skipped.");
                    }
                }
                // Said once: remembered after the message saying it is
                // committed (a crash in between says it again).
                for (channel, seconds) in timers {
                    self.timers
                        .lock()
                        .expect("timers lock")
                        .insert(channel.clone(), seconds);
                    let _ = host
                        .set_state(&format!("timer:{channel}"), &seconds.to_string())
                        .await;
                }
                if intake.held && stopping.is_none() {
                    // Committed: the store is back. What was handed over
                    // before is still in `notes`, ahead of what comes now.
                    // If this fails, what was handed over is committed
                    // first (it is off Signal's server already); then a new
                    // connection subscribes anew (the check above).
                    intake
                        .release(&conn, self.cfg.request_timeout, &account)
                        .await;
                }
            }
            self.conn.lock().expect("conn lock").take();
            let error = "the connection to signal-cli closed".to_owned();
            tracing::warn!(%account, %error, "Reconnecting.");
            self.set_link(Link::Down(error.clone()));
            host.health(ReceiveHealth::Reconnecting { error });
            if !nap(backoff.fail(), &mut shutdown).await {
                return Ok(());
            }
        }
    }

    /// A connection for sending only ([`Adapter::serve_sends`]): connects
    /// as [`connect`](Self::connect) does, without subscribing, and keeps a
    /// connection until `shutdown`. A daemon that hands it messages anyway
    /// (not started with `--receive-mode=manual`) is named in the log: what
    /// it hands here is not bridged (the instance receiving for the account
    /// gets its own copy).
    async fn send_only(
        self: Arc<Self>,
        host: &dyn Host,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let account = self.cfg.account.clone();
        let mut backoff = reconnect_backoff();
        let mut quiet = Quiet::default();
        let mut warned = false;
        if let Ok(Some(aci)) = host.state("aci").await {
            self.set_aci(&aci);
        }
        loop {
            let setup = tokio::select! {
                s = self.connect_with(host, false) => s,
                () = &mut shutdown => return Ok(()),
            };
            let (conn, mut notes) = match setup {
                Ok((conn, notes, _)) => (conn, notes),
                Err(Setback::Down(error)) => {
                    quiet.warn(&account, &error, "Cannot use signal-cli to send; retrying.");
                    self.set_link(Link::Down(error.clone()));
                    host.health(ReceiveHealth::Reconnecting { error });
                    if !nap(backoff.fail(), &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(Setback::Missing(what)) => {
                    self.set_link(Link::Missing(what.clone()));
                    host.health(ReceiveHealth::NeedsAction { what });
                    if !nap(backoff.fail(), &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            self.use_connection(&conn, host);
            tracing::info!(%account, "Connected to signal-cli to send.");
            quiet = Quiet::default();
            backoff.reset();
            let mut aci = AciRetry::new();
            loop {
                tokio::select! {
                    n = notes.recv() => match n {
                        None => break,
                        Some(_) if !warned => {
                            warned = true;
                            tracing::error!(%account, "signal-cli hands messages to a connection that only sends: \
                                start the daemon with --receive-mode=manual. What it hands here is not bridged.");
                        }
                        Some(_) => {}
                    },
                    () = &mut aci.at, if !self.aci_known() => {
                        self.retry_aci(&conn, host, &mut aci).await;
                    }
                    () = &mut shutdown => return Ok(()),
                }
            }
            self.conn.lock().expect("conn lock").take();
            let error = "the connection to signal-cli closed".to_owned();
            self.set_link(Link::Down(error.clone()));
            host.health(ReceiveHealth::Reconnecting { error });
            if !nap(backoff.fail(), &mut shutdown).await {
                return Ok(());
            }
        }
    }

    /// Connects, checks that the daemon serves the account, learns the ACI
    /// and names, and subscribes.
    async fn connect(&self, host: &dyn Host) -> Result<(Arc<Conn>, Notes, Intake), Setback> {
        self.connect_with(host, true).await
    }

    /// [`connect`](Self::connect), subscribing only when `subscribe`.
    async fn connect_with(
        &self,
        host: &dyn Host,
        subscribe: bool,
    ) -> Result<(Arc<Conn>, Notes, Intake), Setback> {
        let t = self.cfg.request_timeout;
        let number = self.cfg.number.as_str();
        let (conn, notes) = match Conn::connect(&self.cfg.daemon, Some(number)).await {
            Ok(c) => c,
            // The event stream answers 400 for an account it does not serve.
            Err(e) if e.to_string().contains("400") => {
                return Err(Setback::Missing(errors::missing_account_fix(number)));
            }
            Err(e) => return Err(Setback::Down(format!("cannot reach signal-cli: {e}"))),
        };
        match conn.call_daemon("listAccounts", t).await {
            Ok(list) => {
                let served = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a.get("number").and_then(Value::as_str) == Some(number));
                if !served {
                    return Err(Setback::Missing(errors::missing_account_fix(number)));
                }
            }
            // Started with `-a`: it serves its one account.
            Err(RpcError::Remote { code, .. }) if code == code::METHOD_NOT_FOUND => {}
            Err(e) => return Err(Setback::Down(format!("signal-cli failed: {e}"))),
        }
        self.learn_aci(&conn, host).await;
        self.load_contacts(&conn, true).await;
        // Over HTTP the event stream is the subscription.
        let subscription = if !subscribe || matches!(self.cfg.daemon, Daemon::Http(_)) {
            None
        } else {
            match conn.call("subscribeReceive", json!({}), t).await {
                Ok(id) => Some(id).filter(|id| !id.is_null()),
                Err(RpcError::Remote { code, .. }) if code == code::INVALID_PARAMS => {
                    return Err(Setback::Missing(errors::missing_account_fix(number)));
                }
                Err(e) => return Err(Setback::Down(format!("cannot subscribe to messages: {e}"))),
            }
        };
        Ok((
            conn,
            notes,
            Intake {
                subscription,
                held: false,
            },
        ))
    }

    /// Asks for the ACI again ([`learn_aci`](Self::learn_aci)): once known,
    /// the link is up; otherwise the next try is set, later each time.
    async fn retry_aci(&self, conn: &Conn, host: &dyn Host, retry: &mut AciRetry) {
        if self.learn_aci(conn, host).await {
            self.set_link(Link::Up);
            host.health(ReceiveHealth::Connected);
        } else {
            let next = tokio::time::Instant::now() + retry.backoff.fail();
            retry.at.as_mut().reset(next);
        }
    }

    /// Learns the account's ACI: from the daemon's own store first (a
    /// local read), else the directory; keeps it in the account's state.
    /// Whether it is known now.
    async fn learn_aci(&self, conn: &Conn, host: &dyn Host) -> bool {
        let t = self.cfg.request_timeout;
        let number = self.cfg.number.as_str();
        let mut found = None;
        let me = json!({"recipient": [number], "allRecipients": true});
        if let Ok(list) = conn.call("listContacts", me, t).await {
            for c in list.as_array().into_iter().flatten() {
                if c.get("number").and_then(Value::as_str) == Some(number) {
                    found = c.get("uuid").and_then(Value::as_str).map(str::to_owned);
                    if let Some(name) = contact_name(c) {
                        self.remember_name(c, &name);
                    }
                }
            }
        }
        if found.is_none() && !self.aci_known() {
            let asked = conn
                .call("getUserStatus", json!({"recipient": [number]}), t)
                .await;
            found = asked.ok().and_then(|v| {
                v.get(0)
                    .and_then(|s| s.get("uuid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        }
        if let Some(aci) = found {
            let known = self.own.lock().expect("own lock").get(1).cloned();
            if known.as_deref() != Some(aci.as_str()) {
                self.set_aci(&aci);
                if let Err(e) = host.set_state("aci", &aci).await {
                    tracing::warn!(account = %self.cfg.account, error = %e, "Cannot keep the account's ACI; it is learned again at the next start.");
                }
            }
        }
        self.aci_known()
    }

    /// Notifications to events: other accounts' dropped, long texts made
    /// whole, people named, files fetched, disappearing timers said once.
    /// Also the timers to remember once the events are committed. `None`
    /// when shutting down.
    async fn translate(
        &self,
        conn: &Conn,
        host: &dyn Host,
        notes: Vec<Value>,
        intake: &mut Intake,
        shutdown: &mut Shutdown,
    ) -> Option<(Vec<switchboard_core::NewEvent>, Vec<(String, u64)>)> {
        let mut out = Vec::new();
        let mut timers: HashMap<String, u64> = HashMap::new();
        for mut n in notes {
            // A daemon serving several accounts may still send another's
            // (a subscription made without `account`): never bridged.
            let inner = n.get("result").unwrap_or(&n);
            if inner
                .get("account")
                .and_then(Value::as_str)
                .is_some_and(|a| a != self.cfg.number)
            {
                // With `account` on every call this takes a daemon started
                // with `-a` for another number, which answers for it.
                if !self.foreign_seen.swap(true, Ordering::Relaxed) {
                    tracing::warn!(account = %self.cfg.account, "signal-cli hands over messages of another account (is the daemon started with -a for another number?); they are dropped.");
                } else {
                    tracing::debug!(account = %self.cfg.account, "A message for another account of the daemon; dropped.");
                }
                continue;
            }
            if let Some(id) = convert::long_text_id(&n) {
                let text = self
                    .fetch(conn, &id)
                    .await
                    .and_then(|b| String::from_utf8(b).ok());
                if text.is_none() {
                    tracing::warn!(account = %self.cfg.account, "A long message's full text could not be fetched; bridging what the envelope has.");
                }
                convert::set_long_text(&mut n, text.as_deref());
            }
            let Some(mut d) = self.draft(&n) else {
                tracing::debug!(account = %self.cfg.account, "An envelope not bridged (receipt, typing, sync, ...).");
                continue;
            };
            if d.unnamed && self.load_contacts(conn, false).await {
                if let Some(again) = self.draft(&n) {
                    d = again;
                }
            }
            if let Some(command) = self.command_in(&d) {
                out.push(self.command_event(conn, &n, d, command).await);
                continue;
            }
            let channel = d.event.origin.channel.as_str().to_owned();
            if let EventKind::Message { body, .. } = &mut d.event.kind {
                let said = match timers.get(&channel) {
                    Some(s) => *s,
                    None => self.timer_said(host, &channel).await,
                };
                if d.expires_in != said {
                    timers.insert(channel.clone(), d.expires_in);
                    if d.expires_in > 0 {
                        let place = if crate::config::is_number(&channel) {
                            "this Signal chat"
                        } else {
                            "this Signal group"
                        };
                        let line = format!(
                            "[messages in {place} disappear after {}; their copies on other networks do not]",
                            convert::timer_words(d.expires_in)
                        );
                        push_line(body, &line);
                    }
                }
                // A timer change with nothing to say.
                if body.text.is_empty() && d.files.is_empty() {
                    continue;
                }
            }
            let mut fetched = Vec::new();
            for f in &d.files {
                let Some(bytes) = self.fetch(conn, &f.id).await else {
                    tracing::warn!(account = %self.cfg.account, id = %f.id, "An attachment could not be fetched; the message says so.");
                    if let EventKind::Message { body, .. } = &mut d.event.kind {
                        let line =
                            not_bridged(&f.name, f.size, "it could not be fetched from signal-cli");
                        push_line(body, &line);
                    }
                    continue;
                };
                let size = bytes.len() as u64;
                let content = match host.put_blob(&f.mime, bytes.clone()).await {
                    Ok(b) => b,
                    Err(DeliverError::Stopping) => return None,
                    Err(_) => {
                        // The file is off Signal's server already: take no
                        // more until the store takes it.
                        intake
                            .hold(conn, self.cfg.request_timeout, &self.cfg.account)
                            .await;
                        match kit::store_file(host, &f.name, &f.mime, bytes, STORE_BUDGET, shutdown)
                            .await
                        {
                            kit::Stored::Blob(b) => b,
                            kit::Stored::NotBridged(line) => {
                                if let EventKind::Message { body, .. } = &mut d.event.kind {
                                    push_line(body, &line);
                                }
                                continue;
                            }
                            kit::Stored::Stopped => return None,
                        }
                    }
                };
                fetched.push(Attachment {
                    alt: None,
                    kind: f.kind,
                    name: f.name.clone(),
                    mime: f.mime.clone(),
                    size,
                    content,
                });
            }
            if let EventKind::Message { attachments, .. } = &mut d.event.kind {
                *attachments = fetched;
            }
            out.push(d.event);
        }
        Some((out, timers.into_iter().collect()))
    }

    /// An envelope as a draft, with the names known now.
    fn draft(&self, params: &Value) -> Option<convert::Draft> {
        let own = self.own.lock().expect("own lock").clone();
        // Held, not cloned, for the one message: nothing here awaits.
        let names = self.names.lock().expect("names lock");
        let name_of = |uuid: Option<&str>, number: Option<&str>| {
            uuid.and_then(|u| names.get(u))
                .or_else(|| number.and_then(|n| names.get(n)))
                .cloned()
        };
        convert::draft(
            &convert::Context {
                account: &self.cfg.account,
                own: &own,
                show_numbers: self.cfg.show_numbers,
                name_of: &name_of,
            },
            params,
        )
    }

    /// The disappearing timer last said in a channel (0: none).
    async fn timer_said(&self, host: &dyn Host, channel: &str) -> u64 {
        if let Some(s) = self.timers.lock().expect("timers lock").get(channel) {
            return *s;
        }
        let said = host
            .state(&format!("timer:{channel}"))
            .await
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.timers
            .lock()
            .expect("timers lock")
            .insert(channel.to_owned(), said);
        said
    }

    /// An attachment's bytes (`getAttachment`), `None` when it cannot be
    /// had.
    async fn fetch(&self, conn: &Conn, id: &str) -> Option<Vec<u8>> {
        let mut answer = conn
            .call("getAttachment", json!({"id": id}), self.cfg.request_timeout)
            .await
            .ok()?;
        let Some(Value::String(data)) = answer.get_mut("data").map(Value::take) else {
            return None;
        };
        let long = data.len() > OFF_WORKER_CHARS;
        let decode = move || base64::engine::general_purpose::STANDARD.decode(data).ok();
        // Decoding megabytes is CPU work: not on an async worker.
        if long {
            tokio::task::spawn_blocking(decode).await.ok()?
        } else {
            decode()
        }
    }

    fn remember_name(&self, contact: &Value, name: &str) {
        let mut names = self.names.lock().expect("names lock");
        for key in ["number", "uuid"] {
            if let Some(k) = contact.get(key).and_then(Value::as_str) {
                names.insert(k.to_owned(), name.to_owned());
            }
        }
    }

    /// Reads the contacts' names (best effort; at most once a minute unless
    /// `now`). Whether they were read.
    async fn load_contacts(&self, conn: &Conn, now: bool) -> bool {
        {
            let mut read = self.names_read.lock().expect("names lock");
            if !now && read.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return false;
            }
            *read = Some(Instant::now());
        }
        let Ok(list) = conn
            .call("listContacts", json!({}), self.cfg.request_timeout)
            .await
        else {
            return false;
        };
        for c in list.as_array().into_iter().flatten() {
            if let Some(name) = contact_name(c) {
                self.remember_name(c, &name);
            }
        }
        true
    }

    /// Files for `send`: paths in a fresh spool directory (returned, to be
    /// removed after the send) where the daemon reads them, else data
    /// URIs; a file neither can carry becomes a line.
    async fn files(
        &self,
        host: &dyn Host,
        attachments: &[Attachment],
    ) -> Result<(Vec<String>, Vec<String>, Option<PathBuf>), SendError> {
        let spool = self.cfg.spool.as_ref().filter(|_| self.spool_usable());
        let mut out = Vec::new();
        let mut lines = Vec::new();
        let mut dir: Option<(PathBuf, PathBuf)> = None;
        for a in attachments {
            let bytes = host
                .blob(&a.content)
                .await
                .map_err(|e| SendError::transient(e.to_string(), None))?
                .ok_or_else(|| {
                    SendError::permanent(format!("the file {} is no longer stored", a.name))
                })?;
            if let Some(spool) = spool {
                if bytes.len() as u64 > SIGNAL_MAX_FILE {
                    lines.push(not_bridged(
                        &a.name,
                        Some(a.size),
                        "larger than Signal takes (100 MiB)",
                    ));
                    continue;
                }
                let (ours, theirs) = match &dir {
                    Some(d) => d.clone(),
                    None => {
                        let d = make_spool_dir(&spool.dir).await.map_err(|e| {
                            SendError::transient(
                                format!(
                                    "cannot write the spool directory {}: {e}",
                                    spool.dir.display()
                                ),
                                None,
                            )
                        })?;
                        let pair = (spool.dir.join(&d), spool.daemon_dir.join(&d));
                        dir = Some(pair.clone());
                        pair
                    }
                };
                // signal-cli names the file after the path's last part.
                let name = spool_name(&a.name, out.len());
                write_spooled(&ours.join(&name), &bytes)
                    .await
                    .map_err(|e| {
                        SendError::transient(
                            format!("cannot write to the spool directory: {e}"),
                            None,
                        )
                    })?;
                out.push(theirs.join(&name).to_string_lossy().into_owned());
                continue;
            }
            // Encoding megabytes is CPU work: not on an async worker.
            let uri = if bytes.len() > OFF_WORKER_CHARS {
                let (mime, name) = (a.mime.clone(), a.name.clone());
                tokio::task::spawn_blocking(move || data_uri(&mime, &name, &bytes))
                    .await
                    .ok()
                    .flatten()
            } else {
                data_uri(&a.mime, &a.name, &bytes)
            };
            match uri {
                Some(uri) => out.push(uri),
                None => lines.push(not_bridged(
                    &a.name,
                    Some(a.size),
                    &format!(
                        "larger than signal-cli takes inside a request ({})",
                        switchboard_core::human_size(DATA_URI_MAX_FILE)
                    ),
                )),
            }
        }
        Ok((out, lines, dir.map(|(ours, _)| ours)))
    }

    /// A send whose spooled file the daemon could not open: the spool is
    /// not shared with it. Files go inside the request from now on (up to
    /// what that carries), and this send is retried.
    fn spool_failure(&self, host: &dyn Host, e: SendError) -> SendError {
        let Some(spool) = &self.cfg.spool else {
            return e;
        };
        let daemon_dir = spool.daemon_dir.to_string_lossy();
        if !(e.message().contains("(AttachmentInvalidException)")
            && e.message().contains(daemon_dir.as_ref()))
        {
            return e;
        }
        self.spool_ok.store(false, Ordering::Relaxed);
        let reason = format!(
            "signal-cli cannot read files in the spool directory {daemon_dir} (is it shared with the daemon, readable by its user? set spool_dir/daemon_spool_dir); files go inside the request, up to {}",
            switchboard_core::human_size(DATA_URI_MAX_FILE)
        );
        tracing::warn!(account = %self.cfg.account, %reason, "Files to Signal no longer go by path.");
        host.health(ReceiveHealth::Degraded {
            reason: reason.clone(),
        });
        SendError::transient(format!("{reason}: {}", e.message()), None)
    }

    /// A send that reached only some recipients is a success: say how many
    /// it missed.
    fn check_partial(&self, result: &Value) {
        let results = result.get("results").and_then(Value::as_array);
        let failed = results
            .into_iter()
            .flatten()
            .filter(|r| r.get("type").and_then(Value::as_str) != Some("SUCCESS"))
            .count();
        if failed > 0 {
            tracing::warn!(account = %self.cfg.account, failed, of = results.map_or(0, Vec::len), "A Signal send did not reach every recipient.");
        }
    }

    /// One request; a captcha challenge also marks the account as needing
    /// an admin (shown by `switchboard status`) until a send succeeds.
    async fn call(
        &self,
        host: &dyn Host,
        conn: &Conn,
        method: &str,
        params: Value,
        t: Duration,
    ) -> Result<Value, SendError> {
        match conn.call(method, params, t).await {
            Ok(v) => {
                if self.captcha.swap(false, Ordering::Relaxed) {
                    host.health(ReceiveHealth::Connected);
                }
                Ok(v)
            }
            Err(e) => {
                let captcha = matches!(&e, RpcError::Remote { data, .. } if data
                    .pointer("/response/results")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|r| r.get("token").is_some())));
                let err = classify(e, &self.cfg.number);
                if captcha {
                    self.captcha.store(true, Ordering::Relaxed);
                    host.health(ReceiveHealth::NeedsAction {
                        what: err.message().to_owned(),
                    });
                    tracing::error!(account = %self.cfg.account, "Signal needs a captcha solved; `switchboard status` says how.");
                }
                Err(err)
            }
        }
    }
}

/// A contact's name as people see it: the profile's, else the contact's.
fn contact_name(c: &Value) -> Option<String> {
    let profile = c.get("profile");
    let given = profile
        .and_then(|p| p.get("givenName"))
        .and_then(Value::as_str);
    let family = profile
        .and_then(|p| p.get("familyName"))
        .and_then(Value::as_str);
    match (given, family) {
        (Some(g), Some(f)) if !g.is_empty() && !f.is_empty() => Some(format!("{g} {f}")),
        (Some(g), _) if !g.is_empty() => Some(g.to_owned()),
        _ => c
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
    }
}

/// A data URI signal-cli reads (one `filename=` parameter: its pattern is
/// greedy), or `None` when it would be over signal-cli's string limit.
fn data_uri(mime: &str, name: &str, bytes: &[u8]) -> Option<String> {
    let encoded_len = bytes.len().div_ceil(3) * 4;
    let mut name: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mime = if mime.len() > 200 || mime.contains(';') {
        "application/octet-stream"
    } else {
        mime
    };
    if name.len() > DATA_URI_PREFIX_ROOM - 256 {
        name = "file".into();
    }
    let prefix = format!("data:{mime};filename={name};base64,");
    if prefix.len() + encoded_len > MAX_STRING_CHARS {
        return None;
    }
    Some(prefix + &base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A file name safe to put in the spool (no path separators, not hidden,
/// not too long), keeping the extension signal-cli guesses the type from.
fn spool_name(name: &str, index: usize) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    let clean = if clean.is_empty() { "file" } else { clean };
    let mut out = String::new();
    for c in clean.chars() {
        if out.len() + c.len_utf8() > 200 {
            break;
        }
        out.push(c);
    }
    if index > 0 {
        // Two files of one message may share a name.
        format!("{index}-{out}")
    } else {
        out
    }
}

/// An unguessable directory name (from the process's random hashing keys
/// and a counter).
fn random_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut h = state.build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let a = h.finish();
    let mut h = state.build_hasher();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

/// A fresh directory under the spool (created, with the spool, as
/// traversable but not listable by others); its name.
async fn make_spool_dir(spool: &std::path::Path) -> std::io::Result<String> {
    tokio::fs::create_dir_all(spool).await?;
    let name = random_name();
    let dir = spool.join(&name);
    tokio::fs::create_dir(&dir).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = |m| std::fs::Permissions::from_mode(m);
        // Best effort on the spool itself: it may belong to someone else.
        let _ = tokio::fs::set_permissions(spool, perms(0o711)).await;
        tokio::fs::set_permissions(&dir, perms(0o711)).await?;
    }
    Ok(name)
}

/// Writes a spooled file readable by the daemon's user.
async fn write_spooled(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::write(path, bytes).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).await?;
    }
    Ok(())
}

/// `groupId` for a group channel, `recipient` for a number. A group id is
/// base64 and may start with `+` too (1 in 64 do): a number is `+` and
/// digits only.
fn target(channel: &switchboard_core::ChannelId) -> Value {
    if crate::config::is_number(channel.as_str()) {
        json!({"recipient": [channel.as_str()]})
    } else {
        json!({"groupId": channel.as_str()})
    }
}

/// `<author>:<timestamp>` back into its parts.
fn split_id(id: &RemoteId) -> Option<(String, i64)> {
    let (author, ts) = id.as_str().rsplit_once(':')?;
    Some((author.to_owned(), ts.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_targets_and_files() {
        assert_eq!(
            split_id(&RemoteId::new("u-1:1732480000000").unwrap()),
            Some(("u-1".into(), 1_732_480_000_000))
        );
        let ch = |s: &str| switchboard_core::ChannelId::new(s).unwrap();
        assert_eq!(
            target(&ch("+15550000002")),
            json!({"recipient": ["+15550000002"]})
        );
        let plus = "+2khZq0c9uD2m1YdJt7Xb3kZr0cQ9uD2m1YdJt7Xb3k=";
        assert_eq!(target(&ch(plus)), json!({"groupId": plus}));
        assert_eq!(spool_name("../.a/b.png", 0), "_.a_b.png");
        assert_eq!(spool_name("", 1), "1-file");
        assert_ne!(random_name(), random_name());
    }

    #[test]
    fn a_data_uri_never_exceeds_what_signal_cli_reads() {
        let max = DATA_URI_MAX_FILE as usize;
        let uri = data_uri("application/octet-stream", "a b.bin", &vec![0u8; max]).unwrap();
        assert!(uri.len() <= MAX_STRING_CHARS, "{}", uri.len());
        assert!(uri.starts_with("data:application/octet-stream;filename=a%20b.bin;base64,"));
        assert!(data_uri("application/octet-stream", "a", &vec![0u8; 15_000_000]).is_none());
        // 14.3 MiB, as measured against the daemon.
        assert_eq!(switchboard_core::human_size(DATA_URI_MAX_FILE), "14.3 MiB");
    }

    #[test]
    fn reconnects_back_off_to_a_minute() {
        let b = reconnect_backoff();
        let steps: Vec<u64> = (1..=8).map(|n| b.step(n).as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
