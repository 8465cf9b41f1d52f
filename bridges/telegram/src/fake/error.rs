//! The failure half of the Bot API envelope: one [`ApiError`] per refused
//! call, turned into `{"ok":false,"error_code":N,"description":...}` with the
//! HTTP status equal to `error_code`, as the real server answers.
//!
//! Descriptions follow the open-source server's wording: a class prefix
//! (`Bad Request`, `Unauthorized`, `Too Many Requests`...) then the reason,
//! starting lower-case unless it is an upper-case MTProto error name such as
//! `REACTION_INVALID`.

use std::fmt::Display;

use serde_json::{json, Map, Value};

/// A refused call, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// The `error_code` and the HTTP status.
    pub code: u16,
    /// The full `description`, prefix included.
    pub description: String,
    /// `parameters.retry_after`, plus the `Retry-After` header.
    pub retry_after: Option<u64>,
    /// `parameters.migrate_to_chat_id`.
    pub migrate_to_chat_id: Option<i64>,
}

/// What a handler returns.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a ready-made description.
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        ApiError {
            code,
            description: description.into(),
            retry_after: None,
            migrate_to_chat_id: None,
        }
    }

    /// `400 Bad Request: <reason>`.
    pub fn bad_request(reason: impl Display) -> Self {
        Self::new(400, format!("Bad Request: {reason}"))
    }

    /// `429 Too Many Requests: retry after N`, with `parameters.retry_after`.
    pub fn flood(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(429, format!("Too Many Requests: retry after {retry_after}"))
        }
    }

    /// `409 Conflict: <reason>`.
    pub fn conflict(reason: &str) -> Self {
        Self::new(409, format!("Conflict: {reason}"))
    }

    /// The answer for any write to a basic group that became a supergroup.
    pub fn migrated(to: i64) -> Self {
        ApiError {
            migrate_to_chat_id: Some(to),
            ..Self::bad_request("group chat was upgraded to a supergroup chat")
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        let mut parameters = Map::new();
        if let Some(to) = self.migrate_to_chat_id {
            parameters.insert("migrate_to_chat_id".into(), to.into());
        }
        if let Some(secs) = self.retry_after {
            parameters.insert("retry_after".into(), secs.into());
        }
        if !parameters.is_empty() {
            body["parameters"] = Value::Object(parameters);
        }
        body
    }
}

/// A successful answer: `{"ok":true,"result":...}`, and for the webhook
/// methods the extra `description` the real server adds ("Webhook was set").
#[derive(Debug, Clone)]
pub(crate) struct Success {
    pub result: Value,
    pub description: Option<&'static str>,
}

impl From<Value> for Success {
    fn from(result: Value) -> Self {
        Success {
            result,
            description: None,
        }
    }
}

impl Success {
    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({ "ok": true, "result": self.result });
        if let Some(description) = self.description {
            body["description"] = description.into();
        }
        body
    }
}
