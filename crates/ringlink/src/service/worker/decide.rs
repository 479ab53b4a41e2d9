//! Deciding a claimed step: whether it is still worth sending (cards are about now; registrations and finishes
//! are about the record), with which params (references to earlier steps' results resolved, the hooks'
//! customization applied, the register bound to its CRM entity).
//!
//! Everything a round's decisions look up in the outbox — the steps a hide depends on, the results referred to —
//! is read in one store read before the first decision ([`Known`]): one wait behind the pipeline's commits per
//! round instead of one per step. Nothing changes those steps while the round decides (their outcomes are
//! recorded at the end of a round), so the snapshot answers as the separate reads did.

use std::collections::HashMap;

use engine::{StepKind, Timing};
use serde_json::Value;
use store::{Step, StepState};

use super::{Worker, CARD_SHOWN};
use crate::service::crm_binding;
use crate::service::customize::{self, Customized};

/// What to do with a claimed step.
pub(super) enum Action {
    Send {
        method: String,
        params: Value,
        card_shown: Option<bool>,
        /// `process_final_params` answered `action: delete`: the call's CRM activity goes once finished.
        delete_activity: bool,
        /// The step earlier in the same `batch` whose result the params refer to.
        depends: Option<String>,
    },
    Record {
        call_id: String,
        path: String,
    },
    Drop(String),
    /// Not yet possible (a referenced result is missing); try again later.
    Wait(String),
    /// Not in this `batch`: goes on its own once the steps before it are done.
    Later(String),
    Fail(String),
}

/// The stored steps a round's decisions refer to, read once before the first: a hide's card and finish, the
/// steps whose results fill a request in. The read's error, if it failed: the steps that needed it wait.
pub(super) struct Known(Result<HashMap<String, Step>, String>);

/// The result of a done step without one.
const NO_RESULT: &Value = &Value::Null;

impl Known {
    /// The stored step with this idempotency key, if there is one.
    fn step(&self, key: &str) -> Result<Option<&Step>, String> {
        match &self.0 {
            Ok(steps) => Ok(steps.get(key)),
            Err(e) => Err(e.clone()),
        }
    }

    /// The result of a done step (`None` if it is unknown or not done).
    fn result(&self, key: &str) -> Option<&Value> {
        let step = self.0.as_ref().ok()?.get(key)?;
        (step.state == StepState::Done).then(|| step.result.as_ref().unwrap_or(NO_RESULT))
    }
}

/// The steps `step`'s decision looks up: those an undone card depends on, those its params refer to.
fn lookups(step: &Step) -> Vec<String> {
    let Ok(planned) = serde_json::from_value::<engine::Step>(step.payload.clone()) else {
        return Vec::new();
    };
    let mut keys = engine::references(&planned.params);
    if let Timing::UndoCard { shown_by, finish } = planned.timing {
        keys.extend([shown_by, finish]);
    }
    keys
}

/// Params with each plain reference to a step earlier in the same `batch` made a `$result[key][FIELD]`
/// reference the portal fills in; and the step referred to (the last one, when several are).
fn batch_references(params: &Value, in_batch: &HashMap<String, String>) -> (Value, Option<String>) {
    fn walk(v: &Value, in_batch: &HashMap<String, String>, depends: &mut Option<String>) -> Value {
        match v {
            Value::Object(map) if map.len() == 1 && map.contains_key("$ref") => {
                let target = &map["$ref"];
                let step = target.get("step").and_then(Value::as_str);
                let field = target.get("field").and_then(Value::as_str);
                match (step.and_then(|s| in_batch.get(s).map(|k| (s, k))), field) {
                    (Some((step, key)), Some(field)) => {
                        *depends = Some(step.to_owned());
                        let path: Vec<&str> = field.split('.').filter(|p| !p.is_empty()).collect();
                        Value::String(bitrix24::Batch::reference(key, &path))
                    }
                    _ => v.clone(),
                }
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, item)| (k.clone(), walk(item, in_batch, depends)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|item| walk(item, in_batch, depends)).collect()),
            other => other.clone(),
        }
    }
    let mut depends = None;
    let out = walk(params, in_batch, &mut depends);
    (out, depends)
}

impl Worker {
    /// Reads, in one store read, the steps the decisions about `steps` look up.
    pub(super) async fn known<'a>(&self, steps: impl IntoIterator<Item = &'a Step>) -> Known {
        let mut keys: Vec<String> = steps.into_iter().flat_map(lookups).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Known(Ok(HashMap::new()));
        }
        match self.read(move |s| s.steps_by_keys(&keys)).await {
            Ok(found) => Known(Ok(found
                .into_iter()
                .map(|step| (step.idempotency_key.clone(), step))
                .collect())),
            Err(e) => Known(Err(format!("store: {e}"))),
        }
    }

    /// Applies the step's timing rule and resolves its references (from `known`, read for the round).
    /// `in_batch`: steps going earlier in the same `batch` (idempotency key → command key); references to
    /// them become `$result[…]` references the portal fills in.
    pub(super) async fn decide(&self, step: &Step, in_batch: &HashMap<String, String>, known: &Known) -> Action {
        let planned: engine::Step = match serde_json::from_value(step.payload.clone()) {
            Ok(p) => p,
            Err(e) => return Action::Fail(format!("unreadable step payload: {e}")),
        };
        let mut params = planned.params.clone();
        let mut card_shown = None;
        match &planned.timing {
            Timing::Durable => {}
            Timing::WhileRinging { conversation } => {
                if !self.shared.engine().is_ringing(&planned.call, conversation) {
                    return Action::Drop("the phone stopped ringing before the card could be shown".into());
                }
            }
            Timing::DurableCardWhileRinging { conversation } => {
                // Offline recovery (the leg no longer rings): register without a card, keeping the original
                // start time; applied after the hooks, so that a resend decides it anew.
                card_shown = Some(self.shared.engine().is_ringing(&planned.call, conversation));
            }
            Timing::UndoCard { shown_by, finish } => {
                let (shown, finish_state) = match (known.step(shown_by), known.step(finish)) {
                    (Ok(shown), Ok(finish)) => (shown, finish),
                    (Err(e), _) | (_, Err(e)) => return Action::Wait(e),
                };
                let card_was_shown = shown.is_some_and(|s| {
                    s.state == StepState::Done
                        && s.result.as_ref().and_then(|r| r.get(CARD_SHOWN)) != Some(&Value::Bool(false))
                });
                if !card_was_shown {
                    return Action::Drop("the card was never shown".into());
                }
                if finish_state.is_some_and(|f| f.state == StepState::Done) {
                    return Action::Drop("finish already took the card away".into());
                }
            }
        }
        let mut depends = None;
        if !in_batch.is_empty() {
            (params, depends) = batch_references(&params, in_batch);
            if engine::references(&params).iter().any(|key| in_batch.contains_key(key)) {
                return Action::Later("needs a result that cannot be referred to inside a batch".into());
            }
        }
        if !engine::references(&params).is_empty() {
            if let Err(e) = &known.0 {
                return Action::Wait(e.clone());
            }
            params = match engine::resolve(&params, |key| known.result(key)) {
                Ok(p) => p,
                // An earlier step this one needs ended without a result: it can never be sent. When that step
                // was left out on purpose (a customization cancelled it), so is this one.
                Err(e) => {
                    return match dropped_dependency(&planned.params, known) {
                        Some(reason) => Action::Drop(reason),
                        None => Action::Fail(format!("cannot complete the request: {e}")),
                    }
                }
            };
        }
        let mut record_path = planned.record_path.clone();
        let mut delete_activity = false;
        let mut search_filter = None;
        match customize::customize(&self.shared, &self.shared.hooks, &step.payload, &planned, &params).await {
            Ok(Customized::Unchanged) => {}
            Ok(Customized::Cancelled(reason)) => return Action::Drop(reason),
            Ok(Customized::Params {
                params: customized,
                action,
                record_path: path,
                filter,
            }) => {
                params = customized;
                record_path = path.or(record_path);
                delete_activity = planned.kind == StepKind::Finish && action.as_deref() == Some("delete");
                search_filter = filter;
            }
            Err(e) => return Action::Wait(format!("store: {e}")),
        }
        if planned.kind == StepKind::Register {
            let bound = crm_binding::bind(
                &self.shared,
                &self.client,
                &planned,
                &step.payload,
                &mut params,
                search_filter,
            );
            if let Err(e) = bound.await {
                return Action::Wait(format!("CRM search: {e}"));
            }
        }
        if card_shown == Some(false) {
            params = engine::without_card(&params);
        }
        if planned.kind == StepKind::AttachRecord {
            let call_id = params
                .get("CALL_ID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let Some(path) = record_path else {
                return Action::Fail("no recording path".into());
            };
            return Action::Record { call_id, path };
        }
        Action::Send {
            method: planned.method.clone(),
            params,
            card_shown,
            delete_activity,
            depends,
        }
    }
}

/// Why a step `params` refer to was not sent, when it was dropped (not failed).
fn dropped_dependency(params: &Value, known: &Known) -> Option<String> {
    engine::references(params)
        .iter()
        .filter_map(|key| known.step(key).ok().flatten())
        .find(|s| s.state == StepState::Dropped)
        .map(|s| {
            format!(
                "{} {} was not sent ({})",
                s.kind,
                s.idempotency_key,
                s.last_error.clone().unwrap_or_default()
            )
        })
}
