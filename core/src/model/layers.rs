//! The layers of the reasoning network, as the reference `models/layers.py` computes them.
//!
//! burn's `Linear` and `Embedding` are reused. Written here because burn lacks them
//! in the reference's form: weightless RMSNorm, rotate-half RoPE (burn's
//! `RotaryEncoding` rotates interleaved pairs), SwiGLU with fused gate|up weights,
//! attention with fused q|k|v weights, the `mlp_t` sequence mixer, and URM's
//! ConvSwiGLU (a SwiGLU with a short depthwise convolution over positions).

use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::{activation, backend::Backend, Tensor, TensorData};

use super::fused;
use super::init::InitRng;

/// A linear layer `y = x W^T` with the reference's truncated-normal LeCun init
/// (std 1/sqrt(d_in)). burn stores `W` as `[d_in, d_out]`; the reference as
/// `[d_out, d_in]`, which `weights` transposes on load and save.
pub fn casted_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    rng: &mut InitRng,
    device: &B::Device,
) -> Linear<B> {
    let weight = rng.trunc_normal([d_in, d_out], 1.0 / (d_in as f64).sqrt(), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// `x W (+ b)` over the last axis, computed as one 2-D GEMM on `[rows, d_in]`.
///
/// burn's `Linear` on a 3-D input is a batched matmul: one small GEMM per batch
/// row (the weight packed again for each), and a weight gradient built as a
/// `[batch, d_in, d_out]` stack that is summed afterwards (memory and time). The
/// reference's `F.linear` flattens the leading axes; so does this.
///
/// # Shapes
/// `x: [..., d_in]` -> `[..., d_out]`
pub fn linear_rows<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let cols = layer.weight.dims()[1];
    let [y] = matmul_column_blocks(x, &layer.weight, [cols]);
    match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze(),
        None => y,
    }
}

/// `x W` over the last axis as one 2-D GEMM (see [`linear_rows`]).
///
/// # Shapes
/// `x: [..., k]`, `w: [k, n]` -> `[..., n]`
pub fn matmul_rows<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>) -> Tensor<B, D> {
    matmul_rows_of(x, w, None)
}

/// `x W[:, first_col..first_col + cols]` over the last axis, W a weight parameter
/// (a column block of a fused projection, or all of it), in burn's ops: the path of
/// [`matmul_column_blocks`] off the host, and for shapes its host kernels do not take.
///
/// # Shapes
/// `x: [..., k]`, `weight: [k, >= first_col + cols]` -> `[..., cols]`
fn matmul_columns<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Param<Tensor<B, 2>>,
    first_col: usize,
    cols: usize,
) -> Tensor<B, D> {
    let key = fused::WeightKey {
        param: weight.id,
        first_col,
        cols,
    };
    let w = weight.val();
    // All of it as it is: a narrow would add a slice to the graph under autodiff.
    let w = match first_col == 0 && cols == w.dims()[1] {
        true => w,
        false => w.narrow(1, first_col, cols),
    };
    matmul_rows_of(x, w, Some(key))
}

/// `x W` for N consecutive column blocks of a weight parameter W, `widths` wide
/// (`[d_out]` for a plain linear layer): on the host x and W are read once for all
/// N, and W's host copy is made once inside a `fused::FrozenWeights` span; tracked
/// on the host, each block is one operation with its own backward
/// (`fused::matmul_column_blocks`); elsewhere one burn matmul per column view.
///
/// # Shapes
/// `x: [..., k]`, `weight: [k, sum(widths)]` -> `[..., widths[i]]` each
pub fn matmul_column_blocks<B: Backend, const D: usize, const N: usize>(
    x: Tensor<B, D>,
    weight: &Param<Tensor<B, 2>>,
    widths: [usize; N],
) -> [Tensor<B, D>; N] {
    let dims = x.dims();
    let [k, n] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let key = fused::WeightKey {
        param: weight.id,
        first_col: 0,
        cols: n,
    };
    let x = match fused::on_flex(&x) {
        true => {
            match fused::matmul_column_blocks(x.reshape([rows, k]), weight.val(), Some(key), widths)
            {
                Ok(blocks) => {
                    return blocks.map(|y| {
                        let mut dims = dims;
                        dims[D - 1] = y.dims()[1];
                        y.reshape(dims)
                    })
                }
                Err((x, _)) => x.reshape(dims),
            }
        }
        false => x,
    };
    // Off the host (or shapes the host kernels do not take): one GEMM per column view.
    let mut first_col = 0;
    widths.map(|cols| {
        let y = matmul_columns(x.clone(), weight, first_col, cols);
        first_col += cols;
        y
    })
}

fn matmul_rows_of<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 2>,
    key: Option<fused::WeightKey>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let [k, n] = w.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    dims[D - 1] = n;
    match fused::matmul(x.reshape([rows, k]), w, key) {
        Ok(y) => y.reshape(dims),
        Err((x, w)) => x.matmul(w).reshape(dims),
    }
}

/// An embedding table `[n, d]` with truncated-normal init of std `std`.
pub fn casted_embedding<B: Backend>(
    n: usize,
    d: usize,
    std: f64,
    rng: &mut InitRng,
    device: &B::Device,
) -> Embedding<B> {
    Embedding {
        weight: Param::from_tensor(rng.trunc_normal([n, d], std, device)),
    }
}

/// The SwiGLU intermediate size: `round(expansion * h * 2/3)` rounded up to a multiple of 256.
pub fn swiglu_intermediate(hidden: usize, expansion: f64) -> usize {
    // Python's round() is round-half-to-even.
    let x = expansion * hidden as f64 * 2.0 / 3.0;
    let r = x.round_ties_even() as usize;
    r.div_ceil(256) * 256
}

/// SwiGLU: `down(silu(gate) * up)`, with gate and up in one fused projection (gate rows
/// first). With `conv` it is URM's ConvSwiGLU (arXiv 2512.14693):
/// `down(silu(conv(silu(gate) * up)))`.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    pub gate_up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    pub conv: Option<ShortConv<B>>,
}

/// URM's short depthwise convolution over positions, per channel c:
/// `out[t, c] = bias[c] + sum_j weight[c, j] * h[t + j - k/2, c]` (zero outside), i.e.
/// PyTorch's `Conv1d(C, C, k, groups=C, padding=k//2)` cut to the first `seq` outputs.
/// With URM's k = 2 a position sees itself and the one before it.
#[derive(Module, Debug)]
pub struct ShortConv<B: Backend> {
    /// `[channels, k]` (PyTorch: `[channels, 1, k]`)
    pub weight: Param<Tensor<B, 2>>,
    /// `[channels]`
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> ShortConv<B> {
    /// PyTorch's default init: both uniform in ±1/sqrt(k) (fan-in k per channel).
    pub fn new(channels: usize, k: usize, rng: &mut InitRng, device: &B::Device) -> Self {
        let bound = 1.0 / (k as f64).sqrt();
        ShortConv {
            weight: Param::from_tensor(rng.uniform([channels, k], bound, device)),
            bias: Param::from_tensor(rng.uniform([channels], bound, device)),
        }
    }

    /// # Shapes
    /// `h: [batch, seq, channels]` -> same
    pub fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, channels] = h.dims();
        let weight = self.weight.val();
        let k = weight.dims()[1];
        let mut out = self
            .bias
            .val()
            .reshape([1, 1, channels])
            .expand([batch, seq, channels]);
        for j in 0..k {
            let w = weight.clone().narrow(1, j, 1).reshape([1, 1, channels]);
            out = out + shifted(h.clone(), j as isize - (k / 2) as isize) * w;
        }
        out
    }
}

/// `h[t + offset]` at every position t, zero where that falls outside the sequence.
fn shifted<B: Backend>(h: Tensor<B, 3>, offset: isize) -> Tensor<B, 3> {
    let [batch, seq, channels] = h.dims();
    let o = offset.unsigned_abs().min(seq);
    if o == 0 {
        return h;
    }
    let zeros = Tensor::zeros([batch, o, channels], &h.device());
    if o == seq {
        // Every source position is outside the sequence.
        return zeros;
    }
    if offset < 0 {
        Tensor::cat(vec![zeros, h.narrow(1, 0, seq - o)], 1)
    } else {
        Tensor::cat(vec![h.narrow(1, o, seq - o), zeros], 1)
    }
}

impl<B: Backend> SwiGlu<B> {
    /// A SwiGLU over a feature axis of size `hidden`.
    pub fn new(hidden: usize, expansion: f64, rng: &mut InitRng, device: &B::Device) -> Self {
        let inter = swiglu_intermediate(hidden, expansion);
        SwiGlu {
            gate_up_proj: casted_linear(hidden, 2 * inter, false, rng, device),
            down_proj: casted_linear(inter, hidden, false, rng, device),
            conv: None,
        }
    }

    /// URM's ConvSwiGLU: a SwiGLU whose gated product goes through a [`ShortConv`] of
    /// width `k` and a SiLU before `down`.
    pub fn with_conv(
        hidden: usize,
        expansion: f64,
        k: usize,
        rng: &mut InitRng,
        device: &B::Device,
    ) -> Self {
        let mut m = Self::new(hidden, expansion, rng, device);
        let inter = swiglu_intermediate(hidden, expansion);
        m.conv = Some(ShortConv::new(inter, k, rng, device));
        m
    }

    /// # Shapes
    /// `x: [batch, seq, hidden]` -> `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        // gate = x W_gate and up = x W_up as two GEMMs on column views of the fused
        // weight, rather than one GEMM cut in two: the halves of a cut are strided
        // views, and silu on a strided view runs element by element on the CPU
        // (a third of a step in the profile, docs/performance.md).
        let inter = self.gate_up_proj.weight.dims()[1] / 2;
        let [gate, up] = matmul_column_blocks(x, &self.gate_up_proj.weight, [inter; 2]);
        let h = fused::silu_mul(gate, up);
        match &self.conv {
            None => linear_rows(&self.down_proj, h),
            Some(conv) => linear_rows(&self.down_proj, activation::silu(conv.forward(h))),
        }
    }
}

/// Rotary position tables for rotate-half RoPE, `[positions, head_dim]` each.
#[derive(Clone, Debug)]
pub struct Rope<B: Backend> {
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
    /// `rotate_half` as a `[head_dim, head_dim]` matrix: `rotate_half(x) = x @ rotate`.
    pub rotate: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// `inv_freq = 1/theta^(2i/head_dim)`, `freqs = outer(pos, inv_freq)`,
    /// `emb = cat(freqs, freqs)`; the tables are `cos(emb)` and `sin(emb)`.
    /// Computed in f64 and rounded to f32 (the reference computes in f32; the
    /// difference is at most an ulp of each entry). The host tables are computed
    /// once per shape and kept: the network asks for them at every supervision step.
    pub fn new(positions: usize, head_dim: usize, theta: f64, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let tables = rope_tables(positions, head_dim, theta);
        let (cos, sin) = (&tables.0, &tables.1);
        // rotate_half as a matrix: column j < half takes -x[j + half], column
        // j >= half takes x[j - half].
        let mut rotate = vec![0.0f32; head_dim * head_dim];
        for j in 0..half {
            rotate[(j + half) * head_dim + j] = -1.0;
            rotate[j * head_dim + j + half] = 1.0;
        }
        let shape = [positions, head_dim];
        Rope {
            cos: Tensor::from_data(TensorData::new(cos.to_vec(), shape), device),
            sin: Tensor::from_data(TensorData::new(sin.to_vec(), shape), device),
            rotate: Tensor::from_data(TensorData::new(rotate, [head_dim, head_dim]), device),
        }
    }

    /// `x*cos + rotate_half(x)*sin`, with `rotate_half(x) = cat(-x2, x1)`.
    ///
    /// # Shapes
    /// `x: [batch, seq, heads, head_dim]` -> same
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let seq = x.dims()[1];
        let (cos, sin) = (self.cos.clone(), self.sin.clone());
        match fused::rope(x, &cos.narrow(0, 0, seq), &sin.narrow(0, 0, seq)) {
            Ok(rotated) => rotated,
            Err(x) => self.apply_with_burn(x),
        }
    }

    /// [`Self::apply`] in burn's ops (autodiff, GPUs). `rotate_half(x)` is one
    /// small GEMM with the signed permutation `rotate` (exact: one ±x and zeros per
    /// output), so x is never cut into strided halves, forward or backward.
    ///
    /// The tables are repeated over heads and the products taken on `[batch, seq *
    /// heads * head_dim]` rows: a table then is one row shared by every batch row,
    /// which burn-flex multiplies with SIMD, forward and backward (a `[seq, 1,
    /// head_dim]` table broadcast over heads goes element by element).
    pub fn apply_with_burn(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, seq, heads, d] = x.dims();
        let rows = |t: Tensor<B, 4>| t.reshape([batch, seq * heads * d]);
        let table = |t: &Tensor<B, 2>| {
            t.clone()
                .narrow(0, 0, seq)
                .unsqueeze_dim::<3>(1)
                .repeat_dim(1, heads)
                .reshape([1, seq * heads * d])
        };
        let rotated = matmul_rows(x.clone(), self.rotate.clone());
        let out = rows(x) * table(&self.cos) + rows(rotated) * table(&self.sin);
        out.reshape([batch, seq, heads, d])
    }
}

/// RoPE's `cos` and `sin` tables, `[positions, head_dim]` row-major, computed once per
/// (positions, head_dim, theta) in the process.
fn rope_tables(positions: usize, head_dim: usize, theta: f64) -> Arc<(Vec<f32>, Vec<f32>)> {
    /// (positions, head_dim, theta's bits)
    type Key = (usize, usize, u64);
    type Tables = Arc<(Vec<f32>, Vec<f32>)>;
    static CACHE: Mutex<Vec<(Key, Tables)>> = Mutex::new(Vec::new());
    let key = (positions, head_dim, theta.to_bits());
    // A poisoned lock only means another thread panicked mid-insert; the list is
    // still a list of finished tables.
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, tables)) = cache.iter().find(|(k, _)| *k == key) {
        return tables.clone();
    }
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions * head_dim);
    let mut sin = Vec::with_capacity(positions * head_dim);
    for p in 0..positions {
        for j in 0..head_dim {
            let i = j % half;
            let inv_freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let angle = p as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let tables = Arc::new((cos, sin));
    cache.push((key, tables.clone()));
    tables
}

/// Non-causal multi-head self-attention with a fused q|k|v projection.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub num_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    pub fn new(hidden: usize, num_heads: usize, rng: &mut InitRng, device: &B::Device) -> Self {
        let head_dim = hidden / num_heads;
        Attention {
            qkv_proj: casted_linear(hidden, 3 * num_heads * head_dim, false, rng, device),
            o_proj: casted_linear(num_heads * head_dim, hidden, false, rng, device),
            num_heads,
            head_dim,
        }
    }

    /// `o_proj(softmax(q k^T / sqrt(head_dim)) v)`, RoPE on q and k when given.
    ///
    /// # Shapes
    /// `x: [batch, seq, hidden]` -> `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (h, d) = (self.num_heads, self.head_dim);
        // q, k and v as three GEMMs on column views of the fused weight (same
        // weights, same names): each comes out contiguous, where cutting one q|k|v
        // product would leave strided views for RoPE and for backward.
        let [q, k, v] = matmul_column_blocks(x, &self.qkv_proj.weight, [h * d; 3]);
        let heads = |t: Tensor<B, 3>| t.reshape([batch, seq, h, d]);
        let (mut q, mut k, v) = (heads(q), heads(k), heads(v));
        if let Some(rope) = rope {
            q = rope.apply(q);
            k = rope.apply(k);
        }
        let out = fused::attention(q, k, v);
        linear_rows(&self.o_proj, out)
    }
}

/// The token mixer of a block: attention over positions, or (`mlp_t`) a SwiGLU
/// applied across the sequence axis.
// One per block and made of parameter handles: the size difference is a few hundred
// bytes of handles, not of weights.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Mixer<B: Backend> {
    SelfAttn(Attention<B>),
    MlpT(SwiGlu<B>),
}

/// One post-norm block: `h = rms(h + mix(h)); h = rms(h + mlp(h))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub mixer: Mixer<B>,
    pub mlp: SwiGlu<B>,
    pub eps: f64,
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// `h: [batch, seq, hidden]` -> same
    pub fn forward(&self, h: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        let h = match &self.mixer {
            Mixer::SelfAttn(attn) => {
                let mixed = attn.forward(h.clone(), rope);
                fused::add_rms_norm(h, mixed, self.eps)
            }
            Mixer::MlpT(mlp_t) => {
                // SwiGLU over positions: transpose to [batch, hidden, seq], normalise over seq.
                let t = fused::transpose(h);
                let mixed = mlp_t.forward(t.clone());
                fused::transpose(fused::add_rms_norm(t, mixed, self.eps))
            }
        };
        let mlp = self.mlp.forward(h.clone());
        fused::add_rms_norm(h, mlp, self.eps)
    }
}

/// A stack of blocks with input injection: `net(h, inj) = blocks(h + inj)`.
/// TRM's single `L_level` is the network `net` of the paper.
#[derive(Module, Debug)]
pub struct Level<B: Backend> {
    pub layers: Vec<Block<B>>,
}

impl<B: Backend> Level<B> {
    /// # Shapes
    /// `h, injection: [batch, seq, hidden]` -> `[batch, seq, hidden]`
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        injection: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
    ) -> Tensor<B, 3> {
        let mut h = h + injection;
        for layer in &self.layers {
            h = layer.forward(h, rope);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, B};

    type Cpu = crate::B;

    #[test]
    fn the_short_convolution_sees_the_previous_position_and_itself() {
        let device = Default::default();
        let mut rng = InitRng::new(3);
        let conv = ShortConv::<Cpu>::new(3, 2, &mut rng, &device);
        let h = rng.trunc_normal::<Cpu, 3>([2, 5, 3], 1.0, &device);
        let out: Vec<f32> = conv.forward(h.clone()).into_data().to_vec().unwrap();
        let (w, b, h): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            conv.weight.val().into_data().to_vec().unwrap(),
            conv.bias.val().into_data().to_vec().unwrap(),
            h.into_data().to_vec().unwrap(),
        );
        // PyTorch Conv1d(3, 3, 2, groups=3, padding=1)[..., :5], written out.
        for (r, t, c) in
            (0..2).flat_map(|r| (0..5).flat_map(move |t| (0..3).map(move |c| (r, t, c))))
        {
            let at = |t: usize| h[(r * 5 + t) * 3 + c];
            let before = if t > 0 { w[c * 2] * at(t - 1) } else { 0.0 };
            let want = b[c] + before + w[c * 2 + 1] * at(t);
            let got = out[(r * 5 + t) * 3 + c];
            assert!(
                (got - want).abs() < 1e-6,
                "row {r} position {t} channel {c}: {got} vs {want}"
            );
        }
        // Odd widths are centred: k = 3 also sees the next position.
        let conv3 = ShortConv::<Cpu>::new(1, 3, &mut rng, &device);
        let ones = Tensor::<Cpu, 3>::ones([1, 4, 1], &device);
        let got: Vec<f32> = conv3.forward(ones).into_data().to_vec().unwrap();
        let w: Vec<f32> = conv3.weight.val().into_data().to_vec().unwrap();
        let b: f32 = conv3.bias.val().into_scalar();
        assert!((got[0] - (b + w[1] + w[2])).abs() < 1e-6);
        assert!((got[1] - (b + w[0] + w[1] + w[2])).abs() < 1e-6);
        assert!((got[3] - (b + w[0] + w[1])).abs() < 1e-6);
        // A kernel wider than the sequence: the taps that fall outside contribute zero.
        let wide = ShortConv::<Cpu>::new(1, 9, &mut rng, &device);
        let ones = Tensor::<Cpu, 3>::ones([1, 3, 1], &device);
        let got: Vec<f32> = wide.forward(ones).into_data().to_vec().unwrap();
        let w: Vec<f32> = wide.weight.val().into_data().to_vec().unwrap();
        let b: f32 = wide.bias.val().into_scalar();
        assert!((got[1] - (b + w[3] + w[4] + w[5])).abs() < 1e-6);
    }

    /// RoPE on a strided view of q|k|v, as attention calls it, against burn's ops.
    #[test]
    fn fused_rope_matches_burns_ops() {
        let device: Device = Default::default();
        let (batch, seq, heads, d) = (2, 7, 3, 8);
        let n = batch * seq * 3 * heads * d;
        let qkv: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let qkv =
            Tensor::<B, 4>::from_data(TensorData::new(qkv, [batch, seq, 3 * heads, d]), &device);
        let k = qkv.narrow(2, heads, heads);
        let table = Rope::<B>::new(seq, d, 10000.0, &device);
        let got = fused::rope(k.clone(), &table.cos, &table.sin)
            .unwrap_or_else(|_| panic!("f32 on the flex device takes the fused kernel"));
        let want = table.apply_with_burn(k);
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        let want: Vec<f32> = want.into_data().to_vec().unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6, "element {i}: {g} vs {w}");
        }
    }

    #[test]
    fn swiglu_sizes_match_the_reference() {
        assert_eq!(swiglu_intermediate(64, 4.0), 256);
        assert_eq!(swiglu_intermediate(512, 4.0), 1536);
        assert_eq!(swiglu_intermediate(97, 4.0), 512);
        assert_eq!(swiglu_intermediate(256, 4.0), 768);
    }
}
