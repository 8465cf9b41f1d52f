//! Chat commands: how the people of a chat talk to switchboard itself (ask
//! for a pairing code, link their chat to another with it, unlink it, ask
//! how the other networks are doing).
//!
//! # Who does what
//! The hub owns the commands: what they do, their pairing codes, their
//! limits and every word of their answers, once for every network. An
//! adapter of an account that takes commands (`links = true` on the
//! account; it is built with a [`CommandForm`], see
//! [`AccountSetup`](crate::AccountSetup)) does three things only:
//!
//! 1. **Recognise** a received message that is a command in its network's
//!    own form: a bot command (`/link`, `/link@thisbot`; [`parse_slash`])
//!    or the account's prefix (`!sb link`; [`parse_prefixed`]).
//! 2. **Say whether its sender administers the chat**, as the network
//!    says it (a Telegram administrator or the creator, a Matrix power
//!    level at or above the account's `admin_power_level`, a Signal group
//!    admin), or that the network could not say.
//! 3. **Deliver it** as an event of kind
//!    [`EventKind::Command`](crate::EventKind::Command) in its batch, in
//!    place of the message, with the chat's name as people see it (a
//!    group's title) when the network has one.
//!
//! The hub never routes a command: it is committed (so a redelivery is
//! recognised and a command is acted on once) and answered. Its answer is
//! a [`Notice`](crate::EventKind::Notice) whose origin is the chat it
//! answers, queued to that one chat only: the adapter sends it as it sends
//! any notice, and never sees it again (its own account's messages are
//! ignored). Neither the command nor the answer reaches another chat.
//!
//! An adapter built without a form recognises nothing: commands are then
//! ordinary messages, bridged like any other.

use std::fmt;

/// One command the hub understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Its name: lowercase ASCII letters (a Telegram bot command's rules).
    pub name: &'static str,
    /// What follows it, for help texts (`[code]`).
    pub args: &'static str,
    /// What it does, in one line (Telegram shows it in its command menu).
    pub about: &'static str,
}

/// Every command, in the order help lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "link",
        args: "[code]",
        about: "Get a pairing code to link this chat, or link it with a code from another chat",
    },
    CommandSpec {
        name: "unlink",
        args: "",
        about: "Stop mirroring this chat to the chats it is linked with",
    },
    CommandSpec {
        name: "status",
        args: "",
        about: "Which networks of this chat's gateway are up, and what waits",
    },
    CommandSpec {
        name: "help",
        args: "",
        about: "What switchboard's commands do",
    },
];

/// The prefix of commands where the network has no bot commands of its
/// own (Matrix, Signal), unless the account sets `command_prefix`.
pub const DEFAULT_PREFIX: &str = "!sb";

/// Most words after a command's name that are kept.
pub const MAX_ARGS: usize = 8;

/// Whether `name` is one of [`COMMANDS`].
#[must_use]
pub fn is_command(name: &str) -> bool {
    COMMANDS.iter().any(|c| c.name == name)
}

/// How a network writes commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStyle {
    /// The network's own bot commands: `/link` (Telegram).
    Slash,
    /// A prefix the account configures: `!sb link` (Matrix, Signal).
    Prefix,
}

/// How commands are written on one account: what an adapter recognises,
/// and how the hub's answers spell a command for that account's chats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    /// `/link` (and `/link@botname` in a group with several bots).
    Slash,
    /// `<prefix> link`.
    Prefix(String),
}

impl CommandForm {
    /// How `name` with `args` is written here: `/link sb-AB12-CD34`,
    /// `!sb link sb-AB12-CD34`.
    #[must_use]
    pub fn render(&self, name: &str, args: &str) -> String {
        let head = match self {
            Self::Slash => format!("/{name}"),
            Self::Prefix(p) => format!("{p} {name}"),
        };
        if args.is_empty() {
            head
        } else {
            format!("{head} {args}")
        }
    }

    /// Reads a message's text as a command in this form: the command's
    /// name (lowercase) and the words after it. `bot` is the bot's own
    /// username, for `/link@bot` (see [`parse_slash`]).
    #[must_use]
    pub fn parse(&self, text: &str, bot: Option<&str>) -> Option<(String, Vec<String>)> {
        match self {
            Self::Slash => parse_slash(text, bot),
            Self::Prefix(p) => parse_prefixed(text, p),
        }
    }
}

impl fmt::Display for CommandForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Slash => f.write_str("/"),
            Self::Prefix(p) => f.write_str(p),
        }
    }
}

/// The words after a command's name, at most [`MAX_ARGS`].
fn words(rest: &str) -> Vec<String> {
    rest.split_whitespace()
        .take(MAX_ARGS)
        .map(str::to_owned)
        .collect()
}

/// A prefixed command: `!sb link sb-AB12-CD34` with prefix `!sb` is
/// `("link", ["sb-AB12-CD34"])`. The prefix is compared without regard to
/// ASCII case and must stand alone (`!sbx` is not it); the prefix alone is
/// `help`. Anything after the prefix is a command, known or not: the hub
/// answers an unknown one with the list.
#[must_use]
pub fn parse_prefixed(text: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let text = text.trim_start();
    let head = text.get(..prefix.len())?;
    if prefix.is_empty() || !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = &text[prefix.len()..];
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let mut it = rest.split_whitespace();
    let name = it
        .next()
        .map_or_else(|| "help".to_owned(), str::to_lowercase);
    Some((name, words(&it.collect::<Vec<_>>().join(" "))))
}

/// A bot command (`/link sb-AB12-CD34`, `/link@thisbot ...`): only the
/// hub's own commands ([`COMMANDS`]) and only when addressed to no bot or
/// to `bot` (compared without regard to case), so another bot's commands
/// in the same group are bridged like any message.
#[must_use]
pub fn parse_slash(text: &str, bot: Option<&str>) -> Option<(String, Vec<String>)> {
    let text = text.trim_start();
    let rest = text.strip_prefix('/')?;
    let token_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (token, after) = rest.split_at(token_end);
    let (name, addressed) = match token.split_once('@') {
        Some((n, to)) => (n, Some(to)),
        None => (token, None),
    };
    if let Some(to) = addressed {
        if !bot.is_some_and(|b| b.eq_ignore_ascii_case(to)) {
            return None;
        }
    }
    let name = name.to_ascii_lowercase();
    is_command(&name).then(|| (name, words(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(name: &str, args: &[&str]) -> Option<(String, Vec<String>)> {
        Some((name.into(), args.iter().map(|a| (*a).to_owned()).collect()))
    }

    #[test]
    fn prefixed_commands_are_read_with_their_words() {
        assert_eq!(
            parse_prefixed("!sb link sb-AB12-CD34", "!sb"),
            cmd("link", &["sb-AB12-CD34"])
        );
        assert_eq!(parse_prefixed("  !SB   Status ", "!sb"), cmd("status", &[]));
        assert_eq!(parse_prefixed("!sb", "!sb"), cmd("help", &[]));
        assert_eq!(
            parse_prefixed("!sb frobnicate x", "!sb"),
            cmd("frobnicate", &["x"])
        );
        assert_eq!(parse_prefixed("!sbx link", "!sb"), None);
        assert_eq!(parse_prefixed("hello !sb link", "!sb"), None);
        assert_eq!(parse_prefixed("", "!sb"), None);
        assert_eq!(
            parse_prefixed("é", "!sb"),
            None,
            "no panic off a char boundary"
        );
        let many = format!("!sb link {}", "a ".repeat(50));
        assert_eq!(parse_prefixed(&many, "!sb").unwrap().1.len(), MAX_ARGS);
    }

    #[test]
    fn slash_commands_are_ours_only_when_known_and_addressed_to_us() {
        assert_eq!(parse_slash("/link", Some("sbbot")), cmd("link", &[]));
        assert_eq!(
            parse_slash("/link@SbBot sb-AB12-CD34", Some("sbbot")),
            cmd("link", &["sb-AB12-CD34"])
        );
        assert_eq!(parse_slash("/link@otherbot", Some("sbbot")), None);
        assert_eq!(parse_slash("/roll 2d6", Some("sbbot")), None);
        assert_eq!(parse_slash("/Status", None), cmd("status", &[]));
        assert_eq!(parse_slash("link", None), None);
    }

    #[test]
    fn forms_render_and_parse_each_other() {
        for form in [CommandForm::Slash, CommandForm::Prefix("!sb".into())] {
            let text = form.render("link", "sb-AB12-CD34");
            assert_eq!(form.parse(&text, None), cmd("link", &["sb-AB12-CD34"]));
        }
        assert_eq!(CommandForm::Slash.render("help", ""), "/help");
        assert_eq!(
            CommandForm::Prefix("!b".into()).render("help", ""),
            "!b help"
        );
    }

    #[test]
    fn command_names_are_telegram_bot_commands() {
        for c in COMMANDS {
            assert!((1..=32).contains(&c.name.len()));
            assert!(c.name.bytes().all(|b| b.is_ascii_lowercase()));
            assert!((1..=256).contains(&c.about.chars().count()));
        }
    }
}
