//! Links made from the chats themselves: an admin of one chat asks the bot
//! for a pairing code (`/link`, `!sb link`), an admin of another chat
//! sends it there, and the two chats are mirrored (docs/design.md,
//! "Links made from the chats").
//!
//! # Where things are
//! - this file: [`Link`] (one chat in a gateway, as the `links` table
//!   keeps it), [`Links`] (the rows in force, in memory), and
//!   [`merge`]: the gateways the router uses, the configuration's with the
//!   links on top.
//! - `codes`: pairing codes (`sb-7KQ4-M2XD`: 40 random bits from an
//!   alphabet without look-alikes), normalised and hashed; only the hash
//!   is stored.
//! - `store`: the tables (migration 0006) and every change to them, each
//!   one transaction in the store writer; what `check` and `status` read.
//! - `plan`: which gateway a new link joins, and why one is refused.
//! - `commands`: the commands adapters deliver (`link`, `unlink`,
//!   `status`, `help`), acted on and answered once for every network.
//! - `admin`: the JSON routes of the admin listener (list, link two
//!   channels, remove), mounted with [`admin_routes`].
//!
//! # Rules
//! - Only accounts with `links = true` take commands, and only their chats
//!   are linked (through the chats or the admin API).
//! - A chat is linked in one gateway at most: a new gateway named
//!   `link-<6 hex>`, or the gateway of the chat the code came from, when
//!   that is a gateway made from chats or a configured one with
//!   `linkable = true`.
//! - The configuration wins: a link for a chat a configured gateway lists
//!   is not in force (a warning says so, in the log, `check` and
//!   `status`) until the configuration no longer lists it. So is one whose
//!   configured gateway is gone or no longer `linkable`, or whose account
//!   is no longer configured.
//! - Links are rows in the database: a restart or a reload keeps them, and
//!   a link or unlink puts the new routes in force at once (the same swap
//!   a reload does: what was queued for a chat that left is
//!   dead-lettered).

mod admin;
mod codes;
mod commands;
mod plan;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use switchboard_core::{AccountId, ChannelId, GatewayName};

use crate::config::{Direction, Gateway, Member, Settings};

pub use admin::admin_routes;
pub(crate) use commands::handle as handle_command;
pub(crate) use store::stays_in_its_chat;

/// The start of the names of gateways made from chats; configured
/// gateways may not use it.
pub const GATEWAY_PREFIX: &str = "link-";

/// Whether `name` is a gateway made from chats (or reserved for them).
#[must_use]
pub fn is_chat_made(name: &GatewayName) -> bool {
    name.as_str().starts_with(GATEWAY_PREFIX)
}

/// One chat in a gateway by a link: a row of the `links` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// The row's id (the admin API removes by it).
    pub id: i64,
    /// The gateway it is a member of: made from chats (`link-…`) or a
    /// configured one with `linkable = true`.
    pub gateway: GatewayName,
    /// The chat's account.
    pub account: AccountId,
    /// The chat, under the id it was configured or first seen as.
    pub channel: ChannelId,
    /// The chat's name as people saw it when it was linked.
    pub name: Option<String>,
    /// When (Unix ms).
    pub created_ms: i64,
    /// Who: `Ann (12345) on telegram.main`, or `the admin API`.
    pub created_by: String,
}

/// A link that is not in force, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inactive {
    /// The link.
    pub link: Link,
    /// Why it is not in force, in a sentence.
    pub why: String,
}

/// The gateways in force: the configuration's, with the links on top.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Configured gateways (in their order, linked chats added to the
    /// `linkable` ones), then gateways made from chats by name.
    pub gateways: Vec<Gateway>,
    /// Links not in force.
    pub inactive: Vec<Inactive>,
}

/// Merges `links` into the configuration's gateways (see the rules in the
/// module's docs).
#[must_use]
pub fn merge(settings: &Settings, links: &[Link]) -> Merged {
    let mut gateways = settings.gateways.clone();
    let configured = gateways.len();
    let mut made: BTreeMap<GatewayName, Vec<Member>> = BTreeMap::new();
    let mut inactive = Vec::new();
    let mut off = |link: &Link, why: String| {
        inactive.push(Inactive {
            link: link.clone(),
            why,
        });
    };
    for link in links {
        if !settings
            .networks
            .iter()
            .any(|n| n.account() == &link.account)
        {
            off(
                link,
                format!("its account {} is not configured", link.account),
            );
            continue;
        }
        if let Some(g) = settings.gateways.iter().find(|g| {
            g.members
                .iter()
                .any(|m| m.account == link.account && m.channel == link.channel)
        }) {
            off(
                link,
                format!(
                    "the configuration lists this chat in gateway `{}`, which wins",
                    g.name
                ),
            );
            continue;
        }
        let member = Member {
            account: link.account.clone(),
            channel: link.channel.clone(),
            direction: Direction::InOut,
            invite: None,
        };
        if is_chat_made(&link.gateway) {
            made.entry(link.gateway.clone()).or_default().push(member);
            continue;
        }
        match gateways[..configured]
            .iter_mut()
            .find(|g| g.name == link.gateway)
        {
            Some(g) if g.linkable => g.members.push(member),
            Some(g) => off(
                link,
                format!(
                    "gateway `{}` no longer takes linked chats (linkable = false)",
                    g.name
                ),
            ),
            None => off(
                link,
                format!("gateway `{}` is no longer configured", link.gateway),
            ),
        }
    }
    for (name, members) in made {
        gateways.push(Gateway {
            name,
            members,
            notice_after: Some(std::time::Duration::from_secs(60)),
            late_after: Some(std::time::Duration::from_secs(120)),
            nick_format: None,
            linkable: true,
            // Made by the chats, not the operator: nothing public.
            status_page: false,
        });
    }
    Merged { gateways, inactive }
}

/// The links in force, as the database has them; replaced after each
/// change (a change is rare, a route lookup never reads these).
pub struct Links {
    rows: std::sync::RwLock<Arc<Vec<Link>>>,
    /// Held while a link changes and its routes go in force, and by a
    /// reload while it swaps routes: one at a time, each on the other's
    /// result.
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// Answers per chat in the last minute, so a chat that floods the bot
    /// with commands is not answered for each.
    pub(crate) answered:
        std::sync::Mutex<std::collections::HashMap<(AccountId, ChannelId), Vec<i64>>>,
}

impl Links {
    /// The rows read at start.
    #[must_use]
    pub fn new(rows: Vec<Link>) -> Self {
        Self {
            rows: std::sync::RwLock::new(Arc::new(rows)),
            changes: tokio::sync::Mutex::new(()),
            answered: std::sync::Mutex::default(),
        }
    }

    /// The rows now.
    #[must_use]
    pub fn rows(&self) -> Arc<Vec<Link>> {
        self.rows.read().expect("links lock").clone()
    }

    /// Replaces the rows (after a change).
    pub(crate) fn set(&self, rows: Vec<Link>) {
        *self.rows.write().expect("links lock") = Arc::new(rows);
    }

    /// Whether a chat may have one more answer now (at most
    /// [`commands::ANSWERS_PER_MINUTE`] a minute); counts it.
    pub(crate) fn may_answer(&self, account: &AccountId, channel: &ChannelId) -> bool {
        let now = crate::store::now_ms();
        let mut answered = self.answered.lock().expect("answered lock");
        answered.retain(|_, times| {
            times.retain(|t| now - t < 60_000);
            !times.is_empty()
        });
        let times = answered
            .entry((account.clone(), channel.clone()))
            .or_default();
        if times.len() >= commands::ANSWERS_PER_MINUTE {
            return false;
        }
        times.push(now);
        true
    }

    /// Reads the rows again after a change and puts the new routes in
    /// force (as a reload does). Call it holding [`Links::changes`].
    ///
    /// # Errors
    /// When the rows cannot be read (the routes stay as they were).
    pub(crate) async fn refresh(
        &self,
        hub: &crate::hub::Hub,
    ) -> Result<(), crate::store::StoreError> {
        self.reread(hub).await?;
        // The other instances of a cluster route too: they read the rows
        // again when told (and whenever their notification connection
        // comes back, in case they missed it).
        if let Some(cluster) = &hub.cluster {
            if let Err(e) = crate::store::postgres::notify_now(
                hub.store.pool(),
                crate::store::postgres::channel::LINKS,
                cluster.name(),
            )
            .await
            {
                tracing::warn!(error = %e, "Cannot tell the other instances about a link change; they see it when they next reconnect or reload.");
            }
        }
        Ok(())
    }

    /// Another instance of the cluster changed a link: reads the rows again
    /// and puts the routes in force here.
    pub(crate) async fn follow(&self, hub: &crate::hub::Hub) {
        let _one = self.changes.lock().await;
        if let Err(e) = self.reread(hub).await {
            tracing::warn!(error = %e, "Cannot read the links another instance changed; the routes stay as they were until the next change or reload.");
        }
    }

    async fn reread(&self, hub: &crate::hub::Hub) -> Result<(), crate::store::StoreError> {
        let rows = store::load(&hub.store).await?;
        if *self.rows() == rows {
            return Ok(());
        }
        self.set(rows);
        let settings = hub.settings.read().expect("settings lock").clone();
        let removed = hub.swap_routes(&settings);
        if !removed.is_empty() {
            tracing::info!(
                ?removed,
                "Destinations no gateway writes to now; their queues are dead-lettered."
            );
        }
        Ok(())
    }

    /// `settings` with the links merged into its gateways: what the
    /// router and the outbox use. Links not in force are logged.
    #[must_use]
    pub fn effective(&self, settings: &Settings) -> Settings {
        let merged = merge(settings, &self.rows());
        for i in &merged.inactive {
            tracing::warn!(
                gateway = %i.link.gateway, account = %i.link.account, channel = %i.link.channel,
                why = %i.why, "A chat-made link is not in force."
            );
        }
        Settings {
            gateways: merged.gateways,
            ..settings.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        crate::config::from_text(
            "t.toml",
            &format!(
                r#"
[telegram.main]
token = "1:a"
links = true
[signal.main]
account = "+15550000001"
daemon = "tcp://127.0.0.1:1"
[[gateway]]
name = "open"
linkable = true
[[gateway.inout]]
account = "telegram.main"
channel = "-100"
[[gateway]]
name = "closed"
[[gateway.inout]]
account = "telegram.main"
channel = "-200"
{extra}"#
            ),
        )
        .unwrap()
    }

    fn link(id: i64, gateway: &str, account: &str, channel: &str) -> Link {
        Link {
            id,
            gateway: GatewayName::new(gateway).unwrap(),
            account: account.parse().unwrap(),
            channel: ChannelId::new(channel).unwrap(),
            name: None,
            created_ms: 0,
            created_by: "test".into(),
        }
    }

    #[test]
    fn links_join_linkable_gateways_and_make_their_own() {
        let s = settings("");
        let rows = vec![
            link(1, "open", "signal.main", "+15550000002"),
            link(2, "closed", "signal.main", "+15550000003"),
            link(3, "link-abc123", "telegram.main", "-300"),
            link(4, "link-abc123", "signal.main", "+15550000004"),
            link(5, "link-def456", "telegram.main", "-100"),
            link(6, "gone", "signal.main", "+15550000005"),
            link(7, "link-0a0a0a", "matrix.main", "!r:x"),
        ];
        let m = merge(&s, &rows);
        let names: Vec<&str> = m.gateways.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["open", "closed", "link-abc123"]);
        assert_eq!(m.gateways[0].members.len(), 2, "joined the linkable one");
        assert_eq!(m.gateways[1].members.len(), 1, "not the closed one");
        assert_eq!(m.gateways[2].members.len(), 2);
        assert!(m.gateways[2].linkable);
        let why: Vec<(i64, &str)> = m
            .inactive
            .iter()
            .map(|i| (i.link.id, i.why.as_str()))
            .collect();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].1.contains("linkable = false"), "{why:?}");
        assert!(why[1].1.contains("`open`, which wins"), "{why:?}");
        assert!(why[2].1.contains("no longer configured"), "{why:?}");
        assert!(why[3].1.contains("not configured"), "{why:?}");
    }
}
