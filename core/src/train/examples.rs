//! In-memory examples and how training and evaluation walk them.
//!
//! Training follows the reference sampler's shape: every epoch is a fresh seeded
//! permutation, batches are filled exactly and a last partial batch is dropped.
//! Evaluation is sequential, padded with blank rows (puzzle id 0, labels ignored).

use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::step::Batch;
use crate::train::loss::IGNORE_LABEL_ID;
use crate::{Device, Error, Result, B};

/// Examples of one split, row-major `[rows, seq_len]`.
#[derive(Clone, Debug, Default)]
pub struct Examples {
    pub seq_len: usize,
    pub inputs: Vec<i32>,
    pub labels: Vec<i32>,
    pub puzzle_identifiers: Vec<i32>,
}

impl Examples {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.puzzle_identifiers.len()
    }

    /// True when there is no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that the arrays agree with each other and with the network.
    pub fn validate(
        &self,
        what: &str,
        vocab_size: usize,
        num_puzzle_identifiers: usize,
    ) -> Result<()> {
        let rows = self.len();
        if self.inputs.len() != rows * self.seq_len || self.labels.len() != rows * self.seq_len {
            return Err(Error::Other(format!(
                "{what}: inputs/labels do not have {rows} rows of {} tokens",
                self.seq_len
            )));
        }
        if let Some(bad) = self
            .inputs
            .iter()
            .find(|&&t| t < 0 || t as usize >= vocab_size)
        {
            return Err(Error::Other(format!(
                "{what}: input token {bad} is outside the vocabulary 0..{vocab_size}"
            )));
        }
        if let Some(bad) = self
            .labels
            .iter()
            .find(|&&t| t != IGNORE_LABEL_ID as i32 && (t < 0 || t as usize >= vocab_size))
        {
            return Err(Error::Other(format!(
                "{what}: label {bad} is outside the vocabulary 0..{vocab_size} (and not -100)"
            )));
        }
        if let Some(bad) = self
            .puzzle_identifiers
            .iter()
            .find(|&&p| p < 0 || p as usize >= num_puzzle_identifiers.max(1))
        {
            return Err(Error::Other(format!(
                "{what}: puzzle identifier {bad} is outside the table of {num_puzzle_identifiers} rows (net.num_puzzle_identifiers)"
            )));
        }
        Ok(())
    }

    /// The rows `rows` as a batch; `None` entries are blank padding rows.
    pub fn batch(&self, rows: &[Option<usize>], device: &Device) -> Batch {
        let s = self.seq_len;
        let (mut inputs, mut labels, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            match row {
                Some(r) => {
                    inputs.extend_from_slice(&self.inputs[r * s..(r + 1) * s]);
                    labels.extend_from_slice(&self.labels[r * s..(r + 1) * s]);
                    ids.push(self.puzzle_identifiers[*r]);
                }
                None => {
                    inputs.extend(std::iter::repeat_n(0, s));
                    labels.extend(std::iter::repeat_n(IGNORE_LABEL_ID as i32, s));
                    ids.push(0);
                }
            }
        }
        let n = rows.len();
        Batch {
            inputs: Tensor::<B, 2, Int>::from_data(TensorData::new(inputs, [n, s]), device),
            labels: Tensor::<B, 2, Int>::from_data(TensorData::new(labels, [n, s]), device),
            puzzle_identifiers: Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), device),
        }
    }
}

/// Where the training sampler is: enough to resume it exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerState {
    pub epoch: u64,
    /// Batches already taken from this epoch.
    pub batch: usize,
}

/// Seeded epoch permutations cut into full batches.
pub struct Sampler {
    seed: u64,
    batch_size: usize,
    rows: usize,
    pub state: SamplerState,
    order: Vec<usize>,
}

impl Sampler {
    /// A sampler over `rows` examples; an error if not even one batch fits.
    pub fn new(seed: u64, rows: usize, batch_size: usize, state: SamplerState) -> Result<Self> {
        if batch_size == 0 || rows < batch_size {
            return Err(Error::config(
                "train.global_batch_size",
                format!("{batch_size} does not fit in the {rows} training examples"),
            ));
        }
        let mut sampler = Sampler {
            seed,
            batch_size,
            rows,
            state,
            order: Vec::new(),
        };
        sampler.shuffle();
        Ok(sampler)
    }

    fn shuffle(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ self.state.epoch.wrapping_mul(0x9e3779b97f4a7c15),
        );
        self.order = (0..self.rows).collect();
        self.order.shuffle(&mut rng);
    }

    /// The rows of the next full batch (moving to the next epoch when needed).
    pub fn next_rows(&mut self) -> Vec<Option<usize>> {
        if (self.state.batch + 1) * self.batch_size > self.rows {
            self.state = SamplerState {
                epoch: self.state.epoch + 1,
                batch: 0,
            };
            self.shuffle();
        }
        let start = self.state.batch * self.batch_size;
        self.state.batch += 1;
        self.order[start..start + self.batch_size]
            .iter()
            .map(|&r| Some(r))
            .collect()
    }
}

/// Sequential evaluation batches, the last one padded with blank rows.
pub fn eval_batches(rows: usize, batch_size: usize) -> Vec<Vec<Option<usize>>> {
    (0..rows.div_ceil(batch_size.max(1)))
        .map(|b| {
            (b * batch_size..(b + 1) * batch_size)
                .map(|r| (r < rows).then_some(r))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_resumable() {
        let mut a = Sampler::new(3, 10, 4, SamplerState::default()).unwrap();
        let first: Vec<_> = (0..2).flat_map(|_| a.next_rows()).flatten().collect();
        let mut sorted = first.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            8,
            "two full batches of distinct rows, the partial one dropped"
        );
        let saved = a.state;
        let next = a.next_rows();
        let mut b = Sampler::new(3, 10, 4, saved).unwrap();
        assert_eq!(b.next_rows(), next);
        assert!(Sampler::new(3, 3, 4, SamplerState::default()).is_err());
    }

    #[test]
    fn eval_pads_the_last_batch() {
        let b = eval_batches(5, 2);
        assert_eq!(
            b,
            vec![
                vec![Some(0), Some(1)],
                vec![Some(2), Some(3)],
                vec![Some(4), None]
            ]
        );
    }
}
