//! ACT with the Q-learning continue target, as HRM trains it.
//!
//! Halting compares the two logits (`q_halt > q_continue`) in training and runs
//! `max_steps` in evaluation. Besides the `q_halt` BCE against "answer correct",
//! `q_continue` is trained towards a bootstrapped target computed with one extra
//! no-grad pass on the new carry: `sigmoid(q_halt')` at the last step, else
//! `sigmoid(max(q_halt', q_continue'))`.
//!
//! The TRM reference's code for this path (`no_ACT_continue=False`) unpacks five
//! values from a function returning three and crashes; this is what it intends,
//! and what HRM's code does.

use burn::tensor::{activation, Bool, Int, Tensor};
use rand_chacha::ChaCha8Rng;
use recursa_core::registry::Plugin;
use recursa_core::state::{HaltInput, StepOutput};
use recursa_core::train::loss::bce_with_logits_sum;
use recursa_core::{HaltingPolicy, Result, B};
use serde::{Deserialize, Serialize};

use crate::act::{act_halted, check_act_settings};

/// ACT with Q-learning: halt when q_halt > q_continue (training); q_continue learns a
/// bootstrapped target (HRM)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(halting = "act-q")]
pub struct ActQ {
    /// most supervision steps (reference halt_max_steps)
    pub max_steps: usize,
    /// probability of a random minimum of 2..=max_steps (default 0)
    ///
    /// Reference `halt_exploration_prob`.
    #[serde(default)]
    pub exploration: f64,
}

impl HaltingPolicy for ActQ {
    fn check_fields(&self) -> Result<()> {
        check_act_settings(self.max_steps, self.exploration)
    }

    fn max_steps(&self) -> usize {
        self.max_steps
    }

    fn halted(&self, input: &HaltInput, rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool> {
        act_halted(input, self.max_steps, self.exploration, true, rng)
    }

    fn extra_passes(&self) -> usize {
        1
    }

    /// The Q-learning target: `sigmoid(q_halt')` on a row's last step, else
    /// `sigmoid(max(q_halt', q_continue'))`, the primed logits from one more pass without
    /// gradient on the new carry. No replay buffer or target network, as the reference
    /// (PQN-style).
    fn continue_target(
        &self,
        steps: &Tensor<B, 1, Int>,
        next_q: &mut dyn FnMut() -> (Tensor<B, 1>, Tensor<B, 1>),
    ) -> Option<Tensor<B, 1>> {
        let (next_halt, next_continue) = next_q();
        let is_last = steps.clone().greater_equal_elem(self.max_steps as i64);
        let best = next_halt.clone().max_pair(next_continue);
        Some(activation::sigmoid(best.mask_where(is_last, next_halt)))
    }

    fn q_loss(
        &self,
        out: &StepOutput,
        seq_is_correct: &Tensor<B, 1>,
    ) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        let q_halt = bce_with_logits_sum(out.q_halt_logits.clone(), seq_is_correct.clone());
        let q_continue = out
            .target_q_continue
            .as_ref()
            .map(|target| bce_with_logits_sum(out.q_continue_logits.clone(), target.clone()));
        (Some(q_halt), q_continue)
    }
}
