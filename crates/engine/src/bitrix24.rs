//! The Bitrix24 translation of [`Intent`]s: the `telephony.externalcall.*`, `telephony.externalCall.*` and
//! `tasks.task.add` params (with the references of [`crate::plan`] where a value comes from an earlier answer).

use serde_json::{json, Map, Value};
use tracker::Direction;

use crate::intent::{
    CallFacts, CallRecord, FinishCall, Intent, MissedTask, Outcome, RegisterCall, Registered, Responsible,
};
use crate::plan::{crm_bindings, first_of, user_value, StepKind, StepRef};
use crate::users::UserId;

/// The step kind and Bitrix24 params of `intent`.
pub fn translate(intent: &Intent) -> (StepKind, Value) {
    match intent {
        Intent::Register(register) => (StepKind::Register, register_params(register)),
        Intent::ShowCard { call, user, .. } => (StepKind::Show, json!({"CALL_ID": call_id(call), "USER_ID": [user]})),
        Intent::HideCard { call, user } => (StepKind::Hide, json!({"CALL_ID": call_id(call), "USER_ID": [user]})),
        Intent::FindOwner { client_phone } => (StepKind::LookupOwner, json!({"PHONE_NUMBER": client_phone})),
        Intent::Finish(finish) => (StepKind::Finish, finish_params(finish)),
        Intent::AttachRecording { call, filename } => (
            StepKind::AttachRecord,
            json!({"CALL_ID": call_id(call), "FILENAME": filename}),
        ),
        Intent::MissedTask(task) => (StepKind::AddTask, task_params(task)),
    }
}

/// A stored register's params read back (`USER_ID`, `PHONE_NUMBER`, `TYPE`, …).
pub fn registered(params: &Value) -> Registered {
    let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
    let direction = match params.get("TYPE").and_then(Value::as_u64) {
        Some(2) => Direction::Incoming,
        _ => Direction::Outgoing,
    };
    Registered {
        user: user_in(params.get("USER_ID")),
        facts: CallFacts {
            client_phone: text("PHONE_NUMBER").unwrap_or_default(),
            direction,
            external_id: text("EXTERNAL_CALL_ID").unwrap_or_default(),
            start: text("CALL_START_DATE").unwrap_or_default(),
            create_entity: params.get("CRM_CREATE").and_then(Value::as_u64) == Some(1),
            line: text("LINE_NUMBER"),
        },
        source: text("CRM_SOURCE"),
    }
}

/// The user of a stored show's params.
pub fn card_user(params: &Value) -> Option<UserId> {
    user_in(params.get("USER_ID"))
}

/// A user id in params: `5`, `"5"` or `[5]`.
fn user_in(value: Option<&Value>) -> Option<UserId> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Array(items) => user_in(items.first()),
        _ => None,
    }
}

/// `STATUS_CODE` of an outcome.
pub fn status_code(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Talked => "200",
        Outcome::Missed => "304",
        Outcome::Cancelled => "603-S",
        Outcome::Busy => "486",
        Outcome::Declined => "603",
        Outcome::Unavailable => "480",
        Outcome::NotFound => "404",
        Outcome::Forbidden => "403",
        Outcome::PaymentRequired => "402",
        Outcome::Locked => "423",
        Outcome::AddressIncomplete => "484",
        Outcome::RouteUnavailable => "503",
        Outcome::Other => "OTHER",
    }
}

/// The `CALL_ID` of a registration: known, or the register's answer.
fn call_id(call: &CallRecord) -> Value {
    match call {
        CallRecord::Known(id) => Value::from(id.clone()),
        CallRecord::Registered { register } => StepRef::new(register.clone(), "CALL_ID").to_json(),
    }
}

/// `USER_ID` / `RESPONSIBLE_ID`: the entity owner from `searchCrmEntities` unless the register created the
/// entity (`CRM_CREATED_ENTITIES`), else the rest of the chain.
fn responsible(responsible: &Responsible) -> Value {
    match responsible {
        Responsible::User(user) => user_value(*user),
        Responsible::OwnerElse { lookup, register, then } => first_of(vec![
            StepRef::new(lookup.clone(), "0.ASSIGNED_BY_ID")
                .to_json_unless(&StepRef::new(register.clone(), "CRM_CREATED_ENTITIES.0")),
            user_value(*then),
        ]),
    }
}

fn type_of(direction: Direction) -> u8 {
    match direction {
        Direction::Incoming => 2,
        _ => 1,
    }
}

fn register_params(r: &RegisterCall) -> Value {
    let mut params = Map::new();
    params.insert("USER_ID".into(), user_value(r.user));
    params.insert("PHONE_NUMBER".into(), Value::from(r.client_phone.clone()));
    params.insert("TYPE".into(), Value::from(type_of(r.direction)));
    params.insert("CALL_START_DATE".into(), Value::from(r.start.clone()));
    params.insert("CRM_CREATE".into(), Value::from(u8::from(r.create_entity)));
    params.insert("SHOW".into(), Value::from(u8::from(r.card)));
    params.insert("EXTERNAL_CALL_ID".into(), Value::from(r.external_id.clone()));
    if let Some(line) = &r.line {
        params.insert("LINE_NUMBER".into(), Value::from(line.clone()));
    }
    if let Some(source) = &r.source {
        params.insert("CRM_SOURCE".into(), Value::from(source.clone()));
    }
    Value::Object(params)
}

fn finish_params(f: &FinishCall) -> Value {
    let mut params = json!({
        "CALL_ID": call_id(&f.call),
        "USER_ID": responsible(&f.responsible),
        "DURATION": f.duration,
        "STATUS_CODE": status_code(f.outcome),
        "ADD_TO_CHAT": u8::from(f.add_to_chat),
    });
    if let Some(reason) = &f.failed_reason {
        params["FAILED_REASON"] = Value::from(reason.clone());
    }
    params
}

fn task_params(t: &MissedTask) -> Value {
    let mut fields = json!({
        "TITLE": t.title,
        "DESCRIPTION": t.description,
        "RESPONSIBLE_ID": responsible(&t.responsible),
        "UF_CRM_TASK": crm_bindings(&t.register),
    });
    if let Some(deadline) = &t.deadline {
        fields["DEADLINE"] = Value::from(deadline.clone());
    }
    if let Some(by) = t.created_by {
        fields["CREATED_BY"] = user_value(by);
    }
    json!({ "fields": fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_the_status_code_of_its_sip_result() {
        for code in [402, 403, 404, 423, 480, 484, 486, 503, 603] {
            assert_eq!(status_code(Outcome::of_failed_result(code)), code.to_string());
        }
        assert_eq!(
            status_code(Outcome::of_failed_result(tracker::status::CANCELLED)),
            "603-S"
        );
        assert_eq!(status_code(Outcome::of_failed_result(tracker::status::MISSED)), "304");
        assert_eq!(status_code(Outcome::of_failed_result(499)), "OTHER");
    }

    #[test]
    fn a_missed_call_finish_names_the_owner_unless_the_call_created_the_entity() {
        let (kind, params) = translate(&Intent::Finish(FinishCall {
            call: CallRecord::Registered {
                register: "c/0/register".into(),
            },
            facts: CallFacts {
                client_phone: "+79001234567".into(),
                direction: Direction::Incoming,
                external_id: "c".into(),
                start: "2023-11-15T01:13:20+03:00".into(),
                create_entity: true,
                line: None,
            },
            responsible: Responsible::OwnerElse {
                lookup: "c/0/owner".into(),
                register: "c/0/register".into(),
                then: 7,
            },
            duration: 0,
            outcome: Outcome::Missed,
            failed_reason: None,
            add_to_chat: true,
        }));
        assert_eq!(kind, StepKind::Finish);
        assert_eq!(
            params,
            json!({
                "CALL_ID": {"$ref": {"step": "c/0/register", "field": "CALL_ID"}},
                "USER_ID": {"$first": [
                    {"$ref": {"step": "c/0/owner", "field": "0.ASSIGNED_BY_ID"},
                     "unless": {"step": "c/0/register", "field": "CRM_CREATED_ENTITIES.0"}},
                    7
                ]},
                "DURATION": 0,
                "STATUS_CODE": "304",
                "ADD_TO_CHAT": 1,
            })
        );
    }
}
