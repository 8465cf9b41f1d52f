//! Posting into a gateway: shared by the native routes, the matterbridge
//! routes and both WebSockets.

use rand::Rng;
use sha2::{Digest, Sha256};
use switchboard_core::{
    Attachment, AttachmentKind, Author, BlobRef, ChannelId, Delivered, EventId, EventKind,
    GatewayName, NewEvent, Origin, RemoteId, TargetRef,
};
use time::OffsetDateTime;

use super::auth::Caller;
use super::error::ApiError;
use crate::hub::Hub;
use crate::store::blobs::{BlobUpload, StoredBlob};
use crate::store::IngestItem;

/// A file uploaded with a message, already in the blob store.
#[derive(Debug)]
pub struct Upload {
    /// File name.
    pub name: String,
    /// MIME type (guessed from the bytes or the name when the client gave
    /// none).
    pub mime: String,
    /// What sort of file.
    pub kind: AttachmentKind,
    /// Its bytes in the store.
    pub blob: StoredBlob,
}

/// A file being uploaded: its bytes go to the blob store as they arrive
/// (see [`crate::store::blobs`]), so a request holds at most a chunk of it.
pub struct FileUpload {
    name: String,
    mime: Option<String>,
    blob: BlobUpload,
}

impl FileUpload {
    /// Starts storing file `name`; `mime` is the client's, if it gave one
    /// (otherwise it is guessed from the first bytes and the name).
    #[must_use]
    pub fn new(hub: &Hub, name: String, mime: Option<String>) -> Self {
        Self {
            name,
            // A type with control characters (or absurdly long) is no MIME
            // type: it is guessed instead, as for a file sent without one
            // (PostgreSQL could not even store a NUL in it).
            mime: mime
                .filter(|m| !m.is_empty() && m.len() <= 255 && !m.chars().any(char::is_control)),
            blob: BlobUpload::new(hub.writer.clone()),
        }
    }

    /// Adds bytes.
    ///
    /// # Errors
    /// 503 when the store cannot take them.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        Ok(self.blob.write(bytes).await?)
    }

    /// Stores the rest; the file is ready to attach.
    ///
    /// # Errors
    /// 503 when the store cannot take it.
    pub async fn finish(self) -> Result<Upload, ApiError> {
        let mime = self
            .mime
            .unwrap_or_else(|| guess_mime(&self.name, self.blob.head()));
        let blob = self.blob.finish(mime.clone()).await?;
        Ok(Upload {
            kind: kind_for(&mime),
            name: self.name,
            mime,
            blob,
        })
    }
}

/// Base64 characters decoded per step: a multiple of 4, so every step but
/// the last decodes whole groups.
const BASE64_STEP: usize = 4 * 64 * 1024;

/// Decodes a base64 file into the blob store a step at a time, so neither
/// the decoded file nor a second copy of the text is ever held. `bad` says
/// what is wrong with data that is not base64.
///
/// # Errors
/// What `bad` makes of a decoding error; 503 when the store cannot take
/// the file.
pub async fn store_base64(
    hub: &Hub,
    name: String,
    mime: Option<String>,
    data: &str,
    bad: impl Fn(base64::DecodeError) -> ApiError,
) -> Result<Upload, ApiError> {
    use base64::{DecodeError, Engine};
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut upload = FileUpload::new(hub, name, mime);
    let mut buf = Vec::with_capacity(BASE64_STEP / 4 * 3);
    let bytes = data.as_bytes();
    for (i, step) in bytes.chunks(BASE64_STEP).enumerate() {
        let at = i * BASE64_STEP;
        let last = at + step.len() == bytes.len();
        // Padding only at the very end, as a decoder of the whole would say.
        if let Some(pos) = step.iter().position(|b| *b == b'=').filter(|_| !last) {
            return Err(bad(DecodeError::InvalidByte(at + pos, b'=')));
        }
        buf.clear();
        engine.decode_vec(step, &mut buf).map_err(|e| {
            bad(match e {
                DecodeError::InvalidByte(pos, b) => DecodeError::InvalidByte(at + pos, b),
                DecodeError::InvalidLastSymbol(pos, b) => {
                    DecodeError::InvalidLastSymbol(at + pos, b)
                }
                DecodeError::InvalidLength(_) => DecodeError::InvalidLength(bytes.len()),
                other => other,
            })
        })?;
        upload.write(&buf).await?;
    }
    upload.finish().await
}

/// What a bot wants to post.
#[derive(Debug)]
pub struct Draft {
    /// Into which gateway.
    pub gateway: GatewayName,
    /// Shown as the author on other networks.
    pub author: Author,
    /// The operation (files are attached to a `Message` from `files`).
    pub kind: EventKind,
    /// Files for a `Message`.
    pub files: Vec<Upload>,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// The committed result.
#[derive(Debug, Clone, Copy)]
pub struct Posted {
    /// The event's id.
    pub id: EventId,
    /// True when the idempotency key had been used already.
    pub duplicate: bool,
}

/// Default author for a bot that names none.
#[must_use]
pub fn author(
    caller: &Caller,
    name: Option<String>,
    id: Option<String>,
    avatar: Option<String>,
) -> Author {
    Author {
        remote_id: id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| caller.token.name.clone()),
        display_name: name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| caller.token.name.clone()),
        username: None,
        avatar: avatar
            .filter(|s| !s.is_empty())
            .map(switchboard_core::Avatar::Url),
        is_bot: true,
    }
}

/// The MIME type of a file a client sent without one: from its first
/// bytes, else from its name, else `application/octet-stream`.
#[must_use]
pub fn guess_mime(name: &str, data: &[u8]) -> String {
    infer::get(data).map_or_else(
        || {
            mime_guess::from_path(name)
                .first_raw()
                .unwrap_or("application/octet-stream")
                .to_owned()
        },
        |t| t.mime_type().to_owned(),
    )
}

/// Guesses an attachment kind from a MIME type.
#[must_use]
pub fn kind_for(mime: &str) -> AttachmentKind {
    match mime.split('/').next() {
        Some("image") => AttachmentKind::Image,
        Some("video") => AttachmentKind::Video,
        Some("audio") => AttachmentKind::Audio,
        _ => AttachmentKind::File,
    }
}

/// Checks that `caller` may post into `gateway`; done before a request's
/// files are read, so nothing is stored for a post that cannot be made.
///
/// # Errors
/// 404 for a gateway the account is not in, 403 for one it may not post to.
pub fn check_postable(hub: &Hub, caller: &Caller, gateway: &GatewayName) -> Result<(), ApiError> {
    match hub.router.load().membership(gateway, &caller.account) {
        None => Err(ApiError::NotFound(format!(
            "no gateway `{gateway}` for {}",
            caller.account
        ))),
        Some(d) if !d.reads() => Err(ApiError::Forbidden(format!(
            "{} is an `out` member of gateway `{gateway}`: it may read but not post",
            caller.account
        ))),
        Some(_) => caller.can_write(gateway),
    }
}

/// A reference must name a message of the gateway; an edit or a delete
/// only one the caller's token posted, and a reaction taken back only one
/// the token added (the hub's rule for every network: see the store's
/// `refusal`; for the bot API, "who" is the token).
///
/// # Errors
/// 404 for a message not in the gateway, 403 for one not the caller's.
async fn check_target(
    hub: &Hub,
    caller: &Caller,
    gateway: &GatewayName,
    kind: &EventKind,
) -> Result<(), ApiError> {
    if let Some(target) = kind.target().and_then(TargetRef::event_id) {
        let owner = hub
            .store
            .event_in_gateway(target, gateway)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("no message {target} in gateway `{gateway}`"))
            })?;
        let own_only = matches!(kind, EventKind::Edit { .. } | EventKind::Delete { .. });
        if own_only && owner.as_deref() != Some(caller.key().as_str()) {
            return Err(ApiError::Forbidden(format!(
                "message {target} was not posted by token `{}`",
                caller.token.name
            )));
        }
        if let EventKind::Reaction {
            removed: true,
            emoji,
            ..
        } = kind
        {
            if !hub.store.reacted(target, &caller.key(), emoji).await? {
                return Err(ApiError::Forbidden(format!(
                    "token `{}` has not reacted {emoji} to message {target}",
                    caller.token.name
                )));
            }
        }
    }
    Ok(())
}

/// Checks and commits a post (its files are stored already); returns after
/// the commit.
///
/// # Errors
/// 403/404/422 for what the caller may not do or got wrong; 503 when the
/// store is unavailable.
pub async fn post(hub: &Hub, caller: &Caller, draft: Draft) -> Result<Posted, ApiError> {
    let Draft {
        gateway,
        author,
        mut kind,
        files,
        idempotency_key,
    } = draft;
    check_postable(hub, caller, &gateway)?;
    check_target(hub, caller, &gateway, &kind).await?;
    if let EventKind::Message {
        body, attachments, ..
    } = &mut kind
    {
        body.validate().map_err(ApiError::Invalid)?;
        if body.text.trim().is_empty() && files.is_empty() {
            return Err(ApiError::Invalid("a message needs text or a file".into()));
        }
        for f in files {
            attachments.push(Attachment {
                alt: None,
                kind: f.kind,
                name: f.name,
                mime: f.mime,
                size: f.blob.size,
                content: BlobRef {
                    sha256: f.blob.sha256,
                },
            });
        }
    }
    let keyed = idempotency_key.is_some();
    let remote = match idempotency_key {
        Some(k) if k.is_empty() || k.len() > 200 => {
            return Err(ApiError::Invalid(
                "Idempotency-Key must be 1-200 characters".into(),
            ))
        }
        // The key is the client's, per token; tied to the gateway and the
        // operation so a reused key cannot swallow a different request.
        Some(k) => {
            let scope = format!("{}\n{gateway}\n{}\n{k}", caller.token.name, kind.name());
            format!(
                "idem:{}",
                hex::encode(&Sha256::digest(scope.as_bytes())[..16])
            )
        }
        None => format!("api:{:032x}", rand::thread_rng().gen::<u128>()),
    };
    let route = hub
        .router
        .load()
        .route_api(&gateway, &caller.account, &caller.token.name)
        .ok_or_else(|| ApiError::Forbidden(format!("may not post to gateway `{gateway}`")))?;
    let event = NewEvent {
        key: None,
        origin: Origin {
            account: caller.account.clone(),
            channel: ChannelId::new("api").expect("valid"),
            remote_id: RemoteId::new(remote).map_err(|e| ApiError::Invalid(e.to_string()))?,
            thread: None,
        },
        author,
        at: OffsetDateTime::now_utc(),
        kind,
    };
    // The same checks as every network's events: what one backend or one
    // network cannot take is refused here, for every backend.
    event.validate().map_err(ApiError::Invalid)?;
    // Only a client's key can make a repeat: keep what was asked for then.
    let asked = keyed.then(|| (event.kind.clone(), event.author.display_name.clone()));
    let outcome = hub
        .ingest(IngestItem {
            event,
            origin_token: Some(caller.key()),
            dests: route.dests,
            feed: route.feed,
            check_echo: false,
        })
        .await?;
    match outcome.delivered {
        Delivered::New(id) => Ok(Posted {
            id,
            duplicate: false,
        }),
        Delivered::Duplicate(id) => {
            // A repeat must be the same request; a key reused for another
            // one would otherwise answer with the first one's result.
            let same = hub
                .store
                .event(id)
                .await?
                .is_some_and(|e| Some((e.kind, e.author.display_name)) == asked);
            if !same {
                // A conflict with an earlier request, not a bad request:
                // the same body with a fresh key is taken.
                return Err(ApiError::Status(
                    axum::http::StatusCode::CONFLICT,
                    "this Idempotency-Key was used for a different request".into(),
                ));
            }
            Ok(Posted {
                id,
                duplicate: true,
            })
        }
        Delivered::Ignored => Err(ApiError::Invalid("the event was ignored".into())),
        Delivered::Rejected(reason) => Err(ApiError::Invalid(reason)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mime_types_come_from_bytes_then_names() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(super::guess_mime("whatever.bin", png), "image/png");
        assert_eq!(super::guess_mime("notes.txt", b"hello"), "text/plain");
        assert_eq!(
            super::guess_mime("noext", b"\x01\x02"),
            "application/octet-stream"
        );
    }
}
