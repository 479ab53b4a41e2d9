//! Click-to-call and auto-distribution figures of `ringlink run` on loopback: the real Asterisk test bed, the
//! Bitrix24 emulator (default limits: 2 requests/s, burst 50) and the release ringlink binary between them.
//!
//! - `handler`: a click in the portal (the emulator registers it and POSTs `ONEXTERNALCALLSTART` to ringlink's
//!   listener) → the originated channel at Asterisk (`Newchannel` of the click's `c2c-…` uniqueid: the
//!   `Originate` acted on) → `DialBegin` of the employee's phone (PJSIP/101) → that phone ringing (`Newstate`
//!   Ringing, its 180), p50/p99 over `RINGLINK_BENCH_CLICKS` clicks (default 30), one at a time; and the
//!   Bitrix24 requests each click-to-call costs.
//! - `offline`: the same with offline events (`event.offline.get` polling with the default interval, 1 s while
//!   the request budget allows, up to 10 s): from the click, and from the poll that fetched it.
//! - `autodistribution`: the dialplan's question "whose client is this?" answered over HTTP (a new connection
//!   per request, as `CURL()` does) and over FastAGI (connect → the `SET VARIABLE` command): a cache miss (the
//!   CRM asked: the emulator's `searchCrmEntities`), a cache hit, and 50 look-ups at once (misses, then hits),
//!   p50/p99 and how many answered the manager's extension within the 300 ms budget. The listener's rate limit
//!   is raised for the bench (its default burst of 40 would refuse 10 of 50 simultaneous requests with 429).
//!
//! Times are Asterisk's AMI `Timestamp`s and the bench's clock (the same host clock).
//!
//! `cargo bench -p ringlink --bench click_to_call` (all parts) or with arguments: `handler`, `offline`,
//! `autodistribution`.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use b24emu::{ClickToCall, EmulatorConfig, SeedEntity};
use chrono::{DateTime, Utc};
use common::{extension_of, lock, millis, settle, summary, watch_ami, Seen};
use harness::{free_port, text, E2e, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const FINISH: &str = "telephony.externalcall.finish";
const POLL: &str = "event.offline.get";

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; any other word picks a part.
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |part: &str| wanted.is_empty() || wanted.iter().any(|w| w == part);
    if run("handler") {
        clicks(Mode::Handler).await;
    }
    if run("offline") {
        clicks(Mode::Offline).await;
    }
    if run("autodistribution") {
        autodistribution().await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Handler,
    Offline,
}

/// One click's moments.
struct Timed {
    call_id: String,
    clicked: DateTime<Utc>,
}

/// When Asterisk saw the click's call: the originated channel, the employee's phone dialled and ringing.
struct AtPbx {
    originated: Option<DateTime<Utc>>,
    dialled: Option<DateTime<Utc>>,
    ringing: Option<DateTime<Utc>>,
}

fn at_pbx(seen: &Seen, key: &str) -> AtPbx {
    let seen = lock(seen);
    let employee = |channel: &str| extension_of(channel) == Some(101);
    let first = |pick: &dyn Fn(&common::Stamp) -> bool| seen.iter().filter(|s| pick(s)).map(|s| s.at).min();
    AtPbx {
        originated: first(&|s| s.event == "Newchannel" && s.uniqueid == key),
        dialled: first(&|s| s.event == "DialBegin" && s.linkedid == key && employee(&s.dest)),
        ringing: first(&|s| s.event == "Newstate" && s.linkedid == key && s.state == "Ringing" && employee(&s.channel)),
    }
}

async fn clicks(mode: Mode) {
    let n: usize = std::env::var("RINGLINK_BENCH_CLICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (label, lines) = match mode {
        Mode::Handler => (
            "handler mode (ONEXTERNALCALLSTART POSTed to the listener)",
            "bind_events = true\n",
        ),
        Mode::Offline => (
            "offline mode (event.offline.get, default poll interval 1-10 s)",
            "mode = \"offline\"\n",
        ),
    };
    println!("== click-to-call, {label}: {n} clicks, one at a time ==");
    let emu_config = EmulatorConfig::default();
    let token = emu_config.app.application_token.clone();
    let e2e = E2e::start_as_app(emu_config, &harness::click_to_call_config(free_port(), &token, lines)).await;
    e2e.wait_log("ONEXTERNALCALLSTART bound", WAIT).await;
    e2e.wait_log("users directory refreshed", WAIT).await;
    let_requests_settle(&e2e, mode, Duration::from_secs(2)).await;
    let (_ami, seen) = watch_ami(&e2e.bed).await;
    let bed = &e2e.bed;
    bed.phone(101)
        .answer_after(Duration::from_millis(300))
        .await
        .expect("phone 101");
    bed.carrier()
        .answer_after(Duration::from_millis(300))
        .talk(Duration::from_millis(500))
        .await
        .expect("carrier");
    e2e.emu.clear_requests();
    let started = Utc::now();
    let mut timed = Vec::new();
    for i in 0..n {
        let clicked = Utc::now();
        let outcome = e2e
            .emu
            .click_to_call(ClickToCall::new(1, &format!("+7900333{i:04}")))
            .await
            .expect("click-to-call");
        let call_id = outcome.call_id.expect("the portal registered the click");
        if !finished(&e2e, &call_id, WAIT).await {
            println!("  click {i} ({call_id}): no finish within {WAIT:?}");
        }
        let _ = bed.wait_all_channels_gone(WAIT).await;
        timed.push(Timed { call_id, clicked });
    }
    let_requests_settle(&e2e, mode, Duration::from_secs(3)).await;
    let ended = Utc::now();

    let requests = e2e.emu.requests();
    let (mut originate, mut dial, mut ring, mut fetch, mut fetched_ring) = (vec![], vec![], vec![], vec![], vec![]);
    let mut missing = 0;
    for t in &timed {
        let key = engine::click_call_key(&t.call_id);
        let pbx = at_pbx(&seen, &key);
        let (Some(originated), Some(dialled), Some(ringing)) = (pbx.originated, pbx.dialled, pbx.ringing) else {
            missing += 1;
            continue;
        };
        originate.push(millis(t.clicked, originated));
        dial.push(millis(t.clicked, dialled));
        ring.push(millis(t.clicked, ringing));
        if mode == Mode::Offline {
            // The poll that handed the click over.
            let fetched = requests
                .iter()
                .filter(|r| r.method == POLL && r.is_ok() && r.response.to_string().contains(&t.call_id))
                .map(|r| r.at)
                .min();
            if let Some(fetched) = fetched {
                fetch.push(millis(t.clicked, fetched));
                fetched_ring.push(millis(fetched, ringing));
            }
        }
    }
    summary("  click → Originate acted on (Newchannel)", originate);
    summary("  click → employee's phone dialled (DialBegin PJSIP/101)", dial);
    summary("  click → employee's phone ringing (Newstate Ringing)", ring);
    if mode == Mode::Offline {
        summary("  click → fetched by event.offline.get", fetch);
        summary("  fetched → employee's phone ringing", fetched_ring);
    }
    if missing > 0 {
        println!("  {missing} clicks without an originated, dialled or ringing phone seen at the PBX");
    }
    requests_per_click(&requests, n, ended - started);
    e2e.stop().await;
}

/// Lets the last requests reach the emulator. In offline mode ringlink polls `event.offline.get` for as long as it
/// runs, so the emulator never goes quiet: a fixed pause of `quiet` (longer than a batch's send) stands in.
async fn let_requests_settle(e2e: &E2e, mode: Mode, quiet: Duration) {
    match mode {
        Mode::Handler => settle(e2e, quiet).await,
        Mode::Offline => tokio::time::sleep(quiet).await,
    }
}

/// Whether the finish of `call_id` reached Bitrix24 within `limit`.
async fn finished(e2e: &E2e, call_id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let done = e2e
            .emu
            .requests_for(FINISH)
            .iter()
            .any(|r| r.is_ok() && text(r, "CALL_ID") == call_id);
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Bitrix24 requests per click-to-call: HTTP requests (against the portal's limit) and the methods in them,
/// the offline polls apart.
fn requests_per_click(requests: &[b24emu::RecordedRequest], n: usize, over: chrono::TimeDelta) {
    let mut http: BTreeMap<&str, usize> = BTreeMap::new();
    let mut methods: BTreeMap<&str, usize> = BTreeMap::new();
    for r in requests {
        if r.batch_parent.is_none() {
            *http.entry(r.method.as_str()).or_default() += 1;
        }
        if r.method != "batch" {
            *methods.entry(r.method.as_str()).or_default() += 1;
        }
    }
    let polls = http.remove(POLL).unwrap_or(0);
    methods.remove(POLL);
    let per = |count: usize| count as f64 / n.max(1) as f64;
    let total: usize = http.values().sum();
    println!(
        "  Bitrix24 requests per click-to-call: {:.2} HTTP requests ({}), methods {}",
        per(total),
        http.iter()
            .map(|(m, c)| format!("{m} {:.2}", per(*c)))
            .collect::<Vec<_>>()
            .join(", "),
        methods
            .iter()
            .map(|(m, c)| format!("{m} {:.2}", per(*c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if polls > 0 {
        let secs = over.num_milliseconds() as f64 / 1000.0;
        println!(
            "  event.offline.get polls: {polls} over {secs:.0} s ({:.2}/s, {:.2} per click)",
            polls as f64 / secs,
            per(polls)
        );
    }
}

const TOKEN: &str = "autodist-bench-token";
/// Contacts 1..=KNOWN of user 2 (extension 102), client i at +7900200iiii.
const KNOWN: u64 = 200;
const PARALLEL: usize = 50;

fn client(i: u64) -> String {
    format!("+7900200{i:04}")
}

#[derive(Clone, Copy)]
enum Via {
    Http(u16),
    Agi(u16),
}

/// One look-up as the dialplan makes it; its answer (the extension, empty for none) and how long it took.
async fn ask(via: Via, phone: &str, call: &str) -> (String, f64) {
    let started = Instant::now();
    let answer = match via {
        Via::Http(port) => {
            // A new connection per request, as CURL() makes it.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client");
            let response = http
                .get(format!("http://127.0.0.1:{port}/autodistribution"))
                .query(&[("phone", phone), ("call", call), ("token", TOKEN)])
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => format!("error {e}"),
            }
        }
        Via::Agi(port) => agi(port, phone, call).await.unwrap_or_else(|e| format!("error {e}")),
    };
    (answer.trim().to_owned(), started.elapsed().as_secs_f64() * 1000.0)
}

/// A FastAGI session as Asterisk opens it: the environment, then the server's `SET VARIABLE` (the answer),
/// acknowledged; returns the value set.
async fn agi(port: u16, phone: &str, call: &str) -> std::io::Result<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (read, mut write) = stream.into_split();
    let env = format!(
        "agi_network: yes\nagi_network_script: autodistribution\nagi_request: agi://127.0.0.1:{port}/autodistribution\n\
         agi_channel: PJSIP/carrier-00000001\nagi_uniqueid: {call}\nagi_callerid: {phone}\nagi_arg_1: {phone}\n\n"
    );
    write.write_all(env.as_bytes()).await?;
    let mut reader = BufReader::new(read);
    let mut command = String::new();
    reader.read_line(&mut command).await?;
    write.write_all(b"200 result=1\n").await?;
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest).await;
    // `SET VARIABLE RINGLINK_EXTENSION "102"`
    Ok(command
        .trim()
        .rsplit_once(' ')
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .unwrap_or_default())
}

/// `label`: times and how many answered the manager's extension (102).
fn report(label: &str, answers: Vec<(String, f64)>) {
    let n = answers.len();
    let right = answers.iter().filter(|(a, _)| a == "102").count();
    let mut others: BTreeMap<String, usize> = BTreeMap::new();
    for (a, _) in answers.iter().filter(|(a, _)| a != "102") {
        *others
            .entry(if a.is_empty() { "(empty)".into() } else { a.clone() })
            .or_default() += 1;
    }
    summary(label, answers.into_iter().map(|(_, t)| t).collect());
    println!("    answered 102: {right}/{n}; otherwise {others:?}");
}

async fn autodistribution() {
    println!("== auto-distribution answer time (default budget 300 ms, standard plan 2 requests/s burst 50) ==");
    let mut emu_config = EmulatorConfig::default();
    for i in 1..=KNOWN {
        // Stored the way a look-up searches it (the test bed's rule +7… → 8…).
        emu_config.contacts.push(
            SeedEntity::new(i)
                .field("NAME", format!("Client {i}"))
                .field("ASSIGNED_BY_ID", "2")
                .phone(&client(i).replacen("+7", "8", 1), "WORK"),
        );
    }
    let (http, agi_port) = (free_port(), free_port());
    let extra = harness::autodistribution_config(http, agi_port, TOKEN, "", "");
    let e2e = E2e::start_with(emu_config, &extra).await;
    e2e.wait_log("users directory refreshed", WAIT).await;
    settle(&e2e, Duration::from_secs(2)).await;
    let sequential: u64 = 30;
    let mut next = 1;
    let mut take = |count: u64| {
        let range = next..next + count;
        next += count;
        range
    };
    for (name, via) in [("HTTP", Via::Http(http)), ("FastAGI", Via::Agi(agi_port))] {
        let numbers = take(sequential);
        let mut misses = Vec::new();
        for i in numbers.clone() {
            misses.push(ask(via, &client(i), &format!("bench-{name}-{i}")).await);
            // Within the portal's 2 requests/s, so each look-up finds room in the budget.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        report(&format!("{name}, cache miss (the CRM asked), one at a time"), misses);
        let mut hits = Vec::new();
        for i in numbers {
            hits.push(ask(via, &client(i), &format!("bench-{name}-{i}-again")).await);
        }
        report(&format!("{name}, cache hit, one at a time"), hits);
        // The portal's budget full again before the burst.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let numbers = take(PARALLEL as u64);
        let at_once = |tag: &'static str| {
            futures::future::join_all(
                numbers
                    .clone()
                    .map(|i| async move { ask(via, &client(i), &format!("bench-{name}-{i}-{tag}")).await }),
            )
        };
        report(
            &format!("{name}, {PARALLEL} cache misses at once"),
            at_once("burst").await,
        );
        // Look-ups the budget cut short go on and fill the cache.
        settle(&e2e, Duration::from_secs(2)).await;
        report(&format!("{name}, {PARALLEL} cache hits at once"), at_once("hit").await);
    }
    let searches = e2e
        .emu
        .requests()
        .iter()
        .filter(|r| r.method == "telephony.externalcall.searchcrmentities")
        .count();
    println!("  CRM look-ups sent: {searches} (one per number; hits ask nothing)");
    e2e.stop().await;
}
