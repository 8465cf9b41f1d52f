//! The bot's update queue and `getUpdates`, with the open-source server's
//! semantics:
//!
//! - ids rise by one from a random start; an update is deleted only when a
//!   later call passes an `offset` above its id (so a client that crashed
//!   before confirming gets it again). An `offset` more than ten past the
//!   newest id confirms nothing and reads from the oldest kept update.
//! - a negative `offset` keeps only the last `-offset` updates, forgetting
//!   the rest.
//! - `limit` is clamped to 1–100 (default 100), `timeout` to 0–50 s.
//! - `allowed_updates` persists across calls. The filter applies when an
//!   update is *created*: filtered-out updates are never queued, and ones
//!   already queued stay. `[]` (or a list of only unknown names) means the
//!   default, which leaves out `chat_member`, `message_reaction` and
//!   `message_reaction_count`; JSON that is not an array of strings changes
//!   nothing.
//! - a long poll waits until an update is queued or the timeout passes. A
//!   new poll that has to wait terminates the waiting one with 409; so does
//!   setWebhook. While a webhook is set every call answers 409. A 409 within
//!   3 s of the previous one is delayed by 3 s (the server's own throttle).
//! - hot loops are throttled: the same `offset` again within 3 s waits at
//!   least 3 s, and within 0.5 s gets `limit` 1.
//! - updates expire a day after they were created (message updates: a day
//!   after the message's date or edit date).
//! - with a webhook set, the same queue is what `webhook` delivers: each
//!   update belongs to a delivery queue as the server assigns them (a
//!   chat's messages and edits one queue, its reactions another, its
//!   `my_chat_member` updates a third; other kinds one queue each). A queue
//!   delivers one update at a time, in order, retrying a refused one after
//!   1 s, 2 s, 4 s... (at most 60 s) before the next; different queues go
//!   in parallel, up to the webhook's `max_connections`.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult, Success};
use super::params::Params;
use super::state::{now_unix, Shared};

/// Every update type the server knows.
pub(crate) const UPDATE_TYPES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
];

/// Types a bot only gets when it lists them explicitly.
const OPT_IN: &[&str] = &["chat_member", "message_reaction", "message_reaction_count"];

const OTHER_POLLER: &str =
    "terminated by other getUpdates request; make sure that only one bot instance is running";
pub(crate) const BY_SET_WEBHOOK: &str = "terminated by setWebhook request";
/// What a long poll ends with when the fake stops (nobody reads it).
pub(crate) const SHUT_DOWN: &str = "terminated by server shutdown";
const WEBHOOK_ACTIVE: &str =
    "can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

struct Queued {
    id: i64,
    update: Value,
    /// Unix seconds after which the update is gone.
    expires_at: i64,
    /// The webhook delivery queue it belongs to.
    queue: i64,
    /// When a webhook may (next) carry it.
    due: Instant,
    /// Seconds before the next attempt after a refusal.
    delay: u64,
    /// A webhook delivery of it is under way.
    in_flight: bool,
}

/// The server's webhook queue of an update (`webhook_queue_id`): a chat's
/// messages share one, its reactions and its member updates have their own
/// (offset by a kind number shifted past any chat id), anything else a
/// queue of its own (`unique`).
fn delivery_queue(update: &Map<String, Value>, unique: &mut i64) -> i64 {
    let chat = |kind: &str, path: &str| {
        update
            .get(kind)
            .and_then(|v| v.pointer(path))
            .and_then(Value::as_i64)
    };
    let message = [
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
    ]
    .iter()
    .find_map(|k| chat(k, "/chat/id"));
    let keyed = message
        .or_else(|| chat("my_chat_member", "/chat/id").map(|c| c + (5 << 33)))
        .or_else(|| chat("message_reaction", "/chat/id").map(|c| c + (8 << 33)))
        .or_else(|| chat("message_reaction_count", "/chat/id").map(|c| c + (9 << 33)));
    keyed.unwrap_or_else(|| {
        *unique += 1;
        *unique
    })
}

/// Who is long-polling, and the throttles' memory.
#[derive(Default)]
struct PollBook {
    /// Bumped whenever the waiting long poll is to be terminated.
    generation: u64,
    abort_reason: &'static str,
    /// The previous call's offset and start.
    previous: Option<(i64, Instant)>,
    /// No 409 before this instant without a 3 s delay.
    next_conflict: Option<Instant>,
}

/// The queue.
pub(crate) struct UpdateQueue {
    events: VecDeque<Queued>,
    next_id: i64,
    allowed: BTreeSet<&'static str>,
    poll: PollBook,
    /// The last delivery queue handed out to an update of no chat.
    unique_queue: i64,
}

fn default_allowed() -> BTreeSet<&'static str> {
    UPDATE_TYPES
        .iter()
        .copied()
        .filter(|t| !OPT_IN.contains(t))
        .collect()
}

impl UpdateQueue {
    pub fn new(first_id: i64) -> Self {
        UpdateQueue {
            events: VecDeque::new(),
            next_id: first_id,
            allowed: default_allowed(),
            poll: PollBook::default(),
            unique_queue: 1 << 60,
        }
    }

    /// Queues `{update_id, <kind>: payload}` unless the filter drops it.
    /// Kinds the server does not know are never filtered (tests use them to
    /// check that a client skips what it does not understand).
    pub fn push(&mut self, kind: &str, payload: Value, expires_at: i64) -> Option<i64> {
        let mut update = Map::new();
        update.insert(kind.to_string(), payload);
        self.push_raw(update, expires_at)
    }

    /// Queues a raw update object; its `update_id` is replaced.
    pub fn push_raw(&mut self, mut update: Map<String, Value>, expires_at: i64) -> Option<i64> {
        update.remove("update_id");
        let known = update
            .keys()
            .find_map(|k| UPDATE_TYPES.iter().find(|t| **t == k.as_str()));
        if known.is_some_and(|kind| !self.allowed.contains(kind)) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let queue = delivery_queue(&update, &mut self.unique_queue);
        let mut ordered = Map::new();
        ordered.insert("update_id".into(), id.into());
        ordered.extend(update);
        self.events.push_back(Queued {
            id,
            update: Value::Object(ordered),
            expires_at,
            queue,
            due: Instant::now(),
            delay: 1,
            in_flight: false,
        });
        Some(id)
    }

    /// Updates a webhook may carry now, at most `room` of them: the oldest
    /// update of each queue that has none in flight, once due, the earliest
    /// due first (then by queue, as the server orders them). They are
    /// marked in flight.
    pub fn webhook_due(&mut self, now: Instant, room: usize, unix: i64) -> Vec<(i64, Value)> {
        self.drop_expired(unix);
        let busy: BTreeSet<i64> = self
            .events
            .iter()
            .filter(|e| e.in_flight)
            .map(|e| e.queue)
            .collect();
        let mut seen = BTreeSet::new();
        let mut heads: Vec<usize> = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            if seen.insert(e.queue) && !busy.contains(&e.queue) && e.due <= now {
                heads.push(i);
            }
        }
        heads.sort_by_key(|i| (self.events[*i].due, self.events[*i].queue));
        heads.truncate(room);
        heads
            .into_iter()
            .map(|i| {
                let e = &mut self.events[i];
                e.in_flight = true;
                (e.id, e.update.clone())
            })
            .collect()
    }

    /// When the next queue held back by a retry delay may deliver again
    /// (the earliest due time of a queue's oldest update; the updates
    /// behind it wait for it whatever their own time).
    pub fn webhook_next_due(&self) -> Option<Instant> {
        let mut seen = BTreeSet::new();
        self.events
            .iter()
            .filter(|e| seen.insert(e.queue) && !e.in_flight)
            .map(|e| e.due)
            .min()
    }

    /// Deliveries under way.
    pub fn webhook_in_flight(&self) -> usize {
        self.events.iter().filter(|e| e.in_flight).count()
    }

    /// A delivery ended: a 2xx confirms the update (it is gone); anything
    /// else puts it back at the head of its queue for a later attempt.
    pub fn webhook_done(&mut self, id: i64, delivered: bool, now: Instant) {
        let Some(i) = self.events.iter().position(|e| e.id == id) else {
            return;
        };
        if delivered {
            self.events.remove(i);
            return;
        }
        let e = &mut self.events[i];
        e.in_flight = false;
        e.due = now + Duration::from_secs(e.delay);
        e.delay = (e.delay * 2).min(60);
    }

    /// The webhook is gone: nothing is in flight any more.
    pub fn webhook_reset(&mut self) {
        for e in &mut self.events {
            e.in_flight = false;
        }
    }

    /// Applies an `allowed_updates` parameter (of getUpdates or
    /// setWebhook).
    pub fn set_allowed(&mut self, arg: Option<&str>) {
        let Some(Ok(Value::Array(names))) = arg.map(serde_json::from_str::<Value>) else {
            return;
        };
        let mut allowed = BTreeSet::new();
        for name in &names {
            let Value::String(name) = name else {
                return;
            };
            let name = name.to_ascii_lowercase();
            if let Some(known) = UPDATE_TYPES.iter().find(|t| **t == name) {
                allowed.insert(*known);
            }
        }
        self.allowed = if allowed.is_empty() {
            default_allowed()
        } else {
            allowed
        };
    }

    fn drop_expired(&mut self, now: i64) {
        self.events.retain(|e| e.expires_at >= now);
    }

    /// Confirms what `offset` confirms and returns up to `limit` updates.
    fn take(&mut self, offset: i64, limit: usize, now: i64) -> Vec<Value> {
        self.drop_expired(now);
        if offset < 0 {
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            while self.events.len() > keep {
                self.events.pop_front();
            }
        }
        let head = self.events.front().map_or(self.next_id, |e| e.id);
        let from = if offset <= 0 || offset > self.next_id + 10 {
            head
        } else {
            while self.events.front().is_some_and(|e| e.id < offset) {
                self.events.pop_front();
            }
            offset
        };
        self.events
            .iter()
            .filter(|e| e.id >= from)
            .take(limit)
            .map(|e| e.update.clone())
            .collect()
    }

    /// Updates not yet confirmed (nor expired).
    pub fn pending(&self, now: i64) -> usize {
        self.events.iter().filter(|e| e.expires_at >= now).count()
    }

    /// Drops every queued update (`drop_pending_updates`).
    pub fn clear(&mut self) {
        self.events.clear();
    }

    /// Makes every queued update `secs` older.
    pub fn age(&mut self, secs: i64) {
        for e in &mut self.events {
            e.expires_at -= secs;
        }
    }

    /// Terminates the waiting long poll, if any (the caller wakes it).
    pub fn abort_long_poll(&mut self, reason: &'static str) {
        self.poll.generation += 1;
        self.poll.abort_reason = reason;
    }
}

/// What one look at the queue decided.
enum Step {
    Answer(Vec<Value>),
    Wait,
    Conflict(&'static str),
}

/// `getUpdates`.
pub(crate) async fn get_updates(shared: &Shared, p: &Params) -> ApiResult<Success> {
    let offset = p.int("offset").unwrap_or(0);
    let mut limit = p.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    let mut timeout = p.int("timeout").unwrap_or(0).clamp(0, 50) as u64;

    let (first, generation) = {
        let mut st = shared.lock();
        if st.webhook.is_some() {
            (Step::Conflict(WEBHOOK_ACTIVE), 0)
        } else {
            let at_once = st.polls_at_once;
            let q = &mut st.updates;
            q.set_allowed(p.arg("allowed_updates").as_deref());
            let now = Instant::now();
            if let Some((previous, at)) = q.poll.previous {
                if previous == offset && now < at + Duration::from_secs(3) {
                    timeout = timeout.max(3);
                }
                if previous == offset && now < at + Duration::from_millis(500) {
                    limit = 1;
                }
            }
            q.poll.previous = Some((offset, now));
            let batch = q.take(offset, limit, now_unix());
            if !batch.is_empty() || timeout == 0 || at_once {
                (Step::Answer(batch), 0)
            } else {
                // This call becomes the long poll; the earlier one ends.
                q.abort_long_poll(OTHER_POLLER);
                (Step::Wait, q.poll.generation)
            }
        }
    };
    match first {
        Step::Answer(batch) => return Ok(Value::Array(batch).into()),
        Step::Conflict(reason) => return conflict(shared, reason).await,
        Step::Wait => shared.wake.notify_waiters(),
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let step = {
            let mut st = shared.lock();
            let q = &mut st.updates;
            if q.poll.generation != generation {
                Step::Conflict(q.poll.abort_reason)
            } else {
                let batch = q.take(offset, limit, now_unix());
                if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                    Step::Answer(batch)
                } else {
                    Step::Wait
                }
            }
        };
        match step {
            Step::Answer(batch) => return Ok(Value::Array(batch).into()),
            Step::Conflict(reason) => return conflict(shared, reason).await,
            Step::Wait => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }
}

/// A 409, at most one every 3 s without a delay, as the server throttles them.
async fn conflict(shared: &Shared, reason: &'static str) -> ApiResult<Success> {
    let delay = {
        let mut st = shared.lock();
        let now = Instant::now();
        match st.updates.poll.next_conflict {
            Some(at) if now < at => true,
            _ => {
                st.updates.poll.next_conflict = Some(now + Duration::from_secs(3));
                false
            }
        }
    };
    if delay {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Err(ApiError::conflict(reason))
}
