//! A collated batch on the host, and which rows of a global batch a rank takes.

use crate::error::DataError;
use std::ops::Range;

/// A collated batch on the host, ready to become tensors: `[rows, seq_len]` inputs and
/// labels (row-major) and `[rows]` puzzle identifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostBatch {
    /// Rows of this (local) batch, padding included.
    pub rows: usize,
    pub seq_len: usize,
    pub inputs: Vec<i32>,
    /// Labels, with ignored positions (and padding rows) at [`IGNORE_LABEL_ID`](super::IGNORE_LABEL_ID).
    pub labels: Vec<i32>,
    pub puzzle_identifiers: Vec<i32>,
    /// Real (non-padding) rows of the *global* batch this batch is a slice of: the
    /// reference `global_effective_batch_size`, by which losses are normalised.
    pub effective: usize,
}

/// Rows `[rank * local, (rank + 1) * local)` of a global batch, `local = global / world`.
/// Errors if the global batch is 0, not divisible by `world`, or `rank >= world`.
pub fn local_range(
    global_batch: usize,
    rank: usize,
    world: usize,
) -> Result<Range<usize>, DataError> {
    if global_batch == 0 {
        return Err(DataError::InvalidOptions("global batch size is 0".into()));
    }
    if world == 0 || rank >= world {
        return Err(DataError::InvalidOptions(format!(
            "rank {rank} is not in a world of {world}"
        )));
    }
    if !global_batch.is_multiple_of(world) {
        return Err(DataError::InvalidOptions(format!(
            "global batch size {global_batch} is not a multiple of the world size {world}"
        )));
    }
    let local = global_batch / world;
    Ok(rank * local..(rank + 1) * local)
}
