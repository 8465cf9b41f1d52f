//! [`CONNECTOR`]: the Signal network as the hub's registry holds it (its
//! name, its `[signal.<name>]` sections, its channel ids, its adapter).

use std::sync::Arc;

use switchboard_core::{
    same_config, AccountConfig, AccountId, AccountSetup, Adapter, Connector, Network, Secrets,
    SectionProblems,
};

use crate::config::SignalConfig;

/// The network's name in config tables and account ids.
pub const NETWORK: Network = Network::from_static("signal");

/// The Signal connector.
pub struct SignalConnector;

/// The value the hub's registry lists.
pub static CONNECTOR: SignalConnector = SignalConnector;

impl Connector for SignalConnector {
    fn network(&self) -> Network {
        NETWORK
    }

    fn display_name(&self) -> &'static str {
        "Signal"
    }

    fn parse(
        &self,
        name: &str,
        section: &toml::Value,
        // Nothing in a Signal section is a secret: the daemon holds the keys.
        _secrets: &dyn Secrets,
    ) -> Result<Arc<dyn AccountConfig>, SectionProblems> {
        crate::config::parse(name, section).map(|c| Arc::new(c) as Arc<dyn AccountConfig>)
    }

    fn check_channel(&self, channel: &str) -> Result<(), String> {
        crate::config::check_channel(channel)
    }

    #[cfg(feature = "fake")]
    fn test_peer(&self) -> Option<&'static dyn switchboard_core::testkit::TestPeerFactory> {
        Some(&crate::fake::peer::PEERS)
    }
}

impl AccountConfig for SignalConfig {
    fn account(&self) -> &AccountId {
        &self.account
    }

    // A Signal account receives from every group its number is in: the
    // adapter needs no list of channels.
    fn build(&self, setup: &AccountSetup) -> Arc<dyn Adapter> {
        crate::SignalAdapter::new(self.clone(), setup.commands.clone())
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
