//! Golden traces: AMI sessions recorded from a real Asterisk 22 playing each scenario (`tests/traces/*.ami`),
//! replayed through the tracker. The snapshots (reviewed by hand against SCENARIOS.md) hold a line per call
//! event and the final `call_full` of each call.

use std::fmt::Write as _;
use std::path::Path;

use ami::codec::decode_all;
use ami::{AmiCodec, Frame, Message};
use common::config;
use tracker::{CallEvent, Tracker};

/// The same PBX settings as the scripted scenarios: trunk `carrier` with the test bed's DID, the seed's prefixes.
mod common;

fn messages(id: &str) -> Vec<Message> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traces")
        .join(format!("{id}.ami"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_all(&bytes, AmiCodec::new())
        .into_iter()
        .filter_map(|f| match f {
            Frame::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The trace's messages with the arrival time of each (from `<id>.ami.idx`): the time of an event that carries
/// no `Timestamp` header (a PBX with `timestampevents = no`), as the live service uses its clock.
fn timed_messages(id: &str) -> Vec<(Message, Option<tracker::Timestamp>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let path = dir.join(format!("{id}.ami"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let index = ami::trace::read_index(&ami::trace::index_path(&path)).unwrap_or_else(|e| panic!("{id}: {e}"));
    ami::trace::decode_timed(&bytes, &index)
        .into_iter()
        .filter_map(|(f, at)| match f {
            Frame::Message(m) => Some((m, at.map(|us| tracker::Timestamp::from_micros(us as i64)))),
            _ => None,
        })
        .collect()
}

/// Uniqueids become short labels (`c1`, `c2`, … in order of appearance) so the snapshot reads like the
/// scenario and stays stable across re-recordings.
struct Labels(Vec<String>);

impl Labels {
    fn of(&mut self, id: &str) -> String {
        if id.is_empty() {
            return "-".into();
        }
        let i = match self.0.iter().position(|x| x == id) {
            Some(i) => i,
            None => {
                self.0.push(id.to_owned());
                self.0.len() - 1
            }
        };
        format!("c{}", i + 1)
    }
}

fn replay(id: &str) -> (String, Vec<serde_json::Value>) {
    let mut t = Tracker::new(config()).expect("valid config");
    let mut labels = Labels(Vec::new());
    let mut text = String::new();
    let mut calls = Vec::new();
    for (m, arrived) in timed_messages(id) {
        let mut out = Vec::new();
        t.handle_into(&m, arrived, &mut out);
        for e in out {
            let call = labels.of(e.call());
            let conv = e.conversation().map(|c| labels.of(c));
            let line = match &e {
                CallEvent::LegRinging(l) | CallEvent::LegDialing(l) | CallEvent::LegAnswered(l) => format!(
                    "{} {call} {} {} ({:?}) peer {}",
                    e.name(),
                    conv.unwrap_or_default(),
                    l.endpoint,
                    l.origin,
                    l.peer_number
                ),
                CallEvent::LegStoppedRinging { reason, .. } => {
                    format!("{} {call} {} {reason:?}", e.name(), conv.unwrap_or_default())
                }
                CallEvent::ConversationEnded {
                    reason, talk_seconds, ..
                } => format!(
                    "{} {call} {} {talk_seconds}s {reason:?}",
                    e.name(),
                    conv.unwrap_or_default()
                ),
                CallEvent::Transferred { kind, target, .. } => {
                    format!("{} {call} {} {kind:?} to {target}", e.name(), conv.unwrap_or_default())
                }
                CallEvent::Parked { lot, space, .. } => {
                    format!("{} {call} {} {lot}/{space}", e.name(), conv.unwrap_or_default())
                }
                CallEvent::Unparked { reason, .. } => {
                    let reason = match reason {
                        tracker::UnparkReason::Retrieved { conversation } => {
                            format!("retrieved by {}", labels.of(conversation))
                        }
                        other => format!("{other:?}"),
                    };
                    format!("{} {call} {} {reason}", e.name(), conv.unwrap_or_default())
                }
                CallEvent::RecordingStarted { path, .. } => {
                    let file = path.rsplit('/').next().unwrap_or(path);
                    format!(
                        "{} {call} {} {}",
                        e.name(),
                        conv.unwrap_or_default(),
                        file.split('-').take(3).collect::<Vec<_>>().join("-")
                    )
                }
                CallEvent::CallEnded { reason, call_full, .. } => {
                    let mut full = serde_json::to_value(call_full.as_ref()).expect("serialises");
                    relabel(&mut full, &mut labels);
                    calls.push(full);
                    format!(
                        "{} {call} {reason:?} type={:?} result={} ivr={}",
                        e.name(),
                        call_full.channel.direction,
                        call_full.result,
                        call_full.is_ivr
                    )
                }
                _ => format!("{} {call} {}", e.name(), conv.unwrap_or_default()),
            };
            let _ = writeln!(text, "{line}");
        }
    }
    let _ = writeln!(text, "live calls at the end: {}", t.live_calls());
    (text, calls)
}

/// Replaces ids, times and recording paths (which change with every recording) by stable stand-ins.
fn relabel(v: &mut serde_json::Value, labels: &mut Labels) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let Some(mut inner) = map.remove(&k) else { continue };
                let k2 = if looks_like_uniqueid(&k) {
                    labels.of(&k)
                } else {
                    k.clone()
                };
                match (k.as_str(), &mut inner) {
                    ("id" | "active_conversation_id", Value::String(s)) if !s.is_empty() => *s = labels.of(s),
                    ("start_time" | "answer_time" | "end_time", Value::String(s)) => {
                        if s != tracker::NEVER {
                            *s = "<time>".into();
                        }
                    }
                    ("record", Value::String(s)) if !s.is_empty() => *s = "<path>".into(),
                    ("name", Value::String(s)) => *s = strip_channel_seq(s),
                    ("extra", Value::Object(extra)) => {
                        let keys: Vec<String> = extra.keys().cloned().collect();
                        *extra = keys.into_iter().map(|k| (k, Value::String("…".into()))).collect();
                    }
                    _ => relabel(&mut inner, labels),
                }
                map.insert(k2, inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| relabel(i, labels)),
        _ => {}
    }
}

fn looks_like_uniqueid(s: &str) -> bool {
    s.split_once('.')
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()))
}

/// `PJSIP/101-0000000a` → `PJSIP/101-…`.
fn strip_channel_seq(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((head, tail)) if tail.len() >= 8 => format!("{head}-…{}", &tail[8..]),
        _ => name.to_owned(),
    }
}

macro_rules! trace_test {
    ($name:ident, $id:literal) => {
        #[test]
        fn $name() {
            let (text, calls) = replay($id);
            insta::assert_snapshot!(concat!($id, "-events"), text);
            insta::assert_json_snapshot!(concat!($id, "-calls"), calls);
        }
    };
}

trace_test!(s1_incoming_answered, "s1");
trace_test!(s2_incoming_no_answer, "s2");
trace_test!(s3_queue_ringall, "s3");
trace_test!(s4_queue_one_by_one, "s4");
trace_test!(s5_queue_abandoned, "s5");
trace_test!(s6_ivr, "s6");
trace_test!(s7_outgoing_answered, "s7");
trace_test!(s8_busy, "s8-busy");
trace_test!(s8_decline, "s8-decline");
trace_test!(s8_no_answer, "s8-noanswer");
trace_test!(s8_caller_cancels, "s8-cancel");
trace_test!(s9_local, "s9");
trace_test!(s10_blind_transfer, "s10");
trace_test!(s11_attended_transfer, "s11");
trace_test!(s11_attended_transfer_race, "s11-transfer-race");
trace_test!(s12_pickup, "s12");
trace_test!(s13_park, "s13");
trace_test!(s19_local_members_ringall, "s19-ringall");
trace_test!(s19_local_members_one_by_one, "s19-linear");
trace_test!(x1_outgoing_through_a_local_route, "x1-local-route");
trace_test!(x2_follow_me_answered_on_the_mobile, "x2-followme");
trace_test!(x3_originate_to_a_colleague, "x3-originate-local");
trace_test!(x3_originate_to_the_client, "x3-originate-out");
trace_test!(x4_without_event_timestamps, "x4-no-timestamps");

const TRACES: [&str; 24] = [
    "s1",
    "s2",
    "s3",
    "s4",
    "s5",
    "s6",
    "s7",
    "s8-busy",
    "s8-decline",
    "s8-noanswer",
    "s8-cancel",
    "s9",
    "s10",
    "s11",
    "s11-transfer-race",
    "s12",
    "s13",
    "s19-ringall",
    "s19-linear",
    "x1-local-route",
    "x2-followme",
    "x3-originate-local",
    "x3-originate-out",
    "x4-no-timestamps",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Real traces cut anywhere and with messages delivered twice: no panic, every call that was live ends
    /// exactly once (after `tick` for the cut ones), every leg that starts stops exactly once.
    #[test]
    fn real_traces_cut_and_repeated_end_every_call_once(
        which in 0..TRACES.len(),
        cut in 0.0f64..=1.0,
        repeats in proptest::collection::vec(proptest::prelude::any::<bool>(), 0..2000),
    ) {
        let all = messages(TRACES[which]);
        let keep = ((all.len() as f64) * cut) as usize;
        let mut t = Tracker::new(config()).expect("valid config");
        let mut events = Vec::new();
        let mut live = std::collections::HashSet::new();
        for (i, m) in all[..keep].iter().enumerate() {
            let times = if repeats.get(i).copied().unwrap_or(false) { 2 } else { 1 };
            for _ in 0..times {
                events.extend(t.handle(m));
            }
            for full in t.snapshot() {
                live.insert(full.channel.id);
            }
        }
        events.extend(t.tick(tracker::Timestamp::from_secs(4_000_000_000)));
        proptest::prop_assert_eq!(t.live_calls(), 0);
        let mut ended = std::collections::HashMap::new();
        let mut opened = std::collections::HashMap::new();
        let mut closed = std::collections::HashMap::new();
        for e in &events {
            match e {
                CallEvent::CallEnded { call, .. } => *ended.entry(call.clone()).or_insert(0) += 1,
                CallEvent::LegRinging(l) | CallEvent::LegDialing(l) => {
                    *opened.entry((l.call.clone(), l.conversation.clone())).or_insert(0) += 1
                }
                CallEvent::LegAnswered(l) => {
                    opened.entry((l.call.clone(), l.conversation.clone())).or_insert(1);
                }
                CallEvent::LegStoppedRinging { call, conversation, .. }
                | CallEvent::ConversationEnded { call, conversation, .. } => {
                    *closed.entry((call.clone(), conversation.clone())).or_insert(0) += 1
                }
                _ => {}
            }
        }
        for call in &live {
            proptest::prop_assert_eq!(ended.get(call), Some(&1), "call {}", call);
        }
        proptest::prop_assert!(ended.values().all(|n| *n == 1));
        for (leg, n) in &opened {
            proptest::prop_assert_eq!(*n, 1);
            proptest::prop_assert_eq!(closed.get(leg), Some(&1), "leg {:?}", leg);
        }
    }
}

/// The journal keeps each event as JSON, and a call is planned again from it: every event of every trace reads
/// back as it was written.
#[test]
fn every_event_reads_back_from_its_journaled_json() {
    for id in TRACES {
        let mut t = Tracker::new(config()).expect("valid config");
        for (m, arrived) in timed_messages(id) {
            let mut out = Vec::new();
            t.handle_into(&m, arrived, &mut out);
            for event in out {
                let json = serde_json::to_value(&event).expect("serialises");
                let back: CallEvent =
                    serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{id}: {e}\n{json}"));
                assert_eq!(back, event, "{id}: {json}");
            }
        }
    }
}
