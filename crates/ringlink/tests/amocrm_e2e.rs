//! Calls on a real Asterisk land in an (emulated) amoCRM account: `ringlink run` with `[crm] kind = "amocrm"`
//! between the test bed and `amoemu`. Every test checks that each call is recorded exactly once (amoCRM's
//! `/api/v4/calls` does not deduplicate) for the right employee, with the right status and duration.

#[path = "e2e/amocrm_office.rs"]
mod office;

use std::time::Duration;

use amoemu::{AuthKind, EmulatorConfig, Fault, RecordedRequest};
use office::{duration_of, known_client, Office, CONTACT, TRUNK_PIPELINE, U101, U102, U103, WAIT};
use serde_json::{json, Value};
use testbed::scenarios;

/// S1: a known client calls the DID, 101 rings and answers, they talk ≈5 s. amoCRM: the popup to 101's user
/// while it rings, then one inbound call (status 4) for that user with the talk time and the recording's
/// signed link, on the client's contact.
#[tokio::test]
async fn s1_answered_incoming_is_one_call_for_who_answered() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    office.wait_done("/api/v4/calls", 1).await;
    let popups = office.emu.popups();
    assert_eq!(popups.len(), 1, "{popups:?}");
    assert_eq!(popups[0].users, Some(vec![U101]));
    assert_eq!(popups[0].contact_id, Some(CONTACT));
    let call = office.the_call();
    assert_eq!(call["direction"], json!("inbound"));
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U101));
    assert_eq!(call["created_by"], json!(U101));
    assert!((4..=7).contains(&duration_of(&call)), "talk ≈5 s: {call}");
    assert!(call["phone"].as_str().unwrap_or_default().ends_with("9001234567"));
    let link = call["link"].as_str().unwrap_or_default();
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{}/records/", office.web_port)),
        "the recording's signed link: {call}"
    );
    let stored = office.emu.state().calls;
    assert_eq!(stored.len(), 1);
    assert!(office.ok("/api/v4/leads/unsorted/sip").is_empty(), "a known number");
    office.assert_nothing_twice();
    office.stop().await;
}

/// S2 with the missed-call task: 101 rings 20 s, nobody answers. amoCRM: the popup, then one inbound call with
/// status 6 for the contact's owner (the chain's first mode), and one "call" task for them on the contact.
#[tokio::test]
async fn s2_missed_incoming_is_status_6_for_the_owner_with_a_call_task() {
    let office = Office::start(known_client(), "[engine.missed.task]\nenabled = true\n").await;
    scenarios::play(&office.bed, "s2").await.expect("play S2");
    office.wait_done("/api/v4/tasks", 1).await;
    assert_eq!(office.emu.popups().len(), 1);
    let call = office.the_call();
    assert_eq!(call["direction"], json!("inbound"));
    assert_eq!(call["call_status"], json!(6));
    assert_eq!(call["duration"], json!(0));
    assert_eq!(call["responsible_user_id"], json!(U102), "the contact's owner: {call}");
    let tasks = office.emu.state().tasks;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0].fields;
    assert_eq!(task["task_type_id"], json!(1));
    assert_eq!(task["responsible_user_id"], json!(U102));
    assert_eq!(task["entity_id"], json!(CONTACT), "{task}");
    office.assert_nothing_twice();
    office.stop().await;
}

/// S7: 101 calls the known client through the trunk; they talk ≈5 s. amoCRM: one outbound call, status 4, for
/// 101's user.
#[tokio::test]
async fn s7_outgoing_is_one_outbound_call_of_the_caller() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s7").await.expect("play S7");
    office.wait_done("/api/v4/calls", 1).await;
    let call = office.the_call();
    assert_eq!(call["direction"], json!("outbound"));
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U101));
    assert!((4..=7).contains(&duration_of(&call)), "talk ≈5 s: {call}");
    office.assert_nothing_twice();
    office.stop().await;
}

/// An unknown number calls (S1 with an account that has no contact for it): amoCRM refuses the call ("Entity
/// not found"), so it goes once into Unsorted, in the pipeline mapped from the trunk, with its call event.
#[tokio::test]
async fn an_unknown_number_goes_once_into_unsorted_in_the_trunks_pipeline() {
    let office = Office::start(EmulatorConfig::default(), "").await;
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    office.wait_done("/api/v4/leads/unsorted/sip", 1).await;
    let refused = office.emu.requests_to("/api/v4/calls");
    assert_eq!(refused.len(), 1, "{}", office.describe());
    assert_eq!(refused[0].status, 400);
    let entries = office.ok("/api/v4/leads/unsorted/sip");
    assert_eq!(entries.len(), 1, "{}", office.describe());
    let entry = &entries[0].body[0];
    assert_eq!(entry["pipeline_id"], json!(TRUNK_PIPELINE));
    assert_eq!(entry["metadata"]["is_call_event_needed"], json!(true));
    assert_eq!(entry["metadata"]["call_responsible"], json!(U101));
    assert!((4..=7).contains(&entry["metadata"]["duration"].as_u64().unwrap_or(0)));
    let unsorted = office.emu.state().unsorted;
    assert_eq!(unsorted.len(), 1, "{unsorted:?}");
    office.stop().await;
}

/// S3: the ringall queue rings 101, 102 and 103 at once; 102 answers. amoCRM: a popup to each of the three users
/// (and nobody else), then one inbound call for 102's user, the employee who talked.
#[tokio::test]
async fn s3_ringall_queue_pops_up_for_the_three_and_records_the_answering_one() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s3").await.expect("play S3");
    office.wait_done("/api/v4/calls", 1).await;
    let mut popped = office.popup_users();
    popped.sort_unstable();
    let mut rung = vec![U101, U102, U103];
    rung.sort_unstable();
    assert_eq!(popped, rung, "one popup for each ringing phone:\n{}", office.describe());
    let call = office.the_call();
    assert_eq!(call["direction"], json!("inbound"));
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U102), "who answered: {call}");
    assert!((4..=7).contains(&duration_of(&call)), "talk ≈5 s: {call}");
    office.assert_nothing_twice();
    office.stop().await;
}

/// S4: the one-by-one queue rings 101, then 102, then 103, who answers. amoCRM: a popup to each user in turn,
/// then one inbound call for 103's user.
#[tokio::test]
async fn s4_linear_queue_pops_up_in_turn_and_records_the_answering_one() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s4").await.expect("play S4");
    office.wait_done("/api/v4/calls", 1).await;
    assert_eq!(
        office.popup_users(),
        [U101, U102, U103],
        "a popup as each phone rings:\n{}",
        office.describe()
    );
    let call = office.the_call();
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U103), "who answered: {call}");
    assert!((4..=7).contains(&duration_of(&call)), "talk ≈5 s: {call}");
    office.assert_nothing_twice();
    office.stop().await;
}

/// S8: 101 calls the client, who is busy, declines, does not answer; then 101 gives up while it rings. amoCRM:
/// one outbound call each for 101's user, 0 s: status 7 for busy, 6 ("не дозвонился") for the others. No
/// incoming-call popup for the employee who dials.
#[tokio::test]
async fn s8_outgoing_failures_are_busy_7_and_not_connected_6() {
    let office = Office::start(known_client(), "").await;
    let cases = [("s8-busy", 7), ("s8-decline", 6), ("s8-noanswer", 6), ("s8-cancel", 6)];
    for (n, (id, status)) in cases.into_iter().enumerate() {
        scenarios::play(&office.bed, id)
            .await
            .unwrap_or_else(|e| panic!("play {id}: {e}"));
        office.wait_done("/api/v4/calls", n + 1).await;
        let calls = office.calls();
        assert_eq!(calls.len(), n + 1, "{id}: one call each:\n{}", office.describe());
        let call = &calls[n];
        assert_eq!(call["direction"], json!("outbound"), "{id}: {call}");
        assert_eq!(call["call_status"], json!(status), "{id}: {call}");
        assert_eq!(call["duration"], json!(0), "{id}: {call}");
        assert_eq!(call["responsible_user_id"], json!(U101), "{id}: {call}");
    }
    assert!(office.emu.popups().is_empty(), "{:?}", office.emu.popups());
    office.assert_nothing_twice();
    office.stop().await;
}

/// S10: 101 answers, then blind-transfers the client to 102, who answers. amoCRM: two inbound calls, each
/// employee's talk under their own user (101's first, then 102's), both on the client's contact; a popup to
/// each as their phone rang.
#[tokio::test]
async fn s10_blind_transfer_is_two_calls_each_for_who_talked() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s10").await.expect("play S10");
    office.wait_done("/api/v4/calls", 2).await;
    let calls = office.calls();
    assert_eq!(calls.len(), 2, "{}", office.describe());
    let (first, second) = (&calls[0], &calls[1]);
    assert_eq!(first["responsible_user_id"], json!(U101), "{first}");
    assert_eq!(second["responsible_user_id"], json!(U102), "{second}");
    assert!((2..=6).contains(&duration_of(first)), "101 talks ≈3 s: {first}");
    assert!((3..=9).contains(&duration_of(second)), "102 talks the rest: {second}");
    assert_ne!(first["uniq"], second["uniq"]);
    assert!(calls.iter().all(|c| c["call_status"] == json!(4)));
    let stored = office.emu.state().calls;
    assert!(
        stored
            .iter()
            .all(|c| c.entity_type == "contacts" && c.entity_id == CONTACT),
        "both on the client's contact: {stored:?}"
    );
    assert_eq!(office.popup_users(), [U101, U102]);
    office.assert_nothing_twice();
    office.stop().await;
}

/// S12: 101 rings, 102 picks the call up with *8. amoCRM: the popup only to 101's user (102's phone never rang),
/// and one inbound call for 102's user, who talked.
#[tokio::test]
async fn s12_pickup_is_recorded_for_who_picked_up() {
    let office = Office::start(known_client(), "").await;
    scenarios::play(&office.bed, "s12").await.expect("play S12");
    office.wait_done("/api/v4/calls", 1).await;
    assert_eq!(office.popup_users(), [U101], "{}", office.describe());
    let call = office.the_call();
    assert_eq!(call["direction"], json!("inbound"));
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U102), "who picked up: {call}");
    assert!((4..=7).contains(&duration_of(&call)), "talk ≈5 s: {call}");
    office.assert_nothing_twice();
    office.stop().await;
}

/// S15: amoCRM is down while an incoming and an outgoing call take place, and comes back after them. Nothing
/// reaches it meanwhile; then each call is recorded exactly once, with its own start time and no popup after
/// the fact.
#[tokio::test]
async fn s15_calls_during_an_outage_are_recorded_once_when_amocrm_is_back() {
    let office = Office::start(known_client(), "").await;
    office.emu.set_fault(Some(Fault::Down));
    let placed = chrono::Utc::now().timestamp();
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    scenarios::play(&office.bed, "s7").await.expect("play S7");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(office.ok("/api/v4/calls").is_empty(), "{}", office.describe());
    office.emu.set_fault(None);
    office.wait_done("/api/v4/calls", 2).await;
    let calls = office.calls();
    assert_eq!(calls.len(), 2, "{}", office.describe());
    let directions: Vec<&Value> = calls.iter().map(|c| &c["direction"]).collect();
    assert!(
        directions.contains(&&json!("inbound")) && directions.contains(&&json!("outbound")),
        "{directions:?}"
    );
    for call in &calls {
        assert_eq!(call["call_status"], json!(4), "{call}");
        assert_eq!(call["responsible_user_id"], json!(U101), "{call}");
        let at = call["created_at"].as_i64().unwrap_or_default();
        assert!(
            (placed - 1..placed + 60).contains(&at),
            "the call's own start, not the recovery: {call}"
        );
    }
    assert!(office.emu.popups().is_empty(), "no popup after the fact");
    assert!(
        office.log().contains("step will be retried"),
        "the steps waited out the outage"
    );
    office.assert_nothing_twice();
    office.stop().await;
}

/// A storm of 429s from before the client calls until after the call: ringlink backs off and retries; once the
/// storm is over the call is recorded exactly once.
#[tokio::test]
async fn a_rate_limit_storm_delays_the_call_but_records_it_once() {
    let office = Office::start(known_client(), "").await;
    office.emu.set_fault(Some(Fault::RateLimitStorm));
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = office.emu.requests().iter().filter(|r| r.status == 429).count();
    assert!(refused > 0, "the storm refused requests:\n{}", office.describe());
    assert!(office.ok("/api/v4/calls").is_empty(), "{}", office.describe());
    office.emu.set_fault(None);
    office.wait_done("/api/v4/calls", 1).await;
    let call = office.the_call();
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U101));
    office.assert_nothing_twice();
    office.stop().await;
}

/// The access token expires (the account's clock jumps a day ahead) while the client's call rings: ringlink's
/// next request is refused, it exchanges the single-use refresh token once, saves the new pair and records the
/// call with it. Restarted, it goes on with the saved pair: the spent refresh token is never sent again.
#[tokio::test]
async fn an_access_token_expiring_mid_call_is_refreshed_once_and_the_new_pair_kept() {
    let mut office = Office::start(known_client(), "").await;
    let (_, first_refresh) = office.emu.initial_tokens();
    let expire_while_ringing = async {
        let deadline = tokio::time::Instant::now() + WAIT;
        while office.emu.popups().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no popup:\n{}",
                office.describe()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        office.emu.clock().advance(Duration::from_secs(2 * 86_400));
    };
    let (played, ()) = tokio::join!(scenarios::play(&office.bed, "s1"), expire_while_ringing);
    played.expect("play S1");
    office.wait_done("/api/v4/calls", 1).await;
    let call = office.the_call();
    assert_eq!(call["responsible_user_id"], json!(U101));
    assert!(
        office.emu.requests().iter().any(|r| r.auth == AuthKind::Refused),
        "the expired token was refused:\n{}",
        office.describe()
    );
    let refreshes = office.emu.requests_to("/oauth2/access_token");
    assert_eq!(refreshes.len(), 1, "one refresh:\n{}", office.describe());
    assert_eq!(refreshes[0].body["grant_type"], json!("refresh_token"));
    assert_eq!(refreshes[0].body["refresh_token"], json!(first_refresh));
    assert!(refreshes[0].is_ok());

    let before = office.emu.requests().len();
    office.start_ringlink().await;
    let after: Vec<RecordedRequest> = office.emu.requests().into_iter().skip(before).collect();
    assert!(
        after
            .iter()
            .any(|r| r.path == "/api/v4/users" && r.is_ok() && r.auth == AuthKind::OAuth),
        "the restarted ringlink reads the users with the saved access token:\n{}",
        office.describe()
    );
    assert_eq!(
        office.emu.requests_to("/oauth2/access_token").len(),
        1,
        "no refresh token sent again:\n{}",
        office.describe()
    );
    office.stop().await;
}

/// With `[amocrm] unknown = "complex"` an unknown number that calls gets a contact (the number as its work phone)
/// and a lead in the trunk's pipeline by one complex add, and the call, sent again, lands on that lead: one
/// recorded call, no Unsorted entry.
#[tokio::test]
async fn an_unknown_number_gets_a_contact_and_a_lead_by_complex_add_when_so_configured() {
    let office = Office::start_with(EmulatorConfig::default(), "unknown = \"complex\"", "").await;
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    office.wait_done("/api/v4/calls", 1).await;
    let complex = office.ok("/api/v4/leads/complex");
    assert_eq!(complex.len(), 1, "one complex add:\n{}", office.describe());
    assert!(office.emu.requests_to("/api/v4/leads/unsorted/sip").is_empty());
    let state = office.emu.state();
    let seeded = office.emu.config();
    let leads: Vec<_> = state
        .leads
        .iter()
        .filter(|l| !seeded.leads.iter().any(|s| s.id == l.id))
        .collect();
    assert_eq!(leads.len(), 1, "one new lead: {:?}", state.leads);
    let lead = leads[0];
    assert_eq!(lead.pipeline_id, TRUNK_PIPELINE);
    assert_eq!(lead.responsible_user_id, U101);
    let contacts: Vec<_> = state
        .contacts
        .iter()
        .filter(|c| c.phones().iter().any(|p| p.ends_with("9001234567")))
        .collect();
    assert_eq!(contacts.len(), 1, "one contact with the number: {:?}", state.contacts);
    assert_eq!(lead.contact_ids, [contacts[0].id]);
    let call = office.the_call();
    assert_eq!(call["call_status"], json!(4));
    assert_eq!(call["responsible_user_id"], json!(U101));
    assert_eq!(state.calls.len(), 1);
    assert_eq!(
        (state.calls[0].entity_type.as_str(), state.calls[0].entity_id),
        ("leads", lead.id),
        "the call lands on the new lead"
    );
    office.assert_nothing_twice();
    office.stop().await;
}
