//! The training loop: one optimizer step per supervision step, the carry kept
//! across batches (the reference `pretrain.py` semantics), periodic evaluation
//! that rolls out the maximum number of steps, JSON-lines metrics, atomic
//! checkpoints and exact resume.
//!
//! Read [`Trainer::train_step`] top to bottom: get the carry, step, loss, backward,
//! SignSGD on the puzzle rows, AdamATan2 on the dense parameters.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use serde::Serialize;

use crate::experiment::ExperimentConfig;
use crate::model::fused::FrozenWeights;
use crate::model::no_grad::free_untracked;
use crate::model::Net;
use crate::state::{Batch, Carry, StepOutput};
use crate::step::{LatentNoise, LoopedModel, StepContext};
use crate::train::checkpoint;
use crate::train::clip::clip_global_norm;
use crate::train::config::{MicroBatches, TrainConfig};
use crate::train::data::{
    data_error, device_batch, slice_rows, test_batches, HostBatch, PuzzleSplit, SamplerState,
};
use crate::train::data_parallel::{Peer, Replica, Rollout, Worker};
use crate::train::ema::ema_update;
use crate::train::loss::{act_loss, LossType, Metrics, StepLoss};
use crate::train::lr::LrSchedule;
use crate::train::memory;
use crate::train::optimizer::Dense;
use crate::train::pool::on_pool;
use crate::train::process_group::{pack_dir, unpack_dir, Pack, ProcessGroup, Unpack};
use crate::train::sign_sgd::{sign_sgd_step, SignSgdConfig};
use crate::train::trajectories::{repeat_rows, select_best, Trajectories};
use crate::{Device, Error, Result, B};

/// What one evaluation measured: reference metrics after `max_steps` steps.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub step: usize,
    pub examples: usize,
    /// Network calls per example in the rollout (trajectories x supervision steps x
    /// calls per step).
    pub net_calls_per_example: usize,
    pub exact_accuracy: f64,
    pub accuracy: f64,
    pub seconds: f64,
}

/// The fraction of `total` training steps done before step `step` (counting from 1).
pub fn progress_at(step: usize, total: usize) -> f64 {
    step.saturating_sub(1) as f64 / total.max(1) as f64
}

/// Training state: the model, its optimizer, the carry and where the sampler is.
pub struct Trainer {
    pub model: LoopedModel,
    optim: Dense,
    /// One carry per micro-batch.
    pub carries: Vec<Option<Carry>>,
    /// The moving average of the dense parameters (untracked), when enabled.
    pub ema: Option<Net>,
    /// The sampler's state after the last batch trained on (what resume continues from).
    pub sampler: SamplerState,
    /// Ranks 1.. of a data-parallel run (this trainer is rank 0); empty otherwise.
    replicas: Vec<Replica>,
    /// This trainer's place in a data-parallel group; `None` on one device.
    pub(crate) peer: Option<Peer>,
    /// This process's place in a group of processes (one device each); `None` in
    /// one process.
    group: Option<ProcessGroup>,
    /// Optimizer steps taken.
    pub step: usize,
    pub config: TrainConfig,
    pub(crate) seed: u64,
    pub(crate) schedule: LrSchedule,
    /// The device, where optimizer state lives too.
    device: Device,
    /// Evaluate with K noisy trajectories per example selected by the halting head
    /// (PTRM, [`crate::train::trajectories`]); `None`: the plain rollout.
    pub eval_trajectories: Option<Trajectories>,
    /// How `micro_batches = "auto"` chose its count, until the fit loop logs it.
    pub micro_batch_plan: Option<memory::Plan>,
}

impl Trainer {
    /// A fresh run of `experiment` on `device` (its weights tracked for gradients).
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
        let mut model = experiment.build(device)?;
        if let Some(path) = &config.init_from {
            crate::weights::load_net_file(&mut model.net, path)?;
        }
        config.validate().map_err(|e| e.within("train"))?;
        let optim = Dense::new(&config);
        let ema = config.ema.map(|_| model.net.clone().no_grad());
        let schedule = LrSchedule {
            warmup_steps: config.lr_warmup_steps,
            total_steps: config.steps,
            min_ratio: config.lr_min_ratio,
        };
        Ok(Trainer {
            // `"auto"`: none until the first step chooses the count.
            carries: vec![None; config.micro_batches.count().unwrap_or(0)],
            model,
            optim,
            ema,
            sampler: SamplerState::default(),
            replicas: Vec::new(),
            peer: None,
            group: None,
            step: 0,
            config,
            seed: experiment.seed,
            schedule,
            device: device.clone(),
            eval_trajectories: experiment.eval,
            micro_batch_plan: None,
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
        if trainer.config.micro_batches == MicroBatches::Auto {
            return Err(auto_alone());
        }
        // One group per process at a time: forget any earlier one.
        burn::collective::reset_collective::<B>();
        for (rank, device) in devices.iter().enumerate().skip(1) {
            let (toml, source) = (experiment_toml.to_string(), source.to_string());
            trainer.replicas.push(Replica::spawn(
                rank,
                world,
                device.clone(),
                move |device| {
                    let experiment = ExperimentConfig::from_toml(&toml, &source)?;
                    Trainer::new(&experiment, device)
                },
            )?);
        }
        trainer.peer = Some(Peer::register(0, world, &devices[0])?);
        Ok(trainer)
    }

    /// Makes this trainer rank `group.rank` of a run across processes: it trains on
    /// its share of every global batch, and writes only as rank 0.
    pub fn join_group(&mut self, group: ProcessGroup) -> Result<()> {
        let (world, global) = (group.world, self.config.global_batch_size);
        if !self.replicas.is_empty() {
            return Err(Error::Usage(
                "one device per process in a run across processes (a device list trains several devices in one process)".into(),
            ));
        }
        if self.config.micro_batches == MicroBatches::Auto {
            let err = auto_alone();
            group.abort(&err.to_string());
            return Err(err);
        }
        if !global.is_multiple_of(world * self.carries.len()) {
            let why = format!(
                "{global} does not split evenly over {world} processes x {} micro-batches",
                self.carries.len()
            );
            group.abort(&why);
            return Err(Error::config("train.global_batch_size", why));
        }
        self.group = Some(group);
        Ok(())
    }

    /// Micro-batches per step on this rank (0 while `"auto"` has not chosen).
    pub fn micro_batches(&self) -> usize {
        self.carries.len()
    }

    /// The group of processes this trainer is part of, if any.
    pub fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// Whether this trainer writes the run (metrics, checkpoints): every trainer
    /// but ranks 1.. of a group of processes.
    pub fn is_leader(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.is_leader())
    }

    /// This trainer's rank and the number of ranks (devices or processes).
    fn rank_world(&self) -> (usize, usize) {
        match (&self.peer, &self.group) {
            (Some(p), _) => (p.rank, p.world),
            (None, Some(g)) => (g.rank, g.world),
            (None, None) => (0, 1),
        }
    }

    /// Devices training this run (1 unless data-parallel).
    pub fn world(&self) -> usize {
        self.rank_world().1
    }

    /// One CPU device alone in this process and no other process: its steps run on
    /// a pool thread with the pool's other threads spinning (see [`on_pool`]).
    /// In-process replicas wait for each other, and a group's processes share the
    /// machine's cores, so they stay where they are. GPU steps stay on the calling
    /// thread too: burn-cuda gives each thread its own stream and memory pool, so a
    /// step on whichever pool thread is free would spread over several pools.
    fn alone(&self) -> bool {
        crate::is_cpu(&self.device)
            && self.replicas.is_empty()
            && self.peer.is_none()
            && self.group.is_none()
    }

    /// One optimizer step on `batch`, the next global batch (on rank 0 of a
    /// data-parallel run; its share on the other ranks). Returns the reference's
    /// logged metrics, summed over devices.
    pub fn train_step(&mut self, batch: &HostBatch) -> Result<Metrics> {
        let mut batch = batch;
        let own;
        if let Some(g) = &self.group {
            // Every process reads the same global batch and trains on its share.
            let local = batch.rows / g.world;
            own = slice_rows(batch, g.rank * local..(g.rank + 1) * local);
            batch = &own;
        } else if !self.replicas.is_empty() {
            // Rank 0 hands every other rank its slice, then trains on its own.
            let local = batch.rows / self.world();
            for (r, replica) in self.replicas.iter().enumerate() {
                let slice = slice_rows(batch, (r + 1) * local..(r + 2) * local);
                replica.start_step(slice)?;
            }
            own = slice_rows(batch, 0..local);
            batch = &own;
        }
        let mut metrics = on_pool_when(self.alone(), || self.local_step(batch))?;
        for replica in &self.replicas {
            metrics.add(&replica.finish()?);
        }
        Ok(metrics.normalised(self.config.global_batch_size))
    }

    /// The fraction of training done before the step being taken (`step` counts it),
    /// which a depth curriculum follows.
    pub fn progress(&self) -> f64 {
        progress_at(self.step, self.config.steps)
    }

    /// This device's part of a step: forward, backward, gradient exchange, update.
    pub(crate) fn local_step(&mut self, batch: &HostBatch) -> Result<Metrics> {
        let device = self.model.net.h_init.val().device();
        self.step += 1;
        let mut first_from = None;
        if self.carries.is_empty() {
            let count = self.auto_micro_batches(batch)?;
            self.carries = vec![None; count];
            // Where the live bytes are counted, the step's own peak checks the plan.
            if memory::counts_live(&device) {
                memory::start_peak(&device);
                first_from = memory::reading(&device).map(|r| r.held);
            }
        }
        let micro = batch.rows / self.carries.len();
        let (rank, world) = self.rank_world();
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
            let mut ctx = StepContext::train(stream).at_progress(self.progress());
            let (carry, out, loss) = self.step_with_loss(carry, &batch, &mut ctx);
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

        let mut puzzle = (!puzzle_grads.is_empty()).then(|| {
            let (g, ids): (Vec<_>, Vec<_>) = puzzle_grads.into_iter().unzip();
            (Tensor::cat(g, 0), Tensor::cat(ids, 0))
        });
        let mut grads = dense.grads();
        if let Some(group) = &self.group {
            // One exchange for the whole step: dense gradients and metrics summed,
            // puzzle rows gathered in rank order.
            let all = group.exchange_step(&mut self.model.net, &metrics, grads, puzzle)?;
            (metrics, grads, puzzle) = (all.metrics, all.grads, all.puzzle);
        }

        // Sparse SignSGD on the puzzle rows of the whole global batch (duplicates
        // summed), gathered from every device in rank order.
        if let (Some((mut g, mut ids)), Some(table)) = (puzzle, &mut self.model.net.puzzle_emb) {
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
        if let Some(peer) = &self.peer {
            grads = peer.sum_grads(grads)?;
        }
        if let Some(max_norm) = self.config.grad_clip_norm {
            clip_global_norm(&mut self.model.net, &mut grads, max_norm);
        }
        let lr = self.schedule.lr(self.config.lr, self.step);
        self.model.net = self.optim.step(lr, self.model.net.clone(), grads);
        if let (Some(ema), Some(rate)) = (&mut self.ema, self.config.ema) {
            ema_update(ema, &self.model.net.clone().no_grad(), rate);
        }
        if let (Some(from), Some(plan)) = (first_from, &mut self.micro_batch_plan) {
            plan.first_step = memory::peak_held(&device).map(|peak| peak.saturating_sub(from));
        }
        Ok(metrics)
    }

    /// One supervision step of `batch` from `carry`, and the ACT loss with the
    /// halting policy's Q loss.
    fn step_with_loss(
        &self,
        carry: Carry,
        batch: &Batch,
        ctx: &mut StepContext,
    ) -> (Carry, StepOutput, StepLoss) {
        let (carry, out) = self.model.step(carry, batch, ctx);
        let loss = act_loss(&out, &carry, self.config.loss, |sc| {
            self.model.halting.q_loss(&out, sc)
        });
        (carry, out, loss)
    }

    /// `micro_batches = "auto"`: the fewest micro-batches of this rank's `batch`
    /// that fit in the device's free memory, from two probes ([`memory`]).
    fn auto_micro_batches(&mut self, batch: &HostBatch) -> Result<usize> {
        let device = self.device.clone();
        let unreported = || {
            Error::config(
                "train.micro_batches",
                format!("\"auto\" needs the free memory of the device, which {device:?} does not report: give a count"),
            )
        };
        let before = memory::reading(&device).ok_or_else(unreported)?;
        let sizes = memory::probe_rows(batch.rows);
        if memory::counts_live(&device) {
            self.probe(batch, sizes[1])?;
        }
        let mut probes = [memory::Probe { rows: 0, peak: 0 }; 2];
        let mut carry_per_row = 0;
        for (probe, rows) in probes.iter_mut().zip(sizes) {
            let (peak, carry) = self.probe(batch, rows)?;
            *probe = memory::Probe { rows, peak };
            carry_per_row = carry / rows as u64;
        }
        let budget = match self.config.auto_memory_mb {
            Some(mb) => (mb * 1e6) as u64,
            None => before.free / 10 * 9,
        };
        // The first update adds the summed gradients and the optimizer's two moments
        // of the trained weights, and the EMA's copy of them, in float32 (the
        // puzzle table is a buffer: no dense gradient, no moments, shared by the EMA).
        let copies = 3 + u64::from(self.ema.is_some());
        let costs = memory::Costs {
            base: before.held,
            carry_per_row,
            optimizer: self.model.net.num_trainable_params() as u64 * 4 * copies,
        };
        let plan = memory::choose(batch.rows, probes, costs, budget).map_err(|why| {
            Error::config(
                "train.micro_batches",
                format!("\"auto\" on {} rows of {device:?}: {why}", batch.rows),
            )
        })?;
        self.micro_batch_plan = Some(plan);
        Ok(plan.micro_batches)
    }

    /// Forward and backward of the first `rows` rows of `batch` from fresh carries,
    /// at the deepest stage of a depth curriculum (progress 1), for the memory they
    /// take: the most held meanwhile, and the bytes of the carry they leave.
    /// Nothing is kept or updated.
    fn probe(&self, batch: &HostBatch, rows: usize) -> Result<(u64, u64)> {
        let device = &self.device;
        let held = || -> Result<u64> {
            crate::sync(device)?;
            Ok(memory::reading(device).map_or(0, |r| r.held))
        };
        memory::start_peak(device);
        let batch = device_batch(&slice_rows(batch, 0..rows), device);
        let carry = self.model.initial_carry(&batch);
        let mut ctx = StepContext::train(self.seed).at_progress(1.0);
        let (carry, _, loss) = self.step_with_loss(carry, &batch, &mut ctx);
        // Where the device tracks no peak (CUDA), after the forward (its
        // activations) and after the backward (the gradients): the peak within the
        // backward, where both live, is not seen (docs/training.md).
        let after_forward = held()?;
        let grads = loss.total.backward();
        let after_backward = held()?;
        let peak = memory::peak_held(device)
            .unwrap_or(0)
            .max(after_forward)
            .max(after_backward);
        drop(grads);
        let carry_bytes = checkpoint::carry_bytes(&carry)?.len() as u64;
        Ok((peak, carry_bytes))
    }

    /// Rolls every test example out for the policy's maximum steps (no gradient).
    pub fn evaluate(&self, test: &PuzzleSplit, batch_size: usize) -> Result<EvalResult> {
        self.evaluate_with(test, batch_size, |_, _, _| Ok(()))
    }

    /// [`Self::evaluate`], handing every batch with its final predictions (argmax
    /// tokens, `[rows * seq_len]`) and halting logits (`[rows]`) to `on_batch`, e.g.
    /// for the ARC voting evaluator. Padding rows have puzzle id `blank_identifier_id`.
    /// With several devices in this process each batch's rows are cut over them; in
    /// a group of processes every rank must call this, the batches are shared out,
    /// `on_batch` runs on rank 0 only (for every batch, in order), and every rank
    /// returns the whole evaluation.
    pub fn evaluate_with(
        &self,
        test: &PuzzleSplit,
        batch_size: usize,
        mut on_batch: impl FnMut(&HostBatch, &[i32], &[f32]) -> Result<()>,
    ) -> Result<EvalResult> {
        let start = Instant::now();
        let net = self
            .ema
            .clone()
            .unwrap_or_else(|| self.model.net.clone().no_grad());
        let mut total = Metrics::default();
        let mut ctx = StepContext::eval();
        let k = self.eval_trajectories.map_or(1, |t| t.count);
        if let Some(t) = &self.eval_trajectories {
            t.validate()?;
            ctx.latent_noise = (t.latent_noise > 0.0).then(|| LatentNoise {
                sigma: t.latent_noise,
                rng: rand::SeedableRng::seed_from_u64(t.seed),
            });
        }
        // Several devices in this process: each batch's rows are cut over them and
        // rolled out at once (not with noisy trajectories, whose noise is one stream).
        let split = !self.replicas.is_empty() && ctx.latent_noise.is_none();
        let mut rollout = |host: &HostBatch| -> Result<Rollout> {
            let world = self.world();
            if !split || host.rows < world {
                let (model, loss) = (&self.model, self.config.loss);
                return on_pool_when(self.alone(), || {
                    rollout_batch(model, loss, &net, host, &mut ctx, k)
                });
            }
            let slice =
                |r: usize| slice_rows(host, r * host.rows / world..(r + 1) * host.rows / world);
            for (r, replica) in self.replicas.iter().enumerate() {
                replica.start_eval(slice(r + 1))?;
            }
            let mut all =
                rollout_batch(&self.model, self.config.loss, &net, &slice(0), &mut ctx, k)?;
            for replica in &self.replicas {
                let part = replica.finish_eval()?;
                all.metrics.add(&part.metrics);
                all.preds.extend(part.preds);
                all.q_halt.extend(part.q_halt);
            }
            Ok(all)
        };
        // Across processes, batch i is rolled out by rank i % world and every `world`
        // batches are gathered on rank 0, which takes them in order: the same sums
        // and the same voting as one process.
        let (rank, world) = match &self.group {
            Some(g) => (g.rank, g.world),
            None => (0, 1),
        };
        let mut round: Vec<HostBatch> = Vec::new();
        let mut mine = Rollout::default();
        let mut index = 0;
        let total_batches: usize = match world {
            1 => 0,
            _ => test
                .sets()
                .iter()
                .map(|set| test_batches(set, batch_size, 0, 1).map(|b| b.len()))
                .sum::<std::result::Result<usize, _>>()
                .map_err(data_error)?,
        };
        for set in test.sets() {
            for host in test_batches(set, batch_size, 0, 1).map_err(data_error)? {
                let host = host.map_err(data_error)?;
                if index % world == rank {
                    mine = rollout(&host)?;
                }
                index += 1;
                round.push(host);
                if round.len() < world && index < total_batches {
                    continue;
                }
                let parts = match &self.group {
                    None => vec![std::mem::take(&mut mine)],
                    Some(g) => gather_rollouts(g, std::mem::take(&mut mine))?,
                };
                // Rank 0 has every part of the round; the other ranks none.
                for (host, part) in round.drain(..).zip(parts) {
                    total.add(&part.metrics);
                    on_batch(&host, &part.preds, &part.q_halt)?;
                }
            }
        }
        if let Some(g) = &self.group {
            // Every rank returns rank 0's totals.
            let mut p = Pack::default();
            p.f64s(&total.to_array());
            let sums = g.broadcast(p.0)?;
            total = metrics_from(Unpack::new(&sums, "evaluation totals").f64s()?)?;
        }
        let n = total.count.max(1.0);
        Ok(EvalResult {
            step: self.step,
            examples: total.count as usize,
            net_calls_per_example: k
                * self.model.halting.max_steps()
                * self.model.schedule.calls_per_step().total(),
            exact_accuracy: total.exact_accuracy / n,
            accuracy: total.accuracy / n,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Writes a checkpoint under `dir` (see [`checkpoint`]); in a data-parallel run
    /// every rank adds its own carries.
    pub fn save(&self, dir: &Path, experiment_toml: &str) -> Result<PathBuf> {
        if let Some(g) = self.group.as_ref().filter(|g| !g.is_leader()) {
            // Ranks 1.. of a group of processes send their carries to rank 0, which
            // writes them into its checkpoint.
            let mut files = Pack::default();
            for (name, bytes) in self.carry_files()? {
                files.bytes(name.as_bytes());
                files.bytes(&bytes);
            }
            g.exchange(files.0, |_| Ok(Vec::new()))?;
            return Ok(dir.join(format!("step-{:06}", self.step)));
        }
        checkpoint::save(dir, self.step, self.config.keep_checkpoints, |tmp| {
            crate::weights::save_net_file(&self.model.net, &tmp.join("model.safetensors"), None)?;
            if let Some(ema) = &self.ema {
                crate::weights::save_net_file(ema, &tmp.join("ema.safetensors"), None)?;
            }
            self.save_carries(tmp)?;
            if let Some(g) = &self.group {
                g.exchange(Vec::new(), |parts| {
                    for part in &parts[1..] {
                        unpack_dir(part, tmp)?;
                    }
                    Ok(Vec::new())
                })?;
            }
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
        self.rank_world().0 * self.carries.len() + m
    }

    /// This rank's carries as checkpoint files: `carry-M.safetensors` (M its
    /// micro-batch's index in the global batch) and their bytes.
    fn carry_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        for (m, carry) in self.carries.iter().enumerate() {
            if let Some(carry) = carry {
                let name = format!("carry-{}.safetensors", self.global_micro(m));
                files.push((name, checkpoint::carry_bytes(carry)?));
            }
        }
        Ok(files)
    }

    /// Writes this rank's carries into the checkpoint directory `dir`.
    pub(crate) fn save_carries(&self, dir: &Path) -> Result<()> {
        for (name, bytes) in self.carry_files()? {
            crate::weights::write_atomic(&dir.join(name), &bytes)?;
        }
        Ok(())
    }

    /// Restores the latest checkpoint under `dir` into this (freshly built) trainer.
    /// In a group of processes rank 0 reads it and sends it to the others (which
    /// need no shared disk; their `dir` is not read).
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        if let Some(g) = self.group.as_ref().filter(|g| !g.is_leader()) {
            let files = g.broadcast(Vec::new())?;
            let tmp = std::env::temp_dir().join(format!(
                "recursa-resume-rank{}-{}",
                g.rank,
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&tmp);
            let restored = unpack_dir(&files, &tmp)
                .and_then(|_| self.check_carries(&tmp))
                .and_then(|_| self.resume_from(&tmp));
            let _ = std::fs::remove_dir_all(&tmp);
            return restored;
        }
        let path = checkpoint::latest(dir)?;
        self.check_carries(&path)?;
        self.resume_from(&path)?;
        if let Some(g) = &self.group {
            g.broadcast(pack_dir(&path)?)?;
        }
        for replica in &self.replicas {
            replica.resume(path.clone())?;
        }
        Ok(())
    }

    /// Carries are saved per micro-batch of the global batch: a run resumes them
    /// when its ranks x micro-batches is the number saved (the same rows each).
    fn check_carries(&self, path: &Path) -> Result<()> {
        let saved = saved_carries(path)?;
        let (_, world) = self.rank_world();
        let here = world * self.carries.len();
        // `"auto"` not chosen yet takes the checkpoint's count ([`Self::resume_from`]).
        if saved > 0 && saved != here && !self.carries.is_empty() {
            return Err(Error::Input(format!(
                "{}: holds {saved} carries (ranks x train.micro_batches of the run that saved it); this run has {here} ({world} x {}): resume with ranks x train.micro_batches = {saved}",
                path.display(),
                self.carries.len()
            )));
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
        if self.carries.is_empty() {
            // `micro_batches = "auto"` keeps the count it chose: one carry each
            // (a run on one device).
            let saved = saved_carries(path)?;
            if saved > 0 && !self.config.global_batch_size.is_multiple_of(saved) {
                return Err(Error::Input(format!(
                    "{}: holds {saved} carries, which do not split train.global_batch_size {}",
                    path.display(),
                    self.config.global_batch_size
                )));
            }
            self.carries = vec![None; saved];
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

/// The number of carries (`carry-M.safetensors`) in the checkpoint directory `path`.
fn saved_carries(path: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("carry-"))
        .count())
}

/// `micro_batches = "auto"` on several devices or processes, refused.
fn auto_alone() -> Error {
    Error::config(
        "train.micro_batches",
        "\"auto\" chooses the count on one device (each device would choose its own): give a count for a run on several devices or processes",
    )
}

/// Every rank's rollout of this round, in rank order, on rank 0 (none elsewhere).
fn gather_rollouts(group: &ProcessGroup, mine: Rollout) -> Result<Vec<Rollout>> {
    let mut p = Pack::default();
    p.f64s(&mine.metrics.to_array());
    p.i32s(&mine.preds);
    p.f32s(&mine.q_halt);
    let mut parts = Vec::new();
    group.exchange(p.0, |p| {
        parts = p;
        Ok(Vec::new())
    })?;
    parts
        .iter()
        .map(|part| {
            let mut u = Unpack::new(part, "an evaluation result");
            Ok(Rollout {
                metrics: metrics_from(u.f64s()?)?,
                preds: u.i32s()?,
                q_halt: u.f32s()?,
            })
        })
        .collect()
}

/// Metrics sent as [`Metrics::to_array`].
fn metrics_from(values: Vec<f64>) -> Result<Metrics> {
    let values = values
        .try_into()
        .map_err(|_| Error::Other("metrics of the wrong length from another rank".into()))?;
    Ok(Metrics::from_array(values))
}

impl Worker for Trainer {
    fn join(&mut self, peer: Peer) {
        self.peer = Some(peer);
    }

    fn local_step(&mut self, batch: &HostBatch) -> Result<Metrics> {
        Trainer::local_step(self, batch)
    }

    fn save_carries(&mut self, dir: &Path) -> Result<()> {
        Trainer::save_carries(self, dir)
    }

    fn resume_from(&mut self, dir: &Path) -> Result<()> {
        Trainer::resume_from(self, dir)
    }

    fn rollout_rows(&mut self, rows: &HostBatch) -> Result<Rollout> {
        let net = self
            .ema
            .clone()
            .unwrap_or_else(|| self.model.net.clone().no_grad());
        let k = self.eval_trajectories.map_or(1, |t| t.count);
        rollout_batch(
            &self.model,
            self.config.loss,
            &net,
            rows,
            &mut StepContext::eval(),
            k,
        )
    }
}

/// `f` on a pool thread ([`on_pool`]) when the trainer is alone
/// ([`Trainer::alone`]), else on the calling thread.
fn on_pool_when<R: Send>(alone: bool, f: impl FnOnce() -> R + Send) -> R {
    match alone {
        true => on_pool(f),
        false => f(),
    }
}

/// One test batch rolled out for the policy's maximum steps with `net` (K
/// trajectories per row when `k > 1`, the best kept). A function of the model
/// rather than a method of the trainer, which is not `Sync`, so that a pool
/// thread can run it ([`on_pool`]).
fn rollout_batch(
    model: &LoopedModel,
    loss: LossType,
    net: &Net,
    host: &HostBatch,
    ctx: &mut StepContext,
    k: usize,
) -> Result<Rollout> {
    let device = net.h_init.val().device();
    let max_steps = model.halting.max_steps();
    let repeated;
    let rows = if k > 1 {
        repeated = repeat_rows(host, k);
        &repeated
    } else {
        host
    };
    let batch = device_batch(rows, &device);
    let mut carry = model.initial_carry_on(&batch, &device);
    // In evaluation every policy runs its maximum (the `HaltingPolicy`
    // contract), so the batch halts together after the last step: one check
    // per batch instead of a host sync per step.
    let mut last = None;
    // No weight changes during the rollout: the CPU kernels copy each to the host once.
    let frozen = FrozenWeights::open();
    for _ in 0..max_steps {
        let (next, out) = model.step_with(net, carry, &batch, ctx);
        carry = next;
        last = Some(out);
    }
    drop(frozen);
    let Some(out) = last else {
        return Err(Error::config(
            "halting",
            "0 supervision steps: nothing to evaluate",
        ));
    };
    if carry.halted.clone().all().into_scalar() == 0 {
        return Err(Error::Other(format!(
            "halting policy `{}`: rows still running after its {max_steps} steps in evaluation (it must halt every row at its maximum)",
            model.halting.name()
        )));
    }
    let (out, carry) = select_best(out, carry, k);
    let m = act_loss(&out, &carry, loss, |_| (None, None));
    let preds: Vec<i32> = out
        .logits
        .argmax(2)
        .into_data()
        .convert::<i32>()
        .to_vec()
        .expect("converted to i32");
    let q_halt: Vec<f32> = out
        .q_halt_logits
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("converted to f32");
    // Evaluation runs no backward, which is when burn frees its graph entries.
    free_untracked(&device);
    Ok(Rollout {
        metrics: m.metrics,
        preds,
        q_halt,
    })
}
