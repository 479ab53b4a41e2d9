//! The request pipeline: faults → token endpoint or (bearer check → 7 req/s limit → route) → record.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use b24emu::Clock;
use chrono::Offset;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::EmulatorConfig;
use crate::record::{AuthKind, Fault, Popup, RecordedRequest};
use crate::state::{Account, Tokens};

/// Request bodies above this are refused (the API takes batches of ≤ 250 small items).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// An answer before it becomes HTTP.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// `application/hal+json` (successes).
    Hal(u16, Value),
    /// `application/json` (the token endpoint, `202 {}` of the events API).
    Json(u16, Value),
    /// `application/problem+json`.
    Problem(u16, Value),
    /// 204 without a body.
    Empty,
    /// A non-JSON page (the 403 block, 429).
    Text(u16, &'static str, &'static str),
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Hal(s, _) | Answer::Json(s, _) | Answer::Problem(s, _) | Answer::Text(s, _, _) => *s,
            Answer::Empty => 204,
        }
    }

    fn recorded(&self) -> Value {
        match self {
            Answer::Hal(_, v) | Answer::Json(_, v) | Answer::Problem(_, v) => v.clone(),
            Answer::Empty => Value::Null,
            Answer::Text(_, _, body) => Value::String((*body).to_owned()),
        }
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            Answer::Hal(_, v) => {
                (status, [(header::CONTENT_TYPE, "application/hal+json")], v.to_string()).into_response()
            }
            Answer::Json(_, v) => (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
            Answer::Problem(_, v) => (
                status,
                [(header::CONTENT_TYPE, "application/problem+json")],
                v.to_string(),
            )
                .into_response(),
            Answer::Empty => status.into_response(),
            Answer::Text(_, content_type, body) => {
                (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
            }
        }
    }
}

/// A problem+JSON answer in the documented shape (`type` points at httpstatus.es).
pub(crate) fn problem(status: u16, title: &str, detail: &str) -> Answer {
    Answer::Problem(
        status,
        json!({"title": title, "type": format!("https://httpstatus.es/{status}"), "status": status, "detail": detail}),
    )
}

/// 400 with `validation-errors` for the item at `index` of a batch.
pub(crate) fn validation(index: usize, code: &str, path: &str, detail: &str) -> Answer {
    Answer::Problem(
        400,
        json!({
            "title": "Bad Request",
            "type": "https://httpstatus.es/400",
            "status": 400,
            "detail": "Request validation failed",
            "validation-errors": [{"request_id": index.to_string(), "errors": [{"code": code, "path": path, "detail": detail}]}],
        }),
    )
}

pub(crate) struct World {
    pub account: Account,
    pub tokens: Tokens,
    pub popups: Vec<Popup>,
}

pub(crate) struct Core {
    pub cfg: EmulatorConfig,
    pub clock: Clock,
    world: Mutex<World>,
    log: Mutex<Vec<RecordedRequest>>,
    seq: AtomicU64,
    fault: Mutex<Option<Fault>>,
    /// Send times of accepted requests per integration, the last second's worth.
    window: Mutex<HashMap<&'static str, VecDeque<Instant>>>,
    pub down_tx: watch::Sender<bool>,
    pub base_url: OnceLock<String>,
    /// The pair the integration holds at start: (access, refresh).
    pub initial: (String, String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves plain data behind; it is still usable for a test double.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Incoming request as the routes see it.
pub(crate) struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub body: &'a Value,
}

impl Incoming<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Core {
    pub fn new(cfg: EmulatorConfig) -> Self {
        let start = cfg
            .clock_start
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .unwrap_or_else(chrono::Utc::now);
        // amoCRM speaks Unix seconds only; the offset is for nothing but the shared clock's local view.
        let clock = Clock::new(start, cfg.clock_frozen, chrono::Utc.fix());
        let now = clock.now().timestamp();
        let mut tokens = Tokens::default();
        let account = Account::from_config(&cfg, now);
        // An installed integration starts with a pair, as after the first code exchange.
        let (access, refresh) = tokens.issue_pair(now, &cfg);
        Core {
            world: Mutex::new(World {
                account,
                tokens,
                popups: Vec::new(),
            }),
            cfg,
            clock,
            log: Mutex::new(Vec::new()),
            seq: AtomicU64::new(1),
            fault: Mutex::new(None),
            window: Mutex::new(HashMap::new()),
            down_tx: watch::channel(false).0,
            base_url: OnceLock::new(),
            initial: (access, refresh),
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    pub fn base(&self) -> &str {
        self.base_url.get().map_or("", String::as_str)
    }

    pub fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    pub fn fault(&self) -> Option<Fault> {
        lock(&self.fault).clone()
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        let down = fault == Some(Fault::Down);
        *lock(&self.fault) = fault;
        self.down_tx.send_replace(down);
    }

    pub fn reset_rate_window(&self) {
        lock(&self.window).clear();
    }

    /// Counts a request against its integration's per-second budget; false when it is over.
    fn within_rate(&self, integration: &'static str) -> bool {
        let now = Instant::now();
        let mut window = lock(&self.window);
        let sent = window.entry(integration).or_default();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t).as_secs_f64() >= 1.0)
        {
            sent.pop_front();
        }
        if sent.len() >= self.cfg.rate_limit_per_sec as usize {
            return false;
        }
        sent.push_back(now);
        true
    }

    /// Which token this is, if the account accepts it now.
    fn bearer(&self, header: Option<&str>) -> AuthKind {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
            return AuthKind::None;
        };
        let now = self.now();
        if self.cfg.long_lived_token.as_deref() == Some(token) {
            return if now < self.cfg.long_lived_expires_at {
                AuthKind::LongLived
            } else {
                AuthKind::Refused
            };
        }
        match self.world().tokens.access.get(token) {
            Some(t) if now < t.expires_at => AuthKind::OAuth,
            _ => AuthKind::Refused,
        }
    }
}

/// The emulated account, and the control API under `/_emu` (not recorded, not subject to faults).
pub(crate) fn router(core: Arc<Core>) -> Router {
    Router::new()
        .nest("/_emu", crate::control::router())
        .fallback(entry)
        .with_state(core)
}

/// The control API alone, for a port that stays open while [`Fault::Down`] closes the account's.
pub(crate) fn control_router(core: Arc<Core>) -> Router {
    Router::new().nest("/_emu", crate::control::router()).with_state(core)
}

async fn entry(State(core): State<Arc<Core>>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seq = core.seq.fetch_add(1, Ordering::Relaxed);
    let (body, body_error) = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
        Ok(bytes) if bytes.is_empty() => (Value::Null, None),
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => (v, None),
            Err(e) => (
                Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                Some(format!("body is not JSON: {e}")),
            ),
        },
        Err(e) => (Value::Null, Some(format!("unreadable body: {e}"))),
    };
    let arrived_micros = chrono::Utc::now().timestamp_micros();
    let mut auth = AuthKind::None;
    let answer = 'answer: {
        match core.fault() {
            Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
            Some(Fault::IpBlocked) => {
                break 'answer Answer::Text(
                    403,
                    "text/html",
                    "<html><head><title>403 Forbidden</title></head><body><center><h1>403 Forbidden</h1></center><hr><center>nginx</center></body></html>",
                )
            }
            Some(Fault::ServerError(status)) => break 'answer problem(status, "Internal Server Error", "An unknown error occurred."),
            _ => {}
        }
        if let Some(detail) = body_error {
            break 'answer problem(400, "Bad Request", &detail);
        }
        if path == "/oauth2/access_token" {
            if method != "POST" {
                break 'answer problem(405, "Method Not Allowed", "Use POST");
            }
            break 'answer crate::oauth::token(&core, &body);
        }
        auth = core.bearer(authorization.as_deref());
        let integration = match auth {
            AuthKind::OAuth => "oauth",
            AuthKind::LongLived => "long_lived",
            AuthKind::None | AuthKind::Refused => {
                break 'answer problem(401, "Unauthorized", "Неверный логин или пароль");
            }
        };
        if core.fault() == Some(Fault::RateLimitStorm) || !core.within_rate(integration) {
            break 'answer Answer::Text(429, "text/plain", "Too Many Requests");
        }
        let incoming = Incoming {
            method: &method,
            path: &path,
            query: &query,
            body: &body,
        };
        crate::api::route(&core, &incoming, seq)
    };
    lock(&core.log).push(RecordedRequest {
        seq,
        at: core.now(),
        arrived_micros,
        method,
        path,
        query,
        body,
        auth,
        status: answer.status(),
        response: answer.recorded(),
    });
    answer.into_response()
}
