//! Outbox throughput, SQLite against PostgreSQL, with 1 and 4 workers at once: enqueue (one transaction per
//! call of four steps, as the engine writes a plan) and a worker's round (claim up to 50 due steps out of a
//! backlog of at most 1,000, then record their answers in one `mark_many`, as after a Bitrix24 `batch`), and
//! the same round out of a large backlog: 5,000 open steps in calls of four (register, show, hide, finish), as
//! when catching up after a Bitrix24 outage — only the first open step of each call may be claimed.
//!
//! `cargo bench -p store --bench outbox_backends`; steps per second = elements/s in criterion's "thrpt" line.
//! SQLite is a file with its default options (`synchronous = FULL`); PostgreSQL is a throwaway server of the
//! test bed on 127.0.0.1 with `fsync` on (as in production), its store leading its tenant so that every write
//! pays for the fencing check as in a service. Workers are threads sharing one store, as a service's are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use store::{Lease, NewStep, Outcome, PgOptions, PgStore, SqliteStore, Store, Timestamp};
use testbed::postgres::Postgres;

const LEASE: Duration = Duration::from_secs(60);
const ROUND: usize = 50;
/// The most due steps the claim rounds find waiting.
const BACKLOG: usize = 1000;
/// The open steps the large-backlog rounds find waiting (calls of four steps).
const LARGE_BACKLOG: usize = 5000;
/// The large-backlog rounds measured between two top-ups of the backlog.
const ROUNDS_PER_TOP_UP: u64 = 10;
const KINDS: [&str; 4] = ["register", "show", "hide", "finish"];

fn payload() -> serde_json::Value {
    json!({
        "USER_PHONE_INNER": "101", "USER_ID": 7, "PHONE_NUMBER": "+79161234567", "TYPE": 2,
        "CALL_START_DATE": "2024-01-01T12:00:00+03:00", "CRM_CREATE": 1, "LINE_NUMBER": "74950000000", "SHOW": 1
    })
}

fn step(call: u64, kind: &str) -> NewStep {
    NewStep::new(format!("c{call}"), format!("c{call}/{kind}"), kind, payload())
}

/// Runs `iterations` of `one` spread over `workers` threads; the wall time of the whole.
fn on_workers(workers: usize, iterations: u64, one: impl Fn() + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..workers as u64 {
            let share = iterations / workers as u64 + u64::from(worker < iterations % workers as u64);
            let one = &one;
            scope.spawn(move || (0..share).for_each(|_| one()));
        }
    });
    started.elapsed()
}

fn bench_backend(c: &mut Criterion, backend: &str, store: &dyn Store) {
    let calls = AtomicU64::new(0);
    let next_call = || calls.fetch_add(1, Ordering::Relaxed) + 1;
    for workers in [1, 4] {
        let mut group = c.benchmark_group(format!("outbox/{backend}/{workers} workers"));
        group.sample_size(10).measurement_time(Duration::from_secs(5));

        group.throughput(Throughput::Elements(4));
        group.bench_function("enqueue call of 4 steps", |b| {
            b.iter_custom(|iterations| {
                on_workers(workers, iterations, || {
                    let call = next_call();
                    let steps = KINDS.map(|kind| step(call, kind));
                    store.enqueue(&steps, Timestamp::from_secs(1)).expect("enqueue");
                })
            })
        });

        group.throughput(Throughput::Elements(ROUND as u64));
        group.bench_function("claim 50 + mark_many", |b| {
            b.iter_custom(|iterations| {
                // In chunks of BACKLOG steps, enqueued due before the chunk's rounds start (not measured): the
                // rounds claim from a backlog of at most BACKLOG steps, as a worker catching up after a pause.
                measured_rounds(store, workers, iterations, (BACKLOG / ROUND) as u64, |rounds| {
                    let steps: Vec<NewStep> = (0..rounds * ROUND as u64)
                        .map(|_| step(next_call(), "register"))
                        .collect();
                    store.enqueue(&steps, Timestamp::from_secs(1)).expect("enqueue");
                })
            })
        });
        group.finish();
    }
}

/// `iterations` rounds on `workers` threads, in chunks of at most `chunk` rounds; `top_up(rounds)` fills the
/// backlog before each chunk (not measured). Returns the time the rounds took.
fn measured_rounds(
    store: &dyn Store,
    workers: usize,
    iterations: u64,
    chunk: u64,
    mut top_up: impl FnMut(u64),
) -> Duration {
    let now = Timestamp::from_secs(10);
    let answer = json!({"CALL_ID": "externalCall.1"});
    let mut measured = Duration::ZERO;
    let mut left = iterations;
    while left > 0 {
        let rounds = left.min(chunk);
        left -= rounds;
        top_up(rounds);
        measured += on_workers(workers, rounds, || round(store, now, &answer));
    }
    measured
}

/// One worker's round: claim up to [`ROUND`] due steps and record them all done in one `mark_many`.
fn round(store: &dyn Store, now: Timestamp, answer: &serde_json::Value) {
    let claimed = store.claim_due(now, ROUND, LEASE).expect("claim").claimed;
    assert_eq!(claimed.len(), ROUND, "the backlog always holds a round of due steps");
    let marks: Vec<(Lease, Outcome)> = claimed
        .iter()
        .map(|step| (step.lease(), Outcome::Done(answer.clone())))
        .collect();
    assert!(store.mark_many(&marks, now).expect("mark_many").is_empty());
}

/// Claim rounds out of [`LARGE_BACKLOG`] open steps, on a store (or tenant) of their own, topped up between
/// chunks of rounds (not measured).
fn bench_large_backlog(c: &mut Criterion, backend: &str, store: &dyn Store) {
    let calls = AtomicU64::new(0);
    for workers in [1, 4] {
        let mut group = c.benchmark_group(format!("outbox/{backend}/{workers} workers"));
        group.sample_size(10).measurement_time(Duration::from_secs(5));
        group.throughput(Throughput::Elements(ROUND as u64));
        group.bench_function("claim 50 + mark_many, 5,000 open steps", |b| {
            b.iter_custom(|iterations| {
                measured_rounds(store, workers, iterations, ROUNDS_PER_TOP_UP, |_| {
                    let counts = store.step_counts().expect("counts");
                    let open = counts.pending + counts.in_flight;
                    let steps: Vec<NewStep> = (0..(LARGE_BACKLOG as u64).saturating_sub(open) / 4)
                        .flat_map(|_| {
                            let call = calls.fetch_add(1, Ordering::Relaxed) + 1;
                            KINDS.map(|kind| step(call, kind))
                        })
                        .collect();
                    store.enqueue(&steps, Timestamp::from_secs(1)).expect("enqueue");
                })
            })
        });
        group.finish();
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = SqliteStore::open(dir.path().join("bench.db")).expect("open the SQLite database");
    bench_backend(c, "sqlite", &sqlite);
    let sqlite_large = SqliteStore::open(dir.path().join("large.db")).expect("open the SQLite database");
    bench_large_backlog(c, "sqlite", &sqlite_large);

    // On this thread: the server stops when the thread that started it ends.
    let server = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database("bench").expect("create the database");
    let leading = |tenant: &str| {
        let store = PgStore::open(&url, PgOptions::new(tenant)).expect("open the PostgreSQL store");
        let leadership = store.lead("bench", Duration::from_secs(3600)).expect("take the lease");
        assert!(leadership.leads(), "the bench's store leads its tenant");
        store
    };
    let postgres = leading("bench");
    bench_backend(c, "postgresql", &postgres);
    let postgres_large = leading("bench-large");
    bench_large_backlog(c, "postgresql", &postgres_large);
    drop((postgres, postgres_large));
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
