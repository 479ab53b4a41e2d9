//! The call result as a SIP-style status (`call_full.result`), from Asterisk's dial status and hang-up causes.
//!
//! | code | meaning | Bitrix24 `STATUS_CODE` |
//! |---|---|---|
//! | 200 | an employee talked to the other party | 200 |
//! | 304 | missed: not answered (no answer, abandoned in a queue or the IVR) | 304 |
//! | 486 | busy | 486 |
//! | 603 | declined | 603 |
//! | 487 | the caller cancelled while the other side rang (SIP "Request Terminated") | 603-S |
//! | 404, 484 | invalid / incomplete number | 404, 484 |
//! | 480 | temporarily unavailable | 480 |
//! | 503 | route unavailable (congestion, no channel) | 503 |
//! | 402, 403, 423 | as in SIP | same |
//! | 500 and any other | a failure with no better name | OTHER |
//!
//! `result` is an integer in the hook contract, so "603-S" is carried as 487, its SIP meaning.

pub const TALKED: u16 = 200;
pub const MISSED: u16 = 304;
pub const BUSY: u16 = 486;
pub const DECLINED: u16 = 603;
pub const CANCELLED: u16 = 487;
pub const NOT_FOUND: u16 = 404;
pub const ADDRESS_INCOMPLETE: u16 = 484;
pub const UNAVAILABLE: u16 = 480;
pub const ROUTE_UNAVAILABLE: u16 = 503;
pub const OTHER: u16 = 500;
/// `result` of a call that has not ended yet.
pub const LIVE: u16 = 0;

/// What is known about one failed dial attempt (the far leg of an outgoing or local call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DialOutcome {
    /// `DialStatus` of `DialEnd` (ANSWER, BUSY, NOANSWER, CANCEL, CHANUNAVAIL, CONGESTION, …).
    pub dial_status: Option<String>,
    /// Q.850 cause of the far leg's `Hangup` / `HangupRequest`.
    pub cause: Option<u16>,
    /// SIP response code of the far leg (`TechCause`, Asterisk 20.17 / 22.7+).
    pub tech_cause: Option<u16>,
}

/// Maps a failed dial of the far party to a status (reference: hang-up causes → Bitrix24 statuses).
pub(crate) fn failed_dial_status(outcome: &DialOutcome) -> u16 {
    let status = outcome.dial_status.as_deref().unwrap_or("");
    // The caller gave up: the far leg's TechCause is then our own CANCEL's mapping, not the far side's answer.
    if status.eq_ignore_ascii_case("CANCEL") {
        return CANCELLED;
    }
    if let Some(code) = outcome.tech_cause {
        match code {
            486 | 600 => return BUSY,
            603 => return DECLINED,
            404 | 604 => return NOT_FOUND,
            484 => return ADDRESS_INCOMPLETE,
            480 | 408 => return UNAVAILABLE,
            487 => return CANCELLED,
            // 402, 403, 423, 503 and the rest keep their own meaning.
            100..=699 => return code,
            _ => {}
        }
    }
    match outcome.cause {
        Some(17) => return BUSY,
        Some(21) => return DECLINED,
        Some(1 | 22) => return NOT_FOUND,
        Some(3 | 28) => return ADDRESS_INCOMPLETE,
        Some(18 | 20) => return UNAVAILABLE,
        Some(27 | 34 | 38 | 41 | 42 | 44) => return ROUTE_UNAVAILABLE,
        _ => {}
    }
    if status.eq_ignore_ascii_case("BUSY") {
        BUSY
    } else if status.eq_ignore_ascii_case("CONGESTION") || status.eq_ignore_ascii_case("CHANUNAVAIL") {
        ROUTE_UNAVAILABLE
    } else if status.eq_ignore_ascii_case("NOANSWER") || status.is_empty() {
        // Our own dial timeout (cause 0/16) or the far side's no-answer (cause 19): a missed call.
        match outcome.cause {
            None | Some(0 | 16 | 19 | 31 | 127) => MISSED,
            Some(_) => OTHER,
        }
    } else {
        OTHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: &str, cause: Option<u16>, tech: Option<u16>) -> DialOutcome {
        DialOutcome {
            dial_status: Some(status.into()),
            cause,
            tech_cause: tech,
        }
    }

    #[test]
    fn maps_the_documented_cases() {
        assert_eq!(failed_dial_status(&outcome("BUSY", Some(17), None)), BUSY);
        // PJSIP reports a 603 as NOANSWER + cause 21; TechCause, when present, is exact.
        assert_eq!(failed_dial_status(&outcome("NOANSWER", Some(21), None)), DECLINED);
        assert_eq!(failed_dial_status(&outcome("NOANSWER", Some(21), Some(403))), 403);
        assert_eq!(failed_dial_status(&outcome("NOANSWER", Some(0), None)), MISSED);
        assert_eq!(failed_dial_status(&outcome("CANCEL", Some(127), None)), CANCELLED);
        // Seen on Asterisk 22: the cancelled trunk leg reports TechCause 500 (our CANCEL, mapped back).
        assert_eq!(failed_dial_status(&outcome("CANCEL", Some(127), Some(500))), CANCELLED);
        assert_eq!(failed_dial_status(&outcome("NOANSWER", Some(1), None)), NOT_FOUND);
        assert_eq!(
            failed_dial_status(&outcome("NOANSWER", Some(28), None)),
            ADDRESS_INCOMPLETE
        );
        assert_eq!(
            failed_dial_status(&outcome("CONGESTION", Some(34), None)),
            ROUTE_UNAVAILABLE
        );
        assert_eq!(
            failed_dial_status(&outcome("CHANUNAVAIL", None, None)),
            ROUTE_UNAVAILABLE
        );
        assert_eq!(failed_dial_status(&outcome("NOANSWER", Some(20), None)), UNAVAILABLE);
        assert_eq!(failed_dial_status(&outcome("NOANSWER", Some(58), None)), OTHER);
        assert_eq!(failed_dial_status(&outcome("NOANSWER", None, Some(402))), 402);
        assert_eq!(failed_dial_status(&DialOutcome::default()), MISSED);
    }
}
