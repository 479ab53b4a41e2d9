//! The outbox worker: due steps → Bitrix24, within the limiter's budget, answers and errors back to the store.
//!
//! Each round claims the due steps (at most one per call, so they are independent of each other), decides for
//! each whether it is still worth sending (cards are about now; registrations and finishes are about the
//! record), resolves references to earlier steps' results, and sends the rest — several in one `batch`.
//! Recordings are uploaded one by one once their file is complete.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use engine::{StepKind, Timing};
use serde_json::{json, Value};
use store::{EntryKind, NewJournalEntry, Step, StepState, Store, Timestamp};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use hooks::Outcome as HookOutcome;

use super::crm_binding;
use super::customize::{self, Customized};
use super::Shared;
use crate::config::RecordingSettings;

/// Steps claimed per round: one Bitrix24 batch.
const ROUND: usize = bitrix24::MAX_BATCH_COMMANDS;
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
    };
    loop {
        let worked = match worker.round().await {
            Ok(n) => n > 0,
            Err(e) => {
                warn!(error = %e, "outbox round failed");
                false
            }
        };
        if worked {
            continue;
        }
        tokio::select! {
            _ = worker.shared.work.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

struct Worker {
    shared: Shared,
    client: bitrix24::Client,
    recordings: RecordingSettings,
}

/// What to do with a claimed step.
enum Action {
    Send {
        method: String,
        params: Value,
        card_shown: Option<bool>,
        /// `process_final_params` answered `action: delete`: the call's CRM activity goes once finished.
        delete_activity: bool,
    },
    Record {
        call_id: String,
        path: String,
    },
    Drop(String),
    /// Not yet possible (a referenced result is missing); try again later.
    Wait(String),
    Fail(String),
}

/// The outcome of one step, to be written back.
enum Outcome {
    Done(Value),
    Retry { error: String, after: Duration },
    Failed(String),
    Dropped(String),
}

impl Worker {
    async fn round(&self) -> anyhow::Result<usize> {
        let now = Timestamp::now();
        let claimed = self.shared.store(move |s| s.claim_due(now, ROUND, LEASE)).await?;
        if claimed.claimed.is_empty() {
            return Ok(0);
        }
        let mut batch: Vec<(Step, String, Value, Option<bool>)> = Vec::new();
        let mut outcomes: Vec<(Step, Outcome, Option<Value>)> = Vec::new();
        let mut deletes = Vec::new();
        for step in claimed.claimed {
            match self.decide(&step).await {
                Action::Send {
                    method,
                    params,
                    card_shown,
                    delete_activity,
                } => {
                    if delete_activity {
                        deletes.push(step.idempotency_key.clone());
                    }
                    batch.push((step, method, params, card_shown))
                }
                Action::Record { call_id, path } => {
                    let outcome = self.attach_record(&step, &call_id, &path).await;
                    outcomes.push((step, outcome, None));
                }
                Action::Drop(reason) => outcomes.push((step, Outcome::Dropped(reason), None)),
                Action::Wait(reason) => outcomes.push((
                    step,
                    Outcome::Retry {
                        error: reason,
                        after: Duration::from_secs(2),
                    },
                    None,
                )),
                Action::Fail(reason) => outcomes.push((step, Outcome::Failed(reason), None)),
            }
        }
        let n = batch.len() + outcomes.len();
        outcomes.extend(self.send(batch).await);
        for (step, outcome, request) in outcomes {
            let done = matches!(outcome, Outcome::Done(_));
            let deleting = done && deletes.contains(&step.idempotency_key);
            let registered = done && step.kind == StepKind::Register.name();
            let finished = done && step.kind == StepKind::Finish.name();
            let (payload, result) = match &outcome {
                Outcome::Done(result) => (step.payload.clone(), Some(result.clone())),
                _ => (Value::Null, None),
            };
            self.record(step, outcome, request.clone()).await?;
            if finished {
                self.after_finish(payload.clone(), result.clone().unwrap_or(Value::Null), deleting);
            }
            if registered {
                self.post_registration(payload, request, result);
            }
        }
        Ok(n)
    }

    /// Applies the step's timing rule and resolves its references.
    async fn decide(&self, step: &Step) -> Action {
        let planned: engine::Step = match serde_json::from_value(step.payload.clone()) {
            Ok(p) => p,
            Err(e) => return Action::Fail(format!("unreadable step payload: {e}")),
        };
        let mut params = planned.params.clone();
        let mut card_shown = None;
        match &planned.timing {
            Timing::Durable => {}
            Timing::WhileRinging { conversation } => {
                if !self.shared.engine().is_ringing(&planned.call, conversation) {
                    return Action::Drop("the phone stopped ringing before the card could be shown".into());
                }
            }
            Timing::DurableCardWhileRinging { conversation } => {
                // Offline recovery (the leg no longer rings): register without a card, keeping the original
                // start time; applied after the hooks, so that a resend decides it anew.
                card_shown = Some(self.shared.engine().is_ringing(&planned.call, conversation));
            }
            Timing::UndoCard { shown_by, finish } => {
                let (shown, finish_state) = {
                    let (shown_by, finish) = (shown_by.clone(), finish.clone());
                    match self
                        .shared
                        .store(move |s| Ok((s.step_by_key(&shown_by)?, s.step_by_key(&finish)?)))
                        .await
                    {
                        Ok(pair) => pair,
                        Err(e) => return Action::Wait(format!("store: {e}")),
                    }
                };
                let card_was_shown = shown.as_ref().is_some_and(|s| {
                    s.state == StepState::Done
                        && s.result.as_ref().and_then(|r| r.get(CARD_SHOWN)) != Some(&Value::Bool(false))
                });
                if !card_was_shown {
                    return Action::Drop("the card was never shown".into());
                }
                if finish_state.is_some_and(|f| f.state == StepState::Done) {
                    return Action::Drop("finish already took the card away".into());
                }
            }
        }
        let refs = engine::references(&params);
        if !refs.is_empty() {
            let results = match self
                .shared
                .store(move |s| {
                    let mut found = HashMap::new();
                    for key in refs {
                        if let Some(v) = s.result_by_key(&key)? {
                            found.insert(key, v);
                        }
                    }
                    Ok(found)
                })
                .await
            {
                Ok(r) => r,
                Err(e) => return Action::Wait(format!("store: {e}")),
            };
            params = match engine::resolve(&params, |key| results.get(key)) {
                Ok(p) => p,
                // An earlier step this one needs ended without a result: it can never be sent. When that step
                // was left out on purpose (a customization cancelled it), so is this one.
                Err(e) => {
                    return match self.dropped_dependency(&planned.params).await {
                        Some(reason) => Action::Drop(reason),
                        None => Action::Fail(format!("cannot complete the request: {e}")),
                    }
                }
            };
        }
        let mut record_path = planned.record_path.clone();
        let mut delete_activity = false;
        let mut search_filter = None;
        match customize::customize(&self.shared, &self.shared.hooks, &step.payload, &planned, &params).await {
            Ok(Customized::Unchanged) => {}
            Ok(Customized::Cancelled(reason)) => return Action::Drop(reason),
            Ok(Customized::Params {
                params: customized,
                action,
                record_path: path,
                filter,
            }) => {
                params = customized;
                record_path = path.or(record_path);
                delete_activity = planned.kind == StepKind::Finish && action.as_deref() == Some("delete");
                search_filter = filter;
            }
            Err(e) => return Action::Wait(format!("store: {e}")),
        }
        if planned.kind == StepKind::Register {
            let bound = crm_binding::bind(
                &self.shared,
                &self.client,
                &planned,
                &step.payload,
                &mut params,
                search_filter,
            );
            if let Err(e) = bound.await {
                return Action::Wait(format!("CRM search: {e}"));
            }
        }
        if card_shown == Some(false) {
            params = engine::without_card(&params);
        }
        if planned.kind == StepKind::AttachRecord {
            let call_id = params
                .get("CALL_ID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let Some(path) = record_path else {
                return Action::Fail("no recording path".into());
            };
            return Action::Record { call_id, path };
        }
        Action::Send {
            method: planned.method.clone(),
            params,
            card_shown,
            delete_activity,
        }
    }

    /// Sends the requests: one alone, several in one `batch` (one request against the portal's limit).
    async fn send(&self, requests: Vec<(Step, String, Value, Option<bool>)>) -> Vec<(Step, Outcome, Option<Value>)> {
        let mut out = Vec::new();
        // A round whose steps were all dropped, deferred or uploaded has nothing to send: an empty `batch`
        // would still cost a request against the portal's limit.
        if requests.is_empty() {
            return out;
        }
        if requests.len() == 1 {
            for (step, method, params, card_shown) in requests {
                let started = std::time::Instant::now();
                let result = self.client.call(&method, params.clone()).await;
                let error = result.as_ref().err().filter(|e| unreachable(e)).map(|e| e.to_string());
                self.shared
                    .telemetry
                    .crm_request(&method, started.elapsed(), error.as_deref());
                let request = json!({"method": method, "params": params});
                out.push((step, classify(&method, result.as_ref(), card_shown), Some(request)));
            }
            return out;
        }
        let mut batch = bitrix24::Batch::new();
        let mut keys = Vec::new();
        for (i, (_, method, params, _)) in requests.iter().enumerate() {
            let key = format!("s{i}");
            if let Err(e) = batch.push(key.clone(), method.clone(), params.clone()) {
                warn!(error = %e, "cannot batch a step; it will be retried");
            }
            keys.push(key);
        }
        let started = std::time::Instant::now();
        let response = self.client.batch(&batch).await;
        let error = response
            .as_ref()
            .err()
            .filter(|e| unreachable(e))
            .map(|e| e.to_string());
        self.shared
            .telemetry
            .crm_request("batch", started.elapsed(), error.as_deref());
        for ((step, method, params, card_shown), key) in requests.into_iter().zip(keys) {
            let request = json!({"method": method, "params": params, "batch": true});
            let outcome = match &response {
                Ok(r) => match r.get(&key) {
                    Ok(value) => classify(&method, Ok(value), card_shown),
                    Err(e) => classify(&method, Err(&e), card_shown),
                },
                Err(e) => batch_failed(e),
            };
            out.push((step, outcome, Some(request)));
        }
        out
    }

    /// Why a step this one refers to was not sent, when it was dropped (not failed).
    async fn dropped_dependency(&self, params: &Value) -> Option<String> {
        let refs = engine::references(params);
        let steps = self
            .shared
            .store(move |s| {
                let mut found = Vec::new();
                for key in refs {
                    found.extend(s.step_by_key(&key)?);
                }
                Ok(found)
            })
            .await
            .ok()?;
        steps.into_iter().find(|s| s.state == StepState::Dropped).map(|s| {
            format!(
                "{} {} was not sent ({})",
                s.kind,
                s.idempotency_key,
                s.last_error.unwrap_or_default()
            )
        })
    }

    /// Once a call's registration is finished: `action: delete` of `process_final_params` deletes its CRM
    /// activity; otherwise `customize_activity` may update the activity and `customize_entity` the entity this
    /// connector created for the call. On their own task: a slow hook holds no other step up.
    fn after_finish(&self, finish_payload: Value, finish_result: Value, delete: bool) {
        let hooks = self.shared.hooks.clone();
        let wanted = delete
            || hooks.is_enabled(hooks::HookName::CustomizeActivity)
            || hooks.is_enabled(hooks::HookName::CustomizeEntity);
        if !wanted {
            return;
        }
        let (shared, client) = (self.shared.clone(), self.client.clone());
        tokio::spawn(async move {
            let Ok(planned) = serde_json::from_value::<engine::Step>(finish_payload.clone()) else {
                return;
            };
            let journal = |message: String, data: Value| {
                let entry = NewJournalEntry::new(&planned.call, Timestamp::now(), EntryKind::Hook, message).data(data);
                let shared = shared.clone();
                async move {
                    if let Err(e) = shared.store(move |s| s.append_journal(&[entry])).await {
                        warn!(error = %e, "cannot journal a customization after finish");
                    }
                }
            };
            let activity = finish_result.get("CRM_ACTIVITY_ID").filter(|v| !v.is_null()).cloned();
            if delete {
                let (message, data) = match activity {
                    None => (
                        "action delete of process_final_params: Bitrix24 named no CRM activity to delete".into(),
                        Value::Null,
                    ),
                    Some(id) => {
                        let request = json!({"id": id});
                        let answer = client.call("crm.activity.delete", request.clone()).await;
                        match answer {
                            Ok(a) => (
                                format!(
                                    "call deleted from the CRM (action delete of process_final_params): activity {id}"
                                ),
                                json!({"method": "crm.activity.delete", "params": request, "answer": a}),
                            ),
                            Err(e) => (
                                format!("action delete of process_final_params: crm.activity.delete failed: {e}"),
                                json!({"method": "crm.activity.delete", "params": request, "error": e.to_string()}),
                            ),
                        }
                    }
                };
                info!(call = %planned.call, "{message}");
                journal(message, data).await;
                return;
            }
            let context = customize::context_of(&finish_payload);
            let summary = customize::call_summary(&planned.call, context.call_full.as_ref());
            let mut updates = Vec::new();
            if let Some(id) = activity {
                updates.push((hooks::HookName::CustomizeActivity, "crm.activity.update".to_owned(), id));
            }
            let refs = engine::references(&planned.params);
            let created = shared
                .store(move |s| {
                    for key in refs {
                        if let Some(r) = s.result_by_key(&key)? {
                            return Ok(customize::created_entity(&r));
                        }
                    }
                    Ok(None)
                })
                .await
                .ok()
                .flatten();
            let created = match created {
                Some(c) => Some(c),
                None => crm_binding::created_for(&shared, &planned.call).await,
            };
            if let Some((kind, id)) = created {
                updates.push((hooks::HookName::CustomizeEntity, format!("crm.{kind}.update"), id));
            }
            for (hook, method, id) in updates {
                let Some(called) = hooks.call(hook, &summary, &context).await else {
                    continue;
                };
                journal(called.describe(), called.journal_data()).await;
                let HookOutcome::Applied(_) = called.outcome else {
                    continue;
                };
                // Only the fields the hook named: the call's summary it was given is not written back.
                let fields = called
                    .answer
                    .as_ref()
                    .and_then(|a| a.get("data"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let request = json!({"id": id, "fields": fields});
                let (message, data) = match client.call(&method, request.clone()).await {
                    Ok(a) => (
                        format!("{hook}: {method} {id} updated"),
                        json!({"method": method, "params": request, "answer": a}),
                    ),
                    Err(e) => (
                        format!("{hook}: {method} {id} failed: {e}"),
                        json!({"method": method, "params": request, "error": e.to_string()}),
                    ),
                };
                journal(message, data).await;
            }
        });
    }

    /// `post_registration`: told what was registered; its answer changes nothing, so it runs on its own and
    /// holds no other step up.
    fn post_registration(&self, payload: Value, request: Option<Value>, result: Option<Value>) {
        let hooks = self.shared.hooks.clone();
        if !hooks.is_enabled(hooks::HookName::PostRegistration) {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let Ok(planned) = serde_json::from_value::<engine::Step>(payload.clone()) else {
                return;
            };
            let params = json!({
                "registration": request.and_then(|r| r.get("params").cloned()).unwrap_or(Value::Null),
                "result": result.unwrap_or(Value::Null),
            });
            let context = customize::context_of(&payload);
            let Some(called) = hooks.call(hooks::HookName::PostRegistration, &params, &context).await else {
                return;
            };
            let entry = customize::entry(&planned.call, Timestamp::now(), &planned.key, &called);
            if let Err(e) = shared.store(move |s| s.append_journal(&[entry])).await {
                warn!(error = %e, "cannot journal post_registration");
            }
        });
    }

    async fn attach_record(&self, step: &Step, call_id: &str, pbx_path: &str) -> Outcome {
        let path = self.recordings.local_path(pbx_path);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                let age = Timestamp::now().as_micros().saturating_sub(step.created_at.as_micros()) / 1_000_000;
                if age as u64 > self.recordings.missing_timeout_secs {
                    return Outcome::Failed(format!("recording {} not found: {e}", path.display()));
                }
                return Outcome::Retry {
                    error: format!("recording {} not there yet: {e}", path.display()),
                    after: Duration::from_secs(5),
                };
            }
        };
        // Complete means MixMonitor has let go: the size has not changed for `settle_secs`.
        let settle = Duration::from_secs_f64(self.recordings.settle_secs);
        let quiet_for = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if quiet_for < settle {
            return Outcome::Retry {
                error: "recording still being written".into(),
                after: settle.saturating_sub(quiet_for).max(Duration::from_millis(200)),
            };
        }
        let Some(filename) = upload_name(&path) else {
            return Outcome::Failed(format!(
                "{} is not a wav or mp3 file (Bitrix24 accepts only those)",
                path.display()
            ));
        };
        if meta.len() == 0 {
            return Outcome::Failed(format!("{} is empty", path.display()));
        }
        if let Some(base) = &self.recordings.link_base_url {
            return self.attach_record_link(step, call_id, &filename, base).await;
        }
        let content = match tokio::fs::read(&path).await {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Retry {
                    error: format!("cannot read {}: {e}", path.display()),
                    after: Duration::from_secs(5),
                }
            }
        };
        let result = if meta.len() <= self.recordings.inline_max_bytes {
            self.client
                .attach_record_base64(call_id, &filename, &content)
                .await
                .map(|file_id| json!({"FILE_ID": file_id, "mode": "inline", "bytes": meta.len()}))
        } else {
            self.client
                .attach_record_upload(call_id, &filename, content)
                .await
                .map(|r| json!({"upload": r, "mode": "upload", "bytes": meta.len()}))
        };
        classify("telephony.externalCall.attachRecord", result.as_ref(), None)
    }

    /// `attachRecord` with a signed link to the admin UI's `/records/`: Bitrix24 downloads the file itself.
    async fn attach_record_link(&self, step: &Step, call_id: &str, filename: &str, base: &str) -> Outcome {
        let ttl = Duration::from_secs(self.recordings.link_ttl_hours.saturating_mul(3600));
        let token = self.shared.record_links.sign(
            &step.call_key,
            &step.idempotency_key,
            Timestamp::now().saturating_add(ttl),
        );
        let url = format!("{}/records/{token}", base.trim_end_matches('/'));
        let method = StepKind::AttachRecord.method();
        let params = json!({"CALL_ID": call_id, "FILENAME": filename, "RECORD_URL": url});
        let result = self.client.call(method, params).await;
        let result = result.map(|answer| json!({"answer": answer, "mode": "link"}));
        classify(method, result.as_ref(), None)
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
        }
    }

    /// Writes the outcome and the journal entries for it.
    async fn record(&self, step: Step, outcome: Outcome, request: Option<Value>) -> anyhow::Result<()> {
        let now = Timestamp::now();
        let lease = step.lease();
        let attempts = step.attempts;
        let call = step.call_key.clone();
        let mut journal = Vec::new();
        if let Some(request) = request {
            journal.push(
                NewJournalEntry::new(
                    &call,
                    now,
                    EntryKind::CrmRequest,
                    format!("{} {}", step.kind, step.idempotency_key),
                )
                .data(request),
            );
        }
        let (kind, message, data) = match &outcome {
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
        };
        journal.push(NewJournalEntry::new(&call, now, kind, message).data(data));
        self.report(&step, &outcome, now);
        match &outcome {
            Outcome::Done(_) => debug!(step = %step.idempotency_key, "step done"),
            Outcome::Retry { error, .. } => {
                warn!(step = %step.idempotency_key, attempts, %error, "step will be retried")
            }
            Outcome::Failed(reason) => warn!(step = %step.idempotency_key, %reason, "step failed for good"),
            Outcome::Dropped(reason) => info!(step = %step.idempotency_key, %reason, "step dropped"),
        }
        self.shared
            .store(move |s| {
                match outcome {
                    Outcome::Done(result) => s.mark_done(lease, &result, now)?,
                    Outcome::Retry { error, after } => s.mark_retry(lease, &error, now.saturating_add(after), now)?,
                    Outcome::Failed(reason) => s.mark_failed(lease, &reason, now)?,
                    Outcome::Dropped(reason) => s.mark_dropped(lease, &reason, now)?,
                }
                s.append_journal(&journal)
            })
            .await
    }
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

/// The file name Bitrix24 gets: the recording's own, with a lower-case `wav`/`mp3` extension.
fn upload_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    matches!(ext.as_str(), "wav" | "mp3").then(|| format!("{stem}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wav_and_mp3_are_uploaded() {
        assert_eq!(upload_name(Path::new("/r/a-b.WAV")).as_deref(), Some("a-b.wav"));
        assert_eq!(upload_name(Path::new("/r/x.mp3")).as_deref(), Some("x.mp3"));
        assert_eq!(upload_name(Path::new("/r/x.gsm")), None);
        assert_eq!(upload_name(Path::new("/r/noext")), None);
    }

    #[tokio::test]
    async fn a_round_with_nothing_to_send_costs_no_request() {
        let emu = b24emu::Emulator::start(b24emu::EmulatorConfig::default())
            .await
            .expect("emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::SqliteStore::open(dir.path().join("s.db")).expect("store");
        let engine = engine::Engine::new(engine::EngineSettings::default()).expect("engine");
        let client = bitrix24::Client::webhook(&emu.webhook_url())
            .expect("client")
            .build()
            .expect("client");
        let worker = Worker {
            shared: Shared {
                store,
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
            },
            client,
            recordings: RecordingSettings::default(),
        };
        assert!(worker.send(Vec::new()).await.is_empty());
        assert!(emu.requests().is_empty(), "{:?}", emu.requests());
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
