//! The setup wizard's connection tests: an AMI login that reads the version and the PJSIP endpoints, and a
//! Bitrix24 `user.current` by webhook or by an application's access token. Each opens its own short-lived
//! connection and never touches the running service's.

use std::sync::Arc;
use std::time::Duration;

use ami::Message;
use serde_json::Value;

use crate::config::Config;

/// How long a test may take to connect or answer.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The probes for [`web::Web::probes`]; the AMI test keeps the configured auth method and TLS.
pub(crate) fn probes(config: &Config) -> web::Probes {
    let base = config.ami_client();
    let ami = Arc::new(
        move |login: web::wizard::AmiLogin| -> web::wizard::ProbeFuture<web::wizard::PbxFound> {
            let mut cfg = base.clone();
            cfg.addr = login.address;
            cfg.username = login.username;
            cfg.secret = login.secret;
            cfg.action_timeout = TEST_TIMEOUT;
            cfg.connect_timeout = TEST_TIMEOUT;
            Box::pin(async move { test_ami(cfg).await })
        },
    );
    let crm = Arc::new(
        |login: web::wizard::CrmLogin| -> web::wizard::ProbeFuture<web::wizard::CrmFound> {
            Box::pin(async move { test_crm(login).await })
        },
    );
    web::Probes { ami, crm }
}

async fn test_ami(cfg: ami::ClientConfig) -> Result<web::wizard::PbxFound, String> {
    let address = cfg.addr.clone();
    let (client, _events) = ami::connect(cfg).await.map_err(|e| e.to_string())?;
    let found = async {
        let settings = client
            .action_ok(Message::action("CoreSettings"))
            .await
            .map_err(|e| format!("CoreSettings: {e} (the user needs write = system)"))?;
        let version = settings
            .get("AsteriskVersion")
            .unwrap_or("(version not reported)")
            .to_owned();
        let list = client
            .list(Message::action("PJSIPShowEndpoints"))
            .await
            .map_err(|e| format!("PJSIPShowEndpoints: {e} (is chan_pjsip loaded? the user needs read = system)"))?;
        let endpoints = list
            .items
            .iter()
            .filter(|m| m.event_name() == Some("EndpointList"))
            .filter_map(|m| {
                let name = m.get("ObjectName")?.to_owned();
                Some(web::wizard::PbxEndpoint {
                    trunk: is_trunk(&name, m.get("OutboundAuths").unwrap_or("")),
                    state: m.get("DeviceState").unwrap_or("").to_owned(),
                    name,
                })
            })
            .collect();
        Ok::<_, String>(web::wizard::PbxFound { version, endpoints })
    };
    let found = tokio::time::timeout(TEST_TIMEOUT * 2, found)
        .await
        .unwrap_or_else(|_| Err(format!("{address} did not answer in time")));
    client.shutdown().await;
    found
}

/// A trunk is an endpoint that registers or authenticates outwards, or one not named by digits (phones are
/// named by their extension).
fn is_trunk(name: &str, outbound_auths: &str) -> bool {
    !outbound_auths.trim().is_empty() || !name.bytes().all(|b| b.is_ascii_digit())
}

async fn test_crm(login: web::wizard::CrmLogin) -> Result<web::wizard::CrmFound, String> {
    let builder = match login {
        web::wizard::CrmLogin::Webhook { url } => bitrix24::Client::webhook(&url).map_err(|e| e.to_string())?,
        web::wizard::CrmLogin::App { endpoint, access_token } => {
            let base = endpoint.trim_end_matches('/');
            let portal = base.strip_suffix("/rest").unwrap_or(base).to_owned();
            // Only the access token is tried: there is no refresh token to use, and nothing is saved (the
            // credentials are placeholders the client never sends).
            bitrix24::Client::app(
                portal,
                bitrix24::AppCredentials::new("install-check", "unused"),
                bitrix24::OAuthTokens::new(access_token, ""),
            )
        }
    };
    let client = builder
        .timeouts(bitrix24::Timeouts {
            connect: TEST_TIMEOUT,
            request: TEST_TIMEOUT,
        })
        .rate_limit_retries(0)
        .build()
        .map_err(|e| e.to_string())?;
    let user = client
        .call("user.current", Value::Null)
        .await
        .map_err(|e| e.to_string())?;
    let text = |k: &str| user.get(k).and_then(Value::as_str).unwrap_or("").trim().to_owned();
    let name = [text("NAME"), text("LAST_NAME")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(web::wizard::CrmFound {
        user: format!("{name} (ID {})", text("ID")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunks_are_told_from_phones() {
        assert!(!is_trunk("101", ""));
        assert!(is_trunk("carrier", ""));
        assert!(is_trunk("7001", "carrier-auth"));
    }
}
