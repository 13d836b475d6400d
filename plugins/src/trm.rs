//! TRM: the Tiny Recursive Model's recursion schedule (Jolicoeur-Martineau, 2025).
//!
//! One network `net` (the reference's `L_level`) updates the latent z n times from
//! (y, x), then the answer y once from z; T such cycles make one supervision step,
//! and only the last cycle carries gradient.
//!
//! | recursa    | reference  | paper |
//! |------------|------------|-------|
//! | `h_cycles` | `H_cycles` | T     |
//! | `l_cycles` | `L_cycles` | n     |
//! | `z_h`      | `z_H`      | y     |
//! | `z_l`      | `z_L`      | z     |
//! | `x`        | `input_embeddings` | x |

use burn::tensor::Tensor;
use recursa_core::error::check_count;
use recursa_core::model::layers::Rope;
use recursa_core::model::no_grad::NoGrad;
use recursa_core::model::Net;
use recursa_core::model::NetConfig;
use recursa_core::registry::Plugin;
use recursa_core::schedule::{NetCalls, MAX_CYCLES};
use recursa_core::state::Latents;
use recursa_core::{RecursionSchedule, Result, B};
use serde::{Deserialize, Serialize};

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
}

impl RecursionSchedule for Trm {
    fn check_fields(&self) -> Result<()> {
        check_count("schedule.h_cycles", self.h_cycles, MAX_CYCLES)?;
        check_count("schedule.l_cycles", self.l_cycles, MAX_CYCLES)
    }

    fn check(&self, _net: &NetConfig) -> Result<()> {
        // TRM uses L_level only; an H level (h_layers > 0) would be unused weights.
        Ok(())
    }

    fn calls_per_step(&self) -> NetCalls {
        let per_cycle = self.l_cycles + 1;
        NetCalls {
            with_grad: per_cycle,
            without_grad: (self.h_cycles - 1) * per_cycle,
        }
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
        deep_recursion(net, latents, &x, rope, self.h_cycles, self.l_cycles)
    }
}

/// TRM's deep recursion (paper, Figure 3; the reference's `inner.forward`), which DIS
/// builds on: T cycles of (n latent updates `z = net(z, y + x)`, then `y = net(y, z)`),
/// the first T-1 cycles without gradient: they only improve (y, z) before the cycle
/// that learns.
pub fn deep_recursion(
    net: &Net,
    latents: Latents,
    x: &Tensor<B, 3>,
    rope: Option<&Rope<B>>,
    t: usize,
    n: usize,
) -> Latents {
    let Latents {
        z_h: mut y,
        z_l: mut z,
    } = latents;
    // with torch.no_grad():
    if t > 1 {
        let no_grad = NoGrad::new(net, rope);
        let (l_level, rope) = (&no_grad.net.l_level, no_grad.rope.as_ref());
        let x = no_grad.input(x.clone());
        let (mut y_, mut z_) = (no_grad.input(y), no_grad.input(z));
        for _h_step in 0..t - 1 {
            for _l_step in 0..n {
                z_ = l_level.forward(z_, y_.clone() + x.clone(), rope);
            }
            y_ = l_level.forward(y_, z_.clone(), rope);
        }
        (y, z) = (no_grad.output(y_), no_grad.output(z_));
    }
    // 1 cycle with gradient
    for _l_step in 0..n {
        z = net.l_level.forward(z, y.clone() + x.clone(), rope);
    }
    y = net.l_level.forward(y, z.clone(), rope);
    Latents { z_h: y, z_l: z }
}
