//! URL checks: https everywhere, plain http only for loopback hosts.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::error::Error;

/// Parses `raw` and enforces the transport rule: `https://` always, `http://` only for 127.0.0.0/8,
/// `::1` and `localhost`. The returned URL's path ends with `/`, so method names can be appended.
pub(crate) fn checked_base(raw: &str, what: &'static str) -> Result<Url, Error> {
    let mut url = parse_checked(raw, what)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidUrl {
            what,
            reason: "must not have a query or fragment".into(),
        });
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Like [`checked_base`] but keeps the path and query as given (upload URLs carry their own query).
pub(crate) fn parse_checked(raw: &str, what: &'static str) -> Result<Url, Error> {
    let url = Url::parse(raw.trim()).map_err(|e| Error::InvalidUrl {
        what,
        reason: e.to_string(),
    })?;
    let host = url.host().ok_or_else(|| Error::InvalidUrl {
        what,
        reason: "no host".into(),
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(Error::InsecureUrl {
                what,
                host: host.to_string(),
            })
        }
        other => {
            return Err(Error::InvalidUrl {
                what,
                reason: format!("scheme {other:?} is not http or https"),
            })
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidUrl {
            what,
            reason: "user info in the URL is not supported".into(),
        });
    }
    Ok(url)
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            *ip == Ipv6Addr::LOCALHOST || ip.to_ipv4_mapped().is_some_and(|v4: Ipv4Addr| v4.is_loopback())
        }
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// `scheme://host[:port]` of a URL, for messages: never the path, which may hold a webhook secret.
pub(crate) fn origin_for_display(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        _ => url.scheme().to_owned(),
    }
}

/// An incoming webhook URL, `https://PORTAL/rest/USER_ID/SECRET/`.
///
/// Its path is a credential: `Debug` and `Display` show only the portal's origin.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Checks the URL (https or loopback http, shape `/rest/<user id>/<secret>/`).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let url = checked_base(raw, "webhook")?;
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let n = segments.len();
        let shaped = n >= 3
            && segments[n - 3] == "rest"
            && segments[n - 2].bytes().all(|b| b.is_ascii_digit())
            && !segments[n - 1].is_empty();
        if !shaped {
            return Err(Error::InvalidUrl {
                what: "webhook",
                reason: "expected https://PORTAL/rest/USER_ID/SECRET/".into(),
            });
        }
        Ok(WebhookUrl(url))
    }

    pub(crate) fn url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({}/rest/***/)", origin_for_display(&self.0))
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/rest/***/", origin_for_display(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_loopback() {
        assert!(checked_base("https://example.bitrix24.ru/rest/", "portal").is_ok());
        for ok in [
            "http://127.0.0.1:8080/rest/",
            "http://127.5.6.7/rest/",
            "http://[::1]:9/rest/",
            "http://LOCALHOST:1/rest",
        ] {
            assert!(checked_base(ok, "portal").is_ok(), "{ok}");
        }
        for bad in [
            "http://example.bitrix24.ru/rest/",
            "http://10.0.0.1/rest/",
            "http://192.168.1.1/",
            "http://localhost.example.com/",
            "http://[::2]/",
        ] {
            match checked_base(bad, "portal") {
                Err(Error::InsecureUrl { what, .. }) => assert_eq!(what, "portal"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            checked_base("ftp://x/", "portal"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            checked_base("not a url", "portal"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn base_gets_trailing_slash() {
        let u = checked_base("https://p.example/rest", "portal").unwrap();
        assert_eq!(u.as_str(), "https://p.example/rest/");
    }

    #[test]
    fn webhook_hidden_and_checked() {
        let w = WebhookUrl::parse("https://p.example/rest/1/s3cr3tcode/").unwrap();
        assert!(!format!("{w:?}{w}").contains("s3cr3t"));
        assert!(WebhookUrl::parse("https://p.example/rest/").is_err());
        assert!(WebhookUrl::parse("https://p.example/rest/x/secret/").is_err());
        let err = WebhookUrl::parse("http://p.example/rest/1/s3cr3tcode/").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }
}
