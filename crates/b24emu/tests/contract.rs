//! Responses pinned to the documented shapes: envelope, error codes and statuses, CRM, users, lines, tasks.

mod common;

use b24emu::{EmulatorConfig, SeedEntity, SeedUser};
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn success_envelope_has_result_and_time_block() {
    let emu = start(frozen_config()).await;
    let a = hook(&emu, "user.current", json!({})).await;
    assert_eq!(a.status, 200);
    let time = &a.body["time"];
    for key in [
        "start",
        "finish",
        "duration",
        "processing",
        "operating_reset_at",
        "operating",
    ] {
        assert!(time[key].is_number(), "time.{key} in {time}");
    }
    assert_eq!(time["date_start"], "2026-03-10T11:00:00+03:00");
    assert_eq!(time["date_finish"], "2026-03-10T11:00:00+03:00");
    assert_eq!(a.body["result"]["ID"], "1");
    emu.shutdown().await;
}

#[tokio::test]
async fn system_errors_have_documented_codes_and_statuses() {
    let emu = start(frozen_config()).await;
    let base = emu.base_url();
    let no_auth = post_json(&format!("{base}/rest/user.get.json"), &json!({})).await;
    assert_error(&no_auth, 401, "NO_AUTH_FOUND");
    assert_eq!(no_auth.body["error_description"], "Wrong authorization data");

    let wrong_secret = post_json(&format!("{base}/rest/1/wrong/user.get.json"), &json!({})).await;
    assert_error(&wrong_secret, 401, "INVALID_CREDENTIALS");

    let bad_token = app_with(&emu, "nonsense", "user.get", json!({})).await;
    assert_error(&bad_token, 401, "invalid_token");

    let missing = hook(&emu, "crm.nothing.here", json!({})).await;
    assert_error(&missing, 404, "ERROR_METHOD_NOT_FOUND");
    assert_eq!(missing.body["error_description"], "Method not found!");
    emu.shutdown().await;
}

#[tokio::test]
async fn snapshot_revision_and_no_auth_found_switches() {
    let mut cfg = frozen_config();
    cfg.conflicts.status_revision = b24emu::StatusRevision::Snapshot;
    cfg.conflicts.bad_token_error = b24emu::BadTokenError::NoAuthFound;
    cfg.webhook.scope = vec!["user".into()];
    let emu = start(cfg).await;
    let wrong_secret = post_json(&format!("{}/rest/1/wrong/user.get.json", emu.base_url()), &json!({})).await;
    assert_error(&wrong_secret, 403, "INVALID_CREDENTIALS");
    assert_error(
        &app_with(&emu, "nonsense", "user.get", json!({})).await,
        401,
        "NO_AUTH_FOUND",
    );
    let scope = hook(&emu, "crm.lead.list", json!({})).await;
    assert_error(&scope, 403, "insufficient_scope");
    assert_eq!(
        scope.body["error_description"],
        "The request requires higher privileges than provided by the webhook token"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn method_names_are_case_insensitive_and_suffix_optional() {
    let emu = start(frozen_config()).await;
    for path in ["User.Current.json", "user.current", "user.current/"] {
        let a = post_json(&format!("{}{path}", emu.webhook_url()), &json!({})).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn crm_lead_add_accepts_php_brackets_and_get_returns_strings() {
    let emu = start(frozen_config()).await;
    let form = "fields[TITLE]=My%20company&fields[PHONE][0][VALUE]=112233&fields[PHONE][0][VALUE_TYPE]=WORK&fields[UNKNOWN_FIELD]=x";
    let added = post_form(&format!("{}crm.lead.add.json", emu.webhook_url()), form).await;
    let id = result(&added).as_u64().expect("integer id");
    let got = hook(&emu, "crm.lead.get", json!({"id": id})).await;
    let lead = result(&got);
    assert_eq!(lead["ID"], id.to_string());
    assert_eq!(lead["TITLE"], "My company");
    assert_eq!(lead["STATUS_ID"], "NEW");
    assert_eq!(lead["OPPORTUNITY"], "0.00");
    assert_eq!(lead["HAS_PHONE"], "Y");
    assert_eq!(lead["PHONE"][0]["VALUE"], "112233");
    assert_eq!(lead["PHONE"][0]["VALUE_TYPE"], "WORK");
    assert_eq!(lead["PHONE"][0]["TYPE_ID"], "PHONE");
    assert!(lead["PHONE"][0]["ID"].is_string());
    assert!(lead.get("UNKNOWN_FIELD").is_none(), "unknown fields are ignored");
    assert_eq!(lead["DATE_CREATE"], "2026-03-10T11:00:00+03:00");
    emu.shutdown().await;
}

#[tokio::test]
async fn crm_multifield_update_overwrites_and_deletes_by_id() {
    let mut cfg = frozen_config();
    cfg.contacts.push(
        SeedEntity::new(797)
            .field("NAME", "Ivan")
            .phone("555888", "WORK")
            .phone("555999", "MOBILE"),
    );
    let emu = start(cfg).await;
    let got = hook(&emu, "crm.contact.get", json!({"id": 797})).await;
    let ids: Vec<String> = result(&got)["PHONE"]
        .as_array()
        .expect("phones")
        .iter()
        .map(|p| p["ID"].as_str().expect("id").to_owned())
        .collect();
    let upd = hook(
        &emu,
        "crm.contact.update",
        json!({"id": 797, "fields": {"PHONE": [
            {"ID": ids[0], "VALUE": "111"},
            {"ID": ids[1], "DELETE": "Y"},
            {"VALUE": "222", "VALUE_TYPE": "HOME"}
        ]}}),
    )
    .await;
    assert_eq!(result(&upd), &json!(true));
    let got = hook(&emu, "crm.contact.get", json!({"id": 797})).await;
    let values: Vec<&str> = result(&got)["PHONE"]
        .as_array()
        .expect("phones")
        .iter()
        .map(|p| p["VALUE"].as_str().expect("value"))
        .collect();
    assert_eq!(values, ["111", "222"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn crm_legacy_errors_use_empty_code() {
    let emu = start(frozen_config()).await;
    let missing = hook(&emu, "crm.contact.get", json!({"id": 424242})).await;
    assert_error(&missing, 400, "");
    assert_eq!(missing.body["error_description"], "Not found");
    let bad = hook(&emu, "crm.lead.update", json!({"fields": {"TITLE": "x"}})).await;
    assert_error(&bad, 400, "");
    assert_eq!(bad.body["error_description"], "ID is not defined or invalid.");
    emu.shutdown().await;
}

#[tokio::test]
async fn duplicate_search_is_exact_and_empty_is_php_array() {
    let mut cfg = frozen_config();
    cfg.contacts
        .push(SeedEntity::new(275).phone("+7 (900) 123-45-67", "MOBILE"));
    cfg.contacts.push(SeedEntity::new(2297).phone("79001234567", "WORK"));
    cfg.leads.push(SeedEntity::new(10).phone("89001234567", "WORK"));
    let emu = start(cfg).await;
    let hit = hook(
        &emu,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": ["79001234567"]}),
    )
    .await;
    assert_eq!(result(&hit), &json!({"CONTACT": [275, 2297]}));
    let contacts_only = hook(
        &emu,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": ["89001234567"], "entity_type": "CONTACT"}),
    )
    .await;
    assert_eq!(result(&contacts_only), &json!([]));
    let lead = hook(
        &emu,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": ["8 900 123 45 67"]}),
    )
    .await;
    assert_eq!(result(&lead), &json!({"LEAD": [10]}));
    let bad = hook(
        &emu,
        "crm.duplicate.findbycomm",
        json!({"type": "FAX", "values": ["1"]}),
    )
    .await;
    assert_eq!(bad.status, 400);
    emu.shutdown().await;
}

#[tokio::test]
async fn crm_list_filters_selects_and_pages() {
    let mut cfg = frozen_config();
    for i in 1..=60 {
        cfg.leads.push(
            SeedEntity::new(i)
                .field("TITLE", format!("Lead {i}"))
                .field("ASSIGNED_BY_ID", if i % 2 == 0 { 2 } else { 3 })
                .phone(&format!("7900000{i:04}"), "WORK"),
        );
    }
    let emu = start(cfg).await;
    let first = hook(
        &emu,
        "crm.lead.list",
        json!({"filter": {"ASSIGNED_BY_ID": 2}, "select": ["ID", "TITLE"]}),
    )
    .await;
    assert_eq!(first.body["total"], 30);
    assert!(first.body.get("next").is_none());
    let row = &first.body["result"][0];
    assert_eq!(row, &json!({"ID": "2", "TITLE": "Lead 2"}));
    let all = hook(&emu, "crm.lead.list", json!({"order": {"ID": "DESC"}})).await;
    assert_eq!(all.body["total"], 60);
    assert_eq!(all.body["next"], 50);
    assert_eq!(all.body["result"].as_array().map(Vec::len), Some(50));
    assert_eq!(all.body["result"][0]["ID"], "60");
    assert!(
        all.body["result"][0].get("PHONE").is_none(),
        "multifields only when selected"
    );
    let page2 = hook(&emu, "crm.lead.list", json!({"order": {"ID": "DESC"}, "start": 50})).await;
    assert_eq!(page2.body["result"].as_array().map(Vec::len), Some(10));
    assert!(page2.body.get("next").is_none());
    let by_phone = hook(
        &emu,
        "crm.lead.list",
        json!({"filter": {"PHONE": "79000000007"}, "select": ["ID", "PHONE"]}),
    )
    .await;
    assert_eq!(by_phone.body["total"], 1);
    assert_eq!(by_phone.body["result"][0]["PHONE"][0]["VALUE"], "79000000007");
    let no_count = hook(&emu, "crm.lead.list", json!({"start": -1})).await;
    assert!(no_count.body.get("total").is_none());
    emu.shutdown().await;
}

#[tokio::test]
async fn user_get_pages_by_50_with_next_and_total() {
    let mut cfg = EmulatorConfig::frozen_at(start_time());
    cfg.users = (1..=120)
        .map(|i| SeedUser::new(i, &format!("User{i}"), "Test", &format!("{}", 100 + i)))
        .collect();
    let emu = start(cfg).await;
    let p1 = hook(&emu, "user.get", json!({})).await;
    assert_eq!(p1.body["total"], 120);
    assert_eq!(p1.body["next"], 50);
    let rows = p1.body["result"].as_array().expect("array");
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0]["ID"], "1");
    assert_eq!(rows[0]["ACTIVE"], true);
    assert_eq!(rows[0]["UF_DEPARTMENT"], json!([1]));
    let p3 = hook(&emu, "user.get", json!({"start": 100})).await;
    assert_eq!(p3.body["result"].as_array().map(Vec::len), Some(20));
    assert!(p3.body.get("next").is_none());
    // Lowercase `filter` and top-level filter keys both work.
    let by_inner = hook(&emu, "user.get", json!({"filter": {"UF_PHONE_INNER": "103"}})).await;
    assert_eq!(by_inner.body["result"][0]["ID"], "3");
    let top_level = hook(
        &emu,
        "user.get",
        json!({"UF_PHONE_INNER": "104", "SORT": "ID", "ORDER": "asc"}),
    )
    .await;
    assert_eq!(top_level.body["result"][0]["ID"], "4");
    let form = post_form(
        &format!("{}user.get.json", emu.webhook_url()),
        "FILTER[UF_PHONE_INNER]=105",
    )
    .await;
    assert_eq!(form.body["result"][0]["ID"], "5");
    emu.shutdown().await;
}

#[tokio::test]
async fn status_list_has_default_sources() {
    let emu = start(frozen_config()).await;
    let a = hook(&emu, "crm.status.list", json!({"filter": {"ENTITY_ID": "SOURCE"}})).await;
    let rows = result(&a).as_array().expect("array");
    assert_eq!(a.body["total"], rows.len());
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["STATUS_ID"].as_str()).collect();
    assert_eq!(ids[0], "CALL");
    assert!(ids.contains(&"CALLBACK") && ids.contains(&"OTHER"));
    for key in [
        "ID",
        "ENTITY_ID",
        "STATUS_ID",
        "NAME",
        "NAME_INIT",
        "SORT",
        "SYSTEM",
        "CATEGORY_ID",
        "COLOR",
        "SEMANTICS",
        "EXTRA",
    ] {
        assert!(rows[0].get(key).is_some(), "{key} in {}", rows[0]);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn external_lines_crud_matches_documented_shapes() {
    let emu = start(frozen_config()).await;
    let added = app(
        &emu,
        "telephony.externalLine.add",
        json!({"NUMBER": "73432723033", "NAME": "carrier"}),
    )
    .await;
    assert_eq!(result(&added), &json!({"ID": 1}));
    let again = app(&emu, "telephony.externalLine.add", json!({"NUMBER": "73432723033"})).await;
    assert_error(&again, 400, "ERROR_CORE");
    assert_eq!(again.body["error_description"], "Line already exists");
    let list = app(&emu, "telephony.externalLine.get", json!({})).await;
    assert_eq!(
        result(&list),
        &json!([{"NUMBER": "73432723033", "NAME": "carrier", "CRM_AUTO_CREATE": "Y"}])
    );
    let upd = app(
        &emu,
        "telephony.externalLine.update",
        json!({"NUMBER": "73432723033", "CRM_AUTO_CREATE": "N"}),
    )
    .await;
    assert_eq!(result(&upd), &json!({"ID": "1"}));
    let nothing = app(&emu, "telephony.externalLine.update", json!({"NUMBER": "73432723033"})).await;
    assert_eq!(nothing.body["error_description"], "There are no fields to update");
    let unknown = app(
        &emu,
        "telephony.externalLine.update",
        json!({"NUMBER": "1", "NAME": "x"}),
    )
    .await;
    assert_eq!(unknown.body["error_description"], "Could not find line with number 1");
    let del = app(&emu, "telephony.externalLine.delete", json!({"NUMBER": "73432723033"})).await;
    assert_eq!(result(&del), &json!([]));
    emu.shutdown().await;
}

#[tokio::test]
async fn task_add_answers_camel_case_and_validates() {
    let emu = start(frozen_config()).await;
    let a = hook(
        &emu,
        "tasks.task.add",
        json!({"fields": {"TITLE": "Call back", "RESPONSIBLE_ID": 9, "UF_CRM_TASK": ["L_4"], "PRIORITY": 2}}),
    )
    .await;
    let task = &result(&a)["task"];
    assert_eq!(task["id"], "1");
    assert_eq!(task["title"], "Call back");
    assert_eq!(task["responsibleId"], "9");
    assert_eq!(task["createdBy"], "1");
    assert_eq!(task["status"], "2");
    assert_eq!(task["deadline"], Value::Null);
    assert!(task.get("ufCrmTask").is_none());
    assert_eq!(emu.state().tasks[0].fields["UF_CRM_TASK"], json!(["L_4"]));
    assert_error(&hook(&emu, "tasks.task.add", json!({})).await, 400, "100");
    let no_title = hook(&emu, "tasks.task.add", json!({"fields": {"RESPONSIBLE_ID": 1}})).await;
    assert_eq!(no_title.body["error_description"], "Task title is not specified<br>");
    let no_resp = hook(&emu, "tasks.task.add", json!({"fields": {"TITLE": "x"}})).await;
    assert_eq!(no_resp.body["error_description"], "Responsible person not specified");
    emu.shutdown().await;
}

#[tokio::test]
async fn requests_are_recorded_with_params_auth_and_response() {
    let emu = start(frozen_config()).await;
    hook(&emu, "user.current", json!({"x": 1})).await;
    app(&emu, "user.current", json!({})).await;
    let reqs = emu.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, "user.current");
    assert_eq!(reqs[0].auth, b24emu::AuthMode::Webhook { user_id: 1 });
    assert_eq!(reqs[0].param("x"), Some(&json!(1)));
    assert_eq!(reqs[1].auth, b24emu::AuthMode::OAuth { user_id: 1 });
    assert!(reqs[1].param("auth").is_none(), "auth is not recorded as a parameter");
    assert_eq!(reqs[1].status, 200);
    assert_eq!(reqs[1].response["result"]["ID"], "1");
    emu.shutdown().await;
}
