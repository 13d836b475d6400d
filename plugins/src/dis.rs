//! DIS: Deep Improvement Supervision as its authors' code does it
//! (machinestein/Deep-Improvement-Supervision, `TinyRecursiveReasoningModel_ACTV5`
//! with `ACTLossHeadV4`). Two plugins:
//!
//! * schedule `dis`: TRM's deep recursion (default T=1, n=2) with two changes to x:
//!   a learned step embedding (`net.step_embeddings` = steps + 2 rows) added at
//!   every position before the sqrt(hidden) scale, and, from an episode's second
//!   step on, the previous step's argmax fed as the question instead of the input;
//! * target `dis-linear-path`: step k of N is trained against frame k of a path
//!   from the input to the answer: the cells where they differ, in a random order
//!   drawn per episode, the first `floor(k * n_diff / N)` of them revealed.
//!
//! Kept from the reference on purpose: the differing cells are computed on the
//! *raw* labels, so ignored (-100) label cells count as differences and are
//! progressively replaced by -100 (they then carry no loss); frame 0 (the input)
//! is never a target; a path is drawn on every step but kept only for rows that
//! start an episode.

use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use recursa_core::error::check_count;
use recursa_core::halting::MAX_STEPS;
use recursa_core::model::layers::Rope;
use recursa_core::model::Net;
use recursa_core::model::NetConfig;
use recursa_core::registry::Plugin;
use recursa_core::schedule::NetCalls;
use recursa_core::state::{Batch, Episode, Latents};
use recursa_core::train::loss::IGNORE_LABEL_ID;
use recursa_core::{Error, RecursionSchedule, Result, SupervisionTarget, B};
use serde::{Deserialize, Serialize};

use crate::cgar::{check_curriculum, check_step_decay, stage_at, step_weights, DepthStage};
use crate::trm::{check_depth, deep_recursion, net_calls};

fn d_one() -> usize {
    1
}
fn d_two() -> usize {
    2
}

/// DIS: deep recursion (T=1, n=2) with a step embedding in x and the previous argmax fed
/// as the question
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(schedule = "dis")]
pub struct Dis {
    /// T, cycles per supervision step (default 1)
    #[serde(default = "d_one")]
    pub h_cycles: usize,
    /// n, latent updates per cycle (default 2)
    #[serde(default = "d_two")]
    pub l_cycles: usize,
    /// Depth curriculum: stages `{ until, h_cycles, l_cycles }` run before the full T and n (CGAR)
    ///
    /// As the `trm` schedule's (see `cgar.rs`). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curriculum: Vec<DepthStage>,
    /// Network calls at the end of each step that carry gradient (URM); default n + 1, the last cycle
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_calls: Option<usize>,
}

impl Dis {
    /// DIS's schedule with T = `h_cycles`, n = `l_cycles`, no curriculum, the last cycle with gradient.
    pub fn new(h_cycles: usize, l_cycles: usize) -> Self {
        Dis {
            h_cycles,
            l_cycles,
            curriculum: Vec::new(),
            grad_calls: None,
        }
    }
}

impl RecursionSchedule for Dis {
    fn check_fields(&self) -> Result<()> {
        check_depth(self.h_cycles, self.l_cycles, self.grad_calls)?;
        check_curriculum(&self.curriculum, self.h_cycles, self.l_cycles)
    }

    fn check(&self, net: &NetConfig) -> Result<()> {
        if net.step_embeddings < 3 {
            return Err(Error::config(
                "net.step_embeddings",
                "the dis schedule adds a step embedding: set it to the number of supervision steps + 2",
            ));
        }
        Ok(())
    }

    fn uses_step_embedding(&self) -> bool {
        true
    }

    fn calls_per_step(&self) -> NetCalls {
        net_calls(self.h_cycles, self.l_cycles, self.grad_calls)
    }

    fn at_progress(&self, progress: f64) -> Option<Box<dyn RecursionSchedule>> {
        let stage = stage_at(&self.curriculum, progress)?;
        Some(Box::new(Dis {
            h_cycles: stage.h_cycles,
            l_cycles: stage.l_cycles,
            curriculum: Vec::new(),
            grad_calls: self.grad_calls,
        }))
    }

    /// Step 1 feeds the input; later steps the previous argmax; -100 becomes PAD (0).
    fn question(
        &self,
        data: &Batch,
        steps: &Tensor<B, 1, Int>,
        previous_preds: &Tensor<B, 2, Int>,
    ) -> Tensor<B, 2, Int> {
        let [rows, seq] = data.inputs.dims();
        let first = steps
            .clone()
            .equal_elem(0)
            .reshape([rows, 1])
            .expand([rows, seq]);
        let fed = previous_preds
            .clone()
            .mask_where(first, data.inputs.clone());
        let ignored = fed.clone().equal_elem(IGNORE_LABEL_ID);
        fed.mask_fill(ignored, 0)
    }

    /// 1 on an episode's first step, then steps + 1, clamped to the table (reference: [0, N]).
    fn step_index(&self, net: &NetConfig, steps: &Tensor<B, 1, Int>) -> Option<Tensor<B, 1, Int>> {
        let max = net.step_embeddings.saturating_sub(2) as i64;
        Some((steps.clone() + 1).clamp(0, max))
    }

    fn recurse(
        &self,
        net: &Net,
        latents: Latents,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
    ) -> Latents {
        let (t, n) = (self.h_cycles, self.l_cycles);
        deep_recursion(net, latents, &x, rope, t, n, self.grad_calls)
    }
}

/// DIS (authors' code): step k reveals floor(k*n_diff/N) of the cells where input and
/// answer differ, in a random order per episode
#[derive(Clone, Debug, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(target = "dis-linear-path")]
pub struct DisLinearPath {
    /// N, supervision steps the path spans (DIS: 6)
    ///
    /// Frames 0..=N.
    pub steps: usize,
    /// λ: weight supervision step t's loss by λ^(t-1) (CGAR; 0.7 in the paper); default none
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_decay: Option<f64>,
    /// Paths to use instead of drawing them (e.g. to replay a reference rollout),
    /// `[batch, steps + 1, seq_len]`.
    #[serde(skip)]
    pub fixed_paths: Option<Tensor<B, 3, Int>>,
}

impl PartialEq for DisLinearPath {
    fn eq(&self, other: &Self) -> bool {
        self.steps == other.steps && self.step_decay == other.step_decay
    }
}

/// `paths[b, s] = labels[b] where rank[b, pos] < (s * n_diff[b]) / N, else inputs[b]`.
pub fn linear_paths(
    inputs: &[i32],
    labels: &[i32],
    seq: usize,
    steps: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<i32> {
    let rows = inputs.len() / seq;
    let frames = steps + 1;
    let mut out = Vec::with_capacity(rows * frames * seq);
    for r in 0..rows {
        let (x0, x1) = (
            &inputs[r * seq..(r + 1) * seq],
            &labels[r * seq..(r + 1) * seq],
        );
        let mut differing: Vec<usize> = (0..seq).filter(|&p| x0[p] != x1[p]).collect();
        differing.shuffle(rng);
        let mut rank = vec![usize::MAX; seq];
        for (i, &p) in differing.iter().enumerate() {
            rank[p] = i;
        }
        for s in 0..frames {
            let revealed = s * differing.len() / steps;
            out.extend((0..seq).map(|p| if rank[p] < revealed { x1[p] } else { x0[p] }));
        }
    }
    out
}

impl SupervisionTarget for DisLinearPath {
    fn check_fields(&self) -> Result<()> {
        check_count("target.steps", self.steps, MAX_STEPS)?;
        check_step_decay(self.step_decay)
    }

    fn weight(&self, steps: &Tensor<B, 1, Int>) -> Option<Tensor<B, 1>> {
        self.step_decay.map(|decay| step_weights(steps, decay))
    }

    fn steps(&self) -> Option<usize> {
        Some(self.steps)
    }

    /// The episode's path (`"path"`, `[batch, N + 1, seq_len]`: frames 0..=N).
    fn start(&self, data: &Batch, rng: &mut ChaCha8Rng) -> Option<Episode> {
        if let Some(paths) = &self.fixed_paths {
            return Some(Episode::default().with("path", paths.clone()));
        }
        let [rows, seq] = data.inputs.dims();
        let host = |t: &Tensor<B, 2, Int>| {
            t.clone()
                .into_data()
                .convert::<i32>()
                .to_vec::<i32>()
                .expect("converted to i32")
        };
        let paths = linear_paths(
            &host(&data.inputs),
            &host(&data.labels),
            seq,
            self.steps,
            rng,
        );
        let device = data.inputs.device();
        let paths = Tensor::from_data(TensorData::new(paths, [rows, self.steps + 1, seq]), &device);
        Some(Episode::default().with("path", paths))
    }

    /// Frame `clamp(steps, 0, N)`; tokens outside the vocabulary (-100) are ignored.
    fn target(
        &self,
        data: &Batch,
        episode: Option<&Episode>,
        steps: &Tensor<B, 1, Int>,
    ) -> Tensor<B, 2, Int> {
        let Some(paths) = episode.and_then(|e| e.get("path")) else {
            return data.labels.clone();
        };
        let [rows, frames, seq] = paths.dims();
        let index = steps
            .clone()
            .clamp(0, frames as i64 - 1)
            .reshape([rows, 1, 1])
            .expand([rows, 1, seq]);
        paths.clone().gather(1, index).reshape([rows, seq])
    }
}
