//! The links on the admin listener, as JSON, for an operator's own tools:
//!
//! - `GET /v1/links`: every link, whether it is in force (and why not),
//!   and the gateways made from chats with their members.
//! - `POST /v1/links` with `{"first": {"account", "channel", "name"?},
//!   "second": {...}}`: links `second` with `first` as a pairing code from
//!   `first` sent in `second` would (`first`'s gateway when it is linked
//!   or configured with `linkable = true`, else a new one); both accounts
//!   need `links = true`. 201 with the gateway and its links; 409 with why
//!   when it cannot be made; the chats are told.
//! - `DELETE /v1/links/{id}`: that chat leaves its gateway (a gateway made
//!   from chats left with one chat goes too); the chats are told.
//!
//! Errors are `{"error": {"code", "message"}}`. They are mounted behind
//! the admin listener's token, with the rest of its API (`crate::admin`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::json;
use switchboard_core::{AccountId, ChannelId};

use super::plan::{Chat, Configured, Refusal};
use super::store::{self, Op, Outcome};
use super::{merge, Link};
use crate::api::error::{error_response, ApiError};
use crate::hub::Hub;

/// The routes, for the admin listener's router to mount (behind its
/// admin token), with any state the hub can be had from.
pub fn admin_routes<S>() -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Hub>: axum::extract::FromRef<S>,
{
    axum::Router::new()
        .route("/v1/links", get(list).post(create))
        .route("/v1/links/{id}", delete(remove))
}

/// One chat of a `POST /v1/links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    account: String,
    channel: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    first: ChatBody,
    second: ChatBody,
}

fn link_json(l: &Link, why: Option<&str>) -> serde_json::Value {
    json!({
        "id": l.id,
        "gateway": l.gateway,
        "account": l.account,
        "channel": l.channel,
        "name": l.name,
        "created_ms": l.created_ms,
        "created_by": l.created_by,
        "in_force": why.is_none(),
        "not_in_force_because": why,
    })
}

async fn list(State(hub): State<Arc<Hub>>) -> Response {
    let rows = hub.links.rows();
    let settings = hub.settings.read().expect("settings lock").clone();
    let merged = merge(&settings, &rows);
    let links: Vec<_> = rows
        .iter()
        .map(|l| {
            let why = merged
                .inactive
                .iter()
                .find(|i| i.link.id == l.id)
                .map(|i| i.why.as_str());
            link_json(l, why)
        })
        .collect();
    let gateways: Vec<_> = merged
        .gateways
        .iter()
        .filter(|g| super::is_chat_made(&g.name))
        .map(|g| {
            json!({
                "name": g.name,
                "members": g.members.iter().map(|m| json!({"account": m.account, "channel": m.channel})).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({"links": links, "gateways": gateways})).into_response()
}

/// A chat of a request, checked: a configured account that takes links,
/// a channel its network accepts.
fn chat(hub: &Hub, key: &str, body: &ChatBody) -> Result<Chat, String> {
    let bad = Err;
    let account: AccountId = match body.account.parse() {
        Ok(a) => a,
        Err(e) => return bad(format!("{key}.account: {e}")),
    };
    let settings = hub.settings.read().expect("settings lock").clone();
    if !settings.networks.iter().any(|n| n.account() == &account) {
        return bad(format!(
            "{key}.account: no network account `{account}` is configured"
        ));
    }
    if !settings.commands.contains_key(&account) {
        return bad(format!(
            "{key}.account: {account} does not take links; set `links = true` in [{account}]"
        ));
    }
    let channel = match ChannelId::new(body.channel.clone())
        .map_err(|e| e.to_string())
        .and_then(|c| {
            crate::adapters::check_channel(account.network(), c.as_str())?;
            Ok(c)
        }) {
        Ok(c) => c,
        Err(e) => return bad(format!("{key}.channel: {e}")),
    };
    if let Some(n) = &body.name {
        if n.is_empty() || n.len() > 255 || n.chars().any(char::is_control) {
            return bad(format!(
                "{key}.name: 1-255 bytes without control characters"
            ));
        }
    }
    Ok(Chat {
        channel: hub.router.configured(&account, &channel),
        account,
        name: body.name.clone(),
    })
}

async fn create(State(hub): State<Arc<Hub>>, body: axum::body::Bytes) -> Response {
    let body: CreateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the body is not {{\"first\": {{\"account\", \"channel\"}}, \"second\": {{...}}}}: {e}"),
            )
        }
    };
    let (first, second) = match (
        chat(&hub, "first", &body.first),
        chat(&hub, "second", &body.second),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(m), _) | (_, Err(m)) => return error_response(StatusCode::UNPROCESSABLE_ENTITY, &m),
    };
    let outcome = {
        let _one = hub.links.changes.lock().await;
        let settings = hub.settings.read().expect("settings lock").clone();
        let outcome = store::change(
            &hub.writer,
            Op::Link {
                first,
                second,
                by: "the admin API".into(),
                configured: Configured::of(&settings),
            },
        )
        .await;
        if let Ok(Outcome::Linked { .. }) = &outcome {
            if let Err(e) = hub.links.refresh(&hub).await {
                return ApiError::Store(e).into_response();
            }
        }
        outcome
    };
    match outcome {
        Ok(Outcome::Linked {
            gateway, second, ..
        }) => {
            super::commands::tell_linked(&hub, &gateway, &second).await;
            let rows: Vec<_> = hub
                .links
                .rows()
                .iter()
                .filter(|l| l.gateway == gateway)
                .map(|l| link_json(l, None))
                .collect();
            (
                StatusCode::CREATED,
                axum::Json(json!({"gateway": gateway, "links": rows})),
            )
                .into_response()
        }
        Ok(Outcome::Refused { refusal, .. }) => {
            let message = match refusal {
                Refusal::SameChat => "first and second are the same chat".to_owned(),
                Refusal::Linked(g) => format!("second is linked already, in gateway `{g}`"),
                Refusal::Configured(g) => {
                    format!("the configuration lists second in gateway `{g}`")
                }
                Refusal::NotLinkable(g) => {
                    format!("the configuration lists first in gateway `{g}`, which is not linkable")
                }
            };
            error_response(StatusCode::CONFLICT, &message)
        }
        Ok(other) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unexpected outcome: {other:?}"),
        ),
        Err(e) => ApiError::Store(e).into_response(),
    }
}

async fn remove(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error_response(StatusCode::NOT_FOUND, &format!("no link `{id}`"));
    };
    let (outcome, before) = {
        let _one = hub.links.changes.lock().await;
        let before = hub
            .links
            .rows()
            .iter()
            .find(|l| l.id == id)
            .map(|l| super::commands::members_of(&hub, &l.gateway))
            .unwrap_or_default();
        let outcome = store::change(&hub.writer, Op::Remove { id }).await;
        if let Ok(Outcome::Unlinked { .. }) = &outcome {
            if let Err(e) = hub.links.refresh(&hub).await {
                return ApiError::Store(e).into_response();
            }
        }
        (outcome, before)
    };
    match outcome {
        Ok(Outcome::Unlinked { left, dissolved }) => {
            super::commands::tell_unlinked(&hub, &left, &dissolved, &before, "the admin API").await;
            let removed: Vec<_> = std::iter::once(&left)
                .chain(&dissolved)
                .map(|l| link_json(l, None))
                .collect();
            axum::Json(json!({"removed": removed})).into_response()
        }
        Ok(_) => error_response(StatusCode::NOT_FOUND, &format!("no link {id}")),
        Err(e) => ApiError::Store(e).into_response(),
    }
}
