//! Calls rebuilt from CEL: the golden traces carry Asterisk's CEL events too (`cel.conf [manager]`), with the
//! same columns the database backends write. Fed alone through [`tracker::CelFeed`], they must give the calls
//! the whole AMI stream gave: direction, result, every conversation with its employee, answer and talk time.

use std::path::Path;

use ami::codec::decode_all;
use ami::{AmiCodec, Frame, Message};
use common::config;
use serde_json::{json, Value};
use tracker::{CallEvent, CelFeed, CelRow, LegOrigin, Tracker};

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

/// How precise a CEL table's `eventtime` is.
#[derive(Clone, Copy)]
enum Precision {
    /// `cel_sqlite3_custom`, FreePBX's MySQL table.
    Seconds,
    /// `cel_pgsql`: the event's second with the microseconds of its AMI `Timestamp`.
    Micros,
}

/// The trace's CEL events as the rows a database backend would hold (whole seconds, UTC).
fn cel_rows(messages: &[Message]) -> Vec<CelRow> {
    cel_rows_with(messages, Precision::Seconds)
}

fn cel_rows_with(messages: &[Message], precision: Precision) -> Vec<CelRow> {
    let utc = chrono::FixedOffset::east_opt(0).expect("UTC");
    let get = |m: &Message, k: &str| m.get(k).unwrap_or_default().to_owned();
    let time = |m: &Message| {
        let second = tracker::cel::parse_event_time(&get(m, "EventTime"), utc).expect("EventTime");
        let micros = match precision {
            Precision::Seconds => 0,
            Precision::Micros => m
                .get("Timestamp")
                .and_then(tracker::Timestamp::parse_ami)
                .map_or(0, |t| t.as_micros().rem_euclid(1_000_000)),
        };
        tracker::Timestamp::from_micros(second.as_micros() + micros)
    };
    messages
        .iter()
        .filter(|m| m.event_name() == Some("CEL"))
        .enumerate()
        .map(|(i, m)| CelRow {
            id: i as i64 + 1,
            event: get(m, "EventName"),
            time: time(m),
            cid_name: get(m, "CallerIDname"),
            cid_num: get(m, "CallerIDnum"),
            cid_dnid: get(m, "CallerIDdnid"),
            exten: get(m, "Exten"),
            context: get(m, "Context"),
            channel: get(m, "Channel"),
            app: get(m, "Application"),
            appdata: get(m, "AppData"),
            uniqueid: get(m, "UniqueID"),
            linkedid: get(m, "LinkedID"),
            peer: get(m, "Peer"),
            extra: get(m, "Extra"),
        })
        .collect()
}

/// What a call's registration and finish depend on: the call's facts when it ended, and the employee-leg
/// events the engine acts on (which leg, why it stopped or ended), per call, in order.
fn outcome(events: &[CallEvent]) -> Vec<Value> {
    let mut legs: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for e in events {
        let line = match e {
            CallEvent::LegRinging(l) | CallEvent::LegDialing(l) | CallEvent::LegAnswered(l) => {
                // CEL cannot tell a queue's member from a dialled phone (no AgentCalled): both read as dialled,
                // which changes only the wording of the journal.
                let origin = match l.origin {
                    LegOrigin::Queue => LegOrigin::Dial,
                    o => o,
                };
                format!("{} {} {origin:?}", e.name(), l.number)
            }
            CallEvent::LegStoppedRinging { reason, .. } => format!("{} {reason:?}", e.name()),
            CallEvent::ConversationEnded { reason, .. } => format!("{} {reason:?}", e.name()),
            CallEvent::CallEnded { .. } => String::new(),
            _ => continue,
        };
        if !line.is_empty() {
            legs.push((e.call().to_owned(), line));
            continue;
        }
        let CallEvent::CallEnded { call_full, .. } = e else {
            continue;
        };
        let seconds = |t: &str| t.get(..19).unwrap_or(t).to_owned();
        let convs: Vec<Value> = call_full
            .conversations
            .values()
            .map(|c| {
                json!({
                    "name": c.channel.name,
                    "answered": c.channel.was_answered,
                    "answer_time": seconds(&c.channel.answer_time),
                    "end_time": seconds(&c.channel.end_time),
                })
            })
            .collect();
        let key = call_full.channel.id.clone();
        out.push(json!({
            "call": key,
            "direction": call_full.channel.direction,
            "from": call_full.channel.from.original,
            "to": call_full.channel.to.original,
            "result": call_full.result,
            "ivr": call_full.is_ivr,
            "conversations": convs,
            "legs": legs.iter().filter(|(c, _)| *c == key).map(|(_, l)| l.clone()).collect::<Vec<_>>(),
        }));
    }
    out
}

/// Legs that start ringing at the same instant (a ringall, a queue) are rung in an order CEL does not keep:
/// each run of them is compared as a set.
fn ringing_runs_sorted(mut calls: Vec<Value>) -> Vec<Value> {
    for call in &mut calls {
        let Some(legs) = call.get_mut("legs").and_then(Value::as_array_mut) else {
            continue;
        };
        let mut i = 0;
        while i < legs.len() {
            let ringing = |v: &Value| v.as_str().is_some_and(|s| s.starts_with("leg_ringing"));
            let start = i;
            while i < legs.len() && ringing(&legs[i]) {
                i += 1;
            }
            legs[start..i].sort_by_key(|v| v.to_string());
            i = i.max(start + 1);
        }
    }
    calls
}

fn from_ami(messages: &[Message]) -> Vec<Value> {
    let mut t = Tracker::new(config()).expect("valid config");
    let events: Vec<CallEvent> = messages.iter().flat_map(|m| t.handle(m)).collect();
    outcome(&events)
}

fn from_cel(messages: &[Message]) -> Vec<Value> {
    from_cel_with(messages, Precision::Seconds)
}

fn from_cel_with(messages: &[Message], precision: Precision) -> Vec<Value> {
    let mut t = Tracker::new(config()).expect("valid config");
    let mut feed = CelFeed::new();
    let rows = cel_rows_with(messages, precision);
    feed.prepare(&rows);
    let events: Vec<CallEvent> = rows
        .iter()
        .flat_map(|row| feed.messages(row))
        .flat_map(|m| t.handle(&m))
        .collect();
    outcome(&events)
}

fn same_calls_from_cel_as_from_ami(id: &str) {
    let messages = messages(id);
    let ami = ringing_runs_sorted(from_ami(&messages));
    assert!(!ami.is_empty(), "{id}: the trace ends no call");
    let cel = ringing_runs_sorted(from_cel(&messages));
    assert_eq!(
        serde_json::to_string_pretty(&cel).expect("json"),
        serde_json::to_string_pretty(&ami).expect("json"),
        "{id}: CEL (left) and AMI (right) disagree"
    );
}

macro_rules! scenarios {
    ($($name:ident => $id:literal),* $(,)?) => {
        $(#[test]
        fn $name() {
            same_calls_from_cel_as_from_ami($id);
        })*
    };
}

scenarios! {
    s1_answered_call_is_rebuilt_from_cel => "s1",
    s2_unanswered_call_is_rebuilt_from_cel => "s2",
    s3_ringall_is_rebuilt_from_cel => "s3",
    s4_one_by_one_is_rebuilt_from_cel => "s4",
    s5_caller_gone_is_rebuilt_from_cel => "s5",
    s6_ivr_call_is_rebuilt_from_cel => "s6",
    s7_outgoing_call_is_rebuilt_from_cel => "s7",
    s8_busy_is_rebuilt_from_cel => "s8-busy",
    s8_cancel_is_rebuilt_from_cel => "s8-cancel",
    s9_local_call_is_rebuilt_from_cel => "s9",
    s10_blind_transfer_is_rebuilt_from_cel => "s10",
    s12_pickup_is_rebuilt_from_cel => "s12",
    s19_queue_ringall_is_rebuilt_from_cel => "s19-ringall",
    s8_decline_is_rebuilt_from_cel => "s8-decline",
    s8_noanswer_is_rebuilt_from_cel => "s8-noanswer",
    s19_queue_linear_is_rebuilt_from_cel => "s19-linear",
    s11_attended_transfer_is_rebuilt_from_cel => "s11",
    s13_park_is_rebuilt_from_cel => "s13",
    x1_local_route_is_rebuilt_from_cel => "x1-local-route",
}

#[test]
fn a_recording_handed_in_by_uniqueid_is_the_calls_record_as_from_ami() {
    let messages = messages("s1");
    let recording = messages
        .iter()
        .find(|m| m.event_name() == Some("VarSet") && m.get("Variable") == Some("MIXMONITOR_FILENAME"))
        .expect("s1 records");
    let (uid, path) = (
        recording.get("Uniqueid").expect("uniqueid"),
        recording.get("Value").expect("path"),
    );
    let mut t = Tracker::new(config()).expect("valid config");
    let mut feed = CelFeed::new();
    feed.set_recording(uid, path);
    let rows = cel_rows(&messages);
    feed.prepare(&rows);
    let mut started = Vec::new();
    let mut record = None;
    for m in rows.iter().flat_map(|row| feed.messages(row)) {
        for e in t.handle(&m) {
            match e {
                CallEvent::RecordingStarted { path, .. } => started.push(path),
                CallEvent::CallEnded { call_full, .. } => record = Some(call_full.record.clone()),
                _ => {}
            }
        }
    }
    assert_eq!(started, vec![path.to_owned()]);
    assert_eq!(record.as_deref(), Some(path));
}

/// `cel_pgsql` keeps microseconds: every golden trace's calls rebuilt from CEL rows with sub-second times are
/// the calls its whole-second rows give (a caller giving up stops its queue's legs as "caller gone", S5).
#[test]
fn microsecond_event_times_rebuild_every_trace_as_whole_seconds_do() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut ids: Vec<String> = std::fs::read_dir(&dir)
        .expect("traces")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".ami").map(str::to_owned))
        .collect();
    ids.sort();
    let mut compared = 0;
    for id in &ids {
        let messages = messages(id);
        if !messages.iter().any(|m| m.event_name() == Some("CEL")) {
            continue;
        }
        let seconds = ringing_runs_sorted(from_cel_with(&messages, Precision::Seconds));
        let micros = ringing_runs_sorted(from_cel_with(&messages, Precision::Micros));
        assert_eq!(
            serde_json::to_string_pretty(&micros).expect("json"),
            serde_json::to_string_pretty(&seconds).expect("json"),
            "{id}: microsecond (left) and whole-second (right) CEL times disagree"
        );
        compared += seconds.len();
    }
    assert!(compared >= 19, "only {compared} calls compared");
}
