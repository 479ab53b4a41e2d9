//! Calls on a real Asterisk land in (an emulated) Bitrix24 exactly as the scenarios of the product
//! specification say: `ringlink run` between the test bed and the emulator, scenario by scenario.

mod e2e {
    pub mod harness;
}

use e2e::harness::{call_id, methods, text, E2e, CLIENT_BASE, WAIT};
use testbed::scenarios;

/// S1: incoming on the DID → 101 rings → answers, talks 5 s, client hangs up.
/// Bitrix24: register(U1, TYPE 2, LINE_NUMBER, CRM_CREATE 1, SHOW 1) → finish(U1, ≈5 s, 200) → recording.
#[tokio::test]
async fn s1_incoming_answered() {
    let e2e = E2e::start("").await;
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    let seq = e2e.telephony();
    assert_eq!(
        methods(&seq),
        ["register", "finish", "attachrecord"],
        "{}",
        e2e.describe()
    );
    let (register, finish, record) = (&seq[0], &seq[1], &seq[2]);
    assert_eq!(text(register, "USER_ID"), "1");
    assert_eq!(text(register, "TYPE"), "2");
    assert_eq!(text(register, "LINE_NUMBER"), "73432723033");
    assert_eq!(text(register, "CRM_CREATE"), "1");
    assert_eq!(text(register, "SHOW"), "1");
    assert!(
        text(register, "PHONE_NUMBER").ends_with(CLIENT_BASE),
        "{}",
        e2e.describe()
    );
    let id = call_id(register);
    assert_eq!(text(finish, "CALL_ID"), id);
    assert_eq!(text(finish, "USER_ID"), "1");
    assert_eq!(text(finish, "STATUS_CODE"), "200");
    let duration: u64 = text(finish, "DURATION").parse().expect("DURATION");
    assert!((4..=7).contains(&duration), "talk ≈5 s, got {duration}");
    assert_eq!(text(record, "CALL_ID"), id);
    // The card was shown to U1 while 101 rang, and finish took it away.
    let timeline = e2e.emu.card_timeline();
    assert!(!timeline.for_user(1).is_empty(), "U1 saw the card");
    assert!(!timeline.is_visible(1, &id), "card gone after finish");
    e2e.stop().await;
}
