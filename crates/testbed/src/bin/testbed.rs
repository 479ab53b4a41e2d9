//! `testbed`: run the real-Asterisk test bed by hand.
//!
//!   testbed up                                   start a PBX, print AMI details, run until Ctrl-C
//!   testbed call incoming --from +79001234567 --answer 101 --talk 5
//!   testbed scenario s3                          play scenarios (all when none given)
//!   testbed list                                 list the scenarios
//!   testbed build                                build the Asterisk chroot only
//!   testbed bench-startup --runs 5               time start-up and shutdown of an instance
//!   testbed record-scenarios --out DIR [IDS...]  record each scenario's raw AMI session as DIR/<id>.ami

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use testbed::{scenarios, Route, TestBed, CLIENT};

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "A real Asterisk 22 office PBX with SIPp phones, on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start an instance and keep it running until Ctrl-C.
    Up {
        /// Register these phones, answering after 2 s (e.g. --phones 101,102).
        #[arg(long, value_delimiter = ',')]
        phones: Vec<u16>,
    },
    /// Place one call on a fresh instance.
    Call {
        #[command(subcommand)]
        kind: CallKind,
    },
    /// Play scenarios (all when none is named) on one fresh instance.
    Scenario { ids: Vec<String> },
    /// List the scenarios.
    List,
    /// Build (or check) the Asterisk chroot.
    Build,
    /// Measure how long an instance takes to start (and stop), N times.
    BenchStartup {
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// Record the raw AMI session of each scenario (all when none is named)
    /// into OUT/<id>.ami and OUT/<id>.ami.idx.
    RecordScenarios {
        #[arg(long)]
        out: std::path::PathBuf,
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CallKind {
    /// A client calls the DID through the carrier.
    Incoming {
        #[arg(long, default_value = CLIENT)]
        from: String,
        /// Phone that answers (the call is routed to it).
        #[arg(long, default_value_t = 101)]
        answer: u16,
        /// Seconds the phone rings before answering.
        #[arg(long, default_value_t = 2)]
        ring: u64,
        /// Seconds of talk before the client hangs up.
        #[arg(long, default_value_t = 5)]
        talk: u64,
    },
    /// A phone calls a number out through the carrier.
    Outgoing {
        #[arg(long, default_value_t = 101)]
        from: u16,
        #[arg(long, default_value = "979001234567")]
        to: String,
        /// Seconds the far end rings before answering.
        #[arg(long, default_value_t = 2)]
        ring: u64,
        #[arg(long, default_value_t = 5)]
        talk: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for s in scenarios::ALL {
                println!("{:<12} {}", s.id, s.summary);
            }
            Ok(())
        }
        Command::Build => {
            let root = std::env::var("RINGLINK_TESTBED_ROOT").unwrap_or_else(|_| testbed::DEFAULT_ROOT.to_owned());
            testbed::build_chroot(std::path::Path::new(&root)).await?;
            println!("chroot ready at {root}");
            Ok(())
        }
        Command::Up { phones } => up(phones).await,
        Command::Call { kind } => call(kind).await,
        Command::Scenario { ids } => play(ids).await,
        Command::RecordScenarios { out, ids } => record(out, ids).await,
        Command::BenchStartup { runs } => bench_startup(runs).await,
    }
}

async fn start() -> anyhow::Result<TestBed> {
    let bed = TestBed::start().await.context("starting the test bed")?;
    println!("Asterisk up in {:?} (slot {})", bed.startup_time(), bed.slot());
    println!(
        "AMI        {}  user {}  secret {}",
        bed.ami_addr(),
        bed.ami_user(),
        bed.ami_secret()
    );
    println!("AMI (MD5)  user {}  secret {}", bed.md5_user(), bed.md5_secret());
    println!(
        "SIP        {}  carrier {}  DID {}",
        bed.sip_addr(),
        bed.carrier_ip(),
        bed.did()
    );
    println!("recordings {}", bed.recordings_dir().display());
    println!("instance   {}", bed.instance_dir().display());
    Ok(bed)
}

async fn up(phones: Vec<u16>) -> anyhow::Result<()> {
    let bed = start().await?;
    for ext in phones {
        bed.phone(ext).answer_after(Duration::from_secs(2)).await?;
        println!("phone {ext} registered from {}", bed.phone_ip(ext)?);
    }
    println!("running; Ctrl-C (or SIGTERM) stops it");
    // SIGTERM too: `kill` or a supervisor must not leave an orphaned Asterisk behind.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    bed.stop().await?;
    Ok(())
}

async fn call(kind: CallKind) -> anyhow::Result<()> {
    let bed = start().await?;
    let result = async {
        match kind {
            CallKind::Incoming {
                from,
                answer,
                ring,
                talk,
            } => {
                bed.route_incoming(Route::Extension(answer)).await?;
                bed.phone(answer).answer_after(Duration::from_secs(ring)).await?;
                let mut call = bed.incoming(&from).talk(Duration::from_secs(talk)).await?;
                let outcomes = call.finished(Duration::from_secs(ring + talk + 60)).await?;
                println!(
                    "client saw {outcomes:?}; phone {answer} saw {:?}",
                    bed.phone_outcomes(answer)
                );
            }
            CallKind::Outgoing { from, to, ring, talk } => {
                bed.carrier().answer_after(Duration::from_secs(ring)).await?;
                bed.phone(from).answer_after(Duration::from_secs(1)).await?;
                let mut call = bed.dial(from, &to).talk(Duration::from_secs(talk)).await?;
                let outcomes = call.finished(Duration::from_secs(ring + talk + 60)).await?;
                println!(
                    "phone {from} saw {outcomes:?}; far end saw {:?}",
                    bed.carrier_outcomes()
                );
            }
        }
        bed.wait_all_channels_gone(Duration::from_secs(15)).await?;
        println!("recordings: {:?}", bed.recordings());
        anyhow::Ok(())
    }
    .await;
    bed.stop().await?;
    result
}

fn scenario_ids(ids: Vec<String>) -> Vec<String> {
    if ids.is_empty() {
        scenarios::ALL.iter().map(|s| s.id.to_owned()).collect()
    } else {
        ids
    }
}

async fn play(ids: Vec<String>) -> anyhow::Result<()> {
    let bed = start().await?;
    let ids = scenario_ids(ids);
    let mut failed = 0;
    for id in &ids {
        let started = std::time::Instant::now();
        match scenarios::play(&bed, id).await {
            Ok(()) => println!("{id:<12} ok      {:.1} s", started.elapsed().as_secs_f64()),
            Err(e) => {
                failed += 1;
                println!("{id:<12} FAILED  {e}");
            }
        }
    }
    bed.stop().await?;
    anyhow::ensure!(failed == 0, "{failed} of {} scenarios failed", ids.len());
    Ok(())
}

/// Events that follow the last hangup (CEL LINKEDID_END, Cdr) need a moment.
const TRAILING_EVENTS: Duration = Duration::from_millis(1500);

async fn record(out: std::path::PathBuf, ids: Vec<String>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let bed = start().await?;
    let ids = scenario_ids(ids);
    let mut failed = 0;
    for id in &ids {
        match record_one(&bed, &out, id).await {
            Ok(summary) => println!(
                "{id:<12} recorded {} bytes, {} events -> {}",
                summary.bytes,
                summary.events,
                out.join(format!("{id}.ami")).display()
            ),
            Err(e) => {
                failed += 1;
                println!("{id:<12} FAILED  {e:#}");
            }
        }
    }
    bed.stop().await?;
    anyhow::ensure!(failed == 0, "{failed} of {} scenarios failed", ids.len());
    Ok(())
}

async fn record_one(bed: &TestBed, out: &std::path::Path, id: &str) -> anyhow::Result<ami::trace::RecordSummary> {
    bed.reset().await?;
    let path = out.join(format!("{id}.ami"));
    let config = ami::ClientConfig::new(bed.ami_addr().to_string(), bed.ami_user(), bed.ami_secret());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let recorder = {
        let path = path.clone();
        tokio::spawn(async move {
            ami::trace::record(&config, &path, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    // The recorder is logged in once Asterisk lists its manager session.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let connected = bed.asterisk_cli("manager show connected").await?;
        if connected
            .lines()
            .any(|l| l.split_whitespace().next() == Some(bed.ami_user()))
        {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "AMI recorder did not log in");
        anyhow::ensure!(!recorder.is_finished(), "AMI recorder stopped before the scenario");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let played = scenarios::play_prepared(bed, id).await;
    tokio::time::sleep(TRAILING_EVENTS).await;
    let _ = stop_tx.send(());
    let summary = recorder.await.context("AMI recorder task")?;
    if let Err(e) = played {
        // A trace of a scenario that did not play as specified is no golden trace.
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(ami::trace::index_path(&path));
        return Err(e.into());
    }
    Ok(summary?)
}

async fn bench_startup(runs: u32) -> anyhow::Result<()> {
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for run in 1..=runs {
        let started = std::time::Instant::now();
        let bed = TestBed::start().await.context("starting the test bed")?;
        let start = started.elapsed();
        let stopping = std::time::Instant::now();
        bed.stop().await?;
        let stop = stopping.elapsed();
        println!(
            "run {run}: start {:.3} s, stop {:.3} s",
            start.as_secs_f64(),
            stop.as_secs_f64()
        );
        starts.push(start);
        stops.push(stop);
    }
    starts.sort();
    stops.sort();
    let median = |v: &[Duration]| v[v.len() / 2].as_secs_f64();
    println!(
        "start: min {:.3} s, median {:.3} s, max {:.3} s; stop: median {:.3} s",
        starts[0].as_secs_f64(),
        median(&starts),
        starts[starts.len() - 1].as_secs_f64(),
        median(&stops)
    );
    Ok(())
}
