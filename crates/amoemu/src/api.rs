//! The API routes ringlink uses, with the documented shapes, validation errors and attach rules.

use serde_json::{json, Map, Value};

use crate::record::Popup;
use crate::server::{problem, validation, Answer, Core, Incoming, World};
use crate::state::{href, last_digits, phone_field, render_contact, render_pipeline, render_user, Contact, Lead};
use crate::state::{Call, Company, Task, Unsorted};

/// Items per write request (the documented batch ceiling).
const MAX_BATCH: usize = 250;
/// Leads per complex-add request.
const MAX_COMPLEX: usize = 50;
/// Largest `limit` of a list.
const MAX_LIMIT: usize = 250;

pub(crate) fn route(core: &Core, req: &Incoming<'_>, seq: u64) -> Answer {
    let get = req.method == "GET";
    let post = req.method == "POST";
    match req.path.trim_end_matches('/') {
        "/api/v4/account" if get => account(core),
        "/api/v4/users" if get => users(core, req),
        "/api/v4/contacts" if get => contacts(core, req),
        "/api/v4/leads/pipelines" if get => pipelines(core, req),
        "/api/v4/calls" if post => calls(core, req),
        "/api/v4/leads/unsorted/sip" if post => unsorted_sip(core, req),
        "/api/v4/leads/complex" if post => complex(core, req),
        "/api/v4/tasks" if post => tasks(core, req),
        "/api/v2/events" if post => events(core, req, seq),
        "/api/v4/account"
        | "/api/v4/users"
        | "/api/v4/contacts"
        | "/api/v4/leads/pipelines"
        | "/api/v4/calls"
        | "/api/v4/leads/unsorted/sip"
        | "/api/v4/leads/complex"
        | "/api/v4/tasks"
        | "/api/v2/events" => problem(
            405,
            "Method Not Allowed",
            "The method is not allowed for the requested URL.",
        ),
        _ => problem(404, "Not Found", "The requested URL was not found on the server."),
    }
}

fn account(core: &Core) -> Answer {
    let cfg = &core.cfg;
    Answer::Hal(
        200,
        json!({
            "id": cfg.account_id,
            "name": "ringlink emulated account",
            "subdomain": cfg.subdomain,
            "created_at": 1_600_000_000,
            "created_by": core.world().account.users.first().map_or(0, |u| u.id),
            "updated_at": 1_600_000_000,
            "updated_by": 0,
            "current_user_id": core.world().account.users.first().map_or(0, |u| u.id),
            "country": "RU",
            "currency": "RUB",
            "currency_symbol": "₽",
            "customers_mode": "disabled",
            "is_unsorted_on": true,
            "is_loss_reason_enabled": false,
            "is_helpbot_enabled": false,
            "is_technical_account": false,
            "contact_name_display_order": 1,
            "_links": {"self": href(format!("{}/api/v4/account", core.base()))},
        }),
    )
}

/// `page` (1-based) and `limit` (≤ 250) of a list request.
fn paging(core: &Core, req: &Incoming<'_>) -> Result<(usize, usize), Answer> {
    let number = |name: &str, default: usize| match req.param(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| problem(400, "Bad Request", &format!("{name} must be a positive integer"))),
    };
    Ok((
        number("page", 1)?,
        number("limit", core.cfg.default_page_limit)?.min(MAX_LIMIT),
    ))
}

/// One page of `items` under `_embedded.<key>`, 204 when the page is empty.
fn list_page(core: &Core, req: &Incoming<'_>, key: &str, items: Vec<Value>, totals: bool) -> Answer {
    let (page, limit) = match paging(core, req) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let total = items.len();
    let start = (page - 1).saturating_mul(limit);
    let chunk: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    if chunk.is_empty() {
        return Answer::Empty;
    }
    let link = |p: usize| {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in req.query.iter().filter(|(k, _)| k != "page" && k != "limit") {
            pairs.append_pair(k, v);
        }
        pairs
            .append_pair("page", &p.to_string())
            .append_pair("limit", &limit.to_string());
        href(format!("{}{}?{}", core.base(), req.path, pairs.finish()))
    };
    let mut links = Map::new();
    links.insert("self".into(), link(page));
    if start + limit < total || core.cfg.next_on_last_page {
        links.insert("next".into(), link(page + 1));
    }
    if page > 1 {
        links.insert("prev".into(), link(page - 1));
    }
    let mut body = json!({"_page": page, "_links": links, "_embedded": {key: chunk}});
    if totals {
        body["_total_items"] = json!(total);
        body["_page_count"] = json!(total.div_ceil(limit));
    }
    Answer::Hal(200, body)
}

fn users(core: &Core, req: &Incoming<'_>) -> Answer {
    if !core.cfg.installed_by_admin {
        return problem(403, "Forbidden", "Access denied: only administrators may list users");
    }
    let items = core
        .world()
        .account
        .users
        .iter()
        .map(|u| render_user(u, core.base()))
        .collect();
    list_page(core, req, "users", items, true)
}

/// `query` searches every filled field: the name, and field values as text or (for numbers) as digits.
fn contact_matches(c: &Contact, query: &str) -> bool {
    let needle = query.trim().to_lowercase();
    if needle.is_empty() {
        return true;
    }
    if c.name.to_lowercase().contains(&needle) {
        return true;
    }
    let digits = last_digits(query, usize::MAX);
    c.custom_fields_values
        .iter()
        .filter_map(|f| f.get("values").and_then(Value::as_array))
        .flatten()
        .filter_map(|v| v.get("value").and_then(Value::as_str))
        .any(|value| {
            value.to_lowercase().contains(&needle)
                || (digits.len() >= 5 && last_digits(value, usize::MAX).contains(&digits))
        })
}

fn contacts(core: &Core, req: &Incoming<'_>) -> Answer {
    let with_leads = req
        .param("with")
        .is_some_and(|w| w.split(',').any(|p| p.trim() == "leads"));
    let query = req.param("query").unwrap_or_default();
    let world = core.world();
    let acc = &world.account;
    let items = acc
        .contacts
        .values()
        .filter(|c| !c.unsorted && contact_matches(c, query))
        .map(|c| render_contact(c, acc, core.cfg.account_id, with_leads, core.base()))
        .collect();
    drop(world);
    list_page(core, req, "contacts", items, false)
}

fn pipelines(core: &Core, _req: &Incoming<'_>) -> Answer {
    let world = core.world();
    let items: Vec<Value> = world
        .account
        .pipelines
        .iter()
        .map(|p| render_pipeline(p, core.cfg.account_id, core.base()))
        .collect();
    Answer::Hal(
        200,
        json!({
            "_total_items": items.len(),
            "_links": {"self": href(format!("{}/api/v4/leads/pipelines", core.base()))},
            "_embedded": {"pipelines": items},
        }),
    )
}

/// The request body as a non-empty array of objects of at most `max` items.
fn batch<'a>(req: &'a Incoming<'_>, max: usize) -> Result<Vec<&'a Map<String, Value>>, Answer> {
    let Some(items) = req.body.as_array() else {
        return Err(problem(400, "Bad Request", "The request body must be a JSON array"));
    };
    if items.is_empty() || items.len() > max {
        return Err(problem(
            400,
            "Bad Request",
            &format!("Between 1 and {max} entities per request, got {}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_object()
                .ok_or_else(|| validation(i, "InvalidType", "", "Item must be an object"))
        })
        .collect()
}

fn request_id(item: &Map<String, Value>, index: usize) -> Value {
    item.get("request_id")
        .cloned()
        .unwrap_or_else(|| json!(index.to_string()))
}

fn text_field<'a>(
    item: &'a Map<String, Value>,
    i: usize,
    name: &str,
    required: bool,
) -> Result<Option<&'a str>, Answer> {
    match item.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) if !s.is_empty() || !required => Ok(Some(s)),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            Err(validation(i, "NotBlank", name, "This value should not be blank."))
        }
        Some(_) => Err(validation(
            i,
            "InvalidType",
            name,
            "This value should be of type string.",
        )),
    }
}

fn int_field(item: &Map<String, Value>, i: usize, name: &str, required: bool) -> Result<Option<i64>, Answer> {
    match item.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(v) if v.as_i64().is_some() => Ok(v.as_i64()),
        None | Some(Value::Null) => Err(validation(i, "NotBlank", name, "This value should not be blank.")),
        Some(_) => Err(validation(i, "InvalidType", name, "This value should be of type int.")),
    }
}

fn user_field(w: &World, item: &Map<String, Value>, i: usize, name: &str) -> Result<Option<u64>, Answer> {
    match int_field(item, i, name, false)? {
        None => Ok(None),
        Some(id) => match u64::try_from(id).ok().filter(|id| w.account.user(*id).is_some()) {
            Some(id) => Ok(Some(id)),
            None => Err(validation(
                i,
                "NotSupportedChoice",
                name,
                "The value you selected is not a valid choice.",
            )),
        },
    }
}

fn calls(core: &Core, req: &Incoming<'_>) -> Answer {
    let items = match batch(req, MAX_BATCH) {
        Ok(items) => items,
        Err(answer) => return answer,
    };
    let mut world = core.world();
    // Validate everything first: a request is taken whole or not at all.
    let mut targets = Vec::new();
    let mut not_found = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let checked = (|| {
            match text_field(item, i, "direction", true)? {
                Some("inbound" | "outbound") => {}
                _ => {
                    return Err(validation(
                        i,
                        "NotSupportedChoice",
                        "direction",
                        "The value you selected is not a valid choice.",
                    ))
                }
            }
            if int_field(item, i, "duration", true)?.is_some_and(|d| d < 0) {
                return Err(validation(
                    i,
                    "GreaterThanOrEqual",
                    "duration",
                    "This value should be 0 or more.",
                ));
            }
            text_field(item, i, "source", true)?;
            let phone = text_field(item, i, "phone", true)?.unwrap_or_default().to_owned();
            text_field(item, i, "uniq", false)?;
            text_field(item, i, "link", false)?;
            text_field(item, i, "call_result", false)?;
            // 1–7 documented; the official library also knows 8 (undefined): both are accepted.
            if int_field(item, i, "call_status", false)?.is_some_and(|s| !(1..=8).contains(&s)) {
                return Err(validation(
                    i,
                    "NotSupportedChoice",
                    "call_status",
                    "The value you selected is not a valid choice.",
                ));
            }
            for name in ["responsible_user_id", "created_by", "updated_by"] {
                user_field(&world, item, i, name)?;
            }
            for name in ["created_at", "updated_at"] {
                int_field(item, i, name, false)?;
            }
            Ok(phone)
        })();
        let phone = match checked {
            Ok(phone) => phone,
            Err(answer) => return answer,
        };
        // Attach rule: the contact by the last 10 digits; its one active lead if it has exactly one.
        let contact = world.account.contacts_by_phone(&phone, 10).first().map(|c| c.id);
        match contact {
            None => {
                not_found.push(json!({"title": "Entity not found", "status": 263, "request_id": request_id(item, i)}))
            }
            Some(cid) => {
                let leads = world.account.active_leads_of(cid);
                targets.push(match leads.as_slice() {
                    [lead] => ("leads", lead.id),
                    _ => ("contacts", cid),
                });
            }
        }
    }
    if !not_found.is_empty() {
        return Answer::Json(400, json!({"_total_items": 0, "errors": not_found}));
    }
    let mut added = Vec::new();
    for (i, (item, (entity_type, entity_id))) in items.iter().zip(targets).enumerate() {
        let id = world.account.next_id();
        let mut fields = (*item).clone();
        fields.remove("request_id");
        world.account.calls.push(Call {
            id,
            entity_type: entity_type.to_owned(),
            entity_id,
            fields: Value::Object(fields),
        });
        added.push(json!({
            "id": id,
            "entity_id": entity_id,
            "entity_type": entity_type,
            "account_id": core.cfg.account_id,
            "request_id": request_id(item, i),
            "_embedded": {"entity": {"id": entity_id, "_links": {"self": href(format!("{}/api/v4/{entity_type}/{entity_id}", core.base()))}}},
        }));
    }
    Answer::Hal(200, json!({"_total_items": added.len(), "_embedded": {"calls": added}}))
}

/// Custom field values in the write shape → the read shape (PHONE gets its field id and type).
fn read_fields(value: Option<&Value>, i: usize) -> Result<Vec<Value>, Answer> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(fields) = value.as_array() else {
        return Err(validation(
            i,
            "InvalidType",
            "custom_fields_values",
            "This value should be of type array.",
        ));
    };
    fields
        .iter()
        .map(|f| {
            let values = f.get("values").and_then(Value::as_array);
            match (f.get("field_code").and_then(Value::as_str), values) {
                (Some("PHONE"), Some(values)) => {
                    let phones: Vec<String> = values
                        .iter()
                        .filter_map(|v| v.get("value").and_then(Value::as_str).map(str::to_owned))
                        .collect();
                    Ok(phone_field(&phones))
                }
                (_, Some(_)) => Ok(f.clone()),
                (_, None) => Err(validation(
                    i,
                    "NotBlank",
                    "custom_fields_values.values",
                    "This value should not be blank.",
                )),
            }
        })
        .collect()
}

/// The first (and only allowed) element of `_embedded.<key>`.
fn embedded_one<'a>(
    item: &'a Map<String, Value>,
    i: usize,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, Answer> {
    let Some(list) = item.get("_embedded").and_then(|e| e.get(key)) else {
        return Ok(None);
    };
    match list.as_array().map(Vec::as_slice) {
        Some([]) => Ok(None),
        Some([one]) => one.as_object().map(Some).ok_or_else(|| {
            validation(
                i,
                "InvalidType",
                &format!("_embedded.{key}.0"),
                "Item must be an object",
            )
        }),
        _ => Err(validation(
            i,
            "Count",
            &format!("_embedded.{key}"),
            "This collection should contain 1 element or less.",
        )),
    }
}

fn new_contact(
    w: &mut World,
    fields: &Map<String, Value>,
    i: usize,
    responsible: u64,
    now: i64,
    unsorted: bool,
) -> Result<u64, Answer> {
    let id = w.account.next_id();
    let contact = Contact {
        id,
        name: fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        responsible_user_id: responsible,
        created_by: 0,
        created_at: now,
        custom_fields_values: read_fields(fields.get("custom_fields_values"), i)?,
        unsorted,
    };
    w.account.contacts.insert(id, contact);
    Ok(id)
}

fn unsorted_sip(core: &Core, req: &Incoming<'_>) -> Answer {
    let items = match batch(req, MAX_BATCH) {
        Ok(items) => items,
        Err(answer) => return answer,
    };
    let now = core.now();
    let mut world = core.world();
    let mut added = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let checked = (|| {
            let source_uid = text_field(item, i, "source_uid", true)?.unwrap_or_default().to_owned();
            let source_name = text_field(item, i, "source_name", true)?.unwrap_or_default().to_owned();
            let pipeline_id = match int_field(item, i, "pipeline_id", false)? {
                Some(id) => u64::try_from(id).unwrap_or(0),
                None => world.account.pipelines.iter().find(|p| p.is_main).map_or(0, |p| p.id),
            };
            let status = world
                .account
                .pipeline(pipeline_id)
                .filter(|p| p.is_unsorted_on)
                .and_then(|p| p.unsorted_status());
            let Some(status_id) = status else {
                return Err(validation(
                    i,
                    "NotSupportedChoice",
                    "pipeline_id",
                    "The value you selected is not a valid choice.",
                ));
            };
            let Some(metadata) = item.get("metadata").and_then(Value::as_object) else {
                return Err(validation(i, "NotBlank", "metadata", "This value should not be blank."));
            };
            for name in ["uniq", "from", "phone", "link", "service_code"] {
                text_field(metadata, i, name, false).map_err(|_| {
                    validation(
                        i,
                        "InvalidType",
                        &format!("metadata.{name}"),
                        "This value should be of type string.",
                    )
                })?;
            }
            for name in ["called_at", "duration"] {
                int_field(metadata, i, name, false).map_err(|_| {
                    validation(
                        i,
                        "InvalidType",
                        &format!("metadata.{name}"),
                        "This value should be of type int.",
                    )
                })?;
            }
            // "No two identical entities": the rule is not documented; the emulator calls two sip entries
            // identical when they share the pipeline and the call's `uniq`.
            let uniq = metadata.get("uniq").and_then(Value::as_str);
            if uniq.is_some()
                && world
                    .account
                    .unsorted
                    .iter()
                    .any(|u| u.pipeline_id == pipeline_id && u.metadata.get("uniq").and_then(Value::as_str) == uniq)
            {
                return Err(validation(
                    i,
                    "Duplicate",
                    "metadata.uniq",
                    "Such unsorted entity already exists.",
                ));
            }
            let lead = embedded_one(item, i, "leads")?;
            let contact = embedded_one(item, i, "contacts")?;
            Ok((
                source_uid,
                source_name,
                pipeline_id,
                status_id,
                metadata.clone(),
                lead.cloned(),
                contact.cloned(),
            ))
        })();
        let (source_uid, source_name, pipeline_id, status_id, metadata, lead, contact) = match checked {
            Ok(parts) => parts,
            Err(answer) => return answer,
        };
        let contact_id = match contact {
            Some(c) => match new_contact(&mut world, &c, i, 0, now, true) {
                Ok(id) => Some(id),
                Err(answer) => return answer,
            },
            None => None,
        };
        let lead_id = world.account.next_id();
        let lead = lead.unwrap_or_default();
        world.account.leads.insert(
            lead_id,
            Lead {
                id: lead_id,
                name: lead.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                price: lead.get("price").and_then(Value::as_i64).unwrap_or(0),
                pipeline_id,
                status_id,
                responsible_user_id: 0,
                contact_ids: contact_id.into_iter().collect(),
                company_id: None,
                created_at: now,
            },
        );
        let uid = format!(
            "{:040x}",
            u128::from(world.account.next_id()).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
        );
        world.account.unsorted.push(Unsorted {
            uid: uid.clone(),
            source_uid,
            source_name,
            pipeline_id,
            created_at: item.get("created_at").and_then(Value::as_i64).unwrap_or(now),
            metadata: Value::Object(metadata),
            lead_id,
            contact_id,
        });
        let contacts: Vec<Value> = contact_id.map(|id| json!({"id": id})).into_iter().collect();
        added.push(json!({
            "uid": uid,
            "account_id": core.cfg.account_id,
            "request_id": request_id(item, i),
            "_embedded": {"leads": [{"id": lead_id}], "contacts": contacts},
        }));
    }
    Answer::Hal(
        200,
        json!({"_total_items": added.len(), "_embedded": {"unsorted": added}}),
    )
}

fn complex(core: &Core, req: &Incoming<'_>) -> Answer {
    let items = match batch(req, MAX_COMPLEX) {
        Ok(items) => items,
        Err(answer) => return answer,
    };
    let now = core.now();
    let mut world = core.world();
    let mut added = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let checked = (|| {
            text_field(item, i, "name", false)?;
            int_field(item, i, "price", false)?;
            let responsible = user_field(&world, item, i, "responsible_user_id")?.unwrap_or(0);
            let pipeline = match int_field(item, i, "pipeline_id", false)? {
                Some(id) => world.account.pipeline(u64::try_from(id).unwrap_or(0)),
                None => world.account.pipelines.iter().find(|p| p.is_main),
            };
            let Some(pipeline) = pipeline else {
                return Err(validation(
                    i,
                    "NotSupportedChoice",
                    "pipeline_id",
                    "The value you selected is not a valid choice.",
                ));
            };
            let status_id = match int_field(item, i, "status_id", false)? {
                Some(id) => match pipeline.statuses.iter().find(|s| i64::try_from(s.id).ok() == Some(id)) {
                    Some(s) => s.id,
                    None => {
                        return Err(validation(
                            i,
                            "NotSupportedChoice",
                            "status_id",
                            "The value you selected is not a valid choice.",
                        ))
                    }
                },
                None => pipeline.statuses.iter().find(|s| s.kind == 0).map_or(0, |s| s.id),
            };
            read_fields(item.get("custom_fields_values"), i)?;
            let contact = embedded_one(item, i, "contacts")?.cloned();
            let company = embedded_one(item, i, "companies")?.cloned();
            Ok((responsible, pipeline.id, status_id, contact, company))
        })();
        let (responsible, pipeline_id, status_id, contact, company) = match checked {
            Ok(parts) => parts,
            Err(answer) => return answer,
        };
        let contact_id = match contact {
            Some(c) => match c.get("id").and_then(Value::as_u64) {
                Some(id) if world.account.contacts.contains_key(&id) => Some(id),
                Some(_) => return validation(i, "NotFound", "_embedded.contacts.0.id", "Contact not found"),
                None => {
                    let contact_responsible = c
                        .get("responsible_user_id")
                        .and_then(Value::as_u64)
                        .unwrap_or(responsible);
                    match new_contact(&mut world, &c, i, contact_responsible, now, false) {
                        Ok(id) => Some(id),
                        Err(answer) => return answer,
                    }
                }
            },
            None => None,
        };
        let company_id = company.map(|c| {
            let id = world.account.next_id();
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            world.account.companies.insert(id, Company { id, name });
            id
        });
        let lead_id = world.account.next_id();
        world.account.leads.insert(
            lead_id,
            Lead {
                id: lead_id,
                name: item.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                price: item.get("price").and_then(Value::as_i64).unwrap_or(0),
                pipeline_id,
                status_id,
                responsible_user_id: responsible,
                contact_ids: contact_id.into_iter().collect(),
                company_id,
                created_at: now,
            },
        );
        added.push(json!({
            "id": lead_id,
            "contact_id": contact_id,
            "company_id": company_id,
            "request_id": [request_id(item, i)],
            "merged": false,
        }));
    }
    Answer::Hal(200, Value::Array(added))
}

fn tasks(core: &Core, req: &Incoming<'_>) -> Answer {
    let items = match batch(req, MAX_BATCH) {
        Ok(items) => items,
        Err(answer) => return answer,
    };
    let mut world = core.world();
    for (i, item) in items.iter().enumerate() {
        let checked = (|| {
            text_field(item, i, "text", true)?;
            int_field(item, i, "complete_till", true)?;
            if int_field(item, i, "task_type_id", false)?.is_some_and(|t| t < 1) {
                return Err(validation(
                    i,
                    "NotSupportedChoice",
                    "task_type_id",
                    "The value you selected is not a valid choice.",
                ));
            }
            user_field(&world, item, i, "responsible_user_id")?;
            let entity_type = text_field(item, i, "entity_type", false)?;
            let entity_id = int_field(item, i, "entity_id", false)?.and_then(|id| u64::try_from(id).ok());
            let exists = match (entity_type, entity_id) {
                (None, None) => true,
                (Some("leads"), Some(id)) => world.account.leads.contains_key(&id),
                (Some("contacts"), Some(id)) => world.account.contacts.contains_key(&id),
                (Some("companies"), Some(id)) => world.account.companies.contains_key(&id),
                _ => false,
            };
            if !exists {
                return Err(validation(i, "NotFound", "entity_id", "Entity not found"));
            }
            Ok(())
        })();
        if let Err(answer) = checked {
            return answer;
        }
    }
    let mut added = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = world.account.next_id();
        let mut fields = (*item).clone();
        fields.remove("request_id");
        fields.entry("task_type_id").or_insert(json!(1));
        world.account.tasks.push(Task {
            id,
            fields: Value::Object(fields),
        });
        added.push(json!({
            "id": id,
            "request_id": request_id(item, i),
            "_links": {"self": href(format!("{}/api/v4/tasks/{id}", core.base()))},
        }));
    }
    Answer::Hal(200, json!({"_embedded": {"tasks": added}}))
}

/// `POST /api/v2/events`: incoming-call popups. The contact shown is the oldest matching the last 8 digits.
fn events(core: &Core, req: &Incoming<'_>, seq: u64) -> Answer {
    let Some(add) = req.body.get("add").and_then(Value::as_array).filter(|a| !a.is_empty()) else {
        return problem(400, "Bad Request", "`add` must be a non-empty array of events");
    };
    let now = core.now();
    let mut world = core.world();
    let mut popups = Vec::new();
    for (i, event) in add.iter().enumerate() {
        let Some(event) = event.as_object() else {
            return validation(i, "InvalidType", "add", "Item must be an object");
        };
        if event.get("type").and_then(Value::as_str) != Some("phone_call") {
            return validation(
                i,
                "NotSupportedChoice",
                "type",
                "The value you selected is not a valid choice.",
            );
        }
        let phone_number = match text_field(event, i, "phone_number", true) {
            Ok(p) => p.unwrap_or_default().to_owned(),
            Err(answer) => return answer,
        };
        let users = match event.get("users") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => {
                let ids: Option<Vec<u64>> = list.iter().map(Value::as_u64).collect();
                match ids.filter(|ids| ids.iter().all(|id| world.account.user(*id).is_some())) {
                    Some(ids) => Some(ids),
                    None => {
                        return validation(
                            i,
                            "NotSupportedChoice",
                            "users",
                            "The value you selected is not a valid choice.",
                        )
                    }
                }
            }
            Some(_) => return validation(i, "InvalidType", "users", "This value should be of type array."),
        };
        let contact_id = world.account.contacts_by_phone(&phone_number, 8).first().map(|c| c.id);
        popups.push(Popup {
            seq,
            at: now,
            phone_number,
            users,
            contact_id,
        });
    }
    world.popups.extend(popups);
    Answer::Json(202, json!({}))
}
