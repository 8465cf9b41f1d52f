//! Configuration: one TOML file, layered with environment variables.
//!
//! Two types per section, as everywhere in switchboard: the raw serde
//! structs (`Raw*`, `deny_unknown_fields`, documented in
//! `config/switchboard.example.toml`) and the validated [`Settings`] the rest
//! of the hub uses. [`load`] reports every problem it finds, each naming the
//! file and the key path, and changes nothing.
//!
//! # Layout
//! - this file: the validated [`Settings`] and [`load`].
//! - `raw`: the serde structs, as written.
//! - `validate`: parsing and checks, every problem with file and key.
//!
//! Environment variables `SWITCHBOARD__<SECTION>__<KEY>` override the file
//! (e.g. `SWITCHBOARD__DATABASE__URL`). Secrets are never written in the
//! file in production: every secret key has `*_env` and `*_file` variants.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{AccountId, ChannelId, GatewayName};

mod raw;
mod validate;

/// The configuration that runs as is: SQLite under `./data`, the bot API on
/// 127.0.0.1:4242, one gateway `lobby`, a token generated at first start.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/switchboard.toml");

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file the problem is in (`<embedded default>` for the built-in one).
    pub file: String,
    /// The key path, e.g. `api.bots.tokens[0].scopes`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.message)
    }
}

/// Every problem found; the configuration was not used.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "invalid configuration:\n  {}", lines.join("\n  "))
    }
}

// ---------------------------------------------------------------------------
// Validated form.

/// A secret string: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself; call only where it is used.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything the hub needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the configuration came from, for messages.
    pub source: String,
    /// Directory for SQLite and generated tokens.
    pub data_dir: PathBuf,
    /// Admin listener, if any.
    pub admin_bind: Option<SocketAddr>,
    /// The admin listener's configured token; `None`: generated at first
    /// start (see [`crate::admin::auth`]).
    pub admin_token: Option<Secret>,
    /// Where the public status pages are reached from outside (no trailing
    /// slash); outage notices link there when set.
    pub public_url: Option<String>,
    /// The store.
    pub database: DatabaseSettings,
    /// Delivery policy.
    pub outbox: OutboxSettings,
    /// How long history is kept; `None` when nothing is ever deleted.
    pub retention: Option<RetentionSettings>,
    /// Several instances on one PostgreSQL (`[cluster]`); `None`: this
    /// instance is alone on its database, and makes sure of it.
    pub cluster: Option<ClusterSettings>,
    /// Bot API accounts.
    pub api: Vec<ApiAccount>,
    /// Telegram, Signal and Matrix accounts, each validated by its crate.
    pub networks: Vec<crate::adapters::NetworkConfig>,
    /// Enabled gateways.
    pub gateways: Vec<Gateway>,
    /// Chat-made links: pairing codes and their limits (`[links]`).
    pub links: LinkSettings,
    /// Network accounts that take chat commands (`links = true` in their
    /// section), with how commands are written there.
    pub commands: std::collections::BTreeMap<AccountId, switchboard_core::CommandForm>,
}

/// `[links]`: how pairing codes work (see [`crate::links`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    /// How long a pairing code is valid.
    pub code_ttl: Duration,
    /// Wrong codes a chat may send within `attempts_window` before it is
    /// refused for a while.
    pub attempts: u32,
    /// The window failed attempts are counted in.
    pub attempts_window: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(15 * 60),
            attempts: 5,
            attempts_window: Duration::from_secs(10 * 60),
        }
    }
}

/// Where events are stored.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// A `sqlite://` or `postgres://` URL.
    pub url: Secret,
    /// Reader pool size.
    pub max_connections: u32,
    /// SQLite only: the database file may not grow past this many bytes.
    pub max_size: Option<u64>,
    /// When a commit counts as done (`database.durability`).
    pub durability: crate::store::Durability,
}

/// How the outbox retries.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Longest a single send may take before it counts as failed.
    pub send_timeout: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Randomize delays (off in tests that count retries).
    pub jitter: bool,
    /// How long an open circuit breaker waits before probing.
    pub breaker_probe: Duration,
    /// A row older than this that still fails becomes a dead letter.
    pub max_age: Duration,
    /// A reaction, a reaction's removal or a delete that keeps failing on
    /// its own (not while the whole account is down, nor while the network
    /// paces us) is dead-lettered after failing this long, so an operation
    /// that carries no content never holds the messages behind it.
    pub no_content_budget: Duration,
    /// The longest a network's retry-after is honoured.
    pub max_retry_after: Duration,
}

/// One instance of several on one PostgreSQL (`[cluster]`; see
/// `crate::cluster` and docs/scaling.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This instance's name: unique among the instances of the database.
    pub instance: String,
    /// The longest an account's receive side or a lane goes undriven when
    /// its instance dies or is cut off from the database.
    pub takeover_after: Duration,
}

impl ClusterSettings {
    /// The shortest `takeover_after`.
    pub const MIN_TAKEOVER: Duration = Duration::from_secs(3);
}

/// How long history is kept (`[retention]`); see
/// [`crate::store::retention`] for what is deleted and what never is.
/// Dead letters are also kept until their event is older than `keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Events, feed rows, delivered outbox rows and the message map.
    pub keep: Duration,
    /// Dead letters, from when they died.
    pub dead_letters: Duration,
    /// Blobs, from when they were stored and from the newest event using
    /// them; at least [`RetentionSettings::MIN_BLOBS`].
    pub blobs: Duration,
    /// Time between pruning passes.
    pub interval: Duration,
}

impl RetentionSettings {
    /// The shortest blob retention: a file is stored before the message
    /// that carries it is committed, and must not be collected in between.
    pub const MIN_BLOBS: Duration = Duration::from_secs(600);
}

/// Read and/or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    /// May read events.
    pub read: bool,
    /// May post, edit, delete, react.
    pub write: bool,
}

/// One API token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Its name: the consumer identity and what `switchboard status` shows.
    pub name: String,
    /// The bearer secret.
    pub secret: Secret,
    /// Gateways it may use; `None` means every gateway of its account.
    pub gateways: Option<BTreeSet<GatewayName>>,
    /// What it may do.
    pub scopes: Scopes,
}

impl ApiToken {
    /// Whether this token may use `gw`.
    #[must_use]
    pub fn allows(&self, gw: &GatewayName) -> bool {
        self.gateways.as_ref().is_none_or(|set| set.contains(gw))
    }
}

/// One outbound webhook of an API account.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Its name; the outbox channel is `webhook:<name>`.
    pub name: String,
    /// Where events are POSTed.
    pub url: reqwest::Url,
    /// Gateways it receives; `None` means every gateway of its account.
    pub gateways: Option<BTreeSet<GatewayName>>,
    /// HMAC-SHA256 key for the signature header.
    pub secret: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Events posted through this token are not sent to this webhook.
    pub skip_token: Option<String>,
    /// At most this many deliveries per POST, as a JSON array (`batch`);
    /// `None`: one per POST, as an object.
    pub batch: Option<usize>,
}

impl Webhook {
    /// The outbox channel this webhook's deliveries queue under.
    #[must_use]
    pub fn channel(&self) -> ChannelId {
        ChannelId::new(format!("webhook:{}", self.name)).expect("validated name")
    }
}

/// One bot API account.
#[derive(Debug, Clone)]
pub struct ApiAccount {
    /// `api.<name>`.
    pub id: AccountId,
    /// Listener address.
    pub bind: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most events per `GET /api/messages`.
    pub buffer: usize,
    /// Largest `GET /api/messages` response in bytes.
    pub max_response_bytes: usize,
    /// Most connections the listener holds at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers (also between requests).
    pub header_timeout: Duration,
    /// Tokens.
    pub tokens: Vec<ApiToken>,
    /// Outbound webhooks. Shared, not copied, by every holder of the
    /// settings (router, API, webhook adapter): with thousands of webhooks
    /// each copy cost megabytes.
    pub webhooks: Vec<Arc<Webhook>>,
}

/// Which way a member's messages flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only read from.
    In,
    /// Only written to.
    Out,
    /// Both.
    InOut,
}

impl Direction {
    /// Messages from this member enter the gateway.
    #[must_use]
    pub fn reads(self) -> bool {
        matches!(self, Self::In | Self::InOut)
    }

    /// Messages of the gateway are written to this member.
    #[must_use]
    pub fn writes(self) -> bool {
        matches!(self, Self::Out | Self::InOut)
    }

    /// As written in config.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
            Self::InOut => "inout",
        }
    }
}

/// A channel in a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its account.
    pub account: AccountId,
    /// Its channel (`api` for bot API accounts).
    pub channel: ChannelId,
    /// Which way messages flow.
    pub direction: Direction,
    /// Where people can join this channel, for outage notices.
    pub invite: Option<String>,
}

/// A named set of channels mirrored to each other.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Its name.
    pub name: GatewayName,
    /// Its members.
    pub members: Vec<Member>,
    /// After how long unreachable a member's outage is announced to the
    /// others; `None` when notices are off for this gateway.
    pub notice_after: Option<Duration>,
    /// A message delivered this much later than it was written shows its
    /// original time where the network renders text only.
    pub late_after: Option<Duration>,
    /// How a relayed message shows its author where the bridge posts as
    /// one account; `None`: the network's default (`**{NICK}**: `).
    pub nick_format: Option<String>,
    /// Chats may join it with a pairing code from one of its chats
    /// (`linkable = true`; always so for gateways made from chats).
    pub linkable: bool,
    /// Whether its public status page is served (`status_page = true`).
    pub status_page: bool,
}

// ---------------------------------------------------------------------------
// Loading and validation.

/// Loads `path`, or the embedded default when `path` is `None`, applies
/// environment overrides, and validates.
///
/// # Errors
/// Every problem found, each naming the file and key.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let (file, text) = match path {
        Some(p) => {
            let name = p.display().to_string();
            match std::fs::read_to_string(p) {
                Ok(text) => (name, text),
                Err(e) => {
                    return Err(ConfigError(vec![ConfigIssue {
                        file: name,
                        key: "(file)".into(),
                        message: format!("cannot read: {e}"),
                    }]))
                }
            }
        }
        None => ("<embedded default>".to_owned(), EMBEDDED_DEFAULT.to_owned()),
    };
    let base_dir = path
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let raw = if text.len() > PARSE_APART {
        // The parser's tree is large and brief (10,000 gateways: 93 MB
        // for a moment). glibc gives a new thread an arena of its own and
        // gives that memory back once all of it is free; freed memory of
        // the main arena, under what the hub keeps for its life, stays
        // resident (57 MB idle against 40 for 10,000 gateways).
        std::thread::scope(|s| s.spawn(|| validate::parse(&file, &text)).join())
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?
    } else {
        validate::parse(&file, &text)?
    };
    validate::validate(&file, &base_dir, raw)
}

/// A configuration larger than this (about 1,500 gateways) is parsed on a
/// short-lived thread (see [`load`]). A small one is parsed in place: with
/// every configuration parsed apart, scenario 1's p99 at 1,000 msg/s was
/// higher in six alternating pairs out of six (docs/performance.md).
const PARSE_APART: usize = 256 * 1024;

/// Validates a configuration given as text (`name` stands for the file in
/// messages; relative paths are relative to the working directory).
///
/// # Errors
/// Every problem found, each naming `name` and the key.
pub fn from_text(name: &str, text: &str) -> Result<Settings, ConfigError> {
    let raw = validate::parse(name, text)?;
    validate::validate(name, Path::new("."), raw)
}

/// Parses a duration like `250ms`, `10s`, `5m`, `2h`, `7d` or `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like \"10s\", \"5m\" or \"7d\": {e}"))
}
