//! Registrations left open by a gap in following the PBX: the facts the engine needs to finish them, gathered
//! from the outbox and the call journal (see [`engine::OpenCall`]).

use serde_json::{json, Value};
use store::{EntryKind, StepState};
use web::gaps::{SavedGap, SavedRecovery};

use super::users::{store_time, tracker_time};
use super::Shared;
use crate::config::RecordingSettings;

/// The setting the pipeline keeps the last instant it followed the PBX in (microseconds since the epoch): after
/// a crash, the start of the gap.
pub const FOLLOWING_AT: &str = "pipeline.following_at";

/// The last instant a previous run followed the PBX, if it said.
pub async fn following_at(shared: &Shared) -> Option<tracker::Timestamp> {
    let saved = shared.store(|s| s.setting(FOLLOWING_AT)).await.ok().flatten()?;
    saved.as_i64().map(tracker::Timestamp::from_micros)
}

/// Says the pipeline follows the PBX as of `at`.
pub async fn save_following_at(shared: &Shared, at: tracker::Timestamp) {
    let value = json!(at.as_micros());
    if let Err(e) = shared
        .store(move |s| s.set_setting(FOLLOWING_AT, &value, store_time(at)))
        .await
    {
        tracing::warn!(error = %e, "cannot note in the store that the PBX is followed");
    }
}

/// Every call of the outbox with a registration but no finish that `is_live` does not claim, with what the
/// outbox and journal know of it. The gap runs from `gap_from` (or, when unknown, the call's last journaled
/// event) — never before the call's last event — to `now`.
pub async fn open_calls(
    shared: &Shared,
    is_live: impl Fn(&str) -> bool,
    gap_from: Option<tracker::Timestamp>,
    now: tracker::Timestamp,
    recordings: &RecordingSettings,
) -> anyhow::Result<Vec<engine::OpenCall>> {
    let candidates = shared
        .store(|s| s.calls_with_unmatched(engine::StepKind::Register.name(), engine::StepKind::Finish.name()))
        .await?;
    let mut open = Vec::new();
    for call in candidates.into_iter().filter(|c| !is_live(c)) {
        let key = call.clone();
        let (steps, journal) = shared
            .store(move |s| Ok((s.steps_of_call(&key)?, s.call_timeline(&key)?)))
            .await?;
        open.push(open_call(call, &steps, &journal, gap_from, now, recordings));
    }
    Ok(open)
}

/// What the outbox (`steps`) and the journal know of `call`, for the engine to finish its registrations. The
/// gap runs from `gap_from` (or, when unknown, the call's last journaled event) — never before the call's last
/// event — to `now`.
pub fn open_call(
    call: String,
    steps: &[store::Step],
    journal: &[store::JournalEntry],
    gap_from: Option<tracker::Timestamp>,
    now: tracker::Timestamp,
    recordings: &RecordingSettings,
) -> engine::OpenCall {
    let steps: Vec<engine::StoredStep> = steps
        .iter()
        .filter_map(|s| {
            let step = serde_json::from_value(s.payload.clone()).ok()?;
            Some(engine::StoredStep {
                step,
                given_up: matches!(s.state, StepState::Failed | StepState::Dropped),
            })
        })
        .collect();
    let mut decisions = Vec::new();
    let mut paths = Vec::new();
    let mut last_event = None;
    for entry in journal {
        let data = entry.data.as_ref().unwrap_or(&Value::Null);
        match entry.kind {
            EntryKind::Decision => {
                let Some(rule) = data.get("rule").and_then(|r| serde_json::from_value(r.clone()).ok()) else {
                    continue;
                };
                decisions.push(engine::Decision {
                    call: call.clone(),
                    time: tracker_time(entry.at),
                    rule,
                    reason: entry.message.clone(),
                    data: data.get("data").cloned().unwrap_or(Value::Null),
                });
            }
            EntryKind::Ami => {
                last_event = Some(tracker_time(entry.at));
                if entry.message == "recording_started" {
                    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                    let path = text("path");
                    if !path.trim().is_empty() && recordings.local_path(&path).exists() {
                        paths.push((text("conversation"), path));
                    }
                }
            }
            _ => {}
        }
    }
    let from = match (gap_from, last_event) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b).unwrap_or(now),
    };
    engine::OpenCall {
        call,
        source: engine::RecoverySource::Journal,
        steps,
        decisions,
        recordings: paths,
        gap: engine::Gap {
            from: from.min(now),
            to: now,
        },
        ended_at: None,
    }
}

/// The setting that keeps the period whose calls may be missing ([`web::gaps::SavedGap`]): a gap nothing
/// could recover calls from (no `[cel]`, or its database failed). Cleared once CEL recovers it.
pub const UNRECOVERED: &str = web::gaps::MAY_BE_MISSING;

/// The period whose calls may be missing, if any.
pub async fn unrecovered(shared: &Shared) -> Option<SavedGap> {
    let saved = shared.store(|s| s.setting(UNRECOVERED)).await.ok().flatten()?;
    serde_json::from_value(saved).ok()
}

/// Notes the period whose calls may be missing.
pub async fn save_unrecovered(shared: &Shared, gap: SavedGap) {
    let to = tracker::Timestamp::from_micros(gap.to);
    let value = match serde_json::to_value(&gap) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(error = %e, "cannot note in the store which period may miss calls");
            return;
        }
    };
    if let Err(e) = shared
        .store(move |s| s.set_setting(UNRECOVERED, &value, store_time(to)))
        .await
    {
        tracing::warn!(error = %e, "cannot note in the store which period may miss calls");
    }
}

/// Notes that CEL recovered `recovery`'s period: the period that may miss calls is cleared, and `/status` shows
/// what CEL gave back.
pub async fn save_recovered(shared: &Shared, recovery: SavedRecovery) {
    let at = tracker::Timestamp::from_micros(recovery.at);
    let result = match serde_json::to_value(&recovery) {
        Ok(value) => {
            shared
                .store(move |s| {
                    s.delete_setting(UNRECOVERED)?;
                    s.set_setting(web::gaps::LAST_RECOVERED, &value, store_time(at))
                })
                .await
        }
        Err(e) => Err(anyhow::anyhow!(e)),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot note in the store that CEL recovered the period");
    }
}
