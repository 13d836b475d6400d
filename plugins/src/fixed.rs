//! A fixed number of supervision steps, no learned halting (DIS, direct baseline).

use burn::tensor::{Bool, Tensor};
use rand_chacha::ChaCha8Rng;
use recursa_core::error::check_count;
use recursa_core::halting::{HaltInput, MAX_STEPS};
use recursa_core::registry::{Axis, Field, PluginEntry};
use recursa_core::{HaltingConfig, HaltingPolicy, Result, B};
use serde::{Deserialize, Serialize};

/// Every episode runs exactly `steps` supervision steps, in training and evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedSteps {
    /// Supervision steps per episode (DIS: 6).
    pub steps: usize,
}

inventory::submit! {
    PluginEntry {
        name: "fixed",
        axis: Axis::Halting,
        doc: "always `steps` supervision steps, no Q head loss (DIS, direct baseline)",
        fields: &[Field { name: "steps", doc: "supervision steps per episode" }],
    }
}

#[typetag::serde(name = "fixed")]
impl HaltingConfig for FixedSteps {
    fn build(&self) -> Result<Box<dyn HaltingPolicy>> {
        check_count("halting.steps", self.steps, MAX_STEPS)?;
        Ok(Box::new(self.clone()))
    }
}

impl HaltingPolicy for FixedSteps {
    fn name(&self) -> &'static str {
        "fixed"
    }

    fn max_steps(&self) -> usize {
        self.steps
    }

    fn halted(&self, input: &HaltInput, _rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool> {
        input.steps.clone().greater_equal_elem(self.steps as i64)
    }
}
