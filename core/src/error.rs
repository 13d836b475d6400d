//! One error type for everything a user can get wrong: files, configs, weights.

use std::path::PathBuf;

/// What went wrong, with the file and the field it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is missing, unknown or out of range.
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    /// A tensor in a weights file is missing or has the wrong shape.
    #[error("weights {file}: tensor `{name}`: {message}")]
    Weights {
        file: String,
        name: String,
        message: String,
    },
    /// A plugin name that no registered plugin has.
    #[error("unknown {axis} plugin `{name}`; known: {known}")]
    UnknownPlugin {
        axis: &'static str,
        name: String,
        known: String,
    },
    /// A backend that this binary was not compiled with, or that has no device.
    #[error("{0}")]
    Backend(String),
    /// Anything else, with its context already in the message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A configuration error on `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
