//! Registrations left open by a gap: a call registered before ringlink stopped following the PBX (a crash, a
//! lost AMI connection) that ended before it followed again is never seen to end, so nothing else would ever
//! finish it. The shell gathers what is known of such a call ([`OpenCall`]); the engine plans its finishes.

use std::collections::BTreeMap;

use numbers::Number;
use serde::Serialize;
use serde_json::{json, Value};
use tracker::{Direction, Timestamp};

use super::state::*;
use super::Engine;
use crate::intent::{Outcome, Registered};
use crate::plan::{Decision, Plan, Rule, Step, StepKind};
use crate::users::UserId;

/// Where the facts of a recovered finish come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverySource {
    /// ringlink's own outbox and call journal: who answered and when, as far as ringlink saw before the gap.
    /// The call's end is not known: it lies within the gap, and the talk is counted up to the gap's start
    /// (what is certain). A source that knows more (the PBX's CEL) fills [`OpenCall::ended_at`] and its own
    /// answers.
    Journal,
}

impl RecoverySource {
    fn name(self) -> &'static str {
        match self {
            RecoverySource::Journal => "the journal",
        }
    }
}

/// A step of the call as the outbox holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStep {
    pub step: Step,
    /// Failed or dropped: it will never be carried out.
    pub given_up: bool,
}

/// The time ringlink did not follow the PBX: from the last instant it was known to follow (the last event or
/// heartbeat) to the resynchronisation that ended the gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// What the shell knows of a call that is no longer live and may have registrations without a finish.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenCall {
    pub call: String,
    pub source: RecoverySource,
    /// Every step of the call in the outbox, in order.
    pub steps: Vec<StoredStep>,
    /// The call's journaled decisions, in order.
    pub decisions: Vec<Decision>,
    /// Recordings of the call whose file exists: `(conversation, path on the PBX)`, the conversation empty for
    /// a recording of the whole call.
    pub recordings: Vec<(String, String)>,
    pub gap: Gap,
    /// When the call ended, if the source knows (the journal never does).
    pub ended_at: Option<Timestamp>,
}

/// Who talked on a registration, and since when.
struct Talk {
    user: Option<UserId>,
    since: Timestamp,
    conversation: String,
    /// Answered on an outside phone that is no employee's.
    forwarded_unknown: bool,
}

impl Engine {
    /// Plans the finish of every registration of `open` that has none, from what `open` says: a registration
    /// someone answered is finished with 200 for them and the talk time up to the call's end (or the gap's
    /// start when the end is not known), with its recording if the file exists; one nobody answered is finished
    /// as missed (incoming, for the missed-call responsible; no task, since the gap may have hidden an answer)
    /// or with `OTHER` (outgoing). Each finish is journaled with the source of its facts. A call the engine
    /// still follows, or has seen end, is left alone. Keys are the ones the call's own end would have planned, so a finish
    /// already stored is never planned twice.
    pub fn recover(&mut self, open: &OpenCall) -> Plan {
        let mut out = Out {
            call: &open.call,
            time: open.gap.to,
            plan: Plan::default(),
            crm: self.crm.clone(),
        };
        if self.calls.contains_key(&open.call) || self.ended.contains(&open.call) {
            return out.plan;
        }
        let planned: Vec<&str> = open.steps.iter().map(|s| s.step.key.as_str()).collect();
        let talks = talks_of(&open.decisions);
        let end = open.ended_at.unwrap_or(open.gap.from);
        for stored in &open.steps {
            let step = &stored.step;
            if step.kind != StepKind::Register || stored.given_up {
                continue;
            }
            let Some(prefix) = step.key.strip_suffix("/register") else {
                continue;
            };
            let registered = self.crm.registered(&step.params);
            let mut reg = self.registration_of(prefix, &registered, open);
            if planned.contains(&reg.finish_key().as_str()) {
                continue;
            }
            let n: usize = prefix.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let ctx = self.context_of(&registered);
            let gap = json!({"from": open.gap.from, "to": open.gap.to});
            match talks.get(&n) {
                Some(talk) => {
                    let since = talk.since.min(end);
                    let duration = end.secs_since(since);
                    let user = talk.user.or_else(|| self.default_user(&ctx)).unwrap_or(reg.user);
                    out.decide(
                        Rule::RecoveredFinish,
                        format!(
                            "the call ended while ringlink was not following the PBX; from {}: user {user} \
                             answered registration {n}, talk counted up to {}",
                            open.source.name(),
                            if open.ended_at.is_some() {
                                "its end"
                            } else {
                                "the gap's start (its least)"
                            }
                        ),
                        json!({"source": open.source, "registration": n, "user": user, "since": since,
                               "end": end, "ended_at_known": open.ended_at.is_some(), "gap": gap}),
                    );
                    reg.phase = Phase::Talking {
                        conversation: talk.conversation.clone(),
                        user: talk.user,
                        forwarded_unknown: talk.forwarded_unknown,
                        since,
                    };
                    self.finish_talk(&ctx, &mut reg, duration, &mut out);
                    if self.settings.raw.attach_records {
                        let own = open.recordings.iter().find(|(c, _)| *c == talk.conversation);
                        let whole = open.recordings.iter().find(|(c, _)| c.is_empty());
                        let only = (open.recordings.len() == 1).then(|| &open.recordings[0]);
                        if let Some((_, path)) = own.or(whole).or(only) {
                            Self::attach_record(&reg, n, path, &mut out);
                        }
                    }
                }
                None => {
                    let (status, what) = if ctx.direction == Direction::Incoming {
                        (
                            Outcome::Missed,
                            "missed (no missed-call task: the gap may have hidden an answer)",
                        )
                    } else {
                        (Outcome::Other, "with status OTHER (the outcome is unknown)")
                    };
                    out.decide(
                        Rule::RecoveredFinish,
                        format!(
                            "the call ended while ringlink was not following the PBX; from {}: nobody had \
                             answered registration {n} when the gap started, finished as {what}",
                            open.source.name()
                        ),
                        json!({"source": open.source, "registration": n, "answered": false, "gap": gap}),
                    );
                    self.finish_without_talk(&ctx, &mut reg, status, Value::Null, &mut out);
                }
            }
        }
        if !out.plan.steps.is_empty() {
            self.remember_ended(&open.call, open.gap.to);
        }
        out.plan
    }

    /// The registration as its register step planned it; the last user shown a card is the last rung.
    fn registration_of(&self, prefix: &str, registered: &Registered, open: &OpenCall) -> Registration {
        let user = registered.user.unwrap_or(0);
        let show_prefix = format!("{prefix}/show/");
        let last_rung = open
            .steps
            .iter()
            .filter(|s| s.step.key.starts_with(&show_prefix))
            .filter_map(|s| self.crm.card_user(&s.step.params))
            .next_back()
            .or(Some(user));
        Registration {
            prefix: prefix.to_owned(),
            user,
            fixed_user: None,
            phase: Phase::Ringing,
            cards: BTreeMap::new(),
            next_occurrence: BTreeMap::new(),
            last_rung,
            talker: None,
            known_call_id: None,
            record_planned: false,
            facts: registered.facts.clone(),
        }
    }

    /// The call as far as finishing needs it, from the register's params.
    fn context_of(&self, registered: &Registered) -> CallContext {
        let facts = &registered.facts;
        let line_number = facts.line.clone();
        let trunk_responsible = line_number.as_deref().and_then(|line| {
            self.settings
                .raw
                .trunks
                .iter()
                .find(|t| t.line_number.as_deref().unwrap_or(t.number.trim()) == line)
                .and_then(|t| t.responsible)
        });
        CallContext {
            direction: facts.direction,
            client: facts.client_phone.clone(),
            trunk: Number::default(),
            line_number,
            crm_source: registered.source.clone(),
            trunk_responsible,
            start_date: Some(facts.start.clone()).filter(|s| !s.is_empty()),
            caller_user: None,
            caller_extension: String::new(),
        }
    }
}

/// A user id in the journal: `5`, `"5"` or `[5]`.
fn user_in(value: Option<&Value>) -> Option<UserId> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Array(items) => user_in(items.first()),
        _ => None,
    }
}

/// Registration → who answered it and when, from the journaled `answer_takes_registration` decisions.
fn talks_of(decisions: &[Decision]) -> BTreeMap<usize, Talk> {
    let mut talks = BTreeMap::new();
    for d in decisions.iter().filter(|d| d.rule == Rule::AnswerTakesRegistration) {
        let Some(n) = d.data.get("registration").and_then(Value::as_u64) else {
            continue;
        };
        talks.insert(
            usize::try_from(n).unwrap_or(usize::MAX),
            Talk {
                user: user_in(d.data.get("user")),
                since: d.time,
                conversation: d
                    .data
                    .get("conversation")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                forwarded_unknown: d.data.get("forwarded_unknown").and_then(Value::as_bool) == Some(true),
            },
        );
    }
    talks
}
