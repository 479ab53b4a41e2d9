//! The journal of earlier calls the benches measure the admin UI over: 8 entries a call, 30 s apart, 5,000
//! numbers; every tenth call is missed (nobody answers), the employee's extension goes round 101…110, no call
//! has an error. Shared by the pages bench and the e2e bench's `ui` part.

use std::time::Duration;

use serde_json::json;
use store::{EntryKind, NewJournalEntry, Timestamp};

/// The key, number and journal of the `i`-th call, the first of which began at `start`.
pub fn call(i: usize, start: Timestamp) -> (String, String, Vec<NewJournalEntry>) {
    let call = format!("{}.{i}", 1_700_000_000 + i);
    let at = start.saturating_add(Duration::from_secs(i as u64 * 30));
    let number = format!("+7900{:07}", i % 5000);
    let extension = 101 + i % 10;
    let card = format!("card for employee {extension} (extension directory)");
    let missed = i % 10 == 3;
    let entries = [
        (EntryKind::Ami, "leg_ringing"),
        (EntryKind::Decision, card.as_str()),
        (EntryKind::CrmRequest, "register"),
        (EntryKind::CrmResponse, "register done"),
        (EntryKind::Ami, "leg_answered"),
        (EntryKind::Ami, "call_ended"),
        (EntryKind::CrmRequest, "finish"),
        (EntryKind::CrmResponse, "finish done"),
    ]
    .into_iter()
    .enumerate()
    .filter(|(_, (_, message))| !(missed && *message == "leg_answered"))
    .map(|(k, (kind, message))| {
        NewJournalEntry::new(
            &call,
            at.saturating_add(Duration::from_millis(k as u64 * 500)),
            kind,
            message,
        )
        .data(json!({"number": number, "extension": extension.to_string(), "USER_ID": extension - 100}))
    })
    .collect();
    (call, number, entries)
}
