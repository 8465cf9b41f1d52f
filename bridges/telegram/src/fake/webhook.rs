//! Webhook delivery as the open-source server's `WebhookActor` does it:
//! while a webhook is set, every queued update is POSTed to its URL, one
//! update per request, its JSON as the body, with
//! `X-Telegram-Bot-Api-Secret-Token` when `setWebhook` named a secret. A 2xx
//! confirms the update; anything else, or no answer, leaves it queued for a
//! later attempt. Which update goes when is decided by the queue (`updates`):
//! one at a time per delivery queue (a chat's messages and edits, its
//! reactions, ...), different queues in parallel, at most `max_connections`
//! requests in flight.
//!
//! The URL's host is not reachable from a test, so requests go to the
//! address [`FakeTelegram::forward_webhook_to`](super::FakeTelegram::forward_webhook_to)
//! named, with the URL's path and query: what the reverse proxy in front of
//! a real deployment does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use super::state::{now_unix, Shared};

/// How long the server waits for a webhook's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to deliver, copied out of the state for one round.
struct Target {
    url: String,
    secret: Option<String>,
}

/// Delivers updates for as long as the fake runs (the task is aborted when
/// it stops, which aborts the requests in flight).
pub(crate) async fn run(shared: Arc<Shared>) {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_TIMEOUT)
        .build()
        .unwrap_or_default();
    let mut requests = JoinSet::new();
    loop {
        // Registered before looking, so a wake-up in between is not missed.
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = Instant::now();
        let (due, next, target) = {
            let mut st = shared.lock();
            let target = match (&st.webhook, st.webhook_target) {
                (Some(hook), Some(addr)) => Some((
                    Target {
                        url: forwarded(&hook.url, addr),
                        secret: hook.secret_token.clone(),
                    },
                    hook.max_connections,
                )),
                _ => None,
            };
            match target {
                Some((target, max)) => {
                    let room = max.saturating_sub(st.updates.webhook_in_flight());
                    let due = st.updates.webhook_due(now, room, now_unix());
                    let next = st.updates.webhook_next_due().filter(|at| *at > now);
                    (due, next, Some(target))
                }
                None => (Vec::new(), None, None),
            }
        };
        if let Some(target) = &target {
            for (id, update) in due {
                requests.spawn(deliver(
                    shared.clone(),
                    http.clone(),
                    target.url.clone(),
                    target.secret.clone(),
                    id,
                    update,
                ));
            }
        }
        let retry = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut notified => {}
            () = retry => {}
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
}

/// `https://host/path?q` as it arrives at `addr`: `http://addr/path?q`.
fn forwarded(url: &str, addr: std::net::SocketAddr) -> String {
    let path = reqwest::Url::parse(url).map_or_else(
        |_| "/".to_string(),
        |u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
    );
    format!("http://{addr}{path}")
}

/// One POST of one update; records the outcome and wakes the loop.
async fn deliver(
    shared: Arc<Shared>,
    http: reqwest::Client,
    url: String,
    secret: Option<String>,
    id: i64,
    update: Value,
) {
    let mut request = http
        .post(&url)
        .header("content-type", "application/json")
        .body(update.to_string());
    if let Some(secret) = &secret {
        request = request.header("x-telegram-bot-api-secret-token", secret);
    }
    let delivered = match request.send().await {
        Ok(response) => response.status().is_success(),
        Err(_) => false,
    };
    shared
        .lock()
        .updates
        .webhook_done(id, delivered, Instant::now());
    shared.wake.notify_waiters();
}
