//! A real Asterisk 22 PBX for integration tests: an office with a carrier trunk
//! (DID 73432723033), desk phones 101–105, queues, an IVR, recording, pickup and
//! parking, where SIPp plays the phones and the carrier, all on loopback.
//!
//! ```no_run
//! # async fn demo() -> testbed::Result<()> {
//! use std::time::Duration;
//! use testbed::{TestBed, Route, CLIENT};
//! let bed = TestBed::start().await?;
//! bed.route_incoming(Route::Extension(101)).await?;
//! bed.phone(101).answer_after(Duration::from_secs(2)).await?;
//! let mut call = bed.incoming(CLIENT).talk(Duration::from_secs(5)).await?;
//! call.finished(Duration::from_secs(30)).await?;
//! bed.wait_all_channels_gone(Duration::from_secs(10)).await?;
//! bed.stop().await?;
//! # Ok(()) }
//! ```

mod ami_client;
mod audio;
mod bed;
mod dbserver;
mod error;
mod instance;
mod layout;
pub mod mariadb;
pub mod postgres;
mod process;
pub mod scenarios;
mod sipp;
mod slot;
mod template;

pub use ami_client::AmiResponse;
pub use bed::{
    Call, CallSetup, CarrierSetup, ChannelInfo, PhoneSetup, Route, TestBed, CEL_PGSQL_TABLE, CLIENT, DID, PHONES,
};
pub use error::{Error, Result};
pub use layout::{build_chroot, DEFAULT_ROOT};
pub use sipp::{Outcome, SippProcess};
