//! OAuth tokens of the app and the incoming webhook, and the refresh_token grant.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub user_id: u64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    pub access: HashMap<String, TokenInfo>,
    pub refresh: HashMap<String, TokenInfo>,
    /// One-time codes for the authorization_code grant.
    pub codes: HashMap<String, TokenInfo>,
}

pub(crate) enum AccessCheck {
    Valid(u64),
    Expired,
    Unknown,
}

impl TokenStore {
    pub fn check_access(&self, token: &str, now: DateTime<Utc>) -> AccessCheck {
        match self.access.get(token) {
            Some(t) if t.expires_at > now => AccessCheck::Valid(t.user_id),
            Some(_) => AccessCheck::Expired,
            None => AccessCheck::Unknown,
        }
    }
}

/// Credentials a test needs to act as the installed app.
#[derive(Debug, Clone, Serialize)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: String,
    /// The initial pair; it expires after the configured lifetime, so refresh is exercised.
    pub access_token: String,
    pub refresh_token: String,
    /// `client_endpoint`: `{base}/rest/`.
    pub client_endpoint: String,
    /// `{base}/oauth/token/`.
    pub oauth_url: String,
    pub application_token: String,
    pub member_id: String,
    pub user_id: u64,
}

pub(crate) fn lifetime(secs: i64) -> Duration {
    Duration::seconds(secs.max(0))
}
