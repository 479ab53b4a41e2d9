//! `ringlink run`: the wiring of AMI → tracker → engine → store → worker → Bitrix24.
//!
//! Three tasks share the store (SQLite, every write one transaction) and the engine (behind a mutex, held only
//! for pure, short calls):
//! - the **pipeline** follows AMI, feeds the tracker, asks the engine for a plan on every call event and writes
//!   the plan's steps and decisions to the store *before* anything is sent;
//! - the **worker** claims due steps, applies the timing rules (a card that would come too late is dropped, a late
//!   registration goes without a card), sends them within the Bitrix24 limiter's budget — several calls' steps in
//!   one `batch` — and records each answer or error;
//! - the **users refresher** keeps the extension → employee directory current from `user.get`;
//! - the **lines sync** keeps Bitrix24's external lines in step with the trunks (at start and on a settings save).
//!
//! A restart loses nothing: steps are in the store, and the first resynchronisation (`CoreShowChannels`)
//! rebuilds the live calls, whose re-planned steps carry the same idempotency keys as before.

mod agi;
mod amocrm;
pub use amocrm::client as amocrm_client;
mod autodist;
mod clicks;
mod crm_binding;
mod customize;
mod events;
pub use events::handler_url;
mod leadership;
mod lines;
pub(crate) mod listener;
mod offline;
pub(crate) mod pipeline;
pub use recovery::UNRECOVERED;
mod recovery;
mod reprocess;

pub use pipeline::need_registration_params;
mod setup_probe;
pub(crate) mod users;
mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use store::{PortalTokens, Store};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{error, info, warn};

use crate::config::{Bitrix24Plan, Bitrix24Settings, ClickMode, Config, CrmKind};

/// State the tasks share.
#[derive(Clone)]
pub struct Shared {
    /// SQLite or PostgreSQL, as `[store]` says.
    pub store: Arc<dyn Store>,
    pub engine: Arc<Mutex<engine::Engine>>,
    /// Wakes the worker when new steps are stored.
    pub work: Arc<Notify>,
    /// Asks the users refresher for a refresh now.
    pub users_refresh: Arc<Notify>,
    /// The customization hooks (none when `hooks.dir` is unset).
    pub hooks: Arc<hooks::Hooks>,
    /// `need_registration` answers on their way to the engine.
    pub verdicts: pipeline::Verdicts,
    /// Tells the pipeline the directory is known (loaded or looked at): calls held for it go on.
    pub directory_loaded: Arc<Notify>,
    /// The AMI connection while the pipeline has one (click-to-call originates through it).
    pub ami: Arc<Mutex<Option<ami::Client>>>,
    /// Where the pipeline hands `OriginateResponse` events (click-to-call), when click-to-call is on.
    pub originate_responses: Option<mpsc::UnboundedSender<ami::Message>>,
    /// What `/status` and `/metrics` show.
    pub telemetry: Arc<web::Telemetry>,
    /// Signs the recording links of the UI's player and of `attachRecord` by URL.
    pub record_links: web::RecordLinks,
    /// Auto-distribution, when configured (a registered call drops its number from the look-up cache).
    pub autodist: Arc<std::sync::OnceLock<Arc<autodist::AutoDistributor>>>,
    /// Card steps the pipeline claimed for the Bitrix24 worker in the commit that stored them.
    pub handoff: worker::Handoff,
}

impl Shared {
    /// Runs a store operation off the async threads.
    pub async fn store<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> store::Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
    }

    /// Locks the engine; a poisoned lock (a panic elsewhere) is recovered, since the engine's state stays
    /// consistent between calls.
    pub fn engine(&self) -> std::sync::MutexGuard<'_, engine::Engine> {
        self.engine.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The wall clock as the tracker and engine count time.
pub fn now() -> tracker::Timestamp {
    tracker::Timestamp::from_micros(store::Timestamp::now().as_micros())
}

/// The key tokens are stored under.
fn portal_key(settings: &Bitrix24Settings) -> String {
    settings.portal_url.clone().unwrap_or_else(|| "webhook".into())
}

/// Builds the Bitrix24 client; OAuth tokens come from the store when it has newer ones than the config.
pub fn bitrix24_client(settings: &Bitrix24Settings, store: &Arc<dyn Store>) -> anyhow::Result<bitrix24::Client> {
    let builder = match (&settings.webhook_url, &settings.portal_url) {
        (Some(url), _) => bitrix24::Client::webhook(url)?,
        (None, Some(portal)) => {
            let id = settings.client_id.clone().unwrap_or_default();
            let secret = settings.client_secret.clone().unwrap_or_default();
            let mut app = bitrix24::AppCredentials::new(id, secret);
            if let Some(oauth) = &settings.oauth_url {
                app = app.with_oauth_url(oauth.clone());
            }
            let key = portal_key(settings);
            let tokens = match store.load_tokens(&key)? {
                Some(saved) => {
                    let mut t = bitrix24::OAuthTokens::new(saved.access_token, saved.refresh_token);
                    t.expires_at = saved.expires_at.map(|at| at.as_micros() / 1_000_000);
                    t
                }
                None => bitrix24::OAuthTokens::new(
                    settings.access_token.clone().unwrap_or_default(),
                    settings.refresh_token.clone().unwrap_or_default(),
                ),
            };
            let saver_store = store.clone();
            let saver = move |t: &bitrix24::OAuthTokens| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                let tokens = PortalTokens {
                    access_token: t.access_token.expose().to_owned(),
                    refresh_token: t.refresh_token.expose().to_owned(),
                    expires_at: t.expires_at.map(store::Timestamp::from_secs),
                    scope: t.scope.clone(),
                    client_endpoint: t.client_endpoint.clone(),
                    member_id: t.member_id.clone(),
                };
                saver_store.save_tokens(&key, &tokens, store::Timestamp::now())?;
                Ok(())
            };
            bitrix24::Client::app(portal.clone(), app, tokens).token_store(Arc::new(saver))
        }
        (None, None) => anyhow::bail!("bitrix24: neither webhook_url nor portal_url is set"),
    };
    let limiter = match settings.plan {
        Bitrix24Plan::Standard => bitrix24::LimiterConfig::standard(),
        Bitrix24Plan::Enterprise => bitrix24::LimiterConfig::enterprise(),
    };
    let timeouts = bitrix24::Timeouts {
        connect: Duration::from_secs(10),
        request: Duration::from_secs_f64(settings.request_timeout_secs),
    };
    Ok(builder.limiter_config(limiter).timeouts(timeouts).build()?)
}

/// A hook's call for `/metrics`.
fn report_hook(shared: &Shared, called: &hooks::Called) {
    let failed = matches!(called.outcome, hooks::Outcome::Failed(_));
    shared
        .telemetry
        .hook_called(called.hook.as_str(), called.elapsed, failed);
}

/// The hooks found, on or off, with their counters, for `/status`.
fn hooks_status(hooks: &hooks::Hooks) -> Vec<web::HookStatus> {
    hooks
        .list()
        .into_iter()
        .filter(|info| info.found.is_some())
        .map(|info| {
            let stats = hooks.stats(info.hook);
            web::HookStatus {
                name: info.hook.as_str().to_owned(),
                enabled: info.enabled,
                calls: stats.calls,
                applied: stats.applied,
                cancelled: stats.cancelled,
                failures: stats.failed,
            }
        })
        .collect()
}

fn crm_budget(client: &bitrix24::Client) -> web::CrmBudget {
    let b = client.budget();
    web::CrmBudget {
        available_now: b.available_now,
        level: b.level,
        capacity: b.capacity,
        drain_per_sec: b.drain_per_sec,
        backoff_secs: b.backoff_remaining.map(|d| d.as_secs_f64()),
    }
}

/// Serves the admin UI until stopped. A UI that cannot start (address in use) is logged, never fatal: calls go
/// on without it.
/// The settings page's file: checked as at start, applied by swapping the engine's settings (the next call uses
/// them); everything else waits for a restart.
/// The saved trunks are synced to Bitrix24's external lines at once.
fn settings_file(
    shared: &Shared,
    path: PathBuf,
    lines: Arc<watch::Sender<Vec<engine::WantedLine>>>,
) -> web::SettingsFile {
    let hooks = shared
        .hooks
        .list()
        .into_iter()
        .filter(|info| info.found.is_some())
        .map(|info| info.hook.as_str().to_owned())
        .collect();
    let check_path = path.clone();
    let validate: web::settings::Validate = Arc::new(move |text: &str| {
        Config::parse(text, &check_path, crate::config::env_overrides())
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let apply_path = path.clone();
    let engine = shared.engine.clone();
    let apply: web::settings::Apply = Arc::new(move |text: &str| {
        let config = Config::parse(text, &apply_path, crate::config::env_overrides()).map_err(|e| e.to_string())?;
        let wanted = lines::wanted(&config);
        lines.send_if_modified(|current| {
            let changed = *current != wanted;
            *current = wanted;
            changed
        });
        engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .set_settings(config.engine)
            .map_err(|e| e.to_string())
    });
    web::SettingsFile {
        path,
        hooks,
        validate,
        apply,
    }
}

async fn admin_ui(
    shared: Shared,
    config: Config,
    config_path: PathBuf,
    logs: web::LogBuffer,
    lines: Arc<watch::Sender<Vec<engine::WantedLine>>>,
    mut stop: watch::Receiver<bool>,
) {
    let wake = web::Wake {
        worker: shared.work.clone(),
        users: shared.users_refresh.clone(),
    };
    let thresholds = web::Thresholds {
        users_cache_age: Duration::from_secs(config.engine.users_refresh_interval_secs.saturating_mul(3)),
        gap_warning: config.web.gap_warning(),
        ..web::Thresholds::default()
    };
    let ui = match web::Web::new(config.web.clone(), shared.store.clone(), shared.telemetry.clone(), wake) {
        Ok(ui) => {
            let recordings = config.recordings.clone();
            let resolve: web::PathResolver = Arc::new(move |pbx_path: &str| recordings.local_path(pbx_path));
            ui.thresholds(thresholds)
                .zone(&config.tracker.utc_offset)
                .recordings(shared.record_links.clone(), resolve)
                .settings_file(settings_file(&shared, config_path, lines))
                .logs(logs)
                .probes(setup_probe::probes(&config))
                .reprocess(Arc::new(reprocess::Reprocessor::new(shared.clone(), config.clone())))
        }
        Err(e) => return error!(error = %e, "the admin UI cannot start"),
    };
    let listener = match std::net::TcpListener::bind(&config.web.listen) {
        Ok(l) => l,
        Err(e) => {
            return error!(listen = %config.web.listen, error = %e, "the admin UI cannot listen; set [web] listen")
        }
    };
    let scheme = if ui.is_tls() { "https" } else { "http" };
    info!(listen = %config.web.listen, scheme, "admin UI listening");
    if let Some(code) = ui.setup_code() {
        warn!(setup_code = %code, "no admin password yet: open the UI and enter this setup code to choose one");
    }
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    // Rendering pages never sits on the threads that pop cards.
    if let Err(e) = web::serve_apart(listener, ui, stopped).await {
        error!(error = %e, "the admin UI stopped");
    }
}

/// `ringlink run`: the service until Ctrl-C or SIGTERM; `config_path` is the file `config` was read from (the
/// settings page edits it), `logs` holds the last log lines for the admin UI.
pub async fn run(config: Config, config_path: PathBuf, logs: web::LogBuffer) -> anyhow::Result<()> {
    run_until(config, config_path, logs, crate::shutdown_signal()).await
}

/// The service until `stop` resolves (`ringlink demo` stops it when its calls are done or on a signal).
pub async fn run_until(
    config: Config,
    config_path: PathBuf,
    logs: web::LogBuffer,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), ami = %config.ami.address, "ringlink starting");
    let store = config.store.open()?;
    info!(store = %config.store.describe(), "store open");
    let telemetry = Arc::new(web::Telemetry::new(env!("CARGO_PKG_VERSION")));
    let lease = leadership::Lease::new(store.clone(), &config.store, telemetry.clone());
    telemetry.ami_address(&config.ami.address);
    let client = match (&config.bitrix24, config.crm.kind) {
        (_, CrmKind::Amocrm) => None,
        (Some(settings), CrmKind::Bitrix24) => Some(bitrix24_client(settings, &store)?),
        (None, CrmKind::Bitrix24) => {
            warn!("no [bitrix24] section: calls are followed and journaled but not registered");
            None
        }
    };
    if let Some(client) = &client {
        let client = client.clone();
        telemetry.crm_configured("Bitrix24");
        telemetry.crm_budget_source(move || crm_budget(&client));
    }
    tokio::pin!(stop);
    // A standby serves its admin UI (which says so) and nothing else until it leads.
    let (standby_ui_stop, standby_ui) = watch::channel(false);
    let mut standby_ui_task = None;
    if config.web.enabled && config.store.is_shared() {
        let wake = web::Wake {
            worker: Arc::new(Notify::new()),
            users: Arc::new(Notify::new()),
        };
        let ui = web::Web::new(config.web.clone(), store.clone(), telemetry.clone(), wake).map_err(anyhow::Error::from);
        standby_ui_task = Some(tokio::spawn(standby_admin_ui(
            ui,
            config.web.listen.clone(),
            standby_ui,
        )));
    }
    let acquired = tokio::select! {
        acquired = lease.acquire() => acquired,
        _ = &mut stop => {
            info!("shutting down");
            return Ok(());
        }
    };
    let _ = standby_ui_stop.send(true);
    if let Some(mut task) = standby_ui_task {
        // Its port is the full UI's: a connection kept open must not keep it.
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
    acquired?;
    // This process is the only one acting on the tenant's outbox now (the lease, and on PostgreSQL the fence
    // on every write, make sure of it): what the previous leader or a crashed run was sending is sent again now,
    // not after the claims' leases (Bitrix24 takes a repeated register with its EXTERNAL_CALL_ID as the same call).
    let released = store.release_claims(store::Timestamp::now())?;
    if released > 0 {
        info!(steps = released, "steps a previous run was sending are due again");
    }
    let mut engine = engine::Engine::new(config.engine.clone())?;
    engine.set_crm(config.engine_crm());
    // The cached directory lets calls be registered right away, even while Bitrix24 is unreachable. A fresh
    // install has none: calls that need it wait for the first successful refresh.
    let cached = store.users()?;
    if let Some(at) = store.users_refreshed_at()? {
        engine
            .users_mut()
            .replace(cached.iter().map(users::directory_user), users::tracker_time(at));
        info!(users = cached.len(), "users directory loaded from the store");
    }
    let hooks = hooks::Hooks::discover(&config.hooks).context("[hooks]")?;
    let enabled: Vec<&str> = hooks.enabled().map(hooks::HookName::as_str).collect();
    if !enabled.is_empty() {
        info!(hooks = ?enabled, "customization hooks enabled");
    }
    let amocrm = match (config.crm.kind, &config.amocrm) {
        (CrmKind::Amocrm, Some(settings)) => {
            telemetry.crm_configured("amoCRM");
            info!(account = %settings.base().unwrap_or_default(), oauth = settings.is_oauth(), "calls are recorded in amoCRM");
            Some((settings.clone(), amocrm::client(settings, &store)?))
        }
        _ => None,
    };
    let verdicts = pipeline::Verdicts::default();
    if hooks.is_enabled(hooks::HookName::NeedRegistration) {
        engine.set_gate(Box::new(verdicts.clone()));
    }
    let (responses_tx, responses_rx) = mpsc::unbounded_channel();
    let shared = Shared {
        verdicts,
        store: store.clone(),
        engine: Arc::new(Mutex::new(engine)),
        work: Arc::new(Notify::new()),
        users_refresh: Arc::new(Notify::new()),
        hooks: Arc::new(hooks),
        directory_loaded: Arc::new(Notify::new()),
        ami: Arc::new(Mutex::new(None)),
        originate_responses: config.click_to_call.is_some().then_some(responses_tx),
        telemetry,
        record_links: web::RecordLinks::from_store(store.as_ref())?,
        autodist: Default::default(),
        handoff: worker::Handoff::new(client.is_some()),
    };
    let hooks = shared.hooks.clone();
    shared.telemetry.hooks_source(move || hooks_status(&hooks));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (lines_tx, lines_rx) = watch::channel(lines::wanted(&config));
    let lines_tx = Arc::new(lines_tx);
    let mut tasks = tokio::task::JoinSet::new();
    if config.web.enabled {
        tasks.spawn(admin_ui(
            shared.clone(),
            config.clone(),
            config_path.clone(),
            logs.clone(),
            lines_tx.clone(),
            stop_rx.clone(),
        ));
    }
    if let Some(client) = &client {
        let refresh_every = Duration::from_secs(config.engine.users_refresh_interval_secs);
        tasks.spawn(users::refresher(
            shared.clone(),
            users::Source::Bitrix24(client.clone()),
            refresh_every,
            stop_rx.clone(),
        ));
        tasks.spawn(worker::run(
            shared.clone(),
            client.clone(),
            config.recordings.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(lines::run(client.clone(), lines_rx, stop_rx.clone()));
    }
    if let Some((settings, client)) = &amocrm {
        let refresh_every = Duration::from_secs(config.engine.users_refresh_interval_secs);
        let source = users::Source::AmoCrm {
            client: client.clone(),
            extensions: settings.extensions.clone(),
        };
        tasks.spawn(users::refresher(shared.clone(), source, refresh_every, stop_rx.clone()));
        tasks.spawn(amocrm::run(
            shared.clone(),
            client.clone(),
            config.recordings.clone(),
            stop_rx.clone(),
        ));
    }
    let mut endpoints = listener::Endpoints::default();
    if let (Some(settings), Some(client)) = (&config.autodistribution, &client) {
        let numbers = numbers::Normalizer::new(&config.tracker.numbers).context("[tracker.numbers]")?;
        let autodist = autodist::AutoDistributor::new(shared.clone(), client.clone(), settings.clone(), numbers);
        let _ = shared.autodist.set(autodist.clone());
        info!(budget_ms = settings.budget_ms, order = ?settings.order, "auto-distribution on");
        if config.listener.is_some() {
            endpoints.autodistribution = Some((autodist.clone(), settings.token.clone()));
        }
        if let Some(bind) = &settings.agi_bind {
            tasks.spawn(log_failure(
                "FastAGI server",
                agi::serve(bind.clone(), settings.agi_allow.clone(), autodist, stop_rx.clone()),
            ));
        }
    }
    if let Some(click) = &config.click_to_call {
        clicks::reannounce(&shared).await?;
        let (events_tx, events_rx) = mpsc::channel(256);
        let (widget_tx, widget_rx) = mpsc::channel(64);
        info!(mode = ?click.mode, "click-to-call on");
        match (click.mode, &config.listener, &client) {
            (ClickMode::Handler, Some(_), _) if amocrm.is_some() => {
                info!(
                    path = listener::AMOCRM_CLICK_PATH,
                    "the amoCRM widget's clicks are taken on the listener"
                );
                endpoints.amocrm_clicks = Some((click.application_token.clone(), widget_tx));
            }
            (ClickMode::Handler, Some(listener), _) => {
                endpoints.events = Some((click.application_token.clone(), events_tx));
                // The listener answers before the event is bound to it.
                serve_listener(&mut tasks, listener, &mut endpoints, &stop_rx);
                if let (true, Some(client)) = (click.bind_events, &client) {
                    events::bind(client, listener).await;
                }
            }
            (ClickMode::Offline, _, Some(client)) => {
                offline::bind(client).await;
                let poll = (
                    Duration::from_secs_f64(click.poll_min_secs),
                    Duration::from_secs_f64(click.poll_max_secs),
                );
                tasks.spawn(offline::run(
                    shared.clone(),
                    client.clone(),
                    events_tx,
                    poll,
                    stop_rx.clone(),
                ));
            }
            _ => warn!("click-to-call has no way to receive clicks (no listener / no Bitrix24 application)"),
        }
        tasks.spawn(clicks::run(
            shared.clone(),
            click.clone(),
            lines_tx.subscribe(),
            events_rx,
            widget_rx,
            responses_rx,
            stop_rx.clone(),
        ));
    }
    if let Some(listener) = &config.listener {
        serve_listener(&mut tasks, listener, &mut endpoints, &stop_rx);
    }
    let pipeline = pipeline::run(shared.clone(), config.clone(), stop_rx.clone());
    tokio::pin!(pipeline);
    let result = tokio::select! {
        r = &mut pipeline => r,
        _ = &mut stop => {
            info!("shutting down");
            let _ = stop_tx.send(true);
            pipeline.await
        }
        reason = lease.keep() => {
            // Stop at once: the pipeline and every task are dropped with this function (their store writes are
            // refused anyway); the service manager starts the process again as a standby.
            error!(reason = %reason, "stepping down: this instance no longer leads its tenant");
            let _ = stop_tx.send(true);
            anyhow::bail!("stepped down as the leader of the tenant ({reason}); start again to be the standby");
        }
    };
    let _ = stop_tx.send(true);
    if let (Some(listener), Some(click), Some(client)) = (&config.listener, &config.click_to_call, &client) {
        if click.bind_events && click.mode == ClickMode::Handler {
            events::unbind(client, listener).await;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            warn!(error = %e, "a task ended abnormally");
        }
    }
    lease.resign().await;
    for hook in shared.hooks.enabled() {
        let stats = shared.hooks.stats(hook);
        info!(
            hook = hook.as_str(),
            calls = stats.calls,
            applied = stats.applied,
            cancelled = stats.cancelled,
            failed = stats.failed,
            last_failure = stats.last_failure.as_deref().unwrap_or(""),
            "customization hook counters"
        );
    }
    result
}

/// The admin UI while this instance is the standby: `/status` and the pages read the shared store and say who
/// leads. It stops when this instance takes over (the full UI starts then).
async fn standby_admin_ui(ui: anyhow::Result<web::Web>, listen: String, mut stop: watch::Receiver<bool>) {
    let ui = match ui {
        Ok(ui) => ui,
        Err(e) => return error!(error = %e, "the admin UI cannot start"),
    };
    let listener = match std::net::TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => return error!(listen = %listen, error = %e, "the admin UI cannot listen; set [web] listen"),
    };
    info!(listen = %listen, "admin UI listening (standby)");
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    // Rendering pages never sits on the threads that pop cards.
    if let Err(e) = web::serve_apart(listener, ui, stopped).await {
        error!(error = %e, "the admin UI stopped");
    }
}

/// Starts the HTTP listener once, when it has something to serve.
fn serve_listener(
    tasks: &mut tokio::task::JoinSet<()>,
    settings: &crate::config::ListenerSettings,
    endpoints: &mut listener::Endpoints,
    stop: &watch::Receiver<bool>,
) {
    if endpoints.events.is_none() && endpoints.amocrm_clicks.is_none() && endpoints.autodistribution.is_none() {
        return;
    }
    let serving = std::mem::take(endpoints);
    tasks.spawn(log_failure(
        "HTTP listener",
        listener::serve(settings.clone(), serving, stop.clone()),
    ));
}

/// Runs a task whose failure should be logged, not end the service.
async fn log_failure(what: &'static str, task: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(e) = task.await {
        tracing::error!(error = %format!("{e:#}"), "{what} stopped");
    }
}
