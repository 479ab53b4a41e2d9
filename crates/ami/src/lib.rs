//! Asterisk Manager Interface (AMI): the wire codec, a client that stays connected, and trace recording.
//!
//! The codec and [`Message`] are plain data and synchronous; the client owns the socket and never lets a slow
//! consumer stall the socket reader (Asterisk drops a manager session whose reader is slower than `writetimeout`).

pub mod client;
pub mod codec;
pub mod message;
mod tls;
pub mod trace;

pub use client::{
    connect, AuthMethod, Client, ClientConfig, ClientEvent, ClientStats, Error, Events, ListResponse, TlsOptions,
};
pub use codec::{AmiCodec, Frame, SkipReason};
pub use message::{unescape_c, Header, Message, MessageKind};
