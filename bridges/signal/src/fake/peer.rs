//! The fake as the hub's drills drive every network
//! ([`switchboard_core::testkit::TestPeer`]): a group with a person (Sam)
//! writing in it, the daemon in `--receive-mode=manual` (messages stay on
//! Signal's server while the bridge is away), and the daemon's faults:
//! refused connections, a frozen daemon, slow answers, Signal's rate
//! limit with how long it lasts.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use switchboard_core::testkit::{
    Fault as PeerFault, Posted, RateLimited, TestPeer, TestPeerFactory,
};
use switchboard_core::Network;

use super::{DaemonVersion, FakeOptions, FakeSignal, Fault, Outage, ReceiveMode};

/// The person writing in the group.
pub const SAM: &str = "+15550000002";

/// Starts [`SignalPeer`]s.
pub struct Peers;

/// The value the connector hands out.
pub static PEERS: Peers = Peers;

/// The fake daemon with its group.
pub struct SignalPeer {
    /// The fake itself, for what a test asks only of Signal.
    pub fake: FakeSignal,
    /// The group's id.
    pub group: String,
    /// The wait the last storm asks for.
    asked: std::sync::Mutex<Duration>,
}

#[async_trait]
impl TestPeerFactory for Peers {
    async fn start(&self, _dir: &Path) -> Box<dyn TestPeer> {
        let fake = FakeSignal::start(FakeOptions {
            receive_mode: ReceiveMode::Manual,
            // The current daemon, which says how long a rate limit lasts.
            version: DaemonVersion::V0_14_6,
            ..FakeOptions::default()
        })
        .await
        .expect("the fake signal-cli");
        fake.add_contact(SAM, "0b8c1a52-8a3e-4f6a-9d41-6f1f3c2b7a10", Some("Sam"));
        let group = fake.add_group("Lobby", &[SAM]);
        Box::new(SignalPeer {
            fake,
            group,
            asked: std::sync::Mutex::new(Duration::ZERO),
        })
    }
}

#[async_trait]
impl TestPeer for SignalPeer {
    fn network(&self) -> Network {
        crate::NETWORK
    }

    fn sender(&self) -> &'static str {
        "sig"
    }

    fn section(&self) -> String {
        format!(
            "\n[signal.main]\naccount = \"{}\"\ndaemon = \"tcp://{}\"\nrequest_timeout = \"10s\"\n",
            self.fake.account(),
            self.fake.tcp_addr()
        )
    }

    fn section_changed(&self) -> String {
        self.section()
            .replace("request_timeout = \"10s\"", "request_timeout = \"11s\"")
    }

    fn channel(&self) -> String {
        self.group.clone()
    }

    async fn ready(&self) {
        assert!(
            self.fake.wait_receivers(1, Duration::from_secs(120)).await,
            "switchboard subscribed to the daemon"
        );
    }

    async fn write(&self, text: &str) {
        self.fake
            .inject_message(SAM, Some(&self.group), json!({ "message": text }));
    }

    async fn write_file(&self, text: &str, name: &str, content: &str) {
        self.fake.inject_message(
            SAM,
            Some(&self.group),
            json!({"message": text, "attachments": [{"contentType": "text/plain",
                "filename": name, "text": content}]}),
        );
    }

    async fn posted(&self) -> Vec<Posted> {
        self.fake
            .sent()
            .into_iter()
            .filter(|s| s.method == "send" && s.error.is_none())
            .filter_map(|s| {
                Some(Posted {
                    text: s.params["message"].as_str()?.to_owned(),
                    at_ms: u64::try_from(s.timestamp).unwrap_or(0),
                })
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
                self.fake.fail(
                    "send",
                    Fault::RateLimit {
                        retry_after_seconds: secs,
                    },
                    times,
                );
            }
        }
    }

    async fn rate_limited(&self, since_ms: u64) -> Vec<RateLimited> {
        // Each send carries the daemon's timestamp, failed ones too.
        let sends: Vec<_> = self
            .fake
            .sent()
            .into_iter()
            .filter(|s| s.method == "send" && u64::try_from(s.timestamp).unwrap_or(0) >= since_ms)
            .collect();
        let mut out = Vec::new();
        for (i, s) in sends.iter().enumerate() {
            if s.error.is_none() {
                continue;
            }
            let Some(next) = sends.get(i + 1) else {
                continue;
            };
            out.push(RateLimited {
                asked: *self.asked.lock().expect("asked lock"),
                waited: Duration::from_millis(
                    u64::try_from(next.timestamp - s.timestamp).unwrap_or(0),
                ),
            });
        }
        out
    }

    fn unacknowledged(&self) -> Option<usize> {
        Some(self.fake.pending_envelopes())
    }

    fn holds_until_acknowledged(&self) -> bool {
        false
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
