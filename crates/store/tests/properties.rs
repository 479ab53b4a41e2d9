//! Random interleavings of enqueue / claim / done / retry / fail / drop / lease expiry across several calls:
//! no step is ever due or claimed out of its call's order, none is lost, none changes identity, and a stale
//! lease never overwrites a newer attempt.

mod backends;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use backends::Backend;
use proptest::prelude::*;
use serde_json::json;
use store::{Lease, NewStep, SqliteStore, Step, StepId, StepState, Store, StoreError, Timestamp};

const CALLS: u8 = 4;

#[derive(Debug, Clone)]
enum Op {
    /// Enqueue `count` new steps for a call, some expiring, and re-enqueue `replay` of its existing keys.
    Enqueue {
        call: u8,
        count: u8,
        expire_in: Option<u8>,
        replay: u8,
    },
    Claim {
        limit: u8,
        lease_secs: u8,
    },
    Done {
        pick: usize,
    },
    Retry {
        pick: usize,
        delay_secs: u8,
    },
    Fail {
        pick: usize,
    },
    Drop {
        pick: usize,
    },
    DropPending {
        call: u8,
        index: usize,
    },
    Advance {
        secs: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CALLS, 1..4u8, prop::option::of(1..30u8), 0..3u8)
            .prop_map(|(call, count, expire_in, replay)| Op::Enqueue { call, count, expire_in, replay }),
        4 => (1..6u8, 1..20u8).prop_map(|(limit, lease_secs)| Op::Claim { limit, lease_secs }),
        4 => any::<usize>().prop_map(|pick| Op::Done { pick }),
        2 => (any::<usize>(), 0..10u8).prop_map(|(pick, delay_secs)| Op::Retry { pick, delay_secs }),
        1 => any::<usize>().prop_map(|pick| Op::Fail { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
        1 => (0..CALLS, any::<usize>()).prop_map(|(call, index)| Op::DropPending { call, index }),
        3 => (0..25u8).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// What the test knows independently of the store.
#[derive(Default)]
struct Model {
    now: i64,
    /// Every key ever enqueued, with the id the store gave it and whether it may expire.
    keys: BTreeMap<String, (StepId, bool)>,
    /// Keys per call, in enqueue order.
    by_call: BTreeMap<u8, Vec<String>>,
    /// Leases the simulated workers hold (some become stale).
    held: Vec<Lease>,
    /// Steps the test failed or dropped on purpose.
    failed: BTreeSet<StepId>,
    dropped: BTreeSet<StepId>,
    /// The seq of every step marked done, per call, in the order they were marked.
    done_order: BTreeMap<String, Vec<i64>>,
}

impl Model {
    fn now(&self) -> Timestamp {
        Timestamp::from_secs(self.now)
    }

    fn take_lease(&mut self, pick: usize) -> Option<Lease> {
        if self.held.is_empty() {
            return None;
        }
        let index = pick % self.held.len();
        Some(self.held.swap_remove(index))
    }
}

fn step_by_id(store: &dyn Store, model: &Model, id: StepId) -> Step {
    let key = model
        .keys
        .iter()
        .find(|(_, (known, _))| *known == id)
        .map(|(key, _)| key.clone())
        .unwrap();
    store.step_by_key(&key).unwrap().unwrap()
}

/// Every earlier step of `step`'s call is done, dropped or failed.
fn earlier_are_terminal(store: &dyn Store, step: &Step) -> bool {
    store
        .steps_of_call(&step.call_key)
        .unwrap()
        .iter()
        .filter(|s| s.seq < step.seq)
        .all(|s| s.state.is_terminal())
}

fn check_invariants(store: &dyn Store, model: &Model) -> Result<(), TestCaseError> {
    let now = model.now();
    let mut total = 0;
    let mut expected_due = BTreeSet::new();
    for keys in model.by_call.values() {
        let Some(first_key) = keys.first() else { continue };
        let call_key = store.step_by_key(first_key).unwrap().unwrap().call_key;
        let steps = store.steps_of_call(&call_key).unwrap();
        total += steps.len();
        let seqs: Vec<i64> = steps.iter().map(|s| s.seq).collect();
        prop_assert_eq!(
            seqs,
            (1..=steps.len() as i64).collect::<Vec<_>>(),
            "seqs of {} are 1..n",
            call_key
        );
        for (index, step) in steps.iter().enumerate() {
            prop_assert_eq!(
                model.keys.get(&step.idempotency_key).map(|k| k.0),
                Some(step.id),
                "identity kept"
            );
            if step.state == StepState::InFlight {
                prop_assert!(
                    steps[..index].iter().all(|s| s.state.is_terminal()),
                    "{step:?} in flight out of order"
                );
                prop_assert!(step.lease_until.is_some());
            }
        }
        // The first open step of the call is due exactly when nobody holds it, its time came and it has not expired.
        if let Some(first_open) = steps.iter().find(|s| !s.state.is_terminal()) {
            let unheld = first_open.state == StepState::Pending || first_open.lease_until.is_some_and(|end| end <= now);
            let alive = first_open.expires_at.is_none_or(|end| end > now);
            if unheld && alive && first_open.next_attempt_at <= now {
                expected_due.insert(first_open.id);
            }
        }
    }
    prop_assert_eq!(total, model.keys.len(), "no step lost or invented");
    prop_assert_eq!(store.step_counts().unwrap().total() as usize, model.keys.len());

    let due = store.due_steps(now, 1000).unwrap();
    let due_ids: BTreeSet<StepId> = due.iter().map(|s| s.id).collect();
    prop_assert_eq!(due_ids.len(), due.len());
    for step in &due {
        prop_assert!(earlier_are_terminal(store, step), "{step:?} due out of order");
    }
    prop_assert_eq!(due_ids, expected_due, "due steps are exactly the reachable ones");

    for (call, seqs) in &model.done_order {
        prop_assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "call {} done out of order: {:?}",
            call,
            seqs
        );
    }
    Ok(())
}

/// Marks a held lease and checks the store accepts it exactly when the lease is current.
fn finish(store: &dyn Store, model: &mut Model, lease: Lease, how: &Op) -> Result<(), TestCaseError> {
    let before = step_by_id(store, model, lease.step);
    let current = before.state == StepState::InFlight && before.attempts == lease.attempt;
    let now = model.now();
    let outcome = match how {
        Op::Done { .. } => store.mark_done(lease, &json!({"attempt": lease.attempt}), now),
        Op::Retry { delay_secs, .. } => store.mark_retry(
            lease,
            "try later",
            now.saturating_add(Duration::from_secs(u64::from(*delay_secs))),
            now,
        ),
        Op::Fail { .. } => store.mark_failed(lease, "refused", now),
        _ => store.mark_dropped(lease, "not needed", now),
    };
    match outcome {
        Ok(()) => {
            prop_assert!(current, "a stale lease was accepted: {lease:?} on {before:?}");
            match how {
                Op::Done { .. } => model
                    .done_order
                    .entry(before.call_key.clone())
                    .or_default()
                    .push(before.seq),
                Op::Fail { .. } => drop(model.failed.insert(lease.step)),
                Op::Drop { .. } => drop(model.dropped.insert(lease.step)),
                _ => {}
            }
        }
        Err(StoreError::LeaseLost { .. }) => prop_assert!(!current, "a current lease was refused: {lease:?}"),
        Err(other) => return Err(TestCaseError::fail(format!("unexpected error {other}"))),
    }
    let after = step_by_id(store, model, lease.step);
    if !current {
        prop_assert_eq!(after, before, "a refused mark changed nothing");
    }
    Ok(())
}

fn apply(store: &dyn Store, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let now = model.now();
    match op {
        Op::Enqueue {
            call,
            count,
            expire_in,
            replay,
        } => {
            let existing = model.by_call.get(call).cloned().unwrap_or_default();
            let mut batch = Vec::new();
            for key in existing.iter().rev().take(usize::from(*replay)) {
                batch.push(NewStep::new(
                    format!("call-{call}"),
                    key.clone(),
                    "again",
                    json!({"replayed": true}),
                ));
            }
            for made in 0..usize::from(*count) {
                let number = existing.len() + made;
                let key = format!("call-{call}/{number}");
                let mut step = NewStep::new(format!("call-{call}"), key, "step", json!({ "n": number }));
                if let Some(secs) = expire_in {
                    step = step.expires_at(now.saturating_add(Duration::from_secs(u64::from(*secs))));
                }
                batch.push(step);
            }
            let outcome = store.enqueue(&batch, now).unwrap();
            for (new, enqueued) in batch.iter().zip(&outcome) {
                match model.keys.get(&new.idempotency_key) {
                    Some((id, _)) => {
                        prop_assert!(!enqueued.created);
                        prop_assert_eq!(enqueued.step.id, *id);
                    }
                    None => {
                        prop_assert!(enqueued.created);
                        model.keys.insert(
                            new.idempotency_key.clone(),
                            (enqueued.step.id, new.expires_at.is_some()),
                        );
                        model
                            .by_call
                            .entry(*call)
                            .or_default()
                            .push(new.idempotency_key.clone());
                    }
                }
            }
        }
        Op::Claim { limit, lease_secs } => {
            let lease = Duration::from_secs(u64::from(*lease_secs));
            let outcome = store.claim_due(now, usize::from(*limit), lease).unwrap();
            prop_assert!(outcome.claimed.len() <= usize::from(*limit));
            let calls: BTreeSet<&str> = outcome.claimed.iter().map(|s| s.call_key.as_str()).collect();
            prop_assert_eq!(calls.len(), outcome.claimed.len(), "at most one step per call");
            for step in &outcome.claimed {
                prop_assert_eq!(step.state, StepState::InFlight);
                prop_assert!(earlier_are_terminal(store, step), "{step:?} claimed out of order");
                model.held.push(step.lease());
            }
            for step in &outcome.expired {
                prop_assert_eq!(step.state, StepState::Dropped);
                prop_assert!(step.expires_at.is_some_and(|end| end <= now));
            }
        }
        Op::Done { pick } | Op::Retry { pick, .. } | Op::Fail { pick } | Op::Drop { pick } => {
            if let Some(lease) = model.take_lease(*pick) {
                finish(store, model, lease, op)?;
            }
        }
        Op::DropPending { call, index } => {
            let Some(keys) = model.by_call.get(call) else {
                return Ok(());
            };
            let key = keys[index % keys.len()].clone();
            let before = store.step_by_key(&key).unwrap().unwrap();
            let unheld = before.state == StepState::Pending
                || (before.state == StepState::InFlight && before.lease_until.is_some_and(|end| end <= now));
            let dropped = store.drop_pending(&key, "withdrawn", now).unwrap();
            prop_assert_eq!(dropped, unheld);
            if dropped {
                model.dropped.insert(before.id);
            }
        }
        Op::Advance { secs } => model.now += i64::from(*secs),
    }
    Ok(())
}

/// Runs the property on `cases` random histories, each on a fresh store: a new in-memory SQLite database, or a new
/// tenant in one PostgreSQL database (so the cases also show that tenants start empty and stay apart).
fn steps_are_never_out_of_order_nor_lost(backend: Backend, cases: u32) {
    let base = backend.open();
    let case = std::cell::Cell::new(0);
    let config = ProptestConfig {
        cases,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..80), |ops| {
        case.set(case.get() + 1);
        let fresh = match backend {
            Backend::Sqlite => None,
            Backend::Postgres | Backend::PostgresTls => Some(base.other_tenant(&format!("case-{}", case.get()))),
        };
        let in_memory = SqliteStore::open_in_memory().unwrap();
        let store: &dyn Store = match &fresh {
            Some(store) => &**store,
            None => &in_memory,
        };
        history_keeps_order_and_loses_nothing(store, &ops)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

fn history_keeps_order_and_loses_nothing(store: &dyn Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model {
        now: 1_700_000_000,
        ..Model::default()
    };
    for op in ops {
        apply(store, &mut model, op)?;
        check_invariants(store, &model)?;
    }

    // Drain: every worker is gone, leases run out, and the outbox is worked off.
    model.held.clear();
    model.now += 1_000;
    for _ in 0..=model.keys.len() {
        let claimed = store
            .claim_due(model.now(), 1000, Duration::from_secs(10))
            .unwrap()
            .claimed;
        if claimed.is_empty() {
            break;
        }
        for step in claimed {
            prop_assert!(earlier_are_terminal(store, &step));
            store.mark_done(step.lease(), &json!(null), model.now()).unwrap();
            model
                .done_order
                .entry(step.call_key.clone())
                .or_default()
                .push(step.seq);
        }
        check_invariants(store, &model)?;
    }
    // Nothing is left open, and only what was given up on purpose or expired is not done.
    let counts = store.step_counts().unwrap();
    prop_assert_eq!(counts.pending + counts.in_flight, 0, "{:?}", counts);
    for (key, (id, may_expire)) in &model.keys {
        let step = store.step_by_key(key).unwrap().unwrap();
        match step.state {
            StepState::Done => {}
            StepState::Failed => prop_assert!(model.failed.contains(id), "{step:?} failed by itself"),
            StepState::Dropped => {
                prop_assert!(model.dropped.contains(id) || *may_expire, "{step:?} dropped by itself")
            }
            StepState::Pending | StepState::InFlight => prop_assert!(false, "{step:?} left open"),
        }
    }
    Ok(())
}

#[test]
fn sqlite_steps_are_never_out_of_order_nor_lost() {
    steps_are_never_out_of_order_nor_lost(Backend::Sqlite, 160);
}

/// Fewer cases: each one is a few thousand round trips to the server.
#[test]
fn postgres_steps_are_never_out_of_order_nor_lost() {
    steps_are_never_out_of_order_nor_lost(Backend::Postgres, 24);
}
