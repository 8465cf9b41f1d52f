//! The router: which destinations an event goes to.
//!
//! Pure and precomputed from the validated gateways, with the links made
//! from chats merged in (`crate::links::merge`). The rule for a channel
//! in several gateways: one delivery per destination channel per event (the
//! first gateway in config order carries it). Bot API members are
//! special in two ways: they read a shared per-gateway feed (so every
//! consumer has its own cursor and nobody steals anyone's messages), and
//! their webhooks are push destinations like any network channel.

use std::collections::HashMap;
use std::sync::Arc;

use switchboard_core::{AccountId, ChannelId, GatewayName, Network};

use crate::config::{Direction, Gateway, Settings, Webhook};
use crate::moves::Moves;
use crate::store::Dest;

/// Whether webhook `w` of bot API account `account` receives gateway
/// `g`'s events: its `gateways` names `g`, or is unset (every gateway of
/// its account) while the account writes to `g`. A webhook that names a
/// gateway its account is no member of is an `out` destination of it like
/// any other: it gets the gateway's events, and its outages are announced
/// there.
#[must_use]
pub fn webhook_receives(g: &Gateway, account: &AccountId, w: &Webhook) -> bool {
    match &w.gateways {
        Some(named) => named.contains(&g.name),
        None => g
            .members
            .iter()
            .any(|m| &m.account == account && m.direction.writes()),
    }
}

/// Where one event goes.
#[derive(Debug, Default, Clone)]
pub struct Route {
    /// Push destinations: one outbox row each.
    pub dests: Vec<Dest>,
    /// Gateways whose bot API feed gets the event.
    pub feed: Vec<GatewayName>,
}

impl Route {
    /// True when no gateway reads the source.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty() && self.feed.is_empty()
    }
}

/// The routing tables, swapped whole on a reload ([`Router::load`] hands
/// out the current ones; a request keeps the tables it started with).
#[derive(Debug)]
pub struct Router {
    /// A std lock held only to clone or replace the `Arc`.
    current: std::sync::RwLock<std::sync::Arc<Routes>>,
    /// Channels a network moved, read on every route.
    moves: std::sync::Arc<Moves>,
}

impl Router {
    /// Builds the routing tables; `moves` says which channels now live
    /// under another id.
    #[must_use]
    pub fn new(settings: &Settings, moves: std::sync::Arc<Moves>) -> Self {
        Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(Routes::new(
                settings,
                moves.clone(),
            ))),
            moves,
        }
    }

    /// The tables in force now.
    #[must_use]
    pub fn load(&self) -> std::sync::Arc<Routes> {
        self.current.read().expect("router lock").clone()
    }

    /// The configured id of the channel that now lives as `channel` (a
    /// Telegram group upgraded to a supergroup keeps its first id).
    #[must_use]
    pub fn configured(&self, account: &AccountId, channel: &ChannelId) -> ChannelId {
        self.moves.configured(account, channel)
    }

    /// Where the channel configured as `channel` lives now.
    #[must_use]
    pub fn current(&self, account: &AccountId, channel: &ChannelId) -> ChannelId {
        self.moves.current(account, channel)
    }

    /// Replaces the tables (a reload).
    pub fn replace(&self, settings: &Settings) {
        *self.current.write().expect("router lock") =
            std::sync::Arc::new(Routes::new(settings, self.moves.clone()));
    }
}

/// The resolved gateways.
#[derive(Debug, Clone)]
pub struct Routes {
    gateways: Vec<Gateway>,
    /// Webhooks per API account, in config order.
    webhooks: Vec<(AccountId, Vec<Arc<Webhook>>)>,
    /// For each readable (account, channel), the gateways it feeds.
    sources: HashMap<(AccountId, ChannelId), Vec<usize>>,
    /// Channels a network moved: members keep their configured ids here.
    moves: std::sync::Arc<Moves>,
}

impl Routes {
    /// Builds the routing tables.
    #[must_use]
    pub fn new(settings: &Settings, moves: std::sync::Arc<Moves>) -> Self {
        let mut sources: HashMap<(AccountId, ChannelId), Vec<usize>> = HashMap::new();
        for (i, g) in settings.gateways.iter().enumerate() {
            for m in g.members.iter().filter(|m| m.direction.reads()) {
                sources
                    .entry((m.account.clone(), m.channel.clone()))
                    .or_default()
                    .push(i);
            }
        }
        Self {
            gateways: settings.gateways.clone(),
            webhooks: settings
                .api
                .iter()
                .map(|a| (a.id.clone(), a.webhooks.clone()))
                .collect(),
            sources,
            moves,
        }
    }

    /// Every destination channel some gateway writes to (network channels
    /// and webhooks): what a reload compares to find removed ones.
    #[must_use]
    pub fn destinations(&self) -> std::collections::BTreeSet<(AccountId, ChannelId)> {
        let mut out = std::collections::BTreeSet::new();
        for g in &self.gateways {
            for m in g.members.iter().filter(|m| m.direction.writes()) {
                if m.account.network() != Network::API {
                    out.insert((
                        m.account.clone(),
                        self.moves.current(&m.account, &m.channel),
                    ));
                }
            }
            for (account, hooks) in &self.webhooks {
                for w in hooks.iter().filter(|w| webhook_receives(g, account, w)) {
                    out.insert((account.clone(), w.channel()));
                }
            }
        }
        out
    }

    /// The gateways, in config order.
    #[must_use]
    pub fn gateways(&self) -> &[Gateway] {
        &self.gateways
    }

    /// A gateway by name.
    #[must_use]
    pub fn gateway(&self, name: &GatewayName) -> Option<&Gateway> {
        self.gateways.iter().find(|g| &g.name == name)
    }

    /// How `account` is a member of gateway `gw`, if it is.
    #[must_use]
    pub fn membership(&self, gw: &GatewayName, account: &AccountId) -> Option<Direction> {
        self.gateway(gw)?
            .members
            .iter()
            .find(|m| &m.account == account)
            .map(|m| m.direction)
    }

    /// Routes an event read from a network channel.
    #[must_use]
    pub fn route_inbound(&self, account: &AccountId, channel: &ChannelId) -> Route {
        let mut route = Route::default();
        // A moved channel is still the member it was configured as.
        let configured = self.moves.configured(account, channel);
        for &i in self
            .sources
            .get(&(account.clone(), configured))
            .into_iter()
            .flatten()
        {
            self.fan_out(&self.gateways[i], account, channel, None, &mut route);
        }
        // A channel in several of these gateways gets the event once (the
        // first gateway's row carries it).
        let mut seen = std::collections::HashSet::new();
        route
            .dests
            .retain(|d| seen.insert((d.account.clone(), d.channel.clone())));
        route
    }

    /// Routes an event a bot posted into gateway `gw` with token `token`.
    /// `None` when the account may not post there.
    #[must_use]
    pub fn route_api(&self, gw: &GatewayName, account: &AccountId, token: &str) -> Option<Route> {
        let g = self.gateway(gw)?;
        if !self.membership(gw, account)?.reads() {
            return None;
        }
        let mut route = Route::default();
        let api = ChannelId::new("api").expect("valid");
        self.fan_out(g, account, &api, Some(token), &mut route);
        Some(route)
    }

    /// Routes a notice about destination `account`/`channel` to every other
    /// member of gateway `gw`, never back to it.
    #[must_use]
    pub fn route_notice(
        &self,
        gw: &GatewayName,
        account: &AccountId,
        channel: &ChannelId,
    ) -> Route {
        let mut route = Route::default();
        if let Some(g) = self.gateway(gw) {
            self.fan_out(g, account, channel, None, &mut route);
        }
        route
    }

    fn fan_out(
        &self,
        g: &Gateway,
        account: &AccountId,
        channel: &ChannelId,
        token: Option<&str>,
        route: &mut Route,
    ) {
        for m in g.members.iter().filter(|m| m.direction.writes()) {
            if m.account.network() == Network::API {
                // Other bots on the same account read the feed too; each
                // consumer skips its own posts when it reads.
                if !route.feed.contains(&g.name) {
                    route.feed.push(g.name.clone());
                }
            } else if !(&m.account == account
                && m.channel == self.moves.configured(account, channel))
            {
                route.dests.push(Dest {
                    gateway: g.name.clone(),
                    account: m.account.clone(),
                    channel: self.moves.current(&m.account, &m.channel),
                });
            }
        }
        // Webhooks, members' and those that name the gateway themselves.
        for (hook_account, hooks) in &self.webhooks {
            for w in hooks
                .iter()
                .filter(|w| webhook_receives(g, hook_account, w))
            {
                let own = hook_account == account
                    && (token.is_some() && w.skip_token.as_deref() == token
                        || &w.channel() == channel);
                if !own {
                    route.dests.push(Dest {
                        gateway: g.name.clone(),
                        account: hook_account.clone(),
                        channel: w.channel(),
                    });
                }
            }
        }
    }
}
