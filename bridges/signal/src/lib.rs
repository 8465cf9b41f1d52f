//! switchboard's Signal adapter (in progress): Signal groups and direct
//! chats through signal-cli's JSON-RPC daemon.
//!
//! # Layout
//! - `fake` (feature `fake`): a faithful fake of the signal-cli daemon
//!   (JSON-RPC over TCP, a UNIX socket and HTTP with Server-Sent Events),
//!   for tests and the benchmark.

#[cfg(feature = "fake")]
pub mod fake;
