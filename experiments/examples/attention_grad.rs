//! One attention call with gradient on the CPU backend, forward and backward timed
//! apart, then the same call without gradient: the part of a training step that the
//! attention configs (dis-compact, trm-arc) spend most on. recursa runs it as one
//! operation of burn's autodiff with its own backward
//! (`recursa_core::model::fused::attention`, tracked: the host kernel forward,
//! flash attention's backward); the reference calls PyTorch's fused attention. Last,
//! the same call as burn's graph of its ops (`softmax(q k^T / sqrt(d)) v`), whose
//! gradients the operation's are checked against.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p recursa --example attention_grad -- 4 916 8 32
//! ```
//!
//! Arguments: batch, sequence length, heads, head_dim (default dis-compact's batch
//! 4: `4 916 8 32`; trm-arc's batch 2 is `2 916 8 64`). Prints one line per
//! repetition; the first pays the first touch of its memory.

use std::time::Instant;

use burn::tensor::{activation, Distribution, Tensor};
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
    let device = Device::Flex(Default::default());
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
            };
            let (q, k, v) = (input(), input(), input());
            let weights =
                Tensor::<B, 3>::random([batch, seq, heads * d], Distribution::Default, &device);
            // Forward and backward of `sum(attention(q, k, v) * weights)`; the
            // gradients and the two times.
            let timed = |graph: bool| {
                let tracked = |x: &Tensor<B, 4>| x.clone().require_grad();
                let (q, k, v) = (tracked(&q), tracked(&k), tracked(&v));
                let start = Instant::now();
                let out = match graph {
                    false => fused::attention(q.clone(), k.clone(), v.clone()),
                    true => burns_graph(q.clone(), k.clone(), v.clone()),
                };
                let loss = (out * weights.clone()).sum();
                let forward = start.elapsed().as_secs_f64();
                let start = Instant::now();
                let grads = loss.backward();
                let grad = |x: &Tensor<B, 4>| x.grad(&grads).expect("tracked");
                let grads = [grad(&q), grad(&k), grad(&v)];
                // Reading one value of each gradient waits for all of them.
                for g in &grads {
                    let _ = g.clone().sum().into_scalar();
                }
                (grads, forward, start.elapsed().as_secs_f64())
            };
            let (ours, forward, backward) = timed(false);
            // The same call without gradient (evaluation, TRM's first T-1 cycles).
            let start = Instant::now();
            let _ = fused::attention(q.clone(), k.clone(), v.clone())
                .sum()
                .into_scalar();
            let no_grad = start.elapsed().as_secs_f64();
            let (graphs, graph_forward, graph_backward) = timed(true);
            // Largest difference from the graph's gradients, relative to their largest value.
            let mut worst = 0.0f32;
            for (ours, graph) in ours.into_iter().zip(graphs) {
                let scale = graph.clone().abs().max().into_scalar();
                let difference = (graph - ours).abs().max().into_scalar();
                worst = worst.max(difference / scale.max(f32::MIN_POSITIVE));
            }
            println!(
                "repetition {rep}: forward {:.1} ms, backward {:.1} ms; without gradient {:.1} ms; \
                 burn's graph: forward {:.1} ms, backward {:.1} ms (gradients within {worst:.1e})",
                forward * 1e3,
                backward * 1e3,
                no_grad * 1e3,
                graph_forward * 1e3,
                graph_backward * 1e3,
            );
        }
    });
}

/// `softmax(q k^T / sqrt(d)) v` per head in burn's ops, under its autodiff.
///
/// # Shapes
/// `q, k, v: [batch, seq, heads, d]` -> `[batch, seq, heads * d]`
fn burns_graph(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, seq, heads, d] = q.dims();
    let heads_first = |x: Tensor<B, 4>| x.swap_dims(1, 2);
    let scores = heads_first(q / (d as f64).sqrt()).matmul(heads_first(k).swap_dims(2, 3));
    activation::softmax(scores, 3)
        .matmul(heads_first(v))
        .swap_dims(1, 2)
        .reshape([batch, seq, heads * d])
}

fn usage(what: &str) -> ! {
    eprintln!(
        "attention_grad: bad {what}; arguments: batch seq heads head_dim (positive integers)"
    );
    std::process::exit(2)
}
