//! What a network gives the hub's end-to-end tests (feature `test-util`):
//! a [`TestPeer`], its service running for a test (a faithful fake, or the
//! real thing where it can run here) with people in one conversation, the
//! section switchboard needs to reach it, and the faults a drill puts it
//! through. A network's [`Connector`](crate::Connector) hands out its
//! [`TestPeerFactory`]; the hub's drills start one peer per network of the
//! registry and are written once against this trait, so a new network is
//! drilled without a line of the drills changing.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::Network;

/// A state of the service a drill puts a peer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers normally again (ends any other fault).
    None,
    /// Refuses connections.
    Refuse,
    /// Accepts connections and never answers.
    Hang,
    /// Answers every request this much late.
    Slow(Duration),
    /// Refuses the bridge's next `times` sends with its rate limit, asking
    /// for `retry_after` (where the service lets a test say how long).
    RateLimit {
        /// How long the service asks the bridge to wait.
        retry_after: Duration,
        /// How many sends it refuses.
        times: usize,
    },
}

/// One message the bridge posted into the peer's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// Its text as the conversation's people read it (with the author's
    /// name in front where the bridge posts as one account).
    pub text: String,
    /// When the service took it, in milliseconds since the epoch.
    pub at_ms: u64,
}

/// A send the service refused with its rate limit, and what followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// How long the service asked the bridge to wait.
    pub asked: Duration,
    /// How long the bridge waited before its next send there.
    pub waited: Duration,
}

/// A network's service running for one test, with people in one
/// conversation that switchboard bridges.
#[async_trait]
pub trait TestPeer: Send + Sync {
    /// The network.
    fn network(&self) -> Network;

    /// The people-facing prefix of what they write here (`tg`, `sig`,
    /// `mx`): drills number messages `<prefix>-001`.
    fn sender(&self) -> &'static str;

    /// switchboard's account section to reach the service, for account
    /// `<network>.main` (e.g. `[telegram.main]` with a token and URL).
    fn section(&self) -> String;

    /// [`section`](Self::section) with one harmless setting changed (a
    /// timeout), so a reload rebuilds the account.
    fn section_changed(&self) -> String;

    /// The conversation's channel id, for a gateway member.
    fn channel(&self) -> String;

    /// Waits until switchboard is in the conversation (joined, subscribed)
    /// after it started.
    async fn ready(&self);

    /// A person in the conversation writes `text`.
    async fn write(&self, text: &str);

    /// A person sends a small text file `name` holding `content`, with
    /// `text` as its caption.
    async fn write_file(&self, text: &str, name: &str, content: &str);

    /// What the bridge posted into the conversation, oldest first.
    async fn posted(&self) -> Vec<Posted>;

    /// Puts the service in `fault` (or back to normal with
    /// [`Fault::None`]).
    async fn fault(&self, fault: Fault);

    /// The sends refused with a rate limit since `since_ms` (ms since the
    /// epoch), each with how long the bridge then waited.
    async fn rate_limited(&self, since_ms: u64) -> Vec<RateLimited>;

    /// Updates or messages the service still holds for the bridge, not
    /// acknowledged yet (what a bridge that lost its store must leave
    /// there). `None` where the service keeps no such count.
    fn unacknowledged(&self) -> Option<usize>;

    /// Whether the service keeps everything until the bridge acknowledges
    /// it after its commit (Telegram's update offset), rather than handing
    /// messages over as it sends them (signal-cli takes a message off
    /// Signal's server when it hands it over; the bridge can only stop
    /// asking for more).
    fn holds_until_acknowledged(&self) -> bool;

    /// Whether the people can still write while the service refuses or
    /// hangs for the bridge: true where the service holds their messages
    /// for the bridge (Telegram, Signal), false where the service they
    /// write to is the one that is down (a homeserver).
    fn people_write_while_down(&self) -> bool;

    /// Whether a send whose answer was lost may show twice here (the
    /// service takes no idempotency key).
    fn may_repeat(&self) -> bool;

    /// Whether [`Fault::RateLimit`] refuses exactly `times` sends asking
    /// for exactly `retry_after` (a fake does what it is told); false where
    /// the service's own limiter decides both (a real homeserver).
    fn limits_exactly(&self) -> bool;
}

/// Starts a network's [`TestPeer`].
#[async_trait]
pub trait TestPeerFactory: Send + Sync {
    /// Starts the service and its conversation, keeping what it writes
    /// under `dir`.
    async fn start(&self, dir: &Path) -> Box<dyn TestPeer>;
}

/// A free loopback port for a test's listener, chosen below the kernel's
/// ephemeral range (`ip_local_port_range`; Linux's default: 32768 and
/// up). A port the kernel hands out for `bind(0)` is from that range, and
/// so is every outgoing connection's local port: between being released
/// here and bound by the process under test, such a port can be taken by
/// another test's client connection (seen in CI: "Address already in use"
/// at a start). Ports below the range are only ever taken by listeners
/// that ask for them.
///
/// # Panics
/// When no port in the range can be bound.
#[must_use]
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    /// Where the search starts in this process: spread over the range by
    /// pid and time, so parallel test processes rarely try the same port.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Up to 12,000 ports just below the ephemeral range this machine uses.
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(2_048, 32_768);
    let low = ephemeral.saturating_sub(12_000).max(1_024);
    let span = ephemeral - low;
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let n = NEXT.fetch_add(7_919, Ordering::Relaxed);
        let port = u16::try_from(low + n % span).expect("below 32,768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {low} and {ephemeral}");
}
