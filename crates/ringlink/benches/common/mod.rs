//! What the end-to-end bench binaries share: AMI events as Asterisk stamped them, percentiles, and waiting for
//! the emulator to have seen enough. Each bench includes it (`mod common;`) beside the e2e test harness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ami::ClientEvent;
use chrono::{DateTime, Utc};

use testbed::{Route, TestBed};

use crate::harness::E2e;

/// One AMI event of interest, with Asterisk's own `Timestamp` (the host clock, the same as the bench's).
#[derive(Debug, Clone)]
pub struct Stamp {
    /// `DialBegin`, `Newchannel` or `Newstate`.
    pub event: String,
    pub linkedid: String,
    pub uniqueid: String,
    pub channel: String,
    /// `DialBegin`'s `DestChannel`.
    pub dest: String,
    /// `ChannelStateDesc` (`Ringing`, `Up`, …).
    pub state: String,
    pub at: DateTime<Utc>,
}

/// The AMI events seen so far, in arrival order.
pub type Seen = Arc<Mutex<Vec<Stamp>>>;

/// Follows AMI beside ringlink and keeps every `DialBegin`, `Newchannel` and `Newstate` with its stamp.
pub async fn watch_ami(bed: &TestBed) -> (ami::Client, Seen) {
    let config = ami::ClientConfig::new(bed.ami_addr().to_string(), bed.ami_user(), bed.ami_secret());
    let (client, mut events) = ami::connect(config).await.expect("AMI login");
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let ClientEvent::Event(m) = event else { continue };
            let Some(name) = m.event_name().map(str::to_owned) else {
                continue;
            };
            if !matches!(name.as_str(), "DialBegin" | "Newchannel" | "Newstate") {
                continue;
            }
            let Some(at) = m.get("Timestamp").and_then(parse_stamp) else {
                continue;
            };
            let field = |k: &str| m.get(k).map(str::trim).unwrap_or_default().to_owned();
            let (linkedid, uniqueid, channel, dest, state) = (
                field("Linkedid"),
                field("Uniqueid"),
                field("Channel"),
                field("DestChannel"),
                field("ChannelStateDesc"),
            );
            lock(&sink).push(Stamp {
                event: name,
                linkedid,
                uniqueid,
                channel,
                dest,
                state,
                at,
            });
        }
    });
    (client, seen)
}

/// `n` incoming calls at once to extension 101, which answers each after `ring` and talks `talk`, from `from(i)`;
/// returns when every channel is gone.
pub async fn calls_to_101(bed: &TestBed, n: usize, ring: Duration, talk: Duration, from: impl Fn(usize) -> String) {
    bed.reset().await.expect("reset");
    bed.route_incoming(Route::Extension(101)).await.expect("route");
    bed.phone(101).answer_after(ring).await.expect("phone 101");
    let mut calls = Vec::new();
    for i in 0..n {
        calls.push(bed.incoming(&from(i)).talk(talk).await.expect("call"));
    }
    for call in &mut calls {
        let _ = call.finished(Duration::from_secs(300)).await;
    }
    let _ = bed.wait_all_channels_gone(Duration::from_secs(120)).await;
}

/// `n` calls to 101 one after the other (101 rings 0.7 s, the client talks 0.3 s), the `i`th from `from(i)`.
pub async fn single_calls_to_101(bed: &TestBed, n: usize, from: impl Fn(usize) -> String) {
    for i in 0..n {
        let caller = from(i);
        calls_to_101(bed, 1, Duration::from_millis(700), Duration::from_millis(300), |_| {
            caller.clone()
        })
        .await;
    }
}

/// The lock, whether or not a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `DialBegin`s by linkedid: (stamp, destination channel), in arrival order.
pub fn dials(seen: &Seen) -> HashMap<String, Vec<(DateTime<Utc>, String)>> {
    let mut out: HashMap<String, Vec<(DateTime<Utc>, String)>> = HashMap::new();
    for s in lock(seen).iter().filter(|s| s.event == "DialBegin") {
        out.entry(s.linkedid.clone()).or_default().push((s.at, s.dest.clone()));
    }
    out
}

/// AMI `Timestamp: 1712345678.123456`.
pub fn parse_stamp(text: &str) -> Option<DateTime<Utc>> {
    let (secs, frac) = text.trim().split_once('.').unwrap_or((text.trim(), "0"));
    let secs: i64 = secs.parse().ok()?;
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    DateTime::from_timestamp_micros(secs * 1_000_000 + micros)
}

/// The extension behind `PJSIP/101-0000001a`.
pub fn extension_of(channel: &str) -> Option<u64> {
    channel.strip_prefix("PJSIP/")?.split('-').next()?.parse().ok()
}

/// Milliseconds from `from` to `to`.
pub fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `label: n=… p50=… p99=… min=… max=…` (milliseconds).
pub fn summary(label: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} p50={:.1} ms p99={:.1} ms min={:.1} ms max={:.1} ms",
        values.len(),
        percentile(&values, 50.0),
        percentile(&values, 99.0),
        values.first().copied().unwrap_or(f64::NAN),
        values.last().copied().unwrap_or(f64::NAN),
    );
}

/// Waits until `n` requests of `method` succeeded, or `limit` passes; returns how many did.
pub async fn wait_done(e2e: &E2e, method: &str, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let done = e2e.emu.requests_for(method).iter().filter(|r| r.is_ok()).count();
        if done >= n || Instant::now() >= deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until no request reached the emulator for `quiet`.
pub async fn settle(e2e: &E2e, quiet: Duration) {
    let mut seen = e2e.emu.requests().len();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = e2e.emu.requests().len();
        if now != seen {
            seen = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}
