//! Which gateway a new link joins, and why a link is refused: pure, from a
//! snapshot of the configured gateways and the link rows of the
//! transaction that makes the link.

use std::collections::HashMap;

use switchboard_core::{AccountId, ChannelId, GatewayName};

use super::Link;
use crate::config::Settings;

/// One chat: its account, its channel (under its configured id) and its
/// name as people see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chat {
    pub(crate) account: AccountId,
    pub(crate) channel: ChannelId,
    pub(crate) name: Option<String>,
}

impl Chat {
    fn is(&self, account: &AccountId, channel: &ChannelId) -> bool {
        &self.account == account && &self.channel == channel
    }
}

/// Which configured gateways list each chat, and whether each takes
/// linked chats.
#[derive(Debug, Clone, Default)]
pub(crate) struct Configured {
    members: HashMap<(AccountId, ChannelId), Vec<(GatewayName, bool)>>,
}

impl Configured {
    /// From the configuration in force.
    pub(crate) fn of(settings: &Settings) -> Self {
        let mut members: HashMap<_, Vec<_>> = HashMap::new();
        for g in &settings.gateways {
            for m in &g.members {
                members
                    .entry((m.account.clone(), m.channel.clone()))
                    .or_default()
                    .push((g.name.clone(), g.linkable));
            }
        }
        Self { members }
    }

    /// The configured gateways that list `chat`, in config order.
    fn of_chat(&self, chat: &Chat) -> &[(GatewayName, bool)] {
        self.members
            .get(&(chat.account.clone(), chat.channel.clone()))
            .map_or(&[], Vec::as_slice)
    }
}

/// Where a new link goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Into this gateway, beside the chat the code came from.
    Join(GatewayName),
    /// Both chats into a new gateway made from chats.
    New,
}

/// Why a link cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The code was made in the chat it was sent in.
    SameChat,
    /// The chat is linked already, in this gateway.
    Linked(GatewayName),
    /// The configuration lists the chat, in this gateway.
    Configured(GatewayName),
    /// The other chat's configured gateway does not take linked chats.
    NotLinkable(GatewayName),
}

/// Whether `chat` may offer a code: not when a configured gateway that
/// does not take linked chats lists it (and none that does).
pub(crate) fn may_offer(configured: &Configured, chat: &Chat) -> Result<(), Refusal> {
    let listed = configured.of_chat(chat);
    match listed.first() {
        Some(_) if listed.iter().any(|(_, linkable)| *linkable) => Ok(()),
        Some((g, _)) => Err(Refusal::NotLinkable(g.clone())),
        None => Ok(()),
    }
}

/// Where linking `second` to `first` (the chat the code came from) goes,
/// given the link rows now: `first`'s gateway when it is a linkable
/// configured one or a linked one, else a new gateway for both.
/// `second` must not be in a gateway already.
pub(crate) fn plan(
    configured: &Configured,
    rows: &[Link],
    first: &Chat,
    second: &Chat,
) -> Result<Plan, Refusal> {
    if first.is(&second.account, &second.channel) {
        return Err(Refusal::SameChat);
    }
    if let Some((g, _)) = configured.of_chat(second).first() {
        return Err(Refusal::Configured(g.clone()));
    }
    if let Some(row) = rows.iter().find(|r| second.is(&r.account, &r.channel)) {
        return Err(Refusal::Linked(row.gateway.clone()));
    }
    let listed = configured.of_chat(first);
    if let Some((g, _)) = listed.iter().find(|(_, linkable)| *linkable) {
        return Ok(Plan::Join(g.clone()));
    }
    if let Some((g, _)) = listed.first() {
        return Err(Refusal::NotLinkable(g.clone()));
    }
    Ok(
        match rows.iter().find(|r| first.is(&r.account, &r.channel)) {
            Some(row) => Plan::Join(row.gateway.clone()),
            None => Plan::New,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(account: &str, channel: &str) -> Chat {
        Chat {
            account: account.parse().unwrap(),
            channel: ChannelId::new(channel).unwrap(),
            name: None,
        }
    }

    fn row(gateway: &str, c: &Chat) -> Link {
        Link {
            id: 1,
            gateway: GatewayName::new(gateway).unwrap(),
            account: c.account.clone(),
            channel: c.channel.clone(),
            name: None,
            created_ms: 0,
            created_by: String::new(),
        }
    }

    #[test]
    fn where_links_go() {
        let s = crate::config::from_text(
            "t.toml",
            r#"
[telegram.main]
token = "1:a"
[[gateway]]
name = "open"
linkable = true
[[gateway.inout]]
account = "telegram.main"
channel = "-100"
[[gateway]]
name = "closed"
[[gateway.inout]]
account = "telegram.main"
channel = "-200"
"#,
        )
        .unwrap();
        let conf = Configured::of(&s);
        let (open, closed) = (chat("telegram.main", "-100"), chat("telegram.main", "-200"));
        let (a, b, c) = (
            chat("telegram.main", "-300"),
            chat("signal.main", "+15550000002"),
            chat("matrix.main", "!r:x"),
        );
        assert_eq!(plan(&conf, &[], &a, &b), Ok(Plan::New));
        assert_eq!(plan(&conf, &[], &a, &a), Err(Refusal::SameChat));
        let g = GatewayName::new("open").unwrap();
        assert_eq!(plan(&conf, &[], &open, &b), Ok(Plan::Join(g.clone())));
        let closed_g = GatewayName::new("closed").unwrap();
        assert_eq!(
            plan(&conf, &[], &closed, &b),
            Err(Refusal::NotLinkable(closed_g.clone()))
        );
        assert_eq!(
            may_offer(&conf, &closed),
            Err(Refusal::NotLinkable(closed_g.clone()))
        );
        assert_eq!(may_offer(&conf, &open), Ok(()));
        assert_eq!(
            plan(&conf, &[], &b, &closed),
            Err(Refusal::Configured(closed_g))
        );
        let rows = vec![row("link-aaaaaa", &a), row("link-aaaaaa", &b)];
        let made = GatewayName::new("link-aaaaaa").unwrap();
        assert_eq!(plan(&conf, &rows, &a, &c), Ok(Plan::Join(made.clone())));
        assert_eq!(plan(&conf, &rows, &c, &b), Err(Refusal::Linked(made)));
        let joined = vec![row("open", &b)];
        assert_eq!(plan(&conf, &joined, &b, &c), Ok(Plan::Join(g)));
    }
}
