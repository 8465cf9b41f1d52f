//! Keeping SQLite's write-ahead log bounded under any write rate.
//!
//! A background task ([`Store::spawn_checkpointer`]) copies WAL frames into
//! the database file several times a second, off the commit path, and
//! records how long the log is. That alone never lets the log start over:
//! SQLite resets the WAL only when a write begins after a checkpoint copied
//! *every* frame, and under continuous writes new frames always arrive
//! between the background checkpoint and the next commit. So once the log
//! is longer than [`SOFT_FRAMES`], the writer itself runs a checkpoint
//! between two of its transactions, when no frame can be added meanwhile:
//! it only has to copy what arrived since the background one, and the next
//! commit writes from the start of the file again. Past [`HARD_FRAMES`]
//! (readers kept frames pinned) it uses `RESTART`, which waits for them.
//!
//! [`Store::spawn_checkpointer`]: crate::store::Store::spawn_checkpointer

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::Any;

use crate::store::{Backend, Store, WalSize};

/// About 4 MiB of 4 KiB pages: the writer checkpoints past this.
pub const SOFT_FRAMES: i64 = 1000;
/// About 64 MiB: the writer waits for readers to let the log restart.
pub const HARD_FRAMES: i64 = 16_000;

/// The writer's side of the checkpoint scheme.
pub(super) struct Checkpoints {
    /// False for PostgreSQL.
    enabled: bool,
    /// The log length the background checkpointer last saw.
    size: Arc<WalSize>,
}

impl Checkpoints {
    pub(super) fn new(store: &Store) -> Self {
        Self {
            enabled: store.backend() == Backend::Sqlite,
            size: store.wal_size(),
        }
    }

    /// Called after each commit with the writer's connection.
    pub(super) async fn after_commit(&mut self, conn: Option<&mut PoolConnection<Any>>) {
        let (true, Some(conn)) = (self.enabled, conn) else {
            return;
        };
        let frames = self.size.frames.load(Ordering::Relaxed);
        if frames < SOFT_FRAMES {
            return;
        }
        let mode = if frames >= HARD_FRAMES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        let result: Result<(i64, i64, i64), _> =
            sqlx::query_as(&format!("PRAGMA wal_checkpoint({mode})"))
                .fetch_one(&mut **conn)
                .await;
        match result {
            // Every frame is in the database: the next commit restarts the
            // log from its beginning.
            Ok((_, log, done)) if log == done => self.size.frames.store(0, Ordering::Relaxed),
            Ok((_, log, _)) => self.size.frames.store(log, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, mode, "Writer checkpoint failed."),
        }
        self.size.writer_checkpoints.fetch_add(1, Ordering::Relaxed);
    }
}
