//! What the writer's statements run on: one small executor with two
//! backends, so each statement is written once.
//!
//! - [`Tx::Any`]: a sqlx connection (PostgreSQL, and SQLite where the
//!   writer cannot open the file itself: an in-memory database). Every
//!   statement is a hand-off to the driver and back.
//! - [`Tx::Lite`]: the writer's own SQLite connection (rusqlite), used on
//!   the writer's own thread (see [`super::spawn`]). A statement is a
//!   function call: a whole group commit runs without waking another
//!   thread. With sqlx every statement of a commit was a round trip to
//!   sqlx's SQLite thread and back, which at 1,000 posts a second cost
//!   most of the CPU per message (docs/performance.md, "Hand-offs per
//!   message").
//!
//! Statements are built as with sqlx (`stmt(sql).bind(a).bind(b)`) with
//! PostgreSQL's `$N` parameters, which SQLite reads too; a parameter is
//! bound by its number, so one may appear twice or out of order.

use std::borrow::Cow;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection};

use crate::store::StoreError;

/// The connection a transaction of the writer's runs on.
pub enum Tx<'c> {
    /// Through sqlx.
    Any(&'c mut AnyConnection),
    /// SQLite, in this thread.
    Lite(&'c mut rusqlite::Connection),
}

impl Tx<'_> {
    /// Runs a statement without parameters or rows (BEGIN, COMMIT,
    /// ROLLBACK): over sqlx the simple protocol, as its own transactions
    /// do.
    ///
    /// # Errors
    /// The database's.
    pub async fn run(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Self::Any(c) => {
                sqlx::Executor::execute(&mut **c, sql).await?;
            }
            Self::Lite(c) => c.execute_batch(sql)?,
        }
        Ok(())
    }
}

/// One value bound to a parameter. Text and bytes are borrowed where the
/// caller has them, as sqlx does.
#[derive(Debug, Clone)]
pub enum Arg<'q> {
    /// An integer, or a NULL where one goes.
    Int(Option<i64>),
    /// Text, or a NULL where text goes.
    Text(Option<Cow<'q, str>>),
    /// Bytes.
    Bytes(Cow<'q, [u8]>),
    /// A boolean (an integer to SQLite).
    Bool(bool),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl<'q> From<&'q str> for Arg<'q> {
    fn from(v: &'q str) -> Self {
        Self::Text(Some(Cow::Borrowed(v)))
    }
}
impl<'q> From<&'q String> for Arg<'q> {
    fn from(v: &'q String) -> Self {
        Self::Text(Some(Cow::Borrowed(v.as_str())))
    }
}
impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Self::Text(Some(Cow::Owned(v)))
    }
}
impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Self::Text(v.map(Cow::Owned))
    }
}
impl<'q> From<Option<&'q str>> for Arg<'q> {
    fn from(v: Option<&'q str>) -> Self {
        Self::Text(v.map(Cow::Borrowed))
    }
}
impl<'q> From<&'q [u8]> for Arg<'q> {
    fn from(v: &'q [u8]) -> Self {
        Self::Bytes(Cow::Borrowed(v))
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Self::Int(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Self::Int(None) | Self::Text(None) => ToSqlOutput::Borrowed(ValueRef::Null),
            Self::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Self::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Self::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
        })
    }
}

/// A statement and its arguments.
#[must_use]
pub struct Stmt<'q> {
    sql: &'q str,
    args: Vec<Arg<'q>>,
}

/// A statement to run on a [`Tx`].
pub fn stmt(sql: &str) -> Stmt<'_> {
    Stmt {
        sql,
        args: Vec::new(),
    }
}

/// What a statement changed.
#[derive(Debug)]
pub struct Done(u64);

impl Done {
    /// Rows inserted, updated or deleted.
    #[must_use]
    pub fn rows_affected(&self) -> u64 {
        self.0
    }
}

/// A row a statement returned.
pub enum Row {
    /// From sqlx.
    Any(AnyRow),
    /// From SQLite.
    Lite(Vec<Value>),
}

impl std::fmt::Debug for Row {
    // sqlx's rows have no Debug of their own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any(row) => write!(f, "Row::Any({} columns)", sqlx::Row::len(row)),
            Self::Lite(values) => f.debug_tuple("Row::Lite").field(values).finish(),
        }
    }
}

/// A column's position (the trait exists so that `row.try_get(0)` infers
/// `usize`, as with sqlx).
pub trait Col {
    /// The position.
    fn index(self) -> usize;
}
impl Col for usize {
    fn index(self) -> usize {
        self
    }
}

impl Row {
    /// Column `i` as a `T`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when it is missing or of another type.
    pub fn try_get<T, I>(&self, i: I) -> Result<T, StoreError>
    where
        T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql,
        I: Col,
    {
        let i = i.index();
        match self {
            Self::Any(row) => Ok(sqlx::Row::try_get(row, i)?),
            Self::Lite(values) => {
                let v = values
                    .get(i)
                    .ok_or_else(|| StoreError::Corrupt(format!("no column {i}")))?;
                T::column_result(ValueRef::from(v))
                    .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
            }
        }
    }
}

impl<'q> Stmt<'q> {
    /// Binds the next parameter.
    pub fn bind(mut self, v: impl Into<Arg<'q>>) -> Self {
        self.args.push(v.into());
        self
    }

    fn sqlx(&self) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(self.sql);
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::Bytes(b) => q.bind(b.as_ref()),
                Arg::Bool(v) => q.bind(*v),
            };
        }
        q
    }

    /// Runs it.
    ///
    /// # Errors
    /// The database's.
    pub async fn execute(self, tx: &mut Tx<'_>) -> Result<Done, StoreError> {
        match tx {
            Tx::Any(c) => Ok(Done(self.sqlx().execute(&mut **c).await?.rows_affected())),
            Tx::Lite(c) => lite::execute(c, &self).map(Done),
        }
    }

    /// Runs it and takes every row it returns.
    ///
    /// # Errors
    /// The database's.
    pub async fn fetch_all(self, tx: &mut Tx<'_>) -> Result<Vec<Row>, StoreError> {
        match tx {
            Tx::Any(c) => Ok(self
                .sqlx()
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(Row::Any)
                .collect()),
            Tx::Lite(c) => lite::query(c, &self, usize::MAX),
        }
    }

    /// Runs it and takes its first row, if any.
    ///
    /// # Errors
    /// The database's.
    pub async fn fetch_optional(self, tx: &mut Tx<'_>) -> Result<Option<Row>, StoreError> {
        match tx {
            Tx::Any(c) => Ok(self.sqlx().fetch_optional(&mut **c).await?.map(Row::Any)),
            Tx::Lite(c) => Ok(lite::query(c, &self, 1)?.pop()),
        }
    }

    /// Runs it and takes its first row, which must be there.
    ///
    /// # Errors
    /// The database's; [`StoreError::Corrupt`] when it returned none.
    pub async fn fetch_one(self, tx: &mut Tx<'_>) -> Result<Row, StoreError> {
        self.fetch_optional(tx)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a statement returned no row".into()))
    }
}

/// Running a statement on the writer's SQLite connection.
mod lite {
    use super::{Row, Stmt};
    use crate::store::StoreError;

    /// Statements kept prepared: the writer's multi-row statements come in
    /// a few sizes each (`sql::CHUNKS`), and prepare costs more than a run.
    pub(crate) const CACHED: usize = 256;

    fn bound<'c>(
        c: &'c rusqlite::Connection,
        s: &Stmt<'_>,
    ) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
        let mut st = c.prepare_cached(s.sql)?;
        for i in 1..=st.parameter_count() {
            // `$N` is the N-th argument wherever it appears.
            let n = match st.parameter_name(i) {
                Some(name) => name
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| StoreError::Rejected(format!("parameter {name} is not $N")))?,
                None => i,
            };
            // Errors name the parameter, never the statement: they reach
            // API callers as sqlx's do.
            let arg = n
                .checked_sub(1)
                .and_then(|k| s.args.get(k))
                .ok_or_else(|| StoreError::Rejected(format!("parameter ${n} has no value")))?;
            st.raw_bind_parameter(i, arg)?;
        }
        Ok(st)
    }

    pub(super) fn execute(c: &rusqlite::Connection, s: &Stmt<'_>) -> Result<u64, StoreError> {
        let mut st = bound(c, s)?;
        let mut rows = st.raw_query();
        // Step to the end (a statement may return rows nobody reads).
        while rows.next()?.is_some() {}
        drop(rows);
        Ok(c.changes())
    }

    pub(super) fn query(
        c: &rusqlite::Connection,
        s: &Stmt<'_>,
        most: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let mut st = bound(c, s)?;
        let columns = st.column_count();
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            if out.len() < most {
                let values = (0..columns)
                    .map(|i| row.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(Row::Lite(values));
            }
        }
        Ok(out)
    }
}

pub(crate) use lite::CACHED;

#[cfg(test)]
mod tests {
    use super::*;

    fn lite() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().expect("an in-memory database");
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB)",
        )
        .expect("a table");
        c
    }

    #[tokio::test]
    async fn parameters_are_bound_by_their_number_as_sqlx_binds_them() {
        let mut c = lite();
        let mut tx = Tx::Lite(&mut c);
        // Out of order and used twice: `$N` is the N-th value wherever it is.
        let row = stmt("SELECT $2, $1, $2, $3")
            .bind(7_i64)
            .bind("b")
            .bind(None::<i64>)
            .fetch_one(&mut tx)
            .await
            .unwrap();
        assert_eq!(row.try_get::<String, _>(0).unwrap(), "b");
        assert_eq!(row.try_get::<i64, _>(1).unwrap(), 7);
        assert_eq!(row.try_get::<String, _>(2).unwrap(), "b");
        assert_eq!(row.try_get::<Option<i64>, _>(3).unwrap(), None);
        let missing = stmt("SELECT $1, $2").bind(1_i64).fetch_one(&mut tx).await;
        assert!(
            matches!(missing, Err(StoreError::Rejected(ref m)) if m.contains("$2")),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn rows_changes_and_refusals_come_back_as_with_sqlx() {
        let mut c = lite();
        let mut tx = Tx::Lite(&mut c);
        tx.run("BEGIN").await.unwrap();
        let done = stmt("INSERT INTO t (name, data) VALUES ($1, $2), ($3, $2)")
            .bind("a")
            .bind(&b"xy"[..])
            .bind("b")
            .execute(&mut tx)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 2);
        let rows =
            stmt("INSERT INTO t (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id")
                .bind("a")
                .fetch_all(&mut tx)
                .await
                .unwrap();
        assert!(rows.is_empty(), "a conflict returns nothing");
        // A constraint is the request's fault: retrying will not help.
        let dup = stmt("INSERT INTO t (name) VALUES ($1)")
            .bind("a")
            .execute(&mut tx)
            .await;
        assert!(matches!(dup, Err(StoreError::Rejected(_))), "{dup:?}");
        tx.run("COMMIT").await.unwrap();
        let row = stmt("SELECT COUNT(*), data FROM t WHERE name = $1")
            .bind("a")
            .fetch_optional(&mut tx)
            .await
            .unwrap()
            .expect("a row");
        assert_eq!(row.try_get::<i64, _>(0).unwrap(), 1);
        assert_eq!(row.try_get::<Vec<u8>, _>(1).unwrap(), b"xy");
        assert!(matches!(
            row.try_get::<i64, _>(1),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_busy_or_full_database_is_unavailable_not_the_requests_fault() {
        let code = |c: i32| {
            StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(c),
                Some("m".into()),
            ))
        };
        // SQLITE_BUSY, SQLITE_IOERR_WRITE (an extended code), SQLITE_FULL.
        for c in [5, 778, 13] {
            assert!(code(c).is_unavailable(), "{c}");
        }
        // SQLITE_CONSTRAINT_UNIQUE.
        assert!(matches!(code(2067), StoreError::Rejected(_)));
    }
}
