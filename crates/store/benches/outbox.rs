//! Outbox throughput on a file database: enqueue, and a worker's claim + done cycle.
//!
//! `cargo bench -p store --bench outbox`; steps per second = elements/s in criterion's "thrpt" line.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use store::{Lease, NewStep, Outcome, SqliteOptions, SqliteStore, Store, Synchronous, Timestamp};

const LEASE: Duration = Duration::from_secs(60);

fn payload() -> serde_json::Value {
    json!({
        "USER_PHONE_INNER": "101", "USER_ID": 7, "PHONE_NUMBER": "+79161234567", "TYPE": 2,
        "CALL_START_DATE": "2024-01-01T12:00:00+03:00", "CRM_CREATE": 1, "LINE_NUMBER": "74950000000", "SHOW": 1
    })
}

/// A call of four steps, as the engine plans a simple answered call.
fn call_steps(call: u64) -> Vec<NewStep> {
    ["register", "show", "hide", "finish"]
        .map(|kind| NewStep::new(format!("c{call}"), format!("c{call}/{kind}"), kind, payload()))
        .into()
}

fn open(dir: &tempfile::TempDir, synchronous: Synchronous) -> SqliteStore {
    let options = SqliteOptions {
        synchronous,
        ..SqliteOptions::default()
    };
    SqliteStore::open_with(dir.path().join("bench.db"), options).expect("open bench database")
}

fn bench(c: &mut Criterion) {
    for (name, synchronous) in [("full", Synchronous::Full), ("normal", Synchronous::Normal)] {
        let mut group = c.benchmark_group(format!("outbox/{name}"));
        group.sample_size(20).measurement_time(Duration::from_secs(5));

        // One transaction per call: the engine enqueues a call's plan in one batch.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir, synchronous);
        let mut call = 0;
        group.throughput(Throughput::Elements(4));
        group.bench_function("enqueue call of 4 steps", |b| {
            b.iter(|| {
                call += 1;
                store
                    .enqueue(&call_steps(call), Timestamp::from_secs(1))
                    .expect("enqueue")
            })
        });

        // A worker round: claim up to 50 due steps (one per call) in one transaction, then record the 50
        // answers, one transaction each or all in one (as after a Bitrix24 `batch` call).
        for together in [false, true] {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = open(&dir, synchronous);
            let mut call = 0;
            let now = Timestamp::from_secs(10);
            let name = if together {
                "claim 50 + mark_many"
            } else {
                "claim 50 + mark_done each"
            };
            group.throughput(Throughput::Elements(50));
            group.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        let steps: Vec<NewStep> = (0..50)
                            .map(|_| {
                                call += 1;
                                NewStep::new(format!("c{call}"), format!("c{call}/register"), "register", payload())
                            })
                            .collect();
                        store.enqueue(&steps, Timestamp::from_secs(1)).expect("enqueue");
                    },
                    |()| {
                        let claimed = store.claim_due(now, 50, LEASE).expect("claim").claimed;
                        assert_eq!(claimed.len(), 50);
                        let answer = json!({"CALL_ID": "externalCall.1"});
                        if together {
                            let marks: Vec<(Lease, Outcome)> = claimed
                                .iter()
                                .map(|step| (step.lease(), Outcome::Done(answer.clone())))
                                .collect();
                            assert!(store.mark_many(&marks, now).expect("mark_many").is_empty());
                        } else {
                            for step in claimed {
                                store.mark_done(step.lease(), &answer, now).expect("done");
                            }
                        }
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
