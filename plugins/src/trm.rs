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
use recursa_core::model::NetConfig;
use recursa_core::registry::{Axis, Field, PluginEntry};
use recursa_core::schedule::{deep_recursion, NetCalls, MAX_CYCLES};
use recursa_core::step::{Latents, Net};
use recursa_core::{RecursionSchedule, Result, ScheduleConfig, B};
use serde::{Deserialize, Serialize};

/// TRM's schedule: T cycles of (n z-updates, one y-update); T-1 cycles without gradient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trm {
    /// T: cycles per supervision step (reference `H_cycles`; ARC 3).
    pub h_cycles: usize,
    /// n: latent updates per cycle (reference `L_cycles`; ARC 4 or 6, Sudoku 6).
    pub l_cycles: usize,
}

inventory::submit! {
    PluginEntry {
        name: "trm",
        axis: Axis::Schedule,
        doc: "TRM: T cycles of (n updates z = net(z, y + x), then y = net(y, z)); the first T-1 cycles without gradient",
        fields: &[
            Field { name: "h_cycles", doc: "T, cycles per supervision step (reference H_cycles)" },
            Field { name: "l_cycles", doc: "n, latent updates per cycle (reference L_cycles)" },
        ],
    }
}

#[typetag::serde(name = "trm")]
impl ScheduleConfig for Trm {
    fn build(&self) -> Result<Box<dyn RecursionSchedule>> {
        check_count("schedule.h_cycles", self.h_cycles, MAX_CYCLES)?;
        check_count("schedule.l_cycles", self.l_cycles, MAX_CYCLES)?;
        Ok(Box::new(self.clone()))
    }
}

impl RecursionSchedule for Trm {
    fn name(&self) -> &'static str {
        "trm"
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
