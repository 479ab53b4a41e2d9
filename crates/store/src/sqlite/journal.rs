//! The call journal: what happened to each call and why.

use std::time::{Duration, Instant};

use rusqlite::{params, Transaction};

use crate::codec::{count, from_json, sql_limit, to_json};
use crate::error::{Result, StoreError};
use crate::types::*;

pub fn append(tx: &Transaction<'_>, entries: &[NewJournalEntry]) -> Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT INTO journal (call_key, at, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    // Every SET expression reads the row as it was, so `last_at` in the CASEs is the previous latest instant.
    let mut summarise = tx.prepare_cached(
        "INSERT INTO journal_calls (call_key, first_at, last_at, entries, errors, last_kind, last_message)
         VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5)
         ON CONFLICT (call_key) DO UPDATE SET
             first_at = MIN(first_at, excluded.first_at),
             last_at = MAX(last_at, excluded.last_at),
             entries = entries + 1,
             errors = errors + excluded.errors,
             last_kind = CASE WHEN excluded.last_at >= last_at THEN excluded.last_kind ELSE last_kind END,
             last_message = CASE WHEN excluded.last_at >= last_at THEN excluded.last_message ELSE last_message END",
    )?;
    for entry in entries {
        let data = entry
            .data
            .as_ref()
            .map(|data| to_json(data, "journal data"))
            .transpose()?;
        let kind = entry.kind.as_str();
        insert.execute(params![entry.call_key, entry.at.as_micros(), kind, entry.message, data])?;
        let is_error = i64::from(entry.kind == EntryKind::Error);
        summarise.execute(params![
            entry.call_key,
            entry.at.as_micros(),
            is_error,
            kind,
            entry.message
        ])?;
    }
    Ok(())
}

pub fn timeline(tx: &Transaction<'_>, call_key: &str) -> Result<Vec<JournalEntry>> {
    let mut statement = tx.prepare_cached(
        "SELECT id, call_key, at, kind, message, data FROM journal WHERE call_key = ?1 ORDER BY at, id",
    )?;
    let mut rows = statement.query([call_key])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        let kind: String = row.get(3)?;
        let data: Option<String> = row.get(5)?;
        entries.push(JournalEntry {
            id: row.get(0)?,
            call_key: row.get(1)?,
            at: Timestamp::from_micros(row.get(2)?),
            kind: EntryKind::parse(&kind),
            message: row.get(4)?,
            data: data.map(|text| from_json(&text, "journal data")).transpose()?,
        });
    }
    Ok(entries)
}

pub fn recent_calls(tx: &Transaction<'_>, limit: usize) -> Result<Vec<CallSummary>> {
    find_calls(tx, &CallFilter::default(), limit)
}

/// The journal's calls matching `filter`, latest activity first. Walks `journal_calls` by `last_at` and stops at
/// `limit` matches, or, for "has errors", starts from the calls with an error entry or a failed step (partial
/// indexes of migration 3); a text filter starts from the entries the trigram index (migration 4) finds holding
/// it, or, for a text too short or too common, looks into each call's entries (message and data).
pub fn find_calls(tx: &Transaction<'_>, filter: &CallFilter, limit: usize) -> Result<Vec<CallSummary>> {
    let mut sql = String::from(
        "SELECT c.call_key, c.first_at, c.last_at, c.entries, c.errors, c.last_kind, c.last_message,
                (SELECT COUNT(*) FROM steps s WHERE s.call_key = c.call_key AND s.state IN ('pending', 'in_flight')),
                (SELECT COUNT(*) FROM steps s WHERE s.call_key = c.call_key AND s.state = 'failed')
         FROM journal_calls c WHERE 1 = 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let arg = |args: &mut Vec<rusqlite::types::Value>, value: rusqlite::types::Value| {
        args.push(value);
        format!("?{}", args.len())
    };
    if let Some(from) = filter.from {
        let p = arg(&mut args, from.as_micros().into());
        sql.push_str(&format!(" AND c.last_at >= {p}"));
    }
    if let Some(to) = filter.to {
        let p = arg(&mut args, to.as_micros().into());
        sql.push_str(&format!(" AND c.first_at < {p}"));
    }
    if let Some((at, key)) = &filter.before {
        let p_at = arg(&mut args, at.as_micros().into());
        let p_key = arg(&mut args, key.clone().into());
        sql.push_str(&format!(
            " AND (c.last_at < {p_at} OR (c.last_at = {p_at} AND c.call_key > {p_key}))"
        ));
    }
    if filter.has_errors {
        sql.push_str(
            " AND c.call_key IN (SELECT call_key FROM journal_calls WHERE errors > 0
                                 UNION ALL SELECT call_key FROM steps WHERE state = 'failed')",
        );
    }
    for text in filter.texts.iter().filter(|t| !t.is_empty()) {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        let p = arg(&mut args, pattern.into());
        match trigram_phrase(tx, text)? {
            // Few entries hold the text: start from them (the trigram index finds them, LIKE keeps its own
            // rules: the index folds every letter's case, LIKE only ASCII's).
            Some(phrase) => {
                let q = arg(&mut args, phrase.into());
                sql.push_str(&format!(
                    " AND c.call_key IN (SELECT j.call_key FROM journal_text JOIN journal j ON j.id = journal_text.rowid
                         WHERE journal_text MATCH {q}
                           AND (j.message LIKE {p} ESCAPE '\\' OR j.data LIKE {p} ESCAPE '\\'))"
                ));
            }
            // Too short for trigrams, or in many entries: the walk by last activity soon finds a page of calls.
            None => sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM journal j WHERE j.call_key = c.call_key
                     AND (j.message LIKE {p} ESCAPE '\\' OR j.data LIKE {p} ESCAPE '\\'))"
            )),
        }
    }
    const ANSWERED: &str = "EXISTS (SELECT 1 FROM journal j WHERE j.call_key = c.call_key AND j.kind = 'ami'
                 AND j.message = 'leg_answered')";
    const ENDED: &str = "EXISTS (SELECT 1 FROM journal j WHERE j.call_key = c.call_key AND j.kind = 'ami'
                 AND j.message = 'call_ended')";
    match filter.result {
        None => {}
        Some(CallResult::Answered) => sql.push_str(&format!(" AND {ANSWERED}")),
        Some(CallResult::Missed) => sql.push_str(&format!(" AND {ENDED} AND NOT {ANSWERED}")),
        Some(CallResult::Live) => sql.push_str(&format!(" AND NOT {ENDED}")),
    }
    let p = arg(&mut args, sql_limit(limit).into());
    sql.push_str(&format!(" ORDER BY c.last_at DESC, c.call_key LIMIT {p}"));
    let _limit = filter.time_limit.map(|after| TimeLimit::set(tx, after));
    let timed_out = |error: rusqlite::Error| match (error.sqlite_error_code(), filter.time_limit) {
        (Some(rusqlite::ErrorCode::OperationInterrupted), Some(after)) => StoreError::TimedOut {
            what: "the journal search",
            after,
        },
        _ => error.into(),
    };
    let mut statement = tx.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(args)).map_err(timed_out)?;
    let mut calls = Vec::new();
    while let Some(row) = rows.next().map_err(timed_out)? {
        let last_kind: String = row.get(5)?;
        calls.push(CallSummary {
            call_key: row.get(0)?,
            first_at: Timestamp::from_micros(row.get(1)?),
            last_at: Timestamp::from_micros(row.get(2)?),
            entries: count(row.get(3)?, "journal entry count")?,
            errors: count(row.get(4)?, "journal error count")?,
            last_kind: EntryKind::parse(&last_kind),
            last_message: row.get(6)?,
            open_steps: count(row.get(7)?, "open step count")?,
            failed_steps: count(row.get(8)?, "failed step count")?,
        });
    }
    Ok(calls)
}

/// Interrupts the connection's statements once `after` has passed, until dropped (SQLite's progress handler,
/// asked every few thousand virtual machine instructions: a fraction of a millisecond).
struct TimeLimit<'c>(&'c rusqlite::Connection);

impl<'c> TimeLimit<'c> {
    fn set(conn: &'c rusqlite::Connection, after: Duration) -> Self {
        let deadline = Instant::now() + after;
        conn.progress_handler(4_000, Some(move || Instant::now() >= deadline));
        TimeLimit(conn)
    }
}

impl Drop for TimeLimit<'_> {
    fn drop(&mut self) {
        self.0.progress_handler(0, None::<fn() -> bool>);
    }
}

/// Past this many entries holding a text, its calls are found by walking the latest ones instead.
const SPARSE_TEXT: i64 = 2_000;

/// The full-text query that finds the entries holding `text` when that is worth it: a text of 3 characters or
/// more (the trigram index knows nothing shorter) held by at most [`SPARSE_TEXT`] entries.
fn trigram_phrase(tx: &Transaction<'_>, text: &str) -> Result<Option<String>> {
    if text.chars().count() < 3 {
        return Ok(None);
    }
    let phrase = format!("\"{}\"", text.replace('"', "\"\""));
    let holding: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM journal_text WHERE journal_text MATCH ?1 LIMIT ?2)")?
        .query_row(params![phrase, SPARSE_TEXT + 1], |row| row.get(0))?;
    Ok((holding <= SPARSE_TEXT).then_some(phrase))
}

pub fn prune(tx: &Transaction<'_>, before: Timestamp) -> Result<u64> {
    let before = before.as_micros();
    let deleted = tx
        .prepare_cached("DELETE FROM journal WHERE at < ?1")?
        .execute([before])?;
    tx.prepare_cached("DELETE FROM journal_calls WHERE last_at < ?1")?
        .execute([before])?;
    // Calls that lost only their oldest entries: recount what is left.
    tx.prepare_cached(
        "UPDATE journal_calls SET
             first_at = (SELECT MIN(j.at) FROM journal j WHERE j.call_key = journal_calls.call_key),
             entries = (SELECT COUNT(*) FROM journal j WHERE j.call_key = journal_calls.call_key),
             errors = (SELECT COUNT(*) FROM journal j WHERE j.call_key = journal_calls.call_key AND j.kind = 'error')
         WHERE first_at < ?1",
    )?
    .execute([before])?;
    Ok(deleted as u64)
}
