//! The direct-prediction baseline: one pass of the H level per supervision step,
//! `y = f_H(y, x)` (reference `transformers_baseline.py`, `Model_ACTV2`). With
//! `fixed` halting at 1 step it is a plain transformer.

use burn::tensor::Tensor;
use recursa_core::model::layers::Rope;
use recursa_core::model::Net;
use recursa_core::model::NetConfig;
use recursa_core::registry::Plugin;
use recursa_core::schedule::NetCalls;
use recursa_core::state::Latents;
use recursa_core::{Error, RecursionSchedule, Result, B};
use serde::{Deserialize, Serialize};

/// direct-prediction baseline: y = f_H(y, x) once per supervision step (transformer
/// baseline)
///
/// One network call per supervision step; no latent z.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(schedule = "direct")]
pub struct Direct {}

impl RecursionSchedule for Direct {
    fn check(&self, net: &NetConfig) -> Result<()> {
        if net.h_layers == 0 {
            return Err(Error::config(
                "net.h_layers",
                "the direct schedule runs the H level: h_layers >= 1",
            ));
        }
        Ok(())
    }

    fn calls_per_step(&self) -> NetCalls {
        NetCalls {
            with_grad: 1,
            without_grad: 0,
        }
    }

    fn recurse(
        &self,
        net: &Net,
        latents: Latents,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
    ) -> Latents {
        let h_level = net
            .h_level
            .as_ref()
            .expect("checked by `check`: the net has an H level");
        let z_h = h_level.forward(latents.z_h, x, rope);
        Latents {
            z_h,
            z_l: latents.z_l,
        }
    }
}
