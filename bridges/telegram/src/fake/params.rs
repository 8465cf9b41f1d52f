//! Reading one Bot API request into [`Params`]: the query string plus a
//! JSON, `application/x-www-form-urlencoded` or `multipart/form-data` body.
//!
//! The real server reduces every parameter to a string before a method sees
//! it (a JSON body's numbers and nested objects arrive as their JSON text),
//! and an empty string counts as absent. [`Params::arg`] gives that view, so
//! handlers parse `chat_id`, `entities`, `media`... the same way whichever
//! encoding the client chose. [`Params::to_json`] keeps the values as they
//! came, for the call log.
//!
//! A multipart part is a file when it has a `filename` (or a Content-Type
//! that is not `text/*`); other parts are string parameters, which must be
//! UTF-8.
//!
//! Sizes: a file part over 50 MiB answers `413 Request Entity Too Large`, as
//! `api.telegram.org` does; a whole request may carry ten such files (an
//! album). Other bodies are capped at 10 MiB.

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes};
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};

/// The largest file a bot may upload (the cloud server's limit).
pub(crate) const MAX_UPLOAD: usize = 50 << 20;
/// The largest multipart request: an album of ten maximal files.
const MAX_MULTIPART: usize = 10 * MAX_UPLOAD + (1 << 20);
/// The largest JSON or urlencoded body.
const MAX_FORM: usize = 10 << 20;

/// One uploaded file part.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    /// The part's `filename`, without any directory.
    pub file_name: Option<String>,
    /// The part's `Content-Type`.
    pub mime: Option<String>,
    pub bytes: Vec<u8>,
}

/// A request's parameters.
#[derive(Debug, Default)]
pub(crate) struct Params {
    values: BTreeMap<String, Value>,
    files: BTreeMap<String, Upload>,
}

impl Params {
    /// The parameter as the real server sees it: a non-empty string, or
    /// `None` when absent, `null` or empty.
    pub fn arg(&self, name: &str) -> Option<String> {
        match self.values.get(name)? {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// An integer parameter, read like the server's `to_integer`: leading
    /// digits, anything else ignored, garbage is 0.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.arg(name).map(|s| to_integer(&s))
    }

    /// A boolean parameter (`true`, `yes` or `1`, any case).
    pub fn flag(&self, name: &str) -> bool {
        self.arg(name).is_some_and(|s| to_bool(&s))
    }

    /// An uploaded file part.
    pub fn file(&self, name: &str) -> Option<&Upload> {
        self.files.get(name)
    }

    /// The parameters for the call log; files as `{file_name, size, mime}`.
    pub fn to_json(&self) -> Value {
        let mut out: Map<String, Value> = self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, file) in &self.files {
            out.insert(
                name.clone(),
                json!({ "file_name": file.file_name, "size": file.bytes.len(), "mime": file.mime }),
            );
        }
        Value::Object(out)
    }

    fn set(&mut self, name: String, value: Value) {
        self.values.insert(name, value);
    }
}

/// The server's integer reading: optional `-`, then digits up to the first
/// non-digit. `"12abc"` is 12 and `"abc"` is 0.
pub(crate) fn to_integer(s: &str) -> i64 {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut value: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        value = value.wrapping_mul(10).wrapping_add(i64::from(b - b'0'));
    }
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

/// The server's boolean reading.
pub(crate) fn to_bool(s: &str) -> bool {
    matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1")
}

/// Reads the query string and the body. Consumes the whole body even when
/// it is too large, so the client gets its 413 rather than a broken pipe.
pub(crate) async fn read<B>(parts: &Parts, body: B) -> ApiResult<Params>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut params = Params::default();
    if let Some(query) = parts.uri.query() {
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            params.set(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => {
            let bytes = read_body(body, MAX_FORM).await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(params);
            }
            let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
                ApiError::bad_request("can't parse JSON encoded request body: invalid JSON")
            })?;
            let Value::Object(map) = value else {
                return Err(ApiError::bad_request(
                    "can't parse JSON encoded request body: expected an Object",
                ));
            };
            for (k, v) in map {
                params.set(k, v);
            }
        }
        "application/x-www-form-urlencoded" => {
            let bytes = read_body(body, MAX_FORM).await?;
            for (k, v) in form_urlencoded::parse(&bytes) {
                params.set(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        "multipart/form-data" => {
            let boundary = boundary(&content_type).ok_or_else(|| {
                ApiError::bad_request("can't parse multipart/form-data: no boundary")
            })?;
            let bytes = read_body(body, MAX_MULTIPART).await?;
            for part in multipart(&bytes, &boundary)? {
                if part.bytes.len() > MAX_UPLOAD {
                    return Err(too_large());
                }
                let is_file = part.file_name.is_some()
                    || part
                        .mime
                        .as_deref()
                        .is_some_and(|m| !m.to_ascii_lowercase().starts_with("text/"));
                if is_file {
                    params.files.insert(
                        part.name,
                        Upload {
                            file_name: part.file_name.map(|n| base_name(&n)),
                            mime: part.mime,
                            bytes: part.bytes,
                        },
                    );
                } else {
                    let text = String::from_utf8(part.bytes)
                        .map_err(|_| ApiError::bad_request("strings must be encoded in UTF-8"))?;
                    params.set(part.name, Value::String(text));
                }
            }
        }
        // GET, or a body type the server ignores.
        _ => {}
    }
    Ok(params)
}

fn too_large() -> ApiError {
    ApiError::new(413, "Request Entity Too Large")
}

/// Reads the body up to `cap` bytes; past it, drains the rest and answers 413.
async fn read_body<B>(mut body: B, cap: usize) -> ApiResult<Vec<u8>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    let mut over = false;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("can't read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if over || out.len() + data.len() > cap {
                over = true;
                out = Vec::new();
            } else {
                out.extend_from_slice(&data);
            }
        }
    }
    if over {
        return Err(too_large());
    }
    Ok(out)
}

/// The `boundary` parameter of a multipart Content-Type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// A file name without any directory part a client may have sent.
fn base_name(name: &str) -> String {
    name.rsplit(['/', '\\']).next().unwrap_or(name).to_string()
}

/// One part of a multipart body.
struct Part {
    name: String,
    file_name: Option<String>,
    mime: Option<String>,
    bytes: Vec<u8>,
}

fn malformed() -> ApiError {
    ApiError::bad_request("can't parse multipart/form-data request")
}

/// Splits a multipart body (RFC 7578) into its named parts.
fn multipart(body: &[u8], boundary: &str) -> ApiResult<Vec<Part>> {
    let delimiter = format!("--{boundary}").into_bytes();
    let next_delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut pos = find(body, &delimiter, 0).ok_or_else(malformed)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the line break that ends the delimiter.
        while body.get(pos).is_some_and(|b| *b == b' ' || *b == b'\t') {
            pos += 1;
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(malformed());
        }
        pos += 2;
        let (headers, content_start) = if body[pos..].starts_with(b"\r\n") {
            // A part without headers (then also without a name).
            ("", pos + 2)
        } else {
            let end = find(body, b"\r\n\r\n", pos).ok_or_else(malformed)?;
            let headers = std::str::from_utf8(&body[pos..end]).map_err(|_| malformed())?;
            (headers, end + 4)
        };
        let content_end = find(body, &next_delimiter, content_start).ok_or_else(malformed)?;
        let mut part = Part {
            name: String::new(),
            file_name: None,
            mime: None,
            bytes: body[content_start..content_end].to_vec(),
        };
        let mut has_name = false;
        for line in headers.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim();
            if key.eq_ignore_ascii_case("content-disposition") {
                for (k, v) in disposition_params(value) {
                    if k.eq_ignore_ascii_case("name") {
                        part.name = v;
                        has_name = true;
                    } else if k.eq_ignore_ascii_case("filename") {
                        part.file_name = Some(v);
                    }
                }
            } else if key.eq_ignore_ascii_case("content-type") {
                part.mime = Some(value.trim().to_string());
            }
        }
        if !has_name {
            return Err(malformed());
        }
        parts.push(part);
        pos = content_end + next_delimiter.len();
    }
}

/// `form-data; name="a"; filename="b.txt"` → [("name","a"), ("filename","b.txt")].
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    // Skip the disposition type.
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return out;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                val.push(escaped);
                            }
                        }
                        '"' => break,
                        c => val.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
                val = val.trim().to_string();
            }
        }
        out.push((key.trim().to_string(), val));
    }
}

/// The first occurrence of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let offset = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|b| *b == first)?;
        i += offset;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_read_like_the_server() {
        assert_eq!(to_integer("-1001234"), -1001234);
        assert_eq!(to_integer("12abc"), 12);
        assert_eq!(to_integer("abc"), 0);
        assert!(to_bool("True") && to_bool("1") && !to_bool("false"));
    }

    #[test]
    fn multipart_parts_are_split_and_named() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n--XyZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"dir/a \\\"b\\\".png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--XyZ\r\n\r\n--XyZ--\r\n";
        let parts = multipart(body, "XyZ");
        // The third part has no name: malformed.
        assert!(parts.is_err());
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n--XyZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"dir/a \\\"b\\\".png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\r\n--XyZ--\r\n";
        let parts = multipart(body, "XyZ").expect("well-formed");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "chat_id");
        assert_eq!(parts[0].bytes, b"42");
        assert_eq!(parts[1].file_name.as_deref(), Some("dir/a \"b\".png"));
        assert_eq!(base_name("dir/a.png"), "a.png");
        assert_eq!(parts[1].mime.as_deref(), Some("image/png"));
        assert_eq!(parts[1].bytes, b"\x89PNG\r\n");
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\""),
            Some("XyZ".into())
        );
    }
}
