//! The emulated REST methods.

pub(crate) mod batch;
pub(crate) mod crm;
pub(crate) mod events;
pub(crate) mod filter;
pub(crate) mod tasks;
pub(crate) mod telephony;
pub(crate) mod users;

use serde_json::Value;

use crate::api::{ApiError, Reply};
use crate::core::Ctx;
use crate::params::PValue;
use crate::state::EntityType;

/// Who may call a method through an incoming webhook.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Restriction {
    None,
    /// Documented app-only telephony method (configurable).
    AppTelephony,
    /// `event.*` binding methods (configurable).
    AppEvents,
}

pub(crate) struct MethodSpec {
    pub name: &'static str,
    /// Any one of these scopes grants access; `None` = no scope needed.
    pub scope: Option<&'static [&'static str]>,
    pub restriction: Restriction,
}

const CRM: Option<&[&str]> = Some(&["crm"]);
const TELEPHONY: Option<&[&str]> = Some(&["telephony"]);
const USER: Option<&[&str]> = Some(&["user", "user_basic", "user_brief"]);
const TASK: Option<&[&str]> = Some(&["task"]);

macro_rules! spec {
    ($name:literal, $scope:expr) => {
        spec!($name, $scope, Restriction::None)
    };
    ($name:literal, $scope:expr, $restriction:expr) => {
        MethodSpec {
            name: $name,
            scope: $scope,
            restriction: $restriction,
        }
    };
}

static METHODS: &[MethodSpec] = &[
    spec!("telephony.externalcall.register", TELEPHONY, Restriction::AppTelephony),
    spec!("telephony.externalcall.finish", TELEPHONY, Restriction::AppTelephony),
    spec!("telephony.externalcall.show", TELEPHONY),
    spec!("telephony.externalcall.hide", TELEPHONY),
    spec!("telephony.externalcall.attachrecord", TELEPHONY),
    spec!("telephony.externalcall.searchcrmentities", TELEPHONY),
    spec!("telephony.externalline.get", TELEPHONY, Restriction::AppTelephony),
    spec!("telephony.externalline.add", TELEPHONY, Restriction::AppTelephony),
    spec!("telephony.externalline.update", TELEPHONY, Restriction::AppTelephony),
    spec!("telephony.externalline.delete", TELEPHONY, Restriction::AppTelephony),
    spec!("telephony.call.attachtranscription", TELEPHONY),
    spec!("user.get", USER),
    spec!("user.current", None),
    spec!("crm.duplicate.findbycomm", CRM),
    spec!("crm.lead.get", CRM),
    spec!("crm.lead.add", CRM),
    spec!("crm.lead.update", CRM),
    spec!("crm.lead.list", CRM),
    spec!("crm.contact.get", CRM),
    spec!("crm.contact.add", CRM),
    spec!("crm.contact.update", CRM),
    spec!("crm.contact.list", CRM),
    spec!("crm.company.get", CRM),
    spec!("crm.company.add", CRM),
    spec!("crm.company.update", CRM),
    spec!("crm.company.list", CRM),
    spec!("crm.activity.get", CRM),
    spec!("crm.activity.update", CRM),
    spec!("crm.activity.delete", CRM),
    spec!("crm.activity.list", CRM),
    spec!("crm.status.list", CRM),
    spec!("tasks.task.add", TASK),
    spec!("event.bind", None, Restriction::AppEvents),
    spec!("event.get", None, Restriction::AppEvents),
    spec!("event.unbind", None, Restriction::AppEvents),
    spec!("event.offline.get", None, Restriction::AppEvents),
    spec!("event.offline.clear", None, Restriction::AppEvents),
    spec!("scope", None),
];

pub(crate) fn lookup(method: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == method)
}

pub(crate) async fn dispatch(ctx: &Ctx<'_>, method: &str, p: &PValue) -> Result<Reply, ApiError> {
    if method == "telephony.externalcall.attachrecord" {
        return telephony::attach_record(ctx, p).await;
    }
    let mut w = ctx.core.world();
    let w = &mut *w;
    match method {
        "telephony.externalcall.register" => telephony::register(ctx, w, p),
        "telephony.externalcall.finish" => telephony::finish(ctx, w, p),
        "telephony.externalcall.show" => telephony::show_hide(ctx, w, p, true),
        "telephony.externalcall.hide" => telephony::show_hide(ctx, w, p, false),
        "telephony.externalcall.searchcrmentities" => telephony::search_crm_entities(ctx, w, p),
        "telephony.externalline.get" => telephony::line_get(w),
        "telephony.externalline.add" => telephony::line_add(w, p),
        "telephony.externalline.update" => telephony::line_update(w, p),
        "telephony.externalline.delete" => telephony::line_delete(w, p),
        "telephony.call.attachtranscription" => telephony::attach_transcription(w, p),
        "user.get" => users::get(w, p),
        "user.current" => users::current(ctx, w),
        "crm.duplicate.findbycomm" => crm::find_by_comm(w, p),
        "crm.lead.get" => crm::get(ctx, w, EntityType::Lead, p),
        "crm.lead.add" => crm::add(ctx, w, EntityType::Lead, p),
        "crm.lead.update" => crm::update(ctx, w, EntityType::Lead, p),
        "crm.lead.list" => crm::list(ctx, w, EntityType::Lead, p),
        "crm.contact.get" => crm::get(ctx, w, EntityType::Contact, p),
        "crm.contact.add" => crm::add(ctx, w, EntityType::Contact, p),
        "crm.contact.update" => crm::update(ctx, w, EntityType::Contact, p),
        "crm.contact.list" => crm::list(ctx, w, EntityType::Contact, p),
        "crm.company.get" => crm::get(ctx, w, EntityType::Company, p),
        "crm.company.add" => crm::add(ctx, w, EntityType::Company, p),
        "crm.company.update" => crm::update(ctx, w, EntityType::Company, p),
        "crm.company.list" => crm::list(ctx, w, EntityType::Company, p),
        "crm.activity.get" => crm::activity_get(w, p),
        "crm.activity.update" => crm::activity_update(ctx, w, p),
        "crm.activity.delete" => crm::activity_delete(w, p),
        "crm.activity.list" => crm::activity_list(w, p),
        "crm.status.list" => crm::status_list(w, p),
        "tasks.task.add" => tasks::add(ctx, w, p),
        "event.bind" => events::bind(ctx, w, p),
        "event.get" => events::get(ctx, w),
        "event.unbind" => events::unbind(ctx, w, p),
        "event.offline.get" => events::offline_get(ctx, w, p),
        "event.offline.clear" => events::offline_clear(w, p),
        "scope" => Ok(Reply::new(Value::Array(
            ctx.caller.scope.iter().map(|s| Value::String(s.clone())).collect(),
        ))),
        _ => Err(crate::api::SystemError::MethodNotFound.to_error(ctx.core.cfg.conflicts.status_revision)),
    }
}

/// String parameter, trimmed; `None` when absent or empty.
pub(crate) fn str_param(p: &PValue, key: &str) -> Option<String> {
    p.get_present(key)
        .and_then(PValue::as_string)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub(crate) fn int_param(p: &PValue, key: &str) -> Option<i64> {
    p.get_present(key).and_then(PValue::as_i64)
}

/// `start` of list methods: page offset, or -1 to skip counting.
pub(crate) fn start_param(p: &PValue) -> i64 {
    int_param(p, "start").unwrap_or(0)
}

/// Convert a scalar parameter to the string form Bitrix24 stores.
pub(crate) fn scalar_to_json_string(v: &PValue) -> Value {
    match v {
        PValue::Null => Value::Null,
        PValue::Bool(b) => Value::String(if *b { "Y".into() } else { "N".into() }),
        PValue::List(_) | PValue::Map(_) => v.to_json(),
        other => Value::String(other.as_string().unwrap_or_default()),
    }
}
