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

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
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
            let loss = (fused::attention(q.clone(), k.clone(), v.clone()) * weights).sum();
            let forward = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let grads = loss.backward();
            // Reading one value of each gradient waits for all of them.
            let read = |x: &Tensor<B, 4>| x.grad(&grads).map(|g| g.sum().into_scalar());
            let _ = (read(&q), read(&k), read(&v));
            let backward = start.elapsed().as_secs_f64();
            // The same call without autodiff (evaluation, TRM's first T-1 cycles).
            let plain = |x: &Tensor<B, 4>| Tensor::<B, 4>::from_data(x.to_data(), &host);
            let (q, k, v) = (plain(&q), plain(&k), plain(&v));
            let start = Instant::now();
            let _ = fused::attention(q, k, v).sum().into_scalar();
            let no_grad = start.elapsed().as_secs_f64();
            println!(
                "repetition {rep}: forward {:.1} ms, backward {:.1} ms; without gradient {:.1} ms",
                forward * 1e3,
                backward * 1e3,
                no_grad * 1e3
            );
        }
    });
}

fn usage(what: &str) -> ! {
    eprintln!(
        "attention_grad: bad {what}; arguments: batch seq heads head_dim (positive integers)"
    );
    std::process::exit(2)
}
