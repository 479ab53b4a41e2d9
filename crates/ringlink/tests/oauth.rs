//! ringlink as a Bitrix24 local application: short-lived access tokens are refreshed, the rotated tokens are
//! kept in the store, and a restarted ringlink carries on with them (Bitrix24 invalidates a refresh token once
//! it is used, so the tokens in the config file are dead by then).

#[path = "e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use b24emu::{AuthMode, EmulatorConfig};
use harness::{E2e, WAIT};
use store::Store;
use testbed::scenarios;

#[tokio::test]
async fn app_tokens_are_refreshed_persisted_and_used_after_a_restart() {
    let mut emu_config = EmulatorConfig::default();
    // The access token dies during the first call, so the worker must refresh mid-call.
    emu_config.app.access_token_lifetime_secs = 3;
    let mut e2e = E2e::start_as_app(emu_config, "").await;
    let initial = e2e.emu.app_credentials();

    scenarios::play(&e2e.bed, "s1").await.expect("play S1");
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    let refreshes = e2e.emu.requests_for("oauth.token");
    assert!(
        !refreshes.is_empty(),
        "the expired access token was refreshed:\n{}",
        e2e.describe()
    );
    assert!(
        e2e.telephony()
            .iter()
            .filter(|r| r.is_ok())
            .all(|r| matches!(r.auth, AuthMode::OAuth { .. })),
        "every telephony call went as the application:\n{}",
        e2e.describe()
    );

    // The rotated pair is in the store, not only in memory.
    let db = e2e.dir.path().join("ringlink.db");
    let saved = store::SqliteStore::open(&db)
        .expect("open the store")
        .load_tokens(&e2e.emu.base_url())
        .expect("read tokens")
        .expect("tokens saved after the refresh");
    assert_ne!(
        saved.refresh_token, initial.refresh_token,
        "a rotated refresh token was saved"
    );

    // Restart after the access token has expired again: only the saved refresh token can get a new one.
    e2e.kill_ringlink();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let resyncs = e2e.log().matches("live calls resynchronised").count();
    e2e.start_ringlink().await;
    e2e.wait_log_after("live calls resynchronised", resyncs, WAIT).await;
    scenarios::play(&e2e.bed, "s1").await.expect("play S1 again");
    let registers = e2e.wait_requests("telephony.externalcall.register", 2, WAIT).await;
    assert_eq!(registers.len(), 2, "{}", e2e.describe());
    e2e.wait_requests("telephony.externalcall.finish", 2, WAIT).await;
    let used_initial = e2e.emu.requests_for("oauth.token").iter().any(|r| {
        r.param("refresh_token").and_then(|v| v.as_str()) == Some(initial.refresh_token.as_str()) && !r.is_ok()
    });
    assert!(
        !used_initial,
        "the dead refresh token from the config was not tried after the restart"
    );
    e2e.stop().await;
}
