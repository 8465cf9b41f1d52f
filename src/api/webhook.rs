//! Outbound webhooks: the bot API's push destinations.
//!
//! Each webhook is a channel (`webhook:<name>`) of its API account, so its
//! deliveries go through the outbox like any network's: one at a time and
//! in order per webhook, retried with backoff that honours `Retry-After`,
//! dead-lettered with the reason. Each POST carries the event's native JSON
//! plus `delivery_id`, signed with HMAC-SHA256 over the send time and the
//! exact body (`t=<unix>,v1=<hex>`).
//!
//! A webhook with `batch = N` takes a backlog up to N deliveries per POST:
//! the body is a JSON array of the same objects (an array of one when only
//! one waits), with `x-switchboard-batch: <count>`; one 2xx takes them all
//! (see [`Adapter::send_batch`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;
use switchboard_core::{
    AccountId, Adapter, Capabilities, ChannelId, Host, Outbound, Receipt, ReceiveHealth, RemoteId,
    RunError, SendError, Shutdown,
};

use super::json;
use crate::config::{ApiAccount, Webhook};

/// Header with `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// Header with the delivery id (stable across retries); on a batch, the
/// first delivery's.
pub const DELIVERY_HEADER: &str = "x-switchboard-delivery";
/// Header on every POST of a webhook with `batch` set: how many deliveries
/// the body's JSON array holds.
pub const BATCH_HEADER: &str = "x-switchboard-batch";

/// The push side of one API account.
pub struct WebhookAdapter {
    account: AccountId,
    /// Replaced whole on a reload; a std lock held only to clone one hook.
    hooks: std::sync::RwLock<HashMap<ChannelId, Arc<Webhook>>>,
    client: reqwest::Client,
}

impl WebhookAdapter {
    /// Builds the adapter for an API account's webhooks.
    ///
    /// # Panics
    /// If the HTTP client cannot be built (no TLS roots), which is a build
    /// problem, not a runtime one.
    #[must_use]
    pub fn new(account: &ApiAccount) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A redirected POST would arrive as a bodiless GET, or elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        Self {
            account: account.id.clone(),
            hooks: std::sync::RwLock::new(index(account)),
            client,
        }
    }

    /// Puts a reloaded configuration's webhooks in force.
    pub fn replace(&self, account: &ApiAccount) {
        *self.hooks.write().expect("hooks lock") = index(account);
    }
}

fn index(account: &ApiAccount) -> HashMap<ChannelId, Arc<Webhook>> {
    account
        .webhooks
        .iter()
        .map(|w| (w.channel(), w.clone()))
        .collect()
}

/// Signs `body` sent at `unix` seconds with `secret`: `t=<unix>,v1=<hex>`,
/// where the HMAC-SHA256 covers `<unix>.<body>`. The time is inside the
/// signed material, so a captured delivery cannot be replayed later: a
/// receiver refuses a `t` too far from its clock (the README shows how).
#[must_use]
pub fn sign(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Reads `Retry-After`: seconds, or an HTTP date (RFC 9110), as a wait
/// from now.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    parse_retry_after(
        resp.headers()
            .get(reqwest::header::RETRY_AFTER)?
            .to_str()
            .ok()?,
    )
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// An HTTP client error with its causes, without the URL (which may carry
/// a secret in its query string).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Adapter for WebhookAdapter {
    fn account(&self) -> &AccountId {
        &self.account
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::everything()
    }

    async fn run(self: Arc<Self>, host: Arc<dyn Host>, shutdown: Shutdown) -> Result<(), RunError> {
        // Webhooks only push; bots post through the HTTP routes, which are
        // up as long as the process is.
        host.health(ReceiveHealth::Connected);
        shutdown.await;
        Ok(())
    }

    async fn send(&self, _host: &dyn Host, op: &Outbound, key: &str) -> Result<Receipt, SendError> {
        let hook = self.hook(&op.channel)?;
        let mut receipts = self.post(&hook, &[(op, key)]).await?;
        receipts
            .pop()
            .ok_or_else(|| SendError::permanent("no receipt for a delivery"))
    }

    fn batch_limit(&self, channel: &ChannelId) -> usize {
        self.hooks
            .read()
            .expect("hooks lock")
            .get(channel)
            .and_then(|h| h.batch)
            .unwrap_or(1)
    }

    async fn send_batch(
        &self,
        _host: &dyn Host,
        ops: &[(Outbound, String)],
    ) -> Result<Vec<Receipt>, SendError> {
        let Some((first, _)) = ops.first() else {
            return Ok(Vec::new());
        };
        let hook = self.hook(&first.channel)?;
        let ops: Vec<(&Outbound, &str)> = ops.iter().map(|(op, k)| (op, k.as_str())).collect();
        self.post(&hook, &ops).await
    }
}

impl WebhookAdapter {
    /// The webhook in force for `channel`.
    fn hook(&self, channel: &ChannelId) -> Result<Arc<Webhook>, SendError> {
        self.hooks
            .read()
            .expect("hooks lock")
            .get(channel)
            .cloned()
            .ok_or_else(|| SendError::permanent(format!("no webhook for channel {channel}")))
    }

    /// One signed POST of `ops` (with their delivery ids): an object for
    /// one delivery; with `batch` set, always an array (of one or more), so
    /// a receiver that turned batching on needs one parser. All or
    /// nothing: a 2xx takes every delivery, anything else none.
    async fn post(
        &self,
        hook: &Webhook,
        ops: &[(&Outbound, &str)],
    ) -> Result<Vec<Receipt>, SendError> {
        let Some((_, first_key)) = ops.first() else {
            return Ok(Vec::new());
        };
        let mut items: Vec<serde_json::Value> = ops.iter().map(|(op, key)| item(op, key)).collect();
        let body = match (hook.batch, items.len()) {
            (None, 1) => items.pop().unwrap_or_default(),
            (None, n) => {
                return Err(SendError::permanent(format!(
                    "webhook {} takes one delivery per POST, not {n}",
                    hook.name
                )))
            }
            (Some(_), _) => serde_json::Value::Array(items),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| SendError::permanent(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign(hook.secret.expose().as_bytes(), now, &bytes);
        let mut request = self
            .client
            .post(hook.url.clone())
            .timeout(hook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(DELIVERY_HEADER, *first_key);
        if hook.batch.is_some() {
            request = request.header(BATCH_HEADER, ops.len());
        }
        let result = request.body(bytes).send().await;
        let resp = match result {
            Ok(r) => r,
            // Refused, reset, timed out: this webhook is down, not the
            // account; retry this lane only.
            Err(e) => {
                return Err(SendError::transient(
                    format!("webhook {}: {}", hook.name, describe(e)),
                    None,
                ))
            }
        };
        let status = resp.status();
        if status.is_success() {
            return ops.iter().map(|(op, key)| receipt(op, key)).collect();
        }
        if status.is_redirection() {
            return Err(SendError::permanent(format!(
                "webhook {} answered {status} (a redirect); configure the final URL",
                hook.name
            )));
        }
        let ra = retry_after(&resp);
        let msg = format!("webhook {} answered {status}", hook.name);
        if status == StatusCode::TOO_MANY_REQUESTS {
            Err(SendError::rate_limited(msg, ra))
        } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
            // A 503 with Retry-After is a receiver that is down for a
            // while: an outage, told as one.
            Err(SendError::transient(msg, ra))
        } else {
            Err(SendError::permanent(msg))
        }
    }
}

/// One delivery's JSON: the event's native JSON plus its `delivery_id`.
fn item(op: &Outbound, key: &str) -> serde_json::Value {
    let mut body = json::native(&op.event, &op.gateway, None);
    body["delivery_id"] = serde_json::Value::String(key.to_owned());
    // The delivery id this webhook got for the referenced message (from
    // the message map), so a receiver can apply an edit or reply to what
    // it stored.
    if let Some(t) = &op.target {
        body["target_delivery_id"] = serde_json::Value::String(t.first().to_string());
    }
    body
}

/// What a taken delivery leaves in the message map: its delivery id,
/// which is what a receiver knows a message by; only what creates a
/// message is remembered.
fn receipt(op: &Outbound, key: &str) -> Result<Receipt, SendError> {
    if !crate::store::writer::creates_message(&op.event.kind) {
        return Ok(Receipt::none());
    }
    RemoteId::new(key)
        .map(Receipt::one)
        .map_err(|e| SendError::permanent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
        let date = httpdate::fmt_http_date(in_a_minute);
        let wait = parse_retry_after(&date).unwrap();
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn signature_is_hmac_sha256_over_time_and_body() {
        // Known answer, computed independently (Python's hmac module) for
        // the key "Jefe" and the signed material "1700000000.{}".
        assert_eq!(
            sign(b"Jefe", 1_700_000_000, b"{}"),
            "t=1700000000,v1=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
    }
}
