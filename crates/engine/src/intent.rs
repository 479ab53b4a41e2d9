//! What the engine decided should happen in the CRM, in no CRM's words.
//!
//! The engine's rules (which calls count, who is responsible, when a card pops and closes, the missed-call
//! chain) produce [`Intent`]s; a per-CRM translation turns each into the [`crate::Step`] the worker stores and
//! sends ([`crate::bitrix24`] for Bitrix24). An intent names other steps only by their idempotency keys, so the
//! translation decides which fields of their results it reads.

use serde::{Deserialize, Serialize};
use tracker::{status, Direction};

use crate::users::UserId;

/// The CRM's record of one registration of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRecord {
    /// The CRM registered the call itself (click-to-call) under this id.
    Known(String),
    /// Whatever the register step with this key answered.
    Registered { register: String },
}

/// Who answers for a call nobody (known) talked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Responsible {
    /// Settled now.
    User(UserId),
    /// The owner of the client's CRM record as the `lookup` step finds it, unless the `register` step itself
    /// created that record (a new lead has no owner worth the name); else `then`.
    OwnerElse {
        lookup: String,
        register: String,
        then: UserId,
    },
}

impl Responsible {
    /// The journal's form: the user id, or the chain still to be resolved.
    pub fn journal(&self) -> serde_json::Value {
        match self {
            Responsible::User(user) => serde_json::Value::from(*user),
            Responsible::OwnerElse { lookup, register, then } => {
                serde_json::json!({"entity_owner": lookup, "unless_created_by": register, "else": then})
            }
        }
    }
}

impl std::fmt::Display for Responsible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Responsible::User(user) => write!(f, "user {user}"),
            Responsible::OwnerElse { then, .. } => {
                write!(
                    f,
                    "the client's entity owner (if it existed before the call), else user {then}"
                )
            }
        }
    }
}

/// How a call ended for one registration, in SIP terms (both CRMs map it to their own codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Somebody talked.
    Talked,
    /// Rang, nobody answered.
    Missed,
    /// The caller gave up while it rang (an outgoing call the employee hung up).
    Cancelled,
    Busy,
    Declined,
    /// Not registered / not reachable (SIP 480).
    Unavailable,
    /// No such number (404).
    NotFound,
    /// Not allowed (403).
    Forbidden,
    /// Payment required (402).
    PaymentRequired,
    /// Locked (423).
    Locked,
    /// Incomplete number (484).
    AddressIncomplete,
    /// The route is down (503).
    RouteUnavailable,
    /// Anything else that is not a talk.
    Other,
}

impl Outcome {
    /// The outcome of a call that is not a talk, from the call's result (`tracker::status`).
    pub fn of_failed_result(result: u16) -> Self {
        match result {
            status::CANCELLED => Outcome::Cancelled,
            status::TALKED | status::LIVE | status::MISSED => Outcome::Missed,
            402 => Outcome::PaymentRequired,
            403 => Outcome::Forbidden,
            404 => Outcome::NotFound,
            423 => Outcome::Locked,
            480 => Outcome::Unavailable,
            484 => Outcome::AddressIncomplete,
            486 => Outcome::Busy,
            503 => Outcome::RouteUnavailable,
            603 => Outcome::Declined,
            _ => Outcome::Other,
        }
    }
}

/// Record a call in the CRM (the first step of every registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterCall {
    /// The employee the record is for.
    pub user: UserId,
    /// The client's number.
    pub client_phone: String,
    pub direction: Direction,
    /// When the call started, in the PBX's zone with its offset (`YYYY-MM-DDTHH:MM:SS+03:00`).
    pub start: String,
    /// Create a CRM record for an unknown number.
    pub create_entity: bool,
    /// Pop the card up for `user` now (their phone rings).
    pub card: bool,
    /// The connector's id of this registration (unique per call and registration).
    pub external_id: String,
    /// The number the client dialled or is dialled from (the trunk's line).
    pub line: Option<String>,
    /// The configured CRM source of the trunk.
    pub source: Option<String>,
}

/// The call as a registration records it, for a CRM whose end-of-call record stands alone (amoCRM's
/// `/api/v4/calls` takes the whole call at its end, not a reference to an earlier answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFacts {
    /// The client's number.
    pub client_phone: String,
    pub direction: Direction,
    /// The registration's id (unique per call and registration): amoCRM's `uniq`.
    pub external_id: String,
    /// When the call started, in the PBX's zone with its offset (`YYYY-MM-DDTHH:MM:SS+03:00`).
    pub start: String,
    /// Create a CRM record for an unknown number.
    pub create_entity: bool,
    /// The number the client dialled or is dialled from (the trunk's line).
    pub line: Option<String>,
}

impl CallFacts {
    /// The facts a register records.
    pub fn of(register: &RegisterCall) -> Self {
        Self {
            client_phone: register.client_phone.clone(),
            direction: register.direction,
            external_id: register.external_id.clone(),
            start: register.start.clone(),
            create_entity: register.create_entity,
            line: register.line.clone(),
        }
    }
}

/// End a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishCall {
    pub call: CallRecord,
    /// The call itself, for a CRM that records it only now.
    pub facts: CallFacts,
    pub responsible: Responsible,
    /// Seconds talked (0 unless [`Outcome::Talked`]).
    pub duration: u64,
    pub outcome: Outcome,
    /// Why a click-to-call could not be placed.
    pub failed_reason: Option<String>,
    /// Post the call to the employee's chat (Bitrix24 only).
    pub add_to_chat: bool,
}

/// A task for the responsible of a missed incoming call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedTask {
    pub title: String,
    pub description: String,
    pub responsible: Responsible,
    /// The register step whose CRM record the task is bound to.
    pub register: String,
    /// The finish step of the same registration (amoCRM binds the task to the entity its call landed on).
    pub finish: String,
    /// When the call was missed, in the PBX's zone with its offset (a task due at once when there is no
    /// deadline).
    pub time: String,
    /// In the PBX's zone with its offset.
    pub deadline: Option<String>,
    pub created_by: Option<UserId>,
}

/// One thing the CRM should learn or show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    Register(RegisterCall),
    /// Pop the call's card up for `user`, whose phone rings.
    ShowCard {
        call: CallRecord,
        user: UserId,
        /// The client's number (amoCRM's popup finds the contact by it).
        client_phone: String,
    },
    /// Take `user`'s card away (their phone stopped ringing, or someone else answered).
    HideCard {
        call: CallRecord,
        user: UserId,
    },
    /// Find the owner of the client's CRM record (for [`Responsible::OwnerElse`]).
    FindOwner {
        client_phone: String,
    },
    Finish(FinishCall),
    /// Attach the call's recording (the file itself travels beside the step).
    AttachRecording {
        call: CallRecord,
        filename: String,
    },
    MissedTask(MissedTask),
}

/// The CRM the engine's intents are translated for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Crm {
    #[default]
    Bitrix24,
    AmoCrm(crate::amocrm::AmoCrmSettings),
}

/// What a translation makes of an intent.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// A step to store and send: its kind, method and params.
    Step(crate::plan::StepKind, String, serde_json::Value),
    /// Nothing to send in this CRM, and why (journaled).
    Nothing(String),
}

impl Crm {
    /// The step (or the reason for none) of `intent` in this CRM's words.
    pub fn translate(&self, intent: &Intent) -> Translated {
        match self {
            Crm::Bitrix24 => {
                let (kind, params) = crate::bitrix24::translate(intent);
                Translated::Step(kind, kind.method().to_owned(), params)
            }
            Crm::AmoCrm(settings) => crate::amocrm::translate(settings, intent),
        }
    }

    /// The user and the call's facts a stored register step was planned with (recovery of a call whose end
    /// was not seen).
    pub fn registered(&self, params: &serde_json::Value) -> Registered {
        match self {
            Crm::Bitrix24 => crate::bitrix24::registered(params),
            Crm::AmoCrm(_) => crate::amocrm::registered(params),
        }
    }

    /// The user a stored show step popped the card up for.
    pub fn card_user(&self, params: &serde_json::Value) -> Option<UserId> {
        match self {
            Crm::Bitrix24 => crate::bitrix24::card_user(params),
            Crm::AmoCrm(_) => crate::amocrm::card_user(params),
        }
    }

    /// The CRM's name in the journal and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Crm::Bitrix24 => "Bitrix24",
            Crm::AmoCrm(_) => "amoCRM",
        }
    }
}

/// A stored register step read back: for whom, and the call it recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub user: Option<UserId>,
    pub facts: CallFacts,
    /// The trunk's CRM source, when the register carried it.
    pub source: Option<String>,
}
