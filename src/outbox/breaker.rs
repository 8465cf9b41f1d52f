//! A circuit breaker per destination account.
//!
//! When a send says the whole account is unreachable, the breaker opens:
//! every lane of the account waits instead of hammering. When the wait is
//! over exactly one lane is let through as a probe; its success closes the
//! breaker, its failure opens it again for longer.
//!
//! A lane holds a [`Pass`] while it sends. A probe that ends without
//! settling the breaker (its operation degraded to nothing, or it failed
//! before reaching the network) gives the probe back when the pass drops,
//! so another lane probes: the breaker can never wait on a probe that is
//! not happening.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    open_until: Option<Instant>,
    probing: bool,
    trips: u32,
}

/// One account's breaker.
#[derive(Debug)]
pub struct Breaker {
    /// A std mutex: held only for a few field updates, never across await.
    state: Mutex<State>,
    /// Wakes waiting lanes when the breaker closes or a probe ends.
    changed: Notify,
    /// Base wait before probing; doubles per consecutive trip, up to 8x.
    probe: Duration,
}

impl Breaker {
    /// A closed breaker.
    #[must_use]
    pub fn new(probe: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            probe,
        }
    }

    /// Whether the breaker is open now.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state
            .lock()
            .expect("breaker lock")
            .open_until
            .is_some()
    }

    /// Waits until this lane may send; `None` if shutdown came first.
    pub async fn ready(&self, shutdown: &mut watch::Receiver<bool>) -> Option<Pass<'_>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut s = self.state.lock().expect("breaker lock");
                match s.open_until {
                    None => {
                        return Some(Pass {
                            breaker: self,
                            probe: false,
                        })
                    }
                    Some(t) if !s.probing && Instant::now() >= t => {
                        s.probing = true;
                        return Some(Pass {
                            breaker: self,
                            probe: true,
                        });
                    }
                    Some(t) if !s.probing => Some(t),
                    Some(_) => None,
                }
            };
            let sleep = async {
                match wait {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = sleep => {}
                _ = shutdown.changed() => return None,
            }
            if *shutdown.borrow() {
                return None;
            }
        }
    }

    /// The account answered: close.
    pub fn reachable(&self) {
        let mut s = self.state.lock().expect("breaker lock");
        if s.open_until.is_some() || s.probing {
            *s = State::default();
            drop(s);
            self.changed.notify_waiters();
        } else {
            s.trips = 0;
        }
    }

    /// The account showed it is reachable some other way (its adapter
    /// reconnected): an open breaker lets its probe go now instead of
    /// waiting out its timer. The probe still decides: a failing one opens
    /// the breaker again.
    pub fn probe_now(&self) {
        let mut s = self.state.lock().expect("breaker lock");
        let now = Instant::now();
        match s.open_until {
            Some(t) if t > now && !s.probing => {
                s.open_until = Some(now);
                drop(s);
                self.changed.notify_waiters();
            }
            _ => {}
        }
    }

    /// The account is unreachable: open, for at least `retry_after` (which
    /// the caller has capped).
    pub fn trip(&self, retry_after: Option<Duration>) {
        let mut s = self.state.lock().expect("breaker lock");
        s.trips = s.trips.saturating_add(1);
        let factor = 1u32 << (s.trips - 1).min(3);
        let base = self.probe.saturating_mul(factor);
        let wait = retry_after.map_or(base, |ra| ra.max(base));
        let now = Instant::now();
        // A far-future wait must not overflow (it panicked under the lock).
        s.open_until = Some(
            now.checked_add(wait)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365)),
        );
        s.probing = false;
        drop(s);
        self.changed.notify_waiters();
    }
}

/// Leave to send, from [`Breaker::ready`]. A probe's pass that drops
/// before the breaker was settled hands the probe to another lane.
#[derive(Debug)]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if !self.probe {
            return;
        }
        let mut s = self.breaker.state.lock().expect("breaker lock");
        if s.probing {
            s.probing = false;
            drop(s);
            self.breaker.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trips_lets_one_probe_through_and_closes_on_success() {
        let b = Arc::new(Breaker::new(Duration::from_secs(10)));
        let (_tx, rx) = watch::channel(false);
        assert!(b.ready(&mut rx.clone()).await.is_some());
        b.trip(None);
        assert!(b.is_open());
        let start = Instant::now();
        let probe = b.ready(&mut rx.clone()).await;
        assert!(probe.is_some(), "probe let through");
        assert!(start.elapsed() >= Duration::from_secs(10));
        // A second lane waits while the probe is out, until it succeeds.
        let b2 = b.clone();
        let mut rx2 = rx.clone();
        let waiter = tokio::spawn(async move { b2.ready(&mut rx2).await.is_some() });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        b.reachable();
        drop(probe);
        assert!(waiter.await.unwrap());
        assert!(!b.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_ends_unsettled_hands_the_probe_on() {
        let b = Arc::new(Breaker::new(Duration::from_secs(1)));
        let (_tx, rx) = watch::channel(false);
        b.trip(None);
        let probe = b.ready(&mut rx.clone()).await.expect("probe");
        let (b2, mut rx2) = (b.clone(), rx.clone());
        let waiter = tokio::spawn(async move { b2.ready(&mut rx2).await.is_some() });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "one probe at a time");
        // The probe's operation degraded to nothing: no send, no verdict.
        drop(probe);
        assert!(waiter.await.unwrap(), "the next lane probes instead");
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_retry_after_does_not_overflow() {
        let b = Breaker::new(Duration::from_secs(1));
        b.trip(Some(Duration::from_secs(u64::MAX / 2)));
        assert!(b.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_longer_than_probe_is_honoured() {
        let b = Breaker::new(Duration::from_secs(1));
        let (_tx, mut rx) = watch::channel(false);
        b.trip(Some(Duration::from_secs(30)));
        let start = Instant::now();
        assert!(b.ready(&mut rx).await.is_some());
        assert!(start.elapsed() >= Duration::from_secs(30));
    }
}
