//! Scenarios 2, 3 and 4: networks that accept connections and never answer
//! (30 s), networks that answer every request 2 s late (60 s), and
//! rate-limit storms on all three at once.
//!
//! Hangs and slow answers are paired so that each phase leaves one network
//! healthy to measure: while Telegram hangs, Signal is slow and Matrix is
//! healthy; then Signal hangs, Matrix is slow, Telegram is healthy; then
//! Matrix hangs, Telegram is slow, Signal is healthy. Every network meets
//! each fault once in three minutes instead of six.

use std::time::Duration;

use switchboard_signal::fake::Fault as SignalFault;
use switchboard_telegram::fake::Fault as TelegramFault;

use super::*;

const SLOW: Duration = Duration::from_secs(2);
/// What Telegram and Signal ask for in the storm: longer than
/// `notice_after`, so a rate limit taken for an outage would be announced.
const RETRY_AFTER: u64 = 6;

impl Drill {
    /// Every request of `net` is answered 2 s late (or on time again).
    fn slow(&self, net: Net, on: bool) {
        match (net, on) {
            (Net::Telegram, true) => self.tg.fail("*", TelegramFault::Hang(SLOW), usize::MAX),
            (Net::Telegram, false) => self.tg.clear_faults(),
            (Net::Signal, true) => self.signal.fail("*", SignalFault::Hang(SLOW), usize::MAX),
            (Net::Signal, false) => self.signal.clear_faults(),
            (Net::Matrix, on) => self
                .proxy
                .as_ref()
                .expect("the drill reaches Synapse through the proxy")
                .set_delay(if on { SLOW } else { Duration::ZERO }),
        }
    }
}

/// One phase: `hung` accepts connections and never answers for 30 s while
/// `slow` answers 2 s late for 60 s; rounds every 2 s throughout. Returns
/// the rounds written during the phase.
async fn phase(d: &mut Drill, hung: Net, slow: Net) -> std::ops::RangeInclusive<usize> {
    let first = d.n + 1;
    d.slow(slow, true);
    d.hang(&[hung]).await;
    // Matrix's people cannot write while their homeserver hangs.
    let matrix_up = hung != Net::Matrix;
    d.rounds_for(Duration::from_secs(30), SLOW, matrix_up).await;
    d.restore(&[hung]).await;
    d.rounds_for(Duration::from_secs(30), SLOW, true).await;
    d.slow(slow, false);
    let during = first..=d.n;
    d.round(true).await;
    d.until_caught_up("every destination caught up after the phase")
        .await;
    during
}

async fn faults(backend: Backend) {
    let mut d = Drill::start_with(
        backend,
        Options {
            matrix_proxy: true,
            ..Options::default()
        },
    )
    .await;
    let admin = d.synapse.register("admin", true).await;
    let baseline = d.baseline().await;

    // Scenarios 2 and 3.
    for (hung, slow, healthy) in [
        (Net::Telegram, Net::Signal, Net::Matrix),
        (Net::Signal, Net::Matrix, Net::Telegram),
        (Net::Matrix, Net::Telegram, Net::Signal),
    ] {
        let before = d.bot_notices().len();
        let during = phase(&mut d, hung, slow).await;
        d.report_latency(
            &format!("{backend:?}: {hung:?} hung 30 s, {slow:?} 2 s slow 60 s"),
            baseline.clone(),
            during,
            &[healthy],
        )
        .await;
        // One down and one back about the hung network (the back one once
        // its queue drained); a slow one is not down.
        eventually("the down and back notices", || {
            d.bot_notices().len() >= before + 2
        })
        .await;
        d.sb.drained().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let new: Vec<String> = d.bot_notices().split_off(before);
        assert_eq!(new.len(), 2, "{hung:?} hung, {slow:?} slow: {new:#?}");
        assert!(
            new.iter().all(|t| t.contains(hung.account())),
            "only the hung network is announced: {new:#?}"
        );
        assert!(
            new[0].starts_with("⚠️") && new[1].starts_with("✅"),
            "{new:#?}"
        );
    }

    // Scenario 4: every network rate-limits at once.
    let before = d.bot_notices().len();
    let first = d.n + 1;
    let storm_started = Instant::now();
    d.tg.fail("sendMessage", TelegramFault::flood(RETRY_AFTER), 4);
    d.signal.fail(
        "send",
        SignalFault::RateLimit {
            retry_after_seconds: RETRY_AFTER,
        },
        4,
    );
    // Synapse's own limiter, for the bridge's user only: one message a
    // second, no burst (the admin API takes whole numbers).
    let bridge = d.synapse.user_id("bridge");
    admin
        .post(
            &format!(
                "/_synapse/admin/v1/users/{}/override_ratelimit",
                crate::synapse::enc(&bridge)
            ),
            &json!({"messages_per_second": 1, "burst_count": 1}),
        )
        .await;
    d.rounds_for(Duration::from_secs(30), SLOW, true).await;
    admin
        .call(
            reqwest::Method::DELETE,
            &format!(
                "/_synapse/admin/v1/users/{}/override_ratelimit",
                crate::synapse::enc(&bridge)
            ),
            None,
        )
        .await;
    d.round(true).await;
    d.until_caught_up("every destination caught up after the storm")
        .await;
    // Sends are what is rate-limited: what the networks' people write
    // still reaches the bots at once.
    d.report_latency_of(
        &format!("{backend:?}: rate-limit storm on all three"),
        baseline.clone(),
        first..=d.n,
        &["tg", "sig", "mx"],
        &["bot API (WebSocket)", "webhook"],
    )
    .await;
    d.sb.drained().await;
    let new: Vec<String> = d.bot_notices().split_off(before);
    assert!(new.is_empty(), "a rate limit is not an outage: {new:#?}");
    check_retry_after(&d, storm_started);

    tokio::time::sleep(Duration::from_secs(2)).await;
    // A Signal send held by a frozen daemon is carried out when it thaws,
    // after switchboard gave up on it: the lost-answer duplicate. Telegram's
    // fake drops what it held, like a proxy that never passed it on.
    let repeats = d.assert_delivered(&["signal"]).await;
    report!("drill repeats | {backend:?}: faults | {repeats:?}");
    for net in Net::ALL {
        let seen = d.notices_on(net).await;
        for other in Net::ALL.into_iter().filter(|o| *o != net) {
            let about = seen.iter().filter(|t| t.contains(other.account())).count();
            assert_eq!(
                about, 2,
                "notices about {other:?} seen on {net:?}: {seen:#?}"
            );
        }
    }
    d.stop().await;
}

/// Each network was asked to wait and the next send to it came no sooner;
/// prints how much later it came.
fn check_retry_after(d: &Drill, since: Instant) {
    // Telegram: the call log says when each request was read.
    let calls: Vec<_> =
        d.tg.calls_to("sendMessage")
            .into_iter()
            .filter(|c| c.at >= since)
            .collect();
    let mut late = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        if c.status == Some(429) {
            let next = calls.get(i + 1).expect("a send after the 429");
            let waited = next.at - c.at;
            assert!(
                waited >= Duration::from_secs(RETRY_AFTER),
                "Telegram asked for {RETRY_AFTER} s, the next send came after {waited:?}"
            );
            late.push(waited - Duration::from_secs(RETRY_AFTER));
        }
    }
    assert_eq!(late.len(), 4, "four 429s from Telegram");
    report!("drill retry-after | Telegram | waited longer by {late:?}");

    // Signal: each send carries the daemon's timestamp, failed ones too.
    let since_ms = now_ms() - since.elapsed().as_millis() as u64;
    let sends: Vec<_> = d
        .signal
        .sent()
        .into_iter()
        .filter(|s| s.method == "send" && s.timestamp as u64 >= since_ms)
        .collect();
    let mut late = Vec::new();
    for (i, s) in sends.iter().enumerate() {
        if s.error.is_some() {
            let next = sends.get(i + 1).expect("a send after the rate limit");
            let waited = (next.timestamp - s.timestamp) as u64;
            assert!(
                waited >= RETRY_AFTER * 1000,
                "Signal asked for {RETRY_AFTER} s, the next send came after {waited} ms"
            );
            late.push(waited - RETRY_AFTER * 1000);
        }
    }
    assert_eq!(late.len(), 4, "four rate limits from Signal");
    report!("drill retry-after | Signal | waited longer by {late:?} ms");

    // Matrix: the proxy saw each 429 and its `retry_after_ms`.
    let log: Vec<(Instant, String)> = d
        .proxy
        .as_ref()
        .unwrap()
        .log()
        .into_iter()
        .filter(|(at, _)| *at >= since)
        .collect();
    let is_send = |l: &str| l.starts_with("> PUT ") && l.contains("/send/m.room.message/");
    let mut late = Vec::new();
    for (i, (at, line)) in log.iter().enumerate() {
        let Some(ms) = line.strip_prefix("< ").and_then(retry_after_ms) else {
            continue;
        };
        let Some((next, _)) = log[i + 1..].iter().find(|(_, l)| is_send(l)) else {
            continue;
        };
        let waited = *next - *at;
        assert!(
            waited >= Duration::from_millis(ms),
            "Synapse asked for {ms} ms, the next send came after {waited:?}"
        );
        late.push(waited - Duration::from_millis(ms));
    }
    assert!(
        !late.is_empty(),
        "Synapse rate-limited the bridge: {log:#?}"
    );
    report!(
        "drill retry-after | Matrix | {} limits, waited longer by {late:?}",
        late.len()
    );
}

/// `retry_after_ms` from an M_LIMIT_EXCEEDED answer.
fn retry_after_ms(answer: &str) -> Option<u64> {
    let at = answer.find("\"retry_after_ms\":")? + "\"retry_after_ms\":".len();
    let digits: String = answer[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

on_both_backends!(drill_hangs_slow_answers_and_rate_limit_storms => |backend| faults(backend));
