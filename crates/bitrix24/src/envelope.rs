//! The response envelope `{result, time, total, next}` and the mapping of error bodies to [`Error`].

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{AuthErrorKind, Error};

/// Timing block of a response. Bitrix24 says its fields "may vary", so every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TimeInfo {
    pub start: Option<f64>,
    pub finish: Option<f64>,
    pub duration: Option<f64>,
    pub processing: Option<f64>,
    pub date_start: Option<String>,
    pub date_finish: Option<String>,
    /// Unix time when the oldest basket of this method's operation-time budget expires.
    pub operating_reset_at: Option<i64>,
    /// Seconds of this method's operation-time budget used in the window.
    pub operating: Option<f64>,
}

/// A successful response.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub result: Value,
    pub time: Option<TimeInfo>,
    /// List methods: total number of records (absent with `start=-1`).
    pub total: Option<u64>,
    /// List methods: the `start` of the next page, when there is one.
    pub next: Option<u64>,
}

/// Decodes a response body of `method` received with HTTP `status`.
pub fn decode_response(method: &str, status: u16, body: &[u8]) -> Result<Envelope, Error> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::InvalidResponse {
        status,
        reason: format!("body is not JSON ({e})"),
        snippet: snippet(body),
    })?;
    let Value::Object(mut map) = value else {
        return Err(Error::InvalidResponse {
            status,
            reason: "body is JSON but not an object".into(),
            snippet: snippet(body),
        });
    };
    if let Some(error) = map.get("error") {
        if !error.is_null() {
            let code = text_of(error);
            let description = map.get("error_description").map(text_of).unwrap_or_default();
            return Err(api_error(method, status, code, description));
        }
    }
    if !(200..300).contains(&status) {
        return Err(Error::InvalidResponse {
            status,
            reason: "error status without an error field".into(),
            snippet: snippet(body),
        });
    }
    let Some(result) = map.remove("result") else {
        return Err(Error::InvalidResponse {
            status,
            reason: "no \"result\" field".into(),
            snippet: snippet(body),
        });
    };
    Ok(Envelope {
        result,
        time: map.remove("time").and_then(|t| serde_json::from_value(t).ok()),
        total: map.get("total").and_then(as_u64),
        next: map.get("next").and_then(as_u64),
    })
}

/// Maps an error code and text (from the body, or from a batch's `result_error`) to an [`Error`].
pub fn api_error(method: &str, status: u16, code: String, description: String) -> Error {
    if code.eq_ignore_ascii_case("QUERY_LIMIT_EXCEEDED") {
        return Error::RateLimited { attempts: 1 };
    }
    if code.eq_ignore_ascii_case("OPERATION_TIME_LIMIT") {
        return Error::OperationTimeLimit {
            method: method.to_owned(),
            retry_after: Duration::ZERO,
        };
    }
    // A manual block of the portal's REST, reported as 401 or 503 depending on the revision: it lifts.
    if code.eq_ignore_ascii_case("OVERLOAD_LIMIT") {
        return Error::Server {
            status,
            code,
            description,
        };
    }
    if let Some(kind) = AuthErrorKind::from_code(&code) {
        return Error::Auth {
            kind,
            code,
            description,
            status,
        };
    }
    if status >= 500 {
        return Error::Server {
            status,
            code,
            description,
        };
    }
    Error::Method {
        method: method.to_owned(),
        code,
        description,
        status,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Non-negative integer sent as a number or a numeric string.
pub(crate) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// PHP serialises an empty associative array as `[]`: read that as an empty map.
pub(crate) fn as_map(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        Value::Array(items) if items.is_empty() => Some(Map::new()),
        Value::Null => Some(Map::new()),
        _ => None,
    }
}

/// The start of a body for error messages: bounded, on a character boundary.
pub(crate) fn snippet(body: &[u8]) -> String {
    const LIMIT: usize = 160;
    let text = String::from_utf8_lossy(&body[..body.len().min(LIMIT * 4)]);
    let mut out: String = text.chars().take(LIMIT).collect();
    if text.chars().count() > LIMIT {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_with_paging() {
        let body = br#"{"result":[{"ID":"1"}],"total":120,"next":50,"time":{"start":1.5,"finish":2.0,"duration":0.5,"processing":0.1,"date_start":"2026-03-10T11:19:38+03:00","date_finish":"2026-03-10T11:19:38+03:00","operating_reset_at":1773130779,"operating":0.2}}"#;
        let env = decode_response("crm.lead.list", 200, body).unwrap();
        assert_eq!(env.total, Some(120));
        assert_eq!(env.next, Some(50));
        assert_eq!(env.time.unwrap().operating_reset_at, Some(1773130779));
    }

    #[test]
    fn odd_time_block_does_not_fail() {
        let env = decode_response("m", 200, br#"{"result":true,"time":"soon"}"#).unwrap();
        assert_eq!(env.result, Value::Bool(true));
        assert!(env.time.is_none());
    }

    #[test]
    fn error_mapping() {
        let e = decode_response(
            "m",
            503,
            br#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::RateLimited { .. }));
        let e = decode_response(
            "m",
            429,
            br#"{"error":"OPERATION_TIME_LIMIT","error_description":"Method is blocked"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::OperationTimeLimit { ref method, .. } if method == "m"));
        let e = decode_response(
            "m",
            401,
            br#"{"error":"expired_token","error_description":"The access token provided has expired"}"#,
        )
        .unwrap_err();
        assert!(e.is_expired_token());
        let e = decode_response("m", 401, br#"{"error":"insufficient_scope","error_description":""}"#).unwrap_err();
        assert!(matches!(
            e,
            Error::Auth {
                kind: AuthErrorKind::InsufficientScope,
                ..
            }
        ));
        let e = decode_response("crm.lead.get", 400, br#"{"error":"","error_description":"Not found"}"#).unwrap_err();
        assert!(
            matches!(e, Error::Method { ref code, ref description, status: 400, .. } if code.is_empty() && description == "Not found")
        );
        let e = decode_response(
            "m",
            500,
            br#"{"error":"INTERNAL_SERVER_ERROR","error_description":"Internal server error"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Server { status: 500, .. }) && e.is_retryable());
        let e = decode_response(
            "m",
            404,
            br#"{"error":"ERROR_METHOD_NOT_FOUND","error_description":"Method not found!"}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Method { status: 404, .. }));
    }

    #[test]
    fn not_an_envelope() {
        for (status, body) in [
            (502, &b"<html>Bad Gateway</html>"[..]),
            (200, b""),
            (200, b"[1,2]"),
            (200, br#"{"time":{}}"#),
            (500, br#"{"result":1}"#),
        ] {
            let e = decode_response("m", status, body).unwrap_err();
            assert!(matches!(e, Error::InvalidResponse { .. }), "{e:?}");
        }
        let e = decode_response("m", 502, b"<html>Bad Gateway</html>").unwrap_err();
        assert!(e.is_retryable());
    }

    #[test]
    fn snippet_is_bounded_and_utf8_safe() {
        let body = "я".repeat(1000);
        let s = snippet(body.as_bytes());
        assert_eq!(s.chars().count(), 161);
    }
}
