//! Bitrix24 field formats and the texts of statuses and reasons.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use tracker::{CallEvent, Direction, Leg, StopReason, Timestamp, NEVER};

/// `CALL_START_DATE` form: `YYYY-MM-DDTHH:MM:SS+03:00`.
pub(super) fn bitrix_time(at: Timestamp, offset: FixedOffset) -> String {
    DateTime::from_timestamp_micros(at.as_micros())
        .map(|utc| utc.with_timezone(&offset).format("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .unwrap_or_default()
}

/// `call_full` times (`YYYY-MM-DD HH:MM:SS` in the PBX's zone) in `CALL_START_DATE` form.
pub(super) fn bitrix_time_from_local(text: &str, offset: FixedOffset) -> Option<String> {
    if text == NEVER {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

pub(super) fn stop_reason_text(reason: &StopReason) -> String {
    match reason {
        StopReason::AnsweredElsewhere => "answered elsewhere".into(),
        StopReason::PickedUp { by } => format!("picked up by {by}"),
        StopReason::Timeout => "rang out".into(),
        StopReason::CallerGone => "the caller hung up".into(),
        StopReason::Busy => "busy".into(),
        StopReason::Declined => "declined".into(),
        StopReason::Unavailable => "unavailable".into(),
        StopReason::Cancelled => "cancelled".into(),
        StopReason::MovedToCall { call } => format!("moved to call {call}"),
        StopReason::Vanished => "gone after a reconnect".into(),
        StopReason::Expired => "the call expired".into(),
    }
}

pub(super) fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Local => "local",
        Direction::Incoming => "incoming",
        Direction::Outgoing => "outgoing",
        Direction::Unknown => "unknown",
    }
}

/// Fills `{phone}`, `{line}` and `{time}` of a task template.
pub(super) fn fill_template(template: &str, phone: &str, line: &str, time: &str) -> String {
    template
        .replace("{phone}", phone)
        .replace("{line}", line)
        .replace("{time}", time)
}

pub(super) fn leg_of_event(event: &CallEvent) -> Option<&Leg> {
    match event {
        CallEvent::LegRinging(leg) | CallEvent::LegDialing(leg) | CallEvent::LegAnswered(leg) => Some(leg),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bitrix_times_with_the_offset() {
        let offset = tracker::LocalClock::parse_offset("+03:00").expect("valid");
        // 1700000000 = 2023-11-14 22:13:20 UTC
        assert_eq!(
            bitrix_time(Timestamp::from_secs(1_700_000_000), offset),
            "2023-11-15T01:13:20+03:00"
        );
        assert_eq!(
            bitrix_time_from_local("2023-11-15 01:13:20", offset).as_deref(),
            Some("2023-11-15T01:13:20+03:00")
        );
        assert_eq!(bitrix_time_from_local(NEVER, offset), None);
        assert_eq!(bitrix_time_from_local("garbage", offset), None);
    }

    #[test]
    fn templates_fill_placeholders() {
        assert_eq!(
            fill_template(
                "Missed {phone} on {line} at {time}",
                "+7900",
                "7343",
                "2026-01-01 10:00:00"
            ),
            "Missed +7900 on 7343 at 2026-01-01 10:00:00"
        );
    }
}
