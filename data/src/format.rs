//! The reference on-disk dataset format shared by every builder and the loader:
//! `dataset.json` (the reference `PuzzleDatasetMetadata`), the counts of a split, and
//! JSON written as Python's `json.dump` writes it (byte-compatible files).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::json::to_python_json;

/// Counts of one split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SplitSummary {
    pub groups: usize,
    pub puzzles: usize,
    pub examples: usize,
}

/// The reference `PuzzleDatasetMetadata`, fields in its order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetMetadata {
    pub pad_id: i64,
    pub ignore_label_id: Option<i64>,
    pub blank_identifier_id: i64,
    pub vocab_size: i64,
    pub seq_len: i64,
    pub num_puzzle_identifiers: i64,
    pub total_groups: i64,
    pub mean_puzzle_examples: f64,
    pub total_puzzles: i64,
    pub sets: Vec<String>,
}

/// Writes `value` as JSON formatted like Python's `json.dump`.
pub(crate) fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), DataError> {
    let bytes = to_python_json(value).map_err(|e| DataError::json(path, e))?;
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}
