//! One step of pruning, a transaction of its own: what is deleted and
//! what is kept is decided here, in SQL that is the same on both backends.
//! [`crate::store::retention`] says why and drives the steps.
//!
//! An events step looks at a *window* of [`WINDOW`] events by id after the
//! previous one, so a step touches a bounded number of rows however much
//! history there is, and events kept for a reason (an undelivered row) are
//! looked at once per pass, not once per step. Event ids grow with commit
//! time, so the first window holding an event younger than the cutoff is
//! the pass's last.

use super::exec::{stmt, Tx};

use crate::store::retention::Pruned;
use crate::store::StoreError;

/// Events looked at per step. Each may take a few outbox, feed and map
/// rows with it, so a step deletes a few thousand rows at most, and holds
/// the writer for milliseconds.
pub const WINDOW: i64 = 500;

/// Blobs deleted per step: each may be megabytes.
pub const BLOBS: i64 = 100;

/// What one pruning command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneStep {
    /// The window of events after `after`.
    Events {
        /// The last event id of the previous window (0 to start).
        after: i64,
        /// Events committed before this (unix ms) may go.
        cutoff_ms: i64,
        /// Dead letters that died before this may go.
        dead_cutoff_ms: i64,
    },
    /// Up to [`BLOBS`] blobs nothing needs any more, with their chunks,
    /// and the chunks of up to [`BLOBS`] uploads that never finished.
    Blobs {
        /// Blobs stored before this, and used by no event committed since,
        /// may go.
        cutoff_ms: i64,
        /// Chunks written before this that no blob points at belong to an
        /// upload that will not finish.
        unfinished_ms: i64,
    },
}

/// What a step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepDone {
    /// Rows deleted.
    pub pruned: Pruned,
    /// `None` when this pass has nothing more to look at; otherwise, for
    /// events, the `after` of the next window (blobs always start from the
    /// oldest again).
    pub next: Option<i64>,
}

/// Event `e` of the window `($1, $2]` may be deleted: committed before `$3`,
/// no outbox row left (pending, dead or recently sent), and not the target
/// of an edit, delete, reaction or reply that is still to be delivered
/// (its delivery looks the target up in the message map).
const DELETABLE: &str = "SELECT e.id FROM events e \
     WHERE e.id > $1 AND e.id <= $2 AND e.created_ms < $3 \
     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id) \
     AND NOT EXISTS (SELECT 1 FROM events x JOIN outbox o ON o.event_id = x.id \
                     WHERE x.target_id = e.id AND o.state <> 'sent')";

/// Runs one step.
pub(super) async fn step(tx: &mut Tx<'_>, step: PruneStep) -> Result<StepDone, StoreError> {
    match step {
        PruneStep::Events {
            after,
            cutoff_ms,
            dead_cutoff_ms,
        } => events(tx, after, cutoff_ms, dead_cutoff_ms).await,
        PruneStep::Blobs {
            cutoff_ms,
            unfinished_ms,
        } => blobs(tx, cutoff_ms, unfinished_ms).await,
    }
}

async fn events(
    tx: &mut Tx<'_>,
    after: i64,
    cutoff: i64,
    dead_cutoff: i64,
) -> Result<StepDone, StoreError> {
    let window = stmt(
        "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(MAX(created_ms), 0) \
         FROM (SELECT id, created_ms FROM events WHERE id > $1 ORDER BY id LIMIT $2) w",
    )
    .bind(after)
    .bind(WINDOW)
    .fetch_one(tx)
    .await?;
    let (count, end, newest): (i64, i64, i64) =
        (window.try_get(0)?, window.try_get(1)?, window.try_get(2)?);
    if count == 0 {
        return Ok(StepDone::default());
    }
    let old = "SELECT id FROM events WHERE id > $1 AND id <= $2 AND created_ms < $3";
    let w = (after, end, cutoff);
    // Delivered rows of old events, and dead letters that have been dead
    // long enough; pending rows are never touched.
    let outbox = stmt(&format!(
        "DELETE FROM outbox WHERE event_id IN ({old}) \
         AND ((state = 'sent' AND updated_ms < $3) OR (state = 'dead' AND updated_ms < $4))"
    ))
    .bind(after)
    .bind(end)
    .bind(cutoff)
    .bind(dead_cutoff)
    .execute(tx)
    .await?
    .rows_affected();
    // Feed rows go with age, except those of an event still pending
    // somewhere: its author may still edit or delete it, and fetch its
    // files, which is checked through its feed row. A cursor on a deleted
    // row still works: consumers read `seq > cursor`.
    let feed = in_window(
        tx,
        w,
        &format!(
            "DELETE FROM feed WHERE event_id IN ({old}) \
             AND NOT EXISTS (SELECT 1 FROM outbox o \
                             WHERE o.event_id = feed.event_id AND o.state = 'pending')"
        ),
    )
    .await?;
    // The map goes with its event, never before: a later edit or reply
    // needs it as long as the event is there.
    let message_parts = in_window(
        tx,
        w,
        &format!("DELETE FROM message_parts WHERE event_id IN ({DELETABLE})"),
    )
    .await?;
    let message_map = in_window(
        tx,
        w,
        &format!("DELETE FROM message_map WHERE event_id IN ({DELETABLE})"),
    )
    .await?;
    let blob_refs = in_window(
        tx,
        w,
        &format!("DELETE FROM blob_refs WHERE event_id IN ({DELETABLE})"),
    )
    .await?;
    let events = in_window(
        tx,
        w,
        &format!("DELETE FROM events WHERE id IN ({DELETABLE})"),
    )
    .await?;
    let pruned = Pruned {
        events,
        feed,
        outbox,
        message_map,
        message_parts,
        blob_refs,
        blobs: 0,
        blob_chunks: 0,
    };
    let last = count < WINDOW || newest >= cutoff;
    Ok(StepDone {
        pruned,
        next: (!last).then_some(end),
    })
}

/// Runs a delete whose `$1`, `$2` and `$3` are the window's bounds and the
/// cutoff; returns how many rows went.
async fn in_window(
    tx: &mut Tx<'_>,
    (after, end, cutoff): (i64, i64, i64),
    sql: &str,
) -> Result<u64, StoreError> {
    Ok(stmt(sql)
        .bind(after)
        .bind(end)
        .bind(cutoff)
        .execute(tx)
        .await?
        .rows_affected())
}

/// Deletes blobs stored before the cutoff that no event committed since
/// uses and no undelivered event needs, with their chunks. A blob just
/// stored for a message not committed yet is young, so it stays. Then the
/// chunks of uploads that never finished.
async fn blobs(tx: &mut Tx<'_>, cutoff: i64, unfinished: i64) -> Result<StepDone, StoreError> {
    let rows = stmt(
        "SELECT b.sha256, b.upload FROM blobs b \
           WHERE b.created_ms < $1 \
           AND NOT EXISTS (SELECT 1 FROM blob_refs r JOIN events e ON e.id = r.event_id \
               WHERE r.sha256 = b.sha256 AND (e.created_ms >= $2 \
                 OR EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id AND o.state <> 'sent'))) \
           ORDER BY b.created_ms LIMIT $3",
    )
    .bind(cutoff)
    .bind(cutoff)
    .bind(BLOBS)
    .fetch_all(tx)
    .await?;
    let mut pruned = Pruned::default();
    for row in &rows {
        let (sha, upload): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(upload) = upload {
            pruned.blob_chunks += stmt("DELETE FROM blob_chunks WHERE upload = $1")
                .bind(upload)
                .execute(tx)
                .await?
                .rows_affected();
        }
        pruned.blobs += stmt("DELETE FROM blobs WHERE sha256 = $1")
            .bind(sha)
            .execute(tx)
            .await?
            .rows_affected();
    }
    let abandoned = stmt(
        "SELECT DISTINCT c.upload FROM blob_chunks c WHERE c.created_ms < $1 \
           AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.upload = c.upload) LIMIT $2",
    )
    .bind(unfinished)
    .bind(BLOBS)
    .fetch_all(tx)
    .await?;
    for row in &abandoned {
        pruned.blob_chunks += stmt("DELETE FROM blob_chunks WHERE upload = $1")
            .bind(row.try_get::<String, _>(0)?)
            .execute(tx)
            .await?
            .rows_affected();
    }
    let more = rows.len() as i64 == BLOBS || abandoned.len() as i64 == BLOBS;
    Ok(StepDone {
        pruned,
        next: more.then_some(0),
    })
}
