//! `event.bind`, `event.get`, `event.unbind`, `event.offline.get` (application context only).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::de;
use crate::method::Method;

/// Delivery of a bound event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// POSTed to `handler`.
    Online,
    /// Kept in the portal's queue until fetched with `event.offline.get`.
    Offline,
}

/// `event.bind`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventBind {
    pub event: String,
    /// Optional for offline events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_connector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

impl Method for EventBind {
    const NAME: &'static str = "event.bind";
    type Output = bool;
}

/// `event.get`: the handlers bound by this application.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventGet {}

/// A bound handler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventHandler {
    pub event: String,
    #[serde(default, deserialize_with = "de::opt_string_lenient")]
    pub handler: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64_lenient")]
    pub auth_type: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_bool_lenient")]
    pub offline: Option<bool>,
}

impl Method for EventGet {
    const NAME: &'static str = "event.get";
    type Output = Vec<EventHandler>;
}

/// `event.unbind`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventUnbind {
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventType>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Unbound {
    #[serde(deserialize_with = "de::u64_lenient")]
    pub count: u64,
}

impl Method for EventUnbind {
    const NAME: &'static str = "event.unbind";
    type Output = Unbound;
}

/// `event.offline.get`: take the first queued offline events.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventOfflineGet {
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub filter: Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub order: Map<String, Value>,
    /// Default 50.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Delete the returned records from the queue (portal default: yes). Keep them (`false`) to
    /// confirm with `event.offline.clear` after processing.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_int")]
    pub clear: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_int")]
    pub error: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_connector: Option<String>,
}

/// A queued event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OfflineEvent {
    #[serde(rename = "ID", deserialize_with = "de::u64_lenient")]
    pub id: u64,
    #[serde(rename = "EVENT_NAME")]
    pub event_name: String,
    #[serde(rename = "EVENT_DATA", default)]
    pub event_data: Value,
    #[serde(rename = "EVENT_ADDITIONAL", default)]
    pub event_additional: Value,
    #[serde(rename = "TIMESTAMP_X", default, deserialize_with = "de::opt_string_lenient")]
    pub timestamp: Option<String>,
    #[serde(rename = "MESSAGE_ID", default, deserialize_with = "de::opt_string_lenient")]
    pub message_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OfflineEvents {
    #[serde(default, deserialize_with = "de::opt_string_lenient")]
    pub process_id: Option<String>,
    #[serde(default, deserialize_with = "de::vec_lenient")]
    pub events: Vec<OfflineEvent>,
}

impl Method for EventOfflineGet {
    const NAME: &'static str = "event.offline.get";
    type Output = OfflineEvents;
}

/// `event.offline.clear`: removes the records a process reserved (`clear=0`) once they are handled.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventOfflineClear {
    pub process_id: String,
    /// Only these record IDs (default: every record of the process).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub id: Vec<u64>,
}

impl Method for EventOfflineClear {
    const NAME: &'static str = "event.offline.clear";
    type Output = Value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::to_params;
    use serde_json::json;

    #[test]
    fn bind_params_and_results() {
        let bind = EventBind {
            event: "ONEXTERNALCALLSTART".into(),
            handler: Some("https://pbx.example/b24/event".into()),
            event_type: Some(EventType::Online),
            ..Default::default()
        };
        assert_eq!(
            to_params(&bind).unwrap(),
            json!({"event": "ONEXTERNALCALLSTART", "handler": "https://pbx.example/b24/event", "event_type": "online"})
        );
        let handlers: Vec<EventHandler> =
            serde_json::from_value(json!([{"event":"ONCRMLEADADD","handler":"https://x","auth_type":"0","offline":0}]))
                .unwrap();
        assert_eq!(handlers[0].offline, Some(false));
        let events: OfflineEvents = serde_json::from_value(json!({"process_id": "abc", "events": [{"ID": "1", "EVENT_NAME": "ONEXTERNALCALLSTART",
            "EVENT_DATA": {"PHONE_NUMBER": "+7900"}, "TIMESTAMP_X": "2026-03-07T10:20:30+03:00", "MESSAGE_ID": "m1", "ERROR": "0"}]})).unwrap();
        assert_eq!(events.events[0].event_data["PHONE_NUMBER"], "+7900");
        let empty: OfflineEvents = serde_json::from_value(json!({"process_id": null, "events": []})).unwrap();
        assert!(empty.events.is_empty());
    }
}
