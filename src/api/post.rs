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
use crate::store::IngestItem;

/// A file uploaded with a message.
#[derive(Debug)]
pub struct Upload {
    /// File name.
    pub name: String,
    /// MIME type (guessed from the bytes or the name when the client gave
    /// none).
    pub mime: String,
    /// What sort of file.
    pub kind: AttachmentKind,
    /// The bytes.
    pub data: Vec<u8>,
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

/// Checks, stores and commits a post; returns after the commit.
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
    match hub.router.load().membership(&gateway, &caller.account) {
        None => {
            return Err(ApiError::NotFound(format!(
                "no gateway `{gateway}` for {}",
                caller.account
            )))
        }
        Some(d) if !d.reads() => {
            return Err(ApiError::Forbidden(format!(
                "{} is an `out` member of gateway `{gateway}`: it may read but not post",
                caller.account
            )))
        }
        Some(_) => caller.can_write(&gateway)?,
    }
    if let Some(target) = kind.target().and_then(TargetRef::event_id) {
        let owner = hub
            .store
            .event_in_gateway(target, &gateway)
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
    }
    if let EventKind::Message {
        body, attachments, ..
    } = &mut kind
    {
        body.validate().map_err(ApiError::Invalid)?;
        if body.text.trim().is_empty() && files.is_empty() {
            return Err(ApiError::Invalid("a message needs text or a file".into()));
        }
        for f in files {
            let sha = hex::encode(Sha256::digest(&f.data));
            let size = f.data.len() as u64;
            hub.writer.blob(sha.clone(), f.mime.clone(), f.data).await?;
            attachments.push(Attachment {
                kind: f.kind,
                name: f.name,
                mime: f.mime,
                size,
                content: BlobRef { sha256: sha },
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
                return Err(ApiError::Invalid(
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
