//! `ringlink`: the Asterisk ⇄ Bitrix24 connector's command line.

mod cel;
mod check;
mod config;
mod demo;
mod hooks_cli;
mod originate;
mod replay;
mod service;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(name = "ringlink", version, about = "Connects an Asterisk PBX to Bitrix24")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector: follow calls on the AMI given in the config.
    Run {
        #[arg(long, short, default_value = "ringlink.toml")]
        config: PathBuf,
    },
    /// Validate a config file and try the AMI and Bitrix24 connections it describes.
    Check {
        #[arg(long, short, default_value = "ringlink.toml")]
        config: PathBuf,
    },
    /// A demonstration on this machine (as root): a lab Asterisk with phones, a Bitrix24 emulator and ringlink
    /// between them; places calls and tells what happens to each. Ctrl-C stops everything.
    Demo {
        /// How many calls to place (then stay up until Ctrl-C).
        #[arg(long, default_value_t = 6)]
        calls: usize,
        /// Place calls until Ctrl-C.
        #[arg(long, conflicts_with = "calls")]
        forever: bool,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a recorded AMI trace through the call tracker and print every ended call.
    Replay {
        /// A trace as `ringlink trace record` writes it (raw AMI bytes, CRLF or LF).
        trace: PathBuf,
        /// A ringlink config file; its `[tracker]` section (trunks, internal endpoints, numbers) is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "json")]
        format: replay::Format,
        /// Run the call-level customization hooks of this directory (need_registration, process_client_phone)
        /// on every ended call and show their answers; without it no hook runs.
        #[arg(long)]
        hooks: Option<PathBuf>,
    },
    /// Re-read the PBX's CEL for a period and register the calls that are missing (those already handled are
    /// left alone). Steps go to the store; the running service sends them (or the next start does).
    Reprocess {
        #[arg(long, short, default_value = "ringlink.toml")]
        config: PathBuf,
        /// Start of the period, in the PBX's zone (`[tracker] utc_offset`): `2026-11-22 09:00[:00]`, or an
        /// RFC 3339 instant.
        #[arg(long)]
        from: String,
        /// End of the period (default: now).
        #[arg(long)]
        to: Option<String>,
        /// List the calls and steps it would register; store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Customization hooks: which are found, and running one as the service would.
    Hooks {
        #[command(subcommand)]
        command: HooksCommand,
    },
    /// Record or inspect raw AMI traces.
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a complete, commented default configuration.
    Default {
        /// For the installed service: the store in /var/lib/ringlink (the file the Debian package installs as
        /// /etc/ringlink/ringlink.toml).
        #[arg(long)]
        service: bool,
    },
}

#[derive(Subcommand)]
enum HooksCommand {
    /// Every hook of the contract: found or not, on or off, mode, timeout.
    List {
        #[arg(long, short, default_value = "ringlink.toml")]
        config: PathBuf,
    },
    /// Run one hook on the JSON given on stdin (`{"params": …}`) and print its answer and what ringlink would
    /// send; exits non-zero when the answer could not be used.
    Run {
        /// The hook's name (seed names; old names such as process_phone_number are accepted).
        name: String,
        #[arg(long, short, default_value = "ringlink.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Save the raw AMI byte stream of a session (FILE) with arrival times (FILE.idx) until Ctrl-C or --seconds.
    Record {
        #[arg(long, short, default_value = "ringlink.toml")]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    limit_allocator_arenas();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringlink: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("ringlink: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// At most two glibc malloc arenas, before any thread starts. glibc gives a thread that meets contention an
/// arena of its own (up to 8 per core), and each arena keeps the memory freed in it: with the runtime's workers
/// and the store's blocking threads, a steady load left ~5.5 MB free but resident in arenas; with two, ~3 MB
/// (the sustained bench, 10 min at 5 calls/s: 1.9 MB less at the end, the same CPU). An admin's own
/// `MALLOC_ARENA_MAX` wins.
fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a tuning value of the allocator; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config: path } => {
            let config = load_config(&path)?;
            let logs = init_logging(&config);
            service::run(config, path, logs).await
        }
        Command::Demo { calls, forever } => demo::run(demo::Options { calls, forever }).await,
        Command::Check { config } => {
            let problems = check::run(&config).await;
            if problems > 0 {
                anyhow::bail!("{problems} problem(s) found");
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Default { service },
        } => {
            if service {
                print!("{}", config::service_default_config());
            } else {
                print!("{}", config::DEFAULT_CONFIG);
            }
            Ok(())
        }
        Command::Replay {
            trace,
            config,
            format,
            hooks,
        } => {
            let bytes = std::fs::read(&trace).with_context(|| format!("cannot read trace {}", trace.display()))?;
            let arrivals = replay::read_arrivals(&trace)?;
            let tracker_config = replay::tracker_config(config.as_deref())?;
            let mut call_hooks = match hooks {
                None => None,
                Some(dir) => {
                    let mut settings = replay::hooks_config(config.as_deref())?;
                    settings.dir = Some(dir);
                    let runner = hooks::Hooks::discover(&settings)?;
                    let handle = tokio::runtime::Handle::current();
                    Some(move |call: &tracker::CallFull| {
                        tokio::task::block_in_place(|| handle.block_on(hooks_cli::on_ended_call(&runner, call)))
                    })
                }
            };
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let summary = replay::replay(
                &bytes,
                arrivals.as_deref(),
                &trace.display().to_string(),
                tracker_config,
                replay::Show {
                    format,
                    hooks: call_hooks.as_mut().map(|h| h as replay::CallHooks<'_>),
                },
                &mut stdout.lock(),
                &mut stderr.lock(),
            )?;
            eprintln!(
                "{}: {} messages, {} calls ended, {} still live at the end, {} input errors",
                trace.display(),
                summary.messages,
                summary.calls_ended,
                summary.calls_unfinished,
                summary.input_errors
            );
            if summary.input_errors > 0 {
                anyhow::bail!("{} part(s) of the trace could not be decoded", summary.input_errors);
            }
            Ok(())
        }
        Command::Reprocess {
            config,
            from,
            to,
            dry_run,
        } => {
            let config = load_config(&config)?;
            reprocess(&config, &from, to.as_deref(), dry_run)
        }
        Command::Hooks {
            command: HooksCommand::List { config },
        } => {
            let config = load_config(&config)?;
            hooks_cli::list(&config.hooks, &mut std::io::stdout().lock())
        }
        Command::Hooks {
            command: HooksCommand::Run { name, config },
        } => {
            let config = load_config(&config)?;
            let input = hooks_cli::read_stdin()?;
            let mut out = Vec::new();
            let usable = hooks_cli::run(&config.hooks, &name, &input, &mut out).await;
            std::io::stdout().write_all(&out)?;
            if !usable? {
                anyhow::bail!("the hook's answer cannot be used; the service would send the un-customized params");
            }
            Ok(())
        }
        Command::Trace {
            command: TraceCommand::Record { config, out, seconds },
        } => {
            let config = load_config(&config)?;
            init_logging(&config);
            record(config, out, seconds).await
        }
    }
}

/// `ringlink reprocess`: the CEL recovery of the service, for a period the admin names.
fn reprocess(config: &Config, from: &str, to: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    let Some(cel) = &config.cel else {
        anyhow::bail!(
            "no [cel] section: name the database Asterisk writes its CEL to (see the README, \"Calls missed while \
             ringlink was down\")"
        );
    };
    let zone = tracker::LocalClock::parse_offset(&config.tracker.utc_offset)
        .context("[tracker] utc_offset is not a fixed offset such as \"+03:00\"")?;
    let instant = |text: &str| {
        let text = text.trim();
        let with_seconds = if text.len() == 16 {
            format!("{text}:00")
        } else {
            text.to_owned()
        };
        tracker::cel::parse_event_time(&with_seconds, zone).with_context(|| {
            format!("{text:?} is not a time: write it as 2026-11-22 09:00 (the PBX's zone) or 2026-11-22T06:00:00Z")
        })
    };
    let now = tracker::Timestamp::from_micros(store::Timestamp::now().as_micros());
    let from = instant(from)?;
    let to = match to {
        Some(to) => instant(to)?,
        None => now,
    };
    if to < from {
        anyhow::bail!("--to is before --from");
    }
    let store = config.store.open()?;
    let users = store
        .users()?
        .iter()
        .map(service::users::directory_user)
        .collect::<Vec<_>>();
    if users.is_empty() {
        warn!("the store has no users directory yet (ringlink never ran against Bitrix24): calls go to the default responsible");
    }
    let recovery = cel::recover(
        store.as_ref(),
        cel::RecoveryInput {
            cel,
            tracker: &config.tracker,
            engine: &config.engine,
            crm: config.engine_crm(),
            recordings: &config.recordings,
            users,
            live: Default::default(),
            from,
            to,
            now,
            dry_run,
            only: None,
            verdict: None,
        },
    )?;
    let mut out = std::io::stdout().lock();
    for call in &recovery.calls {
        writeln!(
            out,
            "{}{}",
            if dry_run { "would register: " } else { "registered: " },
            cel::describe(call)
        )?;
    }
    writeln!(
        out,
        "{} CEL rows, {} calls ended, {} already handled, {} {}",
        recovery.stats.rows,
        recovery.stats.calls_ended,
        recovery.already_handled,
        recovery.calls.len(),
        if dry_run {
            "would be registered (dry run: nothing stored)"
        } else {
            "registered (steps stored; the service sends them)"
        }
    )?;
    Ok(())
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path, config::env_overrides())?)
}

/// Logs to stderr (text or JSON) and keeps the last lines in memory for the admin UI.
fn init_logging(config: &Config) -> web::LogBuffer {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGLINK_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let buffer = web::LogBuffer::new(web::KEPT_LINES);
    let kept = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(buffer.clone());
    let registry = tracing_subscriber::registry().with(filter).with(kept);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => registry.with(stderr.json()).try_init(),
        LogFormat::Text => registry.with(stderr).try_init(),
    };
    buffer
}

/// Resolves on Ctrl-C or SIGTERM (systemd's stop).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Connects at start-up, waiting for an AMI that is not up yet; a refused login or a wrong server is fatal.
pub(crate) async fn connect_with_retry(cfg: &ami::ClientConfig) -> anyhow::Result<Option<(ami::Client, ami::Events)>> {
    let mut delay = Duration::from_millis(500);
    loop {
        match ami::connect(cfg.clone()).await {
            Ok(pair) => return Ok(Some(pair)),
            Err(e @ (ami::Error::Connect { .. } | ami::Error::Timeout { .. } | ami::Error::Disconnected { .. })) => {
                warn!(error = %e, retry_in = ?delay, "AMI not reachable yet");
            }
            Err(e) => return Err(e).context("cannot log in to AMI; check [ami] in the config"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown_signal() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn record(config: Config, out: PathBuf, seconds: Option<f64>) -> anyhow::Result<()> {
    let limit = match seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--seconds must be a positive number, got {s}"),
        None => None,
    };
    let stop = async move {
        match limit {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown_signal() => {}
                }
            }
            None => shutdown_signal().await,
        }
    };
    info!(out = %out.display(), "recording AMI trace");
    let summary = ami::trace::record(&config.ami_client(), &out, stop)
        .await
        .with_context(|| format!("recording into {}", out.display()))?;
    info!(
        bytes = summary.bytes,
        messages = summary.messages,
        events = summary.events,
        "trace saved"
    );
    Ok(())
}
