//! Click-to-call from amoCRM's telephony widget end to end: the widget's request (`POST /amocrm/click`, as
//! `packaging/amocrm-widget/script.js` sends it) reaches ringlink's listener, ringlink rings the employee's phone
//! on the real test bed, then the client through the carrier, and records the call in the (emulated) amoCRM
//! account once, as an outgoing call of the user who clicked. Requests with a wrong token or that cannot be
//! dialled are refused with a clear 4xx and dial nothing.

#[path = "e2e/amocrm_office.rs"]
#[allow(dead_code)] // shared with the other amoCRM tests and the bench
mod office;

use std::time::Duration;

use office::process::free_port;
use office::{duration_of, known_client, Office, U101, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "widget-secret-0123456789";
const CLIENT: &str = "+79001234567";

/// ringlink's `[listener]` on `port` and `[click_to_call]` with the widget's token; the employee's phone rings
/// at most 6 s.
fn click_config(port: u16) -> String {
    format!(
        r#"[listener]
bind = "127.0.0.1:{port}"

[click_to_call]
application_token = "{TOKEN}"

[click_to_call.dial]
timeout_secs = 6
"#
    )
}

/// POSTs `body` (`content_type`) to the widget's path; the HTTP status and the JSON answer.
async fn post(port: u16, content_type: &str, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "POST /amocrm/click HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nOrigin: \
         https://example.amocrm.ru\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        answer.to_ascii_lowercase().contains("access-control-allow-origin: *"),
        "the widget in the amoCRM page may read the answer: {answer}"
    );
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

async fn post_json(port: u16, body: Value) -> (u16, Value) {
    post(port, "application/json", &body.to_string()).await
}

#[tokio::test]
async fn a_widget_click_rings_the_employee_then_the_client_and_is_one_outbound_call_of_that_user() {
    let port = free_port();
    let office = Office::start(known_client(), &click_config(port)).await;
    office
        .bed
        .phone(101)
        .answer_after(Duration::from_secs(1))
        .await
        .expect("101");
    office
        .bed
        .carrier()
        .answer_after(Duration::from_secs(2))
        .talk(Duration::from_secs(4))
        .await
        .expect("client");
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlink"))
        .arg("check")
        .arg("--config")
        .arg(office.config_path())
        .output()
        .await
        .expect("ringlink check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains(&format!(
            "the amoCRM widget posts clicks to http://127.0.0.1:{port}/amocrm/click"
        )),
        "{report}"
    );
    assert!(report.contains("refuses a request without the token: 401"), "{report}");
    let (status, answer) = post_json(
        port,
        json!({"token": TOKEN, "user_id": U101, "phone": CLIENT, "click_id": "k1"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let call_id = format!("amocrm.{U101}.k1");
    assert_eq!(answer, json!({"status": "dialling", "call_id": call_id}));
    office.wait_done("/api/v4/calls", 1).await;
    let call = office.the_call();
    assert_eq!(call["direction"], json!("outbound"), "{call}");
    assert_eq!(call["call_status"], json!(4), "101 picked up, then the client: {call}");
    assert_eq!(call["responsible_user_id"], json!(U101), "{call}");
    assert_eq!(call["created_by"], json!(U101), "{call}");
    assert_eq!(call["uniq"], json!(call_id));
    assert!(
        call["phone"].as_str().unwrap_or_default().ends_with("9001234567"),
        "{call}"
    );
    assert!(
        (3..=5).contains(&duration_of(&call)),
        "the talk, not the ringing: {call}"
    );
    assert!(office.emu.popups().is_empty(), "no incoming-call popup for who dials");
    office.bed.wait_all_channels_gone(WAIT).await.expect("call over");

    // The same click again (as a form, the widget's own encoding): accepted, nothing dialled.
    let again = format!("token={TOKEN}&user_id={U101}&phone=%2B79001234567&click_id=k1");
    let (status, answer) = post(port, "application/x-www-form-urlencoded", &again).await;
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("already_dialled")),
        "{answer}"
    );
    // Refused, each with its reason, and nothing dialled.
    let refusals = [
        (
            json!({"token": "wrong-wrong-wrong", "user_id": U101, "phone": CLIENT}),
            401,
        ),
        (json!({"user_id": U101, "phone": CLIENT}), 401),
        (json!({"token": TOKEN, "user_id": 999, "phone": CLIENT}), 422),
        (json!({"token": TOKEN, "user_id": U101}), 400),
        (json!({"token": TOKEN, "user_id": "nobody", "phone": CLIENT}), 400),
    ];
    for (body, expected) in refusals {
        let (status, answer) = post_json(port, body.clone()).await;
        assert_eq!(status, expected, "{body} → {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a reason: {answer}"
        );
    }
    let (_, unknown) = post_json(port, json!({"token": TOKEN, "user_id": 999, "phone": CLIENT})).await;
    assert!(
        unknown["error"]
            .as_str()
            .unwrap_or_default()
            .contains("[amocrm.extensions]"),
        "{unknown}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        office.bed.channels().await.expect("channels").is_empty(),
        "nothing dialled"
    );
    assert_eq!(office.calls().len(), 1, "{}", office.describe());
    let log = office.log();
    assert_eq!(log.matches("click-to-call: ringing the employee").count(), 1, "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged");
    office.assert_nothing_twice();
    office.stop().await;
}

/// The employee does not pick up: the client is never dialled, and amoCRM gets one outgoing call of that user,
/// 0 s, status 6, saying why.
#[tokio::test]
async fn a_widget_click_the_employee_does_not_pick_up_is_one_unanswered_outbound_call() {
    let port = free_port();
    let office = Office::start(known_client(), &click_config(port)).await;
    office.bed.phone(101).no_answer().await.expect("101");
    let (status, answer) = post_json(port, json!({"token": TOKEN, "user_id": U101, "phone": CLIENT})).await;
    assert_eq!((status, &answer["status"]), (200, &json!("dialling")), "{answer}");
    office.wait_done("/api/v4/calls", 1).await;
    let call = office.the_call();
    assert_eq!(call["direction"], json!("outbound"), "{call}");
    assert_eq!(call["call_status"], json!(6), "{call}");
    assert_eq!(call["duration"], json!(0), "{call}");
    assert_eq!(call["responsible_user_id"], json!(U101), "{call}");
    assert_eq!(call["uniq"], answer["call_id"]);
    office.assert_nothing_twice();
    office.stop().await;
}
