//! Control API under `/_emu/` (JSON), so a separate process under test can be driven and inspected:
//!
//! | route | what |
//! |---|---|
//! | `GET /_emu/requests?since=N&path=P`, `DELETE /_emu/requests` | recorded requests (after `seq` N, to path P) |
//! | `GET /_emu/popups` | accepted call popups |
//! | `GET /_emu/state` | users, pipelines, contacts, leads, calls, unsorted, tasks |
//! | `GET /_emu/credentials` | the account's base URL, integration, initial tokens, long-lived token |
//! | `POST /_emu/authorization_code` | a fresh one-time code (the consent redirect) |
//! | `GET /_emu/fault`, `POST /_emu/fault` (body: a fault), `DELETE /_emu/fault` | faults |
//! | `GET /_emu/clock`, `POST /_emu/clock` (`{"advance_secs":60}`, `{"set":1700000000}`, `{"frozen":true}`) | clock |
//! | `POST /_emu/limits/reset` | forget the requests counted against the rate limit |
//!
//! A fault is `{"kind":"down"}`, `{"kind":"server_error","status":503}`, `{"kind":"rate_limit_storm"}`,
//! `{"kind":"ip_blocked"}` or `{"kind":"slow","ms":500}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::record::Fault;
use crate::server::Core;

/// The routes, to be nested under `/_emu`.
pub(crate) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/requests", get(requests).delete(clear_requests))
        .route("/popups", get(popups))
        .route("/state", get(state))
        .route("/credentials", get(credentials))
        .route("/authorization_code", post(authorization_code))
        .route("/fault", get(fault).post(set_fault).put(set_fault).delete(clear_fault))
        .route("/clock", get(clock).post(set_clock))
        .route("/limits/reset", post(reset_limits))
}

/// The JSON form of a [`Fault`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultSpec {
    Down,
    ServerError { status: u16 },
    RateLimitStorm,
    IpBlocked,
    Slow { ms: u64 },
}

impl FaultSpec {
    /// The fault it names; `None` for a server error outside 500–599.
    pub fn fault(&self) -> Option<Fault> {
        Some(match self {
            FaultSpec::Down => Fault::Down,
            FaultSpec::ServerError { status } if (500..600).contains(status) => Fault::ServerError(*status),
            FaultSpec::ServerError { .. } => return None,
            FaultSpec::RateLimitStorm => Fault::RateLimitStorm,
            FaultSpec::IpBlocked => Fault::IpBlocked,
            FaultSpec::Slow { ms } => Fault::Slow(Duration::from_millis(*ms)),
        })
    }

    pub fn of(fault: &Fault) -> Self {
        match fault {
            Fault::Down => FaultSpec::Down,
            Fault::ServerError(status) => FaultSpec::ServerError { status: *status },
            Fault::RateLimitStorm => FaultSpec::RateLimitStorm,
            Fault::IpBlocked => FaultSpec::IpBlocked,
            Fault::Slow(d) => FaultSpec::Slow {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message.into()}))).into_response()
}

#[derive(Deserialize)]
struct RequestsQuery {
    since: Option<u64>,
    path: Option<String>,
}

async fn requests(State(core): State<Arc<Core>>, Query(q): Query<RequestsQuery>) -> Response {
    let list: Vec<_> = core
        .requests()
        .into_iter()
        .filter(|r| q.since.map_or(true, |s| r.seq > s))
        .filter(|r| q.path.as_ref().map_or(true, |p| &r.path == p))
        .collect();
    Json(list).into_response()
}

async fn clear_requests(State(core): State<Arc<Core>>) -> Response {
    core.clear_requests();
    Json(json!({"ok": true})).into_response()
}

async fn popups(State(core): State<Arc<Core>>) -> Response {
    Json(core.world().popups.clone()).into_response()
}

async fn state(State(core): State<Arc<Core>>) -> Response {
    Json(core.world().account.snapshot()).into_response()
}

async fn credentials(State(core): State<Arc<Core>>) -> Response {
    let (access, refresh) = core.initial.clone();
    Json(json!({
        "base_url": core.base(),
        "subdomain": core.cfg.subdomain,
        "client_id": core.cfg.client_id,
        "client_secret": core.cfg.client_secret,
        "redirect_uri": core.cfg.redirect_uri,
        "access_token": access,
        "refresh_token": refresh,
        "long_lived_token": core.cfg.long_lived_token,
    }))
    .into_response()
}

async fn authorization_code(State(core): State<Arc<Core>>) -> Response {
    Json(json!({"code": crate::oauth::issue_code(&core)})).into_response()
}

async fn fault(State(core): State<Arc<Core>>) -> Response {
    Json(json!({"fault": core.fault().as_ref().map(FaultSpec::of)})).into_response()
}

async fn set_fault(State(core): State<Arc<Core>>, body: String) -> Response {
    let spec: FaultSpec = match serde_json::from_str(&body) {
        Ok(spec) => spec,
        Err(e) => return bad_request(format!("invalid fault: {e}")),
    };
    let Some(fault) = spec.fault() else {
        return bad_request("a server_error status is 500–599");
    };
    core.set_fault(Some(fault));
    Json(json!({"fault": spec})).into_response()
}

async fn clear_fault(State(core): State<Arc<Core>>) -> Response {
    core.set_fault(None);
    Json(json!({"fault": null})).into_response()
}

fn clock_body(core: &Core) -> serde_json::Value {
    json!({"unix": core.clock.now().timestamp(), "frozen": core.clock.is_frozen()})
}

async fn clock(State(core): State<Arc<Core>>) -> Response {
    Json(clock_body(&core)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    advance_secs: Option<u64>,
    /// Unix seconds.
    set: Option<i64>,
    frozen: Option<bool>,
}

async fn set_clock(State(core): State<Arc<Core>>, body: String) -> Response {
    let change: ClockChange = match serde_json::from_str(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("invalid clock change: {e}")),
    };
    if let Some(unix) = change.set {
        let Some(to) = DateTime::from_timestamp(unix, 0) else {
            return bad_request(format!("set = {unix} is no instant"));
        };
        core.clock.set(to);
    }
    if let Some(secs) = change.advance_secs {
        core.clock.advance(Duration::from_secs(secs));
    }
    if let Some(frozen) = change.frozen {
        core.clock.set_frozen(frozen);
    }
    Json(clock_body(&core)).into_response()
}

async fn reset_limits(State(core): State<Arc<Core>>) -> Response {
    core.reset_rate_window();
    Json(json!({"ok": true})).into_response()
}
