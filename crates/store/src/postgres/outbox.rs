//! The outbox of CRM steps on PostgreSQL. `$1` is always the tenant.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Row;

use super::{journal, Tx};
use crate::codec::{count, from_json, optional_timestamp, sql_limit, to_json};
use crate::error::{Result, StoreError};
use crate::types::*;

const COLUMNS: &str = "s.id, s.call_key, s.seq, s.idempotency_key, s.kind, s.payload, s.priority, s.state, \
                       s.attempts, s.next_attempt_at, s.lease_until, s.last_error, s.result, s.expires_at, \
                       s.created_at, s.updated_at";

/// Step `s` of tenant `$1` may be claimed at `$2`: nobody holds it, its time has come, it has not expired, and
/// no earlier step of its call is still open.
const DUE: &str = "s.tenant = $1
    AND (s.state = 'pending' OR (s.state = 'in_flight' AND s.lease_until <= $2))
    AND s.next_attempt_at <= $2
    AND (s.expires_at IS NULL OR s.expires_at > $2)
    AND NOT EXISTS (SELECT 1 FROM steps e
                    WHERE e.tenant = s.tenant AND e.call_key = s.call_key AND e.seq < s.seq
                      AND e.state IN ('pending', 'in_flight'))";

/// Nobody holds step `s` at `$2`: pending, or in flight with its lease run out.
const UNHELD: &str = "(s.state = 'pending' OR (s.state = 'in_flight' AND s.lease_until <= $2))";

fn step_from_row(row: &Row) -> Result<Step> {
    let state: String = row.try_get(7)?;
    let attempts: i32 = row.try_get(8)?;
    let payload: String = row.try_get(5)?;
    let result: Option<String> = row.try_get(12)?;
    Ok(Step {
        id: StepId(row.try_get(0)?),
        call_key: row.try_get(1)?,
        seq: row.try_get(2)?,
        idempotency_key: row.try_get(3)?,
        kind: row.try_get(4)?,
        payload: from_json(&payload, "step payload")?,
        priority: row.try_get(6)?,
        state: StepState::parse(&state).ok_or(StoreError::Corrupt {
            what: "step state",
            detail: state,
        })?,
        attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt {
            what: "step attempts",
            detail: attempts.to_string(),
        })?,
        next_attempt_at: Timestamp::from_micros(row.try_get(9)?),
        lease_until: optional_timestamp(row.try_get(10)?),
        last_error: row.try_get(11)?,
        result: result.map(|text| from_json(&text, "step result")).transpose()?,
        expires_at: optional_timestamp(row.try_get(13)?),
        created_at: Timestamp::from_micros(row.try_get(14)?),
        updated_at: Timestamp::from_micros(row.try_get(15)?),
    })
}

fn steps_from_rows(rows: &[Row]) -> Result<Vec<Step>> {
    rows.iter().map(step_from_row).collect()
}

/// The order of the due query: priority, then time, then id.
fn sort_due(steps: &mut [Step]) {
    steps.sort_by_key(|step| (std::cmp::Reverse(step.priority), step.next_attempt_at, step.id));
}

pub async fn by_key(tx: &mut Tx<'_>, idempotency_key: &str) -> Result<Option<Step>> {
    let sql = format!("SELECT {COLUMNS} FROM steps s WHERE s.tenant = $1 AND s.idempotency_key = $2");
    let tenant = tx.tenant;
    let rows = tx.query(&sql, &[&tenant, &idempotency_key]).await?;
    Ok(steps_from_rows(&rows)?.pop())
}

pub async fn by_keys(tx: &mut Tx<'_>, idempotency_keys: &[String]) -> Result<Vec<Step>> {
    if idempotency_keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {COLUMNS} FROM steps s WHERE s.tenant = $1 AND s.idempotency_key = ANY($2)");
    let tenant = tx.tenant;
    steps_from_rows(&tx.query(&sql, &[&tenant, &idempotency_keys]).await?)
}

pub async fn of_call(tx: &mut Tx<'_>, call_key: &str) -> Result<Vec<Step>> {
    let sql = format!("SELECT {COLUMNS} FROM steps s WHERE s.tenant = $1 AND s.call_key = $2 ORDER BY s.seq");
    let tenant = tx.tenant;
    steps_from_rows(&tx.query(&sql, &[&tenant, &call_key]).await?)
}

pub async fn calls_with_unmatched(tx: &mut Tx<'_>, opening: &str, closing: &str) -> Result<Vec<String>> {
    let tenant = tx.tenant;
    let rows = tx
        .query(
            "SELECT call_key FROM steps WHERE tenant = $1 GROUP BY call_key
             HAVING COUNT(*) FILTER (WHERE kind = $2 AND state NOT IN ('failed', 'dropped'))
                  > COUNT(*) FILTER (WHERE kind = $3)
             ORDER BY MIN(id)",
            &[&tenant, &opening, &closing],
        )
        .await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// Locks the call for the rest of the transaction: its next `seq` is read and used by one writer at a time.
async fn lock_call(tx: &mut Tx<'_>, call_key: &str) -> Result<()> {
    let tenant = tx.tenant;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))",
        &[&tenant, &call_key],
    )
    .await?;
    Ok(())
}

pub async fn enqueue(tx: &mut Tx<'_>, steps: &[NewStep], now: Timestamp) -> Result<Vec<Enqueued>> {
    let tenant = tx.tenant;
    let mut outcomes = Vec::with_capacity(steps.len());
    for new in steps {
        if let Some(existing) = by_key(tx, &new.idempotency_key).await? {
            outcomes.push(Enqueued {
                step: existing,
                created: false,
            });
            continue;
        }
        lock_call(tx, &new.call_key).await?;
        let seq: i64 = tx
            .query(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE tenant = $1 AND call_key = $2",
                &[&tenant, &new.call_key],
            )
            .await?
            .first()
            .map(|row| row.try_get(0))
            .transpose()?
            .unwrap_or(1);
        let next_attempt_at = new.not_before.map_or(now, |not_before| not_before.max(now));
        let payload = to_json(&new.payload, "step payload")?;
        let inserted = tx
            .query(
                "INSERT INTO steps (tenant, call_key, seq, idempotency_key, kind, payload, priority, state, attempts,
                                    next_attempt_at, expires_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $9, $10, $10)
                 ON CONFLICT (tenant, idempotency_key) DO NOTHING
                 RETURNING id",
                &[
                    &tenant,
                    &new.call_key,
                    &seq,
                    &new.idempotency_key,
                    &new.kind,
                    &payload,
                    &new.priority,
                    &next_attempt_at.as_micros(),
                    &new.expires_at.map(Timestamp::as_micros),
                    &now.as_micros(),
                ],
            )
            .await?;
        let Some(row) = inserted.first() else {
            // Another instance enqueued the same key since we looked: first write wins.
            let existing = by_key(tx, &new.idempotency_key).await?.ok_or(StoreError::Corrupt {
                what: "step",
                detail: format!("{} conflicted on insert and cannot be read", new.idempotency_key),
            })?;
            outcomes.push(Enqueued {
                step: existing,
                created: false,
            });
            continue;
        };
        let step = Step {
            id: StepId(row.try_get(0)?),
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

pub async fn due(tx: &mut Tx<'_>, now: Timestamp, limit: usize) -> Result<Vec<Step>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM steps s WHERE s.state IN ('pending', 'in_flight') AND {DUE}
         ORDER BY s.priority DESC, s.next_attempt_at, s.id LIMIT $3"
    );
    let tenant = tx.tenant;
    steps_from_rows(&tx.query(&sql, &[&tenant, &now.as_micros(), &sql_limit(limit)]).await?)
}

fn lease_end(now: Timestamp, lease: Duration) -> i64 {
    now.saturating_add(lease).as_micros()
}

pub async fn claim(tx: &mut Tx<'_>, ids: &[StepId], now: Timestamp, lease: Duration) -> Result<Vec<Step>> {
    let sql = format!(
        "UPDATE steps s SET state = 'in_flight', attempts = s.attempts + 1, lease_until = $4, updated_at = $2
         WHERE s.id = $3 AND {DUE}
         RETURNING {COLUMNS}"
    );
    let tenant = tx.tenant;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let rows = tx
            .query(&sql, &[&tenant, &now.as_micros(), &id.0, &lease_end(now, lease)])
            .await?;
        claimed.extend(steps_from_rows(&rows)?);
    }
    Ok(claimed)
}

/// Drops what expired, then claims up to `limit` due steps in one statement that skips the rows another
/// transaction is claiming (`FOR UPDATE SKIP LOCKED`), then the followers of each claimed step of a pair.
pub async fn claim_due(
    tx: &mut Tx<'_>,
    now: Timestamp,
    limit: usize,
    lease: Duration,
    pairs: &[(&str, &str)],
) -> Result<ClaimOutcome> {
    let expired = drop_expired(tx, now).await?;
    let sql = format!(
        "WITH due AS (
             SELECT s.id FROM steps s WHERE s.state IN ('pending', 'in_flight') AND {DUE}
             ORDER BY s.priority DESC, s.next_attempt_at, s.id
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE steps s SET state = 'in_flight', attempts = s.attempts + 1, lease_until = $4, updated_at = $2
         FROM due WHERE s.id = due.id
         RETURNING {COLUMNS}"
    );
    let tenant = tx.tenant;
    let rows = tx
        .query(
            &sql,
            &[&tenant, &now.as_micros(), &sql_limit(limit), &lease_end(now, lease)],
        )
        .await?;
    let mut claimed = steps_from_rows(&rows)?;
    sort_due(&mut claimed);
    let mut followers = Vec::new();
    for leader in &claimed {
        claim_followers(tx, leader, now, lease, pairs, &mut followers).await?;
    }
    Ok(ClaimOutcome {
        claimed,
        expired,
        followers,
    })
}

/// Claims the steps right after `leader` in its call that `pairs` say may follow it, in call order, onto
/// `followers`.
async fn claim_followers(
    tx: &mut Tx<'_>,
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
        let Some(next) = claim_follower(tx, &last, &kinds, now, lease).await? else {
            return Ok(());
        };
        followers.push(next.clone());
        last = next;
    }
}

/// Claims the steps of `enqueued` that were created, are of one of `wanted.kinds` and are due, with their
/// followers (see [`crate::Store::enqueue_journaled_and_claim`]). The rows were inserted by this transaction:
/// nobody else can hold them.
pub async fn claim_new(
    tx: &mut Tx<'_>,
    enqueued: &[Enqueued],
    now: Timestamp,
    wanted: &ClaimNew<'_>,
) -> Result<ClaimOutcome> {
    let mut outcome = ClaimOutcome::default();
    let new = enqueued
        .iter()
        .filter(|e| e.created && wanted.kinds.contains(&e.step.kind.as_str()));
    for enqueued in new {
        if outcome.claimed.len() >= wanted.limit {
            break;
        }
        // Not due (an earlier step of its call is open), or already claimed as a follower.
        let Some(leader) = claim(tx, &[enqueued.step.id], now, wanted.lease).await?.pop() else {
            continue;
        };
        claim_followers(tx, &leader, now, wanted.lease, wanted.pairs, &mut outcome.followers).await?;
        outcome.claimed.push(leader);
    }
    Ok(outcome)
}

/// Open steps of a tenant beyond twice what the planner estimates, plus this many, make the statistics stale.
const STALE_OPEN_STEPS: f64 = 500.0;

/// Analyses `steps` when the tenant's open steps outgrew what the planner's statistics say of them; returns
/// whether it did. The claim is planned from them: statistics of a nearly empty outbox (a new database, whose
/// indexes were made empty; one analysed when nothing was open; a tenant new to the database) estimate a few open
/// steps, and over thousands the plan's check for an earlier open step of the call compares every open step with
/// every other — a round of seconds. Autovacuum analyses the table only once a tenth of it changed, and up to a
/// minute later: a backlog enqueued at once (after an outage) is claimed before that. The count is the store's
/// own (`step_counts`), the estimate the planner's for the same rows. Only the table's owner may analyse it (a
/// store that may not leaves it to autovacuum); `SKIP_LOCKED`: a claim never waits for an `ANALYZE` or `VACUUM`
/// already running. Run in a transaction of its own before the claim's: what it analysed stays whatever becomes
/// of the claim, and none of the claim's locks is held meanwhile.
pub async fn refresh_statistics(tx: &mut Tx<'_>) -> Result<bool> {
    let tenant = tx.tenant;
    let Some(row) = tx
        .query_opt(
            "SELECT (SELECT COALESCE(SUM(n), 0) FROM step_counts
                     WHERE tenant = $1 AND state IN ('pending', 'in_flight'))::float8,
                    pg_has_role(t.relowner, 'USAGE')
             FROM pg_class t WHERE t.oid = to_regclass('steps')",
            &[&tenant],
        )
        .await?
    else {
        return Ok(false);
    };
    let open: f64 = row.try_get(0)?;
    let owner: bool = row.try_get(1)?;
    if !owner || open <= STALE_OPEN_STEPS {
        return Ok(false);
    }
    let plan = tx
        .query(
            "EXPLAIN SELECT 1 FROM steps WHERE tenant = $1 AND state IN ('pending', 'in_flight')",
            &[&tenant],
        )
        .await?;
    let estimated = plan
        .first()
        .and_then(|row| row.try_get::<_, String>(0).ok())
        .and_then(|line| estimated_rows(&line));
    match estimated {
        Some(estimated) if open > 2.0 * estimated + STALE_OPEN_STEPS => {
            tx.tx.batch_execute("ANALYZE (SKIP_LOCKED) steps").await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The `rows=` of the top line of a plan (`Seq Scan on steps  (cost=0.00..1.05 rows=5 width=4)`).
fn estimated_rows(line: &str) -> Option<f64> {
    let after = &line[line.find(" rows=")? + " rows=".len()..];
    let digits = after.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Claims the step right after `leader` in its call when it is of one of `kinds`, pending and due; `leader` is
/// in flight (and locked by this transaction), so the follower could not be claimed on its own.
async fn claim_follower(
    tx: &mut Tx<'_>,
    leader: &Step,
    kinds: &[&str],
    now: Timestamp,
    lease: Duration,
) -> Result<Option<Step>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM steps s WHERE s.tenant = $1 AND s.call_key = $2 AND s.seq > $3
         ORDER BY s.seq LIMIT 1"
    );
    let tenant = tx.tenant;
    let rows = tx.query(&sql, &[&tenant, &leader.call_key, &leader.seq]).await?;
    let Some(next) = steps_from_rows(&rows)?.pop() else {
        return Ok(None);
    };
    let due = next.state == StepState::Pending
        && next.next_attempt_at <= now
        && next.expires_at.is_none_or(|at| at > now)
        && kinds.contains(&next.kind.as_str());
    if !due {
        return Ok(None);
    }
    let sql = format!(
        "UPDATE steps s SET state = 'in_flight', attempts = s.attempts + 1, lease_until = $3, updated_at = $2
         WHERE s.tenant = $1 AND s.id = $4 AND s.state = 'pending'
         RETURNING {COLUMNS}"
    );
    let rows = tx
        .query(&sql, &[&tenant, &now.as_micros(), &lease_end(now, lease), &next.id.0])
        .await?;
    Ok(steps_from_rows(&rows)?.pop())
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

pub async fn finish(tx: &mut Tx<'_>, lease: Lease, how: &Finish<'_>, now: Timestamp) -> Result<()> {
    let (state, result, error, next_attempt_at) = match how {
        Finish::Done(result) => (StepState::Done, Some(to_json(result, "step result")?), None, None),
        Finish::Retry { error, next_attempt_at } => (
            StepState::Pending,
            None,
            Some(*error),
            Some(next_attempt_at.as_micros()),
        ),
        Finish::Failed(reason) => (StepState::Failed, None, Some(*reason), None),
        Finish::Dropped(reason) => (StepState::Dropped, None, Some(*reason), None),
    };
    let tenant = tx.tenant;
    let changed = tx
        .execute(
            "UPDATE steps SET state = $5, lease_until = NULL, updated_at = $4,
                              result = COALESCE($6, result), last_error = COALESCE($7, last_error),
                              next_attempt_at = COALESCE($8, next_attempt_at)
             WHERE tenant = $1 AND id = $2 AND attempts = $3 AND state = 'in_flight'",
            &[
                &tenant,
                &lease.step.0,
                &i32::try_from(lease.attempt).unwrap_or(i32::MAX),
                &now.as_micros(),
                &state.as_str(),
                &result,
                &error,
                &next_attempt_at,
            ],
        )
        .await?;
    if changed == 0 {
        return Err(StoreError::LeaseLost { lease });
    }
    Ok(())
}

/// Records several attempts and appends `journal`; returns the leases that were no longer current.
pub async fn finish_many(
    tx: &mut Tx<'_>,
    marks: &[(Lease, Outcome)],
    journal: &[NewJournalEntry],
    now: Timestamp,
) -> Result<Vec<Lease>> {
    let mut lost = Vec::new();
    for (lease, outcome) in marks {
        match finish(tx, *lease, &Finish::from(outcome), now).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost { lease }) => lost.push(lease),
            Err(other) => return Err(other),
        }
    }
    journal::append(tx, journal).await?;
    Ok(lost)
}

pub async fn drop_pending(tx: &mut Tx<'_>, idempotency_key: &str, reason: &str, now: Timestamp) -> Result<bool> {
    let sql = format!(
        "UPDATE steps s SET state = 'dropped', lease_until = NULL, last_error = $4, updated_at = $2
         WHERE s.tenant = $1 AND s.idempotency_key = $3 AND {UNHELD}"
    );
    let tenant = tx.tenant;
    let changed = tx
        .execute(&sql, &[&tenant, &now.as_micros(), &idempotency_key, &reason])
        .await?;
    Ok(changed > 0)
}

pub async fn drop_expired(tx: &mut Tx<'_>, now: Timestamp) -> Result<Vec<Step>> {
    let sql = format!(
        "UPDATE steps s SET state = 'dropped', lease_until = NULL, updated_at = $2,
                            last_error = 'expired before it could be sent'
         WHERE s.tenant = $1 AND s.state IN ('pending', 'in_flight') AND {UNHELD} AND s.expires_at <= $2
         RETURNING {COLUMNS}"
    );
    let tenant = tx.tenant;
    let mut dropped = steps_from_rows(&tx.query(&sql, &[&tenant, &now.as_micros()]).await?)?;
    dropped.sort_by_key(|step| step.id);
    Ok(dropped)
}

/// Sums the tenant's rows of count changes into one row per state (migration 7): the rows the triggers add
/// since the last fold. Only the rows committed when it starts are taken (and locked, so a fold running beside
/// it skips them); rows added meanwhile stay for the next. Returns the rows folded.
pub async fn fold_counts(tx: &mut Tx<'_>) -> Result<u64> {
    let tenant = tx.tenant;
    let Some(row) = tx
        .query_opt(
            "WITH gone AS (DELETE FROM step_counts WHERE tenant = $1 RETURNING state, n),
                  summed AS (INSERT INTO step_counts (tenant, state, n)
                             SELECT $1, state, SUM(n) FROM gone GROUP BY state HAVING SUM(n) <> 0)
             SELECT COUNT(*) FROM gone",
            &[&tenant],
        )
        .await?
    else {
        return Ok(0);
    };
    count(row.try_get(0)?, "folded count rows")
}

pub async fn counts(tx: &mut Tx<'_>) -> Result<StepCounts> {
    let tenant = tx.tenant;
    let mut counts = StepCounts::default();
    for row in tx
        .query(
            // Rows of changes added by triggers as steps change (migrations 5 and 7).
            "SELECT state, SUM(n)::bigint FROM step_counts WHERE tenant = $1 GROUP BY state",
            &[&tenant],
        )
        .await?
    {
        let state: String = row.try_get(0)?;
        let number = count(row.try_get(1)?, "step count")?;
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
        .query_opt(
            "SELECT MIN(created_at) FROM steps WHERE tenant = $1 AND state IN ('pending', 'in_flight')",
            &[&tenant],
        )
        .await?
        .map(|row| row.try_get(0))
        .transpose()?
        .flatten();
    counts.oldest_open_created_at = optional_timestamp(oldest);
    Ok(counts)
}

pub async fn reprocess(tx: &mut Tx<'_>, scope: &ReprocessScope, now: Timestamp) -> Result<u64> {
    const RESET: &str = "UPDATE steps SET state = 'pending', attempts = 0, next_attempt_at = $2, lease_until = NULL,
                                          updated_at = $2
                         WHERE tenant = $1 AND state IN ('failed', 'dropped')
                           AND (expires_at IS NULL OR expires_at > $2)";
    let tenant = tx.tenant;
    match scope {
        ReprocessScope::Call(call_key) => {
            tx.execute(
                &format!("{RESET} AND call_key = $3"),
                &[&tenant, &now.as_micros(), call_key],
            )
            .await
        }
        ReprocessScope::CreatedBetween { from, to } => {
            tx.execute(
                &format!("{RESET} AND created_at >= $3 AND created_at < $4"),
                &[&tenant, &now.as_micros(), &from.as_micros(), &to.as_micros()],
            )
            .await
        }
    }
}

pub async fn release_claims(tx: &mut Tx<'_>, now: Timestamp) -> Result<u64> {
    let tenant = tx.tenant;
    tx.execute(
        "UPDATE steps SET state = 'pending', lease_until = NULL, next_attempt_at = $2, updated_at = $2
         WHERE tenant = $1 AND state = 'in_flight'",
        &[&tenant, &now.as_micros()],
    )
    .await
}

pub async fn prune(tx: &mut Tx<'_>, before: Timestamp) -> Result<u64> {
    let tenant = tx.tenant;
    tx.execute(
        "DELETE FROM steps WHERE tenant = $1 AND call_key IN (
             SELECT call_key FROM steps WHERE tenant = $1 GROUP BY call_key
             HAVING COUNT(*) FILTER (WHERE state IN ('pending', 'in_flight')) = 0 AND MAX(updated_at) < $2)",
        &[&tenant, &before.as_micros()],
    )
    .await
}
