//! Channels that moved: a network can answer a send with "this chat is now
//! X" (Telegram upgrades a group to a supergroup with a new id). The outbox
//! records the move in the store (with the queue and the message map moved
//! along) and here; the router reads it on every route, so the gateway
//! keeps the channel under its configured id and traffic flows to and from
//! the new one. Moves are read back from the store at start.

use std::collections::HashMap;
use std::sync::RwLock;

use switchboard_core::{AccountId, ChannelId};

/// Channel ids by (account, channel id).
type ChannelMap = HashMap<(AccountId, ChannelId), ChannelId>;

/// The moves in force, both ways; shared by the router and the outbox.
#[derive(Debug, Default)]
pub struct Moves {
    /// Configured or older id → current id, and current id → configured
    /// id. A std lock held for a lookup or an insert.
    both: RwLock<(ChannelMap, ChannelMap)>,
}

impl Moves {
    /// Records that `from` is now `to` (following a chain of moves).
    pub fn insert(&self, account: &AccountId, from: &ChannelId, to: &ChannelId) {
        let mut both = self.both.write().expect("moves lock");
        // The configured id the moved channel started as.
        let origin = both
            .1
            .get(&(account.clone(), from.clone()))
            .cloned()
            .unwrap_or_else(|| from.clone());
        both.0.insert((account.clone(), origin.clone()), to.clone());
        both.0.insert((account.clone(), from.clone()), to.clone());
        both.1.insert((account.clone(), to.clone()), origin);
    }

    /// Where the channel configured as `channel` lives now.
    #[must_use]
    pub fn current(&self, account: &AccountId, channel: &ChannelId) -> ChannelId {
        self.both
            .read()
            .expect("moves lock")
            .0
            .get(&(account.clone(), channel.clone()))
            .cloned()
            .unwrap_or_else(|| channel.clone())
    }

    /// The configured id of the channel that now lives as `channel`.
    #[must_use]
    pub fn configured(&self, account: &AccountId, channel: &ChannelId) -> ChannelId {
        self.both
            .read()
            .expect("moves lock")
            .1
            .get(&(account.clone(), channel.clone()))
            .cloned()
            .unwrap_or_else(|| channel.clone())
    }
}
