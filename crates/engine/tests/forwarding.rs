//! Incoming calls forwarded out through a trunk (follow-me, a ring group's outside number): answered on an
//! employee's mobile they are that employee's talk; answered on an unknown outside phone they are answered calls
//! for the missed-call responsible; never a missed status.

mod common;

use common::*;
use engine::{DirectoryUser, Rule, StepKind};
use numbers::Number;
use tracker::{status, CallEvent, CallFull, CallState, Conversation, Direction, LegOrigin, StopReason};

const MOBILE: &str = "89001112233";

/// The forwarded number as the tracker's number rules (prefixes +7, 7, 8) describe it.
fn mobile() -> Number {
    Number {
        base: "9001112233".into(),
        custom: String::new(),
        is_local: false,
        original: MOBILE.into(),
        variants: ["9001112233", "+79001112233", "79001112233", "89001112233"]
            .map(String::from)
            .to_vec(),
    }
}

/// `call_full` with the forwarded conversation `c2` in it (what the tracker gives with every event).
fn with_forward(call: &CallSpec, full: CallFull) -> CallFull {
    let mut full = full;
    let mut channel = full.channel.clone();
    channel.id = "c2".into();
    channel.is_primary = false;
    channel.to = mobile();
    channel.state = CallState::Talking;
    full.conversations.insert(
        "c2".into(),
        Conversation {
            channel,
            is_parked: false,
            user: None,
        },
    );
    assert_eq!(full.channel.direction, Direction::Incoming, "{}", call.key);
    full
}

fn forwarded(call: &CallSpec, secs: i64, answered: bool) -> CallEvent {
    let leg = call.leg("c2", secs, MOBILE, LegOrigin::Forward);
    if answered {
        CallEvent::LegAnswered(leg)
    } else {
        CallEvent::LegRinging(leg)
    }
}

fn events(call: &CallSpec, desk: bool) -> Vec<CallEvent> {
    let mut events = Vec::new();
    if desk {
        events.push(call.ringing("c1", 1, "101"));
    }
    events.push(forwarded(call, 1, false));
    events.push(forwarded(call, 5, true));
    if desk {
        events.push(call.stopped("c1", 5, StopReason::AnsweredElsewhere));
    }
    events.push(call.hung_up("c2", 12, 7));
    let mut end = call.ended(12, status::TALKED, false, "");
    if let CallEvent::CallEnded { call_full, .. } = &mut end {
        **call_full = with_forward(call, (**call_full).clone());
    }
    events.push(end);
    events
}

fn play(engine: &mut engine::Engine, call: &CallSpec, events: &[CallEvent]) -> engine::Plan {
    let live = with_forward(call, call.live());
    let mut all = engine::Plan::default();
    for event in events {
        let plan = engine.handle(event, Some(&live), event.time());
        assert!(plan.refresh_users.is_none(), "unexpected refresh on {}", event.name());
        all.steps.extend(plan.steps);
        all.journal.extend(plan.journal);
    }
    all
}

/// Users 1–3 on 101–103; user 2's mobile is the forwarded number, written as people write it.
fn engine_with_mobile(settings: engine::EngineSettings) -> engine::Engine {
    let mut engine = engine(settings);
    engine.users_mut().replace(
        (1..=3).map(|i| DirectoryUser {
            id: i,
            extension: Some(format!("10{i}")),
            phones: if i == 2 {
                vec!["+7 (900) 111-22-33".into()]
            } else {
                vec![]
            },
        }),
        at(0),
    );
    engine
}

#[test]
fn answered_on_an_employees_mobile_is_that_employees_talk() {
    let call = CallSpec::incoming("1700000000.1");
    let mut engine = engine_with_mobile(settings());
    let plan = play(&mut engine, &call, &events(&call, true));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=1 type=2 show=1",
            "show 0 user=2",
            "hide 0 user=1",
            "finish 0 user=2 duration=7 status=200",
        ]
    );
    assert!(rules(&plan).contains(&Rule::ForwardedLeg));
}

#[test]
fn answered_on_an_unknown_outside_phone_is_answered_for_the_missed_call_responsible() {
    let call = CallSpec::incoming("1700000000.1");
    let mut s = settings();
    s.missed.task.enabled = true;
    let mut unknown = engine(s);
    let plan = play(&mut unknown, &call, &events(&call, true));
    let steps = describe_all(&plan);
    assert_eq!(steps[0], "register 0 user=1 type=2 show=1", "{steps:?}");
    let finish = plan
        .steps
        .iter()
        .find(|s| s.kind == StepKind::Finish)
        .unwrap_or_else(|| panic!("a finish: {steps:?}"));
    assert_eq!(finish.params["STATUS_CODE"], "200", "{steps:?}");
    assert_eq!(finish.params["DURATION"], 7, "{steps:?}");
    assert!(
        !plan.steps.iter().any(|s| s.kind == StepKind::AddTask),
        "no missed-call task for an answered call: {steps:?}"
    );
    assert!(rules(&plan).contains(&Rule::ForwardedLeg) && rules(&plan).contains(&Rule::MissedResponsible));
    let said: Vec<&str> = plan.journal.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        said.iter().any(|r| r.contains("no employee's phone")),
        "the journal says why: {said:#?}"
    );
    // The client's entity owner if it existed before the call, else the last employee rung (101).
    assert_eq!(
        steps,
        [
            "register 0 user=1 type=2 show=1",
            "hide 0 user=1",
            "owner 0",
            "finish 0 user=owner|1 duration=7 status=200"
        ]
    );
}

#[test]
fn only_the_mobile_rang_and_answered() {
    let call = CallSpec::incoming("1700000000.1");
    let mut engine = engine_with_mobile(settings());
    let plan = play(&mut engine, &call, &events(&call, false));
    assert_eq!(
        describe_all(&plan),
        [
            "register 0 user=2 type=2 show=1",
            "finish 0 user=2 duration=7 status=200"
        ]
    );
    let mut unknown = common::engine(settings());
    let plan = play(&mut unknown, &call, &events(&call, false));
    let steps = describe_all(&plan);
    assert!(steps.iter().all(|s| !s.contains("status=304")), "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("duration=7 status=200")), "{steps:?}");
}
