//! The per-call state machine that plans registrations, cards and finishes.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use tracker::{CallEvent, CallFull, Direction, Leg, LegOrigin, RememberedKeys, Timestamp};

use crate::click::ClickToCall;
use crate::intent::Crm;
use crate::plan::{Plan, RefreshUsers, Rule};
use crate::settings::{Compiled, EngineSettings};
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

/// Ended call keys remembered so that a late event does not start the call over: at most this many, each for
/// [`ENDED_RETENTION_SECS`].
const ENDED_MEMORY: usize = 10_000;

/// How long an ended call's key is remembered. Late events reach the engine within moments of the end (the
/// tracker ignores Asterisk's own for `forget_after_secs`, 120 s by default); a little longer here also keeps a
/// ghost call the tracker might start after that from being planned again.
pub const ENDED_RETENTION_SECS: u64 = 300;

mod click;
mod finish;
mod format;
mod legs;
mod recover;
mod state;

pub use recover::{Gap, OpenCall, RecoverySource, StoredStep};

use format::*;
use state::*;

/// Plans the CRM steps of every live call. See the crate docs for the rules.
pub struct Engine {
    /// The settings new calls start with; each call keeps the ones it started with (see [`Engine::set_settings`]).
    settings: Arc<Compiled>,
    users: UsersDirectory,
    gate: Option<Box<dyn RegistrationGate + Send + Sync>>,
    calls: HashMap<String, CallState>,
    ended: RememberedKeys,
    /// Click-to-call requests by call key, set before the call's first event.
    clicks: HashMap<String, ClickToCall>,
    /// The CRM the intents are translated for.
    crm: Arc<Crm>,
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

impl Engine {
    /// Builds an engine; fails only on invalid settings.
    pub fn new(settings: EngineSettings) -> Result<Self, Error> {
        Ok(Self {
            settings: Arc::new(Compiled::new(settings)?),
            users: UsersDirectory::new(),
            gate: None,
            calls: HashMap::new(),
            ended: RememberedKeys::new(ENDED_MEMORY),
            clicks: HashMap::new(),
            crm: Arc::new(Crm::Bitrix24),
        })
    }

    /// Translates the intents for `crm` from now on (Bitrix24 unless set).
    pub fn set_crm(&mut self, crm: Crm) {
        self.crm = Arc::new(crm);
    }

    pub fn crm(&self) -> &Crm {
        &self.crm
    }

    /// Installs the `need_registration` hook.
    pub fn set_gate(&mut self, gate: Box<dyn RegistrationGate + Send + Sync>) {
        self.gate = Some(gate);
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings.raw
    }

    /// Replaces the settings (an admin changed them while ringlink runs). Calls that start from now on use the
    /// new ones; a call already in progress keeps those it started with, so that its registration, finish and
    /// missed-call task follow one set of rules. Invalid settings are refused and the old ones stay.
    pub fn set_settings(&mut self, settings: EngineSettings) -> Result<(), Error> {
        self.settings = Arc::new(Compiled::new(settings)?);
        Ok(())
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

    /// Whether the engine follows `call` now (it began and has not ended).
    pub fn follows(&self, call: &str) -> bool {
        self.calls.contains_key(call)
    }

    /// Ended calls remembered so that late events about them are ignored (at most 10,000, each for
    /// [`ENDED_RETENTION_SECS`] after its end).
    pub fn remembered_ended(&self) -> usize {
        self.ended.len()
    }

    /// Whether `event` would make the engine decide whether its call is registered at all (the first leg of a
    /// call, or an incoming call that ended before any phone rang). A shell that runs the `need_registration`
    /// hook asks it before [`Engine::handle`], holds the call's events until the hook has answered, and hands
    /// the answer in through the [`RegistrationGate`].
    pub fn admission_pending(&self, event: &CallEvent) -> bool {
        let key = event.call();
        if self.ended.contains(key) {
            return false;
        }
        let state = self.calls.get(key);
        if state.is_some_and(|s| !matches!(s.admission, Admission::Undecided)) {
            return false;
        }
        match event {
            CallEvent::LegRinging(_) | CallEvent::LegDialing(_) | CallEvent::LegAnswered(_) => true,
            CallEvent::CallEnded { call_full, .. } => {
                state.is_none_or(|s| s.legs.is_empty()) && call_full.channel.direction == Direction::Incoming
            }
            _ => false,
        }
    }

    /// Whether the leg `conversation` of `call` is ringing now: a show for it that comes due later is dropped.
    pub fn is_ringing(&self, call: &str, conversation: &str) -> bool {
        self.calls
            .get(call)
            .and_then(|c| c.legs.get(conversation))
            .is_some_and(|l| l.ringing)
    }

    /// Whether `call` may still plan, any moment now, a step that goes in one request with its hide of a card:
    /// another card of the call is up (its hide), or nobody answered yet and a missed call looks up the
    /// client's entity owner (the lookup planned when the call ends). A call the engine no longer follows has
    /// ended: its last steps are planned, and may include the lookup when the settings ask for one.
    pub fn may_join_hide(&self, call: &str) -> bool {
        let looks_up_owner = |settings: &Compiled| {
            settings
                .raw
                .missed
                .responsible
                .contains(&crate::settings::ResponsibleMode::EntityOwner)
        };
        match self.calls.get(call) {
            None => looks_up_owner(&self.settings),
            Some(state) => state.registrations.iter().any(|reg| {
                !reg.cards.is_empty() || (matches!(reg.phase, Phase::Ringing) && looks_up_owner(&state.settings))
            }),
        }
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
            crm: self.crm.clone(),
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
            let hold = self.users.refreshed_at().is_none();
            if hold {
                out.decide(
                    Rule::DirectoryUnknown,
                    format!(
                        "the users directory was never loaded, so nobody can tell whose phone {} is: the call \
                         waits for it (a late registration has no card)",
                        missing.join(", ")
                    ),
                    json!({"extensions": missing}),
                );
            }
            out.plan.refresh_users = Some(RefreshUsers {
                extensions: missing,
                hold,
            });
            return out.plan;
        }
        let mut state = match self.calls.remove(key) {
            Some(state) => state,
            None => self.new_call_state(key, call_full, &mut out),
        };
        // The call's own settings while its event is handled.
        let current = std::mem::replace(&mut self.settings, state.settings.clone());
        let ended = self.apply(&mut state, event, call_full, &mut out);
        self.settings = current;
        if ended {
            self.remember_ended(key, now);
            self.clicks.remove(key);
        } else {
            self.calls.insert(key.to_owned(), state);
        }
        out.plan
    }

    /// Applies one event to its call's state; true once the call has ended.
    fn apply(
        &mut self,
        state: &mut CallState,
        event: &CallEvent,
        call_full: Option<&CallFull>,
        out: &mut Out<'_>,
    ) -> bool {
        match event {
            CallEvent::LegRinging(leg) | CallEvent::LegDialing(leg) => {
                if matches!(event, CallEvent::LegDialing(_)) {
                    state.click_dialing = true;
                }
                self.on_leg_ringing(state, leg, call_full, event, out);
            }
            CallEvent::LegAnswered(leg) => {
                state.click_dialing = true;
                self.on_leg_answered(state, leg, call_full, event, out)
            }
            CallEvent::LegStoppedRinging {
                conversation, reason, ..
            } => self.on_leg_stopped(state, conversation, reason, out),
            CallEvent::ConversationEnded {
                conversation,
                talk_seconds,
                reason,
                ..
            } => {
                let hung_up = matches!(reason, tracker::ConversationEndReason::HungUp { .. });
                self.on_conversation_ended(state, conversation, *talk_seconds, hung_up, out)
            }
            CallEvent::RecordingStarted { conversation, path, .. } => {
                if !path.trim().is_empty() {
                    state.recordings.push((conversation.clone(), path.clone()));
                }
            }
            CallEvent::CallEnded { call_full, .. } => {
                self.on_call_ended(state, call_full, event, out);
                return true;
            }
            CallEvent::Transferred { .. }
            | CallEvent::Parked { .. }
            | CallEvent::Unparked { .. }
            | CallEvent::Hold { .. }
            | CallEvent::Unhold { .. } => {}
        }
        false
    }

    /// Remembers that `key` ended at `now`, and forgets the keys that ended more than [`ENDED_RETENTION_SECS`]
    /// before.
    fn remember_ended(&mut self, key: &str, now: Timestamp) {
        self.ended.purge_before(now.saturating_sub_secs(ENDED_RETENTION_SECS));
        self.ended.insert(key, key, now);
    }

    // ----- users -------------------------------------------------------------------------------------------

    /// The user of a leg's phone: its extension, or for a forwarded leg the outside number in every form the
    /// number rules give it (`call_full`'s conversation `to`), matched against the employees' other phones.
    fn user_of_leg(&self, leg: &Leg, call_full: Option<&CallFull>) -> Option<UserId> {
        let direct = self
            .users
            .user_of(&leg.number)
            .or_else(|| self.users.user_of(&leg.endpoint));
        if direct.is_some() || leg.origin != LegOrigin::Forward {
            return direct;
        }
        let number = &call_full?.conversations.get(&leg.conversation)?.channel.to;
        [&number.original, &number.custom]
            .into_iter()
            .chain(number.variants.iter())
            .filter(|n| !n.trim().is_empty())
            .find_map(|n| self.users.user_of(n))
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
        if self.extension_excluded(&leg.number, &leg.endpoint).is_none() && self.user_of_leg(leg, call_full).is_none() {
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
    fn add_leg(
        &self,
        state: &mut CallState,
        leg: &Leg,
        call_full: Option<&CallFull>,
        ringing: bool,
        out: &mut Out<'_>,
    ) -> Option<Option<UserId>> {
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
                    forwarded: leg.origin == LegOrigin::Forward,
                },
            );
            return None;
        }
        let user = self.user_of_leg(leg, call_full);
        let forwarded = leg.origin == LegOrigin::Forward;
        if forwarded {
            let why = match user {
                Some(u) => format!(
                    "the call is forwarded through the trunk to {}, a phone of user {u}",
                    leg.number
                ),
                None => format!(
                    "the call is forwarded through the trunk to {}, which is no employee's phone in the directory: \
                     if it answers there, the call is answered and finished for the missed-call responsible",
                    leg.number
                ),
            };
            out.decide(
                Rule::ForwardedLeg,
                why,
                json!({"number": leg.number, "user": user, "conversation": leg.conversation}),
            );
        } else if user.is_none() {
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
                forwarded,
            },
        );
        Some(user)
    }
}
