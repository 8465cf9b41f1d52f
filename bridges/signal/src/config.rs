//! `[signal.<name>]`: the raw section as written, and the validated
//! [`SignalConfig`] the adapter runs with.
//!
//! ```toml
//! [signal.main]
//! account = "+15550000001"                 # the number signal-cli is registered with
//! daemon = "tcp://127.0.0.1:7583"          # or "unix:///run/signal-cli/socket", "http://127.0.0.1:8080"
//! # request_timeout = "30s"
//! # show_numbers = false                 # phone numbers stay on Signal
//! # spool_dir = "/var/lib/switchboard/signal-spool"   # or "off"
//! # daemon_spool_dir = "/spool"          # the same directory as the daemon sees it
//! ```
//!
//! The daemon must run with `--receive-mode=manual`: it then takes messages
//! off Signal's server only while switchboard is subscribed.
//!
//! # Files to Signal
//! signal-cli reads an attachment from a path it can open, or from a data
//! URI inside the request. A data URI is a JSON string, and signal-cli reads
//! none over 20,000,000 characters: about 14.3 MiB of file. So where the
//! daemon shares a file system with switchboard (a `unix://` socket, a
//! `tcp://` or `http://` daemon on a loopback address) files go through a
//! spool directory by path, up to Signal's own 100 MiB; elsewhere, or with
//! `spool_dir = "off"`, as data URIs. The spool defaults to
//! `switchboard-signal-<name>` in the system's temporary directory, made
//! traversable but not listable by others (0711) so a daemon running as
//! another user can open a file whose random name it is given, and nobody
//! can list them. `daemon_spool_dir` is the same directory as the daemon
//! sees it (a container's mount point).

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
    show_numbers: Option<bool>,
    spool_dir: Option<String>,
    daemon_spool_dir: Option<String>,
}

/// Where files to Signal are put for the daemon to read by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    /// Where switchboard writes them.
    pub dir: PathBuf,
    /// The same directory as the daemon sees it.
    pub daemon_dir: PathBuf,
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
    /// Longest wait for one request's answer (a send with files waits
    /// longer, as its upload takes).
    pub request_timeout: Duration,
    /// Show Signal users' phone numbers to the other networks where no
    /// profile or contact name is known (off: a neutral label instead).
    pub show_numbers: bool,
    /// Files by path through this directory; `None`: as data URIs.
    pub spool: Option<Spool>,
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
    let spool = match (raw.spool_dir.as_deref(), &daemon) {
        (Some("off"), _) => {
            if raw.daemon_spool_dir.is_some() {
                problems.push((
                    "daemon_spool_dir".into(),
                    "given, but spool_dir is \"off\"".into(),
                ));
            }
            None
        }
        (Some(""), _) => {
            problems.push((
                "spool_dir".into(),
                "empty; a directory, or \"off\" to send files inside the request".into(),
            ));
            None
        }
        (Some(dir), _) => {
            let dir = PathBuf::from(dir);
            let daemon_dir = raw
                .daemon_spool_dir
                .as_deref()
                .map_or_else(|| dir.clone(), PathBuf::from);
            Some(Spool { dir, daemon_dir })
        }
        (None, Some(d)) if d.is_local() => {
            let dir = std::env::temp_dir().join(format!("switchboard-signal-{name}"));
            let daemon_dir = raw
                .daemon_spool_dir
                .as_deref()
                .map_or_else(|| dir.clone(), PathBuf::from);
            Some(Spool { dir, daemon_dir })
        }
        (None, _) => {
            if raw.daemon_spool_dir.is_some() {
                problems.push((
                    "daemon_spool_dir".into(),
                    "given without spool_dir, for a daemon on another machine".into(),
                ));
            }
            None
        }
    };
    match (account, number, daemon) {
        (Some(account), Some(number), Some(daemon)) if problems.is_empty() => Ok(SignalConfig {
            account,
            number,
            daemon,
            request_timeout,
            show_numbers: raw.show_numbers.unwrap_or(false),
            spool,
        }),
        _ => Err(problems),
    }
}

impl Daemon {
    /// Whether the daemon runs on this machine (a UNIX socket, or a
    /// loopback address), so it can read files by path.
    #[must_use]
    pub fn is_local(&self) -> bool {
        let host_port = match self {
            Daemon::Unix(_) => return true,
            Daemon::Tcp(addr) => addr.as_str(),
            Daemon::Http(base) => base.trim_start_matches("http://"),
        };
        let host = match host_port.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
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

    #[test]
    fn files_go_by_path_to_a_daemon_on_this_machine() {
        let cfg = |extra: &str| {
            let v: toml::Value =
                toml::from_str(&format!("account = \"+15550000001\"\n{extra}")).unwrap();
            parse("main", &v)
        };
        let local = cfg("daemon = \"tcp://127.0.0.1:7583\"").unwrap();
        assert!(local
            .spool
            .is_some_and(|s| s.dir.ends_with("switchboard-signal-main")));
        assert!(!local.show_numbers);
        assert!(cfg("daemon = \"http://localhost:8080\"")
            .unwrap()
            .spool
            .is_some());
        assert!(cfg("daemon = \"tcp://[::1]:7583\"")
            .unwrap()
            .spool
            .is_some());
        assert!(cfg("daemon = \"tcp://10.0.0.5:7583\"")
            .unwrap()
            .spool
            .is_none());
        assert!(cfg("daemon = \"tcp://127.0.0.1:1\"\nspool_dir = \"off\"")
            .unwrap()
            .spool
            .is_none());
        let mapped = cfg(
            "daemon = \"tcp://10.0.0.5:7583\"\nspool_dir = \"/srv/s\"\ndaemon_spool_dir = \"/spool\"\nshow_numbers = true",
        )
        .unwrap();
        assert_eq!(
            mapped.spool,
            Some(Spool {
                dir: "/srv/s".into(),
                daemon_dir: "/spool".into()
            })
        );
        assert!(mapped.show_numbers);
        let bad = cfg("daemon = \"tcp://10.0.0.5:1\"\ndaemon_spool_dir = \"/spool\"").unwrap_err();
        assert_eq!(bad[0].0, "daemon_spool_dir");
    }
}
