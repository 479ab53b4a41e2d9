//! AMI → tracker → engine → store. Nothing here waits on Bitrix24: the plan is written to the store and the
//! worker is woken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ami::{ClientEvent, Message};
use serde_json::json;
use serde_json::Value;
use store::{EntryKind, NewJournalEntry, NewStep};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use tracker::{CallEvent, Tracker};

use super::recovery;
use super::users::store_time;
use super::Shared;
use crate::config::{Config, RecordingSettings};
use web::gaps::GapCause;

/// How often the tracker is asked to expire calls whose hang-up was lost.
const TICK: Duration = Duration::from_secs(30);
/// How often the pipeline notes in the store that it follows the PBX (after a crash, where the gap began).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Calls that may wait for the users directory at once; beyond, calls are planned without it.
const MAX_WAITING_CALLS: usize = 1_000;
/// How far back a recovery from CEL at start or after a gap reads at most (older periods: `ringlink reprocess`).
const AUTOMATIC_RECOVERY_SECS: u64 = 7 * 86_400;
/// The channel variable MixMonitor leaves the recording's path in.
const RECORDING_VARIABLE: &str = "MIXMONITOR_FILENAME";
/// Plans written in one store transaction at most: the events that arrived together (a burst of calls) cost one
/// disk sync, not one each.
const GROUP_COMMIT_MAX: usize = 256;
/// ...and the first of them waits at most this long for the rest (a PBX whose events never pause).
const GROUP_COMMIT_WAIT: Duration = Duration::from_millis(20);

pub async fn run(shared: Shared, config: Config, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut tracker = Tracker::new(config.tracker.clone())?;
    let Some((client, mut events)) = crate::connect_with_retry(&config.ami_client()).await? else {
        return Ok(());
    };
    info!(ami = %client.addr(), "connected to AMI; following calls");
    let (answers, mut answered) = mpsc::unbounded_channel();
    let hook_context = shared.hooks.enabled().next().is_some();
    // Read before this run says it follows the PBX: the previous run's last word is where its gap began.
    let previous_run_followed_until = recovery::following_at(&shared).await;
    *shared.ami.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
    shared.telemetry.ami_connected();
    let mut pipeline = Pipeline {
        shared,
        registering: config.bitrix24.is_some() || config.crm.kind == crate::config::CrmKind::Amocrm,
        held: HashMap::new(),
        answers,
        hook_context,
        recordings: config.recordings.clone(),
        waiting: Vec::new(),
        config: config.clone(),
        unwritten: Unwritten::default(),
    };
    // Calls already in progress (or that ended while ringlink was down) are reconciled first.
    pipeline
        .resync(
            &client,
            &mut tracker,
            previous_run_followed_until,
            GapCause::RinglinkStopped,
        )
        .await;
    let mut said_untimed = false;
    // Unlike any real state, so that the first heartbeat reports the sizes (zeros included) to `/metrics`.
    let mut said_state = State {
        waiting: usize::MAX,
        ..State::default()
    };
    // Whether memory was freed (calls ended) since the allocator last gave its free pages back.
    let mut freed = false;
    let mut following_at = super::now();
    let mut connected = true;
    recovery::save_following_at(&pipeline.shared, following_at).await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let directory_loaded = pipeline.shared.directory_loaded.clone();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some((call, called)) = answered.recv() => pipeline.answered(&tracker, call, called).await,
            _ = tick.tick() => {
                let events = tracker.tick(super::now());
                pipeline.process(&tracker, events).await;
                pipeline.release_waiting().await;
                if std::mem::take(&mut freed) {
                    release_free_memory();
                }
            }
            _ = heartbeat.tick() => {
                if connected {
                    following_at = super::now();
                    recovery::save_following_at(&pipeline.shared, following_at).await;
                }
                // A burst of calls leaves the allocator holding their memory after they end; once the sizes stop
                // changing (or at the next tick under steady traffic) it goes back to the system.
                if pipeline.log_state(&tracker, &mut said_state) {
                    freed = true;
                } else if std::mem::take(&mut freed) {
                    release_free_memory();
                }
            }
            _ = directory_loaded.notified() => pipeline.release_waiting().await,
            event = events.recv() => match event {
                None => break,
                Some(ClientEvent::Event(m)) => {
                    // Channel events only: the login's own FullyBooted never has a Timestamp.
                    if !said_untimed && m.get("Uniqueid").is_some() && m.get("Timestamp").is_none() {
                        said_untimed = true;
                        warn!(
                            event = m.event_name().unwrap_or(""),
                            "AMI events carry no Timestamp: set timestampevents = yes in manager.conf [general]; \
                             until then calls are timed by when their events arrive"
                        );
                    }
                    if let (Some(tx), Some("OriginateResponse")) = (&pipeline.shared.originate_responses, m.event_name()) {
                        let _ = tx.send(m.clone());
                    }
                    let now = super::now();
                    if connected {
                        following_at = now;
                    }
                    let events = tracker.handle_at(&m, now);
                    pipeline.process(&tracker, events).await;
                }
                Some(ClientEvent::Disconnected { reason }) => {
                    connected = false;
                    warn!(%reason, "AMI disconnected; calls resume after reconnect");
                    pipeline.shared.telemetry.ami_disconnected(&reason);
                }
                Some(ClientEvent::Reconnected) => {
                    pipeline.shared.telemetry.ami_reconnected();
                    info!("AMI reconnected; resynchronising live calls");
                    pipeline.resync(&client, &mut tracker, Some(following_at), GapCause::AmiDisconnected).await;
                    connected = true;
                    following_at = super::now();
                }
                Some(ClientEvent::EventsDropped { count }) => {
                    pipeline.shared.telemetry.ami_events_dropped(count);
                    warn!(count, "AMI events were dropped; resynchronising live calls");
                    pipeline.resync(&client, &mut tracker, Some(following_at), GapCause::EventsDropped).await;
                    following_at = super::now();
                }
            }
        }
        // Written once nothing else is waiting: the plans of events that arrived together go in one transaction.
        let waited = pipeline
            .unwritten
            .since
            .is_some_and(|t| t.elapsed() >= GROUP_COMMIT_WAIT);
        if events.is_empty() || waited || pipeline.unwritten.plans >= GROUP_COMMIT_MAX {
            pipeline.flush().await;
        }
    }
    pipeline.flush().await;
    client.shutdown().await;
    Ok(())
}

struct Pipeline {
    shared: Shared,
    registering: bool,
    /// Events of calls whose `need_registration` hook has not answered yet, in arrival order.
    held: HashMap<String, Vec<CallEvent>>,
    /// Where the hook tasks send their answers.
    answers: mpsc::UnboundedSender<(String, Option<hooks::Called>)>,
    /// Whether steps carry `call_full` and `call_stage` for the worker's hooks.
    hook_context: bool,
    recordings: RecordingSettings,
    /// Calls whose decisions wait for the users directory (never loaded yet), in the order they began waiting.
    waiting: Vec<Waiting>,
    /// `[cel]`, `[tracker]` and `[engine]` for the recovery from CEL.
    config: Config,
    /// Plans not written to the store yet (see [`Pipeline::flush`]).
    unwritten: Unwritten,
}

/// Plans waiting to be written together: steps and journal entries in the order they were planned.
#[derive(Default)]
struct Unwritten {
    steps: Vec<NewStep>,
    journal: Vec<NewJournalEntry>,
    /// How many plans (events) they come from.
    plans: usize,
    /// When the first of them was made.
    since: Option<std::time::Instant>,
}

/// The sizes of what the pipeline, tracker and engine keep in memory, logged when they change: live calls are
/// held while they last, ended ones only as remembered keys, so after a busy hour these go back down.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct State {
    tracker_calls: usize,
    tracker_channels: usize,
    tracker_remembered: usize,
    engine_calls: usize,
    engine_remembered: usize,
    held: usize,
    waiting: usize,
    verdicts: usize,
}

/// Gives the allocator's free pages back to the system. glibc keeps memory freed by ended calls in its arenas
/// (one per thread that allocated, the store's blocking threads included), so without this the resident size
/// after a burst stays near the burst's peak, and grows with each burst that lands in other arenas.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Events of a call that wait for the users directory.
struct Waiting {
    call: String,
    events: Vec<(CallEvent, Option<tracker::CallFull>)>,
}

/// The `need_registration` answers, handed to the engine through its [`engine::RegistrationGate`] port: the
/// pipeline runs the hook before the engine decides, and the engine reads the answer (once) when it does.
#[derive(Clone, Default)]
pub struct Verdicts(Arc<Mutex<HashMap<String, Option<bool>>>>);

impl Verdicts {
    fn insert(&self, call: &str, verdict: Option<bool>) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(call.to_owned(), verdict);
        }
    }

    /// Drops the answer for `call` if the engine never read it (it decides admission only for a call whose
    /// direction it knows): once the call ended, nobody will, and it would stay for the life of the process.
    fn forget(&self, call: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(call);
        }
    }

    /// Answers waiting for the engine.
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |map| map.len())
    }
}

impl engine::RegistrationGate for Verdicts {
    fn need_registration(&self, call: &str, _: Option<&tracker::CallFull>) -> Option<bool> {
        self.0.lock().ok().and_then(|mut map| map.remove(call)).flatten()
    }
}

/// The moment of the call a hook is asked at (seed: `call_stage`).
fn call_stage(event: &CallEvent) -> &'static str {
    match event {
        CallEvent::LegRinging(_) | CallEvent::LegDialing(_) => "conversation_requested",
        CallEvent::LegAnswered(_) => "conversation_accepted",
        CallEvent::CallEnded { .. } => "call_ended",
        _ => "conversation_ended",
    }
}

/// `need_registration`'s params: the call's direction and numbers (the whole call is in `call_full`).
pub fn need_registration_params(call_full: &Value) -> Value {
    let at = |path: &str| call_full.pointer(path).cloned().unwrap_or(Value::Null);
    json!({
        "type": at("/channel/type"),
        "from": at("/channel/from/original"),
        "to": at("/channel/to/original"),
        "trunk": at("/channel/trunk/original"),
    })
}

impl Pipeline {
    /// Rebuilds the live calls from `CoreShowChannels`; then every registration left without a finish whose
    /// call is no longer live (it ended during the gap that began at `gap_from`, for `cause`) is finished from what
    /// is known.
    async fn resync(
        &mut self,
        client: &ami::Client,
        tracker: &mut Tracker,
        gap_from: Option<tracker::Timestamp>,
        cause: GapCause,
    ) {
        self.flush().await;
        match client.list(Message::action("CoreShowChannels")).await {
            Ok(mut list) => {
                add_answer_times(client, &mut list.items).await;
                add_dialed_numbers(client, &mut list.items).await;
                let events = tracker.resync(&list.items, super::now());
                info!(
                    channels = list.items.len(),
                    live_calls = tracker.live_calls(),
                    "live calls resynchronised"
                );
                self.process(tracker, events).await;
                self.recover_recordings(client, tracker, &list.items).await;
                self.recover_from_cel(tracker, gap_from, cause).await;
                // What is left open is read from the store: everything planned so far is in it first.
                self.flush().await;
                self.finish_open_registrations(tracker, gap_from).await;
                self.flush().await;
            }
            Err(e) => warn!(error = %e, "CoreShowChannels failed; live state may be stale until the next resync"),
        }
    }

    /// Calls that began and ended during the gap from `gap_from` to now (and during any earlier gap not
    /// recovered yet) are rebuilt from the PBX's CEL and registered; without `[cel]` (or when its database
    /// fails) the log says which period may miss calls, and the store keeps it for `/status` and `ringlink check`.
    async fn recover_from_cel(&mut self, tracker: &Tracker, gap_from: Option<tracker::Timestamp>, cause: GapCause) {
        if !self.registering {
            return;
        }
        let now = super::now();
        // This gap, and an earlier one nothing recovered yet (CEL not configured then, or its database failed).
        let earlier = recovery::unrecovered(&self.shared).await;
        let mut causes = earlier.as_ref().map(|g| g.causes.clone()).unwrap_or_default();
        if gap_from.is_some() && !causes.contains(&cause) {
            causes.push(cause);
        }
        let earlier_from = earlier.map(|g| tracker::Timestamp::from_micros(g.from));
        let Some(mut from) = [gap_from, earlier_from].into_iter().flatten().min() else {
            return; // the first run ever: nothing was missed
        };
        let Some(cel) = self.config.cel.clone() else {
            self.may_be_missing(from, now, causes, web::gaps::HOW_TO_ENABLE_CEL.to_owned(), None)
                .await;
            return;
        };
        let oldest = now.saturating_sub_secs(AUTOMATIC_RECOVERY_SECS);
        if from < oldest {
            warn!(
                from = %self.clock(from),
                to = %self.clock(oldest),
                "calls of this period are not read from CEL automatically (more than a week ago): run ringlink \
                 reprocess --from … --to … for it"
            );
            from = oldest;
        }
        let users: Vec<engine::DirectoryUser> = {
            let cached = self.shared.store(|s| s.users()).await.unwrap_or_default();
            cached.iter().map(super::users::directory_user).collect()
        };
        let live: std::collections::HashSet<String> = tracker.snapshot().into_iter().map(|c| c.channel.id).collect();
        let config = self.config.clone();
        let margin = cel.margin_secs;
        let store = self.shared.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let input = crate::cel::RecoveryInput {
                cel: &cel,
                tracker: &config.tracker,
                engine: &config.engine,
                crm: config.engine_crm(),
                recordings: &config.recordings,
                users,
                live,
                from: from.saturating_sub_secs(margin),
                to: now,
                now,
                dry_run: false,
                only: None,
                verdict: None,
            };
            crate::cel::recover(store.as_ref(), input)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
        match result {
            Ok(recovery) => {
                for call in &recovery.calls {
                    info!(call = %call.call_full.channel.id, "recovered from CEL: {}", crate::cel::describe(call));
                }
                let message = web::gaps::recovered_sentence(
                    &self.clock(from),
                    &self.clock(now),
                    &causes,
                    recovery.stats.calls_ended,
                    recovery.calls.len(),
                );
                let saved = web::gaps::SavedRecovery {
                    from: from.as_micros(),
                    to: now.as_micros(),
                    causes,
                    calls_found: recovery.stats.calls_ended,
                    registered: recovery.calls.len(),
                    already_handled: recovery.already_handled,
                    at: super::now().as_micros(),
                    message: message.clone(),
                };
                // Kept first: once the log says it, `/status` says it too.
                recovery::save_recovered(&self.shared, saved).await;
                info!(
                    rows = recovery.stats.rows,
                    calls_ended = recovery.stats.calls_ended,
                    calls_still_live = recovery.stats.calls_live,
                    already_handled = recovery.already_handled,
                    registered = recovery.calls.len(),
                    from = %self.clock(from),
                    to = %self.clock(now),
                    "{message}"
                );
                if !recovery.calls.is_empty() {
                    self.shared.work.notify_one();
                }
            }
            Err(e) => {
                let how = format!(
                    "cannot read the PBX's CEL ({e:#}); they are recovered after the next gap, or with ringlink \
                     reprocess --from \"{}\" --to \"{}\"",
                    self.clock(from),
                    self.clock(now)
                );
                self.may_be_missing(from, now, causes, how, Some(e)).await;
            }
        }
    }

    /// Says in the log, and keeps in the store for `/status` and `ringlink check`, that calls of `from`–`to` may
    /// be missing, why, and what brings them back.
    async fn may_be_missing(
        &self,
        from: tracker::Timestamp,
        to: tracker::Timestamp,
        causes: Vec<GapCause>,
        how_to_recover: String,
        error: Option<anyhow::Error>,
    ) {
        let message = web::gaps::missing_sentence(&self.clock(from), &self.clock(to), &causes, &how_to_recover);
        let gap = web::gaps::SavedGap {
            from: from.as_micros(),
            to: to.as_micros(),
            causes,
            how_to_recover: Some(how_to_recover),
            message: Some(message.clone()),
            // A new gap (or one merged with an acknowledged period) warns again.
            acknowledged_at: None,
        };
        // Kept first: once the log says it, `/status` and `ringlink check` say it too.
        recovery::save_unrecovered(&self.shared, gap).await;
        match error {
            Some(e) => warn!(error = %e, from = %self.clock(from), to = %self.clock(to), "{message}"),
            None => warn!(from = %self.clock(from), to = %self.clock(to), "{message}"),
        }
    }

    fn clock(&self, at: tracker::Timestamp) -> String {
        let offset = tracker::LocalClock::parse_offset(&self.config.tracker.utc_offset)
            .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
        tracker::LocalClock::new(offset).format(Some(at))
    }

    async fn finish_open_registrations(&mut self, tracker: &Tracker, gap_from: Option<tracker::Timestamp>) {
        if !self.registering {
            return;
        }
        let now = super::now();
        let pending: Vec<String> = self
            .waiting
            .iter()
            .map(|w| w.call.clone())
            .chain(self.held.keys().cloned())
            .collect();
        let is_live = |call: &str| tracker.call_full(call).is_some() || pending.iter().any(|p| p == call);
        let open = match recovery::open_calls(&self.shared, is_live, gap_from, now, &self.recordings).await {
            Ok(open) => open,
            Err(e) => {
                warn!(error = %e, "cannot read the registrations left open; they are finished after the next resync");
                return;
            }
        };
        let mut finished = 0;
        for call in &open {
            let plan = self.shared.engine().recover(call);
            if plan.steps.is_empty() {
                continue;
            }
            finished += 1;
            let context = self
                .hook_context
                .then(|| json!({"call_full": null, "call_stage": "call_ended"}));
            if let Err(e) = self.store_plan(&call.call, Vec::new(), &plan, context).await {
                warn!(call = %call.call, error = %e, "could not store the recovered finish of a call");
            }
        }
        if finished > 0 {
            info!(
                calls = finished,
                "registrations left open by the gap were finished from the journal"
            );
        }
    }
}

/// `CoreShowChannels` says a channel is up but not since when; a leg answered while ringlink was not listening
/// (a restart, a dropped AMI connection) would get a talk time counted from the resync. Asterisk's CDR knows:
/// `CDR(answer,u)` of the channel is its answer instant, which the tracker reads from
/// [`tracker::RESYNC_ANSWER_TIME`].
async fn add_answer_times(client: &ami::Client, items: &mut [Message]) {
    for item in items.iter_mut() {
        if item.event_name() != Some("CoreShowChannel") || item.get("ChannelState").map(str::trim) != Some("6") {
            continue;
        }
        let Some(channel) = item.get("Channel").map(str::to_owned) else {
            continue;
        };
        let asked = Message::action("Getvar")
            .with("Channel", channel.as_str())
            .with("Variable", "CDR(answer,u)");
        match client.action_ok(asked).await {
            Ok(answer) => {
                // Unanswered CDRs say "0.000000" or nothing; the tracker ignores what it cannot use.
                if let Some(at) = answer.get("Value").map(str::trim).filter(|v| !v.is_empty()) {
                    item.push(tracker::RESYNC_ANSWER_TIME, at);
                }
            }
            Err(e) => warn!(channel, error = %e, "cannot ask a channel for its answer time"),
        }
    }
}

/// A listed channel's `Exten` is where the dialplan has taken it since (a queue's name), not the number the client
/// called. Ask each call's first channel for `CALLERID(dnid)` (the number dialled, which chan_pjsip and chan_sip
/// set from the request), which the tracker reads from [`tracker::RESYNC_DIALED_NUMBER`].
async fn add_dialed_numbers(client: &ami::Client, items: &mut [Message]) {
    for item in items.iter_mut() {
        let first_of_call = item.event_name() == Some("CoreShowChannel")
            && item
                .get("Uniqueid")
                .is_some_and(|u| Some(u.trim()) == item.get("Linkedid").map(str::trim));
        if !first_of_call {
            continue;
        }
        let Some(channel) = item.get("Channel").map(str::to_owned) else {
            continue;
        };
        let asked = Message::action("Getvar")
            .with("Channel", channel.as_str())
            .with("Variable", "CALLERID(dnid)");
        match client.action_ok(asked).await {
            Ok(answer) => {
                if let Some(number) = answer.get("Value").map(str::trim).filter(|v| !v.is_empty()) {
                    item.push(tracker::RESYNC_DIALED_NUMBER, number);
                }
            }
            Err(e) => warn!(channel, error = %e, "cannot ask a channel for the number it dialled"),
        }
    }
}

impl Pipeline {
    /// `CoreShowChannels` lists no channel variables, so a recording started while ringlink was not
    /// listening (a restart, a dropped AMI connection) would never be attached: ask each listed channel of a
    /// call without a recording for `MIXMONITOR_FILENAME`, and hand the answer to the tracker as the `VarSet`
    /// it missed.
    async fn recover_recordings(&mut self, client: &ami::Client, tracker: &mut Tracker, items: &[Message]) {
        for item in items.iter().filter(|m| m.event_name() == Some("CoreShowChannel")) {
            let (Some(channel), Some(uniqueid)) = (item.get("Channel"), item.get("Uniqueid")) else {
                continue;
            };
            let Some(call) = tracker.call_of_channel(uniqueid.trim()) else {
                continue;
            };
            if tracker.call_full(call).is_none_or(|c| !c.record.is_empty()) {
                continue;
            }
            let asked = Message::action("Getvar")
                .with("Channel", channel)
                .with("Variable", RECORDING_VARIABLE);
            let path = match client.action_ok(asked).await {
                Ok(answer) => answer.get_unescaped("Value").unwrap_or_default(),
                Err(e) => {
                    warn!(channel, error = %e, "cannot ask a channel for its recording");
                    continue;
                }
            };
            if path.trim().is_empty() {
                continue;
            }
            let mut missed = Message::new();
            missed.push("Event", "VarSet");
            for key in [
                "Channel",
                "Uniqueid",
                "Linkedid",
                "ChannelState",
                "CallerIDNum",
                "ConnectedLineNum",
            ] {
                if let Some(value) = item.get(key) {
                    missed.push(key, value);
                }
            }
            missed.push("Variable", RECORDING_VARIABLE);
            missed.push("Value", path.trim());
            let events = tracker.handle_at(&missed, super::now());
            self.process(tracker, events).await;
        }
    }

    async fn process(&mut self, tracker: &Tracker, events: Vec<CallEvent>) {
        for event in events {
            if let Some(held) = self.held.get_mut(event.call()) {
                held.push(event);
                continue;
            }
            if self.shared.hooks.is_enabled(hooks::HookName::NeedRegistration)
                && self.registering
                && self.shared.engine().admission_pending(&event)
            {
                self.ask_need_registration(tracker, event);
                continue;
            }
            self.process_now(tracker, &event).await;
        }
    }

    async fn process_now(&mut self, tracker: &Tracker, event: &CallEvent) {
        if let Err(e) = self.process_one(tracker, event).await {
            // The store is the only thing that can fail here; keep following calls and say so loudly.
            warn!(call = event.call(), event = event.name(), error = %e, "could not store the plan of a call event");
        }
    }

    /// Runs `need_registration` for the call of `event` on its own task; the call's events wait for the answer,
    /// other calls go on.
    fn ask_need_registration(&mut self, tracker: &Tracker, event: CallEvent) {
        let call = event.call().to_owned();
        let call_full = match &event {
            CallEvent::CallEnded { call_full, .. } => serde_json::to_value(call_full.as_ref()).ok(),
            _ => tracker.call_full(&call).and_then(|c| serde_json::to_value(c).ok()),
        }
        .unwrap_or(Value::Null);
        let context = hooks::Context {
            call_stage: Some(call_stage(&event)),
            call_full: Some(call_full.clone()).filter(|c| !c.is_null()),
        };
        self.held.insert(call.clone(), vec![event]);
        let shared = self.shared.clone();
        let answers = self.answers.clone();
        tokio::spawn(async move {
            let params = need_registration_params(&call_full);
            let called = shared
                .hooks
                .call(hooks::HookName::NeedRegistration, &params, &context)
                .await;
            if let Some(called) = &called {
                super::report_hook(&shared, called);
            }
            let _ = answers.send((call, called));
        });
    }

    /// Logs (at debug) the sizes of what is kept in memory when they changed since `said`, and reports them to
    /// `/metrics`; whether they did.
    fn log_state(&self, tracker: &Tracker, said: &mut State) -> bool {
        let (engine_calls, engine_remembered) = {
            let engine = self.shared.engine();
            (engine.live_calls(), engine.remembered_ended())
        };
        let state = State {
            tracker_calls: tracker.live_calls(),
            tracker_channels: tracker.live_channels(),
            tracker_remembered: tracker.remembered_keys(),
            engine_calls,
            engine_remembered,
            held: self.held.len(),
            waiting: self.waiting.len(),
            verdicts: self.shared.verdicts.len(),
        };
        if state != *said {
            *said = state;
            self.shared.telemetry.held(&[
                ("tracker_calls", state.tracker_calls as u64),
                ("tracker_channels", state.tracker_channels as u64),
                ("tracker_remembered", state.tracker_remembered as u64),
                ("engine_calls", state.engine_calls as u64),
                ("engine_remembered", state.engine_remembered as u64),
                ("held", state.held as u64),
                ("waiting", state.waiting as u64),
                ("verdicts", state.verdicts as u64),
            ]);
            debug!(
                tracker_calls = state.tracker_calls,
                tracker_channels = state.tracker_channels,
                tracker_remembered = state.tracker_remembered,
                engine_calls = state.engine_calls,
                engine_remembered = state.engine_remembered,
                held = state.held,
                waiting = state.waiting,
                verdicts = state.verdicts,
                "service state"
            );
            return true;
        }
        false
    }

    /// The `need_registration` hook of `call` answered: the engine gets the verdict, and the call's held events
    /// are planned.
    async fn answered(&mut self, tracker: &Tracker, call: String, called: Option<hooks::Called>) {
        let verdict = called.as_ref().and_then(|c| match &c.outcome {
            hooks::Outcome::Applied(a) => a.params.as_bool(),
            // Empty data: this call's registration is cancelled.
            hooks::Outcome::Cancelled => Some(false),
            hooks::Outcome::Failed(_) => None,
        });
        self.shared.verdicts.insert(&call, verdict);
        if let Some(called) = &called {
            let mut data = called.journal_data();
            data["input"] = called.input.clone();
            let entry =
                NewJournalEntry::new(&call, store_time(super::now()), EntryKind::Hook, called.describe()).data(data);
            if let Err(e) = self.shared.store(move |s| s.append_journal(&[entry])).await {
                warn!(call, error = %e, "cannot journal need_registration");
            }
        }
        for event in self.held.remove(&call).unwrap_or_default() {
            self.process_now(tracker, &event).await;
        }
    }

    async fn process_one(&mut self, tracker: &Tracker, event: &CallEvent) -> anyhow::Result<()> {
        let now = super::now();
        let call_full = match event {
            CallEvent::CallEnded { .. } => None,
            _ => tracker.call_full(event.call()),
        };
        log_outcome(event);
        if let CallEvent::CallEnded { call_full, .. } = event {
            let direction = serde_json::to_value(call_full.channel.direction).unwrap_or_default();
            let result = call_full.result.to_string();
            self.shared
                .telemetry
                .call_ended(direction.as_str().unwrap_or("unknown"), &result);
        }
        let journal = vec![
            NewJournalEntry::new(event.call(), store_time(now), EntryKind::Ami, event.name())
                .data(serde_json::to_value(event).unwrap_or_else(|e| json!({"unserialisable": e.to_string()}))),
        ];
        // A call waiting for the directory keeps its events in order behind the first one.
        if let Some(waiting) = self.waiting.iter_mut().find(|w| w.call == event.call()) {
            waiting.events.push((event.clone(), call_full));
            let call = event.call().to_owned();
            return self.store_plan(&call, journal, &engine::Plan::default(), None).await;
        }
        self.plan_event(event, call_full, journal).await
    }

    /// Asks the engine for the plan of `event` and stores it after `journal` (what is already known about it).
    async fn plan_event(
        &mut self,
        event: &CallEvent,
        call_full: Option<tracker::CallFull>,
        mut journal: Vec<NewJournalEntry>,
    ) -> anyhow::Result<()> {
        let now = super::now();
        let mut plan = self.shared.engine().handle(event, call_full.as_ref(), now);
        if let CallEvent::CallEnded { call, .. } = event {
            self.shared.verdicts.forget(call);
        }
        if let Some(refresh) = &plan.refresh_users {
            if self.registering && refresh.hold && self.waiting.len() < MAX_WAITING_CALLS {
                // Nobody can say whose phone it is before the directory was ever loaded: wait for it rather
                // than decide "no user" (or freeze the default responsible into the steps).
                self.shared.users_refresh.notify_one();
                self.waiting.push(Waiting {
                    call: event.call().to_owned(),
                    events: vec![(event.clone(), call_full)],
                });
                let call = event.call().to_owned();
                return self.store_plan(&call, journal, &plan, None).await;
            }
            if self.registering {
                journal.push(
                    NewJournalEntry::new(
                        event.call(),
                        store_time(now),
                        EntryKind::Decision,
                        "unknown extension: refreshing the users directory",
                    )
                    .data(json!({"extensions": refresh.extensions})),
                );
                self.shared.users_refresh.notify_one();
                // Give the refresher a moment; if it fails the engine is told the directory was looked at.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    plan = self.shared.engine().handle(event, call_full.as_ref(), now);
                    if plan.refresh_users.is_none() || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
            if plan.refresh_users.is_some() {
                // Nobody can tell us more now: mark the directory as looked at and plan without the user.
                let cached = self.shared.store(|s| s.users()).await.unwrap_or_default();
                self.shared
                    .engine()
                    .users_mut()
                    .replace(cached.iter().map(super::users::directory_user), now);
                plan = self.shared.engine().handle(event, call_full.as_ref(), now);
            }
        }
        let context = self.hook_context.then(|| {
            let call_full = match event {
                CallEvent::CallEnded { call_full, .. } => serde_json::to_value(call_full.as_ref()).ok(),
                _ => call_full.as_ref().and_then(|c| serde_json::to_value(c).ok()),
            };
            json!({"call_full": call_full, "call_stage": call_stage(event)})
        });
        let call = event.call().to_owned();
        self.store_plan(&call, journal, &plan, context).await
    }

    /// Once the directory is known, the calls that waited for it are planned, each in its events' order.
    async fn release_waiting(&mut self) {
        if self.waiting.is_empty() || self.shared.engine().users().refreshed_at().is_none() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        info!(
            calls = waiting.len(),
            "users directory known: planning the calls that waited for it"
        );
        for call in waiting {
            for (event, call_full) in call.events {
                // A later event of a call that had to wait again waits behind it.
                if let Some(again) = self.waiting.iter_mut().find(|w| w.call == call.call) {
                    again.events.push((event, call_full));
                    continue;
                }
                if let Err(e) = self.plan_event(&event, call_full, Vec::new()).await {
                    warn!(call = %call.call, event = event.name(), error = %e, "could not store the plan of a call event");
                }
            }
        }
    }

    /// Adds a plan's steps (with the hooks' `context`) and decisions, after `journal`, to what the next
    /// [`Pipeline::flush`] writes.
    async fn store_plan(
        &mut self,
        _call: &str,
        mut journal: Vec<NewJournalEntry>,
        plan: &engine::Plan,
        context: Option<Value>,
    ) -> anyhow::Result<()> {
        for d in &plan.journal {
            journal.push(
                NewJournalEntry::new(
                    d.call.clone(),
                    store_time(d.time),
                    EntryKind::Decision,
                    d.reason.clone(),
                )
                .data(json!({"rule": d.rule, "data": d.data})),
            );
        }
        if self.registering {
            let steps = plan.steps.iter().map(|s| new_step(s, context.as_ref()));
            self.unwritten.steps.extend(steps);
        }
        if !journal.is_empty() {
            self.unwritten.journal.extend(journal);
        }
        self.unwritten.plans += 1;
        self.unwritten.since.get_or_insert_with(std::time::Instant::now);
        Ok(())
    }

    /// Writes the plans made since the last flush in one store transaction (group commit: a burst of events
    /// costs one disk sync) and wakes the worker if they hold steps. The same transaction claims the new card
    /// steps for the Bitrix24 worker, handed to it in memory ([`super::worker::Handoff`]): a card goes out
    /// right after this one commit. On failure the plans are logged and lost,
    /// as a single plan's failure was before: the store is the only thing that can fail here.
    async fn flush(&mut self) {
        let Unwritten {
            steps, journal, plans, ..
        } = std::mem::take(&mut self.unwritten);
        if steps.is_empty() && journal.is_empty() {
            return;
        }
        let has_steps = !steps.is_empty();
        let n_steps = steps.len();
        let started = std::time::Instant::now();
        let handoff = self.shared.handoff.clone();
        let result = self
            .shared
            .store(move |s| {
                let now = store::Timestamp::now();
                if !(has_steps && handoff.enabled()) {
                    return s.enqueue_journaled(&steps, &journal, now).map(|()| None);
                }
                s.enqueue_journaled_and_claim(&steps, &journal, now, &super::worker::CARDS)
                    .map(Some)
            })
            .await;
        if has_steps {
            let store_ms = started.elapsed().as_secs_f64() * 1000.0;
            let claimed = match &result {
                Ok(Some(claim)) => claim.claimed.len() + claim.followers.len(),
                _ => 0,
            };
            debug!(plans, steps = n_steps, claimed, store_ms, "plans stored");
        }
        match result {
            Ok(claim) if has_steps => {
                if let Some(claim) = claim {
                    self.shared.handoff.hand(claim);
                }
                self.shared.work.notify_one()
            }
            Ok(_) => {}
            Err(e) => warn!(plans, steps = n_steps, error = %e, "could not store the plans of call events"),
        }
    }
}

/// A plan's decisions as journal entries, each with its rule and data.
pub(crate) fn decision_entries(decisions: &[engine::Decision]) -> Vec<NewJournalEntry> {
    decisions
        .iter()
        .map(|d| {
            NewJournalEntry::new(
                d.call.clone(),
                store_time(d.time),
                EntryKind::Decision,
                d.reason.clone(),
            )
            .data(json!({"rule": d.rule, "data": d.data}))
        })
        .collect()
}

/// An engine step as the outbox keeps it: the whole step is the payload, so the worker needs nothing else
/// (with hooks, also the call as it was when the step was planned: the hooks' `call_full` and `call_stage`).
pub(crate) fn new_step(step: &engine::Step, hook_context: Option<&Value>) -> NewStep {
    // Cards are about now: among due steps they go first.
    let priority = match step.kind {
        engine::StepKind::Register | engine::StepKind::Show => 10,
        engine::StepKind::Hide => 5,
        _ => 0,
    };
    let mut payload = serde_json::to_value(step).unwrap_or_else(|e| json!({"unserialisable": e.to_string()}));
    if let (Some(context), Value::Object(map)) = (hook_context, &mut payload) {
        map.insert(super::customize::HOOK_CONTEXT.into(), context.clone());
    }
    NewStep::new(step.call.clone(), step.key.clone(), step.kind.name(), payload).priority(priority)
}

/// One line per call outcome, for whoever reads the service log.
fn log_outcome(event: &CallEvent) {
    if let CallEvent::CallEnded { call, call_full, .. } = event {
        let ch = &call_full.channel;
        let number = |n: &numbers::Number| {
            if n.custom.is_empty() {
                n.original.clone()
            } else {
                n.custom.clone()
            }
        };
        info!(
            call = %call,
            direction = ?ch.direction,
            from = %number(&ch.from),
            to = %number(&ch.to),
            result = call_full.result,
            conversations = call_full.conversations.len(),
            ivr = call_full.is_ivr,
            "call ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::RegistrationGate;

    #[test]
    fn an_answer_is_read_once_and_one_never_read_is_dropped_when_its_call_ends() {
        let verdicts = Verdicts::default();
        verdicts.insert("read", Some(false));
        verdicts.insert("never read", Some(true));
        assert_eq!(verdicts.need_registration("read", None), Some(false));
        assert_eq!(verdicts.need_registration("read", None), None, "read once");
        assert_eq!(verdicts.len(), 1);
        verdicts.forget("never read");
        assert_eq!(verdicts.len(), 0);
    }
}
