//! switchboard's Telegram adapter: a bot talking to the HTTP Bot API, so a
//! Telegram group (or one forum topic) becomes a member of a gateway.
//!
//! # Layout
//! - [`config`]: `[telegram.<name>]`, raw and validated.
//! - [`client`]: one Bot API call, its envelope and [`client::CallError`].
//! - [`wire`]: the Bot API objects read from Telegram.
//! - [`convert`]: Telegram ↔ the normalized model, no I/O.
//! - [`adapter`]: [`TelegramAdapter`]: receiving (long polling or a
//!   webhook; `adapter/receive.rs`, `adapter/webhook.rs`), sending
//!   (`adapter/send.rs`), and the health it reports.
//! - `fake` (feature `fake`): a faithful fake of the Bot API server, for
//!   tests and the benchmark.
//!
//! # Why hand-written wire types, not teloxide-core
//! teloxide-core's types cover the whole Bot API and would be the field's
//! choice, but it brings its own request stack (a second HTTP client
//! configuration, throttling and retry adaptors we must not use because the
//! hub's outbox owns retries) and a large type tree that doubles this
//! crate's build time on a two-core machine. switchboard reads some twenty
//! fields of Telegram's objects; [`wire`] declares exactly those, ignoring
//! the rest, and every call stays one attempt classified in [`adapter`].

pub mod adapter;
pub mod client;
pub mod config;
pub mod connector;
pub mod convert;
#[cfg(feature = "fake")]
pub mod fake;
pub mod wire;

pub use adapter::TelegramAdapter;
pub use config::{check_channel, parse as parse_config, TelegramConfig};
pub use connector::{CONNECTOR, NETWORK};
