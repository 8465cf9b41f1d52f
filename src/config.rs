//! Configuration: one TOML file, layered with environment variables.
//!
//! Two types per section, as everywhere in switchboard: the raw serde
//! structs (`Raw*`, `deny_unknown_fields`, documented in
//! `config/switchboard.example.toml`) and the validated [`Settings`] the rest
//! of the hub uses. [`load`] reports every problem it finds, each naming the
//! file and the key path, and changes nothing.
//!
//! Environment variables `SWITCHBOARD__<SECTION>__<KEY>` override the file
//! (e.g. `SWITCHBOARD__DATABASE__URL`). Secrets are never written in the
//! file in production: every secret key has `*_env` and `*_file` variants.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchboard_core::{AccountId, ChannelId, GatewayName, Network};

/// The configuration that runs as is: SQLite under `./data`, the bot API on
/// 127.0.0.1:4242, one gateway `lobby`, a token generated at first start.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/switchboard.toml");

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
// Raw form, exactly as written in TOML.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    general: RawGeneral,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    outbox: RawOutbox,
    #[serde(default)]
    api: BTreeMap<String, RawApi>,
    #[serde(default)]
    telegram: BTreeMap<String, toml::Value>,
    #[serde(default)]
    signal: BTreeMap<String, toml::Value>,
    #[serde(default)]
    matrix: BTreeMap<String, toml::Value>,
    #[serde(default)]
    gateway: Vec<RawGateway>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeneral {
    /// Directory for the SQLite database and generated tokens.
    data_dir: Option<String>,
    /// Address of the admin listener (`/healthz`, `/metrics`, `/v1/status`).
    admin_bind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    /// `sqlite://path` or `postgres://...`; default SQLite under data_dir.
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<String>,
    /// Pool size for readers.
    max_connections: Option<u32>,
    /// SQLite only: largest database file, e.g. "20GiB".
    max_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    send_timeout: Option<String>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    jitter: Option<bool>,
    breaker_probe: Option<String>,
    max_age: Option<String>,
    max_retry_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    bind: Option<String>,
    max_body_bytes: Option<u64>,
    /// How many events `GET /api/messages` returns at most per call.
    buffer: Option<u32>,
    /// Most connections this listener holds at once.
    max_connections: Option<u32>,
    /// Longest wait for a request's headers (also between requests).
    header_timeout: Option<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Option<String>,
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    gateways: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: Option<String>,
    url: Option<String>,
    gateways: Option<Vec<String>>,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<String>,
    timeout: Option<String>,
    /// Events posted with this token of the same account are not sent here.
    skip_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    name: Option<String>,
    enable: Option<bool>,
    #[serde(default, rename = "in")]
    inbound: Vec<RawMember>,
    #[serde(default, rename = "out")]
    outbound: Vec<RawMember>,
    #[serde(default)]
    inout: Vec<RawMember>,
    /// How long a member may be unreachable before the others are told.
    notice_after: Option<String>,
    /// Send outage notices at all (default true).
    notices: Option<bool>,
    /// A message delivered this much later than it was written shows its
    /// time on networks that render text only.
    late_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    account: Option<String>,
    channel: Option<String>,
    /// Where people can join this channel (a t.me or matrix.to link):
    /// named in the notices when another member of the gateway is down.
    invite: Option<String>,
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
    /// The store.
    pub database: DatabaseSettings,
    /// Delivery policy.
    pub outbox: OutboxSettings,
    /// Bot API accounts.
    pub api: Vec<ApiAccount>,
    /// Enabled gateways.
    pub gateways: Vec<Gateway>,
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
    /// The longest a network's retry-after is honoured.
    pub max_retry_after: Duration,
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
    /// Most connections the listener holds at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers (also between requests).
    pub header_timeout: Duration,
    /// Tokens.
    pub tokens: Vec<ApiToken>,
    /// Outbound webhooks.
    pub webhooks: Vec<Webhook>,
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
    let raw = parse(&file, &text)?;
    validate(&file, &base_dir, raw)
}

fn parse(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let issue = |key: String, message: String| {
        ConfigError(vec![ConfigIssue {
            file: file.to_owned(),
            key,
            message,
        }])
    };
    // The TOML parser gives line and column for syntax errors; check it
    // first. Its caret diagram keeps its lines; a quoted line that sets a
    // secret is masked.
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(issue("(syntax)".into(), mask_secrets(e.to_string().trim())));
    }
    // The file's own values with their types as written: the layering
    // below coerces ("false" would pass as a boolean), which a file must
    // not get away with. Environment overrides are strings and are coerced.
    if let Err(e) = toml::Deserializer::parse(text)
        .map_err(|e| e.to_string())
        .and_then(|de| {
            serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                format!("{path}\u{0}{}", inner.trim())
            })
        })
    {
        let (key, message) = e.split_once('\u{0}').unwrap_or(("(file)", e.as_str()));
        return Err(issue(
            if key == "." {
                "(top level)".into()
            } else {
                key.to_owned()
            },
            mask_secrets(message),
        ));
    }
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("SWITCHBOARD")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .map_err(|e| issue("(file)".into(), e.to_string()))?;
    serde_path_to_error::deserialize::<_, RawConfig>(built).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        issue(
            if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message,
        )
    })
}

/// Masks the value on any quoted config line whose key names a secret
/// (`*secret*`, `*token*`, `*password*`), so an error message never shows
/// one.
fn mask_secrets(message: &str) -> String {
    message
        .lines()
        .map(|line| {
            let Some((key_part, _)) = line.split_once('=') else {
                return line.to_owned();
            };
            let key = key_part
                .rsplit(['|', ' '])
                .find(|w| !w.is_empty())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if ["secret", "token", "password"]
                .iter()
                .any(|s| key.contains(s))
                && !key.ends_with("_env")
                && !key.ends_with("_file")
            {
                format!("{key_part}= ***")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Checker<'a> {
    file: &'a str,
    base_dir: &'a Path,
    issues: Vec<ConfigIssue>,
}

impl Checker<'_> {
    fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.to_owned(),
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, raw: Option<&str>, default: Duration) -> Duration {
        match raw.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.issue(key, e);
                default
            }
        }
    }

    fn addr(&mut self, key: &str, raw: Option<&str>, default: Option<&str>) -> Option<SocketAddr> {
        let Some(s) = raw.or(default) else {
            self.issue(key, "missing; e.g. \"127.0.0.1:4242\"");
            return None;
        };
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.issue(
                    key,
                    format!("`{s}` is not an address like \"127.0.0.1:4242\""),
                );
                None
            }
        }
    }

    /// Resolves a secret from exactly one of `<key>`, `<key>_env`, `<key>_file`.
    fn secret(
        &mut self,
        key: &str,
        inline: Option<&String>,
        env: Option<&String>,
        file: Option<&String>,
    ) -> Option<Secret> {
        let given = [inline.is_some(), env.is_some(), file.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given > 1 {
            self.issue(
                key,
                format!("set only one of `{key}`, `{key}_env`, `{key}_file`"),
            );
            return None;
        }
        if let Some(s) = inline {
            if s.is_empty() {
                self.issue(key, "is empty");
                return None;
            }
            return Some(Secret::new(s.clone()));
        }
        if let Some(var) = env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    self.issue(
                        format!("{key}_env"),
                        format!("environment variable `{var}` is not set or empty"),
                    );
                    None
                }
            };
        }
        if let Some(path) = file {
            let full = self.base_dir.join(path);
            return match std::fs::read_to_string(&full) {
                Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_owned())),
                Ok(_) => {
                    self.issue(
                        format!("{key}_file"),
                        format!("`{}` is empty", full.display()),
                    );
                    None
                }
                Err(e) => {
                    self.issue(
                        format!("{key}_file"),
                        format!("cannot read `{}`: {e}", full.display()),
                    );
                    None
                }
            };
        }
        None
    }

    fn gateway_set(
        &mut self,
        key: &str,
        raw: Option<&Vec<String>>,
    ) -> Option<BTreeSet<GatewayName>> {
        let list = raw?;
        if list.iter().any(|g| g == "*") {
            return None;
        }
        let mut set = BTreeSet::new();
        for (i, g) in list.iter().enumerate() {
            match GatewayName::new(g.clone()) {
                Ok(name) => {
                    set.insert(name);
                }
                Err(e) => self.issue(format!("{key}[{i}]"), e.to_string()),
            }
        }
        Some(set)
    }
}

fn validate(file: &str, base_dir: &Path, raw: RawConfig) -> Result<Settings, ConfigError> {
    let mut c = Checker {
        file,
        base_dir,
        issues: Vec::new(),
    };

    for (network, table) in [
        ("telegram", &raw.telegram),
        ("signal", &raw.signal),
        ("matrix", &raw.matrix),
    ] {
        for name in table.keys() {
            c.issue(
                format!("{network}.{name}"),
                format!("the {network} adapter is not part of this build yet"),
            );
        }
    }

    let data_dir = PathBuf::from(raw.general.data_dir.as_deref().unwrap_or("./data"));
    let admin_bind = raw
        .general
        .admin_bind
        .as_deref()
        .and_then(|a| c.addr("general.admin_bind", Some(a), None));

    let db_url = c
        .secret(
            "database.url",
            raw.database.url.as_ref(),
            raw.database.url_env.as_ref(),
            raw.database.url_file.as_ref(),
        )
        .unwrap_or_else(|| {
            Secret::new(format!(
                "sqlite://{}",
                data_dir.join("switchboard.db").display()
            ))
        });
    let url = db_url.expose();
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres:")
        || url.starts_with("postgresql:"))
    {
        c.issue("database.url", "must start with sqlite:// or postgres://");
    } else if let Err(e) = check_database_url(url) {
        c.issue("database.url", e);
    }
    let max_size = raw.database.max_size.as_deref().and_then(|raw_size| {
        match raw_size.parse::<bytesize::ByteSize>() {
            Ok(_) if !url.starts_with("sqlite:") => {
                c.issue(
                    "database.max_size",
                    "only SQLite has a size limit here; limit PostgreSQL on its server",
                );
                None
            }
            Ok(b) if b.as_u64() < 64 * 1024 => {
                c.issue("database.max_size", "must be at least 64KiB");
                None
            }
            Ok(b) => Some(b.as_u64()),
            Err(_) => {
                c.issue(
                    "database.max_size",
                    format!("`{raw_size}` is not a size like \"20GiB\" or \"500MB\""),
                );
                None
            }
        }
    });
    let database = DatabaseSettings {
        url: db_url,
        max_connections: raw.database.max_connections.unwrap_or(8).max(2),
        max_size,
    };

    let o = &raw.outbox;
    let outbox = OutboxSettings {
        send_timeout: c.duration("outbox.send_timeout", o.send_timeout.as_deref(), secs(10)),
        backoff_initial: c.duration(
            "outbox.backoff_initial",
            o.backoff_initial.as_deref(),
            Duration::from_millis(500),
        ),
        backoff_max: c.duration("outbox.backoff_max", o.backoff_max.as_deref(), secs(300)),
        jitter: o.jitter.unwrap_or(true),
        breaker_probe: c.duration("outbox.breaker_probe", o.breaker_probe.as_deref(), secs(30)),
        max_age: c.duration("outbox.max_age", o.max_age.as_deref(), secs(7 * 24 * 3600)),
        max_retry_after: c.duration(
            "outbox.max_retry_after",
            o.max_retry_after.as_deref(),
            secs(3600),
        ),
    };

    let mut api = Vec::new();
    let mut binds = BTreeMap::new();
    for (name, a) in &raw.api {
        let key = format!("api.{name}");
        let id = match AccountId::new(Network::Api, name) {
            Ok(id) => id,
            Err(e) => {
                c.issue(&key, e.to_string());
                continue;
            }
        };
        let Some(bind) = c.addr(&format!("{key}.bind"), a.bind.as_deref(), None) else {
            continue;
        };
        if let Some(other) = binds.insert(bind, key.clone()) {
            c.issue(
                format!("{key}.bind"),
                format!("{bind} is already used by {other}"),
            );
        }
        let mut tokens = Vec::new();
        let mut names = BTreeSet::new();
        for (i, t) in a.tokens.iter().enumerate() {
            let tkey = format!("{key}.tokens[{i}]");
            let Some(tname) = t.name.clone().filter(|n| !n.is_empty()) else {
                c.issue(format!("{tkey}.name"), "missing");
                continue;
            };
            if !names.insert(tname.clone()) {
                c.issue(
                    format!("{tkey}.name"),
                    format!("duplicate token name `{tname}`"),
                );
            }
            let secret = c.secret(
                &format!("{tkey}.token"),
                t.token.as_ref(),
                t.token_env.as_ref(),
                t.token_file.as_ref(),
            );
            let Some(secret) = secret else {
                if t.token.is_none() && t.token_env.is_none() && t.token_file.is_none() {
                    c.issue(
                        format!("{tkey}.token"),
                        "missing; set `token`, `token_env` or `token_file`",
                    );
                }
                continue;
            };
            if secret.expose().len() < 16 {
                c.issue(format!("{tkey}.token"), "must be at least 16 characters");
            }
            let mut scopes = Scopes {
                read: false,
                write: false,
            };
            for (j, s) in t
                .scopes
                .clone()
                .unwrap_or_else(|| vec!["read".into(), "write".into()])
                .iter()
                .enumerate()
            {
                match s.as_str() {
                    "read" => scopes.read = true,
                    "write" => scopes.write = true,
                    other => c.issue(
                        format!("{tkey}.scopes[{j}]"),
                        format!("unknown scope `{other}`; use \"read\" or \"write\""),
                    ),
                }
            }
            let gateways = c.gateway_set(&format!("{tkey}.gateways"), t.gateways.as_ref());
            tokens.push(ApiToken {
                name: tname,
                secret,
                gateways,
                scopes,
            });
        }
        let mut secrets = BTreeSet::new();
        for t in &tokens {
            if !secrets.insert(t.secret.expose().to_owned()) {
                c.issue(
                    format!("{key}.tokens"),
                    format!("token `{}` reuses another token's secret", t.name),
                );
            }
        }
        let mut webhooks = Vec::new();
        let mut wnames = BTreeSet::new();
        for (i, w) in a.webhooks.iter().enumerate() {
            let wkey = format!("{key}.webhooks[{i}]");
            let Some(wname) = w.name.clone().filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }) else {
                c.issue(
                    format!("{wkey}.name"),
                    "missing or not made of letters, digits, `_`, `-`",
                );
                continue;
            };
            if !wnames.insert(wname.clone()) {
                c.issue(
                    format!("{wkey}.name"),
                    format!("duplicate webhook name `{wname}`"),
                );
            }
            let url = match w.url.as_deref().map(reqwest::Url::parse) {
                Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => u,
                Some(Ok(_)) => {
                    c.issue(format!("{wkey}.url"), "must be an http:// or https:// URL");
                    continue;
                }
                Some(Err(e)) => {
                    c.issue(format!("{wkey}.url"), format!("not a URL: {e}"));
                    continue;
                }
                None => {
                    c.issue(format!("{wkey}.url"), "missing");
                    continue;
                }
            };
            let Some(secret) = c.secret(
                &format!("{wkey}.secret"),
                w.secret.as_ref(),
                w.secret_env.as_ref(),
                w.secret_file.as_ref(),
            ) else {
                if w.secret.is_none() && w.secret_env.is_none() && w.secret_file.is_none() {
                    c.issue(
                        format!("{wkey}.secret"),
                        "missing; set `secret`, `secret_env` or `secret_file`",
                    );
                }
                continue;
            };
            if let Some(t) = &w.skip_token {
                if !names.contains(t) {
                    c.issue(
                        format!("{wkey}.skip_token"),
                        format!("no token named `{t}` in {key}"),
                    );
                }
            }
            let gateways = c.gateway_set(&format!("{wkey}.gateways"), w.gateways.as_ref());
            webhooks.push(Webhook {
                name: wname,
                url,
                gateways,
                secret,
                timeout: c.duration(&format!("{wkey}.timeout"), w.timeout.as_deref(), secs(10)),
                skip_token: w.skip_token.clone(),
            });
        }
        api.push(ApiAccount {
            id,
            bind,
            max_body_bytes: usize::try_from(a.max_body_bytes.unwrap_or(16 << 20))
                .unwrap_or(usize::MAX),
            buffer: a.buffer.unwrap_or(1000).max(1) as usize,
            max_connections: a.max_connections.unwrap_or(1024).max(1) as usize,
            header_timeout: c.duration(
                &format!("{key}.header_timeout"),
                a.header_timeout.as_deref(),
                secs(10),
            ),
            tokens,
            webhooks,
        });
    }

    let known: BTreeSet<AccountId> = api.iter().map(|a| a.id.clone()).collect();
    let mut gateways = Vec::new();
    let mut gnames = BTreeSet::new();
    for (i, g) in raw.gateway.iter().enumerate() {
        let gkey = format!("gateway[{i}]");
        let Some(name) = g.name.clone() else {
            c.issue(format!("{gkey}.name"), "missing");
            continue;
        };
        let name = match GatewayName::new(name) {
            Ok(n) => n,
            Err(e) => {
                c.issue(format!("{gkey}.name"), e.to_string());
                continue;
            }
        };
        if !gnames.insert(name.clone()) {
            c.issue(
                format!("{gkey}.name"),
                format!("duplicate gateway name `{name}`"),
            );
        }
        let mut members = Vec::new();
        for (list, direction) in [
            (&g.inbound, Direction::In),
            (&g.outbound, Direction::Out),
            (&g.inout, Direction::InOut),
        ] {
            for (j, m) in list.iter().enumerate() {
                let mkey = format!("{gkey}.{}[{j}]", direction.as_str());
                let account = match m.account.as_deref().map(str::parse::<AccountId>) {
                    Some(Ok(a)) => a,
                    Some(Err(e)) => {
                        c.issue(format!("{mkey}.account"), e.to_string());
                        continue;
                    }
                    None => {
                        c.issue(format!("{mkey}.account"), "missing");
                        continue;
                    }
                };
                if !known.contains(&account) {
                    c.issue(
                        format!("{mkey}.account"),
                        format!("no account `{account}` is configured (add a [{account}] section)"),
                    );
                    continue;
                }
                let channel = match (account.network(), m.channel.as_deref()) {
                    (Network::Api, None | Some("api")) => ChannelId::new("api").expect("valid"),
                    (Network::Api, Some(other)) => {
                        c.issue(
                            format!("{mkey}.channel"),
                            format!("bot API members use channel \"api\", not `{other}`"),
                        );
                        continue;
                    }
                    (_, Some(ch)) => match ChannelId::new(ch) {
                        Ok(ch) => ch,
                        Err(e) => {
                            c.issue(format!("{mkey}.channel"), e.to_string());
                            continue;
                        }
                    },
                    (_, None) => {
                        c.issue(format!("{mkey}.channel"), "missing");
                        continue;
                    }
                };
                if members
                    .iter()
                    .any(|x: &Member| x.account == account && x.channel == channel)
                {
                    c.issue(
                        mkey.clone(),
                        format!("{account} channel {channel} is listed twice in gateway `{name}`"),
                    );
                    continue;
                }
                let invite = match m.invite.as_deref().map(reqwest::Url::parse) {
                    None => None,
                    Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(u.to_string()),
                    Some(_) => {
                        c.issue(
                            format!("{mkey}.invite"),
                            "must be an http:// or https:// link",
                        );
                        None
                    }
                };
                members.push(Member {
                    account,
                    channel,
                    direction,
                    invite,
                });
            }
        }
        let notice_after = c.duration(
            &format!("{gkey}.notice_after"),
            g.notice_after.as_deref(),
            secs(60),
        );
        let late_after = c.duration(
            &format!("{gkey}.late_after"),
            g.late_after.as_deref(),
            secs(120),
        );
        if g.enable != Some(false) {
            gateways.push(Gateway {
                name,
                members,
                notice_after: (g.notices != Some(false)).then_some(notice_after),
                late_after: Some(late_after),
            });
        }
    }
    for a in &api {
        for (i, t) in a.tokens.iter().enumerate() {
            for gw in t.gateways.iter().flatten() {
                if !gnames.contains(gw) {
                    c.issue(
                        format!("api.{}.tokens[{i}].gateways", a.id.name()),
                        format!("no gateway named `{gw}`"),
                    );
                }
            }
        }
        for (i, w) in a.webhooks.iter().enumerate() {
            for gw in w.gateways.iter().flatten() {
                if !gnames.contains(gw) {
                    c.issue(
                        format!("api.{}.webhooks[{i}].gateways", a.id.name()),
                        format!("no gateway named `{gw}`"),
                    );
                }
            }
        }
    }

    if !c.issues.is_empty() {
        return Err(ConfigError(c.issues));
    }
    Ok(Settings {
        source: file.to_owned(),
        data_dir,
        admin_bind,
        database,
        outbox,
        api,
        gateways,
    })
}

/// Parses a database URL as the store will, without connecting, so `check`
/// catches a malformed one. The message never repeats the URL (it may hold
/// a password).
fn check_database_url(url: &str) -> Result<(), String> {
    use std::str::FromStr;
    let parsed = if url.starts_with("sqlite:") {
        sqlx::sqlite::SqliteConnectOptions::from_str(url).map(drop)
    } else {
        sqlx::postgres::PgConnectOptions::from_str(url).map(drop)
    };
    parsed.map_err(|e| match e {
        sqlx::Error::Configuration(inner) => format!("not a valid database URL: {inner}"),
        other => format!("not a valid database URL: {other}"),
    })
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Parses a duration like `250ms`, `10s`, `5m`, `2h`, `7d` or `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like \"10s\", \"5m\" or \"7d\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Settings, ConfigError> {
        let raw = parse("t.toml", text)?;
        validate("t.toml", Path::new("."), raw)
    }

    #[test]
    fn embedded_default_is_valid() {
        let s = load(None).unwrap();
        assert_eq!(s.api.len(), 1);
        assert_eq!(s.gateways[0].name.as_str(), "lobby");
    }

    #[test]
    fn typo_names_file_and_key() {
        let err = check("[api.bots]\nbind = \"127.0.0.1:1\"\nbindd = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("t.toml: api.bots"), "{text}");
        assert!(text.contains("bindd"), "{text}");
    }

    #[test]
    fn unknown_account_and_duplicate_gateway_are_reported_together() {
        let err = check(
            r#"
[api.bots]
bind = "127.0.0.1:1"
[[gateway]]
name = "a"
[[gateway.inout]]
account = "api.nope"
[[gateway]]
name = "a"
"#,
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert_eq!(err.0[0].key, "gateway[0].inout[0].account");
        assert_eq!(err.0[1].key, "gateway[1].name");
    }

    #[test]
    fn wrong_types_are_errors_not_coercions() {
        for (text, key) in [
            (
                "[[gateway]]\nname = \"g\"\nenable = \"false\"\n",
                "gateway[0].enable",
            ),
            ("[outbox]\njitter = \"no\"\n", "outbox.jitter"),
            ("[[gateway]]\nname = 42\n", "gateway[0].name"),
        ] {
            let err = check(text).unwrap_err();
            assert_eq!(err.0.len(), 1, "{err}");
            assert_eq!(err.0[0].key, key, "{err}");
        }
    }

    #[test]
    fn a_syntax_error_keeps_its_diagram_and_masks_secrets() {
        let err = check("[api.bots]\ntoken = \"hunter2-very-secret\" x\n").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains('\n'),
            "the caret diagram keeps its lines: {text}"
        );
        assert!(text.contains("(syntax)"), "{text}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
    }
}
