//! The call tracker: AMI events in, calls and call events out.
//!
//! It is pure: no sockets, files or clocks. Time comes from the events' `Timestamp` header (manager.conf
//! `timestampevents=yes`) or from the `now` given to [`Tracker::handle_at`], [`Tracker::resync`] and
//! [`Tracker::tick`]. That makes every scenario replayable from a recorded trace, deterministically.
//!
//! ```
//! use tracker::{Tracker, TrackerConfig, CallEvent};
//! let mut tracker = Tracker::new(TrackerConfig::default()).expect("valid settings");
//! let newchannel = ami::Message::new()
//!     .with("Event", "Newchannel")
//!     .with("Timestamp", "1700000000.000000")
//!     .with("Channel", "PJSIP/101-00000001")
//!     .with("ChannelState", "4")
//!     .with("CallerIDNum", "101")
//!     .with("Exten", "102")
//!     .with("Uniqueid", "1700000000.1")
//!     .with("Linkedid", "1700000000.1");
//! let events: Vec<CallEvent> = tracker.handle(&newchannel);
//! assert!(events.is_empty()); // nothing rings yet
//! assert_eq!(tracker.snapshot().len(), 1);
//! ```
//!
//! Model (see `ARCHITECTURE.md`): channels are grouped into calls by linkedid; when Asterisk merges linkedids
//! (a channel entering a bridge takes the oldest one: transfers, pickup, park retrieval) the channel moves to the
//! older call. Every employee leg (a channel of an internal endpoint that is rung, dials out, picks up or
//! retrieves) is a *conversation*, keyed by its uniqueid; [`CallFull`] is the seeds' `call_full` object.

pub mod cel;
mod config;
mod event;
mod model;
pub mod status;
mod time;
mod tracker;

pub use cel::{CelFeed, CelRow};
pub use config::{InternalEndpoints, TrackerConfig, TrunkConfig};
pub use event::{
    CallEndReason, CallEvent, ConversationEndReason, Leg, LegOrigin, StopReason, TransferKind, UnparkReason,
};
pub use model::{CallFull, CallState, ChannelData, Conversation, Direction};
pub use time::{LocalClock, Timestamp, NEVER};
pub use tracker::{RememberedKeys, Tracker, REMEMBERED_KEYS_CAP, RESYNC_ANSWER_TIME, RESYNC_DIALED_NUMBER};

/// Why the tracker could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid internal endpoint pattern {pattern:?}: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("invalid utc_offset {0:?}: expected a fixed offset such as \"+03:00\"")]
    InvalidUtcOffset(String),
    #[error("a trunk has an empty endpoint name")]
    EmptyTrunkEndpoint,
    #[error("invalid number settings: {0}")]
    Numbers(#[from] numbers::Error),
}
