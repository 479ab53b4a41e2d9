//! OAuth tokens and refresh, leaky bucket, operating limit, batch.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn refresh(emu: &b24emu::Emulator, refresh_token: &str) -> Answer {
    let c = emu.app_credentials();
    let url = format!(
        "{}?grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={refresh_token}",
        emu.oauth_url(),
        c.client_id,
        c.client_secret
    );
    let resp = reqwest::get(&url).await.expect("oauth request");
    let status = resp.status().as_u16();
    Answer {
        status,
        body: resp.json().await.expect("json"),
    }
}

#[tokio::test]
async fn access_token_expires_and_refresh_rotates_the_pair() {
    let mut cfg = frozen_config();
    cfg.app.access_token_lifetime_secs = 60;
    let emu = start(cfg).await;
    let creds = emu.app_credentials();
    assert_eq!(result(&app(&emu, "user.current", json!({})).await)["ID"], "1");

    emu.clock().advance(Duration::from_secs(61));
    let expired = app(&emu, "user.current", json!({})).await;
    assert_error(&expired, 401, "expired_token");
    assert_eq!(
        expired.body["error_description"],
        "The access token provided has expired"
    );

    let r = refresh(&emu, &creds.refresh_token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for key in [
        "access_token",
        "refresh_token",
        "expires",
        "expires_in",
        "client_endpoint",
        "server_endpoint",
        "domain",
        "member_id",
        "scope",
        "status",
        "user_id",
    ] {
        assert!(r.body.get(key).is_some(), "{key} in {}", r.body);
    }
    assert_eq!(r.body["expires_in"], 60);
    assert_eq!(r.body["client_endpoint"], format!("{}/rest/", emu.base_url()));
    assert_eq!(r.body["expires"], start_time().timestamp() + 61 + 60);
    let new_access = r.body["access_token"].as_str().expect("token").to_owned();
    let new_refresh = r.body["refresh_token"].as_str().expect("token").to_owned();
    assert_ne!(new_access, creds.access_token);
    assert_eq!(
        result(&app_with(&emu, &new_access, "user.current", json!({})).await)["ID"],
        "1"
    );

    // The old refresh token was consumed; the new one works.
    let reused = refresh(&emu, &creds.refresh_token).await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.body["error"], "invalid_grant");
    assert_eq!(refresh(&emu, &new_refresh).await.status, 200);

    // Wrong client secret.
    let url = format!(
        "{}?grant_type=refresh_token&client_id={}&client_secret=nope&refresh_token=x",
        emu.oauth_url(),
        creds.client_id
    );
    let resp = reqwest::get(&url).await.expect("oauth request");
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client");
    let grants: Vec<_> = emu.requests_for("oauth.token");
    assert_eq!(grants.len(), 4);
    emu.shutdown().await;
}

#[tokio::test]
async fn token_revoked_fault_rejects_tokens_webhook_and_refresh() {
    let emu = start(frozen_config()).await;
    let creds = emu.app_credentials();
    emu.set_fault(b24emu::Fault::TokenRevoked);
    assert_error(&app(&emu, "user.current", json!({})).await, 401, "invalid_token");
    assert_error(&hook(&emu, "user.current", json!({})).await, 401, "INVALID_CREDENTIALS");
    assert_eq!(refresh(&emu, &creds.refresh_token).await.body["error"], "invalid_grant");
    emu.clear_fault();
    assert_eq!(app(&emu, "user.current", json!({})).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn authorization_code_grant() {
    let emu = start(frozen_config()).await;
    let c = emu.app_credentials();
    let code = emu.issue_authorization_code(2);
    let url = format!(
        "{}?grant_type=authorization_code&client_id={}&client_secret={}&code={code}",
        emu.oauth_url(),
        c.client_id,
        c.client_secret
    );
    let body: Value = reqwest::get(&url).await.expect("req").json().await.expect("json");
    let token = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        result(&app_with(&emu, &token, "user.current", json!({})).await)["ID"],
        "2"
    );
    let again: Value = reqwest::get(&url).await.expect("req").json().await.expect("json");
    assert_eq!(again["error"], "invalid_grant", "codes are single-use");
    emu.shutdown().await;
}

#[tokio::test]
async fn leaky_bucket_refuses_the_51st_request_and_drains_at_2_per_second() {
    let emu = start(frozen_config()).await;
    for i in 0..50 {
        let a = hook(&emu, "scope", json!({})).await;
        assert_eq!(a.status, 200, "request {i}");
    }
    let refused = hook(&emu, "scope", json!({})).await;
    assert_error(&refused, 503, "QUERY_LIMIT_EXCEEDED");
    assert_eq!(refused.body["error_description"], "Too many requests");
    emu.clock().advance(Duration::from_secs(1));
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 200);
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 200);
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 503);
    // App and webhook share the portal's bucket.
    assert_eq!(app(&emu, "scope", json!({})).await.status, 503);
    emu.clock().advance(Duration::from_secs(30));
    assert!(emu.bucket_level() < 0.5);
    emu.shutdown().await;
}

#[tokio::test]
async fn leaky_bucket_is_configurable_and_storm_fault_overrides() {
    let mut cfg = frozen_config();
    cfg.limits.bucket_capacity = 250;
    cfg.limits.bucket_drain_per_sec = 5.0;
    let emu = start(cfg).await;
    for _ in 0..250 {
        assert_eq!(hook(&emu, "scope", json!({})).await.status, 200);
    }
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 503);
    emu.reset_limits();
    emu.set_fault(b24emu::Fault::RateLimitStorm);
    assert_error(&hook(&emu, "scope", json!({})).await, 503, "QUERY_LIMIT_EXCEEDED");
    emu.clear_fault();
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn method_error_fault_fails_only_its_method() {
    let emu = start(frozen_config()).await;
    emu.set_fault(b24emu::Fault::MethodError {
        method: "SCOPE".into(),
        status: 502,
    });
    assert_error(&hook(&emu, "scope", json!({})).await, 502, "INTERNAL_SERVER_ERROR");
    assert_eq!(hook(&emu, "user.current", json!({})).await.status, 200);
    emu.clear_fault();
    assert_eq!(hook(&emu, "scope", json!({})).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn operating_limit_blocks_one_method_until_reset() {
    let mut cfg = frozen_config();
    cfg.limits.operating.limit_secs = 10.0;
    cfg.limits.operating.method_costs.insert("crm.lead.list".into(), 4.0);
    let emu = start(cfg).await;
    for _ in 0..3 {
        assert_eq!(hook(&emu, "crm.lead.list", json!({})).await.status, 200);
    }
    let blocked = hook(&emu, "crm.lead.list", json!({})).await;
    assert_error(&blocked, 429, "OPERATION_TIME_LIMIT");
    assert_eq!(
        blocked.body["error_description"],
        "Method is blocked due to operation time limit."
    );
    assert_eq!(
        hook(&emu, "crm.contact.list", json!({})).await.status,
        200,
        "other methods keep working"
    );
    let last_ok = emu.requests_for("crm.lead.list")[2].response["time"].clone();
    assert_eq!(last_ok["operating"], 12.0);
    assert_eq!(last_ok["operating_reset_at"], start_time().timestamp() + 600);
    emu.clock().advance(Duration::from_secs(600));
    assert_eq!(hook(&emu, "crm.lead.list", json!({})).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn batch_runs_in_order_with_references() {
    let emu = start(frozen_config()).await;
    // Keys deliberately out of alphabetical order: commands must run in the order sent.
    let body = r#"{"cmd": {
        "z_lead": "crm.lead.add?fields[TITLE]=John%26Martin&fields[PHONE][0][VALUE]=555",
        "a_get": "crm.lead.get?id=$result[z_lead]",
        "m_users": "user.get?FILTER[UF_PHONE_INNER]=102",
        "b_title": "crm.lead.update?id=$result[z_lead]&fields[COMMENTS]=by $result[m_users][0][NAME]"
    }}"#;
    let a = post_raw_json(&format!("{}batch.json", emu.webhook_url()), body).await;
    let r = result(&a);
    assert_eq!(r["result"]["z_lead"], 1);
    assert_eq!(r["result"]["a_get"]["TITLE"], "John&Martin");
    assert_eq!(r["result"]["m_users"][0]["ID"], "2");
    assert_eq!(r["result"]["b_title"], true);
    assert_eq!(r["result_error"], json!([]));
    assert_eq!(r["result_total"], json!({"m_users": 1}));
    assert_eq!(r["result_next"], json!([]));
    let t = &r["result_time"]["a_get"];
    assert!(t["start"].is_number() && t["date_start"].is_string());
    assert!(t.get("operating").is_none(), "batch result_time lacks operating*");
    assert_eq!(emu.state().leads[0].field_str("COMMENTS").as_deref(), Some("by Boris"));
    // Sub-commands are recorded right after their batch.
    let methods: Vec<String> = emu.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(
        methods,
        ["batch", "crm.lead.add", "crm.lead.get", "user.get", "crm.lead.update"]
    );
    let parent = emu.requests()[0].seq;
    assert!(emu.requests()[1..].iter().all(|r| r.batch_parent == Some(parent)));
    emu.shutdown().await;
}

#[tokio::test]
async fn batch_form_encoding_double_encoded() {
    let emu = start(frozen_config()).await;
    // cmd[k]=crm.lead.add%3Ffields%5BTITLE%5D%3DJohn%2526Martin as in the documentation.
    let body = "cmd[k]=crm.lead.add%3Ffields%5BTITLE%5D%3DJohn%2526Martin&cmd[g]=crm.lead.get%3Fid%3D%24result%5Bk%5D";
    let a = post_form(&format!("{}batch.json", emu.webhook_url()), body).await;
    assert_eq!(result(&a)["result"]["g"]["TITLE"], "John&Martin");
    emu.shutdown().await;
}

#[tokio::test]
async fn batch_halt_errors_and_limits() {
    let emu = start(frozen_config()).await;
    let url = format!("{}batch.json", emu.webhook_url());
    let cmd = r#"{"ok": "user.current", "bad": "crm.lead.get?id=999", "after": "user.current"}"#;
    let no_halt = post_raw_json(&url, &format!(r#"{{"cmd": {cmd}, "halt": 0}}"#)).await;
    let r = result(&no_halt);
    assert_eq!(
        r["result_error"]["bad"],
        json!({"error": "", "error_description": "Not found"})
    );
    assert!(r["result"].get("after").is_some());
    let halted = post_raw_json(&url, &format!(r#"{{"cmd": {cmd}, "halt": true}}"#)).await;
    let r = result(&halted);
    assert!(r["result"].get("ok").is_some());
    assert!(r["result"].get("after").is_none(), "halt stops at the first error");
    assert!(r["result_time"].get("after").is_none());

    let nested = hook(
        &emu,
        "batch",
        json!({"cmd": {"n": "batch?cmd[x]=user.current", "m": "no.such.method"}}),
    )
    .await;
    let r = result(&nested);
    assert_eq!(r["result_error"]["n"]["error"], "ERROR_BATCH_METHOD_NOT_ALLOWED");
    assert_eq!(r["result_error"]["m"]["error"], "ERROR_METHOD_NOT_FOUND");
    assert_eq!(r["result"], json!([]));

    let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("c{i}"), json!("user.current"))).collect();
    let too_long = hook(&emu, "batch", json!({"cmd": many})).await;
    assert_error(&too_long, 400, "ERROR_BATCH_LENGTH_EXCEEDED");
    // A list of commands is keyed by position.
    let list = hook(&emu, "batch", json!({"cmd": ["user.current", "scope"]})).await;
    assert_eq!(result(&list)["result"]["0"]["ID"], "1");
    emu.shutdown().await;
}
