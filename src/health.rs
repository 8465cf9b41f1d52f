//! Account health: one state per account, from the receive side (what its
//! adapter reports through `Host::health`, and the supervisor's restarts)
//! and the send side (the outbox's circuit breaker), with the last error
//! and since when. `switchboard status`, `GET /v1/status` and `/metrics`
//! show it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use switchboard_core::{AccountId, ReceiveHealth};

use crate::store::now_ms;

/// How receiving goes, as the supervisor and the adapter report it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Receive {
    /// `run` is starting (or restarting after a failure).
    Starting,
    /// The adapter says it is connected.
    Connected,
    /// Reconnecting, or `run` failed and waits for its restart.
    Failing(String),
    /// An admin must act.
    NeedsAction(String),
}

#[derive(Debug, Clone)]
struct Entry {
    receive: Receive,
    since_ms: i64,
    restarts: u64,
    last_error: Option<String>,
}

/// Every account's receive-side health; cheap to share.
#[derive(Debug, Default)]
pub struct HealthBoard {
    /// A std mutex: a few field updates, never held across await.
    accounts: Mutex<BTreeMap<AccountId, Entry>>,
}

/// One account's state as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountHealth {
    /// `<network>.<name>`.
    pub account: String,
    /// `starting`, `up`, `degraded`, `down` or `needs_action`.
    pub state: &'static str,
    /// Since when (Unix ms) the receive side is in its current state.
    pub since_ms: i64,
    /// The last error seen on the receive side, or what an admin must do.
    pub last_error: Option<String>,
    /// How often the supervisor restarted the adapter.
    pub restarts: u64,
}

impl HealthBoard {
    fn set(&self, account: &AccountId, receive: Receive) {
        let mut all = self.accounts.lock().expect("health lock");
        let e = all.entry(account.clone()).or_insert_with(|| Entry {
            receive: Receive::Starting,
            since_ms: now_ms(),
            restarts: 0,
            last_error: None,
        });
        if let Receive::Failing(err) | Receive::NeedsAction(err) = &receive {
            e.last_error = Some(err.clone());
        }
        if e.receive != receive {
            e.receive = receive;
            e.since_ms = now_ms();
        }
    }

    /// The account is gone (a reload removed it).
    pub fn forget(&self, account: &AccountId) {
        self.accounts.lock().expect("health lock").remove(account);
    }

    /// The supervisor is (re)starting an adapter's `run`.
    pub fn starting(&self, account: &AccountId) {
        self.set(account, Receive::Starting);
    }

    /// `run` failed or panicked; it will be restarted.
    pub fn crashed(&self, account: &AccountId, error: String) {
        self.set(account, Receive::Failing(error));
        let mut all = self.accounts.lock().expect("health lock");
        if let Some(e) = all.get_mut(account) {
            e.restarts += 1;
        }
    }

    /// What the adapter itself reports.
    pub fn report(&self, account: &AccountId, health: ReceiveHealth) {
        let receive = match health {
            ReceiveHealth::Connected => Receive::Connected,
            ReceiveHealth::Reconnecting { error } => Receive::Failing(error),
            ReceiveHealth::NeedsAction { what } => Receive::NeedsAction(what),
        };
        self.set(account, receive);
    }

    /// Every account's state; `sending_down` says which accounts' outbox
    /// breaker is open.
    #[must_use]
    pub fn states(&self, sending_down: &dyn Fn(&str) -> bool) -> Vec<AccountHealth> {
        let all = self.accounts.lock().expect("health lock");
        all.iter()
            .map(|(account, e)| {
                let name = account.to_string();
                let down = sending_down(&name);
                let state = match (&e.receive, down) {
                    (Receive::NeedsAction(_), _) => "needs_action",
                    (_, true) => "down",
                    (Receive::Failing(_), false) => "degraded",
                    (Receive::Starting, false) => "starting",
                    (Receive::Connected, false) => "up",
                };
                AccountHealth {
                    account: name,
                    state,
                    since_ms: e.since_ms,
                    last_error: e.last_error.clone(),
                    restarts: e.restarts,
                }
            })
            .collect()
    }
}
