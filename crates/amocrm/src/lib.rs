//! amoCRM / Kommo REST v4 client.
//!
//! What it decides: how to authenticate (OAuth 2.0 — code exchange, refresh with single-use refresh tokens,
//! one refresh at a time, every new pair handed to a [`TokenStore`] *before* it is used — or a private
//! integration's long-lived token), how fast to send (at most 7 requests per second per integration, a
//! doubling pause on 429, a stop on the 403 IP block with a probe at growing intervals until amoCRM answers again,
//! or [`Client::resume`]), how to read answers
//! (HAL+JSON lists followed through `_links.next`, 204 = empty, problem+JSON and item-by-item refusals as
//! typed [`Error`]s). What it does not decide: what to send for a call — that is the engine's.
//!
//! ```no_run
//! # async fn demo() -> Result<(), amocrm::Error> {
//! use std::sync::Arc;
//! use amocrm::{Client, Integration, Tokens, NewCall, Direction, CallStatus};
//!
//! let base = amocrm::account_url("example", "amocrm.ru")?; // https://example.amocrm.ru/
//! let save = |t: &Tokens| -> Result<(), Box<dyn std::error::Error + Send + Sync>> { let _ = t; Ok(()) };
//! let client = Client::oauth(base.as_str(),
//!         Integration::new("client-id", "client-secret", "https://ringlink.example/amocrm/oauth"),
//!         Tokens::default())
//!     .token_store(Arc::new(save))
//!     .build()?;
//! client.exchange_code("code-from-the-consent-redirect").await?;   // saved, then used
//! let contacts = client.contacts_by_phone("+7 912 345-67-89").await?;
//! client.show_call_popup("+79123456789", &[8_000_002]).await?;
//! let added = client.add_calls(&[NewCall { direction: Direction::Inbound, uniq: Some("call-1".into()),
//!     duration: 42, source: "ringlink".into(), phone: "+79123456789".into(), link: None,
//!     call_status: Some(CallStatus::Talked), call_result: None, responsible_user_id: Some(8_000_002),
//!     created_by: Some(8_000_002), created_at: None, request_id: None }]).await;
//! match added {
//!     Err(e) if e.is_entity_not_found() => { /* no contact: Unsorted or a new contact instead */ }
//!     other => { other?; }
//! }
//! # let _ = contacts; Ok(()) }
//! ```

mod auth;
mod client;
mod de;
mod error;
mod limiter;
mod methods;

pub use auth::{account_url, base_url, Credentials, Hidden, Integration, TokenStore, Tokens};
pub use client::{Answer, Client, ClientBuilder, Timeouts};
pub use error::{Error, FieldError, ItemErrors, Problem, RejectedItem};
pub use limiter::{Limiter, LimiterConfig};
pub use methods::{
    last_digits, Account, AddedCall, AddedComplex, AddedTask, AddedUnsorted, CallStatus, ComplexEmbedded, Contact,
    ContactEmbedded, CustomField, Direction, EntityType, FieldValue, IdRef, NewCall, NewComplexLead, NewContact,
    NewLead, NewTask, NewUnsortedSip, Pipeline, PipelineEmbedded, Rights, SipMetadata, Status, UnsortedEmbedded,
    UnsortedRefs, User, TASK_TYPE_CALL,
};
