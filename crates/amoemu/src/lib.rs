//! `amoemu`: an emulator of the amoCRM / Kommo REST API for tests, built from the project's amoCRM reference only.
//!
//! It answers what ringlink sends — the OAuth token endpoint, account, users, contact search, pipelines,
//! `POST /api/v4/calls`, unsorted SIP, complex add, tasks and the call-popup events API — with the documented
//! shapes (HAL+JSON lists with `_links`/`_page`, 204 for an empty page, problem+JSON errors with
//! `validation-errors`), the 7 requests/s limit per integration (429 above it), single-use refresh tokens and
//! token lifetimes on a settable clock. It records every request and every popup, and can be told to fail
//! ([`Fault`]: down, 5xx, a 429 storm, the 403 IP block).
//!
//! ```no_run
//! # async fn demo() -> Result<(), amoemu::EmuError> {
//! let emu = amoemu::Emulator::start(amoemu::EmulatorConfig::default()).await?; // 127.0.0.1:<ephemeral>
//! let (access, refresh) = emu.initial_tokens();
//! // … drive the client under test against emu.base_url() …
//! let calls = emu.requests_to("/api/v4/calls");
//! let popups = emu.popups();
//! emu.set_fault(Some(amoemu::Fault::RateLimitStorm));
//! emu.clock().advance(std::time::Duration::from_secs(86_400)); // the access token expires
//! # let _ = (access, refresh, calls, popups);
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod config;
mod oauth;
mod record;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use b24emu::Clock;

pub use crate::config::{EmulatorConfig, SeedContact, SeedLead, SeedPipeline, SeedStatus, SeedUser};
pub use crate::record::{AuthKind, Fault, Popup, RecordedRequest};
pub use crate::state::{last_digits, Call, Company, Contact, Lead, Pipeline, Snapshot, Status, Task, Unsorted, User};

use crate::server::Core;

/// Failure to start the emulator itself (not an emulated API error).
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running emulated amoCRM account.
pub struct Emulator {
    core: Arc<Core>,
    addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: EmulatorConfig) -> Result<Self, EmuError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|source| EmuError::Io {
            context: "binding 127.0.0.1:0".into(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| EmuError::Io {
            context: "reading the bound address".into(),
            source,
        })?;
        let core = Core::new(cfg);
        let _ = core.base_url.set(format!("http://{addr}"));
        let core = Arc::new(core);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let down_rx = core.down_tx.subscribe();
        let router = server::router(Arc::clone(&core));
        let task = tokio::spawn(b24emu::serve(Some(listener), addr, router, down_rx, shutdown_rx));
        Ok(Emulator {
            core,
            addr,
            shutdown_tx,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, standing in for `https://{subdomain}.amocrm.ru` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.core.base().to_owned()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.core.cfg
    }

    /// The (access, refresh) pair the integration holds at start.
    pub fn initial_tokens(&self) -> (String, String) {
        self.core.initial.clone()
    }

    /// A one-time authorization code, as the consent redirect (or the widget install) would bring it.
    pub fn issue_authorization_code(&self) -> String {
        oauth::issue_code(&self.core)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.core.requests()
    }

    /// Requests to one path (query excluded), e.g. `/api/v4/calls`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.core.requests().into_iter().filter(|r| r.path == path).collect()
    }

    pub fn clear_requests(&self) {
        self.core.clear_requests();
    }

    /// Every accepted call popup, in order.
    pub fn popups(&self) -> Vec<Popup> {
        self.core.world().popups.clone()
    }

    /// The account's data now.
    pub fn state(&self) -> Snapshot {
        self.core.world().account.snapshot()
    }

    /// `Some(fault)` to start failing, `None` to recover. [`Fault::Down`] closes the port until cleared.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.core.set_fault(fault);
    }

    pub fn fault(&self) -> Option<Fault> {
        self.core.fault()
    }

    /// Forget the requests counted against the 7 requests/s limit.
    pub fn reset_rate_limit(&self) {
        self.core.reset_rate_window();
    }

    /// The clock token lifetimes are measured on.
    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    /// Stop serving and wait for the server to end.
    pub async fn shutdown(mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}
