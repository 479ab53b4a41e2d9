//! The durable store of ringlink: the outbox of CRM steps, the call journal, the Bitrix24 users cache, OAuth
//! tokens and settings.
//!
//! [`Store`] is the interface; [`SqliteStore`] implements it on an embedded SQLite database (WAL, full sync), the
//! default for one office, and [`PgStore`] on PostgreSQL, for a standby on a second machine or many PBX ⇄ portal
//! pairs (tenants) in one database. The API is synchronous and every operation is one transaction; async code
//! calls it through `tokio::task::spawn_blocking` on a clone of the store (clones share one connection, or one
//! pool; [`Store::for_reports`] is a handle whose reads go on connections of their own). `PgStore` may also be called on an async thread: its sockets run on a runtime of its own, and a call
//! only blocks its thread as a SQLite call does.
//!
//! # The outbox
//! Every CRM step is written here *before* it is sent. A step belongs to a call (`call_key`) and has an
//! idempotency key that is unique across the outbox: enqueueing a key that already exists writes nothing and
//! returns the stored step, so the engine may re-plan a call after a restart and enqueue the same steps again.
//! Steps of one call are sent in the order they were enqueued (`seq`): a step is *due* when it is pending, its
//! `next_attempt_at` has come, it has not expired, and every earlier step of its call is done, dropped or failed.
//! Hence at most one step per call is due at a time, and steps of different calls are independent (the worker
//! may batch them).
//!
//! A worker loop:
//! ```no_run
//! # use std::time::Duration;
//! # use store::{Store, SqliteStore, Timestamp};
//! # fn send(_: &store::Step) -> Result<serde_json::Value, String> { Ok(serde_json::json!({})) }
//! # fn main() -> Result<(), store::StoreError> {
//! let store = SqliteStore::open("ringlink.db")?;
//! let now = Timestamp::now();
//! let outcome = store.claim_due(now, 50, Duration::from_secs(60))?;
//! for step in &outcome.claimed {
//!     match send(step) {
//!         Ok(answer) => store.mark_done(step.lease(), &answer, Timestamp::now())?,
//!         Err(error) => store.mark_retry(step.lease(), &error, now.saturating_add(Duration::from_secs(5)), now)?,
//!     }
//! }
//! # Ok(()) }
//! ```
//! A worker that sends a Bitrix24 `batch` records all its answers at once with [`Store::mark_many`] (one disk
//! sync instead of one per step). A worker that crashes leaves its steps in flight; when their lease runs out they are due again (sending is
//! at-least-once; the CRM side is made idempotent by `EXTERNAL_CALL_ID`).

mod codec;
mod error;
pub mod leadership;
mod postgres;
mod sqlite;
mod types;

use std::time::Duration;

use serde_json::Value;

pub use error::{Result, StoreError};
pub use leadership::Leadership;
pub use postgres::{PgOptions, PgStore, PG_SCHEMA_VERSION};
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous, SCHEMA_VERSION};
pub use types::{
    CallFilter, CallResult, CallSummary, ClaimNew, ClaimOutcome, Enqueued, EntryKind, JournalEntry, Lease,
    NewJournalEntry, NewStep, Outcome, PortalTokens, ReprocessScope, Step, StepCounts, StepId, StepState, Timestamp,
    User, UserPhone, EXTENSION_FIELD,
};

/// The storage interface. Every method is one atomic transaction: after it returns `Ok`, its effect survives a
/// crash of the process; after it returns `Err` or the process dies inside it, nothing of it was written.
///
/// Implementations must be safe to share between threads and, for shared backends, between processes.
///
/// # On PostgreSQL
/// Several ringlink instances can share one outbox in PostgreSQL ([`PgStore`]). [`Store::claim_due`] is then one
/// statement that locks the rows it takes and skips rows another instance is taking:
/// ```sql
/// WITH due AS (
///   SELECT id FROM steps s
///   WHERE s.tenant = $tenant
///     AND (s.state = 'pending' OR (s.state = 'in_flight' AND s.lease_until <= $now))
///     AND s.next_attempt_at <= $now AND (s.expires_at IS NULL OR s.expires_at > $now)
///     AND NOT EXISTS (SELECT 1 FROM steps e WHERE e.tenant = s.tenant AND e.call_key = s.call_key
///                     AND e.seq < s.seq AND e.state IN ('pending', 'in_flight'))
///   ORDER BY s.priority DESC, s.next_attempt_at, s.id
///   LIMIT $limit
///   FOR UPDATE SKIP LOCKED)
/// UPDATE steps s SET state = 'in_flight', attempts = s.attempts + 1, lease_until = $now + $lease, updated_at = $now
/// FROM due WHERE s.id = due.id RETURNING s.*;
/// ```
/// Per-call order still holds across instances: a later step of a call is not due while an earlier one is
/// pending or in flight in any committed state, and the earlier one is locked by whoever claims it. The
/// idempotent enqueue is `INSERT … ON CONFLICT (tenant, idempotency_key) DO NOTHING`, with the per-call `seq`
/// taken under a `pg_advisory_xact_lock` on the tenant and call key.
pub trait Store: Send + Sync {
    // ---- outbox ----

    /// Adds steps in one transaction, in order. A step whose idempotency key exists is not written; the stored
    /// one is returned with `created: false`. New steps of a call are placed after every step the call already
    /// has. Returns one [`Enqueued`] per input, in input order.
    fn enqueue(&self, steps: &[NewStep], now: Timestamp) -> Result<Vec<Enqueued>>;

    /// [`Store::enqueue`] and [`Store::append_journal`] together: what call events planned (their steps, the
    /// events and decisions behind them) costs one disk sync where the store can make it one transaction.
    fn enqueue_journaled(&self, steps: &[NewStep], journal: &[NewJournalEntry], now: Timestamp) -> Result<()> {
        self.enqueue(steps, now)?;
        self.append_journal(journal)
    }

    /// [`Store::enqueue_journaled`], and in the same transaction, claims each step it created whose kind is one
    /// of `claim.kinds` and that is due, up to `claim.limit` of them, each with its followers by `claim.pairs`
    /// (as [`Store::claim_due_with_followers`] does), for `claim.lease`. The caller hands the claim to its
    /// worker in memory: a card goes to the CRM right after the one disk sync that stored it, with no claim of
    /// the worker's own in between. A claimed step that is never sent (the process died) is due again once the
    /// lease runs out, or at the next start ([`Store::release_claims`]); claimed once, it is sent once.
    fn enqueue_journaled_and_claim(
        &self,
        steps: &[NewStep],
        journal: &[NewJournalEntry],
        now: Timestamp,
        claim: &ClaimNew<'_>,
    ) -> Result<ClaimOutcome>;

    /// The steps due at `now`, at most `limit`, highest priority then earliest first; at most one per call.
    /// Read-only: it does not claim them. A step in flight whose lease ran out counts as due again.
    fn due_steps(&self, now: Timestamp, limit: usize) -> Result<Vec<Step>>;

    /// Claims the given steps for `lease`: each one still due is marked in flight and its attempt counted. Steps
    /// no longer due (claimed by someone else, marked, not yet reachable) are left out of the result.
    fn claim(&self, ids: &[StepId], now: Timestamp, lease: Duration) -> Result<Vec<Step>>;

    /// What a worker calls each round, in one transaction: drops expired steps, then claims up to `limit` due ones.
    fn claim_due(&self, now: Timestamp, limit: usize, lease: Duration) -> Result<ClaimOutcome>;

    /// [`Store::claim_due`], and in the same transaction, for each claimed step whose kind is the first of a
    /// pair in `pairs`, also the very next step of its call when that is of the pair's second kind and due, and
    /// so on from that step (e.g. a register and the shows after it, a finish and the recording attached after
    /// it: they can go in one `batch`, in order). Followers are in flight like any claimed step, in call
    /// order; the caller sends them after their leader or marks them.
    fn claim_due_with_followers(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
        pairs: &[(&str, &str)],
    ) -> Result<ClaimOutcome>;

    /// The step was sent and acknowledged; `result` is the CRM's answer, readable later by idempotency key.
    fn mark_done(&self, lease: Lease, result: &Value, now: Timestamp) -> Result<()>;

    /// The attempt failed in a way worth retrying; the step is pending again from `next_attempt_at`.
    fn mark_retry(&self, lease: Lease, error: &str, next_attempt_at: Timestamp, now: Timestamp) -> Result<()>;

    /// The step can never succeed (e.g. the CRM rejects its parameters); later steps of the call go ahead.
    fn mark_failed(&self, lease: Lease, reason: &str, now: Timestamp) -> Result<()>;

    /// The step is not to be sent after all (e.g. its card would come too late).
    fn mark_dropped(&self, lease: Lease, reason: &str, now: Timestamp) -> Result<()>;

    /// Records the outcomes of several attempts in one transaction (one disk sync for a whole `batch` call).
    /// Returns the leases that were no longer current; nothing was changed for those, the rest were recorded.
    fn mark_many(&self, marks: &[(Lease, Outcome)], now: Timestamp) -> Result<Vec<Lease>>;

    /// [`Store::mark_many`] and [`Store::append_journal`] in one transaction: a worker's whole round (every
    /// answer of its `batch` and the journal entries about them) costs one disk sync. The journal is appended
    /// even for leases that were no longer current (what was sent stays on record).
    fn mark_many_journaled(
        &self,
        marks: &[(Lease, Outcome)],
        journal: &[NewJournalEntry],
        now: Timestamp,
    ) -> Result<Vec<Lease>>;

    /// [`Store::mark_many_journaled`] and then [`Store::claim_due_with_followers`] for the next round, in one
    /// transaction: a busy worker's round costs one disk sync instead of two (its outcomes, and its successor's
    /// claim, are written together). Returns the leases no longer current and the next round's claim.
    fn mark_many_journaled_and_claim(
        &self,
        marks: &[(Lease, Outcome)],
        journal: &[NewJournalEntry],
        now: Timestamp,
        limit: usize,
        lease: Duration,
        pairs: &[(&str, &str)],
    ) -> Result<(Vec<Lease>, ClaimOutcome)>;

    /// Drops a step nobody holds (pending, or in flight with its lease run out), e.g. a card step made pointless
    /// by the leg ending. Returns false if the key is unknown or the step is claimed or already terminal.
    fn drop_pending(&self, idempotency_key: &str, reason: &str, now: Timestamp) -> Result<bool>;

    /// Drops every step nobody holds whose `expires_at` has come; returns them.
    fn drop_expired(&self, now: Timestamp) -> Result<Vec<Step>>;

    /// The stored step with this idempotency key.
    fn step_by_key(&self, idempotency_key: &str) -> Result<Option<Step>>;

    /// The result of a done step (`None` if the step is unknown or not done yet).
    fn result_by_key(&self, idempotency_key: &str) -> Result<Option<Value>>;

    /// The stored steps with these idempotency keys (unknown keys left out), read from one snapshot: everything
    /// a round of the outbox worker looks up before deciding, in one read instead of one per step.
    fn steps_by_keys(&self, idempotency_keys: &[String]) -> Result<Vec<Step>>;

    /// All steps of a call, in order.
    fn steps_of_call(&self, call_key: &str) -> Result<Vec<Step>>;

    /// Calls with more steps of kind `opening` (not failed or dropped) than of kind `closing`, oldest first:
    /// e.g. registrations that were never followed by a finish.
    fn calls_with_unmatched(&self, opening: &str, closing: &str) -> Result<Vec<String>>;

    fn step_counts(&self) -> Result<StepCounts>;

    /// Sets failed and dropped steps back to pending, due at `now`, with their attempts reset. Steps whose
    /// `expires_at` has passed stay dropped: a card is about now. Returns how many were reset.
    fn reprocess(&self, scope: &ReprocessScope, now: Timestamp) -> Result<u64>;

    /// Puts every step in flight back to pending, due at `now` (its attempt stays counted). Only for an outbox
    /// one process works on, at that process's start: the steps a crashed run held come due at once instead of
    /// when their lease runs out. Returns how many.
    fn release_claims(&self, now: Timestamp) -> Result<u64>;

    /// Deletes the steps of calls whose every step is terminal and was last updated before `before`. Their
    /// idempotency keys are forgotten: keep `before` well past the longest time a call can be re-planned.
    fn prune_steps(&self, before: Timestamp) -> Result<u64>;

    // ---- journal ----

    /// Appends entries in one transaction.
    fn append_journal(&self, entries: &[NewJournalEntry]) -> Result<()>;

    /// A call's entries by time, then append order.
    fn call_timeline(&self, call_key: &str) -> Result<Vec<JournalEntry>>;

    /// The calls with the latest journal activity, latest first.
    fn recent_calls(&self, limit: usize) -> Result<Vec<CallSummary>>;

    /// The calls matching `filter`, latest activity first, at most `limit` (the admin UI's journal).
    fn find_calls(&self, filter: &CallFilter, limit: usize) -> Result<Vec<CallSummary>>;

    /// Deletes journal entries older than `before`; returns how many.
    fn prune_journal(&self, before: Timestamp) -> Result<u64>;

    // ---- users cache ----

    /// Replaces the whole cache with `users` (one transaction: readers see the old set or the new one).
    fn replace_users(&self, users: &[User], refreshed_at: Timestamp) -> Result<()>;

    /// When the cache was last replaced (`None`: never).
    fn users_refreshed_at(&self) -> Result<Option<Timestamp>>;

    /// Every cached user, by id.
    fn users(&self) -> Result<Vec<User>>;

    /// The user whose `UF_PHONE_INNER` is `extension`; an active one first, then the lowest id.
    fn user_by_extension(&self, extension: &str) -> Result<Option<User>>;

    /// Users with a phone (any field) equal to one of `numbers` (exact text: pass the normalised variants).
    fn users_by_phone(&self, numbers: &[&str]) -> Result<Vec<User>>;

    // ---- OAuth tokens ----

    fn save_tokens(&self, portal: &str, tokens: &PortalTokens, now: Timestamp) -> Result<()>;

    fn load_tokens(&self, portal: &str) -> Result<Option<PortalTokens>>;

    // ---- settings ----

    fn set_setting(&self, key: &str, value: &Value, now: Timestamp) -> Result<()>;

    fn setting(&self, key: &str) -> Result<Option<Value>>;

    /// Returns false if there was no such key.
    fn delete_setting(&self, key: &str) -> Result<bool>;

    /// Every setting, by key.
    fn settings(&self) -> Result<Vec<(String, Value)>>;

    // ---- click-to-call requests ----

    /// Records a click-to-call request under its Bitrix24 `CALL_ID`; false if that `CALL_ID` was seen before
    /// (a repeated delivery: nothing is dialled again).
    fn accept_click(&self, call_id: &str, call_key: &str, request: &Value, now: Timestamp) -> Result<bool>;

    /// Requests received since `since` whose call has not been closed: `(call_key, request)`, oldest first.
    fn open_clicks(&self, since: Timestamp) -> Result<Vec<(String, Value)>>;

    /// The call of a click is over (finished in Bitrix24 or refused).
    fn close_click(&self, call_key: &str, now: Timestamp) -> Result<()>;

    // ---- leadership (see [`leadership`]) ----

    /// Takes or renews the tenant's lease for instance `holder` (a name unique to this process) for `lease`, or
    /// says who holds it. Once an instance has called this, every write of its store checks that it still holds
    /// the generation it took (fencing): after another instance's takeover they fail with
    /// [`StoreError::Fenced`]. An embedded store has one instance only: [`Leadership::Sole`], nothing fenced.
    fn lead(&self, holder: &str, lease: Duration) -> Result<Leadership> {
        let _ = (holder, lease);
        Ok(Leadership::Sole)
    }

    /// Gives the lease up at once if `holder` holds it (a clean stop: the standby need not wait for it to
    /// expire). Writes of this store are refused from then on.
    fn resign(&self, holder: &str) -> Result<()> {
        let _ = holder;
        Ok(())
    }

    // ---- reports ----

    /// The same store for reports (the admin UI's journal, a call's timeline, status): every method as here,
    /// but its reads never wait for the call pipeline's writes nor hold them up. SQLite reads on read-only
    /// connections of their own (WAL lets them read while the writer writes); PostgreSQL's pool already gives
    /// each caller its own connection.
    fn for_reports(&self) -> std::sync::Arc<dyn Store>;
}

/// The kinds that may follow a step of `kind` in the same claim, by `pairs` (leader kind, follower kind).
pub(crate) fn follower_kinds<'a>(pairs: &[(&str, &'a str)], kind: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(first, _)| *first == kind)
        .map(|(_, then)| *then)
        .collect()
}
