//! HTTP ingress: routes an adapter serves on a listener the hub runs (a
//! Matrix appservice's transactions, a Telegram webhook). The hub owns the
//! socket and HTTP; the adapter sees a plain request and answers a plain
//! response, so this crate stays free of I/O. The handler gets the account's
//! [`Host`] to deliver what it received; it answers success only after
//! [`Host::deliver`] returned, exactly as a receive loop acknowledges.

use async_trait::async_trait;

use crate::adapter::Host;

/// One HTTP request to an adapter's listener.
#[derive(Debug, Clone, Default)]
pub struct IngressRequest {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, e.g. `/_matrix/app/v1/transactions/17`.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// Headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl IngressRequest {
    /// A header's value (names compare case-insensitively).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The answer.
#[derive(Debug, Clone, Default)]
pub struct IngressResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl IngressResponse {
    /// A JSON answer.
    #[must_use]
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }
}

/// What serves an adapter's routes.
#[async_trait]
pub trait Ingress: Send + Sync {
    /// Answers one request. Check the request's credentials in constant
    /// time before anything else; answer 5xx (so the sender retries) when
    /// the host could not commit what the request carried.
    async fn handle(&self, host: &dyn Host, req: IngressRequest) -> IngressResponse;
}
