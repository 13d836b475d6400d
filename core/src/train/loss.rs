//! Losses and metrics of a supervision step, as the reference `models/losses.py`.
//!
//! * stablemax cross-entropy is evaluated in float64, as the reference does
//!   (`logits.to(torch.float64)`); gradients flow back to the f32 logits.
//! * The ACT loss is `lm_loss + 0.5 * (q_halt_loss + q_continue_loss)`, where
//!   `lm_loss` sums, over rows, the token losses divided by the row's number of
//!   valid labels (at least 1). Q terms come from the halting policy.

use burn::tensor::{activation, DType, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::state::{Carry, StepOutput};
use crate::B;

/// Label value that contributes no loss and no metric.
pub const IGNORE_LABEL_ID: i64 = -100;

/// Which token loss the language-model head is trained with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// `s(x) = 1/(1-x)` for x<0, `x+1` otherwise, normalised (reference default for ARC).
    #[default]
    StablemaxCrossEntropy,
    /// Ordinary softmax cross-entropy in f32.
    SoftmaxCrossEntropy,
}

/// The float type the loss is computed in: float64 as the reference on the CPU
/// (and libtorch); float32 on the CubeCL backends (cuda, wgpu), whose kernel
/// fusion has no float64 (it panics on one).
pub fn loss_dtype(device: &crate::Device) -> DType {
    use burn::tensor::backend::DeviceOps;
    match device.inner() {
        crate::Device::Flex(_) | crate::Device::NdArray(_) => DType::F64,
        #[cfg(feature = "tch")]
        crate::Device::LibTorch(_) => DType::F64,
        _ => DType::F32,
    }
}

/// `log(s(x) / sum s(x))` over the last axis, in float64 as the reference where
/// the device allows ([`loss_dtype`]).
///
/// # Shapes
/// `logits: [..., vocab]` -> same, dtype f64 (or f32)
pub fn log_stablemax<const D: usize>(logits: Tensor<B, D>) -> Tensor<B, D> {
    let x = logits.clone().cast(loss_dtype(&logits.device()));
    let negative = x.clone().lower_elem(0.0);
    // The 1/(1-x) branch is evaluated on min(x, 0), so it stays finite (and its
    // gradient zero) where the other branch is taken.
    let s_neg = (x.clone().clamp_max(0.0).neg() + (1.0 + 1e-30)).recip_exact();
    let s = (x + 1.0).mask_where(negative, s_neg);
    let total = s.clone().sum_dim(D - 1);
    (s / total).log()
}

trait RecipExact {
    fn recip_exact(self) -> Self;
}

impl<const D: usize> RecipExact for Tensor<B, D> {
    /// `1 / x` by a true division (ndarray's SIMD `recip` is approximate).
    fn recip_exact(self) -> Self {
        self.ones_like() / self
    }
}

/// Token-wise stablemax cross-entropy in float64, 0 where the label is ignored.
///
/// # Shapes
/// `logits: [batch, seq, vocab]`, `labels: [batch, seq]` -> `[batch, seq]` (f64)
pub fn stablemax_cross_entropy(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let valid = labels.clone().not_equal_elem(IGNORE_LABEL_ID);
    let index = labels
        .mask_fill(valid.clone().bool_not(), 0)
        .unsqueeze_dim::<3>(2);
    let picked = log_stablemax(logits).gather(2, index).squeeze_dim::<2>(2);
    picked.neg().mask_fill(valid.bool_not(), 0.0)
}

/// Token-wise softmax cross-entropy in f32, 0 where the label is ignored.
///
/// # Shapes
/// `logits: [batch, seq, vocab]`, `labels: [batch, seq]` -> `[batch, seq]`
pub fn softmax_cross_entropy(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let valid = labels.clone().not_equal_elem(IGNORE_LABEL_ID);
    let index = labels
        .mask_fill(valid.clone().bool_not(), 0)
        .unsqueeze_dim::<3>(2);
    let picked = activation::log_softmax(logits, 2)
        .gather(2, index)
        .squeeze_dim::<2>(2);
    picked.neg().mask_fill(valid.bool_not(), 0.0)
}

/// `binary_cross_entropy_with_logits(x, y, reduction="sum")`, in PyTorch's stable form
/// `max(x, 0) - x*y + log(1 + exp(-|x|))`.
pub fn bce_with_logits_sum(logits: Tensor<B, 1>, targets: Tensor<B, 1>) -> Tensor<B, 1> {
    let softplus = logits.clone().abs().neg().exp().log1p();
    (logits.clone().clamp_min(0.0) - logits * targets + softplus).sum()
}

/// Per-step sums as the reference logs them (divide losses by the global batch
/// and the rest by `count` for display; see [`Metrics::normalised`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Rows that halted at this step and have at least one valid label.
    pub count: f64,
    /// Sum over those rows of the fraction of correct tokens.
    pub accuracy: f64,
    /// Those rows whose every valid token is correct.
    pub exact_accuracy: f64,
    /// Those rows where `q_halt >= 0` agrees with "sequence correct".
    pub q_halt_accuracy: f64,
    /// Sum of their step counts.
    pub steps: f64,
    pub lm_loss: f64,
    pub q_halt_loss: f64,
    pub q_continue_loss: f64,
}

impl Metrics {
    /// The number of fields, as [`Self::to_array`] lists them.
    pub const FIELDS: usize = 8;

    /// The fields in declaration order (sent between processes as they are).
    pub fn to_array(&self) -> [f64; Self::FIELDS] {
        [
            self.count,
            self.accuracy,
            self.exact_accuracy,
            self.q_halt_accuracy,
            self.steps,
            self.lm_loss,
            self.q_halt_loss,
            self.q_continue_loss,
        ]
    }

    /// The inverse of [`Self::to_array`].
    pub fn from_array(a: [f64; Self::FIELDS]) -> Metrics {
        let [count, accuracy, exact_accuracy, q_halt_accuracy, steps, lm_loss, q_halt_loss, q_continue_loss] =
            a;
        Metrics {
            count,
            accuracy,
            exact_accuracy,
            q_halt_accuracy,
            steps,
            lm_loss,
            q_halt_loss,
            q_continue_loss,
        }
    }

    /// Adds another batch's sums (gradient accumulation, several devices).
    pub fn add(&mut self, o: &Metrics) {
        self.count += o.count;
        self.accuracy += o.accuracy;
        self.exact_accuracy += o.exact_accuracy;
        self.q_halt_accuracy += o.q_halt_accuracy;
        self.steps += o.steps;
        self.lm_loss += o.lm_loss;
        self.q_halt_loss += o.q_halt_loss;
        self.q_continue_loss += o.q_continue_loss;
    }

    /// The reference's logged values: losses / global batch, the rest / max(count, 1).
    pub fn normalised(&self, global_batch: usize) -> Metrics {
        let n = self.count.max(1.0);
        let g = global_batch as f64;
        Metrics {
            count: self.count,
            accuracy: self.accuracy / n,
            exact_accuracy: self.exact_accuracy / n,
            q_halt_accuracy: self.q_halt_accuracy / n,
            steps: self.steps / n,
            lm_loss: self.lm_loss / g,
            q_halt_loss: self.q_halt_loss / g,
            q_continue_loss: self.q_continue_loss / g,
        }
    }
}

/// The loss of one supervision step and its metrics.
pub struct StepLoss {
    /// `lm_loss + 0.5 * (q_halt_loss + q_continue_loss)`, a scalar (f64).
    pub total: Tensor<B, 1>,
    pub metrics: Metrics,
    /// Argmax of the logits. `[batch, seq_len]`
    pub preds: Tensor<B, 2, Int>,
    /// Whether each row's valid tokens are all correct, as 0/1. `[batch]`
    pub seq_is_correct: Tensor<B, 1>,
}

/// The values of one-element tensors, read from the device at once: one host
/// synchronisation per step for all the metrics (on a GPU each read is a stall).
/// They are joined in f64 if any is (stablemax's loss is), else in f32: every
/// value reads as it would alone.
fn scalars<const N: usize>(ts: [Tensor<B, 1>; N]) -> [f64; N] {
    use burn::tensor::DType;
    let dtype = match ts.iter().any(|t| t.dtype() == DType::F64) {
        true => DType::F64,
        false => DType::F32,
    };
    let ts = ts
        .into_iter()
        .map(|t| t.cast(dtype).reshape([1]))
        .collect::<Vec<_>>();
    let values = Tensor::cat(ts, 0)
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("converted to f64");
    // The concatenation of N one-element tensors has N values.
    std::array::from_fn(|i| values[i])
}

/// The reference ACT loss head for one step. `carry` is the carry *after* the step
/// (its `halted` and `steps` select the rows that count in the metrics); `q_loss`
/// gives the halting policy's `(q_halt_loss, q_continue_loss)` from `seq_is_correct`.
pub fn act_loss(
    out: &StepOutput,
    carry: &Carry,
    loss_type: LossType,
    q_loss: impl FnOnce(&Tensor<B, 1>) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>),
) -> StepLoss {
    // Metrics compare with the final answer; the loss uses this step's target
    // (the same for TRM and HRM; a path frame for DIS, as `ACTLossHeadV4`).
    let labels = carry.current_data.labels.clone();
    let [rows, _] = labels.dims();
    let mask = labels.clone().not_equal_elem(IGNORE_LABEL_ID);
    let loss_counts = mask.clone().int().sum_dim(1).reshape([rows]);
    let divisor = loss_counts.clone().clamp_min(1).float();
    let target = out.target.clone();
    let target_counts = target
        .clone()
        .not_equal_elem(IGNORE_LABEL_ID)
        .int()
        .sum_dim(1)
        .reshape([rows]);
    let target_divisor = target_counts.clamp_min(1).float();

    let preds = out.logits.clone().detach().argmax(2).squeeze_dim::<2>(2);
    let is_correct = mask.clone().bool_and(preds.clone().equal(labels.clone()));
    let correct_counts = is_correct.clone().int().sum_dim(1).reshape([rows]);
    let seq_is_correct = correct_counts.equal(loss_counts.clone());
    let seq_is_correct_f = seq_is_correct.clone().float();
    let device = out.logits.device();

    // Metrics over rows that halted at this step and have a label.
    let valid = carry.halted.clone().bool_and(loss_counts.greater_elem(0));
    let valid_f = valid.clone().float();
    let row_accuracy = is_correct.float().sum_dim(1).reshape([rows]) / divisor.clone();
    let q_halt_right = out
        .q_halt_logits
        .clone()
        .detach()
        .greater_equal_elem(0.0)
        .equal(seq_is_correct.clone());

    let token_loss = match loss_type {
        LossType::StablemaxCrossEntropy => stablemax_cross_entropy(out.logits.clone(), target),
        LossType::SoftmaxCrossEntropy => softmax_cross_entropy(out.logits.clone(), target),
    };
    let divisor2 = target_divisor.cast(token_loss.dtype()).reshape([rows, 1]);
    let mut row_loss = (token_loss / divisor2).sum_dim(1);
    if let Some(w) = &out.target_weight {
        let dtype = row_loss.dtype();
        row_loss = row_loss * w.clone().cast(dtype).reshape([rows, 1]);
    }
    let lm_loss = row_loss.sum();

    let (q_halt_loss, q_continue_loss) = q_loss(&seq_is_correct_f);
    // An absent q loss reads as 0, as the metric it leaves at its default.
    let q_value = |q: &Option<Tensor<B, 1>>| match q {
        Some(q) => q.clone().detach(),
        None => Tensor::zeros([1], &device),
    };
    let [count, accuracy, exact_accuracy, q_halt_accuracy, steps, lm, q_halt, q_continue] =
        scalars([
            valid_f.clone().sum(),
            (row_accuracy * valid_f.clone()).sum(),
            (seq_is_correct.clone().float() * valid_f.clone()).sum(),
            (q_halt_right.float() * valid_f.clone()).sum(),
            (carry.steps.clone().float() * valid_f).sum(),
            lm_loss.clone().detach(),
            q_value(&q_halt_loss),
            q_value(&q_continue_loss),
        ]);
    let metrics = Metrics {
        count,
        accuracy,
        exact_accuracy,
        q_halt_accuracy,
        steps,
        lm_loss: lm,
        q_halt_loss: q_halt,
        q_continue_loss: q_continue,
    };
    let mut total = lm_loss.clone();
    let dtype = total.dtype();
    for q in [&q_halt_loss, &q_continue_loss].into_iter().flatten() {
        total = total + q.clone().cast(dtype) * 0.5;
    }
    StepLoss {
        total,
        metrics,
        preds,
        seq_is_correct: seq_is_correct_f,
    }
}
