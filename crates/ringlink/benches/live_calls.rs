//! Memory of the release `ringlink run` holding many live calls. A scripted AMI server on loopback plays N calls
//! into the real binary — every tracker scenario in turn (direct, queues, IVR, transfers, parking, pickup, …),
//! renumbered, all starting within the same second and each stopped before its first hang-up — and ringlink
//! registers them in the Bitrix24 emulator (enterprise limits, so the outbox drains in seconds). Then the rest of
//! each call is played, the calls end and are finished. A second round of N new calls shows whether anything
//! grows. ringlink's resident memory (VmRSS) and peak (VmHWM) come from `/proc/<pid>/status`, each read once the
//! emulator has seen no request for 3 s.
//!
//! `cargo bench -p ringlink --bench live_calls` (N = 1,000; `RINGLINK_BENCH_LIVE_CALLS` to change it). Targets:
//! ≤ 30 MB idle after start, ≤ 100 MB with 1,000 live calls, no growth from one round to the next.

#![allow(dead_code)]

#[path = "../../tracker/tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/process.rs"]
mod process;
#[path = "../../tracker/tests/scenarios/scripts.rs"]
mod scripts;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ami::{AmiCodec, Frame, Message};
use b24emu::{Emulator, EmulatorConfig};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(60);

/// The calls of one round, cut at each call's first hang-up: what keeps them live, and the rest.
struct Round {
    live: Vec<Message>,
    ends: Vec<Message>,
}

/// Calls `first..first + n`, each renumbered apart from the others, interleaved by their timestamps as the PBX
/// would emit them.
fn round(first: usize, n: usize) -> Round {
    let (mut live, mut ends) = (Vec::new(), Vec::new());
    for i in first..first + n {
        common::set_id_base((i as u64) * 100);
        let script = scripts::by_index(i);
        let messages = &script.pbx.messages;
        let cut = messages
            .iter()
            .position(|m| matches!(m.event_name(), Some("Hangup" | "HangupRequest" | "SoftHangupRequest")))
            .unwrap_or(messages.len());
        let stamp = |m: &Message| {
            m.get("Timestamp")
                .and_then(tracker::Timestamp::parse_ami)
                .map_or(0, |t| t.as_micros())
        };
        for (k, m) in messages.iter().enumerate() {
            let tagged = (stamp(m), i, k, m.clone());
            if k < cut {
                live.push(tagged);
            } else {
                ends.push(tagged);
            }
        }
    }
    common::set_id_base(0);
    let order = |mut v: Vec<(i64, usize, usize, Message)>| {
        v.sort_by_key(|(at, call, k, _)| (*at, *call, *k));
        v.into_iter().map(|(_, _, _, m)| m).collect()
    };
    Round {
        live: order(live),
        ends: order(ends),
    }
}

/// Where the scripted AMI sends events: the logged-in session, once ringlink has connected.
type Feed = Arc<Mutex<Option<mpsc::UnboundedSender<Vec<Message>>>>>;

/// An AMI server that answers what ringlink asks at start (login, an empty channel list, pings) and sends
/// whatever is fed to it as events.
async fn scripted_ami() -> (String, Feed) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    let feed: Feed = Arc::default();
    let sessions = feed.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(session(socket, sessions.clone()));
        }
    });
    (addr, feed)
}

async fn session(socket: TcpStream, feed: Feed) {
    let mut framed = Framed::new(socket, AmiCodec::without_banner());
    if framed.get_mut().try_write(b"Asterisk Call Manager/10.0.0\r\n").is_err() {
        return;
    }
    let (tx, mut events) = mpsc::unbounded_channel::<Vec<Message>>();
    loop {
        tokio::select! {
            batch = events.recv() => {
                let Some(batch) = batch else { return };
                for m in batch {
                    if framed.feed(m).await.is_err() {
                        return;
                    }
                }
                if SinkExt::<Message>::flush(&mut framed).await.is_err() {
                    return;
                }
            }
            frame = framed.next() => {
                let Some(Ok(Frame::Message(m))) = frame else { return };
                let id = m.action_id().unwrap_or("").to_owned();
                let reply = |pairs: &[(&str, &str)]| {
                    let mut r = Message::new();
                    for (k, v) in pairs {
                        r.push(k, *v);
                    }
                    r.push("ActionID", id.clone());
                    r
                };
                let answer = match m.get("Action").unwrap_or("").to_ascii_lowercase().as_str() {
                    "challenge" => vec![reply(&[("Response", "Success"), ("Challenge", "1234")])],
                    "login" => {
                        *feed.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
                        vec![
                            reply(&[("Response", "Success"), ("Message", "Authentication accepted")]),
                            Message::new().with("Event", "FullyBooted").with("Status", "Fully Booted"),
                        ]
                    }
                    "ping" => vec![reply(&[("Response", "Success"), ("Ping", "Pong")])],
                    "coreshowchannels" => vec![
                        reply(&[("Response", "Success"), ("EventList", "start"), ("Message", "follows")]),
                        reply(&[
                            ("Event", "CoreShowChannelsComplete"),
                            ("EventList", "Complete"),
                            ("ListItems", "0"),
                        ]),
                    ],
                    "coresettings" => vec![reply(&[("Response", "Success"), ("AsteriskVersion", "22.10.1")])],
                    "getvar" => vec![reply(&[("Response", "Success"), ("Value", "")])],
                    "logoff" => {
                        let _ = framed.send(reply(&[("Response", "Goodbye")])).await;
                        return;
                    }
                    _ => vec![reply(&[("Response", "Success")])],
                };
                for a in answer {
                    if framed.send(a).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in MB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// Waits until the emulator has seen no request for `quiet` (or `limit` passed); how long that took.
async fn settle(emu: &Emulator, quiet: Duration, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut seen = emu.requests().len();
    let mut since = Instant::now();
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = emu.requests().len();
        if now != seen {
            seen = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    started.elapsed().saturating_sub(quiet)
}

fn count(emu: &Emulator, method: &str) -> usize {
    emu.requests_for(method).iter().filter(|r| r.is_ok()).count()
}

fn config(dir: &std::path::Path, ami: &str, emu: &Emulator) -> String {
    format!(
        r#"{ami}
[bitrix24]
webhook_url = "{webhook}"
plan = "enterprise"

[store]
path = "{store}"

[web]
listen = "127.0.0.1:0"

{tracker}
"#,
        ami = process::ami_section(ami, "ringlink", "bench"),
        webhook = emu.webhook_url(),
        store = dir.join("ringlink.db").display(),
        tracker = process::testbed_tracker_config(),
    )
}

async fn wait_log(log: &std::path::Path, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).unwrap_or_default().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "ringlink never logged {needle:?}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("RINGLINK_BENCH_LIVE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut emu_config = EmulatorConfig::default();
    emu_config.limits.bucket_capacity = 250;
    emu_config.limits.bucket_drain_per_sec = 5.0;
    let emu = Emulator::start(emu_config).await.expect("emulator");
    let (ami, feed) = scripted_ami().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (config_path, log) = (dir.path().join("ringlink.toml"), dir.path().join("ringlink.log"));
    std::fs::write(&config_path, config(dir.path(), &ami, &emu)).expect("write config");
    // Killed when dropped, a failed run included.
    let ringlink = process::Ringlink(Some(process::spawn(&config_path, &log)));
    let pid = ringlink.0.as_ref().map_or(0, std::process::Child::id);
    wait_log(&log, "live calls resynchronised").await;
    wait_log(&log, "users directory refreshed").await;
    settle(&emu, Duration::from_secs(3), WAIT).await;
    let sender = feed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("ringlink logged in");

    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("== ringlink's memory with {n} live calls (every tracker scenario in turn), {build} binary ==");
    let (idle, _) = memory(pid);
    println!("  idle after start: RSS {idle:.1} MB");
    let mut rows = Vec::new();
    for r in 0..2 {
        let calls = round(r * n, n);
        let (registers, finishes) = (
            count(&emu, "telephony.externalcall.register"),
            count(&emu, "telephony.externalcall.finish"),
        );
        sender.send(calls.live).expect("AMI session open");
        let drained = settle(&emu, Duration::from_secs(3), Duration::from_secs(600)).await;
        let (live, live_peak) = memory(pid);
        let registered = count(&emu, "telephony.externalcall.register") - registers;
        println!(
            "  round {}: {n} calls live — {registered} registered in {:.1} s; RSS {live:.1} MB (peak so far {live_peak:.1} MB)",
            r + 1,
            drained.as_secs_f64()
        );
        sender.send(calls.ends).expect("AMI session open");
        let drained = settle(&emu, Duration::from_secs(3), Duration::from_secs(600)).await;
        let (ended, peak) = memory(pid);
        let finished = count(&emu, "telephony.externalcall.finish") - finishes;
        println!(
            "  round {}: calls ended — {finished} finished in {:.1} s; RSS {ended:.1} MB (peak so far {peak:.1} MB)",
            r + 1,
            drained.as_secs_f64()
        );
        rows.push((live, ended, peak));
    }
    let per_call_kb = (rows[0].0 - idle) * 1024.0 / n as f64;
    println!("  per live call: {per_call_kb:.1} kB (round 1's RSS with live calls minus idle, over {n})");
    println!(
        "  growth from round 1 to round 2: live {:+.1} MB, ended {:+.1} MB",
        rows[1].0 - rows[0].0,
        rows[1].1 - rows[0].1
    );
    drop(ringlink);
    emu.shutdown().await;
}
