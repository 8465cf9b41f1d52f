//! Everything the fake daemon remembers, behind one mutex, and the receive
//! machinery.
//!
//! The receive machinery mirrors signal-cli's `ManagerImpl`: incoming
//! envelopes wait in `server_queue` (Signal's server) until the daemon is
//! *receiving*, which it is while a strong receive handler exists (in
//! on-start mode the daemon's own stdout handler is one, for ever; every
//! connection's automatic subscription, every `subscribeReceive` and every
//! SSE stream is one) or a one-shot `receive` call runs. Received envelopes
//! go to every handler; with no handler at all they are gone (counted in
//! `lost`). Handlers write into their connection's outgoing channel, so
//! lines never interleave and keep their order.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::AbortHandle;

use super::jsonrpc;
use super::{FakeOptions, Fault, Outage, ReceiveMode, RecipientFailure, Sent};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A stable, UUID-shaped ACI for a user the test did not give one.
pub(crate) fn uuid_for(seed: &str) -> String {
    // FNV-1a twice with different offsets: stable across runs and
    // platforms, unlike std's hasher.
    let fnv = |offset: u64| {
        seed.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x8422_2325_cbf2_9ce4);
    // Version 4, RFC 4122 variant, as real ACIs are.
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0xc << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// signal-cli's `UuidUtil.isUuid`: the canonical 8-4-4-4-12 hex form.
pub(crate) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What the server tasks, request tasks and the control API share.
pub(crate) struct Shared {
    pub opts: FakeOptions,
    pub data_dir: PathBuf,
    pub attachments_dir: PathBuf,
    pub http_addr: SocketAddr,
    state: Mutex<State>,
    /// The current outage; request tasks wait on it while frozen.
    pub outage: watch::Sender<Outage>,
    /// Detached tasks (requests in flight, SSE pumps), aborted on stop.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    pub fn new(opts: FakeOptions, data_dir: PathBuf, http_addr: SocketAddr) -> Self {
        let me = Recipient {
            number: Some(opts.account.clone()),
            uuid: opts.account_uuid.clone(),
            profile_name: opts.profile_name.clone(),
            is_contact: false,
            registered: true,
            untrusted: false,
        };
        let profile = json!({
            "givenName": opts.profile_name,
            "familyName": null,
            "about": null,
            "aboutEmoji": null,
            "hasAvatar": false,
            "mobileCoinAddress": null,
        });
        let state = State {
            mode: opts.receive_mode,
            me,
            profile,
            recipients: Vec::new(),
            groups: Vec::new(),
            sticker_packs: HashMap::new(),
            attachments: HashMap::new(),
            server_queue: VecDeque::new(),
            conns: HashMap::new(),
            handlers: Vec::new(),
            next_conn: 1,
            next_subscription: 0,
            sync: None,
            last_ts: 0,
            faults: Vec::new(),
            recipient_faults: Vec::new(),
            sent: Vec::new(),
            requests: Vec::new(),
            lost: 0,
            down: false,
            frozen: false,
        };
        Shared {
            attachments_dir: data_dir.join("attachments"),
            data_dir,
            http_addr,
            state: Mutex::new(state),
            outage: watch::Sender::new(Outage::Up),
            tasks: Mutex::new(Vec::new()),
            opts,
        }
    }

    /// The state. A panic elsewhere while holding the lock leaves the data
    /// usable, so poisoning is ignored rather than turned into more panics.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers a detached task so stop can abort it.
    pub fn track(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Aborts the detached tasks, ends SSE streams and removes the data
    /// directory. Idempotent.
    pub fn shut_down(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            task.abort();
        }
        {
            let mut st = self.lock();
            st.down = true;
            for conn in st.conns.values() {
                conn.kill.notify_one();
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Waits while the daemon is frozen ([`Outage::Hang`]).
    pub async fn wait_unfrozen(&self) {
        let mut outage = self.outage.subscribe();
        while *outage.borrow_and_update() == Outage::Hang {
            if outage.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A Signal user as the account's local store knows them.
#[derive(Debug, Clone)]
pub(crate) struct Recipient {
    pub number: Option<String>,
    pub uuid: String,
    /// The profile given name: `sourceName` and `listContacts`' profile.
    pub profile_name: Option<String>,
    /// Listed by `listContacts`.
    pub is_contact: bool,
    pub registered: bool,
    /// Identity key changed and not yet trusted.
    pub untrusted: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// Base64 (standard, padded) of the 32-byte v2 id.
    pub id: String,
    pub name: String,
    pub description: String,
    /// Member ACIs, the account's included while it is a member.
    pub members: Vec<String>,
    pub admins: Vec<String>,
    pub revision: i64,
}

/// A file in the attachments directory.
#[derive(Debug, Clone)]
pub(crate) struct StoredAttachment {
    pub content_type: String,
    pub filename: Option<String>,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnKind {
    /// A socket or TCP JSON-RPC session.
    Line,
    /// An HTTP `/api/v1/events` stream.
    Sse,
}

/// An open client connection that can be written to.
pub(crate) struct Conn {
    pub kind: ConnKind,
    /// Complete chunks (a line with its `\n`, or an SSE event).
    pub tx: mpsc::UnboundedSender<String>,
    /// Closes the connection when notified.
    pub kill: Arc<Notify>,
}

/// A receive subscription.
pub(crate) struct Handler {
    pub conn: u64,
    /// The JSON-RPC subscription id (None for SSE streams).
    pub subscription: Option<i64>,
    /// Wrapped notifications (`subscribeReceive`) or not (automatic).
    pub wrapped: bool,
    /// The account whose envelopes it gets; `None`: every account the
    /// daemon serves (a subscription made without `account`).
    pub account: Option<String>,
}

/// A one-shot `receive` call in progress.
pub(crate) struct SyncReceive {
    pub remaining: Option<usize>,
    pub got: Vec<Value>,
}

pub(crate) struct FaultRule {
    pub method: String,
    pub fault: Fault,
    pub remaining: usize,
}

pub(crate) struct RecipientRule {
    /// A number or UUID.
    pub key: String,
    pub failure: RecipientFailure,
    pub remaining: usize,
}

pub(crate) struct State {
    pub mode: ReceiveMode,
    /// The account itself.
    pub me: Recipient,
    /// The account's profile, as `updateProfile` sets it.
    pub profile: Value,
    pub recipients: Vec<Recipient>,
    pub groups: Vec<Group>,
    /// Locally known sticker packs: hex id → number of stickers.
    pub sticker_packs: HashMap<String, u32>,
    pub attachments: HashMap<String, StoredAttachment>,
    /// Envelopes on Signal's server: `{envelope, account[, exception]}`.
    pub server_queue: VecDeque<Value>,
    pub conns: HashMap<u64, Conn>,
    pub handlers: Vec<Handler>,
    pub next_conn: u64,
    /// Shared by every connection, as signal-cli's static counter is.
    pub next_subscription: i64,
    pub sync: Option<SyncReceive>,
    pub last_ts: i64,
    pub faults: Vec<FaultRule>,
    pub recipient_faults: Vec<RecipientRule>,
    pub sent: Vec<Sent>,
    pub requests: Vec<(String, Value)>,
    pub lost: usize,
    /// Not running ([`Outage::Refuse`]) or stopped.
    pub down: bool,
    /// Frozen ([`Outage::Hang`]).
    pub frozen: bool,
}

impl State {
    /// A fresh message timestamp: now, but strictly after the previous one
    /// (signal-cli waits for the clock to move on).
    pub fn next_ts(&mut self) -> i64 {
        let ts = now_ms().max(self.last_ts + 1);
        self.last_ts = ts;
        ts
    }

    // ---- people and groups -----------------------------------------------

    pub fn find_number(&self, number: &str) -> Option<&Recipient> {
        if self.me.number.as_deref() == Some(number) {
            return Some(&self.me);
        }
        self.recipients
            .iter()
            .find(|r| r.number.as_deref() == Some(number))
    }

    pub fn find_uuid(&self, uuid: &str) -> Option<&Recipient> {
        if self.me.uuid.eq_ignore_ascii_case(uuid) {
            return Some(&self.me);
        }
        self.recipients
            .iter()
            .find(|r| r.uuid.eq_ignore_ascii_case(uuid))
    }

    /// The entry for a number, created (registered, with a derived UUID or
    /// the given one) if missing. The account's own number gets a scratch
    /// entry that is never used.
    pub fn recipient_entry(&mut self, number: &str, uuid: Option<&str>) -> &mut Recipient {
        let index = match self
            .recipients
            .iter()
            .position(|r| r.number.as_deref() == Some(number))
        {
            Some(index) => index,
            None => {
                self.recipients.push(Recipient {
                    number: Some(number.to_string()),
                    uuid: uuid.map_or_else(|| uuid_for(number), str::to_string),
                    profile_name: None,
                    is_contact: false,
                    registered: true,
                    untrusted: false,
                });
                self.recipients.len() - 1
            }
        };
        &mut self.recipients[index]
    }

    /// The sender of an injected envelope (a number or a UUID), registered
    /// on the fly if unknown.
    pub fn sender(&mut self, from: &str) -> Recipient {
        if self.me.number.as_deref() == Some(from) || self.me.uuid == from {
            return self.me.clone();
        }
        if is_uuid(from) {
            if let Some(r) = self.find_uuid(from) {
                return r.clone();
            }
            let r = Recipient {
                number: None,
                uuid: from.to_ascii_lowercase(),
                profile_name: None,
                is_contact: false,
                registered: true,
                untrusted: false,
            };
            self.recipients.push(r.clone());
            return r;
        }
        self.recipient_entry(from, None).clone()
    }

    /// A key for [`RecipientRule`]s: the string as given.
    pub fn recipient_key(&self, recipient: &str) -> String {
        recipient.trim().to_string()
    }

    pub fn add_group(&mut self, name: &str, members: &[&str]) -> String {
        let bytes: [u8; 32] = rand::random();
        let id = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut uuids = vec![self.me.uuid.clone()];
        for number in members {
            let uuid = if self.me.number.as_deref() == Some(*number) {
                continue;
            } else if is_uuid(number) {
                self.sender(number).uuid
            } else {
                self.recipient_entry(number, None).uuid.clone()
            };
            if !uuids.contains(&uuid) {
                uuids.push(uuid);
            }
        }
        self.groups.push(Group {
            id: id.clone(),
            name: name.to_string(),
            description: String::new(),
            members: uuids,
            admins: vec![self.me.uuid.clone()],
            revision: 0,
        });
        id
    }

    pub fn set_member(&mut self, group_id: &str, number: &str, member: bool) {
        let uuid = self.sender(number).uuid;
        let group = self.group_mut(group_id);
        group.members.retain(|m| *m != uuid);
        if member {
            group.members.push(uuid);
        }
        group.revision += 1;
    }

    pub fn set_admin(&mut self, group_id: &str, number: &str, admin: bool) {
        let uuid = self.sender(number).uuid;
        let group = self.group_mut(group_id);
        group.admins.retain(|m| *m != uuid);
        if admin {
            group.admins.push(uuid);
        }
        group.revision += 1;
    }

    pub fn find_group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// A group for the control API, which panics on a test's typo.
    pub fn group(&self, id: &str) -> &Group {
        self.find_group(id)
            .unwrap_or_else(|| panic!("group {id} is not in the fake's group table"))
    }

    fn group_mut(&mut self, id: &str) -> &mut Group {
        self.groups
            .iter_mut()
            .find(|g| g.id == id)
            .unwrap_or_else(|| panic!("group {id} is not in the fake's group table"))
    }

    // ---- faults ------------------------------------------------------------

    /// The next scripted fault for a method, used up by one.
    pub fn take_fault(&mut self, method: &str) -> Option<Fault> {
        let index = self
            .faults
            .iter()
            .position(|r| r.method == method || r.method == "*")?;
        let rule = &mut self.faults[index];
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        if rule.remaining == 0 {
            self.faults.remove(index);
        }
        Some(fault)
    }

    /// The next scripted failure for a recipient, used up by one.
    pub fn take_recipient_fault(
        &mut self,
        number: Option<&str>,
        uuid: Option<&str>,
    ) -> Option<RecipientFailure> {
        let index = self.recipient_faults.iter().position(|r| {
            Some(r.key.as_str()) == number || uuid.is_some_and(|u| r.key.eq_ignore_ascii_case(u))
        })?;
        let rule = &mut self.recipient_faults[index];
        rule.remaining -= 1;
        let failure = rule.failure.clone();
        if rule.remaining == 0 {
            self.recipient_faults.remove(index);
        }
        Some(failure)
    }

    // ---- connections and subscriptions -------------------------------------

    pub fn add_conn(
        &mut self,
        kind: ConnKind,
        tx: mpsc::UnboundedSender<String>,
        kill: Arc<Notify>,
    ) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, Conn { kind, tx, kill });
        id
    }

    /// Forgets a connection and its subscriptions (the daemon's receive
    /// thread stops when the last one goes, unless in on-start mode).
    pub fn remove_conn(&mut self, id: u64) {
        self.conns.remove(&id);
        self.handlers.retain(|h| h.conn != id);
    }

    /// A JSON-RPC receive subscription for a line connection; returns its
    /// id. Starts receiving if this is the first handler.
    pub fn subscribe(&mut self, conn: u64, wrapped: bool, account: Option<String>) -> i64 {
        let id = self.next_subscription;
        self.next_subscription += 1;
        self.handlers.push(Handler {
            conn,
            subscription: Some(id),
            wrapped,
            account,
        });
        self.pump();
        id
    }

    /// The receive handler of an SSE stream.
    pub fn subscribe_sse(&mut self, conn: u64, account: Option<String>) {
        self.handlers.push(Handler {
            conn,
            subscription: None,
            wrapped: false,
            account,
        });
        self.pump();
    }

    /// Whether signal-cli's receive thread (or a one-shot receive) runs.
    pub fn is_receiving(&self) -> bool {
        !self.down
            && (self.mode == ReceiveMode::OnStart
                || !self.handlers.is_empty()
                || self.sync.is_some())
    }

    // ---- delivery ------------------------------------------------------------

    /// An envelope reaches Signal's server for the account; the daemon takes
    /// it at once if it is receiving.
    pub fn arrive(&mut self, shared: &Shared, envelope: Value, exception: Option<Value>) {
        self.arrive_for(&shared.opts.account, envelope, exception);
    }

    /// An envelope for one of the daemon's accounts (its own or another it
    /// serves, [`super::FakeOptions::other_accounts`]).
    pub fn arrive_for(&mut self, account: &str, envelope: Value, exception: Option<Value>) {
        let mut params = serde_json::Map::new();
        if let Some(exception) = exception {
            params.insert("exception".into(), exception);
        }
        params.insert("envelope".into(), envelope);
        params.insert("account".into(), account.into());
        self.server_queue.push_back(Value::Object(params));
        self.pump();
    }

    /// Receives what waits on the server, if the daemon is receiving, and
    /// hands it to every handler (and a one-shot receive in progress).
    pub fn pump(&mut self) {
        if self.frozen || !self.is_receiving() {
            return;
        }
        while let Some(mut params) = self.server_queue.pop_front() {
            if self.sync.as_ref().is_some_and(|s| s.remaining == Some(0)) {
                // The one-shot receive got its maxMessages and stopped.
                self.server_queue.push_front(params);
                break;
            }
            if let Some(env) = params.get_mut("envelope").and_then(Value::as_object_mut) {
                if env.contains_key("serverDeliveredTimestamp") {
                    let received = env
                        .get("serverReceivedTimestamp")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    env.insert(
                        "serverDeliveredTimestamp".into(),
                        now_ms().max(received).into(),
                    );
                }
            }
            let mut delivered = false;
            if let Some(sync) = self.sync.as_mut() {
                sync.got.push(params.clone());
                if let Some(remaining) = sync.remaining.as_mut() {
                    *remaining -= 1;
                }
                delivered = true;
            }
            if !self.handlers.is_empty() {
                self.broadcast(&params);
                delivered = true;
            }
            if !delivered {
                self.lost += 1;
            }
        }
    }

    fn broadcast(&mut self, params: &Value) {
        let mut dead = Vec::new();
        let account = params.get("account").and_then(Value::as_str);
        for handler in &self.handlers {
            if handler.account.is_some() && handler.account.as_deref() != account {
                continue;
            }
            let Some(conn) = self.conns.get(&handler.conn) else {
                continue;
            };
            let chunk = match (conn.kind, handler.subscription) {
                (ConnKind::Sse, _) => jsonrpc::sse_event(params),
                (ConnKind::Line, Some(id)) if handler.wrapped => {
                    jsonrpc::notification_wrapped(id, params)
                }
                (ConnKind::Line, _) => jsonrpc::notification(params),
            };
            if conn.tx.send(chunk).is_err() {
                dead.push(handler.conn);
            }
        }
        for conn in dead {
            self.remove_conn(conn);
        }
    }

    /// A raw line to every client, outside the protocol.
    pub fn raw_line(&mut self, line: &str) {
        for conn in self.conns.values() {
            let chunk = match conn.kind {
                ConnKind::Line => format!("{line}\n"),
                ConnKind::Sse => format!("event:receive\ndata:{line}\n\n"),
            };
            let _ = conn.tx.send(chunk);
        }
    }
}
