//! Reading the feed: one [`Subscription`] per connected consumer.
//!
//! A subscription first catches up from the store (rows after its cursor),
//! then follows the live broadcast the writer publishes after each commit.
//! It subscribes to the broadcast before its first query, so nothing that
//! commits in between is missed; rows seen twice are dropped by sequence
//! number. A consumer that falls behind the broadcast goes back to the
//! store. Each consumer skips the events its own token posted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::GatewayName;
use tokio::sync::broadcast;

use super::auth::Caller;
use super::error::ApiError;
use crate::hub::Hub;
use crate::store::{FeedItem, StoreError};

/// Rows read from the store per catch-up query.
const PAGE: i64 = 500;

/// How often a streaming consumer's cursor is saved.
const SAVE_EVERY: Duration = Duration::from_millis(250);

/// Where a consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this sequence number.
    After(i64),
    /// After whatever is committed now.
    Latest,
    /// Where this consumer's stored cursor is (the beginning if none).
    Stored,
    /// Where this consumer's stored cursor is; a consumer without one
    /// starts this many events back (matterbridge's `buffer`), not at the
    /// beginning of history.
    StoredOrLast(usize),
}

impl Start {
    /// Parses `?cursor=`: a number, `latest`, or absent.
    ///
    /// # Errors
    /// 422 for anything else.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            None | Some("") => Ok(Self::Stored),
            Some("latest") => Ok(Self::Latest),
            Some(n) => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Self::After)
                .ok_or_else(|| {
                    ApiError::Invalid(format!("cursor `{n}` is not a number or `latest`"))
                }),
        }
    }
}

/// One consumer reading one or more gateways' feed.
pub struct Subscription {
    hub: Arc<Hub>,
    gateways: Vec<GatewayName>,
    own: String,
    /// Also return the events this consumer's own token posted.
    echo: bool,
    consumer: String,
    /// Read position: after the last row taken from the feed.
    cursor: i64,
    /// Delivered position: after the last row the consumer was given (the
    /// connection accepted it). This is what is saved, so a consumer that
    /// drops mid-burst resumes at what it really got.
    acked: i64,
    saved: i64,
    saved_at: Instant,
    rx: broadcast::Receiver<Arc<FeedItem>>,
    buf: VecDeque<Arc<FeedItem>>,
    live: bool,
    /// The event of the last row handed out: an event routed through
    /// several of this consumer's gateways has adjacent rows, and is handed
    /// out once.
    last_event: Option<switchboard_core::EventId>,
}

impl Subscription {
    /// Opens a subscription for `caller` (consumer name `consumer`).
    ///
    /// # Errors
    /// When the stored cursor cannot be read.
    pub async fn open(
        hub: Arc<Hub>,
        caller: &Caller,
        consumer: &str,
        gateways: Vec<GatewayName>,
        start: Start,
        echo: bool,
    ) -> Result<Self, StoreError> {
        let rx = hub.feed.subscribe();
        let own = caller.key();
        let cursor = match start {
            Start::After(n) => n,
            Start::Latest => hub.store.feed_head().await?,
            Start::Stored => hub.store.api_cursor(&own, consumer).await?.unwrap_or(0),
            Start::StoredOrLast(n) => match hub.store.api_cursor(&own, consumer).await? {
                Some(c) => c,
                None => hub.store.feed_before_last(&gateways, n).await?,
            },
        };
        Ok(Self {
            hub,
            gateways,
            own,
            echo,
            consumer: consumer.to_owned(),
            cursor,
            acked: cursor,
            saved: cursor,
            saved_at: Instant::now(),
            rx,
            buf: VecDeque::new(),
            live: false,
            last_event: None,
        })
    }

    /// The next row visible to this consumer, waiting for one if needed.
    ///
    /// # Errors
    /// When the store fails or the hub is shutting down.
    pub async fn next(&mut self) -> Result<Arc<FeedItem>, StoreError> {
        loop {
            if let Some(item) = self.take_buffered() {
                return Ok(item);
            }
            if !self.live {
                self.fill().await?;
                continue;
            }
            let mut shutdown = self.hub.shutdown.clone();
            tokio::select! {
                got = self.rx.recv() => match got {
                    Ok(item) => self.buf.push_back(item),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.live = false,
                    Err(broadcast::error::RecvError::Closed) => return Err(StoreError::WriterGone),
                },
                _ = shutdown.wait_for(|s| *s) => return Err(StoreError::WriterGone),
            }
        }
    }

    /// Rows already committed and visible, without waiting (at most `max`).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn ready(&mut self, max: usize) -> Result<Vec<Arc<FeedItem>>, StoreError> {
        let mut out = Vec::new();
        while out.len() < max {
            if let Some(item) = self.take_buffered() {
                out.push(item);
                continue;
            }
            if !self.live {
                self.fill().await?;
                if self.buf.is_empty() {
                    break;
                }
                continue;
            }
            match self.rx.try_recv() {
                Ok(item) => self.buf.push_back(item),
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.live = false,
                Err(_) => break,
            }
        }
        Ok(out)
    }

    fn take_buffered(&mut self) -> Option<Arc<FeedItem>> {
        while let Some(item) = self.buf.pop_front() {
            if item.seq <= self.cursor || !self.gateways.contains(&item.gateway) {
                continue;
            }
            self.cursor = item.seq;
            if !self.echo && item.origin_token.as_deref() == Some(self.own.as_str()) {
                continue;
            }
            if self.last_event.replace(item.event.id) == Some(item.event.id) {
                continue;
            }
            return Some(item);
        }
        None
    }

    async fn fill(&mut self) -> Result<(), StoreError> {
        let rows = self
            .hub
            .store
            .feed_after(self.cursor, &self.gateways, PAGE)
            .await?;
        if (rows.len() as i64) < PAGE {
            // Caught up: everything newer arrives on the broadcast, which
            // was subscribed before this query.
            self.live = true;
        }
        self.buf.extend(rows.into_iter().map(Arc::new));
        Ok(())
    }

    /// The read position: after the last row taken from the feed.
    #[must_use]
    pub fn position(&self) -> i64 {
        self.cursor
    }

    /// Marks everything taken so far as delivered to the consumer.
    pub fn ack(&mut self) {
        self.acked = self.cursor;
    }

    /// Marks everything up to `seq` as delivered, as the client says; false
    /// when `seq` is beyond what was handed out (or behind what was).
    pub fn ack_to(&mut self, seq: i64) -> bool {
        if seq > self.cursor || seq < self.acked {
            return false;
        }
        self.acked = seq;
        true
    }

    /// Saves the delivered position if it moved and enough time passed
    /// (or `force`).
    pub async fn save(&mut self, force: bool) {
        if self.acked != self.saved && (force || self.saved_at.elapsed() >= SAVE_EVERY) {
            self.hub
                .writer
                .cursor(self.own.clone(), self.consumer.clone(), self.acked, false)
                .await;
            self.saved = self.acked;
            self.saved_at = Instant::now();
        }
    }
}

impl Drop for Subscription {
    /// A consumer that disconnects keeps its position: the last stretch of
    /// the cursor not yet saved is written in the background.
    fn drop(&mut self) {
        if self.acked == self.saved {
            return;
        }
        let (writer, own, consumer, seq) = (
            self.hub.writer.clone(),
            std::mem::take(&mut self.own),
            std::mem::take(&mut self.consumer),
            self.acked,
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { writer.cursor(own, consumer, seq, false).await });
        }
    }
}

/// The gateways `caller` may read, narrowed to `wanted` when given.
///
/// # Errors
/// 404 for an unknown gateway, 403 for one the token may not read.
pub fn readable(
    hub: &Hub,
    caller: &Caller,
    wanted: Option<&str>,
) -> Result<Vec<GatewayName>, ApiError> {
    match wanted.filter(|w| !w.is_empty()) {
        Some(list) => list
            .split(',')
            .map(|g| {
                let gw =
                    GatewayName::new(g.trim()).map_err(|e| ApiError::Invalid(e.to_string()))?;
                check_readable(hub, caller, &gw)?;
                Ok(gw)
            })
            .collect(),
        None => {
            let all: Vec<GatewayName> = hub
                .router
                .load()
                .gateways()
                .iter()
                .filter(|g| check_readable(hub, caller, &g.name).is_ok())
                .map(|g| g.name.clone())
                .collect();
            if all.is_empty() && !caller.token.scopes.read {
                return Err(ApiError::Forbidden(format!(
                    "token `{}` lacks the read scope",
                    caller.token.name
                )));
            }
            Ok(all)
        }
    }
}

/// Checks that `caller` may read gateway `gw`.
///
/// # Errors
/// 404 for an unknown gateway or one the account is not an output member
/// of, 403 for a token without access.
pub fn check_readable(hub: &Hub, caller: &Caller, gw: &GatewayName) -> Result<(), ApiError> {
    match hub.router.load().membership(gw, &caller.account) {
        Some(d) if d.writes() => caller.can_read(gw),
        Some(_) => Err(ApiError::Forbidden(format!(
            "{} is an `in` member of gateway `{gw}`: it may post but not read",
            caller.account
        ))),
        None => Err(ApiError::NotFound(format!(
            "no gateway `{gw}` for {}",
            caller.account
        ))),
    }
}
