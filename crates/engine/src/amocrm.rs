//! The amoCRM / Kommo translation of [`Intent`]s (`amocrm-api.md` in the project's reference).
//!
//! amoCRM has no call registration that answers with an id: a ringing phone is a popup
//! (`POST /api/v2/events`, `phone_call` for the employees whose phones ring), and the call itself is recorded
//! once, at its end, by `POST /api/v4/calls` with everything about it. So:
//!
//! | intent | amoCRM |
//! |---|---|
//! | register | the popup for its user when the card of an incoming call pops up now, else nothing is sent (the popup is amoCRM's incoming-call notification: none for an employee who dials out); the step keeps the call's facts (recovery reads them) |
//! | show | the popup for that user |
//! | hide | nothing: a popup cannot be taken back (journaled, no step) |
//! | find owner | `GET /api/v4/contacts?query=` — the contact's `responsible_user_id` |
//! | finish | one `POST /api/v4/calls` item: `direction`, `uniq` = the registration's id, `duration`, `source`, `phone`, `call_status` and `call_result` from the outcome, `responsible_user_id` = `created_by` = the responsible, `created_at`; for an unknown number (amoCRM answers 400 "Entity not found"), when the settings create records for the direction, what to create in the pipeline of the call's line: the Unsorted SIP entry to add instead, or ([`UnknownNumber::Complex`]) the lead with its contact to add by complex add before the call is sent again |
//! | recording | the signed link of the file, sent as the call's `link` with its finish |
//! | missed-call task | `POST /api/v4/tasks`, type "call", bound to the entity the call landed on |
//!
//! `/api/v4/calls` does not deduplicate: exactly once comes from the outbox key of the finish alone.
//!
//! Params are written as the worker sends them, with the references of [`crate::plan`] where a value comes from
//! an earlier answer (the contact's owner; the entity the finish landed on, which the worker stores as
//! `{"entity": {"type": "contacts", "id": 7}}` — `{}` when the call landed nowhere).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracker::Direction;

use crate::intent::{
    CallFacts, FinishCall, Intent, MissedTask, Outcome, RegisterCall, Registered, Responsible, Translated,
};
use crate::plan::{first_of, user_value, StepKind, StepRef};
use crate::users::UserId;

/// `POST /api/v2/events`: the incoming-call popup.
pub const POPUP: &str = "POST /api/v2/events";
/// `GET /api/v4/contacts?query=`: the client's contact (its owner).
pub const CONTACTS: &str = "GET /api/v4/contacts";
/// `POST /api/v4/calls`: the call, at its end (or the Unsorted SIP entry of an unknown number).
pub const CALLS: &str = "POST /api/v4/calls";
/// The recording's link, sent with the call.
pub const CALL_LINK: &str = "link of POST /api/v4/calls";
/// `POST /api/v4/tasks`: the missed-call task.
pub const TASKS: &str = "POST /api/v4/tasks";
/// A step amoCRM gets no request for (a register without a popup): done at once.
pub const NOTHING: &str = "none";

/// amoCRM's `task_type_id` of a call task.
pub const TASK_TYPE_CALL: u64 = 1;

/// What is created in amoCRM for a number it does not know (`[amocrm] unknown`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownNumber {
    /// An Unsorted SIP entry carrying the call (`POST /api/v4/leads/unsorted/sip`): a manager accepts or declines
    /// it.
    #[default]
    Unsorted,
    /// A contact with the number and a lead for it at once (`POST /api/v4/leads/complex`), then the call is sent
    /// again and lands on that lead.
    Complex,
}

/// What the amoCRM translation needs besides the intents (`[crm]` with `kind = "amocrm"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmoCrmSettings {
    /// `source` of every call: the integration's name as amoCRM shows it.
    pub source: String,
    /// An unknown number gets a record (`unknown` says which) when the engine's `crm_create` says so for the
    /// call's direction; off: such a call is not recorded in amoCRM (journaled).
    pub unsorted: bool,
    /// What an unknown number gets: an Unsorted entry or a contact and a lead.
    pub unknown: UnknownNumber,
    /// The line (trunk number) → the pipeline its unknown numbers go to.
    pub pipelines: BTreeMap<String, u64>,
    /// The pipeline of a line not in `pipelines` (`None`: the account's main pipeline).
    pub default_pipeline: Option<u64>,
}

impl Default for AmoCrmSettings {
    fn default() -> Self {
        Self {
            source: "ringlink".into(),
            unsorted: true,
            unknown: UnknownNumber::Unsorted,
            pipelines: BTreeMap::new(),
            default_pipeline: None,
        }
    }
}

impl AmoCrmSettings {
    /// The pipeline of unknown numbers that called (or were called from) `line`.
    pub fn pipeline_of(&self, line: Option<&str>) -> Option<u64> {
        line.and_then(|l| self.pipelines.get(l).copied())
            .or(self.default_pipeline)
    }
}

/// The step (or the reason for none) of `intent` in amoCRM.
pub fn translate(settings: &AmoCrmSettings, intent: &Intent) -> Translated {
    match intent {
        Intent::Register(register) => register_step(settings, register),
        Intent::ShowCard { user, client_phone, .. } => Translated::Step(
            StepKind::Show,
            POPUP.into(),
            json!({"user": user, "popup": popup(client_phone, *user)}),
        ),
        Intent::HideCard { user, .. } => Translated::Nothing(format!(
            "a call popup cannot be taken back, so nothing is sent to close user {user}'s"
        )),
        Intent::FindOwner { client_phone } => {
            Translated::Step(StepKind::LookupOwner, CONTACTS.into(), json!({"phone": client_phone}))
        }
        Intent::Finish(finish) => Translated::Step(StepKind::Finish, CALLS.into(), finish_params(settings, finish)),
        Intent::AttachRecording { filename, .. } => {
            Translated::Step(StepKind::AttachRecord, CALL_LINK.into(), json!({"filename": filename}))
        }
        Intent::MissedTask(task) => Translated::Step(StepKind::AddTask, TASKS.into(), task_params(task)),
    }
}

/// amoCRM's `call_status` of an outcome: 4 conversation, 7 busy, 3 not available, 5 wrong number, 6 no
/// connection ("не дозвонился") for everything else that is not a talk.
pub fn call_status(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Talked => 4,
        Outcome::Busy => 7,
        Outcome::Unavailable => 3,
        Outcome::NotFound | Outcome::AddressIncomplete => 5,
        Outcome::Missed
        | Outcome::Cancelled
        | Outcome::Declined
        | Outcome::Forbidden
        | Outcome::PaymentRequired
        | Outcome::Locked
        | Outcome::RouteUnavailable
        | Outcome::Other => 6,
    }
}

/// amoCRM's `call_result` text of an outcome.
pub fn call_result(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Talked => "talked",
        Outcome::Missed => "missed",
        Outcome::Cancelled => "cancelled by the caller",
        Outcome::Busy => "busy",
        Outcome::Declined => "declined",
        Outcome::Unavailable => "not available",
        Outcome::NotFound => "no such number",
        Outcome::Forbidden => "forbidden",
        Outcome::PaymentRequired => "payment required",
        Outcome::Locked => "locked",
        Outcome::AddressIncomplete => "incomplete number",
        Outcome::RouteUnavailable => "route unavailable",
        Outcome::Other => "not connected",
    }
}

/// A stored register's params read back.
pub fn registered(params: &Value) -> Registered {
    let call = &params["call"];
    let text = |name: &str| call.get(name).and_then(Value::as_str).map(str::to_owned);
    Registered {
        user: call.get("user").and_then(Value::as_u64),
        facts: CallFacts {
            client_phone: text("phone").unwrap_or_default(),
            direction: serde_json::from_value(call["direction"].clone()).unwrap_or(Direction::Outgoing),
            external_id: text("uniq").unwrap_or_default(),
            start: text("start").unwrap_or_default(),
            create_entity: call.get("create_entity").and_then(Value::as_bool) == Some(true),
            line: text("line"),
        },
        source: text("source"),
    }
}

/// The user of a stored show's params.
pub fn card_user(params: &Value) -> Option<UserId> {
    params.get("user").and_then(Value::as_u64)
}

/// The popup for `user`: `{"add":[{"type":"phone_call","phone_number":…,"users":[user]}]}`.
fn popup(phone: &str, user: UserId) -> Value {
    json!({"add": [{"type": "phone_call", "phone_number": phone, "users": [user]}]})
}

fn register_step(settings: &AmoCrmSettings, r: &RegisterCall) -> Translated {
    let facts = CallFacts::of(r);
    let mut call = json!({
        "user": r.user,
        "phone": facts.client_phone,
        "direction": facts.direction,
        "uniq": facts.external_id,
        "start": facts.start,
        "create_entity": facts.create_entity,
        "source": r.source.clone().unwrap_or_else(|| settings.source.clone()),
    });
    if let Some(line) = &facts.line {
        call["line"] = Value::from(line.clone());
    }
    // The popup is amoCRM's incoming-call notification: an employee who dials out gets none.
    let pops_up = r.card && facts.direction == Direction::Incoming;
    let (method, popup) = match pops_up {
        true => (POPUP, popup(&r.client_phone, r.user)),
        false => (NOTHING, Value::Null),
    };
    Translated::Step(StepKind::Register, method.into(), json!({"call": call, "popup": popup}))
}

/// `responsible_user_id`: the contact's owner when the lookup found one, else the rest of the chain. (Nothing
/// is created before the finish in amoCRM, so a found contact always existed before the call.)
fn responsible(responsible: &Responsible) -> Value {
    match responsible {
        Responsible::User(user) => user_value(*user),
        Responsible::OwnerElse { lookup, then, .. } => first_of(vec![
            StepRef::new(lookup.clone(), "0.responsible_user_id").to_json(),
            user_value(*then),
        ]),
    }
}

fn direction(direction: Direction) -> &'static str {
    match direction {
        Direction::Incoming => "inbound",
        _ => "outbound",
    }
}

/// Unix seconds of a `YYYY-MM-DDTHH:MM:SS+03:00` time.
fn unix(time: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(time).ok().map(|t| t.timestamp())
}

fn finish_params(settings: &AmoCrmSettings, f: &FinishCall) -> Value {
    let facts = &f.facts;
    let who = responsible(&f.responsible);
    let result = match &f.failed_reason {
        Some(reason) => format!("{}: {reason}", call_result(f.outcome)),
        None => call_result(f.outcome).to_owned(),
    };
    let mut call = Map::new();
    call.insert("direction".into(), direction(facts.direction).into());
    call.insert("uniq".into(), facts.external_id.clone().into());
    call.insert("duration".into(), f.duration.into());
    call.insert("source".into(), settings.source.clone().into());
    call.insert("phone".into(), facts.client_phone.clone().into());
    call.insert("call_status".into(), call_status(f.outcome).into());
    call.insert("call_result".into(), result.into());
    call.insert("responsible_user_id".into(), who.clone());
    call.insert("created_by".into(), who.clone());
    let created_at = unix(&facts.start);
    if let Some(at) = created_at {
        call.insert("created_at".into(), at.into());
    }
    let create = settings.unsorted && facts.create_entity;
    let complex = (create && settings.unknown == UnknownNumber::Complex).then(|| complex_lead(settings, facts, &who));
    let unsorted = (create && settings.unknown == UnknownNumber::Unsorted).then(|| {
        let mut metadata = json!({
            "uniq": facts.external_id,
            "from": facts.client_phone,
            "phone": facts.client_phone,
            "duration": f.duration,
            "is_call_event_needed": true,
            "call_responsible": who,
        });
        let mut entry = json!({
            "source_uid": facts.external_id,
            "source_name": settings.source,
            "_embedded": {"leads": [{"name": format!("Call from {}", facts.client_phone)}]},
        });
        if let Some(at) = created_at {
            metadata["called_at"] = Value::from(at);
            entry["created_at"] = Value::from(at);
        }
        if let Some(pipeline) = settings.pipeline_of(facts.line.as_deref()) {
            entry["pipeline_id"] = Value::from(pipeline);
        }
        entry["metadata"] = metadata;
        entry
    });
    json!({"call": call, "unsorted": unsorted, "complex": complex})
}

/// The lead of an unknown number with its contact (the number as a work phone), for `POST /api/v4/leads/complex`,
/// in the pipeline of the call's line; both for the call's responsible.
fn complex_lead(settings: &AmoCrmSettings, facts: &CallFacts, who: &Value) -> Value {
    let phone = &facts.client_phone;
    let contact = json!({
        "name": phone,
        "responsible_user_id": who,
        "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}],
    });
    let mut lead = json!({
        "name": format!("Call from {phone}"),
        "responsible_user_id": who,
        "_embedded": {"contacts": [contact]},
    });
    if let Some(pipeline) = settings.pipeline_of(facts.line.as_deref()) {
        lead["pipeline_id"] = Value::from(pipeline);
    }
    lead
}

fn task_params(t: &MissedTask) -> Value {
    let text = match t.description.trim() {
        "" => t.title.clone(),
        description => format!("{}\n{description}", t.title),
    };
    let due = t
        .deadline
        .as_deref()
        .and_then(unix)
        .or_else(|| unix(&t.time))
        .unwrap_or(0);
    let mut task = json!({
        "text": text,
        "complete_till": due,
        "task_type_id": TASK_TYPE_CALL,
        "responsible_user_id": responsible(&t.responsible),
        "entity": StepRef::new(t.finish.clone(), "entity").to_json(),
    });
    if let Some(by) = t.created_by {
        task["created_by"] = user_value(by);
    }
    json!({"task": task})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_statuses_follow_the_reference() {
        assert_eq!(call_status(Outcome::Talked), 4);
        assert_eq!(call_status(Outcome::Busy), 7);
        assert_eq!(call_status(Outcome::Missed), 6);
        assert_eq!(call_status(Outcome::Cancelled), 6);
        assert_eq!(call_status(Outcome::Unavailable), 3);
        assert_eq!(call_status(Outcome::NotFound), 5);
        assert_eq!(call_status(Outcome::of_failed_result(499)), 6);
    }

    #[test]
    fn a_register_without_a_card_sends_nothing_but_keeps_the_call() {
        let register = RegisterCall {
            user: 1,
            client_phone: "+79001234567".into(),
            direction: Direction::Incoming,
            start: "2023-11-15T01:13:20+03:00".into(),
            create_entity: true,
            card: false,
            external_id: "1700000000.1".into(),
            line: Some("73432723033".into()),
            source: None,
        };
        let Translated::Step(kind, method, params) =
            translate(&AmoCrmSettings::default(), &Intent::Register(register.clone()))
        else {
            panic!("a register is a step");
        };
        assert_eq!((kind, method.as_str()), (StepKind::Register, NOTHING));
        assert_eq!(params["popup"], Value::Null);
        let back = registered(&params);
        assert_eq!(back.user, Some(1));
        assert_eq!(back.facts, CallFacts::of(&register));
    }

    #[test]
    fn an_outgoing_call_pops_up_nothing_for_the_employee_who_dials() {
        let register = RegisterCall {
            user: 1,
            client_phone: "+79001234567".into(),
            direction: Direction::Outgoing,
            start: "2023-11-15T01:13:20+03:00".into(),
            create_entity: false,
            card: true,
            external_id: "1700000000.1".into(),
            line: Some("73432723033".into()),
            source: None,
        };
        let outgoing = translate(&AmoCrmSettings::default(), &Intent::Register(register.clone()));
        let Translated::Step(StepKind::Register, method, params) = outgoing else {
            panic!("a register is a step");
        };
        assert_eq!(method, NOTHING);
        assert_eq!(params["popup"], Value::Null);
        let incoming = RegisterCall {
            direction: Direction::Incoming,
            ..register
        };
        let Translated::Step(StepKind::Register, method, params) =
            translate(&AmoCrmSettings::default(), &Intent::Register(incoming))
        else {
            panic!("a register is a step");
        };
        assert_eq!(method, POPUP);
        assert_eq!(params["popup"]["add"][0]["users"], json!([1]));
    }

    #[test]
    fn the_pipeline_of_a_line_else_the_default() {
        let settings = AmoCrmSettings {
            pipelines: BTreeMap::from([("73432723033".to_owned(), 55)]),
            default_pipeline: Some(7),
            ..AmoCrmSettings::default()
        };
        assert_eq!(settings.pipeline_of(Some("73432723033")), Some(55));
        assert_eq!(settings.pipeline_of(Some("74950000000")), Some(7));
        assert_eq!(settings.pipeline_of(None), Some(7));
    }
}
