//! Injected failures of the emulated cloud.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Over the control API: `{"fault":"down"}`, `{"fault":"slow","value":1500}` (milliseconds),
/// `{"fault":"server_error","value":502}`, `{"fault":"rate_limit_storm"}`, `{"fault":"token_revoked"}`,
/// `{"fault":"method_error","value":{"method":"event.offline.clear","status":500}}`,
/// `{"fault":"method_refused","value":{"method":"telephony.externalcall.register"}}`,
/// `{"fault":"random","value":{"seed":7,"rate_limited_percent":5,"server_error_percent":5,…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Top-level requests for this one method fail with this HTTP status (500–599) and `INTERNAL_SERVER_ERROR`;
    /// every other method works. Lets a test stop a client between two steps of a protocol (say, after
    /// `event.offline.get` and before a successful `event.offline.clear`).
    MethodError { method: String, status: u16 },
    /// This one method is refused for good wherever it is called (top level or inside a `batch`): HTTP 400
    /// `ERROR_CORE` with [`METHOD_REFUSED`] as its description, an error a client must not retry as it is (the
    /// portal rejects the request itself, say a validation the portal added). Lets a test leave a call's steps
    /// failed for good, then clear the fault and have them sent again.
    MethodRefused { method: String },
    /// Every REST request is refused with 503 `QUERY_LIMIT_EXCEEDED`, whatever the bucket says.
    RateLimitStorm,
    /// The app's tokens and the webhook are revoked: REST answers 401, refresh answers `invalid_grant`.
    TokenRevoked,
    /// A busy portal: each REST request independently meets one of the documented failures with the given
    /// odds, or goes through (see [`RandomFaults`]).
    Random(RandomFaults),
}

/// The `error_description` of a request refused by [`Fault::MethodRefused`].
pub const METHOD_REFUSED: &str = "refused by the emulator's method_refused fault";

/// The odds of a [`Fault::Random`] portal, in percent of REST requests (a `batch` is one request). The draw
/// depends only on `seed` and the request's sequence number, so a run can be told again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomFaults {
    pub seed: u64,
    /// Refused with 503 `QUERY_LIMIT_EXCEEDED`.
    pub rate_limited_percent: f64,
    /// 500 `INTERNAL_SERVER_ERROR`.
    pub server_error_percent: f64,
    /// 502 `INTERNAL_SERVER_ERROR` (a proxy in front of the portal).
    pub bad_gateway_percent: f64,
    /// Answered (normally) only after `delay_ms`.
    pub slow_percent: f64,
    pub delay_ms: u64,
}

impl Default for RandomFaults {
    /// The busy portal of the soak: 15 % refused (5 % each of 503 `QUERY_LIMIT_EXCEEDED`, 500 and 502) and
    /// 5 % delayed by 3 s.
    fn default() -> Self {
        Self {
            seed: 1,
            rate_limited_percent: 5.0,
            server_error_percent: 5.0,
            bad_gateway_percent: 5.0,
            slow_percent: 5.0,
            delay_ms: 3_000,
        }
    }
}

/// What a [`Fault::Random`] portal does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomOutcome {
    Pass,
    RateLimited,
    /// An `INTERNAL_SERVER_ERROR` with this HTTP status.
    ServerError(u16),
    Slow(Duration),
}

impl RandomFaults {
    /// The fate of the request numbered `seq`.
    pub fn draw(&self, seq: u64) -> RandomOutcome {
        // splitmix64 of (seed, seq): uniform, stateless, the same for the same pair.
        let mut z = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(seq.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let roll = (z % 1_000_000) as f64 / 10_000.0; // [0, 100)
        let mut band = 0.0;
        for (percent, outcome) in [
            (self.rate_limited_percent, RandomOutcome::RateLimited),
            (self.server_error_percent, RandomOutcome::ServerError(500)),
            (self.bad_gateway_percent, RandomOutcome::ServerError(502)),
            (
                self.slow_percent,
                RandomOutcome::Slow(Duration::from_millis(self.delay_ms)),
            ),
        ] {
            band += percent.max(0.0);
            if roll < band {
                return outcome;
            }
        }
        RandomOutcome::Pass
    }
}

/// How many requests each kind of random fault hit so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    pub rate_limited: u64,
    pub server_errors: u64,
    pub bad_gateways: u64,
    pub delayed: u64,
}

impl FaultCounts {
    /// Requests refused (every kind but the delays).
    pub fn refused(&self) -> u64 {
        self.rate_limited + self.server_errors + self.bad_gateways
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_faults_follow_their_odds_and_repeat_per_seed() {
        let odds = RandomFaults::default();
        let outcomes: Vec<_> = (0..20_000).map(|seq| odds.draw(seq)).collect();
        let share = |f: &dyn Fn(&RandomOutcome) -> bool| {
            outcomes.iter().filter(|o| f(o)).count() as f64 / outcomes.len() as f64 * 100.0
        };
        for (name, got) in [
            ("rate limited", share(&|o| *o == RandomOutcome::RateLimited)),
            ("500", share(&|o| *o == RandomOutcome::ServerError(500))),
            ("502", share(&|o| *o == RandomOutcome::ServerError(502))),
            ("slow", share(&|o| matches!(o, RandomOutcome::Slow(_)))),
        ] {
            assert!((4.0..6.0).contains(&got), "{name}: {got} %");
        }
        assert_eq!((0..100).map(|s| odds.draw(s)).collect::<Vec<_>>(), outcomes[..100]);
        let other = RandomFaults {
            seed: 2,
            ..odds.clone()
        };
        assert_ne!((0..100).map(|s| other.draw(s)).collect::<Vec<_>>(), outcomes[..100]);
        let calm = RandomFaults {
            rate_limited_percent: 0.0,
            server_error_percent: 0.0,
            bad_gateway_percent: 0.0,
            slow_percent: 0.0,
            ..odds
        };
        assert!((0..1000).all(|s| calm.draw(s) == RandomOutcome::Pass));
    }
}
