//! Telephony: external calls (register, show/hide, finish, records, transcripts, CRM search) and external lines.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::crm::{create_entity, find_by_phone, new_activity};
use super::{int_param, str_param};
use crate::api::{ApiError, Reply};
use crate::clock::format_date;
use crate::config::ErrorCodeStyle;
use crate::core::{Core, Ctx, World};
use crate::params::PValue;
use crate::record::{AuthMode, CardAction, CardCause};
use crate::state::{phone_key, Call, CallFinish, EntityType, ExternalLine, PendingUpload, StoredFile};

/// Window of the documented re-registration rule.
const DEDUP_WINDOW_MINUTES: i64 = 30;

const NOT_FINISHED: &str = "Call is not found in the statistic table. It looks like it is not finished yet.";
const NOT_REGISTERED: &str = "Call is not found (call should be registered prior to finishing)";

fn core_error(description: &str) -> ApiError {
    ApiError::core(ErrorCodeStyle::ErrorCore, description)
}

/// USER_ID or USER_PHONE_INNER → an active user.
fn resolve_user(ctx: &Ctx<'_>, w: &World, p: &PValue) -> Result<u64, ApiError> {
    let style = ctx.core.cfg.conflicts.user_not_found_code;
    let not_found = || ApiError::core(style, "User is not found or is not active");
    if let Some(id) = int_param(p, "USER_ID") {
        return match w.portal.users.get(&(id.max(0) as u64)) {
            Some(u) if u.active => Ok(u.id),
            _ => Err(not_found()),
        };
    }
    if let Some(inner) = str_param(p, "USER_PHONE_INNER") {
        return match w.portal.user_by_inner(&inner) {
            Some(u) if u.active => Ok(u.id),
            _ => Err(not_found()),
        };
    }
    Err(core_error("USER_ID or USER_PHONE_INNER should be set"))
}

/// ISO-8601, preferably with an offset; without one the portal's zone is assumed.
fn parse_start_date(raw: &str, portal_offset: FixedOffset) -> Option<DateTime<FixedOffset>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t);
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(raw, fmt) {
            return Some(t);
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(raw, fmt) {
            return portal_offset.from_local_datetime(&naive).single();
        }
    }
    None
}

/// Arguments of a registration, validated.
pub(crate) struct Registration {
    pub principal: String,
    pub user_id: u64,
    pub phone_number: String,
    pub call_type: u8,
    pub start_date: DateTime<FixedOffset>,
    pub crm_create: bool,
    pub crm_source: Option<String>,
    pub crm_entity: Option<(EntityType, u64)>,
    pub show: bool,
    pub line_number: Option<String>,
    pub external_call_id: Option<String>,
}

pub(crate) struct Registered {
    pub call_id: String,
    pub created_lead: Option<u64>,
    pub created: Vec<(EntityType, u64)>,
    pub entity: Option<(EntityType, u64)>,
}

/// Register a call, or return the open registration with the same keys from the last 30 minutes.
pub(crate) fn register_call(core: &Core, w: &mut World, now: DateTime<Utc>, r: Registration) -> Registered {
    let dedup_finished = core.cfg.conflicts.dedup_finished_calls;
    let window = Duration::minutes(DEDUP_WINDOW_MINUTES);
    let existing = w.portal.calls.iter().rposition(|c| {
        c.registered_by == r.principal
            && c.phone_number == r.phone_number
            && c.call_type == r.call_type
            && c.user_id == r.user_id
            && c.line_number == r.line_number
            && c.external_call_id == r.external_call_id
            && c.registered_at + window > now
            && (c.finish.is_none() || dedup_finished)
    });
    if let Some(i) = existing {
        let call = &mut w.portal.calls[i];
        call.registrations += 1;
        return Registered {
            call_id: call.call_id.clone(),
            created_lead: None,
            created: Vec::new(),
            entity: call.crm_entity,
        };
    }

    let mut entity = r.crm_entity.filter(|(t, id)| w.portal.entities(*t).contains_key(id));
    if entity.is_none() {
        entity = find_by_phone(
            &w.portal,
            &[EntityType::Contact, EntityType::Company, EntityType::Lead],
            &r.phone_number,
        )
        .into_iter()
        .next();
    }
    let mut created = Vec::new();
    let mut created_lead = None;
    if entity.is_none() && r.crm_create {
        let outgoing = r.call_type == 1;
        let line_allows = r
            .line_number
            .as_ref()
            .and_then(|n| w.portal.lines.iter().find(|l| &l.number == n))
            .map_or(true, |l| l.crm_auto_create);
        if !outgoing || line_allows {
            let t = if core.cfg.portal.leads_enabled {
                EntityType::Lead
            } else {
                EntityType::Contact
            };
            let title = match r.call_type {
                1 | 4 | 5 => format!("{} - Outgoing call", r.phone_number),
                _ => format!("{} - Incoming call", r.phone_number),
            };
            let mut fields = PValue::empty_map();
            fields.insert("TITLE".into(), PValue::Str(title));
            if t == EntityType::Contact {
                fields.insert("NAME".into(), PValue::Str(r.phone_number.clone()));
            }
            fields.insert(
                "SOURCE_ID".into(),
                PValue::Str(r.crm_source.clone().unwrap_or_else(|| "CALL".into())),
            );
            fields.insert(
                "PHONE".into(),
                PValue::List(vec![PValue::Map(vec![
                    ("VALUE".into(), PValue::Str(r.phone_number.clone())),
                    ("VALUE_TYPE".into(), PValue::Str("WORK".into())),
                ])]),
            );
            let id = create_entity(&mut w.portal, t, &fields, r.user_id, now);
            if t == EntityType::Lead {
                created_lead = Some(id);
            }
            created.push((t, id));
            entity = Some((t, id));
        }
    }
    let hash = w.portal.next_hash(&r.phone_number);
    let call_id = format!("externalCall.{hash}.{}", now.timestamp());
    w.portal.add_call(Call {
        call_id: call_id.clone(),
        external_call_id: r.external_call_id,
        registered_by: r.principal,
        user_id: r.user_id,
        phone_number: r.phone_number,
        call_type: r.call_type,
        line_number: r.line_number,
        crm_source: r.crm_source,
        start_date: r.start_date,
        registered_at: now,
        registrations: 1,
        crm_entity: entity,
        crm_created: created.clone(),
        show: r.show,
        finish: None,
        record_file_id: None,
        record_history: Vec::new(),
        record_url: None,
        transcript_ids: Vec::new(),
    });
    Registered {
        call_id,
        created_lead,
        created,
        entity,
    }
}

pub(crate) fn register(ctx: &Ctx<'_>, w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let user_id = resolve_user(ctx, w, p)?;
    let phone_number = str_param(p, "PHONE_NUMBER")
        .filter(|n| !phone_key(n).is_empty())
        .ok_or_else(|| core_error("Unsupported phone number format"))?;
    let call_type = int_param(p, "TYPE")
        .filter(|t| (1..=5).contains(t))
        .ok_or_else(|| core_error("Unknown TYPE"))? as u8;
    let start_date = match str_param(p, "CALL_START_DATE") {
        Some(raw) => parse_start_date(&raw, ctx.core.clock.portal_offset())
            .ok_or_else(|| core_error("CALL_START_DATE should be in the ISO-8601 format"))?,
        None => ctx.core.clock.to_local(ctx.now),
    };
    let crm_entity = match (str_param(p, "CRM_ENTITY_TYPE"), int_param(p, "CRM_ENTITY_ID")) {
        (Some(t), Some(id)) if id > 0 => EntityType::parse(&t).map(|t| (t, id as u64)),
        _ => None,
    };
    let show = p.get_present("SHOW").map_or(true, PValue::is_truthy);
    let registration = Registration {
        principal: ctx.caller.principal.clone(),
        user_id,
        phone_number,
        call_type,
        start_date,
        crm_create: p.get_present("CRM_CREATE").is_some_and(PValue::is_truthy),
        crm_source: str_param(p, "CRM_SOURCE"),
        crm_entity,
        show,
        line_number: str_param(p, "LINE_NUMBER"),
        external_call_id: str_param(p, "EXTERNAL_CALL_ID"),
    };
    let done = register_call(ctx.core, w, ctx.now, registration);
    if show {
        ctx.card(w, user_id, &done.call_id, CardAction::Shown, CardCause::Register);
    }
    Ok(Reply::new(register_result(&done)))
}

pub(crate) fn register_result(done: &Registered) -> Value {
    let mut m = Map::new();
    m.insert("CALL_ID".into(), json!(done.call_id));
    m.insert("CRM_CREATED_LEAD".into(), json!(done.created_lead));
    m.insert(
        "CRM_CREATED_ENTITIES".into(),
        Value::Array(
            done.created
                .iter()
                .map(|(t, id)| json!({"ENTITY_TYPE": t.name(), "ENTITY_ID": id}))
                .collect(),
        ),
    );
    if let Some((t, id)) = done.entity {
        m.insert("CRM_ENTITY_TYPE".into(), json!(t.name()));
        m.insert("CRM_ENTITY_ID".into(), json!(id));
    }
    Value::Object(m)
}

/// `USER_ID` as one id or a list (`USER_ID[0]=11&USER_ID[1]=24`).
fn user_ids(p: &PValue) -> Vec<u64> {
    match p.get_present("USER_ID") {
        Some(v) if v.is_container() => v
            .items()
            .into_iter()
            .filter_map(PValue::as_i64)
            .map(|i| i.max(0) as u64)
            .collect(),
        Some(v) => v.as_i64().map(|i| i.max(0) as u64).into_iter().collect(),
        None => Vec::new(),
    }
}

pub(crate) fn show_hide(ctx: &Ctx<'_>, w: &mut World, p: &PValue, show: bool) -> Result<Reply, ApiError> {
    let Some(call_id) = str_param(p, "CALL_ID") else {
        return Ok(Reply::new(json!(false)));
    };
    let Some(call) = w.portal.call(&call_id) else {
        return Ok(Reply::new(json!(false)));
    };
    let mut users = user_ids(p);
    if users.is_empty() {
        users.push(call.user_id);
    }
    let (action, cause) = if show {
        (CardAction::Shown, CardCause::Show)
    } else {
        (CardAction::Hidden, CardCause::Hide)
    };
    for u in users {
        ctx.card(w, u, &call_id, action, cause);
    }
    Ok(Reply::new(json!(true)))
}

fn subject(call_type: u8, phone: &str, missed: bool) -> String {
    match call_type {
        1 | 4 | 5 => format!("Outgoing call to {phone}"),
        _ if missed => format!("Missed call from {phone}"),
        _ => format!("Incoming call from {phone}"),
    }
}

pub(crate) fn finish(ctx: &Ctx<'_>, w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let call_id = match p.get("CALL_ID") {
        Some(PValue::Str(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(ApiError::invalid_argument("CALL_ID must be a string")),
    };
    let user_id = resolve_user(ctx, w, p)?;
    let conflicts = &ctx.core.cfg.conflicts;
    let Some(call) = w.portal.call(&call_id) else {
        return Err(ApiError::core(conflicts.finish_unknown_call_code, NOT_REGISTERED));
    };
    if call.finish.is_some() {
        return Err(ApiError::core(conflicts.finish_repeat_code, NOT_REGISTERED));
    }
    let call = call.clone();
    let duration = int_param(p, "DURATION").unwrap_or(0).max(0);
    let cost = p.get_present("COST").and_then(PValue::as_f64).unwrap_or(0.0);
    let cost_currency = str_param(p, "COST_CURRENCY").unwrap_or_default();
    let status_code = str_param(p, "STATUS_CODE").unwrap_or_else(|| if duration > 0 { "200" } else { "304" }.into());
    let failed_reason = str_param(p, "FAILED_REASON").unwrap_or_default();
    let vote = int_param(p, "VOTE").filter(|v| (1..=5).contains(v));
    let record_url = str_param(p, "RECORD_URL");
    let statistic_id = w.portal.next_statistic_id();
    let success = status_code == "200";
    let incoming = matches!(call.call_type, 2 | 3);
    let missed = incoming && !success;

    let activity_id = call.crm_entity.map(|(t, owner)| {
        let clock = &ctx.core.clock;
        let start = call.start_date;
        let end = start + Duration::seconds(duration);
        let now_text = format_date(clock.to_local(ctx.now));
        let s = |v: &str| Value::String(v.to_owned());
        let mut f = BTreeMap::new();
        f.insert("OWNER_ID".into(), s(&owner.to_string()));
        f.insert("OWNER_TYPE_ID".into(), s(&t.type_id().to_string()));
        f.insert("TYPE_ID".into(), s("2"));
        f.insert("PROVIDER_ID".into(), s("VOXIMPLANT_CALL"));
        f.insert("PROVIDER_TYPE_ID".into(), s("CALL"));
        f.insert("PROVIDER_GROUP_ID".into(), Value::Null);
        f.insert("ASSOCIATED_ENTITY_ID".into(), s(&statistic_id.to_string()));
        f.insert(
            "SUBJECT".into(),
            s(&subject(call.call_type, &call.phone_number, missed)),
        );
        f.insert("START_TIME".into(), s(&format_date(start)));
        f.insert("END_TIME".into(), s(&format_date(end)));
        f.insert("DEADLINE".into(), s(&format_date(end)));
        f.insert("COMPLETED".into(), s(if missed { "N" } else { "Y" }));
        f.insert("STATUS".into(), s(if missed { "1" } else { "2" }));
        f.insert("RESPONSIBLE_ID".into(), s(&user_id.to_string()));
        f.insert("PRIORITY".into(), s("2"));
        f.insert("NOTIFY_TYPE".into(), s("0"));
        f.insert("NOTIFY_VALUE".into(), s("0"));
        f.insert("DESCRIPTION".into(), s(""));
        f.insert("DESCRIPTION_TYPE".into(), s("1"));
        f.insert("DIRECTION".into(), s(if incoming { "1" } else { "2" }));
        f.insert("LOCATION".into(), s(""));
        f.insert("CREATED".into(), s(&now_text));
        f.insert("LAST_UPDATED".into(), s(&now_text));
        f.insert("AUTHOR_ID".into(), s(&user_id.to_string()));
        f.insert("EDITOR_ID".into(), s(&user_id.to_string()));
        f.insert("ORIGINATOR_ID".into(), s(""));
        f.insert("ORIGIN_ID".into(), s(&format!("VI_{call_id}")));
        new_activity(w, f)
    });

    let app = &ctx.core.cfg.app;
    if let Some(c) = w.portal.call_mut(&call_id) {
        c.finish = Some(CallFinish {
            statistic_id,
            user_id,
            duration,
            cost,
            cost_currency: cost_currency.clone(),
            status_code: status_code.clone(),
            failed_reason: failed_reason.clone(),
            vote,
            finished_at: ctx.now,
            activity_id,
        });
        c.record_url.clone_from(&record_url);
    }
    // Finish hides the card from everyone who still sees it.
    for u in w.timeline.visible_to(&call_id) {
        ctx.card(w, u, &call_id, CardAction::Hidden, CardCause::Finish);
    }
    if let Some(url) = record_url {
        spawn_record_download(ctx.core, call_id.clone(), url);
    }

    let start_date = if ctx.core.cfg.conflicts.finish_start_date_as_object {
        json!({})
    } else {
        json!(format_date(call.start_date))
    };
    let (entity_type, entity_id) = match call.crm_entity {
        Some((t, id)) => (json!(t.name()), json!(id)),
        None => (Value::Null, Value::Null),
    };
    Ok(Reply::new(json!({
        "CALL_ID": call_id,
        "EXTERNAL_CALL_ID": call.external_call_id,
        "PORTAL_USER_ID": user_id,
        "PHONE_NUMBER": call.phone_number,
        "PORTAL_NUMBER": call.line_number.clone().unwrap_or_default(),
        "INCOMING": call.call_type.to_string(),
        "CALL_DURATION": duration,
        "CALL_START_DATE": start_date,
        "CALL_STATUS": i32::from(success),
        "CALL_VOTE": vote,
        "COST": cost,
        "COST_CURRENCY": cost_currency,
        "CALL_FAILED_CODE": status_code,
        "CALL_FAILED_REASON": failed_reason,
        "REST_APP_ID": app.rest_app_id,
        "REST_APP_NAME": app.rest_app_name,
        "CRM_ACTIVITY_ID": activity_id,
        "COMMENT": null,
        "CRM_ENTITY_TYPE": entity_type,
        "CRM_ENTITY_ID": entity_id,
        "ID": statistic_id,
    })))
}

/// The deprecated RECORD_URL of finish: Bitrix24 downloads it in the background, two attempts, failures silent.
fn spawn_record_download(core: &Core, call_id: String, url: String) {
    let Some(core) = core.arc() else { return };
    tokio::spawn(async move {
        for _ in 0..2 {
            if let Ok(bytes) = download(&core.http, &url).await {
                let name = file_name_from_url(&url).unwrap_or_else(|| "record.mp3".into());
                let mut w = core.world();
                let now = core.clock.now();
                store_record(&mut w, &call_id, name, bytes, now);
                return;
            }
        }
    });
}

async fn download(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, u16> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| e.status().map_or(0, |s| s.as_u16()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(status.as_u16());
    }
    resp.bytes().await.map(|b| b.to_vec()).map_err(|_| status.as_u16())
}

fn file_name_from_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?.to_owned();
    (!last.is_empty()).then_some(last)
}

fn store_record(w: &mut World, call_id: &str, name: String, content: Vec<u8>, now: DateTime<Utc>) -> u64 {
    let id = w.portal.next_file_id();
    w.portal.files.insert(
        id,
        StoredFile {
            id,
            name,
            call_id: Some(call_id.to_owned()),
            size: content.len(),
            content,
            uploaded_at: now,
        },
    );
    if let Some(c) = w.portal.call_mut(call_id) {
        c.record_file_id = Some(id);
        c.record_history.push(id);
    }
    id
}

fn check_extension(name: &str) -> Result<(), ApiError> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".wav") || lower.ends_with(".mp3") {
        Ok(())
    } else {
        Err(core_error("Wrong file extension. Only wav and mp3 are allowed"))
    }
}

fn finished_call_exists(w: &World, call_id: &str) -> bool {
    w.portal.call(call_id).is_some_and(|c| c.finish.is_some())
}

pub(crate) async fn attach_record(ctx: &Ctx<'_>, p: &PValue) -> Result<Reply, ApiError> {
    let call_id = str_param(p, "CALL_ID").ok_or_else(|| ApiError::invalid_argument("CALL_ID must be a string"))?;
    let filename = str_param(p, "FILENAME");
    let record_url = str_param(p, "RECORD_URL");
    if filename.is_none() && record_url.is_none() {
        return Err(core_error(
            "Required parameters are not set. Request should contain either URL or FILENAME parameter",
        ));
    }
    if !finished_call_exists(&ctx.core.world(), &call_id) {
        return Err(core_error(NOT_FINISHED));
    }
    let name = match (&filename, &record_url) {
        (Some(f), _) => f.clone(),
        (None, Some(url)) => file_name_from_url(url).unwrap_or_default(),
        (None, None) => String::new(),
    };
    if name.is_empty() {
        return Err(core_error("File name is empty"));
    }
    check_extension(&name)?;

    if let Some(content) = p.get("FILE_CONTENT") {
        let text = content.as_string().unwrap_or_default();
        let text: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if text.is_empty() {
            return Err(core_error("File content is empty."));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| core_error("File content is not properly encoded. Base64 encoding is expected."))?;
        let mut w = ctx.core.world();
        let id = store_record(&mut w, &call_id, name, bytes, ctx.now);
        return Ok(Reply::new(json!({"FILE_ID": id})));
    }
    if let Some(url) = record_url {
        // Bitrix24 fetches the URL once, synchronously.
        let bytes = download(&ctx.core.http, &url)
            .await
            .map_err(|code| core_error(&format!("Server returns HTTP error code {code}")))?;
        let mut w = ctx.core.world();
        let id = store_record(&mut w, &call_id, name, bytes, ctx.core.clock.now());
        return Ok(Reply::new(json!({"FILE_ID": id})));
    }
    // FILENAME alone: hand out a URL for a multipart upload.
    let mut w = ctx.core.world();
    let token = format!("telephony|{}", w.portal.next_hash(&call_id));
    w.portal.pending_uploads.insert(
        token.clone(),
        PendingUpload {
            call_id,
            filename: name,
        },
    );
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let base = ctx.core.base_url();
    let upload_url = match (&ctx.caller.mode, &ctx.caller.access_token) {
        (AuthMode::OAuth { .. }, Some(access)) => format!("{base}/rest/upload.json?auth={access}&token={encoded}"),
        _ => {
            let hook = &ctx.core.cfg.webhook;
            format!(
                "{base}/rest/{}/{}/upload.json?token={encoded}",
                hook.user_id, hook.secret
            )
        }
    };
    Ok(Reply::new(json!({"uploadUrl": upload_url, "fieldName": "file"})))
}

/// Second step of the two-step record upload: the multipart POST to `uploadUrl`.
pub(crate) fn upload(ctx: &Ctx<'_>, p: &PValue, files: &[(String, String, Vec<u8>)]) -> Result<Reply, ApiError> {
    let token = str_param(p, "token").ok_or_else(|| core_error("Upload token is not set"))?;
    let mut w = ctx.core.world();
    let Some(pending) = w.portal.pending_uploads.get(&token).cloned() else {
        return Err(core_error("Upload token is not valid"));
    };
    let Some((_, _, bytes)) = files.iter().find(|(field, _, _)| field == "file") else {
        return Err(core_error("File content is empty."));
    };
    if bytes.is_empty() {
        return Err(core_error("File content is empty."));
    }
    w.portal.pending_uploads.remove(&token);
    let id = store_record(&mut w, &pending.call_id, pending.filename, bytes.clone(), ctx.now);
    Ok(Reply::new(json!({"FILE_ID": id})))
}

pub(crate) fn search_crm_entities(_ctx: &Ctx<'_>, w: &World, p: &PValue) -> Result<Reply, ApiError> {
    let phone = str_param(p, "PHONE_NUMBER").ok_or_else(|| core_error("PHONE_NUMBER is empty"))?;
    let hits = find_by_phone(
        &w.portal,
        &[EntityType::Contact, EntityType::Company, EntityType::Lead],
        &phone,
    );
    let rows = hits
        .into_iter()
        .filter_map(|(t, id)| {
            let e = w.portal.entities(t).get(&id)?;
            let assigned = e.assigned_by().unwrap_or(0);
            let user = w.portal.users.get(&assigned);
            Some(json!({
                "CRM_ENTITY_TYPE": t.name(),
                "CRM_ENTITY_ID": id,
                "ASSIGNED_BY_ID": assigned,
                "NAME": e.display_name(),
                "ASSIGNED_BY": {
                    "ID": assigned.to_string(),
                    "TIMEMAN_STATUS": user.map_or("UNAVAILABLE".to_owned(), |u| u.timeman_status.clone()),
                    "USER_PHONE_INNER": user.map(|u| u.uf_phone_inner.clone()).unwrap_or_default(),
                    "WORK_PHONE": user.map(|u| u.work_phone.clone()).unwrap_or_default(),
                    "PERSONAL_PHONE": user.map(|u| u.personal_phone.clone()).unwrap_or_default(),
                    "PERSONAL_MOBILE": user.map(|u| u.personal_mobile.clone()).unwrap_or_default(),
                },
            }))
        })
        .collect();
    Ok(Reply::new(Value::Array(rows)))
}

fn yn(b: bool) -> &'static str {
    if b {
        "Y"
    } else {
        "N"
    }
}

pub(crate) fn line_get(w: &World) -> Result<Reply, ApiError> {
    Ok(Reply::new(Value::Array(
        w.portal
            .lines
            .iter()
            .map(|l| json!({"NUMBER": l.number, "NAME": l.name, "CRM_AUTO_CREATE": yn(l.crm_auto_create)}))
            .collect(),
    )))
}

pub(crate) fn line_add(w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let number = str_param(p, "NUMBER").ok_or_else(|| core_error("NUMBER should not be empty"))?;
    if w.portal.lines.iter().any(|l| l.number == number) {
        return Err(core_error("Line already exists"));
    }
    let id = w.portal.next_line_id();
    w.portal.lines.push(ExternalLine {
        id,
        name: str_param(p, "NAME").unwrap_or_default(),
        crm_auto_create: str_param(p, "CRM_AUTO_CREATE").map_or(true, |v| !v.eq_ignore_ascii_case("N")),
        number,
    });
    Ok(Reply::new(json!({"ID": id})))
}

pub(crate) fn line_update(w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let number = str_param(p, "NUMBER").ok_or_else(|| core_error("NUMBER should not be empty"))?;
    let name = p.get("NAME").and_then(PValue::as_string);
    let auto = str_param(p, "CRM_AUTO_CREATE");
    if name.is_none() && auto.is_none() {
        return Err(core_error("There are no fields to update"));
    }
    let line = w
        .portal
        .lines
        .iter_mut()
        .find(|l| l.number == number)
        .ok_or_else(|| core_error(&format!("Could not find line with number {number}")))?;
    if let Some(name) = name {
        line.name = name;
    }
    if let Some(auto) = auto {
        line.crm_auto_create = !auto.eq_ignore_ascii_case("N");
    }
    Ok(Reply::new(json!({"ID": line.id.to_string()})))
}

pub(crate) fn line_delete(w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let number = str_param(p, "NUMBER").ok_or_else(|| core_error("NUMBER should not be empty"))?;
    w.portal.lines.retain(|l| l.number != number);
    Ok(Reply::new(json!([])))
}

pub(crate) fn attach_transcription(w: &mut World, p: &PValue) -> Result<Reply, ApiError> {
    let call_id = str_param(p, "CALL_ID").ok_or_else(|| core_error("CALL_ID should be set"))?;
    let messages = p
        .get("MESSAGES")
        .filter(|m| m.is_container())
        .ok_or_else(|| core_error("MESSAGES should be an array"))?;
    if !finished_call_exists(w, &call_id) {
        return Err(core_error(&format!("Call {call_id} is not found. Is it finished?")));
    }
    for (i, m) in messages.items().into_iter().enumerate() {
        let side = m.get("SIDE").and_then(PValue::as_string).unwrap_or_default();
        if side != "User" && side != "Client" {
            return Err(core_error(&format!(
                "Message {i}: SIDE should be either User or Client"
            )));
        }
        let start = m.get("START_TIME").and_then(PValue::as_i64);
        let stop = m.get("STOP_TIME").and_then(PValue::as_i64);
        if !start.is_some_and(|s| s >= 0) {
            return Err(core_error(&format!(
                "Message {i}: START_TIME should be a non-negative integer"
            )));
        }
        if !stop.is_some_and(|s| s >= 1) {
            return Err(core_error(&format!(
                "Message {i}: STOP_TIME should be a positive integer"
            )));
        }
        if m.get("MESSAGE")
            .and_then(PValue::as_string)
            .map_or(true, |s| s.is_empty())
        {
            return Err(core_error(&format!("Message {i}: MESSAGE should not be empty")));
        }
    }
    let id = w.portal.next_transcript_id();
    if let Some(c) = w.portal.call_mut(&call_id) {
        c.transcript_ids.push(id);
    }
    Ok(Reply::new(json!({"TRANSCRIPT_ID": id})))
}
