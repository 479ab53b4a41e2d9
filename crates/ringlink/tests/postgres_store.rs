//! `ringlink run` with its store in PostgreSQL (`[store] url`, `tenant`): calls on the real test bed are
//! registered in the emulator as with SQLite, and a ringlink killed while a call rings and started again
//! registers that call once, with its card and its finish.

mod e2e {
    #[allow(dead_code)] // shared with the scenario tests; these use a part of it
    pub mod checks;
    #[allow(dead_code)]
    pub mod harness;
}

use std::time::Duration;

use e2e::checks::Seen;
use e2e::harness::{call_id, methods, text, E2e, Setup, WAIT};
use testbed::postgres::Postgres;
use testbed::{Route, CLIENT};

/// On the test's thread: the server stops when the thread that started it ends.
fn start_postgres() -> (Postgres, String) {
    let server = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database("ringlink").expect("create the database");
    (server, url)
}

#[tokio::test]
async fn killed_while_a_call_rings_registers_it_once_from_the_postgresql_store() {
    let (server, url) = start_postgres();
    let mut e2e = E2e::start_custom(Setup {
        store: Some(format!("url = \"{url}\"\ntenant = \"office\"")),
        ..Setup::default()
    })
    .await;
    assert!(
        e2e.log().contains("tenant office"),
        "the log names the store:\n{}",
        e2e.log()
    );
    e2e.bed.route_incoming(Route::Extension(101)).await.expect("route");
    e2e.bed
        .phone(101)
        .answer_after(Duration::from_secs(6))
        .await
        .expect("phone 101");
    let mut call = e2e
        .bed
        .incoming(CLIENT)
        .talk(Duration::from_secs(3))
        .await
        .expect("call");
    e2e.bed.wait_phone_ringing(101, WAIT).await.expect("101 rings");
    e2e.wait_requests("telephony.externalcall.register", 1, WAIT).await;
    e2e.kill_ringlink();
    let resyncs = e2e.log().matches("live calls resynchronised").count();
    e2e.start_ringlink().await;
    e2e.wait_log_after("live calls resynchronised", resyncs, WAIT).await;
    call.finished(WAIT).await.expect("the call ends");
    e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    e2e.wait_calls_ended(1, Duration::from_secs(4)).await;

    let seq = e2e.telephony();
    let registers: Vec<_> = seq.iter().filter(|r| r.method.ends_with(".register")).collect();
    assert_eq!(registers.len(), 1, "registered once:\n{}", e2e.describe());
    let finish = seq.iter().find(|r| r.method.ends_with(".finish")).expect("finished");
    assert_eq!(text(finish, "CALL_ID"), call_id(registers[0]));
    assert_eq!(text(finish, "USER_ID"), "1");
    assert_eq!(text(finish, "STATUS_CODE"), "200", "{}", e2e.describe());
    assert!(methods(&seq).contains(&"finish".to_owned()));
    Seen::check(&e2e);

    // The rows are the tenant's, in PostgreSQL.
    let steps = server
        .psql(
            "ringlink",
            "SELECT count(*) FROM steps WHERE tenant = 'office' AND kind = 'register'",
        )
        .expect("count");
    assert_eq!(steps.trim(), "1");
    e2e.stop().await;
    drop(server);
}
