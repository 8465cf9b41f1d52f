//! Text with style spans.
//!
//! Offsets are UTF-8 byte offsets into [`RichText::text`], always on char
//! boundaries; that is the one definition. Telegram entities and Signal text
//! styles count UTF-16 code units, so [`RichText::to_utf16`] and
//! [`RichText::from_utf16`] convert losslessly in both directions.

use serde::{Deserialize, Serialize};

/// One style applied to a byte range of the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Style {
    /// Bold.
    Bold,
    /// Italic.
    Italic,
    /// Underline.
    Underline,
    /// Strikethrough.
    Strike,
    /// Inline code.
    Code,
    /// A preformatted block, with its language when known.
    Pre {
        /// The language for highlighting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// A hyperlink.
    Link {
        /// Where it points.
        url: String,
    },
    /// Hidden until clicked.
    Spoiler,
    /// A quotation.
    Blockquote,
    /// A mention of a user.
    Mention {
        /// The user's id on the origin network.
        user_id: String,
    },
    /// A style written by a newer switchboard; kept so stored rows still
    /// decode after a rollback, and rendered as plain text.
    #[serde(other)]
    Unknown,
}

/// A style over `start..end` (UTF-8 byte offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// The style.
    #[serde(flatten)]
    pub style: Style,
}

/// Text plus style spans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RichText {
    /// The plain text.
    pub text: String,
    /// Styles, by byte range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<Span>,
}

/// What a network counts when it limits text length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextUnit {
    /// Unicode scalar values.
    Chars,
    /// UTF-16 code units (Telegram, Signal).
    Utf16,
    /// UTF-8 bytes (Matrix's event size).
    Bytes,
}

impl TextUnit {
    fn of(self, c: char) -> usize {
        match self {
            Self::Chars => 1,
            Self::Utf16 => c.len_utf16(),
            Self::Bytes => c.len_utf8(),
        }
    }
}

/// A span in UTF-16 code units, as Telegram and Signal count them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utf16Span {
    /// Offset in UTF-16 code units.
    pub offset: usize,
    /// Length in UTF-16 code units.
    pub length: usize,
    /// The style.
    pub style: Style,
}

impl RichText {
    /// Unstyled text.
    #[must_use]
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            spans: Vec::new(),
        }
    }

    /// Checks that every span lies inside the text on char boundaries.
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.spans {
            if s.start > s.end
                || s.end > self.text.len()
                || !self.text.is_char_boundary(s.start)
                || !self.text.is_char_boundary(s.end)
            {
                return Err(format!(
                    "span {}..{} does not lie on character boundaries of a {}-byte text",
                    s.start,
                    s.end,
                    self.text.len()
                ));
            }
        }
        Ok(())
    }

    /// Length in Unicode scalar values.
    #[must_use]
    pub fn char_len(&self) -> usize {
        self.text.chars().count()
    }

    /// Length in a network's unit.
    #[must_use]
    pub fn len_in(&self, unit: TextUnit) -> usize {
        self.text.chars().map(|c| unit.of(c)).sum()
    }

    /// Spans in UTF-16 code units.
    #[must_use]
    pub fn to_utf16(&self) -> Vec<Utf16Span> {
        self.spans
            .iter()
            .map(|s| {
                let offset = utf16_len(&self.text[..s.start]);
                Utf16Span {
                    offset,
                    length: utf16_len(&self.text[s.start..s.end]),
                    style: s.style.clone(),
                }
            })
            .collect()
    }

    /// Builds rich text from UTF-16 spans; a span that splits a surrogate
    /// pair or runs past the text is an error, not a guess.
    pub fn from_utf16(text: impl Into<String>, spans: &[Utf16Span]) -> Result<Self, String> {
        let text = text.into();
        let mut out = Vec::with_capacity(spans.len());
        for s in spans {
            let start = utf16_to_byte(&text, s.offset)
                .ok_or_else(|| format!("UTF-16 offset {} is not a character boundary", s.offset))?;
            // Offsets come from the network: add them without overflow.
            let end_units = s
                .offset
                .checked_add(s.length)
                .ok_or_else(|| format!("UTF-16 span {}+{} overflows", s.offset, s.length))?;
            let end = utf16_to_byte(&text, end_units)
                .ok_or_else(|| format!("UTF-16 offset {end_units} is not a character boundary"))?;
            out.push(Span {
                start,
                end,
                style: s.style.clone(),
            });
        }
        Ok(Self { text, spans: out })
    }

    /// Puts `prefix` (unstyled) before the text, shifting every span.
    #[must_use]
    pub fn prefixed(&self, prefix: &str) -> Self {
        let shift = prefix.len();
        Self {
            text: format!("{prefix}{}", self.text),
            spans: self
                .spans
                .iter()
                .map(|s| Span {
                    start: s.start + shift,
                    end: s.end + shift,
                    style: s.style.clone(),
                })
                .collect(),
        }
    }

    /// Splits into pieces of at most `max_chars` characters; see
    /// [`split_in`](Self::split_in).
    #[must_use]
    pub fn split(&self, max_chars: usize) -> Vec<Self> {
        self.split_in(max_chars, TextUnit::Chars)
    }

    /// Splits into pieces of at most `max` units, preferring a line break,
    /// then a space, in the last fifth of each piece; never inside a
    /// character (a piece holds at least one, even when one is wider than
    /// `max`), and never through a span that would fit in one piece. Spans
    /// longer than a piece are clipped to the pieces they cover.
    #[must_use]
    pub fn split_in(&self, max: usize, unit: TextUnit) -> Vec<Self> {
        let max = max.max(1);
        if self.len_in(unit) <= max {
            return vec![self.clone()];
        }
        // The byte offset where `units` units of `s` end (at least one char).
        let end_after = |s: &str, units: usize| -> usize {
            let mut seen = 0;
            for (i, c) in s.char_indices() {
                seen += unit.of(c);
                if seen > units {
                    return if i == 0 { c.len_utf8() } else { i };
                }
            }
            s.len()
        };
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < self.text.len() {
            let rest = &self.text[start..];
            let hard_end = end_after(rest, max);
            let mut end = hard_end;
            if hard_end < rest.len() {
                let window_from = end_after(&rest[..hard_end], max * 4 / 5).min(hard_end);
                let window = &rest[window_from..hard_end];
                if let Some(i) = window.rfind('\n').or_else(|| window.rfind(' ')) {
                    end = window_from + i + 1;
                }
                // Never through a span that fits in a piece of its own (a
                // link or a code block cut in two is two broken halves):
                // end before it instead.
                // Bounded: crossing spans could otherwise move it back and
                // forth.
                for _ in 0..=self.spans.len() {
                    let Some(s) = self.spans.iter().find(|s| {
                        s.start >= start
                            && s.start < start + end
                            && start + end < s.end
                            && self.text[s.start..s.end]
                                .chars()
                                .map(|c| unit.of(c))
                                .sum::<usize>()
                                <= max
                    }) else {
                        break;
                    };
                    end = if s.start > start {
                        s.start - start
                    } else {
                        // It starts the piece and fits in it: end after it.
                        s.end - start
                    };
                }
            }
            let (a, b) = (start, start + end);
            let spans = self
                .spans
                .iter()
                .filter(|s| s.start < b && s.end > a)
                .map(|s| Span {
                    start: s.start.max(a) - a,
                    end: s.end.min(b) - a,
                    style: s.style.clone(),
                })
                .collect();
            pieces.push(Self {
                text: self.text[a..b].to_owned(),
                spans,
            });
            start = b;
        }
        pieces
    }
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

fn utf16_to_byte(text: &str, units: usize) -> Option<usize> {
    let mut seen = 0;
    for (i, c) in text.char_indices() {
        if seen == units {
            return Some(i);
        }
        seen += c.len_utf16();
        if seen > units {
            return None;
        }
    }
    (seen == units).then_some(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bold(start: usize, end: usize) -> Span {
        Span {
            start,
            end,
            style: Style::Bold,
        }
    }

    #[test]
    fn utf16_round_trip_with_astral_characters() {
        // "😀" is 4 bytes and 2 UTF-16 units; "é" is 2 bytes and 1 unit.
        let text = "a😀é bold";
        let rich = RichText {
            text: text.into(),
            spans: vec![bold(text.find("bold").unwrap(), text.len())],
        };
        let units = rich.to_utf16();
        assert_eq!(units[0].offset, 5);
        assert_eq!(units[0].length, 4);
        assert_eq!(RichText::from_utf16(text, &units).unwrap(), rich);
        let broken = [Utf16Span {
            offset: 2,
            length: 1,
            style: Style::Bold,
        }];
        assert!(RichText::from_utf16(text, &broken).is_err());
    }

    #[test]
    fn absurd_utf16_spans_are_errors_not_panics() {
        let huge = [Utf16Span {
            offset: usize::MAX,
            length: usize::MAX,
            style: Style::Bold,
        }];
        assert!(RichText::from_utf16("abc", &huge).is_err());
        let past = [Utf16Span {
            offset: 1,
            length: 99,
            style: Style::Bold,
        }];
        assert!(RichText::from_utf16("abc", &past).is_err());
    }

    #[test]
    fn split_prefers_spaces_and_clips_spans() {
        let rich = RichText {
            text: "hello world again".into(),
            spans: vec![bold(0, 17)],
        };
        let parts = rich.split(12);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].text, "hello world ");
        assert_eq!(parts[1].text, "again");
        assert_eq!(parts[1].spans, vec![bold(0, 5)]);
        assert!(parts.iter().all(|p| p.validate().is_ok()));
        let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, rich.text);
    }

    #[test]
    fn split_never_cuts_inside_a_character() {
        let rich = RichText::plain("😀".repeat(10));
        let parts = rich.split(3);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.char_len() <= 3));
    }

    #[test]
    fn validate_rejects_spans_off_boundaries() {
        let rich = RichText {
            text: "é".into(),
            spans: vec![bold(0, 1)],
        };
        assert!(rich.validate().is_err());
    }
}
