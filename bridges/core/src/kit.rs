//! The toolkit every adapter receives with, so the plumbing around the
//! network is written once: waiting that gives way to shutdown ([`nap`]),
//! one backoff policy ([`Backoff`], also the hub's), handing a batch to the
//! hub until it is committed ([`deliver`]), repeating a call to the hub
//! until the store takes it ([`until_stored`]), and storing a downloaded
//! file with a bounded budget ([`store_file`]) whose failure becomes the
//! one "file not bridged" line ([`crate::not_bridged`]).
//!
//! An adapter keeps only what is about its network: its calls, its
//! classification of errors, its conversion. Timers are not I/O: this
//! module needs tokio's clock, nothing else.

use std::future::Future;
use std::time::Duration;

use crate::adapter::{Batch, DeliverError, Delivered, Host, Shutdown};
use crate::model::BlobRef;

/// Sleeps for `d` unless shutdown comes first; false on shutdown.
pub async fn nap(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown => false,
    }
}

/// Exponential backoff: `initial`, doubling on each failure up to `max`,
/// back to `initial` after a success ([`Backoff::reset`]). With jitter on
/// (the default), each wait is between half and all of the step, so many
/// clients that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: bool,
    failures: u32,
}

impl Backoff {
    /// From `initial` up to `max`, with jitter.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            jitter: true,
            failures: 0,
        }
    }

    /// The policy adapters use to reconnect: 1 s doubling to 30 s.
    #[must_use]
    pub fn reconnect() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Without jitter: exact steps (tests that count waits).
    #[must_use]
    pub fn exact(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// With or without jitter.
    #[must_use]
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The step after `failures` failures, before jitter: `initial` for the
    /// first, doubling, never above `max`.
    #[must_use]
    pub fn step(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The wait before attempt `failures + 1`, given `failures` failures so
    /// far, never shorter than what the network asked for (`at_least`).
    #[must_use]
    pub fn delay(&self, failures: u32, at_least: Option<Duration>) -> Duration {
        let mut d = self.step(failures);
        if self.jitter {
            // "Equal jitter": at least half the step, so a flood of failures
            // still spreads out.
            d = d.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..=1.0));
        }
        at_least.map_or(d, |ra| d.max(ra))
    }

    /// Counts a failure; the wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay(self.failures, None)
    }

    /// A success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last reset.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Hands `batch` to the hub until it is committed: while the store is
/// unavailable nothing may be acknowledged upstream, so this waits (with
/// [`Backoff::reconnect`]) and tries again. `None` when the hub stops or
/// shutdown comes first: acknowledge nothing then.
pub async fn deliver(
    host: &dyn Host,
    batch: Batch,
    shutdown: &mut Shutdown,
) -> Option<Vec<Delivered>> {
    until_stored("commit the received events", shutdown, || {
        host.deliver(batch.clone())
    })
    .await
}

/// Repeats `call` (a call to the hub: a commit, a cursor, a state) until
/// the store takes it, waiting with [`Backoff::reconnect`] between tries;
/// `what` names it in the log. `None` when the hub stops or on shutdown.
pub async fn until_stored<T, F, Fut>(what: &str, shutdown: &mut Shutdown, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DeliverError>>,
{
    let mut backoff = Backoff::reconnect();
    loop {
        match call().await {
            Ok(v) => return Some(v),
            Err(DeliverError::Stopping) => return None,
            Err(DeliverError::Unavailable(error)) => {
                let wait = backoff.fail();
                tracing::warn!(%error, retry_in = ?wait, "The hub's store is unavailable; cannot {what} yet.");
                if !nap(wait, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// What [`store_file`] made of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In the hub's blob store.
    Blob(BlobRef),
    /// Not stored within the budget: the message goes on with this line
    /// (see [`crate::not_bridged`]) instead of the file.
    NotBridged(String),
    /// The hub stops, or shutdown came first.
    Stopped,
}

/// Stores a downloaded file in the hub's blob store, trying again while the
/// store is unavailable for at most `budget`; then the file is given up
/// (a line says so) so the message, and everything behind it, goes on.
pub async fn store_file(
    host: &dyn Host,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
    budget: Duration,
    shutdown: &mut Shutdown,
) -> Stored {
    let size = bytes.len() as u64;
    let deadline = tokio::time::Instant::now() + budget;
    let mut backoff = Backoff::reconnect();
    loop {
        match host.put_blob(mime, bytes.clone()).await {
            Ok(blob) => return Stored::Blob(blob),
            Err(DeliverError::Stopping) => return Stored::Stopped,
            Err(DeliverError::Unavailable(error)) => {
                let wait = backoff.fail();
                if tokio::time::Instant::now() + wait > deadline {
                    tracing::warn!(%error, file = %name, size, "A file could not be stored in time; the message says so instead.");
                    return Stored::NotBridged(crate::not_bridged(
                        name,
                        Some(size),
                        "switchboard could not store it",
                    ));
                }
                tracing::warn!(%error, file = %name, retry_in = ?wait, "Cannot store a file yet; trying again.");
                if !nap(wait, shutdown).await {
                    return Stored::Stopped;
                }
            }
        }
    }
}

/// The time a download of `size` bytes may take: `base`, plus the time the
/// bytes take at `rate` bytes per second (a slow federated server's 20 MiB
/// file is not cut off like a stalled small one).
#[must_use]
pub fn download_budget(size: Option<u64>, base: Duration, rate: u64) -> Duration {
    let bytes = size.unwrap_or(0);
    base.saturating_add(Duration::from_millis(
        bytes.saturating_mul(1000) / rate.max(1),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::adapter::{Cursor, ReceiveHealth};
    use crate::ids::{ChannelId, EventId, RemoteId};

    /// A hub whose store is unavailable for the first `down` calls.
    #[derive(Default)]
    struct FlakyHost {
        down: usize,
        calls: AtomicUsize,
        committed: Mutex<Vec<Batch>>,
    }

    impl FlakyHost {
        fn up_now(&self) -> Result<(), DeliverError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.down {
                Err(DeliverError::Unavailable("database is locked".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Host for FlakyHost {
        async fn deliver(&self, batch: Batch) -> Result<Vec<Delivered>, DeliverError> {
            self.up_now()?;
            let n = batch.events.len();
            self.committed.lock().unwrap().push(batch);
            Ok(vec![Delivered::New(EventId(1)); n])
        }
        async fn cursor(&self, _: &str) -> Result<Option<String>, DeliverError> {
            Ok(None)
        }
        async fn put_blob(&self, _: &str, _: Vec<u8>) -> Result<BlobRef, DeliverError> {
            self.up_now()?;
            Ok(BlobRef {
                sha256: "ab".repeat(32),
            })
        }
        async fn blob(&self, _: &BlobRef) -> Result<Option<Vec<u8>>, DeliverError> {
            Ok(None)
        }
        async fn state(&self, _: &str) -> Result<Option<String>, DeliverError> {
            Ok(None)
        }
        async fn set_state(&self, _: &str, _: &str) -> Result<(), DeliverError> {
            Ok(())
        }
        async fn moved(&self, _: &ChannelId, _: &ChannelId) -> Result<(), DeliverError> {
            Ok(())
        }
        async fn channel_of(
            &self,
            _: &RemoteId,
            _: &[ChannelId],
        ) -> Result<Option<ChannelId>, DeliverError> {
            Ok(None)
        }
        fn health(&self, _: ReceiveHealth) {}
    }

    fn never() -> Shutdown {
        Box::pin(std::future::pending())
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).exact();
        let waits: Vec<u64> = (0..7).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_secs(1));
        // What the network asks for wins when it is longer.
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let jittered = Backoff::new(Duration::from_secs(8), Duration::from_secs(8));
        for _ in 0..50 {
            let d = jittered.delay(1, None);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_delivered_once_the_store_is_back() {
        let host = FlakyHost {
            down: 3,
            ..FlakyHost::default()
        };
        let batch = Batch {
            events: Vec::new(),
            cursor: Some(Cursor {
                name: "offset".into(),
                value: "7".into(),
            }),
        };
        let mut shutdown = never();
        let started = tokio::time::Instant::now();
        let answers = deliver(&host, batch.clone(), &mut shutdown).await;
        assert_eq!(answers, Some(Vec::new()));
        assert_eq!(
            host.calls.load(Ordering::SeqCst),
            4,
            "three refusals, then the commit"
        );
        assert_eq!(*host.committed.lock().unwrap(), [batch], "committed once");
        // It waited between tries instead of hammering the store.
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait_and_nothing_is_acknowledged() {
        let host = FlakyHost {
            down: usize::MAX,
            ..FlakyHost::default()
        };
        let mut shutdown: Shutdown = Box::pin(tokio::time::sleep(Duration::from_secs(5)));
        assert_eq!(deliver(&host, Batch::default(), &mut shutdown).await, None);
        assert!(host.committed.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_that_cannot_be_stored_in_its_budget_becomes_a_line() {
        let host = FlakyHost {
            down: usize::MAX,
            ..FlakyHost::default()
        };
        let mut shutdown = never();
        let started = tokio::time::Instant::now();
        let got = store_file(
            &host,
            "cat.png",
            "image/png",
            vec![0; 2048],
            Duration::from_secs(10),
            &mut shutdown,
        )
        .await;
        assert_eq!(
            got,
            Stored::NotBridged(
                "[file not bridged: cat.png (2 KiB): switchboard could not store it]".into()
            )
        );
        assert!(
            started.elapsed() <= Duration::from_secs(10),
            "within its budget"
        );
        assert!(host.calls.load(Ordering::SeqCst) > 1, "it did try again");
        // A store that comes back in time keeps the file.
        let host = FlakyHost {
            down: 1,
            ..FlakyHost::default()
        };
        let got = store_file(
            &host,
            "cat.png",
            "image/png",
            vec![0; 10],
            Duration::from_secs(10),
            &mut shutdown,
        )
        .await;
        assert!(matches!(got, Stored::Blob(_)), "{got:?}");
    }

    #[test]
    fn a_large_download_gets_time_in_proportion_to_its_size() {
        let base = Duration::from_secs(30);
        assert_eq!(download_budget(None, base, 256 * 1024), base);
        assert_eq!(
            download_budget(Some(20 * 1024 * 1024), base, 256 * 1024),
            Duration::from_secs(30 + 80)
        );
    }
}
