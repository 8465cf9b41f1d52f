//! Scenario 7: Telegram, against the in-process fake of the Bot API
//! (`switchboard_telegram::fake`), with the adapter's pacing and the fake's
//! flood limits off. 50 gateways, each the bot API and one Telegram group
//! (the runs: [`super::network`]). For comparison, the outbound load also
//! goes to one webhook per gateway instead of a group, and scenario 2's
//! relay runs with the same count.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};
use switchboard_telegram::fake::{FakeOptions, FakeTelegram};

use super::network::{judge, Extras, Fake, GROUPS};
use super::Ctx;
use crate::consume::{Progress, Tracker};
use crate::load::parse_marker;
use crate::report::{now_ns, ns_at};
use crate::server::Spec;

/// The Telegram account in the generated config.
const ACCOUNT: &str = "telegram.main";

/// The chat id of group `k` (supergroups: -100…).
fn chat_id(k: usize) -> i64 {
    -1_001_000_000_001 - k as i64
}

/// Scenario 7: the fake Bot API with its groups and their users.
pub struct Telegram {
    tg: FakeTelegram,
    users: Vec<Value>,
}

impl Fake for Telegram {
    const NAME: &'static str = "Telegram";
    const NUMBER: u32 = 7;
    const TITLE: &'static str =
        "Telegram: bot API ↔ 50 groups of the fake Bot API, pacing and flood limits off";
    const EXTRAS: Extras = Extras {
        webhooks: true,
        s2: true,
    };

    fn notes(ctx: &Ctx, total: u64) -> String {
        format!(
            "{total} messages per run, a fresh server, database and fake per run; {GROUPS} \
             gateways, each the bot API and one Telegram supergroup of the fake \
             (`switchboard_telegram::fake`, in the bench process, flood limits off); the \
             adapter's `pace_per_chat` and `pace_per_bot` are 0, `poll_timeout` 2 s. \
             bot API → Telegram: native posts ({} in flight) round-robin over the gateways; \
             a message arrives when the fake has read its sendMessage request (`Call::at`, \
             exact: the fake stores the message right after); order is judged per group \
             (message ids), lost/dup per message. Telegram → bot API: users write \
             round-robin into the groups (`inject_message`; unthrottled: as fast as the \
             fake takes them, the whole burst in a few tens of ms, so latency is the wait \
             in the backlog), one WebSocket consumer of all {GROUPS} gateways; latency: \
             injection → frame received; ack p99 is '-' (no request). bot API → 50 \
             webhooks: the outbound load to one webhook per gateway (the bench's \
             receiver) instead of a group. `bench CPU` includes the fake. The `(s2)` rows \
             are scenario 2 (native POST → SSE, one gateway) with the same count, same \
             session. The check counts the Telegram rows.",
            ctx.in_flight,
        )
    }

    fn start() -> BoxFuture<'static, anyhow::Result<Self>> {
        async {
            let tg = FakeTelegram::start(FakeOptions {
                per_chat_per_minute: None,
                per_bot_per_second: None,
                ..FakeOptions::default()
            })
            .await?;
            for k in 0..GROUPS {
                tg.add_chat(chat_id(k), "supergroup", &format!("Group {k}"), false);
            }
            let users = (0..GROUPS)
                .map(|k| FakeTelegram::user(1_000 + k as i64, &format!("User {k}"), None))
                .collect();
            Ok(Self { tg, users })
        }
        .boxed()
    }

    fn spec(&self, gateways: Vec<String>) -> Spec {
        Spec {
            members: (0..GROUPS)
                .map(|k| (format!("g{k}"), ACCOUNT.into(), chat_id(k).to_string()))
                .collect(),
            extra: format!(
                "[{ACCOUNT}]\ntoken = \"{}\"\napi_url = \"{}\"\npoll_timeout = \"2s\"\n\
                 pace_per_chat = \"0s\"\npace_per_bot = \"0s\"\n",
                self.tg.token(),
                self.tg.api_url()
            ),
            gateways,
            ..Spec::default()
        }
    }

    /// Waits until the adapter polls the fake (it has said hello with getMe).
    fn ready(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        async {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.tg.calls_to("getUpdates").is_empty() {
                if Instant::now() > deadline {
                    bail!("the Telegram adapter did not poll the fake within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        }
        .boxed()
    }

    fn inject(&self, k: usize, text: &str) {
        self.tg
            .inject_message(chat_id(k), &self.users[k], json!({ "text": text }));
    }

    /// Message ids count up from 1 in each chat, so one lookup per group
    /// and new message does.
    fn watch(self: Arc<Self>, progress: Arc<Progress>) -> BoxFuture<'static, ()> {
        async move {
            let mut next = [1_i64; GROUPS];
            loop {
                for (k, id) in next.iter_mut().enumerate() {
                    while self.tg.message(chat_id(k), *id).is_some() {
                        *id += 1;
                    }
                }
                let stored = next.iter().map(|id| id.unsigned_abs() - 1).sum();
                progress.unique.store(stored, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        .boxed()
    }

    /// The groups in message-id order, each message timed by when the fake
    /// had read its sendMessage request (it stores the message right
    /// after).
    fn collect(&self, total: u64) -> Tracker {
        let mut read_at: HashMap<u64, u64> = HashMap::new();
        for call in self.tg.calls_to("sendMessage") {
            if call.status != Some(200) {
                continue;
            }
            if let Some((_, seq, _)) = call.param("text").as_deref().and_then(parse_marker) {
                read_at.entry(seq).or_insert(ns_at(call.at));
            }
        }
        let groups = (0..GROUPS)
            .map(|k| {
                self.tg
                    .messages(chat_id(k))
                    .iter()
                    .map(|m| {
                        let text = m["text"].as_str().unwrap_or_default().to_owned();
                        let at = parse_marker(&text)
                            .and_then(|(_, seq, _)| read_at.get(&seq).copied())
                            .unwrap_or_else(now_ns);
                        (text, m["message_id"].as_i64(), at)
                    })
                    .collect()
            })
            .collect();
        judge(total, groups)
    }

    fn stop(self) -> BoxFuture<'static, ()> {
        self.tg.stop().boxed()
    }
}
