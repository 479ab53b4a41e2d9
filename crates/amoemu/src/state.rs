//! The account's data and tokens, behind one lock, and its JSON renderings (the documented shapes).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::EmulatorConfig;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub is_admin: bool,
    pub is_active: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: u64,
    pub name: String,
    /// 1 = the pipeline's unsorted status, 0 otherwise.
    pub kind: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    pub id: u64,
    pub name: String,
    pub is_main: bool,
    pub is_unsorted_on: bool,
    pub statuses: Vec<Status>,
}

impl Pipeline {
    pub fn unsorted_status(&self) -> Option<u64> {
        self.statuses.iter().find(|s| s.kind == 1).map(|s| s.id)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    pub id: u64,
    pub name: String,
    pub responsible_user_id: u64,
    pub created_by: u64,
    pub created_at: i64,
    /// Stored in the read shape (`field_code`, `field_type`, `values[{value, enum_code}]`).
    pub custom_fields_values: Vec<Value>,
    /// Hidden until its unsorted entry is accepted.
    pub unsorted: bool,
}

impl Contact {
    /// Values of the PHONE field.
    pub fn phones(&self) -> Vec<String> {
        self.custom_fields_values
            .iter()
            .filter(|f| f.get("field_code").and_then(Value::as_str) == Some("PHONE"))
            .filter_map(|f| f.get("values").and_then(Value::as_array))
            .flatten()
            .filter_map(|v| v.get("value").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Lead {
    pub id: u64,
    pub name: String,
    pub price: i64,
    pub pipeline_id: u64,
    pub status_id: u64,
    pub responsible_user_id: u64,
    pub contact_ids: Vec<u64>,
    pub company_id: Option<u64>,
    pub created_at: i64,
}

impl Lead {
    /// Not won (142) and not lost (143).
    pub fn is_active(&self) -> bool {
        self.status_id != 142 && self.status_id != 143
    }
}

/// A call added with `POST /api/v4/calls`, as sent plus where it was attached.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub id: u64,
    pub entity_type: String,
    pub entity_id: u64,
    pub fields: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unsorted {
    pub uid: String,
    pub source_uid: String,
    pub source_name: String,
    pub pipeline_id: u64,
    pub created_at: i64,
    pub metadata: Value,
    pub lead_id: u64,
    pub contact_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub id: u64,
    pub fields: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Company {
    pub id: u64,
    pub name: String,
}

/// Everything the account holds, for assertions.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub pipelines: Vec<Pipeline>,
    pub contacts: Vec<Contact>,
    pub leads: Vec<Lead>,
    pub companies: Vec<Company>,
    pub calls: Vec<Call>,
    pub unsorted: Vec<Unsorted>,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone)]
pub(crate) struct Expiring {
    pub expires_at: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Tokens {
    pub access: HashMap<String, Expiring>,
    pub refresh: HashMap<String, Expiring>,
    pub codes: HashMap<String, Expiring>,
    pub serial: u64,
}

impl Tokens {
    pub fn next(&mut self, kind: &str) -> String {
        self.serial += 1;
        format!("{kind}-{:016x}", self.serial.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A new (access, refresh) pair, valid from `now` for the configured lifetimes.
    pub fn issue_pair(&mut self, now: i64, cfg: &EmulatorConfig) -> (String, String) {
        let access = self.next("access");
        let refresh = self.next("refresh");
        let lifetime = |secs: i64| Expiring {
            expires_at: now.saturating_add(secs),
        };
        self.access
            .insert(access.clone(), lifetime(cfg.access_token_lifetime_secs));
        self.refresh
            .insert(refresh.clone(), lifetime(cfg.refresh_token_lifetime_secs));
        (access, refresh)
    }
}

#[derive(Debug)]
pub(crate) struct Account {
    pub users: Vec<User>,
    pub pipelines: Vec<Pipeline>,
    pub contacts: BTreeMap<u64, Contact>,
    pub leads: BTreeMap<u64, Lead>,
    pub companies: BTreeMap<u64, Company>,
    pub calls: Vec<Call>,
    pub unsorted: Vec<Unsorted>,
    pub tasks: Vec<Task>,
    next_id: u64,
}

/// The PHONE field in the read shape.
pub(crate) fn phone_field(values: &[String]) -> Value {
    json!({
        "field_id": 100_001,
        "field_name": "Телефон",
        "field_code": "PHONE",
        "field_type": "multitext",
        "values": values.iter().map(|v| json!({"value": v, "enum_id": 200_001, "enum_code": "WORK"})).collect::<Vec<_>>(),
    })
}

impl Account {
    pub fn from_config(cfg: &EmulatorConfig, now: i64) -> Self {
        let users = cfg
            .users
            .iter()
            .map(|u| User {
                id: u.id,
                name: u.name.clone(),
                email: u.email.clone(),
                is_admin: u.is_admin,
                is_active: u.is_active,
            })
            .collect();
        let pipelines = cfg
            .pipelines
            .iter()
            .map(|p| {
                let mut statuses = vec![Status {
                    id: p.unsorted_status_id,
                    name: "Неразобранное".into(),
                    kind: 1,
                }];
                statuses.extend(p.statuses.iter().map(|s| Status {
                    id: s.id,
                    name: s.name.clone(),
                    kind: 0,
                }));
                statuses.push(Status {
                    id: 142,
                    name: "Успешно реализовано".into(),
                    kind: 0,
                });
                statuses.push(Status {
                    id: 143,
                    name: "Закрыто и не реализовано".into(),
                    kind: 0,
                });
                Pipeline {
                    id: p.id,
                    name: p.name.clone(),
                    is_main: p.is_main,
                    is_unsorted_on: p.is_unsorted_on,
                    statuses,
                }
            })
            .collect();
        let contacts = cfg
            .contacts
            .iter()
            .map(|c| {
                let contact = Contact {
                    id: c.id,
                    name: c.name.clone(),
                    responsible_user_id: c.responsible_user_id,
                    created_by: 0,
                    created_at: now,
                    custom_fields_values: vec![phone_field(&c.phones)],
                    unsorted: false,
                };
                (c.id, contact)
            })
            .collect();
        let leads = cfg
            .leads
            .iter()
            .map(|l| {
                let lead = Lead {
                    id: l.id,
                    name: l.name.clone(),
                    price: 0,
                    pipeline_id: l.pipeline_id,
                    status_id: l.status_id,
                    responsible_user_id: l.responsible_user_id,
                    contact_ids: l.contact_ids.clone(),
                    company_id: None,
                    created_at: now,
                };
                (l.id, lead)
            })
            .collect();
        Account {
            users,
            pipelines,
            contacts,
            leads,
            companies: BTreeMap::new(),
            calls: Vec::new(),
            unsorted: Vec::new(),
            tasks: Vec::new(),
            next_id: 30_000_001,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn user(&self, id: u64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn pipeline(&self, id: u64) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    /// Contacts whose phone ends with the same last `digits` digits as `phone` (visible ones only).
    pub fn contacts_by_phone(&self, phone: &str, digits: usize) -> Vec<&Contact> {
        let key = last_digits(phone, digits);
        if key.is_empty() {
            return Vec::new();
        }
        self.contacts
            .values()
            .filter(|c| !c.unsorted && c.phones().iter().any(|p| last_digits(p, digits) == key))
            .collect()
    }

    pub fn active_leads_of(&self, contact_id: u64) -> Vec<&Lead> {
        self.leads
            .values()
            .filter(|l| l.is_active() && l.contact_ids.contains(&contact_id))
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            users: self.users.clone(),
            pipelines: self.pipelines.clone(),
            contacts: self.contacts.values().cloned().collect(),
            leads: self.leads.values().cloned().collect(),
            companies: self.companies.values().cloned().collect(),
            calls: self.calls.clone(),
            unsorted: self.unsorted.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

/// The last `n` digits of a number (all of them when it has fewer).
pub fn last_digits(phone: &str, n: usize) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(n)..].iter().collect()
}

/// A link object `{"href": …}`.
pub(crate) fn href(url: String) -> Value {
    json!({ "href": url })
}

pub(crate) fn render_user(u: &User, base: &str) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "lang": "ru",
        "rights": {"is_admin": u.is_admin, "is_free": false, "is_active": u.is_active, "group_id": null, "role_id": null},
        "_links": {"self": href(format!("{base}/api/v4/users/{}", u.id))},
    })
}

pub(crate) fn render_contact(c: &Contact, acc: &Account, account_id: u64, with_leads: bool, base: &str) -> Value {
    let mut embedded = json!({"tags": [], "companies": []});
    if with_leads {
        let leads: Vec<Value> = acc
            .leads
            .values()
            .filter(|l| l.contact_ids.contains(&c.id))
            .map(|l| json!({"id": l.id, "_links": {"self": href(format!("{base}/api/v4/leads/{}", l.id))}}))
            .collect();
        embedded["leads"] = Value::Array(leads);
    }
    let fields = if c.custom_fields_values.is_empty() {
        Value::Null
    } else {
        Value::Array(c.custom_fields_values.clone())
    };
    json!({
        "id": c.id,
        "name": c.name,
        "first_name": "",
        "last_name": "",
        "responsible_user_id": c.responsible_user_id,
        "group_id": 0,
        "created_by": c.created_by,
        "updated_by": c.created_by,
        "created_at": c.created_at,
        "updated_at": c.created_at,
        "closest_task_at": null,
        "custom_fields_values": fields,
        "account_id": account_id,
        "_links": {"self": href(format!("{base}/api/v4/contacts/{}", c.id))},
        "_embedded": embedded,
    })
}

pub(crate) fn render_pipeline(p: &Pipeline, account_id: u64, base: &str) -> Value {
    let statuses: Vec<Value> = p
        .statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": s.id,
                "name": s.name,
                "sort": (i + 1) * 10,
                "is_editable": s.kind == 0 && s.id != 142 && s.id != 143,
                "pipeline_id": p.id,
                "color": "#99ccff",
                "type": s.kind,
                "account_id": account_id,
            })
        })
        .collect();
    json!({
        "id": p.id,
        "name": p.name,
        "sort": 1,
        "is_main": p.is_main,
        "is_unsorted_on": p.is_unsorted_on,
        "is_archive": false,
        "account_id": account_id,
        "_links": {"self": href(format!("{base}/api/v4/leads/pipelines/{}", p.id))},
        "_embedded": {"statuses": statuses},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_digits_ignores_formatting() {
        assert_eq!(last_digits("+7 (912) 345-67-89", 10), "9123456789");
        assert_eq!(last_digits("89123456789", 10), "9123456789");
        assert_eq!(last_digits("101", 10), "101");
        assert_eq!(last_digits("", 10), "");
    }
}
