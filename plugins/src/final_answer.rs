//! The final answer as the target of every supervision step (TRM, HRM).

use burn::tensor::{Int, Tensor};
use recursa_core::registry::Plugin;
use recursa_core::state::{Batch, Episode};
use recursa_core::{SupervisionTarget, B};
use serde::{Deserialize, Serialize};

/// every supervision step is trained against the final answer (TRM, HRM)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(target = "final-answer")]
pub struct FinalAnswer {}

impl SupervisionTarget for FinalAnswer {
    fn target(
        &self,
        data: &Batch,
        _episode: Option<&Episode>,
        _steps: &Tensor<B, 1, Int>,
    ) -> Tensor<B, 2, Int> {
        data.labels.clone()
    }
}
