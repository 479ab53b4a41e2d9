//! Lenient (de)serialisers for Bitrix24's PHP-flavoured JSON: numbers as strings, `[]` for empty maps,
//! `Y`/`N` booleans, and dates that must carry an explicit offset.

use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serializer};
use serde_json::Value;

fn number_from(value: &Value) -> Option<Option<u64>> {
    match value {
        Value::Null => Some(None),
        Value::Number(n) => n.as_u64().map(Some),
        Value::String(s) if s.trim().is_empty() => Some(None),
        Value::String(s) => s.trim().parse().ok().map(Some),
        // PHP `false` for "no value".
        Value::Bool(false) => Some(None),
        _ => None,
    }
}

/// `123` or `"123"`.
pub fn u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = Value::deserialize(d)?;
    match number_from(&value) {
        Some(Some(n)) => Ok(n),
        _ => Err(D::Error::custom(format!("expected an id or count, got {value}"))),
    }
}

/// `123`, `"123"`, `null`, `""` or absent (`#[serde(default)]`).
pub fn opt_u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Value::deserialize(d)?;
    number_from(&value).ok_or_else(|| D::Error::custom(format!("expected an id or count, got {value}")))
}

/// `1.5`, `"1.50"`, `null`.
pub fn opt_f64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a number, got {s:?}"))),
        other => Err(D::Error::custom(format!("expected a number, got {other}"))),
    }
}

/// Any scalar as text: `"abc"`, `12` → `"12"`, `null` → `None`.
pub fn opt_string_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        // PHP serialises some objects as `{}` (e.g. a date): no usable text.
        Value::Object(_) | Value::Array(_) => Ok(None),
    }
}

/// `true`, `"Y"`, `"1"`, `1` → true; `false`, `"N"`, `"0"`, `0`, `""` → false; `null` → None.
pub fn opt_bool_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        Value::Number(n) => Ok(Some(n.as_f64() != Some(0.0))),
        Value::String(s) => match s.trim().to_ascii_uppercase().as_str() {
            "Y" | "1" | "TRUE" => Ok(Some(true)),
            "N" | "0" | "FALSE" | "" => Ok(Some(false)),
            _ => Err(D::Error::custom(format!("expected Y/N, got {s:?}"))),
        },
        other => Err(D::Error::custom(format!("expected Y/N, got {other}"))),
    }
}

/// A list of ids that may come as numbers or strings, as a single value, or as PHP's `false`/`null`.
pub fn ids_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let value = Value::deserialize(d)?;
    let items = match value {
        Value::Array(items) => items,
        Value::Null | Value::Bool(false) => return Ok(Vec::new()),
        Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
        single => vec![single],
    };
    items
        .iter()
        .filter_map(|item| match number_from(item) {
            Some(Some(n)) => Some(Ok(n)),
            Some(None) => None,
            None => Some(Err(D::Error::custom(format!("expected an id, got {item}")))),
        })
        .collect()
}

/// A list that PHP may send as `[]`, `null`, `false`, or as a map keyed by index.
pub fn vec_lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Array(items) => items,
        Value::Null | Value::Bool(false) => return Ok(Vec::new()),
        Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
        other => return Err(D::Error::custom(format!("expected a list, got {other}"))),
    };
    items
        .into_iter()
        .map(|item| serde_json::from_value(item).map_err(D::Error::custom))
        .collect()
}

/// ISO-8601 with an explicit offset and whole seconds: `2026-03-07T10:20:30+03:00`.
pub fn ser_opt_datetime<S: Serializer>(value: &Option<DateTime<FixedOffset>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(dt) => s.serialize_str(&dt.to_rfc3339_opts(SecondsFormat::Secs, false)),
        None => s.serialize_none(),
    }
}

/// Booleans as the `0`/`1` integers Bitrix24 flags expect.
pub fn ser_opt_bool_int<S: Serializer>(value: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(b) => s.serialize_u8(u8::from(*b)),
        None => s.serialize_none(),
    }
}

/// Booleans as `Y`/`N`.
pub fn ser_opt_bool_yn<S: Serializer>(value: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(b) => s.serialize_str(if *b { "Y" } else { "N" }),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(deserialize_with = "u64_lenient")]
        id: u64,
        #[serde(default, deserialize_with = "opt_u64_lenient")]
        opt: Option<u64>,
        #[serde(default, deserialize_with = "opt_bool_lenient")]
        flag: Option<bool>,
        #[serde(default, deserialize_with = "ids_lenient")]
        ids: Vec<u64>,
        #[serde(default, deserialize_with = "opt_string_lenient")]
        text: Option<String>,
    }

    #[test]
    fn php_shapes() {
        let p: Probe =
            serde_json::from_value(json!({"id": "12", "opt": "", "flag": "Y", "ids": ["1", 2], "text": 5})).unwrap();
        assert_eq!(
            (p.id, p.opt, p.flag, p.ids, p.text.as_deref()),
            (12, None, Some(true), vec![1, 2], Some("5"))
        );
        let p: Probe = serde_json::from_value(json!({"id": 7, "ids": false, "text": {}})).unwrap();
        assert_eq!((p.opt, p.flag, p.ids.len(), p.text), (None, None, 0, None));
        assert!(serde_json::from_value::<Probe>(json!({"id": "x"})).is_err());
        assert!(serde_json::from_value::<Probe>(json!({"id": -1})).is_err());
        assert!(serde_json::from_value::<Probe>(json!({"id": 1, "flag": "maybe"})).is_err());
    }
}
