//! Webhook mode: Telegram POSTs one update per request and retries until
//! it gets a 2xx, so a 200 is answered only once the update is committed,
//! or kept.
//!
//! Two things differ from polling, where one answer holds many updates in
//! order, and both are handled here so the result is the same:
//! - An album is N requests, one per part, and Telegram sends the next
//!   only after the previous one was answered. Each part is answered once
//!   it is *kept*: held album parts are committed in the `webhook_albums`
//!   cursor (a restart loses none), and the album is committed as one
//!   message, in the same commit that forgets them, when the next update
//!   of its chat arrives or no part came for [`ALBUM_SETTLE`].
//! - telegram-bot-api delivers each chat's messages and edits one at a
//!   time, in order, but a chat's reactions from a queue of their own, and
//!   by default up to 40 requests at once: a reaction could overtake the
//!   message it is about. `setWebhook` asks for `max_connections = 1`, so
//!   every update is delivered after the ones before it were answered.
//!   Throughput is not the limit for a bridge bot: each answer takes a
//!   commit (milliseconds, plus a file's download).

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard_core::kit;
use switchboard_core::{
    Batch, ChannelId, Cursor, DeliverError, Host, IngressRequest, IngressResponse, RunError,
    Shutdown,
};

use super::receive::RIGHTS_RECHECK;
use super::{album_of, decode_updates, nap, TelegramAdapter, ALLOWED_UPDATES, CALL_TIMEOUT};
use crate::wire::Update;

/// The cursor holding album parts acknowledged but not yet committed.
const HELD_CURSOR: &str = "webhook_albums";
/// How long an album waits for another part before it is committed as it
/// is: Telegram sends the parts back to back, each after the previous one's
/// answer.
const ALBUM_SETTLE: Duration = Duration::from_secs(1);
/// How often held albums are looked at.
const SETTLE_TICK: Duration = Duration::from_millis(250);

/// Album parts acknowledged to Telegram and not yet committed, by chat:
/// at most one album per chat (its next update commits it).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct HeldAlbums {
    chats: BTreeMap<i64, HeldAlbum>,
    /// Read from the cursor already (this run). Telegram may POST as soon
    /// as the listener is up, before `run` started: whoever comes first
    /// reads what the last run kept, so nothing kept is overwritten.
    #[serde(skip)]
    loaded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldAlbum {
    /// Its `media_group_id`.
    group: String,
    /// Its parts as Telegram sent them, in order.
    updates: Vec<Value>,
    /// When the last part came (after a restart: the start).
    #[serde(skip, default = "Instant::now")]
    last: Instant,
}

/// The webhook receiver.
pub(super) struct Webhook {
    adapter: Weak<TelegramAdapter>,
    secret: String,
}

impl Webhook {
    pub(super) fn new(adapter: Weak<TelegramAdapter>, secret: String) -> Self {
        Self { adapter, secret }
    }
}

/// Equal, in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl switchboard_core::Ingress for Webhook {
    async fn handle(&self, host: &dyn Host, req: IngressRequest) -> IngressResponse {
        let given = req.header("x-telegram-bot-api-secret-token").unwrap_or("");
        if !same_secret(given.as_bytes(), self.secret.as_bytes()) {
            return IngressResponse::json(401, &json!({"error": "wrong or missing secret token"}));
        }
        if req.method != "POST" {
            return IngressResponse::json(405, &json!({"error": "Telegram POSTs updates"}));
        }
        let Some(adapter) = self.adapter.upgrade() else {
            return IngressResponse::json(503, &json!({"error": "shutting down"}));
        };
        let update: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                // Telegram would send it again forever: acknowledge it.
                tracing::warn!(account = %adapter.cfg.account, error = %e, "A webhook call that is not JSON; skipped.");
                return IngressResponse::json(200, &json!({}));
            }
        };
        match adapter.take_update(host, update).await {
            Ok(()) => IngressResponse::json(200, &json!({})),
            // Not kept: Telegram sends it again.
            Err(e) => IngressResponse::json(503, &json!({"error": e.to_string()})),
        }
    }
}

impl TelegramAdapter {
    /// Webhook mode: picks up the album parts kept at the last stop, points
    /// Telegram at `url` (retrying until it agrees), then commits albums
    /// that stopped growing until shutdown; the updates arrive through the
    /// ingress listener. The webhook stays set at shutdown, so Telegram
    /// keeps updates (for 24 h) while switchboard is away.
    pub(super) async fn run_webhook(
        &self,
        host: &dyn Host,
        url: &str,
        secret: &str,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let loaded = kit::until_stored("read the held album parts", &mut shutdown, || async {
            self.load_held(host, &mut *self.held.lock().await).await
        })
        .await;
        if loaded.is_none() {
            return Ok(());
        }
        let params = json!({
            "url": url,
            "secret_token": secret,
            "allowed_updates": ALLOWED_UPDATES,
            "drop_pending_updates": false,
            // One request at a time: see the module docs.
            "max_connections": 1,
        });
        let mut backoff = kit::Backoff::reconnect();
        loop {
            let r = tokio::select! {
                r = self.client.call::<Value>("setWebhook", &params, CALL_TIMEOUT) => r,
                () = &mut shutdown => return Ok(()),
            };
            match r {
                Ok(_) => break,
                Err(e) => {
                    let wait = self.report_poll_error(host, &e, backoff.fail());
                    if !nap(wait, &mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
        tracing::info!(account = %self.cfg.account, %url, "Telegram delivers updates to the webhook.");
        self.report(host);
        let mut rights_checked = Instant::now();
        loop {
            if !nap(SETTLE_TICK, &mut shutdown).await {
                return Ok(());
            }
            self.commit_settled(host).await;
            if rights_checked.elapsed() >= RIGHTS_RECHECK {
                if self.check_rights(&mut shutdown).await.is_none() {
                    return Ok(());
                }
                self.report(host);
                rights_checked = Instant::now();
            }
        }
    }

    /// One update from Telegram. An album part is kept with its album; any
    /// other update is committed, after the album its chat had kept (one
    /// commit). Once this returns `Ok`, Telegram may forget the update.
    ///
    /// # Errors
    /// The store could not take it: nothing changed, Telegram sends it
    /// again.
    async fn take_update(&self, host: &dyn Host, update: Value) -> Result<(), DeliverError> {
        let (decoded, _) = decode_updates(&self.cfg.account, vec![update.clone()], 0);
        let Some(d) = decoded.first() else {
            // No update_id: logged; nothing Telegram would send correctly.
            return Ok(());
        };
        let chat = d.update.as_ref().and_then(Update::chat_id);
        let mut held = self.held.lock().await;
        self.load_held(host, &mut held).await?;
        let before = held.clone();
        let mut commit = Vec::new();
        match (chat, album_of(d)) {
            (_, Some((chat, group))) => {
                if held.chats.get(&chat).is_some_and(|h| h.group != group) {
                    commit.extend(
                        held.chats
                            .remove(&chat)
                            .map(|h| h.updates)
                            .unwrap_or_default(),
                    );
                }
                let album = held.chats.entry(chat).or_insert_with(|| HeldAlbum {
                    group,
                    updates: Vec::new(),
                    last: Instant::now(),
                });
                // Telegram sends a part again when our answer was lost.
                if !album
                    .updates
                    .iter()
                    .any(|u| u.get("update_id") == update.get("update_id"))
                {
                    album.updates.push(update);
                }
                album.last = Instant::now();
            }
            (Some(chat), None) => {
                commit.extend(
                    held.chats
                        .remove(&chat)
                        .map(|h| h.updates)
                        .unwrap_or_default(),
                );
                commit.push(update);
            }
            (None, None) => commit.push(update),
        }
        let result = self.commit_with_held(host, commit, &held).await;
        if result.is_err() {
            *held = before;
        }
        result
    }

    /// Reads the album parts the last run kept, once per run.
    async fn load_held(&self, host: &dyn Host, held: &mut HeldAlbums) -> Result<(), DeliverError> {
        if held.loaded {
            return Ok(());
        }
        let kept = host.cursor(HELD_CURSOR).await?;
        if let Some(kept) = kept.filter(|v| !v.is_empty()) {
            match serde_json::from_str::<HeldAlbums>(&kept) {
                Ok(albums) => *held = albums,
                Err(e) => {
                    tracing::error!(account = %self.cfg.account, error = %e, "The held album parts cannot be read; they are lost.");
                }
            }
        }
        held.loaded = true;
        Ok(())
    }

    /// Commits the albums no part came for in [`ALBUM_SETTLE`].
    async fn commit_settled(&self, host: &dyn Host) {
        let mut held = self.held.lock().await;
        let settled: Vec<i64> = held
            .chats
            .iter()
            .filter(|(_, a)| a.last.elapsed() >= ALBUM_SETTLE)
            .map(|(chat, _)| *chat)
            .collect();
        if settled.is_empty() {
            return;
        }
        let before = held.clone();
        let commit: Vec<Value> = settled
            .iter()
            .filter_map(|chat| held.chats.remove(chat))
            .flat_map(|a| a.updates)
            .collect();
        if let Err(e) = self.commit_with_held(host, commit, &held).await {
            tracing::warn!(account = %self.cfg.account, error = %e, "Cannot commit a held album; retrying.");
            *held = before;
        }
    }

    /// Commits the events of `raw` (in order; an album's parts become one
    /// message) and the albums still held, in one commit.
    async fn commit_with_held(
        &self,
        host: &dyn Host,
        raw: Vec<Value>,
        held: &HeldAlbums,
    ) -> Result<(), DeliverError> {
        let (decoded, _) = decode_updates(&self.cfg.account, raw, 0);
        // The request's own work: nothing here waits for a shutdown.
        let mut forever: Shutdown = Box::pin(std::future::pending());
        let Some(events) = self.translate(host, &decoded, &mut forever).await else {
            return Err(DeliverError::Stopping);
        };
        let channels: Vec<ChannelId> = events.iter().map(|e| e.origin.channel.clone()).collect();
        let kept = serde_json::to_string(held).unwrap_or_default();
        let answers = host
            .deliver(Batch {
                events,
                cursor: Some(Cursor {
                    name: HELD_CURSOR.into(),
                    value: kept,
                }),
            })
            .await?;
        self.note_answers(answers, &channels);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_albums_survive_a_restart_as_json() {
        let mut held = HeldAlbums::default();
        held.chats.insert(
            -100,
            HeldAlbum {
                group: "g".into(),
                updates: vec![json!({"update_id": 1})],
                last: Instant::now(),
            },
        );
        let kept = serde_json::to_string(&held).unwrap();
        let back: HeldAlbums = serde_json::from_str(&kept).unwrap();
        assert_eq!(back.chats[&-100].updates, [json!({"update_id": 1})]);
        assert!(!back.loaded, "each run reads the cursor itself");
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd"));
    }
}
