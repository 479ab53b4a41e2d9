//! Credentials: a local application (OAuth 2 with refresh) or an incoming webhook.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use url::Url;

use crate::endpoint::{checked_base, WebhookUrl};
use crate::envelope::{as_u64, snippet};
use crate::error::Error;
use crate::secret::Secret;

/// The public OAuth server of Bitrix24 cloud portals.
pub const DEFAULT_OAUTH_URL: &str = "https://oauth.bitrix.info/";

/// Identity of a local application: `client_id` and `client_secret` from the portal's app settings.
#[derive(Clone)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: Secret,
    /// OAuth server base (`https://oauth.bitrix.info/`) or its full token endpoint (`…/oauth/token/`).
    pub oauth_url: String,
}

impl AppCredentials {
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<Secret>) -> Self {
        AppCredentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            oauth_url: DEFAULT_OAUTH_URL.to_owned(),
        }
    }

    pub fn with_oauth_url(mut self, url: impl Into<String>) -> Self {
        self.oauth_url = url.into();
        self
    }
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("oauth_url", &self.oauth_url)
            .finish()
    }
}

/// The token pair of an installed application, as issued by the OAuth server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OAuthTokens {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Unix time the access token expires, when known.
    pub expires_at: Option<i64>,
    /// The portal's REST base (`https://PORTAL/rest/`), as the OAuth server reported it.
    pub client_endpoint: Option<String>,
    pub member_id: Option<String>,
    pub scope: Option<String>,
}

impl OAuthTokens {
    pub fn new(access_token: impl Into<Secret>, refresh_token: impl Into<Secret>) -> Self {
        OAuthTokens {
            access_token: access_token.into(),
            refresh_token: refresh_token.into(),
            ..Default::default()
        }
    }
}

/// Receives every refreshed token pair so it survives a restart (the old refresh token stops working).
///
/// Called on the request path right after a refresh: keep it quick (one SQLite write is fine).
/// An error is logged and the call goes on with the new tokens, which stay in memory.
pub trait TokenStore: Send + Sync {
    fn save_tokens(&self, tokens: &OAuthTokens) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

impl<F> TokenStore for F
where
    F: Fn(&OAuthTokens) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
{
    fn save_tokens(&self, tokens: &OAuthTokens) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self(tokens)
    }
}

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// Incoming webhook: the secret is in the URL path.
    Webhook(WebhookUrl),
    /// Local application with OAuth tokens.
    App {
        /// REST base of the portal, `https://PORTAL/rest/` (a bare `https://PORTAL/` gets `rest/` added).
        portal_url: String,
        app: AppCredentials,
        tokens: OAuthTokens,
        store: Option<Arc<dyn TokenStore>>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Webhook(url) => f.debug_tuple("Webhook").field(url).finish(),
            Credentials::App {
                portal_url,
                app,
                tokens,
                store,
            } => f
                .debug_struct("App")
                .field("portal_url", portal_url)
                .field("app", app)
                .field("tokens", tokens)
                .field("store", &store.is_some())
                .finish(),
        }
    }
}

/// Normalises the portal base: `https://p/` → `https://p/rest/`.
pub(crate) fn portal_base(raw: &str) -> Result<Url, Error> {
    let mut url = checked_base(raw, "portal")?;
    if url.path() == "/" {
        url.set_path("/rest/");
    }
    Ok(url)
}

/// The token endpoint from a base or full OAuth URL.
pub(crate) fn token_endpoint(raw: &str) -> Result<Url, Error> {
    let base = checked_base(raw, "OAuth server")?;
    if base.path().ends_with("/oauth/token/") {
        return Ok(base);
    }
    base.join("oauth/token/").map_err(|e| Error::InvalidUrl {
        what: "OAuth server",
        reason: e.to_string(),
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    client_endpoint: Option<String>,
    member_id: Option<String>,
    scope: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Parses the OAuth server's answer to `grant_type=refresh_token`.
pub(crate) fn parse_token_response(status: u16, body: &[u8], now_unix: i64) -> Result<OAuthTokens, Error> {
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|e| Error::InvalidResponse {
        status,
        reason: format!("OAuth server answer is not the token JSON ({e})"),
        snippet: redacted_snippet(body),
    })?;
    if let Some(code) = parsed.error.filter(|c| !c.is_empty()) {
        return Err(Error::TokenRefresh {
            code,
            description: parsed.error_description.unwrap_or_default(),
        });
    }
    if status >= 500 {
        return Err(Error::Server {
            status,
            code: String::new(),
            description: "OAuth server error".into(),
        });
    }
    match (parsed.access_token, parsed.refresh_token) {
        (Some(access), Some(refresh)) if !access.is_empty() && !refresh.is_empty() => {
            let expires_at = parsed.expires.as_ref().and_then(as_u64).map(|v| v as i64).or_else(|| {
                parsed
                    .expires_in
                    .as_ref()
                    .and_then(as_u64)
                    .map(|v| now_unix.saturating_add(v as i64))
            });
            Ok(OAuthTokens {
                access_token: Secret::new(access),
                refresh_token: Secret::new(refresh),
                expires_at,
                client_endpoint: parsed.client_endpoint,
                member_id: parsed.member_id,
                scope: parsed.scope,
            })
        }
        _ => Err(Error::InvalidResponse {
            status,
            reason: "OAuth server answer lacks access_token or refresh_token".into(),
            snippet: String::new(),
        }),
    }
}

// The token JSON holds secrets: show its start only when it does not look like it carries them.
fn redacted_snippet(body: &[u8]) -> String {
    let text = snippet(body);
    if text.contains("token") {
        "<redacted>".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            portal_base("https://p.example").unwrap().as_str(),
            "https://p.example/rest/"
        );
        assert_eq!(
            portal_base("https://p.example/rest").unwrap().as_str(),
            "https://p.example/rest/"
        );
        assert_eq!(
            token_endpoint("https://oauth.bitrix.info").unwrap().as_str(),
            "https://oauth.bitrix.info/oauth/token/"
        );
        assert_eq!(
            token_endpoint("http://127.0.0.1:9/oauth/token/").unwrap().as_str(),
            "http://127.0.0.1:9/oauth/token/"
        );
        assert!(matches!(
            token_endpoint("http://oauth.example/"),
            Err(Error::InsecureUrl { .. })
        ));
    }

    #[test]
    fn token_answer() {
        let ok = br#"{"access_token":"A2","refresh_token":"R2","expires_in":3600,"member_id":"m","client_endpoint":"https://p/rest/","scope":"crm,telephony"}"#;
        let t = parse_token_response(200, ok, 1000).unwrap();
        assert_eq!(t.access_token.expose(), "A2");
        assert_eq!(t.expires_at, Some(4600));
        let t = parse_token_response(200, br#"{"access_token":"A","refresh_token":"R","expires":"5000"}"#, 0).unwrap();
        assert_eq!(t.expires_at, Some(5000));
        let e = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid refresh token"}"#,
            0,
        )
        .unwrap_err();
        assert!(matches!(e, Error::TokenRefresh { ref code, .. } if code == "invalid_grant"));
        assert!(!e.is_retryable());
        assert!(matches!(
            parse_token_response(200, b"<html>", 0),
            Err(Error::InvalidResponse { .. })
        ));
        assert!(matches!(
            parse_token_response(200, br#"{"access_token":"A"}"#, 0),
            Err(Error::InvalidResponse { .. })
        ));
        let e = parse_token_response(200, br#"{"access_token":"SECRET-A","refresh_token":5}"#, 0).unwrap_err();
        assert!(!e.to_string().contains("SECRET-A"));
    }

    #[test]
    fn debug_hides_secrets() {
        let creds = Credentials::App {
            portal_url: "https://p/".into(),
            app: AppCredentials::new("local.1", "CLIENTSECRET"),
            tokens: OAuthTokens::new("ACCESSTOK", "REFRESHTOK"),
            store: None,
        };
        let text = format!("{creds:?}");
        for secret in ["CLIENTSECRET", "ACCESSTOK", "REFRESHTOK"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
