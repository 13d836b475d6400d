//! One attention call with gradient on the CPU backend, forward and backward timed
//! apart, then the same call without gradient: the part of a training step that the attention configs (dis-compact,
//! trm-arc) spend most on. recursa runs it as burn's graph over host constants
//! (`recursa_core::model::fused::attention` under autodiff); the reference calls
//! PyTorch's fused attention, whose backward works on tiles.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p recursa --example attention_grad -- 4 916 8 32
//! ```
//!
//! Arguments: batch, sequence length, heads, head_dim (default dis-compact's batch
//! 4: `4 916 8 32`; trm-arc's batch 2 is `2 916 8 64`). Prints one line per
//! repetition; the first pays the first touch of its memory.
//!
//! Third, the same call as one custom operation with its own backward, on burn's
//! static `Autodiff<Dispatch>` backend, where burn-autodiff's `Backward` trait lets
//! an operation bring its backward (recursa's `Dispatch` backend, whose autodiff is
//! a device, has no such hook): the forward is recursa's host kernel without
//! gradient, the backward `fused::attention_backward_host`. It measures what a
//! fused backward would give training, and checks its gradients against the
//! graph's.

use std::time::Instant;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Distribution, Tensor, TensorData, TensorPrimitive};
use recursa_core::model::fused;
use recursa_core::train::pool::on_pool;
use recursa_core::{Device, B};

#[global_allocator]
static ALLOCATOR: recursa::alloc::Allocator = recursa::alloc::Allocator;

const REPETITIONS: usize = 6;

fn main() {
    // As `recursa`: freed pages kept, large zeroed buffers from zero pages, 8 MiB
    // pool stacks.
    recursa::prepare_process();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| usage(&a)))
        .collect();
    let [batch, seq, heads, d] = match args[..] {
        [] => [4, 916, 8, 32],
        [b, s, h, d] if b * s * h * d > 0 => [b, s, h, d],
        [_, _, _, _] => usage("shape (a size of 0)"),
        _ => usage("argument count"),
    };
    let host = Device::Flex(Default::default());
    let device = Device::autodiff(host.clone());
    // As `recursa`: the call runs on a pool thread, the other threads spin.
    println!("attention with gradient, q, k, v: [{batch}, {seq}, {heads}, {d}]");
    on_pool(|| {
        for rep in 0..REPETITIONS {
            let input = || {
                Tensor::<B, 4>::random(
                    [batch, seq, heads, d],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
                .require_grad()
            };
            let (q, k, v) = (input(), input(), input());
            let weights =
                Tensor::<B, 3>::random([batch, seq, heads * d], Distribution::Default, &device);
            let start = Instant::now();
            let loss = (fused::attention(q.clone(), k.clone(), v.clone()) * weights.clone()).sum();
            let forward = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let grads = loss.backward();
            // Reading one value of each gradient waits for all of them.
            let read = |x: &Tensor<B, 4>| x.grad(&grads).map(|g| g.sum().into_scalar());
            let _ = (read(&q), read(&k), read(&v));
            let backward = start.elapsed().as_secs_f64();
            // The same call without autodiff (evaluation, TRM's first T-1 cycles).
            let plain = |x: &Tensor<B, 4>| Tensor::<B, 4>::from_data(x.to_data(), &host);
            let (hq, hk, hv) = (plain(&q), plain(&k), plain(&v));
            let start = Instant::now();
            let _ = fused::attention(hq, hk, hv).sum().into_scalar();
            let no_grad = start.elapsed().as_secs_f64();
            // The same call with its own backward, on `Autodiff<Dispatch>`.
            let custom = |x: &Tensor<B, 4>| {
                Tensor::<Static, 4>::from_data(x.to_data(), &host).require_grad()
            };
            let (cq, ck, cv) = (custom(&q), custom(&k), custom(&v));
            let cw = Tensor::<Static, 3>::from_data(weights.to_data(), &host);
            let start = Instant::now();
            let loss = (host_attention(cq.clone(), ck.clone(), cv.clone()) * cw).sum();
            let custom_forward = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let custom_grads = loss.backward();
            let read = |x: &Tensor<Static, 4>| x.grad(&custom_grads).map(|g| g.sum().into_scalar());
            let _ = (read(&cq), read(&ck), read(&cv));
            let custom_backward = start.elapsed().as_secs_f64();
            // Largest difference from the graph's gradients, relative to their largest value.
            let mut worst = 0.0f32;
            for (graph, own) in [(&q, &cq), (&k, &ck), (&v, &cv)] {
                let (graph, own) = (graph.grad(&grads), own.grad(&custom_grads));
                if let (Some(graph), Some(own)) = (graph, own) {
                    let scale = graph
                        .clone()
                        .abs()
                        .max()
                        .into_scalar()
                        .max(f32::MIN_POSITIVE);
                    worst = worst.max((graph - own).abs().max().into_scalar() / scale);
                }
            }
            println!(
                "repetition {rep}: forward {:.1} ms, backward {:.1} ms; without gradient {:.1} ms; \
                 custom backward: forward {:.1} ms, backward {:.1} ms (gradients within {worst:.1e} of the graph's)",
                forward * 1e3,
                backward * 1e3,
                no_grad * 1e3,
                custom_forward * 1e3,
                custom_backward * 1e3,
            );
        }
    });
}

/// burn's static autodiff over recursa's backend: operations may bring a backward.
type Static = Autodiff<B>;

/// Attention's core as one operation of `Autodiff<Dispatch>`: the value from the
/// host kernel without gradient, the gradients from [`HostAttentionBackward`].
///
/// # Shapes
/// `q, k, v: [batch, seq, heads, d]` (f32, host) -> `[batch, seq, heads * d]`
fn host_attention(
    q: Tensor<Static, 4>,
    k: Tensor<Static, 4>,
    v: Tensor<Static, 4>,
) -> Tensor<Static, 3> {
    let shape = q.dims();
    let (q, k, v) = (primitive(q), primitive(k), primitive(v));
    let plain = |x: &FloatTensor<Static>| {
        Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x.primitive.clone()))
    };
    let out = fused::attention(plain(&q), plain(&k), plain(&v))
        .into_primitive()
        .tensor();
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let out = match HostAttentionBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((q.primitive, k.primitive, v.primitive, shape), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

fn primitive(x: Tensor<Static, 4>) -> FloatTensor<Static> {
    x.into_primitive().tensor()
}

/// The backward of [`host_attention`]: `fused::attention_backward_host` on the
/// values of q (scaled), k, v and the output's gradient.
#[derive(Debug)]
struct HostAttentionBackward;

impl Backward<B, 3> for HostAttentionBackward {
    /// q, k, v and their shape `[batch, seq, heads, d]`.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (q, k, v, shape) = ops.state;
        let d = shape[3];
        let d_out = grads.consume::<B>(&ops.node);
        let values = |x: FloatTensor<B>| {
            Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x)).into_data()
        };
        let (q, k, v) = (values(q), values(k), values(v));
        let d_out = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(d_out)).into_data();
        let scale = 1.0 / (d as f32).sqrt();
        // unwrap: the example's tensors are f32.
        fn slice(x: &TensorData) -> &[f32] {
            x.as_slice::<f32>().unwrap()
        }
        let q_scaled: Vec<f32> = slice(&q).iter().map(|x| x * scale).collect();
        let (mut dq, dk, dv) =
            fused::attention_backward_host(shape, &q_scaled, slice(&k), slice(&v), slice(&d_out));
        dq.iter_mut().for_each(|x| *x *= scale);
        let device = Device::Flex(Default::default());
        let [pq, pk, pv] = ops.parents;
        for (parent, grad) in [(pq, dq), (pk, dk), (pv, dv)] {
            if let Some(node) = parent {
                let grad = Tensor::<B, 4>::from_data(TensorData::new(grad, shape), &device);
                grads.register::<B>(node.id, grad.into_primitive().tensor());
            }
        }
    }
}

fn usage(what: &str) -> ! {
    eprintln!(
        "attention_grad: bad {what}; arguments: batch seq heads head_dim (positive integers)"
    );
    std::process::exit(2)
}
