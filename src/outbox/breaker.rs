//! A circuit breaker per destination account.
//!
//! When a send says the whole account is unreachable, the breaker opens:
//! every lane of the account waits instead of hammering. When the wait is
//! over exactly one lane is let through as a probe; its success closes the
//! breaker, its failure opens it again for longer.

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

    /// Waits until this lane may send. Returns false if shutdown came first.
    pub async fn ready(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut s = self.state.lock().expect("breaker lock");
                match s.open_until {
                    None => return true,
                    Some(t) if !s.probing && Instant::now() >= t => {
                        s.probing = true;
                        return true;
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
                _ = shutdown.changed() => return false,
            }
            if *shutdown.borrow() {
                return false;
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

    /// The account is unreachable: open, for at least `retry_after`.
    pub fn trip(&self, retry_after: Option<Duration>) {
        let mut s = self.state.lock().expect("breaker lock");
        s.trips = s.trips.saturating_add(1);
        let factor = 1u32 << (s.trips - 1).min(3);
        let wait = retry_after.map_or(self.probe * factor, |ra| ra.max(self.probe * factor));
        s.open_until = Some(Instant::now() + wait);
        s.probing = false;
        drop(s);
        self.changed.notify_waiters();
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
        assert!(b.ready(&mut rx.clone()).await);
        b.trip(None);
        assert!(b.is_open());
        let start = Instant::now();
        assert!(b.ready(&mut rx.clone()).await, "probe let through");
        assert!(start.elapsed() >= Duration::from_secs(10));
        // A second lane waits while the probe is out, until it succeeds.
        let b2 = b.clone();
        let mut rx2 = rx.clone();
        let waiter = tokio::spawn(async move { b2.ready(&mut rx2).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        b.reachable();
        assert!(waiter.await.unwrap());
        assert!(!b.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_longer_than_probe_is_honoured() {
        let b = Breaker::new(Duration::from_secs(1));
        let (_tx, mut rx) = watch::channel(false);
        b.trip(Some(Duration::from_secs(30)));
        let start = Instant::now();
        assert!(b.ready(&mut rx).await);
        assert!(start.elapsed() >= Duration::from_secs(30));
    }
}
