//! Who may use the admin listener: the admin token, and browser sessions
//! made from it.
//!
//! - The token is configured (`general.admin_token_env`, `_file`, or
//!   inline), or generated at first start into `<data_dir>/admin.token`
//!   (its owner only) and printed once, like the bot API's. The CLI reads
//!   it the same way ([`cli_token`]). A non-loopback `admin_bind` needs a
//!   configured one (checked with the configuration).
//! - Programs send `Authorization: Bearer <token>`.
//! - A browser signs in with a form that exchanges the token for a
//!   session cookie (`HttpOnly`, `SameSite=Strict`, random, kept in
//!   memory: a restart signs everyone out). Every request that changes
//!   something through a session carries the session's CSRF token (a form
//!   field `csrf` or an `X-CSRF-Token` header) and, when the browser sends
//!   one, an `Origin` of this listener.
//!
//! [`require`] guards every route but `/healthz`, `/metrics`, the public
//! status pages and the sign-in page.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::api::error::error_response;
use crate::config::{Secret, Settings};

/// Where a generated admin token is kept, under the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The session cookie's name.
pub const COOKIE: &str = "sb_admin";

/// How long a browser session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept at once; the oldest goes first.
const MAX_SESSIONS: usize = 256;

/// Largest form a browser posts (a CSRF token and a few ids).
const MAX_FORM: usize = 64 * 1024;

/// `settings` with the admin token the server checks in
/// `admin_token`: the configured one, or the one generated at first start
/// (kept in [`TOKEN_FILE`], printed to stdout once, never logged).
///
/// # Errors
/// When the token file cannot be read or written.
pub fn with_token(mut settings: Settings) -> anyhow::Result<Settings> {
    settings.admin_token = ensure_token(&settings)?;
    Ok(settings)
}

/// The admin token: configured, or generated (see [`with_token`]); `None`
/// when there is no admin listener.
///
/// # Errors
/// When the token file cannot be read or written.
pub fn ensure_token(settings: &Settings) -> anyhow::Result<Option<Secret>> {
    if settings.admin_bind.is_none() {
        return Ok(None);
    }
    if let Some(t) = &settings.admin_token {
        return Ok(Some(t.clone()));
    }
    let path = settings.data_dir.join(TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim();
        if !t.is_empty() {
            tracing::info!(file = %path.display(), "Using the generated admin token kept in its file.");
            return Ok(Some(Secret::new(t.to_owned())));
        }
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let token = format!("{:032x}", rand::thread_rng().gen::<u128>());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{token}")?;
    println!(
        "The admin listener has no configured token; use this one (kept in {}):\n  admin token: {token}",
        path.display()
    );
    Ok(Some(Secret::new(token)))
}

/// The token the CLI sends: the configured one, or the generated one from
/// its file.
///
/// # Errors
/// What to do when there is none yet.
pub fn cli_token(settings: &Settings) -> Result<Secret, String> {
    if let Some(t) = &settings.admin_token {
        return Ok(t.clone());
    }
    let path = settings.data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Secret::new(t.trim().to_owned())),
        _ => Err(format!(
            "no admin token: {} is missing (switchboard writes it at its first start) and \
             general.admin_token_env / admin_token_file is not set",
            path.display()
        )),
    }
}

/// Equal, without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

fn random_id() -> String {
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    expires: Instant,
    /// What the last action did, shown once on the next page.
    flash: Option<Flash>,
}

/// A message for the next page a session sees.
#[derive(Debug, Clone)]
pub struct Flash {
    /// `ok` or `error`.
    pub ok: bool,
    /// The headline.
    pub text: String,
    /// Lines under it (a reload's report).
    pub details: Vec<String>,
}

/// Who the admin listener is talking to (a request extension set by
/// [`require`]).
#[derive(Debug, Clone)]
pub enum Admin {
    /// A program with the bearer token.
    Bearer,
    /// A signed-in browser.
    Browser {
        /// The session id (the cookie's value).
        session: String,
        /// The token its forms carry.
        csrf: String,
    },
}

/// The admin token and the browser sessions.
pub struct AdminAuth {
    token: Secret,
    /// Std mutex: lookups and inserts, never held across await.
    sessions: Mutex<HashMap<String, Session>>,
}

impl AdminAuth {
    /// Checks against `token`.
    #[must_use]
    pub fn new(token: Secret) -> Self {
        Self {
            token,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `candidate` is the admin token.
    #[must_use]
    pub fn is_token(&self, candidate: &str) -> bool {
        same(candidate, self.token.expose())
    }

    /// Starts a session; its id (the cookie's value).
    pub fn open_session(&self) -> String {
        let mut all = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        all.retain(|_, s| s.expires > now);
        if all.len() >= MAX_SESSIONS {
            if let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        let id = random_id();
        all.insert(
            id.clone(),
            Session {
                csrf: random_id(),
                expires: now + SESSION_TTL,
                flash: None,
            },
        );
        id
    }

    /// Ends a session.
    pub fn close_session(&self, id: &str) {
        self.sessions.lock().expect("sessions lock").remove(id);
    }

    fn session(&self, id: &str) -> Option<Session> {
        let all = self.sessions.lock().expect("sessions lock");
        all.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.sessions.lock().expect("sessions lock").get_mut(id) {
            s.flash = Some(flash);
        }
    }

    /// Takes the session's message, if any.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get_mut(id)
            .and_then(|s| s.flash.take())
    }
}

/// The session cookie's value, if the request has one.
#[must_use]
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` value that starts (or, with `None`, ends) a session.
#[must_use]
pub fn set_cookie(session: Option<&str>, headers: &HeaderMap) -> String {
    // Secure only where the browser came over TLS (a proxy in front says
    // so): a Secure cookie is never sent back over plain http.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let tail = if secure { "; Secure" } else { "" };
    match session {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{tail}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{tail}"),
    }
}

/// Whether a browser's `Origin` (when it sent one) is this listener.
#[must_use]
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

/// The middleware that lets only admins through (see the module docs).
pub async fn require(
    State(auth): State<std::sync::Arc<AdminAuth>>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !auth.is_token(given.trim()) {
            return error_response(StatusCode::UNAUTHORIZED, "this is not the admin token");
        }
        req.extensions_mut().insert(Admin::Bearer);
        return next.run(req).await;
    }
    let session = session_cookie(headers).and_then(|id| auth.session(&id).map(|s| (id, s)));
    let Some((id, session)) = session else {
        // A person is sent to sign in; a program is told what is missing.
        if req.method() == Method::GET && req.uri().path().starts_with("/admin") {
            return Redirect::to("/admin/login").into_response();
        }
        return error_response(
            StatusCode::UNAUTHORIZED,
            "the admin token is needed: Authorization: Bearer <token> (see general.admin_token)",
        );
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        if !same_origin(req.headers()) {
            return error_response(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
        let header_csrf = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
        };
        let form_csrf = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        let given = header_csrf.or(form_csrf).unwrap_or_default();
        if !same(&given, &session.csrf) {
            return error_response(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or stale: reload the page and try again",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(Admin::Browser {
        session: id,
        csrf: session.csrf,
    });
    next.run(req).await
}
