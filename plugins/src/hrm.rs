//! HRM: the Hierarchical Reasoning Model's recursion schedule (Wang et al., 2025).
//!
//! Two networks: a fast low level f_L (`L_level`) and a slow high level f_H
//! (`H_level`). One supervision step runs N high cycles of T low updates each,
//! `z_L = f_L(z_L, z_H + x)`, each high cycle closed by `z_H = f_H(z_H, z_L)`.
//! Only the very last low update and the last high update carry gradient (the
//! "1-step gradient" approximation); everything before runs without gradient.
//!
//! | recursa    | reference  | paper |
//! |------------|------------|-------|
//! | `h_cycles` | `H_cycles` | N     |
//! | `l_cycles` | `L_cycles` | T     |
//! | `z_h`      | `z_H`      | z_H   |
//! | `z_l`      | `z_L`      | z_L   |

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

/// HRM: N high cycles of T updates z_L = f_L(z_L, z_H + x), each closed by
/// z_H = f_H(z_H, z_L); 1-step gradient
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(schedule = "hrm")]
pub struct Hrm {
    /// N, high-level cycles (reference H_cycles)
    pub h_cycles: usize,
    /// T, low-level updates per cycle (reference L_cycles)
    pub l_cycles: usize,
}

impl RecursionSchedule for Hrm {
    fn check_fields(&self) -> Result<()> {
        check_count("schedule.h_cycles", self.h_cycles, MAX_CYCLES)?;
        check_count("schedule.l_cycles", self.l_cycles, MAX_CYCLES)
    }

    fn check(&self, net: &NetConfig) -> Result<()> {
        for (field, layers) in [
            ("net.h_layers", net.h_layers),
            ("net.l_layers", net.l_layers),
        ] {
            if layers == 0 {
                return Err(Error::config(
                    field,
                    "the hrm schedule needs two levels: h_layers >= 1 and l_layers >= 1",
                ));
            }
        }
        Ok(())
    }

    fn calls_per_step(&self) -> NetCalls {
        let total = self.h_cycles * (self.l_cycles + 1);
        NetCalls {
            with_grad: 2,
            without_grad: total - 2,
        }
    }

    fn recurse(
        &self,
        net: &Net,
        latents: Latents,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
    ) -> Latents {
        let (n, t) = (self.h_cycles, self.l_cycles);
        // Everything but the last low and the last high update, without gradient
        // (the reference's `torch.no_grad()` block).
        let no_grad = NoGrad::new(net, rope);
        let Latents { mut z_h, mut z_l } = no_grad.input_latents(latents);
        {
            let (net, rope, x) = (
                &no_grad.net,
                no_grad.rope.as_ref(),
                no_grad.input(x.clone()),
            );
            let h_level = net
                .h_level
                .as_ref()
                .expect("checked by `check`: the net has an H level");
            for cycle in 0..n {
                for update in 0..t {
                    if !(cycle == n - 1 && update == t - 1) {
                        z_l = net.l_level.forward(z_l, z_h.clone() + x.clone(), rope);
                    }
                }
                if cycle != n - 1 {
                    z_h = h_level.forward(z_h, z_l.clone(), rope);
                }
            }
        }
        let Latents { z_h, z_l } = no_grad.output_latents(Latents { z_h, z_l });
        // The 1-step gradient.
        let h_level = net
            .h_level
            .as_ref()
            .expect("checked by `check`: the net has an H level");
        let z_l = net.l_level.forward(z_l, z_h.clone() + x, rope);
        let z_h = h_level.forward(z_h, z_l.clone(), rope);
        Latents { z_h, z_l }
    }
}
