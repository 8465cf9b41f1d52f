//! How events look on the wire: the native shape (`/v1`, webhooks) and the
//! matterbridge shape (`/api`).

use base64::Engine;
use serde_json::{json, Map, Value};
use switchboard_core::{Event, EventKind, GatewayName, TargetRef};
use time::format_description::well_known::Rfc3339;

use crate::store::FeedItem;

fn target_json(t: &TargetRef) -> Value {
    match t {
        TargetRef::Event(id) => Value::String(id.to_string()),
        TargetRef::Remote(_) => Value::Null,
    }
}

/// The native JSON of an event. `cursor` is the feed position, absent for
/// webhook deliveries.
#[must_use]
pub fn native(event: &Event, gateway: &GatewayName, cursor: Option<i64>) -> Value {
    let mut m = Map::new();
    if let Some(c) = cursor {
        m.insert("cursor".into(), json!(c));
    }
    m.insert("gateway".into(), json!(gateway.as_str()));
    m.insert("id".into(), json!(event.id.to_string()));
    m.insert("type".into(), json!(event.kind.name()));
    m.insert(
        "origin".into(),
        json!({
            "account": event.origin.account.to_string(),
            "channel": event.origin.channel.as_str(),
            "remote_id": event.origin.remote_id.as_str(),
            "thread": event.origin.thread,
        }),
    );
    m.insert(
        "author".into(),
        json!({
            "id": event.author.remote_id,
            "name": event.author.display_name,
            "username": event.author.username,
            "avatar": event.author.avatar,
            "is_bot": event.author.is_bot,
        }),
    );
    m.insert(
        "at".into(),
        json!(event.at.format(&Rfc3339).unwrap_or_default()),
    );
    match &event.kind {
        EventKind::Message {
            body,
            attachments,
            reply_to,
        } => {
            m.insert("text".into(), json!(body.text));
            m.insert("spans".into(), json!(body.spans));
            m.insert(
                "reply_to".into(),
                reply_to.as_ref().map_or(Value::Null, target_json),
            );
            let files: Vec<Value> = attachments
                .iter()
                .map(|a| {
                    json!({
                        "kind": a.kind, "name": a.name, "mime": a.mime, "size": a.size,
                        "sha256": a.content.sha256,
                        "url": format!("/v1/blobs/{}", a.content.sha256),
                    })
                })
                .collect();
            m.insert("attachments".into(), Value::Array(files));
        }
        EventKind::Edit { target, body } => {
            m.insert("target".into(), target_json(target));
            m.insert("text".into(), json!(body.text));
            m.insert("spans".into(), json!(body.spans));
        }
        EventKind::Delete { target } => {
            m.insert("target".into(), target_json(target));
        }
        EventKind::Reaction {
            target,
            emoji,
            removed,
        } => {
            m.insert("target".into(), target_json(target));
            m.insert("emoji".into(), json!(emoji));
            m.insert("removed".into(), json!(removed));
        }
        EventKind::Membership { change } => {
            m.insert("change".into(), json!(change));
        }
        EventKind::Notice { body } => {
            m.insert("text".into(), json!(body.text));
        }
        _ => {}
    }
    Value::Object(m)
}

/// The native JSON of a feed row, as text.
#[must_use]
pub fn native_feed(item: &FeedItem) -> String {
    native(&item.event, &item.gateway, Some(item.seq)).to_string()
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
        "avatar": e.author.avatar.clone().unwrap_or_default(),
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
