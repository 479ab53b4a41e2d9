//! The outbox of CRM steps.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde_json::Value;

use crate::codec::{count, from_json, optional_timestamp, sql_limit, to_json};
use crate::error::{Result, StoreError};
use crate::types::*;

const COLUMNS: &str = "id, call_key, seq, idempotency_key, kind, payload, priority, state, attempts, \
                       next_attempt_at, lease_until, last_error, result, expires_at, created_at, updated_at";

/// The conditions under which step `s` may be claimed at `?1`: nobody holds it, its time has come, it has not
/// expired, and no earlier step of its call is still open.
const DUE: &str = "(s.state = 'pending' OR (s.state = 'in_flight' AND s.lease_until <= ?1))
    AND s.next_attempt_at <= ?1
    AND (s.expires_at IS NULL OR s.expires_at > ?1)
    AND NOT EXISTS (SELECT 1 FROM steps e
                    WHERE e.call_key = s.call_key AND e.seq < s.seq AND e.state IN ('pending', 'in_flight'))";

/// Nobody holds step `s` at `?1`: pending, or in flight with its lease run out.
const UNHELD: &str = "(s.state = 'pending' OR (s.state = 'in_flight' AND s.lease_until <= ?1))";

fn step_from_row(row: &Row<'_>) -> Result<Step> {
    let state: String = row.get(7)?;
    let attempts: i64 = row.get(8)?;
    let payload: String = row.get(5)?;
    let result: Option<String> = row.get(12)?;
    Ok(Step {
        id: StepId(row.get(0)?),
        call_key: row.get(1)?,
        seq: row.get(2)?,
        idempotency_key: row.get(3)?,
        kind: row.get(4)?,
        payload: from_json(&payload, "step payload")?,
        priority: row.get(6)?,
        state: StepState::parse(&state).ok_or(StoreError::Corrupt {
            what: "step state",
            detail: state,
        })?,
        attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt {
            what: "step attempts",
            detail: attempts.to_string(),
        })?,
        next_attempt_at: Timestamp::from_micros(row.get(9)?),
        lease_until: optional_timestamp(row.get(10)?),
        last_error: row.get(11)?,
        result: result.map(|text| from_json(&text, "step result")).transpose()?,
        expires_at: optional_timestamp(row.get(13)?),
        created_at: Timestamp::from_micros(row.get(14)?),
        updated_at: Timestamp::from_micros(row.get(15)?),
    })
}

/// Runs a query whose columns are [`COLUMNS`] and reads every row.
fn query_steps(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Step>> {
    let mut statement = tx.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut steps = Vec::new();
    while let Some(row) = rows.next()? {
        steps.push(step_from_row(row)?);
    }
    Ok(steps)
}

pub fn by_key(tx: &Transaction<'_>, idempotency_key: &str) -> Result<Option<Step>> {
    let sql = format!("SELECT {COLUMNS} FROM steps WHERE idempotency_key = ?1");
    Ok(query_steps(tx, &sql, [idempotency_key])?.pop())
}

pub fn by_keys(tx: &Transaction<'_>, idempotency_keys: &[String]) -> Result<Vec<Step>> {
    let mut found = Vec::with_capacity(idempotency_keys.len());
    for key in idempotency_keys {
        found.extend(by_key(tx, key)?);
    }
    Ok(found)
}

fn by_id(tx: &Transaction<'_>, id: StepId) -> Result<Option<Step>> {
    let sql = format!("SELECT {COLUMNS} FROM steps WHERE id = ?1");
    Ok(query_steps(tx, &sql, [id.0])?.pop())
}

pub fn of_call(tx: &Transaction<'_>, call_key: &str) -> Result<Vec<Step>> {
    let sql = format!("SELECT {COLUMNS} FROM steps WHERE call_key = ?1 ORDER BY seq");
    query_steps(tx, &sql, [call_key])
}

pub fn calls_with_unmatched(tx: &Transaction<'_>, opening: &str, closing: &str) -> Result<Vec<String>> {
    let mut stmt = tx.prepare_cached(
        "SELECT call_key FROM steps GROUP BY call_key \
         HAVING SUM(kind = ?1 AND state NOT IN ('failed', 'dropped')) > SUM(kind = ?2) \
         ORDER BY MIN(id)",
    )?;
    let rows = stmt.query_map([opening, closing], |row| row.get::<_, String>(0))?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

pub fn enqueue(tx: &Transaction<'_>, steps: &[NewStep], now: Timestamp) -> Result<Vec<Enqueued>> {
    let mut outcomes = Vec::with_capacity(steps.len());
    for new in steps {
        if let Some(existing) = by_key(tx, &new.idempotency_key)? {
            outcomes.push(Enqueued {
                step: existing,
                created: false,
            });
            continue;
        }
        let seq: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE call_key = ?1")?
            .query_row([&new.call_key], |row| row.get(0))?;
        let next_attempt_at = new.not_before.map_or(now, |not_before| not_before.max(now));
        let payload = to_json(&new.payload, "step payload")?;
        tx.prepare_cached(
            "INSERT INTO steps (call_key, seq, idempotency_key, kind, payload, priority, state, attempts,
                                next_attempt_at, expires_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?8, ?9, ?9)",
        )?
        .execute(params![
            new.call_key,
            seq,
            new.idempotency_key,
            new.kind,
            payload,
            new.priority,
            next_attempt_at.as_micros(),
            new.expires_at.map(Timestamp::as_micros),
            now.as_micros(),
        ])?;
        let step = Step {
            id: StepId(tx.last_insert_rowid()),
            call_key: new.call_key.clone(),
            seq,
            idempotency_key: new.idempotency_key.clone(),
            kind: new.kind.clone(),
            payload: new.payload.clone(),
            priority: new.priority,
            state: StepState::Pending,
            attempts: 0,
            next_attempt_at,
            lease_until: None,
            last_error: None,
            result: None,
            expires_at: new.expires_at,
            created_at: now,
            updated_at: now,
        };
        outcomes.push(Enqueued { step, created: true });
    }
    Ok(outcomes)
}

pub fn due(tx: &Transaction<'_>, now: Timestamp, limit: usize) -> Result<Vec<Step>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM steps s WHERE s.state IN ('pending', 'in_flight') AND {DUE}
         ORDER BY s.priority DESC, s.next_attempt_at, s.id LIMIT ?2"
    );
    query_steps(tx, &sql, params![now.as_micros(), sql_limit(limit)])
}

fn lease_end(now: Timestamp, lease: Duration) -> Timestamp {
    now.saturating_add(lease)
}

/// Claims one step if it is still due; returns it as claimed.
fn claim_one(tx: &Transaction<'_>, id: StepId, now: Timestamp, lease: Duration) -> Result<Option<Step>> {
    let sql = format!(
        "UPDATE steps AS s SET state = 'in_flight', attempts = attempts + 1, lease_until = ?3, updated_at = ?1
         WHERE s.id = ?2 AND {DUE}"
    );
    let changed =
        tx.prepare_cached(&sql)?
            .execute(params![now.as_micros(), id.0, lease_end(now, lease).as_micros()])?;
    if changed == 0 {
        return Ok(None);
    }
    by_id(tx, id)
}

pub fn claim(tx: &Transaction<'_>, ids: &[StepId], now: Timestamp, lease: Duration) -> Result<Vec<Step>> {
    let mut claimed = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Some(step) = claim_one(tx, id, now, lease)? {
            claimed.push(step);
        }
    }
    Ok(claimed)
}

pub fn claim_due(tx: &Transaction<'_>, now: Timestamp, limit: usize, lease: Duration) -> Result<ClaimOutcome> {
    let expired = drop_expired(tx, now)?;
    let ids: Vec<StepId> = due(tx, now, limit)?.into_iter().map(|step| step.id).collect();
    // Every step just read is due within this transaction, so each claim succeeds.
    let claimed = claim(tx, &ids, now, lease)?;
    Ok(ClaimOutcome {
        claimed,
        expired,
        followers: Vec::new(),
    })
}

/// Claims the step right after `leader` in its call when it is of one of `kinds`, pending and due; `leader` is
/// in flight, so the follower could not be claimed on its own.
pub fn claim_follower(
    tx: &Transaction<'_>,
    leader: &Step,
    kinds: &[&str],
    now: Timestamp,
    lease: Duration,
) -> Result<Option<Step>> {
    let sql = format!("SELECT {COLUMNS} FROM steps WHERE call_key = ?1 AND seq > ?2 ORDER BY seq LIMIT 1");
    let Some(next) = query_steps(tx, &sql, params![leader.call_key, leader.seq])?.pop() else {
        return Ok(None);
    };
    let due = next.state == StepState::Pending
        && next.next_attempt_at <= now
        && next.expires_at.is_none_or(|at| at > now)
        && kinds.contains(&next.kind.as_str());
    if !due {
        return Ok(None);
    }
    let changed = tx
        .prepare_cached(
            "UPDATE steps SET state = 'in_flight', attempts = attempts + 1, lease_until = ?3, updated_at = ?1
             WHERE id = ?2 AND state = 'pending'",
        )?
        .execute(params![now.as_micros(), next.id.0, lease_end(now, lease).as_micros()])?;
    if changed == 0 {
        return Ok(None);
    }
    by_id(tx, next.id)
}

/// [`claim_due`], and for each claimed step the steps right after it in its call that `pairs` say may follow it
/// (see [`crate::Store::claim_due_with_followers`]).
pub fn claim_due_with_followers(
    tx: &Transaction<'_>,
    now: Timestamp,
    limit: usize,
    lease: Duration,
    pairs: &[(&str, &str)],
) -> Result<ClaimOutcome> {
    let mut outcome = claim_due(tx, now, limit, lease)?;
    for leader in &outcome.claimed {
        claim_followers(tx, leader, now, lease, pairs, &mut outcome.followers)?;
    }
    Ok(outcome)
}

/// Claims the steps right after `leader` in its call that `pairs` say may follow it, in call order, onto
/// `followers`.
fn claim_followers(
    tx: &Transaction<'_>,
    leader: &Step,
    now: Timestamp,
    lease: Duration,
    pairs: &[(&str, &str)],
    followers: &mut Vec<Step>,
) -> Result<()> {
    let mut last = leader.clone();
    loop {
        let kinds = crate::follower_kinds(pairs, &last.kind);
        if kinds.is_empty() {
            return Ok(());
        }
        let Some(next) = claim_follower(tx, &last, &kinds, now, lease)? else {
            return Ok(());
        };
        followers.push(next.clone());
        last = next;
    }
}

/// Claims the steps of `enqueued` that were created, are of one of `claim.kinds` and are due, with their
/// followers (see [`crate::Store::enqueue_journaled_and_claim`]).
pub fn claim_new(
    tx: &Transaction<'_>,
    enqueued: &[Enqueued],
    now: Timestamp,
    claim: &ClaimNew<'_>,
) -> Result<ClaimOutcome> {
    let mut outcome = ClaimOutcome::default();
    let new = enqueued
        .iter()
        .filter(|e| e.created && claim.kinds.contains(&e.step.kind.as_str()));
    for enqueued in new {
        if outcome.claimed.len() >= claim.limit {
            break;
        }
        // Not due (an earlier step of its call is open), or already claimed as a follower.
        let Some(leader) = claim_one(tx, enqueued.step.id, now, claim.lease)? else {
            continue;
        };
        claim_followers(tx, &leader, now, claim.lease, claim.pairs, &mut outcome.followers)?;
        outcome.claimed.push(leader);
    }
    Ok(outcome)
}

/// How an attempt ended.
pub enum Finish<'a> {
    Done(&'a Value),
    Retry { error: &'a str, next_attempt_at: Timestamp },
    Failed(&'a str),
    Dropped(&'a str),
}

impl<'a> From<&'a Outcome> for Finish<'a> {
    fn from(outcome: &'a Outcome) -> Self {
        match outcome {
            Outcome::Done(result) => Finish::Done(result),
            Outcome::Retry { error, next_attempt_at } => Finish::Retry {
                error,
                next_attempt_at: *next_attempt_at,
            },
            Outcome::Failed(reason) => Finish::Failed(reason),
            Outcome::Dropped(reason) => Finish::Dropped(reason),
        }
    }
}

pub fn finish(tx: &Transaction<'_>, lease: Lease, how: Finish<'_>, now: Timestamp) -> Result<()> {
    let mut statement = tx.prepare_cached(
        "UPDATE steps SET state = ?4, lease_until = NULL, updated_at = ?3,
                          result = COALESCE(?5, result), last_error = COALESCE(?6, last_error),
                          next_attempt_at = COALESCE(?7, next_attempt_at)
         WHERE id = ?1 AND attempts = ?2 AND state = 'in_flight'",
    )?;
    let (state, result, error, next_attempt_at) = match how {
        Finish::Done(result) => (StepState::Done, Some(to_json(result, "step result")?), None, None),
        Finish::Retry { error, next_attempt_at } => (StepState::Pending, None, Some(error), Some(next_attempt_at)),
        Finish::Failed(reason) => (StepState::Failed, None, Some(reason), None),
        Finish::Dropped(reason) => (StepState::Dropped, None, Some(reason), None),
    };
    let changed = statement.execute(params![
        lease.step.0,
        i64::from(lease.attempt),
        now.as_micros(),
        state.as_str(),
        result,
        error,
        next_attempt_at.map(Timestamp::as_micros),
    ])?;
    if changed == 0 {
        return Err(StoreError::LeaseLost { lease });
    }
    Ok(())
}

/// Records several attempts; returns the leases that were no longer current (nothing changed for those).
pub fn finish_many(tx: &Transaction<'_>, marks: &[(Lease, Outcome)], now: Timestamp) -> Result<Vec<Lease>> {
    let mut lost = Vec::new();
    for (lease, outcome) in marks {
        match finish(tx, *lease, Finish::from(outcome), now) {
            Ok(()) => {}
            Err(StoreError::LeaseLost { lease }) => lost.push(lease),
            Err(other) => return Err(other),
        }
    }
    Ok(lost)
}

pub fn drop_pending(tx: &Transaction<'_>, idempotency_key: &str, reason: &str, now: Timestamp) -> Result<bool> {
    let sql = format!(
        "UPDATE steps AS s SET state = 'dropped', lease_until = NULL, last_error = ?3, updated_at = ?1
         WHERE s.idempotency_key = ?2 AND {UNHELD}"
    );
    let changed = tx
        .prepare_cached(&sql)?
        .execute(params![now.as_micros(), idempotency_key, reason])?;
    Ok(changed > 0)
}

pub fn drop_expired(tx: &Transaction<'_>, now: Timestamp) -> Result<Vec<Step>> {
    let sql = format!(
        "UPDATE steps AS s SET state = 'dropped', lease_until = NULL, updated_at = ?1,
                               last_error = 'expired before it could be sent'
         WHERE s.state IN ('pending', 'in_flight') AND {UNHELD} AND s.expires_at <= ?1
         RETURNING {COLUMNS}"
    );
    let mut dropped = query_steps(tx, &sql, [now.as_micros()])?;
    dropped.sort_by_key(|step| step.id);
    Ok(dropped)
}

pub fn counts(tx: &Transaction<'_>) -> Result<StepCounts> {
    let mut counts = StepCounts::default();
    // Kept by triggers as steps change (migration 5).
    let mut statement = tx.prepare_cached("SELECT state, n FROM step_counts")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let state: String = row.get(0)?;
        let number = count(row.get(1)?, "step count")?;
        match StepState::parse(&state) {
            Some(StepState::Pending) => counts.pending = number,
            Some(StepState::InFlight) => counts.in_flight = number,
            Some(StepState::Done) => counts.done = number,
            Some(StepState::Dropped) => counts.dropped = number,
            Some(StepState::Failed) => counts.failed = number,
            None => {
                return Err(StoreError::Corrupt {
                    what: "step state",
                    detail: state,
                })
            }
        }
    }
    let oldest: Option<i64> = tx
        .prepare_cached("SELECT MIN(created_at) FROM steps WHERE state IN ('pending', 'in_flight')")?
        .query_row([], |row| row.get(0))
        .optional()?
        .flatten();
    counts.oldest_open_created_at = optional_timestamp(oldest);
    Ok(counts)
}

pub fn reprocess(tx: &Transaction<'_>, scope: &ReprocessScope, now: Timestamp) -> Result<u64> {
    const RESET: &str = "UPDATE steps SET state = 'pending', attempts = 0, next_attempt_at = ?1, lease_until = NULL,
                                          updated_at = ?1
                         WHERE state IN ('failed', 'dropped') AND (expires_at IS NULL OR expires_at > ?1)";
    let changed = match scope {
        ReprocessScope::Call(call_key) => tx
            .prepare_cached(&format!("{RESET} AND call_key = ?2"))?
            .execute(params![now.as_micros(), call_key])?,
        ReprocessScope::CreatedBetween { from, to } => tx
            .prepare_cached(&format!("{RESET} AND created_at >= ?2 AND created_at < ?3"))?
            .execute(params![now.as_micros(), from.as_micros(), to.as_micros()])?,
    };
    Ok(changed as u64)
}

pub fn release_claims(tx: &Transaction<'_>, now: Timestamp) -> Result<u64> {
    let changed = tx
        .prepare_cached(
            "UPDATE steps SET state = 'pending', lease_until = NULL, next_attempt_at = ?1, updated_at = ?1 \
             WHERE state = 'in_flight'",
        )?
        .execute([now.as_micros()])?;
    Ok(changed as u64)
}

pub fn prune(tx: &Transaction<'_>, before: Timestamp) -> Result<u64> {
    let changed = tx
        .prepare_cached(
            "DELETE FROM steps WHERE call_key IN (
                 SELECT call_key FROM steps GROUP BY call_key
                 HAVING SUM(state IN ('pending', 'in_flight')) = 0 AND MAX(updated_at) < ?1)",
        )?
        .execute([before.as_micros()])?;
    Ok(changed as u64)
}
