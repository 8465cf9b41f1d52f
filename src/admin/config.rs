//! The admin listener's keys of `[general]`: its token and the public URL
//! of its status pages. Checked here, called from the configuration's
//! validation like any section's checks.

use std::net::SocketAddr;

use switchboard_core::Secrets;

use crate::config::Secret;

/// The keys as written.
#[derive(Debug, Default, Clone, Copy)]
pub struct GeneralKeys<'a> {
    /// `admin_token`.
    pub admin_token: Option<&'a str>,
    /// `admin_token_env`.
    pub admin_token_env: Option<&'a str>,
    /// `admin_token_file`.
    pub admin_token_file: Option<&'a str>,
    /// `public_url`.
    pub public_url: Option<&'a str>,
}

/// The shortest configured admin token: it guards pause, reload and the
/// dead letters.
const MIN_TOKEN: usize = 16;

/// Checks the keys; `issue` gets each problem (key, message). Returns the
/// configured token and the public URL (without a trailing slash).
pub fn general(
    issue: &mut dyn FnMut(&str, String),
    secrets: &dyn Secrets,
    keys: GeneralKeys<'_>,
    admin_bind: Option<SocketAddr>,
) -> (Option<Secret>, Option<String>) {
    let token = match secrets.resolve(
        "general.admin_token",
        keys.admin_token,
        keys.admin_token_env,
        keys.admin_token_file,
    ) {
        Ok(Some(t)) if t.len() < MIN_TOKEN => {
            issue(
                "general.admin_token",
                format!("must be at least {MIN_TOKEN} characters"),
            );
            None
        }
        Ok(t) => t.map(Secret::new),
        Err((key, message)) => {
            issue(&key, message);
            None
        }
    };
    // A generated token is for someone on this machine, who can read it in
    // the data directory; a listener others can reach is a deliberate
    // choice, made with a token the admin manages.
    if let Some(addr) = admin_bind {
        if !addr.ip().is_loopback() && token.is_none() {
            issue(
                "general.admin_bind",
                format!(
                    "{addr} is not a loopback address: set general.admin_token_env or \
                     general.admin_token_file so only admins can use it"
                ),
            );
        }
    }
    let public_url = keys
        .public_url
        .and_then(|raw| match reqwest::Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {
                Some(u.as_str().trim_end_matches('/').to_owned())
            }
            Ok(_) => {
                issue(
                    "general.public_url",
                    "must be an http:// or https:// URL without a query".into(),
                );
                None
            }
            Err(e) => {
                issue("general.public_url", format!("not a URL: {e}"));
                None
            }
        });
    (token, public_url)
}
