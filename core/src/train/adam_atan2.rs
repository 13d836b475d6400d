//! AdamATan2 (Everett et al., 2024; the `imoneoi/adam-atan2` kernel TRM trains with).
//!
//! burn has no AdamATan2, so it is written here as a burn `SimpleOptimizer`, which
//! gives module traversal, gradient lookup and records for free. Per element,
//! without epsilon and without the paper's a/b constants (the kernel has none):
//!
//! ```text
//! t += 1; bc1 = 1 - beta1^t; bc2 = 1 - beta2^t
//! p *= 1 - lr*wd                          (decoupled weight decay)
//! m = lerp(m, g, 1 - beta1); v = lerp(v, g*g, 1 - beta2)
//! p -= (lr / bc1) * atan2(m, sqrt(v) / sqrt(bc2))
//! ```

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{LearningRate, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::{backend::AutodiffBackend, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of AdamATan2 (reference `pretrain.py` defaults for TRM).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamAtan2Config {
    /// Default 0.9.
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    /// Default 0.95.
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    /// Decoupled weight decay. Default 0.1.
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
}

fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.95
}
fn d_wd() -> f64 {
    0.1
}

impl Default for AdamAtan2Config {
    fn default() -> Self {
        AdamAtan2Config {
            beta1: d_beta1(),
            beta2: d_beta2(),
            weight_decay: d_wd(),
        }
    }
}

/// The AdamATan2 update rule (module doc).
#[derive(Clone, Debug)]
pub struct AdamAtan2 {
    config: AdamAtan2Config,
}

/// Per-tensor state: step count and the two moments.
#[derive(Record, Clone)]
pub struct AdamAtan2State<B: Backend, const D: usize> {
    pub time: usize,
    pub m: Tensor<B, D>,
    pub v: Tensor<B, D>,
}

impl AdamAtan2Config {
    /// The optimizer for a module `M`, as a burn optimizer.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> OptimizerAdaptor<AdamAtan2, M, B> {
        OptimizerAdaptor::from(AdamAtan2 { config: *self })
    }

    /// The rule alone, for applying to tensors directly.
    pub fn rule(&self) -> AdamAtan2 {
        AdamAtan2 { config: *self }
    }
}

impl<B: Backend> SimpleOptimizer<B> for AdamAtan2 {
    type State<const D: usize> = AdamAtan2State<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let c = &self.config;
        let (time, m, v) = match state {
            Some(s) => (s.time + 1, s.m, s.v),
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let bc1 = 1.0 - c.beta1.powi(time as i32);
        let bc2 = 1.0 - c.beta2.powi(time as i32);
        let param = param * (1.0 - lr * c.weight_decay);
        // torch.lerp(m, g, w) = m + w * (g - m) for w < 0.5
        let m = m.clone() + (grad.clone() - m) * (1.0 - c.beta1);
        let v = v.clone() + (grad.clone() * grad - v) * (1.0 - c.beta2);
        let denom = v.clone().sqrt() / bc2.sqrt();
        // atan2(0, 0) is 0 in PyTorch and on the CPU but undefined in WGSL (wgpu
        // gives 3*pi/4): a weight that never had a gradient must not move.
        let still = m
            .clone()
            .equal_elem(0.0)
            .bool_and(denom.clone().equal_elem(0.0));
        let step = m.clone().atan2(denom).mask_fill(still, 0.0);
        let param = param - step * (lr / bc1);
        (param, Some(AdamAtan2State { time, m, v }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        AdamAtan2State {
            time: state.time,
            m: state.m.to_device(device),
            v: state.v.to_device(device),
        }
    }
}
