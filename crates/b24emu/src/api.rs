//! Response envelope and error shapes of the REST API.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::clock::{format_date, unix_float, Clock};
use crate::config::{ErrorCodeStyle, StatusRevision};

/// A method's successful answer before it is wrapped in the envelope.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub result: Value,
    pub total: Option<u64>,
    pub next: Option<u64>,
}

impl Reply {
    pub fn new(result: Value) -> Self {
        Self {
            result,
            total: None,
            next: None,
        }
    }

    /// A page of a list method: `total` unless `start=-1` asked to skip counting, `next` when more remain.
    pub fn page(items: Vec<Value>, start: i64, total: usize) -> Self {
        let (skip_count, offset) = if start < 0 { (true, 0) } else { (false, start as usize) };
        let page: Vec<Value> = items.into_iter().skip(offset).take(PAGE_SIZE).collect();
        let next = offset + page.len();
        Self {
            result: Value::Array(page),
            total: if skip_count { None } else { Some(total as u64) },
            next: (!skip_count && next < total).then_some(next as u64),
        }
    }
}

pub(crate) const PAGE_SIZE: usize = 50;

/// An error answer: HTTP status, `error` code and `error_description`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub description: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, description: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            description: description.into(),
        }
    }

    /// Method-level `ERROR_CORE` (HTTP 400), or the empty code some methods use, per configuration.
    pub fn core(style: ErrorCodeStyle, description: impl Into<String>) -> Self {
        match style {
            ErrorCodeStyle::ErrorCore => Self::new(400, "ERROR_CORE", description),
            ErrorCodeStyle::Empty => Self::new(400, "", description),
        }
    }

    /// Legacy CRM error: `"error":""` with the text only, HTTP 400.
    pub fn crm(description: impl Into<String>) -> Self {
        Self::new(400, "", description)
    }

    pub fn invalid_argument(description: impl Into<String>) -> Self {
        Self::new(400, "INVALID_ARGUMENT", description)
    }

    pub fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }
}

/// System errors whose HTTP status depends on the documentation revision.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SystemError {
    NoAuthFound,
    InvalidCredentials,
    InsufficientScope { webhook: bool },
    ExpiredToken,
    InvalidToken,
    MethodNotFound,
    QueryLimitExceeded,
    OperationTimeLimit,
    WrongAuthType,
    BatchLengthExceeded,
    BatchMethodNotAllowed,
    InternalServerError(u16),
}

impl SystemError {
    pub fn to_error(self, revision: StatusRevision) -> ApiError {
        let credential_status = match revision {
            StatusRevision::Later => 401,
            StatusRevision::Snapshot => 403,
        };
        match self {
            SystemError::NoAuthFound => ApiError::new(401, "NO_AUTH_FOUND", "Wrong authorization data"),
            SystemError::InvalidCredentials => {
                ApiError::new(credential_status, "INVALID_CREDENTIALS", "Invalid request credentials")
            }
            SystemError::InsufficientScope { webhook } => ApiError::new(
                credential_status,
                "insufficient_scope",
                if webhook {
                    "The request requires higher privileges than provided by the webhook token"
                } else {
                    "The request requires higher privileges than provided by the access token"
                },
            ),
            SystemError::ExpiredToken => ApiError::new(401, "expired_token", "The access token provided has expired"),
            SystemError::InvalidToken => ApiError::new(401, "invalid_token", "The access token provided is invalid"),
            SystemError::MethodNotFound => ApiError::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!"),
            SystemError::QueryLimitExceeded => ApiError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
            SystemError::OperationTimeLimit => ApiError::new(
                429,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
            ),
            SystemError::WrongAuthType => ApiError::new(
                403,
                "WRONG_AUTH_TYPE",
                "Current authorization type is denied for this method",
            ),
            SystemError::BatchLengthExceeded => {
                ApiError::new(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
            }
            SystemError::BatchMethodNotAllowed => ApiError::new(
                405,
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "Method is not allowed for batch usage",
            ),
            SystemError::InternalServerError(status) => {
                ApiError::new(status, "INTERNAL_SERVER_ERROR", "Internal server error")
            }
        }
    }
}

/// Timing of one call, for the `time` block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub start: DateTime<Utc>,
    pub finish: DateTime<Utc>,
    /// Real processing time in seconds (the clock may be frozen).
    pub processing: f64,
}

/// Operating-limit figures for one method call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operating {
    pub used_secs: f64,
    pub reset_at: i64,
}

pub(crate) fn time_block(clock: &Clock, timing: Timing, operating: Option<Operating>) -> Value {
    let mut m = Map::new();
    let start = unix_float(timing.start);
    let finish = unix_float(timing.finish).max(start + timing.processing);
    m.insert("start".into(), json!(start));
    m.insert("finish".into(), json!(finish));
    m.insert("duration".into(), json!(finish - start));
    m.insert("processing".into(), json!(timing.processing));
    m.insert("date_start".into(), json!(format_date(clock.to_local(timing.start))));
    m.insert("date_finish".into(), json!(format_date(clock.to_local(timing.finish))));
    if let Some(op) = operating {
        m.insert("operating_reset_at".into(), json!(op.reset_at));
        m.insert("operating".into(), json!(op.used_secs));
    }
    Value::Object(m)
}

pub(crate) fn success_body(reply: &Reply, time: Value) -> Value {
    let mut m = Map::new();
    m.insert("result".into(), reply.result.clone());
    if let Some(next) = reply.next {
        m.insert("next".into(), json!(next));
    }
    if let Some(total) = reply.total {
        m.insert("total".into(), json!(total));
    }
    m.insert("time".into(), time);
    Value::Object(m)
}

/// PHP serializes an empty associative array as `[]`.
pub(crate) fn php_map(m: Map<String, Value>) -> Value {
    if m.is_empty() {
        Value::Array(Vec::new())
    } else {
        Value::Object(m)
    }
}
