//! Property-test strategies (feature `proptest`): rich text with the
//! characters networks disagree about (multi-byte, astral emoji, markup
//! characters, line breaks) and spans on character boundaries, and a
//! normal form to compare rich text by what it renders.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::richtext::{RichText, Span, Style};

/// Text from an alphabet that trips offset conversions and escaping.
pub fn text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "b",
        "Z",
        " ",
        "1",
        "é",
        "e\u{301}",
        "ß",
        "中",
        "😀",
        "👍",
        "👨\u{200d}👩\u{200d}👧",
        "🇧🇷",
        "&",
        "<",
        ">",
        "\"",
        "'",
        "\n",
        "*",
        "_",
        "`",
    ]);
    prop::collection::vec(pieces, 1..40).prop_map(|ps| ps.concat())
}

/// Rich text whose spans take styles from `styles`.
pub fn rich_text(styles: impl Strategy<Value = Style> + Clone) -> impl Strategy<Value = RichText> {
    text().prop_flat_map(move |text| {
        let edges: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()))
            .collect();
        let n = edges.len();
        let span = (0..n, 0..n, styles.clone()).prop_filter_map("empty span", {
            let edges = edges.clone();
            move |(a, b, style)| {
                let (a, b) = (a.min(b), a.max(b));
                (a < b).then(|| Span {
                    start: edges[a],
                    end: edges[b],
                    style,
                })
            }
        });
        (Just(text), prop::collection::vec(span, 0..6))
            .prop_map(|(text, spans)| RichText { text, spans })
    })
}

/// Which bytes each style covers: two rich texts that render alike (spans
/// split, merged or nested differently) have the same normal form.
#[must_use]
pub fn coverage(rich: &RichText) -> BTreeSet<(String, usize)> {
    let mut out = BTreeSet::new();
    for s in &rich.spans {
        let key = serde_json::to_string(&s.style).unwrap_or_default();
        for i in s.start..s.end {
            if rich.text.is_char_boundary(i) {
                out.insert((key.clone(), i));
            }
        }
    }
    out
}
