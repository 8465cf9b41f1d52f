//! End-to-end tests: every test runs the real `switchboard` binary against
//! a real database (SQLite, or the PostgreSQL `.ci/run` starts) and talks
//! to it over loopback, as bots and webhook receivers would.
//!
//! # Layout
//! - `admin`: the admin listener locked, dead letters requeued and dropped,
//!   public status pages.
//! - `api`: attachments, idempotency, token files, dead letters, OpenAPI.
//! - `harness`: databases, the process, clients, the webhook receiver.
//! - `browser`: the admin page in a real headless Chromium, with an
//!   accessibility check and screenshots.
//! - `bots`: four bots (native and matterbridge) and late consumers.
//! - `cluster`: several instances on one PostgreSQL (issue 25): leases,
//!   fencing, the feed across writers, the one-instance guard, and three
//!   instances through kill -9 and a rolling restart.
//! - `destinations`: a webhook naming a gateway its account is not in
//!   is a destination, and its outages are announced.
//! - `crash`: kill -9 with 5,000 messages in flight.
//! - `openapi`: the generated OpenAPI documents under an OpenAPI fuzzer.
//! - `notices`: one down and one back notice per outage (guarantee 4).
//! - `outbox`: fallbacks and the breaker through a scripted adapter.
//! - `pause`: `switchboard pause` / `resume` hold and release a queue.
//! - `outage`: a webhook that refuses, hangs or answers 429.
//! - `bad_input`: bad configuration and bad API requests.
//! - `batch`: webhooks taking a backlog in batches (issue 26).
//! - `reload`: SIGHUP and `switchboard reload` while messages flow.
//! - `references`: edits, deletes, reactions across a restart.
//! - `retention`: two simulated weeks stay bounded to one; what is still
//!   needed survives pruning.
//! - `signatures`: the README's webhook verification examples, run.
//! - `store`: the store's contract on both backends.
//! - `receive`: the adapter contract's receive side with the scripted fake.
//! - `fuzz_corpus`: the fuzz targets' seed corpus, replayed.
//! - `drills`: outage drills across Telegram, Signal, Matrix and the bot API.
//! - `durability`: disk full and PostgreSQL down: nothing acknowledged is lost.
//! - `readme`: the README's commands on the embedded default.
//! - `links`: links made from the chats (issue 23): pairing codes across
//!   Telegram, a real Synapse and Signal, unlink, status, kill -9, reload;
//!   wrong codes limited; the admin API; the configuration wins.
//! - `matrix`: a Matrix room on a real Synapse, bot and appservice mode.
//! - `matrix_real`: Matrix as it really is: Synapse's own rate limits, a
//!   proxy that fails files and loses answers, moderators, stickers,
//!   per-message profiles.
//! - `signal`: a Signal group through the signal-cli daemon fake, both ways.
//! - `signal_fidelity`: Signal as it really is (issue 20), item by item,
//!   against the fake where a Signal account is needed.
//! - `signal_real`: the real signal-cli daemon (no account): the fake's
//!   answers checked against it, an account it does not serve, a kill.
//! - `synapse`: a real Synapse homeserver and its users, for the Matrix tests.
//! - `telegram`: a Telegram group through the Bot API fake, both ways.
//! - `telegram_in`, `telegram_out`: Telegram as it really is (issue 19),
//!   receiving and sending.

/// One test body run on both backends, instead of hand-written twins:
/// `on_both_backends!(name => |backend| body(backend));` makes the tests
/// `name::sqlite` and `name::postgres` (the PostgreSQL one needs
/// `SWITCHBOARD_TEST_POSTGRES_URL`, which `.ci/run` sets).
macro_rules! on_both_backends {
    ($name:ident => |$backend:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let $backend = crate::harness::Backend::Sqlite;
                $body.await;
            }

            #[tokio::test]
            async fn postgres() {
                let $backend = crate::harness::Backend::Postgres;
                $body.await;
            }
        }
    };
}

mod admin;
mod api;
mod bad_input;
mod batch;
mod bots;
mod browser;
mod cluster;
mod crash;
mod destinations;
mod drills;
mod durability;
mod fuzz_corpus;
mod harness;
mod links;
mod matrix;
mod matrix_real;
mod notices;
mod openapi;
mod outage;
mod outbox;
mod pause;
mod readme;
mod receive;
mod references;
mod reload;
mod retention;
mod signal;
mod signal_fidelity;
mod signal_real;
mod signatures;
mod store;
mod synapse;
mod telegram;
mod telegram_in;
mod telegram_out;
