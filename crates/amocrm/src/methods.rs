//! The requests ringlink sends, typed: account, users, contact search by phone, calls, unsorted SIP,
//! complex add, tasks, the call popup and pipelines.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};

use crate::client::{embedded, Client};
use crate::de;
use crate::error::Error;

/// `GET /api/v4/account` (also the token check).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Account {
    #[serde(default, deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::text")]
    pub name: String,
    #[serde(default, deserialize_with = "de::text")]
    pub subdomain: String,
    #[serde(default, deserialize_with = "de::opt_number")]
    pub current_user_id: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Rights {
    #[serde(default, deserialize_with = "de::flag")]
    pub is_admin: bool,
    #[serde(default, deserialize_with = "de::flag")]
    pub is_active: bool,
}

/// A user of the account (`GET /api/v4/users`). amoCRM has no extension field: the mapping to extensions
/// lives in ringlink's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct User {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::text")]
    pub name: String,
    #[serde(default, deserialize_with = "de::text")]
    pub email: String,
    #[serde(default)]
    pub rights: Rights,
}

/// One value of a multi-value field (`{"value":"+7…","enum_code":"WORK"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FieldValue {
    #[serde(default, deserialize_with = "de::text")]
    pub value: String,
    #[serde(default, deserialize_with = "de::text")]
    pub enum_code: String,
}

/// A custom field of an entity as read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CustomField {
    #[serde(default, deserialize_with = "de::opt_number")]
    pub field_id: Option<u64>,
    #[serde(default, deserialize_with = "de::text")]
    pub field_code: String,
    #[serde(default)]
    pub values: Vec<FieldValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IdRef {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ContactEmbedded {
    #[serde(default)]
    pub leads: Vec<IdRef>,
    #[serde(default)]
    pub companies: Vec<IdRef>,
}

/// A contact as `GET /api/v4/contacts?with=leads` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Contact {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::text")]
    pub name: String,
    #[serde(default, deserialize_with = "de::opt_number")]
    pub responsible_user_id: Option<u64>,
    /// `null` when the contact has no field filled.
    #[serde(default, deserialize_with = "nullable_list")]
    pub custom_fields_values: Vec<CustomField>,
    #[serde(default, rename = "_embedded")]
    pub embedded: ContactEmbedded,
}

fn nullable_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<CustomField>, D::Error> {
    Ok(Option::<Vec<CustomField>>::deserialize(d)?.unwrap_or_default())
}

impl Contact {
    /// Values of the PHONE field.
    pub fn phones(&self) -> impl Iterator<Item = &str> {
        self.custom_fields_values
            .iter()
            .filter(|f| f.field_code == "PHONE")
            .flat_map(|f| f.values.iter().map(|v| v.value.as_str()))
    }
}

/// The last `n` digits of a number; amoCRM attaches calls by the last 10.
pub fn last_digits(phone: &str, n: usize) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(n)..].iter().collect()
}

/// `direction` of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// `call_status` of a call (documented 1–7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CallStatus {
    LeftMessage = 1,
    CallBackLater = 2,
    NotAvailable = 3,
    /// The conversation took place.
    Talked = 4,
    WrongNumber = 5,
    /// Not reached (no answer).
    NotReached = 6,
    Busy = 7,
}

impl Serialize for CallStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

/// One item of `POST /api/v4/calls`. amoCRM does not deduplicate by `uniq`: sending twice records twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewCall {
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uniq: Option<String>,
    /// Seconds.
    pub duration: u32,
    /// The integration's name, shown in the call's note.
    pub source: String,
    /// The outside number; amoCRM finds the contact by its last 10 digits.
    pub phone: String,
    /// A recording URL amoCRM's player fetches (mp3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_status: Option<CallStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<u64>,
    /// Without it amoCRM's statistics show the call as made by a robot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Where amoCRM attached an added call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AddedCall {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::number")]
    pub entity_id: u64,
    /// `contacts`, `leads`, `companies` or `customers`.
    #[serde(default, deserialize_with = "de::text")]
    pub entity_type: String,
    #[serde(default, deserialize_with = "de::text")]
    pub request_id: String,
}

/// `metadata` of an unsorted SIP entry.
///
/// `from` and `phone`: the sources disagree on which is the caller. ringlink follows the Kommo reference:
/// `from` = who initiated the call (the client on an incoming call), `phone` = who was called (the number or
/// extension reached), and also sends `call_responsible` with the answering user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SipMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uniq: Option<String>,
    pub from: String,
    pub phone: String,
    /// Unix seconds.
    pub called_at: i64,
    pub duration: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    pub service_code: String,
    /// Adds the call itself to the entry's feed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_call_event_needed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_responsible: Option<u64>,
}

/// A lead of an unsorted entry or a complex add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewLead {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<i64>,
}

/// A contact to create, in the write shape (`custom_fields_values: [{field_code, values:[{value, enum_code}]}]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewContact {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom_fields_values: Vec<Value>,
}

impl NewContact {
    /// A contact with one work phone.
    pub fn with_phone(name: impl Into<String>, phone: &str) -> Self {
        NewContact {
            name: name.into(),
            custom_fields_values: vec![
                json!({"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}),
            ],
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnsortedEmbedded {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leads: Vec<NewLead>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<NewContact>,
}

/// One item of `POST /api/v4/leads/unsorted/sip`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewUnsortedSip {
    pub source_uid: String,
    pub source_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub metadata: SipMetadata,
    #[serde(rename = "_embedded")]
    pub embedded: UnsortedEmbedded,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UnsortedRefs {
    #[serde(default)]
    pub leads: Vec<IdRef>,
    #[serde(default)]
    pub contacts: Vec<IdRef>,
}

/// An added unsorted entry and what it created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AddedUnsorted {
    #[serde(deserialize_with = "de::text")]
    pub uid: String,
    #[serde(default, deserialize_with = "de::text")]
    pub request_id: String,
    #[serde(default, rename = "_embedded")]
    pub embedded: UnsortedRefs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ComplexEmbedded {
    /// At most one contact per lead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<NewContact>,
}

/// One lead of `POST /api/v4/leads/complex` (≤ 50 per request), with its contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewComplexLead {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<u64>,
    #[serde(rename = "_embedded")]
    pub embedded: ComplexEmbedded,
}

/// What a complex add created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AddedComplex {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::opt_number")]
    pub contact_id: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_number")]
    pub company_id: Option<u64>,
    /// The duplicate control merged it into an existing lead (integrations with a widget only).
    #[serde(default, deserialize_with = "de::flag")]
    pub merged: bool,
}

/// `entity_type` of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityType {
    Leads,
    Contacts,
    Companies,
    Customers,
}

/// `task_type_id` 1: a call.
pub const TASK_TYPE_CALL: u64 = 1;

/// One item of `POST /api/v4/tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewTask {
    pub text: String,
    /// Unix seconds.
    pub complete_till: i64,
    pub task_type_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<EntityType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AddedTask {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::text")]
    pub request_id: String,
}

/// A status of a pipeline. `kind` 1 is the pipeline's unsorted status; 142 won, 143 lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Status {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::text")]
    pub name: String,
    #[serde(default, rename = "type", deserialize_with = "de::number")]
    pub kind: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PipelineEmbedded {
    #[serde(default)]
    pub statuses: Vec<Status>,
}

/// A sales pipeline (`GET /api/v4/leads/pipelines`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Pipeline {
    #[serde(deserialize_with = "de::number")]
    pub id: u64,
    #[serde(default, deserialize_with = "de::text")]
    pub name: String,
    #[serde(default, deserialize_with = "de::flag")]
    pub is_main: bool,
    #[serde(default, deserialize_with = "de::flag")]
    pub is_unsorted_on: bool,
    #[serde(default, deserialize_with = "de::flag")]
    pub is_archive: bool,
    #[serde(default, rename = "_embedded")]
    pub embedded: PipelineEmbedded,
}

impl Pipeline {
    pub fn statuses(&self) -> &[Status] {
        &self.embedded.statuses
    }
}

/// The answer of a write, or a plain error when amoCRM answered 2xx with nothing.
fn written(path: &str, body: Option<Value>) -> Result<Value, Error> {
    body.ok_or_else(|| Error::InvalidResponse {
        path: path.to_owned(),
        status: 204,
        reason: "a write answered without a body".into(),
        snippet: String::new(),
    })
}

fn encode<T: Serialize>(items: &T) -> Result<Value, Error> {
    serde_json::to_value(items).map_err(|e| Error::Encode(e.to_string()))
}

impl Client {
    /// `GET /api/v4/account`: the account and, doubling as a token check, whether the token works.
    pub async fn account(&self) -> Result<Account, Error> {
        let path = "/api/v4/account";
        let body = written(path, self.get_json(path, &[]).await?)?;
        serde_json::from_value(body).map_err(|e| Error::InvalidResponse {
            path: path.into(),
            status: 200,
            reason: format!("not an account ({e})"),
            snippet: String::new(),
        })
    }

    /// Every user (`GET /api/v4/users`, all pages). Administrators only: others get [`Error::Api`] 403.
    pub async fn users(&self) -> Result<Vec<User>, Error> {
        self.list_all("/api/v4/users", &[], "users", 250).await
    }

    /// Contacts with this phone number: searches by the last 10 digits (`query`, every filled field) and keeps
    /// those whose PHONE value ends with the same 10 digits. With their leads (`with=leads`).
    pub async fn contacts_by_phone(&self, phone: &str) -> Result<Vec<Contact>, Error> {
        let key = last_digits(phone, 10);
        if key.len() < 5 {
            return Ok(Vec::new());
        }
        let query = [("query", key.clone()), ("with", "leads".to_owned())];
        let found: Vec<Contact> = self.list_all("/api/v4/contacts", &query, "contacts", 50).await?;
        Ok(found
            .into_iter()
            .filter(|c| c.phones().any(|p| last_digits(p, 10) == key))
            .collect())
    }

    /// `POST /api/v4/calls`. A number with no contact is refused ([`Error::is_entity_not_found`]).
    pub async fn add_calls(&self, calls: &[NewCall]) -> Result<Vec<AddedCall>, Error> {
        let path = "/api/v4/calls";
        let body = written(path, self.post_json(path, &encode(&calls)?).await?)?;
        embedded(path, 200, &body, "calls")
    }

    /// `POST /api/v4/leads/unsorted/sip`.
    pub async fn add_unsorted_sip(&self, entries: &[NewUnsortedSip]) -> Result<Vec<AddedUnsorted>, Error> {
        let path = "/api/v4/leads/unsorted/sip";
        let body = written(path, self.post_json(path, &encode(&entries)?).await?)?;
        embedded(path, 200, &body, "unsorted")
    }

    /// `POST /api/v4/leads/complex`: leads with their contact in one request (≤ 50).
    pub async fn add_complex(&self, leads: &[NewComplexLead]) -> Result<Vec<AddedComplex>, Error> {
        let path = "/api/v4/leads/complex";
        if leads.len() > 50 {
            return Err(Error::Encode(format!(
                "{} leads in one complex add; the limit is 50",
                leads.len()
            )));
        }
        let body = written(path, self.post_json(path, &encode(&leads)?).await?)?;
        serde_json::from_value(body).map_err(|e| Error::InvalidResponse {
            path: path.into(),
            status: 200,
            reason: format!("not a list of added leads ({e})"),
            snippet: String::new(),
        })
    }

    /// `POST /api/v4/tasks`.
    pub async fn add_tasks(&self, tasks: &[NewTask]) -> Result<Vec<AddedTask>, Error> {
        let path = "/api/v4/tasks";
        let body = written(path, self.post_json(path, &encode(&tasks)?).await?)?;
        embedded(path, 200, &body, "tasks")
    }

    /// The incoming-call popup: `POST /api/v2/events` `{"add":[{"type":"phone_call",…}]}`. `users`: who sees
    /// it; empty = every user of the account. amoCRM finds the contact itself (last 8 digits).
    pub async fn show_call_popup(&self, phone_number: &str, users: &[u64]) -> Result<(), Error> {
        let mut event = json!({"type": "phone_call", "phone_number": phone_number});
        if !users.is_empty() {
            event["users"] = json!(users);
        }
        self.post_json("/api/v2/events", &json!({"add": [event]})).await?;
        Ok(())
    }

    /// `GET /api/v4/leads/pipelines` with their statuses.
    pub async fn pipelines(&self) -> Result<Vec<Pipeline>, Error> {
        let path = "/api/v4/leads/pipelines";
        match self.get_json(path, &[]).await? {
            Some(body) => embedded(path, 200, &body, "pipelines"),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_serialises_in_the_documented_shape() {
        let call = NewCall {
            direction: Direction::Inbound,
            uniq: Some("1700000000.42".into()),
            duration: 148,
            source: "ringlink".into(),
            phone: "+79123456789".into(),
            link: None,
            call_status: Some(CallStatus::Talked),
            call_result: Some("Разговор состоялся".into()),
            responsible_user_id: Some(8),
            created_by: Some(8),
            created_at: None,
            request_id: None,
        };
        assert_eq!(
            serde_json::to_value(&call).unwrap(),
            json!({"direction":"inbound","uniq":"1700000000.42","duration":148,"source":"ringlink","phone":"+79123456789",
                   "call_status":4,"call_result":"Разговор состоялся","responsible_user_id":8,"created_by":8})
        );
    }

    #[test]
    fn odd_contacts_read() {
        let c: Contact = serde_json::from_value(json!({"id":"5","name":null,"custom_fields_values":null})).unwrap();
        assert_eq!((c.id, c.name.as_str(), c.phones().count()), (5, "", 0));
        let c: Contact = serde_json::from_value(json!({
            "id": 7,
            "custom_fields_values": [{"field_code":"PHONE","values":[{"value":"+7 912 345-67-89","enum_code":"WORK"},{"value":123}]}],
            "_embedded": {"leads": [{"id": "9"}]}
        }))
        .unwrap();
        assert_eq!(c.phones().collect::<Vec<_>>(), ["+7 912 345-67-89", "123"]);
        assert_eq!(c.embedded.leads, [IdRef { id: 9 }]);
        assert!(serde_json::from_value::<Contact>(json!({"name": "no id"})).is_err());
    }

    #[test]
    fn last_ten_digits() {
        assert_eq!(last_digits("8 (912) 345-67-89", 10), "9123456789");
        assert_eq!(last_digits("+79123456789", 10), "9123456789");
        assert_eq!(last_digits("101", 10), "101");
    }
}
