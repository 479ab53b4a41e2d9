//! The example hooks of `examples/hooks/` (PHP and Python), run through the same runner as the service: each
//! does what its comment says, and both languages answer alike.

use hooks::{Context, HookName, Hooks, HooksConfig, Outcome};
use serde_json::{json, Value};

fn examples(language: &str) -> Hooks {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/hooks")
        .join(language);
    let config = HooksConfig {
        dir: Some(dir),
        ..HooksConfig::default()
    };
    Hooks::discover(&config).expect("examples directory")
}

/// Runs `hook` of both languages on `params` and returns the (equal) customized params.
async fn run_both(hook: HookName, params: Value, call_full: Option<Value>) -> Value {
    let context = Context {
        call_full,
        call_stage: Some("conversation_requested"),
    };
    let mut answers = Vec::new();
    for language in ["php", "python"] {
        let hooks = examples(language);
        let called = hooks
            .call(hook, &params, &context)
            .await
            .unwrap_or_else(|| panic!("{language} {hook} found"));
        match &called.outcome {
            Outcome::Applied(answer) => answers.push(answer.params.clone()),
            other => panic!("{language} {hook}: {other:?} ({})", called.describe()),
        }
    }
    assert_eq!(answers[0], answers[1], "{hook}: PHP and Python answer alike");
    answers.remove(0)
}

#[tokio::test]
async fn client_numbers_get_the_8_format() {
    let out = run_both(HookName::ProcessClientPhone, json!({"phone": "+79001234567"}), None).await;
    assert_eq!(out["phone"], "89001234567");
    let local = run_both(HookName::ProcessClientPhone, json!({"phone": "101"}), None).await;
    assert_eq!(local["phone"], "101", "short numbers stay");
}

#[tokio::test]
async fn calls_through_a_black_listed_trunk_are_not_registered() {
    let listed = json!({"type": "incoming", "from": "+79001234567", "to": "73432723033", "trunk": "73432723033"});
    assert_eq!(run_both(HookName::NeedRegistration, listed, None).await, json!(false));
    let other = json!({"type": "incoming", "from": "+79001234567", "to": "74950000000", "trunk": "74950000000"});
    assert_eq!(run_both(HookName::NeedRegistration, other, None).await, json!(true));
}

#[tokio::test]
async fn the_created_lead_is_titled_after_the_line_called() {
    let summary = json!({"id": "1700000000.1", "from": "89001234567", "to": "101", "trunk": "73432723033",
                         "type": "incoming"});
    let out = run_both(HookName::CustomizeEntity, summary, None).await;
    assert_eq!(out["TITLE"], "Call to line 73432723033 from 89001234567");
}

#[tokio::test]
async fn click_to_call_is_routed_through_another_context() {
    let originate = json!({"caller_id": "101", "channel": "PJSIP/101", "context": "from-internal",
                           "extension": "89001234567", "priority": "1"});
    let out = run_both(HookName::ProcessOriginateParams, originate, None).await;
    assert_eq!(out["context"], "from-crm");
    assert_eq!(out["channel"], "PJSIP/101");
}

#[tokio::test]
async fn a_missed_call_task_is_due_within_working_hours() {
    let task =
        |deadline: &str| json!({"arNewTaskData": {"DEADLINE": deadline, "TITLE": "Call back", "RESPONSIBLE_ID": 1}});
    // Friday 20:15 → Monday 12:00; Tuesday 03:00 → Tuesday 12:00; Wednesday 11:00 stays.
    for (planned, due) in [
        ("2026-11-27T20:15:00+03:00", "2026-11-30T12:00:00+03:00"),
        ("2026-12-01T03:00:00+03:00", "2026-12-01T12:00:00+03:00"),
        ("2026-12-02T11:00:00+03:00", "2026-12-02T11:00:00+03:00"),
    ] {
        let out = run_both(HookName::ProcessTaskCreationParams, task(planned), None).await;
        assert_eq!(out["arNewTaskData"]["DEADLINE"], due, "{planned}");
        assert_eq!(out["arNewTaskData"]["RESPONSIBLE_ID"], 1);
    }
}

#[tokio::test]
async fn employee_numbers_become_what_the_pbx_dials() {
    for (profile, dialled) in [
        ("ext. 101", "101"),
        ("доб. 102", "102"),
        ("+7 343 272-30-33 доб. 103", "103"),
        ("+7 (900) 111-22-33", "89001112233"),
        ("104", "104"),
    ] {
        let out = run_both(HookName::ProcessUserPhone, json!({"phone": profile}), None).await;
        assert_eq!(out["phone"], dialled, "{profile}");
    }
}

#[tokio::test]
async fn leads_are_chosen_first_then_the_newest() {
    let found = json!({"phone": "89001234567", "entities": [
        {"type": "contact", "id": 5}, {"type": "company", "id": 3}, {"type": "lead", "id": 12}, {"type": "lead", "id": 40}
    ]});
    let out = run_both(HookName::GetSearchFilter, found, None).await;
    assert_eq!(
        out["entities"],
        json!([{"type": "lead", "id": 40}, {"type": "lead", "id": 12}, {"type": "contact", "id": 5}, {"type": "company", "id": 3}])
    );
}

#[tokio::test]
async fn unknown_callers_become_contacts_named_after_their_number() {
    let params = json!({"type": "lead", "ASSIGNED_BY_ID": 2, "COMMENTS": "", "OPENED": "Y",
                        "PHONE": [{"VALUE": "89001234567", "VALUE_TYPE": "WORK"}], "SOURCE_ID": "CALL",
                        "TITLE": "89001234567 - Incoming call"});
    let callback = json!({"channel": {"trunk": {"original": "74950000000"}}});
    let out = run_both(HookName::ProcessEntityCreationParams, params.clone(), Some(callback)).await;
    assert_eq!(out["type"], "contact");
    assert_eq!(out["NAME"], "Caller 89001234567");
    assert_eq!(out["SOURCE_ID"], "CALLBACK");
    assert_eq!(out["PHONE"], params["PHONE"], "the rest as ringlink would create it");
    let other = json!({"channel": {"trunk": {"original": "73432723033"}}});
    let out = run_both(HookName::ProcessEntityCreationParams, params, Some(other)).await;
    assert_eq!(out["SOURCE_ID"], "CALL");
}

#[tokio::test]
async fn key_accounts_ring_their_desk_and_leads_take_the_normal_route() {
    for (phone, entity_type, chosen, why) in [
        ("89001112233", "CONTACT", "105", "a key account, whatever the CRM says"),
        ("89001234567", "LEAD", "", "a lead: the normal route"),
        ("89001234567", "CONTACT", "102", "the CRM's choice stays"),
    ] {
        let asked = json!({"phone": phone, "extension": "102", "user_id": 2, "entity_type": entity_type,
                           "entity_id": 7});
        let out = run_both(HookName::CustomizeAutodistribution, asked, None).await;
        assert_eq!(out["extension"], chosen, "{why}");
    }
}
