//! The adapter contract between the hub and one network.
//!
//! # The rules, for an adapter author
//! - **Receive** in [`Adapter::run`]: translate what the network says into
//!   [`NewEvent`]s and hand them to the hub with [`Host::deliver`], in a
//!   [`Batch`] together with the network position they take you to (an
//!   update offset, a sync token). The batch and its cursor are committed in
//!   one transaction; only when `deliver` returns `Ok` may you acknowledge
//!   upstream. Read the cursor back with [`Host::cursor`] when `run` starts.
//! - **What `deliver` answers.** `Ok` with one [`Delivered`] per event: new,
//!   a duplicate of something already committed (a redelivery: fine), ignored
//!   (an echo of the hub's own send, or a channel no gateway reads), or
//!   [`Delivered::Rejected`]: the event is malformed and was skipped with its
//!   reason logged. All four mean "acknowledge it". `Err` means the hub's
//!   store is unavailable: do not acknowledge, wait, deliver again.
//! - **Dedupe.** An event is recognised as redelivered by
//!   `(account, channel, key)`, where the key is [`NewEvent::key`] when set,
//!   else [`Origin::remote_id`](crate::Origin). Set a key whenever the
//!   network's message id does not identify the *event*: an edit reuses the
//!   message id of what it edits, a reaction has none.
//! - **Health.** Report how receiving goes with [`Host::health`]: connected,
//!   reconnecting (with the error), or needing an admin (what to do). Return
//!   `Err` from `run` only for failures worth a restart: the supervisor
//!   restarts `run` with backoff, also after a panic.
//! - **Send** in [`Adapter::send`]: one attempt, no retry loop inside, an
//!   error classified as [`SendError`] says whether to retry, pause the
//!   account, or dead-letter. A destination that takes several operations
//!   in one request says how many in [`Adapter::batch_limit`] and takes
//!   them, all or nothing, in [`Adapter::send_batch`]. A success answers a [`Receipt`] with the ids of
//!   what the send created; the hub maps them to the event, so later edits,
//!   replies, deletes and reactions find every part. A reference arrives as a
//!   [`Reference`]: the referenced event and all its ids on this network.
//! - **Files** go through the hub's blob store: [`Host::put_blob`] when
//!   receiving (so a queued message keeps its bytes across restarts, and no
//!   URL with a token in it is ever stored), [`Host::blob`] when sending.
//! - Ignore what your own account sent (loop prevention); the message map is
//!   a second guard.
//! - **Commands** (an account with `links = true`): deliver a message that
//!   is a command in the network's form as an
//!   [`EventKind::Command`](crate::EventKind::Command), saying whether its
//!   sender administers the chat; the hub acts on it and answers in that
//!   chat only. See [`crate::commands`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::caps::Capabilities;
use crate::error::SendError;
use crate::ids::{AccountId, ChannelId, EventId, GatewayName, RemoteId};
use crate::model::{BlobRef, Event, NewEvent};

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
    /// The message the event refers to (reply, edit, delete or reaction
    /// target) as this destination knows it; `None` when the destination
    /// never received it.
    pub target: Option<Reference>,
    /// The gateway's template for showing who wrote a relayed message
    /// (`nick_format`; see [`crate::nick`]); `None`: the adapter's default.
    pub nick_format: Option<String>,
}

/// A referenced message, with what a network needs to point at it: the
/// event itself (its author and time, which a Signal quote or edit needs;
/// its kind and attachments, which tell a Telegram caption edit from a text
/// edit; its thread, which a Matrix thread reply needs) and every id this
/// destination has for it, first part first (an album or a split text has
/// several).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The referenced event, as the hub stored it.
    pub event: Box<Event>,
    /// The destination's ids for it, in part order; never empty.
    pub ids: Vec<RemoteId>,
}

impl Reference {
    /// The id of the referenced message's first part.
    #[must_use]
    pub fn first(&self) -> &RemoteId {
        &self.ids[0]
    }
}

/// What a successful [`Adapter::send`] created on the network.
///
/// List the id of every message the send created (one for a text, several
/// for an album or a text the network split), and the id of a reaction the
/// network can only take back by that id (Matrix redacts the reaction
/// event). List nothing for what creates nothing to refer to later: an
/// edit applied in place, a delete, a reaction taken back by its emoji.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The ids, in order.
    pub ids: Vec<RemoteId>,
}

impl Receipt {
    /// One created message.
    #[must_use]
    pub fn one(id: RemoteId) -> Self {
        Self { ids: vec![id] }
    }

    /// Nothing to remember.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }
}

/// Events to commit in one transaction, with the network position they
/// take the adapter to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The events, in the network's order.
    pub events: Vec<NewEvent>,
    /// Saved with the events: the adapter's receive position after them.
    pub cursor: Option<Cursor>,
}

/// A named receive position of an account (`offset`, `since`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Which position (an adapter may keep several).
    pub name: String,
    /// Its value, opaque to the hub.
    pub value: String,
}

/// What [`Host::deliver`] did with one event. Every variant means the
/// adapter may acknowledge the event upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Committed with its outbox rows under this id.
    New(EventId),
    /// Already committed earlier (a redelivery); nothing was added.
    Duplicate(EventId),
    /// Dropped on purpose: it echoes a message the hub itself sent, or it
    /// comes from a channel no gateway reads.
    Ignored,
    /// Malformed (the reason says how); skipped, logged, never retried.
    Rejected(String),
}

/// The hub could not take a batch: its store is unavailable. Nothing of the
/// batch was committed; do not acknowledge it upstream, wait and deliver it
/// again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The store cannot take writes right now.
    #[error("the hub's store is unavailable: {0}")]
    Unavailable(String),
    /// The hub is shutting down.
    #[error("the hub is shutting down")]
    Stopping,
}

/// How receiving from the network goes, as the adapter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveHealth {
    /// Connected and receiving.
    Connected,
    /// Lost the connection; trying again.
    Reconnecting {
        /// What went wrong.
        error: String,
    },
    /// Connected and receiving, but part of what the account should do
    /// fails (files cannot be fetched, reactions are not visible to the
    /// bot): shown as `degraded` with the reason until the adapter reports
    /// `Connected` again.
    Degraded {
        /// What does not work, and what would fix it, in a sentence.
        reason: String,
    },
    /// Cannot go on until an admin acts (a revoked token, a captcha).
    NeedsAction {
        /// What the admin should do, in a sentence.
        what: String,
    },
}

/// The hub as one adapter sees it. The supervisor hands the same handle to
/// every (re)start of [`Adapter::run`]; it is scoped to the adapter's
/// account (cursors, state and health are the account's own).
#[async_trait]
pub trait Host: Send + Sync {
    /// Commits a batch of events and its cursor in one transaction.
    ///
    /// # Errors
    /// [`DeliverError`] when nothing could be committed.
    async fn deliver(&self, batch: Batch) -> Result<Vec<Delivered>, DeliverError>;

    /// The value of a cursor saved by [`deliver`](Self::deliver).
    ///
    /// # Errors
    /// When the store is unavailable.
    async fn cursor(&self, name: &str) -> Result<Option<String>, DeliverError>;

    /// Stores bytes the adapter downloaded; returns their reference.
    ///
    /// # Errors
    /// When the store is unavailable.
    async fn put_blob(&self, mime: &str, bytes: Vec<u8>) -> Result<BlobRef, DeliverError>;

    /// A stored blob's bytes, to upload when sending.
    ///
    /// # Errors
    /// When the store is unavailable.
    async fn blob(&self, blob: &BlobRef) -> Result<Option<Vec<u8>>, DeliverError>;

    /// A value from the account's own key-value space (ghost users
    /// registered, an uploaded blob's URI on the network, ...).
    ///
    /// # Errors
    /// When the store is unavailable.
    async fn state(&self, key: &str) -> Result<Option<String>, DeliverError>;

    /// Sets a value in the account's key-value space.
    ///
    /// # Errors
    /// When the store is unavailable.
    async fn set_state(&self, key: &str, value: &str) -> Result<(), DeliverError>;

    /// Records that a channel of this account now lives under another id
    /// (a Telegram group upgraded to a supergroup announces its new id):
    /// the hub moves the channel's queue, message map and routes, as after
    /// a send answered [`SendError::moved`](crate::SendError::moved), so
    /// what arrives from the new id reaches the same gateways.
    ///
    /// # Errors
    /// When the store is unavailable.
    async fn moved(&self, from: &ChannelId, to: &ChannelId) -> Result<(), DeliverError>;

    /// Which of `among` (channels of this account) holds a message this
    /// account received or sent under `remote_id`: for an update that
    /// names a message but not its channel precisely (a Telegram reaction
    /// names the chat, not the forum topic bridged as `<chat>/<topic>`).
    /// `None` when none of them does.
    ///
    /// # Errors
    /// When the store is unavailable.
    async fn channel_of(
        &self,
        remote_id: &RemoteId,
        among: &[ChannelId],
    ) -> Result<Option<ChannelId>, DeliverError>;

    /// Reports how receiving goes; shown in `switchboard status`. Reporting
    /// `Connected` also tells the outbox the account is ready: sends that
    /// waited for it (a [`SendError::not_ready`]) go at once, and an open
    /// breaker probes at once instead of waiting out its timer.
    fn health(&self, health: ReceiveHealth);

    /// Whether a gateway reads `channel` of this account now, configured
    /// or linked from the chats. An adapter that receives from every chat
    /// it is in (to hear commands, [`crate::commands`]) skips the costly
    /// part of the other chats' messages (fetching files) and delivers
    /// only their commands. Defaults to true (hosts without links).
    fn reads(&self, channel: &ChannelId) -> bool {
        let _ = channel;
        true
    }

    /// Counts something the adapter did that an operator may want to watch
    /// (`switchboard_adapter_events_total{account, event}` on `/metrics`):
    /// a message sent again as plain text after the network refused its
    /// formatting, say. `event` is a short snake_case name. Does nothing
    /// where nobody counts (test hosts).
    fn count(&self, event: &'static str) {
        let _ = event;
    }
}

/// Why [`Adapter::run`] stopped; the supervisor logs it and restarts `run`
/// with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

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

    /// Routes the network pushes to (an appservice, a webhook), with the
    /// address the hub should listen on for them; `None` for none.
    fn ingress(&self) -> Option<(std::net::SocketAddr, Arc<dyn crate::ingress::Ingress>)> {
        None
    }

    /// Receives from the network until `shutdown` resolves, handing events
    /// to `host` and acknowledging upstream only after it committed them.
    ///
    /// # Errors
    /// A failure the supervisor logs before restarting `run` with backoff.
    async fn run(self: Arc<Self>, host: Arc<dyn Host>, shutdown: Shutdown) -> Result<(), RunError>;

    /// Whether [`serve_sends`](Self::serve_sends) readies this adapter to
    /// send without receiving. Several switchboards on one database (a
    /// cluster, the hub's docs/scaling.md) run an account's receive side on
    /// one of them at a time; the others drive some of its lanes when this
    /// is true. False (the default): only the instance receiving for the
    /// account sends for it.
    fn sends_without_receiving(&self) -> bool {
        false
    }

    /// Readies the adapter to [`send`](Self::send) without receiving, until
    /// `shutdown` resolves: what `run` does before it starts receiving
    /// (connect, sign in, learn what sends need, report
    /// [`ReceiveHealth::Connected`] once sends can go), and nothing more. It
    /// must take nothing off the network and acknowledge nothing upstream:
    /// another instance receives for this account meanwhile. The hub calls
    /// it only when [`sends_without_receiving`](Self::sends_without_receiving)
    /// is true, supervised like `run`, and never at the same time as `run`.
    ///
    /// # Errors
    /// A failure the supervisor logs before calling it again with backoff.
    async fn serve_sends(
        self: Arc<Self>,
        host: Arc<dyn Host>,
        shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let _ = host;
        shutdown.await;
        Ok(())
    }

    /// Makes one attempt to perform `op`. `idempotency_key` is fixed when
    /// the row was enqueued and is the same on every retry. `host` is the
    /// account's hub (its blobs to upload, its key-value state), the same
    /// the receive side gets: an adapter keeps no handle of its own.
    ///
    /// # Errors
    /// A [`SendError`] whose [`retry_kind`](SendError::retry_kind) tells the
    /// outbox whether to retry, pause the account, or dead-letter.
    async fn send(
        &self,
        host: &dyn Host,
        op: &Outbound,
        idempotency_key: &str,
    ) -> Result<Receipt, SendError>;

    /// How many consecutive operations of `channel` one
    /// [`send_batch`](Self::send_batch) takes at most. 1 (the default):
    /// the hub hands the channel's operations to [`send`](Self::send) one
    /// at a time. A destination that takes several at once (a webhook with
    /// `batch` set, as Matrix appservice transactions do) says how many;
    /// the hub then drains a backlog in batches of what is already
    /// waiting, never waiting to fill one.
    fn batch_limit(&self, channel: &ChannelId) -> usize {
        let _ = channel;
        1
    }

    /// Makes one attempt to perform several consecutive operations of one
    /// channel, in order, at once (never more than
    /// [`batch_limit`](Self::batch_limit)), each with its own idempotency
    /// key. All or nothing: `Ok` answers one [`Receipt`] per operation, in
    /// order, and means the network took every one; `Err` means it took
    /// none as far as the adapter can tell, and the hub tries them all
    /// again (a [`SendError::permanent`] makes it try them one at a time
    /// through [`send`](Self::send), so only the operation at fault is
    /// dead-lettered).
    ///
    /// The default takes one operation through [`send`](Self::send) and
    /// refuses more, which the hub never hands an adapter whose
    /// `batch_limit` is 1.
    ///
    /// # Errors
    /// A [`SendError`] for the whole batch, as for `send`.
    async fn send_batch(
        &self,
        host: &dyn Host,
        ops: &[(Outbound, String)],
    ) -> Result<Vec<Receipt>, SendError> {
        match ops {
            [(op, key)] => Ok(vec![self.send(host, op, key).await?]),
            _ => Err(SendError::permanent(format!(
                "this adapter takes one operation at a time, not {}",
                ops.len()
            ))),
        }
    }
}
