//! The public status page of a gateway (`status_page = true`):
//! `GET /status/{gateway}`, no token. It says which of the gateway's
//! networks are up, since when each one that is not is down, and where the
//! conversation goes on (the members' `invite` links). It names no channel
//! ids, accounts, errors or webhooks: only what people of the community
//! need, and what the gateway's configuration gives them to share.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::page::{ago, clock, layout, respond};
use super::view;
use super::AdminState;

/// `GET /status/{gateway}`
pub async fn page(State(st): State<AdminState>, Path(name): Path<String>) -> Response {
    let hub = &st.hub;
    let accounts = hub.account_states();
    let outages = hub.outbox.outages();
    let gateways = view::gateways(hub, &accounts, &outages);
    let Some(g) = gateways.iter().find(|g| g.name == name && g.status_page) else {
        return respond(
            StatusCode::NOT_FOUND,
            layout(
                "Not found",
                false,
                html! { main.narrow { h1 { "No status page here" } p { "This gateway has no public status page." } } },
            ),
        );
    };
    let now = crate::store::now_ms();
    // Members only (webhooks are bots' plumbing), as configured.
    let members: Vec<&view::MemberView> = g
        .members
        .iter()
        .filter(|m| m.network != "Webhook")
        .collect();
    // A network pacing us still carries the conversation; a paused one
    // keeps its messages for later, like one that is down.
    let up = |m: &view::MemberView| matches!(m.state, "up" | "rate_limited");
    let down = members.iter().filter(|m| !up(m)).count();
    let title = format!("{}: status", g.name);
    let body = html! {
        main.narrow {
            h1 { (title) }
            p #summary role="status" {
                @if down == 0 { "Every network of this conversation is up." }
                @else { (down) " of " (members.len()) " networks of this conversation are not reachable right now. Messages to them are kept and delivered when they are back." }
            }
            ul.networks {
                @for m in &members {
                    li data-state=(m.state) {
                        strong { (m.network) }
                        ": "
                        @if up(m) {
                            span.badge.up { "up" }
                        } @else if m.state == "paused" {
                            span.badge.warn { "paused for maintenance" }
                            " since " time datetime=(clock(m.since_ms.unwrap_or(now))) { (clock(m.since_ms.unwrap_or(now))) }
                        } @else {
                            span.badge.down { "down" }
                            " since " time datetime=(clock(m.since_ms.unwrap_or(now))) { (clock(m.since_ms.unwrap_or(now))) }
                            " (" (ago(now, m.since_ms.unwrap_or(now))) ")"
                        }
                        @if let Some(link) = &m.invite {
                            " · " a href=(link) rel="nofollow noopener" { "Join the conversation on " (m.network) }
                        }
                    }
                }
            }
            p.hint { "As of " (clock(now)) ". Reload the page for the latest." }
        }
    };
    respond(StatusCode::OK, layout(&title, false, body))
}
