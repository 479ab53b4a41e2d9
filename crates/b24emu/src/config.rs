//! Emulator configuration: portal identity, credentials, limits, the switches for points where the Bitrix24
//! sources disagree, and the seed data. The same structure is read from TOML by the `b24emu` binary.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::error::EmuError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Seed for generated identifiers (CALL_ID hashes, tokens): equal seeds give equal runs.
    pub seed: u64,
    pub portal: PortalConfig,
    pub app: AppConfig,
    pub webhook: WebhookConfig,
    pub limits: LimitsConfig,
    pub conflicts: Conflicts,
    pub events: EventsConfig,
    pub clock: ClockConfig,
    pub users: Vec<SeedUser>,
    pub leads: Vec<SeedEntity>,
    pub contacts: Vec<SeedEntity>,
    pub companies: Vec<SeedEntity>,
    /// `crm.status.list` rows; `None` seeds Bitrix24's default lead statuses and sources.
    pub statuses: Option<Vec<SeedStatus>>,
    pub external_lines: Vec<SeedLine>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            portal: PortalConfig::default(),
            app: AppConfig::default(),
            webhook: WebhookConfig::default(),
            limits: LimitsConfig::default(),
            conflicts: Conflicts::default(),
            events: EventsConfig::default(),
            clock: ClockConfig::default(),
            users: default_users(),
            leads: Vec::new(),
            contacts: Vec::new(),
            companies: Vec::new(),
            statuses: None,
            external_lines: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    pub fn from_toml_str(text: &str) -> Result<Self, EmuError> {
        toml::from_str(text).map_err(|e| EmuError::Config(e.to_string()))
    }

    pub fn from_toml_file(path: &Path) -> Result<Self, EmuError> {
        let text = std::fs::read_to_string(path).map_err(|e| EmuError::Io {
            context: format!("reading {}", path.display()),
            source: e,
        })?;
        Self::from_toml_str(&text)
    }

    /// A config whose clock stands still until advanced: what deterministic tests want.
    pub fn frozen_at(start: DateTime<FixedOffset>) -> Self {
        let mut cfg = Self::default();
        cfg.clock.start = Some(start);
        cfg.clock.frozen = true;
        cfg
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    /// Portal time zone, minutes east of UTC; dates in responses carry this offset.
    pub utc_offset_minutes: i32,
    pub member_id: String,
    /// CRM mode: with `false` (lead-less CRM) CRM_CREATE makes a contact instead of a lead.
    pub leads_enabled: bool,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            utc_offset_minutes: 180,
            member_id: "a223c6b3710f85df22e9377d6c4f7553".into(),
            leads_enabled: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Sent as `auth[application_token]` with every event so handlers can verify the sender.
    pub application_token: String,
    /// `REST_APP_ID` / `REST_APP_NAME` in `telephony.externalCall.finish` results.
    pub rest_app_id: String,
    pub rest_app_name: String,
    /// The user the app acts for (the installing admin).
    pub user_id: u64,
    pub scope: Vec<String>,
    pub access_token_lifetime_secs: i64,
    pub refresh_token_lifetime_secs: i64,
    /// Initial token pair; generated from `seed` when absent.
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            client_id: "local.5f0a1b2c3d4e5f.12345678".into(),
            client_secret: "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA".into(),
            application_token: "51856fefc120afa4b628cc82d3935cce".into(),
            rest_app_id: "3".into(),
            rest_app_name: "ringlink".into(),
            user_id: 1,
            scope: default_scope(),
            access_token_lifetime_secs: 3600,
            refresh_token_lifetime_secs: 180 * 24 * 3600,
            access_token: None,
            refresh_token: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub user_id: u64,
    pub secret: String,
    pub scope: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            user_id: 1,
            secret: "k3b9x2m7q1w8e5r4".into(),
            scope: default_scope(),
        }
    }
}

fn default_scope() -> Vec<String> {
    ["crm", "telephony", "user", "user_basic", "task", "placement"]
        .into_iter()
        .map(String::from)
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Leaky bucket: `false` lets every request through.
    pub bucket_enabled: bool,
    /// Requests drained per second (2 on ordinary plans, 5 on Enterprise).
    pub bucket_drain_per_sec: f64,
    /// Counter above this rejects with 503 QUERY_LIMIT_EXCEEDED (50 ordinary, 250 Enterprise).
    pub bucket_capacity: u32,
    pub operating: OperatingConfig,
    /// Commands allowed in one `batch`.
    pub max_batch_commands: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            bucket_enabled: true,
            bucket_drain_per_sec: 2.0,
            bucket_capacity: 50,
            operating: OperatingConfig::default(),
            max_batch_commands: 50,
        }
    }
}

/// The per-method "operating" time limit. The emulator does no real work, so each call is charged a
/// configured cost in seconds; with the default cost of 0 the limit never triggers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatingConfig {
    pub enabled: bool,
    pub limit_secs: f64,
    pub default_cost_secs: f64,
    /// Cost per method, keyed by lowercase method name.
    pub method_costs: BTreeMap<String, f64>,
}

impl Default for OperatingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            limit_secs: 480.0,
            default_cost_secs: 0.0,
            method_costs: BTreeMap::new(),
        }
    }
}

/// Which documented revision to follow where Bitrix24 sources disagree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Conflicts {
    pub status_revision: StatusRevision,
    pub bad_token_error: BadTokenError,
    /// Telephony register/finish/externalLine.* through an incoming webhook: documented as app-only,
    /// observed working in practice.
    pub webhook_telephony: Permission,
    /// `event.bind/get/unbind` through an incoming webhook (documented app-only; 403 WRONG_AUTH_TYPE).
    pub webhook_events: Permission,
    pub missing_scope_error: MissingScopeError,
    /// Error code of "User is not found or is not active".
    pub user_not_found_code: ErrorCodeStyle,
    /// Error code of "Call is not found …" when finishing an unknown CALL_ID.
    pub finish_unknown_call_code: ErrorCodeStyle,
    /// Error code when finishing a CALL_ID that was already finished (observed with an empty code).
    pub finish_repeat_code: ErrorCodeStyle,
    /// Whether a re-register within 30 minutes also returns a CALL_ID that was already finished
    /// (old docs: only "without closing the previous call by finish").
    pub dedup_finished_calls: bool,
    /// `CALL_START_DATE` in finish results: `{}` as in the documented sample, or an ISO string.
    pub finish_start_date_as_object: bool,
}

impl Default for Conflicts {
    fn default() -> Self {
        Self {
            status_revision: StatusRevision::Later,
            bad_token_error: BadTokenError::InvalidToken,
            webhook_telephony: Permission::Allow,
            webhook_events: Permission::Reject,
            missing_scope_error: MissingScopeError::InsufficientScope,
            user_not_found_code: ErrorCodeStyle::ErrorCore,
            finish_unknown_call_code: ErrorCodeStyle::ErrorCore,
            finish_repeat_code: ErrorCodeStyle::Empty,
            dedup_finished_calls: false,
            finish_start_date_as_object: true,
        }
    }
}

/// HTTP statuses of system errors: the later revision (401 for auth errors, 400/…) or the snapshot/RU one
/// (`INVALID_REQUEST` 400, `OVERLOAD_LIMIT` 503, credential errors 403, `PORTAL_DELETED` 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusRevision {
    Later,
    Snapshot,
}

/// What an unknown OAuth access token gets: 401 `invalid_token` or 401 `NO_AUTH_FOUND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadTokenError {
    InvalidToken,
    NoAuthFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingScopeError {
    /// 401 `insufficient_scope`.
    InsufficientScope,
    /// 404 `ERROR_METHOD_NOT_FOUND`.
    MethodNotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCodeStyle {
    /// `"error":"ERROR_CORE"`.
    ErrorCore,
    /// `"error":""` with the text only in `error_description`.
    Empty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// POST events to bound online handlers (`false`: only record what would be sent).
    pub deliver: bool,
    pub delivery_timeout_ms: u64,
    /// Outgoing webhooks configured in the portal UI: they receive events with the reduced `auth` block.
    pub outgoing_webhooks: Vec<OutgoingWebhook>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            deliver: true,
            delivery_timeout_ms: 5000,
            outgoing_webhooks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutgoingWebhook {
    pub event: String,
    pub handler: String,
    pub application_token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// Initial time; the host's current time when absent.
    pub start: Option<DateTime<FixedOffset>>,
    /// A frozen clock moves only through `advance`/`set`; a running one also follows real time.
    pub frozen: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedUser {
    pub id: u64,
    pub active: bool,
    pub name: String,
    pub last_name: String,
    pub second_name: String,
    pub email: String,
    pub work_position: String,
    pub personal_mobile: String,
    pub work_phone: String,
    pub personal_phone: String,
    pub uf_phone_inner: String,
    pub departments: Vec<u64>,
    pub user_type: String,
    pub is_online: bool,
    pub timeman_status: String,
    /// Portal administrators may bind offline events and events for other users.
    pub is_admin: bool,
}

impl Default for SeedUser {
    fn default() -> Self {
        Self {
            id: 0,
            active: true,
            name: String::new(),
            last_name: String::new(),
            second_name: String::new(),
            email: String::new(),
            work_position: String::new(),
            personal_mobile: String::new(),
            work_phone: String::new(),
            personal_phone: String::new(),
            uf_phone_inner: String::new(),
            departments: vec![1],
            user_type: "employee".into(),
            is_online: true,
            timeman_status: "OPENED".into(),
            is_admin: false,
        }
    }
}

impl SeedUser {
    pub fn new(id: u64, name: &str, last_name: &str, inner: &str) -> Self {
        Self {
            id,
            name: name.into(),
            last_name: last_name.into(),
            uf_phone_inner: inner.into(),
            email: format!("user{id}@example.test"),
            ..Self::default()
        }
    }
}

/// The cast of the call scenarios: U1–U3 on extensions 101–103, U9 the default responsible.
fn default_users() -> Vec<SeedUser> {
    vec![
        SeedUser {
            work_position: "Administrator".into(),
            is_admin: true,
            ..SeedUser::new(1, "Anna", "Admin", "101")
        },
        SeedUser::new(2, "Boris", "Second", "102"),
        SeedUser::new(3, "Vera", "Third", "103"),
        SeedUser::new(9, "Gleb", "Default", ""),
    ]
}

/// A lead, contact or company: its scalar fields as Bitrix24 names them, plus phone and e-mail multifields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedEntity {
    pub id: u64,
    pub fields: BTreeMap<String, serde_json::Value>,
    pub phones: Vec<SeedMultifield>,
    pub emails: Vec<SeedMultifield>,
}

impl SeedEntity {
    pub fn new(id: u64) -> Self {
        Self { id, ..Self::default() }
    }

    pub fn field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    pub fn phone(mut self, value: &str, value_type: &str) -> Self {
        self.phones.push(SeedMultifield {
            value: value.into(),
            value_type: value_type.into(),
        });
        self
    }

    pub fn email(mut self, value: &str, value_type: &str) -> Self {
        self.emails.push(SeedMultifield {
            value: value.into(),
            value_type: value_type.into(),
        });
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedMultifield {
    pub value: String,
    #[serde(default = "default_value_type")]
    pub value_type: String,
}

fn default_value_type() -> String {
    "WORK".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedStatus {
    pub entity_id: String,
    pub status_id: String,
    pub name: String,
    #[serde(default)]
    pub sort: u32,
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub semantics: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedLine {
    pub number: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_true")]
    pub crm_auto_create: bool,
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_portal_file_parses() {
        let cfg = EmulatorConfig::from_toml_str(include_str!("../portal.example.toml")).unwrap();
        assert_eq!(cfg.users.len(), 4);
        assert_eq!(cfg.contacts[0].id, 797);
        assert_eq!(cfg.contacts[0].phones[0].value_type, "MOBILE");
        assert_eq!(cfg.companies[0].phones[0].value_type, "WORK");
        assert_eq!(cfg.app.access_token.as_deref(), Some("demo-access-token"));
        assert!(cfg.users[0].is_admin && !cfg.users[1].is_admin);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = EmulatorConfig::from_toml_str("[limits]\nbucket_capasity = 5\n").unwrap_err();
        assert!(err.to_string().contains("bucket_capasity"), "{err}");
    }
}
