//! Dead letters an admin can act on: list them, put them back in their
//! lane (requeue), or drop them. Also the per-destination queue figures
//! the admin page shows.
//!
//! # Where a requeued row goes
//! Rows of one lane (destination account and channel) are delivered in id
//! order. A requeued row keeps its place, its id unchanged, when nothing
//! after it in its lane has been delivered yet (no later row `sent`, none
//! partly sent): it then goes out before the rows still queued behind it,
//! as if it had never failed. Otherwise the lane has moved on, and
//! delivering it in its old place is impossible: it gets a new id at the
//! end of the lane, behind everything queued now. Either way it starts
//! again with no attempts and a fresh `outbox.max_age`, keeps its
//! idempotency key (a receiver that saw an earlier attempt deduplicates),
//! and keeps the pieces of a split message already delivered.
//!
//! The decision and the change are one [`Solo`] transaction of the store
//! writer. The outbox holds the lane while it runs (see
//! `crate::outbox::requeue`), so no send can slip in between, and a row
//! kept in place makes the lane go back to it before its next send.
//! (Delivered rows pruned by retention are no longer seen: a lane whose
//! later rows were delivered more than `retention.keep` ago counts as not
//! having moved on.)

use serde::Serialize;
use sqlx::Row;

use super::writer::exec::{stmt, Tx};
use tokio::sync::oneshot;

use super::writer::Solo;
use super::{now_ms, Store, StoreError, WriterHandle};

/// One dead letter as an admin sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The outbox row's id (what `requeue` and `drop` take).
    pub id: i64,
    /// The destination account.
    pub account: String,
    /// The destination channel.
    pub channel: String,
    /// The gateway that routed it.
    pub gateway: String,
    /// Why it will not be delivered.
    pub reason: String,
    /// The event's id.
    pub event: i64,
    /// What it is: `message`, `edit`, `reaction`, ...
    pub kind: String,
    /// The start of its text, when it has one.
    pub preview: String,
    /// Attempts made.
    pub attempts: i64,
    /// When it was queued (Unix ms).
    pub queued_ms: i64,
    /// When it died (Unix ms).
    pub died_ms: i64,
}

/// The queue of one destination channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LaneQueue {
    /// The destination account.
    pub account: String,
    /// The destination channel.
    pub channel: String,
    /// Rows waiting.
    pub pending: i64,
    /// When the oldest waiting row was queued (Unix ms).
    pub oldest_ms: i64,
    /// Why the last failed attempt failed, if one did.
    pub last_error: Option<String>,
}

/// Where a requeued row went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Its old place: before the rows still queued behind it.
    InPlace,
    /// The end of its lane, under a new id: the lane had delivered rows
    /// after it.
    AtEnd,
}

/// One requeued row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    /// Its id as a dead letter.
    pub id: i64,
    /// Its id now (the same when in place).
    pub new_id: i64,
    /// Where it went.
    pub placement: Placement,
}

/// The longest preview of a dead letter's text.
const PREVIEW_CHARS: usize = 80;

fn dead_letter(r: &sqlx::any::AnyRow) -> Result<DeadLetter, StoreError> {
    let event: i64 = r.try_get(4)?;
    let body: String = r.try_get(9)?;
    let (kind, preview) = match super::decode_event(event, &body) {
        Ok(e) => {
            let text = match &e.kind {
                switchboard_core::EventKind::Message { body, .. }
                | switchboard_core::EventKind::Edit { body, .. }
                | switchboard_core::EventKind::Notice { body } => body.text.clone(),
                switchboard_core::EventKind::Reaction { emoji, .. } => emoji.clone(),
                _ => String::new(),
            };
            (e.kind.name().to_owned(), text)
        }
        Err(_) => ("undecodable".to_owned(), String::new()),
    };
    let cut = preview.chars().count() > PREVIEW_CHARS;
    let mut preview: String = preview.chars().take(PREVIEW_CHARS).collect();
    if cut {
        preview.push('…');
    }
    Ok(DeadLetter {
        id: r.try_get(0)?,
        account: r.try_get(1)?,
        channel: r.try_get(2)?,
        gateway: r.try_get(3)?,
        event,
        reason: r
            .try_get::<Option<String>, _>(5)?
            .unwrap_or_else(|| "no reason recorded".into()),
        kind,
        preview,
        attempts: r.try_get(6)?,
        queued_ms: r.try_get(7)?,
        died_ms: r.try_get(8)?,
    })
}

const DEAD_COLUMNS: &str = "o.id, o.account, o.channel, o.gateway, o.event_id, o.last_error, \
     o.attempts, o.created_ms, o.updated_ms, e.body FROM outbox o JOIN events e ON e.id = o.event_id";

impl Store {
    /// Dead letters, oldest first, of one account or all; at most `limit`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn dead_letters(
        &self,
        account: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = match account {
            Some(a) => {
                sqlx::query(&format!(
                    "SELECT {DEAD_COLUMNS} WHERE o.state = 'dead' AND o.account = $1 \
                     ORDER BY o.id LIMIT $2"
                ))
                .bind(a)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DEAD_COLUMNS} WHERE o.state = 'dead' ORDER BY o.id LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(dead_letter).collect()
    }

    /// One dead letter.
    ///
    /// # Errors
    /// On database failure.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEAD_COLUMNS} WHERE o.state = 'dead' AND o.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(dead_letter).transpose()
    }

    /// Every destination channel with rows waiting: how many, and since
    /// when the oldest waits.
    ///
    /// # Errors
    /// On database failure.
    pub async fn lane_queues(&self) -> Result<Vec<LaneQueue>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.account, o.channel, COUNT(*), MIN(o.created_ms), \
               (SELECT o2.last_error FROM outbox o2 WHERE o2.account = o.account \
                  AND o2.channel = o.channel AND o2.state = 'pending' \
                  AND o2.last_error IS NOT NULL ORDER BY o2.updated_ms DESC LIMIT 1) \
             FROM outbox o WHERE o.state = 'pending' \
             GROUP BY o.account, o.channel ORDER BY o.account, o.channel",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LaneQueue {
                    account: r.try_get(0)?,
                    channel: r.try_get(1)?,
                    pending: r.try_get(2)?,
                    oldest_ms: r.try_get(3)?,
                    last_error: r.try_get(4)?,
                })
            })
            .collect()
    }
}

/// Requeues dead letters `ids` of one lane (`account`/`channel`), oldest
/// first, through the writer: each in place or at the end (see the module
/// docs). Ids that are not dead letters of that lane are skipped.
///
/// # Errors
/// When the store cannot commit it.
pub async fn requeue(
    writer: &WriterHandle,
    account: &str,
    channel: &str,
    ids: &[i64],
) -> Result<Vec<Requeued>, StoreError> {
    let (reply, rx) = oneshot::channel();
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    writer
        .solo(Box::new(RequeueLane {
            account: account.to_owned(),
            channel: channel.to_owned(),
            ids,
            done: Vec::new(),
            reply: Some(reply),
        }))
        .await?;
    rx.await.map_err(|_| StoreError::WriterGone)?
}

/// Deletes dead letters `ids` for good; returns how many there were.
///
/// # Errors
/// When the store cannot commit it.
pub async fn drop_dead(writer: &WriterHandle, ids: &[i64]) -> Result<u64, StoreError> {
    let (reply, rx) = oneshot::channel();
    writer
        .solo(Box::new(DropDead {
            ids: ids.to_vec(),
            dropped: 0,
            reply: Some(reply),
        }))
        .await?;
    rx.await.map_err(|_| StoreError::WriterGone)?
}

struct RequeueLane {
    account: String,
    channel: String,
    ids: Vec<i64>,
    done: Vec<Requeued>,
    reply: Option<oneshot::Sender<Result<Vec<Requeued>, StoreError>>>,
}

#[async_trait::async_trait]
impl Solo for RequeueLane {
    async fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        self.done.clear();
        let now = now_ms();
        for &id in &self.ids {
            let dead = stmt(
                "SELECT 1 FROM outbox WHERE id = $1 AND state = 'dead' AND account = $2 AND channel = $3",
            )
            .bind(id)
            .bind(&self.account)
            .bind(&self.channel)
            .fetch_optional(tx)
            .await?;
            if dead.is_none() {
                continue;
            }
            // Has the lane delivered anything after it (wholly or partly)?
            let moved_on = stmt(
                "SELECT 1 FROM outbox WHERE account = $1 AND channel = $2 AND id > $3 \
                 AND (state = 'sent' OR (state = 'pending' AND parts_sent > 0)) LIMIT 1",
            )
            .bind(&self.account)
            .bind(&self.channel)
            .bind(id)
            .fetch_optional(tx)
            .await?
            .is_some();
            if !moved_on {
                stmt(
                    "UPDATE outbox SET state = 'pending', attempts = 0, last_error = NULL, \
                     created_ms = $1, updated_ms = $1 WHERE id = $2",
                )
                .bind(now)
                .bind(id)
                .execute(tx)
                .await?;
                self.done.push(Requeued {
                    id,
                    new_id: id,
                    placement: Placement::InPlace,
                });
                continue;
            }
            let row = stmt(
                "SELECT event_id, gateway, parts_sent, idempotency_key FROM outbox WHERE id = $1",
            )
            .bind(id)
            .fetch_one(tx)
            .await?;
            let (event, gateway, parts, key): (i64, String, i64, String) = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            );
            stmt("DELETE FROM outbox WHERE id = $1")
                .bind(id)
                .execute(tx)
                .await?;
            let new_id: i64 = stmt(
                "INSERT INTO outbox (event_id, gateway, account, channel, state, attempts, \
                 parts_sent, idempotency_key, last_error, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, NULL, $7, $8) RETURNING id",
            )
            .bind(event)
            .bind(gateway)
            .bind(&self.account)
            .bind(&self.channel)
            .bind(parts)
            .bind(key)
            .bind(now)
            .bind(now)
            .fetch_one(tx)
            .await?
            .try_get(0)?;
            self.done.push(Requeued {
                id,
                new_id,
                placement: Placement::AtEnd,
            });
        }
        Ok(())
    }

    fn answer(mut self: Box<Self>, result: Result<(), StoreError>) {
        let done = std::mem::take(&mut self.done);
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result.map(|()| done));
        }
    }
}

struct DropDead {
    ids: Vec<i64>,
    dropped: u64,
    reply: Option<oneshot::Sender<Result<u64, StoreError>>>,
}

#[async_trait::async_trait]
impl Solo for DropDead {
    async fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        self.dropped = 0;
        for &id in &self.ids {
            self.dropped += stmt("DELETE FROM outbox WHERE id = $1 AND state = 'dead'")
                .bind(id)
                .execute(tx)
                .await?
                .rows_affected();
        }
        Ok(())
    }

    fn answer(mut self: Box<Self>, result: Result<(), StoreError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result.map(|()| self.dropped));
        }
    }
}
