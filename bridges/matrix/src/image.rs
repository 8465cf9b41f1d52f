//! What an image's first bytes say: its format and its size in pixels, for
//! the `info` of a sticker or an image (clients size the picture before
//! they download it) and for an avatar's content type. Only the headers of
//! PNG, GIF, JPEG and WebP are read; nothing is decoded.

/// An image's MIME type and size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageMeta {
    /// `image/png`, `image/gif`, `image/jpeg` or `image/webp`.
    pub mime: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl ImageMeta {
    /// The size to show it at: at most `max` pixels on its longer side,
    /// never larger than it is.
    #[must_use]
    pub fn fit(&self, max: u32) -> (u32, u32) {
        let (w, h) = (self.width.max(1), self.height.max(1));
        let longer = w.max(h);
        if longer <= max {
            return (w, h);
        }
        let scale = |v: u32| {
            u32::try_from(u64::from(v) * u64::from(max) / u64::from(longer))
                .unwrap_or(max)
                .max(1)
        };
        (scale(w), scale(h))
    }
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

/// Reads the format and size from an image's header; `None` when the bytes
/// are not one of the four formats, or are cut short.
#[must_use]
pub fn meta(b: &[u8]) -> Option<ImageMeta> {
    let meta = |mime, width, height| {
        Some(ImageMeta {
            mime,
            width,
            height,
        })
    };
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
        let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
        return meta("image/png", w, h);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return meta("image/gif", le16(b, 6)?, le16(b, 8)?);
    }
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        return match b.get(12..16)? {
            b"VP8 " => meta("image/webp", le16(b, 26)? & 0x3fff, le16(b, 28)? & 0x3fff),
            b"VP8L" => {
                let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                meta(
                    "image/webp",
                    (bits & 0x3fff) + 1,
                    ((bits >> 14) & 0x3fff) + 1,
                )
            }
            b"VP8X" => meta("image/webp", le24(b, 24)? + 1, le24(b, 27)? + 1),
            _ => None,
        };
    }
    if b.starts_with(&[0xff, 0xd8]) {
        // Walk the segments to the frame header (SOF0..SOF15 but the DHT,
        // JPG and DAC markers).
        let mut at = 2;
        while at + 4 <= b.len() {
            if b[at] != 0xff {
                return None;
            }
            let marker = b[at + 1];
            if marker == 0xff {
                at += 1;
                continue;
            }
            let len = usize::try_from(be16(b, at + 2)?).ok()?;
            if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
                return meta("image/jpeg", be16(b, at + 7)?, be16(b, at + 5)?);
            }
            at += 2 + len;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_from_the_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&512u32.to_be_bytes());
        png.extend_from_slice(&256u32.to_be_bytes());
        let m = meta(&png).unwrap();
        assert_eq!((m.mime, m.width, m.height), ("image/png", 512, 256));
        assert_eq!(m.fit(256), (256, 128));
        assert_eq!(m.fit(1024), (512, 256));

        let gif = b"GIF89a\x10\x00\x20\x00rest";
        assert_eq!(meta(gif).unwrap().width, 16);
        assert_eq!(meta(gif).unwrap().height, 32);

        // VP8X: 24-bit width-1 and height-1 at 24 and 27.
        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        webp.extend_from_slice(&[0xff, 0x01, 0x00, 0xff, 0x01, 0x00]);
        let m = meta(&webp).unwrap();
        assert_eq!((m.mime, m.width, m.height), ("image/webp", 512, 512));

        // A JFIF segment, then SOF0 with height 100 and width 200.
        let jpeg = [
            0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x00,
            100, 0x00, 200, 0x03,
        ];
        let m = meta(&jpeg).unwrap();
        assert_eq!((m.mime, m.width, m.height), ("image/jpeg", 200, 100));

        assert_eq!(meta(b"not an image"), None);
        assert_eq!(meta(b"\x89PNG\r\n\x1a\n\0"), None);
    }
}
