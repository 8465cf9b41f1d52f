//! A faithful in-process fake of the signal-cli JSON-RPC daemon (feature
//! `fake`), for the Signal adapter's tests and the benchmark.
//!
//! [`FakeSignal::start`] runs what `signal-cli [-a NUMBER] daemon --tcp
//! --socket --http --receive-mode MODE` would: JSON-RPC 2.0 over TCP
//! ([`FakeSignal::tcp_addr`]) and over a UNIX socket
//! ([`FakeSignal::socket_path`]), one JSON document per `\n`-terminated
//! line, each connection its own session; and HTTP/1.1
//! ([`FakeSignal::http_url`]) with `POST /api/v1/rpc`, `GET /api/v1/events`
//! (Server-Sent Events) and `GET /api/v1/check`. Everything listens on
//! `127.0.0.1` (any free port) and in a fresh temporary directory, which also
//! holds the daemon's `attachments/` directory and is removed on
//! [`FakeSignal::stop`] or drop.
//!
//! "Faithful" means never kinder than the real daemon. The protocol comes
//! from `/work/shared/reference/signal-cli-jsonrpc.md` (signal-cli 0.13.19,
//! checked live, and 0.14.x): the envelope rules and the exact error objects
//! (codes, messages, `data`, the id kept with its type, `id:null` when there
//! is none), requests run concurrently so answers may overtake each other,
//! batches answered in completion order, Java's parameter quirks (a small
//! integer or a string where a timestamp belongs is a `ClassCastException`,
//! `-32603`; a plural key holding a scalar likewise; singular keys take a
//! value or an array), the three receive modes, send results per recipient
//! and the "every recipient failed" errors carrying `data.response`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use serde_json::json;
//! use switchboard_signal::fake::{FakeOptions, FakeSignal, Fault, ReceiveMode};
//!
//! let signal = FakeSignal::start(FakeOptions {
//!     receive_mode: ReceiveMode::Manual,
//!     ..FakeOptions::default()
//! })
//! .await?;
//! signal.add_contact("+15550000002", "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11", Some("Alice"));
//! let group = signal.add_group("Bridge Test", &["+15550000002"]);
//! let ts = signal.inject_message("+15550000002", Some(&group), json!({ "message": "hi" }));
//! signal.fail("send", Fault::RateLimit { retry_after_seconds: 30 }, 1);
//! // ... run the adapter against signal.tcp_addr() ...
//! assert!(signal.sent().iter().all(|s| s.method == "send"));
//! # let _ = ts;
//! signal.stop().await;
//! # Ok(()) }
//! ```
//!
//! # The world
//!
//! The fake's Signal knows the daemon's own account ([`FakeOptions`]), the
//! people a test added ([`add_contact`](FakeSignal::add_contact)) and the
//! members of groups it added ([`add_group`](FakeSignal::add_group); the
//! account itself is always a member and admin). A phone number nobody added
//! is *not registered*: a send to it gives an `UNREGISTERED_FAILURE`, a quote
//! or mention of it `-1 "The user +… is not registered."`, getUserStatus
//! `isRegistered:false`. A sender of an injected message is registered on
//! the fly (with a UUID derived from the number) if it was unknown.
//!
//! # Implemented methods
//!
//! `send` (targets, `message`, `attachment(s)` as a readable path or an RFC
//! 2397 data URI, `mention(s)`, `textStyle(s)`, `quote*`, `editTimestamp`,
//! `sticker`, `previewUrl`…, `viewOnce`, `endSession`, `noteToSelf`),
//! `sendReaction` (incl. `remove`), `remoteDelete`, `sendTyping`,
//! `sendReceipt`, `listGroups`, `listContacts`, `getUserStatus`,
//! `getAttachment`, `updateProfile`, `trust`, `version`, `listAccounts`
//! (multi-account mode only, as for real), `subscribeReceive`,
//! `unsubscribeReceive` (socket and TCP only) and the one-shot `receive`.
//! Every other name, real or not, answers `-32601 "Method not implemented"`,
//! which is what signal-cli answers for unknown names.
//!
//! # Receiving
//!
//! Injected traffic goes to "Signal's server" first (a queue,
//! [`pending_envelopes`](FakeSignal::pending_envelopes)). The daemon pulls
//! from it while it is *receiving*, exactly when signal-cli's receive thread
//! runs:
//! - [`ReceiveMode::OnStart`]: always (the daemon's own stdout handler keeps
//!   it going). An envelope that arrives while no client is connected is
//!   taken off the server and delivered to nobody: it is **lost**
//!   ([`lost_envelopes`](FakeSignal::lost_envelopes) counts them).
//! - [`ReceiveMode::OnConnection`]: while at least one socket/TCP connection
//!   or SSE stream is open; every connection is subscribed automatically.
//!   Envelopes stay on the server while nobody is connected and arrive when
//!   the next client connects.
//! - [`ReceiveMode::Manual`]: while some connection has called
//!   `subscribeReceive` or an SSE stream is open. Envelopes stay on the
//!   server until then (or until a one-shot `receive` takes them).
//!
//! Automatic subscriptions get *unwrapped* notifications
//! (`"params":{"envelope":…,"account":…}`); `subscribeReceive` ones get
//! *wrapped* ones (`"params":{"subscription":N,"result":{…}}`); a connection
//! with both gets every envelope twice, as for real. Subscription ids come
//! from one counter shared by all connections, starting at 0. SSE streams
//! receive `event:receive\ndata:{envelope,account}\n\n` in every mode, and a
//! `:\n` keep-alive every [`FakeOptions::sse_keepalive`]. With
//! [`DaemonVersion::V0_13_19`] the SSE response headers are only sent with
//! the first event or keep-alive (that version's behaviour).
//! `serverDeliveredTimestamp` is stamped when the daemon pulls the envelope.
//!
//! # The control API
//!
//! - the world: [`add_contact`](FakeSignal::add_contact),
//!   [`add_group`](FakeSignal::add_group),
//!   [`set_member`](FakeSignal::set_member),
//!   [`set_registered`](FakeSignal::set_registered),
//!   [`set_untrusted`](FakeSignal::set_untrusted) (cleared by the `trust`
//!   method), [`add_sticker_pack`](FakeSignal::add_sticker_pack),
//!   [`store_attachment`](FakeSignal::store_attachment);
//! - what people do (each returns the envelope's timestamp, the message id):
//!   [`inject_message`](FakeSignal::inject_message),
//!   [`inject_reaction`](FakeSignal::inject_reaction),
//!   [`inject_remote_delete`](FakeSignal::inject_remote_delete),
//!   [`inject_edit`](FakeSignal::inject_edit),
//!   [`inject_receipt`](FakeSignal::inject_receipt),
//!   [`inject_typing`](FakeSignal::inject_typing),
//!   [`inject_sync_sent`](FakeSignal::inject_sync_sent) (the owner typing on
//!   their phone), [`inject_failure`](FakeSignal::inject_failure) (a
//!   decryption failure), [`inject_envelope`](FakeSignal::inject_envelope)
//!   (anything else), [`inject_raw_line`](FakeSignal::inject_raw_line)
//!   (garbage straight to the connected clients);
//! - trouble: [`fail`](FakeSignal::fail) with a [`Fault`] for the next calls
//!   of a method, [`fail_recipient`](FakeSignal::fail_recipient) with a
//!   [`RecipientFailure`] for the next sends to one person,
//!   [`drop_connections`](FakeSignal::drop_connections),
//!   [`set_outage`](FakeSignal::set_outage) with an [`Outage`];
//! - what happened: [`sent`](FakeSignal::sent) (every send-type call that
//!   got as far as sending, as [`Sent`]), [`requests`](FakeSignal::requests)
//!   (every request), [`pending_envelopes`](FakeSignal::pending_envelopes),
//!   [`lost_envelopes`](FakeSignal::lost_envelopes),
//!   [`receivers`](FakeSignal::receivers) and
//!   [`wait_receivers`](FakeSignal::wait_receivers) (to know a client is
//!   subscribed before injecting), [`profile`](FakeSignal::profile).
//!
//! # Known differences from the real daemon
//!
//! - Key order inside result and envelope objects is serde_json's, not
//!   Java's; the outer JSON-RPC objects (`jsonrpc`, `result`/`error`, `id`;
//!   `code`, `message`, `data`) are written in Java's order. Clients must not
//!   depend on key order anyway (the notification params are a Java
//!   `HashMap`).
//! - Jackson's and Java's exception texts (parse errors, `ClassCastException`,
//!   NullPointerExceptions, Base64 errors) are close imitations: codes, `id`
//!   and `data` are exact, message wording may differ in details.
//! - No D-Bus, no stdin/stdout `jsonRpc` mode, no registration/linking,
//!   group management, blocking, stories, payments, polls or calls (those
//!   methods answer -32601 here).
//! - Phone numbers without `+` are normalized with signal-cli's fallback rule
//!   (prefix the missing digits of the account's number), not libphonenumber.
//! - A send to several targets where a later group fails validation fails
//!   before anything is sent (the daemon may already have sent to the
//!   earlier targets).
//! - [`Outage::Hang`] freezes the daemon like `SIGSTOP` (see [`Outage`]).
//! - The daemon flags `--ignore-attachments`, `--ignore-stories`,
//!   `--send-read-receipts` and `--no-receive-stdout` are not modeled
//!   (attachments are always "downloaded"); stories are never generated.
//! - `updateProfile` honours `givenName` (or `given-name`) only: `name` is an
//!   alias of the CLI option, which JSON-RPC does not see.
//! - `trust` accepts any well-formed safety number (60 digits) or hex
//!   fingerprint: the fake has no identity keys to compare with.
//! - Usernames are never registered; envelopes come from device 1.
//! - HTTP connection handling (keep-alive, chunking) is hyper's, not the
//!   JDK server's.
//! - An injected message "from" the account's own number is delivered as a
//!   plain message; what the owner sends from a phone is
//!   [`inject_sync_sent`](FakeSignal::inject_sync_sent).
//!
//! # Layout
//! - this file: the public types and the control API.
//! - `state`: the shared state, the receive machinery (server queue,
//!   subscriptions, delivery), timestamps, scripted faults.
//! - `envelope`: incoming envelopes and attachment files.
//! - `jsonrpc`: the JSON-RPC layer: parsing lines and documents, the error
//!   objects and Java's exception texts, parameter access with Java's casts.
//! - `methods`: account selection and one function per method.
//! - `server`: listeners, line sessions (TCP, UNIX), HTTP and SSE, outages.
//! - `tests`: the fake's own behaviour, over real sockets.

mod envelope;
mod jsonrpc;
mod methods;
pub mod peer;
mod server;
mod state;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use server::Control;
use state::{uuid_for, FaultRule, Recipient, RecipientRule, Shared};

/// When the daemon pulls messages from Signal's server
/// (`--receive-mode`), and whether connections are subscribed
/// automatically. See the module docs, "Receiving".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveMode {
    /// `on-start` (signal-cli's default): receiving from launch; every
    /// socket/TCP connection is subscribed automatically (unwrapped
    /// notifications). Messages arriving with no client connected are lost.
    OnStart,
    /// `on-connection`: like `OnStart`, but receiving only while a client is
    /// connected; messages wait on the server otherwise.
    OnConnection,
    /// `manual`: nothing arrives until `subscribeReceive` (wrapped
    /// notifications); messages wait on the server otherwise.
    Manual,
}

/// Which signal-cli release to imitate where they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonVersion {
    /// 0.13.19 (what the npm package ships; the reference was checked live
    /// against it): SSE headers only flushed with the first event or
    /// keep-alive, `retryAfterSeconds` only with proof-required rate limits,
    /// group members as `{number, uuid}`, `endSession` answers a send result.
    V0_13_19,
    /// 0.14.6 (HEAD as of the reference): SSE headers at once, the `Host`
    /// header check (421), `retryAfterSeconds` on every rate limit, group
    /// members with `isAdmin`, `endSession` answers `{}`, `account` may be a
    /// UUID, attachments from the data directory refused,
    /// `isExpirationUpdate` in every dataMessage.
    V0_14_6,
}

impl DaemonVersion {
    /// The string `version` answers.
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonVersion::V0_13_19 => "0.13.19",
            DaemonVersion::V0_14_6 => "0.14.6",
        }
    }
}

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The daemon's account, E.164.
    pub account: String,
    /// The account's ACI.
    pub account_uuid: String,
    /// The account's profile given name (its `sourceName` in sync messages).
    pub profile_name: Option<String>,
    /// `false`: started with `-a ACCOUNT` (an `account` param is ignored and
    /// `listAccounts` is not available). `true`: multi-account daemon with
    /// this account loaded, and [`other_accounts`](Self::other_accounts)
    /// (`account` checked when given, and required by per-account methods
    /// when more than one is loaded).
    pub multi_account: bool,
    /// Further accounts a multi-account daemon serves (numbers). Only their
    /// messages are modeled ([`FakeSignal::inject_envelope_for`]): a
    /// subscription made without `account` gets them too.
    pub other_accounts: Vec<String>,
    pub receive_mode: ReceiveMode,
    pub version: DaemonVersion,
    /// Delay every request by a random 0–10 ms, so that answers on one
    /// connection really come back out of order, as they may from the
    /// daemon (on by default: an in-order fake would be kinder than the
    /// real thing; switch it off for latency measurements).
    pub shuffle_responses: bool,
    /// The SSE keep-alive period (the daemon's is 15 s).
    pub sse_keepalive: Duration,
}

impl Default for FakeOptions {
    /// `-a +15550000001 daemon` in on-start mode, imitating 0.13.19, with
    /// shuffled answers.
    fn default() -> Self {
        FakeOptions {
            account: "+15550000001".into(),
            account_uuid: "0b7d5f7e-1111-4222-8333-944455556666".into(),
            profile_name: Some("Bridge Bot".into()),
            multi_account: false,
            other_accounts: Vec::new(),
            receive_mode: ReceiveMode::OnStart,
            version: DaemonVersion::V0_13_19,
            shuffle_responses: true,
            sse_keepalive: Duration::from_secs(15),
        }
    }
}

/// A scripted failure for the next calls of a method ([`FakeSignal::fail`]).
///
/// The send-type methods (`send`, `sendReaction`, `remoteDelete`,
/// `sendTyping`, `sendReceipt`) turn the recipient faults into a failure of
/// *every* recipient, which the daemon reports as an error carrying
/// `data.response`: `RateLimit`/`CaptchaRequired` → -5, `UntrustedIdentity`
/// → -4, `Unregistered`/`NetworkFailure` → -1 `"Failed to send message"`.
/// `getUserStatus` answers `RateLimit` with -5 `"Rate limit reached…"` and
/// `Io` with -3. Elsewhere a recipient fault counts as `Io`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 413/429 from Signal: `RATE_LIMIT_FAILURE` (with
    /// `retryAfterSeconds` only for [`DaemonVersion::V0_14_6`]).
    RateLimit { retry_after_seconds: u64 },
    /// A proof-required (captcha) rate limit: `RATE_LIMIT_FAILURE` with
    /// `token` and `retryAfterSeconds`.
    CaptchaRequired {
        token: String,
        retry_after_seconds: u64,
    },
    /// An IO error talking to Signal: send → -32603 `"Failed to send
    /// message: … (IOException) (UnexpectedErrorException)"`, sendTyping →
    /// -1, getUserStatus/updateProfile/receive → -3.
    Io,
    /// `IDENTITY_FAILURE` for every recipient (-4 for sends).
    UntrustedIdentity,
    /// `UNREGISTERED_FAILURE` for every recipient.
    Unregistered,
    /// `NETWORK_FAILURE` for every recipient.
    NetworkFailure,
    /// Wait this long, then handle the call normally.
    Hang(Duration),
    /// Close the connection without answering; the call has no effect
    /// (over HTTP: the connection is closed without a response).
    DropConnection,
    /// Carry the call out, then close the connection instead of answering
    /// (the "answer lost" window: the message *was* sent).
    DropAnswer,
    /// Write a malformed line before the answer (over HTTP: a malformed body
    /// instead of the answer; the call is carried out either way).
    MalformedLine,
    /// Answer -32603 with this message before doing anything, as signal-cli
    /// does for an exception inside a command (e.g. `"Failed to send
    /// message: <file>: … (AttachmentInvalidException)
    /// (UnexpectedErrorException)"` for a file it cannot read).
    Internal(String),
}

/// A scripted failure for the next sends to one recipient
/// ([`FakeSignal::fail_recipient`]), for partial failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientFailure {
    RateLimit {
        retry_after_seconds: u64,
    },
    CaptchaRequired {
        token: String,
        retry_after_seconds: u64,
    },
    UntrustedIdentity,
    Unregistered,
    NetworkFailure,
    InvalidPreKey,
}

/// The daemon's availability ([`FakeSignal::set_outage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Running normally.
    Up,
    /// Not running: connects are refused (the UNIX socket file stays, stale,
    /// as after a crash), open connections are dropped, nothing is received
    /// from Signal. Back [`Outage::Up`], it is a fresh daemon on the same
    /// addresses (in on-start mode it starts receiving at once, so what
    /// queued meanwhile is lost if no client is connected yet).
    Refuse,
    /// Frozen like a stopped process: connections are accepted and requests
    /// read, but nothing is answered (HTTP `check` included), notified,
    /// kept alive or received. Back [`Outage::Up`], it carries on: held
    /// requests are answered, queued envelopes delivered.
    Hang,
}

/// The kinds of receipt ([`FakeSignal::inject_receipt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    Delivery,
    Read,
    Viewed,
}

/// An attachment the client sent, as the fake read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentAttachment {
    pub content_type: String,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
}

/// A send-type call (`send`, `sendReaction`, `remoteDelete`, `sendTyping`,
/// `sendReceipt`) that got as far as sending, i.e. was given a timestamp.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// The params as the client gave them (`account` removed in
    /// multi-account mode).
    pub params: Value,
    /// The timestamp the daemon assigned: the message's Signal id.
    pub timestamp: i64,
    /// The send-type result `{timestamp, results:[…]}`.
    pub result: Value,
    /// The JSON-RPC error object answered when every recipient failed.
    pub error: Option<Value>,
    /// The attachments of a `send`, as read by the daemon. A text over
    /// 2000 UTF-8 bytes travels as a `text/x-signal-plain` attachment,
    /// which signal-cli puts first.
    pub attachments: Vec<SentAttachment>,
}

impl Sent {
    /// True when the client got a success (at least one recipient, or none
    /// at all, as in a group of one).
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The `type` of each per-recipient result.
    pub fn result_types(&self) -> Vec<String> {
        self.result["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["type"].as_str().map(str::to_string))
            .collect()
    }
}

/// The running fake. Dropping it stops the servers and removes its
/// directory; [`FakeSignal::stop`] also waits for them.
pub struct FakeSignal {
    shared: Arc<Shared>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    socket_path: PathBuf,
    control: mpsc::UnboundedSender<Control>,
    task: Option<JoinHandle<()>>,
}

impl Drop for FakeSignal {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.shared.shut_down();
    }
}

/// A fresh private directory for the daemon's files.
fn make_data_dir() -> io::Result<PathBuf> {
    let tag: u64 = rand::random();
    let name = format!(
        "sb-signal-fake-{}-{:012x}",
        std::process::id(),
        tag & 0xffff_ffff_ffff
    );
    let mut dir = std::env::temp_dir().join(&name);
    // A UNIX socket path must fit in sun_path (108 bytes).
    if dir.join("socket").as_os_str().len() > 100 {
        dir = PathBuf::from("/tmp").join(name);
    }
    std::fs::create_dir_all(dir.join("attachments"))?;
    Ok(dir)
}

impl FakeSignal {
    /// Starts the three transports on `127.0.0.1` (free ports) and a UNIX
    /// socket in a fresh temporary directory.
    pub async fn start(opts: FakeOptions) -> io::Result<Self> {
        let data_dir = make_data_dir()?;
        let socket_path = data_dir.join("socket");
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let http = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let unix = UnixListener::bind(&socket_path)?;
        let tcp_addr = tcp.local_addr()?;
        let http_addr = http.local_addr()?;
        let shared = Arc::new(Shared::new(opts, data_dir, http_addr));
        let (control, orders) = mpsc::unbounded_channel();
        let task = tokio::spawn(server::run(
            shared.clone(),
            server::Listeners {
                tcp: Some(tcp),
                unix: Some(unix),
                http: Some(http),
            },
            tcp_addr,
            http_addr,
            socket_path.clone(),
            orders,
        ));
        Ok(FakeSignal {
            shared,
            tcp_addr,
            http_addr,
            socket_path,
            control,
            task: Some(task),
        })
    }

    /// The JSON-RPC TCP address (`daemon --tcp`).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The JSON-RPC UNIX socket (`daemon --socket`).
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// `http://127.0.0.1:PORT` (`daemon --http`); clients add
    /// `/api/v1/rpc`, `/api/v1/events` or `/api/v1/check`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The daemon's data directory (temporary).
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// `<data dir>/attachments`: received attachments live here, named by
    /// their id.
    pub fn attachments_dir(&self) -> &Path {
        &self.shared.attachments_dir
    }

    /// The daemon's account number.
    pub fn account(&self) -> &str {
        &self.shared.opts.account
    }

    /// The daemon's account ACI.
    pub fn account_uuid(&self) -> &str {
        &self.shared.opts.account_uuid
    }

    // ---- the world ------------------------------------------------------

    /// Adds (or updates) a registered Signal user who is a contact of the
    /// account: listed by `listContacts`, sendable, named `profile_name` in
    /// envelopes (`sourceName`).
    pub fn add_contact(&self, number: &str, uuid: &str, profile_name: Option<&str>) {
        let mut st = self.shared.lock();
        let r = st.recipient_entry(number, Some(uuid));
        r.uuid = uuid.to_string();
        r.is_contact = true;
        r.registered = true;
        r.profile_name = profile_name.map(str::to_string);
    }

    /// Adds a v2 group (a random 32-byte id, base64 with padding) with the
    /// account plus `members` (numbers; unknown ones become registered users
    /// with derived UUIDs). The account is its admin. Returns the group id.
    pub fn add_group(&self, name: &str, members: &[&str]) -> String {
        self.shared.lock().add_group(name, members)
    }

    /// Adds or removes a member (a number, or the account's own number to
    /// make the account leave or rejoin). Bumps the group's revision.
    ///
    /// # Panics
    /// If the group is unknown.
    pub fn set_member(&self, group_id: &str, number: &str, member: bool) {
        self.shared.lock().set_member(group_id, number, member);
    }

    /// Makes a member (a number) one of the group's admins, or not: as
    /// signal-cli's `listGroups` lists them under `admins` (each with
    /// `number` and `uuid`; see `methods::list_groups`).
    ///
    /// # Panics
    /// If the group is unknown.
    pub fn set_admin(&self, group_id: &str, number: &str, admin: bool) {
        self.shared.lock().set_admin(group_id, number, admin);
    }

    /// Marks a user registered or not (an unregistered one gets
    /// `UNREGISTERED_FAILURE` and `isRegistered:false`).
    pub fn set_registered(&self, number: &str, registered: bool) {
        let mut st = self.shared.lock();
        st.recipient_entry(number, None).registered = registered;
    }

    /// Marks a user's identity key as changed and untrusted: sends to them
    /// give `IDENTITY_FAILURE` until the client calls `trust`.
    pub fn set_untrusted(&self, number: &str, untrusted: bool) {
        let mut st = self.shared.lock();
        st.recipient_entry(number, None).untrusted = untrusted;
    }

    /// Makes a sticker pack known locally (`send` with `sticker` needs it):
    /// `pack_id` in hex, stickers `0..count`.
    pub fn add_sticker_pack(&self, pack_id: &str, count: u32) {
        let mut st = self.shared.lock();
        st.sticker_packs.insert(pack_id.to_ascii_lowercase(), count);
    }

    /// Stores a file in the attachments directory as the daemon does for a
    /// downloaded attachment, and returns its attachment object (for
    /// envelopes): `{contentType, filename, id, size, width, height,
    /// caption, uploadTimestamp}`.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn store_attachment(
        &self,
        bytes: Vec<u8>,
        content_type: &str,
        filename: Option<&str>,
    ) -> Value {
        let mut st = self.shared.lock();
        envelope::store_attachment(&self.shared, &mut st, &bytes, content_type, filename)
            .unwrap_or_else(|e| panic!("store_attachment: cannot write the file: {e}"))
    }

    // ---- what people do -------------------------------------------------

    /// Someone sends a message, 1:1 (`group` None) or into a group. `body`
    /// holds dataMessage fields: `message`, `textStyles`
    /// (`[{style,start,length}]`), `mentions` (`[{number or uuid, start,
    /// length}]`, completed with name/number/uuid), `attachments` (objects
    /// from [`store_attachment`](Self::store_attachment), or `{contentType,
    /// filename?, base64 | text}` which are stored now), `quote` (`{id,
    /// author (number or uuid), text, attachments?, mentions?,
    /// textStyles?}`, completed), `sticker`, `previews`, `expiresInSeconds`,
    /// `viewOnce`, and anything else verbatim. `message` defaults to `null`.
    /// Returns the message's timestamp (its id together with the author).
    ///
    /// # Panics
    /// If the group is unknown or `body` is not an object.
    pub fn inject_message(&self, from: &str, group: Option<&str>, body: Value) -> i64 {
        let mut st = self.shared.lock();
        let sender = st.sender(from);
        let ts = st.next_ts();
        let data = envelope::data_message(&self.shared, &mut st, ts, body, group);
        let env = envelope::envelope(&sender, 1, ts, "dataMessage", Value::Object(data));
        st.arrive(&self.shared, env, None);
        ts
    }

    /// Someone reacts to (or, with `remove`, takes back a reaction to) the
    /// message `target_timestamp` by `target_author`. Returns the
    /// reaction's own timestamp.
    pub fn inject_reaction(
        &self,
        from: &str,
        group: Option<&str>,
        emoji: &str,
        target_author: &str,
        target_timestamp: i64,
        remove: bool,
    ) -> i64 {
        let mut st = self.shared.lock();
        let author = st.sender(target_author);
        let reaction = json!({
            "emoji": emoji,
            "targetAuthor": author.legacy_id(),
            "targetAuthorNumber": author.number,
            "targetAuthorUuid": author.uuid,
            "targetSentTimestamp": target_timestamp,
            "isRemove": remove,
        });
        self.inject_data(&mut st, from, group, json!({ "reaction": reaction }))
    }

    /// Someone deletes their own message `target_timestamp` for everyone.
    pub fn inject_remote_delete(
        &self,
        from: &str,
        group: Option<&str>,
        target_timestamp: i64,
    ) -> i64 {
        let mut st = self.shared.lock();
        let body = json!({ "remoteDelete": { "timestamp": target_timestamp } });
        self.inject_data(&mut st, from, group, body)
    }

    /// Someone edits their message `target_timestamp`: an `editMessage`
    /// envelope whose dataMessage (fields as in
    /// [`inject_message`](Self::inject_message)) has its own new timestamp,
    /// which is returned.
    pub fn inject_edit(
        &self,
        from: &str,
        group: Option<&str>,
        target_timestamp: i64,
        body: Value,
    ) -> i64 {
        let mut st = self.shared.lock();
        let sender = st.sender(from);
        let ts = st.next_ts();
        let data = envelope::data_message(&self.shared, &mut st, ts, body, group);
        let edit = json!({ "targetSentTimestamp": target_timestamp, "dataMessage": data });
        let env = envelope::envelope(&sender, 1, ts, "editMessage", edit);
        st.arrive(&self.shared, env, None);
        ts
    }

    /// A delivery/read/viewed receipt from `from` for messages the account
    /// sent (their timestamps).
    pub fn inject_receipt(&self, from: &str, receipt: Receipt, timestamps: &[i64]) -> i64 {
        let mut st = self.shared.lock();
        let sender = st.sender(from);
        let ts = st.next_ts();
        let body = json!({
            "when": ts,
            "isDelivery": receipt == Receipt::Delivery,
            "isRead": receipt == Receipt::Read,
            "isViewed": receipt == Receipt::Viewed,
            "timestamps": timestamps,
        });
        let env = envelope::envelope(&sender, 1, ts, "receiptMessage", body);
        st.arrive(&self.shared, env, None);
        ts
    }

    /// A typing indicator (`started` false = STOPPED).
    ///
    /// # Panics
    /// If the group is unknown.
    pub fn inject_typing(&self, from: &str, group: Option<&str>, started: bool) -> i64 {
        let mut st = self.shared.lock();
        let sender = st.sender(from);
        let ts = st.next_ts();
        let mut body = json!({
            "action": if started { "STARTED" } else { "STOPPED" },
            "timestamp": ts,
        });
        if let Some(group) = group {
            let id = st.group(group).id.clone();
            body["groupId"] = id.into();
        }
        let env = envelope::envelope(&sender, 1, ts, "typingMessage", body);
        st.arrive(&self.shared, env, None);
        ts
    }

    /// The account's owner sent a message from their phone (device 1): a
    /// `syncMessage.sentMessage` from the account itself, to `destination`
    /// (a number, 1:1) or into `group`, with the dataMessage fields of
    /// `body` flattened in. A bridge must not mirror these back as if
    /// someone else had written them.
    ///
    /// # Panics
    /// If the group is unknown.
    pub fn inject_sync_sent(
        &self,
        destination: Option<&str>,
        group: Option<&str>,
        body: Value,
    ) -> i64 {
        let mut st = self.shared.lock();
        let me = st.me.clone();
        let ts = st.next_ts();
        let data = envelope::data_message(&self.shared, &mut st, ts, body, group);
        let mut sent = Map::new();
        match destination {
            Some(number) if group.is_none() => {
                let dest = st.sender(number);
                sent.insert("destination".into(), dest.legacy_id().into());
                sent.insert("destinationNumber".into(), dest.number.clone().into());
                sent.insert("destinationUuid".into(), dest.uuid.clone().into());
            }
            _ => {
                sent.insert("destination".into(), Value::Null);
                sent.insert("destinationNumber".into(), Value::Null);
                sent.insert("destinationUuid".into(), Value::Null);
            }
        }
        sent.extend(data);
        let sync = json!({ "sentMessage": sent });
        let env = envelope::envelope(&me, 1, ts, "syncMessage", sync);
        st.arrive(&self.shared, env, None);
        ts
    }

    /// A message from `from` the daemon could not decrypt or process: the
    /// notification carries `exception: {message, type}` (e.g.
    /// `"UntrustedIdentityException"`, `"ProtocolInvalidMessageException"`)
    /// and an envelope with only the source fields.
    pub fn inject_failure(&self, from: &str, exception_type: &str, message: &str) -> i64 {
        let mut st = self.shared.lock();
        let sender = st.sender(from);
        let ts = st.next_ts();
        let env = envelope::bare_envelope(&sender, 1, ts);
        let exception = json!({ "message": message, "type": exception_type });
        st.arrive(&self.shared, env, Some(exception));
        ts
    }

    /// Queues an envelope object exactly as given (for kinds the helpers do
    /// not cover: storyMessage, callMessage, malformed ones…). The daemon
    /// adds `account` around it and stamps `serverDeliveredTimestamp` if the
    /// envelope has that key.
    pub fn inject_envelope(&self, envelope: Value) {
        let mut st = self.shared.lock();
        st.arrive(&self.shared, envelope, None);
    }

    /// Queues an envelope for another account the daemon serves
    /// ([`FakeOptions::other_accounts`]), exactly as given.
    pub fn inject_envelope_for(&self, account: &str, envelope: Value) {
        let mut st = self.shared.lock();
        st.arrive_for(account, envelope, None);
    }

    /// Writes `line` as is to every connected socket/TCP client (plus
    /// `\n`) and as an SSE `receive` event's data to every SSE stream, now,
    /// outside the receive machinery (for the client's robustness tests).
    pub fn inject_raw_line(&self, line: &str) {
        self.shared.lock().raw_line(line);
    }

    fn inject_data(
        &self,
        st: &mut state::State,
        from: &str,
        group: Option<&str>,
        body: Value,
    ) -> i64 {
        let sender = st.sender(from);
        let ts = st.next_ts();
        let data = envelope::data_message(&self.shared, st, ts, body, group);
        let env = envelope::envelope(&sender, 1, ts, "dataMessage", Value::Object(data));
        st.arrive(&self.shared, env, None);
        ts
    }

    // ---- trouble --------------------------------------------------------

    /// The next `times` calls of `method` (exact name; `"*"` for every
    /// method) meet `fault`. Rules are used in the order they were added.
    pub fn fail(&self, method: &str, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        self.shared.lock().faults.push(FaultRule {
            method: method.to_string(),
            fault,
            remaining: times,
        });
    }

    /// Drops the scripted method faults not used yet (a slow spell ends).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The next `times` send results for this recipient (a number or UUID)
    /// are `failure`, in 1:1 and group sends alike; the other recipients of
    /// the same send are unaffected (partial failures).
    pub fn fail_recipient(&self, recipient: &str, failure: RecipientFailure, times: usize) {
        if times == 0 {
            return;
        }
        let mut st = self.shared.lock();
        let key = st.recipient_key(recipient);
        st.recipient_faults.push(RecipientRule {
            key,
            failure,
            remaining: times,
        });
    }

    /// Closes every open connection (socket, TCP, HTTP, SSE) at once, as a
    /// daemon restart would; subscriptions end with them. Returns once they
    /// are closed.
    pub async fn drop_connections(&self) {
        let (done, finished) = oneshot::channel();
        if self.control.send(Control::DropAll(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// Changes availability; returns once the listeners really are closed
    /// (or open again, on the same addresses).
    ///
    /// # Panics
    /// If an address cannot be bound again.
    pub async fn set_outage(&self, outage: Outage) {
        let (done, answer) = oneshot::channel();
        if self.control.send(Control::Outage(outage, done)).is_err() {
            return;
        }
        if let Ok(Err(e)) = answer.await {
            panic!("set_outage: could not listen again: {e}");
        }
    }

    // ---- what happened --------------------------------------------------

    /// Every send-type call that got as far as sending, oldest first.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    /// The send log from entry `from` on: a poller's cheap read, which
    /// holds the fake's lock only for the entries it has not seen (a whole
    /// `sent()` every few ms stalls the daemon behind the clone).
    pub fn sent_since(&self, from: usize) -> Vec<Sent> {
        self.shared
            .lock()
            .sent
            .get(from..)
            .map(<[Sent]>::to_vec)
            .unwrap_or_default()
    }

    /// Every request (method, params; `Null` when there were none), in the
    /// order they were dispatched, including refused ones.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the request and send logs (long benchmarks).
    pub fn clear_logs(&self) {
        let mut st = self.shared.lock();
        st.requests.clear();
        st.sent.clear();
    }

    /// Envelopes waiting on Signal's server for the daemon to receive them
    /// (see the module docs for when that happens in each receive mode).
    pub fn pending_envelopes(&self) -> usize {
        self.shared.lock().server_queue.len()
    }

    /// Envelopes the daemon received while nobody listened (on-start mode
    /// with no client): gone for good.
    pub fn lost_envelopes(&self) -> usize {
        self.shared.lock().lost
    }

    /// Active receive subscriptions (automatic, `subscribeReceive`, SSE).
    pub fn receivers(&self) -> usize {
        self.shared.lock().handlers.len()
    }

    /// Waits until at least `n` receive subscriptions are active (e.g. so a
    /// freshly connected client does not miss an on-start message).
    /// Returns false if that did not happen within `timeout`.
    pub async fn wait_receivers(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.receivers() >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The account's profile as `updateProfile` left it: `{givenName,
    /// familyName, about, aboutEmoji, hasAvatar, mobileCoinAddress}`.
    pub fn profile(&self) -> Value {
        self.shared.lock().profile.clone()
    }

    /// A registered user's ACI as the fake knows it (derived from the number
    /// when nobody gave one).
    pub fn uuid_of(&self, number: &str) -> String {
        let st = self.shared.lock();
        st.find_number(number)
            .map(|r| r.uuid.clone())
            .unwrap_or_else(|| uuid_for(number))
    }

    /// Stops everything: listeners close, connections drop, requests in
    /// flight are abandoned, the directory is removed.
    pub async fn stop(mut self) {
        let (done, finished) = oneshot::channel();
        if self.control.send(Control::Stop(done)).is_ok() {
            let _ = finished.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.shared.shut_down();
    }
}

impl Recipient {
    /// The deprecated `source`/`author`/`name` value: the number if known,
    /// otherwise the UUID.
    pub(crate) fn legacy_id(&self) -> String {
        self.number.clone().unwrap_or_else(|| self.uuid.clone())
    }
}
