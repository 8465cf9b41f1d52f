//! The admin page: one server-rendered HTML page (maud: the markup is
//! checked and escaped at compile time, and costs no template engine at
//! run time), complete without JavaScript. A small script
//! (`assets/admin.js`, served from here, nothing from another site) swaps
//! in the live part again whenever the server's Server-Sent Events say it
//! changed.
//!
//! - `GET /admin/login`, `POST /admin/login`: the admin token for a
//!   session cookie; `POST /admin/logout`.
//! - `GET /admin`: accounts, queues, dead letters, gateways, reload.
//! - `GET /admin/events`: the live part, re-rendered, as SSE.
//! - `POST /admin/...`: the page's forms (pause, resume, requeue, drop,
//!   reload); each answers `303 See Other` back to the page, which shows
//!   what happened.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use futures_util::Stream;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::auth::{self, Admin, Flash};
use super::view::{GatewayView, Overview};
use super::AdminState;
use crate::api::error::ApiError;

/// The page's style sheet.
pub const CSS: &str = include_str!("assets/admin.css");
/// The page's script (live updates).
pub const JS: &str = include_str!("assets/admin.js");

/// How often the live part is rendered again to see whether it changed.
const LIVE_TICK: Duration = Duration::from_millis(500);

/// The page's frame: a `<main>` with `body` under a header.
pub fn layout(title: &str, script: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/admin/admin.css";
                @if script {
                    script src="/admin/admin.js" defer {}
                }
            }
            body { (body) }
        }
    }
}

/// A page as an HTML response, with headers that keep it to itself.
pub fn respond(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        page.into_string(),
    )
        .into_response()
}

/// `GET /admin/admin.css`
pub async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

/// `GET /admin/admin.js`
pub async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

fn login_page(error: Option<&str>) -> Markup {
    layout(
        "Sign in: switchboard admin",
        false,
        html! {
            main.narrow {
                h1 { "switchboard admin" }
                @if let Some(e) = error {
                    p.flash.error role="alert" { (e) }
                }
                form method="post" action="/admin/login" {
                    label for="token" { "Admin token" }
                    p.hint id="token-hint" {
                        "In " code { "admin.token" } " in the data directory, or the one configured as "
                        code { "general.admin_token" } "."
                    }
                    input #token type="password" name="token" autocomplete="current-password"
                        required aria-describedby="token-hint";
                    button #sign-in type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `GET /admin/login`
pub async fn login_form() -> Response {
    respond(StatusCode::OK, login_page(None))
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /admin/login`
pub async fn login(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !auth::same_origin(&headers) {
        return respond(
            StatusCode::FORBIDDEN,
            login_page(Some("Cross-origin sign-in refused.")),
        );
    }
    if !st.auth.is_token(form.token.trim()) {
        tracing::warn!("Admin sign-in with a wrong token.");
        return respond(
            StatusCode::UNAUTHORIZED,
            login_page(Some("That is not the admin token.")),
        );
    }
    let id = st.auth.open_session();
    (
        [(header::SET_COOKIE, auth::set_cookie(Some(&id), &headers))],
        Redirect::to("/admin"),
    )
        .into_response()
}

/// `POST /admin/logout`
pub async fn logout(
    State(st): State<AdminState>,
    Extension(admin): Extension<Admin>,
    headers: HeaderMap,
) -> Response {
    if let Admin::Browser { session, .. } = admin {
        st.auth.close_session(&session);
    }
    (
        [(header::SET_COOKIE, auth::set_cookie(None, &headers))],
        Redirect::to("/admin/login"),
    )
        .into_response()
}

/// `GET /admin`
pub async fn page(State(st): State<AdminState>, Extension(admin): Extension<Admin>) -> Response {
    let overview = match Overview::gather(&st.hub).await {
        Ok(o) => o,
        Err(e) => return ApiError::Store(e).into_response(),
    };
    let (csrf, flash) = match &admin {
        Admin::Browser { session, csrf } => (csrf.clone(), st.auth.take_flash(session)),
        Admin::Bearer => (String::new(), None),
    };
    let body = html! {
        header.top {
            h1 { "switchboard admin" }
            p #live-state role="status" { "Showing the state when the page was loaded; reload for news." }
            form method="post" action="/admin/logout" {
                input type="hidden" name="csrf" value=(csrf);
                button #sign-out type="submit" { "Sign out" }
            }
        }
        @if let Some(f) = &flash {
            div class={ "flash " (if f.ok { "ok" } else { "error" }) } role="status" {
                p { (f.text) }
                @if !f.details.is_empty() {
                    ul { @for d in &f.details { li { (d) } } }
                }
            }
        }
        main #live { (live(&overview, &csrf)) }
    };
    respond(StatusCode::OK, layout("switchboard admin", true, body))
}

/// `GET /admin/events`: the live part whenever it changed, until the
/// client goes or switchboard stops.
pub async fn events(
    State(st): State<AdminState>,
    Extension(admin): Extension<Admin>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let csrf = match admin {
        Admin::Browser { csrf, .. } => csrf,
        Admin::Bearer => String::new(),
    };
    let shutdown = st.hub.shutdown.clone();
    let state = (st, csrf, String::new(), shutdown, true);
    let stream = futures_util::stream::unfold(
        state,
        |(st, csrf, mut last, mut shutdown, first)| async move {
            let mut first = first;
            loop {
                if !std::mem::take(&mut first) {
                    tokio::select! {
                        () = tokio::time::sleep(LIVE_TICK) => {}
                        _ = shutdown.wait_for(|s| *s) => return None,
                    }
                }
                if *shutdown.borrow() {
                    return None;
                }
                let Ok(overview) = Overview::gather(&st.hub).await else {
                    continue;
                };
                // The first render always goes out: the page learns it is
                // live, and gets what changed since it was served.
                let html = live(&overview, &csrf).into_string();
                if html == last {
                    continue;
                }
                last.clone_from(&html);
                let ev = SseEvent::default().event("live").data(html);
                return Some((Ok(ev), (st, csrf, last, shutdown, false)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// How long ago `ms` was, in words that change rarely.
#[must_use]
pub fn ago(now_ms: i64, ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..=59 => "under a minute".to_owned(),
        60..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86_400),
    }
}

/// A Unix ms time as people read it, in UTC.
#[must_use]
pub fn clock(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

fn badge(state: &str) -> Markup {
    let class = match state {
        "up" => "badge up",
        "paused" | "starting" | "rate_limited" | "degraded" => "badge warn",
        _ => "badge down",
    };
    html! { span class=(class) { (state.replace('_', " ")) } }
}

fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// The part of the page that live updates replace.
#[must_use]
pub fn live(o: &Overview, csrf: &str) -> Markup {
    let mut dead_accounts: Vec<&str> = o.dead_letters.iter().map(|d| d.account.as_str()).collect();
    dead_accounts.dedup();
    html! {
        section aria-labelledby="accounts-h" {
            h2 #accounts-h { "Accounts" }
            table {
                thead { tr {
                    th scope="col" { "Account" } th scope="col" { "State" } th scope="col" { "Since" }
                    th scope="col" { "Last error" } th scope="col" { "Restarts" } th scope="col" { "Delivery" }
                } }
                tbody {
                    @for a in &o.accounts {
                        tr data-account=(a.account) {
                            th scope="row" { (a.account) }
                            td data-state=(a.state) { (badge(a.state)) }
                            td { time datetime=(clock(a.since_ms)) { (ago(o.now_ms, a.since_ms)) " ago" } }
                            td { (a.last_error.as_deref().unwrap_or("–")) }
                            td { (a.restarts) }
                            td {
                                @let paused = a.state == "paused";
                                form method="post" action={ "/admin/accounts/" (a.account) (if paused { "/resume" } else { "/pause" }) } {
                                    (csrf_field(csrf))
                                    button type="submit" id={ (if paused { "resume-" } else { "pause-" }) (a.account.replace('.', "-")) } {
                                        (if paused { "Resume" } else { "Pause" })
                                        span.vh { " " (a.account) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="queues-h" {
            h2 #queues-h { "Queues" }
            @if o.queues.is_empty() {
                p #queues-empty { "Nothing is waiting: every destination is caught up." }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { "Account" } th scope="col" { "Destination" }
                        th scope="col" { "Waiting" } th scope="col" { "Oldest waits for" }
                        th scope="col" { "Last error" }
                    } }
                    tbody {
                        @for q in &o.queues {
                            tr {
                                th scope="row" { (q.account) } td { (q.channel) } td { (q.pending) }
                                td { (ago(o.now_ms, q.oldest_ms)) } td { (q.last_error.as_deref().unwrap_or("–")) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="dead-h" {
            h2 #dead-h { "Dead letters" }
            @if o.dead_letters.is_empty() {
                p #dead-empty { "No dead letters." }
            } @else {
                p { "Messages that will not be delivered unless you requeue them. A requeued message goes back to its old place in its queue when nothing after it was delivered yet, otherwise to the end." }
                @for account in &dead_accounts {
                    form.inline method="post" action="/admin/dead-letters/requeue-account" {
                        (csrf_field(csrf))
                        input type="hidden" name="account" value=(account);
                        button type="submit" id={ "requeue-all-" (account.replace('.', "-")) } { "Requeue all of " (account) }
                    }
                    form.inline method="post" action="/admin/dead-letters/drop-account" {
                        (csrf_field(csrf))
                        input type="hidden" name="account" value=(account);
                        button.danger type="submit" id={ "drop-all-" (account.replace('.', "-")) } { "Drop all of " (account) }
                    }
                }
                table #dead-letters {
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Destination" } th scope="col" { "Gateway" }
                        th scope="col" { "Message" } th scope="col" { "Reason" } th scope="col" { "Died" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for d in &o.dead_letters {
                            tr data-dead=(d.id) {
                                th scope="row" { (d.id) }
                                td { (d.account) " " (d.channel) }
                                td { (d.gateway) }
                                td { (d.kind) @if !d.preview.is_empty() { ": " q { (d.preview) } } }
                                td { (d.reason) }
                                td { (ago(o.now_ms, d.died_ms)) " ago" }
                                td {
                                    form.inline method="post" action={ "/admin/dead-letters/" (d.id) "/requeue" } {
                                        (csrf_field(csrf))
                                        button type="submit" id={ "requeue-" (d.id) } { "Requeue" span.vh { " dead letter " (d.id) } }
                                    }
                                    form.inline method="post" action={ "/admin/dead-letters/" (d.id) "/drop" } {
                                        (csrf_field(csrf))
                                        button.danger type="submit" id={ "drop-" (d.id) } { "Drop" span.vh { " dead letter " (d.id) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="gateways-h" {
            h2 #gateways-h { "Gateways" }
            @for g in &o.gateways { (gateway(o.now_ms, g)) }
        }
        section aria-labelledby="reload-h" {
            h2 #reload-h { "Configuration" }
            form method="post" action="/admin/reload" {
                (csrf_field(csrf))
                button #reload type="submit" { "Reload the configuration" }
            }
        }
    }
}

fn gateway(now_ms: i64, g: &GatewayView) -> Markup {
    html! {
        h3 { (g.name) }
        p.hint {
            @if g.source == "chats" { "Linked from the chats." } @else { "From the configuration file." }
            @if g.status_page { " Public status page: " a href={ "/status/" (g.name) } { "/status/" (g.name) } "." }
        }
        table data-gateway=(g.name) {
            thead { tr {
                th scope="col" { "Member" } th scope="col" { "Channel" } th scope="col" { "Direction" }
                th scope="col" { "Health" } th scope="col" { "Since" } th scope="col" { "What is wrong" }
            } }
            tbody {
                @for m in &g.members {
                    tr data-member={ (m.account) " " (m.channel) } {
                        th scope="row" { (m.network) " (" (m.account) ")" }
                        td {
                            (m.channel)
                            @if let Some(l) = &m.linked { br; small { "linked by " (l.by) ", " (ago(now_ms, l.at_ms)) " ago" } }
                        }
                        td { (m.direction) }
                        td data-state=(m.state) { (badge(m.state)) }
                        td { @if let Some(s) = m.since_ms { (ago(now_ms, s)) } @else { "–" } }
                        td { (m.error.as_deref().unwrap_or("–")) }
                    }
                }
            }
        }
    }
}

fn back(st: &AdminState, admin: &Admin, flash: Flash) -> Response {
    if let Admin::Browser { session, .. } = admin {
        st.auth.flash(session, flash);
    }
    Redirect::to("/admin").into_response()
}

fn failed(e: &ApiError) -> Flash {
    Flash {
        ok: false,
        text: e.to_string(),
        details: Vec::new(),
    }
}

/// `POST /admin/accounts/{account}/pause` and `/resume`.
pub async fn pause_form(
    State(st): State<AdminState>,
    Extension(admin): Extension<Admin>,
    Path((account, verb)): Path<(String, String)>,
) -> Response {
    let paused = match verb.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return super::api::not_found().await,
    };
    let flash = match super::api::pause_account(&st.hub, &account, paused).await {
        Ok(()) => Flash {
            ok: true,
            text: format!(
                "{account}: delivery {}.",
                if paused { "paused" } else { "resumed" }
            ),
            details: Vec::new(),
        },
        Err(e) => failed(&e),
    };
    back(&st, &admin, flash)
}

/// `POST /admin/dead-letters/{id}/requeue` and `/drop`.
pub async fn dead_letter_form(
    State(st): State<AdminState>,
    Extension(admin): Extension<Admin>,
    Path((id, verb)): Path<(String, String)>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return super::api::not_found().await;
    };
    let flash = match verb.as_str() {
        "requeue" => match super::api::requeue_ids(&st.hub, &[id]).await {
            Ok(r) => requeued_flash(&r),
            Err(e) => failed(&e),
        },
        "drop" => match super::api::drop_ids(&st.hub, &[id]).await {
            Ok(_) => Flash {
                ok: true,
                text: format!("Dead letter {id} dropped."),
                details: Vec::new(),
            },
            Err(e) => failed(&e),
        },
        _ => return super::api::not_found().await,
    };
    back(&st, &admin, flash)
}

fn requeued_flash(r: &super::api::RequeueReport) -> Flash {
    Flash {
        ok: true,
        text: format!("{} dead letter(s) requeued.", r.requeued.len()),
        details: r
            .requeued
            .iter()
            .map(|q| match q.placement {
                crate::store::dead_letters::Placement::InPlace => {
                    format!("{}: back in its old place", q.id)
                }
                crate::store::dead_letters::Placement::AtEnd => {
                    format!("{}: at the end of its queue, as {}", q.id, q.new_id)
                }
            })
            .collect(),
    }
}

/// The bulk forms' fields.
#[derive(Debug, Deserialize)]
pub struct AccountForm {
    account: String,
}

/// `POST /admin/dead-letters/requeue-account` and `drop-account`.
pub async fn dead_letters_account_form(
    State(st): State<AdminState>,
    Extension(admin): Extension<Admin>,
    Path(verb): Path<String>,
    Form(form): Form<AccountForm>,
) -> Response {
    let flash = match verb.as_str() {
        "requeue-account" => match super::api::requeue_account(&st.hub, &form.account).await {
            Ok(r) => requeued_flash(&r),
            Err(e) => failed(&e),
        },
        "drop-account" => match super::api::drop_account(&st.hub, &form.account).await {
            Ok(r) => Flash {
                ok: true,
                text: format!("{} dead letter(s) of {} dropped.", r.dropped, form.account),
                details: Vec::new(),
            },
            Err(e) => failed(&e),
        },
        _ => return super::api::not_found().await,
    };
    back(&st, &admin, flash)
}

/// `POST /admin/reload`
pub async fn reload_form(
    State(st): State<AdminState>,
    Extension(admin): Extension<Admin>,
) -> Response {
    let flash = match st.hub.reload().await {
        Ok(r) => {
            let mut details = vec![format!("Gateways: {}", list(&r.gateways))];
            for (what, v) in [
                ("Accounts started", &r.added_accounts),
                ("Accounts restarted", &r.restarted_accounts),
                ("Accounts stopped", &r.removed_accounts),
                (
                    "Destinations removed (queues dead-lettered)",
                    &r.removed_destinations,
                ),
                ("Changed but need a restart", &r.needs_restart),
            ] {
                if !v.is_empty() {
                    details.push(format!("{what}: {}", list(v)));
                }
            }
            Flash {
                ok: true,
                text: "The configuration was reloaded.".into(),
                details,
            }
        }
        Err(e) => Flash {
            ok: false,
            text: "Nothing changed: the configuration has errors.".into(),
            details: e.0.iter().map(ToString::to_string).collect(),
        },
    };
    back(&st, &admin, flash)
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
