//! [`Store`] on PostgreSQL: several ringlink instances, and several PBX ⇄ portal pairs (tenants), share one
//! database.
//!
//! Every row carries the tenant it belongs to and every statement is limited to the store's tenant, so the
//! instances of one tenant share its outbox while tenants never see each other's rows. Claims lock the rows they
//! take with `FOR UPDATE SKIP LOCKED`: two workers (in one process or in two) never hold the same step. Every
//! operation is one transaction, retried from the start when PostgreSQL reports a deadlock or a serialisation
//! failure (nothing of a failed attempt was committed).

mod directory;
mod journal;
mod lease;
mod outbox;
mod pool;
mod schema;
mod tls;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row, Statement};

use crate::error::{Result, StoreError};
use crate::leadership::Leadership;
use crate::types::*;
use crate::Store;

pub use schema::PG_SCHEMA_VERSION;

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// The tenant (one PBX ⇄ portal pair) whose rows this store reads and writes.
    pub tenant: String,
    /// At most this many connections at once.
    pub pool_size: usize,
    /// A connection attempt, and a request the server does not acknowledge at the TCP level, fail after this long
    /// (a cut network is noticed instead of waiting for the kernel's default of many minutes).
    pub timeout: Duration,
}

impl PgOptions {
    pub fn new(tenant: impl Into<String>) -> Self {
        PgOptions {
            tenant: tenant.into(),
            pool_size: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The PostgreSQL store. Clones share one pool of connections.
#[derive(Clone)]
pub struct PgStore {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    pool: pool::Pool,
    tenant: String,
    /// Set once this instance takes part in the leader election: its writes then need the lease.
    fence: std::sync::Mutex<Option<lease::Fence>>,
    /// When this store last analysed the outbox for its claims.
    analysed: std::sync::Mutex<Option<std::time::Instant>>,
    /// When this store last folded the outbox's count changes.
    folded: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The shortest time between two `ANALYZE`s a store runs for its claims.
const ANALYSE_INTERVAL: Duration = Duration::from_secs(10);
/// How often a claiming store folds the rows of count changes (at 5 calls/s, some hundreds of rows meanwhile).
const FOLD_INTERVAL: Duration = Duration::from_secs(10);

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("tenant", &self.inner.tenant)
            .finish_non_exhaustive()
    }
}

/// How a transaction may touch the database.
#[derive(Clone, Copy)]
enum Mode {
    /// Read committed, read-write: each statement sees what is committed when it starts, and row locks order the
    /// writers (the claim's `FOR UPDATE SKIP LOCKED`, the per-call advisory lock of `enqueue`).
    Write,
    /// One snapshot for every statement, read-only.
    Read,
    /// A write that is not fenced: the lease's own changes.
    Lead,
}

/// An open transaction of the store's tenant, with the connection's prepared statements.
pub(crate) struct Tx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
    tenant: &'a str,
}

impl Tx<'_> {
    async fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Runs a statement (prepared once per connection) and returns its rows.
    async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = self.statement(sql).await?;
        Ok(self.tx.query(&statement, params).await?)
    }

    async fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = self.statement(sql).await?;
        Ok(self.tx.execute(&statement, params).await?)
    }
}

/// Runs `$body` (a future using `$tx: &mut Tx`) in a transaction of `$store` and commits it; a deadlock or a
/// serialisation failure runs it again from the start. This is the one place transactions are made: a write
/// (`Mode::Write`) of a store that took part in the leader election is refused here unless it still leads.
macro_rules! transaction {
    ($store:expr, $mode:expr, |$tx:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome: Result<_> = match store.inner.pool.get() {
                Err(error) => Err(error),
                Ok(mut checkout) => futures::executor::block_on(async {
                    let conn = checkout.conn();
                    let builder = conn.client.build_transaction();
                    let mode: Mode = $mode;
                    let builder = match mode {
                        Mode::Write | Mode::Lead => builder.isolation_level(IsolationLevel::ReadCommitted),
                        Mode::Read => builder.isolation_level(IsolationLevel::RepeatableRead).read_only(true),
                    };
                    let inner = builder.start().await?;
                    let mut tx = Tx {
                        tx: inner,
                        statements: &mut conn.statements,
                        tenant: &store.inner.tenant,
                    };
                    // Fencing: a write of an instance that took part in the election commits only while the
                    // lease still carries the generation it took.
                    if let (Mode::Write, Some(fence)) = (mode, store.fence()) {
                        lease::check(&mut tx, &fence).await?;
                    }
                    let value = {
                        let $tx = &mut tx;
                        $body.await?
                    };
                    tx.tx.commit().await?;
                    Ok(value)
                }),
            };
            match outcome {
                Err(error) if attempt < 5 && is_transient(&error) => continue,
                other => break other,
            }
        }
    }};
}

/// A deadlock or a serialisation failure: the transaction was rolled back and may simply run again.
fn is_transient(error: &StoreError) -> bool {
    let StoreError::Backend(source) = error else {
        return false;
    };
    let Some(error) = source.downcast_ref::<tokio_postgres::Error>() else {
        return false;
    };
    error.code().is_some_and(|code| {
        *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    })
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or libpq's
    /// `key=value` form) as `options.tenant`, and migrates the schema. libpq's `sslmode` (`disable`, `prefer` —
    /// the default —, `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of CAs) in the URL
    /// decide TLS; see the `tls` module for what each mode checks.
    pub fn open(url: &str, options: PgOptions) -> Result<Self> {
        if options.tenant.is_empty() {
            return Err(StoreError::Invalid {
                what: "tenant",
                detail: "it is empty: name the PBX ⇄ portal pair, e.g. `office-main`".into(),
            });
        }
        let (url, tls) = tls::split(url)?;
        let tls = tls::MakeRustls::new(tls)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|error| StoreError::Invalid {
            what: "PostgreSQL URL",
            detail: format!("{error} (expected postgres://user:password@host:port/database)"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.timeout);
        }
        config.tcp_user_timeout(options.timeout);
        config.keepalives_idle(options.timeout);
        if config.get_application_name().is_none() {
            config.application_name("ringlink");
        }
        let store = PgStore {
            inner: std::sync::Arc::new(Inner {
                pool: pool::Pool::new(config, tls, options.pool_size)?,
                tenant: options.tenant,
                fence: std::sync::Mutex::new(None),
                analysed: std::sync::Mutex::new(None),
                folded: std::sync::Mutex::new(None),
            }),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The tenant this store reads and writes.
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// The most connections the pool opens.
    pub fn pool_size(&self) -> usize {
        self.inner.pool.max_size()
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64> {
        transaction!(self, Mode::Read, |tx| schema::version(tx))
    }

    fn fence(&self) -> Option<lease::Fence> {
        self.lock_fence().clone()
    }

    fn lock_fence(&self) -> std::sync::MutexGuard<'_, Option<lease::Fence>> {
        self.inner
            .fence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Before a claim: analyses the outbox when its open steps outgrew the planner's statistics (unfenced, as it
    /// changes no row, only what the planner knows), at most once in [`ANALYSE_INTERVAL`] — estimates that
    /// stay low even after an `ANALYZE` must not make every claim analyse the table again.
    fn refresh_statistics(&self) -> Result<()> {
        let recent = |at: &Option<std::time::Instant>| at.is_some_and(|at| at.elapsed() < ANALYSE_INTERVAL);
        if recent(&self.lock_analysed()) {
            return Ok(());
        }
        if transaction!(self, Mode::Lead, |tx| outbox::refresh_statistics(tx))? {
            *self.lock_analysed() = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Before a claim: folds the count changes the triggers added into one row per state, at most once in
    /// [`FOLD_INTERVAL`] (unfenced: it changes no step, and keeps every sum as it is).
    fn fold_counts(&self) -> Result<()> {
        {
            let mut folded = self
                .inner
                .folded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if folded.is_some_and(|at| at.elapsed() < FOLD_INTERVAL) {
                return Ok(());
            }
            *folded = Some(std::time::Instant::now());
        }
        transaction!(self, Mode::Lead, |tx| outbox::fold_counts(tx)).map(drop)
    }

    fn lock_analysed(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.inner
            .analysed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn migrate(&self) -> Result<()> {
        loop {
            let applied = transaction!(self, Mode::Write, |tx| schema::migrate_one(tx))?;
            if !applied {
                return Ok(());
            }
        }
    }
}

impl Store for PgStore {
    fn enqueue(&self, steps: &[NewStep], now: Timestamp) -> Result<Vec<Enqueued>> {
        transaction!(self, Mode::Write, |tx| outbox::enqueue(tx, steps, now))
    }

    fn enqueue_journaled(&self, steps: &[NewStep], entries: &[NewJournalEntry], now: Timestamp) -> Result<()> {
        // One transaction, as on SQLite: a crash never leaves planned steps without the decisions behind them.
        transaction!(self, Mode::Write, |tx| async {
            outbox::enqueue(tx, steps, now).await?;
            journal::append(tx, entries).await
        })
    }

    fn enqueue_journaled_and_claim(
        &self,
        steps: &[NewStep],
        entries: &[NewJournalEntry],
        now: Timestamp,
        claim: &ClaimNew<'_>,
    ) -> Result<ClaimOutcome> {
        transaction!(self, Mode::Write, |tx| async move {
            let enqueued = outbox::enqueue(tx, steps, now).await?;
            journal::append(tx, entries).await?;
            outbox::claim_new(tx, &enqueued, now, claim).await
        })
    }

    fn due_steps(&self, now: Timestamp, limit: usize) -> Result<Vec<Step>> {
        transaction!(self, Mode::Read, |tx| outbox::due(tx, now, limit))
    }

    fn claim(&self, ids: &[StepId], now: Timestamp, lease: Duration) -> Result<Vec<Step>> {
        transaction!(self, Mode::Write, |tx| outbox::claim(tx, ids, now, lease))
    }

    fn claim_due(&self, now: Timestamp, limit: usize, lease: Duration) -> Result<ClaimOutcome> {
        self.refresh_statistics()?;
        self.fold_counts()?;
        transaction!(self, Mode::Write, |tx| outbox::claim_due(tx, now, limit, lease, &[]))
    }

    fn claim_due_with_followers(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
        pairs: &[(&str, &str)],
    ) -> Result<ClaimOutcome> {
        self.refresh_statistics()?;
        self.fold_counts()?;
        transaction!(self, Mode::Write, |tx| outbox::claim_due(tx, now, limit, lease, pairs))
    }

    fn mark_done(&self, lease: Lease, result: &Value, now: Timestamp) -> Result<()> {
        let how = outbox::Finish::Done(result);
        transaction!(self, Mode::Write, |tx| outbox::finish(tx, lease, &how, now))
    }

    fn mark_retry(&self, lease: Lease, error: &str, next_attempt_at: Timestamp, now: Timestamp) -> Result<()> {
        let how = outbox::Finish::Retry { error, next_attempt_at };
        transaction!(self, Mode::Write, |tx| outbox::finish(tx, lease, &how, now))
    }

    fn mark_failed(&self, lease: Lease, reason: &str, now: Timestamp) -> Result<()> {
        let how = outbox::Finish::Failed(reason);
        transaction!(self, Mode::Write, |tx| outbox::finish(tx, lease, &how, now))
    }

    fn mark_dropped(&self, lease: Lease, reason: &str, now: Timestamp) -> Result<()> {
        let how = outbox::Finish::Dropped(reason);
        transaction!(self, Mode::Write, |tx| outbox::finish(tx, lease, &how, now))
    }

    fn mark_many(&self, marks: &[(Lease, Outcome)], now: Timestamp) -> Result<Vec<Lease>> {
        transaction!(self, Mode::Write, |tx| outbox::finish_many(tx, marks, &[], now))
    }

    fn mark_many_journaled(
        &self,
        marks: &[(Lease, Outcome)],
        journal: &[NewJournalEntry],
        now: Timestamp,
    ) -> Result<Vec<Lease>> {
        transaction!(self, Mode::Write, |tx| outbox::finish_many(tx, marks, journal, now))
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
        self.refresh_statistics()?;
        transaction!(self, Mode::Write, |tx| async move {
            let lost = outbox::finish_many(tx, marks, journal, now).await?;
            let next = outbox::claim_due(tx, now, limit, lease, pairs).await?;
            Ok::<_, StoreError>((lost, next))
        })
    }

    fn drop_pending(&self, idempotency_key: &str, reason: &str, now: Timestamp) -> Result<bool> {
        transaction!(self, Mode::Write, |tx| outbox::drop_pending(
            tx,
            idempotency_key,
            reason,
            now
        ))
    }

    fn drop_expired(&self, now: Timestamp) -> Result<Vec<Step>> {
        transaction!(self, Mode::Write, |tx| outbox::drop_expired(tx, now))
    }

    fn step_by_key(&self, idempotency_key: &str) -> Result<Option<Step>> {
        transaction!(self, Mode::Read, |tx| outbox::by_key(tx, idempotency_key))
    }

    fn steps_by_keys(&self, idempotency_keys: &[String]) -> Result<Vec<Step>> {
        transaction!(self, Mode::Read, |tx| outbox::by_keys(tx, idempotency_keys))
    }

    fn result_by_key(&self, idempotency_key: &str) -> Result<Option<Value>> {
        let step = self.step_by_key(idempotency_key)?;
        Ok(step
            .filter(|step| step.state == StepState::Done)
            .map(|step| step.result.unwrap_or(Value::Null)))
    }

    fn steps_of_call(&self, call_key: &str) -> Result<Vec<Step>> {
        transaction!(self, Mode::Read, |tx| outbox::of_call(tx, call_key))
    }

    fn calls_with_unmatched(&self, opening: &str, closing: &str) -> Result<Vec<String>> {
        transaction!(self, Mode::Read, |tx| outbox::calls_with_unmatched(
            tx, opening, closing
        ))
    }

    fn step_counts(&self) -> Result<StepCounts> {
        transaction!(self, Mode::Read, |tx| outbox::counts(tx))
    }

    fn reprocess(&self, scope: &ReprocessScope, now: Timestamp) -> Result<u64> {
        transaction!(self, Mode::Write, |tx| outbox::reprocess(tx, scope, now))
    }

    fn release_claims(&self, now: Timestamp) -> Result<u64> {
        transaction!(self, Mode::Write, |tx| outbox::release_claims(tx, now))
    }

    fn prune_steps(&self, before: Timestamp) -> Result<u64> {
        transaction!(self, Mode::Write, |tx| outbox::prune(tx, before))
    }

    fn append_journal(&self, entries: &[NewJournalEntry]) -> Result<()> {
        transaction!(self, Mode::Write, |tx| journal::append(tx, entries))
    }

    fn call_timeline(&self, call_key: &str) -> Result<Vec<JournalEntry>> {
        transaction!(self, Mode::Read, |tx| journal::timeline(tx, call_key))
    }

    fn recent_calls(&self, limit: usize) -> Result<Vec<CallSummary>> {
        transaction!(self, Mode::Read, |tx| journal::find_calls(
            tx,
            &CallFilter::default(),
            limit
        ))
    }

    fn find_calls(&self, filter: &CallFilter, limit: usize) -> Result<Vec<CallSummary>> {
        transaction!(self, Mode::Read, |tx| journal::find_calls(tx, filter, limit))
    }

    fn prune_journal(&self, before: Timestamp) -> Result<u64> {
        transaction!(self, Mode::Write, |tx| journal::prune(tx, before))
    }

    fn replace_users(&self, users: &[User], refreshed_at: Timestamp) -> Result<()> {
        transaction!(self, Mode::Write, |tx| directory::replace_users(
            tx,
            users,
            refreshed_at
        ))
    }

    fn users_refreshed_at(&self) -> Result<Option<Timestamp>> {
        transaction!(self, Mode::Read, |tx| directory::users_refreshed_at(tx))
    }

    fn users(&self) -> Result<Vec<User>> {
        transaction!(self, Mode::Read, |tx| directory::load_users(tx, None))
    }

    fn user_by_extension(&self, extension: &str) -> Result<Option<User>> {
        transaction!(self, Mode::Read, |tx| directory::user_by_extension(tx, extension))
    }

    fn users_by_phone(&self, numbers: &[&str]) -> Result<Vec<User>> {
        transaction!(self, Mode::Read, |tx| directory::users_by_phone(tx, numbers))
    }

    fn save_tokens(&self, portal: &str, tokens: &PortalTokens, now: Timestamp) -> Result<()> {
        transaction!(self, Mode::Write, |tx| directory::save_tokens(tx, portal, tokens, now))
    }

    fn load_tokens(&self, portal: &str) -> Result<Option<PortalTokens>> {
        transaction!(self, Mode::Read, |tx| directory::load_tokens(tx, portal))
    }

    fn set_setting(&self, key: &str, value: &Value, now: Timestamp) -> Result<()> {
        transaction!(self, Mode::Write, |tx| directory::set_setting(tx, key, value, now))
    }

    fn setting(&self, key: &str) -> Result<Option<Value>> {
        transaction!(self, Mode::Read, |tx| directory::setting(tx, key))
    }

    fn delete_setting(&self, key: &str) -> Result<bool> {
        transaction!(self, Mode::Write, |tx| directory::delete_setting(tx, key))
    }

    fn settings(&self) -> Result<Vec<(String, Value)>> {
        transaction!(self, Mode::Read, |tx| directory::all_settings(tx))
    }

    fn accept_click(&self, call_id: &str, call_key: &str, request: &Value, now: Timestamp) -> Result<bool> {
        transaction!(self, Mode::Write, |tx| directory::accept_click(
            tx, call_id, call_key, request, now
        ))
    }

    fn open_clicks(&self, since: Timestamp) -> Result<Vec<(String, Value)>> {
        transaction!(self, Mode::Read, |tx| directory::open_clicks(tx, since))
    }

    fn close_click(&self, call_key: &str, now: Timestamp) -> Result<()> {
        transaction!(self, Mode::Write, |tx| directory::close_click(tx, call_key, now))
    }

    fn lead(&self, holder: &str, duration: Duration) -> Result<Leadership> {
        let mine = self
            .fence()
            .filter(|fence| fence.holder == holder && !fence.resigned)
            .map(|fence| fence.generation);
        let (leadership, held) = transaction!(self, Mode::Lead, |tx| lease::lead(tx, holder, mine, duration))?;
        // A standby that never led writes only what its operator asks for (the admin UI); one that led keeps its
        // old generation, which every write now fails against.
        if let Some(generation) = held {
            *self.lock_fence() = Some(lease::Fence {
                holder: holder.to_owned(),
                generation,
                resigned: false,
            });
        }
        Ok(leadership)
    }

    fn resign(&self, holder: &str) -> Result<()> {
        let Some(fence) = self.fence().filter(|fence| fence.holder == holder) else {
            return Ok(());
        };
        if let Some(fence) = self.lock_fence().as_mut() {
            fence.resigned = true;
        }
        transaction!(self, Mode::Lead, |tx| lease::resign(tx, &fence))
    }

    fn for_reports(&self) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(self.clone())
    }
}
