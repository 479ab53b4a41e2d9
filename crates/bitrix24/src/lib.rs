//! Bitrix24 REST client.
//!
//! - Authentication as a local application (OAuth tokens, refreshed once on `expired_token` and handed
//!   to a [`TokenStore`]) or with an incoming webhook URL. `https://` only, except loopback hosts.
//! - JSON or PHP-bracket form encoding per call ([`Encoding`]), the `{result,time,total,next}` envelope,
//!   and one [`Error`] type whose variants say whether to retry ([`Error::is_retryable`]).
//! - A per-portal leaky-bucket [`Limiter`] mirroring the portal's (2/s, burst 50; Enterprise 5/s, 250)
//!   with back-off on `QUERY_LIMIT_EXCEEDED`, per-method pauses on `OPERATION_TIME_LIMIT`, and a
//!   [`Budget`] query.
//! - [`Batch`] of up to 50 commands with `$result[…]` references and per-command results.
//! - Typed methods in [`methods`], and [`Client::call`] for anything else.

mod auth;
mod batch;
mod client;
pub mod de;
mod encode;
mod endpoint;
mod envelope;
mod error;
mod limiter;
mod method;
pub mod methods;
mod secret;

pub use auth::{AppCredentials, Credentials, OAuthTokens, TokenStore, DEFAULT_OAUTH_URL};
pub use batch::{Batch, BatchResponse, MAX_BATCH_COMMANDS};
pub use client::{Client, ClientBuilder, Timeouts};
pub use encode::{encode_form, form_pairs, Encoding};
pub use endpoint::WebhookUrl;
pub use envelope::{decode_response, Envelope, TimeInfo};
pub use error::{AuthErrorKind, Error};
pub use limiter::{Budget, Limiter, LimiterConfig, Ticket};
pub use method::{ListMethod, Method, Page};
pub use secret::Secret;
