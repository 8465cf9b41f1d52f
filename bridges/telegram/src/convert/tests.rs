use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use switchboard_core::{Span, TextUnit};

use super::*;
use crate::wire::{Message, Update};

struct Plain(HashSet<String>);
impl Channels for Plain {
    fn channel_for(&self, chat: i64, thread: Option<i64>) -> (ChannelId, Option<String>) {
        if let Some(t) = thread {
            let topic = format!("{chat}/{t}");
            if self.0.contains(&topic) {
                return (ChannelId::new(topic).unwrap(), None);
            }
        }
        (
            ChannelId::new(chat.to_string()).unwrap(),
            thread.map(|t| t.to_string()),
        )
    }
}

fn fixture() -> Vec<serde_json::Value> {
    serde_json::from_str(include_str!("../../tests/fixtures/album_and_edit.json")).unwrap()
}

fn account() -> AccountId {
    "telegram.main".parse().unwrap()
}

#[test]
fn recorded_updates_become_events() {
    let raw = fixture();
    let updates: Vec<Result<Update, _>> = raw
        .iter()
        .map(|v| serde_json::from_value::<Update>(v.clone()))
        .collect();
    // The malformed one fails on its own; the rest decode.
    assert!(updates[6].is_err());
    let u: Vec<Update> = updates.into_iter().take(6).map(Result::unwrap).collect();
    let ch = Plain(HashSet::new());

    let photo = message_draft(&account(), &ch, u[0].message.as_ref().unwrap(), false).unwrap();
    assert_eq!(photo.files[0].file_id, "big", "the largest size");
    assert_eq!(photo.event.author.display_name, "Ana Lima");
    assert_eq!(photo.event.author.username.as_deref(), Some("ana"));
    let EventKind::Message { body, .. } = &photo.event.kind else {
        panic!()
    };
    assert_eq!(&body.text[body.spans[0].start..body.spans[0].end], "😀");
    let doc = message_draft(&account(), &ch, u[1].message.as_ref().unwrap(), false).unwrap();
    assert_eq!(doc.files[0].name, "notes.pdf");
    assert_eq!(doc.files[0].mime, "application/pdf");

    let edit = message_draft(&account(), &ch, u[2].edited_message.as_ref().unwrap(), true).unwrap();
    assert_eq!(edit.event.key.as_deref(), Some("edit:9:1764100100"));
    let EventKind::Edit { target, body } = &edit.event.kind else {
        panic!()
    };
    assert_eq!(target, &TargetRef::Remote(RemoteId::new("9").unwrap()));
    assert_eq!(&body.text[body.spans[0].start..body.spans[0].end], "typo");

    let reactions = reaction_events(&account(), &ch, u[3].message_reaction.as_ref().unwrap());
    let got: Vec<(String, bool)> = reactions
        .iter()
        .map(|e| match &e.kind {
            EventKind::Reaction { emoji, removed, .. } => (emoji.clone(), *removed),
            _ => panic!(),
        })
        .collect();
    assert_eq!(got, [("🔥".to_owned(), false), ("👍".to_owned(), true)]);
    assert_ne!(reactions[0].key, reactions[1].key);

    let topic = message_draft(&account(), &ch, u[4].message.as_ref().unwrap(), false).unwrap();
    assert_eq!(topic.event.origin.channel.as_str(), "-1001");
    assert_eq!(topic.event.origin.thread.as_deref(), Some("3"));
    let EventKind::Message { reply_to, .. } = &topic.event.kind else {
        panic!()
    };
    assert!(
        reply_to.is_none(),
        "the topic's opening message is not a reply"
    );
    let mapped = Plain(["-1001/3".to_owned()].into());
    let topic = message_draft(&account(), &mapped, u[4].message.as_ref().unwrap(), false).unwrap();
    assert_eq!(topic.event.origin.channel.as_str(), "-1001/3");

    assert!(
        message_draft(&account(), &ch, u[5].message.as_ref().unwrap(), false).is_none(),
        "dice are not bridged"
    );
}

#[test]
fn joins_and_leaves_are_membership() {
    let ch = Plain(HashSet::new());
    let msg: Message = serde_json::from_value(serde_json::json!({
        "message_id": 3, "date": 1, "chat": {"id": -5, "type": "group"},
        "from": {"id": 1, "is_bot": false, "first_name": "Admin"},
        "new_chat_members": [{"id": 9, "is_bot": false, "first_name": "Neo", "username": "neo"}]
    }))
    .unwrap();
    let d = message_draft(&account(), &ch, &msg, false).unwrap();
    assert_eq!(
        d.event.kind,
        EventKind::Membership {
            change: Membership::Joined
        }
    );
    assert_eq!(
        d.event.author.display_name, "Neo",
        "the one who joined, not who added them"
    );
    let msg: Message = serde_json::from_value(serde_json::json!({
        "message_id": 4, "date": 1, "chat": {"id": -5, "type": "group"},
        "from": {"id": 9, "is_bot": false, "first_name": "Neo"},
        "left_chat_member": {"id": 9, "is_bot": false, "first_name": "Neo"}
    }))
    .unwrap();
    let d = message_draft(&account(), &ch, &msg, false).unwrap();
    assert_eq!(
        d.event.kind,
        EventKind::Membership {
            change: Membership::Left
        }
    );
}

#[test]
fn entities_of_every_kind() {
    let text = "b i u s sp c pre link @ana Bo q https://x.org #tag";
    let at = |s: &str| text.find(s).unwrap();
    let e = |kind: &str, s: &str| Entity {
        kind: kind.into(),
        offset: at(s),
        length: s.len(),
        url: None,
        user: None,
        language: None,
    };
    let mut ents = vec![
        e("bold", "b "),
        e("italic", "i"),
        e("underline", "u"),
        e("strikethrough", "s "),
        e("spoiler", "sp"),
        e("code", "c "),
        Entity {
            language: Some("rust".into()),
            ..e("pre", "pre")
        },
        Entity {
            url: Some("https://a.b/".into()),
            ..e("text_link", "link")
        },
        e("mention", "@ana"),
        Entity {
            user: Some(User {
                id: 7,
                is_bot: false,
                first_name: "Bo".into(),
                last_name: None,
                username: None,
                can_read_all_group_messages: None,
            }),
            ..e("text_mention", "Bo")
        },
        e("blockquote", "q"),
        e("url", "https://x.org"),
        e("hashtag", "#tag"),
        Entity {
            offset: 999,
            ..e("bold", "b ")
        },
    ];
    ents.sort_by_key(|e| e.offset);
    let rt = entities_to_rich(text, &ents);
    let styles: Vec<&Style> = rt.spans.iter().map(|s| &s.style).collect();
    assert_eq!(
        rt.spans.len(),
        12,
        "hashtag stays plain; the bad entity is dropped: {styles:?}"
    );
    assert!(rt.spans.iter().any(|s| s.style
        == Style::Mention {
            user_id: "@ana".into()
        }));
    assert!(rt.spans.iter().any(|s| s.style
        == Style::Mention {
            user_id: "7".into()
        }));
    assert!(rt.spans.iter().any(|s| s.style
        == Style::Link {
            url: "https://x.org".into()
        }));
    assert!(rt.spans.iter().any(|s| s.style
        == Style::Pre {
            language: Some("rust".into())
        }));
}

/// Text with astral characters, CJK, combining marks and newlines.
fn random_text(rng: &mut impl Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "b",
        " ",
        "\n",
        "é",
        "e\u{301}",
        "漢",
        "字",
        "😀",
        "👨‍👩‍👧",
        "🇧🇷",
        "x",
        "  ",
    ];
    let n = rng.gen_range(0..60);
    (0..n)
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect()
}

fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect()
}

fn random_style(rng: &mut impl Rng) -> Style {
    match rng.gen_range(0..9) {
        0 => Style::Bold,
        1 => Style::Italic,
        2 => Style::Underline,
        3 => Style::Strike,
        4 => Style::Spoiler,
        5 => Style::Code,
        6 => Style::Pre {
            language: Some("rust".into()),
        },
        7 => Style::Link {
            url: "https://example.org/p?q=1".into(),
        },
        _ => Style::Blockquote,
    }
}

/// Nested or disjoint, never crossing, non-empty spans (what Telegram
/// allows).
fn random_rich(rng: &mut impl Rng) -> RichText {
    let text = random_text(rng);
    let b = boundaries(&text);
    let mut spans: Vec<Span> = Vec::new();
    for _ in 0..rng.gen_range(0..6) {
        if b.len() < 2 {
            break;
        }
        let i = rng.gen_range(0..b.len() - 1);
        let j = rng.gen_range(i + 1..b.len());
        let (start, end) = (b[i], b[j]);
        let crosses = spans.iter().any(|s| {
            (s.start < start && start < s.end && s.end < end)
                || (start < s.start && s.start < end && end < s.end)
        });
        if !crosses {
            spans.push(Span {
                start,
                end,
                style: random_style(rng),
            });
        }
    }
    RichText { text, spans }
}

fn sorted(mut r: RichText) -> RichText {
    r.spans.sort_by(|a, b| {
        (a.start, a.end, format!("{:?}", a.style)).cmp(&(b.start, b.end, format!("{:?}", b.style)))
    });
    r
}

#[test]
fn rich_text_round_trips_through_entities() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for case in 0..3000 {
        let rt = random_rich(&mut rng);
        let ents = rich_to_entities(&rt, true);
        // What the wire carries is valid for Telegram: inside the text, in
        // UTF-16 units, sorted by offset.
        let units: usize = rt.text.encode_utf16().count();
        assert!(
            ents.iter().all(|e| e.offset + e.length <= units),
            "case {case}"
        );
        assert!(
            ents.windows(2).all(|w| w[0].offset <= w[1].offset),
            "case {case}"
        );
        let wire = serde_json::to_value(&ents).unwrap();
        let back: Vec<Entity> = serde_json::from_value(wire).unwrap();
        assert_eq!(
            sorted(entities_to_rich(&rt.text, &back)),
            sorted(rt.clone()),
            "case {case}"
        );
    }
}

#[test]
fn splitting_for_telegram_never_cuts_an_entity_or_a_character() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for case in 0..2000 {
        let rt = random_rich(&mut rng);
        let max = rng.gen_range(8..40);
        let pieces = rt.split_in(max, TextUnit::Utf16);
        let joined: String = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, rt.text, "case {case}");
        let mut offset = 0;
        for p in &pieces {
            assert!(
                p.len_in(TextUnit::Utf16) <= max || p.text.chars().count() == 1,
                "case {case}: piece too long"
            );
            p.validate().unwrap();
            // Every span of the original that fits a piece is whole in one.
            let (a, b) = (offset, offset + p.text.len());
            for s in &rt.spans {
                let fits = rt.text[s.start..s.end].encode_utf16().count() <= max;
                if fits && s.start < b && s.end > a {
                    assert!(
                        s.start >= a && s.end <= b,
                        "case {case}: span {s:?} cut at {a}..{b} of {:?} (max {max})",
                        rt.text
                    );
                }
            }
            offset = b;
        }
    }
}

fn telegram_styles() -> impl proptest::strategy::Strategy<Value = Style> + Clone {
    proptest::sample::select(vec![
        Style::Bold,
        Style::Italic,
        Style::Underline,
        Style::Strike,
        Style::Spoiler,
        Style::Code,
        Style::Pre {
            language: Some("rust".into()),
        },
        Style::Link {
            url: "https://example.org/p?q=1&r=2".into(),
        },
        Style::Blockquote,
        Style::Mention {
            user_id: "4242".into(),
        },
    ])
}

proptest::proptest! {
    /// Whatever Telegram can render survives the trip to entities (UTF-16
    /// offsets) and back: every style on the same characters.
    #[test]
    fn rich_text_round_trips_through_entities_property(
        rt in switchboard_core::arb::rich_text(telegram_styles())
    ) {
        let back = entities_to_rich(&rt.text, &rich_to_entities(&rt, true));
        proptest::prop_assert_eq!(back.text.as_str(), rt.text.as_str());
        proptest::prop_assert_eq!(
            switchboard_core::arb::coverage(&back),
            switchboard_core::arb::coverage(&rt)
        );
    }
}
