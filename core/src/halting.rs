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
