//! Opening, migrations, pragmas, and damaged contents read as errors rather than panics.

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
