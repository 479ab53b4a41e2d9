//! `ringlink run` with its store in PostgreSQL (`[store] url`, `tenant`): calls on the real test bed are
//! registered in the emulator as with SQLite, and a ringlink killed while a call rings and started again
//! registers that call once, with its card and its finish. Two instances of one tenant are active and standby:
//! the standby takes a ringing call over when the active is killed or paused past its lease, and a deposed
//! leader writes nothing and steps down. Two tenants in one database never see each other's calls.

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

/// The `[store]` section of an instance of `tenant`, with a short lease so that the test does not wait long.
fn shared_store(url: &str, tenant: &str) -> String {
    format!("url = \"{url}\"\ntenant = \"{tenant}\"\nlease_secs = 3\nrenew_secs = 0.5")
}

const STANDBY: &str = "standby: another instance leads";
const TOOK: &str = "took the lease";

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a process id");
    // SAFETY: kill(2) with a process id this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
}

async fn web_status(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/status"))
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("status JSON")
}

/// The instance named in the other's `/status` as the leader.
async fn leader_seen_by(standby_port: u16) -> String {
    let status = web_status(standby_port).await;
    assert_eq!(status["store"]["role"], "standby", "{status}");
    status["store"]["leader"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_standby_takes_ringing_calls_over_from_a_killed_or_paused_leader_and_each_is_registered_once() {
    let (server, url) = start_postgres();
    let mut e2e = E2e::start_custom(Setup {
        store: Some(shared_store(&url, "office")),
        ..Setup::default()
    })
    .await;
    e2e.wait_log(TOOK, WAIT).await;
    let mut second = e2e.spawn_instance("second");
    second.wait_log_after(STANDBY, 0, WAIT).await;
    let first_status = web_status(e2e.web_port).await;
    assert_eq!(first_status["store"]["role"], "leader", "{first_status}");
    assert_eq!(first_status["store"]["backend"], "postgresql");
    assert_eq!(first_status["store"]["tenant"], "office");
    assert_eq!(first_status["store"]["generation"], 1);
    let first_name = first_status["store"]["instance"].as_str().expect("instance").to_owned();
    assert_eq!(leader_seen_by(second.web_port).await, first_name);
    let second_status = web_status(second.web_port).await;
    assert_eq!(
        second_status["app_status"], "Ok",
        "a standby without AMI is fine: {second_status}"
    );

    // 1. kill -9 the leader while a call rings: the standby takes over and finishes the call.
    e2e.bed.route_incoming(Route::Extension(101)).await.expect("route");
    e2e.bed
        .phone(101)
        .answer_after(Duration::from_secs(8))
        .await
        .expect("phone 101");
    let mut call = e2e
        .bed
        .incoming(CLIENT)
        .talk(Duration::from_secs(2))
        .await
        .expect("call");
    e2e.bed.wait_phone_ringing(101, WAIT).await.expect("101 rings");
    e2e.wait_requests("telephony.externalcall.register", 1, WAIT).await;
    e2e.kill_ringlink();
    second.wait_log_after(TOOK, 0, WAIT).await;
    second.wait_log_after("live calls resynchronised", 0, WAIT).await;
    call.finished(WAIT).await.expect("the call ends");
    e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    second.wait_log_after("call ended", 0, WAIT).await;
    e2e.settle(Duration::from_secs(3)).await;

    // 2. The old leader comes back: it stays the standby.
    let standbys = e2e.log().matches(STANDBY).count();
    e2e.spawn_ringlink();
    e2e.wait_log_after(STANDBY, standbys, WAIT).await;
    let second_status = web_status(second.web_port).await;
    assert_eq!(second_status["store"]["role"], "leader", "{second_status}");
    assert_eq!(second_status["store"]["generation"], 2);
    let second_name = second_status["store"]["instance"]
        .as_str()
        .expect("instance")
        .to_owned();
    assert_eq!(leader_seen_by(e2e.web_port).await, second_name);

    // 3. The leader is paused (as by a stall or a cut network) past its lease while a call rings: the first
    //    instance takes over; when the paused one wakes, its writes are refused and it steps down.
    e2e.bed.route_incoming(Route::Extension(102)).await.expect("route");
    e2e.bed
        .phone(102)
        .answer_after(Duration::from_secs(10))
        .await
        .expect("phone 102");
    let mut call = e2e
        .bed
        .incoming(CLIENT)
        .talk(Duration::from_secs(2))
        .await
        .expect("call");
    e2e.bed.wait_phone_ringing(102, WAIT).await.expect("102 rings");
    e2e.wait_requests("telephony.externalcall.register", 2, WAIT).await;
    let paused = second.pid().expect("the leader runs");
    signal(paused, libc::SIGSTOP);
    let took = e2e.log().matches(TOOK).count();
    let resyncs = e2e.log().matches("live calls resynchronised").count();
    e2e.wait_log_after(TOOK, took, WAIT).await;
    e2e.wait_log_after("live calls resynchronised", resyncs, WAIT).await;
    signal(paused, libc::SIGCONT);
    let exit = second.wait_exit(WAIT).await;
    assert!(
        !exit.success(),
        "a deposed leader ends with an error for its service manager to restart it"
    );
    assert!(second.log().contains("stepping down"), "{}", second.log());
    call.finished(WAIT).await.expect("the call ends");
    e2e.wait_requests("telephony.externalcall.finish", 2, WAIT).await;
    e2e.settle(Duration::from_secs(3)).await;

    let seq = e2e.telephony();
    let registers: Vec<_> = seq.iter().filter(|r| r.method.ends_with(".register")).collect();
    assert_eq!(registers.len(), 2, "each call registered once:\n{}", e2e.describe());
    let finishes: Vec<_> = seq.iter().filter(|r| r.method.ends_with(".finish")).collect();
    assert_eq!(finishes.len(), 2, "each call finished once:\n{}", e2e.describe());
    for (register, user) in registers.iter().zip(["1", "2"]) {
        let finish = finishes
            .iter()
            .find(|f| text(f, "CALL_ID") == call_id(register))
            .unwrap_or_else(|| panic!("the call of {user} is finished:\n{}", e2e.describe()));
        assert_eq!(text(finish, "USER_ID"), user, "{}", e2e.describe());
        assert_eq!(text(finish, "STATUS_CODE"), "200", "{}", e2e.describe());
    }
    Seen::check(&e2e);
    let status = web_status(e2e.web_port).await;
    assert_eq!(status["store"]["role"], "leader", "{status}");
    assert_eq!(status["store"]["generation"], 3);
    let leases = server
        .psql("ringlink", "SELECT generation FROM leases WHERE tenant = 'office'")
        .expect("the lease");
    assert_eq!(leases.trim(), "3");
    e2e.stop().await;
    drop(second);
    drop(server);
}

/// Two PBX ⇄ portal pairs on one database, each with its own ringlink: each call reaches its own portal only.
#[tokio::test]
async fn two_tenants_on_one_database_each_register_only_their_own_calls() {
    let (server, url) = start_postgres();
    let north = E2e::start_custom(Setup {
        store: Some(shared_store(&url, "north")),
        ..Setup::default()
    })
    .await;
    let south = E2e::start_custom(Setup {
        store: Some(shared_store(&url, "south")),
        ..Setup::default()
    })
    .await;
    for (office, extension) in [(&north, 101), (&south, 102)] {
        office.wait_log(TOOK, WAIT).await;
        office
            .bed
            .route_incoming(Route::Extension(extension))
            .await
            .expect("route");
        office
            .bed
            .phone(extension)
            .answer_after(Duration::from_secs(1))
            .await
            .expect("phone");
    }
    let mut north_call = north
        .bed
        .incoming(CLIENT)
        .talk(Duration::from_secs(2))
        .await
        .expect("call");
    let mut south_call = south
        .bed
        .incoming(CLIENT)
        .talk(Duration::from_secs(2))
        .await
        .expect("call");
    north_call.finished(WAIT).await.expect("north's call ends");
    south_call.finished(WAIT).await.expect("south's call ends");
    for (office, user, tenant) in [(&north, "1", "north"), (&south, "2", "south")] {
        office.wait_calls_ended(1, Duration::from_secs(3)).await;
        let seq = office.telephony();
        let registers: Vec<_> = seq.iter().filter(|r| r.method.ends_with(".register")).collect();
        assert_eq!(registers.len(), 1, "{tenant}: its call only:\n{}", office.describe());
        assert_eq!(text(registers[0], "USER_ID"), user, "{tenant}:\n{}", office.describe());
        let finish = seq.iter().find(|r| r.method.ends_with(".finish")).expect("finished");
        assert_eq!(text(finish, "USER_ID"), user, "{tenant}:\n{}", office.describe());
        Seen::check(office);
        let status = web_status(office.web_port).await;
        assert_eq!(status["store"]["tenant"], tenant, "{status}");
        assert_eq!(status["store"]["role"], "leader", "{status}");
        let rows = server
            .psql(
                "ringlink",
                &format!("SELECT count(DISTINCT call_key) FROM steps WHERE tenant = '{tenant}' AND kind = 'register'"),
            )
            .expect("count");
        assert_eq!(rows.trim(), "1", "{tenant}");
    }
    let leases = server
        .psql("ringlink", "SELECT tenant, generation FROM leases ORDER BY tenant")
        .expect("the leases");
    assert!(leases.contains("north|1") && leases.contains("south|1"), "{leases}");
    north.stop().await;
    south.stop().await;
    drop(server);
}
