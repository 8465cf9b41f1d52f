//! Outage notices (guarantee 4): when a destination channel has been
//! unreachable for longer than its gateway's `notice_after`, the other
//! members of the gateway get one notice saying so; when it is back and its
//! backlog has drained, one more saying how long it was out and how many
//! queued messages were delivered. One notice per state change.
//!
//! Lanes report their failures and successes here; a ticker in the outbox
//! announces outages that became due, and a lane that drains after an
//! announced outage announces the recovery. The announcements go to the
//! hub as [`Announcement`]s over a channel; the hub routes them (it knows
//! the gateways) and commits them as `Notice` events.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchboard_core::{AccountId, ChannelId, GatewayName};
use time::OffsetDateTime;

/// What the hub is asked to tell a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// `account`/`channel` is unreachable since `since`.
    Down {
        /// The gateway to tell.
        gateway: GatewayName,
        /// The unreachable destination's account.
        account: AccountId,
        /// The unreachable destination channel.
        channel: ChannelId,
        /// Since when.
        since: OffsetDateTime,
    },
    /// It is back; its queue drained.
    Back {
        /// The gateway to tell.
        gateway: GatewayName,
        /// The destination's account.
        account: AccountId,
        /// The destination channel.
        channel: ChannelId,
        /// How long it was out.
        outage: Duration,
        /// Queued messages delivered since it came back.
        delivered: u64,
    },
}

#[derive(Debug)]
struct Outage {
    gateway: GatewayName,
    since: Instant,
    since_wall: OffsetDateTime,
    announced: bool,
    /// Sends have succeeded again (the backlog is draining).
    recovered_at: Option<Instant>,
    delivered: u64,
}

/// Every lane's outage, if it has one.
#[derive(Debug, Default)]
pub struct Outages {
    /// A std mutex: short updates, never held across await.
    lanes: Mutex<HashMap<(AccountId, ChannelId), Outage>>,
}

impl Outages {
    /// A send to the lane failed (a row of `gateway` was at its head).
    pub fn failed(&self, account: &AccountId, channel: &ChannelId, gateway: &GatewayName) {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let o = lanes
            .entry((account.clone(), channel.clone()))
            .or_insert_with(|| Outage {
                gateway: gateway.clone(),
                since: Instant::now(),
                since_wall: OffsetDateTime::now_utc(),
                announced: false,
                recovered_at: None,
                delivered: 0,
            });
        // Failing again while draining: the same outage goes on.
        o.recovered_at = None;
    }

    /// A row of the lane was delivered.
    pub fn delivered(&self, account: &AccountId, channel: &ChannelId) {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let key = (account.clone(), channel.clone());
        let Some(o) = lanes.get_mut(&key) else {
            return;
        };
        if !o.announced {
            // Never announced: nobody needs to hear it is back.
            lanes.remove(&key);
            return;
        }
        o.recovered_at.get_or_insert_with(Instant::now);
        o.delivered += 1;
    }

    /// The lane has nothing left to send: a recovery to announce, if any.
    pub fn drained(&self, account: &AccountId, channel: &ChannelId) -> Option<Announcement> {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let key = (account.clone(), channel.clone());
        let o = lanes.get(&key)?;
        let recovered = o.recovered_at?;
        let o = lanes.remove(&key)?;
        Some(Announcement::Back {
            gateway: o.gateway,
            account: key.0,
            channel: key.1,
            outage: recovered.saturating_duration_since(o.since),
            delivered: o.delivered,
        })
    }

    /// Outages that have lasted longer than their gateway's `notice_after`
    /// and were not announced yet; marks them announced.
    pub fn due(
        &self,
        notice_after: &dyn Fn(&GatewayName) -> Option<Duration>,
    ) -> Vec<Announcement> {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let mut out = Vec::new();
        for ((account, channel), o) in lanes.iter_mut() {
            if o.announced || o.recovered_at.is_some() {
                continue;
            }
            let Some(after) = notice_after(&o.gateway) else {
                continue;
            };
            if o.since.elapsed() >= after {
                o.announced = true;
                out.push(Announcement::Down {
                    gateway: o.gateway.clone(),
                    account: account.clone(),
                    channel: channel.clone(),
                    since: o.since_wall,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_down_and_one_back_per_outage() {
        let o = Outages::default();
        let (a, c, g): (AccountId, ChannelId, GatewayName) = (
            "telegram.main".parse().unwrap(),
            ChannelId::new("-1").unwrap(),
            GatewayName::new("g").unwrap(),
        );
        let now = |_: &GatewayName| Some(Duration::ZERO);
        o.failed(&a, &c, &g);
        o.failed(&a, &c, &g);
        assert_eq!(o.due(&now).len(), 1);
        assert!(o.due(&now).is_empty(), "announced once");
        assert_eq!(o.drained(&a, &c), None, "not back yet");
        o.delivered(&a, &c);
        o.delivered(&a, &c);
        match o.drained(&a, &c) {
            Some(Announcement::Back { delivered: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(o.drained(&a, &c), None, "back once");
        // A short failure never announced says nothing when it ends.
        o.failed(&a, &c, &g);
        o.delivered(&a, &c);
        assert_eq!(o.drained(&a, &c), None);
        assert!(o.due(&|_| Some(Duration::from_secs(60))).is_empty());
    }
}
