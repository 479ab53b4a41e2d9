//! The PostgreSQL schema, versioned in `ringlink_schema` and brought up to date on open.
//!
//! The same tables as SQLite's, each with a `tenant` column that leads every key and index: one database holds
//! any number of PBX ⇄ portal pairs. Instants are BIGINT microseconds since the epoch (as in SQLite), JSON is
//! TEXT (written and read back byte for byte as the SQLite store does).

use super::Tx;
use crate::error::{Result, StoreError};

/// Migration `n` (from 0) takes the schema from version `n` to `n + 1`. Append only: never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: the outbox, journal, users cache, tokens, settings, click-to-call requests.
    "
    CREATE TABLE steps (
        tenant          TEXT    NOT NULL,
        id              BIGSERIAL PRIMARY KEY,             -- never reused, even after pruning
        call_key        TEXT    NOT NULL,
        seq             BIGINT  NOT NULL,                  -- order within the call, from 1
        idempotency_key TEXT    NOT NULL,
        kind            TEXT    NOT NULL,
        payload         TEXT    NOT NULL,                  -- JSON
        priority        INTEGER NOT NULL DEFAULT 0,
        state           TEXT    NOT NULL
                        CHECK (state IN ('pending', 'in_flight', 'done', 'dropped', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT  NOT NULL,                  -- all instants: microseconds since the epoch, UTC
        lease_until     BIGINT,
        last_error      TEXT,
        result          TEXT,                              -- JSON
        expires_at      BIGINT,
        created_at      BIGINT  NOT NULL,
        updated_at      BIGINT  NOT NULL,
        UNIQUE (tenant, idempotency_key),
        UNIQUE (tenant, call_key, seq)
    );
    CREATE INDEX steps_open ON steps (tenant, next_attempt_at) WHERE state IN ('pending', 'in_flight');
    CREATE INDEX steps_open_by_call ON steps (tenant, call_key, seq) WHERE state IN ('pending', 'in_flight');
    CREATE INDEX steps_by_created ON steps (tenant, created_at);

    CREATE TABLE journal (
        tenant   TEXT    NOT NULL,
        id       BIGSERIAL PRIMARY KEY,
        call_key TEXT    NOT NULL,
        at       BIGINT  NOT NULL,
        kind     TEXT    NOT NULL,
        message  TEXT    NOT NULL,
        data     TEXT                                      -- JSON
    );
    CREATE INDEX journal_by_call ON journal (tenant, call_key, at, id);
    CREATE INDEX journal_by_time ON journal (tenant, at);

    CREATE TABLE journal_calls (
        tenant       TEXT    NOT NULL,
        call_key     TEXT    NOT NULL,
        first_at     BIGINT  NOT NULL,
        last_at      BIGINT  NOT NULL,
        entries      BIGINT  NOT NULL,
        errors       BIGINT  NOT NULL,
        last_kind    TEXT    NOT NULL,
        last_message TEXT    NOT NULL,
        PRIMARY KEY (tenant, call_key)
    );
    CREATE INDEX journal_calls_by_last ON journal_calls (tenant, last_at);

    CREATE TABLE users (
        tenant   TEXT    NOT NULL,
        id       BIGINT  NOT NULL,                         -- Bitrix24's user ID
        name     TEXT    NOT NULL,
        email    TEXT,
        position TEXT,
        active   BOOLEAN NOT NULL,
        raw      TEXT    NOT NULL,                         -- JSON
        PRIMARY KEY (tenant, id)
    );
    CREATE TABLE user_phones (
        tenant  TEXT    NOT NULL,
        user_id BIGINT  NOT NULL,
        ordinal INTEGER NOT NULL,
        field   TEXT    NOT NULL,
        number  TEXT    NOT NULL,
        PRIMARY KEY (tenant, user_id, ordinal),
        FOREIGN KEY (tenant, user_id) REFERENCES users (tenant, id) ON DELETE CASCADE
    );
    CREATE INDEX user_phones_by_number ON user_phones (tenant, number, field);

    CREATE TABLE tokens (
        tenant          TEXT    NOT NULL,
        portal          TEXT    NOT NULL,
        access_token    TEXT    NOT NULL,
        refresh_token   TEXT    NOT NULL,
        expires_at      BIGINT,
        scope           TEXT,
        client_endpoint TEXT,
        member_id       TEXT,
        updated_at      BIGINT  NOT NULL,
        PRIMARY KEY (tenant, portal)
    );

    CREATE TABLE settings (
        tenant     TEXT    NOT NULL,
        key        TEXT    NOT NULL,
        value      TEXT    NOT NULL,                       -- JSON
        updated_at BIGINT  NOT NULL,
        PRIMARY KEY (tenant, key)
    );

    CREATE TABLE meta (
        tenant TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  TEXT NOT NULL,
        PRIMARY KEY (tenant, key)
    );

    CREATE TABLE clicks (
        tenant      TEXT    NOT NULL,
        call_id     TEXT    NOT NULL,
        call_key    TEXT    NOT NULL,
        request     TEXT    NOT NULL,                      -- JSON
        received_at BIGINT  NOT NULL,
        closed_at   BIGINT,
        PRIMARY KEY (tenant, call_id)
    );
    CREATE INDEX clicks_open ON clicks (tenant, received_at) WHERE closed_at IS NULL;
    ",
    // 2: the leader lease of each tenant (active/standby instances, fencing by generation).
    "
    CREATE TABLE leases (
        tenant     TEXT    PRIMARY KEY,
        holder     TEXT    NOT NULL,                       -- the leading instance's name; '' never held
        generation BIGINT  NOT NULL,                       -- raised by one on every takeover
        expires_at BIGINT  NOT NULL,                       -- the database's clock, microseconds since the epoch
        taken_at   BIGINT  NOT NULL
    );
    ",
    // 3: the journal page's filters (as SQLite's migration 3).
    "
    CREATE INDEX journal_calls_by_last_first ON journal_calls (tenant, last_at, first_at);
    DROP INDEX journal_calls_by_last;
    CREATE INDEX journal_calls_with_errors ON journal_calls (tenant, last_at) WHERE errors > 0;
    CREATE INDEX steps_failed ON steps (tenant, call_key) WHERE state = 'failed';
    CREATE INDEX journal_ami_by_call ON journal (tenant, call_key, message) WHERE kind = 'ami';
    ",
    // 4: the journal's text by trigrams (pg_trgm), for the number and employee filters' LIKE '%…%'. Without
    // the extension (not installed with the server, or not allowed) the filters still work, reading entries.
    "
    DO $$
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'ringlink: pg_trgm is not available (%), the journal''s text filters read every entry', SQLERRM;
    END $$;
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
            CREATE INDEX journal_message_trigrams ON journal USING gin (message gin_trgm_ops);
            CREATE INDEX journal_data_trigrams ON journal USING gin (data gin_trgm_ops);
        END IF;
    END $$;
    ",
    // 5: the outbox's counts by tenant and state (as SQLite's migration 5), kept by statement triggers: a
    // statement that claims or settles many steps changes each count once; an update that moves no step to
    // another state writes nothing.
    "
    CREATE TABLE step_counts (
        tenant TEXT   NOT NULL,
        state  TEXT   NOT NULL,
        n      BIGINT NOT NULL,
        PRIMARY KEY (tenant, state)
    );
    INSERT INTO step_counts (tenant, state, n) SELECT tenant, state, COUNT(*) FROM steps GROUP BY tenant, state;
    CREATE FUNCTION ringlink_steps_added() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO step_counts AS c (tenant, state, n)
            SELECT tenant, state, COUNT(*) FROM added GROUP BY tenant, state
            ON CONFLICT (tenant, state) DO UPDATE SET n = c.n + EXCLUDED.n;
        RETURN NULL;
    END $f$;
    CREATE FUNCTION ringlink_steps_moved() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO step_counts AS c (tenant, state, n)
            SELECT tenant, state, SUM(d) FROM (
                SELECT tenant, state, -1 AS d FROM before_update
                UNION ALL SELECT tenant, state, 1 FROM after_update
            ) AS moves GROUP BY tenant, state HAVING SUM(d) <> 0
            ON CONFLICT (tenant, state) DO UPDATE SET n = c.n + EXCLUDED.n;
        RETURN NULL;
    END $f$;
    CREATE FUNCTION ringlink_steps_removed() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO step_counts AS c (tenant, state, n)
            SELECT tenant, state, -COUNT(*) FROM removed GROUP BY tenant, state
            ON CONFLICT (tenant, state) DO UPDATE SET n = c.n + EXCLUDED.n;
        RETURN NULL;
    END $f$;
    CREATE TRIGGER step_counts_added AFTER INSERT ON steps REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION ringlink_steps_added();
    CREATE TRIGGER step_counts_moved AFTER UPDATE ON steps REFERENCING OLD TABLE AS before_update
        NEW TABLE AS after_update FOR EACH STATEMENT EXECUTE FUNCTION ringlink_steps_moved();
    CREATE TRIGGER step_counts_removed AFTER DELETE ON steps REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION ringlink_steps_removed();
    CREATE INDEX steps_open_by_created ON steps (tenant, created_at) WHERE state IN ('pending', 'in_flight');
    ",
    // 6: the claim's own indexes. The open steps in the claim's order (priority, then time, then id), so a round
    // reads the first due steps of that index instead of sorting every open step (it replaces `steps_open`, which
    // ordered by time only); the open card steps by expiry, so dropping the expired reads only those. And the
    // states of each tenant counted together (extended statistics): one tenant's open steps among another's done
    // ones are estimated as they are, not as the product of two shares.
    "
    CREATE INDEX steps_open_in_claim_order ON steps (tenant, priority DESC, next_attempt_at, id)
        WHERE state IN ('pending', 'in_flight');
    CREATE INDEX steps_open_expiring ON steps (tenant, expires_at)
        WHERE state IN ('pending', 'in_flight') AND expires_at IS NOT NULL;
    DROP INDEX steps_open;
    CREATE STATISTICS steps_tenant_state (mcv) ON tenant, state FROM steps;
    ",
    // 7: the counts by state as rows of changes, summed when read. Each count kept in one row made every
    // transaction that stores, claims or settles steps lock that row until its commit: the pipeline storing a
    // call's card waited for the worker recording the last round, one commit after the other. A statement now
    // adds its own rows, which no other transaction waits for; [`super::outbox::fold_counts`] sums them up now
    // and then.
    "
    ALTER TABLE step_counts DROP CONSTRAINT step_counts_pkey;
    CREATE INDEX step_counts_by_tenant ON step_counts (tenant, state);
    CREATE OR REPLACE FUNCTION ringlink_steps_added() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO step_counts (tenant, state, n)
            SELECT tenant, state, COUNT(*) FROM added GROUP BY tenant, state;
        RETURN NULL;
    END $f$;
    CREATE OR REPLACE FUNCTION ringlink_steps_moved() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO step_counts (tenant, state, n)
            SELECT tenant, state, SUM(d) FROM (
                SELECT tenant, state, -1 AS d FROM before_update
                UNION ALL SELECT tenant, state, 1 FROM after_update
            ) AS moves GROUP BY tenant, state HAVING SUM(d) <> 0;
        RETURN NULL;
    END $f$;
    CREATE OR REPLACE FUNCTION ringlink_steps_removed() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        INSERT INTO step_counts (tenant, state, n)
            SELECT tenant, state, -COUNT(*) FROM removed GROUP BY tenant, state;
        RETURN NULL;
    END $f$;
    ",
];

/// The schema version this build writes.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Any fixed number: the advisory lock that serialises migrations of instances starting at once.
const MIGRATION_LOCK: i64 = 0x7269_6e67_6c69_6e6b; // "ringlink"

pub async fn version(tx: &mut Tx<'_>) -> Result<i64> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = 'ringlink_schema' AND schemaname = current_schema()",
            &[],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(0);
    }
    let row = tx.query_opt("SELECT version FROM ringlink_schema", &[]).await?;
    Ok(row.map(|row| row.get::<_, i64>(0)).unwrap_or(0))
}

/// Applies the next missing migration, if any, under the migration lock; returns whether it applied one.
pub async fn migrate_one(tx: &mut Tx<'_>) -> Result<bool> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.tx
        .batch_execute("CREATE TABLE IF NOT EXISTS ringlink_schema (version BIGINT NOT NULL)")
        .await?;
    let found = version(tx).await?;
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    let Some(migration) = usize::try_from(found).ok().and_then(|index| MIGRATIONS.get(index)) else {
        return Ok(false);
    };
    tx.tx.batch_execute(migration).await?;
    tx.execute("DELETE FROM ringlink_schema", &[]).await?;
    tx.execute("INSERT INTO ringlink_schema (version) VALUES ($1)", &[&(found + 1)])
        .await?;
    Ok(true)
}
