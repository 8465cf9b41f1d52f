//! switchboard: a hub that mirrors conversations between chat networks and
//! bots, with a durable outbox so a network that is down loses nothing.
//!
//! # Layout
//! - [`cluster`]: several instances on one PostgreSQL: leases for receive
//!   sides and lanes, the feed across instances (docs/scaling.md).
//! - [`config`]: TOML + environment, raw and validated forms.
//! - [`fuzzing`]: the fuzz targets' entry points (`fuzz/`), replayed on
//!   their seed corpus by the tests.
//! - [`store`]: sqlx storage (SQLite or PostgreSQL) and its single writer.
//! - [`router`]: which destinations an event goes to.
//! - [`outbox`]: per-destination delivery lanes, backoff, circuit breakers.
//! - [`hub`]: the running pieces wired together; the adapters' `Host`.
//! - [`supervisor`]: restarts adapters and lanes that fail or panic.
//! - [`moves`]: channels a network moved (a Telegram group upgraded).
//! - [`receivers`]: each adapter's receive side (its supervised `run` and
//!   ingress listener), started and stopped per account.
//! - [`ingress`]: listeners for the routes adapters serve (appservices,
//!   network webhooks).
//! - [`health`]: one state per account, for `status` and `/metrics`.
//! - [`reload`]: SIGHUP and `switchboard reload`: a new configuration in
//!   force without a restart.
//! - [`api`]: the bot API (native `/v1`, matterbridge `/api`, webhooks).
//! - [`admin`]: the admin listener: health, metrics, the admin API and web
//!   page behind the admin token, public status pages.
//! - [`adapters`]: the one place that maps an account to its adapter.
//! - [`links`]: links made from the chats (pairing codes, `/link`,
//!   `!sb link`), on top of the configured gateways; the commands' answers;
//!   their admin API.
//! - [`cli`]: `run`, `check`, `status`, `pause`, `resume`, `reload`.
//! - [`serve`]: the API listeners' accept loop (connection cap, timeouts).
//! - [`metrics`]: Prometheus metrics.
//!
//! The normalized model and the adapter contract live in the
//! `switchboard-core` crate (`bridges/core`), which does no I/O.

pub mod adapters;
pub mod admin;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod fuzzing;
pub mod health;
pub mod hub;
pub mod ingress;
pub mod links;
pub mod metrics;
pub mod moves;
pub mod outbox;
pub mod receivers;
pub mod reload;
pub mod router;
pub mod serve;
pub mod store;
pub mod supervisor;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::Settings;
use crate::hub::{FeedSink, Hub};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::router::Router;
use crate::store::Store;

/// Runs switchboard until `stop` resolves, then shuts down gracefully:
/// listeners stop, streams end, lanes finish the send in flight, the writer
/// commits what is queued.
///
/// # Errors
/// When the store cannot be opened or a listener cannot bind.
pub async fn run(settings: Settings, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(settings, Vec::new(), stop).await
}

/// [`run`] with adapters of its caller's besides the configured ones (the
/// scripted fake of `switchboard-core`'s `test-util`, in tests); their
/// accounts may appear in `settings.gateways`.
///
/// # Errors
/// When the store cannot be opened or a listener cannot bind.
pub async fn run_with(
    settings: Settings,
    extra: Vec<Arc<dyn switchboard_core::Adapter>>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = Running::start(settings, extra).await?;
    stop.await;
    running.shutdown().await;
    Ok(())
}

/// The sockets, bound before anything else: a port conflict fails before
/// the database is touched, and clients' connections queue in the kernel
/// while the store opens.
struct Listeners {
    /// One per bot API account, in `settings.api` order.
    api: Vec<TcpListener>,
    /// `general.admin_bind`.
    admin: Option<TcpListener>,
}

impl Listeners {
    async fn bind(settings: &Settings) -> anyhow::Result<Self> {
        let mut api = Vec::new();
        for account in &settings.api {
            let listener = TcpListener::bind(account.bind).await.with_context(|| {
                format!(
                    "{}: api.{}.bind: cannot listen on {}",
                    settings.source,
                    account.id.name(),
                    account.bind
                )
            })?;
            api.push(listener);
        }
        let admin = match settings.admin_bind {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "{}: general.admin_bind: cannot listen on {addr}",
                    settings.source
                )
            })?),
            None => None,
        };
        Ok(Self { api, admin })
    }
}

/// A started switchboard: the hub and what [`Running::shutdown`] stops, in
/// order. [`run`] is this plus waiting for the stop signal; tests that run
/// the hub in their own process start one too (with the scripted fake
/// adapter), so there is one way to start a hub.
pub struct Running {
    hub: Arc<Hub>,
    store: Store,
    /// The store writer; it ends when the last handle is gone.
    writer_task: tokio::task::JoinHandle<()>,
    /// Flipped once, at shutdown.
    shutdown_tx: watch::Sender<bool>,
    /// The admin listener's server.
    servers: Vec<tokio::task::JoinHandle<()>>,
    /// What keeps a second instance off this database (alone), released
    /// once the writer finished; in a cluster the cluster holds its own.
    alone: Option<Alone>,
    /// A cluster's lease round, listener and feed pump.
    cluster_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// This instance's claim to its database when it runs alone: SQLite's lock
/// file, or PostgreSQL's exclusive advisory lock.
enum Alone {
    File(Option<store::sqlite::FileLock>),
    Database(store::postgres::InstanceLock),
}

impl Alone {
    /// Takes the claim, or says who has it and what to do; for a cluster
    /// member, the shared lock that keeps lone instances off.
    async fn take(settings: &Settings) -> Result<Claim, store::StoreError> {
        let url = settings.database.url.expose();
        if settings.cluster.is_some() {
            return Ok(Claim::Member(cluster::member_lock(settings).await?));
        }
        Ok(Claim::Alone(match store::Backend::of_url(url)? {
            store::Backend::Sqlite => Self::File(store::sqlite::FileLock::acquire(url)?),
            store::Backend::Postgres => Self::Database(
                store::postgres::InstanceLock::acquire(url, store::postgres::Membership::Alone)
                    .await?,
            ),
        }))
    }

    async fn release(self) {
        match self {
            Self::File(lock) => drop(lock),
            Self::Database(lock) => lock.release().await,
        }
    }
}

/// See [`Alone::take`].
enum Claim {
    Alone(Alone),
    Member(store::postgres::InstanceLock),
}

impl Running {
    /// Binds the listeners, opens the store, builds the hub, starts the
    /// outbox, the background tasks, every adapter's receive side (`extra`
    /// adapters too: a caller's own, whose accounts the gateways may name)
    /// and every listener.
    ///
    /// # Errors
    /// When a listener cannot bind, the store cannot be opened, or a
    /// generated token cannot be kept.
    // Longer than most on purpose: the order of the steps is the point (the
    // store before the hub, the outbox before any receiver can commit, the
    // listeners last) and reads best in one place; each step is a call.
    pub async fn start(
        settings: Settings,
        extra: Vec<Arc<dyn switchboard_core::Adapter>>,
    ) -> anyhow::Result<Self> {
        let settings = Arc::new(admin::auth::with_token(adapters::ensure_tokens(settings)?)?);
        let listeners = Listeners::bind(&settings).await?;
        // Before anything is written: one instance per database, unless
        // they are members of one cluster.
        let claim = Alone::take(&settings)
            .await
            .context("checking that this instance may use the database (database.url)")?;
        let instance = settings.cluster.as_ref().map(|c| c.instance.clone());
        let store = Store::open_with(
            &cluster::database_url(&settings),
            &store::OpenOptions {
                max_size: settings.database.max_size,
                durability: settings.database.durability,
                cluster: instance.clone(),
                ..store::OpenOptions::new(settings.database.max_connections)
            },
        )
        .await
        .context("opening the database (database.url)")?;
        let (alone, cluster) = match claim {
            Claim::Alone(a) => (Some(a), None),
            Claim::Member(lock) => (
                None,
                Some(
                    cluster::Cluster::join(&settings, &store, lock)
                        .await
                        .context("joining the cluster ([cluster])")?,
                ),
            ),
        };
        let metrics = Arc::new(Metrics::for_instance(instance.as_deref()));
        // Capacity bounds memory only: a lagging subscriber re-reads the store.
        let (feed, _) = broadcast::channel(8192);
        // Unbounded on purpose: the writer must never wait on the outbox
        // (a commit would stall behind a busy lane); a poke is two ids, at
        // most one per outbox row committed, and the follower drains them
        // as fast as it can look a lane up.
        let (pokes_tx, pokes_rx) = mpsc::unbounded_channel();
        let sink = Arc::new(FeedSink {
            feed: feed.clone(),
            pokes: pokes_tx,
            metrics: metrics.clone(),
            cluster: cluster.clone(),
        });
        let (writer, writer_task) = store::writer::spawn(store.clone(), sink);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Channels networks moved earlier, before anything is routed.
        let moves = Arc::new(moves::Moves::default());
        for (account, from, to) in store
            .channel_moves()
            .await
            .context("reading channel moves")?
        {
            moves.insert(&account, &from, &to);
        }
        // Links made from chats, on top of the configuration's gateways.
        let links = links::Links::new(
            links::store::load(&store)
                .await
                .context("reading the links made from chats")?,
        );
        let routed = links.effective(&settings);
        let built = adapters::build(&settings);
        let mut adapters = built.all;
        adapters.extend(extra);
        let outbox = Outbox::new(
            store.clone(),
            writer.clone(),
            settings.outbox.clone(),
            metrics.clone(),
            adapters.clone(),
            shutdown_rx.clone(),
        );
        let api_tokens = settings
            .api
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    Arc::new(api::auth::Tokens::new(a.id.clone(), &a.tokens)),
                )
            })
            .collect();
        let hub = Arc::new(Hub {
            settings: std::sync::RwLock::new(settings.clone()),
            api_tokens: std::sync::RwLock::new(api_tokens),
            webhooks: std::sync::RwLock::new(built.webhooks),
            store: store.clone(),
            writer,
            router: Router::new(&routed, moves.clone()),
            feed,
            outbox: outbox.clone(),
            metrics,
            health: Arc::default(),
            shutdown: shutdown_rx.clone(),
            receivers: std::sync::Mutex::default(),
            listeners: std::sync::Mutex::default(),
            links,
            cluster: cluster.clone(),
        });
        outbox.announce_to(spawn_announcer(&hub));
        let weak = Arc::downgrade(&hub);
        outbox.hosts_from(move |account| {
            let hub = weak.upgrade()?;
            Some(Arc::new(hub::AccountHost {
                hub,
                account: account.clone(),
            }) as Arc<dyn switchboard_core::Host>)
        });
        outbox.follow_moves(moves);
        outbox.set_gateways(&routed.gateways);
        if cluster.is_some() {
            outbox.set_cluster();
        }
        outbox.start(pokes_rx).await.context("reading the outbox")?;
        store.spawn_checkpointer(shutdown_rx.clone());
        spawn_retention(&hub);
        let mut cluster_tasks = Vec::new();
        if let Some(c) = &cluster {
            // The first lease round starts every account in its role (and
            // the lanes this instance takes); later rounds follow.
            let mut balancer = cluster::balance::Balancer::new(hub.clone());
            balancer
                .first()
                .await
                .context("taking this instance's first leases")?;
            cluster_tasks.push(balancer.spawn(shutdown_rx.clone()));
            cluster_tasks.push(cluster::listen::spawn(
                hub.clone(),
                cluster::database_url(&settings),
                shutdown_rx.clone(),
            ));
            cluster_tasks.push(
                cluster::feed::spawn(
                    c.clone(),
                    store.clone(),
                    hub.feed.clone(),
                    shutdown_rx.clone(),
                )
                .await
                .context("reading the feed")?,
            );
        } else {
            for adapter in adapters {
                let account = adapter.account().clone();
                let running = receivers::start(&hub, adapter).await?;
                hub.receivers
                    .lock()
                    .expect("receivers lock")
                    .insert(account, running);
            }
        }
        for (account, listener) in settings.api.iter().zip(listeners.api) {
            let tokens = hub.api_tokens.read().expect("tokens lock")[&account.id].clone();
            let running = receivers::start_api(&hub, account, tokens, listener);
            hub.listeners
                .lock()
                .expect("listeners lock")
                .insert(account.id.clone(), running);
        }
        let mut servers = Vec::new();
        if let Some(listener) = listeners.admin {
            let app = admin::router(
                hub.clone(),
                settings
                    .admin_token
                    .clone()
                    .expect("set with the admin listener"),
            );
            tracing::info!(addr = ?settings.admin_bind, "Admin listener (healthz, metrics, status pages, admin API and page) listening.");
            servers.push(tokio::spawn(serve::serve(
                listener,
                app,
                serve::Limits::internal(),
                shutdown_rx.clone(),
            )));
        }
        #[cfg(unix)]
        spawn_reload_on_sighup(&hub);
        tracing::info!(
            gateways = settings.gateways.len(),
            "switchboard is running."
        );
        Ok(Self {
            hub,
            store,
            writer_task,
            shutdown_tx,
            servers,
            alone,
            cluster_tasks,
        })
    }

    /// The running hub: its store, writer, outbox, health.
    #[must_use]
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Stops in order: listeners, then receive loops, then the lanes (each
    /// finishing its send in flight), then the writer (committing its
    /// queue), then the store.
    pub async fn shutdown(self) {
        let Self {
            hub,
            store,
            mut writer_task,
            shutdown_tx,
            servers,
            alone,
            cluster_tasks,
        } = self;
        tracing::info!("Shutting down: finishing sends in flight.");
        let _ = shutdown_tx.send(true);
        for s in servers.into_iter().chain(cluster_tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        // The API listeners finish the requests in flight; receive loops stop
        // (each already has the shutdown signal).
        let running: Vec<receivers::Running> = {
            let mut l = hub.listeners.lock().expect("listeners lock");
            let mut r = hub.receivers.lock().expect("receivers lock");
            l.drain()
                .map(|(_, v)| v)
                .chain(r.drain().map(|(_, v)| v))
                .collect()
        };
        futures_util::future::join_all(running.into_iter().map(receivers::Running::stop)).await;
        let outbox = hub.outbox.clone();
        outbox.join().await;
        // Receive sides and lanes stopped: their leases go to the others.
        if let Some(c) = &hub.cluster {
            c.leave().await;
        }
        drop(hub);
        drop(outbox);
        // The writer ends when the last handle is gone, after committing its
        // queue; a handle held by a stuck connection must not block exit.
        if tokio::time::timeout(Duration::from_secs(5), &mut writer_task)
            .await
            .is_err()
        {
            // Something (a client that stopped reading) still holds the hub.
            // Everything acknowledged is committed already; stop waiting.
            tracing::warn!("The store writer did not finish in time; stopping it.");
            writer_task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), store.close()).await;
        if let Some(alone) = alone {
            alone.release().await;
        }
        tracing::info!("Stopped.");
    }
}

/// The task that commits the outbox's outage announcements as notices;
/// returns where to send them. Unbounded: an announcement is one per
/// outage and recovery of a destination (a handful), and the lanes that
/// report them must never wait on the store.
fn spawn_announcer(hub: &Arc<Hub>) -> mpsc::UnboundedSender<outbox::notices::Announcement> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hub = hub.clone();
    let mut shutdown = hub.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                a = rx.recv() => a,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let Some(a) = next else { return };
            hub.announce(a).await;
        }
    });
    tx
}

/// The retention pass, asking before each pass for the settings in force
/// (a reload's `[retention]` applies). The hub is held weakly so the task
/// never keeps it (and the writer) alive at shutdown.
fn spawn_retention(hub: &Arc<Hub>) {
    let weak = Arc::downgrade(hub);
    let metrics = hub.metrics.clone();
    store::retention::spawn(
        hub.writer.clone(),
        move || {
            let hub = weak.upgrade()?;
            // In a cluster, one instance prunes for all.
            if hub.cluster.as_ref().is_some_and(|c| !c.runs_retention()) {
                return None;
            }
            let settings = hub.settings.read().expect("settings lock");
            settings.retention
        },
        move |pruned| {
            for (table, n) in pruned.tables() {
                metrics
                    .pruned
                    .get_or_create(&metrics::TableLabel {
                        table: table.to_owned(),
                    })
                    .inc_by(n);
            }
        },
        hub.shutdown.clone(),
    );
}

/// SIGHUP reloads the configuration (errors are logged by the reload;
/// nothing changes then).
#[cfg(unix)]
fn spawn_reload_on_sighup(hub: &Arc<Hub>) {
    let hub = hub.clone();
    let mut shutdown = hub.shutdown.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let _ = hub.reload().await;
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
