//! The lease round: every `tick` (and when woken), an instance
//! 1. beats its heartbeat and renews every lease it holds (one statement);
//!    from the moment the renewal was sent it may act on them for
//!    `valid_for`;
//! 2. takes free or run-out leases up to its share of each kind
//!    ([`plan`]: `ceil(leases / live instances)`), or picks what is above
//!    its share to give back;
//! 3. applies the result: receive sides of accounts it holds run `run`,
//!    the others `serve_sends` (or nothing), lanes it holds run, the others
//!    stop; only then what it gives back is released, so the next holder
//!    starts where this one stopped.
//!
//! A round whose database part does not finish before the deadline (the
//! database is unreachable, or this process was paused) revokes everything
//! here: receive sides fall back to sending only, lanes stop, and the
//! writer refuses cursor batches (no lease, no fence). Leases still in
//! this process's name when the database answers again are taken up
//! again.
//!
//! Lanes of an account whose adapter cannot send without receiving
//! (`Adapter::sends_without_receiving` false) go with the account's lease:
//! its holder takes them all, outside its share, and gives them back when
//! the account goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::{AccountId, ChannelId};
use tokio::sync::watch;

use super::{leased, Cluster};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::postgres::{self, LeaseKey, LeaseKind, Taken};
use crate::store::StoreError;

/// What an instance does about one kind of lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Take this many more.
    Take(i64),
    /// Give this many back.
    GiveBack(usize),
    /// Hold what it holds.
    Keep,
}

/// An instance holding `mine` of `total` leases, with `live` instances
/// (itself included): its share is `ceil(total / live)`. Shares add up to
/// at least `total`, so every lease finds a holder; an instance above its
/// share gives back the difference (a new instance joined), one below
/// takes it (one died or left).
#[must_use]
pub fn plan(total: i64, live: usize, mine: i64) -> Plan {
    let live = i64::try_from(live.max(1)).unwrap_or(i64::MAX);
    let share = (total + live - 1) / live;
    match mine.cmp(&share) {
        std::cmp::Ordering::Less => Plan::Take(share - mine),
        std::cmp::Ordering::Greater => Plan::GiveBack(usize::try_from(mine - share).unwrap_or(0)),
        std::cmp::Ordering::Equal => Plan::Keep,
    }
}

/// The most lanes of accounts only their holder sends for, taken at once.
const ALL: i64 = 100_000;

/// Rounds between sweeps for lanes with rows nobody woke (a notification
/// lost while the listener reconnected) and queue figures from the store.
const SWEEP_EVERY: u64 = 4;

/// What the database part of a round decided.
struct Decided {
    /// What this process holds now, with tokens.
    held: HashMap<LeaseKey, i64>,
    /// Held, but to be given back once stopped here.
    give_back: Vec<LeaseKey>,
    /// Taken this round (for the lanes' orphan time and the log).
    taken: Vec<Taken>,
    /// Live instances.
    live: usize,
}

/// The lease round of one instance.
pub struct Balancer {
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    /// Lease rows known to exist.
    ensured: HashSet<LeaseKey>,
    /// Until when this process may act on what it holds.
    deadline: Option<Instant>,
    rounds: u64,
    /// The last failure logged, so a repeating one is logged once.
    failing: Option<String>,
}

impl Balancer {
    /// The round of `hub`'s cluster.
    #[must_use]
    pub fn new(hub: Arc<Hub>) -> Self {
        let cluster = hub.cluster.clone().expect("a balancer is for a cluster");
        Self {
            hub,
            cluster,
            ensured: HashSet::new(),
            deadline: None,
            rounds: 0,
            failing: None,
        }
    }

    /// The first round, before the instance serves anything: it takes its
    /// share and starts every account's receive side in its role.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn first(&mut self) -> Result<(), StoreError> {
        let t0 = Instant::now();
        let decided = self.decide(t0).await?;
        self.apply(decided).await;
        Ok(())
    }

    /// Runs the rounds until `shutdown`.
    pub fn spawn(mut self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let tick = self.cluster.timing.tick;
                let wait = self.deadline.map_or(tick, |d| {
                    tick.min(d.saturating_duration_since(Instant::now()))
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.cluster.wake.notified() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if *shutdown.borrow() {
                    return;
                }
                self.round().await;
            }
        })
    }

    /// One round; failures are logged (once while they repeat).
    async fn round(&mut self) {
        let t0 = Instant::now();
        let budget = self.deadline.map_or(self.cluster.timing.valid_for, |d| {
            d.saturating_duration_since(t0)
        });
        match tokio::time::timeout(budget, self.decide(t0)).await {
            Ok(Ok(decided)) => {
                if self.failing.take().is_some() {
                    tracing::info!("The lease round works again.");
                }
                self.apply(decided).await;
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                if self.deadline.is_some_and(|d| Instant::now() >= d) {
                    self.revoke().await;
                }
            }
            Err(_) => {
                self.failed("the database did not answer before the leases ran out here");
                self.revoke().await;
            }
        }
    }

    fn failed(&mut self, error: &str) {
        if self.failing.as_deref() != Some(error) {
            tracing::warn!(%error, "The lease round failed; what is held stays in force until the lease runs out here.");
            self.failing = Some(error.to_owned());
        }
    }

    /// Stops everything this process holds: it can no longer be sure it
    /// holds anything.
    async fn revoke(&mut self) {
        if self.deadline.take().is_none() && self.cluster.held().is_empty() {
            return;
        }
        tracing::error!("Leases could not be renewed in time: receive sides and lanes stop here until the database answers.");
        self.apply(Decided {
            held: HashMap::new(),
            give_back: Vec::new(),
            taken: Vec::new(),
            live: 1,
        })
        .await;
    }

    /// The database part: heartbeat, lease rows, renewal, taking and
    /// choosing what to give back.
    async fn decide(&mut self, t0: Instant) -> Result<Decided, StoreError> {
        let pool = self.hub.store.pool().clone();
        let who = self.cluster.holder().clone();
        let ttl = self.cluster.timing.ttl_ms();
        if !postgres::heartbeat(&pool, &who).await? {
            tracing::error!(instance = %who.name, "Another process took this instance's name; stopping everything here. Give each instance its own name.");
            return Ok(Decided {
                held: HashMap::new(),
                give_back: Vec::new(),
                taken: Vec::new(),
                live: 1,
            });
        }
        self.rounds += 1;
        self.ensure().await?;
        let renewed = postgres::renew(&pool, &who, ttl).await?;
        self.deadline = Some(t0 + self.cluster.timing.valid_for);
        let mut held: HashMap<LeaseKey, i64> =
            renewed.into_iter().map(|h| (h.key, h.token)).collect();
        let live = postgres::live_instances(&pool, ttl).await?.len().max(1);
        let adapters = self.hub.outbox.adapters();
        let accounts: Vec<String> = adapters
            .iter()
            .map(|a| a.account())
            .filter(|a| leased(a))
            .map(ToString::to_string)
            .collect();
        let mut taken = Vec::new();
        let mut give_back = Vec::new();
        // Accounts.
        let mine: Vec<LeaseKey> = held
            .keys()
            .filter(|k| k.kind == LeaseKind::Account && accounts.contains(&k.account))
            .cloned()
            .collect();
        let total = i64::try_from(accounts.len()).unwrap_or(0);
        match plan(total, live, i64::try_from(mine.len()).unwrap_or(0)) {
            Plan::Take(n) => {
                taken.extend(
                    postgres::acquire(&pool, &who, ttl, LeaseKind::Account, &accounts, n).await?,
                );
            }
            Plan::GiveBack(n) => {
                let mut mine = mine;
                mine.sort();
                give_back.extend(mine.into_iter().rev().take(n));
            }
            Plan::Keep => {}
        }
        for t in &taken {
            held.insert(t.held.key.clone(), t.held.token);
        }
        // Lanes: those of accounts any instance can send for are shared
        // out; those of the others go with their account.
        let leaving: HashSet<String> = give_back.iter().map(|k| k.account.clone()).collect();
        let holds_account = |held: &HashMap<LeaseKey, i64>, a: &str| {
            held.contains_key(&LeaseKey::account(a)) && !leaving.contains(a)
        };
        let mut shared = Vec::new();
        let mut with_account = Vec::new();
        for a in &adapters {
            let name = a.account().to_string();
            if !leased(a.account()) || a.sends_without_receiving() {
                shared.push(name);
            } else if holds_account(&held, &name) {
                with_account.push(name);
            }
        }
        let mut lanes_taken = Vec::new();
        lanes_taken.extend(
            postgres::acquire(&pool, &who, ttl, LeaseKind::Lane, &with_account, ALL).await?,
        );
        let mine: Vec<LeaseKey> = held
            .keys()
            .filter(|k| k.kind == LeaseKind::Lane && shared.contains(&k.account))
            .cloned()
            .collect();
        let total = postgres::count(&pool, LeaseKind::Lane, &shared).await?;
        match plan(total, live, i64::try_from(mine.len()).unwrap_or(0)) {
            Plan::Take(n) => lanes_taken
                .extend(postgres::acquire(&pool, &who, ttl, LeaseKind::Lane, &shared, n).await?),
            Plan::GiveBack(n) => {
                let mut mine = mine;
                mine.sort();
                give_back.extend(mine.into_iter().rev().take(n));
            }
            Plan::Keep => {}
        }
        // Lanes of an account only its holder sends for, whose account
        // went elsewhere.
        give_back.extend(
            held.keys()
                .filter(|k| k.kind == LeaseKind::Lane && !shared.contains(&k.account))
                .filter(|k| !holds_account(&held, &k.account))
                .cloned()
                .collect::<Vec<_>>(),
        );
        for t in &lanes_taken {
            held.insert(t.held.key.clone(), t.held.token);
        }
        taken.extend(lanes_taken);
        // Tasks: one instance runs retention.
        let retention = LeaseKey::task("retention");
        if !held.contains_key(&retention) {
            for t in postgres::acquire(
                &pool,
                &who,
                ttl,
                LeaseKind::Task,
                std::slice::from_ref(&retention.account),
                1,
            )
            .await?
            {
                held.insert(t.held.key.clone(), t.held.token);
                taken.push(t);
            }
        }
        Ok(Decided {
            held,
            give_back,
            taken,
            live,
        })
    }

    /// Makes sure every account, lane and task has its lease row: the
    /// accounts and destinations of the configuration, lanes poked here
    /// that nobody holds, and, every few rounds, lanes with rows waiting.
    async fn ensure(&mut self) -> Result<(), StoreError> {
        let mut keys: Vec<LeaseKey> = vec![LeaseKey::task("retention")];
        for a in self.hub.outbox.adapters() {
            if leased(a.account()) {
                keys.push(LeaseKey::account(a.account().to_string()));
            }
        }
        for (a, c) in self.hub.router.load().destinations() {
            keys.push(LeaseKey::lane(a.to_string(), c.as_str()));
        }
        for (a, c) in self.hub.outbox.take_unheld() {
            keys.push(LeaseKey::lane(a.to_string(), c.as_str()));
        }
        let sweep = self.rounds % SWEEP_EVERY == 1;
        if sweep {
            for (a, c) in pending_lanes(&self.hub).await? {
                keys.push(LeaseKey::lane(a, c));
            }
        }
        keys.retain(|k| !self.ensured.contains(k));
        keys.sort();
        keys.dedup();
        if !keys.is_empty() {
            postgres::ensure(self.hub.store.pool(), &keys).await?;
            self.ensured.extend(keys);
        }
        if sweep {
            // Notifications missed while the listener reconnected.
            self.hub.outbox.poke_held();
            self.queue_figures().await;
        }
        Ok(())
    }

    /// Sets each account's queue depth from the store: in a cluster a row
    /// is committed on one instance and sent from another, so local counts
    /// drift.
    async fn queue_figures(&self) {
        let Ok(rows) = sqlx::query(
            "SELECT account, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY account",
        )
        .fetch_all(self.hub.store.pool())
        .await
        else {
            return;
        };
        let mut seen = HashSet::new();
        for r in rows {
            use sqlx::Row;
            if let (Ok(account), Ok(n)) = (r.try_get::<String, _>(0), r.try_get::<i64, _>(1)) {
                self.hub
                    .metrics
                    .queue_depth
                    .get_or_create(&Metrics::label(&account))
                    .set(n);
                seen.insert(account);
            }
        }
        for a in self.hub.outbox.adapters() {
            let name = a.account().to_string();
            if !seen.contains(&name) {
                self.hub
                    .metrics
                    .queue_depth
                    .get_or_create(&Metrics::label(&name))
                    .set(0);
            }
        }
    }

    /// Puts a decision in force: what is no longer held stops before what
    /// is newly held starts, then what is given back is released.
    async fn apply(&mut self, decided: Decided) {
        let Decided {
            mut held,
            give_back,
            taken,
            live,
        } = decided;
        for k in &give_back {
            held.remove(k);
        }
        // From here the writer refuses cursor batches of accounts no longer
        // held, before their receive sides are even stopped.
        self.cluster.set_held(held.clone());
        for t in &taken {
            if let Some(from) = &t.from {
                tracing::info!(lease = %t.held.key, %from, idle_ms = t.idle_ms, "Took over from an instance whose lease ran out.");
                self.hub
                    .metrics
                    .cluster_takeovers
                    .get_or_create(&kind_label(t.held.key.kind))
                    .inc();
            } else {
                tracing::debug!(lease = %t.held.key, "Took a free lease.");
            }
        }
        let failed = self.apply_accounts().await;
        self.apply_lanes(&held, &taken).await;
        let mut release = give_back;
        if !failed.is_empty() {
            for k in &failed {
                held.remove(k);
            }
            self.cluster.set_held(held.clone());
            release.extend(failed);
        }
        if !release.is_empty() {
            let pool = self.hub.store.pool().clone();
            let who = self.cluster.holder().clone();
            match postgres::release(&pool, &who, &release).await {
                Ok(()) => {
                    tracing::info!(
                        leases = release.len(),
                        "Gave leases back for other instances."
                    );
                    let _ = postgres::notify_now(&pool, postgres::channel::LEASES, &who.name).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot give leases back; they run out by themselves.")
                }
            }
        }
        let metrics = &self.hub.metrics;
        for kind in [LeaseKind::Account, LeaseKind::Lane, LeaseKind::Task] {
            let n = held.keys().filter(|k| k.kind == kind).count();
            metrics
                .cluster_leases
                .get_or_create(&kind_label(kind))
                .set(i64::try_from(n).unwrap_or(0));
        }
        metrics
            .cluster_instances
            .set(i64::try_from(live).unwrap_or(0));
    }

    /// Each account's receive side in the role this instance now has for
    /// it. Returns the account leases whose receive side could not start
    /// (an ingress address in use): given back for another instance.
    async fn apply_accounts(&self) -> Vec<LeaseKey> {
        let mut failed = Vec::new();
        let first = self
            .hub
            .receivers
            .lock()
            .expect("receivers lock")
            .is_empty();
        let mut changed = Vec::new();
        for adapter in self.hub.outbox.adapters() {
            let account = adapter.account().clone();
            let want = self.cluster.role(adapter.as_ref());
            let have = self
                .hub
                .receivers
                .lock()
                .expect("receivers lock")
                .get(&account)
                .map(crate::receivers::Running::role);
            // After the first round only accounts with a receive side: one
            // a reload removed stays stopped.
            if have == Some(want) || (have.is_none() && !first) {
                continue;
            }
            changed.push((account, adapter, want));
        }
        if changed.is_empty() {
            return failed;
        }
        // Not while a reload starts and stops receive sides.
        let _reload = crate::reload::RELOADING.lock().await;
        for (account, adapter, want) in changed {
            let old = self
                .hub
                .receivers
                .lock()
                .expect("receivers lock")
                .remove(&account);
            if let Some(old) = old {
                old.stop().await;
            }
            tracing::info!(%account, role = ?want, "Account's receive side in its new role.");
            match crate::receivers::start(&self.hub, adapter.clone()).await {
                Ok(running) => {
                    let replaced = self
                        .hub
                        .receivers
                        .lock()
                        .expect("receivers lock")
                        .insert(account, running);
                    if let Some(r) = replaced {
                        r.stop().await;
                    }
                }
                Err(e) => {
                    tracing::error!(%account, error = %format!("{e:#}"), "Cannot start the account's receive side here; giving its lease back.");
                    let key = LeaseKey::account(account.to_string());
                    self.cluster.forget(&key);
                    failed.push(key);
                    // Sending only meanwhile, where the adapter can.
                    if let Ok(running) = crate::receivers::start(&self.hub, adapter).await {
                        self.hub
                            .receivers
                            .lock()
                            .expect("receivers lock")
                            .insert(account, running);
                    }
                }
            }
        }
        failed
    }

    /// The lanes this instance holds run; the others stop (at once, side
    /// by side: each finishes its send in flight).
    async fn apply_lanes(&self, held: &HashMap<LeaseKey, i64>, taken: &[Taken]) {
        let want: HashSet<(AccountId, ChannelId)> = held
            .keys()
            .filter(|k| k.kind == LeaseKind::Lane)
            .filter_map(|k| {
                Some((
                    k.account.parse().ok()?,
                    ChannelId::new(k.channel.as_str()).ok()?,
                ))
            })
            .collect();
        let have: HashSet<(AccountId, ChannelId)> =
            self.hub.outbox.held_lanes().into_iter().collect();
        let outbox = &self.hub.outbox;
        futures_util::future::join_all(have.difference(&want).map(|(a, c)| outbox.drop_lane(a, c)))
            .await;
        let idle: HashMap<&LeaseKey, i64> =
            taken.iter().map(|t| (&t.held.key, t.idle_ms)).collect();
        for (a, c) in want.difference(&have) {
            let key = LeaseKey::lane(a.to_string(), c.as_str());
            let orphaned = idle
                .get(&key)
                .map(|ms| Duration::from_millis(u64::try_from(*ms).unwrap_or(0)));
            outbox.hold_lane(a, c, orphaned);
        }
    }
}

/// Lanes with rows waiting (through the partial index of pending rows).
async fn pending_lanes(hub: &Hub) -> Result<Vec<(String, String)>, StoreError> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT DISTINCT account, channel FROM outbox WHERE state = 'pending'")
        .fetch_all(hub.store.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

fn kind_label(kind: LeaseKind) -> crate::metrics::KindLabel {
    crate::metrics::KindLabel {
        kind: kind.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_move_when_instances_come_and_go() {
        // Alone: everything.
        assert_eq!(plan(300, 1, 0), Plan::Take(300));
        // A second instance joins: the first gives half back, the second
        // takes it.
        assert_eq!(plan(300, 2, 300), Plan::GiveBack(150));
        assert_eq!(plan(300, 2, 0), Plan::Take(150));
        // Three: shares of 100; one dies, the two left take 50 each.
        assert_eq!(plan(300, 3, 100), Plan::Keep);
        assert_eq!(plan(300, 2, 100), Plan::Take(50));
        // Uneven counts round up, so every lease finds a holder.
        assert_eq!(plan(3, 2, 1), Plan::Take(1));
        assert_eq!(plan(3, 2, 2), Plan::Keep);
        assert_eq!(plan(0, 3, 0), Plan::Keep);
        assert_eq!(plan(5, 0, 0), Plan::Take(5), "never fewer than itself");
    }
}
