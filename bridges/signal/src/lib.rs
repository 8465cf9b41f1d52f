//! switchboard's Signal adapter: Signal groups and direct chats through
//! signal-cli's JSON-RPC daemon (TCP or a UNIX socket).
//!
//! # Layout
//! - [`config`]: `[signal.<name>]`, raw and validated.
//! - [`client`]: one JSON-RPC connection: answers matched by id,
//!   `receive` notifications handed on.
//! - [`convert`]: envelopes ↔ the normalized model, no I/O.
//! - [`errors`]: signal-cli's error codes and what each means for the
//!   outbox (the table).
//! - [`adapter`]: [`SignalAdapter`]: the receive loop and sends.
//! - `fake` (feature `fake`): a faithful fake of the signal-cli daemon
//!   (JSON-RPC over TCP, a UNIX socket and HTTP with Server-Sent Events),
//!   for tests and the benchmark.
//! - `real` (feature `fake`): the real signal-cli daemon as a child process,
//!   for the tests that can run it without an account.
//!
//! Hand-written JSON, no typed client: signal-cli publishes no Rust types,
//! and its envelopes are read field by field with the defaults its own
//! serializer leaves out.

pub mod adapter;
pub mod client;
pub mod config;
pub mod connector;
pub mod convert;
pub mod errors;
#[cfg(feature = "fake")]
pub mod fake;
#[cfg(feature = "fake")]
pub mod real;

pub use adapter::SignalAdapter;
pub use config::{check_channel, parse as parse_config, SignalConfig};
pub use connector::{CONNECTOR, NETWORK};
