//! The admin UI's "Re-process this call" ([`web::Reprocess`]): fills what the CRM lacks of one call that has
//! ended, and never sends anything twice.
//!
//! - A call the engine still follows is left alone (the live pipeline registers it).
//! - A call with no steps, or with a registration never finished, is planned again with the keys the live
//!   service gives its steps: from the PBX's CEL when `[cel]` is configured (the call rebuilt whole, as the
//!   recovery after a gap does), else from the journal (its journaled events planned again when it was never
//!   registered; the open registrations finished from what is known, as after a restart). The outbox takes a key
//!   once, so only the steps it lacks are added.
//! - Steps that failed for good or were dropped are set to be sent again (a failed step was refused by the CRM,
//!   so it never took effect).
//! - The `need_registration` hook's answer for the call, as its journal recorded it when the call was live, holds:
//!   a call the hook refused is not planned (the page says why), one it admitted is registered even where the
//!   settings alone would not. A call with no recorded answer (the hook off or failing then) goes by the settings,
//!   as the live engine did.
//!
//! A call whose every step is done changes nothing. One re-process runs at a time.

use std::sync::Arc;

use serde_json::json;
use store::{EntryKind, JournalEntry, NewJournalEntry, ReprocessScope, Step, StepState};
use tracker::{CallEvent, CallFull};
use web::reprocess::{ReprocessFuture, Source};
use web::Reprocessed;

use super::users::directory_user;
use super::Shared;
use crate::config::{Config, CrmKind};

/// The port the admin UI's button calls.
pub(crate) struct Reprocessor {
    shared: Shared,
    config: Arc<Config>,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl Reprocessor {
    pub(crate) fn new(shared: Shared, config: Config) -> Self {
        Reprocessor {
            shared,
            config: Arc::new(config),
            one_at_a_time: Arc::default(),
        }
    }
}

impl web::Reprocess for Reprocessor {
    fn reprocess(&self, call: &str) -> ReprocessFuture {
        let (shared, config, lock, call) = (
            self.shared.clone(),
            self.config.clone(),
            self.one_at_a_time.clone(),
            call.to_owned(),
        );
        Box::pin(async move {
            let _one = lock.lock().await;
            reprocess(&shared, &config, &call).await.map_err(|e| format!("{e:#}"))
        })
    }
}

/// Registrations (not failed or dropped) outnumber finishes: the outbox's own "left open" (the query
/// [`store::Store::calls_with_unmatched`] runs over every call).
fn has_open_registration(steps: &[Step]) -> bool {
    let (register, finish) = (engine::StepKind::Register.name(), engine::StepKind::Finish.name());
    let opened = steps
        .iter()
        .filter(|s| s.kind == register && !matches!(s.state, StepState::Failed | StepState::Dropped))
        .count();
    opened > steps.iter().filter(|s| s.kind == finish).count()
}

async fn reprocess(shared: &Shared, config: &Config, call: &str) -> anyhow::Result<Reprocessed> {
    if shared.engine().follows(call) {
        return Ok(Reprocessed {
            live: true,
            ..Reprocessed::default()
        });
    }
    let mut out = Reprocessed::default();
    let registering = config.bitrix24.is_some() || config.crm.kind == CrmKind::Amocrm;
    if !registering {
        out.note = Some("no CRM is configured ([bitrix24] or [amocrm]): calls are journaled, not registered".into());
        return Ok(out);
    }
    let key = call.to_owned();
    let (steps, journal) = shared
        .store(move |s| Ok((s.steps_of_call(&key)?, s.call_timeline(&key)?)))
        .await?;
    let verdict = recorded_verdict(&journal);
    if verdict == Some(false) && steps.is_empty() {
        out.note = Some(
            "need_registration answered false for this call while it was live (see its timeline): it is not \
             registered, and re-processing keeps that answer"
                .into(),
        );
        return Ok(out);
    }
    if steps.is_empty() || has_open_registration(&steps) {
        let (source, plan, note) = match &config.cel {
            Some(_) => {
                let (plan, note) = from_cel(shared, config, call, &journal, verdict).await?;
                (Source::Cel, plan, note)
            }
            None => {
                let (plan, note) = from_journal(shared, config, call, &steps, &journal, verdict).await?;
                (Source::Journal, plan, note)
            }
        };
        out.source = Some(source);
        out.note = note;
        out.added = plan;
    }
    let key = call.to_owned();
    out.reset = shared
        .store(move |s| s.reprocess(&ReprocessScope::Call(key), store::Timestamp::now()))
        .await?;
    let key = call.to_owned();
    let steps = shared.store(move |s| s.steps_of_call(&key)).await?;
    out.waiting = steps
        .iter()
        .filter(|s| matches!(s.state, StepState::Pending | StepState::InFlight))
        .count() as u64;
    if !out.changed_nothing() {
        let what = match (out.added.is_empty(), out.reset) {
            (false, 0) => format!("steps added: {}", out.added.join(", ")),
            (true, n) => format!("{n} failed or dropped steps set to be sent again"),
            (false, n) => format!(
                "steps added: {}; {n} failed or dropped steps set to be sent again",
                out.added.join(", ")
            ),
        };
        let entry = NewJournalEntry::new(
            call,
            store::Timestamp::now(),
            EntryKind::Decision,
            format!("re-processed from the admin UI: {what}"),
        )
        .data(json!({"rule": engine::Rule::Reprocessed, "data": {"added": out.added, "reset": out.reset}}));
        shared.store(move |s| s.append_journal(&[entry])).await?;
        shared.work.notify_one();
    }
    Ok(out)
}

/// The `need_registration` hook's answer for the call while it was live: the engine journals it as a decision
/// (none when the hook was off, failed, or was never asked).
fn recorded_verdict(journal: &[JournalEntry]) -> Option<bool> {
    let rule = serde_json::to_value(engine::Rule::NeedRegistrationHook).ok()?;
    journal
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Decision)
        .filter_map(|e| e.data.as_ref())
        .find(|data| data.get("rule") == Some(&rule))
        .and_then(|data| data.pointer("/data/hook")?.as_bool())
}

/// An engine like the live one (its settings as the settings page left them, its CRM, the store's users
/// directory) that shows no card: the call rings nobody any more. With `verdict`, it gives that
/// `need_registration` answer for `call`.
async fn recovery_engine(shared: &Shared, call: &str, verdict: Option<bool>) -> anyhow::Result<engine::Engine> {
    let users: Vec<engine::DirectoryUser> = shared.store(|s| s.users()).await?.iter().map(directory_user).collect();
    let (settings, crm) = {
        let live = shared.engine();
        (live.settings().clone(), live.crm().clone())
    };
    let mut engine = crate::cel::recovery_engine(&settings, users, super::now())?;
    engine.set_crm(crm);
    if let Some(gate) = crate::cel::recorded_gate(call, verdict) {
        engine.set_gate(gate);
    }
    Ok(engine)
}

/// The call rebuilt from the PBX's CEL around its start (its key is the linkedid: the first channel's start
/// time) and its journal's times; the kinds of the steps added, or why none could be.
async fn from_cel(
    shared: &Shared,
    config: &Config,
    call: &str,
    journal: &[JournalEntry],
    verdict: Option<bool>,
) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let Some(cel) = config.cel.clone() else {
        return Ok((Vec::new(), None));
    };
    let now = super::now();
    let started = call
        .split('.')
        .next()
        .and_then(|secs| secs.parse::<i64>().ok())
        .map(tracker::Timestamp::from_secs);
    let journaled = |at: Option<&JournalEntry>| at.map(|e| tracker::Timestamp::from_micros(e.at.as_micros()));
    let times: Vec<tracker::Timestamp> = [started, journaled(journal.first()), journaled(journal.last())]
        .into_iter()
        .flatten()
        .collect();
    let (Some(&first), Some(&last)) = (times.iter().min(), times.iter().max()) else {
        anyhow::bail!("cannot tell when call {call} took place: its key is not a linkedid and the journal has nothing");
    };
    let from = first.saturating_sub_secs(cel.margin_secs);
    let to = tracker::Timestamp::from_micros(
        last.as_micros()
            .saturating_add(i64::try_from(cel.margin_secs).unwrap_or(0).saturating_mul(1_000_000)),
    )
    .min(now);
    let users: Vec<engine::DirectoryUser> = shared.store(|s| s.users()).await?.iter().map(directory_user).collect();
    let (settings, crm) = {
        let live = shared.engine();
        (live.settings().clone(), live.crm().clone())
    };
    let (tracker_config, recordings) = (config.tracker.clone(), config.recordings.clone());
    let store = shared.store.clone();
    let only = call.to_owned();
    let recovery = tokio::task::spawn_blocking(move || {
        let input = crate::cel::RecoveryInput {
            cel: &cel,
            tracker: &tracker_config,
            engine: &settings,
            crm,
            recordings: &recordings,
            users,
            live: Default::default(),
            from,
            to,
            now,
            dry_run: false,
            only: Some(&only),
            verdict,
        };
        crate::cel::recover(store.as_ref(), input)
    })
    .await??;
    let added: Vec<String> = recovery
        .calls
        .iter()
        .flat_map(|c| c.new_steps.iter().map(|(kind, _)| kind.clone()))
        .collect();
    let note = if recovery.calls.is_empty() && recovery.already_handled == 0 {
        Some(format!(
            "the PBX's CEL has no end of call {call} between {from} and {to} (its rows are gone, or it never ended)"
        ))
    } else {
        None
    };
    Ok((added, note))
}

/// The call planned again from its journal: a call never registered from its journaled events (its end
/// included), a registration left open finished as after a restart; the kinds of the steps added, or why none
/// could be.
async fn from_journal(
    shared: &Shared,
    config: &Config,
    call: &str,
    steps: &[Step],
    journal: &[JournalEntry],
    verdict: Option<bool>,
) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let mut engine = recovery_engine(shared, call, verdict).await?;
    let plan = if steps.is_empty() {
        let Some(events) = journaled_events(journal) else {
            let note =
                format!("the journal holds no end of call {call} and [cel] is not configured: nothing to plan it from");
            return Ok((Vec::new(), Some(note)));
        };
        let first = engine::Decision {
            call: call.to_owned(),
            time: super::now(),
            rule: engine::Rule::Reprocessed,
            reason: "re-processed from the admin UI: planned again from its journaled events, registered without a \
                     card, with its original times"
                .into(),
            data: json!({"events": events.len()}),
        };
        crate::cel::replan(&mut engine, first, &events)
    } else {
        let open = super::recovery::open_call(call.to_owned(), steps, journal, None, super::now(), &config.recordings);
        engine.recover(&open)
    };
    if plan.steps.is_empty() {
        let note = "the engine plans no step for this call (its decisions on the timeline say why)".to_owned();
        return Ok((Vec::new(), Some(note)));
    }
    let new_steps: Vec<store::NewStep> = plan.steps.iter().map(|s| super::pipeline::new_step(s, None)).collect();
    let decisions = super::pipeline::decision_entries(&plan.journal);
    let kinds: Vec<(String, String)> = plan
        .steps
        .iter()
        .map(|s| (s.kind.name().to_owned(), s.key.clone()))
        .collect();
    let added = shared
        .store(move |s| {
            let mut added = Vec::new();
            for (kind, key) in kinds {
                if s.step_by_key(&key)?.is_none() {
                    added.push(kind);
                }
            }
            if !added.is_empty() {
                s.enqueue_journaled(&new_steps, &decisions, store::Timestamp::now())?;
            }
            Ok(added)
        })
        .await?;
    Ok((added, None))
}

/// The call's journaled events in order, each with the call as it was at its end (the journal keeps the
/// whole call only there); `None` when the journal holds no end of the call.
fn journaled_events(journal: &[JournalEntry]) -> Option<Vec<(CallEvent, Option<CallFull>)>> {
    let events: Vec<CallEvent> = journal
        .iter()
        .filter(|e| e.kind == EntryKind::Ami)
        .filter_map(|e| serde_json::from_value(e.data.clone()?).ok())
        .collect();
    let last = events.iter().rev().find_map(|e| match e {
        CallEvent::CallEnded { call_full, .. } => Some(call_full.as_ref().clone()),
        _ => None,
    })?;
    Some(
        events
            .into_iter()
            .map(|e| match e {
                CallEvent::CallEnded { .. } => (e, None),
                other => (other, Some(last.clone())),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use store::{NewStep, Store, UserPhone};

    use super::super::users::store_time;
    use super::*;

    /// The test bed's office: trunk `carrier` on the DID, users 1–3 on extensions 101–103.
    const CONFIG: &str = r#"
[ami]
address = "127.0.0.1:5038"
username = "ringlink"
secret = "x"
[bitrix24]
webhook_url = "https://portal.example/rest/1/s3cr3t/"
[[tracker.trunks]]
endpoint = "carrier"
number = "73432723033"
name = "Main line"
[tracker.numbers]
prefixes = ["+7495", "8495", "+7", "7", "8"]
"#;

    /// The test bed's trunk black-listed: the settings alone register none of its calls.
    const BLACK_LISTED: &str = "\n[engine.black_list]\ntrunks = [\"73432723033\"]\n";

    fn users() -> Vec<store::User> {
        (1..=3)
            .map(|id| store::User {
                id,
                name: format!("User {id}"),
                email: None,
                position: None,
                active: true,
                phones: vec![UserPhone {
                    field: store::EXTENSION_FIELD.into(),
                    number: format!("10{id}"),
                }],
                raw: json!({}),
            })
            .collect()
    }

    fn shared(store: Arc<dyn Store>, config: &Config) -> Shared {
        let mut engine = engine::Engine::new(config.engine.clone()).expect("engine");
        engine
            .users_mut()
            .replace(users().iter().map(directory_user), super::super::now());
        Shared {
            store,
            engine: Arc::new(Mutex::new(engine)),
            work: Default::default(),
            users_refresh: Default::default(),
            hooks: Arc::new(hooks::Hooks::none()),
            verdicts: Default::default(),
            directory_loaded: Default::default(),
            ami: Default::default(),
            originate_responses: None,
            telemetry: Arc::new(web::Telemetry::new("test")),
            record_links: web::RecordLinks::new(vec![0; 32]),
            autodist: Default::default(),
            handoff: Default::default(),
        }
    }

    /// S1 as recorded from the real Asterisk: each event with the call as the tracker knew it then.
    fn s1(config: &Config) -> Vec<(CallEvent, Option<CallFull>)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracker/tests/traces/s1.ami");
        let bytes = std::fs::read(&path).expect("the S1 trace");
        let index = ami::trace::read_index(&ami::trace::index_path(&path)).expect("its index");
        let mut tracker = tracker::Tracker::new(config.tracker.clone()).expect("tracker");
        let mut events = Vec::new();
        for (frame, at) in ami::trace::decode_timed(&bytes, &index) {
            let ami::Frame::Message(message) = frame else { continue };
            let mut out = Vec::new();
            let at = at.map(|us| tracker::Timestamp::from_micros(us as i64));
            tracker.handle_into(&message, at, &mut out);
            for event in out {
                let snapshot = tracker.call_full(event.call());
                events.push((event, snapshot));
            }
        }
        events
    }

    /// The events as the live service journals them.
    fn journal_of(events: &[(CallEvent, Option<CallFull>)]) -> Vec<NewJournalEntry> {
        events
            .iter()
            .map(|(event, _)| {
                NewJournalEntry::new(event.call(), store_time(event.time()), EntryKind::Ami, event.name())
                    .data(serde_json::to_value(event).expect("event"))
            })
            .collect()
    }

    /// A service over a store in a file (with the office's users) for this configuration.
    fn service(config: &str) -> (Config, tempfile::TempDir, Arc<dyn Store>, Shared) {
        let config = Config::parse(config, Path::new("test.toml"), std::iter::empty()).expect("config");
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(dir.path().join("s.db")).expect("store"));
        store.replace_users(&users(), store::Timestamp::now()).expect("users");
        let shared = shared(store.clone(), &config);
        (config, dir, store, shared)
    }

    fn keys_of(steps: &[Step], kinds: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = steps
            .iter()
            .filter(|s| kinds.contains(&s.kind.as_str()))
            .map(|s| s.idempotency_key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// A call journaled but never registered (no CRM then, a plan the store lost) is planned again from its
    /// journaled events with the keys the live service gives its register and finish; a second press adds
    /// nothing; a call the engine still follows is left alone.
    #[tokio::test]
    async fn a_call_never_registered_is_planned_from_its_journal_once() {
        let (config, _dir, store, shared) = service(CONFIG);
        let events = s1(&config);
        let call = events.first().expect("S1 has events").0.call().to_owned();

        // What the live service plans for S1, and the journal it keeps (no step stored: never registered).
        let mut live = engine::Engine::new(config.engine.clone()).expect("engine");
        live.users_mut()
            .replace(users().iter().map(directory_user), super::super::now());
        let mut planned = Vec::new();
        for (event, snapshot) in &events {
            let plan = live.handle(event, snapshot.as_ref(), event.time());
            planned.extend(plan.steps.iter().map(|s| super::super::pipeline::new_step(s, None)));
        }
        store.append_journal(&journal_of(&events)).expect("journal");
        let reference = tempfile::tempdir().expect("tempdir");
        let live_store = store::SqliteStore::open(reference.path().join("live.db")).expect("store");
        live_store
            .enqueue(&planned, store::Timestamp::now())
            .expect("live plan");
        let live_steps = live_store.steps_of_call(&call).expect("steps");
        let closing = ["register", "finish"];
        assert_eq!(
            keys_of(&live_steps, &closing).len(),
            2,
            "S1 registers once and finishes once"
        );

        let done = reprocess(&shared, &config, &call).await.expect("re-process");
        assert_eq!(done.source, Some(Source::Journal), "{done:?}");
        assert!(
            done.added.contains(&"register".into()) && done.added.contains(&"finish".into()),
            "{done:?}"
        );
        let stored = store.steps_of_call(&call).expect("steps");
        assert_eq!(
            keys_of(&stored, &closing),
            keys_of(&live_steps, &closing),
            "the keys the live service gives the call's register and finish"
        );
        assert!(
            stored.iter().all(|s| s.kind != "show"),
            "no card for a call that rings nobody"
        );

        let again = reprocess(&shared, &config, &call).await.expect("re-process");
        assert!(again.changed_nothing(), "{again:?}");
        assert_eq!(store.steps_of_call(&call).expect("steps").len(), stored.len());

        let (first, snapshot) = &events[0];
        let _ = shared.engine().handle(first, snapshot.as_ref(), first.time());
        let live_call = reprocess(&shared, &config, &call).await.expect("re-process");
        assert!(live_call.live && live_call.changed_nothing(), "{live_call:?}");
    }

    /// S1's events journaled as the live service journals them, with the `need_registration` decision the
    /// engine journaled for `verdict`; the call's key.
    fn journal_s1_with_verdict(store: &dyn Store, config: &Config, verdict: bool) -> String {
        let events = s1(config);
        let call = events.first().expect("S1 has events").0.call().to_owned();
        let mut journal = journal_of(&events);
        let decision = engine::Decision {
            call: call.clone(),
            time: events[0].0.time(),
            rule: engine::Rule::NeedRegistrationHook,
            reason: format!("need_registration answered {verdict}; the settings alone would register"),
            data: json!({"hook": verdict, "settings": true}),
        };
        journal.extend(super::super::pipeline::decision_entries(&[decision]));
        store.append_journal(&journal).expect("journal");
        call
    }

    /// A call the `need_registration` hook refused while it was live stays unregistered when re-processed, and
    /// the result says why.
    #[tokio::test]
    async fn a_call_the_hook_refused_is_not_registered_by_a_reprocess() {
        let (config, _dir, store, shared) = service(CONFIG);
        let call = journal_s1_with_verdict(store.as_ref(), &config, false);

        let done = reprocess(&shared, &config, &call).await.expect("re-process");
        assert!(done.added.is_empty(), "{done:?}");
        assert!(
            done.note
                .as_deref()
                .is_some_and(|n| n.contains("need_registration answered false")),
            "{done:?}"
        );
        assert!(store.steps_of_call(&call).expect("steps").is_empty());
    }

    /// A call the hook admitted where the settings alone would not (its trunk black-listed since) is registered
    /// by a re-process, as it would have been live.
    #[tokio::test]
    async fn a_call_the_hook_admitted_is_registered_by_a_reprocess_despite_the_settings() {
        let (config, _dir, store, shared) = service(&format!("{CONFIG}{BLACK_LISTED}"));
        let admitted = journal_s1_with_verdict(store.as_ref(), &config, true);

        let done = reprocess(&shared, &config, &admitted).await.expect("re-process");
        assert!(
            done.added.contains(&"register".into()) && done.added.contains(&"finish".into()),
            "{done:?}"
        );
        let timeline = store.call_timeline(&admitted).expect("timeline");
        assert!(
            timeline
                .iter()
                .any(|e| e.message.contains("need_registration answered true") && e.message.contains("black_list")),
            "the engine journals the answer it followed over the settings"
        );
    }

    /// Without a recorded answer the settings decide, as they did live: the black-listed trunk's call is not
    /// registered.
    #[tokio::test]
    async fn without_a_recorded_answer_the_settings_decide() {
        let (config, _dir, store, shared) = service(&format!("{CONFIG}{BLACK_LISTED}"));
        let events = s1(&config);
        let call = events.first().expect("S1 has events").0.call().to_owned();
        store.append_journal(&journal_of(&events)).expect("journal");

        let done = reprocess(&shared, &config, &call).await.expect("re-process");
        assert!(done.added.is_empty(), "{done:?}");
        assert!(store.steps_of_call(&call).expect("steps").is_empty());
    }

    /// A call whose finish Bitrix24 refused for good gets it sent again; one whose every step is done is left
    /// as it is.
    #[tokio::test]
    async fn failed_steps_go_again_and_a_complete_call_changes_nothing() {
        let config = Config::parse(CONFIG, Path::new("test.toml"), std::iter::empty()).expect("config");
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(dir.path().join("s.db")).expect("store"));
        let shared = shared(store.clone(), &config);
        let call = "1700000000.5";
        let step = |kind: &str| NewStep::new(call, format!("{call}/1/{kind}"), kind, json!({}));
        let now = store::Timestamp::now();
        store
            .enqueue(&[step("register"), step("finish")], now)
            .expect("enqueue");
        let lease = std::time::Duration::from_secs(60);
        let register = store.claim_due(now, 1, lease).expect("claim").claimed;
        store
            .mark_done(register[0].lease(), &json!({"CALL_ID": "x"}), now)
            .expect("done");
        let finish = store.claim_due(now, 1, lease).expect("claim").claimed;
        store.mark_failed(finish[0].lease(), "ERROR_CORE", now).expect("failed");

        let done = reprocess(&shared, &config, call).await.expect("re-process");
        assert_eq!(
            (done.reset, done.added.len(), done.waiting, done.source),
            (1, 0, 1, None),
            "{done:?}"
        );
        let finish = store
            .claim_due(store::Timestamp::now(), 1, lease)
            .expect("claim")
            .claimed;
        store.mark_done(finish[0].lease(), &json!(true), now).expect("done");
        let complete = reprocess(&shared, &config, call).await.expect("re-process");
        assert_eq!(complete, Reprocessed::default(), "nothing to do, nothing done");
    }
}
