//! [`Store`] on an embedded SQLite database.

mod clicks;
mod directory;
mod journal;
mod outbox;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::types::*;
use crate::Store;

pub use schema::SCHEMA_VERSION;

/// When SQLite makes a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is fsynced to the write-ahead log before it returns: an acknowledged step survives a crash of
    /// the process *and* of the machine (power loss, kernel panic). The default, because an enqueued step that
    /// vanishes is a call missing from the CRM, and the outbox writes a few rows per call, far below what one
    /// fsync per commit allows.
    #[default]
    Full,
    /// With WAL, commits survive a crash of the process (the OS holds the log) but the last ones may be lost if the
    /// machine loses power; the database stays consistent either way. For tests and throwaway databases.
    Normal,
}

/// How to open the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// How long a write waits for another process holding the write lock before failing.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The SQLite store. Clones share one connection behind a mutex: SQLite allows a single writer anyway, and each
/// operation holds the lock for one short transaction. A database in a file also has a few read-only
/// connections, used by the handle [`Store::for_reports`] gives: a slow report (the journal page's substring
/// search) reads there, in WAL's snapshot, and never holds the writer's lock that the call pipeline waits for.
#[derive(Clone)]
pub struct SqliteStore {
    // The readers close first: the writer, closing last, checkpoints the log and removes it.
    readers: Option<Arc<Readers>>,
    conn: Arc<Mutex<Connection>>,
    /// This handle's reads go to `readers` (the handle [`Store::for_reports`] gave).
    reports: bool,
}

/// How many read-only connections a store in a file has: reports wait for each other only past this many at once.
const READERS: usize = 2;

/// The read-only connections, each used by one report at a time.
struct Readers {
    connections: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    fn open(path: &Path, options: SqliteOptions) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connections = (0..READERS)
            .map(|_| {
                let conn = Connection::open_with_flags(path, flags)?;
                // A reader waits (it is never refused) while the log is being reset after a checkpoint.
                conn.busy_timeout(options.busy_timeout)?;
                conn.set_prepared_statement_cache_capacity(64);
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_>>()?;
        Ok(Readers {
            connections,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A free reader if there is one, else the next in turn once it is free.
    fn take(&self) -> std::sync::MutexGuard<'_, Connection> {
        for conn in &self.connections {
            match conn.try_lock() {
                Ok(conn) => return conn,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.connections.len();
        // As for the writer: a panic inside a read transaction rolled it back, the connection is sound.
        self.connections[turn].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with the default options, and migrates its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        // The file as SQLite resolved it; none for a database in memory, which no other connection can see.
        let file = conn.path().filter(|file| !file.is_empty()).map(PathBuf::from);
        let mut store = Self::setup(conn, options)?;
        if let Some(file) = file {
            // After the migrations: a reader sees the schema of this build.
            store.readers = Some(Arc::new(Readers::open(&file, options)?));
        }
        Ok(store)
    }

    /// A private database in memory (tests, `ringlink replay`). Nothing survives the last clone. It has no
    /// connection but its one: reports read there too.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?, SqliteOptions::default())
    }

    fn setup(mut conn: Connection, options: SqliteOptions) -> Result<Self> {
        conn.busy_timeout(options.busy_timeout)?;
        // Every statement of the store stays prepared (the default cache of 16 is smaller than the store's set).
        conn.set_prepared_statement_cache_capacity(64);
        // WAL: readers never block the writer, and a commit is one append to the log. In-memory databases
        // answer "memory", which is fine.
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(StoreError::Corrupt {
                what: "journal mode",
                detail: format!("cannot switch to WAL ({mode})"),
            });
        }
        let synchronous = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            readers: None,
            reports: false,
        })
    }

    /// Bytes SQLite holds for every connection of the process (page caches, prepared statements, schema):
    /// shown by `/metrics` so that a resident size that grows can be told apart from SQLite's caches filling.
    pub fn memory_in_use() -> u64 {
        // SAFETY: sqlite3_memory_used only reads SQLite's own counter (it takes the memory mutex).
        let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
        u64::try_from(used).unwrap_or(0)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        schema::version(&self.lock())
    }

    /// SQLite's full integrity check: empty when the file is sound, else its complaints. Reads the whole file.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut statement = conn.prepare("PRAGMA integrity_check")?;
        let lines = statement
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(lines.into_iter().filter(|line| line != "ok").collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while the lock was held rolled its transaction back when the transaction was dropped, so the
        // connection is still sound.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` in a write transaction, taking the write lock up front so it cannot fail half-way on a lock
    /// upgrade, and commits if it succeeds.
    fn write<T>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = work(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `work` in a read transaction: it sees one consistent snapshot. On a report handle, on a reader.
    fn read<T>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        match &self.readers {
            Some(readers) if self.reports => Self::read_on(&mut readers.take(), work),
            _ => Self::read_on(&mut self.lock(), work),
        }
    }

    fn read_on<T>(conn: &mut Connection, work: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let value = work(&tx)?;
        tx.finish()?;
        Ok(value)
    }

    /// Runs `work` in a read transaction on one of the read-only connections reports use (on the writer's
    /// connection for a database in memory): a report the [`Store`] trait has no method for, e.g. several reads
    /// from one snapshot. The writer goes on writing meanwhile; `work` sees none of it.
    pub fn read_report<T>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.for_reports_handle().read(work)
    }

    fn for_reports_handle(&self) -> SqliteStore {
        SqliteStore {
            reports: true,
            ..self.clone()
        }
    }
}

impl Store for SqliteStore {
    fn enqueue(&self, steps: &[NewStep], now: Timestamp) -> Result<Vec<Enqueued>> {
        self.write(|tx| outbox::enqueue(tx, steps, now))
    }

    fn enqueue_journaled(&self, steps: &[NewStep], journal: &[NewJournalEntry], now: Timestamp) -> Result<()> {
        self.write(|tx| {
            outbox::enqueue(tx, steps, now)?;
            journal::append(tx, journal)
        })
    }

    fn enqueue_journaled_and_claim(
        &self,
        steps: &[NewStep],
        journal: &[NewJournalEntry],
        now: Timestamp,
        claim: &ClaimNew<'_>,
    ) -> Result<ClaimOutcome> {
        self.write(|tx| {
            let enqueued = outbox::enqueue(tx, steps, now)?;
            journal::append(tx, journal)?;
            outbox::claim_new(tx, &enqueued, now, claim)
        })
    }

    fn due_steps(&self, now: Timestamp, limit: usize) -> Result<Vec<Step>> {
        self.read(|tx| outbox::due(tx, now, limit))
    }

    fn claim(&self, ids: &[StepId], now: Timestamp, lease: Duration) -> Result<Vec<Step>> {
        self.write(|tx| outbox::claim(tx, ids, now, lease))
    }

    fn claim_due(&self, now: Timestamp, limit: usize, lease: Duration) -> Result<ClaimOutcome> {
        self.write(|tx| outbox::claim_due(tx, now, limit, lease))
    }

    fn claim_due_with_followers(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
        pairs: &[(&str, &str)],
    ) -> Result<ClaimOutcome> {
        self.write(|tx| outbox::claim_due_with_followers(tx, now, limit, lease, pairs))
    }

    fn mark_done(&self, lease: Lease, result: &Value, now: Timestamp) -> Result<()> {
        self.write(|tx| outbox::finish(tx, lease, outbox::Finish::Done(result), now))
    }

    fn mark_retry(&self, lease: Lease, error: &str, next_attempt_at: Timestamp, now: Timestamp) -> Result<()> {
        self.write(|tx| outbox::finish(tx, lease, outbox::Finish::Retry { error, next_attempt_at }, now))
    }

    fn mark_failed(&self, lease: Lease, reason: &str, now: Timestamp) -> Result<()> {
        self.write(|tx| outbox::finish(tx, lease, outbox::Finish::Failed(reason), now))
    }

    fn mark_dropped(&self, lease: Lease, reason: &str, now: Timestamp) -> Result<()> {
        self.write(|tx| outbox::finish(tx, lease, outbox::Finish::Dropped(reason), now))
    }

    fn mark_many(&self, marks: &[(Lease, Outcome)], now: Timestamp) -> Result<Vec<Lease>> {
        self.write(|tx| outbox::finish_many(tx, marks, now))
    }

    fn mark_many_journaled(
        &self,
        marks: &[(Lease, Outcome)],
        journal: &[NewJournalEntry],
        now: Timestamp,
    ) -> Result<Vec<Lease>> {
        self.write(|tx| {
            let lost = outbox::finish_many(tx, marks, now)?;
            journal::append(tx, journal)?;
            Ok(lost)
        })
    }

    fn mark_many_journaled_and_claim(
        &self,
        marks: &[(Lease, Outcome)],
        journal: &[NewJournalEntry],
        now: Timestamp,
        limit: usize,
        lease: Duration,
        pairs: &[(&str, &str)],
    ) -> Result<(Vec<Lease>, ClaimOutcome)> {
        self.write(|tx| {
            let lost = outbox::finish_many(tx, marks, now)?;
            journal::append(tx, journal)?;
            let next = outbox::claim_due_with_followers(tx, now, limit, lease, pairs)?;
            Ok((lost, next))
        })
    }

    fn drop_pending(&self, idempotency_key: &str, reason: &str, now: Timestamp) -> Result<bool> {
        self.write(|tx| outbox::drop_pending(tx, idempotency_key, reason, now))
    }

    fn drop_expired(&self, now: Timestamp) -> Result<Vec<Step>> {
        self.write(|tx| outbox::drop_expired(tx, now))
    }

    fn step_by_key(&self, idempotency_key: &str) -> Result<Option<Step>> {
        self.read(|tx| outbox::by_key(tx, idempotency_key))
    }

    fn steps_by_keys(&self, idempotency_keys: &[String]) -> Result<Vec<Step>> {
        self.read(|tx| outbox::by_keys(tx, idempotency_keys))
    }

    fn result_by_key(&self, idempotency_key: &str) -> Result<Option<Value>> {
        let step = self.step_by_key(idempotency_key)?;
        Ok(step
            .filter(|step| step.state == StepState::Done)
            .map(|step| step.result.unwrap_or(Value::Null)))
    }

    fn steps_of_call(&self, call_key: &str) -> Result<Vec<Step>> {
        self.read(|tx| outbox::of_call(tx, call_key))
    }

    fn calls_with_unmatched(&self, opening: &str, closing: &str) -> Result<Vec<String>> {
        self.read(|tx| outbox::calls_with_unmatched(tx, opening, closing))
    }

    fn step_counts(&self) -> Result<StepCounts> {
        self.read(outbox::counts)
    }

    fn reprocess(&self, scope: &ReprocessScope, now: Timestamp) -> Result<u64> {
        self.write(|tx| outbox::reprocess(tx, scope, now))
    }

    fn release_claims(&self, now: Timestamp) -> Result<u64> {
        self.write(|tx| outbox::release_claims(tx, now))
    }

    fn prune_steps(&self, before: Timestamp) -> Result<u64> {
        self.write(|tx| outbox::prune(tx, before))
    }

    fn append_journal(&self, entries: &[NewJournalEntry]) -> Result<()> {
        self.write(|tx| journal::append(tx, entries))
    }

    fn call_timeline(&self, call_key: &str) -> Result<Vec<JournalEntry>> {
        self.read(|tx| journal::timeline(tx, call_key))
    }

    fn recent_calls(&self, limit: usize) -> Result<Vec<CallSummary>> {
        self.read(|tx| journal::recent_calls(tx, limit))
    }

    fn find_calls(&self, filter: &CallFilter, limit: usize) -> Result<Vec<CallSummary>> {
        self.read(|tx| journal::find_calls(tx, filter, limit))
    }

    fn prune_journal(&self, before: Timestamp) -> Result<u64> {
        self.write(|tx| journal::prune(tx, before))
    }

    fn replace_users(&self, users: &[User], refreshed_at: Timestamp) -> Result<()> {
        self.write(|tx| directory::replace_users(tx, users, refreshed_at))
    }

    fn users_refreshed_at(&self) -> Result<Option<Timestamp>> {
        self.read(directory::users_refreshed_at)
    }

    fn users(&self) -> Result<Vec<User>> {
        self.read(directory::all_users)
    }

    fn user_by_extension(&self, extension: &str) -> Result<Option<User>> {
        self.read(|tx| directory::user_by_extension(tx, extension))
    }

    fn users_by_phone(&self, numbers: &[&str]) -> Result<Vec<User>> {
        self.read(|tx| directory::users_by_phone(tx, numbers))
    }

    fn save_tokens(&self, portal: &str, tokens: &PortalTokens, now: Timestamp) -> Result<()> {
        self.write(|tx| directory::save_tokens(tx, portal, tokens, now))
    }

    fn load_tokens(&self, portal: &str) -> Result<Option<PortalTokens>> {
        self.read(|tx| directory::load_tokens(tx, portal))
    }

    fn set_setting(&self, key: &str, value: &Value, now: Timestamp) -> Result<()> {
        self.write(|tx| directory::set_setting(tx, key, value, now))
    }

    fn setting(&self, key: &str) -> Result<Option<Value>> {
        self.read(|tx| directory::setting(tx, key))
    }

    fn delete_setting(&self, key: &str) -> Result<bool> {
        self.write(|tx| directory::delete_setting(tx, key))
    }

    fn settings(&self) -> Result<Vec<(String, Value)>> {
        self.read(directory::all_settings)
    }

    fn accept_click(&self, call_id: &str, call_key: &str, request: &Value, now: Timestamp) -> Result<bool> {
        self.write(|tx| clicks::accept(tx, call_id, call_key, request, now))
    }

    fn open_clicks(&self, since: Timestamp) -> Result<Vec<(String, Value)>> {
        self.read(|tx| clicks::open(tx, since))
    }

    fn close_click(&self, call_key: &str, now: Timestamp) -> Result<()> {
        self.write(|tx| clicks::close(tx, call_key, now))
    }

    fn for_reports(&self) -> Arc<dyn Store> {
        Arc::new(self.for_reports_handle())
    }
}
