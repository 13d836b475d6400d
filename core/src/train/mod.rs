//! Training: losses, optimizers, learning-rate schedule, the loop and checkpoints.
//!
//! * [`loss`]: stablemax / softmax cross-entropy and the ACT loss head with metrics.
//! * [`adam_atan2`]: AdamATan2 for the dense parameters (a burn `SimpleOptimizer`).
//! * [`sign_sgd`]: the sparse SignSGD for the puzzle-embedding table.
//! * [`lr`]: warmup + cosine.
//! * [`config`]: `[train]` of an experiment file; [`optimizer`]: the dense optimizer.
//! * [`trainer`]: one optimizer step (carry, step, loss, backward, updates), evaluation,
//!   checkpoints and resume; [`fit`]: the loop around it; [`data_parallel`]: several
//!   devices in one process; [`process_group`]: several processes (and machines).
//! * [`memory`]: `micro_batches = "auto"`, the count from the device's free memory.
//! * [`ema`], [`clip`]: weight averaging and gradient clipping.
//! * [`trajectories`]: PTRM's noisy rollouts selected by the halting head, at evaluation.
//! * [`observer`]: what the fit loop reports, and its logs ([`tensorboard`] events).
//! * [`pool`]: steps run on a thread of rayon's pool, where the CPU kernels start fast.

pub mod adam_atan2;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod data;
pub mod data_parallel;
pub mod ema;
pub mod fit;
pub mod loss;
pub mod lr;
pub mod memory;
pub mod observer;
pub mod optimizer;
pub mod pool;
pub mod process_group;
pub mod sign_sgd;
pub mod tensorboard;
pub mod trainer;
pub mod trajectories;
