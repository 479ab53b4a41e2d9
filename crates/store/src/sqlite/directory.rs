//! The users cache, OAuth tokens and settings.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;

use crate::codec::{from_json, optional_timestamp, to_json, user_id_from_sql, user_id_to_sql};
use crate::error::{Result, StoreError};
use crate::types::*;

const USERS_REFRESHED_AT: &str = "users_refreshed_at";

pub fn replace_users(tx: &Transaction<'_>, users: &[User], refreshed_at: Timestamp) -> Result<()> {
    // A paged user list can return a user twice when the list shifts between pages: the last copy wins.
    let mut unique: BTreeMap<u64, &User> = BTreeMap::new();
    for user in users {
        unique.insert(user.id, user);
    }
    tx.execute("DELETE FROM user_phones", [])?;
    tx.execute("DELETE FROM users", [])?;
    let mut insert_user = tx
        .prepare_cached("INSERT INTO users (id, name, email, position, active, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    let mut insert_phone =
        tx.prepare_cached("INSERT INTO user_phones (user_id, ordinal, field, number) VALUES (?1, ?2, ?3, ?4)")?;
    for user in unique.values() {
        let id = user_id_to_sql(user.id)?;
        let raw = to_json(&user.raw, "user")?;
        insert_user.execute(params![id, user.name, user.email, user.position, user.active, raw])?;
        for (ordinal, phone) in user.phones.iter().enumerate() {
            insert_phone.execute(params![id, ordinal as i64, phone.field, phone.number])?;
        }
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![USERS_REFRESHED_AT, refreshed_at.as_micros().to_string()],
    )?;
    Ok(())
}

pub fn users_refreshed_at(tx: &Transaction<'_>) -> Result<Option<Timestamp>> {
    let text: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [USERS_REFRESHED_AT], |row| {
            row.get(0)
        })
        .optional()?;
    let Some(text) = text else { return Ok(None) };
    let micros = text.parse::<i64>().map_err(|_| StoreError::Corrupt {
        what: "users refresh time",
        detail: text.clone(),
    })?;
    Ok(Some(Timestamp::from_micros(micros)))
}

fn user_from_row(row: &rusqlite::Row<'_>) -> Result<User> {
    let raw: String = row.get(5)?;
    Ok(User {
        id: user_id_from_sql(row.get(0)?)?,
        name: row.get(1)?,
        email: row.get(2)?,
        position: row.get(3)?,
        active: row.get(4)?,
        phones: Vec::new(),
        raw: from_json(&raw, "user")?,
    })
}

const USER_COLUMNS: &str = "SELECT id, name, email, position, active, raw FROM users";

/// Loads the users whose id is in `ids` (every user if `None`), by id, with their phones.
fn load_users(tx: &Transaction<'_>, ids: Option<&[i64]>) -> Result<Vec<User>> {
    let mut users = Vec::new();
    match ids {
        None => {
            let mut statement = tx.prepare_cached(&format!("{USER_COLUMNS} ORDER BY id"))?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                users.push(user_from_row(row)?);
            }
        }
        Some(ids) => {
            let mut statement = tx.prepare_cached(&format!("{USER_COLUMNS} WHERE id = ?1"))?;
            for id in ids {
                let mut rows = statement.query([id])?;
                if let Some(row) = rows.next()? {
                    users.push(user_from_row(row)?);
                }
            }
            users.sort_by_key(|user| user.id);
        }
    }
    let mut phones = tx.prepare_cached("SELECT field, number FROM user_phones WHERE user_id = ?1 ORDER BY ordinal")?;
    for user in &mut users {
        let mut rows = phones.query([user_id_to_sql(user.id)?])?;
        while let Some(row) = rows.next()? {
            user.phones.push(UserPhone {
                field: row.get(0)?,
                number: row.get(1)?,
            });
        }
    }
    Ok(users)
}

pub fn all_users(tx: &Transaction<'_>) -> Result<Vec<User>> {
    load_users(tx, None)
}

pub fn user_by_extension(tx: &Transaction<'_>, extension: &str) -> Result<Option<User>> {
    let id: Option<i64> = tx
        .prepare_cached(
            "SELECT u.id FROM user_phones p JOIN users u ON u.id = p.user_id
             WHERE p.number = ?1 AND p.field = ?2 ORDER BY u.active DESC, u.id LIMIT 1",
        )?
        .query_row(params![extension, EXTENSION_FIELD], |row| row.get(0))
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    Ok(load_users(tx, Some(&[id]))?.pop())
}

pub fn users_by_phone(tx: &Transaction<'_>, numbers: &[&str]) -> Result<Vec<User>> {
    let mut statement = tx.prepare_cached("SELECT DISTINCT user_id FROM user_phones WHERE number = ?1")?;
    let mut ids = Vec::new();
    for number in numbers {
        let mut rows = statement.query([number])?;
        while let Some(row) = rows.next()? {
            ids.push(row.get::<_, i64>(0)?);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    load_users(tx, Some(&ids))
}

pub fn save_tokens(tx: &Transaction<'_>, portal: &str, tokens: &PortalTokens, now: Timestamp) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO tokens (portal, access_token, refresh_token, expires_at, scope, client_endpoint, member_id,
                             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (portal) DO UPDATE SET
             access_token = excluded.access_token, refresh_token = excluded.refresh_token,
             expires_at = excluded.expires_at, scope = excluded.scope, client_endpoint = excluded.client_endpoint,
             member_id = excluded.member_id, updated_at = excluded.updated_at",
    )?
    .execute(params![
        portal,
        tokens.access_token,
        tokens.refresh_token,
        tokens.expires_at.map(Timestamp::as_micros),
        tokens.scope,
        tokens.client_endpoint,
        tokens.member_id,
        now.as_micros(),
    ])?;
    Ok(())
}

pub fn load_tokens(tx: &Transaction<'_>, portal: &str) -> Result<Option<PortalTokens>> {
    Ok(tx
        .prepare_cached(
            "SELECT access_token, refresh_token, expires_at, scope, client_endpoint, member_id
             FROM tokens WHERE portal = ?1",
        )?
        .query_row([portal], |row| {
            Ok(PortalTokens {
                access_token: row.get(0)?,
                refresh_token: row.get(1)?,
                expires_at: optional_timestamp(row.get(2)?),
                scope: row.get(3)?,
                client_endpoint: row.get(4)?,
                member_id: row.get(5)?,
            })
        })
        .optional()?)
}

pub fn set_setting(tx: &Transaction<'_>, key: &str, value: &Value, now: Timestamp) -> Result<()> {
    let text = to_json(value, "setting")?;
    tx.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![key, text, now.as_micros()])?;
    Ok(())
}

pub fn setting(tx: &Transaction<'_>, key: &str) -> Result<Option<Value>> {
    let text: Option<String> = tx
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    text.map(|text| from_json(&text, "setting")).transpose()
}

pub fn delete_setting(tx: &Transaction<'_>, key: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM settings WHERE key = ?1")?
        .execute([key])?
        > 0)
}

pub fn all_settings(tx: &Transaction<'_>) -> Result<Vec<(String, Value)>> {
    let mut statement = tx.prepare_cached("SELECT key, value FROM settings ORDER BY key")?;
    let mut rows = statement.query([])?;
    let mut settings = Vec::new();
    while let Some(row) = rows.next()? {
        let text: String = row.get(1)?;
        settings.push((row.get(0)?, from_json(&text, "setting")?));
    }
    Ok(settings)
}
