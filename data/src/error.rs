//! The single error type of `recursa-data`.
//!
//! Every variant names the file it concerns and, where it applies, the task, row or field,
//! so that a message alone is enough to find the offending input.

use std::path::{Path, PathBuf};

/// Errors raised while reading raw data, building datasets, reading `.npy` files,
/// evaluating predictions or checking reference fixtures.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error while reading or writing `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file that is not valid JSON or does not have the expected structure.
    #[error("{path}: malformed JSON: {message}")]
    Json { path: PathBuf, message: String },

    /// A solutions file is missing, or lacks a task or a test output.
    #[error("{path}: missing solutions: {message}")]
    MissingSolutions { path: PathBuf, message: String },

    /// A grid that breaks the ARC rules (empty, ragged, larger than 30x30, colour outside 0-9).
    #[error("{path}: task {task}, {field}: {message}")]
    InvalidGrid {
        path: PathBuf,
        task: String,
        /// Where in the task, e.g. `train[2].output`.
        field: String,
        message: String,
    },

    /// A task that cannot be converted (no examples, unknown example type, ...).
    #[error("{path}: task {task}: {message}")]
    InvalidTask {
        path: PathBuf,
        task: String,
        message: String,
    },

    /// A `.npy` file that is truncated, malformed or of an unexpected dtype / shape.
    #[error("{path}: invalid .npy file: {message}")]
    Npy { path: PathBuf, message: String },

    /// The output directory of a build already exists (it is never touched).
    #[error("{path}: output directory already exists; refusing to overwrite it")]
    OutputExists { path: PathBuf },

    /// Options that cannot be satisfied (unknown subset, no subsets, ...).
    #[error("invalid options: {0}")]
    InvalidOptions(String),

    /// A puzzle name that cannot be decoded into a task and an augmentation.
    #[error("puzzle name {name:?}: {message}")]
    InvalidPuzzleName { name: String, message: String },

    /// A batch handed to an evaluator that is inconsistent (lengths, ids, tokens).
    #[error("evaluator batch: row {row}, field {field}: {message}")]
    InvalidBatch {
        row: usize,
        field: String,
        message: String,
    },

    /// A reference fixture that cannot be read or lacks an expected entry.
    #[error("{path}: fixture: {message}")]
    Fixture { path: PathBuf, message: String },

    /// A dataset file whose contents disagree with the format or with the other files of
    /// its set (shapes, index arrays, metadata).
    #[error("{path}: {field}: {message}")]
    InvalidDataset {
        path: PathBuf,
        /// The array or metadata field at fault, e.g. `puzzle_indices[3]` or `seq_len`.
        field: String,
        message: String,
    },

    /// The background thread of a prefetching loader panicked.
    #[error("background loader thread panicked: {0}")]
    LoaderPanicked(String),
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A JSON error for `path`.
    pub fn json(path: impl AsRef<Path>, message: impl std::fmt::Display) -> Self {
        DataError::Json {
            path: path.as_ref().to_path_buf(),
            message: message.to_string(),
        }
    }

    /// An `.npy` error for `path`.
    pub fn npy(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError::Npy {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// A dataset consistency error for `path` and `field`.
    pub fn dataset(
        path: impl AsRef<Path>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DataError::InvalidDataset {
            path: path.as_ref().to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// A fixture error for `path`.
    pub fn fixture(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError::Fixture {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}
