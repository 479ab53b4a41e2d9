//! The scenarios of `SCENARIOS.md` translated for amoCRM: what amoCRM must see for each.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use engine::amocrm::{CALLS, CALL_LINK, CONTACTS, NOTHING, POPUP, TASKS};
use engine::{resolve, AmoCrmSettings, Crm, Engine, EngineSettings, Plan, Rule, StepKind, UnknownNumber};
use serde_json::{json, Value};
use tracker::{status, CallEvent, ConversationEndReason, LegOrigin, StopReason, TransferKind};

const REC: &str = "/var/spool/asterisk/monitor/in-1700000000.1.wav";
/// 2023-11-15T01:13:20+03:00.
const T0_UNIX: i64 = 1_700_000_000;

fn amo() -> AmoCrmSettings {
    AmoCrmSettings {
        pipelines: BTreeMap::from([(DID.to_owned(), 5_555)]),
        ..AmoCrmSettings::default()
    }
}

fn amo_engine(settings: EngineSettings) -> Engine {
    let mut engine = engine(settings);
    engine.set_crm(Crm::AmoCrm(amo()));
    engine
}

/// One line per step, in amoCRM's words.
fn describe(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| {
            let p = &s.params;
            match s.kind {
                StepKind::Register if s.method == POPUP => format!(
                    "popup {} to {}",
                    p["popup"]["add"][0]["phone_number"].as_str().unwrap_or("?"),
                    p["popup"]["add"][0]["users"]
                ),
                StepKind::Register => format!("nothing ({})", s.method),
                StepKind::Show => format!(
                    "popup {} to {}",
                    p["popup"]["add"][0]["phone_number"].as_str().unwrap_or("?"),
                    p["popup"]["add"][0]["users"]
                ),
                StepKind::LookupOwner => format!("contacts of {}", p["phone"].as_str().unwrap_or("?")),
                StepKind::Finish => {
                    let c = &p["call"];
                    format!(
                        "call {} {} user={} duration={} status={}",
                        c["uniq"].as_str().unwrap_or("?"),
                        c["direction"].as_str().unwrap_or("?"),
                        user(&c["responsible_user_id"]),
                        c["duration"],
                        c["call_status"]
                    )
                }
                StepKind::AttachRecord => format!("link {}", p["filename"].as_str().unwrap_or("?")),
                StepKind::AddTask => format!("task for {}", user(&p["task"]["responsible_user_id"])),
                StepKind::Hide => "hide (never planned for amoCRM)".into(),
            }
        })
        .collect()
}

/// A responsible as params carry it: a user, or `owner|<else>` for the contact's owner first.
fn user(v: &Value) -> String {
    match v.get("$first") {
        Some(Value::Array(c)) => format!("owner|{}", c.last().cloned().unwrap_or(Value::Null)),
        _ => v.to_string(),
    }
}

fn not_in_crm(plan: &Plan) -> Vec<String> {
    plan.journal
        .iter()
        .filter(|d| d.rule == Rule::NotInCrm)
        .map(|d| d.reason.clone())
        .collect()
}

#[test]
fn s1_answered_incoming_pops_up_and_records_one_call_with_the_link() {
    let call = CallSpec::incoming("1700000000.1");
    let mut engine = amo_engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.recording("", 0, REC),
            call.ringing("c1", 2, "101"),
            call.answered("c1", 4, "101"),
            call.hung_up("c1", 9, 5),
            call.ended(9, status::TALKED, false, REC),
        ],
    );
    assert_eq!(
        describe(&plan),
        [
            &format!("popup {CLIENT} to [1]"),
            "call 1700000000.1 inbound user=1 duration=5 status=4",
            "link in-1700000000.1.wav",
        ]
    );
    let finish = &plan.steps[1];
    assert_eq!(finish.method, CALLS);
    assert_eq!(finish.key, "1700000000.1/0/finish");
    assert_eq!(
        finish.params["call"],
        json!({
            "direction": "inbound",
            "uniq": "1700000000.1",
            "duration": 5,
            "source": "ringlink",
            "phone": CLIENT,
            "call_status": 4,
            "call_result": "talked",
            "responsible_user_id": 1,
            "created_by": 1,
            "created_at": T0_UNIX,
        })
    );
    // An unknown number goes to Unsorted in the pipeline of the DID it called.
    let unsorted = &finish.params["unsorted"];
    assert_eq!(unsorted["pipeline_id"], json!(5_555));
    assert_eq!(unsorted["source_uid"], json!("1700000000.1"));
    assert_eq!(unsorted["metadata"]["phone"], json!(CLIENT));
    assert_eq!(unsorted["metadata"]["is_call_event_needed"], json!(true));
    assert_eq!(unsorted["metadata"]["called_at"], json!(T0_UNIX));
    assert_eq!(plan.steps[2].method, CALL_LINK);
    assert_eq!(plan.steps[2].record_path.as_deref(), Some(REC));
    assert!(plan.steps[2].after.contains(&finish.key));
}

#[test]
fn an_unknown_number_gets_a_contact_and_a_lead_by_complex_add_when_so_configured() {
    let call = CallSpec::incoming("1700000000.1");
    let mut engine = engine(settings());
    engine.set_crm(Crm::AmoCrm(AmoCrmSettings {
        unknown: UnknownNumber::Complex,
        ..amo()
    }));
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c1", 2, "101"),
            call.answered("c1", 4, "101"),
            call.hung_up("c1", 9, 5),
            call.ended(9, status::TALKED, false, ""),
        ],
    );
    let finish = plan.steps.iter().find(|s| s.method == CALLS).expect("a finish");
    assert_eq!(finish.params["unsorted"], Value::Null, "no Unsorted entry as well");
    assert_eq!(
        finish.params["complex"],
        json!({
            "name": format!("Call from {CLIENT}"),
            "responsible_user_id": 1,
            "pipeline_id": 5_555,
            "_embedded": {"contacts": [{
                "name": CLIENT,
                "responsible_user_id": 1,
                "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": CLIENT, "enum_code": "WORK"}]}],
            }]},
        })
    );
    assert_eq!(finish.params["call"]["responsible_user_id"], json!(1));
}

#[test]
fn s2_missed_call_is_status_6_for_the_contacts_owner_and_its_task_is_bound_to_the_calls_entity() {
    let call = CallSpec::incoming("1700000000.2");
    let mut s = settings();
    s.missed.task.enabled = true;
    s.missed.task.deadline_minutes = 60;
    let mut engine = amo_engine(s);
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c1", 2, "101"),
            call.stopped("c1", 22, StopReason::CallerGone),
            call.ended(22, status::MISSED, false, ""),
        ],
    );
    assert_eq!(
        describe(&plan),
        [
            &format!("popup {CLIENT} to [1]"),
            &format!("contacts of {CLIENT}"),
            "call 1700000000.2 inbound user=owner|1 duration=0 status=6",
            "task for owner|1",
        ]
    );
    assert_eq!(
        not_in_crm(&plan),
        ["amoCRM: a call popup cannot be taken back, so nothing is sent to close user 1's"]
    );
    let lookup = &plan.steps[1];
    assert_eq!(lookup.method, CONTACTS);
    let finish = &plan.steps[2];
    let task = &plan.steps[3];
    assert_eq!(task.method, TASKS);
    // The worker's answers: the contact owned by user 3, the call landed on contact 77.
    let results: HashMap<String, Value> = HashMap::from([
        (lookup.key.clone(), json!([{"id": 77, "responsible_user_id": 3}])),
        (finish.key.clone(), json!({"entity": {"type": "contacts", "id": 77}})),
    ]);
    let sent = resolve(&finish.params, |k| results.get(k)).expect("resolvable");
    assert_eq!(sent["call"]["responsible_user_id"], json!(3));
    assert_eq!(sent["call"]["call_result"], json!("missed"));
    let sent = resolve(&task.params, |k| results.get(k)).expect("resolvable");
    assert_eq!(
        sent["task"],
        json!({
            "text": format!(
                "Missed call from {CLIENT}\nCall back {CLIENT}: the call to line {DID} at 2023-11-15 01:13:20 was \
                 not answered."
            ),
            "complete_till": T0_UNIX + 22 + 3_600,
            "task_type_id": 1,
            "responsible_user_id": 3,
            "entity": {"type": "contacts", "id": 77},
        })
    );
    // Nobody owns the number: the chain's last rung.
    let unknown: HashMap<String, Value> = HashMap::from([(lookup.key.clone(), json!([]))]);
    let sent = resolve(&finish.params, |k| unknown.get(k)).expect("resolvable");
    assert_eq!(sent["call"]["responsible_user_id"], json!(1));
}

#[test]
fn s3_ringall_pops_up_for_each_ringing_phone_and_records_the_answerers_call() {
    let call = CallSpec::incoming("1700000000.3");
    let mut engine = amo_engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.queue_ringing("c1", 2, "101"),
            call.queue_ringing("c2", 2, "102"),
            call.queue_ringing("c3", 2, "103"),
            call.answered("c2", 6, "102"),
            call.stopped("c1", 6, StopReason::AnsweredElsewhere),
            call.stopped("c3", 6, StopReason::AnsweredElsewhere),
            call.hung_up("c2", 36, 30),
            call.ended(36, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe(&plan),
        [
            &format!("popup {CLIENT} to [1]"),
            &format!("popup {CLIENT} to [2]"),
            &format!("popup {CLIENT} to [3]"),
            "call 1700000000.3 inbound user=2 duration=30 status=4",
        ]
    );
    assert_eq!(not_in_crm(&plan).len(), 2, "the popups of users 1 and 3 stay");
    assert_eq!(plan.steps[1].params["user"], json!(2));
}

#[test]
fn s4_one_by_one_pops_up_for_each_phone_as_it_rings() {
    let call = CallSpec::incoming("1700000000.4");
    let mut engine = amo_engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.queue_ringing("c1", 2, "101"),
            call.stopped("c1", 7, StopReason::Timeout),
            call.queue_ringing("c2", 8, "102"),
            call.stopped("c2", 13, StopReason::Timeout),
            call.queue_ringing("c3", 14, "103"),
            call.answered("c3", 16, "103"),
            call.hung_up("c3", 46, 30),
            call.ended(46, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe(&plan),
        [
            &format!("popup {CLIENT} to [1]"),
            &format!("popup {CLIENT} to [2]"),
            &format!("popup {CLIENT} to [3]"),
            "call 1700000000.4 inbound user=3 duration=30 status=4",
        ]
    );
}

#[test]
fn s7_outgoing_is_an_outbound_call_of_the_caller() {
    let call = CallSpec::outgoing("1700000000.7", "101");
    let mut engine = amo_engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.dialing("c1", 1, "101"),
            call.answered("c1", 10, "101"),
            call.hung_up("c1", 15, 5),
            call.ended(15, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe(&plan),
        [
            "nothing (none)",
            "call 1700000000.7 outbound user=1 duration=5 status=4",
        ],
        "the popup is amoCRM's incoming-call notification: none for the employee who dials"
    );
    assert_eq!(
        plan.steps[1].params["unsorted"],
        Value::Null,
        "outgoing record creation is off by default: an unknown number is not recorded"
    );
}

/// A click in amoCRM's widget: no popup, no register sent, one outbound call item for the user who clicked
/// under the click's own id, with the recording's link — and a click whose employee never picks up is one
/// outbound item with status 6 (amoCRM registered nothing on the click, so nothing else is there to close).
#[test]
fn an_amocrm_widget_click_is_one_outbound_call_of_the_user_who_clicked() {
    let fields: BTreeMap<String, String> = [("user_id", "1"), ("phone", CLIENT), ("click_id", "k1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let click = engine::ClickToCall::from_amocrm(&fields, "unused").expect("a valid request");
    let mut engine = amo_engine(settings());
    let key = engine.expect_click_to_call(click.clone());
    let call = CallSpec::outgoing(&key, "101");
    let plan = run(&mut engine, &call, &call.answered_click(REC));
    assert_eq!(
        describe(&plan),
        [
            "call amocrm.1.k1 outbound user=1 duration=10 status=4",
            "link in-1700000000.1.wav"
        ]
    );
    let item = &plan.steps[0].params["call"];
    assert_eq!(item["created_by"], json!(1));
    assert!(
        item["phone"].as_str().unwrap_or_default().ends_with("9001234567"),
        "{item}"
    );

    let mut engine = amo_engine(settings());
    let key = engine.expect_click_to_call(click);
    let call = CallSpec::outgoing(&key, "101");
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c1", 0, "101"),
            call.stopped("c1", 20, StopReason::Timeout),
            call.ended(30, status::CANCELLED, false, ""),
        ],
    );
    assert_eq!(
        describe(&plan),
        ["call amocrm.1.k1 outbound user=1 duration=0 status=6"]
    );
}

#[test]
fn s8_outgoing_failures_have_amocrm_statuses() {
    for (reason, result, code, text) in [
        (StopReason::Busy, status::BUSY, 7, "busy"),
        (StopReason::Declined, status::DECLINED, 6, "declined"),
        (StopReason::Timeout, status::MISSED, 6, "missed"),
        (StopReason::CallerGone, status::CANCELLED, 6, "cancelled by the caller"),
        (StopReason::Unavailable, status::NOT_FOUND, 5, "no such number"),
    ] {
        let call = CallSpec::outgoing("1700000000.8", "101");
        let mut engine = amo_engine(settings());
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
            describe(&plan)[1],
            format!("call 1700000000.8 outbound user=1 duration=0 status={code}"),
            "result {result}"
        );
        assert_eq!(plan.steps[1].params["call"]["call_result"], json!(text));
    }
}

#[test]
fn s10_blind_transfer_records_each_employees_talk_as_its_own_call() {
    let call = CallSpec::incoming("1700000000.10");
    let mut engine = amo_engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
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
            call.ended(37, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe(&plan),
        [
            &format!("popup {CLIENT} to [1]"),
            "call 1700000000.10 inbound user=1 duration=10 status=4",
            &format!("popup {CLIENT} to [2]"),
            "call 1700000000.10-1 inbound user=2 duration=20 status=4",
        ]
    );
    assert_eq!(plan.steps[3].params["call"]["created_at"], json!(T0_UNIX + 14));
}

#[test]
fn s12_pickup_records_the_call_for_who_picked_up() {
    let call = CallSpec::incoming("1700000000.12");
    let mut engine = amo_engine(settings());
    let plan = run(
        &mut engine,
        &call,
        &[
            call.ringing("c1", 2, "101"),
            call.stopped("c1", 6, StopReason::PickedUp { by: "c2".into() }),
            call.answered_by("c2", 6, "102", LegOrigin::Pickup),
            call.hung_up("c2", 18, 12),
            call.ended(18, status::TALKED, false, ""),
        ],
    );
    assert_eq!(
        describe(&plan),
        [
            &format!("popup {CLIENT} to [1]"),
            "call 1700000000.12 inbound user=2 duration=12 status=4",
        ]
    );
}

#[test]
fn an_ivr_abandoned_call_sends_no_popup_but_is_recorded_as_missed() {
    let call = CallSpec::incoming("1700000000.6");
    let mut engine = amo_engine(settings());
    let plan = run(&mut engine, &call, &[call.ended(10, status::MISSED, true, "")]);
    assert_eq!(
        describe(&plan),
        [
            format!("nothing ({NOTHING})"),
            format!("contacts of {CLIENT}"),
            format!("call 1700000000.6 inbound user=owner|{DEFAULT_USER} duration=0 status=6"),
        ]
    );
}

#[test]
fn the_same_events_plan_the_same_keys_for_both_crms() {
    let call = CallSpec::incoming("1700000000.3");
    let events = [
        call.ringing("c1", 2, "101"),
        call.answered("c1", 4, "101"),
        call.hung_up("c1", 9, 5),
        call.ended(9, status::TALKED, false, ""),
    ];
    let bitrix = run(&mut engine(settings()), &call, &events);
    let amocrm = run(&mut amo_engine(settings()), &call, &events);
    let keys = |p: &Plan| p.steps.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&bitrix), keys(&amocrm));
}
