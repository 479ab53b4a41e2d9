//! Request parameters as Bitrix24's PHP backend sees them.
//!
//! PHP turns `fields[PHONE][0][VALUE]=1` into nested ordered arrays, and JSON bodies into the same structure.
//! Order matters (batch commands run in the order they were sent), so parameters are kept in an ordered tree
//! instead of `serde_json::Value`, whose maps are sorted unless a workspace-wide feature is switched on.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One parameter value: a scalar, a list, or an ordered map (PHP array with string keys).
#[derive(Debug, Clone, PartialEq)]
pub enum PValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(String),
    List(Vec<PValue>),
    Map(Vec<(String, PValue)>),
}

impl PValue {
    pub fn empty_map() -> Self {
        PValue::Map(Vec::new())
    }

    /// Case-insensitive lookup of a key in a map (Bitrix24 accepts `filter` and `FILTER` alike).
    pub fn get(&self, key: &str) -> Option<&PValue> {
        match self {
            PValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .or_else(|| entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
                .map(|(_, v)| v),
            PValue::List(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
    }

    /// Lookup that treats an empty string or null as absent, as PHP's `empty()` checks do.
    pub fn get_present(&self, key: &str) -> Option<&PValue> {
        self.get(key).filter(|v| !v.is_blank())
    }

    pub fn is_blank(&self) -> bool {
        match self {
            PValue::Null => true,
            PValue::Str(s) => s.is_empty(),
            _ => false,
        }
    }

    /// Scalar as a string (numbers and booleans stringified the way PHP would).
    pub fn as_string(&self) -> Option<String> {
        match self {
            PValue::Str(s) => Some(s.clone()),
            PValue::Number(n) => Some(n.to_string()),
            PValue::Bool(true) => Some("1".into()),
            PValue::Bool(false) => Some(String::new()),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Integer from a number or a numeric string (form parameters are always strings).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PValue::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            PValue::Str(s) => {
                let t = s.trim();
                t.parse::<i64>()
                    .ok()
                    .or_else(|| t.parse::<f64>().ok().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            }
            PValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PValue::Number(n) => n.as_f64(),
            PValue::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
    }

    /// PHP-ish truthiness for flags such as `halt`, `SHOW`, `CRM_CREATE`.
    pub fn is_truthy(&self) -> bool {
        match self {
            PValue::Null => false,
            PValue::Bool(b) => *b,
            PValue::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            PValue::Str(s) => {
                let t = s.trim();
                !(t.is_empty() || t == "0" || t.eq_ignore_ascii_case("false") || t.eq_ignore_ascii_case("n"))
            }
            PValue::List(l) => !l.is_empty(),
            PValue::Map(m) => !m.is_empty(),
        }
    }

    /// Items of a list, or values of a map in order (PHP arrays with numeric keys arrive as maps from forms).
    pub fn items(&self) -> Vec<&PValue> {
        match self {
            PValue::List(l) => l.iter().collect(),
            PValue::Map(m) => m.iter().map(|(_, v)| v).collect(),
            _ => Vec::new(),
        }
    }

    pub fn entries(&self) -> Vec<(String, &PValue)> {
        match self {
            PValue::Map(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            PValue::List(l) => l.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            _ => Vec::new(),
        }
    }

    pub fn is_container(&self) -> bool {
        matches!(self, PValue::List(_) | PValue::Map(_))
    }

    /// Set `key` in a map, replacing an existing entry with the same key.
    pub fn insert(&mut self, key: String, value: PValue) {
        if let PValue::Map(entries) = self {
            if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
            } else {
                entries.push((key, value));
            }
        }
    }

    /// Remove a key (exact or case-insensitive) from a map, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<PValue> {
        if let PValue::Map(entries) = self {
            let pos = entries
                .iter()
                .position(|(k, _)| k == key)
                .or_else(|| entries.iter().position(|(k, _)| k.eq_ignore_ascii_case(key)))?;
            return Some(entries.remove(pos).1);
        }
        None
    }

    /// Merge another map into this one (later sources win), used to combine query string and body.
    pub fn merge(&mut self, other: PValue) {
        if let PValue::Map(more) = other {
            for (k, v) in more {
                self.insert(k, v);
            }
        }
    }

    /// Convert for recording and for echoing back in results. Maps whose keys are exactly 0..n become arrays.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            PValue::Null => Value::Null,
            PValue::Bool(b) => Value::Bool(*b),
            PValue::Number(n) => Value::Number(n.clone()),
            PValue::Str(s) => Value::String(s.clone()),
            PValue::List(l) => Value::Array(l.iter().map(PValue::to_json).collect()),
            PValue::Map(m) => {
                if !m.is_empty() && m.iter().enumerate().all(|(i, (k, _))| k.parse::<usize>() == Ok(i)) {
                    Value::Array(m.iter().map(|(_, v)| v.to_json()).collect())
                } else {
                    Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
                }
            }
        }
    }

    pub fn from_json(value: &serde_json::Value) -> PValue {
        use serde_json::Value;
        match value {
            Value::Null => PValue::Null,
            Value::Bool(b) => PValue::Bool(*b),
            Value::Number(n) => PValue::Number(n.clone()),
            Value::String(s) => PValue::Str(s.clone()),
            Value::Array(a) => PValue::List(a.iter().map(PValue::from_json).collect()),
            Value::Object(o) => PValue::Map(o.iter().map(|(k, v)| (k.clone(), PValue::from_json(v))).collect()),
        }
    }
}

impl<'de> Deserialize<'de> for PValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PVisitor;
        impl<'de> Visitor<'de> for PVisitor {
            type Value = PValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<PValue, E> {
                Ok(PValue::Null)
            }
            fn visit_none<E>(self) -> Result<PValue, E> {
                Ok(PValue::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<PValue, E> {
                Ok(PValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<PValue, E> {
                Ok(PValue::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<PValue, E> {
                Ok(PValue::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<PValue, E> {
                serde_json::Number::from_f64(v)
                    .map(PValue::Number)
                    .ok_or_else(|| E::custom("non-finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<PValue, E> {
                Ok(PValue::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<PValue, E> {
                Ok(PValue::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PValue, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(PValue::List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PValue, A::Error> {
                let mut out: Vec<(String, PValue)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, PValue>()? {
                    if let Some(slot) = out.iter_mut().find(|(ek, _)| *ek == k) {
                        slot.1 = v;
                    } else {
                        out.push((k, v));
                    }
                }
                Ok(PValue::Map(out))
            }
        }
        deserializer.deserialize_any(PVisitor)
    }
}

/// Parse a JSON request body into parameters.
pub fn parse_json(body: &[u8]) -> Result<PValue, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PValue::empty_map());
    }
    serde_json::from_slice(body)
}

/// Parse `a=1&b[c][]=2` (query string or urlencoded body) the way PHP's `parse_str` does.
pub fn parse_form(input: &str) -> PValue {
    let mut root = PValue::empty_map();
    for (key, value) in url::form_urlencoded::parse(input.as_bytes()) {
        insert_bracketed(&mut root, &key, PValue::Str(value.into_owned()));
    }
    root
}

/// Insert a value under a PHP bracket key like `fields[PHONE][0][VALUE]` or `select[]`.
pub fn insert_bracketed(root: &mut PValue, key: &str, value: PValue) {
    let (base, path) = split_bracket_key(key);
    if base.is_empty() {
        return;
    }
    let mut segments = Vec::with_capacity(path.len() + 1);
    segments.push(Some(base));
    segments.extend(path);
    insert_path(root, &segments, value);
}

/// `a[b][]` → ("a", [Some("b"), None]); a key with an unclosed bracket is taken literally, like PHP.
fn split_bracket_key(key: &str) -> (String, Vec<Option<String>>) {
    let Some(open) = key.find('[') else {
        return (key.to_owned(), Vec::new());
    };
    let base = key[..open].to_owned();
    let mut path = Vec::new();
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else {
            break;
        };
        let seg = &stripped[..close];
        path.push(if seg.is_empty() { None } else { Some(seg.to_owned()) });
        rest = &stripped[close + 1..];
    }
    if path.is_empty() {
        return (key.to_owned(), Vec::new());
    }
    (base, path)
}

fn insert_path(node: &mut PValue, segments: &[Option<String>], value: PValue) {
    if !matches!(node, PValue::Map(_)) {
        *node = PValue::empty_map();
    }
    let PValue::Map(entries) = node else { return };
    let key = match &segments[0] {
        Some(k) => k.clone(),
        None => next_index(entries).to_string(),
    };
    if segments.len() == 1 {
        if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            entries.push((key, value));
        }
        return;
    }
    let pos = match entries.iter().position(|(k, _)| *k == key) {
        Some(p) => p,
        None => {
            entries.push((key, PValue::empty_map()));
            entries.len() - 1
        }
    };
    insert_path(&mut entries[pos].1, &segments[1..], value);
}

/// PHP's `[]` appends at max numeric key + 1.
fn next_index(entries: &[(String, PValue)]) -> i64 {
    entries
        .iter()
        .filter_map(|(k, _)| k.parse::<i64>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_brackets_build_nested_structure() {
        let p = parse_form("fields[TITLE]=My%20company&fields[PHONE][0][VALUE]=112233&fields[PHONE][0][VALUE_TYPE]=WORK&select[]=ID&select[]=NAME");
        let fields = p.get("fields").unwrap();
        assert_eq!(fields.get("TITLE").unwrap().as_str(), Some("My company"));
        let phone = fields.get("PHONE").unwrap().items();
        assert_eq!(phone.len(), 1);
        assert_eq!(phone[0].get("VALUE").unwrap().as_str(), Some("112233"));
        assert_eq!(p.get("select").unwrap().to_json(), serde_json::json!(["ID", "NAME"]));
    }

    #[test]
    fn json_keeps_key_order() {
        let p = parse_json(br#"{"cmd":{"z":"a","b":"c","m":"d"}}"#).unwrap();
        let keys: Vec<String> = p.get("cmd").unwrap().entries().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["z", "b", "m"]);
    }

    #[test]
    fn lookups_are_case_insensitive_and_numbers_coerce() {
        let p = parse_form("FILTER[UF_PHONE_INNER]=101&start=50");
        assert!(p.get("filter").is_some());
        assert_eq!(p.get("start").unwrap().as_i64(), Some(50));
    }

    #[test]
    fn unclosed_bracket_is_literal_key() {
        let p = parse_form("a[b=1");
        assert_eq!(p.get("a[b").unwrap().as_str(), Some("1"));
    }
}
