//! Scenario 8: Signal, against the in-process fake of the signal-cli
//! daemon (`switchboard_signal::fake`) over JSON-RPC on TCP, in manual
//! receive mode with answer shuffling off. 50 gateways, each the bot API
//! and one Signal group (the runs: [`super::network`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};
use switchboard_signal::fake::{FakeOptions, FakeSignal, ReceiveMode};

use super::network::{judge, Extras, Fake, GROUPS};
use super::Ctx;
use crate::consume::{Progress, Tracker};
use crate::load::parse_marker;
use crate::report::now_ns;
use crate::server::Spec;

/// The Signal account in the generated config.
const ACCOUNT: &str = "signal.main";

/// How often the fake's send log is read.
const POLL: Duration = Duration::from_millis(5);

/// Scenario 8: the fake daemon with its groups and their users, and when
/// each relayed message was first seen in its send log.
pub struct Signal {
    fake: FakeSignal,
    /// Group `k`'s id.
    groups: Vec<String>,
    /// Group `k`'s one member besides the account.
    users: Vec<String>,
    /// seq → bench ns of the poll that first saw its `send`.
    seen_at: Mutex<HashMap<u64, u64>>,
    /// Polls of the send log, and their total and longest time, ns.
    polls: [AtomicU64; 3],
}

/// The `send`s of a send log that succeeded, as (group id, message text).
fn sends(log: &[switchboard_signal::fake::Sent]) -> impl Iterator<Item = (&str, &str)> {
    log.iter()
        .filter(|s| s.method == "send" && s.ok())
        .filter_map(|s| {
            let group = match &s.params["groupId"] {
                Value::Array(ids) => ids.first()?.as_str()?,
                id => id.as_str()?,
            };
            Some((group, s.params["message"].as_str()?))
        })
}

impl Fake for Signal {
    const NAME: &'static str = "Signal";
    const NUMBER: u32 = 8;
    const TITLE: &'static str =
        "Signal: bot API ↔ 50 groups of the fake signal-cli daemon (JSON-RPC over TCP)";
    const EXTRAS: Extras = Extras {
        webhooks: false,
        s2: false,
    };

    fn notes(ctx: &Ctx, total: u64) -> String {
        format!(
            "{total} messages per run, a fresh server, database and fake per run; {GROUPS} \
             gateways, each the bot API and one Signal group of the fake \
             (`switchboard_signal::fake`, in the bench process, JSON-RPC over TCP, \
             `receive_mode: Manual`, `shuffle_responses: false`: answers are not delayed \
             at random, which the fake does by default). bot API → Signal: native posts \
             ({} in flight) round-robin over the gateways; a message arrives when the \
             bench first sees its `send` in the fake's send log (`sent_since`, read every \
             {} ms: the fake stamps no `Instant`, so arrival times are late by up to one \
             poll interval plus a poll's own duration); order is judged per group (the \
             order the fake carried the sends out), lost/dup per message. Signal → bot \
             API: users write round-robin into the groups (`inject_message`; \
             unthrottled: as fast as the fake takes them, so latency is the wait in the \
             backlog), one WebSocket consumer of all {GROUPS} gateways; latency: \
             injection → frame received; ack p99 is '-' (no request). `bench CPU` \
             includes the fake and the polling. Compare with scenario 7 of the same \
             session. The check counts all rows.",
            ctx.in_flight,
            POLL.as_millis(),
        )
    }

    fn start() -> BoxFuture<'static, anyhow::Result<Self>> {
        async {
            let fake = FakeSignal::start(FakeOptions {
                receive_mode: ReceiveMode::Manual,
                shuffle_responses: false,
                ..FakeOptions::default()
            })
            .await?;
            let mut groups = Vec::with_capacity(GROUPS);
            let mut users = Vec::with_capacity(GROUPS);
            for k in 0..GROUPS {
                let number = format!("+1555100{k:04}");
                let uuid = format!("00000000-0000-4000-8000-{k:012}");
                fake.add_contact(&number, &uuid, Some(&format!("User {k}")));
                let group = fake.add_group(&format!("Group {k}"), &[&number]);
                groups.push(group);
                users.push(number);
            }
            Ok(Self {
                fake,
                groups,
                users,
                seen_at: Mutex::new(HashMap::new()),
                polls: Default::default(),
            })
        }
        .boxed()
    }

    fn spec(&self, gateways: Vec<String>) -> Spec {
        Spec {
            members: (0..GROUPS)
                .map(|k| (format!("g{k}"), ACCOUNT.into(), self.groups[k].clone()))
                .collect(),
            extra: format!(
                "[{ACCOUNT}]\naccount = \"{}\"\ndaemon = \"tcp://{}\"\n",
                self.fake.account(),
                self.fake.tcp_addr()
            ),
            gateways,
            ..Spec::default()
        }
    }

    /// Waits until the adapter has called `subscribeReceive`.
    fn ready(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        async {
            if !self.fake.wait_receivers(1, Duration::from_secs(30)).await {
                bail!("the Signal adapter did not subscribe to the fake within 30 s");
            }
            Ok(())
        }
        .boxed()
    }

    fn inject(&self, k: usize, text: &str) {
        self.fake.inject_message(
            &self.users[k],
            Some(&self.groups[k]),
            json!({ "message": text }),
        );
    }

    /// The fake stamps its send log with Signal timestamps (wall-clock ms,
    /// bumped to stay unique), not `Instant`s: so each message is timed by
    /// the start of the first poll that saw it, one poll every 5 ms. A poll
    /// reads only the entries it has not seen (`sent_since`): a clone of
    /// the whole log held the fake's lock for up to 50 ms per poll by the
    /// end of a run, stalling the daemon the server talks to.
    fn watch(self: Arc<Self>, progress: Arc<Progress>) -> BoxFuture<'static, ()> {
        async move {
            let mut next = 0;
            loop {
                let at = now_ns();
                let t0 = Instant::now();
                let log = self.fake.sent_since(next);
                let took = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.polls[0].fetch_add(1, Ordering::Relaxed);
                self.polls[1].fetch_add(took, Ordering::Relaxed);
                self.polls[2].fetch_max(took, Ordering::Relaxed);
                {
                    let mut seen = self.seen_at.lock().expect("seen_at");
                    for (_, text) in sends(&log) {
                        if let Some((_, seq, _)) = parse_marker(text) {
                            seen.entry(seq).or_insert(at);
                        }
                    }
                    progress.unique.store(seen.len() as u64, Ordering::Relaxed);
                }
                next += log.len();
                drop(log);
                tokio::time::sleep(POLL).await;
            }
        }
        .boxed()
    }

    /// The groups in the order the fake carried the sends out.
    fn collect(&self, total: u64) -> Tracker {
        let [n, sum, max] = self.polls.each_ref().map(|a| a.load(Ordering::Relaxed));
        if n > 0 {
            eprintln!(
                "  {n} polls of the fake's send log, {:.2} ms each on average, {:.2} ms at most",
                sum as f64 / n as f64 / 1e6,
                max as f64 / 1e6
            );
        }
        let index: HashMap<&str, usize> = self
            .groups
            .iter()
            .enumerate()
            .map(|(k, g)| (g.as_str(), k))
            .collect();
        let seen_at = self.seen_at.lock().expect("seen_at");
        let log = self.fake.sent();
        let mut groups = vec![Vec::new(); GROUPS];
        for (group, text) in sends(&log) {
            let Some(&k) = index.get(group) else {
                continue;
            };
            let at = parse_marker(text)
                .and_then(|(_, seq, _)| seen_at.get(&seq).copied())
                .unwrap_or_else(now_ns);
            groups[k].push((text.to_owned(), None, at));
        }
        judge(total, groups)
    }

    fn stop(self) -> BoxFuture<'static, ()> {
        self.fake.stop().boxed()
    }
}
