//! ringlink's HTTP listener: Bitrix24 events (`POST /bitrix24/event`), the amoCRM telephony widget's clicks
//! (`POST /amocrm/click`) and auto-distribution for the dialplan's `CURL()`
//! (`GET /autodistribution?phone=…&call=…&token=…`).
//!
//! Every request passes, in order: the rate limit (a token bucket over all clients, one per endpoint with its own
//! size, so a flood of one never holds up the other, and a busy hour's simultaneous look-ups all get through; a flood gets 429 and never reaches the store, AMI or the CRM), the source
//! allow-list (when configured), the body size limit, and the token check in constant time
//! (`auth[application_token]` for events, `token` for the widget's clicks and auto-distribution). Nothing secret is echoed or logged: a
//! refused request is logged with its source and reason only. Auto-distribution answers are plain text — an
//! extension, or nothing — and a refusal has an empty body too, so the dialplan never dials an error message.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::autodist::AutoDistributor;
use crate::config::ListenerSettings;

/// The event handler's path under the listener.
pub const EVENT_PATH: &str = "/bitrix24/event";
/// The amoCRM widget's click-to-call path under the listener.
pub const AMOCRM_CLICK_PATH: &str = "/amocrm/click";
/// Auto-distribution's path under the listener.
pub const AUTODISTRIBUTION_PATH: &str = "/autodistribution";

/// An allowed source: one address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowRule {
    net: IpAddr,
    prefix: u8,
}

impl AllowRule {
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { net, prefix })
    }

    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Compares two secrets in time independent of where they differ (the length is not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token bucket shared by all clients.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// An event as Bitrix24 posts it: `event`, `data[…]`, `auth[…]`.
#[derive(Debug, Default)]
pub struct IncomingEvent {
    pub event: String,
    pub data: BTreeMap<String, String>,
    /// Told once the event is handled (offline events are cleared only then).
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Reads the form body; `Err` names what is wrong (never a value).
pub fn parse_event(body: &[u8]) -> Result<(IncomingEvent, Option<String>), &'static str> {
    let mut event = IncomingEvent::default();
    let mut token = None;
    for (k, v) in url::form_urlencoded::parse(body) {
        if k == "event" {
            event.event = v.trim().to_ascii_uppercase();
        } else if let Some(field) = k.strip_prefix("data[").and_then(|r| r.strip_suffix(']')) {
            event.data.insert(field.to_owned(), v.into_owned());
        } else if k == "auth[application_token]" {
            token = Some(v.into_owned());
        }
    }
    if event.event.is_empty() {
        return Err("no event name");
    }
    Ok((event, token))
}

/// A click of the amoCRM telephony widget whose token was right: its fields (`user_id`, `phone`, `line`,
/// `click_id`; see `engine::ClickToCall::from_amocrm`) and where its answer goes.
#[derive(Debug)]
pub struct WidgetClick {
    pub fields: BTreeMap<String, String>,
    /// The click's id when the widget sent no `click_id` (unique within this run).
    pub fallback_id: String,
    pub reply: oneshot::Sender<WidgetAnswer>,
}

/// What the widget is answered: a status and a JSON body (`{"status", "call_id"}` or `{"error"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct WidgetAnswer {
    pub status: u16,
    pub body: Value,
}

impl WidgetAnswer {
    pub fn accepted(status: &str, call_id: &str) -> Self {
        Self {
            status: 200,
            body: json!({"status": status, "call_id": call_id}),
        }
    }

    pub fn refused(status: u16, error: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": error.into()}),
        }
    }
}

/// Reads the widget's body: a JSON object, or a form (`user_id=…&phone=…`); every value as text, `token` apart.
/// `Err` names what is wrong (never a value).
pub fn parse_widget_click(body: &[u8]) -> Result<(BTreeMap<String, String>, Option<String>), &'static str> {
    let mut fields = BTreeMap::new();
    if matches!(body.trim_ascii_start().first(), Some(b'{' | b'[')) {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
            return Err("the body is not a JSON object");
        };
        for (k, v) in object {
            let text = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Null => continue,
                _ => return Err("a field is not text or a number"),
            };
            fields.insert(k, text);
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(body) {
            fields.insert(k.into_owned(), v.into_owned());
        }
    }
    let token = fields.remove("token");
    Ok((fields, token))
}

/// What the listener serves besides its security checks.
#[derive(Default)]
pub struct Endpoints {
    /// Click-to-call: the application token events must carry, and where accepted events go.
    pub events: Option<(String, mpsc::Sender<IncomingEvent>)>,
    /// Click-to-call from the amoCRM widget: the token its clicks must carry, and where they go.
    pub amocrm_clicks: Option<(String, mpsc::Sender<WidgetClick>)>,
    /// Auto-distribution, and the token its requests must carry (empty: `listener.allow` alone decides).
    pub autodistribution: Option<(Arc<AutoDistributor>, String)>,
}

struct Limit {
    bucket: Mutex<Bucket>,
    rate: f64,
    burst: f64,
}

impl Limit {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                tokens: f64::from(burst),
                at: Instant::now(),
            }),
            rate,
            burst: f64::from(burst),
        }
    }

    fn take(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct ListenerState {
    allow: Vec<AllowRule>,
    /// Numbers the widget's clicks that carry no `click_id`.
    clicks_seen: AtomicU64,
    events_limit: Limit,
    autodist_limit: Limit,
    endpoints: Endpoints,
}

impl ListenerState {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|r| r.matches(ip))
    }
}

async fn autodistribution(
    State(state): State<Arc<ListenerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<BTreeMap<String, String>>,
) -> (StatusCode, String) {
    let Some((autodist, token)) = &state.endpoints.autodistribution else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    if !state.autodist_limit.take() {
        debug!(%peer, "listener: auto-distribution rate limit reached, request refused");
        return (StatusCode::TOO_MANY_REQUESTS, String::new());
    }
    if !state.allowed(peer.ip()) {
        warn!(%peer, "listener: source address not in listener.allow, auto-distribution refused");
        return (StatusCode::FORBIDDEN, String::new());
    }
    if !token.is_empty() {
        let given = query.get("token").map(String::as_bytes).unwrap_or_default();
        if !constant_time_eq(given, token.as_bytes()) {
            warn!(%peer, "listener: auto-distribution request without the right token refused");
            return (StatusCode::UNAUTHORIZED, String::new());
        }
    }
    let Some(phone) = query.get("phone").filter(|p| !p.trim().is_empty()) else {
        warn!(%peer, "listener: auto-distribution request without phone=");
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let call = query.get("call").map(|c| c.trim()).filter(|c| !c.is_empty());
    let answer = autodist.answer(phone, call).await;
    (StatusCode::OK, answer.extension.unwrap_or_default())
}

async fn event(
    State(state): State<Arc<ListenerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some((application_token, events)) = &state.endpoints.events else {
        return (StatusCode::NOT_FOUND, "not found\n");
    };
    if !state.events_limit.take() {
        debug!(%peer, "listener: rate limit reached, request refused");
        return (StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
    }
    if !state.allowed(peer.ip()) {
        warn!(%peer, "listener: source address not in listener.allow, request refused");
        return (StatusCode::FORBIDDEN, "forbidden\n");
    }
    let (incoming, token) = match parse_event(&body) {
        Ok(parsed) => parsed,
        Err(why) => {
            warn!(%peer, why, "listener: not a Bitrix24 event");
            return (StatusCode::BAD_REQUEST, "not an event\n");
        }
    };
    let valid = token.is_some_and(|t| constant_time_eq(t.as_bytes(), application_token.as_bytes()));
    if !valid {
        warn!(%peer, event = %incoming.event, "listener: event without the right application token refused");
        return (StatusCode::UNAUTHORIZED, "unauthorized\n");
    }
    debug!(%peer, event = %incoming.event, "listener: event received");
    match events.try_send(incoming) {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy\n"),
    }
}

/// How long the widget's request waits for the click to be recorded.
const WIDGET_ANSWER_WAIT: Duration = Duration::from_secs(15);

/// The widget runs in the amoCRM page, another origin: its answers may be read from any origin (the token,
/// not a cookie, is what authorises a click).
fn widget_answer(answer: WidgetAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(answer.body)).into_response();
    response
        .headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

async fn amocrm_click_preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

async fn amocrm_click(
    State(state): State<Arc<ListenerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let Some((token, clicks)) = &state.endpoints.amocrm_clicks else {
        return widget_answer(WidgetAnswer::refused(
            404,
            "click-to-call from amoCRM is not configured",
        ));
    };
    if !state.events_limit.take() {
        debug!(%peer, "listener: rate limit reached, amoCRM click refused");
        return widget_answer(WidgetAnswer::refused(429, "too many requests"));
    }
    if !state.allowed(peer.ip()) {
        warn!(%peer, "listener: source address not in listener.allow, amoCRM click refused");
        return widget_answer(WidgetAnswer::refused(403, "this address may not click to call"));
    }
    let (fields, given) = match parse_widget_click(&body) {
        Ok(parsed) => parsed,
        Err(why) => {
            warn!(%peer, why, "listener: not an amoCRM click");
            return widget_answer(WidgetAnswer::refused(400, why));
        }
    };
    if !given.is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
        warn!(%peer, "listener: amoCRM click without the right token refused");
        return widget_answer(WidgetAnswer::refused(
            401,
            "token missing or wrong: enter click_to_call.application_token in the widget's settings",
        ));
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let seen = state.clicks_seen.fetch_add(1, Ordering::Relaxed);
    let (reply, answer) = oneshot::channel();
    let click = WidgetClick {
        fields,
        fallback_id: format!("{millis}-{seen}"),
        reply,
    };
    debug!(%peer, "listener: amoCRM click received");
    if clicks.try_send(click).is_err() {
        return widget_answer(WidgetAnswer::refused(503, "busy: try again"));
    }
    match tokio::time::timeout(WIDGET_ANSWER_WAIT, answer).await {
        Ok(Ok(answer)) => widget_answer(answer),
        _ => widget_answer(WidgetAnswer::refused(503, "the click was not taken in time: try again")),
    }
}

/// Serves `endpoints` until `stop`.
pub async fn serve(
    settings: ListenerSettings,
    endpoints: Endpoints,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = settings
        .bind
        .parse()
        .map_err(|_| anyhow::anyhow!("listener.bind {:?} is not ip:port", settings.bind))?;
    let allow = settings.allow.iter().filter_map(|a| AllowRule::parse(a)).collect();
    let state = Arc::new(ListenerState {
        allow,
        clicks_seen: AtomicU64::new(0),
        events_limit: events_limit(&settings),
        autodist_limit: autodist_limit(&settings),
        endpoints,
    });
    let app = Router::new()
        .route(EVENT_PATH, post(event))
        .route(AMOCRM_CLICK_PATH, post(amocrm_click).options(amocrm_click_preflight))
        .route(AUTODISTRIBUTION_PATH, get(autodistribution))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (listener.bind): {e}"))?;
    info!(%addr, "HTTP listener up");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

fn events_limit(settings: &ListenerSettings) -> Limit {
    Limit::new(settings.rate_per_sec, settings.burst)
}

fn autodist_limit(settings: &ListenerSettings) -> Limit {
    Limit::new(settings.autodistribution_rate_per_sec, settings.autodistribution_burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many requests a fresh bucket lets through at once (give or take what refills if the loop is
    /// preempted).
    fn admitted_at_once(limit: &Limit) -> usize {
        (0..1_000).take_while(|_| limit.take()).count()
    }

    fn about(n: usize) -> std::ops::Range<usize> {
        n..n + 10
    }

    #[test]
    fn by_default_a_burst_of_look_ups_gets_through_where_a_flood_of_events_is_cut() {
        let settings: ListenerSettings = toml::from_str("bind = \"127.0.0.1:8090\"").expect("settings");
        assert!(about(40).contains(&admitted_at_once(&events_limit(&settings))));
        assert!(about(200).contains(&admitted_at_once(&autodist_limit(&settings))));
        let tuned: ListenerSettings =
            toml::from_str("bind = \"127.0.0.1:8090\"\nautodistribution_burst = 500").expect("settings");
        assert!(about(500).contains(&admitted_at_once(&autodist_limit(&tuned))));
    }

    #[test]
    fn allow_rules() {
        let net = AllowRule::parse("192.168.0.0/16").expect("cidr");
        assert!(net.matches("192.168.7.9".parse().unwrap()));
        assert!(!net.matches("192.169.0.1".parse().unwrap()));
        assert!(net.matches("::ffff:192.168.1.1".parse().unwrap()), "v4-mapped");
        let one = AllowRule::parse("10.0.0.5").expect("address");
        assert!(one.matches("10.0.0.5".parse().unwrap()));
        assert!(!one.matches("10.0.0.6".parse().unwrap()));
        assert!(AllowRule::parse("0.0.0.0/0")
            .expect("any")
            .matches("8.8.8.8".parse().unwrap()));
        assert!(AllowRule::parse("10.0.0.0/33").is_none());
        assert!(AllowRule::parse("nope").is_none());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn reads_the_widgets_click_as_json_or_form_with_the_token_apart() {
        let (fields, token) =
            parse_widget_click(br#" {"token":"t0k","user_id":8000002,"phone":"+79001234567","line":null}"#)
                .expect("JSON");
        assert_eq!(token.as_deref(), Some("t0k"));
        assert_eq!(fields["user_id"], "8000002");
        assert_eq!(fields["phone"], "+79001234567");
        assert!(!fields.contains_key("line") && !fields.contains_key("token"));
        let (fields, token) = parse_widget_click(b"user_id=5&phone=%2B7900&click_id=k1&token=t0k").expect("form");
        assert_eq!((token.as_deref(), fields["phone"].as_str()), (Some("t0k"), "+7900"));
        assert_eq!(fields["click_id"], "k1");
        assert!(parse_widget_click(b"[1]").is_err());
        assert!(parse_widget_click(br#"{"user_id":{"id":5}}"#).is_err());
        assert_eq!(parse_widget_click(b"").expect("empty form").1, None);
    }

    #[test]
    fn parses_bitrix24_event_forms() {
        let body = b"event=onexternalcallstart&data%5BCALL_ID%5D=externalCall.x.1&data[USER_ID]=1&auth%5Bapplication_token%5D=t0k";
        let (e, token) = parse_event(body).expect("event");
        assert_eq!(e.event, "ONEXTERNALCALLSTART");
        assert_eq!(e.data["CALL_ID"], "externalCall.x.1");
        assert_eq!(e.data["USER_ID"], "1");
        assert_eq!(token.as_deref(), Some("t0k"));
        assert!(parse_event(b"data[USER_ID]=1").is_err());
    }
}
