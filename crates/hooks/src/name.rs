//! The hooks of the seed's contract, their file names and the old names still accepted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One customization point. The names are the seed's; [`HookName::file_names`] adds the old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookName {
    /// Whether a call is registered at all (black and white lists by trunk or extension).
    NeedRegistration,
    /// The client's number before it is used anywhere (`+7…` → `8…`).
    ProcessClientPhone,
    /// An employee's number before it is used anywhere.
    ProcessUserPhone,
    /// The CRM search of the client (`action: ignore` skips the call, `filter` narrows the search).
    ProcessSearchParams,
    /// `telephony.externalcall.register` params.
    ProcessRegistrationParams,
    /// The fields of a lead/contact/deal the connector creates for an unknown number.
    ProcessEntityCreationParams,
    /// `telephony.externalcall.finish` params (`action: delete` removes the call from the CRM).
    ProcessFinalParams,
    /// The recording's path before it is uploaded.
    ProcessRecordFilePath,
    /// The AMI `Originate` of a click-to-call.
    ProcessOriginateParams,
    /// `tasks.task.add` of a missed call (`arNewTaskData`).
    ProcessTaskCreationParams,
    /// Fields of the call's CRM activity, at the end of the call.
    CustomizeActivity,
    /// Fields of the entity the connector created, at the end of the call.
    CustomizeEntity,
    /// Which of the CRM entities found for a number the call is bound to.
    GetSearchFilter,
    /// Told the registration's result; its answer changes nothing.
    PostRegistration,
    /// `telephony.externalcall.show` params.
    CustomizeShowCallCard,
    /// Auto-distribution's answer to the dialplan: which extension a client's incoming call rings first.
    CustomizeAutodistribution,
    /// amoCRM: the `POST /api/v4/calls` item of a call, at its end.
    ProcessCallParams,
    /// amoCRM: the contact created for an unknown number (complex add or the Unsorted entry).
    ProcessContactCreationParams,
    /// amoCRM: the lead created for an unknown number (complex add or the Unsorted entry).
    ProcessLeadCreationParams,
}

impl HookName {
    pub const ALL: [HookName; 19] = [
        HookName::NeedRegistration,
        HookName::ProcessClientPhone,
        HookName::ProcessUserPhone,
        HookName::ProcessSearchParams,
        HookName::ProcessRegistrationParams,
        HookName::ProcessEntityCreationParams,
        HookName::ProcessFinalParams,
        HookName::ProcessRecordFilePath,
        HookName::ProcessOriginateParams,
        HookName::ProcessTaskCreationParams,
        HookName::CustomizeActivity,
        HookName::CustomizeEntity,
        HookName::GetSearchFilter,
        HookName::PostRegistration,
        HookName::CustomizeShowCallCard,
        HookName::CustomizeAutodistribution,
        HookName::ProcessCallParams,
        HookName::ProcessContactCreationParams,
        HookName::ProcessLeadCreationParams,
    ];

    /// The seed's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HookName::NeedRegistration => "need_registration",
            HookName::ProcessClientPhone => "process_client_phone",
            HookName::ProcessUserPhone => "process_user_phone",
            HookName::ProcessSearchParams => "process_search_params",
            HookName::ProcessRegistrationParams => "process_registration_params",
            HookName::ProcessEntityCreationParams => "process_entity_creation_params",
            HookName::ProcessFinalParams => "process_final_params",
            HookName::ProcessRecordFilePath => "process_record_file_path",
            HookName::ProcessOriginateParams => "process_originate_params",
            HookName::ProcessTaskCreationParams => "process_task_creation_params",
            HookName::CustomizeActivity => "customize_activity",
            HookName::CustomizeEntity => "customize_entity",
            HookName::GetSearchFilter => "get_search_filter",
            HookName::PostRegistration => "post_registration",
            HookName::CustomizeShowCallCard => "customize_show_call_card",
            HookName::CustomizeAutodistribution => "customize_autodistribution",
            HookName::ProcessCallParams => "process_call_params",
            HookName::ProcessContactCreationParams => "process_contact_creation_params",
            HookName::ProcessLeadCreationParams => "process_lead_creation_params",
        }
    }

    /// Names the hook's file may have, the current one first: older versions of the product named some hooks
    /// differently, and an integrator's existing file keeps working under its old name.
    pub fn file_names(self) -> &'static [&'static str] {
        match self {
            HookName::ProcessClientPhone => &["process_client_phone", "process_phone_number"],
            HookName::ProcessUserPhone => &["process_user_phone", "process_phone_number"],
            HookName::CustomizeActivity => &["customize_activity", "get_updated_activity_fields"],
            HookName::CustomizeEntity => &[
                "customize_entity",
                "get_updated_entity_fields",
                "get_updated_lead_fields",
            ],
            HookName::NeedRegistration => &["need_registration"],
            HookName::ProcessSearchParams => &["process_search_params"],
            HookName::ProcessRegistrationParams => &["process_registration_params"],
            HookName::ProcessEntityCreationParams => &["process_entity_creation_params"],
            HookName::ProcessFinalParams => &["process_final_params"],
            HookName::ProcessRecordFilePath => &["process_record_file_path"],
            HookName::ProcessOriginateParams => &["process_originate_params"],
            HookName::ProcessTaskCreationParams => &["process_task_creation_params"],
            HookName::GetSearchFilter => &["get_search_filter"],
            HookName::PostRegistration => &["post_registration"],
            HookName::CustomizeShowCallCard => &["customize_show_call_card"],
            HookName::CustomizeAutodistribution => &["customize_autodistribution"],
            HookName::ProcessCallParams => &["process_call_params"],
            HookName::ProcessContactCreationParams => &["process_contact_creation_params"],
            HookName::ProcessLeadCreationParams => &["process_lead_creation_params"],
        }
    }

    /// The `action` values the hook may answer besides `data` (the seed's `ignore`/`register`, `delete`/`register`).
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            HookName::ProcessSearchParams => &["ignore", "register"],
            HookName::ProcessFinalParams => &["delete", "register"],
            _ => &[],
        }
    }
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no hook of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a hook; known hooks: {known}", known = known_names())]
pub struct UnknownHook(pub String);

fn known_names() -> String {
    HookName::ALL.map(HookName::as_str).join(", ")
}

impl FromStr for HookName {
    type Err = UnknownHook;

    /// Accepts the seed's names and the old ones (`process_phone_number` is taken as `process_client_phone`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        HookName::ALL
            .into_iter()
            .find(|h| h.file_names().contains(&s))
            .ok_or_else(|| UnknownHook(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_itself() {
        for hook in HookName::ALL {
            assert_eq!(hook.as_str().parse::<HookName>(), Ok(hook));
            assert_eq!(hook.file_names()[0], hook.as_str());
        }
    }

    #[test]
    fn old_names_are_aliases() {
        assert_eq!("process_phone_number".parse(), Ok(HookName::ProcessClientPhone));
        assert!(HookName::ProcessUserPhone
            .file_names()
            .contains(&"process_phone_number"));
        assert_eq!("get_updated_activity_fields".parse(), Ok(HookName::CustomizeActivity));
        assert_eq!("get_updated_entity_fields".parse(), Ok(HookName::CustomizeEntity));
        assert_eq!("get_updated_lead_fields".parse(), Ok(HookName::CustomizeEntity));
        let err = "nope".parse::<HookName>().unwrap_err().to_string();
        assert!(err.contains("need_registration"), "{err}");
    }
}
