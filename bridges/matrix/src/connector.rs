//! [`CONNECTOR`]: the Matrix network as the hub's registry holds it (its
//! name, its `[matrix.<name>]` sections, its channel ids, its adapter).

use std::sync::Arc;

use switchboard_core::{
    same_config, AccountConfig, AccountId, AccountSetup, Adapter, Connector, Network, Secrets,
    SectionProblems,
};

use crate::config::MatrixConfig;

/// The network's name in config tables and account ids.
pub const NETWORK: Network = Network::from_static("matrix");

/// The Matrix connector.
pub struct MatrixConnector;

/// The value the hub's registry lists.
pub static CONNECTOR: MatrixConnector = MatrixConnector;

impl Connector for MatrixConnector {
    fn network(&self) -> Network {
        NETWORK
    }

    fn display_name(&self) -> &'static str {
        "Matrix"
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

    #[cfg(feature = "synapse")]
    fn test_peer(&self) -> Option<&'static dyn switchboard_core::testkit::TestPeerFactory> {
        Some(&crate::synapse::peer::PEERS)
    }
}

impl AccountConfig for MatrixConfig {
    fn account(&self) -> &AccountId {
        &self.account
    }

    fn build(&self, setup: &AccountSetup) -> Arc<dyn Adapter> {
        crate::MatrixAdapter::new(self.clone(), setup.channels.clone(), setup.commands.clone())
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
