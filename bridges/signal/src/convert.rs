//! signal-cli envelopes ↔ the normalized model, without I/O.
//!
//! A Signal message is identified by its author and its timestamp; the
//! remote id is `<author>:<timestamp>`, the author being the ACI (UUID)
//! where known, else the number. Quotes, reactions, deletes and edits name
//! their target the same way, so both directions find it in the map.

use serde_json::Value;
use switchboard_core::richtext::Utf16Span;
use switchboard_core::{
    AccountId, AttachmentKind, Author, ChannelId, EventKind, NewEvent, Origin, RemoteId, RichText,
    Span, Style, TargetRef,
};
use time::OffsetDateTime;

/// An attachment still to be fetched (`getAttachment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFile {
    /// signal-cli's attachment id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its MIME type.
    pub mime: String,
    /// What sort of file.
    pub kind: AttachmentKind,
}

/// An event built from an envelope, with the files it still needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The event, attachments still empty.
    pub event: NewEvent,
    /// Files to fetch.
    pub files: Vec<PendingFile>,
}

/// `<author>:<timestamp>`.
#[must_use]
pub fn message_id(author: &str, timestamp: i64) -> String {
    format!("{author}:{timestamp}")
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn remote(s: String) -> Option<RemoteId> {
    RemoteId::new(s).ok()
}

/// Styles and mentions (UTF-16 ranges) to rich text. Each mention's
/// placeholder (U+FFFC) becomes `@Name`, a mention span over it.
#[must_use]
pub fn body(text: &str, styles: Option<&Value>, mentions: Option<&Value>) -> RichText {
    let mut spans: Vec<Utf16Span> = Vec::new();
    for s in styles.and_then(Value::as_array).into_iter().flatten() {
        let style = match s.get("style").and_then(Value::as_str) {
            Some("BOLD") => Style::Bold,
            Some("ITALIC") => Style::Italic,
            Some("SPOILER") => Style::Spoiler,
            Some("STRIKETHROUGH") => Style::Strike,
            Some("MONOSPACE") => Style::Code,
            _ => continue,
        };
        if let (Some(start), Some(length)) = (
            s.get("start").and_then(Value::as_u64),
            s.get("length").and_then(Value::as_u64),
        ) {
            spans.push(Utf16Span {
                offset: start as usize,
                length: length as usize,
                style,
            });
        }
    }
    let mut rt = RichText::plain(text);
    for s in spans {
        if let Ok(one) = RichText::from_utf16(text, std::slice::from_ref(&s)) {
            rt.spans.extend(one.spans);
        }
    }
    // Mentions replace their placeholder, from the last to the first so the
    // earlier byte ranges stay valid.
    let mut ms: Vec<(Span, String)> = Vec::new();
    for m in mentions.and_then(Value::as_array).into_iter().flatten() {
        let who = str_of(m, "uuid")
            .or_else(|| str_of(m, "number"))
            .unwrap_or_default()
            .to_owned();
        let name = str_of(m, "name")
            .map(str::to_owned)
            .unwrap_or_else(|| who.clone());
        let (Some(start), Some(length)) = (
            m.get("start").and_then(Value::as_u64),
            m.get("length").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let u = Utf16Span {
            offset: start as usize,
            length: length as usize,
            style: Style::Mention { user_id: who },
        };
        if let Ok(one) = RichText::from_utf16(text, std::slice::from_ref(&u)) {
            ms.push((one.spans[0].clone(), name));
        }
    }
    ms.sort_by_key(|(s, _)| std::cmp::Reverse(s.start));
    for (span, name) in ms {
        let label = format!("@{name}");
        let (a, b) = (span.start, span.end);
        let delta = label.len() as isize - (b - a) as isize;
        rt.text.replace_range(a..b, &label);
        for s in &mut rt.spans {
            let shift = |x: usize| -> usize {
                if x >= b {
                    (x as isize + delta) as usize
                } else if x > a {
                    a + label.len()
                } else {
                    x
                }
            };
            s.start = shift(s.start);
            s.end = shift(s.end);
        }
        rt.spans.push(Span {
            start: a,
            end: a + label.len(),
            style: span.style,
        });
    }
    rt.spans.retain(|s| s.start < s.end);
    rt
}

/// Rich text to signal-cli's `textStyle` strings (`start:length:STYLE`).
#[must_use]
pub fn text_styles(rt: &RichText) -> Vec<String> {
    rt.to_utf16()
        .into_iter()
        .filter(|s| s.length > 0)
        .filter_map(|s| {
            let style = match s.style {
                Style::Bold => "BOLD",
                Style::Italic => "ITALIC",
                Style::Spoiler => "SPOILER",
                Style::Strike => "STRIKETHROUGH",
                Style::Code | Style::Pre { .. } => "MONOSPACE",
                _ => return None,
            };
            Some(format!("{}:{}:{style}", s.offset, s.length))
        })
        .collect()
}

fn kind_of(mime: &str) -> AttachmentKind {
    if mime.starts_with("image/") {
        AttachmentKind::Image
    } else if mime.starts_with("video/") {
        AttachmentKind::Video
    } else if mime.starts_with("audio/") {
        AttachmentKind::Audio
    } else {
        AttachmentKind::File
    }
}

/// One envelope (a notification's `params`, wrapped or not) as events.
/// Receipts, typing, calls, stories and sync messages (what the account
/// itself sent from another device) are not bridged: `None`.
#[must_use]
pub fn envelope_draft(account: &AccountId, own: &[String], params: &Value) -> Option<Draft> {
    let params = params.get("result").unwrap_or(params);
    let env = params.get("envelope")?;
    if params.get("exception").is_some() {
        return None;
    }
    let author_id = str_of(env, "sourceUuid")
        .or_else(|| str_of(env, "sourceNumber"))
        .or_else(|| str_of(env, "source"))?
        .to_owned();
    if own.iter().any(|o| o == &author_id)
        || str_of(env, "sourceNumber").is_some_and(|n| own.iter().any(|o| o == n))
    {
        return None;
    }
    let ts = env.get("timestamp").and_then(Value::as_i64)?;
    let name = str_of(env, "sourceName")
        .or_else(|| str_of(env, "sourceNumber"))
        .unwrap_or(&author_id)
        .to_owned();
    let author = Author {
        remote_id: author_id.clone(),
        display_name: name,
        username: str_of(env, "sourceNumber").map(str::to_owned),
        avatar: None,
        is_bot: false,
    };
    let (data, edit_target) = match (env.get("dataMessage"), env.get("editMessage")) {
        (Some(d), _) => (d, None),
        (None, Some(e)) => (
            e.get("dataMessage")?,
            e.get("targetSentTimestamp").and_then(Value::as_i64),
        ),
        _ => return None,
    };
    let channel = match data.get("groupInfo").and_then(|g| str_of(g, "groupId")) {
        Some(g) => g.to_owned(),
        None => str_of(env, "sourceNumber").unwrap_or(&author_id).to_owned(),
    };
    let origin = Origin {
        account: account.clone(),
        channel: ChannelId::new(channel).ok()?,
        remote_id: remote(message_id(&author_id, ts))?,
        thread: None,
    };
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let text = str_of(data, "message").unwrap_or_default();
    let rich = || body(text, data.get("textStyles"), data.get("mentions"));
    let event = |key: Option<String>, kind: EventKind| NewEvent {
        origin: origin.clone(),
        key,
        author: author.clone(),
        at,
        kind,
    };
    if let Some(target) = edit_target {
        let target = TargetRef::Remote(remote(message_id(&author_id, target))?);
        return Some(Draft {
            event: event(
                Some(format!("edit:{author_id}:{ts}")),
                EventKind::Edit {
                    target,
                    body: rich(),
                },
            ),
            files: Vec::new(),
        });
    }
    if let Some(r) = data.get("reaction") {
        let target_author = str_of(r, "targetAuthorUuid")
            .or_else(|| str_of(r, "targetAuthorNumber"))
            .or_else(|| str_of(r, "targetAuthor"))?;
        let target_ts = r.get("targetSentTimestamp").and_then(Value::as_i64)?;
        let removed = r.get("isRemove").and_then(Value::as_bool).unwrap_or(false);
        return Some(Draft {
            event: event(
                Some(format!("react:{author_id}:{ts}")),
                EventKind::Reaction {
                    target: TargetRef::Remote(remote(message_id(target_author, target_ts))?),
                    emoji: str_of(r, "emoji")?.to_owned(),
                    removed,
                },
            ),
            files: Vec::new(),
        });
    }
    if let Some(d) = data.get("remoteDelete") {
        let target_ts = d.get("timestamp").and_then(Value::as_i64)?;
        return Some(Draft {
            event: event(
                Some(format!("delete:{author_id}:{ts}")),
                EventKind::Delete {
                    by_moderator: false,
                    target: TargetRef::Remote(remote(message_id(&author_id, target_ts))?),
                },
            ),
            files: Vec::new(),
        });
    }
    let files: Vec<PendingFile> = data
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let mime = str_of(a, "contentType")
                .unwrap_or("application/octet-stream")
                .to_owned();
            Some(PendingFile {
                id: str_of(a, "id")?.to_owned(),
                name: str_of(a, "filename").unwrap_or("attachment").to_owned(),
                kind: kind_of(&mime),
                mime,
            })
        })
        .collect();
    let reply_to = data.get("quote").and_then(|q| {
        let who = str_of(q, "authorUuid")
            .or_else(|| str_of(q, "authorNumber"))
            .or_else(|| str_of(q, "author"))?;
        let id = q.get("id").and_then(Value::as_i64)?;
        Some(TargetRef::Remote(remote(message_id(who, id))?))
    });
    let mut rich = rich();
    // A sticker's image lives in its pack, which the JSON-RPC API does not
    // serve: say that one was sent.
    if rich.text.is_empty() && files.is_empty() && data.get("sticker").is_some() {
        rich = RichText::plain("[sticker]");
    }
    if rich.text.is_empty() && files.is_empty() {
        return None;
    }
    Some(Draft {
        event: event(
            None,
            EventKind::Message {
                body: rich,
                attachments: Vec::new(),
                reply_to,
            },
        ),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn acct() -> AccountId {
        "signal.main".parse().unwrap()
    }

    #[test]
    fn a_group_message_with_quote_mention_style_and_file() {
        // The reference's example, as the daemon serializes it.
        let v: Value = serde_json::from_str(r#"{"envelope":{"source":"+15550000002","sourceNumber":"+15550000002","sourceUuid":"6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11","sourceName":"Alice","sourceDevice":2,"timestamp":1732480000001,"dataMessage":{"timestamp":1732480000001,"message":"hey \uFFFC look","expiresInSeconds":0,"viewOnce":false,"quote":{"id":1732479940000,"author":"+15550000001","authorNumber":"+15550000001","authorUuid":"0b7d5f7e-1111-4222-8333-944455556666","text":"earlier message","attachments":[]},"mentions":[{"name":"Bridge","number":"+15550000001","uuid":"0b7d5f7e-1111-4222-8333-944455556666","start":4,"length":1}],"attachments":[{"contentType":"image/png","filename":"cat.png","id":"Xb3k.png","size":20480}],"textStyles":[{"style":"BOLD","start":0,"length":3}],"groupInfo":{"groupId":"mJ8c0YQ4d3yq3bq1p8m2x1l2cYQ4d3yq3bq1p8m2x1k=","groupName":"Bridge Test","revision":3,"type":"DELIVER"}}},"account":"+15550000001"}"#).unwrap();
        let d = envelope_draft(&acct(), &[], &v).unwrap();
        assert_eq!(
            d.event.origin.channel.as_str(),
            "mJ8c0YQ4d3yq3bq1p8m2x1l2cYQ4d3yq3bq1p8m2x1k="
        );
        assert_eq!(
            d.event.origin.remote_id.as_str(),
            "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11:1732480000001"
        );
        assert_eq!(d.event.author.display_name, "Alice");
        assert_eq!(d.files[0].id, "Xb3k.png");
        let EventKind::Message { body, reply_to, .. } = &d.event.kind else {
            panic!()
        };
        assert_eq!(body.text, "hey @Bridge look");
        let bold = body.spans.iter().find(|s| s.style == Style::Bold).unwrap();
        assert_eq!(&body.text[bold.start..bold.end], "hey");
        let m = body
            .spans
            .iter()
            .find(|s| matches!(s.style, Style::Mention { .. }))
            .unwrap();
        assert_eq!(&body.text[m.start..m.end], "@Bridge");
        assert_eq!(
            reply_to,
            &Some(TargetRef::Remote(
                RemoteId::new("0b7d5f7e-1111-4222-8333-944455556666:1732479940000").unwrap()
            ))
        );
    }

    #[test]
    fn reactions_deletes_edits_and_what_is_not_bridged() {
        let env = |extra: Value| {
            let mut e = json!({"sourceNumber": "+1555", "sourceUuid": "u2", "sourceName": "Al", "timestamp": 1_732_480_000_005_i64});
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            json!({ "envelope": e })
        };
        let r = envelope_draft(&acct(), &[], &env(json!({"dataMessage": {"timestamp": 1, "message": null, "reaction": {"emoji": "👍", "targetAuthorUuid": "u9", "targetSentTimestamp": 1732480000000_i64, "isRemove": true}}}))).unwrap();
        assert_eq!(
            r.event.kind,
            EventKind::Reaction {
                target: TargetRef::Remote(RemoteId::new("u9:1732480000000").unwrap()),
                emoji: "👍".into(),
                removed: true
            }
        );
        let d = envelope_draft(&acct(), &[], &env(json!({"dataMessage": {"timestamp": 1, "message": null, "remoteDelete": {"timestamp": 1732480000000_i64}}}))).unwrap();
        assert_eq!(
            d.event.kind,
            EventKind::Delete {
                by_moderator: false,
                target: TargetRef::Remote(RemoteId::new("u2:1732480000000").unwrap())
            }
        );
        let e = json!({"envelope": {"sourceNumber": "+1555", "sourceUuid": "u2", "timestamp": 1732480000009_i64, "editMessage": {"targetSentTimestamp": 1732480000000_i64, "dataMessage": {"timestamp": 1732480000009_i64, "message": "fixed"}}}});
        let e = envelope_draft(&acct(), &[], &e).unwrap();
        assert!(matches!(e.event.kind, EventKind::Edit { .. }));
        assert_ne!(e.event.key, d.event.key);
        let sticker = json!({"envelope": {"sourceNumber": "+1555", "sourceUuid": "u2", "timestamp": 1_732_480_000_012_i64, "dataMessage": {"timestamp": 1, "message": null, "sticker": {"packId": "ab", "stickerId": 3}}}});
        let s = envelope_draft(&acct(), &[], &sticker).unwrap();
        assert!(
            matches!(&s.event.kind, EventKind::Message { body, .. } if body.text == "[sticker]")
        );
        let typing = json!({"envelope": {"sourceNumber": "+1555", "timestamp": 1732480000010_i64, "typingMessage": {"action": "STARTED"}}});
        assert!(envelope_draft(&acct(), &[], &typing).is_none());
        let sync = json!({"envelope": {"sourceNumber": "+1000", "sourceUuid": "me", "timestamp": 1732480000011_i64, "syncMessage": {"sentMessage": {"message": "x"}}}});
        assert!(envelope_draft(&acct(), &["me".into()], &sync).is_none());
    }

    #[test]
    fn styles_go_out_in_utf16() {
        let rt = RichText {
            text: "😀 bold".into(),
            spans: vec![Span {
                start: 5,
                end: 9,
                style: Style::Bold,
            }],
        };
        assert_eq!(text_styles(&rt), ["3:4:BOLD"]);
    }

    fn signal_styles() -> impl proptest::strategy::Strategy<Value = Style> + Clone {
        proptest::sample::select(vec![
            Style::Bold,
            Style::Italic,
            Style::Spoiler,
            Style::Strike,
            Style::Code,
        ])
    }

    proptest::proptest! {
        /// Signal's five styles survive `textStyle` (UTF-16 offsets) and
        /// the envelope's `textStyles` back: the same characters styled.
        #[test]
        fn rich_text_round_trips_through_text_styles(
            rt in switchboard_core::arb::rich_text(signal_styles())
        ) {
            let wire: Vec<Value> = text_styles(&rt)
                .iter()
                .map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let start: u64 = parts.next().unwrap().parse().unwrap();
                    let length: u64 = parts.next().unwrap().parse().unwrap();
                    json!({"start": start, "length": length, "style": parts.next().unwrap()})
                })
                .collect();
            let back = body(&rt.text, Some(&Value::Array(wire)), None);
            proptest::prop_assert_eq!(back.text.as_str(), rt.text.as_str());
            proptest::prop_assert_eq!(
                switchboard_core::arb::coverage(&back),
                switchboard_core::arb::coverage(&rt)
            );
        }
    }
}
