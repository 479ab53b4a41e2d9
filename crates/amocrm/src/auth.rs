//! Credentials: an OAuth 2.0 integration (access + single-use refresh token) or a long-lived token, the
//! account's base URL, and the token answer.

use std::fmt;
use std::net::Ipv6Addr;

use serde::Deserialize;
use url::{Host, Url};

use crate::error::{snippet, Error, Problem};

/// A token or secret: hidden from `Debug` and `Display`; read it with [`Hidden::reveal`] where it goes on the wire.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Hidden(String);

impl Hidden {
    pub fn new(value: impl Into<String>) -> Self {
        Hidden(value.into())
    }

    pub fn reveal(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Into<String>> From<T> for Hidden {
    fn from(value: T) -> Self {
        Hidden(value.into())
    }
}

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Hidden(empty)"
        } else {
            "Hidden(…)"
        })
    }
}

/// The integration's identity (amoCRM's integration settings: ID, secret key, redirect URI).
#[derive(Clone, Debug)]
pub struct Integration {
    pub client_id: String,
    pub client_secret: Hidden,
    /// Must equal the integration's redirect URI on every token request.
    pub redirect_uri: String,
}

impl Integration {
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<Hidden>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Integration {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uri: redirect_uri.into(),
        }
    }
}

/// An access/refresh pair. The refresh token is single use: each refresh returns a new pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: Hidden,
    pub refresh_token: Hidden,
    /// Unix seconds the access token expires, when known (`server_time + expires_in`).
    pub expires_at: Option<i64>,
}

impl Tokens {
    pub fn new(access_token: impl Into<Hidden>, refresh_token: impl Into<Hidden>, expires_at: Option<i64>) -> Self {
        Tokens {
            access_token: access_token.into(),
            refresh_token: refresh_token.into(),
            expires_at,
        }
    }
}

/// Saves every new token pair, and is called *before* the pair is used: the old refresh token is dead by
/// then, so a pair that is not saved would be lost on a restart. Keep it quick (one SQLite write).
/// On an error the request that needed the pair fails with [`Error::TokenPersist`]; the next one saves again.
pub trait TokenStore: Send + Sync {
    fn save_tokens(&self, tokens: &Tokens) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

impl<F> TokenStore for F
where
    F: Fn(&Tokens) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
{
    fn save_tokens(&self, tokens: &Tokens) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self(tokens)
    }
}

/// How requests authenticate.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// OAuth 2.0: refreshed when expired (by `expires_at`) or on a 401, one refresh at a time.
    OAuth { integration: Integration, tokens: Tokens },
    /// A private integration's long-lived token (no refresh; a 401 means issue a new one).
    LongLived(Hidden),
}

/// The account's address: `https://{subdomain}.amocrm.ru` (or `.kommo.com`), never `www.`.
pub fn account_url(subdomain: &str, domain: &str) -> Result<Url, Error> {
    let valid = !subdomain.is_empty()
        && subdomain != "www"
        && subdomain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(Error::InvalidUrl {
            what: "subdomain",
            reason: format!("{subdomain:?} is not an account subdomain (letters, digits, '-', not www)"),
        });
    }
    base_url(&format!("https://{subdomain}.{domain}"))
}

/// Checks a base URL: https, or http to a loopback host (tests, the emulator). No path, query or user info.
pub fn base_url(raw: &str) -> Result<Url, Error> {
    let url = Url::parse(raw.trim()).map_err(|e| Error::InvalidUrl {
        what: "account URL",
        reason: e.to_string(),
    })?;
    let host = url.host().ok_or_else(|| Error::InvalidUrl {
        what: "account URL",
        reason: "no host".into(),
    })?;
    let loopback = match &host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => *ip == Ipv6Addr::LOCALHOST,
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(Error::InsecureUrl {
                what: "account URL",
                host: host.to_string(),
            })
        }
        other => {
            return Err(Error::InvalidUrl {
                what: "account URL",
                reason: format!("scheme {other:?} is not https"),
            })
        }
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidUrl {
            what: "account URL",
            reason: "give only scheme and host, e.g. https://example.amocrm.ru".into(),
        });
    }
    Ok(url)
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default, deserialize_with = "crate::de::opt_number")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "crate::de::opt_number")]
    server_time: Option<u64>,
}

/// Reads the token endpoint's answer. `now` stands in for a missing `server_time`.
pub(crate) fn parse_token_answer(status: u16, body: &[u8], now: i64) -> Result<Tokens, Error> {
    let path = "/oauth2/access_token";
    if !(200..300).contains(&status) {
        return Err(match crate::error::from_status(path, status, body) {
            Error::Api { status, problem, .. } => Error::TokenRefused { status, problem },
            Error::Unauthorized { problem } => Error::TokenRefused { status, problem },
            Error::InvalidResponse { status, snippet, .. } if status < 500 => Error::TokenRefused {
                status,
                problem: Box::new(Problem {
                    detail: snippet,
                    ..Problem::default()
                }),
            },
            other => other,
        });
    }
    let redacted = || {
        let text = snippet(body);
        if text.contains("token") {
            "<redacted>".to_owned()
        } else {
            text
        }
    };
    let answer: TokenAnswer = serde_json::from_slice(body).map_err(|e| Error::InvalidResponse {
        path: path.into(),
        status,
        reason: format!("not the token JSON ({e})"),
        snippet: redacted(),
    })?;
    match (answer.access_token, answer.refresh_token) {
        (Some(access), Some(refresh)) if !access.is_empty() && !refresh.is_empty() => {
            let issued = answer.server_time.and_then(|t| i64::try_from(t).ok()).unwrap_or(now);
            let expires_at = answer
                .expires_in
                .and_then(|s| i64::try_from(s).ok())
                .map(|s| issued.saturating_add(s));
            Ok(Tokens::new(access, refresh, expires_at))
        }
        _ => Err(Error::InvalidResponse {
            path: path.into(),
            status,
            reason: "the answer lacks access_token or refresh_token".into(),
            snippet: String::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_urls() {
        assert_eq!(
            account_url("example", "amocrm.ru").unwrap().as_str(),
            "https://example.amocrm.ru/"
        );
        assert!(account_url("www", "amocrm.ru").is_err());
        assert!(account_url("ex/../ample", "amocrm.ru").is_err());
        assert!(base_url("http://127.0.0.1:8080").is_ok());
        assert!(matches!(
            base_url("http://example.amocrm.ru"),
            Err(Error::InsecureUrl { .. })
        ));
        assert!(base_url("https://example.amocrm.ru/api/v4").is_err());
        assert!(base_url("ftp://x").is_err());
    }

    #[test]
    fn token_answers() {
        let ok =
            br#"{"token_type":"Bearer","expires_in":86400,"server_time":1000,"access_token":"A","refresh_token":"R"}"#;
        let t = parse_token_answer(200, ok, 5).unwrap();
        assert_eq!(
            (t.access_token.reveal(), t.refresh_token.reveal(), t.expires_at),
            ("A", "R", Some(87_400))
        );
        let t = parse_token_answer(200, br#"{"access_token":"A","refresh_token":"R","expires_in":"60"}"#, 5).unwrap();
        assert_eq!(t.expires_at, Some(65));
        let spent = r#"{"hint":"Token has been revoked","title":"Некорректный запрос","type":"https://developers.amocrm.ru/v3/errors/OAuthProblemJson","status":401,"detail":"В запросе отсутствует ряд параметров или параметры невалидны"}"#;
        for status in [400, 401] {
            match parse_token_answer(status, spent.as_bytes(), 0) {
                Err(Error::TokenRefused { problem, .. }) => assert_eq!(problem.hint, "Token has been revoked"),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            parse_token_answer(400, b"<html>", 0),
            Err(Error::TokenRefused { .. })
        ));
        assert!(matches!(
            parse_token_answer(200, b"<html>", 0),
            Err(Error::InvalidResponse { .. })
        ));
        assert!(matches!(
            parse_token_answer(200, br#"{"access_token":"A"}"#, 0),
            Err(Error::InvalidResponse { .. })
        ));
        assert!(matches!(parse_token_answer(503, b"", 0), Err(Error::Server { .. })));
        let err = parse_token_answer(200, br#"{"access_token":"SECRET-A","refresh_token":7}"#, 0).unwrap_err();
        assert!(!err.to_string().contains("SECRET-A"), "{err}");
    }

    #[test]
    fn secrets_stay_hidden() {
        let creds = Credentials::OAuth {
            integration: Integration::new("id", "CLIENT-SECRET", "https://r.example/"),
            tokens: Tokens::new("ACCESS", "REFRESH", None),
        };
        let text = format!("{creds:?}");
        for secret in ["CLIENT-SECRET", "ACCESS", "REFRESH"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
