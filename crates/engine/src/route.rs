//! Auto-distribution: a known client's incoming call goes straight to the employee responsible for them.
//!
//! The dialplan asks ringlink which extension owns the calling number before it routes the call; the shell
//! looks the number up in the CRM (`telephony.externalCall.searchCrmEntities`), within a time budget, and
//! [`route_to_owner`] decides from the answer: the first CRM record, in the configured order of entity types,
//! whose responsible employee has an extension in the users directory. Anything else — no record, a
//! responsible without an extension, a CRM that failed or did not answer within the budget — is "no
//! preference", and the call follows its normal route. Every answer carries its reason for the call journal.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::users::{UserId, UsersDirectory};

/// A CRM entity type auto-distribution may take the responsible from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    Contact,
    Company,
    Lead,
}

impl CrmKind {
    /// Bitrix24's name (`CRM_ENTITY_TYPE`).
    pub fn bitrix24_name(self) -> &'static str {
        match self {
            CrmKind::Contact => "CONTACT",
            CrmKind::Company => "COMPANY",
            CrmKind::Lead => "LEAD",
        }
    }

    fn of(entity_type: &str) -> Option<Self> {
        [CrmKind::Contact, CrmKind::Company, CrmKind::Lead]
            .into_iter()
            .find(|k| k.bitrix24_name().eq_ignore_ascii_case(entity_type.trim()))
    }
}

/// The default order: a contact's responsible first, then a company's, then a lead's.
pub const DEFAULT_ORDER: [CrmKind; 3] = [CrmKind::Contact, CrmKind::Company, CrmKind::Lead];

/// One CRM record holding the calling number, as the CRM answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmOwner {
    /// `CONTACT`, `COMPANY`, `LEAD` (or a type ringlink does not route by).
    pub entity_type: String,
    pub entity_id: u64,
    /// The record's responsible employee (`ASSIGNED_BY_ID`), if any.
    pub responsible: Option<UserId>,
}

/// What the CRM look-up came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The CRM answered: these records hold the number (possibly none).
    Found(Vec<CrmOwner>),
    /// No answer within the budget.
    TimedOut { budget_ms: u64 },
    /// The CRM answered with an error, or could not be reached.
    Failed(String),
}

/// The answer to the dialplan, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The extension to ring first; `None`: no preference, the normal route.
    pub extension: Option<String>,
    /// The responsible employee behind the extension.
    pub user: Option<UserId>,
    /// The record the responsible was taken from.
    pub entity: Option<(String, u64)>,
    /// Human-readable reason, for the call journal.
    pub reason: String,
    /// Structured details for the call journal.
    pub data: Value,
}

impl Route {
    fn none(reason: String, data: Value) -> Self {
        Self {
            extension: None,
            user: None,
            entity: None,
            reason,
            data,
        }
    }
}

/// Decides whose phone a call from `phone` rings first (see the module's documentation).
pub fn route_to_owner(phone: &str, lookup: &Lookup, order: &[CrmKind], directory: &UsersDirectory) -> Route {
    let owners = match lookup {
        Lookup::TimedOut { budget_ms } => {
            return Route::none(
                format!("the CRM did not answer within the {budget_ms} ms budget: normal route"),
                json!({"phone": phone, "budget_ms": budget_ms}),
            )
        }
        Lookup::Failed(why) => {
            return Route::none(
                format!("the CRM look-up failed ({why}): normal route"),
                json!({"phone": phone, "error": why}),
            )
        }
        Lookup::Found(owners) => owners,
    };
    let mut skipped = Vec::new();
    for kind in order {
        for owner in owners.iter().filter(|o| CrmKind::of(&o.entity_type) == Some(*kind)) {
            let entity = format!("{} {}", kind.bitrix24_name().to_ascii_lowercase(), owner.entity_id);
            let Some(user) = owner.responsible.filter(|u| *u > 0) else {
                skipped.push(format!("{entity} has no responsible"));
                continue;
            };
            let Some(extension) = directory.extension_of(user) else {
                skipped.push(format!("{entity}'s responsible user {user} has no extension"));
                continue;
            };
            let mut reason = format!("{entity} is the responsibility of user {user}: extension {extension} first");
            if !skipped.is_empty() {
                reason.push_str(&format!(" (skipped: {})", skipped.join("; ")));
            }
            return Route {
                extension: Some(extension.to_owned()),
                user: Some(user),
                entity: Some((kind.bitrix24_name().to_owned(), owner.entity_id)),
                reason,
                data: json!({"phone": phone, "user": user, "extension": extension,
                             "entity_type": kind.bitrix24_name(), "entity_id": owner.entity_id,
                             "skipped": skipped}),
            };
        }
    }
    let reason = if owners.is_empty() {
        format!("no CRM record holds {phone}: normal route")
    } else if skipped.is_empty() {
        let kinds: Vec<&str> = order.iter().map(|k| k.bitrix24_name()).collect();
        format!(
            "no CRM record of the routed types ({}) holds {phone}: normal route",
            kinds.join(", ")
        )
    } else {
        format!("no usable responsible ({}): normal route", skipped.join("; "))
    };
    Route::none(
        reason,
        json!({"phone": phone, "records": owners.len(), "skipped": skipped}),
    )
}

/// Checks the configured order: at least one type, none twice.
pub fn validate_order(order: &[CrmKind]) -> Result<(), String> {
    if order.is_empty() {
        return Err("autodistribution.order is empty: name at least one of contact, company, lead".into());
    }
    for (i, kind) in order.iter().enumerate() {
        if order[..i].contains(kind) {
            return Err(format!("autodistribution.order names {kind:?} twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::DirectoryUser;
    use tracker::Timestamp;

    fn directory() -> UsersDirectory {
        let user = |id, extension: Option<&str>, phones: Vec<String>| DirectoryUser {
            id,
            extension: extension.map(str::to_owned),
            phones,
        };
        let mut d = UsersDirectory::new();
        d.replace(
            [
                user(1, Some("101"), vec![]),
                user(2, Some("102"), vec![]),
                user(7, None, vec!["+79990000000".into()]),
            ],
            Timestamp::from_secs(1_700_000_000),
        );
        d
    }

    fn owner(t: &str, id: u64, user: Option<u64>) -> CrmOwner {
        CrmOwner {
            entity_type: t.into(),
            entity_id: id,
            responsible: user,
        }
    }

    #[test]
    fn a_contact_of_user_2_goes_to_102() {
        let lookup = Lookup::Found(vec![owner("CONTACT", 5, Some(2))]);
        let route = route_to_owner("+79001234567", &lookup, &DEFAULT_ORDER, &directory());
        assert_eq!(route.extension.as_deref(), Some("102"));
        assert_eq!(route.user, Some(2));
        assert_eq!(route.entity, Some(("CONTACT".into(), 5)));
        assert!(route.reason.contains("contact 5"), "{}", route.reason);
    }

    #[test]
    fn the_configured_order_decides_between_types() {
        let lookup = Lookup::Found(vec![owner("LEAD", 9, Some(1)), owner("CONTACT", 5, Some(2))]);
        let d = directory();
        assert_eq!(
            route_to_owner("1", &lookup, &DEFAULT_ORDER, &d).extension.as_deref(),
            Some("102")
        );
        let leads_first = [CrmKind::Lead, CrmKind::Contact];
        assert_eq!(
            route_to_owner("1", &lookup, &leads_first, &d).extension.as_deref(),
            Some("101")
        );
        let companies_only = [CrmKind::Company];
        let route = route_to_owner("1", &lookup, &companies_only, &d);
        assert_eq!(route.extension, None);
        assert!(route.reason.contains("routed types (COMPANY)"), "{}", route.reason);
    }

    #[test]
    fn a_responsible_without_extension_is_skipped_with_the_reason() {
        let lookup = Lookup::Found(vec![
            owner("CONTACT", 5, Some(7)),
            owner("CONTACT", 6, None),
            owner("COMPANY", 3, Some(1)),
        ]);
        let route = route_to_owner("1", &lookup, &DEFAULT_ORDER, &directory());
        assert_eq!(route.extension.as_deref(), Some("101"));
        assert!(route.reason.contains("user 7 has no extension"), "{}", route.reason);
        assert!(
            route.reason.contains("contact 6 has no responsible"),
            "{}",
            route.reason
        );
        let only_7 = Lookup::Found(vec![owner("CONTACT", 5, Some(7))]);
        let none = route_to_owner("1", &only_7, &DEFAULT_ORDER, &directory());
        assert_eq!(none.extension, None);
        assert!(none.reason.starts_with("no usable responsible"), "{}", none.reason);
    }

    #[test]
    fn no_record_timeout_and_failure_mean_no_preference() {
        let d = directory();
        let unknown = route_to_owner("+7900", &Lookup::Found(vec![]), &DEFAULT_ORDER, &d);
        assert_eq!(unknown.extension, None);
        assert!(unknown.reason.contains("no CRM record holds +7900"));
        let slow = route_to_owner("+7900", &Lookup::TimedOut { budget_ms: 300 }, &DEFAULT_ORDER, &d);
        assert_eq!(slow.extension, None);
        assert!(slow.reason.contains("300 ms"));
        let down = route_to_owner("+7900", &Lookup::Failed("HTTP 503".into()), &DEFAULT_ORDER, &d);
        assert_eq!(down.extension, None);
        assert!(down.reason.contains("HTTP 503"));
    }

    #[test]
    fn order_validation() {
        assert!(validate_order(&DEFAULT_ORDER).is_ok());
        assert!(validate_order(&[]).is_err());
        assert!(validate_order(&[CrmKind::Lead, CrmKind::Lead]).is_err());
    }
}
