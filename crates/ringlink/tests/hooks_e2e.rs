//! Customization hooks end to end: real Asterisk calls, the real `ringlink` binary running real PHP, Python and
//! shell hooks, and what the Bitrix24 emulator received. A hook's change shows up in the request; empty data
//! cancels one request; `action: delete` removes the call's activity; `need_registration` keeps a call out; and
//! a hook that fails in any way leaves the call registered exactly once with the un-customized params, the
//! journal saying why.

mod e2e {
    #[allow(dead_code)] // shared with e2e.rs, which uses all of it
    pub mod checks;
    #[allow(dead_code)]
    pub mod harness;
}

use std::path::Path;
use std::time::Duration;

use e2e::checks::Seen;
use e2e::harness::{call_id, methods, text, E2e, CLIENT_BASE, WAIT};
use store::Store;
use testbed::scenarios;

const QUIET: Duration = Duration::from_secs(4);

/// A hooks directory: example hooks copied from `examples/hooks/<language>/`, plus inline ones.
struct HooksDir(tempfile::TempDir);

impl HooksDir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }

    fn example(self, language: &str, file: &str) -> Self {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/hooks")
            .join(language)
            .join(file);
        std::fs::copy(&from, self.0.path().join(file)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        self
    }

    fn write(self, file: &str, body: &str) -> Self {
        std::fs::write(self.0.path().join(file), body).expect("write hook");
        self
    }

    /// The `[hooks]` section for ringlink's config.
    fn config(&self, extra: &str) -> String {
        format!(
            "[hooks]\ndir = \"{}\"\ntimeout_secs = 2.0\n{extra}\n",
            self.0.path().display()
        )
    }
}

/// Every journal line of every call: `<kind>: <message>`.
fn journal(e2e: &E2e) -> Vec<String> {
    let store = store::SqliteStore::open(e2e.dir.path().join("ringlink.db")).expect("the store");
    let mut lines = Vec::new();
    for call in store.recent_calls(100).expect("recent calls") {
        for entry in store.call_timeline(&call.call_key).expect("timeline") {
            lines.push(format!("{}: {}", entry.kind.as_str(), entry.message));
        }
    }
    lines
}

fn assert_journal_says(lines: &[String], needle: &str) {
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "the journal should say {needle:?}:\n{}",
        lines.join("\n")
    );
}

async fn play(e2e: &E2e, id: &str) -> Seen {
    scenarios::play(&e2e.bed, id)
        .await
        .unwrap_or_else(|e| panic!("play {id}: {e}"));
    e2e.wait_calls_ended(1, QUIET).await;
    Seen::check(e2e)
}

/// S2 (missed, with a task): the client's number in the international format (PHP; the test bed's own number
/// rules already give the 8 format), an extra register field, the task due within working hours (Python), the
/// lead Bitrix24 created titled after the line called (Python).
#[tokio::test]
async fn hooks_change_what_bitrix24_receives() {
    let hooks = HooksDir::new()
        .write(
            "process_client_phone.php",
            r#"<?php
$in = json_decode(file_get_contents('php://stdin'), true);
$digits = preg_replace('/\D+/', '', $in['params']['phone']);
echo json_encode(['data' => ['phone' => '+7' . substr($digits, -10)], 'state' => 'success']);
"#,
        )
        .example("python", "process_task_creation_params.py")
        .example("python", "customize_entity.py")
        .write(
            "process_registration_params.sh",
            r#"echo '{"data": {"CRM_SOURCE": "CALLBACK"}, "state": "success"}'"#,
        );
    let e2e = E2e::start(&format!("{}\n[engine.missed.task]\nenabled = true\n", hooks.config(""))).await;
    let seen = play(&e2e, "s2").await;
    let reg = seen.single();
    assert_eq!(
        text(&reg.register, "PHONE_NUMBER"),
        "+79001234567",
        "{}",
        seen.described
    );
    assert_eq!(text(&reg.register, "CRM_SOURCE"), "CALLBACK", "{}", seen.described);
    assert_eq!(text(&reg.register, "TYPE"), "2", "the rest is as planned");
    assert_eq!(seen.tasks.len(), 1, "{}", seen.described);
    let deadline = seen.tasks[0]
        .param("fields")
        .and_then(|f| f.get("DEADLINE"))
        .and_then(|d| d.as_str())
        .map(str::to_owned)
        .expect("a task deadline");
    let due = chrono::DateTime::parse_from_rfc3339(&deadline).expect("an RFC 3339 deadline");
    use chrono::{Datelike, Timelike};
    assert!(
        due.weekday().num_days_from_monday() < 5 && (9..18).contains(&due.hour()),
        "deadline {deadline} within working hours"
    );
    let update = e2e.wait_requests("crm.lead.update", 1, WAIT).await.remove(0);
    let lead_id = reg
        .entity()
        .strip_prefix("LEAD ")
        .expect("the call created a lead")
        .to_owned();
    assert_eq!(text(&update, "id"), lead_id);
    let state = e2e.emu.state();
    let lead = state
        .leads
        .iter()
        .find(|l| l.id.to_string() == lead_id)
        .expect("the lead");
    let title = lead.fields.get("TITLE").and_then(|t| t.as_str()).unwrap_or_default();
    assert!(title.starts_with("Call to line 73432723033 from "), "{title}");
    let lines = journal(&e2e);
    assert_journal_says(&lines, "hook process_client_phone customized the request");
    assert_journal_says(&lines, "hook process_task_creation_params customized the request");
    assert_journal_says(&lines, "customize_entity: crm.lead.update");
    e2e.stop().await;
}

/// S1: empty data from process_record_file_path cancels the recording (and only it); `action: delete` of
/// process_final_params finishes the call and then deletes its activity.
#[tokio::test]
async fn empty_data_cancels_one_request_and_delete_removes_the_activity() {
    let hooks = HooksDir::new()
        .write(
            "process_record_file_path.sh",
            r#"echo '{"data": {}, "state": "success"}'"#,
        )
        .write(
            "process_final_params.py",
            r#"import json, sys
params = json.load(sys.stdin)["params"]
print(json.dumps({"data": params, "action": "delete", "state": "success"}))
"#,
        );
    let e2e = E2e::start(&hooks.config("")).await;
    let seen = play(&e2e, "s1").await;
    let reg = seen.single();
    assert!(
        reg.records.is_empty(),
        "the recording was cancelled:\n{}",
        seen.described
    );
    assert_eq!(methods(&e2e.telephony()), ["register", "finish"], "{}", seen.described);
    let delete = e2e.wait_requests("crm.activity.delete", 1, WAIT).await.remove(0);
    let activity: u64 = text(&delete, "id").parse().expect("an activity id");
    let state = e2e.emu.state();
    assert!(
        state.call(&call_id(&reg.register)).is_some(),
        "the call itself stays registered"
    );
    assert!(
        !state.activities.iter().any(|a| a.id == activity),
        "activity {activity} deleted"
    );
    let lines = journal(&e2e);
    assert_journal_says(
        &lines,
        "cancelled by customization: hook process_record_file_path answered empty data",
    );
    assert_journal_says(
        &lines,
        "call deleted from the CRM (action delete of process_final_params)",
    );
    e2e.stop().await;
}

/// S1 through the black-listed trunk of the example `need_registration` (PHP): nothing reaches Bitrix24, and
/// the journal says the hook decided.
#[tokio::test]
async fn need_registration_keeps_a_black_listed_trunk_out() {
    let hooks = HooksDir::new().example("php", "need_registration.php");
    let e2e = E2e::start(&hooks.config("")).await;
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    e2e.wait_calls_ended(1, QUIET).await;
    assert!(e2e.telephony().is_empty(), "{}", e2e.describe());
    assert_journal_says(&journal(&e2e), "need_registration answered false");
    e2e.stop().await;
}

/// S1 with a broken hook at every request: the phone hook exits 1, the persistent search hook dies mid-request,
/// the registration hook hangs past its timeout, the final-params hook prints garbage, the recording hook floods
/// its stdout. The call is registered exactly once with the un-customized params, finished and recorded, and the
/// journal says why each hook was not used.
#[tokio::test]
async fn failing_hooks_never_lose_or_change_the_call() {
    let hooks = HooksDir::new()
        .write("process_client_phone.sh", "echo 'no such table: numbers' >&2; exit 1")
        .write(
            "process_search_params.py",
            "import os, sys\nfor line in sys.stdin:\n    os.kill(os.getpid(), 9)\n",
        )
        .write("process_registration_params.sh", "sleep 30")
        .write("process_final_params.sh", "echo '<b>Fatal error</b>'")
        .write(
            "process_record_file_path.sh",
            "head -c 10485760 /dev/zero | tr '\\0' 'x'",
        );
    let e2e = E2e::start(&hooks.config("[hooks.per_hook.process_search_params]\nmode = \"persistent\"\n")).await;
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    e2e.settle(QUIET).await;
    let seen = Seen::check(&e2e);
    let reg = seen.single();
    assert_eq!(
        methods(&e2e.telephony()),
        ["register", "finish", "attachrecord"],
        "{}",
        seen.described
    );
    // What ringlink sends without hooks: the test bed's number rules give the 8 format.
    assert_eq!(
        text(&reg.register, "PHONE_NUMBER"),
        format!("8{CLIENT_BASE}"),
        "{}",
        seen.described
    );
    assert_eq!(text(&reg.register, "USER_ID"), "1");
    assert_eq!(reg.status(), "200");
    let lines = journal(&e2e);
    assert_journal_says(&lines, "hook process_client_phone exited with status 1");
    assert_journal_says(&lines, "no such table: numbers");
    assert_journal_says(&lines, "hook process_search_params died before answering");
    assert_journal_says(&lines, "hook process_registration_params timed out after 2 s");
    assert_journal_says(&lines, "hook process_final_params printed something that is not JSON");
    assert_journal_says(&lines, "hook process_record_file_path answered more than");
    e2e.stop().await;
}

/// S1 while Bitrix24 answers 503: the register is retried, but its hook is asked once — every attempt (and
/// the one that lands) carries the first answer, however the hook would answer now.
#[tokio::test]
async fn a_customization_is_asked_once_and_resent_unchanged() {
    let hooks = HooksDir::new().write(
        "process_registration_params.sh",
        r#"n=$(( $(cat asked 2>/dev/null || echo 0) + 1 )); echo $n > asked
echo "{\"data\": {\"CRM_SOURCE\": \"RUN$n\"}, \"state\": \"success\"}""#,
    );
    let e2e = E2e::start(&hooks.config("")).await;
    e2e.wait_requests("user.get", 1, WAIT).await;
    e2e.emu.set_fault(b24emu::Fault::Unavailable);
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    tokio::time::sleep(Duration::from_secs(7)).await;
    e2e.emu.clear_fault();
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    e2e.settle(QUIET).await;
    let seen = Seen::check(&e2e);
    assert_eq!(
        text(&seen.single().register, "CRM_SOURCE"),
        "RUN1",
        "{}",
        seen.described
    );
    assert!(e2e.log().contains("step will be retried"), "the register was retried");
    let asked = std::fs::read_to_string(hooks.0.path().join("asked")).expect("the hook ran");
    assert_eq!(asked.trim(), "1", "the hook was asked once");
    e2e.stop().await;
}

/// S1 with `process_search_params` answering `action: ignore`: the call is not registered, and what depends
/// on the registration (finish, recording) is left out with it, not failed.
#[tokio::test]
async fn search_params_action_ignore_skips_the_registration() {
    let hooks = HooksDir::new().write(
        "process_search_params.sh",
        r#"echo '{"data": {"SHOW": 1}, "action": "ignore", "state": "success"}'"#,
    );
    let e2e = E2e::start(&hooks.config("")).await;
    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    e2e.wait_calls_ended(1, QUIET).await;
    assert!(e2e.telephony().is_empty(), "{}", e2e.describe());
    let lines = journal(&e2e);
    assert_journal_says(
        &lines,
        "cancelled by customization: process_search_params answered action \"ignore\"",
    );
    assert_journal_says(&lines, "finish not sent: register");
    assert!(!lines.iter().any(|l| l.starts_with("error:")), "{}", lines.join("\n"));
    e2e.stop().await;
}

/// S3 (a ringall queue, 102 answers): the card hook forks a child and exits — cards still pop, customized; the
/// search hook says `state: error`, the registration hook answers a wrong type, the final-params hook is not
/// executable — all fall back; `post_registration` is told; `customize_activity` updates the call's activity.
#[tokio::test]
async fn cards_activity_and_a_second_fault_set() {
    let hooks = HooksDir::new()
        .write(
            "customize_show_call_card.sh",
            r#"sleep 30 & echo '{"data": {"X_CARD_HOOK": "shown"}, "state": "success"}'"#,
        )
        .write(
            "process_search_params.sh",
            r#"echo '{"data": {"SHOW": 1}, "state": "error"}'"#,
        )
        .write(
            "process_registration_params.sh",
            r#"echo '{"data": {"USER_ID": {"id": 5}}}'"#,
        )
        .write("process_final_params", "#!/bin/sh\necho '{}'\n")
        .write(
            "post_registration.py",
            "import json, sys\njson.load(sys.stdin)\nprint(json.dumps({'data': {'seen': True}, 'state': 'success'}))\n",
        )
        .write(
            "customize_activity.py",
            "import json, sys\nrequest = json.load(sys.stdin)\n\
             print(json.dumps({'data': {'SUBJECT': 'Call ' + request['params']['id']}, 'state': 'success'}))\n",
        );
    let e2e = E2e::start(&hooks.config("")).await;
    let seen = play(&e2e, "s3").await;
    let reg = seen.single();
    assert_eq!(reg.shows.len(), 2, "cards to the other two:\n{}", seen.described);
    for show in &reg.shows {
        assert_eq!(text(show, "X_CARD_HOOK"), "shown", "{}", seen.described);
    }
    assert_eq!(reg.status(), "200", "finished un-customized:\n{}", seen.described);
    let update = e2e.wait_requests("crm.activity.update", 1, WAIT).await.remove(0);
    let activity: u64 = text(&update, "id").parse().expect("activity id");
    let state = e2e.emu.state();
    let subject = state
        .activities
        .iter()
        .find(|a| a.id == activity)
        .and_then(|a| a.fields.get("SUBJECT"))
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(subject.starts_with("Call "), "{subject}");
    let lines = journal(&e2e);
    assert_journal_says(&lines, "hook customize_show_call_card customized the request");
    assert_journal_says(
        &lines,
        "hook process_search_params answered something ringlink cannot use: \"state\" is \"error\"",
    );
    assert_journal_says(
        &lines,
        "hook process_registration_params answered something ringlink cannot use: field USER_ID",
    );
    assert_journal_says(&lines, "hook process_final_params is not executable");
    assert_journal_says(&lines, "hook post_registration");
    assert_journal_says(&lines, "customize_activity: crm.activity.update");
    e2e.stop().await;
}

/// S3 (ringall 101–103, answered by 102) in an office whose Bitrix24 profiles keep the extensions written for
/// people ("ext. 101", "доб. 102", "+7 343 272-30-33 доб. 103"): with `process_user_phone` (the PHP example)
/// the directory matches them, every ringing employee gets the card and the call is 102's. Without the hook
/// nobody matches and the call goes to the default responsible.
#[tokio::test]
async fn process_user_phone_lets_the_directory_match_written_out_extensions() {
    let hooks = HooksDir::new().example("php", "process_user_phone.php");
    let mut emulator = b24emu::EmulatorConfig::default();
    for (user, written) in emulator
        .users
        .iter_mut()
        .zip(["ext. 101", "доб. 102", "+7 343 272-30-33 доб. 103"])
    {
        user.uf_phone_inner = written.to_owned();
    }
    let e2e = E2e::start_with(emulator, &hooks.config("")).await;
    let seen = play(&e2e, "s3").await;
    let reg = seen.single();
    let mut rung: Vec<u64> = std::iter::once(reg.user()).chain(reg.shown_to()).collect();
    rung.sort_unstable();
    assert_eq!(
        rung,
        [1, 2, 3],
        "every ringing employee got the card: {}",
        seen.described
    );
    assert_eq!(reg.finish_user(), 2, "{}", seen.described);
    let store = store::SqliteStore::open(e2e.dir.path().join("ringlink.db")).expect("the store");
    let extensions: Vec<_> = store
        .users()
        .expect("cached users")
        .iter()
        .filter_map(|u| u.extension().map(str::to_owned))
        .collect();
    assert_eq!(
        extensions,
        ["101", "102", "103"],
        "the cache keeps the customized numbers"
    );
    e2e.stop().await;
}

/// The client is both a contact and a lead: Bitrix24's own search would take the contact; with
/// `get_search_filter` (the Python example: leads first) ringlink searches itself and registers the call with
/// the lead, creating nothing.
#[tokio::test]
async fn get_search_filter_chooses_the_entity_the_call_is_registered_with() {
    let hooks = HooksDir::new().example("python", "get_search_filter.py");
    let mut emulator = b24emu::EmulatorConfig::default();
    let client = format!("8{CLIENT_BASE}");
    emulator
        .contacts
        .push(b24emu::SeedEntity::new(5).field("NAME", "Ivan").phone(&client, "WORK"));
    emulator.leads.push(
        b24emu::SeedEntity::new(12)
            .field("TITLE", "Returning caller")
            .phone(&client, "WORK"),
    );
    let e2e = E2e::start_with(emulator, &hooks.config("")).await;
    let seen = play(&e2e, "s1").await;
    let reg = seen.single();
    assert_eq!(text(&reg.register, "CRM_ENTITY_TYPE"), "LEAD", "{}", seen.described);
    assert_eq!(text(&reg.register, "CRM_ENTITY_ID"), "12", "{}", seen.described);
    assert_eq!(text(&reg.register, "CRM_CREATE"), "0", "{}", seen.described);
    assert_eq!(reg.entity(), "LEAD 12", "Bitrix24 bound the call to the lead");
    e2e.wait_requests("crm.duplicate.findbycomm", 1, WAIT).await;
    let state = e2e.emu.state();
    assert_eq!((state.leads.len(), state.contacts.len()), (1, 1), "nothing created");
    assert_journal_says(
        &journal(&e2e),
        "registered with the client's lead 12 found by ringlink's search",
    );
    e2e.stop().await;
}

/// `process_search_params` answers a `filter` that searches contacts only, so the caller's lead does not count;
/// nobody is found, and ringlink creates the contact `process_entity_creation_params` (the PHP example)
/// describes, registers the call with it (Bitrix24 creates no lead), and `customize_entity` updates it as an
/// entity this connector created.
#[tokio::test]
async fn an_unknown_caller_becomes_the_contact_the_creation_hook_describes() {
    let hooks = HooksDir::new()
        .example("php", "process_entity_creation_params.php")
        .write(
            "process_search_params.sh",
            r#"echo '{"data": {"SHOW": 1}, "filter": {"contact": {}}, "state": "success"}'"#,
        )
        .write(
            "customize_entity.sh",
            r#"echo '{"data": {"COMMENTS": "first call"}, "state": "success"}'"#,
        );
    let mut emulator = b24emu::EmulatorConfig::default();
    let client = format!("8{CLIENT_BASE}");
    emulator.leads.push(
        b24emu::SeedEntity::new(12)
            .field("TITLE", "Old lead")
            .phone(&client, "WORK"),
    );
    let e2e = E2e::start_with(emulator, &hooks.config("")).await;
    let seen = play(&e2e, "s1").await;
    let reg = seen.single();
    assert_eq!(text(&reg.register, "CRM_ENTITY_TYPE"), "CONTACT", "{}", seen.described);
    assert_eq!(text(&reg.register, "CRM_CREATE"), "0", "{}", seen.described);
    let contact_id = text(&reg.register, "CRM_ENTITY_ID");
    let search = e2e.wait_requests("crm.contact.list", 1, WAIT).await.remove(0);
    assert_eq!(
        search.param("filter"),
        Some(&serde_json::json!({"PHONE": client})),
        "an empty filter searches by the client's phone"
    );
    assert!(e2e
        .emu
        .requests()
        .iter()
        .all(|r| r.method != "crm.lead.list" && r.method != "crm.duplicate.findbycomm"));
    let update = e2e.wait_requests("crm.contact.update", 1, WAIT).await.remove(0);
    assert_eq!(
        text(&update, "id"),
        contact_id,
        "customize_entity updates the contact ringlink created"
    );
    let state = e2e.emu.state();
    assert_eq!(state.leads.len(), 1, "no lead created");
    let contact = state
        .contacts
        .iter()
        .find(|c| c.id.to_string() == contact_id)
        .expect("the contact ringlink created");
    let field = |name: &str| {
        contact
            .fields
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field("NAME"), format!("Caller {client}"));
    assert_eq!(field("SOURCE_ID"), "CALL");
    assert_eq!(field("COMMENTS"), "first call");
    assert_journal_says(
        &journal(&e2e),
        &format!("contact {contact_id} created by ringlink for the client"),
    );
    e2e.stop().await;
}
