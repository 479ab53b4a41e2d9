//! Event binding and delivery, offline events, faults, and the HTTP control API.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use b24emu::{ClickToCall, Fault, OutgoingWebhook};
use common::*;
use serde_json::{json, Value};

type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A loopback event handler that records content type and body of each POST.
async fn handler_server() -> (String, Received, tokio::task::JoinHandle<()>) {
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    let router = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = Arc::clone(&sink);
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().expect("lock").push((ct, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, received, task)
}

fn form_fields(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn click_to_call_delivers_form_encoded_event_with_application_token() {
    let (url, received, server) = handler_server().await;
    let mut cfg = frozen_config();
    cfg.contacts
        .push(b24emu::SeedEntity::new(797).phone("+79001234567", "MOBILE"));
    cfg.external_lines.push(b24emu::SeedLine {
        number: "73432723033".into(),
        name: "Main DID".into(),
        crm_auto_create: true,
    });
    let emu = start(cfg).await;
    let bound = app(
        &emu,
        "event.bind",
        json!({"event": "OnExternalCallStart", "handler": url}),
    )
    .await;
    assert_eq!(result(&bound), &json!(true));
    let dup = app(
        &emu,
        "event.bind",
        json!({"event": "ONEXTERNALCALLSTART", "handler": url}),
    )
    .await;
    assert_error(&dup, 400, "ERROR_HANDLER_ALREADY_EXIST");
    let unknown = app(&emu, "event.bind", json!({"event": "OnNothing", "handler": url})).await;
    assert_error(&unknown, 400, "ERROR_EVENT_NOT_FOUND");
    let listed = app(&emu, "event.get", json!({})).await;
    assert_eq!(
        result(&listed),
        &json!([{"event": "ONEXTERNALCALLSTART", "handler": url, "auth_type": "0", "offline": 0}])
    );

    let mut click = ClickToCall::new(1, "+79001234567");
    click.line_number = Some("73432723033".into());
    let outcome = emu.click_to_call(click).await.expect("click");
    let call_id = outcome.call_id.clone().expect("call id");
    assert_eq!(outcome.deliveries.len(), 1);
    assert_eq!(outcome.deliveries[0].status, Some(200));

    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].0.starts_with("application/x-www-form-urlencoded"));
    let f = form_fields(&got[0].1);
    assert_eq!(field(&f, "event"), Some("ONEXTERNALCALLSTART"));
    assert_eq!(field(&f, "data[CALL_ID]"), Some(call_id.as_str()));
    assert_eq!(field(&f, "data[PHONE_NUMBER]"), Some("+79001234567"));
    assert_eq!(field(&f, "data[USER_ID]"), Some("1"));
    assert_eq!(field(&f, "data[EXTENSION]"), Some("101"));
    assert_eq!(field(&f, "data[LINE_NUMBER]"), Some("73432723033"));
    assert_eq!(field(&f, "data[CRM_ENTITY_TYPE]"), Some("CONTACT"));
    assert_eq!(field(&f, "data[CRM_ENTITY_ID]"), Some("797"));
    assert_eq!(field(&f, "data[IS_MOBILE]"), Some("0"));
    assert_eq!(field(&f, "data[CALL_LIST_ID]"), Some("0"));
    assert_eq!(field(&f, "ts"), Some(start_time().timestamp().to_string().as_str()));
    assert_eq!(
        field(&f, "auth[application_token]"),
        Some(emu.app_credentials().application_token.as_str())
    );
    assert_eq!(
        field(&f, "auth[member_id]"),
        Some(emu.app_credentials().member_id.as_str())
    );
    // The delivered access token works for REST calls.
    let token = field(&f, "auth[access_token]").expect("token").to_owned();
    assert_eq!(app_with(&emu, &token, "user.current", json!({})).await.status, 200);

    // The call is already registered: the connector only finishes it.
    let fin = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": call_id, "USER_ID": 1, "DURATION": 4}),
    )
    .await;
    assert_eq!(result(&fin)["CRM_ENTITY_ID"], 797);
    assert!(emu.card_timeline().visible_to(&call_id).is_empty());

    let unbound = app(
        &emu,
        "event.unbind",
        json!({"event": "ONEXTERNALCALLSTART", "handler": url}),
    )
    .await;
    assert_eq!(result(&unbound), &json!({"count": 1}));
    server.abort();
    emu.shutdown().await;
}

/// A portal offers only the lines it lists: a click on another line is refused (nothing registered, nothing
/// delivered) until `telephony.externalLine.add` lists it; no line at all is the default line, always offered.
#[tokio::test]
async fn a_click_on_a_line_the_portal_does_not_list_is_refused_until_the_line_is_added() {
    let (url, received, server) = handler_server().await;
    let emu = start(frozen_config()).await;
    let bound = app(
        &emu,
        "event.bind",
        json!({"event": "ONEXTERNALCALLSTART", "handler": url}),
    )
    .await;
    assert_eq!(result(&bound), &json!(true));
    let mut on_line = ClickToCall::new(1, "+79001234567");
    on_line.line_number = Some("74950000000".into());

    let refused = emu.click_to_call(on_line.clone()).await.expect_err("an unlisted line");
    assert!(
        refused
            .to_string()
            .contains("line 74950000000 is not listed in the portal"),
        "{refused}"
    );
    assert!(emu.state().calls.is_empty(), "nothing registered");
    assert!(
        emu.deliveries().is_empty() && received.lock().expect("lock").is_empty(),
        "nothing delivered"
    );

    let added = app(
        &emu,
        "telephony.externalLine.add",
        json!({"NUMBER": "74950000000", "NAME": "Main line"}),
    )
    .await;
    assert!(result(&added)["ID"].is_number(), "{}", added.body);
    let outcome = emu.click_to_call(on_line).await.expect("a listed line");
    assert_eq!(outcome.deliveries.len(), 1);
    let f = form_fields(&received.lock().expect("lock")[0].1);
    assert_eq!(field(&f, "data[LINE_NUMBER]"), Some("74950000000"));

    let default_line = emu
        .click_to_call(ClickToCall::new(1, "+79001234568"))
        .await
        .expect("the default line");
    assert_eq!(default_line.deliveries.len(), 1);
    let f = form_fields(&received.lock().expect("lock")[1].1);
    assert_eq!(field(&f, "data[LINE_NUMBER]"), Some(""));
    server.abort();
    emu.shutdown().await;
}

#[tokio::test]
async fn offline_events_are_kept_for_event_offline_get() {
    let emu = start(frozen_config()).await;
    let bound = app(
        &emu,
        "event.bind",
        json!({"event": "ONEXTERNALCALLSTART", "event_type": "offline"}),
    )
    .await;
    assert_eq!(result(&bound), &json!(true));
    let first = emu
        .click_to_call(ClickToCall::new(2, "+79005550000"))
        .await
        .expect("click");
    emu.click_to_call(ClickToCall::new(3, "+79005550001"))
        .await
        .expect("click");
    assert_eq!(first.queued_offline, 1);
    assert!(first.deliveries.is_empty());

    // clear=0 marks the events for a process; they are not returned again until cleared.
    let peek = app(&emu, "event.offline.get", json!({"clear": 0, "limit": 1})).await;
    let r = result(&peek);
    let pid = r["process_id"].as_str().expect("process id").to_owned();
    assert_eq!(r["events"][0]["EVENT_NAME"], "ONEXTERNALCALLSTART");
    assert_eq!(
        r["events"][0]["EVENT_DATA"]["CALL_ID"],
        first.call_id.clone().expect("id").as_str()
    );
    assert_eq!(r["events"][0]["EVENT_DATA"]["USER_ID"], "2");
    // A process that restarted re-selects what it reserved and did not clear, under the same process_id.
    let again = app(&emu, "event.offline.get", json!({"clear": 0, "process_id": pid})).await;
    let again = result(&again);
    assert_eq!(again["process_id"], pid.as_str());
    assert_eq!(again["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(again["events"][0]["ID"], r["events"][0]["ID"]);
    let cleared = app(&emu, "event.offline.clear", json!({"process_id": pid})).await;
    assert_eq!(result(&cleared), &json!(true));
    let rest = app(&emu, "event.offline.get", json!({})).await;
    let events = result(&rest)["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["EVENT_DATA"]["USER_ID"], "3");
    let empty = app(&emu, "event.offline.get", json!({})).await;
    assert_eq!(result(&empty)["events"], json!([]));
    emu.shutdown().await;
}

#[tokio::test]
async fn event_methods_via_webhook_are_wrong_auth_type_and_outgoing_webhooks_get_reduced_auth() {
    let (url, received, server) = handler_server().await;
    let mut cfg = frozen_config();
    cfg.events.outgoing_webhooks.push(OutgoingWebhook {
        event: "ONEXTERNALCALLSTART".into(),
        handler: url.clone(),
        application_token: "outgoing-token".into(),
    });
    let emu = start(cfg).await;
    let a = hook(&emu, "event.get", json!({})).await;
    assert_error(&a, 403, "WRONG_AUTH_TYPE");
    emu.click_to_call(ClickToCall::new(1, "+79001234567"))
        .await
        .expect("click");
    let got = received.lock().expect("lock").clone();
    let f = form_fields(&got[0].1);
    assert_eq!(field(&f, "auth[application_token]"), Some("outgoing-token"));
    assert!(field(&f, "auth[access_token]").is_none());
    assert!(field(&f, "auth[domain]").is_some());
    server.abort();
    emu.shutdown().await;
}

#[tokio::test]
async fn delivery_to_an_unreachable_handler_is_recorded_without_retry() {
    let emu = start(frozen_config()).await;
    // Port 9 on loopback: nothing listens.
    app(
        &emu,
        "event.bind",
        json!({"event": "ONEXTERNALCALLSTART", "handler": "http://127.0.0.1:9/none"}),
    )
    .await;
    let outcome = emu
        .click_to_call(ClickToCall::new(1, "+79001234567"))
        .await
        .expect("click");
    assert_eq!(outcome.deliveries.len(), 1);
    assert!(outcome.deliveries[0].error.is_some());
    assert_eq!(emu.deliveries().len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn down_fault_refuses_connections_and_recovers_on_the_same_port() {
    let emu = start(frozen_config()).await;
    let url = format!("{}user.current.json", emu.webhook_url());
    let client = reqwest::Client::new();
    assert_eq!(client.post(&url).send().await.expect("up").status().as_u16(), 200);
    emu.set_fault(Fault::Down);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = client.post(&url).send().await.expect_err("refused while down");
    assert!(err.is_connect() || err.is_request(), "{err}");
    emu.clear_fault();
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(resp) = client.post(&url).send().await {
            ok = resp.status().as_u16() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "portal back on the same port");
    emu.shutdown().await;
}

#[tokio::test]
async fn timed_fault_clears_itself() {
    let emu = start(frozen_config()).await;
    emu.set_fault_for(Fault::ServerError(502), Duration::from_millis(100));
    let a = hook(&emu, "scope", json!({})).await;
    assert_error(&a, 502, "INTERNAL_SERVER_ERROR");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(emu.fault(), None);
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn unavailable_and_slow_faults() {
    let emu = start(frozen_config()).await;
    emu.set_fault(Fault::Unavailable);
    let resp = reqwest::Client::new()
        .post(format!("{}scope.json", emu.webhook_url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    emu.set_fault(Fault::Slow(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let timed_out = client.post(format!("{}scope.json", emu.webhook_url())).send().await;
    assert!(timed_out.expect_err("slower than the client timeout").is_timeout());
    assert!(started.elapsed() >= Duration::from_millis(100));
    emu.clear_fault();
    emu.shutdown().await;
}

#[tokio::test]
async fn control_api_over_http() {
    let (handler, received, server) = handler_server().await;
    let emu = b24emu::Emulator::start_on(
        frozen_config(),
        "127.0.0.1:0".parse().expect("addr"),
        Some("127.0.0.1:0".parse().expect("addr")),
    )
    .await
    .expect("start");
    let base = emu.base_url();
    let control = format!("http://{}", emu.control_addr().expect("control"));
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let creds = get(format!("{base}/_emu/credentials")).await;
    assert_eq!(creds["webhook_url"], emu.webhook_url());
    assert_eq!(creds["app"]["client_id"], emu.app_credentials().client_id);

    hook(
        &emu,
        "telephony.externalcall.register",
        json!({"USER_ID": 1, "PHONE_NUMBER": "+79001234567", "TYPE": 2}),
    )
    .await;
    let reqs = get(format!("{base}/_emu/requests?method=telephony.externalCall.register")).await;
    assert_eq!(reqs.as_array().map(Vec::len), Some(1));
    assert_eq!(reqs[0]["auth"]["mode"], "webhook");
    let call_id = reqs[0]["response"]["result"]["CALL_ID"]
        .as_str()
        .expect("id")
        .to_owned();
    let timeline = get(format!("{base}/_emu/timeline")).await;
    assert_eq!(timeline["events"][0]["call_id"], call_id.as_str());
    assert_eq!(timeline["events"][0]["action"], "shown");
    let state = get(format!("{base}/_emu/state")).await;
    assert_eq!(state["calls"][0]["call_id"], call_id.as_str());

    let clock = client
        .post(format!("{base}/_emu/clock"))
        .body(r#"{"advance_secs": 600}"#)
        .send()
        .await
        .expect("clock")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(clock["now"], "2026-03-10T11:10:00+03:00");

    // Down through the control port; the portal port refuses; back up through the control port.
    let set = client
        .post(format!("{control}/_emu/fault"))
        .body(r#"{"fault":"down"}"#)
        .send()
        .await
        .expect("set");
    assert_eq!(set.status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client.get(format!("{base}/_emu/state")).send().await.is_err());
    let fault = get(format!("{control}/_emu/fault")).await;
    assert_eq!(fault["fault"]["fault"], "down");
    client
        .delete(format!("{control}/_emu/fault"))
        .send()
        .await
        .expect("clear");
    // The portal port reopens shortly after the fault is cleared.
    let mut up = false;
    for _ in 0..50 {
        if client.get(format!("{base}/_emu/fault")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "portal port reopened");
    let bad = client
        .post(format!("{control}/_emu/fault"))
        .body(r#"{"fault":"meteor"}"#)
        .send()
        .await
        .expect("bad");
    assert_eq!(bad.status().as_u16(), 400);

    client
        .post(format!("{control}/_emu/fault?for_ms=5000"))
        .body(r#"{"fault":"slow","value":10}"#)
        .send()
        .await
        .expect("slow");
    assert_eq!(emu.fault(), Some(Fault::Slow(Duration::from_millis(10))));
    emu.clear_fault();

    let bound = app(
        &emu,
        "event.bind",
        json!({"event": "ONEXTERNALCALLSTART", "handler": handler}),
    )
    .await;
    assert_eq!(result(&bound), &json!(true));
    let outcome = client
        .post(format!("{control}/_emu/click_to_call"))
        .body(r#"{"user_id": 2, "phone_number": "+79001234567"}"#)
        .send()
        .await
        .expect("click")
        .json::<Value>()
        .await
        .expect("json");
    assert!(outcome["call_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("externalCall.")));
    assert_eq!(received.lock().expect("lock").len(), 1);
    let bad_click = client
        .post(format!("{control}/_emu/click_to_call"))
        .body(r#"{"user_id": 77, "phone_number": "+79001234567"}"#)
        .send()
        .await
        .expect("click");
    assert_eq!(bad_click.status().as_u16(), 400);
    server.abort();
    emu.shutdown().await;
}

#[tokio::test]
async fn random_faults_refuse_and_delay_some_requests_in_the_documented_shapes() {
    let emu = start(frozen_config()).await;
    emu.set_fault(Fault::Random(b24emu::RandomFaults {
        seed: 3,
        rate_limited_percent: 20.0,
        server_error_percent: 20.0,
        bad_gateway_percent: 20.0,
        slow_percent: 20.0,
        delay_ms: 10,
    }));
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let r = hook(&emu, "scope", json!({})).await;
        match r.status {
            200 => {}
            503 => assert_error(&r, 503, "QUERY_LIMIT_EXCEEDED"),
            500 => assert_error(&r, 500, "INTERNAL_SERVER_ERROR"),
            502 => assert_error(&r, 502, "INTERNAL_SERVER_ERROR"),
            other => panic!("unexpected status {other}"),
        }
        *statuses.entry(r.status).or_insert(0u64) += 1;
    }
    let counts = emu.fault_counts();
    assert_eq!(statuses.get(&503).copied().unwrap_or(0), counts.rate_limited);
    assert_eq!(statuses.get(&500).copied().unwrap_or(0), counts.server_errors);
    assert_eq!(statuses.get(&502).copied().unwrap_or(0), counts.bad_gateways);
    assert_eq!(statuses.get(&200).copied().unwrap_or(0), 100 - counts.refused());
    for n in [
        counts.rate_limited,
        counts.server_errors,
        counts.bad_gateways,
        counts.delayed,
    ] {
        assert!((5..=40).contains(&n), "{counts:?}");
    }
    emu.clear_fault();
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 200);
    emu.shutdown().await;
}
