//! The emulator's own rules, seen raw over HTTP: the per-second limit, token lifetimes on its clock, faults.

use std::time::Duration;

use amoemu::{Emulator, EmulatorConfig, Fault};
use serde_json::{json, Value};

async fn get(emu: &Emulator, token: &str, path: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", emu.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.unwrap())
}

async fn refresh(emu: &Emulator, refresh_token: &str) -> (u16, Value) {
    let cfg = emu.config();
    let response = reqwest::Client::new()
        .post(format!("{}/oauth2/access_token", emu.base_url()))
        .json(
            &json!({"client_id": cfg.client_id, "client_secret": cfg.client_secret, "grant_type": "refresh_token",
                      "refresh_token": refresh_token, "redirect_uri": cfg.redirect_uri}),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_request_over_the_per_second_limit_is_refused_and_not_counted() {
    // Two per second instead of seven keeps the burst well inside one second on a busy machine.
    let emu = Emulator::start(EmulatorConfig {
        rate_limit_per_sec: 2,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let (access, _) = emu.initial_tokens();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&emu, &access, "/api/v4/account").await.0);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(get(&emu, &access, "/api/v4/account").await.0, 200);
}

#[tokio::test]
async fn refresh_tokens_live_three_months_on_the_emulator_clock() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (_, first) = emu.initial_tokens();
    let (status, pair) = refresh(&emu, &first).await;
    assert_eq!(status, 200);
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 86_400);
    let second = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&emu, &first).await.1["hint"], "Token has been revoked");
    emu.clock().advance(Duration::from_secs(91 * 86_400));
    let (status, body) = refresh(&emu, &second).await;
    assert_eq!((status, body["hint"].as_str()), (401, Some("Token has expired")));
}

#[tokio::test]
async fn faults_show_the_documented_failures() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (access, refresh_token) = emu.initial_tokens();
    emu.set_fault(Some(Fault::IpBlocked));
    let (status, content_type, body) = get(&emu, &access, "/api/v4/account").await;
    assert_eq!((status, content_type.as_str()), (403, "text/html"));
    assert!(body.contains("403 Forbidden"));
    assert_eq!(
        refresh(&emu, &refresh_token).await.0,
        403,
        "the block covers the token endpoint"
    );
    emu.set_fault(Some(Fault::ServerError(504)));
    let (status, content_type, _) = get(&emu, &access, "/api/v4/account").await;
    assert_eq!((status, content_type.as_str()), (504, "application/problem+json"));
    emu.set_fault(None);
    let (status, content_type, body) = get(&emu, "not-a-token", "/api/v4/account").await;
    assert_eq!((status, content_type.as_str()), (401, "application/problem+json"));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["title"], "Unauthorized");
    assert_eq!(emu.requests().len(), 4, "every request is recorded, refused ones too");
}
