//! Newtype identifiers. Every id that crosses a module boundary is one of
//! these, validated where it enters (config, network payloads, API input).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id failed validation; the message says which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {reason}")]
pub struct ParseIdError {
    /// Which kind of id was being parsed.
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// A chat network switchboard speaks: `api` (the bot API the hub serves)
/// or the name a network crate's [`Connector`](crate::Connector) gives
/// (`telegram`, `signal`, `matrix`, ...). The set is open: which networks a
/// build has is the hub's registry's business (`src/adapters.rs`), and a
/// configuration naming one it lacks is refused there, with the list.
///
/// It is `Copy` (ids are copied on every hot path: routing, queue labels):
/// the name is a `&'static str`, either a constant of its network crate or
/// interned once when parsed (see [`Network::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network(&'static str);

/// Most distinct network names parsed at run time: the interner never
/// grows past this, whatever a client sends (an account in a URL).
const MAX_NAMES: usize = 64;

impl Network {
    /// The bot API served by the hub itself.
    pub const API: Self = Self("api");

    /// A network crate's own name, as a constant (`telegram`); must follow
    /// the rules of [`Network::new`] (a unit test of each crate checks it).
    #[must_use]
    pub const fn from_static(name: &'static str) -> Self {
        Self(name)
    }

    /// Parses a network name: 1-32 lowercase ASCII letters, digits or `_`,
    /// starting with a letter. Known or not: only the registry knows.
    ///
    /// # Errors
    /// When the name breaks the rules, or too many distinct names were
    /// parsed already.
    pub fn new(name: &str) -> Result<Self, ParseIdError> {
        let ok = (1..=32).contains(&name.len())
            && name.as_bytes()[0].is_ascii_lowercase()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(ParseIdError {
                what: "network",
                value: name.to_owned(),
                reason: "use 1-32 lowercase letters, digits or `_`, starting with a letter (e.g. `telegram`)",
            });
        }
        static NAMES: std::sync::OnceLock<
            std::sync::Mutex<std::collections::BTreeSet<&'static str>>,
        > = std::sync::OnceLock::new();
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = names.get(name) {
            return Ok(Self(known));
        }
        if names.len() >= MAX_NAMES {
            return Err(ParseIdError {
                what: "network",
                value: name.to_owned(),
                reason: "too many distinct network names",
            });
        }
        // Leaked once per distinct name, at most MAX_NAMES of them.
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(leaked);
        Ok(Self(leaked))
    }

    /// The lowercase name used in config section headers and account ids.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for Network {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One configured connection to a network, written `<network>.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId {
    network: Network,
    name: String,
}

impl AccountId {
    /// Builds an account id, checking that the name is a plain identifier.
    pub fn new(network: Network, name: &str) -> Result<Self, ParseIdError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(ParseIdError {
                what: "account name",
                value: name.to_owned(),
                reason: "use 1-64 ASCII letters, digits, `_` or `-`",
            });
        }
        Ok(Self {
            network,
            name: name.to_owned(),
        })
    }

    /// The network this account connects to.
    #[must_use]
    pub fn network(&self) -> Network {
        self.network
    }

    /// The account's name within its network.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.network, self.name)
    }
}

impl FromStr for AccountId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((net, name)) = s.split_once('.') else {
            return Err(ParseIdError {
                what: "account",
                value: s.to_owned(),
                reason: "expected `<network>.<name>`, e.g. `telegram.main`",
            });
        };
        Self::new(net.parse()?, name)
    }
}

impl Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a non-empty string.
            pub fn new(value: impl Into<String>) -> Result<Self, ParseIdError> {
                let value = value.into();
                if value.is_empty() || value.len() > 255 {
                    return Err(ParseIdError {
                        what: $what,
                        value,
                        reason: "must be 1-255 bytes",
                    });
                }
                // Both stores must take every id: PostgreSQL's TEXT refuses
                // NUL, and no network uses control characters in ids.
                if value.chars().any(char::is_control) {
                    return Err(ParseIdError {
                        what: $what,
                        value: value.escape_debug().to_string(),
                        reason: "must not contain control characters",
                    });
                }
                Ok(Self(value))
            }

            /// The id as the network writes it.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

string_id!(
    /// A conversation on one account, in the network's own id
    /// (a Telegram chat id, a Signal group id, a Matrix room id, `api`).
    ChannelId,
    "channel"
);
string_id!(
    /// A message id as one network knows it.
    RemoteId,
    "remote id"
);
string_id!(
    /// The name of a gateway: a set of channels mirrored to each other.
    GatewayName,
    "gateway name"
);

/// The hub's own id for an event: assigned when the event is committed and
/// stable across restarts. References between messages use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for EventId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Self)
            .ok_or_else(|| ParseIdError {
                what: "event id",
                value: s.to_owned(),
                reason: "expected a positive integer",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_round_trip_and_reject_garbage() {
        let a: AccountId = "telegram.main".parse().unwrap();
        assert_eq!(a.network(), Network::from_static("telegram"));
        assert_eq!(a.network(), "telegram".parse().unwrap());
        assert_eq!(a.to_string(), "telegram.main");
        assert!("telegram".parse::<AccountId>().is_err());
        // Any well-formed network name parses; the registry knows which
        // exist.
        assert_eq!(
            "irc.main".parse::<AccountId>().unwrap().network().as_str(),
            "irc"
        );
        assert!("IRC.main".parse::<AccountId>().is_err());
        assert!("9p.main".parse::<AccountId>().is_err());
        assert!("api.a b".parse::<AccountId>().is_err());
        assert!("api.".parse::<AccountId>().is_err());
    }

    #[test]
    fn string_ids_refuse_control_characters() {
        assert!(ChannelId::new("a\0b").is_err());
        assert!(RemoteId::new("x\ny").is_err());
        assert!(GatewayName::new("lobby").is_ok());
    }

    #[test]
    fn event_ids_are_positive() {
        assert_eq!("42".parse::<EventId>().unwrap(), EventId(42));
        assert!("0".parse::<EventId>().is_err());
        assert!("x".parse::<EventId>().is_err());
    }
}
