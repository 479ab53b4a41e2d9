//! HTTP front: REST under `/rest/`, the OAuth server under `/oauth/token/`, the control API under `/_emu/`.
//! The accept loop is ours (not `axum::serve`) so the `Down` fault can close the port and every open
//! connection, and reopen the same port afterwards.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::{lifetime, TokenInfo};
use crate::core::{Core, RestRequest};
use crate::fault::Fault;
use crate::params::{insert_bracketed, parse_form, parse_json, PValue};
use crate::record::{AuthMode, RecordedRequest};

/// Bodies up to this size are accepted (records arrive base64-encoded in one request).
const BODY_LIMIT: usize = 512 * 1024 * 1024;

pub(crate) fn portal_router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/oauth/token", any(oauth_token))
        .route("/oauth/token/", any(oauth_token))
        .nest("/_emu", crate::control::router())
        .fallback(rest_entry)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(core)
}

pub(crate) fn control_router(core: Arc<Core>) -> Router {
    Router::new().nest("/_emu", crate::control::router()).with_state(core)
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn unavailable_page() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
    )
        .into_response()
}

/// Apply the faults that act before any processing; returns a response if the request ends here.
async fn pre_faults(core: &Core) -> Option<Response> {
    match core.fault() {
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
        Some(Fault::Unavailable) => Some(unavailable_page()),
        _ => None,
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    content_type(headers).starts_with("multipart/form-data")
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Query string and body as one parameter tree (body wins), plus uploaded files.
async fn read_params(req: Request) -> Result<(PValue, Vec<(String, String, Vec<u8>)>), String> {
    let mut params = req.uri().query().map(parse_form).unwrap_or_else(PValue::empty_map);
    let headers = req.headers().clone();
    let mut files = Vec::new();
    if is_multipart(&headers) {
        let mut multipart = Multipart::from_request(req, &())
            .await
            .map_err(|e| format!("invalid multipart body: {e}"))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| format!("invalid multipart body: {e}"))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let data = field
                .bytes()
                .await
                .map_err(|e| format!("invalid multipart body: {e}"))?;
            match file_name {
                Some(f) => files.push((name, f, data.to_vec())),
                None => insert_bracketed(
                    &mut params,
                    &name,
                    PValue::Str(String::from_utf8_lossy(&data).into_owned()),
                ),
            }
        }
        return Ok((params, files));
    }
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| format!("unreadable body: {e}"))?;
    if content_type(&headers).starts_with("application/json") {
        let parsed = parse_json(&body).map_err(|e| format!("invalid JSON body: {e}"))?;
        if !matches!(parsed, PValue::Map(_)) {
            return Err("JSON body must be an object".into());
        }
        params.merge(parsed);
    } else if !body.is_empty() {
        params.merge(parse_form(&String::from_utf8_lossy(&body)));
    }
    Ok((params, files))
}

async fn rest_entry(State(core): State<Arc<Core>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/rest/") else {
        return json_response(404, &json!({"error": "NOT_FOUND", "error_description": "Not found"}));
    };
    if let Some(resp) = pre_faults(&core).await {
        return resp;
    }
    let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let (webhook, method) = match segments.as_slice() {
        [method] => (None, method.clone()),
        [user, secret, method] => (Some((user.clone(), secret.clone())), method.clone()),
        _ => {
            let err = crate::api::SystemError::MethodNotFound.to_error(core.cfg.conflicts.status_revision);
            return json_response(err.status, &err.body());
        }
    };
    let (params, files) = match read_params(req).await {
        Ok(p) => p,
        Err(description) => {
            let body = json!({"error": "ERROR_ARGUMENT", "error_description": description});
            return json_response(400, &body);
        }
    };
    let (status, body) = core
        .handle_rest(RestRequest {
            method,
            webhook,
            params,
            files,
        })
        .await;
    json_response(status, &body)
}

fn oauth_error(status: u16, code: &str, description: &str) -> (u16, Value) {
    (status, json!({"error": code, "error_description": description}))
}

/// The OAuth server: `refresh_token` and `authorization_code` grants. Refresh tokens are single-use.
async fn oauth_token(State(core): State<Arc<Core>>, req: Request) -> Response {
    if let Some(resp) = pre_faults(&core).await {
        return resp;
    }
    let seq = core.take_seq();
    let at = core.clock.now();
    let params = match read_params(req).await {
        Ok((p, _)) => p,
        Err(e) => return json_response(400, &json!({"error": "invalid_request", "error_description": e})),
    };
    let (status, body, user) = oauth_grant(&core, &params);
    core.record(RecordedRequest {
        seq,
        at,
        method: "oauth.token".into(),
        params: params.to_json(),
        auth: user.map_or(AuthMode::None, |user_id| AuthMode::OAuth { user_id }),
        status,
        response: body.clone(),
        batch_parent: None,
    });
    json_response(status, &body)
}

fn oauth_grant(core: &Core, p: &PValue) -> (u16, Value, Option<u64>) {
    let get = |k: &str| p.get_present(k).and_then(PValue::as_string).unwrap_or_default();
    let app = &core.cfg.app;
    let fail = |status, code, description| {
        let (s, b) = oauth_error(status, code, description);
        (s, b, None)
    };
    if get("client_id") != app.client_id || get("client_secret") != app.client_secret {
        return fail(401, "invalid_client", "Invalid client credentials");
    }
    let now = core.clock.now();
    let revoked = matches!(core.fault(), Some(Fault::TokenRevoked));
    let mut w = core.world();
    let user_id = match get("grant_type").as_str() {
        "refresh_token" => {
            let token = get("refresh_token");
            match w.tokens.refresh.get(&token) {
                Some(info) if !revoked && info.expires_at > now => {
                    let user = info.user_id;
                    w.tokens.refresh.remove(&token);
                    user
                }
                _ => return fail(400, "invalid_grant", "Invalid refresh token"),
            }
        }
        "authorization_code" => {
            let code = get("code");
            match w.tokens.codes.remove(&code) {
                Some(info) if !revoked && info.expires_at > now => info.user_id,
                _ => return fail(400, "invalid_grant", "Invalid authorization code"),
            }
        }
        "" => return fail(400, "invalid_request", "grant_type is not set"),
        _ => return fail(400, "invalid_request", "Unsupported grant_type"),
    };
    let access = w.portal.next_hash("access");
    let refresh = w.portal.next_hash("refresh");
    let expires_at = now + lifetime(app.access_token_lifetime_secs);
    w.tokens
        .access
        .insert(access.clone(), TokenInfo { user_id, expires_at });
    w.tokens.refresh.insert(
        refresh.clone(),
        TokenInfo {
            user_id,
            expires_at: now + lifetime(app.refresh_token_lifetime_secs),
        },
    );
    drop(w);
    let base = core.base_url();
    let domain = base.trim_start_matches("http://").trim_start_matches("https://");
    let body = json!({
        "access_token": access,
        "expires": expires_at.timestamp(),
        "expires_in": app.access_token_lifetime_secs,
        "scope": app.scope.join(","),
        "domain": domain,
        "server_endpoint": format!("{base}/oauth/rest/"),
        "status": "L",
        "client_endpoint": format!("{base}/rest/"),
        "member_id": core.cfg.portal.member_id,
        "user_id": user_id,
        "refresh_token": refresh,
    });
    (200, body, Some(user_id))
}

/// Serve `router` on `listener` until `shutdown` turns true. While `down` is true the port is closed (open
/// connections dropped) and the same port is bound again once it turns false. Other emulators (amoemu) serve
/// with it too.
pub async fn serve(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    router: Router,
    mut down: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Some(l) = listener.take() {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((stream, _)) = accepted {
                            let service = TowerToHyperService::new(router.clone());
                            conns.spawn(async move {
                                let builder = Builder::new(TokioExecutor::new());
                                // A broken client connection is that client's problem; nothing to report.
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            });
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    changed = down.changed() => {
                        if changed.is_err() || *down.borrow() {
                            break;
                        }
                    }
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            conns.abort_all();
                            return;
                        }
                    }
                }
            }
            drop(l);
            conns.abort_all();
        }
        // Down: wait for recovery, then reopen the same port.
        loop {
            if !*down.borrow() {
                break;
            }
            tokio::select! {
                changed = down.changed() => { if changed.is_err() { return; } }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() { return; }
                }
            }
        }
        listener = rebind(addr, &mut shutdown).await;
        if listener.is_none() {
            return;
        }
    }
}

async fn rebind(addr: SocketAddr, shutdown: &mut watch::Receiver<bool>) -> Option<TcpListener> {
    loop {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        if *shutdown.borrow() {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
