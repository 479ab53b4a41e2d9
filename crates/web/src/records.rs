//! Signed recording links: `GET /records/<token>`, where the token is HMAC-SHA256 over the call, the recording's
//! step and an expiry. The file served is the one the store says that step of that call recorded; nothing of
//! the request's path ever reaches the filesystem.

use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use store::{Store, Timestamp};

/// The store setting holding the signing key (created on first use).
pub const LINK_SECRET_SETTING: &str = "web.record_link_secret";

/// Maps a recording's path as the PBX wrote it to this host's path (`[recordings] rewrite`).
pub type PathResolver = Arc<dyn Fn(&str) -> PathBuf + Send + Sync>;

/// Signs and checks recording links. Cheap to clone.
#[derive(Clone)]
pub struct RecordLinks {
    key: Arc<Vec<u8>>,
}

impl std::fmt::Debug for RecordLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordLinks(<key>)")
    }
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token this ringlink made, or altered.
    Invalid,
    Expired,
}

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub call: String,
    /// The idempotency key of the call's `attach_record` step.
    pub step: String,
    pub expires: Timestamp,
}

impl RecordLinks {
    pub fn new(key: Vec<u8>) -> Self {
        RecordLinks { key: Arc::new(key) }
    }

    /// The store's signing key, created (32 random bytes) if there is none yet.
    pub fn from_store(store: &dyn Store) -> store::Result<Self> {
        if let Some(key) = store
            .setting(LINK_SECRET_SETTING)?
            .and_then(|v| v.as_str().and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()))
            .filter(|k| k.len() >= 32)
        {
            return Ok(Self::new(key));
        }
        let key = crate::auth::random_token();
        store.set_setting(
            LINK_SECRET_SETTING,
            &serde_json::Value::String(key.clone()),
            Timestamp::now(),
        )?;
        Ok(Self::new(URL_SAFE_NO_PAD.decode(key).unwrap_or_default()))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload);
        mac
    }

    /// A token for the recording of `step` (an `attach_record` step of `call`), valid until `expires`.
    pub fn sign(&self, call: &str, step: &str, expires: Timestamp) -> String {
        let payload = format!("{call}\u{1f}{step}\u{1f}{}", expires.as_micros() / 1_000_000);
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(tag))
    }

    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Signed, Refused> {
        let (payload, tag) = token.split_once('.').ok_or(Refused::Invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Refused::Invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Invalid)?;
        self.mac(&payload).verify_slice(&tag).map_err(|_| Refused::Invalid)?;
        let text = String::from_utf8(payload).map_err(|_| Refused::Invalid)?;
        let mut parts = text.split('\u{1f}');
        let (Some(call), Some(step), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Invalid);
        };
        let expires = Timestamp::from_secs(expires.parse().map_err(|_| Refused::Invalid)?);
        if expires <= now {
            return Err(Refused::Expired);
        }
        Ok(Signed {
            call: call.to_owned(),
            step: step.to_owned(),
            expires,
        })
    }
}

/// The recording path the store holds for `signed`: only an `attach_record` step of that very call has one.
pub fn recording_path(store: &dyn Store, signed: &Signed) -> store::Result<Option<String>> {
    let Some(step) = store.step_by_key(&signed.step)? else {
        return Ok(None);
    };
    if step.call_key != signed.call || step.kind != "attach_record" {
        return Ok(None);
    }
    Ok(step
        .payload
        .get("record_path")
        .and_then(|p| p.as_str())
        .map(str::to_owned))
}

/// The media type by the file's extension (Bitrix24 takes wav and mp3 only).
pub fn content_type(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("ogg") => "audio/ogg",
        _ => "application/octet-stream",
    }
}

/// A single `bytes=` range of a file of `len` bytes: (first, last) inclusive; `None` when unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (start, "") => (start.parse().ok()?, len - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_not_when_altered() {
        let links = RecordLinks::new(vec![7; 32]);
        let now = Timestamp::from_secs(1_800_000_000);
        let token = links.sign("1700.1", "1700.1/record/0", Timestamp::from_secs(1_800_000_060));
        let signed = links.verify(&token, now).expect("valid");
        assert_eq!(
            (signed.call.as_str(), signed.step.as_str()),
            ("1700.1", "1700.1/record/0")
        );
        assert_eq!(
            links.verify(&token, Timestamp::from_secs(1_800_000_060)),
            Err(Refused::Expired)
        );
        let other = RecordLinks::new(vec![8; 32]);
        assert_eq!(other.verify(&token, now), Err(Refused::Invalid), "another key");
        let (payload, tag) = token.split_once('.').expect("two parts");
        let forged_payload = URL_SAFE_NO_PAD.encode("1700.2\u{1f}1700.2/record/0\u{1f}1900000000");
        assert_eq!(
            links.verify(&format!("{forged_payload}.{tag}"), now),
            Err(Refused::Invalid)
        );
        assert_eq!(links.verify(payload, now), Err(Refused::Invalid));
        assert_eq!(links.verify("../../etc/passwd", now), Err(Refused::Invalid));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
