//! Scenario 1: each network refusing connections for 60 s, one at a time,
//! then two together.

use std::time::Duration;

use super::*;

/// One outage of `nets` for 60 s: three rounds 5 s apart while it lasts
/// (the people of a network whose service is the one down cannot write),
/// one after, until every destination caught up. Returns the rounds
/// written during the outage.
async fn outage(d: &mut Drill, nets: &[Net]) -> std::ops::RangeInclusive<usize> {
    d.refuse(nets).await;
    let started = Instant::now();
    let first = d.n + 1;
    d.rounds_for(Duration::from_secs(15), Duration::from_secs(5))
        .await;
    let during = first..=d.n;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    d.restore(nets).await;
    d.round().await;
    d.until_caught_up("every destination caught up after the outage")
        .await;
    during
}

async fn refusals(backend: Backend) {
    let mut d = Drill::start(backend).await;
    let baseline = d.baseline().await;
    let all = d.nets();
    // Each alone, then the first two together.
    let mut plan: Vec<Vec<Net>> = all.iter().map(|n| vec![*n]).collect();
    plan.push(all[..2].to_vec());
    for nets in &plan {
        let during = outage(&mut d, nets).await;
        let healthy: Vec<Net> = all.iter().copied().filter(|n| !nets.contains(n)).collect();
        let names: Vec<&str> = nets.iter().map(|n| d.dest(*n)).collect();
        d.report_latency(
            &format!("{backend:?}: {names:?} refusing 60 s"),
            baseline.clone(),
            during,
            &healthy,
        )
        .await;
    }
    let outages = |net: Net| plan.iter().filter(|p| p.contains(&net)).count();
    let total: usize = all.iter().map(|n| outages(*n)).sum();
    eventually("the last back notice", || {
        d.bot_notices().len() >= 2 * total
    })
    .await;
    d.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.assert_each_once_in_order().await;
    // The bot, on a network that never went down, heard of each outage
    // once when it began and once when it ended.
    let at_bot = d.bot_notices();
    assert_eq!(
        at_bot.len(),
        2 * total,
        "one down and one back per outage: {at_bot:#?}"
    );
    for net in &all {
        let account = d.account(*net);
        let about = at_bot.iter().filter(|t| t.contains(&account)).count();
        assert_eq!(
            about,
            2 * outages(*net),
            "notices about {account}: {at_bot:#?}"
        );
    }
    // So did the people on each network, about the others' outages only
    // (queued while a network is down itself, and delivered late).
    for net in &all {
        let seen = d.notices_on(*net).await;
        for other in all.iter().filter(|o| *o != net) {
            let account = d.account(*other);
            let about = seen.iter().filter(|t| t.contains(&account)).count();
            assert_eq!(
                about,
                2 * outages(*other),
                "notices about {account} seen on {}: {seen:#?}",
                d.dest(*net)
            );
        }
        let own = d.account(*net);
        assert!(
            !seen.iter().any(|t| t.contains(&own)),
            "{own} is not told about itself: {seen:#?}"
        );
    }
    d.stop().await;
}

/// On SQLite only: what fails here is the networks, and the store does the
/// same on both backends (the database's own failures, kill -9 and the
/// store's contract run on both). Five minutes saved in every CI run.
#[tokio::test]
async fn drill_each_network_refusing_for_60s_then_two_at_once() {
    refusals(Backend::Sqlite).await;
}
