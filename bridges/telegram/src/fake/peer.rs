//! The fake as the hub's drills drive every network
//! ([`switchboard_core::testkit::TestPeer`]): a supergroup with a person
//! (Tina) writing in it, the bot an admin there (so reactions reach it),
//! and the service's faults: refused connections, hangs, slow answers,
//! flood limits with their `retry_after`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::json;
use switchboard_core::testkit::{
    Fault as PeerFault, Posted, RateLimited, TestPeer, TestPeerFactory,
};
use switchboard_core::Network;

use super::{FakeOptions, FakeTelegram, Fault, Outage};

/// The drills' supergroup.
pub const GROUP: i64 = -1_001_000_000_777;

/// Starts [`TelegramPeer`]s.
pub struct Peers;

/// The value the connector hands out.
pub static PEERS: Peers = Peers;

/// The fake with its conversation.
pub struct TelegramPeer {
    /// The fake itself, for what a test asks only of Telegram.
    pub fake: FakeTelegram,
    /// The `retry_after` of the last storm set: what a 429 asked for.
    asked: std::sync::Mutex<Duration>,
}

#[async_trait]
impl TestPeerFactory for Peers {
    async fn start(&self, _dir: &Path) -> Box<dyn TestPeer> {
        // Flood limits off: a drill sets the storms it wants itself.
        let fake = FakeTelegram::start(FakeOptions {
            per_chat_per_minute: None,
            per_bot_per_second: None,
            ..FakeOptions::default()
        })
        .await
        .expect("the fake Telegram");
        fake.add_chat(GROUP, "supergroup", "Lobby", false);
        // Reactions reach only a bot that is an admin of the group.
        fake.set_bot_admin(GROUP, true);
        Box::new(TelegramPeer {
            fake,
            asked: std::sync::Mutex::new(Duration::ZERO),
        })
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An `Instant` from the past as milliseconds since the epoch.
fn instant_ms(at: Instant) -> u64 {
    now_ms().saturating_sub(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl TestPeer for TelegramPeer {
    fn network(&self) -> Network {
        crate::NETWORK
    }

    fn sender(&self) -> &'static str {
        "tg"
    }

    fn section(&self) -> String {
        format!(
            "\n[telegram.main]\ntoken = \"{}\"\napi_url = \"{}\"\npoll_timeout = \"2s\"\npace_per_chat = \"0s\"\npace_per_bot = \"0s\"\n",
            self.fake.token(),
            self.fake.api_url()
        )
    }

    fn section_changed(&self) -> String {
        self.section()
            .replace("poll_timeout = \"2s\"", "poll_timeout = \"3s\"")
    }

    fn channel(&self) -> String {
        GROUP.to_string()
    }

    async fn ready(&self) {}

    async fn write(&self, text: &str) {
        let tina = FakeTelegram::user(42, "Tina", Some("tina"));
        self.fake
            .inject_message(GROUP, &tina, json!({ "text": text }));
    }

    async fn write_file(&self, text: &str, name: &str, content: &str) {
        let tina = FakeTelegram::user(42, "Tina", Some("tina"));
        let document = self
            .fake
            .store_file(content.as_bytes().to_vec(), "text/plain", Some(name));
        self.fake.inject_message(
            GROUP,
            &tina,
            json!({ "caption": text, "document": document }),
        );
    }

    async fn posted(&self) -> Vec<Posted> {
        let bot = self.fake.bot()["id"].as_i64();
        // The fake stamps messages in whole seconds; its call log says to
        // the millisecond when each answered send was read.
        let mut read_at = std::collections::HashMap::new();
        for c in self.fake.calls_to("sendMessage") {
            if let (Some(200), Some(text)) = (c.status, c.param("text")) {
                read_at.entry(text).or_insert(instant_ms(c.at));
            }
        }
        self.fake
            .messages(GROUP)
            .into_iter()
            .filter(|m| m["from"]["id"].as_i64() == bot)
            .filter_map(|m| {
                let text = m["text"].as_str().or(m["caption"].as_str())?.to_owned();
                let at_ms = read_at
                    .get(&text)
                    .copied()
                    .unwrap_or(m["date"].as_u64().unwrap_or(0) * 1000);
                Some(Posted { text, at_ms })
            })
            .collect()
    }

    async fn fault(&self, fault: PeerFault) {
        match fault {
            PeerFault::None => {
                self.fake.set_outage(Outage::Up).await;
                self.fake.clear_faults();
            }
            PeerFault::Refuse => self.fake.set_outage(Outage::Refuse).await,
            PeerFault::Hang => self.fake.set_outage(Outage::Hang).await,
            PeerFault::Slow(d) => self.fake.fail("*", Fault::Hang(d), usize::MAX),
            PeerFault::RateLimit { retry_after, times } => {
                let secs = retry_after.as_secs().max(1);
                *self.asked.lock().expect("asked lock") = Duration::from_secs(secs);
                self.fake.fail("sendMessage", Fault::flood(secs), times);
            }
        }
    }

    async fn rate_limited(&self, since_ms: u64) -> Vec<RateLimited> {
        let calls: Vec<_> = self
            .fake
            .calls_to("sendMessage")
            .into_iter()
            .filter(|c| instant_ms(c.at) >= since_ms)
            .collect();
        let mut out = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            if c.status != Some(429) {
                continue;
            }
            let Some(next) = calls.get(i + 1) else {
                continue;
            };
            out.push(RateLimited {
                asked: *self.asked.lock().expect("asked lock"),
                waited: next.at - c.at,
            });
        }
        out
    }

    fn unacknowledged(&self) -> Option<usize> {
        Some(self.fake.pending_updates())
    }

    fn holds_until_acknowledged(&self) -> bool {
        true
    }

    fn people_write_while_down(&self) -> bool {
        true
    }

    fn may_repeat(&self) -> bool {
        true
    }

    fn limits_exactly(&self) -> bool {
        true
    }
}
