//! File facts the fake needs without a media pipeline: image dimensions
//! read from headers (PNG, JPEG, GIF, WebP, BMP), the photo sizes Telegram
//! would generate, MIME types by file name, the three sticker formats told
//! apart by their bytes, and small real files for tests: [`png`], [`webp`],
//! [`tgs`] (a gzipped Lottie animation) and [`webm`] (a WebM header).
//!
//! Telegram recompresses photos and makes thumbnails; the fake keeps the
//! uploaded bytes unchanged, so every size of a photo downloads the original.

/// Width and height of an image, or `None` when the bytes are not an image
/// the fake can read (the real server answers `IMAGE_PROCESS_FAILED`).
pub(crate) fn image_size(b: &[u8]) -> Option<(u32, u32)> {
    let le16 = |i: usize| Some(u32::from(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?])));
    let be32 = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let le24 = |i: usize| {
        Some(
            u32::from(*b.get(i)?)
                | u32::from(*b.get(i + 1)?) << 8
                | u32::from(*b.get(i + 2)?) << 16,
        )
    };
    let le32 = |i: usize| Some(i32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));

    let size = if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.get(12..16) == Some(b"IHDR") {
        (be32(16)?, be32(20)?)
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        (le16(6)?, le16(8)?)
    } else if b.starts_with(&[0xFF, 0xD8]) {
        jpeg_size(b)?
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        match b.get(12..16)? {
            b"VP8 " => (le16(26)? & 0x3FFF, le16(28)? & 0x3FFF),
            b"VP8L" => {
                let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            }
            b"VP8X" => (le24(24)? + 1, le24(27)? + 1),
            _ => return None,
        }
    } else if b.starts_with(b"BM") {
        (le32(18)?.unsigned_abs(), le32(22)?.unsigned_abs())
    } else {
        return None;
    };
    (size.0 > 0 && size.1 > 0).then_some(size)
}

/// Walks JPEG segments to the first start-of-frame marker.
fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        while *b.get(i)? != 0xFF {
            i += 1;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            continue;
        }
        let len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
        let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if is_sof {
            let h = u16::from_be_bytes([*b.get(i + 3)?, *b.get(i + 4)?]);
            let w = u16::from_be_bytes([*b.get(i + 5)?, *b.get(i + 6)?]);
            return Some((u32::from(w), u32::from(h)));
        }
        i += len;
    }
}

/// Whether Telegram accepts these photo dimensions (sum at most 10000,
/// ratio at most 20).
pub(crate) fn photo_dimensions_ok(w: u32, h: u32) -> bool {
    let (small, large) = (w.min(h), w.max(h));
    w + h <= 10_000 && large <= small.saturating_mul(20)
}

/// The sizes Telegram offers for a photo, smallest first: thumbnails that
/// fit 90, 320 and 800 pixel boxes, and the photo itself fitted into 1280.
/// Always at least two, as clients expect a thumbnail and a full size.
pub(crate) fn photo_sizes(w: u32, h: u32) -> Vec<(u32, u32)> {
    let largest = w.max(h).max(1);
    let fit = |limit: u32| -> (u32, u32) {
        if largest <= limit {
            (w, h)
        } else {
            let scale = |v: u32| ((u64::from(v) * u64::from(limit)) / u64::from(largest)).max(1);
            (scale(w) as u32, scale(h) as u32)
        }
    };
    let mut sizes: Vec<(u32, u32)> = [90, 320, 800]
        .into_iter()
        .filter(|limit| largest > *limit)
        .map(fit)
        .collect();
    sizes.push(fit(1280));
    if sizes.len() < 2 {
        sizes.insert(0, fit(90));
    }
    sizes
}

/// The lower-case extension of a file name.
pub(crate) fn extension(name: Option<&str>) -> Option<String> {
    let (stem, ext) = name?.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// The MIME type Telegram gives a file with this name.
pub(crate) fn mime_for(name: Option<&str>) -> Option<&'static str> {
    Some(match extension(name)?.as_str() {
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "m4a" => "audio/mp4",
        "wav" => "audio/x-wav",
        "flac" => "audio/flac",
        _ => return None,
    })
}

/// A valid grayscale PNG of the given size (for tests that upload photos).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let row = width as usize + 1;
    let mut raw = Vec::with_capacity(row * height as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        raw.extend((0..width).map(|x| ((x ^ y) & 0xFF) as u8));
    }
    // zlib stream of stored (uncompressed) deflate blocks.
    let mut z = vec![0x78, 0x01];
    let mut blocks = raw.chunks(0xFFFF).peekable();
    if blocks.peek().is_none() {
        z.extend([1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        z.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend(block);
    }
    z.extend(adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grayscale, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr[..]), (b"IDAT", &z[..]), (b"IEND", &[][..])] {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    out
}

/// The three sticker formats Telegram has, told apart by their bytes
/// (the server's Sticker object names them only by `is_animated` and
/// `is_video`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickerFormat {
    /// A static sticker: WebP.
    Webp,
    /// An animated sticker: TGS, gzipped Lottie JSON.
    Tgs,
    /// A video sticker: WebM (VP9).
    Webm,
}

impl StickerFormat {
    /// The extension of its file path.
    pub fn extension(self) -> &'static str {
        match self {
            StickerFormat::Webp => "webp",
            StickerFormat::Tgs => "tgs",
            StickerFormat::Webm => "webm",
        }
    }

    /// A small file of this format, as a test's sticker (see [`webp`],
    /// [`tgs`], [`webm`]).
    pub fn sample(self) -> Vec<u8> {
        match self {
            StickerFormat::Webp => webp(512, 512),
            StickerFormat::Tgs => tgs(),
            StickerFormat::Webm => webm(),
        }
    }
}

/// What sticker format these bytes are, if any (thumbnails too: WebP or
/// JPEG stills are told apart from the animated kinds).
pub(crate) fn sticker_format(b: &[u8]) -> Option<StickerFormat> {
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        Some(StickerFormat::Webp)
    } else if b.starts_with(&[0x1F, 0x8B]) {
        Some(StickerFormat::Tgs)
    } else if b.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(StickerFormat::Webm)
    } else {
        None
    }
}

/// A WebP image of the given size: an extended-format (`VP8X`) header
/// with its canvas, enough for anything that reads WebP dimensions.
pub fn webp(width: u32, height: u32) -> Vec<u8> {
    let mut vp8x = vec![0u8; 10];
    vp8x[4..7].copy_from_slice(&(width.max(1) - 1).to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&(height.max(1) - 1).to_le_bytes()[..3]);
    let mut out = b"RIFF".to_vec();
    out.extend(((4 + 8 + vp8x.len()) as u32).to_le_bytes());
    out.extend(b"WEBPVP8X");
    out.extend((vp8x.len() as u32).to_le_bytes());
    out.extend(vp8x);
    out
}

/// A TGS sticker: a tiny Lottie animation, gzipped (one stored block).
pub fn tgs() -> Vec<u8> {
    let lottie = br#"{"tgs":1,"v":"5.5.2","fr":60,"ip":0,"op":60,"w":512,"h":512,"layers":[]}"#;
    let mut out = vec![0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF];
    let len = lottie.len() as u16;
    out.push(1);
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(lottie);
    out.extend(crc32(lottie).to_le_bytes());
    out.extend((lottie.len() as u32).to_le_bytes());
    out
}

/// A WebM video sticker: the EBML header with doctype `webm` (the frames
/// are not there; nothing in a test decodes them).
pub fn webm() -> Vec<u8> {
    let mut out = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F];
    out.extend([0x42, 0x86, 0x81, 0x01]); // EBMLVersion 1
    out.extend([0x42, 0xF7, 0x81, 0x01]); // EBMLReadVersion 1
    out.extend([0x42, 0xF2, 0x81, 0x04]); // EBMLMaxIDLength 4
    out.extend([0x42, 0xF3, 0x81, 0x08]); // EBMLMaxSizeLength 8
    out.extend([0x42, 0x82, 0x84]);
    out.extend(b"webm"); // DocType
    out.extend([0x42, 0x87, 0x81, 0x04]); // DocTypeVersion 4
    out.extend([0x42, 0x85, 0x81, 0x02]); // DocTypeReadVersion 2
    out
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for byte in data {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    b << 16 | a
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pngs_are_read_back() {
        assert_eq!(image_size(&png(30, 20)), Some((30, 20)));
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(image_size(b"not an image"), None);
    }

    #[test]
    fn jpeg_and_gif_headers_are_read() {
        let gif = b"GIF89a\x40\x01\xF0\x00rest";
        assert_eq!(image_size(gif), Some((320, 240)));
        // SOI, an APP0 segment, then SOF0 with height 480 and width 640.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01,
            0xE0, 0x02, 0x80, 0x03,
        ];
        assert_eq!(image_size(&jpeg), Some((640, 480)));
    }

    #[test]
    fn sticker_formats_are_told_by_their_bytes() {
        assert_eq!(image_size(&webp(512, 300)), Some((512, 300)));
        assert_eq!(sticker_format(&webp(1, 1)), Some(StickerFormat::Webp));
        assert_eq!(sticker_format(&tgs()), Some(StickerFormat::Tgs));
        assert_eq!(sticker_format(&webm()), Some(StickerFormat::Webm));
        assert_eq!(sticker_format(&png(2, 2)), None);
        // The TGS is a real gzip member: its trailer holds the length.
        let t = tgs();
        let isize = u32::from_le_bytes(t[t.len() - 4..].try_into().unwrap());
        assert_eq!(isize as usize, t.len() - 10 - 5 - 8);
    }

    #[test]
    fn photo_sizes_grow_and_end_with_the_largest() {
        let sizes = photo_sizes(2000, 1000);
        assert_eq!(sizes.first(), Some(&(90, 45)));
        assert_eq!(sizes.last(), Some(&(1280, 640)));
        assert_eq!(photo_sizes(50, 40), vec![(50, 40), (50, 40)]);
        assert!(photo_dimensions_ok(100, 100) && !photo_dimensions_ok(2100, 100));
    }
}
