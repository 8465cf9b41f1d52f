//! The receive side of each account: an adapter's supervised `run` and,
//! when it asks for one, its ingress listener; a bot API account's
//! listener. Started for every account at start, and by a reload for an
//! account it adds or changes; stopped by a reload for an account it
//! removes or changes (the outbox keeps the account's queue either way).
//!
//! In a cluster an instance receives only for the accounts whose lease it
//! holds ([`Role`]); for the others it runs the adapter's `serve_sends`
//! (sending only) where the adapter can, or nothing. The lease round
//! (`crate::cluster::balance`) restarts an account in its new role when
//! its lease comes or goes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_core::Adapter;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::hub::{AccountHost, Hub};
use crate::supervisor;

/// What an instance runs of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its receive side (`run`, and its ingress listener): alone, or
    /// holding the account's lease in a cluster.
    Receive,
    /// Sending only (`serve_sends`): another instance of the cluster
    /// receives for it.
    SendOnly,
    /// Nothing: another instance receives, and the adapter sends only where
    /// it receives.
    Idle,
}

/// One adapter's running receive side.
pub struct Running {
    stop: Arc<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
    role: Role,
}

impl Running {
    /// What runs.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// Stops `run` and the ingress listener and waits (a bounded time) for
    /// both to end, so a successor can take the same port and poller.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            // Open streams end only with the process: cut them after a while.
            if tokio::time::timeout(STOP_WITHIN, t).await.is_err() {
                tracing::warn!(within = ?STOP_WITHIN, "A receive side did not stop in time; cut.");
                abort.abort();
            }
        }
    }
}

/// How long a receive side has to stop before it is cut: long enough for
/// one to commit what its network handed over already (Signal's
/// `HAND_OVER`, 8 s), which is off the network's server.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A stop signal that also follows the hub's shutdown.
fn stop_signal(hub: &Hub) -> Arc<watch::Sender<bool>> {
    let stop = Arc::new(watch::Sender::new(false));
    let forward = stop.clone();
    let mut global = hub.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = global.wait_for(|s| *s) => { forward.send_replace(true); }
            () = forward.closed() => {}
        }
    });
    stop
}

/// Serves a bot API account on `listener`.
pub fn start_api(
    hub: &Arc<Hub>,
    account: &crate::config::ApiAccount,
    tokens: Arc<crate::api::auth::Tokens>,
    listener: TcpListener,
) -> Running {
    let stop = stop_signal(hub);
    let app = crate::api::router(hub.clone(), account, tokens);
    let limits = crate::serve::Limits {
        max_connections: account.max_connections,
        header_timeout: account.header_timeout,
    };
    tracing::info!(account = %account.id, addr = %account.bind, "Bot API listening.");
    let task = tokio::spawn(crate::serve::serve(listener, app, limits, stop.subscribe()));
    Running {
        stop,
        tasks: vec![task],
        role: Role::Receive,
    }
}

/// Starts `adapter`'s receive side, in this instance's role for it.
///
/// # Errors
/// When its ingress address cannot be listened on.
pub async fn start(hub: &Arc<Hub>, adapter: Arc<dyn Adapter>) -> anyhow::Result<Running> {
    let account = adapter.account().clone();
    let role = hub
        .cluster
        .as_ref()
        .map_or(Role::Receive, |c| c.role(adapter.as_ref()));
    // Stops on the hub's shutdown, or alone when a reload says so.
    let stop = stop_signal(hub);
    if role == Role::Idle {
        return Ok(Running {
            stop,
            tasks: Vec::new(),
            role,
        });
    }
    let host = Arc::new(AccountHost {
        hub: hub.clone(),
        account: account.clone(),
    });
    let mut tasks = Vec::new();
    let ingress = adapter.ingress().filter(|_| role == Role::Receive);
    if let Some((addr, ingress)) = ingress {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("{account}: cannot listen on {addr} for its ingress"))?;
        let app = crate::ingress::router(host.clone(), ingress);
        tracing::info!(%account, %addr, "Ingress listening.");
        // The same connection cap and header deadline as the API's.
        tasks.push(tokio::spawn(crate::serve::serve(
            listener,
            app,
            crate::serve::Limits::internal(),
            stop.subscribe(),
        )));
    }
    let settings = hub.settings.read().expect("settings lock").clone();
    let restarts = supervisor::Restarts {
        initial: settings.outbox.backoff_initial,
        max: settings.outbox.backoff_max,
    };
    tasks.push(supervisor::adapter(
        adapter,
        host,
        hub.health.clone(),
        hub.metrics.clone(),
        restarts,
        supervisor::Serve {
            send_only: role == Role::SendOnly,
            shutdown: stop.subscribe(),
        },
    ));
    Ok(Running { stop, tasks, role })
}
