//! Axis 3: the halting policy, i.e. whether a sample gets another supervision step.

use std::fmt::Debug;

use burn::tensor::{Bool, Int, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::step::StepOutput;
use crate::{Result, B};

/// What a halting policy sees after a supervision step.
pub struct HaltInput<'a> {
    /// Supervision steps taken by each row, this one included. `[batch]`
    pub steps: &'a Tensor<B, 1, Int>,
    /// Halting logit of each row. `[batch]`
    pub q_halt: &'a Tensor<B, 1>,
    /// Continue logit of each row. `[batch]`
    pub q_continue: &'a Tensor<B, 1>,
    /// Training (Q halting and exploration apply) or evaluation (always run the maximum).
    pub training: bool,
}

/// Decides per row whether the episode ends after this supervision step. In
/// evaluation every policy runs its maximum, so a batch halts together.
pub trait HaltingPolicy: Debug + Send + Sync {
    /// The registered name of this policy.
    fn name(&self) -> &'static str;

    /// The most supervision steps an episode may take (N_sup).
    fn max_steps(&self) -> usize;

    /// Rows that halt after this step. `[batch]`
    fn halted(&self, input: &HaltInput, rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool>;

    /// Whether training needs the bootstrapped continue target (an extra no-grad
    /// forward pass on the new carry; see [`StepOutput::target_q_continue`]).
    fn bootstraps_q(&self) -> bool {
        false
    }

    /// The halting head's losses `(q_halt_loss, q_continue_loss)`, summed over rows,
    /// given whether each row's answer is entirely correct (0/1, `[batch]`).
    /// Default: none (fixed-step policies leave `q_head` untrained).
    fn q_loss(
        &self,
        _out: &StepOutput,
        _seq_is_correct: &Tensor<B, 1>,
    ) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        (None, None)
    }
}

/// The experiment-file form of a halting policy: `[halting] name = "act-halt"` plus fields.
#[typetag::serde(tag = "name")]
pub trait HaltingConfig: Debug + Send + Sync {
    /// Builds the policy this config describes.
    fn build(&self) -> Result<Box<dyn HaltingPolicy>>;
}

/// Checks the settings every ACT policy shares, naming the field.
pub fn check_act_settings(max_steps: usize, exploration: f64) -> Result<()> {
    crate::error::check_count("halting.max_steps", max_steps, MAX_STEPS)?;
    if !(0.0..=1.0).contains(&exploration) {
        return Err(crate::Error::config(
            "halting.exploration",
            format!("{exploration}: must be in [0, 1]"),
        ));
    }
    Ok(())
}

/// The most supervision steps a halting policy may allow (the papers use 6-16).
pub const MAX_STEPS: usize = 4096;

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
    use burn::tensor::TensorData;
    use rand::Rng;
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
