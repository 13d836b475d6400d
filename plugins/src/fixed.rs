//! A fixed number of supervision steps, no learned halting (DIS, direct baseline).

use burn::tensor::{Bool, Tensor};
use rand_chacha::ChaCha8Rng;
use recursa_core::error::check_count;
use recursa_core::halting::MAX_STEPS;
use recursa_core::registry::Plugin;
use recursa_core::state::HaltInput;
use recursa_core::{HaltingPolicy, Result, B};
use serde::{Deserialize, Serialize};

/// always `steps` supervision steps, no Q head loss (DIS, direct baseline)
///
/// Every episode runs exactly `steps` supervision steps, in training and evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(halting = "fixed")]
pub struct FixedSteps {
    /// supervision steps per episode
    ///
    /// DIS: 6.
    pub steps: usize,
}

impl HaltingPolicy for FixedSteps {
    fn check_fields(&self) -> Result<()> {
        check_count("halting.steps", self.steps, MAX_STEPS)
    }

    fn max_steps(&self) -> usize {
        self.steps
    }

    fn halted(&self, input: &HaltInput, _rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool> {
        input.steps.clone().greater_equal_elem(self.steps as i64)
    }
}
