//! Registrations left open by a gap in following the PBX (a crash, a lost AMI connection): finished from what
//! the outbox and the journal know. And calls that need the users directory before it was ever loaded.

mod common;

use common::*;
use engine::{Gap, OpenCall, Plan, RecoverySource, Rule, StoredStep};
use serde_json::json;

/// What a process planned for a call before it stopped following the PBX, as the outbox and journal keep it.
fn before_the_gap(spec: &CallSpec, events: &[tracker::CallEvent]) -> Plan {
    let mut engine = engine(settings());
    run(&mut engine, spec, events)
}

fn open_call(spec: &CallSpec, before: &Plan, recordings: &[(&str, &str)], gap: (i64, i64)) -> OpenCall {
    OpenCall {
        call: spec.key.clone(),
        source: RecoverySource::Journal,
        steps: before
            .steps
            .iter()
            .map(|step| StoredStep {
                step: step.clone(),
                given_up: false,
            })
            .collect(),
        decisions: before.journal.clone(),
        recordings: recordings
            .iter()
            .map(|(c, p)| ((*c).to_owned(), (*p).to_owned()))
            .collect(),
        gap: Gap {
            from: at(gap.0),
            to: at(gap.1),
        },
        ended_at: None,
    }
}

#[test]
fn an_answered_call_that_ended_in_the_gap_is_finished_with_its_talk_up_to_the_gap_and_its_recording() {
    let call = CallSpec::incoming("1700000000.1");
    let before = before_the_gap(
        &call,
        &[
            call.ringing("c1", 2, "101"),
            call.answered("c1", 6, "101"),
            call.recording("c1", 6, "/rec/in-1.wav"),
        ],
    );
    assert_eq!(describe_all(&before), ["register 0 user=1 type=2 show=1"]);
    // A new process: the engine knows nothing of the call.
    let mut engine = engine(settings());
    let plan = engine.recover(&open_call(&call, &before, &[("c1", "/rec/in-1.wav")], (20, 40)));
    assert_eq!(
        describe_all(&plan),
        ["finish 0 user=1 duration=14 status=200", "record 0 /rec/in-1.wav"]
    );
    // The keys the call's own end would have planned: a finish stored meanwhile is never doubled.
    assert_eq!(keys(&plan), ["1700000000.1/0/finish", "1700000000.1/0/record"]);
    assert_eq!(
        rules(&plan),
        [Rule::RecoveredFinish, Rule::FinishTalk, Rule::AttachRecord]
    );
    let why = &plan.journal[0];
    assert_eq!(why.data["source"], json!("journal"));
    assert_eq!(why.data["user"], json!(1));
    assert!(why.reason.contains("the journal"), "{}", why.reason);
    // Recovered once: the same facts again plan nothing (the call is remembered as ended).
    let again = engine.recover(&open_call(&call, &before, &[], (20, 40)));
    assert!(again.steps.is_empty(), "{:?}", describe_all(&again));
}

#[test]
fn a_recording_whose_file_is_gone_is_not_attached() {
    let call = CallSpec::incoming("1700000000.1");
    let before = before_the_gap(&call, &[call.ringing("c1", 2, "101"), call.answered("c1", 6, "101")]);
    let plan = engine(settings()).recover(&open_call(&call, &before, &[], (20, 40)));
    assert_eq!(describe_all(&plan), ["finish 0 user=1 duration=14 status=200"]);
}

#[test]
fn a_call_nobody_had_answered_is_finished_as_missed_for_the_last_rung_without_a_task() {
    let call = CallSpec::incoming("1700000000.2");
    let before = before_the_gap(
        &call,
        &[call.queue_ringing("c1", 2, "101"), call.queue_ringing("c2", 3, "102")],
    );
    assert_eq!(
        describe_all(&before),
        ["register 0 user=1 type=2 show=1", "show 0 user=2"]
    );
    let mut settings = settings();
    settings.missed.task.enabled = true;
    let mut engine = common::engine(settings);
    let plan = engine.recover(&open_call(&call, &before, &[], (20, 40)));
    assert_eq!(
        describe_all(&plan),
        ["owner 0", "finish 0 user=owner|2 duration=0 status=304"]
    );
    assert_eq!(plan.journal[0].rule, Rule::RecoveredFinish);
    assert!(plan.journal[0].reason.contains("no missed-call task"));
}

#[test]
fn an_outgoing_call_with_no_answer_is_finished_with_an_unknown_outcome() {
    let call = CallSpec::outgoing("1700000000.3", "101");
    let before = before_the_gap(&call, &[call.dialing("c1", 1, "101")]);
    let plan = engine(settings()).recover(&open_call(&call, &before, &[], (20, 40)));
    assert_eq!(describe_all(&plan), ["finish 0 user=1 duration=0 status=OTHER"]);
}

#[test]
fn a_second_registration_taken_over_is_finished_and_a_finished_one_left_alone() {
    let call = CallSpec::incoming("1700000000.4");
    let before = before_the_gap(
        &call,
        &[
            call.ringing("c1", 1, "101"),
            call.answered("c1", 3, "101"),
            call.hung_up("c1", 10, 7),
            call.answered_by("c2", 11, "102", tracker::LegOrigin::Transfer),
        ],
    );
    assert_eq!(
        describe_all(&before),
        [
            "register 0 user=1 type=2 show=1",
            "finish 0 user=1 duration=7 status=200",
            "register 1 user=2 type=2 show=0"
        ]
    );
    let plan = engine(settings()).recover(&open_call(&call, &before, &[("", "/rec/in-4.wav")], (30, 50)));
    assert_eq!(
        describe_all(&plan),
        ["finish 1 user=2 duration=19 status=200", "record 1 /rec/in-4.wav"]
    );
}

#[test]
fn nothing_is_recovered_for_a_failed_register_or_a_call_still_followed() {
    let call = CallSpec::incoming("1700000000.5");
    let events = [call.ringing("c1", 2, "101"), call.answered("c1", 6, "101")];
    let before = before_the_gap(&call, &events);
    let mut failed = open_call(&call, &before, &[], (20, 40));
    failed.steps[0].given_up = true;
    assert!(engine(settings()).recover(&failed).steps.is_empty());
    // The same engine still follows the call (it is live): its own end will finish it.
    let mut live = engine(settings());
    run(&mut live, &call, &events);
    assert!(live.recover(&open_call(&call, &before, &[], (20, 40))).steps.is_empty());
}

#[test]
fn a_call_before_the_directory_was_ever_loaded_waits_for_it_instead_of_going_to_nobody() {
    let call = CallSpec::incoming("1700000000.6");
    let mut engine = engine::Engine::new(settings()).expect("valid settings");
    let ringing = call.ringing("c1", 2, "101");
    let plan = engine.handle(&ringing, Some(&call.live()), at(2));
    let refresh = plan.refresh_users.as_ref().expect("a refresh is asked for");
    assert!(refresh.hold, "never loaded: the event must wait");
    assert_eq!(refresh.extensions, ["101"]);
    assert!(plan.steps.is_empty());
    assert_eq!(rules(&plan), [Rule::DirectoryUnknown]);
    // Once loaded, the same event plans the registration for the employee, not the default responsible.
    engine.users_mut().replace(
        [engine::DirectoryUser {
            id: 1,
            extension: Some("101".into()),
            phones: vec![],
        }],
        at(30),
    );
    let plan = engine.handle(&ringing, Some(&call.live()), at(30));
    assert_eq!(describe_all(&plan), ["register 0 user=1 type=2 show=1"]);
}

#[test]
fn a_loaded_directory_without_the_extension_is_an_answer_not_a_wait() {
    let call = CallSpec::incoming("1700000000.7");
    let mut engine = engine(settings());
    let ringing = call.ringing("c1", 2, "104");
    // Known directory, unknown extension: a refresh may help (once it is due), but nothing waits for it.
    let plan = engine.handle(&ringing, Some(&call.live()), at(10_000));
    let refresh = plan.refresh_users.as_ref().expect("a refresh is due");
    assert!(!refresh.hold);
    assert!(!rules(&plan).contains(&Rule::DirectoryUnknown));
    // Not due: decided without the user at once.
    let plan = engine.handle(&ringing, Some(&call.live()), at(2));
    assert!(plan.refresh_users.is_none());
    assert_eq!(rules(&plan), [Rule::UnknownUser]);
}
