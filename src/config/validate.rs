//! Parsing and validation: from the file's text to [`Settings`], reporting
//! every problem with the file and the key. Sections of the network
//! adapters (`[telegram.<name>]`, ...) are handed to `crate::adapters`, the
//! one place that knows each network's own configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{AccountId, ChannelId, GatewayName, Network, Secrets};

use super::raw::RawConfig;
use super::{
    parse_duration, ApiAccount, ApiToken, ConfigError, ConfigIssue, DatabaseSettings, Direction,
    Gateway, Member, OutboxSettings, RetentionSettings, Scopes, Secret, Settings, Webhook,
};

/// Environment variables that override the file begin with this
/// (`SWITCHBOARD__GENERAL__DATA_DIR`).
const ENV_PREFIX: &str = "SWITCHBOARD__";

pub(super) fn parse(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let issue = |key: String, message: String| {
        ConfigError(vec![ConfigIssue {
            file: file.to_owned(),
            key,
            message,
        }])
    };
    // The TOML parser gives line and column for syntax errors. Its caret
    // diagram keeps its lines; a quoted line that sets a secret is masked.
    // (Parsed once, borrowing the text: an owned `toml::Table` of ten
    // thousand gateways took 93 MB for a moment.)
    let de = match toml::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => return Err(issue("(syntax)".into(), mask_secrets(e.to_string().trim()))),
    };
    // The file's own values with their types as written: the layering
    // below coerces ("false" would pass as a boolean), which a file must
    // not get away with. Environment overrides are strings and are coerced.
    let from_file = serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
        let key = key_of(e.path());
        issue(key, mask_secrets(e.into_inner().to_string().trim()))
    })?;
    // Without overrides the file is the whole configuration. The layered
    // build holds the whole file once more as a tree of its own: ten
    // thousand gateways took 97 MB for a moment, which the allocator then
    // kept as the process's resident memory.
    // (The layering matches the prefix in any case, and so does this.)
    if !std::env::vars_os().any(|(k, _)| {
        k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with(ENV_PREFIX)
    }) {
        return Ok(from_file);
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
    serde_path_to_error::deserialize::<_, RawConfig>(built)
        .map_err(|e| issue(key_of(e.path()), e.inner().to_string()))
}

/// The key a deserializer's error path names (`.` is the whole file).
fn key_of(path: &serde_path_to_error::Path) -> String {
    let key = path.to_string();
    if key == "." {
        "(top level)".into()
    } else {
        key
    }
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
        let found = FileSecrets {
            base_dir: self.base_dir,
        }
        .resolve(
            key,
            inline.map(String::as_str),
            env.map(String::as_str),
            file.map(String::as_str),
        );
        match found {
            Ok(s) => s.map(Secret::new),
            Err((key, message)) => {
                self.issue(key, message);
                None
            }
        }
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

/// Secrets the hub's way, for its own sections and the networks' alike:
/// inline, from the environment, or from a file next to the configuration.
pub(super) struct FileSecrets<'a> {
    /// Where `*_file` paths start.
    pub(super) base_dir: &'a Path,
}

impl Secrets for FileSecrets<'_> {
    fn resolve(
        &self,
        key: &str,
        inline: Option<&str>,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Option<String>, (String, String)> {
        let given = [inline.is_some(), env.is_some(), file.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given > 1 {
            return Err((
                key.to_owned(),
                format!("set only one of `{key}`, `{key}_env`, `{key}_file`"),
            ));
        }
        if let Some(s) = inline {
            if s.is_empty() {
                return Err((key.to_owned(), "is empty".into()));
            }
            return Ok(Some(s.to_owned()));
        }
        if let Some(var) = env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err((
                    format!("{key}_env"),
                    format!("environment variable `{var}` is not set or empty"),
                )),
            };
        }
        if let Some(path) = file {
            let full = self.base_dir.join(path);
            return match std::fs::read_to_string(&full) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
                Ok(_) => Err((
                    format!("{key}_file"),
                    format!("`{}` is empty", full.display()),
                )),
                Err(e) => Err((
                    format!("{key}_file"),
                    format!("cannot read `{}`: {e}", full.display()),
                )),
            };
        }
        Ok(None)
    }
}

pub(super) fn validate(
    file: &str,
    base_dir: &Path,
    raw: RawConfig,
) -> Result<Settings, ConfigError> {
    let mut c = Checker {
        file,
        base_dir,
        issues: Vec::new(),
    };
    let secrets = FileSecrets { base_dir };
    let (networks, configured, commands) = network_sections(&mut c, &raw.networks, &secrets);
    let links = links(&mut c, &raw.links);
    let data_dir = PathBuf::from(raw.general.data_dir.as_deref().unwrap_or("./data"));
    let admin_bind = raw
        .general
        .admin_bind
        .as_deref()
        .and_then(|a| c.addr("general.admin_bind", Some(a), None));
    let (admin_token, public_url) = crate::admin::config::general(
        &mut |key: &str, message: String| c.issue(key, message),
        &FileSecrets { base_dir },
        crate::admin::config::GeneralKeys {
            admin_token: raw.general.admin_token.as_deref(),
            admin_token_env: raw.general.admin_token_env.as_deref(),
            admin_token_file: raw.general.admin_token_file.as_deref(),
            public_url: raw.general.public_url.as_deref(),
        },
        admin_bind,
    );
    let database = database(&mut c, &raw.database, &data_dir);
    let outbox = outbox(&mut c, &raw.outbox);
    let retention = retention(&mut c, &raw.retention);
    let cluster = cluster(&mut c, &raw.cluster, &database);
    let mut binds = BTreeMap::new();
    let api: Vec<ApiAccount> = raw
        .api
        .iter()
        .filter_map(|(name, a)| api_account(&mut c, name, a, &mut binds))
        .collect();
    // Network sections with problems still count as configured: their own
    // errors say what is wrong, not "no account".
    let known: BTreeSet<AccountId> = api.iter().map(|a| a.id.clone()).chain(configured).collect();
    let mut gnames = BTreeSet::new();
    let gateways: Vec<Gateway> = raw
        .gateway
        .iter()
        .enumerate()
        .filter_map(|(i, g)| gateway(&mut c, &format!("gateway[{i}]"), g, &known, &mut gnames))
        .collect();
    check_gateway_names(&mut c, &api, &gnames);
    if !c.issues.is_empty() {
        return Err(ConfigError(c.issues));
    }
    Ok(Settings {
        source: file.to_owned(),
        data_dir,
        admin_bind,
        admin_token,
        public_url,
        database,
        outbox,
        retention,
        cluster,
        api,
        networks,
        gateways,
        links,
        commands,
    })
}

/// `[links]`: pairing codes' lifetime and the limit on wrong ones.
fn links(c: &mut Checker<'_>, raw: &super::raw::RawLinks) -> super::LinkSettings {
    let d = super::LinkSettings::default();
    let code_ttl = c.duration("links.code_ttl", raw.code_ttl.as_deref(), d.code_ttl);
    if code_ttl < secs(10) || code_ttl > secs(7 * 24 * 3600) {
        c.issue("links.code_ttl", "must be between \"10s\" and \"7d\"");
    }
    let attempts_window = c.duration(
        "links.attempts_window",
        raw.attempts_window.as_deref(),
        d.attempts_window,
    );
    if attempts_window.is_zero() {
        c.issue("links.attempts_window", "must be longer than 0s");
    }
    let attempts = raw.attempts.unwrap_or(d.attempts);
    if attempts == 0 {
        c.issue(
            "links.attempts",
            "must be at least 1 (a chat needs one try at its code)",
        );
    }
    super::LinkSettings {
        code_ttl,
        attempts,
        attempts_window,
    }
}

/// `[cluster]`: `None` unless `enabled = true`. A cluster shares one
/// PostgreSQL; SQLite is one instance's alone.
fn cluster(
    c: &mut Checker<'_>,
    raw: &super::raw::RawCluster,
    database: &DatabaseSettings,
) -> Option<super::ClusterSettings> {
    let takeover_after = c.duration(
        "cluster.takeover_after",
        raw.takeover_after.as_deref(),
        secs(15),
    );
    if takeover_after < super::ClusterSettings::MIN_TAKEOVER {
        c.issue(
            "cluster.takeover_after",
            "must be at least \"3s\": instances renew their leases six times within it",
        );
    }
    let instance = match raw.instance.as_deref() {
        Some(name) => {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !ok {
                c.issue(
                    "cluster.instance",
                    format!("`{name}` is not a name of 1 to 63 letters, digits, `-`, `_` or `.`"),
                );
            }
            name.to_owned()
        }
        None => crate::cluster::default_instance_name(),
    };
    if raw.enabled != Some(true) {
        return None;
    }
    if database.url.expose().starts_with("sqlite:") {
        c.issue(
            "cluster.enabled",
            "several instances need PostgreSQL (database.url = \"postgres://...\"): a SQLite \
             database is used by one instance at a time",
        );
        return None;
    }
    Some(super::ClusterSettings {
        instance,
        takeover_after,
    })
}

/// `[database]`: the URL (default: SQLite under `data_dir`), pool and size.
fn database(
    c: &mut Checker<'_>,
    raw: &super::raw::RawDatabase,
    data_dir: &Path,
) -> DatabaseSettings {
    let db_url = c
        .secret(
            "database.url",
            raw.url.as_ref(),
            raw.url_env.as_ref(),
            raw.url_file.as_ref(),
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
    let max_size =
        raw.max_size
            .as_deref()
            .and_then(|raw_size| match raw_size.parse::<bytesize::ByteSize>() {
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
            });
    let durability = match raw.durability.as_deref() {
        None | Some("fsync") => crate::store::Durability::Fsync,
        Some("process") => crate::store::Durability::Process,
        Some(other) => {
            c.issue(
                "database.durability",
                format!("`{other}` is not one of \"fsync\" or \"process\""),
            );
            crate::store::Durability::Fsync
        }
    };
    DatabaseSettings {
        url: db_url,
        max_connections: raw.max_connections.unwrap_or(8).max(2),
        max_size,
        durability,
    }
}

/// `[outbox]`: retries, timeouts, budgets.
fn outbox(c: &mut Checker<'_>, o: &super::raw::RawOutbox) -> OutboxSettings {
    OutboxSettings {
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
        no_content_budget: c.duration(
            "outbox.no_content_budget",
            o.no_content_budget.as_deref(),
            secs(600),
        ),
        max_retry_after: c.duration(
            "outbox.max_retry_after",
            o.max_retry_after.as_deref(),
            secs(3600),
        ),
    }
}

/// `[api.<name>]`: one bot API account, its tokens and webhooks; `None`
/// when it is too broken to use (its problems are recorded).
fn api_account(
    c: &mut Checker<'_>,
    name: &str,
    a: &super::raw::RawApi,
    binds: &mut BTreeMap<SocketAddr, String>,
) -> Option<ApiAccount> {
    let key = format!("api.{name}");
    let id = match AccountId::new(Network::API, name) {
        Ok(id) => id,
        Err(e) => {
            c.issue(&key, e.to_string());
            return None;
        }
    };
    let bind = c.addr(&format!("{key}.bind"), a.bind.as_deref(), None)?;
    if let Some(other) = binds.insert(bind, key.clone()) {
        c.issue(
            format!("{key}.bind"),
            format!("{bind} is already used by {other}"),
        );
    }
    let tokens = api_tokens(c, &key, a);
    let webhooks = api_webhooks(c, &key, a);
    Some(ApiAccount {
        id,
        bind,
        max_body_bytes: usize::try_from(a.max_body_bytes.unwrap_or(16 << 20)).unwrap_or(usize::MAX),
        buffer: a.buffer.unwrap_or(1000).max(1) as usize,
        max_response_bytes: match a.max_response_bytes.as_deref() {
            None => 8 << 20,
            Some(raw_size) => match raw_size.parse::<bytesize::ByteSize>() {
                Ok(b) => usize::try_from(b.as_u64()).unwrap_or(usize::MAX),
                Err(_) => {
                    c.issue(
                        format!("{key}.max_response_bytes"),
                        format!("`{raw_size}` is not a size like \"8MiB\""),
                    );
                    8 << 20
                }
            },
        },
        max_connections: a.max_connections.unwrap_or(1024).max(1) as usize,
        header_timeout: c.duration(
            &format!("{key}.header_timeout"),
            a.header_timeout.as_deref(),
            secs(10),
        ),
        tokens,
        webhooks,
    })
}

/// `api.<name>.tokens`: names unique, secrets long enough and not shared,
/// scopes and gateways valid.
fn api_tokens(c: &mut Checker<'_>, key: &str, a: &super::raw::RawApi) -> Vec<ApiToken> {
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
    tokens
}

/// `api.<name>.webhooks`: names unique, http(s) URLs, a secret each,
/// `skip_token` naming one of the account's tokens, `batch` in range.
fn api_webhooks(c: &mut Checker<'_>, key: &str, a: &super::raw::RawApi) -> Vec<Arc<Webhook>> {
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
            if !a.tokens.iter().any(|tok| tok.name.as_ref() == Some(t)) {
                c.issue(
                    format!("{wkey}.skip_token"),
                    format!("no token named `{t}` in {key}"),
                );
            }
        }
        let batch = match w.batch {
            None => None,
            Some(n) if (1..=MAX_WEBHOOK_BATCH).contains(&n) => usize::try_from(n).ok(),
            Some(n) => {
                c.issue(
                    format!("{wkey}.batch"),
                    format!(
                        "must be between 1 and {MAX_WEBHOOK_BATCH} (deliveries per POST), not {n}"
                    ),
                );
                continue;
            }
        };
        let gateways = c.gateway_set(&format!("{wkey}.gateways"), w.gateways.as_ref());
        webhooks.push(Arc::new(Webhook {
            name: wname,
            url,
            gateways,
            secret,
            timeout: c.duration(&format!("{wkey}.timeout"), w.timeout.as_deref(), secs(10)),
            skip_token: w.skip_token.clone(),
            batch,
        }));
    }
    webhooks
}

/// The most deliveries one batched webhook POST carries: a lane reads a
/// batch's rows in one query and holds them in memory, and a receiver
/// parses the whole body at once.
const MAX_WEBHOOK_BATCH: i64 = 1000;

/// One `[[gateway]]`: its name (unique) and members, its notice and nick
/// settings; `None` when disabled or unnamed.
fn gateway(
    c: &mut Checker<'_>,
    gkey: &str,
    g: &super::raw::RawGateway,
    known: &BTreeSet<AccountId>,
    gnames: &mut BTreeSet<GatewayName>,
) -> Option<Gateway> {
    let Some(name) = g.name.clone() else {
        c.issue(format!("{gkey}.name"), "missing");
        return None;
    };
    let name = match GatewayName::new(name) {
        Ok(n) => n,
        Err(e) => {
            c.issue(format!("{gkey}.name"), e.to_string());
            return None;
        }
    };
    if crate::links::is_chat_made(&name) {
        c.issue(
            format!("{gkey}.name"),
            format!(
                "`{name}`: names starting with `{}` are kept for gateways made from chats",
                crate::links::GATEWAY_PREFIX
            ),
        );
    }
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
            if let Some(m) = member(c, (&mkey, &name, direction), m, known, &members) {
                members.push(m);
            }
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
    let nick_format = g.nick_format.clone();
    if let Some(f) = &nick_format {
        if f.len() > 256 || f.chars().any(char::is_control) {
            c.issue(
                format!("{gkey}.nick_format"),
                "must be at most 256 bytes, without control characters",
            );
        }
    }
    (g.enable != Some(false)).then(|| Gateway {
        name,
        members,
        notice_after: (g.notices != Some(false)).then_some(notice_after),
        late_after: Some(late_after),
        nick_format,
        linkable: g.linkable == Some(true),
        status_page: g.status_page == Some(true),
    })
}

/// Tokens and webhooks may only name gateways that exist.
fn check_gateway_names(c: &mut Checker<'_>, api: &[ApiAccount], gnames: &BTreeSet<GatewayName>) {
    for a in api {
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
}

/// One member of a gateway (`gateway[i].inout[j]`, ...): its account must
/// be configured, its channel valid for its network and not listed twice.
fn member(
    c: &mut Checker<'_>,
    (mkey, gateway, direction): (&str, &GatewayName, Direction),
    m: &super::raw::RawMember,
    known: &BTreeSet<AccountId>,
    members: &[Member],
) -> Option<Member> {
    let account = match m.account.as_deref().map(str::parse::<AccountId>) {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            c.issue(format!("{mkey}.account"), e.to_string());
            return None;
        }
        None => {
            c.issue(format!("{mkey}.account"), "missing");
            return None;
        }
    };
    if !known.contains(&account) {
        c.issue(
            format!("{mkey}.account"),
            format!("no account `{account}` is configured (add a [{account}] section)"),
        );
        return None;
    }
    let channel = match (account.network(), m.channel.as_deref()) {
        (n, None | Some("api")) if n == Network::API => ChannelId::new("api").expect("valid"),
        (n, Some(other)) if n == Network::API => {
            c.issue(
                format!("{mkey}.channel"),
                format!("bot API members use channel \"api\", not `{other}`"),
            );
            return None;
        }
        (network, Some(ch)) => match ChannelId::new(ch)
            .map_err(|e| e.to_string())
            .and_then(|ch| {
                crate::adapters::check_channel(network, ch.as_str())?;
                Ok(ch)
            }) {
            Ok(ch) => ch,
            Err(e) => {
                c.issue(format!("{mkey}.channel"), e);
                return None;
            }
        },
        (_, None) => {
            c.issue(format!("{mkey}.channel"), "missing");
            return None;
        }
    };
    if members
        .iter()
        .any(|x: &Member| x.account == account && x.channel == channel)
    {
        c.issue(
            mkey,
            format!("{account} channel {channel} is listed twice in gateway `{gateway}`"),
        );
        return None;
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
    Some(Member {
        account,
        channel,
        direction,
        invite,
    })
}

/// `[retention]`: `None` when it is off (`enabled = false` or `keep = "0s"`).
/// The accounts that take chat commands, with how commands are written
/// on each.
type Commands = BTreeMap<AccountId, switchboard_core::CommandForm>;

/// The tables that are not the hub's own: `[<network>.<name>]`, each
/// parsed and checked by its network's connector (`crate::adapters`). A
/// table naming no network of this build is refused like a typo. The
/// hub's own keys of every account (`links`, `command_prefix`, see
/// [`account_commands`]) are read out first. Returns the valid sections,
/// every account named (valid or not), and the accounts taking commands.
fn network_sections(
    c: &mut Checker<'_>,
    tables: &BTreeMap<String, toml::Value>,
    secrets: &FileSecrets<'_>,
) -> (
    Vec<crate::adapters::NetworkConfig>,
    Vec<AccountId>,
    Commands,
) {
    let mut networks = Vec::new();
    let mut named = Vec::new();
    let mut commands = Commands::new();
    for (key, value) in tables {
        let network = match Network::new(key) {
            Ok(n) if crate::adapters::connector(n).is_some() => n,
            _ => {
                c.issue(
                    key.clone(),
                    format!(
                        "unknown field `{key}`: not a section of switchboard's own \
                         (general, database, outbox, retention, cluster, api, gateway, links) \
                         nor a network of this build ({})",
                        crate::adapters::network_names()[1..].join(", ")
                    ),
                );
                continue;
            }
        };
        let Some(accounts) = value.as_table() else {
            c.issue(
                key.clone(),
                format!("expected tables of accounts, like [{key}.main]"),
            );
            continue;
        };
        for (name, section) in accounts {
            let key = format!("{network}.{name}");
            let id = AccountId::new(network, name).ok();
            if let Some(id) = &id {
                named.push(id.clone());
            }
            let (section, form) = account_commands(c, &key, network, section);
            if let (Some(id), Some(form)) = (id, form) {
                commands.insert(id, form);
            }
            match crate::adapters::check_section(network, name, &section, secrets) {
                Ok(n) => networks.push(n),
                Err(problems) => {
                    for (sub, message) in problems {
                        let key = if sub.is_empty() {
                            key.clone()
                        } else {
                            format!("{key}.{sub}")
                        };
                        c.issue(key, message);
                    }
                }
            }
        }
    }
    (networks, named, commands)
}

/// An account's own keys of the hub, read out of its section before its
/// network parses the rest: `links` (it takes chat commands, so its chats
/// can be linked from the chats) and `command_prefix` (how commands start
/// where the network has no bot commands of its own; default `!sb`).
/// Returns the rest of the section and, with `links = true`, how commands
/// are written on the account.
fn account_commands(
    c: &mut Checker<'_>,
    key: &str,
    network: Network,
    section: &toml::Value,
) -> (toml::Value, Option<switchboard_core::CommandForm>) {
    use switchboard_core::{CommandForm, CommandStyle};
    let mut rest = section.clone();
    let Some(table) = rest.as_table_mut() else {
        return (rest, None);
    };
    // Environment overrides arrive as strings.
    let on = match table.remove("links") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(toml::Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(other) => {
            c.issue(
                format!("{key}.links"),
                format!("expected true or false, found {other}"),
            );
            false
        }
    };
    let prefix = match table.remove("command_prefix") {
        None => None,
        Some(toml::Value::String(p)) => {
            if p.is_empty()
                || p.chars().count() > 16
                || p.chars().any(|ch| ch.is_whitespace() || ch.is_control())
            {
                c.issue(
                    format!("{key}.command_prefix"),
                    "must be 1-16 characters without spaces, like \"!sb\"",
                );
            }
            Some(p)
        }
        Some(other) => {
            c.issue(
                format!("{key}.command_prefix"),
                format!("expected a string like \"!sb\", found {other}"),
            );
            None
        }
    };
    let style = crate::adapters::connector(network).map(|n| n.command_style());
    let form = match (style, prefix) {
        (Some(CommandStyle::Slash), Some(_)) => {
            c.issue(
                format!("{key}.command_prefix"),
                format!(
                    "{} has bot commands of its own (/link); a prefix does not apply",
                    crate::adapters::display_name(network)
                ),
            );
            None
        }
        (Some(CommandStyle::Slash), None) => Some(CommandForm::Slash),
        (_, p) => Some(CommandForm::Prefix(p.unwrap_or_else(|| {
            switchboard_core::commands::DEFAULT_PREFIX.to_owned()
        }))),
    };
    (rest, form.filter(|_| on))
}

fn retention(c: &mut Checker<'_>, r: &super::raw::RawRetention) -> Option<RetentionSettings> {
    let keep = c.duration("retention.keep", r.keep.as_deref(), secs(7 * 24 * 3600));
    let dead_letters = c.duration(
        "retention.dead_letters",
        r.dead_letters.as_deref(),
        secs(30 * 24 * 3600),
    );
    let interval = c.duration("retention.interval", r.interval.as_deref(), secs(600));
    let blobs = match r.blobs.as_deref() {
        None => keep.max(RetentionSettings::MIN_BLOBS),
        Some(raw) => {
            let blobs = c.duration("retention.blobs", Some(raw), keep);
            if blobs < RetentionSettings::MIN_BLOBS {
                c.issue(
                    "retention.blobs",
                    "must be at least \"10m\": a file is stored before its message is committed",
                );
            }
            blobs
        }
    };
    if r.dead_letters.is_some() && dead_letters.is_zero() {
        c.issue(
            "retention.dead_letters",
            "must be longer than 0s (dead letters are kept at least as long as their event)",
        );
    }
    if interval < secs(1) {
        c.issue("retention.interval", "must be at least \"1s\"");
    }
    (r.enabled != Some(false) && !keep.is_zero()).then_some(RetentionSettings {
        keep,
        dead_letters,
        blobs,
        interval,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Settings, ConfigError> {
        let raw = parse("t.toml", text)?;
        validate("t.toml", Path::new("."), raw)
    }

    /// A file over `PARSE_APART` goes through the parse on a thread of its
    /// own: it loads whole, and its errors still name the file and key.
    #[test]
    fn a_large_file_is_parsed_apart_with_the_same_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("[api.bots]\nbind = \"127.0.0.1:1\"\n");
        let mut n = 0;
        while text.len() <= super::super::PARSE_APART {
            text += &format!(
                "[[gateway]]\nname = \"g{n}\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n"
            );
            n += 1;
        }
        let good = dir.path().join("large.toml");
        std::fs::write(&good, &text).unwrap();
        let s = super::super::load(Some(&good)).unwrap();
        assert_eq!(s.gateways.len(), n);
        assert_eq!(s.gateways[n - 1].name.as_str(), format!("g{}", n - 1));

        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            text + "[[gateway]]\nname = \"last\"\nenable = \"no\"\n",
        )
        .unwrap();
        let err = super::super::load(Some(&bad)).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].file, bad.display().to_string());
        assert_eq!(err.0[0].key, format!("gateway[{n}].enable"), "{err}");
    }

    #[test]
    fn embedded_default_is_valid() {
        let s = super::super::load(None).unwrap();
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
    fn retention_defaults_keep_a_week_and_can_be_switched_off() {
        let r = check("").unwrap().retention.expect("on by default");
        assert_eq!(
            (r.keep, r.dead_letters, r.blobs, r.interval),
            (
                secs(7 * 86_400),
                secs(30 * 86_400),
                secs(7 * 86_400),
                secs(600)
            )
        );
        let r = check("[retention]\nkeep = \"2s\"\n")
            .unwrap()
            .retention
            .unwrap();
        assert_eq!(
            (r.keep, r.blobs),
            (secs(2), RetentionSettings::MIN_BLOBS),
            "blobs follow keep, never below the minimum"
        );
        for off in ["enabled = false", "keep = \"0s\""] {
            let s = check(&format!("[retention]\n{off}\n")).unwrap();
            assert_eq!(s.retention, None, "{off}");
        }
    }

    #[test]
    fn retention_errors_name_file_and_key() {
        for (text, key) in [
            ("keep = \"a week\"", "retention.keep"),
            ("dead_letters = \"0s\"", "retention.dead_letters"),
            ("blobs = \"1m\"", "retention.blobs"),
            ("interval = \"10ms\"", "retention.interval"),
            ("enabled = \"no\"", "retention.enabled"),
        ] {
            let err = check(&format!("[retention]\n{text}\n")).unwrap_err();
            assert_eq!(err.0.len(), 1, "{text}: {err}");
            assert_eq!(err.0[0].key, key, "{err}");
            assert_eq!(err.0[0].file, "t.toml");
        }
        let err = check("[retention]\nkeepp = \"1d\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml: retention") && err.contains("keepp"),
            "{err}"
        );
    }

    #[test]
    fn links_options_are_the_hubs_and_name_file_and_key() {
        let base = "[telegram.main]\ntoken = \"1:a\"\n[signal.main]\naccount = \"+15550000001\"\ndaemon = \"tcp://127.0.0.1:1\"\n";
        let s = check(&format!(
            "{base}links = true\ncommand_prefix = \"!bridge\"\n[[gateway]]\nname = \"g\"\nlinkable = true\n"
        ))
        .unwrap();
        let signal: AccountId = "signal.main".parse().unwrap();
        assert_eq!(
            s.commands.get(&signal),
            Some(&switchboard_core::CommandForm::Prefix("!bridge".into()))
        );
        assert!(!s.commands.contains_key(&"telegram.main".parse().unwrap()));
        assert!(s.gateways[0].linkable);
        assert_eq!(s.links, crate::config::LinkSettings::default());
        let s = check(&format!("{base}links = true\n")).unwrap();
        assert_eq!(
            s.commands.get(&signal),
            Some(&switchboard_core::CommandForm::Prefix("!sb".into()))
        );
        let tg = "[telegram.main]\ntoken = \"1:a\"\nlinks = true\n";
        let s = check(tg).unwrap();
        assert_eq!(
            s.commands.get(&"telegram.main".parse().unwrap()),
            Some(&switchboard_core::CommandForm::Slash)
        );
        for (text, key) in [
            (
                format!("{tg}command_prefix = \"!sb\"\n"),
                "telegram.main.command_prefix",
            ),
            (format!("{base}links = 1\n"), "signal.main.links"),
            (
                format!("{base}command_prefix = \"a b\"\n"),
                "signal.main.command_prefix",
            ),
            (
                "[[gateway]]\nname = \"link-x\"\n".to_owned(),
                "gateway[0].name",
            ),
            (
                "[[gateway]]\nname = \"g\"\nlinkable = \"yes\"\n".to_owned(),
                "gateway[0].linkable",
            ),
            ("[links]\ncode_ttl = \"1s\"\n".to_owned(), "links.code_ttl"),
            ("[links]\nattempts = 0\n".to_owned(), "links.attempts"),
            (
                "[links]\nattempts_window = \"soon\"\n".to_owned(),
                "links.attempts_window",
            ),
        ] {
            let err = check(&text).unwrap_err();
            assert_eq!(err.0.len(), 1, "{text}: {err}");
            assert_eq!(err.0[0].key, key, "{err}");
            assert_eq!(err.0[0].file, "t.toml");
        }
        let err = check("[links]\ncodettl = \"1m\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml: links") && err.contains("codettl"),
            "{err}"
        );
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
