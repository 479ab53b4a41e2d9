//! Typed requests and results of the methods the connector uses.

pub mod crm;
pub mod events;
pub mod tasks;
pub mod telephony;
pub mod user;
