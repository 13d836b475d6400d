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
use burn::tensor::{backend::AutodiffBackend, backend::Backend, DType, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::fused::on_host;

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

impl AdamAtan2 {
    /// [`SimpleOptimizer::step`] in burn's ops, on any backend: from the parameter,
    /// its gradient, m and v (with the bias corrections `[bc1, bc2]`), the new
    /// parameter, m and v.
    fn step_with_ops<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        [bc1, bc2]: [f64; 2],
        [param, grad, m, v]: [Tensor<B, D>; 4],
    ) -> [Tensor<B, D>; 3] {
        let c = &self.config;
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
        [param, m, v]
    }

    /// [`SimpleOptimizer::step`] for f32 tensors in host memory (the CPU backend):
    /// the same operations in the same order on each element, so the same bits, in
    /// one pass over the four tensors on every core. burn-flex runs each of the
    /// dozen ops of the general path as its own pass on one thread at these sizes.
    fn step_on_host<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        [bc1, bc2]: [f64; 2],
        [param, grad, m, v]: [Tensor<B, D>; 4],
    ) -> [Tensor<B, D>; 3] {
        let c = &self.config;
        // The scalars as burn-flex applies them: computed in f64, then cast.
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let (keep1, keep2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
        let root_bc2 = bc2.sqrt() as f32;
        let rate = (lr / bc1) as f32;
        let device = param.device();
        let (mut p, g, mut m, mut v) = (
            param.into_data(),
            grad.into_data(),
            m.into_data(),
            v.into_data(),
        );
        // unwrap: all four are f32 (checked by `on_host`) and of one shape.
        let (ps, gs) = (
            p.as_mut_slice::<f32>().unwrap(),
            g.as_slice::<f32>().unwrap(),
        );
        let (ms, vs) = (
            m.as_mut_slice::<f32>().unwrap(),
            v.as_mut_slice::<f32>().unwrap(),
        );
        const CHUNK: usize = 1 << 14;
        ps.par_chunks_mut(CHUNK)
            .zip(gs.par_chunks(CHUNK))
            .zip(ms.par_chunks_mut(CHUNK))
            .zip(vs.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    *m = *m + (g - *m) * keep1;
                    *v = *v + (g * g - *v) * keep2;
                    let denom = v.sqrt() / root_bc2;
                    let step = match *m == 0.0 && denom == 0.0 {
                        true => 0.0,
                        false => m.atan2(denom),
                    };
                    *p = *p * decay - step * rate;
                }
            });
        let tensor = |data: TensorData| Tensor::from_data(data, (&device, DType::F32));
        [tensor(p), tensor(m), tensor(v)]
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
        let on_cpu = [&param, &grad, &m, &v].iter().all(|t| on_host(*t))
            && grad.dims() == param.dims()
            && m.dims() == param.dims()
            && v.dims() == param.dims();
        let tensors = [param, grad, m, v];
        let [param, m, v] = match on_cpu {
            true => self.step_on_host(lr, [bc1, bc2], tensors),
            false => self.step_with_ops(lr, [bc1, bc2], tensors),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, B};

    /// The host pass gives the bits of burn's ops, zeros (a weight that never had a
    /// gradient) and a NaN included, over several steps.
    #[test]
    fn host_step_gives_the_bits_of_burns_ops() {
        let device = Device::Flex(Default::default());
        let n = 3 * (1 << 14) + 5;
        let wave = |seed: f32, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (i as f32 * 0.618 + seed).sin() * scale)
                .collect()
        };
        let tensor = |mut x: Vec<f32>, zeros: bool| {
            if zeros {
                x[..100].fill(0.0);
                x[100] = f32::NAN;
            }
            Tensor::<B, 1>::from_data(TensorData::new(x, [n]), &device)
        };
        let optimizer = AdamAtan2Config::default().rule();
        let (mut p_host, mut p_ops) =
            (tensor(wave(0.1, 1.0), false), tensor(wave(0.1, 1.0), false));
        let (mut m, mut v) = (tensor(vec![0.0; n], false), tensor(vec![0.0; n], false));
        let (mut m_ops, mut v_ops) = (m.clone(), v.clone());
        for t in 1..=3 {
            let grad = tensor(wave(t as f32, 1e-3), true);
            let bc = [1.0 - 0.9f64.powi(t), 1.0 - 0.95f64.powi(t)];
            let host = optimizer.step_on_host(1e-3, bc, [p_host, grad.clone(), m, v]);
            let ops = optimizer.step_with_ops(1e-3, bc, [p_ops, grad, m_ops, v_ops]);
            let bits = |x: &Tensor<B, 1>| {
                x.to_data()
                    .to_vec::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(f32::to_bits)
                    .collect::<Vec<_>>()
            };
            for (name, (h, o)) in ["parameter", "m", "v"].iter().zip(host.iter().zip(&ops)) {
                assert_eq!(bits(h), bits(o), "{name}, step {t}");
            }
            [p_host, m, v] = host;
            [p_ops, m_ops, v_ops] = ops;
        }
    }
}
