//! The outbox: enqueue, ordering, claims and leases, marks, expiry, re-processing, pruning.

mod backends;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backends::Backend;
use serde_json::json;
use store::{NewStep, ReprocessScope, SqliteStore, Step, StepState, Store, StoreError, Timestamp};

const LEASE: Duration = Duration::from_secs(30);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + secs)
}

fn step(call: &str, name: &str) -> NewStep {
    NewStep::new(
        call,
        format!("{call}/{name}"),
        name,
        json!({ "call": call, "step": name }),
    )
}

fn keys(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|step| step.idempotency_key.as_str()).collect()
}

fn claim_one(store: &dyn Store, now: Timestamp) -> Step {
    let outcome = store.claim_due(now, 1, LEASE).unwrap();
    assert_eq!(outcome.claimed.len(), 1, "expected one claimable step at {now}");
    outcome.claimed.into_iter().next().unwrap()
}

fn enqueue_numbers_steps_per_call_in_order(backend: Backend) {
    let store = backend.open();
    let out = store
        .enqueue(
            &[
                step("a", "register"),
                step("b", "register"),
                step("a", "show"),
                step("a", "finish"),
            ],
            at(0),
        )
        .unwrap();
    assert!(out.iter().all(|enqueued| enqueued.created));
    let seqs: Vec<(&str, i64)> = out.iter().map(|e| (e.step.call_key.as_str(), e.step.seq)).collect();
    assert_eq!(seqs, [("a", 1), ("b", 1), ("a", 2), ("a", 3)]);

    let stored = store.steps_of_call("a").unwrap();
    assert_eq!(keys(&stored), ["a/register", "a/show", "a/finish"]);
    let first = &stored[0];
    assert_eq!(first, &out[0].step, "the returned step is what was stored");
    assert_eq!(first.state, StepState::Pending);
    assert_eq!(first.kind, "register");
    assert_eq!(first.payload, json!({"call": "a", "step": "register"}));
    assert_eq!(
        (first.attempts, first.next_attempt_at, first.created_at),
        (0, at(0), at(0))
    );
    assert_eq!(
        (first.lease_until, first.result.clone(), first.last_error.clone()),
        (None, None, None)
    );

    // A later batch goes after everything the call already has.
    let later = store.enqueue(&[step("a", "record")], at(5)).unwrap();
    assert_eq!(later[0].step.seq, 4);
}

fn enqueueing_an_existing_key_is_a_no_op_returning_the_stored_step(backend: Backend) {
    let store = backend.open();
    let first = store
        .enqueue(&[step("a", "register"), step("a", "show")], at(0))
        .unwrap();
    let claimed = claim_one(&*store, at(1));
    store
        .mark_done(claimed.lease(), &json!({"CALL_ID": "X1"}), at(2))
        .unwrap();

    // Re-planning after a restart: same keys, different payload, plus one new step; a key repeated in the batch.
    let replanned = NewStep::new("a", "a/register", "register", json!({"changed": true}));
    let again = store
        .enqueue(
            &[replanned, step("a", "show"), step("a", "finish"), step("a", "finish")],
            at(10),
        )
        .unwrap();
    assert_eq!(
        again.iter().map(|e| e.created).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    assert_eq!(again[0].step.id, first[0].step.id);
    assert_eq!(
        again[0].step.payload,
        json!({"call": "a", "step": "register"}),
        "the first write wins"
    );
    assert_eq!(again[0].step.state, StepState::Done);
    assert_eq!(again[1].step, first[1].step);
    assert_eq!(again[2].step.id, again[3].step.id);
    assert_eq!(again[2].step.seq, 3);
    assert_eq!(store.step_counts().unwrap().total(), 3);
}

fn a_later_step_waits_for_every_earlier_step_of_its_call(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(
            &[
                step("a", "register"),
                step("a", "show"),
                step("a", "finish"),
                step("b", "register"),
            ],
            at(0),
        )
        .unwrap();

    // One step per call is due: the first one.
    assert_eq!(keys(&store.due_steps(at(0), 10).unwrap()), ["a/register", "b/register"]);

    // In flight: the call has nothing due.
    let register = store
        .claim(&[store.step_by_key("a/register").unwrap().unwrap().id], at(0), LEASE)
        .unwrap();
    assert_eq!(register.len(), 1);
    assert_eq!(keys(&store.due_steps(at(1), 10).unwrap()), ["b/register"]);

    // Retried: pending again, still first, and nothing after it is due until it is.
    store.mark_retry(register[0].lease(), "503", at(20), at(1)).unwrap();
    assert_eq!(keys(&store.due_steps(at(10), 10).unwrap()), ["b/register"]);
    // b/register has waited since 0, a/register only since 20: the earlier first.
    assert_eq!(
        keys(&store.due_steps(at(20), 10).unwrap()),
        ["b/register", "a/register"]
    );

    // Done: the next step comes due.
    let register = store.claim(&[register[0].id], at(20), LEASE).unwrap();
    assert_eq!(register[0].attempts, 2);
    store
        .mark_done(register[0].lease(), &json!({"CALL_ID": "C"}), at(21))
        .unwrap();
    assert_eq!(keys(&store.due_steps(at(21), 10).unwrap()), ["a/show", "b/register"]);

    // Failed permanently and dropped both let later steps go.
    let show = store
        .claim(&[store.step_by_key("a/show").unwrap().unwrap().id], at(21), LEASE)
        .unwrap();
    store.mark_failed(show[0].lease(), "ERROR_ARGUMENT", at(22)).unwrap();
    assert_eq!(keys(&store.due_steps(at(22), 10).unwrap()), ["a/finish", "b/register"]);

    let b = store
        .claim(&[store.step_by_key("b/register").unwrap().unwrap().id], at(22), LEASE)
        .unwrap();
    store.mark_dropped(b[0].lease(), "black-listed", at(23)).unwrap();
    assert_eq!(keys(&store.due_steps(at(23), 10).unwrap()), ["a/finish"]);
}

fn claim_only_takes_steps_that_are_due(backend: Backend) {
    let store = backend.open();
    let out = store
        .enqueue(&[step("a", "register"), step("a", "show")], at(0))
        .unwrap();
    let (register, show) = (out[0].step.id, out[1].step.id);

    assert!(
        store.claim(&[show], at(0), LEASE).unwrap().is_empty(),
        "not reachable yet"
    );
    let claimed = store.claim(&[show, register], at(0), LEASE).unwrap();
    assert_eq!(keys(&claimed), ["a/register"]);
    assert_eq!(claimed[0].state, StepState::InFlight);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(claimed[0].lease_until, Some(at(30)));
    assert!(
        store.claim(&[register], at(1), LEASE).unwrap().is_empty(),
        "already claimed"
    );
    assert!(store.claim_due(at(1), 10, LEASE).unwrap().claimed.is_empty());
}

fn due_steps_come_by_priority_then_time_within_the_limit(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(&[step("a", "register"), step("b", "register").priority(5)], at(0))
        .unwrap();
    store
        .enqueue(
            &[step("c", "register").not_before(at(3)), step("d", "show").priority(9)],
            at(1),
        )
        .unwrap();
    assert_eq!(
        keys(&store.due_steps(at(2), 10).unwrap()),
        ["d/show", "b/register", "a/register"]
    );
    assert_eq!(
        keys(&store.due_steps(at(3), 10).unwrap()),
        ["d/show", "b/register", "a/register", "c/register"]
    );
    assert_eq!(keys(&store.due_steps(at(3), 2).unwrap()), ["d/show", "b/register"]);
    let outcome = store.claim_due(at(3), 3, LEASE).unwrap();
    assert_eq!(keys(&outcome.claimed), ["d/show", "b/register", "a/register"]);
    assert_eq!(keys(&store.due_steps(at(3), 10).unwrap()), ["c/register"]);
}

fn a_crashed_workers_claim_comes_back_when_its_lease_runs_out(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(&[step("a", "register"), step("a", "finish")], at(0))
        .unwrap();
    let first = claim_one(&*store, at(0));
    assert!(
        store.due_steps(at(29), 10).unwrap().is_empty(),
        "held until the lease ends"
    );

    let second = claim_one(&*store, at(30));
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.lease_until, Some(at(60)));

    // The first worker comes back late: its lease is stale and changes nothing.
    let stale = store.mark_done(first.lease(), &json!({"CALL_ID": "old"}), at(31));
    assert!(matches!(stale, Err(StoreError::LeaseLost { lease }) if lease == first.lease()));
    assert_eq!(
        store.step_by_key("a/register").unwrap().unwrap().state,
        StepState::InFlight
    );

    store
        .mark_done(second.lease(), &json!({"CALL_ID": "new"}), at(32))
        .unwrap();
    assert_eq!(
        store.result_by_key("a/register").unwrap(),
        Some(json!({"CALL_ID": "new"}))
    );
    // Marking twice is refused too.
    assert!(matches!(
        store.mark_retry(second.lease(), "x", at(40), at(33)),
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(keys(&store.due_steps(at(33), 10).unwrap()), ["a/finish"]);
}

fn a_late_answer_is_kept_if_nobody_claimed_the_step_again(backend: Backend) {
    let store = backend.open();
    store.enqueue(&[step("a", "register")], at(0)).unwrap();
    let claimed = claim_one(&*store, at(0));
    store
        .mark_done(claimed.lease(), &json!({"CALL_ID": "C"}), at(100))
        .unwrap();
    let stored = store.step_by_key("a/register").unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.lease_until, stored.updated_at),
        (StepState::Done, None, at(100))
    );
}

fn retry_keeps_the_error_and_schedules_the_next_attempt(backend: Backend) {
    let store = backend.open();
    store.enqueue(&[step("a", "register")], at(0)).unwrap();
    let claimed = claim_one(&*store, at(0));
    store
        .mark_retry(claimed.lease(), "QUERY_LIMIT_EXCEEDED", at(8), at(1))
        .unwrap();
    let stored = store.step_by_key("a/register").unwrap().unwrap();
    assert_eq!(stored.state, StepState::Pending);
    assert_eq!(stored.last_error.as_deref(), Some("QUERY_LIMIT_EXCEEDED"));
    assert_eq!(
        (stored.next_attempt_at, stored.attempts, stored.lease_until),
        (at(8), 1, None)
    );
    assert!(store.due_steps(at(7), 10).unwrap().is_empty());
    assert_eq!(claim_one(&*store, at(8)).attempts, 2);
}

fn failed_and_dropped_steps_keep_their_reason(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(&[step("a", "register"), step("b", "show")], at(0))
        .unwrap();
    let outcome = store.claim_due(at(0), 10, LEASE).unwrap();
    let [register, show] = [&outcome.claimed[0], &outcome.claimed[1]];
    store
        .mark_failed(register.lease(), "ERROR_CORE: bad USER_ID", at(1))
        .unwrap();
    store.mark_dropped(show.lease(), "leg stopped ringing", at(1)).unwrap();
    let register = store.step_by_key("a/register").unwrap().unwrap();
    let show = store.step_by_key("b/show").unwrap().unwrap();
    assert_eq!(
        (register.state, register.last_error.as_deref()),
        (StepState::Failed, Some("ERROR_CORE: bad USER_ID"))
    );
    assert_eq!(
        (show.state, show.last_error.as_deref()),
        (StepState::Dropped, Some("leg stopped ringing"))
    );
    assert_eq!(store.result_by_key("a/register").unwrap(), None);
    assert!(store.due_steps(at(100), 10).unwrap().is_empty());
}

fn card_steps_not_sent_in_time_are_dropped_and_unblock_the_call(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(
            &[
                step("a", "register"),
                step("a", "show").expires_at(at(10)),
                step("a", "finish"),
                step("b", "show").expires_at(at(10)),
            ],
            at(0),
        )
        .unwrap();
    // Bitrix24 is down: the register keeps failing while the card's moment passes.
    let register = claim_one(&*store, at(0));
    assert_eq!(register.idempotency_key, "a/register");
    store
        .mark_retry(register.lease(), "connection refused", at(11), at(1))
        .unwrap();
    let b_show = claim_one(&*store, at(2));
    assert_eq!(b_show.idempotency_key, "b/show");
    store
        .mark_retry(b_show.lease(), "connection refused", at(12), at(2))
        .unwrap();

    // An expired step is never due, even before anyone drops it.
    assert_eq!(keys(&store.due_steps(at(11), 10).unwrap()), ["a/register"]);

    let outcome = store.claim_due(at(11), 10, LEASE).unwrap();
    assert_eq!(keys(&outcome.expired), ["a/show", "b/show"]);
    assert!(outcome
        .expired
        .iter()
        .all(|s| s.state == StepState::Dropped && s.last_error.is_some()));
    assert_eq!(keys(&outcome.claimed), ["a/register"]);
    store
        .mark_done(outcome.claimed[0].lease(), &json!({"CALL_ID": "C"}), at(12))
        .unwrap();
    // The dropped card no longer holds back the finish.
    assert_eq!(keys(&store.claim_due(at(12), 10, LEASE).unwrap().claimed), ["a/finish"]);
}

fn expiry_spares_a_step_being_sent(backend: Backend) {
    let store = backend.open();
    store.enqueue(&[step("a", "show").expires_at(at(10))], at(0)).unwrap();
    let show = claim_one(&*store, at(9));
    assert!(store.drop_expired(at(11)).unwrap().is_empty(), "the worker holds it");
    store.mark_done(show.lease(), &json!(true), at(12)).unwrap();
    assert_eq!(store.step_by_key("a/show").unwrap().unwrap().state, StepState::Done);

    // Once the lease runs out, an expired step is dropped rather than sent late.
    store.enqueue(&[step("b", "show").expires_at(at(50))], at(40)).unwrap();
    claim_one(&*store, at(45));
    assert!(store.drop_expired(at(74)).unwrap().is_empty());
    assert_eq!(keys(&store.drop_expired(at(75)).unwrap()), ["b/show"]);
}

fn drop_pending_withdraws_only_unheld_steps(backend: Backend) {
    let store = backend.open();
    store.enqueue(&[step("a", "show"), step("b", "show")], at(0)).unwrap();
    claim_one(&*store, at(0));
    assert!(
        !store.drop_pending("a/show", "leg answered", at(1)).unwrap(),
        "a/show is in flight"
    );
    assert!(store.drop_pending("b/show", "leg answered", at(1)).unwrap());
    assert!(
        !store.drop_pending("b/show", "again", at(2)).unwrap(),
        "already dropped"
    );
    assert!(!store.drop_pending("nope", "unknown", at(2)).unwrap());
    let b = store.step_by_key("b/show").unwrap().unwrap();
    assert_eq!(
        (b.state, b.last_error.as_deref()),
        (StepState::Dropped, Some("leg answered"))
    );
    assert!(
        store.drop_pending("a/show", "lease over", at(31)).unwrap(),
        "a/show's lease ran out"
    );
}

fn results_are_readable_by_key_for_later_steps(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(&[step("a", "register"), step("a", "finish")], at(0))
        .unwrap();
    assert_eq!(store.result_by_key("a/register").unwrap(), None);
    assert_eq!(store.result_by_key("unknown").unwrap(), None);
    let register = claim_one(&*store, at(0));
    assert_eq!(
        store.result_by_key("a/register").unwrap(),
        None,
        "in flight is not done"
    );
    store
        .mark_done(register.lease(), &json!({"CALL_ID": "externalCall.1"}), at(1))
        .unwrap();
    let finish = claim_one(&*store, at(1));
    let call_id = store.result_by_key("a/register").unwrap().unwrap()["CALL_ID"].clone();
    assert_eq!(call_id, "externalCall.1");
    store.mark_done(finish.lease(), &json!(null), at(2)).unwrap();
    assert_eq!(store.result_by_key("a/finish").unwrap(), Some(json!(null)));
}

fn the_steps_a_round_looks_up_are_read_together_unknown_keys_left_out(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(
            &[step("a", "register"), step("a", "show"), step("b", "register")],
            at(0),
        )
        .unwrap();
    let register = claim_one(&*store, at(0));
    store
        .mark_done(register.lease(), &json!({"CALL_ID": "externalCall.1"}), at(1))
        .unwrap();
    let wanted = ["a/register", "unknown", "b/register"].map(String::from);
    let mut found = store.steps_by_keys(&wanted).unwrap();
    found.sort_by(|x, y| x.idempotency_key.cmp(&y.idempotency_key));
    assert_eq!(keys(&found), ["a/register", "b/register"]);
    assert_eq!(found[0].state, StepState::Done);
    assert_eq!(found[0].result, Some(json!({"CALL_ID": "externalCall.1"})));
    assert_eq!(found[1].state, StepState::Pending);
    assert!(store.steps_by_keys(&[]).unwrap().is_empty());
}

fn counts_by_state(backend: Backend) {
    let store = backend.open();
    assert_eq!(store.step_counts().unwrap(), store::StepCounts::default());
    store
        .enqueue(&[step("a", "1"), step("b", "1"), step("c", "1"), step("d", "1")], at(0))
        .unwrap();
    store.enqueue(&[step("e", "1"), step("f", "1")], at(5)).unwrap();
    let claimed = store.claim_due(at(5), 5, LEASE).unwrap().claimed;
    store.mark_done(claimed[0].lease(), &json!(1), at(6)).unwrap();
    store.mark_dropped(claimed[1].lease(), "r", at(6)).unwrap();
    store.mark_failed(claimed[2].lease(), "r", at(6)).unwrap();
    store.mark_retry(claimed[3].lease(), "r", at(9), at(6)).unwrap();
    let counts = store.step_counts().unwrap();
    assert_eq!(
        [
            counts.pending,
            counts.in_flight,
            counts.done,
            counts.dropped,
            counts.failed
        ],
        [2, 1, 1, 1, 1],
        "{counts:?}"
    );
    assert_eq!(counts.get(StepState::InFlight), 1);
    assert_eq!(counts.total(), 6);
    // a..e are claimed (earliest first, then by id) and f stays pending; d is retried: the oldest open is d.
    assert_eq!(counts.oldest_open_created_at, Some(at(0)));
}

fn reprocess_resets_failed_and_dropped_steps(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(&[step("a", "register"), step("a", "show").expires_at(at(100))], at(0))
        .unwrap();
    store.enqueue(&[step("b", "register")], at(50)).unwrap();
    let claimed = store.claim_due(at(50), 10, LEASE).unwrap().claimed;
    for step in &claimed {
        store.mark_failed(step.lease(), "portal unreachable", at(51)).unwrap();
    }
    assert_eq!(store.step_counts().unwrap().failed, 2);

    assert_eq!(store.reprocess(&ReprocessScope::Call("a".into()), at(60)).unwrap(), 1);
    let a = store.step_by_key("a/register").unwrap().unwrap();
    assert_eq!(
        (a.state, a.attempts, a.next_attempt_at),
        (StepState::Pending, 0, at(60))
    );
    assert_eq!(a.last_error.as_deref(), Some("portal unreachable"), "the history stays");
    let b = store.step_by_key("b/register").unwrap().unwrap();
    assert_eq!(b.state, StepState::Failed);

    let range = ReprocessScope::CreatedBetween {
        from: at(10),
        to: at(51),
    };
    assert_eq!(store.reprocess(&range, at(61)).unwrap(), 1);
    assert_eq!(
        store.step_by_key("b/register").unwrap().unwrap().state,
        StepState::Pending
    );
    let empty_range = ReprocessScope::CreatedBetween {
        from: at(51),
        to: at(99),
    };
    assert_eq!(store.reprocess(&empty_range, at(61)).unwrap(), 0);

    // A card step that expired stays dropped.
    let register = claim_one(&*store, at(61));
    store.mark_done(register.lease(), &json!({}), at(62)).unwrap();
    let rest = store.claim_due(at(101), 10, LEASE).unwrap();
    assert_eq!(keys(&rest.expired), ["a/show"]);
    assert_eq!(store.reprocess(&ReprocessScope::Call("a".into()), at(102)).unwrap(), 0);
}

/// The counts `/status` reads, kept by the store as steps change, agree with the steps themselves after every
/// kind of change: added (a key already stored adds nothing), claimed, done, retried, failed, dropped (by hand
/// and on expiry), set to be sent again, released and pruned.
fn counts_kept_by_the_store_follow_every_change_of_state(backend: Backend) {
    let store = backend.open();
    let calls = ["a", "b", "c"];
    let check = |when: &str| {
        let mut expected = store::StepCounts::default();
        let mut oldest: Option<Timestamp> = None;
        for call in calls {
            for step in store.steps_of_call(call).unwrap() {
                match step.state {
                    StepState::Pending => expected.pending += 1,
                    StepState::InFlight => expected.in_flight += 1,
                    StepState::Done => expected.done += 1,
                    StepState::Dropped => expected.dropped += 1,
                    StepState::Failed => expected.failed += 1,
                }
                if matches!(step.state, StepState::Pending | StepState::InFlight) {
                    oldest = Some(oldest.map_or(step.created_at, |o| o.min(step.created_at)));
                }
            }
        }
        expected.oldest_open_created_at = oldest;
        assert_eq!(store.step_counts().unwrap(), expected, "after {when}");
    };
    check("nothing");
    store
        .enqueue(
            &[
                step("a", "register"),
                step("a", "show").expires_at(at(5)),
                step("a", "finish"),
            ],
            at(0),
        )
        .unwrap();
    store
        .enqueue(
            &[step("b", "register"), step("a", "register"), step("c", "register")],
            at(1),
        )
        .unwrap();
    check("enqueue");
    let claimed = store.claim_due(at(2), 10, LEASE).unwrap().claimed;
    check("claim");
    let mut claimed = claimed.into_iter();
    let (first, second, third) = (
        claimed.next().unwrap(),
        claimed.next().unwrap(),
        claimed.next().unwrap(),
    );
    store.mark_done(first.lease(), &json!({"CALL_ID": "1"}), at(3)).unwrap();
    store.mark_failed(second.lease(), "refused", at(3)).unwrap();
    store.mark_retry(third.lease(), "busy", at(4), at(3)).unwrap();
    check("done, failed and retried");
    store.drop_pending("a/show", "withdrawn", at(3)).unwrap();
    check("drop_pending");
    store.drop_expired(at(10)).unwrap();
    check("expiry");
    store.reprocess(&ReprocessScope::Call("b".into()), at(11)).unwrap();
    store.reprocess(&ReprocessScope::Call("c".into()), at(11)).unwrap();
    check("reprocess");
    store.claim_due(at(12), 10, LEASE).unwrap();
    check("second claim");
    store.release_claims(at(13)).unwrap();
    check("release");
    for step in store.claim_due(at(14), 10, LEASE).unwrap().claimed {
        store.mark_done(step.lease(), &json!({}), at(15)).unwrap();
    }
    for step in store.claim_due(at(16), 10, LEASE).unwrap().claimed {
        store.mark_done(step.lease(), &json!({}), at(17)).unwrap();
    }
    check("all sent");
    store.prune_steps(at(1_000)).unwrap();
    check("prune");
    assert_eq!(
        store.step_counts().unwrap().total(),
        0,
        "every call was finished and old"
    );
}

fn prune_removes_only_calls_that_are_finished_and_old(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(
            &[step("old", "1"), step("old", "2"), step("open", "1"), step("new", "1")],
            at(0),
        )
        .unwrap();
    for now in [1, 2] {
        for step in store.claim_due(at(now), 10, LEASE).unwrap().claimed {
            if step.call_key != "open" {
                store.mark_done(step.lease(), &json!(null), at(now)).unwrap();
            }
        }
    }
    // "new" finished at 1 but "old" at 2; "open" is still in flight.
    assert_eq!(store.prune_steps(at(2)).unwrap(), 1);
    assert!(store.step_by_key("new/1").unwrap().is_none());
    assert_eq!(store.prune_steps(at(1000)).unwrap(), 2);
    assert!(store.steps_of_call("old").unwrap().is_empty());
    assert_eq!(store.steps_of_call("open").unwrap().len(), 1);
    // Ids are never reused after pruning.
    let again = store.enqueue(&[step("old", "1")], at(1001)).unwrap();
    assert!(again[0].created);
    assert!(again[0].step.id.0 > 4);
}

fn steps_survive_closing_and_reopening_the_file(backend: Backend) {
    let store = backend.open();
    {
        let first = store.open_again();
        first
            .enqueue(&[step("a", "register"), step("a", "finish")], at(0))
            .unwrap();
        let register = claim_one(first.as_ref(), at(0));
        first
            .mark_done(register.lease(), &json!({"CALL_ID": "C"}), at(1))
            .unwrap();
    }
    let reopened = store.open_again();
    assert_eq!(
        reopened.result_by_key("a/register").unwrap(),
        Some(json!({"CALL_ID": "C"}))
    );
    assert_eq!(keys(&reopened.due_steps(at(1), 10).unwrap()), ["a/finish"]);
}

#[test]
fn a_reopened_sqlite_file_passes_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringlink.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.enqueue(&[step("a", "register")], at(0)).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(keys(&store.steps_of_call("a").unwrap()), ["a/register"]);
    assert!(store.integrity_check().unwrap().is_empty());
}

#[test]
fn postgres_stores_steps_while_another_transaction_that_moved_counts_is_open() {
    let server = Arc::new(backends::start_postgres());
    let url = server.create_database("ringlink").unwrap();
    let store = store::PgStore::open(&url, store::PgOptions::new("office")).unwrap();
    store.enqueue(&[step("a", "register")], at(0)).unwrap();
    // Another transaction (the worker recording a round, say) moves a step to another state and stays open.
    let open = {
        let server = server.clone();
        std::thread::spawn(move || {
            let sql = "BEGIN; UPDATE steps SET state = 'in_flight' WHERE idempotency_key = 'a/register';
                       SELECT pg_sleep(5); COMMIT;";
            server.psql("ringlink", sql)
        })
    };
    let sleeping = || {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(5)%'
                   AND pid <> pg_backend_pid()";
        server.psql("ringlink", sql).unwrap().trim() == "1"
    };
    while !sleeping() {
        assert!(
            !open.is_finished(),
            "the other transaction ended early: {:?}",
            open.join()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // With one row per count, this waited for that transaction's commit (the row of the pending count).
    store.enqueue(&[step("b", "register")], at(1)).unwrap();
    assert!(!open.is_finished(), "stored while the other transaction is still open");
    open.join().unwrap().unwrap();
    let counts = store.step_counts().unwrap();
    assert_eq!((counts.pending, counts.in_flight), (1, 1), "{counts:?}");
    // Each statement added rows of changes; a claim folds them into one row per state, with the same sums.
    let rows = || -> Vec<String> {
        let sql = "SELECT state || '=' || n FROM step_counts ORDER BY state, n";
        server
            .psql("ringlink", sql)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // a added, a moved (two rows), b added.
    assert_eq!(rows(), ["in_flight=1", "pending=-1", "pending=1", "pending=1"]);
    let claimed = store.claim_due(at(2), 10, LEASE).unwrap().claimed;
    assert_eq!(keys(&claimed), ["b/register"]);
    // Folded into one row per state before the claim, which added its own change after.
    assert_eq!(rows(), ["in_flight=1", "in_flight=1", "pending=-1", "pending=1"]);
    let counts = store.step_counts().unwrap();
    assert_eq!((counts.pending, counts.in_flight), (0, 2), "{counts:?}");
}

#[test]
fn a_postgres_claim_analyses_an_outbox_that_outgrew_its_statistics() {
    // Autovacuum off: only the store analyses the table here.
    let options = testbed::postgres::PostgresOptions {
        fsync: false,
        settings: vec![("autovacuum".into(), "off".into())],
        ..Default::default()
    };
    let server = testbed::postgres::Postgres::start_with(&options).unwrap_or_else(|error| panic!("{error}"));
    let url = server.create_database("ringlink").unwrap();
    let store = store::PgStore::open(&url, store::PgOptions::new("office")).unwrap();
    // What the planner believes of the open steps: the rows the last ANALYZE counted in their index.
    let counted = || -> i64 {
        let sql = "SELECT reltuples::bigint FROM pg_class WHERE relname = 'steps_open_by_call'";
        server.psql("ringlink", sql).unwrap().trim().parse().unwrap()
    };
    let calls = |numbers: std::ops::Range<u32>| -> Vec<NewStep> {
        numbers
            .flat_map(|call| ["register", "show", "hide", "finish"].map(|kind| step(&format!("c{call:04}"), kind)))
            .collect()
    };
    let claimed_keys = |now| -> Vec<String> {
        let claimed = store.claim_due(now, 50, LEASE).unwrap().claimed;
        claimed.into_iter().map(|step| step.idempotency_key).collect()
    };
    let registers =
        |numbers: std::ops::Range<u32>| -> Vec<String> { numbers.map(|call| format!("c{call:04}/register")).collect() };

    // 400 open steps in an outbox whose indexes were made empty: too few to be worth an ANALYZE.
    store.enqueue(&calls(0..100), at(0)).unwrap();
    assert_eq!(claimed_keys(at(1)), registers(0..50));
    assert_eq!(counted(), 0, "400 open steps left to autovacuum");

    // 1,600: the claim analyses the table first (a small table is counted exactly), and still claims in order.
    store.enqueue(&calls(100..400), at(2)).unwrap();
    assert_eq!(claimed_keys(at(3)), registers(50..100));
    assert_eq!(counted(), 1600, "the open steps as the claim found them");

    // Settled steps open the next of their calls; fewer open steps than counted need no new statistics.
    let done: Vec<_> = store
        .steps_of_call("c0000")
        .unwrap()
        .into_iter()
        .filter(|step| step.state == StepState::InFlight)
        .map(|step| (step.lease(), store::Outcome::Done(json!(null))))
        .collect();
    assert!(store.mark_many(&done, at(4)).unwrap().is_empty());
    assert_eq!(claimed_keys(at(4)).first().map(String::as_str), Some("c0000/show"));
    assert_eq!(counted(), 1600);

    // Another tenant's backlog in the same database: the table as a whole was analysed, but not with its steps.
    let branch = store::PgStore::open(&url, store::PgOptions::new("branch")).unwrap();
    branch.enqueue(&calls(0..400), at(5)).unwrap();
    let claimed = branch.claim_due(at(6), 50, LEASE).unwrap().claimed;
    let claimed: Vec<String> = claimed.into_iter().map(|step| step.idempotency_key).collect();
    assert_eq!(claimed, registers(0..50));
    assert_eq!(counted(), 1599 + 1600, "both tenants' open steps");
}

fn concurrent_workers_never_claim_the_same_step(backend: Backend) {
    let store = backend.open();
    let steps: Vec<NewStep> = (0..200)
        .flat_map(|call| [0, 1].map(|n| step(&format!("c{call}"), &n.to_string())))
        .collect();
    store.enqueue(&steps, at(0)).unwrap();

    // Two handles on the database (as two processes would have), each shared by two threads.
    let one: Arc<dyn Store> = Arc::from(store.open_again());
    let other: Arc<dyn Store> = Arc::from(store.open_again());
    let handles: Vec<Arc<dyn Store>> = vec![one.clone(), one, other.clone(), other];
    let threads: Vec<_> = handles
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                loop {
                    let claimed = store.claim_due(at(1), 7, LEASE).unwrap().claimed;
                    if claimed.is_empty() && store.step_counts().unwrap().pending == 0 {
                        break;
                    }
                    for step in claimed {
                        store.mark_done(step.lease(), &json!(null), at(1)).unwrap();
                        sent.push(step.idempotency_key);
                    }
                }
                sent
            })
        })
        .collect();
    let mut all = Vec::new();
    for thread in threads {
        all.extend(thread.join().unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 400, "every step sent");
    assert_eq!(unique.len(), 400, "none twice");
}

fn outcomes_of_a_batch_are_recorded_together_and_stale_leases_are_reported(backend: Backend) {
    let store = backend.open();
    store
        .enqueue(
            &[
                step("a", "1"),
                step("b", "1"),
                step("c", "1"),
                step("d", "1"),
                step("e", "1"),
            ],
            at(0),
        )
        .unwrap();
    let claimed = store.claim_due(at(0), 10, LEASE).unwrap().claimed;
    let e = claimed[4].lease();
    // e's lease runs out and another worker takes it: the first worker's mark for e is stale.
    let retaken = store.claim(&[e.step], at(30), LEASE).unwrap();
    assert_eq!(retaken[0].attempts, 2);

    let marks = [
        (claimed[0].lease(), store::Outcome::Done(json!({"CALL_ID": "A"}))),
        (
            claimed[1].lease(),
            store::Outcome::Retry {
                error: "QUERY_LIMIT_EXCEEDED".into(),
                next_attempt_at: at(40),
            },
        ),
        (claimed[2].lease(), store::Outcome::Failed("ERROR_ARGUMENT".into())),
        (claimed[3].lease(), store::Outcome::Dropped("leg ended".into())),
        (e, store::Outcome::Done(json!({"CALL_ID": "stale"}))),
    ];
    assert_eq!(store.mark_many(&marks, at(31)).unwrap(), [e]);
    let states: Vec<StepState> = ["a/1", "b/1", "c/1", "d/1", "e/1"]
        .iter()
        .map(|k| store.step_by_key(k).unwrap().unwrap().state)
        .collect();
    use StepState::*;
    assert_eq!(states, [Done, Pending, Failed, Dropped, InFlight]);
    assert_eq!(store.result_by_key("a/1").unwrap(), Some(json!({"CALL_ID": "A"})));
    let b = store.step_by_key("b/1").unwrap().unwrap();
    assert_eq!(
        (b.next_attempt_at, b.last_error.as_deref()),
        (at(40), Some("QUERY_LIMIT_EXCEEDED"))
    );
    assert_eq!(store.mark_many(&[], at(32)).unwrap(), []);
}

fn a_finish_is_claimed_with_the_recording_right_after_it_and_nothing_else(backend: Backend) {
    let store = backend.open();
    let record_later = step("b", "record").not_before(at(10));
    store
        .enqueue(
            &[
                step("a", "finish"),
                step("a", "record"),
                step("a", "task"),
                step("b", "finish"),
                record_later,
                step("c", "finish"),
                step("c", "task"),
                step("c", "record"),
            ],
            at(0),
        )
        .unwrap();
    let pairs = [("finish", "record")];
    let outcome = store.claim_due_with_followers(at(0), 10, LEASE, &pairs).unwrap();
    assert_eq!(keys(&outcome.claimed), ["a/finish", "b/finish", "c/finish"]);
    // b's recording is not due yet, c's next step is not a recording.
    assert_eq!(keys(&outcome.followers), ["a/record"]);
    assert_eq!(outcome.followers[0].state, StepState::InFlight);
    assert_eq!(outcome.followers[0].attempts, 1);
    // Nothing more of a is due while its finish and recording are in flight.
    let follower = outcome.followers[0].lease();
    store
        .mark_many(
            &[(outcome.claimed[0].lease(), store::Outcome::Done(json!(true)))],
            at(1),
        )
        .unwrap();
    assert!(store.claim_due(at(1), 10, LEASE).unwrap().claimed.is_empty());
    store
        .mark_many(&[(follower, store::Outcome::Done(json!(true)))], at(1))
        .unwrap();
    assert_eq!(keys(&store.claim_due(at(1), 10, LEASE).unwrap().claimed), ["a/task"]);
}

fn a_register_is_claimed_with_the_shows_that_follow_it_in_a_chain(backend: Backend) {
    let store = backend.open();
    let mut chain: Vec<NewStep> = ["register", "show1", "show2", "finish"]
        .iter()
        .map(|name| step("a", name))
        .collect();
    for (new, kind) in chain.iter_mut().zip(["register", "show", "show", "finish"]) {
        new.kind = kind.into();
    }
    store.enqueue(&chain, at(0)).unwrap();
    let pairs = [("register", "show"), ("show", "show"), ("finish", "attach_record")];
    let outcome = store.claim_due_with_followers(at(0), 10, LEASE, &pairs).unwrap();
    assert_eq!(keys(&outcome.claimed), ["a/register"]);
    assert_eq!(keys(&outcome.followers), ["a/show1", "a/show2"]);
}

fn a_rounds_outcomes_and_their_journal_are_written_together(backend: Backend) {
    let store = backend.open();
    store.enqueue(&[step("a", "1"), step("b", "1")], at(0)).unwrap();
    let claimed = store.claim_due(at(0), 10, LEASE).unwrap().claimed;
    let b = claimed[1].lease();
    store.claim(&[b.step], at(30), LEASE).unwrap();
    let marks = [
        (claimed[0].lease(), store::Outcome::Done(json!({"CALL_ID": "A"}))),
        (b, store::Outcome::Done(json!({"CALL_ID": "stale"}))),
    ];
    let journal = [
        store::NewJournalEntry::new("a", at(31), store::EntryKind::CrmResponse, "register done"),
        store::NewJournalEntry::new("b", at(31), store::EntryKind::CrmResponse, "register done"),
    ];
    assert_eq!(store.mark_many_journaled(&marks, &journal, at(31)).unwrap(), [b]);
    assert_eq!(store.result_by_key("a/1").unwrap(), Some(json!({"CALL_ID": "A"})));
    assert_eq!(store.step_by_key("b/1").unwrap().unwrap().state, StepState::InFlight);
    // What was sent stays on record, current lease or not.
    for call in ["a", "b"] {
        let timeline = store.call_timeline(call).unwrap();
        assert_eq!(timeline.len(), 1, "{call}: {timeline:?}");
        assert_eq!(timeline[0].message, "register done");
    }
}

fn a_round_is_recorded_and_the_next_claimed_in_one_go(backend: Backend) {
    let store = backend.open();
    let chain = [step("a", "register"), step("a", "show"), step("b", "register")];
    store.enqueue(&chain, at(0)).unwrap();
    let first = store.claim_due(at(0), 1, LEASE).unwrap().claimed;
    assert_eq!(keys(&first), ["a/register"]);
    let marks = [(first[0].lease(), store::Outcome::Done(json!({"CALL_ID": "A"})))];
    let journal = [store::NewJournalEntry::new(
        "a",
        at(1),
        store::EntryKind::CrmResponse,
        "register done",
    )];
    let pairs = [("register", "show")];
    let (lost, next) = store
        .mark_many_journaled_and_claim(&marks, &journal, at(1), 10, LEASE, &pairs)
        .unwrap();
    assert!(lost.is_empty());
    assert_eq!(
        store.result_by_key("a/register").unwrap(),
        Some(json!({"CALL_ID": "A"}))
    );
    assert_eq!(store.call_timeline("a").unwrap().len(), 1);
    // The show became due when its register was recorded: the next round has it, and the other call's register.
    let mut next_keys = keys(&next.claimed);
    next_keys.sort_unstable();
    assert_eq!(next_keys, ["a/show", "b/register"]);
    for key in ["a/show", "b/register"] {
        assert_eq!(
            store.step_by_key(key).unwrap().unwrap().state,
            StepState::InFlight,
            "{key}"
        );
    }
    assert!(
        store.claim_due(at(2), 10, LEASE).unwrap().claimed.is_empty(),
        "claimed once"
    );
}

/// Steps of `call`, each `(name, kind)`.
fn kinded(call: &str, steps: &[(&str, &str)]) -> Vec<NewStep> {
    steps
        .iter()
        .map(|(name, kind)| {
            let mut new = step(call, name);
            new.kind = (*kind).into();
            new
        })
        .collect()
}

const CARDS: store::ClaimNew<'static> = store::ClaimNew {
    kinds: &["register", "show"],
    limit: 10,
    lease: LEASE,
    pairs: &[("register", "show"), ("show", "show")],
};

fn new_card_steps_are_claimed_in_the_commit_that_stores_them(backend: Backend) {
    let store = backend.open();
    // b already has an open step: its show is not due.
    store.enqueue(&kinded("b", &[("register", "register")]), at(0)).unwrap();
    let mut steps = kinded(
        "a",
        &[("register", "register"), ("show1", "show"), ("finish", "finish")],
    );
    steps.extend(kinded("b", &[("show", "show")]));
    steps.extend(kinded("c", &[("hide", "hide")]));
    steps.extend(kinded("d", &[("show", "show"), ("show2", "show")]));
    let journal = [store::NewJournalEntry::new(
        "a",
        at(1),
        store::EntryKind::Ami,
        "DialBegin",
    )];
    let claim = store
        .enqueue_journaled_and_claim(&steps, &journal, at(1), &CARDS)
        .unwrap();
    assert_eq!(keys(&claim.claimed), ["a/register", "d/show"]);
    assert_eq!(keys(&claim.followers), ["a/show1", "d/show2"]);
    for step in claim.claimed.iter().chain(&claim.followers) {
        assert_eq!(
            (step.state, step.attempts),
            (StepState::InFlight, 1),
            "{}",
            step.idempotency_key
        );
        assert_eq!(step.lease_until, Some(at(1).saturating_add(LEASE)));
    }
    assert_eq!(
        store.call_timeline("a").unwrap().len(),
        1,
        "the journal is written with them"
    );
    // Claimed once: the worker's own claim takes what was left, not these.
    let rest = keys(&store.claim_due(at(2), 10, LEASE).unwrap().claimed).join(" ");
    assert_eq!(rest, "b/register c/hide");
    // Stored again (a re-plan), nothing is claimed twice.
    let again = store.enqueue_journaled_and_claim(&steps, &[], at(3), &CARDS).unwrap();
    assert!(again.claimed.is_empty() && again.followers.is_empty(), "{again:?}");
    // A claim never sent comes back when its lease runs out (the worker's own claim still holds).
    let later = at(1).saturating_add(LEASE);
    let back = store.claim_due(later, 10, LEASE).unwrap().claimed;
    assert_eq!(keys(&back), ["a/register", "d/show"]);
    assert!(back.iter().all(|step| step.attempts == 2));
}

fn the_claim_of_new_steps_takes_at_most_its_limit(backend: Backend) {
    let store = backend.open();
    let mut steps = Vec::new();
    for call in ["a", "b", "c"] {
        steps.extend(kinded(call, &[("register", "register")]));
    }
    let limited = store::ClaimNew { limit: 2, ..CARDS };
    let claim = store.enqueue_journaled_and_claim(&steps, &[], at(0), &limited).unwrap();
    assert_eq!(keys(&claim.claimed), ["a/register", "b/register"]);
    assert_eq!(
        keys(&store.claim_due(at(0), 10, LEASE).unwrap().claimed),
        ["c/register"]
    );
}

fn calls_with_an_opening_step_and_no_closing_one_are_listed_oldest_first(backend: Backend) {
    let store = backend.open();
    let kinds = |call: &str, names: &[&str]| -> Vec<NewStep> {
        names
            .iter()
            .enumerate()
            .map(|(i, k)| NewStep::new(call, format!("{call}/{i}/{k}"), *k, json!({})))
            .collect()
    };
    store.enqueue(&kinds("open", &["register", "show"]), at(0)).unwrap();
    store
        .enqueue(&kinds("closed", &["register", "finish", "attach_record"]), at(1))
        .unwrap();
    // Two registrations, only the first finished.
    store
        .enqueue(&kinds("half", &["register", "finish", "register"]), at(2))
        .unwrap();
    store.enqueue(&kinds("failed", &["register"]), at(3)).unwrap();
    let failed = claim_one(&*store, at(3));
    assert_eq!(failed.call_key, "open", "oldest first");
    store.mark_done(failed.lease(), &json!({}), at(3)).unwrap();
    let step = store.step_by_key("failed/0/register").unwrap().unwrap();
    let claimed = store.claim(&[step.id], at(4), LEASE).unwrap();
    store.mark_failed(claimed[0].lease(), "rejected", at(4)).unwrap();
    assert_eq!(
        store.calls_with_unmatched("register", "finish").unwrap(),
        ["open", "half"]
    );
    assert!(store.calls_with_unmatched("finish", "register").unwrap().is_empty());
}

fn claims_of_a_crashed_run_are_released_at_once(backend: Backend) {
    let store = backend.open();
    store.enqueue(&[step("a", "register")], at(0)).unwrap();
    let held = claim_one(&*store, at(0));
    // Until the lease runs out nobody may take it again…
    assert!(store.claim_due(at(1), 10, LEASE).unwrap().claimed.is_empty());
    // …unless the run that held it is known to be gone.
    assert_eq!(store.release_claims(at(2)).unwrap(), 1);
    let again = store.claim_due(at(2), 10, LEASE).unwrap().claimed;
    let retaken = again.iter().find(|s| s.id == held.id).expect("due again");
    assert_eq!(retaken.attempts, 2);
    assert!(matches!(
        store.mark_done(held.lease(), &json!({}), at(3)),
        Err(StoreError::LeaseLost { .. })
    ));
}

on_both_backends!(
    enqueue_numbers_steps_per_call_in_order,
    enqueueing_an_existing_key_is_a_no_op_returning_the_stored_step,
    a_later_step_waits_for_every_earlier_step_of_its_call,
    claim_only_takes_steps_that_are_due,
    due_steps_come_by_priority_then_time_within_the_limit,
    a_crashed_workers_claim_comes_back_when_its_lease_runs_out,
    a_late_answer_is_kept_if_nobody_claimed_the_step_again,
    retry_keeps_the_error_and_schedules_the_next_attempt,
    failed_and_dropped_steps_keep_their_reason,
    card_steps_not_sent_in_time_are_dropped_and_unblock_the_call,
    expiry_spares_a_step_being_sent,
    drop_pending_withdraws_only_unheld_steps,
    results_are_readable_by_key_for_later_steps,
    the_steps_a_round_looks_up_are_read_together_unknown_keys_left_out,
    counts_by_state,
    counts_kept_by_the_store_follow_every_change_of_state,
    reprocess_resets_failed_and_dropped_steps,
    prune_removes_only_calls_that_are_finished_and_old,
    steps_survive_closing_and_reopening_the_file,
    concurrent_workers_never_claim_the_same_step,
    outcomes_of_a_batch_are_recorded_together_and_stale_leases_are_reported,
    a_finish_is_claimed_with_the_recording_right_after_it_and_nothing_else,
    a_register_is_claimed_with_the_shows_that_follow_it_in_a_chain,
    a_rounds_outcomes_and_their_journal_are_written_together,
    a_round_is_recorded_and_the_next_claimed_in_one_go,
    new_card_steps_are_claimed_in_the_commit_that_stores_them,
    the_claim_of_new_steps_takes_at_most_its_limit,
    calls_with_an_opening_step_and_no_closing_one_are_listed_oldest_first,
    claims_of_a_crashed_run_are_released_at_once,
);

on_postgres_over_tls!(
    enqueue_numbers_steps_per_call_in_order,
    a_later_step_waits_for_every_earlier_step_of_its_call,
    steps_survive_closing_and_reopening_the_file,
    concurrent_workers_never_claim_the_same_step,
    outcomes_of_a_batch_are_recorded_together_and_stale_leases_are_reported,
);
