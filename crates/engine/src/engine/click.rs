//! Click-to-call calls: registered by Bitrix24 on the click (amoCRM: under ringlink's id of the click), followed
//! here under that `CALL_ID`.

use std::collections::BTreeMap;
use std::sync::Arc;

use numbers::Number;
use serde_json::json;
use tracker::{CallFull, Direction, Timestamp};

use super::format::*;
use super::state::*;
use super::Engine;
use crate::click::{click_call_key, ClickRefusal, ClickToCall};
use crate::intent::{CallFacts, CallRecord, Crm, FinishCall, Intent, Outcome, Responsible};
use crate::plan::{Plan, Rule, Timing};

impl Engine {
    /// Announces a click-to-call before it is dialled: the call with key [`click_call_key`] of its `CALL_ID` is
    /// then registration 0 of that `CALL_ID` (no register), its user the employee who clicked. Returns the key.
    /// Call it again after a restart for clicks whose calls may still be live.
    pub fn expect_click_to_call(&mut self, click: ClickToCall) -> String {
        let key = click_call_key(&click.call_id);
        self.clicks.insert(key.clone(), click);
        key
    }

    /// Forgets an announced click (its call ended long ago).
    pub fn forget_click_to_call(&mut self, key: &str) {
        self.clicks.remove(key);
    }

    /// A click that will not ring anybody (unknown employee, phone offline, the employee did not pick up):
    /// `finish` on its `CALL_ID` now, with the refusal's status and reason. Nothing if the call is already
    /// finished (its end was seen first).
    pub fn click_refused(&mut self, click: &ClickToCall, refusal: &ClickRefusal, now: Timestamp) -> Plan {
        let key = click_call_key(&click.call_id);
        let mut out = Out {
            call: &key,
            time: now,
            plan: Plan::default(),
            crm: self.crm.clone(),
        };
        let finished = self.ended.contains(&key)
            || self.calls.get(&key).is_some_and(|s| {
                s.registrations
                    .first()
                    .is_some_and(|r| matches!(r.phase, Phase::Finished) || matches!(r.phase, Phase::Talking { .. }))
            });
        if finished {
            return out.plan;
        }
        self.calls.remove(&key);
        self.clicks.remove(&key);
        let status = refusal.status_code();
        let finish_key = format!("{key}/0/finish");
        out.decide(
            Rule::ClickRefused,
            format!(
                "click-to-call {} for user {}: {refusal}; finished at once with status {status}",
                click.call_id, click.user_id
            ),
            json!({"call_id": click.call_id, "user": click.user_id, "status_code": status, "step": finish_key}),
        );
        let finish = Intent::Finish(FinishCall {
            call: CallRecord::Known(click.call_id.clone()),
            facts: click_facts(click, bitrix_time(now, self.settings.offset)),
            responsible: Responsible::User(click.user_id),
            duration: 0,
            outcome: refusal.outcome(),
            failed_reason: Some(refusal.to_string()),
            add_to_chat: self.settings.raw.add_to_chat,
        });
        out.intent(finish_key, &finish, &[], Timing::Durable);
        self.remember_ended(&key, now);
        out.plan
    }

    /// The state of a call seen for the first time; a click-to-call is admitted at once with its request.
    pub(super) fn new_call_state(&self, key: &str, call_full: Option<&CallFull>, out: &mut Out<'_>) -> CallState {
        let mut state = CallState {
            settings: self.settings.clone(),
            admission: Admission::Undecided,
            legs: BTreeMap::new(),
            registrations: Vec::new(),
            recordings: Vec::new(),
            click: None,
            click_dialing: false,
        };
        if let Some(click) = self.clicks.get(key) {
            let trunk = call_full.map(|c| c.channel.trunk.clone()).unwrap_or_default();
            let ctx = CallContext {
                direction: Direction::Outgoing,
                client: click.phone_number.clone(),
                line_number: click.line_number.clone(),
                crm_source: None,
                trunk_responsible: None,
                start_date: None,
                caller_user: None,
                caller_extension: String::new(),
                trunk: if trunk.original.is_empty() {
                    Number {
                        original: click.line_number.clone().unwrap_or_default(),
                        ..Number::default()
                    }
                } else {
                    trunk
                },
            };
            let registered = match self.crm.as_ref() {
                Crm::Bitrix24 => "registered by Bitrix24",
                Crm::AmoCrm(_) => "recorded in amoCRM as an outgoing call when it ends",
            };
            out.decide(
                Rule::ClickToCall,
                format!(
                    "click-to-call of user {} to {}: followed under CALL_ID {} {registered}",
                    click.user_id, click.phone_number, click.call_id
                ),
                json!({"call_id": click.call_id, "user": click.user_id, "phone": click.phone_number}),
            );
            state.admission = Admission::Register(Arc::new(ctx));
            state.click = Some(click.clone());
        }
        state
    }

    /// Registration 0 of a click-to-call: Bitrix24's `CALL_ID`, no register step and no card (Bitrix24 shows
    /// its own card to the employee who clicked). `None` for any other registration.
    pub(super) fn click_registration(&self, state: &mut CallState, out: &mut Out<'_>) -> Option<usize> {
        let click = state.click.as_ref()?;
        if !state.registrations.is_empty() {
            return None;
        }
        let reg = Registration {
            prefix: format!("{}/0", out.call),
            user: click.user_id,
            fixed_user: Some(click.user_id),
            phase: Phase::Ringing,
            cards: BTreeMap::new(),
            next_occurrence: BTreeMap::new(),
            last_rung: None,
            talker: None,
            known_call_id: Some(click.call_id.clone()),
            record_planned: false,
            facts: click_facts(click, bitrix_time(out.time, self.settings.offset)),
        };
        state.registrations.push(reg);
        Some(0)
    }

    /// `STATUS_CODE` of a click-to-call nobody talked on: the employee did not pick up → 304; else what
    /// happened to the client's leg (busy 486, no answer 304, the employee gave up while it rang 603-S).
    pub(super) fn click_failure_status(state: &CallState, call_full: &CallFull) -> Outcome {
        if state.click_dialing {
            Outcome::of_failed_result(call_full.result)
        } else {
            Outcome::Missed
        }
    }
}

/// The call a click-to-call placed (the CRM registered it on the click).
fn click_facts(click: &ClickToCall, start: String) -> CallFacts {
    CallFacts {
        client_phone: click.phone_number.clone(),
        direction: Direction::Outgoing,
        external_id: click.call_id.clone(),
        start,
        create_entity: false,
        line: click.line_number.clone(),
    }
}
