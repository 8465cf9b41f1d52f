//! What the admin page, its live updates and `GET /v1/admin/overview` show:
//! one [`Overview`] gathered from the hub's health board, the outbox and
//! the store, and each gateway's members with their health.

use serde::Serialize;
use switchboard_core::Network;

use crate::health::AccountHealth;
use crate::hub::Hub;
use crate::outbox::notices::LaneOutage;
use crate::store::dead_letters::{DeadLetter, LaneQueue};
use crate::store::StoreError;

/// Most dead letters one page lists (the CLI and the API page through
/// more with `?limit=`).
pub const DEAD_LETTERS_SHOWN: i64 = 200;

/// Everything the admin page shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// When it was gathered (Unix ms).
    pub now_ms: i64,
    /// Every account's state.
    pub accounts: Vec<AccountHealth>,
    /// Destinations with rows waiting.
    pub queues: Vec<LaneQueue>,
    /// Destinations failing now.
    pub outages: Vec<LaneOutage>,
    /// The oldest dead letters (at most [`DEAD_LETTERS_SHOWN`]).
    pub dead_letters: Vec<DeadLetter>,
    /// Gateways with their members' health.
    pub gateways: Vec<GatewayView>,
}

/// One gateway.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GatewayView {
    /// Its name.
    pub name: String,
    /// Where it comes from: `config` (the configuration file) or `chats`
    /// (made from the chats with pairing codes or the links API).
    pub source: &'static str,
    /// Whether its public status page is on.
    pub status_page: bool,
    /// Its members, then the webhooks that receive it.
    pub members: Vec<MemberView>,
}

/// One member (or webhook) of a gateway, with its health.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    /// The account.
    pub account: String,
    /// Its network's name as people know it.
    pub network: &'static str,
    /// The channel (`webhook:<name>` for a webhook).
    pub channel: String,
    /// `in`, `out` or `inout`.
    pub direction: &'static str,
    /// Where people join it, if the config says.
    pub invite: Option<String>,
    /// `up`, `down`, `degraded`, `starting`, `rate_limited`, `paused` or
    /// `needs_action`.
    pub state: &'static str,
    /// Since when it is in a bad state (Unix ms); `None` while up.
    pub since_ms: Option<i64>,
    /// What is wrong, when something is.
    pub error: Option<String>,
    /// For a chat linked into the gateway (not configured): who linked it
    /// and when (Unix ms).
    pub linked: Option<LinkedBy>,
}

/// Who linked a chat into its gateway, and when.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkedBy {
    /// `Ann (12345) on telegram.main`, or `the admin API`.
    pub by: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// A network's name as people know it.
#[must_use]
pub fn network_name(network: Network) -> &'static str {
    if network == Network::API {
        "Bot API"
    } else {
        crate::adapters::display_name(network)
    }
}

impl Overview {
    /// Gathers it.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn gather(hub: &Hub) -> Result<Self, StoreError> {
        let accounts = hub.account_states();
        let outages = hub.outbox.outages();
        let queues = hub.store.lane_queues().await?;
        let dead_letters = hub.store.dead_letters(None, DEAD_LETTERS_SHOWN).await?;
        let mut gateways = gateways(hub, &accounts, &outages);
        // A failing destination says what its network answered.
        for m in gateways.iter_mut().flat_map(|g| &mut g.members) {
            if m.error.is_none() && m.state != "up" {
                m.error = queues
                    .iter()
                    .find(|q| q.account == m.account && q.channel == m.channel)
                    .and_then(|q| q.last_error.clone());
            }
        }
        Ok(Self {
            now_ms: crate::store::now_ms(),
            accounts,
            queues,
            outages,
            dead_letters,
            gateways,
        })
    }
}

/// The gateways in force with their members' health.
#[must_use]
pub fn gateways(hub: &Hub, accounts: &[AccountHealth], outages: &[LaneOutage]) -> Vec<GatewayView> {
    let routes = hub.router.load();
    let settings = hub.settings.read().expect("settings lock").clone();
    let links = hub.links.rows();
    let linked = |g: &switchboard_core::GatewayName, m: &crate::config::Member| {
        links
            .iter()
            .find(|l| &l.gateway == g && l.account == m.account && l.channel == m.channel)
            .map(|l| LinkedBy {
                by: l.created_by.clone(),
                at_ms: l.created_ms,
            })
    };
    let member = |account: &str, channel: &str| -> (&'static str, Option<i64>, Option<String>) {
        let health = accounts.iter().find(|a| a.account == account);
        if let Some(h) = health.filter(|h| h.state == "paused") {
            return ("paused", Some(h.since_ms), None);
        }
        if let Some(o) = outages
            .iter()
            .find(|o| o.account == account && o.channel == channel)
        {
            return (
                "down",
                Some(o.since_ms),
                health.and_then(|h| h.last_error.clone()),
            );
        }
        if let Some(c) = health.and_then(|h| h.channels.iter().find(|c| c.channel == channel)) {
            return ("needs_action", Some(c.since_ms), Some(c.error.clone()));
        }
        match health {
            Some(h) if h.state == "up" => ("up", None, None),
            Some(h) => (h.state, Some(h.since_ms), h.last_error.clone()),
            // Not running yet (or a bot API account, which has no receive
            // side to report): nothing says it is failing.
            None => ("up", None, None),
        }
    };
    routes
        .gateways()
        .iter()
        .map(|g| {
            let mut members = Vec::new();
            for m in &g.members {
                let (state, since_ms, error) = member(&m.account.to_string(), m.channel.as_str());
                members.push(MemberView {
                    account: m.account.to_string(),
                    network: network_name(m.account.network()),
                    channel: m.channel.to_string(),
                    direction: m.direction.as_str(),
                    invite: m.invite.clone(),
                    state,
                    since_ms,
                    error,
                    linked: linked(&g.name, m),
                });
            }
            for a in &settings.api {
                for w in a
                    .webhooks
                    .iter()
                    .filter(|w| crate::router::webhook_receives(g, &a.id, w))
                {
                    let channel = w.channel();
                    let (state, since_ms, error) = member(&a.id.to_string(), channel.as_str());
                    members.push(MemberView {
                        account: a.id.to_string(),
                        network: "Webhook",
                        channel: channel.to_string(),
                        direction: "out",
                        invite: None,
                        state,
                        since_ms,
                        error,
                        linked: None,
                    });
                }
            }
            GatewayView {
                name: g.name.to_string(),
                source: if crate::links::is_chat_made(&g.name) {
                    "chats"
                } else {
                    "config"
                },
                status_page: g.status_page,
                members,
            }
        })
        .collect()
}
