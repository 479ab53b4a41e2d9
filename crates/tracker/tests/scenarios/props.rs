//! Property tests: truncated, repeated, interleaved and garbled event streams never panic, and every call that
//! starts ends exactly once.

use std::collections::{HashMap, HashSet};

use ami::Message;
use proptest::prelude::*;
use tracker::{CallEvent, Timestamp, Tracker};

use super::common::{tracker, T0};
use super::scripts;

/// Renumbers a script's uniqueids, channel names and bridges so that several scripts can run at once.
fn shifted(messages: &[Message], offset: u64) -> Vec<Message> {
    let uid = regex::Regex::new(r"^(\d+)\.(\d+)$").unwrap();
    let seq = regex::Regex::new(r"-([0-9a-f]{8})(;[12])?").unwrap();
    messages
        .iter()
        .map(|m| {
            let mut out = Message::new();
            for (k, v) in m.iter() {
                let v = if let Some(c) = uid.captures(v) {
                    format!("{}.{}", &c[1], c[2].parse::<u64>().unwrap() + offset)
                } else if v.starts_with("b-") {
                    format!("{v}-{offset}")
                } else {
                    seq.replace_all(v, |c: &regex::Captures| {
                        let n = u64::from_str_radix(&c[1], 16).unwrap() + offset;
                        format!("-{n:08x}{}", c.get(2).map_or("", |m| m.as_str()))
                    })
                    .into_owned()
                };
                out.push(k, v);
            }
            out
        })
        .collect()
}

/// Checks the stream-level promises on everything a tracker emitted.
fn check_promises(started: &HashSet<String>, events: &[CallEvent]) -> Result<(), TestCaseError> {
    let mut ended: HashMap<&str, usize> = HashMap::new();
    let mut legs_open: HashMap<(&str, &str), usize> = HashMap::new();
    let mut legs_closed: HashMap<(&str, &str), usize> = HashMap::new();
    let mut answered: HashMap<(&str, &str), usize> = HashMap::new();
    for e in events {
        match e {
            CallEvent::CallEnded { call, .. } => *ended.entry(call).or_default() += 1,
            CallEvent::LegRinging(l) | CallEvent::LegDialing(l) => {
                *legs_open.entry((&l.call, &l.conversation)).or_default() += 1;
            }
            CallEvent::LegAnswered(l) => {
                *answered.entry((&l.call, &l.conversation)).or_default() += 1;
                legs_open.entry((&l.call, &l.conversation)).or_insert(1);
            }
            CallEvent::LegStoppedRinging { call, conversation, .. }
            | CallEvent::ConversationEnded { call, conversation, .. } => {
                *legs_closed.entry((call, conversation)).or_default() += 1
            }
            _ => {}
        }
    }
    for (call, n) in &ended {
        prop_assert_eq!(*n, 1, "call {} ended {} times", call, n);
    }
    for call in started {
        prop_assert!(ended.contains_key(call.as_str()), "call {} never ended", call);
    }
    for (leg, n) in &legs_open {
        prop_assert_eq!(*n, 1, "leg {:?} started {} times", leg, n);
        prop_assert_eq!(legs_closed.get(leg), Some(&1), "leg {:?} not closed exactly once", leg);
    }
    for (leg, n) in &answered {
        prop_assert_eq!(*n, 1, "leg {:?} answered {} times", leg, n);
    }
    Ok(())
}

/// Feeds messages, noting every call key that was ever live.
fn feed(t: &mut Tracker, messages: &[Message], started: &mut HashSet<String>) -> Vec<CallEvent> {
    let mut events = Vec::new();
    for m in messages {
        events.extend(t.handle(m));
        for full in t.snapshot() {
            started.insert(full.channel.id);
        }
    }
    events
}

fn far_future() -> Timestamp {
    Timestamp::from_secs(T0 + 30 * 24 * 3600)
}

fn script_count() -> usize {
    scripts::all().len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn truncated_and_repeated_streams_end_every_call_once(
        which in 0..script_count(),
        cut in 0.0f64..=1.0,
        repeats in proptest::collection::vec(any::<bool>(), 0..400),
    ) {
        let script = &scripts::all()[which];
        let all = &script.pbx.messages;
        let keep = ((all.len() as f64) * cut) as usize;
        let mut stream = Vec::new();
        for (i, m) in all[..keep].iter().enumerate() {
            stream.push(m.clone());
            if repeats.get(i).copied().unwrap_or(false) {
                stream.push(m.clone());
            }
        }
        let mut t = tracker();
        let mut started = HashSet::new();
        let mut events = feed(&mut t, &stream, &mut started);
        events.extend(t.tick(far_future()));
        prop_assert_eq!(t.live_calls(), 0);
        prop_assert_eq!(t.live_channels(), 0);
        check_promises(&started, &events)?;
    }

    #[test]
    fn repeated_delivery_of_a_whole_call_still_ends_it_without_help(
        which in 0..script_count(),
        repeats in proptest::collection::vec(any::<bool>(), 0..400),
    ) {
        let script = &scripts::all()[which];
        let mut stream = Vec::new();
        for (i, m) in script.pbx.messages.iter().enumerate() {
            stream.push(m.clone());
            if repeats.get(i).copied().unwrap_or(false) {
                stream.push(m.clone());
            }
        }
        let mut t = tracker();
        let mut started = HashSet::new();
        let events = feed(&mut t, &stream, &mut started);
        prop_assert_eq!(t.live_calls(), 0, "channels are gone, so calls are over");
        check_promises(&started, &events)?;
        // Repeats change nothing a consumer sees.
        let mut once = tracker();
        let plain: Vec<String> = script.pbx.messages.iter().flat_map(|m| once.handle(m)).map(|e| format!("{e:?}")).collect();
        let repeated: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        prop_assert_eq!(plain, repeated);
    }

    #[test]
    fn concurrent_calls_do_not_disturb_each_other(
        a in 0..script_count(),
        b in 0..script_count(),
        order in proptest::collection::vec(any::<bool>(), 0..600),
    ) {
        let first = shifted(&scripts::all()[a].pbx.messages, 0);
        let second = shifted(&scripts::all()[b].pbx.messages, 1000);
        let alone = |messages: &[Message]| {
            let mut t = tracker();
            messages.iter().flat_map(|m| t.handle(m)).map(|e| e.call().to_owned() + " " + e.name()).collect::<Vec<_>>()
        };
        let (mut i, mut j) = (0, 0);
        let mut merged = Vec::new();
        let mut pick = order.into_iter();
        while i < first.len() || j < second.len() {
            let take_first = j >= second.len() || (i < first.len() && pick.next().unwrap_or(true));
            if take_first { merged.push(first[i].clone()); i += 1; } else { merged.push(second[j].clone()); j += 1; }
        }
        let mut t = tracker();
        let together: Vec<String> = merged.iter().flat_map(|m| t.handle(m)).map(|e| e.call().to_owned() + " " + e.name()).collect();
        let first_calls: HashSet<String> = alone(&first).iter().map(|s| s.split(' ').next().unwrap().to_owned()).collect();
        let of_first: Vec<String> = together.iter().filter(|s| first_calls.contains(s.split(' ').next().unwrap())).cloned().collect();
        let of_second: Vec<String> = together.iter().filter(|s| !first_calls.contains(s.split(' ').next().unwrap())).cloned().collect();
        prop_assert_eq!(of_first, alone(&first));
        prop_assert_eq!(of_second, alone(&second));
        prop_assert_eq!(t.live_calls(), 0);
    }

    #[test]
    fn garbled_streams_never_panic(
        events in proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "Newchannel", "Newstate", "DialBegin", "DialEnd", "Hangup", "HangupRequest", "BridgeEnter",
                    "BridgeLeave", "AgentCalled", "AgentRingNoAnswer", "AgentConnect", "Pickup", "ParkedCall",
                    "UnParkedCall", "ParkedCallTimeOut", "BlindTransfer", "AttendedTransfer", "Hold", "Unhold",
                    "VarSet", "CEL", "CoreShowChannel", "Rename", "QueueCallerAbandon", "LocalBridge",
                ]),
                proptest::collection::vec(
                    (
                        prop::sample::select(vec![
                            "Uniqueid", "Linkedid", "Channel", "ChannelState", "DestUniqueid", "DestLinkedid",
                            "DestChannel", "TargetUniqueid", "TargetLinkedid", "ParkeeUniqueid", "RetrieverUniqueid",
                            "RetrieverChannel", "TransfererUniqueid", "TransfereeUniqueid", "OrigTransfererUniqueid",
                            "TransferTargetUniqueid", "DialStatus", "Cause", "TechCause", "Result", "Variable",
                            "Value", "Timestamp", "UniqueID", "LinkedID", "Extra", "Newname", "BridgeId", "Duration",
                            "CallerIDNum", "Exten", "DialString", "ParkerDialString",
                        ]),
                        prop::sample::select(vec![
                            "1700000000.1", "1700000000.2", "1700000000.3", "1699999999.9", "x-1.1", "", "none",
                            "PJSIP/101-00000001", "PJSIP/carrier-00000002", "Local/101@q-00000003;1",
                            "Local/101@q-00000003;2", "6", "5", "0", "ANSWER", "CANCEL", "BUSY", "Success", "16",
                            "26", "MIXMONITOR_FILENAME", "/tmp/r.wav", "1700000001.5", "{\"a\":1}", "{", "00:01:02",
                            "9001234567@carrier", "PJSIP/101", "\u{fffd}\u{0}",
                        ]),
                    ),
                    0..10,
                ),
            ),
            0..60,
        ),
        now in 0i64..3_000_000_000,
    ) {
        let mut t = tracker();
        let mut all = Vec::new();
        let mut started = HashSet::new();
        for (name, headers) in &events {
            let mut m = Message::new().with("Event", *name);
            for (k, v) in headers {
                m.push(k, *v);
            }
            all.extend(t.handle(&m));
            for full in t.snapshot() {
                started.insert(full.channel.id);
            }
        }
        let listed: Vec<Message> = events.iter().take(3).map(|(_, h)| {
            let mut m = Message::new().with("Event", "CoreShowChannel");
            for (k, v) in h { m.push(k, *v); }
            m
        }).collect();
        all.extend(t.resync(&listed, Timestamp::from_secs(now)));
        for full in t.snapshot() {
            started.insert(full.channel.id);
        }
        all.extend(t.tick(Timestamp::from_secs(now.max(T0 + 10) + 40 * 24 * 3600)));
        prop_assert_eq!(t.live_calls(), 0);
        check_promises(&started, &all)?;
    }
}
