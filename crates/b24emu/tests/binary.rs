//! The `b24emu` binary serves a portal described by a TOML file.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn binary_serves_the_example_portal() {
    let port = free_port();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/portal.example.toml");
    let _child = Running(
        Command::new(env!("CARGO_BIN_EXE_b24emu"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data", data])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn b24emu"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut creds = None;
    for _ in 0..100 {
        if let Ok(resp) = client.get(format!("{base}/_emu/credentials")).send().await {
            creds = resp.json::<Value>().await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let creds = creds.expect("binary came up");
    assert_eq!(creds["app"]["access_token"], "demo-access-token");
    let url = format!("{base}/rest/crm.contact.get.json?auth=demo-access-token&id=797");
    let body: Value = client.get(url).send().await.expect("get").json().await.expect("json");
    assert_eq!(body["result"]["NAME"], "Ivan");
    let hook = creds["webhook_url"].as_str().expect("webhook url");
    let lines: Value = client
        .post(format!("{hook}telephony.externalLine.get.json"))
        .send()
        .await
        .expect("lines")
        .json()
        .await
        .expect("json");
    assert_eq!(lines["result"][0]["NUMBER"], "73432723033");
}
