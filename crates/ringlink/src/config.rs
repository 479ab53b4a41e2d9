//! ringlink's settings: one TOML file, every key overridable from the environment.
//!
//! Environment overrides use `RINGLINK__<SECTION>__<KEY>=value` (double underscores separate levels, names are
//! case-insensitive), e.g. `RINGLINK__AMI__SECRET=…`. Values are parsed as TOML scalars when they look like one
//! (`true`, `5`, `1.5`), else taken as strings, so secrets never need to be written into the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

mod amocrm;
mod listener;
pub use amocrm::{AmoCrmConfig, CrmKind, CrmSettings};
pub use listener::{AutodistributionSettings, ClickMode, ClickToCallSettings, ListenerSettings};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ami: AmiSettings,
    /// Trunks, internal endpoints, number normalisation, the PBX's zone.
    #[serde(default)]
    pub tracker: tracker::TrackerConfig,
    /// Where calls are registered. Without it `run` follows calls and logs them but registers nothing.
    #[serde(default)]
    pub bitrix24: Option<Bitrix24Settings>,
    /// Which CRM calls are recorded in: `kind = "bitrix24"` (the default, `[bitrix24]`) or `"amocrm"` (`[amocrm]`).
    #[serde(default)]
    pub crm: CrmSettings,
    /// The amoCRM / Kommo account, with `[crm] kind = "amocrm"`.
    #[serde(default)]
    pub amocrm: Option<AmoCrmConfig>,
    /// Business logic: which calls are registered, for whom, cards, leads, missed-call rules.
    #[serde(default)]
    pub engine: engine::EngineSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub recordings: RecordingSettings,
    /// Where Asterisk keeps its CEL: calls that began and ended while ringlink did not follow the PBX are
    /// recovered from it. Off without this section.
    #[serde(default)]
    pub cel: Option<crate::cel::CelSettings>,
    #[serde(default)]
    pub log: LogSettings,
    /// Customization hooks: where they are, timeouts, modes, which are on.
    #[serde(default)]
    pub hooks: hooks::HooksConfig,
    /// ringlink's own HTTP listener (Bitrix24 events). Off without this section.
    #[serde(default)]
    pub listener: Option<ListenerSettings>,
    /// Click-to-call from Bitrix24 (`ONEXTERNALCALLSTART`). Off without this section.
    #[serde(default)]
    pub click_to_call: Option<ClickToCallSettings>,
    /// The admin web UI, `/status` and `/metrics`.
    #[serde(default)]
    pub web: web::WebSettings,
    /// Auto-distribution: the dialplan asks which extension a calling client belongs to. Off without this
    /// section.
    #[serde(default)]
    pub autodistribution: Option<AutodistributionSettings>,
}

/// How ringlink reaches Bitrix24: an incoming webhook, or a local application with OAuth tokens.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bitrix24Settings {
    /// Incoming webhook base URL, `https://PORTAL/rest/<user>/<secret>/`.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Local application: the portal (`https://PORTAL`), its credentials and the first tokens (later ones are
    /// kept in the store as Bitrix24 rotates them).
    #[serde(default)]
    pub portal_url: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// OAuth server for refreshing tokens.
    #[serde(default)]
    pub oauth_url: Option<String>,
    /// `standard` (2 requests/s, burst 50) or `enterprise` (5/s, burst 250).
    #[serde(default)]
    pub plan: Bitrix24Plan,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: f64,
}

impl std::fmt::Debug for Bitrix24Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitrix24Settings")
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "***"))
            .field("portal_url", &self.portal_url)
            .field("client_id", &self.client_id)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Bitrix24Plan {
    #[default]
    Standard,
    Enterprise,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// The SQLite database (outbox, call journal, users cache, tokens), unless `url` is set.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// SQLite: when a commit is durable. `full` (default): fsynced before it returns, so an acknowledged step
    /// survives a power loss. `normal`: with the write-ahead log, commits survive a crash of ringlink (the OS
    /// holds them) but the last ones may be lost if the machine loses power; fewer disk syncs, cards sooner.
    #[serde(default)]
    pub synchronous: SqliteSync,
    /// A PostgreSQL database instead of the SQLite file: `postgres://user:password@host:5432/database`.
    #[serde(default)]
    pub url: Option<String>,
    /// With `url`: the name of this PBX ⇄ portal pair in the database (every row carries it).
    #[serde(default)]
    pub tenant: Option<String>,
    /// With `url`: at most this many connections.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// With `url`: the leader's lease lasts this long from each renewal; a standby takes over at most this long
    /// (plus one `renew_secs`) after the leader dies or loses the database.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: f64,
    /// With `url`: the leader renews its lease, and a standby looks whether it expired, this often.
    #[serde(default = "default_renew_secs")]
    pub renew_secs: f64,
}

/// `[store] synchronous`: SQLite's durability of a commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    #[default]
    Full,
    Normal,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            synchronous: SqliteSync::default(),
            url: None,
            tenant: None,
            pool_size: default_pool_size(),
            lease_secs: default_lease_secs(),
            renew_secs: default_renew_secs(),
        }
    }
}

fn default_pool_size() -> usize {
    8
}
fn default_lease_secs() -> f64 {
    8.0
}
fn default_renew_secs() -> f64 {
    2.0
}

impl StoreSettings {
    /// Opens the configured store (creating or migrating its schema).
    pub fn open(&self) -> anyhow::Result<Arc<dyn store::Store>> {
        use anyhow::Context;
        match &self.url {
            None => {
                let options = store::SqliteOptions {
                    synchronous: match self.synchronous {
                        SqliteSync::Full => store::Synchronous::Full,
                        SqliteSync::Normal => store::Synchronous::Normal,
                    },
                    ..store::SqliteOptions::default()
                };
                let store = store::SqliteStore::open_with(&self.path, options)
                    .with_context(|| format!("cannot open the store {}", self.path.display()))?;
                Ok(Arc::new(store))
            }
            Some(url) => {
                let mut options = store::PgOptions::new(self.tenant.clone().unwrap_or_default());
                options.pool_size = self.pool_size;
                let store = store::PgStore::open(url, options)
                    .with_context(|| format!("cannot open the store {}", self.describe()))?;
                Ok(Arc::new(store))
            }
        }
    }

    /// How long the leader's lease lasts and how often it is renewed (a shared database only).
    pub fn lease_timing(&self) -> (std::time::Duration, std::time::Duration) {
        (
            std::time::Duration::from_secs_f64(self.lease_secs),
            std::time::Duration::from_secs_f64(self.renew_secs),
        )
    }

    /// Whether the store is a database server (PostgreSQL) rather than a local file.
    pub fn is_shared(&self) -> bool {
        self.url.is_some()
    }

    /// The backend in plain words, without secrets: `SQLite ringlink.db` or
    /// `PostgreSQL db.example:5432/ringlink, tenant office-main`.
    pub fn describe(&self) -> String {
        match &self.url {
            None => format!("SQLite {}", self.path.display()),
            Some(url) => {
                let tenant = self.tenant.as_deref().unwrap_or("");
                match url::Url::parse(url) {
                    Ok(parsed) => format!(
                        "PostgreSQL {}:{}{}, tenant {tenant}",
                        parsed.host_str().unwrap_or("localhost"),
                        parsed.port().unwrap_or(5432),
                        parsed.path()
                    ),
                    Err(_) => format!("PostgreSQL (connection string), tenant {tenant}"),
                }
            }
        }
    }

    fn problems(&self) -> Option<String> {
        let url = self.url.as_deref()?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Some("store.url must be a PostgreSQL URL: postgres://user:password@host:5432/database".into());
        }
        if self.tenant.as_deref().is_none_or(|tenant| tenant.trim().is_empty()) {
            return Some(
                "store.tenant is not set: with store.url, name this PBX ⇄ portal pair (e.g. tenant = \"office-main\"); \
                 instances of one pair share it, other pairs in the same database use their own"
                    .into(),
            );
        }
        if self.pool_size == 0 {
            return Some("store.pool_size must be at least 1".into());
        }
        if !(self.renew_secs >= 0.05 && self.lease_secs.is_finite() && self.lease_secs >= 2.0 * self.renew_secs) {
            return Some(format!(
                "store.lease_secs ({}) must be at least twice store.renew_secs ({}, at least 0.05): the leader must \
                 get two chances to renew before its lease runs out",
                self.lease_secs, self.renew_secs
            ));
        }
        None
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettings {
    /// Path prefix rewrites from the PBX's view to this host's, e.g. `[["/var/spool/asterisk/", "/mnt/pbx/"]]`
    /// when ringlink runs beside Asterisk in another filesystem namespace. The first matching prefix wins.
    #[serde(default)]
    pub rewrite: Vec<(String, String)>,
    /// Files up to this size are sent inline (base64); larger ones with the two-step upload.
    #[serde(default = "default_inline_max")]
    pub inline_max_bytes: u64,
    /// A recording counts as complete once its size has not changed for this long.
    #[serde(default = "default_settle")]
    pub settle_secs: f64,
    /// Give up on a recording that is still missing this long after the call ended.
    #[serde(default = "default_missing_timeout")]
    pub missing_timeout_secs: u64,
    /// When set, `attachRecord` passes a signed link `<link_base_url>/records/<token>` to the admin UI's
    /// listener instead of uploading the file; Bitrix24 must be able to reach that URL.
    #[serde(default)]
    pub link_base_url: Option<String>,
    /// How long such a link works.
    #[serde(default = "default_link_ttl")]
    pub link_ttl_hours: u64,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self {
            rewrite: Vec::new(),
            inline_max_bytes: default_inline_max(),
            settle_secs: default_settle(),
            missing_timeout_secs: default_missing_timeout(),
            link_base_url: None,
            link_ttl_hours: default_link_ttl(),
        }
    }
}

impl RecordingSettings {
    /// The recording's path on this host.
    pub fn local_path(&self, pbx_path: &str) -> PathBuf {
        for (from, to) in &self.rewrite {
            if let Some(rest) = pbx_path.strip_prefix(from.as_str()) {
                return PathBuf::from(format!("{to}{rest}"));
            }
        }
        PathBuf::from(pbx_path)
    }
}

fn default_request_timeout() -> f64 {
    30.0
}
fn default_store_path() -> PathBuf {
    PathBuf::from("ringlink.db")
}
fn default_inline_max() -> u64 {
    5 * 1024 * 1024
}
fn default_settle() -> f64 {
    1.0
}
fn default_missing_timeout() -> u64 {
    600
}
fn default_link_ttl() -> u64 {
    7 * 24
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmiSettings {
    /// `host:port` of the Asterisk Manager Interface.
    pub address: String,
    pub username: String,
    pub secret: String,
    /// `plain` or `md5`.
    #[serde(default)]
    pub auth: AmiAuth,
    /// PEM file with the certificate(s) to trust; set to use TLS (`tlsbindport`, usually 5039).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default = "default_ping_interval")]
    pub ping_interval_secs: f64,
    #[serde(default = "default_ping_timeout")]
    pub ping_timeout_secs: f64,
    #[serde(default = "default_event_queue")]
    pub event_queue: usize,
}

impl std::fmt::Debug for AmiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmiSettings")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("secret", &"***")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AmiAuth {
    #[default]
    Plain,
    Md5,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter, e.g. `info` or `ringlink=debug,ami=info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_ping_interval() -> f64 {
    15.0
}
fn default_ping_timeout() -> f64 {
    10.0
}
fn default_event_queue() -> usize {
    20_000
}
fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// The CRM the engine translates its intents for: amoCRM when `[crm] kind` names it and `[amocrm]` is set.
    pub fn engine_crm(&self) -> engine::Crm {
        match (self.crm.kind, &self.amocrm) {
            (CrmKind::Amocrm, Some(amocrm)) => engine::Crm::AmoCrm(amocrm.translation()),
            _ => engine::Crm::Bitrix24,
        }
    }

    /// Reads `path`, applies `RINGLINK__…` overrides from `env`, and checks the values.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, path, env)
    }

    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        for (var, value) in env {
            apply_env_override(&mut tree, &var, &value)?;
        }
        let engine_offset_set = tree
            .get("engine")
            .and_then(|e| e.as_table())
            .is_some_and(|e| e.contains_key("utc_offset"));
        let mut config: Config =
            toml::Value::Table(tree)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
        // One zone for the PBX: the engine's dates follow the tracker's unless set on their own.
        if !engine_offset_set {
            config.engine.utc_offset = config.tracker.utc_offset.clone();
        } else if config.engine.utc_offset != config.tracker.utc_offset {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "engine.utc_offset {:?} differs from tracker.utc_offset {:?}: the PBX has one zone",
                    config.engine.utc_offset, config.tracker.utc_offset
                ),
            });
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let ami = &self.ami;
        if ami.address.trim().is_empty() {
            return Err("ami.address is empty (expected host:port, e.g. 127.0.0.1:5038)".into());
        }
        let port_ok = ami
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(format!(
                "ami.address {:?} is not host:port (e.g. 127.0.0.1:5038)",
                ami.address
            ));
        }
        if ami.username.trim().is_empty() {
            return Err("ami.username is empty".into());
        }
        for (name, secs) in [
            ("ami.ping_interval_secs", ami.ping_interval_secs),
            ("ami.ping_timeout_secs", ami.ping_timeout_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0 && secs < 86_400.0) {
                return Err(format!("{name} must be between 0 and 86400 seconds, got {secs}"));
            }
        }
        if let Some(problem) = self.store.problems() {
            return Err(problem);
        }
        if let Some(cel) = &self.cel {
            if let Some(problem) = cel.problems().into_iter().next() {
                return Err(problem);
            }
            cel.offset(&self.tracker).map_err(|e| e.to_string())?;
        }
        if ami.event_queue == 0 {
            return Err("ami.event_queue must be at least 1".into());
        }
        match (self.crm.kind, &self.amocrm) {
            (CrmKind::Amocrm, None) => {
                return Err("crm.kind = \"amocrm\" needs an [amocrm] section (subdomain and tokens)".into())
            }
            (CrmKind::Amocrm, Some(a)) => {
                if let Some(problem) = a.problems() {
                    return Err(problem);
                }
                if self.autodistribution.is_some() {
                    return Err(
                        "autodistribution works with Bitrix24 only: remove it, or set crm.kind = \"bitrix24\"".into(),
                    );
                }
            }
            (CrmKind::Bitrix24, _) => {}
        }
        if let Some(b) = &self.bitrix24 {
            let app = b.portal_url.is_some() || b.client_id.is_some() || b.client_secret.is_some();
            match (&b.webhook_url, app) {
                (Some(_), true) => {
                    return Err(
                        "bitrix24: set either webhook_url or the application (portal_url, client_id, \
                                client_secret, tokens), not both"
                            .into(),
                    )
                }
                (None, false) => {
                    return Err(
                        "bitrix24: set webhook_url, or portal_url + client_id + client_secret + \
                                access_token + refresh_token"
                            .into(),
                    )
                }
                (None, true) => {
                    for (name, value) in [
                        ("portal_url", &b.portal_url),
                        ("client_id", &b.client_id),
                        ("client_secret", &b.client_secret),
                        ("access_token", &b.access_token),
                        ("refresh_token", &b.refresh_token),
                    ] {
                        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                            return Err(format!("bitrix24.{name} is missing (needed for an application)"));
                        }
                    }
                }
                (Some(_), false) => {}
            }
            if !(b.request_timeout_secs.is_finite() && b.request_timeout_secs > 0.0 && b.request_timeout_secs <= 300.0)
            {
                return Err("bitrix24.request_timeout_secs must be between 0 and 300".into());
            }
        }
        if let Some(l) = &self.listener {
            l.bind
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("listener.bind {:?} is not ip:port (e.g. 127.0.0.1:8090)", l.bind))?;
            for a in &l.allow {
                crate::service::listener::AllowRule::parse(a)
                    .ok_or_else(|| format!("listener.allow {a:?} is not an IP address or CIDR block"))?;
            }
            if l.max_body_bytes < 1024 {
                return Err("listener.max_body_bytes must be at least 1024".into());
            }
            if !(l.rate_per_sec.is_finite() && l.rate_per_sec > 0.0) || l.burst == 0 {
                return Err("listener.rate_per_sec and listener.burst must be positive".into());
            }
            let autodist_rate = l.autodistribution_rate_per_sec;
            if !(autodist_rate.is_finite() && autodist_rate > 0.0) || l.autodistribution_burst == 0 {
                return Err(
                    "listener.autodistribution_rate_per_sec and listener.autodistribution_burst must be positive"
                        .into(),
                );
            }
        }
        self.validate_click_to_call()?;
        if let Some(a) = &self.autodistribution {
            self.validate_autodistribution(a)?;
        }
        if let Some(url) = &self.recordings.link_base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || !self.web.enabled {
                return Err(format!(
                    "recordings.link_base_url {url:?} must be an http(s) URL of this ringlink's [web] listener \
                     (and [web] enabled)"
                ));
            }
        }
        if !(self.recordings.settle_secs.is_finite() && self.recordings.settle_secs >= 0.0) {
            return Err("recordings.settle_secs must be 0 or more".into());
        }
        tracker::Tracker::new(self.tracker.clone()).map_err(|e| format!("tracker: {e}"))?;
        engine::Engine::new(self.engine.clone()).map_err(|e| format!("engine: {e}"))?;
        self.web.validate()?;
        Ok(())
    }

    /// The AMI client settings this configuration describes.
    pub fn ami_client(&self) -> ami::ClientConfig {
        let a = &self.ami;
        let mut c = ami::ClientConfig::new(&a.address, &a.username, &a.secret);
        c.auth = match a.auth {
            AmiAuth::Plain => ami::AuthMethod::Plain,
            AmiAuth::Md5 => ami::AuthMethod::Md5,
        };
        c.tls = a.tls_ca_file.clone().map(|ca_file| ami::TlsOptions {
            ca_file,
            server_name: None,
        });
        c.ping_interval = Duration::from_secs_f64(a.ping_interval_secs);
        c.ping_timeout = Duration::from_secs_f64(a.ping_timeout_secs);
        c.event_queue = a.event_queue;
        c
    }
}

const ENV_PREFIX: &str = "RINGLINK__";

fn apply_env_override(tree: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let Some(path) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "empty key between `__` separators".into(),
        });
    }
    let mut table = tree;
    for key in &keys[..keys.len() - 1] {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.to_owned(),
            message: format!("`{key}` is not a section"),
        })?;
    }
    let parsed = parse_scalar(value);
    if let Some(last) = keys.last() {
        table.insert(last.clone(), parsed);
    }
    Ok(())
}

/// `true`/`false`, integers and floats become typed values; anything else stays a string.
fn parse_scalar(value: &str) -> toml::Value {
    if let Ok(b) = value.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = value.parse::<f64>() {
        if f.is_finite() {
            return toml::Value::Float(f);
        }
    }
    toml::Value::String(value.to_owned())
}

/// The environment variables that can override settings.
pub fn env_overrides() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect()
}

/// The complete, commented default configuration (`ringlink config default`).
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// Where the installed service keeps its store (the unit's `StateDirectory`).
pub const SERVICE_STORE_PATH: &str = "/var/lib/ringlink/ringlink.db";

/// The default configuration for the installed service (`ringlink config default --service`, the Debian package's
/// `/etc/ringlink/ringlink.toml`): the store in the service's state directory, wherever `ringlink` is run from.
pub fn service_default_config() -> String {
    DEFAULT_CONFIG.replacen(
        "path = \"ringlink.db\"          #",
        &format!("path = \"{SERVICE_STORE_PATH}\" #"),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_is_the_shipped_file() {
        let c = parse(DEFAULT_CONFIG, &[]).expect("default config parses");
        assert_eq!(
            c.engine.utc_offset, c.tracker.utc_offset,
            "engine follows the tracker's zone"
        );
        assert!(c.bitrix24.is_some());
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../ringlink.toml"))
            .expect("ringlink.toml at the project root");
        assert_eq!(
            shipped, DEFAULT_CONFIG,
            "ringlink.toml must equal `ringlink config default`"
        );
    }

    #[test]
    fn the_service_config_differs_only_in_the_store_path_and_is_the_packaged_file() {
        let service = service_default_config();
        let c = parse(&service, &[]).expect("service config parses");
        assert_eq!(c.store.path, Path::new(SERVICE_STORE_PATH));
        let changed: Vec<_> = service
            .lines()
            .zip(DEFAULT_CONFIG.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        let packaged = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/debian/ringlink.toml"))
            .expect("debian/ringlink.toml");
        assert_eq!(
            packaged, service,
            "debian/ringlink.toml must equal `ringlink config default --service`"
        );
    }

    #[test]
    fn bitrix24_needs_exactly_one_auth_mode() {
        let both = format!("{MINIMAL}[bitrix24]\nwebhook_url = \"https://x/rest/1/y/\"\nportal_url = \"https://x\"\n");
        let e = parse(&both, &[]).expect_err("both");
        assert!(e.to_string().contains("not both"), "{e}");
        let app = format!("{MINIMAL}[bitrix24]\nportal_url = \"https://x\"\nclient_id = \"a\"\n");
        let e = parse(&app, &[]).expect_err("incomplete app");
        assert!(e.to_string().contains("client_secret"), "{e}");
    }

    #[test]
    fn zones_must_agree() {
        let text = format!("{MINIMAL}[tracker]\nutc_offset = \"+05:00\"\n[engine]\nutc_offset = \"+03:00\"\n");
        let e = parse(&text, &[]).expect_err("two zones");
        assert!(e.to_string().contains("one zone"), "{e}");
    }

    const MINIMAL: &str = "[ami]\naddress = \"127.0.0.1:5038\"\nusername = \"ringlink\"\nsecret = \"x\"\n";

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("test.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn a_postgresql_store_needs_a_tenant_and_is_named_without_its_password() {
        let store = |body: &str| format!("{MINIMAL}\n[store]\n{body}\n");
        let c = parse(
            &store("url = \"postgres://ringlink:secret@db.example:6432/calls\"\ntenant = \"north\""),
            &[],
        )
        .expect("valid");
        assert_eq!(c.store.describe(), "PostgreSQL db.example:6432/calls, tenant north");
        assert!(c.store.is_shared());
        let error = parse(&store("url = \"postgres://db.example/calls\""), &[]).expect_err("no tenant");
        assert!(error.to_string().contains("store.tenant is not set"), "{error}");
        let error = parse(&store("url = \"mysql://db.example/calls\"\ntenant = \"n\""), &[]).expect_err("not pg");
        assert!(error.to_string().contains("PostgreSQL URL"), "{error}");
        let sqlite = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(sqlite.store.describe(), "SQLite ringlink.db");
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(c.ami.auth, AmiAuth::Plain);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.ami_client().ping_interval, Duration::from_secs(15));
    }

    #[test]
    fn environment_overrides_any_key() {
        let c = parse(
            MINIMAL,
            &[
                ("RINGLINK__AMI__SECRET", "from-env"),
                ("RINGLINK__AMI__AUTH", "md5"),
                ("RINGLINK__AMI__PING_INTERVAL_SECS", "2"),
                ("RINGLINK__LOG__FORMAT", "json"),
                ("OTHER", "ignored"),
            ],
        )
        .expect("valid");
        assert_eq!(c.ami.secret, "from-env");
        assert_eq!(c.ami.auth, AmiAuth::Md5);
        assert_eq!(c.ami.ping_interval_secs, 2.0);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn errors_are_plain_words() {
        let e = parse("[ami\n", &[]).expect_err("bad toml");
        assert!(e.to_string().contains("not valid TOML"), "{e}");
        let e = parse(&MINIMAL.replace("5038", ""), &[]).expect_err("no port");
        assert!(e.to_string().contains("ami.address"), "{e}");
        let e = parse(&format!("{MINIMAL}typo = 1\n"), &[]).expect_err("unknown key");
        assert!(e.to_string().contains("typo"), "{e}");
        let e = parse(MINIMAL, &[("RINGLINK__AMI__ADDRESS__X", "1")]).expect_err("not a section");
        assert!(e.to_string().contains("RINGLINK__AMI__ADDRESS__X"), "{e}");
    }

    /// The settings page shows a key the file leaves out with its default: each must be the one ringlink uses.
    #[test]
    fn the_settings_page_defaults_are_ringlinks() {
        use web::settings::{catalogue, Kind};
        let webhook = "[bitrix24]\nwebhook_url = \"https://portal/rest/1/x/\"\n";
        let base = format!("{:?}", parse(&format!("{webhook}{MINIMAL}"), &[]).expect("valid"));
        for key in catalogue(&[]) {
            let value = match key.kind {
                Kind::Bool | Kind::Int | Kind::Float => key.default.to_owned(),
                Kind::Text | Kind::Choice(_) if !key.default.is_empty() => {
                    toml::Value::String(key.default.to_owned()).to_string()
                }
                Kind::List => toml::Value::Array(
                    key.default
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                )
                .to_string(),
                _ => continue,
            };
            let (section, name) = key.path.rsplit_once('.').expect("a key in a section");
            let text = match section {
                "ami" => format!("{webhook}{MINIMAL}{name} = {value}\n"),
                "bitrix24" => format!("{webhook}{name} = {value}\n{MINIMAL}"),
                _ => format!("{webhook}{MINIMAL}[{section}]\n{name} = {value}\n"),
            };
            let explicit = parse(&text, &[]).unwrap_or_else(|e| panic!("{}: {e}", key.path));
            assert_eq!(format!("{explicit:?}"), base, "the page's default of {}", key.path);
        }
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let c = parse(MINIMAL, &[("RINGLINK__AMI__SECRET", "hunter2")]).expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
