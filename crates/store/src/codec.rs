//! Conversions both backends share: JSON in TEXT columns, instants and counts as 64-bit integers.

use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::types::Timestamp;

/// Encodes a JSON value for a TEXT column.
pub fn to_json(value: &Value, what: &'static str) -> Result<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

/// Decodes a TEXT column written by [`to_json`].
pub fn from_json(text: &str, what: &'static str) -> Result<Value> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt {
        what,
        detail: error.to_string(),
    })
}

pub fn optional_timestamp(micros: Option<i64>) -> Option<Timestamp> {
    micros.map(Timestamp::from_micros)
}

/// Counts are never negative; a negative one means a damaged database.
pub fn count(value: i64, what: &'static str) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what,
        detail: value.to_string(),
    })
}

/// `LIMIT` takes a 64-bit integer; anything larger is as good as unlimited.
pub fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// User ids are Bitrix24's (unsigned); the databases store them as signed 64-bit integers.
pub fn user_id_to_sql(id: u64) -> Result<i64> {
    i64::try_from(id).map_err(|_| StoreError::Invalid {
        what: "user id",
        detail: format!("{id} is too large"),
    })
}

pub fn user_id_from_sql(id: i64) -> Result<u64> {
    u64::try_from(id).map_err(|_| StoreError::Corrupt {
        what: "user id",
        detail: id.to_string(),
    })
}
