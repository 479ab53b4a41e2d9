//! End-to-end figures of `ringlink run` on loopback: the real Asterisk test bed, the Bitrix24 emulator (default
//! limits: 2 requests/s, burst 50) and the release ringlink binary between them.
//!
//! - card-pop overhead: from Asterisk's `DialBegin` (its `Timestamp` header; same host clock) to the
//!   register/show that pops the card reaching the emulator, p50/p99, one call at a time and ~100 at once;
//! - Bitrix24 requests per call for S1, S3, S4 and S2 with the missed-call task, and when each went with what;
//! - burst capacity: simultaneous incoming calls all registered, finished and recorded, the time the backlog
//!   takes to drain, ringlink's peak RSS (VmHWM) and CPU during the burst.
//!
//! - card-pop overhead with the `process_client_phone` hook (PHP) on the ringing path: none, spawned per call,
//!   persistent.
//!
//! - sustained rate: new calls at a steady rate for minutes (30 % into the ringall queue): loss, duplicates,
//!   card pop, the outbox backlog, RSS over the run, CPU; the rate asked and the rate placed (calls placed over
//!   the time placing them took: on a loaded machine placing falls behind the schedule).
//!
//! Where card-pop time goes: ringlink logs each outbox round (request slot, claim, decide, send, uploads, record
//! times) at debug level; the latency part sums them up.
//!
//! - card pop with the admin UI busy (`ui`): one call at a time, without the UI and with the journal page, a
//!   search by number and a search no index serves (a text of 2 characters) reloaded in a loop, in alternating
//!   blocks of 10 calls, 100 calls each (`RINGLINK_BENCH_UI_CARDS`), over a journal of 100,000 earlier calls
//!   (`RINGLINK_BENCH_UI_CALLS`): p50/p99 of each and their ratio. `RINGLINK_BENCH_UI_PATHS` (comma-separated)
//!   reloads other pages instead, one path at a time to find which one weighs. The pages are reloaded from a thread
//!   and runtime of their own, as by a browser: not on the runtime of the emulator, which times each card.
//!
//! `cargo bench -p ringlink --bench e2e` (all parts but `sustained`) or with arguments: `latency`, `hooks`,
//! `requests`, `burst`, `sustained`, `ui`. `RINGLINK_BENCH_BURSTS=50,100,150` chooses the burst sizes,
//! `RINGLINK_BENCH_RATE=5` and `RINGLINK_BENCH_MINUTES=10` the sustained load.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;
#[path = "../../web/benches/journal/mod.rs"]
mod journal;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use b24emu::RecordedRequest;
use chrono::Utc;
use common::{
    calls_to_101, dials, extension_of, lock, settle, single_calls_to_101, summary, wait_done, watch_ami, Seen,
};
use harness::{text, E2e};
use testbed::{scenarios, Route};

const REGISTER: &str = "telephony.externalcall.register";
const SHOW: &str = "telephony.externalcall.show";
const FINISH: &str = "telephony.externalcall.finish";
const RECORD: &str = "telephony.externalcall.attachrecord";

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; any other word picks a part.
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |part: &str| (wanted.is_empty() && part != "sustained") || wanted.iter().any(|w| w == part);
    if run("latency") {
        latency().await;
    }
    if run("hooks") {
        hook_latency().await;
    }
    if run("requests") {
        requests_per_call().await;
    }
    if run("burst") {
        burst().await;
    }
    if run("sustained") {
        sustained().await;
    }
    if run("ui") {
        ui_load().await;
    }
}

/// Card-pop overheads in milliseconds: for every card that popped (a register with SHOW 1, or a show),
/// the time from the `DialBegin` of that user's phone in that call to the request reaching the emulator.
fn card_overheads(requests: &[RecordedRequest], seen: &Seen) -> (Vec<f64>, usize) {
    let dials = dials(seen);
    let mut linkedid_of_call: HashMap<String, String> = HashMap::new();
    for r in requests.iter().filter(|r| r.method == REGISTER && r.is_ok()) {
        let linkedid = text(r, "EXTERNAL_CALL_ID")
            .split('-')
            .next()
            .unwrap_or_default()
            .to_owned();
        linkedid_of_call.insert(harness::call_id(r), linkedid);
    }
    let mut out = Vec::new();
    let mut without_card = 0;
    for r in requests.iter().filter(|r| r.is_ok()) {
        let (linkedid, users): (String, Vec<u64>) = match r.method.as_str() {
            REGISTER if text(r, "SHOW") == "1" => (
                linkedid_of_call.get(&harness::call_id(r)).cloned().unwrap_or_default(),
                vec![text(r, "USER_ID").parse().unwrap_or(0)],
            ),
            REGISTER => {
                without_card += 1;
                continue;
            }
            SHOW => {
                let users = match r.param("USER_ID") {
                    Some(serde_json::Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                        .collect(),
                    _ => vec![text(r, "USER_ID").parse().unwrap_or(0)],
                };
                (
                    linkedid_of_call.get(&text(r, "CALL_ID")).cloned().unwrap_or_default(),
                    users,
                )
            }
            _ => continue,
        };
        let Some(legs) = dials.get(&linkedid) else { continue };
        for user in users {
            // Extension 10N belongs to user N in the test office.
            let dial = legs
                .iter()
                .filter(|(at, dest)| extension_of(dest) == Some(100 + user) && *at <= r.at)
                .map(|(at, _)| *at)
                .max();
            if let Some(dial) = dial {
                out.push((r.at - dial).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
    (out, without_card)
}

/// The `i`th caller of a run: a number of its own.
fn caller(i: usize) -> String {
    format!("+7900777{i:04}")
}

async fn latency() {
    println!("== card-pop overhead (DialBegin at Asterisk → register/show at Bitrix24) ==");
    let e2e = E2e::start("").await;
    let (_ami, dials) = watch_ami(&e2e.bed).await;
    const SINGLE: usize = 20;
    single_calls_to_101(&e2e.bed, SINGLE, |_| caller(0)).await;
    wait_done(&e2e, FINISH, SINGLE, Duration::from_secs(60)).await;
    let (single, without) = card_overheads(&e2e.emu.requests(), &dials);
    summary("1 call at a time", single);
    println!("  registered without a card: {without}");

    e2e.emu.clear_requests();
    e2e.emu.reset_limits();
    lock(&dials).clear();
    let log_before = e2e.log().len();
    const MANY: usize = 100;
    calls_to_101(&e2e.bed, MANY, Duration::from_secs(4), Duration::from_secs(1), caller).await;
    wait_done(&e2e, FINISH, MANY, Duration::from_secs(300)).await;
    let (many, without) = card_overheads(&e2e.emu.requests(), &dials);
    summary(&format!("{MANY} calls at once"), many);
    println!("  registered without a card: {without}");
    rounds(&e2e.log()[log_before..]);
    e2e.stop().await;
}

/// Sums up ringlink's `outbox round` debug lines: how many rounds, how many steps each, and where their time
/// went.
fn rounds(log: &str) {
    let field = |line: &str, name: &str| -> Option<f64> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        line[at..].split_whitespace().next()?.parse().ok()
    };
    let mut n = 0;
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    let mut max: BTreeMap<&str, f64> = BTreeMap::new();
    let names = [
        "steps",
        "sent",
        "slot_ms",
        "claim_ms",
        "decide_ms",
        "send_ms",
        "upload_ms",
        "record_ms",
    ];
    for line in log.lines().filter(|l| l.contains("outbox round")) {
        n += 1;
        for name in names {
            let v = field(line, name).unwrap_or(0.0);
            *sums.entry(name).or_default() += v;
            let m = max.entry(name).or_default();
            *m = m.max(v);
        }
    }
    if n == 0 {
        println!("  outbox rounds: none logged");
        return;
    }
    let parts: Vec<String> = names
        .iter()
        .map(|k| format!("{k} mean {:.1} max {:.1}", sums[k] / n as f64, max[k]))
        .collect();
    println!("  outbox rounds: {n}; {}", parts.join(", "));
}

/// A `process_client_phone` in PHP that serves one request (spawned) or many (persistent) alike.
const PHONE_HOOK: &str = r#"<?php
while (($line = fgets(STDIN)) !== false) {
    $in = json_decode($line, true);
    $digits = preg_replace('/\D+/', '', $in['params']['phone']);
    echo json_encode(['data' => ['phone' => '8' . substr($digits, -10)], 'state' => 'success']), "\n";
    flush();
}
"#;

async fn hook_latency() {
    println!("== card-pop overhead with process_client_phone (PHP), 1 call at a time ==");
    for (label, mode) in [
        ("no hook", None),
        ("spawned per call", Some("spawn")),
        ("persistent", Some("persistent")),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = match mode {
            None => String::new(),
            Some(mode) => {
                std::fs::write(dir.path().join("process_client_phone.php"), PHONE_HOOK).expect("hook");
                format!(
                    "[hooks]\ndir = \"{}\"\n[hooks.per_hook.process_client_phone]\nmode = \"{mode}\"\n",
                    dir.path().display()
                )
            }
        };
        let e2e = E2e::start(&config).await;
        let (_ami, dials) = watch_ami(&e2e.bed).await;
        const CALLS: usize = 20;
        single_calls_to_101(&e2e.bed, CALLS, |_| caller(0)).await;
        wait_done(&e2e, FINISH, CALLS, Duration::from_secs(60)).await;
        let (overheads, without) = card_overheads(&e2e.emu.requests(), &dials);
        summary(label, overheads);
        println!("  registered without a card: {without}");
        e2e.stop().await;
    }
}

async fn requests_per_call() {
    println!("== Bitrix24 requests per call ==");
    let e2e = E2e::start("[engine.missed.task]\nenabled = true\n").await;
    settle(&e2e, Duration::from_secs(2)).await;
    for (id, label) in [
        ("s1", "S1 incoming answered"),
        ("s3", "S3 ringall queue of 3"),
        ("s4", "S4 one-by-one queue"),
        ("s2", "S2 missed, with the task"),
    ] {
        e2e.emu.clear_requests();
        scenarios::play(&e2e.bed, id).await.expect("scenario");
        settle(&e2e, Duration::from_secs(5)).await;
        let requests = e2e.emu.requests();
        let http = requests.iter().filter(|r| r.batch_parent.is_none()).count();
        let mut top: BTreeMap<String, usize> = BTreeMap::new();
        for r in requests.iter().filter(|r| r.batch_parent.is_none()) {
            *top.entry(r.method.clone()).or_default() += 1;
        }
        let mut methods: BTreeMap<String, usize> = BTreeMap::new();
        for r in requests.iter().filter(|r| r.method != "batch") {
            *methods.entry(r.method.clone()).or_default() += 1;
        }
        let commands: usize = methods.values().sum();
        println!("{label}: {http} HTTP requests against the limit {top:?}; {commands} methods: {methods:?}");
        // When each request went (from the first) and what it carried: a card change at its own moment needs a
        // request of its own unless it is held back.
        let first = requests.first().map(|r| r.at);
        let moments: Vec<String> = requests
            .iter()
            .filter(|r| r.batch_parent.is_none())
            .map(|r| {
                let at = first.map_or(0, |f| (r.at - f).num_milliseconds()) as f64 / 1000.0;
                let carried: Vec<&str> = requests
                    .iter()
                    .filter(|c| c.batch_parent == Some(r.seq) || (c.seq == r.seq && r.method != "batch"))
                    .map(|c| c.method.rsplit('.').next().unwrap_or(&c.method))
                    .collect();
                format!("{at:.2} s [{}]", carried.join(" + "))
            })
            .collect();
        println!("  {}", moments.join(", "));
    }
    e2e.stop().await;
}

/// ringlink's CPU time so far (user + system, in seconds) from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// A `kB` line of /proc/<pid>/status (VmHWM, VmRSS).
fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

async fn burst() {
    println!("== burst capacity under the default limiter (2/s, burst 50) ==");
    let sizes: Vec<usize> = std::env::var("RINGLINK_BENCH_BURSTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 100, 150]);
    for n in sizes {
        let mut e2e = E2e::start("").await;
        // A fresh process, so VmHWM is this burst's peak.
        e2e.kill_ringlink();
        e2e.start_ringlink().await;
        settle(&e2e, Duration::from_secs(2)).await;
        let pid = e2e.ringlink_pid().expect("ringlink runs");
        let cpu_before = cpu_seconds(pid);
        let rss_before = status_kb(pid, "VmRSS:");
        let started = Instant::now();
        let started_at = Utc::now();
        let sampler = {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            let handle = tokio::spawn(async move {
                let (mut peak, mut last, mut last_at) = (0.0f64, cpu_seconds(pid), Instant::now());
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let (cpu, at) = (cpu_seconds(pid), Instant::now());
                    peak = peak.max((cpu - last) / at.duration_since(last_at).as_secs_f64());
                    (last, last_at) = (cpu, at);
                }
                peak
            });
            (stop, handle)
        };
        calls_to_101(&e2e.bed, n, Duration::from_secs(2), Duration::from_secs(2), caller).await;
        let calls_over = Utc::now();
        let limit = Duration::from_secs(120 + n as u64 * 3);
        let registered = wait_done(&e2e, REGISTER, n, limit).await;
        let finished = wait_done(&e2e, FINISH, n, limit).await;
        let recorded = wait_done(&e2e, RECORD, n, limit).await;
        let elapsed = started.elapsed();
        sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak_cpu = sampler.1.await.unwrap_or(f64::NAN);
        let cpu = cpu_seconds(pid) - cpu_before;
        let last_request = e2e.emu.requests().iter().map(|r| r.at).max().unwrap_or(started_at);
        let refused = e2e
            .emu
            .requests()
            .iter()
            .filter(|r| r.response.get("error").and_then(|e| e.as_str()) == Some("QUERY_LIMIT_EXCEEDED"))
            .count();
        let http = e2e.emu.requests().iter().filter(|r| r.batch_parent.is_none()).count();
        let lossless = registered == n && finished == n && recorded == n;
        println!(
            "{n} simultaneous calls: registered {registered}, finished {finished}, recordings {recorded} → {}; \
             backlog drained {:.1} s after the last call ended ({:.1} s from the first call); {http} HTTP requests, \
             {refused} refused with QUERY_LIMIT_EXCEEDED",
            if lossless { "no loss" } else { "LOSS" },
            (last_request - calls_over).num_milliseconds().max(0) as f64 / 1000.0,
            (last_request - started_at).num_milliseconds() as f64 / 1000.0,
        );
        println!(
            "  ringlink: VmHWM {} kB (VmRSS before {rss_before} kB), CPU {cpu:.2} s over {:.1} s \
             (mean {:.1}% of a core, peak 1-s {:.1}%)",
            status_kb(pid, "VmHWM:"),
            elapsed.as_secs_f64(),
            100.0 * cpu / elapsed.as_secs_f64(),
            100.0 * peak_cpu
        );
        e2e.stop().await;
    }
}

/// One second of a sustained run: (seconds since the start, outbox backlog, VmRSS kB, CPU share of a core).
/// And the keys ringlink remembers of ended calls (`ringlink_held_entries`: the tracker's, the engine's), and
/// where its memory is (`ringlink_memory_bytes`).
type Sample = (f64, u64, u64, f64, (u64, u64), Memory);

/// `ringlink_memory_bytes` in kB: SQLite's, the allocator's heap in use, free in the heap, mapped apart.
#[derive(Clone, Copy, Default)]
struct Memory {
    sqlite: u64,
    in_use: u64,
    free: u64,
    mapped: u64,
}

impl Memory {
    fn scraped(metrics: &str) -> Self {
        let kb = |what: &str| gauge(metrics, &format!("ringlink_memory_bytes{{what=\"{what}\"}}")) / 1024;
        Memory {
            sqlite: kb("sqlite"),
            in_use: kb("heap_in_use"),
            free: kb("heap_free"),
            mapped: kb("heap_mapped"),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SQLite {}, heap in use {} / free {} / mapped {}",
            self.sqlite, self.in_use, self.free, self.mapped
        )
    }
}

/// The sum of the `/metrics` samples whose line starts with `series`.
fn gauge(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A sustained call-centre load: `RINGLINK_BENCH_RATE` new incoming calls per second (default 5) for
/// `RINGLINK_BENCH_MINUTES` (default 10), 30 % of them into the ringall queue (101/102/103), the rest to 101;
/// each rings 2 s and talks 3 s. Every second: the outbox backlog (pending + in flight), RSS and CPU.
async fn sustained() {
    let rate: f64 = std::env::var("RINGLINK_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let minutes: f64 = std::env::var("RINGLINK_BENCH_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    println!("== sustained: {rate} calls/s for {minutes} min, 30 % ringall, default limiter (2/s, burst 50) ==");
    let mut e2e = E2e::start("").await;
    e2e.kill_ringlink();
    e2e.start_ringlink().await;
    settle(&e2e, Duration::from_secs(2)).await;
    let (_ami, dials) = watch_ami(&e2e.bed).await;
    let pid = e2e.ringlink_pid().expect("ringlink runs");
    let idle_rss = status_kb(pid, "VmRSS:");
    let bed = &e2e.bed;
    bed.reset().await.expect("reset");
    for ext in [101, 102, 103] {
        bed.phone(ext)
            .answer_after(Duration::from_secs(2))
            .await
            .expect("phone");
    }
    let total = (rate * minutes * 60.0).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let started_at = Utc::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (samples, stop, port) = (samples.clone(), stop.clone(), e2e.web_port);
        tokio::spawn(async move {
            let (mut last, mut last_at) = (cpu_seconds(pid), Instant::now());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (cpu, at) = (cpu_seconds(pid), Instant::now());
                let load = (cpu - last) / at.duration_since(last_at).as_secs_f64();
                (last, last_at) = (cpu, at);
                let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let backlog = gauge(&text, "ringlink_outbox_steps{state=\"pending\"}")
                    + gauge(&text, "ringlink_outbox_steps{state=\"in_flight\"}");
                let remembered = (
                    gauge(&text, "ringlink_held_entries{what=\"tracker_remembered\"}"),
                    gauge(&text, "ringlink_held_entries{what=\"engine_remembered\"}"),
                );
                let t = started.elapsed().as_secs_f64();
                samples.lock().unwrap_or_else(|p| p.into_inner()).push((
                    t,
                    backlog,
                    status_kb(pid, "VmRSS:"),
                    load,
                    remembered,
                    Memory::scraped(&text),
                ));
            }
        })
    };
    let mut calls = Vec::new();
    let mut ringall = 0;
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let route = if i % 10 < 3 {
            ringall += 1;
            Route::QueueRingAll
        } else {
            Route::Extension(101)
        };
        bed.route_incoming(route).await.expect("route");
        let from = format!("+7900555{i:04}");
        match bed.incoming(&from).talk(Duration::from_secs(3)).await {
            Ok(call) => calls.push(call),
            Err(e) => println!("  call {i} not placed: {e}"),
        }
    }
    let placing = started.elapsed();
    for call in &mut calls {
        let _ = call.finished(Duration::from_secs(120)).await;
    }
    let _ = bed.wait_all_channels_gone(Duration::from_secs(120)).await;
    let calls_over = Utc::now();
    let limit = Duration::from_secs(300);
    let registered = wait_done(&e2e, REGISTER, total, limit).await;
    let finished = wait_done(&e2e, FINISH, total, limit).await;
    // A recording is owed to each call someone answered (the others end 304: every phone was busy).
    let answered = e2e
        .emu
        .requests_for(FINISH)
        .iter()
        .filter(|r| r.is_ok() && text(r, "STATUS_CODE") == "200")
        .count();
    let recorded = wait_done(&e2e, RECORD, answered, limit).await;
    settle(&e2e, Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let elapsed = started.elapsed();
    let requests = e2e.emu.requests();
    let last_request = requests.iter().map(|r| r.at).max().unwrap_or(started_at);
    let http = requests.iter().filter(|r| r.batch_parent.is_none()).count();
    let ids: Vec<String> = requests
        .iter()
        .filter(|r| r.method == REGISTER && r.is_ok())
        .map(|r| text(r, "EXTERNAL_CALL_ID"))
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    let (cards, _) = card_overheads(&requests, &dials);
    let owed = requests
        .iter()
        .filter(|r| r.method == FINISH && r.is_ok() && text(r, "STATUS_CODE") == "200")
        .count();
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let third = samples.len() / 3;
    let peak_backlog = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let rss_first = samples.get(third).map(|s| s.2).unwrap_or(0);
    let rss_last = samples
        .get(samples.len().saturating_sub(third + 1))
        .map(|s| s.2)
        .unwrap_or(0);
    let peak_cpu = samples.iter().map(|s| s.3).fold(0.0, f64::max);
    println!(
        "{} of {total} calls placed in {:.0} s ({:.2} calls/s placed, {rate} asked; {ringall} to the ringall queue): \
         registered {registered}, finished {finished}, recordings {recorded} of {owed} answered, \
         {} duplicate EXTERNAL_CALL_IDs → {}",
        calls.len(),
        placing.as_secs_f64(),
        calls.len() as f64 / placing.as_secs_f64(),
        ids.len() - unique.len(),
        if registered >= total && finished >= total && recorded >= owed && ids.len() == unique.len() {
            "no loss, no duplicates"
        } else {
            "LOSS OR DUPLICATES"
        }
    );
    summary("  card pop", cards);
    recordings_accounted(&requests, &e2e.log());
    println!(
        "  backlog (outbox pending + in flight): peak {peak_backlog}, drained {:.1} s after the last call ended; \
         {http} HTTP requests ({:.2}/s over the run)",
        (last_request - calls_over).num_milliseconds().max(0) as f64 / 1000.0,
        http as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  ringlink: idle VmRSS {idle_rss} kB, VmHWM {} kB, VmRSS at 1/3 {rss_first} kB and at 2/3 {rss_last} kB of the run; \
         CPU {cpu:.1} s over {:.0} s (mean {:.1}% of a core, peak 1-s {:.1}%)",
        status_kb(pid, "VmHWM:"),
        elapsed.as_secs_f64(),
        100.0 * cpu / elapsed.as_secs_f64(),
        100.0 * peak_cpu
    );
    // While calls were placed: the first second, each third, the last; then once the backlog drained.
    let at = |share: f64| {
        let s = samples
            .iter()
            .find(|s| s.0 >= share * placing.as_secs_f64())
            .or(samples.last());
        s.map_or("-".to_owned(), |s| {
            format!("{} kB ({} + {} keys; kB: {})", s.2, s.4 .0, s.4 .1, s.5)
        })
    };
    println!("  VmRSS (keys remembered of ended calls: tracker + engine; where the memory is) while placing calls:");
    for (when, share) in [
        ("start", 0.0),
        ("1/3", 1.0 / 3.0),
        ("2/3", 2.0 / 3.0),
        ("end", 1.0),
        ("after the drain", f64::INFINITY),
    ] {
        println!("    {when}: {}", at(share));
    }
    e2e.stop().await;
}

/// Which finished calls have no recording, and why: a recording is owed to every registration finished as
/// answered (`STATUS_CODE` 200); the rest talked to nobody. For each answered one without an `attachRecord`,
/// what ringlink's log says about its recording step.
fn recordings_accounted(requests: &[RecordedRequest], log: &str) {
    // The sustained load numbers its callers: call i (`…555iiii`) went to the ringall queue when i % 10 < 3.
    let route: HashMap<String, &str> = requests
        .iter()
        .filter(|r| r.method == REGISTER && r.is_ok())
        .map(|r| {
            let phone = text(r, "PHONE_NUMBER");
            let i: usize = phone[phone.len().saturating_sub(4)..].parse().unwrap_or(0);
            (harness::call_id(r), if i % 10 < 3 { "ringall" } else { "101" })
        })
        .collect();
    let mut answered: BTreeMap<String, String> = BTreeMap::new();
    let mut unanswered: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.method == FINISH && r.is_ok()) {
        let status = text(r, "STATUS_CODE");
        if status == "200" {
            answered.insert(text(r, "CALL_ID"), String::new());
        } else {
            let to = route.get(&text(r, "CALL_ID")).copied().unwrap_or("?");
            *unanswered.entry((status, to)).or_default() += 1;
        }
    }
    let recorded: std::collections::HashSet<String> = requests
        .iter()
        .filter(|r| r.method.eq_ignore_ascii_case(RECORD) && r.is_ok())
        .map(|r| text(r, "CALL_ID"))
        .collect();
    let external: HashMap<String, String> = requests
        .iter()
        .filter(|r| r.method == REGISTER && r.is_ok())
        .map(|r| (harness::call_id(r), text(r, "EXTERNAL_CALL_ID")))
        .collect();
    let owed: Vec<&String> = answered.keys().filter(|id| !recorded.contains(*id)).collect();
    println!(
        "  recordings: {} answered finishes, {} recorded, {} answered without a recording; finished unanswered by \
         (status, route): {unanswered:?}",
        answered.len(),
        recorded.len(),
        owed.len()
    );
    // Why: the log lines about each missing call's recording step.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for id in &owed {
        let Some(ext) = external.get(*id) else { continue };
        let call = ext.split('-').next().unwrap_or(ext);
        let line = log
            .lines()
            .rfind(|l| l.contains(call) && l.contains("record") && (l.contains("WARN") || l.contains("INFO")))
            .map(|l| {
                l.split_once(" ringlink")
                    .map(|(_, r)| r)
                    .unwrap_or(l)
                    .chars()
                    .take(160)
                    .collect()
            })
            .unwrap_or_else(|| "nothing in the log about its recording".to_owned());
        *reasons.entry(line).or_default() += 1;
    }
    for (reason, n) in reasons.iter().take(8) {
        println!("    {n} × {reason}");
    }
}

/// Card pop, one call at a time, without the admin UI and with its journal reloaded in a loop.
async fn ui_load() {
    println!("== card pop while the admin UI's journal is reloaded in a loop ==");
    let e2e = E2e::start("").await;
    let (_ami, dials) = watch_ami(&e2e.bed).await;
    let earlier: usize = std::env::var("RINGLINK_BENCH_UI_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let filled = Instant::now();
    journal_of_earlier_calls(&e2e.dir.path().join("ringlink.db"), earlier);
    println!(
        "  {earlier} earlier calls journaled in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let session = admin_session(&http, &e2e).await;
    let paths: Arc<Vec<String>> = Arc::new(match std::env::var("RINGLINK_BENCH_UI_PATHS") {
        Ok(paths) => paths.split(',').map(str::to_owned).collect(),
        Err(_) => JOURNAL_PATHS.iter().map(|p| p.to_string()).collect(),
    });
    println!("  pages reloaded: {}", paths.join(" "));

    // Calls a condition, placed in blocks that alternate between the two, so that a change in the machine's
    // load during the run weighs on both alike.
    let calls: usize = std::env::var("RINGLINK_BENCH_UI_CARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    const BLOCK: usize = 10;
    let mut overheads = [Vec::new(), Vec::new()];
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut reloading_time = Duration::ZERO;
    for block in 0..calls.div_ceil(BLOCK) * 2 {
        let loaded = block % 2 == 1;
        let n = BLOCK.min(calls - (block / 2) * BLOCK);
        e2e.emu.clear_requests();
        lock(&dials).clear();
        let started = Instant::now();
        let reloading = loaded.then(|| Browser::start(e2e.web_url(), session.clone(), paths.clone(), served.clone()));
        single_calls_to_101(&e2e.bed, n, |_| caller(0)).await;
        wait_done(&e2e, FINISH, n, Duration::from_secs(60)).await;
        if let Some(reloading) = reloading {
            reloading.stop().await;
            reloading_time += started.elapsed();
        }
        let (block_overheads, _) = card_overheads(&e2e.emu.requests(), &dials);
        overheads[usize::from(loaded)].extend(block_overheads);
    }
    let mut figures = Vec::new();
    for (loaded, mut overheads) in overheads.into_iter().enumerate() {
        overheads.sort_by(f64::total_cmp);
        let label = if loaded == 1 {
            "with the journal reloaded in a loop"
        } else {
            "without the UI"
        };
        figures.push((
            common::percentile(&overheads, 50.0),
            common::percentile(&overheads, 99.0),
        ));
        summary(label, overheads);
    }
    let pages = served.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  journal pages served: {pages} ({:.1}/s while reloading)",
        pages as f64 / reloading_time.as_secs_f64().max(f64::EPSILON)
    );
    let (quiet, busy) = (figures[0], figures[1]);
    println!(
        "  with / without the UI: p50 x{:.2}, p99 x{:.2}",
        busy.0 / quiet.0,
        busy.1 / quiet.1
    );
    e2e.stop().await;
}

/// Appends the journal of `calls` earlier calls (the admin UI benches' journal) through a second handle on
/// ringlink's store, as months of an office's calls would have left it.
fn journal_of_earlier_calls(path: &std::path::Path, calls: usize) {
    use store::{Store, Timestamp};
    let store = store::SqliteStore::open(path).expect("ringlink's store");
    let start = Timestamp::now().saturating_sub(Duration::from_secs(calls as u64 * 30 + 3_600));
    for first in (0..calls).step_by(1_000) {
        let entries: Vec<_> = (first..(first + 1_000).min(calls))
            .flat_map(|i| journal::call(i, start).2)
            .collect();
        store.append_journal(&entries).expect("journal");
    }
}

/// Sets the admin password on the first-run page (the setup code is in ringlink's log); the session cookie.
async fn admin_session(http: &reqwest::Client, e2e: &E2e) -> String {
    let cookie_of = |response: &reqwest::Response, name: &str| -> Option<String> {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(name)?
                    .strip_prefix('=')?
                    .split(';')
                    .next()
                    .map(str::to_owned)
            })
    };
    let page = http
        .get(format!("{}/setup", e2e.web_url()))
        .send()
        .await
        .expect("setup page");
    let form = cookie_of(&page, "ringlink_form").expect("form cookie");
    let log = e2e.log();
    let code = log
        .split("setup_code=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("setup code in ringlink's log")
        .to_owned();
    let password = "bench password 1";
    let set = http
        .post(format!("{}/setup", e2e.web_url()))
        .header("cookie", format!("ringlink_form={form}"))
        .form(&[
            ("csrf", form.as_str()),
            ("code", code.as_str()),
            ("password", password),
            ("again", password),
        ])
        .send()
        .await
        .expect("setup");
    let session = cookie_of(&set, "ringlink_session").expect("session cookie");
    format!("ringlink_session={session}")
}

/// The journal page, a search by number and a search by 2 characters (no index: every entry is read).
const JOURNAL_PATHS: [&str; 3] = ["/calls", "/calls?number=%2B79000004999", "/calls?employee=x1"];

/// The admin's browser reloading pages: on a thread and runtime of its own, as a browser is a process of its
/// own, so that receiving pages never delays the emulator's handlers (which time each card's arrival) on the
/// bench's runtime.
struct Browser {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Browser {
    fn start(
        base: String,
        session: String,
        paths: Arc<Vec<String>>,
        served: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Browser {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the browser's runtime");
            runtime.block_on(async move {
                // A client of this runtime: a pooled connection is driven by the runtime that opened it.
                let http = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("HTTP client");
                tokio::select! {
                    () = reload_journal(http, base, session, paths, served) => {}
                    _ = stopped => {}
                }
            });
        });
        Browser { stop, thread }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joined")
            .expect("the browser's thread ended without a panic");
    }
}

/// Reloads `paths` one after the other until stopped; counts the pages it got.
async fn reload_journal(
    http: reqwest::Client,
    base: String,
    session: String,
    paths: Arc<Vec<String>>,
    served: Arc<std::sync::atomic::AtomicUsize>,
) {
    for path in paths.iter().cycle() {
        let response = http
            .get(format!("{base}{path}"))
            .header("cookie", &session)
            .send()
            .await
            .expect("journal page");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        let _ = response.bytes().await;
        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
