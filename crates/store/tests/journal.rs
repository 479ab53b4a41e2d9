//! The call journal: append, timeline, recent calls, pruning.

mod backends;

use std::time::Duration;

use backends::Backend;
use serde_json::json;
use store::{CallFilter, CallResult, EntryKind, NewJournalEntry, NewStep, Store, StoreError, Timestamp};

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

/// A day of calls for the journal page's filters: answered, missed, live, with an error entry, with a failed
/// step, one the day before, each with its own number and employee.
fn calls_to_filter(store: &dyn Store) {
    let call = |key: &str, start: i64, number: &str, extension: &str, ends: &[&str]| {
        let mut entries = vec![
            entry(key, start, EntryKind::Ami, "leg_ringing").data(json!({"number": number, "extension": extension})),
            entry(
                key,
                start + 1,
                EntryKind::Decision,
                &format!("card for extension {extension}"),
            ),
        ];
        for (n, message) in ends.iter().enumerate() {
            entries.push(entry(key, start + 2 + n as i64, EntryKind::Ami, message));
        }
        entries
    };
    let day = 86_400;
    let mut entries = Vec::new();
    entries.extend(call(
        "answered",
        day,
        "+79001112233",
        "101",
        &["leg_answered", "call_ended"],
    ));
    entries.extend(call("missed", day + 100, "+79004445566", "102", &["call_ended"]));
    entries.extend(call("live", day + 200, "+79001112233", "103", &[]));
    entries.extend(call(
        "error",
        day + 300,
        "+7_900%777",
        "101",
        &["leg_answered", "call_ended"],
    ));
    entries.push(entry(
        "error",
        day + 305,
        EntryKind::Error,
        "register refused: ACCESS_DENIED",
    ));
    entries.extend(call("failed", day + 400, "+79008889900", "104", &["call_ended"]));
    entries.extend(call(
        "yesterday",
        100,
        "+79001112233",
        "101",
        &["leg_answered", "call_ended"],
    ));
    store.append_journal(&entries).unwrap();
    store
        .enqueue(
            &[NewStep::new("failed", "failed/register", "register", json!({}))],
            at(day),
        )
        .unwrap();
    let register = store
        .claim_due(at(day + 401), 1, Duration::from_secs(5))
        .unwrap()
        .claimed
        .remove(0);
    store
        .mark_failed(register.lease(), "ERROR_ARGUMENT", at(day + 402))
        .unwrap();
}

fn found(store: &dyn Store, filter: CallFilter) -> Vec<String> {
    let calls = store.find_calls(&filter, 50).unwrap();
    calls.into_iter().map(|c| c.call_key).collect()
}

fn texts(texts: &[&str]) -> CallFilter {
    CallFilter {
        texts: texts.iter().map(|t| (*t).to_owned()).collect(),
        ..CallFilter::default()
    }
}

fn the_journal_filters_each_pick_the_calls_they_name(backend: Backend) {
    let store = backend.open();
    calls_to_filter(&*store);
    let result = |result| CallFilter {
        result: Some(result),
        ..CallFilter::default()
    };
    assert_eq!(
        found(&*store, result(CallResult::Answered)),
        ["error", "answered", "yesterday"]
    );
    assert_eq!(found(&*store, result(CallResult::Missed)), ["failed", "missed"]);
    assert_eq!(found(&*store, result(CallResult::Live)), ["live"]);
    let errors = CallFilter {
        has_errors: true,
        ..CallFilter::default()
    };
    assert_eq!(found(&*store, errors), ["failed", "error"]);
    let one_day = CallFilter {
        from: Some(at(86_400)),
        to: Some(at(2 * 86_400)),
        ..CallFilter::default()
    };
    assert_eq!(
        found(&*store, one_day),
        ["failed", "error", "live", "missed", "answered"]
    );
    let day_before = CallFilter {
        from: Some(at(0)),
        to: Some(at(86_400)),
        ..CallFilter::default()
    };
    assert_eq!(found(&*store, day_before), ["yesterday"]);
    let answered_with_errors = CallFilter {
        has_errors: true,
        result: Some(CallResult::Answered),
        ..CallFilter::default()
    };
    assert_eq!(found(&*store, answered_with_errors), ["error"]);
    let next_page = CallFilter {
        before: Some((at(86_400 + 302), "error".to_owned())),
        ..CallFilter::default()
    };
    assert_eq!(found(&*store, next_page), ["live", "missed", "answered", "yesterday"]);
}

fn the_text_filters_find_a_substring_of_an_entry(backend: Backend) {
    let store = backend.open();
    calls_to_filter(&*store);
    // A whole number, a part of it, and a part too short for any index.
    assert_eq!(
        found(&*store, texts(&["+79001112233"])),
        ["live", "answered", "yesterday"]
    );
    assert_eq!(found(&*store, texts(&["4445"])), ["missed"]);
    assert_eq!(found(&*store, texts(&["55"])), ["missed"]);
    // An employee's extension, in an entry's data or its message, with the number of another entry.
    assert_eq!(found(&*store, texts(&["101"])), ["error", "answered", "yesterday"]);
    assert_eq!(found(&*store, texts(&["extension 104"])), ["failed"]);
    assert_eq!(
        found(&*store, texts(&["+79001112233", "101"])),
        ["answered", "yesterday"]
    );
    // Words of a message.
    assert_eq!(found(&*store, texts(&["ACCESS_DENIED"])), ["error"]);
    // LIKE's wildcards are plain characters.
    assert_eq!(found(&*store, texts(&["_900%"])), ["error"]);
    assert_eq!(found(&*store, texts(&["%"])), ["error"]);
    assert!(found(&*store, texts(&["+7900_"])).is_empty());
    assert!(found(&*store, texts(&["79009999"])).is_empty());
    // A part of an entry's JSON, quotes and all.
    assert_eq!(found(&*store, texts(&[r#""extension":"104""#])), ["failed"]);
    // The case of ASCII letters does not matter, on either backend (SQLite's LIKE, PostgreSQL's ILIKE), and the
    // index does not change it.
    assert_eq!(found(&*store, texts(&["access_denied"])), ["error"]);
    assert_eq!(found(&*store, texts(&["Leg_Ringing"])).len(), 6);
    // With the other filters.
    let answered_today = CallFilter {
        result: Some(CallResult::Answered),
        from: Some(at(86_400)),
        ..texts(&["101"])
    };
    assert_eq!(found(&*store, answered_today), ["error", "answered"]);
}

fn a_text_in_thousands_of_entries_finds_the_latest_calls_holding_it(backend: Backend) {
    let store = backend.open();
    // Extension 101 in 3,000 entries, 102 in 1,500: a common text and a rarer one take different paths.
    let extension = |n: i64| if n % 3 == 0 { "102" } else { "101" };
    let entries: Vec<NewJournalEntry> = (0..4_500)
        .map(|n| {
            let message = format!("card for extension {}", extension(n));
            entry(&format!("call-{n:04}"), n, EntryKind::Decision, &message)
        })
        .collect();
    store.append_journal(&entries).unwrap();
    let latest = |wanted: &str| -> Vec<String> {
        (0..4_500)
            .rev()
            .filter(|&n| extension(n) == wanted)
            .take(50)
            .map(|n| format!("call-{n:04}"))
            .collect()
    };
    assert_eq!(found(&*store, texts(&["extension 101"])), latest("101"));
    assert_eq!(found(&*store, texts(&["extension 102"])), latest("102"));
    assert_eq!(found(&*store, texts(&["10"])).len(), 50);
    let none = found(&*store, texts(&["extension 101", "call-"]));
    assert!(none.is_empty(), "call keys are not searched: {none:?}");
}

fn a_search_past_its_time_limit_is_stopped_and_says_so(backend: Backend) {
    let store = backend.open();
    // 5,000 calls of 3 entries: a text of 2 characters that no entry holds is looked for in every entry.
    let entries: Vec<NewJournalEntry> = (0..15_000)
        .map(|n| entry(&format!("call-{:05}", n / 3), n, EntryKind::Ami, "leg_ringing"))
        .collect();
    store.append_journal(&entries).unwrap();
    let reports = store.for_reports();
    let limited = |limit| CallFilter {
        time_limit: Some(limit),
        ..texts(&["zq"])
    };
    match reports.find_calls(&limited(Duration::from_nanos(1)), 50) {
        Err(StoreError::TimedOut { after, .. }) => assert_eq!(after, Duration::from_nanos(1)),
        other => panic!("the search should have been stopped by its limit: {other:?}"),
    }
    // The limit was that search's own: the next ones on the same connections run to the end.
    assert!(reports.find_calls(&texts(&["zq"]), 50).unwrap().is_empty());
    assert!(reports
        .find_calls(&limited(Duration::from_secs(600)), 50)
        .unwrap()
        .is_empty());
    assert_eq!(found(&*reports, texts(&["ringing"])).len(), 50);
    assert_eq!(found(&*store, texts(&["ringing"])).len(), 50);
}

on_both_backends!(
    a_search_past_its_time_limit_is_stopped_and_says_so,
    a_text_in_thousands_of_entries_finds_the_latest_calls_holding_it,
    the_journal_filters_each_pick_the_calls_they_name,
    the_text_filters_find_a_substring_of_an_entry,
    planned_steps_and_their_journal_are_written_together,
    a_calls_timeline_reads_back_in_time_order,
    recent_calls_show_the_latest_state_and_the_outbox,
    prune_drops_old_entries_and_recounts_what_is_left,
);
