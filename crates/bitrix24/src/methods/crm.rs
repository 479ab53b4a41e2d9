//! CRM: leads, contacts, companies, duplicates, activities, status lists.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::de;
use crate::envelope::as_map;
use crate::method::{ListMethod, Method};

/// A communication value (`PHONE`, `EMAIL`, …) as read back: `{ID, TYPE_ID, VALUE, VALUE_TYPE}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Multifield {
    #[serde(rename = "ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub id: Option<u64>,
    #[serde(rename = "TYPE_ID", default, deserialize_with = "de::opt_string_lenient")]
    pub type_id: Option<String>,
    #[serde(rename = "VALUE", default, deserialize_with = "de::opt_string_lenient")]
    pub value: Option<String>,
    #[serde(rename = "VALUE_TYPE", default, deserialize_with = "de::opt_string_lenient")]
    pub value_type: Option<String>,
}

/// A communication value to write: without `id` it is appended; with `id` it overwrites; with
/// `delete` it removes that value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct MultifieldWrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `WORK`, `MOBILE`, `HOME`, … for phones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_yn")]
    pub delete: Option<bool>,
}

impl MultifieldWrite {
    pub fn new(value: impl Into<String>, value_type: impl Into<String>) -> Self {
        MultifieldWrite {
            value: Some(value.into()),
            value_type: Some(value_type.into()),
            ..Default::default()
        }
    }
}

/// A lead, contact or company as returned by `crm.*.get` / `crm.*.list` (numbers arrive as strings).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CrmRecord {
    #[serde(rename = "ID", deserialize_with = "de::u64_lenient")]
    pub id: u64,
    #[serde(rename = "TITLE", default, deserialize_with = "de::opt_string_lenient")]
    pub title: Option<String>,
    #[serde(rename = "NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub name: Option<String>,
    #[serde(rename = "LAST_NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub last_name: Option<String>,
    #[serde(rename = "SECOND_NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub second_name: Option<String>,
    #[serde(rename = "ASSIGNED_BY_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub assigned_by_id: Option<u64>,
    #[serde(rename = "STATUS_ID", default, deserialize_with = "de::opt_string_lenient")]
    pub status_id: Option<String>,
    #[serde(rename = "SOURCE_ID", default, deserialize_with = "de::opt_string_lenient")]
    pub source_id: Option<String>,
    #[serde(rename = "COMPANY_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub company_id: Option<u64>,
    #[serde(rename = "CONTACT_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub contact_id: Option<u64>,
    #[serde(rename = "PHONE", default, deserialize_with = "de::vec_lenient")]
    pub phone: Vec<Multifield>,
    #[serde(rename = "EMAIL", default, deserialize_with = "de::vec_lenient")]
    pub email: Vec<Multifield>,
    /// Every other field as sent (`DATE_CREATE`, `UF_*`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Fields for `crm.lead|contact|company.add/update`. Unset fields are not sent; `extra` carries
/// anything else (`UF_*`, `OPPORTUNITY`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct CrmFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_by_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comments: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_yn")]
    pub opened: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phone: Vec<MultifieldWrite>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<MultifieldWrite>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Optional `params` of add/update.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct CrmWriteParams {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_yn")]
    pub register_sonet_event: Option<bool>,
}

/// Parameters of `crm.*.list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CrmListParams {
    /// Multifields must be named to come back (`PHONE`, `EMAIL`); `*` and `UF_*` select all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub select: Vec<String>,
    /// Keys may carry prefixes: `>=`, `%`, `!`, `@`…; multifields match exactly (`{"PHONE":"555888"}`).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub filter: Map<String, Value>,
    /// `{FIELD: "ASC"|"DESC"}`.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub order: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

macro_rules! crm_entity_methods {
    ($entity:literal, $get:ident, $add:ident, $update:ident, $list:ident) => {
        #[doc = concat!("`crm.", $entity, ".get`.")]
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $get {
            pub id: u64,
        }

        impl Method for $get {
            const NAME: &'static str = concat!("crm.", $entity, ".get");
            type Output = CrmRecord;
        }

        #[doc = concat!("`crm.", $entity, ".add`: returns the new id.")]
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct $add {
            pub fields: CrmFields,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub params: Option<CrmWriteParams>,
        }

        impl Method for $add {
            const NAME: &'static str = concat!("crm.", $entity, ".add");
            type Output = NewId;
        }

        #[doc = concat!("`crm.", $entity, ".update`: unknown fields are ignored by the portal.")]
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct $update {
            pub id: u64,
            pub fields: CrmFields,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub params: Option<CrmWriteParams>,
        }

        impl Method for $update {
            const NAME: &'static str = concat!("crm.", $entity, ".update");
            type Output = bool;
        }

        #[doc = concat!("`crm.", $entity, ".list`: pages of 50; see [`crate::Client::list_all`].")]
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct $list(pub CrmListParams);

        impl Method for $list {
            const NAME: &'static str = concat!("crm.", $entity, ".list");
            type Output = Vec<CrmRecord>;
        }

        impl ListMethod for $list {
            type Item = CrmRecord;
            fn set_start(&mut self, start: u64) {
                self.0.start = Some(start);
            }
        }
    };
}

crm_entity_methods!("lead", LeadGet, LeadAdd, LeadUpdate, LeadList);
crm_entity_methods!("contact", ContactGet, ContactAdd, ContactUpdate, ContactList);
crm_entity_methods!("company", CompanyGet, CompanyAdd, CompanyUpdate, CompanyList);

/// A new record's id (sent as a number or a numeric string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewId(pub u64);

impl<'de> Deserialize<'de> for NewId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::u64_lenient(d).map(NewId)
    }
}

/// `PHONE` or `EMAIL` for duplicate search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CommunicationType {
    Phone,
    Email,
}

/// `crm.duplicate.findbycomm`: ids of records holding any of the values (≤ 20 values; extensions ignored).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateFindByComm {
    #[serde(rename = "type")]
    pub comm_type: CommunicationType,
    pub values: Vec<String>,
    /// `LEAD`, `CONTACT` or `COMPANY`; all when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
}

/// Ids found per entity type. Nothing found arrives as `[]` and reads as all-empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DuplicateMatches {
    pub lead: Vec<u64>,
    pub contact: Vec<u64>,
    pub company: Vec<u64>,
    /// Other entity types (e.g. deals in some portals), by name.
    pub other: Map<String, Value>,
}

impl DuplicateMatches {
    pub fn is_empty(&self) -> bool {
        self.lead.is_empty() && self.contact.is_empty() && self.company.is_empty() && self.other.is_empty()
    }
}

impl<'de> Deserialize<'de> for DuplicateMatches {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Ids(#[serde(deserialize_with = "de::ids_lenient")] Vec<u64>);

        let value = Value::deserialize(d)?;
        let map = as_map(value).ok_or_else(|| serde::de::Error::custom("expected a map of entity type to ids"))?;
        let mut out = DuplicateMatches::default();
        for (key, ids) in map {
            let slot = match key.to_ascii_uppercase().as_str() {
                "LEAD" => &mut out.lead,
                "CONTACT" => &mut out.contact,
                "COMPANY" => &mut out.company,
                _ => {
                    out.other.insert(key, ids);
                    continue;
                }
            };
            *slot = serde_json::from_value::<Ids>(ids).map_err(serde::de::Error::custom)?.0;
        }
        Ok(out)
    }
}

impl Method for DuplicateFindByComm {
    const NAME: &'static str = "crm.duplicate.findbycomm";
    type Output = DuplicateMatches;
}

/// A CRM activity (`crm.activity.get`). Call activities carry `ORIGIN_ID` = `VI_<CALL_ID>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Activity {
    #[serde(rename = "ID", deserialize_with = "de::u64_lenient")]
    pub id: u64,
    #[serde(rename = "OWNER_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub owner_id: Option<u64>,
    /// 1 lead, 2 deal, 3 contact, 4 company.
    #[serde(rename = "OWNER_TYPE_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub owner_type_id: Option<u64>,
    /// 2 = call.
    #[serde(rename = "TYPE_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub type_id: Option<u64>,
    #[serde(rename = "PROVIDER_ID", default, deserialize_with = "de::opt_string_lenient")]
    pub provider_id: Option<String>,
    #[serde(rename = "SUBJECT", default, deserialize_with = "de::opt_string_lenient")]
    pub subject: Option<String>,
    #[serde(rename = "DESCRIPTION", default, deserialize_with = "de::opt_string_lenient")]
    pub description: Option<String>,
    #[serde(rename = "COMPLETED", default, deserialize_with = "de::opt_bool_lenient")]
    pub completed: Option<bool>,
    #[serde(rename = "RESPONSIBLE_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub responsible_id: Option<u64>,
    /// 1 incoming, 2 outgoing.
    #[serde(rename = "DIRECTION", default, deserialize_with = "de::opt_u64_lenient")]
    pub direction: Option<u64>,
    #[serde(rename = "ORIGIN_ID", default, deserialize_with = "de::opt_string_lenient")]
    pub origin_id: Option<String>,
    #[serde(rename = "START_TIME", default, deserialize_with = "de::opt_string_lenient")]
    pub start_time: Option<String>,
    #[serde(rename = "END_TIME", default, deserialize_with = "de::opt_string_lenient")]
    pub end_time: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `crm.activity.get`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityGet {
    pub id: u64,
}

impl Method for ActivityGet {
    const NAME: &'static str = "crm.activity.get";
    type Output = Activity;
}

/// Fields for `crm.activity.update`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ActivityFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_yn")]
    pub completed: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `crm.activity.update`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ActivityUpdate {
    pub id: u64,
    pub fields: ActivityFields,
}

impl Method for ActivityUpdate {
    const NAME: &'static str = "crm.activity.update";
    type Output = bool;
}

/// A status list entry (`crm.status.list`), e.g. lead sources with `ENTITY_ID=SOURCE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CrmStatus {
    #[serde(rename = "ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub id: Option<u64>,
    #[serde(rename = "ENTITY_ID")]
    pub entity_id: String,
    #[serde(rename = "STATUS_ID")]
    pub status_id: String,
    #[serde(rename = "NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub name: Option<String>,
    #[serde(rename = "SORT", default, deserialize_with = "de::opt_u64_lenient")]
    pub sort: Option<u64>,
    #[serde(rename = "SYSTEM", default, deserialize_with = "de::opt_bool_lenient")]
    pub system: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `crm.status.list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusList {
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub filter: Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub order: Map<String, Value>,
}

impl StatusList {
    /// Entries of one list, e.g. `"SOURCE"` or `"STATUS"`.
    pub fn of(entity_id: &str) -> Self {
        let mut filter = Map::new();
        filter.insert("ENTITY_ID".into(), Value::String(entity_id.to_owned()));
        StatusList {
            filter,
            order: Map::new(),
        }
    }
}

impl Method for StatusList {
    const NAME: &'static str = "crm.status.list";
    type Output = Vec<CrmStatus>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::to_params;
    use serde_json::json;

    #[test]
    fn add_params_with_multifields_and_extra() {
        let mut fields = CrmFields {
            title: Some("Call from +7900".into()),
            source_id: Some("CALL".into()),
            assigned_by_id: Some(5),
            phone: vec![MultifieldWrite::new("+7900", "WORK")],
            ..Default::default()
        };
        fields.extra.insert("UF_CRM_X".into(), json!("y"));
        let params = to_params(&LeadAdd { fields, params: None }).unwrap();
        assert_eq!(
            params,
            json!({"fields": {"TITLE": "Call from +7900", "SOURCE_ID": "CALL", "ASSIGNED_BY_ID": 5,
                "PHONE": [{"VALUE": "+7900", "VALUE_TYPE": "WORK"}], "UF_CRM_X": "y"}})
        );
        assert_eq!(LeadAdd::NAME, "crm.lead.add");
        assert_eq!(CompanyList::NAME, "crm.company.list");
    }

    #[test]
    fn record_with_strings_for_numbers() {
        let r: CrmRecord = serde_json::from_value(json!({"ID": "123", "TITLE": "x", "ASSIGNED_BY_ID": "5",
            "COMPANY_ID": null, "PHONE": [{"ID": "9", "TYPE_ID": "PHONE", "VALUE": "+7900", "VALUE_TYPE": "WORK"}],
            "HAS_PHONE": "Y", "OPPORTUNITY": "0.00"}))
        .unwrap();
        assert_eq!((r.id, r.assigned_by_id, r.company_id), (123, Some(5), None));
        assert_eq!(r.phone[0].value.as_deref(), Some("+7900"));
        assert_eq!(r.extra["HAS_PHONE"], "Y");
    }

    #[test]
    fn duplicates_empty_and_found() {
        let none: DuplicateMatches = serde_json::from_value(json!([])).unwrap();
        assert!(none.is_empty());
        let found: DuplicateMatches = serde_json::from_value(json!({"CONTACT": [275, "2297"], "LEAD": [1]})).unwrap();
        assert_eq!(found.contact, vec![275, 2297]);
        assert_eq!(found.lead, vec![1]);
        assert!(serde_json::from_value::<DuplicateMatches>(json!("x")).is_err());
    }

    #[test]
    fn new_id_from_string_or_number() {
        assert_eq!(serde_json::from_value::<NewId>(json!(3465)).unwrap(), NewId(3465));
        assert_eq!(serde_json::from_value::<NewId>(json!("3465")).unwrap(), NewId(3465));
    }
}
