//! A real Synapse as the hub's drills drive every network
//! ([`switchboard_core::testkit::TestPeer`]): a private room where a
//! person (Mia) writes, the bridge's own account invited, switchboard
//! reaching the homeserver through a [`Proxy`] (so a drill can slow it),
//! and the homeserver's faults: stopped (refusing), SIGSTOPped (hung),
//! slow, and its own rate limiter turned on for the bridge's user.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::json;
use switchboard_core::testkit::{Fault, Posted, RateLimited, TestPeer, TestPeerFactory};
use switchboard_core::Network;
use tokio::sync::Mutex;

use super::proxy::Proxy;
use super::{enc, MxUser, Synapse};

/// Starts [`MatrixPeer`]s.
pub struct Peers;

/// The value the connector hands out.
pub static PEERS: Peers = Peers;

/// A homeserver with its room.
pub struct MatrixPeer {
    /// The homeserver (stopped, paused and started again by faults).
    pub synapse: Mutex<Synapse>,
    /// Between switchboard and the homeserver.
    pub proxy: Proxy,
    /// The person in the room.
    pub mia: MxUser,
    /// A server admin, for the rate limiter.
    admin: MxUser,
    /// The room.
    pub room: String,
    /// The bridge's user id.
    pub bridge: String,
    /// Synapse's limiter is on for the bridge.
    limited: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl TestPeerFactory for Peers {
    async fn start(&self, dir: &Path) -> Box<dyn TestPeer> {
        let dir = dir.join("synapse");
        std::fs::create_dir_all(&dir).expect("Synapse's directory");
        let synapse = Synapse::start(&dir, &[]).await;
        let mia = synapse.register("mia", false).await;
        mia.set_displayname("Mia").await;
        let admin = synapse.register("admin", true).await;
        synapse.register("bridge", false).await;
        let bridge = synapse.user_id("bridge");
        let room = mia
            .create_room(None, &[bridge.as_str()], Some("private_chat"))
            .await;
        let proxy = Proxy::start(&synapse.url()).await;
        Box::new(MatrixPeer {
            synapse: Mutex::new(synapse),
            proxy,
            mia,
            admin,
            room,
            bridge,
            limited: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// An `Instant` from the past as milliseconds since the epoch.
fn instant_ms(at: Instant) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now.saturating_sub(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
}

impl MatrixPeer {
    /// Turns Synapse's own limiter on (one message a second, no burst) or
    /// off for the bridge's user, through the admin API.
    async fn limit_bridge(&self, on: bool) {
        use std::sync::atomic::Ordering;
        if self.limited.swap(on, Ordering::SeqCst) == on {
            return;
        }
        let path = format!(
            "/_synapse/admin/v1/users/{}/override_ratelimit",
            enc(&self.bridge)
        );
        if on {
            self.admin
                .post(&path, &json!({"messages_per_second": 1, "burst_count": 1}))
                .await;
        } else {
            self.admin.call(reqwest::Method::DELETE, &path, None).await;
        }
    }
}

#[async_trait]
impl TestPeer for MatrixPeer {
    fn network(&self) -> Network {
        crate::NETWORK
    }

    fn sender(&self) -> &'static str {
        "mx"
    }

    fn section(&self) -> String {
        format!(
            "\n[matrix.main]\nhomeserver = \"{}\"\nuser = \"{}\"\npassword = \"pw-bridge\"\nsync_timeout = \"5s\"\n",
            self.proxy.url(),
            self.bridge
        )
    }

    fn section_changed(&self) -> String {
        self.section()
            .replace("sync_timeout = \"5s\"", "sync_timeout = \"6s\"")
    }

    fn channel(&self) -> String {
        self.room.clone()
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.mia.members(&self.room).await.contains(&self.bridge) {
            assert!(
                Instant::now() < deadline,
                "the bridge never joined the room"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn write(&self, text: &str) {
        self.mia.send_text(&self.room, text).await;
    }

    async fn write_file(&self, text: &str, name: &str, content: &str) {
        let mxc = self
            .mia
            .upload(content.as_bytes(), "text/plain", Some(name))
            .await;
        self.mia
            .send(
                &self.room,
                "m.room.message",
                &json!({"msgtype": "m.file", "body": text, "filename": name, "url": mxc,
                    "info": {"mimetype": "text/plain", "size": content.len()}}),
            )
            .await;
    }

    async fn posted(&self) -> Vec<Posted> {
        self.mia
            .messages(&self.room)
            .await
            .into_iter()
            .filter(|e| e["type"] == "m.room.message" && e["sender"] != self.mia.user_id.as_str())
            .filter_map(|e| {
                Some(Posted {
                    text: e["content"]["body"].as_str()?.to_owned(),
                    at_ms: e["origin_server_ts"].as_u64()?,
                })
            })
            .collect()
    }

    async fn fault(&self, fault: Fault) {
        match fault {
            Fault::None => {
                self.proxy.set_delay(Duration::ZERO);
                let mut s = self.synapse.lock().await;
                if s.is_running() {
                    s.resume();
                } else {
                    s.start_again().await;
                }
                drop(s);
                self.limit_bridge(false).await;
            }
            Fault::Refuse => self.synapse.lock().await.stop().await,
            Fault::Hang => self.synapse.lock().await.pause(),
            Fault::Slow(d) => self.proxy.set_delay(d),
            // Synapse's limiter decides how long (its own retry_after_ms)
            // and how many: it is the authority here.
            Fault::RateLimit { .. } => self.limit_bridge(true).await,
        }
    }

    async fn rate_limited(&self, since_ms: u64) -> Vec<RateLimited> {
        let is_send =
            |path: &str, method: &str| method == "PUT" && path.contains("/send/m.room.message/");
        let seen: Vec<_> = self
            .proxy
            .seen()
            .into_iter()
            .filter(|s| instant_ms(s.at) >= since_ms)
            .collect();
        let mut out = Vec::new();
        for (i, s) in seen.iter().enumerate() {
            let Some(ms) = s.retry_after_ms else { continue };
            let Some(next) = seen[i + 1..].iter().find(|n| is_send(&n.path, &n.method)) else {
                continue;
            };
            out.push(RateLimited {
                asked: Duration::from_millis(ms),
                waited: next.at - s.at,
            });
        }
        out
    }

    fn unacknowledged(&self) -> Option<usize> {
        None
    }

    fn holds_until_acknowledged(&self) -> bool {
        true
    }

    fn people_write_while_down(&self) -> bool {
        false
    }

    fn may_repeat(&self) -> bool {
        false
    }

    fn limits_exactly(&self) -> bool {
        false
    }
}
