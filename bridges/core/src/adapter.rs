//! The adapter contract between the hub and one network.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::caps::Capabilities;
use crate::error::SendError;
use crate::ids::{AccountId, ChannelId, EventId, GatewayName, RemoteId};
use crate::model::{Event, NewEvent};

/// Resolves when the adapter must stop receiving.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One operation for one destination channel, as the outbox hands it to
/// [`Adapter::send`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The gateway that routed it.
    pub gateway: GatewayName,
    /// The destination channel on the adapter's account.
    pub channel: ChannelId,
    /// The event, possibly rewritten by [`crate::degrade`].
    pub event: Event,
    /// The event's reference (reply, edit/delete/reaction target) resolved to
    /// this destination's own message id; `None` when the destination never
    /// received the referenced message.
    pub target: Option<RemoteId>,
}

/// What [`Inbound::deliver`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Committed with its outbox rows under this id.
    New(EventId),
    /// Already committed earlier (a redelivery); nothing was added.
    Duplicate(EventId),
    /// Dropped on purpose: it echoes a message the hub itself sent, or it
    /// comes from a channel no gateway reads.
    Ignored,
}

/// The hub could not take an event; the adapter must not acknowledge it
/// upstream, so the network redelivers it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the hub could not commit the event: {0}")]
pub struct DeliverError(pub String);

/// The hub's side of an adapter's receive loop.
#[async_trait]
pub trait Inbound: Send + Sync {
    /// Hands one event to the hub.
    ///
    /// Returns only after the event and its outbox rows are committed; only
    /// then may the adapter acknowledge the event upstream.
    ///
    /// # Errors
    /// [`DeliverError`] when the store is unavailable. The adapter should
    /// stop acknowledging and retry later.
    async fn deliver(&self, event: NewEvent) -> Result<Delivered, DeliverError>;
}

/// One configured connection to a network.
///
/// Implementations never touch the database or another adapter, never retry
/// inside [`send`](Self::send), and ignore what their own account sent.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// The account this adapter serves.
    fn account(&self) -> &AccountId;

    /// What the network can render.
    fn capabilities(&self) -> Capabilities;

    /// Receives from the network until `shutdown` resolves, handing each
    /// event to `inbound` and acknowledging upstream only after it returns.
    ///
    /// # Errors
    /// A fatal error the supervisor logs before restarting the adapter.
    async fn run(
        self: Arc<Self>,
        inbound: Arc<dyn Inbound>,
        shutdown: Shutdown,
    ) -> Result<(), SendError>;

    /// Makes one attempt to perform `op`. `idempotency_key` is fixed when
    /// the row was enqueued and is the same on every retry.
    ///
    /// # Errors
    /// A [`SendError`] whose [`retry_kind`](SendError::retry_kind) tells the
    /// outbox whether to retry, pause the account, or dead-letter.
    async fn send(&self, op: &Outbound, idempotency_key: &str) -> Result<RemoteId, SendError>;
}
