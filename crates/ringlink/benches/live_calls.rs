//! Memory of the release `ringlink run` holding many live calls. A scripted AMI server on loopback plays N calls
//! into the real binary — every tracker scenario in turn (direct, queues, IVR, transfers, parking, pickup, …),
//! renumbered, all starting within the same second and each stopped before its first hang-up — and ringlink
//! registers them in the Bitrix24 emulator (enterprise limits, so the outbox drains in seconds). Then the rest of
//! each call is played, the calls end and are finished, their recordings (small WAV files the bench writes where
//! the calls say MixMonitor put them) attached. Further rounds of N new calls show whether anything grows.
//! ringlink's resident memory (VmRSS) and peak (VmHWM) come from `/proc/<pid>/status`, each read once the
//! emulator has seen no request for 3 s; after each round the bench prints ringlink's last `service state` log
//! line (how many calls, channels and remembered keys the tracker and engine hold).
//!
//! The `cards` part: 100 calls (`RINGLINK_BENCH_CARD_CALLS`) start ringing within one second, at an even pace;
//! for each, the time from sending its `DialBegin` to the request popping its card (a register with `SHOW=1` or
//! a show) arriving at the emulator, p50/p99/max. Target: p99 ≤ 50 ms.
//!
//! The store is SQLite, or with `RINGLINK_BENCH_STORE=postgresql` a throwaway PostgreSQL server of the test bed
//! (`testbed::postgres`, `fsync` on as in production, ringlink leading its tenant), to compare the two.
//!
//! `cargo bench -p ringlink --bench live_calls` (both parts; `-- memory` or `-- cards` for one). N = 1,000 and
//! 4 rounds; `RINGLINK_BENCH_LIVE_CALLS` and `RINGLINK_BENCH_ROUNDS` change them; `RINGLINK_BENCH_LOG=<file>` keeps
//! ringlink's log (its debug `outbox round` lines time each round's claim, decide, send and record). Targets: ≤ 30 MB idle after
//! start, ≤ 100 MB with 1,000 live calls, no growth from one round to the next.

#![allow(dead_code)]

#[path = "../../tracker/tests/common/mod.rs"]
mod common;
#[path = "../tests/e2e/process.rs"]
mod process;
#[path = "../../tracker/tests/scenarios/scripts.rs"]
mod scripts;

use std::collections::HashMap;
use std::path::Path;
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

/// Where the scripted calls' recordings are, as the PBX names them; ringlink reads them under the bench's
/// directory (`[recordings] rewrite`).
const PBX_MONITOR: &str = "/var/spool/asterisk/monitor/";

/// The recordings `messages` name, written under `monitor` as small WAV files (a header and a tenth of a second
/// of silence), so that each call's recording is attached as on a real PBX rather than retried as missing.
fn write_recordings(messages: &[Message], monitor: &Path) {
    // 16-bit mono PCM at 8 kHz: 1,600 bytes of samples.
    let data: u32 = 1600;
    let mut wav = Vec::with_capacity(44 + data as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    wav.resize(44 + data as usize, 0);
    for m in messages {
        for (_, value) in m.iter() {
            if let Some(name) = value.strip_prefix(PBX_MONITOR) {
                let file = monitor.join(name);
                if !file.exists() {
                    std::fs::write(&file, &wav).expect("write a recording");
                }
            }
        }
    }
}

/// A message's `Timestamp` (as the PBX stamps events), in microseconds.
fn stamp(m: &Message) -> i64 {
    m.get("Timestamp")
        .and_then(tracker::Timestamp::parse_ami)
        .map_or(0, |t| t.as_micros())
}

/// The scripts are timed in 2023: their events are moved forward in time so that the earliest of `messages`
/// (the latest, with `latest_now`) happens now — but never by less than `floor`, so that a call's later events
/// stay after its earlier ones — as a PBX would stamp them; ringlink then times calls, idle expiry included, as
/// it would live. Returns the shift.
fn restamp(messages: &mut [Message], floor: i64, latest_now: bool) -> i64 {
    let now = chrono::Utc::now().timestamp_micros();
    let stamps = messages.iter().map(stamp).filter(|t| *t > 0);
    let anchor = if latest_now { stamps.max() } else { stamps.min() }.unwrap_or(now);
    let shift = (now - anchor).max(floor);
    for m in messages.iter_mut().filter(|m| stamp(m) > 0) {
        let at = stamp(m) + shift;
        m.set(
            "Timestamp",
            format!("{}.{:06}", at.div_euclid(1_000_000), at.rem_euclid(1_000_000)),
        );
    }
    shift
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

/// One call of the card-pop part: its events up to its first `DialBegin` (a phone starts ringing), the rest,
/// and the channel ids that name it (the register's `EXTERNAL_CALL_ID` is its call key).
struct Ringing {
    until_ringing: Vec<Message>,
    rest: Vec<Message>,
    ids: Vec<String>,
}

/// Call `i`, renumbered, cut right after its first `DialBegin`.
fn ringing_call(i: usize) -> Ringing {
    common::set_id_base((i as u64) * 100);
    let script = scripts::by_index(i);
    common::set_id_base(0);
    let messages = &script.pbx.messages;
    let cut = messages
        .iter()
        .position(|m| m.event_name() == Some("DialBegin"))
        .map_or(messages.len(), |at| at + 1);
    let mut ids: Vec<String> = messages
        .iter()
        .flat_map(|m| [m.get("Uniqueid"), m.get("Linkedid")])
        .flatten()
        .map(str::to_owned)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ringing {
        until_ringing: messages[..cut].to_vec(),
        rest: messages[cut..].to_vec(),
        ids,
    }
}

/// The card pop of `calls` calls ringing within one second: each call's events up to its first `DialBegin` are
/// sent at an even pace; its card pop is the time from that send to the first request showing its card (a
/// register with `SHOW=1`, or a show of its registration) arriving at the emulator. Then the calls end.
async fn card_pop(emu: &Emulator, sender: &mpsc::UnboundedSender<Vec<Message>>, calls: usize, monitor: &Path) {
    let first = 100_000;
    let mut ringing: Vec<Ringing> = (first..first + calls).map(ringing_call).collect();
    for call in &ringing {
        write_recordings(&call.until_ringing, monitor);
        write_recordings(&call.rest, monitor);
    }
    let seen = emu.requests().len();
    let pace = Duration::from_secs(1) / u32::try_from(calls.max(1)).unwrap_or(u32::MAX);
    let started = tokio::time::Instant::now();
    let mut sent_at = Vec::with_capacity(calls);
    let mut shifts = Vec::with_capacity(calls);
    for (k, call) in ringing.iter_mut().enumerate() {
        tokio::time::sleep_until(started + pace * u32::try_from(k).unwrap_or(0)).await;
        sent_at.push(chrono::Utc::now());
        shifts.push(restamp(&mut call.until_ringing, 0, true));
        sender.send(call.until_ringing.clone()).expect("AMI session open");
    }
    settle(emu, Duration::from_secs(3), Duration::from_secs(120)).await;
    let requests: Vec<_> = emu.requests().into_iter().skip(seen).filter(|r| r.is_ok()).collect();
    let call_of_id: HashMap<&str, usize> = ringing
        .iter()
        .enumerate()
        .flat_map(|(k, call)| call.ids.iter().map(move |id| (id.as_str(), k)))
        .collect();
    let call_of_external = |external: &str| {
        let key = match external.rsplit_once('-') {
            Some((key, n)) if n.chars().all(|c| c.is_ascii_digit()) => key,
            _ => external,
        };
        call_of_id.get(key).copied()
    };
    // Bitrix24's CALL_ID of each registration → the call it belongs to.
    let mut call_of_registration: HashMap<String, usize> = HashMap::new();
    let mut popped: HashMap<usize, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for r in &requests {
        let call = match r.method.as_str() {
            "telephony.externalcall.register" => {
                let Some(call) = r.param_str("EXTERNAL_CALL_ID").as_deref().and_then(call_of_external) else {
                    continue;
                };
                let answer = r.response.get("result").unwrap_or(&r.response);
                if let Some(id) = answer.get("CALL_ID").and_then(serde_json::Value::as_str) {
                    call_of_registration.insert(id.to_owned(), call);
                }
                let shown = r.param("SHOW").is_some_and(|v| v == 1 || v == "1");
                if !shown {
                    continue;
                }
                call
            }
            "telephony.externalcall.show" => {
                let id = r.param_str("CALL_ID").unwrap_or_default();
                let Some(call) = call_of_registration.get(&id).copied() else {
                    continue;
                };
                call
            }
            _ => continue,
        };
        popped.entry(call).or_insert(r.at);
    }
    let mut latencies: Vec<f64> = popped
        .iter()
        .map(|(call, at)| (*at - sent_at[*call]).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(at).copied().unwrap_or(f64::NAN)
    };
    println!(
        "  {calls} calls ringing within 1 s: {} cards popped; DialBegin sent → card request at the emulator: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(0.50),
        percentile(0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    let mut rest = Vec::new();
    for (mut call, shift) in ringing.into_iter().zip(shifts) {
        restamp(&mut call.rest, shift, false);
        rest.extend(call.rest);
    }
    sender.send(rest).expect("AMI session open");
    settle(emu, Duration::from_secs(3), Duration::from_secs(600)).await;
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

/// Where ringlink keeps its state: the bench's SQLite file, or the database at a PostgreSQL URL.
enum BenchStore {
    Sqlite,
    Postgres(String),
}

impl BenchStore {
    fn section(&self, dir: &Path) -> String {
        match self {
            BenchStore::Sqlite => format!("path = \"{}\"", dir.join("ringlink.db").display()),
            BenchStore::Postgres(url) => format!("url = \"{url}\"\ntenant = \"bench\""),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            BenchStore::Sqlite => "SQLite",
            BenchStore::Postgres(_) => "PostgreSQL",
        }
    }
}

fn config(dir: &Path, ami: &str, emu: &Emulator, store: &BenchStore) -> String {
    format!(
        r#"{ami}
[bitrix24]
webhook_url = "{webhook}"
plan = "enterprise"

[store]
{store}

[web]
listen = "127.0.0.1:0"

[recordings]
rewrite = [["{pbx_monitor}", "{monitor}/"]]

{tracker}
"#,
        ami = process::ami_section(ami, "ringlink", "bench"),
        webhook = emu.webhook_url(),
        store = store.section(dir),
        pbx_monitor = PBX_MONITOR,
        monitor = dir.join("monitor").display(),
        tracker = process::testbed_tracker_config(),
    )
}

/// ringlink's last `service state` line (the sizes of what it keeps in memory), from its field list on.
fn last_state(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("service state"))?;
    Some(line[line.find("service state")?..].to_owned())
}

async fn wait_log(log: &Path, needle: &str) {
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

/// Rounds of `n` calls: all live at once, then all ended; RSS after each half.
async fn memory_rounds(
    emu: &Emulator,
    sender: &mpsc::UnboundedSender<Vec<Message>>,
    pid: u32,
    log: &Path,
    monitor: &Path,
    n: usize,
    rounds: usize,
) {
    let (idle, _) = memory(pid);
    println!("  idle after start: RSS {idle:.1} MB");
    let mut rows = Vec::new();
    for r in 0..rounds {
        let mut calls = round(r * n, n);
        write_recordings(&calls.live, monitor);
        write_recordings(&calls.ends, monitor);
        let (registers, finishes, records) = (
            count(emu, "telephony.externalcall.register"),
            count(emu, "telephony.externalcall.finish"),
            count(emu, "telephony.externalcall.attachrecord"),
        );
        let shift = restamp(&mut calls.live, 0, false);
        sender.send(calls.live).expect("AMI session open");
        let drained = settle(emu, Duration::from_secs(3), Duration::from_secs(600)).await;
        let (live, live_peak) = memory(pid);
        let registered = count(emu, "telephony.externalcall.register") - registers;
        println!(
            "  round {}: {n} calls live — {registered} registered in {:.1} s; RSS {live:.1} MB (peak so far {live_peak:.1} MB)",
            r + 1,
            drained.as_secs_f64()
        );
        restamp(&mut calls.ends, shift, false);
        sender.send(calls.ends).expect("AMI session open");
        let ending = Instant::now();
        // Under load ringlink may still be reading the events when the portal has been quiet for a while: the
        // round is over once ringlink says it holds no live call.
        while ending.elapsed() < Duration::from_secs(600)
            && !last_state(log).is_some_and(|s| s.contains("tracker_calls=0 ") && s.contains("engine_calls=0 "))
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let drained = ending.elapsed() + settle(emu, Duration::from_secs(3), Duration::from_secs(600)).await;
        let (ended, peak) = memory(pid);
        let finished = count(emu, "telephony.externalcall.finish") - finishes;
        let recorded = count(emu, "telephony.externalcall.attachrecord") - records;
        println!(
            "  round {}: calls ended — {finished} finished, {recorded} recordings attached in {:.1} s; RSS {ended:.1} MB (peak so far {peak:.1} MB)",
            r + 1,
            drained.as_secs_f64()
        );
        if let Some(state) = last_state(log) {
            println!("    {state}");
        }
        rows.push((live, ended, peak));
    }
    let per_call_kb = (rows[0].0 - idle) * 1024.0 / n as f64;
    println!("  per live call: {per_call_kb:.1} kB (round 1's RSS with live calls minus idle, over {n})");
    let ended: Vec<String> = rows.iter().map(|(_, e, _)| format!("{e:.1}")).collect();
    println!("  RSS with the calls ended, round by round: {} MB", ended.join(" → "));
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "  growth from round 1 to round {rounds}: live {:+.1} MB, ended {:+.1} MB",
            last.0 - first.0,
            last.1 - first.1
        );
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("RINGLINK_BENCH_LIVE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rounds: usize = std::env::var("RINGLINK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .max(1);
    // `cargo bench` passes `--bench`; the rest name the parts to run.
    let mut parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if parts.is_empty() {
        parts = vec!["memory".into(), "cards".into()];
    }
    let mut emu_config = EmulatorConfig::default();
    emu_config.limits.bucket_capacity = 250;
    emu_config.limits.bucket_drain_per_sec = 5.0;
    let emu = Emulator::start(emu_config).await.expect("emulator");
    let (ami, feed) = scripted_ami().await;
    // On the main thread, which outlives ringlink: the server stops when the thread that started it ends.
    let (postgres, store) = match std::env::var("RINGLINK_BENCH_STORE").as_deref() {
        Ok("postgresql") => {
            let server = testbed::postgres::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
            let url = server.create_database("ringlink").expect("create the database");
            (Some(server), BenchStore::Postgres(url))
        }
        Ok("sqlite") | Err(_) => (None, BenchStore::Sqlite),
        Ok(other) => panic!("RINGLINK_BENCH_STORE={other}: sqlite or postgresql"),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (config_path, log) = (dir.path().join("ringlink.toml"), dir.path().join("ringlink.log"));
    std::fs::write(&config_path, config(dir.path(), &ami, &emu, &store)).expect("write config");
    let monitor = dir.path().join("monitor");
    std::fs::create_dir_all(&monitor).expect("recordings directory");
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
    let build = format!("{build} binary, {} store", store.name());
    if parts.iter().any(|p| p == "memory") {
        println!(
            "== ringlink's memory with {n} live calls (every tracker scenario in turn), {rounds} rounds, {build} =="
        );
        memory_rounds(&emu, &sender, pid, &log, &monitor, n, rounds).await;
    }
    if parts.iter().any(|p| p == "cards") {
        let calls: usize = std::env::var("RINGLINK_BENCH_CARD_CALLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        println!("== card pop with many calls ringing at once (every tracker scenario in turn), {build} ==");
        card_pop(&emu, &sender, calls, &monitor).await;
    }
    drop(ringlink);
    // `RINGLINK_BENCH_LOG=<file>`: ringlink's log (debug: each outbox round's claim/decide/send/record times) is
    // kept there; the bench's directory goes when it ends.
    if let Ok(keep) = std::env::var("RINGLINK_BENCH_LOG") {
        if let Err(e) = std::fs::copy(&log, &keep) {
            eprintln!("cannot keep ringlink's log in {keep}: {e}");
        }
    }
    drop(postgres);
    emu.shutdown().await;
}
