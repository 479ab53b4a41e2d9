//! `kill -9` at random instants: a child process works the outbox and prints every operation the store
//! acknowledged; the parent kills it mid-flight, reopens the database, and checks that it opens cleanly, that
//! every acknowledged operation is there, and that no batch is half-written. Then the next child carries on with
//! the same file (WAL recovery, migrations on an existing file, leases left behind by the killed child).
//!
//! The child is this test binary run again with `crash_child` selected and the database path in the environment.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use serde_json::{json, Value};
use store::{EntryKind, Lease, NewJournalEntry, NewStep, Outcome, SqliteStore, StepState, Store, Timestamp};

const DB_ENV: &str = "STORE_CRASH_CHILD_DB";
const ROUND_ENV: &str = "STORE_CRASH_CHILD_ROUND";
const ROUNDS: u64 = 50;
const STEPS_PER_CALL: i64 = 3;
const LEASE: Duration = Duration::from_secs(30);

/// The logical clock of a child: rounds are far apart, so leases of a killed child have run out in the next.
fn child_now(round: u64, iteration: u64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + (round * 100_000 + iteration) as i64)
}

fn call_steps(call: &str) -> Vec<NewStep> {
    (1..=STEPS_PER_CALL)
        .map(|n| NewStep::new(call, format!("{call}/{n}"), "step", json!({ "call": call, "n": n })))
        .collect()
}

fn ack(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // Best effort: if the parent is gone there is nobody to tell.
    let _ = writeln!(out, "ACK {line}");
    let _ = out.flush();
}

/// The child half: runs only when the parent starts this binary with the database path set.
#[test]
#[ignore = "the child process of kill9_never_loses_an_acknowledged_operation, started by it"]
fn crash_child() {
    let (Ok(path), Ok(round)) = (std::env::var(DB_ENV), std::env::var(ROUND_ENV)) else {
        eprintln!("crash_child runs only as the child of kill9_never_loses_an_acknowledged_operation");
        return;
    };
    let round: u64 = round.parse().expect("round number from the parent");
    let store = SqliteStore::open(&path).expect("child opens the database");
    ack(format_args!("OPEN {round}"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(round);
    let started = Instant::now();
    // The parent kills the child long before this; the bound only keeps an orphan from running forever.
    for iteration in 0.. {
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        let now = child_now(round, iteration);
        let call = format!("r{round}-c{iteration}");
        store.enqueue(&call_steps(&call), now).expect("enqueue");
        ack(format_args!("ENQ {call}"));

        let entries = [
            NewJournalEntry::new(&call, now, EntryKind::Ami, "Newchannel"),
            NewJournalEntry::new(&call, now, EntryKind::Decision, "register").data(json!({ "call": call })),
        ];
        store.append_journal(&entries).expect("journal");
        ack(format_args!("JRN {call}"));

        let claimed = store.claim_due(now, 4, LEASE).expect("claim").claimed;
        let outcomes: Vec<(Lease, Outcome)> = claimed
            .iter()
            .map(|step| {
                let outcome = if rng.gen_bool(0.2) {
                    Outcome::Retry {
                        error: "503".into(),
                        next_attempt_at: now,
                    }
                } else {
                    Outcome::Done(json!({ "key": step.idempotency_key, "attempt": step.attempts }))
                };
                (step.lease(), outcome)
            })
            .collect();
        // Half of the rounds record a worker's answers one by one, half all at once.
        let together = round % 2 == 1;
        if together {
            assert!(store.mark_many(&outcomes, now).expect("mark_many").is_empty());
        }
        for (step, (lease, outcome)) in claimed.iter().zip(&outcomes) {
            let key = &step.idempotency_key;
            match outcome {
                Outcome::Retry { error, next_attempt_at } => {
                    if !together {
                        store.mark_retry(*lease, error, *next_attempt_at, now).expect("retry");
                    }
                    ack(format_args!("RETRY {key} {}", step.attempts));
                }
                Outcome::Done(result) => {
                    if !together {
                        store.mark_done(*lease, result, now).expect("done");
                    }
                    ack(format_args!("DONE {key} {}", step.attempts));
                }
                Outcome::Failed(_) | Outcome::Dropped(_) => unreachable!("the child only retries or completes"),
            }
        }

        if iteration % 5 == 4 {
            // Re-planning after a restart: the same keys again are no-ops.
            let previous = format!("r{round}-c{}", iteration - 1);
            let again = store.enqueue(&call_steps(&previous), now).expect("re-enqueue");
            assert!(
                again.iter().all(|enqueued| !enqueued.created),
                "re-enqueue created a step"
            );
            ack(format_args!("REPLAN {previous}"));
        }

        store
            .set_setting("progress", &json!([round, iteration]), now)
            .expect("setting");
        ack(format_args!("SET {round} {iteration}"));
    }
}

/// Kills the child if the parent panics half-way.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything the children acknowledged so far.
#[derive(Default)]
struct Acked {
    calls: BTreeSet<String>,
    journalled: BTreeSet<String>,
    done: BTreeMap<String, u32>,
    retried: BTreeMap<String, u32>,
    progress: Option<(u64, u64)>,
    lines: usize,
}

impl Acked {
    fn record(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        self.lines += 1;
        match words.as_slice() {
            ["ACK", "OPEN", _] | ["ACK", "REPLAN", _] => {}
            ["ACK", "ENQ", call] => drop(self.calls.insert(call.to_string())),
            ["ACK", "JRN", call] => drop(self.journalled.insert(call.to_string())),
            ["ACK", "DONE", key, attempt] => drop(self.done.insert(key.to_string(), attempt.parse().unwrap())),
            ["ACK", "RETRY", key, attempt] => {
                let attempt: u32 = attempt.parse().unwrap();
                let seen = self.retried.entry(key.to_string()).or_default();
                *seen = (*seen).max(attempt);
            }
            ["ACK", "SET", round, iteration] => {
                self.progress = Some((round.parse().unwrap(), iteration.parse().unwrap()))
            }
            _ => panic!("unexpected acknowledgement {line:?}"),
        }
    }
}

/// Runs one child until it has acknowledged its start, lets it work for `work`, and kills it. Returns the
/// complete lines it printed (a line cut by the kill is not an acknowledgement).
fn run_and_kill(db: &Path, round: u64, work: Duration) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(DB_ENV, db)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buffer = String::new();
        while reader.read_line(&mut buffer).unwrap_or(0) > 0 {
            // libtest prints "test crash_child ... " with no newline before the test's own output.
            if let (true, Some(start)) = (buffer.ends_with('\n'), buffer.find("ACK ")) {
                let _ = lines_tx.send(buffer[start..].trim_end().to_string());
            }
            buffer.clear();
        }
    });
    let first = lines_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child starts and opens the database");
    assert!(first.starts_with("ACK OPEN"), "{first}");
    std::thread::sleep(work);
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    reader.join().unwrap();
    std::iter::once(first).chain(lines_rx.try_iter()).collect()
}

fn verify(db: &Path, acked: &Acked, context: &str) {
    let store = SqliteStore::open(db).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    assert_eq!(store.integrity_check().unwrap(), Vec::<String>::new(), "{context}");

    // No half-written batch: every call has all its steps, numbered 1..n, and both journal entries or none.
    let raw = Connection::open(db).unwrap();
    let calls: Vec<(String, i64, i64, i64)> = raw
        .prepare("SELECT call_key, COUNT(*), MIN(seq), MAX(seq) FROM steps GROUP BY call_key")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (call, count, min, max) in &calls {
        assert_eq!(
            (*count, *min, *max),
            (STEPS_PER_CALL, 1, STEPS_PER_CALL),
            "{context}: call {call} half-written"
        );
    }
    let journals: Vec<(String, i64)> = raw
        .prepare("SELECT call_key, COUNT(*) FROM journal GROUP BY call_key")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (call, count) in &journals {
        assert_eq!(*count, 2, "{context}: journal of {call} half-written");
    }
    drop(raw);

    let stored_calls: BTreeSet<&String> = calls.iter().map(|(call, ..)| call).collect();
    for call in &acked.calls {
        assert!(stored_calls.contains(call), "{context}: acknowledged call {call} lost");
        for step in store.steps_of_call(call).unwrap() {
            assert_eq!(step.payload, json!({ "call": call, "n": step.seq }), "{context}");
        }
    }
    for call in &acked.journalled {
        assert_eq!(
            store.call_timeline(call).unwrap().len(),
            2,
            "{context}: journal of {call} lost"
        );
    }
    for (key, attempt) in &acked.done {
        let step = store
            .step_by_key(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: done step {key} lost"));
        assert_eq!(step.state, StepState::Done, "{context}: {key}");
        assert_eq!(
            step.result,
            Some(json!({ "key": key, "attempt": attempt })),
            "{context}: {key}"
        );
    }
    for (key, attempt) in &acked.retried {
        let step = store.step_by_key(key).unwrap().unwrap();
        assert!(step.attempts >= *attempt, "{context}: retry of {key} lost");
    }
    if let Some((round, iteration)) = acked.progress {
        let stored = store
            .setting("progress")
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: setting lost"));
        let stored: (u64, u64) = serde_json::from_value(stored).unwrap();
        assert!(
            stored >= (round, iteration),
            "{context}: setting went back to {stored:?}"
        );
    }
    // Every stored step is in a coherent state.
    for call in stored_calls {
        for step in store.steps_of_call(call).unwrap() {
            match step.state {
                StepState::InFlight => assert!(step.lease_until.is_some() && step.attempts > 0, "{context}: {step:?}"),
                StepState::Done => assert!(step.result.is_some() && step.attempts > 0, "{context}: {step:?}"),
                StepState::Pending => assert!(step.lease_until.is_none(), "{context}: {step:?}"),
                StepState::Dropped | StepState::Failed => panic!("{context}: nobody drops or fails here: {step:?}"),
            }
        }
    }
}

#[test]
fn kill9_never_loses_an_acknowledged_operation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ringlink.db");
    let seed: u64 = std::env::var("STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked = Acked::default();
    for round in 0..ROUNDS {
        let work = Duration::from_micros(rng.gen_range(0..120_000));
        for line in run_and_kill(&db, round, work) {
            acked.record(&line);
        }
        verify(
            &db,
            &acked,
            &format!("seed {seed}, round {round}, killed after {work:?}"),
        );
    }
    eprintln!(
        "seed {seed}: {ROUNDS} kills, {} acknowledgements: {} calls enqueued, {} steps done, {} retried",
        acked.lines,
        acked.calls.len(),
        acked.done.len(),
        acked.retried.len()
    );
    assert!(
        acked.done.len() > 10 && acked.calls.len() > 10,
        "the children got work done: {} acks",
        acked.lines
    );

    // After the last crash, a worker finishes everything: no step was lost, each is done exactly once.
    let store = SqliteStore::open(&db).unwrap();
    let now = child_now(ROUNDS + 1, 0);
    loop {
        let claimed = store.claim_due(now, 100, LEASE).unwrap().claimed;
        if claimed.is_empty() {
            break;
        }
        for step in claimed {
            store.mark_done(step.lease(), &Value::Null, now).unwrap();
        }
    }
    let counts = store.step_counts().unwrap();
    assert_eq!(counts.done, counts.total(), "{counts:?}");
    assert!(counts.total() >= acked.calls.len() as u64 * STEPS_PER_CALL as u64);
}
