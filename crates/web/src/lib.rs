//! ringlink's admin web UI and monitoring endpoints, served by `ringlink run` on `[web] listen` (default
//! `0.0.0.0:8077`), separate from any listener facing Bitrix24.
//!
//! - `GET /status` — JSON for monitoring systems (Ok/Warning/Error with the reasons, AMI, Bitrix24 reachability
//!   and request budget, outbox, users cache, hooks, the periods ringlink did not follow the PBX — see [`gaps`] —,
//!   version, uptime); `GET /metrics` — Prometheus text. Each is
//!   allowed from its IP allow-list or with its bearer token, so monitoring needs no admin password.
//! - The admin pages (status, the calls journal with each call's timeline, the settings editing `ringlink.toml`
//!   in place — see [`settings`] —, the setup [`wizard`], the users directory, the last log lines from a [`LogBuffer`]) need a session: a password login
//!   (argon2), an HttpOnly + SameSite=Strict cookie, a CSRF token on every form, rate-limited attempts. Every
//!   page is rendered on the server with `maud`, which escapes all text (caller names, PBX and CRM answers); the
//!   stylesheet is compiled into the binary. Russian or English, from the browser's `Accept-Language` or the
//!   switch in the header.
//!
//! The UI never slows calls: [`serve_apart`] serves and renders it on a thread of its own at the lowest CPU
//! priority, apart from the service's runtime, and hands its few store writes back to the service; its store
//! reads run on two threads of its own at the lowest CPU priority, on the store's report connections; one
//! journal search runs at a time, each with a time limit (`reports`).
//!
//! The crate shows what the store and the [`Telemetry`] say; the service reports to the telemetry and hands
//! over the two [`tokio::sync::Notify`]s that wake its worker and users refresher, and the [`Reprocess`] port
//! behind each timeline's "Re-process this call" (see [`reprocess`]).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! let store = store::SqliteStore::open("ringlink.db").expect("store");
//! let telemetry = Arc::new(web::Telemetry::new(env!("CARGO_PKG_VERSION")));
//! telemetry.ami_address("127.0.0.1:5038");
//! let web = web::Web::new(web::WebSettings::default(), Arc::new(store), telemetry, web::Wake::default())
//!     .expect("web state");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8077").await?;
//! web::serve(listener, web, std::future::pending()).await
//! # }
//! ```

mod access;
mod admin;
mod auth;
pub mod gaps;
mod i18n;
pub mod install;
mod logs;
mod own_thread;
mod pages;
mod records;
mod reports;
pub mod reprocess;
mod server;
pub mod settings;
pub mod status;
mod telemetry;
mod tls;
pub mod wizard;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use store::Store;
use tokio::sync::Notify;

pub use access::AllowList;
pub use auth::{hash_password, PASSWORD_SETTING};
pub use logs::{LogBuffer, LogLine, KEPT_LINES};
pub use own_thread::serve_apart;
pub use records::{PathResolver, RecordLinks, Refused, Signed, LINK_SECRET_SETTING};
pub use reprocess::{Reprocess, Reprocessed};
pub use server::{router, serve, Web};
pub use settings::SettingsFile;
pub use status::{AppStatus, Status, Thresholds};
pub use telemetry::{CrmBudget, Gauge, HookStatus, Live, Role, StoreRole, Telemetry};
pub use tls::TlsFiles;
pub use wizard::Probes;

/// The `[web]` section of the configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSettings {
    /// Serve the UI at all.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// `address:port` to listen on (internal-facing).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token that opens `GET /status` from anywhere (`Authorization: Bearer …` or `?token=…`).
    #[serde(default)]
    pub status_token: Option<String>,
    /// Addresses or networks (`10.0.0.0/8`) that may read `/status` without a token.
    #[serde(default = "default_allow")]
    pub status_allow: Vec<String>,
    #[serde(default)]
    pub metrics_token: Option<String>,
    #[serde(default = "default_allow")]
    pub metrics_allow: Vec<String>,
    /// A session ends this long after login.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// A period whose calls may be missing (`/status`'s `gaps.may_be_missing`) is a Warning for this long after
    /// it ended, unless acknowledged sooner on the Status page; `/status` keeps showing it.
    #[serde(default = "default_gap_warning_hours")]
    pub gap_warning_hours: u64,
    /// A journal search (a filter set on the Calls page) is stopped after this long and the page asks to narrow
    /// it, so that one broad search over a large journal never keeps a core busy for minutes.
    #[serde(default = "default_search_limit_secs")]
    pub search_limit_secs: u64,
    /// One journal search runs at a time; another waits this long for its turn, then the page says the UI is
    /// busy (503 with `Retry-After`). 0: never wait.
    #[serde(default = "default_search_wait_secs")]
    pub search_wait_secs: u64,
    /// Mark the session cookie `Secure` (set when the UI is reached over HTTPS, e.g. behind a TLS proxy; always
    /// on with `tls_cert`).
    #[serde(default)]
    pub secure_cookies: bool,
    /// Serve HTTPS with this certificate chain (PEM: the server's certificate, then intermediates) …
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// … and its private key (PEM, unencrypted). Both or neither.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            enabled: default_enabled(),
            listen: default_listen(),
            status_token: None,
            status_allow: default_allow(),
            metrics_token: None,
            metrics_allow: default_allow(),
            session_hours: default_session_hours(),
            gap_warning_hours: default_gap_warning_hours(),
            search_limit_secs: default_search_limit_secs(),
            search_wait_secs: default_search_wait_secs(),
            secure_cookies: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl std::fmt::Debug for WebSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSettings")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("status_token", &self.status_token.as_ref().map(|_| "***"))
            .field("status_allow", &self.status_allow)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("metrics_allow", &self.metrics_allow)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish_non_exhaustive()
    }
}

fn default_enabled() -> bool {
    true
}
fn default_listen() -> String {
    "0.0.0.0:8077".into()
}
fn default_allow() -> Vec<String> {
    vec!["127.0.0.1".into(), "::1".into()]
}
fn default_session_hours() -> u64 {
    12
}

fn default_gap_warning_hours() -> u64 {
    24
}

fn default_search_limit_secs() -> u64 {
    10
}

fn default_search_wait_secs() -> u64 {
    3
}

impl WebSettings {
    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "web.listen {:?} is not address:port (e.g. 0.0.0.0:8077)",
                self.listen
            ));
        }
        AllowList::parse(&self.status_allow).map_err(|e| format!("web.status_allow: {e}"))?;
        AllowList::parse(&self.metrics_allow).map_err(|e| format!("web.metrics_allow: {e}"))?;
        for (name, token) in [
            ("status_token", &self.status_token),
            ("metrics_token", &self.metrics_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(format!("web.{name} must be at least 16 characters"));
            }
        }
        if self.session_hours == 0 {
            return Err("web.session_hours must be at least 1".into());
        }
        if self.search_limit_secs == 0 {
            return Err("web.search_limit_secs must be at least 1 (seconds a journal search may run)".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("web.tls_cert and web.tls_key go together: set both (PEM files) for HTTPS, or neither".into());
        }
        Ok(())
    }

    /// The certificate and key when HTTPS is configured, loaded and checked (the error says which file and why).
    pub fn tls(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsFiles::load(cert, key).map(Some),
            (None, None) => Ok(None),
            _ => Err("web.tls_cert and web.tls_key go together: set both (PEM files) for HTTPS, or neither".into()),
        }
    }

    /// How long a period whose calls may be missing stays a Warning (`gap_warning_hours`).
    pub fn gap_warning(&self) -> Duration {
        Duration::from_secs(self.gap_warning_hours.saturating_mul(3600))
    }

    /// How long a journal search may run (`search_limit_secs`).
    pub fn search_limit(&self) -> Duration {
        Duration::from_secs(self.search_limit_secs)
    }

    /// How long a journal search waits for the one running (`search_wait_secs`).
    pub fn search_wait(&self) -> Duration {
        Duration::from_secs(self.search_wait_secs)
    }

    fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_hours.saturating_mul(3600))
    }
}

/// What the UI's buttons wake in the service.
#[derive(Clone, Default)]
pub struct Wake {
    /// The outbox worker (after steps were set back to pending).
    pub worker: Arc<Notify>,
    /// The users refresher.
    pub users: Arc<Notify>,
}

/// The store as the UI uses it (any [`Store`] implementation).
pub type SharedStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("web settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}
