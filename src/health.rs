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
    /// Connected, but part of the account's work fails (the reason).
    Degraded(String),
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountHealth {
    /// `<network>.<name>`.
    pub account: String,
    /// `starting`, `up`, `degraded`, `rate_limited`, `down`, `paused` or
    /// `needs_action`.
    pub state: &'static str,
    /// Since when (Unix ms) the receive side is in its current state.
    pub since_ms: i64,
    /// The last error seen on the receive side, or what an admin must do.
    pub last_error: Option<String>,
    /// How often the supervisor restarted the adapter.
    pub restarts: u64,
    /// Until when (Unix ms) the network paces sends (state `rate_limited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited_until_ms: Option<i64>,
    /// Channels of the account that need an admin on the network (the bot
    /// was removed from a group): their messages wait.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelHealth>,
}

/// One channel whose sends the network refuses until someone acts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelHealth {
    /// The channel id.
    pub channel: String,
    /// `needs_action`.
    pub state: &'static str,
    /// Since when (Unix ms).
    pub since_ms: i64,
    /// The network's own words.
    pub error: String,
}

impl HealthBoard {
    /// Sets the receive state; true when it changed.
    fn set(&self, account: &AccountId, receive: Receive) -> bool {
        let mut all = self.accounts.lock().expect("health lock");
        let e = all.entry(account.clone()).or_insert_with(|| Entry {
            receive: Receive::Starting,
            since_ms: now_ms(),
            restarts: 0,
            last_error: None,
        });
        match &receive {
            Receive::Failing(err) | Receive::NeedsAction(err) | Receive::Degraded(err) => {
                e.last_error = Some(err.clone());
            }
            // Connected again: the last error no longer holds, and a status
            // that showed it beside `up` would send an admin looking for a
            // problem that is gone.
            Receive::Connected => e.last_error = None,
            Receive::Starting => {}
        }
        if e.receive == receive {
            return false;
        }
        e.receive = receive;
        e.since_ms = now_ms();
        true
    }

    /// The account is gone (a reload removed it).
    pub fn forget(&self, account: &AccountId) {
        self.accounts.lock().expect("health lock").remove(account);
    }

    /// The supervisor is (re)starting an adapter's `run`.
    pub fn starting(&self, account: &AccountId) {
        self.set(account, Receive::Starting);
    }

    /// Whether the account's adapter last said it is connected.
    #[must_use]
    pub fn is_connected(&self, account: &AccountId) -> bool {
        self.accounts
            .lock()
            .expect("health lock")
            .get(account)
            .is_some_and(|e| e.receive == Receive::Connected)
    }

    /// `run` failed or panicked; it will be restarted.
    pub fn crashed(&self, account: &AccountId, error: String) {
        self.set(account, Receive::Failing(error));
        let mut all = self.accounts.lock().expect("health lock");
        if let Some(e) = all.get_mut(account) {
            e.restarts += 1;
        }
    }

    /// What the adapter itself reports; true when the account just became
    /// connected (from starting, failing, degraded or needing action).
    pub fn report(&self, account: &AccountId, health: ReceiveHealth) -> bool {
        let receive = match health {
            ReceiveHealth::Connected => Receive::Connected,
            ReceiveHealth::Reconnecting { error } => Receive::Failing(error),
            ReceiveHealth::Degraded { reason } => Receive::Degraded(reason),
            ReceiveHealth::NeedsAction { what } => Receive::NeedsAction(what),
        };
        let connected = receive == Receive::Connected;
        self.set(account, receive) && connected
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
                    (Receive::Failing(_) | Receive::Degraded(_), false) => "degraded",
                    (Receive::Starting, false) => "starting",
                    (Receive::Connected, false) => "up",
                };
                AccountHealth {
                    account: name,
                    state,
                    since_ms: e.since_ms,
                    last_error: e.last_error.clone(),
                    restarts: e.restarts,
                    rate_limited_until_ms: None,
                    channels: Vec::new(),
                }
            })
            .collect()
    }
}
