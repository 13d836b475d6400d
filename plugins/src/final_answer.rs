//! The final answer as the target of every supervision step (TRM, HRM).

use burn::tensor::{Int, Tensor};
use recursa_core::registry::{Axis, PluginEntry};
use recursa_core::step::Batch;
use recursa_core::{Result, SupervisionTarget, TargetConfig, B};
use serde::{Deserialize, Serialize};

/// Every supervision step is trained against the labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalAnswer {}

inventory::submit! {
    PluginEntry {
        name: "final-answer",
        axis: Axis::Target,
        doc: "every supervision step is trained against the final answer (TRM, HRM)",
        fields: &[],
    }
}

#[typetag::serde(name = "final-answer")]
impl TargetConfig for FinalAnswer {
    fn build(&self) -> Result<Box<dyn SupervisionTarget>> {
        Ok(Box::new(self.clone()))
    }
}

impl SupervisionTarget for FinalAnswer {
    fn name(&self) -> &'static str {
        "final-answer"
    }

    fn target(
        &self,
        data: &Batch,
        _episode: Option<&Tensor<B, 3, Int>>,
        _steps: &Tensor<B, 1, Int>,
    ) -> Tensor<B, 2, Int> {
        data.labels.clone()
    }
}
