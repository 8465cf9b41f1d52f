//! Entry points of the fuzz targets (`fuzz/`, run with cargo-fuzz) and of
//! their corpus replay on the stable toolchain (`tests/it/fuzz_corpus.rs`).
//! Each takes arbitrary bytes and must return, whatever they hold: an
//! error is fine, a panic is a bug.

use switchboard_core::{AccountId, ChannelId, Network};

fn account(network: Network) -> AccountId {
    AccountId::new(network, "fuzz").expect("a valid account")
}

/// The configuration loader on arbitrary text.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::from_text("fuzz.toml", text);
    }
}

struct Chats;

impl switchboard_telegram::convert::Channels for Chats {
    fn channel_for(&self, chat: i64, thread: Option<i64>) -> (ChannelId, Option<String>) {
        (
            ChannelId::new(chat.to_string()).expect("a chat id is a channel id"),
            thread.map(|t| t.to_string()),
        )
    }
}

/// A Telegram `Update` as `getUpdates` or a webhook delivers it.
pub fn telegram_update(data: &[u8]) {
    let Ok(u) = serde_json::from_slice::<switchboard_telegram::wire::Update>(data) else {
        return;
    };
    let acct = account(switchboard_telegram::NETWORK);
    for (msg, edited) in [
        (&u.message, false),
        (&u.edited_message, true),
        (&u.channel_post, false),
        (&u.edited_channel_post, true),
    ] {
        if let Some(m) = msg {
            if let Some(d) = switchboard_telegram::convert::message_draft(&acct, &Chats, m, edited)
            {
                let _ = d.event.validate();
            }
        }
    }
    if let Some(r) = &u.message_reaction {
        for e in switchboard_telegram::convert::reaction_events(&acct, &Chats, r) {
            let _ = e.validate();
        }
    }
}

/// A signal-cli `receive` notification's params (an envelope).
pub fn signal_envelope(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Some(d) = switchboard_signal::convert::envelope_draft(
        &account(switchboard_signal::NETWORK),
        &["+15550000001".into()],
        &v,
    ) {
        let _ = d.event.validate();
    }
}

/// One Matrix timeline event, and the bytes as a `formatted_body`.
pub fn matrix_event(data: &[u8]) {
    switchboard_matrix::fuzzing::event(data);
}

/// An appservice transaction body as the homeserver pushes it.
pub fn appservice_transaction(data: &[u8]) {
    switchboard_matrix::fuzzing::transaction(data);
}

/// The bot API's JSON post body (`POST /v1/gateways/{gw}/messages`).
pub fn api_body(data: &[u8]) {
    if let Ok(body) = crate::api::native::parse::<crate::api::native::PostBody>(data) {
        let _ = body.validate_spans();
    }
}

/// A fuzz target: bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and the corpus
/// folders under `fuzz/corpus/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("telegram_update", telegram_update),
    ("signal_envelope", signal_envelope),
    ("matrix_event", matrix_event),
    ("appservice_transaction", appservice_transaction),
    ("api_body", api_body),
];
