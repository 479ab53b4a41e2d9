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
mod control;
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
pub use crate::control::FaultSpec;
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
    #[error("{path} is not a valid account file: {message}")]
    Config { path: String, message: String },
}

/// A running emulated amoCRM account.
pub struct Emulator {
    core: Arc<Core>,
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    /// Never sent: the control port is not closed by [`Fault::Down`].
    _control_up: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EmuError> {
    TcpListener::bind(addr).await.map_err(|source| EmuError::Io {
        context: format!("binding {addr}"),
        source,
    })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, EmuError> {
    listener.local_addr().map_err(|source| EmuError::Io {
        context: "reading the bound address".into(),
        source,
    })
}

impl Emulator {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: EmulatorConfig) -> Result<Self, EmuError> {
        Self::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], 0)), None).await
    }

    /// Starts on `listen` (the account and its control API under `/_emu`), and on `control` when given: a port
    /// serving only the control API, which stays open while [`Fault::Down`] closes the account's.
    pub async fn start_on(
        cfg: EmulatorConfig,
        listen: SocketAddr,
        control: Option<SocketAddr>,
    ) -> Result<Self, EmuError> {
        let listener = bind(listen).await?;
        let addr = local_addr(&listener)?;
        let control_listener = match control {
            Some(control) => Some(bind(control).await?),
            None => None,
        };
        let control_addr = control_listener.as_ref().map(local_addr).transpose()?;
        let core = Core::new(cfg);
        let _ = core.base_url.set(format!("http://{addr}"));
        let core = Arc::new(core);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (control_up, control_down_rx) = watch::channel(false);
        let down_rx = core.down_tx.subscribe();
        let router = server::router(Arc::clone(&core));
        let mut tasks = vec![tokio::spawn(b24emu::serve(
            Some(listener),
            addr,
            router,
            down_rx,
            shutdown_rx.clone(),
        ))];
        if let (Some(listener), Some(control_addr)) = (control_listener, control_addr) {
            let router = server::control_router(Arc::clone(&core));
            tasks.push(tokio::spawn(b24emu::serve(
                Some(listener),
                control_addr,
                router,
                control_down_rx,
                shutdown_rx,
            )));
        }
        Ok(Emulator {
            core,
            addr,
            control_addr,
            shutdown_tx,
            _control_up: control_up,
            tasks,
        })
    }

    /// The port serving only the control API, if one was asked for.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
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
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}
