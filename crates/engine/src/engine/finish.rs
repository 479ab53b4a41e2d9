//! Conversations and calls ending: finishes, missed calls, their responsible and task, recordings.

use std::sync::Arc;

use serde_json::{json, Value};
use tracker::{status, CallEvent, CallFull, Direction, Timestamp};

use super::format::*;
use super::state::*;
use super::Engine;
use crate::plan::{crm_bindings, first_of, user_value, Rule, StepKind, StepRef, Timing};
use crate::settings::ResponsibleMode;
use crate::users::UserId;

impl Engine {
    pub(super) fn on_conversation_ended(
        &self,
        state: &mut CallState,
        conversation: &str,
        talk_seconds: u64,
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
        let user_param = if *forwarded_unknown && reg.fixed_user.is_none() {
            // Answered on an outside phone that is no employee's: nobody known talked, so whoever answers for a
            // missed call answers for this one, but the call was answered (200), never a missed status.
            out.decide(
                Rule::ForwardedLeg,
                "answered on a forwarded outside phone that is no employee's: finished (200) for the missed-call \
                 responsible"
                    .into(),
                json!({"conversation": conversation}),
            );
            let (value, owner_step) = self.missed_responsible(ctx, reg, out);
            if owner_step {
                out.step(
                    format!("{}/owner", reg.prefix),
                    StepKind::LookupOwner,
                    json!({"PHONE_NUMBER": ctx.client}),
                    &[reg.register_key()],
                    Timing::Durable,
                );
            }
            value
        } else {
            let user = reg
                .fixed_user
                .or(*user)
                .or_else(|| self.default_user(ctx))
                .unwrap_or(reg.user);
            user_value(user)
        };
        let user = user_param.clone();
        let key = reg.finish_key();
        let mut params = json!({
            "CALL_ID": reg.call_id(),
            "USER_ID": user_param,
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
                Phase::Ringing => self.finish_unanswered(&ctx, reg, call_full, click_status.as_deref(), out),
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
        click_status: Option<&str>,
        out: &mut Out<'_>,
    ) {
        let incoming = ctx.direction == Direction::Incoming;
        let status_code = match click_status {
            Some(status) => status.to_owned(),
            None if incoming => "304".to_owned(),
            None => failure_status_code(call_full.result),
        };
        let (key, user_param) = self.finish_without_talk(ctx, reg, status_code, json!(call_full.result), out);
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
                self.missed_task(ctx, reg, user_param, &key, call_full, out);
            }
        }
    }

    /// Finishes a registration nobody talked on with `status_code` (`result`: the call's result, for the
    /// journal); an incoming call's finish names the missed-call responsible. Returns the finish key and its
    /// `USER_ID` value.
    pub(super) fn finish_without_talk(
        &self,
        ctx: &CallContext,
        reg: &mut Registration,
        status_code: String,
        result: Value,
        out: &mut Out<'_>,
    ) -> (String, Value) {
        let key = reg.finish_key();
        let register_key = reg.register_key();
        let (user_param, owner_step) = if ctx.direction == Direction::Incoming {
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
            json!({"status_code": status_code, "result": result, "step": key}),
        );
        reg.cards.clear();
        reg.phase = Phase::Finished;
        out.step(key.clone(), StepKind::Finish, params, &[], Timing::Durable);
        (key, user_param)
    }

    /// The missed-call responsible: a plain user id when the chain settles it now, else a `$first` over the
    /// entity owner (looked up after register) and the rest of the chain. The flag asks for the lookup step.
    pub(super) fn missed_responsible(&self, ctx: &CallContext, reg: &Registration, out: &mut Out<'_>) -> (Value, bool) {
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

    pub(super) fn missed_task(
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

    pub(super) fn attach_records(&self, state: &CallState, call_full: &CallFull, out: &mut Out<'_>) {
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
            Self::attach_record(reg, n, path, out);
        }
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
