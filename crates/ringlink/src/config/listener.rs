//! `[listener]` (ringlink's HTTP listener), `[click_to_call]` and `[autodistribution]`: what reaches ringlink from
//! outside, and their checks against the rest of the configuration.

use serde::Deserialize;

use super::Config;

/// How the dialplan asks, and how long it waits (`[autodistribution]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutodistributionSettings {
    /// The longest the dialplan waits for an answer; beyond it (or on any error) the answer is "no
    /// preference" and the call takes its normal route.
    #[serde(default = "default_budget_ms")]
    pub budget_ms: u64,
    /// Whose responsible counts, in order (`contact`, `company`, `lead`).
    #[serde(default = "default_order")]
    pub order: Vec<engine::CrmKind>,
    /// How long the CRM's answer for a known number is reused.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// How long "no CRM record has this number" is reused.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_secs: u64,
    /// At most this many numbers cached.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// The token `GET /autodistribution` must carry (`token=`), unless `listener.allow` limits the sources.
    /// Better set from the environment (`RINGLINK__AUTODISTRIBUTION__TOKEN`).
    #[serde(default)]
    pub token: String,
    /// Where the FastAGI server listens (`127.0.0.1:4573`); off when unset.
    #[serde(default)]
    pub agi_bind: Option<String>,
    /// Source addresses allowed to talk FastAGI.
    #[serde(default = "default_agi_allow")]
    pub agi_allow: Vec<String>,
    /// The channel variable FastAGI sets to the extension (empty: no preference).
    #[serde(default = "default_variable")]
    pub variable: String,
}

impl std::fmt::Debug for AutodistributionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutodistributionSettings")
            .field("budget_ms", &self.budget_ms)
            .field("order", &self.order)
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .field("negative_ttl_secs", &self.negative_ttl_secs)
            .field("agi_bind", &self.agi_bind)
            .field("variable", &self.variable)
            .finish_non_exhaustive()
    }
}

fn default_budget_ms() -> u64 {
    300
}
fn default_order() -> Vec<engine::CrmKind> {
    engine::DEFAULT_ORDER.to_vec()
}
fn default_cache_ttl() -> u64 {
    300
}
fn default_negative_ttl() -> u64 {
    60
}
fn default_cache_size() -> usize {
    10_000
}
fn default_agi_allow() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1".into()]
}
fn default_variable() -> String {
    "RINGLINK_EXTENSION".into()
}

/// The HTTP listener: where it binds, who may talk to it, how much.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    /// `host:port`, e.g. `0.0.0.0:8090` behind a TLS reverse proxy.
    pub bind: String,
    /// The address Bitrix24 reaches the listener at (`https://pbx.example.com/ringlink`); the event handler is
    /// `<public_url>/bitrix24/event`. Needed for binding events in application mode.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Source addresses allowed in addition to the token check (`10.0.0.5`, `192.168.0.0/16`); empty = any address
    /// that presents the right token.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Event requests per second over all clients (a token bucket of `burst`); more get 429 without touching
    /// calls.
    #[serde(default = "default_rate")]
    pub rate_per_sec: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Auto-distribution look-ups per second (a bucket of its own): the dialplan asks once per incoming call, so
    /// a busy hour's simultaneous calls must all get through; a refused look-up sends its call the normal route.
    #[serde(default = "default_autodistribution_rate")]
    pub autodistribution_rate_per_sec: f64,
    #[serde(default = "default_autodistribution_burst")]
    pub autodistribution_burst: u32,
}

impl std::fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("bind", &self.bind)
            .field("public_url", &self.public_url)
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

fn default_max_body() -> usize {
    64 * 1024
}
fn default_rate() -> f64 {
    20.0
}
fn default_burst() -> u32 {
    40
}
fn default_autodistribution_rate() -> f64 {
    100.0
}
fn default_autodistribution_burst() -> u32 {
    200
}

/// How click-to-call requests arrive and are dialled.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickToCallSettings {
    /// `handler`: Bitrix24 POSTs the event to the listener; `offline`: ringlink fetches it with
    /// `event.offline.get` (no public address needed; application mode only).
    #[serde(default)]
    pub mode: ClickMode,
    /// The application token events must carry (`auth[application_token]`): the one received in
    /// `ONAPPINSTALL`, or the outgoing webhook's; with amoCRM, the secret entered in the telephony widget's
    /// settings, which its clicks carry as `token`. Better set from the environment
    /// (`RINGLINK__CLICK_TO_CALL__APPLICATION_TOKEN`). Needed in `handler` mode.
    #[serde(default)]
    pub application_token: String,
    /// Offline mode: the poll interval, fastest while the portal's request budget has headroom …
    #[serde(default = "default_poll_min")]
    pub poll_min_secs: f64,
    /// … and slowest while calls are using it.
    #[serde(default = "default_poll_max")]
    pub poll_max_secs: f64,
    /// Bind `ONEXTERNALCALLSTART` to the listener's `public_url` at start (application mode only), and unbind
    /// it on a clean stop.
    #[serde(default)]
    pub bind_events: bool,
    /// How the employee's phone and the client are dialled.
    #[serde(default)]
    pub dial: engine::ClickSettings,
}

impl std::fmt::Debug for ClickToCallSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickToCallSettings")
            .field("mode", &self.mode)
            .field("application_token", &"***")
            .field("bind_events", &self.bind_events)
            .field("dial", &self.dial)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClickMode {
    #[default]
    Handler,
    Offline,
}

fn default_poll_min() -> f64 {
    1.0
}
fn default_poll_max() -> f64 {
    10.0
}

impl Config {
    pub(super) fn validate_click_to_call(&self) -> Result<(), String> {
        let Some(c) = &self.click_to_call else {
            return Ok(());
        };
        let app = self.bitrix24.as_ref().is_some_and(|b| b.portal_url.is_some());
        if self.crm.kind == super::CrmKind::Amocrm {
            if c.mode != ClickMode::Handler || c.bind_events {
                return Err(
                    "click_to_call with amoCRM: the telephony widget posts each click to the listener's \
                            /amocrm/click, so mode = \"handler\" and no bind_events"
                        .into(),
                );
            }
            if self.listener.is_none() {
                return Err(
                    "click_to_call with amoCRM needs a [listener] section (the widget posts the click to \
                            its /amocrm/click)"
                        .into(),
                );
            }
        }
        match c.mode {
            ClickMode::Handler => {
                if self.listener.is_none() {
                    return Err(
                        "click_to_call in handler mode needs a [listener] section (Bitrix24 posts \
                                the click to it)"
                            .into(),
                    );
                }
                if c.application_token.trim().len() < 8 {
                    return Err("click_to_call.application_token is missing or too short".into());
                }
            }
            ClickMode::Offline => {
                if !app {
                    return Err("click_to_call in offline mode needs bitrix24 as an application \
                                (offline events are for applications only)"
                        .into());
                }
                if !(c.poll_min_secs > 0.0 && c.poll_min_secs <= c.poll_max_secs && c.poll_max_secs <= 600.0) {
                    return Err("click_to_call: 0 < poll_min_secs <= poll_max_secs <= 600".into());
                }
            }
        }
        if c.bind_events && c.mode == ClickMode::Handler {
            if !app {
                return Err("click_to_call.bind_events needs bitrix24 as an application (portal_url …)".into());
            }
            if self.listener.as_ref().is_none_or(|l| l.public_url.is_none()) {
                return Err("click_to_call.bind_events needs listener.public_url".into());
            }
        }
        engine::validate_click_settings(&c.dial)?;
        Ok(())
    }

    pub(super) fn validate_autodistribution(&self, a: &AutodistributionSettings) -> Result<(), String> {
        if self.bitrix24.is_none() {
            return Err("autodistribution needs a [bitrix24] section (the CRM says who is responsible)".into());
        }
        if !(10..=10_000).contains(&a.budget_ms) {
            return Err("autodistribution.budget_ms must be between 10 and 10000".into());
        }
        engine::validate_route_order(&a.order)?;
        if a.cache_size == 0 {
            return Err("autodistribution.cache_size must be at least 1".into());
        }
        if self.listener.is_none() && a.agi_bind.is_none() {
            return Err(
                "autodistribution needs a [listener] (HTTP, for CURL()) or autodistribution.agi_bind \
                        (FastAGI)"
                    .into(),
            );
        }
        if let Some(l) = &self.listener {
            if a.token.trim().len() < 8 && l.allow.is_empty() {
                return Err(
                    "autodistribution over HTTP needs autodistribution.token (8 characters or more) or \
                            listener.allow"
                        .into(),
                );
            }
        }
        if let Some(bind) = &a.agi_bind {
            bind.parse::<std::net::SocketAddr>()
                .map_err(|_| format!("autodistribution.agi_bind {bind:?} is not ip:port (e.g. 127.0.0.1:4573)"))?;
        }
        for rule in &a.agi_allow {
            crate::service::listener::AllowRule::parse(rule)
                .ok_or_else(|| format!("autodistribution.agi_allow {rule:?} is not an IP address or CIDR block"))?;
        }
        let variable_ok = a
            .variable
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && a.variable.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !variable_ok {
            return Err(format!(
                "autodistribution.variable {:?} is not a channel variable name",
                a.variable
            ));
        }
        Ok(())
    }
}
