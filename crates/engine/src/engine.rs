//! The per-call state machine that plans registrations, cards and finishes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use numbers::Number;
use serde_json::{json, Map, Value};
use tracker::{status, CallEvent, CallFull, Direction, Leg, StopReason, Timestamp, NEVER};

use crate::plan::{
    crm_bindings, first_of, references, user_value, Decision, Plan, RefreshUsers, Rule, Step, StepKind, StepRef, Timing,
};
use crate::settings::{Compiled, EngineSettings, ResponsibleMode};
use crate::users::{UserId, UsersDirectory};
use crate::Error;

/// The `need_registration` hook point: asked once per call, before its first registration.
/// `Some(true)` registers the call even if the lists or the local-calls setting would not, `Some(false)` skips
/// it, `None` leaves the decision to the settings. (A call whose direction cannot be told is never registered.)
pub trait RegistrationGate {
    fn need_registration(&self, call: &str, call_full: Option<&CallFull>) -> Option<bool>;
}

impl<F> RegistrationGate for F
where
    F: Fn(&str, Option<&CallFull>) -> Option<bool>,
{
    fn need_registration(&self, call: &str, call_full: Option<&CallFull>) -> Option<bool> {
        self(call, call_full)
    }
}

/// Ended call keys remembered so that a late event does not start the call over.
const ENDED_MEMORY: usize = 10_000;

/// What the engine knows about a call while it is live.
#[derive(Debug)]
struct CallState {
    admission: Admission,
    /// Employee legs by conversation id (ordered, so plans never depend on hashing).
    legs: BTreeMap<String, LegState>,
    registrations: Vec<Registration>,
    /// `(conversation, path)`; the conversation is empty for a recording of the whole call.
    recordings: Vec<(String, String)>,
}

#[derive(Debug)]
enum Admission {
    Undecided,
    Register(Arc<CallContext>),
    Ignored,
}

/// The call as registrations need it; fixed at admission.
#[derive(Debug, Clone)]
struct CallContext {
    direction: Direction,
    /// `PHONE_NUMBER`: the client (for a local call: the callee).
    client: String,
    trunk: Number,
    line_number: Option<String>,
    crm_source: Option<String>,
    trunk_responsible: Option<UserId>,
    /// The call's start as `CALL_START_DATE`, when `call_full` gave it.
    start_date: Option<String>,
    /// Local calls: the calling employee, who owns the registration.
    caller_user: Option<UserId>,
    caller_extension: String,
}

#[derive(Debug)]
struct LegState {
    user: Option<UserId>,
    /// Left out by the extension black/white list.
    excluded: bool,
    ringing: bool,
    answered_at: Option<Timestamp>,
    ended: bool,
    registration: Option<usize>,
}

#[derive(Debug)]
enum Phase {
    /// Registered, nobody answered yet: more legs may ring (show) or stop (hide).
    Ringing,
    Talking {
        conversation: String,
        user: Option<UserId>,
        since: Timestamp,
    },
    Finished,
}

/// A card shown to one user.
#[derive(Debug)]
struct Card {
    shown_by: String,
    occurrence: u32,
    /// Ringing legs of this user that keep the card up.
    legs: BTreeSet<String>,
}

#[derive(Debug)]
struct Registration {
    /// `<call>/<n>`: the prefix of every key of this registration.
    prefix: String,
    /// The registration's `USER_ID`.
    user: UserId,
    /// Local calls: finish always names this user (the caller).
    fixed_user: Option<UserId>,
    phase: Phase,
    cards: BTreeMap<UserId, Card>,
    next_occurrence: BTreeMap<UserId, u32>,
    last_rung: Option<UserId>,
    /// The conversation that talked on it (set when it talked).
    talker: Option<String>,
}

impl Registration {
    fn register_key(&self) -> String {
        format!("{}/register", self.prefix)
    }
    fn finish_key(&self) -> String {
        format!("{}/finish", self.prefix)
    }
    fn call_id(&self) -> Value {
        StepRef::new(self.register_key(), "CALL_ID").to_json()
    }
    fn occurrence(&mut self, user: UserId) -> u32 {
        let next = self.next_occurrence.entry(user).or_insert(0);
        let this = *next;
        *next += 1;
        this
    }
}

/// Plans the CRM steps of every live call. See the crate docs for the rules.
pub struct Engine {
    settings: Compiled,
    users: UsersDirectory,
    gate: Option<Box<dyn RegistrationGate + Send + Sync>>,
    calls: HashMap<String, CallState>,
    ended: HashSet<String>,
    ended_order: VecDeque<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings.raw)
            .field("users", &self.users.len())
            .field("live_calls", &self.calls.len())
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

/// Collects steps and decisions of one `handle` call.
struct Out<'a> {
    call: &'a str,
    time: Timestamp,
    plan: Plan,
}

impl Out<'_> {
    fn decide(&mut self, rule: Rule, reason: String, data: Value) {
        self.plan.journal.push(Decision {
            call: self.call.to_owned(),
            time: self.time,
            rule,
            reason,
            data,
        });
    }

    fn step(&mut self, key: String, kind: StepKind, params: Value, extra_after: &[String], timing: Timing) {
        let mut after = references(&params);
        for k in extra_after {
            if !after.contains(k) {
                after.push(k.clone());
            }
        }
        self.plan.steps.push(Step {
            call: self.call.to_owned(),
            key,
            kind,
            method: kind.method().to_owned(),
            params,
            after,
            timing,
            record_path: None,
        });
    }
}

/// `CALL_START_DATE` form: `YYYY-MM-DDTHH:MM:SS+03:00`.
fn bitrix_time(at: Timestamp, offset: FixedOffset) -> String {
    DateTime::from_timestamp_micros(at.as_micros())
        .map(|utc| utc.with_timezone(&offset).format("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .unwrap_or_default()
}

/// `call_full` times (`YYYY-MM-DD HH:MM:SS` in the PBX's zone) in `CALL_START_DATE` form.
fn bitrix_time_from_local(text: &str, offset: FixedOffset) -> Option<String> {
    if text == NEVER {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

/// `STATUS_CODE` of a call result that is not a talk (see `tracker::status`).
fn failure_status_code(result: u16) -> String {
    match result {
        status::CANCELLED => "603-S".into(),
        status::TALKED | status::LIVE | status::MISSED => "304".into(),
        402 | 403 | 404 | 423 | 480 | 484 | 486 | 503 | 603 => result.to_string(),
        _ => "OTHER".into(),
    }
}

fn stop_reason_text(reason: &StopReason) -> String {
    match reason {
        StopReason::AnsweredElsewhere => "answered elsewhere".into(),
        StopReason::PickedUp { by } => format!("picked up by {by}"),
        StopReason::Timeout => "rang out".into(),
        StopReason::CallerGone => "the caller hung up".into(),
        StopReason::Busy => "busy".into(),
        StopReason::Declined => "declined".into(),
        StopReason::Unavailable => "unavailable".into(),
        StopReason::Cancelled => "cancelled".into(),
        StopReason::MovedToCall { call } => format!("moved to call {call}"),
        StopReason::Vanished => "gone after a reconnect".into(),
        StopReason::Expired => "the call expired".into(),
    }
}

fn type_of(direction: Direction) -> u8 {
    match direction {
        Direction::Incoming => 2,
        _ => 1,
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Local => "local",
        Direction::Incoming => "incoming",
        Direction::Outgoing => "outgoing",
        Direction::Unknown => "unknown",
    }
}

/// Fills `{phone}`, `{line}` and `{time}` of a task template.
fn fill_template(template: &str, phone: &str, line: &str, time: &str) -> String {
    template
        .replace("{phone}", phone)
        .replace("{line}", line)
        .replace("{time}", time)
}

fn leg_of_event(event: &CallEvent) -> Option<&Leg> {
    match event {
        CallEvent::LegRinging(leg) | CallEvent::LegDialing(leg) | CallEvent::LegAnswered(leg) => Some(leg),
        _ => None,
    }
}

impl Engine {
    /// Builds an engine; fails only on invalid settings.
    pub fn new(settings: EngineSettings) -> Result<Self, Error> {
        Ok(Self {
            settings: Compiled::new(settings)?,
            users: UsersDirectory::new(),
            gate: None,
            calls: HashMap::new(),
            ended: HashSet::new(),
            ended_order: VecDeque::new(),
        })
    }

    /// Installs the `need_registration` hook.
    pub fn set_gate(&mut self, gate: Box<dyn RegistrationGate + Send + Sync>) {
        self.gate = Some(gate);
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings.raw
    }

    pub fn users(&self) -> &UsersDirectory {
        &self.users
    }

    /// The directory, for the shell to refresh.
    pub fn users_mut(&mut self) -> &mut UsersDirectory {
        &mut self.users
    }

    /// Calls the engine holds state for (live calls it has seen).
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// Whether the leg `conversation` of `call` is ringing now: a show for it that comes due later is dropped.
    pub fn is_ringing(&self, call: &str, conversation: &str) -> bool {
        self.calls
            .get(call)
            .and_then(|c| c.legs.get(conversation))
            .is_some_and(|l| l.ringing)
    }

    /// Plans what `event` means for the CRM. `call_full` is the call as the tracker knows it now
    /// (`Tracker::call_full(event.call())`); it gives the direction, the client's and the trunk's numbers, and
    /// the start time. Without it the engine infers them from the event (less precisely). For `CallEnded` the
    /// event's own `call_full` is used. `now` decides when an unknown extension may ask for a users refresh.
    pub fn handle(&mut self, event: &CallEvent, call_full: Option<&CallFull>, now: Timestamp) -> Plan {
        let key = event.call();
        let call_full = match event {
            CallEvent::CallEnded { call_full, .. } => Some(call_full.as_ref()),
            _ => call_full,
        };
        let mut out = Out {
            call: key,
            time: event.time(),
            plan: Plan::default(),
        };
        if self.ended.contains(key) {
            out.decide(
                Rule::LateEvent,
                format!("{} after the call ended: ignored", event.name()),
                json!({"event": event.name()}),
            );
            return out.plan;
        }
        if let Some(missing) = self.missing_users(event, call_full, now) {
            out.plan.refresh_users = Some(RefreshUsers { extensions: missing });
            return out.plan;
        }
        let mut state = self.calls.remove(key).unwrap_or_else(|| CallState {
            admission: Admission::Undecided,
            legs: BTreeMap::new(),
            registrations: Vec::new(),
            recordings: Vec::new(),
        });
        match event {
            CallEvent::LegRinging(leg) | CallEvent::LegDialing(leg) => {
                self.on_leg_ringing(&mut state, leg, call_full, event, &mut out);
            }
            CallEvent::LegAnswered(leg) => self.on_leg_answered(&mut state, leg, call_full, event, &mut out),
            CallEvent::LegStoppedRinging {
                conversation, reason, ..
            } => self.on_leg_stopped(&mut state, conversation, reason, &mut out),
            CallEvent::ConversationEnded {
                conversation,
                talk_seconds,
                ..
            } => self.on_conversation_ended(&mut state, conversation, *talk_seconds, &mut out),
            CallEvent::RecordingStarted { conversation, path, .. } => {
                if !path.trim().is_empty() {
                    state.recordings.push((conversation.clone(), path.clone()));
                }
            }
            CallEvent::CallEnded { call_full, .. } => {
                self.on_call_ended(&mut state, call_full, event, &mut out);
                self.remember_ended(key);
                return out.plan;
            }
            CallEvent::Transferred { .. }
            | CallEvent::Parked { .. }
            | CallEvent::Unparked { .. }
            | CallEvent::Hold { .. }
            | CallEvent::Unhold { .. } => {}
        }
        self.calls.insert(key.to_owned(), state);
        out.plan
    }

    fn remember_ended(&mut self, key: &str) {
        if self.ended.insert(key.to_owned()) {
            self.ended_order.push_back(key.to_owned());
        }
        while self.ended_order.len() > ENDED_MEMORY {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    // ----- users -------------------------------------------------------------------------------------------

    fn user_of_leg(&self, leg: &Leg) -> Option<UserId> {
        self.users
            .user_of(&leg.number)
            .or_else(|| self.users.user_of(&leg.endpoint))
    }

    fn extension_excluded(&self, number: &str, endpoint: &str) -> Option<Rule> {
        let s = &self.settings.raw;
        if Compiled::extension_listed(&s.black_list.extensions, number, endpoint) {
            return Some(Rule::BlackListExtension);
        }
        if !s.white_list.extensions.is_empty()
            && !Compiled::extension_listed(&s.white_list.extensions, number, endpoint)
        {
            return Some(Rule::WhiteListExtension);
        }
        None
    }

    /// Extensions this event needs and the directory lacks, when a refresh is due.
    fn missing_users(&self, event: &CallEvent, call_full: Option<&CallFull>, now: Timestamp) -> Option<Vec<String>> {
        let leg = leg_of_event(event)?;
        let state = self.calls.get(&leg.call);
        if let Some(state) = state {
            if matches!(state.admission, Admission::Ignored) || state.legs.contains_key(&leg.conversation) {
                return None;
            }
        }
        let mut missing = Vec::new();
        if self.extension_excluded(&leg.number, &leg.endpoint).is_none() && self.user_of_leg(leg).is_none() {
            missing.push(if leg.number.is_empty() {
                leg.endpoint.clone()
            } else {
                leg.number.clone()
            });
        }
        let local = call_full.is_some_and(|c| c.channel.direction == Direction::Local);
        let undecided = match state {
            None => true,
            Some(s) => matches!(s.admission, Admission::Undecided),
        };
        if local && undecided && self.settings.raw.register_local_calls {
            if let Some(cf) = call_full {
                let caller = cf.channel.from.original.trim();
                if !caller.is_empty() && self.users.user_of(caller).is_none() {
                    missing.push(caller.to_owned());
                }
            }
        }
        missing.retain(|m| !m.is_empty());
        if missing.is_empty() {
            return None;
        }
        let due = match self.users.refreshed_at() {
            None => true,
            Some(at) => now.secs_since(at) >= self.settings.raw.users_refresh_interval_secs,
        };
        due.then_some(missing)
    }

    /// The default responsible of the call's line: the trunk's, else the global one.
    fn default_user(&self, ctx: &CallContext) -> Option<UserId> {
        ctx.trunk_responsible.or(self.settings.raw.missed.default_user)
    }

    // ----- admission ---------------------------------------------------------------------------------------

    fn context(&self, call_full: Option<&CallFull>, event: &CallEvent) -> CallContext {
        let leg = leg_of_event(event);
        let direction = call_full
            .map(|c| c.channel.direction)
            .filter(|d| *d != Direction::Unknown)
            .or_else(|| match event {
                CallEvent::LegDialing(_) => Some(Direction::Outgoing),
                CallEvent::LegRinging(_) | CallEvent::LegAnswered(_) if call_full.is_none() => {
                    Some(Direction::Incoming)
                }
                _ => None,
            })
            .unwrap_or(Direction::Unknown);
        let channel = call_full.map(|c| &c.channel);
        let client = channel
            .map(|ch| match direction {
                Direction::Incoming => ch.from.preferred(),
                _ => ch.to.preferred(),
            })
            .filter(|n| !n.trim().is_empty())
            .map(str::to_owned)
            .or_else(|| {
                leg.map(|l| match direction {
                    Direction::Local => l.number.clone(),
                    _ => l.peer_number.clone(),
                })
            })
            .unwrap_or_default();
        let trunk = channel.map(|ch| ch.trunk.clone()).unwrap_or_default();
        let trunk_settings = self.settings.trunk(&trunk);
        let line_number = trunk_settings
            .map(|t| t.line_number.clone().unwrap_or_else(|| t.number.trim().to_owned()))
            .or_else(|| Some(trunk.original.trim().to_owned()))
            .filter(|n| !n.is_empty());
        let caller_extension = match direction {
            Direction::Local => channel
                .map(|ch| ch.from.original.trim().to_owned())
                .filter(|n| !n.is_empty())
                .or_else(|| leg.map(|l| l.peer_number.clone()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        CallContext {
            direction,
            client,
            line_number,
            crm_source: trunk_settings.and_then(|t| t.crm_source.clone()),
            trunk_responsible: trunk_settings.and_then(|t| t.responsible),
            start_date: channel.and_then(|ch| bitrix_time_from_local(&ch.start_time, self.settings.offset)),
            caller_user: (direction == Direction::Local)
                .then(|| self.users.user_of(&caller_extension))
                .flatten(),
            caller_extension,
            trunk,
        }
    }

    /// Decides once per call whether it is registered at all.
    fn admit(&self, state: &mut CallState, call_full: Option<&CallFull>, event: &CallEvent, out: &mut Out<'_>) {
        if !matches!(state.admission, Admission::Undecided) {
            return;
        }
        let ctx = self.context(call_full, event);
        let s = &self.settings.raw;
        let trunk_text = ctx.trunk.original.clone();
        let builtin: Result<(), (Rule, String)> = if ctx.direction == Direction::Unknown {
            Err((
                Rule::UnknownDirection,
                "the call's direction is unknown (neither a configured trunk nor two employees)".into(),
            ))
        } else if ctx.direction == Direction::Local && !s.register_local_calls {
            Err((
                Rule::LocalCalls,
                "a call between employees; register_local_calls is off".into(),
            ))
        } else if ctx.direction != Direction::Local && Compiled::trunk_listed(&s.black_list.trunks, &ctx.trunk) {
            Err((
                Rule::BlackListTrunk,
                format!("trunk {trunk_text} is in black_list.trunks"),
            ))
        } else if ctx.direction != Direction::Local
            && !s.white_list.trunks.is_empty()
            && !Compiled::trunk_listed(&s.white_list.trunks, &ctx.trunk)
        {
            Err((
                Rule::WhiteListTrunk,
                format!("trunk {trunk_text} is not in white_list.trunks"),
            ))
        } else {
            Ok(())
        };
        let data = json!({
            "direction": direction_name(ctx.direction),
            "trunk": trunk_text,
            "client": ctx.client,
        });
        let hook = match (&self.gate, ctx.direction) {
            (Some(gate), d) if d != Direction::Unknown => gate.need_registration(out.call, call_full),
            _ => None,
        };
        let register = match (hook, &builtin) {
            (Some(verdict), _) => {
                let settings_said = match &builtin {
                    Ok(()) => "register".to_owned(),
                    Err((_, why)) => format!("skip ({why})"),
                };
                out.decide(
                    Rule::NeedRegistrationHook,
                    format!("need_registration answered {verdict}; the settings alone would {settings_said}"),
                    json!({"hook": verdict, "settings": builtin.is_ok(), "call": data}),
                );
                verdict
            }
            (None, Ok(())) => true,
            (None, Err((rule, why))) => {
                out.decide(*rule, format!("not registered: {why}"), data);
                false
            }
        };
        state.admission = if register {
            Admission::Register(Arc::new(ctx))
        } else {
            Admission::Ignored
        };
    }

    // ----- events ------------------------------------------------------------------------------------------

    /// Adds a leg seen for the first time; `None` if it is left out by the extension lists.
    fn add_leg(&self, state: &mut CallState, leg: &Leg, ringing: bool, out: &mut Out<'_>) -> Option<Option<UserId>> {
        if let Some(rule) = self.extension_excluded(&leg.number, &leg.endpoint) {
            let list = if rule == Rule::BlackListExtension {
                "is in black_list.extensions"
            } else {
                "is not in white_list.extensions"
            };
            out.decide(
                rule,
                format!("extension {} {list}: its leg is not registered or shown", leg.number),
                json!({"extension": leg.number, "conversation": leg.conversation}),
            );
            state.legs.insert(
                leg.conversation.clone(),
                LegState {
                    user: None,
                    excluded: true,
                    ringing,
                    answered_at: None,
                    ended: false,
                    registration: None,
                },
            );
            return None;
        }
        let user = self.user_of_leg(leg);
        if user.is_none() {
            out.decide(
                Rule::UnknownUser,
                format!("extension {} belongs to no Bitrix24 user: no card for it", leg.number),
                json!({"extension": leg.number, "conversation": leg.conversation}),
            );
        }
        state.legs.insert(
            leg.conversation.clone(),
            LegState {
                user,
                excluded: false,
                ringing,
                answered_at: None,
                ended: false,
                registration: None,
            },
        );
        Some(user)
    }

    fn on_leg_ringing(
        &self,
        state: &mut CallState,
        leg: &Leg,
        call_full: Option<&CallFull>,
        event: &CallEvent,
        out: &mut Out<'_>,
    ) {
        if state.legs.contains_key(&leg.conversation) {
            return; // a repeated event
        }
        self.admit(state, call_full, event, out);
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let ctx = Arc::clone(ctx);
        let Some(user) = self.add_leg(state, leg, true, out) else {
            return;
        };
        let card_user = if ctx.direction == Direction::Local {
            ctx.caller_user
        } else {
            user
        };
        let current = state
            .registrations
            .iter()
            .rposition(|r| matches!(r.phase, Phase::Ringing));
        match current {
            Some(index) => {
                if let Some(l) = state.legs.get_mut(&leg.conversation) {
                    l.registration = Some(index);
                }
                let Some(card_user) = card_user else {
                    return;
                };
                let reg = &mut state.registrations[index];
                if ctx.direction != Direction::Local {
                    reg.last_rung = Some(card_user);
                }
                if let Some(card) = reg.cards.get_mut(&card_user) {
                    card.legs.insert(leg.conversation.clone());
                    return;
                }
                if !self.settings.raw.show_card {
                    return;
                }
                let occurrence = reg.occurrence(card_user);
                let key = format!("{}/show/{card_user}/{occurrence}", reg.prefix);
                reg.cards.insert(
                    card_user,
                    Card {
                        shown_by: key.clone(),
                        occurrence,
                        legs: BTreeSet::from([leg.conversation.clone()]),
                    },
                );
                let params = json!({"CALL_ID": reg.call_id(), "USER_ID": [card_user]});
                out.decide(
                    Rule::ShowRingingLeg,
                    format!(
                        "extension {} rings while the call is registered: card shown to user {card_user}",
                        leg.number
                    ),
                    json!({"user": card_user, "extension": leg.number, "step": key}),
                );
                out.step(
                    key,
                    StepKind::Show,
                    params,
                    &[],
                    Timing::WhileRinging {
                        conversation: leg.conversation.clone(),
                    },
                );
            }
            None => {
                let Some(reg_user) = card_user else {
                    if ctx.direction == Direction::Local {
                        out.decide(
                            Rule::NoResponsible,
                            format!(
                                "the caller {} of this local call has no Bitrix24 user: not registered",
                                ctx.caller_extension
                            ),
                            json!({"extension": ctx.caller_extension}),
                        );
                    }
                    return;
                };
                let show = self.settings.raw.show_card;
                let index = self.register(state, &ctx, reg_user, show, Some(leg), leg.time, out);
                if let Some(l) = state.legs.get_mut(&leg.conversation) {
                    l.registration = Some(index);
                }
                let reg = &mut state.registrations[index];
                if ctx.direction != Direction::Local {
                    reg.last_rung = Some(reg_user);
                }
                if show {
                    let occurrence = reg.occurrence(reg_user);
                    reg.cards.insert(
                        reg_user,
                        Card {
                            shown_by: reg.register_key(),
                            occurrence,
                            legs: BTreeSet::from([leg.conversation.clone()]),
                        },
                    );
                }
            }
        }
    }

    /// Plans a register; returns the new registration's index.
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        state: &mut CallState,
        ctx: &CallContext,
        user: UserId,
        show: bool,
        ringing_leg: Option<&Leg>,
        time: Timestamp,
        out: &mut Out<'_>,
    ) -> usize {
        let s = &self.settings.raw;
        let n = state.registrations.len();
        let prefix = format!("{}/{n}", out.call);
        let external_call_id = if n == 0 {
            out.call.to_owned()
        } else {
            format!("{}-{n}", out.call)
        };
        let start = match (n, &ctx.start_date) {
            (0, Some(start)) => start.clone(),
            _ => bitrix_time(time, self.settings.offset),
        };
        let crm_create = match ctx.direction {
            Direction::Incoming => s.crm_create.incoming,
            _ => s.crm_create.outgoing,
        };
        let mut params = Map::new();
        params.insert("USER_ID".into(), user_value(user));
        params.insert("PHONE_NUMBER".into(), Value::from(ctx.client.clone()));
        params.insert("TYPE".into(), Value::from(type_of(ctx.direction)));
        params.insert("CALL_START_DATE".into(), Value::from(start));
        params.insert("CRM_CREATE".into(), Value::from(u8::from(crm_create)));
        params.insert("SHOW".into(), Value::from(u8::from(show && ringing_leg.is_some())));
        params.insert("EXTERNAL_CALL_ID".into(), Value::from(external_call_id.clone()));
        if let Some(line) = &ctx.line_number {
            params.insert("LINE_NUMBER".into(), Value::from(line.clone()));
        }
        if let Some(source) = &ctx.crm_source {
            params.insert("CRM_SOURCE".into(), Value::from(source.clone()));
        }
        let reg = Registration {
            prefix,
            user,
            fixed_user: (ctx.direction == Direction::Local).then_some(user),
            phase: Phase::Ringing,
            cards: BTreeMap::new(),
            next_occurrence: BTreeMap::new(),
            last_rung: None,
            talker: None,
        };
        let key = reg.register_key();
        let timing = match ringing_leg {
            Some(leg) if show => Timing::DurableCardWhileRinging {
                conversation: leg.conversation.clone(),
            },
            _ => Timing::Durable,
        };
        // With no leg ringing there is nobody to show a card to, whatever the setting says.
        if !show && ringing_leg.is_some() {
            out.decide(
                Rule::ShowCardSetting,
                "show_card is off: registered without a card".into(),
                json!({"step": key}),
            );
        }
        let (rule, why) = match ringing_leg {
            Some(leg) if n == 0 => (
                Rule::FirstLegRegisters,
                format!("first employee leg of the call rang (extension {})", leg.number),
            ),
            Some(leg) => (
                Rule::FirstLegRegisters,
                format!(
                    "extension {} rang after the previous registration left ringing",
                    leg.number
                ),
            ),
            None => (Rule::TakeoverRegisters, "registered without a card".into()),
        };
        out.decide(
            rule,
            format!(
                "{why}: register {} call for user {user} (registration {n})",
                direction_name(ctx.direction)
            ),
            json!({"user": user, "registration": n, "external_call_id": external_call_id, "step": key}),
        );
        out.step(key, StepKind::Register, Value::Object(params), &[], timing);
        state.registrations.push(reg);
        n
    }

    fn hide(reg: &Registration, user: UserId, card: &Card, out: &mut Out<'_>, why: String) {
        let key = format!("{}/hide/{user}/{}", reg.prefix, card.occurrence);
        out.decide(Rule::HideStoppedLeg, why, json!({"user": user, "step": key}));
        out.step(
            key,
            StepKind::Hide,
            json!({"CALL_ID": reg.call_id(), "USER_ID": [user]}),
            std::slice::from_ref(&card.shown_by),
            Timing::UndoCard {
                shown_by: card.shown_by.clone(),
                finish: reg.finish_key(),
            },
        );
    }

    fn on_leg_answered(
        &self,
        state: &mut CallState,
        leg: &Leg,
        call_full: Option<&CallFull>,
        event: &CallEvent,
        out: &mut Out<'_>,
    ) {
        self.admit(state, call_full, event, out);
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let ctx = Arc::clone(ctx);
        let user = match state.legs.get(&leg.conversation) {
            Some(l) if l.excluded || l.answered_at.is_some() || l.ended => return,
            Some(l) => l.user,
            None => match self.add_leg(state, leg, false, out) {
                Some(user) => user,
                None => return,
            },
        };
        let talker_user = if ctx.direction == Direction::Local {
            ctx.caller_user
        } else {
            user
        };
        if let Some(l) = state.legs.get_mut(&leg.conversation) {
            l.ringing = false;
            l.answered_at = Some(leg.time);
        }
        let current = state
            .registrations
            .iter()
            .rposition(|r| matches!(r.phase, Phase::Ringing));
        let index = match current {
            Some(index) => {
                let reg = &mut state.registrations[index];
                let cards = std::mem::take(&mut reg.cards);
                for (card_user, card) in &cards {
                    if Some(*card_user) == talker_user {
                        continue; // the card stays up during the talk; finish takes it away
                    }
                    Self::hide(
                        reg,
                        *card_user,
                        card,
                        out,
                        format!("extension {} answered: card hidden for user {card_user}", leg.number),
                    );
                }
                out.decide(
                    Rule::AnswerTakesRegistration,
                    format!(
                        "extension {} answered: registration {index} is {}",
                        leg.number,
                        talker_user.map_or("the default responsible's".to_owned(), |u| format!("user {u}'s"))
                    ),
                    json!({"user": talker_user, "registration": index, "origin": leg.origin}),
                );
                index
            }
            None => {
                let reg_user = talker_user.or_else(|| self.default_user(&ctx));
                let Some(reg_user) = reg_user else {
                    out.decide(
                        Rule::NoResponsible,
                        format!(
                            "extension {} talks but has no Bitrix24 user and no default responsible is set",
                            leg.number
                        ),
                        json!({"extension": leg.number}),
                    );
                    return;
                };
                if !state.registrations.is_empty() {
                    out.decide(
                        Rule::TakeoverRegisters,
                        format!(
                            "extension {} took the client over ({:?}): a new registration for its talk",
                            leg.number, leg.origin
                        ),
                        json!({"extension": leg.number, "origin": leg.origin}),
                    );
                }
                self.register(state, &ctx, reg_user, false, None, leg.time, out)
            }
        };
        if let Some(l) = state.legs.get_mut(&leg.conversation) {
            l.registration = Some(index);
        }
        state.registrations[index].phase = Phase::Talking {
            conversation: leg.conversation.clone(),
            user: talker_user,
            since: leg.time,
        };
    }

    fn on_leg_stopped(&self, state: &mut CallState, conversation: &str, reason: &StopReason, out: &mut Out<'_>) {
        let Some(leg) = state.legs.get_mut(conversation) else {
            return;
        };
        if !leg.ringing {
            return;
        }
        leg.ringing = false;
        if leg.answered_at.is_none() {
            leg.ended = true;
        }
        let Some(index) = leg.registration else {
            return;
        };
        let leg_user = leg.user;
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let card_user = if ctx.direction == Direction::Local {
            ctx.caller_user
        } else {
            leg_user
        };
        let Some(card_user) = card_user else {
            return;
        };
        let reg = &mut state.registrations[index];
        if !matches!(reg.phase, Phase::Ringing) {
            return;
        }
        let Some(card) = reg.cards.get_mut(&card_user) else {
            return;
        };
        card.legs.remove(conversation);
        if !card.legs.is_empty() {
            return;
        }
        if let Some(card) = reg.cards.remove(&card_user) {
            let why = format!(
                "the phone stopped ringing ({}): card hidden for user {card_user}",
                stop_reason_text(reason)
            );
            Self::hide(reg, card_user, &card, out, why);
        }
    }

    fn on_conversation_ended(&self, state: &mut CallState, conversation: &str, talk_seconds: u64, out: &mut Out<'_>) {
        let Some(leg) = state.legs.get_mut(conversation) else {
            return;
        };
        leg.ended = true;
        leg.ringing = false;
        let Some(index) = leg.registration else {
            return;
        };
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let ctx = Arc::clone(ctx);
        let talking =
            matches!(&state.registrations[index].phase, Phase::Talking { conversation: c, .. } if c == conversation);
        if talking {
            self.finish_talk(&ctx, &mut state.registrations[index], talk_seconds, out);
        }
    }

    fn finish_talk(&self, ctx: &CallContext, reg: &mut Registration, duration: u64, out: &mut Out<'_>) {
        let Phase::Talking { conversation, user, .. } = &reg.phase else {
            return;
        };
        let user = reg
            .fixed_user
            .or(*user)
            .or_else(|| self.default_user(ctx))
            .unwrap_or(reg.user);
        let key = reg.finish_key();
        let mut params = json!({
            "CALL_ID": reg.call_id(),
            "USER_ID": user,
            "DURATION": duration,
            "STATUS_CODE": "200",
        });
        params["ADD_TO_CHAT"] = Value::from(u8::from(self.settings.raw.add_to_chat));
        out.decide(
            Rule::FinishTalk,
            format!("conversation ended: finish for user {user}, {duration} s talked"),
            json!({"user": user, "duration": duration, "step": key}),
        );
        reg.talker = Some(conversation.clone());
        reg.cards.clear();
        reg.phase = Phase::Finished;
        out.step(key, StepKind::Finish, params, &[], Timing::Durable);
    }

    fn on_call_ended(&self, state: &mut CallState, call_full: &CallFull, event: &CallEvent, out: &mut Out<'_>) {
        let no_leg = state.legs.is_empty();
        if no_leg
            && matches!(state.admission, Admission::Undecided)
            && call_full.channel.direction == Direction::Incoming
        {
            self.admit(state, Some(call_full), event, out);
            if let Admission::Register(ctx) = &state.admission {
                let ctx = Arc::clone(ctx);
                self.register_unrung(state, &ctx, call_full, out, "before any phone rang", Rule::IvrAbandoned);
            }
        } else if let Admission::Register(ctx) = &state.admission {
            let only_unknown_users = !no_leg
                && state.registrations.is_empty()
                && state.legs.values().any(|l| !l.excluded)
                && ctx.direction == Direction::Incoming;
            if only_unknown_users {
                let ctx = Arc::clone(ctx);
                self.register_unrung(
                    state,
                    &ctx,
                    call_full,
                    out,
                    "after ringing only phones without a Bitrix24 user",
                    Rule::FinishUnanswered,
                );
            }
        }
        let Admission::Register(ctx) = &state.admission else {
            return;
        };
        let ctx = Arc::clone(ctx);
        for reg in &mut state.registrations {
            match &reg.phase {
                Phase::Finished => {}
                Phase::Talking { since, .. } => {
                    let duration = out.time.secs_since(*since);
                    self.finish_talk(&ctx, reg, duration, out);
                }
                Phase::Ringing => self.finish_unanswered(&ctx, reg, call_full, out),
            }
        }
        if self.settings.raw.attach_records {
            self.attach_records(state, call_full, out);
        }
    }

    /// Registers (without a card) an incoming call that nobody with a Bitrix24 user was rung for; it is then
    /// finished as missed with the other registrations.
    fn register_unrung(
        &self,
        state: &mut CallState,
        ctx: &CallContext,
        call_full: &CallFull,
        out: &mut Out<'_>,
        when: &str,
        rule: Rule,
    ) {
        // Nobody rang and the entity owner is only known after registering: the register goes to the default
        // responsible; finish then names whoever the missed-call chain finds.
        let user = self.default_user(ctx);
        let Some(user) = user else {
            out.decide(
                Rule::NoResponsible,
                format!("the call was lost {when}, but no default responsible is set: not registered"),
                json!({"is_ivr": call_full.is_ivr}),
            );
            return;
        };
        out.decide(
            rule,
            format!("the client hung up {when}: registered without a card for user {user}, then finished as missed"),
            json!({"user": user, "is_ivr": call_full.is_ivr}),
        );
        self.register(state, ctx, user, false, None, out.time, out);
    }

    fn finish_unanswered(&self, ctx: &CallContext, reg: &mut Registration, call_full: &CallFull, out: &mut Out<'_>) {
        let key = reg.finish_key();
        let register_key = reg.register_key();
        let incoming = ctx.direction == Direction::Incoming;
        let status_code = if incoming {
            "304".to_owned()
        } else {
            failure_status_code(call_full.result)
        };
        let (user_param, owner_step) = if incoming {
            self.missed_responsible(ctx, reg, out)
        } else {
            let user = reg.fixed_user.unwrap_or(reg.user);
            (user_value(user), false)
        };
        if owner_step {
            out.step(
                format!("{}/owner", reg.prefix),
                StepKind::LookupOwner,
                json!({"PHONE_NUMBER": ctx.client}),
                std::slice::from_ref(&register_key),
                Timing::Durable,
            );
        }
        let params = json!({
            "CALL_ID": reg.call_id(),
            "USER_ID": user_param.clone(),
            "DURATION": 0,
            "STATUS_CODE": status_code,
            "ADD_TO_CHAT": u8::from(self.settings.raw.add_to_chat),
        });
        out.decide(
            Rule::FinishUnanswered,
            format!("nobody answered: finish with status {status_code}"),
            json!({"status_code": status_code, "result": call_full.result, "step": key}),
        );
        reg.cards.clear();
        reg.phase = Phase::Finished;
        out.step(key.clone(), StepKind::Finish, params, &[], Timing::Durable);
        let task = &self.settings.raw.missed.task;
        if incoming && task.enabled {
            self.missed_task(ctx, reg, user_param, &key, call_full, out);
        }
    }

    /// The missed-call responsible: a plain user id when the chain settles it now, else a `$first` over the
    /// entity owner (looked up after register) and the rest of the chain. The flag asks for the lookup step.
    fn missed_responsible(&self, ctx: &CallContext, reg: &Registration, out: &mut Out<'_>) -> (Value, bool) {
        let owner = StepRef::new(format!("{}/owner", reg.prefix), "0.ASSIGNED_BY_ID");
        let created = StepRef::new(reg.register_key(), "CRM_CREATED_ENTITIES.0");
        let mut candidates: Vec<Value> = Vec::new();
        let mut tried: Vec<Value> = Vec::new();
        let mut settled: Option<UserId> = None;
        for mode in &self.settings.raw.missed.responsible {
            match mode {
                ResponsibleMode::EntityOwner => {
                    candidates.push(owner.to_json_unless(&created));
                    tried.push(json!({"mode": "entity_owner"}));
                }
                ResponsibleMode::LastRung => {
                    tried.push(json!({"mode": "last_rung", "user": reg.last_rung}));
                    if let Some(u) = reg.last_rung {
                        settled = Some(u);
                        break;
                    }
                }
                ResponsibleMode::DefaultUser => {
                    let u = self.default_user(ctx);
                    tried.push(json!({"mode": "default_user", "user": u}));
                    if let Some(u) = u {
                        settled = Some(u);
                        break;
                    }
                }
            }
        }
        // The registration's own user closes the chain, so finish always names someone.
        let last = settled.unwrap_or(reg.user);
        let reason_tail = if settled.is_some() {
            format!("user {last}")
        } else {
            format!("no mode found a user: the registration's user {last}")
        };
        let (value, lookup) = if candidates.is_empty() {
            (user_value(last), false)
        } else {
            candidates.push(user_value(last));
            (first_of(candidates), true)
        };
        let reason = if lookup {
            format!("missed call: responsible = the client's entity owner if it existed before the call, else {reason_tail}")
        } else {
            format!("missed call: responsible = {reason_tail}")
        };
        out.decide(
            Rule::MissedResponsible,
            reason,
            json!({"chain": tried, "fallback": last}),
        );
        (value, lookup)
    }

    fn missed_task(
        &self,
        ctx: &CallContext,
        reg: &Registration,
        responsible: Value,
        finish_key: &str,
        call_full: &CallFull,
        out: &mut Out<'_>,
    ) {
        let task = &self.settings.raw.missed.task;
        let line = ctx.line_number.as_deref().unwrap_or("");
        let time = call_full.channel.start_time.as_str();
        let mut fields = json!({
            "TITLE": fill_template(&task.title, &ctx.client, line, time),
            "DESCRIPTION": fill_template(&task.description, &ctx.client, line, time),
            "RESPONSIBLE_ID": responsible,
            "UF_CRM_TASK": crm_bindings(&reg.register_key()),
        });
        if task.deadline_minutes > 0 {
            let deadline = Timestamp::from_micros(
                out.time.as_micros().saturating_add(
                    i64::try_from(task.deadline_minutes)
                        .unwrap_or(i64::MAX / 60_000_000)
                        .saturating_mul(60_000_000),
                ),
            );
            fields["DEADLINE"] = Value::from(bitrix_time(deadline, self.settings.offset));
        }
        if let Some(by) = task.created_by {
            fields["CREATED_BY"] = user_value(by);
        }
        let key = format!("{}/task", reg.prefix);
        out.decide(
            Rule::MissedTask,
            "missed incoming call: task for its responsible (missed.task.enabled)".into(),
            json!({"step": key}),
        );
        out.step(
            key,
            StepKind::AddTask,
            json!({ "fields": fields }),
            &[finish_key.to_owned()],
            Timing::Durable,
        );
    }

    fn attach_records(&self, state: &CallState, call_full: &CallFull, out: &mut Out<'_>) {
        let whole_call = state
            .recordings
            .iter()
            .find(|(conv, _)| conv.is_empty() || !state.legs.contains_key(conv))
            .map(|(_, path)| path.as_str())
            .or_else(|| Some(call_full.record.as_str()).filter(|p| !p.trim().is_empty()));
        for (n, reg) in state.registrations.iter().enumerate() {
            let Some(talker) = &reg.talker else {
                continue;
            };
            let own = state
                .recordings
                .iter()
                .find(|(conv, _)| conv == talker)
                .map(|(_, path)| path.as_str());
            let Some(path) = own.or(whole_call) else {
                continue;
            };
            let filename = path.rsplit('/').next().unwrap_or(path).to_owned();
            let key = format!("{}/record", reg.prefix);
            out.decide(
                Rule::AttachRecord,
                format!("recording {path} attached to registration {n}"),
                json!({"path": path, "registration": n, "step": key}),
            );
            out.step(
                key,
                StepKind::AttachRecord,
                json!({"CALL_ID": reg.call_id(), "FILENAME": filename}),
                &[reg.finish_key()],
                Timing::Durable,
            );
            if let Some(step) = out.plan.steps.last_mut() {
                step.record_path = Some(path.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_bitrix_times_with_the_offset() {
        let offset = tracker::LocalClock::parse_offset("+03:00").expect("valid");
        // 1700000000 = 2023-11-14 22:13:20 UTC
        assert_eq!(
            bitrix_time(Timestamp::from_secs(1_700_000_000), offset),
            "2023-11-15T01:13:20+03:00"
        );
        assert_eq!(
            bitrix_time_from_local("2023-11-15 01:13:20", offset).as_deref(),
            Some("2023-11-15T01:13:20+03:00")
        );
        assert_eq!(bitrix_time_from_local(NEVER, offset), None);
        assert_eq!(bitrix_time_from_local("garbage", offset), None);
    }

    #[test]
    fn maps_results_to_status_codes() {
        assert_eq!(failure_status_code(status::BUSY), "486");
        assert_eq!(failure_status_code(status::DECLINED), "603");
        assert_eq!(failure_status_code(status::CANCELLED), "603-S");
        assert_eq!(failure_status_code(status::MISSED), "304");
        assert_eq!(failure_status_code(status::NOT_FOUND), "404");
        assert_eq!(failure_status_code(status::ROUTE_UNAVAILABLE), "503");
        assert_eq!(failure_status_code(status::OTHER), "OTHER");
        assert_eq!(failure_status_code(499), "OTHER");
    }

    #[test]
    fn templates_fill_placeholders() {
        assert_eq!(
            fill_template(
                "Missed {phone} on {line} at {time}",
                "+7900",
                "7343",
                "2026-01-01 10:00:00"
            ),
            "Missed +7900 on 7343 at 2026-01-01 10:00:00"
        );
    }
}
