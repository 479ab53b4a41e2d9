//! The admin's password (argon2), sessions, CSRF tokens and the login rate limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use rand::RngCore;

/// The store setting that holds the admin password's argon2 hash (PHC string).
pub const PASSWORD_SETTING: &str = "web.admin_password";

pub const SESSION_COOKIE: &str = "ringlink_session";
/// Double-submit cookie guarding the login and first-run forms (there is no session yet).
pub const FORM_COOKIE: &str = "ringlink_form";
pub const LANG_COOKIE: &str = "ringlink_lang";

/// Failed logins allowed per address within [`ATTEMPT_WINDOW`].
const MAX_FAILED_ATTEMPTS: usize = 5;
const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);

/// An argon2id hash of `password` in PHC form, to store under [`PASSWORD_SETTING`].
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
        .unwrap_or(false)
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    expires: Instant,
}

/// Sessions live in memory: a restart logs everybody out, which is fine for an admin UI.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Sessions {
    /// A new session; returns its id (the cookie's value).
    pub fn create(&self, ttl: Duration) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                expires: now + ttl,
            },
        );
        id
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let sessions = lock(&self.sessions);
        sessions.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn remove(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// False while `peer` has used up its failed attempts.
    pub fn may_try(&self, peer: IpAddr) -> bool {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        let list = failures.entry(peer).or_default();
        list.retain(|at| now.duration_since(*at) < ATTEMPT_WINDOW);
        list.len() < MAX_FAILED_ATTEMPTS
    }

    pub fn failed(&self, peer: IpAddr) {
        lock(&self.failures).entry(peer).or_default().push(Instant::now());
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, Secure when asked.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if secure {
        text.push_str("; Secure");
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn attempts_are_limited_per_address() {
        let sessions = Sessions::default();
        let peer: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..MAX_FAILED_ATTEMPTS {
            assert!(sessions.may_try(peer));
            sessions.failed(peer);
        }
        assert!(!sessions.may_try(peer));
        assert!(sessions.may_try("192.0.2.2".parse().expect("ip")));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; ringlink_session=xyz; b=2".parse().expect("header"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
