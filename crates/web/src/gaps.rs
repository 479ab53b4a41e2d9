//! Periods ringlink did not follow the PBX, as the service keeps them in the store and `/status` shows them: the
//! one whose calls may be missing from the CRM (no `[cel]`, or its database failed), and the last one CEL gave
//! calls back for.
//!
//! The service writes both settings; this module only reads them, so the page, `/status` and `ringlink check`
//! say the same sentence the log said.

use serde::{Deserialize, Serialize};
use store::{Store, Timestamp};

use crate::status::rfc3339;

/// The store setting holding the period whose calls may be missing ([`SavedGap`]). Cleared once CEL recovers it.
pub const MAY_BE_MISSING: &str = "cel.unrecovered";
/// The store setting holding the last period CEL recovered calls for ([`SavedRecovery`]).
pub const LAST_RECOVERED: &str = "cel.last_recovered";

/// What `[cel]` does, in the words every "may be missing" sentence ends with when it is not configured.
pub const HOW_TO_ENABLE_CEL: &str = "to recover them, let Asterisk write its CEL to a database and name it in [cel] \
                                     in ringlink.toml (see the README, \"Calls missed while ringlink was down\")";

/// Why ringlink did not follow the PBX for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// ringlink was not running (an upgrade, a crash, its host rebooting).
    RinglinkStopped,
    /// The AMI connection was lost and came back.
    AmiDisconnected,
    /// AMI events arrived faster than they were read and some were dropped.
    EventsDropped,
}

impl GapCause {
    /// The cause in plain words.
    pub fn describe(self) -> &'static str {
        match self {
            GapCause::RinglinkStopped => "ringlink was stopped",
            GapCause::AmiDisconnected => "the AMI connection was lost",
            GapCause::EventsDropped => "AMI events were dropped",
        }
    }

    /// The causes in plain words, joined.
    pub fn describe_all(causes: &[GapCause]) -> String {
        causes.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; ")
    }
}

/// The period whose calls may be missing, as stored (instants in microseconds since the epoch). `message` is
/// the sentence the log said (`None` when a version that did not write it saved the period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGap {
    pub from: i64,
    pub to: i64,
    #[serde(default)]
    pub causes: Vec<GapCause>,
    #[serde(default)]
    pub how_to_recover: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// When an administrator acknowledged the period on the admin UI's Status page (microseconds since the
    /// epoch): `/status` still shows it, but it is no Warning any more. A later gap saves a new period without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<i64>,
}

/// The last period CEL recovered calls for, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRecovery {
    pub from: i64,
    pub to: i64,
    #[serde(default)]
    pub causes: Vec<GapCause>,
    /// Calls CEL showed that began and ended in the period.
    pub calls_found: usize,
    /// Of those, the calls registered now (the others were registered before, or are followed live).
    pub registered: usize,
    pub already_handled: usize,
    /// When the recovery ran.
    pub at: i64,
    pub message: String,
}

/// `/status`'s `gaps`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GapsStatus {
    /// A period whose calls may be missing from the CRM (a Warning), `null` when there is none.
    pub may_be_missing: Option<MissingPeriod>,
    /// The last period CEL gave calls back for, `null` before any (or without `[cel]`).
    pub last_recovered: Option<RecoveredPeriod>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MissingPeriod {
    pub from: String,
    pub to: String,
    /// `ringlink_stopped`, `ami_disconnected`, `events_dropped` (several when gaps were merged).
    pub causes: Vec<GapCause>,
    /// What brings the calls back (`[cel]` in ringlink.toml, or `ringlink reprocess`).
    pub how_to_recover: String,
    /// The sentence the log and `ringlink check` say (among `/status`'s reasons while `warning`).
    pub message: String,
    /// An administrator acknowledged the period on the Status page (`acknowledged_at` says when).
    pub acknowledged: bool,
    pub acknowledged_at: Option<String>,
    /// The period is among `/status`'s Warning reasons: neither acknowledged nor older than `web.gap_warning_hours`.
    pub warning: bool,
    /// `to` in microseconds, what the Status page's Acknowledge sends back.
    #[serde(skip)]
    pub to_micros: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveredPeriod {
    pub from: String,
    pub to: String,
    pub causes: Vec<GapCause>,
    pub calls_found: usize,
    pub registered: usize,
    pub already_handled: usize,
    pub recovered_at: String,
    pub message: String,
}

/// The sentence for a period that may miss calls (the log's, `/status`'s and `ringlink check`'s); `from` and
/// `to` as the reader should see them.
pub fn missing_sentence(from: &str, to: &str, causes: &[GapCause], how_to_recover: &str) -> String {
    let why = if causes.is_empty() {
        "ringlink did not follow the PBX then".to_owned()
    } else {
        format!("ringlink did not follow the PBX: {}", GapCause::describe_all(causes))
    };
    format!("calls between {from} and {to} may be missing from Bitrix24 ({why}); {how_to_recover}")
}

/// The sentence for a period CEL gave calls back for.
pub fn recovered_sentence(from: &str, to: &str, causes: &[GapCause], found: usize, registered: usize) -> String {
    let why = if causes.is_empty() {
        String::new()
    } else {
        format!(" ({})", GapCause::describe_all(causes))
    };
    format!(
        "calls of the gap recovered from CEL: between {from} and {to}{why}, {found} call(s) found that ended \
         while ringlink did not follow the PBX, {registered} registered now"
    )
}

fn saved<T: serde::de::DeserializeOwned>(store: &dyn Store, key: &str) -> store::Result<Option<T>> {
    Ok(store.setting(key)?.and_then(|value| serde_json::from_value(value).ok()))
}

/// The gaps as the store keeps them; a period that may miss calls is a Warning until it is acknowledged or
/// ended more than `warn_for` before `now`.
pub fn gaps(store: &dyn Store, now: Timestamp, warn_for: std::time::Duration) -> store::Result<GapsStatus> {
    let at = |micros: i64| rfc3339(Timestamp::from_micros(micros));
    let may_be_missing = saved::<SavedGap>(store, MAY_BE_MISSING)?.map(|gap| {
        let how = gap
            .how_to_recover
            .clone()
            .unwrap_or_else(|| HOW_TO_ENABLE_CEL.to_owned());
        let message = gap
            .message
            .clone()
            .unwrap_or_else(|| missing_sentence(&at(gap.from), &at(gap.to), &gap.causes, &how));
        let warn_for = i64::try_from(warn_for.as_micros()).unwrap_or(i64::MAX);
        let recent = now.as_micros().saturating_sub(gap.to) < warn_for;
        MissingPeriod {
            from: at(gap.from),
            to: at(gap.to),
            causes: gap.causes,
            how_to_recover: how,
            message,
            acknowledged: gap.acknowledged_at.is_some(),
            acknowledged_at: gap.acknowledged_at.map(at),
            warning: gap.acknowledged_at.is_none() && recent,
            to_micros: gap.to,
        }
    });
    let last_recovered = saved::<SavedRecovery>(store, LAST_RECOVERED)?.map(|r| RecoveredPeriod {
        from: at(r.from),
        to: at(r.to),
        causes: r.causes,
        calls_found: r.calls_found,
        registered: r.registered,
        already_handled: r.already_handled,
        recovered_at: at(r.at),
        message: r.message,
    });
    Ok(GapsStatus {
        may_be_missing,
        last_recovered,
    })
}

/// Marks the period whose calls may be missing as acknowledged at `now`, if it is still the one that ended at
/// `to` (the one the administrator saw: a later gap replaces it and warns again). Whether it was marked.
pub fn acknowledge(store: &dyn Store, to: i64, now: Timestamp) -> store::Result<bool> {
    let Some(mut gap) = saved::<SavedGap>(store, MAY_BE_MISSING)? else {
        return Ok(false);
    };
    if gap.to != to {
        return Ok(false);
    }
    if gap.acknowledged_at.is_none() {
        gap.acknowledged_at = Some(now.as_micros());
        let value = serde_json::to_value(&gap).unwrap_or(serde_json::Value::Null);
        store.set_setting(MAY_BE_MISSING, &value, now)?;
    }
    Ok(true)
}
