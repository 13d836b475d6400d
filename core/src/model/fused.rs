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
//! * on tracked tensors of the flex device, SwiGLU's product and attention: each
//!   one operation of burn's autodiff with its own backward (`SiluMul`,
//!   `HostAttention`: flash attention's backward), which recursa's backend type
//!   allows ([`crate::B`]).
//!
//! Everywhere else (GPUs, ndarray, other float types) the same functions run burn's
//! ops. burn 0.21's CPU backend has no hook to add a kernel, hence these.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::module::ParamId;

use burn::tensor::module;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{activation, backend::Backend, DType, Int, Tensor, TensorData, TensorPrimitive};
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
        record::<_, _, 2, D, D>(SiluMul::<D>, [tracked(gate), tracked(up)], |[g, u]| {
            let mut h = g.clone();
            // unwrap: f32 (checked by `place`).
            let (hs, us) = (
                h.as_mut_slice::<f32>().unwrap(),
                u.as_slice::<f32>().unwrap(),
            );
            hs.par_chunks_mut(CHUNK)
                .zip(us.par_chunks(CHUNK))
                .for_each(|(h, u)| simd::silu_mul(h, u));
            ((g, u), h)
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
        let mut du = vec![0.0f32; dgs.len()];
        // unwrap: f32, as in the forward.
        let (gs, us) = (g.as_slice::<f32>().unwrap(), u.as_slice::<f32>().unwrap());
        dgs.par_chunks_mut(CHUNK)
            .zip(du.par_chunks_mut(CHUNK))
            .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
            .for_each(|((dh_to_dg, du), (g, u))| simd::silu_mul_backward(g, u, dh_to_dg, du));
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
    if !on_host(&x) || !on_host(&y) || x.dims() != y.dims() {
        return rms_norm(x + y, eps);
    }
    let device = x.device();
    let d = x.dims()[D - 1];
    let (mut a, b) = (x.into_data(), y.into_data());
    // unwrap: both are f32 (checked by `on_host`).
    let xs = a.as_mut_slice::<f32>().unwrap();
    let ys = b.as_slice::<f32>().unwrap();
    let rows = (CHUNK / d).max(1) * d;
    xs.par_chunks_mut(rows)
        .zip(ys.par_chunks(rows))
        .for_each(|(x, y)| {
            for (x, y) in x.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
                simd::add_rms_norm_row(x, y, eps as f32);
            }
        });
    Tensor::from_data(a, (&device, DType::F32))
}

/// `softmax(x)` over the last axis (attention's probabilities), in place.
///
/// # Shapes
/// `x: [..., d]` -> same
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !on_host(&x) {
        return activation::softmax(x, D - 1);
    }
    let device = x.device();
    let d = x.dims()[D - 1];
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

/// `x @ w` on the host without autodiff: one GEMM (the gemm crate's, as burn-flex's)
/// per block of rows, the blocks on every core, into an output that is written once.
/// burn-flex's matmul fills its output with zeros and then copies it to realign it
/// (a tenth of trm-sudoku-mlpt's evaluation, docs/performance.md). Gives the inputs
/// back (`Err`) where burn's matmul must run (see [`on_host`]), and for empty shapes
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
/// (the q|k|v and gate|up projections).
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
    if !on_host(&x) || !on_host(&w) || k != k_w || m == 0 || k == 0 || !fits {
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
/// of rows, each at least [`MATMUL_ROWS`] tall, one per thread.
fn gemm_rows(x: &[f32], [m, k]: [usize; 2], w: &[f32], n: usize, cols: usize) -> Vec<f32> {
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
            // SAFETY: rows `first..first + rows` of x (k values each) and of out
            // (cols each) are inside their buffers, and w's k rows, n apart, hold
            // cols values each (the caller's slice starts at the block's first
            // column); the blocks are disjoint, and with `read_dst` false the GEMM
            // writes every element of its block without reading it.
            unsafe {
                gemm_into(
                    [rows, k, cols],
                    (out_ptr.at(first * cols), cols as isize),
                    (x.as_ptr().add(first * k), k as isize, 1),
                    (w.as_ptr(), n as isize, 1),
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
    let out = attention_host_values([batch, seq, heads, d], q, k, v);
    let out = TensorData::new(out, [batch, seq, heads * d]);
    Tensor::from_data(out, (&device, DType::F32))
}

/// The kernel of [`attention_host`] on values: q (already scaled), k and v
/// `[batch, seq, heads, d]` row-major -> the output `[batch, seq, heads * d]`.
fn attention_host_values(
    [batch, seq, heads, d]: [usize; 4],
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Vec<f32> {
    // Written once, by the tasks' second GEMMs (see `gemm_into`); not zeroed first.
    let mut out = Vec::<f32>::with_capacity(q.len());
    let out_ptr = SharedOut(out.as_mut_ptr());
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
            with_scratch(rows * seq, |scores| {
                // SAFETY: every pointer and stride stays inside its buffer: q/out rows
                // `first..first + rows` and k/v rows `0..seq` of head h, d values each;
                // `scores` holds rows x seq. Each task writes its own (rows, head) block
                // of `out`, which no other task touches, and `out` outlives the loop.
                unsafe {
                    // scores[i, j] = sum_c q[first + i, h, c] k[j, h, c]
                    gemm_into(
                        [rows, d, seq],
                        (scores.as_mut_ptr(), seq as isize),
                        (q.as_ptr().add(query), row, 1),
                        (k.as_ptr().add(head), 1, row),
                    );
                    for r in scores.chunks_exact_mut(seq) {
                        simd::softmax_row(r);
                    }
                    // out[first + i, h, :] = sum_j p[i, j] v[j, h, :]
                    gemm_into(
                        [rows, seq, d],
                        (out_ptr.at(query), row),
                        (scores.as_ptr(), seq as isize, 1),
                        (v.as_ptr().add(head), row, 1),
                    );
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
        record::<_, _, 3, 4, 3>(HostAttention, inputs, |[q, k, v]| {
            // unwrap: f32 (checked by `place`).
            let [qs, ks, vs] = [&q, &k, &v].map(|x| x.as_slice::<f32>().unwrap());
            let out = attention_host_values(shape, qs, ks, vs);
            let [batch, seq, heads, d] = shape;
            (
                (q, k, v, shape),
                TensorData::new(out, [batch, seq, heads * d]),
            )
        })
    }
}

impl Backward<burn::Dispatch, 3> for HostAttention {
    /// The values of q (scaled), k and v, and their shape `[batch, seq, heads, d]`.
    type State = (TensorData, TensorData, TensorData, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (q, k, v, shape) = ops.state;
        let d_out = inner_values::<3>(grads.consume::<burn::Dispatch>(&ops.node));
        // unwrap: f32, as in the forward.
        fn values(x: &TensorData) -> &[f32] {
            x.as_slice::<f32>().unwrap()
        }
        let (dq, dk, dv) =
            attention_backward_host(shape, values(&q), values(&k), values(&v), values(&d_out));
        for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                let grad = inner_tensor::<4>(TensorData::new(grad, shape));
                grads.register::<burn::Dispatch>(node.id, grad);
            }
        }
    }
}

/// One operation of burn's autodiff with its own backward (`op`): `compute` turns
/// the values of `inputs` (`DI` dims each) into the state `op`'s backward keeps
/// and the output (`DO` dims), which joins burn's graph after `inputs`. Given back
/// as the caller's backend, which is recursa's (its inputs were tracked).
fn record<O, B, const N: usize, const DI: usize, const DO: usize>(
    op: O,
    inputs: [FloatTensor<crate::B>; N],
    compute: impl FnOnce([TensorData; N]) -> (O::State, TensorData),
) -> Tensor<B, DO>
where
    O: Backward<burn::Dispatch, N>,
    B: Backend,
{
    let nodes = inputs.each_ref().map(|x| x.node.clone());
    // The inner tensors move out (no copy when nothing else holds them).
    let (state, out) = compute(inputs.map(|x| inner_values::<DI>(x.primitive)));
    let out = inner_tensor::<DO>(out);
    let out = match op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
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
/// from q and k (the forward keeps nothing `[seq, seq]`), then
/// `dV = P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(P * dP))`, `dQ = dS K`,
/// `dK = dS^T Q`: five GEMMs per head, on two `seq x seq` buffers per thread.
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
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = batch * seq * heads * d;
    assert!(
        [q.len(), k.len(), v.len(), d_out.len()] == [n; 4],
        "attention_backward_host: every input holds batch x seq x heads x d values"
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
        (0..batch * heads).into_par_iter().for_each(|task| {
            with_scratch(2 * seq * seq, |buffers| {
                let (p, dp) = buffers.split_at_mut(seq * seq);
                let (b, h) = (task / heads, task % heads);
                // (b, position 0, h, 0): the head's first value.
                let head = b * seq * heads * d + h * d;
                // SAFETY: q, k, v, d_out and the outputs are read and written at
                // rows 0..seq of head h (d values each, `row` apart), inside their n
                // values; p and dp hold seq x seq. Each task writes only its own
                // head's (b, :, h, :) values of dq, dk and dv, and every GEMM writes
                // all of its destination (k = d or seq > 0).
                unsafe {
                    let (q, k, v, d_out) = (
                        q.as_ptr().add(head),
                        k.as_ptr().add(head),
                        v.as_ptr().add(head),
                        d_out.as_ptr().add(head),
                    );
                    // P = softmax(q k^T)
                    gemm_into([seq, d, seq], (p.as_mut_ptr(), s), (q, row, 1), (k, 1, row));
                    for r in p.chunks_exact_mut(seq) {
                        simd::softmax_row(r);
                    }
                    // dV = P^T dO
                    gemm_into(
                        [seq, seq, d],
                        (dv_ptr.at(head), row),
                        (p.as_ptr(), 1, s),
                        (d_out, row, 1),
                    );
                    // dP = dO V^T, then dS = P * (dP - rowsum(P * dP)) in its place
                    gemm_into(
                        [seq, d, seq],
                        (dp.as_mut_ptr(), s),
                        (d_out, row, 1),
                        (v, 1, row),
                    );
                    for (p, dp) in p.chunks_exact(seq).zip(dp.chunks_exact_mut(seq)) {
                        simd::softmax_grad_row(p, dp);
                    }
                    // dQ = dS K, dK = dS^T Q
                    gemm_into(
                        [seq, seq, d],
                        (dq_ptr.at(head), row),
                        (dp.as_ptr(), s, 1),
                        (k, row, 1),
                    );
                    gemm_into(
                        [seq, seq, d],
                        (dk_ptr.at(head), row),
                        (dp.as_ptr(), 1, s),
                        (q, row, 1),
                    );
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
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The output buffer of [`attention`] and [`matmul`], shared by tasks that write
/// disjoint blocks.
struct SharedOut(*mut f32);

// SAFETY: tasks write disjoint blocks of the buffer (see `attention` and `matmul`).
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
/// where `cos` and `sin` hold one row per position, in x's buffer. Gives x back
/// (`Err`) where burn's ops must run (see [`on_host`]).
///
/// # Shapes
/// `x: [batch, seq, heads, head_dim]`, `cos, sin: [positions >= seq, head_dim]` -> like x
pub fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if !on_host(&x) || !on_host(cos) || !on_host(sin) {
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
    // One task per (batch, position): its heads share the position's table row.
    xs.par_chunks_mut(heads * d).enumerate().for_each(|(i, x)| {
        let p = i % seq;
        let (cos, sin) = (&cos[p * d..(p + 1) * d], &sin[p * d..(p + 1) * d]);
        for head in x.chunks_exact_mut(d) {
            simd::rope_row(head, cos, sin);
        }
    });
    Ok(Tensor::from_data(a, (&device, DType::F32)))
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
                *g = *g / (1.0 + exp(-*g)) * u;
            }
        }
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
        /// `x <- (x + y) / sqrt(mean((x + y)^2) + eps)` over one row.
        pub fn add_rms_norm_row(x: &mut [f32], y: &[f32], eps: f32) {
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
        }
    }

    per_instruction_set! {
        /// `x <- exp(x - max x) / sum exp(x - max x)` over one row.
        pub fn softmax_row(x: &mut [f32]) {
            let inv = 1.0 / exp_minus_max_sum(x);
            for v in x.iter_mut() {
                *v *= inv;
            }
        }
    }

    per_instruction_set! {
        /// `x <- exp(x - max x)` over one row; gives `sum exp(x - max x)`. The
        /// vector paths' exp on its own, for the test that holds it to the plain one.
        #[cfg(test)]
        pub fn exp_minus_max_row(x: &mut [f32]) -> f32 {
            exp_minus_max_sum(x)
        }
    }

    per_instruction_set! {
        /// The softmax's backward over one row: `dp <- p * (dp - sum(p * dp))`.
        pub fn softmax_grad_row(p: &[f32], dp: &mut [f32]) {
            let mut partial = [0.0f32; LANES];
            let mut pc = p.chunks_exact(LANES);
            let mut dc = dp.chunks_exact(LANES);
            for (p, dp) in (&mut pc).zip(&mut dc) {
                for i in 0..LANES {
                    partial[i] += p[i] * dp[i];
                }
            }
            for (p, dp) in pc.remainder().iter().zip(dc.remainder()) {
                partial[0] += p * dp;
            }
            let dot = pairwise_sum(partial);
            for (p, dp) in p.iter().zip(dp.iter_mut()) {
                *dp = p * (*dp - dot);
            }
        }
    }

    /// `x <- exp(x - max x)` over one row; gives the sum of the new values.
    #[inline(always)]
    fn exp_minus_max_sum(x: &mut [f32]) -> f32 {
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
        pairwise_sum(partial)
    }

    /// One head's rotate-half RoPE at one position.
    pub fn rope_row(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = x.len() / 2;
        let (x1, x2) = x.split_at_mut(half);
        let (c1, c2) = cos.split_at(half);
        let (s1, s2) = sin.split_at(half);
        for i in 0..half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * c1[i] + -b * s1[i];
            x2[i] = b * c2[i] + a * s2[i];
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
        let mut lane_max = [f32::NEG_INFINITY; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                if c[i] > lane_max[i] {
                    lane_max[i] = c[i];
                }
            }
        }
        let max = lane_max.into_iter().fold(f32::NEG_INFINITY, f32::max);
        chunks.remainder().iter().fold(max, |m, &v| m.max(v))
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

    /// The host backward's gradients against the exact (f64) gradients of burn's
    /// graph, as accurate as burn's f32 graph.
    #[test]
    fn host_attention_backward_is_as_accurate_as_burns_graph() {
        let device = Device::default();
        for [batch, seq, heads, d] in [[1, 1, 1, 1], [2, 7, 3, 4], [2, 70, 2, 32]] {
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
            let (dq, dk, dv) =
                attention_backward_host(shape, &q_scaled, &values[1], &values[2], &values[3]);
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
