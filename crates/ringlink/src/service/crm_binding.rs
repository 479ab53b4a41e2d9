//! ringlink's own CRM search, and creation of the client's lead or contact, for a call's registration — when
//! customization asks for it: `process_search_params` answered a `filter`, or `get_search_filter` or
//! `process_entity_creation_params` is enabled. Otherwise nothing here runs: Bitrix24 searches the CRM itself
//! when the call is registered, and creates a lead with `CRM_CREATE`.
//!
//! The search: with a `filter`, `crm.<type>.list` for each type it names (`{}` = by the client's phone), in
//! Bitrix24's own order of preference (contact, company, lead); without one, `crm.duplicate.findbycomm` by
//! phone. `get_search_filter` then chooses among what was found. The first entity left is bound to the register
//! (`CRM_ENTITY_TYPE`, `CRM_ENTITY_ID`, `CRM_CREATE=0`). Nothing left and the register would have created one:
//! ringlink creates it (`crm.<type>.add` with the params of `process_entity_creation_params`) and binds it.
//!
//! Exactly once: the binding is journaled before the register is sent, and a retry takes it from there. A crash
//! between a creation and its journal entry is covered by the search: the retry finds the new lead by phone.

use hooks::{HookName, Outcome};
use serde_json::{json, Value};
use store::{EntryKind, NewJournalEntry, Timestamp};
use tracing::info;

use super::{customize, Shared};

/// Marks the journal entry that holds a register's binding.
const BINDING: &str = "crm_binding";
/// Entity types in the order a found one is preferred (Bitrix24's own order).
const TYPES: [&str; 3] = ["contact", "company", "lead"];

/// A CRM entity: `lead`, `contact` or `company`, and its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub kind: String,
    pub id: u64,
}

impl Entity {
    fn json(&self) -> Value {
        json!({"type": self.kind, "id": self.id})
    }

    fn from_json(v: &Value) -> Option<Self> {
        let kind = v.get("type")?.as_str()?.to_ascii_lowercase();
        let id = id_of(v.get("id")?)?;
        TYPES.contains(&kind.as_str()).then_some(Entity { kind, id })
    }
}

/// What a register is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Binding {
    /// Found (or chosen by `get_search_filter`) in the CRM.
    Found(Entity),
    /// Created by ringlink for this call.
    Created(Entity),
    /// Nothing found, nothing to create: registered without an entity and without creating one.
    Nothing,
    /// The search could not be made; Bitrix24 searches (and creates) itself, as without customization.
    LeftToBitrix24,
}

/// Whether a register needs ringlink's own search.
pub fn wanted(hooks: &hooks::Hooks, filter: Option<&Value>) -> bool {
    filter.is_some()
        || hooks.is_enabled(HookName::GetSearchFilter)
        || hooks.is_enabled(HookName::ProcessEntityCreationParams)
}

/// Binds the register's `params` to the client's CRM entity (see the module's description). An error is
/// transient (Bitrix24 unreachable, the store): the step is tried again later.
pub async fn bind(
    shared: &Shared,
    client: &bitrix24::Client,
    planned: &engine::Step,
    payload: &Value,
    params: &mut Value,
    filter: Option<Value>,
) -> anyhow::Result<()> {
    if !wanted(&shared.hooks, filter.as_ref()) {
        return Ok(());
    }
    if let Some(binding) = saved(shared, &planned.call, &planned.key).await? {
        apply(params, &binding);
        return Ok(());
    }
    let phone = params
        .get("PHONE_NUMBER")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let context = customize::context_of(payload);
    let now = Timestamp::now();
    let mut journal = Vec::new();
    let binding = match search(client, &phone, filter.as_ref()).await {
        Err(e) if transient(&e) => return Err(e.into()),
        Err(e) => {
            journal.push(note(
                planned,
                now,
                format!("CRM search failed ({e}); Bitrix24 searches the CRM itself when the call is registered"),
                json!({"filter": filter, "error": e.to_string()}),
            ));
            Binding::LeftToBitrix24
        }
        Ok(found) => {
            let found = choose(shared, planned, now, &phone, found, &context, &mut journal).await;
            match found.into_iter().next() {
                Some(entity) => Binding::Found(entity),
                None if creates(params) => create(shared, client, planned, now, params, &context, &mut journal).await?,
                None => Binding::Nothing,
            }
        }
    };
    let (message, data) = describe(&binding);
    let mut data = data;
    if let Value::Object(map) = &mut data {
        map.insert(BINDING.into(), Value::from(planned.key.clone()));
    }
    info!(call = %planned.call, "{message}");
    journal.push(NewJournalEntry::new(&planned.call, now, EntryKind::Hook, message).data(data));
    shared.store(move |s| s.append_journal(&journal)).await?;
    apply(params, &binding);
    Ok(())
}

/// The entity ringlink created for `call`, if it created one (for `customize_entity`).
pub async fn created_for(shared: &Shared, call: &str) -> Option<(String, Value)> {
    let call = call.to_owned();
    let timeline = shared.store(move |s| s.call_timeline(&call)).await.ok()?;
    timeline.iter().rev().find_map(|e| {
        let data = e.data.as_ref()?;
        data.get(BINDING)?;
        if data.get("binding").and_then(Value::as_str) != Some("created") {
            return None;
        }
        let entity = Entity::from_json(data.get("entity")?)?;
        Some((entity.kind, Value::from(entity.id)))
    })
}

fn transient(e: &bitrix24::Error) -> bool {
    e.is_retryable() || matches!(e, bitrix24::Error::Auth { .. } | bitrix24::Error::TokenRefresh { .. })
}

fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What Bitrix24 has for `phone`: by the hook's filter, or by phone across all types.
async fn search(
    client: &bitrix24::Client,
    phone: &str,
    filter: Option<&Value>,
) -> Result<Vec<Entity>, bitrix24::Error> {
    let mut found = Vec::new();
    match filter {
        Some(filter) => {
            for kind in TYPES {
                let Some(f) = filter.get(kind) else { continue };
                let f = match f {
                    Value::Object(m) if !m.is_empty() => f.clone(),
                    _ => json!({"PHONE": phone}),
                };
                let rows = client
                    .call(
                        &format!("crm.{kind}.list"),
                        json!({"filter": f, "select": ["ID"], "order": {"ID": "ASC"}}),
                    )
                    .await?;
                let ids = rows
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("ID").and_then(id_of));
                found.extend(ids.map(|id| Entity {
                    kind: kind.to_owned(),
                    id,
                }));
            }
        }
        None if phone.is_empty() => {}
        None => {
            let hits = client
                .call("crm.duplicate.findbycomm", json!({"type": "PHONE", "values": [phone]}))
                .await?;
            // Nothing found is `[]` (an empty PHP array), hits an object of type → IDs.
            for kind in TYPES {
                let ids = hits.get(kind.to_ascii_uppercase()).and_then(Value::as_array);
                let ids = ids.into_iter().flatten().filter_map(id_of);
                found.extend(ids.map(|id| Entity {
                    kind: kind.to_owned(),
                    id,
                }));
            }
        }
    }
    Ok(found)
}

/// `get_search_filter` on what was found: `{"phone": …, "entities": [{"type", "id"}, …]}` → the `entities` to
/// work with, first preferred. Empty data leaves none; a failure keeps them all.
async fn choose(
    shared: &Shared,
    planned: &engine::Step,
    now: Timestamp,
    phone: &str,
    found: Vec<Entity>,
    context: &hooks::Context,
    journal: &mut Vec<NewJournalEntry>,
) -> Vec<Entity> {
    let params = json!({"phone": phone, "entities": found.iter().map(Entity::json).collect::<Vec<_>>()});
    let Some(called) = shared.hooks.call(HookName::GetSearchFilter, &params, context).await else {
        return found;
    };
    super::report_hook(shared, &called);
    journal.push(customize::entry(&planned.call, now, &planned.key, &called));
    match &called.outcome {
        Outcome::Applied(answer) => answer
            .params
            .get("entities")
            .and_then(Value::as_array)
            .map(|chosen| chosen.iter().filter_map(Entity::from_json).collect())
            .unwrap_or(found),
        Outcome::Cancelled => Vec::new(),
        Outcome::Failed(_) => found,
    }
}

/// Whether the register would have had Bitrix24 create an entity.
fn creates(params: &Value) -> bool {
    match params.get("CRM_CREATE") {
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        Some(Value::String(s)) => s.trim() == "1" || s.eq_ignore_ascii_case("y"),
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// The seed's creation params for the client's entity: a lead, as Bitrix24's `CRM_CREATE` would make it.
fn creation_params(params: &Value) -> Value {
    let text = |key: &str| params.get(key).cloned().unwrap_or(Value::Null);
    let phone = params.get("PHONE_NUMBER").and_then(Value::as_str).unwrap_or_default();
    let outgoing = matches!(params.get("TYPE"), Some(v) if id_of(v) == Some(1));
    let title = if outgoing {
        format!("{phone} - Outgoing call")
    } else {
        format!("{phone} - Incoming call")
    };
    let source = params
        .get("CRM_SOURCE")
        .filter(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        .cloned()
        .unwrap_or_else(|| Value::from("CALL"));
    json!({
        "type": "lead",
        "ASSIGNED_BY_ID": text("USER_ID"),
        "COMMENTS": "",
        "OPENED": "Y",
        "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}],
        "SOURCE_ID": source,
        "TITLE": title,
    })
}

/// Creates the client's entity: `process_entity_creation_params` customizes it (empty data: none is created).
async fn create(
    shared: &Shared,
    client: &bitrix24::Client,
    planned: &engine::Step,
    now: Timestamp,
    params: &Value,
    context: &hooks::Context,
    journal: &mut Vec<NewJournalEntry>,
) -> anyhow::Result<Binding> {
    let mut fields = creation_params(params);
    if let Some(called) = shared
        .hooks
        .call(HookName::ProcessEntityCreationParams, &fields, context)
        .await
    {
        super::report_hook(shared, &called);
        journal.push(customize::entry(&planned.call, now, &planned.key, &called));
        match called.outcome {
            Outcome::Applied(answer) => fields = answer.params,
            Outcome::Cancelled => return Ok(Binding::Nothing),
            Outcome::Failed(_) => {}
        }
    }
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("lead")
        .to_ascii_lowercase();
    if let Value::Object(map) = &mut fields {
        map.remove("type");
        if kind == "contact" && !map.contains_key("NAME") {
            let phone = params.get("PHONE_NUMBER").cloned().unwrap_or(Value::Null);
            map.insert("NAME".into(), phone);
        }
    }
    if !TYPES.contains(&kind.as_str()) {
        journal.push(note(
            planned,
            now,
            format!("ringlink creates a lead, contact or company, not a {kind:?}; Bitrix24 creates the entity itself"),
            json!({"fields": fields}),
        ));
        return Ok(Binding::LeftToBitrix24);
    }
    let request = json!({"fields": fields});
    match client.call(&format!("crm.{kind}.add"), request.clone()).await {
        Ok(id) => match id_of(&id) {
            Some(id) => Ok(Binding::Created(Entity { kind, id })),
            None => {
                journal.push(note(
                    planned,
                    now,
                    format!("crm.{kind}.add answered {id}, not an ID; Bitrix24 creates the entity itself"),
                    json!({"request": request, "answer": id}),
                ));
                Ok(Binding::LeftToBitrix24)
            }
        },
        Err(e) if transient(&e) => Err(e.into()),
        Err(e) => {
            journal.push(note(
                planned,
                now,
                format!("crm.{kind}.add failed ({e}); Bitrix24 creates the entity itself"),
                json!({"request": request, "error": e.to_string()}),
            ));
            Ok(Binding::LeftToBitrix24)
        }
    }
}

fn note(planned: &engine::Step, now: Timestamp, message: String, data: Value) -> NewJournalEntry {
    let mut data = data;
    if let Value::Object(map) = &mut data {
        map.insert("step".into(), Value::from(planned.key.clone()));
    }
    NewJournalEntry::new(&planned.call, now, EntryKind::Hook, message).data(data)
}

fn describe(binding: &Binding) -> (String, Value) {
    match binding {
        Binding::Found(e) => (
            format!(
                "registered with the client's {} {} found by ringlink's search",
                e.kind, e.id
            ),
            json!({"binding": "found", "entity": e.json()}),
        ),
        Binding::Created(e) => (
            format!(
                "{} {} created by ringlink for the client; the call is registered with it",
                e.kind, e.id
            ),
            json!({"binding": "created", "entity": e.json()}),
        ),
        Binding::Nothing => (
            "no CRM entity found or created for the client; registered without one".to_owned(),
            json!({"binding": "nothing"}),
        ),
        Binding::LeftToBitrix24 => (
            "the CRM entity is left to Bitrix24's own search".to_owned(),
            json!({"binding": "bitrix24"}),
        ),
    }
}

/// The binding journaled for `key` by an earlier attempt.
async fn saved(shared: &Shared, call: &str, key: &str) -> anyhow::Result<Option<Binding>> {
    let call = call.to_owned();
    let timeline = shared.store(move |s| s.call_timeline(&call)).await?;
    Ok(timeline.iter().rev().find_map(|e| {
        let data = e.data.as_ref()?;
        if data.get(BINDING).and_then(Value::as_str) != Some(key) {
            return None;
        }
        let entity = data.get("entity").and_then(Entity::from_json);
        Some(match (data.get("binding").and_then(Value::as_str), entity) {
            (Some("found"), Some(e)) => Binding::Found(e),
            (Some("created"), Some(e)) => Binding::Created(e),
            (Some("nothing"), _) => Binding::Nothing,
            _ => Binding::LeftToBitrix24,
        })
    }))
}

fn apply(params: &mut Value, binding: &Binding) {
    let Value::Object(map) = params else { return };
    match binding {
        Binding::Found(e) | Binding::Created(e) => {
            map.insert("CRM_ENTITY_TYPE".into(), Value::from(e.kind.to_ascii_uppercase()));
            map.insert("CRM_ENTITY_ID".into(), Value::from(e.id));
            map.insert("CRM_CREATE".into(), Value::from(0));
        }
        Binding::Nothing => {
            map.insert("CRM_CREATE".into(), Value::from(0));
        }
        Binding::LeftToBitrix24 => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_sets_the_entity_and_stops_bitrix24_creating_another() {
        let mut params = json!({"PHONE_NUMBER": "89001234567", "CRM_CREATE": 1});
        apply(
            &mut params,
            &Binding::Created(Entity {
                kind: "lead".into(),
                id: 7,
            }),
        );
        assert_eq!(params["CRM_ENTITY_TYPE"], "LEAD");
        assert_eq!(params["CRM_ENTITY_ID"], 7);
        assert_eq!(params["CRM_CREATE"], 0);
        let mut params = json!({"CRM_CREATE": 1});
        apply(&mut params, &Binding::LeftToBitrix24);
        assert_eq!(params, json!({"CRM_CREATE": 1}), "left to Bitrix24: unchanged");
    }

    #[test]
    fn creation_params_are_the_seeds_lead() {
        let params = json!({"PHONE_NUMBER": "89001234567", "USER_ID": 2, "TYPE": 2, "CRM_CREATE": 1});
        let fields = creation_params(&params);
        assert_eq!(fields["type"], "lead");
        assert_eq!(fields["ASSIGNED_BY_ID"], 2);
        assert_eq!(fields["PHONE"][0]["VALUE"], "89001234567");
        assert_eq!(fields["SOURCE_ID"], "CALL");
        assert_eq!(fields["TITLE"], "89001234567 - Incoming call");
        assert!(creates(&params) && !creates(&json!({"CRM_CREATE": 0})) && !creates(&json!({})));
    }

    #[test]
    fn entities_come_from_hook_answers_only_when_well_formed() {
        assert_eq!(
            Entity::from_json(&json!({"type": "Contact", "id": "5"})),
            Some(Entity {
                kind: "contact".into(),
                id: 5
            })
        );
        assert_eq!(Entity::from_json(&json!({"type": "deal", "id": 5})), None);
        assert_eq!(Entity::from_json(&json!({"type": "lead"})), None);
    }
}
