//! The native bot API under `/v1`.

use std::borrow::Cow;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_core::{EventId, EventKind, GatewayName, RichText, Span, TargetRef};

use super::auth::Caller;
use super::error::ApiError;
use super::json;
use super::post::{author, check_postable, post, store_base64, Draft, FileUpload, Upload};
use super::stream::{check_readable, readable, Start, Subscription};
use super::ApiState;
use crate::hub::Hub;
use crate::store::blobs::BlobContent;

/// A file in a JSON post, base64-encoded; the text is borrowed from the
/// request where it can be, and decoded into the blob store step by step.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonFile<'a> {
    /// The file's name.
    name: String,
    /// Its MIME type; guessed from the bytes and the name when absent.
    #[serde(default)]
    mime: Option<String>,
    /// The bytes, standard base64 with padding.
    #[serde(borrow)]
    #[schema(value_type = String, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$")]
    data: Cow<'a, str>,
}

/// Body of `POST /v1/gateways/{gw}/messages` (also the `payload` part of a
/// multipart post, and a WebSocket `post` frame). A message needs text
/// (not only white space) or a file.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostBody<'a> {
    /// The text.
    #[serde(default)]
    text: String,
    /// Styles over byte ranges of the text.
    #[serde(default, deserialize_with = "integral_spans")]
    #[schema(value_type = Vec<super::openapi::SpanDoc>)]
    spans: Vec<Span>,
    /// The author's name shown on other networks (default: the token's).
    #[serde(default)]
    username: Option<String>,
    /// The author's id (default: the token's name).
    #[serde(default)]
    userid: Option<String>,
    /// The author's avatar URL.
    #[serde(default)]
    avatar: Option<String>,
    /// The id of the message this one answers.
    #[serde(default)]
    reply_to: Option<String>,
    /// Files, base64 in the JSON.
    #[serde(default, borrow)]
    attachments: Vec<JsonFile<'a>>,
}

impl PostBody<'_> {
    /// Checks the text's spans as a post does before anything is stored.
    ///
    /// # Errors
    /// What is wrong with a span.
    pub fn validate_spans(&self) -> Result<(), String> {
        RichText {
            text: self.text.clone(),
            spans: self.spans.clone(),
        }
        .validate()
    }
}

/// Body of `PATCH /v1/gateways/{gw}/messages/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    /// The new text.
    text: String,
    /// Styles over byte ranges of the new text.
    #[serde(default, deserialize_with = "integral_spans")]
    #[schema(value_type = Vec<super::openapi::SpanDoc>)]
    spans: Vec<Span>,
}

/// Body of `POST /v1/gateways/{gw}/messages/{id}/reactions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactBody {
    /// The reaction, 1 to 16 characters.
    #[schema(min_length = 1, max_length = 16)]
    emoji: String,
    /// `true` takes back a reaction the same token added.
    #[serde(default)]
    removed: bool,
}

/// Spans whose offsets may be written as JSON numbers with a zero
/// fraction (`3.0`): JSON Schema's `integer`, which the OpenAPI document
/// promises, includes them, where `usize` alone would refuse them.
fn integral_spans<'de, D>(d: D) -> Result<Vec<Span>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut v = Value::deserialize(d)?;
    for span in v.as_array_mut().into_iter().flatten() {
        for key in ["start", "end"] {
            let whole = span
                .get(key)
                .and_then(Value::as_f64)
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 9_007_199_254_740_992.0);
            if let (Some(f), false) = (whole, span.get(key).is_some_and(Value::is_u64)) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let n = f as u64;
                span[key] = Value::from(n);
            }
        }
    }
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

/// What a post, edit, delete or reaction answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Posted {
    /// The event's id.
    pub id: String,
    /// The gateway it went into.
    pub gateway: String,
    /// `true` when the `Idempotency-Key` was used before: `id` is the
    /// first post's.
    pub duplicate: bool,
}

/// `?cursor=&consumer=&gateways=` of the streaming routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this cursor (`end`: only new events).
    cursor: Option<String>,
    /// The consumer whose stored cursor is used (default `default`).
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    consumer: Option<String>,
    /// WebSocket: comma-separated gateways (default: every readable one).
    gateways: Option<String>,
    /// `true` to also receive the caller's own posts.
    #[serde(default)]
    echo: bool,
    /// WebSocket only: `true` to move the stored cursor only as far as the
    /// client acknowledges (`{"type": "ack", "cursor": N}`), so nothing in
    /// flight when a connection drops is skipped on the next one.
    #[serde(default)]
    ack: bool,
}

impl StreamQuery {
    /// The consumer name, `default` when absent.
    pub fn consumer(&self) -> Result<String, ApiError> {
        let c = self.consumer.clone().unwrap_or_else(|| "default".into());
        if c.is_empty() || c.len() > 64 || c.chars().any(char::is_control) {
            return Err(ApiError::Invalid(
                "consumer must be 1-64 characters, none of them control characters".into(),
            ));
        }
        Ok(c)
    }

    /// Whether the consumer wants its own posts too.
    #[must_use]
    pub fn echo(&self) -> bool {
        self.echo
    }
}

/// Parses a JSON body with a 422 that says where it is wrong.
pub fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::Invalid(format!("invalid JSON body: {}", e.inner()))
        } else {
            ApiError::Invalid(format!("invalid JSON body at `{path}`: {}", e.inner()))
        }
    })
}

fn gateway(raw: &str) -> Result<GatewayName, ApiError> {
    GatewayName::new(raw).map_err(|e| ApiError::NotFound(e.to_string()))
}

fn event_id(raw: &str) -> Result<EventId, ApiError> {
    raw.parse()
        .map_err(|e: switchboard_core::ParseIdError| ApiError::NotFound(e.to_string()))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::Invalid("Idempotency-Key must be visible ASCII".into()))
        })
        .transpose()
}

async fn store_file(hub: &Hub, f: JsonFile<'_>) -> Result<Upload, ApiError> {
    let name = super::error::bounded(&f.name).into_owned();
    store_base64(hub, f.name, f.mime, &f.data, |e| {
        ApiError::Invalid(format!("attachment `{name}`: data is not base64: {e}"))
    })
    .await
}

/// Reads a request body of at most `max` bytes into one buffer (after the
/// caller was authenticated, so an unknown client cannot make the server
/// buffer one), sized from `Content-Length` so it is never copied to grow.
///
/// # Errors
/// 413 over the size limit, 400 when the client's body breaks off.
pub async fn read_body(req: Request, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    let mut body = req.into_body().into_data_stream();
    while let Some(data) = body.next().await {
        let data = data.map_err(|e| {
            ApiError::Status(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if buf.len() + data.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.into())
}

/// Turns a post body into a draft for `gw`, storing its files (once the
/// caller is known to be allowed to post there).
///
/// # Errors
/// 403/404 for a gateway the caller may not post to, 422 for a bad body,
/// 503 when the store cannot take the files.
pub async fn draft(
    hub: &Hub,
    caller: &Caller,
    gw: GatewayName,
    body: PostBody<'_>,
    files: Vec<Upload>,
    key: Option<String>,
) -> Result<Draft, ApiError> {
    let reply_to = body.reply_to.as_deref().map(event_id).transpose()?;
    let mut uploads = files;
    if !body.attachments.is_empty() {
        check_postable(hub, caller, &gw)?;
    }
    for f in body.attachments {
        uploads.push(store_file(hub, f).await?);
    }
    Ok(Draft {
        gateway: gw,
        author: author(caller, body.username, body.userid, body.avatar),
        kind: EventKind::Message {
            body: RichText {
                text: body.text,
                spans: body.spans,
            },
            attachments: Vec::new(),
            reply_to: reply_to.map(TargetRef::Event),
        },
        files: uploads,
        idempotency_key: key,
    })
}

/// A post as it came: the JSON (the body, or a multipart `payload` part),
/// a multipart `text` part, and the multipart files, stored already.
struct RawPost {
    json: Option<Bytes>,
    text: Option<String>,
    files: Vec<Upload>,
}

/// Reads a post. A multipart post's files are streamed into the blob store
/// part by part as they arrive, never held whole.
async fn read_post(st: &ApiState, req: Request) -> Result<RawPost, ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut raw = RawPost {
        json: None,
        text: None,
        files: Vec::new(),
    };
    if !is_multipart {
        raw.json = Some(read_body(req, st.account.max_body_bytes).await?);
        return Ok(raw);
    }
    let status =
        |e: axum::extract::multipart::MultipartError| ApiError::Status(e.status(), e.body_text());
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|r| ApiError::Status(r.status(), r.body_text()))?;
    while let Some(mut field) = form.next_field().await.map_err(status)? {
        let name = field.name().unwrap_or_default().to_owned();
        match (name.as_str(), field.file_name().map(str::to_owned)) {
            ("payload", None) => raw.json = Some(field.bytes().await.map_err(status)?),
            ("text", None) => {
                let data = field.bytes().await.map_err(status)?;
                raw.text = Some(String::from_utf8_lossy(&data).into_owned());
            }
            (_, Some(file_name)) => {
                let mime = field
                    .content_type()
                    .filter(|m| *m != "application/octet-stream")
                    .map(str::to_owned);
                let mut upload = FileUpload::new(&st.hub, file_name, mime);
                while let Some(chunk) = field.chunk().await.map_err(status)? {
                    upload.write(&chunk).await?;
                }
                raw.files.push(upload.finish().await?);
            }
            (other, None) => {
                return Err(ApiError::Invalid(format!(
                    "unknown form field `{}`; use `payload` (JSON), `text`, or file parts",
                    super::error::bounded(other)
                )))
            }
        }
    }
    Ok(raw)
}

/// `POST /v1/gateways/{gw}/messages`
pub async fn create(
    State(st): State<ApiState>,
    Path(gw): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = st.tokens.caller(req.headers())?;
    let gw = gateway(&gw)?;
    let key = idempotency_key(req.headers())?;
    // Before the body: files are stored as they arrive.
    check_postable(&st.hub, &caller, &gw)?;
    let raw = read_post(&st, req).await?;
    let mut body: PostBody = parse(raw.json.as_deref().unwrap_or(b"{}"))?;
    if let Some(text) = raw.text {
        body.text = text;
    }
    let d = draft(&st.hub, &caller, gw.clone(), body, raw.files, key).await?;
    let posted = post(&st.hub, &caller, d).await?;
    let status = if posted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(Posted {
            id: posted.id.to_string(),
            gateway: gw.as_str().to_owned(),
            duplicate: posted.duplicate,
        }),
    )
        .into_response())
}

async fn simple(
    st: &ApiState,
    headers: &HeaderMap,
    gw: &str,
    kind: EventKind,
) -> Result<Response, ApiError> {
    let caller = st.tokens.caller(headers)?;
    let gw = gateway(gw)?;
    let draft = Draft {
        gateway: gw.clone(),
        author: author(&caller, None, None, None),
        kind,
        files: Vec::new(),
        idempotency_key: idempotency_key(headers)?,
    };
    let posted = post(&st.hub, &caller, draft).await?;
    let status = if posted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(Posted {
            id: posted.id.to_string(),
            gateway: gw.as_str().to_owned(),
            duplicate: posted.duplicate,
        }),
    )
        .into_response())
}

/// `PATCH /v1/gateways/{gw}/messages/{id}`
pub async fn edit(
    State(st): State<ApiState>,
    Path((gw, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    st.tokens.caller(req.headers())?;
    let headers = req.headers().clone();
    let body = read_body(req, st.account.max_body_bytes).await?;
    let b: EditBody = parse(&body)?;
    let target = TargetRef::Event(event_id(&id)?);
    let text = RichText {
        text: b.text,
        spans: b.spans,
    };
    text.validate().map_err(ApiError::Invalid)?;
    simple(&st, &headers, &gw, EventKind::Edit { target, body: text }).await
}

/// `DELETE /v1/gateways/{gw}/messages/{id}`
pub async fn delete(
    State(st): State<ApiState>,
    Path((gw, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.tokens.caller(&headers)?;
    let target = TargetRef::Event(event_id(&id)?);
    simple(
        &st,
        &headers,
        &gw,
        EventKind::Delete {
            by_moderator: false,
            target,
        },
    )
    .await
}

/// `POST /v1/gateways/{gw}/messages/{id}/reactions`
pub async fn react(
    State(st): State<ApiState>,
    Path((gw, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    st.tokens.caller(req.headers())?;
    let headers = req.headers().clone();
    let body = read_body(req, st.account.max_body_bytes).await?;
    let b: ReactBody = parse(&body)?;
    if b.emoji.is_empty() || b.emoji.chars().count() > 16 {
        return Err(ApiError::Invalid("emoji must be 1-16 characters".into()));
    }
    let target = TargetRef::Event(event_id(&id)?);
    simple(
        &st,
        &headers,
        &gw,
        EventKind::Reaction {
            target,
            emoji: b.emoji,
            removed: b.removed,
        },
    )
    .await
}

/// `GET /v1/gateways/{gw}/events`: Server-Sent Events, resumable with
/// `Last-Event-ID` or `?cursor=`.
///
/// The stored cursor is at least once: it moves only on the client's
/// evidence, a reconnection with `Last-Event-ID: N` (the client has
/// everything up to `N`), which is saved before the stream resumes after
/// `N`. Events written to the connection never move it, so those still in
/// buffers when a connection drops come again to a client that reconnects
/// on its stored cursor.
pub async fn sse(
    State(st): State<ApiState>,
    Path(gw): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let caller = st.tokens.caller(&headers)?;
    let gw = gateway(&gw)?;
    check_readable(&st.hub, &caller, &gw)?;
    let consumer = q.consumer()?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let start = Start::parse(last.or(q.cursor.as_deref()))?;
    if let (Some(_), Start::After(had)) = (last, start) {
        // Never past what exists: an id from another server (or made up)
        // must not make this consumer skip events still to come.
        let head = st.hub.store.feed_head().await?;
        st.hub
            .writer
            .cursor(caller.key(), consumer.clone(), had.min(head), true)
            .await;
    }
    let sub = Subscription::open(
        st.hub.clone(),
        &caller,
        &consumer,
        vec![gw],
        start,
        q.echo(),
    )
    .await?;
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        // Nothing is acknowledged here: what the connection took is not
        // what the client has (see above).
        let item = sub.next().await.ok()?;
        let ev = SseEvent::default()
            .id(item.seq.to_string())
            .event(item.event.kind.name())
            .data(json::native_feed(&item));
        Some((Ok(ev), sub))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /v1/ws?gateways=a,b&cursor=N&consumer=name`
pub async fn ws(
    State(st): State<ApiState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let caller = st.tokens.caller(&headers)?;
    let gateways = readable(&st.hub, &caller, q.gateways.as_deref())?;
    let start = Start::parse(q.cursor.as_deref())?;
    let sub = Subscription::open(
        st.hub.clone(),
        &caller,
        &q.consumer()?,
        gateways,
        start,
        q.echo(),
    )
    .await?;
    Ok(upgrade
        // Clients send little; a small buffer saves zeroing 128 KiB per read.
        .read_buffer_size(4096)
        // The same limit as a request body.
        .max_message_size(st.account.max_body_bytes)
        .on_upgrade(move |socket| ws_loop(st, caller, sub, q.ack, socket)))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Post {
        gateway: String,
        #[serde(default)]
        request_id: Option<String>,
        #[serde(default)]
        idempotency_key: Option<String>,
        #[serde(flatten)]
        body: Value,
    },
    /// The client has everything up to `cursor` (with `?ack=true`).
    Ack { cursor: i64 },
}

/// Most events written to a socket before a flush.
pub const BURST: usize = 256;

async fn ws_loop(
    st: ApiState,
    caller: Caller,
    mut sub: Subscription,
    client_acks: bool,
    socket: WebSocket,
) {
    let (mut tx, mut rx) = socket.split();
    loop {
        tokio::select! {
            item = sub.next() => {
                let Ok(item) = item else { break };
                // Queue what is already committed behind it and flush once:
                // one write for a burst instead of one per event.
                let Ok(more) = sub.ready(BURST).await else { break };
                let mut sent = true;
                for item in std::iter::once(item).chain(more) {
                    let frame = WsMessage::Text(json::native_feed(&item).into());
                    if tx.feed(frame).await.is_err() {
                        sent = false;
                        break;
                    }
                }
                if !sent || tx.flush().await.is_err() {
                    break;
                }
                // Without client acknowledgements, what the kernel took
                // counts as delivered.
                if !client_acks {
                    sub.ack();
                    sub.save(false).await;
                }
            }
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                if let Ok(ClientFrame::Ack { cursor }) = serde_json::from_slice(text.as_bytes()) {
                    // Never past what was sent on this connection.
                    if client_acks && sub.ack_to(cursor) {
                        sub.save(false).await;
                        continue;
                    }
                    let reply = json!({ "type": "error", "error": { "message": format!(
                        "ack of cursor {cursor}: connect with ?ack=true, and acknowledge only what you received"
                    ) } });
                    if tx.send(WsMessage::Text(reply.to_string().into())).await.is_err() {
                        break;
                    }
                    continue;
                }
                let reply = handle_frame(&st, &caller, text.as_bytes()).await;
                if let Some(reply) = reply {
                    if tx.send(WsMessage::Text(reply.to_string().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    sub.save(true).await;
}

async fn handle_frame(st: &ApiState, caller: &Caller, bytes: &[u8]) -> Option<Value> {
    let frame: ClientFrame = match parse(bytes) {
        Ok(f) => f,
        Err(e) => {
            return Some(
                json!({ "type": "error", "error": { "code": "unprocessable_entity", "message": super::error::bounded(&e.to_string()) } }),
            )
        }
    };
    match frame {
        ClientFrame::Ack { .. } => None,
        ClientFrame::Post {
            gateway: gw,
            request_id,
            idempotency_key,
            body,
        } => {
            let result = async {
                let body =
                    PostBody::deserialize(&body).map_err(|e| ApiError::Invalid(e.to_string()))?;
                let d = draft(
                    &st.hub,
                    caller,
                    gateway(&gw)?,
                    body,
                    Vec::new(),
                    idempotency_key,
                )
                .await?;
                post(&st.hub, caller, d).await
            }
            .await;
            Some(match result {
                Ok(p) => {
                    json!({ "type": "posted", "request_id": request_id, "id": p.id.to_string(), "duplicate": p.duplicate })
                }
                Err(e) => {
                    json!({ "type": "error", "request_id": request_id, "error": { "message": super::error::bounded(&e.to_string()) } })
                }
            })
        }
    }
}

/// `GET /v1/blobs/{sha256}`
pub async fn blob(
    State(st): State<ApiState>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = st.tokens.caller(&headers)?;
    if !caller.token.scopes.read {
        return Err(ApiError::Forbidden("the read scope is needed".into()));
    }
    let not_found = || ApiError::NotFound(format!("no blob {sha}"));
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    // Only files posted in a gateway this token may read.
    let readable = st
        .hub
        .store
        .blob_gateways(&sha)
        .await?
        .iter()
        .any(|gw| check_readable(&st.hub, &caller, gw).is_ok());
    if !readable {
        return Err(not_found());
    }
    let row = st.hub.store.blob_row(&sha).await?.ok_or_else(not_found)?;
    let upload = match row.content {
        BlobContent::Inline(data) => {
            return Ok(([(header::CONTENT_TYPE, row.mime)], data).into_response())
        }
        BlobContent::Chunks(upload) => upload,
    };
    // A large file goes out a chunk at a time, never whole in memory.
    let store = st.hub.store.clone();
    let chunks = futures_util::stream::try_unfold(0_i64, move |seq| {
        let (store, upload) = (store.clone(), upload.clone());
        async move {
            Ok::<_, crate::store::StoreError>(
                store
                    .blob_chunk(&upload, seq)
                    .await?
                    .map(|chunk| (Bytes::from(chunk), seq + 1)),
            )
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, row.mime),
            (header::CONTENT_LENGTH, row.size.to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// `GET /v1/openapi.json`: generated from these handlers' types (see
/// [`super::openapi`]).
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::bot_api_json(),
    )
        .into_response()
}
