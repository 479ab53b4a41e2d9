//! Scenario tests: hand-written AMI sequences shaped like Asterisk 22's output for each call scenario of
//! SCENARIOS.md, and what the tracker must conclude from them.

#[path = "../common/mod.rs"]
mod common;
mod memory;
mod other_pbxs;
mod props;
mod scripts;
mod versions;

use std::collections::HashMap;

use common::*;
use tracker::{CallEvent, CallState, Direction, Timestamp};

fn check(script: &scripts::Script, expected: &[&str]) -> Vec<CallEvent> {
    let mut t = tracker();
    let events = run(&mut t, &script.pbx.messages);
    let map: HashMap<String, &str> = script.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let got = summary(&events, &map);
    assert_eq!(got, expected, "\nall events: {got:#?}");
    assert_eq!(t.live_calls(), 0, "every call ended");
    assert_eq!(t.live_channels(), 0, "every channel forgotten");
    events
}

#[test]
fn s1_incoming_answered() {
    let s = scripts::s1_incoming_answered();
    let events = check(
        &s,
        &[
            "recording_started T",
            "leg_ringing T L1 Dial",
            "leg_answered T L1 Dial",
            "conversation_ended T L1 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
    let full = ended(&events, &s.uid("T"));
    assert_eq!(full.channel.direction, Direction::Incoming);
    assert_eq!(full.channel.state, CallState::Ended);
    assert_eq!(full.channel.from.original, CLIENT);
    assert_eq!(full.channel.from.base, "9001234567");
    assert_eq!(full.channel.from.custom, "89001234567");
    assert_eq!(full.channel.to.original, DID);
    assert_eq!(full.channel.trunk.original, DID);
    assert!(full.channel.was_answered);
    assert!(full.channel.is_primary);
    assert_eq!(full.channel.name, "PJSIP/carrier-00000001");
    assert_eq!(full.record, "/var/spool/asterisk/monitor/in-1700000000.1.wav");
    assert!(!full.is_ivr);
    assert_eq!(full.active_conversation_id, "");
    let conv = &full.conversations[&s.uid("L1")];
    assert_eq!(conv.channel.to.original, "101");
    assert!(conv.channel.to.is_local);
    assert_eq!(conv.channel.from.original, CLIENT);
    assert_eq!(conv.channel.state, CallState::Ended);
    assert!(conv.channel.was_answered);
    assert!(!conv.channel.is_primary);
    // Talk time is from answer to the end of that leg: 5 s.
    let talk = events.iter().find_map(|e| match e {
        CallEvent::ConversationEnded { talk_seconds, .. } => Some(*talk_seconds),
        _ => None,
    });
    assert_eq!(talk, Some(5));
    // Times are in the PBX's zone (+05:00); 1700000000 = 2023-11-14 22:13:20 UTC.
    assert_eq!(full.channel.start_time, "2023-11-15 03:13:20");
    assert_eq!(conv.channel.answer_time, "2023-11-15 03:13:23");
    assert_eq!(conv.channel.end_time, "2023-11-15 03:13:28");
    // CEL extra: the client's HANGUP (its CEL came while the call was live, after its AMI Hangup) and the
    // leg's latest one before the call ended (BRIDGE_EXIT).
    assert_eq!(full.channel.extra.get("hangupcause"), Some(&serde_json::json!(16)));
    assert_eq!(conv.channel.extra.get("bridge_id"), Some(&serde_json::json!("b-1")));
    let json = serde_json::to_value(full).unwrap();
    for key in [
        "active_conversation_id",
        "channel",
        "conversations",
        "deal",
        "entity",
        "is_ivr",
        "record",
        "registration",
        "result",
    ] {
        assert!(json.get(key).is_some(), "call_full.{key}");
    }
    assert_eq!(json["channel"]["type"], "incoming");
    assert_eq!(json["channel"]["state"], "ended");
    assert!(json["entity"].is_null() && json["registration"].is_null() && json["deal"].is_null());
    assert!(json["conversations"][s.uid("L1")]["user"].is_null());
}

#[test]
fn the_client_number_follows_the_dialplan_rewrite() {
    let mut p = common::Pbx::new();
    let t = p.new_channel("PJSIP/carrier", 4, CLIENT, "from-trunk", DID, None);
    p.set_caller_number(t, "89001234567");
    let l1 = p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(t));
    p.ring(t, l1, "101");
    p.hangup_request(t, 16);
    p.dial_end(Some(t), l1, "CANCEL");
    p.hangup(l1, 16, "Normal Clearing");
    p.hangup(t, 16, "Normal Clearing");
    let mut tr = tracker();
    let events = run(&mut tr, &p.messages);
    let full = ended(&events, &p.uid(t));
    assert_eq!(full.channel.from.original, "89001234567");
    assert_eq!(full.channel.from.base, "9001234567");
    let ringing = events.iter().find_map(|e| match e {
        CallEvent::LegRinging(l) => Some(l.peer_number.clone()),
        _ => None,
    });
    assert_eq!(ringing.as_deref(), Some("89001234567"));
    assert!(matches!(
        events[1],
        CallEvent::LegStoppedRinging {
            reason: tracker::StopReason::CallerGone,
            ..
        }
    ));
}

#[test]
fn s2_incoming_not_answered() {
    let s = scripts::s2_incoming_no_answer();
    let events = check(
        &s,
        &[
            "leg_ringing T L1 Dial",
            "leg_stopped_ringing T L1 Timeout",
            "call_ended T Hangup result=304",
        ],
    );
    let full = ended(&events, &s.uid("T"));
    assert!(!full.channel.was_answered);
    assert!(!full.is_ivr, "a phone rang");
    assert_eq!(full.channel.answer_time, tracker::NEVER);
}

#[test]
fn s3_queue_ringall() {
    let s = scripts::s3_queue_ringall();
    check(
        &s,
        &[
            "leg_ringing T L101 Queue",
            "leg_ringing T L102 Queue",
            "leg_ringing T L103 Queue",
            "leg_answered T L102 Queue",
            "leg_stopped_ringing T L101 AnsweredElsewhere",
            "leg_stopped_ringing T L103 AnsweredElsewhere",
            "conversation_ended T L102 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
}

#[test]
fn s4_queue_one_by_one() {
    let s = scripts::s4_queue_linear();
    check(
        &s,
        &[
            "leg_ringing T L101 Queue",
            "leg_stopped_ringing T L101 Timeout",
            "leg_ringing T L102 Queue",
            "leg_stopped_ringing T L102 Timeout",
            "leg_ringing T L103 Queue",
            "leg_answered T L103 Queue",
            "conversation_ended T L103 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
}

#[test]
fn s5_queue_abandoned() {
    let s = scripts::s5_queue_abandoned();
    let events = check(
        &s,
        &[
            "leg_ringing T L101 Queue",
            "leg_ringing T L102 Queue",
            "leg_stopped_ringing T L101 CallerGone",
            "leg_stopped_ringing T L102 CallerGone",
            "call_ended T Hangup result=304",
        ],
    );
    assert!(!ended(&events, &s.uid("T")).is_ivr);
}

#[test]
fn s6_ivr_abandoned() {
    let s = scripts::s6_ivr();
    let events = check(&s, &["call_ended T Hangup result=304"]);
    let full = ended(&events, &s.uid("T"));
    assert!(full.is_ivr);
    assert!(full.conversations.is_empty());
    assert_eq!(full.channel.direction, Direction::Incoming);
}

#[test]
fn s7_outgoing_answered() {
    let s = scripts::s7_outgoing(scripts::Outcome::Answer);
    let events = check(
        &s,
        &[
            "leg_dialing O O Dial",
            "leg_answered O O Dial",
            "conversation_ended O O HungUp { cause: Some(16) }",
            "call_ended O Hangup result=200",
        ],
    );
    let full = ended(&events, &s.uid("O"));
    assert_eq!(full.channel.direction, Direction::Outgoing);
    assert_eq!(full.channel.from.original, "101");
    assert!(full.channel.from.is_local);
    assert_eq!(full.channel.to.original, "89001234567");
    assert_eq!(full.channel.to.base, "9001234567");
    assert_eq!(full.channel.trunk.original, DID);
    let conv = &full.conversations[&s.uid("O")];
    assert!(conv.channel.is_primary);
    assert_eq!(conv.channel.from.original, "101");
    assert_eq!(conv.channel.to.original, "89001234567");
    let leg = events.iter().find_map(|e| match e {
        CallEvent::LegDialing(l) => Some(l.clone()),
        _ => None,
    });
    assert_eq!(leg.map(|l| l.peer_number), Some("89001234567".to_owned()));
}

#[test]
fn s8_outgoing_failures() {
    use scripts::Outcome::*;
    for (outcome, stop, result) in [
        (Busy, "Busy", 486),
        (Decline, "Declined", 603),
        (DeclineWithTechCause, "Declined", 603),
        (NoAnswer, "Timeout", 304),
        (CallerCancels, "CallerGone", 487),
        (Congestion, "Unavailable", 503),
    ] {
        let s = scripts::s7_outgoing(outcome);
        let events = check(
            &s,
            &[
                "leg_dialing O O Dial",
                &format!("leg_stopped_ringing O O {stop}"),
                &format!("call_ended O Hangup result={result}"),
            ],
        );
        let full = ended(&events, &s.uid("O"));
        assert!(!full.channel.was_answered, "{outcome:?}");
        assert_eq!(full.channel.direction, Direction::Outgoing);
    }
}

#[test]
fn s9_local_call() {
    let s = scripts::s9_local();
    let events = check(
        &s,
        &[
            "leg_ringing O L102 Dial",
            "leg_answered O L102 Dial",
            "conversation_ended O L102 HungUp { cause: Some(16) }",
            "call_ended O Hangup result=200",
        ],
    );
    let full = ended(&events, &s.uid("O"));
    assert_eq!(full.channel.direction, Direction::Local);
    assert_eq!(full.channel.from.original, "101");
    assert_eq!(full.channel.to.original, "102");
    assert_eq!(full.channel.trunk.original, "");
}

#[test]
fn s10_blind_transfer() {
    let s = scripts::s10_blind_transfer();
    let events = check(
        &s,
        &[
            "leg_ringing T L1 Dial",
            "leg_answered T L1 Dial",
            "transferred T L1 Blind 102",
            "conversation_ended T L1 Transferred",
            "leg_ringing T L2 Transfer",
            "leg_answered T L2 Transfer",
            "conversation_ended T L2 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
    let full = ended(&events, &s.uid("T"));
    assert_eq!(full.conversations.len(), 2);
    assert!(full.conversations.values().all(|c| c.channel.was_answered));
}

#[test]
fn s11_attended_transfer_cel_first_or_last_gives_the_same_result() {
    let cel_first = scripts::s11_attended_transfer(true);
    let cel_last = scripts::s11_attended_transfer(false);
    let expected = [
        "leg_ringing T L1 Dial",
        "leg_answered T L1 Dial",
        "hold T L1",
        "leg_ringing C L102 Dial",
        "leg_answered C L102 Dial",
        "transferred T L1 Attended 102",
        "conversation_ended T L1 Transferred",
        "conversation_ended C L102 MovedToCall { call: \"1700000000.1\" }",
        "leg_answered T L102 Transfer",
        "call_ended C Hangup result=200",
        "conversation_ended T L102 HungUp { cause: Some(16) }",
        "call_ended T Hangup result=200",
    ];
    let a = check(&cel_first, &expected);
    let b = check(&cel_last, &expected);
    // Same conclusions, field for field (times differ by the extra events' spacing only in the live phase).
    let (fa, fb) = (ended(&a, &cel_first.uid("T")), ended(&b, &cel_last.uid("T")));
    assert_eq!(
        fa.conversations.keys().collect::<Vec<_>>(),
        fb.conversations.keys().collect::<Vec<_>>()
    );
    assert_eq!(fa.result, fb.result);
    assert_eq!(fa.channel.direction, fb.channel.direction);
    let consult = ended(&a, &cel_first.uid("C"));
    assert_eq!(consult.channel.direction, Direction::Local);
}

#[test]
fn s11_hold_marks_the_conversation() {
    let s = scripts::s11_attended_transfer(true);
    let mut t = tracker();
    let hold_at = s
        .pbx
        .messages
        .iter()
        .position(|m| m.event_name() == Some("Hold"))
        .unwrap();
    run(&mut t, &s.pbx.messages[..=hold_at]);
    let full = t.call_full(&s.uid("T")).unwrap();
    assert!(full.conversations[&s.uid("L1")].is_parked);
    assert_eq!(full.active_conversation_id, s.uid("L1"));
    assert_eq!(full.channel.state, CallState::Talking);
    assert_eq!(full.result, 0, "live calls have no result yet");
}

#[test]
fn an_abandoned_consultation_leaves_no_trace_in_the_client_call() {
    // AMI Atxfer: 101 is moved into a bridge with a Local channel that rings 102 (same linkedid as the client);
    // 102 answers the consultation, then hangs up without the transfer being completed.
    let mut p = common::Pbx::new();
    let t = p.new_channel("PJSIP/carrier", 4, CLIENT, "from-trunk", DID, None);
    let l1 = p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(t));
    p.ring(t, l1, "101");
    p.set_state(l1, 6);
    p.dial_end(Some(t), l1, "ANSWER");
    p.set_state(t, 6);
    p.bridge("b-1", t, l1);
    p.hold(l1, true);
    let (one, two) = p.new_local_pair("102", "from-internal", t);
    p.bridge_enter("b-2", one, 1);
    p.bridge_leave("b-1", l1, 1);
    p.bridge_enter("b-2", l1, 2);
    let l102 = p.new_channel("PJSIP/102", 0, "102", "from-internal", "s", Some(two));
    p.ring(two, l102, "102");
    p.set_state(l102, 6);
    p.dial_end(Some(two), l102, "ANSWER");
    p.bridge("b-3", two, l102);
    p.advance_ms(3000);
    p.hangup(l102, 16, "Normal Clearing");
    p.hangup(two, 16, "Normal Clearing");
    p.hangup(one, 16, "Normal Clearing");
    p.bridge_leave("b-2", l1, 0);
    p.bridge_enter("b-1", l1, 2);
    p.hold(l1, false);
    p.advance_ms(2000);
    p.hangup(l1, 16, "Normal Clearing");
    p.hangup(t, 16, "Normal Clearing");
    let mut tr = tracker();
    let events = run(&mut tr, &p.messages);
    let map: HashMap<String, &str> = [(p.uid(t), "T"), (p.uid(l1), "L1")].into_iter().collect();
    assert_eq!(
        summary(&events, &map),
        [
            "leg_ringing T L1 Dial",
            "leg_answered T L1 Dial",
            "hold T L1",
            "unhold T L1",
            "conversation_ended T L1 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ]
    );
    assert_eq!(ended(&events, &p.uid(t)).conversations.len(), 1);
}

#[test]
fn s12_pickup() {
    let s = scripts::s12_pickup();
    let events = check(
        &s,
        &[
            "leg_ringing T L101 Dial",
            "leg_stopped_ringing T L101 PickedUp { by: \"102\" }",
            "leg_answered T P102 Pickup",
            "call_ended P102 Merged { into: \"1700000000.1\" } result=304",
            "conversation_ended T P102 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
    let full = ended(&events, &s.uid("T"));
    assert!(!full.conversations[&s.uid("L101")].channel.was_answered);
    assert!(full.conversations[&s.uid("P102")].channel.was_answered);
}

#[test]
fn s13_park_and_retrieve() {
    let s = scripts::s13_park();
    let events = check(
        &s,
        &[
            "leg_ringing T L1 Dial",
            "leg_answered T L1 Dial",
            "parked T L1",
            "conversation_ended T L1 Parked",
            "transferred T L1 Blind 700",
            "unparked T L1",
            "leg_answered T R103 ParkRetrieval",
            "call_ended R103 Merged { into: \"1700000000.1\" } result=304",
            "conversation_ended T R103 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
    assert_eq!(ended(&events, &s.uid("T")).conversations.len(), 2);
}

#[test]
fn s13_parked_flag_while_parked() {
    let s = scripts::s13_park();
    let mut t = tracker();
    let unpark_at = s
        .pbx
        .messages
        .iter()
        .position(|m| m.event_name() == Some("UnParkedCall"))
        .unwrap();
    run(&mut t, &s.pbx.messages[..unpark_at]);
    let full = t.call_full(&s.uid("T")).unwrap();
    assert!(full.conversations[&s.uid("L1")].is_parked);
    run(&mut t, &s.pbx.messages[unpark_at..=unpark_at]);
    let full = t.call_full(&s.uid("T")).unwrap();
    assert!(!full.conversations[&s.uid("L1")].is_parked);
}

#[test]
fn s19_freepbx_queue_with_local_members() {
    let s = scripts::s19_local_queue(false);
    check(
        &s,
        &[
            "leg_ringing T P101 Queue",
            "leg_ringing T P102 Queue",
            "leg_answered T P102 Queue",
            "leg_stopped_ringing T P101 AnsweredElsewhere",
            "conversation_ended T P102 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
}

#[test]
fn s19_local_member_times_out_one_by_one() {
    let s = scripts::s19_local_queue_linear();
    check(
        &s,
        &[
            "leg_ringing T P101 Queue",
            "leg_stopped_ringing T P101 Timeout",
            "leg_ringing T P102 Queue",
            "leg_answered T P102 Queue",
            "conversation_ended T P102 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
}

#[test]
fn s19_optimised_local_channels_keep_the_conversation() {
    let s = scripts::s19_local_queue(true);
    check(
        &s,
        &[
            "leg_ringing T P101 Queue",
            "leg_ringing T P102 Queue",
            "leg_answered T P102 Queue",
            "leg_stopped_ringing T P101 AnsweredElsewhere",
            "conversation_ended T P102 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200",
        ],
    );
}

// ----- resynchronisation, expiry, robustness ---------------------------------------------------------------

fn talking_s1() -> (scripts::Script, usize) {
    let s = scripts::s1_incoming_answered();
    let talking = s
        .pbx
        .messages
        .iter()
        .rposition(|m| m.event_name() == Some("BridgeEnter"))
        .unwrap();
    (s, talking)
}

#[test]
fn resync_with_the_same_channels_changes_nothing() {
    let (s, talking) = talking_s1();
    let mut t = tracker();
    run(&mut t, &s.pbx.messages[..=talking]);
    let items = [
        s.pbx.show_channel(s.c("T"), "b-1", 4),
        s.pbx.show_channel(s.c("L1"), "b-1", 2),
    ];
    assert_eq!(t.resync(&items, s.pbx.timestamp()), vec![]);
    let events = run(&mut t, &s.pbx.messages[talking + 1..]);
    let ends = events
        .iter()
        .filter(|e| matches!(e, CallEvent::CallEnded { .. }))
        .count();
    assert_eq!(ends, 1);
}

#[test]
fn resync_closes_calls_that_vanished_and_never_twice() {
    let (s, talking) = talking_s1();
    let mut t = tracker();
    run(&mut t, &s.pbx.messages[..=talking]);
    let later = Timestamp::from_secs(T0 + 60);
    let events = t.resync(&[], later);
    let map: HashMap<String, &str> = s.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(
        summary(&events, &map),
        ["conversation_ended T L1 Vanished", "call_ended T Vanished result=200"]
    );
    // The hang-ups we missed arrive late (or the list is fed again): nothing more.
    assert!(run(&mut t, &s.pbx.messages[talking + 1..]).is_empty());
    let items = [s.pbx.show_channel(s.c("T"), "b-1", 4)];
    assert!(t.resync(&items, later).is_empty());
    assert_eq!(t.live_calls(), 0);
}

#[test]
fn resync_on_a_fresh_tracker_rebuilds_live_calls() {
    // ringlink restarted during the talk (S16): the list is all it knows.
    let (s, talking) = talking_s1();
    let mut t = tracker();
    // The script's clock is at its end, 8 s after the call started.
    let items = [
        s.pbx.show_channel(s.c("T"), "b-1", 8),
        s.pbx.show_channel(s.c("L1"), "b-1", 5),
    ];
    let now = s.pbx.timestamp();
    let map: HashMap<String, &str> = s.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(summary(&t.resync(&items, now), &map), ["leg_answered T L1 Resync"]);
    let full = t.call_full(&s.uid("T")).unwrap();
    assert_eq!(full.channel.direction, Direction::Incoming);
    assert_eq!(full.channel.state, CallState::Talking);
    assert_eq!(full.channel.start_time, "2023-11-15 03:13:20", "start from Duration");
    let rest = run(&mut t, &s.pbx.messages[talking + 1..]);
    assert_eq!(
        summary(&rest, &map),
        [
            "conversation_ended T L1 HungUp { cause: Some(16) }",
            "call_ended T Hangup result=200"
        ]
    );
}

/// After a restart the client's channel is listed where the dialplan has taken it (`Queue(sales)`: exten
/// `sales`), not at the number it called: the call's `to` is the dialled number the shell asked Asterisk for
/// ([`tracker::RESYNC_DIALED_NUMBER`], `CALLERID(dnid)`), else the trunk's configured number.
#[test]
fn resync_keeps_the_number_dialled_not_the_queue_name() {
    let (s, _) = talking_s1();
    let mut client = s.pbx.show_channel(s.c("T"), "b-1", 8);
    client.set("Exten", "sales");
    client.set("Context", "did-queue");
    let leg = s.pbx.show_channel(s.c("L1"), "b-1", 5);
    let mut t = tracker();
    t.resync(&[client.clone(), leg.clone()], s.pbx.timestamp());
    let full = t.call_full(&s.uid("T")).expect("live call");
    assert_eq!(full.channel.to.original, DID, "the trunk's number, not the queue");
    assert_eq!(full.conversations[&s.uid("L1")].channel.to.original, "101");

    let other_did = "73432720000";
    client.push(tracker::RESYNC_DIALED_NUMBER, other_did);
    let mut t = tracker();
    t.resync(&[client, leg], s.pbx.timestamp());
    let full = t.call_full(&s.uid("T")).expect("live call");
    assert_eq!(
        full.channel.to.original, other_did,
        "the number Asterisk says was dialled"
    );
}

/// Talk seconds of the (only) conversation that ended.
fn talk_and_answer(events: &[CallEvent]) -> Option<u64> {
    events.iter().find_map(|e| match e {
        CallEvent::ConversationEnded { talk_seconds, .. } => Some(*talk_seconds),
        _ => None,
    })
}

fn answer_instant(s: &scripts::Script) -> String {
    let uid = s.uid("L1");
    s.pbx
        .messages
        .iter()
        .find(|m| {
            m.event_name() == Some("Newstate")
                && m.get("Uniqueid") == Some(uid.as_str())
                && m.get("ChannelState") == Some("6")
        })
        .and_then(|m| m.get("Timestamp"))
        .expect("the script answers L1")
        .to_owned()
}

#[test]
fn resync_takes_the_answer_time_from_the_pbx() {
    // ringlink restarted during the talk (S16), and the shell asked Asterisk when L1 answered.
    let (s, talking) = talking_s1();
    let expected = talk_and_answer(&run(&mut tracker(), &s.pbx.messages)).expect("talk in the full run");
    let mut t = tracker();
    let mut l1 = s.pbx.show_channel(s.c("L1"), "b-1", 5);
    l1.push(tracker::RESYNC_ANSWER_TIME, answer_instant(&s));
    let items = [s.pbx.show_channel(s.c("T"), "b-1", 8), l1];
    t.resync(&items, s.pbx.timestamp());
    let rest = run(&mut t, &s.pbx.messages[talking + 1..]);
    assert_eq!(
        talk_and_answer(&rest),
        Some(expected),
        "talk counted from the real answer"
    );
}

#[test]
fn a_ringing_leg_answered_while_away_gets_its_real_answer_time() {
    // The AMI connection dropped while L1 rang and came back during the talk (S17).
    let (s, talking) = talking_s1();
    let expected = talk_and_answer(&run(&mut tracker(), &s.pbx.messages)).expect("talk in the full run");
    let answered = answer_instant(&s);
    let before_answer = s
        .pbx
        .messages
        .iter()
        .position(|m| m.get("Timestamp") == Some(answered.as_str()))
        .expect("answer in the script");
    let mut t = tracker();
    run(&mut t, &s.pbx.messages[..before_answer]);
    let mut l1 = s.pbx.show_channel(s.c("L1"), "b-1", 5);
    l1.push(tracker::RESYNC_ANSWER_TIME, answered);
    let items = [s.pbx.show_channel(s.c("T"), "b-1", 8), l1];
    let map: HashMap<String, &str> = s.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let events = t.resync(&items, s.pbx.timestamp());
    assert_eq!(summary(&events, &map), ["leg_answered T L1 Dial"]);
    let rest = run(&mut t, &s.pbx.messages[talking + 1..]);
    assert_eq!(
        talk_and_answer(&rest),
        Some(expected),
        "talk counted from the real answer"
    );
}

#[test]
fn resync_finds_a_ringing_phone() {
    let s = scripts::s2_incoming_no_answer();
    let mut t = tracker();
    let items = [
        s.pbx.show_channel(s.c("T"), "", 3),
        s.pbx.show_channel(s.c("L1"), "", 2),
    ];
    let map: HashMap<String, &str> = s.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
    // In the script the leg's last state is Down (it hung up); show it ringing as it was mid-call.
    let mut ringing = items[1].clone();
    ringing.set("ChannelState", "5");
    let events = t.resync(&[items[0].clone(), ringing], Timestamp::from_secs(T0 + 5));
    assert_eq!(summary(&events, &map), ["leg_ringing T L1 Resync"]);
}

#[test]
fn lost_hangup_expires_with_a_reason() {
    let (s, talking) = talking_s1();
    let mut t = tracker();
    run(&mut t, &s.pbx.messages[..=talking]);
    let map: HashMap<String, &str> = s.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert!(
        t.tick(Timestamp::from_secs(T0 + 3600)).is_empty(),
        "not idle long enough"
    );
    let events = t.tick(Timestamp::from_secs(T0 + 5 * 3600));
    assert_eq!(
        summary(&events, &map),
        [
            "conversation_ended T L1 Expired",
            "call_ended T Expired { idle_secs: 17996 } result=200"
        ]
    );
    assert!(run(&mut t, &s.pbx.messages[talking + 1..]).is_empty());
}

#[test]
fn unknown_events_and_odd_values_are_ignored() {
    let mut t = tracker();
    let odd = [
        ami::Message::new().with("Response", "Success"),
        ami::Message::new()
            .with("Event", "FullyBooted")
            .with("Status", "Fully Booted"),
        ami::Message::new().with("Event", "Newchannel"),
        ami::Message::new()
            .with("Event", "Newchannel")
            .with("Uniqueid", "none")
            .with("Channel", "none"),
        ami::Message::new()
            .with("Event", "Newchannel")
            .with("Timestamp", "garbage")
            .with("Uniqueid", "x")
            .with("Channel", "")
            .with("ChannelState", "999"),
        ami::Message::new()
            .with("Event", "Hangup")
            .with("Uniqueid", "nobody")
            .with("Cause", "-1"),
        ami::Message::new()
            .with("Event", "CEL")
            .with("UniqueID", "nobody")
            .with("Extra", "{not json"),
        ami::Message::new()
            .with("Event", "VarSet")
            .with("Variable", "MIXMONITOR_FILENAME"),
        ami::Message::new()
            .with("Event", "DialEnd")
            .with("DestUniqueid", "ghost"),
        ami::Message::new()
            .with("Event", "AttendedTransfer")
            .with("Result", "Success"),
    ];
    for m in &odd {
        assert!(t.handle(m).is_empty(), "{m:?}");
    }
    assert_eq!(t.live_calls(), 0);
}

#[test]
fn call_events_serialise_for_replay_output() {
    let s = scripts::s1_incoming_answered();
    let mut t = tracker();
    let events = run(&mut t, &s.pbx.messages);
    let json = serde_json::to_value(&events).unwrap();
    assert_eq!(json[1]["event"], "leg_ringing");
    assert_eq!(json[1]["origin"], "dial");
    assert_eq!(json[1]["endpoint"], "101");
    assert!(json[1]["time"].as_str().unwrap().starts_with("1700000000."));
    assert_eq!(json[3]["reason"]["kind"], "hung_up");
    assert_eq!(json[4]["call_full"]["result"], 200);
}
