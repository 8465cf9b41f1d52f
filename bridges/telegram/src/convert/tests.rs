use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use switchboard_core::{Span, TextUnit};

use super::*;
use crate::wire::{Message, Update};
use time::OffsetDateTime;

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
    parse_fixture(include_str!("../../tests/fixtures/album_and_edit.json"))
}

/// A fixture file: JSON after its `//` lines, which name its sources.
fn parse_fixture(text: &str) -> Vec<serde_json::Value> {
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).expect("a fixture is a JSON array")
}

/// The updates of a fixture, decoded.
fn updates(text: &str) -> Vec<Update> {
    parse_fixture(text)
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("the fixture decodes"))
        .collect()
}

/// When the fixtures' updates were received.
fn received() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_764_200_000).unwrap()
}

fn draft(u: &Update, edited: bool) -> Option<Draft> {
    let m = if edited {
        u.edited_message.as_ref()
    } else {
        u.message.as_ref()
    };
    message_draft_for(
        &account(),
        &Plain(HashSet::new()),
        m.unwrap(),
        edited,
        u.update_id,
        received(),
    )
}

fn reply_of(d: &Draft) -> Option<&TargetRef> {
    match &d.event.kind {
        EventKind::Message { reply_to, .. } => reply_to.as_ref(),
        other => panic!("not a message: {other:?}"),
    }
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

    let photo = message_draft_for(
        &account(),
        &ch,
        u[0].message.as_ref().unwrap(),
        false,
        500,
        received(),
    )
    .unwrap();
    assert_eq!(photo.files[0].file_id, "big", "the largest size");
    assert_eq!(photo.event.author.display_name, "Ana Lima");
    assert_eq!(photo.event.author.username.as_deref(), Some("ana"));
    let EventKind::Message { body, .. } = &photo.event.kind else {
        panic!()
    };
    assert_eq!(&body.text[body.spans[0].start..body.spans[0].end], "😀");
    let doc = message_draft_for(
        &account(),
        &ch,
        u[1].message.as_ref().unwrap(),
        false,
        501,
        received(),
    )
    .unwrap();
    assert_eq!(doc.files[0].name, "notes.pdf");
    assert_eq!(doc.files[0].mime, "application/pdf");

    let edit = message_draft_for(
        &account(),
        &ch,
        u[2].edited_message.as_ref().unwrap(),
        true,
        502,
        received(),
    )
    .unwrap();
    assert_eq!(edit.event.key.as_deref(), Some("edit:9:u502"));
    let EventKind::Edit { target, body } = &edit.event.kind else {
        panic!()
    };
    assert_eq!(target, &TargetRef::Remote(RemoteId::new("9").unwrap()));
    assert_eq!(&body.text[body.spans[0].start..body.spans[0].end], "typo");

    let reactions = reaction_events_on(
        &account(),
        ch.channel_for(-1001, None),
        u[3].message_reaction.as_ref().unwrap(),
        503,
        received(),
    );
    let got: Vec<(String, bool)> = reactions
        .iter()
        .map(|e| match &e.kind {
            EventKind::Reaction { emoji, removed, .. } => (emoji.clone(), *removed),
            _ => panic!(),
        })
        .collect();
    assert_eq!(got, [("🔥".to_owned(), false), ("👍".to_owned(), true)]);
    assert_ne!(reactions[0].key, reactions[1].key);

    let topic = message_draft_for(
        &account(),
        &ch,
        u[4].message.as_ref().unwrap(),
        false,
        504,
        received(),
    )
    .unwrap();
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
    let topic = message_draft_for(
        &account(),
        &mapped,
        u[4].message.as_ref().unwrap(),
        false,
        504,
        received(),
    )
    .unwrap();
    assert_eq!(topic.event.origin.channel.as_str(), "-1001/3");

    assert!(
        message_draft_for(
            &account(),
            &ch,
            u[5].message.as_ref().unwrap(),
            false,
            505,
            received()
        )
        .is_none(),
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
    let d = message_draft_for(&account(), &ch, &msg, false, 1, received()).unwrap();
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
    let d = message_draft_for(&account(), &ch, &msg, false, 1, received()).unwrap();
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

// --- the fixtures of issue 19: each shape decoded and converted ---------------

#[test]
fn fixture_a_reply_in_a_supergroup_without_topics_is_a_reply() {
    let u = updates(include_str!(
        "../../tests/fixtures/reply_in_supergroup.json"
    ));
    for (i, target) in [(0, "111"), (1, "112")] {
        let d = draft(&u[i], false).unwrap();
        assert_eq!(
            reply_of(&d),
            Some(&TargetRef::Remote(RemoteId::new(target).unwrap())),
            "update {i}"
        );
        // Not a topic: the group itself, no thread.
        assert_eq!(d.event.origin.channel.as_str(), "-1002222000284");
        assert_eq!(d.event.origin.thread, None);
    }
}

#[test]
fn fixture_in_a_forum_topic_only_the_implicit_reply_is_dropped() {
    let u = updates(include_str!(
        "../../tests/fixtures/reply_in_forum_topic.json"
    ));
    let first = draft(&u[0], false).unwrap();
    assert_eq!(reply_of(&first), None, "the topic's creation is no reply");
    assert_eq!(first.event.origin.thread.as_deref(), Some("3"));
    let second = draft(&u[1], false).unwrap();
    assert_eq!(
        reply_of(&second),
        Some(&TargetRef::Remote(RemoteId::new("40").unwrap()))
    );
    let topic = Plain(["-1001500000001/3".to_owned()].into());
    let m = u[1].message.as_ref().unwrap();
    let mapped =
        message_draft_for(&account(), &topic, m, false, u[1].update_id, received()).unwrap();
    assert_eq!(mapped.event.origin.channel.as_str(), "-1001500000001/3");
}

#[test]
fn fixture_a_gif_is_one_file() {
    let u = updates(include_str!("../../tests/fixtures/animation.json"));
    let d = draft(&u[0], false).unwrap();
    assert_eq!(d.files.len(), 1, "{:?}", d.files);
    assert_eq!(d.files[0].kind, AttachmentKind::Video);
    assert_eq!(d.files[0].file_id, "CgACanim");
    assert_eq!(d.files[0].name, "example.gif.mp4");
    assert_eq!(d.files[0].mime, "video/mp4");
}

#[test]
fn fixture_stickers_keep_their_format_and_bring_their_still() {
    let u = updates(include_str!("../../tests/fixtures/stickers.json"));
    let want = [
        ("CAACstatic", "sticker.webp", "image/webp", "😺", "AAMCs1"),
        (
            "CAACanimated",
            "sticker.tgs",
            "application/x-tgsticker",
            "🎉",
            "AAMCs2",
        ),
        ("CAACvideo", "sticker.webm", "video/webm", "🐸", "AAMCs3"),
    ];
    for (update, (file, name, mime, emoji, thumb)) in u.iter().zip(want) {
        let d = draft(update, false).unwrap();
        assert_eq!(d.files.len(), 1);
        let f = &d.files[0];
        assert_eq!(f.kind, AttachmentKind::Sticker);
        assert_eq!(
            (f.file_id.as_str(), f.name.as_str(), f.mime.as_str()),
            (file, name, mime)
        );
        let still = f.alt.as_deref().expect("the thumbnail as the still");
        assert_eq!(still.file_id, thumb);
        assert_eq!(still.kind, AttachmentKind::Image);
        let EventKind::Message { body, .. } = &d.event.kind else {
            panic!()
        };
        assert_eq!(body.text, emoji, "the emoji says what the sticker shows");
    }
    assert_eq!(
        still_image(b"RIFF\0\0\0\0WEBPVP8X"),
        Some(("sticker.webp", "image/webp"))
    );
    assert_eq!(
        still_image(&[0xFF, 0xD8, 0xFF, 0xE0]),
        Some(("sticker.jpg", "image/jpeg"))
    );
    assert_eq!(still_image(&[0x1F, 0x8B, 8]), None, "a TGS is no still");
}

#[test]
fn fixture_a_reaction_names_the_chat_not_the_topic() {
    let u = updates(include_str!("../../tests/fixtures/reaction_in_forum.json"));
    let r = u[0].message_reaction.as_ref().unwrap();
    assert_eq!(r.chat.id, -1001500000001);
    assert_eq!(u[0].chat_id(), Some(-1001500000001));
    // The caller puts it on the channel that holds the message.
    let topic = ChannelId::new("-1001500000001/3").unwrap();
    let events = reaction_events_on(
        &account(),
        (topic.clone(), None),
        r,
        u[0].update_id,
        received(),
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].origin.channel, topic);
    assert_eq!(events[0].key.as_deref(), Some("react:40:u700030:+👍"));
}

#[test]
fn fixture_the_bots_standing_says_whether_it_sees_reactions() {
    let u = updates(include_str!("../../tests/fixtures/my_chat_member.json"));
    let promoted = u[0].my_chat_member.as_ref().unwrap();
    assert!(!promoted.old_chat_member.sees_reactions());
    assert!(promoted.new_chat_member.sees_reactions());
    let kicked = u[1].my_chat_member.as_ref().unwrap();
    assert_eq!(kicked.new_chat_member.status, "kicked");
    assert!(!kicked.new_chat_member.sees_reactions());
    assert_eq!(u[1].chat_id(), Some(-1001000000001));
}

#[test]
fn fixture_two_edits_in_one_second_are_two_edits() {
    let u = updates(include_str!(
        "../../tests/fixtures/edits_within_one_second.json"
    ));
    let a = draft(&u[0], true).unwrap();
    let b = draft(&u[1], true).unwrap();
    assert_ne!(a.event.key, b.event.key, "not a duplicate");
    assert_eq!(a.event.at, b.event.at);
    let text = |d: &Draft| match &d.event.kind {
        EventKind::Edit { body, .. } => body.text.clone(),
        _ => panic!(),
    };
    assert_eq!((text(&a), text(&b)), ("second".into(), "third".into()));
}

#[test]
fn fixture_an_impossible_date_is_the_time_received() {
    let u = updates(include_str!("../../tests/fixtures/impossible_dates.json"));
    for (update, date) in u.iter().zip([1_764_100_900_000, -5]) {
        let d = draft(update, false).unwrap();
        assert_eq!(d.event.at, received());
        assert_eq!(d.bad_date, Some(date));
    }
    // Seconds of a day ahead are a clock's difference, not an error.
    let soon = received() + time::Duration::hours(2);
    assert_eq!(
        plausible_time(soon.unix_timestamp(), received()),
        Some(soon)
    );
    assert_eq!(
        plausible_time(0, received()),
        None,
        "1970 is before Telegram"
    );
}
