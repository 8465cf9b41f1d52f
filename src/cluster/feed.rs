//! The feed pump: in a cluster, live consumers get the feed as the store
//! has it, in sequence order, whoever committed it.
//!
//! Alone, the writer hands each commit's feed rows to live consumers
//! itself. In a cluster another instance commits rows too, and a consumer
//! that took this instance's row `n + 1` before the other's row `n` arrived
//! would pass `n` for good. So here the writer only wakes the pump, as do
//! the other instances' notifications (and a timer, for one that was
//! lost); the pump reads `seq > last` from the store, in order, and
//! publishes what it read. The writer hands out sequence numbers in commit
//! order across instances (`store::writer`'s cluster step), so a read never
//! passes a row that commits later: the broadcast carries the feed without
//! gaps, and a consumer connected to any instance reads every row once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::Row;
use switchboard_core::GatewayName;
use tokio::sync::{broadcast, watch};

use super::Cluster;
use crate::store::{decode_event, FeedItem, Store, StoreError};

/// Rows read per query.
const PAGE: i64 = 500;

/// How long the pump waits without being woken before it looks anyway.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Starts the pump after what is committed now.
///
/// # Errors
/// When the store cannot be read.
pub async fn spawn(
    cluster: Arc<Cluster>,
    store: Store,
    feed: broadcast::Sender<Arc<FeedItem>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let mut last = store.feed_head().await?;
    Ok(tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::select! {
                () = cluster.feed_wake.notified() => {}
                () = tokio::time::sleep(LOOK_EVERY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            loop {
                match page(&store, last).await {
                    Ok((items, scanned)) => {
                        failing = false;
                        for item in items {
                            // Nobody streaming is fine.
                            let _ = feed.send(Arc::new(item));
                        }
                        match scanned {
                            Some(seq) => last = seq,
                            None => break,
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "Cannot read the feed for live consumers; retrying.");
                            failing = true;
                        }
                        break;
                    }
                }
            }
        }
    }))
}

/// The feed rows after `after`, oldest first, and the last sequence number
/// read (`None` when there was nothing); a row that cannot be decoded is
/// skipped (logged) but read past.
async fn page(store: &Store, after: i64) -> Result<(Vec<FeedItem>, Option<i64>), StoreError> {
    let rows = sqlx::query(
        "SELECT f.seq, f.gateway, f.origin_token, e.id, e.body FROM feed f \
         JOIN events e ON e.id = f.event_id WHERE f.seq > $1 ORDER BY f.seq LIMIT $2",
    )
    .bind(after)
    .bind(PAGE)
    .fetch_all(store.pool())
    .await?;
    let mut last = None;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: i64 = r.try_get(0)?;
        last = Some(seq);
        let decoded = (|| {
            let gateway: String = r.try_get(1)?;
            Ok::<_, StoreError>(FeedItem {
                seq,
                gateway: GatewayName::new(gateway)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                origin_token: r.try_get(2)?,
                event: Arc::new(decode_event(r.try_get(3)?, &r.try_get::<String, _>(4)?)?),
                native: OnceLock::new(),
            })
        })();
        match decoded {
            Ok(item) => items.push(item),
            Err(e) => tracing::warn!(seq, error = %e, "Feed row skipped: it cannot be decoded."),
        }
    }
    Ok((items, last))
}
