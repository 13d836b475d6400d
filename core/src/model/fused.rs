//! Fused CPU kernels for the network's elementwise work.
//!
//! burn-flex runs every elementwise op as its own pass over memory, on one thread,
//! with a scalar `exp`, and burn's autodiff keeps the input of `exp` and `sigmoid`
//! and evaluates them again in backward. SwiGLU's `silu(gate) * up`, the post-norm
//! `rms_norm(x + y)` and attention's softmax were most of a step's time outside the
//! GEMMs that way (docs/performance.md). Here each is one pass over rows on every
//! core, with an exp the compiler vectorises:
//!
//! * on untracked tensors (evaluation, TRM's first T-1 cycles, HRM's early
//!   updates), f32 on the flex device, whose memory is the host's: `into_data` and
//!   `from_data` move the buffer, and the result is written into an input's buffer;
//! * on tracked tensors of the flex device, the linear layers, SwiGLU's product,
//!   the post-norm, RoPE and attention: each one operation of burn's autodiff with
//!   its own backward (`HostMatmul`, `SiluMul`, `AddRmsNorm`, `HostRope`,
//!   `HostAttention`: flash attention's backward), which recursa's backend type
//!   allows ([`crate::B`]).
//!
//! Everywhere else (GPUs, ndarray, other float types) the same functions run burn's
//! ops. burn 0.21's CPU backend has no hook to add a kernel, hence these.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::module::ParamId;

use burn::tensor::module;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{
    activation, backend::Backend, Bool, DType, Int, Tensor, TensorData, TensorPrimitive,
};
use rayon::prelude::*;

use crate::Device;

/// RMSNorm without a gain, `x / sqrt(mean(x^2, -1) + eps)` in f32, in burn's ops,
/// written as the reference's `x * rsqrt(...)`: the product's backward is cheaper
/// than a quotient's. The reciprocal is a true division on the `[..., 1]` column
/// (ndarray's SIMD `recip` is an approximation, ~1e-4 relative).
///
/// # Shapes
/// `x: [..., d]` -> `[..., d]`
pub fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let variance = x.clone().square().mean_dim(D - 1);
    let root = (variance + eps).sqrt();
    x * (root.ones_like() / root)
}

/// Elements per parallel task: large enough that scheduling costs nothing.
const CHUNK: usize = 1 << 14;

/// A buffer of `len` values to be written in chunks on every core, each chunk
/// through [`zeroed`]: the zeroing then happens in cache, on the core that writes
/// the chunk next, and not in a memset over the whole buffer on one thread first.
fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit values need no initialisation; the capacity is len.
    unsafe { v.set_len(len) };
    v
}

/// `chunk` zeroed, as values.
fn zeroed(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for v in chunk.iter_mut() {
        v.write(0.0);
    }
    // SAFETY: every value was just written, and MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The values of a buffer from [`uninit`].
///
/// # Safety
/// Every value was written (each chunk went through [`zeroed`]).
unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: the same allocation, length and capacity, of a type with f32's
    // layout, all values initialised (the caller's contract); `v` is not dropped.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// `silu(gate) * up`, SwiGLU's gated product.
///
/// # Shapes
/// `gate, up: [..., d]` -> same
pub fn silu_mul<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    if gate.dims() == up.dims() && on_autodiff_host(&gate) && on_autodiff_host(&up) {
        return SiluMul::<D>::apply(gate, up);
    }
    if !on_host(&gate) || !on_host(&up) || gate.dims() != up.dims() {
        return activation::silu(gate) * up;
    }
    let device = gate.device();
    let (mut g, u) = (gate.into_data(), up.into_data());
    // unwrap: both are f32 (checked by `on_host`), so the casts cannot fail.
    let gs = g.as_mut_slice::<f32>().unwrap();
    let us = u.as_slice::<f32>().unwrap();
    gs.par_chunks_mut(CHUNK)
        .zip(us.par_chunks(CHUNK))
        .for_each(|(g, u)| simd::silu_mul(g, u));
    Tensor::from_data(g, (&device, DType::F32))
}

/// [`silu_mul`] on tracked CPU tensors, as one operation of burn's autodiff with
/// its own backward. burn evaluates `sigmoid` on one thread with a scalar exp,
/// keeps its input and evaluates it again in backward, and its elementwise ops
/// under 4M elements run on one thread. Here the forward is one fused pass on
/// every core (the value, bit for bit the untracked kernel's), and the backward
/// another: `dg = dh * u s (1 + g (1 - s))`, `du = dh * silu(g)` with
/// `s = sigmoid(g)`. It keeps the values of g and u.
#[derive(Debug)]
struct SiluMul<const D: usize>;

impl<const D: usize> SiluMul<D> {
    /// `gate, up: [..., d]` (tracked f32 on the flex device, the same shape) -> same
    fn apply<B: Backend>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
        record::<_, _, _, 2, D, D>(SiluMul::<D>, [tracked(gate), tracked(up)], |[g, u]| {
            let shape = g.shape.clone();
            // unwrap: f32 (checked by `place`).
            let (gs, us) = (g.as_slice::<f32>().unwrap(), u.as_slice::<f32>().unwrap());
            let mut h = uninit(gs.len());
            h.par_chunks_mut(CHUNK)
                .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
                .for_each(|(h, (g, u))| simd::silu_mul_to(g, u, zeroed(h)));
            // SAFETY: the chunks zeroed (and then wrote) every value.
            let h = TensorData::new(unsafe { assume_init(h) }, shape);
            (move |_: &_| (g, u), h)
        })
    }
}

impl<const D: usize> Backward<burn::Dispatch, 2> for SiluMul<D> {
    /// The values of g and u.
    type State = (TensorData, TensorData);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (g, u) = ops.state;
        let shape = g.shape.clone();
        let mut dg = inner_values::<D>(grads.consume::<burn::Dispatch>(&ops.node));
        let dgs = dg.as_mut_slice::<f32>().unwrap();
        let mut du = uninit(dgs.len());
        // unwrap: f32, as in the forward.
        let (gs, us) = (g.as_slice::<f32>().unwrap(), u.as_slice::<f32>().unwrap());
        dgs.par_chunks_mut(CHUNK)
            .zip(du.par_chunks_mut(CHUNK))
            .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
            .for_each(|((dh_to_dg, du), (g, u))| {
                simd::silu_mul_backward(g, u, dh_to_dg, zeroed(du))
            });
        // SAFETY: the chunks zeroed (and then wrote) every value.
        let du = unsafe { assume_init(du) };
        let [pg, pu] = ops.parents;
        for (parent, grad) in [(pg, dg), (pu, TensorData::new(du, shape))] {
            if let Some(node) = parent {
                grads.register::<burn::Dispatch>(node.id, inner_tensor::<D>(grad));
            }
        }
    }
}

/// `rms_norm(x + y)` over the last axis: the residual add and the post-norm of a block.
///
/// # Shapes
/// `x, y: [..., d]` -> same
pub fn add_rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    y: Tensor<B, D>,
    eps: f64,
) -> Tensor<B, D> {
    if x.dims() == y.dims() && on_autodiff_host(&x) && on_autodiff_host(&y) {
        return AddRmsNorm::<D>::apply(x, y, eps);
    }
    let d = x.dims()[D - 1];
    if !on_host(&x) || !on_host(&y) || x.dims() != y.dims() || d == 0 {
        return rms_norm(x + y, eps);
    }
    let device = x.device();
    let (mut a, b) = (x.into_data(), y.into_data());
    // unwrap: both are f32 (checked by `on_host`).
    let xs = a.as_mut_slice::<f32>().unwrap();
    let ys = b.as_slice::<f32>().unwrap();
    let mut factors = vec![0.0f32; xs.len() / d];
    for_each_row(xs, ys, &mut factors, d, |x, y, r| {
        *r = simd::add_rms_norm_row(x, y, eps as f32)
    });
    Tensor::from_data(a, (&device, DType::F32))
}

/// `f(a's row, b's row, the row's factor)` for each row of `d` values of a and b
/// (of one length) and its entry of `factors` (one per row), in tasks of about
/// [`CHUNK`] values on every core. Nothing runs for `d = 0`.
fn for_each_row(
    a: &mut [f32],
    b: &[f32],
    factors: &mut [f32],
    d: usize,
    f: impl Fn(&mut [f32], &[f32], &mut f32) + Sync,
) {
    let Some(rows) = CHUNK.checked_div(d) else {
        return;
    };
    let rows = rows.max(1);
    a.par_chunks_mut(rows * d)
        .zip(b.par_chunks(rows * d).zip(factors.par_chunks_mut(rows)))
        .for_each(|(a, (b, factors))| {
            let rows = a.chunks_exact_mut(d).zip(b.chunks_exact(d));
            for ((a, b), factor) in rows.zip(factors) {
                f(a, b, factor);
            }
        });
}

/// [`add_rms_norm`] on tracked CPU tensors, as one operation of burn's autodiff
/// with its own backward. burn's graph of `rms_norm(x + y)` is eight ops, each a
/// pass on one thread, with as many in backward, and keeps four `[..., d]` tensors.
/// Here the forward is the untracked kernel (the same bits), and it keeps the
/// output (shared with the graph, not copied) and each row's
/// `r = 1 / sqrt(mean((x + y)^2) + eps)`; the backward is one pass,
/// `dh = r (dy - out mean(dy * out))`, the gradient of both x and y.
#[derive(Debug)]
struct AddRmsNorm<const D: usize>;

impl<const D: usize> AddRmsNorm<D> {
    /// `x, y: [..., d]` (tracked f32 on the flex device, the same shape) -> same
    fn apply<B: Backend>(x: Tensor<B, D>, y: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
        let d = x.dims()[D - 1];
        record::<_, _, _, 2, D, D>(AddRmsNorm::<D>, [tracked(x), tracked(y)], |[x, mut y]| {
            // unwrap: f32 (checked by `place`).
            let (xs, ys) = (
                x.as_slice::<f32>().unwrap(),
                y.as_mut_slice::<f32>().unwrap(),
            );
            let mut inv = vec![0.0f32; ys.len() / d.max(1)];
            // y + x is x + y, bit for bit.
            for_each_row(ys, xs, &mut inv, d, |y, x, r| {
                *r = simd::add_rms_norm_row(y, x, eps as f32)
            });
            (
                move |out: &FloatTensor<burn::Dispatch>| (out.clone(), inv),
                y,
            )
        })
    }
}

impl<const D: usize> Backward<burn::Dispatch, 2> for AddRmsNorm<D> {
    /// The output and each row's `1 / sqrt(mean((x + y)^2) + eps)`.
    type State = (FloatTensor<burn::Dispatch>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (out, mut inv) = ops.state;
        let mut dh = inner_values::<D>(grads.consume::<burn::Dispatch>(&ops.node));
        // Moved out when the graph no longer holds it (no copy).
        let out = inner_values::<D>(out);
        // unwrap: f32, as in the forward.
        let (dhs, outs) = (
            dh.as_mut_slice::<f32>().unwrap(),
            out.as_slice::<f32>().unwrap(),
        );
        let d = outs.len() / inv.len().max(1);
        for_each_row(dhs, outs, &mut inv, d, |dy, out, r| {
            simd::rms_norm_backward_row(dy, out, *r)
        });
        let dh = inner_tensor::<D>(dh);
        let [px, py] = ops.parents;
        for (parent, grad) in [(px, dh.clone()), (py, dh)] {
            if let Some(node) = parent {
                grads.register::<burn::Dispatch>(node.id, grad);
            }
        }
    }
}

/// `softmax(x)` over the last axis (attention's probabilities), in place.
///
/// # Shapes
/// `x: [..., d]` -> same
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let d = x.dims()[D - 1];
    if !on_host(&x) || d == 0 {
        return activation::softmax(x, D - 1);
    }
    let device = x.device();
    let mut a = x.into_data();
    // unwrap: f32, checked by `on_host`.
    let xs = a.as_mut_slice::<f32>().unwrap();
    xs.par_chunks_mut((CHUNK / d).max(1) * d).for_each(|x| {
        for row in x.chunks_exact_mut(d) {
            simd::softmax_row(row);
        }
    });
    Tensor::from_data(a, (&device, DType::F32))
}

/// `softmax(scores) @ v` over the last axis of `scores` (attention's weighted sum).
///
/// On the host: the fused softmax in place, then the product. Elsewhere (autodiff
/// off the host, and shapes that [`attention`]'s kernels do not take) each row is
/// normalised after the product, as flash attention does:
/// `(exp(s - max s) @ v) / sum exp(s - max s)`. The same value, one pass over the
/// `[seq, seq]` scores fewer, and backward keeps one such tensor (the exponentials)
/// instead of two (the exponentials and the probabilities).
///
/// # Shapes
/// `scores: [batch, heads, seq, seq]`, `v: [batch, heads, seq, d]` -> `[batch, heads, seq, d]`
pub fn softmax_matmul<B: Backend>(scores: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    if on_host(&scores) {
        return softmax_last(scores).matmul(v);
    }
    let max = scores.clone().detach().max_dim(3);
    let e = (scores - max).exp();
    let total = e.clone().sum_dim(3);
    e.matmul(v) / total
}

/// `x @ w` on the host: one GEMM (the gemm crate's, as burn-flex's) per block of
/// rows, the blocks on every core, into an output that is written once; tracked, as
/// an operation with its own backward (see [`matmul_column_blocks`]).
/// burn-flex's matmul fills its output with zeros and then copies it to realign it
/// (a tenth of trm-sudoku-mlpt's evaluation, docs/performance.md). Gives the inputs
/// back (`Err`) where burn's matmul must run (see [`on_flex`]), and for empty shapes
/// (with `k = 0` the GEMM would write nothing).
///
/// `weight` names the parameter columns w holds: inside [`FrozenWeights`] their
/// host copy is made once and reused, not made again at every call (burn-flex
/// copies a tensor that the module also holds).
///
/// # Shapes
/// `x: [m, k]`, `w: [k, n]` (a column view of a wider weight too) -> `[m, n]`
#[allow(clippy::type_complexity)]
pub fn matmul<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    weight: Option<WeightKey>,
) -> Result<Tensor<B, 2>, (Tensor<B, 2>, Tensor<B, 2>)> {
    let n = w.dims()[1];
    matmul_column_blocks(x, w, weight, [n]).map(|[y]| y)
}

/// [`matmul`] for N consecutive column blocks of w, `widths` wide, each product its
/// own contiguous tensor: x and w are read (copied to the host) once for all N
/// (the q|k|v and gate|up projections). With x or w tracked, each block is one
/// operation with its own backward (`HostMatmul`).
///
/// # Shapes
/// `x: [m, k]`, `w: [k, sum(widths)]` -> `[m, widths[i]]` each
#[allow(clippy::type_complexity)]
pub fn matmul_column_blocks<B: Backend, const N: usize>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    weight: Option<WeightKey>,
    widths: [usize; N],
) -> Result<[Tensor<B, 2>; N], (Tensor<B, 2>, Tensor<B, 2>)> {
    let ([m, k], [k_w, n]) = (x.dims(), w.dims());
    let fits = widths.iter().sum::<usize>() == n && widths.iter().all(|&c| c > 0);
    let shapes = k == k_w && m > 0 && k > 0 && fits;
    let flex = |p: Place| p == Place::Host || p == Place::AutodiffHost;
    let (px, pw) = (place(&x), place(&w));
    if shapes && flex(px) && flex(pw) && (px == Place::AutodiffHost || pw == Place::AutodiffHost) {
        return Ok(HostMatmul::apply(x, w, widths));
    }
    if !on_host(&x) || !on_host(&w) || !shapes {
        return Err((x, w));
    }
    let device = x.device();
    let (x, w) = (x.into_data(), host_weight(w, weight));
    // unwrap: f32, checked by `on_host`.
    let (x, w) = (x.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
    let mut first_col = 0;
    Ok(widths.map(|cols| {
        let out = gemm_rows(x, [m, k], &w[first_col..], n, cols);
        first_col += cols;
        Tensor::from_data(TensorData::new(out, [m, cols]), (&device, DType::F32))
    }))
}

/// `x @ w[:, ..cols]` for row-major x (`[m, k]`) and w (rows `n` apart): blocks
/// of rows, one per thread (no more blocks than [`MATMUL_ROWS`]-row ones).
fn gemm_rows(x: &[f32], [m, k]: [usize; 2], w: &[f32], n: usize, cols: usize) -> Vec<f32> {
    assert!(
        x.len() >= m * k && cols <= n && (k == 0 || w.len() >= (k - 1) * n + cols),
        "gemm_rows: x holds m x k values and w k rows of n, cols <= n"
    );
    // SAFETY: w's k rows, n apart, hold cols values each from its start (asserted).
    unsafe { gemm_rows_strided(x, [m, k], (w.as_ptr(), n as isize, 1), cols) }
}

/// `x @ r` for row-major x (`[m, k]`) and a `k x cols` matrix r given as (pointer,
/// row stride, column stride): blocks of rows, one per thread (no more blocks than
/// [`MATMUL_ROWS`]-row ones), into an output written once.
///
/// # Safety
/// x holds at least m x k values, and every element of r that the shape and
/// strides address is inside its buffer.
unsafe fn gemm_rows_strided(
    x: &[f32],
    [m, k]: [usize; 2],
    (r, r_rs, r_cs): (*const f32, isize, isize),
    cols: usize,
) -> Vec<f32> {
    struct Rhs(*const f32);
    // SAFETY: read only, by tasks that the caller's buffer outlives.
    unsafe impl Sync for Rhs {}
    let rhs = Rhs(r);
    let mut out = Vec::<f32>::with_capacity(m * cols);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let blocks = rayon::current_num_threads()
        .min(m.div_ceil(MATMUL_ROWS))
        .max(1);
    let block_rows = m.div_ceil(blocks);
    (0..m.div_ceil(block_rows))
        .into_par_iter()
        .for_each(|block| {
            let (first, rows) = (block * block_rows, block_rows.min(m - block * block_rows));
            let r = &rhs;
            // SAFETY: rows `first..first + rows` of x (k values each) and of out
            // (cols each) are inside their buffers, and so is r (the caller's
            // contract); the blocks are disjoint, and with `read_dst` false the
            // GEMM writes every element of its block without reading it.
            unsafe {
                gemm_into(
                    [rows, k, cols],
                    (out_ptr.at(first * cols), cols as isize),
                    (x.as_ptr().add(first * k), k as isize, 1),
                    (r.0, r_rs, r_cs),
                );
            }
        });
    // SAFETY: the blocks cover rows 0..m, and the GEMMs wrote all m x cols values.
    unsafe { out.set_len(m * cols) };
    out
}

/// The fewest rows per block of [`matmul`]: below that a GEMM call's packing of w
/// costs more than a second core saves.
const MATMUL_ROWS: usize = 64;

/// [`matmul_column_blocks`] under autodiff on the CPU, one operation of burn's
/// autodiff per column block, each with its own backward. burn's matmul fills its
/// output with zeros and copies it to realign it, forward and backward, on one
/// thread, and a column view of the weight adds a slice to the graph. Here x and w
/// are read once for all blocks (copied when the graph holds them elsewhere too: w,
/// which its parameter holds, always; x, when the residual stream also holds it),
/// the products are written once into fresh buffers on every core, and backward
/// gives `dx = dy w_block^T` (row blocks on every core) and `dw = x^T dy` (column
/// blocks on every core), w's gradient zero outside the block's columns.
#[derive(Debug)]
struct HostMatmul {
    first_col: usize,
    cols: usize,
}

impl HostMatmul {
    /// `x: [m, k]`, `w: [k, sum(widths)]` (f32 on the flex device, one at least
    /// tracked; m, k and every width > 0) -> `[m, widths[i]]` each
    fn apply<B: Backend, const N: usize>(
        x: Tensor<B, 2>,
        w: Tensor<B, 2>,
        widths: [usize; N],
    ) -> [Tensor<B, 2>; N] {
        let ([m, k], n) = (x.dims(), w.dims()[1]);
        let (x, w) = (tracked(x), tracked(w));
        let nodes = [x.node.clone(), w.node.clone()];
        let values = |t: FloatTensor<crate::B>| Arc::new(inner_values::<2>(t.primitive));
        let (xv, wv) = (values(x), values(w));
        let mut first_col = 0;
        widths.map(|cols| {
            // unwrap: f32 (checked by `place`).
            let (xs, ws) = (xv.as_slice::<f32>().unwrap(), wv.as_slice::<f32>().unwrap());
            let out = gemm_rows(xs, [m, k], &ws[first_col..], n, cols);
            let op = HostMatmul { first_col, cols };
            first_col += cols;
            let state = (xv.clone(), wv.clone());
            let prepared = op
                .prepare::<NoCheckpointing>(nodes.clone())
                .compute_bound()
                .stateful();
            join_graph(
                prepared,
                move |_: &_| state,
                TensorData::new(out, [m, cols]),
            )
        })
    }
}

impl Backward<burn::Dispatch, 2> for HostMatmul {
    /// The values of x and of all of w.
    type State = (Arc<TensorData>, Arc<TensorData>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w) = ops.state;
        let ([m, k], n, c) = ([x.shape[0], x.shape[1]], w.shape[1], self.cols);
        let dy = inner_values::<2>(grads.consume::<burn::Dispatch>(&ops.node));
        // unwrap: f32, as in the forward.
        let (xs, ws, dys) = (
            x.as_slice::<f32>().unwrap(),
            w.as_slice::<f32>().unwrap(),
            dy.as_slice::<f32>().unwrap(),
        );
        assert_eq!(dys.len(), m * c, "HostMatmul: the output gradient's size");
        let [px, pw] = ops.parents;
        if let Some(node) = px {
            // dx = dy w_block^T: w_block^T[i, j] = w[j, first_col + i].
            // SAFETY: c x k values from w's first_col, (1, n) apart, lie inside w.
            let dx = unsafe {
                gemm_rows_strided(
                    dys,
                    [m, c],
                    (ws.as_ptr().add(self.first_col), 1, n as isize),
                    k,
                )
            };
            grads.register::<burn::Dispatch>(
                node.id,
                inner_tensor::<2>(TensorData::new(dx, [m, k])),
            );
        }
        if let Some(node) = pw {
            let dw = weight_gradient(xs, [m, k], dys, [n, self.first_col, c]);
            grads.register::<burn::Dispatch>(
                node.id,
                inner_tensor::<2>(TensorData::new(dw, [k, n])),
            );
        }
    }
}

/// `x^T dy` into columns `first..first + c` of a `[k, n]` gradient that is zero
/// elsewhere, for row-major x (`[m, k]`) and dy (`[m, c]`): blocks of columns, one
/// per thread (no more blocks than [`MATMUL_ROWS`]-column ones), each a GEMM over
/// all m rows.
fn weight_gradient(
    x: &[f32],
    [m, k]: [usize; 2],
    dy: &[f32],
    [n, first, c]: [usize; 3],
) -> Vec<f32> {
    assert!(
        x.len() >= m * k && dy.len() >= m * c && first + c <= n,
        "weight_gradient: x holds m x k values, dy m x c, and the block lies inside n"
    );
    // Written once: the block's columns by the GEMMs below, the others (when the
    // block is not all of w) zeroed first, rows on every core. A zeroed buffer
    // was a memset of all k x n values on one thread.
    let mut dw = Vec::<f32>::with_capacity(k * n);
    let dw_ptr = SharedOut(dw.as_mut_ptr());
    if c < n {
        (0..k)
            .into_par_iter()
            .with_min_len(MATMUL_ROWS)
            .for_each(|row| {
                let start = dw_ptr.at(row * n);
                // SAFETY: row < k, so columns 0..first and first + c..n of this row
                // lie inside dw's k x n capacity; no other task writes them.
                unsafe {
                    std::ptr::write_bytes(start, 0, first);
                    std::ptr::write_bytes(start.add(first + c), 0, n - first - c);
                }
            });
    }
    let blocks = rayon::current_num_threads()
        .min(c.div_ceil(MATMUL_ROWS))
        .max(1);
    let block_cols = c.div_ceil(blocks);
    (0..c.div_ceil(block_cols))
        .into_par_iter()
        .for_each(|block| {
            let (col, cols) = (block * block_cols, block_cols.min(c - block * block_cols));
            // SAFETY: x^T (k x m, strides (1, k)) and dy's columns col..col + cols (m
            // rows, c apart) are inside x and dy; the block writes columns first + col
            // .. + cols of dw's k rows (n apart), which no other block touches.
            unsafe {
                gemm_into(
                    [k, m, cols],
                    (dw_ptr.at(first + col), n as isize),
                    (x.as_ptr(), 1, k as isize),
                    (dy.as_ptr().add(col), c as isize, 1),
                );
            }
        });
    // SAFETY: the GEMMs wrote columns first..first + c of every row, and the loop
    // above zeroed the others.
    unsafe { dw.set_len(k * n) };
    dw
}

/// Which columns of which parameter a weight is (the fused q|k|v and gate|up
/// projections are read a column block at a time).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WeightKey {
    pub param: ParamId,
    pub first_col: usize,
    pub cols: usize,
}

/// Host copies of weights, each with the parameter columns it holds.
type KeptWeights = Vec<(WeightKey, Arc<TensorData>)>;

thread_local! {
    /// The host copies of the weights read inside this thread's open
    /// [`FrozenWeights`]; `None` when none is open.
    static FROZEN: RefCell<Option<KeptWeights>> = const { RefCell::new(None) };
}

/// A span of this thread's work during which no weight changes: a no-grad block
/// (`NoGrad`) or an evaluation rollout. While one is open, [`matmul`] copies each
/// weight it is given a key for to the host once, where it otherwise copies it at
/// every call (burn-flex copies a tensor that something else also holds, and the
/// network holds its weights); TRM-arc's evaluation calls each weight 21 times per
/// step. The copies are dropped when the outermost span closes. Not `Send`: it
/// covers the forward of the thread that opened it, and no other work that thread
/// runs meanwhile: `train::pool::on_pool`, which hands whole steps to the pool's
/// threads, runs each apart from any span ([`apart_from_frozen_weights`]).
pub struct FrozenWeights {
    /// Whether this span opened the thread's cache (the outermost one).
    outermost: bool,
    _this_thread: PhantomData<*const ()>,
}

impl FrozenWeights {
    /// Opens a span on this thread (inside another, it joins the outer one).
    pub fn open() -> Self {
        let outermost = FROZEN.with(|frozen| {
            let mut frozen = frozen.borrow_mut();
            let outermost = frozen.is_none();
            if outermost {
                *frozen = Some(Vec::new());
            }
            outermost
        });
        FrozenWeights {
            outermost,
            _this_thread: PhantomData,
        }
    }
}

impl Drop for FrozenWeights {
    fn drop(&mut self) {
        if self.outermost {
            FROZEN.with(|frozen| *frozen.borrow_mut() = None);
        }
    }
}

/// Runs `f` with this thread's open [`FrozenWeights`] span set aside, and restores
/// it afterwards: for work that is not the span's own. A thread waiting for rayon
/// inside a span may be handed another caller's whole step (`train::pool::on_pool`
/// runs each step as a job of the shared pool), whose weights are other tensors
/// and change between its steps.
pub fn apart_from_frozen_weights<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(Option<KeptWeights>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let kept = self.0.take();
            FROZEN.with(|frozen| *frozen.borrow_mut() = kept);
        }
    }
    let _restore = Restore(FROZEN.with(|frozen| frozen.borrow_mut().take()));
    f()
}

/// w's values on the host: the copy kept for `weight` in an open [`FrozenWeights`],
/// made and kept there on the first call; a fresh copy outside one.
fn host_weight<B: Backend>(w: Tensor<B, 2>, weight: Option<WeightKey>) -> Arc<TensorData> {
    let dims = w.dims();
    let Some(key) = weight else {
        return Arc::new(w.into_data());
    };
    let kept = FROZEN.with(|frozen| {
        let frozen = frozen.borrow();
        let (_, data) = frozen.as_ref()?.iter().find(|(k, _)| *k == key)?;
        // The same parameter columns have the same shape; anything else is not
        // this weight, and is read afresh.
        (data.shape == dims.into()).then(|| data.clone())
    });
    if let Some(data) = kept {
        return data;
    }
    let data = Arc::new(w.into_data());
    FROZEN.with(|frozen| {
        if let Some(kept) = frozen.borrow_mut().as_mut() {
            kept.push((key, data.clone()));
        }
    });
    data
}

/// Attention's core, `softmax(q k^T / sqrt(d)) v` per head.
///
/// On the host (untracked): one task per (batch, head) and block of
/// [`QUERY_BLOCK`] query rows computes the block's scores, their softmax in place and
/// the product with v, on its own core; the `[batch, heads, seq, seq]` scores are
/// never allocated, and q, k, v are read in place in their `[batch, seq, heads, d]`
/// layout (no transposes). Tracked on the host, the same kernel as one operation
/// whose backward is [`attention_backward_host`] (`HostAttention`). Untracked on
/// other devices, burn's
/// attention op: PyTorch's fused attention on libtorch, flash attention on CubeCL
/// (CUDA, wgpu), which it runs only at the default scale. Elsewhere burn's ops,
/// through [`softmax_matmul`].
///
/// # Shapes
/// `q, k, v: [batch, seq, heads, d]` -> `[batch, seq, heads * d]`
pub fn attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, seq, heads, d] = q.dims();
    let same = k.dims() == q.dims() && v.dims() == q.dims();
    // One place for all three, or none of the kernels below takes them.
    let at = match place(&q) {
        p if p == place(&k) && p == place(&v) => p,
        _ => Place::Other,
    };
    if same && at == Place::OffHost {
        let heads_first = |x: Tensor<B, 4>| x.swap_dims(1, 2);
        let (q, k, v) = (heads_first(q), heads_first(k), heads_first(v));
        let options = AttentionModuleOptions::default();
        let out = module::attention(q, k, v, None, None, options);
        return out.swap_dims(1, 2).reshape([batch, seq, heads * d]);
    }
    // The 1/sqrt(head_dim) scale on q rather than on the scores: the same
    // product, and a pass over seq x head_dim values instead of seq x seq.
    let q = q / (d as f64).sqrt();
    if at == Place::AutodiffHost && same && seq > 0 && d > 0 {
        return HostAttention::apply(q, k, v);
    }
    if at == Place::Host && same {
        return attention_host(q, k, v);
    }
    // [B, S, H, D] -> [B, H, S, D]
    let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
    let out = softmax_matmul(q.matmul(k.swap_dims(2, 3)), v);
    out.swap_dims(1, 2).reshape([batch, seq, heads * d])
}

/// [`attention`] on the host without autodiff, q already scaled: one task per
/// (batch, head) and block of [`QUERY_BLOCK`] query rows (see [`attention`]).
///
/// # Shapes
/// `q, k, v: [batch, seq, heads, d]` (all f32 on the flex device) -> `[batch, seq, heads * d]`
fn attention_host<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 3> {
    let [batch, seq, heads, d] = q.dims();
    let device = q.device();
    let (q, k, v) = (q.into_data(), k.into_data(), v.into_data());
    // unwrap: f32, checked by `on_host`.
    let (q, k, v) = (
        q.as_slice::<f32>().unwrap(),
        k.as_slice::<f32>().unwrap(),
        v.as_slice::<f32>().unwrap(),
    );
    let out = attention_host_values([batch, seq, heads, d], q, k, v, None);
    let out = TensorData::new(out, [batch, seq, heads * d]);
    Tensor::from_data(out, (&device, DType::F32))
}

/// The kernel of [`attention_host`] on values: q (already scaled), k and v
/// `[batch, seq, heads, d]` row-major -> the output `[batch, seq, heads * d]`.
/// With `stats` (`[batch, heads, seq, 2]` values), each softmax row's max and the
/// reciprocal of its sum of exponentials, from which [`attention_backward_host`]
/// computes the probabilities again in one pass.
fn attention_host_values(
    [batch, seq, heads, d]: [usize; 4],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stats: Option<&mut [f32]>,
) -> Vec<f32> {
    // Written once, by the tasks' second GEMMs (see `gemm_into`); not zeroed first.
    let mut out = Vec::<f32>::with_capacity(q.len());
    let out_ptr = SharedOut(out.as_mut_ptr());
    let stats_ptr = stats.map(|stats| {
        assert_eq!(
            stats.len(),
            2 * batch * heads * seq,
            "attention: stats' length"
        );
        SharedOut(stats.as_mut_ptr())
    });
    // Consecutive positions are `heads * d` apart; a head's d values are contiguous.
    let (row, blocks) = ((heads * d) as isize, seq.div_ceil(QUERY_BLOCK));
    (0..batch * heads * blocks)
        .into_par_iter()
        .for_each(|task| {
            let (b, h, block) = (
                task / (heads * blocks),
                task / blocks % heads,
                task % blocks,
            );
            let (first, rows) = (
                block * QUERY_BLOCK,
                QUERY_BLOCK.min(seq - block * QUERY_BLOCK),
            );
            // (b, position 0, h, 0): the head's first value.
            let head = b * seq * heads * d + h * d;
            let query = head + first * heads * d;
            with_scratch(rows * seq + rows, |scratch| {
                let (scores, inv) = scratch.split_at_mut(rows * seq);
                // SAFETY: every pointer and stride stays inside its buffer: q/out rows
                // `first..first + rows` and k/v rows `0..seq` of head h, d values each;
                // `scores` holds rows x seq. Each task writes its own (rows, head) block
                // of `out`, which no other task touches, and `out` outlives the loop;
                // it reads back and scales only what its GEMM just wrote.
                unsafe {
                    // scores[i, j] = sum_c q[first + i, h, c] k[j, h, c]
                    gemm_into(
                        [rows, d, seq],
                        (scores.as_mut_ptr(), seq as isize),
                        (q.as_ptr().add(query), row, 1),
                        (k.as_ptr().add(head), 1, row),
                    );
                    for (i, r) in scores.chunks_exact_mut(seq).enumerate() {
                        // e[i, j] = exp(scores[i, j] - max_j scores[i, j]), and the
                        // reciprocal of the row's sum.
                        let row_stats = simd::exp_row(r);
                        inv[i] = row_stats[1];
                        if let Some(stats) = &stats_ptr {
                            // This task's own rows of the stats (inside them, as asserted).
                            let at = stats.at(2 * ((b * heads + h) * seq + first + i));
                            *at = row_stats[0];
                            *at.add(1) = row_stats[1];
                        }
                    }
                    // out[first + i, h, :] = inv[i] sum_j e[i, j] v[j, h, :]
                    gemm_into(
                        [rows, seq, d],
                        (out_ptr.at(query), row),
                        (scores.as_ptr(), seq as isize, 1),
                        (v.as_ptr().add(head), row, 1),
                    );
                    for (i, &inv) in inv.iter().enumerate() {
                        let out =
                            std::slice::from_raw_parts_mut(out_ptr.at(query + i * row as usize), d);
                        for o in out {
                            *o *= inv;
                        }
                    }
                }
            });
        });
    // SAFETY: the tasks cover every (batch, head, query row), and each wrote its
    // rows x d block of out.
    unsafe { out.set_len(q.len()) };
    out
}

thread_local! {
    /// This thread's scratch for attention's kernels (a block of scores, or the
    /// probabilities and their gradient), kept between calls: a fresh `seq x seq`
    /// buffer per task made the kernel clear new pages (12% of dis-compact's
    /// training samples).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f` on `len` values of this thread's [`SCRATCH`] (grown when short; its values
/// are left over from earlier calls, so `f` must write before it reads). A fresh
/// buffer if the scratch is in use (a task nested in another on this thread).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            if scratch.len() < len {
                scratch.resize(len, 0.0);
            }
            f(&mut scratch[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Attention's core under autodiff on the CPU, `softmax(q k^T) v` per head (q
/// already scaled), as one operation of burn's autodiff with its own backward:
/// the value from [`attention_host_values`], the gradients from
/// [`attention_backward_host`]. burn's graph of the same product keeps and passes
/// over `[seq, seq]` tensors (scores, exponentials, their gradients); this keeps
/// the values of q, k and v and computes the probabilities again in backward, as
/// the reference's fused attention does.
#[derive(Debug)]
struct HostAttention;

impl HostAttention {
    /// `q, k, v: [batch, seq, heads, d]` (tracked f32 on the flex device, seq and
    /// d > 0) -> `[batch, seq, heads * d]`
    fn apply<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 3> {
        let shape = q.dims();
        let inputs = [tracked(q), tracked(k), tracked(v)];
        record::<_, _, _, 3, 4, 3>(HostAttention, inputs, |[q, k, v]| {
            // unwrap: f32 (checked by `place`).
            let [qs, ks, vs] = [&q, &k, &v].map(|x| x.as_slice::<f32>().unwrap());
            let [batch, seq, heads, d] = shape;
            let mut stats = vec![0.0f32; 2 * batch * heads * seq];
            let out = attention_host_values(shape, qs, ks, vs, Some(&mut stats));
            (
                move |_: &_| (q, k, v, shape, stats),
                TensorData::new(out, [batch, seq, heads * d]),
            )
        })
    }
}

impl Backward<burn::Dispatch, 3> for HostAttention {
    /// The values of q (scaled), k and v, their shape `[batch, seq, heads, d]`, and
    /// each softmax row's max and reciprocal sum (`attention_host_values`' stats).
    type State = (TensorData, TensorData, TensorData, [usize; 4], Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (q, k, v, shape, stats) = ops.state;
        let d_out = inner_values::<3>(grads.consume::<burn::Dispatch>(&ops.node));
        // unwrap: f32, as in the forward.
        fn values(x: &TensorData) -> &[f32] {
            x.as_slice::<f32>().unwrap()
        }
        let (q, k, v, d_out) = (values(&q), values(&k), values(&v), values(&d_out));
        let (dq, dk, dv) = attention_backward_host(shape, q, k, v, d_out, &stats);
        for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                let grad = inner_tensor::<4>(TensorData::new(grad, shape));
                grads.register::<burn::Dispatch>(node.id, grad);
            }
        }
    }
}

/// One operation of burn's autodiff with its own backward (`op`): `compute` turns
/// the values of `inputs` (`DI` dims each) into the output (`DO` dims), which joins
/// burn's graph after `inputs`, and a function that makes the state `op`'s
/// backward keeps, given the output (which it may keep, shared). Given back
/// as the caller's backend, which is recursa's (its inputs were tracked).
fn record<O, B, S, const N: usize, const DI: usize, const DO: usize>(
    op: O,
    inputs: [FloatTensor<crate::B>; N],
    compute: impl FnOnce([TensorData; N]) -> (S, TensorData),
) -> Tensor<B, DO>
where
    O: Backward<burn::Dispatch, N>,
    B: Backend,
    S: FnOnce(&FloatTensor<burn::Dispatch>) -> O::State,
{
    let nodes = inputs.each_ref().map(|x| x.node.clone());
    // The inner tensors move out (no copy when nothing else holds them).
    let (state, out) = compute(inputs.map(|x| inner_values::<DI>(x.primitive)));
    let prepared = op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful();
    join_graph(prepared, state, out)
}

/// `out` as the output of a prepared operation of burn's autodiff, whose backward
/// keeps the state that `state` makes from the output.
fn join_graph<O, B, S, const N: usize, const DO: usize>(
    prepared: OpsKind<O, burn::Dispatch, O::State, NoCheckpointing, N>,
    state: S,
    out: TensorData,
) -> Tensor<B, DO>
where
    O: Backward<burn::Dispatch, N>,
    B: Backend,
    S: FnOnce(&FloatTensor<burn::Dispatch>) -> O::State,
{
    let out = inner_tensor::<DO>(out);
    let out = match prepared {
        OpsKind::Tracked(prep) => prep.finish(state(&out), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    let out: Box<dyn Any> = Box::new(Tensor::<crate::B, DO>::from_primitive(
        TensorPrimitive::Float(out),
    ));
    // unwrap: only recursa's backend tracks (`is_tracked`), so B is it.
    *out.downcast::<Tensor<B, DO>>().unwrap()
}

/// The autodiff primitive (inner tensor and graph node) of a tracked `t`, which is
/// therefore a tensor of recursa's backend.
fn tracked<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<crate::B> {
    let t: Box<dyn Any> = Box::new(t);
    // unwrap: callers pass tracked tensors, and only recursa's backend tracks (`is_tracked`).
    let t = *t.downcast::<Tensor<crate::B, D>>().unwrap();
    t.into_primitive().tensor()
}

/// The values of an inner (`Dispatch`) float tensor, on the host.
fn inner_values<const D: usize>(t: FloatTensor<burn::Dispatch>) -> TensorData {
    Tensor::<burn::Dispatch, D>::from_primitive(TensorPrimitive::Float(t)).into_data()
}

/// An inner (`Dispatch`) float tensor of `values` on the flex device.
fn inner_tensor<const D: usize>(values: TensorData) -> FloatTensor<burn::Dispatch> {
    let device = Device::Flex(Default::default());
    Tensor::<burn::Dispatch, D>::from_data(values, (&device, DType::F32))
        .into_primitive()
        .tensor()
}

/// The gradients of attention's core, `softmax(q k^T) v` per head (q already
/// scaled), for the output's gradient `d_out`: `(dq, dk, dv)`. Flash attention's
/// backward, one task per (batch, head): the probabilities P are computed again
/// from q and k and the forward's `stats` (each row's max and reciprocal sum of
/// exponentials, `[batch, heads, seq, 2]`; the forward keeps nothing `[seq, seq]`),
/// then `dV = P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(P * dP))`,
/// `dQ = dS K`, `dK = dS^T Q`: five GEMMs per head, in blocks of
/// [`BACKWARD_BLOCK`] query rows.
///
/// The backward of [`attention`] on tracked host tensors (`HostAttention`).
///
/// # Shapes
/// `q, k, v, d_out: [batch, seq, heads, d]` row-major -> three of the same
pub fn attention_backward_host(
    [batch, seq, heads, d]: [usize; 4],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d_out: &[f32],
    stats: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = batch * seq * heads * d;
    assert!(
        [q.len(), k.len(), v.len(), d_out.len()] == [n; 4],
        "attention_backward_host: every input holds batch x seq x heads x d values"
    );
    assert_eq!(
        stats.len(),
        2 * batch * heads * seq,
        "attention_backward_host: two stats per (batch, head, query row)"
    );
    let (mut dq, mut dk, mut dv) = (
        Vec::<f32>::with_capacity(n),
        Vec::<f32>::with_capacity(n),
        Vec::<f32>::with_capacity(n),
    );
    let (dq_ptr, dk_ptr, dv_ptr) = (
        SharedOut(dq.as_mut_ptr()),
        SharedOut(dk.as_mut_ptr()),
        SharedOut(dv.as_mut_ptr()),
    );
    let (row, s) = ((heads * d) as isize, seq as isize);
    if seq > 0 && d > 0 {
        let block = BACKWARD_BLOCK.min(seq);
        (0..batch * heads).into_par_iter().for_each(|task| {
            with_scratch(2 * block * seq, |buffers| {
                let (p, dp) = buffers.split_at_mut(block * seq);
                let (b, h) = (task / heads, task % heads);
                // (b, position 0, h, 0): the head's first value.
                let head = b * seq * heads * d + h * d;
                for first in (0..seq).step_by(block) {
                    let rows = block.min(seq - first);
                    let (p, dp) = (&mut p[..rows * seq], &mut dp[..rows * seq]);
                    // The block's first query row; dV and dK add up over blocks.
                    let (at, add) = (head + first * heads * d, first > 0);
                    // SAFETY: q, k, v, d_out and the outputs are read and written at
                    // rows 0..seq of head h (d values each, `row` apart), inside their
                    // n values; p and dp hold rows x seq. Each task writes only its
                    // own head's (b, :, h, :) values of dq, dk and dv; the first block
                    // writes all of dk and dv (k = rows > 0), every block all of its
                    // rows of dq (k = seq > 0).
                    unsafe {
                        let (k, v) = (k.as_ptr().add(head), v.as_ptr().add(head));
                        let (q, d_out) = (q.as_ptr().add(at), d_out.as_ptr().add(at));
                        // P = softmax(q k^T), the block's rows
                        gemm_into(
                            [rows, d, seq],
                            (p.as_mut_ptr(), s),
                            (q, row, 1),
                            (k, 1, row),
                        );
                        // The rows' stats: (b, h, first..first + rows).
                        let from = 2 * ((b * heads + h) * seq + first);
                        let row_stats = stats[from..from + 2 * rows].chunks_exact(2);
                        for (r, st) in p.chunks_exact_mut(seq).zip(row_stats) {
                            simd::exp_scaled_row(r, st[0], st[1]);
                        }
                        // dV += P^T dO
                        gemm_add(
                            [seq, rows, d],
                            (dv_ptr.at(head), row),
                            (p.as_ptr(), 1, s),
                            (d_out, row, 1),
                            add,
                        );
                        // dP = dO V^T, then dS = P * (dP - rowsum(P * dP)) in its place
                        gemm_into(
                            [rows, d, seq],
                            (dp.as_mut_ptr(), s),
                            (d_out, row, 1),
                            (v, 1, row),
                        );
                        for (p, dp) in p.chunks_exact(seq).zip(dp.chunks_exact_mut(seq)) {
                            simd::softmax_grad_row(p, dp);
                        }
                        // dQ = dS K, dK += dS^T Q
                        gemm_into(
                            [rows, seq, d],
                            (dq_ptr.at(at), row),
                            (dp.as_ptr(), s, 1),
                            (k, row, 1),
                        );
                        gemm_add(
                            [seq, rows, d],
                            (dk_ptr.at(head), row),
                            (dp.as_ptr(), 1, s),
                            (q, row, 1),
                            add,
                        );
                    }
                }
            });
        });
    }
    if seq == 0 || d == 0 {
        // Nothing to write: every output is empty or all zero.
        dq.resize(n, 0.0);
        dk.resize(n, 0.0);
        dv.resize(n, 0.0);
    } else {
        // SAFETY: the tasks cover every (batch, head), and each wrote its seq x d
        // values of each output.
        unsafe {
            dq.set_len(n);
            dk.set_len(n);
            dv.set_len(n);
        }
    }
    (dq, dk, dv)
}

/// Query rows per task of [`attention`]. Each task's GEMMs pack k and v (and the
/// block's probabilities) before multiplying, so fewer, taller blocks pay for that
/// less often; the block bounds the scratch to `QUERY_BLOCK x seq` per thread.
/// Measured in alternating runs (2 threads): trm-arc's evaluation 0.045 and 0.049
/// examples/s with 64 rows, 0.054 and 0.055 with 1024; dis-compact's unchanged.
const QUERY_BLOCK: usize = 1024;

/// Query rows per step of [`attention_backward_host`]'s loop over one head: the
/// step's probabilities and their gradient, two `BACKWARD_BLOCK x seq` buffers
/// (1.9 MB at seq 916), stay in a core's L2 cache through the step's five GEMMs
/// and two row passes, where two whole `seq x seq` buffers (6.7 MB) went to L3 and
/// back. Measured with the `attention_grad` example (2 threads): dis-compact's
/// shape's backward 53-60 ms with whole heads, 51-53 with 128 rows, 49.5-50 with
/// 256; trm-arc's (head_dim 64) 40 ms either way.
const BACKWARD_BLOCK: usize = 256;

/// `dst = lhs @ rhs` on the calling thread (callers run one per core), for an
/// `m x k` lhs and a `k x n` rhs given as (pointer, row stride, column stride) in
/// elements, and dst as (pointer, row stride) with contiguous columns. The gemm
/// crate's (burn-flex's GEMM), with `read_dst` false: every element of dst is
/// written, none is read.
///
/// # Safety
/// Every element the shapes and strides address lies inside its buffer, and no one
/// else touches dst's elements meanwhile.
unsafe fn gemm_into(
    [m, k, n]: [usize; 3],
    (dst, dst_rs): (*mut f32, isize),
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
) {
    // SAFETY: the caller's contract (above).
    unsafe {
        gemm_add(
            [m, k, n],
            (dst, dst_rs),
            (lhs, lhs_rs, lhs_cs),
            (rhs, rhs_rs, rhs_cs),
            false,
        )
    }
}

/// [`gemm_into`], or `dst += lhs @ rhs` when `add` (dst's elements then read).
///
/// # Safety
/// As [`gemm_into`]; with `add`, dst's elements are initialised.
unsafe fn gemm_add(
    [m, k, n]: [usize; 3],
    (dst, dst_rs): (*mut f32, isize),
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
    add: bool,
) {
    // SAFETY: the caller's contract (above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            add,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            if add { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// An output buffer shared by tasks that write disjoint blocks of it (attention's
/// kernels, the GEMMs in blocks of rows or columns).
struct SharedOut(*mut f32);

// SAFETY: tasks write disjoint blocks of the buffer (see each user's SAFETY note).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer `offset` values in (a method, so closures capture the whole
    /// struct and not its raw-pointer field).
    fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the buffer (see `attention` and `matmul`).
        unsafe { self.0.add(offset) }
    }
}

/// Rotate-half RoPE, `x*cos + rotate_half(x)*sin` with `rotate_half(x) = cat(-x2, x1)`,
/// where `cos` and `sin` hold one row per position, in x's buffer; tracked, as one
/// operation with its own backward (`HostRope`). Gives x back (`Err`) where burn's
/// ops must run (see [`on_host`]).
///
/// # Shapes
/// `x: [batch, seq, heads, head_dim]`, `cos, sin: [positions >= seq, head_dim]` -> like x
pub fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [_, seq, _, d] = x.dims();
    let tables_on_host = on_host(cos) && on_host(sin) && cos.dims() == sin.dims();
    let tables_fit = tables_on_host && cos.dims()[1] == d && cos.dims()[0] >= seq;
    if on_autodiff_host(&x) && tables_fit && x.dims().iter().all(|&n| n > 0) {
        return Ok(HostRope::apply(x, cos, sin));
    }
    if !on_host(&x) || !tables_fit {
        return Err(x);
    }
    let [_, seq, heads, d] = x.dims();
    let device = x.device();
    let mut a = x.into_data();
    let (cos, sin) = (cos.clone().into_data(), sin.clone().into_data());
    // unwrap: f32, checked by `on_host`.
    let xs = a.as_mut_slice::<f32>().unwrap();
    let (cos, sin) = (
        cos.as_slice::<f32>().unwrap(),
        sin.as_slice::<f32>().unwrap(),
    );
    rope_rows(xs, [seq, heads, d], cos, sin);
    Ok(Tensor::from_data(a, (&device, DType::F32)))
}

/// [`rope`]'s pass over x (`[batch, seq, heads, d]` row-major) in place: one task
/// per (batch, position), whose heads share the position's table row.
fn rope_rows(xs: &mut [f32], [seq, heads, d]: [usize; 3], cos: &[f32], sin: &[f32]) {
    if seq * heads * d == 0 {
        return;
    }
    xs.par_chunks_mut(heads * d).enumerate().for_each(|(i, x)| {
        let p = i % seq;
        let (cos, sin) = (&cos[p * d..(p + 1) * d], &sin[p * d..(p + 1) * d]);
        for head in x.chunks_exact_mut(d) {
            simd::rope_row(head, cos, sin);
        }
    });
}

/// [`rope`] on a tracked CPU tensor, as one operation of burn's autodiff with its
/// own backward. burn's graph of it (a GEMM with the rotation, products with the
/// tables repeated over heads, a sum) is six passes on one thread, and as many in
/// backward; here each is one pass on every core. Keeps the tables.
#[derive(Debug)]
struct HostRope;

impl HostRope {
    /// `x: [batch, seq, heads, d]` (tracked f32 on the flex device), `cos, sin:
    /// [positions >= seq, d]` (untracked f32 on the flex device) -> like x
    fn apply<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 2>, sin: &Tensor<B, 2>) -> Tensor<B, 4> {
        let [_, seq, heads, d] = x.dims();
        let table = |t: &Tensor<B, 2>| t.clone().narrow(0, 0, seq).into_data();
        let (cos, sin) = (table(cos), table(sin));
        record::<_, _, _, 1, 4, 4>(HostRope, [tracked(x)], |[mut x]| {
            // unwrap: f32 (checked by `place` and `on_host`).
            let (c, s) = (
                cos.as_slice::<f32>().unwrap(),
                sin.as_slice::<f32>().unwrap(),
            );
            rope_rows(x.as_mut_slice::<f32>().unwrap(), [seq, heads, d], c, s);
            (move |_: &_| (cos, sin, [seq, heads, d]), x)
        })
    }
}

impl Backward<burn::Dispatch, 1> for HostRope {
    /// The tables' first seq rows, and `[seq, heads, d]`.
    type State = (TensorData, TensorData, [usize; 3]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin, [seq, heads, d]) = ops.state;
        let mut dy = inner_values::<4>(grads.consume::<burn::Dispatch>(&ops.node));
        // unwrap: f32, as in the forward.
        let (cos, sin) = (
            cos.as_slice::<f32>().unwrap(),
            sin.as_slice::<f32>().unwrap(),
        );
        let dys = dy.as_mut_slice::<f32>().unwrap();
        if seq * heads * d > 0 {
            dys.par_chunks_mut(heads * d)
                .enumerate()
                .for_each(|(i, dy)| {
                    let p = i % seq;
                    let (cos, sin) = (&cos[p * d..(p + 1) * d], &sin[p * d..(p + 1) * d]);
                    for head in dy.chunks_exact_mut(d) {
                        simd::rope_row_backward(head, cos, sin);
                    }
                });
        }
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<burn::Dispatch>(node.id, inner_tensor::<4>(dy));
        }
    }
}

/// `z` with every position of the rows where `reset` holds set to `init`: the
/// latents' reset when an episode starts, `z.mask_where(reset, init)` broadcast.
/// On the host (untracked), a copy of `init` into the reset rows only, and nothing
/// when no row is reset; burn-flex's masked select first copies mask and init out
/// to z's shape, on one thread. Elsewhere that masked select.
///
/// # Shapes
/// `z: [rows, positions, hidden]`, `reset: [rows]`, `init: [hidden]` -> z's shape
pub fn reset_rows<B: Backend>(
    z: Tensor<B, 3>,
    reset: Tensor<B, 1, Bool>,
    init: Tensor<B, 1>,
) -> Tensor<B, 3> {
    let [rows, positions, hidden] = z.dims();
    if !(on_host(&z) && on_host(&init) && reset.dims() == [rows] && init.dims() == [hidden]) {
        let reset = reset
            .reshape([rows, 1, 1])
            .expand([rows, positions, hidden]);
        let init = init
            .reshape([1, 1, hidden])
            .expand([rows, positions, hidden]);
        return z.mask_where(reset, init);
    }
    let reset: Vec<bool> = reset.into_data().iter::<bool>().collect();
    if !reset.contains(&true) {
        return z;
    }
    let device = z.device();
    let mut values = z.into_data();
    let init = init.into_data();
    // unwrap: f32, checked by `on_host`.
    let (row_values, init) = (
        values.as_mut_slice::<f32>().unwrap(),
        init.as_slice::<f32>().unwrap(),
    );
    let row_len = positions * hidden;
    for (row, _) in row_values
        .chunks_exact_mut(row_len)
        .zip(&reset)
        .filter(|(_, &reset)| reset)
    {
        for position in row.chunks_exact_mut(hidden) {
            position.copy_from_slice(init);
        }
    }
    Tensor::from_data(values, (&device, DType::F32))
}

/// `x` with its last two axes swapped, laid out row-major (the `mlp_t` mixer's
/// transposes). On the host a blocked copy on every core. Under autodiff on the host,
/// a 2-D transpose of `[batch * a, b]` (burn-flex's tiled copy) and a gather of its
/// rows of a (`select`): both run at memory speed, and so do their backward passes,
/// where burn-flex copies a swapped 3-D view element by element. Elsewhere a reshape
/// of the swapped view, which copies it: the ops and GEMMs after it then read
/// contiguous rows.
///
/// # Shapes
/// `x: [batch, a, b]` -> `[batch, b, a]`
pub fn transpose<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, a, b] = x.dims();
    if batch > 1 && on_autodiff_host(&x) {
        // Row j * batch + n of the 2-D transpose is x[n, :, j]; out[n, j] takes it.
        let rows = (0..batch)
            .flat_map(|n| (0..b).map(move |j| (j * batch + n) as i64))
            .collect::<Vec<_>>();
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [batch * b]), &x.device());
        return x
            .reshape([batch * a, b])
            .swap_dims(0, 1)
            .reshape([b * batch, a])
            .select(0, rows)
            .reshape([batch, b, a]);
    }
    if !on_host(&x) {
        // Reshaping a strided view to 2-D copies it; the 3-D reshape is then a view.
        return x
            .swap_dims(1, 2)
            .reshape([batch * b, a])
            .reshape([batch, b, a]);
    }
    let device = x.device();
    let data = x.into_data();
    // unwrap: f32, checked by `on_host`.
    let src = data.as_slice::<f32>().unwrap();
    let mut out = vec![0.0f32; src.len()];
    const TILE: usize = 32;
    out.par_chunks_mut(a * b)
        .zip(src.par_chunks(a * b))
        .for_each(|(out, src)| {
            // Tasks of TILE output rows (columns j0.. of the source), tiled in i.
            out.par_chunks_mut(TILE * a)
                .enumerate()
                .for_each(|(t, out)| {
                    let (j0, rows) = (t * TILE, out.len() / a);
                    for i0 in (0..a).step_by(TILE) {
                        for j in 0..rows {
                            for i in i0..(i0 + TILE).min(a) {
                                out[j * a + i] = src[i * b + j0 + j];
                            }
                        }
                    }
                });
        });
    let out = TensorData::new(out, [batch, b, a]);
    Tensor::from_data(out, (&device, DType::F32))
}

/// Where a tensor is, as far as these kernels care.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    /// f32 in host memory, untracked (recursa's backend on a flex device).
    Host,
    /// f32 on the flex device and tracked: values in host memory, and gradients
    /// must flow through it.
    AutodiffHost,
    /// recursa's backend on a device other than the flex device, untracked: where
    /// burn's attention op is fused.
    OffHost,
    /// Anything else (other float types on the host, tracked off the host).
    Other,
}

/// Where `t` is (one device check, and for recursa's backend one look at its
/// graph node).
fn place<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Place {
    let device = t.device();
    let device: &dyn Any = &device;
    let f32 = t.dtype() == DType::F32;
    match device.downcast_ref::<Device>() {
        Some(Device::Flex(_)) if f32 && is_tracked(t) => Place::AutodiffHost,
        Some(Device::Flex(_)) if f32 => Place::Host,
        Some(Device::Flex(_) | Device::Autodiff(_)) | None => Place::Other,
        Some(_) if is_tracked(t) => Place::Other,
        Some(_) => Place::OffHost,
    }
}

/// Whether `t` is a tensor of recursa's backend that burn's autodiff records:
/// it requires gradient or derives from one that does.
pub(crate) fn is_tracked<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    let t: &dyn Any = t;
    t.downcast_ref::<Tensor<crate::B, D>>().is_some_and(|t| {
        !t.clone()
            .into_primitive()
            .tensor()
            .node
            .requirement
            .is_none()
    })
}

/// Whether `t` is an untracked f32 tensor in host memory.
pub(crate) fn on_host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    place(t) == Place::Host
}

/// Whether `t` is f32 on the flex device, tracked or not: where [`matmul`] and
/// [`matmul_column_blocks`] take it.
pub(crate) fn on_flex<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    matches!(place(t), Place::Host | Place::AutodiffHost)
}

/// Whether `t` is a tracked f32 tensor on the flex device.
fn on_autodiff_host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    place(t) == Place::AutodiffHost
}

/// The loops, compiled once per instruction set and chosen at run time. Only IEEE
/// adds, multiplies, divides and fused multiply-adds (`mul_add`, rounded once: an
/// FMA instruction on the vector paths, libm's `fmaf` on a CPU without one), so
/// every path gives the same bits.
mod simd {
    /// `pub fn $name(args) body`, compiled three times (AVX-512F with FMA, AVX2 with
    /// FMA, plain) and run as the best one the CPU has, checked at run time.
    macro_rules! per_instruction_set {
        ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
            $(#[$doc])*
            pub fn $name($($arg: $ty),*) $(-> $ret)? {
                #[inline(always)]
                fn body($($arg: $ty),*) $(-> $ret)? $body
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,fma")]
                    unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                        body($($arg),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                        body($($arg),*)
                    }
                    let fma = is_x86_feature_detected!("fma");
                    if fma && is_x86_feature_detected!("avx512f") {
                        // SAFETY: the CPU has AVX-512F and FMA (checked just above).
                        return unsafe { avx512($($arg),*) };
                    }
                    if fma && is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU has AVX2 and FMA (checked just above).
                        return unsafe { avx2($($arg),*) };
                    }
                }
                body($($arg),*)
            }
        };
    }

    per_instruction_set! {
        /// `g <- silu(g) * u = g / (1 + exp(-g)) * u`
        pub fn silu_mul(g: &mut [f32], u: &[f32]) {
            for (g, &u) in g.iter_mut().zip(u) {
                *g = silu_times(*g, u);
            }
        }
    }

    per_instruction_set! {
        /// `h <- silu(g) * u`, [`silu_mul`] into another buffer.
        pub fn silu_mul_to(g: &[f32], u: &[f32], h: &mut [f32]) {
            for (h, (&g, &u)) in h.iter_mut().zip(g.iter().zip(u)) {
                *h = silu_times(g, u);
            }
        }
    }

    /// `silu(g) * u = g / (1 + exp(-g)) * u`
    #[inline(always)]
    fn silu_times(g: f32, u: f32) -> f32 {
        g / (1.0 + exp(-g)) * u
    }

    per_instruction_set! {
        /// SwiGLU's backward: `dg <- dh * dh/dg`, `du <- dh * dh/du`, with
        /// `dh/dg = u s (1 + g (1 - s))`, `dh/du = silu(g)`, `s = sigmoid(g)`; `dg`
        /// holds dh on entry.
        pub fn silu_mul_backward(g: &[f32], u: &[f32], dg: &mut [f32], du: &mut [f32]) {
            let n = g.len().min(u.len()).min(dg.len()).min(du.len());
            for i in 0..n {
                let (gi, ui, dh) = (g[i], u[i], dg[i]);
                let s = 1.0 / (1.0 + exp(-gi));
                du[i] = dh * (gi * s);
                dg[i] = dh * (ui * (s * (1.0 + gi * (1.0 - s))));
            }
        }
    }

    per_instruction_set! {
        /// `x <- (x + y) / sqrt(mean((x + y)^2) + eps)` over one row; gives the
        /// factor, `1 / sqrt(mean((x + y)^2) + eps)`.
        pub fn add_rms_norm_row(x: &mut [f32], y: &[f32], eps: f32) -> f32 {
            let mut partial = [0.0f32; LANES];
            let mut xc = x.chunks_exact_mut(LANES);
            let mut yc = y.chunks_exact(LANES);
            for (x, y) in (&mut xc).zip(&mut yc) {
                for i in 0..LANES {
                    let s = x[i] + y[i];
                    x[i] = s;
                    partial[i] += s * s;
                }
            }
            for (x, y) in xc.into_remainder().iter_mut().zip(yc.remainder()) {
                *x += *y;
                partial[0] += *x * *x;
            }
            let inv = 1.0 / (pairwise_sum(partial) / x.len() as f32 + eps).sqrt();
            for x in x.iter_mut() {
                *x *= inv;
            }
            inv
        }
    }

    per_instruction_set! {
        /// RMSNorm's backward over one row, `dy <- r (dy - out mean(dy * out))`,
        /// for the norm's output `out` and `r = 1 / sqrt(mean(h^2) + eps)` of its
        /// input h.
        pub fn rms_norm_backward_row(dy: &mut [f32], out: &[f32], r: f32) {
            let mean = dot(dy, out) / out.len() as f32;
            for (dy, out) in dy.iter_mut().zip(out) {
                *dy = r * (*dy - *out * mean);
            }
        }
    }

    per_instruction_set! {
        /// `x <- exp(x - max x) / sum exp(x - max x)` over one row; gives
        /// `[max x, 1 / sum exp(x - max x)]`.
        pub fn softmax_row(x: &mut [f32]) -> [f32; 2] {
            let (max, sum) = exp_minus_max_sum(x);
            let inv = 1.0 / sum;
            for v in x.iter_mut() {
                *v *= inv;
            }
            [max, inv]
        }
    }

    per_instruction_set! {
        /// `x <- exp(x - max x)` over one row, the softmax before its division; gives
        /// [`softmax_row`]'s `[max x, 1 / sum exp(x - max x)]`. Attention multiplies
        /// these by v and divides the product's `d` values per row, not the `seq`
        /// probabilities.
        pub fn exp_row(x: &mut [f32]) -> [f32; 2] {
            let (max, sum) = exp_minus_max_sum(x);
            [max, 1.0 / sum]
        }
    }

    per_instruction_set! {
        /// `x <- exp(x - max) * inv` over one row: [`softmax_row`] again from the
        /// stats it gave, in one pass (its bits, given the same row).
        pub fn exp_scaled_row(x: &mut [f32], max: f32, inv: f32) {
            for v in x.iter_mut() {
                *v = exp(*v - max) * inv;
            }
        }
    }

    per_instruction_set! {
        /// `x <- exp(x - max x)` over one row; gives `sum exp(x - max x)`. The
        /// vector paths' exp on its own, for the test that holds it to the plain one.
        #[cfg(test)]
        pub fn exp_minus_max_row(x: &mut [f32]) -> f32 {
            exp_minus_max_sum(x).1
        }
    }

    per_instruction_set! {
        /// The softmax's backward over one row: `dp <- p * (dp - sum(p * dp))`.
        pub fn softmax_grad_row(p: &[f32], dp: &mut [f32]) {
            let dot = dot(p, dp);
            for (p, dp) in p.iter().zip(dp.iter_mut()) {
                *dp = p * (*dp - dot);
            }
        }
    }

    /// `sum a * b` over one row, in [`LANES`] partial sums.
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut partial = [0.0f32; LANES];
        let mut ac = a.chunks_exact(LANES);
        let mut bc = b.chunks_exact(LANES);
        for (a, b) in (&mut ac).zip(&mut bc) {
            for i in 0..LANES {
                partial[i] += a[i] * b[i];
            }
        }
        for (a, b) in ac.remainder().iter().zip(bc.remainder()) {
            partial[0] += a * b;
        }
        pairwise_sum(partial)
    }

    /// `x <- exp(x - max x)` over one row; gives `max x` and the sum of the new
    /// values.
    #[inline(always)]
    fn exp_minus_max_sum(x: &mut [f32]) -> (f32, f32) {
        let max = row_max(x);
        let mut partial = [0.0f32; LANES];
        let mut chunks = x.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                c[i] = exp(c[i] - max);
                partial[i] += c[i];
            }
        }
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            partial[0] += *v;
        }
        (max, pairwise_sum(partial))
    }

    /// One head's rotate-half RoPE at one position.
    pub fn rope_row(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        rotate_halves(x, cos, sin, false);
    }

    /// [`rope_row`]'s backward: `dy <- J^T dy` for its Jacobian J (the rotation by
    /// the opposite angles where, as in RoPE's tables, the halves of sin are equal).
    pub fn rope_row_backward(dy: &mut [f32], cos: &[f32], sin: &[f32]) {
        rotate_halves(dy, cos, sin, true);
    }

    /// With `(a, b)` x's halves: `(a c1 - b s1, b c2 + a s2)`, RoPE; `transposed`,
    /// `(a c1 + b s2, b c2 - a s1)`, its Jacobian's transpose. The signs multiply
    /// exactly, so RoPE's bits are those of `a c1 + (-b) s1`.
    #[inline(always)]
    fn rotate_halves(x: &mut [f32], cos: &[f32], sin: &[f32], transposed: bool) {
        let half = x.len() / 2;
        let (x1, x2) = x.split_at_mut(half);
        let (c1, c2) = cos.split_at(half);
        let (s1, s2) = sin.split_at(half);
        let (sign, u, w) = match transposed {
            false => (-1.0f32, s1, s2),
            true => (1.0f32, s2, s1),
        };
        for i in 0..half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * c1[i] + (sign * b) * u[i];
            x2[i] = b * c2[i] + (-sign * a) * w[i];
        }
    }

    /// Lanes of a row's reductions: 16 partial results the compiler keeps in one
    /// vector.
    const LANES: usize = 16;

    /// The largest value of a row (NaNs skipped). A comparison rather than
    /// `f32::max`, whose NaN rule costs two more instructions per vector; both skip
    /// a NaN element, and a lane never holds NaN.
    #[inline(always)]
    fn row_max(x: &[f32]) -> f32 {
        // Four vectors of lanes: a vector's comparisons wait on the last ones (a
        // few cycles each), so one vector would run at a quarter of the loads' pace.
        // Written as a select: an `if` that assigns compiled to masked stores.
        #[inline(always)]
        fn keep_max(lane_max: &mut [f32], c: &[f32]) {
            for (m, &v) in lane_max.iter_mut().zip(c) {
                *m = if v > *m { v } else { *m };
            }
        }
        let mut lane_max = [f32::NEG_INFINITY; 4 * LANES];
        let mut chunks = x.chunks_exact(4 * LANES);
        for c in &mut chunks {
            keep_max(&mut lane_max, c);
        }
        let mut rest = chunks.remainder().chunks_exact(LANES);
        for c in &mut rest {
            keep_max(&mut lane_max[..LANES], c);
        }
        let max = lane_max.into_iter().fold(f32::NEG_INFINITY, f32::max);
        rest.remainder().iter().fold(max, |m, &v| m.max(v))
    }

    /// The lanes summed in a fixed pairwise order: the same bits whatever the
    /// vector width.
    #[inline(always)]
    fn pairwise_sum(mut partial: [f32; LANES]) -> f32 {
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            for i in 0..width {
                partial[i] += partial[i + width];
            }
        }
        partial[0]
    }

    /// `e^x` to about one ulp (Cephes' expf): `x = n ln2 + r` with |r| <= ln2/2,
    /// `e^r` by a degree-7 polynomial, `2^n` written into the exponent bits. Branch
    /// free, so loops over it vectorise. Inputs are clamped to where the result is a
    /// normal float. The multiply-adds are fused: half the instructions of a
    /// multiply and an add, and one rounding instead of two.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        // ln 2 split in two so that n * LN2_HI is exact.
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let x = x.clamp(-87.0, 88.0);
        let n = x.mul_add(LOG2E, 0.5).floor();
        let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
        let mut p = 1.987_569_1e-4_f32;
        p = p.mul_add(r, 1.398_199_9e-3);
        p = p.mul_add(r, 8.333_452e-3);
        p = p.mul_add(r, 4.166_579_6e-2);
        p = p.mul_add(r, 1.666_666_5e-1);
        p = p.mul_add(r, 0.5); // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
        let er = (p * r).mul_add(r, r) + 1.0;
        // n is in [-126, 127] after the clamp, so n + 127 is a normal exponent. It
        // is read from the mantissa bits of n + 127 + 2^23 (no float-to-int cast,
        // which does not vectorise).
        let biased = (n + (127.0 + 8_388_608.0)).to_bits() - 0x4B00_0000;
        er * f32::from_bits(biased << 23)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::B;

    /// `amplitude * sin(0.618 i + seed)`, i < n: smooth values of both signs.
    fn wave(n: usize, seed: f32, amplitude: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.618 + seed).sin() * amplitude)
            .collect()
    }

    /// Every element within `rtol` of `want`'s (absolute below 1).
    fn assert_close<const D: usize>(got: Tensor<B, D>, want: Tensor<B, D>, rtol: f32, what: &str) {
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        let want: Vec<f32> = want.into_data().to_vec().unwrap();
        assert_eq!(got.len(), want.len(), "{what}: sizes");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= rtol * w.abs().max(1.0),
                "{what} element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn exp_is_within_two_ulps_of_the_exact_value() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = simd::exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(
            worst < 2.0 * f32::EPSILON as f64,
            "worst relative error {worst}"
        );
        // Far outside the range: clamped, finite, and the ratios silu needs stay right.
        assert!(simd::exp(-1000.0) < 1e-37 && simd::exp(1000.0).is_finite());
    }

    /// The vector path this CPU takes gives the bits of the plain one: `exp` called
    /// on its own is compiled without vector features (its `mul_add` is libm's
    /// `fmaf` there, an FMA instruction in the vector loops).
    #[test]
    fn vector_exp_gives_the_plain_paths_bits() {
        let row = wave(37, 0.3, 30.0);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut got = row.clone();
        simd::exp_minus_max_row(&mut got);
        for (i, (&x, &g)) in row.iter().zip(&got).enumerate() {
            let want = simd::exp(x - max);
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "element {i}: {g} against {want}"
            );
        }
    }

    /// The fused kernels against burn's ops, on rows longer and shorter than a
    /// vector and a chunk.
    #[test]
    fn fused_kernels_match_burns_ops() {
        let device: Device = Default::default();
        for (rows, d) in [(3, 5), (7, 512), (40, 97), (1, 16 * 1024 + 3)] {
            let values = |seed: f32| wave(rows * d, seed, 6.0);
            let t = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [rows, d]), &device);
            let (a, b) = (values(0.3), values(1.7));
            let close = |got, want, what: &str| {
                assert_close(got, want, 4e-6, &format!("{what} [{rows}x{d}]"))
            };
            close(
                silu_mul(t(a.clone()), t(b.clone())),
                activation::silu(t(a.clone())) * t(b.clone()),
                "silu_mul",
            );
            close(
                add_rms_norm(t(a.clone()), t(b.clone()), 1e-5),
                rms_norm(t(a.clone()) + t(b), 1e-5),
                "add_rms_norm",
            );
            close(
                softmax_last(t(a.clone())),
                activation::softmax(t(a), 1),
                "softmax_last",
            );
        }
    }

    /// The latents' reset on the host: the reset rows hold init at every position,
    /// the others are unchanged, as burn's broadcast masked select gives.
    #[test]
    fn reset_rows_is_the_broadcast_masked_select() {
        let device: Device = Default::default();
        let [rows, positions, hidden] = [3, 4, 5];
        let z = Tensor::<B, 1>::from_floats(
            wave(rows * positions * hidden, 0.2, 2.0).as_slice(),
            &device,
        )
        .reshape([rows, positions, hidden]);
        let init = Tensor::<B, 1>::from_floats(wave(hidden, 1.1, 1.0).as_slice(), &device);
        for flags in [
            [true, false, true],
            [false, false, false],
            [true, true, true],
        ] {
            let reset = Tensor::<B, 1, Bool>::from_data(flags, &device);
            assert!(on_host(&z) && on_host(&init));
            let got = reset_rows(z.clone(), reset.clone(), init.clone());
            let want = z.clone().mask_where(
                reset
                    .reshape([rows, 1, 1])
                    .expand([rows, positions, hidden]),
                init.clone()
                    .reshape([1, 1, hidden])
                    .expand([rows, positions, hidden]),
            );
            assert_eq!(got.into_data(), want.into_data(), "reset {flags:?}");
        }
    }

    #[test]
    fn fused_transpose_matches_a_swapped_view() {
        let device: Device = Default::default();
        for [batch, a, b] in [[2, 5, 3], [3, 97, 70], [1, 33, 64]] {
            let v: Vec<f32> = (0..batch * a * b).map(|i| i as f32).collect();
            let x = Tensor::<B, 3>::from_data(TensorData::new(v, [batch, a, b]), &device);
            let want: Vec<f32> = x.clone().swap_dims(1, 2).into_data().to_vec().unwrap();
            let got = transpose(x);
            assert_eq!(got.dims(), [batch, b, a]);
            assert_eq!(
                got.into_data().to_vec::<f32>().unwrap(),
                want,
                "{batch}x{a}x{b}"
            );
        }
    }

    /// Under autodiff the transpose (2-D transpose and row gather) gives the swapped
    /// view's values, and its gradient is the incoming one transposed back.
    #[test]
    fn tracked_transpose_matches_a_swapped_view() {
        let device = Device::default();
        for [batch, a, b] in [[1, 3, 2], [2, 5, 3], [3, 97, 70]] {
            let n = batch * a * b;
            let x = Tensor::<B, 3>::from_data(
                TensorData::new(wave(n, 0.3, 2.0), [batch, a, b]),
                &device,
            )
            .require_grad();
            let w = Tensor::<B, 3>::from_data(
                TensorData::new(wave(n, 1.7, 1.0), [batch, b, a]),
                &device,
            );
            let got = transpose(x.clone());
            let want = x.clone().swap_dims(1, 2);
            assert_eq!(got.dims(), [batch, b, a]);
            let values = |t: Tensor<B, 3>| t.into_data().to_vec::<f32>().unwrap();
            assert_eq!(values(got.clone()), values(want), "{batch}x{a}x{b}");
            let grads = (got * w.clone()).sum().backward();
            let dx = Tensor::from_inner(x.grad(&grads).unwrap());
            assert_eq!(
                values(dx),
                values(w.swap_dims(1, 2)),
                "d/dx {batch}x{a}x{b}"
            );
        }
    }

    /// The row-blocked GEMM against burn's matmul: fewer rows than a block, rows
    /// not a multiple of the blocks, and a column view of a wider weight (as
    /// SwiGLU's gate and up are).
    #[test]
    fn fused_matmul_matches_burns() {
        let device: Device = Default::default();
        for [m, k, n] in [[1, 3, 2], [63, 17, 5], [301, 40, 33]] {
            let t = |rows: usize, cols: usize, seed: f32| {
                let v = wave(rows * cols, seed, 1.5);
                Tensor::<B, 2>::from_data(TensorData::new(v, [rows, cols]), &device)
            };
            let x = t(m, k, 0.3);
            let wide = t(k, 2 * n, 1.1);
            for w in [wide.clone().narrow(1, 0, n), wide.clone().narrow(1, n, n)] {
                let want = x.clone().matmul(w.clone());
                let got = matmul(x.clone(), w, None).unwrap_or_else(|_| panic!("host f32 tensors"));
                assert_close(got, want, 1e-5, &format!("matmul {m}x{k}x{n}"));
            }
        }
    }

    /// Column blocks of one weight, read once: each block's product is the
    /// single-block kernel's on that column view, bit for bit.
    #[test]
    fn column_blocks_are_the_products_with_column_views() {
        let device: Device = Default::default();
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(wave(70 * 9, 0.2, 1.5), [70, 9]), &device);
        let w =
            Tensor::<B, 2>::from_data(TensorData::new(wave(9 * 12, 0.7, 1.5), [9, 12]), &device);
        let blocks = matmul_column_blocks(x.clone(), w.clone(), None, [3, 4, 5])
            .unwrap_or_else(|_| panic!("host f32 tensors"));
        let values = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
        for (block, (first, cols)) in blocks.into_iter().zip([(0, 3), (3, 4), (7, 5)]) {
            let one = matmul(x.clone(), w.clone().narrow(1, first, cols), None)
                .unwrap_or_else(|_| panic!("host f32 tensors"));
            assert_eq!(
                values(block),
                values(one),
                "columns {first}..{}",
                first + cols
            );
        }
        // Widths that do not add up to w's give the inputs back.
        assert!(matmul_column_blocks(x, w, None, [3, 4]).is_err());
    }

    /// Under autodiff on the CPU each column block is one operation: the values
    /// and the gradients of x and w are as accurate as burn's matmul of column
    /// views, both against burn's in f64. Three blocks (x's gradient summed over
    /// them, w's zero outside each block), one block as wide as w, a block of one
    /// column, and an untracked x (only w's gradient); m spans several row blocks.
    #[test]
    fn tracked_column_blocks_are_as_accurate_as_burns_matmul() {
        let device: Device = Default::default();
        let (m, k, n) = (150, 9, 12);
        let t = |v: Vec<f32>, shape: [usize; 2], dtype: DType| {
            Tensor::<B, 2>::from_data(
                TensorData::new(v, shape).convert_dtype(dtype),
                (&device, dtype),
            )
        };
        let f64s = |t: TensorData| t.convert::<f64>().to_vec::<f64>().unwrap();
        for (widths, x_tracked) in [
            (vec![3, 4, 5], true),
            (vec![12], true),
            (vec![1, 11], true),
            (vec![7, 5], false),
        ] {
            let run = |dtype: DType, ours: bool| {
                let mut x = t(wave(m * k, 0.2, 1.5), [m, k], dtype);
                if x_tracked {
                    x = x.require_grad();
                }
                let w = t(wave(k * n, 0.7, 1.5), [k, n], dtype).require_grad();
                let blocks: Vec<Tensor<B, 2>> = match (ours, widths.len()) {
                    (true, 3) => {
                        matmul_column_blocks(x.clone(), w.clone(), None, [3, 4, 5]).map(Vec::from)
                    }
                    (true, 2) => {
                        let widths = [widths[0], widths[1]];
                        matmul_column_blocks(x.clone(), w.clone(), None, widths).map(Vec::from)
                    }
                    (true, _) => matmul(x.clone(), w.clone(), None).map(|y| vec![y]),
                    (false, _) => {
                        let mut first = 0;
                        Ok(widths
                            .iter()
                            .map(|&cols| {
                                first += cols;
                                x.clone().matmul(w.clone().narrow(1, first - cols, cols))
                            })
                            .collect())
                    }
                }
                .unwrap_or_else(|_| panic!("f32 on the flex device"));
                // sum over blocks of sum(block * weights)
                let loss = blocks
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let [rows, cols] = b.dims();
                        let weights =
                            t(wave(rows * cols, 1.3 + i as f32, 1.0), [rows, cols], dtype);
                        (b.clone() * weights).sum()
                    })
                    .reduce(|a, b| a + b)
                    .unwrap();
                let grads = loss.backward();
                let mut out: Vec<Vec<f64>> =
                    blocks.into_iter().map(|b| f64s(b.into_data())).collect();
                out.push(f64s(w.grad(&grads).unwrap().into_data()));
                match x.grad(&grads) {
                    Some(g) => out.push(f64s(g.into_data())),
                    None => assert!(!x_tracked, "x's gradient"),
                }
                out
            };
            let (exact, ours, burns) = (
                run(DType::F64, false),
                run(DType::F32, true),
                run(DType::F32, false),
            );
            assert_eq!(ours.len(), exact.len(), "{widths:?}: outputs and gradients");
            let names: Vec<String> = (0..widths.len())
                .map(|i| format!("block {i}"))
                .chain(["d/dw".to_string(), "d/dx".to_string()])
                .collect();
            let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            let what = format!("widths {widths:?}");
            assert_as_accurate_as_burns(&what, &names, &exact, &ours, &burns);
        }
    }

    /// Inside a [`FrozenWeights`] span a keyed weight is read once: a changed
    /// tensor under the same key still gives the first one's product (which is
    /// what the span promises callers: their weights do not change inside it).
    /// After the span closes the new tensor is read.
    /// x = [1, 2] and two weights under one key, the identity (`w1`) and twice it
    /// (`w2`): which one a keyed product read shows in its result.
    pub(crate) struct KeyedProbe {
        x: Tensor<B, 2>,
        pub w1: Tensor<B, 2>,
        pub w2: Tensor<B, 2>,
        key: Option<WeightKey>,
    }

    impl KeyedProbe {
        pub(crate) fn new() -> Self {
            let device: Device = Default::default();
            let t = |v: Vec<f32>, shape: [usize; 2]| {
                Tensor::<B, 2>::from_data(TensorData::new(v, shape), &device)
            };
            KeyedProbe {
                x: t(vec![1.0, 2.0], [1, 2]),
                w1: t(vec![1.0, 0.0, 0.0, 1.0], [2, 2]),
                w2: t(vec![2.0, 0.0, 0.0, 2.0], [2, 2]),
                key: Some(WeightKey {
                    param: ParamId::new(),
                    first_col: 0,
                    cols: 2,
                }),
            }
        }

        /// `x @ w` through [`matmul`] under the probe's key.
        pub(crate) fn product(&self, w: &Tensor<B, 2>) -> Vec<f32> {
            matmul(self.x.clone(), w.clone(), self.key)
                .unwrap_or_else(|_| panic!("host f32 tensors"))
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        }
    }

    #[test]
    fn frozen_weights_are_read_once_per_span() {
        let probe = KeyedProbe::new();
        let (x, w1, w2) = (probe.x.clone(), &probe.w1, &probe.w2);
        let product = |w: &Tensor<B, 2>| probe.product(w);
        {
            let _outer = FrozenWeights::open();
            assert_eq!(product(w1), [1.0, 2.0]);
            {
                // A nested span joins the outer one and leaves it open on closing.
                let _inner = FrozenWeights::open();
                assert_eq!(product(w2), [1.0, 2.0], "the copy kept for the key");
            }
            assert_eq!(product(w2), [1.0, 2.0], "still inside the outer span");
        }
        assert_eq!(product(w2), [2.0, 4.0], "read afresh after the span");
        // Work set apart from the span reads afresh; the span is back after it.
        {
            let _span = FrozenWeights::open();
            assert_eq!(product(w1), [1.0, 2.0]);
            assert_eq!(apart_from_frozen_weights(|| product(w2)), [2.0, 4.0]);
            assert_eq!(product(w2), [1.0, 2.0], "the span's copy again");
        }
        // Without a key nothing is kept, inside a span too.
        let _span = FrozenWeights::open();
        let plain = |w: &Tensor<B, 2>| {
            matmul(x.clone(), w.clone(), None).unwrap_or_else(|_| panic!("host f32 tensors"))
        };
        assert_eq!(plain(w1).into_data().to_vec::<f32>().unwrap(), [1.0, 2.0]);
        assert_eq!(plain(w2).into_data().to_vec::<f32>().unwrap(), [2.0, 4.0]);
    }

    /// The blocked attention against burn's matmul, softmax, matmul: sequences
    /// shorter and longer than a query block and not a multiple of it.
    #[test]
    fn fused_attention_matches_burns_ops() {
        let device: Device = Default::default();
        for [batch, seq, heads, d] in [
            [1, 3, 1, 2],
            [2, 70, 3, 5],
            [1, 129, 2, 32],
            [1, 1100, 2, 4],
        ] {
            let n = batch * seq * heads * d;
            let t = |seed: f32| {
                let v = wave(n, seed, 2.0);
                Tensor::<B, 4>::from_data(TensorData::new(v, [batch, seq, heads, d]), &device)
            };
            let (q, k, v) = (t(0.3), t(1.7), t(2.9));
            let heads_first = |x: Tensor<B, 4>| x.swap_dims(1, 2);
            let q_scaled = q.clone() / (d as f64).sqrt();
            let scores = heads_first(q_scaled).matmul(heads_first(k.clone()).swap_dims(2, 3));
            let want = activation::softmax(scores, 3)
                .matmul(heads_first(v.clone()))
                .swap_dims(1, 2)
                .reshape([batch, seq, heads * d]);
            let got = attention(q, k, v);
            assert_close(
                got,
                want,
                4e-6,
                &format!("attention {batch}x{seq}x{heads}x{d}"),
            );
        }
    }

    /// Under autodiff on the CPU the fused values and gradients equal burn's.
    #[test]
    fn tracked_kernels_give_burns_values_and_gradients() {
        let device = Device::default();
        let (rows, d) = (6, 37);
        let values = |seed: f32| wave(rows * d, seed, 5.0);
        let shape = [1, 2, rows / 2, d];
        let leaf = |v: Vec<f32>| {
            Tensor::<B, 4>::from_data(TensorData::new(v, shape), &device).require_grad()
        };
        let close = |got, want, what: &str| assert_close::<4>(got, want, 2e-5, what);
        let weights = Tensor::<B, 4>::from_data(TensorData::new(values(2.9), shape), &device);
        // silu(g) * u
        let (g, u, g2, u2) = (
            leaf(values(0.3)),
            leaf(values(1.7)),
            leaf(values(0.3)),
            leaf(values(1.7)),
        );
        let fused = silu_mul(g.clone(), u.clone());
        let plain = activation::silu(g2.clone()) * u2.clone();
        close(fused.clone(), plain.clone(), "silu_mul value");
        let grads = (fused * weights.clone()).sum().backward();
        let plain_grads = (plain * weights.clone()).sum().backward();
        for (a, b, what) in [(&g, &g2, "d/dgate"), (&u, &u2, "d/dup")] {
            let grad = |x: &Tensor<B, 4>, grads| Tensor::from_inner(x.grad(grads).unwrap());
            close(grad(a, &grads), grad(b, &plain_grads), what);
        }
        // softmax(s) @ v, v: [1, 2, d, rows/2] so the product is [1, 2, rows/2, rows/2]
        let (s, v, s2, v2) = (
            leaf(values(0.9)),
            leaf(values(4.1)),
            leaf(values(0.9)),
            leaf(values(4.1)),
        );
        let v_t = |v: Tensor<B, 4>| v.swap_dims(2, 3);
        let fused = softmax_matmul(s.clone(), v_t(v.clone()));
        let plain = activation::softmax(s2.clone(), 3).matmul(v_t(v2.clone()));
        close(fused.clone(), plain.clone(), "softmax_matmul value");
        let w = weights.narrow(3, 0, rows / 2);
        let grads = (fused * w.clone()).sum().backward();
        let plain_grads = (plain * w).sum().backward();
        for (a, b, what) in [(&s, &s2, "d/dscores"), (&v, &v2, "d/dv")] {
            let grad = |x: &Tensor<B, 4>, grads| Tensor::from_inner(x.grad(grads).unwrap());
            close(grad(a, &grads), grad(b, &plain_grads), what);
        }
    }

    /// Attention under autodiff on the CPU (one operation with its own backward): values
    /// and the gradients of q, k and v as accurate as burn's own f32 ops (matmul,
    /// softmax, matmul), both measured against burn's ops in f64. Several batch rows
    /// and heads, and scores up to a few hundred, where the max and the cancellation
    /// in softmax's backward matter.
    #[test]
    fn tracked_attention_is_as_accurate_as_burns_ops() {
        let device = Device::default();
        for [batch, seq, heads, d] in [[1, 1, 1, 1], [2, 7, 3, 4], [2, 70, 2, 32]] {
            let n = batch * seq * heads * d;
            let shape = [batch, seq, heads, d];
            let tensor = |seed: f32, amplitude: f32, dtype: DType| {
                let v = TensorData::new(wave(n, seed, amplitude), shape).convert_dtype(dtype);
                Tensor::<B, 4>::from_data(v, (&device, dtype))
            };
            let plain = |q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>| {
                let heads_first = |x: Tensor<B, 4>| x.swap_dims(1, 2);
                let q = q / (d as f64).sqrt();
                let scores = heads_first(q).matmul(heads_first(k).swap_dims(2, 3));
                activation::softmax(scores, 3)
                    .matmul(heads_first(v))
                    .swap_dims(1, 2)
                    .reshape([batch, seq, heads * d])
            };
            // Output and gradients of `sum(attention * w)`, as f64 vectors.
            let run = |dtype: DType, fused: bool| {
                let [q, k, v] = [0.3, 1.7, 2.9].map(|s| tensor(s, 3.0, dtype).require_grad());
                let out = if fused {
                    attention(q.clone(), k.clone(), v.clone())
                } else {
                    plain(q.clone(), k.clone(), v.clone())
                };
                let w = tensor(4.1, 1.0, dtype).reshape([batch, seq, heads * d]);
                let grads = (out.clone() * w).sum().backward();
                let f64s = |t: TensorData| t.convert::<f64>().to_vec::<f64>().unwrap();
                let grad = |x: &Tensor<B, 4>| f64s(x.grad(&grads).unwrap().into_data());
                [f64s(out.into_data()), grad(&q), grad(&k), grad(&v)]
            };
            let exact = run(DType::F64, false);
            let (ours, burns) = (run(DType::F32, true), run(DType::F32, false));
            let names = ["value", "d/dq", "d/dk", "d/dv"];
            let what = format!("{batch}x{seq}x{heads}x{d}");
            assert_as_accurate_as_burns(&what, &names, &exact, &ours, &burns);
        }
    }

    /// Each of `ours` is as accurate as its counterpart in `burns` (burn's f32 ops),
    /// both against the f64 `exact`: its largest error at most twice burn's, plus
    /// 1e-6 of the largest exact value.
    fn assert_as_accurate_as_burns(
        what: &str,
        names: &[&str],
        exact: &[Vec<f64>],
        ours: &[Vec<f64>],
        burns: &[Vec<f64>],
    ) {
        for (((exact, ours), burns), name) in exact.iter().zip(ours).zip(burns).zip(names) {
            let error = |got: &Vec<f64>| {
                got.iter()
                    .zip(exact)
                    .fold(0.0f64, |m, (g, e)| m.max((g - e).abs()))
            };
            let scale = exact.iter().fold(0.0f64, |m, e| m.max(e.abs()));
            let (ours, burns) = (error(ours), error(burns));
            assert!(
                ours <= 2.0 * burns + 1e-6 * scale.max(1.0),
                "{name} {what}: error {ours:e}, burn's {burns:e} (scale {scale})"
            );
        }
    }

    /// The backward's probabilities from the forward's row stats are the
    /// forward's, bit for bit.
    #[test]
    fn probabilities_from_row_stats_are_the_softmax_bits() {
        for (len, amplitude) in [(1, 1.0), (17, 3.0), (916, 40.0)] {
            let scores = wave(len, 0.4, amplitude);
            let mut softmax = scores.clone();
            let [max, inv] = simd::softmax_row(&mut softmax);
            let mut again = scores;
            simd::exp_scaled_row(&mut again, max, inv);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&again), bits(&softmax), "row of {len}");
        }
    }

    /// The post-norm `rms_norm(x + y)` and RoPE under autodiff on the CPU (each one
    /// operation with its own backward): values and gradients as accurate as burn's
    /// own f32 ops, both measured against burn's ops in f64. RoPE's tables here are
    /// arbitrary (halves of sin unequal), so the backward is the Jacobian's
    /// transpose and not only the inverse rotation.
    #[test]
    fn tracked_norm_and_rope_are_as_accurate_as_burns_ops() {
        let device = Device::default();
        let [batch, seq, heads, d] = [2, 5, 3, 8];
        let shape = [batch, seq, heads, d];
        let n = batch * seq * heads * d;
        let tensor = |values: Vec<f32>, dims: [usize; 4], dtype: DType| {
            let v = TensorData::new(values, dims).convert_dtype(dtype);
            Tensor::<B, 4>::from_data(v, (&device, dtype))
        };
        let f64s = |t: TensorData| t.convert::<f64>().to_vec::<f64>().unwrap();
        // add_rms_norm over rows of d, with rows of large and small norm.
        let norm = |dtype: DType, fused: bool| {
            let [x, y] = [0.3, 1.7].map(|seed| tensor(wave(n, seed, 3.0), shape, dtype));
            let (x, y) = (x.require_grad(), y.require_grad());
            let out = match fused {
                true => add_rms_norm(x.clone(), y.clone(), 1e-5),
                false => rms_norm(x.clone() + y.clone(), 1e-5),
            };
            let w = tensor(wave(n, 2.9, 1.0), shape, dtype);
            let grads = (out.clone() * w).sum().backward();
            let grad = |x: &Tensor<B, 4>| f64s(x.grad(&grads).unwrap().into_data());
            [f64s(out.into_data()), grad(&x), grad(&y)]
        };
        let (exact, ours, burns) = (
            norm(DType::F64, false),
            norm(DType::F32, true),
            norm(DType::F32, false),
        );
        assert_as_accurate_as_burns(
            "add_rms_norm",
            &["value", "d/dx", "d/dy"],
            &exact,
            &ours,
            &burns,
        );
        // RoPE with tables of seq + 2 positions (rope reads the first seq).
        let rope_run = |dtype: DType, fused: bool| {
            let x = tensor(wave(n, 0.9, 2.0), shape, dtype).require_grad();
            let table = |seed| {
                let v = TensorData::new(wave((seq + 2) * d, seed, 1.0), [seq + 2, d]);
                Tensor::<B, 2>::from_data(v.convert_dtype(dtype), (&device, dtype))
            };
            let (cos, sin) = (table(0.1), table(2.2));
            let out = match fused {
                true => rope(x.clone(), &cos, &sin).unwrap_or_else(|_| panic!("kernel")),
                false => {
                    let rows = |t: Tensor<B, 2>| t.narrow(0, 0, seq).reshape([1, seq, 1, d]);
                    let half = d / 2;
                    let rotated = Tensor::cat(
                        vec![
                            -x.clone().narrow(3, half, half),
                            x.clone().narrow(3, 0, half),
                        ],
                        3,
                    );
                    x.clone() * rows(cos) + rotated * rows(sin)
                }
            };
            let w = tensor(wave(n, 4.1, 1.0), shape, dtype);
            let grads = (out.clone() * w).sum().backward();
            [
                f64s(out.into_data()),
                f64s(x.grad(&grads).unwrap().into_data()),
            ]
        };
        let (exact, ours, burns) = (
            rope_run(DType::F64, false),
            rope_run(DType::F32, true),
            rope_run(DType::F32, false),
        );
        assert_as_accurate_as_burns("rope", &["value", "d/dx"], &exact, &ours, &burns);
    }

    /// The host backward's gradients against the exact (f64) gradients of burn's
    /// graph, as accurate as burn's f32 graph.
    #[test]
    fn host_attention_backward_is_as_accurate_as_burns_graph() {
        let device = Device::default();
        // The last shape's queries span three of the backward's row blocks.
        let long = 2 * BACKWARD_BLOCK + 5;
        for [batch, seq, heads, d] in [[1, 1, 1, 1], [2, 7, 3, 4], [2, 70, 2, 32], [1, long, 2, 8]]
        {
            let n = batch * seq * heads * d;
            let shape = [batch, seq, heads, d];
            let values = [0.3, 1.7, 2.9, 4.1].map(|seed| wave(n, seed, 3.0));
            let tensor = |v: &Vec<f32>, dtype: DType| {
                let v = TensorData::new(v.clone(), shape).convert_dtype(dtype);
                Tensor::<B, 4>::from_data(v, (&device, dtype))
            };
            // Gradients of `sum(attention(q, k, v) * w)` through burn's graph.
            let graph = |dtype: DType| {
                let [q, k, v] = [0, 1, 2].map(|i| tensor(&values[i], dtype).require_grad());
                let heads_first = |x: Tensor<B, 4>| x.swap_dims(1, 2);
                let scores = heads_first(q.clone() / (d as f64).sqrt())
                    .matmul(heads_first(k.clone()).swap_dims(2, 3));
                let out = activation::softmax(scores, 3).matmul(heads_first(v.clone()));
                let w = heads_first(tensor(&values[3], dtype));
                let grads = (out * w).sum().backward();
                let f64s = |t: TensorData| t.convert::<f64>().to_vec::<f64>().unwrap();
                [&q, &k, &v].map(|x| f64s(x.grad(&grads).unwrap().into_data()))
            };
            let (exact, burns) = (graph(DType::F64), graph(DType::F32));
            let scale = 1.0 / (d as f32).sqrt();
            let q_scaled: Vec<f32> = values[0].iter().map(|x| x * scale).collect();
            let mut stats = vec![0.0f32; 2 * batch * heads * seq];
            let (k, v) = (&values[1], &values[2]);
            attention_host_values(shape, &q_scaled, k, v, Some(&mut stats));
            let (dq, dk, dv) = attention_backward_host(shape, &q_scaled, k, v, &values[3], &stats);
            let dq: Vec<f32> = dq.iter().map(|x| x * scale).collect();
            let ours = [dq, dk, dv].map(|g| g.into_iter().map(f64::from).collect::<Vec<_>>());
            let what = format!("{batch}x{seq}x{heads}x{d}");
            assert_as_accurate_as_burns(&what, &["d/dq", "d/dk", "d/dv"], &exact, &ours, &burns);
        }
    }

    #[test]
    fn autodiff_tensors_take_burns_ops_and_keep_their_gradient() {
        let device = Device::default();
        let g = Tensor::<B, 2>::from_data(TensorData::new(vec![0.5f32, -1.0], [1, 2]), &device)
            .require_grad();
        let u = Tensor::<B, 2>::from_data(TensorData::new(vec![2.0f32, 3.0], [1, 2]), &device);
        let grads = silu_mul(g.clone(), u).sum().backward();
        let dg: Vec<f32> = g.grad(&grads).unwrap().into_data().to_vec().unwrap();
        // d/dg silu(g) * u = u * s (1 + g (1 - s)), s = sigmoid(g)
        for (i, (g, u)) in [(0.5f32, 2.0f32), (-1.0, 3.0)].into_iter().enumerate() {
            let s = 1.0 / (1.0 + (-g).exp());
            let want = u * s * (1.0 + g * (1.0 - s));
            assert!((dg[i] - want).abs() < 1e-6, "{} vs {want}", dg[i]);
        }
    }
}
