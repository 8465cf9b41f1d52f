//! Retention: old history is deleted, what anything still needs is kept.
//!
//! A background task ([`spawn`]) runs a pass every `retention.interval`.
//! A pass ([`prune`]) deletes, in steps of bounded size that each commit
//! through the single writer (so a step is serialized with ingests and
//! never races one that makes an old event needed again):
//! - delivered outbox rows older than `keep`, and dead letters that died
//!   more than `dead_letters` ago (once their event is older than `keep`);
//! - feed rows of events older than `keep` that no destination still
//!   waits for (a consumer whose cursor points at a deleted row reads on
//!   from the oldest row kept, since it reads `seq > cursor`);
//! - events older than `keep`, with their message map, their extra parts
//!   and their blob references, once no outbox row is left for them;
//! - blobs stored more than `blobs` ago that no event younger than that
//!   uses and no undelivered event needs (orphans included), with their
//!   chunks, and the chunks of uploads that never finished (older than
//!   [`super::blobs::UNFINISHED`]).
//!
//! Never deleted: a pending outbox row or a dead letter younger than
//! `dead_letters`, the event of any outbox row still there, the feed rows
//! and blobs of an undelivered event (a bot may still edit or delete its
//! pending post and fetch its files, which is checked through the feed),
//! and the target of an edit, delete, reaction or reply
//! still to be delivered (its delivery looks the target up in the message
//! map); the message map of any event that is kept; consumer cursors,
//! network cursors, adapter state and channel moves (small, and each is
//! needed for as long as its account or consumer exists).
//!
//! What retention gives up: a redelivery of an event older than `keep` is
//! taken as new, an `Idempotency-Key` is remembered as long as its event,
//! and an edit, reply or reaction arriving for a message older than `keep`
//! cannot find its target, so it is passed on as the networks' fallback
//! (a corrected copy, a plain message).
//!
//! SQLite's database file does not shrink: freed pages are reused, so it
//! stops growing once a `keep` of history is in it.

use std::time::{Duration, Instant};

use super::writer::{PruneStep, StepDone, WriterHandle};
use super::StoreError;
use crate::config::RetentionSettings;

/// Rows deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// `events`.
    pub events: u64,
    /// `feed`.
    pub feed: u64,
    /// `outbox` (delivered rows and dead letters).
    pub outbox: u64,
    /// `message_map`.
    pub message_map: u64,
    /// `message_parts`.
    pub message_parts: u64,
    /// `blob_refs`.
    pub blob_refs: u64,
    /// `blobs`.
    pub blobs: u64,
    /// `blob_chunks` (of deleted blobs and of uploads that never finished).
    pub blob_chunks: u64,
}

impl Pruned {
    /// Each table with its count, for metrics.
    #[must_use]
    pub fn tables(&self) -> [(&'static str, u64); 8] {
        [
            ("events", self.events),
            ("feed", self.feed),
            ("outbox", self.outbox),
            ("message_map", self.message_map),
            ("message_parts", self.message_parts),
            ("blob_refs", self.blob_refs),
            ("blobs", self.blobs),
            ("blob_chunks", self.blob_chunks),
        ]
    }

    /// Rows deleted in all tables.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.tables().iter().map(|(_, n)| n).sum()
    }

    fn add(&mut self, other: &Self) {
        self.events += other.events;
        self.feed += other.feed;
        self.outbox += other.outbox;
        self.message_map += other.message_map;
        self.message_parts += other.message_parts;
        self.blob_refs += other.blob_refs;
        self.blobs += other.blobs;
        self.blob_chunks += other.blob_chunks;
    }
}

/// The shortest pause after a step that deleted something: the writer
/// serves the ingests and sends that queued meanwhile before the next step.
const PAUSE: Duration = Duration::from_millis(20);

/// Pauses are at least this many times as long as the step before took,
/// so a pass never has the writer for more than a third of the time
/// however slow the database is.
const PAUSE_FACTOR: u32 = 2;

/// Runs one pass as of `now_ms` (unix milliseconds; tests simulate days
/// with it), step by step through the writer, and returns what it deleted.
///
/// # Errors
/// When a step fails; what the steps before it deleted stays deleted, and
/// the next pass goes on from there.
pub async fn prune(
    writer: &WriterHandle,
    policy: &RetentionSettings,
    now_ms: i64,
) -> Result<Pruned, StoreError> {
    let ago = |d: Duration| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (cutoff_ms, dead_cutoff_ms) = (ago(policy.keep), ago(policy.dead_letters));
    let mut total = Pruned::default();
    let mut after = 0;
    loop {
        let started = Instant::now();
        let done = writer
            .prune(PruneStep::Events {
                after,
                cutoff_ms,
                dead_cutoff_ms,
            })
            .await?;
        tally(&mut total, &done, started).await;
        match done.next {
            Some(next) => after = next,
            None => break,
        }
    }
    let (cutoff_ms, unfinished_ms) = (ago(policy.blobs), ago(super::blobs::UNFINISHED));
    loop {
        let started = Instant::now();
        let done = writer
            .prune(PruneStep::Blobs {
                cutoff_ms,
                unfinished_ms,
            })
            .await?;
        tally(&mut total, &done, started).await;
        if done.next.is_none() {
            break;
        }
    }
    Ok(total)
}

/// Adds a step's counts, and pauses if it deleted anything.
async fn tally(total: &mut Pruned, done: &StepDone, started: Instant) {
    total.add(&done.pruned);
    if done.pruned.total() > 0 {
        tokio::time::sleep(PAUSE.max(started.elapsed() * PAUSE_FACTOR)).await;
    }
}

/// Starts the background task: a first pass soon after start (within a
/// minute), then one every interval, until `shutdown` is true. `policy` is
/// asked before each pass, so a reload that changes `[retention]` takes
/// effect at the next one; `None` means retention is off for now.
/// `report` gets each pass's counts (for metrics).
pub fn spawn(
    writer: WriterHandle,
    policy: impl Fn() -> Option<RetentionSettings> + Send + 'static,
    report: impl Fn(&Pruned) + Send + 'static,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    /// How often a retention that is off looks again (a reload may turn it on).
    const OFF_RECHECK: Duration = Duration::from_secs(60);
    tokio::spawn(async move {
        let mut wait = policy().map_or(OFF_RECHECK, |p| p.interval.min(OFF_RECHECK));
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let Some(current) = policy() else {
                wait = OFF_RECHECK;
                continue;
            };
            wait = current.interval;
            let started = Instant::now();
            let pass = tokio::select! {
                pass = prune(&writer, &current, super::now_ms()) => pass,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match pass {
                Ok(p) => {
                    report(&p);
                    tracing::info!(
                        events = p.events,
                        feed = p.feed,
                        outbox = p.outbox,
                        message_map = p.message_map + p.message_parts,
                        blob_refs = p.blob_refs,
                        blobs = p.blobs,
                        blob_chunks = p.blob_chunks,
                        took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "Retention pass done: rows older than the retention ages deleted."
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Retention pass stopped; the next one goes on.");
                }
            }
        }
    })
}
