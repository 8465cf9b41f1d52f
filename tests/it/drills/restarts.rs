//! Scenario 5: kill -9 of switchboard at 22 seeded points, restarting it
//! each time, with and without a backlog draining. Scenario 7: a network
//! down across a graceful restart, and across a reload that changes its
//! account, is still one outage: one "down" and one "back" notice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::*;

/// The kill points' seed, unless `SWITCHBOARD_DRILL_SEED` gives another
/// (to replay a run that failed: every run prints its seed).
const SEED: u64 = 0x5eed_0005_d811_0001;

/// xorshift64*: the same delays for the same seed, without a dependency.
struct Seeded(u64);

impl Seeded {
    fn from_env() -> Self {
        let seed = std::env::var("SWITCHBOARD_DRILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(SEED);
        report!("drill seed | SWITCHBOARD_DRILL_SEED={seed}");
        // xorshift never leaves 0.
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A delay from 0 to `max_ms` milliseconds.
    fn delay(&mut self, max_ms: u64) -> Duration {
        Duration::from_millis(self.next() % (max_ms + 1))
    }
}

/// Waits a seeded 0–1500 ms, then kill -9 and start again. Returns the
/// delay, for the report.
async fn kill_after_seeded_delay(d: &mut Drill, rng: &mut Seeded) -> u64 {
    let delay = rng.delay(1500);
    tokio::time::sleep(delay).await;
    d.kill9_and_restart().await;
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// `texts` without its immediate repeats, and how many there were.
fn without_repeats(texts: &[String]) -> (Vec<String>, usize) {
    let mut kept: Vec<String> = Vec::with_capacity(texts.len());
    let mut repeats = 0;
    for t in texts {
        if kept.last() == Some(t) {
            repeats += 1;
        } else {
            kept.push(t.clone());
        }
    }
    (kept, repeats)
}

/// What each destination received, the webhook's redeliveries (a delivery
/// id seen before, which its receiver drops) left out.
async fn received_once_per_delivery(d: &Drill) -> (BTreeMap<&'static str, Vec<String>>, usize) {
    let mut got = d.received().await;
    let mut ids = HashSet::new();
    let mut redelivered = 0;
    let hook: Vec<String> = d
        .hook
        .deliveries()
        .into_iter()
        .filter(|x| x.body["type"] == "message")
        .filter(|x| {
            let first = ids.insert(x.delivery_id.clone());
            redelivered += usize::from(!first);
            first
        })
        .filter_map(|x| x.body["text"].as_str().map(str::to_owned))
        .collect();
    got.insert("webhook", hook);
    (got, redelivered)
}

/// Every destination has each other sender's messages once, in order,
/// except the networks without an idempotency key, which may repeat a
/// message right after itself: the lost-answer window (the network took
/// the send, the kill came before switchboard recorded it), at most once
/// per kill. The others (transaction ids, the bot API) repeat nothing; the
/// webhook's redeliveries carry the delivery id they had. Returns the
/// repeats per destination.
async fn assert_once_in_order_but_lost_answers(
    d: &Drill,
    kills: usize,
) -> BTreeMap<&'static str, usize> {
    let (got, redelivered) = received_once_per_delivery(d).await;
    let lossy = d.lossy();
    let mut repeats = BTreeMap::new();
    for (dest, texts) in &got {
        let (kept, n) = without_repeats(texts);
        let may_repeat = lossy.contains(dest);
        assert!(
            n == 0 || may_repeat,
            "{dest} got {n} messages twice, and it de-duplicates: {texts:#?}"
        );
        assert!(
            n <= kills,
            "{dest}: {n} repeats for {kills} kills (one lost answer per kill at most)"
        );
        for s in d.senders().iter().filter(|s| !d.own(dest, s)) {
            let from_s: Vec<&String> = kept
                .iter()
                .filter(|t| t.starts_with(&format!("{s}-")))
                .collect();
            let wrote: Vec<&String> = d.wrote.get(s).into_iter().flatten().collect();
            assert_eq!(
                from_s, wrote,
                "{s} at {dest}: every message, once (but for immediate repeats), in order"
            );
        }
        repeats.insert(*dest, n);
    }
    assert!(
        redelivered <= kills,
        "{redelivered} webhook redeliveries for {kills} kills"
    );
    // The WebSocket bot never sees one text under two event ids.
    let mut ids: HashMap<String, String> = HashMap::new();
    for e in d.ws.all().iter().filter(|e| e["type"] == "message") {
        let (Some(text), Some(id)) = (e["text"].as_str(), e["id"].as_str()) else {
            continue;
        };
        if let Some(before) = ids.insert(text.to_owned(), id.to_owned()) {
            assert_eq!(before, id, "{text} reached the bot under two ids");
        }
    }
    report!(
        "drill duplicates | {kills} kills | lost-answer repeats per destination: {repeats:?} \
         | webhook redeliveries (same delivery id): {redelivered}"
    );
    repeats
}

/// The notices the people on `net` saw, a lost-answer repeat counted once.
async fn notices_seen(d: &Drill, net: Net) -> Vec<String> {
    let seen = d.notices_on(net).await;
    if !d.peer(net).may_repeat() {
        return seen;
    }
    without_repeats(&seen).0
}

/// The "down" and "back" notices about `account` among `seen`.
fn downs_and_backs(seen: &[String], account: &str) -> (usize, usize) {
    let about: Vec<&String> = seen.iter().filter(|t| t.contains(account)).collect();
    (
        about.iter().filter(|t| t.contains("⚠️")).count(),
        about.iter().filter(|t| t.contains("✅")).count(),
    )
}

/// How long the "back" notice about `account` says the outage lasted.
fn outage_length(seen: &[String], account: &str) -> Duration {
    let back = seen
        .iter()
        .find(|t| t.contains(account) && t.contains("✅"))
        .expect("a back notice");
    let said = back
        .split_once("back after ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(d, _)| d)
        .unwrap_or_else(|| panic!("no duration in {back}"));
    humantime::parse_duration(said).unwrap_or_else(|e| panic!("{said}: {e}"))
}

/// Exactly one "down" and one "back" notice about each of `down` (and
/// none about the others), seen by the bot and by the people on every
/// network but the one that was down.
async fn assert_one_down_one_back(d: &Drill, down: &[Net]) {
    let at_bot = d.bot_notices();
    for net in d.nets() {
        let expected = if down.contains(&net) { (1, 1) } else { (0, 0) };
        let account = d.account(net);
        assert_eq!(
            downs_and_backs(&at_bot, &account),
            expected,
            "(down, back) notices about {account} at the bot: {at_bot:#?}"
        );
    }
    for net in d.nets() {
        let seen = notices_seen(d, net).await;
        for other in d.nets() {
            let expected = if down.contains(&other) && other != net {
                (1, 1)
            } else {
                (0, 0)
            };
            let account = d.account(other);
            assert_eq!(
                downs_and_backs(&seen, &account),
                expected,
                "(down, back) notices about {account} seen on {}: {seen:#?}",
                d.dest(net)
            );
        }
    }
}

/// Waits until the bot has heard that `net` is down.
async fn until_announced_down(d: &Drill, net: Net) {
    let account = d.account(net);
    until(&format!("{account} announced down at the bot"), || async {
        downs_and_backs(&d.bot_notices(), &account).0 > 0
    })
    .await;
}

/// Waits until the bot has heard that `net` is back.
async fn until_announced_back(d: &Drill, net: Net) {
    let account = d.account(net);
    until(&format!("{account} announced back at the bot"), || async {
        downs_and_backs(&d.bot_notices(), &account).1 > 0
    })
    .await;
}

async fn kills(backend: Backend) {
    let started = Instant::now();
    let mut rng = Seeded::from_env();
    let mut d = Drill::start(backend).await;
    d.rounds_for(Duration::from_secs(3), Duration::from_secs(1))
        .await;
    d.until_caught_up("the first rounds everywhere").await;
    let mut delays = Vec::new();

    // No backlog: a kill somewhere in the delivery of one round.
    for _ in 0..10 {
        d.round().await;
        delays.push(kill_after_seeded_delay(&mut d, &mut rng).await);
    }

    // A backlog: the first network refuses long enough to be announced
    // down; one kill in the announced outage (the restarted process goes
    // on with it), then more than `notice_after` still down.
    let down = d.nets()[0];
    let account = d.account(down);
    d.refuse(&[down]).await;
    let refused = Instant::now();
    d.rounds_for(Duration::from_secs(3), Duration::from_millis(500))
        .await;
    until_announced_down(&d, down).await;
    delays.push(kill_after_seeded_delay(&mut d, &mut rng).await);
    d.rounds_for(Duration::from_secs(7), Duration::from_secs(1))
        .await;
    let outage = refused.elapsed();
    d.restore(&[down]).await;
    // Kills while it drains, each after a burst of three rounds (a
    // backlog on every destination).
    for _ in 0..11 {
        for _ in 0..3 {
            d.round().await;
        }
        delays.push(kill_after_seeded_delay(&mut d, &mut rng).await);
    }
    d.round().await;
    d.until_caught_up("every destination caught up after the last restart")
        .await;
    // The back notice first: it is queued only once the network's lane
    // has drained, and may still be on its way to the others then.
    until_announced_back(&d, down).await;
    d.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report!(
        "drill kills | {backend:?} | {} kill -9 after {delays:?} ms | {} rounds",
        delays.len(),
        d.n
    );

    assert_once_in_order_but_lost_answers(&d, delays.len()).await;
    assert_one_down_one_back(&d, &[down]).await;
    // The back notice counts from when the outage began, not from the
    // restart in the middle of it.
    let said = outage_length(&d.bot_notices(), &account);
    assert!(
        said + Duration::from_secs(2) >= outage,
        "the back notice says {said:?}, the outage lasted {outage:?}"
    );
    d.stop().await;
    report!(
        "drill wall time | drill_kill9_at_seeded_points_{backend:?} | {:?}",
        started.elapsed()
    );
}

on_both_backends!(drill_kill9_at_seeded_points_with_and_without_a_backlog => |backend| kills(backend));

async fn down_across_restart_and_reload(backend: Backend) {
    let started = Instant::now();
    let mut d = Drill::start(backend).await;
    d.rounds_for(Duration::from_secs(3), Duration::from_secs(1))
        .await;
    d.until_caught_up("the first rounds everywhere").await;
    let (first, second) = (d.nets()[0], d.nets()[1]);

    // (a) The first network refusing; announced down; switchboard stopped
    // (SIGTERM) and started again while it still refuses, and left longer
    // than `notice_after` (a new outage would be announced by then).
    let account = d.account(first);
    d.refuse(&[first]).await;
    let refused = Instant::now();
    d.round().await;
    until_announced_down(&d, first).await;
    d.sb.stop().await;
    d.sb.restart().await;
    d.rounds_for(Duration::from_secs(8), Duration::from_secs(1))
        .await;
    let outage = refused.elapsed();
    d.restore(&[first]).await;
    d.round().await;
    d.until_caught_up("every destination after the first network is back")
        .await;
    until_announced_back(&d, first).await;
    assert_eq!(
        downs_and_backs(&d.bot_notices(), &account),
        (1, 1),
        "one outage across the restart: {:#?}",
        d.bot_notices()
    );
    let said = outage_length(&d.bot_notices(), &account);
    assert!(
        said + Duration::from_secs(2) >= outage,
        "the back notice says {said:?}, the outage (across the restart) lasted {outage:?}"
    );

    // (b) The second network refusing; announced down; a reload that
    // changes its account (rebuilt, its receiving restarted) while it is
    // down.
    let account = d.account(second);
    d.refuse(&[second]).await;
    let refused = Instant::now();
    d.round().await;
    until_announced_down(&d, second).await;
    let config = std::fs::read_to_string(&d.sb.config).unwrap();
    let peer = d.peer(second);
    let changed = config.replacen(&peer.section(), &peer.section_changed(), 1);
    assert_ne!(config, changed, "the reload changes {account}");
    std::fs::write(&d.sb.config, changed).unwrap();
    let pid = d.sb.pid();
    let report = d.sb.cli(&["reload"]);
    report!("drill reload | {}", report.trim().replace('\n', " | "));
    d.rounds_for(Duration::from_secs(8), Duration::from_secs(1))
        .await;
    let outage_b = refused.elapsed();
    d.restore(&[second]).await;
    d.round().await;
    d.until_caught_up("every destination after the second network is back")
        .await;
    until_announced_back(&d, second).await;
    assert_eq!(d.sb.pid(), pid, "a reload, not a restart");
    assert_eq!(
        downs_and_backs(&d.bot_notices(), &account),
        (1, 1),
        "one outage across the reload: {:#?}",
        d.bot_notices()
    );
    let said = outage_length(&d.bot_notices(), &account);
    assert!(
        said + Duration::from_secs(2) >= outage_b,
        "the back notice says {said:?}, the outage (across the reload) lasted {outage_b:?}"
    );

    d.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.assert_each_once_in_order().await;
    assert_one_down_one_back(&d, &[first, second]).await;
    d.stop().await;
    report!(
        "drill wall time | drill_network_down_across_a_restart_and_a_reload_{backend:?} | {:?}",
        started.elapsed()
    );
}

on_both_backends!(drill_network_down_across_a_restart_and_a_reload => |backend| down_across_restart_and_reload(backend));
