//! The bot API (network `api`): one HTTP listener per `[api.<name>]`.
//!
//! # Layout
//! - [`native`]: `/v1` routes: post, edit, delete, react, SSE, WebSocket,
//!   blobs, the OpenAPI document.
//! - [`compat`]: matterbridge's `/api/*` routes.
//! - [`post`]: the one path every post takes into the hub.
//! - [`stream`]: per-consumer feed subscriptions with resumable cursors.
//! - [`auth`]: bearer tokens, scopes, gateway checks.
//! - [`json`]: the wire shapes of events.
//! - [`webhook`]: outbound webhooks, an outbox adapter.
//! - [`error`]: JSON error bodies.
//! - [`openapi`]: the OpenAPI documents, generated from the handlers' types.

pub mod auth;
pub mod compat;
pub mod error;
pub mod json;
pub mod native;
pub mod openapi;
pub mod post;
pub mod stream;
pub mod webhook;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post as post_route};
use axum::Router;

use crate::config::ApiAccount;
use crate::hub::Hub;
use auth::Tokens;

/// What every API handler gets.
#[derive(Clone)]
pub struct ApiState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// This listener's account.
    pub account: Arc<ApiAccount>,
    /// Its tokens.
    pub tokens: Arc<Tokens>,
    /// What each polling consumer (`<account>/<token>`, consumer name) was
    /// last offered by `GET /api/messages`: saved as its cursor when it
    /// polls again, so a response lost to a crash is offered again.
    /// A std mutex, never held across await.
    pub offered: Arc<std::sync::Mutex<std::collections::HashMap<(String, String), i64>>>,
}

/// The routes of one API account; `tokens` is the account's token table,
/// which a reload replaces in place.
pub fn router(hub: Arc<Hub>, account: &ApiAccount, tokens: Arc<Tokens>) -> Router {
    let state = ApiState {
        offered: Arc::default(),
        tokens,
        account: Arc::new(account.clone()),
        hub,
    };
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/openapi.json", get(native::openapi))
        .route("/v1/gateways/{gw}/messages", post_route(native::create))
        .route(
            "/v1/gateways/{gw}/messages/{id}",
            patch(native::edit).delete(native::delete),
        )
        .route(
            "/v1/gateways/{gw}/messages/{id}/reactions",
            post_route(native::react),
        )
        .route("/v1/gateways/{gw}/events", get(native::sse))
        .route("/v1/ws", get(native::ws))
        .route("/v1/blobs/{sha}", get(native::blob))
        .route("/api/health", get(compat::health))
        .route("/api/message", post_route(compat::message))
        .route("/api/messages", get(compat::messages))
        .route("/api/stream", get(compat::stream))
        .route("/api/websocket", get(compat::websocket))
        .layer(DefaultBodyLimit::max(account.max_body_bytes))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}
