//! What the engine remembers per live call, and the collector of one plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use numbers::Number;
use serde_json::Value;
use tracker::{Direction, Timestamp};

use crate::click::ClickToCall;
use crate::intent::{CallFacts, CallRecord, Crm, Intent, Translated};
use crate::plan::{references, Decision, Plan, Rule, Step, StepKind, Timing};
use crate::settings::Compiled;
use crate::users::UserId;

/// What the engine knows about a call while it is live.
#[derive(Debug)]
pub(super) struct CallState {
    /// The settings the call started with: a change while it is in progress applies from the next call.
    pub(super) settings: Arc<Compiled>,
    pub(super) admission: Admission,
    /// Employee legs by conversation id (ordered, so plans never depend on hashing).
    pub(super) legs: BTreeMap<String, LegState>,
    pub(super) registrations: Vec<Registration>,
    /// `(conversation, path)`; the conversation is empty for a recording of the whole call.
    pub(super) recordings: Vec<(String, String)>,
    /// A click-to-call: the request Bitrix24 sent (its `CALL_ID` is registration 0's).
    pub(super) click: Option<ClickToCall>,
    /// Click-to-call: the employee picked up and the client's number is being dialled (or talks).
    pub(super) click_dialing: bool,
}

#[derive(Debug)]
pub(super) enum Admission {
    Undecided,
    Register(Arc<CallContext>),
    Ignored,
}

/// The call as registrations need it; fixed at admission.
#[derive(Debug, Clone)]
pub(super) struct CallContext {
    pub(super) direction: Direction,
    /// `PHONE_NUMBER`: the client (for a local call: the callee).
    pub(super) client: String,
    pub(super) trunk: Number,
    pub(super) line_number: Option<String>,
    pub(super) crm_source: Option<String>,
    pub(super) trunk_responsible: Option<UserId>,
    /// The call's start as `CALL_START_DATE`, when `call_full` gave it.
    pub(super) start_date: Option<String>,
    /// Local calls: the calling employee, who owns the registration.
    pub(super) caller_user: Option<UserId>,
    pub(super) caller_extension: String,
}

#[derive(Debug)]
pub(super) struct LegState {
    pub(super) user: Option<UserId>,
    /// Left out by the extension black/white list.
    pub(super) excluded: bool,
    pub(super) ringing: bool,
    pub(super) answered_at: Option<Timestamp>,
    pub(super) ended: bool,
    pub(super) registration: Option<usize>,
    /// Rung through a trunk for the call (follow-me, forwarding to a mobile): an outside phone, not a desk phone.
    pub(super) forwarded: bool,
}

#[derive(Debug)]
pub(super) enum Phase {
    /// Registered, nobody answered yet: more legs may ring (show) or stop (hide).
    Ringing,
    Talking {
        conversation: String,
        user: Option<UserId>,
        /// Answered on an outside phone that is no employee's: the finish goes to the missed-call responsible.
        forwarded_unknown: bool,
        since: Timestamp,
    },
    Finished,
}

/// A card shown to one user.
#[derive(Debug)]
pub(super) struct Card {
    pub(super) shown_by: String,
    pub(super) occurrence: u32,
    /// Ringing legs of this user that keep the card up.
    pub(super) legs: BTreeSet<String>,
}

#[derive(Debug)]
pub(super) struct Registration {
    /// `<call>/<n>`: the prefix of every key of this registration.
    pub(super) prefix: String,
    /// The registration's `USER_ID`.
    pub(super) user: UserId,
    /// Local calls: finish always names this user (the caller).
    pub(super) fixed_user: Option<UserId>,
    pub(super) phase: Phase,
    pub(super) cards: BTreeMap<UserId, Card>,
    pub(super) next_occurrence: BTreeMap<UserId, u32>,
    pub(super) last_rung: Option<UserId>,
    /// The conversation that talked on it (set when it talked).
    pub(super) talker: Option<String>,
    /// The `CALL_ID` when Bitrix24 registered the call itself (click-to-call): no register step, no reference.
    pub(super) known_call_id: Option<String>,
    /// Its recording's upload is planned (with the finish, when the recording was known by then).
    pub(super) record_planned: bool,
    /// The call as this registration records it.
    pub(super) facts: CallFacts,
}

impl Registration {
    pub(super) fn register_key(&self) -> String {
        format!("{}/register", self.prefix)
    }
    pub(super) fn finish_key(&self) -> String {
        format!("{}/finish", self.prefix)
    }
    /// The CRM's record of this registration.
    pub(super) fn record(&self) -> CallRecord {
        match &self.known_call_id {
            Some(id) => CallRecord::Known(id.clone()),
            None => CallRecord::Registered {
                register: self.register_key(),
            },
        }
    }
    pub(super) fn occurrence(&mut self, user: UserId) -> u32 {
        let next = self.next_occurrence.entry(user).or_insert(0);
        let this = *next;
        *next += 1;
        this
    }
}

/// Collects steps and decisions of one `handle` call.
pub(super) struct Out<'a> {
    pub(super) call: &'a str,
    pub(super) time: Timestamp,
    pub(super) plan: Plan,
    /// The CRM the intents are translated for.
    pub(super) crm: Arc<Crm>,
}

impl Out<'_> {
    pub(super) fn decide(&mut self, rule: Rule, reason: String, data: Value) {
        self.plan.journal.push(Decision {
            call: self.call.to_owned(),
            time: self.time,
            rule,
            reason,
            data,
        });
    }

    /// Plans `intent` as the step `key`, in the CRM's words; an intent the CRM has no request for is journaled
    /// instead (with the reason).
    pub(super) fn intent(&mut self, key: String, intent: &Intent, extra_after: &[String], timing: Timing) {
        match self.crm.translate(intent) {
            Translated::Step(kind, method, params) => self.step(key, kind, method, params, extra_after, timing),
            Translated::Nothing(reason) => {
                let crm = self.crm.name();
                self.decide(
                    Rule::NotInCrm,
                    format!("{crm}: {reason}"),
                    serde_json::json!({"crm": crm, "step": key}),
                )
            }
        }
    }

    fn step(
        &mut self,
        key: String,
        kind: StepKind,
        method: String,
        params: Value,
        extra_after: &[String],
        timing: Timing,
    ) {
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
            method,
            params,
            after,
            timing,
            record_path: None,
        });
    }
}
