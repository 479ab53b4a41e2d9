//! The call journal on PostgreSQL. `$1` is always the tenant.

use tokio_postgres::types::ToSql;

use super::Tx;
use crate::codec::{count, from_json, sql_limit, to_json};
use crate::error::{Result, StoreError};
use crate::types::*;

pub async fn append(tx: &mut Tx<'_>, entries: &[NewJournalEntry]) -> Result<()> {
    let tenant = tx.tenant;
    for entry in entries {
        let data = entry
            .data
            .as_ref()
            .map(|data| to_json(data, "journal data"))
            .transpose()?;
        let kind = entry.kind.as_str();
        let at = entry.at.as_micros();
        tx.execute(
            "INSERT INTO journal (tenant, call_key, at, kind, message, data) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&tenant, &entry.call_key, &at, &kind, &entry.message, &data],
        )
        .await?;
        let is_error = i64::from(entry.kind == EntryKind::Error);
        // Unqualified columns in SET read the row as it was, so `c.last_at` in the CASEs is the previous latest.
        tx.execute(
            "INSERT INTO journal_calls AS c (tenant, call_key, first_at, last_at, entries, errors, last_kind,
                                             last_message)
             VALUES ($1, $2, $3, $3, 1, $4, $5, $6)
             ON CONFLICT (tenant, call_key) DO UPDATE SET
                 first_at = LEAST(c.first_at, excluded.first_at),
                 last_at = GREATEST(c.last_at, excluded.last_at),
                 entries = c.entries + 1,
                 errors = c.errors + excluded.errors,
                 last_kind = CASE WHEN excluded.last_at >= c.last_at THEN excluded.last_kind ELSE c.last_kind END,
                 last_message = CASE WHEN excluded.last_at >= c.last_at THEN excluded.last_message
                                     ELSE c.last_message END",
            &[&tenant, &entry.call_key, &at, &is_error, &kind, &entry.message],
        )
        .await?;
    }
    Ok(())
}

pub async fn timeline(tx: &mut Tx<'_>, call_key: &str) -> Result<Vec<JournalEntry>> {
    let tenant = tx.tenant;
    let rows = tx
        .query(
            "SELECT id, call_key, at, kind, message, data FROM journal WHERE tenant = $1 AND call_key = $2
             ORDER BY at, id",
            &[&tenant, &call_key],
        )
        .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.try_get(3)?;
        let data: Option<String> = row.try_get(5)?;
        entries.push(JournalEntry {
            id: row.try_get(0)?,
            call_key: row.try_get(1)?,
            at: Timestamp::from_micros(row.try_get(2)?),
            kind: EntryKind::parse(&kind),
            message: row.try_get(4)?,
            data: data.map(|text| from_json(&text, "journal data")).transpose()?,
        });
    }
    Ok(entries)
}

/// The journal's calls matching `filter`, latest activity first (the same query as SQLite's, with the tenant).
pub async fn find_calls(tx: &mut Tx<'_>, filter: &CallFilter, limit: usize) -> Result<Vec<CallSummary>> {
    let mut sql = String::from(
        "SELECT c.call_key, c.first_at, c.last_at, c.entries, c.errors, c.last_kind, c.last_message,
                (SELECT COUNT(*) FROM steps s WHERE s.tenant = c.tenant AND s.call_key = c.call_key
                                               AND s.state IN ('pending', 'in_flight')),
                (SELECT COUNT(*) FROM steps s WHERE s.tenant = c.tenant AND s.call_key = c.call_key
                                               AND s.state = 'failed')
         FROM journal_calls c WHERE c.tenant = $1",
    );
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(tx.tenant.to_owned())];
    let mut arg = |value: Box<dyn ToSql + Sync + Send>| {
        args.push(value);
        format!("${}", args.len())
    };
    if let Some(from) = filter.from {
        let p = arg(Box::new(from.as_micros()));
        sql.push_str(&format!(" AND c.last_at >= {p}"));
    }
    if let Some(to) = filter.to {
        let p = arg(Box::new(to.as_micros()));
        sql.push_str(&format!(" AND c.first_at < {p}"));
    }
    if let Some((at, key)) = &filter.before {
        let p_at = arg(Box::new(at.as_micros()));
        let p_key = arg(Box::new(key.clone()));
        sql.push_str(&format!(
            " AND (c.last_at < {p_at} OR (c.last_at = {p_at} AND c.call_key > {p_key}))"
        ));
    }
    if filter.has_errors {
        sql.push_str(
            " AND c.call_key IN (SELECT e.call_key FROM journal_calls e WHERE e.tenant = $1 AND e.errors > 0
                                 UNION ALL SELECT s.call_key FROM steps s WHERE s.tenant = $1 AND s.state = 'failed')",
        );
    }
    for text in filter.texts.iter().filter(|t| !t.is_empty()) {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        let p = arg(Box::new(pattern));
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM journal j WHERE j.tenant = c.tenant AND j.call_key = c.call_key
                 AND (j.message ILIKE {p} ESCAPE '\\' OR j.data ILIKE {p} ESCAPE '\\'))"
        ));
    }
    const ANSWERED: &str = "EXISTS (SELECT 1 FROM journal j WHERE j.tenant = c.tenant AND j.call_key = c.call_key
                 AND j.kind = 'ami' AND j.message = 'leg_answered')";
    const ENDED: &str = "EXISTS (SELECT 1 FROM journal j WHERE j.tenant = c.tenant AND j.call_key = c.call_key
                 AND j.kind = 'ami' AND j.message = 'call_ended')";
    match filter.result {
        None => {}
        Some(CallResult::Answered) => sql.push_str(&format!(" AND {ANSWERED}")),
        Some(CallResult::Missed) => sql.push_str(&format!(" AND {ENDED} AND NOT {ANSWERED}")),
        Some(CallResult::Live) => sql.push_str(&format!(" AND NOT {ENDED}")),
    }
    let p = arg(Box::new(sql_limit(limit)));
    sql.push_str(&format!(" ORDER BY c.last_at DESC, c.call_key LIMIT {p}"));
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|arg| arg.as_ref() as &(dyn ToSql + Sync)).collect();
    if let Some(after) = filter.time_limit {
        // For the rest of this transaction; 0 would mean no limit.
        let ms = after.as_millis().max(1).to_string();
        tx.query("SELECT set_config('statement_timeout', $1, true)", &[&ms])
            .await?;
    }
    // A statement built at run time (not kept prepared).
    let rows = match tx.tx.query(sql.as_str(), &params).await {
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
            return Err(match filter.time_limit {
                Some(after) => StoreError::TimedOut {
                    what: "the journal search",
                    after,
                },
                None => error.into(),
            })
        }
        rows => rows?,
    };
    let mut calls = Vec::with_capacity(rows.len());
    for row in rows {
        let last_kind: String = row.try_get(5)?;
        calls.push(CallSummary {
            call_key: row.try_get(0)?,
            first_at: Timestamp::from_micros(row.try_get(1)?),
            last_at: Timestamp::from_micros(row.try_get(2)?),
            entries: count(row.try_get(3)?, "journal entry count")?,
            errors: count(row.try_get(4)?, "journal error count")?,
            last_kind: EntryKind::parse(&last_kind),
            last_message: row.try_get(6)?,
            open_steps: count(row.try_get(7)?, "open step count")?,
            failed_steps: count(row.try_get(8)?, "failed step count")?,
        });
    }
    Ok(calls)
}

pub async fn prune(tx: &mut Tx<'_>, before: Timestamp) -> Result<u64> {
    let tenant = tx.tenant;
    let before = before.as_micros();
    let deleted = tx
        .execute("DELETE FROM journal WHERE tenant = $1 AND at < $2", &[&tenant, &before])
        .await?;
    tx.execute(
        "DELETE FROM journal_calls WHERE tenant = $1 AND last_at < $2",
        &[&tenant, &before],
    )
    .await?;
    // Calls that lost only their oldest entries: recount what is left.
    tx.execute(
        "UPDATE journal_calls c SET
             first_at = (SELECT MIN(j.at) FROM journal j WHERE j.tenant = c.tenant AND j.call_key = c.call_key),
             entries = (SELECT COUNT(*) FROM journal j WHERE j.tenant = c.tenant AND j.call_key = c.call_key),
             errors = (SELECT COUNT(*) FROM journal j WHERE j.tenant = c.tenant AND j.call_key = c.call_key
                                                       AND j.kind = 'error')
         WHERE c.tenant = $1 AND c.first_at < $2",
        &[&tenant, &before],
    )
    .await?;
    Ok(deleted)
}
