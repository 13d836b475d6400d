//! ACT halting as in TRM: learned Q halting with exploration during training.
//!
//! In training a row halts when it reaches `max_steps` or its halting logit is
//! positive (`q_halt > 0`; or `q_halt > q_continue` when `no_act_continue` is off),
//! but not before a random minimum drawn with probability `exploration`
//! (uniform in 2..=max_steps). In evaluation every row runs `max_steps`.

use burn::tensor::{Bool, Tensor};
use rand_chacha::ChaCha8Rng;
use recursa_core::halting::{act_halted, check_act_settings, HaltInput};
use recursa_core::registry::{Axis, Field, PluginEntry};
use recursa_core::step::StepOutput;
use recursa_core::train::loss::bce_with_logits_sum;
use recursa_core::{HaltingConfig, HaltingPolicy, Result, B};
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// Adaptive computation time with a learned halting head (reference `ACTLossHead` halting).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActHalt {
    /// N_sup: the most supervision steps (reference `halt_max_steps`; 16).
    pub max_steps: usize,
    /// Probability of a random minimum number of steps (reference `halt_exploration_prob`; 0.1).
    #[serde(default)]
    pub exploration: f64,
    /// Halt on `q_halt > 0` alone (true, TRM) or on `q_halt > q_continue` (false, HRM).
    #[serde(default = "default_true")]
    pub no_act_continue: bool,
}

inventory::submit! {
    PluginEntry {
        name: "act-halt",
        axis: Axis::Halting,
        doc: "ACT: halt at max_steps or when q_halt > 0 (training), with exploration; evaluation runs max_steps",
        fields: &[
            Field { name: "max_steps", doc: "most supervision steps (reference halt_max_steps)" },
            Field { name: "exploration", doc: "probability of a random minimum of 2..=max_steps (default 0)" },
            Field { name: "no_act_continue", doc: "halt on q_halt > 0 (true, default) or q_halt > q_continue" },
        ],
    }
}

#[typetag::serde(name = "act-halt")]
impl HaltingConfig for ActHalt {
    fn build(&self) -> Result<Box<dyn HaltingPolicy>> {
        check_act_settings(self.max_steps, self.exploration)?;
        Ok(Box::new(self.clone()))
    }
}

impl HaltingPolicy for ActHalt {
    fn name(&self) -> &'static str {
        "act-halt"
    }

    fn max_steps(&self) -> usize {
        self.max_steps
    }

    fn halted(&self, input: &HaltInput, rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool> {
        act_halted(
            input,
            self.max_steps,
            self.exploration,
            !self.no_act_continue,
            rng,
        )
    }

    /// BCE of `q_halt` against "the whole answer is correct" (reference `ACTLossHead`).
    fn q_loss(
        &self,
        out: &StepOutput,
        seq_is_correct: &Tensor<B, 1>,
    ) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        let q_halt = bce_with_logits_sum(out.q_halt_logits.clone(), seq_is_correct.clone());
        (Some(q_halt), None)
    }
}
