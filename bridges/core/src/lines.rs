//! The lines switchboard itself writes into a bridged message, worded once
//! for every network: a file that could not be bridged says so in the
//! message, with its name, its size when known, and why.

use crate::richtext::RichText;

/// `[file not bridged: NAME (SIZE): WHY]`, the one wording every adapter
/// and the hub's degrade planner use, so people on every network read the
/// same thing whichever side failed.
#[must_use]
pub fn not_bridged(name: &str, size: Option<u64>, why: &str) -> String {
    match size {
        Some(size) => format!("[file not bridged: {name} ({}): {why}]", human_size(size)),
        None => format!("[file not bridged: {name}: {why}]"),
    }
}

/// Appends `line` to `body` on a line of its own.
pub fn push_line(body: &mut RichText, line: &str) {
    if !body.text.is_empty() {
        body.text.push('\n');
    }
    body.text.push_str(line);
}

/// A size for people: `512 B`, `1.5 KiB`, `20 MiB`, `2.1 GiB`.
#[must_use]
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision is not the point: one decimal, dropped when it is zero.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(20 * 1024 * 1024), "20 MiB");
        assert_eq!(
            not_bridged("a.mp4", Some(3 << 20), "too large for Signal"),
            "[file not bridged: a.mp4 (3 MiB): too large for Signal]"
        );
        assert_eq!(
            not_bridged("a.mp4", None, "could not be fetched"),
            "[file not bridged: a.mp4: could not be fetched]"
        );
        let mut body = RichText::plain("hi");
        push_line(&mut body, "x");
        assert_eq!(body.text, "hi\nx");
    }
}
