//! The switchboard contract: what every network adapter and the hub agree on.
//!
//! This crate does no I/O. It holds the normalized message model that every
//! network is translated into, the [`Adapter`] trait an adapter implements,
//! the [`SendError`] classification the hub's outbox acts on, and the
//! [`Capabilities`] that tell the hub how to degrade an operation a network
//! cannot render.
//!
//! # Layout
//! - [`connector`]: [`Connector`], all the hub knows of a network (its
//!   name, its config section, its channel ids, building its adapter).
//! - [`commands`]: chat commands (`/link`, `!sb link`): what an adapter
//!   recognises and says of the sender; the hub acts and answers.
//! - [`ids`]: newtype identifiers (accounts, channels, remote ids, event ids).
//! - [`model`]: [`Event`], [`Origin`], [`Author`], [`EventKind`], [`Attachment`],
//!   and [`NewEvent::validate`], the checks the hub applies before a commit.
//! - [`richtext`]: [`RichText`] with style spans and UTF-16 offset conversion.
//! - [`adapter`]: the [`Adapter`] trait, the [`Host`] handle the hub gives
//!   it, [`Batch`]es and what delivering them answers, the [`Outbound`] op;
//!   its docs state the rules (when to acknowledge, what to report).
//! - [`error`]: [`SendError`] and its [`RetryKind`].
//! - [`ingress`]: routes an adapter serves on a listener the hub runs.
//! - [`kit`]: the receive toolkit every adapter uses: [`kit::nap`],
//!   [`kit::Backoff`], [`kit::deliver`] until committed, [`kit::store_file`]
//!   within a budget.
//! - [`lines`]: [`not_bridged`], the one wording of a file that was not
//!   bridged, for every adapter and the degrade planner.
//! - [`nick`]: [`render_nick`], the per-gateway "who wrote this" prefix.
//! - [`secrets`]: [`Secrets`] and [`read_section`], how a network crate's
//!   config reads its section and the secrets in it.
//! - [`caps`]: [`Capabilities`] and [`degrade`], the pure fallback planner.
//! - `fake` (feature `test-util`): a scripted adapter for hub tests.
//! - `testkit` (feature `test-util`): what a network gives the hub's
//!   end-to-end tests: a running peer, its section, its faults.

pub mod adapter;
#[cfg(feature = "proptest")]
pub mod arb;
pub mod caps;
pub mod commands;
pub mod connector;
pub mod error;
#[cfg(feature = "test-util")]
pub mod fake;
pub mod ids;
pub mod ingress;
pub mod kit;
pub mod lines;
pub mod model;
pub mod nick;
pub mod richtext;
pub mod secrets;
#[cfg(feature = "test-util")]
pub mod testkit;

pub use adapter::{
    Adapter, Batch, Cursor, DeliverError, Delivered, Host, Outbound, Receipt, ReceiveHealth,
    Reference, RunError, Shutdown,
};
pub use caps::{degrade, Capabilities, DegradeContext, Pacing, Reactions, TextLimit};
pub use commands::{CommandForm, CommandStyle};
pub use connector::{same_config, AccountConfig, AccountSetup, Connector, SectionProblems};
pub use error::{RetryKind, SendError};
pub use ids::{AccountId, ChannelId, EventId, GatewayName, Network, ParseIdError, RemoteId};
pub use ingress::{Ingress, IngressRequest, IngressResponse};
pub use lines::{human_size, not_bridged, push_line};
pub use model::{
    Attachment, AttachmentKind, Author, Avatar, BlobRef, Event, EventKind, Membership, NewEvent,
    Origin, TargetRef,
};
pub use nick::{render_nick, with_nick, with_nick_within, DEFAULT_NICK_FORMAT};
pub use richtext::{RichText, Span, Style, TextUnit};
pub use secrets::{read_section, Secrets};
