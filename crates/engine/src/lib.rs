//! The registration engine: from call events to the Bitrix24 steps that record them.
//!
//! It is pure: no sockets, files, SQL or clocks. [`Engine::handle`] takes one [`tracker::CallEvent`] (with the
//! call's `call_full` as the tracker knows it, and the current time) and returns a [`Plan`]: the CRM
//! [`Step`]s to persist and send, each with a deterministic idempotency key, and the [`Decision`]s behind them
//! for the call journal. Feeding the same events again (after a restart) plans the same keys, so a store that
//! ignores known keys makes the whole pipeline exactly-once per key.
//!
//! ```
//! use engine::{DirectoryUser, Engine, EngineSettings, StepKind};
//! use tracker::{CallEvent, Leg, LegOrigin, Timestamp};
//!
//! let mut engine = Engine::new(EngineSettings::default()).expect("valid settings");
//! engine.users_mut().replace(
//!     [DirectoryUser { id: 1, extension: Some("101".into()), phones: vec![] }],
//!     Timestamp::from_secs(1_700_000_000),
//! );
//! let ringing = CallEvent::LegRinging(Leg {
//!     call: "1700000000.1".into(),
//!     conversation: "1700000000.2".into(),
//!     time: Timestamp::from_secs(1_700_000_005),
//!     channel: "PJSIP/101-00000002".into(),
//!     endpoint: "101".into(),
//!     number: "101".into(),
//!     peer_number: "+79001234567".into(),
//!     origin: LegOrigin::Dial,
//! });
//! let plan = engine.handle(&ringing, None, Timestamp::from_secs(1_700_000_005));
//! assert_eq!(plan.steps[0].kind, StepKind::Register);
//! assert_eq!(plan.steps[0].key, "1700000000.1/0/register");
//! assert_eq!(plan.steps[0].params["USER_ID"], 1);
//! ```
//!
//! The rules (`SCENARIOS.md`): one Bitrix24 call per conversation with an employee. The first employee leg
//! that rings registers it; employees rung at the same time get `show` on the same CALL_ID and `hide` when their
//! phone stops ringing or someone else answers; the employee who answers owns the registration, and it is
//! finished with their talk time when their conversation ends. An employee who takes the client over after
//! someone talked (transfer, pickup after a talk, park retrieval) gets a new registration. A registration nobody
//! answered is finished at the end of the call as missed (or with the outgoing failure status), for the
//! responsible found by the configured chain; an incoming call lost before any phone rang is registered without a
//! card for that responsible and finished as missed. Recordings are attached after finish, and an optional task
//! goes to the responsible of a missed call.

pub mod amocrm;
pub mod bitrix24;
mod click;
mod engine;
mod intent;
mod lines;
mod plan;
mod route;
mod settings;
mod users;

pub use amocrm::{AmoCrmSettings, UnknownNumber};
pub use click::{
    click_call_key, dial_number, originate_params, validate as validate_click_settings, ClickError, ClickLine,
    ClickRefusal, ClickSettings, ClickToCall, OriginateParams,
};
pub use engine::{Engine, Gap, OpenCall, RecoverySource, RegistrationGate, StoredStep, ENDED_RETENTION_SECS};
pub use intent::{
    CallFacts, CallRecord, Crm, FinishCall, Intent, MissedTask, Outcome, RegisterCall, Registered, Responsible,
    Translated,
};
pub use lines::{click_line_reason, configured_lines, plan_lines, LineChange, LineDecision, ListedLine, WantedLine};
pub use plan::{
    crm_bindings, first_of, references, resolve, without_card, Decision, Plan, RefreshUsers, ResolveError, Rule, Step,
    StepKind, StepRef, Timing,
};
pub use route::{
    route_to_owner, validate_order as validate_route_order, CrmKind, CrmOwner, Lookup, Route, DEFAULT_ORDER,
};
pub use settings::{
    CrmCreate, EngineSettings, Lists, MissedCallSettings, MissedTaskSettings, ResponsibleMode, TrunkSettings,
    MIN_USERS_REFRESH_INTERVAL_SECS,
};
pub use users::{DirectoryUser, UserId, UsersDirectory, PHONE_FIELDS};

/// Why the engine could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid utc_offset {0:?}: expected a fixed offset such as \"+03:00\"")]
    InvalidUtcOffset(String),
    #[error("missed.responsible is empty: name at least one of entity_owner, last_rung, default_user")]
    EmptyResponsibleChain,
    #[error("trunks[{index}] has an empty number")]
    EmptyTrunkNumber { index: usize },
    #[error("users_refresh_interval_secs = {0} is too short: at least 10 seconds")]
    RefreshIntervalTooShort(u64),
    #[error("trunk {0:?} is configured twice")]
    DuplicateTrunk(String),
}
