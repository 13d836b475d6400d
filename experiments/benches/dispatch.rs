//! What `burn::Dispatch` costs: the same network level run on `burn::NdArray`
//! directly (monomorphised) and through `burn::Dispatch` on its ndarray device.
//! Prints figures; run with `cargo bench -p recursa --bench dispatch`.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use recursa_core::model::{MlpKind, NetConfig, PosEncoding, ReasoningNet};

fn config(seq_len: usize, hidden: usize, heads: usize) -> NetConfig {
    NetConfig {
        seq_len,
        vocab_size: 12,
        num_puzzle_identifiers: 1,
        puzzle_emb_ndim: hidden,
        puzzle_emb_len: 16,
        hidden_size: hidden,
        num_heads: heads,
        expansion: 4.0,
        l_layers: 2,
        h_layers: 0,
        pos_encodings: PosEncoding::Rope,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        mlp_t: false,
        step_embeddings: 0,
        mlp_kind: MlpKind::Swiglu,
        conv_kernel: 2,
    }
}

/// Seconds per `L_level` call (2 blocks), the median of `reps` after one warm-up.
fn time_level<B: Backend>(c: &NetConfig, batch: usize, reps: usize, device: &B::Device) -> f64 {
    let net = ReasoningNet::<B>::new(c, 0, device).expect("a valid config");
    let shape = [batch, c.total_len(), c.hidden_size];
    let h = Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let x = Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let rope = net.rope(device);
    let mut times = Vec::new();
    for i in 0..=reps {
        let start = Instant::now();
        let out = net.l_level.forward(h.clone(), x.clone(), rope.as_ref());
        let _ = out.sum().into_scalar();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let cases = [
        (
            "TRM ARC level: batch 2 x 916 tokens, hidden 512",
            config(900, 512, 8),
            2,
            5,
        ),
        (
            "tiny level: batch 64 x 17 tokens, hidden 64",
            config(1, 64, 4),
            64,
            50,
        ),
    ];
    let dispatch_device = recursa_backends::device("cpu").expect("cpu is always there");
    let ndarray_device = burn::backend::ndarray::NdArrayDevice::default();
    for (name, c, batch, reps) in cases {
        let direct = time_level::<burn::backend::NdArray>(&c, batch, reps, &ndarray_device);
        let dispatch = time_level::<burn::Dispatch>(&c, batch, reps, &dispatch_device);
        println!(
            "{name}: NdArray {:.3} ms, Dispatch<NdArray> {:.3} ms per call ({:+.1}%)",
            direct * 1e3,
            dispatch * 1e3,
            100.0 * (dispatch / direct - 1.0)
        );
    }
}
