//! The training loop: one optimizer step per supervision step, the carry kept
//! across batches (the reference `pretrain.py` semantics), periodic evaluation
//! that rolls out the maximum number of steps, JSON-lines metrics, atomic
//! checkpoints and exact resume.
//!
//! Read [`Trainer::train_step`] top to bottom: get the carry, step, loss, backward,
//! SignSGD on the puzzle rows, AdamATan2 on the dense parameters.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::module::Param;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::experiment::ExperimentConfig;
use crate::step::{Carry, LoopedModel, Net, StepContext};
use crate::train::adam_atan2::{AdamAtan2, AdamAtan2Config};
use crate::train::checkpoint::{self, KeepCheckpoints};
use crate::train::data::{
    data_error, device_batch, slice_rows, test_batches, GroupSampler, HostBatch, Prefetch,
    PuzzleSplit, SamplerState,
};
use crate::train::data_parallel::{Peer, Replica};
use crate::train::loss::{act_loss, LossType, Metrics};
use crate::train::lr::LrSchedule;
use crate::train::observer::{FitObserver, MetricsLog};
use crate::train::sign_sgd::{sign_sgd_step, SignSgdConfig};
use crate::weights::{visit_net, Layout, Role, WeightVisitor};
use crate::{Device, Error, Result, B};

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
    #[serde(default = "d_micro")]
    pub micro_batches: usize,
}

fn d_micro() -> usize {
    1
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
        if self.micro_batches == 0 || !self.global_batch_size.is_multiple_of(self.micro_batches) {
            return err(
                "micro_batches",
                format!(
                    "{} does not divide global_batch_size {}",
                    self.micro_batches, self.global_batch_size
                ),
            );
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

/// The dense optimizer, as the burn optimizer it is.
enum Dense {
    AdamAtan2(OptimizerAdaptor<AdamAtan2, Net, B>),
    AdamW(OptimizerAdaptor<burn::optim::AdamW, Net, B>),
}

impl Dense {
    fn new(c: &TrainConfig) -> Self {
        match c.optimizer {
            OptimizerKind::AdamAtan2 => Dense::AdamAtan2(
                AdamAtan2Config {
                    beta1: c.beta1,
                    beta2: c.beta2,
                    weight_decay: c.weight_decay,
                }
                .init::<B, Net>(),
            ),
            // burn's defaults differ from PyTorch's (epsilon 1e-5, decay 1e-4): set them.
            OptimizerKind::Adamw => Dense::AdamW(
                burn::optim::AdamWConfig::new()
                    .with_beta_1(c.beta1 as f32)
                    .with_beta_2(c.beta2 as f32)
                    .with_epsilon(1e-8)
                    .with_weight_decay(c.weight_decay as f32)
                    .init::<B, Net>(),
            ),
        }
    }

    fn step(&mut self, lr: f64, net: Net, grads: GradientsParams) -> Net {
        match self {
            Dense::AdamAtan2(o) => o.step(lr, net, grads),
            Dense::AdamW(o) => o.step(lr, net, grads),
        }
    }

    fn save(&self, path: PathBuf) -> Result<()> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let r = match self {
            Dense::AdamAtan2(o) => recorder.record(o.to_record(), path.clone()),
            Dense::AdamW(o) => recorder.record(o.to_record(), path.clone()),
        };
        r.map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    fn load(self, path: PathBuf, device: &Device) -> Result<Self> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let err = |e: burn::record::RecorderError| {
            Error::Input(format!("{}: optimizer state: {e}", path.display()))
        };
        Ok(match self {
            Dense::AdamAtan2(o) => {
                Dense::AdamAtan2(o.load_record(recorder.load(path.clone(), device).map_err(err)?))
            }
            Dense::AdamW(o) => {
                Dense::AdamW(o.load_record(recorder.load(path.clone(), device).map_err(err)?))
            }
        })
    }
}

/// What one evaluation measured: reference metrics after `max_steps` steps.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub step: usize,
    pub examples: usize,
    /// Network calls per example in the rollout (supervision steps x calls per step).
    pub net_calls_per_example: usize,
    pub exact_accuracy: f64,
    pub accuracy: f64,
    pub seconds: f64,
}

/// Training state: the model, its optimizer, the carry and where the sampler is.
pub struct Trainer {
    pub model: LoopedModel,
    optim: Dense,
    /// One carry per micro-batch.
    pub carries: Vec<Option<Carry>>,
    /// The moving average of the dense parameters (no autodiff), when enabled.
    pub ema: Option<Net>,
    /// The sampler's state after the last batch trained on (what resume continues from).
    pub sampler: SamplerState,
    /// Ranks 1.. of a data-parallel run (this trainer is rank 0); empty otherwise.
    replicas: Vec<Replica>,
    /// This trainer's place in a data-parallel group; `None` on one device.
    pub(crate) peer: Option<Peer>,
    /// Optimizer steps taken.
    pub step: usize,
    pub config: TrainConfig,
    seed: u64,
    schedule: LrSchedule,
    /// The device without autodiff, where optimizer state lives.
    device: Device,
}

impl Trainer {
    /// A fresh run of `experiment` on `device` (autodiff is switched on here).
    pub fn new(experiment: &ExperimentConfig, device: &Device) -> Result<Self> {
        let config = experiment
            .train
            .clone()
            .ok_or_else(|| Error::config("train", "the experiment has no [train] section"))?;
        if config.steps == 0 {
            return Err(Error::config(
                "train.steps",
                "missing or 0: give train.steps, or train.epochs with a dataset",
            ));
        }
        let ad = Device::autodiff(device.clone());
        let mut model = experiment.build(&ad)?;
        if let Some(path) = &config.init_from {
            crate::weights::load_net_file(&mut model.net, path)?;
        }
        config.validate().map_err(|e| e.within("train"))?;
        let optim = Dense::new(&config);
        let ema = config.ema.map(|_| model.net.valid());
        let schedule = LrSchedule {
            warmup_steps: config.lr_warmup_steps,
            total_steps: config.steps,
            min_ratio: config.lr_min_ratio,
        };
        Ok(Trainer {
            carries: vec![None; config.micro_batches],
            model,
            optim,
            ema,
            sampler: SamplerState::default(),
            replicas: Vec::new(),
            peer: None,
            step: 0,
            config,
            seed: experiment.seed,
            schedule,
            device: device.clone(),
        })
    }

    /// A fresh data-parallel run: one replica per device, rank 0 on `devices[0]` in
    /// this thread. Each device trains on `global_batch_size / devices` rows (split
    /// further into `micro_batches`), and gradients are summed over devices.
    /// `experiment_toml` is the experiment's text (each replica parses its own).
    pub fn new_data_parallel(
        experiment_toml: &str,
        source: &str,
        devices: &[Device],
    ) -> Result<Self> {
        let experiment = ExperimentConfig::from_toml(experiment_toml, source)?;
        let world = devices.len();
        let global = experiment.train.as_ref().map_or(0, |t| t.global_batch_size);
        if world == 0 || !global.is_multiple_of(world.max(1)) {
            return Err(Error::config(
                "train.global_batch_size",
                format!("{global} does not split evenly over {world} devices"),
            ));
        }
        let mut trainer = Trainer::new(&experiment, &devices[0])?;
        if world == 1 {
            return Ok(trainer);
        }
        // One group per process at a time: forget any earlier one.
        burn::collective::reset_collective::<B>();
        for (rank, device) in devices.iter().enumerate().skip(1) {
            trainer.replicas.push(Replica::spawn(
                rank,
                world,
                device.clone(),
                experiment_toml.to_string(),
                source.to_string(),
            )?);
        }
        trainer.peer = Some(Peer::register(0, world, &devices[0])?);
        Ok(trainer)
    }

    /// Devices training this run (1 unless data-parallel).
    pub fn world(&self) -> usize {
        self.peer.as_ref().map_or(1, |p| p.world)
    }

    /// One optimizer step on `batch`, the next global batch (on rank 0 of a
    /// data-parallel run; its share on the other ranks). Returns the reference's
    /// logged metrics, summed over devices.
    pub fn train_step(&mut self, batch: &HostBatch) -> Result<Metrics> {
        let mut batch = batch;
        let own;
        if !self.replicas.is_empty() {
            // Rank 0 hands every other rank its slice, then trains on its own.
            let local = batch.rows / self.world();
            for (r, replica) in self.replicas.iter().enumerate() {
                let slice = slice_rows(batch, (r + 1) * local..(r + 2) * local);
                replica.start_step(slice)?;
            }
            own = slice_rows(batch, 0..local);
            batch = &own;
        }
        let mut metrics = self.local_step(batch)?;
        for replica in &self.replicas {
            metrics.add(&replica.finish()?);
        }
        Ok(metrics.normalised(self.config.global_batch_size))
    }

    /// This device's part of a step: forward, backward, gradient exchange, update.
    pub(crate) fn local_step(&mut self, batch: &HostBatch) -> Result<Metrics> {
        let device = self.model.net.h_init.val().device();
        self.step += 1;
        let micro = batch.rows / self.carries.len();
        let (rank, world) = self.peer.as_ref().map_or((0, 1), |p| (p.rank, p.world));
        let scale = 1.0 / self.config.global_batch_size as f64;
        let mut metrics = Metrics::default();
        let mut dense = GradientsAccumulator::<Net>::new();
        let mut puzzle_grads = Vec::new();
        for m in 0..self.carries.len() {
            let batch = device_batch(&slice_rows(batch, m * micro..(m + 1) * micro), &device);
            let carry = self.carries[m]
                .take()
                .unwrap_or_else(|| self.model.initial_carry(&batch));
            // Exploration draws from a stream fixed by (seed, step, micro-batch of
            // the global batch): resumable without saving RNG state, and the same
            // whether the micro-batches run on one device or several.
            let global_m = rank * self.carries.len() + m;
            let per_step = world * self.carries.len();
            let stream = self.seed
                ^ ((self.step * per_step + global_m) as u64).wrapping_mul(0x2545f4914f6cdd1d);
            let (carry, out) = self
                .model
                .step(carry, &batch, &mut StepContext::train(stream));
            let loss = act_loss(&out, &carry, self.config.loss, |sc| {
                self.model.halting.q_loss(&out, sc)
            });
            let grads = (loss.total * scale).backward();
            if let Some((rows, ids)) = &out.puzzle {
                if let Some(g) = rows.grad(&grads) {
                    puzzle_grads.push((Tensor::from_inner(g), ids.clone()));
                }
            }
            dense.accumulate(
                &self.model.net,
                GradientsParams::from_grads(grads, &self.model.net),
            );
            metrics.add(&loss.metrics);
            self.carries[m] = Some(carry);
        }

        // Sparse SignSGD on the puzzle rows of the whole global batch (duplicates
        // summed), gathered from every device in rank order.
        if let (false, Some(table)) = (puzzle_grads.is_empty(), &mut self.model.net.puzzle_emb) {
            let (g, ids): (Vec<_>, Vec<_>) = puzzle_grads.into_iter().unzip();
            let (mut g, mut ids) = (Tensor::cat(g, 0), Tensor::cat(ids, 0));
            if let Some(peer) = &self.peer {
                g = peer.gather_rows(g)?;
                ids = peer.gather_ids(ids)?;
            }
            let puzzle_lr = self.schedule.lr(self.config.puzzle_emb_lr, self.step);
            let sign = SignSgdConfig {
                weight_decay: self.config.puzzle_emb_weight_decay,
            };
            sign_sgd_step(&mut table.weights, g, ids, puzzle_lr, &sign);
        }
        recursa_data::fault::point("train-step", self.step);
        // The dense optimizer on the dense parameters (summed over devices).
        let mut grads = dense.grads();
        if let Some(peer) = &self.peer {
            grads = peer.sum_grads(grads)?;
        }
        if let Some(max_norm) = self.config.grad_clip_norm {
            clip_global_norm(&mut self.model.net, &mut grads, max_norm);
        }
        let lr = self.schedule.lr(self.config.lr, self.step);
        self.model.net = self.optim.step(lr, self.model.net.clone(), grads);
        if let (Some(ema), Some(rate)) = (&mut self.ema, self.config.ema) {
            ema_update(ema, &self.model.net.valid(), rate);
        }
        Ok(metrics)
    }

    /// Rolls every test example out for the policy's maximum steps (no gradient).
    pub fn evaluate(&self, test: &PuzzleSplit, batch_size: usize) -> Result<EvalResult> {
        self.evaluate_with(test, batch_size, |_, _, _| Ok(()))
    }

    /// [`Self::evaluate`], handing every batch with its final predictions (argmax
    /// tokens, `[rows * seq_len]`) and halting logits (`[rows]`) to `on_batch`, e.g.
    /// for the ARC voting evaluator. Padding rows have puzzle id `blank_identifier_id`.
    pub fn evaluate_with(
        &self,
        test: &PuzzleSplit,
        batch_size: usize,
        mut on_batch: impl FnMut(&HostBatch, &[i32], &[f32]) -> Result<()>,
    ) -> Result<EvalResult> {
        let start = Instant::now();
        let net = self.ema.clone().unwrap_or_else(|| self.model.net.valid());
        let device = net.h_init.val().device();
        let mut total = Metrics::default();
        let mut ctx = StepContext::eval();
        for set in test.sets() {
            for host in test_batches(set, batch_size, 0, 1).map_err(data_error)? {
                let host = host.map_err(data_error)?;
                let batch = device_batch(&host, &device);
                let mut carry = self.model.initial_carry_on(&batch, &device);
                for _ in 0..self.model.halting.max_steps() {
                    let (next, out) = self.model.step_with(&net, carry, &batch, &mut ctx);
                    carry = next;
                    if carry.halted.clone().all().into_scalar() != 0 {
                        let m = act_loss(&out, &carry, self.config.loss, |_| (None, None));
                        total.add(&m.metrics);
                        let preds: Vec<i32> = out
                            .logits
                            .argmax(2)
                            .into_data()
                            .convert::<i32>()
                            .to_vec()
                            .expect("converted to i32");
                        let q: Vec<f32> = out
                            .q_halt_logits
                            .into_data()
                            .convert::<f32>()
                            .to_vec()
                            .expect("converted to f32");
                        on_batch(&host, &preds, &q)?;
                        break;
                    }
                }
            }
        }
        let n = total.count.max(1.0);
        Ok(EvalResult {
            step: self.step,
            examples: total.count as usize,
            net_calls_per_example: self.model.halting.max_steps()
                * self.model.schedule.calls_per_step().total(),
            exact_accuracy: total.exact_accuracy / n,
            accuracy: total.accuracy / n,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Writes a checkpoint under `dir` (see [`checkpoint`]); in a data-parallel run
    /// every rank adds its own carries.
    pub fn save(&self, dir: &Path, experiment_toml: &str) -> Result<PathBuf> {
        checkpoint::save(dir, self.step, self.config.keep_checkpoints, |tmp| {
            crate::weights::save_net_file(&self.model.net, &tmp.join("model.safetensors"), None)?;
            if let Some(ema) = &self.ema {
                crate::weights::save_net_file(ema, &tmp.join("ema.safetensors"), None)?;
            }
            self.save_carries(tmp)?;
            for replica in &self.replicas {
                replica.save_carries(tmp.to_path_buf())?;
            }
            self.optim.save(tmp.join("optimizer"))?;
            let state = checkpoint::TrainerState {
                step: self.step,
                sampler: self.sampler,
                experiment: experiment_toml.to_string(),
            };
            crate::weights::write_atomic(
                &tmp.join("trainer.json"),
                serde_json::to_string_pretty(&state)
                    .expect("plain data")
                    .as_bytes(),
            )
        })
    }

    /// Index of this rank's micro-batch `m` in the global batch.
    fn global_micro(&self, m: usize) -> usize {
        self.peer.as_ref().map_or(0, |p| p.rank) * self.carries.len() + m
    }

    /// Writes this rank's carries into the checkpoint directory `dir`.
    pub(crate) fn save_carries(&self, dir: &Path) -> Result<()> {
        for (m, carry) in self.carries.iter().enumerate() {
            if let Some(carry) = carry {
                let name = format!("carry-{}.safetensors", self.global_micro(m));
                checkpoint::save_carry(carry, &dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Restores the latest checkpoint under `dir` into this (freshly built) trainer.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let path = checkpoint::latest(dir)?;
        self.resume_from(&path)?;
        for replica in &self.replicas {
            replica.resume(path.clone())?;
        }
        Ok(())
    }

    /// Restores the checkpoint directory `path` (one `step-N`) into this trainer.
    pub fn resume_from(&mut self, path: &Path) -> Result<()> {
        let state: checkpoint::TrainerState = checkpoint::read_json(&path.join("trainer.json"))?;
        crate::weights::load_net_file(&mut self.model.net, &path.join("model.safetensors"))?;
        let device = self.model.net.h_init.val().device();
        if let Some(ema) = &mut self.ema {
            crate::weights::load_net_file(ema, &path.join("ema.safetensors"))?;
        }
        for m in 0..self.carries.len() {
            let carry_path = path.join(format!("carry-{}.safetensors", self.global_micro(m)));
            self.carries[m] = if carry_path.exists() {
                Some(checkpoint::load_carry(&carry_path, &device)?)
            } else {
                None
            };
        }
        let fresh = Dense::new(&self.config);
        self.optim =
            std::mem::replace(&mut self.optim, fresh).load(path.join("optimizer"), &self.device)?;
        self.step = state.step;
        self.sampler = state.sampler;
        Ok(())
    }
}

use burn::tensor::Tensor;

/// Runs `trainer` to `config.steps` (or to step `until`, leaving a checkpoint to
/// resume from), evaluating, logging to `run_dir/metrics.jsonl` and
/// `run_dir/tensorboard/` (see [`MetricsLog`]), checkpointing into
/// `run_dir/checkpoints`, and reporting to `observer`. Stops with a saved state and
/// an error when the loss stops being finite. `None` when stopped before the end.
pub fn fit(
    trainer: &mut Trainer,
    train: &PuzzleSplit,
    test: &PuzzleSplit,
    run_dir: &Path,
    experiment_toml: &str,
    until: Option<usize>,
    observer: &mut dyn FitObserver,
) -> Result<Option<EvalResult>> {
    let cfg = trainer.config.clone();
    let checkpoints = run_dir.join("checkpoints");
    let eval_every = if cfg.eval_interval == 0 {
        cfg.steps
    } else {
        cfg.eval_interval
    };
    let save_every = if cfg.checkpoint_interval == 0 {
        eval_every
    } else {
        cfg.checkpoint_interval
    };
    let tokens_per_step = (cfg.global_batch_size * train.metadata().seq_len as usize) as f64;
    let mut log = MetricsLog::open(run_dir)?;
    // The group sampler runs ahead on a background thread; each batch carries the
    // sampler state after it, which is what a checkpoint records.
    let sampler = GroupSampler::resume(train, cfg.global_batch_size, trainer.seed, trainer.sampler)
        .map_err(data_error)?;
    let mut batches =
        Prefetch::new_fallible(sampler.into_host_batches(0, 1).map_err(data_error)?, 2)
            .map_err(data_error)?;
    let start = Instant::now();
    let first = trainer.step;
    let calls = trainer.model.schedule.calls_per_step();
    let mut last_eval = None;
    let stop = until.unwrap_or(cfg.steps).min(cfg.steps);
    observer.started(first, stop, cfg.steps);
    while trainer.step < stop {
        let next = batches
            .next()
            .ok_or_else(|| Error::Other("the training sampler stopped".into()))?
            .map_err(data_error)?;
        let m = trainer.train_step(&next.batch)?;
        trainer.sampler = next.state_after;
        let step = trainer.step;
        if !(m.lm_loss.is_finite() && m.q_halt_loss.is_finite()) {
            let saved = trainer.save(&checkpoints, experiment_toml)?;
            return Err(Error::Other(format!(
                "step {step}: the loss is not finite (lm_loss {}, q_halt_loss {}); state saved in {}",
                m.lm_loss,
                m.q_halt_loss,
                saved.display()
            )));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let rate = (step - first) as f64 / elapsed.max(1e-9);
        // Forward-pass accounting: network calls per example in this supervision
        // step, and in all optimizer steps so far (every row makes one step each).
        let bootstrap = usize::from(trainer.model.halting.bootstraps_q()) * calls.total();
        let line = serde_json::json!({
            "kind": "train", "step": step, "lr": trainer.schedule.lr(cfg.lr, step),
            "lm_loss": m.lm_loss, "q_halt_loss": m.q_halt_loss, "accuracy": m.accuracy,
            "exact_accuracy": m.exact_accuracy, "q_halt_accuracy": m.q_halt_accuracy,
            "steps": m.steps, "count": m.count,
            "net_calls_per_example": calls.total() + bootstrap, "net_calls_with_grad": calls.with_grad,
            "net_calls_total": step * cfg.global_batch_size * (calls.total() + bootstrap),
            "examples_per_s": rate * cfg.global_batch_size as f64, "tokens_per_s": rate * tokens_per_step,
        });
        log.write(&line)?;
        observer.record(&line);
        if step.is_multiple_of(eval_every) || step == cfg.steps {
            let r = evaluate_observed(trainer, test, cfg.global_batch_size, observer)?;
            let mut line = serde_json::json!({ "kind": "eval", "step": step, "exact_accuracy": r.exact_accuracy,
                "accuracy": r.accuracy, "examples": r.examples, "seconds": r.seconds,
                "net_calls_per_example": r.net_calls_per_example });
            for (k, v) in observer.eval_metrics()? {
                line[k] = serde_json::json!(v);
            }
            log.write(&line)?;
            observer.record(&line);
            last_eval = Some(r);
        }
        if step.is_multiple_of(save_every) || step == stop {
            let saved = trainer.save(&checkpoints, experiment_toml)?;
            observer.saved(&saved);
        }
        log.flush()?;
    }
    if trainer.step < cfg.steps {
        return Ok(None);
    }
    Ok(last_eval)
}

/// [`Trainer::evaluate`] with every batch reported to `observer`.
pub fn evaluate_observed(
    trainer: &Trainer,
    test: &PuzzleSplit,
    batch_size: usize,
    observer: &mut dyn FitObserver,
) -> Result<EvalResult> {
    let mut batches = 0;
    for set in test.sets() {
        batches += test_batches(set, batch_size, 0, 1)
            .map_err(data_error)?
            .len();
    }
    observer.eval_started(trainer.step, batches);
    trainer.evaluate_with(test, batch_size, |host, preds, q| {
        observer.eval_batch(host, preds, q)
    })
}

/// `ema = rate * ema + (1 - rate) * current` for every dense parameter (buffers and
/// the puzzle table are not averaged, as the reference `EMAHelper`).
pub fn ema_update(ema: &mut Net, current: &Net, rate: f64) {
    struct Collect(HashMap<String, Tensor<B, 1>>);
    impl WeightVisitor<B> for Collect {
        fn visit<const D: usize>(
            &mut self,
            name: &str,
            role: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            if role == Role::Param {
                self.0.insert(name.to_string(), p.val().flatten(0, D - 1));
            }
        }
    }
    struct Blend(HashMap<String, Tensor<B, 1>>, f64);
    impl WeightVisitor<B> for Blend {
        fn visit<const D: usize>(
            &mut self,
            name: &str,
            role: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            if let (Role::Param, Some(cur)) = (role, self.0.remove(name)) {
                let shape = p.val().shape();
                let blended = p.val() * self.1 + cur.reshape(shape) * (1.0 - self.1);
                *p = Param::initialized(p.id, blended);
            }
        }
    }
    let mut collect = Collect(HashMap::new());
    visit_net(&mut current.clone(), &mut collect);
    visit_net(ema, &mut Blend(collect.0, rate));
}

/// Scales every dense gradient by `min(1, max_norm / ||g||)`, the norm taken over
/// all of them together (PyTorch `clip_grad_norm_`).
pub fn clip_global_norm(net: &mut Net, grads: &mut GradientsParams, max_norm: f64) {
    struct Norm<'a>(&'a GradientsParams, f64);
    impl WeightVisitor<B> for Norm<'_> {
        fn visit<const D: usize>(
            &mut self,
            _: &str,
            _: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            if let Some(g) = self.0.get::<B, D>(p.id) {
                self.1 += g.square().sum().into_scalar() as f64;
            }
        }
    }
    struct Scale<'a>(&'a mut GradientsParams, f64);
    impl WeightVisitor<B> for Scale<'_> {
        fn visit<const D: usize>(
            &mut self,
            _: &str,
            _: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            if let Some(g) = self.0.remove::<B, D>(p.id) {
                self.0.register(p.id, g * self.1);
            }
        }
    }
    let mut norm = Norm(grads, 0.0);
    visit_net(net, &mut norm);
    let total = norm.1.sqrt();
    if total > max_norm {
        visit_net(net, &mut Scale(grads, max_norm / (total + 1e-6)));
    }
}
