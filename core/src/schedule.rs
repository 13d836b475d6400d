//! Axis 1: the recursion schedule, i.e. which network calls one supervision step makes.

use std::fmt::Debug;

use burn::tensor::{Int, Tensor};

use crate::model::layers::Rope;
use crate::model::NetConfig;
use crate::step::{Batch, Latents, Net};
use crate::{Result, B};

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
pub trait RecursionSchedule: Debug + Send + Sync {
    /// The registered name of this schedule.
    fn name(&self) -> &'static str;

    /// Checks that the network has what this schedule calls (e.g. an H level).
    fn check(&self, _net: &NetConfig) -> Result<()> {
        Ok(())
    }

    /// Network calls per example per supervision step.
    fn calls_per_step(&self) -> NetCalls;

    /// The embedded question x for this step. `steps` counts the steps each row
    /// has taken before this one (0 on an episode's first step) and
    /// `previous_preds` is the argmax of each row's previous step. The default is
    /// the reference `_input_embeddings` (tokens + puzzle prefix); DIS overrides it
    /// to add a step embedding and to feed its previous prediction as the question.
    /// `puzzle` holds the rows' puzzle embeddings (see [`Net::puzzle_rows`]).
    fn embed(
        &self,
        net: &Net,
        data: &Batch,
        puzzle: Option<Tensor<B, 2>>,
        _steps: &Tensor<B, 1, Int>,
        _previous_preds: &Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        net.input_embeddings(data.inputs.clone(), puzzle, None)
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
