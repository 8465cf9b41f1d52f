//! The admin listener (`general.admin_bind`): health and metrics for
//! monitoring, the public status pages, and, behind the admin token, the
//! admin API and the admin web page.
//!
//! Open to anyone who can reach it: `/healthz`, `/metrics`,
//! `/status/{gateway}` (gateways with `status_page = true`) and the
//! sign-in page with its style sheet and script. Everything else needs the
//! admin token ([`auth`]).
//!
//! # Layout
//! - [`auth`]: the admin token (configured or generated), sessions, CSRF.
//! - [`config`]: the `[general]` keys of the admin listener.
//! - [`openapi`]: the admin API's OpenAPI document, generated.
//! - [`api`]: the JSON admin API (status, pause, resume, reload, dead
//!   letters), which the CLI uses; the links' routes are `crate::links`'.
//! - [`view`]: what the page shows, gathered once for the page, its live
//!   updates and `GET /v1/overview`.
//! - [`page`]: the admin web page, its forms and live updates (SSE).
//! - [`status_page`]: the public status pages.
//! - [`cli`]: `switchboard dead-letters` and the admin client the CLI's
//!   commands share.
//! - `assets/`: the page's style sheet and script, compiled in.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod openapi;
pub mod page;
pub mod status_page;
pub mod view;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::{get, post};

use crate::config::Secret;
use crate::hub::Hub;

/// What the admin listener's handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The admin token and browser sessions.
    pub auth: Arc<auth::AdminAuth>,
}

impl FromRef<AdminState> for Arc<Hub> {
    fn from_ref(st: &AdminState) -> Self {
        st.hub.clone()
    }
}

/// The admin listener's routes, guarded by `token`.
pub fn router(hub: Arc<Hub>, token: Secret) -> axum::Router {
    let state = AdminState {
        hub,
        auth: Arc::new(auth::AdminAuth::new(token)),
    };
    let v1 = axum::Router::new()
        .route("/v1/status", get(api::status))
        .route("/v1/overview", get(api::overview))
        .route("/v1/accounts/{account}/pause", post(api::pause))
        .route("/v1/accounts/{account}/resume", post(api::resume))
        .route("/v1/reload", post(api::reload))
        .route("/v1/dead-letters", get(api::list))
        .route("/v1/dead-letters/requeue", post(api::requeue_all))
        .route("/v1/dead-letters/drop", post(api::drop_all))
        .route("/v1/dead-letters/{id}/requeue", post(api::requeue_one))
        .route("/v1/dead-letters/{id}/drop", post(api::drop_one))
        .merge(crate::links::admin_routes())
        .route(
            "/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi::admin_api_json(),
                )
            }),
        )
        .layer(axum::middleware::from_fn(crate::api::error::json_errors));
    let pages = axum::Router::new()
        .route("/admin", get(page::page))
        .route("/admin/events", get(page::events))
        .route("/admin/logout", post(page::logout))
        .route("/admin/reload", post(page::reload_form))
        .route("/admin/accounts/{account}/{verb}", post(page::pause_form))
        .route(
            "/admin/dead-letters/{id}/{verb}",
            post(page::dead_letter_form),
        )
        .route(
            "/admin/dead-letters/{verb}",
            post(page::dead_letters_account_form),
        );
    let protected = v1
        .merge(pages)
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require,
        ));
    axum::Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
        .route("/status/{gateway}", get(status_page::page))
        .route("/admin/login", get(page::login_form).post(page::login))
        .route("/admin/admin.css", get(page::css))
        .route("/admin/admin.js", get(page::js))
        .merge(protected)
        .fallback(api::not_found)
        .with_state(state)
}

async fn metrics(
    axum::extract::State(hub): axum::extract::State<Arc<Hub>>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        hub.metrics.render(),
    )
}
