//! What an ended call leaves in the engine: only its key, remembered so that late events about it plan
//! nothing, for `ENDED_RETENTION_SECS` after its end and at most 10,000 keys, oldest first.

mod common;

use common::*;
use engine::{Engine, Rule, ENDED_RETENTION_SECS};
use tracker::status;

/// Call `key` rings 101 at `secs`, talks 5 s and ends.
fn talked(engine: &mut Engine, key: &str, secs: i64) -> CallSpec {
    let call = CallSpec::incoming(key);
    let plan = run(
        engine,
        &call,
        &[
            call.ringing("c1", secs, "101"),
            call.answered("c1", secs + 1, "101"),
            call.hung_up("c1", secs + 6, 5),
            call.ended(secs + 6, status::TALKED, false, ""),
        ],
    );
    assert_eq!(plan.steps.len(), 2, "register and finish of {key}");
    call
}

#[test]
fn a_late_event_within_the_retention_is_ignored() {
    let mut engine = engine(settings());
    let first = talked(&mut engine, "1700000000.1", 0);
    let _ = talked(&mut engine, "1700000000.2", ENDED_RETENTION_SECS as i64 - 10);
    assert_eq!(engine.remembered_ended(), 2);
    let late = run(&mut engine, &first, &[first.hung_up("c1", 7, 5)]);
    assert!(late.steps.is_empty());
    assert_eq!(rules(&late), [Rule::LateEvent]);
    assert_eq!(engine.live_calls(), 0);
}

#[test]
fn ended_calls_are_forgotten_after_the_retention() {
    let mut engine = engine(settings());
    for i in 0..5 {
        talked(&mut engine, &format!("1700000000.{i}"), i);
    }
    assert_eq!(engine.remembered_ended(), 5);
    talked(&mut engine, "1700000500.1", 10 + ENDED_RETENTION_SECS as i64);
    assert_eq!(engine.remembered_ended(), 1, "only the newest call is left");
}

#[test]
fn at_most_ten_thousand_ended_calls_are_remembered() {
    let mut engine = engine(settings());
    // All within the retention: only the count bounds them.
    let calls: Vec<CallSpec> = (0..10_050)
        .map(|i| talked(&mut engine, &format!("1700000000.{i}"), i / 100))
        .collect();
    assert_eq!(engine.remembered_ended(), 10_000);
    assert_eq!(engine.live_calls(), 0);
    let newest = &calls[calls.len() - 1];
    let late = run(&mut engine, newest, &[newest.hung_up("c1", 107, 5)]);
    assert_eq!(rules(&late), [Rule::LateEvent], "the newest are remembered");
}
