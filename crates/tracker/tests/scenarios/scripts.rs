//! The scenario scripts, each modelled on what Asterisk 22 emits for it (event order as app_dial, app_queue,
//! the bridging core, res_parking and call pickup publish them).

use std::collections::HashMap;

use super::common::{Pbx, C, CLIENT, DID};

pub struct Script {
    pub pbx: Pbx,
    handles: Vec<(&'static str, C)>,
    /// uniqueid → label, for readable summaries.
    pub labels: HashMap<String, &'static str>,
}

impl Script {
    fn new(pbx: Pbx, handles: &[(&'static str, C)]) -> Self {
        let labels = handles.iter().map(|(l, c)| (pbx.uid(*c), *l)).collect();
        Self {
            pbx,
            handles: handles.to_vec(),
            labels,
        }
    }

    pub fn c(&self, label: &str) -> C {
        self.handles
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no channel {label}"))
    }

    pub fn uid(&self, label: &str) -> String {
        self.pbx.uid(self.c(label))
    }
}

/// The carrier's inbound channel: PJSIP rings it in (state Ring), context of the trunk endpoint, Exten = DID.
fn inbound(p: &mut Pbx) -> C {
    let t = p.new_channel("PJSIP/carrier", 4, CLIENT, "from-trunk", DID, None);
    p.newexten(t, "Set", "__FROM_DID=73432723033");
    t
}

fn record(p: &mut Pbx, c: C) {
    p.newexten(c, "MixMonitor", "/var/spool/asterisk/monitor/in-1700000000.1.wav");
    p.var_set(
        c,
        "MIXMONITOR_FILENAME",
        "/var/spool/asterisk/monitor/in-1700000000.1.wav",
    );
}

/// `from-trunk` → Dial(PJSIP/101,20): 101 rings and answers after 3 s.
fn ring_and_answer_101(p: &mut Pbx, t: C) -> C {
    let l1 = p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(t));
    p.ring(t, l1, "101");
    p.noise(t);
    p.advance_ms(3000);
    p.set_state(l1, 6);
    p.dial_end(Some(t), l1, "ANSWER");
    p.set_state(t, 6);
    p.bridge("b-1", t, l1);
    l1
}

pub fn s1_incoming_answered() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    record(&mut p, t);
    let l1 = ring_and_answer_101(&mut p, t);
    p.advance_ms(5000);
    // The client hangs up: the carrier's BYE.
    p.hangup_request(t, 16);
    p.unbridge("b-1", t, l1);
    p.hangup(t, 16, "Normal Clearing");
    p.soft_hangup_request(l1, 16);
    p.hangup(l1, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L1", l1)])
}

pub fn s2_incoming_no_answer() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    let l1 = p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(t));
    p.ring(t, l1, "101");
    p.advance_ms(20_000);
    p.dial_end(Some(t), l1, "NOANSWER");
    p.hangup(l1, 0, "Unknown");
    p.newexten(t, "Hangup", "");
    p.hangup(t, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L1", l1)])
}

fn queue_member(p: &mut Pbx, t: C, ext: &str) -> C {
    let leg = p.new_channel(&format!("PJSIP/{ext}"), 0, ext, "from-queue", "s", Some(t));
    p.agent_called(t, leg, "support");
    p.ring(t, leg, ext);
    leg
}

pub fn s3_queue_ringall() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    p.set_state(t, 6);
    p.queue_join(t, "support");
    let l101 = queue_member(&mut p, t, "101");
    let l102 = queue_member(&mut p, t, "102");
    let l103 = queue_member(&mut p, t, "103");
    p.advance_ms(4000);
    p.set_state(l102, 6);
    p.dial_end(Some(t), l102, "ANSWER");
    p.dial_end(Some(t), l101, "CANCEL");
    p.dial_end(Some(t), l103, "CANCEL");
    p.hangup(l101, 26, "Answered elsewhere");
    p.hangup(l103, 26, "Answered elsewhere");
    p.queue_leave(t, "support");
    p.agent_connect(t, l102, "support");
    p.bridge("b-1", t, l102);
    p.advance_ms(5000);
    p.hangup_request(t, 16);
    p.unbridge("b-1", t, l102);
    p.agent_complete(t, l102, "support", "caller");
    p.hangup(t, 16, "Normal Clearing");
    p.hangup(l102, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L101", l101), ("L102", l102), ("L103", l103)])
}

pub fn s4_queue_linear() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    p.set_state(t, 6);
    p.queue_join(t, "support");
    let mut legs = Vec::new();
    for ext in ["101", "102"] {
        let leg = queue_member(&mut p, t, ext);
        p.advance_ms(15_000);
        p.agent_ring_no_answer(t, leg, "support", 15_000);
        p.dial_end(Some(t), leg, "CANCEL");
        p.hangup(leg, 16, "Normal Clearing");
        legs.push(leg);
    }
    let l103 = queue_member(&mut p, t, "103");
    p.advance_ms(2000);
    p.set_state(l103, 6);
    p.dial_end(Some(t), l103, "ANSWER");
    p.queue_leave(t, "support");
    p.agent_connect(t, l103, "support");
    p.bridge("b-1", t, l103);
    p.advance_ms(5000);
    p.hangup_request(l103, 16);
    p.unbridge("b-1", t, l103);
    p.agent_complete(t, l103, "support", "agent");
    p.hangup(l103, 16, "Normal Clearing");
    p.hangup(t, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L101", legs[0]), ("L102", legs[1]), ("L103", l103)])
}

pub fn s5_queue_abandoned() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    p.set_state(t, 6);
    p.queue_join(t, "support");
    let l101 = queue_member(&mut p, t, "101");
    let l102 = queue_member(&mut p, t, "102");
    p.advance_ms(8000);
    p.hangup_request(t, 16);
    p.dial_end(Some(t), l101, "CANCEL");
    p.dial_end(Some(t), l102, "CANCEL");
    p.hangup(l101, 16, "Normal Clearing");
    p.hangup(l102, 16, "Normal Clearing");
    p.queue_abandon(t, "support");
    p.queue_leave(t, "support");
    p.hangup(t, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L101", l101), ("L102", l102)])
}

pub fn s6_ivr() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    p.newexten(t, "Answer", "");
    p.set_state(t, 6);
    p.newexten(t, "Background", "demo-congrats");
    p.advance_ms(7000);
    p.hangup_request(t, 16);
    p.hangup(t, 16, "Normal Clearing");
    Script::new(p, &[("T", t)])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answer,
    Busy,
    Decline,
    DeclineWithTechCause,
    NoAnswer,
    CallerCancels,
    Congestion,
}

/// 101 dials 89001234567 through the carrier (`from-internal` `_8X.` → Dial(PJSIP/${EXTEN}@carrier,30)).
pub fn s7_outgoing(outcome: Outcome) -> Script {
    let mut p = Pbx::new();
    let o = p.new_channel("PJSIP/101", 4, "101", "from-internal", "89001234567", None);
    p.newexten(o, "Dial", "PJSIP/89001234567@carrier,30");
    let c = p.new_channel("PJSIP/carrier", 0, "101", "from-internal", "s", Some(o));
    p.dial_begin(Some(o), c, "89001234567@carrier");
    p.set_state(c, 5);
    p.dial_state(o, c, "RINGING");
    match outcome {
        Outcome::Answer => {
            p.advance_ms(4000);
            p.set_state(c, 6);
            p.dial_end(Some(o), c, "ANSWER");
            p.set_state(o, 6);
            p.bridge("b-1", o, c);
            p.advance_ms(5000);
            p.hangup_request(o, 16);
            p.unbridge("b-1", o, c);
            p.hangup(o, 16, "Normal Clearing");
            p.hangup(c, 16, "Normal Clearing");
        }
        Outcome::Busy => {
            p.hangup_request(c, 17);
            p.dial_end(Some(o), c, "BUSY");
            p.hangup(c, 17, "User busy");
            p.hangup(o, 17, "User busy");
        }
        Outcome::Decline | Outcome::DeclineWithTechCause => {
            p.advance_ms(2000);
            p.hangup_request(c, 21);
            // PJSIP's failed leg reaches app_dial as NOANSWER whatever the SIP code was.
            p.dial_end(Some(o), c, "NOANSWER");
            let tech = (outcome == Outcome::DeclineWithTechCause).then_some(603);
            p.hangup_with(c, 21, "Call Rejected", tech);
            p.hangup(o, 16, "Normal Clearing");
        }
        Outcome::NoAnswer => {
            p.advance_ms(30_000);
            p.dial_end(Some(o), c, "NOANSWER");
            p.hangup(c, 0, "Unknown");
            p.hangup(o, 16, "Normal Clearing");
        }
        Outcome::CallerCancels => {
            p.advance_ms(6000);
            p.hangup_request(o, 16);
            p.dial_end(Some(o), c, "CANCEL");
            p.hangup(c, 127, "Interworking, unspecified");
            p.hangup(o, 127, "Interworking, unspecified");
        }
        Outcome::Congestion => {
            p.hangup_request(c, 34);
            p.dial_end(Some(o), c, "CONGESTION");
            p.hangup(c, 34, "Circuit/channel congestion");
            p.hangup(o, 34, "Circuit/channel congestion");
        }
    }
    Script::new(p, &[("O", o), ("C", c)])
}

pub fn s9_local() -> Script {
    let mut p = Pbx::new();
    let o = p.new_channel("PJSIP/101", 4, "101", "from-internal", "102", None);
    let l = p.new_channel("PJSIP/102", 0, "101", "from-internal", "s", Some(o));
    p.ring(o, l, "102");
    p.advance_ms(2000);
    p.set_state(l, 6);
    p.dial_end(Some(o), l, "ANSWER");
    p.set_state(o, 6);
    p.bridge("b-1", o, l);
    p.advance_ms(5000);
    p.hangup_request(l, 16);
    p.unbridge("b-1", o, l);
    p.hangup(l, 16, "Normal Clearing");
    p.hangup(o, 16, "Normal Clearing");
    Script::new(p, &[("O", o), ("L102", l)])
}

pub fn s10_blind_transfer() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    let l1 = ring_and_answer_101(&mut p, t);
    p.advance_ms(5000);
    // 101 sends REFER to 102: the client leaves the bridge and runs 102@from-internal.
    p.blind_transfer(l1, t, "102", "from-internal");
    p.unbridge("b-1", t, l1);
    p.hangup(l1, 16, "Normal Clearing");
    let l2 = p.new_channel("PJSIP/102", 0, "102", "from-internal", "s", Some(t));
    p.ring(t, l2, "102");
    p.advance_ms(3000);
    p.set_state(l2, 6);
    p.dial_end(Some(t), l2, "ANSWER");
    p.bridge("b-2", t, l2);
    p.advance_ms(7000);
    p.hangup_request(t, 16);
    p.unbridge("b-2", t, l2);
    p.hangup(t, 16, "Normal Clearing");
    p.hangup(l2, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L1", l1), ("L2", l2)])
}

/// 101 answers, holds the client, calls 102 from a second line (a local call with its own linkedid), then
/// completes the transfer: 102 is moved into the client's bridge and takes the client's (older) linkedid.
/// `cel_first`: the CEL BRIDGE_ENTER showing the new linkedid arrives before the AMI BridgeEnter (whose
/// snapshot still shows the old one); otherwise after it (the order is not fixed between Stasis topics).
pub fn s11_attended_transfer(cel_first: bool) -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    let l1 = ring_and_answer_101(&mut p, t);
    p.advance_ms(3000);
    p.hold(l1, true);
    p.advance_ms(1000);
    let consult = p.new_channel("PJSIP/101", 4, "101", "from-internal", "102", None);
    let l102 = p.new_channel("PJSIP/102", 0, "101", "from-internal", "s", Some(consult));
    p.ring(consult, l102, "102");
    p.advance_ms(2000);
    p.set_state(l102, 6);
    p.dial_end(Some(consult), l102, "ANSWER");
    p.set_state(consult, 6);
    p.bridge("b-2", consult, l102);
    p.advance_ms(4000);
    p.attended_transfer(l1, consult, t, l102);
    p.bridge_leave("b-1", l1, 1);
    p.bridge_leave("b-2", consult, 1);
    p.bridge_leave("b-2", l102, 0);
    // The bridge snapshot still shows the consultation's linkedid; the CEL event shows the client's.
    let client_linkedid = p.linkedid(t);
    let cel_extra = r#"{"bridge_id":"b-1","bridge_technology":"simple_bridge"}"#;
    p.emit_cel = false;
    if cel_first {
        p.set_linkedid(l102, &client_linkedid);
        p.cel(l102, "BRIDGE_ENTER", cel_extra);
        let consult_linkedid = p.uid(consult);
        p.set_linkedid(l102, &consult_linkedid);
        p.bridge_enter("b-1", l102, 2);
        p.set_linkedid(l102, &client_linkedid);
    } else {
        p.bridge_enter("b-1", l102, 2);
        p.set_linkedid(l102, &client_linkedid);
        p.cel(l102, "BRIDGE_ENTER", cel_extra);
    }
    p.emit_cel = true;
    p.hangup(l1, 16, "Normal Clearing");
    p.hangup(consult, 16, "Normal Clearing");
    p.advance_ms(6000);
    p.hangup_request(t, 16);
    p.unbridge("b-1", t, l102);
    p.hangup(t, 16, "Normal Clearing");
    p.hangup(l102, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L1", l1), ("C", consult), ("L102", l102)])
}

/// 101 rings; 102 dials *8 (group pickup). The picker's channel takes the ringing leg's place (masquerade),
/// the ringing leg's identity hangs up as a zombie, and the picker enters the client's bridge.
pub fn s12_pickup() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    let l101 = p.new_channel("PJSIP/101", 0, "101", "from-internal", "s", Some(t));
    p.ring(t, l101, "101");
    p.advance_ms(4000);
    let picker = p.new_channel("PJSIP/102", 4, "102", "from-internal", "*8", None);
    p.newexten(picker, "Pickup", "");
    p.set_state(picker, 6);
    p.pickup(picker, l101);
    p.dial_end(Some(t), picker, "ANSWER");
    let zombie = format!("{}<ZOMBIE>", p.chan(l101).name);
    p.rename(l101, &zombie);
    p.hangup(l101, 26, "Answered elsewhere");
    p.set_state(t, 6);
    p.bridge_enter("b-1", t, 1);
    let client_linkedid = p.linkedid(t);
    p.set_linkedid(picker, &client_linkedid);
    p.bridge_enter("b-1", picker, 2);
    p.advance_ms(5000);
    p.hangup_request(t, 16);
    p.unbridge("b-1", t, picker);
    p.hangup(t, 16, "Normal Clearing");
    p.hangup(picker, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L101", l101), ("P102", picker)])
}

/// 101 answers, blind-transfers the client to 700 (parking lot puts it on 701), hangs up; 103 dials 701.
pub fn s13_park() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    let l1 = ring_and_answer_101(&mut p, t);
    p.advance_ms(4000);
    p.bridge_leave("b-1", t, 1);
    p.parked(t, "PJSIP/101", "701");
    p.blind_transfer(l1, t, "700", "from-internal");
    p.bridge_leave("b-1", l1, 0);
    p.hangup(l1, 16, "Normal Clearing");
    p.advance_ms(7000);
    let r = p.new_channel("PJSIP/103", 4, "103", "from-internal", "701", None);
    p.newexten(r, "ParkedCall", "default,701");
    p.set_state(r, 6);
    p.unparked(t, r, "701");
    p.bridge_enter("b-2", t, 1);
    let client_linkedid = p.linkedid(t);
    p.set_linkedid(r, &client_linkedid);
    p.bridge_enter("b-2", r, 2);
    p.advance_ms(5000);
    p.hangup_request(r, 16);
    p.unbridge("b-2", t, r);
    p.hangup(r, 16, "Normal Clearing");
    p.hangup(t, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("L1", l1), ("R103", r)])
}

/// A FreePBX queue member `Local/<ext>@from-queue/n`: the queue rings `;1`, `;2` runs from-queue and dials the
/// phone.
fn local_member(p: &mut Pbx, t: C, ext: &str) -> (C, C, C) {
    let (one, two) = p.new_local_pair(ext, "from-queue", t);
    p.agent_called(t, one, "support");
    p.dial_begin(Some(t), one, &format!("{ext}@from-queue/n"));
    p.newexten(two, "Dial", &format!("PJSIP/{ext},,"));
    let phone = p.new_channel(&format!("PJSIP/{ext}"), 0, ext, "from-queue", "s", Some(two));
    p.ring(two, phone, ext);
    p.set_state(one, 5);
    (one, two, phone)
}

/// S19 ringall; `optimise` = members without `/n`: once bridged, the Local pair optimises itself away.
pub fn s19_local_queue(optimise: bool) -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    p.set_state(t, 6);
    p.queue_join(t, "support");
    let (one1, two1, p101) = local_member(&mut p, t, "101");
    let (one2, two2, p102) = local_member(&mut p, t, "102");
    p.advance_ms(3000);
    p.set_state(p102, 6);
    p.dial_end(Some(two2), p102, "ANSWER");
    p.set_state(two2, 6);
    p.bridge("b-2", two2, p102);
    p.set_state(one2, 6);
    p.dial_end(Some(t), one2, "ANSWER");
    p.dial_end(Some(t), one1, "CANCEL");
    p.hangup(one1, 26, "Answered elsewhere");
    p.soft_hangup_request(two1, 26);
    p.dial_end(Some(two1), p101, "CANCEL");
    p.hangup(p101, 26, "Answered elsewhere");
    p.hangup(two1, 26, "Answered elsewhere");
    p.queue_leave(t, "support");
    p.agent_connect(t, one2, "support");
    p.bridge("b-1", t, one2);
    if optimise {
        p.local_optimization(one2, two2);
        p.bridge_leave("b-2", p102, 1);
        p.bridge_leave("b-1", one2, 1);
        p.bridge_enter("b-1", p102, 2);
        p.bridge_leave("b-2", two2, 0);
        p.hangup(one2, 16, "Normal Clearing");
        p.hangup(two2, 16, "Normal Clearing");
    }
    p.advance_ms(5000);
    p.hangup_request(t, 16);
    p.bridge_leave("b-1", t, 1);
    p.hangup(t, 16, "Normal Clearing");
    if !optimise {
        p.hangup(one2, 16, "Normal Clearing");
        p.hangup(two2, 16, "Normal Clearing");
    }
    p.hangup(p102, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("P101", p101), ("P102", p102)])
}

/// S19 one by one: the queue gives up on the first Local member after its timeout.
pub fn s19_local_queue_linear() -> Script {
    let mut p = Pbx::new();
    let t = inbound(&mut p);
    p.set_state(t, 6);
    p.queue_join(t, "support");
    let (one1, two1, p101) = local_member(&mut p, t, "101");
    p.advance_ms(15_000);
    p.agent_ring_no_answer(t, one1, "support", 15_000);
    p.dial_end(Some(t), one1, "CANCEL");
    p.hangup(one1, 16, "Normal Clearing");
    p.soft_hangup_request(two1, 16);
    p.dial_end(Some(two1), p101, "CANCEL");
    p.hangup(p101, 16, "Normal Clearing");
    p.hangup(two1, 16, "Normal Clearing");
    let (one2, two2, p102) = local_member(&mut p, t, "102");
    p.advance_ms(2000);
    p.set_state(p102, 6);
    p.dial_end(Some(two2), p102, "ANSWER");
    p.bridge("b-2", two2, p102);
    p.set_state(one2, 6);
    p.dial_end(Some(t), one2, "ANSWER");
    p.agent_connect(t, one2, "support");
    p.bridge("b-1", t, one2);
    p.advance_ms(5000);
    p.hangup_request(t, 16);
    p.bridge_leave("b-1", t, 1);
    p.hangup(t, 16, "Normal Clearing");
    p.hangup(one2, 16, "Normal Clearing");
    p.hangup(two2, 16, "Normal Clearing");
    p.hangup(p102, 16, "Normal Clearing");
    Script::new(p, &[("T", t), ("P101", p101), ("P102", p102)])
}

/// How many scripts [`by_index`] knows.
pub const COUNT: usize = 22;

/// Script number `i` (0..COUNT): every scenario and outcome once.
pub fn by_index(i: usize) -> Script {
    use Outcome::*;
    match i % COUNT {
        0 => s1_incoming_answered(),
        1 => s2_incoming_no_answer(),
        2 => s3_queue_ringall(),
        3 => s4_queue_linear(),
        4 => s5_queue_abandoned(),
        5 => s6_ivr(),
        6 => s9_local(),
        7 => s10_blind_transfer(),
        8 => s11_attended_transfer(true),
        9 => s11_attended_transfer(false),
        10 => s12_pickup(),
        11 => s13_park(),
        12 => s19_local_queue(false),
        13 => s19_local_queue(true),
        14 => s19_local_queue_linear(),
        15 => s7_outgoing(Answer),
        16 => s7_outgoing(Busy),
        17 => s7_outgoing(Decline),
        18 => s7_outgoing(DeclineWithTechCause),
        19 => s7_outgoing(NoAnswer),
        20 => s7_outgoing(CallerCancels),
        _ => s7_outgoing(Congestion),
    }
}

/// Every script, for property tests and benchmarks.
pub fn all() -> Vec<Script> {
    (0..COUNT).map(by_index).collect()
}
