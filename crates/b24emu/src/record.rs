//! What the emulator saw and did, for tests to assert on: requests, call-card visibility, event deliveries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AuthMode {
    /// OAuth access token of the app, acting for `user_id`.
    OAuth { user_id: u64 },
    /// Incoming webhook of `user_id`.
    Webhook { user_id: u64 },
    /// No valid credentials (the request was answered with an auth error).
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Order of arrival, from 1; batch sub-commands get their own numbers right after their batch.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// REST method, lowercased (`telephony.externalcall.register`); `oauth.token` for the token endpoint.
    pub method: String,
    /// Parameters without `auth`, as JSON (maps with keys 0..n become arrays).
    pub params: Value,
    pub auth: AuthMode,
    /// HTTP status of the answer (for a batch sub-command: the status it would have had alone).
    pub status: u16,
    pub response: Value,
    /// `seq` of the enclosing `batch` for its sub-commands.
    pub batch_parent: Option<u64>,
}

impl RecordedRequest {
    pub fn is_ok(&self) -> bool {
        self.status == 200 && self.response.get("error").is_none()
    }

    /// A parameter by name (case-insensitive), e.g. `param("CALL_ID")`.
    pub fn param(&self, name: &str) -> Option<&Value> {
        let obj = self.params.as_object()?;
        obj.get(name)
            .or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
    }

    pub fn param_str(&self, name: &str) -> Option<String> {
        match self.param(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardAction {
    Shown,
    Hidden,
}

/// What made the card appear or disappear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardCause {
    Register,
    Show,
    Hide,
    Finish,
    ClickToCall,
}

#[derive(Debug, Clone, Serialize)]
pub struct CardEvent {
    pub at: DateTime<Utc>,
    pub user_id: u64,
    pub call_id: String,
    pub action: CardAction,
    pub cause: CardCause,
    /// `seq` of the request that caused it (none for click-to-call).
    pub request_seq: Option<u64>,
}

/// Call-card visibility over time, per user.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CardTimeline {
    pub events: Vec<CardEvent>,
}

impl CardTimeline {
    pub fn for_user(&self, user_id: u64) -> Vec<&CardEvent> {
        self.events.iter().filter(|e| e.user_id == user_id).collect()
    }

    pub fn for_call(&self, call_id: &str) -> Vec<&CardEvent> {
        self.events.iter().filter(|e| e.call_id == call_id).collect()
    }

    /// Whether `user_id` currently sees the card of `call_id` (last event wins).
    pub fn is_visible(&self, user_id: u64, call_id: &str) -> bool {
        self.events
            .iter()
            .rev()
            .find(|e| e.user_id == user_id && e.call_id == call_id)
            .is_some_and(|e| e.action == CardAction::Shown)
    }

    /// Users who currently see the card of `call_id`, ascending.
    pub fn visible_to(&self, call_id: &str) -> Vec<u64> {
        let mut users: Vec<u64> = self.for_call(call_id).iter().map(|e| e.user_id).collect();
        users.sort_unstable();
        users.dedup();
        users.retain(|u| self.is_visible(*u, call_id));
        users
    }
}

/// One attempt to deliver an event to a handler (there are no retries, as in Bitrix24).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub at: DateTime<Utc>,
    pub event: String,
    pub handler: String,
    /// The form-urlencoded body that was POSTed.
    pub body: String,
    /// HTTP status of the handler's answer, if any.
    pub status: Option<u16>,
    /// Transport error, if the POST failed; also set when delivery is disabled.
    pub error: Option<String>,
}
