//! The configuration exactly as written in TOML: serde structs with
//! `deny_unknown_fields`, every option documented in
//! `config/switchboard.example.toml`. [`super::validate`] turns them into
//! [`super::Settings`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file. Not `deny_unknown_fields`: every table that is not the
/// hub's own lands in `networks`, and validation refuses those that name no
/// network of this build (with the file and the key), as serde would.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) general: RawGeneral,
    #[serde(default)]
    pub(super) database: RawDatabase,
    #[serde(default)]
    pub(super) outbox: RawOutbox,
    #[serde(default)]
    pub(super) retention: RawRetention,
    #[serde(default)]
    pub(super) cluster: RawCluster,
    #[serde(default)]
    pub(super) api: BTreeMap<String, RawApi>,
    #[serde(default)]
    pub(super) gateway: Vec<RawGateway>,
    /// Chat-made links: pairing codes and their limits.
    #[serde(default)]
    pub(super) links: RawLinks,
    /// `[<network>.<name>]` tables, by network: read through the network's
    /// connector (`crate::adapters`).
    #[serde(flatten)]
    pub(super) networks: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGeneral {
    /// Directory for the SQLite database and generated tokens.
    pub(super) data_dir: Option<String>,
    /// Address of the admin listener (`/healthz`, `/metrics`, `/v1/status`).
    pub(super) admin_bind: Option<String>,
    /// The admin listener's bearer token (generated at first start into
    /// `<data_dir>/admin.token` when none is set; required off loopback).
    pub(super) admin_token: Option<String>,
    pub(super) admin_token_env: Option<String>,
    pub(super) admin_token_file: Option<String>,
    /// Where people reach the admin listener's public pages (status pages),
    /// e.g. "https://status.example.org": outage notices link there.
    pub(super) public_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    /// `sqlite://path` or `postgres://...`; default SQLite under data_dir.
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<String>,
    /// Pool size for readers.
    pub(super) max_connections: Option<u32>,
    /// SQLite only: largest database file, e.g. "20GiB".
    pub(super) max_size: Option<String>,
    /// "fsync" (default) or "process".
    pub(super) durability: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbox {
    pub(super) send_timeout: Option<String>,
    pub(super) backoff_initial: Option<String>,
    pub(super) backoff_max: Option<String>,
    pub(super) jitter: Option<bool>,
    pub(super) breaker_probe: Option<String>,
    pub(super) max_age: Option<String>,
    pub(super) no_content_budget: Option<String>,
    pub(super) max_retry_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    /// Prune old history at all (default true).
    pub(super) enabled: Option<bool>,
    /// How long events, feed rows, delivered outbox rows and the message
    /// map are kept (default "7d"); "0s" keeps everything.
    pub(super) keep: Option<String>,
    /// How long dead letters are kept after they died (default "30d").
    pub(super) dead_letters: Option<String>,
    /// How long blobs are kept (default: as long as `keep`, at least 10m).
    pub(super) blobs: Option<String>,
    /// Time between pruning passes (default "10m").
    pub(super) interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLinks {
    /// How long a pairing code is valid (default "15m").
    pub(super) code_ttl: Option<String>,
    /// Wrong codes a chat may send within `attempts_window` (default 5).
    pub(super) attempts: Option<u32>,
    /// The window failed attempts are counted in (default "10m").
    pub(super) attempts_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    /// Several instances share this (PostgreSQL) database (default false).
    pub(super) enabled: Option<bool>,
    /// This instance's name (default: `<hostname>-<pid>`).
    pub(super) instance: Option<String>,
    /// Longest time an account or a lane goes undriven after its instance
    /// died (default "15s").
    pub(super) takeover_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) bind: Option<String>,
    pub(super) max_body_bytes: Option<u64>,
    /// How many events `GET /api/messages` returns at most per call.
    pub(super) buffer: Option<u32>,
    /// Largest `GET /api/messages` response, e.g. "8MiB".
    pub(super) max_response_bytes: Option<String>,
    /// Most connections this listener holds at once.
    pub(super) max_connections: Option<u32>,
    /// Longest wait for a request's headers (also between requests).
    pub(super) header_timeout: Option<String>,
    #[serde(default)]
    pub(super) tokens: Vec<RawToken>,
    #[serde(default)]
    pub(super) webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: Option<String>,
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) gateways: Option<Vec<String>>,
    pub(super) scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) name: Option<String>,
    pub(super) url: Option<String>,
    pub(super) gateways: Option<Vec<String>>,
    pub(super) secret: Option<String>,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<String>,
    pub(super) timeout: Option<String>,
    /// Events posted with this token of the same account are not sent here.
    pub(super) skip_token: Option<String>,
    /// At most this many deliveries per POST, as a JSON array; unset: one
    /// delivery per POST, as an object.
    pub(super) batch: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) name: Option<String>,
    pub(super) enable: Option<bool>,
    #[serde(default, rename = "in")]
    pub(super) inbound: Vec<RawMember>,
    #[serde(default, rename = "out")]
    pub(super) outbound: Vec<RawMember>,
    #[serde(default)]
    pub(super) inout: Vec<RawMember>,
    /// How long a member may be unreachable before the others are told.
    pub(super) notice_after: Option<String>,
    /// Send outage notices at all (default true).
    pub(super) notices: Option<bool>,
    /// A message delivered this much later than it was written shows its
    /// time on networks that render text only.
    pub(super) late_after: Option<String>,
    /// How relayed messages show their author (`{NICK}`, `{USERNAME}`,
    /// `{NETWORK}`, `{CHANNEL}`, `{GATEWAY}`, `**bold**`).
    pub(super) nick_format: Option<String>,
    /// Chats may join this gateway with a pairing code from one of its
    /// chats (default false).
    pub(super) linkable: Option<bool>,
    /// Serve a public, read-only status page for this gateway (default
    /// false) at `/status/<name>` on the admin listener.
    pub(super) status_page: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMember {
    pub(super) account: Option<String>,
    pub(super) channel: Option<String>,
    /// Where people can join this channel (a t.me or matrix.to link):
    /// named in the notices when another member of the gateway is down.
    pub(super) invite: Option<String>,
}
