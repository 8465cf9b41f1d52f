//! SQLite's own parts of the store, in one place: where the file goes, the
//! pragmas every connection gets, the checkpoints that keep the
//! write-ahead log bounded, and the lock file that keeps a second
//! switchboard off a database one already uses. The PostgreSQL
//! counterparts are in [`super::postgres`]; everything else in the store is
//! written once for both.
//!
//! # The write-ahead log
//! A background task ([`spawn_checkpointer`]) copies WAL frames into the
//! database file several times a second, off the commit path, and records
//! how long the log is. That alone never lets the log start over: SQLite
//! resets the WAL only when a write begins after a checkpoint copied
//! *every* frame, and under continuous writes new frames always arrive
//! between the background checkpoint and the next commit. So once the log
//! is longer than [`SOFT_FRAMES`], the writer itself runs a checkpoint
//! between two of its transactions ([`Checkpoints`]), when no frame can be
//! added meanwhile: it only has to copy what arrived since the background
//! one, and the next commit writes from the start of the file again. Past
//! [`HARD_FRAMES`] (readers kept frames pinned) it uses `RESTART`, which
//! waits for them.
//!
//! # One instance per file
//! SQLite takes one writer; two switchboards on one file would each assign
//! feed sequence numbers and drive the same lanes. [`FileLock`] holds an
//! exclusive `flock` on `<database>.lock` for as long as the process runs
//! (the kernel drops it when the process dies, also on kill -9), and a
//! second instance refuses to start, saying why.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};

use super::writer::exec::{stmt, Tx};

use super::{Durability, StoreError, WalSize};

/// About 4 MiB of 4 KiB pages: the writer checkpoints past this.
pub const SOFT_FRAMES: i64 = 1000;
/// About 64 MiB: the writer waits for readers to let the log restart.
pub const HARD_FRAMES: i64 = 16_000;

/// The database file a `sqlite:` URL names (without its parameters).
#[must_use]
pub fn file_of(url: &str) -> PathBuf {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    PathBuf::from(path.split('?').next().unwrap_or(path))
}

/// Creates the file's directory and returns a URL that creates the file if
/// it is missing, also when the URL already has parameters of its own.
pub(super) fn prepare_url(url: &str) -> Result<String, StoreError> {
    let path = file_of(url);
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
    }
    Ok(with_create_mode(url))
}

fn with_create_mode(url: &str) -> String {
    match url.split_once('?') {
        None => format!("{url}?mode=rwc"),
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
    }
}

/// `synchronous` for a durability: FULL makes every commit durable before
/// we ack, NORMAL (with WAL) leaves the fsync to checkpoints.
fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::Fsync => "PRAGMA synchronous = FULL",
        Durability::Process => "PRAGMA synchronous = NORMAL",
    }
}

/// What every connection runs after `synchronous`: the pool's and the
/// writer's own.
const PRAGMAS: [&str; 6] = [
    // WAL lets readers run beside the single writer.
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 10000",
    // The writer checkpoints between its own transactions (see
    // `Checkpoints`), where no new frames can arrive, so the WAL is
    // reset.
    "PRAGMA wal_autocheckpoint = 0",
    // A reset WAL file is truncated to this, so a burst does not leave
    // a huge file behind.
    "PRAGMA journal_size_limit = 16777216",
    // Multi-row inserts with ON CONFLICT need a statement journal: keep
    // it in memory, not in a temp file created and unlinked per
    // statement.
    "PRAGMA temp_store = MEMORY",
    "PRAGMA foreign_keys = ON",
];

/// The page limit that keeps the file under `bytes` (`database.max_size`).
fn max_page_count(bytes: u64, page: i64) -> String {
    let pages = (bytes / u64::try_from(page.max(512)).unwrap_or(4096)).max(1);
    format!("PRAGMA max_page_count = {pages}")
}

/// What every pooled connection runs first.
pub(super) async fn prepare_connection(
    conn: &mut AnyConnection,
    durability: Durability,
    max_size: Option<u64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(synchronous(durability))
        .execute(&mut *conn)
        .await?;
    for pragma in PRAGMAS {
        sqlx::query(pragma).execute(&mut *conn).await?;
    }
    if let Some(bytes) = max_size {
        let page: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query(&max_page_count(bytes, page))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// How the writer opens a connection of its own to a SQLite file (see
/// `writer::exec`): the file, and what the pool's connections get too.
#[derive(Debug, Clone)]
pub(crate) struct OwnConnection {
    path: PathBuf,
    durability: Durability,
    max_size: Option<u64>,
}

impl OwnConnection {
    /// For a file; `None` for an in-memory database, which only the pool's
    /// connections share.
    pub(super) fn of(url: &str, durability: Durability, max_size: Option<u64>) -> Option<Self> {
        use std::str::FromStr;
        // The file as sqlx opens it (its path percent-decoded). A database
        // opened in a way only sqlx's URL says (another VFS, read-only,
        // immutable, in memory) stays with the pool's connections.
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let special = query.split('&').any(|p| {
            p.starts_with("vfs=")
                || p.starts_with("immutable=")
                || p == "mode=ro"
                || p == "mode=memory"
        });
        let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .ok()?
            .get_filename()
            .to_path_buf();
        let name = path.to_string_lossy();
        if special || name.is_empty() || name.starts_with(':') {
            return None;
        }
        Some(Self {
            path,
            durability,
            max_size,
        })
    }

    /// Opens it. Blocks (a busy database waits up to the busy timeout), so
    /// it runs on the writer's thread or a blocking one.
    ///
    /// # Errors
    /// The database's.
    pub(crate) fn open(&self) -> Result<rusqlite::Connection, StoreError> {
        use rusqlite::OpenFlags;
        // The pool created the file and ran the migrations already.
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // `execute_batch` runs a statement that returns a row (these
        // pragmas do) without reading it.
        conn.execute_batch(synchronous(self.durability))?;
        for pragma in PRAGMAS {
            conn.execute_batch(pragma)?;
        }
        if let Some(bytes) = self.max_size {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            conn.execute_batch(&max_page_count(bytes, page))?;
        }
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        conn.set_prepared_statement_cache_capacity(super::writer::exec::CACHED);
        Ok(conn)
    }
}

/// Copies WAL frames into the database four times a second without
/// blocking the writer (`PASSIVE`), records the log's length for the
/// writer, and truncates the log file once writes stop (`TRUNCATE`), until
/// `shutdown` is true.
pub(super) fn spawn_checkpointer(
    pool: AnyPool,
    wal: Arc<WalSize>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut last_log = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let result: Result<(i64, i64, i64), _> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&pool)
                    .await;
            match result {
                Ok((_, log, done)) => {
                    wal.frames.store(log, Ordering::Relaxed);
                    // Nothing written since the last look and all of it
                    // copied: give the file's space back.
                    if log > 0 && log == last_log && log == done {
                        if let Err(e) = truncate_wal(&pool, &wal).await {
                            tracing::debug!(error = %e, "WAL truncate failed.");
                        }
                        last_log = 0;
                        continue;
                    }
                    last_log = log;
                }
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed."),
            }
        }
    });
}

/// Truncates an idle WAL, if no reader is in the way right now and the
/// writer is between transactions; whether it ran.
///
/// A TRUNCATE checkpoint holds off writers while it waits for readers, for
/// as long as the busy timeout: with the connection's 10 s, one slow reader
/// made commits fail with "database is locked". It is only housekeeping, so
/// it waits 50 ms at most and tries again later.
///
/// It also starts the log over, which a transaction of the writer's that
/// has read but not yet written cannot survive: its first write then fails
/// at once with `SQLITE_BUSY_SNAPSHOT` (no busy timeout waits that out),
/// and every post of the batch was answered 503. So it runs only while it
/// holds the writer's turn ([`WalSize::gate`]), and skips a round when the
/// writer has it.
async fn truncate_wal(pool: &AnyPool, wal: &WalSize) -> Result<bool, sqlx::Error> {
    let Ok(_turn) = wal.gate.try_lock() else {
        return Ok(false);
    };
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA busy_timeout = 50")
        .execute(&mut *conn)
        .await?;
    let result = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await;
    let restored = sqlx::query("PRAGMA busy_timeout = 10000")
        .execute(&mut *conn)
        .await;
    if restored.is_err() {
        // A connection with the short timeout must not serve anyone else.
        conn.detach();
    }
    result.map(|_| true)
}

/// The writer's side of the checkpoint scheme (see the module's docs).
pub(crate) struct Checkpoints {
    /// False for PostgreSQL.
    enabled: bool,
    /// The log length the background checkpointer last saw.
    size: Arc<WalSize>,
}

impl Checkpoints {
    /// The writer's turn for one transaction (SQLite; nothing to take on
    /// PostgreSQL).
    pub(crate) async fn turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.enabled {
            Some(self.size.gate.lock().await)
        } else {
            None
        }
    }

    pub(crate) fn new(store: &super::Store) -> Self {
        Self {
            enabled: store.backend() == super::Backend::Sqlite,
            size: store.wal_size(),
        }
    }

    /// Called after each commit with the writer's connection.
    pub(crate) async fn after_commit(&mut self, conn: Option<Tx<'_>>) {
        let (true, Some(mut conn)) = (self.enabled, conn) else {
            return;
        };
        let frames = self.size.frames.load(Ordering::Relaxed);
        if frames < SOFT_FRAMES {
            return;
        }
        let mode = if frames >= HARD_FRAMES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        let result = match stmt(&sql).fetch_one(&mut conn).await {
            Ok(row) => {
                (|| Ok::<_, StoreError>((row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?)))()
            }
            Err(e) => Err(e),
        };
        match result {
            // Every frame is in the database: the next commit restarts the
            // log from its beginning.
            Ok((log, done)) if log == done => self.size.frames.store(0, Ordering::Relaxed),
            Ok((log, _)) => self.size.frames.store(log, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, mode, "Writer checkpoint failed."),
        }
        self.size.writer_checkpoints.fetch_add(1, Ordering::Relaxed);
    }
}

/// The exclusive lock on `<database>.lock` that one running instance holds
/// (see the module's docs). Released when dropped or when the process
/// ends.
#[derive(Debug)]
pub struct FileLock {
    #[cfg_attr(not(unix), allow(dead_code))]
    file: std::fs::File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock beside the database `url` names, or says who has it.
    ///
    /// # Errors
    /// [`StoreError::InUse`] when another process holds it;
    /// [`StoreError::Unavailable`] when the lock file cannot be opened.
    pub fn acquire(url: &str) -> Result<Option<Self>, StoreError> {
        let db = file_of(url);
        let name = db.to_string_lossy();
        // An in-memory database is this process's alone.
        if name.is_empty() || name.starts_with(':') || name.contains("mode=memory") {
            return Ok(None);
        }
        let mut path = db.clone().into_os_string();
        path.push(".lock");
        let path = PathBuf::from(path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let lock = Self { file, path };
        lock.try_lock(&db)?;
        Ok(Some(lock))
    }

    #[cfg(unix)]
    fn try_lock(&self, db: &Path) -> Result<(), StoreError> {
        use rustix::fs::{flock, FlockOperation};
        use std::io::{Read, Seek, Write};
        match flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                // Who holds it, for the next one's message.
                let mut f = &self.file;
                let _ = f.set_len(0);
                let _ = f.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(f, "pid {}", std::process::id());
                Ok(())
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                let _ = (&self.file).read_to_string(&mut holder);
                let holder = holder.trim();
                Err(StoreError::InUse(format!(
                    "another switchboard ({}) is running on the SQLite database {}: it holds {}. \
                     Run one switchboard per SQLite database; several instances need PostgreSQL \
                     with [cluster] enabled = true on each (docs/scaling.md)",
                    if holder.is_empty() { "process" } else { holder },
                    db.display(),
                    self.path.display()
                )))
            }
            Err(e) => Err(StoreError::Unavailable(format!(
                "cannot lock {}: {e}",
                self.path.display()
            ))),
        }
    }

    #[cfg(not(unix))]
    fn try_lock(&self, _db: &Path) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_file_and_create_it() {
        assert_eq!(
            file_of("sqlite://data/sb.db?x=1"),
            PathBuf::from("data/sb.db")
        );
        assert_eq!(file_of("sqlite:sb.db"), PathBuf::from("sb.db"));
        assert_eq!(with_create_mode("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            with_create_mode("sqlite://a.db?x=1"),
            "sqlite://a.db?x=1&mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_second_lock_on_the_same_file_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sb.db", dir.path().display());
        let first = FileLock::acquire(&url).unwrap().expect("a file database");
        match FileLock::acquire(&url) {
            Err(StoreError::InUse(why)) => {
                assert!(why.contains("pid "), "{why}");
                assert!(why.contains("[cluster]"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        assert!(FileLock::acquire(&url).unwrap().is_some());
    }

    /// Two connections in WAL mode with the store's busy timeout, a table
    /// with one row.
    async fn two_connections(dir: &Path) -> (AnyConnection, AnyConnection) {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.display());
        let mut a = AnyConnection::connect(&url).await.unwrap();
        let mut b = AnyConnection::connect(&url).await.unwrap();
        for c in [&mut a, &mut b] {
            prepare_connection(c, Durability::Fsync, None)
                .await
                .unwrap();
        }
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (0)")
            .execute(&mut a)
            .await
            .unwrap();
        (a, b)
    }

    /// The writer reads before it writes. The idle truncation starting the
    /// log over in between makes the write fail at once, whatever the busy
    /// timeout (the hazard, as a control); it does not run while the
    /// writer holds its turn, and does once the writer is done.
    #[tokio::test]
    async fn the_idle_truncation_never_runs_inside_a_write_transaction() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut c) = two_connections(dir.path()).await;
        // Everything copied into the database, nothing written since.
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut c)
            .await
            .unwrap();

        let mut tx = a.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut c)
            .await
            .unwrap();
        let stale = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .expect_err("a transaction whose log started over cannot write");
        assert!(stale.to_string().contains("locked"), "{stale}");
        tx.rollback().await.unwrap();
        drop(c);

        let url = format!("sqlite://{}/t.db", dir.path().display());
        let pool = AnyPool::connect(&url).await.unwrap();
        let wal = WalSize::default();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut a)
            .await
            .unwrap();
        let turn = wal.gate.lock().await;
        let mut tx = a.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert!(!truncate_wal(&pool, &wal).await.unwrap(), "skipped");
        sqlx::query("INSERT INTO t VALUES (3)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        drop(turn);
        assert!(truncate_wal(&pool, &wal).await.unwrap(), "ran");
        let values: Vec<i64> = sqlx::query_scalar("SELECT v FROM t ORDER BY rowid")
            .fetch_all(&mut a)
            .await
            .unwrap();
        assert_eq!(values, vec![0, 2, 3]);
    }
}
