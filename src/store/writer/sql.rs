//! What each writer command does inside the batch's transaction. New
//! events, feed rows, outbox rows and rows marked sent are written with
//! multi-row statements (a statement per table per batch, not per command).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::exec::{stmt, Tx};
use switchboard_core::{AccountId, Delivered, Event, EventId, EventKind, RemoteId, TargetRef};

use super::{BlobPart, IngestItem, IngestOutcome, MapEntry, RowUpdate, WriteCmd};
use crate::store::{blobs_used, now_ms, FeedItem, StoreError};

/// A blob stored again is made young again when it is older than this (see
/// [`crate::store::retention`]); the shortest blob retention is well above.
const BLOB_REFRESH_MS: i64 = 60_000;

/// Applies a batch in one transaction. New events and outbox rows marked
/// sent are written with multi-row statements (a statement per table per
/// batch, not per command); the rest go one by one.
/// Returns one entry per command: for an ingest, the outcome of each of
/// its events.
///
/// In a cluster (`cluster` names this instance) the feed rows of the whole
/// batch are inserted last, under the feed's ordering lock (see
/// [`cluster`]), and the other instances are notified of new feed rows and
/// lanes with new rows when the transaction commits.
// The phases' order within the transaction is what this function is
// (blobs, then row outcomes, then events in queue order, then cursors):
// kept together so it reads as one sequence.
pub(super) async fn apply_all(
    tx: &mut Tx<'_>,
    batch: &[WriteCmd],
    database_id: &str,
    cluster: Option<&str>,
) -> Result<Vec<Option<Vec<IngestOutcome>>>, StoreError> {
    let now = now_ms();
    let cx = Cx {
        now,
        database_id,
        defer_feed: cluster.is_some(),
    };
    let mut outcomes: Vec<Vec<Option<IngestOutcome>>> = batch
        .iter()
        .map(|c| match c {
            WriteCmd::Ingest(b, _) => vec![None; b.items.len()],
            _ => Vec::new(),
        })
        .collect();
    // Blobs first: an ingest in the same batch may refer to one.
    for cmd in batch
        .iter()
        .filter(|c| matches!(c, WriteCmd::Blob { .. } | WriteCmd::BlobPart(..)))
    {
        apply(tx, cmd).await?;
    }
    // Outcomes of sends before new events: an event that echoes a message
    // just sent must find it in the message map.
    let mut sent = Vec::new();
    let mut cursors: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, cmd) in batch.iter().enumerate() {
        match cmd {
            WriteCmd::Rows(updates, _) => {
                for (id, update) in updates {
                    match update {
                        RowUpdate::Sent { maps } => sent.push((*id, maps.as_slice())),
                        other => row_update(tx, *id, other, now).await?,
                    }
                }
            }
            // Only the last position of each consumer matters.
            WriteCmd::Cursor {
                token, consumer, ..
            } => {
                cursors.insert((token.as_str(), consumer.as_str()), i);
            }
            WriteCmd::State { .. } => {
                apply(tx, cmd).await?;
            }
            // Pruning steps never join a batch (see `take_prunes`).
            WriteCmd::Ingest(..)
            | WriteCmd::Blob { .. }
            | WriteCmd::BlobPart(..)
            | WriteCmd::Prune(..)
            | WriteCmd::Solo(..) => {}
        }
    }
    bulk_sent(tx, &sent, now).await?;
    // Events in queue order. Those that refer to another message by the
    // network's id (a reply, an edit, a reaction) go one at a time after
    // what precedes them is inserted, so they see it; runs of the others
    // share multi-row statements, and a run's echo checks (new network
    // messages) are one query: inserting an event writes no message-map
    // row, so a check made for the whole run before its insert answers
    // what one made per event would. One at a time, a network message cost
    // three or four statements (echo, event, feed, outbox), each a hand-off
    // to SQLite's thread and back: 100 messages from Signal took 35 ms.
    let mut run: Run<'_> = Vec::new();
    for (i, cmd) in batch.iter().enumerate() {
        let WriteCmd::Ingest(ingest, _) = cmd else {
            continue;
        };
        for (j, item) in ingest.items.iter().enumerate() {
            if !one_at_a_time(item) {
                run.push(((i, j), Cow::Borrowed(item), may_echo(item)));
                continue;
            }
            insert_run(tx, &mut run, &mut outcomes, cx).await?;
            match prepare(tx, item).await? {
                Prepared::Insert(p) => {
                    run.push(((i, j), p, false));
                    insert_run(tx, &mut run, &mut outcomes, cx).await?;
                }
                Prepared::Echo => {
                    outcomes[i][j] = Some(IngestOutcome {
                        delivered: Delivered::Ignored,
                        feed: Vec::new(),
                        lanes: Vec::new(),
                    });
                }
                Prepared::Refused(reason) => {
                    outcomes[i][j] = Some(IngestOutcome {
                        delivered: Delivered::Rejected(reason),
                        feed: Vec::new(),
                        lanes: Vec::new(),
                    });
                }
            }
        }
    }
    insert_run(tx, &mut run, &mut outcomes, cx).await?;
    // Network cursors after the events they cover, in the same commit.
    for cmd in batch {
        if let WriteCmd::Ingest(ingest, _) = cmd {
            if let Some((account, cursor)) = &ingest.cursor {
                stmt(
                    "INSERT INTO cursors (account, name, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (account, name) DO UPDATE SET value = excluded.value",
                )
                .bind(account.to_string())
                .bind(cursor.name.as_str())
                .bind(cursor.value.as_str())
                .execute(tx)
                .await?;
            }
            for change in &ingest.state {
                put_state(tx, &change.account, &change.key, change.value.as_deref()).await?;
            }
        }
    }
    let mut last: Vec<usize> = cursors.into_values().collect();
    last.sort_unstable();
    for i in last {
        apply(tx, &batch[i]).await?;
    }
    // Last: the feed's ordering lock is held from here to the commit, and
    // nothing after it waits for another lock.
    if let Some(instance) = cluster {
        cluster::finish(tx, &mut outcomes, instance).await?;
    }
    Ok(batch
        .iter()
        .zip(outcomes)
        .map(|(cmd, o)| {
            matches!(cmd, WriteCmd::Ingest(..)).then(|| {
                o.into_iter()
                    .map(|x| x.expect("every event has an outcome"))
                    .collect()
            })
        })
        .collect())
}

/// Whether an event goes through [`prepare`] on its own: one that names
/// another message by the network's id (resolved, then checked for who may
/// change it), or a network's event naming one by the hub's id (checked).
/// A bot API post naming a message by the hub's id needs neither.
fn one_at_a_time(item: &IngestItem) -> bool {
    match item.event.kind.target() {
        None => false,
        Some(TargetRef::Remote(_)) => true,
        Some(TargetRef::Event(_)) => item.check_echo,
    }
}

/// Whether an event may be an echo of a message the hub sent. Only a new
/// message can be: an edit or a reaction names an existing message by its
/// id, which may well be one the hub sent (a reaction to a bridged copy is
/// the usual case).
fn may_echo(item: &IngestItem) -> bool {
    item.check_echo && creates_message(&item.event.kind)
}

/// What every insert of a batch shares.
#[derive(Clone, Copy)]
struct Cx<'a> {
    now: i64,
    /// Part of every generated delivery key.
    database_id: &'a str,
    /// Feed rows wait for the end of the batch (see [`cluster`]).
    defer_feed: bool,
}

/// Inserts a run of events, but for those that echo a message the hub
/// sent, and records their outcomes.
async fn insert_run(
    tx: &mut Tx<'_>,
    run: &mut Run<'_>,
    outcomes: &mut [Vec<Option<IngestOutcome>>],
    cx: Cx<'_>,
) -> Result<(), StoreError> {
    if run.is_empty() {
        return Ok(());
    }
    let asked: Vec<usize> = (0..run.len()).filter(|k| run[*k].2).collect();
    let items: Vec<&IngestItem> = asked.iter().map(|k| run[*k].1.as_ref()).collect();
    let echoes: HashSet<usize> = echoed(tx, &items)
        .await?
        .into_iter()
        .map(|n| asked[n])
        .collect();
    let mut kept = Vec::with_capacity(run.len());
    for (k, ((i, j), p, _)) in run.iter().enumerate() {
        if echoes.contains(&k) {
            outcomes[*i][*j] = Some(IngestOutcome {
                delivered: Delivered::Ignored,
                feed: Vec::new(),
                lanes: Vec::new(),
            });
        } else {
            kept.push(((*i, *j), p.as_ref()));
        }
    }
    if !kept.is_empty() {
        let items: Vec<&IngestItem> = kept.iter().map(|(_, p)| *p).collect();
        let done = bulk_ingest(tx, &items, cx).await?;
        for (((i, j), _), o) in kept.iter().zip(done) {
            outcomes[*i][*j] = Some(o);
        }
    }
    run.clear();
    Ok(())
}

/// Events inserted together, each with where its outcome goes and whether
/// its echo check is still to be made.
type Run<'a> = Vec<((usize, usize), Cow<'a, IngestItem>, bool)>;

/// The positions in `items` of those that echo a message the hub sent
/// (their id is in the message map, or among a message's parts): one query
/// per chunk.
async fn echoed(tx: &mut Tx<'_>, items: &[&IngestItem]) -> Result<HashSet<usize>, StoreError> {
    let mut found = HashSet::new();
    for range in chunks(items.len()) {
        // A join through the index (`message_map_remote`,
        // `message_parts_remote`) per row; `(a, b, c) IN (VALUES …)`
        // scans the table in SQLite.
        let sql = format!(
            "WITH k(i, account, channel, remote_id) AS (VALUES {}) \
             SELECT k.i FROM k WHERE EXISTS (SELECT 1 FROM message_map m \
             WHERE m.account = k.account AND m.channel = k.channel AND m.remote_id = k.remote_id) \
             OR EXISTS (SELECT 1 FROM message_parts p \
             WHERE p.account = k.account AND p.channel = k.channel AND p.remote_id = k.remote_id)",
            values(4, range.len())
        );
        let mut q = stmt(&sql);
        for n in range {
            let o = &items[n].event.origin;
            q = q
                .bind(i64::try_from(n).expect("a batch is small"))
                .bind(o.account.to_string())
                .bind(o.channel.as_str())
                .bind(o.remote_id.as_str());
        }
        for row in q.fetch_all(tx).await? {
            let n: i64 = row.try_get(0)?;
            found.insert(usize::try_from(n).expect("a position we bound"));
        }
    }
    Ok(found)
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

/// Commits many events with a few multi-row statements: the events (a
/// redelivered one is a duplicate), then for the new ones their feed rows,
/// outbox rows and blob references.
async fn bulk_ingest(
    tx: &mut Tx<'_>,
    items: &[&IngestItem],
    cx: Cx<'_>,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let keys: Vec<EventKey> = items
        .iter()
        .map(|it| {
            let o = &it.event.origin;
            (
                o.account.to_string(),
                o.channel.as_str().to_owned(),
                it.event.dedupe_key().to_owned(),
            )
        })
        .collect();
    let inserted = insert_events(tx, items, &keys, cx.now).await?;
    let delivered = owners(tx, &keys, &inserted).await?;
    let mut feed_rows = Vec::new();
    let mut outbox_rows = Vec::new();
    let mut blob_refs = Vec::new();
    for (i, d) in delivered.iter().enumerate() {
        if let Delivered::New(id) = d {
            blob_refs.extend(
                blobs_used(&items[i].event)
                    .into_iter()
                    .map(|sha| (sha, *id)),
            );
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
    let seqs = if cx.defer_feed {
        None
    } else {
        Some(insert_feed(tx, items, &feed_rows).await?)
    };
    insert_outbox(tx, &outbox_rows, cx).await?;
    insert_blob_refs(tx, &blob_refs).await?;
    outcomes(items, delivered, seqs.as_ref())
}

/// Inserts the events that are not there yet; returns the new ones' ids
/// by key.
async fn insert_events(
    tx: &mut Tx<'_>,
    items: &[&IngestItem],
    keys: &[EventKey],
    now: i64,
) -> Result<HashMap<EventKey, i64>, StoreError> {
    let mut inserted: HashMap<EventKey, i64> = HashMap::with_capacity(items.len());
    for range in chunks(items.len()) {
        let sql = format!(
            "INSERT INTO events (account, channel, remote_id, kind, at_ms, origin_token, body, created_ms, message_id, target_id) \
             VALUES {} ON CONFLICT (account, channel, remote_id) DO NOTHING \
             RETURNING id, account, channel, remote_id",
            values(10, range.len())
        );
        let mut q = stmt(&sql);
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
                .bind(now)
                .bind(
                    creates_message(&it.event.kind)
                        .then(|| it.event.origin.remote_id.as_str().to_owned()),
                )
                // Retention keeps the target of an undelivered reference.
                .bind(
                    it.event
                        .kind
                        .target()
                        .and_then(TargetRef::event_id)
                        .map(|id| id.0),
                );
        }
        for row in q.fetch_all(tx).await? {
            inserted.insert(
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
                row.try_get(0)?,
            );
        }
    }
    Ok(inserted)
}

/// What each item is: the first item with a key owns the inserted row; a
/// repeat of the key (in this batch or from before) is a duplicate.
async fn owners(
    tx: &mut Tx<'_>,
    keys: &[EventKey],
    inserted: &HashMap<EventKey, i64>,
) -> Result<Vec<Delivered>, StoreError> {
    let mut owned = HashSet::new();
    let mut delivered = Vec::with_capacity(keys.len());
    for key in keys {
        let d = match inserted.get(key) {
            Some(id) if owned.insert(key.clone()) => Delivered::New(EventId(*id)),
            Some(id) => Delivered::Duplicate(EventId(*id)),
            None => {
                let row = stmt(
                    "SELECT id FROM events WHERE account = $1 AND channel = $2 AND remote_id = $3",
                )
                .bind(key.0.as_str())
                .bind(key.1.as_str())
                .bind(key.2.as_str())
                .fetch_one(tx)
                .await?;
                Delivered::Duplicate(EventId(row.try_get(0)?))
            }
        };
        delivered.push(d);
    }
    Ok(delivered)
}

/// The new events' feed rows; returns each row's sequence number by
/// (event id, gateway).
async fn insert_feed(
    tx: &mut Tx<'_>,
    items: &[&IngestItem],
    feed_rows: &[(usize, EventId, &switchboard_core::GatewayName)],
) -> Result<HashMap<(i64, String), i64>, StoreError> {
    let mut seqs: HashMap<(i64, String), i64> = HashMap::with_capacity(feed_rows.len());
    for range in chunks(feed_rows.len()) {
        let sql = format!(
            "INSERT INTO feed (gateway, event_id, origin_token) VALUES {} RETURNING seq, event_id, gateway",
            values(3, range.len())
        );
        let mut q = stmt(&sql);
        for &(i, id, gw) in &feed_rows[range] {
            q = q
                .bind(gw.as_str())
                .bind(id.0)
                .bind(items[i].origin_token.clone());
        }
        for row in q.fetch_all(tx).await? {
            seqs.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
        }
    }
    Ok(seqs)
}

/// One pending outbox row per (new event, destination), keyed for
/// idempotency with the database's id.
async fn insert_outbox(
    tx: &mut Tx<'_>,
    outbox_rows: &[(EventId, usize, &super::Dest)],
    cx: Cx<'_>,
) -> Result<(), StoreError> {
    let now = cx.now;
    for range in chunks(outbox_rows.len()) {
        let sql = format!(
            "INSERT INTO outbox (event_id, gateway, account, channel, idempotency_key, created_ms, updated_ms) VALUES {}",
            values(7, range.len())
        );
        let mut q = stmt(&sql);
        for &(id, n, d) in &outbox_rows[range] {
            q = q
                .bind(id.0)
                .bind(d.gateway.as_str())
                .bind(d.account.to_string())
                .bind(d.channel.as_str())
                .bind(format!("sb-{}-{}-{n}", cx.database_id, id.0))
                .bind(now)
                .bind(now);
        }
        q.execute(tx).await?;
    }
    Ok(())
}

async fn insert_blob_refs(
    tx: &mut Tx<'_>,
    blob_refs: &[(&str, EventId)],
) -> Result<(), StoreError> {
    // Which blobs the new events use: blob downloads check their gateways
    // here, and retention keeps what a kept event uses.
    for range in chunks(blob_refs.len()) {
        let sql = format!(
            "INSERT INTO blob_refs (sha256, event_id) VALUES {} \
             ON CONFLICT (sha256, event_id) DO NOTHING",
            values(2, range.len())
        );
        let mut q = stmt(&sql);
        for &(sha, id) in &blob_refs[range] {
            q = q.bind(sha).bind(id.0);
        }
        q.execute(tx).await?;
    }
    Ok(())
}

/// Each item's outcome: its verdict, and for a new event its feed items
/// (for live consumers) and lanes (to wake).
/// Without `seqs` the feed rows are not inserted yet: their items carry
/// sequence number 0 until [`cluster::finish`] inserts them.
fn outcomes(
    items: &[&IngestItem],
    delivered: Vec<Delivered>,
    seqs: Option<&HashMap<(i64, String), i64>>,
) -> Result<Vec<IngestOutcome>, StoreError> {
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
            let seq = match seqs {
                None => 0,
                Some(seqs) => *seqs.get(&(id.0, gw.as_str().to_owned())).ok_or_else(|| {
                    StoreError::Corrupt(format!("no feed row returned for event {id}"))
                })?,
            };
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
    tx: &mut Tx<'_>,
    sent: &[(i64, &[MapEntry])],
    now: i64,
) -> Result<(), StoreError> {
    for range in chunks(sent.len()) {
        let marks: Vec<String> = (0..range.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE outbox SET state = 'sent', updated_ms = $1 WHERE id IN ({})",
            marks.join(", ")
        );
        let mut q = stmt(&sql).bind(now);
        for (id, _) in &sent[range] {
            q = q.bind(*id);
        }
        q.execute(tx).await?;
    }
    let all: Vec<&MapEntry> = sent.iter().flat_map(|(_, m)| m.iter()).collect();
    let (firsts, rest): (Vec<&MapEntry>, Vec<&MapEntry>) =
        all.into_iter().partition(|m| m.part == 0);
    for m in rest {
        insert_map(tx, m).await?;
    }
    let maps = firsts;
    for range in chunks(maps.len()) {
        let sql = format!(
            "INSERT INTO message_map (event_id, account, channel, remote_id) VALUES {} \
             ON CONFLICT (event_id, account, channel) DO NOTHING",
            values(4, range.len())
        );
        let mut q = stmt(&sql);
        for m in &maps[range] {
            q = q
                .bind(m.event_id.0)
                .bind(m.account.to_string())
                .bind(m.channel.as_str())
                .bind(m.remote_id.as_str());
        }
        q.execute(tx).await?;
    }
    Ok(())
}

/// Sets (`Some`) or removes (`None`) one key of an account's key-value
/// space.
async fn put_state(
    tx: &mut Tx<'_>,
    account: &AccountId,
    key: &str,
    value: Option<&str>,
) -> Result<(), StoreError> {
    let q = match value {
        Some(value) => stmt(
            "INSERT INTO adapter_state (account, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (account, key) DO UPDATE SET value = excluded.value",
        )
        .bind(account.to_string())
        .bind(key)
        .bind(value),
        None => stmt("DELETE FROM adapter_state WHERE account = $1 AND key = $2")
            .bind(account.to_string())
            .bind(key),
    };
    q.execute(tx).await?;
    Ok(())
}

/// Applies one command other than an ingest (those go through
/// [`bulk_ingest`]).
async fn apply(tx: &mut Tx<'_>, cmd: &WriteCmd) -> Result<(), StoreError> {
    let now = now_ms();
    match cmd {
        WriteCmd::Ingest(..) | WriteCmd::Prune(..) | WriteCmd::Solo(..) => Ok(()),
        WriteCmd::State {
            account,
            key,
            value,
            ..
        } => put_state(tx, account, key, Some(value)).await,
        WriteCmd::Rows(updates, _) => {
            for (id, update) in updates {
                row_update(tx, *id, update, now).await?;
            }
            Ok(())
        }
        WriteCmd::Blob {
            sha256, mime, data, ..
        } => {
            // Storing a blob again makes it young again: an old blob that
            // no kept event uses yet is about to be used by the event
            // being committed, and retention must not collect it before.
            // At most once a minute, since SQLite rewrites the whole row.
            stmt(
                "INSERT INTO blobs (sha256, mime, size, data, created_ms) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (sha256) DO UPDATE SET created_ms = excluded.created_ms \
                 WHERE blobs.created_ms < excluded.created_ms - $6",
            )
            .bind(sha256.as_str())
            .bind(mime.as_str())
            .bind(i64::try_from(data.len()).unwrap_or(i64::MAX))
            .bind(data.as_slice())
            .bind(now)
            .bind(BLOB_REFRESH_MS)
            .execute(tx)
            .await?;
            Ok(())
        }
        WriteCmd::BlobPart(part, _) => blob_part(tx, part, now).await,
        WriteCmd::Cursor {
            token,
            consumer,
            seq,
            ..
        } => {
            // Only forward: two connections of one consumer saving at once
            // (or one replaying from an explicit cursor) must not move the
            // stored position back.
            stmt(
                "INSERT INTO api_cursors (token, consumer, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (token, consumer) DO UPDATE SET seq = excluded.seq \
                 WHERE excluded.seq > api_cursors.seq",
            )
            .bind(token.as_str())
            .bind(consumer.as_str())
            .bind(*seq)
            .execute(tx)
            .await?;
            Ok(())
        }
    }
}

/// A step of a large blob's upload (see [`crate::store::blobs`]).
async fn blob_part(tx: &mut Tx<'_>, part: &BlobPart, now: i64) -> Result<(), StoreError> {
    match part {
        BlobPart::Chunk { upload, seq, data } => {
            stmt(
                "INSERT INTO blob_chunks (upload, seq, data, created_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (upload, seq) DO UPDATE SET data = excluded.data",
            )
            .bind(upload.as_str())
            .bind(*seq)
            .bind(data.as_slice())
            .bind(now)
            .execute(tx)
            .await?;
        }
        BlobPart::Finish {
            upload,
            sha256,
            mime,
            size,
            chunks,
        } => {
            // Every chunk must be there: one collected as abandoned (an
            // upload slower than `blobs::UNFINISHED`) fails the upload
            // rather than leave a blob with a hole.
            let row = stmt(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM blob_chunks WHERE upload = $1",
            )
            .bind(upload.as_str())
            .fetch_one(tx)
            .await?;
            let (found, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            let size = i64::try_from(*size).unwrap_or(i64::MAX);
            if found != *chunks || bytes != size {
                return Err(StoreError::Rejected(format!(
                    "upload {upload}: {found} of {chunks} chunks, {bytes} of {size} bytes stored"
                )));
            }
            stmt(
                "INSERT INTO blobs (sha256, mime, size, data, created_ms, upload) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(sha256.as_str())
            .bind(mime.as_str())
            .bind(size)
            .bind(&b""[..])
            .bind(now)
            .bind(upload.as_str())
            .execute(tx)
            .await?;
            let kept: Option<String> = stmt("SELECT upload FROM blobs WHERE sha256 = $1")
                .bind(sha256.as_str())
                .fetch_one(tx)
                .await?
                .try_get(0)?;
            if kept.as_deref() != Some(upload.as_str()) {
                // The same bytes were stored before: keep those (made
                // young again, as a blob stored again is) and drop these.
                stmt("DELETE FROM blob_chunks WHERE upload = $1")
                    .bind(upload.as_str())
                    .execute(tx)
                    .await?;
                stmt("UPDATE blobs SET created_ms = $1 WHERE sha256 = $2 AND created_ms < $3")
                    .bind(now)
                    .bind(sha256.as_str())
                    .bind(now - BLOB_REFRESH_MS)
                    .execute(tx)
                    .await?;
            }
        }
        BlobPart::Abort { upload } => {
            // Never the chunks of a blob that was written after all.
            stmt(
                "DELETE FROM blob_chunks WHERE upload = $1 \
                 AND NOT EXISTS (SELECT 1 FROM blobs WHERE upload = $2)",
            )
            .bind(upload.as_str())
            .bind(upload.as_str())
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}

/// What [`prepare`] made of a network event. Short-lived (one per event,
/// consumed at once), so the size of the insert variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Prepared<'a> {
    /// Insert it (its reference resolved to the hub's id where known).
    Insert(Cow<'a, IngestItem>),
    /// An echo of a message the hub itself sent: dropped.
    Echo,
    /// Not its author's to change (the reason): refused, never bridged.
    Refused(String),
}

/// What a network event needs before its insert: an echo of a message the
/// hub itself sent is dropped, a reference given by the network's own id
/// is resolved to the hub's, and a change to a message (an edit, a delete,
/// a reaction taken back) is refused unless it comes from whoever may make
/// it (see [`refusal`]).
async fn prepare<'a>(tx: &mut Tx<'_>, item: &'a IngestItem) -> Result<Prepared<'a>, StoreError> {
    let origin = &item.event.origin;
    let account = origin.account.to_string();
    if may_echo(item) && !echoed(tx, &[item]).await?.is_empty() {
        return Ok(Prepared::Echo);
    }
    let (item, target) = match item.event.kind.target() {
        None => return Ok(Prepared::Insert(Cow::Borrowed(item))),
        Some(TargetRef::Event(id)) => (Cow::Borrowed(item), *id),
        Some(TargetRef::Remote(remote)) => {
            let Some(id) = resolve_remote(tx, &account, origin.channel.as_str(), remote).await?
            else {
                // Never seen: nothing of anyone's to change. Destinations
                // that never got it show a copy under the sender's name.
                return Ok(Prepared::Insert(Cow::Borrowed(item)));
            };
            let mut resolved = item.clone();
            if let Some(target) = resolved.event.kind.target_mut() {
                *target = TargetRef::Event(id);
            }
            (Cow::Owned(resolved), id)
        }
    };
    if let Some(reason) = refusal(tx, &item.event, target).await? {
        let e = &item.event;
        tracing::warn!(
            account = %e.origin.account,
            channel = %e.origin.channel,
            author = %e.author.remote_id,
            author_name = %e.author.display_name,
            kind = e.kind.name(),
            target = %target,
            %reason,
            "Refused a change to a message by someone who may not make it; not bridged."
        );
        return Ok(Prepared::Refused(reason));
    }
    Ok(Prepared::Insert(item))
}

/// Why `event` (from a network) may not change message `target`, if it may
/// not. The rule is the hub's, the same for every network (the Matrix
/// specification's for `m.replace`): an edit only by the message's author;
/// a delete by the author or, when the origin network says the sender is
/// a moderator there ([`EventKind::Delete::by_moderator`]), a moderator; a
/// reaction taken back only by whoever added it. "The author" is the same
/// person on the same account: a bridged copy of someone else's message is
/// never its reader's to rewrite.
async fn refusal(
    tx: &mut Tx<'_>,
    event: &switchboard_core::NewEvent,
    target: EventId,
) -> Result<Option<String>, StoreError> {
    let who = || {
        format!(
            "{} ({} on {})",
            event.author.display_name, event.author.remote_id, event.origin.account
        )
    };
    if matches!(
        event.kind,
        EventKind::Edit { .. } | EventKind::Delete { .. } | EventKind::Reaction { .. }
    ) && crate::links::stays_in_its_chat(tx, event, target).await?
    {
        return Ok(Some(format!(
            "{} changed a command to switchboard, or its answer, which stay in their chat",
            who()
        )));
    }
    let what = match &event.kind {
        EventKind::Edit { .. } => "edit",
        EventKind::Delete {
            by_moderator: false,
            ..
        } => "delete",
        EventKind::Reaction {
            removed: true,
            emoji,
            ..
        } => {
            let rows = stmt(
                "SELECT id, body FROM events WHERE target_id = $1 AND kind = 'reaction' AND account = $2",
            )
            .bind(target.0)
            .bind(event.origin.account.to_string())
            .fetch_all(tx)
            .await?;
            let bare = |s: &str| s.replace('\u{FE0F}', "");
            for row in rows {
                let (id, body): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
                let Ok(added) = serde_json::from_str::<switchboard_core::NewEvent>(&body) else {
                    tracing::warn!(event = id, "A stored reaction cannot be decoded; skipped.");
                    continue;
                };
                if let EventKind::Reaction {
                    emoji: e,
                    removed: false,
                    ..
                } = &added.kind
                {
                    if added.author.remote_id == event.author.remote_id && bare(e) == bare(emoji) {
                        return Ok(None);
                    }
                }
            }
            return Ok(Some(format!(
                "{} took back a {emoji} reaction to message {target} that they did not add",
                who()
            )));
        }
        _ => return Ok(None),
    };
    let row = stmt("SELECT account, body FROM events WHERE id = $1")
        .bind(target.0)
        .fetch_optional(tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (account, body): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    let original = serde_json::from_str::<switchboard_core::NewEvent>(&body)
        .map_err(|e| StoreError::Corrupt(format!("event {target}: {e}")))?;
    if account == event.origin.account.to_string()
        && original.author.remote_id == event.author.remote_id
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} may not {what} message {target}, written by {} ({} on {account})",
        who(),
        original.author.display_name,
        original.author.remote_id
    )))
}

/// Finds the hub id of a message the origin network calls `remote`: either
/// it came from there, or the hub delivered it there.
async fn resolve_remote(
    tx: &mut Tx<'_>,
    account: &str,
    channel: &str,
    remote: &RemoteId,
) -> Result<Option<EventId>, StoreError> {
    let row = stmt(
        "SELECT id FROM events WHERE account = $1 AND channel = $2 AND message_id = $3 \
         UNION ALL SELECT event_id FROM message_map WHERE account = $4 AND channel = $5 AND remote_id = $6 \
         UNION ALL SELECT event_id FROM message_parts WHERE account = $7 AND channel = $8 AND remote_id = $9",
    )
    .bind(account)
    .bind(channel)
    .bind(remote.as_str())
    .bind(account)
    .bind(channel)
    .bind(remote.as_str())
    .bind(account)
    .bind(channel)
    .bind(remote.as_str())
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?.map(EventId))
}

async fn row_update(
    tx: &mut Tx<'_>,
    id: i64,
    update: &RowUpdate,
    now: i64,
) -> Result<(), StoreError> {
    match update {
        RowUpdate::Sent { maps } => {
            stmt("UPDATE outbox SET state = 'sent', updated_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(tx)
                .await?;
            for m in maps {
                insert_map(tx, m).await?;
            }
        }
        RowUpdate::Progress { parts_sent, maps } => {
            stmt("UPDATE outbox SET parts_sent = $1, updated_ms = $2 WHERE id = $3")
                .bind(*parts_sent)
                .bind(now)
                .bind(id)
                .execute(tx)
                .await?;
            for m in maps {
                insert_map(tx, m).await?;
            }
        }
        RowUpdate::Retry { attempts, error } => {
            stmt("UPDATE outbox SET attempts = $1, last_error = $2, updated_ms = $3 WHERE id = $4")
                .bind(*attempts)
                .bind(error.as_str())
                .bind(now)
                .bind(id)
                .execute(tx)
                .await?;
        }
        RowUpdate::Dead { reason } => {
            stmt(
                "UPDATE outbox SET state = 'dead', last_error = $1, updated_ms = $2 WHERE id = $3",
            )
            .bind(reason.as_str())
            .bind(now)
            .bind(id)
            .execute(tx)
            .await?;
        }
    }
    Ok(())
}

/// Remembers one id: the first part in `message_map`, later ones in
/// `message_parts`.
async fn insert_map(tx: &mut Tx<'_>, m: &MapEntry) -> Result<(), StoreError> {
    if m.part == 0 {
        stmt(
            "INSERT INTO message_map (event_id, account, channel, remote_id) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (event_id, account, channel) DO NOTHING",
        )
        .bind(m.event_id.0)
        .bind(m.account.to_string())
        .bind(m.channel.as_str())
        .bind(m.remote_id.as_str())
        .execute(tx)
        .await?;
    } else {
        stmt(
            "INSERT INTO message_parts (event_id, account, channel, part, remote_id) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id, account, channel, part) DO NOTHING",
        )
        .bind(m.event_id.0)
        .bind(m.account.to_string())
        .bind(m.channel.as_str())
        .bind(m.part)
        .bind(m.remote_id.as_str())
        .execute(tx)
        .await?;
    }
    Ok(())
}

/// Whether an event kind creates a message a later edit or reply can target.
#[must_use]
pub fn creates_message(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Message { .. } | EventKind::Notice { .. } | EventKind::Command { .. }
    )
}

/// What a transaction of an instance in a cluster does last.
///
/// Feed sequence numbers come from one PostgreSQL sequence; with several
/// writers, a number taken early may commit after a larger one, and a
/// consumer reading `seq > cursor` in between would pass it for good. So
/// in a cluster every feed row of a batch is inserted at the very end,
/// under a transaction-level advisory lock held until the commit
/// (`store::postgres::lock_feed_order`): numbers are handed out in commit
/// order across all instances, and a row visible to a reader has every
/// smaller number visible too (PostgreSQL makes a commit visible before
/// it releases its locks). Only the feed insert and the commit run under
/// the lock. Then the other instances are notified: of new feed rows (they
/// read them in order and pass them to their live consumers) and of the
/// lanes that got rows (their holders wake them).
mod cluster {
    use super::*;
    use crate::store::postgres::{self, channel};

    /// Largest notification payload sent (PostgreSQL takes 8000 bytes).
    const PAYLOAD: usize = 7000;

    pub(super) async fn finish(
        tx: &mut Tx<'_>,
        outcomes: &mut [Vec<Option<IngestOutcome>>],
        instance: &str,
    ) -> Result<(), StoreError> {
        let rows: Vec<(usize, usize, usize)> = outcomes
            .iter()
            .enumerate()
            .flat_map(|(i, v)| v.iter().enumerate().map(move |(j, o)| (i, j, o)))
            .filter_map(|(i, j, o)| o.as_ref().map(|o| (i, j, o.feed.len())))
            .flat_map(|(i, j, n)| (0..n).map(move |k| (i, j, k)))
            .collect();
        if !rows.is_empty() {
            postgres::lock_feed_order(tx).await?;
            for range in chunks(rows.len()) {
                let sql = format!(
                    "INSERT INTO feed (gateway, event_id, origin_token) VALUES {} \
                     RETURNING seq, event_id, gateway",
                    values(3, range.len())
                );
                let mut q = stmt(&sql);
                for &(i, j, k) in &rows[range.clone()] {
                    let item = &outcomes[i][j].as_ref().expect("an outcome").feed[k];
                    q = q
                        .bind(item.gateway.as_str().to_owned())
                        .bind(item.event.id.0)
                        .bind(item.origin_token.clone());
                }
                let mut seqs: HashMap<(i64, String), i64> = HashMap::new();
                for row in q.fetch_all(tx).await? {
                    seqs.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
                }
                for &(i, j, k) in &rows[range] {
                    let item = &mut outcomes[i][j].as_mut().expect("an outcome").feed[k];
                    item.seq = *seqs
                        .get(&(item.event.id.0, item.gateway.as_str().to_owned()))
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "no feed row returned for event {}",
                                item.event.id
                            ))
                        })?;
                }
            }
            postgres::notify(tx, channel::FEED, instance).await?;
        }
        let mut lanes: Vec<String> = outcomes
            .iter()
            .flatten()
            .flatten()
            .flat_map(|o| &o.lanes)
            .map(|(a, c)| format!("{a} {c}"))
            .collect();
        lanes.sort_unstable();
        lanes.dedup();
        let mut payload = String::from(instance);
        for lane in lanes {
            if payload.len() + lane.len() + 1 > PAYLOAD {
                postgres::notify(tx, channel::LANES, &payload).await?;
                payload = String::from(instance);
            }
            payload.push('\n');
            payload.push_str(&lane);
        }
        if payload.len() > instance.len() {
            postgres::notify(tx, channel::LANES, &payload).await?;
        }
        Ok(())
    }
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
