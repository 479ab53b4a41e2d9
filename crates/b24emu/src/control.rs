//! Control API under `/_emu/` (JSON), so a separate process under test can be driven and inspected:
//!
//! | route | what |
//! |---|---|
//! | `GET /_emu/requests?since=N&method=M`, `DELETE /_emu/requests` | recorded requests |
//! | `GET /_emu/timeline` | call-card timeline |
//! | `GET /_emu/state` | users, CRM, calls, activities, tasks, lines, handlers, files |
//! | `GET /_emu/files/{id}` | content of a stored record |
//! | `GET /_emu/deliveries` | event deliveries |
//! | `GET /_emu/credentials` | app credentials and webhook URL |
//! | `GET /_emu/fault`, `POST /_emu/fault?for_ms=N` (body: a `Fault`), `DELETE /_emu/fault` | faults |
//! | `GET /_emu/clock`, `POST /_emu/clock` (`{"advance_secs":60}`, `{"set":"…"}`, `{"frozen":true}`) | clock |
//! | `POST /_emu/click_to_call` (a `ClickToCall`) | user clicks a number → `ONEXTERNALCALLSTART` |
//! | `POST /_emu/events` (`{"event":"…","data":{…},"user_id":1}`) | emit any known event |
//! | `POST /_emu/limits/reset` | empty the leaky bucket |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::DateTime;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::Core;
use crate::delivery::{self, ClickToCall};
use crate::fault::Fault;

pub(crate) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/requests", get(requests).delete(clear_requests))
        .route("/timeline", get(timeline))
        .route("/state", get(state))
        .route("/files/:id", get(file))
        .route("/deliveries", get(deliveries))
        .route("/credentials", get(credentials))
        .route("/fault", get(fault).post(set_fault).put(set_fault).delete(clear_fault))
        .route("/clock", get(clock).post(set_clock))
        .route("/click_to_call", post(click_to_call))
        .route("/events", post(emit_event))
        .route("/limits/reset", post(reset_limits))
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message.into()}))).into_response()
}

#[derive(Deserialize)]
struct RequestsQuery {
    since: Option<u64>,
    method: Option<String>,
}

async fn requests(State(core): State<Arc<Core>>, Query(q): Query<RequestsQuery>) -> Response {
    let method = q.method.map(|m| m.to_ascii_lowercase());
    let list: Vec<_> = core
        .requests()
        .into_iter()
        .filter(|r| q.since.map_or(true, |s| r.seq > s))
        .filter(|r| method.as_ref().map_or(true, |m| &r.method == m))
        .collect();
    Json(list).into_response()
}

async fn clear_requests(State(core): State<Arc<Core>>) -> Response {
    core.clear_requests();
    Json(json!({"ok": true})).into_response()
}

async fn timeline(State(core): State<Arc<Core>>) -> Response {
    Json(core.world().timeline.clone()).into_response()
}

async fn state(State(core): State<Arc<Core>>) -> Response {
    Json(core.world().portal.snapshot()).into_response()
}

async fn file(State(core): State<Arc<Core>>, Path(id): Path<u64>) -> Response {
    let w = core.world();
    match w.portal.files.get(&id) {
        Some(f) => ([(header::CONTENT_TYPE, "application/octet-stream")], f.content.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such file"}))).into_response(),
    }
}

async fn deliveries(State(core): State<Arc<Core>>) -> Response {
    Json(core.deliveries()).into_response()
}

async fn credentials(State(core): State<Arc<Core>>) -> Response {
    Json(json!({
        "app": crate::app_credentials(&core),
        "webhook_url": crate::webhook_url(&core),
        "base_url": core.base_url(),
    }))
    .into_response()
}

async fn fault(State(core): State<Arc<Core>>) -> Response {
    Json(json!({"fault": core.fault(), "counts": core.fault_counts()})).into_response()
}

#[derive(Deserialize)]
struct FaultQuery {
    for_ms: Option<u64>,
}

async fn set_fault(State(core): State<Arc<Core>>, Query(q): Query<FaultQuery>, body: String) -> Response {
    let fault: Fault = match serde_json::from_str(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid fault: {e}")),
    };
    core.apply_fault(Some(fault.clone()), q.for_ms.map(std::time::Duration::from_millis));
    Json(json!({"fault": fault})).into_response()
}

async fn clear_fault(State(core): State<Arc<Core>>) -> Response {
    core.apply_fault(None, None);
    Json(json!({"fault": null})).into_response()
}

fn clock_body(core: &Core) -> Value {
    json!({
        "now": crate::clock::format_date(core.clock.now_local()),
        "unix": core.clock.now().timestamp(),
        "frozen": core.clock.is_frozen(),
    })
}

async fn clock(State(core): State<Arc<Core>>) -> Response {
    Json(clock_body(&core)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    advance_secs: Option<f64>,
    set: Option<String>,
    frozen: Option<bool>,
}

async fn set_clock(State(core): State<Arc<Core>>, body: String) -> Response {
    let change: ClockChange = match serde_json::from_str(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("invalid clock change: {e}")),
    };
    if let Some(frozen) = change.frozen {
        core.clock.set_frozen(frozen);
    }
    if let Some(set) = change.set {
        match DateTime::parse_from_rfc3339(&set) {
            Ok(t) => core.clock.set(t.with_timezone(&chrono::Utc)),
            Err(e) => return bad_request(format!("invalid time {set:?}: {e}")),
        }
    }
    if let Some(secs) = change.advance_secs {
        if !(secs.is_finite() && secs >= 0.0) {
            return bad_request("advance_secs must be a non-negative number");
        }
        core.clock.advance(std::time::Duration::from_secs_f64(secs));
    }
    Json(clock_body(&core)).into_response()
}

async fn click_to_call(State(core): State<Arc<Core>>, body: String) -> Response {
    let click: ClickToCall = match serde_json::from_str(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("invalid click_to_call: {e}")),
    };
    match delivery::click_to_call(&core, click).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

#[derive(Deserialize)]
struct EmitRequest {
    event: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    user_id: Option<u64>,
}

async fn emit_event(State(core): State<Arc<Core>>, body: String) -> Response {
    let req: EmitRequest = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid event: {e}")),
    };
    let user = req.user_id.unwrap_or(core.cfg.app.user_id);
    match delivery::emit(&core, &req.event, req.data, user).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn reset_limits(State(core): State<Arc<Core>>) -> Response {
    core.world().bucket.reset();
    Json(json!({"ok": true})).into_response()
}
