//! One supervision step with the ACT carry, shared by every schedule.
//!
//! As the reference `TinyRecursiveReasoningModel_ACTV1.forward`:
//! 1. rows that halted after the previous step are reset: latents to `H_init`/`L_init`,
//!    step count to 0, and their data taken from the new batch; the other rows keep
//!    their latents and data;
//! 2. the schedule embeds x and runs its recursion;
//! 3. the heads decode logits from y = z_H and the halting logits from `z_H[:, 0]`;
//! 4. the step count grows by one and the halting policy marks the rows that stop.
//!
//! The carried latents are detached: no gradient flows between supervision steps.

use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::halting::HaltingPolicy;
use crate::model::fused;
use crate::model::no_grad::NoGrad;
use crate::model::{Net, NetConfig};
use crate::schedule::{NetCalls, RecursionSchedule};
use crate::state::{Batch, Carry, HaltInput, Latents, StepOutput};
use crate::target::SupervisionTarget;
use crate::{Result, B};

/// A looped model: one network plus a choice on each plugin axis.
#[derive(Debug)]
pub struct LoopedModel {
    pub net: Net,
    pub schedule: Box<dyn RecursionSchedule>,
    pub target: Box<dyn SupervisionTarget>,
    pub halting: Box<dyn HaltingPolicy>,
}

/// Checks that the plugins fit the network and each other: the schedule's and the
/// target's `check`, and DIS's N, given in up to three places (the halting policy's
/// steps, the target's path length, the step-embedding rows N + 2), which must agree.
/// Errors name the fields.
pub fn check_plugins(
    net: &NetConfig,
    schedule: &dyn RecursionSchedule,
    target: &dyn SupervisionTarget,
    halting: &dyn HaltingPolicy,
) -> Result<()> {
    schedule.check(net)?;
    target.check(net)?;
    check_supervision_steps(net, schedule, target, halting)
}

fn check_supervision_steps(
    net: &NetConfig,
    schedule: &dyn RecursionSchedule,
    target: &dyn SupervisionTarget,
    halting: &dyn HaltingPolicy,
) -> Result<()> {
    let n = halting.max_steps();
    let target_n = target.steps();
    let rows = schedule
        .uses_step_embedding()
        .then_some(net.step_embeddings);
    if target_n.is_none_or(|t| t == n) && rows.is_none_or(|r| r == n + 2) {
        return Ok(());
    }
    let mut given = vec![format!("the halting policy's {n} supervision steps")];
    given.extend(target_n.map(|t| format!("target.steps = {t}")));
    given.extend(rows.map(|r| format!("net.step_embeddings = {r} (N + 2)")));
    Err(crate::Error::config(
        "halting",
        format!(
            "{} must agree on N, the supervision steps of an episode",
            given.join(", ")
        ),
    ))
}

/// Per-run state a step needs besides the carry: mode, the random stream (halting
/// exploration, episode draws, latent noise), and where training stands.
pub struct StepContext {
    pub training: bool,
    pub rng: ChaCha8Rng,
    /// Fraction of training steps done before this one, for a depth curriculum
    /// ([`RecursionSchedule::at_progress`]); `None` runs the schedule itself.
    pub progress: Option<f64>,
    /// Gaussian noise added to y = z_H before each step's recursion (PTRM's noisy
    /// trajectories, see `train::trajectories`); `None` for none.
    pub latent_noise: Option<LatentNoise>,
}

/// PTRM's noise on y = z_H: its σ and its own random stream, so that the other draws
/// of a rollout (episode starts) are those of the plain rollout.
pub struct LatentNoise {
    pub sigma: f64,
    pub rng: ChaCha8Rng,
}

impl StepContext {
    /// Evaluation mode (no Q halting, no exploration).
    pub fn eval() -> Self {
        StepContext {
            training: false,
            rng: ChaCha8Rng::seed_from_u64(0),
            progress: None,
            latent_noise: None,
        }
    }

    /// Training mode with halting exploration drawn from `seed`.
    pub fn train(seed: u64) -> Self {
        StepContext {
            training: true,
            rng: ChaCha8Rng::seed_from_u64(seed),
            progress: None,
            latent_noise: None,
        }
    }

    /// This context at `progress` through training (see [`StepContext::progress`]).
    pub fn at_progress(self, progress: f64) -> Self {
        StepContext {
            progress: Some(progress),
            ..self
        }
    }
}

impl LoopedModel {
    /// Assembles a model, checking that the schedule fits the network.
    pub fn new(
        net: Net,
        schedule: Box<dyn RecursionSchedule>,
        target: Box<dyn SupervisionTarget>,
        halting: Box<dyn HaltingPolicy>,
    ) -> Result<Self> {
        check_plugins(&net.config, &*schedule, &*target, &*halting)?;
        Ok(LoopedModel {
            net,
            schedule,
            target,
            halting,
        })
    }

    /// Network calls per step at `progress` through training: a curriculum's stage's
    /// (see [`RecursionSchedule::at_progress`]), or the schedule's own.
    pub fn calls_per_step_at(&self, progress: Option<f64>) -> NetCalls {
        match progress.and_then(|p| self.schedule.at_progress(p)) {
            Some(stage) => stage.calls_per_step(),
            None => self.schedule.calls_per_step(),
        }
    }

    /// The carry before the first step: every row halted, so the first step
    /// resets all of them and takes all data from its batch.
    pub fn initial_carry(&self, batch: &Batch) -> Carry {
        // The network's device: an integer tensor reports the inner device of an
        // autodiff device, and the latents must live where the parameters do.
        self.initial_carry_on(batch, &self.net.h_init.val().device())
    }

    /// [`Self::initial_carry`] on `device`.
    pub fn initial_carry_on(&self, batch: &Batch, device: &crate::Device) -> Carry {
        let [rows, seq] = batch.inputs.dims();
        let device = device.clone();
        let shape = [
            rows,
            self.net.config.total_len(),
            self.net.config.hidden_size,
        ];
        Carry {
            latents: Latents {
                z_h: Tensor::zeros(shape, &device),
                z_l: Tensor::zeros(shape, &device),
            },
            steps: Tensor::zeros([rows], &device),
            halted: Tensor::<B, 1, Int>::ones([rows], &device).equal_elem(1),
            current_data: Batch {
                inputs: Tensor::zeros([rows, seq], &device),
                labels: Tensor::zeros([rows, seq], &device),
                puzzle_identifiers: Tensor::zeros([rows], &device),
            },
            preds: Tensor::zeros([rows, seq], &device),
            episode: None,
        }
    }

    /// One supervision step (module doc): reset halted rows, recurse, decode, halt.
    pub fn step(&self, carry: Carry, batch: &Batch, ctx: &mut StepContext) -> (Carry, StepOutput) {
        self.step_with(&self.net, carry, batch, ctx)
    }

    /// [`Self::step`] with another copy of the network (e.g. its non-autodiff
    /// `valid()` copy for evaluation during training).
    pub fn step_with(
        &self,
        net: &Net,
        carry: Carry,
        batch: &Batch,
        ctx: &mut StepContext,
    ) -> (Carry, StepOutput) {
        let reset = carry.halted;
        let mut latents = Latents {
            z_h: fused::reset_rows(carry.latents.z_h, reset.clone(), net.h_init.val()),
            z_l: fused::reset_rows(carry.latents.z_l, reset.clone(), net.l_init.val()),
        };
        let steps = carry.steps.mask_fill(reset.clone(), 0);
        let data = carry.current_data.replace_rows(&reset, batch);

        let episode = match (carry.episode, self.target.start(&data, &mut ctx.rng)) {
            (Some(old), Some(fresh)) => Some(old.replace_rows(&reset, &fresh)),
            (_, fresh) => fresh,
        };

        if let Some(noise) = &mut ctx.latent_noise {
            let (shape, device) = (latents.z_h.dims(), latents.z_h.device());
            latents.z_h = latents.z_h + gaussian(shape, noise.sigma, &mut noise.rng, &device);
        }

        // A curriculum's stage, or the schedule itself.
        let stage = ctx.progress.and_then(|p| self.schedule.at_progress(p));
        let schedule = stage.as_deref().unwrap_or(&*self.schedule);
        let puzzle = net.puzzle_rows(data.puzzle_identifiers.clone(), ctx.training);
        let question = schedule.question(&data, &steps, &carry.preds);
        let step_index = schedule.step_index(&net.config, &steps);
        let x = net.input_embeddings(question, puzzle.clone(), step_index);
        let rope = net.rope(&x.device());
        let latents = schedule.recurse(net, latents, x.clone(), rope.as_ref());

        let logits = net.lm_head(latents.z_h.clone());
        let (q_halt_logits, q_continue_logits) = net.q_head(latents.z_h.clone());

        let steps = steps + 1;
        let target_q_continue = if ctx.training {
            // The halting policy's hook (act-q): one more step without gradient (the
            // reference's `torch.no_grad()`), run only if the policy asks for it.
            let mut next_q = || {
                let no_grad = NoGrad::new(net, rope.as_ref());
                let next = schedule.recurse(
                    &no_grad.net,
                    no_grad.input_latents(latents.clone()),
                    no_grad.input(x.clone()),
                    no_grad.rope.as_ref(),
                );
                let (next_halt, next_continue) = no_grad.net.q_head(next.z_h);
                (no_grad.output(next_halt), no_grad.output(next_continue))
            };
            self.halting.continue_target(&steps, &mut next_q)
        } else {
            None
        };
        let target = self.target.target(&data, episode.as_ref(), &steps);
        let target_weight = self.target.weight(&steps);
        let preds = logits.clone().detach().argmax(2).squeeze_dim(2);
        let halted = self.halting.halted(
            &HaltInput {
                steps: &steps,
                q_halt: &q_halt_logits,
                q_continue: &q_continue_logits,
                training: ctx.training,
            },
            &mut ctx.rng,
        );
        let carry_data_ids = data.puzzle_identifiers.clone();
        let carry = Carry {
            latents: Latents {
                z_h: latents.z_h.detach(),
                z_l: latents.z_l.detach(),
            },
            steps,
            halted,
            current_data: data,
            preds,
            episode,
        };
        let out = StepOutput {
            logits,
            q_halt_logits,
            q_continue_logits,
            target,
            target_weight,
            target_q_continue,
            puzzle: puzzle.map(|rows| (rows, carry_data_ids)),
        };
        (carry, out)
    }
}

/// `[shape]` draws of N(0, σ²) from `rng` (Box-Muller), made on the host so that a
/// seed fixes them on every backend.
fn gaussian(
    shape: [usize; 3],
    sigma: f64,
    rng: &mut ChaCha8Rng,
    device: &crate::Device,
) -> Tensor<B, 3> {
    use rand::Rng;
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let (u, v): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
        let r = (-2.0 * u.ln()).sqrt() * sigma;
        let angle = std::f64::consts::TAU * v;
        values.push((r * angle.cos()) as f32);
        values.push((r * angle.sin()) as f32);
    }
    values.truncate(n);
    Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}
