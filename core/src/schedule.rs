//! Axis 1: the recursion schedule, i.e. which network calls one supervision step makes.

use std::fmt::Debug;

use burn::tensor::{Int, Tensor};

use crate::model::layers::Rope;
use crate::model::NetConfig;
use crate::step::{Batch, Latents, Net, NoGrad};
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
pub trait RecursionSchedule: Debug + Send + Sync {
    /// The registered name of this schedule.
    fn name(&self) -> &'static str;

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

/// TRM's deep recursion (paper, Figure 3), shared by every schedule built on it:
/// T cycles of (n latent updates `z = net(z, y + x)`, then `y = net(y, z)`), the
/// first T-1 cycles without gradient: they only improve (y, z) before the cycle
/// that learns.
pub fn deep_recursion(
    net: &Net,
    latents: Latents,
    x: &Tensor<B, 3>,
    rope: Option<&Rope<B>>,
    t: usize,
    n: usize,
) -> Latents {
    let mut latents = latents;
    if t > 1 {
        // The reference's `with torch.no_grad()` block.
        let no_grad = NoGrad::new(net, rope);
        let inner = no_grad.input_latents(latents);
        let x = no_grad.input(x.clone());
        let inner = cycles(&no_grad.net, inner, &x, no_grad.rope.as_ref(), t - 1, n);
        latents = no_grad.output_latents(inner);
    }
    cycles(net, latents, x, rope, 1, n)
}

/// `cycles` times: n updates `z = net(z, y + x)`, then `y = net(y, z)`.
fn cycles(
    net: &Net,
    latents: Latents,
    x: &Tensor<B, 3>,
    rope: Option<&Rope<B>>,
    cycles: usize,
    n: usize,
) -> Latents {
    let Latents {
        z_h: mut y,
        z_l: mut z,
    } = latents;
    for _ in 0..cycles {
        for _ in 0..n {
            z = net.l_level.forward(z, y.clone() + x.clone(), rope);
        }
        y = net.l_level.forward(y, z.clone(), rope);
    }
    Latents { z_h: y, z_l: z }
}
