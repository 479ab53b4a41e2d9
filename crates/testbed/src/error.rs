use std::time::Duration;

/// Everything that can go wrong while running the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the Asterisk chroot failed: {0}")]
    Build(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free test-bed slot (all {0} are in use)")]
    NoFreeSlot(u16),
    #[error("the Asterisk root at {0} has no {1}")]
    Layout(String, String),
    #[error("Asterisk did not answer on AMI within {after:?}; console log tail:\n{log}")]
    StartTimeout { after: Duration, log: String },
    #[error("Asterisk exited during start-up ({status}); console log tail:\n{log}")]
    AsteriskExited { status: String, log: String },
    #[error("asterisk -rx '{command}' failed: {message}")]
    Cli { command: String, message: String },
    #[error("AMI action {action}: {message}")]
    Ami { action: String, message: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("SIPp {name}: {message}")]
    Sipp { name: String, message: String },
    #[error("template {template}: placeholder {placeholder} left unfilled")]
    Template { template: String, placeholder: String },
    #[error("extension {0} is not one of the test-bed phones (101-105)")]
    UnknownPhone(u16),
    #[error("database server: {0}")]
    Server(String),
    #[error("scenario {id}: {message}")]
    Scenario { id: String, message: String },
    #[error("PostgreSQL for tests is not available: {0}")]
    PostgresMissing(String),
    #[error("test PostgreSQL server: {0}")]
    Postgres(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
