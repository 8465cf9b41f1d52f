//! Several instances on one PostgreSQL (issue 25, docs/scaling.md).
//!
//! - `leases`: the lease table and fencing against the real PostgreSQL,
//!   through the library: a lease moves only once it ran out, a holder
//!   that lost it cannot commit its cursor, a write in progress keeps its
//!   lease until it commits, shares spread.
//! - `feed`: a consumer's cursor never passes a row another instance
//!   commits later with a smaller number (and, as a control, the hazard
//!   without the cluster's ordering lock).
//! - `guard`: one instance per database unless they are a cluster, each
//!   refusal saying why (SQLite, PostgreSQL, a lone instance beside a
//!   cluster, two instances of one name).
//! - `three`: three instances through the real binary with the Telegram
//!   and Signal fakes and a real Synapse: traffic both ways on many
//!   gateways through kill -9 of the Telegram holder, of a lane holder,
//!   and a rolling restart of all three.

mod feed;
mod guard;
mod leases;
mod three;

use std::sync::Arc;

use switchboard::store::postgres::Fence;
use switchboard::store::writer::CommitSink;
use switchboard::store::{Dest, IngestItem, IngestOutcome};
use switchboard_core::{
    AccountId, Author, ChannelId, EventKind, GatewayName, NewEvent, Origin, RemoteId, RichText,
};

/// A commit sink that answers one fence for every account.
pub(crate) struct FenceSink(pub Option<Fence>);

impl CommitSink for FenceSink {
    fn committed(&self, _: &[IngestOutcome]) {}
    fn batch(&self, _: usize, _: std::time::Duration) {}
    fn fence(&self, _: &AccountId) -> Option<Fence> {
        self.0.clone()
    }
}

pub(crate) fn sink(fence: Option<Fence>) -> Arc<FenceSink> {
    Arc::new(FenceSink(fence))
}

/// A message from Telegram chat `chat`, into gateway `g`'s feed and a
/// webhook lane.
pub(crate) fn message(chat: &str, remote: &str, text: &str) -> IngestItem {
    IngestItem {
        event: NewEvent {
            key: None,
            origin: Origin {
                account: "telegram.main".parse().unwrap(),
                channel: ChannelId::new(chat).unwrap(),
                remote_id: RemoteId::new(remote).unwrap(),
                thread: None,
            },
            author: Author {
                remote_id: "u1".into(),
                display_name: "Ann".into(),
                ..Author::default()
            },
            at: time::OffsetDateTime::now_utc(),
            kind: EventKind::Message {
                body: RichText::plain(text),
                attachments: Vec::new(),
                reply_to: None,
            },
        },
        origin_token: None,
        dests: vec![Dest {
            gateway: GatewayName::new("g").unwrap(),
            account: "api.bots".parse().unwrap(),
            channel: ChannelId::new("webhook:x").unwrap(),
        }],
        feed: vec![GatewayName::new("g").unwrap()],
        check_echo: false,
    }
}

/// A raw pool on `url`, beside the store's.
pub(crate) async fn pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap()
}
