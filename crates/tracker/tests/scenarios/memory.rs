//! What ended calls leave behind: only remembered keys (hung-up channels, ended calls), bounded by age
//! (`forget_after_secs`) and by count (`REMEMBERED_KEYS_CAP` of each kind), and late events about a call are
//! handled safely whether its keys are still remembered or already forgotten.

use ami::Message;
use tracker::{Timestamp, Tracker, TrackerConfig, REMEMBERED_KEYS_CAP};

use super::common::{run, Pbx, CLIENT, DID, T0};

/// A tracker with the default settings (no number rules: tens of thousands of calls run in seconds).
fn tracker() -> Tracker {
    Tracker::new(TrackerConfig::default()).expect("the default settings are valid")
}

/// One short incoming call (the client hangs up in the IVR) starting `at_secs`, numbered from `counter`:
/// its messages, and where the late part begins (what follows the AMI `Hangup`: CEL `HANGUP` and `CHAN_END`,
/// plus the `LINKEDID_END` that closes the linkedid).
fn short_call(at_secs: i64, counter: u64) -> (Vec<Message>, usize) {
    let mut p = Pbx::starting_at(at_secs, counter);
    let t = p.new_channel("PJSIP/carrier", 4, CLIENT, "from-trunk", DID, None);
    p.advance_ms(1500);
    p.hangup(t, 16, "Normal Clearing");
    let hangup = p
        .messages
        .iter()
        .position(|m| m.event_name() == Some("Hangup"))
        .expect("the script hangs up");
    p.cel(t, "LINKEDID_END", "");
    (p.messages, hangup + 1)
}

/// `calls` short calls, one every 10 ms from `T0`, each with its late events right after its hang-up.
fn end_calls(t: &mut Tracker, calls: u64) -> Vec<(Vec<Message>, usize)> {
    (0..calls)
        .map(|i| {
            let call = short_call(T0 + (i / 100) as i64, i + 1);
            assert_eq!(run(t, &call.0).len(), 1, "call {i} ends (call_ended)");
            call
        })
        .collect()
}

/// Everything about the call again, as a PBX would send it late or twice: nothing happens and nothing is kept.
fn replayed_changes_nothing(t: &mut Tracker, messages: &[Message]) {
    let remembered = t.remembered_keys();
    assert!(run(t, messages).is_empty());
    assert_eq!(t.live_calls(), 0);
    assert_eq!(t.remembered_keys(), remembered);
}

#[test]
fn remembered_keys_stay_under_the_cap_however_many_calls_end() {
    let mut t = tracker();
    let calls = end_calls(&mut t, REMEMBERED_KEYS_CAP as u64 + 500);
    assert_eq!(
        t.remembered_keys(),
        2 * REMEMBERED_KEYS_CAP,
        "one channel and one call per call, the oldest 500 of each forgotten"
    );
    assert_eq!(t.live_calls(), 0);
    assert_eq!(t.live_channels(), 0);
    // The newest call is remembered whole: even its first events again start nothing.
    replayed_changes_nothing(&mut t, &calls[calls.len() - 1].0);
}

#[test]
fn late_events_of_a_call_forgotten_for_the_cap_start_nothing() {
    let mut t = tracker();
    let calls = end_calls(&mut t, REMEMBERED_KEYS_CAP as u64 + 500);
    let (messages, late) = &calls[0];
    replayed_changes_nothing(&mut t, &messages[late - 1..]);
}

#[test]
fn remembered_keys_are_forgotten_after_forget_after_secs() {
    let mut t = tracker();
    let calls = end_calls(&mut t, 300);
    assert_eq!(t.remembered_keys(), 600);
    assert!(t.tick(Timestamp::from_secs(T0 + 60)).is_empty());
    assert_eq!(t.remembered_keys(), 600, "a minute later they are still remembered");
    let default_forget = TrackerConfig::default().forget_after_secs;
    assert!(t.tick(Timestamp::from_secs(T0 + 6 + default_forget as i64)).is_empty());
    assert_eq!(
        t.remembered_keys(),
        0,
        "all forgotten {default_forget} s after the last call"
    );
    let (messages, late) = &calls[299];
    replayed_changes_nothing(&mut t, &messages[late - 1..]);
}

#[test]
fn keys_are_aged_by_the_tracker_clock_when_the_pbx_clock_is_behind() {
    let mut t = tracker();
    // ringlink's clock (the ticks) is an hour ahead of the PBX's timestamps.
    let ahead = Timestamp::from_secs(T0 + 3600);
    assert!(t.tick(ahead).is_empty());
    let calls = end_calls(&mut t, 10);
    assert!(t.tick(Timestamp::from_secs(T0 + 3600 + 60)).is_empty());
    assert_eq!(t.remembered_keys(), 20, "not forgotten at the first tick");
    replayed_changes_nothing(&mut t, &calls[0].0);
}
