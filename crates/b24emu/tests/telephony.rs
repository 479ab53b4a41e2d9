//! External calls: register (CRM lookup, lead creation, 30-minute rule), show/hide, finish, records.

mod common;

use std::time::Duration;

use b24emu::{CardAction, CardCause, EntityType, SeedEntity, SeedLine};
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const CLIENT: &str = "+79001234567";

fn register_params(user: u64, external: Option<&str>) -> Value {
    let mut p = json!({
        "USER_ID": user,
        "PHONE_NUMBER": CLIENT,
        "TYPE": 2,
        "LINE_NUMBER": "73432723033",
        "CALL_START_DATE": "2026-03-10T10:59:50+03:00",
        "CRM_CREATE": 1,
    });
    if let Some(e) = external {
        p["EXTERNAL_CALL_ID"] = json!(e);
    }
    p
}

fn call_id_is_well_formed(id: &str) -> bool {
    let parts: Vec<&str> = id.split('.').collect();
    parts.len() == 3
        && parts[0] == "externalCall"
        && parts[1].len() == 32
        && parts[1].chars().all(|c| c.is_ascii_hexdigit())
        && parts[2].parse::<i64>().is_ok()
}

#[tokio::test]
async fn register_unknown_number_creates_lead_and_shows_card() {
    let emu = start(frozen_config()).await;
    let a = app(
        &emu,
        "telephony.externalcall.register",
        register_params(1, Some("1710140185.1")),
    )
    .await;
    let r = result(&a);
    let call_id = r["CALL_ID"].as_str().expect("CALL_ID");
    assert!(call_id_is_well_formed(call_id), "{call_id}");
    assert!(call_id.ends_with(&format!(".{}", start_time().timestamp())));
    let lead_id = r["CRM_CREATED_LEAD"].as_u64().expect("lead id");
    assert_eq!(
        r["CRM_CREATED_ENTITIES"],
        json!([{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead_id}])
    );
    assert_eq!(r["CRM_ENTITY_TYPE"], "LEAD");
    assert_eq!(r["CRM_ENTITY_ID"], lead_id);
    let state = emu.state();
    let lead = &state.leads[0];
    assert_eq!(lead.phones[0].value, CLIENT);
    assert_eq!(lead.field_str("SOURCE_ID").as_deref(), Some("CALL"));
    assert_eq!(lead.assigned_by(), Some(1));
    let timeline = emu.card_timeline();
    assert!(timeline.is_visible(1, call_id));
    assert_eq!(timeline.events[0].cause, CardCause::Register);
    emu.shutdown().await;
}

#[tokio::test]
async fn register_finds_existing_contact_without_creating() {
    let mut cfg = frozen_config();
    cfg.contacts.push(
        SeedEntity::new(797)
            .field("NAME", "Ivan")
            .field("ASSIGNED_BY_ID", 3)
            .phone("8 (900) 123-45-67", "MOBILE"),
    );
    cfg.contacts
        .push(SeedEntity::new(798).phone("+7 900 123-45-67", "WORK"));
    let emu = start(cfg).await;
    let a = app(&emu, "telephony.externalcall.register", register_params(2, None)).await;
    let r = result(&a);
    assert_eq!(r["CRM_ENTITY_TYPE"], "CONTACT");
    assert_eq!(r["CRM_ENTITY_ID"], 798);
    assert_eq!(r["CRM_CREATED_LEAD"], Value::Null);
    assert_eq!(r["CRM_CREATED_ENTITIES"], json!([]));
    assert!(emu.state().leads.is_empty());

    let search = app(
        &emu,
        "telephony.externalCall.searchCrmEntities",
        json!({"PHONE_NUMBER": "89001234567"}),
    )
    .await;
    let hits = result(&search).as_array().expect("array");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["CRM_ENTITY_TYPE"], "CONTACT");
    assert_eq!(hits[0]["CRM_ENTITY_ID"], 797);
    assert_eq!(hits[0]["ASSIGNED_BY_ID"], 3);
    assert_eq!(hits[0]["NAME"], "Ivan");
    assert_eq!(hits[0]["ASSIGNED_BY"]["ID"], "3");
    assert_eq!(hits[0]["ASSIGNED_BY"]["USER_PHONE_INNER"], "103");
    let empty = app(&emu, "telephony.externalCall.searchCrmEntities", json!({})).await;
    assert_eq!(empty.body["error_description"], "PHONE_NUMBER is empty");
    emu.shutdown().await;
}

#[tokio::test]
async fn register_validation_errors() {
    let emu = start(frozen_config()).await;
    let cases = [
        (
            json!({"PHONE_NUMBER": CLIENT, "TYPE": 2}),
            "USER_ID or USER_PHONE_INNER should be set",
        ),
        (json!({"USER_ID": 1, "PHONE_NUMBER": CLIENT, "TYPE": 9}), "Unknown TYPE"),
        (
            json!({"USER_ID": 1, "PHONE_NUMBER": CLIENT, "TYPE": 2, "CALL_START_DATE": "yesterday"}),
            "CALL_START_DATE should be in the ISO-8601 format",
        ),
        (
            json!({"USER_ID": 1, "PHONE_NUMBER": "abc", "TYPE": 2}),
            "Unsupported phone number format",
        ),
        (
            json!({"USER_ID": 77, "PHONE_NUMBER": CLIENT, "TYPE": 2}),
            "User is not found or is not active",
        ),
        (
            json!({"USER_PHONE_INNER": "999", "PHONE_NUMBER": CLIENT, "TYPE": 2}),
            "User is not found or is not active",
        ),
    ];
    for (params, text) in cases {
        let a = app(&emu, "telephony.externalcall.register", params).await;
        assert_error(&a, 400, "ERROR_CORE");
        assert_eq!(a.body["error_description"], text);
    }
    let by_inner = app(
        &emu,
        "telephony.externalcall.register",
        json!({"USER_PHONE_INNER": "102", "PHONE_NUMBER": CLIENT, "TYPE": 1}),
    )
    .await;
    assert!(result(&by_inner)["CALL_ID"].is_string());
    assert_eq!(emu.state().calls[0].user_id, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn thirty_minute_rule_with_external_call_id() {
    let emu = start(frozen_config()).await;
    let first = app(&emu, "telephony.externalcall.register", register_params(1, Some("a-1"))).await;
    let first_id = result(&first)["CALL_ID"].as_str().expect("id").to_owned();
    // Same keys, different CALL_START_DATE and CRM binding (not keys): the same CALL_ID.
    let mut again = register_params(1, Some("a-1"));
    again["CALL_START_DATE"] = json!("2026-03-10T11:05:00+03:00");
    again["CRM_ENTITY_TYPE"] = json!("CONTACT");
    again["CRM_ENTITY_ID"] = json!(5);
    emu.clock().advance(Duration::from_secs(29 * 60));
    let second = app(&emu, "telephony.externalcall.register", again).await;
    assert_eq!(result(&second)["CALL_ID"], first_id.as_str());
    assert_eq!(result(&second)["CRM_CREATED_ENTITIES"], json!([]));
    // A different EXTERNAL_CALL_ID is another call.
    let other = app(&emu, "telephony.externalcall.register", register_params(1, Some("a-2"))).await;
    assert_ne!(result(&other)["CALL_ID"], first_id.as_str());
    // Past 30 minutes from the first registration: a new call.
    emu.clock().advance(Duration::from_secs(60));
    let late = app(&emu, "telephony.externalcall.register", register_params(1, Some("a-1"))).await;
    assert_ne!(result(&late)["CALL_ID"], first_id.as_str());
    assert_eq!(emu.state().calls.len(), 3);
    assert_eq!(emu.state().call(&first_id).map(|c| c.registrations), Some(2));
    emu.shutdown().await;
}

#[tokio::test]
async fn thirty_minute_rule_without_external_call_id_merges_overlapping_calls() {
    let emu = start(frozen_config()).await;
    let a = app(&emu, "telephony.externalcall.register", register_params(1, None)).await;
    let b = app(&emu, "telephony.externalcall.register", register_params(1, None)).await;
    let id = result(&a)["CALL_ID"].as_str().expect("id").to_owned();
    assert_eq!(
        result(&b)["CALL_ID"],
        id.as_str(),
        "overlapping calls with equal keys share a CALL_ID"
    );
    // Another user or another TYPE is another key.
    let u2 = app(&emu, "telephony.externalcall.register", register_params(2, None)).await;
    assert_ne!(result(&u2)["CALL_ID"], id.as_str());
    // Both "calls" finish: the second finish fails, as observed in the field.
    let f1 = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 1, "DURATION": 5}),
    )
    .await;
    assert_eq!(result(&f1)["CALL_DURATION"], 5);
    let f2 = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 1, "DURATION": 7}),
    )
    .await;
    assert_error(&f2, 400, "");
    assert_eq!(
        f2.body["error_description"],
        "Call is not found (call should be registered prior to finishing)"
    );
    // After finish, a re-register within 30 minutes is a new call (old docs' rule) …
    let after = app(&emu, "telephony.externalcall.register", register_params(1, None)).await;
    assert_ne!(result(&after)["CALL_ID"], id.as_str());
    emu.shutdown().await;
}

#[tokio::test]
async fn dedup_of_finished_calls_is_configurable() {
    let mut cfg = frozen_config();
    cfg.conflicts.dedup_finished_calls = true;
    let emu = start(cfg).await;
    let a = app(&emu, "telephony.externalcall.register", register_params(1, Some("x"))).await;
    let id = result(&a)["CALL_ID"].as_str().expect("id").to_owned();
    app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 1}),
    )
    .await;
    let again = app(&emu, "telephony.externalcall.register", register_params(1, Some("x"))).await;
    assert_eq!(result(&again)["CALL_ID"], id.as_str());
    emu.shutdown().await;
}

#[tokio::test]
async fn finish_result_activity_and_card_hiding() {
    let mut cfg = frozen_config();
    cfg.contacts.push(SeedEntity::new(797).phone(CLIENT, "MOBILE"));
    let emu = start(cfg).await;
    let reg = app(&emu, "telephony.externalcall.register", register_params(1, Some("s3"))).await;
    let id = result(&reg)["CALL_ID"].as_str().expect("id").to_owned();
    let show = app(
        &emu,
        "telephony.externalcall.show",
        json!({"CALL_ID": id, "USER_ID": [2, 3]}),
    )
    .await;
    assert_eq!(result(&show), &json!(true));
    let form = format!("CALL_ID={id}&USER_ID[0]=1&USER_ID[1]=3");
    let hide = post_form(
        &format!(
            "{}/rest/telephony.externalcall.hide.json?auth={}",
            emu.base_url(),
            emu.app_credentials().access_token
        ),
        &form,
    )
    .await;
    assert_eq!(result(&hide), &json!(true));
    assert_eq!(emu.card_timeline().visible_to(&id), vec![2]);
    let unknown = app(
        &emu,
        "telephony.externalcall.show",
        json!({"CALL_ID": "externalCall.nope.1"}),
    )
    .await;
    assert_eq!(result(&unknown), &json!(false));

    emu.clock().advance(Duration::from_secs(20));
    let fin = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 2, "DURATION": 95, "VOTE": 5}),
    )
    .await;
    let r = result(&fin);
    assert_eq!(r["CALL_ID"], id.as_str());
    assert_eq!(r["EXTERNAL_CALL_ID"], "s3");
    assert_eq!(r["PORTAL_USER_ID"], 2);
    assert_eq!(r["PHONE_NUMBER"], CLIENT);
    assert_eq!(r["PORTAL_NUMBER"], "73432723033");
    assert_eq!(r["INCOMING"], "2");
    assert_eq!(r["CALL_DURATION"], 95);
    assert_eq!(r["CALL_START_DATE"], json!({}));
    assert_eq!(r["CALL_STATUS"], 1);
    assert_eq!(r["CALL_VOTE"], 5);
    assert_eq!(r["CALL_FAILED_CODE"], "200");
    assert_eq!(r["CRM_ENTITY_TYPE"], "CONTACT");
    assert_eq!(r["CRM_ENTITY_ID"], 797);
    assert_eq!(r["REST_APP_NAME"], "ringlink");
    let activity_id = r["CRM_ACTIVITY_ID"].as_u64().expect("activity");
    for key in [
        "COST",
        "COST_CURRENCY",
        "CALL_FAILED_REASON",
        "REST_APP_ID",
        "COMMENT",
        "ID",
    ] {
        assert!(r.get(key).is_some(), "{key}");
    }
    // Finish hid the card from the one user who still saw it.
    let tl = emu.card_timeline();
    assert!(tl.visible_to(&id).is_empty());
    let last = tl.events.last().expect("event");
    assert_eq!(
        (last.user_id, last.action, last.cause),
        (2, CardAction::Hidden, CardCause::Finish)
    );

    let act = app(&emu, "crm.activity.get", json!({"id": activity_id})).await;
    let a = result(&act);
    assert_eq!(a["ID"], activity_id.to_string());
    assert_eq!(a["OWNER_ID"], "797");
    assert_eq!(a["OWNER_TYPE_ID"], "3");
    assert_eq!(a["TYPE_ID"], "2");
    assert_eq!(a["PROVIDER_ID"], "VOXIMPLANT_CALL");
    assert_eq!(a["DIRECTION"], "1");
    assert_eq!(a["COMPLETED"], "Y");
    assert_eq!(a["RESPONSIBLE_ID"], "2");
    assert_eq!(a["START_TIME"], "2026-03-10T10:59:50+03:00");
    assert_eq!(a["END_TIME"], "2026-03-10T11:01:25+03:00");
    assert_eq!(a["ORIGIN_ID"], format!("VI_{id}"));
    let upd = app(
        &emu,
        "crm.activity.update",
        json!({"id": activity_id, "fields": {"DESCRIPTION": "talked", "ORIGIN_ID": "x"}}),
    )
    .await;
    assert_eq!(result(&upd), &json!(true));
    let act = app(&emu, "crm.activity.get", json!({"id": activity_id})).await;
    assert_eq!(result(&act)["DESCRIPTION"], "talked");
    assert_eq!(result(&act)["ORIGIN_ID"], format!("VI_{id}"));
    let listed = app(
        &emu,
        "crm.activity.list",
        json!({"filter": {"OWNER_ID": 797, "OWNER_TYPE_ID": 3}}),
    )
    .await;
    assert_eq!(listed.body["total"], 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn missed_call_defaults_and_finish_errors() {
    let emu = start(frozen_config()).await;
    let reg = app(&emu, "telephony.externalcall.register", register_params(1, Some("m"))).await;
    let id = result(&reg)["CALL_ID"].as_str().expect("id").to_owned();
    let not_string = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": 5, "USER_ID": 1}),
    )
    .await;
    assert_error(&not_string, 400, "INVALID_ARGUMENT");
    assert_eq!(not_string.body["error_description"], "CALL_ID must be a string");
    let no_user = app(&emu, "telephony.externalcall.finish", json!({"CALL_ID": id})).await;
    assert_eq!(
        no_user.body["error_description"],
        "USER_ID or USER_PHONE_INNER should be set"
    );
    let unknown = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": "externalCall.x.1", "USER_ID": 1}),
    )
    .await;
    assert_error(&unknown, 400, "ERROR_CORE");
    let fin = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_PHONE_INNER": "109x"}),
    )
    .await;
    assert_eq!(fin.body["error_description"], "User is not found or is not active");
    let fin = app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 9}),
    )
    .await;
    let r = result(&fin);
    assert_eq!(r["CALL_FAILED_CODE"], "304");
    assert_eq!(r["CALL_STATUS"], 0);
    assert_eq!(r["CALL_DURATION"], 0);
    let state = emu.state();
    let activity = &state.activities[0];
    assert_eq!(activity.fields["COMPLETED"], "N");
    assert_eq!(activity.fields["RESPONSIBLE_ID"], "9");
    emu.shutdown().await;
}

#[tokio::test]
async fn outgoing_register_respects_line_crm_auto_create() {
    let mut cfg = frozen_config();
    cfg.external_lines.push(SeedLine {
        number: "73432723033".into(),
        name: "carrier".into(),
        crm_auto_create: false,
    });
    let emu = start(cfg).await;
    let mut p = register_params(1, Some("o1"));
    p["TYPE"] = json!(1);
    let r = app(&emu, "telephony.externalcall.register", p).await;
    assert_eq!(result(&r)["CRM_CREATED_LEAD"], Value::Null);
    assert!(result(&r).get("CRM_ENTITY_TYPE").is_none());
    // Incoming on the same line still creates.
    let r = app(&emu, "telephony.externalcall.register", register_params(1, Some("i1"))).await;
    assert!(result(&r)["CRM_CREATED_LEAD"].is_u64());
    assert_eq!(emu.state().entities(EntityType::Lead).len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn attach_record_only_after_finish_with_base64() {
    let emu = start(frozen_config()).await;
    let reg = app(&emu, "telephony.externalcall.register", register_params(1, Some("r"))).await;
    let id = result(&reg)["CALL_ID"].as_str().expect("id").to_owned();
    let audio = b"RIFF\x00\x00\x00\x00WAVEfmt fake audio".to_vec();
    let content = base64::engine::general_purpose::STANDARD.encode(&audio);
    let early = app(
        &emu,
        "telephony.externalcall.attachRecord",
        json!({"CALL_ID": id, "FILENAME": "r.wav", "FILE_CONTENT": content}),
    )
    .await;
    assert_error(&early, 400, "ERROR_CORE");
    assert_eq!(
        early.body["error_description"],
        "Call is not found in the statistic table. It looks like it is not finished yet."
    );
    app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 1, "DURATION": 3}),
    )
    .await;
    let cases = [
        (
            json!({"CALL_ID": id}),
            "Required parameters are not set. Request should contain either URL or FILENAME parameter",
        ),
        (
            json!({"CALL_ID": id, "FILENAME": "r.ogg", "FILE_CONTENT": content}),
            "Wrong file extension. Only wav and mp3 are allowed",
        ),
        (
            json!({"CALL_ID": id, "FILENAME": "r.wav", "FILE_CONTENT": ""}),
            "File content is empty.",
        ),
        (
            json!({"CALL_ID": id, "FILENAME": "r.wav", "FILE_CONTENT": "not base64!"}),
            "File content is not properly encoded. Base64 encoding is expected.",
        ),
    ];
    for (params, text) in cases {
        let a = app(&emu, "telephony.externalcall.attachRecord", params).await;
        assert_eq!(a.body["error_description"], text);
    }
    let ok = app(
        &emu,
        "telephony.externalcall.attachRecord",
        json!({"CALL_ID": id, "FILENAME": "r.wav", "FILE_CONTENT": content}),
    )
    .await;
    let file_id = result(&ok)["FILE_ID"].as_u64().expect("FILE_ID");
    assert_eq!(emu.file_content(file_id), Some(audio));
    assert_eq!(emu.state().call(&id).and_then(|c| c.record_file_id), Some(file_id));
    emu.shutdown().await;
}

#[tokio::test]
async fn attach_record_two_step_upload() {
    let emu = start(frozen_config()).await;
    let reg = app(&emu, "telephony.externalcall.register", register_params(1, Some("u"))).await;
    let id = result(&reg)["CALL_ID"].as_str().expect("id").to_owned();
    app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 1, "DURATION": 3}),
    )
    .await;
    let step1 = app(
        &emu,
        "telephony.externalcall.attachRecord",
        json!({"CALL_ID": id, "FILENAME": "big.mp3"}),
    )
    .await;
    let r = result(&step1);
    assert_eq!(r["fieldName"], "file");
    let upload_url = r["uploadUrl"].as_str().expect("uploadUrl").to_owned();
    assert!(
        upload_url.starts_with(&format!("{}/rest/upload.json?auth=", emu.base_url())),
        "{upload_url}"
    );
    assert!(upload_url.contains("token=telephony%7C"), "{upload_url}");
    let audio = vec![7u8; 300_000];
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(audio.clone()).file_name("big.mp3"),
    );
    let resp = reqwest::Client::new()
        .post(&upload_url)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    let file_id = body["result"]["FILE_ID"].as_u64().expect("FILE_ID");
    assert_eq!(emu.file_content(file_id).map(|c| c.len()), Some(audio.len()));
    let state = emu.state();
    assert_eq!(state.file(file_id).map(|f| f.name.as_str()), Some("big.mp3"));
    // The upload token is single-use.
    let form =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(vec![1]).file_name("x.mp3"));
    let again = reqwest::Client::new()
        .post(&upload_url)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(again.status().as_u16(), 400);
    emu.shutdown().await;
}

#[tokio::test]
async fn attach_record_by_url_downloads_once() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let files = axum::Router::new()
        .route("/rec/call.mp3", get(|| async { vec![9u8; 1000] }))
        .route(
            "/rec/missing.mp3",
            get(|| async { (axum::http::StatusCode::NOT_FOUND, "no") }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, files).await });
    let emu = start(frozen_config()).await;
    let reg = app(&emu, "telephony.externalcall.register", register_params(1, Some("url"))).await;
    let id = result(&reg)["CALL_ID"].as_str().expect("id").to_owned();
    app(
        &emu,
        "telephony.externalcall.finish",
        json!({"CALL_ID": id, "USER_ID": 1, "DURATION": 3}),
    )
    .await;
    let ok = app(
        &emu,
        "telephony.externalcall.attachRecord",
        json!({"CALL_ID": id, "RECORD_URL": format!("http://{addr}/rec/call.mp3")}),
    )
    .await;
    let file_id = result(&ok)["FILE_ID"].as_u64().expect("FILE_ID");
    assert_eq!(
        emu.state().file(file_id).map(|f| (f.name.clone(), f.size)),
        Some(("call.mp3".into(), 1000))
    );
    let missing = app(
        &emu,
        "telephony.externalcall.attachRecord",
        json!({"CALL_ID": id, "RECORD_URL": format!("http://{addr}/rec/missing.mp3")}),
    )
    .await;
    assert_eq!(missing.body["error_description"], "Server returns HTTP error code 404");
    server.abort();
    emu.shutdown().await;
}

#[tokio::test]
async fn webhook_telephony_can_be_rejected() {
    let mut cfg = frozen_config();
    cfg.conflicts.webhook_telephony = b24emu::Permission::Reject;
    let emu = start(cfg).await;
    let a = hook(&emu, "telephony.externalcall.register", register_params(1, None)).await;
    assert_error(&a, 403, "WRONG_AUTH_TYPE");
    // show/hide are not app-only.
    let s = hook(
        &emu,
        "telephony.externalcall.show",
        json!({"CALL_ID": "externalCall.x.1"}),
    )
    .await;
    assert_eq!(result(&s), &json!(false));
    let ok = app(&emu, "telephony.externalcall.register", register_params(1, None)).await;
    assert!(result(&ok)["CALL_ID"].is_string());
    emu.shutdown().await;
}
