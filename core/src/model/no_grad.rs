//! A `torch.no_grad()` block for the network: work inside it is not recorded for
//! backward (TRM's first T-1 cycles, HRM's early updates, act-q's bootstrap pass).

use burn::module::Module;
use burn::tensor::Tensor;

use super::fused::FrozenWeights;
use super::layers::Rope;
use super::Net;
use crate::state::Latents;
use crate::{Device, B};

/// A `torch.no_grad()` block: the network's copy and the conversions that run
/// work without recording it for backward. The copy's weights are untracked
/// (shared, not copied), so nothing computed inside keeps activations for a
/// backward. Weights do not change while the block is alive: the CPU kernels copy
/// each to the host once for the block ([`FrozenWeights`]).
pub struct NoGrad {
    /// The network to call inside the block.
    pub net: Net,
    /// The RoPE tables (constants).
    pub rope: Option<Rope<B>>,
    _frozen: FrozenWeights,
}

impl NoGrad {
    /// The block for `net` and its RoPE tables.
    pub fn new(net: &Net, rope: Option<&Rope<B>>) -> Self {
        NoGrad {
            net: net.clone().no_grad(),
            rope: rope.cloned(),
            _frozen: FrozenWeights::open(),
        }
    }

    /// A float tensor brought into the block (its gradient history is left behind).
    pub fn input<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        t.set_require_grad(false)
    }

    /// A float tensor brought out of the block, as a constant of the outer graph.
    pub fn output<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        t
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

/// Frees burn-autodiff's entries for the untracked operations run so far on this
/// process. burn's autodiff registers every operation, untracked ones too (about a
/// kilobyte each), and frees them only after a backward; a training step ends with
/// one, an evaluation does not. So an evaluation calls this after each batch: a
/// backward through one tracked element, whose clean-up frees them (a few
/// microseconds per operation).
pub fn free_untracked(device: &Device) {
    let _ = Tensor::<B, 1>::zeros([1], device)
        .require_grad()
        .sum()
        .backward();
}
