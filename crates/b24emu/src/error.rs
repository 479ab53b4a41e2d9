//! Errors of the emulator's own operation (configuration, sockets), not the Bitrix24 errors it emulates.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EmuError {
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid clock value: {0}")]
    Clock(String),
    #[error("{0}")]
    Control(String),
}
