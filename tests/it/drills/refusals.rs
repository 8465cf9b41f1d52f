//! Scenario 1: each network refusing connections for 60 s, one at a time,
//! then Telegram and Signal together.

use std::time::Duration;

use super::*;

/// One outage of `nets` for 60 s: three rounds 5 s apart while it lasts
/// (Matrix's people cannot write while their homeserver is down), one
/// after, until every destination caught up. Returns the rounds written
/// during the outage.
async fn outage(d: &mut Drill, nets: &[Net]) -> std::ops::RangeInclusive<usize> {
    d.refuse(nets).await;
    let matrix_up = !nets.contains(&Net::Matrix);
    let started = Instant::now();
    let first = d.n + 1;
    d.rounds_for(Duration::from_secs(15), Duration::from_secs(5), matrix_up)
        .await;
    let during = first..=d.n;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    d.restore(nets).await;
    d.round(true).await;
    d.until_caught_up("every destination caught up after the outage")
        .await;
    during
}

async fn refusals(backend: Backend) {
    let mut d = Drill::start(backend).await;
    let baseline = d.baseline().await;
    let plan: [&[Net]; 4] = [
        &[Net::Telegram],
        &[Net::Signal],
        &[Net::Matrix],
        &[Net::Telegram, Net::Signal],
    ];
    for nets in plan {
        let during = outage(&mut d, nets).await;
        let healthy: Vec<Net> = Net::ALL.into_iter().filter(|n| !nets.contains(n)).collect();
        d.report_latency(
            &format!("{backend:?}: {nets:?} refusing 60 s"),
            baseline.clone(),
            during,
            &healthy,
        )
        .await;
    }
    eventually("the last back notice", || d.bot_notices().len() >= 10).await;
    d.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.assert_each_once_in_order().await;
    // The bot, on a network that never went down, heard of each outage
    // once when it began and once when it ended: five outages (the last
    // is two at once).
    let at_bot = d.bot_notices();
    assert_eq!(
        at_bot.len(),
        10,
        "one down and one back per outage: {at_bot:#?}"
    );
    for net in Net::ALL {
        let about: Vec<&String> = at_bot
            .iter()
            .filter(|t| t.contains(net.account()))
            .collect();
        let expected = if net == Net::Matrix { 2 } else { 4 };
        assert_eq!(about.len(), expected, "notices about {net:?}: {at_bot:#?}");
    }
    // So did the people on each network, about the others' outages only.
    for net in Net::ALL {
        let seen = d.notices_on(net).await;
        for other in Net::ALL.into_iter().filter(|o| *o != net) {
            let about = seen.iter().filter(|t| t.contains(other.account())).count();
            // Queued while a network is down itself, and delivered late.
            let outages = if other == Net::Matrix { 1 } else { 2 };
            assert_eq!(
                about,
                2 * outages,
                "notices about {other:?} seen on {net:?}: {seen:#?}"
            );
        }
        assert!(
            !seen.iter().any(|t| t.contains(net.account())),
            "{net:?} is not told about itself: {seen:#?}"
        );
    }
    d.stop().await;
}

on_both_backends!(drill_each_network_refusing_for_60s_then_two_at_once => |backend| refusals(backend));
