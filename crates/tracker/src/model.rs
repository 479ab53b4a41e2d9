//! `call_full`: the call as hooks and the engine see it. Field names, types and value sets follow the hook
//! contract exactly (hook scripts written for it read them); fields are declared in the contract's order.

use std::collections::BTreeMap;

use numbers::Number;
use serde::{Deserialize, Serialize};

/// The whole call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFull {
    /// Uniqueid of the conversation talking now, or an empty string.
    pub active_conversation_id: String,
    /// The call's main channel (id = linkedid).
    pub channel: ChannelData,
    /// Every employee leg of the call, by its uniqueid.
    pub conversations: BTreeMap<String, Conversation>,
    /// Filled by the engine (always null for Bitrix24).
    pub deal: Option<serde_json::Value>,
    /// Filled by the engine: the CRM entity.
    pub entity: Option<serde_json::Value>,
    /// True for an incoming call that ended before any employee's phone rang (lost in the IVR or a queue
    /// announcement).
    pub is_ivr: bool,
    /// Path of the call's recording (`MIXMONITOR_FILENAME`), or an empty string.
    pub record: String,
    /// Filled by the engine: the Bitrix24 registration.
    pub registration: Option<serde_json::Value>,
    /// The result as a SIP-style status, see [`crate::status`]; 0 while the call is live.
    pub result: u16,
}

/// One employee leg of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub channel: ChannelData,
    /// True while the client of this conversation is parked or on hold.
    pub is_parked: bool,
    /// Filled by the engine: the CRM user found by the leg's number.
    pub user: Option<serde_json::Value>,
}

/// Channel data, for the main channel and for each conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelData {
    pub answer_time: String,
    pub end_time: String,
    /// The CEL `extra` of this channel's latest CEL event that had one (e.g. HANGUP's
    /// `{"hangupcause":16,"hangupsource":"…","dialstatus":"ANSWER"}`), or `{}`.
    pub extra: serde_json::Map<String, serde_json::Value>,
    pub from: Number,
    /// Uniqueid of the channel.
    pub id: String,
    /// True if uniqueid = linkedid.
    pub is_primary: bool,
    pub name: String,
    pub start_time: String,
    pub state: CallState,
    pub to: Number,
    pub trunk: Number,
    #[serde(rename = "type")]
    pub direction: Direction,
    pub was_answered: bool,
}

/// `state`: `processed` is never set by the tracker; the engine marks a call it has finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Ringing,
    Talking,
    Ended,
    Processed,
}

/// `type`: local (internal → internal), incoming (external → internal), outgoing (internal → external), unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Local,
    Incoming,
    Outgoing,
    Unknown,
}
