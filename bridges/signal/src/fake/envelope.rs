//! Incoming envelopes as signal-cli 0.13.19 serializes them
//! (`JsonMessageEnvelope`, `JsonDataMessage` and friends), built from what
//! the control API was given, and the attachments directory.
//!
//! The rules kept: the source fields and timestamps are always present
//! (`null` when unknown); `message` is always present (`null` for
//! reactions, deletes and attachment-only messages), as are
//! `expiresInSeconds` and `viewOnce`; optional parts and empty lists are
//! left out; attachment objects carry every key (`null` when unknown);
//! mentions and quotes name their author three ways (deprecated legacy id,
//! number, UUID).

use std::io;

use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Map, Value};

use super::state::{now_ms, Group, Recipient, Shared, State, StoredAttachment};
use super::DaemonVersion;

/// An envelope from `sender` carrying one payload (`dataMessage`,
/// `syncMessage`, …).
pub(crate) fn envelope(
    sender: &Recipient,
    device: u32,
    ts: i64,
    key: &str,
    payload: Value,
) -> Value {
    let mut env = bare_envelope(sender, device, ts);
    if let Some(env) = env.as_object_mut() {
        env.insert(key.into(), payload);
    }
    env
}

/// The fields every envelope has. `serverDeliveredTimestamp` is stamped
/// again when the daemon actually receives it.
pub(crate) fn bare_envelope(sender: &Recipient, device: u32, ts: i64) -> Value {
    let received = now_ms().max(ts);
    json!({
        "source": sender.legacy_id(),
        "sourceNumber": sender.number,
        "sourceUuid": sender.uuid,
        "sourceName": sender.profile_name,
        "sourceDevice": device,
        "timestamp": ts,
        "serverReceivedTimestamp": received,
        "serverDeliveredTimestamp": received,
    })
}

/// `groupInfo` of a group message.
pub(crate) fn group_info(group: &Group) -> Value {
    json!({
        "groupId": group.id,
        "groupName": group.name,
        "revision": group.revision,
        "type": "DELIVER",
    })
}

/// A dataMessage (also the flattened part of a sync `sentMessage` and the
/// inside of an `editMessage`) from the control API's `body`.
///
/// # Panics
/// If `body` is not an object, the group is unknown, or an attachment
/// cannot be stored (all mistakes of the test, not of a client).
pub(crate) fn data_message(
    shared: &Shared,
    st: &mut State,
    ts: i64,
    body: Value,
    group: Option<&str>,
) -> Map<String, Value> {
    let mut body = match body {
        Value::Object(body) => body,
        Value::Null => Map::new(),
        other => panic!("a message body must be a JSON object of dataMessage fields, not {other}"),
    };
    let mut data = Map::new();
    data.insert("timestamp".into(), ts.into());
    data.insert(
        "message".into(),
        body.remove("message").unwrap_or(Value::Null),
    );
    data.insert(
        "expiresInSeconds".into(),
        body.remove("expiresInSeconds").unwrap_or_else(|| 0.into()),
    );
    data.insert(
        "viewOnce".into(),
        body.remove("viewOnce").unwrap_or(false.into()),
    );
    if shared.opts.version == DaemonVersion::V0_14_6 {
        data.insert(
            "isExpirationUpdate".into(),
            body.remove("isExpirationUpdate").unwrap_or(false.into()),
        );
    }
    for (key, value) in body {
        let value = match key.as_str() {
            "mentions" => Value::Array(mentions(st, value)),
            "attachments" => Value::Array(
                list(value)
                    .into_iter()
                    .map(|a| attachment(shared, st, a))
                    .collect(),
            ),
            "quote" => quote(st, value),
            "groupInfo" | "timestamp" => continue,
            _ => value,
        };
        // signal-cli leaves empty lists out.
        if value.as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        data.insert(key, value);
    }
    long_text(shared, st, &mut data);
    if let Some(group) = group {
        data.insert("groupInfo".into(), group_info(st.group(group)));
    }
    data
}

/// The longest body a Signal message carries inline (signal-cli's
/// `MAX_MESSAGE_SIZE_BYTES`, UTF-8 bytes).
pub(crate) const MAX_BODY_BYTES: usize = 2000;

/// A body over [`MAX_BODY_BYTES`] travels as a `text/x-signal-plain`
/// attachment, listed first (signal-cli's `applyMessage`). Receiving it,
/// 0.13 shows the sender's first 2,000 bytes as `message`; 0.14 fetches the
/// attachment and shows the whole text, and lists the attachment all the
/// same (`MessageEnvelope.Data.from`).
fn long_text(shared: &Shared, st: &mut State, data: &mut Map<String, Value>) {
    let Some(text) = data
        .get("message")
        .and_then(Value::as_str)
        .filter(|t| t.len() > MAX_BODY_BYTES)
        .map(str::to_string)
    else {
        return;
    };
    let stored = store_attachment(shared, st, text.as_bytes(), "text/x-signal-plain", None)
        .unwrap_or_else(|e| panic!("cannot store a long text: {e}"));
    let mut list = match data.remove("attachments") {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    list.insert(0, stored);
    data.insert("attachments".into(), Value::Array(list));
    if shared.opts.version == DaemonVersion::V0_13_19 {
        let mut end = MAX_BODY_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        data.insert("message".into(), Value::String(text[..end].to_string()));
    }
}

fn list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

/// `[{number|uuid, start, length}]` → `[{name, number, uuid, start, length}]`.
fn mentions(st: &mut State, value: Value) -> Vec<Value> {
    list(value)
        .into_iter()
        .map(|m| {
            let who = m
                .get("number")
                .or_else(|| m.get("uuid"))
                .or_else(|| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("a mention needs a number or uuid: {m}"))
                .to_string();
            let r = st.sender(&who);
            json!({
                "name": r.legacy_id(),
                "number": r.number,
                "uuid": r.uuid,
                "start": m.get("start").cloned().unwrap_or(0.into()),
                "length": m.get("length").cloned().unwrap_or(1.into()),
            })
        })
        .collect()
}

/// A quote completed with its author's number and UUID and the always
/// present `attachments` list.
fn quote(st: &mut State, value: Value) -> Value {
    let Value::Object(mut q) = value else {
        panic!("a quote must be an object {{id, author, text, …}}");
    };
    let author = q
        .remove("author")
        .or_else(|| q.remove("authorNumber"))
        .or_else(|| q.remove("authorUuid"))
        .and_then(|a| a.as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("a quote needs an author (number or uuid)"));
    let r = st.sender(&author);
    let mut out = Map::new();
    out.insert("id".into(), q.remove("id").unwrap_or(Value::Null));
    out.insert("author".into(), r.legacy_id().into());
    out.insert("authorNumber".into(), r.number.clone().into());
    out.insert("authorUuid".into(), r.uuid.clone().into());
    out.insert("text".into(), q.remove("text").unwrap_or(Value::Null));
    let attachments = q
        .remove("attachments")
        .map(list)
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            json!({
                "contentType": a.get("contentType").cloned().unwrap_or(Value::Null),
                "filename": a.get("filename").cloned().unwrap_or(Value::Null),
                "thumbnail": a.get("thumbnail").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    out.insert("attachments".into(), Value::Array(attachments));
    if let Some(m) = q.remove("mentions") {
        let m = mentions(st, m);
        if !m.is_empty() {
            out.insert("mentions".into(), Value::Array(m));
        }
    }
    if let Some(styles) = q.remove("textStyles") {
        if !list(styles.clone()).is_empty() {
            out.insert("textStyles".into(), styles);
        }
    }
    Value::Object(out)
}

/// An attachment of an injected message: an object from
/// `store_attachment` (completed with nulls), or bytes to store now.
fn attachment(shared: &Shared, st: &mut State, value: Value) -> Value {
    let Value::Object(a) = value else {
        panic!("an attachment must be an object, not {value}");
    };
    let bytes = if let Some(b64) = a.get("base64").and_then(Value::as_str) {
        use base64::Engine;
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_else(|e| panic!("attachment base64: {e}")),
        )
    } else {
        a.get("text")
            .and_then(Value::as_str)
            .map(|t| t.as_bytes().to_vec())
    };
    let mut out = match bytes {
        Some(bytes) => {
            let content_type = a
                .get("contentType")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream");
            let filename = a.get("filename").and_then(Value::as_str);
            store_attachment(shared, st, &bytes, content_type, filename)
                .unwrap_or_else(|e| panic!("cannot store an attachment: {e}"))
        }
        None if a.contains_key("id") => json!({
            "contentType": null, "filename": null, "id": null, "size": null,
            "width": null, "height": null, "caption": null, "uploadTimestamp": null,
        }),
        None => panic!("an attachment needs an id (from store_attachment), base64 or text"),
    };
    for (key, value) in a {
        if matches!(key.as_str(), "base64" | "text") {
            continue;
        }
        out[key.as_str()] = value;
    }
    out
}

/// The attachment object `receive` gives for a stored file.
pub(crate) fn attachment_json(id: &str, a: &StoredAttachment) -> Value {
    json!({
        "contentType": a.content_type,
        "filename": a.filename,
        "id": id,
        "size": a.size,
        "width": null,
        "height": null,
        "caption": null,
        "uploadTimestamp": null,
    })
}

/// Writes a file into the attachments directory under a fresh id (20
/// random characters plus an extension, like the daemon's) and returns its
/// attachment object.
pub(crate) fn store_attachment(
    shared: &Shared,
    st: &mut State,
    bytes: &[u8],
    content_type: &str,
    filename: Option<&str>,
) -> io::Result<Value> {
    let mut id = Alphanumeric.sample_string(&mut rand::thread_rng(), 20);
    if let Some(ext) = extension(content_type, filename) {
        id.push('.');
        id.push_str(&ext);
    }
    std::fs::write(shared.attachments_dir.join(&id), bytes)?;
    let stored = StoredAttachment {
        content_type: content_type.to_string(),
        filename: filename.map(str::to_string),
        size: bytes.len() as u64,
    };
    let json = attachment_json(&id, &stored);
    st.attachments.insert(id, stored);
    Ok(json)
}

/// The file extension for a stored attachment: the filename's, else one
/// for the MIME type.
fn extension(content_type: &str, filename: Option<&str>) -> Option<String> {
    if let Some((_, ext)) = filename.and_then(|f| f.rsplit_once('.')) {
        if !ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Some(ext.to_ascii_lowercase());
        }
    }
    let ext = match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        "audio/aac" => "aac",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => return None,
    };
    Some(ext.to_string())
}

/// The MIME type signal-cli would probe for a file it is asked to send.
pub(crate) fn mime_for_path(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "aac" => "audio/aac",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}
