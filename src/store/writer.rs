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

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Any, Row, Transaction};
use switchboard_core::{
    AccountId, ChannelId, Delivered, Event, EventId, EventKind, GatewayName, NewEvent, RemoteId,
    TargetRef,
};
use tokio::sync::{mpsc, oneshot};

use super::{now_ms, FeedItem, Store, StoreError};

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
    /// The network accepted it. `map` is the id to remember for later
    /// edits, deletes and replies (None for ops that create no message).
    Sent {
        /// The id the destination gave the message.
        map: Option<MapEntry>,
    },
    /// Some pieces of a split message were accepted.
    Progress {
        /// How many.
        parts_sent: i64,
        /// The first piece's id, remembered as soon as it exists.
        map: Option<MapEntry>,
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
    /// The destination's id for the (first piece of the) message.
    pub remote_id: RemoteId,
}

/// A command for the writer.
pub enum WriteCmd {
    /// Commit a new event with its feed and outbox rows.
    Ingest(
        Box<IngestItem>,
        oneshot::Sender<Result<IngestOutcome, StoreError>>,
    ),
    /// Record the outcome of a send.
    Row(i64, RowUpdate, oneshot::Sender<Result<(), StoreError>>),
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
}

/// Called after each commit, in batch order.
pub trait CommitSink: Send + Sync {
    /// A batch committed with these ingest outcomes.
    fn committed(&self, outcomes: &[IngestOutcome]);

    /// A transaction of `commands` commands took `elapsed` (for metrics).
    fn batch(&self, commands: usize, elapsed: std::time::Duration);
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
        let (tx, rx) = oneshot::channel();
        self.send(WriteCmd::Ingest(Box::new(item), tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records a send outcome; returns after the commit.
    ///
    /// # Errors
    /// When the transaction failed or the writer stopped.
    pub async fn row(&self, id: i64, update: RowUpdate) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteCmd::Row(id, update, tx)).await?;
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
    let task = tokio::spawn(async move {
        let mut conn = WriteConn { store, conn: None };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            run_batch(&mut conn, sink.as_ref(), std::mem::take(&mut batch)).await;
        }
    });
    (WriterHandle { tx }, task)
}

enum Reply {
    Ingest(
        oneshot::Sender<Result<IngestOutcome, StoreError>>,
        IngestOutcome,
    ),
    Unit(oneshot::Sender<Result<(), StoreError>>),
    None,
}

/// The writer's own connection, kept across batches: with SQLite a
/// connection that did the last write keeps its page cache valid, where a
/// pooled one would re-read pages another connection changed.
struct WriteConn {
    store: Store,
    conn: Option<PoolConnection<Any>>,
}

impl WriteConn {
    async fn commit(
        &mut self,
        batch: &[WriteCmd],
    ) -> Result<Vec<Option<IngestOutcome>>, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.store.pool().acquire().await?);
        }
        let conn = self.conn.as_mut().expect("acquired above");
        let result = async {
            let mut tx = conn.begin().await?;
            let outcomes = apply_all(&mut tx, batch).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(outcomes)
        }
        .await;
        if result.is_err() {
            // Start the next batch on a fresh connection.
            self.conn = None;
        }
        result
    }
}

async fn run_batch(conn: &mut WriteConn, sink: &dyn CommitSink, batch: Vec<WriteCmd>) {
    let started = std::time::Instant::now();
    match conn.commit(&batch).await {
        Ok(outcomes) => {
            sink.batch(batch.len(), started.elapsed());
            finish(sink, batch, outcomes);
        }
        Err(e) if batch.len() > 1 => {
            // One bad command must not fail its neighbours: redo one by one.
            tracing::warn!(error = %e, size = batch.len(), "Group commit failed, retrying commands singly.");
            for cmd in batch {
                Box::pin(run_batch(conn, sink, vec![cmd])).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Store write failed.");
            let msg = e.to_string();
            for cmd in batch {
                match cmd {
                    WriteCmd::Ingest(_, r) => {
                        let _ = r.send(Err(StoreError::Corrupt(msg.clone())));
                    }
                    WriteCmd::Row(_, _, r) | WriteCmd::Blob { reply: r, .. } => {
                        let _ = r.send(Err(StoreError::Corrupt(msg.clone())));
                    }
                    WriteCmd::Cursor { reply, .. } => {
                        if let Some(r) = reply {
                            let _ = r.send(Err(StoreError::Corrupt(msg.clone())));
                        }
                    }
                }
            }
        }
    }
}

fn finish(sink: &dyn CommitSink, batch: Vec<WriteCmd>, outcomes: Vec<Option<IngestOutcome>>) {
    let committed: Vec<IngestOutcome> = outcomes.iter().flatten().cloned().collect();
    if !committed.is_empty() {
        sink.committed(&committed);
    }
    for (cmd, outcome) in batch.into_iter().zip(outcomes) {
        let reply = match (cmd, outcome) {
            (WriteCmd::Ingest(_, r), Some(o)) => Reply::Ingest(r, o),
            (WriteCmd::Row(_, _, r) | WriteCmd::Blob { reply: r, .. }, _)
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

/// Applies a batch in one transaction. New events and outbox rows marked
/// sent are written with multi-row statements (a statement per table per
/// batch, not per command); the rest go one by one.
/// Returns one entry per command: the outcome of each ingest.
async fn apply_all(
    tx: &mut Transaction<'_, Any>,
    batch: &[WriteCmd],
) -> Result<Vec<Option<IngestOutcome>>, StoreError> {
    let now = now_ms();
    let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; batch.len()];
    // Blobs first: an ingest in the same batch may refer to one.
    for cmd in batch.iter().filter(|c| matches!(c, WriteCmd::Blob { .. })) {
        apply(tx, cmd).await?;
    }
    // Outcomes of sends before new events: an event that echoes a message
    // just sent must find it in the message map.
    let mut sent = Vec::new();
    let mut cursors: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, cmd) in batch.iter().enumerate() {
        match cmd {
            WriteCmd::Row(id, RowUpdate::Sent { map }, _) => sent.push((*id, map.as_ref())),
            WriteCmd::Row(..) => {
                apply(tx, cmd).await?;
            }
            // Only the last position of each consumer matters.
            WriteCmd::Cursor {
                token, consumer, ..
            } => {
                cursors.insert((token.as_str(), consumer.as_str()), i);
            }
            WriteCmd::Ingest(..) | WriteCmd::Blob { .. } => {}
        }
    }
    bulk_sent(tx, &sent, now).await?;
    // Events in queue order. Those that need lookups (network events: the
    // echo check, references by remote id) go one at a time after what
    // precedes them is inserted, so they see it; runs of the others (bot
    // API posts) share multi-row statements.
    let mut run: Vec<(usize, Cow<'_, IngestItem>)> = Vec::new();
    for (i, cmd) in batch.iter().enumerate() {
        let WriteCmd::Ingest(item, _) = cmd else {
            continue;
        };
        if !needs_lookup(item) {
            run.push((i, Cow::Borrowed(&**item)));
            continue;
        }
        insert_run(tx, &mut run, &mut outcomes, now).await?;
        match prepare(tx, item).await? {
            Some(p) => {
                run.push((i, p));
                insert_run(tx, &mut run, &mut outcomes, now).await?;
            }
            None => {
                outcomes[i] = Some(IngestOutcome {
                    delivered: Delivered::Ignored,
                    feed: Vec::new(),
                    lanes: Vec::new(),
                });
            }
        }
    }
    insert_run(tx, &mut run, &mut outcomes, now).await?;
    let mut last: Vec<usize> = cursors.into_values().collect();
    last.sort_unstable();
    for i in last {
        apply(tx, &batch[i]).await?;
    }
    Ok(outcomes)
}

/// Whether an event needs lookups before its insert.
fn needs_lookup(item: &IngestItem) -> bool {
    item.check_echo || matches!(item.event.kind.target(), Some(TargetRef::Remote(_)))
}

/// Inserts a run of prepared events and records their outcomes.
async fn insert_run(
    tx: &mut Transaction<'_, Any>,
    run: &mut Vec<(usize, Cow<'_, IngestItem>)>,
    outcomes: &mut [Option<IngestOutcome>],
    now: i64,
) -> Result<(), StoreError> {
    if run.is_empty() {
        return Ok(());
    }
    let items: Vec<&IngestItem> = run.iter().map(|(_, p)| p.as_ref()).collect();
    let done = bulk_ingest(tx, &items, now).await?;
    for ((i, _), o) in run.iter().zip(done) {
        outcomes[*i] = Some(o);
    }
    run.clear();
    Ok(())
}

/// Sizes multi-row statements are cut into: a few fixed sizes keep the
/// prepared-statement cache small.
const CHUNKS: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// Cuts `0..n` into ranges of the sizes in [`CHUNKS`].
fn chunks(n: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let size = CHUNKS
            .iter()
            .copied()
            .find(|c| *c <= n - start)
            .unwrap_or(1);
        out.push(start..start + size);
        start += size;
    }
    out
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns.
fn values(cols: usize, rows: usize) -> String {
    (0..rows)
        .map(|r| {
            let marks: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", marks.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type EventKey = (String, String, String);

/// Commits many events with a few multi-row statements.
async fn bulk_ingest(
    tx: &mut Transaction<'_, Any>,
    items: &[&IngestItem],
    now: i64,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let keys: Vec<EventKey> = items
        .iter()
        .map(|it| {
            let o = &it.event.origin;
            (
                o.account.to_string(),
                o.channel.as_str().to_owned(),
                o.remote_id.as_str().to_owned(),
            )
        })
        .collect();
    let mut inserted: HashMap<EventKey, i64> = HashMap::with_capacity(items.len());
    for range in chunks(items.len()) {
        let sql = format!(
            "INSERT INTO events (account, channel, remote_id, kind, at_ms, origin_token, body, created_ms) \
             VALUES {} ON CONFLICT (account, channel, remote_id) DO NOTHING \
             RETURNING id, account, channel, remote_id",
            values(8, range.len())
        );
        let mut q = sqlx::query(&sql);
        for i in range {
            let it = items[i];
            let body =
                serde_json::to_string(&it.event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let at_ms =
                i64::try_from(it.event.at.unix_timestamp_nanos() / 1_000_000).unwrap_or(now);
            q = q
                .bind(keys[i].0.clone())
                .bind(keys[i].1.clone())
                .bind(keys[i].2.clone())
                .bind(it.event.kind.name())
                .bind(at_ms)
                .bind(it.origin_token.clone())
                .bind(body)
                .bind(now);
        }
        for row in q.fetch_all(&mut **tx).await? {
            inserted.insert(
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
                row.try_get(0)?,
            );
        }
    }
    // Who got which id: the first item with a key owns the inserted row;
    // a repeat of the key (in this batch or from before) is a duplicate.
    let mut owned = std::collections::HashSet::new();
    let mut delivered = Vec::with_capacity(items.len());
    for key in &keys {
        let d = match inserted.get(key) {
            Some(id) if owned.insert(key.clone()) => Delivered::New(EventId(*id)),
            Some(id) => Delivered::Duplicate(EventId(*id)),
            None => {
                let row = sqlx::query(
                    "SELECT id FROM events WHERE account = $1 AND channel = $2 AND remote_id = $3",
                )
                .bind(key.0.as_str())
                .bind(key.1.as_str())
                .bind(key.2.as_str())
                .fetch_one(&mut **tx)
                .await?;
                Delivered::Duplicate(EventId(row.try_get(0)?))
            }
        };
        delivered.push(d);
    }
    let mut feed_rows = Vec::new();
    let mut outbox_rows = Vec::new();
    for (i, d) in delivered.iter().enumerate() {
        if let Delivered::New(id) = d {
            feed_rows.extend(items[i].feed.iter().map(|gw| (i, *id, gw)));
            outbox_rows.extend(
                items[i]
                    .dests
                    .iter()
                    .enumerate()
                    .map(|(n, dest)| (*id, n, dest)),
            );
        }
    }
    let mut seqs: HashMap<(i64, String), i64> = HashMap::with_capacity(feed_rows.len());
    for range in chunks(feed_rows.len()) {
        let sql = format!(
            "INSERT INTO feed (gateway, event_id, origin_token) VALUES {} RETURNING seq, event_id, gateway",
            values(3, range.len())
        );
        let mut q = sqlx::query(&sql);
        for &(i, id, gw) in &feed_rows[range] {
            q = q
                .bind(gw.as_str())
                .bind(id.0)
                .bind(items[i].origin_token.clone());
        }
        for row in q.fetch_all(&mut **tx).await? {
            seqs.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
        }
    }
    for range in chunks(outbox_rows.len()) {
        let sql = format!(
            "INSERT INTO outbox (event_id, gateway, account, channel, idempotency_key, created_ms, updated_ms) VALUES {}",
            values(7, range.len())
        );
        let mut q = sqlx::query(&sql);
        for &(id, n, d) in &outbox_rows[range] {
            q = q
                .bind(id.0)
                .bind(d.gateway.as_str())
                .bind(d.account.to_string())
                .bind(d.channel.as_str())
                .bind(format!("sb-{}-{n}", id.0))
                .bind(now)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, d) in delivered.into_iter().enumerate() {
        let Delivered::New(id) = d else {
            out.push(IngestOutcome {
                delivered: d,
                feed: Vec::new(),
                lanes: Vec::new(),
            });
            continue;
        };
        let it = items[i];
        let event = Arc::new(Event::from_new(id, it.event.clone()));
        let mut feed = Vec::with_capacity(it.feed.len());
        for gw in &it.feed {
            let seq = *seqs.get(&(id.0, gw.as_str().to_owned())).ok_or_else(|| {
                StoreError::Corrupt(format!("no feed row returned for event {id}"))
            })?;
            feed.push(FeedItem {
                seq,
                gateway: gw.clone(),
                origin_token: it.origin_token.clone(),
                event: event.clone(),
                native: std::sync::OnceLock::new(),
            });
        }
        out.push(IngestOutcome {
            delivered: d,
            feed,
            lanes: it
                .dests
                .iter()
                .map(|d| (d.account.clone(), d.channel.clone()))
                .collect(),
        });
    }
    Ok(out)
}

/// Marks many rows sent and remembers their remote ids, in two statements
/// per chunk.
async fn bulk_sent(
    tx: &mut Transaction<'_, Any>,
    sent: &[(i64, Option<&MapEntry>)],
    now: i64,
) -> Result<(), StoreError> {
    for range in chunks(sent.len()) {
        let marks: Vec<String> = (0..range.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE outbox SET state = 'sent', updated_ms = $1 WHERE id IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(now);
        for (id, _) in &sent[range] {
            q = q.bind(*id);
        }
        q.execute(&mut **tx).await?;
    }
    let maps: Vec<&MapEntry> = sent.iter().filter_map(|(_, m)| *m).collect();
    for range in chunks(maps.len()) {
        let sql = format!(
            "INSERT INTO message_map (event_id, account, channel, remote_id) VALUES {} \
             ON CONFLICT (event_id, account, channel) DO NOTHING",
            values(4, range.len())
        );
        let mut q = sqlx::query(&sql);
        for m in &maps[range] {
            q = q
                .bind(m.event_id.0)
                .bind(m.account.to_string())
                .bind(m.channel.as_str())
                .bind(m.remote_id.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Applies one command other than an ingest (those go through
/// [`bulk_ingest`]).
async fn apply(tx: &mut Transaction<'_, Any>, cmd: &WriteCmd) -> Result<(), StoreError> {
    let now = now_ms();
    match cmd {
        WriteCmd::Ingest(..) => Ok(()),
        WriteCmd::Row(id, update, _) => row_update(tx, *id, update, now).await,
        WriteCmd::Blob {
            sha256, mime, data, ..
        } => {
            sqlx::query(
                "INSERT INTO blobs (sha256, mime, size, data) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(sha256.as_str())
            .bind(mime.as_str())
            .bind(i64::try_from(data.len()).unwrap_or(i64::MAX))
            .bind(data.clone())
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
        WriteCmd::Cursor {
            token,
            consumer,
            seq,
            ..
        } => {
            // Only forward: two connections of one consumer saving at once
            // (or one replaying from an explicit cursor) must not move the
            // stored position back.
            sqlx::query(
                "INSERT INTO api_cursors (token, consumer, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (token, consumer) DO UPDATE SET seq = excluded.seq \
                 WHERE excluded.seq > api_cursors.seq",
            )
            .bind(token.as_str())
            .bind(consumer.as_str())
            .bind(*seq)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    }
}

/// What a network event needs before its insert: an echo of a message the
/// hub itself sent is dropped (`None`), and a reference given by the
/// network's own id is resolved to the hub's.
async fn prepare<'a>(
    tx: &mut Transaction<'_, Any>,
    item: &'a IngestItem,
) -> Result<Option<Cow<'a, IngestItem>>, StoreError> {
    let origin = &item.event.origin;
    let account = origin.account.to_string();
    if item.check_echo {
        let echo = sqlx::query(
            "SELECT 1 FROM message_map WHERE account = $1 AND channel = $2 AND remote_id = $3 LIMIT 1",
        )
        .bind(account.as_str())
        .bind(origin.channel.as_str())
        .bind(origin.remote_id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if echo.is_some() {
            return Ok(None);
        }
    }
    let Some(TargetRef::Remote(remote)) = item.event.kind.target() else {
        return Ok(Some(Cow::Borrowed(item)));
    };
    let Some(id) = resolve_remote(tx, &account, origin.channel.as_str(), remote).await? else {
        return Ok(Some(Cow::Borrowed(item)));
    };
    let mut resolved = item.clone();
    if let Some(target) = resolved.event.kind.target_mut() {
        *target = TargetRef::Event(id);
    }
    Ok(Some(Cow::Owned(resolved)))
}

/// Finds the hub id of a message the origin network calls `remote`: either
/// it came from there, or the hub delivered it there.
async fn resolve_remote(
    tx: &mut Transaction<'_, Any>,
    account: &str,
    channel: &str,
    remote: &RemoteId,
) -> Result<Option<EventId>, StoreError> {
    let row = sqlx::query(
        "SELECT id FROM events WHERE account = $1 AND channel = $2 AND remote_id = $3 \
         UNION ALL SELECT event_id FROM message_map WHERE account = $4 AND channel = $5 AND remote_id = $6",
    )
    .bind(account)
    .bind(channel)
    .bind(remote.as_str())
    .bind(account)
    .bind(channel)
    .bind(remote.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?.map(EventId))
}

async fn row_update(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    update: &RowUpdate,
    now: i64,
) -> Result<(), StoreError> {
    match update {
        RowUpdate::Sent { map } => {
            sqlx::query("UPDATE outbox SET state = 'sent', updated_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            insert_map(tx, map.as_ref()).await?;
        }
        RowUpdate::Progress { parts_sent, map } => {
            sqlx::query("UPDATE outbox SET parts_sent = $1, updated_ms = $2 WHERE id = $3")
                .bind(*parts_sent)
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            insert_map(tx, map.as_ref()).await?;
        }
        RowUpdate::Retry { attempts, error } => {
            sqlx::query(
                "UPDATE outbox SET attempts = $1, last_error = $2, updated_ms = $3 WHERE id = $4",
            )
            .bind(*attempts)
            .bind(error.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        RowUpdate::Dead { reason } => {
            sqlx::query(
                "UPDATE outbox SET state = 'dead', last_error = $1, updated_ms = $2 WHERE id = $3",
            )
            .bind(reason.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

async fn insert_map(
    tx: &mut Transaction<'_, Any>,
    map: Option<&MapEntry>,
) -> Result<(), StoreError> {
    let Some(m) = map else { return Ok(()) };
    sqlx::query(
        "INSERT INTO message_map (event_id, account, channel, remote_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (event_id, account, channel) DO NOTHING",
    )
    .bind(m.event_id.0)
    .bind(m.account.to_string())
    .bind(m.channel.as_str())
    .bind(m.remote_id.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether an event kind creates a message a later edit or reply can target.
#[must_use]
pub fn creates_message(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Message { .. } | EventKind::Notice { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_with_few_sizes() {
        let r = chunks(203);
        assert_eq!(
            r.iter().map(ExactSizeIterator::len).collect::<Vec<_>>(),
            [128, 64, 8, 2, 1]
        );
        assert_eq!(r.last().unwrap().end, 203);
        assert!(chunks(0).is_empty());
        assert_eq!(values(2, 2), "($1, $2), ($3, $4)");
    }
}
