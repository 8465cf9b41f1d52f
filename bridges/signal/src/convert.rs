//! signal-cli envelopes ↔ the normalized model, without I/O.
//!
//! A Signal message is identified by its author and its timestamp; the
//! remote id is `<author>:<timestamp>`, the author being the ACI (UUID)
//! where known, else the number. Quotes, reactions, deletes and edits name
//! their target the same way, so both directions find it in the map; a
//! target that names the account itself only by its number is taken as its
//! ACI, the id its own messages are recorded under.
//!
//! # People's names, never their numbers
//! signal-cli names people by phone number where it knows one (a mention's
//! `name`, `source`). No number reaches another network's people: an author
//! or a mention is shown by the envelope's `sourceName`, else the contact's
//! or profile name the adapter knows, else a neutral label (`Signal user
//! 6a1f`, from the ACI, so two strangers stay apart). An admin who wants
//! numbers shown sets `show_numbers` on the account.
//!
//! # What is not bridged as it is
//! - A long text (over 2,000 bytes) travels as a `text/x-signal-plain`
//!   attachment: signal-cli 0.13 puts the first 2,000 bytes in `message`,
//!   0.14 the whole text, and both list the attachment. [`long_text_id`]
//!   finds it and [`set_long_text`] makes the fetched text the message and
//!   drops the attachment, so the text arrives once and no file does.
//! - View-once media is not copied (a copy would be permanent): a line says
//!   one was sent.
//! - A disappearing message's timer is reported ([`Draft::expires_in`]) so
//!   the adapter can say once that copies elsewhere do not disappear.

use serde_json::Value;
use switchboard_core::richtext::Utf16Span;
use switchboard_core::{
    not_bridged, push_line, AccountId, AttachmentKind, Author, ChannelId, EventKind, NewEvent,
    Origin, RemoteId, RichText, Span, Style, TargetRef,
};
use time::OffsetDateTime;

/// The MIME type of a long text's attachment (signal-cli's `MimeUtils.LONG_TEXT`).
pub const LONG_TEXT: &str = "text/x-signal-plain";

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
    /// Its size as the envelope gives it.
    pub size: Option<u64>,
}

/// An event built from an envelope, with the files it still needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The event, attachments still empty.
    pub event: NewEvent,
    /// Files to fetch.
    pub files: Vec<PendingFile>,
    /// Someone (the author or a mention) was shown by a neutral label: no
    /// name was known for them.
    pub unnamed: bool,
    /// The message's disappearing timer in seconds (0: none).
    pub expires_in: u64,
}

/// A known name (contact or profile) by ACI, then number.
pub type NameOf<'a> = &'a dyn Fn(Option<&str>, Option<&str>) -> Option<String>;

/// A person's label by ACI and number, and whether a name was known.
type Label<'a> = &'a dyn Fn(Option<&str>, Option<&str>) -> (String, bool);

/// What a conversion needs to know besides the envelope.
pub struct Context<'a> {
    /// The account.
    pub account: &'a AccountId,
    /// The account's own ids: its number, then its ACI once known.
    pub own: &'a [String],
    /// Show numbers where no name is known (`show_numbers`).
    pub show_numbers: bool,
    /// A known name (contact or profile) by ACI, then number.
    pub name_of: NameOf<'a>,
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

/// The label for someone with no known name: the number when the admin
/// opted in, else "Signal user" and the start of their ACI.
#[must_use]
pub fn neutral_label(uuid: Option<&str>, number: Option<&str>, show_numbers: bool) -> String {
    match (number, uuid) {
        (Some(n), _) if show_numbers => n.to_owned(),
        (_, Some(u)) if u.len() >= 4 && u.is_char_boundary(4) => format!("Signal user {}", &u[..4]),
        _ => "Signal user".to_owned(),
    }
}

impl Context<'_> {
    /// A person's label and whether a name was known.
    fn label(&self, uuid: Option<&str>, number: Option<&str>) -> (String, bool) {
        match (self.name_of)(uuid, number) {
            Some(name) if !name.is_empty() => (name, true),
            _ => (neutral_label(uuid, number, self.show_numbers), false),
        }
    }

    /// The id a referenced message's author has: the ACI, else the number,
    /// and the account's own ACI for its own number.
    fn author_id(&self, uuid: Option<&str>, number: Option<&str>) -> Option<String> {
        if let Some(u) = uuid {
            return Some(u.to_owned());
        }
        let n = number?;
        if self.own.first().is_some_and(|me| me == n) {
            return self.own.last().cloned();
        }
        Some(n.to_owned())
    }
}

/// Styles and mentions (UTF-16 ranges) to rich text. Each mention's
/// placeholder (U+FFFC) becomes `@Label`, a mention span over it, the label
/// from `label(uuid, number)`. Returns the text and whether every mentioned
/// person had a known name.
fn rich_body(
    text: &str,
    styles: Option<&Value>,
    mentions: Option<&Value>,
    label: Label<'_>,
) -> (RichText, bool) {
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
    let mut named = true;
    let mut ms: Vec<(Span, String)> = Vec::new();
    for m in mentions.and_then(Value::as_array).into_iter().flatten() {
        let (uuid, number) = (str_of(m, "uuid"), str_of(m, "number"));
        // `name` is signal-cli's legacy identifier (the number when known):
        // never shown.
        let Some(who) = uuid.or(number) else { continue };
        let (name, known) = label(uuid, number);
        named &= known;
        let (Some(start), Some(length)) = (
            m.get("start").and_then(Value::as_u64),
            m.get("length").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let u = Utf16Span {
            offset: start as usize,
            length: length as usize,
            style: Style::Mention {
                user_id: who.to_owned(),
            },
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
    (rt, named)
}

/// Styles and mentions (UTF-16 ranges) to rich text, each mention shown by
/// a neutral label (see [`Context`] for names).
#[must_use]
pub fn body(text: &str, styles: Option<&Value>, mentions: Option<&Value>) -> RichText {
    rich_body(text, styles, mentions, &|u, n| {
        (neutral_label(u, n, false), false)
    })
    .0
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

/// The dataMessage of a notification's params (wrapped or not), in a
/// `dataMessage` or an `editMessage`.
fn data_message_mut(params: &mut Value) -> Option<&mut Value> {
    let params = if params.get("result").is_some() {
        params.get_mut("result")?
    } else {
        params
    };
    let env = params.get_mut("envelope")?;
    if env.get("dataMessage").is_some() {
        env.get_mut("dataMessage")
    } else {
        env.get_mut("editMessage")?.get_mut("dataMessage")
    }
}

/// The attachment id of a long text's `text/x-signal-plain` attachment in
/// this notification, if it has one.
#[must_use]
pub fn long_text_id(params: &Value) -> Option<String> {
    let params = params.get("result").unwrap_or(params);
    let env = params.get("envelope")?;
    let data = env
        .get("dataMessage")
        .or_else(|| env.get("editMessage")?.get("dataMessage"))?;
    data.get("attachments")?
        .as_array()?
        .iter()
        .find(|a| str_of(a, "contentType") == Some(LONG_TEXT))
        .and_then(|a| str_of(a, "id"))
        .map(str::to_owned)
}

/// Makes `text` (the long text's attachment, fetched) the message and drops
/// the attachment; with `None` (it could not be fetched) keeps the message
/// signal-cli gave and drops the attachment all the same.
pub fn set_long_text(params: &mut Value, text: Option<&str>) {
    let Some(data) = data_message_mut(params) else {
        return;
    };
    if let Some(list) = data.get_mut("attachments").and_then(Value::as_array_mut) {
        list.retain(|a| str_of(a, "contentType") != Some(LONG_TEXT));
    }
    if let Some(text) = text {
        data["message"] = Value::String(text.to_owned());
    }
}

/// One envelope (a notification's `params`, wrapped or not) as events,
/// people shown by neutral labels. Receipts, typing, calls, stories and
/// sync messages (what the account itself sent from another device) are
/// not bridged: `None`.
#[must_use]
pub fn envelope_draft(account: &AccountId, own: &[String], params: &Value) -> Option<Draft> {
    draft(
        &Context {
            account,
            own,
            show_numbers: false,
            name_of: &|_, _| None,
        },
        params,
    )
}

/// As [`envelope_draft`], with names and the account's settings.
#[must_use]
pub fn draft(cx: &Context<'_>, params: &Value) -> Option<Draft> {
    let params = params.get("result").unwrap_or(params);
    let env = params.get("envelope")?;
    if params.get("exception").is_some() {
        return None;
    }
    let (source_uuid, source_number) = (str_of(env, "sourceUuid"), str_of(env, "sourceNumber"));
    let author_id = source_uuid
        .or(source_number)
        .or_else(|| str_of(env, "source"))?
        .to_owned();
    let own = cx.own;
    if own.iter().any(|o| o == &author_id)
        || source_number.is_some_and(|n| own.iter().any(|o| o == n))
    {
        return None;
    }
    let ts = env.get("timestamp").and_then(Value::as_i64)?;
    let (name, mut named) = match str_of(env, "sourceName") {
        Some(n) => (n.to_owned(), true),
        None => cx.label(source_uuid, source_number),
    };
    let author = Author {
        remote_id: author_id.clone(),
        display_name: name,
        username: source_number.filter(|_| cx.show_numbers).map(str::to_owned),
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
        None => source_number.unwrap_or(&author_id).to_owned(),
    };
    let origin = Origin {
        account: cx.account.clone(),
        channel: ChannelId::new(channel).ok()?,
        remote_id: remote(message_id(&author_id, ts))?,
        thread: None,
    };
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let text = str_of(data, "message").unwrap_or_default();
    let label = |u: Option<&str>, n: Option<&str>| cx.label(u, n);
    let (rich, mentions_named) =
        rich_body(text, data.get("textStyles"), data.get("mentions"), &label);
    let expires_in = data
        .get("expiresInSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let plain = |event: NewEvent| Draft {
        event,
        files: Vec::new(),
        unnamed: !named,
        expires_in: 0,
    };
    let event = |key: Option<String>, kind: EventKind| NewEvent {
        origin: origin.clone(),
        key,
        author: author.clone(),
        at,
        kind,
    };
    if let Some(target) = edit_target {
        let target = TargetRef::Remote(remote(message_id(&author_id, target))?);
        let mut d = plain(event(
            Some(format!("edit:{author_id}:{ts}")),
            EventKind::Edit { target, body: rich },
        ));
        d.unnamed |= !mentions_named;
        return Some(d);
    }
    if let Some(r) = data.get("reaction") {
        let target_author = cx
            .author_id(
                str_of(r, "targetAuthorUuid"),
                str_of(r, "targetAuthorNumber"),
            )
            .or_else(|| str_of(r, "targetAuthor").map(str::to_owned))?;
        let target_ts = r.get("targetSentTimestamp").and_then(Value::as_i64)?;
        let removed = r.get("isRemove").and_then(Value::as_bool).unwrap_or(false);
        return Some(plain(event(
            Some(format!("react:{author_id}:{ts}")),
            EventKind::Reaction {
                target: TargetRef::Remote(remote(message_id(&target_author, target_ts))?),
                emoji: str_of(r, "emoji")?.to_owned(),
                removed,
            },
        )));
    }
    if let Some(d) = data.get("remoteDelete") {
        let target_ts = d.get("timestamp").and_then(Value::as_i64)?;
        return Some(plain(event(
            Some(format!("delete:{author_id}:{ts}")),
            EventKind::Delete {
                by_moderator: false,
                target: TargetRef::Remote(remote(message_id(&author_id, target_ts))?),
            },
        )));
    }
    named &= mentions_named;
    let view_once = data
        .get("viewOnce")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut files: Vec<PendingFile> = data
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        // A long text's attachment is its message (see `set_long_text`).
        .filter(|a| str_of(a, "contentType") != Some(LONG_TEXT))
        .filter_map(|a| {
            let mime = str_of(a, "contentType")
                .unwrap_or("application/octet-stream")
                .to_owned();
            let kind = kind_of(&mime);
            Some(PendingFile {
                id: str_of(a, "id")?.to_owned(),
                name: str_of(a, "filename")
                    .map(str::to_owned)
                    .unwrap_or_else(|| default_name(kind).to_owned()),
                kind,
                mime,
                size: a.get("size").and_then(Value::as_u64),
            })
        })
        .collect();
    let reply_to = data.get("quote").and_then(|q| {
        let who = cx
            .author_id(str_of(q, "authorUuid"), str_of(q, "authorNumber"))
            .or_else(|| str_of(q, "author").map(str::to_owned))?;
        let id = q.get("id").and_then(Value::as_i64)?;
        Some(TargetRef::Remote(remote(message_id(&who, id))?))
    });
    let mut rich = rich;
    // View-once media shows once on Signal; a bridged copy would stay.
    if view_once {
        for f in files.drain(..) {
            let line = not_bridged(&f.name, f.size, "view-once media, shown only on Signal");
            push_line(&mut rich, &line);
        }
    }
    // A sticker's image lives in its pack, which the JSON-RPC API does not
    // serve: say that one was sent.
    if rich.text.is_empty() && files.is_empty() && data.get("sticker").is_some() {
        rich = RichText::plain("[sticker]");
    }
    // Nothing to show: a timer change, a profile key update, something
    // newer; a timer change still counts (the adapter may have to say it).
    if rich.text.is_empty() && files.is_empty() && expires_in == 0 {
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
        unnamed: !named,
        expires_in,
    })
}

/// A name for a file that came without one.
fn default_name(kind: AttachmentKind) -> &'static str {
    match kind {
        AttachmentKind::Image => "photo",
        AttachmentKind::Video => "video",
        AttachmentKind::Audio | AttachmentKind::Voice => "audio",
        _ => "file",
    }
}

/// How long a disappearing message lives, for people: `1 week`, `8 hours`.
#[must_use]
pub fn timer_words(seconds: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (7 * 24 * 3600, "week"),
        (24 * 3600, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    for (size, unit) in UNITS {
        if seconds >= size && seconds.is_multiple_of(size) {
            let n = seconds / size;
            return format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{seconds} seconds")
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
        // signal-cli fills a mention's `name` with the number: never shown.
        let neutral = envelope_draft(&acct(), &[], &v).unwrap();
        let EventKind::Message { body, .. } = &neutral.event.kind else {
            panic!()
        };
        assert_eq!(body.text, "hey @Signal user 0b7d look");
        assert!(neutral.unnamed);
        let a = acct();
        let names = |u: Option<&str>, _: Option<&str>| {
            (u == Some("0b7d5f7e-1111-4222-8333-944455556666")).then(|| "Bridge".to_owned())
        };
        let cx = Context {
            account: &a,
            own: &[],
            show_numbers: false,
            name_of: &names,
        };
        let d = draft(&cx, &v).unwrap();
        assert!(!d.unnamed);
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

    fn from_alice(data: Value) -> Value {
        json!({"envelope": {"source": "+15550000002", "sourceNumber": "+15550000002", "sourceUuid": "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11",
            "sourceName": null, "sourceDevice": 1, "timestamp": 1_732_480_000_001_i64, "dataMessage": data}, "account": "+15550000001"})
    }

    #[test]
    fn no_phone_number_reaches_other_networks_unless_asked() {
        let v = from_alice(
            json!({"timestamp": 1, "message": "hi \u{FFFC}", "expiresInSeconds": 0, "viewOnce": false,
            "mentions": [{"name": "+15550000003", "number": "+15550000003", "uuid": null, "start": 3, "length": 1}]}),
        );
        let a = acct();
        let none = |_: Option<&str>, _: Option<&str>| None;
        let cx = |show_numbers| Context {
            account: &a,
            own: &[],
            show_numbers,
            name_of: &none,
        };
        let d = draft(&cx(false), &v).unwrap();
        assert_eq!(d.event.author.display_name, "Signal user 6a1f");
        assert_eq!(d.event.author.username, None);
        let EventKind::Message { body, .. } = &d.event.kind else {
            panic!()
        };
        assert_eq!(body.text, "hi @Signal user");
        let d = draft(&cx(true), &v).unwrap();
        assert_eq!(d.event.author.display_name, "+15550000002");
        assert_eq!(d.event.author.username.as_deref(), Some("+15550000002"));
        let EventKind::Message { body, .. } = &d.event.kind else {
            panic!()
        };
        assert_eq!(body.text, "hi @+15550000003");
    }

    #[test]
    fn long_texts_view_once_timers_and_the_accounts_own_number() {
        // 0.13: the first 2,000 bytes inline, the whole text attached.
        let full = "x".repeat(2500);
        let mut v = from_alice(
            json!({"timestamp": 1, "message": &full[..2000], "expiresInSeconds": 0, "viewOnce": false,
            "attachments": [{"contentType": "text/x-signal-plain", "filename": null, "id": "long.txt", "size": 2500}]}),
        );
        assert_eq!(long_text_id(&v).as_deref(), Some("long.txt"));
        set_long_text(&mut v, Some(&full));
        let d = envelope_draft(&acct(), &[], &v).unwrap();
        assert!(d.files.is_empty());
        assert!(matches!(&d.event.kind, EventKind::Message { body, .. } if body.text == full));
        // View-once media is named, not copied.
        let v = from_alice(
            json!({"timestamp": 1, "message": null, "expiresInSeconds": 0, "viewOnce": true,
            "attachments": [{"contentType": "image/jpeg", "filename": null, "id": "a.jpg", "size": 2048}]}),
        );
        let d = envelope_draft(&acct(), &[], &v).unwrap();
        assert!(d.files.is_empty());
        assert!(matches!(&d.event.kind, EventKind::Message { body, .. }
            if body.text == "[file not bridged: photo (2 KiB): view-once media, shown only on Signal]"));
        // A timer change alone is kept for the adapter to say.
        let v = from_alice(
            json!({"timestamp": 1, "message": null, "expiresInSeconds": 604800, "viewOnce": false}),
        );
        assert_eq!(
            envelope_draft(&acct(), &[], &v).unwrap().expires_in,
            604_800
        );
        assert_eq!(timer_words(604_800), "1 week");
        assert_eq!(timer_words(90), "90 seconds");
        // A reaction naming the account by number only: its ACI.
        let v = from_alice(
            json!({"timestamp": 1, "message": null, "expiresInSeconds": 0, "viewOnce": false,
            "reaction": {"emoji": "👍", "targetAuthor": "+15550000001", "targetAuthorNumber": "+15550000001", "targetAuthorUuid": null,
                "targetSentTimestamp": 1_732_480_000_000_i64, "isRemove": false}}),
        );
        let own = [
            "+15550000001".to_owned(),
            "0b7d5f7e-1111-4222-8333-944455556666".to_owned(),
        ];
        let d = envelope_draft(&acct(), &own, &v).unwrap();
        assert_eq!(
            d.event.kind.target(),
            Some(&TargetRef::Remote(
                RemoteId::new("0b7d5f7e-1111-4222-8333-944455556666:1732480000000").unwrap()
            ))
        );
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
