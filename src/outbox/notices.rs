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
//!
//! An announced outage outlives the process: each announcement carries a
//! [`StateChange`] ([`Announcement::record`]) that the hub commits with
//! its notice, so the store holds exactly the outages whose "down" went
//! out and whose "back" did not. At start they are taken back
//! ([`Outages::resume`]): a restart or a crash during an outage sends no
//! second "down", and the "back" counts from when the outage began. Its
//! count of delivered messages starts again at the restart (counting every
//! delivery in the store would cost a write per message).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchboard_core::{AccountId, ChannelId, GatewayName};
use time::OffsetDateTime;

use crate::store::StateChange;

/// Where an announced outage is remembered: the destination account's
/// key-value space, one key per channel (`switchboard.outage/<channel>`).
/// No LIKE wildcard in it: the store finds the keys by this prefix.
pub(crate) const KEY_PREFIX: &str = "switchboard.outage/";

/// An announced outage as stored (JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Recorded {
    /// The gateway whose row was failing (told again when it is back).
    gateway: GatewayName,
    /// When it began, in milliseconds since the epoch: a restart cannot
    /// carry an `Instant` over.
    since_ms: i64,
}

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

impl Announcement {
    /// The store change that commits with this announcement: a "down"
    /// records the outage, a "back" forgets it.
    #[must_use]
    pub fn record(&self) -> StateChange {
        match self {
            Self::Down {
                gateway,
                account,
                channel,
                since,
            } => {
                let recorded = Recorded {
                    gateway: gateway.clone(),
                    since_ms: i64::try_from(since.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                };
                StateChange {
                    account: account.clone(),
                    key: format!("{KEY_PREFIX}{channel}"),
                    value: Some(serde_json::to_string(&recorded).expect("plain JSON")),
                }
            }
            Self::Back {
                account, channel, ..
            } => StateChange {
                account: account.clone(),
                key: format!("{KEY_PREFIX}{channel}"),
                value: None,
            },
        }
    }
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
    /// Whether an outage waits to be announced (the periodic check looks
    /// no further when none does: with thousands of gateways, gathering
    /// their policies four times a second was most of an idle bridge's CPU).
    #[must_use]
    pub fn any_unannounced(&self) -> bool {
        self.lanes
            .lock()
            .expect("outages lock")
            .values()
            .any(|o| !o.announced && o.recovered_at.is_none())
    }

    /// Takes back the outages announced before a restart: `rows` are the
    /// store's (account, key, value) under [`KEY_PREFIX`]. They count as
    /// announced, and from when they began. Returns how many were taken;
    /// a row that cannot be read is logged and skipped (at worst its
    /// outage is announced again).
    pub fn resume(&self, rows: Vec<(String, String, String)>) -> usize {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let (now, now_wall) = (Instant::now(), OffsetDateTime::now_utc());
        let mut taken = 0;
        for (account, key, value) in rows {
            let parsed = key.strip_prefix(KEY_PREFIX).and_then(|channel| {
                let recorded: Recorded = serde_json::from_str(&value).ok()?;
                let since_wall = OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(recorded.since_ms) * 1_000_000,
                )
                .ok()?;
                Some((
                    account.parse::<AccountId>().ok()?,
                    ChannelId::new(channel).ok()?,
                    recorded.gateway,
                    since_wall,
                ))
            });
            let Some((account, channel, gateway, since_wall)) = parsed else {
                tracing::warn!(%account, %key, "An outage recorded in the store cannot be read; skipped.");
                continue;
            };
            // The time it has lasted, on this process's monotonic clock.
            let lasted = Duration::try_from(now_wall - since_wall).unwrap_or_default();
            lanes.insert(
                (account, channel),
                Outage {
                    gateway,
                    since: now.checked_sub(lasted).unwrap_or(now),
                    since_wall,
                    announced: true,
                    recovered_at: None,
                    delivered: 0,
                },
            );
            taken += 1;
        }
        taken
    }

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

    /// The lane has nothing left to send: announces its recovery, if it was
    /// out. `send` is called under the lock, so a lane's "back" can never
    /// be sent before its "down" ([`Outages::due`] sends the same way).
    pub fn drained(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        send: &mut dyn FnMut(Announcement),
    ) {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let key = (account.clone(), channel.clone());
        let Some(recovered) = lanes.get(&key).and_then(|o| o.recovered_at) else {
            return;
        };
        let Some(o) = lanes.remove(&key) else {
            return;
        };
        send(Announcement::Back {
            gateway: o.gateway,
            account: key.0,
            channel: key.1,
            outage: recovered.saturating_duration_since(o.since),
            delivered: o.delivered,
        });
    }

    /// Announces the outages that have lasted longer than their gateway's
    /// `notice_after` and were not announced yet (under the lock, as
    /// [`Outages::drained`]).
    pub fn due(
        &self,
        notice_after: &dyn Fn(&GatewayName) -> Option<Duration>,
        send: &mut dyn FnMut(Announcement),
    ) {
        let mut lanes = self.lanes.lock().expect("outages lock");
        for ((account, channel), o) in lanes.iter_mut() {
            if o.announced || o.recovered_at.is_some() {
                continue;
            }
            let Some(after) = notice_after(&o.gateway) else {
                continue;
            };
            if o.since.elapsed() >= after {
                o.announced = true;
                send(Announcement::Down {
                    gateway: o.gateway.clone(),
                    account: account.clone(),
                    channel: channel.clone(),
                    since: o.since_wall,
                });
            }
        }
    }

    /// In a cluster, the lane's lease went to another instance: it takes
    /// the lane's announced outage back from the store; this one forgets it.
    pub fn forget(&self, account: &AccountId, channel: &ChannelId) {
        self.lanes
            .lock()
            .expect("outages lock")
            .remove(&(account.clone(), channel.clone()));
    }

    /// In a cluster, a lane taken over with nothing queued: an outage taken
    /// back for it is over (as [`Outages::settle_idle`] at start).
    pub fn settle_lane(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        send: &mut dyn FnMut(Announcement),
    ) {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let key = (account.clone(), channel.clone());
        if !lanes
            .get(&key)
            .is_some_and(|o| o.announced && o.recovered_at.is_none())
        {
            return;
        }
        let Some(o) = lanes.remove(&key) else {
            return;
        };
        send(Announcement::Back {
            gateway: o.gateway,
            account: key.0,
            channel: key.1,
            outage: o.since.elapsed(),
            delivered: 0,
        });
    }

    /// In a cluster, a lane nobody drove for `idle` (its instance died, and
    /// the takeover outlasted the gateway's `notice_after`): announced down
    /// at once, as unreachable since then, unless it is in an outage already.
    pub fn overdue(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        gateway: &GatewayName,
        idle: Duration,
        send: &mut dyn FnMut(Announcement),
    ) {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let key = (account.clone(), channel.clone());
        if lanes.contains_key(&key) {
            return;
        }
        let (now, now_wall) = (Instant::now(), OffsetDateTime::now_utc());
        let since_wall = now_wall - idle;
        lanes.insert(
            key,
            Outage {
                gateway: gateway.clone(),
                since: now.checked_sub(idle).unwrap_or(now),
                since_wall,
                announced: true,
                recovered_at: None,
                delivered: 0,
            },
        );
        send(Announcement::Down {
            gateway: gateway.clone(),
            account: account.clone(),
            channel: channel.clone(),
            since: since_wall,
        });
    }

    /// At start, after [`Outages::resume`]: an outage taken back for a lane
    /// with nothing queued would wait for the next message to end (a crash
    /// between the last send and the commit of its "back", or a channel
    /// gone from the config). Nothing waits for it, so it is announced as
    /// over now; if the network is still down, the next failure starts a
    /// new outage.
    pub fn settle_idle(
        &self,
        pending: &std::collections::HashSet<(AccountId, ChannelId)>,
        send: &mut dyn FnMut(Announcement),
    ) {
        let mut lanes = self.lanes.lock().expect("outages lock");
        let idle: Vec<(AccountId, ChannelId)> = lanes
            .iter()
            .filter(|(k, o)| o.announced && o.recovered_at.is_none() && !pending.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            let Some(o) = lanes.remove(&key) else {
                continue;
            };
            send(Announcement::Back {
                gateway: o.gateway,
                account: key.0,
                channel: key.1,
                outage: o.since.elapsed(),
                delivered: 0,
            });
        }
    }
}

/// A destination that is failing now, as the admin page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LaneOutage {
    /// The destination account.
    pub account: String,
    /// The destination channel.
    pub channel: String,
    /// Since when it fails (Unix ms).
    pub since_ms: i64,
    /// Whether its gateway was told.
    pub announced: bool,
}

impl Outages {
    /// The destinations failing now (not those draining after an outage).
    #[must_use]
    pub fn snapshot(&self) -> Vec<LaneOutage> {
        let lanes = self.lanes.lock().expect("outages lock");
        let mut v: Vec<LaneOutage> = lanes
            .iter()
            .filter(|(_, o)| o.recovered_at.is_none())
            .map(|((a, c), o)| LaneOutage {
                account: a.to_string(),
                channel: c.to_string(),
                since_ms: i64::try_from(o.since_wall.unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or(0),
                announced: o.announced,
            })
            .collect();
        v.sort_by(|x, y| (&x.account, &x.channel).cmp(&(&y.account, &y.channel)));
        v
    }
}

impl super::Outbox {
    /// The destinations failing now.
    #[must_use]
    pub fn outages(&self) -> Vec<LaneOutage> {
        self.inner.outages.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(o: &Outages, after: &dyn Fn(&GatewayName) -> Option<Duration>) -> Vec<Announcement> {
        let mut out = Vec::new();
        o.due(after, &mut |a| out.push(a));
        out
    }

    fn drained(o: &Outages, a: &AccountId, c: &ChannelId) -> Option<Announcement> {
        let mut out = None;
        o.drained(a, c, &mut |x| out = Some(x));
        out
    }

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
        assert_eq!(due(&o, &now).len(), 1);
        assert!(due(&o, &now).is_empty(), "announced once");
        assert_eq!(drained(&o, &a, &c), None, "not back yet");
        o.delivered(&a, &c);
        o.delivered(&a, &c);
        match drained(&o, &a, &c) {
            Some(Announcement::Back { delivered: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(drained(&o, &a, &c), None, "back once");
        // A short failure never announced says nothing when it ends.
        o.failed(&a, &c, &g);
        o.delivered(&a, &c);
        assert_eq!(drained(&o, &a, &c), None);
        assert!(due(&o, &|_| Some(Duration::from_secs(60))).is_empty());
    }

    #[test]
    fn an_outage_announced_before_a_restart_goes_on_after_it() {
        let (a, c, g): (AccountId, ChannelId, GatewayName) = (
            "telegram.main".parse().unwrap(),
            ChannelId::new("-1001").unwrap(),
            GatewayName::new("g").unwrap(),
        );
        let now = |_: &GatewayName| Some(Duration::ZERO);
        // Announced 90 s ago by the process before.
        let down = Announcement::Down {
            gateway: g.clone(),
            account: a.clone(),
            channel: c.clone(),
            since: OffsetDateTime::now_utc() - Duration::from_secs(90),
        };
        let recorded = down.record();
        assert_eq!(recorded.key, "switchboard.outage/-1001");
        let o = Outages::default();
        let rows = vec![
            (
                a.to_string(),
                recorded.key.clone(),
                recorded.value.clone().unwrap(),
            ),
            ("telegram.main".into(), format!("{KEY_PREFIX}x"), "{".into()),
        ];
        assert_eq!(o.resume(rows), 1, "the unreadable row is skipped");
        o.failed(&a, &c, &g);
        assert!(due(&o, &now).is_empty(), "no second down");
        o.delivered(&a, &c);
        let back = drained(&o, &a, &c).expect("back once drained");
        match &back {
            Announcement::Back {
                outage,
                delivered: 1,
                ..
            } => assert!(*outage >= Duration::from_secs(90), "{outage:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            back.record(),
            StateChange {
                account: a,
                key: recorded.key,
                value: None
            },
            "the back notice forgets the outage"
        );
    }

    #[test]
    fn a_lane_taken_over_late_is_announced_once_and_back_when_drained() {
        let (a, c, g): (AccountId, ChannelId, GatewayName) = (
            "signal.main".parse().unwrap(),
            ChannelId::new("group").unwrap(),
            GatewayName::new("g").unwrap(),
        );
        let o = Outages::default();
        let mut sent = Vec::new();
        o.overdue(&a, &c, &g, Duration::from_secs(90), &mut |x| sent.push(x));
        o.overdue(&a, &c, &g, Duration::from_secs(95), &mut |x| sent.push(x));
        match sent.as_slice() {
            [Announcement::Down { since, .. }] => {
                assert!(OffsetDateTime::now_utc() - *since >= Duration::from_secs(90));
            }
            other => panic!("one down notice: {other:?}"),
        }
        assert!(
            due(&o, &|_| Some(Duration::ZERO)).is_empty(),
            "announced already"
        );
        o.delivered(&a, &c);
        assert!(matches!(
            drained(&o, &a, &c),
            Some(Announcement::Back { delivered: 1, .. })
        ));
        // Given back to another instance: forgotten here.
        o.failed(&a, &c, &g);
        o.forget(&a, &c);
        assert!(due(&o, &|_| Some(Duration::ZERO)).is_empty());
        // Taken over with nothing queued after an announced outage: back.
        let down = Announcement::Down {
            gateway: g.clone(),
            account: a.clone(),
            channel: c.clone(),
            since: OffsetDateTime::now_utc() - Duration::from_secs(30),
        };
        let r = down.record();
        o.resume(vec![(a.to_string(), r.key, r.value.unwrap())]);
        let mut back = Vec::new();
        o.settle_lane(&a, &c, &mut |x| back.push(x));
        o.settle_lane(&a, &c, &mut |x| back.push(x));
        assert!(matches!(
            back.as_slice(),
            [Announcement::Back { delivered: 0, .. }]
        ));
    }

    #[test]
    fn a_resumed_outage_with_nothing_queued_is_announced_back_at_start() {
        let (a, c, g): (AccountId, ChannelId, GatewayName) = (
            "telegram.main".parse().unwrap(),
            ChannelId::new("-1001").unwrap(),
            GatewayName::new("g").unwrap(),
        );
        let down = Announcement::Down {
            gateway: g,
            account: a.clone(),
            channel: c.clone(),
            since: OffsetDateTime::now_utc() - Duration::from_secs(30),
        };
        let r = down.record();
        let o = Outages::default();
        o.resume(vec![(a.to_string(), r.key, r.value.unwrap())]);
        let mut sent = Vec::new();
        let queued = std::collections::HashSet::from([(a.clone(), c.clone())]);
        o.settle_idle(&queued, &mut |x| sent.push(x));
        assert!(
            sent.is_empty(),
            "a lane with a backlog ends its outage itself"
        );
        o.settle_idle(&std::collections::HashSet::new(), &mut |x| sent.push(x));
        match sent.as_slice() {
            [Announcement::Back {
                outage,
                delivered: 0,
                ..
            }] => assert!(*outage >= Duration::from_secs(30), "{outage:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(drained(&o, &a, &c), None, "once");
    }
}
