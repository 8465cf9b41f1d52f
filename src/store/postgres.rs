//! PostgreSQL's own parts of the store, in one place: session settings,
//! the advisory lock that says who uses a database (one instance, or the
//! members of a cluster), the lock that orders feed sequence numbers by
//! commit, notifications between instances, and the lease table's SQL
//! (`FOR UPDATE SKIP LOCKED`, fencing checks). The SQLite counterparts are
//! in [`super::sqlite`]; everything else in the store is written once for
//! both. What the cluster does with these is in `crate::cluster`, and why
//! in docs/scaling.md.
//!
//! Time in the lease and instance tables is the database's own clock
//! ([`NOW_MS`]), so instances whose clocks differ still agree on who holds
//! what.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Row};

use super::writer::exec::{stmt, Tx};
use tokio::sync::oneshot;

use super::{describe, where_is, Durability, StoreError};

/// Milliseconds since the epoch on the database's clock.
pub const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The advisory lock a running instance holds for as long as it runs:
/// exclusively without `[cluster]`, shared by the members of a cluster.
/// So a second lone instance, a lone instance beside a cluster, and a
/// cluster member beside a lone instance are all refused.
const INSTANCE_LOCK: i64 = 0x5357_0001;

/// The transaction-level advisory lock under which feed rows get their
/// sequence numbers in a cluster: held from the feed insert to the commit,
/// so numbers are handed out in commit order (see `crate::cluster`).
const FEED_LOCK: i64 = 0x5357_0002;

/// What every pooled connection runs first.
pub(super) async fn prepare_connection(
    conn: &mut AnyConnection,
    durability: Durability,
) -> Result<(), sqlx::Error> {
    if durability == Durability::Process {
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `url` with `application_name` set (unless it has one), so
/// `pg_stat_activity` and the messages below say which instance a
/// connection belongs to.
#[must_use]
pub fn with_application_name(url: &str, name: &str) -> String {
    if url.contains("application_name=") {
        return url.to_owned();
    }
    let value: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name=switchboard-{value}")
}

/// How an instance uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// The only instance (no `[cluster]`): the lock is exclusive.
    Alone,
    /// A member of a cluster: the lock is shared with the other members.
    Member,
}

/// The instance lock, held on a connection of its own for as long as the
/// process runs (see [`INSTANCE_LOCK`]). A task keeps the connection
/// alive; if the database drops it (a restart), the task connects again and
/// takes the lock back. The lock goes with the connection when the process
/// dies.
pub struct InstanceLock {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a start waits for the lock of a process that was just killed:
/// its server process ends when it notices the closed socket, a moment
/// later.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl InstanceLock {
    /// Takes the lock for `membership`, waiting [`LOCK_WAIT`] at most.
    ///
    /// # Errors
    /// [`StoreError::InUse`] with who holds it and what to do, or
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn acquire(url: &str, membership: Membership) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(StoreError::from)?
            .disable_statement_logging();
        let mut conn = PgConnection::connect_with(&opts).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to {}: {}",
                where_is(url),
                describe(&e)
            ))
        })?;
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            if try_lock(&mut conn, membership).await? {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let holders = lock_holders(&mut conn).await.unwrap_or_default();
                let _ = conn.close().await;
                return Err(StoreError::InUse(refusal(url, membership, &holders)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep(conn, opts, membership, stopped));
        Ok(Self {
            stop: Some(stop),
            task,
        })
    }

    /// Gives the lock back (at a clean shutdown).
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

async fn try_lock(conn: &mut PgConnection, membership: Membership) -> Result<bool, StoreError> {
    let sql = match membership {
        Membership::Alone => "SELECT pg_try_advisory_lock($1)",
        Membership::Member => "SELECT pg_try_advisory_lock_shared($1)",
    };
    Ok(sqlx::query_scalar::<_, bool>(sql)
        .bind(INSTANCE_LOCK)
        .fetch_one(&mut *conn)
        .await?)
}

/// Who holds the instance lock of this database (advisory locks are per
/// database): (application name, client address, lock mode) per holder.
async fn lock_holders(
    conn: &mut PgConnection,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT COALESCE(a.application_name, ''), COALESCE(host(a.client_addr), 'a local socket'), l.mode \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid::bigint = $1 AND l.objsubid = 1 \
         AND l.granted AND l.pid <> pg_backend_pid() \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(INSTANCE_LOCK)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// The message a refused start prints.
fn refusal(url: &str, membership: Membership, holders: &[(String, String, String)]) -> String {
    let who: Vec<String> = holders
        .iter()
        .map(|(app, addr, _)| {
            if app.is_empty() {
                format!("a connection from {addr}")
            } else {
                format!("{app} from {addr}")
            }
        })
        .collect();
    let who = if who.is_empty() {
        "another switchboard".to_owned()
    } else {
        who.join(", ")
    };
    let cluster = holders.iter().any(|(_, _, mode)| mode == "ShareLock");
    let db = where_is(url);
    match (membership, cluster) {
        (Membership::Alone, true) => format!(
            "switchboard instances with [cluster] enabled = true are running on {db} ({who}): \
             this one has no [cluster] section. Add [cluster] enabled = true to its \
             configuration to join them (docs/scaling.md)"
        ),
        (Membership::Alone, false) => format!(
            "another switchboard instance is running on {db} ({who}). Run one instance per \
             database, or set [cluster] enabled = true on every instance to run several \
             (docs/scaling.md)"
        ),
        (Membership::Member, _) => format!(
            "a switchboard instance without [cluster] is running on {db} ({who}): it assumes \
             it is alone there. Stop it, or give it [cluster] enabled = true too \
             (docs/scaling.md)"
        ),
    }
}

/// Keeps the instance lock's connection alive until `stopped`; takes the
/// lock back on a new connection when the database dropped the old one.
async fn keep(
    mut conn: PgConnection,
    opts: PgConnectOptions,
    membership: Membership,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = &mut stopped => {
                let _ = conn.close().await;
                return;
            }
        }
        if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
            continue;
        }
        // The connection is gone, and the lock with it: take it again.
        loop {
            match PgConnection::connect_with(&opts).await {
                Ok(mut fresh) => match try_lock(&mut fresh, membership).await {
                    Ok(true) => {
                        tracing::info!(
                            "The instance lock is held again after the database came back."
                        );
                        conn = fresh;
                        wait = Duration::from_secs(1);
                        break;
                    }
                    Ok(false) => tracing::error!(
                        "While the database was unreachable another switchboard took it: two \
                         instances may now drive the same lanes. Stop one of them."
                    ),
                    Err(e) => tracing::debug!(error = %e, "Cannot take the instance lock yet."),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "Cannot reach the database for the instance lock yet.")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = &mut stopped => return,
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
}

/// Takes the feed's ordering lock inside `tx`, until it commits.
///
/// # Errors
/// On database failure.
pub async fn lock_feed_order(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    // In FROM: the function returns `void`, which the Any driver cannot
    // carry as a column.
    stmt("SELECT 1 FROM pg_advisory_xact_lock($1)")
        .bind(FEED_LOCK)
        .execute(tx)
        .await?;
    Ok(())
}

/// Notification channels between the instances of a cluster.
pub mod channel {
    /// A lane got new rows: the payload is `<account> <channel>`.
    pub const LANES: &str = "switchboard_lanes";
    /// The feed got new rows: the payload is the instance that wrote them.
    pub const FEED: &str = "switchboard_feed";
    /// Leases were given back: the payload is the instance that did.
    pub const LEASES: &str = "switchboard_leases";
    /// A link made from the chats changed: the payload is the instance
    /// that changed it.
    pub const LINKS: &str = "switchboard_links";
}

/// Sends a notification when `tx` commits (none if it does not).
pub async fn notify(tx: &mut Tx<'_>, channel: &str, payload: &str) -> Result<(), StoreError> {
    stmt("SELECT 1 FROM pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(tx)
        .await?;
    Ok(())
}

/// Sends a notification at once (outside any transaction).
///
/// # Errors
/// On database failure.
pub async fn notify_now(pool: &AnyPool, channel: &str, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// A listener on the cluster's notification channels.
///
/// # Errors
/// When the database cannot be reached.
pub async fn listen(url: &str) -> Result<sqlx::postgres::PgListener, StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener
        .listen_all([
            channel::LANES,
            channel::FEED,
            channel::LEASES,
            channel::LINKS,
        ])
        .await?;
    Ok(listener)
}

// ---------------------------------------------------------------------------
// Leases.

/// What a lease is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseKind {
    /// An account's receive side.
    Account,
    /// One destination channel's lane.
    Lane,
    /// A task one instance runs for all (retention).
    Task,
}

impl LeaseKind {
    /// As stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Lane => "lane",
            Self::Task => "task",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "account" => Ok(Self::Account),
            "lane" => Ok(Self::Lane),
            "task" => Ok(Self::Task),
            other => Err(StoreError::Corrupt(format!("lease kind `{other}`"))),
        }
    }
}

/// One lease: an account (`channel` empty), a lane, or a task (its name
/// in `account`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    /// What it is for.
    pub kind: LeaseKind,
    /// The account, or the task's name.
    pub account: String,
    /// The lane's channel; empty otherwise.
    pub channel: String,
}

impl LeaseKey {
    /// An account's receive side.
    #[must_use]
    pub fn account(account: impl Into<String>) -> Self {
        Self {
            kind: LeaseKind::Account,
            account: account.into(),
            channel: String::new(),
        }
    }

    /// A destination channel's lane.
    #[must_use]
    pub fn lane(account: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            kind: LeaseKind::Lane,
            account: account.into(),
            channel: channel.into(),
        }
    }

    /// A task one instance runs.
    #[must_use]
    pub fn task(name: impl Into<String>) -> Self {
        Self {
            kind: LeaseKind::Task,
            account: name.into(),
            channel: String::new(),
        }
    }

    fn from_row(r: &sqlx::any::AnyRow, at: usize) -> Result<Self, StoreError> {
        Ok(Self {
            kind: LeaseKind::parse(&r.try_get::<String, _>(at)?)?,
            account: r.try_get(at + 1)?,
            channel: r.try_get(at + 2)?,
        })
    }
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            LeaseKind::Lane => write!(f, "lane {} {}", self.account, self.channel),
            kind => write!(f, "{} {}", kind.as_str(), self.account),
        }
    }
}

/// Which process of which instance acts: the holder of leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The instance's name (`[cluster] instance`).
    pub name: String,
    /// Random per process start.
    pub run_id: i64,
}

/// A lease this process holds, with its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Which lease.
    pub key: LeaseKey,
    /// Its fencing token.
    pub token: i64,
}

/// A lease just taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Which lease, with its new token.
    pub held: Held,
    /// The instance that held it before, if its lease ran out (it did not
    /// give it back).
    pub from: Option<String>,
    /// How long nobody drove it, as far as the table tells (since the last
    /// holder's last renewal or its release), in ms; 0 for a lease nobody
    /// held before.
    pub idle_ms: i64,
}

/// A check of a lease holder's write: the write commits only while
/// `run_id` still holds the account's lease with `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The account whose cursor the write moves.
    pub account: String,
    /// The holding process.
    pub run_id: i64,
    /// The token it holds the lease with.
    pub token: i64,
}

/// Whether each fence still holds, checked inside the writer's
/// transaction: the lease rows stay locked (`FOR SHARE`) until it commits,
/// so no other instance can take them in between.
pub async fn check_fences(tx: &mut Tx<'_>, fences: &[&Fence]) -> Result<Vec<bool>, StoreError> {
    let mut ok = Vec::with_capacity(fences.len());
    for f in fences {
        let row = stmt(
            "SELECT token, run_id FROM leases WHERE kind = 'account' AND account = $1 \
             AND channel = '' FOR SHARE",
        )
        .bind(f.account.as_str())
        .fetch_optional(tx)
        .await?;
        ok.push(match row {
            Some(r) => {
                let (token, run_id): (i64, Option<i64>) = (r.try_get(0)?, r.try_get(1)?);
                token == f.token && run_id == Some(f.run_id)
            }
            None => false,
        });
    }
    Ok(ok)
}

/// What [`join`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// Registered.
    Joined,
    /// A live instance has this name: it was seen `seen_ms_ago` ms ago and
    /// says `info` about itself.
    NameInUse {
        /// Since its last heartbeat.
        seen_ms_ago: i64,
        /// Its JSON.
        info: String,
    },
}

/// Registers `who` in the instances table, unless a live instance
/// (heartbeat younger than `fresh_ms`) has the name.
///
/// # Errors
/// On database failure.
pub async fn join(
    pool: &AnyPool,
    who: &Holder,
    info: &str,
    fresh_ms: i64,
) -> Result<Joined, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO instances (name, run_id, started_ms, seen_ms, stopped_ms, info) \
         VALUES ($1, $2, {NOW_MS}, {NOW_MS}, NULL, $3) \
         ON CONFLICT (name) DO UPDATE SET run_id = excluded.run_id, started_ms = excluded.started_ms, \
         seen_ms = excluded.seen_ms, stopped_ms = NULL, info = excluded.info \
         WHERE instances.stopped_ms IS NOT NULL OR instances.seen_ms < {NOW_MS} - $4 \
         RETURNING run_id"
    ))
    .bind(who.name.as_str())
    .bind(who.run_id)
    .bind(info)
    .bind(fresh_ms)
    .fetch_optional(pool)
    .await?;
    if row.is_some() {
        return Ok(Joined::Joined);
    }
    let row = sqlx::query(&format!(
        "SELECT {NOW_MS} - seen_ms, info FROM instances WHERE name = $1"
    ))
    .bind(who.name.as_str())
    .fetch_one(pool)
    .await?;
    Ok(Joined::NameInUse {
        seen_ms_ago: row.try_get(0)?,
        info: row.try_get(1)?,
    })
}

/// The heartbeat; false when another process took the name over.
///
/// # Errors
/// On database failure.
pub async fn heartbeat(pool: &AnyPool, who: &Holder) -> Result<bool, StoreError> {
    let done = sqlx::query(&format!(
        "UPDATE instances SET seen_ms = {NOW_MS} WHERE name = $1 AND run_id = $2"
    ))
    .bind(who.name.as_str())
    .bind(who.run_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks `who` stopped (a clean shutdown).
///
/// # Errors
/// On database failure.
pub async fn leave(pool: &AnyPool, who: &Holder) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "UPDATE instances SET stopped_ms = {NOW_MS} WHERE name = $1 AND run_id = $2"
    ))
    .bind(who.name.as_str())
    .bind(who.run_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The instances whose heartbeat is younger than `fresh_ms`.
///
/// # Errors
/// On database failure.
pub async fn live_instances(pool: &AnyPool, fresh_ms: i64) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT name FROM instances WHERE stopped_ms IS NULL AND seen_ms > {NOW_MS} - $1 ORDER BY name"
    ))
    .bind(fresh_ms)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Sizes multi-row statements are cut into.
const CHUNK: usize = 100;

/// Makes sure a lease row exists for each key (new ones are free).
///
/// # Errors
/// On database failure.
pub async fn ensure(pool: &AnyPool, keys: &[LeaseKey]) -> Result<(), StoreError> {
    for chunk in keys.chunks(CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO leases (kind, account, channel) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for k in chunk {
            q = q
                .bind(k.kind.as_str())
                .bind(k.account.as_str())
                .bind(k.channel.as_str());
        }
        q.execute(pool).await?;
    }
    Ok(())
}

/// Extends every lease `who` holds by `ttl_ms` from now; returns them.
/// A lease missing from the answer was taken by another instance.
///
/// # Errors
/// On database failure.
pub async fn renew(pool: &AnyPool, who: &Holder, ttl_ms: i64) -> Result<Vec<Held>, StoreError> {
    let rows = sqlx::query(&format!(
        "UPDATE leases SET expires_ms = {NOW_MS} + $1 WHERE run_id = $2 \
         RETURNING kind, account, channel, token"
    ))
    .bind(ttl_ms)
    .bind(who.run_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Held {
                key: LeaseKey::from_row(r, 0)?,
                token: r.try_get(3)?,
            })
        })
        .collect()
}

/// `IN ($n, ...)` for `count` parameters from `$first`.
fn marks(first: usize, count: usize) -> String {
    let m: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    m.join(", ")
}

/// How many leases of `kind` there are for `accounts`.
///
/// # Errors
/// On database failure.
pub async fn count(
    pool: &AnyPool,
    kind: LeaseKind,
    accounts: &[String],
) -> Result<i64, StoreError> {
    if accounts.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM leases WHERE kind = $1 AND account IN ({})",
        marks(2, accounts.len())
    );
    let mut q = sqlx::query(&sql).bind(kind.as_str());
    for a in accounts {
        q = q.bind(a.as_str());
    }
    Ok(q.fetch_one(pool).await?.try_get(0)?)
}

/// Takes up to `limit` free or expired leases of `kind` for `accounts`
/// (in a random order, so instances spread), skipping rows another
/// instance is taking or renewing right now (`FOR UPDATE SKIP LOCKED`).
/// Each taken lease's token grows by one: whatever its last holder writes
/// with the old token is refused from now on.
///
/// # Errors
/// On database failure.
pub async fn acquire(
    pool: &AnyPool,
    who: &Holder,
    ttl_ms: i64,
    kind: LeaseKind,
    accounts: &[String],
    limit: i64,
) -> Result<Vec<Taken>, StoreError> {
    if accounts.is_empty() || limit <= 0 {
        return Ok(Vec::new());
    }
    let n = accounts.len();
    let sql = format!(
        "WITH picked AS (\
           SELECT kind, account, channel, holder AS old_holder, run_id AS old_run, \
                  expires_ms AS old_expires FROM leases \
           WHERE kind = $1 AND account IN ({}) AND (run_id IS NULL OR expires_ms < {NOW_MS}) \
           ORDER BY random() LIMIT ${} FOR UPDATE SKIP LOCKED) \
         UPDATE leases l SET holder = ${}, run_id = ${}, token = l.token + 1, \
           expires_ms = {NOW_MS} + ${}, since_ms = {NOW_MS} \
         FROM picked p WHERE l.kind = p.kind AND l.account = p.account AND l.channel = p.channel \
         RETURNING l.kind, l.account, l.channel, l.token, p.old_holder, p.old_run, p.old_expires, \
           {NOW_MS}",
        marks(2, n),
        n + 2,
        n + 3,
        n + 4,
        n + 5,
    );
    let mut q = sqlx::query(&sql).bind(kind.as_str());
    for a in accounts {
        q = q.bind(a.as_str());
    }
    let rows = q
        .bind(limit)
        .bind(who.name.as_str())
        .bind(who.run_id)
        .bind(ttl_ms)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let old_holder: Option<String> = r.try_get(4)?;
            let old_run: Option<i64> = r.try_get(5)?;
            let (old_expires, now): (i64, i64) = (r.try_get(6)?, r.try_get(7)?);
            // An expired lease was last renewed a lease's length before it
            // ran out; a given-back one stopped when it was given back.
            let last_driven = if old_run.is_some() {
                old_expires - ttl_ms
            } else {
                old_expires
            };
            Ok(Taken {
                held: Held {
                    key: LeaseKey::from_row(r, 0)?,
                    token: r.try_get(3)?,
                },
                from: old_run.and(old_holder),
                idle_ms: if old_expires > 0 {
                    (now - last_driven).max(0)
                } else {
                    0
                },
            })
        })
        .collect()
}

/// Gives leases back (their work stopped here): free at once for any
/// instance, with a new token.
///
/// # Errors
/// On database failure.
pub async fn release(pool: &AnyPool, who: &Holder, keys: &[LeaseKey]) -> Result<(), StoreError> {
    for chunk in keys.chunks(CHUNK) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
            .collect();
        let sql = format!(
            "UPDATE leases SET holder = NULL, run_id = NULL, token = token + 1, \
             expires_ms = {NOW_MS} WHERE run_id = $1 AND (kind, account, channel) IN ({})",
            tuples.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(who.run_id);
        for k in chunk {
            q = q
                .bind(k.kind.as_str())
                .bind(k.account.as_str())
                .bind(k.channel.as_str());
        }
        q.execute(pool).await?;
    }
    Ok(())
}

/// Gives back every lease `who` holds.
///
/// # Errors
/// On database failure.
pub async fn release_all(pool: &AnyPool, who: &Holder) -> Result<u64, StoreError> {
    let done = sqlx::query(&format!(
        "UPDATE leases SET holder = NULL, run_id = NULL, token = token + 1, \
         expires_ms = {NOW_MS} WHERE run_id = $1"
    ))
    .bind(who.run_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// One lease as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseRow {
    /// `account`, `lane` or `task`.
    pub kind: &'static str,
    /// The account (or task).
    pub account: String,
    /// The lane's channel (empty otherwise).
    pub channel: String,
    /// The instance holding it, while its lease runs.
    pub holder: Option<String>,
    /// Its fencing token: how often it changed hands.
    pub token: i64,
    /// Until when it runs, in ms from now (negative: ran out).
    pub expires_in_ms: i64,
    /// Since when (Unix ms, database clock) its holder has it.
    pub since_ms: i64,
}

/// Every lease.
///
/// # Errors
/// On database failure.
pub async fn leases(pool: &AnyPool) -> Result<Vec<LeaseRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT kind, account, channel, holder, run_id, token, expires_ms - {NOW_MS}, since_ms \
         FROM leases ORDER BY kind, account, channel"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let key = LeaseKey::from_row(r, 0)?;
            let run: Option<i64> = r.try_get(4)?;
            let expires_in_ms: i64 = r.try_get(6)?;
            Ok(LeaseRow {
                kind: key.kind.as_str(),
                account: key.account,
                channel: key.channel,
                holder: run.and(r.try_get::<Option<String>, _>(3)?),
                token: r.try_get(5)?,
                expires_in_ms,
                since_ms: r.try_get(7)?,
            })
        })
        .collect()
}

/// One instance as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceRow {
    /// Its name.
    pub name: String,
    /// `live`, `stale` (no heartbeat for longer than the takeover time:
    /// dead or cut off) or `stopped`.
    pub state: &'static str,
    /// Since its last heartbeat, in ms.
    pub seen_ms_ago: i64,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// What it says about itself (pid, host, addresses, version).
    pub info: serde_json::Value,
}

/// Every instance that ever ran on this database, newest first.
///
/// # Errors
/// On database failure.
pub async fn instances(pool: &AnyPool, fresh_ms: i64) -> Result<Vec<InstanceRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT name, {NOW_MS} - seen_ms, started_ms, stopped_ms, info FROM instances \
         ORDER BY name"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let seen: i64 = r.try_get(1)?;
            let stopped: Option<i64> = r.try_get(3)?;
            Ok(InstanceRow {
                name: r.try_get(0)?,
                state: match stopped {
                    Some(_) => "stopped",
                    None if seen < fresh_ms => "live",
                    None => "stale",
                },
                seen_ms_ago: seen,
                started_ms: r.try_get(2)?,
                info: serde_json::from_str(&r.try_get::<String, _>(4)?)
                    .unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_are_added_once_and_kept_plain() {
        assert_eq!(
            with_application_name("postgres://h/db", "a b"),
            "postgres://h/db?application_name=switchboard-a_b"
        );
        assert_eq!(
            with_application_name("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/db?sslmode=disable&application_name=switchboard-x"
        );
        assert_eq!(
            with_application_name("postgres://h/db?application_name=mine", "x"),
            "postgres://h/db?application_name=mine"
        );
    }

    #[test]
    fn refusals_say_why_and_what_to_do() {
        let lone = refusal(
            "postgres://u:secret@h:5432/sb",
            Membership::Alone,
            &[(
                "switchboard-a".into(),
                "10.0.0.1".into(),
                "ExclusiveLock".into(),
            )],
        );
        assert!(
            lone.contains("h:5432/sb") && !lone.contains("secret"),
            "{lone}"
        );
        assert!(lone.contains("switchboard-a from 10.0.0.1"), "{lone}");
        assert!(lone.contains("[cluster] enabled = true"), "{lone}");
        let beside = refusal(
            "postgres://h/sb",
            Membership::Alone,
            &[(
                "switchboard-b".into(),
                "10.0.0.2".into(),
                "ShareLock".into(),
            )],
        );
        assert!(
            beside.contains("this one has no [cluster] section"),
            "{beside}"
        );
        let member = refusal("postgres://h/sb", Membership::Member, &[]);
        assert!(member.contains("without [cluster]"), "{member}");
    }
}
