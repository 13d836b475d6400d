//! Axis 3: the halting policy, i.e. whether a sample gets another supervision step.

use std::fmt::Debug;

use burn::tensor::{Bool, Int, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::registry::Named;
use crate::state::{HaltInput, StepOutput};
use crate::{Result, B};

/// Decides per row whether the episode ends after this supervision step. In
/// evaluation every policy runs its maximum, so a batch halts together: the
/// evaluation rollout runs `max_steps` steps and refuses a policy that leaves a row
/// running.
pub trait HaltingPolicy: Named + Debug + Send + Sync {
    /// Rejects field values out of range, naming the field; runs when the
    /// experiment file is read. Default: any values.
    fn check_fields(&self) -> Result<()> {
        Ok(())
    }

    /// The most supervision steps an episode may take (N_sup).
    fn max_steps(&self) -> usize;

    /// Rows that halt after this step. `[batch]`
    fn halted(&self, input: &HaltInput, rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool>;

    /// Passes of the schedule this policy adds to each training step beyond the step's
    /// own (act-q: 1, for its bootstrapped target); counted in the forward-pass metrics.
    fn extra_passes(&self) -> usize {
        0
    }

    /// A training target for `q_continue` (kept in [`StepOutput::target_q_continue`]),
    /// from one more pass of the step without gradient on the new carry: `next_q` runs
    /// that pass and returns its `(q_halt, q_continue)` logits. `steps` counts the steps
    /// taken, this one included. Default: none, and no extra pass. `[batch]`
    fn continue_target(
        &self,
        _steps: &Tensor<B, 1, Int>,
        _next_q: &mut dyn FnMut() -> (Tensor<B, 1>, Tensor<B, 1>),
    ) -> Option<Tensor<B, 1>> {
        None
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

/// The most supervision steps a halting policy may allow (the papers use 6-16).
pub const MAX_STEPS: usize = 4096;
