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

use burn::tensor::{Bool, Tensor};
use rand_chacha::ChaCha8Rng;
use recursa_core::halting::{act_halted, check_act_settings, HaltInput};
use recursa_core::registry::{Axis, Field, PluginEntry};
use recursa_core::step::StepOutput;
use recursa_core::train::loss::bce_with_logits_sum;
use recursa_core::{HaltingConfig, HaltingPolicy, Result, B};
use serde::{Deserialize, Serialize};

/// ACT with a Q-learned continue logit (HRM).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActQ {
    /// N_sup: the most supervision steps (reference `halt_max_steps`).
    pub max_steps: usize,
    /// Probability of a random minimum number of steps (reference `halt_exploration_prob`).
    #[serde(default)]
    pub exploration: f64,
}

inventory::submit! {
    PluginEntry {
        name: "act-q",
        axis: Axis::Halting,
        doc: "ACT with Q-learning: halt when q_halt > q_continue (training); q_continue learns a bootstrapped target (HRM)",
        fields: &[
            Field { name: "max_steps", doc: "most supervision steps (reference halt_max_steps)" },
            Field { name: "exploration", doc: "probability of a random minimum of 2..=max_steps (default 0)" },
        ],
    }
}

#[typetag::serde(name = "act-q")]
impl HaltingConfig for ActQ {
    fn build(&self) -> Result<Box<dyn HaltingPolicy>> {
        check_act_settings(self.max_steps, self.exploration)?;
        Ok(Box::new(self.clone()))
    }
}

impl HaltingPolicy for ActQ {
    fn name(&self) -> &'static str {
        "act-q"
    }

    fn max_steps(&self) -> usize {
        self.max_steps
    }

    fn halted(&self, input: &HaltInput, rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool> {
        act_halted(input, self.max_steps, self.exploration, true, rng)
    }

    fn bootstraps_q(&self) -> bool {
        true
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
