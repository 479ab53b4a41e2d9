//! What the engine hands to the worker: steps to send, and the decisions behind them.
//!
//! A step's params are Bitrix24 params, except where a value is only known once an earlier step has been
//! answered (the registration's `CALL_ID`, the bound CRM entity). There the params hold a reference, written
//! in JSON so that a step can be stored as it is planned:
//!
//! - `{"$ref": {"step": "<idempotency key>", "field": "CALL_ID"}}` — a field of that step's result; `field` is
//!   a dotted path (`0.ASSIGNED_BY_ID` = field `ASSIGNED_BY_ID` of the first item).
//! - `{"$first": [candidate, …]}` — the first candidate that has a value. A candidate is a plain value or a
//!   `$ref`; a `$ref` candidate may carry `"unless": {"step": …, "field": …}` and is skipped when that field is
//!   present and not empty.
//! - `{"$crm_bindings": {"step": "<register key>"}}` — `["L_12"]` / `["C_7"]` / `["CO_5"]` from the
//!   registration's `CRM_ENTITY_TYPE` and `CRM_ENTITY_ID`; `[]` when the call is bound to nothing.
//!
//! [`resolve`] turns such params into plain ones right before sending.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracker::Timestamp;

use crate::users::UserId;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `telephony.externalcall.register`.
    Register,
    /// `telephony.externalcall.show`.
    Show,
    /// `telephony.externalcall.hide`.
    Hide,
    /// `telephony.externalCall.searchCrmEntities`: the owner of the client's CRM entity, for a missed call.
    LookupOwner,
    /// `telephony.externalcall.finish`.
    Finish,
    /// `telephony.externalCall.attachRecord`: the worker uploads the file at [`Step::record_path`].
    AttachRecord,
    /// `tasks.task.add`: the missed-call task.
    AddTask,
}

impl StepKind {
    /// The Bitrix24 method.
    pub fn method(self) -> &'static str {
        match self {
            StepKind::Register => "telephony.externalcall.register",
            StepKind::Show => "telephony.externalcall.show",
            StepKind::Hide => "telephony.externalcall.hide",
            StepKind::LookupOwner => "telephony.externalCall.searchCrmEntities",
            StepKind::Finish => "telephony.externalcall.finish",
            StepKind::AttachRecord => "telephony.externalCall.attachRecord",
            StepKind::AddTask => "tasks.task.add",
        }
    }

    /// The stored name of the kind (`register`, `show`, …).
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Register => "register",
            StepKind::Show => "show",
            StepKind::Hide => "hide",
            StepKind::LookupOwner => "lookup_owner",
            StepKind::Finish => "finish",
            StepKind::AttachRecord => "attach_record",
            StepKind::AddTask => "add_task",
        }
    }
}

/// When a step may still be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timing {
    /// About the record: never dropped, only delayed.
    Durable,
    /// A register that pops the card up (`SHOW=1`) for the leg `conversation`. Never dropped; if it is sent
    /// after that leg stopped ringing, send it through [`without_card`] instead (no card, original start date).
    DurableCardWhileRinging { conversation: String },
    /// A show: drop it if the leg `conversation` no longer rings when it comes due
    /// (see [`crate::Engine::is_ringing`]).
    WhileRinging { conversation: String },
    /// A hide: drop it if the card it takes away (`shown_by`, a show or register key) was never shown, or if
    /// `finish` (which hides every card of the call) has already been sent.
    UndoCard { shown_by: String, finish: String },
}

/// One CRM request to make, in plan order (steps of one call are sent in the order planned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The call key (linkedid).
    pub call: String,
    /// Deterministic from the call: `<linkedid>/<n>/register`, `/show/<user>/<k>`, `/hide/<user>/<k>`,
    /// `/owner`, `/finish`, `/record`, `/task`, where `n` numbers the registrations of the call and `k` the
    /// cards shown to one user within a registration.
    pub key: String,
    pub kind: StepKind,
    /// The Bitrix24 method name.
    pub method: String,
    /// Bitrix24 params, possibly with references (see the module docs).
    pub params: Value,
    /// Keys of steps that must be done before this one (everything it refers to, and ordering needs such as
    /// attaching a record only after finish).
    pub after: Vec<String>,
    pub timing: Timing,
    /// For [`StepKind::AttachRecord`]: the recording's path on the PBX host.
    pub record_path: Option<String>,
}

/// A call-journal entry: a decision and why it was taken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub call: String,
    /// The instant of the event that led to it.
    pub time: Timestamp,
    /// Which setting or rule decided.
    pub rule: Rule,
    /// Human-readable reason, for the admin UI.
    pub reason: String,
    /// Structured details (user ids, extensions, step keys, setting values).
    pub data: Value,
}

/// The setting or rule behind a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `register_local_calls`.
    LocalCalls,
    /// The call's direction could not be told, so it is not registered.
    UnknownDirection,
    BlackListTrunk,
    WhiteListTrunk,
    BlackListExtension,
    WhiteListExtension,
    /// The `need_registration` hook.
    NeedRegistrationHook,
    /// The first employee leg of a conversation registers it.
    FirstLegRegisters,
    /// An employee whose phone rings while the call is registered gets the card.
    ShowRingingLeg,
    /// `show_card = false`.
    ShowCardSetting,
    /// A leg stopped ringing: its card goes away.
    HideStoppedLeg,
    /// An employee answered: the registration is theirs, the other cards go away.
    AnswerTakesRegistration,
    /// An employee took the client over after another talked (transfer, pickup, park retrieval): new registration.
    TakeoverRegisters,
    /// A conversation ended: its registration is finished with its talk time.
    FinishTalk,
    /// The call ended with a registration nobody talked on.
    FinishUnanswered,
    /// Who answers for a missed call.
    MissedResponsible,
    /// An incoming call that ended before any phone rang.
    IvrAbandoned,
    AttachRecord,
    MissedTask,
    /// An extension without a Bitrix24 user.
    UnknownUser,
    /// An incoming call forwarded out through a trunk (follow-me, a mobile): whose phone it rang.
    ForwardedLeg,
    /// No user could be found to register the call for.
    NoResponsible,
    /// An event about a call that already ended.
    LateEvent,
    /// A registration left open by a gap in following the PBX, finished from what is known of it.
    RecoveredFinish,
    /// A call that began and ended while ringlink did not follow the PBX, rebuilt from the PBX's CEL.
    RebuiltFromCel,
    /// An admin asked for the call to be processed again (the admin UI): planned again from the PBX's CEL or
    /// the journal, only the steps the outbox lacks are added.
    Reprocessed,
    /// The users directory was never loaded: the call's decisions wait for it.
    DirectoryUnknown,
    /// A click-to-call: the call Bitrix24 registered on the click is followed (no second register).
    ClickToCall,
    /// A click-to-call that could not be dialled, or whose employee never picked up: finished at once.
    ClickRefused,
    /// Auto-distribution: whose phone a client's incoming call rings first.
    AutoDistribution,
    /// The CRM has no request for what the engine decided (amoCRM cannot take a popup back).
    NotInCrm,
}

/// Output of [`crate::Engine::handle`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub journal: Vec<Decision>,
    /// Set when the event needs a user the directory does not know. The engine has not taken the event in:
    /// refresh the directory, then feed the same event again.
    pub refresh_users: Option<RefreshUsers>,
}

/// A request to refresh the users directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshUsers {
    /// The extensions nobody in the directory has.
    pub extensions: Vec<String>,
    /// The directory was never loaded, so "nobody has them" means nothing yet: do not plan the event without
    /// the directory (hold it, and every later event of its call, until a refresh succeeds).
    pub hold: bool,
}

/// A reference to a field of an earlier step's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub step: String,
    pub field: String,
}

impl StepRef {
    pub fn new(step: impl Into<String>, field: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            field: field.into(),
        }
    }

    /// The JSON form placed in params.
    pub fn to_json(&self) -> Value {
        json!({"$ref": {"step": self.step, "field": self.field}})
    }

    /// The JSON form of a `$first` candidate that is skipped when `unless` has a value.
    pub fn to_json_unless(&self, unless: &StepRef) -> Value {
        json!({"$ref": {"step": self.step, "field": self.field}, "unless": {"step": unless.step, "field": unless.field}})
    }
}

/// A value that is the first available of several candidates (plain values or `$ref` candidates).
pub fn first_of(candidates: Vec<Value>) -> Value {
    json!({ "$first": candidates })
}

/// The `$crm_bindings` form for the registration `register_key`.
pub fn crm_bindings(register_key: &str) -> Value {
    json!({"$crm_bindings": {"step": register_key}})
}

/// A user id as params carry it.
pub(crate) fn user_value(user: UserId) -> Value {
    Value::from(user)
}

/// Why params could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("step {step} has no result yet")]
    MissingResult { step: String },
    #[error("the result of step {step} has no field {field}")]
    MissingField { step: String, field: String },
    #[error("no candidate of a $first has a value")]
    NoCandidate,
    #[error("malformed reference: {0}")]
    Malformed(String),
}

/// Follows a dotted path (`CALL_ID`, `0.ASSIGNED_BY_ID`) into a result.
fn field_of<'a>(result: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = result;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        at = match at {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

fn has_value(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(b) => *b,
        Value::Number(_) => true,
    }
}

fn parse_ref(v: &Value) -> Result<StepRef, ResolveError> {
    let step = v.get("step").and_then(Value::as_str);
    let field = v.get("field").and_then(Value::as_str);
    match (step, field) {
        (Some(step), Some(field)) => Ok(StepRef::new(step, field)),
        _ => Err(ResolveError::Malformed(v.to_string())),
    }
}

fn lookup_ref<'a, F>(r: &StepRef, results: &F) -> Result<Value, ResolveError>
where
    F: Fn(&str) -> Option<&'a Value>,
{
    let result = results(&r.step).ok_or_else(|| ResolveError::MissingResult { step: r.step.clone() })?;
    field_of(result, &r.field)
        .filter(|v| !v.is_null())
        .cloned()
        .ok_or_else(|| ResolveError::MissingField {
            step: r.step.clone(),
            field: r.field.clone(),
        })
}

/// The Bitrix24 `UF_CRM_TASK` prefix of an entity type (`api-reference/crm/data-types.md#object_type`).
fn entity_prefix(entity_type: &str) -> Option<&'static str> {
    match entity_type.to_ascii_uppercase().as_str() {
        "LEAD" => Some("L"),
        "CONTACT" => Some("C"),
        "COMPANY" => Some("CO"),
        "DEAL" => Some("D"),
        _ => None,
    }
}

/// Replaces every reference in `params` by the value it names; `results(key)` gives the result of a step that
/// is done. Plain values pass through unchanged.
pub fn resolve<'a, F>(params: &Value, results: F) -> Result<Value, ResolveError>
where
    F: Fn(&str) -> Option<&'a Value>,
{
    resolve_value(params, &results)
}

fn resolve_value<'a, F>(v: &Value, results: &F) -> Result<Value, ResolveError>
where
    F: Fn(&str) -> Option<&'a Value>,
{
    match v {
        Value::Object(map) if map.len() == 1 && map.contains_key("$ref") => {
            lookup_ref(&parse_ref(&map["$ref"])?, results)
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("$first") => {
            let Value::Array(candidates) = &map["$first"] else {
                return Err(ResolveError::Malformed(v.to_string()));
            };
            for candidate in candidates {
                if let Some(target) = candidate.as_object().and_then(|c| c.get("$ref")) {
                    let target = parse_ref(target)?;
                    if let Some(unless) = candidate.get("unless") {
                        let unless = parse_ref(unless)?;
                        let present = results(&unless.step)
                            .and_then(|r| field_of(r, &unless.field))
                            .is_some_and(has_value);
                        if present {
                            continue;
                        }
                    }
                    match lookup_ref(&target, results) {
                        Ok(value) if has_value(&value) => return Ok(value),
                        _ => continue,
                    }
                } else if has_value(candidate) {
                    return Ok(candidate.clone());
                }
            }
            Err(ResolveError::NoCandidate)
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("$crm_bindings") => {
            let step = map["$crm_bindings"]
                .get("step")
                .and_then(Value::as_str)
                .ok_or_else(|| ResolveError::Malformed(v.to_string()))?;
            let result = results(step).ok_or_else(|| ResolveError::MissingResult { step: step.to_owned() })?;
            let entity_type = field_of(result, "CRM_ENTITY_TYPE").and_then(Value::as_str);
            let entity_id = field_of(result, "CRM_ENTITY_ID").and_then(|id| match id {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            });
            let binding = entity_type
                .and_then(entity_prefix)
                .zip(entity_id)
                .map(|(prefix, id)| Value::String(format!("{prefix}_{id}")));
            Ok(Value::Array(binding.into_iter().collect()))
        }
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, item) in map {
                out.insert(k.clone(), resolve_value(item, results)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|item| resolve_value(item, results))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// Keys of every step the params refer to (in first-seen order, without repeats).
pub fn references(params: &Value) -> Vec<String> {
    fn walk(v: &Value, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        let mut add = |step: Option<&str>, seen: &mut BTreeSet<String>| {
            if let Some(step) = step {
                if seen.insert(step.to_owned()) {
                    out.push(step.to_owned());
                }
            }
        };
        match v {
            Value::Object(map) => {
                for marker in ["$ref", "$crm_bindings", "unless"] {
                    if let Some(target) = map.get(marker) {
                        add(target.get("step").and_then(Value::as_str), seen);
                    }
                }
                for (k, item) in map {
                    if !matches!(k.as_str(), "$ref" | "$crm_bindings" | "unless") {
                        walk(item, seen, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, seen, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    walk(params, &mut seen, &mut out);
    out
}

/// The register params to send when the register goes out after the leg stopped ringing (offline recovery,
/// seed 002 scenario 6): no card (`SHOW=0`); `CALL_START_DATE` stays the call's original start.
pub fn without_card(register_params: &Value) -> Value {
    let mut params = register_params.clone();
    if let Value::Object(map) = &mut params {
        map.insert("SHOW".into(), Value::from(0));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn results(pairs: &[(&str, Value)]) -> HashMap<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn resolves_references() {
        let done = results(&[
            (
                "c/0/register",
                json!({"CALL_ID": "externalCall.abc", "CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": 12, "CRM_CREATED_ENTITIES": []}),
            ),
            ("c/0/owner", json!([{"ASSIGNED_BY_ID": 3}])),
        ]);
        let get = |k: &str| done.get(k);
        let params = json!({
            "CALL_ID": StepRef::new("c/0/register", "CALL_ID").to_json(),
            "USER_ID": first_of(vec![
                StepRef::new("c/0/owner", "0.ASSIGNED_BY_ID")
                    .to_json_unless(&StepRef::new("c/0/register", "CRM_CREATED_ENTITIES.0")),
                json!(9),
            ]),
            "UF_CRM_TASK": crm_bindings("c/0/register"),
            "DURATION": 5,
        });
        let plain = resolve(&params, get).expect("resolvable");
        assert_eq!(
            plain,
            json!({"CALL_ID": "externalCall.abc", "USER_ID": 3, "UF_CRM_TASK": ["L_12"], "DURATION": 5})
        );
        assert_eq!(references(&params), vec!["c/0/register", "c/0/owner"]);
    }

    #[test]
    fn first_skips_owner_of_an_entity_the_call_created() {
        let done = results(&[
            (
                "r",
                json!({"CALL_ID": "x", "CRM_CREATED_ENTITIES": [{"ENTITY_TYPE": "LEAD", "ENTITY_ID": 5}]}),
            ),
            ("o", json!([{"ASSIGNED_BY_ID": 3}])),
        ]);
        let value = first_of(vec![
            StepRef::new("o", "0.ASSIGNED_BY_ID").to_json_unless(&StepRef::new("r", "CRM_CREATED_ENTITIES.0")),
            json!(1),
        ]);
        assert_eq!(resolve(&value, |k| done.get(k)), Ok(json!(1)));
        // Nothing found by the lookup: the next candidate.
        let done = results(&[("r", json!({"CALL_ID": "x"})), ("o", json!([]))]);
        assert_eq!(resolve(&value, |k| done.get(k)), Ok(json!(1)));
    }

    #[test]
    fn unresolvable_params_are_errors() {
        let none = |_: &str| -> Option<&Value> { None };
        assert_eq!(
            resolve(&StepRef::new("a", "CALL_ID").to_json(), none),
            Err(ResolveError::MissingResult { step: "a".into() })
        );
        let done = results(&[("a", json!({"OTHER": 1}))]);
        assert!(matches!(
            resolve(&StepRef::new("a", "CALL_ID").to_json(), |k| done.get(k)),
            Err(ResolveError::MissingField { .. })
        ));
        assert_eq!(
            resolve(&first_of(vec![json!(null)]), none),
            Err(ResolveError::NoCandidate)
        );
        assert!(matches!(
            resolve(&json!({"$ref": {"step": 1}}), none),
            Err(ResolveError::Malformed(_))
        ));
        assert!(matches!(
            resolve(&json!({"$first": 3}), none),
            Err(ResolveError::Malformed(_))
        ));
        // Bindings of a registration bound to nothing.
        let done = results(&[("a", json!({"CALL_ID": "x", "CRM_ENTITY_TYPE": null}))]);
        assert_eq!(resolve(&crm_bindings("a"), |k| done.get(k)), Ok(json!([])));
    }

    #[test]
    fn late_register_loses_only_the_card() {
        let params = json!({"SHOW": 1, "CALL_START_DATE": "2026-03-07T10:20:30+03:00", "USER_ID": 1});
        let late = without_card(&params);
        assert_eq!(late["SHOW"], json!(0));
        assert_eq!(late["CALL_START_DATE"], params["CALL_START_DATE"]);
        assert_eq!(late["USER_ID"], params["USER_ID"]);
    }

    #[test]
    fn kinds_name_their_methods() {
        assert_eq!(StepKind::Register.method(), "telephony.externalcall.register");
        assert_eq!(StepKind::AddTask.method(), "tasks.task.add");
        assert_eq!(StepKind::AttachRecord.name(), "attach_record");
    }
}
