//! Axis 2: the supervision target, i.e. what each supervision step is trained against.

use std::fmt::Debug;

use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::registry::Named;
use crate::state::{Batch, Episode};
use crate::{Result, B};

/// Gives the labels a supervision step is trained against. TRM and HRM use the
/// final answer at every step; DIS reveals the answer gradually along a path.
pub trait SupervisionTarget: Named + Debug + Send + Sync {
    /// Rejects field values out of range, naming the field; runs when the
    /// experiment file is read. Default: any values.
    fn check_fields(&self) -> Result<()> {
        Ok(())
    }

    /// Per-episode state drawn for every row of `data` (DIS: a random path from the
    /// question to the answer). The step keeps it only for rows that start a new
    /// episode, as the reference does. Default: no state.
    fn start(&self, _data: &Batch, _rng: &mut ChaCha8Rng) -> Option<Episode> {
        None
    }

    /// Labels for the step each row has just taken (`steps`, counting it), `-100` = ignored.
    ///
    /// # Shapes
    /// `data.labels: [batch, seq_len]`, `steps: [batch]` -> `[batch, seq_len]`
    fn target(
        &self,
        data: &Batch,
        episode: Option<&Episode>,
        steps: &Tensor<B, 1, Int>,
    ) -> Tensor<B, 2, Int>;

    /// Rejects a network this target cannot train (labels outside its vocabulary,
    /// say), naming the field. Default: any network.
    fn check(&self, _net: &crate::model::NetConfig) -> Result<()> {
        Ok(())
    }

    /// N, the supervision steps this target's sequence of targets spans (DIS: frames
    /// 0..=N), which the halting policy must then run. Default: none (any number).
    fn steps(&self) -> Option<usize> {
        None
    }

    /// A per-row weight of this step's language-model loss (DIS paper: rising
    /// with the step). Default: none (weight 1).
    fn weight(&self, _steps: &Tensor<B, 1, Int>) -> Option<Tensor<B, 1>> {
        None
    }
}

/// The experiment-file form of a target: `[target] name = "final-answer"` plus fields.
#[typetag::serde(tag = "name")]
pub trait TargetConfig: Debug + Send + Sync {
    /// Builds the target this config describes.
    fn build(&self) -> Result<Box<dyn SupervisionTarget>>;
}
