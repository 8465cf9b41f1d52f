//! The admin API (JSON, `Authorization: Bearer <admin token>`): what the
//! CLI and the admin page do, for programs too.
//!
//! - `GET /v1/status`: every account's state; in a cluster, every instance
//!   and lease too.
//! - `GET /v1/overview`: everything the admin page shows.
//! - `POST /v1/accounts/{account}/pause` and `/resume`.
//! - `POST /v1/reload`: the configuration again, with its report.
//! - `GET /v1/dead-letters?account=&limit=`: dead letters, oldest first.
//! - `POST /v1/dead-letters/{id}/requeue`, `POST /v1/dead-letters/{id}/drop`.
//! - `POST /v1/dead-letters/requeue?account=`, `POST
//!   /v1/dead-letters/drop?account=`: all of one account's.
//!
//! Errors are JSON (`{"error": {"code", "message"}}`) like the bot API's.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use switchboard_core::{AccountId, ChannelId};

use super::view::Overview;
use crate::api::error::{error_response, ApiError};
use crate::hub::Hub;
use crate::store::dead_letters::Requeued;

/// `?account=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this account's.
    pub account: Option<String>,
    /// At most this many (default 1000, at most 100000).
    #[param(minimum = 1, maximum = 100_000)]
    pub limit: Option<u32>,
}

/// `?account=` of the bulk actions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountQuery {
    /// Whose dead letters.
    pub account: String,
}

/// What a requeue did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RequeueReport {
    /// Each row requeued, with where it went.
    pub requeued: Vec<Requeued>,
}

/// What a drop did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DropReport {
    /// Dead letters deleted.
    pub dropped: u64,
}

/// `GET /v1/status`; in a cluster also every instance and lease (from the
/// database) and what runs here.
pub async fn status(State(hub): State<Arc<Hub>>) -> Response {
    let mut body = serde_json::json!({ "accounts": hub.account_states() });
    if let Some(c) = &hub.cluster {
        let mut cluster = c
            .status()
            .await
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
        cluster["here"] = crate::cluster::here(&hub);
        body["cluster"] = cluster;
    }
    Json(body).into_response()
}

/// `GET /v1/overview`
pub async fn overview(State(hub): State<Arc<Hub>>) -> Result<Json<Overview>, ApiError> {
    Ok(Json(Overview::gather(&hub).await?))
}

/// `POST /v1/accounts/{account}/pause`
pub async fn pause(State(hub): State<Arc<Hub>>, Path(account): Path<String>) -> Response {
    set_paused(&hub, &account, true).await
}

/// `POST /v1/accounts/{account}/resume`
pub async fn resume(State(hub): State<Arc<Hub>>, Path(account): Path<String>) -> Response {
    set_paused(&hub, &account, false).await
}

/// Pauses or resumes delivery to an account.
pub async fn set_paused(hub: &Hub, account: &str, paused: bool) -> Response {
    match pause_account(hub, account, paused).await {
        Ok(()) => Json(serde_json::json!({"account": account, "paused": paused})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Pauses or resumes delivery to an account; the page and the API share it.
///
/// # Errors
/// 404 for an account that is no destination, 503 when the store fails.
pub async fn pause_account(hub: &Hub, account: &str, paused: bool) -> Result<(), ApiError> {
    let id = account
        .parse::<AccountId>()
        .map_err(|_| ApiError::NotFound(format!("no account `{account}`")))?;
    if hub.outbox.set_paused(&id, paused).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "no destination account `{account}`"
        )))
    }
}

/// `POST /v1/reload`
pub async fn reload(State(hub): State<Arc<Hub>>) -> Response {
    match hub.reload().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "error": {"code": "invalid_configuration", "message": e.to_string()}
            })),
        )
            .into_response(),
    }
}

/// `GET /v1/dead-letters`
pub async fn list(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit {
        None => 1000,
        Some(n @ 1..=100_000) => i64::from(n),
        Some(_) => {
            return Err(ApiError::Invalid(
                "limit must be between 1 and 100000".into(),
            ))
        }
    };
    // A name that is no account id has no dead letters (and is never
    // handed to the database: PostgreSQL cannot even compare a NUL).
    if q.account.as_deref().is_some_and(|a| !is_account(a)) {
        return Ok(Json(serde_json::json!({ "dead_letters": [] })).into_response());
    }
    let rows = hub.store.dead_letters(q.account.as_deref(), limit).await?;
    Ok(Json(serde_json::json!({ "dead_letters": rows })).into_response())
}

/// `POST /v1/dead-letters/{id}/requeue`
pub async fn requeue_one(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
) -> Result<Json<RequeueReport>, ApiError> {
    let id = row_id(&id)?;
    Ok(Json(requeue_ids(&hub, &[id]).await?))
}

/// `POST /v1/dead-letters/requeue?account=`
pub async fn requeue_all(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<AccountQuery>,
) -> Result<Json<RequeueReport>, ApiError> {
    Ok(Json(requeue_account(&hub, &q.account).await?))
}

/// `POST /v1/dead-letters/{id}/drop`
pub async fn drop_one(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
) -> Result<Json<DropReport>, ApiError> {
    let id = row_id(&id)?;
    Ok(Json(drop_ids(&hub, &[id]).await?))
}

/// `POST /v1/dead-letters/drop?account=`
pub async fn drop_all(
    State(hub): State<Arc<Hub>>,
    Query(q): Query<AccountQuery>,
) -> Result<Json<DropReport>, ApiError> {
    Ok(Json(drop_account(&hub, &q.account).await?))
}

/// Whether `raw` is an account id (`telegram.main`).
fn is_account(raw: &str) -> bool {
    raw.parse::<AccountId>().is_ok()
}

fn row_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter `{}`", bounded(raw))))
}

fn bounded(raw: &str) -> std::borrow::Cow<'_, str> {
    crate::api::error::bounded(raw)
}

/// Requeues these dead letters, each in its lane (see
/// [`crate::store::dead_letters`]).
///
/// # Errors
/// 404 for an id that is no dead letter, 409 for a destination no gateway
/// writes to any more (it would die again at once), 503 when the store
/// fails.
pub async fn requeue_ids(hub: &Hub, ids: &[i64]) -> Result<RequeueReport, ApiError> {
    let mut lanes: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for &id in ids {
        let row = hub
            .store
            .dead_letter(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
        lanes
            .entry((row.account, row.channel))
            .or_default()
            .push(id);
    }
    requeue_lanes(hub, lanes).await
}

/// Requeues every dead letter of `account`.
///
/// # Errors
/// As [`requeue_ids`].
pub async fn requeue_account(hub: &Hub, account: &str) -> Result<RequeueReport, ApiError> {
    if !is_account(account) {
        return Ok(RequeueReport {
            requeued: Vec::new(),
        });
    }
    let mut lanes: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for row in hub.store.dead_letters(Some(account), i64::MAX).await? {
        lanes
            .entry((row.account, row.channel))
            .or_default()
            .push(row.id);
    }
    requeue_lanes(hub, lanes).await
}

async fn requeue_lanes(
    hub: &Hub,
    lanes: BTreeMap<(String, String), Vec<i64>>,
) -> Result<RequeueReport, ApiError> {
    let destinations = hub.router.load().destinations();
    let mut parsed = Vec::new();
    for ((account, channel), ids) in lanes {
        let lane = account
            .parse::<AccountId>()
            .ok()
            .zip(ChannelId::new(channel.clone()).ok())
            .filter(|lane| destinations.contains(lane));
        let Some((a, c)) = lane else {
            return Err(ApiError::Status(
                StatusCode::CONFLICT,
                format!(
                    "{account} {channel} is not a destination of any gateway now: \
                     add it back to the configuration (and reload) before requeueing"
                ),
            ));
        };
        parsed.push((a, c, ids));
    }
    let mut requeued = Vec::new();
    for (a, c, ids) in parsed {
        requeued.extend(hub.outbox.requeue(&a, &c, &ids).await?);
    }
    Ok(RequeueReport { requeued })
}

/// Drops these dead letters for good.
///
/// # Errors
/// 404 when none of them is a dead letter, 503 when the store fails.
pub async fn drop_ids(hub: &Hub, ids: &[i64]) -> Result<DropReport, ApiError> {
    let dropped = crate::store::dead_letters::drop_dead(&hub.writer, ids).await?;
    if dropped == 0 {
        return Err(ApiError::NotFound(format!(
            "no dead letter {}",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    tracing::info!(rows = ?ids, dropped, "Dead letters dropped by an admin.");
    Ok(DropReport { dropped })
}

/// Drops every dead letter of `account`.
///
/// # Errors
/// 503 when the store fails.
pub async fn drop_account(hub: &Hub, account: &str) -> Result<DropReport, ApiError> {
    if !is_account(account) {
        return Ok(DropReport { dropped: 0 });
    }
    let ids: Vec<i64> = hub
        .store
        .dead_letters(Some(account), i64::MAX)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    if ids.is_empty() {
        return Ok(DropReport { dropped: 0 });
    }
    let dropped = crate::store::dead_letters::drop_dead(&hub.writer, &ids).await?;
    tracing::info!(%account, dropped, "Dead letters dropped by an admin.");
    Ok(DropReport { dropped })
}

/// A JSON 404 for routes the admin listener does not have.
pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such route on the admin listener")
}
