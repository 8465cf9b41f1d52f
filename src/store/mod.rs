//! The store: events, the API feed, the message map, the outbox, blobs and
//! cursors, on SQLite (default, WAL) or PostgreSQL through sqlx.
//!
//! # Layout
//! - this file: [`Store`], opening and migrating, and every read.
//! - [`writer`]: the single writer task. Every write goes through it, so
//!   writes are group-committed (one transaction for whatever queued up while
//!   the previous one committed) and feed sequence numbers are assigned in
//!   commit order, which is what makes consumer cursors safe.
//! - [`retention`]: what is deleted when, and the background task that
//!   prunes old history through the writer.
//! - [`blobs`]: attachment bytes, large ones written and read a chunk at
//!   a time.
//! - [`dead_letters`]: dead letters an admin lists, requeues or drops, and
//!   the per-destination queue figures.
//! - `backfill`: the one-time pass at start that fills what a migration
//!   added for events stored before it.
//! - [`sqlite`] and [`postgres`]: what differs per backend, and only that
//!   (SQLite's pragmas, checkpoints and lock file; PostgreSQL's session
//!   settings, advisory locks, notifications and the lease table of a
//!   cluster). The backend is the URL's scheme ([`Backend::of_url`]).
//!
//! Queries are written once with `$n` parameters in order, which both
//! SQLite and PostgreSQL accept, and run through sqlx's `Any` driver.

mod backfill;
pub mod blobs;
pub mod dead_letters;
pub mod postgres;
pub mod retention;
pub mod sqlite;
pub mod writer;

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Row};
use switchboard_core::{
    AccountId, Avatar, ChannelId, Event, EventId, EventKind, GatewayName, NewEvent, RemoteId,
};

pub use writer::{
    Dest, IngestBatch, IngestItem, IngestOutcome, RowUpdate, StateChange, WriteCmd, WriterHandle,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A storage failure, classified once so callers know whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot take reads or writes right now (unreachable,
    /// disk full, locked, restarting). Nothing was written; retry later and
    /// do not acknowledge upstream.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused this particular write or read (a constraint, a
    /// value it cannot store). Retrying the same thing will not help.
    #[error("the database refused the request: {0}")]
    Rejected(String),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer task is gone (shutting down).
    #[error("the store writer has stopped")]
    WriterGone,
    /// Another switchboard uses this database in a way this one cannot
    /// join (the message says who and what to do).
    #[error("{0}")]
    InUse(String),
    /// A write of a lease holder that no longer holds its lease (another
    /// instance took it over): refused, nothing of it was written.
    #[error("refused: this instance no longer holds the lease of {0}")]
    Fenced(String),
}

impl StoreError {
    /// Whether the same request may succeed later (the database came back).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::WriterGone)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let text = describe(&e);
        if unavailable(&e) {
            Self::Unavailable(text)
        } else {
            Self::Rejected(text)
        }
    }
}

/// Whether a database error is about the database (gone, full, locked)
/// rather than about the request. SQLite reports numeric result codes,
/// PostgreSQL five-character SQLSTATEs.
pub(crate) fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let Some(code) = d.code() else { return false };
            // PostgreSQL's SQLSTATEs can be all digits (22021, a byte
            // sequence it cannot store): only SQLite's codes are numbers.
            let postgres = d
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some();
            if let (false, Ok(n)) = (postgres, code.parse::<i64>()) {
                return sqlite_unavailable(n);
            }
            // SQLSTATE classes: connection exception, insufficient
            // resources (disk full), operator intervention (shutdown),
            // system error, transaction rollback (serialization, deadlock),
            // and a read-only transaction (a standby).
            ["08", "53", "57", "58", "40"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "25006"
        }
        sqlx::Error::Configuration(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound
        | sqlx::Error::Encode(_) => false,
        // Io, Tls, Protocol, PoolTimedOut, PoolClosed, WorkerCrashed and
        // anything newer: the connection, not the request.
        _ => true,
    }
}

/// Whether a SQLite result code is about the database rather than the
/// request: the primary codes BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL,
/// CANTOPEN and PROTOCOL.
fn sqlite_unavailable(code: i64) -> bool {
    matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15)
}

/// The writer's own SQLite connection's errors, judged as sqlx's are.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, message) => {
                let text = message.clone().unwrap_or_else(|| f.to_string());
                if sqlite_unavailable(i64::from(f.extended_code)) {
                    Self::Unavailable(text)
                } else {
                    Self::Rejected(text)
                }
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::Utf8Error(_) => Self::Corrupt(e.to_string()),
            other => Self::Rejected(other.to_string()),
        }
    }
}

/// A database error as an operator wants to read it: "database or disk is
/// full", "connection refused (127.0.0.1:5432)", never a query.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::PoolTimedOut => "no database connection could be had in time".to_owned(),
        sqlx::Error::PoolClosed => "the connection pool is closed".to_owned(),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let more = s.to_string();
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                source = s.source();
            }
            text
        }
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend a database URL names by its scheme (`sqlite:`,
    /// `postgres:` or `postgresql:`): said, never guessed.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] for any other scheme.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(StoreError::Rejected(
                "the database URL must start with sqlite:// or postgres://".into(),
            )),
        }
    }
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

/// An outbox row that cannot be decoded: the lane dead-letters it.
#[derive(Debug, Clone)]
pub struct PoisonRow {
    /// Row id.
    pub id: i64,
    /// What is wrong with it.
    pub reason: String,
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
    /// SQLite's WAL length, shared by the background checkpointer (which
    /// measures it) and the writer (which resets it); see `sqlite`.
    wal: Arc<WalSize>,
    /// A random id of this database, made when it was created: generated
    /// delivery keys carry it, so a receiver that deduplicates never takes a
    /// new database's first messages for repeats of an old one's.
    id: Arc<str>,
    /// This instance's name when it is one of a cluster (see
    /// `crate::cluster`): the writer orders the feed across instances and
    /// tells the others what it committed.
    cluster: Option<Arc<str>>,
    /// For a SQLite file: how the writer opens its own connection (see
    /// `writer::exec`).
    own_writer: Option<sqlite::OwnConnection>,
}

/// What the checkpointers know of SQLite's write-ahead log.
#[derive(Debug, Default)]
pub struct WalSize {
    /// Held by the writer for each transaction, and by the idle WAL
    /// truncation, which only runs when it gets it at once (see
    /// `sqlite::truncate_wal`).
    pub gate: tokio::sync::Mutex<()>,
    /// Frames (pages) in the log at the last checkpoint.
    pub frames: std::sync::atomic::AtomicI64,
    /// Checkpoints the writer ran itself.
    pub writer_checkpoints: std::sync::atomic::AtomicU64,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Pool size for readers (the writer holds one of them).
    pub max_connections: u32,
    /// SQLite only: the database file may not grow past this many bytes;
    /// writes beyond it fail as "database or disk is full" (503) until
    /// space is freed.
    pub max_size: Option<u64>,
    /// Apply migrations (`run`); `status` only reads what is there.
    pub migrate: bool,
    /// When a commit counts as done.
    pub durability: Durability,
    /// This instance's name, when it is one of a cluster on PostgreSQL.
    pub cluster: Option<String>,
}

/// When a commit counts as done, and so when switchboard acknowledges what
/// it received (`database.durability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// On disk: every commit is fsync'd before it is acknowledged (SQLite
    /// `synchronous = FULL`, PostgreSQL's default). Survives the machine
    /// losing power.
    #[default]
    Fsync,
    /// Handed to the operating system (SQLite `synchronous = NORMAL` in
    /// WAL mode; PostgreSQL `synchronous_commit = off` for switchboard's
    /// sessions). Survives switchboard being killed (kill -9, a crash);
    /// the last commits before a power loss or a kernel crash may be lost
    /// (and, as they were acknowledged, not fetched again).
    Process,
}

impl OpenOptions {
    /// A pool of `max_connections`, migrated, no size limit.
    #[must_use]
    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            max_size: None,
            migrate: true,
            durability: Durability::Fsync,
            cluster: None,
        }
    }
}

/// How long a request waits for a pooled connection (and, with PostgreSQL
/// down, for a new one) before it fails as unavailable: API requests answer
/// 503 after this instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::open_with(url, &OpenOptions::new(max_connections)).await
    }

    /// Opens with explicit options.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn open_with(url: &str, options: &OpenOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite::prepare_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let opts = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        // One plain connection first: the pool would retry until its
        // timeout and then only say that it timed out, where this says
        // "connection refused" and where.
        match <sqlx::AnyConnection as sqlx::Connection>::connect_with(&opts).await {
            Ok(conn) => {
                let _ = sqlx::Connection::close(conn).await;
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to {}: {}",
                    where_is(&url),
                    describe(&e)
                )))
            }
        }
        let max_size = options.max_size;
        let durability = options.durability;
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            sqlite::prepare_connection(conn, durability, max_size).await
                        }
                        Backend::Postgres => postgres::prepare_connection(conn, durability).await,
                    }
                })
            })
            .connect_with(opts)
            .await?;
        if options.migrate {
            match backend {
                Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
                Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
            }
            sqlx::query(
                "INSERT INTO cursors (account, name, value) VALUES ('switchboard', 'database_id', $1) \
                 ON CONFLICT (account, name) DO NOTHING",
            )
            .bind(format!("{:08x}", rand::random::<u32>()))
            .execute(&pool)
            .await?;
            backfill::run(&pool).await?;
        }
        let id: Option<String> = sqlx::query_scalar(
            "SELECT value FROM cursors WHERE account = 'switchboard' AND name = 'database_id'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
        Ok(Self {
            pool,
            backend,
            wal: Arc::default(),
            id: id.unwrap_or_default().into(),
            cluster: options
                .cluster
                .as_deref()
                .filter(|_| backend == Backend::Postgres)
                .map(Arc::from),
            own_writer: match backend {
                Backend::Sqlite => sqlite::OwnConnection::of(&url, durability, max_size),
                Backend::Postgres => None,
            },
        })
    }

    /// For SQLite: keeps the write-ahead log bounded in the background
    /// until `shutdown` is true (see [`sqlite`]); nothing for PostgreSQL.
    pub fn spawn_checkpointer(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.backend == Backend::Sqlite {
            sqlite::spawn_checkpointer(self.pool.clone(), self.wal.clone(), shutdown);
        }
    }

    /// This database's random id (see the field).
    #[must_use]
    pub fn database_id(&self) -> &str {
        &self.id
    }

    /// This instance's name when it is one of a cluster.
    #[must_use]
    pub fn cluster_instance(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// How the writer opens a SQLite connection of its own; `None` when
    /// it uses the pool's (PostgreSQL, SQLite in memory).
    pub(crate) fn own_writer(&self) -> Option<&sqlite::OwnConnection> {
        self.own_writer.as_ref()
    }

    /// Which database this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn wal_size(&self) -> Arc<WalSize> {
        self.wal.clone()
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
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.try_get(0)?;
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
                // A consumer must not stall behind one bad row: skip it.
                Err(e) => {
                    tracing::warn!(seq, error = %e, "Feed row skipped: it cannot be decoded.")
                }
            }
        }
        Ok(items)
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

    /// The feed position `n` rows before the newest row of `gateways` (0
    /// when there are fewer): where a consumer starts that may see at most
    /// the last `n` events.
    ///
    /// # Errors
    /// On database failure.
    pub async fn feed_before_last(
        &self,
        gateways: &[GatewayName],
        n: usize,
    ) -> Result<i64, StoreError> {
        if gateways.is_empty() {
            return self.feed_head().await;
        }
        let marks: Vec<String> = (0..gateways.len()).map(|i| format!("${}", i + 1)).collect();
        let sql = format!(
            "SELECT seq FROM feed WHERE gateway IN ({}) ORDER BY seq DESC LIMIT 1 OFFSET ${}",
            marks.join(", "),
            gateways.len() + 1
        );
        let mut q = sqlx::query(&sql);
        for g in gateways {
            q = q.bind(g.as_str());
        }
        let row = q
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
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

    /// Whether the bot API token `token` (its key, as events store it in
    /// `origin_token`) has added the reaction `emoji` to message `target`.
    /// Variation selectors (U+FE0F) do not count: networks differ on them.
    ///
    /// # Errors
    /// On database failure.
    pub async fn reacted(
        &self,
        target: EventId,
        token: &str,
        emoji: &str,
    ) -> Result<bool, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM events WHERE target_id = $1 AND kind = 'reaction' AND origin_token = $2",
        )
        .bind(target.0)
        .bind(token)
        .fetch_all(&self.pool)
        .await?;
        let bare = |s: &str| s.replace('\u{FE0F}', "");
        for row in rows {
            let body: String = row.try_get(0)?;
            if let Ok(NewEvent {
                kind:
                    EventKind::Reaction {
                        emoji: e,
                        removed: false,
                        ..
                    },
                ..
            }) = serde_json::from_str::<NewEvent>(&body)
            {
                if bare(&e) == bare(emoji) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Pending outbox rows of one destination channel after row `after`.
    /// A row whose stored event cannot be decoded (written by a newer
    /// version, or damaged) comes back as a [`PoisonRow`] so the lane can
    /// dead-letter it and go on, instead of failing the whole read.
    ///
    /// # Errors
    /// On database failure.
    pub async fn pending(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Result<PendingRow, PoisonRow>>, StoreError> {
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
                let id: i64 = r.try_get(0)?;
                let decoded = (|| {
                    let gateway: String = r.try_get(1)?;
                    Ok::<_, StoreError>(PendingRow {
                        id,
                        gateway: GatewayName::new(gateway)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        attempts: r.try_get(2)?,
                        parts_sent: r.try_get(3)?,
                        idempotency_key: r.try_get(4)?,
                        created_ms: r.try_get(5)?,
                        event: decode_event(r.try_get(6)?, &r.try_get::<String, _>(7)?)?,
                    })
                })();
                Ok(decoded.map_err(|e| PoisonRow {
                    id,
                    reason: e.to_string(),
                }))
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

    /// Every id a destination knows event `id` by, first part first: the
    /// ids it gave when we delivered it, or the original id if the event
    /// came from there. Empty when it never got the event.
    ///
    /// # Errors
    /// On database failure.
    pub async fn remote_ids_at(
        &self,
        id: EventId,
        account: &AccountId,
        channel: &ChannelId,
    ) -> Result<Vec<RemoteId>, StoreError> {
        let rows = sqlx::query(
            "SELECT 0, remote_id FROM message_map WHERE event_id = $1 AND account = $2 AND channel = $3 \
             UNION ALL SELECT part, remote_id FROM message_parts WHERE event_id = $4 AND account = $5 AND channel = $6 \
             UNION ALL SELECT 0, message_id FROM events WHERE id = $7 AND account = $8 AND channel = $9 \
             AND message_id IS NOT NULL \
             ORDER BY 1",
        )
        .bind(id.0)
        .bind(account.to_string())
        .bind(channel.as_str())
        .bind(id.0)
        .bind(account.to_string())
        .bind(channel.as_str())
        .bind(id.0)
        .bind(account.to_string())
        .bind(channel.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                RemoteId::new(r.try_get::<String, _>(1)?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Which of `among` (channels of `account`) holds a message known there
    /// as `remote`: one it came from, or one the hub delivered there.
    ///
    /// # Errors
    /// On database failure.
    pub async fn channel_of(
        &self,
        account: &AccountId,
        remote: &RemoteId,
        among: &[ChannelId],
    ) -> Result<Option<ChannelId>, StoreError> {
        // A few channels at most (a chat and its bridged topics): one small
        // indexed query each keeps the SQL the same on both backends.
        for channel in among {
            let row = sqlx::query(
                "SELECT 1 FROM events WHERE account = $1 AND channel = $2 AND message_id = $3 \
                 UNION ALL SELECT 1 FROM message_map WHERE account = $4 AND channel = $5 AND remote_id = $6 \
                 UNION ALL SELECT 1 FROM message_parts WHERE account = $7 AND channel = $8 AND remote_id = $9",
            )
            .bind(account.to_string())
            .bind(channel.as_str())
            .bind(remote.as_str())
            .bind(account.to_string())
            .bind(channel.as_str())
            .bind(remote.as_str())
            .bind(account.to_string())
            .bind(channel.as_str())
            .bind(remote.as_str())
            .fetch_optional(&self.pool)
            .await?;
            if row.is_some() {
                return Ok(Some(channel.clone()));
            }
        }
        Ok(None)
    }

    /// The gateways whose feed carries an event using this blob (as an
    /// attachment or as its author's avatar), found through `blob_refs`.
    /// Empty once those feed rows were pruned.
    ///
    /// # Errors
    /// On database failure.
    pub async fn blob_gateways(&self, sha256: &str) -> Result<Vec<GatewayName>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT f.gateway FROM blob_refs r JOIN feed f ON f.event_id = r.event_id \
             WHERE r.sha256 = $1",
        )
        .bind(sha256)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                GatewayName::new(r.try_get::<String, _>(0)?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Moves a channel's queue and message map to its new id, and records
    /// the move, in one transaction. It bypasses the writer task: it
    /// assigns no feed sequence numbers, so commit order is untouched.
    ///
    /// # Errors
    /// On database failure.
    pub async fn move_channel(
        &self,
        account: &AccountId,
        from: &ChannelId,
        to: &ChannelId,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let a = account.to_string();
        sqlx::query(
            "INSERT INTO channel_moves (account, from_channel, to_channel, moved_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, from_channel) DO UPDATE SET to_channel = excluded.to_channel",
        )
        .bind(a.as_str())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for table in ["message_map", "message_parts"] {
            sqlx::query(&format!(
                "UPDATE {table} SET channel = $1 WHERE account = $2 AND channel = $3"
            ))
            .bind(to.as_str())
            .bind(a.as_str())
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE outbox SET channel = $1 WHERE account = $2 AND channel = $3 AND state = 'pending'",
        )
        .bind(to.as_str())
        .bind(a.as_str())
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every recorded channel move, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn channel_moves(
        &self,
    ) -> Result<Vec<(AccountId, ChannelId, ChannelId)>, StoreError> {
        let rows = sqlx::query(
            "SELECT account, from_channel, to_channel FROM channel_moves ORDER BY moved_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let bad = |e: switchboard_core::ParseIdError| StoreError::Corrupt(e.to_string());
                Ok((
                    r.try_get::<String, _>(0)?.parse().map_err(bad)?,
                    ChannelId::new(r.try_get::<String, _>(1)?).map_err(bad)?,
                    ChannelId::new(r.try_get::<String, _>(2)?).map_err(bad)?,
                ))
            })
            .collect()
    }

    /// A network cursor an adapter saved with its events.
    ///
    /// # Errors
    /// On database failure.
    pub async fn net_cursor(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM cursors WHERE account = $1 AND name = $2")
            .bind(account.to_string())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// A value from an account's key-value space.
    ///
    /// # Errors
    /// On database failure.
    pub async fn adapter_state(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM adapter_state WHERE account = $1 AND key = $2")
            .bind(account.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    /// Every account's keys that start with `prefix` (exactly, case
    /// included), as (account, key, value).
    ///
    /// # Errors
    /// On database failure.
    pub async fn adapter_states(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        // Compared exactly, not with LIKE: SQLite's LIKE ignores case and
        // PostgreSQL's does not, and `_` in a key would be a wildcard.
        let rows = sqlx::query(
            "SELECT account, key, value FROM adapter_state \
             WHERE substr(key, 1, length(CAST($1 AS TEXT))) = CAST($1 AS TEXT) ORDER BY account, key",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
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
                  AND o2.state IN ('pending', 'dead') AND o2.last_error IS NOT NULL \
                  ORDER BY o2.updated_ms DESC LIMIT 1) \
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

/// Where a database URL points, without its credentials: `host:port/db`
/// or the SQLite file.
#[must_use]
pub fn where_is(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        return path.split('?').next().unwrap_or(path).to_owned();
    }
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "the configured database".to_owned(),
    }
}

/// The blobs an event uses, each once: its attachments and its author's
/// avatar when the hub stored it. What `blob_refs` records.
pub(crate) fn blobs_used(event: &NewEvent) -> Vec<&str> {
    let mut shas: Vec<&str> = Vec::new();
    if let EventKind::Message { attachments, .. } = &event.kind {
        shas.extend(
            attachments
                .iter()
                .flat_map(switchboard_core::Attachment::with_alt)
                .map(|a| a.content.sha256.as_str()),
        );
    }
    if let Some(Avatar::Blob(b)) = &event.author.avatar {
        shas.push(b.sha256.as_str());
    }
    shas.sort_unstable();
    shas.dedup();
    shas
}

/// Decodes a stored event body.
pub(crate) fn decode_event(id: i64, body: &str) -> Result<Event, StoreError> {
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
