//! S18/S28 auto-distribution end to end: the test bed's dialplan (context `did-auto`) asks the real ringlink which
//! employee the caller belongs to — over HTTP with `CURL()` and over FastAGI — and rings that employee first;
//! with no preference (unknown client, CRM too slow) the call goes to the ringall queue `sales` (101, 102, 103).
//! The CRM is the emulator with a contact of user 2 (extension 102).

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use b24emu::{EmulatorConfig, Fault, SeedEntity};
use harness::{free_port, text, E2e, WAIT};
use store::Store;

const KNOWN: &str = "+79001234567";
const UNKNOWN: &str = "+79005550000";
const TOKEN: &str = "autodist-test-token";

async fn start(ring: Duration, more_config: &str) -> E2e {
    let mut emu_config = EmulatorConfig::default();
    // Stored the way registration searches it (the test bed's rule +7… → 8…).
    emu_config.contacts.push(
        SeedEntity::new(1)
            .field("NAME", "Client")
            .field("ASSIGNED_BY_ID", "2")
            .phone("89001234567", "WORK"),
    );
    let (http, agi) = (free_port(), free_port());
    let extra = harness::autodistribution_config(http, agi, TOKEN, "", more_config);
    let e2e = E2e::start_with(emu_config, &extra).await;
    e2e.wait_log("users directory refreshed", WAIT).await;
    for (name, value) in [
        ("RINGLINK_URL", format!("http://127.0.0.1:{http}")),
        ("RINGLINK_TOKEN", TOKEN.to_owned()),
        ("RINGLINK_AGI", format!("agi://127.0.0.1:{agi}")),
    ] {
        e2e.bed.set_global(name, &value).await.expect("global");
    }
    for ext in [101, 102, 103] {
        e2e.bed.phone(ext).answer_after(ring).await.expect("phone");
    }
    e2e
}

/// One call from `from` through `did-auto` asking over `via`; the USER_IDs of its register and shows.
async fn call(e2e: &E2e, via: &str, from: &str) -> (String, Vec<String>) {
    e2e.emu.clear_requests();
    e2e.bed
        .set_global("INCOMING_ROUTE", &format!("did-auto,{via}"))
        .await
        .expect("route");
    let mut call = e2e.bed.incoming(from).talk(Duration::from_secs(2)).await.expect("call");
    call.finished(WAIT).await.expect("call over");
    e2e.bed.wait_all_channels_gone(WAIT).await.expect("channels gone");
    let finish = e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    assert_eq!(text(&finish[0], "STATUS_CODE"), "200", "{}", e2e.describe());
    let register = e2e.emu.requests_for("telephony.externalcall.register");
    assert_eq!(register.len(), 1, "{}", e2e.describe());
    let shows = e2e
        .emu
        .requests_for("telephony.externalcall.show")
        .iter()
        .map(|r| text(r, "USER_ID").trim_matches(['[', ']']).to_owned())
        .collect();
    (text(&register[0], "USER_ID"), shows)
}

fn assert_owner_only(registered: &(String, Vec<String>), e2e: &E2e) {
    assert_eq!(registered.0, "2", "102 (user 2) rang first: {}", e2e.describe());
    assert!(
        registered.1.is_empty(),
        "no other phone rang (no card shown to anyone else): {:?}\n{}",
        registered.1,
        e2e.describe()
    );
}

#[tokio::test]
async fn s18_known_client_rings_their_manager_over_http_and_fastagi_unknown_goes_to_the_queue() {
    let e2e = start(Duration::from_secs(3), "").await;
    let known = call(&e2e, "http", KNOWN).await;
    assert_owner_only(&known, &e2e);
    e2e.wait_log("contact 1 is the responsibility of user 2: extension 102 first", WAIT)
        .await;

    let over_agi = call(&e2e, "agi", KNOWN).await;
    assert_owner_only(&over_agi, &e2e);

    call_to_queue(&e2e, "agi", UNKNOWN).await;
    e2e.wait_log("no CRM record holds", WAIT).await;

    let log = e2e.log();
    assert!(!log.contains(TOKEN), "the token is never logged");
    assert!(
        log.contains("auto-distribution") && log.contains("cached=true"),
        "the second look-up of the known client came from the cache:\n{log}"
    );
    // The decision is in the call's journal, next to the call's own entries (the call's key is the DID
    // channel's uniqueid, which the dialplan passes).
    let store = store::SqliteStore::open(e2e.dir.path().join("ringlink.db")).expect("store");
    let decided = store
        .recent_calls(20)
        .expect("calls")
        .into_iter()
        .map(|c| store.call_timeline(&c.call_key).expect("timeline"))
        .filter(|timeline| {
            let decision = timeline.iter().any(|e| {
                e.message
                    .starts_with("auto-distribution: contact 1 is the responsibility of user 2")
            });
            decision && timeline.len() > 1
        })
        .count();
    assert_eq!(decided, 2, "both known-client calls journal their decision");
    e2e.stop().await;
}

/// A call from `from` asking over `via` that must take the normal route: the queue rings 101 and 103 (102
/// answers after 3 s).
async fn call_to_queue(e2e: &E2e, via: &str, from: &str) {
    e2e.bed
        .set_global("INCOMING_ROUTE", &format!("did-auto,{via}"))
        .await
        .expect("route");
    let mut placed = e2e.bed.incoming(from).talk(Duration::from_secs(1)).await.expect("call");
    for ext in [101, 103] {
        e2e.bed
            .wait_phone_ringing(ext, WAIT)
            .await
            .unwrap_or_else(|e| panic!("the queue rings {ext}: {e}\n{}", e2e.log()));
    }
    placed.finished(WAIT).await.expect("call over");
    e2e.bed.wait_all_channels_gone(WAIT).await.expect("channels gone");
}

#[tokio::test]
async fn s28_slow_or_failing_crm_falls_back_to_the_normal_route_within_the_budget() {
    let e2e = start(Duration::from_secs(3), "").await;
    e2e.emu.set_fault(Fault::Slow(Duration::from_secs(2)));
    call_to_queue(&e2e, "http", KNOWN).await;
    e2e.wait_log("the CRM did not answer within the 300 ms budget: normal route", WAIT)
        .await;
    e2e.emu.clear_fault();
    // That call's own registration, slowed down too, is over before the next call is counted.
    e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The look-up the budget cut short went on and filled the cache: the next call goes to the manager.
    let next = call(&e2e, "http", KNOWN).await;
    assert_owner_only(&next, &e2e);
    assert!(e2e.log().contains("cached=true"), "{}", e2e.log());

    // The CRM failing: no preference (for a number not cached), never a stuck caller.
    e2e.emu.set_fault(Fault::ServerError(500));
    call_to_queue(&e2e, "agi", "+79007770000").await;
    let log = e2e.log();
    let decided = log
        .lines()
        .filter(|l| l.contains("auto-distribution:") && l.contains("9007770000"))
        .collect::<Vec<_>>();
    assert!(decided.len() == 1 && decided[0].contains("normal route"), "{decided:?}");
    e2e.emu.clear_fault();
    e2e.stop().await;
}

/// `customize_autodistribution` sends the known client to 103 instead of their manager's 102.
#[tokio::test]
async fn the_customize_autodistribution_hook_chooses_another_extension() {
    let dir = tempfile::tempdir().expect("hooks dir");
    std::fs::write(
        dir.path().join("customize_autodistribution.sh"),
        r#"cat > /dev/null; echo '{"data": {"extension": "103"}, "state": "success"}'"#,
    )
    .expect("hook");
    let hooks = format!("[hooks]\ndir = \"{}\"\ntimeout_secs = 2.0\n", dir.path().display());
    let e2e = start(Duration::from_secs(1), &hooks).await;
    let routed = call(&e2e, "agi", KNOWN).await;
    assert_eq!(routed.0, "3", "103 (user 3) rang first: {}", e2e.describe());
    assert!(routed.1.is_empty(), "nobody else rang: {:?}", routed.1);
    e2e.wait_log("customize_autodistribution chose extension 103", WAIT)
        .await;
    e2e.stop().await;
}
