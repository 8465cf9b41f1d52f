//! Chat commands, on an account with `links = true` (see
//! `switchboard_core::commands`): the hub's commands registered in the
//! command menu of group administrators (`setMyCommands`), a message that
//! is `/link` or `/link@thisbot` read as a command, and whether its sender
//! administers the chat, asked of Telegram (`getChatMember`). The hub does
//! the rest and answers in the chat.

use serde_json::{json, Value};
use switchboard_core::commands::COMMANDS;
use switchboard_core::{EventKind, NewEvent, Origin};
use time::OffsetDateTime;

use super::{remote, TelegramAdapter, CALL_TIMEOUT};
use crate::client::CallError;
use crate::convert::{self, Channels};
use crate::wire::{ChatMember, Message};

impl TelegramAdapter {
    /// Puts the hub's commands in the command menu Telegram shows a
    /// group's administrators (scope `all_chat_administrators`, Bot API
    /// `setMyCommands`): the people who may link a chat find `/link`
    /// there. Best effort: a command typed out works without it.
    pub(super) async fn register_commands(&self) {
        if self.commands.is_none() {
            return;
        }
        let commands: Vec<Value> = COMMANDS
            .iter()
            .map(|c| json!({"command": c.name, "description": c.about}))
            .collect();
        let params = json!({
            "commands": commands,
            "scope": {"type": "all_chat_administrators"},
        });
        match self
            .client
            .call::<Value>("setMyCommands", &params, CALL_TIMEOUT)
            .await
        {
            Ok(_) => {
                tracing::info!(account = %self.cfg.account, "Commands registered for group administrators.");
            }
            Err(e) => {
                tracing::warn!(account = %self.cfg.account, error = %e, "Telegram did not take the command menu; the commands still work when typed.");
            }
        }
    }

    /// The command a message is, when it is one of the hub's written as a
    /// bot command (`/link`, `/link@thisbot`); never a command addressed
    /// to another bot, and never on an account without commands.
    pub(super) fn command_in(&self, m: &Message) -> Option<(String, Vec<String>)> {
        let form = self.commands.as_ref()?;
        let bot = self.me.get().and_then(|u| u.username.as_deref());
        form.parse(m.text.as_deref()?, bot)
    }

    /// The event for a command message: the chat's title as its name, and
    /// whether the sender administers the chat (see [`Self::is_admin`]).
    pub(super) async fn command_event(
        &self,
        m: &Message,
        (name, args): (String, Vec<String>),
        received: OffsetDateTime,
    ) -> NewEvent {
        let (channel, thread) = self.channel_for(
            m.chat.id,
            m.message_thread_id
                .filter(|_| m.is_topic_message == Some(true)),
        );
        let author = convert::author_of(m);
        let channel_name = m
            .chat
            .title
            .clone()
            .or_else(|| m.from.as_ref().map(crate::wire::User::full_name));
        NewEvent {
            origin: Origin {
                account: self.cfg.account.clone(),
                channel,
                remote_id: remote(m.message_id),
                thread,
            },
            key: None,
            author,
            at: convert::plausible_time(m.date, received).unwrap_or(received),
            kind: EventKind::Command {
                name,
                args,
                sender_is_admin: self.is_admin(m).await,
                channel_name,
            },
        }
    }

    /// Whether the sender of `m` administers its chat: in a private chat
    /// the one person there does; a channel's posts and an anonymous
    /// administrator's messages (sent as the chat itself) come from its
    /// administrators; anyone else is asked of Telegram (`getChatMember`:
    /// `creator` or `administrator`). `None` when Telegram did not answer.
    async fn is_admin(&self, m: &Message) -> Option<bool> {
        if m.chat.kind == "private" || m.chat.kind == "channel" {
            return Some(true);
        }
        if let Some(chat) = &m.sender_chat {
            // The group itself (an anonymous admin), or another chat (a
            // channel someone posts as): only the first is the chat's.
            return Some(chat.id == m.chat.id);
        }
        let user = m.from.as_ref()?.id;
        let params = json!({"chat_id": m.chat.id, "user_id": user});
        match self
            .client
            .call::<ChatMember>("getChatMember", &params, CALL_TIMEOUT)
            .await
        {
            Ok(member) => Some(matches!(
                member.status.as_str(),
                "creator" | "administrator"
            )),
            // Telegram knows no such member: not an admin.
            Err(CallError::Api { code: 400, .. }) => Some(false),
            Err(e) => {
                tracing::warn!(account = %self.cfg.account, chat = m.chat.id, error = %e, "Cannot ask Telegram whether a command's sender is an administrator.");
                None
            }
        }
    }
}
