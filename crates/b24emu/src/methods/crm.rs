//! CRM: leads, contacts, companies (legacy `crm.<type>.*` methods), duplicate search, activities, statuses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{filter, int_param, scalar_to_json_string, start_param, str_param};
use crate::api::{php_map, ApiError, Reply};
use crate::clock::{format_date, Clock};
use crate::core::{Ctx, World};
use crate::params::PValue;
use crate::state::{phone_key, Activity, CrmEntity, EntityType, Multifield, Portal};

const NOT_FOUND: &str = "Not found";
const BAD_ID: &str = "ID is not defined or invalid.";

fn multifield_json(m: &Multifield) -> Value {
    json!({"ID": m.id.to_string(), "VALUE_TYPE": m.value_type, "VALUE": m.value, "TYPE_ID": m.type_id})
}

/// The full row of an entity as `get` returns it.
pub(crate) fn entity_row(e: &CrmEntity, clock: &Clock) -> Map<String, Value> {
    let mut m: Map<String, Value> = e.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    m.insert("ID".into(), json!(e.id.to_string()));
    m.insert("DATE_CREATE".into(), json!(format_date(clock.to_local(e.created_at))));
    m.insert("DATE_MODIFY".into(), json!(format_date(clock.to_local(e.modified_at))));
    m.insert("HAS_PHONE".into(), json!(if e.phones.is_empty() { "N" } else { "Y" }));
    m.insert("HAS_EMAIL".into(), json!(if e.emails.is_empty() { "N" } else { "Y" }));
    if !e.phones.is_empty() {
        m.insert(
            "PHONE".into(),
            Value::Array(e.phones.iter().map(multifield_json).collect()),
        );
    }
    if !e.emails.is_empty() {
        m.insert(
            "EMAIL".into(),
            Value::Array(e.emails.iter().map(multifield_json).collect()),
        );
    }
    m
}

fn id_param(p: &PValue) -> Result<u64, ApiError> {
    int_param(p, "id")
        .filter(|id| *id > 0)
        .map(|id| id as u64)
        .ok_or_else(|| ApiError::crm(BAD_ID))
}

pub(crate) fn get(ctx: &Ctx<'_>, w: &World, t: EntityType, p: &PValue) -> Result<Reply, ApiError> {
    let id = id_param(p)?;
    let e = w.portal.entities(t).get(&id).ok_or_else(|| ApiError::crm(NOT_FOUND))?;
    Ok(Reply::new(Value::Object(entity_row(e, &ctx.core.clock))))
}

/// Apply `PHONE`/`EMAIL` writes: no ID appends, ID overwrites, ID with `DELETE=Y` or empty VALUE deletes.
fn apply_multifields(portal: &mut Portal, current: &mut Vec<Multifield>, type_id: &str, input: &PValue) {
    for item in input.items() {
        let value = item.get("VALUE").and_then(PValue::as_string).unwrap_or_default();
        let value_type = item.get("VALUE_TYPE").and_then(PValue::as_string).unwrap_or_default();
        let delete = item
            .get("DELETE")
            .is_some_and(|d| d.as_string().is_some_and(|s| s.eq_ignore_ascii_case("Y")));
        match item.get("ID").and_then(PValue::as_i64) {
            Some(id) => {
                let Some(pos) = current.iter().position(|m| m.id as i64 == id) else {
                    continue;
                };
                if delete || value.trim().is_empty() {
                    current.remove(pos);
                } else {
                    current[pos].set_value(value);
                    if !value_type.is_empty() {
                        current[pos].value_type = value_type;
                    }
                }
            }
            None if !value.trim().is_empty() && !delete => {
                current.push(portal.new_multifield(type_id, &value, &value_type));
            }
            None => {}
        }
    }
}

/// Write `fields` to an entity: known scalar fields and `UF_*`; unknown ones are ignored, as documented.
fn apply_fields(portal: &mut Portal, e: &mut CrmEntity, fields: &PValue) {
    for (key, value) in fields.entries() {
        let key = key.to_ascii_uppercase();
        match key.as_str() {
            "PHONE" => {
                let mut phones = std::mem::take(&mut e.phones);
                apply_multifields(portal, &mut phones, "PHONE", value);
                e.phones = phones;
            }
            "EMAIL" => {
                let mut emails = std::mem::take(&mut e.emails);
                apply_multifields(portal, &mut emails, "EMAIL", value);
                e.emails = emails;
            }
            k if e.entity_type.writable_fields().contains(&k) || k.starts_with("UF_") => {
                e.fields.insert(key, scalar_to_json_string(value));
            }
            _ => {}
        }
    }
}

/// Create an entity from API-style fields; used by `add` and by CRM_CREATE of telephony.
pub(crate) fn create_entity(
    portal: &mut Portal,
    t: EntityType,
    fields: &PValue,
    author: u64,
    now: DateTime<Utc>,
) -> u64 {
    let id = portal.next_entity_id(t);
    let mut e = CrmEntity {
        id,
        entity_type: t,
        fields: t
            .defaults()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect(),
        phones: Vec::new(),
        emails: Vec::new(),
        created_at: now,
        modified_at: now,
    };
    e.fields.insert("ASSIGNED_BY_ID".into(), json!(author.to_string()));
    e.fields.insert("CREATED_BY_ID".into(), json!(author.to_string()));
    e.fields.insert("MODIFY_BY_ID".into(), json!(author.to_string()));
    apply_fields(portal, &mut e, fields);
    portal.entities_mut(t).insert(id, e);
    id
}

pub(crate) fn add(ctx: &Ctx<'_>, w: &mut World, t: EntityType, p: &PValue) -> Result<Reply, ApiError> {
    let empty = PValue::empty_map();
    let fields = p.get("fields").unwrap_or(&empty);
    if !fields.is_container() && !fields.is_blank() {
        return Err(ApiError::crm("Invalid fields"));
    }
    let id = create_entity(&mut w.portal, t, fields, ctx.caller.user_id, ctx.now);
    Ok(Reply::new(json!(id)))
}

pub(crate) fn update(ctx: &Ctx<'_>, w: &mut World, t: EntityType, p: &PValue) -> Result<Reply, ApiError> {
    let id = id_param(p)?;
    let Some(mut e) = w.portal.entities_mut(t).remove(&id) else {
        return Err(ApiError::crm(NOT_FOUND));
    };
    if let Some(fields) = p.get("fields") {
        apply_fields(&mut w.portal, &mut e, fields);
    }
    e.modified_at = ctx.now;
    e.fields
        .insert("MODIFY_BY_ID".into(), json!(ctx.caller.user_id.to_string()));
    w.portal.entities_mut(t).insert(id, e);
    Ok(Reply::new(json!(true)))
}

/// Apply `select`: `*` (or nothing) = all scalar fields; multifields only when named; `ID` always.
fn select_row(row: Map<String, Value>, select: &[String]) -> Map<String, Value> {
    let all = select.is_empty() || select.iter().any(|s| s == "*");
    let uf = select.iter().any(|s| s == "UF_*");
    row.into_iter()
        .filter(|(k, _)| {
            let multi = k == "PHONE" || k == "EMAIL" || k == "WEB" || k == "IM";
            k == "ID"
                || select.iter().any(|s| s == k)
                || (all && !multi && !k.starts_with("UF_"))
                || ((all || uf) && k.starts_with("UF_") && (uf || select.is_empty()))
        })
        .collect()
}

fn select_param(p: &PValue) -> Vec<String> {
    p.get("select")
        .map(|s| {
            s.items()
                .into_iter()
                .filter_map(PValue::as_string)
                .map(|s| s.to_ascii_uppercase())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn list(ctx: &Ctx<'_>, w: &World, t: EntityType, p: &PValue) -> Result<Reply, ApiError> {
    let empty = PValue::empty_map();
    let f = p.get("filter").unwrap_or(&empty);
    let select = select_param(p);
    let mut rows: Vec<Map<String, Value>> = w
        .portal
        .entities(t)
        .values()
        .map(|e| entity_row(e, &ctx.core.clock))
        .filter(|row| filter::matches(row, f))
        .collect();
    filter::sort(&mut rows, p.get("order"));
    let total = rows.len();
    let rows = rows
        .into_iter()
        .map(|r| Value::Object(select_row(r, &select)))
        .collect();
    Ok(Reply::page(rows, start_param(p), total))
}

/// Entities whose stored phone matches exactly (formatting and extension ignored), in type order.
pub(crate) fn find_by_phone(portal: &Portal, types: &[EntityType], phone: &str) -> Vec<(EntityType, u64)> {
    let key = phone_key(phone);
    if key.is_empty() {
        return Vec::new();
    }
    types
        .iter()
        .flat_map(|t| {
            portal
                .entities(*t)
                .values()
                .filter(|e| e.phones.iter().any(|m| m.search_key == key))
                .map(|e| (*t, e.id))
                .collect::<Vec<_>>()
        })
        .collect()
}

const MAX_COMM_VALUES: usize = 20;

pub(crate) fn find_by_comm(w: &World, p: &PValue) -> Result<Reply, ApiError> {
    let comm_type = str_param(p, "type").map(|s| s.to_ascii_uppercase());
    let comm_type = match comm_type.as_deref() {
        Some("PHONE") => "PHONE",
        Some("EMAIL") => "EMAIL",
        _ => return Err(ApiError::new(400, "", "Communication type is not defined")),
    };
    let values: Vec<String> = p
        .get("values")
        .map(|v| {
            if v.is_container() {
                v.items()
                    .into_iter()
                    .filter_map(PValue::as_string)
                    .collect::<Vec<String>>()
            } else {
                v.as_string().into_iter().collect()
            }
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !v.trim().is_empty())
        .collect();
    if values.is_empty() {
        return Err(ApiError::new(400, "", "Communication values is not defined"));
    }
    if values.len() > MAX_COMM_VALUES {
        return Err(ApiError::new(400, "", "Communication values is too many"));
    }
    let types: Vec<EntityType> = match str_param(p, "entity_type") {
        Some(t) => vec![EntityType::parse(&t).ok_or_else(|| ApiError::new(400, "", "Entity type is not defined"))?],
        None => vec![EntityType::Lead, EntityType::Contact, EntityType::Company],
    };
    let phone_keys: Vec<String> = values.iter().map(|v| phone_key(v)).filter(|k| !k.is_empty()).collect();
    let mut out = Map::new();
    for t in types {
        let ids: Vec<u64> = w
            .portal
            .entities(t)
            .values()
            .filter(|e| {
                let stored = if comm_type == "PHONE" { &e.phones } else { &e.emails };
                stored.iter().any(|m| {
                    if comm_type == "PHONE" {
                        phone_keys.contains(&m.search_key)
                    } else {
                        values.iter().any(|v| m.value.trim().eq_ignore_ascii_case(v.trim()))
                    }
                })
            })
            .map(|e| e.id)
            .collect();
        let full = ids.len() >= MAX_COMM_VALUES;
        if !ids.is_empty() {
            out.insert(t.name().into(), json!(ids));
        }
        // Twenty hits in one type end the search, as documented.
        if full {
            break;
        }
    }
    Ok(Reply::new(php_map(out)))
}

pub(crate) fn activity_get(w: &World, p: &PValue) -> Result<Reply, ApiError> {
    let id = id_param(p)?;
    let a = w.portal.activities.get(&id).ok_or_else(|| ApiError::crm(NOT_FOUND))?;
    Ok(Reply::new(Value::Object(a.fields.clone().into_iter().collect())))
}

/// `crm.activity.delete`: `id` → `true`; an unknown id is "Not found".
pub(crate) fn activity_delete(w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let id = id_param(p)?;
    w.portal
        .activities
        .remove(&id)
        .ok_or_else(|| ApiError::crm(NOT_FOUND))?;
    Ok(Reply::new(json!(true)))
}

/// Fields `crm.activity.update` refuses to change.
const ACTIVITY_READ_ONLY: &[&str] = &[
    "ID",
    "CREATED",
    "AUTHOR_ID",
    "ORIGIN_ID",
    "PROVIDER_ID",
    "PROVIDER_TYPE_ID",
];

pub(crate) fn activity_update(ctx: &Ctx<'_>, w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let id = id_param(p)?;
    let a = w
        .portal
        .activities
        .get_mut(&id)
        .ok_or_else(|| ApiError::crm(NOT_FOUND))?;
    let Some(fields) = p.get("fields").filter(|f| f.is_container()) else {
        return Err(ApiError::crm("The parameter 'fields' must be array."));
    };
    for (key, value) in fields.entries() {
        let key = key.to_ascii_uppercase();
        if ACTIVITY_READ_ONLY.contains(&key.as_str()) {
            continue;
        }
        a.fields.insert(key, scalar_to_json_string(value));
    }
    a.fields.insert(
        "LAST_UPDATED".into(),
        json!(format_date(ctx.core.clock.to_local(ctx.now))),
    );
    a.fields
        .insert("EDITOR_ID".into(), json!(ctx.caller.user_id.to_string()));
    Ok(Reply::new(json!(true)))
}

pub(crate) fn activity_list(w: &World, p: &PValue) -> Result<Reply, ApiError> {
    let empty = PValue::empty_map();
    let f = p.get("filter").unwrap_or(&empty);
    let mut rows: Vec<Map<String, Value>> = w
        .portal
        .activities
        .values()
        .map(|a| a.fields.clone().into_iter().collect::<Map<String, Value>>())
        .filter(|row| filter::matches(row, f))
        .collect();
    let default_order = PValue::Map(vec![("START_TIME".into(), PValue::Str("ASC".into()))]);
    filter::sort(&mut rows, Some(p.get("order").unwrap_or(&default_order)));
    let select = select_param(p);
    let total = rows.len();
    let rows = rows
        .into_iter()
        .map(|r| {
            if select.is_empty() || select.iter().any(|s| s == "*") {
                Value::Object(r)
            } else {
                Value::Object(r.into_iter().filter(|(k, _)| k == "ID" || select.contains(k)).collect())
            }
        })
        .collect();
    Ok(Reply::page(rows, start_param(p), total))
}

/// Record of a call activity, all values strings as the API returns them.
pub(crate) fn new_activity(w: &mut World, mut fields: BTreeMap<String, Value>) -> u64 {
    let id = w.portal.next_activity_id();
    fields.insert("ID".into(), json!(id.to_string()));
    w.portal.activities.insert(id, Activity { id, fields });
    id
}

pub(crate) fn status_list(w: &World, p: &PValue) -> Result<Reply, ApiError> {
    let empty = PValue::empty_map();
    let f = p.get("filter").unwrap_or(&empty);
    let mut rows: Vec<Map<String, Value>> = w
        .portal
        .statuses
        .iter()
        .map(|s| {
            let row = json!({
                "ID": s.id.to_string(),
                "ENTITY_ID": s.entity_id,
                "STATUS_ID": s.status_id,
                "NAME": s.name,
                "NAME_INIT": if s.system { s.name.clone() } else { String::new() },
                "SORT": s.sort.to_string(),
                "SYSTEM": if s.system { "Y" } else { "N" },
                "CATEGORY_ID": null,
                "COLOR": null,
                "SEMANTICS": s.semantics,
                "EXTRA": null,
            });
            row.as_object().cloned().unwrap_or_default()
        })
        .filter(|row| filter::matches(row, f))
        .collect();
    let default_order = PValue::Map(vec![("SORT".into(), PValue::Str("ASC".into()))]);
    filter::sort(&mut rows, Some(p.get("order").unwrap_or(&default_order)));
    let total = rows.len() as u64;
    Ok(Reply {
        result: Value::Array(rows.into_iter().map(Value::Object).collect()),
        total: Some(total),
        next: None,
    })
}
