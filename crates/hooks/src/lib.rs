//! Customization hooks: an integrator's executable, in any language, adapts what ringlink sends to Bitrix24.
//!
//! This crate decides three things: **which file is a hook** (`<dir>/<hook>`, or `<dir>/<hook>.php` run through
//! `php`, `.py` through `python3`, `.sh` through `sh`; the old names of the product, such as
//! `process_phone_number`, are accepted as aliases), **how it runs** (no shell, an empty environment, the hooks
//! directory as working directory, a hard timeout that also covers children it leaves behind, a limit on the
//! answer's size; one process per call, or one persistent process speaking JSON lines), and **what its answer
//! means** (`{"data": …, "state": "success"}` laid over the params it was given; empty `data` cancels the
//! request; anything else — a non-zero exit, a timeout, garbage, a wrong type, a changed `CALL_ID` — is a
//! failure, and the caller sends the un-customized params). It never fails the caller: [`Hooks::call`] always
//! returns what to do, and counts it per hook. *When* each hook is called, and with which params, is the
//! service's business (see ARCHITECTURE.md, "Customization hooks").
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use hooks::{Context, HookName, Hooks, HooksConfig, Outcome};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(
//!     dir.path().join("process_client_phone.sh"),
//!     // +7… → 8…, the seed's first example.
//!     r#"sed 's/.*"phone":"+7\([0-9]*\)".*/{"data":{"phone":"8\1"},"state":"success"}/'"#,
//! )
//! .unwrap();
//! let config = HooksConfig { dir: Some(dir.path().into()), ..HooksConfig::default() };
//! let hooks = Hooks::discover(&config).expect("the directory exists");
//!
//! let called = hooks
//!     .call(HookName::ProcessClientPhone, &json!({"phone": "+79001234567"}), &Context::default())
//!     .await
//!     .expect("the hook is there and enabled");
//! match called.outcome {
//!     Outcome::Applied(answer) => assert_eq!(answer.params["phone"], "89001234567"),
//!     other => panic!("{other:?}"),
//! }
//! // A hook that is not there is not called at all.
//! assert!(hooks.call(HookName::NeedRegistration, &json!({}), &Context::default()).await.is_none());
//! # }
//! ```
//!
//! Rules: a hook is asked with `{"params": …, "call_full": …, "call_stage": …}` (the seed's params, seed 001's
//! `call_full`, and `conversation_requested | conversation_accepted | conversation_ended | call_ended`). Keys it
//! leaves out of `data` keep their value; keys ringlink did not send are passed through; `CALL_ID` and
//! `EXTERNAL_CALL_ID` cannot be changed. `need_registration` answers `true`/`false`. A failure is logged with the
//! tail of the hook's stderr and never delays the call beyond the hook's timeout.

mod config;
mod name;
mod runner;
mod validate;

pub use config::{HookSettings, HooksConfig, Mode};
pub use name::{HookName, UnknownHook};
pub use runner::{Called, Context, Failure, FailureKind, Found, HookInfo, Hooks, Outcome, Stats};
pub use validate::{validate, Answer, Invalid, Verdict, PROTECTED_KEYS};

/// The hooks configuration cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("hooks.dir {0:?} cannot be read: {1} (create it, or remove hooks.dir to run without hooks)")]
    Dir(std::path::PathBuf, std::io::Error),
    #[error("hooks.per_hook: {0}")]
    UnknownHook(UnknownHook),
    #[error("{0}: a hook's timeout must be more than 0 and at most 600 seconds")]
    Timeout(String),
}
