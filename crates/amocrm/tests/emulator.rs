//! The client against the amoCRM emulator over loopback: OAuth, limits, errors, pagination, and the shape of
//! every request as the emulator recorded it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amocrm::{
    CallStatus, Client, Direction, EntityType, Error, Integration, LimiterConfig, NewCall, NewComplexLead, NewContact,
    NewLead, NewTask, NewUnsortedSip, SipMetadata, Tokens, UnsortedEmbedded,
};
use amoemu::{AuthKind, Emulator, EmulatorConfig, Fault};
use serde_json::{json, Value};

type Saved = Arc<Mutex<Vec<Tokens>>>;

fn integration(emu: &Emulator) -> Integration {
    let cfg = emu.config();
    Integration::new(
        cfg.client_id.clone(),
        cfg.client_secret.clone(),
        cfg.redirect_uri.clone(),
    )
}

/// A client holding `tokens`, whose store records every pair it is given.
fn client_with(emu: &Emulator, tokens: Tokens) -> (Client, Saved) {
    let saved: Saved = Arc::default();
    let sink = Arc::clone(&saved);
    let store = move |t: &Tokens| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        sink.lock().unwrap().push(t.clone());
        Ok(())
    };
    let client = Client::oauth(&emu.base_url(), integration(emu), tokens)
        .token_store(Arc::new(store))
        .build()
        .unwrap();
    (client, saved)
}

/// A client with the integration's current pair (expiry unknown, as after a restart with an old store).
fn oauth_client(emu: &Emulator) -> (Client, Saved) {
    let (access, refresh) = emu.initial_tokens();
    client_with(emu, Tokens::new(access, refresh, None))
}

/// Runs `n` copies of `account()` at once and waits for them all to succeed.
async fn concurrent_account_requests(client: &Client, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.account().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// A client with the initial pair and its own limiter settings.
fn client_with_limiter(emu: &Emulator, limiter: LimiterConfig, retries: u32) -> Client {
    let (access, refresh) = emu.initial_tokens();
    Client::oauth(&emu.base_url(), integration(emu), Tokens::new(access, refresh, None))
        .limiter_config(limiter)
        .rate_limit_retries(retries)
        .build()
        .unwrap()
}

async fn start(cfg: EmulatorConfig) -> Emulator {
    Emulator::start(cfg).await.unwrap()
}

fn api_requests(emu: &Emulator) -> Vec<amoemu::RecordedRequest> {
    emu.requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect()
}

fn call(phone: &str, uniq: &str) -> NewCall {
    NewCall {
        direction: Direction::Inbound,
        uniq: Some(uniq.into()),
        duration: 148,
        source: "ringlink".into(),
        phone: phone.into(),
        link: Some("https://ringlink.example/records/1.mp3?sig=abc".into()),
        call_status: Some(CallStatus::Talked),
        call_result: Some("Разговор состоялся".into()),
        responsible_user_id: Some(8_000_002),
        created_by: Some(8_000_002),
        created_at: Some(1_700_000_000),
        request_id: None,
    }
}

#[tokio::test]
async fn code_exchange_saves_the_pair_then_uses_it() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, saved) = client_with(&emu, Tokens::default());
    let code = emu.issue_authorization_code();
    let tokens = client.exchange_code(&code).await.unwrap();
    assert_eq!(saved.lock().unwrap().as_slice(), std::slice::from_ref(&tokens));
    assert!(tokens.expires_at.is_some());
    let account = client.account().await.unwrap();
    assert_eq!(account.id, emu.config().account_id);
    let grant = &emu.requests_to("/oauth2/access_token")[0];
    assert_eq!(grant.body["grant_type"], "authorization_code");
    assert_eq!(grant.body["redirect_uri"], emu.config().redirect_uri.as_str());
    // A code is single use.
    let again = client.exchange_code(&code).await.unwrap_err();
    assert!(matches!(again, Error::TokenRefused { status: 401, .. }), "{again:?}");
}

#[tokio::test]
async fn expired_access_token_is_refreshed_once_and_the_old_refresh_token_is_dead() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, saved) = oauth_client(&emu);
    let (_, old_refresh) = emu.initial_tokens();
    emu.clock().advance(Duration::from_secs(86_400 + 1));
    client.account().await.unwrap();
    let statuses: Vec<(String, u16)> = emu.requests().iter().map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(
        statuses,
        [
            ("/api/v4/account".to_owned(), 401),
            ("/oauth2/access_token".to_owned(), 200),
            ("/api/v4/account".to_owned(), 200)
        ]
    );
    let new_pair = saved.lock().unwrap().clone();
    assert_eq!(new_pair.len(), 1);
    assert_ne!(new_pair[0].refresh_token.reveal(), old_refresh);
    // Whoever still holds the old pair is refused with the documented body.
    let (stale, _) = oauth_client(&emu);
    match stale.refresh_tokens().await {
        Err(Error::TokenRefused { status, problem }) => {
            assert_eq!(status, 401);
            assert_eq!(problem.hint, "Token has been revoked");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn concurrent_requests_with_an_expired_token_share_one_refresh() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, saved) = oauth_client(&emu);
    emu.clock().advance(Duration::from_secs(86_400 + 1));
    concurrent_account_requests(&client, 5).await;
    let grants = emu.requests_to("/oauth2/access_token");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(saved.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_known_expiry_refreshes_before_sending() {
    let emu = start(EmulatorConfig::default()).await;
    let (access, refresh) = emu.initial_tokens();
    let (client, saved) = client_with(&emu, Tokens::new(access, refresh, Some(0)));
    client.account().await.unwrap();
    let paths: Vec<String> = emu.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/oauth2/access_token", "/api/v4/account"]);
    assert_eq!(saved.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_pair_that_cannot_be_saved_is_never_used_until_it_is() {
    let emu = start(EmulatorConfig::default()).await;
    let (access, refresh) = emu.initial_tokens();
    let store_works = Arc::new(Mutex::new(false));
    let saved: Saved = Arc::default();
    let (works, sink) = (Arc::clone(&store_works), Arc::clone(&saved));
    let store = move |t: &Tokens| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if !*works.lock().unwrap() {
            return Err("disk full".into());
        }
        sink.lock().unwrap().push(t.clone());
        Ok(())
    };
    let client = Client::oauth(
        &emu.base_url(),
        integration(&emu),
        Tokens::new(access, refresh, Some(0)),
    )
    .token_store(Arc::new(store))
    .build()
    .unwrap();
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, Error::TokenPersist(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(api_requests(&emu).is_empty(), "the unsaved pair went out");
    // The next request saves the same pair first (no second refresh: the first one spent the old token).
    *store_works.lock().unwrap() = true;
    client.account().await.unwrap();
    assert_eq!(emu.requests_to("/oauth2/access_token").len(), 1);
    let current = client.tokens().await.unwrap();
    assert_eq!(saved.lock().unwrap().as_slice(), [current]);
    assert_eq!(api_requests(&emu).len(), 1);
}

#[tokio::test]
async fn long_lived_token_needs_no_refresh_and_its_expiry_is_a_plain_401() {
    let start_at = 1_800_000_000;
    let emu = start(EmulatorConfig {
        long_lived_token: Some("long-lived-jwt".into()),
        long_lived_expires_at: start_at + 100,
        clock_start: Some(start_at),
        clock_frozen: true,
        ..EmulatorConfig::default()
    })
    .await;
    let client = Client::long_lived(&emu.base_url(), "long-lived-jwt").build().unwrap();
    client.account().await.unwrap();
    assert_eq!(emu.requests()[0].auth, AuthKind::LongLived);
    emu.clock().advance(Duration::from_secs(200));
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(emu.requests_to("/oauth2/access_token").is_empty());
}

#[tokio::test]
async fn the_limiter_keeps_a_burst_under_seven_per_second() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    concurrent_account_requests(&client, 15).await;
    let requests = emu.requests();
    assert_eq!(requests.len(), 15);
    assert!(
        requests.iter().all(|r| r.status == 200),
        "the emulator refused some: {requests:?}"
    );
}

#[tokio::test]
async fn answers_429_are_retried_after_a_pause() {
    let emu = start(EmulatorConfig::default()).await;
    // A limiter that does not know the limit: the emulator's 429s must be absorbed by the back-off.
    let limiter = LimiterConfig {
        per_window: 100,
        backoff_initial: Duration::from_millis(300),
        ..LimiterConfig::default()
    };
    let client = client_with_limiter(&emu, limiter, 5);
    for _ in 0..10 {
        client.account().await.unwrap();
    }
    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10);
}

#[tokio::test]
async fn a_429_storm_ends_in_rate_limited_after_the_retries() {
    let emu = start(EmulatorConfig::default()).await;
    let limiter = LimiterConfig {
        backoff_initial: Duration::from_millis(20),
        ..LimiterConfig::default()
    };
    let client = client_with_limiter(&emu, limiter, 2);
    emu.set_fault(Some(Fault::RateLimitStorm));
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { attempts: 3 }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(emu.requests().len(), 3);
    emu.set_fault(None);
    client.account().await.unwrap();
}

#[tokio::test]
async fn the_ip_block_stops_sending_until_resumed() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    emu.set_fault(Some(Fault::IpBlocked));
    let err = client.account().await.unwrap_err();
    assert!(matches!(err, Error::IpBlocked), "{err:?}");
    assert!(!err.is_retryable());
    emu.set_fault(None);
    assert!(matches!(client.account().await, Err(Error::IpBlocked)));
    assert_eq!(emu.requests().len(), 1, "nothing is sent while blocked");
    client.resume();
    client.account().await.unwrap();
}

/// Blocked, the client sends nothing but a probe after the first interval, then after twice as long; once amoCRM
/// answers the probe with anything but the 403 page, everything is sent again.
#[tokio::test]
async fn the_ip_block_is_probed_at_doubling_intervals_and_lifted_by_an_answer() {
    let emu = start(EmulatorConfig::default()).await;
    let limiter = LimiterConfig {
        block_probe_initial: Duration::from_millis(400),
        block_probe_max: Duration::from_millis(800),
        ..LimiterConfig::default()
    };
    let client = client_with_limiter(&emu, limiter, 5);
    emu.set_fault(Some(Fault::IpBlocked));
    assert!(matches!(client.account().await, Err(Error::IpBlocked)));
    assert!(client.blocked_since().is_some());
    // Asked every 50 ms for 1.5 s: the probes go at ≈0.4 s and ≈1.2 s (0.8 s later), nothing else is sent.
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1_500) {
        assert!(matches!(client.account().await, Err(Error::IpBlocked)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(emu.requests().len(), 3, "the first 403 and two probes");
    emu.set_fault(None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let answered = loop {
        match client.account().await {
            Ok(account) => break account,
            Err(Error::IpBlocked) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(answered.id > 0);
    assert!(client.blocked_since().is_none(), "the probe's answer lifted the block");
    assert_eq!(emu.requests().len(), 4, "the successful probe");
    client.account().await.unwrap();
    assert_eq!(emu.requests().len(), 5, "and everything after it");
}

#[tokio::test]
async fn lists_follow_next_links_and_an_empty_page_ends_them() {
    let emu = start(EmulatorConfig {
        next_on_last_page: true,
        ..EmulatorConfig::default()
    })
    .await;
    let (client, _) = oauth_client(&emu);
    let users: Vec<amocrm::User> = client.list_all("/api/v4/users", &[], "users", 2).await.unwrap();
    assert_eq!(
        users.iter().map(|u| u.id).collect::<Vec<_>>(),
        [8_000_001, 8_000_002, 8_000_003]
    );
    let pages: Vec<(Option<String>, u16)> = emu
        .requests()
        .iter()
        .map(|r| (r.query_param("page").map(str::to_owned), r.status))
        .collect();
    assert_eq!(
        pages,
        [
            (Some("1".into()), 200),
            (Some("2".into()), 200),
            (Some("3".into()), 204)
        ]
    );
    assert!(client.users().await.unwrap().iter().any(|u| u.rights.is_admin));
}

#[tokio::test]
async fn contact_search_by_phone_uses_the_last_ten_digits() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let found = client.contacts_by_phone("8 912 345 67 89").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, 9_000_001);
    assert_eq!(found[0].embedded.leads[0].id, 9_500_001);
    let search = &emu.requests_to("/api/v4/contacts")[0];
    assert_eq!(search.query_param("query"), Some("9123456789"));
    assert_eq!(search.query_param("with"), Some("leads"));
    // Nothing found is a 204 without a body.
    assert!(client.contacts_by_phone("+7 999 000-00-00").await.unwrap().is_empty());
    assert_eq!(emu.requests_to("/api/v4/contacts")[1].status, 204);
}

#[tokio::test]
async fn a_call_is_sent_as_documented_and_attached_to_the_contacts_only_lead() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let added = client.add_calls(&[call("89123456789", "1700000000.1")]).await.unwrap();
    assert_eq!(
        (added[0].entity_type.as_str(), added[0].entity_id),
        ("leads", 9_500_001)
    );
    let sent = &emu.requests_to("/api/v4/calls")[0];
    assert_eq!(
        sent.body,
        json!([{"direction":"inbound","uniq":"1700000000.1","duration":148,"source":"ringlink","phone":"89123456789",
                "link":"https://ringlink.example/records/1.mp3?sig=abc","call_status":4,"call_result":"Разговор состоялся",
                "responsible_user_id":8_000_002,"created_by":8_000_002,"created_at":1_700_000_000}])
    );
    // amoCRM does not deduplicate: the same uniq twice is two calls (ringlink's outbox must send it once).
    client.add_calls(&[call("89123456789", "1700000000.1")]).await.unwrap();
    assert_eq!(emu.state().calls.len(), 2);
}

#[tokio::test]
async fn a_call_from_an_unknown_number_is_refused_as_entity_not_found() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let err = client.add_calls(&[call("+7 999 000-00-00", "u-1")]).await.unwrap_err();
    assert!(err.is_entity_not_found(), "{err:?}");
    assert!(!err.is_retryable());
    assert!(emu.state().calls.is_empty());
}

#[tokio::test]
async fn validation_errors_come_back_typed() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let task = NewTask {
        text: String::new(),
        complete_till: 1_700_000_000,
        task_type_id: amocrm::TASK_TYPE_CALL,
        entity_type: None,
        entity_id: None,
        responsible_user_id: None,
        request_id: None,
    };
    match client.add_tasks(&[task]).await {
        Err(Error::Api { status, problem, .. }) => {
            assert_eq!(status, 400);
            assert_eq!(problem.detail, "Request validation failed");
            assert_eq!(problem.validation_errors[0].errors[0].path, "text");
            assert_eq!(problem.validation_errors[0].errors[0].code, "NotBlank");
        }
        other => panic!("{other:?}"),
    }
    emu.set_fault(Some(Fault::ServerError(500)));
    let err = client.account().await.unwrap_err();
    assert!(
        matches!(err, Error::Server { status: 500, .. }) && err.is_retryable(),
        "{err:?}"
    );
}

#[tokio::test]
async fn users_need_an_administrator_and_say_so_without_blocking_the_client() {
    let emu = start(EmulatorConfig {
        installed_by_admin: false,
        ..EmulatorConfig::default()
    })
    .await;
    let (client, _) = oauth_client(&emu);
    let err = client.users().await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 403, .. }), "{err:?}");
    client.account().await.unwrap();
}

#[tokio::test]
async fn an_unknown_caller_goes_to_unsorted_in_the_chosen_pipeline() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let entry = NewUnsortedSip {
        source_uid: "ringlink-trunk-opt".into(),
        source_name: "ringlink".into(),
        pipeline_id: Some(7_000_002),
        created_at: Some(1_700_000_000),
        request_id: None,
        metadata: SipMetadata {
            uniq: Some("1700000000.7".into()),
            from: "+79990001122".into(),
            phone: "+74950000000".into(),
            called_at: 1_700_000_000,
            duration: 0,
            link: None,
            service_code: "ringlink".into(),
            is_call_event_needed: Some(true),
            call_responsible: Some(8_000_003),
        },
        embedded: UnsortedEmbedded {
            leads: vec![NewLead {
                name: Some("Звонок с +79990001122".into()),
                price: None,
            }],
            contacts: vec![NewContact::with_phone("+79990001122", "+79990001122")],
        },
    };
    let added = client.add_unsorted_sip(std::slice::from_ref(&entry)).await.unwrap();
    let lead_id = added[0].embedded.leads[0].id;
    let sent = &emu.requests_to("/api/v4/leads/unsorted/sip")[0];
    assert_eq!(sent.body[0]["pipeline_id"], 7_000_002);
    assert_eq!(sent.body[0]["metadata"]["from"], "+79990001122");
    assert_eq!(
        sent.body[0]["_embedded"]["contacts"][0]["custom_fields_values"][0],
        json!({"field_code":"PHONE","values":[{"value":"+79990001122","enum_code":"WORK"}]})
    );
    let state = emu.state();
    let lead = state.leads.iter().find(|l| l.id == lead_id).unwrap();
    assert_eq!((lead.pipeline_id, lead.status_id), (7_000_002, 7_200_001));
    // The contact stays hidden until the entry is accepted; a second identical entry is refused.
    assert!(client.contacts_by_phone("+79990001122").await.unwrap().is_empty());
    let err = client.add_unsorted_sip(&[entry]).await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 400, .. }), "{err:?}");
}

#[tokio::test]
async fn complex_add_creates_the_lead_with_its_contact() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let mut contact = NewContact::with_phone("Новый клиент", "+79990003344");
    contact.responsible_user_id = Some(8_000_003);
    let added = client
        .add_complex(&[NewComplexLead {
            name: Some("Входящий звонок".into()),
            pipeline_id: Some(7_000_001),
            responsible_user_id: Some(8_000_003),
            embedded: amocrm::ComplexEmbedded {
                contacts: vec![contact],
            },
            ..Default::default()
        }])
        .await
        .unwrap();
    let contact_id = added[0].contact_id.unwrap();
    assert!(!added[0].merged);
    let found = client.contacts_by_phone("89990003344").await.unwrap();
    assert_eq!(found.iter().map(|c| c.id).collect::<Vec<_>>(), [contact_id]);
    assert_eq!(found[0].embedded.leads[0].id, added[0].id);
    let sent = &emu.requests_to("/api/v4/leads/complex")[0];
    assert_eq!(
        sent.body[0]["_embedded"]["contacts"][0]["responsible_user_id"],
        8_000_003
    );
}

#[tokio::test]
async fn a_missed_call_task_is_a_call_task_bound_to_the_contact() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let added = client
        .add_tasks(&[NewTask {
            text: "Перезвонить: пропущенный звонок с +79123456789".into(),
            complete_till: 1_700_003_600,
            task_type_id: amocrm::TASK_TYPE_CALL,
            entity_type: Some(EntityType::Contacts),
            entity_id: Some(9_000_001),
            responsible_user_id: Some(8_000_002),
            request_id: Some("missed-1".into()),
        }])
        .await
        .unwrap();
    assert_eq!(added[0].request_id, "missed-1");
    let sent = &emu.requests_to("/api/v4/tasks")[0];
    assert_eq!(
        sent.body,
        json!([{"text":"Перезвонить: пропущенный звонок с +79123456789","complete_till":1_700_003_600,"task_type_id":1,
                "entity_type":"contacts","entity_id":9_000_001,"responsible_user_id":8_000_002,"request_id":"missed-1"}])
    );
    assert_eq!(emu.state().tasks.len(), 1);
}

#[tokio::test]
async fn the_popup_goes_to_the_named_users_with_the_contact_found() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    client
        .show_call_popup("+79123456789", &[8_000_002, 8_000_003])
        .await
        .unwrap();
    client.show_call_popup("+79990009999", &[]).await.unwrap();
    let popups = emu.popups();
    assert_eq!(popups.len(), 2);
    assert_eq!(popups[0].users, Some(vec![8_000_002, 8_000_003]));
    assert_eq!(popups[0].contact_id, Some(9_000_001));
    assert_eq!((popups[1].users.clone(), popups[1].contact_id), (None, None));
    let sent = &emu.requests_to("/api/v2/events")[0];
    assert_eq!(
        sent.body,
        json!({"add":[{"type":"phone_call","phone_number":"+79123456789","users":[8_000_002, 8_000_003]}]})
    );
    assert_eq!(sent.status, 202);
}

#[tokio::test]
async fn pipelines_come_with_their_statuses() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    let pipelines = client.pipelines().await.unwrap();
    assert_eq!(
        pipelines.iter().map(|p| p.id).collect::<Vec<_>>(),
        [7_000_001, 7_000_002]
    );
    for p in &pipelines {
        let unsorted: Vec<u64> = p.statuses().iter().filter(|s| s.kind == 1).map(|s| s.id).collect();
        assert_eq!(unsorted.len(), 1, "{p:?}");
        assert!(p.statuses().iter().any(|s| s.id == 142));
    }
    assert!(pipelines[0].is_main && pipelines[0].is_unsorted_on);
}

#[tokio::test]
async fn a_down_account_is_a_retryable_transport_error_and_comes_back() {
    let emu = start(EmulatorConfig::default()).await;
    let (client, _) = oauth_client(&emu);
    emu.set_fault(Some(Fault::Down));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = client.account().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    emu.set_fault(None);
    let mut last = Err(err);
    for _ in 0..50 {
        last = client.account().await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last.unwrap();
    let value: Value = serde_json::to_value(emu.requests().last().map(|r| r.status)).unwrap();
    assert_eq!(value, json!(200));
}
