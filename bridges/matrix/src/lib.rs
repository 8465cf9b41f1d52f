//! switchboard's Matrix adapter: Matrix rooms through a relay bot on any
//! homeserver, or through an application service with one ghost user per
//! remote author.
//!
//! # Layout
//! - [`config`]: `[matrix.<name>]`, raw and validated; the appservice
//!   registration file.
//! - [`client`]: the client-server API with ruma's request and response
//!   types over reqwest; errors classified once.
//! - [`html`]: `formatted_body` sanitized (ammonia) and read into rich
//!   text; rich text written as HTML.
//! - [`convert`]: ruma events ↔ the normalized model, no I/O.
//! - [`adapter`]: [`MatrixAdapter`]: joins, the `/sync` loop (bot mode),
//!   sends.
//! - [`fuzzing`]: fuzz entry points for events and transactions.
//! - [`appservice`]: the routes the homeserver pushes transactions to, and
//!   ghost users.
//! - `synapse` (feature `synapse`): a real Synapse homeserver for tests and
//!   the benchmark, and a plain client-server API client as its users.
//!
//! There is no fake: the tests run against a real Synapse (the `synapse`
//! module, used by `tests/it/matrix.rs` in the workspace).

pub mod adapter;
pub mod appservice;
pub mod client;
pub mod config;
pub mod connector;
pub mod convert;
pub mod fuzzing;
pub mod html;
#[cfg(feature = "synapse")]
pub mod synapse;

pub use adapter::MatrixAdapter;
pub use config::{check_channel, parse as parse_config, MatrixConfig};
pub use connector::{CONNECTOR, NETWORK};
