//! Appservice mode: the routes the homeserver pushes to, and the ghost
//! users that post for remote authors.
//!
//! A transaction's events are committed in one batch, with the
//! transaction id as the account's `txn` cursor, and only then answered
//! 200; a transaction id seen before is answered 200 without committing
//! again (the homeserver repeats a transaction until it gets 200).

use std::sync::Weak;

use ruma::api::client as api;
use ruma::api::IncomingRequestExt;
use ruma::events::AnySyncTimelineEvent;
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::json;
use subtle::ConstantTimeEq;
use switchboard_core::{Avatar, Batch, Cursor, Host, IngressRequest, IngressResponse, SendError};

use crate::adapter::MatrixAdapter;
use crate::client::MxError;
use crate::config::Mode;

/// The appservice's routes.
pub struct Transactions {
    pub(crate) adapter: Weak<MatrixAdapter>,
    pub(crate) hs_token: String,
}

fn error(status: u16, errcode: &str, message: &str) -> IngressResponse {
    IngressResponse::json(status, &json!({ "errcode": errcode, "error": message }))
}

#[async_trait::async_trait]
impl switchboard_core::Ingress for Transactions {
    async fn handle(&self, host: &dyn Host, req: IngressRequest) -> IngressResponse {
        // Credentials first: the Authorization header, or the query
        // parameter older homeservers send.
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| {
                req.query.as_deref().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("access_token=").map(str::to_owned))
                })
            });
        let Some(given) = bearer else {
            return error(401, "M_UNAUTHORIZED", "missing the homeserver's token");
        };
        if !bool::from(given.as_bytes().ct_eq(self.hs_token.as_bytes())) {
            return error(403, "M_FORBIDDEN", "wrong homeserver token");
        }
        let Some(adapter) = self.adapter.upgrade() else {
            return error(503, "M_UNKNOWN", "the bridge is restarting");
        };
        let path = req.path.as_str();
        let route = path.strip_prefix("/_matrix/app/v1").unwrap_or(path);
        let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("PUT", ["transactions", txn_id]) => adapter.transaction(host, &req, txn_id).await,
            ("POST", ["ping"]) => IngressResponse::json(200, &json!({})),
            // Ghosts are created when a remote author first speaks, not on
            // the homeserver's query; rooms are never provisioned by alias.
            ("GET", ["users", _]) => {
                error(404, "M_NOT_FOUND", "no such user on the bridged networks")
            }
            ("GET", ["rooms", _]) => error(
                404,
                "M_NOT_FOUND",
                "switchboard does not create rooms on demand",
            ),
            ("GET", ["thirdparty", ..]) => error(404, "M_NOT_FOUND", "no third-party lookups"),
            _ => error(404, "M_UNRECOGNIZED", "unrecognized request"),
        }
    }
}

/// `@sb_telegram_42:example.org`-style localparts: what a remote id may
/// hold is mapped into the characters a Matrix localpart allows
/// (uppercase as `_` and the letter, `_` doubled, anything else `=xx`).
#[must_use]
pub fn escape_localpart(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => out.push(char::from(b)),
            b'A'..=b'Z' => {
                out.push('_');
                out.push(char::from(b.to_ascii_lowercase()));
            }
            b'_' => out.push_str("__"),
            _ => out.push_str(&format!("={b:02x}")),
        }
    }
    out
}

impl MatrixAdapter {
    /// Commits one pushed transaction, then answers.
    async fn transaction(
        &self,
        host: &dyn Host,
        req: &IngressRequest,
        txn_id: &str,
    ) -> IngressResponse {
        let account = &self.cfg.account;
        match host.cursor("txn").await {
            Ok(Some(last)) if last == txn_id => return IngressResponse::json(200, &json!({})),
            Ok(_) => {}
            Err(_) => return error(503, "M_UNKNOWN", "the bridge's store is unavailable"),
        }
        let mut builder = http::Request::builder()
            .method(http::Method::PUT)
            .uri(format!("http://localhost{}", req.path));
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let parsed = builder
            .body(req.body.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|r| {
                ruma::api::appservice::event::push_events::v1::Request::try_from_http_request(
                    r,
                    &[txn_id],
                )
                .map_err(|e| e.to_string())
            });
        let push = match parsed {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%account, txn = txn_id, error = %e, "A malformed transaction; refused.");
                return error(400, "M_BAD_JSON", "not a transaction");
            }
        };
        if let Err(e) = self.resolve_rooms().await {
            tracing::warn!(%account, error = %e, "Cannot resolve the configured rooms yet.");
            return error(
                503,
                "M_UNKNOWN",
                "the bridge cannot reach the homeserver yet",
            );
        }
        // The homeserver gives up on a push after a minute: files that take
        // longer are not bridged, rather than the whole transaction
        // refused and everything after it queued behind it.
        let files_by = std::time::Instant::now() + crate::receive::TRANSACTION_FILES_BUDGET;
        let mut events = Vec::new();
        for raw in &push.events {
            let Some(room) = raw
                .get_field::<String>("room_id")
                .ok()
                .flatten()
                .and_then(|r| OwnedRoomId::try_from(r).ok())
            else {
                continue;
            };
            let sync = raw.clone().cast_unchecked::<AnySyncTimelineEvent>();
            self.accept_invite(&sync, &room);
            if let Err(e) = self
                .read_room(
                    host,
                    &room,
                    std::slice::from_ref(&sync),
                    &mut events,
                    Some(files_by),
                )
                .await
            {
                tracing::warn!(%account, txn = txn_id, error = %e, "Cannot read the transaction yet.");
                return error(503, "M_UNKNOWN", "the bridge cannot reach the homeserver");
            }
        }
        let batch = Batch {
            events,
            cursor: Some(Cursor {
                name: "txn".into(),
                value: txn_id.to_owned(),
            }),
        };
        if Self::deliver(host, batch, None).await {
            IngressResponse::json(200, &json!({}))
        } else {
            // Not committed: the homeserver retries the transaction.
            error(503, "M_UNKNOWN", "the bridge's store is unavailable")
        }
    }

    /// The bot joins a configured room it is invited to (in the
    /// background: the transaction is answered without waiting).
    fn accept_invite(&self, ev: &ruma::serde::Raw<AnySyncTimelineEvent>, room: &OwnedRoomId) {
        let is_invite = ev.get_field::<String>("type").ok().flatten().as_deref()
            == Some("m.room.member")
            && ev
                .get_field::<String>("state_key")
                .ok()
                .flatten()
                .as_deref()
                == Some(self.own.as_str())
            && ev
                .get_field::<serde_json::Value>("content")
                .ok()
                .flatten()
                .is_some_and(|c| c["membership"] == "invite");
        if !is_invite || self.channel_of(room).is_none() {
            return;
        }
        let Some(me) = self.this.upgrade() else {
            return;
        };
        let room = room.clone();
        tokio::spawn(async move {
            if let Err(e) = me.join(&room, None).await {
                tracing::warn!(account = %me.cfg.account, %room, error = %e, "Cannot accept the invite.");
            }
        });
    }

    /// Resolves every configured alias (room ids need no lookup).
    async fn resolve_rooms(&self) -> Result<(), MxError> {
        for channel in self.channels() {
            self.room_of(channel).await?;
        }
        Ok(())
    }

    /// Registers an appservice user (a ghost, or the bot itself); one that
    /// exists already is fine.
    pub(crate) async fn register(&self, localpart: &str) -> Result<(), MxError> {
        let mut req = api::account::register::v3::Request::new();
        req.username = Some(localpart.to_owned());
        req.login_type = Some(api::account::register::LoginType::ApplicationService);
        req.inhibit_login = true;
        match self.client.call_small(req, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The ghost that posts for `op`'s author in `room`: registered, named,
    /// given the author's avatar and joined, each once (remembered in the
    /// account's state), the name and avatar updated when they change.
    pub(crate) async fn ghost_for(
        &self,
        host: &dyn Host,
        event: &switchboard_core::Event,
        room: &OwnedRoomId,
    ) -> Result<OwnedUserId, SendError> {
        let Mode::Appservice(a) = &self.cfg.mode else {
            return Err(SendError::permanent("not an appservice"));
        };
        let author = &event.author;
        let network = event.origin.account.network();
        // A bot API token may post under many names (a relay bot of its
        // own): each name is a ghost of its own there.
        let id = if network == switchboard_core::Network::API {
            format!("{}.{}", author.remote_id, author.display_name)
        } else if author.remote_id.is_empty() {
            author.display_name.clone()
        } else {
            author.remote_id.clone()
        };
        let id = &id;
        let localpart = a
            .ghosts
            .replace("{network}", network.as_str())
            .replace("{id}", &escape_localpart(id));
        let user = UserId::parse(format!("@{localpart}:{}", a.server_name))
            .map_err(|e| SendError::permanent(format!("cannot make a ghost for `{id}`: {e}")))?;
        let err = |e: MxError| e.send_error();
        let state = |k: &str| format!("ghost:{user}:{k}");
        let get = |k: String| async move {
            host.state(&k)
                .await
                .map_err(|e| SendError::transient(e.to_string(), None))
        };
        if get(state("registered")).await?.is_none() {
            self.register(&localpart).await.map_err(err)?;
            let _ = host.set_state(&state("registered"), "1").await;
        }
        let name = if author.display_name.trim().is_empty() {
            id.clone()
        } else {
            author.display_name.clone()
        };
        if get(state("name")).await?.as_deref() != Some(name.as_str()) {
            // The per-field endpoints: `set_profile_field` needs Matrix 1.16,
            // which not every homeserver speaks yet.
            #[allow(deprecated)]
            let req =
                api::profile::set_display_name::v3::Request::new(user.clone(), Some(name.clone()));
            self.client
                .call_small(req, Some(&user))
                .await
                .map_err(err)?;
            let _ = host.set_state(&state("name"), &name).await;
        }
        if let Some(Avatar::Blob(blob)) = &author.avatar {
            if get(state("avatar")).await?.as_deref() != Some(blob.sha256.as_str()) {
                let mxc = self.upload(host, blob, "", "avatar").await?.mxc;
                #[allow(deprecated)]
                let req = api::profile::set_avatar_url::v3::Request::new(user.clone(), Some(mxc));
                self.client
                    .call_small(req, Some(&user))
                    .await
                    .map_err(err)?;
                let _ = host.set_state(&state("avatar"), &blob.sha256).await;
            }
        }
        let joined = format!("ghost:{user}:room:{room}");
        if get(joined.clone()).await?.is_none() {
            match self.join(room, Some(&user)).await {
                Ok(()) => {}
                // An invite-only room: the bridge bot invites its ghost.
                Err(MxError::Api { status: 403, .. }) => {
                    let recipient = api::membership::invite_user::v3::InvitationRecipient::UserId(
                        api::membership::invite_user::v3::InviteUserId::new(user.clone()),
                    );
                    let req =
                        api::membership::invite_user::v3::Request::new(room.clone(), recipient);
                    match self.client.call_small(req, None).await {
                        Ok(_) => {}
                        Err(e)
                            if e.errcode() == Some("M_FORBIDDEN")
                                && e.to_string().contains("already in the room") => {}
                        Err(e) => return Err(err(e)),
                    }
                    self.join(room, Some(&user)).await.map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
            let _ = host.set_state(&joined, "1").await;
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ids_map_into_localparts() {
        assert_eq!(escape_localpart("123456"), "123456");
        assert_eq!(escape_localpart("Alice_B"), "_alice___b");
        assert_eq!(escape_localpart("+4915 x"), "=2b4915=20x");
        assert!(UserId::parse(format!("@sb_signal_{}:x", escape_localpart("ÄÖ+1@:"))).is_ok());
    }
}
