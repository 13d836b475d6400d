//! A `torch.no_grad()` block for the network: work inside it is not recorded for
//! backward (TRM's first T-1 cycles, HRM's early updates, act-q's bootstrap pass).

use std::borrow::Cow;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;

use super::fused::FrozenWeights;
use super::layers::Rope;
use super::Net;
use crate::state::Latents;
use crate::{Device, B};

/// A `torch.no_grad()` block: the network's copy and the conversions that run
/// work without recording it for backward. On an autodiff device that is the
/// network's inner (`valid()`) copy, so activations are freed as soon as they are
/// used; elsewhere (evaluation) the network itself. Weights are shared, not copied,
/// and do not change while the block is alive: the CPU kernels copy each to the
/// host once for the block ([`FrozenWeights`]).
pub struct NoGrad<'a> {
    /// The network to call inside the block (borrowed when it has no autodiff).
    pub net: Cow<'a, Net>,
    /// The RoPE tables on the block's backend.
    pub rope: Option<Rope<B>>,
    autodiff: bool,
    _frozen: FrozenWeights,
}

impl<'a> NoGrad<'a> {
    /// The block for `net` (on whatever device it lives) and its RoPE tables.
    pub fn new(net: &'a Net, rope: Option<&Rope<B>>) -> Self {
        let autodiff = is_autodiff(&net.h_init.val().device());
        if !autodiff {
            return NoGrad {
                net: Cow::Borrowed(net),
                rope: rope.cloned(),
                autodiff,
                _frozen: FrozenWeights::open(),
            };
        }
        NoGrad {
            net: Cow::Owned(net.valid()),
            rope: rope.map(|r| Rope {
                cos: r.cos.clone().inner(),
                sin: r.sin.clone().inner(),
                rotate: r.rotate.clone().inner(),
            }),
            autodiff,
            _frozen: FrozenWeights::open(),
        }
    }

    /// A float tensor brought into the block (its gradient history is left behind).
    pub fn input<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        if self.autodiff {
            t.inner()
        } else {
            t
        }
    }

    /// A float tensor brought out of the block, as a constant of the outer graph.
    pub fn output<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        if self.autodiff {
            Tensor::from_inner(t)
        } else {
            t
        }
    }

    /// Both latents brought into the block.
    pub fn input_latents(&self, l: Latents) -> Latents {
        Latents {
            z_h: self.input(l.z_h),
            z_l: self.input(l.z_l),
        }
    }

    /// Both latents brought out of the block.
    pub fn output_latents(&self, l: Latents) -> Latents {
        Latents {
            z_h: self.output(l.z_h),
            z_l: self.output(l.z_l),
        }
    }
}

/// Whether `device` records operations for backward.
pub fn is_autodiff(device: &Device) -> bool {
    matches!(device, Device::Autodiff(_))
}
