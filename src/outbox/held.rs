//! Lanes in a cluster (see `crate::cluster`): a lane runs on the instance
//! that holds its lease, and only while it does.
//!
//! The lease round ([`crate::cluster::balance`]) tells the outbox which
//! lanes it holds: [`Outbox::hold_lane`] starts one, [`Outbox::drop_lane`]
//! stops it (the send in flight finishes and is recorded) before the lease
//! is given back, so the next holder reads the queue as this one left it
//! and order per channel holds. A poke (a commit here, or another
//! instance's notification) wakes a held lane and is only remembered for a
//! lane held elsewhere or by nobody ([`Outbox::take_unheld`]: the round
//! makes sure such a lane has a lease row).
//!
//! Each held lane stops on its own signal, which also follows the hub's
//! shutdown. Outage notices follow the lane: an outage announced by the
//! previous holder is taken back from the store when the lane is taken,
//! and forgotten here when it is given back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use switchboard_core::{AccountId, Adapter, ChannelId};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::Outbox;

/// One lane this instance holds.
struct Hold {
    /// True to stop it (given back, lost, or shutdown).
    stop: Arc<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

/// The held lanes; enabled in a cluster only.
#[derive(Default)]
pub(super) struct HeldLanes {
    on: OnceLock<()>,
    /// Std mutexes: an insert or a removal, never held across an await.
    lanes: Mutex<HashMap<(AccountId, ChannelId), Hold>>,
    unheld: Mutex<HashSet<(AccountId, ChannelId)>>,
}

impl HeldLanes {
    /// Whether lanes run only where their lease is held.
    pub(super) fn enabled(&self) -> bool {
        self.on.get().is_some()
    }

    /// Whether this instance holds the lane; one it does not is
    /// remembered for the lease round.
    pub(super) fn holds(&self, account: &AccountId, channel: &ChannelId) -> bool {
        let key = (account.clone(), channel.clone());
        let held = self
            .lanes
            .lock()
            .expect("held lanes lock")
            .contains_key(&key);
        if !held {
            self.unheld.lock().expect("unheld lock").insert(key);
        }
        held
    }

    /// The tasks of every held lane, for the outbox's shutdown.
    pub(super) fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        self.lanes
            .lock()
            .expect("held lanes lock")
            .values_mut()
            .filter_map(|h| h.task.take())
            .collect()
    }
}

impl Outbox {
    /// Lanes run only where their lease is held (a cluster). Call before
    /// [`start`](Self::start).
    pub fn set_cluster(&self) {
        let _ = self.inner.held.on.set(());
    }

    /// Whether lanes run only where their lease is held.
    #[must_use]
    pub fn in_cluster(&self) -> bool {
        self.inner.held.enabled()
    }

    /// Every destination account's adapter.
    #[must_use]
    pub fn adapters(&self) -> Vec<Arc<dyn Adapter>> {
        let mut v: Vec<Arc<dyn Adapter>> = self
            .inner
            .accounts
            .read()
            .expect("accounts lock")
            .values()
            .map(|w| w.adapter())
            .collect();
        v.sort_by(|a, b| a.account().cmp(b.account()));
        v
    }

    /// One account's adapter.
    #[must_use]
    pub fn adapter(&self, account: &AccountId) -> Option<Arc<dyn Adapter>> {
        self.worker(account).map(|w| w.adapter())
    }

    /// Starts the lane of `account`/`channel`, whose lease this instance
    /// just took; `orphaned` is how long nobody drove it before (for the
    /// notice a takeover slower than `notice_after` owes). False when the
    /// account has no adapter here.
    pub fn hold_lane(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        orphaned: Option<Duration>,
    ) -> bool {
        let Some(worker) = self.worker(account) else {
            return false;
        };
        let key = (account.clone(), channel.clone());
        let stop = Arc::new(watch::Sender::new(false));
        {
            let mut lanes = self.inner.held.lanes.lock().expect("held lanes lock");
            if lanes.contains_key(&key) {
                return true;
            }
            lanes.insert(
                key.clone(),
                Hold {
                    stop: stop.clone(),
                    task: None,
                },
            );
        }
        // The lane also stops with the hub.
        let mut global = self.inner.shutdown.clone();
        let forward = stop.clone();
        tokio::spawn(async move {
            let mut own = forward.subscribe();
            tokio::select! {
                _ = global.wait_for(|s| *s) => { forward.send_replace(true); }
                _ = own.wait_for(|s| *s) => {}
            }
        });
        let notify = Arc::new(Notify::new());
        worker
            .lanes
            .lock()
            .expect("lanes lock")
            .insert(channel.clone(), notify.clone());
        let task = self.spawn_lane(account, channel, notify, stop.subscribe(), orphaned);
        if let Some(h) = self
            .inner
            .held
            .lanes
            .lock()
            .expect("held lanes lock")
            .get_mut(&key)
        {
            h.task = Some(task);
        }
        true
    }

    /// Stops the lane of `account`/`channel` (its lease is given back or was
    /// lost) and waits for it: the send in flight finishes and is recorded.
    pub async fn drop_lane(&self, account: &AccountId, channel: &ChannelId) {
        let key = (account.clone(), channel.clone());
        let hold = self
            .inner
            .held
            .lanes
            .lock()
            .expect("held lanes lock")
            .remove(&key);
        let Some(hold) = hold else {
            return;
        };
        hold.stop.send_replace(true);
        if let Some(w) = self.worker(account) {
            w.lanes.lock().expect("lanes lock").remove(channel);
        }
        if let Some(task) = hold.task {
            let _ = tokio::time::timeout(
                self.inner.settings.send_timeout + Duration::from_secs(1),
                task,
            )
            .await;
        }
        // The store keeps an announced outage; the next holder takes it.
        self.inner.outages.forget(account, channel);
    }

    /// The lanes this instance holds.
    #[must_use]
    pub fn held_lanes(&self) -> Vec<(AccountId, ChannelId)> {
        self.inner
            .held
            .lanes
            .lock()
            .expect("held lanes lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Lanes poked here that this instance does not hold (since the last
    /// call).
    #[must_use]
    pub fn take_unheld(&self) -> Vec<(AccountId, ChannelId)> {
        std::mem::take(&mut *self.inner.held.unheld.lock().expect("unheld lock"))
            .into_iter()
            .collect()
    }

    /// In a cluster, wakes the lane on the instance holding it, when that
    /// is another one (its rows changed outside the writer's ingest: a
    /// dead letter requeued). Best effort: the lease round sweeps anyway.
    pub async fn wake_elsewhere(&self, account: &AccountId, channel: &ChannelId) {
        let Some(me) = self.inner.store.cluster_instance() else {
            return;
        };
        let key = (account.clone(), channel.clone());
        if self
            .inner
            .held
            .lanes
            .lock()
            .expect("held lanes lock")
            .contains_key(&key)
        {
            return;
        }
        let payload = format!("{me}\n{account} {channel}");
        if let Err(e) = crate::store::postgres::notify_now(
            self.inner.store.pool(),
            crate::store::postgres::channel::LANES,
            &payload,
        )
        .await
        {
            tracing::debug!(error = %e, "Cannot wake the lane's holder; its next sweep finds the rows.");
        }
    }

    /// Wakes every held lane (after notifications may have been missed).
    pub fn poke_held(&self) {
        for (a, c) in self.held_lanes() {
            self.poke(&a, &c);
        }
    }
}
