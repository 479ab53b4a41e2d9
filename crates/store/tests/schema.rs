//! Opening, migrations, pragmas, and damaged contents read as errors rather than panics.

mod backends;

use rusqlite::Connection;
use serde_json::json;
use store::{NewStep, SqliteOptions, SqliteStore, Store, StoreError, Synchronous, Timestamp, SCHEMA_VERSION};

#[test]
fn a_new_file_gets_the_current_schema_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringlink.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    store.set_setting("k", &json!(1), Timestamp::from_secs(0)).unwrap();

    let raw = Connection::open(&path).unwrap();
    let mode: String = raw.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = raw.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop(raw);

    // Reopening migrates nothing and keeps the data; two handles on one file coexist.
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.setting("k").unwrap(), Some(json!(1)));
    assert_eq!(store.setting("k").unwrap(), Some(json!(1)));
}

#[test]
fn synchronous_option_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringlink.db");
    let options = SqliteOptions {
        synchronous: Synchronous::Normal,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options).unwrap();
    store.set_setting("k", &json!(1), Timestamp::from_secs(0)).unwrap();
    assert_eq!(store.setting("k").unwrap(), Some(json!(1)));
    assert_eq!(SqliteOptions::default().synchronous, Synchronous::Full);
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringlink.db");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION)
    );
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringlink.db");
    std::fs::write(
        &path,
        b"this is not an SQLite database, just some text that is long enough to look like a header",
    )
    .unwrap();
    assert!(matches!(SqliteStore::open(&path), Err(StoreError::Backend(_))));
    let missing_dir = dir.path().join("no/such/dir/ringlink.db");
    assert!(matches!(SqliteStore::open(missing_dir), Err(StoreError::Backend(_))));
}

#[test]
fn damaged_rows_read_as_corrupt_not_as_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringlink.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .enqueue(
            &[NewStep::new("a", "a/1", "register", json!({}))],
            Timestamp::from_secs(0),
        )
        .unwrap();
    store.set_setting("k", &json!(1), Timestamp::from_secs(0)).unwrap();

    let raw = Connection::open(&path).unwrap();
    raw.execute("UPDATE steps SET payload = '{not json'", []).unwrap();
    raw.execute("UPDATE settings SET value = ''", []).unwrap();
    drop(raw);

    assert!(matches!(
        store.step_by_key("a/1"),
        Err(StoreError::Corrupt {
            what: "step payload",
            ..
        })
    ));
    assert!(matches!(
        store.due_steps(Timestamp::from_secs(1), 10),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.setting("k"),
        Err(StoreError::Corrupt { what: "setting", .. })
    ));
    // Counting does not read payloads.
    assert_eq!(store.step_counts().unwrap().pending, 1);
}

/// Loads a committed SQL dump of a store written by an earlier release into a new file.
fn store_file_from_fixture(dir: &std::path::Path, fixture: &str) -> std::path::PathBuf {
    let sql_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let sql = std::fs::read_to_string(&sql_path).unwrap();
    let path = dir.join("ringlink.db");
    Connection::open(&path).unwrap().execute_batch(&sql).unwrap();
    path
}

/// Tables, indexes and their SQL, whitespace-insensitive: what a migrated file and a new file must agree on.
fn schema_of(path: &std::path::Path) -> Vec<(String, String, String)> {
    let raw = Connection::open(path).unwrap();
    let mut statement = raw
        .prepare("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name")
        .unwrap();
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, String>(2)?)))
        .unwrap()
        .map(|row| {
            let (kind, name, sql): (String, String, String) = row.unwrap();
            (kind, name, sql.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect();
    rows
}

#[test]
fn a_store_of_the_previous_release_is_migrated_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_file_from_fixture(dir.path(), "store_v2.sql");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);

    // The outbox: a done step keeps its answer, a pending one is still due, a failed one keeps its reason.
    assert_eq!(
        store.result_by_key("call-1/register").unwrap(),
        Some(json!({"CALL_ID": "externalCall.abc"}))
    );
    let due = store.due_steps(Timestamp::from_secs(1_767_000_001), 10).unwrap();
    assert_eq!(
        due.iter().map(|step| step.idempotency_key.as_str()).collect::<Vec<_>>(),
        ["call-1/finish"]
    );
    assert_eq!(due[0].payload, json!({"DURATION": 42, "STATUS_CODE": "200"}));
    let failed = store.step_by_key("call-2/register").unwrap().unwrap();
    assert_eq!(failed.last_error.as_deref(), Some("USER_NOT_FOUND"));
    // The counts the store keeps start from the steps already there.
    let counts = store.step_counts().unwrap();
    assert_eq!((counts.pending, counts.done, counts.failed), (1, 1, 1), "{counts:?}");
    // New steps of an old call go after its old ones; ids are not reused.
    let added = store
        .enqueue(
            &[NewStep::new("call-1", "call-1/attach", "attach_record", json!({}))],
            Timestamp::from_secs(1_767_000_002),
        )
        .unwrap();
    assert!(added[0].created);
    let steps = store.steps_of_call("call-1").unwrap();
    assert_eq!(steps.iter().map(|step| step.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(steps[2].id.0 > 3);

    // The journal and its per-call summary.
    let timeline = store.call_timeline("call-1").unwrap();
    assert_eq!(timeline.len(), 2);
    assert_eq!(timeline[1].data, Some(json!({"user": 1})));
    let recent = store.recent_calls(10).unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent.iter().find(|call| call.call_key == "call-2").unwrap().errors, 1);

    // The users cache, tokens, settings and open clicks.
    let anna = store.user_by_extension("101").unwrap().unwrap();
    assert_eq!((anna.id, anna.name.as_str()), (1, "Anna Petrova"));
    assert_eq!(store.users_by_phone(&["79161112233"]).unwrap()[0].id, 1);
    assert!(!store.users().unwrap()[1].active);
    assert_eq!(
        store.users_refreshed_at().unwrap(),
        Some(Timestamp::from_secs(1_767_000_000))
    );
    let tokens = store.load_tokens("example.bitrix24.ru").unwrap().unwrap();
    assert_eq!(tokens.refresh_token, "ref-token");
    assert_eq!(store.setting("default_responsible").unwrap(), Some(json!(1)));
    let clicks = store.open_clicks(Timestamp::from_secs(0)).unwrap();
    assert_eq!(
        clicks,
        [(
            "click-1".to_owned(),
            json!({"USER_ID": "1", "PHONE_NUMBER": "+79990000002"})
        )]
    );
    assert!(store.integrity_check().unwrap().is_empty());
}

#[test]
fn every_released_schema_migrates_to_exactly_the_schema_of_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    drop(SqliteStore::open(&fresh).unwrap());
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !(name.starts_with("store_v") && name.ends_with(".sql")) {
            continue;
        }
        let old = tempfile::tempdir().unwrap();
        let path = store_file_from_fixture(old.path(), &name);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION, "{name}");
        assert!(store.integrity_check().unwrap().is_empty(), "{name}");
        drop(store);
        assert_eq!(schema_of(&path), schema_of(&fresh), "{name} migrated");
        seen += 1;
    }
    assert!(seen > 0, "no store_v*.sql fixture found");
}

#[test]
fn postgres_instances_starting_together_migrate_the_schema_once() {
    let server = backends::start_postgres();
    let url = server.create_database("ringlink").unwrap();
    let opened: Vec<_> = (0..4)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || store::PgStore::open(&url, store::PgOptions::new(format!("tenant-{n}"))))
        })
        .collect();
    for thread in opened {
        let store = thread.join().unwrap().unwrap();
        assert_eq!(store.schema_version().unwrap(), store::PG_SCHEMA_VERSION);
    }
    let versions = server.psql("ringlink", "SELECT version FROM ringlink_schema").unwrap();
    assert_eq!(versions.trim(), store::PG_SCHEMA_VERSION.to_string(), "one version row");
}

#[test]
fn a_postgres_database_from_a_newer_version_is_refused() {
    let server = backends::start_postgres();
    let url = server.create_database("ringlink").unwrap();
    drop(store::PgStore::open(&url, store::PgOptions::new("office")).unwrap());
    server
        .psql(
            "ringlink",
            &format!("UPDATE ringlink_schema SET version = {}", store::PG_SCHEMA_VERSION + 1),
        )
        .unwrap();
    let error = store::PgStore::open(&url, store::PgOptions::new("office")).unwrap_err();
    assert!(matches!(error, StoreError::SchemaTooNew { .. }), "{error}");
}

#[test]
fn a_write_completes_while_a_report_reads_and_the_report_keeps_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ringlink.db")).unwrap();
    let step = |key: &str| NewStep::new("a", key, "register", json!({}));
    store.enqueue(&[step("a/1")], Timestamp::from_secs(0)).unwrap();
    let count = |tx: &rusqlite::Transaction<'_>| -> i64 {
        tx.query_row("SELECT COUNT(*) FROM steps", [], |row| row.get(0))
            .unwrap()
    };

    let (opened, report_open) = std::sync::mpsc::channel();
    let (wrote, write_done) = std::sync::mpsc::channel::<()>();
    let reporter = store.clone();
    let report = std::thread::spawn(move || {
        reporter
            .read_report(|tx| {
                let before = count(tx);
                opened.send(()).unwrap();
                // Held open until the writer has committed: were the report on the writer's connection, the
                // write could not begin and this would give up.
                let written = write_done.recv_timeout(std::time::Duration::from_secs(60));
                Ok((before, written.is_ok(), count(tx)))
            })
            .unwrap()
    });
    report_open.recv().unwrap();
    store.enqueue(&[step("a/2")], Timestamp::from_secs(1)).unwrap();
    wrote.send(()).unwrap();
    let (before, write_finished_meanwhile, after) = report.join().unwrap();
    assert!(write_finished_meanwhile, "the write waited for the report");
    assert_eq!((before, after), (1, 1), "the report reads one snapshot");

    // Reports read what was committed before they began, on every handle.
    let reports = store.for_reports();
    assert_eq!(reports.steps_of_call("a").unwrap().len(), 2);
    assert_eq!(reports.step_counts().unwrap().pending, 2);
    reports.set_setting("k", &json!(1), Timestamp::from_secs(2)).unwrap();
    assert_eq!(store.setting("k").unwrap(), Some(json!(1)));
}

#[test]
fn postgres_indexes_the_journals_text_by_trigrams_where_pg_trgm_is_installed() {
    let server = backends::start_postgres();
    let url = server.create_database("ringlink").unwrap();
    drop(store::PgStore::open(&url, store::PgOptions::new("office")).unwrap());
    let indexes = server
        .psql(
            "ringlink",
            "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE indexname LIKE '%trigrams'",
        )
        .unwrap();
    // Debian's postgresql package brings pg_trgm (contrib), as the test bed's server has it.
    assert_eq!(indexes.trim(), "journal_data_trigrams,journal_message_trigrams");
}
