//! Business-logic settings (the `[engine]` section of ringlink's TOML configuration).

use chrono::FixedOffset;
use numbers::Number;
use serde::{Deserialize, Serialize};

use crate::Error;

/// What the engine registers in Bitrix24 and how.
///
/// ```toml
/// register_local_calls = false
/// show_card = true
/// utc_offset = "+03:00"
///
/// [crm_create]
/// incoming = true
/// outgoing = false
///
/// [black_list]
/// extensions = ["103"]
/// trunks = ["74950000000"]
///
/// [[trunks]]
/// number = "73432723033"
/// crm_source = "CALL"
/// responsible = 9
///
/// [missed]
/// responsible = ["entity_owner", "last_rung", "default_user"]
/// default_user = 9
///
/// [missed.task]
/// enabled = true
/// title = "Missed call from {phone}"
/// deadline_minutes = 60
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Register calls between two employees (as an outgoing call of the caller, with the callee's number).
    pub register_local_calls: bool,
    /// Pop the call card up for the employees whose phones ring.
    pub show_card: bool,
    /// Let Bitrix24 create a lead for a number it does not know, per direction (`CRM_CREATE`).
    pub crm_create: CrmCreate,
    /// Calls through these trunks, and legs of these extensions, are never registered.
    pub black_list: Lists,
    /// When a list here is not empty, only calls through its trunks / legs of its extensions are registered.
    pub white_list: Lists,
    /// Per-trunk settings, matched by the trunk's number (`call_full.channel.trunk`).
    pub trunks: Vec<TrunkSettings>,
    /// Who answers for a missed call, and the missed-call task.
    pub missed: MissedCallSettings,
    /// `ADD_TO_CHAT` of `finish`: post the call to the employee's Bitrix24 chat.
    pub add_to_chat: bool,
    /// Attach the call recording to registrations that talked.
    pub attach_records: bool,
    /// The PBX's zone as a fixed UTC offset (`+03:00`): `CALL_START_DATE` and task deadlines carry it. Keep it equal
    /// to the tracker's `utc_offset`, which writes `call_full` times in the same zone.
    pub utc_offset: String,
    /// An extension unknown to the users directory asks for a refresh at most this often; between refreshes it
    /// is treated as an extension without a Bitrix24 user.
    pub users_refresh_interval_secs: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            register_local_calls: false,
            show_card: true,
            crm_create: CrmCreate::default(),
            black_list: Lists::default(),
            white_list: Lists::default(),
            trunks: Vec::new(),
            missed: MissedCallSettings::default(),
            add_to_chat: true,
            attach_records: true,
            utc_offset: "+00:00".into(),
            users_refresh_interval_secs: 300,
        }
    }
}

/// `CRM_CREATE` per direction: whether a call from/to an unknown number creates a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrmCreate {
    pub incoming: bool,
    pub outgoing: bool,
}

impl Default for CrmCreate {
    fn default() -> Self {
        Self {
            incoming: true,
            outgoing: false,
        }
    }
}

/// A black or white list. Extensions match a leg's internal number or endpoint name exactly; trunks match
/// the call's trunk number in any of its forms (original, base, custom, variants).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lists {
    pub extensions: Vec<String>,
    pub trunks: Vec<String>,
}

/// Settings of one trunk (one Bitrix24 external line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkSettings {
    /// The trunk's number (DID) as the tracker's trunk settings give it.
    pub number: String,
    /// `LINE_NUMBER` sent to Bitrix24 (the external line); defaults to `number`.
    #[serde(default)]
    pub line_number: Option<String>,
    /// `CRM_SOURCE`: a `STATUS_ID` of `crm.status.list` with `ENTITY_ID=SOURCE` (e.g. `CALL`).
    #[serde(default)]
    pub crm_source: Option<String>,
    /// Bitrix24 user id answering for this line's calls when nobody better is known (the `default_user` mode).
    #[serde(default)]
    pub responsible: Option<u64>,
}

/// One way to find the employee responsible for a missed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponsibleMode {
    /// The owner (`ASSIGNED_BY_ID`) of the CRM entity the call is bound to, unless the call itself created it.
    EntityOwner,
    /// The last employee whose phone rang for the call.
    LastRung,
    /// The trunk's `responsible`, else `missed.default_user`.
    DefaultUser,
}

/// Missed calls: responsible chain and task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MissedCallSettings {
    /// Tried in order; the first mode that yields a user wins.
    pub responsible: Vec<ResponsibleMode>,
    /// Bitrix24 user id of the default responsible employee.
    pub default_user: Option<u64>,
    pub task: MissedTaskSettings,
}

impl Default for MissedCallSettings {
    fn default() -> Self {
        Self {
            responsible: vec![
                ResponsibleMode::EntityOwner,
                ResponsibleMode::LastRung,
                ResponsibleMode::DefaultUser,
            ],
            default_user: None,
            task: MissedTaskSettings::default(),
        }
    }
}

/// The task created for the responsible employee of a missed incoming call (`tasks.task.add`).
///
/// `title` and `description` may use `{phone}` (the client's number), `{line}` (the line number) and
/// `{time}` (the call's start, `YYYY-MM-DD HH:MM:SS` in the PBX's zone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MissedTaskSettings {
    pub enabled: bool,
    pub title: String,
    pub description: String,
    /// The deadline, counted from the end of the call; 0 = no deadline.
    pub deadline_minutes: u64,
    /// `CREATED_BY`; Bitrix24 uses the application's user when unset.
    pub created_by: Option<u64>,
}

impl Default for MissedTaskSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            title: "Missed call from {phone}".into(),
            description: "Call back {phone}: the call to line {line} at {time} was not answered.".into(),
            deadline_minutes: 60,
            created_by: None,
        }
    }
}

/// The shortest `users_refresh_interval_secs` accepted.
pub const MIN_USERS_REFRESH_INTERVAL_SECS: u64 = 10;

/// Settings checked and prepared for use.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub raw: EngineSettings,
    pub offset: FixedOffset,
}

impl Compiled {
    pub fn new(settings: EngineSettings) -> Result<Self, Error> {
        let offset = tracker::LocalClock::parse_offset(&settings.utc_offset)
            .ok_or_else(|| Error::InvalidUtcOffset(settings.utc_offset.clone()))?;
        if settings.users_refresh_interval_secs < MIN_USERS_REFRESH_INTERVAL_SECS {
            // A shorter interval could refresh and re-feed forever for an extension that has no user.
            return Err(Error::RefreshIntervalTooShort(settings.users_refresh_interval_secs));
        }
        if settings.missed.responsible.is_empty() {
            return Err(Error::EmptyResponsibleChain);
        }
        for (i, trunk) in settings.trunks.iter().enumerate() {
            if trunk.number.trim().is_empty() {
                return Err(Error::EmptyTrunkNumber { index: i });
            }
            if settings.trunks[..i]
                .iter()
                .any(|t| t.number.trim() == trunk.number.trim())
            {
                return Err(Error::DuplicateTrunk(trunk.number.clone()));
            }
        }
        Ok(Self { raw: settings, offset })
    }

    /// Settings of the trunk the call came through / went out by.
    pub fn trunk(&self, trunk: &Number) -> Option<&TrunkSettings> {
        self.raw.trunks.iter().find(|t| number_matches(trunk, t.number.trim()))
    }

    pub fn extension_listed(list: &[String], number: &str, endpoint: &str) -> bool {
        list.iter().any(|e| {
            let e = e.trim();
            !e.is_empty() && (e == number || e == endpoint)
        })
    }

    pub fn trunk_listed(list: &[String], trunk: &Number) -> bool {
        list.iter().any(|t| number_matches(trunk, t.trim()))
    }
}

/// Whether a configured number names this normalised number (in any of the forms the CRM may know it by).
pub(crate) fn number_matches(number: &Number, configured: &str) -> bool {
    if configured.is_empty() {
        return false;
    }
    number.original == configured
        || number.base == configured
        || number.custom == configured
        || number.variants.iter().any(|v| v == configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_scenarios() {
        let s = EngineSettings::default();
        assert!(!s.register_local_calls);
        assert!(s.show_card);
        assert!(s.crm_create.incoming);
        assert!(!s.missed.task.enabled);
        assert_eq!(
            s.missed.responsible,
            vec![
                ResponsibleMode::EntityOwner,
                ResponsibleMode::LastRung,
                ResponsibleMode::DefaultUser
            ]
        );
    }

    #[test]
    fn parses_from_toml() {
        let text = r#"
            register_local_calls = true
            utc_offset = "+03:00"
            [crm_create]
            outgoing = true
            [black_list]
            extensions = ["103"]
            [[trunks]]
            number = "73432723033"
            crm_source = "CALL"
            responsible = 9
            [missed]
            responsible = ["last_rung", "default_user"]
            default_user = 9
            [missed.task]
            enabled = true
        "#;
        let s: EngineSettings = toml::from_str(text).expect("valid settings");
        assert!(s.register_local_calls);
        assert!(s.crm_create.incoming && s.crm_create.outgoing);
        assert_eq!(s.black_list.extensions, vec!["103"]);
        assert_eq!(s.trunks[0].responsible, Some(9));
        assert_eq!(s.missed.default_user, Some(9));
        assert!(s.missed.task.enabled);
        assert_eq!(s.missed.task.deadline_minutes, 60);
        let compiled = Compiled::new(s).expect("valid");
        assert_eq!(compiled.offset.local_minus_utc(), 3 * 3600);
    }

    #[test]
    fn rejects_bad_settings() {
        let bad_offset = EngineSettings {
            utc_offset: "MSK".into(),
            ..EngineSettings::default()
        };
        assert!(matches!(Compiled::new(bad_offset), Err(Error::InvalidUtcOffset(_))));
        let mut empty_chain = EngineSettings::default();
        empty_chain.missed.responsible.clear();
        assert!(matches!(Compiled::new(empty_chain), Err(Error::EmptyResponsibleChain)));
        let trunk = TrunkSettings {
            number: "1".into(),
            line_number: None,
            crm_source: None,
            responsible: None,
        };
        let dup = EngineSettings {
            trunks: vec![trunk.clone(), trunk],
            ..EngineSettings::default()
        };
        assert!(matches!(Compiled::new(dup), Err(Error::DuplicateTrunk(_))));
        let eager = EngineSettings {
            users_refresh_interval_secs: 0,
            ..EngineSettings::default()
        };
        assert!(matches!(Compiled::new(eager), Err(Error::RefreshIntervalTooShort(0))));
        assert!(toml::from_str::<EngineSettings>("unknown_key = 1").is_err());
        assert!(toml::from_str::<EngineSettings>("[missed]\nresponsible = [\"boss\"]").is_err());
    }

    #[test]
    fn trunk_numbers_match_in_any_form() {
        let n = Number {
            base: "3432723033".into(),
            custom: String::new(),
            is_local: false,
            original: "73432723033".into(),
            variants: vec!["3432723033".into(), "+73432723033".into()],
        };
        assert!(number_matches(&n, "73432723033"));
        assert!(number_matches(&n, "+73432723033"));
        assert!(!number_matches(&n, ""));
        assert!(!number_matches(&n, "999"));
    }
}
