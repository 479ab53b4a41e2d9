//! The client against small scripted HTTP servers on loopback: transport failures, odd bodies,
//! refresh flows, encodings, rate and operation limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use bitrix24::{AppCredentials, Client, Encoding, Error, LimiterConfig, OAuthTokens, Timeouts};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    content_type: String,
    body: String,
}

type Script = Arc<dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync>;

struct Mock {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mock {
    async fn start(script: impl Fn(&Seen, usize) -> (u16, String) + Send + Sync + 'static) -> Mock {
        let script: Script = Arc::new(script);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let counter = Arc::new(AtomicUsize::new(0));
        let app = {
            let seen = seen.clone();
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                let script = script.clone();
                let counter = counter.clone();
                async move {
                    let request = Seen {
                        path: uri.path().to_owned(),
                        query: uri.query().unwrap_or_default().to_owned(),
                        content_type: headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().push(request.clone());
                    let (status, body) = script(&request, n);
                    if status == 0 {
                        // Simulates a server that never answers in time.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    let status = StatusCode::from_u16(status.max(200)).unwrap();
                    let mut response = axum::response::Response::new(axum::body::Body::from(body));
                    *response.status_mut() = status;
                    if status.is_redirection() {
                        response
                            .headers_mut()
                            .insert("location", "https://renamed.example/rest/1/s3cr3t/x".parse().unwrap());
                    }
                    response
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Mock { base, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok(result: Value) -> (u16, String) {
    (200, json!({"result": result, "time": {"start": 1.0}}).to_string())
}

fn err(status: u16, code: &str, description: &str) -> (u16, String) {
    (
        status,
        json!({"error": code, "error_description": description}).to_string(),
    )
}

fn fast_limiter() -> LimiterConfig {
    LimiterConfig {
        drain_per_sec: 1000.0,
        capacity: 1000.0,
        headroom: 0.0,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        operation_block_default: Duration::from_secs(60),
    }
}

fn webhook_client(mock: &Mock) -> Client {
    Client::webhook(&format!("{}/rest/1/s3cr3t/", mock.base))
        .unwrap()
        .limiter_config(fast_limiter())
        .timeouts(Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_millis(500),
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn webhook_path_and_json_body() {
    let mock = Mock::start(|_, _| ok(json!(true))).await;
    let client = webhook_client(&mock);
    let result = client
        .call("telephony.externalCall.hide", json!({"CALL_ID": "c1"}))
        .await
        .unwrap();
    assert_eq!(result, json!(true));
    let seen = mock.seen();
    assert_eq!(seen[0].path, "/rest/1/s3cr3t/telephony.externalCall.hide");
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&seen[0].body).unwrap(),
        json!({"CALL_ID": "c1"})
    );
}

#[tokio::test]
async fn form_encoding_with_brackets_and_auth() {
    let mock = Mock::start(|_, _| ok(json!(42))).await;
    let client = Client::app(
        format!("{}/", mock.base),
        AppCredentials::new("local.1", "secret").with_oauth_url(format!("{}/oauth/token/", mock.base)),
        OAuthTokens::new("ACCESS1", "REFRESH1"),
    )
    .limiter_config(fast_limiter())
    .build()
    .unwrap();
    let params = json!({"fields": {"TITLE": "A&B", "PHONE": [{"VALUE": "+7900", "VALUE_TYPE": "WORK"}]}});
    let envelope = client.call_with("crm.lead.add", &params, Encoding::Form).await.unwrap();
    assert_eq!(envelope.result, json!(42));
    let seen = &mock.seen()[0];
    assert_eq!(seen.path, "/rest/crm.lead.add");
    assert_eq!(seen.content_type, "application/x-www-form-urlencoded");
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(seen.body.as_bytes()).into_owned().collect();
    assert!(pairs.contains(&("fields[TITLE]".into(), "A&B".into())), "{pairs:?}");
    assert!(pairs.contains(&("fields[PHONE][0][VALUE]".into(), "+7900".into())));
    assert!(pairs.contains(&("auth".into(), "ACCESS1".into())));
    assert!(seen.query.is_empty(), "the token stays out of the URL");
}

#[tokio::test]
async fn bodies_that_are_not_envelopes() {
    let mock = Mock::start(|seen, _| match seen.path.rsplit('/').next().unwrap() {
        "html" => (502, "<html><body>Bad Gateway</body></html>".into()),
        "empty" => (200, String::new()),
        "list" => (200, "[1,2,3]".into()),
        "noresult" => (200, r#"{"time":{}}"#.into()),
        "truncated" => (200, r#"{"result":{"CALL_ID":"#.into()),
        _ => ok(json!(null)),
    })
    .await;
    let client = webhook_client(&mock);
    for (method, retryable) in [
        ("html", true),
        ("empty", false),
        ("list", false),
        ("noresult", false),
        ("truncated", false),
    ] {
        let error = client.call(method, json!({})).await.unwrap_err();
        assert!(matches!(error, Error::InvalidResponse { .. }), "{method}: {error:?}");
        assert_eq!(error.is_retryable(), retryable, "{method}");
    }
}

#[tokio::test]
async fn typed_result_of_wrong_shape_is_a_decode_error() {
    use bitrix24::methods::telephony::{CallType, ExternalCallRegister};
    let mock = Mock::start(|_, _| ok(json!({"NO_CALL_ID": 1}))).await;
    let client = webhook_client(&mock);
    let request = ExternalCallRegister {
        user_id: Some(1),
        phone_number: "+7900".into(),
        call_type: CallType::Incoming,
        ..Default::default()
    };
    let error = client.send(&request).await.unwrap_err();
    assert!(
        matches!(error, Error::Decode { ref method, .. } if method == "telephony.externalCall.register"),
        "{error:?}"
    );
}

#[tokio::test]
async fn timeout_and_refused_connection() {
    let mock = Mock::start(|_, _| (0, String::new())).await;
    let client = webhook_client(&mock);
    let error = client.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(error, Error::Timeout(_)), "{error:?}");
    assert!(error.is_retryable());

    // A port with nothing listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = Client::webhook(&format!("http://127.0.0.1:{port}/rest/1/s3cr3t/"))
        .unwrap()
        .build()
        .unwrap();
    let error = client.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    assert!(!error.to_string().contains("s3cr3t"), "{error}");
    assert!(!format!("{error:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn redirect_is_reported_not_followed() {
    let mock = Mock::start(|_, _| (302, String::new())).await;
    let client = webhook_client(&mock);
    let error = client.call("user.get", json!({})).await.unwrap_err();
    assert!(
        matches!(error, Error::Redirected { status: 302, ref host } if host == "renamed.example"),
        "{error:?}"
    );
    assert!(!error.to_string().contains("s3cr3t"));
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn server_errors_and_legacy_method_errors() {
    let mock = Mock::start(|seen, _| match seen.path.rsplit('/').next().unwrap() {
        "crm.lead.get" => err(400, "", "Not found"),
        "crm.lead.add" => err(500, "INTERNAL_SERVER_ERROR", "Internal server error"),
        "crm.lead.list" => err(404, "ERROR_METHOD_NOT_FOUND", "Method not found!"),
        _ => err(401, "insufficient_scope", "The request requires higher privileges"),
    })
    .await;
    let client = webhook_client(&mock);
    let e = client.call("crm.lead.get", json!({"id": 1})).await.unwrap_err();
    assert!(
        matches!(e, Error::Method { ref code, ref description, .. } if code.is_empty() && description == "Not found")
    );
    assert!(!e.is_retryable());
    let e = client.call("crm.lead.add", json!({})).await.unwrap_err();
    assert!(matches!(e, Error::Server { status: 500, .. }) && e.is_retryable());
    let e = client.call("crm.lead.list", json!({})).await.unwrap_err();
    assert!(matches!(e, Error::Method { status: 404, .. }));
    let e = client.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(
        e,
        Error::Auth {
            kind: bitrix24::AuthErrorKind::InsufficientScope,
            ..
        }
    ));
    assert_eq!(mock.seen().len(), 4, "no automatic retries of errors that may have run");
}

#[tokio::test]
async fn rate_limit_refusals_are_retried_then_reported() {
    // Refuse the first three attempts.
    let mock = Mock::start(|_, n| {
        if n < 3 {
            err(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        } else {
            ok(json!(n))
        }
    })
    .await;
    let client = webhook_client(&mock);
    assert_eq!(client.call("user.get", json!({})).await.unwrap(), json!(3));

    let always = Mock::start(|_, _| err(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")).await;
    let client = Client::webhook(&format!("{}/rest/1/s3cr3t/", always.base))
        .unwrap()
        .limiter_config(fast_limiter())
        .rate_limit_retries(2)
        .build()
        .unwrap();
    let error = client.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(error, Error::RateLimited { attempts: 3 }), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(always.seen().len(), 3);
}

#[tokio::test]
async fn operation_time_limit_pauses_only_that_method() {
    let mock = Mock::start(|seen, _| {
        if seen.path.ends_with("crm.lead.list") {
            err(
                429,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
            )
        } else {
            ok(json!([]))
        }
    })
    .await;
    let client = webhook_client(&mock);
    let error = client.call("crm.lead.list", json!({})).await.unwrap_err();
    let Error::OperationTimeLimit { retry_after, .. } = error else {
        panic!("{error:?}")
    };
    assert!(retry_after > Duration::ZERO);
    // Refused locally now, without another request.
    let again = client.call("CRM.LEAD.LIST", json!({})).await.unwrap_err();
    assert!(matches!(again, Error::OperationTimeLimit { .. }));
    assert!(again.is_retryable());
    assert_eq!(mock.seen().len(), 1);
    client.call("crm.contact.list", json!({})).await.unwrap();
    assert_eq!(client.budget().blocked_methods.len(), 1);
}

/// OAuth endpoint + REST on one mock: the access token `A<n>` is valid only for the newest `n`.
fn oauth_portal(refreshes: Arc<AtomicUsize>, refresh_answer_expired: bool) -> impl Fn(&Seen, usize) -> (u16, String) {
    move |seen, _| {
        if seen.path == "/oauth/token/" {
            let n = refreshes.fetch_add(1, Ordering::SeqCst) + 1;
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(seen.query.as_bytes())
                .into_owned()
                .collect();
            let has = |k: &str, v: &str| pairs.contains(&(k.to_owned(), v.to_owned()));
            if !(has("grant_type", "refresh_token") && has("client_id", "local.1") && has("client_secret", "CS")) {
                return (
                    400,
                    json!({"error": "invalid_client", "error_description": "bad client"}).to_string(),
                );
            }
            return (
                200,
                json!({"access_token": format!("A{n}"), "refresh_token": format!("R{n}"), "expires_in": 3600,
                       "client_endpoint": "https://p/rest/", "member_id": "m", "scope": "crm,telephony"})
                .to_string(),
            );
        }
        let body: Value = serde_json::from_str(&seen.body).unwrap_or(Value::Null);
        let current = format!("A{}", refreshes.load(Ordering::SeqCst));
        if refresh_answer_expired || body["auth"] != json!(current) {
            return err(401, "expired_token", "The access token provided has expired");
        }
        ok(json!({"echo": body["n"].clone()}))
    }
}

#[tokio::test]
async fn expired_token_refreshes_once_and_saves_tokens() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let mock = Mock::start(oauth_portal(refreshes.clone(), false)).await;
    let saved: Arc<Mutex<Vec<OAuthTokens>>> = Arc::default();
    let store = {
        let saved = saved.clone();
        move |t: &OAuthTokens| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            saved.lock().unwrap().push(t.clone());
            Ok(())
        }
    };
    let client = Client::app(
        format!("{}/rest/", mock.base),
        AppCredentials::new("local.1", "CS").with_oauth_url(format!("{}/", mock.base)),
        OAuthTokens::new("A0-old", "R0"),
    )
    .limiter_config(fast_limiter())
    .token_store(Arc::new(store))
    .build()
    .unwrap();

    // Eight concurrent calls all see expired_token; one refresh serves them all.
    let mut handles = Vec::new();
    for n in 0..8 {
        let client = client.clone();
        handles.push(tokio::spawn(
            async move { client.call("user.get", json!({"n": n})).await },
        ));
    }
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), json!({"echo": n}));
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    let saved = saved.lock().unwrap().clone();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].access_token.expose(), "A1");
    assert_eq!(saved[0].refresh_token.expose(), "R1");
    assert_eq!(client.tokens().await.unwrap().refresh_token.expose(), "R1");
    // Secrets never show in the client's or the tokens' Debug output.
    let shown = format!("{client:?} {:?}", saved[0]);
    assert!(
        !shown.contains("A1") && !shown.contains("R1") && !shown.contains("CS"),
        "{shown}"
    );
}

#[tokio::test]
async fn refresh_is_not_repeated_when_new_token_is_refused() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let mock = Mock::start(oauth_portal(refreshes.clone(), true)).await;
    let client = Client::app(
        format!("{}/rest/", mock.base),
        AppCredentials::new("local.1", "CS").with_oauth_url(format!("{}/oauth/token/", mock.base)),
        OAuthTokens::new("A0", "R0"),
    )
    .limiter_config(fast_limiter())
    .build()
    .unwrap();
    let error = client.call("user.get", json!({})).await.unwrap_err();
    assert!(error.is_expired_token(), "{error:?}");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "refresh once, not in a loop");
    assert_eq!(mock.seen().len(), 3, "call, refresh, call again");
}

#[tokio::test]
async fn refresh_refused_by_oauth_server() {
    let mock = Mock::start(|seen, _| {
        if seen.path == "/oauth/token/" {
            (
                400,
                json!({"error": "invalid_grant", "error_description": "Refresh token expired"}).to_string(),
            )
        } else {
            err(401, "expired_token", "The access token provided has expired")
        }
    })
    .await;
    let client = Client::app(
        format!("{}/rest/", mock.base),
        AppCredentials::new("local.1", "CS").with_oauth_url(format!("{}/", mock.base)),
        OAuthTokens::new("A0", "R0"),
    )
    .build()
    .unwrap();
    let error = client.call("user.get", json!({})).await.unwrap_err();
    assert!(
        matches!(error, Error::TokenRefresh { ref code, .. } if code == "invalid_grant"),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn only_refresh_token_known_at_start() {
    let refreshes = Arc::new(AtomicUsize::new(0));
    let mock = Mock::start(oauth_portal(refreshes.clone(), false)).await;
    let client = Client::app(
        format!("{}/rest/", mock.base),
        AppCredentials::new("local.1", "CS").with_oauth_url(format!("{}/", mock.base)),
        OAuthTokens::new("", "R0"),
    )
    .build()
    .unwrap();
    assert_eq!(
        client.call("user.get", json!({"n": 1})).await.unwrap(),
        json!({"echo": 1})
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(mock.seen()[0].path, "/oauth/token/", "refresh before the first call");
}
