//! One homeserver's client-server API: every request and response is a
//! ruma type, sent with reqwest; errors are classified once, in
//! [`MxError`], for both the receive loop and sends.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::error::{ErrorBody, ErrorKind, RetryAfter};
use ruma::api::path_builder::{PathBuilder, SinglePath, VersionHistory};
use ruma::api::{
    AppserviceUserIdentity, IncomingResponseExt, OutgoingRequest, OutgoingRequestAppserviceExt,
    SupportedVersions,
};
use ruma::UserId;
use switchboard_core::SendError;

/// What went wrong talking to the homeserver.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MxError {
    /// Nothing listens (connection refused, no route): the homeserver is down.
    #[error("cannot connect to the homeserver: {0}")]
    Connect(String),
    /// No answer in time.
    #[error("the homeserver did not answer in time")]
    Timeout,
    /// The connection broke mid-request.
    #[error("network error: {0}")]
    Network(String),
    /// The homeserver answered with a Matrix error.
    #[error("{status} {errcode}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `M_FORBIDDEN`, `M_LIMIT_EXCEEDED`, ...
        errcode: String,
        /// The server's sentence.
        message: String,
        /// How long to wait, from `retry_after_ms` or `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// A body larger than allowed.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// An answer that is not what the specification says.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The request could not be built (an id the API refuses).
    #[error("cannot build the request: {0}")]
    Build(String),
    /// The request needs an access token and the account has none yet (a
    /// send racing the sign-in at start). Not sent; the account waits for
    /// its sign-in (not a refused token: that would sign in afresh).
    #[error("not signed in to the homeserver yet")]
    NotSignedIn,
}

impl MxError {
    /// The Matrix error code, if the homeserver sent one.
    #[must_use]
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// Whether the account's credentials were refused.
    #[must_use]
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Api { status: 401, .. })
            || matches!(self.errcode(), Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN"))
    }

    /// The outbox's view: retry, pause the account, or dead-letter.
    #[must_use]
    pub fn send_error(&self) -> SendError {
        let msg = self.to_string();
        match self {
            Self::Connect(_) => SendError::account_down(msg, None),
            Self::Timeout | Self::Network(_) | Self::Decode(_) => SendError::transient(msg, None),
            Self::Api {
                status,
                retry_after,
                ..
            } if *status == 429 || self.errcode() == Some("M_LIMIT_EXCEEDED") => {
                SendError::rate_limited(msg, *retry_after)
            }
            Self::Api { status, .. } if *status >= 500 => SendError::transient(msg, None),
            // Still signing in: the send waits for the account to be ready.
            Self::NotSignedIn => SendError::not_ready(msg),
            _ if self.is_auth() => SendError::account_down(msg, None),
            Self::Api { .. } | Self::TooLarge(_) | Self::Build(_) => SendError::permanent(msg),
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Connect(root_cause(e))
        } else {
            Self::Network(root_cause(e))
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// How long a download may take: the homeserver's answer within
/// `first_byte`, and the whole file within `first_byte` plus its size at
/// `min_rate` (the size the answer announces, else the most it may be), so
/// a large file from a slow federated server is not cut off like a stalled
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Until the answer's headers.
    pub first_byte: Duration,
    /// The slowest transfer rate allowed for, in bytes per second.
    pub min_rate: u64,
    /// Done by then whatever the size (an appservice transaction's files
    /// must be fetched before the homeserver gives up on it).
    pub by: Option<std::time::Instant>,
}

impl Budget {
    /// The whole time allowed for `bytes`.
    #[must_use]
    pub fn for_size(&self, bytes: u64) -> Duration {
        let rate = self.min_rate.max(1);
        self.first_byte
            .saturating_add(Duration::from_millis(bytes.saturating_mul(1000) / rate))
    }
}

/// Picks an endpoint's path from the server's versions, for either kind of
/// path ruma describes.
pub trait Paths: PathBuilder {
    /// The path builder's input.
    fn input(versions: &SupportedVersions) -> Self::Input<'_>;
}

impl Paths for VersionHistory {
    fn input(versions: &SupportedVersions) -> Cow<'_, SupportedVersions> {
        Cow::Borrowed(versions)
    }
}

impl Paths for SinglePath {
    fn input(_: &SupportedVersions) {}
}

/// One account's connection to its homeserver.
pub struct Client {
    http: reqwest::Client,
    base: String,
    versions: std::sync::RwLock<SupportedVersions>,
    token: std::sync::RwLock<String>,
    /// An appservice sends its token on every request, also where the
    /// endpoint's token is optional (`/register` for a ghost).
    always_token: std::sync::atomic::AtomicBool,
}

impl Client {
    /// A client for `base` (the client-server API's URL).
    #[must_use]
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        // Until `/versions` answers: the versions every current server has.
        let versions = SupportedVersions::from_parts(&["v1.11".to_owned()], &Default::default());
        Self {
            http,
            base: base.to_owned(),
            versions: std::sync::RwLock::new(versions),
            token: std::sync::RwLock::new(String::new()),
            always_token: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sets the access token used from now on.
    pub fn set_token(&self, token: &str) {
        token.clone_into(
            &mut self
                .token
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// Sends the token on every request (an appservice's `as_token`).
    pub fn set_token_always(&self, token: &str) {
        self.set_token(token);
        self.always_token
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the server serves authenticated media (Matrix 1.11).
    #[must_use]
    pub fn authenticated_media(&self) -> bool {
        self.versions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .versions
            .contains(&ruma::api::MatrixVersion::V1_11)
    }

    /// Asks the server which versions it speaks (no token needed).
    ///
    /// # Errors
    /// When it does not answer.
    pub async fn discover(&self) -> Result<(), MxError> {
        let res = self
            .call(
                ruma::api::client::discovery::get_supported_versions::Request::new(),
                None,
                Duration::from_secs(15),
                1 << 20,
            )
            .await?;
        *self
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            SupportedVersions::from_parts(&res.versions, &res.unstable_features);
        Ok(())
    }

    /// A small request (a profile, a membership): 30 s, 1 MiB answer.
    ///
    /// # Errors
    /// [`MxError`], classified.
    pub async fn call_small<R>(
        &self,
        req: R,
        user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, MxError>
    where
        R: OutgoingRequest,
        R::PathBuilder: Paths,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.call(req, user, Duration::from_secs(30), 1 << 20).await
    }

    /// Sends one request, as the account or (an appservice) as `user`,
    /// waiting at most `timeout` and reading at most `max_body` bytes.
    ///
    /// # Errors
    /// [`MxError`], classified.
    pub async fn call<R>(
        &self,
        req: R,
        user: Option<&UserId>,
        timeout: Duration,
        max_body: u64,
    ) -> Result<R::IncomingResponse, MxError>
    where
        R: OutgoingRequest,
        R::PathBuilder: Paths,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let builder = self.prepare(req, user)?;
        let started = tokio::time::Instant::now();
        let answer = builder
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| MxError::from_reqwest(&e))?;
        Self::finish::<R>(answer, max_body, started + timeout).await
    }

    /// Downloads with a [`Budget`] instead of a flat timeout: the answer's
    /// headers within `budget.first_byte`, the body within the time its
    /// announced size takes at `budget.min_rate`.
    ///
    /// # Errors
    /// [`MxError`], classified; [`MxError::Timeout`] when the budget ran out.
    pub async fn download<R>(
        &self,
        req: R,
        budget: Budget,
        max_body: u64,
    ) -> Result<R::IncomingResponse, MxError>
    where
        R: OutgoingRequest,
        R::PathBuilder: Paths,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let builder = self.prepare(req, None)?;
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(budget.first_byte, builder.send())
            .await
            .map_err(|_| MxError::Timeout)?
            .map_err(|e| MxError::from_reqwest(&e))?;
        let size = answer.content_length().unwrap_or(max_body).min(max_body);
        let mut deadline = started + budget.for_size(size);
        if let Some(by) = budget.by {
            deadline = deadline.min(tokio::time::Instant::from_std(by));
        }
        Self::finish::<R>(answer, max_body, deadline).await
    }

    /// The HTTP request for `req`, as the account or (an appservice) as
    /// `user`.
    fn prepare<R>(&self, req: R, user: Option<&UserId>) -> Result<reqwest::RequestBuilder, MxError>
    where
        R: OutgoingRequest,
        R::PathBuilder: Paths,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let token = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let http_req: http::Request<Vec<u8>> = {
            let versions = self
                .versions
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let identity =
                user.map_or_else(AppserviceUserIdentity::default, AppserviceUserIdentity::new);
            // No token yet: none sent, not an empty one. An empty bearer is
            // refused (401) even where a token is optional (`/versions`),
            // which made every start sign in afresh, as a new device; and
            // the homeserver keys transaction ids by device, so a send
            // retried after a restart was posted twice.
            let access = if token.is_empty() {
                SendAccessToken::None
            } else if self.always_token.load(std::sync::atomic::Ordering::Relaxed) {
                SendAccessToken::Always(&token)
            } else {
                SendAccessToken::IfRequired(&token)
            };
            req.try_into_http_request_with_identity(
                &self.base,
                access,
                identity,
                R::PathBuilder::input(&versions),
            )
            .map_err(|e| match e {
                ruma::api::error::IntoHttpError::Authentication(_) if token.is_empty() => {
                    MxError::NotSignedIn
                }
                e => MxError::Build(e.to_string()),
            })?
        };
        let (parts, body) = http_req.into_parts();
        let url = parts.uri.to_string();
        let mut builder = self.http.request(parts.method, url).body(body);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        Ok(builder)
    }

    /// Reads an answer's body (by `deadline`, at most `max_body` bytes)
    /// and decodes it as `R`'s response or a Matrix error.
    async fn finish<R>(
        mut resp: reqwest::Response,
        max_body: u64,
        deadline: tokio::time::Instant,
    ) -> Result<R::IncomingResponse, MxError>
    where
        R: OutgoingRequest,
    {
        let status = resp.status();
        let headers = resp.headers().clone();
        if resp.content_length().is_some_and(|n| n > max_body) {
            return Err(MxError::TooLarge(max_body));
        }
        let mut bytes = Vec::new();
        loop {
            let chunk = tokio::time::timeout_at(deadline, resp.chunk())
                .await
                .map_err(|_| MxError::Timeout)?
                .map_err(|e| MxError::from_reqwest(&e))?;
            let Some(chunk) = chunk else { break };
            if bytes.len() as u64 + chunk.len() as u64 > max_body {
                return Err(MxError::TooLarge(max_body));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.as_u16() >= 400 {
            return Err(api_error(status, &headers, &bytes));
        }
        let mut builder = http::Response::builder().status(status);
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        let http_resp = builder
            .body(bytes.as_slice())
            .map_err(|e| MxError::Decode(e.to_string()))?;
        R::IncomingResponse::try_from_http_response(http_resp)
            .map_err(|e| MxError::Decode(e.to_string()))
    }
}

/// A Matrix error response, read with ruma's error types.
fn api_error(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> MxError {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let err = builder
        .body(body)
        .map(<ruma::api::error::Error as ruma::api::EndpointError>::from_http_response);
    let (errcode, message, mut retry_after) = match &err {
        Ok(e) => match &e.body {
            ErrorBody::Standard(s) => {
                let retry = match &s.kind {
                    ErrorKind::LimitExceeded(d) => d.retry_after.as_ref().map(|r| match r {
                        RetryAfter::Delay(d) => *d,
                        RetryAfter::DateTime(t) => {
                            t.duration_since(SystemTime::now()).unwrap_or_default()
                        }
                    }),
                    _ => None,
                };
                (s.kind.errcode().to_string(), s.message.clone(), retry)
            }
            _ => (
                String::new(),
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                None,
            ),
        },
        Err(_) => (String::new(), String::new(), None),
    };
    if retry_after.is_none() {
        retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
    }
    MxError::Api {
        status: status.as_u16(),
        errcode,
        message,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> MxError {
        api_error(
            http::StatusCode::from_u16(status).unwrap(),
            &http::HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn errors_are_classified_as_the_issue_says() {
        use switchboard_core::RetryKind;
        let limited = err(
            429,
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many","retry_after_ms":1500}"#,
        );
        assert!(
            matches!(limited, MxError::Api { retry_after: Some(d), .. } if d == Duration::from_millis(1500))
        );
        let e = limited.send_error();
        assert_eq!(
            e.retry_kind(),
            RetryKind::Transient {
                retry_after: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            err(502, "<html>bad gateway</html>")
                .send_error()
                .retry_kind(),
            RetryKind::Transient { retry_after: None }
        );
        assert_eq!(
            err(403, r#"{"errcode":"M_FORBIDDEN","error":"not in room"}"#)
                .send_error()
                .retry_kind(),
            RetryKind::Permanent
        );
        assert_eq!(
            err(401, r#"{"errcode":"M_UNKNOWN_TOKEN","error":"gone"}"#)
                .send_error()
                .retry_kind(),
            RetryKind::AccountDown { retry_after: None }
        );
        assert_eq!(
            MxError::Connect("refused".into()).send_error().retry_kind(),
            RetryKind::AccountDown { retry_after: None }
        );
        assert_eq!(
            MxError::Timeout.send_error().retry_kind(),
            RetryKind::Transient { retry_after: None }
        );
    }

    /// A send before the sign-in is not sent (nothing listens on port 9)
    /// and waits for the sign-in, where it used to go out with an empty
    /// bearer; it does not pause the account (nothing failed).
    #[tokio::test]
    async fn a_send_before_the_sign_in_is_not_sent_and_waits_for_it() {
        let client = Client::new("http://127.0.0.1:9");
        let room: ruma::OwnedRoomId = "!r:localhost".try_into().unwrap();
        let content = ruma::events::room::message::RoomMessageEventContent::text_plain("hi");
        let req = ruma::api::client::message::send_message_event::v3::Request::new(
            room,
            "t1".into(),
            &content,
        )
        .unwrap();
        let e = client
            .call(req, None, Duration::from_secs(1), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(e, MxError::NotSignedIn), "{e:?}");
        assert_eq!(
            e.send_error().retry_kind(),
            switchboard_core::RetryKind::NotReady
        );
    }

    #[test]
    fn a_download_budget_grows_with_the_size() {
        let b = Budget {
            first_byte: Duration::from_secs(30),
            min_rate: 256 * 1024,
            by: None,
        };
        assert_eq!(b.for_size(0), Duration::from_secs(30));
        assert_eq!(b.for_size(20 << 20), Duration::from_secs(30 + 80));
    }
}
