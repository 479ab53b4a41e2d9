//! The users cache, OAuth tokens, settings and click-to-call requests on PostgreSQL. `$1` is always the tenant.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_postgres::Row;

use super::Tx;
use crate::codec::{from_json, optional_timestamp, to_json, user_id_from_sql, user_id_to_sql};
use crate::error::{Result, StoreError};
use crate::types::*;

const USERS_REFRESHED_AT: &str = "users_refreshed_at";

pub async fn replace_users(tx: &mut Tx<'_>, users: &[User], refreshed_at: Timestamp) -> Result<()> {
    let tenant = tx.tenant;
    // A paged user list can return a user twice when the list shifts between pages: the last copy wins.
    let mut unique: BTreeMap<u64, &User> = BTreeMap::new();
    for user in users {
        unique.insert(user.id, user);
    }
    // Checked before anything is deleted, so a refused list changes nothing.
    let ids = unique
        .keys()
        .map(|id| user_id_to_sql(*id))
        .collect::<Result<Vec<_>>>()?;
    tx.execute("DELETE FROM user_phones WHERE tenant = $1", &[&tenant])
        .await?;
    tx.execute("DELETE FROM users WHERE tenant = $1", &[&tenant]).await?;
    for (user, id) in unique.values().zip(&ids) {
        let raw = to_json(&user.raw, "user")?;
        tx.execute(
            "INSERT INTO users (tenant, id, name, email, position, active, raw) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&tenant, id, &user.name, &user.email, &user.position, &user.active, &raw],
        )
        .await?;
        for (ordinal, phone) in user.phones.iter().enumerate() {
            let ordinal = i32::try_from(ordinal).map_err(|_| StoreError::Invalid {
                what: "user phones",
                detail: format!("user {} has too many", user.id),
            })?;
            tx.execute(
                "INSERT INTO user_phones (tenant, user_id, ordinal, field, number) VALUES ($1, $2, $3, $4, $5)",
                &[&tenant, id, &ordinal, &phone.field, &phone.number],
            )
            .await?;
        }
    }
    tx.execute(
        "INSERT INTO meta (tenant, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value",
        &[&tenant, &USERS_REFRESHED_AT, &refreshed_at.as_micros().to_string()],
    )
    .await?;
    Ok(())
}

pub async fn users_refreshed_at(tx: &mut Tx<'_>) -> Result<Option<Timestamp>> {
    let tenant = tx.tenant;
    let Some(row) = tx
        .query_opt(
            "SELECT value FROM meta WHERE tenant = $1 AND key = $2",
            &[&tenant, &USERS_REFRESHED_AT],
        )
        .await?
    else {
        return Ok(None);
    };
    let text: String = row.try_get(0)?;
    let micros = text.parse::<i64>().map_err(|_| StoreError::Corrupt {
        what: "users refresh time",
        detail: text.clone(),
    })?;
    Ok(Some(Timestamp::from_micros(micros)))
}

fn user_from_row(row: &Row) -> Result<User> {
    let raw: String = row.try_get(5)?;
    Ok(User {
        id: user_id_from_sql(row.try_get(0)?)?,
        name: row.try_get(1)?,
        email: row.try_get(2)?,
        position: row.try_get(3)?,
        active: row.try_get(4)?,
        phones: Vec::new(),
        raw: from_json(&raw, "user")?,
    })
}

/// Loads the users whose id is in `ids` (every user if `None`), by id, with their phones.
pub async fn load_users(tx: &mut Tx<'_>, ids: Option<&[i64]>) -> Result<Vec<User>> {
    let tenant = tx.tenant;
    let rows = match ids {
        None => {
            tx.query(
                "SELECT id, name, email, position, active, raw FROM users WHERE tenant = $1 ORDER BY id",
                &[&tenant],
            )
            .await?
        }
        Some(ids) => {
            tx.query(
                "SELECT id, name, email, position, active, raw FROM users WHERE tenant = $1 AND id = ANY($2)
                 ORDER BY id",
                &[&tenant, &ids],
            )
            .await?
        }
    };
    let mut users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
    for user in &mut users {
        let id = user_id_to_sql(user.id)?;
        for row in tx
            .query(
                "SELECT field, number FROM user_phones WHERE tenant = $1 AND user_id = $2 ORDER BY ordinal",
                &[&tenant, &id],
            )
            .await?
        {
            user.phones.push(UserPhone {
                field: row.try_get(0)?,
                number: row.try_get(1)?,
            });
        }
    }
    Ok(users)
}

pub async fn user_by_extension(tx: &mut Tx<'_>, extension: &str) -> Result<Option<User>> {
    let tenant = tx.tenant;
    let Some(row) = tx
        .query_opt(
            "SELECT u.id FROM user_phones p JOIN users u ON u.tenant = p.tenant AND u.id = p.user_id
             WHERE p.tenant = $1 AND p.number = $2 AND p.field = $3 ORDER BY u.active DESC, u.id LIMIT 1",
            &[&tenant, &extension, &EXTENSION_FIELD],
        )
        .await?
    else {
        return Ok(None);
    };
    let id: i64 = row.try_get(0)?;
    Ok(load_users(tx, Some(&[id])).await?.pop())
}

pub async fn users_by_phone(tx: &mut Tx<'_>, numbers: &[&str]) -> Result<Vec<User>> {
    let tenant = tx.tenant;
    let rows = tx
        .query(
            "SELECT DISTINCT user_id FROM user_phones WHERE tenant = $1 AND number = ANY($2)",
            &[&tenant, &numbers],
        )
        .await?;
    let ids = rows.iter().map(|row| row.try_get(0)).collect::<Result<Vec<i64>, _>>()?;
    load_users(tx, Some(&ids)).await
}

pub async fn save_tokens(tx: &mut Tx<'_>, portal: &str, tokens: &PortalTokens, now: Timestamp) -> Result<()> {
    let tenant = tx.tenant;
    tx.execute(
        "INSERT INTO tokens (tenant, portal, access_token, refresh_token, expires_at, scope, client_endpoint,
                             member_id, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant, portal) DO UPDATE SET
             access_token = excluded.access_token, refresh_token = excluded.refresh_token,
             expires_at = excluded.expires_at, scope = excluded.scope, client_endpoint = excluded.client_endpoint,
             member_id = excluded.member_id, updated_at = excluded.updated_at",
        &[
            &tenant,
            &portal,
            &tokens.access_token,
            &tokens.refresh_token,
            &tokens.expires_at.map(Timestamp::as_micros),
            &tokens.scope,
            &tokens.client_endpoint,
            &tokens.member_id,
            &now.as_micros(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn load_tokens(tx: &mut Tx<'_>, portal: &str) -> Result<Option<PortalTokens>> {
    let tenant = tx.tenant;
    let Some(row) = tx
        .query_opt(
            "SELECT access_token, refresh_token, expires_at, scope, client_endpoint, member_id
             FROM tokens WHERE tenant = $1 AND portal = $2",
            &[&tenant, &portal],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(PortalTokens {
        access_token: row.try_get(0)?,
        refresh_token: row.try_get(1)?,
        expires_at: optional_timestamp(row.try_get(2)?),
        scope: row.try_get(3)?,
        client_endpoint: row.try_get(4)?,
        member_id: row.try_get(5)?,
    }))
}

pub async fn set_setting(tx: &mut Tx<'_>, key: &str, value: &Value, now: Timestamp) -> Result<()> {
    let tenant = tx.tenant;
    let text = to_json(value, "setting")?;
    tx.execute(
        "INSERT INTO settings (tenant, key, value, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        &[&tenant, &key, &text, &now.as_micros()],
    )
    .await?;
    Ok(())
}

pub async fn setting(tx: &mut Tx<'_>, key: &str) -> Result<Option<Value>> {
    let tenant = tx.tenant;
    let row = tx
        .query_opt(
            "SELECT value FROM settings WHERE tenant = $1 AND key = $2",
            &[&tenant, &key],
        )
        .await?;
    let text: Option<String> = row.map(|row| row.try_get(0)).transpose()?;
    text.map(|text| from_json(&text, "setting")).transpose()
}

pub async fn delete_setting(tx: &mut Tx<'_>, key: &str) -> Result<bool> {
    let tenant = tx.tenant;
    Ok(tx
        .execute("DELETE FROM settings WHERE tenant = $1 AND key = $2", &[&tenant, &key])
        .await?
        > 0)
}

pub async fn all_settings(tx: &mut Tx<'_>) -> Result<Vec<(String, Value)>> {
    let tenant = tx.tenant;
    let rows = tx
        .query(
            "SELECT key, value FROM settings WHERE tenant = $1 ORDER BY key",
            &[&tenant],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let text: String = row.try_get(1)?;
            Ok((row.try_get(0)?, from_json(&text, "setting")?))
        })
        .collect()
}

pub async fn accept_click(
    tx: &mut Tx<'_>,
    call_id: &str,
    call_key: &str,
    request: &Value,
    now: Timestamp,
) -> Result<bool> {
    let tenant = tx.tenant;
    let text = to_json(request, "click request")?;
    let inserted = tx
        .execute(
            "INSERT INTO clicks (tenant, call_id, call_key, request, received_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, call_id) DO NOTHING",
            &[&tenant, &call_id, &call_key, &text, &now.as_micros()],
        )
        .await?;
    Ok(inserted == 1)
}

pub async fn open_clicks(tx: &mut Tx<'_>, since: Timestamp) -> Result<Vec<(String, Value)>> {
    let tenant = tx.tenant;
    let rows = tx
        .query(
            "SELECT call_key, request FROM clicks WHERE tenant = $1 AND closed_at IS NULL AND received_at >= $2
             ORDER BY received_at",
            &[&tenant, &since.as_micros()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let text: String = row.try_get(1)?;
            Ok((row.try_get(0)?, from_json(&text, "click request")?))
        })
        .collect()
}

pub async fn close_click(tx: &mut Tx<'_>, call_key: &str, now: Timestamp) -> Result<()> {
    let tenant = tx.tenant;
    tx.execute(
        "UPDATE clicks SET closed_at = $3 WHERE tenant = $1 AND call_key = $2 AND closed_at IS NULL",
        &[&tenant, &call_key, &now.as_micros()],
    )
    .await?;
    Ok(())
}
