//! The scenarios of `SCENARIOS.md`, as the tracker reports them, and what the engine plans for each.

mod common;

use std::collections::HashMap;

use common::*;
use engine::{resolve, without_card, DirectoryUser, Engine, ResponsibleMode, Rule, StepKind, Timing};
use serde_json::{json, Value};
use tracker::{
    status, CallEndReason, CallEvent, ConversationEndReason, LegOrigin, StopReason, TransferKind, UnparkReason,
};

const REC: &str = "/var/spool/asterisk/monitor/in-1700000000.1.wav";

fn s1_events(call: &CallSpec) -> Vec<CallEvent> {
    vec![
        call.recording("", 0, REC),
        call.ringing("c1", 2, "101"),
        call.answered("c1", 4, "101"),
        call.hung_up("c1", 9, 5),
        call.ended(9, status::TALKED, false, REC),
    ]
}

#[test]
fn s1_incoming_answered() {
    let call = CallSpec::incoming("1700000000.1");
    let mut engine = engine(settings());
    let plan = run(&mut engine, &call, &s1_events(&call));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=5 status=200",
            &format!("record 0 {REC}"),
        ]
    );
    assert_eq!(
        keys(&plan),
        [
            "1700000000.1/0/register",
            "1700000000.1/0/finish",
            "1700000000.1/0/record"
        ]
    );
    let register = &plan.steps[0];
    assert_eq!(register.method, "telephony.externalcall.register");
    assert_eq!(
        register.params,
        json!({
            "USER_ID": 1,
            "PHONE_NUMBER": CLIENT,
            "TYPE": 2,
            "CALL_START_DATE": T0_BITRIX,
            "CRM_CREATE": 1,
            "SHOW": 1,
            "EXTERNAL_CALL_ID": "1700000000.1",
            "LINE_NUMBER": DID,
            "CRM_SOURCE": "CALL",
        })
    );
    assert_eq!(
        register.timing,
        Timing::DurableCardWhileRinging {
            conversation: "c1".into()
        }
    );
    let finish = &plan.steps[1];
    assert_eq!(finish.after, ["1700000000.1/0/register"]);
    assert_eq!(finish.timing, Timing::Durable);
    assert_eq!(finish.params["ADD_TO_CHAT"], json!(1));
    let record = &plan.steps[2];
    assert_eq!(record.method, "telephony.externalCall.attachRecord");
    assert_eq!(record.params["FILENAME"], json!("in-1700000000.1.wav"));
    assert!(record.after.contains(&"1700000000.1/0/finish".to_owned()));
    // The worker resolves the CALL_ID once register has answered.
    let results: HashMap<String, Value> = HashMap::from([(
        "1700000000.1/0/register".to_owned(),
        json!({"CALL_ID": "externalCall.abc.1", "CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": 5}),
    )]);
    let sent = resolve(&finish.params, |k| results.get(k)).expect("resolvable");
    assert_eq!(
        sent,
        json!({"CALL_ID": "externalCall.abc.1", "USER_ID": 1, "DURATION": 5, "STATUS_CODE": "200", "ADD_TO_CHAT": 1})
    );
    assert_eq!(
        rules(&plan),
        [
            Rule::FirstLegRegisters,
            Rule::AnswerTakesRegistration,
            Rule::FinishTalk,
            Rule::AttachRecord
        ]
    );
    assert_eq!(engine.live_calls(), 0, "state is dropped when the call ends");
}

fn s2_events(call: &CallSpec) -> Vec<CallEvent> {
    vec![
        call.ringing("c1", 2, "101"),
        call.stopped("c1", 22, StopReason::CallerGone),
        call.ended(22, status::MISSED, false, ""),
    ]
}

#[test]
fn s2_incoming_missed() {
    let call = CallSpec::incoming("1700000000.2");
    let mut engine = engine(settings());
    let plan = run(&mut engine, &call, &s2_events(&call));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "hide 0 user=1",
            "owner 0",
            "finish 0 user=owner|1 duration=0 status=304",
        ]
    );
    let hide = step(&plan, "1700000000.2/0/hide/1/0");
    assert_eq!(
        hide.timing,
        Timing::UndoCard {
            shown_by: "1700000000.2/0/register".into(),
            finish: "1700000000.2/0/finish".into()
        }
    );
    let owner = step(&plan, "1700000000.2/0/owner");
    assert_eq!(owner.params, json!({"PHONE_NUMBER": CLIENT}));
    assert_eq!(owner.after, ["1700000000.2/0/register"]);
    let finish = step(&plan, "1700000000.2/0/finish");
    assert_eq!(finish.after, ["1700000000.2/0/register", "1700000000.2/0/owner"]);
    // Existing contact owned by U3: the finish names U3.
    let mut results: HashMap<String, Value> = HashMap::from([
        (
            "1700000000.2/0/register".to_owned(),
            json!({"CALL_ID": "externalCall.x", "CRM_CREATED_ENTITIES": [], "CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 7}),
        ),
        (
            "1700000000.2/0/owner".to_owned(),
            json!([{"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 7, "ASSIGNED_BY_ID": 3}]),
        ),
    ]);
    assert_eq!(
        resolve(&finish.params, |k| results.get(k)).expect("resolvable")["USER_ID"],
        3
    );
    // A lead created by this very call has no real owner yet: the last employee rung (U1).
    results.insert(
        "1700000000.2/0/register".to_owned(),
        json!({"CALL_ID": "externalCall.x", "CRM_CREATED_ENTITIES": [{"ENTITY_TYPE": "LEAD", "ENTITY_ID": 8}]}),
    );
    assert_eq!(
        resolve(&finish.params, |k| results.get(k)).expect("resolvable")["USER_ID"],
        1
    );
    let missed = plan
        .journal
        .iter()
        .find(|d| d.rule == Rule::MissedResponsible)
        .expect("the responsible decision is journaled");
    assert_eq!(missed.data["fallback"], 1);
}

#[test]
fn s2_missed_task_goes_to_the_responsible_bound_to_the_entity() {
    let call = CallSpec::incoming("1700000000.2");
    let mut s = settings();
    s.missed.task.enabled = true;
    s.missed.task.created_by = Some(DEFAULT_USER);
    let mut engine = engine(s);
    let plan = run(&mut engine, &call, &s2_events(&call));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "hide 0 user=1",
            "owner 0",
            "finish 0 user=owner|1 duration=0 status=304",
            "task 0 user=owner|1",
        ]
    );
    let task = step(&plan, "1700000000.2/0/task");
    assert_eq!(task.method, "tasks.task.add");
    assert!(task.after.contains(&"1700000000.2/0/finish".to_owned()));
    let results: HashMap<String, Value> = HashMap::from([
        (
            "1700000000.2/0/register".to_owned(),
            json!({"CALL_ID": "externalCall.x", "CRM_CREATED_ENTITIES": [], "CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": 11201}),
        ),
        ("1700000000.2/0/owner".to_owned(), json!([{"ASSIGNED_BY_ID": 3}])),
        ("1700000000.2/0/finish".to_owned(), json!({"CALL_ID": "externalCall.x"})),
    ]);
    let fields = resolve(&task.params, |k| results.get(k)).expect("resolvable")["fields"].clone();
    assert_eq!(fields["RESPONSIBLE_ID"], 3);
    assert_eq!(fields["UF_CRM_TASK"], json!(["L_11201"]));
    assert_eq!(fields["TITLE"], json!(format!("Missed call from {CLIENT}")));
    assert_eq!(fields["CREATED_BY"], json!(DEFAULT_USER));
    // Ended at T0+22 s, deadline 60 minutes later, in the PBX's zone.
    assert_eq!(fields["DEADLINE"], json!("2023-11-15T02:13:42+03:00"));
}

fn s3_events(call: &CallSpec) -> Vec<CallEvent> {
    vec![
        call.recording("", 0, REC),
        call.queue_ringing("c1", 2, "101"),
        call.queue_ringing("c2", 2, "102"),
        call.queue_ringing("c3", 2, "103"),
        call.answered("c2", 6, "102"),
        call.stopped("c1", 6, StopReason::AnsweredElsewhere),
        call.stopped("c3", 6, StopReason::AnsweredElsewhere),
        call.hung_up("c2", 36, 30),
        call.ended(36, status::TALKED, false, REC),
    ]
}

#[test]
fn s3_queue_ringall() {
    let call = CallSpec::incoming("1700000000.3");
    let mut engine = engine(settings());
    let plan = run(&mut engine, &call, &s3_events(&call));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "show 0 user=2",
            "show 0 user=3",
            "hide 0 user=1",
            "hide 0 user=3",
            "finish 0 user=2 duration=30 status=200",
            &format!("record 0 {REC}"),
        ]
    );
    assert_eq!(
        keys(&plan),
        [
            "1700000000.3/0/register",
            "1700000000.3/0/show/2/0",
            "1700000000.3/0/show/3/0",
            "1700000000.3/0/hide/1/0",
            "1700000000.3/0/hide/3/0",
            "1700000000.3/0/finish",
            "1700000000.3/0/record",
        ]
    );
    let show = step(&plan, "1700000000.3/0/show/2/0");
    assert_eq!(show.method, "telephony.externalcall.show");
    assert_eq!(
        show.params,
        json!({"CALL_ID": {"$ref": {"step": "1700000000.3/0/register", "field": "CALL_ID"}}, "USER_ID": [2]})
    );
    assert_eq!(
        show.timing,
        Timing::WhileRinging {
            conversation: "c2".into()
        }
    );
    let hide = step(&plan, "1700000000.3/0/hide/3/0");
    assert_eq!(hide.after, ["1700000000.3/0/register", "1700000000.3/0/show/3/0"]);
    assert_eq!(rules(&plan).iter().filter(|r| **r == Rule::ShowRingingLeg).count(), 2);
}

#[test]
fn replanning_the_same_events_gives_the_same_steps() {
    let call = CallSpec::incoming("1700000000.3");
    let first = run(&mut engine(settings()), &call, &s3_events(&call));
    let again = run(&mut engine(settings()), &call, &s3_events(&call));
    assert_eq!(first.steps, again.steps);
}

#[test]
fn s4_queue_one_by_one() {
    let call = CallSpec::incoming("1700000000.4");
    let mut engine = engine(settings());
    let events = vec![
        call.queue_ringing("c1", 2, "101"),
        call.stopped("c1", 7, StopReason::Timeout),
        call.queue_ringing("c2", 8, "102"),
        call.stopped("c2", 13, StopReason::Timeout),
        call.queue_ringing("c3", 14, "103"),
        call.answered("c3", 16, "103"),
        call.hung_up("c3", 46, 30),
        call.ended(46, status::TALKED, false, ""),
    ];
    let plan = run(&mut engine, &call, &events);
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "hide 0 user=1",
            "show 0 user=2",
            "hide 0 user=2",
            "show 0 user=3",
            "finish 0 user=3 duration=30 status=200",
        ]
    );
    // Drop rule for a show that came due late: the engine knows which legs ring now.
    let live = call.live();
    let mut engine = common::engine(settings());
    for event in &events[..3] {
        engine.handle(event, Some(&live), event.time());
    }
    assert!(engine.is_ringing(&call.key, "c2"));
    assert!(!engine.is_ringing(&call.key, "c1"));
    engine.handle(&events[3], Some(&live), at(13));
    assert!(!engine.is_ringing(&call.key, "c2"));
}

/// What may still go in one request with a hide: the owner lookup of a call that can still end missed, the hide
/// of another card still up; nothing once the call was answered and no other card is up.
#[test]
fn a_hide_may_be_joined_while_the_call_can_still_end_missed_or_another_card_is_up() {
    let call = CallSpec::incoming("1700000000.4");
    let live = call.live();
    let feed = |engine: &mut Engine, events: &[CallEvent]| {
        for event in events {
            engine.handle(event, Some(&live), event.time());
        }
    };
    // S4's first ring round ended: the caller may hang up now, and the missed call's lookup follow the hide.
    let mut looks_up = engine(settings());
    feed(
        &mut looks_up,
        &[
            call.queue_ringing("c1", 2, "101"),
            call.stopped("c1", 7, StopReason::Timeout),
        ],
    );
    assert!(looks_up.may_join_hide(&call.key));
    // Answered: no missed call, no other card up.
    feed(
        &mut looks_up,
        &[call.queue_ringing("c2", 8, "102"), call.answered("c2", 10, "102")],
    );
    assert!(!looks_up.may_join_hide(&call.key));
    // Ended: its last steps are planned, with the lookup the settings ask for.
    feed(&mut looks_up, &[call.ended(20, status::TALKED, false, "")]);
    assert!(looks_up.may_join_hide(&call.key));

    let mut s = settings();
    s.missed.responsible = vec![ResponsibleMode::LastRung, ResponsibleMode::DefaultUser];
    let mut no_lookup = engine(s);
    feed(
        &mut no_lookup,
        &[
            call.queue_ringing("c1", 2, "101"),
            call.queue_ringing("c2", 2, "102"),
            call.stopped("c1", 5, StopReason::Busy),
        ],
    );
    assert!(no_lookup.may_join_hide(&call.key), "U2's card is still up");
    feed(&mut no_lookup, &[call.stopped("c2", 7, StopReason::Timeout)]);
    assert!(
        !no_lookup.may_join_hide(&call.key),
        "no card up, and no lookup for a missed call"
    );
    feed(&mut no_lookup, &[call.ended(9, status::MISSED, false, "")]);
    assert!(!no_lookup.may_join_hide(&call.key));
}

#[test]
fn s5_queue_abandoned() {
    let call = CallSpec::incoming("1700000000.5");
    let mut engine = engine(settings());
    let events = vec![
        call.queue_ringing("c1", 2, "101"),
        call.queue_ringing("c2", 2, "102"),
        call.stopped("c1", 17, StopReason::Timeout),
        call.stopped("c2", 17, StopReason::Timeout),
        call.queue_ringing("c3", 20, "103"),
        call.stopped("c3", 25, StopReason::CallerGone),
        call.ended(25, status::MISSED, false, ""),
    ];
    let plan = run(&mut engine, &call, &events);
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "show 0 user=2",
            "hide 0 user=1",
            "hide 0 user=2",
            "show 0 user=3",
            "hide 0 user=3",
            "owner 0",
            // entity owner → last employee rung (U3) → U9; U3 settles it.
            "finish 0 user=owner|3 duration=0 status=304",
        ]
    );
}

#[test]
fn s5_responsible_chain_without_owner_is_settled_at_once() {
    let call = CallSpec::incoming("1700000000.5");
    let mut s = settings();
    s.missed.responsible = vec![ResponsibleMode::DefaultUser, ResponsibleMode::LastRung];
    let mut engine = engine(s);
    let plan = run(
        &mut engine,
        &call,
        &[
            call.queue_ringing("c1", 2, "101"),
            call.stopped("c1", 17, StopReason::CallerGone),
            call.ended(17, status::MISSED, false, ""),
        ],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "hide 0 user=1",
            "finish 0 user=9 duration=0 status=304",
        ]
    );
}

#[test]
fn s6_ivr_abandoned() {
    let call = CallSpec::incoming("1700000000.6");
    let mut engine = engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[call.recording("", 0, REC), call.ended(30, status::MISSED, true, REC)],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=9 type=2 show=0",
            "owner 0",
            "finish 0 user=owner|9 duration=0 status=304",
        ]
    );
    let register = &plan.steps[0];
    assert_eq!(register.timing, Timing::Durable);
    assert_eq!(register.params["CALL_START_DATE"], json!(T0_BITRIX));
    assert_eq!(register.params["EXTERNAL_CALL_ID"], json!("1700000000.6"));
    assert!(rules(&plan).contains(&Rule::IvrAbandoned));
}

#[test]
fn s6_ivr_without_any_default_responsible_is_journaled() {
    let call = CallSpec::incoming("1700000000.6");
    let mut s = settings();
    s.missed.default_user = None;
    let mut engine = engine(s);
    let plan = run(&mut engine, &call, &[call.ended(30, status::MISSED, true, "")]);
    assert!(plan.steps.is_empty());
    assert_eq!(rules(&plan), [Rule::NoResponsible]);
}

#[test]
fn s7_outgoing_answered() {
    let call = CallSpec::outgoing("1700000000.7", "101");
    let mut engine = engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.recording("c1", 1, REC),
            call.dialing("c1", 1, "101"),
            call.answered("c1", 10, "101"),
            call.hung_up("c1", 15, 5),
            call.ended(15, status::TALKED, false, REC),
        ],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=1 show=1",
            "finish 0 user=1 duration=5 status=200",
            &format!("record 0 {REC}"),
        ]
    );
    let register = &plan.steps[0];
    assert_eq!(register.params["PHONE_NUMBER"], json!(CLIENT));
    assert_eq!(register.params["LINE_NUMBER"], json!(DID));
    assert_eq!(
        register.params["CRM_CREATE"],
        json!(0),
        "outgoing lead creation is off by default"
    );
    let mut s = settings();
    s.crm_create.outgoing = true;
    let plan = run(&mut common::engine(s), &call, &[call.dialing("c1", 1, "101")]);
    assert_eq!(plan.steps[0].params["CRM_CREATE"], json!(1));
}

#[test]
fn s8_outgoing_failures() {
    for (reason, result, code) in [
        (StopReason::Busy, status::BUSY, "486"),
        (StopReason::Declined, status::DECLINED, "603"),
        (StopReason::Timeout, status::MISSED, "304"),
        (StopReason::CallerGone, status::CANCELLED, "603-S"),
        (StopReason::Unavailable, status::NOT_FOUND, "404"),
    ] {
        let call = CallSpec::outgoing("1700000000.8", "101");
        let mut engine = engine(settings());
        let plan = run(
            &mut engine,
            &call,
            &[
                call.dialing("c1", 1, "101"),
                call.stopped("c1", 20, reason),
                call.ended(20, result, false, ""),
            ],
        );
        assert_eq!(
            describe_all(&plan),
            [
                "register 0 user=1 type=1 show=1".to_owned(),
                "hide 0 user=1".to_owned(),
                format!("finish 0 user=1 duration=0 status={code}"),
            ],
            "result {result}"
        );
    }
}

fn s9_events(call: &CallSpec) -> Vec<CallEvent> {
    vec![
        call.ringing("c2", 1, "102"),
        call.answered("c2", 3, "102"),
        call.hung_up("c2", 10, 7),
        call.ended(10, status::TALKED, false, ""),
    ]
}

#[test]
fn s9_local_calls_are_not_registered_by_default() {
    let call = CallSpec::local("1700000000.9", "101", "102");
    let mut engine = engine(settings());
    let plan = run(&mut engine, &call, &s9_events(&call));
    assert!(plan.steps.is_empty());
    assert_eq!(rules(&plan), [Rule::LocalCalls]);
    assert_eq!(engine.live_calls(), 0);
}

#[test]
fn s9_local_calls_with_the_setting_are_the_callers_outgoing_calls() {
    let call = CallSpec::local("1700000000.9", "101", "102");
    let mut s = settings();
    s.register_local_calls = true;
    let mut engine = engine(s);
    let plan = run(&mut engine, &call, &s9_events(&call));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=1 show=1",
            "finish 0 user=1 duration=7 status=200",
        ]
    );
    assert_eq!(plan.steps[0].params["PHONE_NUMBER"], json!("102"));
    assert!(plan.steps[0].params.get("LINE_NUMBER").is_none());
}

#[test]
fn s10_blind_transfer() {
    let call = CallSpec::incoming("1700000000.10");
    let mut engine = engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.recording("", 0, REC),
            call.ringing("c1", 2, "101"),
            call.answered("c1", 4, "101"),
            CallEvent::Transferred {
                call: call.key.clone(),
                conversation: "c1".into(),
                time: at(14),
                kind: TransferKind::Blind,
                target: "102".into(),
            },
            call.talk_ended("c1", 14, 10, ConversationEndReason::Transferred),
            CallEvent::LegRinging(call.leg("c2", 14, "102", LegOrigin::Transfer)),
            call.answered_by("c2", 17, "102", LegOrigin::Transfer),
            call.hung_up("c2", 37, 20),
            call.ended(37, status::TALKED, false, REC),
        ],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=10 status=200",
            "register 1 user=2 type=2 show=1",
            "finish 1 user=2 duration=20 status=200",
            // The second talker hung up and the call went on no further: its recording goes with its finish;
            // the first one's waits for the call's end (the file grew while the call went on).
            &format!("record 1 {REC}"),
            &format!("record 0 {REC}"),
        ]
    );
    let second = step(&plan, "1700000000.10/1/register");
    assert_eq!(second.params["EXTERNAL_CALL_ID"], json!("1700000000.10-1"));
    assert_eq!(second.params["PHONE_NUMBER"], json!(CLIENT), "one client entity");
    assert_eq!(second.params["CALL_START_DATE"], json!("2023-11-15T01:13:34+03:00"));
}

#[test]
fn s11_attended_transfer() {
    let main = CallSpec::incoming("1700000000.11");
    let consult = CallSpec::local("1700000000.20", "101", "102");
    let mut engine = engine(settings());
    let mut plan = run(
        &mut engine,
        &main,
        &[
            main.recording("", 0, REC),
            main.ringing("c1", 2, "101"),
            main.answered("c1", 4, "101"),
        ],
    );
    let consult_plan = run(
        &mut engine,
        &consult,
        &[
            consult.ringing("c2", 10, "102"),
            consult.answered("c2", 12, "102"),
            consult.talk_ended(
                "c2",
                20,
                8,
                ConversationEndReason::MovedToCall { call: main.key.clone() },
            ),
            CallEvent::CallEnded {
                call: consult.key.clone(),
                time: at(20),
                reason: CallEndReason::Merged { into: main.key.clone() },
                call_full: Box::new(consult.full(status::TALKED, false, "", true)),
            },
        ],
    );
    assert!(consult_plan.steps.is_empty(), "the consultation is a local call");
    assert_eq!(rules(&consult_plan), [Rule::LocalCalls]);
    let rest = run(
        &mut engine,
        &main,
        &[
            CallEvent::Transferred {
                call: main.key.clone(),
                conversation: "c1".into(),
                time: at(20),
                kind: TransferKind::Attended,
                target: "102".into(),
            },
            main.talk_ended("c1", 20, 16, ConversationEndReason::Transferred),
            main.answered_by("c2", 20, "102", LegOrigin::Transfer),
            main.hung_up("c2", 45, 25),
            main.ended(45, status::TALKED, false, REC),
        ],
    );
    plan.steps.extend(rest.steps);
    plan.journal.extend(rest.journal);
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=16 status=200",
            "register 1 user=2 type=2 show=0",
            "finish 1 user=2 duration=25 status=200",
            // The second talker hung up and the call went on no further: its recording goes with its finish;
            // the first one's waits for the call's end (the file grew while the call went on).
            &format!("record 1 {REC}"),
            &format!("record 0 {REC}"),
        ]
    );
    assert!(rules(&plan).contains(&Rule::TakeoverRegisters));
}

#[test]
fn s12_pickup() {
    let call = CallSpec::incoming("1700000000.12");
    let expected = [
        "register 0 user=1 type=2 show=1",
        "hide 0 user=1",
        "finish 0 user=2 duration=12 status=200",
    ];
    // The tracker may report the pickup's answer before or after the picked leg's stop.
    let stop = call.stopped("c1", 6, StopReason::PickedUp { by: "c2".into() });
    let answer = call.answered_by("c2", 6, "102", LegOrigin::Pickup);
    for (first, second) in [(stop.clone(), answer.clone()), (answer, stop)] {
        let mut engine = engine(settings());
        let plan = run(
            &mut engine,
            &call,
            &[
                call.ringing("c1", 2, "101"),
                first,
                second,
                call.hung_up("c2", 18, 12),
                call.ended(18, status::TALKED, false, ""),
            ],
        );
        assert_eq!(describe_all(&plan), expected);
    }
}

#[test]
fn s13_park_and_retrieve() {
    let call = CallSpec::incoming("1700000000.13");
    let mut engine = engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.recording("", 0, REC),
            call.ringing("c1", 2, "101"),
            call.answered("c1", 4, "101"),
            CallEvent::Parked {
                call: call.key.clone(),
                conversation: "c1".into(),
                time: at(12),
                lot: "default".into(),
                space: "701".into(),
            },
            call.talk_ended("c1", 12, 8, ConversationEndReason::Parked),
            CallEvent::Unparked {
                call: call.key.clone(),
                conversation: "c3".into(),
                time: at(30),
                reason: UnparkReason::Retrieved {
                    conversation: "c3".into(),
                },
            },
            call.answered_by("c3", 30, "103", LegOrigin::ParkRetrieval),
            call.hung_up("c3", 50, 20),
            call.ended(50, status::TALKED, false, REC),
        ],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=8 status=200",
            "register 1 user=3 type=2 show=0",
            "finish 1 user=3 duration=20 status=200",
            // The second talker hung up and the call went on no further: its recording goes with its finish;
            // the first one's waits for the call's end (the file grew while the call went on).
            &format!("record 1 {REC}"),
            &format!("record 0 {REC}"),
        ]
    );
}

#[test]
fn s16_restart_mid_call_plans_the_same_keys() {
    // Before the crash: 101 rang (the register was stored). After the restart the tracker rebuilds the call
    // and reports 101's leg as answered (origin Resync).
    let call = CallSpec::incoming("1700000000.16");
    let before = run(&mut engine(settings()), &call, &[call.ringing("c1", 2, "101")]);
    let after = run(
        &mut engine(settings()),
        &call,
        &[
            call.answered_by("c1", 40, "101", LegOrigin::Resync),
            call.hung_up("c1", 60, 56),
            call.ended(60, status::TALKED, false, ""),
        ],
    );
    assert_eq!(keys(&before), ["1700000000.16/0/register"]);
    assert_eq!(keys(&after), ["1700000000.16/0/register", "1700000000.16/0/finish"]);
    assert_eq!(
        before.steps[0].params["EXTERNAL_CALL_ID"],
        after.steps[0].params["EXTERNAL_CALL_ID"]
    );
    // The recovered register must not pop a card up; the stored one (SHOW 1) is sent late through without_card.
    assert_eq!(after.steps[0].params["SHOW"], json!(0));
    let late = without_card(&before.steps[0].params);
    assert_eq!(late["SHOW"], json!(0));
    assert_eq!(late["CALL_START_DATE"], json!(T0_BITRIX));
}

#[test]
fn s19_freepbx_queue_with_retries() {
    // Local/<ext>@from-queue pairs are resolved by the tracker to the real phones; members are retried.
    let call = CallSpec::incoming("1700000000.19");
    let mut engine = engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.queue_ringing("c1", 2, "101"),
            call.queue_ringing("c2", 2, "102"),
            call.stopped("c1", 17, StopReason::Timeout),
            call.stopped("c2", 17, StopReason::Timeout),
            call.queue_ringing("c3", 19, "101"),
            call.queue_ringing("c4", 19, "102"),
            call.answered("c4", 21, "102"),
            call.stopped("c3", 21, StopReason::AnsweredElsewhere),
            call.hung_up("c4", 31, 10),
            call.ended(31, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        keys(&plan),
        [
            "1700000000.19/0/register",
            "1700000000.19/0/show/2/0",
            "1700000000.19/0/hide/1/0",
            "1700000000.19/0/hide/2/0",
            "1700000000.19/0/show/1/1",
            "1700000000.19/0/show/2/1",
            "1700000000.19/0/hide/1/1",
            "1700000000.19/0/finish",
        ]
    );
    assert_eq!(
        describe(step(&plan, "1700000000.19/0/finish")),
        "finish 0 user=2 duration=10 status=200"
    );
}

#[test]
fn s21_black_listed_trunk_registers_nothing() {
    let mut call = CallSpec::incoming("1700000000.21");
    call.trunk = "74950000000".into();
    call.to = "74950000000".into();
    let mut s = settings();
    s.black_list.trunks = vec!["74950000000".into()];
    let mut engine = engine(s);
    let plan = run(&mut engine, &call, &s1_events(&call));
    assert!(plan.steps.is_empty());
    assert_eq!(rules(&plan), [Rule::BlackListTrunk]);
    assert!(plan.journal[0].reason.contains("74950000000"));
    assert_eq!(engine.live_calls(), 0);
}

#[test]
fn s21_black_listed_extension_is_never_registered() {
    let mut s = settings();
    s.black_list.extensions = vec!["103".into()];
    // Only 103 rings: nothing at all (and no IVR registration either).
    let call = CallSpec::incoming("1700000000.22");
    let mut engine = engine(s.clone());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c3", 2, "103"),
            call.answered("c3", 4, "103"),
            call.hung_up("c3", 14, 10),
            call.ended(14, status::TALKED, false, REC),
        ],
    );
    assert!(plan.steps.is_empty(), "{:?}", describe_all(&plan));
    assert_eq!(rules(&plan), [Rule::BlackListExtension]);
    // A queue of 101 and 103: 103 gets no card.
    let call = CallSpec::incoming("1700000000.23");
    let mut engine = common::engine(s);
    let plan = run(
        &mut engine,
        &call,
        &[
            call.queue_ringing("c1", 2, "101"),
            call.queue_ringing("c3", 2, "103"),
            call.answered("c1", 5, "101"),
            call.stopped("c3", 5, StopReason::AnsweredElsewhere),
            call.hung_up("c1", 15, 10),
            call.ended(15, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=10 status=200",
        ]
    );
}

#[test]
fn white_lists_admit_only_their_extensions_and_trunks() {
    let call = CallSpec::incoming("1700000000.24");
    let mut s = settings();
    s.white_list.extensions = vec!["102".into()];
    let plan = run(&mut engine(s), &call, &s3_events(&call));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=2 type=2 show=1",
            "finish 0 user=2 duration=30 status=200",
            &format!("record 0 {REC}"),
        ]
    );
    let mut s = settings();
    s.white_list.trunks = vec!["74950000000".into()];
    let plan = run(&mut engine(s), &call, &s3_events(&call));
    assert!(plan.steps.is_empty());
    assert_eq!(rules(&plan), [Rule::WhiteListTrunk]);
}

#[test]
fn need_registration_hook_overrides_the_settings() {
    let call = CallSpec::incoming("1700000000.25");
    let mut engine = engine(settings());
    engine.set_gate(Box::new(|_: &str, _: Option<&tracker::CallFull>| Some(false)));
    let plan = run(&mut engine, &call, &s1_events(&call));
    assert!(plan.steps.is_empty());
    assert_eq!(rules(&plan), [Rule::NeedRegistrationHook]);
    assert_eq!(plan.journal[0].data["hook"], json!(false));

    let local = CallSpec::local("1700000000.26", "101", "102");
    let mut engine = common::engine(settings());
    engine.set_gate(Box::new(|call: &str, _: Option<&tracker::CallFull>| {
        (call == "1700000000.26").then_some(true)
    }));
    let plan = run(&mut engine, &local, &s9_events(&local));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=1 show=1",
            "finish 0 user=1 duration=7 status=200",
        ]
    );
    assert_eq!(plan.journal[0].rule, Rule::NeedRegistrationHook);
    assert_eq!(plan.journal[0].data["settings"], json!(false));
}

/// The shell asks `need_registration` before the event that makes the engine decide, and only then.
#[test]
fn admission_is_pending_until_the_first_leg_decides_it() {
    let call = CallSpec::incoming("1700000000.28");
    let mut engine = engine(settings());
    let events = s1_events(&call);
    let live = call.live();
    let mut pending = Vec::new();
    for event in &events {
        pending.push(engine.admission_pending(event));
        engine.handle(event, Some(&live), event.time());
    }
    // recording, ringing (decides), answered, hung up, ended.
    assert_eq!(pending, [false, true, false, false, false]);
}

#[test]
fn cards_off_registers_without_show_or_hide() {
    let call = CallSpec::incoming("1700000000.27");
    let mut s = settings();
    s.show_card = false;
    let plan = run(&mut engine(s), &call, &s3_events(&call));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=0",
            "finish 0 user=2 duration=30 status=200",
            &format!("record 0 {REC}"),
        ]
    );
    assert!(rules(&plan).contains(&Rule::ShowCardSetting));
}

#[test]
fn recordings_off_attach_nothing() {
    let call = CallSpec::incoming("1700000000.28");
    let mut s = settings();
    s.attach_records = false;
    let plan = run(&mut engine(s), &call, &s1_events(&call));
    assert!(plan.steps.iter().all(|s| s.kind != StepKind::AttachRecord));
}

#[test]
fn unknown_extension_asks_for_a_refresh_then_registers() {
    let call = CallSpec::incoming("1700000000.29");
    let live = call.live();
    let mut engine = engine(settings());
    let ringing = call.ringing("c4", 2, "104");
    // The directory was filled at T0; a refresh is due after the interval (300 s).
    let now = at(400);
    let plan = engine.handle(&ringing, Some(&live), now);
    assert!(plan.steps.is_empty());
    assert_eq!(
        plan.refresh_users.as_ref().map(|r| r.extensions.clone()),
        Some(vec!["104".to_owned()])
    );
    assert_eq!(engine.live_calls(), 0, "the event was not taken in");
    let mut users: Vec<DirectoryUser> = (1..=4)
        .map(|i| DirectoryUser {
            id: i,
            extension: Some(format!("10{i}")),
            phones: vec![],
        })
        .collect();
    engine.users_mut().replace(users.clone(), now);
    let plan = engine.handle(&ringing, Some(&live), now);
    assert_eq!(describe_all(&plan), ["register 0 user=4 type=2 show=1"]);

    // Still unknown right after a refresh: no new refresh, the leg simply has no user.
    users.pop();
    let call = CallSpec::incoming("1700000000.30");
    let mut engine = Engine::new(settings()).expect("valid");
    engine.users_mut().replace(users, now);
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c4", 2, "104"),
            call.stopped("c4", 20, StopReason::CallerGone),
            call.ended(20, status::MISSED, false, ""),
        ],
    );
    assert!(rules(&plan).contains(&Rule::UnknownUser));
    // A missed call must not be lost: registered for the default responsible.
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=9 type=2 show=0",
            "owner 0",
            "finish 0 user=owner|9 duration=0 status=304",
        ]
    );
}

#[test]
fn repeated_and_late_events_plan_nothing_new() {
    let call = CallSpec::incoming("1700000000.31");
    let mut engine = engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c1", 2, "101"),
            call.ringing("c1", 2, "101"),
            call.answered("c1", 4, "101"),
            call.answered("c1", 4, "101"),
            call.hung_up("c1", 9, 5),
            call.hung_up("c1", 9, 5),
            call.ended(9, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=5 status=200"
        ]
    );
    let late = run(&mut engine, &call, &[call.ringing("c9", 99, "102")]);
    assert!(late.steps.is_empty());
    assert_eq!(rules(&late), [Rule::LateEvent]);
    assert_eq!(engine.live_calls(), 0);
}

#[test]
fn talk_cut_short_by_the_call_end_is_finished_with_its_time_so_far() {
    // The conversation's own end was lost (e.g. the call expired): finish with answer → call end.
    let call = CallSpec::incoming("1700000000.32");
    let mut engine = engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c1", 2, "101"),
            call.answered("c1", 4, "101"),
            call.ended(64, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=60 status=200"
        ]
    );
}

#[test]
fn without_call_full_the_engine_infers_from_the_leg() {
    let call = CallSpec::incoming("1700000000.33");
    let mut engine = engine(settings());
    let plan = engine.handle(&call.ringing("c1", 2, "101"), None, at(2));
    let p = &plan.steps[0].params;
    assert_eq!(p["TYPE"], json!(2));
    assert_eq!(p["PHONE_NUMBER"], json!(CLIENT));
    assert_eq!(p["CALL_START_DATE"], json!("2023-11-15T01:13:22+03:00"));
    let out = CallSpec::outgoing("1700000000.34", "101");
    let plan = engine.handle(&out.dialing("c1", 2, "101"), None, at(2));
    assert_eq!(plan.steps[0].params["TYPE"], json!(1));
    assert_eq!(plan.steps[0].params["PHONE_NUMBER"], json!(CLIENT));
}

#[test]
fn per_trunk_line_and_responsible() {
    let call = CallSpec::incoming("1700000000.35");
    let mut s = settings();
    s.trunks[0].line_number = Some("main-line".into());
    s.trunks[0].responsible = Some(5);
    let plan = run(&mut engine(s), &call, &[call.ended(30, status::MISSED, true, "")]);
    assert_eq!(plan.steps[0].params["LINE_NUMBER"], json!("main-line"));
    assert_eq!(describe(&plan.steps[0]), "register 0 user=5 type=2 show=0");
}

/// Settings changed while ringlink runs: the call in progress keeps the rules it started with (no task, though
/// the change turned tasks on), the next call follows the new ones; invalid settings are refused.
#[test]
fn changed_settings_apply_from_the_next_call() {
    let mut engine = engine(settings());
    let first = CallSpec::incoming("1700000000.21");
    let events = s2_events(&first);
    let mut plan = run(&mut engine, &first, &events[..1]);
    let mut on = settings();
    on.missed.task.enabled = true;
    on.missed.task.title = "Call back {phone}".into();
    engine.set_settings(on.clone()).expect("valid settings");
    let rest = run(&mut engine, &first, &events[1..]);
    plan.steps.extend(rest.steps);
    assert!(
        !describe_all(&plan).iter().any(|s| s.starts_with("task")),
        "the call in progress keeps its settings: {:?}",
        describe_all(&plan)
    );
    let next = CallSpec::incoming("1700000000.22");
    let plan = run(&mut engine, &next, &s2_events(&next));
    let task = step(&plan, "1700000000.22/0/task");
    assert_eq!(task.params["fields"]["TITLE"], json!(format!("Call back {CLIENT}")));
    let mut bad = on;
    bad.missed.responsible.clear();
    assert!(engine.set_settings(bad).is_err());
    assert!(
        engine.settings().missed.task.enabled,
        "refused settings leave the old ones"
    );
}

#[test]
fn s1_recording_is_planned_with_the_finish_when_the_talk_ends() {
    // The worker sends a finish and the recording after it in one request when both are queued together: the
    // recording known while the call talked is planned as the talk ends, not later at the call's end.
    let call = CallSpec::incoming("1700000000.1");
    let mut engine = engine(settings());
    let events = s1_events(&call);
    let (before_end, end) = events.split_at(events.len() - 1);
    let (talk, rest) = before_end.split_at(before_end.len() - 1);
    run(&mut engine, &call, talk);
    let hung_up = run(&mut engine, &call, rest);
    assert_eq!(
        describe_all(&hung_up),
        ["finish 0 user=1 duration=5 status=200", &format!("record 0 {REC}")]
    );
    let ended = run(&mut engine, &call, end);
    assert!(ended.steps.is_empty(), "nothing more at the end: {:?}", keys(&ended));
}

#[test]
fn a_recording_known_only_at_the_calls_end_is_planned_then() {
    let call = CallSpec::incoming("1700000000.1");
    let mut engine = engine(settings());
    let events = [
        call.ringing("c1", 2, "101"),
        call.answered("c1", 4, "101"),
        call.hung_up("c1", 9, 5),
        call.ended(9, status::TALKED, false, REC),
    ];
    let (before_end, end) = events.split_at(events.len() - 1);
    let talked = run(&mut engine, &call, before_end);
    assert_eq!(
        describe_all(&talked),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=5 status=200"
        ]
    );
    let ended = run(&mut engine, &call, end);
    assert_eq!(describe_all(&ended), [format!("record 0 {REC}")]);
}
