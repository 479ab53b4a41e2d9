//! Lenient readers for outside input: ids and codes arrive as numbers or as strings, and `null` where a value
//! is expected. A field that cannot be read becomes its default instead of failing the whole answer.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string, a number (as its text) or `null` (empty).
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    })
}

/// A non-negative integer given as a number or a numeric string; anything else is 0.
pub(crate) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(as_u64(&Value::deserialize(d)?).unwrap_or(0))
}

/// Like [`number`] but keeps "absent or unreadable" apart from 0.
pub(crate) fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(as_u64(&Value::deserialize(d)?))
}

pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `true`/`false`, `1`/`0`, `"Y"`/`"N"`; anything else is false.
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
        Value::String(s) => matches!(s.as_str(), "1" | "true" | "Y" | "y"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Odd {
        #[serde(default, deserialize_with = "super::text")]
        t: String,
        #[serde(default, deserialize_with = "super::number")]
        n: u64,
        #[serde(default, deserialize_with = "super::opt_number")]
        o: Option<u64>,
        #[serde(default, deserialize_with = "super::flag")]
        f: bool,
    }

    #[test]
    fn numbers_as_strings_and_nulls_read() {
        let odd: Odd = serde_json::from_str(r#"{"t":12,"n":"34","o":null,"f":"Y"}"#).unwrap();
        assert_eq!((odd.t.as_str(), odd.n, odd.o, odd.f), ("12", 34, None, true));
        let odd: Odd = serde_json::from_str(r#"{"t":null,"n":-5,"o":"x","f":[]}"#).unwrap();
        assert_eq!((odd.t.as_str(), odd.n, odd.o, odd.f), ("", 0, None, false));
        let odd: Odd = serde_json::from_str("{}").unwrap();
        assert_eq!((odd.n, odd.o), (0, None));
    }
}
