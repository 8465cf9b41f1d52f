//! Several instances on one PostgreSQL (`[cluster] enabled = true`): the
//! bridge is no single point of failure. docs/scaling.md says why it is
//! built this way and how to run it; this is where each part lives.
//!
//! # What an instance holds
//! Work is divided by **leases**, rows of the `leases` table with an
//! expiry on the database's clock and a fencing token:
//! - an **account** lease: the account's receive side (Telegram polling or
//!   its webhook, the signal-cli subscription, the Matrix `/sync` loop or
//!   appservice listener) runs on its holder only. The other instances
//!   ready the account for sending (`Adapter::serve_sends`) where the
//!   adapter can, so they can drive its lanes.
//! - a **lane** lease: one destination channel's lane is driven by its
//!   holder only, so order per channel holds across instances.
//! - a **task** lease: retention runs on one instance.
//!
//! Every instance renews what it holds every `takeover_after / 6`, for
//! `2/3 × takeover_after`; an instance that dies (kill -9, cut off from the
//! database) stops renewing, and its leases are taken by the others once
//! they run out: within `takeover_after` of its last renewal. Leases spread:
//! each instance takes up to its share (`ceil(leases / live instances)`)
//! and gives back what is above it, so a new instance gets work and a dead
//! one's work is divided.
//!
//! # A paused holder cannot act after losing its lease
//! - A batch that moves an account's network cursor commits only if the
//!   writer finds, in the same transaction, the account's lease still held
//!   by this process with the token it took it with (the row is locked
//!   until the commit): an adapter acknowledges upstream only after that
//!   commit, so nothing is acknowledged after the lease moved.
//! - An instance acts on a lease only until its local deadline: the time
//!   the last successful renewal was *sent*, plus the lease's length minus
//!   a margin. Past it, with no renewal, it stops the receive sides and
//!   lanes before anyone else may take them; a send already in flight is
//!   the one thing that can land after the takeover (the same window as a
//!   lost answer: counted as a possible duplicate).
//!
//! # Feeds that cannot skip
//! Feed sequence numbers are handed out under a lock held to the commit
//! (`store::writer`'s cluster step), so they commit in order across
//! instances. Each instance reads the feed in order ([`feed`]) and passes
//! the rows to its live consumers: any instance serves any consumer.
//!
//! # Layout
//! - this file: [`Cluster`]: joining and leaving, what this process holds
//!   and the fences its writes carry, status.
//! - [`balance`]: the lease round (renew, take, give back) and applying it
//!   to receive sides and lanes.
//! - [`feed`]: the feed pump.
//! - [`listen`]: notifications from the other instances (lanes to wake,
//!   feed rows, leases given back).
//! - `store::postgres`: the SQL of all of it.

pub mod balance;
pub mod feed;
pub mod listen;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::{AccountId, Adapter, Network};
use tokio::sync::Notify;

use crate::config::{ClusterSettings, Settings};
use crate::store::postgres::{self, Fence, Holder, InstanceLock, Joined, LeaseKey, Membership};
use crate::store::{Store, StoreError};

/// Why an instance cannot join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A live instance has this instance's name.
    #[error("{0}")]
    NameInUse(String),
}

/// `<hostname>-<pid>`: the name of an instance whose configuration gives
/// none. Unique per process; a restarted process is a new instance.
#[must_use]
pub fn default_instance_name() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// This machine's name, in the characters an instance name may have.
fn hostname() -> String {
    #[cfg(unix)]
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    #[cfg(not(unix))]
    let host = std::env::var("COMPUTERNAME").unwrap_or_default();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if host.is_empty() {
        "switchboard".to_owned()
    } else {
        host
    }
}

/// The database URL an instance of `settings` connects with: in a
/// cluster, named after the instance (`application_name`), so the
/// database's own views say which instance a connection is.
#[must_use]
pub fn database_url(settings: &Settings) -> String {
    let url = settings.database.url.expose();
    match &settings.cluster {
        Some(c) => postgres::with_application_name(url, &c.instance),
        None => url.to_owned(),
    }
}

/// The shared instance lock of a cluster member: refused while an instance
/// without `[cluster]` uses the database.
///
/// # Errors
/// [`StoreError::InUse`] saying so, or the database.
pub async fn member_lock(settings: &Settings) -> Result<InstanceLock, StoreError> {
    InstanceLock::acquire(&database_url(settings), Membership::Member).await
}

/// Whether an account's receive side is leased. A bot API account receives
/// through its HTTP listener, which every instance serves.
#[must_use]
pub fn leased(account: &AccountId) -> bool {
    account.network() != Network::API
}

/// The lease timings `takeover_after` gives (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a renewal holds a lease.
    pub ttl: Duration,
    /// Time between rounds.
    pub tick: Duration,
    /// How long after sending a renewal this process acts on it.
    pub valid_for: Duration,
}

impl Timing {
    /// Leases last 2/3 of `takeover_after` and are renewed six times within
    /// it: a lease of a dead holder runs out at most `ttl` after its last
    /// renewal and is taken within a `tick` after that.
    #[must_use]
    pub fn of(takeover_after: Duration) -> Self {
        let ttl = takeover_after * 2 / 3;
        let margin = (ttl / 10).max(Duration::from_millis(500));
        Self {
            ttl,
            tick: takeover_after / 6,
            valid_for: ttl.saturating_sub(margin),
        }
    }

    /// The lease's length in ms.
    #[must_use]
    pub fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// This instance as a member of its cluster.
pub struct Cluster {
    settings: ClusterSettings,
    holder: Holder,
    store: Store,
    timing: Timing,
    lock: tokio::sync::Mutex<Option<InstanceLock>>,
    /// The leases this process holds, with their tokens, as of the last
    /// round. A std mutex: looked up per committed cursor, never held across
    /// an await.
    held: Mutex<HashMap<LeaseKey, i64>>,
    /// Wakes the lease round at once (leases given back elsewhere, a write
    /// refused for a lease this process no longer holds).
    pub(crate) wake: Notify,
    /// Wakes the feed pump (feed rows committed here or elsewhere).
    pub(crate) feed_wake: Notify,
}

impl Cluster {
    /// Joins the cluster on `store`'s database: takes the shared instance
    /// lock (refused while a lone instance runs there) and registers this
    /// instance. A live instance with the same name is waited for as long
    /// as its lease would last (it may have just been killed), then
    /// refused.
    ///
    /// # Errors
    /// The database, or the name in use.
    /// `lock` is the shared instance lock, taken before the store was
    /// opened ([`member_lock`]).
    pub async fn join(
        settings: &Settings,
        store: &Store,
        lock: InstanceLock,
    ) -> Result<Arc<Self>, ClusterError> {
        let cs = settings
            .cluster
            .clone()
            .expect("join is called for a cluster");
        let holder = Holder {
            name: cs.instance.clone(),
            run_id: rand::random::<i64>().abs().max(1),
        };
        let timing = Timing::of(cs.takeover_after);
        let info = serde_json::json!({
            "pid": std::process::id(),
            "host": hostname(),
            "version": env!("CARGO_PKG_VERSION"),
            "admin": settings.admin_bind.map(|a| a.to_string()),
            "api": settings.api.iter().map(|a| a.bind.to_string()).collect::<Vec<_>>(),
        })
        .to_string();
        let mut waited = false;
        loop {
            match postgres::join(store.pool(), &holder, &info, timing.ttl_ms()).await? {
                Joined::Joined => break,
                Joined::NameInUse { seen_ms_ago, info } if !waited => {
                    let wait = Duration::from_millis(
                        u64::try_from((timing.ttl_ms() - seen_ms_ago).max(0)).unwrap_or(0) + 500,
                    );
                    tracing::warn!(instance = %holder.name, %info, ?wait, "An instance of this name was seen moments ago; waiting for its lease to run out.");
                    tokio::time::sleep(wait).await;
                    waited = true;
                }
                Joined::NameInUse { seen_ms_ago, info } => {
                    lock.release().await;
                    return Err(ClusterError::NameInUse(format!(
                        "an instance named `{}` is running on this database (seen {} ms ago: {info}). \
                         Give each instance its own [cluster] instance name (or leave it out: \
                         the default is <hostname>-<pid>)",
                        holder.name, seen_ms_ago
                    )));
                }
            }
        }
        tracing::info!(instance = %holder.name, takeover_after = ?cs.takeover_after, "Joined the cluster.");
        Ok(Arc::new(Self {
            settings: cs,
            holder,
            store: store.clone(),
            timing,
            lock: tokio::sync::Mutex::new(Some(lock)),
            held: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            feed_wake: Notify::new(),
        }))
    }

    /// This instance's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.holder.name
    }

    /// The process holding this instance's leases.
    #[must_use]
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Its lease timings.
    #[must_use]
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// `[cluster] takeover_after`.
    #[must_use]
    pub fn takeover_after(&self) -> Duration {
        self.settings.takeover_after
    }

    /// Whether this process holds `key` (as of the last round).
    #[must_use]
    pub fn holds(&self, key: &LeaseKey) -> bool {
        self.held.lock().expect("held lock").contains_key(key)
    }

    /// Every lease this process holds.
    #[must_use]
    pub fn held(&self) -> Vec<LeaseKey> {
        let mut v: Vec<LeaseKey> = self
            .held
            .lock()
            .expect("held lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub(crate) fn set_held(&self, held: HashMap<LeaseKey, i64>) {
        *self.held.lock().expect("held lock") = held;
    }

    /// Stops counting `key` as held (it is being given back).
    pub(crate) fn forget(&self, key: &LeaseKey) {
        self.held.lock().expect("held lock").remove(key);
    }

    /// Whether this instance runs `account`'s receive side.
    #[must_use]
    pub fn receives(&self, account: &AccountId) -> bool {
        !leased(account) || self.holds(&LeaseKey::account(account.to_string()))
    }

    /// What this instance runs of `adapter`'s account.
    #[must_use]
    pub fn role(&self, adapter: &dyn Adapter) -> crate::receivers::Role {
        use crate::receivers::Role;
        if self.receives(adapter.account()) {
            Role::Receive
        } else if adapter.sends_without_receiving() {
            Role::SendOnly
        } else {
            Role::Idle
        }
    }

    /// The fence a batch moving `account`'s cursor commits under: the
    /// account's lease as this process holds it, or `None` (refused).
    #[must_use]
    pub fn fence(&self, account: &AccountId) -> Option<Fence> {
        let token = *self
            .held
            .lock()
            .expect("held lock")
            .get(&LeaseKey::account(account.to_string()))?;
        Some(Fence {
            account: account.to_string(),
            run_id: self.holder.run_id,
            token,
        })
    }

    /// Whether this instance runs retention.
    #[must_use]
    pub fn runs_retention(&self) -> bool {
        self.holds(&LeaseKey::task("retention"))
    }

    /// Leaves the cluster at a clean shutdown, once receive sides and lanes
    /// stopped: gives every lease back (the others take them at once: they
    /// are told), marks this instance stopped, lets the instance lock go.
    pub async fn leave(&self) {
        self.set_held(HashMap::new());
        let pool = self.store.pool();
        match postgres::release_all(pool, &self.holder).await {
            Ok(n) => tracing::info!(leases = n, "Gave every lease back."),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot give the leases back; they run out by themselves.")
            }
        }
        let _ = postgres::notify_now(pool, postgres::channel::LEASES, &self.holder.name).await;
        if let Err(e) = postgres::leave(pool, &self.holder).await {
            tracing::debug!(error = %e, "Cannot mark this instance stopped.");
        }
        if let Some(lock) = self.lock.lock().await.take() {
            lock.release().await;
        }
    }

    /// Every instance and lease of the cluster, for `/v1/status`.
    ///
    /// # Errors
    /// On database failure.
    pub async fn status(&self) -> Result<serde_json::Value, StoreError> {
        let pool = self.store.pool();
        let instances = postgres::instances(pool, self.timing.ttl_ms()).await?;
        let leases = postgres::leases(pool).await?;
        Ok(serde_json::json!({
            "instance": self.holder.name,
            "takeover_after_ms": u64::try_from(self.settings.takeover_after.as_millis()).unwrap_or(u64::MAX),
            "instances": instances,
            "leases": leases,
        }))
    }
}

/// What runs on this instance, for `/v1/status`: each account's role and
/// how many lanes it drives.
#[must_use]
pub fn here(hub: &crate::hub::Hub) -> serde_json::Value {
    use crate::receivers::Role;
    let mut roles: Vec<serde_json::Value> = hub
        .receivers
        .lock()
        .expect("receivers lock")
        .iter()
        .map(|(a, r)| {
            serde_json::json!({
                "account": a.to_string(),
                "role": match r.role() {
                    Role::Receive => "receive",
                    Role::SendOnly => "send_only",
                    Role::Idle => "idle",
                },
            })
        })
        .collect();
    roles.sort_by(|a, b| a["account"].as_str().cmp(&b["account"].as_str()));
    serde_json::json!({
        "roles": roles,
        "lanes": hub.outbox.held_lanes().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_take_over_within_takeover_after() {
        let t = Timing::of(Duration::from_secs(15));
        assert_eq!(t.ttl, Duration::from_secs(10));
        assert_eq!(t.tick, Duration::from_millis(2500));
        assert_eq!(t.valid_for, Duration::from_secs(9));
        // A lease renewed just before its holder died runs out after ttl,
        // and is taken at the next round of another instance.
        assert!(t.ttl + t.tick <= Duration::from_secs(15));
        let short = Timing::of(Duration::from_secs(3));
        assert_eq!(short.valid_for, Duration::from_millis(1500));
    }

    #[test]
    fn default_names_are_host_and_pid() {
        let name = default_instance_name();
        assert!(
            name.ends_with(&format!("-{}", std::process::id())),
            "{name}"
        );
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    }
}
