//! `batch`: up to 50 commands run in order, with `$result[key][FIELD]` references and `halt`.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::api::{self, php_map, ApiError, Reply, SystemError, Timing};
use crate::core::{normalize_method, Ctx};
use crate::params::{parse_form, PValue};
use crate::record::RecordedRequest;

pub(crate) async fn run(ctx: &Ctx<'_>, p: &PValue, _started: Instant) -> Result<Reply, ApiError> {
    let core = ctx.core;
    let rev = core.cfg.conflicts.status_revision;
    let commands: Vec<(String, String)> = match p.get("cmd") {
        Some(cmd) if cmd.is_container() => cmd
            .entries()
            .into_iter()
            .map(|(k, v)| (k, v.as_string().unwrap_or_default()))
            .collect(),
        _ => return Err(ApiError::new(400, "ERROR_ARGUMENT", "Argument 'cmd' is null or empty")),
    };
    if commands.len() > core.cfg.limits.max_batch_commands {
        return Err(SystemError::BatchLengthExceeded.to_error(rev));
    }
    let halt = p.get_present("halt").is_some_and(PValue::is_truthy);

    let mut results = Map::new();
    let mut errors = Map::new();
    let mut totals = Map::new();
    let mut nexts = Map::new();
    let mut times = Map::new();
    for (key, command) in commands {
        let (raw_method, query) = command.split_once('?').unwrap_or((command.as_str(), ""));
        let method = normalize_method(raw_method);
        let mut params = substitute(&parse_form(query), &results);
        params.remove("auth");
        let seq = core.take_seq();
        let started = Instant::now();
        let start = core.clock.now();
        let sub = Ctx {
            core,
            caller: ctx.caller,
            now: start,
            seq,
        };
        let outcome = if method == "batch" {
            Err(SystemError::BatchMethodNotAllowed.to_error(rev))
        } else {
            core.call_method(&sub, &method, &params).await
        };
        let timing = Timing {
            start,
            finish: core.clock.now(),
            processing: started.elapsed().as_secs_f64(),
        };
        let (status, response) = match &outcome {
            Ok((reply, operating)) => (
                200,
                api::success_body(reply, api::time_block(&core.clock, timing, *operating)),
            ),
            Err(e) => (e.status, e.body()),
        };
        core.record(RecordedRequest {
            seq,
            at: start,
            method,
            params: params.to_json(),
            auth: ctx.caller.mode.clone(),
            status,
            response,
            batch_parent: Some(ctx.seq),
        });
        match outcome {
            Ok((reply, _)) => {
                results.insert(key.clone(), reply.result);
                if let Some(total) = reply.total {
                    totals.insert(key.clone(), json!(total));
                }
                if let Some(next) = reply.next {
                    nexts.insert(key.clone(), json!(next));
                }
                times.insert(key, api::time_block(&core.clock, timing, None));
            }
            Err(e) => {
                errors.insert(key, e.body());
                if halt {
                    break;
                }
            }
        }
    }
    Ok(Reply::new(json!({
        "result": php_map(results),
        "result_error": php_map(errors),
        "result_total": php_map(totals),
        "result_next": php_map(nexts),
        "result_time": php_map(times),
    })))
}

/// Replace `$result[key][FIELD]…` in parameter values with earlier results. A value that is exactly one
/// reference takes the referenced value whole (lists included); references inside text are stringified.
/// References to missing results are left as written.
fn substitute(value: &PValue, results: &Map<String, Value>) -> PValue {
    match value {
        PValue::Str(s) if s.contains("$result[") => substitute_text(s, results),
        PValue::List(items) => PValue::List(items.iter().map(|v| substitute(v, results)).collect()),
        PValue::Map(entries) => PValue::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, results)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Parse `$result[a][b]…` at the start of `s`: (path, consumed length).
fn parse_reference(s: &str) -> Option<(Vec<String>, usize)> {
    let mut rest = s.strip_prefix("$result")?;
    let mut path = Vec::new();
    let mut consumed = "$result".len();
    while let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        path.push(inner[..close].to_owned());
        consumed += close + 2;
        rest = &inner[close + 1..];
    }
    (!path.is_empty()).then_some((path, consumed))
}

fn resolve<'a>(results: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut node = results.get(first)?;
    for seg in rest {
        node = match node {
            Value::Object(o) => o.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "1" } else { "" }.to_owned(),
        other => other.to_string(),
    }
}

fn substitute_text(s: &str, results: &Map<String, Value>) -> PValue {
    if let Some((path, len)) = parse_reference(s) {
        if len == s.len() {
            return match resolve(results, &path) {
                Some(v @ (Value::Array(_) | Value::Object(_))) => PValue::from_json(v),
                Some(v) => PValue::Str(scalar_text(v)),
                None => PValue::Str(s.to_owned()),
            };
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("$result[") {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        match parse_reference(tail) {
            Some((path, len)) => {
                match resolve(results, &path) {
                    Some(v) => out.push_str(&scalar_text(v)),
                    None => out.push_str(&tail[..len]),
                }
                rest = &tail[len..];
            }
            None => {
                out.push_str(tail);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    PValue::Str(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_into_nested_results() {
        let mut results = Map::new();
        results.insert("get_user".into(), json!({"ID": "5", "UF_DEPARTMENT": [7, 8]}));
        results.insert("list".into(), json!([{"ID": "42"}]));
        let p = parse_form("id=$result[list][0][ID]&dep=$result[get_user][UF_DEPARTMENT][0]&t=User+$result[get_user][ID]!&all=$result[get_user][UF_DEPARTMENT]&miss=$result[nope][ID]");
        let s = substitute(&p, &results);
        assert_eq!(s.get("id").and_then(PValue::as_str), Some("42"));
        assert_eq!(s.get("dep").and_then(PValue::as_str), Some("7"));
        assert_eq!(s.get("t").and_then(PValue::as_str), Some("User 5!"));
        assert_eq!(s.get("all").map(PValue::to_json), Some(json!([7, 8])));
        assert_eq!(s.get("miss").and_then(PValue::as_str), Some("$result[nope][ID]"));
    }
}
