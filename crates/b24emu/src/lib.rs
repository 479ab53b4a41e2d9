//! `b24emu`: an emulator of the Bitrix24 REST API for tests and demos, built from the documented API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), b24emu::EmuError> {
//! let emu = b24emu::Emulator::start(b24emu::EmulatorConfig::default()).await?;
//! let url = format!("{}telephony.externalcall.register.json", emu.webhook_url());
//! // … drive the client under test against `url` / `emu.base_url()` …
//! let registered = emu.requests_for("telephony.externalcall.register");
//! # let _ = (url, registered);
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! REST lives at `{base}/rest/{method}.json` (OAuth, `auth` parameter) and
//! `{base}/rest/{user_id}/{secret}/{method}.json` (incoming webhook); the OAuth server at `{base}/oauth/token/`;
//! the control API at `{base}/_emu/…` (see [`control`](crate::control) routes in the README).

mod api;
mod auth;
mod clock;
mod config;
mod control;
mod core;
mod delivery;
mod error;
mod fault;
mod limits;
mod methods;
mod params;
mod record;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::auth::AppCredentials;
pub use crate::clock::{format_date, Clock};
pub use crate::config::{
    AppConfig, BadTokenError, ClockConfig, Conflicts, EmulatorConfig, ErrorCodeStyle, EventsConfig, LimitsConfig,
    MissingScopeError, OperatingConfig, OutgoingWebhook, Permission, PortalConfig, SeedEntity, SeedLine,
    SeedMultifield, SeedStatus, SeedUser, StatusRevision, WebhookConfig,
};
pub use crate::delivery::{ClickToCall, EventOutcome};
pub use crate::error::EmuError;
pub use crate::fault::{Fault, FaultCounts, RandomFaults, RandomOutcome, METHOD_REFUSED};
pub use crate::params::{parse_form, PValue};
pub use crate::record::{AuthMode, CardAction, CardCause, CardEvent, CardTimeline, Delivery, RecordedRequest};
pub use crate::server::serve;
pub use crate::state::{
    phone_key, Activity, Call, CallFinish, CrmEntity, EntityType, EventHandler, ExternalLine, Multifield, OfflineEvent,
    StateSnapshot, StoredFile, Task, User,
};

use crate::core::Core;

/// A running emulated portal.
pub struct Emulator {
    core: Arc<Core>,
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub(crate) fn app_credentials(core: &Core) -> AppCredentials {
    let base = core.base_url();
    AppCredentials {
        client_id: core.cfg.app.client_id.clone(),
        client_secret: core.cfg.app.client_secret.clone(),
        access_token: core.initial_access_token.clone(),
        refresh_token: core.initial_refresh_token.clone(),
        client_endpoint: format!("{base}/rest/"),
        oauth_url: format!("{base}/oauth/token/"),
        application_token: core.cfg.app.application_token.clone(),
        member_id: core.cfg.portal.member_id.clone(),
        user_id: core.cfg.app.user_id,
    }
}

pub(crate) fn webhook_url(core: &Core) -> String {
    format!(
        "{}/rest/{}/{}/",
        core.base_url(),
        core.cfg.webhook.user_id,
        core.cfg.webhook.secret
    )
}

impl Emulator {
    /// Start on an ephemeral loopback port.
    pub async fn start(cfg: EmulatorConfig) -> Result<Self, EmuError> {
        Self::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], 0)), None).await
    }

    /// Start on `addr`; with `control_addr` the control API is also served on a port the `Down` fault
    /// leaves open.
    pub async fn start_on(
        cfg: EmulatorConfig,
        addr: SocketAddr,
        control_addr: Option<SocketAddr>,
    ) -> Result<Self, EmuError> {
        let listener = TcpListener::bind(addr).await.map_err(|e| EmuError::Io {
            context: format!("binding {addr}"),
            source: e,
        })?;
        let addr = listener.local_addr().map_err(|e| EmuError::Io {
            context: "reading the bound address".into(),
            source: e,
        })?;
        let core = Core::new(cfg).into_arc();
        let _ = core.base_url.set(format!("http://{addr}"));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(server::serve(
            Some(listener),
            addr,
            server::portal_router(Arc::clone(&core)),
            core.down_tx.subscribe(),
            shutdown_rx.clone(),
        )));
        let mut bound_control = None;
        if let Some(caddr) = control_addr {
            let l = TcpListener::bind(caddr).await.map_err(|e| EmuError::Io {
                context: format!("binding control address {caddr}"),
                source: e,
            })?;
            let caddr = l.local_addr().map_err(|e| EmuError::Io {
                context: "reading the bound control address".into(),
                source: e,
            })?;
            bound_control = Some(caddr);
            // The control port never goes down: its "down" sender lives as long as the task.
            let (never_down_tx, never_down_rx) = watch::channel(false);
            let router = server::control_router(Arc::clone(&core));
            tasks.push(tokio::spawn(async move {
                server::serve(Some(l), caddr, router, never_down_rx, shutdown_rx).await;
                drop(never_down_tx);
            }));
        }
        Ok(Self {
            core,
            addr,
            control_addr: bound_control,
            shutdown_tx,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT`, the portal base (no trailing slash).
    pub fn base_url(&self) -> String {
        self.core.base_url().to_owned()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// `{base}/oauth/token/`.
    pub fn oauth_url(&self) -> String {
        format!("{}/oauth/token/", self.core.base_url())
    }

    pub fn app_credentials(&self) -> AppCredentials {
        app_credentials(&self.core)
    }

    /// `{base}/rest/{user_id}/{secret}/` — append `method.json`.
    pub fn webhook_url(&self) -> String {
        webhook_url(&self.core)
    }

    /// Every request so far, in arrival order (batch sub-commands right after their batch).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core.requests()
    }

    /// Requests of one method (case-insensitive), including those made inside `batch`.
    pub fn requests_for(&self, method: &str) -> Vec<RecordedRequest> {
        let method = method.to_ascii_lowercase();
        self.core
            .requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.core.clear_requests();
    }

    pub fn card_timeline(&self) -> CardTimeline {
        self.core.world().timeline.clone()
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.core.deliveries()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.core.apply_fault(Some(fault), None);
    }

    /// A fault that clears itself after `duration` (real time), unless replaced before.
    pub fn set_fault_for(&self, fault: Fault, duration: Duration) {
        self.core.apply_fault(Some(fault), Some(duration));
    }

    pub fn clear_fault(&self) {
        self.core.apply_fault(None, None);
    }

    pub fn fault(&self) -> Option<Fault> {
        self.core.fault()
    }

    /// How many requests [`Fault::Random`] refused or delayed so far, by kind.
    pub fn fault_counts(&self) -> FaultCounts {
        self.core.fault_counts()
    }

    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    pub fn state(&self) -> StateSnapshot {
        self.core.world().portal.snapshot()
    }

    /// Content of a stored file (call record).
    pub fn file_content(&self, id: u64) -> Option<Vec<u8>> {
        self.core.world().portal.files.get(&id).map(|f| f.content.clone())
    }

    /// Empty the leaky bucket.
    pub fn reset_limits(&self) {
        self.core.world().bucket.reset();
    }

    /// Current leaky-bucket level (requests not yet drained).
    pub fn bucket_level(&self) -> f64 {
        let now = self.core.clock.now();
        self.core.world().bucket.level(now, &self.core.cfg.limits)
    }

    /// A user clicks a number: the portal registers the call and emits `ONEXTERNALCALLSTART`.
    pub async fn click_to_call(&self, click: ClickToCall) -> Result<EventOutcome, EmuError> {
        delivery::click_to_call(&self.core, click).await
    }

    /// Emit a known event (e.g. `ONEXTERNALCALLBACKSTART`) with `data` on behalf of `user_id`.
    pub async fn emit_event(
        &self,
        event: &str,
        data: std::collections::BTreeMap<String, String>,
        user_id: u64,
    ) -> Result<EventOutcome, EmuError> {
        delivery::emit(&self.core, event, data, user_id).await
    }

    /// A one-time `code` for the `authorization_code` grant (valid 30 s of emulator time).
    pub fn issue_authorization_code(&self, user_id: u64) -> String {
        let now = self.core.clock.now();
        let mut w = self.core.world();
        let code = w.portal.next_hash("code");
        w.tokens.codes.insert(
            code.clone(),
            crate::auth::TokenInfo {
                user_id,
                expires_at: now + chrono::Duration::seconds(30),
            },
        );
        code
    }

    /// Stop serving and wait for the server tasks to end.
    pub async fn shutdown(mut self) {
        self.shutdown_tx.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}
