//! Sending: one outbound operation becomes the Matrix events that render
//! it, each under a transaction id made from the outbox's idempotency key.
//!
//! # Who wrote it
//! In appservice mode the author's ghost sends. In bot mode the relay bot
//! sends, and every message event carries the author's per-message profile
//! (MSC4144, under its unstable name `com.beeper.per_message_profile`):
//! clients that show it put the author's name and avatar on the message;
//! for the others the text keeps the gateway's `nick_format` prefix as the
//! fallback (`has_fallback`), marked so that the first kind removes it. A
//! file without text carries the prefix as its caption, a sticker in its
//! description. The author's avatar is uploaded once (remembered by its
//! hash in the account's state) and named by every profile after.
//!
//! # Pace
//! Every event the relay bot sends, and every answer, feeds its
//! [`Pacer`](crate::pacer::Pacer); the outbox spaces the account's sends
//! by it (see [`MatrixAdapter`]'s capabilities).

use std::time::Instant;

use ruma::api::client as api;
use ruma::events::room::message::{FormattedBody, MessageType, RoomMessageEventContent};
use ruma::events::MessageLikeEventContent;
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedTransactionId, UserId};
use serde_json::{json, Value};
use switchboard_core::{
    Attachment, AttachmentKind, Avatar, Event, EventKind, Host, Network, Outbound, Receipt,
    RichText, SendError, DEFAULT_NICK_FORMAT,
};

use crate::adapter::{txn, MatrixAdapter, MAX_JSON, SEND_TIMEOUT};
use crate::client::MxError;
use crate::config::Mode;
use crate::convert;

pub use crate::convert::PROFILE_KEY;

/// A per-message profile (MSC4144): who a relayed message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Stable per remote author: `<account>/<their id on it>`.
    pub id: String,
    /// The author's name.
    pub displayname: String,
    /// The author's picture, uploaded to the homeserver.
    pub avatar_url: Option<OwnedMxcUri>,
}

impl Profile {
    /// The field's value; `has_fallback`: the event's text starts with the
    /// prefix that names the author (for clients that do not show
    /// profiles).
    #[must_use]
    pub fn json(&self, has_fallback: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "displayname": self.displayname,
            "has_fallback": has_fallback,
        });
        if let Some(url) = &self.avatar_url {
            v["avatar_url"] = json!(url.as_str());
        }
        v
    }
}

/// `s` cut to at most `max` bytes at a character boundary (MSC4144 limits
/// `id` and `displayname` to 255 bytes).
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// An uploaded file: its URI, and its size in pixels when it is an image.
pub(crate) struct Uploaded {
    pub(crate) mxc: OwnedMxcUri,
    pub(crate) dims: Option<(u32, u32)>,
}

/// Who a relayed message is from, as the relay bot writes it.
struct Speaker {
    /// The gateway's `nick_format` prefix, as text.
    prefix: String,
    profile: Profile,
}

impl MatrixAdapter {
    /// Sends one content as `sender` (None: the account itself), with a
    /// per-message profile when given (also inside an edit's new content).
    pub(crate) async fn send_content<C>(
        &self,
        room: &OwnedRoomId,
        sender: Option<&UserId>,
        content: &C,
        txn_id: OwnedTransactionId,
        profile: Option<Value>,
    ) -> Result<OwnedEventId, MxError>
    where
        C: MessageLikeEventContent,
    {
        let mut body = serde_json::to_value(content).map_err(|e| MxError::Build(e.to_string()))?;
        if let Some(p) = profile {
            if body.get("m.new_content").is_some() {
                body["m.new_content"][PROFILE_KEY] = p.clone();
            }
            body[PROFILE_KEY] = p;
        }
        let raw = serde_json::value::to_raw_value(&body)
            .map(Raw::from_json)
            .map_err(|e| MxError::Build(e.to_string()))?;
        let req = api::message::send_message_event::v3::Request::new_raw(
            room.clone(),
            txn_id,
            content.event_type(),
            raw,
        );
        let r = self.client.call(req, sender, SEND_TIMEOUT, MAX_JSON).await;
        self.paced(sender, &r);
        Ok(r?.event_id)
    }

    /// Feeds the relay bot's pacer with the homeserver's answer to one of
    /// its events.
    fn paced<T>(&self, sender: Option<&UserId>, r: &Result<T, MxError>) {
        if sender.is_some() || !self.is_bot() {
            return;
        }
        let now = Instant::now();
        let mut pacer = self.pacer.lock().expect("pacer lock");
        match r {
            Ok(_) => pacer.accepted(now),
            Err(MxError::Api {
                status,
                errcode,
                retry_after,
                ..
            }) if *status == 429 || errcode == "M_LIMIT_EXCEEDED" => {
                pacer.refused(now, *retry_after);
                tracing::info!(
                    account = %self.cfg.account, retry_after = ?retry_after,
                    "The homeserver rate-limits the relay bot; its sends are spaced to match."
                );
            }
            Err(_) => {}
        }
    }

    /// A failed send as the outbox should see it. A refused token of an
    /// account with a password is not an outage: the account signs in
    /// again (now, not after its long poll) and the send waits for it.
    pub(crate) fn send_failed(&self, e: MxError) -> SendError {
        if e.is_auth() && self.has_password() {
            self.set_ready(Err(None));
            self.relogin.notify_one();
            return SendError::not_ready(format!(
                "the homeserver refused the access token ({e}); signing in again"
            ));
        }
        e.send_error()
    }

    async fn redact(
        &self,
        room: &OwnedRoomId,
        sender: Option<&UserId>,
        id: &str,
        txn_id: OwnedTransactionId,
    ) -> Result<(), MxError> {
        let event_id = ruma::EventId::parse(id).map_err(|e| MxError::Build(e.to_string()))?;
        let req = api::redact::redact_event::v3::Request::new(room.clone(), event_id, txn_id);
        let r = self.client.call(req, sender, SEND_TIMEOUT, MAX_JSON).await;
        self.paced(sender, &r);
        match r {
            // A ghost may not redact another's event: the bot may.
            Err(MxError::Api { status: 403, .. }) if sender.is_some() => {
                let event_id =
                    ruma::EventId::parse(id).map_err(|e| MxError::Build(e.to_string()))?;
                let req =
                    api::redact::redact_event::v3::Request::new(room.clone(), event_id, txn(id, 0));
                let r = self.client.call(req, None, SEND_TIMEOUT, MAX_JSON).await;
                self.paced(None, &r);
                r.map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    /// Uploads a blob once: its URI (and an image's size) is remembered
    /// by its hash. An empty `mime` is read from the bytes (an avatar).
    pub(crate) async fn upload(
        &self,
        host: &dyn Host,
        a: &switchboard_core::BlobRef,
        mime: &str,
        name: &str,
    ) -> Result<Uploaded, SendError> {
        let key = format!("mxc:{}", a.sha256);
        if let Ok(Some(v)) = host.state(&key).await {
            // `mxc://… WxH`, or the URI alone (stored by older versions).
            let (uri, dims) = v.split_once(' ').map_or((v.as_str(), None), |(u, d)| {
                let dims = d
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
                (u, dims)
            });
            return Ok(Uploaded {
                mxc: uri.into(),
                dims,
            });
        }
        let bytes = host
            .blob(a)
            .await
            .map_err(|e| SendError::transient(e.to_string(), None))?
            .ok_or_else(|| SendError::permanent("the file is no longer in the blob store"))?;
        let meta = crate::image::meta(&bytes);
        let mime = match (mime, meta) {
            ("" | "application/octet-stream", Some(m)) => m.mime.to_owned(),
            ("", None) => "application/octet-stream".to_owned(),
            (mime, _) => mime.to_owned(),
        };
        let mut req = api::media::create_content::v3::Request::new(bytes);
        req.content_type = Some(mime);
        req.filename = Some(name.to_owned());
        let res = self
            .client
            .call(req, None, SEND_TIMEOUT * 5, MAX_JSON)
            .await
            .map_err(|e| self.send_failed(e))?;
        let dims = meta.map(|m| (m.width, m.height));
        let value = match dims {
            Some((w, h)) => format!("{} {w}x{h}", res.content_uri),
            None => res.content_uri.to_string(),
        };
        let _ = host.set_state(&key, &value).await;
        Ok(Uploaded {
            mxc: res.content_uri,
            dims,
        })
    }

    /// The per-message profile of `ev`'s author. The avatar is uploaded
    /// the first time it is seen; a failed upload leaves it out (the
    /// message is not held for a picture).
    async fn profile_for(&self, host: &dyn Host, ev: &Event) -> Profile {
        let author = &ev.author;
        // A bot API token may post under many names: each is a person.
        let who = if ev.origin.account.network() == Network::API {
            format!("{}.{}", author.remote_id, author.display_name)
        } else if author.remote_id.is_empty() {
            author.display_name.clone()
        } else {
            author.remote_id.clone()
        };
        let name = [
            Some(author.display_name.as_str()),
            author.username.as_deref(),
            Some(author.remote_id.as_str()),
        ]
        .into_iter()
        .flatten()
        .find(|n| !n.trim().is_empty())
        .unwrap_or("?");
        let avatar_url = match &author.avatar {
            Some(Avatar::Blob(blob)) => match self.upload(host, blob, "", "avatar").await {
                Ok(u) => Some(u.mxc),
                Err(e) => {
                    tracing::debug!(account = %self.cfg.account, error = %e, "The author's avatar was not uploaded; the profile goes without.");
                    None
                }
            },
            _ => None,
        };
        Profile {
            id: clip(&format!("{}/{who}", ev.origin.account), 255),
            displayname: clip(name, 255),
            avatar_url,
        }
    }

    pub(crate) async fn send_op(
        &self,
        host: &dyn Host,
        op: &Outbound,
        key: &str,
    ) -> Result<Receipt, SendError> {
        let room = self
            .room_of(&op.channel)
            .await
            .map_err(|e| self.send_failed(e))?;
        if self.is_encrypted(&room) {
            return Err(SendError::permanent(
                "the room is end-to-end encrypted, which switchboard does not bridge yet",
            ));
        }
        let err = |e: MxError| self.send_failed(e);
        // Who posts: the bot itself, or the author's ghost.
        // An edit or a redaction comes from whoever sent the original
        // (Matrix shows an edit only from its sender).
        let ghost = match (&self.cfg.mode, &op.event.kind, &op.target) {
            (Mode::Appservice(_), EventKind::Notice { .. }, _) => None,
            (Mode::Appservice(_), EventKind::Edit { .. } | EventKind::Delete { .. }, Some(t)) => {
                Some(self.ghost_for(host, &t.event, &room).await?)
            }
            (Mode::Appservice(_), _, _) => Some(self.ghost_for(host, &op.event, &room).await?),
            _ => None,
        };
        let sender = ghost.as_deref();
        // The relay bot speaks for someone: the prefix and profile of the
        // author (of the original, for an edit).
        let speaker = match (&ghost, &op.event.kind) {
            (None, EventKind::Message { .. } | EventKind::Edit { .. }) => {
                let template = op.nick_format.as_deref().unwrap_or(DEFAULT_NICK_FORMAT);
                let author = match (&op.event.kind, &op.target) {
                    (EventKind::Edit { .. }, Some(t)) => &*t.event,
                    _ => &op.event,
                };
                Some(Speaker {
                    prefix: switchboard_core::render_nick(template, op).text,
                    profile: self.profile_for(host, author).await,
                })
            }
            _ => None,
        };
        let target = || -> Result<OwnedEventId, SendError> {
            let t = op
                .target
                .as_ref()
                .ok_or_else(|| SendError::permanent("the target was never bridged here"))?;
            ruma::EventId::parse(t.first().as_str())
                .map_err(|e| SendError::permanent(e.to_string()))
        };
        match &op.event.kind {
            EventKind::Message {
                body,
                attachments,
                reply_to,
            } => {
                let reply = match (reply_to, &op.target) {
                    (Some(_), Some(t)) => ruma::EventId::parse(t.first().as_str()).ok(),
                    _ => None,
                };
                // A thread of another network (a Telegram forum topic)
                // becomes a Matrix thread rooted at the first message of it
                // bridged here.
                let thread_key = op.event.origin.thread.as_ref().map(|t| {
                    format!(
                        "thread:{}:{}:{t}:{room}",
                        op.event.origin.account, op.event.origin.channel
                    )
                });
                let root = match &thread_key {
                    Some(k) => host
                        .state(k)
                        .await
                        .map_err(|e| SendError::transient(e.to_string(), None))?
                        .and_then(|id| ruma::EventId::parse(id).ok()),
                    None => None,
                };
                let mut ids = Vec::new();
                if !body.text.is_empty() || attachments.is_empty() {
                    let (mut content, profile) = match &speaker {
                        Some(s) => (
                            convert::profiled_text(&s.prefix, body),
                            Some(s.profile.json(true)),
                        ),
                        None => (convert::text_content(body, false), None),
                    };
                    convert::set_reply(&mut content, reply.clone(), root.clone());
                    let id = self
                        .send_content(&room, sender, &content, txn(key, 0), profile)
                        .await
                        .map_err(err)?;
                    ids.push(id);
                }
                for (i, a) in attachments.iter().enumerate() {
                    let up = self.upload(host, &a.content, &a.mime, &a.name).await?;
                    // Without a text before it, the first file names the
                    // author (bot mode).
                    let fallback = speaker
                        .as_ref()
                        .filter(|_| ids.is_empty())
                        .map(|s| s.prefix.as_str());
                    let profile = speaker.as_ref().map(|s| s.profile.json(fallback.is_some()));
                    let (reply, thread) = if ids.is_empty() {
                        (reply.clone(), root.clone())
                    } else {
                        (None, root.clone())
                    };
                    let id = self
                        .send_file(
                            &room,
                            sender,
                            a,
                            up,
                            fallback,
                            (reply, thread),
                            profile,
                            txn(key, i + 1),
                        )
                        .await
                        .map_err(err)?;
                    ids.push(id);
                }
                if let (Some(k), None, Some(first)) = (&thread_key, &root, ids.first()) {
                    // Not fatal: without it the next message starts a new thread.
                    let _ = host.set_state(k, first.as_str()).await;
                }
                let ids = ids
                    .into_iter()
                    .filter_map(|id| switchboard_core::RemoteId::new(id.to_string()).ok())
                    .collect();
                Ok(Receipt { ids })
            }
            EventKind::Edit { body, .. } => {
                let (new, profile) = match &speaker {
                    Some(s) => (
                        convert::profiled_text(&s.prefix, body),
                        Some(s.profile.json(true)),
                    ),
                    None => (convert::text_content(body, false), None),
                };
                let content = convert::edit_of(target()?, new);
                self.send_content(&room, sender, &content, txn(key, 0), profile)
                    .await
                    .map_err(err)?;
                Ok(Receipt::none())
            }
            EventKind::Delete { .. } => {
                let t = op
                    .target
                    .as_ref()
                    .ok_or_else(|| SendError::permanent("the target was never bridged here"))?;
                for (i, id) in t.ids.iter().enumerate() {
                    self.redact(&room, sender, id.as_str(), txn(key, i))
                        .await
                        .map_err(err)?;
                }
                Ok(Receipt::none())
            }
            EventKind::Reaction { emoji, removed, .. } => {
                let target = target()?;
                let who = sender.map_or_else(|| self.own.to_string(), ToString::to_string);
                let state_key = format!("sent_reaction:{room}:{target}:{who}:{emoji}");
                if *removed {
                    if let Ok(Some(id)) = host.state(&state_key).await {
                        self.redact(&room, sender, &id, txn(key, 0))
                            .await
                            .map_err(err)?;
                    }
                    return Ok(Receipt::none());
                }
                let content = convert::reaction_content(target, emoji);
                match self
                    .send_content(&room, sender, &content, txn(key, 0), None)
                    .await
                {
                    Ok(id) => {
                        let _ = host.set_state(&state_key, id.as_str()).await;
                        Ok(Receipt::one(
                            switchboard_core::RemoteId::new(id.to_string())
                                .map_err(|e| SendError::permanent(e.to_string()))?,
                        ))
                    }
                    // The bot already reacted so (two remote people, one bot).
                    Err(MxError::Api { errcode, .. }) if errcode == "M_DUPLICATE_ANNOTATION" => {
                        Ok(Receipt::none())
                    }
                    Err(e) => Err(err(e)),
                }
            }
            EventKind::Notice { body } => {
                let content = convert::text_content(body, true);
                let id = self
                    .send_content(&room, None, &content, txn(key, 0), None)
                    .await
                    .map_err(err)?;
                Ok(Receipt::one(
                    switchboard_core::RemoteId::new(id.to_string())
                        .map_err(|e| SendError::permanent(e.to_string()))?,
                ))
            }
            _ => Ok(Receipt::none()),
        }
    }

    /// One file: a sticker as `m.sticker`, anything else as a media
    /// message; `fallback` (bot mode, no text before it) names the author
    /// in its caption or description.
    #[allow(clippy::too_many_arguments)]
    async fn send_file(
        &self,
        room: &OwnedRoomId,
        sender: Option<&UserId>,
        a: &Attachment,
        up: Uploaded,
        fallback: Option<&str>,
        (reply, thread): (Option<OwnedEventId>, Option<OwnedEventId>),
        profile: Option<Value>,
        txn_id: OwnedTransactionId,
    ) -> Result<OwnedEventId, MxError> {
        if a.kind == AttachmentKind::Sticker {
            let mut content = convert::sticker_content(a, up.mxc, up.dims, fallback);
            content.relates_to = convert::sticker_relation(reply, thread);
            return self
                .send_content(room, sender, &content, txn_id, profile)
                .await;
        }
        let mut content = convert::media_content(a, up.mxc, up.dims);
        if let Some(prefix) = fallback {
            caption_fallback(&mut content, prefix);
        }
        convert::set_reply(&mut content, reply, thread);
        self.send_content(room, sender, &content, txn_id, profile)
            .await
    }
}

/// Makes `prefix` a media message's caption (the file name moves to
/// `filename`), marked as a per-message profile's fallback.
fn caption_fallback(content: &mut RoomMessageEventContent, prefix: &str) {
    let html = crate::html::with_profile_fallback(prefix, &RichText::plain(""));
    let set = |body: &mut String,
               filename: &mut Option<String>,
               formatted: &mut Option<FormattedBody>| {
        *filename = Some(std::mem::replace(body, prefix.to_owned()));
        *formatted = Some(FormattedBody::html(html.clone()));
    };
    match &mut content.msgtype {
        MessageType::Image(c) => set(&mut c.body, &mut c.filename, &mut c.formatted),
        MessageType::File(c) => set(&mut c.body, &mut c.filename, &mut c.formatted),
        MessageType::Audio(c) => set(&mut c.body, &mut c.filename, &mut c.formatted),
        MessageType::Video(c) => set(&mut c.body, &mut c.filename, &mut c.formatted),
        _ => {}
    }
}
