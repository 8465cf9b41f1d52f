//! Chat commands, on an account with `links = true` (see
//! `switchboard_core::commands`): a message whose text starts with the
//! account's prefix (`!sb link`) is delivered as a command, with whether
//! its sender administers the chat: in a group, whether signal-cli lists
//! them among the group's admins (`listGroups`); in a direct chat, the one
//! person there does. The hub does the rest and answers in the chat.

use serde_json::{json, Value};
use switchboard_core::{EventKind, NewEvent};

use super::SignalAdapter;
use crate::client::Conn;
use crate::convert::Draft;

impl SignalAdapter {
    /// The command a draft's message is, in this account's form; never on
    /// an account without commands, nor for an edit or a reaction.
    pub(super) fn command_in(&self, d: &Draft) -> Option<(String, Vec<String>)> {
        let form = self.commands.as_ref()?;
        let EventKind::Message { body, .. } = &d.event.kind else {
            return None;
        };
        form.parse(&body.text, None)
    }

    /// The command event for `d`, sent in the notification `note`: the
    /// group's name and its admins asked of signal-cli.
    pub(super) async fn command_event(
        &self,
        conn: &Conn,
        note: &Value,
        d: Draft,
        (name, args): (String, Vec<String>),
    ) -> NewEvent {
        let mut event = d.event;
        let env = note.get("result").unwrap_or(note).get("envelope");
        let group = env
            .and_then(|e| e.pointer("/dataMessage/groupInfo/groupId"))
            .and_then(Value::as_str);
        let (sender_is_admin, channel_name) = match group {
            Some(g) => self.group_admin(conn, env, g).await,
            // A direct chat: the one person there is its admin.
            None => (Some(true), Some(event.author.display_name.clone())),
        };
        event.kind = EventKind::Command {
            name,
            args,
            sender_is_admin,
            channel_name,
        };
        event
    }

    /// Whether the sender of the envelope `env` is an admin of `group`,
    /// and the group's name, from `listGroups` (its `admins`, each with
    /// `number` and `uuid`). `None` for the first when signal-cli did not
    /// answer.
    async fn group_admin(
        &self,
        conn: &Conn,
        env: Option<&Value>,
        group: &str,
    ) -> (Option<bool>, Option<String>) {
        let ids: Vec<&str> = ["sourceUuid", "sourceNumber", "source"]
            .iter()
            .filter_map(|k| env?.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        let params = json!({"groupId": [group]});
        let groups = match conn
            .call("listGroups", params, self.cfg.request_timeout)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(account = %self.cfg.account, error = %e, "Cannot ask signal-cli for a group's admins.");
                return (None, None);
            }
        };
        let Some(g) = groups
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g.get("id").and_then(Value::as_str) == Some(group))
        else {
            return (Some(false), None);
        };
        let admin = g
            .get("admins")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|a| {
                ["uuid", "number"].iter().any(|k| {
                    a.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|v| ids.contains(&v))
                })
            });
        let name = g
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        (Some(admin), name)
    }
}
