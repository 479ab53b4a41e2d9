//! `tasks.task.add`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::scalar_to_json_string;
use crate::api::{ApiError, Reply};
use crate::clock::format_date;
use crate::core::{Ctx, World};
use crate::params::PValue;
use crate::state::Task;

/// `RESPONSIBLE_ID` → `responsibleId`, as the tasks API answers.
fn camel(key: &str) -> String {
    let mut out = String::new();
    for (i, part) in key.split('_').filter(|p| !p.is_empty()).enumerate() {
        let lower = part.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        }
    }
    out
}

/// Fields the add answer always carries, with their defaults.
const DEFAULTS: &[(&str, &str)] = &[
    ("DESCRIPTION", ""),
    ("PRIORITY", "1"),
    ("STATUS", "2"),
    ("GROUP_ID", "0"),
    ("PARENT_ID", "0"),
    ("STAGE_ID", "0"),
];

pub(crate) fn add(ctx: &Ctx<'_>, w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let Some(fields) = p.get("fields").filter(|f| f.is_container()) else {
        return Err(ApiError::new(400, "100", "Could not find value for parameter {fields}"));
    };
    let mut stored: BTreeMap<String, Value> = DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    for (k, v) in fields.entries() {
        stored.insert(k.to_ascii_uppercase(), scalar_to_json_string(v));
    }
    let title = stored
        .get("TITLE")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if title.is_empty() {
        return Err(ApiError::new(400, "ERROR_CORE", "Task title is not specified<br>"));
    }
    let responsible = stored
        .get("RESPONSIBLE_ID")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|id| *id > 0);
    let Some(responsible) = responsible else {
        return Err(ApiError::new(400, "ERROR_CORE", "Responsible person not specified"));
    };
    if !w.portal.users.contains_key(&responsible) {
        return Err(ApiError::new(400, "ERROR_CORE", "Responsible person not specified"));
    }
    stored
        .entry("CREATED_BY".into())
        .or_insert_with(|| json!(ctx.caller.user_id.to_string()));
    let id = w.portal.next_task_id();
    let now_text = format_date(ctx.core.clock.to_local(ctx.now));
    let mut task = Map::new();
    task.insert("id".into(), json!(id.to_string()));
    for (k, v) in &stored {
        // ufCrmTask appears only when selected in get/list.
        if k == "UF_CRM_TASK" {
            continue;
        }
        task.insert(camel(k), v.clone());
    }
    task.entry("deadline").or_insert(Value::Null);
    task.insert("createdDate".into(), json!(now_text));
    task.insert("changedDate".into(), json!(now_text));
    task.insert("changedBy".into(), json!(ctx.caller.user_id.to_string()));
    task.insert("subStatus".into(), json!("-2"));
    w.portal.tasks.insert(
        id,
        Task {
            id,
            fields: stored,
            created_at: ctx.now,
        },
    );
    Ok(Reply::new(json!({"task": task})))
}

#[cfg(test)]
mod tests {
    #[test]
    fn camel_case_keys() {
        assert_eq!(super::camel("RESPONSIBLE_ID"), "responsibleId");
        assert_eq!(super::camel("TITLE"), "title");
        assert_eq!(super::camel("UF_CRM_TASK"), "ufCrmTask");
    }
}
