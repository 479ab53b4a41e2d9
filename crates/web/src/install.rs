//! The Bitrix24 local application's install callback (`POST /bitrix24/install`): the first OAuth tokens, checked
//! with the portal itself before they are kept in the store for the setup wizard to use.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::{Deserialize, Serialize};
use store::{PortalTokens, Timestamp};
use tracing::{info, warn};

use crate::server::{internal, Web};
use crate::wizard::CrmLogin;

/// The store setting that records the last application install received (portal, member, when; no tokens).
pub const INSTALL_SETTING: &str = "bitrix24.install";

/// The application install last received, as stored under [`INSTALL_SETTING`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Installed {
    /// The portal's base URL (its REST base without `/rest/`): the key its tokens are stored under.
    pub portal: String,
    pub member_id: Option<String>,
    pub user: String,
    /// When it arrived (RFC 3339).
    pub at: String,
    /// Whether the install carried an `application_token` (events are checked against it).
    pub application_token: Option<String>,
}

/// The install POST a Bitrix24 local application receives: the `ONAPPINSTALL` event (`auth[…]`) or the install
/// page's own form (`AUTH_ID`, `REFRESH_ID`, `member_id`, with `DOMAIN`/`PROTOCOL` in the query).
#[derive(Debug, Clone, PartialEq)]
pub struct InstallRequest {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: Option<i64>,
    /// The portal's REST base (`https://PORTAL/rest/`).
    pub client_endpoint: String,
    pub member_id: Option<String>,
    pub application_token: Option<String>,
    pub scope: Option<String>,
}

impl InstallRequest {
    /// Reads the fields of either shape; `None` when no tokens or no portal are named.
    pub fn parse(query: &[(String, String)], body: &[(String, String)]) -> Option<InstallRequest> {
        let get = |name: &str| {
            body.iter()
                .chain(query)
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let (access, refresh) = match (get("auth[access_token]"), get("auth[refresh_token]")) {
            (Some(a), Some(r)) => (a, r),
            _ => (get("AUTH_ID")?, get("REFRESH_ID")?),
        };
        let endpoint = get("auth[client_endpoint]").or_else(|| {
            let domain = get("auth[domain]").or_else(|| get("DOMAIN"))?;
            let scheme = match get("PROTOCOL").as_deref() {
                Some("0") => "http",
                _ => "https",
            };
            Some(format!("{scheme}://{domain}/rest/"))
        })?;
        Some(InstallRequest {
            access_token: access,
            refresh_token: refresh,
            expires_in: get("auth[expires_in]")
                .or_else(|| get("AUTH_EXPIRES"))
                .and_then(|v| v.parse().ok()),
            client_endpoint: endpoint,
            member_id: get("auth[member_id]").or_else(|| get("member_id")),
            application_token: get("auth[application_token]").or_else(|| get("APP_SID")),
            scope: get("auth[scope]"),
        })
    }

    /// The portal's base URL: the REST base without `/rest/` (what `bitrix24.portal_url` holds).
    pub fn portal(&self) -> String {
        let base = self.client_endpoint.trim_end_matches('/');
        base.strip_suffix("/rest").unwrap_or(base).to_owned()
    }
}

/// `POST /bitrix24/install`: checks the tokens with the portal itself (`user.current`), then keeps them in the store
/// under the portal's URL; the wizard's application form then writes the portal into `ringlink.toml`.
pub(crate) async fn install(State(web): State<Web>, RawQuery(query): RawQuery, body: axum::body::Bytes) -> Response {
    let query: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let plain = |status: StatusCode, text: &str| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response()
    };
    let Some(request) = InstallRequest::parse(&query, &fields) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "not an application install: expected auth[access_token], auth[refresh_token] and auth[client_endpoint] \
             (ONAPPINSTALL) or AUTH_ID, REFRESH_ID and DOMAIN (the install page)",
        );
    };
    let endpoint_ok = request.client_endpoint.starts_with("https://")
        || request
            .client_endpoint
            .strip_prefix("http://")
            .is_some_and(|rest| rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]"));
    if !endpoint_ok {
        return plain(StatusCode::BAD_REQUEST, "the portal's address must be https");
    }
    let Some(probes) = web.0.probes.clone() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this ringlink cannot check Bitrix24 tokens",
        );
    };
    let login = CrmLogin::App {
        endpoint: request.client_endpoint.clone(),
        access_token: request.access_token.clone(),
    };
    let user = match (probes.crm)(login).await {
        Ok(found) => found.user,
        Err(e) => {
            warn!(portal = %request.portal(), error = %e, "an application install was refused: the portal does not accept its token");
            return plain(
                StatusCode::FORBIDDEN,
                "the portal does not accept these tokens; nothing was stored",
            );
        }
    };
    let now = Timestamp::now();
    let tokens = PortalTokens {
        access_token: request.access_token.clone(),
        refresh_token: request.refresh_token.clone(),
        expires_at: request
            .expires_in
            .map(|secs| now.saturating_add(std::time::Duration::from_secs(secs.max(0).unsigned_abs()))),
        scope: request.scope.clone(),
        client_endpoint: Some(request.client_endpoint.clone()),
        member_id: request.member_id.clone(),
    };
    let record = Installed {
        portal: request.portal(),
        member_id: request.member_id.clone(),
        user: user.clone(),
        at: crate::status::rfc3339(now),
        application_token: request.application_token.clone(),
    };
    let store = web.0.store.clone();
    let portal = request.portal();
    let saved = web
        .blocking(move || -> store::Result<()> {
            store.save_tokens(&portal, &tokens, now)?;
            let value = serde_json::to_value(&record).unwrap_or_default();
            store.set_setting(INSTALL_SETTING, &value, now)
        })
        .await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return internal(e.to_string()),
        Err(e) => return internal(e.to_string()),
    }
    info!(portal = %request.portal(), user = %user, "the Bitrix24 application was installed: its tokens are stored");
    // The install page is shown inside the portal's frame: this answer may be framed.
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html! {
            (maud::DOCTYPE)
            html { body { p id="installed" { "ringlink: the application is installed for " (request.portal()) ". Finish in ringlink's setup wizard." } } }
        }
        .into_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn both_install_shapes_are_read() {
        let event = pairs(&[
            ("event", "ONAPPINSTALL"),
            ("auth[access_token]", "a1"),
            ("auth[refresh_token]", "r1"),
            ("auth[expires_in]", "3600"),
            ("auth[client_endpoint]", "https://portal.bitrix24.ru/rest/"),
            ("auth[member_id]", "m1"),
            ("auth[application_token]", "t1"),
        ]);
        let read = InstallRequest::parse(&[], &event).expect("ONAPPINSTALL");
        assert_eq!(read.access_token, "a1");
        assert_eq!(read.portal(), "https://portal.bitrix24.ru");
        assert_eq!(read.application_token.as_deref(), Some("t1"));
        assert_eq!(read.expires_in, Some(3600));

        let page = pairs(&[("AUTH_ID", "a2"), ("REFRESH_ID", "r2"), ("member_id", "m2")]);
        let query = pairs(&[("DOMAIN", "portal.bitrix24.ru"), ("PROTOCOL", "1")]);
        let read = InstallRequest::parse(&query, &page).expect("install page");
        assert_eq!(read.client_endpoint, "https://portal.bitrix24.ru/rest/");
        assert_eq!(read.refresh_token, "r2");

        assert!(InstallRequest::parse(&[], &pairs(&[("auth[access_token]", "a")])).is_none());
        assert!(InstallRequest::parse(&[], &pairs(&[("AUTH_ID", "a"), ("REFRESH_ID", "r")])).is_none());
    }
}
