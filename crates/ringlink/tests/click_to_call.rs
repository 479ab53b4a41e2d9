//! S14 click-to-call end to end: the emulator's portal registers the click and posts `ONEXTERNALCALLSTART` to
//! ringlink's listener (bound by ringlink itself as an application), ringlink originates on the real Asterisk
//! (101 first, then the client through the carrier), and finishes the portal's CALL_ID — never a second register.

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use b24emu::{ClickToCall, EmulatorConfig};
use harness::{free_port, text, E2e, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT: &str = "+79001234567";
/// The test bed's trunk `carrier`, listed in Bitrix24 by ringlink.
const LINE: &str = "73432723033";

struct Click {
    e2e: E2e,
    port: u16,
}

async fn start() -> Click {
    start_in("bind_events = true\n").await
}

async fn start_in(mode: &str) -> Click {
    start_on(EmulatorConfig::default(), mode).await
}

/// As [`start_in`], with the portal set up as `emu_config` says.
async fn start_on(emu_config: EmulatorConfig, mode: &str) -> Click {
    let token = emu_config.app.application_token.clone();
    let port = free_port();
    let extra = harness::click_to_call_config(port, &token, mode);
    let e2e = E2e::start_as_app(emu_config, &extra).await;
    e2e.wait_log("ONEXTERNALCALLSTART bound", WAIT).await;
    Click { e2e, port }
}

/// `ringlink check` against the running service.
async fn check(c: &Click) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlink"))
        .arg("check")
        .arg("--config")
        .arg(c.e2e.config_path())
        .output()
        .await
        .expect("ringlink check");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// POSTs `body` to the event handler; the HTTP status.
async fn post(port: u16, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "POST /bitrix24/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn click(c: &Click) -> String {
    let outcome = c
        .e2e
        .emu
        .click_to_call(ClickToCall::new(1, CLIENT))
        .await
        .expect("click-to-call");
    assert_eq!(
        outcome.deliveries.iter().map(|d| d.status).collect::<Vec<_>>(),
        [Some(200)],
        "one delivery, accepted"
    );
    outcome.call_id.expect("the portal registered the click")
}

/// 101 answers after 1 s, then the client after `ring` and talks `talk`.
async fn employee_and_client_answer(c: &Click, ring: Duration, talk: Duration) {
    c.e2e
        .bed
        .phone(101)
        .answer_after(Duration::from_secs(1))
        .await
        .expect("101");
    c.e2e.bed.carrier().answer_after(ring).talk(talk).await.expect("client");
}

/// The messages of the click's journal, in order.
fn click_timeline(c: &Click, call_id: &str) -> Vec<String> {
    use store::Store;
    let store = store::SqliteStore::open(c.e2e.dir.path().join("ringlink.db")).expect("store");
    let timeline = store.call_timeline(&format!("c2c-{call_id}")).expect("timeline");
    timeline.into_iter().map(|e| e.message).collect()
}

/// The click's timeline shows it received and recorded, originated, then finished, in that order.
fn assert_click_states_in_order(c: &Click, call_id: &str) {
    let messages = click_timeline(c, call_id);
    let at = |needle: &str| {
        messages
            .iter()
            .position(|m| m.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the click's timeline: {messages:#?}"))
    };
    let (received, originated, finished) = (
        at("click-to-call received and recorded"),
        at("click-to-call: Originate"),
        at("finish done"),
    );
    assert!(received < originated && originated < finished, "{messages:#?}");
}

fn assert_no_register(c: &Click) {
    assert!(
        c.e2e.emu.requests_for("telephony.externalcall.register").is_empty(),
        "Bitrix24 registered the click itself; ringlink must not register again:\n{}",
        c.e2e.describe()
    );
}

#[tokio::test]
async fn s14_click_answered_then_duplicate_and_forged_deliveries_dial_nothing() {
    let c = start().await;
    employee_and_client_answer(&c, Duration::from_secs(2), Duration::from_secs(4)).await;
    let report = check(&c).await;
    assert!(report.contains("handler mode"), "{report}");
    assert!(
        report.contains("ONEXTERNALCALLSTART is bound for this mode"),
        "{report}"
    );
    assert!(
        report.contains("answers (and refuses a request without the token"),
        "{report}"
    );
    let call_id = click(&c).await;
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    let record = c
        .e2e
        .wait_requests("telephony.externalcall.attachrecord", 1, WAIT)
        .await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "USER_ID"), "1");
    assert_eq!(text(&finish[0], "STATUS_CODE"), "200", "{}", c.e2e.describe());
    let duration: u64 = text(&finish[0], "DURATION").parse().expect("DURATION");
    assert!(
        (3..=5).contains(&duration),
        "talk time only, not the ringing: {duration}"
    );
    assert_eq!(text(&record[0], "CALL_ID"), call_id);
    assert_no_register(&c);
    c.e2e.bed.wait_all_channels_gone(WAIT).await.expect("call over");
    assert_click_states_in_order(&c, &call_id);

    // The same delivery again (Bitrix24 may deliver twice): accepted, nothing dialled.
    let delivered = c.e2e.emu.deliveries()[0].body.clone();
    assert_eq!(post(c.port, &delivered).await, 200);
    c.e2e.wait_log("click-to-call delivered again", WAIT).await;
    // A forged token and no token at all: refused, nothing dialled, the token never in the log.
    let token = c.e2e.emu.app_credentials().application_token;
    let forged = delivered.replace(&token, "0000000000000000ffffffffffffffff");
    assert_eq!(post(c.port, &forged).await, 401);
    let missing: String = delivered
        .split('&')
        .filter(|p| !p.starts_with("auth%5Bapplication_token%5D") && !p.starts_with("auth[application_token]"))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(post(c.port, &missing).await, 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        c.e2e.bed.channels().await.expect("channels").is_empty(),
        "nothing dialled"
    );
    assert_eq!(c.e2e.emu.requests_for("telephony.externalcall.finish").len(), 1);
    let log = c.e2e.log();
    assert_eq!(log.matches("click-to-call: ringing the employee").count(), 1, "{log}");
    assert!(!log.contains(&token), "the application token is never logged");
    c.e2e.stop().await;
}

#[tokio::test]
async fn s14_employee_does_not_answer() {
    let c = start().await;
    c.e2e.bed.phone(101).no_answer().await.expect("101");
    let call_id = click(&c).await;
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "STATUS_CODE"), "304", "{}", c.e2e.describe());
    assert_eq!(text(&finish[0], "DURATION"), "0");
    assert_no_register(&c);
    c.e2e.bed.wait_all_channels_gone(WAIT).await.expect("call over");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.e2e.emu.requests_for("telephony.externalcall.finish").len(), 1);
    c.e2e.stop().await;
}

#[tokio::test]
async fn s14_client_busy() {
    let c = start().await;
    c.e2e
        .bed
        .phone(101)
        .answer_after(Duration::from_secs(1))
        .await
        .expect("101");
    c.e2e
        .bed
        .carrier()
        .busy()
        .ring_for(Duration::from_secs(1))
        .await
        .expect("client");
    let call_id = click(&c).await;
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "STATUS_CODE"), "486", "{}", c.e2e.describe());
    assert_no_register(&c);
    c.e2e.stop().await;
}

#[tokio::test]
async fn s14_employee_hangs_up_while_the_client_rings() {
    let c = start().await;
    c.e2e
        .bed
        .phone(101)
        .answer_after(Duration::from_secs(1))
        .talk(Duration::from_secs(3))
        .await
        .expect("101");
    c.e2e.bed.carrier().no_answer().await.expect("client");
    let call_id = click(&c).await;
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "STATUS_CODE"), "603-S", "{}", c.e2e.describe());
    assert_eq!(text(&finish[0], "DURATION"), "0");
    assert_no_register(&c);
    c.e2e.stop().await;
}

#[tokio::test]
async fn s14_employee_phone_offline_finishes_at_once() {
    let c = start().await;
    // 101 never registers: the PBX cannot reach the phone.
    let call_id = click(&c).await;
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "STATUS_CODE"), "480", "{}", c.e2e.describe());
    assert!(
        text(&finish[0], "FAILED_REASON").contains("not reachable"),
        "{}",
        c.e2e.describe()
    );
    assert_no_register(&c);
    c.e2e.stop().await;
}

/// S27: offline events. The click waits in the portal's queue while ringlink is down; after the restart it is
/// fetched with `event.offline.get`, dialled once, cleared, and finished on its CALL_ID. The trunk's external
/// line, added at the first start, is the line the manager clicks on; the restart adds it no second time.
#[tokio::test]
async fn s27_offline_click_across_a_restart_is_dialled_once() {
    let mut c = start_in("mode = \"offline\"\npoll_min_secs = 0.2\npoll_max_secs = 2\n").await;
    c.e2e.wait_requests("event.offline.get", 1, WAIT).await;
    c.e2e
        .wait_log("line 73432723033 (trunk carrier) is not in Bitrix24: added", WAIT)
        .await;
    let report = check(&c).await;
    assert!(report.contains("offline mode"), "{report}");
    assert!(
        report.contains("ONEXTERNALCALLSTART is bound for this mode"),
        "{report}"
    );
    c.e2e.kill_ringlink();
    employee_and_client_answer(&c, Duration::from_secs(1), Duration::from_secs(3)).await;
    let mut on_line = ClickToCall::new(1, CLIENT);
    on_line.line_number = Some(LINE.into());
    let outcome = c.e2e.emu.click_to_call(on_line).await.expect("click");
    assert_eq!(outcome.queued_offline, 1, "queued, not delivered");
    assert!(outcome.deliveries.is_empty());
    let call_id = outcome.call_id.expect("registered by the portal");
    c.e2e.start_ringlink().await;
    c.e2e
        .wait_log("line 73432723033 (trunk carrier) is listed in Bitrix24", WAIT)
        .await;
    assert_eq!(
        c.e2e.emu.requests_for("telephony.externalline.add").len(),
        1,
        "a restart adds no line twice"
    );
    let lines: Vec<_> = c
        .e2e
        .emu
        .state()
        .external_lines
        .into_iter()
        .map(|l| (l.number, l.name))
        .collect();
    assert_eq!(lines, [(LINE.to_owned(), "Carrier (main DID)".to_owned())]);
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "STATUS_CODE"), "200", "{}", c.e2e.describe());
    let duration: u64 = text(&finish[0], "DURATION").parse().expect("DURATION");
    assert!((2..=4).contains(&duration), "talk time: {duration}");
    c.e2e
        .wait_requests("telephony.externalcall.attachrecord", 1, WAIT)
        .await;
    c.e2e.wait_requests("event.offline.clear", 1, WAIT).await;
    c.e2e.bed.wait_all_channels_gone(WAIT).await.expect("call over");
    // Polling goes on; the cleared click never comes back.
    let polls = c.e2e.emu.requests_for("event.offline.get").len();
    c.e2e.wait_requests("event.offline.get", polls + 2, WAIT).await;
    assert_eq!(c.e2e.emu.requests_for("telephony.externalcall.finish").len(), 1);
    assert_eq!(c.e2e.log().matches("click-to-call: ringing the employee").count(), 1);
    assert_no_register(&c);
    c.e2e.stop().await;
}

/// Offline mode, ringlink SIGKILLed after it fetched and handled a click but before `event.offline.clear` went
/// through (the portal fails that one method): the restarted ringlink fetches the reserved record again under
/// the saved `process_id`, recognises the click by its CALL_ID, dials nothing, and clears it.
#[tokio::test]
async fn offline_click_fetched_but_not_cleared_before_a_kill_is_not_dialled_again() {
    let mut c = start_in("mode = \"offline\"\npoll_min_secs = 0.2\npoll_max_secs = 2\n").await;
    c.e2e.wait_requests("event.offline.get", 1, WAIT).await;
    c.e2e.emu.set_fault(b24emu::Fault::MethodError {
        method: "event.offline.clear".into(),
        status: 500,
    });
    employee_and_client_answer(&c, Duration::from_secs(1), Duration::from_secs(2)).await;
    let outcome = c
        .e2e
        .emu
        .click_to_call(ClickToCall::new(1, CLIENT))
        .await
        .expect("click");
    assert_eq!(outcome.queued_offline, 1, "queued, not delivered");
    let call_id = outcome.call_id.expect("registered by the portal");
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "STATUS_CODE"), "200", "{}", c.e2e.describe());
    c.e2e.bed.wait_all_channels_gone(WAIT).await.expect("call over");
    c.e2e.wait_log("event.offline.clear failed", WAIT).await;
    c.e2e.kill_ringlink();
    let refused = c.e2e.emu.requests_for("event.offline.clear");
    assert!(
        !refused.is_empty() && refused.iter().all(|r| !r.is_ok()),
        "the portal refused every clear"
    );
    assert_eq!(
        c.e2e.emu.state().offline_events.len(),
        1,
        "the click's record is still held by the portal"
    );

    c.e2e.emu.clear_fault();
    c.e2e.start_ringlink().await;
    c.e2e
        .wait_log("offline events reserved before a restart are fetched again", WAIT)
        .await;
    let cleared = loop {
        let ok = c
            .e2e
            .emu
            .requests_for("event.offline.clear")
            .into_iter()
            .filter(|r| r.is_ok())
            .count();
        if ok > 0 || c.e2e.emu.state().offline_events.is_empty() {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(cleared, 1, "cleared once, after the restart");
    assert!(c.e2e.emu.state().offline_events.is_empty(), "the record is gone");
    // Polling goes on; nothing more is dialled or finished.
    let polls = c.e2e.emu.requests_for("event.offline.get").len();
    c.e2e.wait_requests("event.offline.get", polls + 2, WAIT).await;
    assert_eq!(c.e2e.log().matches("click-to-call: ringing the employee").count(), 1);
    assert_eq!(c.e2e.emu.requests_for("telephony.externalcall.finish").len(), 1);
    assert!(c.e2e.bed.wait_all_channels_gone(Duration::from_secs(1)).await.is_ok());
    assert_no_register(&c);
    c.e2e.stop().await;
}

/// A flood of forged, token-less, oversized and malformed requests on the listener dials nothing, and once it is
/// over a real click is dialled as usual.
#[tokio::test]
async fn a_flood_of_bad_requests_dials_nothing_and_the_listener_still_serves_a_click() {
    let c = start().await;
    let forged = "event=ONEXTERNALCALLSTART&data%5BCALL_ID%5D=externalCall.forged.1&data%5BUSER_ID%5D=1\
                  &data%5BPHONE_NUMBER%5D=%2B79001234567&auth%5Bapplication_token%5D=0000000000000000ffffffffffffffff";
    let missing = "event=ONEXTERNALCALLSTART&data%5BCALL_ID%5D=externalCall.none.1&data%5BUSER_ID%5D=1\
                   &data%5BPHONE_NUMBER%5D=%2B79001234567";
    let oversized = format!("event=ONEXTERNALCALLSTART&data%5BX%5D={}", "x".repeat(80 * 1024));
    let bodies: Vec<String> = (0..300)
        .map(|i| match i % 4 {
            0 => forged.to_owned(),
            1 => missing.to_owned(),
            2 => oversized.clone(),
            _ => "%%%not a form%%%".to_owned(),
        })
        .collect();
    let port = c.port;
    let statuses = futures::future::join_all(bodies.into_iter().map(|b| async move { post(port, &b).await })).await;
    for status in &statuses {
        assert!(
            matches!(status, 400 | 401 | 413 | 429),
            "a bad request is refused: {status} in {statuses:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        c.e2e.bed.channels().await.expect("channels").is_empty(),
        "nothing dialled"
    );
    assert!(c.e2e.emu.requests_for("telephony.externalcall.finish").is_empty());

    c.e2e.bed.phone(101).no_answer().await.expect("101");
    let call_id = click(&c).await;
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(c.e2e.log().matches("click-to-call: ringing the employee").count(), 1);
    c.e2e.stop().await;
}

/// Bitrix24 keeps listing a line whose trunk was taken out of the settings (ringlink never deletes a line): a
/// click on it is dialled the default way, through the employees' outgoing context, its journal says why, and
/// the call is finished on its CALL_ID as any other.
#[tokio::test]
async fn a_click_on_a_line_no_trunk_has_any_more_goes_out_the_default_way() {
    const OLD_LINE: &str = "74950009999";
    let mut portal = EmulatorConfig::default();
    portal.external_lines.push(b24emu::SeedLine {
        number: OLD_LINE.into(),
        name: "Old trunk".into(),
        crm_auto_create: true,
    });
    let c = start_on(portal, "bind_events = true\n").await;
    c.e2e
        .wait_log(
            "line 74950009999 (\"Old trunk\") is in Bitrix24 but no trunk of the settings has it: left as it is",
            WAIT,
        )
        .await;
    employee_and_client_answer(&c, Duration::from_secs(1), Duration::from_secs(2)).await;
    let mut on_old_line = ClickToCall::new(1, CLIENT);
    on_old_line.line_number = Some(OLD_LINE.into());
    let outcome = c.e2e.emu.click_to_call(on_old_line).await.expect("a listed line");
    let call_id = outcome.call_id.expect("registered by the portal");
    let finish = c.e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "CALL_ID"), call_id);
    assert_eq!(text(&finish[0], "STATUS_CODE"), "200", "{}", c.e2e.describe());
    assert_no_register(&c);
    c.e2e.bed.wait_all_channels_gone(WAIT).await.expect("call over");
    let messages = click_timeline(&c, &call_id);
    assert!(
        messages.iter().any(
            |m| m.starts_with("click-to-call: line 74950009999 is not one of the settings' lines")
                && m.ends_with("dialled in the default context from-internal")
        ),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("click-to-call: Originate") && m.ends_with("@from-internal")),
        "{messages:#?}"
    );
    assert_eq!(
        c.e2e.emu.requests_for("telephony.externalline.add").len(),
        1,
        "only the configured trunk's line is added; the old one is left alone"
    );
    c.e2e.stop().await;
}
