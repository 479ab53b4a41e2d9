//! `event.bind/get/unbind`, `event.offline.get/clear`.

use serde_json::{json, Value};

use super::{int_param, str_param};
use crate::api::{ApiError, Reply};
use crate::clock::format_date;
use crate::core::{Ctx, World};
use crate::params::PValue;
use crate::state::EventHandler;

/// Events the portal knows; binding anything else is `ERROR_EVENT_NOT_FOUND`.
pub(crate) const KNOWN_EVENTS: &[&str] = &[
    "ONEXTERNALCALLSTART",
    "ONEXTERNALCALLBACKSTART",
    "ONAPPINSTALL",
    "ONAPPUNINSTALL",
    "ONAPPUPDATE",
    "ONCRMLEADADD",
    "ONCRMLEADUPDATE",
    "ONCRMLEADDELETE",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMDEALADD",
    "ONCRMDEALUPDATE",
    "ONCRMACTIVITYADD",
    "ONCRMACTIVITYUPDATE",
    "ONTASKADD",
    "ONTASKUPDATE",
    "ONUSERADD",
    "ONVOXIMPLANTCALLINIT",
    "ONVOXIMPLANTCALLSTART",
    "ONVOXIMPLANTCALLEND",
];

fn is_offline(p: &PValue) -> bool {
    str_param(p, "event_type").is_some_and(|t| t.eq_ignore_ascii_case("offline"))
}

fn event_name(p: &PValue) -> Result<String, ApiError> {
    let name = str_param(p, "event")
        .map(|e| e.to_ascii_uppercase())
        .unwrap_or_default();
    if KNOWN_EVENTS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(ApiError::new(400, "ERROR_EVENT_NOT_FOUND", "Event not found"))
    }
}

pub(crate) fn bind(ctx: &Ctx<'_>, w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let event = event_name(p)?;
    let offline = is_offline(p);
    let handler = str_param(p, "handler").unwrap_or_default();
    if !offline && handler.is_empty() {
        return Err(ApiError::new(400, "ERROR_ARGUMENT", "Handler is not set"));
    }
    let auth_type = int_param(p, "auth_type").unwrap_or(0).max(0) as u64;
    let is_admin = w.portal.users.get(&ctx.caller.user_id).is_some_and(|u| u.is_admin);
    if (offline || auth_type != 0) && !is_admin {
        return Err(ApiError::new(
            403,
            "ACCESS_DENIED",
            "Access denied! Admin permissions required",
        ));
    }
    let owner = ctx.caller.principal.clone();
    if w.portal.handlers.iter().any(|h| {
        h.owner == owner && h.event == event && h.handler == handler && h.offline == offline && h.auth_type == auth_type
    }) {
        return Err(ApiError::new(
            400,
            "ERROR_HANDLER_ALREADY_EXIST",
            "Handler already exists!",
        ));
    }
    let id = w.portal.next_handler_id();
    w.portal.handlers.push(EventHandler {
        id,
        event,
        handler,
        auth_type,
        offline,
        owner,
    });
    Ok(Reply::new(json!(true)))
}

pub(crate) fn get(ctx: &Ctx<'_>, w: &World) -> Result<Reply, ApiError> {
    let rows = w
        .portal
        .handlers
        .iter()
        .filter(|h| h.owner == ctx.caller.principal)
        .map(|h| {
            json!({
                "event": h.event,
                "handler": h.handler,
                "auth_type": h.auth_type.to_string(),
                "offline": i32::from(h.offline),
            })
        })
        .collect();
    Ok(Reply::new(Value::Array(rows)))
}

pub(crate) fn unbind(ctx: &Ctx<'_>, w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let event = event_name(p)?;
    let offline = is_offline(p);
    let handler = str_param(p, "handler").unwrap_or_default();
    if !offline && handler.is_empty() {
        return Err(ApiError::new(400, "ERROR_ARGUMENT", "Handler is not set"));
    }
    let auth_type = int_param(p, "auth_type");
    let before = w.portal.handlers.len();
    w.portal.handlers.retain(|h| {
        !(h.owner == ctx.caller.principal
            && h.event == event
            && h.offline == offline
            && (offline || h.handler == handler)
            && auth_type.map_or(true, |a| h.auth_type as i64 == a))
    });
    Ok(Reply::new(json!({"count": before - w.portal.handlers.len()})))
}

const DEFAULT_OFFLINE_LIMIT: i64 = 50;
const MAX_OFFLINE_LIMIT: i64 = 1000;

pub(crate) fn offline_get(ctx: &Ctx<'_>, w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let limit = int_param(p, "limit")
        .unwrap_or(DEFAULT_OFFLINE_LIMIT)
        .clamp(1, MAX_OFFLINE_LIMIT) as usize;
    let clear = p.get_present("clear").map_or(true, PValue::is_truthy);
    // `process_id` re-selects the records that process reserved earlier and has not cleared yet.
    let again = str_param(p, "process_id").filter(|id| !id.is_empty());
    let clock = &ctx.core.clock;
    let picked: Vec<usize> = w
        .portal
        .offline_events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.process_id == again)
        .map(|(i, _)| i)
        .take(limit)
        .collect();
    let process_id = if clear || picked.is_empty() {
        None
    } else if again.is_some() {
        again
    } else {
        Some(w.portal.next_hash("process"))
    };
    let rows: Vec<Value> = picked
        .iter()
        .filter_map(|&i| w.portal.offline_events.get(i))
        .map(|e| {
            json!({
                "ID": e.id.to_string(),
                "TIMESTAMP_X": format_date(clock.to_local(e.created_at)),
                "EVENT_NAME": e.event_name,
                "EVENT_DATA": e.data,
                "EVENT_ADDITIONAL": {"user_id": e.auth_user_id.to_string()},
                "MESSAGE_ID": e.message_id,
            })
        })
        .collect();
    if clear {
        let mut idx = 0;
        w.portal.offline_events.retain(|_| {
            let keep = !picked.contains(&idx);
            idx += 1;
            keep
        });
    } else if let Some(pid) = &process_id {
        for &i in &picked {
            if let Some(e) = w.portal.offline_events.get_mut(i) {
                e.process_id = Some(pid.clone());
            }
        }
    }
    Ok(Reply::new(json!({"process_id": process_id, "events": rows})))
}

pub(crate) fn offline_clear(w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let process_id = str_param(p, "process_id")
        .ok_or_else(|| ApiError::new(400, "ERROR_ARGUMENT", "Argument 'process_id' is null or empty"))?;
    let ids: Vec<String> = p
        .get("id")
        .map(|v| v.items().into_iter().filter_map(PValue::as_string).collect())
        .unwrap_or_default();
    w.portal.offline_events.retain(|e| {
        !(e.process_id.as_deref() == Some(process_id.as_str()) && (ids.is_empty() || ids.contains(&e.id.to_string())))
    });
    Ok(Reply::new(json!(true)))
}
