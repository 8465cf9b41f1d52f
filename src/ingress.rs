//! Serves adapters' HTTP ingress (see `switchboard_core::ingress`): one
//! listener per adapter that asks for one, every request handed to the
//! adapter with its account's host.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use switchboard_core::{Host, Ingress, IngressRequest};

/// Largest request body an ingress takes (an appservice transaction of
/// hundreds of events fits many times over).
const MAX_BODY: usize = 64 << 20;

#[derive(Clone)]
struct IngressState {
    host: Arc<dyn Host>,
    ingress: Arc<dyn Ingress>,
}

/// The routes of one adapter's ingress: everything goes to the adapter.
pub fn router(host: Arc<dyn Host>, ingress: Arc<dyn Ingress>) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(IngressState { host, ingress })
}

async fn handle(
    State(st): State<IngressState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = IngressRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    let answer = st.ingress.handle(st.host.as_ref(), req).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, answer.body).into_response();
    for (k, v) in answer.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}
