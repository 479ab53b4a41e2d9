//! The values the store reads and writes. None of them knows about SQL.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An instant in UTC, as microseconds since the Unix epoch (the same unit the tracker uses for AMI timestamps).
///
/// The store never reads a clock: every operation that writes a time takes `now` from the caller, which keeps
/// tests deterministic and lets replays run on recorded time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn from_millis(millis: i64) -> Self {
        Self(millis.saturating_mul(1_000))
    }

    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1_000_000))
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The system clock, for callers at the edge (the store itself never calls this).
    pub fn now() -> Self {
        let micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Self(micros)
    }

    pub fn saturating_add(self, by: Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(by.as_micros()).unwrap_or(i64::MAX)))
    }

    pub fn saturating_sub(self, by: Duration) -> Self {
        Self(self.0.saturating_sub(i64::try_from(by.as_micros()).unwrap_or(i64::MAX)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

/// Identifies a step; assigned by the store, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StepId(pub i64);

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a step is in its life.
///
/// ```text
/// enqueue ─▶ Pending ──claim──▶ InFlight ──mark_done──▶ Done
///              ▲  ▲                │ │ └──mark_failed──▶ Failed ─┐
///              │  └───mark_retry───┘ └───mark_dropped─▶ Dropped ─┤
///              │     (or lease expiry)     (or expiry, drop_pending)│
///              └──────────────────── reprocess ───────────────────┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting to be sent (possibly not before `next_attempt_at`, possibly behind earlier steps of its call).
    Pending,
    /// Claimed by a worker until `lease_until`; after that it may be claimed again.
    InFlight,
    /// Sent and acknowledged; `result` holds the answer.
    Done,
    /// Not sent on purpose (expired card step, or withdrawn); `last_error` says why.
    Dropped,
    /// Given up on: the CRM refused it permanently; `last_error` says why.
    Failed,
}

impl StepState {
    pub const ALL: [StepState; 5] = [
        StepState::Pending,
        StepState::InFlight,
        StepState::Done,
        StepState::Dropped,
        StepState::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::InFlight => "in_flight",
            StepState::Done => "done",
            StepState::Dropped => "dropped",
            StepState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Done, dropped and failed steps no longer hold back the later steps of their call.
    pub const fn is_terminal(self) -> bool {
        matches!(self, StepState::Done | StepState::Dropped | StepState::Failed)
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step to put in the outbox.
///
/// Build with [`NewStep::new`] and the optional setters:
/// ```
/// # use store::{NewStep, Timestamp};
/// let step = NewStep::new("1700000000.42", "1700000000.42/101/show", "show", serde_json::json!({"USER_ID": [7]}))
///     .expires_at(Timestamp::from_secs(1_700_000_030))
///     .priority(10);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    /// Groups the steps that must be sent in order (the engine uses the call's linkedid).
    pub call_key: String,
    /// Unique over the whole outbox; enqueueing a key that exists changes nothing.
    pub idempotency_key: String,
    /// What to do (`register`, `show`, `finish`, …): the engine's vocabulary, stored as text.
    pub kind: String,
    pub payload: Value,
    /// Higher goes first among steps that are due at the same time (card steps over record keeping).
    pub priority: i32,
    /// Not sent before this instant (the step is still ordered within its call).
    pub not_before: Option<Timestamp>,
    /// If not sent by then, the step is dropped instead (show/hide are about now).
    pub expires_at: Option<Timestamp>,
}

impl NewStep {
    pub fn new(
        call_key: impl Into<String>,
        idempotency_key: impl Into<String>,
        kind: impl Into<String>,
        payload: Value,
    ) -> Self {
        NewStep {
            call_key: call_key.into(),
            idempotency_key: idempotency_key.into(),
            kind: kind.into(),
            payload,
            priority: 0,
            not_before: None,
            expires_at: None,
        }
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn not_before(mut self, at: Timestamp) -> Self {
        self.not_before = Some(at);
        self
    }

    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub id: StepId,
    pub call_key: String,
    /// Position within the call, from 1, assigned at enqueue: a step is due only when every step of its call with
    /// a lower `seq` is terminal.
    pub seq: i64,
    pub idempotency_key: String,
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    pub state: StepState,
    /// How many times the step was claimed (a claim is an attempt, even if the worker then crashed).
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    /// While in flight: when the claim runs out and the step may be claimed again.
    pub lease_until: Option<Timestamp>,
    /// The error of the last attempt, or why the step failed or was dropped.
    pub last_error: Option<String>,
    /// The CRM's answer, once done (e.g. `{"CALL_ID": "…"}` for a register).
    pub result: Option<Value>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Step {
    /// The proof of the current claim, to hand back with `mark_*`. Meaningful only for a step in flight.
    pub fn lease(&self) -> Lease {
        Lease {
            step: self.id,
            attempt: self.attempts,
        }
    }
}

/// A claim on a step: the step id and the attempt number the claim made.
///
/// A worker whose lease ran out and whose step was claimed again by someone else holds a stale lease: its `mark_*`
/// calls fail with [`crate::StoreError::LeaseLost`] instead of overwriting the newer attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Lease {
    pub step: StepId,
    pub attempt: u32,
}

/// The outcome of enqueueing one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The stored step: the new one, or the one that already had this idempotency key (unchanged).
    pub step: Step,
    /// False when the key already existed and nothing was written.
    pub created: bool,
}

/// How an attempt ended, for [`crate::Store::mark_many`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Sent and acknowledged, with the CRM's answer.
    Done(Value),
    /// Worth retrying from `next_attempt_at`.
    Retry { error: String, next_attempt_at: Timestamp },
    /// Can never succeed.
    Failed(String),
    /// Not to be sent after all.
    Dropped(String),
}

/// Which of the steps just enqueued [`crate::Store::enqueue_journaled_and_claim`] claims in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct ClaimNew<'a> {
    /// The kinds claimed, each new step of one of them that is due (e.g. the steps that pop a card).
    pub kinds: &'a [&'a str],
    /// At most this many, followers not counted.
    pub limit: usize,
    /// How long the claim holds: a step claimed and never sent is due again once it runs out.
    pub lease: Duration,
    /// The followers claimed after each, as [`crate::Store::claim_due_with_followers`] takes them.
    pub pairs: &'a [(&'a str, &'a str)],
}

/// What [`crate::Store::claim_due`] did in its single transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimOutcome {
    /// Steps now in flight for the caller, at most one per call, highest priority and earliest first.
    pub claimed: Vec<Step>,
    /// Steps that expired before they could be sent and were dropped (for the journal).
    pub expired: Vec<Step>,
    /// Claimed together with a step of `claimed` ([`crate::Store::claim_due_with_followers`]): the next step of
    /// the same call, to go in the same request right after it.
    pub followers: Vec<Step>,
}

impl ClaimOutcome {
    /// Adds `other`'s steps to this claim (claims made apart that go in one round).
    pub fn absorb(&mut self, other: ClaimOutcome) {
        self.claimed.extend(other.claimed);
        self.followers.extend(other.followers);
        self.expired.extend(other.expired);
    }
}

/// Number of steps in each state, for status pages and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepCounts {
    pub pending: u64,
    pub in_flight: u64,
    pub done: u64,
    pub dropped: u64,
    pub failed: u64,
    /// Creation time of the oldest step still pending or in flight: how far behind the outbox is.
    pub oldest_open_created_at: Option<Timestamp>,
}

impl StepCounts {
    pub fn get(&self, state: StepState) -> u64 {
        match state {
            StepState::Pending => self.pending,
            StepState::InFlight => self.in_flight,
            StepState::Done => self.done,
            StepState::Dropped => self.dropped,
            StepState::Failed => self.failed,
        }
    }

    pub fn total(&self) -> u64 {
        self.pending + self.in_flight + self.done + self.dropped + self.failed
    }
}

/// Which failed and dropped steps to send again.
#[derive(Debug, Clone, PartialEq)]
pub enum ReprocessScope {
    /// Every failed or dropped step of one call.
    Call(String),
    /// Every failed or dropped step created in `[from, to)`.
    CreatedBetween { from: Timestamp, to: Timestamp },
}

/// What a journal entry records. The admin UI groups and colours entries by kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum EntryKind {
    /// An AMI event or action about the call.
    Ami,
    /// A decision and its reason (which setting, hook or rule).
    Decision,
    /// A customization hook's input and output.
    Hook,
    CrmRequest,
    CrmResponse,
    Error,
    /// A kind written by a newer version; kept as written.
    Other(String),
}

impl EntryKind {
    pub fn as_str(&self) -> &str {
        match self {
            EntryKind::Ami => "ami",
            EntryKind::Decision => "decision",
            EntryKind::Hook => "hook",
            EntryKind::CrmRequest => "crm_request",
            EntryKind::CrmResponse => "crm_response",
            EntryKind::Error => "error",
            EntryKind::Other(text) => text,
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "ami" => EntryKind::Ami,
            "decision" => EntryKind::Decision,
            "hook" => EntryKind::Hook,
            "crm_request" => EntryKind::CrmRequest,
            "crm_response" => EntryKind::CrmResponse,
            "error" => EntryKind::Error,
            other => EntryKind::Other(other.to_owned()),
        }
    }
}

impl From<EntryKind> for String {
    fn from(kind: EntryKind) -> String {
        kind.as_str().to_owned()
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line to append to a call's journal.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJournalEntry {
    pub call_key: String,
    pub at: Timestamp,
    pub kind: EntryKind,
    pub message: String,
    pub data: Option<Value>,
}

impl NewJournalEntry {
    pub fn new(call_key: impl Into<String>, at: Timestamp, kind: EntryKind, message: impl Into<String>) -> Self {
        NewJournalEntry {
            call_key: call_key.into(),
            at,
            kind,
            message: message.into(),
            data: None,
        }
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// A stored journal line; `id` grows in append order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub call_key: String,
    pub at: Timestamp,
    pub kind: EntryKind,
    pub message: String,
    pub data: Option<Value>,
}

/// One line of the "recent calls" list: the journal's view of a call plus its outbox state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    pub call_key: String,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    pub entries: u64,
    /// Entries of kind `error`.
    pub errors: u64,
    pub last_kind: EntryKind,
    pub last_message: String,
    /// Steps of the call still pending or in flight.
    pub open_steps: u64,
    /// Steps of the call that failed permanently.
    pub failed_steps: u64,
}

/// Which calls the journal lists ([`crate::Store::find_calls`]). Every set field narrows the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallFilter {
    /// Texts that must each occur in one of the call's journal entries (message or data): a phone number, an
    /// extension, a Bitrix24 user id or name.
    pub texts: Vec<String>,
    /// Calls active at or after this instant.
    pub from: Option<Timestamp>,
    /// Calls that began before this instant.
    pub to: Option<Timestamp>,
    pub result: Option<CallResult>,
    /// Only calls with an error entry or a failed step.
    pub has_errors: bool,
    /// Paging: only calls listed after this one (its `last_at` and key) in the latest-first order.
    pub before: Option<(Timestamp, String)>,
    /// Stop the search after this long: the store then answers [`crate::StoreError::TimedOut`] (SQLite's progress
    /// handler, PostgreSQL's `statement_timeout`). None: no limit.
    pub time_limit: Option<Duration>,
}

/// How a call ended, as the journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// An employee answered.
    Answered,
    /// It ended with nobody answering.
    Missed,
    /// Not ended yet.
    Live,
}

/// The Bitrix24 user field that holds the internal extension.
pub const EXTENSION_FIELD: &str = "UF_PHONE_INNER";

/// A Bitrix24 user as cached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// Bitrix24's user ID.
    pub id: u64,
    pub name: String,
    pub email: Option<String>,
    pub position: Option<String>,
    pub active: bool,
    /// Every phone of the user, in the form the caller wants to look it up by.
    pub phones: Vec<UserPhone>,
    /// The user as Bitrix24 returned it, for fields the cache does not model.
    pub raw: Value,
}

impl User {
    /// The internal extension (`UF_PHONE_INNER`), if set.
    pub fn extension(&self) -> Option<&str> {
        self.phones
            .iter()
            .find(|phone| phone.field == EXTENSION_FIELD)
            .map(|phone| phone.number.as_str())
    }
}

/// One phone of a user and the Bitrix24 field it came from (`UF_PHONE_INNER`, `PERSONAL_MOBILE`, `WORK_PHONE`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPhone {
    pub field: String,
    pub number: String,
}

impl UserPhone {
    pub fn new(field: impl Into<String>, number: impl Into<String>) -> Self {
        UserPhone {
            field: field.into(),
            number: number.into(),
        }
    }
}

/// OAuth tokens of one portal. `Debug` never prints the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct PortalTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token stops working, when known.
    pub expires_at: Option<Timestamp>,
    pub scope: Option<String>,
    /// The portal's REST base (`https://PORTAL/rest/`).
    pub client_endpoint: Option<String>,
    pub member_id: Option<String>,
}

impl fmt::Debug for PortalTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("client_endpoint", &self.client_endpoint)
            .field("member_id", &self.member_id)
            .finish()
    }
}
