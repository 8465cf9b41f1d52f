//! The native bot API under `/v1`.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_core::{EventId, EventKind, GatewayName, RichText, Span, TargetRef};

use super::auth::Caller;
use super::error::ApiError;
use super::json;
use super::post::{author, kind_for, post, Draft, Upload};
use super::stream::{check_readable, readable, Start, Subscription};
use super::ApiState;

/// A file in a JSON post, base64-encoded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    name: String,
    #[serde(default)]
    mime: Option<String>,
    data: String,
}

/// Body of `POST /v1/gateways/{gw}/messages` (also the `payload` part of a
/// multipart post, and a WebSocket `post` frame).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostBody {
    #[serde(default)]
    text: String,
    #[serde(default)]
    spans: Vec<Span>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    userid: Option<String>,
    #[serde(default)]
    avatar: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    attachments: Vec<JsonFile>,
}

impl PostBody {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    text: String,
    #[serde(default)]
    spans: Vec<Span>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReactBody {
    emoji: String,
    #[serde(default)]
    removed: bool,
}

/// `?cursor=&consumer=&gateways=` of the streaming routes.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    cursor: Option<String>,
    consumer: Option<String>,
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
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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

fn decode_file(f: JsonFile) -> Result<Upload, ApiError> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(f.data.as_bytes())
        .map_err(|e| {
            ApiError::Invalid(format!("attachment `{}`: data is not base64: {e}", f.name))
        })?;
    let mime = f
        .mime
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| super::post::guess_mime(&f.name, &data));
    Ok(Upload {
        kind: kind_for(&mime),
        name: f.name,
        mime,
        data,
    })
}

/// Reads a request body (after the caller was authenticated, so an unknown
/// client cannot make the server buffer one).
///
/// # Errors
/// 413 over the size limit.
pub async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &())
        .await
        .map_err(|r| ApiError::Status(r.status(), r.body_text()))
}

/// Turns a post body into a draft for `gw`.
pub fn draft(
    caller: &Caller,
    gw: GatewayName,
    body: PostBody,
    files: Vec<Upload>,
    key: Option<String>,
) -> Result<Draft, ApiError> {
    let reply_to = body.reply_to.as_deref().map(event_id).transpose()?;
    let mut uploads = files;
    for f in body.attachments {
        uploads.push(decode_file(f)?);
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

async fn read_post(req: Request) -> Result<(PostBody, Vec<Upload>), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        return Ok((parse(&read_body(req).await?)?, Vec::new()));
    }
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|r| ApiError::Status(r.status(), r.body_text()))?;
    let mut body = None;
    let mut files = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::Status(e.status(), e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let mime = field.content_type().map(str::to_owned);
        let data = field
            .bytes()
            .await
            .map_err(|e| ApiError::Status(e.status(), e.body_text()))?;
        match (name.as_str(), file_name) {
            ("payload", None) => body = Some(parse::<PostBody>(&data)?),
            ("text", None) => {
                body = Some(PostBody {
                    text: String::from_utf8_lossy(&data).into_owned(),
                    ..parse(b"{}")?
                });
            }
            (_, Some(file_name)) => {
                let mime = mime
                    .filter(|m| m != "application/octet-stream")
                    .unwrap_or_else(|| super::post::guess_mime(&file_name, &data));
                files.push(Upload {
                    kind: kind_for(&mime),
                    name: file_name,
                    mime,
                    data: data.to_vec(),
                });
            }
            (other, None) => {
                return Err(ApiError::Invalid(format!(
                    "unknown form field `{other}`; use `payload` (JSON), `text`, or file parts"
                )))
            }
        }
    }
    Ok((body.unwrap_or(parse(b"{}")?), files))
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
    let (body, files) = read_post(req).await?;
    let posted = post(
        &st.hub,
        &caller,
        draft(&caller, gw.clone(), body, files, key)?,
    )
    .await?;
    let status = if posted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({ "id": posted.id.to_string(), "gateway": gw.as_str(), "duplicate": posted.duplicate })),
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
    Ok((status, Json(json!({ "id": posted.id.to_string(), "gateway": gw.as_str(), "duplicate": posted.duplicate }))).into_response())
}

/// `PATCH /v1/gateways/{gw}/messages/{id}`
pub async fn edit(
    State(st): State<ApiState>,
    Path((gw, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    st.tokens.caller(req.headers())?;
    let headers = req.headers().clone();
    let body = read_body(req).await?;
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
    simple(&st, &headers, &gw, EventKind::Delete { target }).await
}

/// `POST /v1/gateways/{gw}/messages/{id}/reactions`
pub async fn react(
    State(st): State<ApiState>,
    Path((gw, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    st.tokens.caller(req.headers())?;
    let headers = req.headers().clone();
    let body = read_body(req).await?;
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
pub async fn sse(
    State(st): State<ApiState>,
    Path(gw): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let caller = st.tokens.caller(&headers)?;
    let gw = gateway(&gw)?;
    check_readable(&st.hub, &caller, &gw)?;
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let start = Start::parse(last.or(q.cursor.as_deref()))?;
    let sub = Subscription::open(
        st.hub.clone(),
        &caller,
        &q.consumer()?,
        vec![gw],
        start,
        q.echo(),
    )
    .await?;
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        // Asked for the next event: the server took the previous one.
        sub.ack();
        sub.save(false).await;
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
                json!({ "type": "error", "error": { "code": "unprocessable_entity", "message": e.to_string() } }),
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
                let body: PostBody =
                    serde_json::from_value(body).map_err(|e| ApiError::Invalid(e.to_string()))?;
                let d = draft(caller, gateway(&gw)?, body, Vec::new(), idempotency_key)?;
                post(&st.hub, caller, d).await
            }
            .await;
            Some(match result {
                Ok(p) => {
                    json!({ "type": "posted", "request_id": request_id, "id": p.id.to_string(), "duplicate": p.duplicate })
                }
                Err(e) => {
                    json!({ "type": "error", "request_id": request_id, "error": { "message": e.to_string() } })
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
    let (mime, data) = st.hub.store.blob(&sha).await?.ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, mime)], data).into_response())
}

/// `GET /v1/openapi.json`
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}
