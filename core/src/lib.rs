//! recursa-core: the vocabulary every recursa plugin speaks.
//!
//! A looped reasoning model applies one small network again and again. A
//! *supervision step* takes the carried state (y = z_H, the answer; z = z_L, the
//! latent) and the embedded question x, runs a [`RecursionSchedule`] of network
//! calls, decodes logits from y and is trained against a [`SupervisionTarget`].
//! A [`HaltingPolicy`] decides, per sample, whether another step follows.
//!
//! * [`model`]: the reasoning network's layers, exactly as the reference computes them.
//! * [`schedule`], [`target`], [`halting`]: the three plugin axes.
//! * [`registry`]: every plugin known to this binary, collected with `inventory`.
//! * [`state`]: the batch, the carry and a step's outputs (plain data).
//! * [`step`]: one supervision step with the ACT carry (reset, run, decode, halt).
//! * [`weights`]: safetensors in and out, under the reference `state_dict` names.
//! * [`reference`]: the reference PyTorch configuration dict, read as-is.

pub mod error;
pub mod experiment;
pub mod halting;
pub mod model;
pub mod reference;
pub mod registry;
pub mod schedule;
pub mod state;
pub mod step;
pub mod target;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
pub use halting::{HaltingConfig, HaltingPolicy};
pub use schedule::{RecursionSchedule, ScheduleConfig};
pub use target::{SupervisionTarget, TargetConfig};

/// The one tensor backend recursa is written against: burn's autodiff over
/// `burn::Dispatch`.
///
/// `burn::Dispatch` picks the concrete backend (flex or ndarray on CPU, CUDA, wgpu,
/// libtorch) from the device at run time, so models and plugin trait objects are not
/// generic. The autodiff decorator is static so that an operation can bring its own
/// backward (burn-autodiff's `Backward` trait; attention's on the CPU,
/// `model::fused`), which burn's device-level autodiff (`Device::autodiff`) cannot.
/// A tensor is tracked when it requires gradient or derives from one that does;
/// work without gradient (evaluation, `model::no_grad::NoGrad`) runs on untracked
/// tensors, whose graph entries burn frees at the next backward
/// ([`model::no_grad::free_untracked`]).
pub type B = burn::backend::Autodiff<burn::Dispatch>;

/// The backend under [`B`]'s autodiff, where gradients (`GradientsParams`) live.
pub type Inner = burn::Dispatch;

/// A device of [`B`]: which backend, which card. Never an autodiff device:
/// autodiff is in the type.
pub type Device = burn::DispatchDevice;

/// Waits until `device` has finished the work queued on it (before timing it or
/// reading its memory).
pub fn sync(device: &Device) -> Result<()> {
    <B as burn::tensor::backend::Backend>::sync(device)
        .map_err(|e| Error::Backend(format!("{e:?}")))
}

/// Whether `device` is one of the CPU backends (`cpu`, burn-flex; `ndarray`).
pub fn is_cpu(device: &Device) -> bool {
    matches!(device, Device::Flex(_) | Device::NdArray(_))
}
