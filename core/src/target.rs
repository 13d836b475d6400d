//! Axis 2: the supervision target, i.e. what each supervision step is trained against.

use std::fmt::Debug;

use burn::tensor::{Int, Tensor};

use crate::step::Batch;
use crate::{Result, B};

/// Gives the labels a supervision step is trained against. TRM and HRM use the
/// final answer at every step; DIS reveals the answer gradually along a path.
pub trait SupervisionTarget: Debug + Send + Sync {
    /// The registered name of this target.
    fn name(&self) -> &'static str;

    /// Labels for the step each row has just taken (`steps`, counting it), `-100` = ignored.
    ///
    /// # Shapes
    /// `data.labels: [batch, seq_len]`, `steps: [batch]` -> `[batch, seq_len]`
    fn target(&self, data: &Batch, steps: &Tensor<B, 1, Int>) -> Tensor<B, 2, Int>;
}

/// The experiment-file form of a target: `[target] name = "final-answer"` plus fields.
#[typetag::serde(tag = "name")]
pub trait TargetConfig: Debug + Send + Sync {
    /// Builds the target this config describes.
    fn build(&self) -> Result<Box<dyn SupervisionTarget>>;
}
