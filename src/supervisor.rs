//! Supervision: an adapter whose `run` returns an error, returns early or
//! panics is started again with backoff, and so is an outbox lane task
//! that panics; both show in account health. A `run` that kept going for a
//! minute before failing starts again from the shortest wait.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use switchboard_core::{Adapter, Host};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::health::HealthBoard;
use crate::metrics::Metrics;

/// Restart waits: from `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Restarts {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Restarts {
    /// The policy, as every wait in switchboard is paced.
    fn backoff(self) -> switchboard_core::kit::Backoff {
        switchboard_core::kit::Backoff::new(self.initial, self.max)
    }
}

/// What [`adapter`] runs, until when.
pub struct Serve {
    /// `serve_sends` instead of `run` (another instance of a cluster
    /// receives for the account).
    pub send_only: bool,
    /// Stops it.
    pub shutdown: watch::Receiver<bool>,
}

/// Runs `adapter` until shutdown, restarting it when it stops early.
pub fn adapter(
    adapter: Arc<dyn Adapter>,
    host: Arc<dyn Host>,
    health: Arc<HealthBoard>,
    metrics: Arc<Metrics>,
    restarts: Restarts,
    serve: Serve,
) -> JoinHandle<()> {
    let Serve {
        send_only,
        mut shutdown,
    } = serve;
    let account = adapter.account().clone();
    tokio::spawn(async move {
        let mut backoff = restarts.backoff();
        loop {
            if *shutdown.borrow() {
                return;
            }
            health.starting(&account);
            let mut rx = shutdown.clone();
            let stop: switchboard_core::Shutdown = Box::pin(async move {
                let _ = rx.wait_for(|s| *s).await;
            });
            let started = Instant::now();
            let run = if send_only {
                tokio::spawn(adapter.clone().serve_sends(host.clone(), stop))
            } else {
                tokio::spawn(adapter.clone().run(host.clone(), stop))
            };
            // Cut with this supervisor (a receive side that did not stop
            // in time): a detached adapter would run on beside its
            // successor.
            let _cut = AbortOnDrop(run.abort_handle());
            let error = match run.await {
                Ok(Ok(())) if *shutdown.borrow() => return,
                Ok(Ok(())) => "run returned before shutdown".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > Duration::from_secs(60) {
                backoff.reset();
            }
            let wait = backoff.fail();
            tracing::error!(%account, %error, retry_in = ?wait, "Adapter stopped; restarting it.");
            health.crashed(&account, error);
            metrics
                .restarts
                .get_or_create(&Metrics::label(&account))
                .inc();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the future `make()` builds until it completes, building and
/// running it again after a panic (an outbox lane).
pub fn task<F, Fut>(name: String, restarts: Restarts, make: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = restarts.backoff();
        loop {
            match std::panic::AssertUnwindSafe(make()).catch_unwind().await {
                Ok(()) => return,
                Err(panic) => {
                    let wait = backoff.fail();
                    tracing::error!(task = %name, error = %panic_text(panic), retry_in = ?wait, "Task panicked; restarting it.");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    })
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
