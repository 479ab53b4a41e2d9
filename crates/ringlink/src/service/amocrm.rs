//! The outbox worker for amoCRM: due steps (planned by `engine::amocrm`) → the `amocrm` client, answers and
//! errors back to the store.
//!
//! Each round claims the due steps (at most one per call) with the steps right after a finish that go with it:
//! the recording, whose signed link becomes the call's `link`, and the missed-call task, bound to the entity the
//! call landed on. Cards are about now: a popup whose phone stopped ringing is not sent. A finish is one
//! `POST /api/v4/calls`; when amoCRM does not know the number ("Entity not found") the finish's Unsorted entry
//! is added instead, or its lead and contact by complex add and the call sent again (or, with neither, the call
//! is not recorded and the journal says so). `/api/v4/calls` does not
//! deduplicate, so a finish is sent only while its step is claimed, and its outcome is stored before anything
//! after it; what a crash between sending and storing leaves is the one window for a second call. The round's
//! outcomes and journal entries are written in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::amocrm::{CALLS, CONTACTS, NOTHING, POPUP, TASKS};
use engine::{StepKind, Timing};
use serde_json::{json, Value};
use store::{EntryKind, NewJournalEntry, PortalTokens, Step, Store, Timestamp};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::customize::{self, Customized};
use super::Shared;
use crate::config::{AmoCrmConfig, RecordingSettings};

/// Steps claimed per round.
const ROUND: usize = 32;
/// The steps that go with a finish: its recording's link and its missed-call task.
const FOLLOWERS: &[(&str, &str)] = &[
    ("finish", "attach_record"),
    ("attach_record", "add_task"),
    ("finish", "add_task"),
];
/// A claimed step comes back to the queue if the worker dies holding it this long.
const LEASE: Duration = Duration::from_secs(120);
/// Marker in a register's stored result: whether its popup was sent.
const CARD_SHOWN: &str = "ringlink_card_shown";

/// The key the account's tokens are stored under.
fn token_key(base: &str) -> String {
    format!("amocrm:{base}")
}

/// Builds the amoCRM client; OAuth tokens come from the store when it has them (each refresh is saved there
/// before it is used: amoCRM's refresh tokens are single use).
pub fn client(settings: &AmoCrmConfig, store: &Arc<dyn Store>) -> anyhow::Result<amocrm::Client> {
    let base = settings.base().map_err(anyhow::Error::msg)?;
    let builder = match &settings.long_lived_token {
        Some(token) => amocrm::Client::long_lived(&base, token.clone()),
        None => {
            let integration = amocrm::Integration::new(
                settings.client_id.clone().unwrap_or_default(),
                settings.client_secret.clone().unwrap_or_default(),
                settings.redirect_uri.clone().unwrap_or_default(),
            );
            let key = token_key(&base);
            let tokens = match store.load_tokens(&key)? {
                Some(saved) => amocrm::Tokens::new(
                    saved.access_token,
                    saved.refresh_token,
                    saved.expires_at.map(|at| at.as_micros() / 1_000_000),
                ),
                None => amocrm::Tokens::new(
                    settings.access_token.clone().unwrap_or_default(),
                    settings.refresh_token.clone().unwrap_or_default(),
                    None,
                ),
            };
            let saver_store = store.clone();
            let saver = move |t: &amocrm::Tokens| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                let tokens = PortalTokens {
                    access_token: t.access_token.reveal().to_owned(),
                    refresh_token: t.refresh_token.reveal().to_owned(),
                    expires_at: t.expires_at.map(store::Timestamp::from_secs),
                    scope: None,
                    client_endpoint: None,
                    member_id: None,
                };
                saver_store.save_tokens(&key, &tokens, store::Timestamp::now())?;
                Ok(())
            };
            amocrm::Client::oauth(&base, integration, tokens).token_store(Arc::new(saver))
        }
    };
    let timeouts = amocrm::Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs_f64(settings.request_timeout_secs),
    };
    Ok(builder.timeouts(timeouts).build()?)
}

pub async fn run(
    shared: Shared,
    client: amocrm::Client,
    recordings: RecordingSettings,
    mut stop: watch::Receiver<bool>,
) {
    let worker = Worker {
        shared,
        client,
        recordings,
    };
    let work = worker.shared.work.clone();
    super::worker::rounds(&work, &mut stop, "amoCRM outbox round failed", || worker.round()).await;
}

struct Worker {
    shared: Shared,
    client: amocrm::Client,
    recordings: RecordingSettings,
}

/// The outcome of one step, to be written back.
enum Outcome {
    Done(Value),
    Retry { error: String, after: Duration },
    Failed(String),
    Dropped(String),
}

impl Outcome {
    fn into_store(self, now: Timestamp) -> store::Outcome {
        match self {
            Outcome::Done(result) => store::Outcome::Done(result),
            Outcome::Retry { error, after } => store::Outcome::Retry {
                error,
                next_attempt_at: now.saturating_add(after),
            },
            Outcome::Failed(reason) => store::Outcome::Failed(reason),
            Outcome::Dropped(reason) => store::Outcome::Dropped(reason),
        }
    }

    /// What amoCRM's error means for the step: retried when a retry can help (limits, outages), kept waiting
    /// for the admin when the credentials are the problem, or for the client's probe to find the IP block lifted,
    /// else failed.
    fn of_error(e: &amocrm::Error) -> Self {
        if e.is_retryable() {
            Outcome::Retry {
                error: e.to_string(),
                after: Duration::from_secs(3),
            }
        } else if matches!(
            e,
            amocrm::Error::Unauthorized { .. }
                | amocrm::Error::TokenRefused { .. }
                | amocrm::Error::NoRefreshToken
                | amocrm::Error::IpBlocked
        ) {
            Outcome::Retry {
                error: e.to_string(),
                after: Duration::from_secs(60),
            }
        } else {
            Outcome::Failed(e.to_string())
        }
    }
}

/// One attempt: the step, how it ended, and the request sent (for the journal).
type Attempt = (Step, Outcome, Option<Value>);

impl Worker {
    async fn round(&self) -> anyhow::Result<usize> {
        let now = Timestamp::now();
        let claimed = self
            .shared
            .store(move |s| s.claim_due_with_followers(now, ROUND, LEASE, FOLLOWERS))
            .await?;
        if claimed.claimed.is_empty() {
            return Ok(0);
        }
        let mut followers: HashMap<String, Vec<Step>> = HashMap::new();
        for step in claimed.followers {
            followers.entry(step.call_key.clone()).or_default().push(step);
        }
        let mut attempts: Vec<Attempt> = Vec::new();
        for step in claimed.claimed {
            let chain = followers.remove(&step.call_key).unwrap_or_default();
            if step.kind == StepKind::Finish.name() {
                self.finish(step, chain, &mut attempts).await;
            } else {
                let (outcome, request) = self.one(&step, None, &HashMap::new()).await;
                attempts.push((step, outcome, request));
                attempts.extend(chain.into_iter().map(later));
            }
        }
        let n = attempts.len();
        self.record_all(attempts).await?;
        Ok(n)
    }

    /// A finish with the recording and the task claimed after it: the recording's link goes in the call, the
    /// task after the call once its entity is known.
    async fn finish(&self, step: Step, chain: Vec<Step>, attempts: &mut Vec<Attempt>) {
        let mut record = None;
        let mut rest = Vec::new();
        for follower in chain {
            if follower.kind == StepKind::AttachRecord.name() && record.is_none() && rest.is_empty() {
                record = Some(follower);
            } else {
                rest.push(follower);
            }
        }
        let link = record.as_ref().and_then(|r| self.link(r));
        let (outcome, request) = self.one(&step, link.as_deref(), &HashMap::new()).await;
        let done = match &outcome {
            Outcome::Done(result) => Some(result.clone()),
            _ => None,
        };
        attempts.push((step.clone(), outcome, request));
        let Some(result) = done else {
            attempts.extend(record.into_iter().chain(rest).map(later));
            return;
        };
        if let Some(record) = record {
            let outcome = match &link {
                Some(link) => Outcome::Done(json!({"sent_as_link_of": step.idempotency_key, "link": link})),
                None => {
                    Outcome::Dropped("no [recordings] link_base_url: amoCRM plays a recording only from a link".into())
                }
            };
            attempts.push((record, outcome, None));
        }
        for follower in rest {
            let results = HashMap::from([(step.idempotency_key.clone(), result.clone())]);
            let (outcome, request) = self.one(&follower, None, &results).await;
            attempts.push((follower, outcome, request));
        }
    }

    /// A signed link to the recording of `record` (a step planned with its path), when links are configured.
    fn link(&self, record: &Step) -> Option<String> {
        let base = self.recordings.link_base_url.as_deref()?;
        let ttl = Duration::from_secs(self.recordings.link_ttl_hours.saturating_mul(3600));
        let token = self.shared.record_links.sign(
            &record.call_key,
            &record.idempotency_key,
            Timestamp::now().saturating_add(ttl),
        );
        Some(format!("{}/records/{token}", base.trim_end_matches('/')))
    }

    /// Decides and sends one step. `link`: the recording's link of a finish; `results`: answers of this round
    /// (the finish a task is bound to), looked up before the store.
    async fn one(&self, step: &Step, link: Option<&str>, results: &HashMap<String, Value>) -> (Outcome, Option<Value>) {
        let planned: engine::Step = match serde_json::from_value(step.payload.clone()) {
            Ok(p) => p,
            Err(e) => return (Outcome::Failed(format!("unreadable step payload: {e}")), None),
        };
        if let Timing::WhileRinging { conversation } = &planned.timing {
            if !self.shared.engine().is_ringing(&planned.call, conversation) {
                let why = "the phone stopped ringing before the popup could be sent";
                return (Outcome::Dropped(why.into()), None);
            }
        }
        let refs: Vec<String> = engine::references(&planned.params)
            .into_iter()
            .filter(|k| !results.contains_key(k))
            .collect();
        let stored = match self
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
            Ok(found) => found,
            Err(e) => {
                let error = format!("store: {e}");
                return (
                    Outcome::Retry {
                        error,
                        after: Duration::from_secs(2),
                    },
                    None,
                );
            }
        };
        let params = match engine::resolve(&planned.params, |k| results.get(k).or_else(|| stored.get(k))) {
            Ok(p) => p,
            Err(e) => return (Outcome::Failed(format!("cannot complete the request: {e}")), None),
        };
        let hooks = customize::amocrm_hooks_of(planned.kind);
        let params = match self.customized(step, &planned, &planned.key, hooks, params).await {
            Ok(params) => params,
            Err(outcome) => return (outcome, None),
        };
        self.send(step, &planned, params, link).await
    }

    /// `params` as the enabled ones of `hooks` customize them — asked once, the outcome journaled under `key`
    /// before anything is sent, so a retry sends the same; a failing hook leaves them unchanged. `Err`: the
    /// step's outcome when a hook cancelled it (empty `data`) or the store failed.
    async fn customized(
        &self,
        step: &Step,
        planned: &engine::Step,
        key: &str,
        hooks: &[hooks::HookName],
        params: Value,
    ) -> Result<Value, Outcome> {
        let shared = &self.shared;
        match customize::run_chain(shared, &shared.hooks, &step.payload, planned, key, hooks, &params).await {
            Ok(Customized::Unchanged) => Ok(params),
            Ok(Customized::Params { params, .. }) => Ok(params),
            Ok(Customized::Cancelled(reason)) => Err(Outcome::Dropped(reason)),
            Err(e) => Err(Outcome::Retry {
                error: format!("store: {e}"),
                after: Duration::from_secs(2),
            }),
        }
    }

    async fn send(
        &self,
        step: &Step,
        planned: &engine::Step,
        params: Value,
        link: Option<&str>,
    ) -> (Outcome, Option<Value>) {
        let started = Instant::now();
        let (outcome, request, error) = match (planned.kind, planned.method.as_str()) {
            (StepKind::Register, NOTHING) => {
                return (Outcome::Done(json!({"popup": false, CARD_SHOWN: false})), None);
            }
            (StepKind::Register, POPUP) => {
                let ringing = match &planned.timing {
                    Timing::DurableCardWhileRinging { conversation } => {
                        self.shared.engine().is_ringing(&planned.call, conversation)
                    }
                    _ => true,
                };
                if !ringing {
                    // Sent late (amoCRM was down while it rang): the call is recorded at its end; no popup now.
                    return (Outcome::Done(json!({"popup": false, CARD_SHOWN: false})), None);
                }
                let body = params["popup"].clone();
                match self.client.post_json("/api/v2/events", &body).await {
                    Ok(_) => (Outcome::Done(json!({"popup": true, CARD_SHOWN: true})), body, None),
                    Err(e) => (Outcome::of_error(&e), body, Some(e.to_string())),
                }
            }
            (StepKind::Show, POPUP) => {
                let body = params["popup"].clone();
                match self.client.post_json("/api/v2/events", &body).await {
                    Ok(_) => (Outcome::Done(json!({"popup": true})), body, None),
                    Err(e) => (Outcome::of_error(&e), body, Some(e.to_string())),
                }
            }
            (StepKind::LookupOwner, CONTACTS) => {
                let phone = params["phone"].as_str().unwrap_or_default().to_owned();
                match self.client.contacts_by_phone(&phone).await {
                    Ok(found) => {
                        let found: Vec<Value> = found
                            .iter()
                            .map(|c| json!({"id": c.id, "responsible_user_id": c.responsible_user_id}))
                            .collect();
                        (Outcome::Done(Value::Array(found)), json!({"query": phone}), None)
                    }
                    Err(e) => (Outcome::of_error(&e), json!({"query": phone}), Some(e.to_string())),
                }
            }
            (StepKind::Finish, CALLS) => self.call(step, planned, params, link).await,
            (StepKind::AddTask, TASKS) => {
                let mut task = params["task"].clone();
                let entity = task
                    .as_object_mut()
                    .and_then(|t| t.remove("entity"))
                    .unwrap_or(Value::Null);
                if let (Some(kind), Some(id)) = (entity.get("type"), entity.get("id")) {
                    task["entity_type"] = kind.clone();
                    task["entity_id"] = id.clone();
                }
                let body = json!([task]);
                match self.client.post_json("/api/v4/tasks", &body).await {
                    Ok(answer) => (Outcome::Done(answer.unwrap_or(Value::Null)), body, None),
                    Err(e) => (Outcome::of_error(&e), body, Some(e.to_string())),
                }
            }
            (StepKind::AttachRecord, _) => {
                return (
                    Outcome::Dropped(
                        "amoCRM takes a recording only as the link of its call, which was recorded before the \
                         file was known"
                            .into(),
                    ),
                    None,
                )
            }
            (kind, method) => {
                return (
                    Outcome::Failed(format!(
                        "{} step with method {method:?} is not an amoCRM request",
                        kind.name()
                    )),
                    None,
                )
            }
        };
        self.shared
            .telemetry
            .crm_request(&planned.method, started.elapsed(), error.as_deref());
        (outcome, Some(json!({"method": planned.method, "body": request})))
    }

    /// `POST /api/v4/calls`; for a number amoCRM does not know, the Unsorted entry instead (or the complex add
    /// before the call again), as `process_contact_creation_params` and `process_lead_creation_params` make
    /// them. The stored result names the entity the call landed on (`{}`: nowhere).
    async fn call(
        &self,
        step: &Step,
        planned: &engine::Step,
        params: Value,
        link: Option<&str>,
    ) -> (Outcome, Value, Option<String>) {
        let mut call = params["call"].clone();
        if let Some(link) = link {
            call["link"] = Value::from(link);
        }
        let body = json!([call]);
        let answer = self.client.post_json("/api/v4/calls", &body).await;
        let creates = !(params["complex"].is_null() && params["unsorted"].is_null());
        let params = match &answer {
            Err(e) if e.is_entity_not_found() && creates => {
                let key = format!("{}/create", planned.key);
                let hooks = &customize::AMOCRM_CREATION_HOOKS;
                match self.customized(step, planned, &key, hooks, params).await {
                    Ok(params) => params,
                    Err(outcome) => return (outcome, body, None),
                }
            }
            _ => params,
        };
        match answer {
            Ok(answer) => (Outcome::Done(landed(answer)), body, None),
            Err(e) if e.is_entity_not_found() && !params["complex"].is_null() => {
                self.complex_then_call(&params["complex"], body).await
            }
            Err(e) if e.is_entity_not_found() => {
                let mut unsorted = params["unsorted"].clone();
                if unsorted.is_null() {
                    let why = "amoCRM knows no contact with this number and no record is created for it \
                               (crm_create / [amocrm] unsorted): the call is not recorded";
                    return (Outcome::Done(json!({"entity": {}, "not_recorded": why})), body, None);
                }
                if let Some(link) = link {
                    unsorted["metadata"]["link"] = Value::from(link);
                }
                let entry = json!([unsorted]);
                match self.client.post_json("/api/v4/leads/unsorted/sip", &entry).await {
                    Ok(answer) => {
                        let added = answer
                            .as_ref()
                            .and_then(|a| a.pointer("/_embedded/unsorted/0"))
                            .cloned()
                            .unwrap_or(Value::Null);
                        let entity = match added.pointer("/_embedded/leads/0/id") {
                            Some(id) => json!({"type": "leads", "id": id}),
                            None => json!({}),
                        };
                        (
                            Outcome::Done(json!({"entity": entity, "unsorted": added})),
                            json!({"calls": body, "unsorted": entry}),
                            None,
                        )
                    }
                    Err(e) => (Outcome::of_error(&e), entry, Some(e.to_string())),
                }
            }
            Err(e) => (Outcome::of_error(&e), body, Some(e.to_string())),
        }
    }

    /// An unknown number's lead and contact (`POST /api/v4/leads/complex`), then the call `body` again: it lands
    /// on the new lead. A retry after the lead was made finds the contact and sends only the call.
    async fn complex_then_call(&self, lead: &Value, body: Value) -> (Outcome, Value, Option<String>) {
        let leads = json!([lead]);
        let created = match self.client.post_json("/api/v4/leads/complex", &leads).await {
            Ok(answer) => answer.unwrap_or(Value::Null),
            Err(e) => return (Outcome::of_error(&e), leads, Some(e.to_string())),
        };
        let request = json!({"complex": leads, "calls": body});
        match self.client.post_json("/api/v4/calls", &body).await {
            Ok(answer) => {
                let mut result = landed(answer);
                result["complex"] = created;
                (Outcome::Done(result), request, None)
            }
            Err(e) => (Outcome::of_error(&e), request, Some(e.to_string())),
        }
    }

    /// Writes the round's outcomes and the journal entries about them in one store transaction.
    async fn record_all(&self, attempts: Vec<Attempt>) -> anyhow::Result<()> {
        let now = Timestamp::now();
        let mut marks = Vec::with_capacity(attempts.len());
        let mut journal = Vec::new();
        let mut logged = Vec::new();
        for (step, outcome, request) in attempts {
            if let Some(request) = request {
                journal.push(
                    NewJournalEntry::new(
                        &step.call_key,
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
                        "{} failed (attempt {}), retrying in {after:?}: {error}",
                        step.kind, step.attempts
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
            self.report(&step, &outcome, now);
            journal.push(NewJournalEntry::new(&step.call_key, now, kind, message).data(data));
            logged.push((step.lease(), step.idempotency_key.clone(), log_line(&outcome)));
            marks.push((step.lease(), outcome.into_store(now)));
        }
        let lost = self
            .shared
            .store(move |s| s.mark_many_journaled(&marks, &journal, now))
            .await?;
        for (lease, key, (done, line)) in logged {
            if lost.contains(&lease) {
                warn!(
                    step = key,
                    "a step's lease ran out while it was sent; its outcome is not recorded"
                );
            } else if done {
                debug!(step = key, "step done");
            } else {
                info!(step = key, "{line}");
            }
        }
        Ok(())
    }

    /// Counts the attempt for `/metrics`; a popup sent also counts how long it took since its event was stored.
    fn report(&self, step: &Step, outcome: &Outcome, now: Timestamp) {
        let telemetry = &self.shared.telemetry;
        let method = step.payload.get("method").and_then(Value::as_str).unwrap_or("unknown");
        match outcome {
            Outcome::Done(result) => {
                telemetry.step(method, "sent");
                if result.get("popup") == Some(&Value::Bool(true)) {
                    let micros = now.as_micros().saturating_sub(step.created_at.as_micros()).max(0);
                    telemetry.card_popped(Duration::from_micros(micros.unsigned_abs()));
                }
            }
            Outcome::Retry { .. } => telemetry.step(method, "retried"),
            Outcome::Failed(_) => telemetry.step(method, "failed"),
            Outcome::Dropped(_) => telemetry.step(method, "dropped"),
        }
    }
}

/// The stored result of an added call: the entity it landed on (`{}`: nowhere) and amoCRM's item.
fn landed(answer: Option<Value>) -> Value {
    let added = answer
        .as_ref()
        .and_then(|a| a.pointer("/_embedded/calls/0"))
        .cloned()
        .unwrap_or(Value::Null);
    let entity = match (added.get("entity_type"), added.get("entity_id")) {
        (Some(kind), Some(id)) if !id.is_null() => json!({"type": kind, "id": id}),
        _ => json!({}),
    };
    json!({"entity": entity, "call": added})
}

/// A claimed follower whose leader was not done: due again at once, after it.
fn later(step: Step) -> Attempt {
    (
        step,
        Outcome::Retry {
            error: "goes after the step before it is done".into(),
            after: Duration::ZERO,
        },
        None,
    )
}

/// `(done, the log line)` of an outcome.
fn log_line(outcome: &Outcome) -> (bool, String) {
    match outcome {
        Outcome::Done(_) => (true, String::new()),
        Outcome::Retry { error, .. } => (false, format!("step will be retried: {error}")),
        Outcome::Failed(reason) => (false, format!("step failed for good: {reason}")),
        Outcome::Dropped(reason) => (false, format!("step dropped: {reason}")),
    }
}
