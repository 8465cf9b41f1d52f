//! The admin API's OpenAPI document (`GET /v1/openapi.json` on the admin
//! listener, with the admin token), generated like the bot API's (see
//! [`crate::api::openapi`]) from the types the handlers in [`super::api`]
//! take and answer with.

#![allow(clippy::needless_for_each)]

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api::{AccountQuery, DeadLetterQuery, DropReport, RequeueReport};
use super::view::Overview;
use crate::api::error::ErrorBody;
use crate::health::AccountHealth;
use crate::reload::ReloadReport;
use crate::store::dead_letters::DeadLetter;

/// `{"accounts": [...]}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StatusBody {
    /// Every account's state.
    accounts: Vec<AccountHealth>,
    /// In a cluster (`[cluster]`, docs/scaling.md): `instance` (the one
    /// answering), `takeover_after_ms`, `instances` (name, `live`/`stale`/
    /// `stopped`, `seen_ms_ago`, `info`), `leases` (kind `account`/`lane`/
    /// `task`, account, channel, holder, token, `expires_in_ms`) and `here`
    /// (each account's role on this instance, and its lane count).
    cluster: Option<serde_json::Value>,
}

/// `{"dead_letters": [...]}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeadLettersBody {
    /// Oldest first.
    dead_letters: Vec<DeadLetter>,
}

/// `{"account": ..., "paused": ...}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PausedBody {
    /// The account.
    account: String,
    /// Whether its delivery is held now.
    paused: bool,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The admin API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard admin API",
        version = "1",
        description = "What `switchboard status`, `pause`, `resume`, `reload` and `dead-letters` \
            do, for programs. Authenticate with `Authorization: Bearer <admin token>` \
            (general.admin_token, or the one generated into the data directory)."
    ),
    paths(status, overview, pause, resume, reload, list, requeue_one, drop_one, requeue_all, drop_all, doc),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct AdminApi;

/// The admin API's document as JSON, made once.
pub fn admin_api_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| AdminApi::openapi().to_pretty_json().unwrap_or_default())
}

#[utoipa::path(get, path = "/v1/status", summary = "Every account's state",
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody)))]
#[allow(dead_code)]
fn status() {}

#[utoipa::path(get, path = "/v1/overview", summary = "Everything the admin page shows",
    responses((status = 200, body = Overview), (status = 401, body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn overview() {}

#[utoipa::path(post, path = "/v1/accounts/{account}/pause",
    summary = "Hold delivery to an account (remembered across restarts)",
    params(("account" = String, Path, description = "`<network>.<name>`")),
    responses((status = 200, body = PausedBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No such destination account", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn pause() {}

#[utoipa::path(post, path = "/v1/accounts/{account}/resume",
    summary = "Release an account's delivery",
    params(("account" = String, Path, description = "`<network>.<name>`")),
    responses((status = 200, body = PausedBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No such destination account", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn resume() {}

#[utoipa::path(post, path = "/v1/reload", summary = "Read the configuration again",
    responses((status = 200, body = ReloadReport), (status = 401, body = ErrorBody),
        (status = 422, description = "The configuration has errors; nothing changed", body = ErrorBody)))]
#[allow(dead_code)]
fn reload() {}

#[utoipa::path(get, path = "/v1/dead-letters", summary = "Dead letters, oldest first",
    params(DeadLetterQuery),
    responses((status = 200, body = DeadLettersBody), (status = 401, body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad query", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn list() {}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/requeue",
    summary = "Put a dead letter back in its queue: in its old place when nothing after it was delivered yet, else at the end",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses((status = 200, body = RequeueReport), (status = 401, body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 409, description = "Its destination is in no gateway now", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn requeue_one() {}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/drop", summary = "Delete a dead letter for good",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses((status = 200, body = DropReport), (status = 401, body = ErrorBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn drop_one() {}

#[utoipa::path(post, path = "/v1/dead-letters/requeue", summary = "Requeue every dead letter of an account",
    params(AccountQuery),
    responses((status = 200, body = RequeueReport), (status = 401, body = ErrorBody),
        (status = 409, description = "A destination is in no gateway now", body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad query", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn requeue_all() {}

#[utoipa::path(post, path = "/v1/dead-letters/drop", summary = "Drop every dead letter of an account",
    params(AccountQuery),
    responses((status = 200, body = DropReport), (status = 401, body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad query", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody)))]
#[allow(dead_code)]
fn drop_all() {}

#[utoipa::path(get, path = "/v1/openapi.json", summary = "This document",
    responses((status = 200, description = "The OpenAPI document", body = Object),
        (status = 401, body = ErrorBody)))]
#[allow(dead_code)]
fn doc() {}
