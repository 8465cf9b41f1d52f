//! How a send failed, and what the hub's outbox should do about it.

use std::time::Duration;

use crate::ids::ChannelId;

/// What the outbox does after a failed send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryKind {
    /// Try this message again later; `retry_after` is the network's own
    /// instruction (HTTP `Retry-After`, Telegram's `retry_after`) when given.
    Transient {
        /// How long the network asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The whole account is unreachable (connection refused, DNS, auth
    /// outage): pause every channel of the account and probe.
    AccountDown {
        /// How long the network asked us to wait.
        retry_after: Option<Duration>,
    },
    /// One destination channel cannot be reached until someone acts on the
    /// network (the bot was removed from the group, lost the right to
    /// write, or the chat is gone), while the rest of the account works:
    /// the channel's lane waits with backoff (up to the outbox's
    /// `max_age`), `status` shows the channel as needing action with the
    /// network's words, and the gateway's other members are told it is
    /// unreachable, then back.
    ChannelDown {
        /// How long the network asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The adapter is still starting (not signed in yet): the send waits
    /// for it to be ready. Not a failure of the network: no breaker trip,
    /// no outage, no attempt counted.
    NotReady,
    /// Retrying cannot help (bad request, invalid parameters): dead-letter.
    Permanent,
    /// The channel moved (Telegram's `migrate_to_chat_id`): the hub moves
    /// the channel's queue, message map and routes to `to` and sends there.
    Moved {
        /// The channel's new id.
        to: ChannelId,
    },
}

/// One failed attempt to send, classified by the adapter that made it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    kind: RetryKind,
    message: String,
    /// The network is pacing us (a rate limit), not failing: the outbox
    /// waits as asked and does not count it towards an outage.
    rate_limited: bool,
}

impl SendError {
    /// A failure worth retrying for this message alone.
    pub fn transient(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            kind: RetryKind::Transient { retry_after },
            message: message.into(),
            rate_limited: false,
        }
    }

    /// The network's rate limit (Telegram's 429, signal-cli's `-5`,
    /// Matrix's `M_LIMIT_EXCEEDED`, a webhook's 429): retry this message
    /// after `retry_after` (or the outbox's backoff when not given). Not an
    /// outage: nobody is told the network is unreachable while it paces us.
    pub fn rate_limited(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            kind: RetryKind::Transient { retry_after },
            message: message.into(),
            rate_limited: true,
        }
    }

    /// The account as a whole cannot be reached.
    pub fn account_down(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            kind: RetryKind::AccountDown { retry_after },
            message: message.into(),
            rate_limited: false,
        }
    }

    /// One destination channel is unreachable until someone acts on the
    /// network ([`RetryKind::ChannelDown`]); `message` is the network's own
    /// words, shown to the admin.
    pub fn channel_down(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            kind: RetryKind::ChannelDown { retry_after },
            message: message.into(),
            rate_limited: false,
        }
    }

    /// The adapter cannot send yet because it is still starting
    /// ([`RetryKind::NotReady`]).
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self {
            kind: RetryKind::NotReady,
            message: message.into(),
            rate_limited: false,
        }
    }

    /// A failure that will not go away; the message becomes a dead letter.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: RetryKind::Permanent,
            message: message.into(),
            rate_limited: false,
        }
    }

    /// The channel now lives under another id; send there instead.
    pub fn moved(message: impl Into<String>, to: ChannelId) -> Self {
        Self {
            kind: RetryKind::Moved { to },
            message: message.into(),
            rate_limited: false,
        }
    }

    /// What the outbox should do.
    #[must_use]
    pub fn retry_kind(&self) -> RetryKind {
        self.kind.clone()
    }

    /// The same failure with the network's retry-after no longer than
    /// `max`: a `Retry-After: 999999999` must not park a queue for decades.
    #[must_use]
    pub fn capped(mut self, max: Duration) -> Self {
        match &mut self.kind {
            RetryKind::Transient { retry_after }
            | RetryKind::AccountDown { retry_after }
            | RetryKind::ChannelDown { retry_after } => {
                if let Some(ra) = retry_after {
                    *ra = (*ra).min(max);
                }
            }
            RetryKind::NotReady | RetryKind::Permanent | RetryKind::Moved { .. } => {}
        }
        self
    }

    /// Whether this is the network's rate limit ([`SendError::rate_limited`]).
    #[must_use]
    pub fn is_rate_limit(&self) -> bool {
        self.rate_limited
    }

    /// The human-readable reason, stored with retries and dead letters.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}
