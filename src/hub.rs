//! The hub: the running pieces wired together.
//!
//! [`Hub`] is what request handlers and adapters hold. It commits events
//! through the store writer; the writer calls back into [`FeedSink`] after
//! each commit, which publishes feed rows to live API consumers and wakes
//! outbox lanes.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_core::{AccountId, ChannelId, DeliverError, Delivered, Inbound, NewEvent};
use tokio::sync::{broadcast, mpsc};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::router::Router;
use crate::store::writer::CommitSink;
use crate::store::{FeedItem, IngestItem, IngestOutcome, Store, StoreError, WriterHandle};

/// Everything a request handler or adapter needs.
pub struct Hub {
    /// The validated configuration.
    pub settings: Arc<Settings>,
    /// Reads.
    pub store: Store,
    /// Writes.
    pub writer: WriterHandle,
    /// Routing tables.
    pub router: Router,
    /// Live feed rows, published after commit. Subscribers that lag fall
    /// back to reading the store, so the capacity only bounds memory.
    pub feed: broadcast::Sender<Arc<FeedItem>>,
    /// Delivery.
    pub outbox: Outbox,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Flips to true on shutdown; open streams end so listeners can close.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Hub {
    /// Commits an event with its routing; returns after the commit.
    ///
    /// # Errors
    /// When the store cannot commit it.
    pub async fn ingest(&self, item: IngestItem) -> Result<IngestOutcome, StoreError> {
        let account = item.event.origin.account.clone();
        let outcome = self.writer.ingest(item).await?;
        if matches!(outcome.delivered, Delivered::New(_)) {
            self.metrics
                .events_in
                .get_or_create(&Metrics::label(&account))
                .inc();
        }
        Ok(outcome)
    }
}

/// The writer's post-commit callback.
pub struct FeedSink {
    /// Where live consumers listen.
    pub feed: broadcast::Sender<Arc<FeedItem>>,
    /// Wakes outbox lanes (the outbox follows the other end).
    pub pokes: mpsc::UnboundedSender<(AccountId, ChannelId)>,
    /// For queue depth.
    pub metrics: Arc<Metrics>,
}

impl CommitSink for FeedSink {
    fn batch(&self, commands: usize, elapsed: std::time::Duration) {
        self.metrics.commit_batch.observe(commands as f64);
        self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
    }

    fn committed(&self, outcomes: &[IngestOutcome]) {
        // Subscribers drop rows at or below their cursor, so rows must be
        // published in sequence order, whatever order the batch used.
        let mut rows: Vec<&FeedItem> = outcomes.iter().flat_map(|o| &o.feed).collect();
        rows.sort_unstable_by_key(|r| r.seq);
        for item in rows {
            // No receivers is fine: nobody is streaming right now.
            let _ = self.feed.send(Arc::new(item.clone()));
        }
        for o in outcomes {
            for (account, channel) in &o.lanes {
                self.metrics
                    .queue_depth
                    .get_or_create(&Metrics::label(account))
                    .inc();
                let _ = self.pokes.send((account.clone(), channel.clone()));
            }
        }
    }
}

/// The [`Inbound`] handed to network adapters.
pub struct HubInbound(pub Arc<Hub>);

#[async_trait]
impl Inbound for HubInbound {
    async fn deliver(&self, event: NewEvent) -> Result<Delivered, DeliverError> {
        let route = self
            .0
            .router
            .route_inbound(&event.origin.account, &event.origin.channel);
        if route.is_empty() {
            return Ok(Delivered::Ignored);
        }
        let item = IngestItem {
            event,
            origin_token: None,
            dests: route.dests,
            feed: route.feed,
            check_echo: true,
        };
        self.0
            .ingest(item)
            .await
            .map(|o| o.delivered)
            .map_err(|e| DeliverError(e.to_string()))
    }
}
