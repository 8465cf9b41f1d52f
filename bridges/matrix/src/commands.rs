//! Chat commands, on an account with `links = true` (see
//! `switchboard_core::commands`): the account receives from every room it
//! is in (and accepts every invite), so a room's admins can link it; a
//! message whose text starts with the account's prefix (`!sb link`) is
//! delivered as a command, with whether its sender administers the room:
//! a power level at or above `admin_power_level` (default 50, Element's
//! "Moderator"), or a creator of a room of version 12 or later (who
//! outranks every level). The room's name comes from its state. The hub
//! does the rest and answers in the room.

use ruma::api::client as api;
use ruma::OwnedRoomId;
use serde_json::Value;
use switchboard_core::{EventKind, NewEvent};

use crate::adapter::{MatrixAdapter, MAX_JSON, SEND_TIMEOUT};
use crate::client::MxError;

impl MatrixAdapter {
    /// The command an event read from a room is, in this account's form:
    /// a new message only (not an edit), never on an account without
    /// commands.
    pub(crate) fn command_in(&self, event: &NewEvent) -> Option<(String, Vec<String>)> {
        let form = self.commands.as_ref()?;
        let EventKind::Message { body, .. } = &event.kind else {
            return None;
        };
        form.parse(&body.text, None)
    }

    /// Turns a message read from `room` into its command: the sender's
    /// standing and the room's name asked of the homeserver. `Err` only
    /// when the homeserver cannot be reached (the batch is read again).
    pub(crate) async fn make_command(
        &self,
        room: &OwnedRoomId,
        event: &mut NewEvent,
        (name, args): (String, Vec<String>),
    ) -> Result<(), MxError> {
        let req = api::state::get_state_events::v3::Request::new(room.clone());
        let (sender_is_admin, channel_name) = match self
            .client
            .call(req, None, SEND_TIMEOUT, MAX_JSON)
            .await
        {
            Ok(res) => {
                let state: Vec<Value> = res
                    .room_state
                    .iter()
                    .filter_map(|e| e.deserialize_as::<Value>().ok())
                    .collect();
                let level = power_level(&state, &event.author.remote_id);
                (Some(level >= self.cfg.admin_power_level), room_name(&state))
            }
            Err(e @ (MxError::Connect(_) | MxError::Timeout | MxError::Network(_))) => {
                return Err(e)
            }
            Err(e) => {
                tracing::warn!(account = %self.cfg.account, %room, error = %e, "Cannot read the room's power levels for a command.");
                (None, None)
            }
        };
        event.key = None;
        event.kind = EventKind::Command {
            name,
            args,
            sender_is_admin,
            channel_name,
        };
        Ok(())
    }
}

/// A power level as rooms store it: a number, or (in old rooms) a string.
fn level(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// `user`'s power level in a room, from its state (full events): the
/// room's `m.room.power_levels` (`users`, else `users_default`); without
/// power levels, the creator's 100 and everyone else's 0 (the spec's
/// defaults). From room version 12 the room's creators outrank every
/// level: `i64::MAX`.
#[must_use]
pub fn power_level(state: &[Value], user: &str) -> i64 {
    let of = |ty: &str| {
        state
            .iter()
            .find(|e| e["type"] == ty && e["state_key"] == "")
    };
    let create = of("m.room.create");
    if let Some(create) = create {
        let version = create["content"]["room_version"].as_str().unwrap_or("1");
        let creators_rule = version.parse::<u32>().is_ok_and(|v| v >= 12)
            || version.starts_with("org.matrix.hydra");
        let additional = create["content"]["additional_creators"]
            .as_array()
            .is_some_and(|a| a.iter().any(|u| u == user));
        if creators_rule && (create["sender"] == user || additional) {
            return i64::MAX;
        }
    }
    match of("m.room.power_levels").map(|e| &e["content"]) {
        Some(levels) => level(&levels["users"][user])
            .or_else(|| level(&levels["users_default"]))
            .unwrap_or(0),
        None if create.is_some_and(|c| c["sender"] == user) => 100,
        None => 0,
    }
}

/// The room's name as people see it: `m.room.name`, else its canonical
/// alias.
#[must_use]
pub fn room_name(state: &[Value]) -> Option<String> {
    let content = |ty: &str, key: &str| {
        state
            .iter()
            .find(|e| e["type"] == ty && e["state_key"] == "")
            .and_then(|e| e["content"][key].as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    content("m.room.name", "name").or_else(|| content("m.room.canonical_alias", "alias"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn power_levels_and_creators() {
        let state = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": "@owner:x", "content": {"room_version": "10"}}),
            json!({"type": "m.room.power_levels", "state_key": "", "sender": "@owner:x",
                "content": {"users": {"@owner:x": 100, "@mod:x": 50, "@old:x": "60"}, "users_default": 0}}),
            json!({"type": "m.room.name", "state_key": "", "content": {"name": " Lobby "}}),
        ];
        assert_eq!(power_level(&state, "@owner:x"), 100);
        assert_eq!(power_level(&state, "@mod:x"), 50);
        assert_eq!(power_level(&state, "@old:x"), 60);
        assert_eq!(power_level(&state, "@someone:x"), 0);
        assert_eq!(room_name(&state).as_deref(), Some("Lobby"));
        let v12 = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": "@owner:x", "content": {"room_version": "12", "additional_creators": ["@co:x"]}}),
            json!({"type": "m.room.power_levels", "state_key": "", "content": {"users": {}, "users_default": 10}}),
            json!({"type": "m.room.canonical_alias", "state_key": "", "content": {"alias": "#lobby:x"}}),
        ];
        assert_eq!(power_level(&v12, "@owner:x"), i64::MAX);
        assert_eq!(power_level(&v12, "@co:x"), i64::MAX);
        assert_eq!(power_level(&v12, "@someone:x"), 10);
        assert_eq!(room_name(&v12).as_deref(), Some("#lobby:x"));
        let bare = vec![
            json!({"type": "m.room.create", "state_key": "", "sender": "@owner:x", "content": {}}),
        ];
        assert_eq!(power_level(&bare, "@owner:x"), 100);
        assert_eq!(power_level(&bare, "@someone:x"), 0);
        assert_eq!(room_name(&bare), None);
    }
}
