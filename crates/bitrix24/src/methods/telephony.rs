//! `telephony.externalCall.*` and `telephony.externalLine.*`.

use base64::Engine as _;
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::de;
use crate::error::Error;
use crate::method::Method;
use crate::secret::Secret;

/// `TYPE` of a registered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallType {
    #[default]
    Outgoing,
    Incoming,
    /// Incoming with redirection.
    IncomingRedirect,
    Callback,
    /// Information call.
    Info,
}

impl CallType {
    pub fn code(self) -> u8 {
        match self {
            CallType::Outgoing => 1,
            CallType::Incoming => 2,
            CallType::IncomingRedirect => 3,
            CallType::Callback => 4,
            CallType::Info => 5,
        }
    }
}

impl Serialize for CallType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

/// CRM entity kinds a call can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CrmEntityType {
    Lead,
    Contact,
    Company,
    Deal,
}

/// `telephony.externalCall.register`: announce a call; returns its `CALL_ID`.
///
/// Set `external_call_id` to a value unique per physical call: otherwise Bitrix24 may hand back the
/// `CALL_ID` of another call with the same numbers from the last 30 minutes.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ExternalCallRegister {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_phone_inner: Option<String>,
    pub phone_number: String,
    #[serde(rename = "TYPE")]
    pub call_type: CallType,
    /// Sent as ISO-8601 with the offset (`2026-03-07T10:20:30+03:00`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_datetime")]
    pub call_start_date: Option<DateTime<FixedOffset>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_int")]
    pub crm_create: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crm_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crm_entity_type: Option<CrmEntityType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crm_entity_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_int")]
    pub show: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_int")]
    pub add_to_chat: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_list_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_call_id: Option<String>,
}

/// An entity created by `register` (`CRM_CREATED_ENTITIES[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CreatedEntity {
    #[serde(rename = "ENTITY_TYPE")]
    pub entity_type: String,
    #[serde(rename = "ENTITY_ID", deserialize_with = "de::u64_lenient")]
    pub entity_id: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegisteredCall {
    #[serde(rename = "CALL_ID")]
    pub call_id: String,
    #[serde(rename = "CRM_CREATED_LEAD", default, deserialize_with = "de::opt_u64_lenient")]
    pub crm_created_lead: Option<u64>,
    #[serde(rename = "CRM_CREATED_ENTITIES", default, deserialize_with = "de::vec_lenient")]
    pub crm_created_entities: Vec<CreatedEntity>,
    #[serde(rename = "CRM_ENTITY_TYPE", default, deserialize_with = "de::opt_string_lenient")]
    pub crm_entity_type: Option<String>,
    #[serde(rename = "CRM_ENTITY_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub crm_entity_id: Option<u64>,
    /// Why an automatic lead could not be created.
    #[serde(rename = "LEAD_CREATION_ERROR", default, deserialize_with = "de::opt_string_lenient")]
    pub lead_creation_error: Option<String>,
}

impl Method for ExternalCallRegister {
    const NAME: &'static str = "telephony.externalCall.register";
    type Output = RegisteredCall;
}

/// One user or several (`USER_ID` or `USER_ID[0]=…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum UserIds {
    One(u64),
    Many(Vec<u64>),
}

/// `telephony.externalCall.show`: open the call card. `false` when the call is unknown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ExternalCallShow {
    pub call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserIds>,
}

impl Method for ExternalCallShow {
    const NAME: &'static str = "telephony.externalCall.show";
    type Output = bool;
}

/// `telephony.externalCall.hide`: close the call card. `false` when the call is unknown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ExternalCallHide {
    pub call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserIds>,
}

impl Method for ExternalCallHide {
    const NAME: &'static str = "telephony.externalCall.hide";
    type Output = bool;
}

/// `STATUS_CODE` of a finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallStatusCode {
    /// `200`
    Success,
    /// `304`
    Missed,
    /// `603`
    Declined,
    /// `603-S`
    Cancelled,
    /// `403`
    Forbidden,
    /// `404`
    InvalidNumber,
    /// `486`
    Busy,
    /// `484`
    Unavailable,
    /// `503`
    DirectionUnavailable,
    /// `480`
    TemporarilyUnavailable,
    /// `402`
    InsufficientFunds,
    /// `423`
    Blocked,
    /// `OTHER`
    Other,
    /// Any code not listed above.
    Custom(String),
}

impl CallStatusCode {
    pub fn as_str(&self) -> &str {
        match self {
            CallStatusCode::Success => "200",
            CallStatusCode::Missed => "304",
            CallStatusCode::Declined => "603",
            CallStatusCode::Cancelled => "603-S",
            CallStatusCode::Forbidden => "403",
            CallStatusCode::InvalidNumber => "404",
            CallStatusCode::Busy => "486",
            CallStatusCode::Unavailable => "484",
            CallStatusCode::DirectionUnavailable => "503",
            CallStatusCode::TemporarilyUnavailable => "480",
            CallStatusCode::InsufficientFunds => "402",
            CallStatusCode::Blocked => "423",
            CallStatusCode::Other => "OTHER",
            CallStatusCode::Custom(code) => code,
        }
    }
}

impl Serialize for CallStatusCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `telephony.externalCall.finish`: end the call, write statistics and the CRM activity.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ExternalCallFinish {
    pub call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_phone_inner: Option<String>,
    /// Seconds of conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<CallStatusCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    /// Deprecated by Bitrix24 (downloaded once, failure is silent); prefer `attachRecord`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vote: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_int")]
    pub add_to_chat: Option<bool>,
}

/// The statistics record written by `finish`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FinishedCall {
    #[serde(rename = "CALL_ID")]
    pub call_id: String,
    #[serde(rename = "EXTERNAL_CALL_ID", default, deserialize_with = "de::opt_string_lenient")]
    pub external_call_id: Option<String>,
    #[serde(rename = "ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub id: Option<u64>,
    #[serde(rename = "PORTAL_USER_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub portal_user_id: Option<u64>,
    #[serde(rename = "PHONE_NUMBER", default, deserialize_with = "de::opt_string_lenient")]
    pub phone_number: Option<String>,
    #[serde(rename = "CALL_DURATION", default, deserialize_with = "de::opt_u64_lenient")]
    pub call_duration: Option<u64>,
    /// 1 = conversation took place, 0 = failed or missed.
    #[serde(rename = "CALL_STATUS", default, deserialize_with = "de::opt_u64_lenient")]
    pub call_status: Option<u64>,
    #[serde(rename = "CALL_FAILED_CODE", default, deserialize_with = "de::opt_string_lenient")]
    pub call_failed_code: Option<String>,
    #[serde(rename = "CRM_ACTIVITY_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub crm_activity_id: Option<u64>,
    #[serde(rename = "CRM_ENTITY_TYPE", default, deserialize_with = "de::opt_string_lenient")]
    pub crm_entity_type: Option<String>,
    #[serde(rename = "CRM_ENTITY_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub crm_entity_id: Option<u64>,
    /// Every other field as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Method for ExternalCallFinish {
    const NAME: &'static str = "telephony.externalCall.finish";
    type Output = FinishedCall;
}

/// `telephony.externalCall.attachRecord` (after `finish`). Use [`Client::attach_record_base64`] or
/// [`Client::attach_record_upload`] rather than filling this by hand.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ExternalCallAttachRecord {
    pub call_id: String,
    /// `.wav` or `.mp3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Base64 without a `data:` prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_content: Option<String>,
    /// Bitrix24 downloads the file itself (one attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_url: Option<String>,
}

/// Either the stored file, or an upload slot (when only `FILENAME` was sent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AttachedRecord {
    #[serde(rename = "FILE_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub file_id: Option<u64>,
    /// Carries a one-time credential, hence a [`Secret`].
    #[serde(rename = "uploadUrl", default)]
    pub upload_url: Option<Secret>,
    #[serde(rename = "fieldName", default)]
    pub field_name: Option<String>,
}

impl Method for ExternalCallAttachRecord {
    const NAME: &'static str = "telephony.externalCall.attachRecord";
    type Output = AttachedRecord;
}

/// `telephony.externalCall.searchCrmEntities`: CRM records with this phone number.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct SearchCrmEntities {
    pub phone_number: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssignedUser {
    #[serde(rename = "ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub id: Option<u64>,
    #[serde(rename = "TIMEMAN_STATUS", default, deserialize_with = "de::opt_string_lenient")]
    pub timeman_status: Option<String>,
    #[serde(rename = "USER_PHONE_INNER", default, deserialize_with = "de::opt_string_lenient")]
    pub user_phone_inner: Option<String>,
    #[serde(rename = "WORK_PHONE", default, deserialize_with = "de::opt_string_lenient")]
    pub work_phone: Option<String>,
    #[serde(rename = "PERSONAL_PHONE", default, deserialize_with = "de::opt_string_lenient")]
    pub personal_phone: Option<String>,
    #[serde(rename = "PERSONAL_MOBILE", default, deserialize_with = "de::opt_string_lenient")]
    pub personal_mobile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CrmEntityMatch {
    #[serde(rename = "CRM_ENTITY_TYPE")]
    pub crm_entity_type: String,
    #[serde(rename = "CRM_ENTITY_ID", deserialize_with = "de::u64_lenient")]
    pub crm_entity_id: u64,
    #[serde(rename = "ASSIGNED_BY_ID", default, deserialize_with = "de::opt_u64_lenient")]
    pub assigned_by_id: Option<u64>,
    #[serde(rename = "NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub name: Option<String>,
    #[serde(rename = "ASSIGNED_BY", default)]
    pub assigned_by: Option<AssignedUser>,
}

impl Method for SearchCrmEntities {
    const NAME: &'static str = "telephony.externalCall.searchCrmEntities";
    type Output = Vec<CrmEntityMatch>;
}

/// An external line (`telephony.externalLine.get` item).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExternalLine {
    #[serde(rename = "NUMBER", deserialize_with = "string_or_number")]
    pub number: String,
    #[serde(rename = "NAME", default, deserialize_with = "de::opt_string_lenient")]
    pub name: Option<String>,
    #[serde(rename = "CRM_AUTO_CREATE", default, deserialize_with = "de::opt_bool_lenient")]
    pub crm_auto_create: Option<bool>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de::opt_string_lenient(d)?.ok_or_else(|| serde::de::Error::custom("expected a line number"))
}

/// `telephony.externalLine.get`: all lines of this application.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExternalLineGet {}

impl Method for ExternalLineGet {
    const NAME: &'static str = "telephony.externalLine.get";
    type Output = Vec<ExternalLine>;
}

/// `telephony.externalLine.add`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ExternalLineAdd {
    pub number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_yn")]
    pub crm_auto_create: Option<bool>,
}

/// `telephony.externalLine.update`: at least one of `name` / `crm_auto_create`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ExternalLineUpdate {
    pub number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "de::ser_opt_bool_yn")]
    pub crm_auto_create: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExternalLineId {
    #[serde(rename = "ID", deserialize_with = "de::u64_lenient")]
    pub id: u64,
}

impl Method for ExternalLineAdd {
    const NAME: &'static str = "telephony.externalLine.add";
    type Output = ExternalLineId;
}

impl Method for ExternalLineUpdate {
    const NAME: &'static str = "telephony.externalLine.update";
    type Output = ExternalLineId;
}

impl Client {
    /// Attaches a recording in one request, base64 inside the body. Returns `FILE_ID`.
    pub async fn attach_record_base64(&self, call_id: &str, filename: &str, content: &[u8]) -> Result<u64, Error> {
        let request = ExternalCallAttachRecord {
            call_id: call_id.to_owned(),
            filename: Some(filename.to_owned()),
            file_content: Some(base64::engine::general_purpose::STANDARD.encode(content)),
            record_url: None,
        };
        let attached = self.send(&request).await?;
        attached.file_id.ok_or_else(|| Error::Decode {
            method: ExternalCallAttachRecord::NAME.into(),
            reason: "no FILE_ID in the result".into(),
        })
    }

    /// Attaches a recording in two steps: ask for an upload URL, then post the file there as
    /// `multipart/form-data`. For files too big for one base64 request. Returns the upload's `result`.
    pub async fn attach_record_upload(&self, call_id: &str, filename: &str, content: Vec<u8>) -> Result<Value, Error> {
        let request = ExternalCallAttachRecord {
            call_id: call_id.to_owned(),
            filename: Some(filename.to_owned()),
            ..Default::default()
        };
        let slot = self.send(&request).await?;
        let (Some(url), Some(field)) = (slot.upload_url, slot.field_name) else {
            return Err(Error::Decode {
                method: ExternalCallAttachRecord::NAME.into(),
                reason: "no uploadUrl/fieldName in the result".into(),
            });
        };
        self.upload_to(url.expose(), &field, filename, content).await
    }

    /// `telephony.externalLine.get`.
    pub async fn external_lines(&self) -> Result<Vec<ExternalLine>, Error> {
        self.send(&ExternalLineGet {}).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::to_params;
    use serde_json::json;

    #[test]
    fn register_params() {
        let req = ExternalCallRegister {
            user_phone_inner: Some("101".into()),
            phone_number: "+79001234567".into(),
            call_type: CallType::Incoming,
            call_start_date: Some(DateTime::parse_from_rfc3339("2026-03-07T10:20:30.123+03:00").unwrap()),
            crm_create: Some(true),
            show: Some(false),
            line_number: Some("74950000000".into()),
            external_call_id: Some("asterisk-1710140185.18441".into()),
            ..Default::default()
        };
        assert_eq!(
            to_params(&req).unwrap(),
            json!({
                "USER_PHONE_INNER": "101", "PHONE_NUMBER": "+79001234567", "TYPE": 2,
                "CALL_START_DATE": "2026-03-07T10:20:30+03:00", "CRM_CREATE": 1, "SHOW": 0,
                "LINE_NUMBER": "74950000000", "EXTERNAL_CALL_ID": "asterisk-1710140185.18441"
            })
        );
    }

    #[test]
    fn register_result_doc_sample() {
        let r: RegisteredCall = serde_json::from_value(
            json!({"CALL_ID":"externalCall.716f1cb73def9700a23842adf9c4c568.1773130779",
            "CRM_CREATED_LEAD":null,"CRM_CREATED_ENTITIES":[],"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797}),
        )
        .unwrap();
        assert_eq!(r.crm_entity_id, Some(797));
        assert!(r.crm_created_entities.is_empty());
    }

    #[test]
    fn finish_result_doc_sample() {
        let r: FinishedCall = serde_json::from_value(json!({"CALL_ID":"externalCall.x","EXTERNAL_CALL_ID":null,"PORTAL_USER_ID":1269,
            "PHONE_NUMBER":"19062195047","PORTAL_NUMBER":"3","INCOMING":"2","CALL_DURATION":95,"CALL_START_DATE":{},"CALL_STATUS":1,
            "CALL_VOTE":5,"COST":0,"COST_CURRENCY":"","CALL_FAILED_CODE":"200","CALL_FAILED_REASON":"","REST_APP_ID":"3",
            "REST_APP_NAME":"REST API Documentation","CRM_ACTIVITY_ID":7943,"COMMENT":null,"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797,"ID":7}))
        .unwrap();
        assert_eq!(
            (r.call_duration, r.crm_activity_id, r.call_status),
            (Some(95), Some(7943), Some(1))
        );
        assert_eq!(r.extra["REST_APP_NAME"], "REST API Documentation");
    }

    #[test]
    fn status_codes_and_user_ids() {
        let req = ExternalCallFinish {
            call_id: "c".into(),
            status_code: Some(CallStatusCode::Cancelled),
            ..Default::default()
        };
        assert_eq!(to_params(&req).unwrap()["STATUS_CODE"], "603-S");
        let show = ExternalCallShow {
            call_id: "c".into(),
            user_id: Some(UserIds::Many(vec![11, 24])),
        };
        assert_eq!(to_params(&show).unwrap(), json!({"CALL_ID": "c", "USER_ID": [11, 24]}));
    }

    #[test]
    fn upload_slot_url_is_hidden() {
        let r: AttachedRecord = serde_json::from_value(
            json!({"uploadUrl": "https://p/rest/upload.json?auth=TOKEN123&token=x", "fieldName": "file"}),
        )
        .unwrap();
        assert!(!format!("{r:?}").contains("TOKEN123"));
        assert_eq!(r.field_name.as_deref(), Some("file"));
    }
}
