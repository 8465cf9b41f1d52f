//! How events look on the wire: the native shape (`/v1`, webhooks) and the
//! matterbridge shape (`/api`).

use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};
use switchboard_core::{Event, EventKind, GatewayName, TargetRef};
use time::format_description::well_known::Rfc3339;

use crate::store::FeedItem;

/// The native wire shape of an event, serialized straight from borrowed
/// parts (no intermediate `Value`): this runs once per event per consumer.
#[derive(Serialize)]
struct Native<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<i64>,
    gateway: &'a str,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    origin: NativeOrigin<'a>,
    author: NativeAuthor<'a>,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spans: Option<&'a [switchboard_core::Span]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attachments: Option<Vec<NativeFile<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<switchboard_core::Membership>,
}

#[derive(Serialize)]
struct NativeOrigin<'a> {
    account: String,
    channel: &'a str,
    remote_id: &'a str,
    thread: Option<&'a str>,
}

#[derive(Serialize)]
struct NativeAuthor<'a> {
    id: &'a str,
    name: &'a str,
    username: Option<&'a str>,
    avatar: Option<String>,
    is_bot: bool,
}

#[derive(Serialize)]
struct NativeFile<'a> {
    kind: switchboard_core::AttachmentKind,
    name: &'a str,
    mime: &'a str,
    size: u64,
    sha256: &'a str,
    url: String,
}

fn target_id(t: &TargetRef) -> Option<String> {
    t.event_id().map(|id| id.to_string())
}

fn native_parts<'a>(event: &'a Event, gateway: &'a GatewayName, cursor: Option<i64>) -> Native<'a> {
    let mut n = Native {
        cursor,
        gateway: gateway.as_str(),
        id: event.id.to_string(),
        kind: event.kind.name(),
        origin: NativeOrigin {
            account: event.origin.account.to_string(),
            channel: event.origin.channel.as_str(),
            remote_id: event.origin.remote_id.as_str(),
            thread: event.origin.thread.as_deref(),
        },
        author: NativeAuthor {
            id: &event.author.remote_id,
            name: &event.author.display_name,
            username: event.author.username.as_deref(),
            avatar: event
                .author
                .avatar
                .as_ref()
                .map(switchboard_core::Avatar::url),
            is_bot: event.author.is_bot,
        },
        at: event.at.format(&Rfc3339).unwrap_or_default(),
        text: None,
        spans: None,
        reply_to: None,
        attachments: None,
        target: None,
        emoji: None,
        removed: None,
        change: None,
    };
    match &event.kind {
        EventKind::Message {
            body,
            attachments,
            reply_to,
        } => {
            n.text = Some(&body.text);
            n.spans = Some(&body.spans);
            n.reply_to = Some(reply_to.as_ref().and_then(target_id));
            n.attachments = Some(
                attachments
                    .iter()
                    .map(|a| NativeFile {
                        kind: a.kind,
                        name: &a.name,
                        mime: &a.mime,
                        size: a.size,
                        sha256: &a.content.sha256,
                        url: format!("/v1/blobs/{}", a.content.sha256),
                    })
                    .collect(),
            );
        }
        EventKind::Edit { target, body } => {
            n.target = Some(target_id(target));
            n.text = Some(&body.text);
            n.spans = Some(&body.spans);
        }
        EventKind::Delete { target, .. } => n.target = Some(target_id(target)),
        EventKind::Reaction {
            target,
            emoji,
            removed,
        } => {
            n.target = Some(target_id(target));
            n.emoji = Some(emoji);
            n.removed = Some(*removed);
        }
        EventKind::Membership { change } => n.change = Some(*change),
        EventKind::Notice { body } => n.text = Some(&body.text),
        _ => {}
    }
    n
}

/// The native JSON of an event. `cursor` is the feed position, absent for
/// webhook deliveries.
#[must_use]
pub fn native(event: &Event, gateway: &GatewayName, cursor: Option<i64>) -> Value {
    serde_json::to_value(native_parts(event, gateway, cursor)).unwrap_or(Value::Null)
}

/// The native JSON of a feed row, as text, rendered once per row.
#[must_use]
pub fn native_feed(item: &FeedItem) -> &str {
    item.native.get_or_init(|| {
        serde_json::to_string(&native_parts(&item.event, &item.gateway, Some(item.seq)))
            .unwrap_or_default()
    })
}

/// The matterbridge `config.Message` JSON of a feed row; `None` for kinds
/// matterbridge does not send to API clients (deletes, reactions).
/// `files` holds the attachments' bytes, looked up by the caller.
#[must_use]
pub fn matterbridge(item: &FeedItem, files: &[(String, Vec<u8>)]) -> Option<Value> {
    let e = &item.event;
    let (text, id, event, parent) = match &e.kind {
        EventKind::Message { body, reply_to, .. } => (
            body.text.clone(),
            e.id.to_string(),
            "",
            reply_to
                .as_ref()
                .and_then(TargetRef::event_id)
                .map(|p| p.to_string()),
        ),
        // matterbridge sends edits as a message carrying the original's id.
        EventKind::Edit { body, target } => (
            body.text.clone(),
            target
                .event_id()
                .map_or_else(|| e.id.to_string(), |t| t.to_string()),
            "",
            None,
        ),
        EventKind::Membership { change } => (
            format!(
                "{} {}",
                e.author.display_name,
                match change {
                    switchboard_core::Membership::Joined => "joined",
                    switchboard_core::Membership::Left => "left",
                    _ => "changed",
                }
            ),
            e.id.to_string(),
            "join_leave",
            None,
        ),
        EventKind::Notice { body } => (body.text.clone(), e.id.to_string(), "", None),
        _ => return None,
    };
    let extra = match &e.kind {
        EventKind::Message { attachments, .. } if !attachments.is_empty() => {
            let list: Vec<Value> = attachments
                .iter()
                .map(|a| {
                    let data = files
                        .iter()
                        .find(|(sha, _)| sha == &a.content.sha256)
                        .map(|(_, d)| base64::engine::general_purpose::STANDARD.encode(d));
                    json!({
                        "Name": a.name, "Data": data, "Comment": "", "URL": format!("/v1/blobs/{}", a.content.sha256),
                        "Size": a.size, "Avatar": false, "SHA": a.content.sha256, "NativeID": "",
                    })
                })
                .collect();
            json!({ "file": list })
        }
        _ => Value::Null,
    };
    Some(json!({
        "text": text,
        "channel": e.origin.channel.as_str(),
        "username": e.author.display_name,
        "userid": e.author.remote_id,
        "avatar": e.author.avatar.as_ref().map(switchboard_core::Avatar::url).unwrap_or_default(),
        "account": e.origin.account.to_string(),
        "event": event,
        "protocol": e.origin.account.network().as_str(),
        "gateway": item.gateway.as_str(),
        "parent_id": parent.unwrap_or_default(),
        "timestamp": e.at.format(&Rfc3339).unwrap_or_default(),
        "id": id,
        "Extra": extra,
    }))
}
