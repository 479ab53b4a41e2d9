//! What the emulator saw: every request, every call popup, and the faults it can be told to show.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// How a request authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AuthKind {
    /// No `Authorization: Bearer`, or not needed (the token endpoint).
    None,
    /// An access token issued by the OAuth endpoint.
    OAuth,
    /// The configured long-lived token.
    LongLived,
    /// A bearer token the account does not accept (unknown or expired).
    Refused,
}

/// One HTTP request and the emulator's answer.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub seq: u64,
    /// Emulator clock, Unix seconds.
    pub at: i64,
    /// The host's wall clock when the request arrived, Unix microseconds (latency measurements against events
    /// stamped by the same host, whatever the emulator clock says).
    pub arrived_micros: i64,
    /// `GET`, `POST`, …
    pub method: String,
    /// Path without the query, e.g. `/api/v4/calls`.
    pub path: String,
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// The JSON body (`Null` when empty; a string when it was not JSON).
    pub body: Value,
    pub auth: AuthKind,
    pub status: u16,
    /// The JSON answer (`Null` for 204; a string for HTML or text answers).
    pub response: Value,
}

impl RecordedRequest {
    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An incoming-call popup accepted by `POST /api/v2/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Popup {
    /// The request that carried it.
    pub seq: u64,
    pub at: i64,
    pub phone_number: String,
    /// `None`: every user of the account (the `users` key was omitted).
    pub users: Option<Vec<u64>>,
    /// The contact amoCRM would show: the oldest one whose last 8 digits match.
    pub contact_id: Option<u64>,
}

/// Failures the emulated account can be told to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The port is closed and open connections are dropped; the same port reopens when cleared.
    Down,
    /// Every request (API and token endpoint) answers this 5xx with a problem+JSON body.
    ServerError(u16),
    /// Every API request answers 429, whatever the request rate.
    RateLimitStorm,
    /// The integration's IP is blocked: every request answers 403 with an HTML page (as observed).
    IpBlocked,
    /// Every request is answered only after this delay.
    Slow(Duration),
}
