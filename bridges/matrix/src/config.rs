//! `[matrix.<name>]`: the raw section as written, and the validated
//! [`MatrixConfig`] the adapter runs with.
//!
//! ```toml
//! # A relay bot: an ordinary account on any homeserver.
//! [matrix.main]
//! homeserver = "https://matrix.example.org"
//! user = "@bridge:example.org"
//! password_env = "MATRIX_PASSWORD"     # or access_token(_env/_file)
//!
//! # An application service: one Matrix user per remote author.
//! [matrix.hs]
//! mode = "appservice"
//! homeserver = "http://127.0.0.1:8008"
//! server_name = "example.org"
//! listen = "127.0.0.1:29318"          # where the homeserver pushes
//! registration = "matrix-registration.yaml"  # `switchboard matrix registration` writes it
//! # url = "http://127.0.0.1:29318"    # what the homeserver calls (default: http://<listen>)
//! # bot = "switchboard"               # the bridge bot's localpart
//! # ghosts = "sb_{network}_{id}"      # ghost localparts; the part before `{` is the namespace
//!
//! # Both: a file download waits this long for the homeserver's answer,
//! # plus a second per 256 KiB of the file, three tries; then its message
//! # goes on without it.
//! # download_timeout = "30s"
//! # max_download = "20MiB"
//! # With `links = true` (the hub's option): who may link and unlink a
//! # room, by power level (50: Element's "Moderator").
//! # admin_power_level = 50
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use switchboard_core::{AccountId, Secrets};

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    homeserver: Option<String>,
    mode: Option<String>,
    // Bot mode.
    user: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    access_token: Option<String>,
    access_token_env: Option<String>,
    access_token_file: Option<String>,
    // Appservice mode.
    server_name: Option<String>,
    listen: Option<String>,
    url: Option<String>,
    registration: Option<String>,
    bot: Option<String>,
    ghosts: Option<String>,
    // Both.
    admin_power_level: Option<i64>,
    sync_timeout: Option<String>,
    max_download: Option<String>,
    download_timeout: Option<String>,
}

/// How the account signs in.
#[derive(Clone, PartialEq, Eq)]
pub enum Login {
    /// `m.login.password`; the access token is kept in the account's state.
    Password(String),
    /// A ready access token.
    Token(String),
}

/// The two ways switchboard can sit on a homeserver.
#[derive(Clone, PartialEq, Eq)]
pub enum Mode {
    /// One ordinary user that relays everything under its own name.
    Bot {
        /// `@bridge:example.org`.
        user: String,
        /// Its credentials.
        login: Login,
    },
    /// An application service: the homeserver pushes transactions and each
    /// remote author is a ghost user.
    Appservice(Box<Appservice>),
}

/// An application service's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Appservice {
    /// The homeserver's name (the part after `:` in user ids).
    pub server_name: String,
    /// Where switchboard listens for the homeserver's pushes.
    pub listen: SocketAddr,
    /// The URL the homeserver calls (in the registration).
    pub url: String,
    /// The bridge bot's localpart (`sender_localpart`).
    pub bot: String,
    /// Ghost localpart template with `{network}` and `{id}`.
    pub ghosts: String,
    /// Tokens: switchboard → homeserver.
    pub as_token: String,
    /// Tokens: homeserver → switchboard.
    pub hs_token: String,
    /// The registration's `id`.
    pub id: String,
}

impl Appservice {
    /// The bridge bot's user id.
    #[must_use]
    pub fn bot_user(&self) -> String {
        format!("@{}:{}", self.bot, self.server_name)
    }

    /// The fixed start of every ghost's localpart (the namespace).
    #[must_use]
    pub fn ghost_prefix(&self) -> &str {
        self.ghosts.split('{').next().unwrap_or("")
    }

    /// Whether `user` is the bot or one of its ghosts (never bridged back).
    #[must_use]
    pub fn owns(&self, user: &str) -> bool {
        let Some((local, server)) = user.strip_prefix('@').and_then(|u| u.split_once(':')) else {
            return false;
        };
        server == self.server_name && (local == self.bot || local.starts_with(self.ghost_prefix()))
    }
}

/// A validated `[matrix.<name>]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct MatrixConfig {
    /// `matrix.<name>`.
    pub account: AccountId,
    /// The client-server API's base URL, without a trailing slash.
    pub homeserver: String,
    /// Bot or appservice.
    pub mode: Mode,
    /// How long one `/sync` long poll waits for news (bot mode).
    pub sync_timeout: Duration,
    /// Largest file downloaded from the homeserver.
    pub max_download: u64,
    /// How long a file download waits for the homeserver's answer; the
    /// whole file then gets this plus its size at 256 KiB/s.
    pub download_timeout: Duration,
    /// The power level at which a room's member administers it for
    /// switchboard's commands (`links = true`): link and unlink the room.
    pub admin_power_level: i64,
}

impl fmt::Debug for MatrixConfig {
    // Passwords and tokens never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Bot { user, .. } => format!("bot {user}"),
            Mode::Appservice(a) => format!("appservice {} on {}", a.bot_user(), a.listen),
        };
        f.debug_struct("MatrixConfig")
            .field("account", &self.account)
            .field("homeserver", &self.homeserver)
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

/// Problems, as (key under the section, message).
pub type Problems = Vec<(String, String)>;

/// What `switchboard matrix registration` needs, read from the section
/// without the registration file (which it is about to write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationPlan {
    /// Where the file goes, as written in `registration`.
    pub path: String,
    /// The registration's `id`.
    pub id: String,
    /// What the homeserver calls.
    pub url: String,
    /// The bot's localpart.
    pub bot: String,
    /// The ghosts' exclusive user namespace, as a regex.
    pub users_regex: String,
}

/// The registration file's contents switchboard reads back: YAML in its
/// JSON form, which every YAML reader (Synapse's among them) takes.
#[derive(Debug, Deserialize)]
struct RegistrationFile {
    id: String,
    as_token: String,
    hs_token: String,
    sender_localpart: String,
}

/// Validates the section `[matrix.<name>]`.
///
/// # Errors
/// Every problem found, each with the key it is about.
pub fn parse(
    name: &str,
    section: &toml::Value,
    secrets: &dyn Secrets,
) -> Result<MatrixConfig, Problems> {
    let (raw, mut problems, account) = raw_section(name, section)?;
    let homeserver = raw
        .homeserver
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    match reqwest::Url::parse(&homeserver) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ if raw.homeserver.is_none() => problems.push((
            "homeserver".into(),
            "missing; the client-server API's URL, like \"https://matrix.example.org\"".into(),
        )),
        _ => problems.push((
            "homeserver".into(),
            format!("`{homeserver}` is not an http:// or https:// URL"),
        )),
    }
    let mut duration = |key: &str, raw: Option<&String>, default: Duration| match raw {
        None => default,
        Some(s) => humantime::parse_duration(s).unwrap_or_else(|e| {
            problems.push((key.into(), format!("`{s}` is not a duration: {e}")));
            default
        }),
    };
    let sync_timeout = duration(
        "sync_timeout",
        raw.sync_timeout.as_ref(),
        Duration::from_secs(30),
    );
    let download_timeout = duration(
        "download_timeout",
        raw.download_timeout.as_ref(),
        Duration::from_secs(30),
    );
    let max_download = match raw
        .max_download
        .as_deref()
        .map(str::parse::<bytesize::ByteSize>)
    {
        None => 20 * 1024 * 1024,
        Some(Ok(n)) => n.as_u64(),
        Some(Err(e)) => {
            problems.push((
                "max_download".into(),
                format!("not a size like \"20MiB\": {e}"),
            ));
            0
        }
    };
    let mode = match raw.mode.as_deref() {
        None | Some("bot") => bot_mode(&raw, secrets, &mut problems),
        Some("appservice") => appservice_mode(&raw, name, secrets, &mut problems),
        Some(other) => {
            problems.push((
                "mode".into(),
                format!("`{other}` is not \"bot\" or \"appservice\""),
            ));
            None
        }
    };
    let admin_power_level = raw.admin_power_level.unwrap_or(50);
    if !(0..=i64::from(i32::MAX)).contains(&admin_power_level) {
        problems.push((
            "admin_power_level".into(),
            format!("{admin_power_level} is not a power level (0 or more, like 50 or 100)"),
        ));
    }
    match (account, mode) {
        (Some(account), Some(mode)) if problems.is_empty() => Ok(MatrixConfig {
            account,
            homeserver,
            mode,
            sync_timeout,
            max_download,
            download_timeout,
            admin_power_level,
        }),
        _ => Err(problems),
    }
}

/// Reads what `switchboard matrix registration` needs from an appservice
/// section, without reading the registration file itself.
///
/// # Errors
/// The section's problems.
pub fn registration_plan(name: &str, section: &toml::Value) -> Result<RegistrationPlan, Problems> {
    let (raw, mut problems, _) = raw_section(name, section)?;
    if raw.mode.as_deref() != Some("appservice") {
        problems.push((
            "mode".into(),
            "a registration is for `mode = \"appservice\"`".into(),
        ));
    }
    let (listen, url, bot, ghosts, server_name) = appservice_basics(&raw, &mut problems);
    let Some(path) = raw.registration.clone() else {
        problems.push((
            "registration".into(),
            "missing; the file to write, like \"registration.yaml\"".into(),
        ));
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let _ = listen;
    let prefix = ghosts.split('{').next().unwrap_or("");
    Ok(RegistrationPlan {
        path,
        id: format!("switchboard-{name}"),
        url,
        bot,
        users_regex: format!("@{}.*:{}", regex_escape(prefix), regex_escape(&server_name)),
    })
}

type RawParts = (RawMatrix, Problems, Option<AccountId>);

fn raw_section(name: &str, section: &toml::Value) -> Result<RawParts, Problems> {
    let raw: RawMatrix = switchboard_core::read_section(section)?;
    let mut problems = Vec::new();
    let account = match AccountId::new(crate::NETWORK, name) {
        Ok(a) => Some(a),
        Err(e) => {
            problems.push((String::new(), e.to_string()));
            None
        }
    };
    Ok((raw, problems, account))
}

fn bot_mode(raw: &RawMatrix, secrets: &dyn Secrets, problems: &mut Problems) -> Option<Mode> {
    for (key, set) in [
        ("server_name", raw.server_name.is_some()),
        ("listen", raw.listen.is_some()),
        ("url", raw.url.is_some()),
        ("registration", raw.registration.is_some()),
        ("bot", raw.bot.is_some()),
        ("ghosts", raw.ghosts.is_some()),
    ] {
        if set {
            problems.push((key.into(), "is for `mode = \"appservice\"`".into()));
        }
    }
    let user = match raw.user.as_deref() {
        Some(u) if check_user_id(u).is_ok() => Some(u.to_owned()),
        Some(u) => {
            problems.push((
                "user".into(),
                format!("`{u}` is not a user id like \"@bridge:example.org\""),
            ));
            None
        }
        None => {
            problems.push((
                "user".into(),
                "missing; the bot's user id, like \"@bridge:example.org\"".into(),
            ));
            None
        }
    };
    let password = secrets.resolve(
        "password",
        raw.password.as_deref(),
        raw.password_env.as_deref(),
        raw.password_file.as_deref(),
    );
    let token = secrets.resolve(
        "access_token",
        raw.access_token.as_deref(),
        raw.access_token_env.as_deref(),
        raw.access_token_file.as_deref(),
    );
    let login = match (password, token) {
        (Err(p), _) | (_, Err(p)) => {
            problems.push(p);
            None
        }
        (Ok(Some(_)), Ok(Some(_))) => {
            problems.push((
                "password".into(),
                "set a password or an access token, not both".into(),
            ));
            None
        }
        (Ok(Some(p)), Ok(None)) => Some(Login::Password(p)),
        (Ok(None), Ok(Some(t))) => Some(Login::Token(t.trim().to_owned())),
        (Ok(None), Ok(None)) => {
            problems.push((
                "password".into(),
                "missing; set `password_env`/`password_file` or `access_token_env`/`access_token_file`".into(),
            ));
            None
        }
    };
    Some(Mode::Bot {
        user: user?,
        login: login?,
    })
}

fn appservice_basics(
    raw: &RawMatrix,
    problems: &mut Problems,
) -> (Option<SocketAddr>, String, String, String, String) {
    for (key, set) in [
        ("user", raw.user.is_some()),
        (
            "password",
            raw.password.is_some() || raw.password_env.is_some() || raw.password_file.is_some(),
        ),
        (
            "access_token",
            raw.access_token.is_some()
                || raw.access_token_env.is_some()
                || raw.access_token_file.is_some(),
        ),
    ] {
        if set {
            problems.push((
                key.into(),
                "is for `mode = \"bot\"`; an appservice uses its registration's tokens".into(),
            ));
        }
    }
    let server_name = match raw.server_name.as_deref() {
        Some(s) if !s.is_empty() && !s.contains(['/', '@', ' ']) => s.to_owned(),
        Some(s) => {
            problems.push((
                "server_name".into(),
                format!("`{s}` is not a server name like \"example.org\""),
            ));
            String::new()
        }
        None => {
            problems.push((
                "server_name".into(),
                "missing; the homeserver's name, as in @user:<server_name>".into(),
            ));
            String::new()
        }
    };
    let listen = match raw.listen.as_deref().map(str::parse::<SocketAddr>) {
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            problems.push((
                "listen".into(),
                format!(
                    "`{}` is not an address like \"127.0.0.1:29318\"",
                    raw.listen.as_deref().unwrap_or("")
                ),
            ));
            None
        }
        None => {
            problems.push((
                "listen".into(),
                "missing; where the homeserver pushes, like \"127.0.0.1:29318\"".into(),
            ));
            None
        }
    };
    let url = raw
        .url
        .clone()
        .or_else(|| listen.map(|a| format!("http://{a}")))
        .unwrap_or_default();
    if raw.url.is_some()
        && !matches!(
            reqwest::Url::parse(&url)
                .map(|u| u.scheme().to_owned())
                .as_deref(),
            Ok("http" | "https")
        )
    {
        problems.push((
            "url".into(),
            format!("`{url}` is not an http:// or https:// URL"),
        ));
    }
    let localpart_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/".contains(&b))
    };
    let bot = raw.bot.clone().unwrap_or_else(|| "switchboard".into());
    if !localpart_ok(&bot) {
        problems.push((
            "bot".into(),
            format!("`{bot}` is not a user localpart (a-z, 0-9, ._=-/)"),
        ));
    }
    let ghosts = raw
        .ghosts
        .clone()
        .unwrap_or_else(|| "sb_{network}_{id}".into());
    let prefix = ghosts.split('{').next().unwrap_or("");
    if !ghosts.contains("{id}") || !localpart_ok(prefix) {
        problems.push((
            "ghosts".into(),
            format!("`{ghosts}` must start with a fixed localpart prefix and hold `{{id}}`, like \"sb_{{network}}_{{id}}\""),
        ));
    } else if bot.starts_with(prefix) {
        problems.push((
            "bot".into(),
            format!("`{bot}` is inside the ghosts' namespace `{prefix}`"),
        ));
    }
    (listen, url, bot, ghosts, server_name)
}

fn appservice_mode(
    raw: &RawMatrix,
    name: &str,
    secrets: &dyn Secrets,
    problems: &mut Problems,
) -> Option<Mode> {
    let (listen, url, bot, ghosts, server_name) = appservice_basics(raw, problems);
    let Some(path) = raw.registration.as_deref() else {
        problems.push((
            "registration".into(),
            format!("missing; name a file and write it with `switchboard matrix registration --account matrix.{name}`"),
        ));
        return None;
    };
    // Read through the hub's secrets: the file holds the tokens, and a
    // relative path is taken from the configuration file's folder.
    let text = match secrets.resolve("registration", None, None, Some(path)) {
        Ok(Some(t)) => t,
        Ok(None) => return None,
        Err((_, msg)) => {
            problems.push((
                "registration".into(),
                format!("{msg}; write it with `switchboard matrix registration --account matrix.{name}`"),
            ));
            return None;
        }
    };
    let file: RegistrationFile = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            problems.push((
                "registration".into(),
                format!("`{path}` is not a registration switchboard wrote ({e}); write it again with `switchboard matrix registration`"),
            ));
            return None;
        }
    };
    if file.sender_localpart != bot {
        problems.push((
            "bot".into(),
            format!(
                "`{bot}` differs from the registration's sender_localpart `{}`",
                file.sender_localpart
            ),
        ));
    }
    Some(Mode::Appservice(Box::new(Appservice {
        server_name,
        listen: listen?,
        url,
        bot,
        ghosts,
        as_token: file.as_token,
        hs_token: file.hs_token,
        id: file.id,
    })))
}

/// The registration file for `plan` with fresh random tokens: YAML in its
/// JSON form.
#[must_use]
pub fn registration_yaml(plan: &RegistrationPlan) -> String {
    use rand::Rng;
    let token = || {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill(&mut bytes);
        hex::encode(bytes)
    };
    let value = serde_json::json!({
        "id": plan.id,
        "url": plan.url,
        "as_token": token(),
        "hs_token": token(),
        "sender_localpart": plan.bot,
        "rate_limited": false,
        "namespaces": {
            "users": [{ "exclusive": true, "regex": plan.users_regex }],
            "aliases": [],
            "rooms": [],
        },
    });
    let mut out = serde_json::to_string_pretty(&value).unwrap_or_default();
    out.push('\n');
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Checks a user id's shape (`@localpart:server`).
///
/// # Errors
/// What is wrong with it.
pub fn check_user_id(user: &str) -> Result<(), String> {
    ruma::UserId::parse(user)
        .map(|_| ())
        .map_err(|e| format!("`{user}` is not a Matrix user id: {e}"))
}

/// Checks a gateway member's channel: a room id (`!abc:example.org`) or
/// alias (`#room:example.org`).
///
/// # Errors
/// What is wrong with it.
pub fn check_channel(channel: &str) -> Result<(), String> {
    let ok = if channel.starts_with('#') {
        ruma::RoomAliasId::parse(channel).is_ok()
    } else {
        ruma::RoomId::parse(channel).is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{channel}` is not a Matrix room id like \"!abc123:example.org\" or alias like \"#room:example.org\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(Vec<(&'static str, String)>);

    impl Secrets for Files {
        fn resolve(
            &self,
            key: &str,
            inline: Option<&str>,
            env: Option<&str>,
            file: Option<&str>,
        ) -> Result<Option<String>, (String, String)> {
            if let Some(i) = inline {
                return Ok(Some(i.to_owned()));
            }
            if env.is_some() {
                return Err((format!("{key}_env"), "not set".into()));
            }
            match file {
                None => Ok(None),
                Some(f) => self
                    .0
                    .iter()
                    .find(|(n, _)| *n == f)
                    .map(|(_, v)| Some(v.clone()))
                    .ok_or_else(|| (format!("{key}_file"), format!("cannot read `{f}`"))),
            }
        }
    }

    fn section(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn a_bot_section_is_validated_and_its_secrets_never_printed() {
        let ok = parse(
            "main",
            &section("homeserver = \"https://m.example.org/\"\nuser = \"@b:example.org\"\npassword = \"hunter2\""),
            &Files(vec![]),
        )
        .unwrap();
        assert_eq!(ok.homeserver, "https://m.example.org");
        assert!(
            matches!(ok.mode, Mode::Bot { login: Login::Password(ref p), .. } if p == "hunter2")
        );
        assert!(!format!("{ok:?}").contains("hunter2"));
        let bad = parse(
            "main",
            &section("homeserver = \"ftp://x\"\nuser = \"bridge\"\nlisten = \"x\""),
            &Files(vec![]),
        )
        .unwrap_err();
        let keys: Vec<&str> = bad.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["homeserver", "listen", "user", "password"],
            "{bad:?}"
        );
        let typo = parse("main", &section("homeservr = \"x\""), &Files(vec![])).unwrap_err();
        assert!(typo[0].1.contains("unknown field"), "{typo:?}");
    }

    #[test]
    fn an_appservice_reads_the_registration_it_wrote() {
        let raw = "mode = \"appservice\"\nhomeserver = \"http://127.0.0.1:8008\"\nserver_name = \"example.org\"\nlisten = \"127.0.0.1:29318\"\nregistration = \"reg.yaml\"";
        let plan = registration_plan("hs", &section(raw)).unwrap();
        assert_eq!(plan.url, "http://127.0.0.1:29318");
        assert_eq!(plan.users_regex, "@sb_.*:example\\.org");
        let yaml = registration_yaml(&plan);
        let cfg = parse(
            "hs",
            &section(raw),
            &Files(vec![("reg.yaml", yaml.clone())]),
        )
        .unwrap();
        let Mode::Appservice(a) = &cfg.mode else {
            panic!("{cfg:?}")
        };
        assert_eq!(a.as_token.len(), 64);
        assert_ne!(a.as_token, a.hs_token);
        assert!(yaml.contains(&a.hs_token));
        assert!(a.owns("@sb_telegram_42:example.org"));
        assert!(a.owns("@switchboard:example.org"));
        assert!(!a.owns("@alice:example.org"));
        assert!(!a.owns("@sb_telegram_42:elsewhere.org"));
        assert!(!format!("{cfg:?}").contains(&a.as_token));
        let missing = parse("hs", &section(raw), &Files(vec![])).unwrap_err();
        assert!(
            missing[0]
                .1
                .contains("switchboard matrix registration --account matrix.hs"),
            "{missing:?}"
        );
    }

    #[test]
    fn channels_are_room_ids_or_aliases() {
        assert!(check_channel("!abc:example.org").is_ok());
        assert!(check_channel("#room:example.org").is_ok());
        assert!(check_channel("room").is_err());
        assert!(check_channel("-100123").is_err());
    }
}
