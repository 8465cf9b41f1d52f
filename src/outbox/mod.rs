//! The outbox: delivers committed rows to their destinations.
//!
//! One [`AccountWorker`] per destination account owns the adapter and a
//! circuit breaker; under it, one lane task per destination channel sends
//! that channel's rows one at a time, in row order. So a destination that is
//! down, slow or rate-limited only holds up its own lane (or, when the whole
//! account is down, its own account), never anyone else.
//!
//! A destination that takes several rows in one request
//! ([`Adapter::batch_limit`] above 1: a webhook with `batch` set) gets the
//! consecutive rows already waiting in one [`Adapter::send_batch`], all or
//! nothing, and they are marked sent in one store write (see
//! `deliver_batch`).
//!
//! A row is marked sent only after the network accepted it. Rows stay
//! `pending` until then, so after a crash the head of each lane is simply
//! sent again: there is no separate in-flight state to reset.
//!
//! # Layout
//! - this file: the dispatcher and the lane loop.
//! - [`breaker`]: the per-account circuit breaker.
//! - [`notices`]: outage and recovery announcements per destination.
//! - [`requeue`]: dead letters put back in their lane, in order.
//! - `held`: lanes in a cluster, which run where their lease is held.

pub mod breaker;
mod held;
pub mod notices;
pub mod requeue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::{degrade, AccountId, Adapter, ChannelId, GatewayName, RetryKind, SendError};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::OutboxSettings;
use crate::metrics::Metrics;
use crate::store::writer::MapEntry;
use crate::store::{now_ms, PendingRow, RowUpdate, Store, WriterHandle};
use breaker::Breaker;

/// Where an admin's pause is remembered (the account's key-value space).
const PAUSED_KEY: &str = "switchboard.paused";

/// Rows fetched per lane query.
const LANE_BATCH: i64 = 64;

/// One destination account: its adapter, breaker and lanes.
struct AccountWorker {
    /// Replaced when a reload changes the account's connection; a send in
    /// flight finishes with the adapter it started with.
    adapter: std::sync::RwLock<Arc<dyn Adapter>>,
    breaker: Breaker,
    /// Held by an admin (`switchboard pause`): lanes send nothing until
    /// resumed; rows queue up and drain in order afterwards.
    paused: watch::Sender<bool>,
    /// Lane wake-ups by channel; std mutex, never held across await.
    lanes: Mutex<HashMap<ChannelId, Arc<Notify>>>,
    /// Channels a reload removed from every gateway: their lanes
    /// dead-letter what is queued ("removed from config"), each row through
    /// the same path as any dead letter. Std mutex, never held across await.
    retired: Mutex<std::collections::HashSet<ChannelId>>,
    /// Pacing slots; std mutex, never held across await.
    next_send: Mutex<NextSend>,
    /// Counts the adapter's reports of being ready (connected); a lane
    /// whose send found the adapter still starting waits for the next.
    ready: watch::Sender<u64>,
    /// Until when (Unix ms) the network is pacing this account, from its
    /// last rate-limit answer; cleared by the next success.
    rate_limited_until: Mutex<Option<i64>>,
    /// Channels the network says cannot be reached until someone acts
    /// (the bot removed from a group): the network's words and since when
    /// (Unix ms). Cleared by the channel's next success. Std mutex.
    channel_problems: Mutex<HashMap<ChannelId, (String, i64)>>,
    /// Each lane's coordination with an admin's requeue (see [`requeue`]).
    /// Std mutex, never held across await.
    gates: Mutex<HashMap<ChannelId, Arc<requeue::LaneGate>>>,
}

impl AccountWorker {
    fn new(adapter: Arc<dyn Adapter>, probe: Duration) -> Self {
        Self {
            adapter: std::sync::RwLock::new(adapter),
            breaker: Breaker::new(probe),
            paused: watch::Sender::new(false),
            lanes: Mutex::new(HashMap::new()),
            retired: Mutex::new(std::collections::HashSet::new()),
            next_send: Mutex::new(NextSend {
                account: Instant::now(),
                lanes: HashMap::new(),
            }),
            ready: watch::Sender::new(0),
            rate_limited_until: Mutex::new(None),
            channel_problems: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The lane's gate (see [`requeue`]), made on first use.
    fn gate(&self, channel: &ChannelId) -> Arc<requeue::LaneGate> {
        self.gates
            .lock()
            .expect("gates lock")
            .entry(channel.clone())
            .or_default()
            .clone()
    }

    /// The adapter in force.
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.read().expect("adapter lock").clone()
    }

    /// Waits until the network's pacing lets this lane send: a least time
    /// between sends on the channel and on the whole account.
    async fn pace(&self, channel: &ChannelId, pacing: &switchboard_core::Pacing) {
        if pacing.per_channel.is_none() && pacing.per_account.is_none() {
            return;
        }
        let at = {
            let mut next = self.next_send.lock().expect("pacing lock");
            let now = Instant::now();
            let lane = next.lanes.get(channel).copied().unwrap_or(now);
            let at = now.max(lane).max(next.account);
            if let Some(d) = pacing.per_channel {
                next.lanes.insert(channel.clone(), at + d);
            }
            if let Some(d) = pacing.per_account {
                next.account = at + d;
            }
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

impl AccountWorker {
    /// A send to `channel` succeeded: the channel is reachable and the
    /// network no longer paces the account.
    fn sent_ok(&self, channel: &ChannelId) {
        *self.rate_limited_until.lock().expect("rate limit lock") = None;
        let mut problems = self.channel_problems.lock().expect("channel problems lock");
        if problems.remove(channel).is_some() {
            tracing::info!(%channel, "The channel is reachable again.");
        }
    }

    /// The network paced a send (`kind` carries its retry-after).
    fn rate_limited(&self, kind: &RetryKind) {
        let wait = match kind {
            RetryKind::Transient { retry_after } | RetryKind::AccountDown { retry_after } => {
                retry_after.unwrap_or(Duration::from_secs(1))
            }
            _ => Duration::from_secs(1),
        };
        let until = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        *self.rate_limited_until.lock().expect("rate limit lock") = Some(until);
    }

    /// The network says `channel` needs an admin's action (`what`).
    fn channel_down(&self, channel: &ChannelId, what: &str) {
        let mut problems = self.channel_problems.lock().expect("channel problems lock");
        let first = !problems.contains_key(channel);
        let since = problems
            .get(channel)
            .map_or_else(now_ms, |(_, since)| *since);
        problems.insert(channel.clone(), (what.to_owned(), since));
        drop(problems);
        if first {
            tracing::warn!(%channel, reason = %what, "The channel cannot be reached until someone acts on the network; its messages wait.");
        }
    }
}

/// When each lane, and the account, may send next.
struct NextSend {
    account: Instant,
    lanes: HashMap<ChannelId, Instant>,
}

struct Inner {
    store: Store,
    writer: WriterHandle,
    settings: OutboxSettings,
    metrics: Arc<Metrics>,
    /// Destination accounts; a reload adds accounts or swaps their
    /// adapters. A std lock held only to look one up or insert one.
    accounts: std::sync::RwLock<HashMap<AccountId, Arc<AccountWorker>>>,
    /// Flips to true on shutdown; lanes finish the send in flight and stop.
    shutdown: watch::Receiver<bool>,
    /// Lane tasks, awaited on shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The task following the writer's pokes; it never ends by itself.
    follower: Mutex<Option<JoinHandle<()>>>,
    /// Destinations that are failing, for outage notices.
    outages: notices::Outages,
    /// Where announcements go; unset (no notices) until
    /// [`Outbox::announce_to`].
    notices: std::sync::OnceLock<mpsc::UnboundedSender<notices::Announcement>>,
    /// Each gateway's delivery policy; replaced by a reload. A std lock
    /// held only for a lookup or a swap.
    gateways: std::sync::RwLock<HashMap<GatewayName, GatewayPolicy>>,
    /// Channels that moved, shared with the router; unset (a move is a
    /// dead letter) until [`Outbox::follow_moves`].
    moves: std::sync::OnceLock<Arc<crate::moves::Moves>>,
    /// Each account's host for its adapter's sends (see
    /// [`Outbox::hosts_from`]); unset, nothing is sent.
    hosts: std::sync::OnceLock<Hosts>,
    /// In a cluster, the lanes this instance holds (see `held`).
    held: held::HeldLanes,
}

/// Makes an account's [`Host`](switchboard_core::Host) for one send;
/// `None` once the hub is gone (shutting down).
type Hosts = Box<dyn Fn(&AccountId) -> Option<Arc<dyn switchboard_core::Host>> + Send + Sync>;

/// What the outbox needs to know of a gateway.
#[derive(Debug, Clone, Default)]
struct GatewayPolicy {
    /// After how long unreachable a destination is announced down.
    notice_after: Option<Duration>,
    /// After how long a message shows its original time.
    late_after: Option<Duration>,
    /// How relayed messages show their author (`nick_format`).
    nick_format: Option<String>,
}

/// Handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// Live state of one destination account, for `switchboard status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountState {
    /// `<network>.<name>`.
    pub account: String,
    /// `ok` or `paused` (breaker open).
    pub state: &'static str,
    /// Until when (Unix ms) the network paces the account, if it does.
    pub rate_limited_until_ms: Option<i64>,
    /// Channels that need an admin on the network: (channel, the network's
    /// words, since when in Unix ms).
    pub channels: Vec<(ChannelId, String, i64)>,
}

impl Outbox {
    /// Builds the outbox over the given adapters.
    #[must_use]
    pub fn new(
        store: Store,
        writer: WriterHandle,
        settings: OutboxSettings,
        metrics: Arc<Metrics>,
        adapters: Vec<Arc<dyn Adapter>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let accounts = adapters
            .into_iter()
            .map(|a| {
                (
                    a.account().clone(),
                    Arc::new(AccountWorker::new(a, settings.breaker_probe)),
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                store,
                writer,
                settings,
                metrics,
                accounts: std::sync::RwLock::new(accounts),
                shutdown,
                tasks: Mutex::new(Vec::new()),
                follower: Mutex::new(None),
                outages: notices::Outages::default(),
                notices: std::sync::OnceLock::new(),
                gateways: std::sync::RwLock::new(HashMap::new()),
                moves: std::sync::OnceLock::new(),
                hosts: std::sync::OnceLock::new(),
                held: held::HeldLanes::default(),
            }),
        }
    }

    /// Lets a network move a channel: the move is recorded in `moves` (which
    /// the router reads) and in the store.
    pub fn follow_moves(&self, moves: Arc<crate::moves::Moves>) {
        let _ = self.inner.moves.set(moves);
    }

    /// Where sends get their account's host: `hosts` makes one per send,
    /// holding the hub only for the send (the hub holds the outbox, so the
    /// outbox must not hold the hub). Call before [`start`](Self::start).
    pub fn hosts_from(
        &self,
        hosts: impl Fn(&AccountId) -> Option<Arc<dyn switchboard_core::Host>> + Send + Sync + 'static,
    ) {
        let _ = self.inner.hosts.set(Box::new(hosts));
    }

    /// Turns outage notices on: announcements go to `tx`. Call before
    /// [`start`](Self::start).
    pub fn announce_to(&self, tx: mpsc::UnboundedSender<notices::Announcement>) {
        let _ = self.inner.notices.set(tx);
    }

    /// Puts the gateways' delivery settings (`notice_after`, `late_after`)
    /// in force: at start and on every reload.
    pub fn set_gateways(&self, gateways: &[crate::config::Gateway]) {
        *self.inner.gateways.write().expect("gateways lock") = gateways
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    GatewayPolicy {
                        notice_after: g.notice_after,
                        late_after: g.late_after,
                        nick_format: g.nick_format.clone(),
                    },
                )
            })
            .collect();
    }

    /// Starts lanes for every channel with pending rows, then follows
    /// `pokes` (sent by the store writer after each commit).
    ///
    /// # Errors
    /// When the pending lanes cannot be read.
    pub async fn start(
        &self,
        pokes: mpsc::UnboundedReceiver<(AccountId, ChannelId)>,
    ) -> Result<(), crate::store::StoreError> {
        let accounts: Vec<(AccountId, Arc<AccountWorker>)> = self
            .inner
            .accounts
            .read()
            .expect("accounts lock")
            .iter()
            .map(|(a, w)| (a.clone(), w.clone()))
            .collect();
        for (account, w) in &accounts {
            if self
                .inner
                .store
                .adapter_state(account, PAUSED_KEY)
                .await?
                .as_deref()
                == Some("1")
            {
                tracing::warn!(%account, "Delivery stays paused (switchboard resume {account}).");
                w.paused.send_replace(true);
            }
        }
        // In a cluster, lanes start as their leases are taken, and each
        // takes its own outage back then (see `held`).
        if !self.in_cluster() {
            self.start_pending().await?;
        }
        for q in self.inner.store.queues().await? {
            self.inner
                .metrics
                .queue_depth
                .get_or_create(&Metrics::label(&q.account))
                .set(q.pending);
        }
        self.follow(pokes);
        Ok(())
    }

    /// Takes back the outages announced before a restart and starts a lane
    /// for every channel with pending rows.
    async fn start_pending(&self) -> Result<(), crate::store::StoreError> {
        // Before any lane runs: a lane failing in an outage announced before
        // the restart goes on with it instead of starting a new one.
        let resumed = self
            .inner
            .outages
            .resume(self.inner.store.adapter_states(notices::KEY_PREFIX).await?);
        if resumed > 0 {
            tracing::info!(
                outages = resumed,
                "Outages announced before the restart go on."
            );
        }
        let mut pending = std::collections::HashSet::new();
        for (account, channel) in self.inner.store.lanes_with_pending().await? {
            match (account.parse::<AccountId>(), ChannelId::new(channel)) {
                (Ok(a), Ok(c)) => {
                    pending.insert((a, c));
                }
                _ => {
                    tracing::warn!(%account, "Pending rows for an unparsable destination; skipped.")
                }
            }
        }
        if let Some(tx) = self.inner.notices.get() {
            self.inner.outages.settle_idle(&pending, &mut |a| {
                let _ = tx.send(a);
            });
        }
        for (a, c) in &pending {
            self.poke(a, c);
        }
        Ok(())
    }

    /// Follows the writer's pokes, and announces outages as they become due.
    fn follow(&self, mut pokes: mpsc::UnboundedReceiver<(AccountId, ChannelId)>) {
        let this = self.clone();
        let task = tokio::spawn(async move {
            while let Some((a, c)) = pokes.recv().await {
                this.poke(&a, &c);
            }
        });
        *self.inner.follower.lock().expect("follower lock") = Some(task);
        if self.inner.notices.get().is_some() {
            let inner = self.inner.clone();
            let mut shutdown = self.inner.shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    let Some(tx) = inner.notices.get() else {
                        return;
                    };
                    if !inner.outages.any_unannounced() {
                        continue;
                    }
                    let policies = inner.gateways.read().expect("gateways lock").clone();
                    inner.outages.due(
                        &|g| policies.get(g).and_then(|p| p.notice_after),
                        &mut |a| {
                            let _ = tx.send(a);
                        },
                    );
                }
            });
        }
    }

    /// Records that `from` now lives as `to` (the network said so while
    /// receiving): the store moves its queue and message map, the router
    /// follows, and the new lane starts.
    ///
    /// # Errors
    /// When the store cannot record it.
    pub async fn record_move(
        &self,
        account: &AccountId,
        from: &ChannelId,
        to: &ChannelId,
    ) -> Result<(), crate::store::StoreError> {
        if from == to {
            return Ok(());
        }
        self.inner.store.move_channel(account, from, to).await?;
        if let Some(moves) = self.inner.moves.get() {
            moves.insert(account, from, to);
        }
        tracing::warn!(%account, %from, %to, "The channel moved; its queue and message map follow it.");
        self.poke(account, to);
        Ok(())
    }

    /// Puts `adapter` in force for its account (a reload added the account
    /// or changed its connection): a new account gets its worker, with an
    /// admin's pause read back; a known one keeps its lanes, queue and
    /// breaker, and its next send goes through the new adapter.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn install(&self, adapter: Arc<dyn Adapter>) -> Result<(), crate::store::StoreError> {
        let account = adapter.account().clone();
        let existing = self.worker(&account);
        if let Some(w) = existing {
            *w.adapter.write().expect("adapter lock") = adapter;
            return Ok(());
        }
        let paused = self
            .inner
            .store
            .adapter_state(&account, PAUSED_KEY)
            .await?
            .as_deref()
            == Some("1");
        let w = Arc::new(AccountWorker::new(
            adapter,
            self.inner.settings.breaker_probe,
        ));
        w.paused.send_replace(paused);
        self.inner
            .accounts
            .write()
            .expect("accounts lock")
            .entry(account.clone())
            .or_insert(w);
        for (a, channel) in self.inner.store.lanes_with_pending().await? {
            if a == account.to_string() {
                if let Ok(c) = ChannelId::new(channel) {
                    self.poke(&account, &c);
                }
            }
        }
        Ok(())
    }

    /// The gate of a lane (see [`requeue`]); a lane of an account without
    /// a worker gets one of its own, which no lane waits on.
    fn gate(&self, account: &AccountId, channel: &ChannelId) -> Arc<requeue::LaneGate> {
        self.worker(account)
            .map_or_else(Arc::default, |w| w.gate(channel))
    }

    fn worker(&self, account: &AccountId) -> Option<Arc<AccountWorker>> {
        self.inner
            .accounts
            .read()
            .expect("accounts lock")
            .get(account)
            .cloned()
    }

    /// Wakes (starting if needed) the lane of one destination channel. In
    /// a cluster, only a lane this instance holds (see `held`).
    pub fn poke(&self, account: &AccountId, channel: &ChannelId) {
        let cluster = self.in_cluster();
        if cluster && !self.inner.held.holds(account, channel) {
            return;
        }
        let Some(worker) = self.worker(account) else {
            tracing::warn!(%account, %channel, "No adapter for destination; rows stay queued.");
            return;
        };
        let mut lanes = worker.lanes.lock().expect("lanes lock");
        if let Some(n) = lanes.get(channel) {
            n.notify_one();
            return;
        }
        // In a cluster only `hold_lane` starts a lane: a poke that comes
        // between its taking the lease and its registering the lane would
        // otherwise start a second task on the same queue (both read the
        // same pending rows: each sent twice). Nothing is missed: a lane
        // reads its queue before it first waits.
        if cluster {
            return;
        }
        let notify = Arc::new(Notify::new());
        lanes.insert(channel.clone(), notify.clone());
        drop(lanes);
        let stop = self.inner.shutdown.clone();
        let task = self.spawn_lane(account, channel, notify, stop, None);
        self.inner.tasks.lock().expect("tasks lock").push(task);
    }

    /// Runs a lane until `stop`: restarted if it panics (its rows are
    /// still pending).
    fn spawn_lane(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        notify: Arc<Notify>,
        stop: watch::Receiver<bool>,
        orphaned: Option<Duration>,
    ) -> JoinHandle<()> {
        let inner = self.inner.clone();
        let (a, c) = (account.clone(), channel.clone());
        let restarts = crate::supervisor::Restarts {
            initial: inner.settings.backoff_initial,
            max: inner.settings.backoff_max,
        };
        crate::supervisor::task(format!("lane {a} {c}"), restarts, move || {
            let held = LaneStart {
                stop: stop.clone(),
                orphaned,
            };
            lane(inner.clone(), a.clone(), c.clone(), notify.clone(), held)
        })
    }

    /// A reload removed `account`/`channel` from every gateway: its queued
    /// rows become dead letters. `retired = false` takes it back (a later
    /// reload added it again).
    pub fn retire(&self, account: &AccountId, channel: &ChannelId, retired: bool) {
        let Some(w) = self.worker(account) else {
            return;
        };
        let mut set = w.retired.lock().expect("retired lock");
        let changed = if retired {
            set.insert(channel.clone())
        } else {
            set.remove(channel)
        };
        drop(set);
        if changed && retired {
            self.poke(account, channel);
        }
    }

    /// Pauses or resumes delivery to `account`, remembered across restarts.
    /// False when no such destination account exists.
    ///
    /// # Errors
    /// When the store cannot record it.
    pub async fn set_paused(
        &self,
        account: &AccountId,
        paused: bool,
    ) -> Result<bool, crate::store::StoreError> {
        let Some(w) = self.worker(account) else {
            return Ok(false);
        };
        self.inner
            .writer
            .state(
                account.clone(),
                PAUSED_KEY.into(),
                if paused { "1" } else { "0" }.into(),
            )
            .await?;
        w.paused.send_replace(paused);
        tracing::info!(%account, paused, "Delivery {}.", if paused { "paused by an admin" } else { "resumed" });
        Ok(true)
    }

    /// Whether an admin paused delivery to `account`.
    #[must_use]
    pub fn is_paused(&self, account: &str) -> bool {
        self.inner
            .accounts
            .read()
            .expect("accounts lock")
            .iter()
            .any(|(a, w)| a.to_string() == account && *w.paused.borrow())
    }

    /// Whether `account`'s breaker is open (it is unreachable).
    #[must_use]
    pub fn is_down(&self, account: &str) -> bool {
        self.inner
            .accounts
            .read()
            .expect("accounts lock")
            .iter()
            .any(|(a, w)| a.to_string() == account && w.breaker.is_open())
    }

    /// The account's adapter reports it is connected (after starting or a
    /// reconnect): sends that waited for it go now, and an open breaker
    /// probes at once instead of waiting out its timer.
    pub fn ready(&self, account: &AccountId) {
        if let Some(w) = self.worker(account) {
            w.ready.send_modify(|n| *n = n.wrapping_add(1));
            w.breaker.probe_now();
        }
    }

    /// Breaker states of every destination account.
    #[must_use]
    pub fn states(&self) -> Vec<AccountState> {
        let now = now_ms();
        let mut v: Vec<AccountState> = self
            .inner
            .accounts
            .read()
            .expect("accounts lock")
            .iter()
            .map(|(a, w)| {
                let mut channels: Vec<(ChannelId, String, i64)> = w
                    .channel_problems
                    .lock()
                    .expect("channel problems lock")
                    .iter()
                    .map(|(c, (what, since))| (c.clone(), what.clone(), *since))
                    .collect();
                channels.sort();
                AccountState {
                    account: a.to_string(),
                    state: if w.breaker.is_open() { "paused" } else { "ok" },
                    rate_limited_until_ms: w
                        .rate_limited_until
                        .lock()
                        .expect("rate limit lock")
                        .filter(|until| *until > now),
                    channels,
                }
            })
            .collect();
        v.sort_by(|a, b| a.account.cmp(&b.account));
        v
    }

    /// Waits for every lane to stop (after shutdown was signalled).
    pub async fn join(&self) {
        if let Some(f) = self.inner.follower.lock().expect("follower lock").take() {
            f.abort();
        }
        let mut tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().expect("tasks lock"));
        tasks.extend(self.inner.held.take_tasks());
        for t in tasks {
            if t.is_finished() {
                continue;
            }
            let _ =
                tokio::time::timeout(self.inner.settings.send_timeout + Duration::from_secs(1), t)
                    .await;
        }
    }
}

/// How a lane starts: what stops it (the hub's shutdown; in a cluster,
/// also its lease given back or lost), and in a cluster how long nobody
/// drove it before this instance took it.
struct LaneStart {
    stop: watch::Receiver<bool>,
    orphaned: Option<Duration>,
}

#[tracing::instrument(name = "lane", skip(inner, notify, start), fields(%account, %channel))]
async fn lane(
    inner: Arc<Inner>,
    account: AccountId,
    channel: ChannelId,
    notify: Arc<Notify>,
    start: LaneStart,
) {
    let Some(worker) = inner
        .accounts
        .read()
        .expect("accounts lock")
        .get(&account)
        .cloned()
    else {
        return;
    };
    let mut shutdown = start.stop;
    let cluster = inner.held.enabled();
    let mut taken = cluster.then(|| held_lane_start(&inner, &account, &channel, start.orphaned));
    let mut after = 0;
    let gate = worker.gate(&channel);
    let _driver = tokio::select! {
        guard = gate.drive() => guard,
        _ = shutdown.wait_for(|s| *s) => return,
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        // An admin put a dead letter back in its old place: go back to it.
        after = gate.read_after(after);
        // Several instances commit rows: one with a smaller id may commit
        // after this lane read past it, so a lane in a cluster reads its
        // queue from the start (the index starts at its first pending row).
        if cluster {
            after = 0;
        }
        // Read each round: a reload may change a webhook's `batch`.
        let limit = worker.adapter().batch_limit(&channel).max(1);
        let fetch = LANE_BATCH.max(i64::try_from(limit).unwrap_or(LANE_BATCH));
        let rows = match inner.store.pending(&account, &channel, after, fetch).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the outbox; retrying.");
                if !pause(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if let Some(start) = taken.take() {
            start.await.first_read(&inner, &account, &channel, &rows);
        }
        if rows.is_empty() {
            // Caught up: a destination that was announced down is back.
            if let Some(tx) = inner.notices.get() {
                inner.outages.drained(&account, &channel, &mut |a| {
                    let _ = tx.send(a);
                });
            }
            tokio::select! {
                () = notify.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut rows = rows.into_iter().peekable();
        while let Some(row) = rows.next() {
            if *shutdown.borrow() {
                return;
            }
            let row = match row {
                Ok(row) => row,
                Err(poison) => {
                    // One undecodable row must not block the lane behind it.
                    tracing::error!(row = poison.id, reason = %poison.reason, "Outbox row cannot be decoded; dead-lettered.");
                    let reason = format!("undecodable row: {}", poison.reason);
                    if !dead_letter(&inner, &account, poison.id, reason, &mut shutdown).await {
                        return;
                    }
                    after = poison.id;
                    continue;
                }
            };
            // What waits right behind it joins it, up to the destination's
            // batch limit: only rows already read, so a lone message goes
            // at once and latency never grows to fill a batch. A row with
            // pieces sent already finishes on its own.
            let mut batch = vec![row];
            while batch.len() < limit && batch[0].parts_sent == 0 {
                match rows.next_if(|r| r.as_ref().is_ok_and(|r| r.parts_sent == 0)) {
                    Some(Ok(r)) => batch.push(r),
                    _ => break,
                }
            }
            if batch.len() > 1 {
                let last = batch.last().map_or(after, |r| r.id);
                let Some(done) =
                    deliver_batch(&inner, &worker, &account, &channel, batch, &mut shutdown).await
                else {
                    return;
                };
                after = done;
                // Not all handled (the batch was cut short, or a requeue
                // rewound the lane): read again from where it got to.
                if done != last || gate.rewinds_before(i64::MAX) {
                    break;
                }
                continue;
            }
            let row = batch.pop().expect("one row");
            let id = row.id;
            if !deliver(&inner, &worker, &account, &channel, row, &mut shutdown).await {
                return;
            }
            after = id;
            if gate.rewinds_before(i64::MAX) {
                break;
            }
        }
    }
}

/// A lane just taken in a cluster: its outage, if the previous holder
/// announced one, is taken back from the store before its first rows.
async fn held_lane_start(
    inner: &Inner,
    account: &AccountId,
    channel: &ChannelId,
    orphaned: Option<Duration>,
) -> TakenLane {
    let key = format!("{}{channel}", notices::KEY_PREFIX);
    match inner.store.adapter_state(account, &key).await {
        Ok(Some(value)) => {
            inner
                .outages
                .resume(vec![(account.to_string(), key, value)]);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "Cannot read the lane's outage; at worst it is announced again.");
        }
    }
    TakenLane { orphaned }
}

/// See [`held_lane_start`].
struct TakenLane {
    orphaned: Option<Duration>,
}

impl TakenLane {
    /// With the lane's first rows: an outage taken back with nothing queued
    /// is over; a lane nobody drove for longer than its gateway's
    /// `notice_after` (the takeover outlasted it) is announced down at once
    /// (and back when it drained). An instance dying is not a network
    /// outage: a quicker takeover says nothing.
    fn first_read(
        self,
        inner: &Inner,
        account: &AccountId,
        channel: &ChannelId,
        rows: &[Result<PendingRow, crate::store::PoisonRow>],
    ) {
        let Some(tx) = inner.notices.get() else {
            return;
        };
        let mut send = |a| {
            let _ = tx.send(a);
        };
        match rows.first() {
            None => inner.outages.settle_lane(account, channel, &mut send),
            Some(Ok(row)) => {
                let Some(idle) = self.orphaned else {
                    return;
                };
                let after = inner
                    .gateways
                    .read()
                    .expect("gateways lock")
                    .get(&row.gateway)
                    .and_then(|p| p.notice_after);
                if after.is_some_and(|after| idle >= after) {
                    tracing::warn!(%account, %channel, idle = ?idle, "Nobody drove this lane for longer than notice_after; announcing it.");
                    inner
                        .outages
                        .overdue(account, channel, &row.gateway, idle, &mut send);
                }
            }
            Some(Err(_)) => {}
        }
    }
}

/// Ids of one piece of a split message are numbered from `piece * PART_STRIDE`
/// (an album of up to this many files per piece).
const PART_STRIDE: i64 = 64;

/// The referenced event as `account`/`channel` knows it, if it got it.
async fn reference(
    store: &Store,
    id: switchboard_core::EventId,
    account: &AccountId,
    channel: &ChannelId,
) -> Result<Option<switchboard_core::Reference>, crate::store::StoreError> {
    let ids = store.remote_ids_at(id, account, channel).await?;
    if ids.is_empty() {
        return Ok(None);
    }
    Ok(store
        .event(id)
        .await?
        .map(|event| switchboard_core::Reference {
            event: Box::new(event),
            ids,
        }))
}

/// Sleeps unless shutdown comes first; false on shutdown.
async fn pause(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => !*shutdown.borrow(),
        _ = shutdown.changed() => false,
    }
}

/// Marks a row dead with `reason` and counts it; false on shutdown.
async fn dead_letter(
    inner: &Inner,
    account: &AccountId,
    id: i64,
    reason: String,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if !record(inner, id, RowUpdate::Dead { reason }, shutdown).await {
        return false;
    }
    let label = Metrics::label(account);
    inner.metrics.dead_letters.get_or_create(&label).inc();
    inner.metrics.queue_depth.get_or_create(&label).dec();
    true
}

/// Records a row update, retrying until the store takes it; false on shutdown.
async fn record(
    inner: &Inner,
    id: i64,
    update: RowUpdate,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        match inner.writer.row(id, update.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(row = id, error = %e, "Cannot record a send outcome; retrying.");
                if !pause(shutdown, Duration::from_millis(500)).await {
                    return false;
                }
            }
        }
    }
}

/// Records the outcomes of several rows in one command (one commit),
/// retrying until the store takes it; false on shutdown.
async fn record_all(
    inner: &Inner,
    updates: Vec<(i64, RowUpdate)>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        match inner.writer.rows(updates.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                let first = updates.first().map(|(id, _)| *id);
                tracing::warn!(row = first, rows = updates.len(), error = %e, "Cannot record the outcome of a batch; retrying.");
                if !pause(shutdown, Duration::from_millis(500)).await {
                    return false;
                }
            }
        }
    }
}

/// Delivers one row, retrying until it is sent or dead. False on shutdown.
///
/// Each turn makes one attempt ([`Delivery::attempt`]); a failure is
/// classified into an [`Action`] by [`decide`] (a pure function of the
/// error and the row's history), then carried out ([`Delivery::act`]).
async fn deliver(
    inner: &Arc<Inner>,
    worker: &AccountWorker,
    account: &AccountId,
    channel: &ChannelId,
    row: PendingRow,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let d = Delivery::new(inner, worker, account, channel, row);
    deliver_one(d, shutdown).await
}

/// [`deliver`] for a row whose delivery may have begun in a batch (its
/// attempts so far counted). False on shutdown.
async fn deliver_one(mut d: Delivery<'_>, shutdown: &mut watch::Receiver<bool>) -> bool {
    let (inner, account) = (d.inner, d.account);
    loop {
        match d.attempt(shutdown).await {
            Attempt::Stop => return false,
            // An earlier row was put back in place: the lane goes back to
            // it; this one stays queued.
            Attempt::Rewound => return true,
            Attempt::Again => {}
            Attempt::Retired => {
                let reason = "removed from config".to_owned();
                return dead_letter(inner, account, d.row.id, reason, shutdown).await;
            }
            Attempt::Sent(maps) => return d.sent(maps, shutdown).await,
            Attempt::Failed { error, ready_seen } => {
                let action = d.decide(&error);
                match d.act(action, &error, ready_seen, shutdown).await {
                    Next::Again => {}
                    Next::Done => return true,
                    Next::Stop => return false,
                    Next::DeadLetter(reason) => {
                        return dead_letter(inner, account, d.row.id, reason, shutdown).await
                    }
                }
            }
        }
    }
}

/// Delivers consecutive rows of one lane in one send
/// ([`Adapter::send_batch`]), retrying the whole batch until the
/// destination takes it. Answers the id of the last row handled (the lane
/// reads on after it), `None` on shutdown.
///
/// The batch keeps the rules of a single row: a failure every row would
/// retry (the destination down, pacing, not ready) is retried for the
/// whole batch with the same backoff and `Retry-After`, each row's
/// attempts counted; any other verdict (a permanent refusal such as a 4xx,
/// a row past `max_age` or its `no_content_budget`, a move) sends the
/// batch's rows again one at a time, so only the row at fault is
/// dead-lettered or moved, in order.
async fn deliver_batch(
    inner: &Arc<Inner>,
    worker: &AccountWorker,
    account: &AccountId,
    channel: &ChannelId,
    rows: Vec<PendingRow>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<i64> {
    let before = rows.first().map_or(0, |r| r.id - 1);
    let mut ds: Vec<Delivery<'_>> = rows
        .into_iter()
        .map(|row| Delivery::new(inner, worker, account, channel, row))
        .collect();
    loop {
        match attempt_batch(&ds, shutdown).await {
            BatchAttempt::Stop => return None,
            // Nothing was sent; the lane goes back to the requeued row.
            BatchAttempt::Rewound => return Some(before),
            BatchAttempt::Again => {}
            BatchAttempt::Cut(0) => {
                let d = ds.swap_remove(0);
                let id = d.row.id;
                return deliver_one(d, shutdown).await.then_some(id);
            }
            BatchAttempt::Cut(n) => ds.truncate(n),
            BatchAttempt::OneByOne => return one_by_one(ds, shutdown).await,
            BatchAttempt::Sent { maps, held } => {
                let last = ds.last().map_or(before, |d| d.row.id);
                let updates = ds
                    .iter()
                    .zip(maps)
                    .map(|(d, maps)| (d.row.id, RowUpdate::Sent { maps }))
                    .collect();
                if !record_all(inner, updates, shutdown).await {
                    return None;
                }
                drop(held);
                for _ in &ds {
                    inner.outages.delivered(account, channel);
                }
                let n = i64::try_from(ds.len()).unwrap_or(i64::MAX);
                let label = &ds[0].label;
                inner
                    .metrics
                    .events_out
                    .get_or_create(label)
                    .inc_by(n.unsigned_abs());
                inner.metrics.queue_depth.get_or_create(label).dec_by(n);
                return Some(last);
            }
            BatchAttempt::Failed { error, ready_seen } => {
                let actions: Vec<Action> = ds.iter_mut().map(|d| d.decide(&error)).collect();
                let next = if actions.iter().all(|a| *a == Action::Retry) {
                    retry_batch(&ds, &error, shutdown).await
                } else if actions.iter().all(|a| *a == Action::WaitReady) {
                    ds[0]
                        .act(Action::WaitReady, &error, ready_seen, shutdown)
                        .await
                } else {
                    tracing::info!(rows = ds.len(), first_row = ds[0].row.id, error = %error.message(), "A batch was refused; its rows go one at a time.");
                    return one_by_one(ds, shutdown).await;
                };
                match next {
                    Next::Again => {}
                    Next::Stop => return None,
                    // Neither waiting nor retrying ends a delivery.
                    Next::Done | Next::DeadLetter(_) => return Some(before),
                }
            }
        }
    }
}

/// The rows of a refused batch, each delivered by itself in order (their
/// attempts so far kept). The id of the last one handled, `None` on
/// shutdown.
async fn one_by_one(ds: Vec<Delivery<'_>>, shutdown: &mut watch::Receiver<bool>) -> Option<i64> {
    let mut done = ds.first().map_or(0, |d| d.row.id - 1);
    for d in ds {
        let (id, gate) = (d.row.id, d.gate.clone());
        if !deliver_one(d, shutdown).await {
            return None;
        }
        done = id;
        // A requeue rewound the lane: the rest stays queued for it.
        if gate.rewinds_before(i64::MAX) {
            break;
        }
    }
    Some(done)
}

/// A failed batch that every row would retry: each row's attempt is
/// recorded (one commit), the lane waits as a single row's would (the
/// first row's attempts set the backoff; the network's `Retry-After`
/// holds). What a retry tells (an outage, pacing, a channel needing
/// action) is told once for the batch.
async fn retry_batch(
    ds: &[Delivery<'_>],
    error: &SendError,
    shutdown: &mut watch::Receiver<bool>,
) -> Next {
    let head = &ds[0];
    let (inner, worker, account, channel) = (head.inner, head.worker, head.account, head.channel);
    let reason = error.message();
    let n = u64::try_from(ds.len()).unwrap_or(u64::MAX);
    inner.metrics.retries.get_or_create(&head.label).inc_by(n);
    let kind = error.retry_kind();
    if error.is_rate_limit() {
        worker.rate_limited(&kind);
    } else {
        inner.outages.failed(account, channel, &head.row.gateway);
    }
    if let RetryKind::ChannelDown { .. } = kind {
        worker.channel_down(channel, reason);
    }
    tracing::info!(first_row = head.row.id, rows = ds.len(), attempts = head.attempts, error = %reason, "Delivery of a batch failed, will retry.");
    let updates = ds
        .iter()
        .map(|d| {
            let update = RowUpdate::Retry {
                attempts: d.attempts,
                error: reason.to_owned(),
            };
            (d.row.id, update)
        })
        .collect();
    if !record_all(inner, updates, shutdown).await {
        return Next::Stop;
    }
    let retry_after = match kind {
        // The breaker (tripped with the pass) holds the account.
        RetryKind::AccountDown { .. } => return Next::Again,
        RetryKind::Transient { retry_after } | RetryKind::ChannelDown { retry_after } => {
            retry_after
        }
        _ => None,
    };
    let wait = backoff(&inner.settings, head.attempts, retry_after);
    if pause(shutdown, wait).await {
        Next::Again
    } else {
        Next::Stop
    }
}

/// How long a lane waits before retrying after `attempts` failed ones.
fn backoff(settings: &OutboxSettings, attempts: i64, retry_after: Option<Duration>) -> Duration {
    switchboard_core::kit::Backoff::new(settings.backoff_initial, settings.backoff_max)
        .jitter(settings.jitter)
        .delay(u32::try_from(attempts).unwrap_or(u32::MAX), retry_after)
}

/// How one attempt at a batch ended.
enum BatchAttempt {
    /// The destination took every row: each row's ids, and the lane's
    /// gate, held until they are recorded.
    Sent {
        maps: Vec<Vec<MapEntry>>,
        held: tokio::sync::OwnedMutexGuard<()>,
    },
    /// The send failed as a whole.
    Failed { error: SendError, ready_seen: u64 },
    /// Only the first n rows can go in one send (the row after them
    /// renders as several pieces, or the limit shrank in a reload); none
    /// when 0.
    Cut(usize),
    /// The rows must go one at a time (the channel was retired).
    OneByOne,
    /// Nothing was tried; try again.
    Again,
    /// Shutdown.
    Stop,
    /// An admin requeued a row before the batch's last one in place (see
    /// [`requeue`]): nothing was sent.
    Rewound,
}

/// One call to the adapter (a send or a batch), bounded by `timeout` and
/// timed; the breaker is settled by its outcome while the attempt holds
/// the pass. An error comes back with its wait capped.
async fn timed_send<T>(
    inner: &Inner,
    worker: &AccountWorker,
    channel: &ChannelId,
    label: &crate::metrics::AccountLabel,
    timeout: Duration,
    send: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, send)
        .await
        .unwrap_or_else(|_| {
            Err(SendError::transient(
                format!("no answer within {timeout:?}"),
                None,
            ))
        });
    inner
        .metrics
        .send_seconds
        .get_or_create(label)
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(v) => {
            worker.breaker.reachable();
            worker.sent_ok(channel);
            Ok(v)
        }
        Err(error) => {
            let error = error.capped(inner.settings.max_retry_after);
            match error.retry_kind() {
                RetryKind::AccountDown { retry_after } => worker.breaker.trip(retry_after),
                RetryKind::NotReady => {}
                _ => worker.breaker.reachable(),
            }
            Err(error)
        }
    }
}

/// One attempt at a batch, as [`Delivery::attempt`] is for one row: waits
/// for an admin's pause and the breaker, renders every row (each must be
/// one piece) and hands them to the adapter in one send.
async fn attempt_batch(ds: &[Delivery<'_>], shutdown: &mut watch::Receiver<bool>) -> BatchAttempt {
    let head = &ds[0];
    let (inner, worker, channel) = (head.inner, head.worker, head.channel);
    let adapter = worker.adapter();
    let caps = adapter.capabilities();
    if worker
        .retired
        .lock()
        .expect("retired lock")
        .contains(channel)
    {
        return BatchAttempt::OneByOne;
    }
    let mut paused = worker.paused.subscribe();
    tokio::select! {
        r = paused.wait_for(|p| !*p) => if r.is_err() { return BatchAttempt::Stop; },
        _ = shutdown.wait_for(|s| *s) => return BatchAttempt::Stop,
    }
    let Some(_pass) = worker.breaker.ready(shutdown).await else {
        return BatchAttempt::Stop;
    };
    let Some(host) = inner.hosts.get().and_then(|make| make(head.account)) else {
        return BatchAttempt::Stop;
    };
    let limit = adapter.batch_limit(channel).max(1);
    let mut ops = Vec::with_capacity(ds.len().min(limit));
    for (i, d) in ds.iter().enumerate().take(limit) {
        let Some(mut parts) = d.parts(&caps, shutdown).await else {
            return if *shutdown.borrow() {
                BatchAttempt::Stop
            } else {
                BatchAttempt::Again
            };
        };
        match parts.pop() {
            Some(op) if parts.is_empty() => ops.push((op, d.row.idempotency_key.clone())),
            _ => return BatchAttempt::Cut(i),
        }
    }
    if ops.len() < ds.len() {
        return BatchAttempt::Cut(ops.len());
    }
    worker.pace(channel, &caps.pacing).await;
    if *shutdown.borrow() {
        return BatchAttempt::Stop;
    }
    let ready_seen = *worker.ready.borrow();
    let timeout = ops
        .iter()
        .map(|(op, _)| caps.send_timeout(op, inner.settings.send_timeout))
        .max()
        .unwrap_or(inner.settings.send_timeout);
    let last = ds.last().map_or(head.row.id, |d| d.row.id);
    let Some(held) = head.gate.hold(last, 0).await else {
        return BatchAttempt::Rewound;
    };
    let sent = adapter.send_batch(host.as_ref(), &ops);
    let receipts = match timed_send(inner, worker, channel, &head.label, timeout, sent).await {
        Ok(receipts) => receipts,
        Err(error) => return BatchAttempt::Failed { error, ready_seen },
    };
    if receipts.len() != ds.len() {
        // The destination took the batch; only the ids to remember are
        // missing (an adapter's mistake), which later edits will miss.
        tracing::error!(
            rows = ds.len(),
            receipts = receipts.len(),
            "The adapter answered a batch with the wrong number of receipts."
        );
    }
    let mut receipts = receipts.into_iter();
    let maps = ds
        .iter()
        .map(|d| {
            receipts
                .next()
                .unwrap_or_default()
                .ids
                .into_iter()
                .enumerate()
                .map(|(i, remote_id)| MapEntry {
                    event_id: d.row.event.id,
                    account: d.account.clone(),
                    channel: channel.clone(),
                    part: i64::try_from(i).unwrap_or(0),
                    remote_id,
                })
                .collect()
        })
        .collect();
    BatchAttempt::Sent { maps, held }
}

/// One row's delivery in progress.
struct Delivery<'a> {
    inner: &'a Arc<Inner>,
    worker: &'a AccountWorker,
    account: &'a AccountId,
    channel: &'a ChannelId,
    label: crate::metrics::AccountLabel,
    row: PendingRow,
    attempts: i64,
    /// Pieces of a split message already accepted (kept in the row, so a
    /// restart resumes after them).
    parts_sent: usize,
    /// When this row first failed by itself (in this process): an operation
    /// without content gets only `no_content_budget` from there.
    failing_since: Option<Instant>,
    /// Consecutive answers that the adapter is not ready.
    not_ready: u32,
    /// The lane's gate (see [`requeue`]).
    gate: Arc<requeue::LaneGate>,
    /// The gate, held from the last piece's send until `Sent` is recorded.
    holding: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// How one attempt ended.
enum Attempt {
    /// Every piece was accepted; the ids of the last one.
    Sent(Vec<MapEntry>),
    /// A piece failed; `ready_seen` is the adapter's readiness count when
    /// it was tried.
    Failed { error: SendError, ready_seen: u64 },
    /// Nothing was tried (the store could not be read); try again.
    Again,
    /// A reload removed the channel from every gateway.
    Retired,
    /// Shutdown.
    Stop,
    /// An admin requeued an earlier row in place (see [`requeue`]):
    /// nothing was sent.
    Rewound,
}

/// What to do about a failed attempt; see [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// The adapter is still starting: wait until it is ready, counting no
    /// attempt and telling nobody.
    WaitReady,
    /// The network moved the channel: move its queue and map, and let the
    /// new lane send.
    Move(ChannelId),
    /// Give up on the row, with this reason.
    DeadLetter(String),
    /// Try again: after the backoff (and at least the network's
    /// retry-after) for a failure of this channel, or when the breaker lets
    /// the account through for an account-wide one.
    Retry,
}

/// What the lane does next, after an [`Action`].
enum Next {
    Again,
    Done,
    Stop,
    DeadLetter(String),
}

/// Classifies a failed attempt. `attempts` counts this one; `expired` says
/// the row is older than `max_age`; `over_budget` that it carries no
/// content and has failed by itself for longer than `no_content_budget`.
fn decide(
    error: &SendError,
    attempts: i64,
    expired: bool,
    over_budget: bool,
    budget: Duration,
    can_move: bool,
) -> Action {
    let reason = error.message();
    match error.retry_kind() {
        RetryKind::NotReady => Action::WaitReady,
        RetryKind::Moved { to } if can_move => Action::Move(to),
        RetryKind::Permanent | RetryKind::Moved { .. } => Action::DeadLetter(reason.to_owned()),
        _ if over_budget => Action::DeadLetter(format!(
            "gave up after {attempts} attempts in {} (no_content_budget): {reason}",
            humantime::format_duration(budget)
        )),
        _ if expired => Action::DeadLetter(format!("gave up after {attempts} attempts: {reason}")),
        RetryKind::Transient { .. }
        | RetryKind::AccountDown { .. }
        | RetryKind::ChannelDown { .. } => Action::Retry,
    }
}

impl<'a> Delivery<'a> {
    /// A row's delivery, starting from the attempts the store counted.
    fn new(
        inner: &'a Arc<Inner>,
        worker: &'a AccountWorker,
        account: &'a AccountId,
        channel: &'a ChannelId,
        row: PendingRow,
    ) -> Self {
        Self {
            inner,
            worker,
            account,
            channel,
            label: Metrics::label(account),
            attempts: row.attempts,
            parts_sent: usize::try_from(row.parts_sent).unwrap_or(0),
            failing_since: None,
            not_ready: 0,
            gate: worker.gate(channel),
            holding: None,
            row,
        }
    }
}

impl Delivery<'_> {
    /// One attempt: waits for an admin's pause and the breaker, resolves
    /// the referenced message, degrades the operation to what the network
    /// renders, and sends the pieces not sent yet.
    async fn attempt(&mut self, shutdown: &mut watch::Receiver<bool>) -> Attempt {
        let (inner, worker, channel) = (self.inner, self.worker, self.channel);
        // Read each attempt: a reload may have changed the connection.
        let adapter = worker.adapter();
        let caps = adapter.capabilities();
        // An answer to this very chat (a command's, or a link change's:
        // its origin is the chat) still goes to a chat that just left.
        let origin = &self.row.event.origin;
        let answer = &origin.account == self.account && &origin.channel == channel;
        if !answer
            && worker
                .retired
                .lock()
                .expect("retired lock")
                .contains(channel)
        {
            return Attempt::Retired;
        }
        // An admin's pause holds the lane before anything is sent.
        let mut paused = worker.paused.subscribe();
        tokio::select! {
            r = paused.wait_for(|p| !*p) => if r.is_err() { return Attempt::Stop; },
            _ = shutdown.wait_for(|s| *s) => return Attempt::Stop,
        }
        // Held for this attempt: a probe that ends without a verdict (the
        // operation degraded to nothing, or failed before the network)
        // hands the probe to another lane when it drops.
        let Some(_pass) = worker.breaker.ready(shutdown).await else {
            return Attempt::Stop;
        };
        let Some(host) = inner.hosts.get().and_then(|make| make(self.account)) else {
            return Attempt::Stop;
        };
        let Some(parts) = self.parts(&caps, shutdown).await else {
            return if *shutdown.borrow() {
                Attempt::Stop
            } else {
                Attempt::Again
            };
        };
        let mut last = Vec::new();
        while self.parts_sent < parts.len() {
            let key = if parts.len() > 1 {
                format!("{}.{}", self.row.idempotency_key, self.parts_sent)
            } else {
                self.row.idempotency_key.clone()
            };
            worker.pace(channel, &caps.pacing).await;
            // Stopped meanwhile (in a cluster: the lane's lease is given
            // back or ran out here): nothing more goes out from here.
            if *shutdown.borrow() {
                return Attempt::Stop;
            }
            let ready_seen = *worker.ready.borrow();
            // A large upload gets longer than a text before it counts as
            // stalled (and is sent again).
            let part = &parts[self.parts_sent];
            let timeout = caps.send_timeout(part, inner.settings.send_timeout);
            // Held across the send and the record of its success, so an
            // admin's requeue never decides while a row is handed over; a
            // requeued earlier row makes the lane go back to it first.
            let Some(held) = self.gate.hold(self.row.id, self.parts_sent).await else {
                return Attempt::Rewound;
            };
            let sent = adapter.send(host.as_ref(), part, &key);
            let receipt = match timed_send(inner, worker, channel, &self.label, timeout, sent).await
            {
                Ok(receipt) => receipt,
                Err(error) => return Attempt::Failed { error, ready_seen },
            };
            // Each piece's ids numbered apart from the others', so a
            // resumed split numbers them the same way.
            let piece = i64::try_from(self.parts_sent).unwrap_or(i64::MAX);
            let maps: Vec<MapEntry> = receipt
                .ids
                .into_iter()
                .enumerate()
                .map(|(i, remote_id)| MapEntry {
                    event_id: self.row.event.id,
                    account: self.account.clone(),
                    channel: channel.clone(),
                    part: piece
                        .saturating_mul(PART_STRIDE)
                        .saturating_add(i64::try_from(i).unwrap_or(0)),
                    remote_id,
                })
                .collect();
            self.parts_sent += 1;
            if self.parts_sent == parts.len() {
                last = maps;
                self.holding = Some(held);
                break;
            }
            // Remember progress (and the piece's ids, so a later edit or
            // reply finds them) before sending the next one.
            let update = RowUpdate::Progress {
                parts_sent: i64::try_from(self.parts_sent).unwrap_or(i64::MAX),
                maps,
            };
            if !record(inner, self.row.id, update, shutdown).await {
                return Attempt::Stop;
            }
        }
        Attempt::Sent(last)
    }

    /// The operation as this destination can render it, in pieces (see
    /// [`degrade`]); `None` when the referenced message cannot be looked up
    /// now (after a short wait) or on shutdown.
    async fn parts(
        &self,
        caps: &switchboard_core::Capabilities,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Vec<switchboard_core::Outbound>> {
        let row = &self.row;
        let target = match row.event.kind.target().and_then(|t| t.event_id()) {
            None => None,
            Some(id) => match reference(&self.inner.store, id, self.account, self.channel).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot resolve a reference; retrying.");
                    pause(shutdown, Duration::from_secs(1)).await;
                    return None;
                }
            },
        };
        let (late_after, nick_format) = self
            .inner
            .gateways
            .read()
            .expect("gateways lock")
            .get(&row.gateway)
            .map(|p| (p.late_after, p.nick_format.clone()))
            .unwrap_or_default();
        let op = switchboard_core::Outbound {
            gateway: row.gateway.clone(),
            channel: self.channel.clone(),
            event: row.event.clone(),
            target,
            nick_format,
        };
        let cx = switchboard_core::DegradeContext {
            now: time::OffsetDateTime::now_utc(),
            late_after,
        };
        Some(degrade(&op, caps, cx))
    }

    /// [`decide`] with this row's history; counts the attempt unless the
    /// adapter was only not ready.
    fn decide(&mut self, error: &SendError) -> Action {
        let settings = &self.inner.settings;
        let kind = error.retry_kind();
        if kind != RetryKind::NotReady {
            self.attempts += 1;
        }
        // Only failures of this operation itself use up the budget of one
        // without content: not an account outage, not pacing.
        if matches!(kind, RetryKind::Transient { .. }) && !error.is_rate_limit() {
            self.failing_since.get_or_insert_with(Instant::now);
        }
        let no_content = matches!(
            self.row.event.kind,
            switchboard_core::EventKind::Reaction { .. }
                | switchboard_core::EventKind::Delete { .. }
        );
        let over_budget = no_content
            && self
                .failing_since
                .is_some_and(|t| t.elapsed() >= settings.no_content_budget);
        let max_age = i64::try_from(settings.max_age.as_millis()).unwrap_or(i64::MAX);
        let expired = now_ms() - self.row.created_ms > max_age;
        decide(
            error,
            self.attempts,
            expired,
            over_budget,
            settings.no_content_budget,
            self.inner.moves.get().is_some(),
        )
    }

    /// Carries out what [`decide`] said.
    async fn act(
        &mut self,
        action: Action,
        error: &SendError,
        ready_seen: u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Next {
        let (inner, worker, account, channel) =
            (self.inner, self.worker, self.account, self.channel);
        let reason = error.message();
        match action {
            Action::WaitReady => {
                // Still signing in: not a failure of the network. Wait for
                // the adapter to say it is ready (or a while, in case it
                // never says).
                self.not_ready = self.not_ready.saturating_add(1);
                tracing::debug!(row = self.row.id, %reason, "The adapter is not ready yet; the send waits.");
                let wait = switchboard_core::kit::Backoff::new(
                    inner.settings.backoff_initial,
                    inner.settings.backoff_max.min(Duration::from_secs(5)),
                )
                .jitter(false)
                .delay(self.not_ready, None);
                let mut ready = worker.ready.subscribe();
                tokio::select! {
                    _ = ready.wait_for(|n| *n != ready_seen) => Next::Again,
                    () = tokio::time::sleep(wait) => Next::Again,
                    _ = shutdown.wait_for(|s| *s) => Next::Stop,
                }
            }
            Action::Move(to) => {
                let Some(moves) = inner.moves.get() else {
                    return Next::DeadLetter(reason.to_owned());
                };
                if let Err(e) = inner.store.move_channel(account, channel, &to).await {
                    tracing::warn!(error = %e, "Cannot record a moved channel; retrying.");
                    return if pause(shutdown, Duration::from_secs(1)).await {
                        Next::Again
                    } else {
                        Next::Stop
                    };
                }
                moves.insert(account, channel, &to);
                tracing::warn!(from = %channel, %to, %reason, "The channel moved; its queue and message map follow it.");
                // This row and the rest of the queue are the new lane's now.
                Outbox {
                    inner: inner.clone(),
                }
                .poke(account, &to);
                Next::Done
            }
            Action::DeadLetter(reason) => {
                tracing::warn!(row = self.row.id, event = %self.row.event.id, %reason, "Message dead-lettered.");
                Next::DeadLetter(reason)
            }
            Action::Retry => {
                inner.metrics.retries.get_or_create(&self.label).inc();
                let kind = error.retry_kind();
                // A rate limit is the network pacing us, not an outage: the
                // lane waits exactly as asked and nobody is told it is
                // unreachable (a lane already in an outage stays in it).
                if error.is_rate_limit() {
                    worker.rate_limited(&kind);
                } else {
                    inner.outages.failed(account, channel, &self.row.gateway);
                }
                if let RetryKind::ChannelDown { .. } = kind {
                    worker.channel_down(channel, reason);
                }
                tracing::info!(row = self.row.id, attempts = self.attempts, error = %reason, "Delivery failed, will retry.");
                let update = RowUpdate::Retry {
                    attempts: self.attempts,
                    error: reason.to_owned(),
                };
                if !record(inner, self.row.id, update, shutdown).await {
                    return Next::Stop;
                }
                let retry_after = match kind {
                    // The breaker (tripped with the pass) holds the account.
                    RetryKind::AccountDown { .. } => return Next::Again,
                    RetryKind::Transient { retry_after }
                    | RetryKind::ChannelDown { retry_after } => retry_after,
                    _ => None,
                };
                let wait = backoff(&inner.settings, self.attempts, retry_after);
                if pause(shutdown, wait).await {
                    Next::Again
                } else {
                    Next::Stop
                }
            }
        }
    }

    /// Every piece accepted: the row is marked sent with the last piece's
    /// ids, and counted. False on shutdown.
    async fn sent(&self, maps: Vec<MapEntry>, shutdown: &mut watch::Receiver<bool>) -> bool {
        if !record(self.inner, self.row.id, RowUpdate::Sent { maps }, shutdown).await {
            return false;
        }
        // Counted once the row is marked sent, so a queue depth of 0 means
        // every row is settled in the store.
        self.inner.outages.delivered(self.account, self.channel);
        let metrics = &self.inner.metrics;
        metrics.events_out.get_or_create(&self.label).inc();
        metrics.queue_depth.get_or_create(&self.label).dec();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(600);

    fn verdict(e: &SendError, expired: bool, over_budget: bool) -> Action {
        decide(e, 3, expired, over_budget, BUDGET, true)
    }

    #[test]
    fn failures_are_classified_before_anything_is_done() {
        let transient = SendError::transient("500", None);
        assert_eq!(verdict(&transient, false, false), Action::Retry);
        assert_eq!(
            verdict(&transient, true, false),
            Action::DeadLetter("gave up after 3 attempts: 500".into())
        );
        assert!(matches!(
            verdict(&transient, false, true),
            Action::DeadLetter(r) if r.contains("no_content_budget")
        ));
        assert_eq!(
            verdict(&SendError::permanent("chat gone"), false, false),
            Action::DeadLetter("chat gone".into())
        );
        // Not ready is never a failure: no dead letter even when old.
        assert_eq!(
            verdict(&SendError::not_ready("signing in"), true, true),
            Action::WaitReady
        );
        let to = ChannelId::new("-1009").unwrap();
        let moved = SendError::moved("upgraded", to.clone());
        assert_eq!(verdict(&moved, false, false), Action::Move(to));
        assert_eq!(
            decide(&moved, 1, false, false, BUDGET, false),
            Action::DeadLetter("upgraded".into()),
            "without a place to record moves, a move is a dead letter"
        );
        for waits in [
            SendError::account_down("refused", None),
            SendError::channel_down("bot was kicked", None),
            SendError::rate_limited("429", Some(Duration::from_secs(3))),
        ] {
            assert_eq!(verdict(&waits, false, false), Action::Retry, "{waits:?}");
        }
    }
}
