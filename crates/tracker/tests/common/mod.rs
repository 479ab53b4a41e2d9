//! A tiny PBX script: writes AMI event sequences shaped like Asterisk 22's own output (channel blocks with
//! prefixes, DialBegin caller block + Dest block, Timestamp headers, CEL events), for tests and benches.
#![allow(dead_code)]

use std::collections::HashMap;

use ami::Message;
use tracker::{CallEvent, Timestamp, Tracker, TrackerConfig};

pub const CLIENT: &str = "+79001234567";
pub const DID: &str = "73432723033";
pub const T0: i64 = 1_700_000_000;

pub fn config() -> TrackerConfig {
    toml::from_str(
        r#"
        utc_offset = "+05:00"
        [[trunks]]
        endpoint = "carrier"
        number = "73432723033"
        name = "Main line"
        [numbers]
        prefixes = ["+7495", "8495", "+7", "7", "8"]
        internal = { max_length = 4 }
        [[numbers.replace]]
        pattern = '^\+7(\d{10})$'
        replacement = "8$1"
        "#,
    )
    .expect("test config parses")
}

pub fn tracker() -> Tracker {
    Tracker::new(config()).expect("valid config")
}

#[derive(Debug, Clone)]
pub struct Chan {
    pub name: String,
    pub uid: String,
    pub linkedid: String,
    pub state: u8,
    pub cid_num: String,
    pub cid_name: String,
    pub conn_num: String,
    pub context: String,
    pub exten: String,
}

fn state_desc(state: u8) -> &'static str {
    match state {
        0 => "Down",
        4 => "Ring",
        5 => "Ringing",
        6 => "Up",
        7 => "Busy",
        _ => "Unknown",
    }
}

/// Handle to a channel of the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct C(usize);

pub struct Pbx {
    /// Current time in microseconds.
    pub now: i64,
    counter: u64,
    seq: u32,
    chans: Vec<Chan>,
    pub messages: Vec<Message>,
    pub emit_cel: bool,
}

thread_local! {
    static ID_BASE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Makes the next scripts number their uniqueids and channels from `base` (several scripts in one stream).
pub fn set_id_base(base: u64) {
    ID_BASE.with(|b| b.set(base));
}

impl Default for Pbx {
    fn default() -> Self {
        Self::new()
    }
}

impl Pbx {
    pub fn new() -> Self {
        Self::starting_at(T0, ID_BASE.with(|b| b.get()))
    }

    /// A script whose uniqueids start at `<epoch>.<counter>`, so several scripts can share one tracker.
    pub fn starting_at(epoch: i64, counter: u64) -> Self {
        Self {
            now: epoch * 1_000_000,
            counter,
            // Channel names stay unique across scripts sharing a tracker, as on a real PBX.
            seq: u32::try_from(counter).unwrap_or(0),
            chans: Vec::new(),
            messages: Vec::new(),
            emit_cel: true,
        }
    }

    pub fn advance_ms(&mut self, ms: i64) {
        self.now += ms * 1000;
    }

    pub fn chan(&self, c: C) -> &Chan {
        &self.chans[c.0]
    }

    pub fn uid(&self, c: C) -> String {
        self.chans[c.0].uid.clone()
    }

    fn event(&mut self, name: &str) -> Message {
        self.now += 250; // events are a fraction of a millisecond apart
        Message::new()
            .with("Event", name)
            .with("Privilege", "call,all")
            .with("Timestamp", Timestamp::from_micros(self.now).to_string())
    }

    fn block(&self, mut m: Message, prefix: &str, c: C) -> Message {
        let ch = &self.chans[c.0];
        let k = |s: &str| format!("{prefix}{s}");
        m.push(&k("Channel"), ch.name.clone());
        m.push(&k("ChannelState"), ch.state.to_string());
        m.push(&k("ChannelStateDesc"), state_desc(ch.state));
        m.push(&k("CallerIDNum"), ch.cid_num.clone());
        m.push(&k("CallerIDName"), ch.cid_name.clone());
        m.push(&k("ConnectedLineNum"), ch.conn_num.clone());
        m.push(&k("ConnectedLineName"), "<unknown>");
        m.push(&k("Language"), "en");
        m.push(&k("AccountCode"), "");
        m.push(&k("Context"), ch.context.clone());
        m.push(&k("Exten"), ch.exten.clone());
        m.push(&k("Priority"), "1");
        m.push(&k("Uniqueid"), ch.uid.clone());
        m.push(&k("Linkedid"), ch.linkedid.clone());
        m
    }

    fn bridge_block(mut m: Message, bridge: &str, members: usize) -> Message {
        m.push("BridgeUniqueid", bridge);
        m.push("BridgeType", "basic");
        m.push("BridgeTechnology", "simple_bridge");
        m.push("BridgeCreator", "<unknown>");
        m.push("BridgeName", "<unknown>");
        m.push("BridgeNumChannels", members.to_string());
        m.push("BridgeVideoSourceMode", "none");
        m
    }

    fn emit(&mut self, m: Message) {
        self.messages.push(m);
    }

    /// A CEL event for `c`, unless `emit_cel` is off (then only an explicit [`Pbx::cel`] writes one).
    fn auto_cel(&mut self, c: C, event_name: &str, extra: &str) {
        if self.emit_cel {
            self.cel(c, event_name, extra);
        }
    }

    pub fn cel(&mut self, c: C, event_name: &str, extra: &str) {
        let ch = self.chans[c.0].clone();
        let m = self
            .event("CEL")
            .with("EventName", event_name)
            .with("AccountCode", "")
            .with("CallerIDnum", ch.cid_num.clone())
            .with("CallerIDname", ch.cid_name.clone())
            .with("CallerIDani", ch.cid_num.clone())
            .with("CallerIDrdnis", "")
            .with("CallerIDdnid", "")
            .with("Exten", ch.exten.clone())
            .with("Context", ch.context.clone())
            .with("Channel", ch.name.clone())
            .with("Application", "")
            .with("AppData", "")
            .with("EventTime", "2023-11-15 03:13:20")
            .with("AMAFlags", "DOCUMENTATION")
            .with("UniqueID", ch.uid.clone())
            .with("LinkedID", ch.linkedid.clone())
            .with("Userfield", "")
            .with("Peer", "")
            .with("PeerAccount", "")
            .with("Extra", extra);
        self.emit(m);
    }

    fn next_uid(&mut self) -> String {
        self.counter += 1;
        format!("{}.{}", self.now / 1_000_000, self.counter)
    }

    /// A new channel. `linked_to` = the channel whose linkedid it inherits (Dial/Queue/Local), None for a call's
    /// first channel.
    pub fn new_channel(
        &mut self,
        name: &str,
        state: u8,
        cid: &str,
        context: &str,
        exten: &str,
        linked_to: Option<C>,
    ) -> C {
        self.seq += 1;
        let uid = self.next_uid();
        let linkedid = linked_to.map_or(uid.clone(), |l| self.chans[l.0].linkedid.clone());
        let name = if name.starts_with("Local/") {
            name.to_owned()
        } else {
            format!("{name}-{:08x}", self.seq)
        };
        self.chans.push(Chan {
            name,
            uid,
            linkedid,
            state,
            cid_num: cid.into(),
            cid_name: if cid.is_empty() { "<unknown>".into() } else { cid.into() },
            conn_num: "<unknown>".into(),
            context: context.into(),
            exten: exten.into(),
        });
        let c = C(self.chans.len() - 1);
        let m = self.event("Newchannel");
        let m = self.block(m, "", c);
        self.emit(m);
        self.auto_cel(c, "CHAN_START", "");
        c
    }

    /// A `Local/<exten>@<context>-<n>;1` / `;2` pair inheriting `linked_to`'s linkedid.
    pub fn new_local_pair(&mut self, exten: &str, context: &str, linked_to: C) -> (C, C) {
        self.seq += 1;
        let base = format!("Local/{exten}@{context}-{:08x}", self.seq);
        let one = self.new_channel(&format!("{base};1"), 0, "", context, exten, Some(linked_to));
        let two = self.new_channel(&format!("{base};2"), 4, "", context, exten, Some(linked_to));
        (one, two)
    }

    pub fn set_state(&mut self, c: C, state: u8) {
        self.chans[c.0].state = state;
        let m = self.event("Newstate");
        let m = self.block(m, "", c);
        self.emit(m);
        if state == 6 {
            self.auto_cel(c, "ANSWER", "");
        }
    }

    /// The dialplan rewrites the caller number (`Set(CALLERID(num)=…)`).
    pub fn set_caller_number(&mut self, c: C, number: &str) {
        self.chans[c.0].cid_num = number.into();
        let m = self.event("NewCallerid");
        let m = self
            .block(m, "", c)
            .with("CID-CallingPres", "0 (Presentation Allowed, Not Screened)");
        self.emit(m);
    }

    pub fn set_linkedid(&mut self, c: C, linkedid: &str) {
        self.chans[c.0].linkedid = linkedid.into();
    }

    pub fn linkedid(&self, c: C) -> String {
        self.chans[c.0].linkedid.clone()
    }

    pub fn newexten(&mut self, c: C, app: &str, data: &str) {
        let m = self.event("Newexten");
        let m = self
            .block(m, "", c)
            .with("Extension", self.chans[c.0].exten.clone())
            .with("Application", app)
            .with("AppData", data);
        self.emit(m);
    }

    pub fn var_set(&mut self, c: C, variable: &str, value: &str) {
        let m = self.event("VarSet");
        let m = self.block(m, "", c).with("Variable", variable).with("Value", value);
        self.emit(m);
    }

    pub fn dial_begin(&mut self, caller: Option<C>, dest: C, dial_string: &str) {
        let mut m = self.event("DialBegin");
        if let Some(caller) = caller {
            m = self.block(m, "", caller);
        }
        let m = self.block(m, "Dest", dest).with("DialString", dial_string);
        self.emit(m);
    }

    pub fn dial_state(&mut self, caller: C, dest: C, status: &str) {
        let m = self.event("DialState");
        let m = self.block(m, "", caller);
        let m = self.block(m, "Dest", dest).with("DialStatus", status);
        self.emit(m);
    }

    pub fn dial_end(&mut self, caller: Option<C>, dest: C, status: &str) {
        let mut m = self.event("DialEnd");
        if let Some(caller) = caller {
            m = self.block(m, "", caller);
        }
        let m = self.block(m, "Dest", dest).with("DialStatus", status);
        self.emit(m);
    }

    /// Dest rings: DialBegin, Newstate Ringing, DialState RINGING.
    pub fn ring(&mut self, caller: C, dest: C, dial_string: &str) {
        self.dial_begin(Some(caller), dest, dial_string);
        self.set_state(dest, 5);
        self.dial_state(caller, dest, "RINGING");
    }

    pub fn hangup_request(&mut self, c: C, cause: u16) {
        let m = self.event("HangupRequest");
        let m = self.block(m, "", c).with("Cause", cause.to_string());
        self.emit(m);
    }

    pub fn soft_hangup_request(&mut self, c: C, cause: u16) {
        let m = self.event("SoftHangupRequest");
        let m = self.block(m, "", c).with("Cause", cause.to_string());
        self.emit(m);
    }

    pub fn hangup(&mut self, c: C, cause: u16, cause_txt: &str) {
        self.hangup_with(c, cause, cause_txt, None);
    }

    pub fn hangup_with(&mut self, c: C, cause: u16, cause_txt: &str, tech_cause: Option<u16>) {
        let m = self.event("Hangup");
        let mut m = self
            .block(m, "", c)
            .with("Cause", cause.to_string())
            .with("Cause-txt", cause_txt);
        if let Some(t) = tech_cause {
            m.push("TechCause", t.to_string());
        }
        self.emit(m);
        let name = self.chans[c.0].name.clone();
        self.auto_cel(
            c,
            "HANGUP",
            &format!(r#"{{"hangupcause":{cause},"hangupsource":"{name}","dialstatus":""}}"#),
        );
        self.auto_cel(c, "CHAN_END", "");
    }

    pub fn bridge_enter(&mut self, bridge: &str, c: C, members_after: usize) {
        let m = self.event("BridgeEnter");
        let m = Self::bridge_block(m, bridge, members_after);
        let m = self.block(m, "", c);
        self.emit(m);
        self.auto_cel(
            c,
            "BRIDGE_ENTER",
            &format!(r#"{{"bridge_id":"{bridge}","bridge_technology":"simple_bridge"}}"#),
        );
    }

    pub fn bridge_leave(&mut self, bridge: &str, c: C, members_after: usize) {
        let m = self.event("BridgeLeave");
        let m = Self::bridge_block(m, bridge, members_after);
        let m = self.block(m, "", c);
        self.emit(m);
        self.auto_cel(
            c,
            "BRIDGE_EXIT",
            &format!(r#"{{"bridge_id":"{bridge}","bridge_technology":"simple_bridge"}}"#),
        );
    }

    /// Bridges two answered channels.
    pub fn bridge(&mut self, bridge: &str, a: C, b: C) {
        let m = self.event("BridgeCreate");
        let m = Self::bridge_block(m, bridge, 0);
        self.emit(m);
        self.bridge_enter(bridge, a, 1);
        self.bridge_enter(bridge, b, 2);
    }

    pub fn unbridge(&mut self, bridge: &str, a: C, b: C) {
        self.bridge_leave(bridge, a, 1);
        self.bridge_leave(bridge, b, 0);
        let m = self.event("BridgeDestroy");
        let m = Self::bridge_block(m, bridge, 0);
        self.emit(m);
    }

    pub fn hold(&mut self, c: C, hold: bool) {
        let m = self.event(if hold { "Hold" } else { "Unhold" });
        let mut m = self.block(m, "", c);
        if hold {
            m.push("MusicClass", "default");
        }
        self.emit(m);
    }

    pub fn queue_join(&mut self, c: C, queue: &str) {
        let m = self.event("QueueCallerJoin");
        let m = self
            .block(m, "", c)
            .with("Queue", queue)
            .with("Position", "1")
            .with("Count", "1");
        self.emit(m);
    }

    pub fn queue_leave(&mut self, c: C, queue: &str) {
        let m = self.event("QueueCallerLeave");
        let m = self
            .block(m, "", c)
            .with("Queue", queue)
            .with("Position", "1")
            .with("Count", "0");
        self.emit(m);
    }

    pub fn queue_abandon(&mut self, c: C, queue: &str) {
        let m = self.event("QueueCallerAbandon");
        let m = self
            .block(m, "", c)
            .with("Queue", queue)
            .with("Position", "1")
            .with("OriginalPosition", "1")
            .with("HoldTime", "12");
        self.emit(m);
    }

    fn agent_event(&mut self, name: &str, caller: C, member: C, queue: &str) -> Message {
        let m = self.event(name);
        let m = self.block(m, "", caller);
        let interface = self.chans[member.0].name.clone();
        let interface = interface
            .rsplit_once('-')
            .map_or(interface.clone(), |(a, _)| a.to_owned());
        self.block(m, "Dest", member)
            .with("Queue", queue)
            .with("Interface", interface.clone())
            .with("MemberName", interface)
    }

    pub fn agent_called(&mut self, caller: C, member: C, queue: &str) {
        let m = self.agent_event("AgentCalled", caller, member, queue);
        self.emit(m);
    }

    pub fn agent_ring_no_answer(&mut self, caller: C, member: C, queue: &str, ring_ms: u64) {
        let m = self
            .agent_event("AgentRingNoAnswer", caller, member, queue)
            .with("RingTime", ring_ms.to_string());
        self.emit(m);
    }

    pub fn agent_connect(&mut self, caller: C, member: C, queue: &str) {
        let m = self
            .agent_event("AgentConnect", caller, member, queue)
            .with("HoldTime", "3")
            .with("RingTime", "3");
        self.emit(m);
    }

    pub fn agent_complete(&mut self, caller: C, member: C, queue: &str, reason: &str) {
        let m = self
            .agent_event("AgentComplete", caller, member, queue)
            .with("HoldTime", "3")
            .with("TalkTime", "5")
            .with("Reason", reason);
        self.emit(m);
    }

    pub fn blind_transfer(&mut self, transferer: C, transferee: C, exten: &str, context: &str) {
        let m = self.event("BlindTransfer").with("Result", "Success");
        let m = self.block(m, "Transferer", transferer);
        let m = self.block(m, "Transferee", transferee);
        let m = Self::bridge_block(m, "b-1", 2)
            .with("IsExternal", "No")
            .with("Context", context)
            .with("Extension", exten);
        self.emit(m);
    }

    pub fn attended_transfer(&mut self, orig: C, second: C, transferee: C, target: C) {
        let m = self.event("AttendedTransfer").with("Result", "Success");
        let m = self.block(m, "OrigTransferer", orig);
        let m = self.block(m, "SecondTransferer", second);
        let m = self.block(m, "Transferee", transferee);
        let m = self
            .block(m, "TransferTarget", target)
            .with("IsExternal", "No")
            .with("DestType", "Bridge")
            .with("DestBridgeUniqueid", "b-1");
        self.emit(m);
    }

    pub fn pickup(&mut self, picker: C, target: C) {
        let m = self.event("Pickup");
        let m = self.block(m, "", picker);
        let m = self.block(m, "Target", target);
        self.emit(m);
    }

    pub fn parked(&mut self, parkee: C, parker_dial: &str, space: &str) {
        let m = self.event("ParkedCall");
        let m = self
            .block(m, "Parkee", parkee)
            .with("ParkerDialString", parker_dial)
            .with("Parkinglot", "default")
            .with("ParkingSpace", space)
            .with("ParkingTimeout", "45")
            .with("ParkingDuration", "0");
        self.emit(m);
    }

    pub fn unparked(&mut self, parkee: C, retriever: C, space: &str) {
        let m = self.event("UnParkedCall");
        let m = self.block(m, "Parkee", parkee);
        let m = self
            .block(m, "Retriever", retriever)
            .with("ParkerDialString", "PJSIP/101")
            .with("Parkinglot", "default")
            .with("ParkingSpace", space)
            .with("ParkingTimeout", "45")
            .with("ParkingDuration", "7");
        self.emit(m);
    }

    pub fn local_optimization(&mut self, one: C, two: C) {
        let m = self.event("LocalOptimizationBegin");
        let m = self.block(m, "LocalOne", one);
        let m = self.block(m, "LocalTwo", two).with("Id", "1");
        self.emit(m);
        let m = self.event("LocalOptimizationEnd");
        let m = self.block(m, "LocalOne", one);
        let m = self.block(m, "LocalTwo", two).with("Success", "Yes").with("Id", "1");
        self.emit(m);
    }

    pub fn rename(&mut self, c: C, new_name: &str) {
        let m = self
            .event("Rename")
            .with("Channel", self.chans[c.0].name.clone())
            .with("Newname", new_name)
            .with("Uniqueid", self.chans[c.0].uid.clone());
        self.chans[c.0].name = new_name.into();
        self.emit(m);
    }

    /// Noise the tracker must tolerate: device states and unrelated dialplan variables.
    pub fn noise(&mut self, c: C) {
        let m = self
            .event("DeviceStateChange")
            .with("Device", "PJSIP/101")
            .with("State", "INUSE");
        self.emit(m);
        self.var_set(c, "BRIDGEPEER", "PJSIP/carrier-00000001");
    }

    /// The CoreShowChannel item describing `c` now (for resync tests).
    pub fn show_channel(&self, c: C, bridge: &str, duration_secs: u64) -> Message {
        let m = Message::new()
            .with("Event", "CoreShowChannel")
            .with("ActionID", "resync-1");
        let m = self.block(m, "", c);
        m.with("BridgeId", bridge)
            .with("Application", "Dial")
            .with("ApplicationData", "")
            .with(
                "Duration",
                format!(
                    "{:02}:{:02}:{:02}",
                    duration_secs / 3600,
                    duration_secs / 60 % 60,
                    duration_secs % 60
                ),
            )
            .with("BridgedChannel", "")
            .with("BridgedUniqueID", "")
    }

    pub fn timestamp(&self) -> Timestamp {
        Timestamp::from_micros(self.now)
    }
}

/// Feeds every message; returns all call events.
pub fn run(tracker: &mut Tracker, messages: &[Message]) -> Vec<CallEvent> {
    messages.iter().flat_map(|m| tracker.handle(m)).collect()
}

/// `name conversation` lines, for compact assertions.
pub fn summary(events: &[CallEvent], pbx_uids: &HashMap<String, &str>) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let conv = e
                .conversation()
                .map(|c| pbx_uids.get(c).copied().unwrap_or(c).to_owned());
            let detail = match e {
                CallEvent::LegRinging(l) | CallEvent::LegDialing(l) | CallEvent::LegAnswered(l) => {
                    format!(" {:?}", l.origin)
                }
                CallEvent::LegStoppedRinging { reason, .. } => format!(" {reason:?}"),
                CallEvent::ConversationEnded { reason, .. } => format!(" {reason:?}"),
                CallEvent::Transferred { kind, target, .. } => format!(" {kind:?} {target}"),
                CallEvent::CallEnded { reason, call_full, .. } => format!(" {reason:?} result={}", call_full.result),
                _ => String::new(),
            };
            let call = pbx_uids.get(e.call()).copied().unwrap_or(e.call());
            match conv {
                Some(conv) => format!("{} {call} {conv}{detail}", e.name()),
                None => format!("{} {call}{detail}", e.name()),
            }
        })
        .collect()
}

/// The final call_full of call `key` among `events`.
pub fn ended<'a>(events: &'a [CallEvent], key: &str) -> &'a tracker::CallFull {
    events
        .iter()
        .find_map(|e| match e {
            CallEvent::CallEnded { call, call_full, .. } if call == key => Some(call_full.as_ref()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("call {key} did not end"))
}
