//! Helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use b24emu::{Emulator, EmulatorConfig};
use chrono::{DateTime, FixedOffset};
use serde_json::Value;

pub fn start_time() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2026-03-10T11:00:00+03:00").expect("valid literal")
}

/// Default portal with a frozen clock, so token expiry and the bucket move only when told.
pub fn frozen_config() -> EmulatorConfig {
    EmulatorConfig::frozen_at(start_time())
}

pub async fn start(cfg: EmulatorConfig) -> Emulator {
    Emulator::start(cfg).await.expect("emulator starts")
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub async fn post_json(url: &str, body: &Value) -> Answer {
    let resp = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("JSON body");
    Answer { status, body }
}

pub async fn post_form(url: &str, body: &str) -> Answer {
    let resp = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("JSON body");
    Answer { status, body }
}

/// Call a method through the incoming webhook with a JSON body.
pub async fn hook(emu: &Emulator, method: &str, params: Value) -> Answer {
    post_json(&format!("{}{method}.json", emu.webhook_url()), &params).await
}

/// Call a method as the OAuth app with the initial access token.
pub async fn app(emu: &Emulator, method: &str, params: Value) -> Answer {
    let token = emu.app_credentials().access_token;
    app_with(emu, &token, method, params).await
}

pub async fn app_with(emu: &Emulator, token: &str, method: &str, mut params: Value) -> Answer {
    if let Some(obj) = params.as_object_mut() {
        obj.insert("auth".into(), Value::String(token.to_owned()));
    }
    post_json(&format!("{}/rest/{method}.json", emu.base_url()), &params).await
}

pub fn result(a: &Answer) -> &Value {
    assert_eq!(a.status, 200, "unexpected answer: {}", a.body);
    &a.body["result"]
}

pub fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "status of {}", a.body);
    assert_eq!(a.body["error"], code, "error code of {}", a.body);
    assert!(
        a.body["error_description"].is_string(),
        "error_description in {}",
        a.body
    );
    assert!(a.body.get("result").is_none(), "no result in an error: {}", a.body);
}

/// POST a JSON text as written (key order preserved, unlike `serde_json::Value`).
pub async fn post_raw_json(url: &str, body: &str) -> Answer {
    let resp = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("JSON body");
    Answer { status, body }
}
