//! Data parallelism in one process over several devices of one backend, on burn's
//! `collective` all-reduce.
//!
//! Every device holds a replica of the model and trains on its slice of the
//! global batch; the replicas stay identical because every one applies the same
//! summed gradients:
//!
//! * dense gradients: [`Peer::sum_grads`], an all-reduce (sum) per parameter. The
//!   loss is already scaled by 1/global batch, so the sum is the one-device
//!   gradient (the reference: `dist.all_reduce(param.grad)`).
//! * the puzzle embedding's SignSGD needs the rows and ids of every device (the
//!   reference: `all_gather_into_tensor`). burn has no all-gather, so
//!   [`Peer::gather_rows`] builds one from an all-reduce of zero-padded blocks,
//!   which is exact (adding zeros changes no bit) and keeps rank order.
//!
//! Rank 0 is the [`Trainer`](crate::train::trainer::Trainer) in the calling thread;
//! ranks 1.. are [`Replica`] threads it drives over channels, each running a
//! [`Worker`] (a trainer, built in its thread). Collective calls block until every
//! rank has made them, so every rank runs the same sequence.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::optim::GradientsParams;
use burn::tensor::backend::DeviceOps;
use burn::tensor::{Int, Tensor, TensorPrimitive};

use crate::train::data::HostBatch;
use crate::train::loss::Metrics;
use crate::{Device, Error, Inner, Result, B};

fn collective_error(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Backend(format!("data parallel {what}: {e:?}"))
}

/// This rank's membership in the group of devices.
#[derive(Debug)]
pub struct Peer {
    id: PeerId,
    pub rank: usize,
    pub world: usize,
}

impl Peer {
    /// Joins the group; returns once all `world` ranks have joined.
    pub fn register(rank: usize, world: usize, device: &Device) -> Result<Peer> {
        let config = CollectiveConfig::default().with_num_devices(world);
        let id = PeerId::from(rank);
        collective::register::<Inner>(id, device.inner().clone(), config)
            .map_err(|e| collective_error("register", e))?;
        Ok(Peer { id, rank, world })
    }

    /// The sum over ranks of every dense gradient.
    pub fn sum_grads(&self, grads: GradientsParams) -> Result<GradientsParams> {
        grads
            .all_reduce::<Inner>(self.id, ReduceOperation::Sum)
            .map_err(|e| collective_error("gradient all-reduce", e))
    }

    /// Every rank's `[n, d]` block stacked in rank order: `[world * n, d]`. Every
    /// rank must pass the same `n` (equal local batches guarantee it).
    pub fn gather_rows(&self, local: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let [n, d] = local.dims();
        // The rows are values (no gradient flows through them): on the inner backend.
        let padded = Tensor::<Inner, 2>::zeros([self.world * n, d], &local.device())
            .slice_assign([self.rank * n..(self.rank + 1) * n, 0..d], local.inner());
        let sum = collective::all_reduce::<Inner>(
            self.id,
            padded.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| collective_error("all-gather", e))?;
        Ok(Tensor::from_inner(Tensor::from_primitive(
            TensorPrimitive::Float(sum),
        )))
    }

    /// [`Self::gather_rows`] for ids, sent as floats: exact below 2^24 ids, far
    /// above the ~900k puzzle identifiers of ARC with 1000 augmentations.
    pub fn gather_ids(&self, ids: Tensor<B, 1, Int>) -> Result<Tensor<B, 1, Int>> {
        let rows = self.gather_rows(ids.float().unsqueeze_dim(1))?;
        Ok(rows.squeeze_dim::<1>(1).round().int())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Leaving the group only fails if it is already gone; nothing to recover.
        let _ = collective::finish_collective::<Inner>(self.id);
    }
}

/// What rank 0 asks a replica to do.
enum Job {
    /// Train on this slice of the global batch (one optimizer step).
    Step(HostBatch),
    /// Write this rank's carries into the checkpoint being written at this path.
    SaveCarries(PathBuf),
    /// Restore the checkpoint at this path (weights, optimizer, own carries).
    Resume(PathBuf),
    /// Roll these test rows out (evaluation).
    Eval(HostBatch),
}

/// What a replica answers: a step's metrics, or a rollout's (empty for the rest).
type Done = Result<Rollout>;

/// One test batch's rollout: metric sums, argmax predictions (`[rows * seq_len]`)
/// and halting logits (`[rows]`).
#[derive(Debug, Default)]
pub struct Rollout {
    pub metrics: Metrics,
    pub preds: Vec<i32>,
    pub q_halt: Vec<f32>,
}

impl From<Metrics> for Rollout {
    fn from(metrics: Metrics) -> Self {
        Rollout {
            metrics,
            ..Rollout::default()
        }
    }
}

/// What a rank >= 1 runs in its thread: a replica trainer.
pub trait Worker {
    /// Takes this rank's place in the group (once, right after it is built).
    fn join(&mut self, peer: Peer);
    /// One optimizer step on this rank's slice of the global batch.
    fn local_step(&mut self, batch: &HostBatch) -> Result<Metrics>;
    /// Writes this rank's carries into the checkpoint being written at `dir`.
    fn save_carries(&mut self, dir: &Path) -> Result<()>;
    /// Restores the checkpoint at `dir` (weights, optimizer, own carries).
    fn resume_from(&mut self, dir: &Path) -> Result<()>;
    /// Rolls test rows out with this replica's evaluation weights.
    fn rollout_rows(&mut self, rows: &HostBatch) -> Result<Rollout>;
}

/// A rank >= 1: a thread owning a replica trainer.
pub struct Replica {
    rank: usize,
    jobs: Sender<Job>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Replica {
    /// Starts rank `rank` of `world` on `device`, running the worker `build` makes in
    /// the new thread. Returns once the worker is built (not yet registered in the group).
    pub fn spawn<W: Worker>(
        rank: usize,
        world: usize,
        device: Device,
        build: impl FnOnce(&Device) -> Result<W> + Send + 'static,
    ) -> Result<Replica> {
        let (jobs, job_rx) = channel::<Job>();
        let (done_tx, done) = channel::<Done>();
        let thread = std::thread::Builder::new()
            .name(format!("recursa-rank-{rank}"))
            .spawn(move || {
                let mut worker = match build(&device) {
                    Ok(t) => {
                        let _ = done_tx.send(Ok(Rollout::default()));
                        t
                    }
                    Err(e) => {
                        let _ = done_tx.send(Err(e));
                        return;
                    }
                };
                match Peer::register(rank, world, &device) {
                    Ok(peer) => worker.join(peer),
                    Err(e) => {
                        let _ = done_tx.send(Err(e));
                        return;
                    }
                }
                for job in job_rx {
                    let reply = match job {
                        Job::Step(batch) => worker.local_step(&batch).map(Rollout::from),
                        Job::SaveCarries(dir) => {
                            worker.save_carries(&dir).map(|_| Rollout::default())
                        }
                        Job::Resume(dir) => worker.resume_from(&dir).map(|_| Rollout::default()),
                        Job::Eval(rows) => worker.rollout_rows(&rows),
                    };
                    if done_tx.send(reply).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Other(format!("cannot start rank {rank}: {e}")))?;
        let replica = Replica {
            rank,
            jobs,
            done,
            thread: Some(thread),
        };
        replica.finish()?;
        Ok(replica)
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| Error::Other(format!("data-parallel rank {} stopped", self.rank)))
    }

    /// Starts a training step on `batch`; collect it with [`Self::finish`].
    pub fn start_step(&self, batch: HostBatch) -> Result<()> {
        self.send(Job::Step(batch))
    }

    /// The metrics of the step (or the result of the job) started last.
    pub fn finish(&self) -> Result<Metrics> {
        self.finish_eval().map(|r| r.metrics)
    }

    /// Starts rolling `rows` out; collect it with [`Self::finish_eval`].
    pub fn start_eval(&self, rows: HostBatch) -> Result<()> {
        self.send(Job::Eval(rows))
    }

    /// The rollout (or the result of the job) started last.
    pub fn finish_eval(&self) -> Result<Rollout> {
        self.done
            .recv()
            .map_err(|_| Error::Other(format!("data-parallel rank {} stopped", self.rank)))?
    }

    /// Has the replica write its carries into `dir` and waits for it.
    pub fn save_carries(&self, dir: PathBuf) -> Result<()> {
        self.send(Job::SaveCarries(dir))?;
        self.finish().map(|_| ())
    }

    /// Has the replica restore the checkpoint `dir` and waits for it.
    pub fn resume(&self, dir: PathBuf) -> Result<()> {
        self.send(Job::Resume(dir))?;
        self.finish().map(|_| ())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop.
        let (closed, _) = channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
