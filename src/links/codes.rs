//! Pairing codes: `sb-` and 8 characters from an alphabet of 32 without
//! look-alikes (no `0`/`O`, no `1`/`I`), so 40 random bits a person can
//! read aloud and type on a phone. A code is shown once, in the chat that
//! asked for it; the database keeps only its SHA-256, so reading the
//! database does not give a code that still works.

use rand::Rng;
use sha2::{Digest, Sha256};

/// The characters of a code: digits 2-9 and the letters without I and O.
const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Characters in a code (5 bits each: 40 bits).
const LEN: usize = 8;

/// The start every code is written with.
const PREFIX: &str = "sb-";

/// A new random code, as people read it: `sb-7KQ4-M2XD`.
#[must_use]
pub fn generate() -> String {
    let mut rng = rand::thread_rng();
    let chars: String = (0..LEN)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect();
    format!("{PREFIX}{}-{}", &chars[..LEN / 2], &chars[LEN / 2..])
}

/// A code as typed (`sb-7kq4-m2xd`, `SB-7KQ4M2XD`, `7KQ4 M2XD`) in its
/// one form, its 8 characters: case, dashes and spaces do not matter, and
/// `1`/`I` read as `L` (the alphabet has neither). `None` when it cannot
/// be a code at all.
#[must_use]
pub fn normalize(typed: &str) -> Option<String> {
    let upper = typed.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix("SB-").unwrap_or(&upper);
    let chars: String = rest
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| if matches!(c, '1' | 'I') { 'L' } else { c })
        .collect();
    (chars.len() == LEN && chars.bytes().all(|b| ALPHABET.contains(&b))).then_some(chars)
}

/// What the database keeps of a normalised code.
#[must_use]
pub fn hash(normalized: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "switchboard link code {normalized}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typable_and_read_back_however_typed() {
        for _ in 0..200 {
            let c = generate();
            assert_eq!(c.len(), 3 + 4 + 1 + 4, "{c}");
            assert!(c.starts_with("sb-"));
            let n = normalize(&c).expect("its own form");
            assert_eq!(normalize(&c.to_lowercase()).as_deref(), Some(n.as_str()));
            assert_eq!(
                normalize(&c.replace('-', "")[2..]).as_deref(),
                Some(n.as_str())
            );
            assert!(!n.contains(['0', 'O', '1', 'I']));
        }
        assert_eq!(normalize("sb-ab1c-defg").as_deref(), Some("ABLCDEFG"));
        assert_eq!(normalize("sb-abcd"), None);
        assert_eq!(normalize("sb-abcd-ef0h"), None, "0 is not in the alphabet");
        assert_eq!(normalize("hello"), None);
        assert_ne!(hash("ABCDEFGH"), hash("ABCDEFGJ"));
        assert_eq!(hash("ABCDEFGH").len(), 64);
    }

    #[test]
    fn forty_bits() {
        assert_eq!(ALPHABET.len().pow(LEN as u32), 1 << 40);
        let mut seen = std::collections::HashSet::new();
        for &b in ALPHABET {
            assert!(seen.insert(b), "{} twice", b as char);
        }
    }
}
