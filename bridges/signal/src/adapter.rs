//! [`SignalAdapter`]: receives `receive` notifications on a manual
//! subscription and sends with `send`, `sendReaction` and `remoteDelete`.
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
//! # Sending
//! One request per attempt. A send that reached some recipients is a
//! success, logged with how many failed; one that reached none is an error
//! classified from the daemon's code: -5 rate limit (retry after its
//! `retryAfterSeconds`, else with the outbox's backoff), -3 IO and timeouts (retry), -4
//! untrusted identity and unregistered recipients (permanent), a captcha
//! challenge (the account needs an admin: health says which command to
//! run), the daemon unreachable (account down).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Value};
use switchboard_core::{
    AccountId, Adapter, Attachment, Batch, Capabilities, DeliverError, Delivered, EventKind, Host,
    Outbound, Pacing, Reactions, Receipt, ReceiveHealth, RemoteId, RunError, SendError, Shutdown,
    TextLimit, TextUnit, DEFAULT_NICK_FORMAT,
};

use crate::client::{Conn, RpcError};
use crate::config::SignalConfig;
use crate::convert::{self, message_id};

/// Signal accepts edits and deletes for everyone within 24 hours.
const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// One signal-cli account.
pub struct SignalAdapter {
    cfg: SignalConfig,
    /// The connection in force; `None` while reconnecting.
    conn: Mutex<Option<Arc<Conn>>>,
    /// Cleared when `run` ends (the host holds the hub, which holds this).
    host: Mutex<Option<Arc<dyn Host>>>,
    /// The account's own ids (number and ACI): its messages, and what it
    /// sent from other devices, are never bridged back.
    own: Mutex<Vec<String>>,
    /// Contacts' profile names by number and ACI, for envelopes without a
    /// `sourceName`; read at connect and when an unknown sender writes.
    names: Mutex<std::collections::HashMap<String, String>>,
    /// When the contacts were last read: at most once a minute.
    names_read: Mutex<Option<std::time::Instant>>,
    /// Set while Signal asks for a captcha: the next success clears it.
    captcha: std::sync::atomic::AtomicBool,
}

impl SignalAdapter {
    /// An adapter for `cfg`.
    #[must_use]
    pub fn new(cfg: SignalConfig) -> Arc<Self> {
        let own = vec![cfg.number.clone()];
        Arc::new(Self {
            cfg,
            conn: Mutex::new(None),
            host: Mutex::new(None),
            own: Mutex::new(own),
            captcha: std::sync::atomic::AtomicBool::new(false),
            names: Mutex::new(std::collections::HashMap::new()),
            names_read: Mutex::new(None),
        })
    }

    fn conn(&self) -> Result<Arc<Conn>, SendError> {
        self.conn
            .lock()
            .expect("conn lock")
            .clone()
            .filter(|c| c.is_open())
            .ok_or_else(|| SendError::account_down("signal-cli is not connected", None))
    }

    /// The id this account's messages have (its ACI once known).
    fn own_id(&self) -> String {
        let own = self.own.lock().expect("own lock");
        own.last().cloned().unwrap_or_default()
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
    /// Stops taking messages off Signal (once; a no-op over HTTP).
    async fn hold(&mut self, conn: &Conn, timeout: Duration, account: &AccountId) {
        let Some(id) = self.subscription.as_ref().filter(|_| !self.held) else {
            return;
        };
        let params = json!({"subscription": id});
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

async fn nap(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown => false,
    }
}

#[async_trait]
impl Adapter for SignalAdapter {
    fn account(&self) -> &AccountId {
        &self.cfg.account
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sticker_formats: None,
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
            max_upload_bytes: 100 * 1024 * 1024,
            renders_time: false,
            pacing: Pacing::default(),
            min_upload_rate: 256 * 1024,
        }
    }

    async fn run(self: Arc<Self>, host: Arc<dyn Host>, shutdown: Shutdown) -> Result<(), RunError> {
        *self.host.lock().expect("host lock") = Some(host.clone());
        let r = self.clone().receive(host.as_ref(), shutdown).await;
        self.host.lock().expect("host lock").take();
        self.conn.lock().expect("conn lock").take();
        r
    }

    async fn send(&self, op: &Outbound, _idempotency_key: &str) -> Result<Receipt, SendError> {
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
                let text = switchboard_core::with_nick(template, op, body);
                params["message"] = json!(text.text);
                params["textStyle"] = json!(convert::text_styles(&text));
                if let (Some(_), Some(target)) = (reply_to, &op.target) {
                    if let Some((author, ts)) = split_id(target.first()) {
                        params["quoteTimestamp"] = json!(ts);
                        params["quoteAuthor"] = json!(author);
                        if let EventKind::Message { body, .. } = &target.event.kind {
                            params["quoteMessage"] = json!(body.text);
                        }
                    }
                }
                if !attachments.is_empty() {
                    params["attachments"] = json!(self.data_uris(attachments).await?);
                }
                let result = self.call(&conn, "send", params, t).await?;
                self.check_partial(&result);
                let ts = result.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
                Ok(Receipt::one(
                    RemoteId::new(message_id(&self.own_id(), ts)).expect("an id"),
                ))
            }
            EventKind::Notice { body } => {
                params["message"] = json!(body.text);
                let result = self.call(&conn, "send", params, t).await?;
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
                let result = self.call(&conn, "send", params, t).await?;
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
                        self.call(&conn, "remoteDelete", p, t).await?;
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
                self.call(&conn, "sendReaction", params, t).await?;
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
        let mut backoff = Duration::from_secs(1);
        loop {
            let connected = tokio::select! {
                c = Conn::connect(&self.cfg.daemon) => c,
                () = &mut shutdown => return Ok(()),
            };
            let (conn, mut notes) = match connected {
                Ok(c) => c,
                Err(e) => {
                    let error = format!("cannot reach signal-cli: {e}");
                    tracing::warn!(%account, %error, "Retrying.");
                    host.health(ReceiveHealth::Reconnecting { error });
                    if !nap(backoff, &mut shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            // The account's ACI: messages name it as author.
            if let Ok(v) = conn
                .call(
                    "getUserStatus",
                    json!({"recipient": [self.cfg.number]}),
                    self.cfg.request_timeout,
                )
                .await
            {
                if let Some(uuid) = v.get(0).and_then(|s| s.get("uuid")).and_then(Value::as_str) {
                    let mut own = self.own.lock().expect("own lock");
                    if !own.iter().any(|o| o == uuid) {
                        own.push(uuid.to_owned());
                    }
                }
            }
            // Over HTTP the event stream is the subscription.
            let subscribed = if matches!(self.cfg.daemon, crate::config::Daemon::Http(_)) {
                Ok(Value::Null)
            } else {
                conn.call("subscribeReceive", json!({}), self.cfg.request_timeout)
                    .await
            };
            // The subscription's id over a socket, to stop it while the
            // store is unavailable.
            let mut intake = match subscribed {
                Ok(id) => Intake {
                    subscription: Some(id).filter(|id| !id.is_null()),
                    held: false,
                },
                Err(e) => {
                    let error = format!("cannot subscribe to messages: {e}");
                    tracing::warn!(%account, %error, "Retrying.");
                    host.health(ReceiveHealth::Reconnecting { error });
                    if !nap(backoff, &mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            *self.conn.lock().expect("conn lock") = Some(conn.clone());
            host.health(ReceiveHealth::Connected);
            tracing::info!(%account, "Connected to signal-cli.");
            backoff = Duration::from_secs(1);
            loop {
                // Unsubscribed with nothing left of what was handed over:
                // nothing more can come on this connection; a new one
                // subscribes anew.
                if intake.held && notes.is_empty() {
                    break;
                }
                let first = tokio::select! {
                    n = notes.recv() => n,
                    () = &mut shutdown => return Ok(()),
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
                let Some(events) = self
                    .translate(&conn, host, &batch, &mut intake, &mut shutdown)
                    .await
                else {
                    return Ok(());
                };
                if events.is_empty() {
                    // A file was stored meanwhile: the store is back.
                    if intake.held {
                        intake
                            .release(&conn, self.cfg.request_timeout, &account)
                            .await;
                    }
                    continue;
                }
                loop {
                    match host
                        .deliver(Batch {
                            events: events.clone(),
                            cursor: None,
                        })
                        .await
                    {
                        Ok(answers) => {
                            for a in answers {
                                if let Delivered::Rejected(reason) = a {
                                    tracing::warn!(%account, %reason, "Signal message rejected by the hub; skipped.");
                                }
                            }
                            break;
                        }
                        Err(DeliverError::Stopping) => return Ok(()),
                        Err(e) => {
                            tracing::warn!(%account, error = %e, "Cannot commit Signal messages; retrying.");
                            intake.hold(&conn, self.cfg.request_timeout, &account).await;
                            if !nap(Duration::from_secs(1), &mut shutdown).await {
                                return Ok(());
                            }
                        }
                    }
                }
                if intake.held {
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
            host.health(ReceiveHealth::Reconnecting { error });
            if !nap(backoff, &mut shutdown).await {
                return Ok(());
            }
        }
    }

    async fn translate(
        &self,
        conn: &Conn,
        host: &dyn Host,
        notes: &[Value],
        intake: &mut Intake,
        shutdown: &mut Shutdown,
    ) -> Option<Vec<switchboard_core::NewEvent>> {
        let own = self.own.lock().expect("own lock").clone();
        let mut out = Vec::new();
        for n in notes {
            let Some(mut d) = convert::envelope_draft(&self.cfg.account, &own, n) else {
                tracing::debug!(account = %self.cfg.account, "An envelope not bridged (receipt, typing, sync, ...).");
                continue;
            };
            // No name in the envelope: the contact's profile name, else the
            // number (what the envelope conversion left there).
            let a = &d.event.author;
            if a.display_name == a.remote_id || Some(&a.display_name) == a.username.as_ref() {
                let mut name = self.known_name(a);
                if name.is_none() {
                    self.load_contacts(conn).await;
                    name = self.known_name(&d.event.author);
                }
                if let Some(name) = name {
                    d.event.author.display_name = name;
                }
            }
            let mut fetched = Vec::new();
            for f in &d.files {
                let got = conn
                    .call(
                        "getAttachment",
                        json!({"id": f.id}),
                        self.cfg.request_timeout,
                    )
                    .await
                    .ok()
                    .and_then(|v| v.get("data").and_then(Value::as_str).map(str::to_owned))
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
                let Some(bytes) = got else {
                    tracing::warn!(account = %self.cfg.account, id = %f.id, "An attachment could not be fetched; the message says so.");
                    if let EventKind::Message { body, .. } = &mut d.event.kind {
                        if !body.text.is_empty() {
                            body.text.push('\n');
                        }
                        body.text.push_str(&format!(
                            "[file not bridged: {} could not be fetched from signal-cli]",
                            f.name
                        ));
                    }
                    continue;
                };
                let size = bytes.len() as u64;
                let content = loop {
                    match host.put_blob(&f.mime, bytes.clone()).await {
                        Ok(b) => break b,
                        Err(DeliverError::Stopping) => return None,
                        Err(_) => {
                            intake
                                .hold(conn, self.cfg.request_timeout, &self.cfg.account)
                                .await;
                            if !nap(Duration::from_secs(1), shutdown).await {
                                return None;
                            }
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
        Some(out)
    }

    fn known_name(&self, a: &switchboard_core::Author) -> Option<String> {
        let names = self.names.lock().expect("names lock");
        names
            .get(&a.remote_id)
            .or_else(|| a.username.as_ref().and_then(|u| names.get(u)))
            .cloned()
    }

    /// Reads the contacts' profile names (best effort).
    async fn load_contacts(&self, conn: &Conn) {
        {
            let mut read = self.names_read.lock().expect("names lock");
            if read.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return;
            }
            *read = Some(std::time::Instant::now());
        }
        let Ok(list) = conn
            .call("listContacts", json!({}), self.cfg.request_timeout)
            .await
        else {
            return;
        };
        let mut names = self.names.lock().expect("names lock");
        for c in list.as_array().into_iter().flatten() {
            let profile = c.get("profile");
            let given = profile
                .and_then(|p| p.get("givenName"))
                .and_then(Value::as_str);
            let family = profile
                .and_then(|p| p.get("familyName"))
                .and_then(Value::as_str);
            let name = match (given, family) {
                (Some(g), Some(f)) if !f.is_empty() => format!("{g} {f}"),
                (Some(g), _) if !g.is_empty() => g.to_owned(),
                _ => match c.get("name").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() => n.to_owned(),
                    _ => continue,
                },
            };
            for key in ["number", "uuid"] {
                if let Some(k) = c.get(key).and_then(Value::as_str) {
                    names.insert(k.to_owned(), name.clone());
                }
            }
        }
    }

    /// Attachments as RFC 2397 data URIs (the daemon may not share our
    /// file system).
    async fn data_uris(&self, attachments: &[Attachment]) -> Result<Vec<String>, SendError> {
        let host = self
            .host
            .lock()
            .expect("host lock")
            .clone()
            .ok_or_else(|| SendError::transient("the adapter is not running", None))?;
        let mut out = Vec::new();
        for a in attachments {
            let bytes = host
                .blob(&a.content)
                .await
                .map_err(|e| SendError::transient(e.to_string(), None))?
                .ok_or_else(|| {
                    SendError::permanent(format!("the file {} is no longer stored", a.name))
                })?;
            let name: String = a
                .name
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            out.push(format!(
                "data:{};filename={name};base64,{}",
                a.mime,
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ));
        }
        Ok(out)
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

impl SignalAdapter {
    /// One request; a captcha challenge also marks the account as needing
    /// an admin (shown by `switchboard status`) until a send succeeds.
    async fn call(
        &self,
        conn: &Conn,
        method: &str,
        params: Value,
        t: Duration,
    ) -> Result<Value, SendError> {
        let host = || self.host.lock().expect("host lock").clone();
        match conn.call(method, params, t).await {
            Ok(v) => {
                if self
                    .captcha
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    if let Some(h) = host() {
                        h.health(ReceiveHealth::Connected);
                    }
                }
                Ok(v)
            }
            Err(e) => {
                let captcha = matches!(&e, RpcError::Remote { data, .. } if data
                    .pointer("/response/results")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|r| r.get("token").is_some())));
                let err = classify(e);
                if captcha {
                    self.captcha
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    if let Some(h) = host() {
                        h.health(ReceiveHealth::NeedsAction {
                            what: err.message().to_owned(),
                        });
                    }
                    tracing::error!(account = %self.cfg.account, problem = %err.message(), "Signal needs a captcha solved.");
                }
                Err(err)
            }
        }
    }
}

/// What the outbox should do after a failed request.
fn classify(e: RpcError) -> SendError {
    let text = e.to_string();
    match e {
        RpcError::Remote { code, data, .. } => {
            let results: Vec<&Value> = data
                .get("response")
                .and_then(|r| r.get("results"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let retry_after = results
                .iter()
                .filter_map(|r| r.get("retryAfterSeconds").and_then(Value::as_u64))
                .max();
            if results.iter().any(|r| r.get("token").is_some()) {
                return SendError::account_down(
                    format!("{text}: Signal asks for a captcha; solve one at https://signalcaptchas.org/challenge/generate and submit it with `signal-cli submitRateLimitChallenge --challenge <token> --captcha <captcha>`"),
                    retry_after.map(Duration::from_secs),
                );
            }
            match code {
                // Without the daemon's hint (0.13.x gives none for a plain
                // rate limit), the outbox's doubling backoff spaces retries.
                -5 => SendError::rate_limited(text, retry_after.map(Duration::from_secs)),
                -3 | -32603 => SendError::transient(text, None),
                -4 => SendError::permanent(text),
                // Every recipient failed, for mixed reasons: retried, unless
                // each is one that retrying cannot fix (not on Signal, an
                // identity to trust first).
                -1 if !results.is_empty()
                    && !results.iter().all(|r| {
                        matches!(
                            r.get("type").and_then(Value::as_str),
                            Some("UNREGISTERED_FAILURE" | "IDENTITY_FAILURE")
                        )
                    }) =>
                {
                    SendError::transient(text, None)
                }
                _ => SendError::permanent(text),
            }
        }
        // The connection dropped under a request in flight: retried (the
        // receive loop reconnects); no connection at all is `conn()`'s
        // account-down.
        RpcError::Closed(_) => SendError::transient(text, None),
        RpcError::Timeout(_) => SendError::transient(text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::RetryKind;

    fn remote(code: i64, data: Value) -> RpcError {
        RpcError::Remote {
            code,
            message: "m".into(),
            data,
        }
    }

    #[test]
    fn failures_are_classified_from_the_daemons_answer() {
        let k = |e| classify(e).retry_kind();
        let rl = json!({"response": {"timestamp": 1, "results": [{"type": "RATE_LIMIT_FAILURE", "retryAfterSeconds": 42}]}});
        assert_eq!(
            k(remote(-5, rl)),
            RetryKind::Transient {
                retry_after: Some(Duration::from_secs(42))
            }
        );
        assert_eq!(
            k(remote(-5, Value::Null)),
            RetryKind::Transient { retry_after: None }
        );
        assert_eq!(
            k(remote(-3, Value::Null)),
            RetryKind::Transient { retry_after: None }
        );
        assert_eq!(k(remote(-4, Value::Null)), RetryKind::Permanent);
        assert_eq!(k(remote(-1, Value::Null)), RetryKind::Permanent);
        let mixed = json!({"response": {"results": [{"type": "NETWORK_FAILURE"}, {"type": "UNREGISTERED_FAILURE"}]}});
        assert_eq!(
            k(remote(-1, mixed)),
            RetryKind::Transient { retry_after: None }
        );
        let gone = json!({"response": {"results": [{"type": "UNREGISTERED_FAILURE"}]}});
        assert_eq!(k(remote(-1, gone)), RetryKind::Permanent);
        let captcha = json!({"response": {"results": [{"type": "RATE_LIMIT_FAILURE", "token": "t", "retryAfterSeconds": 5}]}});
        assert_eq!(
            k(remote(-5, captcha)),
            RetryKind::AccountDown {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(
            k(RpcError::Closed("x".into())),
            RetryKind::Transient { retry_after: None }
        );
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
    }
}
