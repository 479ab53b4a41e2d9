//! `batch`: up to 50 commands in one request (one hit on the rate limit).

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::client::{decode_result, to_params, Client, Payload};
use crate::encode::{encode_form, Encoding};
use crate::envelope::{api_error, as_map, as_u64, TimeInfo};
use crate::error::Error;
use crate::method::Method;

/// Most commands Bitrix24 runs in one batch.
pub const MAX_BATCH_COMMANDS: usize = 50;

/// A list of commands run in order by the portal.
///
/// Later commands may refer to earlier results with [`Batch::reference`] (`$result[key][FIELD]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    halt: bool,
    commands: Vec<BatchCommand>,
    keys: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct BatchCommand {
    key: String,
    method: String,
    params: Value,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop at the first failing command (`halt=1`).
    pub fn halt(mut self, halt: bool) -> Self {
        self.halt = halt;
        self
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Adds a command. Fails (without adding) past 50 commands or on a repeated or unusable key.
    pub fn push(
        &mut self,
        key: impl Into<String>,
        method: impl Into<String>,
        params: Value,
    ) -> Result<&mut Self, Error> {
        let key = key.into();
        if self.commands.len() >= MAX_BATCH_COMMANDS {
            return Err(Error::BatchTooLarge {
                len: self.commands.len() + 1,
            });
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(Error::BatchKey {
                key,
                reason: "use letters, digits, '_' and '-' only",
            });
        }
        if self.keys.contains(&key) {
            return Err(Error::BatchKey {
                key,
                reason: "used twice",
            });
        }
        let method = method.into();
        if method.eq_ignore_ascii_case("batch") {
            return Err(Error::BatchKey {
                key,
                reason: "batch cannot be nested",
            });
        }
        self.keys.insert(key.clone());
        self.commands.push(BatchCommand { key, method, params });
        Ok(self)
    }

    /// Adds a typed request.
    pub fn push_method<M: Method>(&mut self, key: impl Into<String>, request: &M) -> Result<&mut Self, Error> {
        let params = to_params(request)?;
        self.push(key, M::NAME, params)
    }

    /// `$result[key][path0][path1]…`: a reference to an earlier command's result, substituted by the portal.
    pub fn reference(key: &str, path: &[&str]) -> String {
        let mut out = format!("$result[{key}]");
        for part in path {
            out.push('[');
            out.push_str(part);
            out.push(']');
        }
        out
    }

    /// The `cmd` entries in order: `(key, "method?php-form-query")`. The portal runs them in this order,
    /// which is what makes `$result[…]` references to earlier commands work.
    pub fn command_lines(&self) -> Result<Vec<(String, String)>, Error> {
        self.commands
            .iter()
            .map(|command| {
                let query = encode_form(&command.params)?;
                let line = if query.is_empty() {
                    command.method.clone()
                } else {
                    format!("{}?{}", command.method, query)
                };
                Ok((command.key.clone(), line))
            })
            .collect()
    }

    /// The `batch` body as JSON, keys in command order (a JSON map type would sort them), with `auth`
    /// when given.
    pub(crate) fn json_body(&self, auth: Option<&str>) -> Result<Vec<u8>, Error> {
        let encode = |e: serde_json::Error| Error::Encode(e.to_string());
        let mut body = format!("{{\"halt\":{},\"cmd\":{{", u8::from(self.halt));
        for (index, (key, line)) in self.command_lines()?.iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            body.push_str(&serde_json::to_string(key).map_err(encode)?);
            body.push(':');
            body.push_str(&serde_json::to_string(line).map_err(encode)?);
        }
        body.push('}');
        if let Some(token) = auth {
            body.push_str(",\"auth\":");
            body.push_str(&serde_json::to_string(token).map_err(encode)?);
        }
        body.push('}');
        Ok(body.into_bytes())
    }

    /// The `batch` body as a form (`cmd[key]=method%3Fquery`, double-encoded), in command order.
    pub(crate) fn form_body(&self, auth: Option<&str>) -> Result<String, Error> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("halt", if self.halt { "1" } else { "0" });
        for (key, line) in self.command_lines()? {
            form.append_pair(&format!("cmd[{key}]"), &line);
        }
        if let Some(token) = auth {
            form.append_pair("auth", token);
        }
        Ok(form.finish())
    }

    fn method_of(&self, key: &str) -> &str {
        self.commands
            .iter()
            .find(|c| c.key == key)
            .map(|c| c.method.as_str())
            .unwrap_or("batch")
    }

    fn keys_in_order(&self) -> Vec<String> {
        self.commands.iter().map(|c| c.key.clone()).collect()
    }
}

/// Per-command outcome of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResponse {
    order: Vec<String>,
    methods: Map<String, Value>,
    results: Map<String, Value>,
    errors: Map<String, Value>,
    totals: Map<String, Value>,
    nexts: Map<String, Value>,
    /// Timing of the whole batch.
    pub time: Option<TimeInfo>,
}

impl BatchResponse {
    /// The command keys in the order they were added.
    pub fn keys(&self) -> &[String] {
        &self.order
    }

    /// The command's result, or its error, or [`Error::BatchMissing`] when it did not run (halted).
    pub fn get(&self, key: &str) -> Result<&Value, Error> {
        if let Some(value) = self.results.get(key) {
            return Ok(value);
        }
        if let Some(error) = self.errors.get(key) {
            let method = self.methods.get(key).and_then(Value::as_str).unwrap_or("batch");
            let code = error.get("error").map(text).unwrap_or_default();
            let description = error.get("error_description").map(text).unwrap_or_default();
            // The portal answers the batch itself with 200; classify by code as if the command ran alone.
            return Err(api_error(method, 400, code, description));
        }
        Err(Error::BatchMissing { key: key.to_owned() })
    }

    /// The command's result decoded as `T`.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<T, Error> {
        let method = self
            .methods
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("batch")
            .to_owned();
        decode_result(&method, self.get(key)?.clone())
    }

    /// The result of a typed command added with [`Batch::push_method`].
    pub fn get_method<M: Method>(&self, key: &str) -> Result<M::Output, Error> {
        decode_result(M::NAME, self.get(key)?.clone())
    }

    /// Keys of the commands that failed.
    pub fn failed_keys(&self) -> Vec<&str> {
        self.order
            .iter()
            .filter(|k| self.errors.contains_key(k.as_str()))
            .map(String::as_str)
            .collect()
    }

    pub fn total(&self, key: &str) -> Option<u64> {
        self.totals.get(key).and_then(as_u64)
    }

    pub fn next(&self, key: &str) -> Option<u64> {
        self.nexts.get(key).and_then(as_u64)
    }

    pub(crate) fn parse(batch: &Batch, result: Value, time: Option<TimeInfo>) -> Result<Self, Error> {
        let shape_error = |reason: &str| Error::Decode {
            method: "batch".into(),
            reason: reason.to_owned(),
        };
        let mut outer = as_map(result).ok_or_else(|| shape_error("result is not a map"))?;
        let mut section = |name: &str| -> Result<Map<String, Value>, Error> {
            match outer.remove(name) {
                None => Ok(Map::new()),
                Some(value) => as_map(value).ok_or_else(|| shape_error(&format!("{name} is not a map"))),
            }
        };
        let results = section("result")?;
        let errors = section("result_error")?;
        let totals = section("result_total")?;
        let nexts = section("result_next")?;
        let methods = batch
            .commands
            .iter()
            .map(|c| (c.key.clone(), Value::String(batch.method_of(&c.key).to_owned())))
            .collect();
        Ok(BatchResponse {
            order: batch.keys_in_order(),
            methods,
            results,
            errors,
            totals,
            nexts,
            time,
        })
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Client {
    /// Runs a batch (JSON body). One request against the rate limit, whatever the command count.
    pub async fn batch(&self, batch: &Batch) -> Result<BatchResponse, Error> {
        self.batch_with(batch, Encoding::Json).await
    }

    /// Runs a batch with the chosen outer encoding (with `Form`, commands are double-encoded).
    pub async fn batch_with(&self, batch: &Batch, encoding: Encoding) -> Result<BatchResponse, Error> {
        if batch.len() > MAX_BATCH_COMMANDS {
            return Err(Error::BatchTooLarge { len: batch.len() });
        }
        let envelope = self.call_payload("batch", Payload::Batch(batch), encoding).await?;
        BatchResponse::parse(batch, envelope.result, envelope.time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_is_fifty_and_nothing_is_split() {
        let mut b = Batch::new();
        for i in 0..50 {
            b.push(format!("c{i}"), "user.get", json!({})).unwrap();
        }
        let err = b.push("c50", "user.get", json!({})).unwrap_err();
        assert!(matches!(err, Error::BatchTooLarge { len: 51 }));
        assert_eq!(b.len(), 50);
    }

    #[test]
    fn keys_checked() {
        let mut b = Batch::new();
        b.push("a", "user.get", json!({})).unwrap();
        assert!(b.push("a", "user.get", json!({})).is_err());
        assert!(b.push("a[0]", "user.get", json!({})).is_err());
        assert!(b.push("", "user.get", json!({})).is_err());
        assert!(b.push("n", "BATCH", json!({})).is_err());
    }

    #[test]
    fn commands_keep_their_order() {
        let mut b = Batch::new();
        for i in 0..12 {
            b.push(format!("k{i}"), "user.get", json!({})).unwrap();
        }
        let body = String::from_utf8(b.json_body(None).unwrap()).unwrap();
        let positions: Vec<usize> = (0..12).map(|i| body.find(&format!("\"k{i}\"")).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{body}");
    }

    #[test]
    fn command_lines_and_references() {
        let mut b = Batch::new().halt(true);
        b.push("lead", "crm.lead.add", json!({"fields": {"TITLE": "John&Martin"}}))
            .unwrap();
        b.push("get", "crm.lead.get", json!({"id": Batch::reference("lead", &[])}))
            .unwrap();
        b.push("users", "user.get", json!({})).unwrap();
        let lines = b.command_lines().unwrap();
        assert_eq!(
            lines,
            vec![
                (
                    "lead".to_owned(),
                    "crm.lead.add?fields%5BTITLE%5D=John%26Martin".to_owned()
                ),
                ("get".to_owned(), "crm.lead.get?id=%24result%5Blead%5D".to_owned()),
                ("users".to_owned(), "user.get".to_owned()),
            ]
        );
        let json: Value = serde_json::from_slice(&b.json_body(Some("T")).unwrap()).unwrap();
        assert_eq!(json["halt"], 1);
        assert_eq!(json["auth"], "T");
        assert_eq!(json["cmd"]["get"], "crm.lead.get?id=%24result%5Blead%5D");
        let form = b.form_body(None).unwrap();
        assert_eq!(
            form,
            "halt=1&cmd%5Blead%5D=crm.lead.add%3Ffields%255BTITLE%255D%3DJohn%2526Martin\
             &cmd%5Bget%5D=crm.lead.get%3Fid%3D%2524result%255Blead%255D&cmd%5Busers%5D=user.get"
        );
        assert_eq!(
            Batch::reference("u", &["UF_DEPARTMENT", "0"]),
            "$result[u][UF_DEPARTMENT][0]"
        );
    }

    #[test]
    fn response_sections_including_php_empty_arrays() {
        let mut b = Batch::new();
        b.push("ok", "crm.lead.add", json!({})).unwrap();
        b.push("bad", "crm.lead.get", json!({"id": 0})).unwrap();
        b.push("scope", "user.get", json!({})).unwrap();
        b.push("never", "user.get", json!({})).unwrap();
        let result = json!({
            "result": {"ok": 17},
            "result_error": {
                "bad": {"error": "", "error_description": "Not found"},
                "scope": {"error": "insufficient_scope", "error_description": ""}
            },
            "result_total": [],
            "result_next": [],
            "result_time": []
        });
        let r = BatchResponse::parse(&b, result, None).unwrap();
        assert_eq!(r.get_as::<u64>("ok").unwrap(), 17);
        assert!(matches!(r.get("bad"), Err(Error::Method { ref method, .. }) if method == "crm.lead.get"));
        assert!(matches!(r.get("scope"), Err(Error::Auth { .. })));
        assert!(matches!(r.get("never"), Err(Error::BatchMissing { .. })));
        assert_eq!(r.failed_keys(), vec!["bad", "scope"]);

        let empty = BatchResponse::parse(&b, json!({"result": [], "result_error": []}), None).unwrap();
        assert!(empty.failed_keys().is_empty());
        assert!(BatchResponse::parse(&b, json!("x"), None).is_err());
    }
}
