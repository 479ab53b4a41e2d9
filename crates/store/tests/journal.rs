//! The call journal: append, timeline, recent calls, pruning.

mod backends;

use std::time::Duration;

use backends::Backend;
use serde_json::json;
use store::{EntryKind, NewJournalEntry, NewStep, Timestamp};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + secs)
}

fn entry(call: &str, secs: i64, kind: EntryKind, message: &str) -> NewJournalEntry {
    NewJournalEntry::new(call, at(secs), kind, message)
}

fn a_calls_timeline_reads_back_in_time_order(backend: Backend) {
    let store = backend.open();
    store
        .append_journal(&[
            entry("a", 0, EntryKind::Ami, "Newchannel PJSIP/carrier-1").data(json!({"Exten": "100"})),
            entry("b", 1, EntryKind::Ami, "Newchannel PJSIP/101-2"),
            entry("a", 2, EntryKind::Decision, "register: incoming call on trunk carrier"),
        ])
        .unwrap();
    // Appended later but stamped earlier (an AMI event that arrived after a decision): placed by its time.
    store
        .append_journal(&[entry("a", 1, EntryKind::Ami, "DialBegin 101")])
        .unwrap();
    store
        .append_journal(&[
            entry("a", 3, EntryKind::CrmRequest, "telephony.externalcall.register"),
            entry("a", 3, EntryKind::CrmResponse, "CALL_ID externalCall.1").data(json!({"CALL_ID": "externalCall.1"})),
            entry("a", 4, EntryKind::Hook, "process_final_params: 12 ms"),
            entry("a", 5, EntryKind::Other("note".into()), "custom"),
        ])
        .unwrap();

    let timeline = store.call_timeline("a").unwrap();
    let messages: Vec<&str> = timeline.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "Newchannel PJSIP/carrier-1",
            "DialBegin 101",
            "register: incoming call on trunk carrier",
            "telephony.externalcall.register",
            "CALL_ID externalCall.1",
            "process_final_params: 12 ms",
            "custom"
        ]
    );
    assert_eq!(timeline[0].data, Some(json!({"Exten": "100"})));
    assert_eq!(timeline[1].data, None);
    assert_eq!(timeline[4].kind, EntryKind::CrmResponse);
    assert_eq!(timeline[6].kind, EntryKind::Other("note".into()));
    assert!(timeline.iter().all(|e| e.call_key == "a"));
    assert_eq!(timeline[0].at, at(0));
    assert!(store.call_timeline("nobody").unwrap().is_empty());
}

fn recent_calls_show_the_latest_state_and_the_outbox(backend: Backend) {
    let store = backend.open();
    store
        .append_journal(&[
            entry("a", 0, EntryKind::Ami, "a starts"),
            entry("b", 5, EntryKind::Ami, "b starts"),
            entry("a", 10, EntryKind::Error, "register refused"),
            entry("c", 7, EntryKind::Decision, "c not registered: black list"),
        ])
        .unwrap();
    // An entry stamped before the call's latest one does not become its "last".
    store
        .append_journal(&[entry("a", 3, EntryKind::Ami, "late AMI event")])
        .unwrap();
    store
        .enqueue(
            &[
                NewStep::new("a", "a/register", "register", json!({})),
                NewStep::new("a", "a/finish", "finish", json!({})),
            ],
            at(0),
        )
        .unwrap();
    let register = store
        .claim_due(at(1), 1, Duration::from_secs(5))
        .unwrap()
        .claimed
        .remove(0);
    store.mark_failed(register.lease(), "ERROR_ARGUMENT", at(2)).unwrap();

    let recent = store.recent_calls(10).unwrap();
    let order: Vec<&str> = recent.iter().map(|c| c.call_key.as_str()).collect();
    assert_eq!(order, ["a", "c", "b"]);
    let a = &recent[0];
    assert_eq!((a.first_at, a.last_at, a.entries, a.errors), (at(0), at(10), 3, 1));
    assert_eq!(
        (a.last_kind.clone(), a.last_message.as_str()),
        (EntryKind::Error, "register refused")
    );
    assert_eq!((a.open_steps, a.failed_steps), (1, 1));
    assert_eq!((recent[1].open_steps, recent[1].errors, recent[1].entries), (0, 0, 1));
    assert_eq!(store.recent_calls(1).unwrap().len(), 1);
}

fn prune_drops_old_entries_and_recounts_what_is_left(backend: Backend) {
    let store = backend.open();
    store
        .append_journal(&[
            entry("old", 0, EntryKind::Ami, "old 1"),
            entry("old", 1, EntryKind::Error, "old 2"),
            entry("span", 2, EntryKind::Error, "span 1"),
            entry("span", 20, EntryKind::Ami, "span 2"),
            entry("new", 30, EntryKind::Ami, "new 1"),
        ])
        .unwrap();
    assert_eq!(store.prune_journal(at(10)).unwrap(), 3);
    assert!(store.call_timeline("old").unwrap().is_empty());
    let span = store.call_timeline("span").unwrap();
    assert_eq!(span.len(), 1);
    let recent = store.recent_calls(10).unwrap();
    let order: Vec<&str> = recent.iter().map(|c| c.call_key.as_str()).collect();
    assert_eq!(order, ["new", "span"]);
    assert_eq!(
        (recent[1].first_at, recent[1].entries, recent[1].errors),
        (at(20), 1, 0)
    );
    assert_eq!(store.prune_journal(at(10)).unwrap(), 0);
}

fn planned_steps_and_their_journal_are_written_together(backend: Backend) {
    let store = backend.open();
    let steps = [
        NewStep::new("a", "a/register", "register", json!({})),
        NewStep::new("a", "a/finish", "finish", json!({})),
    ];
    let entries = [
        entry("a", 0, EntryKind::Ami, "Newchannel PJSIP/carrier-1"),
        entry("a", 1, EntryKind::Decision, "register: incoming call on trunk carrier"),
    ];
    store.enqueue_journaled(&steps, &entries, at(1)).unwrap();
    // Planned again (a replay after a restart): the steps stay once, in their order.
    store.enqueue_journaled(&steps, &[], at(2)).unwrap();

    let keys: Vec<String> = store
        .steps_of_call("a")
        .unwrap()
        .into_iter()
        .map(|s| s.idempotency_key)
        .collect();
    assert_eq!(keys, ["a/register", "a/finish"]);
    let messages: Vec<String> = store
        .call_timeline("a")
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(
        messages,
        ["Newchannel PJSIP/carrier-1", "register: incoming call on trunk carrier"]
    );
}

on_both_backends!(
    planned_steps_and_their_journal_are_written_together,
    a_calls_timeline_reads_back_in_time_order,
    recent_calls_show_the_latest_state_and_the_outbox,
    prune_drops_old_entries_and_recounts_what_is_left,
);
