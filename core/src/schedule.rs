//! Axis 1: the recursion schedule, i.e. which network calls one supervision step makes.

use std::fmt::Debug;

use burn::tensor::{Int, Tensor};

use crate::model::layers::Rope;
use crate::model::Net;
use crate::model::NetConfig;
use crate::registry::Named;
use crate::state::{Batch, Latents};
use crate::{Result, B};

/// The most cycles (T or n) a schedule may run per supervision step (the papers use 1-6).
pub const MAX_CYCLES: usize = 1024;

/// Network calls made per example in one supervision step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetCalls {
    /// Calls inside the gradient-carrying part of the step.
    pub with_grad: usize,
    /// Calls run without gradient (TRM's first T-1 cycles).
    pub without_grad: usize,
}

impl NetCalls {
    /// All calls, with and without gradient.
    pub fn total(&self) -> usize {
        self.with_grad + self.without_grad
    }
}

/// Decides how the network is applied within one supervision step: given the
/// carried latents (y = z_H, z = z_L) and the embedded question x, it returns the
/// new latents. TRM, HRM, DIS and the direct baseline differ here.
pub trait RecursionSchedule: Named + Debug + Send + Sync {
    /// Rejects field values out of range, naming the field; runs when the
    /// experiment file is read. Default: any values.
    fn check_fields(&self) -> Result<()> {
        Ok(())
    }

    /// Checks that the network has what this schedule calls (e.g. an H level).
    fn check(&self, _net: &NetConfig) -> Result<()> {
        Ok(())
    }

    /// Network calls per example per supervision step.
    fn calls_per_step(&self) -> NetCalls;

    /// The question tokens fed to this step. `steps` counts the steps each row
    /// has taken before this one (0 on an episode's first step); `previous_preds`
    /// is the argmax of each row's previous step. Default: the data's inputs.
    /// DIS feeds its previous prediction from the second step on.
    fn question(
        &self,
        data: &Batch,
        _steps: &Tensor<B, 1, Int>,
        _previous_preds: &Tensor<B, 2, Int>,
    ) -> Tensor<B, 2, Int> {
        data.inputs.clone()
    }

    /// The step-embedding row of each row for this step, if the schedule adds a
    /// step embedding to x (DIS). Default: none.
    fn step_index(
        &self,
        _net: &NetConfig,
        _steps: &Tensor<B, 1, Int>,
    ) -> Option<Tensor<B, 1, Int>> {
        None
    }

    /// Whether x gets a learned step embedding of `net.step_embeddings` rows, which must
    /// then be the supervision steps N + 2 (DIS). Default: no.
    fn uses_step_embedding(&self) -> bool {
        false
    }

    /// The schedule to run at `progress`, the fraction of training steps done before
    /// this one (in [0, 1)): a depth curriculum returns its shallower stage (CGAR).
    /// Evaluation does not ask, and runs the schedule itself. Default: `None`, itself.
    fn at_progress(&self, _progress: f64) -> Option<Box<dyn RecursionSchedule>> {
        None
    }

    /// Runs the recursion of one supervision step.
    fn recurse(
        &self,
        net: &Net,
        latents: Latents,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
    ) -> Latents;
}

/// The experiment-file form of a schedule: `[schedule] name = "trm"` plus its fields.
#[typetag::serde(tag = "name")]
pub trait ScheduleConfig: Debug + Send + Sync {
    /// Builds the schedule this config describes.
    fn build(&self) -> Result<Box<dyn RecursionSchedule>>;
}
