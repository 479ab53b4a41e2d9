//! Click-to-call: an employee clicks a client's number in Bitrix24 (`ONEXTERNALCALLSTART`) or in amoCRM (the
//! telephony widget's request), the PBX rings the employee's phone first and, once it is picked up, dials the
//! client.
//!
//! Pure: [`ClickToCall::from_event`] reads the event's `data` ([`ClickToCall::from_amocrm`] the widget's fields), [`originate_params`] turns a request into the AMI
//! `Originate` to send (`(request, settings, directory) -> OriginateParams`, so a customization hook can be applied
//! to its output), and [`click_call_key`] names the call: the originated channel is created with that uniqueid
//! (`ChannelId`), so the tracker follows the call under a key known before the first AMI event.
//! The engine then tracks the call under the `CALL_ID` Bitrix24 already registered (in amoCRM, ringlink's own
//! id of the click) ([`crate::Engine::expect_click_to_call`]): no second `register`, one `finish` on that
//! `CALL_ID` — in amoCRM, one outgoing `/api/v4/calls` item for the employee who clicked.

use std::collections::BTreeMap;

use numbers::{Normalizer, NumbersConfig, ReplaceRule};
use serde::{Deserialize, Serialize};

use crate::intent::Outcome;
use crate::users::{UserId, UsersDirectory};

/// A click-to-call request as Bitrix24 sends it (`ONEXTERNALCALLSTART`'s `data`), or amoCRM's widget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickToCall {
    /// The call Bitrix24 registered for the click (amoCRM: ringlink's id of the click).
    pub call_id: String,
    /// The employee who clicked.
    pub user_id: UserId,
    /// The client's number as Bitrix24 has it.
    pub phone_number: String,
    /// The external line the employee chose (empty: the default line).
    #[serde(default)]
    pub line_number: Option<String>,
    #[serde(default)]
    pub crm_entity_type: Option<String>,
    #[serde(default)]
    pub crm_entity_id: Option<u64>,
}

/// Why an event (or the amoCRM widget's request) is not a usable click-to-call request; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickError {
    #[error("the request has no {0}")]
    Missing(&'static str),
    #[error("{0} {1:?} is not a user id (a positive whole number)")]
    BadUser(&'static str, String),
    #[error("{0} {1:?} has no digits")]
    BadPhone(&'static str, String),
    #[error("{0} {1:?} is not a usable id: 1 to 64 letters, digits, '.', '-' or '_'")]
    BadId(&'static str, String),
}

/// The longest `click_id` the amoCRM widget may send.
const MAX_CLICK_ID: usize = 64;

fn non_empty(data: &BTreeMap<String, String>, key: &str) -> Option<String> {
    data.get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl ClickToCall {
    /// Reads `ONEXTERNALCALLSTART`'s `data` (all values are strings, as Bitrix24 sends them).
    pub fn from_event(data: &BTreeMap<String, String>) -> Result<Self, ClickError> {
        let call_id = non_empty(data, "CALL_ID").ok_or(ClickError::Missing("CALL_ID"))?;
        let user = non_empty(data, "USER_ID").ok_or(ClickError::Missing("USER_ID"))?;
        let user_id = user
            .parse::<UserId>()
            .map_err(|_| ClickError::BadUser("USER_ID", user.clone()))?;
        let phone_number = non_empty(data, "PHONE_NUMBER").ok_or(ClickError::Missing("PHONE_NUMBER"))?;
        if !phone_number.bytes().any(|b| b.is_ascii_digit()) {
            return Err(ClickError::BadPhone("PHONE_NUMBER", phone_number));
        }
        Ok(Self {
            call_id,
            user_id,
            phone_number,
            line_number: non_empty(data, "LINE_NUMBER"),
            crm_entity_type: non_empty(data, "CRM_ENTITY_TYPE"),
            crm_entity_id: non_empty(data, "CRM_ENTITY_ID").and_then(|v| v.parse().ok()),
        })
    }

    /// Reads the amoCRM telephony widget's request (`POST /amocrm/click`): `user_id` (the amoCRM user who
    /// clicked; the users directory gives their extension), `phone` (the number to dial), and optionally `line`
    /// (an external line of `[click_to_call.dial.lines]`) and `click_id` (the widget's id of this click, so that
    /// a request sent again dials nothing; `fallback_id` when absent). amoCRM registers nothing on a click: the
    /// call's id is ringlink's, `amocrm.<user_id>.<click_id>`, and the call is recorded when it ends.
    pub fn from_amocrm(fields: &BTreeMap<String, String>, fallback_id: &str) -> Result<Self, ClickError> {
        let user = non_empty(fields, "user_id").ok_or(ClickError::Missing("user_id"))?;
        let user_id = user
            .parse::<UserId>()
            .ok()
            .filter(|u| *u > 0)
            .ok_or_else(|| ClickError::BadUser("user_id", user.clone()))?;
        let phone_number = non_empty(fields, "phone").ok_or(ClickError::Missing("phone"))?;
        if !phone_number.bytes().any(|b| b.is_ascii_digit()) {
            return Err(ClickError::BadPhone("phone", phone_number));
        }
        let click_id = non_empty(fields, "click_id").unwrap_or_else(|| fallback_id.to_owned());
        let usable = click_id.len() <= MAX_CLICK_ID
            && click_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !usable {
            return Err(ClickError::BadId("click_id", click_id));
        }
        Ok(Self {
            call_id: format!("amocrm.{user_id}.{click_id}"),
            user_id,
            phone_number,
            line_number: non_empty(fields, "line"),
            crm_entity_type: None,
            crm_entity_id: None,
        })
    }
}

/// How click-to-call dials (the `[click_to_call]` section).
///
/// ```toml
/// employee_channel = "PJSIP/{extension}"
/// context = "from-internal"
/// timeout_secs = 30
/// [[lines]]
/// line_number = "73432723033"
/// context = "outbound"
/// prefix = ""
/// [[dial_rules]]
/// pattern = '^\+7(\d{10})$'
/// replacement = "8$1"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickSettings {
    /// The channel the originate rings the employee through; `{extension}` is replaced by the extension
    /// (`UF_PHONE_INNER`). A Local channel into the employees' context rings the phone the way the dialplan
    /// does (follow-me, ring groups) and lets the tracker see the employee as the caller.
    pub employee_channel: String,
    /// The employee's device, asked for its state before dialling (`DEVICE_STATE()`): an unavailable phone is
    /// not rung. Empty: no check.
    pub employee_device: String,
    /// Where the client's number is dialled once the employee picks up (the employees' own outgoing context).
    pub context: String,
    /// How long the employee's phone rings before the click is given up.
    pub timeout_secs: u64,
    /// Per external line (`LINE_NUMBER`): the context (trunk) to dial out through and a prefix for the number.
    pub lines: Vec<ClickLine>,
    /// Rules turning Bitrix24's `PHONE_NUMBER` into the number to dial; the first match wins. Without a match
    /// the number is dialled as `+` and digits.
    pub dial_rules: Vec<ReplaceRule>,
}

impl Default for ClickSettings {
    fn default() -> Self {
        Self {
            employee_channel: "Local/{extension}@from-internal".into(),
            employee_device: "PJSIP/{extension}".into(),
            context: "from-internal".into(),
            timeout_secs: 30,
            lines: Vec::new(),
            dial_rules: Vec::new(),
        }
    }
}

/// One external line's way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickLine {
    pub line_number: String,
    /// Context the client's number is dialled in (default: [`ClickSettings::context`]).
    #[serde(default)]
    pub context: Option<String>,
    /// Put in front of the dialled number (e.g. an outbound route's access code).
    #[serde(default)]
    pub prefix: String,
}

/// The AMI `Originate` of a click.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginateParams {
    /// Rung first: the employee's phone.
    pub channel: String,
    /// Once it answers, the channel continues at `exten@context`: the client's number.
    pub context: String,
    pub exten: String,
    pub priority: u32,
    /// Shown on the employee's phone: the client's number.
    pub caller_id: String,
    /// How long the employee's phone may ring.
    pub timeout_ms: u64,
    /// The uniqueid of the originated channel, which becomes the call's key (see [`click_call_key`]).
    pub channel_id: String,
    /// The uniqueid of a Local channel's `;2` half.
    pub other_channel_id: String,
    /// The device whose state is checked first (`PJSIP/101`), if any.
    pub device: Option<String>,
    /// Channel variables set on the originated channel.
    pub variables: Vec<(String, String)>,
}

/// Why a click cannot be dialled; the call is finished at once with [`ClickRefusal::status_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickRefusal {
    #[error("user {0} has no extension (UF_PHONE_INNER) in the users directory")]
    UnknownEmployee(UserId),
    #[error("the employee's phone {0} is not reachable (offline or not registered)")]
    PhoneOffline(String),
    #[error("the PBX did not place the call: {0}")]
    OriginateFailed(String),
    #[error("the employee did not pick up")]
    EmployeeNoAnswer,
    #[error("the employee's phone is busy")]
    EmployeeBusy,
    #[error("PHONE_NUMBER {0:?} gives nothing to dial")]
    BadNumber(String),
}

impl ClickRefusal {
    /// `STATUS_CODE` of the finish.
    pub fn status_code(&self) -> &'static str {
        crate::bitrix24::status_code(self.outcome())
    }

    /// How the call ends for the CRM.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClickRefusal::UnknownEmployee(_) => Outcome::Forbidden,
            ClickRefusal::PhoneOffline(_) | ClickRefusal::OriginateFailed(_) => Outcome::Unavailable,
            ClickRefusal::EmployeeNoAnswer => Outcome::Missed,
            ClickRefusal::EmployeeBusy => Outcome::Busy,
            ClickRefusal::BadNumber(_) => Outcome::NotFound,
        }
    }

    /// Reads an `OriginateResponse` failure's `Reason` (Asterisk's `AST_CONTROL_*` of the first channel).
    pub fn from_originate_reason(reason: &str, channel: &str) -> Self {
        match reason.trim() {
            // 1: the channel hung up unanswered (a Local channel whose dial of the phone ended), 3: no answer.
            "1" | "3" => ClickRefusal::EmployeeNoAnswer,
            "5" => ClickRefusal::EmployeeBusy,
            "0" | "8" => ClickRefusal::PhoneOffline(channel.to_owned()),
            other => ClickRefusal::OriginateFailed(format!("OriginateResponse reason {other}")),
        }
    }
}

/// Characters allowed in a channel uniqueid we choose.
fn id_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.'
}

/// The call key (and the originated channel's uniqueid) of a click: derived from the `CALL_ID`, so the same click
/// delivered twice names the same call.
pub fn click_call_key(call_id: &str) -> String {
    let safe: String = call_id.chars().filter(|c| id_safe(*c)).take(100).collect();
    format!("c2c-{safe}")
}

/// The number to dial for Bitrix24's `PHONE_NUMBER`: `+` and digits, rewritten by the first matching rule.
pub fn dial_number(phone: &str, rules: &[ReplaceRule]) -> Result<String, numbers::Error> {
    let normalizer = Normalizer::new(&NumbersConfig {
        replace: rules.to_vec(),
        ..NumbersConfig::default()
    })?;
    let trimmed = phone.trim();
    let mut cleaned = String::new();
    if trimmed.starts_with('+') {
        cleaned.push('+');
    }
    cleaned.extend(trimmed.chars().filter(char::is_ascii_digit));
    Ok(normalizer.custom(&cleaned).unwrap_or(cleaned))
}

/// Checks the settings once (the dial rules compile, the channel names the extension).
pub fn validate(settings: &ClickSettings) -> Result<(), String> {
    if !settings.employee_channel.contains("{extension}") {
        return Err("click_to_call.employee_channel must contain {extension}".into());
    }
    if settings.context.trim().is_empty() {
        return Err("click_to_call.context is empty".into());
    }
    if settings.timeout_secs == 0 || settings.timeout_secs > 600 {
        return Err("click_to_call.timeout_secs must be between 1 and 600".into());
    }
    dial_number("1", &settings.dial_rules).map_err(|e| format!("click_to_call.dial_rules: {e}"))?;
    Ok(())
}

/// The `Originate` for `request`: the employee's extension from the users directory, the dialled number from
/// the dial rules, the context from the chosen line.
pub fn originate_params(
    request: &ClickToCall,
    settings: &ClickSettings,
    directory: &UsersDirectory,
) -> Result<OriginateParams, ClickRefusal> {
    let extension = directory
        .extension_of(request.user_id)
        .ok_or(ClickRefusal::UnknownEmployee(request.user_id))?;
    let number = dial_number(&request.phone_number, &settings.dial_rules)
        .map_err(|e| ClickRefusal::OriginateFailed(e.to_string()))?;
    if !number.bytes().any(|b| b.is_ascii_digit()) {
        return Err(ClickRefusal::BadNumber(request.phone_number.clone()));
    }
    let line = request
        .line_number
        .as_deref()
        .and_then(|l| settings.lines.iter().find(|c| c.line_number.trim() == l.trim()));
    let context = line
        .and_then(|l| l.context.clone())
        .unwrap_or_else(|| settings.context.clone());
    let exten = format!("{}{number}", line.map_or("", |l| l.prefix.as_str()));
    let mut variables = vec![("RINGLINK_CALL_ID".to_owned(), request.call_id.clone())];
    if let Some(l) = &request.line_number {
        variables.push(("RINGLINK_LINE".to_owned(), l.clone()));
    }
    Ok(OriginateParams {
        channel: settings.employee_channel.replace("{extension}", extension),
        context,
        exten,
        priority: 1,
        caller_id: format!("\"{number}\" <{number}>"),
        timeout_ms: settings.timeout_secs.saturating_mul(1000),
        channel_id: click_call_key(&request.call_id),
        other_channel_id: format!("{}-2", click_call_key(&request.call_id)),
        device: Some(settings.employee_device.replace("{extension}", extension)).filter(|d| !d.trim().is_empty()),
        variables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::DirectoryUser;
    use tracker::Timestamp;

    fn directory() -> UsersDirectory {
        let mut d = UsersDirectory::new();
        d.replace(
            [DirectoryUser {
                id: 1,
                extension: Some("101".into()),
                phones: vec![],
            }],
            Timestamp::from_secs(1),
        );
        d
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_the_event_data() {
        let c = ClickToCall::from_event(&data(&[
            ("CALL_ID", "externalCall.ab.1"),
            ("USER_ID", "1"),
            ("PHONE_NUMBER", "+7 900 123-45-67"),
            ("LINE_NUMBER", ""),
            ("CRM_ENTITY_TYPE", "CONTACT"),
            ("CRM_ENTITY_ID", "7"),
        ]))
        .expect("valid");
        assert_eq!(c.user_id, 1);
        assert_eq!(c.line_number, None);
        assert_eq!(c.crm_entity_id, Some(7));
        assert_eq!(
            ClickToCall::from_event(&data(&[("USER_ID", "1"), ("PHONE_NUMBER", "1")])),
            Err(ClickError::Missing("CALL_ID"))
        );
        assert_eq!(
            ClickToCall::from_event(&data(&[("CALL_ID", "x"), ("USER_ID", "u"), ("PHONE_NUMBER", "1")])),
            Err(ClickError::BadUser("USER_ID", "u".into()))
        );
        assert!(matches!(
            ClickToCall::from_event(&data(&[("CALL_ID", "x"), ("USER_ID", "1"), ("PHONE_NUMBER", "abc")])),
            Err(ClickError::BadPhone(..))
        ));
    }

    #[test]
    fn reads_the_amocrm_widgets_request_under_an_id_of_its_user_and_click() {
        let c = ClickToCall::from_amocrm(
            &data(&[
                ("user_id", "8000002"),
                ("phone", "+7 900 123-45-67"),
                ("click_id", "k1-a_2.b"),
            ]),
            "unused",
        )
        .expect("valid");
        assert_eq!(c.call_id, "amocrm.8000002.k1-a_2.b");
        assert_eq!((c.user_id, c.phone_number.as_str()), (8_000_002, "+7 900 123-45-67"));
        assert_eq!(c.line_number, None);
        let c = ClickToCall::from_amocrm(
            &data(&[("user_id", "5"), ("phone", "89001234567"), ("line", "73432723033")]),
            "1700000000123",
        )
        .expect("valid");
        assert_eq!(c.call_id, "amocrm.5.1700000000123", "no click_id: the fallback");
        assert_eq!(c.line_number.as_deref(), Some("73432723033"));
    }

    #[test]
    fn the_amocrm_widgets_bad_requests_name_the_field() {
        let read = |pairs: &[(&str, &str)]| ClickToCall::from_amocrm(&data(pairs), "f").map(|_| ());
        assert_eq!(read(&[("phone", "1")]), Err(ClickError::Missing("user_id")));
        assert_eq!(read(&[("user_id", "7")]), Err(ClickError::Missing("phone")));
        assert_eq!(
            read(&[("user_id", "0"), ("phone", "1")]),
            Err(ClickError::BadUser("user_id", "0".into()))
        );
        assert_eq!(
            read(&[("user_id", "x7"), ("phone", "1")]),
            Err(ClickError::BadUser("user_id", "x7".into()))
        );
        assert_eq!(
            read(&[("user_id", "7"), ("phone", "call me")]),
            Err(ClickError::BadPhone("phone", "call me".into()))
        );
        assert_eq!(
            read(&[("user_id", "7"), ("phone", "1"), ("click_id", "a/b")]),
            Err(ClickError::BadId("click_id", "a/b".into()))
        );
        let long = "x".repeat(65);
        assert!(matches!(
            read(&[("user_id", "7"), ("phone", "1"), ("click_id", &long)]),
            Err(ClickError::BadId(..))
        ));
        assert_eq!(ClickError::Missing("phone").to_string(), "the request has no phone");
    }

    fn click(line: Option<&str>) -> ClickToCall {
        ClickToCall {
            call_id: "externalCall.0123abcd.1700000000".into(),
            user_id: 1,
            phone_number: "+7 (900) 123-45-67".into(),
            line_number: line.map(str::to_owned),
            crm_entity_type: None,
            crm_entity_id: None,
        }
    }

    #[test]
    fn builds_the_originate_from_directory_rules_and_line() {
        let mut settings = ClickSettings {
            dial_rules: vec![ReplaceRule {
                pattern: r"^\+7(\d{10})$".into(),
                replacement: "8$1".into(),
            }],
            ..ClickSettings::default()
        };
        let p = originate_params(&click(None), &settings, &directory()).expect("dialable");
        assert_eq!(p.channel, "Local/101@from-internal");
        assert_eq!(p.device.as_deref(), Some("PJSIP/101"));
        assert_eq!(p.context, "from-internal");
        assert_eq!(p.exten, "89001234567");
        assert_eq!(p.caller_id, "\"89001234567\" <89001234567>");
        assert_eq!(p.channel_id, "c2c-externalCall.0123abcd.1700000000");
        assert_eq!(p.timeout_ms, 30_000);
        settings.lines.push(ClickLine {
            line_number: "74950000000".into(),
            context: Some("outbound".into()),
            prefix: "9".into(),
        });
        let p = originate_params(&click(Some("74950000000")), &settings, &directory()).expect("dialable");
        assert_eq!((p.context.as_str(), p.exten.as_str()), ("outbound", "989001234567"));
        let p = originate_params(&click(Some("other")), &settings, &directory()).expect("dialable");
        assert_eq!(
            p.context, "from-internal",
            "an unconfigured line takes the default way out"
        );
    }

    #[test]
    fn refuses_what_cannot_be_dialled() {
        let settings = ClickSettings::default();
        let mut c = click(None);
        c.user_id = 9;
        assert_eq!(
            originate_params(&c, &settings, &directory()),
            Err(ClickRefusal::UnknownEmployee(9))
        );
        assert_eq!(ClickRefusal::UnknownEmployee(9).status_code(), "403");
        assert_eq!(
            ClickRefusal::from_originate_reason("3", "PJSIP/101").status_code(),
            "304"
        );
        assert_eq!(
            ClickRefusal::from_originate_reason("0", "PJSIP/101").status_code(),
            "480"
        );
        let p = originate_params(&click(None), &settings, &directory()).expect("dialable");
        assert_eq!(p.exten, "+79001234567", "no rule: + and digits");
    }

    #[test]
    fn the_call_key_is_a_safe_uniqueid() {
        assert_eq!(click_call_key("a b;c/d.e"), "c2c-abcd.e");
        assert!(validate(&ClickSettings::default()).is_ok());
        let bad = ClickSettings {
            employee_channel: "PJSIP/101".into(),
            ..ClickSettings::default()
        };
        assert!(validate(&bad).is_err());
    }
}
