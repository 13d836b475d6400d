//! `[train]` of an experiment file: the run's length, optimizers, schedule, EMA,
//! micro-batches, evaluation and checkpoint intervals. Defaults are the reference
//! `cfg_pretrain.yaml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::train::checkpoint::{count_or_keyword, KeepCheckpoints};
use crate::train::loss::LossType;
use crate::{Error, Result};

fn d_batch() -> usize {
    768
}
fn d_lr() -> f64 {
    1e-4
}
fn d_one() -> f64 {
    1.0
}
fn d_warmup() -> usize {
    2000
}
fn d_puzzle_lr() -> f64 {
    1e-2
}
fn d_wd() -> f64 {
    0.1
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.95
}

/// `[train]` of an experiment file. Defaults are the reference `cfg_pretrain.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps of the run (one per supervision step). Give this or `epochs`.
    #[serde(default)]
    pub steps: usize,
    /// The run's length in epochs, as the reference counts them: steps =
    /// epochs x total_groups x mean_puzzle_examples / global_batch_size of the
    /// training split (an epoch samples one puzzle per group). Needs a dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// Examples per optimizer step. Default 768.
    #[serde(default = "d_batch")]
    pub global_batch_size: usize,
    /// AdamATan2 base rate. Default 1e-4.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Final rate / base rate of the cosine decay (1 = constant). Default 1.
    #[serde(default = "d_one")]
    pub lr_min_ratio: f64,
    /// Linear warmup steps. Default 2000.
    #[serde(default = "d_warmup")]
    pub lr_warmup_steps: usize,
    /// SignSGD rate of the puzzle embedding. Default 1e-2.
    #[serde(default = "d_puzzle_lr")]
    pub puzzle_emb_lr: f64,
    /// Default 0.1.
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Default 0.1.
    #[serde(default = "d_wd")]
    pub puzzle_emb_weight_decay: f64,
    /// Default 0.9.
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    /// Default 0.95.
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    /// `stablemax_cross_entropy` (default) or `softmax_cross_entropy`.
    #[serde(default)]
    pub loss: LossType,
    /// Evaluate every this many steps (0: only at the end).
    #[serde(default)]
    pub eval_interval: usize,
    /// Checkpoint every this many steps (0: at each evaluation and at the end).
    #[serde(default)]
    pub checkpoint_interval: usize,
    /// Checkpoints kept: `"all"` (one per save, the reference's
    /// `checkpoint_every_eval`) or the newest N. Default 1.
    #[serde(default, skip_serializing_if = "KeepCheckpoints::is_default")]
    pub keep_checkpoints: KeepCheckpoints,
    /// Dense optimizer: `adam_atan2` (TRM, HRM; default) or `adamw` (DIS; PyTorch
    /// semantics: decoupled decay, epsilon 1e-8 added to sqrt(v_hat)).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Exponential moving average of the dense parameters, used for evaluation and
    /// saved with checkpoints (reference `ema_rate`, e.g. 0.999). Default off.
    #[serde(default)]
    pub ema: Option<f64>,
    /// Clip the global gradient norm of the dense parameters to this value. Default off.
    #[serde(default)]
    pub grad_clip_norm: Option<f64>,
    /// Start a fresh run from these weights (safetensors under reference names, e.g.
    /// written by `recursa import-torch`). Default: the seeded initialisation.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Split each global batch into this many micro-batches whose gradients are
    /// summed before one optimizer step (each keeps its own carry). Default 1.
    /// `"auto"`: the fewest that fit in the device's free memory
    /// ([`crate::train::memory`]), chosen at the first step.
    #[serde(default)]
    pub micro_batches: MicroBatches,
    /// The memory in MB that `micro_batches = "auto"` may fill. Default: 90% of the
    /// memory the device has free before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_memory_mb: Option<f64>,
}

/// How each global batch is cut: a fixed count of micro-batches, or `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroBatches {
    /// This many micro-batches (1: the whole batch at once).
    Count(usize),
    /// The fewest that fit in free memory, measured at the first step.
    Auto,
}

impl Default for MicroBatches {
    fn default() -> Self {
        MicroBatches::Count(1)
    }
}

impl MicroBatches {
    /// The fixed count; `None` for `"auto"`.
    pub fn count(self) -> Option<usize> {
        match self {
            MicroBatches::Count(n) => Some(n),
            MicroBatches::Auto => None,
        }
    }
}

impl std::str::FromStr for MicroBatches {
    type Err = String;

    /// `"auto"` or a count of 1 or more, as on a command line.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim_matches('"') {
            "auto" => Ok(MicroBatches::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(MicroBatches::Count(n)),
                _ => Err(format!(
                    "`{s}`: a number of micro-batches (1 or more) or auto"
                )),
            },
        }
    }
}

impl std::fmt::Display for MicroBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            MicroBatches::Count(n) => write!(f, "{n}"),
            MicroBatches::Auto => f.write_str("\"auto\""),
        }
    }
}

impl Serialize for MicroBatches {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            MicroBatches::Count(n) => s.serialize_u64(*n as u64),
            MicroBatches::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for MicroBatches {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let expecting = "a number of micro-batches (1 or more) or \"auto\"";
        let count = count_or_keyword(d, "auto", expecting)?;
        Ok(count.map_or(MicroBatches::Auto, MicroBatches::Count))
    }
}

impl TrainConfig {
    /// Range checks of every field, naming it (`lr`, `beta2`, ...); the caller
    /// prefixes `train.`. `steps = 0` is allowed here (`epochs` may decide it).
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, message: String| Err(Error::config(field, message));
        if let Some(epochs) = self.epochs {
            if !(epochs.is_finite() && epochs > 0.0) {
                return err("epochs", format!("{epochs}: must be a positive number"));
            }
        }
        if self.global_batch_size == 0 || self.global_batch_size > 1 << 24 {
            return err(
                "global_batch_size",
                format!("{}: must be in 1..={}", self.global_batch_size, 1 << 24),
            );
        }
        if let MicroBatches::Count(n) = self.micro_batches {
            if n == 0 || !self.global_batch_size.is_multiple_of(n) {
                return err(
                    "micro_batches",
                    format!(
                        "{n} does not divide global_batch_size {}",
                        self.global_batch_size
                    ),
                );
            }
        }
        if let Some(mb) = self.auto_memory_mb {
            if !(mb.is_finite() && mb > 0.0) {
                return err(
                    "auto_memory_mb",
                    format!("{mb}: must be a finite number > 0"),
                );
            }
        }
        let rates = [
            ("lr", self.lr, false),
            ("puzzle_emb_lr", self.puzzle_emb_lr, true),
            ("weight_decay", self.weight_decay, true),
            (
                "puzzle_emb_weight_decay",
                self.puzzle_emb_weight_decay,
                true,
            ),
        ];
        for (field, value, zero_ok) in rates {
            let ok = value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0));
            if !ok {
                let range = if zero_ok { ">= 0" } else { "> 0" };
                return err(field, format!("{value}: must be a finite number {range}"));
            }
        }
        for (field, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return err(field, format!("{value}: must be in [0, 1)"));
            }
        }
        if !(0.0..=1.0).contains(&self.lr_min_ratio) {
            return err(
                "lr_min_ratio",
                format!("{}: must be in [0, 1]", self.lr_min_ratio),
            );
        }
        if let Some(rate) = self.ema {
            if !(0.0..1.0).contains(&rate) {
                return err("ema", format!("{rate}: the EMA rate must be in [0, 1)"));
            }
        }
        if let Some(norm) = self.grad_clip_norm {
            if !(norm.is_finite() && norm > 0.0) {
                return err(
                    "grad_clip_norm",
                    format!("{norm}: must be a finite number > 0"),
                );
            }
        }
        Ok(())
    }

    /// Settings that are legal but probably not meant (a shortened run keeps its
    /// warm-up, say), for the caller to print.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.steps > 0 && self.lr_warmup_steps > self.steps {
            out.push(format!(
                "train.lr_warmup_steps = {} is longer than the run (train.steps = {}): the rate never reaches train.lr",
                self.lr_warmup_steps, self.steps
            ));
        }
        if self.auto_memory_mb.is_some() && self.micro_batches != MicroBatches::Auto {
            out.push(format!(
                "train.auto_memory_mb is read only with train.micro_batches = \"auto\" (this run has {})",
                self.micro_batches
            ));
        }
        for (field, value) in [
            ("eval_interval", self.eval_interval),
            ("checkpoint_interval", self.checkpoint_interval),
        ] {
            if self.steps > 0 && value > self.steps {
                out.push(format!(
                    "train.{field} = {value} is longer than the run (train.steps = {}): only at the end",
                    self.steps
                ));
            }
        }
        out
    }
}

/// The dense optimizer of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    AdamAtan2,
    Adamw,
}
