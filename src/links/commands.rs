//! The commands adapters deliver (`EventKind::Command`), acted on and
//! answered here, once for every network: `link` (a pairing code, or a
//! code from another chat), `unlink`, `status`, `help`. Every word people
//! read is in this file.
//!
//! An answer is a notice whose origin is the chat it answers, queued to
//! that chat alone: it is never routed, and never dead-lettered with a
//! chat that just left its gateway. The chats a link change concerns are
//! told the same way, each in its own words. A chat that floods the bot
//! gets at most [`ANSWERS_PER_MINUTE`] answers a minute.

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_core::{
    AccountId, Author, ChannelId, CommandForm, EventKind, GatewayName, Network, NewEvent, Origin,
    RemoteId, RichText, Span, Style,
};

use super::plan::{may_offer, Chat, Configured, Refusal};
use super::store::{self, Limit, Op, Outcome};
use super::{codes, Link};
use crate::config::Settings;
use crate::hub::Hub;
use crate::store::{Dest, IngestItem, StoreError};

/// Most answers a chat gets in a minute; commands beyond are ignored.
pub const ANSWERS_PER_MINUTE: usize = 20;

/// The gateway an answer to a chat in no gateway is queued under (a name
/// configured gateways cannot have).
const NO_GATEWAY: &str = "link-none";

/// Acts on one committed command and answers it in its chat.
pub(crate) async fn handle(hub: &Hub, event: &NewEvent) {
    let EventKind::Command {
        name,
        args,
        sender_is_admin,
        channel_name,
    } = &event.kind
    else {
        return;
    };
    let (account, channel) = (&event.origin.account, &event.origin.channel);
    let settings = hub.settings.read().expect("settings lock").clone();
    let Some(form) = settings.commands.get(account).cloned() else {
        tracing::debug!(%account, %channel, "A command on an account that takes none; ignored.");
        return;
    };
    if !hub.links.may_answer(account, channel) {
        tracing::warn!(%account, %channel, command = %name, "A chat sends commands faster than they are answered; ignored.");
        return;
    }
    tracing::info!(
        %account, %channel, command = %name, sender = %event.author.remote_id,
        sender_is_admin = ?sender_is_admin, "A command."
    );
    let cx = Cx {
        hub,
        settings,
        form,
        chat: Chat {
            account: account.clone(),
            channel: hub.router.configured(account, channel),
            name: channel_name.clone(),
        },
        admin: *sender_is_admin,
        by: format!(
            "{} ({}) on {account}",
            event.author.display_name, event.author.remote_id
        ),
    };
    let text = match name.as_str() {
        "help" => Ok(cx.help()),
        "status" => cx.status().await,
        "link" => cx.link(args.first().map(String::as_str)).await,
        "unlink" => cx.unlink().await,
        other => Ok(cx.unknown(other)),
    };
    let text = text.unwrap_or_else(|e| {
        tracing::warn!(%account, %channel, command = %name, error = %e, "A command failed on the store.");
        Text::new("switchboard cannot reach its database right now; try again in a minute.")
    });
    tell(hub, account, channel, text).await;
}

/// What one command works with.
struct Cx<'a> {
    hub: &'a Hub,
    settings: std::sync::Arc<Settings>,
    form: CommandForm,
    /// The chat, under its configured id.
    chat: Chat,
    admin: Option<bool>,
    by: String,
}

impl Cx<'_> {
    fn cmd(&self, name: &str, args: &str) -> String {
        self.form.render(name, args)
    }

    fn help(&self) -> Text {
        let mut t = Text::new("switchboard mirrors this chat with chats on other networks.\n");
        for (name, args, what) in [
            ("link", "", "get a pairing code for another chat (admins)"),
            (
                "link",
                "CODE",
                "link this chat with the chat the code came from (admins)",
            ),
            ("unlink", "", "stop mirroring this chat (admins)"),
            ("status", "", "which networks of this chat's gateway are up"),
            ("help", "", "this list"),
        ] {
            t = t.code(&self.cmd(name, args)).plain(&format!(" — {what}\n"));
        }
        t.trim_end()
    }

    fn unknown(&self, name: &str) -> Text {
        let list: Vec<String> = switchboard_core::commands::COMMANDS
            .iter()
            .map(|c| self.cmd(c.name, ""))
            .collect();
        Text::new(&format!(
            "switchboard has no command `{name}`. Its commands: {}.",
            list.join(", ")
        ))
    }

    /// The answer to a command only an admin may give, when the sender is
    /// not one (or the network could not say).
    fn not_admin(&self) -> Option<Text> {
        match self.admin {
            Some(true) => None,
            Some(false) => Some(Text::new(
                "Only an admin of this chat can link or unlink it.",
            )),
            None => Some(Text::new(&format!(
                "switchboard could not check with {} whether you administer this chat; try again in a moment.",
                crate::adapters::display_name(self.chat.account.network())
            ))),
        }
    }

    async fn link(&self, code: Option<&str>) -> Result<Text, StoreError> {
        if let Some(refused) = self.not_admin() {
            return Ok(refused);
        }
        match code {
            None => self.offer().await,
            Some(code) => self.redeem(code).await,
        }
    }

    /// A pairing code for this chat, and how to use it on each network.
    async fn offer(&self) -> Result<Text, StoreError> {
        if let Err(r) = may_offer(&Configured::of(&self.settings), &self.chat) {
            return Ok(self.refusal(&r));
        }
        let code = codes::generate();
        let hash = codes::hash(&codes::normalize(&code).expect("a code reads back"));
        let ttl = self.settings.links.code_ttl;
        store::change(
            &self.hub.writer,
            Op::Offer {
                hash,
                chat: self.chat.clone(),
                by: self.by.clone(),
                ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            },
        )
        .await?;
        // Each way of writing the command, with the networks that use it.
        let mut forms: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        for (account, form) in &self.settings.commands {
            let shown = form.render("link", &code);
            let net = crate::adapters::display_name(account.network());
            let nets = forms.entry(shown).or_default();
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        let mut t = Text::new("Pairing code: ").code(&code).plain(&format!(
            "\nAn admin of the chat to link sends it there within {}:",
            minutes(ttl)
        ));
        for (shown, nets) in &forms {
            t = t
                .plain("\n")
                .code(shown)
                .plain(&format!(" ({})", nets.join(", ")));
        }
        let gateway = self.gateway_of(&self.chat);
        let others = gateway
            .as_ref()
            .map_or(0, |g| self.members(g).len().saturating_sub(1));
        Ok(t.plain(&match others {
            0 => "\nThe code works once.".to_owned(),
            n => format!(
                "\nThe code works once. That chat then also mirrors the {n} chat{} linked with this one.",
                if n == 1 { "" } else { "s" }
            ),
        }))
    }

    /// Links this chat with the chat `typed` came from.
    async fn redeem(&self, typed: &str) -> Result<Text, StoreError> {
        let limits = self.settings.links;
        let hash = codes::normalize(typed).map(|n| codes::hash(&n));
        let malformed = hash.is_none();
        let outcome = {
            let _one = self.hub.links.changes.lock().await;
            let outcome = store::change(
                &self.hub.writer,
                Op::Redeem {
                    hash,
                    chat: self.chat.clone(),
                    by: self.by.clone(),
                    limit: Limit {
                        attempts: limits.attempts,
                        window_ms: i64::try_from(limits.attempts_window.as_millis())
                            .unwrap_or(i64::MAX),
                    },
                    configured: Configured::of(&self.settings),
                },
            )
            .await?;
            if matches!(outcome, Outcome::Linked { .. }) {
                self.hub.links.refresh(self.hub).await?;
            }
            outcome
        };
        let again = || {
            format!(
                "ask for a new one in the other chat with {}",
                self.cmd("link", "")
            )
        };
        Ok(match outcome {
            Outcome::TooMany { retry_in_ms } => Text::new(&format!(
                "Too many wrong codes were sent in this chat; try again in {}.",
                minutes(Duration::from_millis(u64::try_from(retry_in_ms).unwrap_or(60_000)))
            )),
            Outcome::NoCode if malformed => Text::new(
                "That is not a pairing code: they look like sb-7KQ4-M2XD. ",
            )
            .plain(&format!("To get one, {}.", again())),
            Outcome::NoCode => Text::new(&format!(
                "No pairing code like that is waiting. Check it, or {}.",
                again()
            )),
            Outcome::Expired => Text::new(&format!(
                "This pairing code has expired (codes last {}); {}.",
                minutes(limits.code_ttl),
                again()
            )),
            Outcome::Used => Text::new(&format!(
                "This pairing code was used already (each links one chat); {}.",
                again()
            )),
            Outcome::Refused { refusal, first } => match refusal {
                Refusal::NotLinkable(g) => Text::new(&format!(
                    "{} is in gateway `{g}` of the server's configuration, which does not take linked chats.",
                    describe(&first.account, &first.channel, first.name.as_deref())
                )),
                other => self.refusal(&other),
            },
            Outcome::Linked {
                gateway,
                first,
                second,
                new,
            } => self.linked(&gateway, &first, &second, new).await,
            Outcome::Offered | Outcome::NotLinked | Outcome::Unlinked { .. } => {
                Text::new("switchboard did something unexpected; nothing changed.")
            }
        })
    }

    /// Tells the chats already in `gateway` who joined, and answers the
    /// chat that joined.
    async fn linked(&self, gateway: &GatewayName, first: &Chat, second: &Chat, new: bool) -> Text {
        tracing::info!(%gateway, first = %first.channel, second = %second.channel, new, by = %self.by, "Chats linked.");
        let others: Vec<(AccountId, ChannelId, Option<String>)> = self
            .members(gateway)
            .into_iter()
            .filter(|(a, c, _)| !(a == &second.account && c == &second.channel))
            .collect();
        let joined = describe(&second.account, &second.channel, second.name.as_deref());
        for (account, channel, _) in &others {
            let current = self.hub.router.current(account, channel);
            tell(
                self.hub,
                account,
                &current,
                Text::new(&format!(
                    "🔗 {joined} is now linked with this chat: messages go both ways."
                )),
            )
            .await;
        }
        let names: Vec<String> = others
            .iter()
            .map(|(a, c, n)| describe(a, c, n.as_deref()))
            .collect();
        Text::new(&format!(
            "🔗 Linked: this chat now mirrors {}. An admin can undo it with ",
            list(&names)
        ))
        .code(&self.cmd("unlink", ""))
        .plain(".")
    }

    async fn unlink(&self) -> Result<Text, StoreError> {
        if let Some(refused) = self.not_admin() {
            return Ok(refused);
        }
        if let Some(g) = self.configured_gateway() {
            return Ok(Text::new(&format!(
                "This chat is in gateway `{g}` by the server's configuration; only its operator can take it out."
            )));
        }
        let (outcome, before) = {
            let _one = self.hub.links.changes.lock().await;
            // Who was in the gateway, before it changes.
            let before = self
                .gateway_of(&self.chat)
                .map(|g| self.members(&g))
                .unwrap_or_default();
            let outcome = store::change(
                &self.hub.writer,
                Op::Unlink {
                    account: self.chat.account.clone(),
                    channel: self.chat.channel.clone(),
                },
            )
            .await?;
            if matches!(outcome, Outcome::Unlinked { .. }) {
                self.hub.links.refresh(self.hub).await?;
            }
            (outcome, before)
        };
        match outcome {
            Outcome::Unlinked { left, dissolved } => {
                Ok(tell_unlinked(self.hub, &left, &dissolved, &before, &self.by).await)
            }
            _ => Ok(Text::new("This chat is not linked with any other.")),
        }
    }

    async fn status(&self) -> Result<Text, StoreError> {
        let Some(gateway) = self.gateway_of(&self.chat) else {
            return Ok(
                Text::new("This chat is not linked with any other. An admin can link it: ")
                    .code(&self.cmd("link", ""))
                    .plain("."),
            );
        };
        let states = self.hub.account_states();
        let mut t = Text::new(&format!("This chat is in gateway `{gateway}`:"));
        for (account, channel, name) in self.members(&gateway) {
            if account.network() == Network::API {
                continue;
            }
            let current = self.hub.router.current(&account, &channel);
            let health = states.iter().find(|s| s.account == account.to_string());
            let (state, since) = health.map_or(("up", None), |h| (h.state, Some(h.since_ms)));
            let needs = health.and_then(|h| {
                h.channels
                    .iter()
                    .find(|c| c.channel == current.as_str())
                    .map(|c| c.error.clone())
            });
            let waiting = store::waiting(&self.hub.store, &account, &current).await?;
            let who = if account == self.chat.account && channel == self.chat.channel {
                format!(
                    "this chat ({})",
                    describe(&account, &channel, name.as_deref())
                )
            } else {
                describe(&account, &channel, name.as_deref())
            };
            let mut line = format!("\n• {who}: {state}");
            if let Some(since) = since {
                line.push_str(&format!(" since {}", when(since)));
            }
            if let Some(what) = needs {
                line.push_str(&format!("; needs an admin there: {what}"));
            }
            line.push_str(&match waiting {
                0 => "; nothing waits".to_owned(),
                1 => "; 1 message waits".to_owned(),
                n => format!("; {n} messages wait"),
            });
            t = t.plain(&line);
        }
        Ok(t)
    }

    fn refusal(&self, r: &Refusal) -> Text {
        match r {
            Refusal::SameChat => Text::new(
                "This code was made in this chat: send it in the chat to link with this one.",
            ),
            Refusal::Linked(g) => Text::new(&format!(
                "This chat is linked already (gateway `{g}`). To link it elsewhere, unlink it first: "
            ))
            .code(&self.cmd("unlink", ""))
            .plain("."),
            Refusal::Configured(g) => Text::new(&format!(
                "This chat is in gateway `{g}` by the server's configuration; ask its operator to change that."
            )),
            Refusal::NotLinkable(g) => Text::new(&format!(
                "This chat is in gateway `{g}` of the server's configuration, which does not take linked chats (its operator can allow it with `linkable = true`)."
            )),
        }
    }

    /// The gateway in force that has `chat` as a member (the first).
    fn gateway_of(&self, chat: &Chat) -> Option<GatewayName> {
        self.hub
            .router
            .load()
            .gateways()
            .iter()
            .find(|g| {
                g.members
                    .iter()
                    .any(|m| m.account == chat.account && m.channel == chat.channel)
            })
            .map(|g| g.name.clone())
    }

    /// The configured gateway that lists this chat, if any.
    fn configured_gateway(&self) -> Option<GatewayName> {
        self.settings
            .gateways
            .iter()
            .find(|g| {
                g.members
                    .iter()
                    .any(|m| m.account == self.chat.account && m.channel == self.chat.channel)
            })
            .map(|g| g.name.clone())
    }

    /// The members of `gateway` in force, with their names where a link
    /// or this command knows them.
    fn members(&self, gateway: &GatewayName) -> Vec<(AccountId, ChannelId, Option<String>)> {
        members(self.hub, gateway, Some(&self.chat))
    }
}

/// The chats of `gateway` in force (not its bot API members), named where
/// a link knows them.
pub(crate) fn members_of(
    hub: &Hub,
    gateway: &GatewayName,
) -> Vec<(AccountId, ChannelId, Option<String>)> {
    members(hub, gateway, None)
}

/// The chats of `gateway` in force (not its bot API members), named where
/// a link (or `chat`, the one a command came from) knows their name.
fn members(
    hub: &Hub,
    gateway: &GatewayName,
    chat: Option<&Chat>,
) -> Vec<(AccountId, ChannelId, Option<String>)> {
    let rows = hub.links.rows();
    let routes = hub.router.load();
    let Some(g) = routes.gateway(gateway) else {
        return Vec::new();
    };
    g.members
        .iter()
        // Bots read the gateway's feed; they are not chats to tell.
        .filter(|m| m.account.network() != Network::API)
        .map(|m| {
            let name = chat
                .filter(|c| c.account == m.account && c.channel == m.channel)
                .and_then(|c| c.name.clone())
                .or_else(|| {
                    rows.iter()
                        .find(|r| r.account == m.account && r.channel == m.channel)
                        .and_then(|r| r.name.clone())
                });
            (m.account.clone(), m.channel.clone(), name)
        })
        .collect()
}

/// Tells the chat that left and the chats that stay, after `left` left
/// its gateway (`before`: the gateway's members until then; `dissolved`:
/// the last chat of a gateway made from chats, unlinked with it). The
/// answer for whoever asked (the chat that left, or the admin API).
pub(crate) async fn tell_unlinked(
    hub: &Hub,
    left: &Link,
    dissolved: &[Link],
    before: &[(AccountId, ChannelId, Option<String>)],
    by: &str,
) -> Text {
    tracing::info!(gateway = %left.gateway, account = %left.account, channel = %left.channel, by = %by, "A chat unlinked.");
    let gone = describe(&left.account, &left.channel, left.name.as_deref());
    let stay: Vec<&(AccountId, ChannelId, Option<String>)> = before
        .iter()
        .filter(|(a, c, _)| !(a == &left.account && c == &left.channel))
        .collect();
    for (account, channel, _) in &stay {
        if account.network() == Network::API {
            continue;
        }
        let alone = dissolved
            .iter()
            .any(|d| &d.account == account && &d.channel == channel);
        let current = hub.router.current(account, channel);
        let mut text = format!("🔗 {gone} was unlinked: it no longer mirrors this chat.");
        if alone {
            text.push_str(" This chat is not linked with any other now.");
        }
        tell(hub, account, &current, Text::new(&text)).await;
    }
    let names: Vec<String> = stay
        .iter()
        .filter(|(a, _, _)| a.network() != Network::API)
        .map(|(a, c, n)| describe(a, c, n.as_deref()))
        .collect();
    let text = if names.is_empty() {
        "🔗 Unlinked: this chat is not mirrored anywhere now.".to_owned()
    } else {
        format!("🔗 Unlinked: this chat no longer mirrors {}.", list(&names))
    };
    let current = hub.router.current(&left.account, &left.channel);
    tell(hub, &left.account, &current, Text::new(&text)).await;
    Text::new(&text)
}

/// Tells the chats of a link the admin API made (`first` the one whose
/// gateway it joined).
pub(crate) async fn tell_linked(hub: &Hub, gateway: &GatewayName, second: &Chat) {
    let joined = describe(&second.account, &second.channel, second.name.as_deref());
    let all = members(hub, gateway, Some(second));
    let others: Vec<_> = all
        .iter()
        .filter(|(a, c, _)| !(a == &second.account && c == &second.channel))
        .collect();
    for (account, channel, _) in &others {
        if account.network() == Network::API {
            continue;
        }
        let current = hub.router.current(account, channel);
        let text =
            format!("🔗 {joined} is now linked with this chat by the server's operator: messages go both ways.");
        tell(hub, account, &current, Text::new(&text)).await;
    }
    let names: Vec<String> = others
        .iter()
        .filter(|(a, _, _)| a.network() != Network::API)
        .map(|(a, c, n)| describe(a, c, n.as_deref()))
        .collect();
    let current = hub.router.current(&second.account, &second.channel);
    tell(
        hub,
        &second.account,
        &current,
        Text::new(&format!(
            "🔗 The server's operator linked this chat with {}: messages go both ways.",
            list(&names)
        )),
    )
    .await;
}

/// How people read a chat: `«Lobby» on Telegram`, or its id where no name
/// is known.
pub(crate) fn describe(account: &AccountId, channel: &ChannelId, name: Option<&str>) -> String {
    let network = crate::adapters::display_name(account.network());
    match name {
        Some(n) => format!("«{n}» on {network}"),
        None => format!("{channel} on {network}"),
    }
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => "no other chat".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `15 minutes`, `1 minute`, `30 seconds`.
fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        return format!("{s} second{}", if s == 1 { "" } else { "s" });
    }
    let m = s.div_ceil(60);
    format!("{m} minute{}", if m == 1 { "" } else { "s" })
}

/// A time as status shows it.
fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Queues a notice to one chat: its origin is that chat, so it is routed
/// nowhere else, and a chat that just left its gateway still gets it.
pub(crate) async fn tell(hub: &Hub, account: &AccountId, channel: &ChannelId, text: Text) {
    let gateway = hub
        .router
        .load()
        .gateways()
        .iter()
        .find(|g| {
            let configured = hub.router.configured(account, channel);
            g.members
                .iter()
                .any(|m| &m.account == account && m.channel == configured)
        })
        .map_or_else(
            || GatewayName::new(NO_GATEWAY).expect("a valid name"),
            |g| g.name.clone(),
        );
    let item = IngestItem {
        event: NewEvent {
            origin: Origin {
                account: account.clone(),
                channel: channel.clone(),
                remote_id: RemoteId::new(format!("answer:{:032x}", rand::random::<u128>()))
                    .expect("valid"),
                thread: None,
            },
            key: None,
            author: Author {
                remote_id: "switchboard".into(),
                display_name: "switchboard".into(),
                username: None,
                avatar: None,
                is_bot: true,
            },
            at: time::OffsetDateTime::now_utc(),
            kind: EventKind::Notice { body: text.0 },
        },
        origin_token: None,
        dests: vec![Dest {
            gateway,
            account: account.clone(),
            channel: channel.clone(),
        }],
        feed: Vec::new(),
        check_echo: false,
    };
    if let Err(e) = hub.writer.ingest(item).await {
        tracing::warn!(%account, %channel, error = %e, "An answer to a command could not be queued.");
    }
}

/// Rich text built piece by piece: plain words, and `code` where people
/// copy what is shown (a pairing code, a command: monospace, which a
/// Telegram tap copies).
pub(crate) struct Text(RichText);

impl Text {
    pub(crate) fn new(s: &str) -> Self {
        Self(RichText::plain(s))
    }

    fn plain(mut self, s: &str) -> Self {
        self.0.text.push_str(s);
        self
    }

    fn code(mut self, s: &str) -> Self {
        let start = self.0.text.len();
        self.0.text.push_str(s);
        self.0.spans.push(Span {
            start,
            end: self.0.text.len(),
            style: Style::Code,
        });
        self
    }

    fn trim_end(mut self) -> Self {
        let len = self.0.text.trim_end().len();
        self.0.text.truncate(len);
        self
    }
}

impl std::ops::Deref for Text {
    type Target = RichText;

    fn deref(&self) -> &RichText {
        &self.0
    }
}
