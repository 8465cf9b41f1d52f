//! matterbridge-compatible routes under `/api`, with the same JSON fields
//! and Bearer token, so existing matterbridge bots work unchanged. Unlike
//! matterbridge, each token has its own cursor (nobody drains anyone else's
//! messages), messages carry stable ids, and history survives restarts.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_core::{EventKind, GatewayName, RichText};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::auth::Caller;
use super::error::ApiError;
use super::json;
use super::native::{parse, StreamQuery};
use super::post::{author, check_postable, post, store_base64, Draft};
use super::stream::{readable, Start, Subscription};
use super::ApiState;
use crate::store::FeedItem;

/// matterbridge's `config.Message`, inbound. Go decodes JSON keys
/// case-insensitively, so `Extra` and `extra` are both accepted. The
/// gateway is required; a message needs text or a file.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct MbMessage<'a> {
    /// The text.
    #[serde(default)]
    text: String,
    /// The author's name.
    #[serde(default)]
    username: String,
    /// The author's id.
    #[serde(default)]
    userid: String,
    /// The author's avatar URL.
    #[serde(default)]
    avatar: String,
    /// `user_action` for a `/me` message.
    #[serde(default)]
    event: String,
    /// The gateway to post into.
    #[serde(default)]
    #[schema(min_length = 1)]
    gateway: String,
    /// Files.
    #[serde(default, alias = "extra", rename = "Extra", borrow)]
    extra: Option<MbExtra<'a>>,
    // Fields matterbridge overwrites on input; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(value_type = Value)]
    channel: Value,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(value_type = Value)]
    account: Value,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(value_type = Value)]
    protocol: Value,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(value_type = Value)]
    id: Value,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(value_type = Value)]
    timestamp: Value,
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(value_type = Value)]
    parent_id: Value,
}

/// matterbridge's `Extra`: its files.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct MbExtra<'a> {
    /// The files.
    #[serde(default, borrow)]
    file: Vec<MbFile<'a>>,
}

/// A file, base64 in `Data`: borrowed from the request where it can be,
/// and decoded into the blob store step by step.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct MbFile<'a> {
    /// The file's name.
    #[serde(default, alias = "name")]
    #[serde(rename = "Name")]
    name: String,
    /// The bytes, standard base64 with padding.
    #[serde(default, alias = "data", borrow)]
    #[serde(rename = "Data")]
    #[schema(value_type = Option<String>, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$")]
    data: Option<Cow<'a, str>>,
}

/// Renders a feed row in matterbridge's shape, with file bytes inlined.
/// Files up to this size are inlined (base64 `Data`, as matterbridge
/// does); larger ones only carry their `URL` (`/v1/blobs/<sha256>`), so a
/// response stays small whatever bots post.
const INLINE_MAX: u64 = 64 * 1024;

async fn render(st: &ApiState, item: &FeedItem) -> Option<Value> {
    let mut files = Vec::new();
    if let EventKind::Message { attachments, .. } = &item.event.kind {
        for a in attachments.iter().filter(|a| a.size <= INLINE_MAX) {
            if let Ok(Some((_, data))) = st.hub.store.blob(&a.content.sha256).await {
                files.push((a.content.sha256.clone(), data));
            }
        }
    }
    json::matterbridge(item, &files)
}

fn greeting() -> Value {
    json!({
        "text": "", "channel": "", "username": "", "userid": "", "avatar": "",
        "account": "", "event": "api_connected", "protocol": "", "gateway": "",
        "parent_id": "", "timestamp": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        "id": "", "Extra": null,
    })
}

async fn inject(st: &ApiState, caller: &Caller, bytes: &[u8]) -> Result<Normalized, ApiError> {
    let m: MbMessage = parse(bytes)?;
    if m.gateway.is_empty() {
        return Err(ApiError::Invalid("`gateway` is required".into()));
    }
    let gw = GatewayName::new(m.gateway.clone()).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let mut files = Vec::new();
    for (i, f) in m.extra.into_iter().flat_map(|e| e.file).enumerate() {
        // Before anything is stored.
        check_postable(&st.hub, caller, &gw)?;
        // matterbridge sends no type: it is guessed from the bytes and name.
        let data = f.data.unwrap_or_default();
        files.push(
            store_base64(&st.hub, f.name, None, &data, |_| {
                ApiError::Invalid(format!("invalid format for data (Extra.file[{i}])"))
            })
            .await?,
        );
    }
    let text = if m.event == "user_action" {
        format!("/me {}", m.text)
    } else {
        m.text.clone()
    };
    let draft = Draft {
        gateway: gw.clone(),
        author: author(
            caller,
            Some(m.username.clone()),
            Some(m.userid.clone()),
            Some(m.avatar.clone()),
        ),
        kind: EventKind::Message {
            body: RichText::plain(text),
            attachments: Vec::new(),
            reply_to: None,
        },
        files,
        idempotency_key: None,
    };
    let posted = post(&st.hub, caller, draft).await?;
    Ok(Normalized {
        text: m.text,
        channel: "api",
        username: m.username,
        userid: m.userid,
        avatar: m.avatar,
        account: caller.account.to_string(),
        event: m.event,
        protocol: "api",
        gateway: m.gateway,
        parent_id: "",
        timestamp: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
        id: posted.id.to_string(),
        extra: None,
    })
}

/// The message as matterbridge answers a post: normalized, with our id.
#[derive(Debug, serde::Serialize)]
struct Normalized {
    text: String,
    channel: &'static str,
    username: String,
    userid: String,
    avatar: String,
    account: String,
    event: String,
    protocol: &'static str,
    gateway: String,
    parent_id: &'static str,
    timestamp: String,
    id: String,
    #[serde(rename = "Extra")]
    extra: Option<()>,
}

/// `GET /api/health`
pub async fn health(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.tokens.caller(&headers)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response())
}

/// `POST /api/message`
pub async fn message(
    State(st): State<ApiState>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let caller = st.tokens.caller(req.headers())?;
    let body = super::native::read_body(req, st.account.max_body_bytes).await?;
    Ok(axum::Json(inject(&st, &caller, &body).await?).into_response())
}

async fn open(
    st: &ApiState,
    headers: &HeaderMap,
    q: &StreamQuery,
) -> Result<(Caller, Subscription), ApiError> {
    let caller = st.tokens.caller(headers)?;
    let gateways = readable(&st.hub, &caller, None)?;
    let consumer = q.consumer()?;
    // Like matterbridge, a bot new to this server gets the last `buffer`
    // messages, not the whole history.
    let sub = Subscription::open(
        st.hub.clone(),
        &caller,
        &consumer,
        gateways,
        Start::StoredOrLast(st.account.buffer),
        q.echo(),
    )
    .await?;
    Ok((caller, sub))
}

/// `GET /api/messages`: what arrived since this token's last poll.
///
/// At least once: the stored cursor moves past a response only when the
/// consumer polls again (it got that response), so a response lost to a
/// crash of switchboard is offered again after the restart.
pub async fn messages(
    State(st): State<ApiState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = st.tokens.caller(&headers)?;
    let key = (caller.key(), q.consumer()?);
    let confirmed = st.offered.lock().expect("offered lock").remove(&key);
    if let Some(seq) = confirmed {
        st.hub
            .writer
            .cursor(key.0.clone(), key.1.clone(), seq, true)
            .await;
    }
    let (_, mut sub) = open(&st, &headers, &q).await?;
    let start = sub.position();
    let items = sub.ready(st.account.buffer).await?;
    let mut out = Vec::with_capacity(items.len());
    // The response stops before it would pass the byte cap (one message
    // always goes); what is left comes with the next poll.
    let mut offered = start;
    let mut bytes = 2;
    for item in &items {
        if let Some(v) = render(&st, item).await {
            // Exactly what it adds to the pretty-printed array: its lines,
            // each indented two more, and the separator.
            let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
            let size = pretty.len() + 2 * pretty.lines().count() + 2;
            if !out.is_empty() && bytes + size > st.account.max_response_bytes {
                break;
            }
            bytes += size;
            out.push(v);
        }
        offered = item.seq;
    }
    st.offered
        .lock()
        .expect("offered lock")
        .insert(key, offered);
    let text = serde_json::to_string_pretty(&out).unwrap_or_else(|_| "[]".into());
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

/// `GET /api/stream`: NDJSON, greeting first.
pub async fn stream(
    State(st): State<ApiState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, sub) = open(&st, &headers, &q).await?;
    let first = format!("{}\n", greeting());
    let lines = futures_util::stream::unfold((st, sub), |(st, mut sub)| async move {
        // Asked for the next line: the server took the previous one.
        sub.ack();
        sub.save(false).await;
        loop {
            let item = sub.next().await.ok()?;
            if let Some(v) = render(&st, &item).await {
                return Some((
                    Ok::<_, std::convert::Infallible>(format!("{v}\n")),
                    (st, sub),
                ));
            }
        }
    });
    let body = futures_util::stream::once(async move { Ok(first) }).chain(lines);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /api/websocket`
pub async fn websocket(
    State(st): State<ApiState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (caller, sub) = open(&st, &headers, &q).await?;
    Ok(upgrade
        // Clients send little; a small buffer saves zeroing 128 KiB per read.
        .read_buffer_size(4096)
        // The same limit as a request body.
        .max_message_size(st.account.max_body_bytes)
        .on_upgrade(move |socket| ws_loop(st, caller, sub, socket)))
}

async fn ws_loop(st: ApiState, caller: Caller, mut sub: Subscription, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    if tx
        .send(WsMessage::Text(greeting().to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            item = sub.next() => {
                let Ok(item) = item else { break };
                let Ok(more) = sub.ready(super::native::BURST).await else { break };
                let mut sent = true;
                for item in std::iter::once(item).chain(more) {
                    if let Some(v) = render(&st, &item).await {
                        if tx.feed(WsMessage::Text(v.to_string().into())).await.is_err() {
                            sent = false;
                            break;
                        }
                    }
                }
                if !sent || tx.flush().await.is_err() {
                    break;
                }
                sub.ack();
                sub.save(false).await;
            }
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                // matterbridge sends no reply frame; errors are logged only.
                if let Err(e) = inject(&st, &caller, text.as_bytes()).await {
                    tracing::info!(token = %caller.token.name, error = %super::error::bounded(&e.to_string()), "Rejected a WebSocket message.");
                }
            }
        }
    }
    sub.save(true).await;
}
