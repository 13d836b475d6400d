//! Where training and evaluation batches come from: the data crate's loader
//! (memory-mapped datasets in the reference format, the reference group sampler,
//! padded test batches, background prefetch), and the step from its host batches
//! to device tensors.
//!
//! Generated tasks go through the same path: [`split_from_examples`] wraps
//! in-memory examples as a split with one puzzle and one group per example, for
//! which the group sampler is a plain seeded permutation of the examples.

use burn::tensor::{Int, Tensor, TensorData};
pub use recursa_data::loader::{
    test_batches, GroupSampler, HostBatch, Prefetch, PuzzleArrays, PuzzleSet, PuzzleSplit,
    SamplerState, TokenArray, IGNORE_LABEL_ID,
};
pub use recursa_data::DatasetMetadata;

use crate::state::Batch;
use crate::{Device, Error, Result, B};

/// Uploads a host batch to `device`.
pub fn device_batch(b: &HostBatch, device: &Device) -> Batch {
    let ints = |v: &[i32], shape: [usize; 2]| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), shape), device)
    };
    Batch {
        inputs: ints(&b.inputs, [b.rows, b.seq_len]),
        labels: ints(&b.labels, [b.rows, b.seq_len]),
        puzzle_identifiers: Tensor::<B, 1, Int>::from_data(
            TensorData::new(b.puzzle_identifiers.clone(), [b.rows]),
            device,
        ),
    }
}

/// Rows `range` of a host batch (a data-parallel rank's share, a micro-batch).
pub fn slice_rows(b: &HostBatch, range: std::ops::Range<usize>) -> HostBatch {
    let s = b.seq_len;
    HostBatch {
        rows: range.len(),
        seq_len: s,
        inputs: b.inputs[range.start * s..range.end * s].to_vec(),
        labels: b.labels[range.start * s..range.end * s].to_vec(),
        puzzle_identifiers: b.puzzle_identifiers[range.clone()].to_vec(),
        effective: b.effective,
    }
}

/// In-memory examples as a split: example `i` is puzzle `i` in group `i`.
/// `labels` may already hold `-100` for ignored positions; `pad_id` 0 and blank
/// puzzle id 0 pad the last test batch.
pub fn split_from_examples(
    seq_len: usize,
    vocab_size: usize,
    num_puzzle_identifiers: usize,
    inputs: Vec<i32>,
    labels: Vec<i32>,
    puzzle_identifiers: Vec<i32>,
) -> Result<PuzzleSplit> {
    let n = puzzle_identifiers.len();
    if let Some(bad) = inputs.iter().find(|&&t| t < 0 || t as usize >= vocab_size) {
        return Err(Error::Input(format!(
            "input token {bad} is outside the vocabulary 0..{vocab_size}"
        )));
    }
    if let Some(bad) = labels
        .iter()
        .find(|&&t| t != IGNORE_LABEL_ID && (t < 0 || t as usize >= vocab_size))
    {
        return Err(Error::Input(format!(
            "label {bad} is outside the vocabulary 0..{vocab_size} (and not -100)"
        )));
    }
    let meta = DatasetMetadata {
        pad_id: 0,
        ignore_label_id: None,
        blank_identifier_id: 0,
        vocab_size: vocab_size as i64,
        seq_len: seq_len as i64,
        num_puzzle_identifiers: num_puzzle_identifiers as i64,
        total_groups: n as i64,
        mean_puzzle_examples: 1.0,
        total_puzzles: n as i64,
        sets: vec!["all".into()],
    };
    let index: Vec<i32> = (0..=n as i32).collect();
    let arrays = PuzzleArrays {
        inputs: TokenArray::I32(inputs),
        labels: TokenArray::I32(labels),
        puzzle_identifiers,
        puzzle_indices: index.clone(),
        group_indices: index,
    };
    PuzzleSplit::from_memory(meta, vec![("all".into(), arrays)]).map_err(data_error)
}

/// A data-crate error as this crate's error (the message names file and field).
pub fn data_error(e: recursa_data::DataError) -> Error {
    Error::from_data(e)
}

/// Rows in all sets of a split.
pub fn rows(split: &PuzzleSplit) -> usize {
    split.sets().iter().map(|s| s.rows()).sum()
}

/// Checks that a split fits the network: sequence length, vocabulary, puzzle table.
pub fn check_split(
    what: &str,
    split: &PuzzleSplit,
    seq_len: usize,
    vocab_size: usize,
    num_puzzle_identifiers: usize,
) -> Result<()> {
    let m = split.metadata();
    if m.seq_len as usize != seq_len {
        return Err(Error::config(
            "net.seq_len",
            format!(
                "{seq_len}, but the {what} has {} tokens per example",
                m.seq_len
            ),
        ));
    }
    if m.vocab_size as usize > vocab_size {
        return Err(Error::config(
            "net.vocab_size",
            format!("{vocab_size}, but the {what} uses {} tokens", m.vocab_size),
        ));
    }
    if m.num_puzzle_identifiers as usize > num_puzzle_identifiers.max(1) {
        return Err(Error::config(
            "net.num_puzzle_identifiers",
            format!(
                "{num_puzzle_identifiers}, but the {what} has {} puzzle identifiers",
                m.num_puzzle_identifiers
            ),
        ));
    }
    Ok(())
}

/// The training batches of `split` in sampler order from the start, without a
/// background thread: for tests, scripts and notebooks. (`fit` prefetches.)
pub fn sampled_batches(
    split: &PuzzleSplit,
    global_batch: usize,
    seed: u64,
) -> Result<impl Iterator<Item = Result<HostBatch>>> {
    let batches = GroupSampler::new(split, global_batch, seed)
        .and_then(|s| s.into_host_batches(0, 1))
        .map_err(data_error)?;
    Ok(batches.map(|b| b.map(|b| b.batch).map_err(data_error)))
}
