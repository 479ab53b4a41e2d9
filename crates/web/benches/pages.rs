//! Render time of the journal page (each of its filters), a call's timeline, `/status` and `/metrics` over HTTP
//! with 100,000 calls in the store (p50/p99 of sequential requests), of the journal `journal/mod.rs` makes.
//!
//! `cargo bench -p web --bench pages` (CALLS=… to change the store's size; PAGES=status,metrics to measure
//! only the pages whose name contains one of those words).

mod journal;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use store::{NewStep, SqliteStore, Store, Timestamp};
use web::{Telemetry, Wake, Web, WebSettings};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn fill(store: &SqliteStore, calls: usize) {
    let start = Timestamp::now().saturating_sub(Duration::from_secs(calls as u64 * 30));
    for chunk in (0..calls).collect::<Vec<_>>().chunks(1000) {
        let mut entries = Vec::new();
        let mut steps = Vec::new();
        for &i in chunk {
            let (call, number, journal) = journal::call(i, start);
            entries.extend(journal);
            steps.push(NewStep::new(
                &call,
                format!("{call}/register"),
                "register",
                json!({"PHONE_NUMBER": number}),
            ));
        }
        store.append_journal(&entries).expect("journal");
        store.enqueue(&steps, Timestamp::now()).expect("steps");
    }
}

async fn measure(http: &reqwest::Client, url: &str, cookie: Option<&str>, n: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = http.get(url);
        if let Some(c) = cookie {
            request = request.header("cookie", c);
        }
        let started = Instant::now();
        let response = request.send().await.expect("GET");
        assert!(response.status().is_success(), "{url}: {}", response.status());
        let _ = response.bytes().await.expect("body");
        times.push(started.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

#[tokio::main]
async fn main() {
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let pages: Vec<String> = std::env::var("PAGES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("bench.db")).expect("store");
    let filled = Instant::now();
    fill(&store, calls);
    eprintln!("{calls} calls stored in {:?}", filled.elapsed());
    store
        .set_setting(
            web::PASSWORD_SETTING,
            &json!(web::hash_password("bench password 1").expect("hash")),
            Timestamp::now(),
        )
        .expect("password");
    let telemetry = Arc::new(Telemetry::new("bench"));
    let settings = WebSettings {
        listen: "127.0.0.1:0".into(),
        ..WebSettings::default()
    };
    let ui = Web::new(settings, Arc::new(store.clone()), telemetry, Wake::default()).expect("web");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(web::serve(listener, ui, std::future::pending()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // Log in once.
    let page = http.get(format!("{base}/login")).send().await.expect("login page");
    let form = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix("ringlink_form=")
                .and_then(|v| v.split(';').next())
                .map(str::to_owned)
        })
        .expect("form cookie");
    let login = http
        .post(format!("{base}/login"))
        .header("cookie", format!("ringlink_form={form}"))
        .form(&[("csrf", form.as_str()), ("password", "bench password 1")])
        .send()
        .await
        .expect("login");
    let session = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix("ringlink_session=")
                .and_then(|v| v.split(';').next())
                .map(str::to_owned)
        })
        .expect("session");
    let cookie = format!("ringlink_session={session}");
    let middle = format!("{}.{}", 1_700_000_000 + calls / 2, calls / 2);
    // A whole day a quarter of the way back from the latest call (UTC: the UI's zone here).
    let day = chrono::Utc::now() - chrono::Duration::seconds(calls as i64 * 30 / 4);
    let day = day.format("%Y-%m-%d");
    for (name, path, n) in [
        ("journal (latest 50)", "/calls".to_owned(), 200),
        (
            "journal, filter by number",
            "/calls?number=%2B79000004999".to_owned(),
            50,
        ),
        ("journal, employee 105", "/calls?employee=105".to_owned(), 50),
        ("journal, has errors (none match)", "/calls?errors=1".to_owned(), 20),
        ("journal, missed", "/calls?result=missed".to_owned(), 50),
        ("journal, one day", format!("/calls?from={day}&to={day}"), 50),
        ("call timeline", format!("/calls/{middle}"), 200),
        ("/status", "/status".to_owned(), 200),
        ("/metrics", "/metrics".to_owned(), 200),
    ] {
        if !pages.is_empty() && !pages.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        let (p50, p99) = measure(&http, &format!("{base}{path}"), Some(&cookie), n).await;
        println!(
            "{name:36} p50 {:>9.2} ms   p99 {:>9.2} ms   ({n} requests)",
            ms(p50),
            ms(p99)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
