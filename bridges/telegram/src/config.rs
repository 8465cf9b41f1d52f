//! `[telegram.<name>]`: the raw section as written, and the validated
//! [`TelegramConfig`] the adapter runs with.
//!
//! ```toml
//! [telegram.main]
//! token_env = "TELEGRAM_TOKEN"        # or token = "...", token_file = "..."
//! # api_url = "https://api.telegram.org"
//! # poll_timeout = "30s"
//! # pace_per_chat = "3s"              # Telegram: about 20 messages/min per group
//! # pace_per_bot = "35ms"             # and about 30 messages/s per bot; "0s" = off
//! # max_download = "20MiB"
//! # receive = "webhook"               # instead of long polling:
//! # webhook_bind = "127.0.0.1:8443"   #   the listener switchboard runs
//! # webhook_url = "https://bridge.example.org/telegram"  # what Telegram calls
//! # webhook_secret_env = "TELEGRAM_WEBHOOK_SECRET"       # checked on every call
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use switchboard_core::{AccountId, Secrets};

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    token: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    api_url: Option<String>,
    poll_timeout: Option<String>,
    pace_per_chat: Option<String>,
    pace_per_bot: Option<String>,
    max_download: Option<String>,
    receive: Option<String>,
    webhook_bind: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    webhook_secret_env: Option<String>,
    webhook_secret_file: Option<String>,
}

/// How updates reach switchboard.
#[derive(Clone, PartialEq, Eq)]
pub enum Receive {
    /// `getUpdates` long polling (the default; needs no public address).
    Poll,
    /// Telegram POSTs each update to `url`, which reaches `bind`.
    Webhook {
        /// The listener switchboard runs.
        bind: std::net::SocketAddr,
        /// The public HTTPS URL given to `setWebhook`.
        url: String,
        /// Telegram sends it in `X-Telegram-Bot-Api-Secret-Token`.
        secret: String,
    },
}

/// A validated `[telegram.<name>]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct TelegramConfig {
    /// `telegram.<name>`.
    pub account: AccountId,
    /// The bot token from @BotFather.
    pub token: String,
    /// The Bot API server, without a trailing slash.
    pub api_url: String,
    /// How long one `getUpdates` long poll waits for news.
    pub poll_timeout: Duration,
    /// Least time between two sends into one chat; zero: no pacing.
    pub pace_per_chat: Duration,
    /// Least time between two sends of the bot; zero: no pacing.
    pub pace_per_bot: Duration,
    /// Largest file downloaded (the public server serves bots up to 20 MB).
    pub max_download: u64,
    /// Long polling or a webhook.
    pub receive: Receive,
}

impl fmt::Debug for TelegramConfig {
    // The token never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("account", &self.account)
            .field("token", &"<secret>")
            .field("api_url", &self.api_url)
            .field("poll_timeout", &self.poll_timeout)
            .field(
                "receive",
                &match &self.receive {
                    Receive::Poll => "poll".to_owned(),
                    Receive::Webhook { bind, url, .. } => format!("webhook {url} on {bind}"),
                },
            )
            .finish_non_exhaustive()
    }
}

/// Problems, as (key under the section, message).
pub type Problems = Vec<(String, String)>;

/// Validates the section `[telegram.<name>]`.
///
/// # Errors
/// Every problem found, each with the key it is about.
pub fn parse(
    name: &str,
    section: &toml::Value,
    secrets: &dyn Secrets,
) -> Result<TelegramConfig, Problems> {
    let raw: RawTelegram = switchboard_core::read_section(section)?;
    let mut problems = Vec::new();
    let account = match AccountId::new(crate::NETWORK, name) {
        Ok(a) => Some(a),
        Err(e) => {
            problems.push((String::new(), e.to_string()));
            None
        }
    };
    let token = match secrets.resolve(
        "token",
        raw.token.as_deref(),
        raw.token_env.as_deref(),
        raw.token_file.as_deref(),
    ) {
        Ok(Some(t)) if valid_token(&t) => Some(t),
        Ok(Some(_)) => {
            problems.push((
                "token".into(),
                "is not a bot token like \"123456:ABC-DEF...\" (ask @BotFather)".into(),
            ));
            None
        }
        Ok(None) => {
            problems.push((
                "token".into(),
                "missing; set `token`, `token_env` or `token_file` (from @BotFather)".into(),
            ));
            None
        }
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let api_url = raw
        .api_url
        .as_deref()
        .unwrap_or("https://api.telegram.org")
        .trim_end_matches('/')
        .to_owned();
    match reqwest::Url::parse(&api_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => problems.push((
            "api_url".into(),
            format!("`{api_url}` is not an http:// or https:// URL"),
        )),
    }
    let mut duration = |key: &str, raw: Option<&String>, default: Duration| match raw {
        None => default,
        Some(s) => humantime::parse_duration(s).unwrap_or_else(|e| {
            problems.push((key.into(), format!("`{s}` is not a duration: {e}")));
            default
        }),
    };
    let poll_timeout = duration("poll_timeout", raw.poll_timeout.as_ref(), secs(30));
    let pace_per_chat = duration("pace_per_chat", raw.pace_per_chat.as_ref(), secs(3));
    let pace_per_bot = duration(
        "pace_per_bot",
        raw.pace_per_bot.as_ref(),
        Duration::from_millis(35),
    );
    if poll_timeout > secs(50) {
        problems.push((
            "poll_timeout".into(),
            "Telegram holds a long poll at most 50 s".into(),
        ));
    }
    let max_download = match raw.max_download.as_deref().map(parse_size) {
        None => 20 * 1024 * 1024,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            problems.push(("max_download".into(), e));
            0
        }
    };
    let receive = match raw.receive.as_deref() {
        None | Some("poll") => Receive::Poll,
        Some("webhook") => {
            let bind = match raw.webhook_bind.as_deref().map(str::parse) {
                Some(Ok(a)) => Some(a),
                Some(Err(_)) => {
                    problems.push((
                        "webhook_bind".into(),
                        "is not an address like \"127.0.0.1:8443\"".into(),
                    ));
                    None
                }
                None => {
                    problems.push((
                        "webhook_bind".into(),
                        "missing; the address switchboard listens on for Telegram's calls".into(),
                    ));
                    None
                }
            };
            let url = match raw.webhook_url.as_deref().map(reqwest::Url::parse) {
                Some(Ok(u)) if matches!(u.scheme(), "https" | "http") => Some(u.to_string()),
                Some(_) => {
                    problems.push((
                        "webhook_url".into(),
                        "is not an https:// URL (Telegram calls only HTTPS on ports 443, 80, 88 or 8443)".into(),
                    ));
                    None
                }
                None => {
                    problems.push((
                        "webhook_url".into(),
                        "missing; the public HTTPS URL Telegram calls (forwarded to webhook_bind)"
                            .into(),
                    ));
                    None
                }
            };
            let secret = match secrets.resolve(
                "webhook_secret",
                raw.webhook_secret.as_deref(),
                raw.webhook_secret_env.as_deref(),
                raw.webhook_secret_file.as_deref(),
            ) {
                Ok(Some(s))
                    if (1..=256).contains(&s.len())
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    Some(s)
                }
                Ok(Some(_)) => {
                    problems.push((
                        "webhook_secret".into(),
                        "must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)"
                            .into(),
                    ));
                    None
                }
                Ok(None) => {
                    problems.push((
                        "webhook_secret".into(),
                        "missing; set `webhook_secret`, `webhook_secret_env` or `webhook_secret_file`".into(),
                    ));
                    None
                }
                Err(p) => {
                    problems.push(p);
                    None
                }
            };
            match (bind, url, secret) {
                (Some(bind), Some(url), Some(secret)) => Receive::Webhook { bind, url, secret },
                _ => Receive::Poll,
            }
        }
        Some(other) => {
            problems.push((
                "receive".into(),
                format!("`{other}` is not \"poll\" or \"webhook\""),
            ));
            Receive::Poll
        }
    };
    match (account, token) {
        (Some(account), Some(token)) if problems.is_empty() => Ok(TelegramConfig {
            account,
            token,
            api_url,
            poll_timeout,
            pace_per_chat,
            pace_per_bot,
            max_download,
            receive,
        }),
        _ => Err(problems),
    }
}

/// Checks a gateway member's channel: a chat id (`-1001234567890`), or a
/// forum topic as `<chat id>/<thread id>`.
///
/// # Errors
/// What is wrong with it.
pub fn check_channel(channel: &str) -> Result<(), String> {
    let (chat, thread) = match channel.split_once('/') {
        Some((c, t)) => (c, Some(t)),
        None => (channel, None),
    };
    let ok = chat.parse::<i64>().is_ok() && thread.into_iter().all(|t| t.parse::<i64>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{channel}` is not a Telegram chat id like \"-1001234567890\" (or \"-1001234567890/42\" for a forum topic)"
        ))
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn valid_token(t: &str) -> bool {
    match t.split_once(':') {
        Some((id, rest)) => {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a size like \"20MiB\""))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1024,
        "MB" => 1_000_000,
        "MiB" => 1024 * 1024,
        "GB" => 1_000_000_000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return Err(format!("`{s}` is not a size like \"20MiB\"")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Inline;
    impl Secrets for Inline {
        fn resolve(
            &self,
            _key: &str,
            inline: Option<&str>,
            _env: Option<&str>,
            _file: Option<&str>,
        ) -> Result<Option<String>, (String, String)> {
            Ok(inline.map(str::to_owned))
        }
    }

    fn section(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_debug_hides_the_token() {
        let c = parse("main", &section("token = \"123:abc-DEF_g\""), &Inline).unwrap();
        assert_eq!(c.api_url, "https://api.telegram.org");
        assert_eq!(c.poll_timeout, secs(30));
        assert_eq!(c.max_download, 20 * 1024 * 1024);
        assert!(!format!("{c:?}").contains("abc-DEF"));
    }

    #[test]
    fn problems_name_their_keys() {
        let e = parse("main", &section("tokn = \"x\""), &Inline).unwrap_err();
        assert_eq!(e[0].0, "tokn");
        let e = parse(
            "main",
            &section("token = \"nope\"\npoll_timeout = \"soon\"\napi_url = \"ftp://x\""),
            &Inline,
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(keys, ["token", "api_url", "poll_timeout"]);
        let e = parse("main", &section("poll_timeout = 5"), &Inline).unwrap_err();
        assert_eq!(e[0].0, "poll_timeout");
    }

    #[test]
    fn webhook_mode_needs_its_address_url_and_secret() {
        let c = parse(
            "main",
            &section("token = \"1:a\"\nreceive = \"webhook\"\nwebhook_bind = \"127.0.0.1:8443\"\nwebhook_url = \"https://x.org/tg\"\nwebhook_secret = \"s3cr3t_-X\""),
            &Inline,
        )
        .unwrap();
        assert!(matches!(c.receive, Receive::Webhook { .. }));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = parse(
            "main",
            &section("token = \"1:a\"\nreceive = \"webhook\"\nwebhook_secret = \"no spaces\""),
            &Inline,
        )
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(keys, ["webhook_bind", "webhook_url", "webhook_secret"]);
    }

    #[test]
    fn channels() {
        assert!(check_channel("-1001234").is_ok());
        assert!(check_channel("-1001234/42").is_ok());
        assert!(check_channel("@group").is_err());
        assert!(check_channel("-1/x").is_err());
    }
}
