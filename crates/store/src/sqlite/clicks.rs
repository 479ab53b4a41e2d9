//! Click-to-call requests, keyed by Bitrix24's `CALL_ID`.

use rusqlite::{params, Transaction};
use serde_json::Value;

use crate::codec::{from_json, to_json};
use crate::error::Result;
use crate::types::Timestamp;

pub fn accept(tx: &Transaction<'_>, call_id: &str, call_key: &str, request: &Value, now: Timestamp) -> Result<bool> {
    let text = to_json(request, "click request")?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO clicks (call_id, call_key, request, received_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (call_id) DO NOTHING",
        )?
        .execute(params![call_id, call_key, text, now.as_micros()])?;
    Ok(inserted == 1)
}

pub fn open(tx: &Transaction<'_>, since: Timestamp) -> Result<Vec<(String, Value)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT call_key, request FROM clicks WHERE closed_at IS NULL AND received_at >= ?1 ORDER BY received_at",
    )?;
    let rows = stmt.query_map([since.as_micros()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, text) = row?;
        out.push((key, from_json(&text, "click request")?));
    }
    Ok(out)
}

pub fn close(tx: &Transaction<'_>, call_key: &str, now: Timestamp) -> Result<()> {
    tx.prepare_cached("UPDATE clicks SET closed_at = ?2 WHERE call_key = ?1 AND closed_at IS NULL")?
        .execute(params![call_key, now.as_micros()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{SqliteStore, Store, Timestamp};
    use serde_json::json;

    #[test]
    fn a_call_id_is_accepted_once_and_stays_open_until_closed() {
        let store = SqliteStore::open_in_memory().expect("store");
        let t = Timestamp::from_secs(1_700_000_000);
        let req = json!({"call_id": "externalCall.a.1", "user_id": 1});
        assert!(store
            .accept_click("externalCall.a.1", "c2c-a", &req, t)
            .expect("accept"));
        assert!(!store.accept_click("externalCall.a.1", "c2c-a", &req, t).expect("again"));
        assert_eq!(store.open_clicks(t).expect("open"), [("c2c-a".to_owned(), req.clone())]);
        assert!(store
            .open_clicks(Timestamp::from_secs(1_700_000_001))
            .expect("later")
            .is_empty());
        store.close_click("c2c-a", t).expect("close");
        assert!(store.open_clicks(t).expect("open").is_empty());
        assert!(!store
            .accept_click("externalCall.a.1", "c2c-a", &req, t)
            .expect("closed: still known"));
    }
}
