//! The store: events, the API feed, the message map, the outbox, blobs and
//! cursors, on SQLite (default, WAL) or PostgreSQL through sqlx.
//!
//! # Layout
//! - this file: [`Store`], opening and migrating, and every read.
//! - [`writer`]: the single writer task. Every write goes through it, so
//!   writes are group-committed (one transaction for whatever queued up while
//!   the previous one committed) and feed sequence numbers are assigned in
//!   commit order, which is what makes consumer cursors safe.
//!
//! Queries are written once with `$n` parameters in order, which both
//! SQLite and PostgreSQL accept, and run through sqlx's `Any` driver.

pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Row};
use switchboard_core::{AccountId, ChannelId, Event, EventId, GatewayName, NewEvent, RemoteId};

pub use writer::{Dest, IngestItem, IngestOutcome, RowUpdate, WriteCmd, WriterHandle};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A storage failure. Every store error is worth retrying: the database
/// may be busy or restarting; the caller does not acknowledge upstream.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database rejected or failed a query.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer task is gone (shutting down).
    #[error("the store writer has stopped")]
    WriterGone,
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// One event as API consumers read it: a feed row with its event.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// The consumer cursor value of this row.
    pub seq: i64,
    /// The gateway it was routed through.
    pub gateway: GatewayName,
    /// The API token that posted it, as `<account>/<token>`, if any.
    pub origin_token: Option<String>,
    /// The event.
    pub event: Arc<Event>,
    /// Its native JSON, rendered once for every consumer that reads this
    /// row from the live broadcast.
    pub native: OnceLock<String>,
}

/// An outbox row waiting for delivery, with its event.
#[derive(Debug, Clone)]
pub struct PendingRow {
    /// Row id.
    pub id: i64,
    /// The gateway that routed it.
    pub gateway: GatewayName,
    /// Attempts so far.
    pub attempts: i64,
    /// Pieces of a split message already accepted.
    pub parts_sent: i64,
    /// Fixed at enqueue time.
    pub idempotency_key: String,
    /// When it was enqueued (unix ms).
    pub created_ms: i64,
    /// The event to deliver.
    pub event: Event,
}

/// Queue figures for one destination account.
#[derive(Debug, Clone)]
pub struct AccountQueue {
    /// The account.
    pub account: String,
    /// Rows waiting.
    pub pending: i64,
    /// Dead letters.
    pub dead: i64,
    /// The most recent failure, if any row has one.
    pub last_error: Option<String>,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Corrupt(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let opts = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer;
                        // FULL makes every commit durable before we ack.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 10000",
                            // Checkpoints run from a background task
                            // (`spawn_checkpointer`), not inside the
                            // writer's commits, where they stall posts.
                            "PRAGMA wal_autocheckpoint = 0",
                            // Multi-row inserts with ON CONFLICT need a
                            // statement journal: keep it in memory, not in a
                            // temp file created and unlinked per statement.
                            "PRAGMA temp_store = MEMORY",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self { pool, backend })
    }

    /// For SQLite: copies the WAL back into the database every second,
    /// without blocking the writer (`PASSIVE`), until `shutdown` is true.
    pub fn spawn_checkpointer(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(error = %e, "WAL checkpoint failed.");
                }
            }
        });
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Feed rows after `seq` in the given gateways, oldest first.
    ///
    /// # Errors
    /// On database failure or an undecodable row.
    pub async fn feed_after(
        &self,
        seq: i64,
        gateways: &[GatewayName],
        limit: i64,
    ) -> Result<Vec<FeedItem>, StoreError> {
        if gateways.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..gateways.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT f.seq, f.gateway, f.origin_token, e.id, e.body FROM feed f \
             JOIN events e ON e.id = f.event_id \
             WHERE f.seq > $1 AND f.gateway IN ({}) ORDER BY f.seq LIMIT ${}",
            marks.join(", "),
            gateways.len() + 2
        );
        let mut q = sqlx::query(&sql).bind(seq);
        for g in gateways {
            q = q.bind(g.as_str());
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let gateway: String = r.try_get(1)?;
                Ok(FeedItem {
                    seq: r.try_get(0)?,
                    gateway: GatewayName::new(gateway)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    origin_token: r.try_get(2)?,
                    event: Arc::new(decode_event(r.try_get(3)?, &r.try_get::<String, _>(4)?)?),
                    native: OnceLock::new(),
                })
            })
            .collect()
    }

    /// The newest feed sequence number (0 when empty).
    ///
    /// # Errors
    /// On database failure.
    pub async fn feed_head(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM feed")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// One event by id.
    ///
    /// # Errors
    /// On database failure or an undecodable row.
    pub async fn event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query("SELECT body FROM events WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode_event(id.0, &r.try_get::<String, _>(0)?))
            .transpose()
    }

    /// If `gateway`'s feed carries event `id`, the token that posted it
    /// (`Some(None)` for events from networks). The API only lets a bot
    /// refer to what its gateway saw, and edit or delete only its own posts.
    ///
    /// # Errors
    /// On database failure.
    pub async fn event_in_gateway(
        &self,
        id: EventId,
        gateway: &GatewayName,
    ) -> Result<Option<Option<String>>, StoreError> {
        let row = sqlx::query(
            "SELECT e.origin_token FROM feed f JOIN events e ON e.id = f.event_id \
             WHERE f.event_id = $1 AND f.gateway = $2 LIMIT 1",
        )
        .bind(id.0)
        .bind(gateway.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Pending outbox rows of one destination channel after row `after`.
    ///
    /// # Errors
    /// On database failure or an undecodable row.
    pub async fn pending(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PendingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.gateway, o.attempts, o.parts_sent, o.idempotency_key, o.created_ms, \
             e.id, e.body FROM outbox o JOIN events e ON e.id = o.event_id \
             WHERE o.account = $1 AND o.channel = $2 AND o.state = 'pending' AND o.id > $3 \
             ORDER BY o.id LIMIT $4",
        )
        .bind(account.to_string())
        .bind(channel.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let gateway: String = r.try_get(1)?;
                Ok(PendingRow {
                    id: r.try_get(0)?,
                    gateway: GatewayName::new(gateway)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    attempts: r.try_get(2)?,
                    parts_sent: r.try_get(3)?,
                    idempotency_key: r.try_get(4)?,
                    created_ms: r.try_get(5)?,
                    event: decode_event(r.try_get(6)?, &r.try_get::<String, _>(7)?)?,
                })
            })
            .collect()
    }

    /// Every destination channel with pending rows.
    ///
    /// # Errors
    /// On database failure.
    pub async fn lanes_with_pending(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT DISTINCT account, channel FROM outbox WHERE state = 'pending'")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The id a destination knows event `id` by: the id it gave when we
    /// delivered it, or the original id if the event came from there.
    ///
    /// # Errors
    /// On database failure.
    pub async fn remote_id_at(
        &self,
        id: EventId,
        account: &AccountId,
        channel: &ChannelId,
    ) -> Result<Option<RemoteId>, StoreError> {
        let row = sqlx::query(
            "SELECT remote_id FROM message_map WHERE event_id = $1 AND account = $2 AND channel = $3 \
             UNION ALL SELECT remote_id FROM events WHERE id = $4 AND account = $5 AND channel = $6",
        )
        .bind(id.0)
        .bind(account.to_string())
        .bind(channel.as_str())
        .bind(id.0)
        .bind(account.to_string())
        .bind(channel.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            RemoteId::new(r.try_get::<String, _>(0)?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// A stored blob's MIME type and bytes.
    ///
    /// # Errors
    /// On database failure.
    pub async fn blob(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let row = sqlx::query("SELECT mime, data FROM blobs WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// The gateways whose feed carries a message with this attachment.
    /// (A scan of the event bodies: blob downloads are rare.)
    ///
    /// # Errors
    /// On database failure.
    pub async fn blob_gateways(&self, sha256: &str) -> Result<Vec<GatewayName>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT f.gateway FROM events e JOIN feed f ON f.event_id = e.id \
             WHERE e.kind = 'message' AND e.body LIKE $1",
        )
        .bind(format!("%\"sha256\":\"{sha256}\"%"))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                GatewayName::new(r.try_get::<String, _>(0)?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// A consumer's stored feed cursor.
    ///
    /// # Errors
    /// On database failure.
    pub async fn api_cursor(&self, token: &str, consumer: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT seq FROM api_cursors WHERE token = $1 AND consumer = $2")
            .bind(token)
            .bind(consumer)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Pending and dead rows per destination account, with the last error.
    ///
    /// # Errors
    /// On database failure.
    pub async fn queues(&self) -> Result<Vec<AccountQueue>, StoreError> {
        let rows = sqlx::query(
            "SELECT account, \
               SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), \
               SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), \
               (SELECT o2.last_error FROM outbox o2 WHERE o2.account = o.account \
                  AND o2.last_error IS NOT NULL ORDER BY o2.updated_ms DESC LIMIT 1) \
             FROM outbox o GROUP BY account ORDER BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountQueue {
                    account: r.try_get(0)?,
                    pending: r.try_get(1)?,
                    dead: r.try_get(2)?,
                    last_error: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Decodes a stored event body.
fn decode_event(id: i64, body: &str) -> Result<Event, StoreError> {
    let new: NewEvent =
        serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))?;
    Ok(Event::from_new(EventId(id), new))
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}
