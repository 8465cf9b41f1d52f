//! The JSON-RPC layer of signal-cli (`JsonRpcReader`, `JsonRpcResponse`,
//! `SignalJsonRpcCommandHandler`) and the Java behaviour behind parameter
//! access (`JsonRpcNamespace` over a Jackson-built `Map<String,Object>`).
//!
//! - Parsing: a blank line is -32700 `"Empty input line"`; unparsable text
//!   -32700 with a Jackson-style message; only the first JSON value of a
//!   line counts (Jackson ignores trailing content); an empty array or a
//!   top-level scalar is -32600; an object with `result` or `error` is a
//!   response from the client and silently ignored; a request must have
//!   `"jsonrpc":"2.0"` and a `method`, no unknown keys, `params` an object
//!   or array (`null` means absent) and a scalar or null `id`. Errors found
//!   here are answered even for notifications, with the request's `id` when
//!   it is a scalar, else `null`.
//! - Output: the outer objects are written by hand so keys come in Java's
//!   order (`jsonrpc`, `result`/`error`, `id`; `code`, `message`, `data`),
//!   `data` always present.
//! - Parameters: a key is looked up dashed (`group-id`) then camelCase
//!   (`groupId`); `null` means absent; a list option takes the singular key
//!   (a value or an array) and only then the plural key (which must be an
//!   array: a scalar there is a `ClassCastException`); typed reads cast
//!   like Java does, so an integer that fits in 32 bits is not a `Long`.

use serde_json::{Map, Value};

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Value,
}

pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
pub(crate) const INVALID_PARAMS: i64 = -32602;
pub(crate) const INTERNAL_ERROR: i64 = -32603;
pub(crate) const USER_ERROR: i64 = -1;
pub(crate) const IO_ERROR: i64 = -3;
pub(crate) const UNTRUSTED_KEY_ERROR: i64 = -4;
pub(crate) const RATELIMIT_ERROR: i64 = -5;

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: Value::Null,
        }
    }

    /// -1, a `UserErrorException`.
    pub fn user(message: impl Into<String>) -> Self {
        RpcError::new(USER_ERROR, message)
    }

    /// -32603 for an unexpected Java exception: `"<message> (<Class>)"`.
    pub fn internal(message: &str, class: &str) -> Self {
        RpcError::new(INTERNAL_ERROR, format!("{message} ({class})"))
    }

    /// -32603 for an `UnexpectedErrorException`, whose message already ends
    /// in a class name, hence the double suffix.
    pub fn unexpected(message: &str) -> Self {
        RpcError::internal(message, "UnexpectedErrorException")
    }

    pub fn method_not_found() -> Self {
        RpcError::new(METHOD_NOT_FOUND, "Method not implemented")
    }

    /// A Java `ClassCastException` (every class involved is in java.base).
    pub fn class_cast(from: &str, to: &str) -> Self {
        RpcError::internal(
            &format!(
                "class {from} cannot be cast to class {to} ({from} and {to} are in module java.base of loader 'bootstrap')"
            ),
            "ClassCastException",
        )
    }

    /// A Java NullPointerException with its helpful message.
    pub fn npe(message: &str) -> Self {
        RpcError::internal(message, "NullPointerException")
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// `{"code":…,"message":…,"data":…}` in Java's key order.
    pub fn to_json_text(&self) -> String {
        format!(
            r#"{{"code":{},"message":{},"data":{}}}"#,
            self.code,
            Value::String(self.message.clone()),
            self.data
        )
    }

    /// The error object as a value (for [`super::Sent::error`]).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.to_json_text()).unwrap_or(Value::Null)
    }
}

/// A success or error response, without the line terminator.
pub(crate) fn response(result: &Result<Value, RpcError>, id: &Value) -> String {
    match result {
        Ok(value) => format!(r#"{{"jsonrpc":"2.0","result":{value},"id":{id}}}"#),
        Err(e) => format!(
            r#"{{"jsonrpc":"2.0","error":{},"id":{id}}}"#,
            e.to_json_text()
        ),
    }
}

/// An unwrapped `receive` notification line.
pub(crate) fn notification(params: &Value) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"method\":\"receive\",\"params\":{params}}}\n")
}

/// A `receive` notification line for subscription `id`.
pub(crate) fn notification_wrapped(id: i64, params: &Value) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"receive\",\"params\":{{\"subscription\":{id},\"result\":{params}}}}}\n"
    )
}

/// One Server-Sent Event carrying an `{envelope, account}` object.
pub(crate) fn sse_event(params: &Value) -> String {
    format!("event:receive\ndata:{params}\n\n")
}

/// A request as the reader accepted it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    /// An object or an array.
    pub params: Option<Value>,
    /// `None` for a notification (no `id` key); `Some(Null)` for an
    /// explicit `"id":null`, which is answered.
    pub id: Option<Value>,
}

/// What one line (or HTTP body) turned out to be.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// An error to write right away (parse errors and the like).
    Reply(String),
    /// A response object from the client: ignored.
    Ignore,
    Request(Request),
    /// The elements of a non-empty batch.
    Batch(Vec<Value>),
    /// A string over [`MAX_STRING_CHARS`]: Jackson's reader throws, which
    /// signal-cli does not catch on a socket (the connection closes without
    /// an answer) and answers with -32603 over HTTP.
    TooLong,
}

/// The longest JSON string Jackson reads by default (`maxStringLength`).
/// Measured on signal-cli 0.13.19: 20,000,000 characters are read,
/// 20,000,001 are not.
pub(crate) const MAX_STRING_CHARS: usize = 20_000_000;

/// Whether a document holds a string longer than Jackson reads (Java
/// counts UTF-16 units).
fn too_long(v: &Value) -> bool {
    match v {
        Value::String(s) => {
            s.len() > MAX_STRING_CHARS && s.encode_utf16().count() > MAX_STRING_CHARS
        }
        Value::Array(items) => items.iter().any(too_long),
        Value::Object(map) => map.values().any(too_long),
        _ => false,
    }
}

/// A line from a socket/TCP session.
pub(crate) fn parse_line(line: &str) -> Incoming {
    if line.trim().is_empty() {
        return Incoming::Reply(response(
            &Err(RpcError::new(PARSE_ERROR, "Empty input line")),
            &Value::Null,
        ));
    }
    parse_document(line)
}

/// One JSON document (a line's text, or an HTTP body).
pub(crate) fn parse_document(text: &str) -> Incoming {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let node = match values.next() {
        Some(Ok(node)) if too_long(&node) => return Incoming::TooLong,
        Some(Ok(node)) => node,
        Some(Err(e)) => {
            return Incoming::Reply(response(
                &Err(RpcError::new(PARSE_ERROR, jackson_parse_message(text, &e))),
                &Value::Null,
            ))
        }
        // Nothing but whitespace (an empty HTTP body): Jackson has no node.
        None => {
            return Incoming::Reply(response(
                &Err(RpcError::new(INVALID_REQUEST, "invalid request")),
                &Value::Null,
            ))
        }
    };
    match node {
        Value::Array(items) if items.is_empty() => Incoming::Reply(response(
            &Err(RpcError::new(INVALID_REQUEST, "invalid request")),
            &Value::Null,
        )),
        Value::Array(items) => Incoming::Batch(items),
        Value::Object(ref map) if map.contains_key("result") || map.contains_key("error") => {
            Incoming::Ignore
        }
        Value::Object(_) => match parse_request(node) {
            Ok(request) => Incoming::Request(request),
            Err((e, id)) => Incoming::Reply(response(&Err(e), &id)),
        },
        other => Incoming::Reply(response(
            &Err(RpcError::new(
                INVALID_REQUEST,
                format!("unexpected type: {}", node_type(&other)),
            )),
            &Value::Null,
        )),
    }
}

/// Jackson's `JsonNodeType` name.
fn node_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "BOOLEAN",
        Value::Number(_) => "NUMBER",
        Value::String(_) => "STRING",
        Value::Array(_) => "ARRAY",
        Value::Object(_) => "OBJECT",
    }
}

/// The id a failed request is answered with: its `id` if that is a scalar.
fn id_of(node: &Value) -> Value {
    match node.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null)) => {
            id.clone()
        }
        _ => Value::Null,
    }
}

const REQUEST_CLASS: &str = "org.asamk.signal.jsonrpc.JsonRpcRequest";

/// Binding a node to `JsonRpcRequest`, then the version and method checks.
/// On failure, the error and the id to answer it with.
pub(crate) fn parse_request(node: Value) -> Result<Request, (RpcError, Value)> {
    let id = id_of(&node);
    let fail = |message: String| (RpcError::new(INVALID_REQUEST, message), id.clone());
    let Value::Object(mut map) = node else {
        let token = token_name(&node);
        return Err(fail(format!(
            "Cannot construct instance of `{REQUEST_CLASS}` (although at least one Creator exists): no {} value ({token})\n at [Source: UNKNOWN; byte offset: #UNKNOWN]",
            jackson_kind(&node)
        )));
    };
    // signal-cli's workaround: `"params": null` counts as absent.
    if map.get("params").is_some_and(Value::is_null) {
        map.remove("params");
    }
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "jsonrpc" | "method" | "params" | "id"))
    {
        return Err(fail(format!(
            "Unrecognized field \"{unknown}\" (class {REQUEST_CLASS}), not marked as ignorable (4 known properties: \"jsonrpc\", \"method\", \"params\", \"id\"])\n at [Source: UNKNOWN; byte offset: #UNKNOWN] (through reference chain: {REQUEST_CLASS}[\"{unknown}\"])"
        )));
    }
    let text_field = |key: &str| -> Result<Option<String>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Jackson coerces scalars to text.
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(v) => Err(mismatch("java.lang.String", v, key)),
        }
    };
    let jsonrpc = text_field("jsonrpc").map_err(&fail)?;
    let method = text_field("method").map_err(&fail)?;
    let params = match map.get("params") {
        None => None,
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.clone()),
        Some(v) => {
            return Err(fail(mismatch(
                "com.fasterxml.jackson.databind.node.ContainerNode",
                v,
                "params",
            )))
        }
    };
    let request_id = match map.get("id") {
        None => None,
        Some(v @ (Value::Object(_) | Value::Array(_))) => {
            return Err(fail(mismatch(
                "com.fasterxml.jackson.databind.node.ValueNode",
                v,
                "id",
            )))
        }
        Some(v) => Some(v.clone()),
    };
    if jsonrpc.as_deref() != Some("2.0") {
        return Err(fail("only jsonrpc version 2.0 is supported".into()));
    }
    let Some(method) = method else {
        return Err(fail("method field must be set".into()));
    };
    Ok(Request {
        method,
        params,
        id: request_id,
    })
}

/// Jackson's "Cannot deserialize value of type …" for a property.
fn mismatch(target: &str, v: &Value, key: &str) -> String {
    format!(
        "Cannot deserialize value of type `{target}` from {} value ({})\n at [Source: UNKNOWN; byte offset: #UNKNOWN] (through reference chain: {REQUEST_CLASS}[\"{key}\"])",
        jackson_kind(v),
        token_name(v)
    )
}

fn jackson_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_f64() => "Floating-point",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

fn token_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "token `JsonToken.VALUE_NULL`",
        Value::Bool(true) => "token `JsonToken.VALUE_TRUE`",
        Value::Bool(false) => "token `JsonToken.VALUE_FALSE`",
        Value::Number(n) if n.is_f64() => "token `JsonToken.VALUE_NUMBER_FLOAT`",
        Value::Number(_) => "token `JsonToken.VALUE_NUMBER_INT`",
        Value::String(_) => "token `JsonToken.VALUE_STRING`",
        Value::Array(_) => "token `JsonToken.START_ARRAY`",
        Value::Object(_) => "token `JsonToken.START_OBJECT`",
    }
}

/// The message of Jackson's `JsonParseException` for unparsable text, as
/// near as serde_json's error lets us tell.
fn jackson_parse_message(text: &str, e: &serde_json::Error) -> String {
    let location = format!(
        "\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: {}, column: {}]",
        e.line(),
        e.column()
    );
    if e.is_eof() {
        return format!("Unexpected end-of-input{location}");
    }
    let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
    let chars: Vec<char> = line.chars().collect();
    let at = e
        .column()
        .saturating_sub(1)
        .min(chars.len().saturating_sub(1));
    if chars.get(at).is_some_and(|c| c.is_alphanumeric()) {
        // Jackson reports the whole token it could not recognize.
        let mut start = at;
        while start > 0 && chars[start - 1].is_alphanumeric() {
            start -= 1;
        }
        let mut end = at;
        while end < chars.len() && chars[end].is_alphanumeric() {
            end += 1;
        }
        let token: String = chars[start..end].iter().collect();
        // Jackson points just past the token.
        let location = format!(
            "\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: {}, column: {}]",
            e.line(),
            end + 1
        );
        return format!(
            "Unrecognized token '{token}': was expecting (JSON String, Number, Array, Object or token 'null', 'true' or 'false'){location}"
        );
    }
    match chars.get(at) {
        Some(c) => format!(
            "Unexpected character ('{c}' (code {})): expected a valid value (JSON String, Number, Array, Object or token 'null', 'true' or 'false'){location}",
            u32::from(*c)
        ),
        None => format!("Unexpected end-of-input{location}"),
    }
}

// ---- parameters, the Java way ---------------------------------------------

/// The Java class Jackson gives a JSON value inside `Map<String,Object>`.
pub(crate) fn java_class(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "java.lang.Boolean",
        Value::String(_) => "java.lang.String",
        Value::Array(_) => "java.util.ArrayList",
        Value::Object(_) => "java.util.LinkedHashMap",
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if i32::try_from(i).is_ok() => "java.lang.Integer",
            (Some(_), _) => "java.lang.Long",
            (None, Some(_)) => "java.math.BigInteger",
            (None, None) => "java.lang.Double",
        },
    }
}

/// Java's `toString()` of such a value.
pub(crate) fn java_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e7 => {
                format!("{f:.1}")
            }
            _ => n.to_string(),
        },
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(java_to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{k}={}", java_to_string(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `group-id` → `groupId`.
fn camel(dest: &str) -> String {
    let mut out = String::with_capacity(dest.len());
    let mut upper = false;
    for c in dest.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A command's params as `JsonRpcNamespace` sees them. Names are the CLI's
/// dashed option names (`group-id`).
pub(crate) struct Args {
    map: Map<String, Value>,
}

impl Args {
    pub fn new(map: Map<String, Value>) -> Self {
        Args { map }
    }

    pub fn get(&self, dest: &str) -> Option<&Value> {
        self.map
            .get(dest)
            .filter(|v| !v.is_null())
            .or_else(|| self.map.get(&camel(dest)).filter(|v| !v.is_null()))
    }

    /// `ns.getString`: any value's `toString()`.
    pub fn string(&self, dest: &str) -> Option<String> {
        self.get(dest).map(java_to_string)
    }

    /// `ns.getList`: the singular key as a list or a one-element list, else
    /// the plural key, which must be a list.
    pub fn list(&self, dest: &str) -> Result<Option<Vec<Value>>, RpcError> {
        match self.get(dest) {
            Some(Value::Array(items)) => return Ok(Some(items.clone())),
            Some(one) => return Ok(Some(vec![one.clone()])),
            None => {}
        }
        match self.get(&format!("{dest}s")) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items.clone())),
            Some(other) => Err(RpcError::class_cast(java_class(other), "java.util.List")),
        }
    }

    /// A list whose elements the command uses as `String`s.
    pub fn strings(&self, dest: &str) -> Result<Option<Vec<String>>, RpcError> {
        let Some(items) = self.list(dest)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Null => Err(RpcError::npe(
                    "Cannot invoke \"String.length()\" because \"identifier\" is null",
                )),
                other => Err(RpcError::class_cast(java_class(other), "java.lang.String")),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// `ns.getLong`: only a JSON integer too big for 32 bits is a `Long`.
    pub fn long(&self, dest: &str) -> Result<Option<i64>, RpcError> {
        match self.get(dest) {
            None => Ok(None),
            Some(v) if java_class(v) == "java.lang.Long" => Ok(v.as_i64()),
            Some(v) => Err(RpcError::class_cast(java_class(v), "java.lang.Long")),
        }
    }

    /// A list of `Long`s (`sendReceipt`'s timestamps).
    pub fn longs(&self, dest: &str) -> Result<Option<Vec<i64>>, RpcError> {
        let Some(items) = self.list(dest)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v.as_i64() {
                Some(i) if java_class(v) == "java.lang.Long" => Ok(i),
                _ => Err(RpcError::class_cast(java_class(v), "java.lang.Long")),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// `ns.getBoolean`.
    pub fn boolean(&self, dest: &str) -> Result<Option<bool>, RpcError> {
        match self.get(dest) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(RpcError::class_cast(java_class(v), "java.lang.Boolean")),
        }
    }

    /// `Boolean.TRUE.equals(ns.getBoolean(dest))`.
    pub fn flag(&self, dest: &str) -> Result<bool, RpcError> {
        Ok(self.boolean(dest)? == Some(true))
    }
}
