//! Recovery throughput from the PBX's CEL: a `cel_sqlite3_custom`-shaped SQLite table of N answered incoming
//! calls (S1's 13 rows each, as Asterisk 22 writes them), then the release `ringlink reprocess` over the whole
//! period — first `--dry-run` (read, rebuild, plan, look every step up in the store), then for real (the same,
//! plus every step and decision written to the store), then again (everything already handled). For each run:
//! wall time, CEL rows/s, calls/s, and the process's peak RSS.
//!
//! `cargo bench -p ringlink --bench cel_recovery` (N = 10,000; `RINGLINK_BENCH_CEL_CALLS` to change it).

use std::process::Command;
use std::time::Instant;

/// One CEL row of the template call: (event, seconds after the call's start, the callee's channel?, cid, exten,
/// context, app, appdata, extra).
type TemplateRow = (
    &'static str,
    i64,
    bool,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// S1 as Asterisk writes it.
const S1: &[TemplateRow] = &[
    (
        "CHAN_START",
        0,
        false,
        "+79001234567",
        "73432723033",
        "from-trunk",
        "",
        "",
        "",
    ),
    ("CHAN_START", 0, true, "101", "s", "from-internal", "", "", ""),
    (
        "ANSWER",
        2,
        true,
        "101",
        "101",
        "from-internal",
        "AppDial",
        "(Outgoing Line)",
        "",
    ),
    (
        "ANSWER",
        2,
        false,
        "+79001234567",
        "101",
        "did-ext",
        "Dial",
        "PJSIP/101,15,tT",
        "",
    ),
    (
        "BRIDGE_ENTER",
        2,
        true,
        "101",
        "",
        "from-internal",
        "AppDial",
        "(Outgoing Line)",
        "{\"bridge_id\":\"b\",\"bridge_technology\":\"simple_bridge\"}",
    ),
    (
        "BRIDGE_ENTER",
        2,
        false,
        "+79001234567",
        "101",
        "did-ext",
        "Dial",
        "PJSIP/101,15,tT",
        "{\"bridge_id\":\"b\",\"bridge_technology\":\"simple_bridge\"}",
    ),
    (
        "BRIDGE_EXIT",
        7,
        false,
        "+79001234567",
        "101",
        "did-ext",
        "Dial",
        "PJSIP/101,15,tT",
        "{\"bridge_id\":\"b\",\"bridge_technology\":\"simple_bridge\"}",
    ),
    (
        "BRIDGE_EXIT",
        7,
        true,
        "101",
        "",
        "from-internal",
        "AppDial",
        "(Outgoing Line)",
        "{\"bridge_id\":\"b\",\"bridge_technology\":\"simple_bridge\"}",
    ),
    (
        "HANGUP",
        7,
        true,
        "101",
        "",
        "from-internal",
        "AppDial",
        "(Outgoing Line)",
        "{\"hangupcause\":16,\"hangupsource\":\"x\",\"dialstatus\":\"\"}",
    ),
    (
        "CHAN_END",
        7,
        true,
        "101",
        "",
        "from-internal",
        "AppDial",
        "(Outgoing Line)",
        "",
    ),
    (
        "HANGUP",
        7,
        false,
        "+79001234567",
        "101",
        "did-ext",
        "",
        "",
        "{\"hangupcause\":16,\"hangupsource\":\"x\",\"dialstatus\":\"ANSWER\"}",
    ),
    ("CHAN_END", 7, false, "+79001234567", "101", "did-ext", "", "", ""),
    ("LINKEDID_END", 7, false, "+79001234567", "101", "did-ext", "", "", ""),
];

/// 2026-11-22 00:00:00 UTC.
const DAY_START: i64 = 1_795_305_600;

fn write_table(path: &std::path::Path, calls: usize) -> usize {
    let mut db = rusqlite::Connection::open(path).expect("create the CEL table");
    db.execute_batch(
        "CREATE TABLE cel (id INTEGER PRIMARY KEY, eventtype TEXT, eventtime TEXT, cid_name TEXT, cid_num TEXT, \
         cid_dnid TEXT, context TEXT, exten TEXT, channame TEXT, appname TEXT, appdata TEXT, uniqueid TEXT, \
         linkedid TEXT, peer TEXT, extra TEXT); CREATE INDEX cel_time ON cel (eventtime); \
         CREATE INDEX cel_linkedid ON cel (linkedid); CREATE INDEX cel_uniqueid ON cel (uniqueid);",
    )
    .expect("schema");
    let tx = db.transaction().expect("transaction");
    let mut rows = 0;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO cel (eventtype, eventtime, cid_name, cid_num, cid_dnid, context, exten, channame, \
                 appname, appdata, uniqueid, linkedid, peer, extra) VALUES (?1, ?2, '', ?3, '', ?4, ?5, ?6, ?7, ?8, \
                 ?9, ?10, '', ?11)",
            )
            .expect("insert");
        for i in 0..calls {
            // A call every 8 s, two channels each.
            let start = DAY_START + 8 * i as i64;
            let linkedid = format!("{start}.{}", 2 * i);
            let callee = format!("{start}.{}", 2 * i + 1);
            for (event, at, is_callee, cid, exten, context, app, appdata, extra) in S1 {
                let time = chrono::DateTime::from_timestamp(start + at, 0)
                    .expect("time")
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string();
                let (channel, uid) = if *is_callee {
                    (format!("PJSIP/101-{:08x}", 2 * i + 1), callee.as_str())
                } else {
                    (format!("PJSIP/carrier-{:08x}", 2 * i), linkedid.as_str())
                };
                insert
                    .execute(rusqlite::params![
                        event, time, cid, context, exten, channel, app, appdata, uid, linkedid, extra
                    ])
                    .expect("row");
                rows += 1;
            }
        }
    }
    tx.commit().expect("commit");
    rows
}

/// Runs `ringlink reprocess` and returns (seconds, peak RSS in KiB, stdout's last line).
fn reprocess(config: &std::path::Path, dry_run: bool) -> (f64, i64, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringlink"));
    cmd.arg("reprocess").arg("--config").arg(config).args([
        "--from",
        "2026-11-22 00:00:00",
        "--to",
        "2026-11-23 23:59:59",
    ]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let started = Instant::now();
    let out = cmd.output().expect("run ringlink reprocess");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "reprocess failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: getrusage writes into the struct we own; RUSAGE_CHILDREN covers the waited-for child.
    let peak = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    (secs, peak, stdout.lines().last().unwrap_or_default().to_owned())
}

fn main() {
    let calls: usize = std::env::var("RINGLINK_BENCH_CEL_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let cel = dir.path().join("master.db");
    let started = Instant::now();
    let rows = write_table(&cel, calls);
    println!(
        "CEL table: {calls} calls, {rows} rows written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let config = dir.path().join("ringlink.toml");
    std::fs::write(
        &config,
        format!(
            "[ami]\naddress = \"127.0.0.1:5038\"\nusername = \"u\"\nsecret = \"s\"\n\n\
             [bitrix24]\nwebhook_url = \"http://127.0.0.1:9/rest/1/x/\"\n\n\
             [store]\npath = \"{}\"\n\n\
             [cel]\nkind = \"sqlite\"\npath = \"{}\"\nutc_offset = \"+00:00\"\nrecordings_dir = \"{}\"\n\n\
             [engine.missed]\ndefault_user = 9\n\n\
             [tracker]\nutc_offset = \"+00:00\"\n[[tracker.trunks]]\nendpoint = \"carrier\"\nnumber = \"73432723033\"\n",
            dir.path().join("ringlink.db").display(),
            cel.display(),
            dir.path().join("monitor").display(),
        ),
    )
    .expect("config");
    println!("run            seconds   CEL rows/s   calls/s   peak RSS (MiB, largest run so far)   result");
    for (name, dry) in [("dry run", true), ("register", false), ("again", false)] {
        let (secs, peak_kib, last) = reprocess(&config, dry);
        println!(
            "{name:<14} {secs:>7.2} {:>12.0} {:>9.0} {:>10.1}                          {last}",
            rows as f64 / secs,
            calls as f64 / secs,
            peak_kib as f64 / 1024.0
        );
    }
}
