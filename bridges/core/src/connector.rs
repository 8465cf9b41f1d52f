//! The connector seam: all the hub knows of a network, behind one value.
//!
//! A network crate exports one [`Connector`] (a unit struct in its
//! `connector.rs`). The hub's registry (`src/adapters.rs`) lists them, and
//! reads every top-level configuration table that is not its own through
//! them: `[<network>.<name>]` goes to the connector whose
//! [`network`](Connector::network) it names, which parses and checks it
//! into an [`AccountConfig`]; that builds the account's [`Adapter`]. Gateway
//! members' channel ids are checked by the same connector. Nothing else in
//! the hub names a network, so a new one is a folder under `bridges/` plus
//! one line in the registry (see docs/adding-a-network.md).
//!
//! Two options of every account are the hub's, not the network's: `links`
//! (the account takes chat commands, [`crate::commands`]) and
//! `command_prefix` (how they are written where the network has no bot
//! commands of its own, [`Connector::command_style`]). The hub reads them
//! out of the section before the connector parses it, and hands the
//! result to [`AccountConfig::build`] in the [`AccountSetup`].

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::adapter::Adapter;
use crate::commands::{CommandForm, CommandStyle};
use crate::ids::{AccountId, ChannelId, Network};
use crate::secrets::Secrets;

/// The problems of a configuration section, each as (key under the
/// section, message); the hub prefixes the section's own key and the file.
pub type SectionProblems = Vec<(String, String)>;

/// One network, as the hub's registry holds it.
pub trait Connector: Send + Sync + 'static {
    /// The network's name: its config tables (`[telegram.main]`) and the
    /// first half of its accounts' ids (`telegram.main`).
    fn network(&self) -> Network;

    /// The name people read in notices and status (`Telegram`).
    fn display_name(&self) -> &'static str;

    /// Parses and checks one account's section, `[<network>.<name>]`, with
    /// secrets resolved through `secrets` (inline, `_env` or `_file`).
    ///
    /// # Errors
    /// Every problem found, keyed by its path under the section (an empty
    /// key for the section itself).
    fn parse(
        &self,
        name: &str,
        section: &toml::Value,
        secrets: &dyn Secrets,
    ) -> Result<Arc<dyn AccountConfig>, SectionProblems>;

    /// Checks a gateway member's channel id (a Telegram chat id, a Matrix
    /// room id or alias, ...).
    ///
    /// # Errors
    /// What is wrong with it, in a sentence.
    fn check_channel(&self, channel: &str) -> Result<(), String>;

    /// How the network's people write commands to a bot: its own bot
    /// commands (`/link`), or a prefix the account configures (`!sb
    /// link`, the default).
    fn command_style(&self) -> CommandStyle {
        CommandStyle::Prefix
    }

    /// The network's peer for the hub's end-to-end tests (its fake, or the
    /// real service where one runs here); `None` for a network without one.
    #[cfg(feature = "test-util")]
    fn test_peer(&self) -> Option<&'static dyn crate::testkit::TestPeerFactory> {
        None
    }
}

/// What the hub tells an account's adapter when it builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountSetup {
    /// The account's channels in the configured gateways (a reload that
    /// changes them builds the adapter again). Chats linked from the chats
    /// themselves are not among them: an adapter that takes commands
    /// receives from every chat it is in, and [`Host::reads`](crate::Host)
    /// says which of them a gateway reads now.
    pub channels: BTreeSet<ChannelId>,
    /// How commands are written on this account, when it takes them
    /// (`links = true`); `None`: it takes none, a command is a message.
    pub commands: Option<CommandForm>,
}

/// One account's validated section: what the hub keeps in its settings,
/// compares on a reload, and builds the adapter from.
pub trait AccountConfig: fmt::Debug + Send + Sync + 'static {
    /// The account it configures.
    fn account(&self) -> &AccountId;

    /// Builds the account's adapter, knowing the account's channels in the
    /// gateways and whether it takes commands (a reload that changes
    /// either builds it again).
    fn build(&self, setup: &AccountSetup) -> Arc<dyn Adapter>;

    /// Whether `other` is the same configuration (a reload keeps the
    /// running adapter when it is); see [`same_config`].
    fn same(&self, other: &dyn AccountConfig) -> bool;

    /// For [`same_config`]'s downcast.
    fn as_any(&self) -> &dyn Any;
}

/// [`AccountConfig::same`] for a config type with `PartialEq`: equal when
/// `other` is of the same type and equal.
#[must_use]
pub fn same_config<T: PartialEq + 'static>(this: &T, other: &dyn AccountConfig) -> bool {
    other.as_any().downcast_ref::<T>() == Some(this)
}
