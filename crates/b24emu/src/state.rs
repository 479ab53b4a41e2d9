//! The portal's data: users, CRM entities, calls, activities, tasks, lines, event handlers, files.
//! Public types here are what `Emulator::state()` hands out as a snapshot.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::{EmulatorConfig, SeedEntity, SeedStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EntityType {
    Lead,
    Contact,
    Company,
}

impl EntityType {
    pub fn name(self) -> &'static str {
        match self {
            EntityType::Lead => "LEAD",
            EntityType::Contact => "CONTACT",
            EntityType::Company => "COMPANY",
        }
    }

    /// CRM object type id: 1 lead, 3 contact, 4 company.
    pub fn type_id(self) -> u32 {
        match self {
            EntityType::Lead => 1,
            EntityType::Contact => 3,
            EntityType::Company => 4,
        }
    }

    /// Prefix in `UF_CRM_TASK` bindings (`L_4`, `C_7`, `CO_5`).
    pub fn short(self) -> &'static str {
        match self {
            EntityType::Lead => "L",
            EntityType::Contact => "C",
            EntityType::Company => "CO",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "LEAD" | "1" => Some(EntityType::Lead),
            "CONTACT" | "3" => Some(EntityType::Contact),
            "COMPANY" | "4" => Some(EntityType::Company),
            _ => None,
        }
    }

    /// Scalar fields that `add`/`update` accept; anything else (except `UF_*`) is ignored, as documented.
    pub fn writable_fields(self) -> &'static [&'static str] {
        match self {
            EntityType::Lead => &[
                "TITLE",
                "NAME",
                "LAST_NAME",
                "SECOND_NAME",
                "STATUS_ID",
                "STATUS_DESCRIPTION",
                "SOURCE_ID",
                "SOURCE_DESCRIPTION",
                "ASSIGNED_BY_ID",
                "COMMENTS",
                "CONTACT_ID",
                "COMPANY_ID",
                "COMPANY_TITLE",
                "OPENED",
                "OPPORTUNITY",
                "CURRENCY_ID",
                "POST",
                "ADDRESS",
                "BIRTHDATE",
                "HONORIFIC",
            ],
            EntityType::Contact => &[
                "NAME",
                "LAST_NAME",
                "SECOND_NAME",
                "TYPE_ID",
                "SOURCE_ID",
                "SOURCE_DESCRIPTION",
                "ASSIGNED_BY_ID",
                "COMPANY_ID",
                "LEAD_ID",
                "COMMENTS",
                "OPENED",
                "POST",
                "ADDRESS",
                "BIRTHDATE",
                "HONORIFIC",
                "EXPORT",
            ],
            EntityType::Company => &[
                "TITLE",
                "COMPANY_TYPE",
                "INDUSTRY",
                "EMPLOYEES",
                "REVENUE",
                "CURRENCY_ID",
                "ASSIGNED_BY_ID",
                "COMMENTS",
                "OPENED",
                "LEAD_ID",
                "ADDRESS",
            ],
        }
    }

    /// Defaults Bitrix24 fills in on `add`.
    pub fn defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            EntityType::Lead => &[
                ("TITLE", ""),
                ("STATUS_ID", "NEW"),
                ("SOURCE_ID", ""),
                ("OPENED", "Y"),
                ("OPPORTUNITY", "0.00"),
                ("CURRENCY_ID", "RUB"),
            ],
            EntityType::Contact => &[
                ("TYPE_ID", "CLIENT"),
                ("SOURCE_ID", ""),
                ("OPENED", "Y"),
                ("EXPORT", "Y"),
            ],
            EntityType::Company => &[
                ("TITLE", ""),
                ("COMPANY_TYPE", "CUSTOMER"),
                ("OPENED", "Y"),
                ("CURRENCY_ID", "RUB"),
            ],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Multifield {
    pub id: u64,
    pub type_id: String,
    pub value: String,
    pub value_type: String,
    /// `phone_key` of the value, kept so phone searches do not re-normalise every stored number.
    #[serde(skip)]
    pub(crate) search_key: String,
}

impl Multifield {
    pub(crate) fn set_value(&mut self, value: String) {
        self.search_key = phone_key(&value);
        self.value = value;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CrmEntity {
    pub id: u64,
    pub entity_type: EntityType,
    /// Scalar fields as Bitrix24 returns them (strings), without ID, dates and multifields.
    pub fields: BTreeMap<String, Value>,
    pub phones: Vec<Multifield>,
    pub emails: Vec<Multifield>,
    pub created_at: DateTime<Utc>,
    pub modified_at: DateTime<Utc>,
}

impl CrmEntity {
    pub fn field_str(&self, name: &str) -> Option<String> {
        match self.fields.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    pub fn assigned_by(&self) -> Option<u64> {
        self.field_str("ASSIGNED_BY_ID")?.parse().ok()
    }

    /// Display name: TITLE for leads/companies, NAME LAST_NAME for contacts.
    pub fn display_name(&self) -> String {
        let title = self.field_str("TITLE").unwrap_or_default();
        let person = [self.field_str("NAME"), self.field_str("LAST_NAME")]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        match self.entity_type {
            EntityType::Contact if !person.is_empty() => person,
            _ if !title.is_empty() => title,
            _ => person,
        }
    }
}

/// A portal user: exactly what the data file seeds (users are not created through the API).
pub use crate::config::SeedUser as User;

impl User {
    /// The row of `user.get`: IDs as strings, `ACTIVE` as a boolean, `UF_DEPARTMENT` as integers.
    pub fn to_api(&self) -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        m.insert("ID".into(), Value::String(self.id.to_string()));
        m.insert("ACTIVE".into(), Value::Bool(self.active));
        m.insert("NAME".into(), self.name.clone().into());
        m.insert("LAST_NAME".into(), self.last_name.clone().into());
        m.insert("SECOND_NAME".into(), self.second_name.clone().into());
        m.insert("EMAIL".into(), self.email.clone().into());
        m.insert("WORK_POSITION".into(), self.work_position.clone().into());
        m.insert("PERSONAL_MOBILE".into(), self.personal_mobile.clone().into());
        m.insert("WORK_PHONE".into(), self.work_phone.clone().into());
        m.insert("PERSONAL_PHONE".into(), self.personal_phone.clone().into());
        m.insert("UF_PHONE_INNER".into(), self.uf_phone_inner.clone().into());
        m.insert(
            "UF_DEPARTMENT".into(),
            Value::Array(self.departments.iter().map(|d| Value::from(*d)).collect()),
        );
        m.insert("USER_TYPE".into(), self.user_type.clone().into());
        m.insert("IS_ONLINE".into(), (if self.is_online { "Y" } else { "N" }).into());
        m
    }
}

/// One registered external call and, once finished, its statistics record.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub call_id: String,
    pub external_call_id: Option<String>,
    /// Which app or webhook registered it (`app:<client_id>`, `webhook:<user>`, `portal` for click-to-call).
    pub registered_by: String,
    pub user_id: u64,
    pub phone_number: String,
    pub call_type: u8,
    pub line_number: Option<String>,
    pub crm_source: Option<String>,
    pub start_date: DateTime<FixedOffset>,
    pub registered_at: DateTime<Utc>,
    /// Number of `register` requests answered with this CALL_ID (more than one = re-registration).
    pub registrations: u32,
    pub crm_entity: Option<(EntityType, u64)>,
    pub crm_created: Vec<(EntityType, u64)>,
    pub show: bool,
    pub finish: Option<CallFinish>,
    /// Current record (a repeated attachRecord replaces it) and every file ever attached.
    pub record_file_id: Option<u64>,
    pub record_history: Vec<u64>,
    pub record_url: Option<String>,
    pub transcript_ids: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallFinish {
    pub statistic_id: u64,
    pub user_id: u64,
    pub duration: i64,
    pub cost: f64,
    pub cost_currency: String,
    pub status_code: String,
    pub failed_reason: String,
    pub vote: Option<i64>,
    pub finished_at: DateTime<Utc>,
    pub activity_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub id: u64,
    /// All fields as `crm.activity.get` returns them (strings), including `ID`.
    pub fields: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub id: u64,
    /// Fields as sent (UPPER_CASE keys), plus defaults.
    pub fields: BTreeMap<String, Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExternalLine {
    pub id: u64,
    pub number: String,
    pub name: String,
    pub crm_auto_create: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub id: u64,
    pub entity_id: String,
    pub status_id: String,
    pub name: String,
    pub sort: u32,
    pub system: bool,
    pub semantics: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventHandler {
    pub id: u64,
    pub event: String,
    pub handler: String,
    pub auth_type: u64,
    pub offline: bool,
    /// The app that bound it.
    pub owner: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OfflineEvent {
    pub id: u64,
    pub event_name: String,
    pub data: Value,
    pub auth_user_id: u64,
    pub created_at: DateTime<Utc>,
    pub message_id: String,
    /// Set when read with `clear=0`: the events are then marked for that process until cleared.
    pub process_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredFile {
    pub id: u64,
    pub name: String,
    pub call_id: Option<String>,
    #[serde(skip)]
    pub content: Vec<u8>,
    pub size: usize,
    pub uploaded_at: DateTime<Utc>,
}

/// Read-only copy of the portal data, from `Emulator::state()`.
#[derive(Debug, Clone, Serialize)]
pub struct StateSnapshot {
    pub users: Vec<User>,
    pub leads: Vec<CrmEntity>,
    pub contacts: Vec<CrmEntity>,
    pub companies: Vec<CrmEntity>,
    pub calls: Vec<Call>,
    pub activities: Vec<Activity>,
    pub tasks: Vec<Task>,
    pub external_lines: Vec<ExternalLine>,
    pub event_handlers: Vec<EventHandler>,
    pub offline_events: Vec<OfflineEvent>,
    pub files: Vec<StoredFile>,
}

impl StateSnapshot {
    pub fn call(&self, call_id: &str) -> Option<&Call> {
        self.calls.iter().find(|c| c.call_id == call_id)
    }

    pub fn entities(&self, t: EntityType) -> &[CrmEntity] {
        match t {
            EntityType::Lead => &self.leads,
            EntityType::Contact => &self.contacts,
            EntityType::Company => &self.companies,
        }
    }

    pub fn file(&self, id: u64) -> Option<&StoredFile> {
        self.files.iter().find(|f| f.id == id)
    }
}

/// Monotonic id sequences, one per kind of record.
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    pub lead: u64,
    pub contact: u64,
    pub company: u64,
    pub multifield: u64,
    pub activity: u64,
    pub task: u64,
    pub statistic: u64,
    pub file: u64,
    pub line: u64,
    pub handler: u64,
    pub offline_event: u64,
    pub transcript: u64,
    pub hash: u64,
}

fn bump(seq: &mut u64) -> u64 {
    *seq += 1;
    *seq
}

/// Mutable portal data behind the emulator's lock.
#[derive(Debug)]
pub(crate) struct Portal {
    pub users: BTreeMap<u64, User>,
    pub leads: BTreeMap<u64, CrmEntity>,
    pub contacts: BTreeMap<u64, CrmEntity>,
    pub companies: BTreeMap<u64, CrmEntity>,
    pub statuses: Vec<Status>,
    pub calls: Vec<Call>,
    pub call_index: HashMap<String, usize>,
    pub activities: BTreeMap<u64, Activity>,
    pub tasks: BTreeMap<u64, Task>,
    pub lines: Vec<ExternalLine>,
    pub handlers: Vec<EventHandler>,
    pub offline_events: Vec<OfflineEvent>,
    pub files: BTreeMap<u64, StoredFile>,
    /// uploadUrl token → CALL_ID awaiting a two-step record upload.
    pub pending_uploads: HashMap<String, PendingUpload>,
    pub seq: Sequences,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct PendingUpload {
    pub call_id: String,
    pub filename: String,
}

impl Portal {
    pub fn from_config(cfg: &EmulatorConfig, now: DateTime<Utc>) -> Self {
        let mut portal = Portal {
            users: BTreeMap::new(),
            leads: BTreeMap::new(),
            contacts: BTreeMap::new(),
            companies: BTreeMap::new(),
            statuses: Vec::new(),
            calls: Vec::new(),
            call_index: HashMap::new(),
            activities: BTreeMap::new(),
            tasks: BTreeMap::new(),
            lines: Vec::new(),
            handlers: Vec::new(),
            offline_events: Vec::new(),
            files: BTreeMap::new(),
            pending_uploads: HashMap::new(),
            seq: Sequences::default(),
            seed: cfg.seed,
        };
        for u in &cfg.users {
            portal.users.insert(u.id, u.clone());
        }
        for (t, seeds) in [
            (EntityType::Lead, &cfg.leads),
            (EntityType::Contact, &cfg.contacts),
            (EntityType::Company, &cfg.companies),
        ] {
            for s in seeds {
                portal.seed_entity(t, s, now);
            }
        }
        let statuses = cfg.statuses.clone().unwrap_or_else(default_statuses);
        for (i, s) in statuses.into_iter().enumerate() {
            portal.statuses.push(Status {
                id: i as u64 + 1,
                entity_id: s.entity_id,
                status_id: s.status_id,
                name: s.name,
                sort: s.sort,
                system: s.system,
                semantics: s.semantics,
            });
        }
        for l in &cfg.external_lines {
            let id = bump(&mut portal.seq.line);
            portal.lines.push(ExternalLine {
                id,
                number: l.number.clone(),
                name: l.name.clone(),
                crm_auto_create: l.crm_auto_create,
            });
        }
        portal
    }

    fn seed_entity(&mut self, t: EntityType, s: &SeedEntity, now: DateTime<Utc>) {
        let id = if s.id == 0 { self.next_entity_id(t) } else { s.id };
        let seq = self.entity_seq(t);
        *seq = (*seq).max(id);
        let mut fields: BTreeMap<String, Value> = t
            .defaults()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        for (k, v) in &s.fields {
            let v = match v {
                Value::Number(n) => Value::String(n.to_string()),
                other => other.clone(),
            };
            fields.insert(k.to_ascii_uppercase(), v);
        }
        let phones = s
            .phones
            .iter()
            .map(|p| self.new_multifield("PHONE", &p.value, &p.value_type))
            .collect();
        let emails = s
            .emails
            .iter()
            .map(|p| self.new_multifield("EMAIL", &p.value, &p.value_type))
            .collect();
        let entity = CrmEntity {
            id,
            entity_type: t,
            fields,
            phones,
            emails,
            created_at: now,
            modified_at: now,
        };
        self.entities_mut(t).insert(id, entity);
    }

    pub fn new_multifield(&mut self, type_id: &str, value: &str, value_type: &str) -> Multifield {
        Multifield {
            id: bump(&mut self.seq.multifield),
            type_id: type_id.into(),
            search_key: phone_key(value),
            value: value.into(),
            value_type: if value_type.is_empty() {
                "WORK".into()
            } else {
                value_type.into()
            },
        }
    }

    fn entity_seq(&mut self, t: EntityType) -> &mut u64 {
        match t {
            EntityType::Lead => &mut self.seq.lead,
            EntityType::Contact => &mut self.seq.contact,
            EntityType::Company => &mut self.seq.company,
        }
    }

    pub fn next_entity_id(&mut self, t: EntityType) -> u64 {
        bump(self.entity_seq(t))
    }

    pub fn entities(&self, t: EntityType) -> &BTreeMap<u64, CrmEntity> {
        match t {
            EntityType::Lead => &self.leads,
            EntityType::Contact => &self.contacts,
            EntityType::Company => &self.companies,
        }
    }

    pub fn entities_mut(&mut self, t: EntityType) -> &mut BTreeMap<u64, CrmEntity> {
        match t {
            EntityType::Lead => &mut self.leads,
            EntityType::Contact => &mut self.contacts,
            EntityType::Company => &mut self.companies,
        }
    }

    pub fn next_activity_id(&mut self) -> u64 {
        bump(&mut self.seq.activity)
    }
    pub fn next_task_id(&mut self) -> u64 {
        bump(&mut self.seq.task)
    }
    pub fn next_statistic_id(&mut self) -> u64 {
        bump(&mut self.seq.statistic)
    }
    pub fn next_file_id(&mut self) -> u64 {
        bump(&mut self.seq.file)
    }
    pub fn next_line_id(&mut self) -> u64 {
        bump(&mut self.seq.line)
    }
    pub fn next_handler_id(&mut self) -> u64 {
        bump(&mut self.seq.handler)
    }
    pub fn next_offline_event_id(&mut self) -> u64 {
        bump(&mut self.seq.offline_event)
    }
    pub fn next_transcript_id(&mut self) -> u64 {
        bump(&mut self.seq.transcript)
    }

    /// A deterministic 32-hex-digit value: equal seeds and request order give equal CALL_IDs and tokens.
    pub fn next_hash(&mut self, salt: &str) -> String {
        use md5::{Digest, Md5};
        let n = bump(&mut self.seq.hash);
        let digest = Md5::digest(format!("{}:{}:{}", self.seed, n, salt).as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn call(&self, call_id: &str) -> Option<&Call> {
        self.call_index.get(call_id).and_then(|&i| self.calls.get(i))
    }

    pub fn call_mut(&mut self, call_id: &str) -> Option<&mut Call> {
        let i = *self.call_index.get(call_id)?;
        self.calls.get_mut(i)
    }

    pub fn add_call(&mut self, call: Call) {
        self.call_index.insert(call.call_id.clone(), self.calls.len());
        self.calls.push(call);
    }

    pub fn user_by_inner(&self, inner: &str) -> Option<&User> {
        let inner = inner.trim();
        self.users
            .values()
            .find(|u| !inner.is_empty() && u.uf_phone_inner == inner)
    }

    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            users: self.users.values().cloned().collect(),
            leads: self.leads.values().cloned().collect(),
            contacts: self.contacts.values().cloned().collect(),
            companies: self.companies.values().cloned().collect(),
            calls: self.calls.clone(),
            activities: self.activities.values().cloned().collect(),
            tasks: self.tasks.values().cloned().collect(),
            external_lines: self.lines.clone(),
            event_handlers: self.handlers.clone(),
            offline_events: self.offline_events.clone(),
            files: self.files.values().cloned().collect(),
        }
    }
}

/// Bitrix24's default lead statuses and sources.
fn default_statuses() -> Vec<SeedStatus> {
    let status = |entity: &str, id: &str, name: &str, sort: u32, semantics: Option<&str>| SeedStatus {
        entity_id: entity.into(),
        status_id: id.into(),
        name: name.into(),
        sort,
        system: matches!(id, "NEW" | "CONVERTED" | "JUNK" | "OTHER"),
        semantics: semantics.map(String::from),
    };
    vec![
        status("STATUS", "NEW", "Unassigned", 10, None),
        status("STATUS", "IN_PROCESS", "In progress", 20, None),
        status("STATUS", "PROCESSED", "Processed", 30, None),
        status("STATUS", "CONVERTED", "Good lead", 40, Some("S")),
        status("STATUS", "JUNK", "Junk lead", 50, Some("F")),
        status("SOURCE", "CALL", "Call", 10, None),
        status("SOURCE", "EMAIL", "E-Mail", 20, None),
        status("SOURCE", "WEB", "Website", 30, None),
        status("SOURCE", "ADVERTISING", "Advertising", 40, None),
        status("SOURCE", "PARTNER", "Existing client", 50, None),
        status("SOURCE", "RECOMMENDATION", "By recommendation", 60, None),
        status("SOURCE", "TRADE_SHOW", "Show/Exhibition", 70, None),
        status("SOURCE", "WEBFORM", "CRM form", 80, None),
        status("SOURCE", "CALLBACK", "Callback", 90, None),
        status("SOURCE", "RC_GENERATOR", "Sales boost", 100, None),
        status("SOURCE", "STORE", "Online Store", 110, None),
        status("SOURCE", "OTHER", "Other", 120, None),
    ]
}

/// Digits of a phone number with any extension cut off: the key both sides of a phone search compare.
pub fn phone_key(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    let cut = ["ext", "доб", "#", ",", ";", "x"]
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .unwrap_or(lower.len());
    lower[..cut].chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_key_ignores_formatting_and_extension() {
        assert_eq!(phone_key("+7 (900) 123-45-67"), "79001234567");
        assert_eq!(phone_key("+7 900 123 45 67 ext. 12"), "79001234567");
        assert_eq!(phone_key("89001234567"), "89001234567");
    }
}
