//! The switchboard contract: what every network adapter and the hub agree on.
//!
//! This crate does no I/O. It holds the normalized message model that every
//! network is translated into, the [`Adapter`] trait an adapter implements,
//! the [`SendError`] classification the hub's outbox acts on, and the
//! [`Capabilities`] that tell the hub how to degrade an operation a network
//! cannot render.
//!
//! # Layout
//! - [`ids`]: newtype identifiers (accounts, channels, remote ids, event ids).
//! - [`model`]: [`Event`], [`Origin`], [`Author`], [`EventKind`], [`Attachment`].
//! - [`richtext`]: [`RichText`] with style spans and UTF-16 offset conversion.
//! - [`adapter`]: the [`Adapter`] and [`Inbound`] traits and the [`Outbound`] op.
//! - [`error`]: [`SendError`] and its [`RetryKind`].
//! - [`caps`]: [`Capabilities`] and [`degrade`], the pure fallback planner.
//! - `fake` (feature `test-util`): a scripted adapter for hub tests.

pub mod adapter;
pub mod caps;
pub mod error;
#[cfg(feature = "test-util")]
pub mod fake;
pub mod ids;
pub mod model;
pub mod richtext;

pub use adapter::{Adapter, DeliverError, Delivered, Inbound, Outbound, Shutdown};
pub use caps::{degrade, Capabilities};
pub use error::{RetryKind, SendError};
pub use ids::{AccountId, ChannelId, EventId, GatewayName, Network, ParseIdError, RemoteId};
pub use model::{
    Attachment, AttachmentKind, Author, BlobRef, Event, EventKind, Membership, NewEvent, Origin,
    TargetRef,
};
pub use richtext::{RichText, Span, Style};
