//! Injected failures of the emulated cloud.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Over the control API: `{"fault":"down"}`, `{"fault":"slow","value":1500}` (milliseconds),
/// `{"fault":"server_error","value":502}`, `{"fault":"rate_limit_storm"}`, `{"fault":"token_revoked"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", content = "value", rename_all = "snake_case")]
pub enum Fault {
    /// The portal is unreachable: its port refuses connections and open connections are closed.
    /// The control API stays reachable only on a separate control listener (see the binary's `--control`).
    Down,
    /// The portal answers every request with HTTP 503 and an HTML page instead of JSON.
    Unavailable,
    /// Every request (REST and OAuth) is answered only after this delay.
    Slow(#[serde(with = "millis")] Duration),
    /// Every REST request fails with this HTTP status (500–599) and `INTERNAL_SERVER_ERROR`.
    ServerError(u16),
    /// Every REST request is refused with 503 `QUERY_LIMIT_EXCEEDED`, whatever the bucket says.
    RateLimitStorm,
    /// The app's tokens and the webhook are revoked: REST answers 401, refresh answers `invalid_grant`.
    TokenRevoked,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
