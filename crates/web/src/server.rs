//! Routes, the session guard and the handlers.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::Markup;
use serde::Deserialize;
use store::{CallFilter, CallResult, ReprocessScope, Timestamp};
use tracing::{info, warn};

use crate::access::{presented_token, same_secret, AllowList};
use crate::admin;
use crate::auth::{self, cookie, set_cookie, Session, Sessions, FORM_COOKIE, LANG_COOKIE, SESSION_COOKIE};
use crate::i18n::Lang;
use crate::logs::LogBuffer;
use crate::pages::{self, CallsQuery, Frame, PAGE_SIZE};
use crate::records::{self, PathResolver, RecordLinks, Refused};
use crate::reports::Reports;
use crate::reprocess::{self, SharedReprocess};
use crate::settings::SettingsFile;
use crate::status::{self, Thresholds};
use crate::wizard::{self, Drafts, Probes};
use crate::{Error, SharedStore, Telemetry, TlsFiles, Wake, WebSettings};

/// The UI's state; cheap to clone.
#[derive(Clone)]
pub struct Web(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    settings: WebSettings,
    pub(crate) store: SharedStore,
    telemetry: Arc<Telemetry>,
    pub(crate) wake: Wake,
    status_allow: AllowList,
    metrics_allow: AllowList,
    pub(crate) sessions: Sessions,
    /// While no password is set: the code that the first-run page asks for (printed in the log).
    setup_code: Mutex<Option<String>>,
    thresholds: Thresholds,
    offset_secs: i32,
    /// Signs and resolves recording links (the player, `/records/<token>`).
    records: Option<(RecordLinks, PathResolver)>,
    /// The configuration file the settings page edits; one save at a time.
    pub(crate) config: Option<SettingsFile>,
    pub(crate) config_lock: Mutex<()>,
    /// The last log lines, for the Logs page.
    pub(crate) logs: Option<LogBuffer>,
    /// HTTPS, when `[web] tls_cert`/`tls_key` are set.
    tls: Option<TlsFiles>,
    /// The setup wizard's connection tests (the service's).
    pub(crate) probes: Option<Probes>,
    /// What each session tried in the wizard and has not saved.
    pub(crate) drafts: Drafts,
    /// The service's re-processing of a call (the timeline's button).
    reprocess: Option<SharedReprocess>,
    /// The last re-process result per session and call, shown once.
    reprocessed: reprocess::Results,
    /// Where the UI's store reads run (low-priority threads, one journal search at a time).
    pub(crate) reports: Reports,
    /// The service's runtime, when the UI is served apart from it ([`crate::serve_apart`]).
    pub(crate) service: crate::own_thread::Service,
}

impl Web {
    pub fn new(settings: WebSettings, store: SharedStore, telemetry: Arc<Telemetry>, wake: Wake) -> Result<Web, Error> {
        settings.validate().map_err(Error::Settings)?;
        let status_allow = AllowList::parse(&settings.status_allow).map_err(Error::Settings)?;
        let metrics_allow = AllowList::parse(&settings.metrics_allow).map_err(Error::Settings)?;
        let tls = settings.tls().map_err(Error::Settings)?;
        // The UI's reads (a journal search may take a while) never hold up the call pipeline's writes.
        let store = store.for_reports();
        let setup_code = match store.setting(auth::PASSWORD_SETTING)? {
            Some(_) => None,
            None => Some(auth::random_token()[..12].to_owned()),
        };
        let gap_warning = settings.gap_warning();
        let reports = Reports::start(settings.search_limit(), settings.search_wait());
        Ok(Web(Arc::new(Inner {
            settings,
            store,
            telemetry,
            wake,
            status_allow,
            metrics_allow,
            sessions: Sessions::default(),
            setup_code: Mutex::new(setup_code),
            thresholds: Thresholds {
                gap_warning,
                ..Thresholds::default()
            },
            offset_secs: 0,
            records: None,
            config: None,
            config_lock: Mutex::new(()),
            logs: None,
            tls,
            probes: None,
            drafts: Drafts::default(),
            reprocess: None,
            reprocessed: reprocess::Results::default(),
            reports,
            service: Default::default(),
        })))
    }

    /// When `/status` warns (call before serving).
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.thresholds = thresholds;
        }
        self
    }

    /// The PBX's zone (`+03:00`): times on the pages and the journal's date filter use it.
    pub fn zone(mut self, utc_offset: &str) -> Self {
        if let (Some(inner), Some(secs)) = (Arc::get_mut(&mut self.0), parse_offset(utc_offset)) {
            inner.offset_secs = secs;
        }
        self
    }

    /// Serve recordings by signed links; `resolve` maps the PBX's path of a recording to this host's.
    pub fn recordings(mut self, links: RecordLinks, resolve: PathResolver) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.records = Some((links, resolve));
        }
        self
    }

    /// Let the settings page edit this configuration file.
    pub fn settings_file(mut self, file: SettingsFile) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.config = Some(file);
        }
        self
    }

    /// Let the setup wizard test AMI and Bitrix24 connections (and check an application's install tokens).
    pub fn probes(mut self, probes: Probes) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.probes = Some(probes);
        }
        self
    }

    /// Offer "Re-process this call" on each call's timeline, done by `port`.
    pub fn reprocess(mut self, port: SharedReprocess) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.reprocess = Some(port);
        }
        self
    }

    /// How long a journal search may run before it is stopped (default `web.search_limit_secs`).
    pub fn search_limit(mut self, limit: std::time::Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.reports.search_limit = limit;
        }
        self
    }

    /// Show these log lines on the Logs page.
    pub fn logs(mut self, buffer: LogBuffer) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.logs = Some(buffer);
        }
        self
    }

    /// Whether the UI is served over HTTPS.
    pub fn is_tls(&self) -> bool {
        self.0.tls.is_some()
    }

    /// Cookies are `Secure` under HTTPS (built in, or a proxy's when `secure_cookies` says so).
    pub(crate) fn secure_cookies(&self) -> bool {
        self.0.settings.secure_cookies || self.0.tls.is_some()
    }

    /// The first-run code, while no admin password is set.
    pub fn setup_code(&self) -> Option<String> {
        lock(&self.0.setup_code).clone()
    }
}

fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => (1, text),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    Some(sign * (h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves until `shutdown` resolves, over HTTPS when `[web] tls_cert`/`tls_key` are set (plain HTTP on that
/// port is redirected to `https://`). The peer's address is available to the allow-lists.
pub async fn serve(
    listener: tokio::net::TcpListener,
    web: Web,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(tls) = web.0.tls.clone() {
        return crate::tls::serve_tls(listener, router(web), tls, shutdown).await;
    }
    axum::serve(
        listener,
        router(web).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Every route. Pages other than login, first run, `/status`, `/metrics` and the stylesheet need a session.
pub fn router(web: Web) -> Router {
    let private = Router::new()
        .route("/", get(status_page))
        .route("/calls", get(calls_page))
        .route("/calls/:key", get(call_page))
        .route("/calls/:key/retry", post(retry_call))
        .route("/calls/:key/reprocess", post(reprocess_call))
        .route("/settings", get(admin::settings_page).post(admin::save_settings))
        .route("/users", get(admin::users_page))
        .route("/users/refresh", post(admin::refresh_users))
        .route("/gaps/acknowledge", post(admin::acknowledge_gap))
        .route("/logs", get(admin::logs_page))
        .route("/wizard", get(|| async { Redirect::to("/wizard/ami") }))
        .route("/wizard/ami", get(wizard::ami_page).post(wizard::ami_post))
        .route("/wizard/bitrix24", get(wizard::crm_page).post(wizard::crm_post))
        .route("/wizard/trunks", get(wizard::trunks_page).post(wizard::trunks_post))
        .route("/wizard/call", get(wizard::call_page))
        .route("/logout", post(logout))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(web.clone(), require_session));
    Router::new()
        .route("/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .route("/login", get(login_page).post(login))
        .route("/setup", get(setup_page).post(setup))
        .route("/lang/:code", get(switch_language))
        .route("/assets/style.css", get(stylesheet))
        .route("/records/:token", get(recording))
        .route("/bitrix24/install", post(crate::install::install))
        .merge(private)
        .fallback(not_found_or_login)
        .with_state(web)
}

// ---- monitoring ----

fn monitor_allowed(allow: &AllowList, token: Option<&str>, peer: IpAddr, headers: &HeaderMap, uri: &Uri) -> bool {
    if allow.allows(peer) {
        return true;
    }
    match (token, presented_token(headers, uri.query())) {
        (Some(expected), Some(given)) => same_secret(expected, given),
        _ => false,
    }
}

/// The two monitoring endpoints, each with its own allow-list and token.
#[derive(Clone, Copy)]
enum Monitor {
    Status,
    Metrics,
}

/// `None` when the peer may read the endpoint (from its allow-list or with its token), else the 403 to send.
fn monitor_gate(web: &Web, which: Monitor, peer: IpAddr, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
    let s = &web.0.settings;
    let (allow, token, name) = match which {
        Monitor::Status => (&web.0.status_allow, s.status_token.as_deref(), "status"),
        Monitor::Metrics => (&web.0.metrics_allow, s.metrics_token.as_deref(), "metrics"),
    };
    if monitor_allowed(allow, token, peer, headers, uri) {
        return None;
    }
    let why = format!("not allowed: add this address to web.{name}_allow or send web.{name}_token\n");
    Some((StatusCode::FORBIDDEN, why).into_response())
}

async fn status_json(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(refused) = monitor_gate(&web, Monitor::Status, peer.ip(), &headers, &uri) {
        return refused;
    }
    match read_status(&web).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(e) => internal(e),
    }
}

pub(crate) async fn read_status(web: &Web) -> Result<status::Status, String> {
    let state = web.clone();
    web.0
        .reports
        .read(move || status::status(state.0.store.as_ref(), &state.0.telemetry, state.0.thresholds))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn metrics_text(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(refused) = monitor_gate(&web, Monitor::Metrics, peer.ip(), &headers, &uri) {
        return refused;
    }
    let state = web.clone();
    let text = web
        .0
        .reports
        .read(move || status::metrics(state.0.store.as_ref(), &state.0.telemetry))
        .await;
    match text {
        Ok(Ok(text)) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Ok(Err(e)) => internal(e.to_string()),
        Err(e) => internal(e.to_string()),
    }
}

pub(crate) fn internal(error: String) -> Response {
    warn!(%error, "web: cannot answer");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("ringlink cannot answer: {error}\n"),
    )
        .into_response()
}

// ---- sessions ----

/// Lets a request through with its session (in the extensions); a POST must carry the session's CSRF token as
/// the form field `csrf`. Without a session: to the login page.
async fn require_session(State(web): State<Web>, request: Request, next: Next) -> Response {
    let lang = Lang::of(request.headers());
    let Some(session) = cookie(request.headers(), SESSION_COOKIE).and_then(|id| web.0.sessions.get(id)) else {
        return Redirect::to("/login").into_response();
    };
    let request = if request.method() == axum::http::Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = to_bytes(body, 1 << 20).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
        };
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let csrf_ok = fields.iter().any(|(k, v)| k == "csrf" && same_secret(v, &session.csrf));
        if !csrf_ok {
            return forbidden(lang);
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    let mut request = request;
    request.extensions_mut().insert(session);
    next.run(request).await
}

fn forbidden(lang: Lang) -> Response {
    (
        StatusCode::FORBIDDEN,
        html_page(pages::message(&bare_frame(lang, "/"), "403", lang.t("forbidden"))),
    )
        .into_response()
}

fn bare_frame(lang: Lang, path: &str) -> Frame<'_> {
    Frame {
        lang,
        csrf: None,
        path,
        refresh: None,
        offset_secs: 0,
    }
}

pub(crate) fn html_page(markup: Markup) -> Response {
    let mut response = axum::response::Html(markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"),
    );
    response
}

async fn not_found_or_login(State(web): State<Web>, headers: HeaderMap) -> Response {
    if cookie(&headers, SESSION_COOKIE)
        .and_then(|id| web.0.sessions.get(id))
        .is_none()
    {
        return Redirect::to("/login").into_response();
    }
    not_found(headers).await
}

async fn not_found(headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    (
        StatusCode::NOT_FOUND,
        html_page(pages::message(&bare_frame(lang, "/"), "404", lang.t("not_found"))),
    )
        .into_response()
}

/// The login and first-run forms are guarded by a double-submit cookie (no session exists yet).
fn with_form_cookie(web: &Web, render: impl FnOnce(&str) -> Markup, headers: &HeaderMap) -> Response {
    let token = cookie(headers, FORM_COOKIE)
        .filter(|t| t.len() >= 32)
        .map(str::to_owned)
        .unwrap_or_else(auth::random_token);
    let mut response = html_page(render(&token));
    if let Ok(value) = HeaderValue::from_str(&set_cookie(FORM_COOKIE, &token, None, web.secure_cookies())) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn form_token_ok(headers: &HeaderMap, given: &str) -> bool {
    cookie(headers, FORM_COOKIE).is_some_and(|expected| !given.is_empty() && same_secret(expected, given))
}

async fn login_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    if web.setup_code().is_some() {
        return Redirect::to("/setup").into_response();
    }
    let lang = Lang::of(&headers);
    with_form_cookie(
        &web,
        |token| pages::login(&bare_frame(lang, "/login"), token, None),
        &headers,
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

async fn login(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = Lang::of(&headers);
    if !form_token_ok(&headers, &form.csrf) {
        return forbidden(lang);
    }
    let frame = bare_frame(lang, "/login");
    if !web.0.sessions.may_try(peer.ip()) {
        let page = pages::login(&frame, &form.csrf, Some(lang.t("too_many")));
        return (StatusCode::TOO_MANY_REQUESTS, html_page(page)).into_response();
    }
    let store = web.0.store.clone();
    let hash = web
        .blocking(move || store.setting(auth::PASSWORD_SETTING).ok().flatten())
        .await
        .ok()
        .flatten()
        .and_then(|h| h.as_str().map(str::to_owned));
    let password = form.password.clone();
    // Deliberately slow: on the UI's own threads, never the service's.
    let verified = tokio::task::spawn_blocking(move || hash.is_some_and(|h| auth::verify_password(&password, &h)))
        .await
        .unwrap_or(false);
    if !verified {
        web.0.sessions.failed(peer.ip());
        warn!(peer = %peer.ip(), "web: failed login");
        let page = pages::login(&frame, &form.csrf, Some(lang.t("wrong_password")));
        return (StatusCode::UNAUTHORIZED, html_page(page)).into_response();
    }
    info!(peer = %peer.ip(), "web: admin logged in");
    start_session(&web, "/")
}

fn start_session(web: &Web, to: &str) -> Response {
    let ttl = web.0.settings.session_ttl();
    let id = web.0.sessions.create(ttl);
    let mut response = Redirect::to(to).into_response();
    let secure = web.secure_cookies();
    for value in [
        set_cookie(SESSION_COOKIE, &id, Some(ttl), secure),
        set_cookie(FORM_COOKIE, "", Some(std::time::Duration::ZERO), secure),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn logout(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        web.0.sessions.remove(id);
    }
    let mut response = Redirect::to("/login").into_response();
    let gone = set_cookie(
        SESSION_COOKIE,
        "",
        Some(std::time::Duration::ZERO),
        web.secure_cookies(),
    );
    if let Ok(value) = HeaderValue::from_str(&gone) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn setup_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    if web.setup_code().is_none() {
        return Redirect::to("/login").into_response();
    }
    let lang = Lang::of(&headers);
    with_form_cookie(
        &web,
        |token| pages::setup(&bare_frame(lang, "/setup"), token, None),
        &headers,
    )
}

#[derive(Deserialize)]
struct SetupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

async fn setup(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> Response {
    let lang = Lang::of(&headers);
    if !form_token_ok(&headers, &form.csrf) {
        return forbidden(lang);
    }
    let Some(code) = web.setup_code() else {
        return Redirect::to("/login").into_response();
    };
    let frame = bare_frame(lang, "/setup");
    let fail = |status: StatusCode, key: &'static str| {
        (status, html_page(pages::setup(&frame, &form.csrf, Some(lang.t(key))))).into_response()
    };
    if !web.0.sessions.may_try(peer.ip()) {
        return fail(StatusCode::TOO_MANY_REQUESTS, "too_many");
    }
    if !same_secret(form.code.trim(), &code) {
        web.0.sessions.failed(peer.ip());
        return fail(StatusCode::UNAUTHORIZED, "setup_bad_code");
    }
    if form.password != form.again {
        return fail(StatusCode::BAD_REQUEST, "setup_mismatch");
    }
    if form.password.chars().count() < 10 {
        return fail(StatusCode::BAD_REQUEST, "setup_short");
    }
    let password = form.password.clone();
    let store = web.0.store.clone();
    // Deliberately slow: hashed on the UI's own threads, stored on the service's.
    let saved = match tokio::task::spawn_blocking(move || auth::hash_password(&password)).await {
        Ok(Ok(hash)) => web
            .blocking(move || {
                store
                    .set_setting(
                        auth::PASSWORD_SETTING,
                        &serde_json::Value::String(hash),
                        Timestamp::now(),
                    )
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = saved {
        return internal(e);
    }
    *lock(&web.0.setup_code) = None;
    info!(peer = %peer.ip(), "web: the admin password was set");
    // On to the rest of the setup (each page can be skipped from the header's links).
    start_session(&web, "/wizard/ami")
}

#[derive(Deserialize)]
struct Back {
    #[serde(default)]
    back: String,
}

async fn switch_language(State(web): State<Web>, Path(code): Path<String>, Query(back): Query<Back>) -> Response {
    let Some(lang) = Lang::parse(&code) else {
        return (StatusCode::NOT_FOUND, "unknown language").into_response();
    };
    // Only a local path: the switch never redirects elsewhere.
    let to = if back.back.starts_with('/') && !back.back.starts_with("//") && !back.back.contains('\\') {
        back.back
    } else {
        "/".to_owned()
    };
    let mut response = Redirect::to(&to).into_response();
    let one_year = std::time::Duration::from_secs(365 * 86_400);
    let value = set_cookie(LANG_COOKIE, lang.code(), Some(one_year), web.secure_cookies());
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::STYLE,
    )
        .into_response()
}

// ---- pages ----

pub(crate) fn frame<'a>(web: &Web, lang: Lang, session: &'a Session, path: &'a str) -> Frame<'a> {
    Frame {
        lang,
        csrf: Some(&session.csrf),
        path,
        refresh: None,
        offset_secs: web.0.offset_secs,
    }
}

async fn status_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    match read_status(&web).await {
        Ok(status) => {
            let mut frame = frame(&web, lang, &session, "/");
            frame.refresh = Some(10);
            html_page(pages::status(&frame, &status))
        }
        Err(e) => internal(e),
    }
}

/// A `YYYY-MM-DD` date at midnight in the PBX's zone.
fn local_midnight(date: &str, offset_secs: i32) -> Option<Timestamp> {
    let day = chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").ok()?;
    let utc = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp() - i64::from(offset_secs);
    Some(Timestamp::from_secs(utc))
}

fn call_filter(query: &CallsQuery, offset_secs: i32) -> CallFilter {
    let before = query.before.split_once(':').and_then(|(at, key)| {
        let at = at.parse::<i64>().ok()?;
        Some((Timestamp::from_micros(at), key.to_owned()))
    });
    CallFilter {
        texts: [&query.number, &query.employee]
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        from: local_midnight(&query.from, offset_secs),
        // The whole "to" day counts.
        to: local_midnight(&query.to, offset_secs).map(|t| t.saturating_add(std::time::Duration::from_secs(86_400))),
        result: match query.result.as_str() {
            "answered" => Some(CallResult::Answered),
            "missed" => Some(CallResult::Missed),
            "live" => Some(CallResult::Live),
            _ => None,
        },
        has_errors: query.errors.is_some(),
        before,
        time_limit: None,
    }
}

async fn calls_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    uri: Uri,
    Query(query): Query<CallsQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/calls");
    let frame = frame(&web, lang, &session, path);
    let filter = CallFilter {
        time_limit: Some(web.0.reports.search_limit),
        ..call_filter(&query, web.0.offset_secs)
    };
    // A search (any filter set; the plain list and its pages are quick) waits for the one running.
    let plain = CallFilter {
        before: filter.before.clone(),
        time_limit: filter.time_limit,
        ..CallFilter::default()
    };
    let turn = if filter == plain {
        None
    } else {
        match web.0.reports.search_turn().await {
            Some(turn) => Some(turn),
            None => {
                let page = html_page(pages::calls(&frame, &query, Err(lang.t("search_busy"))));
                let wait = web.0.reports.search_wait.as_secs().max(1).to_string();
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, wait)], page).into_response();
            }
        }
    };
    let store = web.0.store.clone();
    // The turn goes with the read: if the browser goes away, the next search still waits for this one's end.
    let calls = web
        .0
        .reports
        .read(move || {
            let _turn = turn;
            store.find_calls(&filter, PAGE_SIZE)
        })
        .await;
    match calls {
        Ok(Ok(calls)) => html_page(pages::calls(&frame, &query, Ok(calls.as_slice()))),
        Ok(Err(store::StoreError::TimedOut { after, .. })) => {
            info!(
                after_ms = after.as_millis(),
                "web: a journal search was stopped at its time limit"
            );
            let stopped = format!("{} ({} s)", lang.t("search_stopped"), after.as_secs_f64());
            html_page(pages::calls(&frame, &query, Err(stopped.as_str())))
        }
        Ok(Err(e)) => internal(e.to_string()),
        Err(e) => internal(e.to_string()),
    }
}

#[derive(Deserialize)]
struct Notice {
    #[serde(default)]
    retried: Option<u64>,
}

async fn call_page(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    headers: HeaderMap,
    uri: Uri,
    Path(key): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    let lang = Lang::of(&headers);
    let store = web.0.store.clone();
    let call = key.clone();
    let read = web
        .0
        .reports
        .read(move || -> store::Result<_> { Ok((store.call_timeline(&call)?, store.steps_of_call(&call)?)) })
        .await;
    let (entries, steps) = match read {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return internal(e.to_string()),
        Err(e) => return internal(e.to_string()),
    };
    let path = uri.path();
    let frame = frame(&web, lang, &session, path);
    if entries.is_empty() && steps.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            html_page(pages::message(&frame, &key, lang.t("unknown_call"))),
        )
            .into_response();
    }
    let notice = notice.retried.map(|n| format!("{n} {}", lang.t("retried")));
    // A player per recording, by a link valid for an hour.
    let players: Vec<String> = match &web.0.records {
        Some((links, _)) => steps
            .iter()
            .filter(|s| s.kind == "attach_record")
            .map(|s| {
                let expires = Timestamp::now().saturating_add(PLAYER_LINK_TTL);
                format!("/records/{}", links.sign(&key, &s.idempotency_key, expires))
            })
            .collect(),
        None => Vec::new(),
    };
    let reprocessing = pages::Reprocessing {
        available: web.0.reprocess.is_some(),
        result: web
            .0
            .reprocessed
            .take(&session.csrf, &key)
            .map(|result| reprocess::notice(lang, &result)),
    };
    html_page(pages::timeline(
        &frame,
        &key,
        &entries,
        &steps,
        &players,
        notice.as_deref(),
        reprocessing,
    ))
}

/// "Re-process this call": the service fills what is missing; the timeline shows what it did.
async fn reprocess_call(
    State(web): State<Web>,
    axum::Extension(session): axum::Extension<Session>,
    Path(key): Path<String>,
) -> Response {
    let back = format!("/calls/{}", pages::encode(&key));
    let Some(port) = web.0.reprocess.clone() else {
        return Redirect::to(&back).into_response();
    };
    let call = key.clone();
    let result = match web.on_service(async move { port.reprocess(&call).await }).await {
        Ok(result) => result,
        Err(e) => return internal(e.to_string()),
    };
    match &result {
        Ok(done) => info!(
            call = %key,
            live = done.live,
            added = ?done.added,
            reset = done.reset,
            "web: call re-processed"
        ),
        Err(e) => warn!(call = %key, error = %e, "web: call could not be re-processed"),
    }
    web.0.reprocessed.put(&session.csrf, &key, result);
    Redirect::to(&back).into_response()
}

async fn retry_call(State(web): State<Web>, Path(key): Path<String>) -> Response {
    let store = web.0.store.clone();
    let call = key.clone();
    let reset = web
        .blocking(move || store.reprocess(&ReprocessScope::Call(call), Timestamp::now()))
        .await;
    match reset {
        Ok(Ok(n)) => {
            info!(call = %key, steps = n, "web: steps of a call set to be sent again");
            web.0.wake.worker.notify_one();
            Redirect::to(&format!("/calls/{}?retried={n}", pages::encode(&key))).into_response()
        }
        Ok(Err(e)) => internal(e.to_string()),
        Err(e) => internal(e.to_string()),
    }
}

/// How long the timeline's player links work.
const PLAYER_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// `GET /records/<token>`: the recording of a known call, by a signed, unexpired link; one byte range at most.
async fn recording(State(web): State<Web>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let refuse = |why: &str| (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    let Some((links, resolve)) = web.0.records.clone() else {
        return refuse("recording links are off");
    };
    let signed = match links.verify(&token, Timestamp::now()) {
        Ok(signed) => signed,
        Err(Refused::Expired) => return refuse("this recording link has expired"),
        Err(Refused::Invalid) => return refuse("not a valid recording link"),
    };
    let store = web.0.store.clone();
    let found = web
        .blocking(move || records::recording_path(store.as_ref(), &signed))
        .await;
    let pbx_path = match found {
        Ok(Ok(Some(path))) => path,
        Ok(Ok(None)) => return refuse("no such recording"),
        Ok(Err(e)) => return internal(e.to_string()),
        Err(e) => return internal(e.to_string()),
    };
    let path = resolve(&pbx_path);
    serve_file(&path, headers.get(header::RANGE).and_then(|v| v.to_str().ok())).await
}

async fn serve_file(path: &std::path::Path, range: Option<&str>) -> Response {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "web: a recording of a known call cannot be read");
            return (StatusCode::NOT_FOUND, "the recording file is not there (any more)\n").into_response();
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return internal(e.to_string()),
    };
    let kind = records::content_type(path);
    let (status, first, last) = match range {
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(range) => match records::parse_range(range, len) {
            Some((first, last)) => (StatusCode::PARTIAL_CONTENT, first, last),
            None => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                )
                    .into_response()
            }
        },
    };
    let count = if len == 0 { 0 } else { last - first + 1 };
    if let Err(e) = file.seek(std::io::SeekFrom::Start(first)).await {
        return internal(e.to_string());
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(count)));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_and_dates() {
        assert_eq!(parse_offset("+03:00"), Some(10_800));
        assert_eq!(parse_offset("-05:30"), Some(-19_800));
        let midnight = local_midnight("2026-01-02", 10_800).expect("date");
        assert_eq!(midnight, Timestamp::from_secs(1_767_301_200));
        assert!(local_midnight("yesterday", 0).is_none());
    }
}
