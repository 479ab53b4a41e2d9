//! `[crm]` (which CRM calls are recorded in) and `[amocrm]` (the account, its tokens, what is sent).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[crm]`: which CRM calls are recorded in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmSettings {
    #[serde(default)]
    pub kind: CrmKind,
}

/// `bitrix24` (the default: `[bitrix24]`) or `amocrm` (`[amocrm]`, also for Kommo).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    #[default]
    Bitrix24,
    #[serde(alias = "kommo")]
    Amocrm,
}

/// `[amocrm]`: the account, how ringlink signs in, and what it sends for a call.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmoCrmConfig {
    /// The account's address, `https://<subdomain>.amocrm.ru` (or `.kommo.com`), instead of `subdomain`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The account's subdomain (`example` of `example.amocrm.ru`), with `domain`.
    #[serde(default)]
    pub subdomain: Option<String>,
    /// `amocrm.ru` or `kommo.com`.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// OAuth integration: its id, secret and redirect URI, and the first tokens (later ones are kept in the
    /// store as amoCRM rotates them).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// A private integration's long-lived token, instead of OAuth.
    #[serde(default)]
    pub long_lived_token: Option<String>,
    /// `source` of every call: the integration's name as amoCRM shows it.
    #[serde(default = "default_source")]
    pub source: String,
    /// An unknown number gets a record (when `[engine] crm_create` says so for the direction); `unknown` says
    /// which.
    #[serde(default = "yes")]
    pub unsorted: bool,
    /// What an unknown number gets: `"unsorted"` (an Unsorted SIP entry with the call, the default) or
    /// `"complex"` (a contact and a lead at once, the call on them).
    #[serde(default)]
    pub unknown: engine::UnknownNumber,
    /// The line (trunk number) → the pipeline its unknown numbers go to (`"73432723033" = 7000002`).
    #[serde(default)]
    pub pipelines: BTreeMap<String, u64>,
    /// The pipeline of other lines (unset: the account's main pipeline).
    #[serde(default)]
    pub default_pipeline: Option<u64>,
    /// Extension → amoCRM user id (`"101" = 8000002`): amoCRM users carry no extension.
    #[serde(default)]
    pub extensions: BTreeMap<String, u64>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: f64,
}

impl std::fmt::Debug for AmoCrmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmoCrmConfig")
            .field("base_url", &self.base_url)
            .field("subdomain", &self.subdomain)
            .field("domain", &self.domain)
            .field("client_id", &self.client_id)
            .field("long_lived_token", &self.long_lived_token.as_ref().map(|_| "***"))
            .field("pipelines", &self.pipelines)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

fn default_domain() -> String {
    "amocrm.ru".into()
}

fn default_source() -> String {
    "ringlink".into()
}

fn yes() -> bool {
    true
}

fn default_request_timeout() -> f64 {
    20.0
}

impl AmoCrmConfig {
    /// The account's base URL.
    pub fn base(&self) -> Result<String, String> {
        match (&self.base_url, &self.subdomain) {
            (Some(url), None) => amocrm::base_url(url)
                .map(|u| u.to_string())
                .map_err(|e| format!("amocrm.base_url: {e}")),
            (None, Some(sub)) => amocrm::account_url(sub, &self.domain)
                .map(|u| u.to_string())
                .map_err(|e| format!("amocrm.subdomain: {e}")),
            (Some(_), Some(_)) => Err("amocrm: set either base_url or subdomain, not both".into()),
            (None, None) => Err("amocrm: set subdomain (e.g. \"example\" of example.amocrm.ru) or base_url".into()),
        }
    }

    /// Whether ringlink signs in with OAuth (else with the long-lived token).
    pub fn is_oauth(&self) -> bool {
        self.long_lived_token.is_none()
    }

    /// What is wrong with the section, in plain words.
    pub fn problems(&self) -> Option<String> {
        if let Err(e) = self.base() {
            return Some(e);
        }
        let oauth = [
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("redirect_uri", &self.redirect_uri),
            ("access_token", &self.access_token),
            ("refresh_token", &self.refresh_token),
        ];
        let any_oauth = oauth.iter().any(|(_, v)| v.is_some());
        match (&self.long_lived_token, any_oauth) {
            (Some(_), true) => {
                return Some("amocrm: set either long_lived_token or the OAuth integration, not both".into())
            }
            (Some(token), false) if token.trim().is_empty() => return Some("amocrm.long_lived_token is empty".into()),
            (Some(_), false) => {}
            (None, _) => {
                for (name, value) in oauth {
                    if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                        return Some(format!(
                            "amocrm.{name} is not set: an OAuth integration needs client_id, client_secret, \
                             redirect_uri, access_token and refresh_token (or set long_lived_token)"
                        ));
                    }
                }
            }
        }
        if self.source.trim().is_empty() {
            return Some("amocrm.source is empty: name the integration as amoCRM should show it".into());
        }
        if !(self.request_timeout_secs.is_finite() && self.request_timeout_secs > 0.0) {
            return Some(format!(
                "amocrm.request_timeout_secs must be positive, got {}",
                self.request_timeout_secs
            ));
        }
        None
    }

    /// The engine's translation settings.
    pub fn translation(&self) -> engine::AmoCrmSettings {
        engine::AmoCrmSettings {
            source: self.source.clone(),
            unsorted: self.unsorted,
            unknown: self.unknown,
            pipelines: self.pipelines.clone(),
            default_pipeline: self.default_pipeline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> AmoCrmConfig {
        toml::from_str(text).expect("valid [amocrm]")
    }

    #[test]
    fn an_account_needs_one_way_to_sign_in() {
        let oauth = section(
            r#"subdomain = "example"
               client_id = "id"
               client_secret = "secret"
               redirect_uri = "https://ringlink.example/amocrm/oauth"
               access_token = "a"
               refresh_token = "r""#,
        );
        assert_eq!(oauth.problems(), None);
        assert_eq!(oauth.base().as_deref(), Ok("https://example.amocrm.ru/"));
        let long_lived = section(
            r#"base_url = "https://example.kommo.com"
               long_lived_token = "t""#,
        );
        assert_eq!(long_lived.problems(), None);
        assert!(!long_lived.is_oauth());
        let half = section(
            r#"subdomain = "example"
               client_id = "id""#,
        );
        assert!(half
            .problems()
            .is_some_and(|p| p.contains("amocrm.client_secret is not set")));
        let both = section(
            r#"subdomain = "example"
               long_lived_token = "t"
               client_id = "id""#,
        );
        assert!(both.problems().is_some_and(|p| p.contains("not both")));
        let nowhere = section(r#"long_lived_token = "t""#);
        assert!(nowhere.problems().is_some_and(|p| p.contains("set subdomain")));
    }

    #[test]
    fn lines_map_to_pipelines_for_the_engine() {
        let c = section(
            r#"subdomain = "example"
               long_lived_token = "t"
               default_pipeline = 1
               [pipelines]
               "73432723033" = 7000002"#,
        );
        let t = c.translation();
        assert_eq!(t.pipeline_of(Some("73432723033")), Some(7_000_002));
        assert_eq!(t.pipeline_of(Some("7000")), Some(1));
    }
}
