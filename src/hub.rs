//! The hub: the running pieces wired together.
//!
//! [`Hub`] is what request handlers hold; adapters hold an [`AccountHost`],
//! the hub seen from one account (the `Host` of the adapter contract). Both
//! commit events through the store writer; the writer calls back into
//! [`FeedSink`] after each commit, which publishes feed rows to live API
//! consumers and wakes outbox lanes.

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::time::Duration;

use switchboard_core::{
    AccountId, Author, Batch, BlobRef, ChannelId, DeliverError, Delivered, EventKind, Host,
    NewEvent, Origin, ReceiveHealth, RemoteId, RichText,
};
use tokio::sync::{broadcast, mpsc};

use crate::config::Settings;
use crate::health::HealthBoard;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::router::Router;
use crate::store::writer::CommitSink;
use crate::store::{
    FeedItem, IngestBatch, IngestItem, IngestOutcome, Store, StoreError, WriterHandle,
};

/// Everything a request handler or adapter needs.
pub struct Hub {
    /// The configuration in force (replaced by a reload).
    pub settings: std::sync::RwLock<Arc<Settings>>,
    /// Each API account's tokens, replaced in place by a reload.
    pub api_tokens:
        std::sync::RwLock<std::collections::HashMap<AccountId, Arc<crate::api::auth::Tokens>>>,
    /// Each API account's webhooks adapter, updated by a reload.
    pub webhooks: std::sync::RwLock<
        std::collections::HashMap<AccountId, Arc<crate::api::webhook::WebhookAdapter>>,
    >,
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
    /// Accounts' receive-side health.
    pub health: Arc<HealthBoard>,
    /// Flips to true on shutdown; open streams end so listeners can close.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Each adapter's receive side, by account; a reload starts and stops
    /// them. A std lock held for an insert or a removal.
    pub receivers:
        std::sync::Mutex<std::collections::HashMap<AccountId, crate::receivers::Running>>,
    /// Each bot API account's listener, by account; a reload starts and
    /// stops them.
    pub listeners:
        std::sync::Mutex<std::collections::HashMap<AccountId, crate::receivers::Running>>,
    /// Links made from the chats, merged into the routes on top of the
    /// configuration's gateways.
    pub links: crate::links::Links,
    /// This instance as one of a cluster (`[cluster]`); `None` alone.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
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
    /// In a cluster: feed rows go to live consumers through the feed pump
    /// (`crate::cluster::feed`), and cursor batches carry the account's
    /// lease.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl CommitSink for FeedSink {
    fn batch(&self, commands: usize, elapsed: std::time::Duration) {
        self.metrics.commit_batch.observe(commands as f64);
        self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
    }

    fn fence(&self, account: &AccountId) -> Option<crate::store::postgres::Fence> {
        self.cluster.as_ref()?.fence(account)
    }

    fn committed(&self, outcomes: &[IngestOutcome]) {
        if let Some(cluster) = &self.cluster {
            // Other instances commit feed rows too: the pump reads them all
            // in order.
            if outcomes.iter().any(|o| !o.feed.is_empty()) {
                cluster.feed_wake.notify_one();
            }
        } else {
            // Subscribers drop rows at or below their cursor, so rows must
            // be published in sequence order, whatever order the batch used.
            let mut rows: Vec<&FeedItem> = outcomes.iter().flat_map(|o| &o.feed).collect();
            rows.sort_unstable_by_key(|r| r.seq);
            for item in rows {
                // No receivers is fine: nobody is streaming right now.
                let _ = self.feed.send(Arc::new(item.clone()));
            }
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

impl Hub {
    /// Commits a batch an adapter of `account` received, with its cursor.
    /// Events that fail validation, or that the store refuses on their
    /// own, are rejected (the adapter skips them); the rest commit. A
    /// command is committed without a route (so a redelivery is
    /// recognised), then acted on and answered (`crate::links`).
    ///
    /// # Errors
    /// When the store is unavailable: nothing was committed.
    pub async fn deliver(
        &self,
        account: &AccountId,
        batch: Batch,
    ) -> Result<Vec<Delivered>, DeliverError> {
        let mut answers: Vec<Option<Delivered>> = vec![None; batch.events.len()];
        let mut items = Vec::new();
        let mut index = Vec::new();
        let mut commands = Vec::new();
        for (i, event) in batch.events.into_iter().enumerate() {
            let problem = if &event.origin.account == account {
                event.validate().err()
            } else {
                Some(format!(
                    "the event is from {}, not {account}",
                    event.origin.account
                ))
            };
            if let Some(reason) = problem {
                tracing::warn!(%account, channel = %event.origin.channel, remote_id = %event.origin.remote_id, %reason, "Event rejected; skipped.");
                answers[i] = Some(Delivered::Rejected(reason));
                continue;
            }
            if matches!(event.kind, EventKind::Command { .. }) {
                commands.push((i, event.clone()));
                items.push(IngestItem {
                    event,
                    origin_token: None,
                    dests: Vec::new(),
                    feed: Vec::new(),
                    check_echo: false,
                });
                index.push(i);
                continue;
            }
            let route = self
                .router
                .load()
                .route_inbound(&event.origin.account, &event.origin.channel);
            if route.is_empty() {
                answers[i] = Some(Delivered::Ignored);
                continue;
            }
            items.push(IngestItem {
                event,
                origin_token: None,
                dests: route.dests,
                feed: route.feed,
                check_echo: true,
            });
            index.push(i);
        }
        let cursor = batch.cursor.map(|c| (account.clone(), c));
        if !items.is_empty() || cursor.is_some() {
            let outcomes = match self
                .writer
                .ingest_batch(IngestBatch {
                    items: items.clone(),
                    cursor: cursor.clone(),
                    state: Vec::new(),
                })
                .await
            {
                Ok(o) => o.into_iter().map(|o| Ok(o.delivered)).collect(),
                Err(e) if e.is_unavailable() => return Err(unavailable(e)),
                // Another instance of the cluster holds the account now:
                // nothing was committed, nothing may be acknowledged.
                Err(StoreError::Fenced(_)) => {
                    if let Some(c) = &self.cluster {
                        c.wake.notify_one();
                    }
                    return Err(DeliverError::Stopping);
                }
                // The store refused the batch for one of its events: find
                // which, committing the others one by one, then the cursor.
                Err(e) => {
                    tracing::warn!(%account, error = %e, "Batch refused; committing its events one by one.");
                    let mut one_by_one = Vec::with_capacity(items.len());
                    for item in items {
                        one_by_one.push(match self.writer.ingest(item).await {
                            Ok(o) => Ok(o.delivered),
                            Err(e) if e.is_unavailable() => return Err(unavailable(e)),
                            Err(e) => Err(e.to_string()),
                        });
                    }
                    if cursor.is_some() {
                        self.writer
                            .ingest_batch(IngestBatch {
                                items: Vec::new(),
                                cursor,
                                state: Vec::new(),
                            })
                            .await
                            .map_err(unavailable)?;
                    }
                    one_by_one
                }
            };
            for (i, outcome) in index.into_iter().zip(outcomes) {
                answers[i] = Some(match outcome {
                    Ok(d) => d,
                    Err(reason) => {
                        tracing::warn!(%account, %reason, "Event refused by the store; skipped.");
                        Delivered::Rejected(reason)
                    }
                });
            }
        }
        let label = Metrics::label(account);
        let answers: Vec<Delivered> = answers
            .into_iter()
            .map(|a| a.expect("every event answered"))
            .collect();
        // Committed once: a redelivered command is a duplicate, not acted
        // on again.
        for (i, event) in commands {
            if matches!(answers[i], Delivered::New(_)) {
                crate::links::handle_command(self, &event).await;
            }
        }
        let new = answers
            .iter()
            .filter(|a| matches!(a, Delivered::New(_)))
            .count();
        self.metrics
            .events_in
            .get_or_create(&label)
            .inc_by(new as u64);
        Ok(answers)
    }
}

impl Hub {
    /// Every account's health: the receive side's state, `down` where the
    /// outbox's breaker is open.
    #[must_use]
    pub fn account_states(&self) -> Vec<crate::health::AccountHealth> {
        let mut states = self.health.states(&|a| self.outbox.is_down(a));
        for s in &mut states {
            if self.outbox.is_paused(&s.account) {
                s.state = "paused";
            }
        }
        for s in self.outbox.states() {
            let i = match states.iter().position(|x| x.account == s.account) {
                Some(i) => i,
                None => {
                    let paused = self.outbox.is_paused(&s.account);
                    states.push(crate::health::AccountHealth {
                        account: s.account.clone(),
                        state: if paused {
                            "paused"
                        } else if s.state == "paused" {
                            "down"
                        } else {
                            "up"
                        },
                        since_ms: crate::store::now_ms(),
                        last_error: None,
                        restarts: 0,
                        rate_limited_until_ms: None,
                        channels: Vec::new(),
                    });
                    states.len() - 1
                }
            };
            let entry = &mut states[i];
            // The network pacing us is not an outage, nor `up` with a stale
            // 429 beside it: its own state, with until when.
            if let Some(until) = s.rate_limited_until_ms {
                if matches!(entry.state, "up" | "degraded") {
                    entry.state = "rate_limited";
                }
                entry.rate_limited_until_ms = Some(until);
            }
            entry.channels = s
                .channels
                .into_iter()
                .map(|(channel, what, since_ms)| crate::health::ChannelHealth {
                    channel: channel.to_string(),
                    state: "needs_action",
                    since_ms,
                    error: what,
                })
                .collect();
        }
        states.sort_by(|a, b| a.account.cmp(&b.account));
        states
    }
}

impl Hub {
    /// Commits an outage or recovery notice for the other members of its
    /// gateway, retrying while the store is unavailable (until shutdown).
    pub async fn announce(&self, a: crate::outbox::notices::Announcement) {
        use crate::outbox::notices::Announcement;
        let (gateway, account, channel, text) = match &a {
            Announcement::Down {
                gateway,
                account,
                channel,
                since,
            } => {
                let mut text = format!(
                    "⚠️ {} is unreachable since {}. Messages to it are kept and will be delivered when it is back.",
                    describe_destination(account, channel),
                    since
                        .format(time::macros::format_description!(
                            "[year]-[month]-[day] [hour]:[minute] UTC"
                        ))
                        .unwrap_or_default()
                );
                let invites: Vec<String> = self
                    .router
                    .load()
                    .gateway(gateway)
                    .into_iter()
                    .flat_map(|g| &g.members)
                    .filter(|m| !(&m.account == account && &m.channel == channel))
                    .filter_map(|m| m.invite.clone())
                    .collect();
                if !invites.is_empty() {
                    text.push_str(&format!(
                        " The conversation goes on at {}.",
                        invites.join(", ")
                    ));
                }
                text.push_str(&self.status_link(gateway));
                (gateway, account, channel, text)
            }
            Announcement::Back {
                gateway,
                account,
                channel,
                outage,
                delivered,
            } => (
                gateway,
                account,
                channel,
                format!(
                    "✅ {} is back after {}; {delivered} queued message{} delivered.{}",
                    describe_destination(account, channel),
                    humantime::format_duration(Duration::from_secs(outage.as_secs().max(1))),
                    if *delivered == 1 { " was" } else { "s were" },
                    self.status_link(gateway)
                ),
            ),
        };
        // The outage is recorded (or forgotten) in the commit of its
        // notice, so a restart neither repeats a notice nor loses one; also
        // when nobody is left to tell.
        let mut batch = IngestBatch {
            items: Vec::new(),
            cursor: None,
            state: vec![a.record()],
        };
        let route = self.router.load().route_notice(gateway, account, channel);
        if !route.is_empty() {
            tracing::info!(%gateway, %account, %channel, notice = %text, "Outage notice.");
            batch.items.push(notice_item(account, channel, text, route));
        }
        let mut shutdown = self.shutdown.clone();
        loop {
            match self.writer.ingest_batch(batch.clone()).await {
                Ok(_) => return,
                Err(e) if e.is_unavailable() && !matches!(e, StoreError::WriterGone) => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Outage notice not stored.");
                    return;
                }
            }
        }
    }
}

impl Hub {
    /// " Status: <url>" for a gateway whose public status page is on and
    /// reachable (`general.public_url`); empty otherwise.
    fn status_link(&self, gateway: &switchboard_core::GatewayName) -> String {
        let settings = self.settings.read().expect("settings lock").clone();
        match (
            &settings.public_url,
            self.router.load().gateway(gateway).map(|g| g.status_page),
        ) {
            (Some(base), Some(true)) => format!(" Status: {base}/status/{gateway}"),
            _ => String::new(),
        }
    }
}

/// A notice from switchboard itself about `account`/`channel`, routed.
fn notice_item(
    account: &AccountId,
    channel: &ChannelId,
    text: String,
    route: crate::router::Route,
) -> IngestItem {
    let remote = format!("notice:{:032x}", rand::random::<u128>());
    IngestItem {
        event: NewEvent {
            origin: Origin {
                account: account.clone(),
                channel: channel.clone(),
                remote_id: RemoteId::new(remote).expect("valid"),
                thread: None,
            },
            key: None,
            author: Author {
                remote_id: "switchboard".into(),
                display_name: "switchboard".into(),
                username: None,
                avatar: None,
                is_bot: true,
            },
            at: time::OffsetDateTime::now_utc(),
            kind: EventKind::Notice {
                body: RichText::plain(text),
            },
        },
        origin_token: None,
        dests: route.dests,
        feed: route.feed,
        check_echo: false,
    }
}

/// How a notice names a destination.
fn describe_destination(account: &AccountId, channel: &ChannelId) -> String {
    match channel.as_str().strip_prefix("webhook:") {
        Some(hook) => format!("The webhook `{hook}` ({account})"),
        None => {
            let network = crate::adapters::display_name(account.network());
            format!("{network} ({account}, {channel})")
        }
    }
}

fn unavailable(e: StoreError) -> DeliverError {
    match e {
        StoreError::WriterGone => DeliverError::Stopping,
        other => DeliverError::Unavailable(other.to_string()),
    }
}

/// Files larger than this are hashed on a blocking thread, not on an
/// async worker.
const OFF_WORKER_BYTES: usize = 256 * 1024;

/// The hub as one account's adapter sees it.
pub struct AccountHost {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The account whose cursors, state and health this handle touches.
    pub account: AccountId,
}

#[async_trait]
impl Host for AccountHost {
    async fn deliver(&self, batch: Batch) -> Result<Vec<Delivered>, DeliverError> {
        self.hub.deliver(&self.account, batch).await
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, DeliverError> {
        self.hub
            .store
            .net_cursor(&self.account, name)
            .await
            .map_err(unavailable)
    }

    async fn put_blob(&self, mime: &str, bytes: Vec<u8>) -> Result<BlobRef, DeliverError> {
        // Hashing a large file is CPU work that would hold an async worker
        // (and every task queued behind it) for milliseconds per MiB.
        let (sha256, bytes) = if bytes.len() > OFF_WORKER_BYTES {
            tokio::task::spawn_blocking(move || (hex::encode(Sha256::digest(&bytes)), bytes))
                .await
                .map_err(|e| DeliverError::Unavailable(format!("hashing a file: {e}")))?
        } else {
            (hex::encode(Sha256::digest(&bytes)), bytes)
        };
        self.hub
            .writer
            .blob(sha256.clone(), mime.to_owned(), bytes)
            .await
            .map_err(unavailable)?;
        Ok(BlobRef { sha256 })
    }

    async fn blob(&self, blob: &BlobRef) -> Result<Option<Vec<u8>>, DeliverError> {
        Ok(self
            .hub
            .store
            .blob(&blob.sha256)
            .await
            .map_err(unavailable)?
            .map(|(_, data)| data))
    }

    async fn state(&self, key: &str) -> Result<Option<String>, DeliverError> {
        self.hub
            .store
            .adapter_state(&self.account, key)
            .await
            .map_err(unavailable)
    }

    async fn set_state(&self, key: &str, value: &str) -> Result<(), DeliverError> {
        self.hub
            .writer
            .state(self.account.clone(), key.to_owned(), value.to_owned())
            .await
            .map_err(unavailable)
    }

    async fn moved(&self, from: &ChannelId, to: &ChannelId) -> Result<(), DeliverError> {
        self.hub
            .outbox
            .record_move(&self.account, from, to)
            .await
            .map_err(unavailable)
    }

    async fn channel_of(
        &self,
        remote_id: &RemoteId,
        among: &[ChannelId],
    ) -> Result<Option<ChannelId>, DeliverError> {
        self.hub
            .store
            .channel_of(&self.account, remote_id, among)
            .await
            .map_err(unavailable)
    }

    fn reads(&self, channel: &ChannelId) -> bool {
        !self
            .hub
            .router
            .load()
            .route_inbound(&self.account, channel)
            .is_empty()
    }

    fn health(&self, health: ReceiveHealth) {
        // Becoming connected (at start, or after a reconnect) is news the
        // outbox acts on at once; a repeated report is not.
        if self.hub.health.report(&self.account, health) {
            self.hub.outbox.ready(&self.account);
        }
    }

    fn count(&self, event: &'static str) {
        self.hub
            .metrics
            .adapter_events
            .get_or_create(&crate::metrics::AdapterEventLabel {
                account: self.account.to_string(),
                event: event.to_owned(),
            })
            .inc();
    }
}
