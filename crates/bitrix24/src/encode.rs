//! Request encodings Bitrix24 understands: JSON, and `application/x-www-form-urlencoded` with PHP-style
//! brackets (`fields[PHONE][0][VALUE]=112233`), which every method accepts and `batch` commands require.

use serde_json::Value;

use crate::error::Error;

/// How a call's parameters go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `application/json` body. Accepted by most methods; keeps types (numbers, booleans, nulls).
    #[default]
    Json,
    /// `application/x-www-form-urlencoded` body with PHP bracket keys. Accepted by every method.
    Form,
}

/// Flattens parameters into PHP-style `(key, value)` pairs, like PHP's `http_build_query`:
/// nested maps and arrays become `a[b][0][c]`, `true`/`false` become `1`/`0`, and `null`s and empty
/// arrays/maps are left out (PHP cannot express them in a form either).
///
/// The top level must be a map (named parameters) or an array (positional `0=…&1[…]=…`).
pub fn form_pairs(params: &Value) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    match params {
        Value::Null => {}
        Value::Object(map) => {
            for (key, value) in map {
                check_key(key)?;
                push_value(key.clone(), value, &mut out)?;
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                push_value(index.to_string(), value, &mut out)?;
            }
        }
        other => {
            return Err(Error::Encode(format!(
                "top-level parameters must be a map or an array, got {}",
                kind_name(other)
            )))
        }
    }
    Ok(out)
}

/// [`form_pairs`], percent-encoded into a body or query string.
pub fn encode_form(params: &Value) -> Result<String, Error> {
    let pairs = form_pairs(params)?;
    let mut serializer = url::form_urlencoded::Serializer::new(String::with_capacity(pairs.len() * 24));
    for (key, value) in &pairs {
        serializer.append_pair(key, value);
    }
    Ok(serializer.finish())
}

fn push_value(prefix: String, value: &Value, out: &mut Vec<(String, String)>) -> Result<(), Error> {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push((prefix, if *b { "1" } else { "0" }.to_owned())),
        Value::Number(n) => out.push((prefix, n.to_string())),
        Value::String(s) => out.push((prefix, s.clone())),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                push_value(format!("{prefix}[{index}]"), item, out)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_key(key)?;
                push_value(format!("{prefix}[{key}]"), item, out)?;
            }
        }
    }
    Ok(())
}

// PHP's parser splits keys at brackets; a key containing one cannot survive the trip.
fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.contains(['[', ']']) {
        return Err(Error::Encode(format!(
            "key {key:?} cannot be sent as a form field (empty or contains a bracket)"
        )));
    }
    Ok(())
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Sorted: map order depends on whether serde_json's `preserve_order` is on in the build.
    fn pairs(v: Value) -> Vec<(String, String)> {
        let mut got = form_pairs(&v).unwrap();
        got.sort();
        got
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn nested_multifield() {
        let got = pairs(json!({"FIELDS": {"TITLE": "Acme", "PHONE": [{"VALUE": "112233", "VALUE_TYPE": "WORK"}]}}));
        assert_eq!(
            got,
            vec![
                p("FIELDS[PHONE][0][VALUE]", "112233"),
                p("FIELDS[PHONE][0][VALUE_TYPE]", "WORK"),
                p("FIELDS[TITLE]", "Acme"),
            ]
        );
    }

    #[test]
    fn scalars_like_php() {
        let got = pairs(json!({"a": true, "b": false, "c": null, "d": 1.5, "e": -3, "f": [], "g": {}, "h": ""}));
        assert_eq!(
            got,
            vec![p("a", "1"), p("b", "0"), p("d", "1.5"), p("e", "-3"), p("h", "")]
        );
    }

    #[test]
    fn lists_and_positional() {
        assert_eq!(
            pairs(json!({"select": ["ID", "NAME"]})),
            vec![p("select[0]", "ID"), p("select[1]", "NAME")]
        );
        assert_eq!(
            form_pairs(&json!([123, {"POST_MESSAGE": "x"}])).unwrap(),
            vec![p("0", "123"), p("1[POST_MESSAGE]", "x")]
        );
    }

    #[test]
    fn percent_encoding_of_special_characters() {
        let body = encode_form(&json!({"fields": {"TITLE": "John&Martin = 100% ok"}})).unwrap();
        assert_eq!(body, "fields%5BTITLE%5D=John%26Martin+%3D+100%25+ok");
        let filter = encode_form(&json!({"filter": {">=DATE": "2026-03-07T10:20:30+03:00"}})).unwrap();
        assert_eq!(filter, "filter%5B%3E%3DDATE%5D=2026-03-07T10%3A20%3A30%2B03%3A00");
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(form_pairs(&json!("x")).is_err());
        assert!(form_pairs(&json!(5)).is_err());
        assert!(form_pairs(&json!({"a[b]": 1})).is_err());
        assert!(form_pairs(&json!({"a": {"": 1}})).is_err());
        assert!(form_pairs(&Value::Null).unwrap().is_empty());
    }
}
