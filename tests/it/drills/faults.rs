//! Scenarios 2, 3 and 4: networks that accept connections and never answer
//! (30 s), networks that answer every request 2 s late (60 s), and
//! rate-limit storms on every network at once.
//!
//! Hangs and slow answers are paired so that each phase leaves one network
//! healthy to measure: while the first network hangs, the second is slow
//! and the third healthy; then the second hangs, the third is slow, the
//! first is healthy; and so on round the registry. Every network meets each
//! fault once.

use std::time::Duration;

use switchboard_core::testkit::Fault;

use super::*;

const SLOW: Duration = Duration::from_secs(2);
/// What the services ask for in the storm (where a test may say): longer
/// than `notice_after`, so a rate limit taken for an outage would be
/// announced.
const RETRY_AFTER: Duration = Duration::from_secs(6);
/// Sends refused per network in the storm (where a test may say).
const STORM: usize = 4;

/// One phase: `hung` accepts connections and never answers for 30 s while
/// `slow` answers 2 s late for 60 s; rounds every 2 s throughout. Returns
/// the rounds written during the phase.
async fn phase(d: &mut Drill, hung: Net, slow: Net) -> std::ops::RangeInclusive<usize> {
    let first = d.n + 1;
    d.fault(&[slow], Fault::Slow(SLOW)).await;
    d.hang(&[hung]).await;
    d.rounds_for(Duration::from_secs(30), SLOW).await;
    d.restore(&[hung]).await;
    d.rounds_for(Duration::from_secs(30), SLOW).await;
    d.restore(&[slow]).await;
    let during = first..=d.n;
    d.round().await;
    d.until_caught_up("every destination caught up after the phase")
        .await;
    during
}

async fn faults(backend: Backend) {
    let mut d = Drill::start(backend).await;
    let baseline = d.baseline().await;
    let all = d.nets();
    let n = all.len();

    // Scenarios 2 and 3.
    for i in 0..n {
        let (hung, slow, healthy) = (all[i], all[(i + 1) % n], all[(i + 2) % n]);
        let before = d.bot_notices().len();
        let during = phase(&mut d, hung, slow).await;
        d.report_latency(
            &format!(
                "{backend:?}: {} hung 30 s, {} 2 s slow 60 s",
                d.dest(hung),
                d.dest(slow)
            ),
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
        let account = d.account(hung);
        assert_eq!(new.len(), 2, "{account} hung: {new:#?}");
        assert!(
            new.iter().all(|t| t.contains(&account)),
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
    let storm_started = now_ms();
    d.fault(
        &all,
        Fault::RateLimit {
            retry_after: RETRY_AFTER,
            times: STORM,
        },
    )
    .await;
    d.rounds_for(Duration::from_secs(30), SLOW).await;
    d.restore(&all).await;
    d.round().await;
    d.until_caught_up("every destination caught up after the storm")
        .await;
    // Sends are what is rate-limited: what the networks' people write
    // still reaches the bots at once.
    let people: Vec<&str> = all.iter().map(|n| d.peer(*n).sender()).collect();
    d.report_latency_of(
        &format!("{backend:?}: rate-limit storm on every network"),
        baseline.clone(),
        first..=d.n,
        &people,
        &BOT_DESTS,
    )
    .await;
    d.sb.drained().await;
    let new: Vec<String> = d.bot_notices().split_off(before);
    assert!(new.is_empty(), "a rate limit is not an outage: {new:#?}");
    for net in &all {
        let peer = d.peer(*net);
        let limited = peer.rate_limited(storm_started).await;
        // Each network was asked to wait, and the next send to it came no
        // sooner.
        for r in &limited {
            assert!(
                r.waited >= r.asked,
                "{} asked for {:?}, the next send came after {:?}",
                d.dest(*net),
                r.asked,
                r.waited
            );
        }
        if peer.limits_exactly() {
            // A fake refuses exactly as many sends as it was told.
            assert_eq!(limited.len(), STORM, "{}: {limited:?}", d.dest(*net));
        } else {
            // The homeserver's own limiter decides how many.
            assert!(
                !limited.is_empty(),
                "{} rate-limited the bridge",
                d.dest(*net)
            );
        }
        let late: Vec<Duration> = limited.iter().map(|r| r.waited - r.asked).collect();
        report!(
            "drill retry-after | {} | {} limits, waited longer by {late:?}",
            d.dest(*net),
            limited.len()
        );
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    // A send held by a frozen service may be carried out when it thaws,
    // after switchboard gave up on it: the lost-answer duplicate, on the
    // networks without an idempotency key.
    let lossy = d.lossy();
    let repeats = d.assert_delivered(&lossy).await;
    report!("drill repeats | {backend:?}: faults | {repeats:?}");
    for net in &all {
        let seen = d.notices_on(*net).await;
        for other in all.iter().filter(|o| *o != net) {
            let account = d.account(*other);
            let about = seen.iter().filter(|t| t.contains(&account)).count();
            assert_eq!(
                about,
                2,
                "notices about {account} seen on {}: {seen:#?}",
                d.dest(*net)
            );
        }
    }
    d.stop().await;
}

/// On SQLite only, as the refusals drill (the networks fail here, not the
/// store): four minutes saved in every CI run.
#[tokio::test]
async fn drill_hangs_slow_answers_and_rate_limit_storms() {
    faults(Backend::Sqlite).await;
}
