//! Call events: what the tracker tells the engine. Each carries the call key (the linkedid the call is known by)
//! and, for employee legs, the conversation id (the leg's uniqueid).

use serde::{Deserialize, Serialize};

use crate::model::CallFull;
use crate::time::Timestamp;

/// Something that happened to a call. Journaled as JSON; read back (a call planned again from the journal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CallEvent {
    /// An employee's phone started ringing.
    LegRinging(Leg),
    /// An employee started an outgoing call; the other party's phone is ringing.
    LegDialing(Leg),
    /// A leg stopped ringing without being answered here.
    LegStoppedRinging {
        call: String,
        conversation: String,
        time: Timestamp,
        reason: StopReason,
    },
    /// A conversation began: the employee answered, the client answered an outgoing call, or the employee took
    /// the client over (pickup, park retrieval, transfer).
    LegAnswered(Leg),
    /// A conversation that was talking ended.
    ConversationEnded {
        call: String,
        conversation: String,
        time: Timestamp,
        /// Seconds from answer to end.
        talk_seconds: u64,
        reason: ConversationEndReason,
    },
    /// An employee transferred the call. `conversation` is the transferring employee's (empty if unknown);
    /// `target` is the extension (blind) or the target's number (attended).
    Transferred {
        call: String,
        conversation: String,
        time: Timestamp,
        kind: TransferKind,
        target: String,
    },
    /// The client was parked; `conversation` is the one that parked it (empty if unknown).
    Parked {
        call: String,
        conversation: String,
        time: Timestamp,
        lot: String,
        space: String,
    },
    /// The client left the parking lot.
    Unparked {
        call: String,
        conversation: String,
        time: Timestamp,
        reason: UnparkReason,
    },
    Hold {
        call: String,
        conversation: String,
        time: Timestamp,
    },
    Unhold {
        call: String,
        conversation: String,
        time: Timestamp,
    },
    /// MixMonitor started writing `path`; `conversation` is empty when the recording is not tied to an
    /// employee's leg (e.g. started on the trunk channel before anyone rang).
    RecordingStarted {
        call: String,
        conversation: String,
        channel: String,
        time: Timestamp,
        path: String,
    },
    /// The call is over; emitted exactly once per call key, with the final `call_full`.
    CallEnded {
        call: String,
        time: Timestamp,
        reason: CallEndReason,
        call_full: Box<CallFull>,
    },
}

/// An employee leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub call: String,
    pub conversation: String,
    pub time: Timestamp,
    /// The channel name (`PJSIP/101-0000000a`).
    pub channel: String,
    /// The endpoint (`101`).
    pub endpoint: String,
    /// The employee's internal number.
    pub number: String,
    /// The other party's number as the PBX reported it.
    pub peer_number: String,
    pub origin: LegOrigin,
}

/// How a leg came into the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegOrigin {
    /// Dialled directly (Dial, ring group, follow-me) or the employee's own outgoing call.
    Dial,
    /// Rung as a queue member.
    Queue,
    /// Reached through a blind or attended transfer.
    Transfer,
    /// Picked the call up from another ringing phone.
    Pickup,
    /// Retrieved the call from a parking lot.
    ParkRetrieval,
    /// Found already in progress when live state was rebuilt after a reconnect.
    Resync,
    /// An incoming call forwarded out through a trunk (follow-me, a ring group's outside number, call
    /// forwarding): the leg's number is the outside phone rung, typically an employee's mobile.
    Forward,
}

/// Why a leg stopped ringing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopReason {
    /// Another leg of the call was answered.
    AnsweredElsewhere,
    /// Another phone picked the call up.
    PickedUp {
        by: String,
    },
    /// Rang until the dial or queue timeout.
    Timeout,
    /// The calling party hung up (for an outgoing call: the employee gave up).
    CallerGone,
    Busy,
    Declined,
    /// The phone or route could not be reached.
    Unavailable,
    /// The attempt was cancelled by the PBX for no reason the events name.
    Cancelled,
    /// The leg went over to another call (linkedid merge).
    MovedToCall {
        call: String,
    },
    /// The channel was gone when state was rebuilt after a reconnect.
    Vanished,
    /// The call was closed for lack of events.
    Expired,
}

/// Why a conversation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConversationEndReason {
    /// The employee's leg hung up (`cause` = Q.850 hang-up cause if reported).
    HungUp { cause: Option<u16> },
    /// The employee transferred the client.
    Transferred,
    /// The employee parked the client.
    Parked,
    /// The leg went over to another call (linkedid merge).
    MovedToCall { call: String },
    /// The channel was gone when state was rebuilt after a reconnect.
    Vanished,
    /// The call was closed for lack of events.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    Blind,
    Attended,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnparkReason {
    /// Taken by an employee; `conversation` is the new conversation (the retriever's leg).
    Retrieved { conversation: String },
    /// Nobody came; the call goes back to the parker (or wherever the lot sends it).
    Timeout,
    /// The parked party hung up.
    GaveUp,
}

/// Why a call was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallEndReason {
    /// Every channel of the call hung up.
    Hangup,
    /// The call's last channels went over to another call (`into`) by a linkedid merge.
    Merged { into: String },
    /// Its channels were gone when live state was rebuilt after a reconnect (they hung up while we were away).
    Vanished,
    /// No event for `idle_secs` seconds: a hang-up was lost.
    Expired { idle_secs: u64 },
}

impl CallEvent {
    /// The call key this event belongs to.
    pub fn call(&self) -> &str {
        match self {
            CallEvent::LegRinging(l) | CallEvent::LegDialing(l) | CallEvent::LegAnswered(l) => &l.call,
            CallEvent::LegStoppedRinging { call, .. }
            | CallEvent::ConversationEnded { call, .. }
            | CallEvent::Transferred { call, .. }
            | CallEvent::Parked { call, .. }
            | CallEvent::Unparked { call, .. }
            | CallEvent::Hold { call, .. }
            | CallEvent::Unhold { call, .. }
            | CallEvent::RecordingStarted { call, .. }
            | CallEvent::CallEnded { call, .. } => call,
        }
    }

    /// The conversation id, for events about one leg.
    pub fn conversation(&self) -> Option<&str> {
        match self {
            CallEvent::LegRinging(l) | CallEvent::LegDialing(l) | CallEvent::LegAnswered(l) => Some(&l.conversation),
            CallEvent::LegStoppedRinging { conversation, .. }
            | CallEvent::ConversationEnded { conversation, .. }
            | CallEvent::Transferred { conversation, .. }
            | CallEvent::Parked { conversation, .. }
            | CallEvent::Unparked { conversation, .. }
            | CallEvent::Hold { conversation, .. }
            | CallEvent::Unhold { conversation, .. }
            | CallEvent::RecordingStarted { conversation, .. } => {
                (!conversation.is_empty()).then_some(conversation.as_str())
            }
            CallEvent::CallEnded { .. } => None,
        }
    }

    /// When it happened.
    pub fn time(&self) -> Timestamp {
        match self {
            CallEvent::LegRinging(l) | CallEvent::LegDialing(l) | CallEvent::LegAnswered(l) => l.time,
            CallEvent::LegStoppedRinging { time, .. }
            | CallEvent::ConversationEnded { time, .. }
            | CallEvent::Transferred { time, .. }
            | CallEvent::Parked { time, .. }
            | CallEvent::Unparked { time, .. }
            | CallEvent::Hold { time, .. }
            | CallEvent::Unhold { time, .. }
            | CallEvent::RecordingStarted { time, .. }
            | CallEvent::CallEnded { time, .. } => *time,
        }
    }

    /// The event's name as serialised (`leg_ringing`, `call_ended`, …).
    pub fn name(&self) -> &'static str {
        match self {
            CallEvent::LegRinging(_) => "leg_ringing",
            CallEvent::LegDialing(_) => "leg_dialing",
            CallEvent::LegStoppedRinging { .. } => "leg_stopped_ringing",
            CallEvent::LegAnswered(_) => "leg_answered",
            CallEvent::ConversationEnded { .. } => "conversation_ended",
            CallEvent::Transferred { .. } => "transferred",
            CallEvent::Parked { .. } => "parked",
            CallEvent::Unparked { .. } => "unparked",
            CallEvent::Hold { .. } => "hold",
            CallEvent::Unhold { .. } => "unhold",
            CallEvent::RecordingStarted { .. } => "recording_started",
            CallEvent::CallEnded { .. } => "call_ended",
        }
    }
}
