//! One Bot API call per function: the HTTP request, the `{ok, result}`
//! envelope ([`envelope`]), and a [`CallError`] that keeps what Telegram said
//! (`error_code`, `description`, `retry_after`, `migrate_to_chat_id`) so the
//! adapter classifies it itself. No retries here.
//!
//! The token is part of every URL (`/bot<token>/<method>`), so no error
//! leaves this module with its URL: reqwest's errors are stripped of it.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Telegram answered `ok: false`.
    #[error("Telegram answered {code}: {description}")]
    Api {
        /// `error_code` (also the HTTP status).
        code: u16,
        /// `description`.
        description: String,
        /// `parameters.retry_after`, seconds.
        retry_after: Option<u64>,
        /// `parameters.migrate_to_chat_id`.
        migrate_to: Option<i64>,
    },
    /// No connection could be made (refused, DNS, TLS).
    #[error("cannot reach the Bot API: {0}")]
    Connect(String),
    /// The request timed out, or the connection broke mid-answer.
    #[error("no complete answer from the Bot API: {0}")]
    Timeout(String),
    /// An answer that is not the Bot API's envelope.
    #[error("unexpected answer from the Bot API: {0}")]
    Decode(String),
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// A Bot API client for one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `<api_url>/bot<token>/`
    methods: String,
    /// `<api_url>/file/bot<token>/`
    files: String,
}

impl Client {
    /// A client of the server at `api_url` for `token`.
    #[must_use]
    pub fn new(api_url: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            http,
            methods: format!("{api_url}/bot{token}/"),
            files: format!("{api_url}/file/bot{token}/"),
        }
    }

    /// Calls `method` with JSON parameters.
    ///
    /// # Errors
    /// A [`CallError`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &serde_json::Value,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let req = self
            .http
            .post(format!("{}{method}", self.methods))
            .timeout(timeout)
            .json(params);
        decode(self.answer(req).await?)
    }

    /// Calls `method` with a multipart form (file uploads).
    ///
    /// # Errors
    /// A [`CallError`].
    pub async fn call_multipart<T: DeserializeOwned>(
        &self,
        method: &str,
        form: reqwest::multipart::Form,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let req = self
            .http
            .post(format!("{}{method}", self.methods))
            .timeout(timeout)
            .multipart(form);
        decode(self.answer(req).await?)
    }

    /// Downloads a file `getFile` named, refusing more than `max` bytes.
    ///
    /// # Errors
    /// A [`CallError`]; `Api` with code 413 when the file is too large.
    pub async fn download(
        &self,
        file_path: &str,
        max: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let mut resp = self
            .http
            .get(format!("{}{file_path}", self.files))
            .timeout(timeout)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(CallError::Api {
                code: resp.status().as_u16(),
                description: format!("file download answered {}", resp.status()),
                retry_after: None,
                migrate_to: None,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() as u64 + chunk.len() as u64 > max {
                return Err(too_big(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    async fn answer(&self, req: reqwest::RequestBuilder) -> Result<serde_json::Value, CallError> {
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let header_retry = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = resp.bytes().await.map_err(transport)?;
        envelope(status, header_retry, &body)
    }
}

/// Reads an answer: `ok: true` is a success whatever its `result` (which
/// may be absent or `null`: a proxy, an older or local server; the caller
/// reads what it needs from it), `ok: false` Telegram's refusal.
///
/// # Errors
/// The refusal, or an answer that is not the Bot API's envelope.
pub fn envelope(
    status: u16,
    header_retry: Option<u64>,
    body: &[u8],
) -> Result<serde_json::Value, CallError> {
    let env: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) => {
            // A proxy's error page, or a truncated answer.
            if (200..300).contains(&status) {
                return Err(CallError::Decode(format!(
                    "HTTP {status} with a body that is not the Bot API's JSON"
                )));
            }
            return Err(CallError::Api {
                code: status,
                description: format!("HTTP {status} without a Bot API answer"),
                retry_after: header_retry,
                migrate_to: None,
            });
        }
    };
    if env.ok {
        return Ok(env.result.unwrap_or(serde_json::Value::Null));
    }
    let params = env.parameters.unwrap_or(Parameters {
        retry_after: None,
        migrate_to_chat_id: None,
    });
    Err(CallError::Api {
        code: env.error_code.unwrap_or(status),
        description: env.description.unwrap_or_else(|| format!("HTTP {status}")),
        retry_after: params.retry_after.or(header_retry),
        migrate_to: params.migrate_to_chat_id,
    })
}

fn decode<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, CallError> {
    serde_json::from_value(v).map_err(|e| CallError::Decode(e.to_string()))
}

fn too_big(max: u64) -> CallError {
    CallError::Api {
        code: 413,
        description: format!("the file is larger than {max} bytes"),
        retry_after: None,
        migrate_to: None,
    }
}

/// A transport failure, without the URL (it holds the token).
fn transport(e: reqwest::Error) -> CallError {
    let connect = e.is_connect();
    let timeout = e.is_timeout();
    let text = error_chain(&e.without_url());
    if connect {
        CallError::Connect(text)
    } else if timeout {
        CallError::Timeout(format!("timed out ({text})"))
    } else {
        CallError::Timeout(text)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
