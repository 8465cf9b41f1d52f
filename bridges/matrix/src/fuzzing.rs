//! Fuzz entry points for what a homeserver sends (see the workspace's
//! `switchboard::fuzzing`): arbitrary bytes in, no panic out.

use ruma::api::IncomingRequestExt;
use ruma::events::AnySyncTimelineEvent;
use ruma::serde::Raw;
use switchboard_core::{AccountId, ChannelId};

use crate::convert::{read_event, Names, Read};

struct NoNames;

impl Names for NoNames {
    fn name(&self, _: &str) -> Option<String> {
        None
    }
}

fn read(raw: &Raw<AnySyncTimelineEvent>) {
    let Ok(ev) = raw.deserialize() else { return };
    let account = AccountId::new(crate::NETWORK, "fuzz").expect("a valid account");
    let channel = ChannelId::new("!fuzz:example.org").expect("a room id");
    if let Read::Deliver(e, _) | Read::Redaction { event: e, .. } =
        read_event(&account, &channel, &ev, &NoNames)
    {
        let _ = e.validate();
    }
}

/// One timeline event; and the same bytes as a `formatted_body` through
/// the sanitizer, read into rich text (which must be valid) and written
/// back as HTML.
pub fn event(data: &[u8]) {
    if let Ok(raw) = serde_json::from_slice::<Raw<AnySyncTimelineEvent>>(data) {
        read(&raw);
    }
    if let Ok(html) = std::str::from_utf8(data) {
        if let Some(clean) = crate::html::sanitize(html) {
            let rich = crate::html::to_rich(&clean);
            assert!(
                rich.validate().is_ok(),
                "HTML read into invalid rich text: {rich:?}"
            );
            let _ = crate::html::from_rich(&rich);
        }
    }
}

/// An appservice transaction's body.
pub fn transaction(data: &[u8]) {
    let Ok(req) = http::Request::builder()
        .method(http::Method::PUT)
        .uri("http://localhost/_matrix/app/v1/transactions/t1")
        .header("content-type", "application/json")
        .body(data)
    else {
        return;
    };
    if let Ok(push) =
        ruma::api::appservice::event::push_events::v1::Request::try_from_http_request(req, &["t1"])
    {
        for raw in &push.events {
            read(&raw.clone().cast_unchecked());
        }
    }
}
