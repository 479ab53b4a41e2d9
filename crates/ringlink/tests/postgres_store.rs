//! `ringlink run` with its store in PostgreSQL (`[store] url`, `tenant`): calls on the real test bed are
//! registered in the emulator as with SQLite, and a ringlink killed while a call rings and started again
//! registers that call once, with its card and its finish. Two instances of one tenant are active and standby:
//! the standby takes a ringing call over when the active is killed, paused past its lease or cut off from the
//! database, and a deposed leader writes nothing and steps down. Two tenants in one database never see each
//! other's calls.

mod e2e {
    #[allow(dead_code)] // shared with the scenario tests; these use a part of it
    pub mod checks;
    #[allow(dead_code)]
    pub mod harness;
    pub mod relay;
}

use std::time::Duration;

use chrono::{DateTime, Utc};

use e2e::checks::Seen;
use e2e::harness::{text, E2e, Instance, Setup, WAIT};
use e2e::relay::Relay;
use testbed::postgres::Postgres;
use testbed::{Call, Route, CLIENT};

/// On the test's thread: the server stops when the thread that started it ends.
fn start_postgres() -> (Postgres, String) {
    let server = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database("ringlink").expect("create the database");
    (server, url)
}

/// A call from the client that `extension` answers after `ring` and talks for `talk`, once the extension rings
/// and ringlink has registered it as the test's `nth` call.
async fn ringing_call(e2e: &E2e, extension: u16, ring: Duration, talk: Duration, nth: usize) -> Call {
    e2e.bed
        .route_incoming(Route::Extension(extension))
        .await
        .expect("route");
    e2e.bed.phone(extension).answer_after(ring).await.expect("the phone");
    let call = e2e.bed.incoming(CLIENT).talk(talk).await.expect("call");
    e2e.bed
        .wait_phone_ringing(extension, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{extension} rings: {e}"));
    e2e.wait_registered_calls(nth, WAIT).await;
    call
}

/// The calls, in order, each registered once and finished once, answered, by its user in `users`; and the shared
/// checks. A leader that takes over (or restarts) sends again a register that was sent but not recorded as done:
/// with the same EXTERNAL_CALL_ID, Bitrix24 answers the same CALL_ID, so it is still one call. Two CALL_IDs for
/// one EXTERNAL_CALL_ID, or two EXTERNAL_CALL_IDs for one call, are two calls in Bitrix24 and fail.
fn assert_each_call_once(e2e: &E2e, users: &[u64]) -> Seen {
    for (external, ids) in e2e.registered_calls() {
        assert_eq!(
            ids.len(),
            1,
            "EXTERNAL_CALL_ID {external} registered as several calls {ids:?}:\n{}",
            e2e.describe()
        );
    }
    let seen = Seen::check_despite_faults(e2e);
    assert_eq!(
        seen.registrations.len(),
        users.len(),
        "each call registered once:\n{}",
        seen.described
    );
    for (registration, user) in seen.registrations.iter().zip(users) {
        assert_eq!(registration.finish_user(), *user, "{}", seen.described);
        assert_eq!(registration.status(), "200", "{}", seen.described);
    }
    seen
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
    let mut call = ringing_call(&e2e, 101, Duration::from_secs(6), Duration::from_secs(3), 1).await;
    e2e.kill_ringlink();
    let resyncs = e2e.log().matches("live calls resynchronised").count();
    e2e.start_ringlink().await;
    e2e.wait_log_after("live calls resynchronised", resyncs, WAIT).await;
    call.finished(WAIT).await.expect("the call ends");
    e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    e2e.wait_calls_ended(1, Duration::from_secs(4)).await;

    assert_each_call_once(&e2e, &[1]);

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

/// The generation of the lease of tenant `office`, as the database has it.
fn lease_generation(server: &Postgres) -> i64 {
    let generation = server
        .psql("ringlink", "SELECT generation FROM leases WHERE tenant = 'office'")
        .expect("the lease");
    generation
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the generation is a number: {generation:?}"))
}

/// The instance named in the other's `/status` as the leader.
async fn leader_seen_by(standby_port: u16) -> String {
    let status = web_status(standby_port).await;
    assert_eq!(status["store"]["role"], "standby", "{status}");
    status["store"]["leader"].as_str().unwrap_or_default().to_owned()
}

/// The office's ringlink of tenant `office`, once it leads, and a second instance ("second"), once it is the
/// standby. `leader_via`: the address (`127.0.0.1:PORT`) through which the leader reaches the database instead
/// of the server's own (empty: none), e.g. a relay the test can cut; the standby always reaches the server.
async fn leader_and_standby(url: &str, leader_via: &str) -> (E2e, Instance) {
    let server = url_address(url);
    let leader_url = if leader_via.is_empty() {
        url.to_owned()
    } else {
        url.replace(&server, leader_via)
    };
    let e2e = E2e::start_custom(Setup {
        store: Some(shared_store(&leader_url, "office")),
        ..Setup::default()
    })
    .await;
    e2e.wait_log(TOOK, WAIT).await;
    let second = e2e.spawn_instance_replacing("second", &leader_url, url);
    second.wait_log_after(STANDBY, 0, WAIT).await;
    (e2e, second)
}

/// `127.0.0.1:PORT` of a `postgres://user@127.0.0.1:PORT/database` URL.
fn url_address(url: &str) -> String {
    let after_user = url.split_once('@').map_or(url, |(_, rest)| rest);
    after_user.split('/').next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_standby_takes_ringing_calls_over_from_a_killed_or_paused_leader_and_each_is_registered_once() {
    let (server, url) = start_postgres();
    let (mut e2e, mut second) = leader_and_standby(&url, "").await;
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
    let mut call = ringing_call(&e2e, 101, Duration::from_secs(8), Duration::from_secs(2), 1).await;
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
    let mut call = ringing_call(&e2e, 102, Duration::from_secs(10), Duration::from_secs(2), 2).await;
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

    assert_each_call_once(&e2e, &[1, 2]);
    let status = web_status(e2e.web_port).await;
    assert_eq!(status["store"]["role"], "leader", "{status}");
    assert_eq!(status["store"]["generation"], 3);
    assert_eq!(lease_generation(&server), 3);
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

/// The leader's connections to the database are cut (reset, and new ones refused) while a call rings: it cannot
/// renew its lease, so it stops acting and exits for its service manager to start it again; the standby takes
/// the lease over and finishes the call, once, for the employee who answered. The old leader, started again
/// once the database is reachable, is the standby.
#[tokio::test]
async fn a_leader_cut_off_from_the_database_steps_down_and_the_standby_finishes_the_ringing_call() {
    let (server, url) = start_postgres();
    let upstream = url_address(&url).parse().expect("the server's address");
    let relay = Relay::start(upstream).await;
    let (mut e2e, second) = leader_and_standby(&url, &relay.addr.to_string()).await;
    let second_name = web_status(second.web_port).await["store"]["instance"]
        .as_str()
        .expect("instance")
        .to_owned();

    let mut call = ringing_call(&e2e, 101, Duration::from_secs(8), Duration::from_secs(2), 1).await;
    relay.cut_and_refuse();
    let exit = e2e.wait_ringlink_exit(WAIT).await;
    assert!(
        !exit.success(),
        "a leader that lost its database ends with an error for its service manager to restart it"
    );
    assert!(e2e.log().contains("stepping down"), "{}", e2e.log());
    second.wait_log_after(TOOK, 0, WAIT).await;
    second.wait_log_after("live calls resynchronised", 0, WAIT).await;
    call.finished(WAIT).await.expect("the call ends");
    e2e.wait_requests("telephony.externalcall.finish", 1, WAIT).await;
    second.wait_log_after("call ended", 0, WAIT).await;
    e2e.settle(Duration::from_secs(3)).await;

    relay.restore();
    let standbys = e2e.log().matches(STANDBY).count();
    e2e.spawn_ringlink();
    e2e.wait_log_after(STANDBY, standbys, WAIT).await;
    assert_eq!(leader_seen_by(e2e.web_port).await, second_name);
    assert_each_call_once(&e2e, &[1]);
    assert_eq!(lease_generation(&server), 2);
    e2e.stop().await;
    drop(second);
    drop(relay);
    drop(server);
}

const FOLLOWING: &str = "live calls resynchronised";

/// When `log` says `needle` for the `nth` time (from 0), by the line's own time stamp.
fn logged_at(log: &str, needle: &str, nth: usize) -> DateTime<Utc> {
    let line = log
        .lines()
        .filter(|line| line.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("no {needle:?} #{nth} in the log:\n{log}"));
    let stamp = line.split_whitespace().next().unwrap_or_default();
    DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp:?} of {line:?} is not a time stamp: {e}"))
        .with_timezone(&Utc)
}

/// The `p`-th percentile (nearest rank) of `sorted`, in seconds.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `what`: n, p50, p90 and max of `seconds`, printed.
fn print_distribution(what: &str, seconds: &mut [f64]) {
    seconds.sort_by(f64::total_cmp);
    println!(
        "failover_time: {what}: n {}, p50 {:.2} s, p90 {:.2} s, max {:.2} s (each: {})",
        seconds.len(),
        percentile(seconds, 50.0),
        percentile(seconds, 90.0),
        percentile(seconds, 100.0),
        seconds.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(" ")
    );
}

/// Failover time with the default lease (8 s, renewed every 2 s): the leader of two instances is killed
/// (`kill -9`) `RINGLINK_FAILOVER_KILLS` times (5 by default), each time measuring, on the log lines' own time
/// stamps, kill → the standby took the lease, and kill → it follows the PBX again (live calls resynchronised);
/// the killed instance is started again as the standby before the next kill, which falls at a random point of
/// the renewal cycle. Prints p50 / p90 / max:
/// `RINGLINK_FAILOVER_KILLS=20 cargo nextest run -p ringlink --test postgres_store --run-ignored only
/// --no-capture -E 'test(failover_time)'`.
#[tokio::test]
#[ignore = "a measurement: about 14 s per kill; run on demand"]
async fn failover_time() {
    let kills: usize = std::env::var("RINGLINK_FAILOVER_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let (server, url) = start_postgres();
    let mut e2e = E2e::start_custom(Setup {
        store: Some(format!("url = \"{url}\"\ntenant = \"office\"")),
        ..Setup::default()
    })
    .await;
    e2e.wait_log(TOOK, WAIT).await;
    let mut second = e2e.spawn_instance("second");
    second.wait_log_after(STANDBY, 0, WAIT).await;
    let mut to_lease = Vec::new();
    let mut to_following = Vec::new();
    for kill in 0..kills {
        // The office's own ringlink leads before even kills, the second instance before odd ones.
        let office_leads = kill % 2 == 0;
        let taker_log = || if office_leads { second.log() } else { e2e.log() };
        // The kill falls at any point of the renewal cycle (2 s): after 2 to 4 s as the standby.
        let phase = f64::from(Utc::now().timestamp_subsec_nanos()) / 1e9;
        tokio::time::sleep(Duration::from_secs_f64(2.0 + 2.0 * phase)).await;
        let took = taker_log().matches(TOOK).count();
        let following = taker_log().matches(FOLLOWING).count();
        let killed_at = Utc::now();
        if office_leads {
            e2e.kill_ringlink();
            second.wait_log_after(FOLLOWING, following, WAIT).await;
        } else {
            second.kill();
            e2e.wait_log_after(FOLLOWING, following, WAIT).await;
        }
        let log = if office_leads { second.log() } else { e2e.log() };
        let seconds = |at: DateTime<Utc>| (at - killed_at).num_microseconds().unwrap_or_default() as f64 / 1e6;
        to_lease.push(seconds(logged_at(&log, TOOK, took)));
        to_following.push(seconds(logged_at(&log, FOLLOWING, following)));
        println!(
            "failover_time: kill {} of {kills}: lease taken after {:.2} s, following the PBX after {:.2} s",
            kill + 1,
            to_lease[kill],
            to_following[kill]
        );
        // The killed instance comes back as the standby.
        if office_leads {
            let standbys = e2e.log().matches(STANDBY).count();
            e2e.spawn_ringlink();
            e2e.wait_log_after(STANDBY, standbys, WAIT).await;
        } else {
            let standbys = second.log().matches(STANDBY).count();
            second = e2e.spawn_instance("second");
            second.wait_log_after(STANDBY, standbys, WAIT).await;
        }
    }
    println!("failover_time: lease 8 s, renewed every 2 s; load {}", load_average());
    print_distribution("kill → standby took the lease", &mut to_lease);
    print_distribution("kill → following the PBX again", &mut to_following);
    assert_eq!(lease_generation(&server), kills as i64 + 1, "one takeover per kill");
    e2e.stop().await;
    drop(second);
    drop(server);
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
