//! The state machine: channels, calls, conversations.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use ami::Message;
use serde_json::{Map, Value};

use crate::config::{parse_channel_name, Compiled, EndpointKind};
use crate::event::{
    CallEndReason, CallEvent, ConversationEndReason, Leg, LegOrigin, StopReason, TransferKind, UnparkReason,
};
use crate::model::{CallFull, CallState, ChannelData, Conversation, Direction};
use crate::status::{self, DialOutcome};
use crate::time::Timestamp;
use crate::{Error, TrackerConfig};

/// Header names of one channel block (AMI prefixes them: `DestUniqueid`, `TargetLinkedid`, …).
struct Block {
    /// The block is the channel's current snapshot (its own event, or the dialled channel of a dial event);
    /// other blocks (a transfer's or pickup's parties) may be a moment old, so only their identity is used.
    fresh: bool,
    channel: &'static str,
    state: &'static str,
    caller_num: &'static str,
    exten: &'static str,
    uniqueid: &'static str,
    linkedid: &'static str,
}

macro_rules! block {
    ($prefix:literal, $fresh:literal) => {
        Block {
            fresh: $fresh,
            channel: concat!($prefix, "Channel"),
            state: concat!($prefix, "ChannelState"),
            caller_num: concat!($prefix, "CallerIDNum"),
            exten: concat!($prefix, "Exten"),
            uniqueid: concat!($prefix, "Uniqueid"),
            linkedid: concat!($prefix, "Linkedid"),
        }
    };
}

const MAIN: Block = block!("", true);
const DEST: Block = block!("Dest", true);
const TARGET: Block = block!("Target", false);
const PARKEE: Block = block!("Parkee", false);
const RETRIEVER: Block = block!("Retriever", false);
const TRANSFERER: Block = block!("Transferer", false);
const TRANSFEREE: Block = block!("Transferee", false);
const ORIG_TRANSFERER: Block = block!("OrigTransferer", false);
const SECOND_TRANSFERER: Block = block!("SecondTransferer", false);
const TRANSFER_TARGET: Block = block!("TransferTarget", false);
const LOCAL_ONE: Block = block!("LocalOne", false);
const LOCAL_TWO: Block = block!("LocalTwo", false);

const STATE_RING: u8 = 4;
const STATE_RINGING: u8 = 5;
const STATE_UP: u8 = 6;

/// One live channel.
#[derive(Debug)]
struct Chan {
    name: String,
    kind: EndpointKind,
    endpoint: String,
    /// Key of the call the channel belongs to now.
    call: String,
    state: u8,
    caller_num: String,
    exten: String,
    up_at: Option<Timestamp>,
    /// The bridge the channel is in now.
    bridge: Option<String>,
    /// Rung for an employee's consultation (attended transfer in progress), not for the client.
    consultation: bool,
    /// Uniqueid of the channel that dialled this one.
    dialed_by: Option<String>,
    is_dial_dest: bool,
    dial_status: Option<String>,
    ring_no_answer: bool,
    queue_member: bool,
    hangup_requested: bool,
    cause: Option<u16>,
    tech_cause: Option<u16>,
    picked_up_by: Option<String>,
    origin_hint: Option<LegOrigin>,
    extra: Map<String, Value>,
    local_pair: Option<(String, u8)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The employee's phone is the one being called.
    Callee,
    /// The employee is calling out.
    Caller,
}

#[derive(Debug)]
struct Conv {
    leg: String,
    side: Side,
    endpoint: String,
    number: String,
    channel_name: String,
    origin: LegOrigin,
    start: Timestamp,
    answered: Option<Timestamp>,
    ended: Option<Timestamp>,
    held: bool,
    parked: bool,
    end_hint: Option<ConversationEndReason>,
    extra: Map<String, Value>,
}

impl Conv {
    fn is_live(&self) -> bool {
        self.ended.is_none()
    }
    fn is_talking(&self) -> bool {
        self.ended.is_none() && self.answered.is_some()
    }
    fn is_ringing(&self) -> bool {
        self.ended.is_none() && self.answered.is_none()
    }
}

#[derive(Debug)]
struct Call {
    key: String,
    channels: Vec<String>,
    start: Timestamp,
    last_event: Timestamp,
    direction: Direction,
    primary_kind: Option<EndpointKind>,
    primary_name: String,
    primary_extra: Map<String, Value>,
    primary_gone: bool,
    from_raw: String,
    to_raw: String,
    trunk: Option<usize>,
    trunk_exten: String,
    convs: Vec<Conv>,
    record: String,
    abandoned: bool,
    next_origin: Option<LegOrigin>,
    far_leg: Option<String>,
    far_outcome: DialOutcome,
    far_answered: Option<Timestamp>,
    /// (time, event) of transfer and parking events already reported: a repeated delivery is not news.
    reported: Vec<(Timestamp, &'static str)>,
}

impl Call {
    fn new(key: &str, now: Timestamp) -> Self {
        Self {
            key: key.to_owned(),
            channels: Vec::new(),
            start: now,
            last_event: now,
            direction: Direction::Unknown,
            primary_kind: None,
            primary_name: String::new(),
            primary_extra: Map::new(),
            primary_gone: false,
            from_raw: String::new(),
            to_raw: String::new(),
            trunk: None,
            trunk_exten: String::new(),
            convs: Vec::new(),
            record: String::new(),
            abandoned: false,
            next_origin: None,
            far_leg: None,
            far_outcome: DialOutcome::default(),
            far_answered: None,
            reported: Vec::new(),
        }
    }

    /// True the first time a feature event with this instant is seen.
    fn first_report(&mut self, at: Timestamp, what: &'static str) -> bool {
        if self.reported.contains(&(at, what)) {
            return false;
        }
        self.reported.push((at, what));
        true
    }

    fn live_conv_mut(&mut self, leg: &str) -> Option<&mut Conv> {
        self.convs.iter_mut().rev().find(|c| c.leg == leg && c.is_live())
    }

    fn has_conv(&self, leg: &str) -> bool {
        self.convs.iter().any(|c| c.leg == leg)
    }

    /// The conversation talking now: the latest answered one still live.
    fn active_conv(&self) -> Option<&Conv> {
        self.convs.iter().filter(|c| c.is_talking()).max_by_key(|c| c.answered)
    }

    fn peer_number(&self) -> &str {
        match self.direction {
            Direction::Outgoing => &self.to_raw,
            _ => &self.from_raw,
        }
    }
}

/// Remembered keys (hung-up channels, ended calls) so that late or repeated events are ignored.
#[derive(Debug, Default)]
struct Tombstones {
    /// key → (when, call key it belonged to)
    map: HashMap<String, (Timestamp, String)>,
    order: VecDeque<(Timestamp, String)>,
}

/// Upper bound on remembered keys, whatever `forget_after_secs` says: memory stays bounded under any load.
const TOMBSTONE_CAP: usize = 200_000;

impl Tombstones {
    fn insert(&mut self, key: &str, call: &str, now: Timestamp) {
        if self.map.insert(key.to_owned(), (now, call.to_owned())).is_none() {
            self.order.push_back((now, key.to_owned()));
        }
        while self.order.len() > TOMBSTONE_CAP {
            if let Some((_, old)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
    fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
    fn call_of(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|(_, c)| c.as_str())
    }
    fn purge_before(&mut self, limit: Timestamp) {
        while let Some((at, _)) = self.order.front() {
            if *at >= limit {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                // A key re-inserted later keeps its newer entry.
                if self.map.get(&key).is_some_and(|(t, _)| *t == at) {
                    self.map.remove(&key);
                }
            }
        }
    }
}

/// How a leg left its call.
#[derive(Debug, Clone)]
enum LegEnd {
    Hangup,
    Moved(String),
    Vanished,
    Expired,
    /// The call ended around it.
    CallOver,
}

/// Follows calls on one Asterisk from its AMI events.
///
/// Feed every AMI event to [`handle`](Self::handle) in arrival order; after an AMI reconnect, feed the
/// `CoreShowChannels` list to [`resync`](Self::resync); call [`tick`](Self::tick) now and then (e.g. once a
/// minute) to close calls whose hang-up was lost. Unknown events and odd values are ignored, never a panic.
#[derive(Debug)]
pub struct Tracker {
    cfg: Compiled,
    channels: HashMap<String, Chan>,
    calls: HashMap<String, Call>,
    /// `Local/…-xxxxxxxx` base name → uniqueids of its `;1` and `;2` halves.
    local_pairs: HashMap<String, [Option<String>; 2]>,
    dead_channels: Tombstones,
    ended_calls: Tombstones,
    /// The latest instant seen (events' timestamps, `now` arguments); used for events without a timestamp.
    clock: Timestamp,
}

fn clean_number(raw: &str) -> &str {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("<unknown>") {
        ""
    } else {
        raw
    }
}

fn parse_u16(v: Option<&str>) -> Option<u16> {
    v.and_then(|s| s.trim().parse::<u16>().ok())
}

/// Age of a linkedid `[<system>-]<epoch>.<counter>`, if it has that shape.
fn linkedid_age(id: &str) -> Option<(u64, u64)> {
    let tail = id.rsplit('-').next().unwrap_or(id);
    let (epoch, counter) = tail.split_once('.')?;
    Some((epoch.parse().ok()?, counter.parse().ok()?))
}

/// The number a dial string reaches: `9001234567@carrier`, `carrier/sip:9001234567@host`, `carrier/9001234567`.
fn dialed_number(dial_string: &str) -> Option<String> {
    let s = dial_string.trim();
    let s = s.split_once('/').map_or(s, |(_, rest)| rest);
    let s = s
        .strip_prefix("sip:")
        .or_else(|| s.strip_prefix("sips:"))
        .or_else(|| s.strip_prefix("tel:"))
        .unwrap_or(s);
    let user = s.split(['@', ';', ',']).next().unwrap_or("");
    let looks_like_number = user.bytes().any(|b| b.is_ascii_digit())
        && user
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'*' | b'#'));
    looks_like_number.then(|| user.to_owned())
}

fn endpoint_of_dial_string(dial_string: &str) -> &str {
    // "PJSIP/101" or "PJSIP/101&PJSIP/102": the parker's own device.
    let first = dial_string.split('&').next().unwrap_or("");
    let rest = first.split_once('/').map_or(first, |(_, r)| r);
    rest.split(['@', '/', ',']).next().unwrap_or("")
}

fn parse_extra(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Object(map)) if !map.is_empty() => Some(map),
        _ => None,
    }
}

/// Duration as CoreShowChannel reports it: `HH:MM:SS` (hours may exceed 24), or plain seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    for part in text.trim().split(':') {
        total = total.checked_mul(60)?.checked_add(part.parse::<u64>().ok()?)?;
    }
    Some(total)
}

/// A header the shell may add to a `CoreShowChannel` item given to [`Tracker::resync`]: the channel's answer
/// instant as AMI writes times (`1700000000.123456`), e.g. from `Getvar CDR(answer,u)`. `CoreShowChannels` itself
/// does not say since when a channel is up, and a conversation's talk time is counted from its answer.
pub const RESYNC_ANSWER_TIME: &str = "RinglinkAnswerTime";

impl Tracker {
    /// Builds a tracker; fails only on invalid settings (a bad pattern or offset).
    pub fn new(config: TrackerConfig) -> Result<Self, Error> {
        Ok(Self {
            cfg: Compiled::new(&config)?,
            channels: HashMap::new(),
            calls: HashMap::new(),
            local_pairs: HashMap::new(),
            dead_channels: Tombstones::default(),
            ended_calls: Tombstones::default(),
            clock: Timestamp::default(),
        })
    }

    /// Takes one AMI message (events only; responses and actions are ignored) and returns what happened.
    /// Time is the event's `Timestamp` header, or the latest instant seen if it has none.
    pub fn handle(&mut self, message: &Message) -> Vec<CallEvent> {
        let mut out = Vec::new();
        self.handle_into(message, None, &mut out);
        out
    }

    /// Like [`handle`](Self::handle), with `now` for events that carry no `Timestamp`.
    pub fn handle_at(&mut self, message: &Message, now: Timestamp) -> Vec<CallEvent> {
        let mut out = Vec::new();
        self.handle_into(message, Some(now), &mut out);
        out
    }

    /// Like [`handle`](Self::handle), appending to `out` (no allocation when nothing happens).
    pub fn handle_into(&mut self, message: &Message, now: Option<Timestamp>, out: &mut Vec<CallEvent>) {
        let Some(event) = message.event_name() else {
            return;
        };
        let now = message
            .get("Timestamp")
            .and_then(Timestamp::parse_ami)
            .or(now)
            .unwrap_or(self.clock);
        self.clock = self.clock.max(now);
        match event {
            "Newchannel" | "Newstate" => {
                if let Some(uid) = self.observe(message, &MAIN, true, now, out) {
                    self.update_state(uid, message.get(MAIN.state), now);
                }
            }
            "NewCallerid"
            | "NewConnectedLine"
            | "Newexten"
            | "LocalBridge"
            | "LocalOptimizationBegin"
            | "LocalOptimizationEnd"
            | "MusicOnHoldStart"
            | "MusicOnHoldStop"
            | "DialState"
            | "HangupRequest"
            | "SoftHangupRequest" => {
                self.observe(message, &MAIN, event != "Newexten", now, out);
                if event.starts_with("Local") {
                    self.observe(message, &LOCAL_ONE, true, now, out);
                    self.observe(message, &LOCAL_TWO, true, now, out);
                }
                if event == "DialState" {
                    self.observe(message, &DEST, true, now, out);
                }
                if event.ends_with("HangupRequest") {
                    self.on_hangup_request(message);
                }
            }
            "Rename" => self.on_rename(message),
            "DialBegin" => self.on_dial_begin(message, now, out),
            "DialEnd" => self.on_dial_end(message, now, out),
            "Hangup" => self.on_hangup(message, now, out),
            "BridgeEnter" => self.on_bridge_enter(message, now, out),
            "BridgeLeave" => {
                if let Some(uid) = self.observe(message, &MAIN, false, now, out) {
                    let bridge = message.get("BridgeUniqueid").map(str::trim);
                    if let Some(ch) = self.channels.get_mut(uid) {
                        if bridge.is_none() || ch.bridge.as_deref() == bridge {
                            ch.bridge = None;
                        }
                    }
                }
            }
            "Hold" | "Unhold" => self.on_hold(message, event == "Hold", now, out),
            "VarSet" => self.on_var_set(message, now, out),
            "AgentCalled" => self.on_agent_called(message, now, out),
            "AgentRingNoAnswer" => self.on_agent_ring_no_answer(message, now, out),
            "AgentConnect" => {
                self.observe(message, &MAIN, false, now, out);
                if let Some(dest) = self.observe(message, &DEST, false, now, out) {
                    if self.kind_of(dest) == Some(EndpointKind::Internal) {
                        self.leg_answered(dest, now, out);
                    }
                }
            }
            "QueueCallerAbandon" => {
                if let Some(uid) = self.observe(message, &MAIN, false, now, out) {
                    if let Some(call) = self.call_of_mut(uid) {
                        call.abandoned = true;
                    }
                }
            }
            "Pickup" => self.on_pickup(message, now, out),
            "ParkedCall" => self.on_parked(message, now, out),
            "UnParkedCall" => self.on_unparked(message, now, out),
            "ParkedCallTimeOut" => self.on_park_ended(message, UnparkReason::Timeout, now, out),
            "ParkedCallGiveUp" => self.on_park_ended(message, UnparkReason::GaveUp, now, out),
            "BlindTransfer" => self.on_blind_transfer(message, now, out),
            "AttendedTransfer" => self.on_attended_transfer(message, now, out),
            "CEL" => self.on_cel(message, now, out),
            "CoreShowChannel" => {
                self.observe_listed_channel(message, now, out);
            }
            _ => {}
        }
    }

    /// Rebuilds live state after an AMI reconnect from the `CoreShowChannel` items of a `CoreShowChannels`
    /// list (other messages in `items` are ignored). Channels we knew that are no longer listed hung up while we
    /// were away: their legs stop, and calls left without channels end (reason `Vanished`). Channels we did not
    /// know join their calls; employee legs found ringing or talking are reported (origin `Resync`). A call that
    /// already ended is never reported as ended again.
    pub fn resync(&mut self, items: &[Message], now: Timestamp) -> Vec<CallEvent> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        let listed: Vec<&Message> = items
            .iter()
            .filter(|m| m.event_name() == Some("CoreShowChannel"))
            .collect();
        let live: HashSet<&str> = listed.iter().filter_map(|m| m.get("Uniqueid").map(str::trim)).collect();
        let mut gone: Vec<(Timestamp, String)> = self
            .channels
            .iter()
            .filter(|(uid, _)| !live.contains(uid.as_str()))
            .map(|(uid, ch)| {
                let start = self.calls.get(&ch.call).map_or(now, |c| c.start);
                (start, uid.clone())
            })
            .collect();
        gone.sort();
        for (_, uid) in gone {
            self.remove_channel(&uid, LegEnd::Vanished, now, &mut out);
        }
        let mut touched: Vec<String> = Vec::new();
        for item in &listed {
            if let Some(uid) = self.observe_listed_channel(item, now, &mut out) {
                if let Some(ch) = self.channels.get(uid) {
                    if !touched.contains(&ch.call) {
                        touched.push(ch.call.clone());
                    }
                }
            }
        }
        for key in touched {
            self.derive_after_resync(&key, now, &mut out);
        }
        out
    }

    /// Closes calls that had no event for `call_idle_timeout_secs` (reason `Expired`, logged by the caller) and
    /// forgets old tombstones. Call it periodically with the current time.
    pub fn tick(&mut self, now: Timestamp) -> Vec<CallEvent> {
        self.clock = self.clock.max(now);
        let mut out = Vec::new();
        let forget_limit = now.saturating_sub_secs(self.cfg.forget_after_secs);
        self.dead_channels.purge_before(forget_limit);
        self.ended_calls.purge_before(forget_limit);
        self.release_spare_capacity();
        let idle_limit = now.saturating_sub_secs(self.cfg.idle_timeout_secs);
        let mut stale: Vec<(Timestamp, String)> = self
            .calls
            .values()
            .filter(|c| c.last_event <= idle_limit)
            .map(|c| (c.start, c.key.clone()))
            .collect();
        stale.sort();
        for (_, key) in stale {
            let idle_secs = self.calls.get(&key).map_or(0, |c| now.secs_since(c.last_event));
            self.end_call(&key, CallEndReason::Expired { idle_secs }, now, &mut out);
        }
        out
    }

    /// After a burst of calls the maps keep their peak capacity; give most of it back once they are mostly empty.
    fn release_spare_capacity(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > 4 * map.len() + 256 {
                map.shrink_to(2 * map.len());
            }
        }
        shrink(&mut self.channels);
        shrink(&mut self.calls);
        shrink(&mut self.local_pairs);
        shrink(&mut self.dead_channels.map);
        shrink(&mut self.ended_calls.map);
        for t in [&mut self.dead_channels, &mut self.ended_calls] {
            if t.order.capacity() > 4 * t.order.len() + 256 {
                t.order.shrink_to(2 * t.order.len());
            }
        }
    }

    /// `call_full` of every live call, oldest first.
    pub fn snapshot(&self) -> Vec<CallFull> {
        let mut calls: Vec<&Call> = self.calls.values().collect();
        calls.sort_by(|a, b| (a.start, &a.key).cmp(&(b.start, &b.key)));
        calls
            .into_iter()
            .map(|c| build_call_full(&self.cfg, &self.channels, c, None))
            .collect()
    }

    /// `call_full` of one live call.
    pub fn call_full(&self, key: &str) -> Option<CallFull> {
        self.calls
            .get(key)
            .map(|c| build_call_full(&self.cfg, &self.channels, c, None))
    }

    /// The key of the live call a channel belongs to.
    pub fn call_of_channel(&self, uniqueid: &str) -> Option<&str> {
        self.channels.get(uniqueid).map(|c| c.call.as_str())
    }

    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn live_channels(&self) -> usize {
        self.channels.len()
    }

    // ----- observation -------------------------------------------------------------------------------------

    fn kind_of(&self, uid: &str) -> Option<EndpointKind> {
        self.channels.get(uid).map(|c| c.kind)
    }

    fn call_of_mut(&mut self, uid: &str) -> Option<&mut Call> {
        let key = &self.channels.get(uid)?.call;
        self.calls.get_mut(key)
    }

    /// Is call `a` older than call `b`? Asterisk merges into the oldest linkedid.
    fn is_older(&self, a: &str, b: &str) -> bool {
        match (linkedid_age(a), linkedid_age(b)) {
            (Some(x), Some(y)) => x < y,
            _ => match (self.calls.get(a), self.calls.get(b)) {
                (Some(x), Some(y)) => x.start < y.start,
                _ => false,
            },
        }
    }

    /// Notes a channel block of `message`; creates the channel if `create` and it is new. Moves the channel to
    /// an older call when the block shows an older linkedid. Returns the channel's uniqueid if it is live.
    fn observe<'m>(
        &mut self,
        message: &'m Message,
        block: &Block,
        create: bool,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) -> Option<&'m str> {
        let uid = message.get(block.uniqueid)?.trim();
        if uid.is_empty() || uid.eq_ignore_ascii_case("none") || self.dead_channels.contains(uid) {
            return None;
        }
        let linkedid = message
            .get(block.linkedid)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .unwrap_or(uid);
        if let Some(ch) = self.channels.get_mut(uid) {
            if block.fresh {
                if let Some(num) = message.get(block.caller_num) {
                    let num = clean_number(num);
                    if ch.caller_num != num {
                        ch.caller_num = num.to_owned();
                        if ch.call == uid {
                            if let Some(call) = self.calls.get_mut(uid) {
                                if call.direction == Direction::Incoming {
                                    call.from_raw = num.to_owned();
                                }
                            }
                        }
                    }
                }
            }
            if let Some(call) = self.calls.get_mut(&ch.call) {
                call.last_event = call.last_event.max(now);
            }
            if linkedid != ch.call {
                let current = ch.call.clone();
                if self.is_older(linkedid, &current) {
                    self.move_channel(uid, linkedid, now, out);
                }
            }
            return Some(uid);
        }
        if !create || self.ended_calls.contains(linkedid) {
            return None;
        }
        let name = message.get(block.channel).unwrap_or("").trim();
        if name.is_empty() || name.eq_ignore_ascii_case("none") {
            return None;
        }
        let parsed = parse_channel_name(name);
        let kind = self.cfg.classify(&parsed);
        let local_pair = parsed.local_pair.map(|(base, half)| (base.to_owned(), half));
        let ch = Chan {
            name: name.to_owned(),
            kind,
            endpoint: parsed.endpoint.to_owned(),
            call: linkedid.to_owned(),
            state: message
                .get(block.state)
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            caller_num: message.get(block.caller_num).map(clean_number).unwrap_or("").to_owned(),
            exten: message.get(block.exten).unwrap_or("").trim().to_owned(),
            up_at: None,
            bridge: None,
            consultation: false,
            dialed_by: None,
            is_dial_dest: false,
            dial_status: None,
            ring_no_answer: false,
            queue_member: false,
            hangup_requested: false,
            cause: None,
            tech_cause: None,
            picked_up_by: None,
            origin_hint: None,
            extra: Map::new(),
            local_pair,
        };
        if let Some((base, half)) = &ch.local_pair {
            let slots = self.local_pairs.entry(base.clone()).or_default();
            slots[usize::from(*half == 2)] = Some(uid.to_owned());
        }
        let call = self
            .calls
            .entry(linkedid.to_owned())
            .or_insert_with(|| Call::new(linkedid, now));
        call.last_event = call.last_event.max(now);
        call.channels.push(uid.to_owned());
        if uid == linkedid {
            call.primary_kind = Some(kind);
            call.primary_name = ch.name.clone();
            match kind {
                EndpointKind::Trunk(i) => {
                    call.direction = Direction::Incoming;
                    call.from_raw = ch.caller_num.clone();
                    call.to_raw = ch.exten.clone();
                    call.trunk = Some(i);
                    call.trunk_exten = ch.exten.clone();
                }
                EndpointKind::Internal => {
                    call.from_raw = ch.endpoint.clone();
                    call.to_raw = ch.exten.clone();
                }
                _ => {
                    call.from_raw = ch.caller_num.clone();
                    call.to_raw = ch.exten.clone();
                }
            }
        }
        self.channels.insert(uid.to_owned(), ch);
        Some(uid)
    }

    fn update_state(&mut self, uid: &str, state: Option<&str>, now: Timestamp) {
        let Some(state) = state.and_then(|s| s.trim().parse::<u8>().ok()) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.state = state;
            if state == STATE_UP && ch.up_at.is_none() {
                ch.up_at = Some(now);
            }
        }
    }

    /// The answer instant a resync item may carry (see [`RESYNC_ANSWER_TIME`]); only for a channel that is up.
    fn listed_answer_time(item: &Message) -> Option<Timestamp> {
        let at = Timestamp::parse_ami(item.get(RESYNC_ANSWER_TIME)?.trim())?;
        (at > Timestamp::default()).then_some(at)
    }

    fn observe_listed_channel<'m>(
        &mut self,
        item: &'m Message,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) -> Option<&'m str> {
        let known = item
            .get("Uniqueid")
            .is_some_and(|u| self.channels.contains_key(u.trim()));
        let uid = self.observe(item, &MAIN, true, now, out)?;
        self.update_state(uid, item.get(MAIN.state), now);
        if let Some(at) = Self::listed_answer_time(item).filter(|at| *at <= now) {
            if let Some(ch) = self.channels.get_mut(uid) {
                if ch.state == STATE_UP {
                    // Asterisk's own answer instant beats "up when we looked".
                    ch.up_at = Some(ch.up_at.map_or(at, |seen| seen.min(at)));
                }
            }
        }
        let bridge = item
            .get("BridgeId")
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned);
        let age = item.get("Duration").and_then(parse_duration);
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.bridge = bridge;
            if !known {
                if let (Some(age), Some(call)) = (age, self.calls.get_mut(&ch.call)) {
                    call.start = call.start.min(now.saturating_sub_secs(age));
                }
            }
        }
        Some(uid)
    }

    fn on_hangup_request(&mut self, message: &Message) {
        let Some(uid) = message.get("Uniqueid").map(str::trim) else {
            return;
        };
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        ch.hangup_requested = true;
        if let Some(cause) = parse_u16(message.get("Cause")).filter(|c| *c != 0) {
            ch.cause = Some(cause);
        }
        if let Some(tech) = parse_u16(message.get("TechCause")).filter(|c| *c != 0) {
            ch.tech_cause = Some(tech);
        }
        let key = ch.call.clone();
        if let Some(call) = self.calls.get_mut(&key) {
            if call.key == uid {
                call.primary_gone = true;
            }
        }
    }

    fn on_rename(&mut self, message: &Message) {
        let (Some(uid), Some(new_name)) = (message.get("Uniqueid"), message.get("Newname")) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(uid.trim()) {
            ch.name = new_name.trim().to_owned();
            let key = ch.call.clone();
            let name = ch.name.clone();
            if let Some(conv) = self.calls.get_mut(&key).and_then(|c| c.live_conv_mut(uid.trim())) {
                conv.channel_name = name;
            }
        }
    }

    // ----- dialling -----------------------------------------------------------------------------------------

    fn on_dial_begin(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let caller = self.observe(message, &MAIN, true, now, out);
        let Some(dest) = self.observe(message, &DEST, true, now, out) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(dest) {
            ch.is_dial_dest = true;
            ch.dialed_by = caller.map(str::to_owned);
        }
        let dialed = message.get("DialString").and_then(dialed_number).or_else(|| {
            message
                .get(MAIN.exten)
                .map(str::trim)
                .filter(|e| !e.is_empty() && *e != "s")
                .map(str::to_owned)
        });
        self.dialing(caller, dest, dialed, None, now, out);
    }

    /// A channel is being rung (DialBegin / AgentCalled).
    fn dialing(
        &mut self,
        caller: Option<&str>,
        dest: &str,
        dialed: Option<String>,
        queue_hint: Option<LegOrigin>,
        now: Timestamp,
        out: &mut Vec<CallEvent>,
    ) {
        let Some(dest_ch) = self.channels.get(dest) else {
            return;
        };
        let key = dest_ch.call.clone();
        let dest_kind = dest_ch.kind;
        let caller_kind = caller.and_then(|c| self.kind_of(c));
        let caller_endpoint = caller
            .and_then(|c| self.channels.get(c))
            .map(|c| c.endpoint.clone())
            .unwrap_or_default();
        let via_queue = queue_hint.is_some() || dest_ch.queue_member || caller.is_some_and(|c| self.is_queue_local(c));
        if dest_kind == EndpointKind::Internal && caller.is_some_and(|c| self.is_consultation(c, &key)) {
            if let Some(ch) = self.channels.get_mut(dest) {
                ch.consultation = true;
            }
            return;
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        match dest_kind {
            EndpointKind::Internal => {
                if call.direction == Direction::Unknown && call.primary_kind == Some(EndpointKind::Internal) {
                    call.direction = Direction::Local;
                    if let Some(ch) = self.channels.get(dest) {
                        call.to_raw = ch.endpoint.clone();
                    }
                }
                let origin = call
                    .next_origin
                    .or(self.channels.get(dest).and_then(|c| c.origin_hint))
                    .unwrap_or(if via_queue { LegOrigin::Queue } else { LegOrigin::Dial });
                if !call.has_conv(dest) {
                    if let Some(ch) = self.channels.get(dest) {
                        let conv = new_conv(dest, Side::Callee, ch, origin, now);
                        out.push(CallEvent::LegRinging(leg_of(call, &conv, now)));
                        call.convs.push(conv);
                    }
                }
            }
            EndpointKind::Trunk(i) => {
                if call.direction != Direction::Incoming {
                    if call.direction != Direction::Outgoing {
                        call.direction = Direction::Outgoing;
                        call.trunk = Some(i);
                        if let Some(number) = &dialed {
                            call.to_raw = number.clone();
                        }
                        if caller_kind == Some(EndpointKind::Internal) {
                            call.from_raw = caller_endpoint;
                        } else if let Some(c) = call.convs.iter().find(|c| c.side == Side::Callee) {
                            call.from_raw = c.number.clone();
                        }
                    }
                    if let (Some(caller), Some(EndpointKind::Internal)) = (caller, caller_kind) {
                        if !call.has_conv(caller) {
                            if let Some(ch) = self.channels.get(caller) {
                                let origin = call.next_origin.unwrap_or(LegOrigin::Dial);
                                let conv = new_conv(caller, Side::Caller, ch, origin, now);
                                out.push(CallEvent::LegDialing(leg_of(call, &conv, now)));
                                call.convs.push(conv);
                            }
                        }
                    }
                }
                call.far_leg = Some(dest.to_owned());
                call.far_outcome = DialOutcome::default();
            }
            _ => {}
        }
    }

    /// Is a dial from `caller` an employee's consultation? It is when the dialling side (or, through a Local
    /// pair, its `;1` half) shares a bridge with an employee leg that is talking to the client: Asterisk's
    /// attended transfer (`Atxfer`, features `atxfer`) moves the transferer into a bridge with a new Local
    /// channel that dials the target.
    fn is_consultation(&self, caller: &str, key: &str) -> bool {
        let Some(call) = self.calls.get(key) else {
            return false;
        };
        let Some(c) = self.channels.get(caller) else {
            return false;
        };
        if c.kind == EndpointKind::Internal && call.convs.iter().any(|v| v.leg == caller && v.is_talking()) {
            return true;
        }
        let origin = if c.kind == EndpointKind::Local {
            self.local_partner(caller).unwrap_or_else(|| caller.to_owned())
        } else {
            caller.to_owned()
        };
        let Some(bridge) = self.channels.get(&origin).and_then(|o| o.bridge.as_ref()) else {
            return false;
        };
        call.convs.iter().any(|v| {
            v.is_talking()
                && v.leg != origin
                && self
                    .channels
                    .get(&v.leg)
                    .is_some_and(|l| l.bridge.as_ref() == Some(bridge))
        })
    }

    /// The transfer completed: the consultation leg now talks to the client (a new conversation).
    fn promote_consultation(&mut self, uid: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        if !ch.consultation {
            return;
        }
        ch.consultation = false;
        ch.origin_hint = Some(LegOrigin::Transfer);
        self.after_join(uid, now, out);
    }

    /// Promotes the consultation legs of `primary`'s call that share its bridge.
    fn promote_consultations_in_bridge(&mut self, primary: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(bridge) = self.channels.get(primary).and_then(|c| c.bridge.clone()) else {
            return;
        };
        let Some(call) = self.calls.get(primary) else {
            return;
        };
        let legs: Vec<String> = call
            .channels
            .iter()
            .filter(|u| {
                self.channels
                    .get(*u)
                    .is_some_and(|c| c.consultation && c.bridge.as_ref() == Some(&bridge))
            })
            .cloned()
            .collect();
        for leg in legs {
            self.promote_consultation(&leg, now, out);
        }
    }

    /// The employee legs a transfer target stands for: itself, or the phones its Local pair dialled.
    fn target_legs(&self, target: &str) -> Vec<String> {
        let Some(ch) = self.channels.get(target) else {
            return Vec::new();
        };
        if ch.kind != EndpointKind::Local {
            return vec![target.to_owned()];
        }
        let partner = self.local_partner(target);
        let Some(call) = self.calls.get(&ch.call) else {
            return Vec::new();
        };
        call.channels
            .iter()
            .filter(|u| {
                self.channels.get(*u).is_some_and(|c| {
                    c.kind == EndpointKind::Internal
                        && c.dialed_by.is_some()
                        && (c.dialed_by == partner || c.dialed_by.as_deref() == Some(target))
                })
            })
            .cloned()
            .collect()
    }

    /// Is `uid` the `;2` half of a Local pair whose `;1` is a queue member (FreePBX `Local/<ext>@from-queue/n`)?
    fn is_queue_local(&self, uid: &str) -> bool {
        self.local_partner(uid)
            .and_then(|p| self.channels.get(&p))
            .is_some_and(|p| p.queue_member)
    }

    fn local_partner(&self, uid: &str) -> Option<String> {
        let (base, half) = self.channels.get(uid)?.local_pair.as_ref()?;
        let slots = self.local_pairs.get(base)?;
        let other = if *half == 1 { &slots[1] } else { &slots[0] };
        other.clone()
    }

    fn on_dial_end(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let caller = self.observe(message, &MAIN, false, now, out);
        let Some(dest) = self.observe(message, &DEST, false, now, out) else {
            return;
        };
        let status = message.get("DialStatus").unwrap_or("").trim();
        if status.eq_ignore_ascii_case("ANSWER") {
            // After a pickup the dial's "answered" leg is the picker: bring it into the dialling call.
            if let (Some(caller), Some(ch)) = (caller, self.channels.get(dest)) {
                let caller_call = self.channels.get(caller).map(|c| c.call.clone());
                if let Some(cc) = caller_call {
                    if cc != ch.call && self.is_older(&cc, &ch.call.clone()) {
                        self.move_channel(dest, &cc, now, out);
                    }
                }
            }
            if let Some(ch) = self.channels.get_mut(dest) {
                ch.up_at.get_or_insert(now);
                ch.dial_status = Some(status.to_owned());
            }
            self.leg_answered(dest, now, out);
            return;
        }
        if status.eq_ignore_ascii_case("CONTINUE") || status.eq_ignore_ascii_case("GOTO") {
            return;
        }
        let Some(ch) = self.channels.get_mut(dest) else {
            return;
        };
        ch.dial_status = Some(status.to_owned());
        let (cause, tech) = (ch.cause, ch.tech_cause);
        let key = ch.call.clone();
        if let Some(call) = self.calls.get_mut(&key) {
            if call.far_leg.as_deref() == Some(dest) || call.direction == Direction::Local {
                call.far_leg = Some(dest.to_owned());
                call.far_outcome = DialOutcome {
                    dial_status: Some(status.to_owned()),
                    cause,
                    tech_cause: tech,
                };
            }
        }
        self.end_leg_conv(&key, dest, &LegEnd::Hangup, now, out);
    }

    /// A leg was answered: an employee's ringing phone, or the far party of an employee's outgoing call.
    fn leg_answered(&mut self, uid: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let key = ch.call.clone();
        let kind = ch.kind;
        if ch.consultation {
            return;
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        match kind {
            EndpointKind::Internal => {
                let peer = call.peer_number().to_owned();
                if let Some(conv) = call.live_conv_mut(uid) {
                    if conv.answered.is_none() {
                        conv.answered = Some(now);
                        out.push(CallEvent::LegAnswered(leg_with_peer(&key, conv, &peer, now)));
                    }
                } else if !call.has_conv(uid) {
                    let origin = ch.origin_hint.or(call.next_origin).unwrap_or(LegOrigin::Dial);
                    let mut conv = new_conv(uid, Side::Callee, ch, origin, now);
                    conv.answered = Some(now);
                    out.push(CallEvent::LegAnswered(leg_with_peer(&key, &conv, &peer, now)));
                    call.convs.push(conv);
                }
                call.next_origin = None;
            }
            EndpointKind::Local => {}
            _ => {
                if call.far_leg.as_deref() == Some(uid) {
                    call.far_answered.get_or_insert(now);
                    let peer = call.peer_number().to_owned();
                    if let Some(conv) = call
                        .convs
                        .iter_mut()
                        .rev()
                        .find(|c| c.side == Side::Caller && c.is_ringing())
                    {
                        conv.answered = Some(now);
                        out.push(CallEvent::LegAnswered(leg_with_peer(&key, conv, &peer, now)));
                    }
                    call.next_origin = None;
                }
            }
        }
    }

    fn on_agent_called(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let caller = self.observe(message, &MAIN, true, now, out);
        let Some(dest) = self.observe(message, &DEST, true, now, out) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(dest) {
            ch.queue_member = true;
            ch.is_dial_dest = true;
            if ch.dialed_by.is_none() {
                ch.dialed_by = caller.map(str::to_owned);
            }
        }
        self.dialing(caller, dest, None, Some(LegOrigin::Queue), now, out);
    }

    fn on_agent_ring_no_answer(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        self.observe(message, &MAIN, false, now, out);
        let Some(member) = self.observe(message, &DEST, false, now, out) else {
            return;
        };
        // A Local member's phone is dialled by the pair's ;2 half: mark the whole chain.
        let mut marked = vec![member.to_owned()];
        if let Some(partner) = self.local_partner(member) {
            marked.push(partner);
        }
        if let Some(key) = self.channels.get(member).map(|c| c.call.clone()) {
            if let Some(call) = self.calls.get(&key) {
                for uid in &call.channels {
                    let dialed_by_marked = self
                        .channels
                        .get(uid)
                        .and_then(|c| c.dialed_by.as_ref())
                        .is_some_and(|d| marked.contains(d));
                    if dialed_by_marked && !marked.contains(uid) {
                        marked.push(uid.clone());
                    }
                }
            }
        }
        for uid in marked {
            if let Some(ch) = self.channels.get_mut(&uid) {
                ch.ring_no_answer = true;
            }
        }
    }

    // ----- bridges, hang-ups, moves ------------------------------------------------------------------------

    fn on_bridge_enter(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = self.observe(message, &MAIN, true, now, out) else {
            return;
        };
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        ch.bridge = Some(message.get("BridgeUniqueid").unwrap_or("").trim().to_owned());
        let up = ch.state == STATE_UP || ch.up_at.is_some();
        let kind = ch.kind;
        let hinted = ch.is_dial_dest || ch.origin_hint.is_some();
        let is_primary = ch.call == uid;
        if ch.consultation {
            // A consultation leg that meets the client's channel has been transferred to it.
            let bridge = ch.bridge.clone();
            let key = ch.call.clone();
            if self.channels.get(&key).is_some_and(|p| p.bridge == bridge) {
                self.promote_consultation(uid, now, out);
            }
            return;
        }
        if is_primary {
            // The client's channel joining a consultation leg's bridge completes the transfer too; it is the only
            // sign of it when the AttendedTransfer event came without its target (the consultation bridge was
            // already gone when Asterisk reported it).
            self.promote_consultations_in_bridge(uid, now, out);
        }
        if !up {
            return;
        }
        // A leg whose answer we did not see (lost DialEnd) is talking once it is bridged.
        match kind {
            EndpointKind::Internal if hinted && !is_primary => self.leg_answered(uid, now, out),
            EndpointKind::Trunk(_) => self.leg_answered(uid, now, out),
            _ => {}
        }
    }

    fn on_hangup(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = message.get("Uniqueid").map(str::trim) else {
            return;
        };
        if let Some(ch) = self.channels.get_mut(uid) {
            if let Some(cause) = parse_u16(message.get("Cause")) {
                if cause != 0 || ch.cause.is_none() {
                    ch.cause = Some(cause);
                }
            }
            if let Some(tech) = parse_u16(message.get("TechCause")).filter(|c| *c != 0) {
                ch.tech_cause = Some(tech);
            }
            self.remove_channel(uid, LegEnd::Hangup, now, out);
        }
    }

    /// Removes a channel from its call (hang-up, vanished); ends the call when it was the last one.
    fn remove_channel(&mut self, uid: &str, how: LegEnd, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let key = ch.call.clone();
        let (cause, tech, extra) = (ch.cause, ch.tech_cause, ch.extra.clone());
        if let Some(call) = self.calls.get_mut(&key) {
            if call.far_leg.as_deref() == Some(uid) {
                if cause.is_some() {
                    call.far_outcome.cause = cause;
                }
                if tech.is_some() {
                    call.far_outcome.tech_cause = tech;
                }
            }
            if call.key == uid {
                call.primary_gone = true;
                call.primary_extra = extra;
            }
        }
        self.end_leg_conv(&key, uid, &how, now, out);
        self.forget_channel(uid, &key, now);
        let empty = self.calls.get(&key).is_some_and(|c| c.channels.is_empty());
        if empty {
            let reason = match how {
                LegEnd::Vanished => CallEndReason::Vanished,
                LegEnd::Expired => CallEndReason::Expired { idle_secs: 0 },
                _ => CallEndReason::Hangup,
            };
            self.end_call(&key, reason, now, out);
        }
    }

    fn forget_channel(&mut self, uid: &str, key: &str, now: Timestamp) {
        if let Some(ch) = self.channels.remove(uid) {
            if let Some((base, _)) = &ch.local_pair {
                if let Some(slots) = self.local_pairs.get_mut(base) {
                    for slot in slots.iter_mut() {
                        if slot.as_deref() == Some(uid) {
                            *slot = None;
                        }
                    }
                    if slots.iter().all(Option::is_none) {
                        self.local_pairs.remove(base);
                    }
                }
            }
        }
        self.dead_channels.insert(uid, key, now);
        if let Some(call) = self.calls.get_mut(key) {
            call.channels.retain(|c| c != uid);
        }
    }

    /// Ends the live conversation of leg `uid` in call `key`, if any.
    fn end_leg_conv(&mut self, key: &str, uid: &str, how: &LegEnd, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let Some(index) = call.convs.iter().rposition(|c| c.leg == uid && c.is_live()) else {
            // A conversation ended before its channel did (a completed attended transfer): it still gets the
            // channel's last CEL extra, as it would have at the channel's end.
            let extra = self.channels.get(uid).map(|c| c.extra.clone());
            if let (Some(extra), Some(call)) = (extra, self.calls.get_mut(key)) {
                let transferred = Some(ConversationEndReason::Transferred);
                if let Some(conv) = call
                    .convs
                    .iter_mut()
                    .rev()
                    .find(|c| c.leg == uid && c.end_hint == transferred)
                {
                    conv.extra = extra;
                }
            }
            return;
        };
        let conv = &call.convs[index];
        let ch = self.channels.get(uid);
        let event = if conv.answered.is_none() {
            let reason = match how {
                LegEnd::Moved(to) => StopReason::MovedToCall { call: to.clone() },
                LegEnd::Vanished => StopReason::Vanished,
                LegEnd::Expired => StopReason::Expired,
                LegEnd::Hangup | LegEnd::CallOver => stop_reason(&self.channels, call, conv, ch),
            };
            CallEvent::LegStoppedRinging {
                call: key.to_owned(),
                conversation: uid.to_owned(),
                time: now,
                reason,
            }
        } else {
            let reason = match how {
                LegEnd::Moved(to) => ConversationEndReason::MovedToCall { call: to.clone() },
                LegEnd::Vanished => ConversationEndReason::Vanished,
                LegEnd::Expired => ConversationEndReason::Expired,
                LegEnd::Hangup | LegEnd::CallOver => conv.end_hint.clone().unwrap_or(ConversationEndReason::HungUp {
                    cause: ch.and_then(|c| c.cause),
                }),
            };
            CallEvent::ConversationEnded {
                call: key.to_owned(),
                conversation: uid.to_owned(),
                time: now,
                talk_seconds: conv.answered.map_or(0, |a| now.secs_since(a)),
                reason,
            }
        };
        let extra = ch.map(|c| c.extra.clone());
        if let Some(call) = self.calls.get_mut(key) {
            let conv = &mut call.convs[index];
            conv.ended = Some(now);
            // An ended conversation is not on hold any more (a parked client stays parked until it leaves the lot).
            conv.held = false;
            if let Some(extra) = extra {
                conv.extra = extra;
            }
        }
        out.push(event);
    }

    /// Moves a channel into the (older) call `to` after a linkedid merge.
    fn move_channel(&mut self, uid: &str, to: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        if self.ended_calls.contains(to) {
            return;
        }
        let Some(from) = self.channels.get(uid).map(|c| c.call.clone()) else {
            return;
        };
        if from == to {
            return;
        }
        self.end_leg_conv(&from, uid, &LegEnd::Moved(to.to_owned()), now, out);
        if let Some(call) = self.calls.get_mut(&from) {
            call.channels.retain(|c| c != uid);
        }
        let call = self.calls.entry(to.to_owned()).or_insert_with(|| Call::new(to, now));
        call.channels.push(uid.to_owned());
        call.last_event = call.last_event.max(now);
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.call = to.to_owned();
        }
        self.after_join(uid, now, out);
        let empty = self.calls.get(&from).is_some_and(|c| c.channels.is_empty());
        if empty {
            self.end_call(&from, CallEndReason::Merged { into: to.to_owned() }, now, out);
        }
    }

    /// An employee's channel that joins a call from another one (transfer target, picker, retriever) is a new
    /// conversation there.
    fn after_join(&mut self, uid: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        if ch.kind != EndpointKind::Internal {
            return;
        }
        let key = ch.call.clone();
        let up = ch.state == STATE_UP || ch.up_at.is_some();
        let ringing = ch.is_dial_dest && matches!(ch.state, STATE_RING | STATE_RINGING);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        // One conversation per leg and call: a leg that already had one here does not start another.
        if call.has_conv(uid) || call.key == uid {
            return;
        }
        let origin = ch.origin_hint.unwrap_or(LegOrigin::Transfer);
        if up {
            let mut conv = new_conv(uid, Side::Callee, ch, origin, now);
            conv.answered = Some(now);
            out.push(CallEvent::LegAnswered(leg_of(call, &conv, now)));
            call.convs.push(conv);
            call.next_origin = None;
        } else if ringing {
            let conv = new_conv(uid, Side::Callee, ch, origin, now);
            out.push(CallEvent::LegRinging(leg_of(call, &conv, now)));
            call.convs.push(conv);
        }
    }

    /// Closes a call: ends what is still live in it, forgets its channels and emits `CallEnded` (once per key).
    fn end_call(&mut self, key: &str, reason: CallEndReason, now: Timestamp, out: &mut Vec<CallEvent>) {
        if !self.calls.contains_key(key) {
            return;
        }
        let how = match reason {
            CallEndReason::Expired { .. } => LegEnd::Expired,
            CallEndReason::Vanished => LegEnd::Vanished,
            _ => LegEnd::CallOver,
        };
        let legs: Vec<String> = self.calls[key]
            .convs
            .iter()
            .filter(|c| c.is_live())
            .map(|c| c.leg.clone())
            .collect();
        for leg in legs {
            self.end_leg_conv(key, &leg, &how, now, out);
        }
        let leftovers: Vec<String> = self.calls[key].channels.clone();
        for uid in leftovers {
            if let Some(ch) = self.channels.get(&uid) {
                if uid == key {
                    let extra = ch.extra.clone();
                    if let Some(call) = self.calls.get_mut(key) {
                        call.primary_extra = extra;
                    }
                }
            }
            self.forget_channel(&uid, key, now);
        }
        let Some(call) = self.calls.remove(key) else {
            return;
        };
        self.ended_calls.insert(key, key, now);
        let call_full = build_call_full(&self.cfg, &self.channels, &call, Some(now));
        out.push(CallEvent::CallEnded {
            call: key.to_owned(),
            time: now,
            reason,
            call_full: Box::new(call_full),
        });
    }

    // ----- features ---------------------------------------------------------------------------------------

    fn on_hold(&mut self, message: &Message, hold: bool, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = self.observe(message, &MAIN, false, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(uid).map(|c| c.call.clone()) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let leg = match call.convs.iter().rev().find(|c| c.leg == uid && c.is_live()) {
            Some(c) => c.leg.clone(),
            None => match call.active_conv() {
                Some(c) => c.leg.clone(),
                None => return,
            },
        };
        if let Some(conv) = call.live_conv_mut(&leg) {
            if conv.held != hold {
                conv.held = hold;
                let (call, conversation) = (key, leg);
                out.push(if hold {
                    CallEvent::Hold {
                        call,
                        conversation,
                        time: now,
                    }
                } else {
                    CallEvent::Unhold {
                        call,
                        conversation,
                        time: now,
                    }
                });
            }
        }
    }

    fn on_var_set(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        // VarSet is the chattiest event; only the recording path matters here.
        if !message
            .get("Variable")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("MIXMONITOR_FILENAME"))
        {
            return;
        }
        let Some(uid) = self.observe(message, &MAIN, true, now, out) else {
            return;
        };
        let path = message.get_unescaped("Value").unwrap_or_default();
        let path = path.trim();
        if path.is_empty() {
            return;
        }
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let key = ch.call.clone();
        let name = ch.name.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.record == path {
            return;
        }
        call.record = path.to_owned();
        let conversation = call
            .convs
            .iter()
            .rev()
            .find(|c| c.leg == uid && c.is_live())
            .or_else(|| call.active_conv())
            .map(|c| c.leg.clone())
            .unwrap_or_default();
        out.push(CallEvent::RecordingStarted {
            call: key,
            conversation,
            channel: name,
            time: now,
            path: path.to_owned(),
        });
    }

    fn on_pickup(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let picker = self.observe(message, &MAIN, true, now, out);
        let target = self.observe(message, &TARGET, false, now, out);
        let picker_endpoint = picker
            .and_then(|p| self.channels.get(p))
            .map(|c| c.endpoint.clone())
            .unwrap_or_default();
        let mut target_call = message.get(TARGET.linkedid).map(|s| s.trim().to_owned());
        if let Some(target) = target {
            if let Some(ch) = self.channels.get_mut(target) {
                ch.picked_up_by = Some(picker_endpoint);
                target_call = Some(ch.call.clone());
            }
            if let Some(key) = &target_call {
                self.end_leg_conv(key, target, &LegEnd::Hangup, now, out);
            }
        }
        let Some(picker) = picker else {
            return;
        };
        let Some(ch) = self.channels.get_mut(picker) else {
            return;
        };
        ch.origin_hint = Some(LegOrigin::Pickup);
        ch.state = STATE_UP;
        ch.up_at.get_or_insert(now);
        let current = ch.call.clone();
        let Some(target_call) = target_call.filter(|t| !t.is_empty()) else {
            return;
        };
        if current != target_call && self.is_older(&target_call, &current) {
            self.move_channel(picker, &target_call, now, out);
        } else if current == target_call {
            if let Some(conv) = self.calls.get_mut(&current).and_then(|c| c.live_conv_mut(picker)) {
                // The merge was seen first (generic origin); the Pickup event names it.
                conv.origin = LegOrigin::Pickup;
            } else {
                self.after_join(picker, now, out);
            }
        }
    }

    fn on_parked(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(parkee) = self.observe(message, &PARKEE, true, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(parkee).map(|c| c.call.clone()) else {
            return;
        };
        let parker_endpoint = endpoint_of_dial_string(message.get("ParkerDialString").unwrap_or(""));
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "parked") {
            return;
        }
        call.next_origin = None;
        let leg = call
            .convs
            .iter()
            .rev()
            .find(|c| c.is_live() && !parker_endpoint.is_empty() && c.endpoint == parker_endpoint)
            .or_else(|| call.active_conv())
            .map(|c| c.leg.clone());
        let mut talking = false;
        if let Some(leg) = &leg {
            if let Some(conv) = call.live_conv_mut(leg) {
                conv.parked = true;
                conv.end_hint = Some(ConversationEndReason::Parked);
                talking = conv.answered.is_some();
            }
        }
        out.push(CallEvent::Parked {
            call: key.clone(),
            conversation: leg.clone().unwrap_or_default(),
            time: now,
            lot: message.get("Parkinglot").unwrap_or("").trim().to_owned(),
            space: message.get("ParkingSpace").unwrap_or("").trim().to_owned(),
        });
        // The client no longer talks to the parker, whether or not the parker's phone stays off-hook.
        if let (Some(leg), true) = (leg, talking) {
            self.end_leg_conv(&key, &leg, &LegEnd::CallOver, now, out);
        }
    }

    /// Clears the parked flags of a call; returns the conversation that had parked it.
    fn clear_parked(call: &mut Call) -> String {
        let mut parker = String::new();
        for conv in call.convs.iter_mut().filter(|c| c.parked) {
            conv.parked = false;
            parker = conv.leg.clone();
        }
        parker
    }

    fn on_unparked(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(parkee) = self.observe(message, &PARKEE, false, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(parkee).map(|c| c.call.clone()) else {
            return;
        };
        if !self
            .calls
            .get_mut(&key)
            .is_some_and(|c| c.first_report(now, "unparked"))
        {
            return;
        }
        let retriever = self.observe(message, &RETRIEVER, true, now, out);
        let parker = self.calls.get_mut(&key).map(Self::clear_parked).unwrap_or_default();
        out.push(CallEvent::Unparked {
            call: key.clone(),
            conversation: parker,
            time: now,
            reason: UnparkReason::Retrieved {
                conversation: retriever.unwrap_or("").to_owned(),
            },
        });
        let Some(retriever) = retriever else {
            return;
        };
        let Some(ch) = self.channels.get_mut(retriever) else {
            return;
        };
        ch.origin_hint = Some(LegOrigin::ParkRetrieval);
        ch.state = STATE_UP;
        ch.up_at.get_or_insert(now);
        let current = ch.call.clone();
        if current != key && self.is_older(&key, &current) {
            self.move_channel(retriever, &key, now, out);
        } else if current == key {
            self.after_join(retriever, now, out);
        }
    }

    fn on_park_ended(&mut self, message: &Message, reason: UnparkReason, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(parkee) = self.observe(message, &PARKEE, false, now, out) else {
            return;
        };
        let Some(key) = self.channels.get(parkee).map(|c| c.call.clone()) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "unparked") {
            return;
        }
        let parker = Self::clear_parked(call);
        out.push(CallEvent::Unparked {
            call: key,
            conversation: parker,
            time: now,
            reason,
        });
    }

    fn mark_transferred(call: &mut Call, leg: Option<&str>) -> String {
        let leg = leg
            .filter(|l| call.has_conv(l))
            .map(str::to_owned)
            .or_else(|| call.active_conv().map(|c| c.leg.clone()));
        if let Some(leg) = &leg {
            if let Some(conv) = call.live_conv_mut(leg) {
                if conv.end_hint != Some(ConversationEndReason::Parked) {
                    conv.end_hint = Some(ConversationEndReason::Transferred);
                }
            }
        }
        leg.unwrap_or_default()
    }

    fn on_blind_transfer(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        if !message
            .get("Result")
            .is_some_and(|r| r.trim().eq_ignore_ascii_case("Success"))
        {
            return;
        }
        let transferer = self.observe(message, &TRANSFERER, false, now, out);
        let transferee = self.observe(message, &TRANSFEREE, false, now, out);
        let Some(key) = transferee
            .or(transferer)
            .and_then(|u| self.channels.get(u))
            .map(|c| c.call.clone())
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "blind_transfer") {
            return;
        }
        let conversation = Self::mark_transferred(call, transferer);
        call.next_origin = Some(LegOrigin::Transfer);
        out.push(CallEvent::Transferred {
            call: key,
            conversation,
            time: now,
            kind: TransferKind::Blind,
            target: message.get("Extension").unwrap_or("").trim().to_owned(),
        });
    }

    fn on_attended_transfer(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        if !message
            .get("Result")
            .is_some_and(|r| r.trim().eq_ignore_ascii_case("Success"))
        {
            return;
        }
        let orig = self.observe(message, &ORIG_TRANSFERER, false, now, out);
        let second = self.observe(message, &SECOND_TRANSFERER, false, now, out);
        let transferee = self.observe(message, &TRANSFEREE, false, now, out);
        let target = self.observe(message, &TRANSFER_TARGET, false, now, out);
        let Some(key) = transferee
            .or(orig)
            .or(second)
            .and_then(|u| self.channels.get(u))
            .map(|c| c.call.clone())
        else {
            return;
        };
        let legs = target.map(|t| self.target_legs(t)).unwrap_or_default();
        let target_number = match legs.first().and_then(|t| self.channels.get(t)) {
            Some(ch) if ch.kind == EndpointKind::Internal => ch.endpoint.clone(),
            _ => message
                .get("TransferTargetCallerIDNum")
                .map(clean_number)
                .unwrap_or("")
                .to_owned(),
        };
        for leg in &legs {
            if let Some(ch) = self.channels.get_mut(leg) {
                ch.origin_hint.get_or_insert(LegOrigin::Transfer);
            }
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if !call.first_report(now, "attended_transfer") {
            return;
        }
        let leg = orig.filter(|o| call.has_conv(o)).or(second);
        let conversation = Self::mark_transferred(call, leg);
        out.push(CallEvent::Transferred {
            call: key.clone(),
            conversation: conversation.clone(),
            time: now,
            kind: TransferKind::Attended,
            target: target_number,
        });
        // The transferer's talk ends with the completed transfer, before the target's starts (its channel may
        // hang up only after the target has joined the client).
        if !conversation.is_empty() {
            self.end_leg_conv(&key, &conversation, &LegEnd::Hangup, now, out);
        }
        for leg in legs {
            self.promote_consultation(&leg, now, out);
        }
    }

    fn on_cel(&mut self, message: &Message, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(uid) = message.get("UniqueID").map(str::trim) else {
            return;
        };
        let extra = message.get("Extra").and_then(parse_extra);
        if self.channels.contains_key(uid) {
            // The linkedid a CEL event shows is as good as any other event's (the order between CEL and
            // channel events is not fixed).
            self.observe(message, &MAIN, false, now, out);
            if let (Some(extra), Some(ch)) = (extra, self.channels.get_mut(uid)) {
                ch.extra = extra;
            }
            return;
        }
        // CEL about a channel that already hung up (CEL HANGUP may follow the AMI Hangup): keep its extra if
        // its call is still live.
        let Some(extra) = extra else {
            return;
        };
        let Some(key) = self.dead_channels.call_of(uid).map(str::to_owned) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&key) {
            if call.key == uid {
                call.primary_extra = extra.clone();
            }
            if let Some(conv) = call.convs.iter_mut().rev().find(|c| c.leg == uid) {
                conv.extra = extra;
            }
        }
    }

    // ----- resync ---------------------------------------------------------------------------------------------

    fn derive_after_resync(&mut self, key: &str, now: Timestamp, out: &mut Vec<CallEvent>) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let mut uids = call.channels.clone();
        uids.sort();
        let has_trunk_up = uids.iter().any(|u| {
            self.channels
                .get(u)
                .is_some_and(|c| matches!(c.kind, EndpointKind::Trunk(_)) && c.state == STATE_UP)
        });
        let trunk = uids.iter().find_map(|u| match self.channels.get(u).map(|c| c.kind) {
            Some(EndpointKind::Trunk(i)) => Some((u.clone(), i)),
            _ => None,
        });
        let internal_others: Vec<String> = uids
            .iter()
            .filter(|u| *u != key && self.channels.get(*u).is_some_and(|c| c.kind == EndpointKind::Internal))
            .cloned()
            .collect();
        let primary_kind = call.primary_kind;
        let direction = call.direction;
        if direction == Direction::Unknown && primary_kind == Some(EndpointKind::Internal) {
            if let Some((far, i)) = trunk {
                let far_number = self
                    .channels
                    .get(&far)
                    .map(|c| c.caller_num.clone())
                    .unwrap_or_default();
                if let Some(call) = self.calls.get_mut(key) {
                    call.direction = Direction::Outgoing;
                    call.trunk = Some(i);
                    call.far_leg = Some(far);
                    if call.to_raw.is_empty() {
                        call.to_raw = far_number;
                    }
                    if has_trunk_up {
                        call.far_answered.get_or_insert(now);
                    }
                }
                if let Some(ch) = self.channels.get(key) {
                    let mut conv = new_conv(key, Side::Caller, ch, LegOrigin::Resync, now);
                    if let Some(call) = self.calls.get_mut(key) {
                        if !call.has_conv(key) {
                            if has_trunk_up {
                                conv.answered = Some(now);
                                out.push(CallEvent::LegAnswered(leg_of(call, &conv, now)));
                            } else {
                                out.push(CallEvent::LegDialing(leg_of(call, &conv, now)));
                            }
                            call.convs.push(conv);
                        }
                    }
                }
            } else if !internal_others.is_empty() {
                if let Some(call) = self.calls.get_mut(key) {
                    call.direction = Direction::Local;
                }
            }
        }
        for uid in internal_others {
            let Some(ch) = self.channels.get(&uid) else {
                continue;
            };
            let up = ch.state == STATE_UP;
            let ringing = matches!(ch.state, STATE_RING | STATE_RINGING);
            // When it was answered, as far as anyone can tell: Asterisk's answer instant if the shell asked.
            let answered_at = ch.up_at.unwrap_or(now).min(now);
            let Some(call) = self.calls.get_mut(key) else {
                return;
            };
            let peer = call.peer_number().to_owned();
            let known = call.has_conv(&uid);
            match call.live_conv_mut(&uid) {
                Some(conv) if up && conv.answered.is_none() => {
                    conv.answered = Some(answered_at.max(conv.start));
                    out.push(CallEvent::LegAnswered(leg_with_peer(key, conv, &peer, now)));
                }
                Some(_) => {}
                None if !known && (up || ringing) => {
                    let mut conv = new_conv(&uid, Side::Callee, ch, LegOrigin::Resync, now);
                    if up {
                        conv.start = conv.start.min(answered_at);
                        conv.answered = Some(answered_at);
                        out.push(CallEvent::LegAnswered(leg_of(call, &conv, now)));
                    } else {
                        out.push(CallEvent::LegRinging(leg_of(call, &conv, now)));
                    }
                    call.convs.push(conv);
                }
                None => {}
            }
        }
    }
}

fn new_conv(uid: &str, side: Side, ch: &Chan, origin: LegOrigin, now: Timestamp) -> Conv {
    Conv {
        leg: uid.to_owned(),
        side,
        endpoint: ch.endpoint.clone(),
        number: ch.endpoint.clone(),
        channel_name: ch.name.clone(),
        origin,
        start: now,
        answered: None,
        ended: None,
        held: false,
        parked: false,
        end_hint: None,
        extra: Map::new(),
    }
}

fn leg_of(call: &Call, conv: &Conv, now: Timestamp) -> Leg {
    leg_with_peer(&call.key, conv, call.peer_number(), now)
}

fn leg_with_peer(key: &str, conv: &Conv, peer: &str, now: Timestamp) -> Leg {
    Leg {
        call: key.to_owned(),
        conversation: conv.leg.clone(),
        time: now,
        channel: conv.channel_name.clone(),
        endpoint: conv.endpoint.clone(),
        number: conv.number.clone(),
        peer_number: peer.to_owned(),
        origin: conv.origin,
    }
}

/// Why a ringing leg stopped, from what the call and the leg have shown so far.
fn stop_reason(channels: &HashMap<String, Chan>, call: &Call, conv: &Conv, ch: Option<&Chan>) -> StopReason {
    if conv.side == Side::Caller {
        return match status::failed_dial_status(&call.far_outcome) {
            status::BUSY => StopReason::Busy,
            status::DECLINED => StopReason::Declined,
            status::CANCELLED => StopReason::CallerGone,
            status::MISSED => {
                if call.far_outcome.dial_status.is_none() {
                    StopReason::CallerGone
                } else {
                    StopReason::Timeout
                }
            }
            status::UNAVAILABLE | status::ROUTE_UNAVAILABLE | status::NOT_FOUND | status::ADDRESS_INCOMPLETE => {
                StopReason::Unavailable
            }
            _ => StopReason::Cancelled,
        };
    }
    if let Some(by) = ch.and_then(|c| c.picked_up_by.clone()) {
        return StopReason::PickedUp { by };
    }
    let answered_elsewhere = call
        .convs
        .iter()
        .any(|c| c.leg != conv.leg && c.answered.is_some_and(|a| a >= conv.start));
    if answered_elsewhere || ch.and_then(|c| c.cause) == Some(26) {
        return StopReason::AnsweredElsewhere;
    }
    let Some(ch) = ch else {
        return StopReason::Cancelled;
    };
    if ch.ring_no_answer {
        return StopReason::Timeout;
    }
    let dialer_gone = ch.dialed_by.as_ref().is_some_and(|d| match channels.get(d) {
        Some(dialer) => dialer.kind != EndpointKind::Local && dialer.hangup_requested,
        None => false,
    });
    if call.abandoned || (call.primary_gone && call.key != conv.leg) || dialer_gone {
        return StopReason::CallerGone;
    }
    let status = ch.dial_status.as_deref().unwrap_or("");
    let by_cause = |cause: Option<u16>| match cause {
        Some(17) => StopReason::Busy,
        Some(21) => StopReason::Declined,
        Some(1 | 3 | 20 | 22 | 27 | 28 | 34 | 38 | 41 | 42 | 44) => StopReason::Unavailable,
        _ => StopReason::Timeout,
    };
    if status.eq_ignore_ascii_case("BUSY") {
        StopReason::Busy
    } else if status.eq_ignore_ascii_case("CHANUNAVAIL") || status.eq_ignore_ascii_case("CONGESTION") {
        StopReason::Unavailable
    } else if status.eq_ignore_ascii_case("CANCEL") {
        StopReason::Cancelled
    } else {
        by_cause(ch.cause)
    }
}

/// Builds `call_full`. `ended` is the end instant for a call being closed.
fn build_call_full(
    cfg: &Compiled,
    channels: &HashMap<String, Chan>,
    call: &Call,
    ended: Option<Timestamp>,
) -> CallFull {
    let numbers = &cfg.numbers;
    let clock = &cfg.clock;
    let trunk_number = call
        .trunk
        .and_then(|i| cfg.trunks.get(i))
        .map(|t| t.number.trim())
        .filter(|n| !n.is_empty())
        .unwrap_or(if call.direction == Direction::Incoming {
            call.trunk_exten.as_str()
        } else {
            ""
        });
    let trunk = numbers.normalize(trunk_number);
    let any_answered = call.convs.iter().any(|c| c.answered.is_some());
    let main_answer = if call.direction == Direction::Outgoing {
        call.far_answered
            .or_else(|| call.convs.iter().filter_map(|c| c.answered).min())
            .filter(|_| call.far_answered.is_some())
    } else {
        call.convs.iter().filter_map(|c| c.answered).min()
    };
    let main_state = if ended.is_some() {
        CallState::Ended
    } else if main_answer.is_some() {
        CallState::Talking
    } else {
        CallState::Ringing
    };
    let primary_extra = channels
        .get(&call.key)
        .map(|c| c.extra.clone())
        .unwrap_or_else(|| call.primary_extra.clone());
    let channel = ChannelData {
        answer_time: clock.format(main_answer),
        end_time: clock.format(ended),
        extra: primary_extra,
        from: numbers.normalize(&call.from_raw),
        id: call.key.clone(),
        is_primary: true,
        name: call.primary_name.clone(),
        start_time: clock.format(Some(call.start)),
        state: main_state,
        to: numbers.normalize(&call.to_raw),
        trunk: trunk.clone(),
        direction: call.direction,
        was_answered: main_answer.is_some(),
    };
    let mut conversations = BTreeMap::new();
    for conv in &call.convs {
        let (from, to) = match call.direction {
            Direction::Outgoing => (conv.number.as_str(), call.to_raw.as_str()),
            _ => (call.from_raw.as_str(), conv.number.as_str()),
        };
        let state = if conv.ended.is_some() {
            CallState::Ended
        } else if conv.answered.is_some() {
            CallState::Talking
        } else {
            CallState::Ringing
        };
        let extra = channels
            .get(&conv.leg)
            .filter(|c| c.call == call.key && conv.is_live())
            .map(|c| c.extra.clone())
            .unwrap_or_else(|| conv.extra.clone());
        conversations.insert(
            conv.leg.clone(),
            Conversation {
                channel: ChannelData {
                    answer_time: clock.format(conv.answered),
                    end_time: clock.format(conv.ended),
                    extra,
                    from: numbers.normalize(from),
                    id: conv.leg.clone(),
                    is_primary: conv.leg == call.key,
                    name: conv.channel_name.clone(),
                    start_time: clock.format(Some(conv.start)),
                    state,
                    to: numbers.normalize(to),
                    trunk: trunk.clone(),
                    direction: call.direction,
                    was_answered: conv.answered.is_some(),
                },
                is_parked: conv.parked || conv.held,
                user: None,
            },
        );
    }
    let result = match ended {
        None => status::LIVE,
        Some(_) => match call.direction {
            Direction::Outgoing if call.far_answered.is_some() => status::TALKED,
            Direction::Outgoing => status::failed_dial_status(&call.far_outcome),
            _ if any_answered => status::TALKED,
            Direction::Local => status::failed_dial_status(&call.far_outcome),
            _ => status::MISSED,
        },
    };
    CallFull {
        active_conversation_id: call.active_conv().map(|c| c.leg.clone()).unwrap_or_default(),
        channel,
        conversations,
        deal: None,
        entity: None,
        is_ivr: ended.is_some() && call.direction == Direction::Incoming && call.convs.is_empty(),
        record: call.record.clone(),
        registration: None,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_parse_what_asterisk_writes() {
        assert_eq!(linkedid_age("1700000000.12"), Some((1_700_000_000, 12)));
        assert_eq!(linkedid_age("pbx-1-1700000000.12"), Some((1_700_000_000, 12)));
        assert_eq!(linkedid_age("bitrix-call-id"), None);
        assert!(linkedid_age("1700000000.9") < linkedid_age("1700000000.10"));
        assert_eq!(dialed_number("9001234567@carrier").as_deref(), Some("9001234567"));
        assert_eq!(
            dialed_number("carrier/sip:+79001234567@10.0.0.1:5060").as_deref(),
            Some("+79001234567")
        );
        assert_eq!(dialed_number("carrier"), None);
        assert_eq!(dialed_number("101"), Some("101".into()));
        assert_eq!(endpoint_of_dial_string("PJSIP/101"), "101");
        assert_eq!(endpoint_of_dial_string("PJSIP/101&PJSIP/102"), "101");
        assert_eq!(parse_duration("01:02:03"), Some(3723));
        assert_eq!(parse_duration("42"), Some(42));
        assert_eq!(parse_duration("x"), None);
        assert!(parse_extra("{\"hangupcause\":16}").is_some());
        assert!(parse_extra("{}").is_none());
        assert!(parse_extra("not json").is_none());
    }
}
