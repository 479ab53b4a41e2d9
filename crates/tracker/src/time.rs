//! Instants as the PBX reports them, and their rendering in the PBX's zone.

use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Microseconds since the Unix epoch (UTC). AMI reports `Timestamp: 1700000000.123456` with
/// `timestampevents=yes`; this keeps it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1_000_000))
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses AMI's `<seconds>[.<fraction>]`; `None` for anything else (never panics).
    pub fn parse_ami(text: &str) -> Option<Self> {
        let text = text.trim();
        let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
        if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || secs.len() > 12 {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: i64 = secs.parse().ok()?;
        let mut micros: i64 = 0;
        for (i, b) in frac.bytes().take(6).enumerate() {
            micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
        }
        Some(Self(secs * 1_000_000 + micros))
    }

    /// Whole seconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn secs_since(self, earlier: Timestamp) -> u64 {
        u64::try_from((self.0 - earlier.0).max(0) / 1_000_000).unwrap_or(0)
    }

    pub fn saturating_sub_secs(self, secs: u64) -> Self {
        let micros = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1_000_000);
        Self(self.0.saturating_sub(micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

/// Serialised as AMI writes it (`"1700000000.123456"`): exact, and readable in replay output.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read back from the text it is serialised as (also a bare number of seconds).
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(serde::de::Error::custom(format!("not a time stamp: {other}"))),
        };
        let (negative, digits) = match text.trim().strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.trim()),
        };
        let at = Timestamp::parse_ami(digits)
            .ok_or_else(|| serde::de::Error::custom(format!("not a time stamp: {text:?}")))?;
        Ok(if negative { Timestamp(-at.0) } else { at })
    }
}

/// The text `call_full` uses for "this never happened".
pub const NEVER: &str = "0001-01-01 00:00:00";

/// Renders instants as `YYYY-MM-DD HH:MM:SS` in the PBX's zone (a fixed UTC offset).
#[derive(Debug, Clone, Copy)]
pub struct LocalClock {
    offset: FixedOffset,
}

impl LocalClock {
    pub fn new(offset: FixedOffset) -> Self {
        Self { offset }
    }

    /// Parses `+03:00`, `-05:30`, `+0300`, `Z` or an empty string (UTC).
    pub fn parse_offset(text: &str) -> Option<FixedOffset> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
            return FixedOffset::east_opt(0);
        }
        let (sign, rest) = match text.as_bytes().first()? {
            b'+' => (1, &text[1..]),
            b'-' => (-1, &text[1..]),
            _ => return None,
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours: i32 = digits[..2].parse().ok()?;
        let minutes: i32 = digits[2..].parse().ok()?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
    }

    pub fn format(&self, at: Option<Timestamp>) -> String {
        let Some(at) = at else {
            return NEVER.to_owned();
        };
        match DateTime::from_timestamp_micros(at.0) {
            Some(utc) => utc.with_timezone(&self.offset).format("%Y-%m-%d %H:%M:%S").to_string(),
            None => NEVER.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ami_timestamps_exactly() {
        assert_eq!(
            Timestamp::parse_ami("1700000000.123456"),
            Some(Timestamp::from_micros(1_700_000_000_123_456))
        );
        assert_eq!(
            Timestamp::parse_ami("1700000000.5"),
            Some(Timestamp::from_micros(1_700_000_000_500_000))
        );
        assert_eq!(
            Timestamp::parse_ami("1700000000"),
            Some(Timestamp::from_secs(1_700_000_000))
        );
        for bad in ["", ".", "abc", "1.2.3", "-1.0", "99999999999999999999", "1.x"] {
            assert_eq!(Timestamp::parse_ami(bad), None, "{bad}");
        }
        assert_eq!(
            Timestamp::from_micros(1_700_000_000_000_042).to_string(),
            "1700000000.000042"
        );
    }

    #[test]
    fn formats_in_the_pbx_zone() {
        let clock = LocalClock::new(LocalClock::parse_offset("+03:00").unwrap());
        // 1700000000 = 2023-11-14 22:13:20 UTC
        assert_eq!(
            clock.format(Some(Timestamp::from_secs(1_700_000_000))),
            "2023-11-15 01:13:20"
        );
        assert_eq!(clock.format(None), NEVER);
        assert_eq!(
            LocalClock::parse_offset("-0530").map(|o| o.local_minus_utc()),
            Some(-(5 * 3600 + 30 * 60))
        );
        assert_eq!(LocalClock::parse_offset("Z").map(|o| o.local_minus_utc()), Some(0));
        for bad in ["3", "+3", "+24:00", "+03:60", "Moscow"] {
            assert!(LocalClock::parse_offset(bad).is_none(), "{bad}");
        }
    }
}
