//! Small parsers for what Asterisk writes: numbers, linkedids, dial strings, CEL extras, durations.

use serde_json::{Map, Value};

pub(super) fn clean_number(raw: &str) -> &str {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("<unknown>") {
        ""
    } else {
        raw
    }
}

pub(super) fn parse_u16(v: Option<&str>) -> Option<u16> {
    v.and_then(|s| s.trim().parse::<u16>().ok())
}

/// Age of a linkedid `[<system>-]<epoch>.<counter>`, if it has that shape.
pub(super) fn linkedid_age(id: &str) -> Option<(u64, u64)> {
    let tail = id.rsplit('-').next().unwrap_or(id);
    let (epoch, counter) = tail.split_once('.')?;
    Some((epoch.parse().ok()?, counter.parse().ok()?))
}

/// The number a dial string reaches: `9001234567@carrier`, `carrier/sip:9001234567@host`, `carrier/9001234567`.
pub(super) fn dialed_number(dial_string: &str) -> Option<String> {
    let s = dial_string.trim();
    let s = s.split_once('/').map_or(s, |(_, rest)| rest);
    let s = s
        .strip_prefix("sip:")
        .or_else(|| s.strip_prefix("sips:"))
        .or_else(|| s.strip_prefix("tel:"))
        .unwrap_or(s);
    let user = s.split(['@', ';', ',']).next().unwrap_or("");
    let looks_like_number = user.bytes().any(|b| b.is_ascii_digit())
        && user
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'*' | b'#'));
    looks_like_number.then(|| user.to_owned())
}

pub(super) fn endpoint_of_dial_string(dial_string: &str) -> &str {
    // "PJSIP/101" or "PJSIP/101&PJSIP/102": the parker's own device.
    let first = dial_string.split('&').next().unwrap_or("");
    let rest = first.split_once('/').map_or(first, |(_, r)| r);
    rest.split(['@', '/', ',']).next().unwrap_or("")
}

pub(super) fn parse_extra(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Object(map)) if !map.is_empty() => Some(map),
        _ => None,
    }
}

/// Duration as CoreShowChannel reports it: `HH:MM:SS` (hours may exceed 24), or plain seconds.
pub(super) fn parse_duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    for part in text.trim().split(':') {
        total = total.checked_mul(60)?.checked_add(part.parse::<u64>().ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_parse_what_asterisk_writes() {
        assert_eq!(linkedid_age("1700000000.12"), Some((1_700_000_000, 12)));
        assert_eq!(linkedid_age("pbx-1-1700000000.12"), Some((1_700_000_000, 12)));
        assert_eq!(linkedid_age("bitrix-call-id"), None);
        assert!(linkedid_age("1700000000.9") < linkedid_age("1700000000.10"));
        assert_eq!(dialed_number("9001234567@carrier").as_deref(), Some("9001234567"));
        assert_eq!(
            dialed_number("carrier/sip:+79001234567@10.0.0.1:5060").as_deref(),
            Some("+79001234567")
        );
        assert_eq!(dialed_number("carrier"), None);
        assert_eq!(dialed_number("101"), Some("101".into()));
        assert_eq!(endpoint_of_dial_string("PJSIP/101"), "101");
        assert_eq!(endpoint_of_dial_string("PJSIP/101&PJSIP/102"), "101");
        assert_eq!(parse_duration("01:02:03"), Some(3723));
        assert_eq!(parse_duration("42"), Some(42));
        assert_eq!(parse_duration("x"), None);
        assert!(parse_extra("{\"hangupcause\":16}").is_some());
        assert!(parse_extra("{}").is_none());
        assert!(parse_extra("not json").is_none());
    }
}
