//! Sending: one outbound operation as Bot API calls, and what Telegram's
//! answers mean to the outbox.
//!
//! - Never dropped for its content: formatting Telegram refuses (a 400
//!   about entities) is sent once more as plain text (logged, and counted as
//!   `plain_text_resend`); a text or caption longer than Telegram takes is
//!   split, the rest following as messages.
//! - A success is a success: an `ok: true` answer whose `result` is not the
//!   documented shape (`true`, `null`) means the work was done; only a new
//!   message's id is read from it, and without one the message is still
//!   sent (later edits of it become copies). A delete whose message is gone
//!   is done.
//! - The bot removed from a chat, the chat gone, or no right to write there
//!   is the channel being down ([`SendError::channel_down`]), in Telegram's
//!   words: the lane waits and people are told, nothing is dead-lettered.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_core::{
    Attachment, AttachmentKind, ChannelId, EventKind, Host, Outbound, Receipt, Reference, RemoteId,
    RichText, SendError, TextUnit, DEFAULT_NICK_FORMAT,
};

use super::{
    num, remote, split_channel, TelegramAdapter, CALL_TIMEOUT, CAPTION_MAX, NICK_BUDGET, REACTIONS,
    STICKER_FORMATS, TEXT_MAX,
};
use crate::client::CallError;
use crate::convert;

/// Where an operation goes.
struct Dest<'a> {
    chat: i64,
    /// The forum topic.
    thread: Option<i64>,
    /// `<chat>` or `<chat>/<thread>`, for errors.
    channel: &'a ChannelId,
    /// The account's hub: files to upload, counters.
    host: &'a dyn Host,
}

impl TelegramAdapter {
    /// One outbound operation (see [`switchboard_core::Adapter::send`]).
    pub(super) async fn send_op(
        &self,
        host: &dyn Host,
        op: &Outbound,
    ) -> Result<Receipt, SendError> {
        let (chat, thread) = split_channel(&op.channel)?;
        let to = Dest {
            chat,
            thread,
            channel: &op.channel,
            host,
        };
        let template = op.nick_format.as_deref().unwrap_or(DEFAULT_NICK_FORMAT);
        let same_network = op.event.origin.account.network() == crate::NETWORK;
        let with_nick = |body: &RichText| -> RichText {
            switchboard_core::with_nick_within(template, op, body, NICK_BUDGET, TextUnit::Utf16)
        };
        let first_target = op.target.as_ref().map(|t| t.first().as_str().to_owned());
        match &op.event.kind {
            EventKind::Message {
                body,
                attachments,
                reply_to,
            } => {
                let text = with_nick(body);
                let reply = reply_to.as_ref().and(first_target.as_deref());
                if attachments.is_empty() {
                    let ids = self.send_text(&to, &text, same_network, reply).await?;
                    return Ok(Receipt { ids });
                }
                self.send_files(&to, &text, same_network, reply, attachments)
                    .await
            }
            EventKind::Notice { body } => {
                let ids = self.send_text(&to, body, false, None).await?;
                Ok(Receipt { ids })
            }
            EventKind::Edit { body, .. } => {
                let Some(target) = &op.target else {
                    // The hub turns such an edit into a copy; nothing to do.
                    return Ok(Receipt::none());
                };
                self.edit(&to, target, &with_nick(body), same_network)
                    .await?;
                Ok(Receipt::none())
            }
            EventKind::Delete { .. } => {
                let Some(target) = &op.target else {
                    return Ok(Receipt::none());
                };
                for id in &target.ids {
                    let params = json!({"chat_id": chat, "message_id": num(id)});
                    match self
                        .client
                        .call::<Value>("deleteMessage", &params, CALL_TIMEOUT)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if already_deleted(&e) => {}
                        Err(e) => return Err(classify(e, to.channel, to.thread)),
                    }
                }
                Ok(Receipt::none())
            }
            EventKind::Reaction { emoji, removed, .. } => {
                let Some(target) = &op.target else {
                    return Ok(Receipt::none());
                };
                // A bot holds one reaction per message: the latest wins,
                // and taking one back clears it.
                let reaction = if *removed {
                    json!([])
                } else {
                    json!([{"type": "emoji", "emoji": telegram_emoji(emoji)}])
                };
                let params = json!({"chat_id": chat, "message_id": num(target.first()), "reaction": reaction});
                self.client
                    .call::<Value>("setMessageReaction", &params, CALL_TIMEOUT)
                    .await
                    .map_err(|e| classify(e, to.channel, to.thread))?;
                Ok(Receipt::none())
            }
            // Joins and leaves are not posted into Telegram chats.
            _ => Ok(Receipt::none()),
        }
    }

    /// Calls a method carrying formatted text in `params` (its entities
    /// under `entities_key`). When Telegram refuses the formatting, the
    /// text goes once more without it: a message is never dropped for its
    /// styles.
    async fn call_formatted(
        &self,
        method: &str,
        mut params: Value,
        entities_key: &str,
        to: &Dest<'_>,
    ) -> Result<Value, CallError> {
        match self
            .client
            .call::<Value>(method, &params, CALL_TIMEOUT)
            .await
        {
            Err(CallError::Api {
                code: 400,
                description,
                ..
            }) if refuses_formatting(&description) => {
                tracing::warn!(account = %self.cfg.account, channel = %to.channel, method, %description, "Telegram refused the formatting; sending it again as plain text.");
                to.host.count("plain_text_resend");
                if let Some(p) = params.as_object_mut() {
                    p.remove(entities_key);
                }
                self.client
                    .call::<Value>(method, &params, CALL_TIMEOUT)
                    .await
            }
            other => other,
        }
    }

    /// Sends a text, split where it is longer than Telegram takes (the hub
    /// splits long texts already; this is for what still does not fit).
    async fn send_text(
        &self,
        to: &Dest<'_>,
        text: &RichText,
        same_network: bool,
        reply: Option<&str>,
    ) -> Result<Vec<RemoteId>, SendError> {
        let mut ids = Vec::new();
        for (i, piece) in fit(text, TEXT_MAX).iter().enumerate() {
            let mut params = json!({
                "chat_id": to.chat,
                "text": piece.text,
                "entities": convert::rich_to_entities(piece, same_network),
                "link_preview_options": {"is_disabled": true},
            });
            if let Some(t) = to.thread {
                params["message_thread_id"] = json!(t);
            }
            if let Some(r) = reply.filter(|_| i == 0).and_then(|r| r.parse::<i64>().ok()) {
                params["reply_parameters"] =
                    json!({"message_id": r, "allow_sending_without_reply": true});
            }
            let sent = self
                .call_formatted("sendMessage", params, "entities", to)
                .await
                .map_err(|e| classify(e, to.channel, to.thread))?;
            ids.extend(self.new_message_id(&sent, to));
        }
        Ok(ids)
    }

    /// The id of a message Telegram says it created. A success without one
    /// is still a success (the message was sent; sending it again would
    /// duplicate it): logged, and later edits of it become copies.
    fn new_message_id(&self, answer: &Value, to: &Dest<'_>) -> Option<RemoteId> {
        let id = answer.get("message_id").and_then(Value::as_i64).map(remote);
        if id.is_none() {
            tracing::warn!(account = %self.cfg.account, channel = %to.channel, answer = %answer, "Telegram accepted a message but named no message id; edits and replies will not find it.");
        }
        id
    }

    /// Edits a bridged copy. A text split over several messages is edited
    /// part by part; a media message's caption is its first file's. What
    /// does not fit the messages there are follows as new messages.
    async fn edit(
        &self,
        to: &Dest<'_>,
        target: &Reference,
        text: &RichText,
        same_network: bool,
    ) -> Result<(), SendError> {
        let media = matches!(&target.event.kind, EventKind::Message { attachments, .. } if !attachments.is_empty());
        let (method, key, entities_key, max, editable) = if media {
            (
                "editMessageCaption",
                "caption",
                "caption_entities",
                CAPTION_MAX,
                &target.ids[..1],
            )
        } else {
            (
                "editMessageText",
                "text",
                "entities",
                TEXT_MAX,
                &target.ids[..],
            )
        };
        let pieces = fit(text, max);
        for (id, piece) in editable.iter().zip(&pieces) {
            let mut params = json!({"chat_id": to.chat, "message_id": num(id)});
            params[key] = json!(piece.text);
            params[entities_key] = json!(convert::rich_to_entities(piece, same_network));
            match self.call_formatted(method, params, entities_key, to).await {
                Ok(_) => {}
                // The same edit again (a retry whose answer was lost).
                Err(CallError::Api {
                    code: 400,
                    description,
                    ..
                }) if description.contains("message is not modified") => {}
                Err(e) => return Err(classify(e, to.channel, to.thread)),
            }
        }
        for piece in pieces.iter().skip(editable.len()) {
            self.send_text(to, piece, same_network, None).await?;
        }
        Ok(())
    }

    /// Sends files: photos and videos together as albums, documents with
    /// documents, audio with audio (what `sendMediaGroup` allows), voice
    /// notes and stickers one by one. The caption goes with the first; one
    /// over Telegram's limit follows the files as a message, and before a
    /// sticker (which has none) it goes first.
    async fn send_files(
        &self,
        to: &Dest<'_>,
        caption: &RichText,
        same_network: bool,
        reply: Option<&str>,
        attachments: &[Attachment],
    ) -> Result<Receipt, SendError> {
        let mut groups: Vec<Vec<(&Attachment, &'static str)>> = Vec::new();
        let mut by_kind: HashMap<&'static str, usize> = HashMap::new();
        for a in attachments {
            let (method_kind, group) = media_kind(a);
            match group {
                Some(g) => {
                    let i = *by_kind.entry(g).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[i].push((a, method_kind));
                }
                None => groups.push(vec![(a, method_kind)]),
            }
        }
        let mut ids = Vec::new();
        let mut reply = reply;
        let mut caption = Some(caption).filter(|c| !c.text.is_empty());
        // A sticker has no caption: who sent it (and any text) goes first.
        let sticker_first = groups.first().is_some_and(|g| g[0].1 == "sticker");
        if let Some(c) = caption.filter(|_| sticker_first) {
            ids.extend(self.send_text(to, c, same_network, reply).await?);
            caption = None;
            reply = None;
        }
        // A caption longer than Telegram takes follows the files instead.
        let after = caption.filter(|c| c.len_in(TextUnit::Utf16) > CAPTION_MAX);
        if after.is_some() {
            caption = None;
        }
        for group in groups {
            for chunk in group.chunks(10) {
                let answer = match self
                    .send_chunk(to, chunk, caption, same_network, reply, true)
                    .await
                {
                    Err(ChunkError::Call(CallError::Api {
                        code: 400,
                        description,
                        ..
                    })) if caption.is_some() && refuses_formatting(&description) => {
                        tracing::warn!(account = %self.cfg.account, channel = %to.channel, %description, "Telegram refused a caption's formatting; sending it again as plain text.");
                        to.host.count("plain_text_resend");
                        self.send_chunk(to, chunk, caption, same_network, reply, false)
                            .await
                    }
                    other => other,
                }
                .map_err(|e| match e {
                    ChunkError::Call(e) => classify(e, to.channel, to.thread),
                    ChunkError::Blob(e) => e,
                })?;
                match answer {
                    Value::Array(list) => {
                        ids.extend(list.iter().filter_map(|m| self.new_message_id(m, to)));
                    }
                    one => ids.extend(self.new_message_id(&one, to)),
                }
                caption = None;
                reply = None;
            }
        }
        if let Some(text) = after {
            ids.extend(self.send_text(to, text, same_network, None).await?);
        }
        Ok(Receipt { ids })
    }

    /// One upload call: a single file with its method, or an album.
    async fn send_chunk(
        &self,
        to: &Dest<'_>,
        chunk: &[(&Attachment, &'static str)],
        caption: Option<&RichText>,
        same_network: bool,
        reply: Option<&str>,
        formatted: bool,
    ) -> Result<Value, ChunkError> {
        let host = to.host;
        let mut form = reqwest::multipart::Form::new().text("chat_id", to.chat.to_string());
        if let Some(t) = to.thread {
            form = form.text("message_thread_id", t.to_string());
        }
        if let Some(r) = reply {
            form = form.text(
                "reply_parameters",
                json!({"message_id": r.parse::<i64>().unwrap_or(0), "allow_sending_without_reply": true}).to_string(),
            );
        }
        let entities = caption
            .filter(|_| formatted)
            .map(|c| convert::rich_to_entities(c, same_network));
        let mut parts = Vec::with_capacity(chunk.len());
        for (a, _) in chunk {
            let bytes = host
                .blob(&a.content)
                .await
                .map_err(|e| ChunkError::Blob(SendError::transient(e.to_string(), None)))?
                .ok_or_else(|| {
                    ChunkError::Blob(SendError::permanent(format!(
                        "the file {} is no longer stored",
                        a.name
                    )))
                })?;
            let part = reqwest::multipart::Part::bytes(bytes)
                .file_name(a.name.clone())
                .mime_str(&a.mime)
                .unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
            parts.push(part);
        }
        if chunk.len() == 1 {
            let kind = chunk[0].1;
            form = form.part(kind.to_owned(), parts.pop().expect("one part"));
            if let Some(c) = caption.filter(|_| kind != "sticker") {
                form = form.text("caption", c.text.clone());
                if let Some(e) = &entities {
                    form = form.text("caption_entities", json!(e).to_string());
                }
            }
            let method = match kind {
                "photo" => "sendPhoto",
                "video" => "sendVideo",
                "audio" => "sendAudio",
                "voice" => "sendVoice",
                "sticker" => "sendSticker",
                _ => "sendDocument",
            };
            return self
                .client
                .call_multipart(method, form, upload_timeout(chunk))
                .await
                .map_err(ChunkError::Call);
        }
        let media: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| {
                let mut m = json!({"type": kind, "media": format!("attach://f{i}")});
                if let Some(c) = caption.filter(|_| i == 0) {
                    m["caption"] = json!(c.text);
                    if let Some(e) = &entities {
                        m["caption_entities"] = json!(e);
                    }
                }
                m
            })
            .collect();
        form = form.text("media", Value::Array(media).to_string());
        for (i, part) in parts.into_iter().enumerate() {
            form = form.part(format!("f{i}"), part);
        }
        self.client
            .call_multipart("sendMediaGroup", form, upload_timeout(chunk))
            .await
            .map_err(ChunkError::Call)
    }
}

/// Why an upload call failed: Telegram's answer, or the hub's blob store
/// (a file it no longer has, or cannot read now), already classified.
enum ChunkError {
    Call(CallError),
    Blob(SendError),
}

/// Whether a delete's refusal says the message is gone already: a retry
/// after an answer was lost, or deleted on Telegram. Done either way.
fn already_deleted(e: &CallError) -> bool {
    matches!(e, CallError::Api { code: 400, description, .. } if description.contains("message to delete not found"))
}

/// `text` in pieces of at most `max` UTF-16 units (itself when it fits).
fn fit(text: &RichText, max: usize) -> Vec<RichText> {
    if text.len_in(TextUnit::Utf16) <= max {
        return vec![text.clone()];
    }
    text.split_in(max, TextUnit::Utf16)
}

/// Whether a 400's description is about the text's formatting: TDLib's
/// `entity beginning at UTF-16 offset ...`, `can't parse entities: ...`
/// (parse_mode), `can't parse MessageEntity`, the servers' `ENTITY_*`.
fn refuses_formatting(description: &str) -> bool {
    let d = description.to_ascii_lowercase();
    d.contains("entity") || d.contains("entities")
}

/// Whether a 400 or 403 says the chat cannot be written to until someone
/// acts on Telegram: the bot removed or not a member, the chat gone, no
/// right to write, the user blocked the bot, the topic closed or gone.
fn channel_refusal(description: &str) -> bool {
    let d = description.to_ascii_lowercase();
    [
        "bot was kicked",
        "bot is not a member",
        "chat not found",
        "group chat was deleted",
        "not enough rights",
        "have no rights to send",
        "need administrator rights",
        "chat_write_forbidden",
        "bot was blocked by the user",
        "topic_closed",
        "message thread not found",
    ]
    .iter()
    .any(|words| d.contains(words))
}

/// What to send a file as: the multipart field / InputMedia type, and
/// which album it may share (`None`: sent alone).
fn media_kind(a: &Attachment) -> (&'static str, Option<&'static str>) {
    let photo_ok = matches!(a.mime.as_str(), "image/jpeg" | "image/png" | "image/webp")
        && a.size <= 10 * 1024 * 1024;
    match a.kind {
        AttachmentKind::Sticker if STICKER_FORMATS.contains(&a.mime.as_str()) => ("sticker", None),
        AttachmentKind::Image if photo_ok => ("photo", Some("visual")),
        AttachmentKind::Video => ("video", Some("visual")),
        AttachmentKind::Audio => ("audio", Some("audio")),
        AttachmentKind::Voice if a.mime == "audio/ogg" => ("voice", None),
        AttachmentKind::Voice => ("audio", Some("audio")),
        _ => ("document", Some("document")),
    }
}

fn upload_timeout(chunk: &[(&Attachment, &str)]) -> Duration {
    let bytes: u64 = chunk.iter().map(|(a, _)| a.size).sum();
    CALL_TIMEOUT + Duration::from_secs(bytes / (64 * 1024))
}

/// Telegram writes its reactions without U+FE0F ("❤", not "❤️").
fn telegram_emoji(e: &str) -> String {
    let bare = e.replace('\u{FE0F}', "");
    REACTIONS
        .iter()
        .find(|r| **r == bare)
        .map_or_else(|| e.to_owned(), |r| (*r).to_owned())
}

/// What the outbox should do after a failed call.
fn classify(e: CallError, channel: &ChannelId, thread: Option<i64>) -> SendError {
    let text = e.to_string();
    match e {
        CallError::Api {
            code: 429,
            retry_after,
            ..
        } => SendError::rate_limited(text, Some(Duration::from_secs(retry_after.unwrap_or(1)))),
        CallError::Api {
            migrate_to: Some(moved),
            ..
        } => match ChannelId::new(match thread {
            Some(t) => format!("{moved}/{t}"),
            None => moved.to_string(),
        }) {
            Ok(moved) => SendError::moved(text, moved),
            Err(_) => SendError::permanent(text),
        },
        // The token is wrong or revoked, or this is not a Bot API server:
        // every call fails alike.
        CallError::Api {
            code: 401 | 404, ..
        }
        | CallError::Connect(_) => {
            SendError::account_down(format!("{text} (sending to {channel})"), None)
        }
        // The channel is down, not the message bad: Telegram's own words
        // are what the admin reads in `status`.
        CallError::Api {
            code: 400 | 403,
            ref description,
            ..
        } if channel_refusal(description) => SendError::channel_down(text, None),
        CallError::Api { code, .. } if (400..500).contains(&code) => SendError::permanent(text),
        CallError::Api { .. } | CallError::Timeout(_) | CallError::Decode(_) => {
            SendError::transient(text, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::RetryKind;

    fn ch(s: &str) -> ChannelId {
        ChannelId::new(s).unwrap()
    }

    fn api(
        code: u16,
        description: &str,
        retry_after: Option<u64>,
        migrate_to: Option<i64>,
    ) -> CallError {
        CallError::Api {
            code,
            description: description.into(),
            retry_after,
            migrate_to,
        }
    }

    fn kind(e: CallError, channel: &str) -> RetryKind {
        let channel = ch(channel);
        let (_, thread) = split_channel(&channel).unwrap();
        classify(e, &channel, thread).retry_kind()
    }

    #[test]
    fn failures_are_classified_from_telegrams_answer() {
        let k = |e| kind(e, "-5");
        assert_eq!(
            k(api(429, "Too Many Requests: retry after 7", Some(7), None)),
            RetryKind::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            k(api(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                None,
                Some(-1009)
            )),
            RetryKind::Moved { to: ch("-1009") }
        );
        assert_eq!(
            kind(api(400, "Bad Request: x", None, Some(-1009)), "-5/3"),
            RetryKind::Moved { to: ch("-1009/3") }
        );
        assert_eq!(
            k(api(401, "Unauthorized", None, None)),
            RetryKind::AccountDown { retry_after: None }
        );
        assert_eq!(
            k(CallError::Connect("refused".into())),
            RetryKind::AccountDown { retry_after: None }
        );
        assert_eq!(
            k(api(400, "Bad Request: x", None, None)),
            RetryKind::Permanent
        );
        assert_eq!(
            k(api(403, "Forbidden: user is deactivated", None, None)),
            RetryKind::Permanent
        );
        assert_eq!(
            k(api(502, "Bad Gateway", None, None)),
            RetryKind::Transient { retry_after: None }
        );
        assert_eq!(
            k(CallError::Timeout("t".into())),
            RetryKind::Transient { retry_after: None }
        );
    }

    #[test]
    fn a_chat_the_bot_cannot_write_to_is_down_not_each_message_bad() {
        // The server's words (Client.cpp check_chat_access; TDLib's rights
        // errors as bot libraries' issue trackers quote them).
        for (code, description) in [
            (403, "Forbidden: bot was kicked from the supergroup chat"),
            (403, "Forbidden: bot was kicked from the group chat"),
            (403, "Forbidden: bot is not a member of the channel chat"),
            (403, "Forbidden: the group chat was deleted"),
            (403, "Forbidden: bot was blocked by the user"),
            (400, "Bad Request: chat not found"),
            (
                400,
                "Bad Request: not enough rights to send text messages to the chat",
            ),
            (
                400,
                "Bad Request: not enough rights to send photos to the chat",
            ),
            (
                400,
                "Bad Request: need administrator rights in the channel chat",
            ),
            (400, "Bad Request: have no rights to send a message"),
            (400, "Bad Request: TOPIC_CLOSED"),
        ] {
            assert_eq!(
                kind(api(code, description, None, None), "-5"),
                RetryKind::ChannelDown { retry_after: None },
                "{description}"
            );
        }
    }

    #[test]
    fn formatting_refusals_are_recognised() {
        for d in [
            "Bad Request: entity beginning at UTF-16 offset 0 ends after the end of the text at UTF-16 offset 12",
            "Bad Request: entity begins in a middle of a UTF-16 symbol at byte offset 4",
            "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 118",
            "Bad Request: can't parse MessageEntity: Unsupported type specified",
            "Bad Request: ENTITY_BOUNDS_INVALID",
        ] {
            assert!(refuses_formatting(d), "{d}");
        }
        assert!(!refuses_formatting("Bad Request: message is too long"));
        assert!(!refuses_formatting("Bad Request: chat not found"));
    }

    #[test]
    fn fixture_refusals_mean_what_they_say() {
        let text: String = include_str!("../../tests/fixtures/errors.json")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
        for case in cases {
            let body = case["body"].to_string();
            let status = case["body"]["error_code"].as_u64().unwrap() as u16;
            let e = crate::client::envelope(status, None, body.as_bytes()).unwrap_err();
            let description = match &e {
                CallError::Api { description, .. } => description.clone(),
                other => panic!("{other:?}"),
            };
            let k = kind(e.clone(), "-5");
            match case["expect"].as_str().unwrap() {
                "channel_down" => assert_eq!(k, RetryKind::ChannelDown { retry_after: None }),
                "formatting" => assert!(refuses_formatting(&description)),
                "done" => assert!(already_deleted(&e)),
                "moved" => assert!(matches!(k, RetryKind::Moved { .. })),
                "rate_limited" => assert_eq!(
                    k,
                    RetryKind::Transient {
                        retry_after: Some(Duration::from_secs(5))
                    }
                ),
                other => panic!("unknown expectation {other}"),
            }
        }
        // A success is a success: whatever its result.
        for body in [
            r#"{"ok":true,"result":true}"#,
            r#"{"ok":true,"result":null}"#,
            r#"{"ok":true}"#,
        ] {
            assert!(
                crate::client::envelope(200, None, body.as_bytes()).is_ok(),
                "{body}"
            );
        }
    }

    #[test]
    fn reactions_are_written_the_way_telegram_lists_them() {
        assert_eq!(telegram_emoji("❤\u{FE0F}"), "❤");
        assert_eq!(telegram_emoji("👍"), "👍");
    }

    #[test]
    fn long_texts_are_fitted_in_utf16_units() {
        let text = RichText::plain("😀".repeat(3000));
        let pieces = fit(&text, TEXT_MAX);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len_in(TextUnit::Utf16) <= TEXT_MAX));
        assert_eq!(fit(&RichText::plain("short"), CAPTION_MAX).len(), 1);
    }
}
