//! A property over every recorded trace (the real test bed's golden traces) and every scripted scenario, whole
//! or cut anywhere: a call with an answered employee leg is registered and finished with that employee, and
//! no answered call gets a missed status (304) or a missed-call task. Tracker and engine together, as the
//! service runs them.

#[path = "../../tracker/tests/common/mod.rs"]
mod common;
#[path = "../../tracker/tests/scenarios/scripts.rs"]
#[allow(dead_code)] // the scripts' labels serve the tracker's own tests
mod scripts;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ami::Message;
use engine::{DirectoryUser, Engine, EngineSettings, Plan, StepKind, TrunkSettings};
use tracker::{CallEvent, Direction, LegOrigin, Timestamp, Tracker};

/// The employees of the test bed: 101–105 are users 1–5; user 2's mobile is the one follow-me rings.
fn users() -> Vec<DirectoryUser> {
    (1..=5)
        .map(|i| DirectoryUser {
            id: i,
            extension: Some(format!("10{i}")),
            phones: if i == 2 {
                vec!["+7 (900) 111-22-33".into()]
            } else {
                vec![]
            },
        })
        .collect()
}

fn engine() -> Engine {
    let mut s = EngineSettings {
        utc_offset: "+05:00".into(),
        register_local_calls: true,
        trunks: vec![TrunkSettings {
            number: common::DID.into(),
            line_number: None,
            crm_source: None,
            responsible: None,
        }],
        ..EngineSettings::default()
    };
    s.missed.default_user = Some(9);
    s.missed.task.enabled = true;
    let mut engine = Engine::new(s).expect("valid settings");
    engine.users_mut().replace(users(), Timestamp::from_secs(0));
    engine
}

/// What one call showed and what the engine planned for it.
#[derive(Default, Debug)]
struct CallSeen {
    direction: Option<Direction>,
    /// Users of the employee legs that answered (extensions, or a forwarded number of a known mobile).
    answered_users: BTreeSet<u64>,
    /// The user who placed a local call.
    caller_user: Option<u64>,
    answered: bool,
    result: Option<u16>,
    is_ivr: bool,
    steps: Vec<engine::Step>,
}

fn user_of(number: &str) -> Option<u64> {
    match number {
        "101" => Some(1),
        "102" => Some(2),
        "103" => Some(3),
        "104" => Some(4),
        "105" => Some(5),
        "89001112233" => Some(2),
        _ => None,
    }
}

/// Runs messages (with arrival times for untimed events) through a tracker and an engine, then expires what is
/// left, and gathers what each call showed.
fn play(messages: &[(Message, Option<Timestamp>)]) -> BTreeMap<String, CallSeen> {
    let mut tracker = Tracker::new(common::config()).expect("valid config");
    let mut engine = engine();
    let mut calls: BTreeMap<String, CallSeen> = BTreeMap::new();
    let mut events = Vec::new();
    let mut last = Timestamp::from_secs(0);
    for (m, arrived) in messages {
        events.clear();
        tracker.handle_into(m, *arrived, &mut events);
        for e in events.drain(..) {
            last = last.max(e.time());
            take(&mut engine, &tracker, &e, &mut calls);
        }
    }
    let end = Timestamp::from_micros(last.as_micros() + 40 * 24 * 3600 * 1_000_000);
    for e in tracker.tick(end) {
        take(&mut engine, &tracker, &e, &mut calls);
    }
    calls
}

fn take(engine: &mut Engine, tracker: &Tracker, e: &CallEvent, calls: &mut BTreeMap<String, CallSeen>) {
    let call_full = tracker.call_full(e.call());
    let mut plan: Plan = engine.handle(e, call_full.as_ref(), e.time());
    if plan.refresh_users.is_some() {
        // The directory is what it is: the refresh finds nobody new, and the event is planned again.
        engine.users_mut().replace(users(), e.time());
        plan = engine.handle(e, call_full.as_ref(), e.time());
    }
    let seen = calls.entry(e.call().to_owned()).or_default();
    seen.steps.extend(plan.steps);
    if let Some(full) = call_full.as_ref() {
        seen.direction = Some(full.channel.direction);
        seen.caller_user = user_of(&full.channel.from.original);
    }
    match e {
        CallEvent::LegAnswered(leg) => {
            seen.answered = true;
            let number = if leg.origin == LegOrigin::Forward {
                &leg.number
            } else {
                &leg.endpoint
            };
            if let Some(u) = user_of(number) {
                seen.answered_users.insert(u);
            }
        }
        CallEvent::CallEnded { call_full, .. } => {
            seen.direction = Some(call_full.channel.direction);
            seen.caller_user = user_of(&call_full.channel.from.original);
            seen.result = Some(call_full.result);
            seen.is_ivr = call_full.is_ivr;
            seen.answered |= call_full.conversations.values().any(|c| c.channel.was_answered);
        }
        _ => {}
    }
}

fn user_param(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The promises, for every call of one stream; `what` names the stream in failures.
fn check(what: &str, calls: &BTreeMap<String, CallSeen>) -> Result<(), String> {
    for (key, seen) in calls {
        let fail = |why: String| Err(format!("{what}: call {key}: {why}\n{seen:#?}"));
        if !seen.answered {
            continue;
        }
        if seen.result.is_some_and(|r| r == tracker::status::MISSED) || seen.is_ivr {
            return fail(format!("answered, yet result {:?} ivr {}", seen.result, seen.is_ivr));
        }
        let finishes: Vec<&engine::Step> = seen.steps.iter().filter(|s| s.kind == StepKind::Finish).collect();
        // One Bitrix24 call per conversation: a registration of an employee who never answered (a transfer
        // target that rang out) may be missed; one of an employee who answered never is.
        let register_user = |finish: &engine::Step| {
            let register = finish.key.replace("/finish", "/register");
            seen.steps
                .iter()
                .find(|s| s.key == register)
                .and_then(|s| user_param(&s.params["USER_ID"]))
        };
        if let Some(f) = finishes.iter().find(|f| {
            f.params["STATUS_CODE"] != "200"
                && register_user(f).is_none_or(|u| seen.answered_users.contains(&u) || seen.caller_user == Some(u))
        }) {
            return fail(format!("answered, yet finished with {}", f.params["STATUS_CODE"]));
        }
        if seen.steps.iter().any(|s| s.kind == StepKind::AddTask) {
            return fail("answered, yet a missed-call task".into());
        }
        let registered: BTreeSet<u64> = seen
            .steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::Register | StepKind::Finish))
            .filter_map(|s| user_param(&s.params["USER_ID"]))
            .collect();
        let finished: BTreeSet<u64> = finishes
            .iter()
            .filter_map(|f| user_param(&f.params["USER_ID"]))
            .collect();
        match seen.direction {
            Some(Direction::Incoming | Direction::Outgoing) => {
                for u in &seen.answered_users {
                    if !finished.contains(u) {
                        return fail(format!("user {u} answered but no finish names them ({finished:?})"));
                    }
                }
            }
            Some(Direction::Local) => {
                // A local call is the caller's (Bitrix24 shows it to the one who placed it).
                if let Some(caller) = seen.caller_user {
                    if !registered.contains(&caller) {
                        return fail(format!("local call of user {caller} not registered for them"));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracker/tests/traces")
}

fn golden_traces() -> Vec<Stream> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(traces_dir())
        .expect("traces dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ami"))
        .collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path).expect("trace");
        let index = ami::trace::read_index(&ami::trace::index_path(&path)).expect("index");
        let messages = ami::trace::decode_timed(&bytes, &index)
            .into_iter()
            .filter_map(|(f, at)| match f {
                ami::Frame::Message(m) => Some((m, at.map(|us| Timestamp::from_micros(us as i64)))),
                _ => None,
            })
            .collect();
        out.push((
            path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            messages,
        ));
    }
    out
}

fn scripted() -> Vec<Stream> {
    scripts::all()
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            (
                format!("script {i}"),
                s.pbx.messages.into_iter().map(|m| (m, None)).collect(),
            )
        })
        .collect()
}

type Stream = (String, Vec<(Message, Option<Timestamp>)>);

/// Every golden trace and every scripted scenario, decoded once.
static STREAMS: std::sync::LazyLock<Vec<Stream>> = std::sync::LazyLock::new(|| {
    let mut streams = golden_traces();
    assert!(streams.len() >= 24, "the golden traces are there");
    streams.extend(scripted());
    streams
});

#[test]
fn every_trace_answered_calls_are_the_answering_employees_and_never_missed() {
    let mut answered = 0;
    for (what, messages) in STREAMS.iter() {
        let calls = play(messages);
        answered += calls.values().filter(|c| c.answered).count();
        check(what, &calls).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(answered >= 30, "the streams hold answered calls ({answered})");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Cut anywhere (the rest expires): what was answered before the cut is still the employee's, never missed.
    #[test]
    fn cut_streams_keep_the_promises(which in 0usize..64, cut in 0.0f64..=1.0) {
        let (what, messages) = &STREAMS[which % STREAMS.len()];
        let keep = ((messages.len() as f64) * cut) as usize;
        let calls = play(&messages[..keep]);
        proptest::prop_assert!(check(what, &calls).is_ok(), "{}", check(what, &calls).unwrap_err());
    }
}
