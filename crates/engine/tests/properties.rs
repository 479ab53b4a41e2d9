//! Any event sequence: no panic, unique keys, one EXTERNAL_CALL_ID per registration, resolvable params,
//! bounded state, and the same plan when replayed.

mod common;

use std::collections::HashMap;

use common::*;
use engine::{resolve, Engine, Plan, StepKind};
use proptest::prelude::*;
use serde_json::{json, Value};
use tracker::{
    CallEndReason, CallEvent, ConversationEndReason, Direction, LegOrigin, StopReason, TransferKind, UnparkReason,
};

// Realistic linkedids, some with a system name, so `<linkedid>-<n>` can never meet another call's id.
const CALLS: [&str; 3] = ["1700000000.1", "pbx-a-1700000000.2", "1700000000.12"];
const EXTENSIONS: [&str; 5] = ["101", "102", "103", "104", "105"];

#[derive(Debug, Clone)]
enum Op {
    Ring {
        call: usize,
        conv: u8,
        ext: usize,
        dialing: bool,
    },
    Answer {
        call: usize,
        conv: u8,
        ext: usize,
        origin: u8,
    },
    Stop {
        call: usize,
        conv: u8,
        reason: u8,
    },
    TalkEnd {
        call: usize,
        conv: u8,
        talk: u16,
    },
    Record {
        call: usize,
        conv: Option<u8>,
    },
    Other {
        call: usize,
        conv: u8,
        kind: u8,
    },
    End {
        call: usize,
        result: u16,
        ivr: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let call = 0..CALLS.len();
    let conv = 0u8..5;
    prop_oneof![
        3 => (call.clone(), conv.clone(), 0..EXTENSIONS.len(), any::<bool>())
            .prop_map(|(call, conv, ext, dialing)| Op::Ring { call, conv, ext, dialing }),
        2 => (call.clone(), conv.clone(), 0..EXTENSIONS.len(), 0u8..6)
            .prop_map(|(call, conv, ext, origin)| Op::Answer { call, conv, ext, origin }),
        2 => (call.clone(), conv.clone(), 0u8..6).prop_map(|(call, conv, reason)| Op::Stop { call, conv, reason }),
        2 => (call.clone(), conv.clone(), 0u16..600).prop_map(|(call, conv, talk)| Op::TalkEnd { call, conv, talk }),
        1 => (call.clone(), proptest::option::of(conv.clone())).prop_map(|(call, conv)| Op::Record { call, conv }),
        1 => (call.clone(), conv, 0u8..4).prop_map(|(call, conv, kind)| Op::Other { call, conv, kind }),
        1 => (call, prop::sample::select(vec![0u16, 200, 304, 486, 487, 603, 404, 500]), any::<bool>())
            .prop_map(|(call, result, ivr)| Op::End { call, result, ivr }),
    ]
}

fn direction(i: u8) -> Direction {
    match i % 4 {
        0 => Direction::Incoming,
        1 => Direction::Outgoing,
        2 => Direction::Local,
        _ => Direction::Unknown,
    }
}

fn spec(call: usize, dir: Direction) -> CallSpec {
    let key = CALLS[call];
    let mut spec = match dir {
        Direction::Outgoing => CallSpec::outgoing(key, "101"),
        Direction::Local => CallSpec::local(key, "101", "102"),
        _ => CallSpec::incoming(key),
    };
    spec.direction = dir;
    spec
}

fn to_event(op: &Op, specs: &[CallSpec], t: i64) -> CallEvent {
    let conv = |c: &u8| format!("c{c}");
    match op {
        Op::Ring {
            call,
            conv: c,
            ext,
            dialing,
        } => {
            let s = &specs[*call];
            if *dialing {
                s.dialing(&conv(c), t, EXTENSIONS[*ext])
            } else {
                s.queue_ringing(&conv(c), t, EXTENSIONS[*ext])
            }
        }
        Op::Answer {
            call,
            conv: c,
            ext,
            origin,
        } => {
            let origin = [
                LegOrigin::Dial,
                LegOrigin::Queue,
                LegOrigin::Transfer,
                LegOrigin::Pickup,
                LegOrigin::ParkRetrieval,
                LegOrigin::Resync,
            ][usize::from(*origin) % 6];
            specs[*call].answered_by(&conv(c), t, EXTENSIONS[*ext], origin)
        }
        Op::Stop { call, conv: c, reason } => {
            let reason = match reason {
                0 => StopReason::AnsweredElsewhere,
                1 => StopReason::Timeout,
                2 => StopReason::CallerGone,
                3 => StopReason::Busy,
                4 => StopReason::PickedUp { by: "c1".into() },
                _ => StopReason::MovedToCall { call: CALLS[0].into() },
            };
            specs[*call].stopped(&conv(c), t, reason)
        }
        Op::TalkEnd { call, conv: c, talk } => specs[*call].talk_ended(
            &conv(c),
            t,
            u64::from(*talk),
            ConversationEndReason::HungUp { cause: None },
        ),
        Op::Record { call, conv: c } => {
            let conv = c.map(|c| conv(&c)).unwrap_or_default();
            specs[*call].recording(&conv, t, "/rec/a.wav")
        }
        Op::Other { call, conv: c, kind } => {
            let key = CALLS[*call].to_owned();
            let conversation = conv(c);
            let time = at(t);
            match kind {
                0 => CallEvent::Transferred {
                    call: key,
                    conversation,
                    time,
                    kind: TransferKind::Blind,
                    target: "102".into(),
                },
                1 => CallEvent::Parked {
                    call: key,
                    conversation,
                    time,
                    lot: "default".into(),
                    space: "701".into(),
                },
                2 => CallEvent::Unparked {
                    call: key,
                    conversation: conversation.clone(),
                    time,
                    reason: UnparkReason::Retrieved { conversation },
                },
                _ => CallEvent::Hold {
                    call: key,
                    conversation,
                    time,
                },
            }
        }
        Op::End { call, result, ivr } => specs[*call].ended(t, *result, *ivr, "/rec/a.wav"),
    }
}

/// Runs the ops (and a final CallEnded for every call); returns all plans.
fn play(ops: &[Op], dirs: &[u8], with_call_full: bool, local_calls: bool) -> (Vec<Plan>, Engine) {
    let mut s = settings();
    s.register_local_calls = local_calls;
    s.missed.task.enabled = true;
    let mut engine = engine(s);
    let specs: Vec<CallSpec> = (0..CALLS.len()).map(|i| spec(i, direction(dirs[i]))).collect();
    let mut plans = Vec::new();
    let mut t = 1;
    let ends: Vec<Op> = (0..CALLS.len())
        .map(|call| Op::End {
            call,
            result: 304,
            ivr: false,
        })
        .collect();
    for op in ops.iter().chain(ends.iter()) {
        t += 1;
        let event = to_event(op, &specs, t);
        let live = specs[CALLS.iter().position(|c| *c == event.call()).unwrap_or(0)].live();
        let plan = engine.handle(&event, with_call_full.then_some(&live), at(t));
        plans.push(plan);
    }
    (plans, engine)
}

fn fake_result(kind: StepKind) -> Value {
    match kind {
        StepKind::Register => json!({"CALL_ID": "externalCall.x", "CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": 1}),
        StepKind::LookupOwner => json!([]),
        _ => json!({}),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_event_sequence_plans_a_consistent_outbox(
        ops in proptest::collection::vec(op(), 0..60),
        dirs in proptest::collection::vec(0u8..4, 3),
        with_call_full in any::<bool>(),
        local_calls in any::<bool>(),
    ) {
        let (plans, engine) = play(&ops, &dirs, with_call_full, local_calls);
        prop_assert_eq!(engine.live_calls(), 0, "every call ended, so no state is left");
        let mut seen: HashMap<String, StepKind> = HashMap::new();
        let mut external_ids: HashMap<String, String> = HashMap::new();
        let mut results: HashMap<String, Value> = HashMap::new();
        for step in plans.iter().flat_map(|p| p.steps.iter()) {
            prop_assert!(seen.insert(step.key.clone(), step.kind).is_none(), "key planned twice: {}", step.key);
            let prefix = format!("{}/", step.call);
            prop_assert!(step.key.starts_with(&prefix), "key {} outside its call", step.key);
            for dep in &step.after {
                prop_assert!(seen.contains_key(dep), "{} depends on unplanned {}", step.key, dep);
            }
            if step.kind == StepKind::Register {
                let id = step.params["EXTERNAL_CALL_ID"].as_str().unwrap_or_default().to_owned();
                prop_assert!(!id.is_empty());
                if let Some(other) = external_ids.insert(id.clone(), step.key.clone()) {
                    prop_assert!(false, "EXTERNAL_CALL_ID {} used by {} and {}", id, other, step.key);
                }
            }
            // With every earlier step answered, the params resolve to plain values.
            let plain = resolve(&step.params, |k| results.get(k));
            prop_assert!(plain.is_ok(), "{}: {:?}", step.key, plain);
            results.insert(step.key.clone(), fake_result(step.kind));
        }
    }

    #[test]
    fn replaying_the_same_events_plans_the_same_steps(
        ops in proptest::collection::vec(op(), 0..40),
        dirs in proptest::collection::vec(0u8..4, 3),
    ) {
        let (first, _) = play(&ops, &dirs, true, true);
        let (again, _) = play(&ops, &dirs, true, true);
        let steps = |plans: &[Plan]| plans.iter().flat_map(|p| p.steps.clone()).collect::<Vec<_>>();
        prop_assert_eq!(steps(&first), steps(&again));
    }
}

#[test]
fn merged_call_end_reason_is_handled_like_any_end() {
    let call = CallSpec::incoming(CALLS[0]);
    let mut engine = engine(settings());
    let live = call.live();
    engine.handle(&call.ringing("c1", 1, "101"), Some(&live), at(1));
    let plan = engine.handle(
        &CallEvent::CallEnded {
            call: CALLS[0].into(),
            time: at(5),
            reason: CallEndReason::Expired { idle_secs: 14_400 },
            call_full: Box::new(call.full(304, false, "", true)),
        },
        None,
        at(5),
    );
    assert!(plan.steps.iter().any(|s| s.kind == StepKind::Finish));
    assert_eq!(engine.live_calls(), 0);
}
