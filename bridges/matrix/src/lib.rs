//! switchboard's Matrix adapter: Matrix rooms through a relay bot on any
//! homeserver, or through an application service with one ghost user per
//! remote author.
//!
//! # Layout
//! - [`config`]: `[matrix.<name>]`, raw and validated; the appservice
//!   registration file.
//! - [`client`]: the client-server API with ruma's request and response
//!   types over reqwest; errors classified once; downloads with a budget
//!   that grows with the file's size.
//! - [`html`]: `formatted_body` sanitized (ammonia) and read into rich
//!   text; rich text written as HTML.
//! - [`convert`]: ruma events ↔ the normalized model, no I/O.
//! - [`adapter`]: [`MatrixAdapter`]: signing in (always as the same
//!   device), joining rooms, capabilities, health.
//! - [`receive`]: the `/sync` loop (bot mode), reading events and fetching
//!   their files within their budget, who may redact.
//! - [`send`]: sends, with per-message profiles (MSC4144) in bot mode.
//! - [`pacer`]: the relay bot's model of its homeserver's rate limit.
//! - [`image`]: an image's format and size from its header.
//! - [`fuzzing`]: fuzz entry points for events and transactions.
//! - [`appservice`]: the routes the homeserver pushes transactions to, and
//!   ghost users.
//! - [`commands`]: chat commands (`!sb link`) on an account with `links =
//!   true`: who administers a room (power levels), the room's name.
//! - `synapse` (feature `synapse`): a real Synapse homeserver for tests and
//!   the benchmark (with Synapse's own rate limits or relaxed ones), a
//!   plain client-server API client as its users, and a proxy in front of
//!   it that fails or stalls a file or loses an answer.
//!
//! There is no fake: the tests run against a real Synapse (the `synapse`
//! module, used by `tests/it/matrix.rs` in the workspace).

pub mod adapter;
pub mod appservice;
pub mod client;
pub mod commands;
pub mod config;
pub mod connector;
pub mod convert;
pub mod fuzzing;
pub mod html;
pub mod image;
pub mod pacer;
pub mod receive;
pub mod send;
#[cfg(feature = "synapse")]
pub mod synapse;

pub use adapter::MatrixAdapter;
pub use config::{check_channel, parse as parse_config, MatrixConfig};
pub use connector::{CONNECTOR, NETWORK};
