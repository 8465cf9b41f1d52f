//! The single writer: every write to the store queues here.
//!
//! One task owns the write connection. It takes whatever commands queued up
//! while the previous transaction committed and commits them together (group
//! commit), so a burst of posts costs one fsync, not one each. Because only
//! this task inserts feed rows, feed sequence numbers appear in commit order
//! and a consumer reading `seq > cursor` can never skip a row that commits
//! later with a smaller number.
//!
//! After each commit the writer calls the hub's [`CommitSink`] in batch
//! order, which publishes the new feed rows to live consumers and wakes the
//! outbox lanes of the new rows.
//!
//! # Failures
//! Nothing is answered `Ok` unless its transaction committed. A connection
//! whose transaction failed is closed, never returned to the pool: after a
//! failed COMMIT its state (and sqlx's idea of its transaction depth) can
//! no longer be trusted, and reusing it once turned later commits into
//! savepoint releases inside a transaction that never committed.
//!
//! When the database is unavailable (unreachable, disk full, locked), the
//! whole batch fails at once and the writer goes *down*: until a probe in
//! the background gets a working connection, every command is answered
//! [`StoreError::Unavailable`] straight away, so API requests get a quick
//! 503 instead of queueing behind connection timeouts. A command the
//! database rejects for itself (a constraint) is isolated by retrying the
//! batch's commands one by one.
//!
//! Pruning steps ([`WriteCmd::Prune`]) commit in a transaction of their own
//! after the batch they arrived with, so no acknowledgement waits for a
//! delete, and the WAL checkpoints between batches cover them too.
//!
//! # Layout
//! - this file: the commands, the handle, the task and its failure modes.
//! - [`sql`]: what each command does in the transaction, with multi-row
//!   statements per batch.
//! - [`prune`]: one step of retention's deletes.
//! - [`exec`]: what the statements run on: the writer's own SQLite
//!   connection, in the writer's own thread, or a sqlx connection.
//!
//! SQLite's checkpoints between batches (so the WAL stays bounded) are
//! `store::sqlite`'s; what a cluster adds to a transaction (fences, the
//! feed's ordering lock, notifications) is `store::postgres`'s.

pub mod exec;
pub mod prune;
mod sql;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::Any;
use switchboard_core::{AccountId, ChannelId, Delivered, EventId, GatewayName, NewEvent, RemoteId};
use tokio::sync::{mpsc, oneshot};

use exec::Tx;
pub use prune::{PruneStep, StepDone};
pub use sql::creates_message;

use super::postgres::Fence;
use super::{FeedItem, Store, StoreError};

/// How many commands one transaction takes at most.
const MAX_BATCH: usize = 512;

/// One destination of a new event.
#[derive(Debug, Clone)]
pub struct Dest {
    /// The gateway routing it there.
    pub gateway: GatewayName,
    /// The destination account.
    pub account: AccountId,
    /// The destination channel.
    pub channel: ChannelId,
}

/// A new event with its routing, computed by the router before commit.
#[derive(Debug, Clone)]
pub struct IngestItem {
    /// The event.
    pub event: NewEvent,
    /// `<account>/<token>` when a bot API token posted it.
    pub origin_token: Option<String>,
    /// Outbox rows to create.
    pub dests: Vec<Dest>,
    /// Gateways whose API feed gets it.
    pub feed: Vec<GatewayName>,
    /// Drop the event if the hub itself sent this remote id (loop guard).
    pub check_echo: bool,
}

/// Events committed together, with the network cursor they cover.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    /// The events.
    pub items: Vec<IngestItem>,
    /// The account's cursor after them, saved in the same commit.
    pub cursor: Option<(AccountId, switchboard_core::Cursor)>,
    /// Key-value changes that must commit with the events or not at all
    /// (an outage notice and the outage it records: one without the
    /// other would repeat or lose a notice after a crash).
    pub state: Vec<StateChange>,
}

/// A change to one key of an account's key-value space (`adapter_state`),
/// the space adapters keep their own state in through `Host::set_state`;
/// the hub's keys there start with `switchboard.` so they never meet an
/// adapter's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Whose space: for an outage, the destination that was out.
    pub account: AccountId,
    /// The key in it, e.g. `switchboard.outage/<channel>`.
    pub key: String,
    /// The new value; `None` removes the key.
    pub value: Option<String>,
}

/// What committing an [`IngestItem`] did.
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    /// New, duplicate or ignored.
    pub delivered: Delivered,
    /// Feed rows created.
    pub feed: Vec<FeedItem>,
    /// Destinations that got a new outbox row.
    pub lanes: Vec<(AccountId, ChannelId)>,
}

/// What happened to one outbox row.
#[derive(Debug, Clone)]
pub enum RowUpdate {
    /// The network accepted it. `maps` are the ids to remember for later
    /// edits, deletes and replies (none for ops that create nothing).
    Sent {
        /// The ids the destination gave.
        maps: Vec<MapEntry>,
    },
    /// Some pieces of a split message were accepted.
    Progress {
        /// How many.
        parts_sent: i64,
        /// The ids of the pieces sent so far, remembered as soon as they
        /// exist.
        maps: Vec<MapEntry>,
    },
    /// The attempt failed; it will be retried.
    Retry {
        /// Attempts so far.
        attempts: i64,
        /// Why it failed.
        error: String,
    },
    /// It will never be delivered.
    Dead {
        /// Why.
        reason: String,
    },
}

/// Event id -> the id one destination gave it.
#[derive(Debug, Clone)]
pub struct MapEntry {
    /// The event delivered.
    pub event_id: EventId,
    /// The destination account.
    pub account: AccountId,
    /// The destination channel.
    pub channel: ChannelId,
    /// Which part of the event this id is (0 for the first).
    pub part: i64,
    /// The destination's id for that part.
    pub remote_id: RemoteId,
}

/// A command for the writer.
pub enum WriteCmd {
    /// Commit new events with their feed and outbox rows, and the network
    /// cursor they take their account to, all in one transaction.
    Ingest(
        Box<IngestBatch>,
        oneshot::Sender<Result<Vec<IngestOutcome>, StoreError>>,
    ),
    /// Set a value in an account's key-value space.
    State {
        /// The account.
        account: AccountId,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Answer.
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Record the outcomes of sends (one row, or every row of a batch a
    /// destination took at once), committed together.
    Rows(
        Vec<(i64, RowUpdate)>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    /// Store attachment bytes.
    Blob {
        /// Hex SHA-256.
        sha256: String,
        /// MIME type.
        mime: String,
        /// The bytes.
        data: Vec<u8>,
        /// Answer.
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Store a piece of a large blob (see [`crate::store::blobs`]).
    BlobPart(BlobPart, oneshot::Sender<Result<(), StoreError>>),
    /// Move a consumer's cursor.
    Cursor {
        /// Answer, when the caller waits for the commit.
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
        /// `<account>/<token>`.
        token: String,
        /// Consumer name.
        consumer: String,
        /// New value.
        seq: i64,
    },
    /// Delete one step of old history (see [`crate::store::retention`]),
    /// in a transaction of its own.
    Prune(PruneStep, oneshot::Sender<Result<StepDone, StoreError>>),
    /// A change that decides from what it reads, in a transaction of its
    /// own, answered in its own type (an admin's requeue or drop of dead
    /// letters, see [`crate::store::dead_letters`]).
    Solo(Box<dyn Solo>),
}

/// A [`WriteCmd::Solo`] change: `apply` runs inside its own transaction
/// (called again on a fresh one only if the writer retries), then `answer`
/// gets the commit's result.
#[async_trait::async_trait]
pub trait Solo: Send + Sync {
    /// Does the change.
    ///
    /// # Errors
    /// The database's; the transaction is rolled back.
    async fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError>;

    /// Answers the caller: `Ok` once committed.
    fn answer(self: Box<Self>, result: Result<(), StoreError>);
}

/// A step of a large blob's upload (see [`crate::store::blobs`]).
#[derive(Debug)]
pub enum BlobPart {
    /// Chunk `seq` of an upload.
    Chunk {
        /// The upload's id.
        upload: String,
        /// From 0 on.
        seq: i64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The upload is complete: check that its chunks are all there and
    /// write the blob's row (or keep the blob stored before with the same
    /// bytes, and delete the new chunks).
    Finish {
        /// The upload's id.
        upload: String,
        /// Hex SHA-256 of the whole.
        sha256: String,
        /// MIME type.
        mime: String,
        /// Bytes in all.
        size: u64,
        /// Chunks written.
        chunks: i64,
    },
    /// The upload will not finish: delete its chunks.
    Abort {
        /// The upload's id.
        upload: String,
    },
}

/// Called after each commit, in batch order.
pub trait CommitSink: Send + Sync {
    /// A batch committed with these ingest outcomes.
    fn committed(&self, outcomes: &[IngestOutcome]);

    /// A transaction of `commands` commands took `elapsed` (for metrics).
    fn batch(&self, commands: usize, elapsed: std::time::Duration);

    /// In a cluster: the lease this instance holds `account`'s receive side
    /// with, which a batch moving the account's cursor must still hold
    /// when it commits; `None` when it holds none (the batch is refused).
    /// Asked only when the store is one of a cluster.
    fn fence(&self, account: &AccountId) -> Option<crate::store::postgres::Fence> {
        let _ = account;
        None
    }
}

/// The sending side of the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteCmd>,
}

impl WriterHandle {
    /// Commits an event; returns after the commit.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn ingest(&self, item: IngestItem) -> Result<IngestOutcome, StoreError> {
        let batch = IngestBatch {
            items: vec![item],
            ..IngestBatch::default()
        };
        let mut outcomes = self.ingest_batch(batch).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no outcome for an ingest".into()))
    }

    /// Commits events and a cursor in one transaction; returns after the
    /// commit, with one outcome per event.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn ingest_batch(&self, batch: IngestBatch) -> Result<Vec<IngestOutcome>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteCmd::Ingest(Box::new(batch), tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Sets a value in an account's key-value space; returns after the
    /// commit.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn state(
        &self,
        account: AccountId,
        key: String,
        value: String,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteCmd::State {
            account,
            key,
            value,
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records a send outcome; returns after the commit.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn row(&self, id: i64, update: RowUpdate) -> Result<(), StoreError> {
        self.rows(vec![(id, update)]).await
    }

    /// Records the outcomes of several sends in one command, so they commit
    /// in the same transaction (a batch's rows marked sent together);
    /// returns after the commit.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn rows(&self, updates: Vec<(i64, RowUpdate)>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteCmd::Rows(updates, tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Stores a blob; returns after the commit.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn blob(
        &self,
        sha256: String,
        mime: String,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteCmd::Blob {
            sha256,
            mime,
            data,
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Stores a piece of a large blob; returns after the commit.
    ///
    /// # Errors
    /// When the transaction failed (a finish whose chunks are not all
    /// there is refused) or the writer stopped.
    pub async fn blob_part(&self, part: BlobPart) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteCmd::BlobPart(part, tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Moves a consumer cursor; waits for the commit only when `wait`.
    /// A lost cursor update only means a consumer sees a few rows again.
    pub async fn cursor(&self, token: String, consumer: String, seq: i64, wait: bool) {
        let (reply, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let _ = self
            .tx
            .send(WriteCmd::Cursor {
                reply,
                token,
                consumer,
                seq,
            })
            .await;
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }

    /// Runs a [`Solo`] change; its answer comes through its own channel.
    ///
    /// # Errors
    /// When the writer stopped (the change was not run).
    pub async fn solo(&self, change: Box<dyn Solo>) -> Result<(), StoreError> {
        self.send(WriteCmd::Solo(change)).await
    }

    /// Runs one pruning step; returns after its commit.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn prune(&self, step: PruneStep) -> Result<StepDone, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteCmd::Prune(step, tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn send(&self, cmd: WriteCmd) -> Result<(), StoreError> {
        self.tx.send(cmd).await.map_err(|_| StoreError::WriterGone)
    }
}

/// Starts the writer. It stops when every [`WriterHandle`] is dropped,
/// after committing what was queued.
pub fn spawn(
    store: Store,
    sink: Arc<dyn CommitSink>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    // Bounded so a stalled database pushes back on producers instead of
    // growing memory; 4096 covers many group commits' worth of work.
    let (tx, mut rx) = mpsc::channel::<WriteCmd>(4096);
    let own_thread = store.own_writer().is_some();
    // Closed when the caller gives up on the writer (aborts the handle
    // returned below): a writer on its own thread stops after the batch
    // in hand, as a task would stop at once.
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let work = async move {
        let mut conn = WriteConn {
            wal: crate::store::sqlite::Checkpoints::new(&store),
            store,
            conn: None,
            in_tx: false,
            health: Health::Up,
            recovered_at: None,
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => n,
                _ = &mut stop_rx => 0,
            };
            if received == 0 {
                break;
            }
            let mut cmds = std::mem::take(&mut batch);
            let prunes = take_prunes(&mut cmds);
            let solos = take_solos(&mut cmds);
            if !cmds.is_empty() {
                run_batch(&mut conn, sink.as_ref(), cmds).await;
            }
            for (step, reply) in prunes {
                let _ = reply.send(conn.prune(step).await);
            }
            for change in solos {
                conn.solo(change).await;
            }
        }
    };
    if !own_thread {
        let task = tokio::spawn(async move {
            let _stop = stop_tx;
            work.await;
        });
        return (WriterHandle { tx }, task);
    }
    // With its own SQLite connection the writer calls SQLite directly,
    // which blocks (an fsync, a busy database): on a thread of its own, not
    // on the runtime's workers.
    let thread = std::thread::Builder::new()
        .name("sb-writer".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    rt.block_on(work);
                    // A probe still opening a locked database is not
                    // waited for.
                    rt.shutdown_background();
                }
                Err(e) => {
                    tracing::error!(error = %e, "The store writer cannot start its runtime.");
                }
            }
        });
    let task = tokio::spawn(async move {
        let _stop = stop_tx;
        match thread {
            // A panic on the writer's thread is the handle's, as a task's
            // would be.
            Ok(thread) => {
                if let Ok(Err(panic)) = tokio::task::spawn_blocking(move || thread.join()).await {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(e) => tracing::error!(error = %e, "The store writer's thread cannot start."),
        }
    });
    (WriterHandle { tx }, task)
}

/// Takes the pruning steps out of a batch, in order.
fn take_prunes(
    cmds: &mut Vec<WriteCmd>,
) -> Vec<(PruneStep, oneshot::Sender<Result<StepDone, StoreError>>)> {
    if !cmds.iter().any(|c| matches!(c, WriteCmd::Prune(..))) {
        return Vec::new();
    }
    let mut prunes = Vec::new();
    let mut rest = Vec::with_capacity(cmds.len());
    for cmd in cmds.drain(..) {
        match cmd {
            WriteCmd::Prune(step, reply) => prunes.push((step, reply)),
            other => rest.push(other),
        }
    }
    *cmds = rest;
    prunes
}

/// Takes the [`Solo`] changes out of a batch, in order.
fn take_solos(cmds: &mut Vec<WriteCmd>) -> Vec<Box<dyn Solo>> {
    if !cmds.iter().any(|c| matches!(c, WriteCmd::Solo(..))) {
        return Vec::new();
    }
    let mut solos = Vec::new();
    let mut rest = Vec::with_capacity(cmds.len());
    for cmd in cmds.drain(..) {
        match cmd {
            WriteCmd::Solo(s) => solos.push(s),
            other => rest.push(other),
        }
    }
    *cmds = rest;
    solos
}

enum Reply {
    Ingest(
        oneshot::Sender<Result<Vec<IngestOutcome>, StoreError>>,
        Vec<IngestOutcome>,
    ),
    Unit(oneshot::Sender<Result<(), StoreError>>),
    None,
}

/// Whether the database takes writes.
enum Health {
    Up,
    /// Down since `since` with `error`; `probe` is trying to connect again.
    Down {
        error: String,
        since: Instant,
        attempt: u32,
        probe: tokio::task::JoinHandle<Result<Conn, StoreError>>,
    },
}

/// The writer's connection.
enum Conn {
    /// From the pool: PostgreSQL, or SQLite in memory.
    Pool(PoolConnection<Any>),
    /// Its own connection to a SQLite file (see [`exec`]).
    Lite(rusqlite::Connection),
}

impl Conn {
    /// The writer's own for a SQLite file, else one from the pool.
    async fn open(store: &Store) -> Result<Self, StoreError> {
        match store.own_writer() {
            Some(own) => Ok(Self::Lite(own.open()?)),
            None => Ok(Self::Pool(store.pool().acquire().await?)),
        }
    }

    fn tx(&mut self) -> Tx<'_> {
        match self {
            Self::Pool(c) => Tx::Any(c),
            Self::Lite(c) => Tx::Lite(c),
        }
    }

    /// Never reused after a failed transaction: a pooled one is closed
    /// detached (the pool cannot hand it out again), our own is closed.
    fn discard(self) {
        if let Self::Pool(c) = self {
            drop(c.detach());
        }
    }
}

/// The writer's own connection, kept across batches: with SQLite a
/// connection that did the last write keeps its page cache valid, where a
/// pooled one would re-read pages another connection changed.
struct WriteConn {
    store: Store,
    conn: Option<Conn>,
    /// Between BEGIN and its end: if the writer is dropped then (a panic,
    /// an abort), a pooled connection must not go back to the pool inside
    /// the transaction (see the `Drop`).
    in_tx: bool,
    health: Health,
    /// When the database last came back and after how many probes: a
    /// database that fails again soon (a disk still nearly full) keeps its
    /// probe backoff and is not reported as a new outage.
    recovered_at: Option<(Instant, u32)>,
    wal: crate::store::sqlite::Checkpoints,
}

impl Drop for WriteConn {
    fn drop(&mut self) {
        if self.in_tx {
            if let Some(conn) = self.conn.take() {
                conn.discard();
            }
        }
    }
}

/// First wait before probing a database that went down; doubles per failed
/// probe up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(200);
const PROBE_MAX: Duration = Duration::from_secs(5);

impl WriteConn {
    /// Commits `batch` in one transaction.
    ///
    /// The commands at `fences` move an account's cursor in a cluster: they
    /// commit only while this instance still holds the account's lease,
    /// checked first in the same transaction. When one does not, nothing
    /// commits and their indexes come back as `Ok(Err(..))`.
    async fn commit(
        &mut self,
        batch: &[WriteCmd],
        fences: &[(usize, Option<Fence>)],
    ) -> Result<Result<Vec<Option<Vec<IngestOutcome>>>, Vec<usize>>, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.store).await?);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let cluster = self.store.cluster_instance();
        // The idle WAL truncation waits for this transaction (see
        // `sqlite::truncate_wal`).
        let _turn = self.wal.turn().await;
        self.in_tx = true;
        let result = async {
            let mut tx = conn.tx();
            tx.run("BEGIN").await?;
            let refused = fenced(&mut tx, fences).await?;
            if !refused.is_empty() {
                tx.run("ROLLBACK").await?;
                return Ok(Err(refused));
            }
            let outcomes =
                sql::apply_all(&mut tx, batch, self.store.database_id(), cluster).await?;
            tx.run("COMMIT").await?;
            Ok::<_, StoreError>(Ok(outcomes))
        }
        .await;
        self.in_tx = false;
        if result.is_err() {
            // Never reuse a connection whose transaction failed (it may
            // still be in it): start the next batch on a fresh one.
            if let Some(conn) = self.conn.take() {
                conn.discard();
            }
        }
        result
    }

    /// Runs one pruning step in a transaction of its own. A failure counts
    /// as the database's like a batch's does.
    async fn prune(&mut self, step: PruneStep) -> Result<StepDone, StoreError> {
        if let Some(error) = self.recovered() {
            return Err(StoreError::Unavailable(error));
        }
        self.in_tx = true;
        let result = async {
            if self.conn.is_none() {
                self.conn = Some(Conn::open(&self.store).await?);
            }
            let _turn = self.wal.turn().await;
            let mut tx = self.conn.as_mut().expect("opened above").tx();
            tx.run("BEGIN").await?;
            let done = prune::step(&mut tx, step).await?;
            tx.run("COMMIT").await?;
            Ok::<_, StoreError>(done)
        }
        .await;
        self.in_tx = false;
        match &result {
            Ok(_) => {
                self.wal
                    .after_commit(self.conn.as_mut().map(Conn::tx))
                    .await
            }
            Err(e) => {
                // As in `commit`: never reuse the connection.
                if let Some(conn) = self.conn.take() {
                    conn.discard();
                }
                if e.is_unavailable() {
                    self.down(e);
                } else {
                    tracing::warn!(error = %e, "Pruning step refused.");
                }
            }
        }
        result
    }

    /// Runs a [`Solo`] change in a transaction of its own, like a pruning
    /// step, and answers it.
    async fn solo(&mut self, mut change: Box<dyn Solo>) {
        if let Some(error) = self.recovered() {
            change.answer(Err(StoreError::Unavailable(error)));
            return;
        }
        self.in_tx = true;
        let result = async {
            if self.conn.is_none() {
                self.conn = Some(Conn::open(&self.store).await?);
            }
            let _turn = self.wal.turn().await;
            let mut tx = self.conn.as_mut().expect("opened above").tx();
            tx.run("BEGIN").await?;
            change.apply(&mut tx).await?;
            tx.run("COMMIT").await?;
            Ok::<_, StoreError>(())
        }
        .await;
        self.in_tx = false;
        match &result {
            Ok(()) => {
                self.wal
                    .after_commit(self.conn.as_mut().map(Conn::tx))
                    .await
            }
            Err(e) => {
                if let Some(conn) = self.conn.take() {
                    conn.discard();
                }
                if e.is_unavailable() {
                    self.down(e);
                }
            }
        }
        change.answer(result);
    }

    /// While down: the error to answer with, or `None` once the probe got
    /// a connection back (then the writer is up again).
    fn recovered(&mut self) -> Option<String> {
        let Health::Down {
            probe,
            error,
            since,
            attempt,
        } = &mut self.health
        else {
            return None;
        };
        if !probe.is_finished() {
            return Some(error.clone());
        }
        let result = futures_util::FutureExt::now_or_never(&mut *probe)
            .expect("finished")
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("probe failed: {e}"))));
        match result {
            Ok(conn) => {
                tracing::info!(down_for = ?since.elapsed(), "The database takes writes again.");
                self.recovered_at = Some((Instant::now(), *attempt));
                self.conn = Some(conn);
                self.health = Health::Up;
                None
            }
            Err(e) => {
                *error = e.to_string();
                *attempt += 1;
                *probe = spawn_probe(self.store.clone(), *attempt);
                Some(error.clone())
            }
        }
    }

    /// The database failed with `error`: go down (or stay down) and probe.
    fn down(&mut self, error: &StoreError) {
        if matches!(self.health, Health::Down { .. }) {
            return;
        }
        let attempt = match self.recovered_at {
            Some((at, attempt)) if at.elapsed() < Duration::from_secs(30) => {
                tracing::debug!(%error, "The database failed again.");
                attempt + 1
            }
            _ => {
                tracing::error!(%error, "The database is unavailable; writes fail until it is back.");
                0
            }
        };
        self.health = Health::Down {
            error: error.to_string(),
            since: Instant::now(),
            attempt,
            probe: spawn_probe(self.store.clone(), attempt),
        };
    }
}

/// Waits, then tries to get a connection that can run a query.
fn spawn_probe(store: Store, attempt: u32) -> tokio::task::JoinHandle<Result<Conn, StoreError>> {
    let wait = PROBE_FIRST
        .saturating_mul(1 << attempt.min(8))
        .min(PROBE_MAX);
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if let Some(own) = store.own_writer().cloned() {
            // Opening waits out the busy timeout on a locked database: not
            // on the writer's thread, which answers meanwhile.
            return tokio::task::spawn_blocking(move || own.open())
                .await
                .map_err(|e| StoreError::Unavailable(format!("probe failed: {e}")))?
                .map(Conn::Lite);
        }
        let mut conn = store.pool().acquire().await?;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(Conn::Pool(conn))
    })
}

/// The commands of `batch` that move an account's cursor, each with the
/// lease it must hold (see [`CommitSink::fence`]); none outside a cluster.
fn fences_of(
    store: &Store,
    sink: &dyn CommitSink,
    batch: &[WriteCmd],
) -> Vec<(usize, Option<Fence>)> {
    if store.cluster_instance().is_none() {
        return Vec::new();
    }
    batch
        .iter()
        .enumerate()
        .filter_map(|(i, cmd)| match cmd {
            WriteCmd::Ingest(b, _) => b
                .cursor
                .as_ref()
                .map(|(account, _)| (i, sink.fence(account))),
            _ => None,
        })
        .collect()
}

/// The indexes of `fences` that no longer hold (see [`WriteConn::commit`]).
async fn fenced(
    tx: &mut Tx<'_>,
    fences: &[(usize, Option<Fence>)],
) -> Result<Vec<usize>, StoreError> {
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let asked: Vec<&Fence> = fences.iter().filter_map(|(_, f)| f.as_ref()).collect();
    let mut held = crate::store::postgres::check_fences(tx, &asked)
        .await?
        .into_iter();
    Ok(fences
        .iter()
        .filter(|(_, f)| f.is_none() || held.next() == Some(false))
        .map(|(i, _)| *i)
        .collect())
}

async fn run_batch(conn: &mut WriteConn, sink: &dyn CommitSink, batch: Vec<WriteCmd>) {
    if let Some(error) = conn.recovered() {
        fail(batch, &StoreError::Unavailable(error));
        return;
    }
    let started = Instant::now();
    let fences = fences_of(&conn.store, sink, &batch);
    match conn.commit(&batch, &fences).await {
        Ok(Ok(outcomes)) => {
            sink.batch(batch.len(), started.elapsed());
            finish(sink, batch, outcomes);
            conn.wal
                .after_commit(conn.conn.as_mut().map(Conn::tx))
                .await;
        }
        Ok(Err(refused)) => {
            // Another instance holds these accounts now: their batches
            // (events and cursor) are refused, so the adapter acknowledges
            // nothing upstream; the rest commits without them.
            let mut rest = Vec::with_capacity(batch.len());
            for (i, cmd) in batch.into_iter().enumerate() {
                match cmd {
                    WriteCmd::Ingest(b, reply) if refused.contains(&i) => {
                        let account = b.cursor.map(|(a, _)| a.to_string()).unwrap_or_default();
                        tracing::warn!(%account, "A batch of an account this instance no longer holds was refused.");
                        let _ = reply.send(Err(StoreError::Fenced(account)));
                    }
                    other => rest.push(other),
                }
            }
            if !rest.is_empty() {
                Box::pin(run_batch(conn, sink, rest)).await;
            }
        }
        Err(e) if e.is_unavailable() => {
            // The database, not a command: nothing in this batch can be
            // written now, and retrying one by one would only wait longer.
            conn.down(&e);
            fail(batch, &e);
        }
        Err(e) if batch.len() > 1 => {
            // One bad command must not fail its neighbours: redo one by one.
            tracing::warn!(error = %e, size = batch.len(), "Group commit failed, retrying commands singly.");
            for cmd in batch {
                Box::pin(run_batch(conn, sink, vec![cmd])).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Store write refused.");
            fail(batch, &e);
        }
    }
}

/// Answers every command of a batch that did not commit.
fn fail(batch: Vec<WriteCmd>, e: &StoreError) {
    let err = || match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Rejected(other.to_string()),
    };
    for cmd in batch {
        match cmd {
            WriteCmd::Ingest(_, r) => {
                let _ = r.send(Err(err()));
            }
            WriteCmd::Rows(_, r)
            | WriteCmd::Blob { reply: r, .. }
            | WriteCmd::BlobPart(_, r)
            | WriteCmd::State { reply: r, .. } => {
                let _ = r.send(Err(err()));
            }
            WriteCmd::Cursor { reply, .. } => {
                if let Some(r) = reply {
                    let _ = r.send(Err(err()));
                }
            }
            WriteCmd::Prune(_, r) => {
                let _ = r.send(Err(err()));
            }
            WriteCmd::Solo(s) => s.answer(Err(err())),
        }
    }
}

fn finish(sink: &dyn CommitSink, batch: Vec<WriteCmd>, outcomes: Vec<Option<Vec<IngestOutcome>>>) {
    let committed: Vec<IngestOutcome> = outcomes.iter().flatten().flatten().cloned().collect();
    if !committed.is_empty() {
        sink.committed(&committed);
    }
    for (cmd, outcome) in batch.into_iter().zip(outcomes) {
        let reply = match (cmd, outcome) {
            (WriteCmd::Ingest(_, r), Some(o)) => Reply::Ingest(r, o),
            (
                WriteCmd::Rows(_, r)
                | WriteCmd::Blob { reply: r, .. }
                | WriteCmd::BlobPart(_, r)
                | WriteCmd::State { reply: r, .. },
                _,
            )
            | (WriteCmd::Cursor { reply: Some(r), .. }, _) => Reply::Unit(r),
            _ => Reply::None,
        };
        match reply {
            Reply::Ingest(r, o) => {
                let _ = r.send(Ok(o));
            }
            Reply::Unit(r) => {
                let _ = r.send(Ok(()));
            }
            Reply::None => {}
        }
    }
}
