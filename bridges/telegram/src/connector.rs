//! [`CONNECTOR`]: the Telegram network as the hub's registry holds it (its
//! name, its `[telegram.<name>]` sections, its channel ids, its adapter).

use std::sync::Arc;

use switchboard_core::{
    same_config, AccountConfig, AccountId, AccountSetup, Adapter, CommandStyle, Connector, Network,
    Secrets, SectionProblems,
};

use crate::config::TelegramConfig;

/// The network's name in config tables and account ids.
pub const NETWORK: Network = Network::from_static("telegram");

/// The Telegram connector.
pub struct TelegramConnector;

/// The value the hub's registry lists.
pub static CONNECTOR: TelegramConnector = TelegramConnector;

impl Connector for TelegramConnector {
    fn network(&self) -> Network {
        NETWORK
    }

    fn display_name(&self) -> &'static str {
        "Telegram"
    }

    fn parse(
        &self,
        name: &str,
        section: &toml::Value,
        secrets: &dyn Secrets,
    ) -> Result<Arc<dyn AccountConfig>, SectionProblems> {
        crate::config::parse(name, section, secrets).map(|c| Arc::new(c) as Arc<dyn AccountConfig>)
    }

    fn check_channel(&self, channel: &str) -> Result<(), String> {
        crate::config::check_channel(channel)
    }

    fn command_style(&self) -> CommandStyle {
        CommandStyle::Slash
    }

    #[cfg(feature = "fake")]
    fn test_peer(&self) -> Option<&'static dyn switchboard_core::testkit::TestPeerFactory> {
        Some(&crate::fake::peer::PEERS)
    }
}

impl AccountConfig for TelegramConfig {
    fn account(&self) -> &AccountId {
        &self.account
    }

    fn build(&self, setup: &AccountSetup) -> Arc<dyn Adapter> {
        crate::TelegramAdapter::new(
            self.clone(),
            setup.channels.iter().cloned(),
            setup.commands.clone(),
        )
    }

    fn same(&self, other: &dyn AccountConfig) -> bool {
        same_config(self, other)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_follows_the_rules_of_network_names() {
        assert_eq!(
            switchboard_core::Network::new(super::NETWORK.as_str()),
            Ok(super::NETWORK)
        );
    }
}
