//! `ringlink demo`: the lab PBX (the test bed's Asterisk 22 with SIPp phones), the Bitrix24 emulator with a few
//! users, and ringlink's service between them (the same code as `ringlink run`, admin UI included), then a varied
//! stream of calls, each narrated from what the emulator recorded. Ctrl-C or SIGTERM stops everything it started.

mod narrate;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;

/// The calls of one round: the test bed's scenario and what it shows.
const ROUND: &[(&str, &str)] = &[
    ("s1", "a client calls the office line; 101 (Anna) rings and answers"),
    (
        "s3",
        "a client calls the ringall queue; 101, 102 and 103 ring at once, 102 (Boris) answers",
    ),
    ("s2", "a client calls 101 and nobody answers: a missed call"),
    (
        "s4",
        "a client calls the one-by-one queue: 101, then 102 ring out, 103 (Vera) answers",
    ),
    ("s10", "101 (Anna) answers, then transfers the client to 102 (Boris)"),
    ("s7", "101 (Anna) calls the client (outgoing)"),
];

/// The admin UI's password in the demo (its store is thrown away at the end).
const UI_PASSWORD: &str = "ringlink-demo";

/// The test bed's office: trunk `carrier` with its DID, extensions 101–105.
const OFFICE: &str = include_str!("../../../../testbed/ringlink.toml");

pub struct Options {
    /// Calls to place (ignored with `forever`: until stopped).
    pub calls: usize,
    pub forever: bool,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("ringlink-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // A signal at any time: the running step finishes or is abandoned, then everything started is stopped.
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let result = run_in(&dir, options, started, stop_rx).await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("ringlink demo: its log and store are kept in {}", dir.display()),
    }
    result
}

async fn run_in(dir: &Path, options: Options, started: Instant, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let root = std::env::var("RINGLINK_TESTBED_ROOT").unwrap_or_else(|_| testbed::DEFAULT_ROOT.to_owned());
    if Path::new(&root).join("usr/sbin/asterisk").exists() {
        say("starting the lab PBX: Asterisk 22 with five desk phones (101–105) and a carrier trunk, played by SIPp");
    } else {
        say(&format!(
            "building the lab PBX first (a Debian sid chroot with Asterisk 22 in {root}; about 2 minutes, once)"
        ));
    }
    let bed = testbed::TestBed::start()
        .await
        .context("cannot start the lab PBX (ringlink demo runs as root on Debian: it needs chroot and debootstrap)")?;
    let outcome = with_bed(&bed, dir, options, started, stop).await;
    say("stopping: ringlink, the emulator, Asterisk and the phones");
    let stopped = bed.stop().await.context("stopping the lab PBX");
    outcome.and(stopped)
}

async fn with_bed(
    bed: &testbed::TestBed,
    dir: &Path,
    options: Options,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let emu = b24emu::Emulator::start(b24emu::EmulatorConfig::default())
        .await
        .context("cannot start the Bitrix24 emulator")?;
    let web_port = free_port()?;
    let config_path = dir.join("ringlink.toml");
    let config = write_config(&config_path, bed, &emu, web_port)?;
    let logs = init_logging(&dir.join("ringlink.log"));
    set_ui_password(&config)?;
    let (service_stop_tx, mut service_stop_rx) = watch::channel(false);
    let service = tokio::spawn(crate::service::run_until(config, config_path, logs, async move {
        let _ = service_stop_rx.wait_for(|stopped| *stopped).await;
    }));
    let outcome = async {
        if !wait_ready(web_port, &mut stop).await? {
            return Ok(());
        }
        let users: Vec<String> = emu
            .state()
            .users
            .iter()
            .map(|u| format!("{} {} ({})", u.name, u.last_name, if u.uf_phone_inner.is_empty() { "no phone".to_owned() } else { format!("ext. {}", u.uf_phone_inner) }))
            .collect();
        say(&format!("Bitrix24 emulator up with users {}", users.join(", ")));
        say(&format!(
            "ringlink is following the PBX. Look at:\n    admin UI        http://127.0.0.1:{web_port}/   (password: {UI_PASSWORD})\n    card timeline   {}/_emu/timeline\n    emulator state  {}/_emu/state\n    ringlink log    {}",
            emu.base_url(),
            emu.base_url(),
            dir.join("ringlink.log").display()
        ));
        let mut watch = narrate::Watch::new(&emu, started);
        let mut placed = 0usize;
        while options.forever || placed < options.calls {
            let (scenario, story) = ROUND[placed % ROUND.len()];
            placed += 1;
            say(&format!("call {placed}: {story}"));
            let play = testbed::scenarios::play(bed, scenario);
            if !watch.follow(bed, play, &mut stop).await? {
                return Ok(());
            }
            if !watch.settle(&mut stop).await {
                return Ok(());
            }
        }
        say(&format!(
            "{placed} call(s) placed and narrated. The UI and the emulator stay up to look around; Ctrl-C stops everything."
        ));
        let _ = stop.wait_for(|stopped| *stopped).await;
        Ok(())
    }
    .await;
    let _ = service_stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(15), service).await {
        Ok(Ok(Err(e))) => eprintln!("ringlink demo: the service stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("ringlink demo: the service task failed: {e}"),
        Err(_) => eprintln!("ringlink demo: the service did not stop within 15 s"),
        Ok(Ok(Ok(()))) => {}
    }
    emu.shutdown().await;
    outcome
}

fn say(text: &str) {
    println!("{text}");
}

/// ringlink's config for the lab: the test bed's office, this instance's AMI, the emulator's webhook, the store and
/// log in `dir`, recordings read from the chroot, the admin UI on `web_port`.
fn write_config(path: &Path, bed: &testbed::TestBed, emu: &b24emu::Emulator, web_port: u16) -> anyhow::Result<Config> {
    let dir = path.parent().context("the config's directory")?;
    let tracker = &OFFICE[OFFICE
        .find("[tracker]")
        .context("testbed/ringlink.toml has a [tracker] section")?..];
    let root = bed.host_path("/");
    let text = format!(
        "[ami]\naddress = \"{ami}\"\nusername = \"{user}\"\nsecret = \"{secret}\"\n\n\
         [bitrix24]\nwebhook_url = \"{webhook}\"\n\n[store]\npath = \"{db}\"\n\n\
         [recordings]\nrewrite = [[\"/\", \"{root}/\"]]\nsettle_secs = 0.5\n\n\
         [engine.missed]\ndefault_user = 9\n\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n\n{tracker}",
        ami = bed.ami_addr(),
        user = bed.ami_user(),
        secret = bed.ami_secret(),
        webhook = emu.webhook_url(),
        db = dir.join("ringlink.db").display(),
        root = root.display().to_string().trim_end_matches('/'),
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Config::load(path, std::iter::empty())?)
}

/// The demo's UI opens with a known password instead of the first-run code.
fn set_ui_password(config: &Config) -> anyhow::Result<()> {
    let store = config.store.open()?;
    let hash = web::hash_password(UI_PASSWORD).map_err(anyhow::Error::msg)?;
    store.set_setting(
        web::PASSWORD_SETTING,
        &serde_json::Value::String(hash),
        store::Timestamp::now(),
    )?;
    Ok(())
}

/// The service's log to `path`, its last lines also kept for the admin UI's Logs page.
fn init_logging(path: &Path) -> web::LogBuffer {
    use tracing_subscriber::prelude::*;
    let buffer = web::LogBuffer::new(web::KEPT_LINES);
    let Ok(file) = std::fs::File::create(path) else {
        return buffer;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file)),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(buffer.clone()),
        )
        .try_init();
    buffer
}

/// Waits until ringlink follows the PBX (AMI connected) and knows the employees (users directory loaded), as its
/// `/status` says. False when stopped meanwhile.
async fn wait_ready(web_port: u16, stop: &mut watch::Receiver<bool>) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let url = format!("http://127.0.0.1:{web_port}/status");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if *stop.borrow() {
            return Ok(false);
        }
        if let Ok(answer) = http.get(&url).send().await {
            if let Ok(status) = answer.json::<serde_json::Value>().await {
                let connected = status["ami"]["connected"].as_bool() == Some(true);
                let extensions = status["users_cache"]["extensions"].as_u64().unwrap_or(0);
                if connected && extensions > 0 {
                    // The live-call resync follows the login at once.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Ok(true);
                }
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("ringlink did not connect to the lab PBX and the emulator within 60 s (see its log)");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => {}
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free port on 127.0.0.1 for the admin UI")?
        .port())
}
