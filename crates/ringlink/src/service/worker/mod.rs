//! The outbox worker: due steps → Bitrix24, within the limiter's budget, answers and errors back to the store.
//!
//! Each round claims the due steps (at most one per call, so they are independent of each other — plus the
//! steps right after some of them that can go in the same request: the shows after a register, the hides of
//! one ring round, the recording after a finish), decides for each whether it is still worth sending (cards
//! are about now; registrations and finishes are about the record), resolves references to earlier steps'
//! results (to a step in the same `batch`: a `$result[…]` reference), and sends the rest in one `batch`.
//! The round's outcomes and journal entries are written in one transaction, which claims the next round's steps
//! too: one disk sync per round while there is work. New cards need no claim of the worker's own: the pipeline
//! claims them in the commit that stores them and hands them over in memory ([`Handoff`]), and a round takes
//! those first. A finish waits for its recording
//! to be complete so that both go together; recordings too big for that are uploaded alone, after the cards.
//! A hide claimed alone waits a moment (at most [`HIDE_WAITS_FOR_COMPANY`] after it was planned) while its call
//! may still plan a step that goes with it — the owner lookup planned when a missed call hangs up, right after
//! its phone's `DialEnd` — so that both take one request; shows and registers never wait.
//! While requests are free a round claims and sends at once; when the budget is short, it waits for the next
//! request slot before it takes the cards handed over and claims what else is due (the round before claims
//! nothing early), so that its `batch` takes every step due when it can actually go: cards of many calls, hides
//! and shows together, one request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use engine::StepKind;
use serde_json::{json, Value};
use store::{EntryKind, NewJournalEntry, Step, Timestamp};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::Shared;

mod decide;
mod follow_up;
mod handoff;
mod recording;
use crate::config::RecordingSettings;
use decide::{Action, Known};
pub use handoff::{Handoff, CARDS};

/// Steps claimed per round: one Bitrix24 batch.
const ROUND: usize = bitrix24::MAX_BATCH_COMMANDS;
/// Steps claimed with the step before them, to go in the same `batch` right after it: a call's recording
/// after its finish, the shows after a register (or another show), the hides of one ring round.
const FOLLOWERS: &[(&str, &str)] = &[
    ("finish", "attach_record"),
    ("finish", "add_task"),
    ("register", "show"),
    ("show", "show"),
    ("hide", "hide"),
    ("hide", "lookup_owner"),
];
/// How long after it was planned a finish waits for its recording to be complete, so that both go in one
/// request; past that it goes alone.
const FINISH_WAITS_FOR_RECORDING: Duration = Duration::from_secs(10);
/// How long after it was planned a hide claimed without a step that can go with it (the owner lookup of a
/// call ending missed, the hide of the call's other card) waits for one, while the engine says its call may
/// still plan one: the hide at a phone's `DialEnd` and the lookup at the hang-up right after it then go in one
/// request. Past that, or when nothing of its call can follow, it goes alone at once. Bounded well under a
/// queue's `retry` (at least 1 s), so it never holds back the next phone's show.
const HIDE_WAITS_FOR_COMPANY: Duration = Duration::from_millis(200);
/// A claimed step comes back to the queue if the worker dies holding it this long.
const LEASE: Duration = Duration::from_secs(120);
/// Polling interval when nothing wakes the worker (retries coming due).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Marker in a register's stored result: whether its card was shown.
const CARD_SHOWN: &str = "ringlink_card_shown";

pub async fn run(
    shared: Shared,
    client: bitrix24::Client,
    recordings: RecordingSettings,
    mut stop: watch::Receiver<bool>,
) {
    let worker = Worker {
        shared,
        client,
        recordings,
        next: Default::default(),
        reads: Default::default(),
    };
    let work = worker.shared.work.clone();
    rounds(&work, &mut stop, "outbox round failed", || worker.round()).await;
}

/// Runs outbox rounds until stopped: the next one at once after a round that worked, else when woken (new
/// steps stored) or after [`IDLE_POLL`] (retries coming due).
pub(super) async fn rounds<F, Fut>(work: &Notify, stop: &mut watch::Receiver<bool>, failed: &str, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    loop {
        let worked = match round().await {
            Ok(n) => n > 0,
            Err(e) => {
                warn!(error = %e, "{failed}");
                false
            }
        };
        if worked {
            continue;
        }
        tokio::select! {
            _ = work.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

struct Worker {
    shared: Shared,
    client: bitrix24::Client,
    recordings: RecordingSettings,
    /// The next round's steps, claimed in the transaction that recorded the last round's outcomes.
    next: std::sync::Mutex<Option<store::ClaimOutcome>>,
    /// The store reads made while deciding this round, and the time waited for them (µs).
    reads: (std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicU64),
}

/// The outcome of one step, to be written back.
#[derive(Clone)]
enum Outcome {
    Done(Value),
    Retry {
        error: String,
        after: Duration,
    },
    Failed(String),
    Dropped(String),
    /// Not sent this time, by choice (not an error): due again in `after`.
    Later {
        reason: String,
        after: Duration,
    },
}

impl Action {
    /// The outcome of a step that is not sent this round.
    fn into_outcome(self) -> Outcome {
        match self {
            Action::Drop(reason) => Outcome::Dropped(reason),
            Action::Wait(reason) => Outcome::Retry {
                error: reason,
                after: Duration::from_secs(2),
            },
            Action::Fail(reason) => Outcome::Failed(reason),
            Action::Later(reason) => Outcome::Later {
                reason,
                after: Duration::ZERO,
            },
            Action::Send { .. } | Action::Record { .. } => Outcome::Later {
                reason: "not this round".into(),
                after: Duration::ZERO,
            },
        }
    }
}

/// One command for Bitrix24.
struct Request {
    /// The command's key in the `batch` (from the step's id: unique, and known before the batch is made).
    key: String,
    step: Step,
    method: String,
    params: Value,
    card_shown: Option<bool>,
    /// The step this one needs done before it in the same `batch` (a recording after its finish, a show
    /// after the register whose `CALL_ID` it takes).
    leader: Option<String>,
    /// Claimed after another step of its call, to go in the same `batch`.
    follower: bool,
    /// Added to the answer in the stored result (how a recording was attached).
    note: Option<Value>,
}

impl Request {
    fn new(step: Step, method: String, params: Value, card_shown: Option<bool>) -> Self {
        Self {
            key: format!("k{}", step.id.0),
            step,
            method,
            params,
            card_shown,
            leader: None,
            follower: false,
            note: None,
        }
    }
}

/// A follower not sent with its leader goes on its own once the leader is done.
fn waits_for_leader() -> Outcome {
    Outcome::Later {
        reason: "goes after the step before it is done".into(),
        after: Duration::ZERO,
    }
}

/// Params as the journal keeps them: a recording's content is summed up, not copied.
fn journaled_params(params: &Value) -> Value {
    let mut params = params.clone();
    if let Some(Value::String(content)) = params.get_mut("FILE_CONTENT") {
        *content = format!("<{} characters of base64>", content.len());
    }
    params
}

impl Worker {
    /// A store read made while deciding, counted and timed for the round's log line.
    async fn read<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn store::Store) -> store::Result<T> + Send + 'static,
    {
        let started = Instant::now();
        let result = self.shared.store(f).await;
        let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.reads.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.reads.1.fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn round(&self) -> anyhow::Result<usize> {
        let mut started = Instant::now();
        // Short of budget, this round's request cannot go before the next slot: wait for it before taking what
        // is claimed, then claim what else is due, so that the batch takes every step due when it goes (those
        // stored meanwhile too).
        let short = self.client.budget().available_now == 0;
        self.client.limiter().ready().await;
        let slot_ms = ms(started.elapsed());
        started = Instant::now();
        // Claimed already: the cards the pipeline claimed as it stored them, then what the last round claimed.
        let own = self.next.lock().unwrap_or_else(|p| p.into_inner()).take();
        let early = self.shared.handoff.take(own, ROUND);
        let room = early.as_ref().map_or(ROUND, |c| ROUND.saturating_sub(c.claimed.len()));
        let more = if early.is_none() || (short && room > 0) {
            let now = Timestamp::now();
            let claim = move |s: &dyn store::Store| s.claim_due_with_followers(now, room, LEASE, FOLLOWERS);
            Some(self.shared.store(claim).await?)
        } else {
            None
        };
        let claimed = match (early, more) {
            (Some(mut claimed), Some(more)) => {
                claimed.absorb(more);
                claimed
            }
            (Some(claimed), None) => claimed,
            (None, more) => more.unwrap_or_default(),
        };
        if claimed.claimed.is_empty() {
            return Ok(0);
        }
        let claim_ms = ms(started.elapsed());
        let decided = Instant::now();
        let mut followers: HashMap<String, Vec<Step>> = HashMap::new();
        for step in claimed.followers {
            followers.entry(step.call_key.clone()).or_default().push(step);
        }
        let mut batch: Vec<Request> = Vec::new();
        let mut outcomes: Vec<(Step, Outcome, Option<Value>)> = Vec::new();
        let mut uploads = Vec::new();
        let mut deletes = Vec::new();
        let alone = HashMap::new();
        let known = self
            .known(claimed.claimed.iter().chain(followers.values().flatten()))
            .await;
        let mut wake: Option<Duration> = None;
        for step in claimed.claimed {
            let chain = followers.remove(&step.call_key).unwrap_or_default();
            // A hide, or hides, that something of the call may still join: the last claimed is a hide.
            let open = chain.last().unwrap_or(&step).kind == StepKind::Hide.name();
            let mut chain = chain.into_iter().peekable();
            match self.decide(&step, &alone, &known).await {
                Action::Send {
                    method,
                    params,
                    card_shown,
                    delete_activity,
                    ..
                } => {
                    if let Some(after) = open.then(|| self.hide_waits(&step)).flatten() {
                        let reason = "its call may plan a step that goes in the same request any moment now";
                        for step in std::iter::once(step).chain(chain.by_ref()) {
                            let reason = reason.into();
                            outcomes.push((step, Outcome::Later { reason, after }, None));
                        }
                        wake = Some(wake.map_or(after, |w| w.min(after)));
                        continue;
                    }
                    if delete_activity {
                        deletes.push(step.idempotency_key.clone());
                    }
                    let leader = Request::new(step, method, params, card_shown);
                    let record = match leader.step.kind == StepKind::Finish.name() {
                        true => chain.next_if(|f| f.kind == StepKind::AttachRecord.name()),
                        false => None,
                    };
                    match record {
                        Some(follower) => {
                            self.with_follower(leader, follower, &known, &mut batch, &mut outcomes)
                                .await
                        }
                        None => {
                            let (batch, outcomes) = (&mut batch, &mut outcomes);
                            self.with_chain(leader, &mut chain, &known, batch, outcomes, &mut deletes)
                                .await
                        }
                    }
                }
                Action::Record { call_id, path } => uploads.push((step, call_id, path)),
                other => outcomes.push((step, other.into_outcome(), None)),
            }
            outcomes.extend(chain.map(|follower| (follower, waits_for_leader(), None)));
        }
        // Past one batch's worth, recordings wait for the next round (their finishes go now).
        while batch.len() > bitrix24::MAX_BATCH_COMMANDS {
            let Some(at) = batch.iter().rposition(|r| r.follower) else {
                break;
            };
            let request = batch.remove(at);
            outcomes.push((request.step, waits_for_leader(), None));
        }
        let (n, sent) = (batch.len() + outcomes.len() + uploads.len(), batch.len());
        let decide_ms = ms(decided.elapsed());
        let reads = self.reads.0.swap(0, std::sync::atomic::Ordering::Relaxed);
        let read_ms = self.reads.1.swap(0, std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
        let sending = Instant::now();
        outcomes.extend(self.send(batch).await);
        let send_ms = ms(sending.elapsed());
        // Uploads go after the cards: a card is about now, a recording can wait for the budget.
        for (step, call_id, path) in uploads {
            let outcome = self.attach_record(&step, &call_id, &path).await;
            outcomes.push((step, outcome, None));
        }
        let recording = Instant::now();
        self.record_all(outcomes, &deletes).await?;
        if let Some(after) = wake {
            // Nothing else wakes the worker when a waiting hide comes due.
            let work = self.shared.work.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                work.notify_one();
            });
        }
        debug!(
            steps = n,
            sent,
            slot_ms,
            claim_ms,
            decide_ms,
            reads,
            read_ms,
            send_ms,
            upload_ms = ms(recording.duration_since(sending)) - send_ms,
            record_ms = ms(recording.elapsed()),
            "outbox round"
        );
        Ok(n)
    }

    /// How long a hide claimed without company waits for it ([`HIDE_WAITS_FOR_COMPANY`]); `None`: it goes now.
    fn hide_waits(&self, hide: &Step) -> Option<Duration> {
        let age = Timestamp::now().as_micros().saturating_sub(hide.created_at.as_micros());
        let left = HIDE_WAITS_FOR_COMPANY.checked_sub(Duration::from_micros(age.max(0).unsigned_abs()))?;
        let call = serde_json::from_value::<engine::Step>(hide.payload.clone()).ok()?.call;
        (!left.is_zero() && self.shared.engine().may_join_hide(&call)).then_some(left)
    }

    /// A step claimed with the steps right after it in its call (a register and its shows, the hides of one ring
    /// round and the owner lookup after them, a finish and the missed-call task): all go in this round's
    /// `batch`, in order, a show taking the `CALL_ID` of a register in the same batch by `$result[…]`. A step
    /// that must wait ends the chain: the rest go after it.
    async fn with_chain(
        &self,
        leader: Request,
        chain: &mut impl Iterator<Item = Step>,
        known: &Known,
        batch: &mut Vec<Request>,
        outcomes: &mut Vec<(Step, Outcome, Option<Value>)>,
        deletes: &mut Vec<String>,
    ) {
        let mut in_batch = HashMap::from([(leader.step.idempotency_key.clone(), leader.key.clone())]);
        batch.push(leader);
        for follower in chain.by_ref() {
            match self.decide(&follower, &in_batch, known).await {
                Action::Send {
                    method,
                    params,
                    card_shown,
                    delete_activity,
                    depends,
                } => {
                    if delete_activity {
                        deletes.push(follower.idempotency_key.clone());
                    }
                    let mut request = Request::new(follower, method, params, card_shown);
                    request.leader = depends;
                    request.follower = true;
                    in_batch.insert(request.step.idempotency_key.clone(), request.key.clone());
                    batch.push(request);
                }
                wait @ (Action::Wait(_) | Action::Later(_) | Action::Record { .. }) => {
                    outcomes.push((follower, wait.into_outcome(), None));
                    break;
                }
                other => outcomes.push((follower, other.into_outcome(), None)),
            }
        }
    }

    /// A finish claimed with the recording right after it: both go in this round's `batch`, the recording
    /// right after its finish, once the file is complete. While MixMonitor still writes the file the finish
    /// waits for it (at most [`FINISH_WAITS_FOR_RECORDING`] after it was planned); otherwise the finish goes
    /// alone and the recording follows on its own.
    async fn with_follower(
        &self,
        leader: Request,
        follower: Step,
        known: &Known,
        batch: &mut Vec<Request>,
        outcomes: &mut Vec<(Step, Outcome, Option<Value>)>,
    ) {
        let (call_id, path) = match self.decide(&follower, &HashMap::new(), known).await {
            Action::Record { call_id, path } => (call_id, path),
            other => {
                batch.push(leader);
                outcomes.push((follower, other.into_outcome(), None));
                return;
            }
        };
        let (path, filename, bytes) = match self.recording(&follower, &path) {
            recording::Recording::Ready { path, filename, bytes } => (path, filename, bytes),
            recording::Recording::Settling { after } => {
                let age = Timestamp::now()
                    .as_micros()
                    .saturating_sub(leader.step.created_at.as_micros());
                let waited = Duration::from_micros(age.max(0).unsigned_abs());
                if waited < FINISH_WAITS_FOR_RECORDING {
                    let reason = "its recording is still being written; both go in one request once it is complete";
                    outcomes.push((
                        leader.step,
                        Outcome::Later {
                            reason: reason.into(),
                            after,
                        },
                        None,
                    ));
                    outcomes.push((
                        follower,
                        Outcome::Later {
                            reason: "the file is still being written".into(),
                            after,
                        },
                        None,
                    ));
                } else {
                    batch.push(leader);
                    outcomes.push((
                        follower,
                        Outcome::Later {
                            reason: "the file is still being written".into(),
                            after,
                        },
                        None,
                    ));
                }
                return;
            }
            recording::Recording::Unusable(outcome) => {
                batch.push(leader);
                outcomes.push((follower, outcome, None));
                return;
            }
        };
        let leader_key = leader.step.idempotency_key.clone();
        batch.push(leader);
        match self
            .batched_record(&follower, &call_id, (&path, &filename, bytes))
            .await
        {
            Some((params, note)) => {
                let mut request = Request::new(follower, StepKind::AttachRecord.method().into(), params, None);
                request.leader = Some(leader_key);
                request.follower = true;
                request.note = Some(note);
                batch.push(request);
            }
            None => outcomes.push((follower, waits_for_leader(), None)),
        }
    }

    /// Writes the round's outcomes and the journal entries about them in one store transaction (one disk sync
    /// per round, not one per step), which also claims the next round's steps (kept for it in `next`); then
    /// starts what follows a registration or a finish.
    async fn record_all(
        &self,
        outcomes: Vec<(Step, Outcome, Option<Value>)>,
        deletes: &[String],
    ) -> anyhow::Result<()> {
        let now = Timestamp::now();
        let mut marks = Vec::with_capacity(outcomes.len());
        let mut journal = Vec::new();
        let mut follow_ups = Vec::new();
        let mut logged = Vec::with_capacity(outcomes.len());
        for (step, outcome, request) in outcomes {
            if let Outcome::Done(result) = &outcome {
                if step.kind == StepKind::Finish.name() {
                    let delete = deletes.contains(&step.idempotency_key);
                    follow_ups.push((
                        step.lease(),
                        FollowUp::Finished(step.payload.clone(), result.clone(), delete),
                    ));
                } else if step.kind == StepKind::Register.name() {
                    let follow_up = FollowUp::Registered(step.payload.clone(), request.clone(), result.clone());
                    follow_ups.push((step.lease(), follow_up));
                }
            }
            journal.extend(self.entries(&step, &outcome, request, now));
            logged.push((
                step.lease(),
                step.idempotency_key.clone(),
                step.attempts,
                outcome.clone(),
            ));
            marks.push((step.lease(), outcome.into_store(now)));
        }
        // Short of budget, the next round waits for its request slot before it claims (see `round`).
        let limit = match self.client.budget().available_now {
            0 => 0,
            _ => ROUND,
        };
        let (lost, next) = self
            .shared
            .store(move |s| s.mark_many_journaled_and_claim(&marks, &journal, now, limit, LEASE, FOLLOWERS))
            .await?;
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = Some(next);
        for lease in &lost {
            warn!(
                step = lease.step.0,
                "a step's lease ran out while it was sent; its outcome is not recorded"
            );
        }
        // Logged once recorded: a "step done" line means the store has it (a restart will not send it again).
        for (lease, key, attempts, outcome) in &logged {
            if !lost.contains(lease) {
                log_outcome(key, *attempts, outcome);
            }
        }
        for (lease, follow_up) in follow_ups {
            if lost.contains(&lease) {
                continue;
            }
            match follow_up {
                FollowUp::Finished(payload, result, delete) => self.after_finish(payload, result, delete),
                FollowUp::Registered(payload, request, result) => {
                    super::autodist::forget_registered(&self.shared, request.as_ref(), Some(&result));
                    self.post_registration(payload, request, Some(result))
                }
            }
        }
        Ok(())
    }

    /// Sends the requests: one alone, several in one `batch` (one request against the portal's limit). A
    /// follower whose leader was not done waits for it (the portal ran it, and it failed for want of the
    /// leader, or did not run it).
    async fn send(&self, requests: Vec<Request>) -> Vec<(Step, Outcome, Option<Value>)> {
        let mut out: Vec<(Step, Outcome, Option<Value>)> = Vec::new();
        // A round whose steps were all dropped, deferred or uploaded has nothing to send: an empty `batch`
        // would still cost a request against the portal's limit.
        if requests.is_empty() {
            return out;
        }
        if requests.len() == 1 {
            for r in requests {
                let started = Instant::now();
                let result = self.client.call(&r.method, r.params.clone()).await;
                let error = result.as_ref().err().filter(|e| unreachable(e)).map(|e| e.to_string());
                self.shared
                    .telemetry
                    .crm_request(&r.method, started.elapsed(), error.as_deref());
                let request = json!({"method": r.method, "params": r.params});
                let outcome = classify(&r.method, result.as_ref(), r.card_shown);
                out.push((r.step, outcome, Some(request)));
            }
            return out;
        }
        let mut batch = bitrix24::Batch::new();
        for r in &requests {
            if let Err(e) = batch.push(r.key.clone(), r.method.clone(), r.params.clone()) {
                warn!(error = %e, "cannot batch a step; it will be retried");
            }
        }
        let started = Instant::now();
        let response = self.client.batch(&batch).await;
        let error = response
            .as_ref()
            .err()
            .filter(|e| unreachable(e))
            .map(|e| e.to_string());
        self.shared
            .telemetry
            .crm_request("batch", started.elapsed(), error.as_deref());
        let mut done: Vec<String> = Vec::new();
        for r in requests {
            let request = json!({"method": r.method, "params": journaled_params(&r.params), "batch": true});
            let mut outcome = match &response {
                Ok(answer) => match answer.get(&r.key) {
                    Ok(value) => classify(&r.method, Ok(value), r.card_shown),
                    Err(e) => classify(&r.method, Err(&e), r.card_shown),
                },
                Err(e) => batch_failed(e),
            };
            if let Some(leader) = &r.leader {
                if !done.contains(leader) && !matches!(outcome, Outcome::Retry { .. }) {
                    outcome = waits_for_leader();
                }
            }
            if let (Outcome::Done(result), Some(Value::Object(note))) = (&mut outcome, &r.note) {
                let mut merged = note.clone();
                merged.insert("answer".into(), result.clone());
                *result = Value::Object(merged);
            }
            if matches!(outcome, Outcome::Done(_)) {
                done.push(r.step.idempotency_key.clone());
            }
            out.push((r.step, outcome, Some(request)));
        }
        out
    }

    /// Counts the attempt for `/metrics`; a card acknowledged also counts how long it took since its event was
    /// stored.
    fn report(&self, step: &Step, outcome: &Outcome, now: Timestamp) {
        let method = serde_json::from_value::<StepKind>(Value::String(step.kind.clone()))
            .map(StepKind::method)
            .unwrap_or("unknown");
        let telemetry = &self.shared.telemetry;
        match outcome {
            Outcome::Done(result) => {
                telemetry.step(method, "sent");
                let card = step.kind == StepKind::Show.name() || result.get(CARD_SHOWN) == Some(&Value::Bool(true));
                if card {
                    let micros = now.as_micros().saturating_sub(step.created_at.as_micros()).max(0);
                    telemetry.card_popped(Duration::from_micros(micros.unsigned_abs()));
                }
            }
            Outcome::Retry { .. } => telemetry.step(method, "retried"),
            Outcome::Failed(_) => telemetry.step(method, "failed"),
            Outcome::Dropped(_) => telemetry.step(method, "dropped"),
            Outcome::Later { .. } => telemetry.step(method, "deferred"),
        }
    }

    /// The journal entries about one attempt (what was sent, how it ended); counts it.
    fn entries(&self, step: &Step, outcome: &Outcome, request: Option<Value>, now: Timestamp) -> Vec<NewJournalEntry> {
        let attempts = step.attempts;
        let call = &step.call_key;
        let mut journal = Vec::new();
        if let Some(request) = request {
            journal.push(
                NewJournalEntry::new(
                    call,
                    now,
                    EntryKind::CrmRequest,
                    format!("{} {}", step.kind, step.idempotency_key),
                )
                .data(request),
            );
        }
        let (kind, message, data) = match outcome {
            Outcome::Done(result) => (EntryKind::CrmResponse, format!("{} done", step.kind), result.clone()),
            Outcome::Retry { error, after } => (
                EntryKind::Error,
                format!(
                    "{} failed (attempt {attempts}), retrying in {after:?}: {error}",
                    step.kind
                ),
                json!({"error": error}),
            ),
            Outcome::Failed(reason) => (
                EntryKind::Error,
                format!("{} given up: {reason}", step.kind),
                json!({"error": reason}),
            ),
            Outcome::Dropped(reason) => (
                EntryKind::Decision,
                format!("{} not sent: {reason}", step.kind),
                json!({"reason": reason}),
            ),
            Outcome::Later { reason, after } => (
                EntryKind::Decision,
                format!("{} waits {after:?}: {reason}", step.kind),
                json!({"reason": reason, "after_ms": after.as_millis()}),
            ),
        };
        journal.push(NewJournalEntry::new(call, now, kind, message).data(data));
        self.report(step, outcome, now);
        journal
    }
}

/// The log line about one recorded outcome.
fn log_outcome(step: &str, attempts: u32, outcome: &Outcome) {
    match outcome {
        Outcome::Done(_) => debug!(step, "step done"),
        Outcome::Retry { error, .. } => warn!(step, attempts, %error, "step will be retried"),
        Outcome::Failed(reason) => warn!(step, %reason, "step failed for good"),
        Outcome::Dropped(reason) => info!(step, %reason, "step dropped"),
        Outcome::Later { reason, .. } => debug!(step, %reason, "step waits"),
    }
}

/// What follows a step once its outcome is recorded.
enum FollowUp {
    /// A finish: `(payload, result, delete the activity)`.
    Finished(Value, Value, bool),
    /// A register: `(payload, request, result)`.
    Registered(Value, Option<Value>, Value),
}

impl Outcome {
    /// The outcome as the outbox records it.
    fn into_store(self, now: Timestamp) -> store::Outcome {
        match self {
            Outcome::Done(result) => store::Outcome::Done(result),
            Outcome::Retry { error, after } => store::Outcome::Retry {
                error,
                next_attempt_at: now.saturating_add(after),
            },
            Outcome::Failed(reason) => store::Outcome::Failed(reason),
            Outcome::Dropped(reason) => store::Outcome::Dropped(reason),
            Outcome::Later { reason, after } => store::Outcome::Retry {
                error: reason,
                next_attempt_at: now.saturating_add(after),
            },
        }
    }
}

fn ms(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The portal did not answer (as opposed to answering with an error about the request): `/status` says so.
fn unreachable(error: &bitrix24::Error) -> bool {
    matches!(
        error,
        bitrix24::Error::Transport(_)
            | bitrix24::Error::Timeout(_)
            | bitrix24::Error::Server { .. }
            | bitrix24::Error::Redirected { .. }
            | bitrix24::Error::InvalidResponse { .. }
    )
}

/// Sorts a Bitrix24 answer into done / retry / failed.
fn classify(method: &str, result: Result<&Value, &bitrix24::Error>, card_shown: Option<bool>) -> Outcome {
    match result {
        Ok(value) => {
            let mut value = value.clone();
            if let (Some(shown), Value::Object(map)) = (card_shown, &mut value) {
                map.insert(CARD_SHOWN.into(), Value::Bool(shown));
            }
            Outcome::Done(value)
        }
        Err(e) => {
            let description = e.description().unwrap_or_default().to_owned();
            // A finish that finds its call already finished (a retry after an answer that never arrived) is done.
            if method.eq_ignore_ascii_case("telephony.externalcall.finish") && description.contains("Call is not found")
            {
                return Outcome::Done(json!({"already_finished": true, "error": description}));
            }
            if e.is_retryable() {
                Outcome::Retry {
                    error: e.to_string(),
                    after: retry_delay(e),
                }
            } else if matches!(e, bitrix24::Error::Auth { .. } | bitrix24::Error::TokenRefresh { .. }) {
                // Credentials can be fixed by the admin: keep the call waiting instead of losing it.
                Outcome::Retry {
                    error: e.to_string(),
                    after: Duration::from_secs(60),
                }
            } else {
                Outcome::Failed(e.to_string())
            }
        }
    }
}

fn retry_delay(e: &bitrix24::Error) -> Duration {
    match e {
        bitrix24::Error::OperationTimeLimit { retry_after, .. } => *retry_after,
        _ => Duration::from_secs(3),
    }
}

/// The `batch` request itself failed, so none of its commands was judged: each is tried again (sooner when
/// the error says a retry helps). Failing them would lose calls over a transport hiccup or a revoked token.
fn batch_failed(e: &bitrix24::Error) -> Outcome {
    let after = if e.is_retryable() {
        retry_delay(e)
    } else {
        Duration::from_secs(30)
    };
    Outcome::Retry {
        error: format!("batch failed: {e}"),
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker on a fresh SQLite store (in the directory returned), sending to a new emulator within the
    /// limiter `limits`.
    async fn worker(limits: bitrix24::LimiterConfig) -> (b24emu::Emulator, tempfile::TempDir, Worker) {
        let emu = b24emu::Emulator::start(b24emu::EmulatorConfig::default())
            .await
            .expect("emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::SqliteStore::open(dir.path().join("s.db")).expect("store");
        let engine = engine::Engine::new(engine::EngineSettings::default()).expect("engine");
        let client = bitrix24::Client::webhook(&emu.webhook_url())
            .expect("client")
            .limiter_config(limits)
            .build()
            .expect("client");
        let worker = Worker {
            shared: Shared {
                store: std::sync::Arc::new(store),
                engine: std::sync::Arc::new(std::sync::Mutex::new(engine)),
                work: Default::default(),
                users_refresh: Default::default(),
                hooks: std::sync::Arc::new(hooks::Hooks::none()),
                verdicts: Default::default(),
                directory_loaded: Default::default(),
                ami: Default::default(),
                originate_responses: None,
                telemetry: std::sync::Arc::new(web::Telemetry::new("test")),
                record_links: web::RecordLinks::new(vec![0; 32]),
                autodist: Default::default(),
                handoff: Default::default(),
            },
            client,
            recordings: RecordingSettings::default(),
            next: Default::default(),
            reads: Default::default(),
        };
        (emu, dir, worker)
    }

    #[tokio::test]
    async fn a_round_with_nothing_to_send_costs_no_request() {
        let (emu, _dir, worker) = worker(bitrix24::LimiterConfig::default()).await;
        assert!(worker.send(Vec::new()).await.is_empty());
        assert!(emu.requests().is_empty(), "{:?}", emu.requests());
        emu.shutdown().await;
    }

    /// The owner lookup of a missed call, as the engine plans it (nothing to decide but to send it).
    fn lookup(call: &str) -> store::NewStep {
        let step = engine::Step {
            call: call.into(),
            key: format!("{call}/0/owner"),
            kind: StepKind::LookupOwner,
            method: StepKind::LookupOwner.method().into(),
            params: json!({"PHONE_NUMBER": "+79001234567"}),
            after: Vec::new(),
            timing: engine::Timing::Durable,
            record_path: None,
        };
        crate::service::pipeline::new_step(&step, None)
    }

    /// One request in the bucket, one more each second.
    fn one_per_second() -> bitrix24::LimiterConfig {
        bitrix24::LimiterConfig {
            drain_per_sec: 1.0,
            capacity: 1.0,
            headroom: 0.0,
            ..bitrix24::LimiterConfig::default()
        }
    }

    /// What the emulator received, checked to be one `batch` request.
    fn one_batch(emu: &b24emu::Emulator) -> Vec<b24emu::RecordedRequest> {
        let requests = emu.requests();
        let top: Vec<&str> = requests
            .iter()
            .filter(|r| r.batch_parent.is_none())
            .map(|r| r.method.as_str())
            .collect();
        assert_eq!(top, ["batch"], "one request: {requests:?}");
        requests
    }

    #[tokio::test]
    async fn with_the_budget_spent_a_round_takes_what_is_stored_while_it_waits_for_its_slot() {
        let (emu, _dir, worker) = worker(one_per_second()).await;
        let store = worker.shared.store.clone();
        store.enqueue(&[lookup("a")], Timestamp::now()).expect("enqueue");
        worker.client.limiter().acquire().await;
        let later = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.enqueue(&[lookup("b")], Timestamp::now()).expect("enqueue");
        };
        let (sent, ()) = tokio::join!(worker.round(), later);
        assert_eq!(sent.expect("round"), 2, "both calls' steps in the round");
        let requests = one_batch(&emu);
        let batched = requests
            .iter()
            .filter(|r| r.batch_parent.is_some() && r.method == "telephony.externalcall.searchcrmentities")
            .count();
        assert_eq!(batched, 2, "{requests:?}");
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn with_the_budget_spent_a_round_takes_the_cards_handed_while_it_waits_for_its_slot() {
        let (emu, _dir, mut worker) = worker(one_per_second()).await;
        worker.shared.handoff = super::Handoff::new(true);
        let store = worker.shared.store.clone();
        store.enqueue(&[lookup("a")], Timestamp::now()).expect("enqueue");
        worker.client.limiter().acquire().await;
        // As the pipeline stores a call's card: in the commit that stores it, claimed and handed to the worker.
        let card = engine::Step {
            call: "b".into(),
            key: "b/0/register".into(),
            kind: StepKind::Register,
            method: StepKind::Register.method().into(),
            params: json!({"USER_ID": 1, "PHONE_NUMBER": "+79001230000", "TYPE": 2, "SHOW": 1}),
            after: Vec::new(),
            timing: engine::Timing::Durable,
            record_path: None,
        };
        let handed = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let stored = crate::service::pipeline::new_step(&card, None);
            let claim = store
                .enqueue_journaled_and_claim(&[stored], &[], Timestamp::now(), &super::CARDS)
                .expect("store and claim");
            assert_eq!(claim.claimed.len(), 1, "the card is claimed as it is stored");
            worker.shared.handoff.hand(claim);
        };
        let (sent, ()) = tokio::join!(worker.round(), handed);
        assert_eq!(sent.expect("round"), 2, "the handed card and the stored lookup");
        let requests = one_batch(&emu);
        let registered = requests
            .iter()
            .filter(|r| r.batch_parent.is_some() && r.method == "telephony.externalcall.register" && r.is_ok())
            .count();
        assert_eq!(registered, 1, "the card went once, in the batch: {requests:?}");
        // Claimed once, it is not due again: the next round has nothing to send.
        assert_eq!(worker.round().await.expect("next round"), 0);
        assert_eq!(emu.requests().len(), requests.len());
        emu.shutdown().await;
    }

    #[test]
    fn finishing_a_finished_call_counts_as_done() {
        let e = bitrix24::Error::Method {
            method: "telephony.externalcall.finish".into(),
            status: 400,
            code: "ERROR_CORE".into(),
            description: "Call is not found (call should be registered prior to finishing)".into(),
        };
        assert!(matches!(
            classify("telephony.externalcall.finish", Err(&e), None),
            Outcome::Done(_)
        ));
    }

    #[test]
    fn a_failed_batch_loses_none_of_its_commands() {
        let revoked = bitrix24::Error::Auth {
            kind: bitrix24::AuthErrorKind::InvalidToken,
            code: "invalid_token".into(),
            description: "The access token provided is invalid".into(),
            status: 401,
        };
        for e in [revoked, bitrix24::Error::Transport("connection reset".into())] {
            assert!(matches!(batch_failed(&e), Outcome::Retry { .. }), "{e}");
        }
    }

    #[test]
    fn register_result_remembers_whether_the_card_was_shown() {
        match classify(
            "telephony.externalcall.register",
            Ok(&json!({"CALL_ID": "x"})),
            Some(false),
        ) {
            Outcome::Done(v) => assert_eq!(v[CARD_SHOWN], false),
            _ => panic!("done expected"),
        }
    }
}
