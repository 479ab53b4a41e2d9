//! Customization hooks applied to a stored step right before it is sent.
//!
//! The engine plans steps without knowing about hooks; the worker, holding a claimed step whose references are
//! resolved, runs the hooks that customize that request (`process_client_phone`, `process_search_params` and
//! `process_registration_params` on a register, `customize_show_call_card` on a show, `process_final_params` on
//! a finish, `process_record_file_path` on a recording, `process_task_creation_params` on a missed-call task).
//! No lock is held meanwhile, and a hook's timeout bounds the wait.
//!
//! Exactly once: the outcome (the params to send, or the cancellation) is written to the call journal *before*
//! the request is sent, and a step sent again (a retry, a restart) takes it from there instead of asking the
//! hook again — the request Bitrix24 gets is the same every time, however the hook would answer now.

use std::sync::Arc;

use engine::StepKind;
use hooks::{Called, Context, HookName, Hooks, Outcome};
use serde_json::{json, Value};
use store::{EntryKind, NewJournalEntry, Timestamp};

use super::Shared;

/// The key under which the pipeline stores a step's hook context (`call_full`, `call_stage`) next to it.
pub const HOOK_CONTEXT: &str = "hook_context";
/// Marks the journal entry that holds a step's final customization.
const FINAL: &str = "customized_step";

/// What to send instead of the planned params.
#[derive(Debug, Clone, PartialEq)]
pub enum Customized {
    /// No hook applies, or none is enabled.
    Unchanged,
    Params {
        params: Value,
        /// The seed's `action` (`delete` of `process_final_params`).
        action: Option<String>,
        /// A recording's path as `process_record_file_path` changed it.
        record_path: Option<String>,
        /// The CRM search `process_search_params` asked for (`{"contact": {…}, "company": {…}, "lead": {…}}`).
        filter: Option<Value>,
    },
    /// Not sent: the reason, for the journal ("cancelled by customization: …").
    Cancelled(String),
}

/// The hooks that customize a step of `kind`, in the order they run.
pub fn hooks_of(kind: StepKind) -> &'static [HookName] {
    match kind {
        StepKind::Register => &[
            HookName::ProcessClientPhone,
            HookName::ProcessSearchParams,
            HookName::ProcessRegistrationParams,
        ],
        StepKind::LookupOwner => &[HookName::ProcessClientPhone],
        StepKind::Show => &[HookName::CustomizeShowCallCard],
        StepKind::Finish => &[HookName::ProcessFinalParams],
        StepKind::AttachRecord => &[HookName::ProcessRecordFilePath],
        StepKind::AddTask => &[HookName::ProcessTaskCreationParams],
        StepKind::Hide => &[],
    }
}

/// The hooks that customize an amoCRM step of `kind` before it is sent: the call item of a finish.
pub fn amocrm_hooks_of(kind: StepKind) -> &'static [HookName] {
    match kind {
        StepKind::Finish => &[HookName::ProcessCallParams],
        _ => &[],
    }
}

/// The hooks that customize what an amoCRM finish creates for a number amoCRM does not know (its `complex` or
/// `unsorted` part), run only once amoCRM has refused the call for it.
pub const AMOCRM_CREATION_HOOKS: [HookName; 2] = [
    HookName::ProcessContactCreationParams,
    HookName::ProcessLeadCreationParams,
];

/// Runs the step's hooks (or takes their earlier outcome from the journal) on its resolved `params`.
pub async fn customize(
    shared: &Shared,
    hooks: &Arc<Hooks>,
    payload: &Value,
    planned: &engine::Step,
    params: &Value,
) -> anyhow::Result<Customized> {
    run_chain(
        shared,
        hooks,
        payload,
        planned,
        &planned.key,
        hooks_of(planned.kind),
        params,
    )
    .await
}

/// Runs the enabled ones of `hooks_in_order` on `params` for `planned` (or takes their earlier outcome, saved in
/// the journal under `key`, from there).
pub async fn run_chain(
    shared: &Shared,
    hooks: &Arc<Hooks>,
    payload: &Value,
    planned: &engine::Step,
    key: &str,
    hooks_in_order: &[HookName],
    params: &Value,
) -> anyhow::Result<Customized> {
    let chain: Vec<HookName> = hooks_in_order
        .iter()
        .copied()
        .filter(|h| hooks.is_enabled(*h))
        .collect();
    if chain.is_empty() {
        return Ok(Customized::Unchanged);
    }
    if let Some(saved) = saved(shared, &planned.call, key).await? {
        return Ok(saved);
    }
    let context = context_of(payload);
    let mut params = params.clone();
    let mut record_path = planned.record_path.clone();
    let mut action = None;
    let mut filter = None;
    let mut cancelled = None;
    let mut journal = Vec::new();
    let now = Timestamp::now();
    for hook in chain {
        let input = input_of(hook, planned, &params, record_path.as_deref(), &context);
        let Some(called) = hooks.call(hook, &input, &context).await else {
            continue;
        };
        super::report_hook(shared, &called);
        journal.push(entry(&planned.call, now, key, &called));
        match called.outcome {
            Outcome::Applied(answer) => {
                apply(hook, &mut params, &mut record_path, &answer.params);
                if hook == HookName::ProcessSearchParams && answer.action.as_deref() == Some("ignore") {
                    cancelled = Some(format!("cancelled by customization: {hook} answered action \"ignore\""));
                    break;
                }
                if answer.action.is_some() {
                    action = answer.action;
                }
                if answer.filter.is_some() {
                    filter = answer.filter;
                }
            }
            Outcome::Cancelled => {
                cancelled = Some(called.describe());
                break;
            }
            Outcome::Failed(_) => {}
        }
    }
    let outcome = match cancelled {
        Some(reason) => Customized::Cancelled(reason),
        None => Customized::Params {
            params,
            action,
            record_path: record_path.filter(|p| planned.record_path.as_ref() != Some(p)),
            filter,
        },
    };
    let (message, data) = match &outcome {
        Customized::Cancelled(reason) => (
            format!("{} {key} not sent: {reason}", planned.kind.name()),
            json!({FINAL: key, "cancelled": reason}),
        ),
        Customized::Params {
            params,
            action,
            record_path,
            filter,
        } => (
            format!("{} {key} customized", planned.kind.name()),
            json!({FINAL: key, "params": params, "action": action, "record_path": record_path,
                   "filter": filter}),
        ),
        Customized::Unchanged => unreachable!("not built above"),
    };
    journal.push(NewJournalEntry::new(&planned.call, now, EntryKind::Hook, message).data(data));
    shared.store(move |s| s.append_journal(&journal)).await?;
    Ok(outcome)
}

/// The outcome written for `key` by an earlier attempt.
async fn saved(shared: &Shared, call: &str, key: &str) -> anyhow::Result<Option<Customized>> {
    let call = call.to_owned();
    let timeline = shared.store(move |s| s.call_timeline(&call)).await?;
    let found = timeline.iter().rev().find_map(|e| {
        let data = e.data.as_ref()?;
        (e.kind == EntryKind::Hook && data.get(FINAL).and_then(Value::as_str) == Some(key)).then_some(data)
    });
    Ok(found.map(|data| match data.get("cancelled").and_then(Value::as_str) {
        Some(reason) => Customized::Cancelled(reason.to_owned()),
        None => Customized::Params {
            params: data.get("params").cloned().unwrap_or(Value::Null),
            action: data.get("action").and_then(Value::as_str).map(str::to_owned),
            record_path: data.get("record_path").and_then(Value::as_str).map(str::to_owned),
            filter: data.get("filter").filter(|f| !f.is_null()).cloned(),
        },
    }))
}

pub fn context_of(payload: &Value) -> Context {
    let ctx = payload.get(HOOK_CONTEXT);
    Context {
        call_full: ctx.and_then(|c| c.get("call_full")).filter(|v| !v.is_null()).cloned(),
        call_stage: ctx
            .and_then(|c| c.get("call_stage"))
            .and_then(Value::as_str)
            .and_then(crate::hooks_cli::stage),
    }
}

/// The seed's `params` of `hook` for this step.
fn input_of(
    hook: HookName,
    planned: &engine::Step,
    params: &Value,
    record_path: Option<&str>,
    context: &Context,
) -> Value {
    match hook {
        HookName::ProcessClientPhone => json!({"phone": params.get("PHONE_NUMBER").cloned().unwrap_or(Value::Null)}),
        HookName::ProcessRecordFilePath => {
            let number = |side: &str| {
                context
                    .call_full
                    .as_ref()
                    .and_then(|c| c.pointer(&format!("/channel/{side}/original")))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            json!({
                "call_id": params.get("CALL_ID").cloned().unwrap_or(Value::Null),
                "from": number("from"),
                "to": number("to"),
                "path": record_path.unwrap_or_default(),
            })
        }
        HookName::ProcessTaskCreationParams => {
            json!({"arNewTaskData": params.get("fields").cloned().unwrap_or_else(|| json!({}))})
        }
        HookName::ProcessCallParams => params.get("call").cloned().unwrap_or_else(|| json!({})),
        HookName::ProcessContactCreationParams => amocrm_created(params).contact(params),
        HookName::ProcessLeadCreationParams => amocrm_created(params).lead(params),
        _ => {
            let _ = planned;
            params.clone()
        }
    }
}

/// Puts a hook's customized params back into the request.
fn apply(hook: HookName, params: &mut Value, record_path: &mut Option<String>, out: &Value) {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match hook {
        HookName::ProcessClientPhone => {
            if let (Some(phone), Value::Object(map)) = (text(out.get("phone")), &mut *params) {
                map.insert("PHONE_NUMBER".into(), Value::String(phone));
            }
        }
        HookName::ProcessRecordFilePath => {
            if let Some(path) = text(out.get("path")).filter(|p| !p.trim().is_empty()) {
                *record_path = Some(path);
            }
        }
        HookName::ProcessTaskCreationParams => {
            if let (Some(fields @ Value::Object(_)), Value::Object(map)) = (out.get("arNewTaskData"), &mut *params) {
                map.insert("fields".into(), fields.clone());
            }
        }
        HookName::ProcessCallParams => {
            if let (Value::Object(_), Value::Object(map)) = (out, &mut *params) {
                map.insert("call".into(), out.clone());
            }
        }
        HookName::ProcessContactCreationParams => amocrm_created(params).set_contact(params, out),
        HookName::ProcessLeadCreationParams => amocrm_created(params).set_lead(params, out),
        _ => *params = out.clone(),
    }
}

/// What an amoCRM finish creates for an unknown number: a lead with its contact by complex add, or an Unsorted
/// entry (`params.complex` / `params.unsorted`, see `engine::amocrm`).
#[derive(Clone, Copy)]
enum AmoCreated {
    Complex,
    Unsorted,
    Nothing,
}

fn amocrm_created(params: &Value) -> AmoCreated {
    match (&params["complex"], &params["unsorted"]) {
        (Value::Object(_), _) => AmoCreated::Complex,
        (_, Value::Object(_)) => AmoCreated::Unsorted,
        _ => AmoCreated::Nothing,
    }
}

impl AmoCreated {
    /// The contact to create: the complex lead's embedded contact; for an Unsorted entry, its contact (only the
    /// number as its name unless a hook gave more: amoCRM makes the contact from the call).
    fn contact(self, params: &Value) -> Value {
        match self {
            AmoCreated::Complex => params.pointer("/complex/_embedded/contacts/0").cloned(),
            AmoCreated::Unsorted => params
                .pointer("/unsorted/_embedded/contacts/0")
                .cloned()
                .or_else(|| Some(json!({"name": params.pointer("/unsorted/metadata/phone").cloned()}))),
            AmoCreated::Nothing => None,
        }
        .unwrap_or_else(|| json!({}))
    }

    /// The lead to create, without its embedded contact: the complex lead, or the Unsorted entry's lead.
    fn lead(self, params: &Value) -> Value {
        match self {
            AmoCreated::Complex => {
                let mut lead = params["complex"].clone();
                if let Value::Object(map) = &mut lead {
                    map.remove("_embedded");
                }
                lead
            }
            AmoCreated::Unsorted => params
                .pointer("/unsorted/_embedded/leads/0")
                .cloned()
                .unwrap_or_else(|| json!({})),
            AmoCreated::Nothing => json!({}),
        }
    }

    fn set_contact(self, params: &mut Value, contact: &Value) {
        let embedded = match self {
            AmoCreated::Complex => params.pointer_mut("/complex/_embedded"),
            AmoCreated::Unsorted => params.pointer_mut("/unsorted/_embedded"),
            AmoCreated::Nothing => None,
        };
        if let (Some(Value::Object(embedded)), Value::Object(_)) = (embedded, contact) {
            embedded.insert("contacts".into(), json!([contact]));
        }
    }

    fn set_lead(self, params: &mut Value, lead: &Value) {
        let Value::Object(fields) = lead else {
            return;
        };
        match self {
            AmoCreated::Complex => {
                if let Some(Value::Object(complex)) = params.get_mut("complex") {
                    let embedded = complex.remove("_embedded");
                    *complex = fields.clone();
                    complex.remove("_embedded");
                    if let Some(embedded) = embedded {
                        complex.insert("_embedded".into(), embedded);
                    }
                }
            }
            AmoCreated::Unsorted => {
                if let Some(Value::Object(embedded)) = params.pointer_mut("/unsorted/_embedded") {
                    embedded.insert("leads".into(), json!([lead]));
                }
            }
            AmoCreated::Nothing => {}
        }
    }
}

pub fn entry(call: &str, now: Timestamp, key: &str, called: &Called) -> NewJournalEntry {
    let mut data = called.journal_data();
    if let Value::Object(map) = &mut data {
        map.insert("step".into(), Value::from(key));
        map.insert("input".into(), called.input.clone());
    }
    NewJournalEntry::new(call, now, EntryKind::Hook, called.describe()).data(data)
}

/// The seed's description of a call (`customize_activity`, `customize_entity`): its id, numbers, direction and
/// times, from `call_full`.
pub fn call_summary(call: &str, call_full: Option<&Value>) -> Value {
    let at = |path: &str| call_full.and_then(|c| c.pointer(path)).cloned().unwrap_or(Value::Null);
    json!({
        "id": call,
        "from": at("/channel/from/original"),
        "to": at("/channel/to/original"),
        "trunk": at("/channel/trunk/original"),
        "type": at("/channel/type"),
        "started_at": at("/channel/start_time"),
        "answered_at": at("/channel/answer_time"),
        "ended_at": at("/channel/end_time"),
        "was_answered": at("/channel/was_answered"),
    })
}

/// The CRM entity a registration created (`CRM_CREATED_ENTITIES` of its result), as (`lead`|`contact`|
/// `company`, id): `customize_entity` applies only to entities this connector created.
pub fn created_entity(register_result: &Value) -> Option<(String, Value)> {
    let first = register_result.get("CRM_CREATED_ENTITIES")?.as_array()?.first()?;
    let kind = first.get("ENTITY_TYPE")?.as_str()?.to_ascii_lowercase();
    matches!(kind.as_str(), "lead" | "contact" | "company")
        .then(|| (kind, first.get("ENTITY_ID").cloned().unwrap_or(Value::Null)))
        .filter(|(_, id)| !id.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An amoCRM finish's params as `engine::amocrm` plans them, with `part` (`complex` or `unsorted`) set.
    fn finish(part: &str) -> Value {
        let mut params = json!({
            "call": {"direction": "inbound", "uniq": "1700000000.1", "phone": "+79001234567", "call_status": 4},
            "complex": null,
            "unsorted": null,
        });
        params[part] = match part {
            "complex" => json!({
                "name": "Call from +79001234567",
                "pipeline_id": 7,
                "_embedded": {"contacts": [{"name": "+79001234567", "responsible_user_id": 5}]},
            }),
            _ => json!({
                "source_uid": "1700000000.1",
                "metadata": {"phone": "+79001234567"},
                "_embedded": {"leads": [{"name": "Call from +79001234567"}]},
            }),
        };
        params
    }

    fn hooked(hook: HookName, params: &mut Value, change: impl Fn(&mut Value)) -> Value {
        let step = engine::Step {
            call: "c".into(),
            key: "c/0/finish".into(),
            kind: StepKind::Finish,
            method: engine::amocrm::CALLS.into(),
            params: params.clone(),
            after: Vec::new(),
            timing: engine::Timing::Durable,
            record_path: None,
        };
        let mut input = input_of(hook, &step, params, None, &Context::default());
        let given = input.clone();
        change(&mut input);
        apply(hook, params, &mut None, &input);
        given
    }

    #[test]
    fn process_call_params_gets_and_changes_the_call_item() {
        let mut params = finish("complex");
        let given = hooked(HookName::ProcessCallParams, &mut params, |c| {
            c["call_result"] = json!("customized")
        });
        assert_eq!(given["uniq"], json!("1700000000.1"));
        assert_eq!(params["call"]["call_result"], json!("customized"));
        assert_eq!(params["call"]["call_status"], json!(4), "the rest of the item kept");
    }

    #[test]
    fn the_creation_hooks_get_and_change_the_complex_adds_contact_and_lead() {
        let mut params = finish("complex");
        let contact = hooked(HookName::ProcessContactCreationParams, &mut params, |c| {
            c["name"] = json!("Иван")
        });
        assert_eq!(contact, json!({"name": "+79001234567", "responsible_user_id": 5}));
        let lead = hooked(HookName::ProcessLeadCreationParams, &mut params, |l| {
            l["price"] = json!(1000)
        });
        assert!(lead.get("_embedded").is_none(), "the lead's own fields: {lead}");
        assert_eq!(params["complex"]["price"], json!(1000));
        assert_eq!(params["complex"]["pipeline_id"], json!(7));
        assert_eq!(
            params["complex"]["_embedded"]["contacts"],
            json!([{"name": "Иван", "responsible_user_id": 5}]),
            "the changed contact stays the lead's"
        );
    }

    #[test]
    fn the_creation_hooks_get_and_change_the_unsorted_entrys_contact_and_lead() {
        let mut params = finish("unsorted");
        let contact = hooked(HookName::ProcessContactCreationParams, &mut params, |c| {
            c["name"] = json!("Иван")
        });
        assert_eq!(contact, json!({"name": "+79001234567"}), "the number as the name");
        let lead = hooked(HookName::ProcessLeadCreationParams, &mut params, |l| {
            l["name"] = json!("Сделка")
        });
        assert_eq!(lead, json!({"name": "Call from +79001234567"}));
        assert_eq!(
            params["unsorted"]["_embedded"],
            json!({"leads": [{"name": "Сделка"}], "contacts": [{"name": "Иван"}]})
        );
        assert_eq!(params["unsorted"]["source_uid"], json!("1700000000.1"));
    }
}
