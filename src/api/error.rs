//! API errors: every failure is a 4xx/5xx with a JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token lacks the scope or gateway.
    #[error("{0}")]
    Forbidden(String),
    /// No such gateway, message or blob.
    #[error("{0}")]
    NotFound(String),
    /// The body is not what the route takes.
    #[error("{0}")]
    Invalid(String),
    /// A status axum decided (body too large, bad multipart).
    #[error("{1}")]
    Status(StatusCode, String),
    /// The store failed; the client may retry.
    #[error("storage unavailable: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Status(s, _) => *s,
            Self::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = error_response(self.status(), &self.to_string());
        if let Self::Store(e) = &self {
            tracing::warn!(error = %e, "API request failed on the store.");
            if e.is_unavailable() {
                // The writer probes the database again within a second.
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
        }
        resp
    }
}

/// Every error's body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status in words, snake_case (`unprocessable_entity`).
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// Longest error message sent, in bytes: messages quote what was wrong
/// (a field name, a value), and a client's input is not echoed back whole.
pub const MAX_MESSAGE: usize = 500;

/// `text` cut to [`MAX_MESSAGE`] bytes (on a character boundary), marked
/// with `…` where it was cut.
#[must_use]
pub fn bounded(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_MESSAGE {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// A JSON error response; the message is cut to [`MAX_MESSAGE`] bytes.
#[must_use]
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let message = bounded(message);
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "_");
    let mut resp = (
        status,
        axum::Json(ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into_owned(),
            },
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Rewrites error responses axum produces itself (unknown route, wrong
/// method, body over the limit) into the same JSON shape.
pub async fn json_errors(req: Request<Body>, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().to_owned()
    };
    error_response(status, &message)
}
