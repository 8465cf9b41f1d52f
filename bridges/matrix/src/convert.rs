//! Matrix events ↔ the normalized model, no I/O.
//!
//! In: [`read_event`] turns one timeline event (a ruma type) into what the
//! adapter delivers: a [`NewEvent`] plus the media it still has to fetch.
//! Out: [`text_content`], [`profiled_text`], [`media_content`],
//! [`sticker_content`] and friends build the ruma contents a send
//! puts into the room.

use ruma::events::reaction::ReactionEventContent;
use ruma::events::relation::{Annotation, InReplyTo, Replacement, Reply, Thread};
use ruma::events::room::message::{
    AudioMessageEventContent, FileMessageEventContent, FormattedBody, ImageMessageEventContent,
    MessageType, Relation, RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
    VideoMessageEventContent,
};
use ruma::events::room::{ImageInfo, MediaSource};
use ruma::events::sticker::{StickerEventContent, StickerMediaSource};
use ruma::events::{
    AnySyncMessageLikeEvent, AnySyncStateEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
    SyncStateEvent,
};
use ruma::{OwnedEventId, OwnedMxcUri};
use switchboard_core::{
    AccountId, Attachment, AttachmentKind, Author, ChannelId, EventKind, Membership, NewEvent,
    Origin, RemoteId, RichText, Style, TargetRef,
};
use time::OffsetDateTime;

use crate::html;

/// A file the adapter fetches from the homeserver before delivering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Where it is.
    pub mxc: OwnedMxcUri,
    /// Image, video, ...
    pub kind: AttachmentKind,
    /// Its file name.
    pub name: String,
    /// Its MIME type, as the sender said.
    pub mime: String,
    /// Its size, as the sender said.
    pub size: Option<u64>,
}

/// What one timeline event means to the bridge.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// Something to deliver once its media are fetched (their attachments
    /// go into the event's message, in order).
    Deliver(Box<NewEvent>, Vec<Media>),
    /// A redaction: of a message (a delete) or of a reaction (a removed
    /// reaction); the adapter knows which.
    Redaction {
        /// The redaction, as a delete of `redacts`.
        event: Box<NewEvent>,
        /// What it redacts.
        redacts: OwnedEventId,
    },
    /// The room turned on end-to-end encryption.
    Encrypted,
    /// Nothing to bridge (a state change, an unknown type), with why.
    Skip(&'static str),
}

/// Names the adapter knows for room members.
pub trait Names {
    /// `user`'s display name in the room, if known.
    fn name(&self, user: &str) -> Option<String>;
}

/// Reads one timeline event of `channel`.
#[must_use]
pub fn read_event(
    account: &AccountId,
    channel: &ChannelId,
    ev: &AnySyncTimelineEvent,
    names: &dyn Names,
) -> Read {
    let sender = ev.sender().to_string();
    let event_id = ev.event_id().to_string();
    let at = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(u64::from(ev.origin_server_ts().0)) * 1_000_000,
    )
    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let author = Author {
        display_name: names
            .name(&sender)
            .unwrap_or_else(|| localpart(&sender).to_owned()),
        remote_id: sender.clone(),
        username: Some(sender.clone()),
        avatar: None,
        is_bot: false,
    };
    let Ok(remote_id) = RemoteId::new(event_id.clone()) else {
        return Read::Skip("an event id the hub cannot store");
    };
    let make = |kind: EventKind, thread: Option<String>, key: Option<String>| {
        Box::new(NewEvent {
            origin: Origin {
                account: account.clone(),
                channel: channel.clone(),
                remote_id: remote_id.clone(),
                thread,
            },
            key,
            author: author.clone(),
            at,
            kind,
        })
    };
    let remote = |id: &OwnedEventId| RemoteId::new(id.to_string()).ok().map(TargetRef::Remote);
    match ev {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            SyncMessageLikeEvent::Original(m),
        )) => {
            let (thread, reply) = match &m.content.relates_to {
                Some(Relation::Replacement(r)) => {
                    let Some(target) = remote(&r.event_id) else {
                        return Read::Skip("an edit of an event id the hub cannot store");
                    };
                    let (body, _) = body_of(&r.new_content.msgtype, false);
                    // The edit's own id is the key: it reuses nothing.
                    return Read::Deliver(
                        make(EventKind::Edit { target, body }, None, Some(event_id)),
                        Vec::new(),
                    );
                }
                Some(Relation::Reply(r)) => (None, remote(&r.in_reply_to.event_id)),
                Some(Relation::Thread(t)) => {
                    let reply = if t.is_falling_back {
                        None
                    } else {
                        t.in_reply_to.as_ref().and_then(|r| remote(&r.event_id))
                    };
                    (Some(t.event_id.to_string()), reply)
                }
                _ => (None, None),
            };
            let is_reply = matches!(
                m.content.relates_to,
                Some(Relation::Reply(_) | Relation::Thread(_))
            );
            let (body, media) = body_of(&m.content.msgtype, is_reply);
            if m.content.msgtype.msgtype().starts_with("m.") && !known_msgtype(&m.content.msgtype) {
                return Read::Skip("a message type switchboard does not bridge");
            }
            Read::Deliver(
                make(
                    EventKind::Message {
                        body,
                        attachments: Vec::new(),
                        reply_to: reply,
                    },
                    thread,
                    None,
                ),
                media.into_iter().collect(),
            )
        }
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::Sticker(
            SyncMessageLikeEvent::Original(st),
        )) => {
            let StickerMediaSource::Plain(mxc) = &st.content.source else {
                return Read::Skip("an encrypted sticker");
            };
            let (thread, reply_to) = match &st.content.relates_to {
                Some(Relation::Reply(r)) => (None, remote(&r.in_reply_to.event_id)),
                Some(Relation::Thread(t)) => (
                    Some(t.event_id.to_string()),
                    t.in_reply_to
                        .as_ref()
                        .filter(|_| !t.is_falling_back)
                        .and_then(|r| remote(&r.event_id)),
                ),
                _ => (None, None),
            };
            let mime = st
                .content
                .info
                .mimetype
                .clone()
                .unwrap_or_else(|| "image/png".into());
            let media = Media {
                mxc: mxc.clone(),
                kind: AttachmentKind::Sticker,
                name: sticker_name(&st.content.body, &mime),
                mime,
                size: st.content.info.size.map(u64::from),
            };
            Read::Deliver(
                make(
                    EventKind::Message {
                        body: RichText::plain(""),
                        attachments: Vec::new(),
                        reply_to,
                    },
                    thread,
                    None,
                ),
                vec![media],
            )
        }
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::Reaction(
            SyncMessageLikeEvent::Original(r),
        )) => {
            let Some(target) = remote(&r.content.relates_to.event_id) else {
                return Read::Skip("a reaction to an event id the hub cannot store");
            };
            let emoji = r.content.relates_to.key.clone();
            if emoji.is_empty() || emoji.len() > 64 {
                return Read::Skip("a reaction key that is not an emoji");
            }
            Read::Deliver(
                make(
                    EventKind::Reaction {
                        target,
                        emoji,
                        removed: false,
                    },
                    None,
                    Some(event_id),
                ),
                Vec::new(),
            )
        }
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomRedaction(
            ruma::events::room::redaction::SyncRoomRedactionEvent::Original(r),
        )) => {
            let Some(redacts) = r.redacts.clone().or_else(|| r.content.redacts.clone()) else {
                return Read::Skip("a redaction that names no event");
            };
            let Some(target) = remote(&redacts) else {
                return Read::Skip("a redaction of an event id the hub cannot store");
            };
            Read::Redaction {
                event: make(
                    EventKind::Delete {
                        by_moderator: false,
                        target,
                    },
                    None,
                    Some(event_id),
                ),
                redacts,
            }
        }
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomEncrypted(_)) => {
            Read::Encrypted
        }
        AnySyncTimelineEvent::State(AnySyncStateEvent::RoomEncryption(_)) => Read::Encrypted,
        AnySyncTimelineEvent::State(AnySyncStateEvent::RoomMember(SyncStateEvent::Original(m))) => {
            use ruma::events::room::member::MembershipState;
            let before = m
                .unsigned
                .prev_content
                .as_ref()
                .map(|p| p.membership.clone());
            let change = match (&m.content.membership, before) {
                (MembershipState::Join, Some(MembershipState::Join)) => {
                    return Read::Skip("a profile change")
                }
                (MembershipState::Join, _) => Membership::Joined,
                (MembershipState::Leave | MembershipState::Ban, Some(MembershipState::Join)) => {
                    Membership::Left
                }
                _ => return Read::Skip("a membership change that is not a join or leave"),
            };
            let mut ev = make(EventKind::Membership { change }, None, Some(event_id));
            // The member, not who changed it (a kick is sent by the kicker).
            ev.author.remote_id = m.state_key.to_string();
            ev.author.username = Some(m.state_key.to_string());
            ev.author.display_name = m
                .content
                .displayname
                .clone()
                .unwrap_or_else(|| localpart(m.state_key.as_str()).to_owned());
            Read::Deliver(ev, Vec::new())
        }
        _ => Read::Skip("an event type switchboard does not bridge"),
    }
}

fn known_msgtype(m: &MessageType) -> bool {
    matches!(
        m,
        MessageType::Text(_)
            | MessageType::Notice(_)
            | MessageType::Emote(_)
            | MessageType::Image(_)
            | MessageType::File(_)
            | MessageType::Audio(_)
            | MessageType::Video(_)
    )
}

/// A message's text (sanitized HTML when given, else the plain body) and
/// its media.
fn body_of(msgtype: &MessageType, is_reply: bool) -> (RichText, Option<Media>) {
    let text = |body: &str, formatted: Option<&FormattedBody>| -> RichText {
        if let Some(f) = formatted.filter(|f| f.format.as_str() == "org.matrix.custom.html") {
            if let Some(clean) = html::sanitize(&f.body) {
                return html::to_rich(&clean);
            }
        }
        let body = if is_reply {
            html::strip_reply_fallback(body)
        } else {
            body
        };
        RichText::plain(body)
    };
    let media = |kind: AttachmentKind,
                 body: &str,
                 filename: Option<&String>,
                 formatted: Option<&FormattedBody>,
                 source: &MediaSource,
                 mime: Option<&String>,
                 size: Option<u64>| {
        // A `filename` different from `body` makes `body` a caption.
        let (name, caption) = match filename {
            Some(f) if f != body => (f.clone(), text(body, formatted)),
            _ => (body.to_owned(), RichText::plain("")),
        };
        let media = match source {
            MediaSource::Plain(mxc) => Some(Media {
                mxc: mxc.clone(),
                kind,
                name,
                mime: mime
                    .cloned()
                    .unwrap_or_else(|| "application/octet-stream".into()),
                size,
            }),
            // Encrypted files only come from encrypted rooms.
            MediaSource::Encrypted(_) => None,
        };
        (caption, media)
    };
    match msgtype {
        MessageType::Text(t) => (text(&t.body, t.formatted.as_ref()), None),
        MessageType::Notice(t) => (text(&t.body, t.formatted.as_ref()), None),
        MessageType::Emote(t) => {
            let mut r = text(&t.body, t.formatted.as_ref());
            // `/me waves`: shown in italics, as clients render it.
            let end = r.text.len();
            if end > 0 {
                r.spans.insert(
                    0,
                    switchboard_core::Span {
                        start: 0,
                        end,
                        style: Style::Italic,
                    },
                );
            }
            (r, None)
        }
        MessageType::Image(i) => media(
            AttachmentKind::Image,
            &i.body,
            i.filename.as_ref(),
            i.formatted.as_ref(),
            &i.source,
            i.info.as_ref().and_then(|x| x.mimetype.as_ref()),
            i.info.as_ref().and_then(|x| x.size).map(u64::from),
        ),
        MessageType::File(f) => media(
            AttachmentKind::File,
            &f.body,
            f.filename.as_ref(),
            f.formatted.as_ref(),
            &f.source,
            f.info.as_ref().and_then(|x| x.mimetype.as_ref()),
            f.info.as_ref().and_then(|x| x.size).map(u64::from),
        ),
        MessageType::Audio(a) => media(
            AttachmentKind::Audio,
            &a.body,
            a.filename.as_ref(),
            a.formatted.as_ref(),
            &a.source,
            a.info.as_ref().and_then(|x| x.mimetype.as_ref()),
            a.info.as_ref().and_then(|x| x.size).map(u64::from),
        ),
        MessageType::Video(v) => media(
            AttachmentKind::Video,
            &v.body,
            v.filename.as_ref(),
            v.formatted.as_ref(),
            &v.source,
            v.info.as_ref().and_then(|x| x.mimetype.as_ref()),
            v.info.as_ref().and_then(|x| x.size).map(u64::from),
        ),
        other => (RichText::plain(other.body()), None),
    }
}

/// `@alice:example.org` → `alice`.
#[must_use]
pub fn localpart(user: &str) -> &str {
    user.strip_prefix('@')
        .and_then(|u| u.split(':').next())
        .unwrap_or(user)
}

/// MSC4144's per-message profile, under its unstable name.
pub const PROFILE_KEY: &str = "com.beeper.per_message_profile";

/// Another relay bot's message in the room names its author with a
/// per-message profile (MSC4144): the author is shown by the profile's
/// name, and the text loses the fallback prefix (`Name: `) the profile
/// says it has. The author's id stays the Matrix user who sent it: a
/// profile is a name, not an identity.
pub fn apply_profile(event: &mut NewEvent, content: &serde_json::Value) {
    let Some(p) = content
        .get(PROFILE_KEY)
        .or_else(|| content.get("m.new_content")?.get(PROFILE_KEY))
    else {
        return;
    };
    let Some(name) = p["displayname"]
        .as_str()
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 255)
    else {
        return;
    };
    event.author.display_name = name.to_owned();
    if p["has_fallback"] != true {
        return;
    }
    let (EventKind::Message { body, .. } | EventKind::Edit { body, .. }) = &mut event.kind else {
        return;
    };
    let prefix = format!("{name}: ");
    if let Some(rest) = body.text.strip_prefix(&prefix) {
        let cut = prefix.len();
        body.text = rest.to_owned();
        body.spans = std::mem::take(&mut body.spans)
            .into_iter()
            .filter(|s| s.end > cut)
            .map(|mut s| {
                s.start = s.start.saturating_sub(cut);
                s.end -= cut;
                s
            })
            .collect();
    }
}

/// A sticker's file name: its description (an emoji, "Happy cat") when it
/// makes a short name, else `sticker`, with the extension of its format.
#[must_use]
pub fn sticker_name(description: &str, mime: &str) -> String {
    let ext = match mime {
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/jpeg" => "jpg",
        "video/webm" => "webm",
        "application/x-tgsticker" => "tgs",
        _ => "png",
    };
    let stem = description.trim();
    let stem = if stem.is_empty()
        || stem.chars().count() > 32
        || stem.contains(['/', '\\', '\n', '\0'])
        || stem.contains('.')
    {
        "sticker"
    } else {
        stem
    };
    format!("{stem}.{ext}")
}

/// A sticker's description from its file name (the inverse of
/// [`sticker_name`]).
#[must_use]
pub fn sticker_description(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(stem, _)| stem)
}

/// A text message's content: `body` and, when styled, `formatted_body`.
#[must_use]
pub fn text_content(rich: &RichText, notice: bool) -> RoomMessageEventContent {
    match (html::from_rich(rich), notice) {
        (Some(h), false) => RoomMessageEventContent::text_html(rich.text.clone(), h),
        (Some(h), true) => RoomMessageEventContent::notice_html(rich.text.clone(), h),
        (None, false) => RoomMessageEventContent::text_plain(rich.text.clone()),
        (None, true) => RoomMessageEventContent::notice_plain(rich.text.clone()),
    }
}

/// A relayed text with the author's name in front as a per-message
/// profile's fallback (MSC4144): clients that show the profile remove the
/// prefix, the others show it.
#[must_use]
pub fn profiled_text(prefix: &str, rich: &RichText) -> RoomMessageEventContent {
    RoomMessageEventContent::text_html(
        format!("{prefix}{}", rich.text),
        html::with_profile_fallback(prefix, rich),
    )
}

/// Puts a reply (and the thread it belongs to) on a content.
pub fn set_reply(
    content: &mut RoomMessageEventContent,
    reply_to: Option<OwnedEventId>,
    thread: Option<OwnedEventId>,
) {
    content.relates_to = relation(reply_to, thread);
}

/// A sticker's reply (and the thread it belongs to).
#[must_use]
pub fn sticker_relation(
    reply_to: Option<OwnedEventId>,
    thread: Option<OwnedEventId>,
) -> Option<Relation<ruma::events::sticker::StickerEventContentWithoutRelation>> {
    relation(reply_to, thread)
}

fn relation<C>(
    reply_to: Option<OwnedEventId>,
    thread: Option<OwnedEventId>,
) -> Option<Relation<C>> {
    match (thread, reply_to) {
        (Some(root), Some(r)) => Some(Relation::Thread(Thread::reply(root, r))),
        (Some(root), None) => {
            let latest = root.clone();
            Some(Relation::Thread(Thread::plain(root, latest)))
        }
        (None, Some(r)) => Some(Relation::Reply(Reply::new(InReplyTo::new(r)))),
        (None, None) => None,
    }
}

/// An edit of `target`: the `* ` fallback body for old clients, the new
/// content in `m.new_content`.
#[must_use]
pub fn edit_content(target: OwnedEventId, rich: &RichText) -> RoomMessageEventContent {
    edit_of(target, text_content(rich, false))
}

/// An edit of `target` to `new` (a text content): `new` in
/// `m.new_content`, and `* ` in front of it as the fallback for clients
/// that do not apply edits.
#[must_use]
pub fn edit_of(target: OwnedEventId, new: RoomMessageEventContent) -> RoomMessageEventContent {
    let mut content = match &new.msgtype {
        MessageType::Text(t) => match &t.formatted {
            Some(f) => {
                RoomMessageEventContent::text_html(format!("* {}", t.body), format!("* {}", f.body))
            }
            None => RoomMessageEventContent::text_plain(format!("* {}", t.body)),
        },
        other => RoomMessageEventContent::text_plain(format!("* {}", other.body())),
    };
    content.relates_to = Some(Relation::Replacement(Replacement::new(
        target,
        RoomMessageEventContentWithoutRelation::new(new.msgtype),
    )));
    content
}

/// A reaction to `target`.
#[must_use]
pub fn reaction_content(target: OwnedEventId, emoji: &str) -> ReactionEventContent {
    ReactionEventContent::new(Annotation::new(target, emoji.to_owned()))
}

/// Where Element shows a sticker at most, in pixels on its longer side.
pub const STICKER_SIZE: u32 = 256;

/// A sticker (`m.sticker`) for an uploaded attachment: its description in
/// `body` (after `prefix`, the relay bot's fallback of who sent it, when
/// given), its display size (at most [`STICKER_SIZE`]) in `info`.
#[must_use]
pub fn sticker_content(
    a: &Attachment,
    mxc: OwnedMxcUri,
    dims: Option<(u32, u32)>,
    prefix: Option<&str>,
) -> StickerEventContent {
    let mut info = ImageInfo::new();
    info.mimetype = Some(a.mime.clone());
    info.size = ruma::UInt::new(a.size);
    let (w, h) = dims
        .map(|(width, height)| {
            crate::image::ImageMeta {
                mime: "",
                width,
                height,
            }
            .fit(STICKER_SIZE)
        })
        .unwrap_or((STICKER_SIZE, STICKER_SIZE));
    info.width = Some(ruma::UInt::from(w));
    info.height = Some(ruma::UInt::from(h));
    let description = sticker_description(&a.name);
    let body = format!("{}{description}", prefix.unwrap_or(""));
    StickerEventContent::new(body, info, mxc)
}

/// A file message for an uploaded attachment; `dims` is an image's size in
/// pixels, when known.
#[must_use]
pub fn media_content(
    a: &Attachment,
    mxc: OwnedMxcUri,
    dims: Option<(u32, u32)>,
) -> RoomMessageEventContent {
    let source = MediaSource::Plain(mxc);
    let size = ruma::UInt::new(a.size);
    let msgtype = match a.kind {
        AttachmentKind::Image | AttachmentKind::Sticker => {
            let mut info = ImageInfo::new();
            info.mimetype = Some(a.mime.clone());
            info.size = size;
            if let Some((w, h)) = dims {
                info.width = Some(ruma::UInt::from(w));
                info.height = Some(ruma::UInt::from(h));
            }
            let mut c = ImageMessageEventContent::new(a.name.clone(), source);
            c.info = Some(Box::new(info));
            MessageType::Image(c)
        }
        AttachmentKind::Video => {
            let mut info = ruma::events::room::message::VideoInfo::new();
            info.mimetype = Some(a.mime.clone());
            info.size = size;
            let mut c = VideoMessageEventContent::new(a.name.clone(), source);
            c.info = Some(Box::new(info));
            MessageType::Video(c)
        }
        AttachmentKind::Audio | AttachmentKind::Voice => {
            let mut info = ruma::events::room::message::AudioInfo::new();
            info.mimetype = Some(a.mime.clone());
            info.size = size;
            let mut c = AudioMessageEventContent::new(a.name.clone(), source);
            c.info = Some(Box::new(info));
            MessageType::Audio(c)
        }
        _ => {
            let mut info = ruma::events::room::message::FileInfo::new();
            info.mimetype = Some(a.mime.clone());
            info.size = size;
            let mut c = FileMessageEventContent::new(a.name.clone(), source);
            c.info = Some(Box::new(info));
            MessageType::File(c)
        }
    };
    RoomMessageEventContent::new(msgtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::serde::Raw;

    struct NoNames;
    impl Names for NoNames {
        fn name(&self, user: &str) -> Option<String> {
            (user == "@alice:x").then(|| "Alice".to_owned())
        }
    }

    fn read(v: serde_json::Value) -> Read {
        let ev: AnySyncTimelineEvent =
            Raw::<AnySyncTimelineEvent>::from_json(serde_json::value::to_raw_value(&v).unwrap())
                .deserialize()
                .unwrap();
        read_event(
            &"matrix.main".parse().unwrap(),
            &ChannelId::new("!r:x").unwrap(),
            &ev,
            &NoNames,
        )
    }

    fn base(content: serde_json::Value, ty: &str) -> serde_json::Value {
        serde_json::json!({"type": ty, "event_id": "$e1", "sender": "@alice:x", "origin_server_ts": 1_700_000_000_000u64, "content": content})
    }

    #[test]
    fn messages_replies_edits_reactions_and_redactions_read() {
        let Read::Deliver(ev, media) = read(base(
            serde_json::json!({"msgtype":"m.text","body":"> <@bob:x> hi\n\n**yo**","format":"org.matrix.custom.html",
                "formatted_body":"<mx-reply><blockquote>hi</blockquote></mx-reply><strong>yo</strong>",
                "m.relates_to":{"m.in_reply_to":{"event_id":"$orig"}}}),
            "m.room.message",
        )) else {
            panic!()
        };
        assert!(media.is_empty());
        assert_eq!(ev.author.display_name, "Alice");
        let EventKind::Message { body, reply_to, .. } = &ev.kind else {
            panic!()
        };
        assert_eq!(body.text, "yo");
        assert_eq!(body.spans[0].style, Style::Bold);
        assert_eq!(
            reply_to,
            &Some(TargetRef::Remote(RemoteId::new("$orig").unwrap()))
        );

        let Read::Deliver(ev, _) = read(base(
            serde_json::json!({"msgtype":"m.text","body":"* fixed","m.new_content":{"msgtype":"m.text","body":"fixed"},
                "m.relates_to":{"rel_type":"m.replace","event_id":"$orig"}}),
            "m.room.message",
        )) else {
            panic!()
        };
        assert_eq!(ev.key.as_deref(), Some("$e1"));
        assert!(matches!(&ev.kind, EventKind::Edit { body, .. } if body.text == "fixed"));

        let Read::Deliver(ev, _) = read(base(
            serde_json::json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$orig","key":"👍"}}),
            "m.reaction",
        )) else {
            panic!()
        };
        assert!(
            matches!(&ev.kind, EventKind::Reaction { emoji, removed: false, .. } if emoji == "👍")
        );

        let mut red = base(serde_json::json!({}), "m.room.redaction");
        red["redacts"] = "$orig".into();
        assert!(
            matches!(read(red), Read::Redaction { redacts, .. } if redacts.as_str() == "$orig")
        );

        let Read::Deliver(ev, media) = read(base(
            serde_json::json!({"msgtype":"m.image","body":"cat.png","url":"mxc://x/abc","info":{"mimetype":"image/png","size":3}}),
            "m.room.message",
        )) else {
            panic!()
        };
        assert_eq!(media[0].mxc.as_str(), "mxc://x/abc");
        assert_eq!(media[0].name, "cat.png");
        assert!(matches!(&ev.kind, EventKind::Message { body, .. } if body.text.is_empty()));
        assert!(matches!(
            read(base(
                serde_json::json!({"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"c","device_id":"D","sender_key":"k","session_id":"s"}),
                "m.room.encrypted"
            )),
            Read::Encrypted
        ));
    }

    #[test]
    fn stickers_read_as_sticker_attachments() {
        let Read::Deliver(ev, media) = read(base(
            serde_json::json!({"body": "😀", "url": "mxc://x/st",
                "info": {"mimetype": "image/webp", "size": 30, "w": 256, "h": 256},
                "m.relates_to": {"m.in_reply_to": {"event_id": "$orig"}}}),
            "m.sticker",
        )) else {
            panic!()
        };
        assert_eq!(media.len(), 1);
        assert_eq!(media[0].kind, AttachmentKind::Sticker);
        assert_eq!(media[0].name, "😀.webp");
        assert_eq!(media[0].mime, "image/webp");
        assert_eq!(media[0].size, Some(30));
        assert!(
            matches!(&ev.kind, EventKind::Message { body, reply_to: Some(_), .. } if body.text.is_empty())
        );
        assert_eq!(
            sticker_name("a long description of a cat that waves", "image/png"),
            "sticker.png"
        );
        assert_eq!(sticker_description("😀.webp"), "😀");
    }

    #[test]
    fn another_bridges_profile_names_the_author_and_its_fallback_goes() {
        let content = serde_json::json!({"msgtype": "m.text", "body": "Mia: hi there",
            "format": "org.matrix.custom.html",
            "formatted_body": "<strong data-mx-profile-fallback>Mia: </strong>hi <em>there</em>",
            PROFILE_KEY: {"id": "tg/1", "displayname": "Mia", "has_fallback": true}});
        let Read::Deliver(mut ev, _) = read(base(content.clone(), "m.room.message")) else {
            panic!()
        };
        apply_profile(&mut ev, &content);
        assert_eq!(ev.author.display_name, "Mia");
        assert_eq!(ev.author.remote_id, "@alice:x");
        let EventKind::Message { body, .. } = &ev.kind else {
            panic!()
        };
        assert_eq!(body.text, "hi there");
        assert_eq!(body.spans.len(), 1, "{body:?}");
        assert_eq!((body.spans[0].start, body.spans[0].end), (3, 8));
        assert!(body.validate().is_ok());
    }

    #[test]
    fn a_relayed_text_carries_its_fallback_for_clients_without_profiles() {
        let rich = RichText {
            text: "hi there".into(),
            spans: vec![switchboard_core::Span {
                start: 3,
                end: 8,
                style: Style::Italic,
            }],
        };
        let c = serde_json::to_value(profiled_text("Ann: ", &rich)).unwrap();
        assert_eq!(c["body"], "Ann: hi there");
        assert_eq!(
            c["formatted_body"],
            "<strong data-mx-profile-fallback>Ann: </strong>hi <em>there</em>"
        );
        let edit = edit_of(
            "$t:x".try_into().unwrap(),
            profiled_text("A&B: ", &RichText::plain("x")),
        );
        let e = serde_json::to_value(edit).unwrap();
        assert_eq!(e["body"], "* A&B: x");
        assert_eq!(
            e["formatted_body"],
            "* <strong data-mx-profile-fallback>A&amp;B: </strong>x"
        );
        assert_eq!(e["m.new_content"]["body"], "A&B: x");
    }

    #[test]
    fn outbound_contents_carry_html_relations_and_fallbacks() {
        let rich = RichText {
            text: "hi there".into(),
            spans: vec![switchboard_core::Span {
                start: 0,
                end: 2,
                style: Style::Bold,
            }],
        };
        let c = serde_json::to_value(edit_content("$t:x".try_into().unwrap(), &rich)).unwrap();
        assert_eq!(c["body"], "* hi there");
        assert_eq!(c["formatted_body"], "* <strong>hi</strong> there");
        assert_eq!(
            c["m.new_content"]["formatted_body"],
            "<strong>hi</strong> there"
        );
        assert_eq!(c["m.relates_to"]["rel_type"], "m.replace");
        let mut m = text_content(&RichText::plain("plain"), false);
        set_reply(&mut m, Some("$r:x".try_into().unwrap()), None);
        let v = serde_json::to_value(&m).unwrap();
        assert!(v.get("formatted_body").is_none());
        assert_eq!(v["m.relates_to"]["m.in_reply_to"]["event_id"], "$r:x");
    }
}
