//! The control API under `/_emu` and the `amoemu` binary: what a process under test is driven and inspected
//! through when the emulator runs beside it.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use amoemu::{Emulator, EmulatorConfig};
use serde_json::{json, Value};

async fn control(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{base}/_emu{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the control API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn api(base: &str, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<u16, String> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn requests_popups_faults_and_the_clock_are_reachable_over_http() {
    let emu = Emulator::start_on(EmulatorConfig::default(), loopback(), Some(loopback()))
        .await
        .expect("starts");
    let base = emu.base_url();
    let control_base = format!("http://{}", emu.control_addr().expect("a control port"));
    let (status, creds) = control(&base, reqwest::Method::GET, "/credentials", None).await;
    assert_eq!(status, 200);
    assert_eq!(creds["base_url"], json!(base));
    let token = creds["access_token"].as_str().expect("an access token").to_owned();
    assert_eq!(emu.initial_tokens().0, token);

    assert_eq!(
        api(&base, &token, reqwest::Method::GET, "/api/v4/account", None).await,
        Ok(200)
    );
    let popup = json!({"add": [{"type": "phone_call", "phone_number": "+79001234567", "users": [8_000_001]}]});
    let status = api(&base, &token, reqwest::Method::POST, "/api/v2/events", Some(popup)).await;
    assert_eq!(status, Ok(202));

    let (_, requests) = control(&base, reqwest::Method::GET, "/requests?path=/api/v4/account", None).await;
    let requests = requests.as_array().expect("a list").clone();
    assert_eq!(requests.len(), 1, "only the account request: {requests:?}");
    let first_seq = requests[0]["seq"].as_u64().expect("seq");
    let (_, later) = control(
        &base,
        reqwest::Method::GET,
        &format!("/requests?since={first_seq}"),
        None,
    )
    .await;
    assert_eq!(
        later.as_array().map(Vec::len),
        Some(1),
        "the popup request only: {later}"
    );
    assert_eq!(later[0]["path"], "/api/v2/events");
    let (_, popups) = control(&base, reqwest::Method::GET, "/popups", None).await;
    assert_eq!(popups[0]["phone_number"], "+79001234567");
    assert_eq!(popups[0]["users"], json!([8_000_001]));

    // A 429 storm, then the account is down: the control port still answers, and clearing brings it back.
    let (status, _) = control(
        &base,
        reqwest::Method::POST,
        "/fault",
        Some(json!({"kind": "rate_limit_storm"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        api(&base, &token, reqwest::Method::GET, "/api/v4/account", None).await,
        Ok(429)
    );
    let (status, _) = control(
        &base,
        reqwest::Method::POST,
        "/fault",
        Some(json!({"kind": "server_error", "status": 200})),
    )
    .await;
    assert_eq!(status, 400, "a server error is 5xx");
    let (_, _) = control(&base, reqwest::Method::POST, "/fault", Some(json!({"kind": "down"}))).await;
    assert!(
        api(&base, &token, reqwest::Method::GET, "/api/v4/account", None)
            .await
            .is_err(),
        "the port is closed"
    );
    let (status, fault) = control(&control_base, reqwest::Method::GET, "/fault", None).await;
    assert_eq!((status, fault), (200, json!({"fault": {"kind": "down"}})));
    control(&control_base, reqwest::Method::DELETE, "/fault", None).await;
    let mut back = Err(String::new());
    for _ in 0..50 {
        back = api(&base, &token, reqwest::Method::GET, "/api/v4/account", None).await;
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, Ok(200), "the same port reopens");

    // A day later the access token has expired; the recorded requests can be forgotten.
    let (_, clock) = control(
        &base,
        reqwest::Method::POST,
        "/clock",
        Some(json!({"advance_secs": 86_401})),
    )
    .await;
    assert!(clock["unix"].as_i64().is_some());
    control(&base, reqwest::Method::POST, "/limits/reset", None).await;
    assert_eq!(
        api(&base, &token, reqwest::Method::GET, "/api/v4/account", None).await,
        Ok(401)
    );
    let (status, code) = control(&base, reqwest::Method::POST, "/authorization_code", None).await;
    assert_eq!(status, 200);
    assert!(code["code"].as_str().is_some_and(|c| !c.is_empty()));
    control(&base, reqwest::Method::DELETE, "/requests", None).await;
    let (_, requests) = control(&base, reqwest::Method::GET, "/requests", None).await;
    assert_eq!(requests, json!([]), "control requests are not recorded");
    let (status, _) = control(&base, reqwest::Method::POST, "/clock", Some(json!({"backwards": 1}))).await;
    assert_eq!(status, 400);
    emu.shutdown().await;
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_the_account_file_it_is_given() {
    let dir = std::env::temp_dir().join(format!("amoemu-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let data = dir.join("account.toml");
    std::fs::write(
        &data,
        "subdomain = \"ringlinktest\"\nlong_lived_token = \"long-lived-1\"\n\n[[users]]\nid = 42\nname = \"Anna\"\nemail = \"anna@example.test\"\nis_admin = true\n",
    )
    .expect("write the account file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_amoemu"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn amoemu"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let mut creds = Value::Null;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("{base}/_emu/credentials")).await {
            creds = r.json().await.unwrap_or(Value::Null);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(creds["subdomain"], "ringlinktest", "{creds}");
    assert_eq!(creds["long_lived_token"], "long-lived-1");
    let (_, state) = control(&base, reqwest::Method::GET, "/state", None).await;
    let users = state["users"].as_array().expect("users");
    assert!(users.iter().any(|u| u["id"] == 42 && u["name"] == "Anna"), "{state}");
    assert_eq!(
        api(&base, "long-lived-1", reqwest::Method::GET, "/api/v4/account", None).await,
        Ok(200)
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "no_such_setting = 1\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_amoemu"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(&bad)
        .output()
        .expect("run amoemu");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a valid account file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
