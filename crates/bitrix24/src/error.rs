//! The one error type of this crate.

use std::time::Duration;

/// What kind of authentication failure Bitrix24 reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    /// `expired_token`: the access token is older than its hour. The client refreshes once by itself;
    /// this surfaces only when the refreshed token is refused too.
    ExpiredToken,
    /// `invalid_token`: the token is unknown to the portal.
    InvalidToken,
    /// `NO_AUTH_FOUND`: no token or webhook code, or a wrong one.
    NoAuth,
    /// `INVALID_CREDENTIALS`: no active webhook with that user id and secret.
    InvalidCredentials,
    /// `insufficient_scope`: the token or webhook lacks the scope the method needs.
    InsufficientScope,
    /// `WRONG_AUTH_TYPE`: the method needs an application context (webhooks refused).
    WrongAuthType,
    /// `ACCESS_DENIED`, `user_access_error`: the user or plan may not use REST or this method.
    AccessDenied,
    /// `INVALID_REQUEST` ("Https required") and other refusals of the request itself.
    InvalidRequest,
    /// `PORTAL_DELETED`.
    PortalDeleted,
    /// `method_confirm_waiting`: an administrator must confirm the method for this application.
    ConfirmationPending,
}

impl AuthErrorKind {
    /// Maps a Bitrix24 error code to an auth kind, if it is one.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code.to_ascii_lowercase().as_str() {
            "expired_token" => AuthErrorKind::ExpiredToken,
            "invalid_token" => AuthErrorKind::InvalidToken,
            "no_auth_found" => AuthErrorKind::NoAuth,
            "invalid_credentials" => AuthErrorKind::InvalidCredentials,
            "insufficient_scope" => AuthErrorKind::InsufficientScope,
            "wrong_auth_type" => AuthErrorKind::WrongAuthType,
            "access_denied" | "user_access_error" => AuthErrorKind::AccessDenied,
            "invalid_request" => AuthErrorKind::InvalidRequest,
            "portal_deleted" => AuthErrorKind::PortalDeleted,
            "method_confirm_waiting" => AuthErrorKind::ConfirmationPending,
            _ => return None,
        })
    }
}

/// Everything that can go wrong talking to Bitrix24.
///
/// Messages never contain tokens, client secrets or webhook paths.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured URL is malformed or uses a scheme other than http/https.
    #[error("invalid {what} URL: {reason}")]
    InvalidUrl { what: &'static str, reason: String },

    /// Plain `http://` to a host that is not loopback.
    #[error(
        "{what} URL must use https (plain http is accepted only for 127.0.0.0/8, ::1 and localhost), got http://{host}"
    )]
    InsecureUrl { what: &'static str, host: String },

    /// A method name with characters other than letters, digits, `.` and `_`.
    #[error("invalid method name {0:?}")]
    InvalidMethodName(String),

    /// Invalid configuration other than URLs.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// `QUERY_LIMIT_EXCEEDED` (HTTP 503): the portal's leaky bucket is full. Nothing was executed.
    #[error("rate limit exceeded (QUERY_LIMIT_EXCEEDED) after {attempts} attempt(s)")]
    RateLimited { attempts: u32 },

    /// `OPERATION_TIME_LIMIT` (HTTP 429): this method used up its time budget; other methods still work.
    #[error("method {method} is blocked by the operation time limit; retry in {retry_after:?}")]
    OperationTimeLimit { method: String, retry_after: Duration },

    /// An authentication or authorisation failure.
    #[error("auth error {code} (HTTP {status}): {description}")]
    Auth {
        kind: AuthErrorKind,
        code: String,
        description: String,
        status: u16,
    },

    /// The OAuth server refused to refresh the tokens (`invalid_grant`, `invalid_client`, …).
    #[error("token refresh failed: {code}: {description}")]
    TokenRefresh { code: String, description: String },

    /// The application has no refresh token, so an expired access token cannot be renewed.
    #[error("access token expired and no refresh token is configured")]
    NoRefreshToken,

    /// The method ran and refused: `ERROR_CORE`, `INVALID_ARGUMENT`, `ERROR_METHOD_NOT_FOUND`, or the
    /// legacy CRM form with an empty code (`"error":""`, text only, e.g. "Not found").
    #[error("{method}: {}{description} (HTTP {status})", if code.is_empty() { String::new() } else { format!("{code}: ") })]
    Method {
        method: String,
        code: String,
        description: String,
        status: u16,
    },

    /// HTTP 5xx with a Bitrix24 error (`INTERNAL_SERVER_ERROR`, `ERROR_UNEXPECTED_ANSWER`, `OVERLOAD_LIMIT`) or none.
    #[error("server error HTTP {status}: {code}: {description}")]
    Server {
        status: u16,
        code: String,
        description: String,
    },

    /// The portal answered with a redirect: usually the portal was renamed.
    #[error("portal answered HTTP {status} redirecting to host {host:?} (portal renamed?)")]
    Redirected { status: u16, host: String },

    /// Connection refused, reset, DNS, TLS and other transport failures.
    #[error("transport error: {0}")]
    Transport(String),

    /// No answer within the configured timeout. The request may or may not have been executed.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),

    /// The body is not JSON or not the Bitrix24 envelope.
    #[error("unexpected response (HTTP {status}): {reason}; body starts with {snippet:?}")]
    InvalidResponse {
        status: u16,
        reason: String,
        snippet: String,
    },

    /// The `result` did not have the shape the typed method expects.
    #[error("{method}: result has an unexpected shape: {reason}")]
    Decode { method: String, reason: String },

    /// Parameters could not be serialised.
    #[error("cannot encode parameters: {0}")]
    Encode(String),

    /// A batch holds more than 50 commands; nothing is split silently.
    #[error("batch holds {len} commands, the limit is 50")]
    BatchTooLarge { len: usize },

    /// A batch command key is used twice or is not usable as a key.
    #[error("batch command key {key:?}: {reason}")]
    BatchKey { key: String, reason: &'static str },

    /// A batch command key was asked for but is not in the batch response (halted before it, or unknown).
    #[error("batch command {key:?} has neither a result nor an error (halted before it?)")]
    BatchMissing { key: String },

    /// An upload URL handed out by the portal cannot be used.
    #[error("upload failed: {0}")]
    Upload(String),
}

impl Error {
    /// True when sending the same request again later may succeed without any change.
    ///
    /// Timeouts and transport errors are retryable but the request may already have run: repeat only
    /// steps that are idempotent (for example `register` with a fixed `EXTERNAL_CALL_ID`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::OperationTimeLimit { .. }
            | Error::Server { .. }
            | Error::Transport(_)
            | Error::Timeout(_) => true,
            // A proxy's HTML error page in front of the portal.
            Error::InvalidResponse { status, .. } => *status >= 500 || *status == 429,
            Error::Upload(_) => true,
            _ => false,
        }
    }

    /// The Bitrix24 error code, when the portal sent one (may be empty for legacy CRM errors).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Auth { code, .. }
            | Error::Method { code, .. }
            | Error::Server { code, .. }
            | Error::TokenRefresh { code, .. } => Some(code),
            Error::RateLimited { .. } => Some("QUERY_LIMIT_EXCEEDED"),
            Error::OperationTimeLimit { .. } => Some("OPERATION_TIME_LIMIT"),
            _ => None,
        }
    }

    /// The human text from Bitrix24 (`error_description`), when present.
    pub fn description(&self) -> Option<&str> {
        match self {
            Error::Auth { description, .. }
            | Error::Method { description, .. }
            | Error::Server { description, .. }
            | Error::TokenRefresh { description, .. } => Some(description),
            _ => None,
        }
    }

    /// True for an expired access token (the trigger for a refresh).
    pub fn is_expired_token(&self) -> bool {
        matches!(
            self,
            Error::Auth {
                kind: AuthErrorKind::ExpiredToken,
                ..
            }
        )
    }

    pub(crate) fn from_reqwest(err: reqwest::Error, timeout: Duration) -> Self {
        // reqwest puts the URL into its messages; the URL of a webhook or an upload carries a secret.
        let err = err.without_url();
        if err.is_timeout() {
            Error::Timeout(timeout)
        } else {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                source = inner.source();
            }
            Error::Transport(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(Error::RateLimited { attempts: 1 }.is_retryable());
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(Error::Server {
            status: 500,
            code: "INTERNAL_SERVER_ERROR".into(),
            description: String::new()
        }
        .is_retryable());
        assert!(!Error::Method {
            method: "crm.lead.get".into(),
            code: String::new(),
            description: "Not found".into(),
            status: 400
        }
        .is_retryable());
        assert!(!Error::Auth {
            kind: AuthErrorKind::InsufficientScope,
            code: "insufficient_scope".into(),
            description: String::new(),
            status: 401
        }
        .is_retryable());
        assert!(!Error::BatchTooLarge { len: 51 }.is_retryable());
    }

    #[test]
    fn legacy_method_error_reads_well() {
        let e = Error::Method {
            method: "crm.lead.get".into(),
            code: String::new(),
            description: "Not found".into(),
            status: 400,
        };
        assert_eq!(e.to_string(), "crm.lead.get: Not found (HTTP 400)");
    }
}
