//! The client against the Bitrix24 emulator: every typed method, success and error paths, token
//! refresh between and inside batch runs, and a rate-limit storm.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use b24emu::{ClickToCall, Emulator, EmulatorConfig, Fault, SeedEntity, SeedUser};
use bitrix24::methods::crm::{
    ActivityFields, ActivityGet, ActivityUpdate, CommunicationType, CompanyAdd, CompanyGet, CompanyList, CompanyUpdate,
    ContactAdd, ContactGet, ContactList, ContactUpdate, CrmFields, CrmListParams, DuplicateFindByComm, LeadAdd,
    LeadGet, LeadList, LeadUpdate, MultifieldWrite, NewId, StatusList,
};
use bitrix24::methods::events::{EventBind, EventGet, EventOfflineGet, EventType, EventUnbind};
use bitrix24::methods::tasks::{TaskAdd, TaskFields};
use bitrix24::methods::telephony::{
    CallStatusCode, CallType, ExternalCallFinish, ExternalCallHide, ExternalCallRegister, ExternalCallShow,
    ExternalLineAdd, ExternalLineUpdate, SearchCrmEntities, UserIds,
};
use bitrix24::methods::user::UserGet;
use bitrix24::{
    AppCredentials, AuthErrorKind, Batch, Client, Encoding, Error, LimiterConfig, OAuthTokens, Timeouts, TokenStore,
};
use chrono::DateTime;
use serde_json::{json, Map, Value};

/// Limiter settings that keep tests quick while still exercising back-off.
fn quick_limiter() -> LimiterConfig {
    LimiterConfig {
        drain_per_sec: 2.0,
        capacity: 50.0,
        headroom: 1.0,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(80),
        operation_block_default: Duration::from_secs(60),
    }
}

#[derive(Default)]
struct SavedTokens(Mutex<Vec<OAuthTokens>>);

impl TokenStore for SavedTokens {
    fn save_tokens(&self, tokens: &OAuthTokens) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(tokens.clone());
        Ok(())
    }
}

impl SavedTokens {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Portal {
    emu: Emulator,
    app: Client,
    hook: Client,
    saved: Arc<SavedTokens>,
}

async fn portal_with(cfg: EmulatorConfig) -> Portal {
    let emu = Emulator::start(cfg).await.unwrap();
    let creds = emu.app_credentials();
    let saved = Arc::new(SavedTokens::default());
    let app = Client::app(
        creds.client_endpoint.clone(),
        AppCredentials::new(creds.client_id.clone(), creds.client_secret.clone()).with_oauth_url(emu.oauth_url()),
        OAuthTokens::new(creds.access_token.clone(), creds.refresh_token.clone()),
    )
    .limiter_config(quick_limiter())
    .rate_limit_retries(50)
    .token_store(saved.clone())
    .timeouts(Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(5),
    })
    .build()
    .unwrap();
    let hook = Client::webhook(&emu.webhook_url())
        .unwrap()
        .limiter_config(quick_limiter())
        .rate_limit_retries(50)
        .build()
        .unwrap();
    Portal { emu, app, hook, saved }
}

fn frozen() -> EmulatorConfig {
    EmulatorConfig::frozen_at(DateTime::parse_from_rfc3339("2026-03-10T11:00:00+03:00").unwrap())
}

async fn portal() -> Portal {
    portal_with(frozen()).await
}

fn register(phone: &str, external: &str) -> ExternalCallRegister {
    ExternalCallRegister {
        user_phone_inner: Some("101".into()),
        phone_number: phone.into(),
        call_type: CallType::Incoming,
        call_start_date: Some(DateTime::parse_from_rfc3339("2026-03-10T11:00:00+03:00").unwrap()),
        line_number: Some("74950000000".into()),
        external_call_id: Some(external.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn call_lifecycle_register_show_hide_finish_record() {
    let mut cfg = frozen();
    cfg.contacts.push(
        SeedEntity::new(797)
            .field("NAME", "Ivan")
            .field("ASSIGNED_BY_ID", 2)
            .phone("+79001234567", "WORK"),
    );
    let p = portal_with(cfg).await;

    let registered = p.app.send(&register("+79001234567", "pbx-1.1")).await.unwrap();
    assert!(registered.call_id.starts_with("externalCall."), "{registered:?}");
    assert_eq!(registered.crm_entity_type.as_deref(), Some("CONTACT"));
    assert_eq!(registered.crm_entity_id, Some(797));

    // Same EXTERNAL_CALL_ID again: the portal hands back the same call.
    let again = p.app.send(&register("+79001234567", "pbx-1.1")).await.unwrap();
    assert_eq!(again.call_id, registered.call_id);

    let shown = p
        .app
        .send(&ExternalCallShow {
            call_id: registered.call_id.clone(),
            user_id: Some(UserIds::Many(vec![2, 3])),
        })
        .await
        .unwrap();
    assert!(shown);
    let timeline = p.emu.card_timeline();
    assert!(timeline.is_visible(2, &registered.call_id) && timeline.is_visible(3, &registered.call_id));
    let hidden = p
        .app
        .send(&ExternalCallHide {
            call_id: registered.call_id.clone(),
            user_id: Some(UserIds::One(3)),
        })
        .await
        .unwrap();
    assert!(hidden);
    assert!(!p.emu.card_timeline().is_visible(3, &registered.call_id));
    // Unknown call: `false`, not an error.
    let unknown = ExternalCallShow {
        call_id: "externalCall.00000000000000000000000000000000.1".into(),
        user_id: None,
    };
    assert!(!p.app.send(&unknown).await.unwrap());

    let finished = p
        .app
        .send(&ExternalCallFinish {
            call_id: registered.call_id.clone(),
            user_id: Some(2),
            duration: Some(95),
            status_code: Some(CallStatusCode::Success),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(finished.call_id, registered.call_id);
    assert_eq!(finished.call_duration, Some(95));
    assert_eq!(finished.external_call_id.as_deref(), Some("pbx-1.1"));
    let activity_id = finished
        .crm_activity_id
        .expect("finish of a call with a contact writes an activity");

    let record = b"RIFF....WAVEfmt fake recording bytes".to_vec();
    let file_id = p
        .app
        .attach_record_base64(&registered.call_id, "call.wav", &record)
        .await
        .unwrap();
    assert_eq!(p.emu.file_content(file_id).as_deref(), Some(&record[..]));

    // The activity written by finish, read and updated.
    let activity = p.app.send(&ActivityGet { id: activity_id }).await.unwrap();
    assert_eq!(activity.id, activity_id);
    assert_eq!(activity.owner_id, Some(797));
    let updated = p
        .app
        .send(&ActivityUpdate {
            id: activity_id,
            fields: ActivityFields {
                description: Some("Talked about the order".into()),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    assert!(updated);
    let activity = p.app.send(&ActivityGet { id: activity_id }).await.unwrap();
    assert_eq!(activity.description.as_deref(), Some("Talked about the order"));

    // The second finish of the same call fails with the legacy empty code.
    let repeat = p
        .app
        .send(&ExternalCallFinish {
            call_id: registered.call_id.clone(),
            user_id: Some(2),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(repeat, Error::Method { ref code, .. } if code.is_empty()),
        "{repeat:?}"
    );
    assert!(!repeat.is_retryable());
}

#[tokio::test]
async fn record_upload_in_two_steps_through_webhook_and_app() {
    let p = portal().await;
    for (client, external) in [(&p.app, "pbx-2.1"), (&p.hook, "pbx-2.2")] {
        let call = client.send(&register("+79005550000", external)).await.unwrap();
        client
            .send(&ExternalCallFinish {
                call_id: call.call_id.clone(),
                user_id: Some(1),
                duration: Some(10),
                ..Default::default()
            })
            .await
            .unwrap();
        let record: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let result = client
            .attach_record_upload(&call.call_id, "call.mp3", record.clone())
            .await
            .unwrap();
        let snapshot = p.emu.state();
        let stored = snapshot
            .files
            .iter()
            .find(|f| f.content == record)
            .expect("file stored");
        assert_eq!(p.emu.file_content(stored.id).unwrap().len(), record.len());
        assert!(!result.is_null());
    }
}

#[tokio::test]
async fn record_before_finish_and_bad_extension_are_method_errors() {
    let p = portal().await;
    let call = p.app.send(&register("+79005550001", "pbx-3.1")).await.unwrap();
    let early = p
        .app
        .attach_record_base64(&call.call_id, "call.wav", b"x")
        .await
        .unwrap_err();
    assert!(matches!(early, Error::Method { .. }), "{early:?}");
    assert!(early.description().unwrap().contains("not finished"), "{early:?}");
    p.app
        .send(&ExternalCallFinish {
            call_id: call.call_id.clone(),
            user_id: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let ext = p
        .app
        .attach_record_base64(&call.call_id, "call.ogg", b"x")
        .await
        .unwrap_err();
    assert!(ext.description().unwrap().contains("extension"), "{ext:?}");
}

#[tokio::test]
async fn register_validation_errors() {
    let p = portal().await;
    let mut no_user = register("+79001112233", "pbx-4.1");
    no_user.user_phone_inner = None;
    let e = p.app.send(&no_user).await.unwrap_err();
    assert!(
        matches!(e, Error::Method { ref description, .. } if description.contains("USER_ID")),
        "{e:?}"
    );
    let finish_unknown = ExternalCallFinish {
        call_id: "externalCall.ffffffffffffffffffffffffffffffff.1".into(),
        user_id: Some(1),
        ..Default::default()
    };
    let e = p.app.send(&finish_unknown).await.unwrap_err();
    assert!(
        matches!(e, Error::Method { ref description, .. } if description.contains("not found")),
        "{e:?}"
    );
}

#[tokio::test]
async fn search_crm_entities_and_duplicates() {
    let mut cfg = frozen();
    cfg.contacts.push(
        SeedEntity::new(275)
            .field("NAME", "Olga")
            .phone("+79007770000", "MOBILE"),
    );
    cfg.leads
        .push(SeedEntity::new(31).field("TITLE", "Lead").phone("+79007770000", "WORK"));
    let p = portal_with(cfg).await;

    let found = p
        .app
        .send(&SearchCrmEntities {
            phone_number: "+79007770000".into(),
        })
        .await
        .unwrap();
    let mut kinds: Vec<(String, u64)> = found
        .iter()
        .map(|m| (m.crm_entity_type.clone(), m.crm_entity_id))
        .collect();
    kinds.sort();
    assert_eq!(kinds, vec![("CONTACT".into(), 275), ("LEAD".into(), 31)]);

    let dup = DuplicateFindByComm {
        comm_type: CommunicationType::Phone,
        values: vec!["+79007770000".into()],
        entity_type: None,
    };
    let matches = p.app.send(&dup).await.unwrap();
    assert_eq!(matches.contact, vec![275]);
    assert_eq!(matches.lead, vec![31]);
    let none = DuplicateFindByComm {
        values: vec!["+70000000000".into()],
        ..dup.clone()
    };
    assert!(p.app.send(&none).await.unwrap().is_empty(), "`[]` reads as no matches");
    let only_contacts = DuplicateFindByComm {
        entity_type: Some("CONTACT".into()),
        ..dup
    };
    let m = p.app.send_with(&only_contacts, Encoding::Form).await.unwrap();
    assert_eq!((m.contact.len(), m.lead.len()), (1, 0));
}

#[tokio::test]
async fn crm_entities_add_get_update_list() {
    let p = portal().await;
    let fields = |title: &str| CrmFields {
        title: Some(title.into()),
        name: Some("Petr".into()),
        source_id: Some("CALL".into()),
        assigned_by_id: Some(2),
        phone: vec![MultifieldWrite::new("+79001230000", "WORK")],
        ..Default::default()
    };

    let NewId(lead) = p
        .app
        .send(&LeadAdd {
            fields: fields("Incoming call"),
            params: None,
        })
        .await
        .unwrap();
    let got = p.app.send(&LeadGet { id: lead }).await.unwrap();
    assert_eq!(got.title.as_deref(), Some("Incoming call"));
    assert_eq!(got.phone[0].value.as_deref(), Some("+79001230000"));
    assert_eq!(got.assigned_by_id, Some(2));
    let changed = LeadUpdate {
        id: lead,
        fields: CrmFields {
            assigned_by_id: Some(3),
            ..Default::default()
        },
        params: None,
    };
    assert!(p.app.send_with(&changed, Encoding::Form).await.unwrap());
    assert_eq!(p.app.send(&LeadGet { id: lead }).await.unwrap().assigned_by_id, Some(3));

    let NewId(contact) = p
        .hook
        .send(&ContactAdd {
            fields: fields("-"),
            params: None,
        })
        .await
        .unwrap();
    assert!(p
        .hook
        .send(&ContactUpdate {
            id: contact,
            fields: CrmFields {
                last_name: Some("Sidorov".into()),
                ..Default::default()
            },
            params: None
        })
        .await
        .unwrap());
    assert_eq!(
        p.hook
            .send(&ContactGet { id: contact })
            .await
            .unwrap()
            .last_name
            .as_deref(),
        Some("Sidorov")
    );

    let NewId(company) = p
        .app
        .send(&CompanyAdd {
            fields: fields("Acme"),
            params: None,
        })
        .await
        .unwrap();
    assert!(p
        .app
        .send(&CompanyUpdate {
            id: company,
            fields: CrmFields {
                title: Some("Acme Ltd".into()),
                ..Default::default()
            },
            params: None
        })
        .await
        .unwrap());
    assert_eq!(
        p.app.send(&CompanyGet { id: company }).await.unwrap().title.as_deref(),
        Some("Acme Ltd")
    );

    // 120 leads in batches of 50, then every page back with list_all.
    for chunk in 0..3 {
        let mut batch = Batch::new();
        for i in 0..40 {
            batch
                .push_method(
                    format!("l{i}"),
                    &LeadAdd {
                        fields: fields(&format!("bulk {chunk}-{i}")),
                        params: None,
                    },
                )
                .unwrap();
        }
        let response = p.app.batch(&batch).await.unwrap();
        assert!(response.failed_keys().is_empty());
    }
    let mut filter = Map::new();
    filter.insert("%TITLE".into(), json!("bulk"));
    let list = LeadList(CrmListParams {
        select: vec!["ID".into(), "TITLE".into(), "PHONE".into()],
        filter,
        order: Map::from_iter([("ID".to_owned(), json!("ASC"))]),
        start: None,
    });
    let first = p.app.send_page(&list).await.unwrap();
    assert_eq!((first.items.len(), first.total, first.next), (50, Some(120), Some(50)));
    let all = p.app.list_all(list).await.unwrap();
    assert_eq!(all.len(), 120);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "pages in order, none twice");
    assert_eq!(p.emu.requests_for("crm.lead.list").len(), 1 + 3);

    assert_eq!(p.app.list_all(ContactList::default()).await.unwrap().len(), 1);
    assert_eq!(p.app.list_all(CompanyList::default()).await.unwrap().len(), 1);

    // Legacy error shape: empty code, text only.
    let missing = p.app.send(&LeadGet { id: 999_999 }).await.unwrap_err();
    assert!(
        matches!(missing, Error::Method { ref code, status: 400, .. } if code.is_empty()),
        "{missing:?}"
    );
    assert_eq!(missing.description(), Some("Not found"));
}

#[tokio::test]
async fn users_all_pages_and_status_list() {
    let mut cfg = frozen();
    for id in 200..330 {
        cfg.users
            .push(SeedUser::new(id, "User", &format!("N{id}"), &format!("{id}")));
    }
    let p = portal_with(cfg).await;
    let users = p.app.users_all(UserGet::default()).await.unwrap();
    assert_eq!(users.len(), 4 + 130);
    let mut ids: Vec<u64> = users.iter().map(|u| u.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), users.len(), "no user twice");
    let anna = users.iter().find(|u| u.id == 1).unwrap();
    assert_eq!(anna.uf_phone_inner.as_deref(), Some("101"));
    assert_eq!(p.emu.requests_for("user.get").len(), 3);

    let mut by_inner = UserGet::default();
    by_inner.filter.insert("UF_PHONE_INNER".into(), json!("102"));
    let boris = p.hook.users_all(by_inner).await.unwrap();
    assert_eq!(boris.iter().map(|u| u.id).collect::<Vec<_>>(), vec![2]);

    let sources = p.app.send(&StatusList::of("SOURCE")).await.unwrap();
    assert!(sources.iter().any(|s| s.status_id == "CALL"), "{sources:?}");
    assert!(sources.iter().all(|s| s.entity_id == "SOURCE"));
}

#[tokio::test]
async fn external_lines_and_tasks() {
    let p = portal().await;
    let added = p
        .app
        .send(&ExternalLineAdd {
            number: "74950000000".into(),
            name: Some("Main".into()),
            crm_auto_create: Some(false),
        })
        .await
        .unwrap();
    let dup = p
        .app
        .send(&ExternalLineAdd {
            number: "74950000000".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        dup.description().unwrap_or_default().contains("already exists"),
        "{dup:?}"
    );
    let updated = p
        .app
        .send(&ExternalLineUpdate {
            number: "74950000000".into(),
            name: Some("Main office".into()),
            crm_auto_create: None,
        })
        .await
        .unwrap();
    assert_eq!(updated.id, added.id);
    let lines = p.app.external_lines().await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].name.as_deref(), Some("Main office"));
    assert_eq!(lines[0].crm_auto_create, Some(false));

    let task = p
        .app
        .send(&TaskAdd {
            fields: TaskFields {
                title: "Call back +79001234567".into(),
                responsible_id: 2,
                uf_crm_task: vec!["C_797".into()],
                ..Default::default()
            },
        })
        .await
        .unwrap();
    assert!(task.task.id > 0);
    assert_eq!(task.task.responsible_id, Some(2));
    let no_title = p
        .app
        .send(&TaskAdd {
            fields: TaskFields {
                responsible_id: 2,
                ..Default::default()
            },
        })
        .await
        .unwrap_err();
    assert!(matches!(no_title, Error::Method { .. }), "{no_title:?}");
}

#[tokio::test]
async fn events_bind_get_unbind_and_offline_queue() {
    let p = portal().await;
    let bind = EventBind {
        event: "ONEXTERNALCALLSTART".into(),
        handler: Some("https://pbx.example/bitrix24/event".into()),
        ..Default::default()
    };
    assert!(p.app.send(&bind).await.unwrap());
    let again = p.app.send(&bind).await.unwrap_err();
    assert!(
        matches!(again, Error::Method { ref code, .. } if code == "ERROR_HANDLER_ALREADY_EXIST"),
        "{again:?}"
    );
    let handlers = p.app.send(&EventGet {}).await.unwrap();
    assert!(handlers
        .iter()
        .any(|h| h.event == "ONEXTERNALCALLSTART" && h.offline == Some(false)));

    // Webhooks may not manage events.
    let refused = p.hook.send(&EventGet {}).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Auth {
                kind: AuthErrorKind::WrongAuthType,
                ..
            }
        ),
        "{refused:?}"
    );

    let unbound = p
        .app
        .send(&EventUnbind {
            event: "ONEXTERNALCALLSTART".into(),
            handler: Some("https://pbx.example/bitrix24/event".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unbound.count, 1);

    let offline = EventBind {
        event: "ONEXTERNALCALLSTART".into(),
        event_type: Some(EventType::Offline),
        ..Default::default()
    };
    assert!(p.app.send(&offline).await.unwrap());
    p.emu.click_to_call(ClickToCall::new(1, "+79001234567")).await.unwrap();
    let queued = p.app.send(&EventOfflineGet::default()).await.unwrap();
    assert_eq!(queued.events.len(), 1);
    assert_eq!(queued.events[0].event_name, "ONEXTERNALCALLSTART");
    assert_eq!(queued.events[0].event_data["PHONE_NUMBER"], "+79001234567");
    // Taken with clear=1 (default): the queue is empty now.
    assert!(p.app.send(&EventOfflineGet::default()).await.unwrap().events.is_empty());
}

#[tokio::test]
async fn batch_references_halt_and_per_command_errors() {
    let p = portal().await;
    let mut batch = Batch::new();
    batch
        .push_method(
            "contact",
            &ContactAdd {
                fields: CrmFields {
                    name: Some("Batch & Co".into()),
                    phone: vec![MultifieldWrite::new("+79008889900", "WORK")],
                    ..Default::default()
                },
                params: None,
            },
        )
        .unwrap();
    batch
        .push(
            "get",
            "crm.contact.get",
            json!({"id": Batch::reference("contact", &[])}),
        )
        .unwrap();
    batch.push("missing", "crm.lead.get", json!({"id": 987654})).unwrap();
    batch
        .push("users", "user.get", json!({"FILTER": {"UF_PHONE_INNER": "101"}}))
        .unwrap();
    for encoding in [Encoding::Json, Encoding::Form] {
        let response = p.app.batch_with(&batch, encoding).await.unwrap();
        let NewId(id) = response.get_method::<ContactAdd>("contact").unwrap();
        let got: Value = response.get("get").unwrap().clone();
        assert_eq!(got["ID"], json!(id.to_string()));
        assert_eq!(got["NAME"], "Batch & Co");
        let missing = response.get("missing").unwrap_err();
        assert!(
            matches!(missing, Error::Method { ref method, .. } if method == "crm.lead.get"),
            "{missing:?}"
        );
        assert_eq!(response.failed_keys(), vec!["missing"]);
        assert_eq!(response.total("users"), Some(1));
    }
    // One batch is one request against the limit; its commands are recorded separately.
    assert_eq!(p.emu.requests_for("batch").len(), 2);

    let halted = p.app.batch(&batch.clone().halt(true)).await.unwrap();
    assert!(halted.get("missing").is_err());
    assert!(
        matches!(halted.get("users"), Err(Error::BatchMissing { .. })),
        "halt stops after the failure"
    );
}

#[tokio::test]
async fn batch_over_fifty_is_refused_locally() {
    let mut batch = Batch::new();
    for i in 0..50 {
        batch.push(format!("c{i}"), "user.get", json!({})).unwrap();
    }
    assert!(matches!(
        batch.push("c50", "user.get", json!({})),
        Err(Error::BatchTooLarge { len: 51 })
    ));
}

#[tokio::test]
async fn token_expires_during_a_chain_of_batches() {
    let p = portal().await;
    // A chain of batches that create a lead and then read it back by reference; the emulator clock
    // passes the access token's hour between the runs, so one run meets `expired_token`.
    let mut created = Vec::new();
    for round in 0..4 {
        let mut batch = Batch::new();
        for i in 0..20 {
            batch
                .push_method(
                    format!("add{i}"),
                    &LeadAdd {
                        fields: CrmFields {
                            title: Some(format!("r{round}-{i}")),
                            ..Default::default()
                        },
                        params: None,
                    },
                )
                .unwrap();
            batch
                .push(
                    format!("get{i}"),
                    "crm.lead.get",
                    json!({"id": Batch::reference(&format!("add{i}"), &[])}),
                )
                .unwrap();
        }
        if round == 2 {
            p.emu.clock().advance(Duration::from_secs(3601));
        }
        let response = p.app.batch(&batch).await.unwrap();
        for i in 0..20 {
            let NewId(id) = response.get_method::<LeadAdd>(&format!("add{i}")).unwrap();
            let lead: Value = response.get(&format!("get{i}")).unwrap().clone();
            assert_eq!(lead["TITLE"], json!(format!("r{round}-{i}")));
            created.push(id);
        }
    }
    assert_eq!(p.saved.count(), 1, "exactly one refresh, handed to the store");
    let leads = p.emu.state().leads;
    assert_eq!(leads.len(), 80, "nothing created twice, nothing lost");
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(sorted, created, "creation order kept");
    let refused: Vec<_> = p
        .emu
        .requests_for("batch")
        .into_iter()
        .filter(|r| r.status == 401)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "the expired run was refused as a whole and sent again"
    );
}

#[tokio::test]
async fn rate_limit_storm_loses_nothing_and_keeps_order() {
    let mut p = portal().await;
    // After a refusal the mirror counts the bucket as full; a fast drain keeps this test short.
    p.hook = Client::webhook(&p.emu.webhook_url())
        .unwrap()
        .limiter_config(LimiterConfig {
            drain_per_sec: 50.0,
            ..quick_limiter()
        })
        .rate_limit_retries(50)
        .build()
        .unwrap();
    // A sequential sender (as the outbox worker is) and concurrent callers, while the portal refuses
    // every request for a while.
    p.emu.set_fault_for(Fault::RateLimitStorm, Duration::from_millis(300));
    for i in 0..10 {
        let id = p
            .hook
            .send(&LeadAdd {
                fields: CrmFields {
                    title: Some(format!("seq-{i}")),
                    ..Default::default()
                },
                params: None,
            })
            .await
            .unwrap();
        assert!(id.0 > 0);
    }
    p.emu.set_fault_for(Fault::RateLimitStorm, Duration::from_millis(300));
    let mut handles = Vec::new();
    for i in 0..10 {
        let client = p.hook.clone();
        handles.push(tokio::spawn(async move {
            client
                .send(&LeadAdd {
                    fields: CrmFields {
                        title: Some(format!("par-{i}")),
                        ..Default::default()
                    },
                    params: None,
                })
                .await
        }));
        tokio::task::yield_now().await;
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let titles: Vec<String> = p
        .emu
        .state()
        .leads
        .iter()
        .map(|l| {
            l.fields
                .get("TITLE")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let seq: Vec<&String> = titles.iter().filter(|t| t.starts_with("seq-")).collect();
    assert_eq!(
        seq,
        (0..10)
            .map(|i| format!("seq-{i}"))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );
    let mut par: Vec<&String> = titles.iter().filter(|t| t.starts_with("par-")).collect();
    par.sort();
    par.dedup();
    assert_eq!(par.len(), 10, "every concurrent request landed exactly once");
    let refused = p.emu.requests().iter().filter(|r| r.status == 503).count();
    assert!(refused > 0, "the storm did refuse requests");
    assert!(p.hook.budget().backoff_remaining.is_none() || refused > 0);
}

#[tokio::test]
async fn limiter_mirrors_the_portal_bucket() {
    // A running (not frozen) portal clock and a small bucket: 10 requests, draining 20/s. A client whose
    // limiter mirrors that sends 40 requests without a single refusal; one that ignores it is refused.
    let mut cfg = EmulatorConfig::default();
    cfg.limits.bucket_capacity = 10;
    cfg.limits.bucket_drain_per_sec = 20.0;
    let emu = Emulator::start(cfg).await.unwrap();
    let mirrored = Client::webhook(&emu.webhook_url())
        .unwrap()
        .limiter_config(LimiterConfig {
            capacity: 10.0,
            drain_per_sec: 20.0,
            ..quick_limiter()
        })
        .rate_limit_retries(0)
        .build()
        .unwrap();
    for _ in 0..40 {
        mirrored.call("user.get", json!({"FILTER": {"ID": 1}})).await.unwrap();
    }
    assert!(emu.requests().iter().all(|r| r.status != 503));

    emu.reset_limits();
    let careless = Client::webhook(&emu.webhook_url())
        .unwrap()
        .limiter_config(LimiterConfig {
            capacity: 1000.0,
            drain_per_sec: 1000.0,
            ..quick_limiter()
        })
        .rate_limit_retries(0)
        .build()
        .unwrap();
    let mut refused = None;
    for _ in 0..40 {
        if let Err(e) = careless.call("user.get", json!({"FILTER": {"ID": 1}})).await {
            refused = Some(e);
            break;
        }
    }
    assert!(
        matches!(refused, Some(Error::RateLimited { attempts: 1 })),
        "{refused:?}"
    );
    // After a refusal the mirror is full and paused: a worker can see that before sending.
    let budget = careless.budget();
    assert_eq!(budget.available_now, 0);
    assert!(budget.backoff_remaining.is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn auth_and_system_errors() {
    let p = portal().await;
    // Wrong webhook secret.
    let bad_hook = Client::webhook(&p.emu.webhook_url().replace("/rest/1/", "/rest/1/x"))
        .unwrap()
        .build()
        .unwrap();
    let e = bad_hook.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert!(!e.to_string().contains(&p.emu.app_credentials().client_secret));

    // Unknown method.
    let e = p.app.call("telephony.nonexistent", json!({})).await.unwrap_err();
    assert!(
        matches!(e, Error::Method { ref code, .. } if code == "ERROR_METHOD_NOT_FOUND"),
        "{e:?}"
    );

    // 5xx, HTML outage page, slow portal, closed port: all retryable, with distinct kinds.
    p.emu.set_fault(Fault::ServerError(502));
    let e = p.hook.call("user.get", json!({})).await.unwrap_err();
    assert!(
        matches!(e, Error::Server { status: 502, .. }) && e.is_retryable(),
        "{e:?}"
    );
    p.emu.set_fault(Fault::Unavailable);
    let e = p.hook.call("user.get", json!({})).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidResponse { status: 503, .. }) && e.is_retryable(),
        "{e:?}"
    );
    p.emu.set_fault(Fault::Slow(Duration::from_secs(3)));
    let impatient = Client::webhook(&p.emu.webhook_url())
        .unwrap()
        .timeouts(Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(300),
        })
        .build()
        .unwrap();
    let e = impatient.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)) && e.is_retryable(), "{e:?}");
    p.emu.set_fault(Fault::Down);
    let e = p.hook.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)) && e.is_retryable(), "{e:?}");
    p.emu.clear_fault();
    // The port reopens shortly after the fault is cleared.
    let mut back = Err(e);
    for _ in 0..100 {
        back = p.hook.call("user.get", json!({})).await;
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    back.unwrap();

    // Revoked app: REST says 401, the refresh is refused; the caller gets the refresh error.
    p.emu.set_fault(Fault::TokenRevoked);
    p.emu.clock().advance(Duration::from_secs(3601));
    let e = p.app.call("user.get", json!({})).await.unwrap_err();
    assert!(matches!(e, Error::TokenRefresh { .. } | Error::Auth { .. }), "{e:?}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn insufficient_scope() {
    let mut cfg = frozen();
    cfg.webhook.scope = vec!["crm".into()];
    let p = portal_with(cfg).await;
    let e = p
        .hook
        .send(&TaskAdd {
            fields: TaskFields {
                title: "x".into(),
                responsible_id: 1,
                ..Default::default()
            },
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Auth {
                kind: AuthErrorKind::InsufficientScope,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn operation_time_limit_from_the_portal() {
    let mut cfg = frozen();
    cfg.limits.operating.method_costs.insert("crm.lead.list".into(), 200.0);
    let p = portal_with(cfg).await;
    let mut outcome = Ok(());
    for _ in 0..5 {
        if let Err(e) = p.app.call("crm.lead.list", json!({})).await {
            outcome = Err(e);
            break;
        }
    }
    let e = outcome.unwrap_err();
    let Error::OperationTimeLimit { retry_after, .. } = e else {
        panic!("{e:?}")
    };
    assert!(retry_after > Duration::ZERO);
    assert!(p.app.budget().blocked_methods.iter().any(|(m, _)| m == "crm.lead.list"));
    // Other methods keep working.
    p.app.call("crm.lead.get", json!({"id": 1})).await.unwrap_err();
    p.app.call("user.get", json!({})).await.unwrap();
}
