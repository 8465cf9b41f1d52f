//! The OpenAPI documents, generated (utoipa) from the request and response
//! types the handlers themselves deserialize and serialize, so a field or
//! a constraint cannot be documented one way and enforced another:
//! [`BotApi`] for each bot API listener (`GET /v1/openapi.json`, no token)
//! and [`AdminApi`] for the admin listener (`GET /v1/openapi.json` there,
//! with the admin token).
//!
//! The operations below are empty functions that carry each route's
//! `#[utoipa::path]` (method, parameters, bodies, answers); the bodies are
//! the handlers' own types. What JSON Schema cannot say from a type alone
//! (a message needs text or a file) is added to that type's schema here.
//! `tests/it/openapi.rs` runs an OpenAPI fuzzer (schemathesis) against the
//! served documents.

#![allow(clippy::needless_for_each)]

use std::sync::OnceLock;

use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Type};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::compat::MbMessage;
use super::error::ErrorBody;
use super::native::{EditBody, PostBody, Posted, ReactBody, StreamQuery};

/// Something other than white space (a message's text).
const NOT_BLANK: &str = "\\S";

/// A style over `start..end` of the text (UTF-8 byte offsets on
/// character boundaries, `end` at most the text's length).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SpanDoc {
    /// First byte.
    #[schema(minimum = 0)]
    start: u64,
    /// One past the last byte.
    #[schema(minimum = 0)]
    end: u64,
    /// The style.
    #[serde(flatten)]
    style: StyleDoc,
}

/// The styles, with what each needs.
#[derive(ToSchema)]
#[serde(tag = "style", rename_all = "snake_case")]
#[allow(dead_code)]
pub enum StyleDoc {
    /// Bold.
    Bold,
    /// Italic.
    Italic,
    /// Underline.
    Underline,
    /// Strikethrough.
    Strike,
    /// Inline code.
    Code,
    /// A preformatted block.
    Pre {
        /// Its language.
        language: Option<String>,
    },
    /// A hyperlink.
    Link {
        /// Where it points.
        url: String,
    },
    /// Hidden until clicked.
    Spoiler,
    /// A quotation.
    Blockquote,
    /// A mention.
    Mention {
        /// The user's id on the origin network.
        user_id: String,
    },
}

/// A multipart post: the JSON `payload` (a [`PostBody`]), a `text`, and
/// file parts (any name, each with a file name: the bytes of a file).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MultipartPost {
    /// The post as JSON.
    payload: Option<String>,
    /// The text (instead of `payload.text`).
    text: Option<String>,
}

/// `{"status": "ok"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`.
    status: String,
}

/// A schema that also requires one of `alternatives`.
fn with_any_of(base: RefOr<Schema>, alternatives: Vec<Schema>) -> RefOr<Schema> {
    let mut one = OneOfBuilder::new();
    for a in alternatives {
        one = one.item(a);
    }
    let any = Schema::OneOf(one.build());
    // `anyOf` semantics: the alternatives may overlap.
    let any = match any {
        Schema::OneOf(o) => {
            let mut b = utoipa::openapi::schema::AnyOfBuilder::new();
            for item in o.items {
                b = b.item(item);
            }
            Schema::AnyOf(b.build())
        }
        other => other,
    };
    RefOr::T(Schema::AllOf(
        AllOfBuilder::new().item(base).item(any).build(),
    ))
}

fn required_text(field: &str) -> Schema {
    ObjectBuilder::new()
        .required(field)
        .property(
            field,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NOT_BLANK)),
        )
        .build()
        .into()
}

fn non_empty_list(field: &str) -> Schema {
    ObjectBuilder::new()
        .required(field)
        .property(
            field,
            ArrayBuilder::new()
                .items(ObjectBuilder::new())
                .min_items(Some(1)),
        )
        .build()
        .into()
}

/// [`PostBody`] as the server takes it: text that is not only white
/// space, or at least one file.
pub struct NativePost;

impl PartialSchema for NativePost {
    fn schema() -> RefOr<Schema> {
        with_any_of(
            PostBody::schema(),
            vec![required_text("text"), non_empty_list("attachments")],
        )
    }
}

impl ToSchema for NativePost {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <PostBody as ToSchema>::schemas(schemas);
    }
}

/// [`MbMessage`] as the server takes it: a gateway, and text or a file.
pub struct CompatPost;

impl PartialSchema for CompatPost {
    fn schema() -> RefOr<Schema> {
        let extra_files: Schema = ObjectBuilder::new()
            .required("Extra")
            .property(
                "Extra",
                ObjectBuilder::new().required("file").property(
                    "file",
                    ArrayBuilder::new()
                        .items(ObjectBuilder::new())
                        .min_items(Some(1)),
                ),
            )
            .build()
            .into();
        let base = RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(MbMessage::schema())
                .item(ObjectBuilder::new().required("gateway"))
                .build(),
        ));
        with_any_of(base, vec![required_text("text"), extra_files])
    }
}

impl ToSchema for CompatPost {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <MbMessage as ToSchema>::schemas(schemas);
    }
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The bot API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard bot API",
        version = "1",
        description = "Post into gateways and read every event, resumably. Authenticate with \
            `Authorization: Bearer <token>`; tokens are scoped to gateways and to read/write. \
            Every error is JSON: `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        create, edit, delete, react, events, ws, blob, openapi, healthz, mb_health, mb_message,
        mb_messages, mb_stream, mb_websocket
    ),
    components(schemas(ErrorBody, Posted, SpanDoc, StyleDoc)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct BotApi;

/// The bot API's document as JSON, made once.
pub fn bot_api_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| BotApi::openapi().to_pretty_json().unwrap_or_default())
}

/// `Idempotency-Key`: 1 to 200 visible ASCII characters.
const IDEMPOTENCY: &str = "Posting again with the same key (1 to 200 visible ASCII characters) \
    returns the first post's id (200) instead of creating a new message.";

#[utoipa::path(
    post,
    path = "/v1/gateways/{gw}/messages",
    tag = "native",
    summary = "Post a message",
    params(
        ("gw" = String, Path, description = "The gateway"),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY,
            min_length = 1, max_length = 200, pattern = "^[!-~]([ -~\\t]*[!-~])?$"),
    ),
    request_body(content(
        (NativePost = "application/json"),
        (MultipartPost = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Committed", body = Posted),
        (status = 200, description = "A repeat of an earlier post with the same Idempotency-Key", body = Posted),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token may not post there", body = ErrorBody),
        (status = 404, description = "No such gateway", body = ErrorBody),
        (status = 400, description = "A multipart body that cannot be read", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different request", body = ErrorBody),
        (status = 413, description = "Over the body size limit", body = ErrorBody),
        (status = 415, description = "Neither JSON nor multipart", body = ErrorBody),
        (status = 422, description = "Not a post this server takes (a span outside the text, a payload that is not JSON)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn create() {}

#[utoipa::path(
    patch,
    path = "/v1/gateways/{gw}/messages/{id}",
    tag = "native",
    summary = "Edit your message",
    params(
        ("gw" = String, Path, description = "The gateway"),
        ("id" = String, Path, description = "The message's id"),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY,
            min_length = 1, max_length = 200, pattern = "^[!-~]([ -~\\t]*[!-~])?$"),
    ),
    request_body(content((EditBody = "application/json"))),
    responses(
        (status = 201, description = "Committed", body = Posted),
        (status = 200, description = "A repeat (same Idempotency-Key)", body = Posted),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the message's author, or no write scope", body = ErrorBody),
        (status = 404, description = "No such gateway or message", body = ErrorBody),
        (status = 413, description = "Over the body size limit", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different request", body = ErrorBody),
        (status = 422, description = "Not an edit this server takes", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn edit() {}

#[utoipa::path(
    delete,
    path = "/v1/gateways/{gw}/messages/{id}",
    tag = "native",
    summary = "Delete your message",
    params(
        ("gw" = String, Path, description = "The gateway"),
        ("id" = String, Path, description = "The message's id"),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY,
            min_length = 1, max_length = 200, pattern = "^[!-~]([ -~\\t]*[!-~])?$"),
    ),
    responses(
        (status = 201, description = "Committed", body = Posted),
        (status = 200, description = "A repeat (same Idempotency-Key)", body = Posted),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not the message's author, or no write scope", body = ErrorBody),
        (status = 404, description = "No such gateway or message", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different request", body = ErrorBody),
        (status = 422, description = "Not a delete this server takes", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn delete() {}

#[utoipa::path(
    post,
    path = "/v1/gateways/{gw}/messages/{id}/reactions",
    tag = "native",
    summary = "React to a message (or take your reaction back)",
    params(
        ("gw" = String, Path, description = "The gateway"),
        ("id" = String, Path, description = "The message's id"),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY,
            min_length = 1, max_length = 200, pattern = "^[!-~]([ -~\\t]*[!-~])?$"),
    ),
    request_body(content((ReactBody = "application/json"))),
    responses(
        (status = 201, description = "Committed", body = Posted),
        (status = 200, description = "A repeat (same Idempotency-Key)", body = Posted),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Taking back another's reaction, or no write scope", body = ErrorBody),
        (status = 404, description = "No such gateway or message", body = ErrorBody),
        (status = 413, description = "Over the body size limit", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different request", body = ErrorBody),
        (status = 422, description = "Not a reaction this server takes", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn react() {}

#[utoipa::path(
    get,
    path = "/v1/gateways/{gw}/events",
    tag = "native",
    summary = "Server-Sent Events of a gateway; each event's id is its cursor, so Last-Event-ID resumes",
    params(
        ("gw" = String, Path, description = "The gateway"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this cursor"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "An endless stream of events (JSON in each `data`)", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token may not read there", body = ErrorBody),
        (status = 404, description = "No such gateway", body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad cursor or consumer", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn events() {}

#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "native",
    summary = "WebSocket: the server sends events; the client may send {\"type\":\"post\",\"gateway\":...,\"text\":...,\"request_id\":...} and, with ?ack=true, {\"type\":\"ack\",\"cursor\":N}",
    params(StreamQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token may not read there", body = ErrorBody),
        (status = 404, description = "No such gateway", body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad cursor or consumer", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn ws() {}

#[utoipa::path(
    get,
    path = "/v1/blobs/{sha256}",
    tag = "native",
    summary = "A file's bytes",
    params(("sha256" = String, Path, description = "The file's SHA-256, hex")),
    responses(
        (status = 200, description = "The bytes, with their MIME type", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "No read scope", body = ErrorBody),
        (status = 404, description = "No such file in a gateway this token reads", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn blob() {}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "native",
    summary = "This document",
    security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
#[allow(dead_code)]
fn openapi() {}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "native",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "Up", body = Health))
)]
#[allow(dead_code)]
fn healthz() {}

#[utoipa::path(
    get,
    path = "/api/health",
    tag = "matterbridge",
    summary = "matterbridge: health",
    responses(
        (status = 200, description = "`OK`", content_type = "text/plain", body = String),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn mb_health() {}

#[utoipa::path(
    post,
    path = "/api/message",
    tag = "matterbridge",
    summary = "matterbridge: post",
    request_body(content((CompatPost = "application/json"))),
    responses(
        (status = 200, description = "The message as matterbridge normalizes it, with its id", body = Object),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token may not post there", body = ErrorBody),
        (status = 404, description = "No such gateway", body = ErrorBody),
        (status = 413, description = "Over the body size limit", body = ErrorBody),
        (status = 422, description = "Not a post this server takes", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn mb_message() {}

#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "matterbridge",
    summary = "matterbridge: the messages since this consumer's last poll",
    params(StreamQuery),
    responses(
        (status = 200, description = "Messages in matterbridge's shape", body = Vec<Object>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "No read scope", body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad cursor or consumer", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn mb_messages() {}

#[utoipa::path(
    get,
    path = "/api/stream",
    tag = "matterbridge",
    summary = "matterbridge: an endless NDJSON stream, a greeting first",
    params(StreamQuery),
    responses(
        (status = 200, description = "One JSON message per line", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "No read scope", body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad cursor or consumer", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn mb_stream() {}

#[utoipa::path(
    get,
    path = "/api/websocket",
    tag = "matterbridge",
    summary = "matterbridge: WebSocket",
    params(StreamQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "No read scope", body = ErrorBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 422, description = "A bad cursor or consumer", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn mb_websocket() {}
