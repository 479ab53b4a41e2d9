//! The state machine: channels, calls, conversations. The model lives here; each concern has its file:
//! observing channels (`observe`), dialling and answers (`dial`), bridges, hang-ups and moves between calls
//! (`channels`), transfers (`transfer`), park, pickup and hold (`park`), recordings and CEL extras (`extras`),
//! the resync after a reconnect (`resync`), and the `call_full` builder (`call_full`).

mod call_full;
mod channels;
mod dial;
mod extras;
mod observe;
mod park;
mod parse;
mod resync;
mod tombstones;
mod transfer;

use std::collections::{BTreeMap, HashMap, HashSet};

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

use self::call_full::*;
use self::parse::*;
pub use self::resync::{RESYNC_ANSWER_TIME, RESYNC_DIALED_NUMBER};
pub use self::tombstones::{RememberedKeys, REMEMBERED_KEYS_CAP};

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
    /// Rung by an originate's own Local pair to place the call (the employee's call-back of click-to-call): the
    /// employee is the caller, not a rung conversation.
    originate_leg: bool,
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
    /// The channel that placed an originate-based call: the originate's leg that answered (see
    /// [`Chan::originate_leg`]).
    originator: Option<String>,
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
            originator: None,
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

/// Who is behind a dialling channel (see [`Tracker::party_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Party {
    /// A phone or trunk channel (uniqueid).
    Endpoint(String),
    /// The Local pair of an AMI `Originate`, ringing the originate's own leg.
    OriginateLeg,
    /// An originate's `;1` dialling before its own leg answered (the leg it rang first was no employee).
    Originate,
    Unknown,
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
    dead_channels: RememberedKeys,
    ended_calls: RememberedKeys,
    /// The latest instant seen (events' timestamps, `now` arguments); used for events without a timestamp.
    clock: Timestamp,
}

impl Tracker {
    /// Builds a tracker; fails only on invalid settings (a bad pattern or offset).
    pub fn new(config: TrackerConfig) -> Result<Self, Error> {
        Ok(Self {
            cfg: Compiled::new(&config)?,
            channels: HashMap::new(),
            calls: HashMap::new(),
            local_pairs: HashMap::new(),
            dead_channels: RememberedKeys::new(REMEMBERED_KEYS_CAP),
            ended_calls: RememberedKeys::new(REMEMBERED_KEYS_CAP),
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
        self.dead_channels.release_spare_capacity();
        self.ended_calls.release_spare_capacity();
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

    /// Keys remembered so that late events are ignored: hung-up channels and ended calls, each forgotten after
    /// `forget_after_secs`, and at most [`REMEMBERED_KEYS_CAP`] of each kind.
    pub fn remembered_keys(&self) -> usize {
        self.dead_channels.len() + self.ended_calls.len()
    }
}
