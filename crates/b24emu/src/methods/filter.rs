//! `filter` and `order` of list methods, on rows as the API returns them.
//! Prefixes: `>= > <= < @ !@ % =% %= !% !%= = != !`; array values mean "any of".

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::params::PValue;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Contains,
    NotContains,
    Like,
    NotLike,
}

fn split_op(key: &str) -> (Op, &str) {
    // Longest prefixes first so `>=` is not read as `>`.
    const PREFIXES: &[(&str, Op)] = &[
        ("!%=", Op::NotLike),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("!@", Op::NotIn),
        ("!%", Op::NotContains),
        ("!=", Op::Ne),
        ("=%", Op::Like),
        ("%=", Op::Like),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("@", Op::In),
        ("%", Op::Contains),
        ("=", Op::Eq),
        ("!", Op::Ne),
    ];
    for (prefix, op) in PREFIXES {
        if let Some(rest) = key.strip_prefix(prefix) {
            return (*op, rest);
        }
    }
    (Op::Eq, key)
}

/// Text of a row value for comparison; booleans as `Y`/`N` like most Bitrix24 flags.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "Y".into() } else { "N".into() }),
        _ => None,
    }
}

fn filter_text(v: &PValue) -> Option<String> {
    match v {
        PValue::Bool(b) => Some(if *b { "Y".into() } else { "N".into() }),
        other => other.as_string(),
    }
}

fn normalize_flag(s: &str) -> String {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "y" => "Y".into(),
        "false" | "0" | "n" => "N".into(),
        _ => s.to_owned(),
    }
}

fn compare(a: &str, b: &str) -> Ordering {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

fn equal(row: &str, wanted: &str, row_is_bool: bool) -> bool {
    if row_is_bool {
        return normalize_flag(row) == normalize_flag(wanted);
    }
    compare(row, wanted) == Ordering::Equal
}

fn like(value: &str, pattern: &str) -> bool {
    let value = value.to_lowercase();
    let pattern = pattern.to_lowercase();
    if !pattern.contains('%') {
        return value == pattern;
    }
    let parts: Vec<&str> = pattern.split('%').collect();
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            if !value.starts_with(part) {
                return false;
            }
            pos = part.len();
        } else if let Some(found) = value[pos..].find(part) {
            pos += found + part.len();
        } else {
            return false;
        }
    }
    parts
        .last()
        .map_or(true, |last| last.is_empty() || value.ends_with(last))
}

/// Values a row holds under `field`: multifields (`PHONE`, `EMAIL`) and arrays give several.
fn row_values(row: &Map<String, Value>, field: &str) -> Vec<(String, bool)> {
    let v = row
        .get(field)
        .or_else(|| row.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)).map(|(_, v)| v));
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::Object(o) => o.get("VALUE").and_then(text),
                other => text(other),
            })
            .map(|s| (s, false))
            .collect(),
        Some(v @ Value::Bool(_)) => text(v).map(|s| vec![(s, true)]).unwrap_or_default(),
        Some(v) => text(v).map(|s| vec![(s, false)]).unwrap_or_default(),
    }
}

/// Whether a row passes every condition of `filter`.
pub(crate) fn matches(row: &Map<String, Value>, filter: &PValue) -> bool {
    filter.entries().into_iter().all(|(key, wanted)| {
        let (op, field) = split_op(&key);
        let wanted: Vec<String> = if wanted.is_container() {
            wanted.items().into_iter().filter_map(filter_text).collect()
        } else {
            filter_text(wanted).into_iter().collect()
        };
        let have = row_values(row, field);
        let any = |f: &dyn Fn(&str, &str, bool) -> bool| {
            have.iter().any(|(h, is_bool)| wanted.iter().any(|w| f(h, w, *is_bool)))
        };
        match op {
            Op::Eq | Op::In => {
                if wanted.is_empty() || (wanted.len() == 1 && wanted[0].is_empty()) {
                    // `{"FIELD": ""}` selects rows where the field is empty.
                    have.iter().all(|(h, _)| h.is_empty())
                } else {
                    any(&|h, w, b| equal(h, w, b))
                }
            }
            Op::Ne | Op::NotIn => {
                if wanted.is_empty() || (wanted.len() == 1 && wanted[0].is_empty()) {
                    have.iter().any(|(h, _)| !h.is_empty())
                } else {
                    !any(&|h, w, b| equal(h, w, b))
                }
            }
            Op::Gt => any(&|h, w, _| compare(h, w) == Ordering::Greater),
            Op::Ge => any(&|h, w, _| compare(h, w) != Ordering::Less),
            Op::Lt => any(&|h, w, _| compare(h, w) == Ordering::Less),
            Op::Le => any(&|h, w, _| compare(h, w) != Ordering::Greater),
            Op::Contains => any(&|h, w, _| h.to_lowercase().contains(&w.to_lowercase())),
            Op::NotContains => !any(&|h, w, _| h.to_lowercase().contains(&w.to_lowercase())),
            Op::Like => any(&|h, w, _| like(h, w)),
            Op::NotLike => !any(&|h, w, _| like(h, w)),
        }
    })
}

/// Sort rows by `order` (`{"FIELD":"ASC"|"DESC"}`), then by ID ascending for a stable result.
pub(crate) fn sort(rows: &mut [Map<String, Value>], order: Option<&PValue>) {
    let keys: Vec<(String, bool)> = order
        .map(|o| {
            o.entries()
                .into_iter()
                .map(|(k, v)| {
                    let desc = v.as_string().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
                    (k.to_ascii_uppercase(), desc)
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| {
        for (field, desc) in &keys {
            let x = row_values(a, field).into_iter().next().map(|v| v.0).unwrap_or_default();
            let y = row_values(b, field).into_iter().next().map(|v| v.0).unwrap_or_default();
            let ord = compare(&x, &y);
            if ord != Ordering::Equal {
                return if *desc { ord.reverse() } else { ord };
            }
        }
        let x = a.get("ID").and_then(text).unwrap_or_default();
        let y = b.get("ID").and_then(text).unwrap_or_default();
        compare(&x, &y)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn prefixes_and_multifields() {
        let r = row(json!({"ID":"7","NAME":"Ivan","PHONE":[{"VALUE":"555888"}],"ACTIVE":true}));
        let f = |j: Value| PValue::from_json(&j);
        assert!(matches(&r, &f(json!({">=ID": 7, "<ID": "8"}))));
        assert!(!matches(&r, &f(json!({">ID": 7}))));
        assert!(matches(&r, &f(json!({"PHONE": "555888"}))));
        assert!(!matches(&r, &f(json!({"PHONE": "55588"}))));
        assert!(matches(&r, &f(json!({"%NAME": "iva"}))));
        assert!(matches(&r, &f(json!({"@ID": ["1", "7"]}))));
        assert!(matches(&r, &f(json!({"!@ID": ["1", "2"]}))));
        assert!(matches(&r, &f(json!({"ACTIVE": true}))));
        assert!(matches(&r, &f(json!({"ACTIVE": "Y"}))));
        assert!(matches(&r, &f(json!({"=%NAME": "Iv%"}))));
        assert!(!matches(&r, &f(json!({"!NAME": "Ivan"}))));
    }

    #[test]
    fn sort_numeric_desc() {
        let mut rows = vec![row(json!({"ID":"2"})), row(json!({"ID":"10"})), row(json!({"ID":"1"}))];
        sort(&mut rows, Some(&PValue::from_json(&json!({"ID":"DESC"}))));
        let ids: Vec<&str> = rows.iter().filter_map(|r| r["ID"].as_str()).collect();
        assert_eq!(ids, ["10", "2", "1"]);
    }
}
