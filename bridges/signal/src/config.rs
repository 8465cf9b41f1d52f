//! `[signal.<name>]`: the raw section as written, and the validated
//! [`SignalConfig`] the adapter runs with.
//!
//! ```toml
//! [signal.main]
//! account = "+15550000001"                 # the number signal-cli is registered with
//! daemon = "tcp://127.0.0.1:7583"          # or "unix:///run/signal-cli/socket", "http://127.0.0.1:8080"
//! # request_timeout = "30s"
//! ```
//!
//! The daemon must run with `--receive-mode=manual`: it then takes messages
//! off Signal's server only while switchboard is subscribed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchboard_core::AccountId;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignal {
    account: Option<String>,
    daemon: Option<String>,
    request_timeout: Option<String>,
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Daemon {
    /// `daemon --tcp HOST:PORT`.
    Tcp(String),
    /// `daemon --socket PATH`.
    Unix(PathBuf),
    /// `daemon --http HOST:PORT`: `POST /api/v1/rpc` and the
    /// `GET /api/v1/events` stream; the base URL.
    Http(String),
}

/// A validated `[signal.<name>]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalConfig {
    /// `signal.<name>`.
    pub account: AccountId,
    /// The account's own number (E.164).
    pub number: String,
    /// Where the daemon listens.
    pub daemon: Daemon,
    /// Longest wait for one request's answer.
    pub request_timeout: Duration,
}

/// Problems, as (key under the section, message).
pub type Problems = Vec<(String, String)>;

/// Validates `[signal.<name>]`.
///
/// # Errors
/// Every problem found, each with its key.
pub fn parse(name: &str, section: &toml::Value) -> Result<SignalConfig, Problems> {
    let raw: RawSignal = switchboard_core::read_section(section)?;
    let mut problems = Vec::new();
    let account = AccountId::new(crate::NETWORK, name)
        .map_err(|e| problems.push((String::new(), e.to_string())))
        .ok();
    let number = match raw.account {
        Some(n)
            if n.starts_with('+') && n.len() > 4 && n[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(n)
        }
        Some(n) => {
            problems.push((
                "account".into(),
                format!("`{n}` is not a phone number like \"+15550000001\""),
            ));
            None
        }
        None => {
            problems.push((
                "account".into(),
                "missing; the number signal-cli is registered with".into(),
            ));
            None
        }
    };
    let daemon = match raw.daemon.as_deref() {
        Some(d) if d.starts_with("tcp://") && d.len() > 6 => Some(Daemon::Tcp(d[6..].to_owned())),
        Some(d) if d.starts_with("http://") && d.len() > 7 => {
            Some(Daemon::Http(d.trim_end_matches('/').to_owned()))
        }
        Some(d) if d.starts_with("unix://") && d.len() > 7 => {
            Some(Daemon::Unix(PathBuf::from(&d[7..])))
        }
        Some(d) => {
            problems.push((
                "daemon".into(),
                format!("`{d}` is not \"tcp://HOST:PORT\", \"unix:///path/to/socket\" or \"http://HOST:PORT\""),
            ));
            None
        }
        None => Some(Daemon::Tcp("127.0.0.1:7583".into())),
    };
    let request_timeout = match raw
        .request_timeout
        .as_deref()
        .map(humantime::parse_duration)
    {
        None => Duration::from_secs(30),
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(("request_timeout".into(), format!("not a duration: {e}")));
            Duration::from_secs(30)
        }
    };
    match (account, number, daemon) {
        (Some(account), Some(number), Some(daemon)) if problems.is_empty() => Ok(SignalConfig {
            account,
            number,
            daemon,
            request_timeout,
        }),
        _ => Err(problems),
    }
}

/// Whether a channel is a phone number (E.164: `+` and 5 to 15 digits)
/// rather than a group id (base64, which may also start with `+`).
#[must_use]
pub fn is_number(channel: &str) -> bool {
    channel
        .strip_prefix('+')
        .is_some_and(|d| (5..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a gateway member's channel: a group id (base64) or a phone number.
///
/// # Errors
/// What is wrong with it.
pub fn check_channel(channel: &str) -> Result<(), String> {
    let number = is_number(channel);
    let group = channel.len() >= 24
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if number || group {
        Ok(())
    } else {
        Err(format!(
            "`{channel}` is not a Signal group id (base64) or a phone number like \"+15550000002\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_channels() {
        let ok: toml::Value =
            toml::from_str("account = \"+15550000001\"\ndaemon = \"unix:///run/s.sock\"").unwrap();
        let c = parse("main", &ok).unwrap();
        assert_eq!(c.daemon, Daemon::Unix("/run/s.sock".into()));
        let bad: toml::Value = toml::from_str("account = \"555\"\ndaemon = \"https://x\"").unwrap();
        let keys: Vec<String> = parse("main", &bad)
            .unwrap_err()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(keys, ["account", "daemon"]);
        let typo: toml::Value = toml::from_str("acount = \"+1\"").unwrap();
        assert_eq!(parse("main", &typo).unwrap_err()[0].0, "acount");
        assert!(check_channel("+15550000002").is_ok());
        assert!(check_channel("mJ8c0YQ4d3yq3bq1p8m2x1l2cYQ4d3yq3bq1p8m2x1k=").is_ok());
        assert!(check_channel("lobby").is_err());
    }
}
