//! One-time passes at start over events stored before a migration, for
//! what the migration could not fill in SQL.
//!
//! Migration 0003 added `blob_refs` (the blobs each event uses) and
//! `events.target_id` (the event an edit, delete, reaction or reply refers
//! to). Both come out of the event body, which is JSON: SQLite and
//! PostgreSQL spell JSON functions differently, and either would fail the
//! whole migration on one damaged body. So the migration only leaves a
//! marker row, and this pass decodes the bodies the way the hub does,
//! skipping any it cannot decode. It runs in `Store::open_with`, before the
//! writer starts and before any pruning, so retention never mistakes a
//! blob used by an old event for an orphan.
//!
//! The marker's value is the last event id done and is saved with each
//! batch, so a pass interrupted by a crash resumes where it stopped.

use sqlx::{AnyPool, Row};
use switchboard_core::NewEvent;

use super::{blobs_used, StoreError};

/// The marker row's name in `cursors` (account `switchboard`).
const MARKER: &str = "backfill_0003";

/// Events read per transaction.
const BATCH: i64 = 1000;

/// Fills `blob_refs` and `events.target_id` for events stored before
/// migration 0003, if that is still to do.
pub(super) async fn run(pool: &AnyPool) -> Result<(), StoreError> {
    let marker: Option<String> =
        sqlx::query_scalar("SELECT value FROM cursors WHERE account = 'switchboard' AND name = $1")
            .bind(MARKER)
            .fetch_optional(pool)
            .await?;
    let Some(marker) = marker else {
        return Ok(());
    };
    let mut after: i64 = marker.parse().unwrap_or(0);
    let started = std::time::Instant::now();
    let (mut events, mut refs, mut skipped) = (0_u64, 0_u64, 0_u64);
    loop {
        let rows = sqlx::query("SELECT id, body FROM events WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(BATCH)
            .fetch_all(pool)
            .await?;
        let Some(last) = rows.last() else { break };
        let last: i64 = last.try_get(0)?;
        let mut tx = pool.begin().await?;
        for row in &rows {
            let id: i64 = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            let Ok(event) = serde_json::from_str::<NewEvent>(&body) else {
                // Undecodable rows are skipped everywhere else too (the
                // feed skips them, the outbox dead-letters them).
                skipped += 1;
                continue;
            };
            for sha in blobs_used(&event) {
                sqlx::query(
                    "INSERT INTO blob_refs (sha256, event_id) VALUES ($1, $2) \
                     ON CONFLICT (sha256, event_id) DO NOTHING",
                )
                .bind(sha)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                refs += 1;
            }
            if let Some(target) = event.kind.target().and_then(|t| t.event_id()) {
                sqlx::query("UPDATE events SET target_id = $1 WHERE id = $2")
                    .bind(target.0)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            events += 1;
        }
        sqlx::query("UPDATE cursors SET value = $1 WHERE account = 'switchboard' AND name = $2")
            .bind(last.to_string())
            .bind(MARKER)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        after = last;
        if (rows.len() as i64) < BATCH {
            break;
        }
    }
    sqlx::query("DELETE FROM cursors WHERE account = 'switchboard' AND name = $1")
        .bind(MARKER)
        .execute(pool)
        .await?;
    if events > 0 || skipped > 0 {
        tracing::info!(
            events,
            blob_refs = refs,
            skipped,
            took = ?started.elapsed(),
            "Recorded which blobs and targets the events stored before this version use."
        );
    }
    Ok(())
}
