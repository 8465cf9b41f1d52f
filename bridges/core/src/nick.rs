//! How a relayed message shows who wrote it, on networks where the bridge
//! posts as one account (a Telegram bot, a Signal number, a Matrix relay
//! bot): a per-gateway template in matterbridge's `RemoteNickFormat` habit.
//!
//! Placeholders: `{NICK}` (display name), `{USERNAME}` (the handle, else
//! the name), `{NETWORK}` (telegram, signal, matrix, api), `{CHANNEL}` (the
//! origin channel), `{GATEWAY}`. Text between a pair of `**` is bold, so the
//! default `**{NICK}**: ` shows the name in bold.

use crate::adapter::Outbound;
use crate::richtext::{RichText, Span, Style, TextUnit};

/// The template used when a gateway sets none.
pub const DEFAULT_NICK_FORMAT: &str = "**{NICK}**: ";

/// The prefix `template` gives `out`'s author, as rich text. An edit keeps
/// the prefix of the message it changes: its author, not the editor (who
/// may be a moderator or a bot).
#[must_use]
pub fn render_nick(template: &str, out: &Outbound) -> RichText {
    let ev = match (&out.event.kind, &out.target) {
        (crate::model::EventKind::Edit { .. }, Some(t)) => &*t.event,
        _ => &out.event,
    };
    let nick = if ev.author.display_name.is_empty() {
        ev.author
            .username
            .as_deref()
            .unwrap_or(&ev.author.remote_id)
    } else {
        &ev.author.display_name
    };
    let username = ev.author.username.as_deref().unwrap_or(nick);
    let mut text = String::new();
    let mut spans = Vec::new();
    let mut bold_from: Option<usize> = None;
    for (i, piece) in template.split("**").enumerate() {
        if i > 0 {
            match bold_from.take() {
                Some(start) if text.len() > start => spans.push(Span {
                    start,
                    end: text.len(),
                    style: Style::Bold,
                }),
                Some(_) => {}
                None => bold_from = Some(text.len()),
            }
        }
        text.push_str(
            &piece
                .replace("{NICK}", nick)
                .replace("{USERNAME}", username)
                .replace("{NETWORK}", ev.origin.account.network().as_str())
                .replace("{CHANNEL}", ev.origin.channel.as_str())
                .replace("{GATEWAY}", out.gateway.as_str()),
        );
    }
    // An unpaired `**` stays as written.
    if let Some(start) = bold_from {
        text.insert_str(start, "**");
    }
    RichText { text, spans }
}

/// `body` with the author's prefix from `template` in front of it.
#[must_use]
pub fn with_nick(template: &str, out: &Outbound, body: &RichText) -> RichText {
    with_nick_within(template, out, body, usize::MAX, TextUnit::Chars)
}

/// As [`with_nick`], with the prefix cut to `budget` units (ending in
/// `…: `), so a network's length limit minus the budget is room enough
/// for any author's name.
#[must_use]
pub fn with_nick_within(
    template: &str,
    out: &Outbound,
    body: &RichText,
    budget: usize,
    unit: TextUnit,
) -> RichText {
    let mut prefix = render_nick(template, out);
    fit(&mut prefix, budget, unit);
    let mut all = body.prefixed(&prefix.text);
    let mut spans = prefix.spans;
    spans.append(&mut all.spans);
    all.spans = spans;
    all
}

/// Cuts `prefix` to `budget` units, ending it in `…: `.
fn fit(prefix: &mut RichText, budget: usize, unit: TextUnit) {
    if prefix.len_in(unit) <= budget {
        return;
    }
    let tail = "…: ";
    let room = budget.saturating_sub(RichText::plain(tail).len_in(unit));
    let mut used = 0;
    let mut end = 0;
    for (i, c) in prefix.text.char_indices() {
        let w = RichText::plain(c.to_string()).len_in(unit);
        if used + w > room {
            break;
        }
        used += w;
        end = i + c.len_utf8();
    }
    prefix.text.truncate(end);
    prefix.text.push_str(tail);
    for s in &mut prefix.spans {
        s.start = s.start.min(end);
        s.end = s.end.min(end);
    }
    prefix.spans.retain(|s| s.start < s.end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Author, Event, EventKind, Origin};

    fn out(name: &str) -> Outbound {
        Outbound {
            gateway: crate::GatewayName::new("lobby").unwrap(),
            channel: crate::ChannelId::new("-100").unwrap(),
            event: Event {
                id: crate::EventId(1),
                origin: Origin {
                    account: "signal.main".parse().unwrap(),
                    channel: crate::ChannelId::new("grp").unwrap(),
                    remote_id: crate::RemoteId::new("1").unwrap(),
                    thread: None,
                },
                author: Author {
                    remote_id: "u1".into(),
                    display_name: name.into(),
                    username: Some("ally".into()),
                    ..Author::default()
                },
                at: time::OffsetDateTime::UNIX_EPOCH,
                kind: EventKind::Message {
                    body: RichText::plain("hi"),
                    attachments: vec![],
                    reply_to: None,
                },
            },
            target: None,
            nick_format: None,
        }
    }

    #[test]
    fn default_template_bolds_the_name() {
        let r = render_nick(DEFAULT_NICK_FORMAT, &out("Ally 😀"));
        assert_eq!(r.text, "Ally 😀: ");
        assert_eq!(
            r.spans,
            vec![Span {
                start: 0,
                end: "Ally 😀".len(),
                style: Style::Bold
            }]
        );
        let full = with_nick(
            DEFAULT_NICK_FORMAT,
            &out("A"),
            &RichText {
                text: "x y".into(),
                spans: vec![Span {
                    start: 2,
                    end: 3,
                    style: Style::Italic,
                }],
            },
        );
        assert_eq!(full.text, "A: x y");
        assert_eq!(
            full.spans[1],
            Span {
                start: 5,
                end: 6,
                style: Style::Italic
            }
        );
    }

    #[test]
    fn a_long_prefix_is_cut_to_its_budget() {
        let body = RichText::plain("hi");
        let full = with_nick_within(
            DEFAULT_NICK_FORMAT,
            &out(&"😀".repeat(80)),
            &body,
            96,
            TextUnit::Utf16,
        );
        let prefix = &full.text[..full.text.len() - 2];
        assert!(RichText::plain(prefix).len_in(TextUnit::Utf16) <= 96);
        assert!(prefix.ends_with("…: "));
        full.validate().unwrap();
        assert_eq!(&full.text[full.text.len() - 2..], "hi");
        let short = with_nick_within(DEFAULT_NICK_FORMAT, &out("Ann"), &body, 96, TextUnit::Utf16);
        assert_eq!(short, with_nick(DEFAULT_NICK_FORMAT, &out("Ann"), &body));
    }

    #[test]
    fn an_edit_keeps_the_edited_messages_author() {
        let original = out("Ally").event;
        let mut edit = out("Moderator");
        edit.event.kind = EventKind::Edit {
            target: crate::model::TargetRef::Event(crate::EventId(1)),
            body: RichText::plain("fixed"),
        };
        edit.target = Some(crate::adapter::Reference {
            event: Box::new(original),
            ids: vec![crate::RemoteId::new("9").unwrap()],
        });
        assert_eq!(render_nick(DEFAULT_NICK_FORMAT, &edit).text, "Ally: ");
    }

    #[test]
    fn placeholders_and_unpaired_markers() {
        let r = render_nick("[{NETWORK}/{GATEWAY}] <{USERNAME}> **", &out("Ally"));
        assert_eq!(r.text, "[signal/lobby] <ally> **");
        assert!(r.spans.is_empty());
    }
}
