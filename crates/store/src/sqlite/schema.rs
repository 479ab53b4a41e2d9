//! The schema, versioned in SQLite's `user_version` and brought up to date on open.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, StoreError};

/// Migration `n` (from 0) takes the schema from version `n` to `n + 1`. Append only: never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: the outbox, journal, users cache, tokens, settings.
    "
    CREATE TABLE steps (
        id              INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after pruning
        call_key        TEXT    NOT NULL,
        seq             INTEGER NOT NULL,                  -- order within the call, from 1
        idempotency_key TEXT    NOT NULL UNIQUE,
        kind            TEXT    NOT NULL,
        payload         TEXT    NOT NULL,                  -- JSON
        priority        INTEGER NOT NULL DEFAULT 0,
        state           TEXT    NOT NULL
                        CHECK (state IN ('pending', 'in_flight', 'done', 'dropped', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,                  -- all instants: microseconds since the epoch, UTC
        lease_until     INTEGER,
        last_error      TEXT,
        result          TEXT,                              -- JSON
        expires_at      INTEGER,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        UNIQUE (call_key, seq)
    );
    -- The due query scans open steps only; the per-call check looks up open earlier steps of the call.
    CREATE INDEX steps_open ON steps (next_attempt_at) WHERE state IN ('pending', 'in_flight');
    CREATE INDEX steps_open_by_call ON steps (call_key, seq) WHERE state IN ('pending', 'in_flight');
    CREATE INDEX steps_by_created ON steps (created_at);

    CREATE TABLE journal (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        call_key TEXT    NOT NULL,
        at       INTEGER NOT NULL,
        kind     TEXT    NOT NULL,
        message  TEXT    NOT NULL,
        data     TEXT                                      -- JSON
    );
    CREATE INDEX journal_by_call ON journal (call_key, at, id);
    CREATE INDEX journal_by_time ON journal (at);

    -- One row per journalled call, kept up to date on append, for the recent-calls list.
    CREATE TABLE journal_calls (
        call_key     TEXT    PRIMARY KEY,
        first_at     INTEGER NOT NULL,
        last_at      INTEGER NOT NULL,
        entries      INTEGER NOT NULL,
        errors       INTEGER NOT NULL,
        last_kind    TEXT    NOT NULL,
        last_message TEXT    NOT NULL
    );
    CREATE INDEX journal_calls_by_last ON journal_calls (last_at);

    CREATE TABLE users (
        id       INTEGER PRIMARY KEY,                      -- Bitrix24's user ID
        name     TEXT    NOT NULL,
        email    TEXT,
        position TEXT,
        active   INTEGER NOT NULL,
        raw      TEXT    NOT NULL                          -- JSON
    );
    CREATE TABLE user_phones (
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        field   TEXT    NOT NULL,
        number  TEXT    NOT NULL,
        PRIMARY KEY (user_id, ordinal)
    );
    CREATE INDEX user_phones_by_number ON user_phones (number, field);

    CREATE TABLE tokens (
        portal          TEXT    PRIMARY KEY,
        access_token    TEXT    NOT NULL,
        refresh_token   TEXT    NOT NULL,
        expires_at      INTEGER,
        scope           TEXT,
        client_endpoint TEXT,
        member_id       TEXT,
        updated_at      INTEGER NOT NULL
    );

    CREATE TABLE settings (
        key        TEXT    PRIMARY KEY,
        value      TEXT    NOT NULL,                       -- JSON
        updated_at INTEGER NOT NULL
    );

    -- The store's own bookkeeping (e.g. when the users cache was refreshed).
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    ",
    // 2: click-to-call requests, one row per Bitrix24 CALL_ID (a second delivery of the same click dials nothing).
    "
    CREATE TABLE clicks (
        call_id     TEXT    PRIMARY KEY,
        call_key    TEXT    NOT NULL,
        request     TEXT    NOT NULL,                      -- JSON
        received_at INTEGER NOT NULL,
        closed_at   INTEGER
    );
    CREATE INDEX clicks_open ON clicks (received_at) WHERE closed_at IS NULL;
    ",
    // 3: the journal page's filters. A day (or any range) walks calls by last activity and checks their start
    // in the same index; "has errors" starts from the few calls with an error entry or a failed step; the
    // result (answered, missed, live) looks up a call's AMI entries by message.
    "
    CREATE INDEX journal_calls_by_last_first ON journal_calls (last_at, first_at);
    DROP INDEX journal_calls_by_last;
    CREATE INDEX journal_calls_with_errors ON journal_calls (last_at) WHERE errors > 0;
    CREATE INDEX steps_failed ON steps (call_key) WHERE state = 'failed';
    CREATE INDEX journal_ami_by_call ON journal (call_key, message) WHERE kind = 'ami';
    ",
    // 4: the journal's text (message and data) by trigrams, for the number and employee filters: any part of 3
    // characters or more is looked up instead of read from every entry. An index of the journal's own rows,
    // kept by triggers (entries are only ever added and pruned).
    "
    CREATE VIRTUAL TABLE journal_text USING fts5 (
        message, data, content = 'journal', content_rowid = 'id', tokenize = 'trigram'
    );
    INSERT INTO journal_text (journal_text) VALUES ('rebuild');
    CREATE TRIGGER journal_text_added AFTER INSERT ON journal BEGIN
        INSERT INTO journal_text (rowid, message, data) VALUES (new.id, new.message, new.data);
    END;
    CREATE TRIGGER journal_text_removed AFTER DELETE ON journal BEGIN
        INSERT INTO journal_text (journal_text, rowid, message, data)
        VALUES ('delete', old.id, old.message, old.data);
    END;
    ",
    // 5: the outbox's counts by state, kept by triggers as steps are added, change state and are pruned, so
    // `/status` and `/metrics` read five rows instead of counting every step; the oldest open step from an
    // index of the open steps by creation.
    "
    CREATE TABLE step_counts (
        state TEXT    PRIMARY KEY,
        n     INTEGER NOT NULL
    );
    INSERT INTO step_counts (state, n)
        SELECT state, 0 FROM (SELECT 'pending' AS state UNION ALL SELECT 'in_flight' UNION ALL SELECT 'done'
                              UNION ALL SELECT 'dropped' UNION ALL SELECT 'failed');
    UPDATE step_counts SET n = (SELECT COUNT(*) FROM steps WHERE steps.state = step_counts.state);
    CREATE TRIGGER step_counts_added AFTER INSERT ON steps BEGIN
        UPDATE step_counts SET n = n + 1 WHERE state = new.state;
    END;
    CREATE TRIGGER step_counts_moved AFTER UPDATE OF state ON steps WHEN old.state <> new.state BEGIN
        UPDATE step_counts SET n = n - 1 WHERE state = old.state;
        UPDATE step_counts SET n = n + 1 WHERE state = new.state;
    END;
    CREATE TRIGGER step_counts_removed AFTER DELETE ON steps BEGIN
        UPDATE step_counts SET n = n - 1 WHERE state = old.state;
    END;
    CREATE INDEX steps_open_by_created ON steps (created_at) WHERE state IN ('pending', 'in_flight');
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Applies the missing migrations, each in its own write transaction. The version is re-read inside the
/// transaction, so two processes opening the same new file at once do not both create the tables.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = version(&tx)?;
        if found < 0 {
            return Err(StoreError::Corrupt {
                what: "schema version",
                detail: found.to_string(),
            });
        }
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(migration) = usize::try_from(found).ok().and_then(|index| MIGRATIONS.get(index)) else {
            return Ok(());
        };
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}
