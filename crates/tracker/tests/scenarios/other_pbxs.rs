//! Dialplans other than the test bed's: outbound routes through Local channels, originate-based calls
//! (click-to-call), as scripted event sequences shaped like Asterisk 22's output for them.

use std::collections::HashMap;

use tracker::{CallEvent, Direction};

use super::common::{ended, run, summary, tracker, Pbx, C};

const CLIENT_LOCAL: &str = "89001234567";

fn labels(p: &Pbx, handles: &[(&'static str, C)]) -> HashMap<String, &'static str> {
    handles.iter().map(|(l, c)| (p.uid(*c), *l)).collect()
}

/// 101 dials the client; the dialplan sends it through `Local/<number>@outbound-routes` (routing, caller-ID
/// rules), whose `;2` half dials the trunk. `optimised`: without `/n` Asterisk optimises the Local pair away
/// once both sides are bridged, and the phone ends up bridged with the trunk directly.
fn outgoing_through_local(optimised: bool) -> (Pbx, C) {
    let mut p = Pbx::new();
    let o = p.new_channel("PJSIP/101", 4, "101", "from-internal", CLIENT_LOCAL, None);
    p.newexten(o, "Dial", "Local/89001234567@outbound-routes/n");
    let (l1, l2) = p.new_local_pair(CLIENT_LOCAL, "outbound-routes", o);
    p.dial_begin(Some(o), l1, "Local/89001234567@outbound-routes/n");
    p.newexten(l2, "Dial", "PJSIP/89001234567@carrier,30");
    let c = p.new_channel("PJSIP/carrier", 0, "101", "outbound-routes", "s", Some(l2));
    p.dial_begin(Some(l2), c, "89001234567@carrier");
    p.set_state(c, 5);
    p.dial_state(l2, c, "RINGING");
    p.set_state(l1, 5);
    p.dial_state(o, l1, "RINGING");
    p.advance_ms(4000);
    p.set_state(c, 6);
    p.dial_end(Some(l2), c, "ANSWER");
    p.set_state(l2, 6);
    p.bridge("b-2", l2, c);
    p.set_state(l1, 6);
    p.dial_end(Some(o), l1, "ANSWER");
    p.set_state(o, 6);
    p.bridge("b-1", o, l1);
    if optimised {
        p.local_optimization(l1, l2);
        p.bridge_leave("b-1", o, 1);
        p.bridge_enter("b-2", o, 3);
        p.bridge_leave("b-2", l2, 2);
        p.hangup(l2, 16, "Normal Clearing");
        p.bridge_leave("b-1", l1, 0);
        p.hangup(l1, 16, "Normal Clearing");
        p.advance_ms(5000);
        p.hangup_request(o, 16);
        p.unbridge("b-2", o, c);
        p.hangup(o, 16, "Normal Clearing");
        p.hangup(c, 16, "Normal Clearing");
    } else {
        p.advance_ms(5000);
        p.hangup_request(o, 16);
        p.unbridge("b-1", o, l1);
        p.hangup(o, 16, "Normal Clearing");
        p.hangup(l1, 16, "Normal Clearing");
        p.unbridge("b-2", l2, c);
        p.hangup(l2, 16, "Normal Clearing");
        p.hangup(c, 16, "Normal Clearing");
    }
    (p, o)
}

fn check_outgoing_through_local(optimised: bool) {
    let (p, o) = outgoing_through_local(optimised);
    let mut t = tracker();
    let events = run(&mut t, &p.messages);
    let map = labels(&p, &[("O", o)]);
    assert_eq!(
        summary(&events, &map),
        [
            "leg_dialing O O Dial",
            "leg_answered O O Dial",
            "conversation_ended O O HungUp { cause: Some(16) }",
            "call_ended O Hangup result=200",
        ]
    );
    let full = ended(&events, &p.uid(o));
    assert_eq!(full.channel.direction, Direction::Outgoing);
    assert_eq!(full.channel.from.original, "101");
    assert_eq!(full.channel.to.original, CLIENT_LOCAL);
    let talk = events.iter().find_map(|e| match e {
        CallEvent::ConversationEnded { talk_seconds, .. } => Some(*talk_seconds),
        _ => None,
    });
    assert_eq!(talk, Some(5));
    assert_eq!(t.live_calls(), 0);
}

#[test]
fn outgoing_through_a_local_route_is_the_employees_call() {
    check_outgoing_through_local(false);
}

#[test]
fn outgoing_through_an_optimised_local_route_is_the_employees_call() {
    check_outgoing_through_local(true);
}

/// AMI `Originate` of `Local/101@from-internal` into `from-internal,<target>` (click-to-call): the Local pair's
/// `;1` is the call's first channel, its `;2` rings 101 first (the call-back to the employee), and once 101
/// answers the `;1` dials the target. Returns (script, ;1, 101's leg, target's leg).
fn originate(target: &str) -> (Pbx, C, C, C) {
    let mut p = Pbx::new();
    let one = p.new_channel(
        "Local/101@from-internal-0000000a;1",
        0,
        target,
        "from-internal",
        "101",
        None,
    );
    let two = p.new_channel(
        "Local/101@from-internal-0000000a;2",
        4,
        target,
        "from-internal",
        "101",
        Some(one),
    );
    // Originate reports itself as a dial of the `;1` with no dialling channel.
    p.dial_begin(None, one, "Local/101@from-internal");
    p.newexten(two, "Dial", "PJSIP/101,15");
    let a = p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(two));
    p.ring(two, a, "101");
    p.set_state(one, 5);
    p.advance_ms(2000);
    p.set_state(a, 6);
    p.dial_end(Some(two), a, "ANSWER");
    p.set_state(two, 6);
    p.bridge("b-1", two, a);
    p.set_state(one, 6);
    p.dial_end(None, one, "ANSWER");
    let far = if target.len() > 4 {
        p.newexten(one, "Dial", &format!("PJSIP/{target}@carrier,30"));
        let c = p.new_channel("PJSIP/carrier", 0, "101", "from-internal", "s", Some(one));
        p.dial_begin(Some(one), c, &format!("{target}@carrier"));
        p.set_state(c, 5);
        p.dial_state(one, c, "RINGING");
        c
    } else {
        p.newexten(one, "Dial", &format!("PJSIP/{target},15"));
        let b = p.new_channel(&format!("PJSIP/{target}"), 0, target, "from-internal", "s", Some(one));
        p.ring(one, b, target);
        b
    };
    p.advance_ms(3000);
    p.set_state(far, 6);
    p.dial_end(Some(one), far, "ANSWER");
    p.bridge("b-2", one, far);
    p.advance_ms(5000);
    p.hangup_request(far, 16);
    p.unbridge("b-2", one, far);
    p.hangup(far, 16, "Normal Clearing");
    p.hangup(one, 16, "Normal Clearing");
    p.unbridge("b-1", two, a);
    p.hangup(two, 16, "Normal Clearing");
    p.hangup(a, 16, "Normal Clearing");
    (p, one, a, far)
}

#[test]
fn originate_between_two_employees_is_a_local_call_from_the_first() {
    let (p, one, a, b) = originate("102");
    let mut t = tracker();
    let events = run(&mut t, &p.messages);
    let map = labels(&p, &[("O", one), ("L101", a), ("L102", b)]);
    // 101's phone rang only to place the call: it is the caller, not a rung conversation.
    assert_eq!(
        summary(&events, &map),
        [
            "leg_ringing O L102 Dial",
            "leg_answered O L102 Dial",
            "conversation_ended O L102 HungUp { cause: Some(16) }",
            "call_ended O Hangup result=200",
        ]
    );
    let full = ended(&events, &p.uid(one));
    assert_eq!(full.channel.direction, Direction::Local);
    assert_eq!(full.channel.from.original, "101");
    assert_eq!(full.channel.to.original, "102");
    assert_eq!(t.live_calls(), 0);
}

#[test]
fn originate_to_a_client_is_the_employees_outgoing_call() {
    let (p, one, a, _) = originate(CLIENT_LOCAL);
    let mut t = tracker();
    let events = run(&mut t, &p.messages);
    let map = labels(&p, &[("O", one), ("L101", a)]);
    assert_eq!(
        summary(&events, &map),
        [
            "leg_dialing O L101 Dial",
            "leg_answered O L101 Dial",
            "conversation_ended O L101 HungUp { cause: Some(16) }",
            "call_ended O Hangup result=200",
        ]
    );
    let full = ended(&events, &p.uid(one));
    assert_eq!(full.channel.direction, Direction::Outgoing);
    assert_eq!(full.channel.from.original, "101");
    assert_eq!(full.channel.to.original, CLIENT_LOCAL);
}

const MOBILE: &str = "89001112233";

/// FreePBX-style follow-me: the DID rings 101 and, through `Local/<mobile>@from-internal/n`, the employee's mobile
/// via the carrier. `mobile_answers`: the mobile answers after 4 s (101 stops), else 101 answers.
fn follow_me(ring_desk: bool) -> (Pbx, C, Option<C>, C) {
    let mut p = Pbx::new();
    let t = p.new_channel(
        "PJSIP/carrier",
        4,
        super::common::CLIENT,
        "from-trunk",
        super::common::DID,
        None,
    );
    let desk = ring_desk.then(|| p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(t)));
    let (l1, l2) = p.new_local_pair(MOBILE, "from-internal", t);
    if let Some(desk) = desk {
        p.ring(t, desk, "101");
    }
    p.dial_begin(Some(t), l1, "Local/89001112233@from-internal/n");
    p.newexten(l2, "Dial", "PJSIP/89001112233@carrier,30");
    let m = p.new_channel(
        "PJSIP/carrier",
        0,
        super::common::CLIENT,
        "from-internal",
        "s",
        Some(l2),
    );
    p.dial_begin(Some(l2), m, "89001112233@carrier");
    p.set_state(m, 5);
    p.dial_state(l2, m, "RINGING");
    p.set_state(l1, 5);
    p.dial_state(t, l1, "RINGING");
    p.advance_ms(4000);
    p.set_state(m, 6);
    p.dial_end(Some(l2), m, "ANSWER");
    p.set_state(l2, 6);
    p.bridge("b-2", l2, m);
    p.set_state(l1, 6);
    p.dial_end(Some(t), l1, "ANSWER");
    if let Some(desk) = desk {
        p.dial_end(Some(t), desk, "CANCEL");
        p.hangup(desk, 26, "Answered elsewhere");
    }
    p.set_state(t, 6);
    p.bridge("b-1", t, l1);
    p.advance_ms(7000);
    p.hangup_request(t, 16);
    p.unbridge("b-1", t, l1);
    p.hangup(t, 16, "Normal Clearing");
    p.hangup(l1, 16, "Normal Clearing");
    p.unbridge("b-2", l2, m);
    p.hangup(l2, 16, "Normal Clearing");
    p.hangup(m, 16, "Normal Clearing");
    (p, t, desk, m)
}

#[test]
fn an_incoming_call_answered_on_a_mobile_through_the_trunk_is_answered() {
    for ring_desk in [true, false] {
        let (p, t, desk, m) = follow_me(ring_desk);
        let mut tr = tracker();
        let events = run(&mut tr, &p.messages);
        let mut handles = vec![("T", t), ("M", m)];
        handles.extend(desk.map(|d| ("L101", d)));
        let map = labels(&p, &handles);
        let expected: Vec<&str> = if ring_desk {
            vec![
                "leg_ringing T L101 Dial",
                "leg_ringing T M Forward",
                "leg_answered T M Forward",
                "leg_stopped_ringing T L101 AnsweredElsewhere",
                "conversation_ended T M HungUp { cause: Some(16) }",
                "call_ended T Hangup result=200",
            ]
        } else {
            vec![
                "leg_ringing T M Forward",
                "leg_answered T M Forward",
                "conversation_ended T M HungUp { cause: Some(16) }",
                "call_ended T Hangup result=200",
            ]
        };
        assert_eq!(summary(&events, &map), expected, "desk rung: {ring_desk}");
        let full = ended(&events, &p.uid(t));
        assert_eq!(full.channel.direction, Direction::Incoming);
        assert!(!full.is_ivr, "an answered call is no IVR call");
        assert_eq!(full.result, 200);
        let conv = &full.conversations[&p.uid(m)];
        assert_eq!(conv.channel.to.original, MOBILE, "the number the call was forwarded to");
        assert!(conv.channel.was_answered);
        let forwarded = events.iter().find_map(|e| match e {
            CallEvent::LegAnswered(l) => Some(l.number.clone()),
            _ => None,
        });
        assert_eq!(forwarded.as_deref(), Some(MOBILE));
    }
}

/// Click-to-call that rings the client first: `Originate` of `Local/<client>@from-internal` into
/// `from-internal,101` with the company's number as caller ID. The client answers, then 101 is rung: still
/// 101's outgoing call to the client.
#[test]
fn originate_that_rings_the_client_first_is_the_employees_outgoing_call() {
    let mut p = Pbx::new();
    let one = p.new_channel(
        "Local/89001234567@from-internal-0000000b;1",
        0,
        super::common::DID,
        "from-internal",
        CLIENT_LOCAL,
        None,
    );
    let two = p.new_channel(
        "Local/89001234567@from-internal-0000000b;2",
        4,
        super::common::DID,
        "from-internal",
        CLIENT_LOCAL,
        Some(one),
    );
    p.dial_begin(None, one, "Local/89001234567@from-internal");
    p.newexten(two, "Dial", "PJSIP/89001234567@carrier,30");
    let c = p.new_channel("PJSIP/carrier", 0, "101", "from-internal", "s", Some(two));
    p.dial_begin(Some(two), c, "89001234567@carrier");
    p.set_state(c, 5);
    p.dial_state(two, c, "RINGING");
    p.advance_ms(3000);
    p.set_state(c, 6);
    p.dial_end(Some(two), c, "ANSWER");
    p.set_state(two, 6);
    p.bridge("b-1", two, c);
    p.set_state(one, 6);
    p.dial_end(None, one, "ANSWER");
    p.newexten(one, "Dial", "PJSIP/101,15");
    let a = p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(one));
    p.ring(one, a, "101");
    p.advance_ms(2000);
    p.set_state(a, 6);
    p.dial_end(Some(one), a, "ANSWER");
    p.bridge("b-2", one, a);
    p.advance_ms(5000);
    p.hangup_request(c, 16);
    p.unbridge("b-1", two, c);
    p.hangup(c, 16, "Normal Clearing");
    p.hangup(two, 16, "Normal Clearing");
    p.unbridge("b-2", one, a);
    p.hangup(one, 16, "Normal Clearing");
    p.hangup(a, 16, "Normal Clearing");
    let mut t = tracker();
    let events = run(&mut t, &p.messages);
    let map = labels(&p, &[("O", one), ("L101", a)]);
    assert_eq!(
        summary(&events, &map),
        [
            "leg_ringing O L101 Dial",
            "leg_answered O L101 Dial",
            "conversation_ended O L101 HungUp { cause: Some(16) }",
            "call_ended O Hangup result=200",
        ]
    );
    let full = ended(&events, &p.uid(one));
    assert_eq!(full.channel.direction, Direction::Outgoing);
    assert_eq!(full.channel.from.original, "101", "the employee placed it");
    assert_eq!(full.channel.to.original, CLIENT_LOCAL);
}

/// ringlink restarted while a click-to-call talks: the `CoreShowChannels` list has no dial history, but the
/// originate's Local channel names the phone it placed the call for.
#[test]
fn resync_finds_who_placed_an_originate_based_call() {
    for (target, expected, direction, to) in [
        ("102", ["leg_answered O L102 Resync"], Direction::Local, "102"),
        (
            CLIENT_LOCAL,
            ["leg_answered O L101 Resync"],
            Direction::Outgoing,
            CLIENT_LOCAL,
        ),
    ] {
        let (p, one, a, far) = originate(target);
        // Mid-talk: every channel up and bridged; the list as Asterisk gives it.
        let mut items = Vec::new();
        for c in [one, a, far] {
            let mut item = p.show_channel(c, "b-1", 5);
            item.set("ChannelState", "6");
            if c == one {
                item.set("Exten", target);
            }
            items.push(item);
        }
        let mut t = tracker();
        let events = t.resync(&items, p.timestamp());
        let map = labels(
            &p,
            &[
                ("O", one),
                ("L101", a),
                (if target == "102" { "L102" } else { "C" }, far),
            ],
        );
        assert_eq!(summary(&events, &map), expected, "{target}");
        let full = t.call_full(&p.uid(one)).expect("live");
        assert_eq!(full.channel.direction, direction, "{target}");
        assert_eq!(full.channel.from.original, "101", "{target}");
        assert_eq!(full.channel.to.original, to, "{target}");
    }
}
