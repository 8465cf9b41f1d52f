//! The registry: the one place that names the networks of this build.
//!
//! Each network crate under `bridges/` exports one
//! [`Connector`](switchboard_core::Connector); [`CONNECTORS`] lists them.
//! Configuration tables that are not the hub's own are read through the
//! connector they name ([`connector`]), gateway members' channel ids are
//! checked by it, and accounts' adapters are built from what it parsed. The
//! bot API (`api`) is the hub's own network: its webhooks are built here too.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use rand::Rng;
use switchboard_core::{AccountConfig, AccountId, Adapter, Connector, Network};

use crate::api::webhook::WebhookAdapter;
use crate::config::{ApiToken, Scopes, Secret, Settings};

/// Every network of this build. A new network is one more line here.
pub static CONNECTORS: &[&dyn Connector] = &[
    &switchboard_telegram::CONNECTOR,
    &switchboard_signal::CONNECTOR,
    &switchboard_matrix::CONNECTOR,
];

/// The connector of `network`, if this build has it.
#[must_use]
pub fn connector(network: Network) -> Option<&'static dyn Connector> {
    CONNECTORS.iter().copied().find(|c| c.network() == network)
}

/// The names of every network this build knows, the bot API's first.
#[must_use]
pub fn network_names() -> Vec<&'static str> {
    std::iter::once(Network::API.as_str())
        .chain(CONNECTORS.iter().map(|c| c.network().as_str()))
        .collect()
}

/// How people read a network's name: `Telegram`, `the bot API`.
#[must_use]
pub fn display_name(network: Network) -> &'static str {
    connector(network).map_or("The bot API", |c| c.display_name())
}

/// The adapters the configuration asks for.
pub struct Built {
    /// Every adapter, for the outbox and the supervisor.
    pub all: Vec<Arc<dyn Adapter>>,
    /// The webhook adapters by API account, for reloads.
    pub webhooks: HashMap<AccountId, Arc<WebhookAdapter>>,
}

/// A network account's validated section (`[telegram.<name>]`, ...), as
/// its connector parsed it.
pub type NetworkConfig = Arc<dyn AccountConfig>;

/// Every adapter the configuration asks for.
#[must_use]
pub fn build(settings: &Settings) -> Built {
    let webhooks: HashMap<AccountId, Arc<WebhookAdapter>> = settings
        .api
        .iter()
        .map(|a| (a.id.clone(), Arc::new(WebhookAdapter::new(a))))
        .collect();
    let mut all: Vec<Arc<dyn Adapter>> = webhooks
        .values()
        .map(|w| w.clone() as Arc<dyn Adapter>)
        .collect();
    for n in &settings.networks {
        all.push(build_network(n, settings));
    }
    Built { all, webhooks }
}

/// The adapter for one network account.
#[must_use]
pub fn build_network(n: &NetworkConfig, settings: &Settings) -> Arc<dyn Adapter> {
    n.build(&switchboard_core::AccountSetup {
        channels: channels_of(settings, n.account()),
        commands: settings.commands.get(n.account()).cloned(),
    })
}

/// The channels of `account` in the gateways: an adapter is built knowing
/// them (a Telegram forum topic listed on its own), so a reload that
/// changes them rebuilds it.
#[must_use]
pub fn channels_of(
    settings: &Settings,
    account: &AccountId,
) -> std::collections::BTreeSet<switchboard_core::ChannelId> {
    settings
        .gateways
        .iter()
        .flat_map(|g| &g.members)
        .filter(|m| &m.account == account)
        .map(|m| m.channel.clone())
        .collect()
}

/// Checks a network account's section (`[telegram.<name>]`, ...) with the
/// network's own rules; the problems come back as (key under the section,
/// message) pairs.
///
/// # Errors
/// The section's problems, or that this build has no such network.
pub fn check_section(
    network: Network,
    name: &str,
    section: &toml::Value,
    secrets: &dyn switchboard_core::Secrets,
) -> Result<NetworkConfig, Vec<(String, String)>> {
    match connector(network) {
        Some(c) => c.parse(name, section, secrets),
        None => Err(vec![(String::new(), unknown_network(network))]),
    }
}

/// Checks a gateway member's channel id with its network's rules.
///
/// # Errors
/// What is wrong with it.
pub fn check_channel(network: Network, channel: &str) -> Result<(), String> {
    match connector(network) {
        Some(c) => c.check_channel(channel),
        None if network == Network::API => Ok(()),
        None => Err(unknown_network(network)),
    }
}

/// The message for a network this build does not have.
#[must_use]
pub fn unknown_network(network: Network) -> String {
    format!(
        "this build has no network `{network}` (it has: {})",
        network_names().join(", ")
    )
}

/// Gives every API account without tokens a generated one, kept in
/// `<data_dir>/<account>.token` so it survives restarts, and prints it
/// (to stdout, never to the logs).
///
/// # Errors
/// When the token file cannot be read or written.
pub fn ensure_tokens(mut settings: Settings) -> anyhow::Result<Settings> {
    for account in &mut settings.api {
        if !account.tokens.is_empty() {
            continue;
        }
        let path = settings.data_dir.join(format!("{}.token", account.id));
        let secret = if let Ok(existing) = std::fs::read_to_string(&path) {
            tracing::info!(account = %account.id, file = %path.display(), "Using the generated token kept in its file.");
            existing.trim().to_owned()
        } else {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("creating {}", settings.data_dir.display()))?;
            let token = format!("{:032x}", rand::thread_rng().gen::<u128>());
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(f, "{token}")?;
            // Printed once, when created (stdout ends up in journals): it
            // stays readable in its file, for its owner only.
            println!(
                "{} has no configured token; use this one (kept in {}):\n  Authorization: Bearer {token}",
                account.id,
                path.display()
            );
            token
        };
        account.tokens.push(ApiToken {
            name: "default".into(),
            secret: Secret::new(secret),
            gateways: None,
            scopes: Scopes {
                read: true,
                write: true,
            },
        });
    }
    Ok(settings)
}
