//! TRM: the Tiny Recursive Model's recursion schedule (Jolicoeur-Martineau, 2025).
//!
//! One network `net` (the reference's `L_level`) updates the latent z n times from
//! (y, x), then the answer y once from z; T such cycles make one supervision step,
//! and only the last cycle carries gradient.
//!
//! Two later options, both off by default (the reference's schedule):
//! * `curriculum`: T and n grow over training (CGAR's progressive depth curriculum,
//!   arXiv 2511.08653; the stages are in [`crate::cgar`]);
//! * `grad_calls`: how many of the step's final network calls carry gradient
//!   (URM's truncated backpropagation through loops, arXiv 2512.14693); TRM's
//!   choice is the last cycle, n + 1 calls.
//!
//! | recursa      | reference  | paper |
//! |--------------|------------|-------|
//! | `h_cycles`   | `H_cycles` | T     |
//! | `l_cycles`   | `L_cycles` | n     |
//! | `z_h`        | `z_H`      | y     |
//! | `z_l`        | `z_L`      | z     |
//! | `x`          | `input_embeddings` | x |
//! | `curriculum` | (CGAR)     | PDC stages (T_s, n_s) |
//! | `grad_calls` | (URM)      | loops with gradient (n + 1 in TRM) |

use burn::tensor::Tensor;
use recursa_core::error::check_count;
use recursa_core::model::layers::Rope;
use recursa_core::model::no_grad::NoGrad;
use recursa_core::model::Net;
use recursa_core::model::NetConfig;
use recursa_core::registry::Plugin;
use recursa_core::schedule::{NetCalls, MAX_CYCLES};
use recursa_core::state::Latents;
use recursa_core::{Error, RecursionSchedule, Result, B};
use serde::{Deserialize, Serialize};

use crate::cgar::{check_curriculum, stage_at, DepthStage};

/// TRM: T cycles of (n updates z = net(z, y + x), then y = net(y, z)); the first T-1 cycles without gradient
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(schedule = "trm")]
pub struct Trm {
    /// T, cycles per supervision step (reference H_cycles)
    ///
    /// ARC 3.
    pub h_cycles: usize,
    /// n, latent updates per cycle (reference L_cycles)
    ///
    /// ARC 4 or 6, Sudoku 6.
    pub l_cycles: usize,
    /// Depth curriculum: stages `{ until, h_cycles, l_cycles }` run before the full T and n (CGAR)
    ///
    /// A stage applies while the fraction of training steps done is below its
    /// `until`; evaluation always runs the full depth. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curriculum: Vec<DepthStage>,
    /// Network calls at the end of each step that carry gradient (URM); default n + 1, the last cycle
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_calls: Option<usize>,
}

impl Trm {
    /// TRM's schedule with T = `h_cycles`, n = `l_cycles`, no curriculum, the last cycle with gradient.
    pub fn new(h_cycles: usize, l_cycles: usize) -> Self {
        Trm {
            h_cycles,
            l_cycles,
            curriculum: Vec::new(),
            grad_calls: None,
        }
    }
}

impl RecursionSchedule for Trm {
    fn check_fields(&self) -> Result<()> {
        check_depth(self.h_cycles, self.l_cycles, self.grad_calls)?;
        check_curriculum(&self.curriculum, self.h_cycles, self.l_cycles)
    }

    fn check(&self, _net: &NetConfig) -> Result<()> {
        // TRM uses L_level only; an H level (h_layers > 0) would be unused weights.
        Ok(())
    }

    fn calls_per_step(&self) -> NetCalls {
        net_calls(self.h_cycles, self.l_cycles, self.grad_calls)
    }

    fn at_progress(&self, progress: f64) -> Option<Box<dyn RecursionSchedule>> {
        let stage = stage_at(&self.curriculum, progress)?;
        Some(Box::new(Trm {
            h_cycles: stage.h_cycles,
            l_cycles: stage.l_cycles,
            curriculum: Vec::new(),
            grad_calls: self.grad_calls,
        }))
    }

    /// T cycles of (n updates `z = net(z, y + x)`, then `y = net(y, z)`), the
    /// first T-1 without gradient: [`deep_recursion`].
    fn recurse(
        &self,
        net: &Net,
        latents: Latents,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
    ) -> Latents {
        let (t, n) = (self.h_cycles, self.l_cycles);
        deep_recursion(net, latents, &x, rope, t, n, self.grad_calls)
    }
}

/// Checks T, n and `grad_calls` (at most the T(n + 1) calls of a step), naming the field.
pub fn check_depth(t: usize, n: usize, grad_calls: Option<usize>) -> Result<()> {
    check_count("schedule.h_cycles", t, MAX_CYCLES)?;
    check_count("schedule.l_cycles", n, MAX_CYCLES)?;
    if let Some(k) = grad_calls {
        let calls = t * (n + 1);
        if k == 0 || k > calls {
            return Err(Error::config(
                "schedule.grad_calls",
                format!("{k}: must be between 1 and the step's {calls} network calls, T(n + 1)"),
            ));
        }
    }
    Ok(())
}

/// The network calls of [`deep_recursion`]: T(n + 1), the last `grad_calls` (default
/// n + 1) with gradient.
pub fn net_calls(t: usize, n: usize, grad_calls: Option<usize>) -> NetCalls {
    let calls = t * (n + 1);
    let with_grad = grad_calls.unwrap_or(n + 1).min(calls);
    NetCalls {
        with_grad,
        without_grad: calls - with_grad,
    }
}

/// TRM's deep recursion (paper, Figure 3; the reference's `inner.forward`), which DIS
/// builds on: T cycles of (n latent updates `z = net(z, y + x)`, then `y = net(y, z)`),
/// the first T-1 cycles without gradient: they only improve (y, z) before the cycle
/// that learns. `grad_calls` moves that boundary: only the last `grad_calls` of the
/// T(n + 1) calls carry gradient (default n + 1, TRM's last cycle).
pub fn deep_recursion(
    net: &Net,
    latents: Latents,
    x: &Tensor<B, 3>,
    rope: Option<&Rope<B>>,
    t: usize,
    n: usize,
    grad_calls: Option<usize>,
) -> Latents {
    let Latents {
        z_h: mut y,
        z_l: mut z,
    } = latents;
    let NetCalls {
        with_grad,
        without_grad,
    } = net_calls(t, n, grad_calls);
    // Call i of the step is the (i mod (n + 1))-th of its cycle: n latent updates,
    // then the answer update.
    let updates_z = |i: usize| i % (n + 1) < n;
    // with torch.no_grad(): (TRM: the first T-1 cycles)
    if without_grad > 0 {
        let no_grad = NoGrad::new(net, rope);
        let (l_level, rope) = (&no_grad.net.l_level, no_grad.rope.as_ref());
        let x = no_grad.input(x.clone());
        let (mut y_, mut z_) = (no_grad.input(y), no_grad.input(z));
        for i in 0..without_grad {
            if updates_z(i) {
                z_ = l_level.forward(z_, y_.clone() + x.clone(), rope);
            } else {
                y_ = l_level.forward(y_, z_.clone(), rope);
            }
        }
        (y, z) = (no_grad.output(y_), no_grad.output(z_));
    }
    // with gradient: (TRM: 1 cycle)
    for i in without_grad..without_grad + with_grad {
        if updates_z(i) {
            z = net.l_level.forward(z, y.clone() + x.clone(), rope);
        } else {
            y = net.l_level.forward(y, z.clone(), rope);
        }
    }
    Latents { z_h: y, z_l: z }
}
