//! Property tests of the PHP bracket form encoder: what a PHP-style parser reads back from the
//! encoded body equals the parameters (in PHP's terms: scalars as text, arrays as index-keyed maps,
//! nulls and empty containers absent).

use std::collections::BTreeMap;

use bitrix24::{encode_form, form_pairs};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// A parsed form: nested maps with text leaves, as PHP's `parse_str` builds `$_POST`.
#[derive(Debug, Clone, PartialEq)]
enum Php {
    Text(String),
    Map(BTreeMap<String, Php>),
}

/// `a[b][0]` → `["a", "b", "0"]`; `None` when the brackets are malformed.
fn split_key(key: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let mut parts = vec![head.to_owned()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        parts.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    Some(parts)
}

fn parse_form(body: &str) -> BTreeMap<String, Php> {
    let mut root = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(body.as_bytes()) {
        let parts = split_key(&key).expect("encoder produced a malformed key");
        let mut node = &mut root;
        for part in &parts[..parts.len() - 1] {
            let entry = node.entry(part.clone()).or_insert_with(|| Php::Map(BTreeMap::new()));
            node = match entry {
                Php::Map(map) => map,
                Php::Text(_) => panic!("key {key} goes through a scalar"),
            };
        }
        let previous = node.insert(parts[parts.len() - 1].clone(), Php::Text(value.into_owned()));
        assert!(previous.is_none(), "key {key} sent twice");
    }
    root
}

/// What PHP would see for these parameters.
fn expected(value: &Value) -> Option<Php> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(Php::Text(if *b { "1" } else { "0" }.into())),
        Value::Number(n) => Some(Php::Text(n.to_string())),
        Value::String(s) => Some(Php::Text(s.clone())),
        Value::Array(items) => {
            let map: BTreeMap<String, Php> = items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| expected(v).map(|p| (i.to_string(), p)))
                .collect();
            (!map.is_empty()).then_some(Php::Map(map))
        }
        Value::Object(obj) => {
            let map: BTreeMap<String, Php> = obj
                .iter()
                .filter_map(|(k, v)| expected(v).map(|p| (k.clone(), p)))
                .collect();
            (!map.is_empty()).then_some(Php::Map(map))
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    // Bitrix24 keys: field names, filter prefixes (`>=DATE`, `%TITLE`, `!@ID`), camelCase, digits.
    "[A-Za-z0-9_%!<>=@.-]{1,10}"
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        // Any text, including the characters that matter to forms: & = + % [ ] space, and non-ASCII.
        "\\PC{0,12}".prop_map(Value::String),
        "[&=+%\\[\\] #?]{0,6}".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn params() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), tree(), 0..6).prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn php_reads_back_what_was_sent(params in params()) {
        let body = encode_form(&params).unwrap();
        let parsed = parse_form(&body);
        let want = match expected(&params) {
            Some(Php::Map(map)) => map,
            None => BTreeMap::new(),
            Some(Php::Text(_)) => unreachable!("params are a map"),
        };
        prop_assert_eq!(parsed, want);
    }

    #[test]
    fn one_pair_per_leaf_and_no_raw_specials(params in params()) {
        let pairs = form_pairs(&params).unwrap();
        let mut keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        prop_assert_eq!(keys.len(), pairs.len());
        let body = encode_form(&params).unwrap();
        // Every `&` and `=` in the body is structural: one `=` per pair, pairs joined by `&`.
        prop_assert_eq!(body.matches('=').count(), pairs.len());
        prop_assert!(!body.contains('[') && !body.contains(']') && !body.contains(' '));
    }

    #[test]
    fn any_json_encodes_or_errors_without_panic(value in tree(), bad_key in "[\\[\\]a-z]{0,4}") {
        let _ = encode_form(&value);
        let mut map = Map::new();
        map.insert(bad_key.clone(), value);
        let result = encode_form(&Value::Object(map));
        if bad_key.is_empty() || bad_key.contains(['[', ']']) {
            let error = result.unwrap_err();
            prop_assert!(error.to_string().contains("key"));
        } else {
            prop_assert!(result.is_ok());
        }
    }
}

#[test]
fn positional_parameters() {
    let body = encode_form(&serde_json::json!([123, {"POST_MESSAGE": "hi there"}])).unwrap();
    assert_eq!(body, "0=123&1%5BPOST_MESSAGE%5D=hi+there");
}
