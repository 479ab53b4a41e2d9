//! Emulator throughput: requests per second over loopback HTTP with keep-alive clients.
//! Run: `cargo bench -p b24emu --bench requests` (optional args: total requests, concurrency).

use std::time::{Duration, Instant};

use b24emu::{Emulator, EmulatorConfig};
use serde_json::{json, Value};

async fn run<F, Fut>(label: &str, total: usize, concurrency: usize, make: F)
where
    F: Fn(reqwest::Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let make = make.clone();
        let client = reqwest::Client::new();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            let mut i = worker;
            while i < total {
                if make(client.clone(), i).await {
                    ok += 1;
                }
                i += concurrency;
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    let rate = total as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    println!(
        "{label:<40} {total:>6} requests, {concurrency:>3} concurrent: {rate:>9.0} req/s ({ok} ok, {:.2?} per request)",
        elapsed / total.max(1) as u32
    );
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let total = args.first().copied().unwrap_or(20_000);
    let concurrency = args.get(1).copied().unwrap_or(16);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let mut cfg = EmulatorConfig::default();
        // Measure the emulator, not the rate limit.
        cfg.limits.bucket_enabled = false;
        let emu = match Emulator::start(cfg).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("cannot start the emulator: {e}");
                return;
            }
        };
        let hook = emu.webhook_url();

        let url = format!("{hook}user.current.json");
        run("user.current (webhook, JSON)", total, concurrency, move |c, _| {
            let url = url.clone();
            async move {
                c.post(&url)
                    .json(&json!({}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;

        let url = format!("{hook}crm.duplicate.findbycomm.json");
        run("crm.duplicate.findbycomm (form)", total, concurrency, move |c, i| {
            let url = url.clone();
            async move {
                let body = format!("type=PHONE&values[]=%2B7900{i:07}");
                c.post(&url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;

        let pairs = total / 4;
        let url = hook.clone();
        run(
            "register + finish (2 requests per call)",
            pairs,
            concurrency,
            move |c, i| {
                let base = url.clone();
                async move {
                    let reg = json!({"USER_ID": 1 + (i % 3), "PHONE_NUMBER": format!("+7901{i:07}"), "TYPE": 2,
                    "EXTERNAL_CALL_ID": format!("bench-{i}"), "CRM_CREATE": 1});
                    let Ok(resp) = c
                        .post(format!("{base}telephony.externalcall.register.json"))
                        .json(&reg)
                        .send()
                        .await
                    else {
                        return false;
                    };
                    let Ok(body) = resp.json::<Value>().await else {
                        return false;
                    };
                    let Some(call_id) = body["result"]["CALL_ID"].as_str() else {
                        return false;
                    };
                    let fin = json!({"CALL_ID": call_id, "USER_ID": 1, "DURATION": 5});
                    c.post(format!("{base}telephony.externalcall.finish.json"))
                        .json(&fin)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;

        let url = format!("{hook}batch.json");
        run("batch of 10 crm.lead.get", total / 10, concurrency, move |c, _| {
            let url = url.clone();
            async move {
                let cmd: serde_json::Map<String, Value> = (0..10)
                    .map(|k| (format!("c{k}"), json!(format!("crm.lead.get?id={}", k + 1))))
                    .collect();
                c.post(&url)
                    .json(&json!({"cmd": cmd}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        println!("recorded requests: {}", emu.requests().len());
        tokio::time::sleep(Duration::from_millis(10)).await;
        emu.shutdown().await;
    });
}
