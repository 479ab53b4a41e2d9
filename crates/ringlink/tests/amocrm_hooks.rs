//! amoCRM's customization hooks end to end: real calls on the test bed, the real `ringlink` binary running real
//! Python and shell hooks, and what the (emulated) amoCRM account received. `process_call_params` changes the
//! `/api/v4/calls` item, `process_contact_creation_params` / `process_lead_creation_params` what is created for
//! an unknown number; a hook that fails leaves its params unchanged and the call is recorded once all the same.

#[path = "e2e/amocrm_office.rs"]
#[allow(dead_code)] // shared with the other amoCRM tests and the bench
mod office;

use amoemu::EmulatorConfig;
use office::{Office, U101};
use serde_json::json;
use testbed::scenarios;

/// A hooks directory with `hooks` (file name, body) in it, and its `[hooks]` section.
fn hooks(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).expect("write hook");
    }
    let config = format!("[hooks]\ndir = \"{}\"\ntimeout_secs = 2.0\n", dir.path().display());
    (dir, config)
}

/// An unknown number calls (S1) with `unknown = "complex"`: the call item carries what `process_call_params`
/// made of it (each time it is sent), the complex add's contact the name `process_contact_creation_params` gave
/// it, and the lead — whose hook fails — the fields ringlink planned; one lead, one contact, one call.
#[tokio::test]
async fn amocrm_hooks_change_the_call_and_the_created_contact_and_a_failing_one_changes_nothing() {
    let (_dir, config) = hooks(&[
        (
            "process_call_params.py",
            r#"import json, sys
params = json.load(sys.stdin)["params"]
params["call_result"] = "via hook: " + params["call_result"]
print(json.dumps({"data": params, "state": "success"}))
"#,
        ),
        (
            "process_contact_creation_params.py",
            r#"import json, sys
params = json.load(sys.stdin)["params"]
params["name"] = "Client " + params["name"]
print(json.dumps({"data": params, "state": "success"}))
"#,
        ),
        ("process_lead_creation_params.sh", "echo 'no JSON here'\nexit 3\n"),
    ]);
    let office = Office::start_with(EmulatorConfig::default(), "unknown = \"complex\"", &config).await;
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    office.wait_done("/api/v4/calls", 1).await;
    let sent = office.emu.requests_to("/api/v4/calls");
    assert_eq!(
        sent.len(),
        2,
        "refused as unknown, then recorded:\n{}",
        office.describe()
    );
    for request in &sent {
        let item = &request.body[0];
        assert_eq!(item["call_result"], json!("via hook: talked"), "{item}");
        assert_eq!(item["call_status"], json!(4), "the rest unchanged: {item}");
    }
    let complex = office.ok("/api/v4/leads/complex");
    assert_eq!(complex.len(), 1, "{}", office.describe());
    let lead = &complex[0].body[0];
    let contact = &lead["_embedded"]["contacts"][0];
    assert!(
        contact["name"].as_str().unwrap_or_default().starts_with("Client "),
        "the hook's contact: {lead}"
    );
    assert!(
        lead["name"].as_str().unwrap_or_default().starts_with("Call from "),
        "the failing lead hook left the lead as planned: {lead}"
    );
    assert_eq!(lead["responsible_user_id"], json!(U101));
    let state = office.emu.state();
    assert_eq!(state.calls.len(), 1);
    assert!(
        office.log().contains("process_lead_creation_params"),
        "the failure is logged"
    );
    office.assert_nothing_twice();
    office.stop().await;
}

/// `process_call_params` answering empty data cancels the call's recording in amoCRM (journaled); nothing is
/// sent for it, and no popup is affected.
#[tokio::test]
async fn process_call_params_with_empty_data_keeps_the_call_out_of_amocrm() {
    let (_dir, config) = hooks(&[("process_call_params.sh", r#"echo '{"data": {}, "state": "success"}'"#)]);
    let office = Office::start(office::known_client(), &config).await;
    scenarios::play(&office.bed, "s1").await.expect("play S1");
    office
        .wait_log_count(
            "cancelled by customization: hook process_call_params answered empty data",
            1,
        )
        .await;
    assert!(
        office.emu.requests_to("/api/v4/calls").is_empty(),
        "{}",
        office.describe()
    );
    assert_eq!(office.emu.popups().len(), 1, "the popup is not the call's item");
    office.stop().await;
}
