//! Putting dead letters back in their lane without breaking its order.
//!
//! A lane sends its rows in id order and reads on after the last one it
//! handled, so a dead letter put back with its old id would be skipped,
//! and one put back while the lane is handing a later row to the network
//! could end up delivered after it. Each lane therefore has a [`LaneGate`]:
//! the lane holds it from the moment it hands a row to the network until
//! the outcome is recorded, and a requeue holds it while it decides where
//! each row goes and commits that (`crate::store::dead_letters`). A row
//! kept in place leaves a *rewind* on the gate: before its next send the
//! lane goes back to it (the row it was about to send stays queued, its
//! attempts kept, exactly as after a restart).

use std::sync::{Arc, Mutex};

use switchboard_core::{AccountId, ChannelId};

use super::Outbox;
use crate::store::dead_letters::{self, Placement, Requeued};
use crate::store::StoreError;

/// One lane's coordination with requeues.
#[derive(Debug, Default)]
pub(crate) struct LaneGate {
    /// Held across a send and the commit of its outcome by the lane, and
    /// across a requeue's decision and commit.
    send: Arc<tokio::sync::Mutex<()>>,
    /// The lowest id a requeue put back in place and the lane has not gone
    /// back to yet. A std mutex: set and taken, never held across await.
    rewind: Mutex<Option<i64>>,
    /// Held by the task driving the lane, for its whole life: a lane given
    /// back and taken again at once (a cluster) starts only once its old
    /// task finished the send it had in flight.
    driver: Arc<tokio::sync::Mutex<()>>,
}

impl LaneGate {
    /// Waits until no other task drives this lane; the guard makes the
    /// caller its driver.
    pub(crate) async fn drive(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.driver.clone().lock_owned().await
    }

    /// Taken by the lane before it hands row `id` to the network; `None`
    /// when a requeue put an earlier row back (the lane goes back first).
    /// A row with pieces delivered already is finished first: its
    /// remaining pieces belong right after the ones sent.
    pub(crate) async fn hold(
        &self,
        id: i64,
        parts_sent: usize,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let held = self.send.clone().lock_owned().await;
        if parts_sent == 0 && self.rewinds_before(id) {
            return None;
        }
        Some(held)
    }

    /// Whether a requeued row before `id` waits for the lane.
    pub(crate) fn rewinds_before(&self, id: i64) -> bool {
        self.rewind
            .lock()
            .expect("rewind lock")
            .is_some_and(|r| r < id)
    }

    /// Where the lane must read from next: `after`, or before the lowest
    /// row put back in place since it last asked.
    pub(crate) fn read_after(&self, after: i64) -> i64 {
        match self.rewind.lock().expect("rewind lock").take() {
            Some(r) => after.min(r - 1),
            None => after,
        }
    }

    fn rewind_to(&self, id: i64) {
        let mut r = self.rewind.lock().expect("rewind lock");
        *r = Some(r.map_or(id, |x| x.min(id)));
    }
}

impl Outbox {
    /// Requeues dead letters `ids` of the lane `account`/`channel` (see
    /// [`crate::store::dead_letters`] for where each goes) and wakes the
    /// lane. Waits for a send in flight on the lane to finish first.
    ///
    /// # Errors
    /// When the store cannot commit it.
    pub async fn requeue(
        &self,
        account: &AccountId,
        channel: &ChannelId,
        ids: &[i64],
    ) -> Result<Vec<Requeued>, StoreError> {
        let gate = self.gate(account, channel);
        let done = {
            // A send in flight ends within its timeout; one whose outcome
            // cannot be recorded (the database is down) holds the lane
            // until the database is back: say so rather than hang.
            let wait = self.inner.settings.send_timeout + std::time::Duration::from_secs(5);
            let Ok(_held) = tokio::time::timeout(wait, gate.send.lock()).await else {
                return Err(StoreError::Unavailable(format!(
                    "the queue of {account} {channel} is busy recording a send; try again"
                )));
            };
            let done = dead_letters::requeue(
                &self.inner.writer,
                &account.to_string(),
                channel.as_str(),
                ids,
            )
            .await?;
            if let Some(first) = done
                .iter()
                .filter(|r| r.placement == Placement::InPlace)
                .map(|r| r.id)
                .min()
            {
                gate.rewind_to(first);
            }
            done
        };
        if !done.is_empty() {
            let label = crate::metrics::Metrics::label(account);
            self.inner
                .metrics
                .queue_depth
                .get_or_create(&label)
                .inc_by(i64::try_from(done.len()).unwrap_or(i64::MAX));
            for r in &done {
                tracing::info!(%account, %channel, row = r.id, new_row = r.new_id, placement = ?r.placement, "Dead letter requeued by an admin.");
            }
            self.poke(account, channel);
            self.wake_elsewhere(account, channel).await;
        }
        Ok(done)
    }
}
