use crate::types::Lease;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation (I/O error, disk full, locked past the busy timeout, …).
    #[error("database: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The database was written by a newer ringlink whose schema this build does not know.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade ringlink")]
    SchemaTooNew { found: i64, supported: i64 },

    /// A stored value does not read back as what it should be (a hand-edited or damaged database).
    #[error("stored {what} is invalid: {detail}")]
    Corrupt { what: &'static str, detail: String },

    /// A JSON value could not be written.
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The step is no longer in flight under this lease: the lease ran out and the step was claimed again, or it
    /// was already marked. Nothing was changed.
    #[error("step {} is no longer claimed by attempt {}", .lease.step, .lease.attempt)]
    LeaseLost { lease: Lease },

    /// This instance led the tenant with `generation`, but another instance took the lease over since (`current`):
    /// it must stop acting. Nothing was written.
    #[error(
        "refused: this instance no longer leads its tenant (it led with lease generation {generation}, another \
         instance took over with {current}); it must stop and start again as the standby"
    )]
    Fenced { generation: i64, current: i64 },

    /// A read given a time limit (a journal search's [`crate::CallFilter::time_limit`]) was stopped when it ran
    /// out. Nothing was changed.
    #[error("{what} was stopped after {} ms, its time limit", .after.as_millis())]
    TimedOut {
        what: &'static str,
        after: std::time::Duration,
    },

    /// A value handed to the store cannot be stored as given.
    #[error("cannot store {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Backend(Box::new(error))
    }
}
