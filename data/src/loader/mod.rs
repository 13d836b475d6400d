//! Reading a built dataset for training and evaluation: the semantics of the reference
//! `puzzle_dataset.py` (`PuzzleDataset`), seeded and deterministic.
//!
//! * [`PuzzleSet`]: the arrays of one set (`{set}__inputs.npy`, ...). Inputs and labels are
//!   memory-mapped (the reference `np.load(..., mmap_mode="r")`); the index arrays are read
//!   into memory, as in the reference. Every header, shape and index array is checked when
//!   the set is opened. [`PuzzleSet::from_memory`] builds the same type from vectors, so
//!   generated tasks take the same path as files.
//! * [`PuzzleSplit`]: `dataset.json` of a split plus its sets.
//! * [`GroupSampler`]: the training order (reference `_iter_train` / `_sample_batch`): every
//!   epoch walks the groups in a fresh random order, takes one random puzzle per group and
//!   packs its examples into global batches; the last partial batch is dropped. Our own
//!   code, not burn's data loader: exact resume needs the sampler's position as plain state
//!   (`SamplerState`), and the batches must not depend on thread scheduling.
//! * [`test_batches`]: the evaluation order (reference `_iter_test`): all rows in order, the
//!   last batch padded with blank rows.
//! * [`PuzzleSet::gather`] collates rows into a [`HostBatch`] (reference `_collate_batch`),
//!   and [`Prefetch`] runs any batch iterator on a background thread.
//!
//! See `docs/data.md` ("Loading a dataset") for the departures from the reference.

pub mod batch;
pub mod eval_order;
pub mod prefetch;
pub mod sampler;
pub mod set;
pub mod split;

pub use batch::{local_range, HostBatch};
pub use eval_order::{test_batches, TestBatches};
pub use prefetch::Prefetch;
pub use sampler::{GlobalBatch, GroupSampler, SamplerState, TrainBatch, TrainBatches};
pub use set::{PuzzleArrays, PuzzleSet, TokenArray};
pub use split::PuzzleSplit;

/// The label value the losses ignore (reference `IGNORE_LABEL_ID`).
pub const IGNORE_LABEL_ID: i32 = -100;
