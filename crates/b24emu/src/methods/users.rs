//! `user.get`, `user.current`.

use serde_json::{Map, Value};

use super::{filter, start_param};
use crate::api::{ApiError, Reply};
use crate::core::{Ctx, World};
use crate::params::PValue;

/// Parameters that are not filter keys when filter keys are given at the top level (as in the doc examples).
const CONTROL_KEYS: &[&str] = &[
    "sort",
    "order",
    "filter",
    "admin_mode",
    "select",
    "image_resize",
    "start",
];

pub(crate) fn get(w: &World, p: &PValue) -> Result<Reply, ApiError> {
    let mut filter_map = PValue::empty_map();
    if let Some(f) = p.get("filter") {
        for (k, v) in f.entries() {
            filter_map.insert(k.to_ascii_uppercase(), v.clone());
        }
    }
    for (k, v) in p.entries() {
        if !CONTROL_KEYS.iter().any(|c| k.eq_ignore_ascii_case(c)) {
            filter_map.insert(k.to_ascii_uppercase(), v.clone());
        }
    }
    // NAME_SEARCH and USER_TYPE are special filter keys.
    let name_search = filter_map.remove("NAME_SEARCH").and_then(|v| v.as_string());
    let mut rows: Vec<Map<String, Value>> = w
        .portal
        .users
        .values()
        .map(|u| u.to_api().into_iter().collect::<Map<String, Value>>())
        .filter(|row| filter::matches(row, &filter_map))
        .filter(|row| {
            name_search.as_ref().map_or(true, |needle| {
                let needle = needle.to_lowercase();
                ["NAME", "LAST_NAME", "SECOND_NAME", "EMAIL", "WORK_POSITION"]
                    .iter()
                    .any(|f| {
                        row.get(*f)
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.to_lowercase().contains(&needle))
                    })
            })
        })
        .collect();
    // `sort` + `order` name one field and a direction.
    let sort_field = p.get("sort").and_then(PValue::as_string);
    let direction = p
        .get("order")
        .and_then(PValue::as_string)
        .unwrap_or_else(|| "ASC".into());
    let order = sort_field.map(|f| PValue::Map(vec![(f.to_ascii_uppercase(), PValue::Str(direction))]));
    filter::sort(&mut rows, order.as_ref());
    let total = rows.len();
    Ok(Reply::page(
        rows.into_iter().map(Value::Object).collect(),
        start_param(p),
        total,
    ))
}

pub(crate) fn current(ctx: &Ctx<'_>, w: &World) -> Result<Reply, ApiError> {
    let user = w
        .portal
        .users
        .get(&ctx.caller.user_id)
        .ok_or_else(|| ApiError::new(400, "ERROR_CORE", "User is not found"))?;
    Ok(Reply::new(Value::Object(user.to_api().into_iter().collect())))
}
