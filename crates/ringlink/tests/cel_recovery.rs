//! Calls that begin and end while ringlink is down are recovered from the PBX's CEL: the test bed's Asterisk
//! writes its CEL to SQLite (`cel_sqlite3_custom`), ringlink is stopped, scenarios are played, and after the
//! restart each call is registered once (no card), with the right users, statuses, durations and recordings.
//! The same from FreePBX's MySQL table on a real MariaDB server (the bed's rows copied into FreePBX's layout),
//! and from PostgreSQL, where the bed's Asterisk writes through `cel_pgsql` (times with microseconds).
//! A call cut by a crash mid-talk is finished with its whole talk time; `ringlink reprocess` of a period
//! already handled registers nothing (twice), and its dry run lists nothing.

mod e2e {
    #[allow(dead_code)] // shared with the scenario tests; these use a part of it
    pub mod checks;
    #[allow(dead_code)]
    pub mod harness;
}

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use e2e::checks::Seen;
use e2e::harness::{text, E2e, CLIENT_BASE, WAIT};
use testbed::{scenarios, Route, CLIENT};

const FINISH: &str = "telephony.externalcall.finish";
/// How long the outbox must stay silent before the record is read.
const QUIET: Duration = Duration::from_secs(4);

fn cel_section(e2e: &E2e) -> String {
    format!(
        "[cel]\nkind = \"sqlite\"\npath = \"{}\"\nutc_offset = \"+00:00\"\nrecordings_dir = \"{}\"\n",
        e2e.bed.cel_sqlite_path().display(),
        e2e.bed.recordings_dir_in_asterisk()
    )
}

/// Starts the office with ringlink reading the PBX's CEL, and waits until it has the users directory.
async fn start_with_cel() -> E2e {
    start_with(cel_section).await
}

async fn start_with(section: impl Fn(&E2e) -> String) -> E2e {
    let mut e2e = E2e::start("").await;
    e2e.wait_requests("user.get", 1, WAIT).await;
    let cel = section(&e2e);
    e2e.set_extra_config(&cel);
    e2e.kill_ringlink();
    e2e.start_ringlink().await;
    e2e
}

fn reprocess(e2e: &E2e, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringlink"))
        .arg("reprocess")
        .arg("--config")
        .arg(e2e.config_path())
        .args(args)
        .output()
        .expect("run ringlink reprocess");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ringlink reprocess {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// S1, S2 (missed), S3, S10 and S12 played while ringlink is down: after the restart, six registrations
/// (S10 has two talks), each finished once by the employee who talked (U1, U1 missed, U2, U1 then U2, U2 for
/// the pickup), none with a card, every talk recorded. Then a restart and two `reprocess` runs of the whole
/// period add nothing, and a dry run lists nothing to do.
#[tokio::test]
async fn calls_played_while_ringlink_is_down_are_registered_from_cel_once() {
    recover_five_scenarios(start_with_cel().await).await;
}

/// The same with the bed's Asterisk writing its CEL through `cel_pgsql` into a throwaway PostgreSQL server: the
/// rows carry microseconds, and a call's rows may sort differently by id as text.
#[tokio::test]
async fn calls_played_while_ringlink_is_down_are_registered_from_cel_pgsql_once() {
    let server = testbed::postgres::Postgres::start().expect("start PostgreSQL");
    recover_five_scenarios(start_with_cel_pgsql(&server).await).await;
    let sub_second = server
        .psql(
            "asterisk",
            "SELECT count(*) FROM cel WHERE date_trunc('second', eventtime) <> eventtime",
        )
        .expect("count");
    let rows = server.psql("asterisk", "SELECT count(*) FROM cel").expect("count");
    let (sub_second, rows): (u64, u64) = (
        sub_second.trim().parse().expect("a count"),
        rows.trim().parse().expect("a count"),
    );
    assert!(
        rows > 50 && sub_second > 0,
        "cel_pgsql wrote {rows} rows, {sub_second} with microseconds"
    );
}

/// Starts the office with the bed's Asterisk writing its CEL through `cel_pgsql` to `server`, and ringlink
/// reading it; waits until ringlink has the users directory.
async fn start_with_cel_pgsql(server: &testbed::postgres::Postgres) -> E2e {
    let mut e2e = E2e::start("").await;
    e2e.wait_requests("user.get", 1, WAIT).await;
    let url = e2e.bed.enable_cel_pgsql(server).await.expect("cel_pgsql loaded");
    let cel = format!(
        "[cel]\nkind = \"postgres\"\nurl = \"{url}\"\nutc_offset = \"+00:00\"\nrecordings_dir = \"{}\"\n",
        e2e.bed.recordings_dir_in_asterisk()
    );
    e2e.set_extra_config(&cel);
    e2e.kill_ringlink();
    e2e.start_ringlink().await;
    e2e
}

/// Plays S1, S2, S3, S10 and S12 while ringlink is down; after the restart each is registered once from CEL;
/// a restart, a dry run and two reprocess runs of the period add nothing.
async fn recover_five_scenarios(mut e2e: E2e) {
    let period_start = chrono::Utc::now() - chrono::Duration::minutes(1);
    e2e.kill_ringlink();
    for id in ["s1", "s2", "s3", "s10", "s12"] {
        scenarios::play(&e2e.bed, id)
            .await
            .unwrap_or_else(|e| panic!("play {id}: {e}"));
    }
    e2e.start_ringlink().await;
    e2e.wait_requests(FINISH, 6, WAIT).await;
    e2e.settle(QUIET).await;
    assert_recovered(
        &e2e,
        6,
        &[
            ((1, "200"), 2), // S1, S10 before the transfer
            ((1, "304"), 1), // S2: missed, for the phone that rang
            ((2, "200"), 3), // S3, S10 after the transfer, S12's pickup
        ],
    );
    let log = e2e.log();
    assert!(log.contains("calls of the gap recovered from CEL"), "{log}");

    // Nothing more: a restart, a dry run and two reprocess runs of the whole period.
    let before = e2e.telephony().len();
    e2e.kill_ringlink();
    e2e.start_ringlink().await;
    let from = period_start.format("%Y-%m-%d %H:%M:%S").to_string();
    let dry = reprocess(&e2e, &["--from", &from, "--dry-run"]);
    assert!(dry.contains("0 would be registered"), "{dry}");
    for _ in 0..2 {
        let out = reprocess(&e2e, &["--from", &from]);
        assert!(out.contains("already handled, 0 registered"), "{out}");
    }
    e2e.settle(QUIET).await;
    assert_eq!(e2e.telephony().len(), before, "{}", e2e.describe());
    e2e.stop().await;
}

/// Every registration recovered without a card, on the line, for the client; `expected` counts them by
/// (finishing user, status); each talk recorded.
fn assert_recovered(e2e: &E2e, count: usize, expected: &[((u64, &str), usize)]) {
    let seen = Seen::check(e2e);
    assert_eq!(seen.registrations.len(), count, "{}", seen.described);
    let mut finished_by: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for reg in &seen.registrations {
        assert_eq!(
            text(&reg.register, "SHOW"),
            "0",
            "no card for a recovered call:\n{}",
            seen.described
        );
        assert_eq!(text(&reg.register, "TYPE"), "2", "{}", seen.described);
        assert_eq!(text(&reg.register, "LINE_NUMBER"), "73432723033", "{}", seen.described);
        assert!(
            text(&reg.register, "PHONE_NUMBER").ends_with(CLIENT_BASE),
            "{}",
            seen.described
        );
        assert!(reg.shown_to().is_empty(), "{}", seen.described);
        *finished_by.entry((reg.finish_user(), reg.status())).or_default() += 1;
        if reg.status() == "200" {
            seen.assert_duration(reg, 2..=9);
            assert_eq!(reg.records.len(), 1, "each talk recorded:\n{}", seen.described);
        } else {
            assert_eq!(reg.duration(), 0, "{}", seen.described);
            assert!(reg.records.is_empty(), "{}", seen.described);
        }
    }
    let expected: BTreeMap<(u64, String), usize> = expected
        .iter()
        .map(|((user, status), n)| ((*user, (*status).to_owned()), *n))
        .collect();
    assert_eq!(finished_by, expected, "{}", seen.described);
}

/// FreePBX's `asteriskcdrdb.cel` on a real MariaDB server, with the CEL rows the test bed's Asterisk wrote
/// (to SQLite) copied in FreePBX's column layout: S1, S2 (missed) and S12 (a pickup, whose picker joins the
/// call from its own linkedid) played while ringlink is down are registered once each after the restart;
/// a reprocess of the period adds nothing.
#[tokio::test]
async fn calls_played_while_ringlink_is_down_are_registered_from_freepbx_mariadb_cel() {
    let (server, mut db) = freepbx_mariadb();
    let url = server.url();
    let mut e2e = start_with(|e2e| {
        format!(
            "[cel]\nkind = \"mariadb\"\nurl = \"{url}\"\nutc_offset = \"+00:00\"\nrecordings_dir = \"{}\"\n",
            e2e.bed.recordings_dir_in_asterisk()
        )
    })
    .await;
    let period_start = chrono::Utc::now() - chrono::Duration::minutes(1);
    e2e.kill_ringlink();
    for id in ["s1", "s2", "s12"] {
        scenarios::play(&e2e.bed, id)
            .await
            .unwrap_or_else(|e| panic!("play {id}: {e}"));
    }
    let copied = copy_to_freepbx_table(&e2e, &mut db);
    assert!(copied > 20, "the bed wrote {copied} CEL rows");
    e2e.start_ringlink().await;
    e2e.wait_requests(FINISH, 3, WAIT).await;
    e2e.settle(QUIET).await;
    assert_recovered(
        &e2e,
        3,
        &[
            ((1, "200"), 1), // S1
            ((1, "304"), 1), // S2: missed
            ((2, "200"), 1), // S12's pickup
        ],
    );
    assert!(
        e2e.log().contains("calls of the gap recovered from CEL"),
        "{}",
        e2e.log()
    );
    let before = e2e.telephony().len();
    let from = period_start.format("%Y-%m-%d %H:%M:%S").to_string();
    let out = reprocess(&e2e, &["--from", &from]);
    assert!(out.contains("already handled, 0 registered"), "{out}");
    e2e.settle(QUIET).await;
    assert_eq!(e2e.telephony().len(), before, "{}", e2e.describe());
    e2e.stop().await;
}

/// FreePBX's way: the bed's Asterisk writes its CEL through `cel_odbc` (res_odbc, the MariaDB ODBC driver) into
/// `asteriskcdrdb.cel` on a real MariaDB server while ringlink is down; S1, S2, S3, S10 and S12 are registered
/// once each after the restart, and nothing more after a restart and two reprocess runs.
#[tokio::test]
async fn calls_played_while_ringlink_is_down_are_registered_from_freepbx_cel_odbc_once() {
    use mysql::prelude::Queryable as _;
    let (server, mut db) = freepbx_mariadb();
    let mut e2e = E2e::start("").await;
    e2e.wait_requests("user.get", 1, WAIT).await;
    e2e.bed.enable_cel_odbc(&server).await.expect("cel_odbc loaded");
    let cel = format!(
        "[cel]\nkind = \"mariadb\"\nurl = \"{}\"\nutc_offset = \"+00:00\"\nrecordings_dir = \"{}\"\n",
        server.url(),
        e2e.bed.recordings_dir_in_asterisk()
    );
    e2e.set_extra_config(&cel);
    e2e.kill_ringlink();
    e2e.start_ringlink().await;
    recover_five_scenarios(e2e).await;
    let rows: Option<u64> = db.query_first("SELECT count(*) FROM cel").expect("count");
    let hangups: Option<u64> = db
        .query_first("SELECT count(*) FROM cel WHERE eventtype = 'HANGUP'")
        .expect("count");
    let (rows, hangups) = (rows.unwrap_or(0), hangups.unwrap_or(0));
    assert!(rows > 50 && hangups > 5, "cel_odbc wrote {rows} rows, {hangups} HANGUP");
}

/// A throwaway MariaDB server holding FreePBX's `asteriskcdrdb.cel`, and a connection to it.
fn freepbx_mariadb() -> (testbed::mariadb::MariaDb, mysql::Conn) {
    use mysql::prelude::Queryable as _;
    let server = testbed::mariadb::MariaDb::start("asteriskcdrdb", "freepbxuser", "cdr-secret").expect("start MariaDB");
    let mut db = mysql::Conn::new(mysql::Opts::from_url(&server.url()).expect("url")).expect("connect");
    db.query_drop(testbed::mariadb::FREEPBX_CEL_TABLE)
        .expect("FreePBX's cel table");
    (server, db)
}

/// Copies the bed's CEL rows (SQLite, the database backends' column names) into FreePBX's MySQL table, in
/// their order; returns how many.
fn copy_to_freepbx_table(e2e: &E2e, db: &mut mysql::Conn) -> usize {
    use mysql::prelude::Queryable as _;
    const COLUMNS: &str = "eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid, exten, context, \
                           channame, appname, appdata, accountcode, uniqueid, linkedid, peer, userdeftype, extra";
    let lite = rusqlite::Connection::open(e2e.bed.cel_sqlite_path()).expect("the bed's CEL database");
    let mut stmt = lite
        .prepare(&format!("SELECT {COLUMNS} FROM cel ORDER BY rowid"))
        .expect("select");
    let rows: Vec<Vec<String>> = stmt
        .query_map([], |r| {
            (0..18)
                .map(|i| r.get::<_, Option<String>>(i).map(Option::unwrap_or_default))
                .collect()
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let insert = format!(
        "INSERT INTO cel ({COLUMNS}, amaflags) VALUES ({}, 3)",
        vec!["?"; 18].join(", ")
    );
    for row in &rows {
        db.exec_drop(
            &insert,
            mysql::Params::Positional(row.iter().map(|v| v.as_str().into()).collect()),
        )
        .expect("insert a CEL row");
    }
    rows.len()
}

/// ringlink killed while 101 talks; the call ends while it is down. After the restart the call is finished
/// once, from CEL: the whole talk (≈7 s, not the 3 s ringlink saw), with its recording; the register sent
/// before the crash is not sent again.
#[tokio::test]
async fn a_call_cut_by_a_crash_is_finished_from_cel_with_its_whole_talk() {
    finish_a_call_cut_by_a_crash(start_with_cel().await).await;
}

/// The same with the CEL in PostgreSQL (`cel_pgsql`).
#[tokio::test]
async fn a_call_cut_by_a_crash_is_finished_from_cel_pgsql_with_its_whole_talk() {
    let server = testbed::postgres::Postgres::start().expect("start PostgreSQL");
    finish_a_call_cut_by_a_crash(start_with_cel_pgsql(&server).await).await;
}

/// 101 answers and talks 7 s; ringlink is SIGKILLed 2 s after the register; after the restart the call is
/// finished once, from CEL, with its whole talk and recording.
async fn finish_a_call_cut_by_a_crash(mut e2e: E2e) {
    e2e.bed.reset().await.expect("reset");
    e2e.bed.route_incoming(Route::Extension(101)).await.expect("route");
    e2e.bed
        .phone(101)
        .answer_after(Duration::from_secs(2))
        .await
        .expect("phone 101");
    let mut call = e2e
        .bed
        .incoming(CLIENT)
        .talk(Duration::from_secs(7))
        .await
        .expect("call");
    e2e.bed.wait_phone_talking(101, WAIT).await.expect("101 talks");
    e2e.wait_requests("telephony.externalcall.register", 1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    e2e.kill_ringlink();
    call.finished(WAIT).await.expect("client side over");
    e2e.bed.wait_all_channels_gone(WAIT).await.expect("all channels gone");
    e2e.start_ringlink().await;
    e2e.wait_requests("telephony.externalcall.attachrecord", 1, WAIT).await;
    e2e.settle(QUIET).await;
    let seen = Seen::check(&e2e);
    let reg = seen.single();
    assert_eq!(
        text(&reg.register, "SHOW"),
        "1",
        "registered live, card and all:\n{}",
        seen.described
    );
    assert_eq!(reg.finish_user(), 1);
    assert_eq!(reg.status(), "200");
    seen.assert_duration(reg, 6..=8);
    assert_eq!(reg.records.len(), 1, "{}", seen.described);
    assert!(
        e2e.log().contains("calls of the gap recovered from CEL"),
        "{}",
        e2e.log()
    );
    e2e.stop().await;
}

/// Without `[cel]`, a restart after calls were missed says in the log which period may miss calls, why (ringlink
/// was stopped) and how to recover them; `/status` turns to Warning with the same sentence and the period in its
/// `gaps`, and `ringlink check` says it too.
#[tokio::test]
async fn without_cel_the_log_status_and_check_name_the_period_that_may_miss_calls() {
    let mut e2e = E2e::start("").await;
    e2e.wait_requests("user.get", 1, WAIT).await;
    let status = web_status(&e2e).await;
    assert_eq!(status["gaps"]["may_be_missing"], serde_json::Value::Null, "{status}");
    e2e.kill_ringlink();
    e2e.start_ringlink().await;
    e2e.wait_log("may be missing from Bitrix24", WAIT).await;
    let log = e2e.log();
    let said = log
        .lines()
        .find(|l| l.contains("may be missing from Bitrix24"))
        .expect("the line");
    assert!(
        said.contains("[cel] in ringlink.toml") && said.contains("ringlink was stopped"),
        "{said}"
    );
    let status = web_status(&e2e).await;
    let missing = &status["gaps"]["may_be_missing"];
    assert_eq!(missing["causes"], serde_json::json!(["ringlink_stopped"]), "{status}");
    let message = missing["message"].as_str().expect("message");
    assert!(said.contains(message), "the log says {said:?}, /status {message:?}");
    assert!(
        status["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&serde_json::json!(message))),
        "{status}"
    );
    assert_ne!(status["app_status"], serde_json::json!("Ok"), "{status}");
    let (from, to) = (
        missing["from"].as_str().expect("from"),
        missing["to"].as_str().expect("to"),
    );
    assert!(from <= to, "{status}");
    e2e.kill_ringlink();
    let out = Command::new(env!("CARGO_BIN_EXE_ringlink"))
        .arg("check")
        .arg("--config")
        .arg(e2e.config_path())
        .output()
        .expect("run ringlink check");
    let checked = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(checked.contains(message), "{checked}");
    e2e.stop().await;
}

async fn web_status(e2e: &E2e) -> serde_json::Value {
    reqwest::get(format!("{}/status", e2e.web_url()))
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("status JSON")
}
