//! ACT halting as in TRM: learned Q halting with exploration during training.
//!
//! In training a row halts when it reaches `max_steps` or its halting logit is
//! positive (`q_halt > 0`; or `q_halt > q_continue` when `no_act_continue` is off),
//! but not before a random minimum drawn with probability `exploration`
//! (uniform in 2..=max_steps). In evaluation every row runs `max_steps`.

use burn::tensor::{Bool, Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use recursa_core::error::check_count;
use recursa_core::halting::MAX_STEPS;
use recursa_core::registry::Plugin;
use recursa_core::state::{HaltInput, StepOutput};
use recursa_core::train::loss::bce_with_logits_sum;
use recursa_core::{Error, HaltingPolicy, Result, B};
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// ACT: halt at max_steps or when q_halt > 0 (training), with exploration; evaluation
/// runs max_steps
///
/// Adaptive computation time with a learned halting head (reference `ACTLossHead` halting).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(halting = "act-halt")]
pub struct ActHalt {
    /// most supervision steps (reference halt_max_steps)
    ///
    /// N_sup; TRM 16.
    pub max_steps: usize,
    /// probability of a random minimum of 2..=max_steps (default 0)
    ///
    /// Reference `halt_exploration_prob`; TRM 0.1.
    #[serde(default)]
    pub exploration: f64,
    /// halt on q_halt > 0 (true, default) or q_halt > q_continue
    ///
    /// True: TRM; false: HRM.
    #[serde(default = "default_true")]
    pub no_act_continue: bool,
}

impl HaltingPolicy for ActHalt {
    fn check_fields(&self) -> Result<()> {
        check_act_settings(self.max_steps, self.exploration)
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

/// ACT halting as the reference computes it: in evaluation (or with one step) a
/// row halts at `max_steps`; in training also when it wants to (`q_halt > 0`, or
/// `q_halt > q_continue` with `compare_continue`), but not before a random
/// minimum in 2..=max_steps drawn with probability `exploration`.
pub fn act_halted(
    input: &HaltInput,
    max_steps: usize,
    exploration: f64,
    compare_continue: bool,
    rng: &mut ChaCha8Rng,
) -> Tensor<B, 1, Bool> {
    let is_last = input.steps.clone().greater_equal_elem(max_steps as i64);
    if !input.training || max_steps <= 1 {
        return is_last;
    }
    let wants_halt = if compare_continue {
        input.q_halt.clone().greater(input.q_continue.clone())
    } else {
        input.q_halt.clone().greater_elem(0.0)
    };
    let halted = is_last.bool_or(wants_halt);
    let rows = input.steps.dims()[0];
    let min_steps: Vec<i32> = (0..rows)
        .map(|_| {
            let explore = rng.random::<f64>() < exploration;
            let minimum = rng.random_range(2..=max_steps as i32);
            if explore {
                minimum
            } else {
                0
            }
        })
        .collect();
    let device = input.steps.device();
    let min_steps = Tensor::<B, 1, Int>::from_data(TensorData::new(min_steps, [rows]), &device);
    halted.bool_and(input.steps.clone().greater_equal(min_steps))
}

/// Checks the settings every ACT policy shares, naming the field.
pub fn check_act_settings(max_steps: usize, exploration: f64) -> Result<()> {
    check_count("halting.max_steps", max_steps, MAX_STEPS)?;
    if !(0.0..=1.0).contains(&exploration) {
        return Err(Error::config(
            "halting.exploration",
            format!("{exploration}: must be in [0, 1]"),
        ));
    }
    Ok(())
}
