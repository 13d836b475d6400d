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
    /// A command-line argument that cannot be read (e.g. `--set` without `=`).
    #[error("{0}")]
    Usage(String),
    /// An input file (dataset, checkpoint, fixture, metrics) whose content is invalid.
    #[error("{0}")]
    Input(String),
    /// A backend that this binary was not compiled with, or that has no device.
    #[error("{0}")]
    Backend(String),
    /// Anything else, with its context already in the message.
    #[error("{0}")]
    Other(String),
}

/// The exit status of the `recursa` command for each kind of failure (listed in
/// `recursa --help` and `docs/training.md`). clap exits 2 on a usage error itself.
pub mod exit_code {
    /// A check ran and failed: `verify-reference` outside tolerance.
    pub const CHECK_FAILED: u8 = 1;
    /// The command line is wrong (clap's own code, and `--set` without `=`).
    pub const USAGE: u8 = 2;
    /// An input is invalid: the experiment file, a dataset, a checkpoint, weights.
    pub const INPUT: u8 = 3;
    /// Reading or writing a file failed (missing file, permissions, full disk).
    pub const IO: u8 = 4;
    /// The backend is not compiled in or its device does not answer.
    pub const BACKEND: u8 = 5;
    /// The run itself failed (a non-finite loss, a data-parallel rank stopped).
    pub const RUN_FAILED: u8 = 6;
}

impl Error {
    /// The exit status `recursa` ends with on this error (see [`exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Io { .. } => exit_code::IO,
            Error::Usage(_) => exit_code::USAGE,
            Error::Config { .. } | Error::Weights { .. } | Error::UnknownPlugin { .. } => {
                exit_code::INPUT
            }
            Error::Input(_) => exit_code::INPUT,
            Error::Backend(_) => exit_code::BACKEND,
            Error::Other(_) => exit_code::RUN_FAILED,
        }
    }

    /// A data-crate error: I/O stays I/O, everything else is invalid input.
    pub fn from_data(e: recursa_data::DataError) -> Self {
        match e {
            recursa_data::DataError::Io { path, source } => Error::Io { path, source },
            other => Error::Input(other.to_string()),
        }
    }

    /// A configuration error on `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A config error's field put under `table` (`lr` -> `train.lr`); others unchanged.
    pub fn within(self, table: &str) -> Self {
        match self {
            Error::Config { field, message } => Error::config(format!("{table}.{field}"), message),
            other => other,
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

/// Checks a count from a config (cycles, steps) is in `1..=max`, naming `field`.
pub fn check_count(field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        return Err(Error::config(
            field,
            format!("{value}: must be in 1..={max}"),
        ));
    }
    Ok(())
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
