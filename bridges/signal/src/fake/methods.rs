//! One request, from method name to result: scripted faults, the account
//! selection of `SignalJsonRpcCommandHandler`, the params' type, then one
//! function per method, written after the matching signal-cli command
//! (validation order, messages and error classes included).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::envelope::mime_for_path;
use super::jsonrpc::{
    java_to_string, Args, RpcError, INVALID_PARAMS, INVALID_REQUEST, IO_ERROR, RATELIMIT_ERROR,
    UNTRUSTED_KEY_ERROR,
};
use super::state::{is_uuid, now_ms, Shared, State, SyncReceive};
use super::{DaemonVersion, Fault, RecipientFailure, Sent, SentAttachment};

/// Where a request came from: a socket/TCP session (which can subscribe)
/// or HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    Line { conn: u64 },
    Http,
}

/// What the transport must do besides answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    None,
    /// Close the connection without answering (nothing was done).
    DropBefore,
    /// Close the connection instead of answering (it was done).
    DropAfter,
    /// Write a malformed line first (HTTP: instead).
    Malformed,
}

/// The line [`Fault::MalformedLine`] writes.
pub(crate) const MALFORMED: &str = "{\"jsonrpc\":\"2.0\",\"result\":{\"timestamp\":17";

/// The IO failure text scripted faults use.
const IO_TEXT: &str = "Connection reset";

/// Runs one request: logs it, applies a scripted fault, waits while the
/// daemon is frozen, then answers.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    transport: Transport,
    method: &str,
    params: Option<Value>,
) -> (Result<Value, RpcError>, Effect) {
    let fault = {
        let mut st = shared.lock();
        st.requests
            .push((method.to_string(), params.clone().unwrap_or(Value::Null)));
        st.take_fault(method)
    };
    if shared.opts.shuffle_responses {
        let jitter = rand::random::<u64>() % 11;
        tokio::time::sleep(Duration::from_millis(jitter)).await;
    }
    shared.wait_unfrozen().await;
    if shared.lock().down {
        return (Err(RpcError::method_not_found()), Effect::DropBefore);
    }
    let mut effect = Effect::None;
    let fault = match fault {
        Some(Fault::Hang(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
        Some(Fault::DropConnection) => {
            return (Err(RpcError::method_not_found()), Effect::DropBefore)
        }
        Some(Fault::DropAnswer) => {
            effect = Effect::DropAfter;
            None
        }
        Some(Fault::MalformedLine) => {
            effect = Effect::Malformed;
            None
        }
        Some(Fault::Internal(message)) => {
            return (
                Err(RpcError::new(super::jsonrpc::INTERNAL_ERROR, message)),
                Effect::None,
            )
        }
        other => other,
    };
    (run(shared, transport, method, params, fault).await, effect)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Version,
    ListAccounts,
    SubscribeReceive,
    UnsubscribeReceive,
    Receive,
    Send,
    SendReaction,
    RemoteDelete,
    SendTyping,
    SendReceipt,
    ListGroups,
    ListContacts,
    GetUserStatus,
    GetAttachment,
    UpdateProfile,
    Trust,
}

/// Which `JsonRpc*Command` interfaces a command implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Per account only.
    Single,
    /// Per account or across the daemon.
    Both,
    /// Across the daemon only (not available with `-a`).
    Multi,
}

fn lookup(method: &str, transport: Transport) -> Option<(Cmd, Kind)> {
    let found = match method {
        "version" => (Cmd::Version, Kind::Both),
        "listAccounts" => (Cmd::ListAccounts, Kind::Multi),
        "receive" => (Cmd::Receive, Kind::Single),
        "send" => (Cmd::Send, Kind::Single),
        "sendReaction" => (Cmd::SendReaction, Kind::Single),
        "remoteDelete" => (Cmd::RemoteDelete, Kind::Single),
        "sendTyping" => (Cmd::SendTyping, Kind::Single),
        "sendReceipt" => (Cmd::SendReceipt, Kind::Single),
        "listGroups" => (Cmd::ListGroups, Kind::Single),
        "listContacts" => (Cmd::ListContacts, Kind::Single),
        "getUserStatus" => (Cmd::GetUserStatus, Kind::Single),
        "getAttachment" => (Cmd::GetAttachment, Kind::Single),
        "updateProfile" => (Cmd::UpdateProfile, Kind::Single),
        "trust" => (Cmd::Trust, Kind::Single),
        // Only the socket dispatcher knows these two.
        "subscribeReceive" if matches!(transport, Transport::Line { .. }) => {
            (Cmd::SubscribeReceive, Kind::Both)
        }
        "unsubscribeReceive" if matches!(transport, Transport::Line { .. }) => {
            (Cmd::UnsubscribeReceive, Kind::Both)
        }
        _ => return None,
    };
    Some(found)
}

/// Jackson's `asText()` of a node.
fn as_text(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => String::new(),
        other => java_to_string(other),
    }
}

async fn run(
    shared: &Arc<Shared>,
    transport: Transport,
    method: &str,
    mut params: Option<Value>,
    fault: Option<Fault>,
) -> Result<Value, RpcError> {
    let (cmd, kind) = lookup(method, transport).ok_or_else(RpcError::method_not_found)?;
    // Account selection, as SignalJsonRpcCommandHandler does it.
    let mut chosen: Option<String> = None;
    let across_daemon = if !shared.opts.multi_account {
        if kind == Kind::Multi {
            return Err(RpcError::method_not_found());
        }
        false
    } else {
        if kind != Kind::Multi {
            if let Some(Value::Object(map)) = params.as_mut() {
                if map.get("account").is_some_and(|a| !a.is_null()) {
                    let account = map
                        .remove("account")
                        .map(|a| as_text(&a))
                        .unwrap_or_default();
                    let ours = account == shared.opts.account
                        || (shared.opts.version == DaemonVersion::V0_14_6
                            && account.eq_ignore_ascii_case(&shared.opts.account_uuid));
                    if ours {
                        chosen = Some(shared.opts.account.clone());
                    } else if shared.opts.other_accounts.contains(&account) {
                        chosen = Some(account);
                    } else {
                        return Err(RpcError::new(
                            INVALID_PARAMS,
                            "Specified account does not exist",
                        ));
                    }
                }
            }
        }
        // A per-account command without `account` runs on the one account
        // loaded, and needs it when there are several; the others run
        // across the daemon.
        if chosen.is_none() && kind == Kind::Single && !shared.opts.other_accounts.is_empty() {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "Method requires valid account parameter",
            ));
        }
        chosen.is_none() && kind != Kind::Single
    };
    // The fake's world is its own account's: another account the daemon
    // serves can only be subscribed to.
    let other = chosen.filter(|a| *a != shared.opts.account);
    if other.is_some() && cmd != Cmd::SubscribeReceive && cmd != Cmd::UnsubscribeReceive {
        return Err(RpcError::internal(
            "the fake daemon models one account's world",
            "UnsupportedOperationException",
        ));
    }
    let logged = params.clone().unwrap_or(Value::Null);
    match cmd {
        Cmd::SubscribeReceive => {
            let only = if across_daemon {
                None
            } else {
                Some(other.unwrap_or_else(|| shared.opts.account.clone()))
            };
            return subscribe(shared, transport, only);
        }
        Cmd::UnsubscribeReceive => return unsubscribe(shared, transport, params, across_daemon),
        Cmd::Receive => return receive(shared, params, fault).await,
        _ => {}
    }
    // Every other command binds its params to Map<String,Object>.
    let map = match params {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "Cannot deserialize value of type `java.util.LinkedHashMap<java.lang.String,java.lang.Object>` from Array value (token `JsonToken.START_ARRAY`)\n at [Source: UNKNOWN; byte offset: #UNKNOWN]",
            ))
        }
    };
    let args = Args::new(map);
    let mut ctx = Ctx {
        shared,
        method: method.to_string(),
        params: logged,
        fault,
    };
    match cmd {
        Cmd::Version => Ok(json!({ "version": shared.opts.version.as_str() })),
        Cmd::ListAccounts => {
            let mut all = vec![shared.opts.account.clone()];
            all.extend(shared.opts.other_accounts.iter().cloned());
            Ok(Value::Array(
                all.into_iter().map(|n| json!({ "number": n })).collect(),
            ))
        }
        Cmd::Send => ctx.send(&args),
        Cmd::SendReaction => ctx.send_reaction(&args),
        Cmd::RemoteDelete => ctx.remote_delete(&args),
        Cmd::SendTyping => ctx.send_typing(&args),
        Cmd::SendReceipt => ctx.send_receipt(&args),
        Cmd::ListGroups => list_groups(shared, &args),
        Cmd::ListContacts => {
            if ctx.any_fault() {
                // A local read: only the account's database can fail it.
                return Err(RpcError::internal(
                    "Failed read from recipient store",
                    "RuntimeException",
                ));
            }
            list_contacts(shared, &args)
        }
        Cmd::GetUserStatus => ctx.get_user_status(&args),
        Cmd::GetAttachment => get_attachment(shared, &args),
        Cmd::UpdateProfile => ctx.update_profile(&args),
        Cmd::Trust => trust(shared, &args),
        Cmd::SubscribeReceive | Cmd::UnsubscribeReceive | Cmd::Receive => {
            Err(RpcError::method_not_found())
        }
    }
}

// ---- subscriptions and receive ----------------------------------------------

fn subscribe(
    shared: &Shared,
    transport: Transport,
    account: Option<String>,
) -> Result<Value, RpcError> {
    let Transport::Line { conn } = transport else {
        return Err(RpcError::method_not_found());
    };
    let mut st = shared.lock();
    if !st.conns.contains_key(&conn) {
        // The connection is gone; the answer will be too.
        return Ok(Value::from(st.next_subscription));
    }
    Ok(Value::from(st.subscribe(conn, true, account)))
}

fn unsubscribe(
    shared: &Shared,
    transport: Transport,
    params: Option<Value>,
    across_daemon: bool,
) -> Result<Value, RpcError> {
    let Transport::Line { conn } = transport else {
        return Err(RpcError::method_not_found());
    };
    // `req.get(0).asInt()` / `req.get("subscription").asInt()`.
    let id = match &params {
        None => None,
        Some(Value::Array(items)) => match items.first() {
            Some(v) => Some(as_int(v)),
            None => {
                return Err(RpcError::npe(
                    "Cannot invoke \"com.fasterxml.jackson.databind.JsonNode.asInt()\" because the return value of \"com.fasterxml.jackson.databind.node.ArrayNode.get(int)\" is null",
                ))
            }
        },
        Some(Value::Object(map)) => match map.get("subscription") {
            Some(v) => Some(as_int(v)),
            None => {
                return Err(RpcError::npe(
                    "Cannot invoke \"com.fasterxml.jackson.databind.JsonNode.asInt()\" because the return value of \"com.fasterxml.jackson.databind.node.ObjectNode.get(String)\" is null",
                ))
            }
        },
        Some(_) => None,
    };
    let mut st = shared.lock();
    let index = match id {
        Some(id) => st
            .handlers
            .iter()
            .position(|h| h.conn == conn && h.subscription == Some(id))
            .ok_or_else(|| RpcError::user("Unknown subscription id"))?,
        None if across_daemon => {
            return Err(RpcError::user(
                "Missing subscription parameter with subscription id",
            ))
        }
        // Single account, no id: the connection's first subscription goes.
        None => match st
            .handlers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.conn == conn)
            .min_by_key(|(_, h)| h.subscription)
        {
            Some((index, _)) => index,
            None => return Ok(json!({})),
        },
    };
    st.handlers.remove(index);
    Ok(json!({}))
}

/// Jackson's `JsonNode.asInt()`.
fn as_int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

const RECEIVE_PARAMS: &str = "org.asamk.signal.commands.ReceiveCommand$ReceiveParams";

/// The one-shot `receive`: only when nothing else is receiving.
async fn receive(
    shared: &Shared,
    params: Option<Value>,
    fault: Option<Fault>,
) -> Result<Value, RpcError> {
    let bad = |message: String| RpcError::new(INVALID_REQUEST, message);
    let (timeout, max) = match params {
        None => (None, None),
        Some(Value::Object(map)) => {
            if let Some(key) = map.keys().find(|k| *k != "timeout" && *k != "maxMessages") {
                return Err(bad(format!(
                    "Unrecognized field \"{key}\" (class {RECEIVE_PARAMS}), not marked as ignorable (2 known properties: \"timeout\", \"maxMessages\"])\n at [Source: UNKNOWN; byte offset: #UNKNOWN] (through reference chain: {RECEIVE_PARAMS}[\"{key}\"])"
                )));
            }
            let number = |key: &str, java: &str| -> Result<Option<f64>, RpcError> {
                match map.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Number(n)) => Ok(n.as_f64()),
                    Some(Value::String(s)) if s.trim().parse::<f64>().is_ok() => {
                        Ok(s.trim().parse().ok())
                    }
                    Some(other) => Err(bad(format!(
                        "Cannot deserialize value of type `{java}` from {} value\n at [Source: UNKNOWN; byte offset: #UNKNOWN] (through reference chain: {RECEIVE_PARAMS}[\"{key}\"])",
                        if other.is_string() { "String" } else if other.is_array() { "Array" } else if other.is_object() { "Object" } else { "Boolean" }
                    ))),
                }
            };
            let timeout = number("timeout", "java.lang.Double")?;
            let max = number("maxMessages", "java.lang.Integer")?.map(|f| f as i64);
            (timeout, max)
        }
        Some(_) => {
            return Err(bad(format!(
                "Cannot deserialize value of type `{RECEIVE_PARAMS}` from Array value (token `JsonToken.START_ARRAY`)\n at [Source: UNKNOWN; byte offset: #UNKNOWN]"
            )))
        }
    };
    if fault.is_some() {
        return Err(RpcError::new(
            IO_ERROR,
            format!("Error while receiving messages: {IO_TEXT}"),
        ));
    }
    let timeout = timeout.unwrap_or(3.0);
    let idle = (timeout >= 0.0).then(|| Duration::from_millis((timeout * 1000.0) as u64));
    let max = max.and_then(|m| usize::try_from(m).ok());
    {
        let mut st = shared.lock();
        if st.is_receiving() {
            return Err(RpcError::user(
                "Receive command cannot be used if messages are already being received.",
            ));
        }
        st.sync = Some(SyncReceive {
            remaining: max,
            got: Vec::new(),
        });
        st.pump();
    }
    // signal-cli's timeout is the time to wait for the *next* message.
    let mut seen = 0;
    // A huge timeout is as good as none (and must not overflow).
    let after = |d: Duration| tokio::time::Instant::now().checked_add(d);
    let mut deadline = idle.and_then(after);
    loop {
        {
            let st = shared.lock();
            let Some(sync) = st.sync.as_ref() else { break };
            if sync.remaining == Some(0) || st.down {
                break;
            }
            if sync.got.len() != seen {
                seen = sync.got.len();
                deadline = idle.and_then(after);
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut st = shared.lock();
    let got = st.sync.take().map(|s| s.got).unwrap_or_default();
    // Subscriptions made meanwhile start the receive thread now.
    st.pump();
    Ok(Value::Array(got))
}

// ---- targets ---------------------------------------------------------------

/// signal-cli's `RecipientIdentifier.Single`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Single {
    Number(String),
    Uuid(String),
    Pni(String),
    Username(String),
}

impl Single {
    /// `getIdentifier()`, as error messages print it.
    fn identifier(&self) -> String {
        match self {
            Single::Number(n) => n.clone(),
            Single::Uuid(u) => u.clone(),
            Single::Pni(u) => format!("PNI:{u}"),
            Single::Username(u) => format!("u:{u}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    NoteToSelf,
    Single(Single),
    /// A canonical base64 group id.
    Group(String),
}

/// `RecipientIdentifier.Single.fromString`, with the errors
/// `CommandUtil.getSingleRecipientIdentifier` turns them into.
fn parse_single(s: Option<&str>, self_number: &str) -> Result<Single, RpcError> {
    let Some(s) = s else {
        return Err(RpcError::npe(
            "Cannot invoke \"String.startsWith(String)\" because \"identifier\" is null",
        ));
    };
    if is_uuid(s) {
        return Ok(Single::Uuid(s.to_ascii_lowercase()));
    }
    if let Some(pni) = s.strip_prefix("PNI:") {
        if !is_uuid(pni) {
            return Err(RpcError::user(format!(
                "Invalid phone number '{s}': Invalid PNI"
            )));
        }
        return Ok(Single::Pni(pni.to_ascii_lowercase()));
    }
    if let Some(name) = s.strip_prefix("u:") {
        return Ok(Single::Username(name.to_string()));
    }
    format_number(s, self_number)
        .map(Single::Number)
        .map_err(|why| RpcError::user(format!("Invalid phone number '{s}': {why}")))
}

/// `PhoneNumberFormatter.formatNumber`, with its fallback rule for numbers
/// without a country code (libphonenumber itself is not imitated).
fn format_number(number: &str, local: &str) -> Result<String, &'static str> {
    if number.contains('@') {
        return Err("Possible attempt to use email address.");
    }
    let cleaned: String = number
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    if cleaned.is_empty() {
        return Err("No valid characters found.");
    }
    if cleaned.starts_with('+') {
        return Ok(cleaned);
    }
    let local = local.strip_prefix('+').unwrap_or(local);
    if cleaned.len() >= local.len() {
        return Ok(format!("+{cleaned}"));
    }
    let missing = local.len() - cleaned.len();
    Ok(format!("+{}{cleaned}", &local[..missing]))
}

/// Java's `Base64.getDecoder()`: standard alphabet, padding optional.
fn java_base64(s: &str) -> Result<Vec<u8>, String> {
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
    {
        return Err(format!("Illegal base64 character {:x}", u32::from(bad)));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(s)
        .map_err(|_| "Input byte array has wrong 4-byte ending unit".to_string())
}

/// `CommandUtil.getGroupId`: base64 of a 16- or 32-byte id.
fn parse_group_id(s: &str) -> Result<String, RpcError> {
    let invalid = |why: String| {
        RpcError::user(format!(
            "Invalid group id: Failed to decode groupId (must be base64) \"{s}\": {why}"
        ))
    };
    let bytes = java_base64(s).map_err(invalid)?;
    if bytes.len() != 16 && bytes.len() != 32 {
        return Err(invalid(format!("Invalid group id of size {}", bytes.len())));
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `CommandUtil.getRecipientIdentifiers` (duplicates collapse, as in the
/// Java `HashSet`).
fn targets(
    note_to_self: bool,
    recipients: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    usernames: Option<Vec<String>>,
    self_number: &str,
) -> Result<Vec<Target>, RpcError> {
    let mut out = Vec::new();
    let mut add = |t: Target| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    if note_to_self {
        add(Target::NoteToSelf);
    }
    for r in recipients.unwrap_or_default() {
        add(Target::Single(parse_single(Some(&r), self_number)?));
    }
    for g in groups.unwrap_or_default() {
        add(Target::Group(parse_group_id(&g)?));
    }
    for u in usernames.unwrap_or_default() {
        add(Target::Single(Single::Username(u)));
    }
    if out.is_empty() {
        return Err(RpcError::user("No recipients given"));
    }
    Ok(out)
}

/// A recipient as the account's store resolves it.
struct Addr {
    uuid: Option<String>,
    number: Option<String>,
    username: Option<String>,
    is_self: bool,
    registered: bool,
    untrusted: bool,
}

impl Addr {
    fn json(&self) -> Value {
        json!({ "uuid": self.uuid, "number": self.number, "username": self.username })
    }
}

fn resolve(st: &State, single: &Single) -> Addr {
    let known = match single {
        Single::Number(n) => st.find_number(n),
        Single::Uuid(u) | Single::Pni(u) => st.find_uuid(u),
        Single::Username(_) => None,
    };
    match known {
        Some(r) => Addr {
            uuid: Some(r.uuid.clone()),
            number: r.number.clone(),
            username: None,
            is_self: r.uuid == st.me.uuid,
            registered: r.registered,
            untrusted: r.untrusted,
        },
        // A partial address: only what the client named.
        None => Addr {
            uuid: match single {
                Single::Uuid(u) | Single::Pni(u) => Some(u.clone()),
                _ => None,
            },
            number: match single {
                Single::Number(n) => Some(n.clone()),
                _ => None,
            },
            username: match single {
                Single::Username(u) => Some(u.clone()),
                _ => None,
            },
            is_self: false,
            registered: false,
            untrusted: false,
        },
    }
}

/// `RecipientHelper.resolveRecipient` for a quote author, mention or
/// reaction target: a number must be registered.
fn require_registered(st: &State, single: &Single) -> Result<(), RpcError> {
    let addr = resolve(st, single);
    let lookup_needed = matches!(single, Single::Number(_) | Single::Username(_));
    if lookup_needed && !addr.registered && !addr.is_self {
        return Err(RpcError::user(format!(
            "The user {} is not registered.",
            single.identifier()
        )));
    }
    Ok(())
}

/// The per-recipient failure a scripted method fault stands for.
fn fault_failure(fault: &Fault) -> Option<RecipientFailure> {
    Some(match fault {
        Fault::RateLimit {
            retry_after_seconds,
        } => RecipientFailure::RateLimit {
            retry_after_seconds: *retry_after_seconds,
        },
        Fault::CaptchaRequired {
            token,
            retry_after_seconds,
        } => RecipientFailure::CaptchaRequired {
            token: token.clone(),
            retry_after_seconds: *retry_after_seconds,
        },
        Fault::UntrustedIdentity => RecipientFailure::UntrustedIdentity,
        Fault::Unregistered => RecipientFailure::Unregistered,
        Fault::NetworkFailure => RecipientFailure::NetworkFailure,
        _ => return None,
    })
}

// ---- the send-type commands -------------------------------------------------

struct Ctx<'a> {
    shared: &'a Shared,
    method: String,
    params: Value,
    fault: Option<Fault>,
}

impl Ctx<'_> {
    fn version(&self) -> DaemonVersion {
        self.shared.opts.version
    }

    fn self_number(&self) -> String {
        self.shared.opts.account.clone()
    }

    /// An IO failure scripted for this call, if any.
    fn io_fault(&self) -> bool {
        matches!(self.fault, Some(Fault::Io))
    }

    /// A non-send method meets a recipient fault: it counts as IO trouble.
    fn any_fault(&self) -> bool {
        self.fault.is_some()
    }

    /// One `JsonSendMessageResult`.
    fn result(&self, st: &mut State, addr: &Addr, group: Option<&str>) -> Value {
        let failure = if let Some(f) = self.fault.as_ref().and_then(fault_failure) {
            Some(f)
        } else if addr.is_self {
            None
        } else if !addr.registered {
            Some(RecipientFailure::Unregistered)
        } else if let Some(f) =
            st.take_recipient_fault(addr.number.as_deref(), addr.uuid.as_deref())
        {
            Some(f)
        } else if addr.untrusted {
            Some(RecipientFailure::UntrustedIdentity)
        } else {
            None
        };
        let mut r = Map::new();
        r.insert("recipientAddress".into(), addr.json());
        if let Some(group) = group {
            r.insert("groupId".into(), group.into());
        }
        let (kind, token, retry) = match failure {
            None => ("SUCCESS", None, None),
            Some(RecipientFailure::RateLimit {
                retry_after_seconds,
            }) => (
                "RATE_LIMIT_FAILURE",
                None,
                // 0.13.19 only reports it for proof-required failures.
                (self.version() == DaemonVersion::V0_14_6).then_some(retry_after_seconds),
            ),
            Some(RecipientFailure::CaptchaRequired {
                token,
                retry_after_seconds,
            }) => ("RATE_LIMIT_FAILURE", Some(token), Some(retry_after_seconds)),
            Some(RecipientFailure::UntrustedIdentity) => ("IDENTITY_FAILURE", None, None),
            Some(RecipientFailure::Unregistered) => ("UNREGISTERED_FAILURE", None, None),
            Some(RecipientFailure::NetworkFailure) => ("NETWORK_FAILURE", None, None),
            Some(RecipientFailure::InvalidPreKey) => ("INVALID_PRE_KEY_FAILURE", None, None),
        };
        r.insert("type".into(), kind.into());
        if let Some(token) = token {
            r.insert("token".into(), token.into());
        }
        if let Some(retry) = retry {
            r.insert("retryAfterSeconds".into(), retry.into());
        }
        Value::Object(r)
    }

    /// The group a send goes to, checked as `SendHelper` does.
    fn check_group(st: &State, id: &str) -> Result<(), RpcError> {
        let group = st
            .find_group(id)
            .ok_or_else(|| RpcError::user(format!("Group not found: {id}")))?;
        if !group.members.contains(&st.me.uuid) {
            return Err(RpcError::user(format!(
                "User is not a member in group: {} ({})",
                group.name, group.id
            )));
        }
        Ok(())
    }

    /// Results for every target, under a fresh timestamp; records the call
    /// and answers as `SendMessageResultUtils.outputResult` does.
    fn deliver(
        &self,
        st: &mut State,
        targets: &[Target],
        attachments: Vec<SentAttachment>,
    ) -> Result<Value, RpcError> {
        let timestamp = st.next_ts();
        let mut results = Vec::new();
        for target in targets {
            match target {
                Target::NoteToSelf => {
                    let me = resolve(st, &Single::Number(self.self_number()));
                    results.push(self.result(st, &me, None));
                }
                Target::Single(single) => {
                    let addr = resolve(st, single);
                    results.push(self.result(st, &addr, None));
                }
                Target::Group(id) => {
                    let Some(group) = st.find_group(id) else {
                        continue;
                    };
                    let members: Vec<String> = group
                        .members
                        .iter()
                        .filter(|m| **m != st.me.uuid)
                        .cloned()
                        .collect();
                    for member in members {
                        let addr = resolve(st, &Single::Uuid(member));
                        results.push(self.result(st, &addr, Some(id)));
                    }
                }
            }
        }
        let response = json!({ "timestamp": timestamp, "results": results });
        let error = send_failure(&results).map(|e| e.with_data(json!({ "response": response })));
        st.sent.push(Sent {
            method: self.method.clone(),
            params: self.params.clone(),
            timestamp,
            result: response.clone(),
            error: error.as_ref().map(RpcError::to_value),
            attachments,
        });
        match error {
            Some(e) => Err(e),
            None => Ok(response),
        }
    }

    fn send(&mut self, args: &Args) -> Result<Value, RpcError> {
        let me = self.self_number();
        let _notify_self = args.flag("notify-self")?;
        let note_to_self = args.flag("note-to-self")?;
        let _no_urgent = args.flag("no-urgent")?;
        let recipients = args.strings("recipient")?;
        let groups = args.strings("group-id")?;
        let usernames = args.strings("username")?;
        let targets = targets(note_to_self, recipients, groups, usernames, &me)?;

        if args.flag("end-session")? {
            let singles: Vec<Target> = targets
                .iter()
                .filter(|t| matches!(t, Target::Single(_)))
                .cloned()
                .collect();
            if singles.is_empty() {
                return Err(RpcError::user("No recipients given"));
            }
            if self.io_fault() {
                return Err(RpcError::unexpected(&format!(
                    "Failed to send message: {IO_TEXT} (IOException)"
                )));
            }
            let mut st = self.shared.lock();
            let result = self.deliver(&mut st, &singles, Vec::new());
            return match self.version() {
                DaemonVersion::V0_14_6 => Ok(json!({})),
                DaemonVersion::V0_13_19 => result,
            };
        }

        let sticker = args
            .string("sticker")
            .map(|s| parse_sticker(&s))
            .transpose()?;
        let message = args.string("message").unwrap_or_default();
        let attachments = args.strings("attachment")?.unwrap_or_default();
        let _view_once = args.flag("view-once")?;
        let _voice_note = args.flag("voice-note")?;
        let mentions = args
            .strings("mention")?
            .map(|m| parse_mentions(&m, &me))
            .transpose()?
            .unwrap_or_default();
        if let Some(styles) = args.strings("text-style")? {
            parse_text_styles(&styles)?;
        }
        let mut quote_people = Vec::new();
        let quote_timestamp = args.long("quote-timestamp")?;
        if quote_timestamp.is_some() {
            let author = args
                .string("quote-author")
                .ok_or_else(|| RpcError::user("Quote author parameter is missing"))?;
            let _quote_message = args.string("quote-message");
            if let Some(m) = args.strings("quote-mention")? {
                quote_people.extend(parse_mentions(&m, &me)?);
            }
            if let Some(styles) = args.strings("quote-text-style")? {
                parse_text_styles(&styles)?;
            }
            if let Some(a) = args.strings("quote-attachment")? {
                parse_quote_attachments(&a)?;
            }
            quote_people.push(parse_single(Some(&author), &me)?);
        }
        let _preview = args.string("preview-url");
        if args.long("story-timestamp")?.is_some() {
            let author = args.string("story-author");
            parse_single(author.as_deref(), &me)?;
        }
        if message.is_empty()
            && attachments.is_empty()
            && sticker.is_none()
            && quote_timestamp.is_none()
        {
            return Err(RpcError::user(
                "Sending empty message is not allowed, either a message, attachment or sticker must be given.",
            ));
        }
        let _edit = args.long("edit-timestamp")?;

        // applyMessage: attachments are uploaded, people resolved, the
        // sticker looked up, before anything is sent.
        let mut files = Vec::new();
        if message.len() > 2000 {
            // The full text travels as a long-text attachment.
            files.push(SentAttachment {
                content_type: "text/x-signal-plain".into(),
                filename: None,
                bytes: message.clone().into_bytes(),
            });
        }
        // signal-cli lists the long-text attachment first.
        let mut uploads = files;
        for a in &attachments {
            uploads.push(self.load_attachment(a)?);
        }
        let mut st = self.shared.lock();
        for person in mentions.iter().chain(&quote_people) {
            require_registered(&st, person)?;
        }
        if let Some((pack, id)) = &sticker {
            let count = st
                .sticker_packs
                .get(pack)
                .ok_or_else(|| RpcError::user("Failed to send sticker: Sticker pack not found"))?;
            if id >= count {
                return Err(RpcError::user(
                    "Failed to send sticker: Sticker id not part of this pack",
                ));
            }
        }
        for t in &targets {
            if let Target::Group(id) = t {
                Self::check_group(&st, id)?;
            }
        }
        if self.io_fault() {
            return Err(RpcError::unexpected(&format!(
                "Failed to send message: {IO_TEXT} (IOException)"
            )));
        }
        self.deliver(&mut st, &targets, uploads)
    }

    /// An attachment parameter: a data URI or a file the daemon can read.
    fn load_attachment(&self, a: &str) -> Result<SentAttachment, RpcError> {
        let invalid = |why: String| {
            RpcError::unexpected(&format!(
                "Failed to send message: {a}: {why} (AttachmentInvalidException)"
            ))
        };
        if self.version() == DaemonVersion::V0_14_6 && !a.starts_with("data:") {
            let path = std::path::Path::new(a);
            let inside = path
                .canonicalize()
                .ok()
                .zip(self.shared.data_dir.canonicalize().ok())
                .is_some_and(|(p, d)| p.starts_with(d));
            if inside {
                return Err(invalid(
                    "Attaching files from the signal-cli data directory is not allowed".into(),
                ));
            }
        }
        if let Some(uri) = parse_data_uri(a) {
            return Ok(uri);
        }
        // Not a data URI: a file name (even for a broken data URI, as
        // signal-cli falls back to that).
        match std::fs::read(a) {
            Ok(bytes) => Ok(SentAttachment {
                content_type: mime_for_path(a).to_string(),
                filename: std::path::Path::new(a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()),
                bytes,
            }),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "No such file or directory",
                    std::io::ErrorKind::PermissionDenied => "Permission denied",
                    _ if std::path::Path::new(a).is_dir() => "Is a directory",
                    _ => "Input/output error",
                };
                Err(invalid(format!("{a} ({why})")))
            }
        }
    }

    fn send_reaction(&mut self, args: &Args) -> Result<Value, RpcError> {
        let me = self.self_number();
        let _notify_self = args.flag("notify-self")?;
        let note_to_self = args.flag("note-to-self")?;
        let recipients = args.strings("recipient")?;
        let groups = args.strings("group-id")?;
        let usernames = args.strings("username")?;
        let targets = targets(note_to_self, recipients, groups, usernames, &me)?;
        let emoji = args.string("emoji");
        let _remove = args.flag("remove")?;
        let target_author = args.string("target-author");
        let target_timestamp = args.long("target-timestamp")?;
        let _story = args.flag("story")?;
        let author = match (&target_author, targets.as_slice()) {
            (None, [Target::Single(single)]) => single.clone(),
            _ => parse_single(target_author.as_deref(), &me)?,
        };
        if target_timestamp.is_none() {
            return Err(RpcError::npe(
                "Cannot invoke \"java.lang.Long.longValue()\" because \"targetTimestamp\" is null",
            ));
        }
        if emoji.is_none() {
            return Err(RpcError::npe(
                "Cannot invoke \"String.length()\" because \"emoji\" is null",
            ));
        }
        let mut st = self.shared.lock();
        require_registered(&st, &author)?;
        for t in &targets {
            if let Target::Group(id) = t {
                Self::check_group(&st, id)?;
            }
        }
        if self.io_fault() {
            return Err(RpcError::unexpected(&format!(
                "Failed to send message: {IO_TEXT} (IOException)"
            )));
        }
        self.deliver(&mut st, &targets, Vec::new())
    }

    fn remote_delete(&mut self, args: &Args) -> Result<Value, RpcError> {
        let me = self.self_number();
        let note_to_self = args.flag("note-to-self")?;
        let recipients = args.strings("recipient")?;
        let usernames = args.strings("username")?;
        let groups = args.strings("group-id")?;
        let targets = targets(note_to_self, recipients, groups, usernames, &me)?;
        if args.long("target-timestamp")?.is_none() {
            return Err(RpcError::npe(
                "Cannot invoke \"java.lang.Long.longValue()\" because the return value of \"net.sourceforge.argparse4j.inf.Namespace.getLong(String)\" is null",
            ));
        }
        let mut st = self.shared.lock();
        for t in &targets {
            if let Target::Group(id) = t {
                Self::check_group(&st, id)?;
            }
        }
        if self.io_fault() {
            return Err(RpcError::unexpected(&format!(
                "Failed to send message: {IO_TEXT} (IOException)"
            )));
        }
        self.deliver(&mut st, &targets, Vec::new())
    }

    fn send_typing(&mut self, args: &Args) -> Result<Value, RpcError> {
        let me = self.self_number();
        let recipients = args.strings("recipient")?;
        let groups = args.strings("group-id")?;
        let _stop = args.flag("stop")?;
        let mut targets = Vec::new();
        for r in recipients.unwrap_or_default() {
            let t = Target::Single(parse_single(Some(&r), &me)?);
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        for g in groups.unwrap_or_default() {
            let t = Target::Group(parse_group_id(&g)?);
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        if targets.is_empty() {
            return Err(RpcError::user("No recipients given"));
        }
        let mut st = self.shared.lock();
        for t in &targets {
            if let Target::Group(id) = t {
                Self::check_group(&st, id).map_err(|e| {
                    RpcError::user(format!("Failed to send to group: {}", e.message))
                })?;
            }
        }
        if self.io_fault() {
            // sendTyping reports IO trouble as a user error.
            return Err(RpcError::user(format!(
                "Failed to send message: {IO_TEXT} (IOException)"
            )));
        }
        self.deliver(&mut st, &targets, Vec::new())
    }

    fn send_receipt(&mut self, args: &Args) -> Result<Value, RpcError> {
        let me = self.self_number();
        let recipient = args.string("recipient");
        let single = parse_single(recipient.as_deref(), &me)?;
        if args.longs("target-timestamp")?.is_none() {
            return Err(RpcError::npe(
                "Cannot invoke \"java.util.List.iterator()\" because \"timestamps\" is null",
            ));
        }
        let kind = args.string("type");
        match kind.as_deref() {
            None | Some("read") | Some("viewed") => {}
            Some(other) => return Err(RpcError::user(format!("Unknown receipt type: {other}"))),
        }
        if self.io_fault() {
            // No exception path here: the failure shows in the result.
            self.fault = Some(Fault::NetworkFailure);
        }
        let mut st = self.shared.lock();
        self.deliver(&mut st, &[Target::Single(single)], Vec::new())
    }

    fn get_user_status(&mut self, args: &Args) -> Result<Value, RpcError> {
        let me = self.self_number();
        let recipients = args.strings("recipient")?;
        match &self.fault {
            Some(Fault::RateLimit {
                retry_after_seconds,
            })
            | Some(Fault::CaptchaRequired {
                retry_after_seconds,
                ..
            }) => {
                let delay = i64::try_from(*retry_after_seconds).unwrap_or(i64::MAX);
                let at = now_ms().saturating_add(delay.saturating_mul(1000));
                return Err(RpcError::new(
                    RATELIMIT_ERROR,
                    format!(
                        "Rate limit reached\nNext attempt may be tried at {}",
                        java_date(at)
                    ),
                ));
            }
            Some(_) => {
                return Err(RpcError::new(
                    IO_ERROR,
                    format!("Unable to check if users are registered: {IO_TEXT} (IOException)"),
                ))
            }
            None => {}
        }
        let usernames = args.strings("username")?;
        let st = self.shared.lock();
        let mut out = Vec::new();
        for given in recipients.unwrap_or_default() {
            let number = format_number(&given, &me).ok();
            let known = number
                .as_deref()
                .and_then(|n| st.find_number(n))
                .filter(|r| r.registered);
            let mut status = Map::new();
            status.insert("recipient".into(), given.clone().into());
            if let Some(number) = &number {
                status.insert("number".into(), number.clone().into());
            }
            status.insert("uuid".into(), known.map(|r| r.uuid.clone()).into());
            status.insert("isRegistered".into(), known.is_some().into());
            out.push(Value::Object(status));
        }
        for name in usernames.unwrap_or_default() {
            out.push(json!({
                "recipient": name,
                "username": name,
                "uuid": null,
                "isRegistered": false,
            }));
        }
        Ok(Value::Array(out))
    }

    fn update_profile(&mut self, args: &Args) -> Result<Value, RpcError> {
        let given = args.string("given-name");
        let family = args.string("family-name");
        let about = args.string("about");
        let about_emoji = args.string("about-emoji");
        let mobile_coin = match args.string("mobile-coin-address") {
            Some(s) => Some(
                java_base64(&s)
                    .map_err(|e| RpcError::internal(&e, "IllegalArgumentException"))
                    .map(|_| s)?,
            ),
            None => None,
        };
        let avatar = args.string("avatar");
        let remove_avatar = args.flag("remove-avatar")?;
        if self.any_fault() {
            return Err(RpcError::new(
                IO_ERROR,
                format!("Update profile error: {IO_TEXT}"),
            ));
        }
        if let Some(path) = avatar.as_deref().filter(|_| !remove_avatar) {
            if std::fs::metadata(path).is_err() {
                return Err(RpcError::new(
                    IO_ERROR,
                    format!("Update profile error: {path} (No such file or directory)"),
                ));
            }
        }
        let mut st = self.shared.lock();
        let profile = &mut st.profile;
        let mut set = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                profile[key] = value.into();
            }
        };
        set("givenName", given.clone());
        set("familyName", family);
        set("about", about);
        set("aboutEmoji", about_emoji);
        set("mobileCoinAddress", mobile_coin);
        if remove_avatar {
            profile["hasAvatar"] = false.into();
        } else if avatar.is_some() {
            profile["hasAvatar"] = true.into();
        }
        if let Some(given) = given {
            st.me.profile_name = Some(given);
        }
        Ok(json!({}))
    }
}

/// Which send-type failures become an error: only when nobody got it.
fn send_failure(results: &[Value]) -> Option<RpcError> {
    let types: Vec<&str> = results
        .iter()
        .map(|r| r["type"].as_str().unwrap_or(""))
        .collect();
    if types.is_empty() || types.contains(&"SUCCESS") {
        return None;
    }
    Some(if types.iter().all(|t| *t == "IDENTITY_FAILURE") {
        RpcError::new(
            UNTRUSTED_KEY_ERROR,
            "Failed to send message due to untrusted identities",
        )
    } else if types.iter().all(|t| *t == "RATE_LIMIT_FAILURE") {
        RpcError::new(
            RATELIMIT_ERROR,
            "Failed to send message due to rate limiting",
        )
    } else {
        RpcError::user("Failed to send message")
    })
}

/// `DateUtils.formatTimestamp`: `"<ms> (yyyy-MM-ddTHH:mm:ss.SSSZ)"`.
fn java_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{ms} ({year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z)",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---- parsers of the send options ----------------------------------------------

/// `(\d+):(\d+):(.+)`.
fn three_parts(s: &str) -> Option<(&str, &str, &str)> {
    let (start, rest) = s.split_once(':')?;
    let (length, tail) = rest.split_once(':')?;
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let line =
        |t: &str| !t.is_empty() && !t.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']);
    (digits(start) && digits(length) && line(tail)).then_some((start, length, tail))
}

/// `Integer.parseInt`.
fn parse_int(digits: &str) -> Result<u32, RpcError> {
    digits.parse::<i32>().map(|i| i as u32).map_err(|_| {
        RpcError::internal(
            &format!("For input string: \"{digits}\""),
            "NumberFormatException",
        )
    })
}

fn parse_mentions(items: &[String], me: &str) -> Result<Vec<Single>, RpcError> {
    items
        .iter()
        .map(|m| {
            let (start, length, who) = three_parts(m).ok_or_else(|| {
                RpcError::user(format!(
                    "Invalid mention syntax ({m}) expected 'start:length:recipientNumber'"
                ))
            })?;
            let single = parse_single(Some(who), me)?;
            parse_int(start)?;
            parse_int(length)?;
            Ok(single)
        })
        .collect()
}

fn parse_text_styles(items: &[String]) -> Result<(), RpcError> {
    for s in items {
        let (start, length, style) = three_parts(s).ok_or_else(|| {
            RpcError::user(format!(
                "Invalid textStyle syntax ({s}) expected 'start:length:STYLE'"
            ))
        })?;
        if !matches!(
            style,
            "NONE" | "BOLD" | "ITALIC" | "SPOILER" | "STRIKETHROUGH" | "MONOSPACE"
        ) {
            return Err(RpcError::user(format!("Invalid style: {style}")));
        }
        parse_int(start)?;
        parse_int(length)?;
    }
    Ok(())
}

/// `([\da-f]+):(\d+)` with an even number of hex digits.
fn parse_sticker(s: &str) -> Result<(String, u32), RpcError> {
    let invalid = || {
        RpcError::user(format!(
            "Invalid sticker syntax ({s}) expected 'stickerPackId:stickerId'"
        ))
    };
    let (pack, id) = s.split_once(':').ok_or_else(invalid)?;
    let hex = !pack.is_empty()
        && pack.len() % 2 == 0
        && pack
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    Ok((pack.to_string(), parse_int(id)?))
}

/// `contentType[:filename[:previewFile]]`.
fn parse_quote_attachments(items: &[String]) -> Result<(), RpcError> {
    for a in items {
        if a.is_empty() || a.starts_with(':') || a.ends_with(':') || a.contains("::") {
            return Err(RpcError::user(format!(
                "Invalid attachment syntax ({a}) expected 'contentType[:filename[:previewFile]]'"
            )));
        }
    }
    Ok(())
}

/// signal-cli's `DataURI.of`: `data:[type][;k=v][;base64],data`. Several
/// parameters are mangled the way its greedy pattern mangles them (the key
/// runs to the last `=`). `None` when it is not a valid data URI, in which
/// case signal-cli tries it as a file name.
fn parse_data_uri(s: &str) -> Option<SentAttachment> {
    if s.len() < 5 || !s[..5].eq_ignore_ascii_case("data:") {
        return None;
    }
    let rest = &s[5..];
    let (header, data) = rest.split_once(',')?;
    if data.is_empty() || data.contains(['\n', '\r']) {
        return None;
    }
    let (header, is_base64) = match header.len().checked_sub(7) {
        Some(i) if header.is_char_boundary(i) && header[i..].eq_ignore_ascii_case(";base64") => {
            (&header[..i], true)
        }
        _ => (header, false),
    };
    let (media, params) = match header.find(';') {
        Some(i) => (&header[..i], Some(&header[i..])),
        None => (header, None),
    };
    if !media.is_empty() && !media.contains('/') {
        return None;
    }
    let mut filename = None;
    if let Some(params) = params {
        let (key, value) = params[1..].rsplit_once('=')?;
        if key.is_empty() || value.is_empty() {
            return None;
        }
        if key.eq_ignore_ascii_case("filename") || key == "filename" {
            filename = Some(url_decode(value));
        }
    }
    let bytes = if is_base64 {
        java_base64(data).ok()?
    } else {
        url_decode(data).into_bytes()
    };
    Some(SentAttachment {
        content_type: if media.is_empty() {
            "text/plain".into()
        } else {
            media.to_string()
        },
        filename,
        bytes,
    })
}

/// `URLDecoder.decode(…, UTF-8)`.
pub(crate) fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- the local commands ---------------------------------------------------------

fn list_groups(shared: &Shared, args: &Args) -> Result<Value, RpcError> {
    let wanted = args
        .strings("group-id")?
        .unwrap_or_default()
        .iter()
        .map(|g| parse_group_id(g))
        .collect::<Result<Vec<_>, _>>()?;
    let st = shared.lock();
    let member = |uuid: &String, admins: &[String]| {
        let r = st.find_uuid(uuid);
        let number = r.and_then(|r| r.number.clone());
        match shared.opts.version {
            DaemonVersion::V0_13_19 => json!({ "number": number, "uuid": uuid }),
            DaemonVersion::V0_14_6 => {
                json!({ "number": number, "uuid": uuid, "isAdmin": admins.contains(uuid) })
            }
        }
    };
    let groups = st
        .groups
        .iter()
        .filter(|g| wanted.is_empty() || wanted.contains(&g.id))
        .map(|g| {
            json!({
                "id": g.id,
                "name": g.name,
                "description": g.description,
                "isMember": g.members.contains(&st.me.uuid),
                "isBlocked": false,
                "messageExpirationTime": 0,
                "members": g.members.iter().map(|m| member(m, &g.admins)).collect::<Vec<_>>(),
                "pendingMembers": [],
                "requestingMembers": [],
                "admins": g.admins.iter().map(|m| member(m, &g.admins)).collect::<Vec<_>>(),
                "banned": [],
                "permissionAddMember": "EVERY_MEMBER",
                "permissionEditDetails": "ONLY_ADMINS",
                "permissionSendMessage": "EVERY_MEMBER",
                "groupInviteLink": null,
            })
        })
        .collect();
    Ok(Value::Array(groups))
}

fn list_contacts(shared: &Shared, args: &Args) -> Result<Value, RpcError> {
    let me = shared.opts.account.clone();
    // `allRecipients`: every recipient the account's store knows, itself
    // included, not only contacts.
    let all = args.flag("all-recipients")?;
    let _blocked = args.boolean("blocked")?;
    let wanted = args
        .strings("recipient")?
        .unwrap_or_default()
        .iter()
        .map(|r| parse_single(Some(r), &me))
        .collect::<Result<Vec<_>, _>>()?;
    let name = args.string("name");
    let st = shared.lock();
    let contacts = std::iter::once(&st.me)
        .filter(|_| all)
        .chain(st.recipients.iter().filter(|r| r.number != st.me.number))
        .filter(|r| all || r.is_contact)
        .filter(|r| {
            wanted.is_empty()
                || wanted.iter().any(|w| match w {
                    Single::Number(n) => r.number.as_deref() == Some(n),
                    Single::Uuid(u) | Single::Pni(u) => r.uuid.eq_ignore_ascii_case(u),
                    Single::Username(_) => false,
                })
        })
        .filter(|r| match name.as_deref() {
            None => true,
            Some(n) => r.profile_name.as_deref().is_some_and(|p| p.contains(n)),
        })
        .map(|r| {
            let profile = r.profile_name.as_ref().map(|given| {
                json!({
                    "lastUpdateTimestamp": 0,
                    "givenName": given,
                    "familyName": null,
                    "about": null,
                    "aboutEmoji": null,
                    "hasAvatar": false,
                    "mobileCoinAddress": null,
                })
            });
            json!({
                "number": r.number,
                "uuid": r.uuid,
                "username": null,
                "name": "",
                "givenName": null,
                "familyName": null,
                "nickName": null,
                "nickGivenName": null,
                "nickFamilyName": null,
                "note": null,
                "color": null,
                "isBlocked": false,
                "isHidden": false,
                "messageExpirationTime": 0,
                "profileSharing": false,
                "unregistered": !r.registered,
                "profile": profile,
            })
        })
        .collect();
    Ok(Value::Array(contacts))
}

fn get_attachment(shared: &Shared, args: &Args) -> Result<Value, RpcError> {
    let Some(id) = args.string("id") else {
        return Err(RpcError::npe("null"));
    };
    let not_found = || RpcError::user(format!("Could not find attachment with ID: {id}"));
    if id.is_empty() || id.contains('/') || id.contains('\\') || id == "." || id == ".." {
        return Err(not_found());
    }
    let bytes = std::fs::read(shared.attachments_dir.join(&id)).map_err(|_| not_found())?;
    Ok(json!({ "data": base64::engine::general_purpose::STANDARD.encode(bytes) }))
}

fn trust(shared: &Shared, args: &Args) -> Result<Value, RpcError> {
    let me = shared.opts.account.clone();
    let recipient = args.string("recipient");
    let single = parse_single(recipient.as_deref(), &me)?;
    let all_keys = args.flag("trust-all-known-keys")?;
    if !all_keys {
        let number = args.string("verified-safety-number").ok_or_else(|| {
            RpcError::user(
                "You need to specify the fingerprint/safety number you have verified with -v SAFETY_NUMBER",
            )
        })?;
        let digits = number.len() == 60 && number.bytes().all(|b| b.is_ascii_digit());
        let hex = !number.is_empty()
            && number.len() % 2 == 0
            && number.bytes().all(|b| b.is_ascii_hexdigit());
        if !digits && !hex {
            return Err(RpcError::user(
                "Safety number has invalid format, either specify the old hex fingerprint or the new safety number",
            ));
        }
    }
    let mut st = shared.lock();
    let addr = resolve(&st, &single);
    if !addr.registered {
        return Err(RpcError::user(format!(
            "The user {} is not registered.",
            single.identifier()
        )));
    }
    let uuid = addr.uuid.unwrap_or_default();
    if let Some(r) = st.recipients.iter_mut().find(|r| r.uuid == uuid) {
        r.untrusted = false;
    }
    Ok(json!({}))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn numbers_are_normalized_like_signal_cli() {
        assert_eq!(
            format_number("+1 (555) 000-0002", "+15550000001"),
            Ok("+15550000002".into())
        );
        assert_eq!(
            format_number("5550000002", "+15550000001"),
            Ok("+15550000002".into())
        );
        assert_eq!(
            format_number("a@b", "+15550000001"),
            Err("Possible attempt to use email address.")
        );
        assert_eq!(
            format_number("abc", "+15550000001"),
            Err("No valid characters found.")
        );
    }

    #[test]
    fn data_uris_follow_the_greedy_pattern() {
        let a =
            parse_data_uri("data:image/png;filename=cat%20pic.png;base64,iVBORw0K").expect("valid");
        assert_eq!(a.content_type, "image/png");
        assert_eq!(a.filename.as_deref(), Some("cat pic.png"));
        assert_eq!(a.bytes, vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a]);
        // Two parameters: the key runs to the last '=', so no filename.
        let b = parse_data_uri("data:text/plain;a=1;filename=x.txt,hi").expect("valid");
        assert_eq!(b.filename, None);
        assert_eq!(b.bytes, b"hi");
        assert!(parse_data_uri("data:image/png;base64,@@@").is_none());
        assert!(parse_data_uri("/tmp/file.png").is_none());
    }

    #[test]
    fn java_dates() {
        assert_eq!(
            java_date(1_732_480_000_000),
            "1732480000000 (2024-11-24T20:26:40.000Z)"
        );
    }

    #[test]
    fn group_ids_are_checked_like_java() {
        let id = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_group_id(&id), Ok(id.clone()));
        assert_eq!(parse_group_id(id.trim_end_matches('=')), Ok(id));
        let e = parse_group_id("abc-def").unwrap_err();
        assert_eq!(e.code, -1);
        assert_eq!(
            e.message,
            "Invalid group id: Failed to decode groupId (must be base64) \"abc-def\": Illegal base64 character 2d"
        );
        let e = parse_group_id("AAAA").unwrap_err();
        assert!(
            e.message.ends_with("Invalid group id of size 3"),
            "{}",
            e.message
        );
    }
}
