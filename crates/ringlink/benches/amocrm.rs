//! End-to-end figures of `ringlink run` with `[crm] kind = "amocrm"` on loopback: the real Asterisk test bed, the
//! amoCRM emulator (`amoemu`, 7 requests/s) and the release ringlink binary between them.
//!
//! - popup latency: from Asterisk's `DialBegin` of 101's phone (its `Timestamp` header) to the incoming-call popup
//!   (`POST /api/v2/events`) arriving at the emulator (`arrived_micros`, the same host clock), p50/p99 over 20
//!   calls placed one at a time by a client the account knows;
//! - HTTP requests per call for S1 (answered) and S3 (ringall queue of three), by path.
//!
//! `cargo bench -p ringlink --bench amocrm` (both parts) or with an argument: `latency`, `requests`.

// `common` needs the Bitrix24 harness: it and the amoCRM office each bring the ringlink process helpers.
#![allow(clippy::duplicate_mod)]

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/e2e/amocrm_office.rs"]
mod office;

use std::collections::BTreeMap;

use chrono::DateTime;
use common::{dials, extension_of, millis, single_calls_to_101, summary, watch_ami};
use office::{known_client, Office};
use testbed::{scenarios, CLIENT};

const POPUP: &str = "/api/v2/events";
const CALLS: &str = "/api/v4/calls";

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; any other word picks a part.
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |part: &str| wanted.is_empty() || wanted.iter().any(|w| w == part);
    if run("latency") {
        latency().await;
    }
    if run("requests") {
        requests_per_call().await;
    }
}

async fn latency() {
    println!("== popup latency (DialBegin of 101 at Asterisk → POST /api/v2/events at amoCRM) ==");
    let office = Office::start(known_client(), "").await;
    let (_ami, seen) = watch_ami(&office.bed).await;
    const CALLS_PLACED: usize = 20;
    single_calls_to_101(&office.bed, CALLS_PLACED, |_| CLIENT.to_owned()).await;
    office.wait_done(CALLS, CALLS_PLACED).await;
    // One call at a time: each popup belongs to the latest DialBegin of 101 before it arrived.
    let dial_begins: Vec<_> = dials(&seen)
        .into_values()
        .flatten()
        .filter(|(_, dest)| extension_of(dest) == Some(101))
        .map(|(at, _)| at)
        .collect();
    let mut overheads = Vec::new();
    for popup in office.ok(POPUP) {
        let Some(arrived) = DateTime::from_timestamp_micros(popup.arrived_micros) else {
            continue;
        };
        if let Some(dial) = dial_begins.iter().copied().filter(|at| *at <= arrived).max() {
            overheads.push(millis(dial, arrived));
        }
    }
    summary(&format!("{CALLS_PLACED} calls one at a time"), overheads);
    println!("  calls recorded: {}", office.calls().len());
    office.stop().await;
}

async fn requests_per_call() {
    println!("== amoCRM HTTP requests per call ==");
    let office = Office::start(known_client(), "").await;
    for (id, label) in [("s1", "S1 incoming answered"), ("s3", "S3 ringall queue of 3")] {
        office.emu.clear_requests();
        scenarios::play(&office.bed, id).await.expect("scenario");
        office.wait_done(CALLS, 1).await;
        let requests = office.emu.requests();
        let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
        for r in &requests {
            *by_path
                .entry(format!("{} {} {}", r.method, r.path, r.status))
                .or_default() += 1;
        }
        println!("{label}: {} HTTP requests {by_path:?}", requests.len());
    }
    office.stop().await;
}
