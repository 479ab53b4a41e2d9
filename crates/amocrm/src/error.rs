//! The one error type of this crate, and the problem+JSON body amoCRM sends with its refusals.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// One entry of `validation-errors[].errors[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub detail: String,
}

/// The errors of one item of a batch (`request_id` is the item's, or its index as text).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemErrors {
    #[serde(default, deserialize_with = "crate::de::text")]
    pub request_id: String,
    #[serde(default)]
    pub errors: Vec<FieldError>,
}

/// An `application/problem+json` body (RFC 7807 as amoCRM fills it). Every field is optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Problem {
    #[serde(default, deserialize_with = "crate::de::text")]
    pub title: String,
    #[serde(default, rename = "type", deserialize_with = "crate::de::text")]
    pub kind: String,
    #[serde(default, deserialize_with = "crate::de::text")]
    pub detail: String,
    /// OAuth refusals say why here (`"Token has been revoked"`).
    #[serde(default, deserialize_with = "crate::de::text")]
    pub hint: String,
    #[serde(default, rename = "validation-errors")]
    pub validation_errors: Vec<ItemErrors>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<&str> = [self.title.as_str(), self.detail.as_str(), self.hint.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            parts.push("no details");
        }
        f.write_str(&parts.join(": "))?;
        for item in &self.validation_errors {
            for e in &item.errors {
                write!(
                    f,
                    "; item {} field {:?}: {} ({})",
                    item.request_id, e.path, e.detail, e.code
                )?;
            }
        }
        Ok(())
    }
}

/// One refused item of a `{"_total_items":0,"errors":[…]}` answer (e.g. `POST /api/v4/calls` for an unknown number).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RejectedItem {
    #[serde(default, deserialize_with = "crate::de::text")]
    pub title: String,
    /// amoCRM's own code: 263 = "Entity not found" (no contact with that number).
    #[serde(default, deserialize_with = "crate::de::number")]
    pub status: u64,
    #[serde(default, deserialize_with = "crate::de::text")]
    pub request_id: String,
}

/// Everything that can go wrong talking to amoCRM. Messages never contain tokens or the client secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured URL or subdomain is malformed.
    #[error("invalid {what}: {reason}")]
    InvalidUrl { what: &'static str, reason: String },

    /// Plain `http://` to a host that is not loopback.
    #[error("{what} must use https (plain http only for 127.0.0.0/8, ::1 and localhost), got http://{host}")]
    InsecureUrl { what: &'static str, host: String },

    /// Invalid configuration other than URLs.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// 429 after the client's own retries: the integration sent more than 7 requests per second, or the
    /// account's 50 req/s are used by other integrations. Nothing was executed.
    #[error("amoCRM answered 429 Too Many Requests {attempts} time(s) in a row; the request was not executed")]
    RateLimited { attempts: u32 },

    /// 403 with a non-JSON page: amoCRM blocked requests from this IP (an abusive or failing integration).
    /// The client stops sending until [`Client::resume`](crate::Client::resume); unblocking goes through
    /// amoCRM's support.
    #[error("amoCRM blocked requests from this server's IP (HTTP 403 page); nothing is sent but one probe after 5 minutes, then twice as long each time (at most hourly), until amoCRM support lifts the block")]
    IpBlocked,

    /// The access token was refused (401) even after a refresh, or the long-lived token expired or was revoked.
    #[error(
        "amoCRM refused the token (HTTP 401: {problem}); re-install the integration or issue a new long-lived token"
    )]
    Unauthorized { problem: Box<Problem> },

    /// The OAuth endpoint refused the grant: a spent or expired refresh token, a used or expired code, wrong
    /// client credentials or redirect URI. The integration must be authorised again.
    #[error("amoCRM refused the OAuth grant (HTTP {status}: {problem}); authorise the integration again")]
    TokenRefused { status: u16, problem: Box<Problem> },

    /// The client has no refresh token (a long-lived token, or tokens never issued).
    #[error("the access token expired and there is no refresh token; authorise the integration again")]
    NoRefreshToken,

    /// A new token pair could not be saved. The old refresh token is already spent, so the new pair is kept
    /// in memory and no request goes out with it until it is saved (retried before the next request).
    #[error("new amoCRM tokens could not be saved ({0}); fix the token store: requests wait until the pair is saved")]
    TokenPersist(String),

    /// A problem+JSON refusal other than 401 (400 validation, 402, 403 rights, 404, 405…).
    #[error("amoCRM refused {path} (HTTP {status}): {problem}")]
    Api {
        path: String,
        status: u16,
        problem: Box<Problem>,
    },

    /// A batch refused item by item (`{"_total_items":0,"errors":[…]}`), e.g. calls to numbers with no contact.
    #[error("amoCRM refused {path} (HTTP {status}): {}", summarize(items))]
    Rejected {
        path: String,
        status: u16,
        items: Vec<RejectedItem>,
    },

    /// HTTP 5xx (504 often means: send smaller batches).
    #[error("amoCRM server error on {path} (HTTP {status}): {detail}")]
    Server { path: String, status: u16, detail: String },

    /// Connection refused, reset, DNS, TLS and other transport failures.
    #[error("transport error: {0}")]
    Transport(String),

    /// No answer within the configured timeout. The request may or may not have been executed.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),

    /// The answer is not what the API documents (not JSON, wrong shape, unexpected status).
    #[error("unexpected answer to {path} (HTTP {status}): {reason}; body starts with {snippet:?}")]
    InvalidResponse {
        path: String,
        status: u16,
        reason: String,
        snippet: String,
    },

    /// Parameters could not be serialised.
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

fn summarize(items: &[RejectedItem]) -> String {
    items
        .iter()
        .map(|i| format!("item {}: {} ({})", i.request_id, i.title, i.status))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// True when sending the same request again later may succeed without any change.
    ///
    /// Timeouts and transport errors may hide a request that ran: amoCRM does not deduplicate calls, so the
    /// caller's own idempotency decides whether to repeat.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. } | Error::Server { .. } | Error::Transport(_) | Error::Timeout(_) => true,
            Error::TokenPersist(_) => true,
            Error::InvalidResponse { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// `POST /api/v4/calls` found no contact for the number (amoCRM code 263): send the call to Unsorted or
    /// create a contact instead.
    pub fn is_entity_not_found(&self) -> bool {
        matches!(self, Error::Rejected { items, .. } if !items.is_empty() && items.iter().all(|i| i.status == 263))
    }

    pub(crate) fn from_reqwest(err: reqwest::Error, timeout: Duration) -> Self {
        let err = err.without_url();
        if err.is_timeout() {
            return Error::Timeout(timeout);
        }
        // The causes carry the useful part ("connection refused"); reqwest's own text is generic.
        let causes = std::iter::successors(std::error::Error::source(&err), |e| e.source());
        let text = std::iter::once(err.to_string())
            .chain(causes.map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(": ");
        Error::Transport(text)
    }
}

/// The first 200 characters of a body, for messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// Maps a non-success answer to an error. `path` is for messages only.
pub(crate) fn from_status(path: &str, status: u16, body: &[u8]) -> Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let problem = json
        .as_ref()
        .filter(|v| v.is_object())
        .and_then(|v| serde_json::from_value::<Problem>(v.clone()).ok());
    if status == 403 && json.is_none() {
        return Error::IpBlocked;
    }
    if status == 429 {
        return Error::RateLimited { attempts: 1 };
    }
    if let Some(items) = json
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| serde_json::from_value::<Vec<RejectedItem>>(e.clone()).ok())
        .filter(|items| !items.is_empty())
    {
        return Error::Rejected {
            path: path.to_owned(),
            status,
            items,
        };
    }
    match (status, problem) {
        (500..=599, problem) => Error::Server {
            path: path.to_owned(),
            status,
            detail: problem.map_or_else(|| snippet(body), |p| p.to_string()),
        },
        (401, Some(problem)) => Error::Unauthorized {
            problem: Box::new(problem),
        },
        (401, None) => Error::Unauthorized {
            problem: Box::new(Problem {
                detail: snippet(body),
                ..Problem::default()
            }),
        },
        (_, Some(problem)) => Error::Api {
            path: path.to_owned(),
            status,
            problem: Box::new(problem),
        },
        (_, None) => Error::InvalidResponse {
            path: path.to_owned(),
            status,
            reason: "error status without a problem+JSON body".into(),
            snippet: snippet(body),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_are_typed_and_readable() {
        let body = br#"{"title":"Bad Request","type":"https://httpstatus.es/400","status":400,"detail":"Request validation failed","validation-errors":[{"request_id":"0","errors":[{"code":"NotSupportedChoice","path":"custom_fields_values.0.field_id","detail":"The value you selected is not a valid choice."}]}]}"#;
        let err = from_status("/api/v4/contacts", 400, body);
        let Error::Api { status, problem, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*status, 400);
        assert_eq!(problem.validation_errors[0].errors[0].code, "NotSupportedChoice");
        assert!(err.to_string().contains("custom_fields_values.0.field_id"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn html_403_is_the_ip_block_and_json_403_is_a_refusal() {
        assert!(matches!(
            from_status("/x", 403, b"<html>403 Forbidden</html>"),
            Error::IpBlocked
        ));
        assert!(matches!(from_status("/x", 403, b""), Error::IpBlocked));
        let json = br#"{"title":"Forbidden","type":"https://httpstatus.es/403","status":403,"detail":"Access denied"}"#;
        assert!(matches!(from_status("/x", 403, json), Error::Api { status: 403, .. }));
        assert!(!Error::IpBlocked.is_retryable());
    }

    #[test]
    fn unknown_number_on_calls_is_entity_not_found() {
        let body = br#"{"_total_items":0,"errors":[{"title":"Entity not found","status":263,"request_id":"0"}]}"#;
        let err = from_status("/api/v4/calls", 400, body);
        assert!(err.is_entity_not_found(), "{err:?}");
        // request_id given as a number by an odd server still reads.
        let body = br#"{"errors":[{"title":"Entity not found","status":"263","request_id":0}]}"#;
        assert!(from_status("/api/v4/calls", 400, body).is_entity_not_found());
    }

    #[test]
    fn odd_bodies_never_panic() {
        for (status, body) in [
            (429, &b"<html>Too Many Requests</html>"[..]),
            (429, b""),
            (500, b"An unknown error occurred."),
            (502, b"{\"title\":5}"),
            (400, b"[1,2]"),
            (400, b"{\"validation-errors\":\"x\"}"),
            (404, b"\xff\xfe"),
            (401, b"null"),
        ] {
            let err = from_status("/p", status, body);
            assert!(!err.to_string().is_empty());
        }
        assert!(matches!(from_status("/p", 429, b""), Error::RateLimited { .. }));
        assert!(matches!(
            from_status("/p", 500, b"oops"),
            Error::Server { status: 500, .. }
        ));
        assert!(from_status("/p", 502, b"oops").is_retryable());
        assert!(matches!(
            from_status("/p", 400, b"[1,2]"),
            Error::InvalidResponse { .. }
        ));
    }
}
