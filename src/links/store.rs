//! The links' tables (migration 0006: `links`, `link_codes`,
//! `link_failures`) and every change to them. Each change is one
//! transaction of its own in the store writer ([`Solo`]) that reads what
//! it decides from in the same transaction: a code is used once even if
//! two chats send it at once, and a chat is never linked twice.

use sqlx::Row;

use crate::store::writer::exec::{self, stmt, Tx};
use switchboard_core::{AccountId, ChannelId, EventId, GatewayName, NewEvent};
use tokio::sync::oneshot;

use super::plan::{plan, Chat, Configured, Plan, Refusal};
use super::Link;
use crate::store::writer::{Solo, WriterHandle};
use crate::store::{now_ms, Store, StoreError};

/// How long used and expired codes, and old failures, are kept: a late
/// try is told the code expired (or was used), not that it never was.
const KEEP_MS: i64 = 24 * 3600 * 1000;

/// Every link row, oldest first.
///
/// # Errors
/// When the database cannot be read (or has no `links` table yet).
pub(crate) async fn load(store: &Store) -> Result<Vec<Link>, StoreError> {
    let rows = sqlx::query(SELECT_LINKS).fetch_all(store.pool()).await?;
    rows.into_iter()
        .map(|r| decode(&exec::Row::Any(r)))
        .collect()
}

/// Outbox rows waiting for `account`/`channel`.
///
/// # Errors
/// When the database cannot be read.
pub(crate) async fn waiting(
    store: &Store,
    account: &AccountId,
    channel: &ChannelId,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM outbox WHERE account = $1 AND channel = $2 AND state = 'pending'",
    )
    .bind(account.to_string())
    .bind(channel.as_str())
    .fetch_one(store.pool())
    .await?;
    Ok(row.try_get(0)?)
}

/// Whether `event` (an edit, a delete, a reaction) changes what never
/// left its chat: a command to switchboard, or switchboard's answer to
/// one (a notice whose origin is this very chat). Such a change is not
/// routed: nothing of it exists anywhere else.
///
/// # Errors
/// The database's.
pub(crate) async fn stays_in_its_chat(
    tx: &mut Tx<'_>,
    event: &NewEvent,
    target: EventId,
) -> Result<bool, StoreError> {
    let row = stmt("SELECT kind, account, channel FROM events WHERE id = $1")
        .bind(target.0)
        .fetch_optional(tx)
        .await?;
    let Some(row) = row else { return Ok(false) };
    let (kind, account, channel): (String, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(kind == "command"
        || (kind == "notice"
            && account == event.origin.account.to_string()
            && channel == event.origin.channel.as_str()))
}

const SELECT_LINKS: &str =
    "SELECT id, gateway, account, channel, name, created_ms, created_by FROM links ORDER BY id";

/// A row of [`SELECT_LINKS`], read through the pool or by the writer.
fn decode(r: &exec::Row) -> Result<Link, StoreError> {
    let corrupt = |e: switchboard_core::ParseIdError| StoreError::Corrupt(e.to_string());
    Ok(Link {
        id: r.try_get(0)?,
        gateway: GatewayName::new(r.try_get::<String, _>(1)?).map_err(corrupt)?,
        account: r.try_get::<String, _>(2)?.parse().map_err(corrupt)?,
        channel: ChannelId::new(r.try_get::<String, _>(3)?).map_err(corrupt)?,
        name: r.try_get(4)?,
        created_ms: r.try_get(5)?,
        created_by: r.try_get(6)?,
    })
}

/// The limit on wrong codes: so many in so long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) attempts: u32,
    pub(crate) window_ms: i64,
}

/// A change to the links.
pub(crate) enum Op {
    /// A pairing code for `chat`, valid `ttl_ms`.
    Offer {
        hash: String,
        chat: Chat,
        by: String,
        ttl_ms: i64,
    },
    /// A code sent in `chat` (`hash` `None`: not even a code's form):
    /// links `chat` with the chat the code came from.
    Redeem {
        hash: Option<String>,
        chat: Chat,
        by: String,
        limit: Limit,
        configured: Configured,
    },
    /// Links `second` with `first` (the admin API).
    Link {
        first: Chat,
        second: Chat,
        by: String,
        configured: Configured,
    },
    /// A chat leaves its gateway.
    Unlink {
        account: AccountId,
        channel: ChannelId,
    },
    /// A link row leaves its gateway (the admin API).
    Remove { id: i64 },
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The code is stored.
    Offered,
    /// The chat sent too many wrong codes; it may try again in so long.
    TooMany { retry_in_ms: i64 },
    /// No such code (counted as a wrong one).
    NoCode,
    /// The code expired (counted).
    Expired,
    /// The code was used (counted).
    Used,
    /// Not linked, and why (not counted; the code stays valid).
    Refused { refusal: Refusal, first: Chat },
    /// Linked: `second` joined `gateway` with `first` (`new`: a gateway
    /// made for the two).
    Linked {
        gateway: GatewayName,
        first: Chat,
        second: Chat,
        new: bool,
    },
    /// The chat was in no link.
    NotLinked,
    /// `left` left its gateway; `dissolved`: the rows of a gateway made
    /// from chats that had one chat left, removed with it.
    Unlinked { left: Link, dissolved: Vec<Link> },
}

/// Runs `op` in a transaction of its own; its outcome once committed.
///
/// # Errors
/// The database's (nothing changed).
pub(crate) async fn change(writer: &WriterHandle, op: Op) -> Result<Outcome, StoreError> {
    let (reply, rx) = oneshot::channel();
    writer
        .solo(Box::new(Change {
            op,
            outcome: None,
            reply: Some(reply),
        }))
        .await?;
    rx.await.map_err(|_| StoreError::WriterGone)?
}

struct Change {
    op: Op,
    /// Decided by the last `apply`; answered once committed.
    outcome: Option<Outcome>,
    reply: Option<oneshot::Sender<Result<Outcome, StoreError>>>,
}

#[async_trait::async_trait]
impl Solo for Change {
    async fn apply(&mut self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        let outcome = match &self.op {
            Op::Offer {
                hash,
                chat,
                by,
                ttl_ms,
            } => offer(tx, hash, chat, by, now, now + ttl_ms).await?,
            Op::Redeem {
                hash,
                chat,
                by,
                limit,
                configured,
            } => redeem(tx, hash.as_deref(), chat, by, *limit, configured, now).await?,
            Op::Link {
                first,
                second,
                by,
                configured,
            } => {
                let rows = all(tx).await?;
                match plan(configured, &rows, first, second) {
                    Ok(p) => put(tx, &rows, p, first, second, by, now).await?,
                    Err(refusal) => Outcome::Refused {
                        refusal,
                        first: first.clone(),
                    },
                }
            }
            Op::Unlink { account, channel } => {
                let rows = all(tx).await?;
                match rows
                    .iter()
                    .find(|r| &r.account == account && &r.channel == channel)
                {
                    Some(row) => unlink(tx, &rows, row.clone()).await?,
                    None => Outcome::NotLinked,
                }
            }
            Op::Remove { id } => {
                let rows = all(tx).await?;
                match rows.iter().find(|r| r.id == *id) {
                    Some(row) => unlink(tx, &rows, row.clone()).await?,
                    None => Outcome::NotLinked,
                }
            }
        };
        self.outcome = Some(outcome);
        Ok(())
    }

    fn answer(mut self: Box<Self>, result: Result<(), StoreError>) {
        let outcome = self.outcome.take();
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result.and_then(|()| {
                outcome.ok_or_else(|| StoreError::Corrupt("a link change without outcome".into()))
            }));
        }
    }
}

async fn all(tx: &mut Tx<'_>) -> Result<Vec<Link>, StoreError> {
    let rows = stmt(SELECT_LINKS).fetch_all(tx).await?;
    rows.iter().map(decode).collect()
}

async fn offer(
    tx: &mut Tx<'_>,
    hash: &str,
    chat: &Chat,
    by: &str,
    now: i64,
    expires: i64,
) -> Result<Outcome, StoreError> {
    // Old codes and failures go whenever a new code comes.
    stmt("DELETE FROM link_codes WHERE expires_ms < $1")
        .bind(now - KEEP_MS)
        .execute(tx)
        .await?;
    stmt("DELETE FROM link_failures WHERE at_ms < $1")
        .bind(now - KEEP_MS)
        .execute(tx)
        .await?;
    stmt(
        "INSERT INTO link_codes (hash, account, channel, name, created_by, created_ms, expires_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(hash)
    .bind(chat.account.to_string())
    .bind(chat.channel.as_str())
    .bind(chat.name.as_deref())
    .bind(by)
    .bind(now)
    .bind(expires)
    .execute(tx)
    .await?;
    Ok(Outcome::Offered)
}

async fn redeem(
    tx: &mut Tx<'_>,
    hash: Option<&str>,
    second: &Chat,
    by: &str,
    limit: Limit,
    configured: &Configured,
    now: i64,
) -> Result<Outcome, StoreError> {
    let (account, channel) = (second.account.to_string(), second.channel.as_str());
    let failures = stmt(
        "SELECT COUNT(*), MIN(at_ms) FROM link_failures \
         WHERE account = $1 AND channel = $2 AND at_ms > $3",
    )
    .bind(account.as_str())
    .bind(channel)
    .bind(now - limit.window_ms)
    .fetch_one(tx)
    .await?;
    let (count, oldest): (i64, Option<i64>) = (failures.try_get(0)?, failures.try_get(1)?);
    if count >= i64::from(limit.attempts) {
        return Ok(Outcome::TooMany {
            retry_in_ms: (oldest.unwrap_or(now) + limit.window_ms - now).max(1000),
        });
    }
    let code = match hash {
        None => None,
        Some(h) => stmt(
            "SELECT account, channel, name, expires_ms, used_ms FROM link_codes WHERE hash = $1",
        )
        .bind(h)
        .fetch_optional(tx)
        .await?,
    };
    let wrong = match &code {
        None => Some(Outcome::NoCode),
        Some(c) if c.try_get::<Option<i64>, _>(4)?.is_some() => Some(Outcome::Used),
        Some(c) if c.try_get::<i64, _>(3)? < now => Some(Outcome::Expired),
        Some(_) => None,
    };
    if let Some(wrong) = wrong {
        stmt("INSERT INTO link_failures (account, channel, at_ms) VALUES ($1, $2, $3)")
            .bind(account.as_str())
            .bind(channel)
            .bind(now)
            .execute(tx)
            .await?;
        return Ok(wrong);
    }
    let code = code.expect("found above");
    let corrupt = |e: switchboard_core::ParseIdError| StoreError::Corrupt(e.to_string());
    let first = Chat {
        account: code.try_get::<String, _>(0)?.parse().map_err(corrupt)?,
        channel: ChannelId::new(code.try_get::<String, _>(1)?).map_err(corrupt)?,
        name: code.try_get(2)?,
    };
    let rows = all(tx).await?;
    let p = match plan(configured, &rows, &first, second) {
        Ok(p) => p,
        Err(refusal) => return Ok(Outcome::Refused { refusal, first }),
    };
    let used = stmt("UPDATE link_codes SET used_ms = $1 WHERE hash = $2 AND used_ms IS NULL")
        .bind(now)
        .bind(hash)
        .execute(tx)
        .await?;
    if used.rows_affected() != 1 {
        return Ok(Outcome::Used);
    }
    put(tx, &rows, p, &first, second, by, now).await
}

/// Writes the rows a plan needs: `second` into the gateway (and `first`
/// too, into a new one).
async fn put(
    tx: &mut Tx<'_>,
    rows: &[Link],
    p: Plan,
    first: &Chat,
    second: &Chat,
    by: &str,
    now: i64,
) -> Result<Outcome, StoreError> {
    let (gateway, new) = match p {
        Plan::Join(g) => (g, false),
        Plan::New => {
            let name = loop {
                let name = format!(
                    "{}{:06x}",
                    super::GATEWAY_PREFIX,
                    rand::random::<u32>() >> 8
                );
                if !rows.iter().any(|r| r.gateway.as_str() == name) {
                    break name;
                }
            };
            let gateway = GatewayName::new(name).expect("a valid name");
            insert(tx, &gateway, first, by, now).await?;
            (gateway, true)
        }
    };
    insert(tx, &gateway, second, by, now).await?;
    Ok(Outcome::Linked {
        gateway,
        first: first.clone(),
        second: second.clone(),
        new,
    })
}

async fn insert(
    tx: &mut Tx<'_>,
    gateway: &GatewayName,
    chat: &Chat,
    by: &str,
    now: i64,
) -> Result<(), StoreError> {
    stmt(
        "INSERT INTO links (gateway, account, channel, name, created_ms, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(gateway.as_str())
    .bind(chat.account.to_string())
    .bind(chat.channel.as_str())
    .bind(chat.name.as_deref())
    .bind(now)
    .bind(by)
    .execute(tx)
    .await?;
    Ok(())
}

/// Removes `row`; a gateway made from chats left with one chat goes too.
async fn unlink(tx: &mut Tx<'_>, rows: &[Link], row: Link) -> Result<Outcome, StoreError> {
    stmt("DELETE FROM links WHERE id = $1")
        .bind(row.id)
        .execute(tx)
        .await?;
    let rest: Vec<Link> = rows
        .iter()
        .filter(|r| r.gateway == row.gateway && r.id != row.id)
        .cloned()
        .collect();
    let dissolved = if super::is_chat_made(&row.gateway) && rest.len() <= 1 {
        for r in &rest {
            stmt("DELETE FROM links WHERE id = $1")
                .bind(r.id)
                .execute(tx)
                .await?;
        }
        rest
    } else {
        Vec::new()
    };
    Ok(Outcome::Unlinked {
        left: row,
        dissolved,
    })
}
