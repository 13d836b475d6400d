//! The final answer as the target of every supervision step (TRM, HRM), optionally
//! weighted by step (CGAR's `step_decay`, see `cgar.rs`).

use burn::tensor::{Int, Tensor};
use recursa_core::registry::Plugin;
use recursa_core::state::{Batch, Episode};
use recursa_core::{Result, SupervisionTarget, B};
use serde::{Deserialize, Serialize};

use crate::cgar::{check_step_decay, step_weights};

/// every supervision step is trained against the final answer (TRM, HRM)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(target = "final-answer")]
pub struct FinalAnswer {
    /// λ: weight supervision step t's loss by λ^(t-1) (CGAR; 0.7 in the paper); default none
    ///
    /// See `cgar.rs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_decay: Option<f64>,
}

impl SupervisionTarget for FinalAnswer {
    fn check_fields(&self) -> Result<()> {
        check_step_decay(self.step_decay)
    }

    fn weight(&self, steps: &Tensor<B, 1, Int>) -> Option<Tensor<B, 1>> {
        self.step_decay.map(|decay| step_weights(steps, decay))
    }

    fn target(
        &self,
        data: &Batch,
        _episode: Option<&Episode>,
        _steps: &Tensor<B, 1, Int>,
    ) -> Tensor<B, 2, Int> {
        data.labels.clone()
    }
}
