//! Message text as Telegram stores it: entities read from their JSON,
//! checked against the text in UTF-16 code units, and the text cleaned the
//! way the server cleans it before it counts the length.
//!
//! The cleaning is real and visible to clients: `\r` is dropped, other
//! control characters and tabs become spaces, a few invisible characters
//! (U+2028–U+202E and three combining marks) are removed, leading and
//! trailing spaces and newlines are trimmed, and entities that end up empty
//! or cover only whitespace are dropped. A text of only whitespace is
//! refused (`message must be non-empty`), a caption of only whitespace
//! becomes no caption.
//!
//! Entities that do not fit the text are refused in the server's words
//! (TDLib's `fix_formatted_text`, with the first letter lower-cased by the
//! Bot API's error prefixing): `entity beginning at UTF-16 offset N ends
//! after the end of the text at UTF-16 offset M`, `entity begins in a middle
//! of a UTF-16 symbol at byte offset B`. (`can't parse entities: ...` is the
//! wording of `parse_mode` markup errors, which the fake does not parse.)
//! Unlike the real server, the fake does not re-detect mentions, URLs,
//! hashtags and bot commands in a text; it keeps the ones the client sent.

use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

/// The longest message text, in UTF-16 code units.
pub(crate) const MAX_TEXT: usize = 4096;
/// The longest caption, in UTF-16 code units.
pub(crate) const MAX_CAPTION: usize = 1024;

/// Text with its entities, as stored and returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Formatted {
    pub text: String,
    /// MessageEntity objects, sorted by offset.
    pub entities: Vec<Value>,
}

impl Formatted {
    /// The length Telegram limits, in UTF-16 code units.
    pub fn utf16_len(&self) -> usize {
        utf16_len(&self.text)
    }
}

/// The length of `s` in UTF-16 code units.
pub(crate) fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// One entity as read from the request.
#[derive(Debug, Clone)]
pub(crate) struct InputEntity {
    offset: i64,
    length: i64,
    object: Map<String, Value>,
}

/// Entity types the Bot API accepts from a bot.
const ENTITY_TYPES: &[&str] = &[
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "code",
    "pre",
    "text_link",
    "text_mention",
    "custom_emoji",
    "blockquote",
    "expandable_blockquote",
    "date_time",
    "mention",
    "hashtag",
    "cashtag",
    "bot_command",
    "url",
    "email",
    "phone_number",
    "bank_card_number",
];

/// Reads an `entities`/`caption_entities` parameter. Like the real server,
/// JSON that does not parse, or is not an array, counts as no entities; a
/// malformed element is refused with `can't parse MessageEntity: ...`.
pub(crate) fn parse_entities(arg: Option<&str>) -> ApiResult<Vec<InputEntity>> {
    let Some(Ok(Value::Array(items))) = arg.map(serde_json::from_str::<Value>) else {
        return Ok(Vec::new());
    };
    items
        .into_iter()
        .map(|item| {
            parse_entity(item).map_err(|reason| {
                ApiError::bad_request(format!("can't parse MessageEntity: {reason}"))
            })
        })
        .collect()
}

fn parse_entity(item: Value) -> Result<InputEntity, String> {
    let Value::Object(object) = item else {
        return Err("expected an Object".into());
    };
    let offset = int_field(&object, "offset")?;
    let length = int_field(&object, "length")?;
    let kind = string_field(&object, "type")?;
    if kind.is_empty() {
        return Err("Type is not specified".into());
    }
    if !ENTITY_TYPES.contains(&kind.as_str()) {
        return Err("Unsupported type specified".into());
    }
    match kind.as_str() {
        "text_link" => {
            string_field(&object, "url")?;
        }
        "text_mention" => match object.get("user") {
            Some(Value::Object(user)) => {
                int_field(user, "id")?;
            }
            Some(_) => return Err("Field \"user\" must be of type Object".into()),
            None => return Err("Can't find field \"user\"".into()),
        },
        "custom_emoji" => {
            int_field(&object, "custom_emoji_id")?;
        }
        "date_time" => {
            int_field(&object, "unix_time")?;
        }
        _ => {}
    }
    Ok(InputEntity {
        offset,
        length,
        object,
    })
}

fn int_field(object: &Map<String, Value>, name: &str) -> Result<i64, String> {
    match object.get(name) {
        None => Err(format!("Can't find field \"{name}\"")),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("Field \"{name}\" must be a valid Number")),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .map_err(|_| format!("Field \"{name}\" must be a valid Number")),
        Some(_) => Err(format!("Field \"{name}\" must be of type Number")),
    }
}

fn string_field(object: &Map<String, Value>, name: &str) -> Result<String, String> {
    match object.get(name) {
        None => Err(format!("Can't find field \"{name}\"")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("Field \"{name}\" must be of type String")),
    }
}

/// How the server rewrites one character of a text.
enum Clean {
    Keep,
    Space,
    Drop,
}

fn clean(c: char) -> Clean {
    match c {
        '\r' => Clean::Drop,
        '\n' => Clean::Keep,
        '\0'..=' ' => Clean::Space,
        '\u{2028}'..='\u{202E}' | '\u{0333}' | '\u{033F}' | '\u{030A}' => Clean::Drop,
        _ => Clean::Keep,
    }
}

/// Checks `entities` against `text`, cleans the text and moves the entities
/// along. `allow_empty` is for captions, where whitespace only means none.
pub(crate) fn normalize(
    text: &str,
    entities: Vec<InputEntity>,
    allow_empty: bool,
) -> ApiResult<Formatted> {
    // UTF-16 offset → byte offset at every character start, for error
    // messages; and the set of offsets that fall inside a surrogate pair.
    let mut starts: Vec<(usize, usize)> = Vec::with_capacity(text.len() + 1);
    let mut units = 0usize;
    for (byte, c) in text.char_indices() {
        starts.push((units, byte));
        units += c.len_utf16();
    }
    starts.push((units, text.len()));
    let total = units;
    let byte_at = |offset: usize| -> Result<usize, usize> {
        match starts.binary_search_by_key(&offset, |(u, _)| *u) {
            Ok(i) => Ok(starts[i].1),
            // Inside a pair: report the byte where the split character ends.
            Err(i) => Err(starts.get(i).map_or(text.len(), |(_, b)| *b)),
        }
    };
    // TDLib's messages, as the Bot API passes them on ("Bad Request: "
    // and the first letter lower-cased).
    let entity_error = ApiError::bad_request;

    let mut spans = Vec::new();
    for entity in entities {
        let (offset, length) = (entity.offset, entity.length);
        if offset < 0 || length < 0 {
            return Err(entity_error(format!(
                "entity with offset {offset} and length {length} lies outside of the text"
            )));
        }
        let (start, len) = (offset as usize, length as usize);
        if start > total {
            return Err(entity_error(format!(
                "entity begins after the end of the text at UTF-16 offset {start}"
            )));
        }
        if start + len > total {
            return Err(entity_error(format!(
                "entity beginning at UTF-16 offset {start} ends after the end of the text at \
                 UTF-16 offset {}",
                start + len
            )));
        }
        if len == 0 {
            continue;
        }
        if let Err(byte) = byte_at(start) {
            return Err(entity_error(format!(
                "entity begins in a middle of a UTF-16 symbol at byte offset {byte}"
            )));
        }
        if let Err(byte) = byte_at(start + len) {
            return Err(entity_error(format!(
                "entity beginning at UTF-16 offset {start} ends in a middle of a UTF-16 \
                 symbol at byte offset {byte}"
            )));
        }
        spans.push((start, start + len, entity.object));
    }

    // Clean the text, remembering where each old offset lands.
    let mut out = String::with_capacity(text.len());
    let mut map = vec![0usize; total + 1];
    let mut old = 0usize;
    let mut new = 0usize;
    for c in text.chars() {
        let width = c.len_utf16();
        for k in 0..width {
            map[old + k] = new;
        }
        old += width;
        match clean(c) {
            Clean::Keep => {
                out.push(c);
                new += width;
            }
            Clean::Space => {
                out.push(' ');
                new += 1;
            }
            Clean::Drop => {}
        }
    }
    map[total] = new;
    let cleaned: Vec<(usize, char)> = {
        let mut at = 0usize;
        out.chars()
            .map(|c| {
                let here = at;
                at += c.len_utf16();
                (here, c)
            })
            .collect()
    };
    let blank = |c: char| c == ' ' || c == '\n';
    let has_content = |from: usize, to: usize| {
        cleaned
            .iter()
            .any(|(at, c)| *at >= from && *at < to && !blank(*c))
    };

    let mut moved: Vec<(usize, usize, Map<String, Value>)> = spans
        .into_iter()
        .map(|(start, end, object)| (map[start], map[end], object))
        .filter(|(start, end, _)| end > start && has_content(*start, *end))
        .collect();

    // Trim the end.
    let Some(last) = cleaned.iter().rev().find(|(_, c)| !blank(*c)) else {
        if allow_empty {
            return Ok(Formatted::default());
        }
        return Err(ApiError::bad_request("message must be non-empty"));
    };
    let keep_until = last.0 + last.1.len_utf16();
    for span in &mut moved {
        span.1 = span.1.min(keep_until);
    }
    // Trim the start, but never past the first entity.
    moved.sort_by_key(|(start, end, _)| (*start, std::cmp::Reverse(*end)));
    let first_entity = moved.first().map_or(usize::MAX, |(start, _, _)| *start);
    let lead = cleaned
        .iter()
        .take_while(|(at, c)| blank(*c) && *at < first_entity)
        .count();
    let trimmed: String = cleaned
        .iter()
        .filter(|(at, _)| *at >= lead && *at < keep_until)
        .map(|(_, c)| *c)
        .collect();

    let entities = moved
        .into_iter()
        .map(|(start, end, mut object)| {
            object.insert("offset".into(), (start - lead).into());
            object.insert("length".into(), (end - start).into());
            Value::Object(object)
        })
        .collect();
    Ok(Formatted {
        text: trimmed,
        entities,
    })
}

/// The emoji a bot may react with: the standard reactions the Bot API lists
/// for `ReactionTypeEmoji`, spelled exactly as listed (no U+FE0F).
pub(crate) const REACTION_EMOJI: [&str; 73] = [
    "👍",
    "👎",
    "\u{2764}",
    "🔥",
    "🥰",
    "👏",
    "😁",
    "🤔",
    "🤯",
    "😱",
    "🤬",
    "😢",
    "🎉",
    "🤩",
    "🤮",
    "💩",
    "🙏",
    "👌",
    "\u{1F54A}",
    "🤡",
    "🥱",
    "🥴",
    "😍",
    "🐳",
    "\u{2764}\u{200D}\u{1F525}",
    "🌚",
    "🌭",
    "💯",
    "🤣",
    "\u{26A1}",
    "🍌",
    "🏆",
    "💔",
    "🤨",
    "😐",
    "🍓",
    "🍾",
    "💋",
    "🖕",
    "😈",
    "😴",
    "😭",
    "🤓",
    "👻",
    "\u{1F468}\u{200D}\u{1F4BB}",
    "👀",
    "🎃",
    "🙈",
    "😇",
    "😨",
    "🤝",
    "\u{270D}",
    "🤗",
    "🫡",
    "🎅",
    "🎄",
    "\u{2603}",
    "💅",
    "🤪",
    "🗿",
    "🆒",
    "💘",
    "🙉",
    "🦄",
    "😘",
    "💊",
    "🙊",
    "😎",
    "👾",
    "\u{1F937}\u{200D}\u{2642}",
    "🤷",
    "\u{1F937}\u{200D}\u{2640}",
    "😡",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entities(v: Value) -> Vec<InputEntity> {
        parse_entities(Some(&v.to_string())).expect("valid entities")
    }

    #[test]
    fn text_is_trimmed_and_entities_follow() {
        let f = normalize(
            "  hi\r\n there\t ",
            entities(json!([{"type":"bold","offset":2,"length":2}])),
            false,
        )
        .expect("valid");
        assert_eq!(f.text, "hi\n there");
        assert_eq!(
            f.entities,
            vec![json!({"type":"bold","offset":0,"length":2})]
        );
    }

    #[test]
    fn entity_offsets_are_utf16_and_may_not_split_a_pair() {
        // "😀" is two UTF-16 units.
        let f = normalize(
            "😀 ok",
            entities(json!([{"type":"italic","offset":3,"length":2}])),
            false,
        )
        .expect("valid");
        assert_eq!(f.entities[0]["offset"], 3);
        let split = normalize(
            "😀 ok",
            entities(json!([{"type":"italic","offset":1,"length":2}])),
            false,
        );
        assert_eq!(
            split.unwrap_err().description,
            "Bad Request: entity begins in a middle of a UTF-16 symbol at byte offset 4"
        );
        let beyond = normalize(
            "ok",
            entities(json!([{"type":"bold","offset":1,"length":5}])),
            false,
        );
        assert_eq!(
            beyond.unwrap_err().description,
            "Bad Request: entity beginning at UTF-16 offset 1 ends after the end of the text \
             at UTF-16 offset 6"
        );
    }

    #[test]
    fn blank_text_is_refused_but_a_blank_caption_is_none() {
        assert_eq!(
            normalize(" \n ", vec![], false).unwrap_err().description,
            "Bad Request: message must be non-empty"
        );
        assert_eq!(
            normalize(" \n ", vec![], true).unwrap(),
            Formatted::default()
        );
    }

    #[test]
    fn malformed_entities_are_refused_and_unparsable_json_ignored() {
        assert!(parse_entities(Some("not json")).unwrap().is_empty());
        let err = parse_entities(Some(r#"[{"type":"blink","offset":0,"length":1}]"#)).unwrap_err();
        assert_eq!(
            err.description,
            "Bad Request: can't parse MessageEntity: Unsupported type specified"
        );
        let err =
            parse_entities(Some(r#"[{"type":"text_link","offset":0,"length":1}]"#)).unwrap_err();
        assert!(err.description.ends_with("Can't find field \"url\""));
    }

    #[test]
    fn the_reaction_list_has_no_duplicates() {
        let mut all = REACTION_EMOJI.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), REACTION_EMOJI.len());
    }
}
