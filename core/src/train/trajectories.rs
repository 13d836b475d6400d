//! Noisy latent trajectories with Q-head selection at evaluation (PTRM, arXiv
//! 2605.19943): every test example is rolled out K times, each time with Gaussian
//! noise added to the answer latent y = z_H before every supervision step, and the
//! trajectory whose halting head is most confident at the last step (the largest
//! `q_halt` logit) gives the answer. It needs no retraining, so it applies to any
//! trained checkpoint (`recursa eval --trajectories K --latent-noise SIGMA`).
//!
//! | recursa         | paper                                   |
//! |-----------------|-----------------------------------------|
//! | `trajectories`  | K, parallel trajectories per example    |
//! | `latent_noise`  | σ, `z_H <- z_H + ε`, `ε ~ N(0, σ² I)`   |
//! | the eval rollout's `max_steps` | D, supervision steps     |
//! | [`select_best`] | `k* = argmax_k q_halt^(k)` at step D    |
//!
//! The noise is drawn on the host from a ChaCha stream of its own, seeded by `seed`, so
//! a seed fixes the result on every backend and the rollout's other draws are those of
//! the plain rollout. K = 1 with σ = 0 is the plain rollout.

use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::state::{Batch, Carry, Latents, StepOutput};
use crate::train::data::HostBatch;
use crate::{Error, Result, B};

/// The most trajectories per example (the paper uses 100).
pub const MAX_TRAJECTORIES: usize = 4096;

/// K noisy trajectories per example, selected by the halting head; also the `[eval]`
/// section of an experiment file (`trajectories`, `latent_noise`, `noise_seed`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trajectories {
    /// K, rollouts per example. Default 1.
    #[serde(rename = "trajectories", default = "one")]
    pub count: usize,
    /// σ of the noise on z_H before every supervision step. Default 0.
    #[serde(default)]
    pub latent_noise: f64,
    /// Seeds the noise. Default 0.
    #[serde(rename = "noise_seed", default)]
    pub seed: u64,
}

fn one() -> usize {
    1
}

impl Trajectories {
    /// Rejects K = 0 or over [`MAX_TRAJECTORIES`] and σ that is negative or not finite.
    pub fn validate(&self) -> Result<()> {
        if self.count == 0 || self.count > MAX_TRAJECTORIES {
            return Err(Error::config(
                "trajectories",
                format!("{}: must be between 1 and {MAX_TRAJECTORIES}", self.count),
            ));
        }
        if !(self.latent_noise.is_finite() && self.latent_noise >= 0.0) {
            return Err(Error::config(
                "latent_noise",
                format!("{}: must be a finite number >= 0", self.latent_noise),
            ));
        }
        Ok(())
    }
}

/// Every row of `batch` repeated `k` times in a row (trajectory j of example i is
/// row `i * k + j`).
pub fn repeat_rows(batch: &HostBatch, k: usize) -> HostBatch {
    let s = batch.seq_len;
    let rows = |v: &[i32], width: usize| -> Vec<i32> {
        v.chunks(width)
            .flat_map(|row| std::iter::repeat_n(row, k).flatten().copied())
            .collect()
    };
    HostBatch {
        rows: batch.rows * k,
        seq_len: s,
        inputs: rows(&batch.inputs, s),
        labels: rows(&batch.labels, s),
        puzzle_identifiers: rows(&batch.puzzle_identifiers, 1),
        effective: batch.effective,
    }
}

/// For each example (`k` consecutive rows), the trajectory with the largest `q_halt`
/// logit at the last step (the first of equals): that row of the step's outputs and of
/// the carry. The carry's episode state is dropped: nothing reads it after the last step.
pub fn select_best(out: StepOutput, carry: Carry, k: usize) -> (StepOutput, Carry) {
    if k == 1 {
        return (out, carry);
    }
    let rows = out.q_halt_logits.dims()[0] / k;
    let device = carry.steps.device();
    let best = out
        .q_halt_logits
        .clone()
        .reshape([rows, k])
        .argmax(1)
        .reshape([rows]);
    let first = Tensor::<B, 1, Int>::arange(0..rows as i64, &device) * k as i64;
    let pick = first + best;
    // Evaluation runs without autodiff, so indices and values share one device.
    let out = StepOutput {
        logits: out.logits.select(0, pick.clone()),
        q_halt_logits: out.q_halt_logits.select(0, pick.clone()),
        q_continue_logits: out.q_continue_logits.select(0, pick.clone()),
        target: out.target.select(0, pick.clone()),
        target_weight: out.target_weight.map(|w| w.select(0, pick.clone())),
        target_q_continue: out.target_q_continue.map(|w| w.select(0, pick.clone())),
        puzzle: out
            .puzzle
            .map(|(rows, ids)| (rows.select(0, pick.clone()), ids.select(0, pick.clone()))),
    };
    let carry = Carry {
        latents: Latents {
            z_h: carry.latents.z_h.select(0, pick.clone()),
            z_l: carry.latents.z_l.select(0, pick.clone()),
        },
        steps: carry.steps.select(0, pick.clone()),
        halted: carry.halted.int().select(0, pick.clone()).equal_elem(1),
        current_data: Batch {
            inputs: carry.current_data.inputs.select(0, pick.clone()),
            labels: carry.current_data.labels.select(0, pick.clone()),
            puzzle_identifiers: carry
                .current_data
                .puzzle_identifiers
                .select(0, pick.clone()),
        },
        preds: carry.preds.select(0, pick.clone()),
        episode: None,
    };
    (out, carry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn rows_repeat_in_place_and_the_most_confident_trajectory_wins() {
        let host = HostBatch {
            rows: 2,
            seq_len: 2,
            inputs: vec![1, 2, 3, 4],
            labels: vec![5, 6, 7, 8],
            puzzle_identifiers: vec![10, 11],
            effective: 2,
        };
        let r = repeat_rows(&host, 3);
        assert_eq!(r.rows, 6);
        assert_eq!(r.inputs, [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]);
        assert_eq!(r.puzzle_identifiers, [10, 10, 10, 11, 11, 11]);
        assert_eq!(r.effective, 2);

        // 2 examples x 3 trajectories; the logits of row i are all i.
        let device = Default::default();
        let rows = 6;
        let logits = Tensor::<B, 1, Int>::arange(0..rows, &device)
            .float()
            .reshape([6, 1, 1])
            .expand([6, 2, 4]);
        let q = Tensor::<B, 1>::from_data(
            TensorData::from([0.1f32, 2.0, -1.0, 0.5, 0.5, 3.0]),
            &device,
        );
        let ints = |v: Vec<i32>, shape: [usize; 2]| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, shape), &device)
        };
        let out = StepOutput {
            logits,
            q_halt_logits: q.clone(),
            q_continue_logits: q.clone().neg(),
            target: ints((0..12).collect(), [6, 2]),
            target_weight: None,
            target_q_continue: None,
            puzzle: None,
        };
        let zeros = Tensor::<B, 3>::zeros([6, 2, 4], &device);
        let carry = Carry {
            latents: Latents {
                z_h: zeros.clone(),
                z_l: zeros,
            },
            steps: Tensor::arange(0..6, &device),
            halted: Tensor::<B, 1, Int>::ones([6], &device).equal_elem(1),
            current_data: Batch {
                inputs: ints(r.inputs.clone(), [6, 2]),
                labels: ints(r.labels.clone(), [6, 2]),
                puzzle_identifiers: Tensor::from_data(
                    TensorData::new(r.puzzle_identifiers.clone(), [6]),
                    &device,
                ),
            },
            preds: ints(vec![0; 12], [6, 2]),
            episode: None,
        };
        let (out, carry) = select_best(out, carry, 3);
        // Example 0: q 0.1, 2.0, -1.0 -> row 1; example 1: 0.5, 0.5, 3.0 -> row 5.
        let picked: Vec<f32> = out
            .logits
            .narrow(1, 0, 1)
            .narrow(2, 0, 1)
            .reshape([2])
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(picked, [1.0, 5.0]);
        let q: Vec<f32> = out.q_halt_logits.into_data().to_vec().unwrap();
        assert_eq!(q, [2.0, 3.0]);
        let steps: Vec<i64> = carry.steps.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(steps, [1, 5]);
        let labels: Vec<i64> = carry
            .current_data
            .labels
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        assert_eq!(labels, [5, 6, 7, 8]);
        assert!(Trajectories {
            count: 0,
            latent_noise: 0.1,
            seed: 0
        }
        .validate()
        .is_err());
        assert!(Trajectories {
            count: 4,
            latent_noise: f64::NAN,
            seed: 0
        }
        .validate()
        .is_err());
    }
}
