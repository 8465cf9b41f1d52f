//! Notifications from the other instances of the cluster, on a connection
//! of this instance's own (`LISTEN`): a lane got rows (its holder wakes
//! it), the feed got rows (the pump reads them), leases were given back
//! (the lease round runs at once, so a rolling restart hands work over in
//! moments rather than when leases run out), a link made from the chats
//! changed (the routes are read again). Notifications are a shortcut,
//! never the only way: after the connection was lost everything is woken
//! once, the pump looks every second and the lease round sweeps for
//! waiting lanes every few rounds.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{AccountId, ChannelId};
use tokio::sync::watch;

use crate::hub::Hub;
use crate::store::postgres::{self, channel};

/// Listens until `shutdown`.
pub fn spawn(
    hub: Arc<Hub>,
    url: String,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let cluster = hub.cluster.clone().expect("listening is for a cluster");
        let me = cluster.name().to_owned();
        let mut failing = false;
        loop {
            let listener = tokio::select! {
                l = postgres::listen(&url) => l,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let mut listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "Cannot listen for the other instances' notifications; retrying.");
                        failing = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            };
            failing = false;
            // Whatever was said while nobody listened.
            wake_all(&hub);
            loop {
                let next = tokio::select! {
                    n = listener.try_recv() => n,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                match next {
                    Ok(Some(n)) => handle(&hub, &me, n.channel(), n.payload()),
                    // The connection dropped; the listener connects again.
                    Ok(None) => wake_all(&hub),
                    Err(e) => {
                        tracing::debug!(error = %e, "The notification connection failed; connecting again.");
                        break;
                    }
                }
            }
        }
    })
}

fn wake_all(hub: &Arc<Hub>) {
    if let Some(c) = &hub.cluster {
        c.feed_wake.notify_one();
        c.wake.notify_one();
    }
    hub.outbox.poke_held();
    follow_links(hub);
}

/// Reads the links again (off the listening task: it waits for the lock
/// link changes and reloads take).
fn follow_links(hub: &Arc<Hub>) {
    let hub = Arc::clone(hub);
    tokio::spawn(async move { hub.links.follow(&hub).await });
}

fn handle(hub: &Arc<Hub>, me: &str, ch: &str, payload: &str) {
    let Some(cluster) = &hub.cluster else {
        return;
    };
    match ch {
        channel::LANES => {
            let mut lines = payload.lines();
            if lines.next() == Some(me) {
                return;
            }
            for line in lines {
                let Some((account, ch)) = line.split_once(' ') else {
                    continue;
                };
                if let (Ok(a), Ok(c)) = (account.parse::<AccountId>(), ChannelId::new(ch)) {
                    hub.outbox.poke(&a, &c);
                }
            }
        }
        channel::FEED if payload != me => cluster.feed_wake.notify_one(),
        channel::LEASES if payload != me => cluster.wake.notify_one(),
        channel::LINKS if payload != me => follow_links(hub),
        _ => {}
    }
}
