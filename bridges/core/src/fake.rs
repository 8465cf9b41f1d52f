//! A scripted [`Adapter`] for tests (feature `test-util`): it records what
//! it is asked to send and fails the way its script says, so hub tests can
//! drive the outbox through outages and narrow capabilities without a
//! network.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::adapter::{Adapter, Inbound, Outbound, Shutdown};
use crate::caps::Capabilities;
use crate::error::SendError;
use crate::ids::{AccountId, RemoteId};

/// One accepted send.
#[derive(Debug, Clone)]
pub struct Sent {
    /// What was sent.
    pub op: Outbound,
    /// The idempotency key it came with.
    pub key: String,
    /// The id the fake gave it.
    pub remote: RemoteId,
}

/// A fake network account.
#[derive(Debug)]
pub struct FakeAdapter {
    account: AccountId,
    caps: Capabilities,
    /// Failures to return, in order, before sends succeed again.
    script: Mutex<VecDeque<SendError>>,
    /// Every attempt, failed or not: (channel, text) for ordering checks.
    attempts: Mutex<Vec<String>>,
    sent: Mutex<Vec<Sent>>,
}

impl FakeAdapter {
    /// A fake for `account` rendering `caps`.
    #[must_use]
    pub fn new(account: AccountId, caps: Capabilities) -> Arc<Self> {
        Arc::new(Self {
            account,
            caps,
            script: Mutex::new(VecDeque::new()),
            attempts: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
        })
    }

    /// Queues failures for the next attempts.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = SendError>) {
        self.script.lock().expect("fake lock").extend(errors);
    }

    /// The accepted sends so far.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("fake lock").clone()
    }

    /// Every attempt so far, as `channel` names, in order.
    #[must_use]
    pub fn attempts(&self) -> Vec<String> {
        self.attempts.lock().expect("fake lock").clone()
    }
}

#[async_trait]
impl Adapter for FakeAdapter {
    fn account(&self) -> &AccountId {
        &self.account
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    async fn run(
        self: Arc<Self>,
        _inbound: Arc<dyn Inbound>,
        shutdown: Shutdown,
    ) -> Result<(), SendError> {
        shutdown.await;
        Ok(())
    }

    async fn send(&self, op: &Outbound, key: &str) -> Result<RemoteId, SendError> {
        self.attempts
            .lock()
            .expect("fake lock")
            .push(op.channel.to_string());
        if let Some(e) = self.script.lock().expect("fake lock").pop_front() {
            return Err(e);
        }
        let mut sent = self.sent.lock().expect("fake lock");
        let remote = RemoteId::new(format!("r{}", sent.len() + 1)).expect("valid");
        sent.push(Sent {
            op: op.clone(),
            key: key.to_owned(),
            remote: remote.clone(),
        });
        Ok(remote)
    }
}
