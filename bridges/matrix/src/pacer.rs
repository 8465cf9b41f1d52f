//! [`Pacer`]: how fast the relay bot may send, learned from what the
//! homeserver answers.
//!
//! A homeserver limits each ordinary user with a token bucket: Synapse's
//! `rc_message` defaults to a burst of 10 events, refilled at 0.2 per
//! second. The relay bot is one user speaking for a whole room (or several),
//! so a busy room outruns it; sending anyway makes every message queue
//! behind `M_LIMIT_EXCEEDED`. The pacer keeps a model of that bucket and
//! tells the outbox (through [`Capabilities::pacing`]) how far apart the
//! account's sends must be so the bucket is not overrun:
//!
//! - It starts conservative: Synapse's defaults.
//! - Every event sent takes a token; the bucket refills at the modelled
//!   rate.
//! - A refusal with `retry_after_ms` is the truth: the bucket is empty until
//!   then, a smaller bucket than modelled is remembered, and a slower refill
//!   than modelled is taken.
//! - A bot the homeserver does not limit (an admin exempted it, or lifted
//!   a stricter limit) must not stay at 0.2 per second: while no refusal
//!   came for a while ([`PROBE_AFTER`] at first), one send beyond the model
//!   is allowed; when it is accepted, the model doubles (bucket and rate),
//!   so an exempt bot is unpaced after a few rounds. When it is refused,
//!   that one refusal is all it cost, and the next probe waits twice as
//!   long (up to [`PROBE_AFTER_MAX`]): a bot at its limit sees one refusal
//!   every half hour, not one per message.
//!
//! [`Capabilities::pacing`]: switchboard_core::Capabilities

use std::time::{Duration, Instant};

/// Synapse's `rc_message` default: events per second.
pub const DEFAULT_RATE: f64 = 0.2;
/// Synapse's `rc_message` default: the burst.
pub const DEFAULT_BURST: f64 = 10.0;
/// How long after a refusal the pacer first tries a send beyond its model
/// again.
pub const PROBE_AFTER: Duration = Duration::from_secs(60);
/// The longest wait between two probes.
pub const PROBE_AFTER_MAX: Duration = Duration::from_secs(1800);
/// How much slower than the model the bot sends once the bucket is low.
const MARGIN: f64 = 1.05;
/// A model this generous means "not limited": no pacing at all.
const UNLIMITED_RATE: f64 = 1000.0;
const MAX_BURST: f64 = 1_000_000.0;

/// The modelled token bucket of one account on its homeserver.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Tokens per second.
    rate: f64,
    /// The bucket's size.
    burst: f64,
    /// Tokens in the bucket at `at` (negative: owed).
    level: f64,
    at: Instant,
    /// The last refusal, if any.
    refused_at: Option<Instant>,
    /// How long after a refusal the next probe waits.
    probe_after: Duration,
    /// A send beyond the model was let through and not answered yet.
    probe_out: bool,
}

impl Pacer {
    /// A full bucket of Synapse's default size.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Self {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            level: DEFAULT_BURST,
            at: now,
            refused_at: None,
            probe_after: PROBE_AFTER,
            probe_out: false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    fn probing(&self, now: Instant) -> bool {
        self.refused_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.probe_after)
    }

    /// The least time between the send about to go and the one after it:
    /// what the outbox's per-account pacing is set to. The outbox reads it
    /// before the send, which may then wait for its own slot: so it is one
    /// refill interval once the bucket runs low (the bucket's level when
    /// the send goes is not known here), more only while the account owes
    /// tokens (a message of several events). When a probe is due, the next
    /// send goes at once, beyond the model.
    pub fn spacing(&mut self, now: Instant) -> Duration {
        if self.rate >= UNLIMITED_RATE {
            return Duration::ZERO;
        }
        self.refill(now);
        // The send about to go takes a token and the next needs one: with
        // two in the bucket nothing waits.
        if self.level >= 2.0 {
            return Duration::ZERO;
        }
        if !self.probe_out && self.probing(now) {
            self.probe_out = true;
            return Duration::ZERO;
        }
        // A little slower than the model: clocks and answers are not
        // exact, and a refusal costs more than a few milliseconds.
        Duration::from_secs_f64((1.0 - self.level).max(1.0) / self.rate * MARGIN)
    }

    /// The homeserver accepted one event.
    pub fn accepted(&mut self, now: Instant) {
        self.refill(now);
        self.level -= 1.0;
        // A probe that went through is done with, beyond the model or not.
        self.probe_out = false;
        if self.level < 0.0 {
            // More than the model allows went through: the homeserver is
            // more generous than modelled (or not limiting at all).
            self.rate = (self.rate * 2.0).min(UNLIMITED_RATE);
            self.burst = (self.burst * 2.0).min(MAX_BURST);
            self.level = self.burst;
            self.probe_after = PROBE_AFTER;
        }
    }

    /// The homeserver refused an event (`M_LIMIT_EXCEEDED`), asking to wait
    /// `retry_after` (when it said).
    pub fn refused(&mut self, now: Instant, retry_after: Option<Duration>) {
        if std::mem::take(&mut self.probe_out) && self.refused_at.is_some() {
            // A probe refused: the model was right; probe less often.
            self.probe_after = (self.probe_after * 2).min(PROBE_AFTER_MAX);
        }
        self.refill(now);
        // What the model thought was left is what the bucket lacks.
        self.burst = (self.burst - self.level.max(0.0)).max(1.0);
        let wait = retry_after.unwrap_or(Duration::from_secs_f64(1.0 / self.rate));
        let wait = wait.as_secs_f64().max(0.001);
        // One event is allowed after `wait`: the refill takes at least that
        // long per token.
        self.rate = self.rate.min(1.0 / wait).max(0.001);
        self.level = 1.0 - wait * self.rate;
        self.refused_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a send takes to be answered.
    const RTT: f64 = 0.01;

    /// A homeserver's bucket as Synapse keeps it.
    struct Server {
        rate: f64,
        burst: f64,
        level: f64,
        at: f64,
    }

    impl Server {
        fn try_send(&mut self, t: f64) -> Result<(), Duration> {
            self.level = (self.level + (t - self.at) * self.rate).min(self.burst);
            self.at = t;
            if self.level >= 1.0 {
                self.level -= 1.0;
                Ok(())
            } else {
                Err(Duration::from_secs_f64((1.0 - self.level) / self.rate))
            }
        }
    }

    /// Sends `n` events as fast as the pacer allows, as the outbox does
    /// (the spacing read before a send waits for its slot, then applies
    /// after it); the refusals and the time it took.
    fn run(server: &mut Server, n: usize) -> (usize, f64) {
        let t0 = Instant::now();
        let at = |t: f64| t0 + Duration::from_secs_f64(t);
        let mut p = Pacer::new(t0);
        let (mut t, mut next, mut refusals, mut sent) = (0.0_f64, 0.0_f64, 0, 0);
        while sent < n {
            let spacing = p.spacing(at(t)).as_secs_f64();
            t = t.max(next);
            next = t + spacing;
            let now = at(t);
            // Each send takes a moment to be answered.
            t += RTT;
            match server.try_send(t) {
                Ok(()) => {
                    p.accepted(now);
                    sent += 1;
                }
                Err(wait) => {
                    p.refused(now, Some(wait));
                    refusals += 1;
                    next = next.max(t + wait.as_secs_f64());
                }
            }
        }
        (refusals, t)
    }

    #[test]
    fn synapse_defaults_cost_one_refusal_not_one_per_message() {
        let mut hs = Server {
            rate: 0.2,
            burst: 10.0,
            level: 10.0,
            at: 0.0,
        };
        let (refusals, took) = run(&mut hs, 30);
        // The first when the bucket ran out, one probe a minute later.
        assert_eq!(refusals, 2);
        // 10 at once, then one every 5 s (and a little).
        assert!((95.0..=115.0).contains(&took), "{took}");
        // The bot's join took a token before: still one refusal or two.
        let mut hs = Server {
            rate: 0.2,
            burst: 10.0,
            level: 9.0,
            at: 0.0,
        };
        let (refusals, _) = run(&mut hs, 30);
        assert!((1..=2).contains(&refusals), "{refusals}");
    }

    #[test]
    fn a_stricter_homeserver_is_learned_from_its_answers() {
        let mut hs = Server {
            rate: 0.1,
            burst: 3.0,
            level: 3.0,
            at: 0.0,
        };
        let (refusals, _) = run(&mut hs, 20);
        assert!(refusals <= 3, "{refusals}");
    }

    #[test]
    fn a_limit_lifted_while_the_room_is_busy_is_noticed() {
        let t0 = Instant::now();
        let at = |t: f64| t0 + Duration::from_secs_f64(t);
        let mut p = Pacer::new(t0);
        let mut hs = Server {
            rate: 0.2,
            burst: 10.0,
            level: 10.0,
            at: 0.0,
        };
        let (mut t, mut next, mut refusals) = (0.0_f64, 0.0_f64, 0);
        let mut sent_after_lift = 0;
        while t < 600.0 {
            if t >= 120.0 {
                // The admin exempts the bot.
                hs.rate = 1e9;
                hs.burst = 1e9;
            }
            let spacing = p.spacing(at(t)).as_secs_f64();
            t = t.max(next);
            next = t + spacing;
            t += RTT;
            match hs.try_send(t) {
                Ok(()) => {
                    p.accepted(at(t));
                    if t >= 120.0 {
                        sent_after_lift += 1;
                    }
                }
                Err(wait) => {
                    p.refused(at(t), Some(wait));
                    refusals += 1;
                    next = next.max(t + wait.as_secs_f64());
                }
            }
        }
        assert!(refusals <= 4, "{refusals}");
        // Paced at 0.2/s this would be ~96; unpaced, one per RTT.
        assert!(sent_after_lift > 10_000, "{sent_after_lift}");
    }

    #[test]
    fn an_exempt_bot_is_soon_unpaced() {
        let mut hs = Server {
            rate: 1e9,
            burst: 1e9,
            level: 1e9,
            at: 0.0,
        };
        let (refusals, took) = run(&mut hs, 2000);
        assert_eq!(refusals, 0);
        assert!(took < 60.0, "{took}");
    }
}
