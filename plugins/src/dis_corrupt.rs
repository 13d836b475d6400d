//! DIS as its paper's text describes the target (the authors' code does not
//! implement it): the ground truth corrupted at a rate falling linearly over the
//! supervision steps, clean at the last one, with optional linearly rising step
//! weights.
//!
//! At step k of N a fraction `1 - k/N` of the answer's valid cells is corrupted,
//! by masking (the cell carries no loss) or by replacement with a random token.
//! The cells are taken in a random order drawn per episode, so the corrupted set
//! shrinks from step to step (each target improves on the previous one).

use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use recursa_core::error::check_count;
use recursa_core::halting::MAX_STEPS;
use recursa_core::registry::Plugin;
use recursa_core::state::{Batch, Episode};
use recursa_core::train::loss::IGNORE_LABEL_ID;
use recursa_core::{Error, Result, SupervisionTarget, B};
use serde::{Deserialize, Serialize};

/// How a corrupted cell is shown to the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corruption {
    /// The cell is ignored (no loss).
    Mask,
    /// The cell's label is a random token in `replace_tokens`.
    Replace,
}

fn d_tokens() -> [i32; 2] {
    [2, 12]
}

/// DIS (paper text): the answer corrupted (mask or replace) at rate 1-k/N at step k,
/// optional rising step weights
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(target = "dis-corrupt")]
pub struct DisCorrupt {
    /// N, supervision steps; step N is clean
    pub steps: usize,
    /// mask (no loss on corrupted cells) or replace (random token)
    pub corruption: Corruption,
    /// [low, high) of replacement tokens (default [2, 12])
    ///
    /// The default is the ARC colours.
    #[serde(default = "d_tokens")]
    pub replace_tokens: [i32; 2],
    /// weight step k's loss by 2k/(N+1) (default false)
    ///
    /// The weights average 1, so later steps count more.
    #[serde(default)]
    pub step_weights: bool,
}

/// dis-corrupt's per-episode state, `[batch, seq_len]` each.
struct CorruptionState {
    /// Where each cell comes in the order cells stop being corrupted (a permutation).
    rank: Tensor<B, 2, Int>,
    /// The token a replaced cell shows.
    tokens: Tensor<B, 2, Int>,
}

impl CorruptionState {
    fn into_episode(self) -> Episode {
        Episode::default()
            .with("rank", self.rank.unsqueeze_dim(1))
            .with("tokens", self.tokens.unsqueeze_dim(1))
    }

    fn of(episode: &Episode) -> Option<CorruptionState> {
        let part = |name: &str| {
            let t = episode.get(name)?.clone();
            let [rows, _, seq] = t.dims();
            Some(t.reshape([rows, seq]))
        };
        Some(CorruptionState {
            rank: part("rank")?,
            tokens: part("tokens")?,
        })
    }
}

impl SupervisionTarget for DisCorrupt {
    fn check_fields(&self) -> Result<()> {
        check_count("target.steps", self.steps, MAX_STEPS)?;
        let [low, high] = self.replace_tokens;
        if low < 0 || low >= high {
            return Err(Error::config(
                "target.replace_tokens",
                format!("[{low}, {high}]: needs 0 <= low < high"),
            ));
        }
        Ok(())
    }

    fn check(&self, net: &recursa_core::model::NetConfig) -> Result<()> {
        let high = self.replace_tokens[1];
        if high as usize > net.vocab_size {
            return Err(Error::config(
                "target.replace_tokens",
                format!("high {high} is above net.vocab_size {}", net.vocab_size),
            ));
        }
        Ok(())
    }

    fn steps(&self) -> Option<usize> {
        Some(self.steps)
    }

    /// Per row: the order in which cells stop being corrupted, and the replacement tokens.
    fn start(&self, data: &Batch, rng: &mut ChaCha8Rng) -> Option<Episode> {
        let [rows, seq] = data.labels.dims();
        let (mut rank, mut tokens) = (
            Vec::with_capacity(rows * seq),
            Vec::with_capacity(rows * seq),
        );
        for _ in 0..rows {
            let mut order: Vec<i32> = (0..seq as i32).collect();
            order.shuffle(rng);
            rank.extend(order);
            tokens.extend(
                (0..seq).map(|_| rng.random_range(self.replace_tokens[0]..self.replace_tokens[1])),
            );
        }
        let device = data.labels.device();
        let state = CorruptionState {
            rank: Tensor::from_data(TensorData::new(rank, [rows, seq]), &device),
            tokens: Tensor::from_data(TensorData::new(tokens, [rows, seq]), &device),
        };
        Some(state.into_episode())
    }

    fn target(
        &self,
        data: &Batch,
        episode: Option<&Episode>,
        steps: &Tensor<B, 1, Int>,
    ) -> Tensor<B, 2, Int> {
        let Some(CorruptionState { rank, tokens }) = episode.and_then(CorruptionState::of) else {
            return data.labels.clone();
        };
        let [rows, seq] = data.labels.dims();
        // Corrupt the cells whose rank is below (1 - k/N) * seq_len.
        let n = self.steps as i64;
        let k = steps.clone().clamp(0, n);
        let limit = ((k.neg() + n) * seq as i64)
            .div_scalar(n)
            .reshape([rows, 1])
            .expand([rows, seq]);
        let valid = data.labels.clone().not_equal_elem(IGNORE_LABEL_ID);
        let corrupt = rank.lower(limit).bool_and(valid);
        match self.corruption {
            Corruption::Mask => data.labels.clone().mask_fill(corrupt, IGNORE_LABEL_ID),
            Corruption::Replace => data.labels.clone().mask_where(corrupt, tokens),
        }
    }

    fn weight(&self, steps: &Tensor<B, 1, Int>) -> Option<Tensor<B, 1>> {
        self.step_weights.then(|| {
            let n = self.steps as f64;
            steps.clone().clamp(1, self.steps as i64).float() * (2.0 / (n + 1.0))
        })
    }
}
