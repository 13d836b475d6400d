//! The evaluation order (reference `_iter_test`): all rows in order, the last batch
//! padded with blank rows.

use crate::error::DataError;
use std::ops::Range;

use super::batch::{local_range, HostBatch};
use super::set::PuzzleSet;

/// Sequential batches of all rows of `set` (reference `_iter_test`): global batch `b` covers
/// rows `b * global_batch..min((b + 1) * global_batch, rows)`; `rank` gets its slice
/// (see [`local_range`]) padded to `global_batch / world` rows with blank rows, and
/// `effective` is the number of real rows of the global batch. Every rank gets the same
/// number of batches, `ceil(rows / global_batch)`.
pub fn test_batches(
    set: &PuzzleSet,
    global_batch: usize,
    rank: usize,
    world: usize,
) -> Result<TestBatches, DataError> {
    let local = local_range(global_batch, rank, world)?;
    Ok(TestBatches {
        set: set.clone(),
        global_batch,
        local,
        start: 0,
    })
}

/// The iterator of [`test_batches`].
pub struct TestBatches {
    set: PuzzleSet,
    global_batch: usize,
    local: Range<usize>,
    /// First row of the next global batch.
    start: usize,
}

impl TestBatches {
    /// Number of global batches left.
    fn remaining(&self) -> usize {
        // `start` passes the row count after the last batch.
        self.set
            .rows()
            .saturating_sub(self.start)
            .div_ceil(self.global_batch)
    }
}

impl Iterator for TestBatches {
    type Item = Result<HostBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let total = self.set.rows();
        if self.start >= total {
            return None;
        }
        let end = total.min(self.start + self.global_batch);
        let lo = (self.start + self.local.start).min(end);
        let hi = (self.start + self.local.end).min(end);
        let rows: Vec<usize> = (lo..hi).collect();
        let mut ids = Vec::with_capacity(rows.len());
        if let Some(mut p) = self.set.puzzle_of_row(lo) {
            let pi = self.set.puzzle_indices();
            let all_ids = self.set.puzzle_identifiers();
            for &r in &rows {
                // Rows are in order: step to the puzzle containing r (skipping empty ones).
                while pi[p + 1] <= r {
                    p += 1;
                }
                ids.push(all_ids[p]);
            }
        }
        let effective = end - self.start;
        self.start += self.global_batch;
        Some(self.set.gather(&rows, &ids, self.local.len()).map(|mut b| {
            b.effective = effective;
            b
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n, Some(n))
    }
}

impl ExactSizeIterator for TestBatches {}
