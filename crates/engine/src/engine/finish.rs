//! Conversations and calls ending: finishes, missed calls, their responsible and task, recordings.

use std::sync::Arc;

use serde_json::{json, Value};
use tracker::{status, CallEvent, CallFull, Direction, Timestamp};

use super::format::*;
use super::state::*;
use super::Engine;
use crate::bitrix24::status_code;
use crate::intent::{FinishCall, Intent, MissedTask, Outcome, Responsible};
use crate::plan::{Rule, Timing};
use crate::settings::ResponsibleMode;
use crate::users::UserId;

impl Engine {
    pub(super) fn on_conversation_ended(
        &self,
        state: &mut CallState,
        conversation: &str,
        talk_seconds: u64,
        hung_up: bool,
        out: &mut Out<'_>,
    ) {
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
            // Planned with the finish when the recording is already known and complete soon (the talker's own,
            // or the whole call's once the talker hung up and no other leg goes on), so that both go in one
            // request once MixMonitor has closed the file; otherwise at the call's end.
            let call_goes_on = !hung_up || state.legs.iter().any(|(c, l)| c != conversation && !l.ended);
            if self.settings.raw.attach_records {
                self.attach_record_of(state, index, Recorded::AsTalkEnds { call_goes_on }, out);
            }
        }
    }

    pub(super) fn finish_talk(&self, ctx: &CallContext, reg: &mut Registration, duration: u64, out: &mut Out<'_>) {
        let Phase::Talking {
            conversation,
            user,
            forwarded_unknown,
            ..
        } = &reg.phase
        else {
            return;
        };
        let conversation = conversation.clone();
        let responsible = if *forwarded_unknown && reg.fixed_user.is_none() {
            // Answered on an outside phone that is no employee's: nobody known talked, so whoever answers for a
            // missed call answers for this one, but the call was answered (200), never a missed status.
            out.decide(
                Rule::ForwardedLeg,
                "answered on a forwarded outside phone that is no employee's: finished (200) for the missed-call \
                 responsible"
                    .into(),
                json!({"conversation": conversation}),
            );
            self.missed_responsible(ctx, reg, out)
        } else {
            let user = reg
                .fixed_user
                .or(*user)
                .or_else(|| self.default_user(ctx))
                .unwrap_or(reg.user);
            Responsible::User(user)
        };
        let key = reg.finish_key();
        out.decide(
            Rule::FinishTalk,
            format!("conversation ended: finish for {responsible}, {duration} s talked"),
            json!({"user": responsible.journal(), "duration": duration, "step": key}),
        );
        let finish = Intent::Finish(FinishCall {
            call: reg.record(),
            facts: reg.facts.clone(),
            responsible,
            duration,
            outcome: Outcome::Talked,
            failed_reason: None,
            add_to_chat: self.settings.raw.add_to_chat,
        });
        reg.talker = Some(conversation.clone());
        reg.cards.clear();
        reg.phase = Phase::Finished;
        out.intent(key, &finish, &[], Timing::Durable);
    }

    pub(super) fn on_call_ended(
        &self,
        state: &mut CallState,
        call_full: &CallFull,
        event: &CallEvent,
        out: &mut Out<'_>,
    ) {
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
        // A click-to-call always ends with a finish of its CALL_ID, even if no employee leg was seen.
        let _ = self.click_registration(state, out);
        let click_status = state
            .click
            .is_some()
            .then(|| Self::click_failure_status(state, call_full));
        for reg in &mut state.registrations {
            match &reg.phase {
                Phase::Finished => {}
                Phase::Talking { since, .. } => {
                    let duration = out.time.secs_since(*since);
                    self.finish_talk(&ctx, reg, duration, out);
                }
                Phase::Ringing => self.finish_unanswered(&ctx, reg, call_full, click_status, out),
            }
        }
        if self.settings.raw.attach_records {
            self.attach_records(state, call_full, out);
        }
    }

    /// Registers (without a card) an incoming call that nobody with a Bitrix24 user was rung for; it is then
    /// finished as missed with the other registrations.
    pub(super) fn register_unrung(
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

    pub(super) fn finish_unanswered(
        &self,
        ctx: &CallContext,
        reg: &mut Registration,
        call_full: &CallFull,
        click_status: Option<Outcome>,
        out: &mut Out<'_>,
    ) {
        let incoming = ctx.direction == Direction::Incoming;
        let outcome = match click_status {
            Some(outcome) => outcome,
            None if incoming => Outcome::Missed,
            None => Outcome::of_failed_result(call_full.result),
        };
        let (key, responsible) = self.finish_without_talk(ctx, reg, outcome, json!(call_full.result), out);
        let task = &self.settings.raw.missed.task;
        if incoming && task.enabled {
            if call_full.result == status::TALKED {
                // A transfer or a second ring round nobody took: this employee missed it, the client did not.
                out.decide(
                    Rule::MissedTask,
                    "no missed-call task: the client talked with an employee on this call".into(),
                    json!({"finish": key}),
                );
            } else {
                self.missed_task(ctx, reg, responsible, &key, call_full, out);
            }
        }
    }

    /// Finishes a registration nobody talked on with `outcome` (`result`: the call's result, for the journal);
    /// an incoming call's finish names the missed-call responsible. Returns the finish key and that
    /// responsible.
    pub(super) fn finish_without_talk(
        &self,
        ctx: &CallContext,
        reg: &mut Registration,
        outcome: Outcome,
        result: Value,
        out: &mut Out<'_>,
    ) -> (String, Responsible) {
        let key = reg.finish_key();
        let responsible = if ctx.direction == Direction::Incoming {
            self.missed_responsible(ctx, reg, out)
        } else {
            Responsible::User(reg.fixed_user.unwrap_or(reg.user))
        };
        let status_code = status_code(outcome);
        out.decide(
            Rule::FinishUnanswered,
            format!("nobody answered: finish with status {status_code}"),
            json!({"status_code": status_code, "result": result, "step": key}),
        );
        let finish = Intent::Finish(FinishCall {
            call: reg.record(),
            facts: reg.facts.clone(),
            responsible: responsible.clone(),
            duration: 0,
            outcome,
            failed_reason: None,
            add_to_chat: self.settings.raw.add_to_chat,
        });
        reg.cards.clear();
        reg.phase = Phase::Finished;
        out.intent(key.clone(), &finish, &[], Timing::Durable);
        (key, responsible)
    }

    /// The missed-call responsible: a user when the chain settles it now, else the client's entity owner (looked
    /// up after register: the lookup step is planned here) and the rest of the chain.
    pub(super) fn missed_responsible(&self, ctx: &CallContext, reg: &Registration, out: &mut Out<'_>) -> Responsible {
        let mut owner_first = false;
        let mut tried: Vec<Value> = Vec::new();
        let mut settled: Option<UserId> = None;
        for mode in &self.settings.raw.missed.responsible {
            match mode {
                ResponsibleMode::EntityOwner => {
                    owner_first = true;
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
        let reason = if owner_first {
            format!("missed call: responsible = the client's entity owner if it existed before the call, else {reason_tail}")
        } else {
            format!("missed call: responsible = {reason_tail}")
        };
        out.decide(
            Rule::MissedResponsible,
            reason,
            json!({"chain": tried, "fallback": last}),
        );
        if !owner_first {
            return Responsible::User(last);
        }
        let lookup = format!("{}/owner", reg.prefix);
        let register = reg.register_key();
        out.intent(
            lookup.clone(),
            &Intent::FindOwner {
                client_phone: ctx.client.clone(),
            },
            std::slice::from_ref(&register),
            Timing::Durable,
        );
        Responsible::OwnerElse {
            lookup,
            register,
            then: last,
        }
    }

    pub(super) fn missed_task(
        &self,
        ctx: &CallContext,
        reg: &Registration,
        responsible: Responsible,
        finish_key: &str,
        call_full: &CallFull,
        out: &mut Out<'_>,
    ) {
        let task = &self.settings.raw.missed.task;
        let line = ctx.line_number.as_deref().unwrap_or("");
        let time = call_full.channel.start_time.as_str();
        let mut deadline = None;
        if task.deadline_minutes > 0 {
            let at = Timestamp::from_micros(
                out.time.as_micros().saturating_add(
                    i64::try_from(task.deadline_minutes)
                        .unwrap_or(i64::MAX / 60_000_000)
                        .saturating_mul(60_000_000),
                ),
            );
            deadline = Some(bitrix_time(at, self.settings.offset));
        }
        let intent = Intent::MissedTask(MissedTask {
            title: fill_template(&task.title, &ctx.client, line, time),
            description: fill_template(&task.description, &ctx.client, line, time),
            responsible,
            register: reg.register_key(),
            finish: finish_key.to_owned(),
            time: bitrix_time(out.time, self.settings.offset),
            deadline,
            created_by: task.created_by,
        });
        let key = format!("{}/task", reg.prefix);
        out.decide(
            Rule::MissedTask,
            "missed incoming call: task for its responsible (missed.task.enabled)".into(),
            json!({"step": key}),
        );
        out.intent(key, &intent, &[finish_key.to_owned()], Timing::Durable);
    }

    pub(super) fn attach_records(&self, state: &mut CallState, call_full: &CallFull, out: &mut Out<'_>) {
        for index in 0..state.registrations.len() {
            self.attach_record_of(state, index, Recorded::AtCallEnd(call_full), out);
        }
    }

    /// Plans the recording of registration `index` once it has talked: the talker's own recording, else one of
    /// the whole call (or `call_full`'s, at the call's end). Once per registration.
    fn attach_record_of(&self, state: &mut CallState, index: usize, when: Recorded<'_>, out: &mut Out<'_>) {
        let reg = &state.registrations[index];
        let Some(talker) = &reg.talker else {
            return;
        };
        if reg.record_planned {
            return;
        }
        let whole_call = match when {
            Recorded::AsTalkEnds { call_goes_on: true } => None,
            _ => state
                .recordings
                .iter()
                .find(|(conv, _)| conv.is_empty() || !state.legs.contains_key(conv))
                .map(|(_, path)| path.as_str()),
        };
        let whole_call = match when {
            Recorded::AtCallEnd(call_full) => {
                whole_call.or_else(|| Some(call_full.record.as_str()).filter(|p| !p.trim().is_empty()))
            }
            Recorded::AsTalkEnds { .. } => whole_call,
        };
        let own = state
            .recordings
            .iter()
            .find(|(conv, _)| conv == talker)
            .map(|(_, path)| path.as_str());
        let Some(path) = own.or(whole_call).map(str::to_owned) else {
            return;
        };
        Self::attach_record(reg, index, &path, out);
        state.registrations[index].record_planned = true;
    }

    /// Plans the upload of `path` as the recording of registration `n`, after its finish.
    pub(super) fn attach_record(reg: &Registration, n: usize, path: &str, out: &mut Out<'_>) {
        let filename = path.rsplit('/').next().unwrap_or(path).to_owned();
        let key = format!("{}/record", reg.prefix);
        out.decide(
            Rule::AttachRecord,
            format!("recording {path} attached to registration {n}"),
            json!({"path": path, "registration": n, "step": key}),
        );
        out.intent(
            key,
            &Intent::AttachRecording {
                call: reg.record(),
                filename,
            },
            &[reg.finish_key()],
            Timing::Durable,
        );
        if let Some(step) = out.plan.steps.last_mut() {
            step.record_path = Some(path.to_owned());
        }
    }
}

/// When a registration's recording is planned.
#[derive(Clone, Copy)]
enum Recorded<'a> {
    /// As its talk ends: a recording of the whole call only if the call does not go on (the file would grow).
    AsTalkEnds { call_goes_on: bool },
    /// At the call's end, with what the tracker knows of it.
    AtCallEnd(&'a CallFull),
}
