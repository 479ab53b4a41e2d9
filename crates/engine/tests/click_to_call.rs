//! S14: click-to-call calls are followed under the CALL_ID Bitrix24 registered on the click.

mod common;

use common::*;
use engine::{click_call_key, ClickRefusal, ClickToCall, Rule};
use serde_json::json;
use tracker::{status, StopReason};

const CALL_ID: &str = "externalCall.0123456789abcdef0123456789abcdef.1700000000";
const REC: &str = "/var/spool/asterisk/monitor/out-1700000000.1.wav";

fn click() -> ClickToCall {
    ClickToCall {
        call_id: CALL_ID.into(),
        user_id: 1,
        phone_number: CLIENT.into(),
        line_number: None,
        crm_entity_type: None,
        crm_entity_id: None,
    }
}

fn setup() -> (engine::Engine, CallSpec) {
    let mut engine = engine(settings());
    let key = engine.expect_click_to_call(click());
    assert_eq!(key, click_call_key(CALL_ID));
    (engine, CallSpec::outgoing(&key, "101"))
}

#[test]
fn answered_click_finishes_the_clicked_call_with_its_talk_time_and_recording() {
    let (mut engine, call) = setup();
    let plan = run(&mut engine, &call, &call.answered_click(REC));
    assert_eq!(
        describe_all(&plan),
        ["finish 0 user=1 duration=10 status=200", &format!("record 0 {REC}")],
        "no register, no card of ours: Bitrix24 registered the call and shows its card"
    );
    assert_eq!(plan.steps[0].params["CALL_ID"], json!(CALL_ID));
    assert_eq!(plan.steps[1].params["CALL_ID"], json!(CALL_ID));
    assert!(plan
        .steps
        .iter()
        .all(|s| s.after.iter().all(|k| !k.ends_with("/register"))));
    assert!(rules(&plan).contains(&Rule::ClickToCall));
}

#[test]
fn statuses_of_unanswered_clicks() {
    let cases = [
        // The employee never picked up.
        (vec!["ring", "stop"], status::CANCELLED, "304"),
        // The employee picked up, the client was busy / did not answer / the employee gave up while it rang.
        (vec!["ring", "dial"], status::BUSY, "486"),
        (vec!["ring", "dial"], status::MISSED, "304"),
        (vec!["ring", "dial"], status::CANCELLED, "603-S"),
        // No employee leg seen at all: still one finish of the clicked call.
        (vec![], status::CANCELLED, "304"),
    ];
    for (steps, result, expected) in cases {
        let (mut engine, call) = setup();
        let mut events = Vec::new();
        for s in &steps {
            events.push(match *s {
                "ring" => call.ringing("c1", 0, "101"),
                "dial" => call.dialing("c1", 3, "101"),
                _ => call.stopped("c1", 20, StopReason::Timeout),
            });
        }
        events.push(call.ended(30, result, false, ""));
        let plan = run(&mut engine, &call, &events);
        assert_eq!(
            describe_all(&plan),
            [format!("finish 0 user=1 duration=0 status={expected}")],
            "{steps:?} result {result}"
        );
        assert_eq!(plan.steps[0].params["CALL_ID"], json!(CALL_ID));
    }
}

#[test]
fn a_refused_click_is_finished_once() {
    let (mut engine, call) = setup();
    let plan = engine.click_refused(&click(), &ClickRefusal::PhoneOffline("PJSIP/101".into()), at(1));
    assert_eq!(describe_all(&plan), ["finish 0 user=1 duration=0 status=480"]);
    assert_eq!(plan.steps[0].key, format!("{}/0/finish", call.key));
    assert!(plan.steps[0].params["FAILED_REASON"]
        .as_str()
        .is_some_and(|r| r.contains("not reachable")));
    assert_eq!(rules(&plan), [Rule::ClickRefused]);
    // The channel's end arrives afterwards: nothing more.
    let late = run(&mut engine, &call, &[call.ended(2, status::UNAVAILABLE, false, "")]);
    assert!(late.steps.is_empty());
    // Refused again (a duplicate report): nothing more either.
    assert!(engine
        .click_refused(&click(), &ClickRefusal::EmployeeNoAnswer, at(3))
        .steps
        .is_empty());
}

#[test]
fn a_click_whose_call_ended_first_is_not_refused_again() {
    let (mut engine, call) = setup();
    let plan = run(
        &mut engine,
        &call,
        &[call.ringing("c1", 0, "101"), call.ended(20, status::MISSED, false, "")],
    );
    assert_eq!(describe_all(&plan), ["finish 0 user=1 duration=0 status=304"]);
    assert!(engine
        .click_refused(&click(), &ClickRefusal::EmployeeNoAnswer, at(21))
        .steps
        .is_empty());
}
