//! The one place that maps configured accounts to adapters: the bot API's
//! webhooks, and each network crate under `bridges/` (its section checked
//! by its own config module, its adapter built here).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use rand::Rng;
use switchboard_core::{AccountId, Adapter};

use crate::api::webhook::WebhookAdapter;
use crate::config::{ApiToken, Scopes, Secret, Settings};

/// The adapters the configuration asks for.
pub struct Built {
    /// Every adapter, for the outbox and the supervisor.
    pub all: Vec<Arc<dyn Adapter>>,
    /// The webhook adapters by API account, for reloads.
    pub webhooks: HashMap<AccountId, Arc<WebhookAdapter>>,
}

/// A network account's validated section.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkConfig {
    /// `[telegram.<name>]`.
    Telegram(switchboard_telegram::TelegramConfig),
    /// `[signal.<name>]`.
    Signal(switchboard_signal::SignalConfig),
    /// `[matrix.<name>]`.
    Matrix(switchboard_matrix::MatrixConfig),
}

impl NetworkConfig {
    /// The account it configures.
    #[must_use]
    pub fn account(&self) -> &AccountId {
        match self {
            Self::Telegram(c) => &c.account,
            Self::Signal(c) => &c.account,
            Self::Matrix(c) => &c.account,
        }
    }
}

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
    let channels = channels_of(settings, n.account());
    match n {
        NetworkConfig::Telegram(c) => {
            switchboard_telegram::TelegramAdapter::new(c.clone(), channels)
        }
        NetworkConfig::Signal(c) => switchboard_signal::SignalAdapter::new(c.clone()),
        NetworkConfig::Matrix(c) => switchboard_matrix::MatrixAdapter::new(c.clone(), channels),
    }
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

/// Checks a network account's section (`[telegram.<name>]`, ...) with
/// the network's own configuration rules; the problems come back as
/// (key under the section, message) pairs. Each network crate under
/// `bridges/` owns its section's raw and validated forms; the hub only
/// dispatches here.
///
/// # Errors
/// The section's problems.
pub fn check_section(
    network: switchboard_core::Network,
    name: &str,
    section: &toml::Value,
    secrets: &dyn switchboard_core::Secrets,
) -> Result<NetworkConfig, Vec<(String, String)>> {
    match network {
        switchboard_core::Network::Telegram => {
            switchboard_telegram::parse_config(name, section, secrets).map(NetworkConfig::Telegram)
        }
        switchboard_core::Network::Signal => {
            switchboard_signal::parse_config(name, section).map(NetworkConfig::Signal)
        }
        switchboard_core::Network::Matrix => {
            switchboard_matrix::parse_config(name, section, secrets).map(NetworkConfig::Matrix)
        }
        _ => Err(vec![(
            String::new(),
            format!("the {network} adapter is not part of this build yet"),
        )]),
    }
}

/// Checks a gateway member's channel id with its network's rules.
///
/// # Errors
/// What is wrong with it.
pub fn check_channel(network: switchboard_core::Network, channel: &str) -> Result<(), String> {
    match network {
        switchboard_core::Network::Telegram => switchboard_telegram::check_channel(channel),
        switchboard_core::Network::Signal => switchboard_signal::check_channel(channel),
        switchboard_core::Network::Matrix => switchboard_matrix::check_channel(channel),
        _ => Ok(()),
    }
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
