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

use std::borrow::Cow;

use burn::module::AutodiffModule;
use burn::tensor::{activation, Bool, Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::halting::HaltInput;
use crate::model::layers::Rope;
use crate::model::ReasoningNet;
use crate::{HaltingPolicy, RecursionSchedule, Result, SupervisionTarget, B};

/// The network on recursa's backend.
pub type Net = ReasoningNet<B>;

/// A `torch.no_grad()` block: the network's copy and the conversions that run
/// work without recording it for backward. On an autodiff device that is the
/// network's inner (`valid()`) copy, so activations are freed as soon as they are
/// used; elsewhere (evaluation) the network itself. Weights are shared, not copied.
pub struct NoGrad<'a> {
    /// The network to call inside the block (borrowed when it has no autodiff).
    pub net: Cow<'a, Net>,
    /// The RoPE tables on the block's backend.
    pub rope: Option<Rope<B>>,
    autodiff: bool,
}

impl<'a> NoGrad<'a> {
    /// The block for `net` (on whatever device it lives) and its RoPE tables.
    pub fn new(net: &'a Net, rope: Option<&Rope<B>>) -> Self {
        let autodiff = is_autodiff(&net.h_init.val().device());
        if !autodiff {
            return NoGrad {
                net: Cow::Borrowed(net),
                rope: rope.cloned(),
                autodiff,
            };
        }
        NoGrad {
            net: Cow::Owned(net.valid()),
            rope: rope.map(|r| Rope {
                cos: r.cos.clone().inner(),
                sin: r.sin.clone().inner(),
            }),
            autodiff,
        }
    }

    /// A float tensor brought into the block (its gradient history is left behind).
    pub fn input<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        if self.autodiff {
            t.inner()
        } else {
            t
        }
    }

    /// A float tensor brought out of the block, as a constant of the outer graph.
    pub fn output<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        if self.autodiff {
            Tensor::from_inner(t)
        } else {
            t
        }
    }

    /// Both latents brought into the block.
    pub fn input_latents(&self, l: Latents) -> Latents {
        Latents {
            z_h: self.input(l.z_h),
            z_l: self.input(l.z_l),
        }
    }

    /// Both latents brought out of the block.
    pub fn output_latents(&self, l: Latents) -> Latents {
        Latents {
            z_h: self.output(l.z_h),
            z_l: self.output(l.z_l),
        }
    }
}

/// Whether `device` records operations for backward.
pub fn is_autodiff(device: &crate::Device) -> bool {
    matches!(device, crate::Device::Autodiff(_))
}

/// A batch of examples.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Question tokens. `[batch, seq_len]`
    pub inputs: Tensor<B, 2, Int>,
    /// Answer tokens, `-100` where ignored. `[batch, seq_len]`
    pub labels: Tensor<B, 2, Int>,
    /// Puzzle identifier of each row (0 = blank). `[batch]`
    pub puzzle_identifiers: Tensor<B, 1, Int>,
}

impl Batch {
    /// Rows where `take` is set come from `new`, the others from `self`.
    pub fn replace_rows(self, take: &Tensor<B, 1, Bool>, new: &Batch) -> Batch {
        let [batch, seq] = self.inputs.dims();
        let take2 = take.clone().unsqueeze_dim::<2>(1).expand([batch, seq]);
        Batch {
            inputs: self.inputs.mask_where(take2.clone(), new.inputs.clone()),
            labels: self.labels.mask_where(take2, new.labels.clone()),
            puzzle_identifiers: self
                .puzzle_identifiers
                .mask_where(take.clone(), new.puzzle_identifiers.clone()),
        }
    }
}

/// The carried latent states. `[batch, positions, hidden]` each.
#[derive(Clone, Debug)]
pub struct Latents {
    /// y in the TRM paper: the current answer embedding (reference `z_H`).
    pub z_h: Tensor<B, 3>,
    /// z in the TRM paper: the latent reasoning state (reference `z_L`).
    pub z_l: Tensor<B, 3>,
}

/// What survives from one supervision step to the next.
#[derive(Clone, Debug)]
pub struct Carry {
    pub latents: Latents,
    /// Supervision steps taken in the current episode. `[batch]`
    pub steps: Tensor<B, 1, Int>,
    /// Rows whose episode ended; they restart on the next step. `[batch]`
    pub halted: Tensor<B, 1, Bool>,
    /// The data each row is working on.
    pub current_data: Batch,
    /// Argmax of each row's last logits (DIS feeds it back as the question). `[batch, seq_len]`
    pub preds: Tensor<B, 2, Int>,
    /// The supervision target's per-episode state, if it keeps one.
    pub episode: Option<Tensor<B, 3, Int>>,
}

/// Outputs of one supervision step.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// `[batch, seq_len, vocab]`
    pub logits: Tensor<B, 3>,
    /// `[batch]`
    pub q_halt_logits: Tensor<B, 1>,
    /// `[batch]`
    pub q_continue_logits: Tensor<B, 1>,
    /// The labels this step is trained against (from the supervision target). `[batch, seq_len]`
    pub target: Tensor<B, 2, Int>,
    /// Per-row weight of this step's language-model loss, from the target. `[batch]`
    pub target_weight: Option<Tensor<B, 1>>,
    /// The question tokens fed to this step. `[batch, seq_len]`
    pub question: Tensor<B, 2, Int>,
    /// The step-embedding row used by each row, if any. `[batch]`
    pub step_index: Option<Tensor<B, 1, Int>>,
    /// Q-learning target for `q_continue` (halting policies that bootstrap it, in
    /// training): `sigmoid(q_halt')` on a row's last step, else
    /// `sigmoid(max(q_halt', q_continue'))`, where the primed logits come from one
    /// more no-grad pass of the step on the new carry. `[batch]`
    pub target_q_continue: Option<Tensor<B, 1>>,
    /// The puzzle-embedding rows used (in training: the leaf whose gradient
    /// trains the table), with their ids. `[batch, puzzle_emb_ndim]`, `[batch]`
    pub puzzle: Option<(Tensor<B, 2>, Tensor<B, 1, Int>)>,
}

/// A looped model: one network plus a choice on each plugin axis.
#[derive(Debug)]
pub struct LoopedModel {
    pub net: Net,
    pub schedule: Box<dyn RecursionSchedule>,
    pub target: Box<dyn SupervisionTarget>,
    pub halting: Box<dyn HaltingPolicy>,
}

/// Per-run state a step needs besides the carry: mode and the halting random stream.
pub struct StepContext {
    pub training: bool,
    pub rng: ChaCha8Rng,
}

impl StepContext {
    /// Evaluation mode (no Q halting, no exploration).
    pub fn eval() -> Self {
        StepContext {
            training: false,
            rng: ChaCha8Rng::seed_from_u64(0),
        }
    }

    /// Training mode with halting exploration drawn from `seed`.
    pub fn train(seed: u64) -> Self {
        StepContext {
            training: true,
            rng: ChaCha8Rng::seed_from_u64(seed),
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
        schedule.check(&net.config)?;
        target.check(&net.config)?;
        Ok(LoopedModel {
            net,
            schedule,
            target,
            halting,
        })
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
        let [rows, positions, hidden] = carry.latents.z_h.dims();
        let reset3 = reset
            .clone()
            .reshape([rows, 1, 1])
            .expand([rows, positions, hidden]);
        let init = |state: &Tensor<B, 1>| {
            state
                .clone()
                .reshape([1, 1, hidden])
                .expand([rows, positions, hidden])
        };
        let latents = Latents {
            z_h: carry
                .latents
                .z_h
                .mask_where(reset3.clone(), init(&net.h_init.val())),
            z_l: carry
                .latents
                .z_l
                .mask_where(reset3, init(&net.l_init.val())),
        };
        let steps = carry.steps.mask_fill(reset.clone(), 0);
        let data = carry.current_data.replace_rows(&reset, batch);

        let episode = match (carry.episode, self.target.start(&data, &mut ctx.rng)) {
            (Some(old), Some(fresh)) => {
                let [_, frames, seq] = old.dims();
                let reset_e = reset
                    .clone()
                    .reshape([rows, 1, 1])
                    .expand([rows, frames, seq]);
                Some(old.mask_where(reset_e, fresh))
            }
            (_, fresh) => fresh,
        };

        let puzzle = net.puzzle_rows(data.puzzle_identifiers.clone(), ctx.training);
        let question = self.schedule.question(&data, &steps, &carry.preds);
        let step_index = self.schedule.step_index(&net.config, &steps);
        let x = net.input_embeddings(question.clone(), puzzle.clone(), step_index.clone());
        let rope = net.rope(&x.device());
        let latents = self
            .schedule
            .recurse(net, latents, x.clone(), rope.as_ref());

        let logits = net.lm_head(latents.z_h.clone());
        let (q_halt_logits, q_continue_logits) = net.q_head(latents.z_h.clone());

        let steps = steps + 1;
        let target_q_continue = (ctx.training && self.halting.bootstraps_q()).then(|| {
            // One more step without gradient (the reference's `torch.no_grad()`);
            // no replay buffer or target network, as the reference (PQN-style).
            let no_grad = NoGrad::new(net, rope.as_ref());
            let next = self.schedule.recurse(
                &no_grad.net,
                no_grad.input_latents(latents.clone()),
                no_grad.input(x.clone()),
                no_grad.rope.as_ref(),
            );
            let (next_halt, next_continue) = no_grad.net.q_head(next.z_h);
            let (next_halt, next_continue) =
                (no_grad.output(next_halt), no_grad.output(next_continue));
            let is_last = steps
                .clone()
                .greater_equal_elem(self.halting.max_steps() as i64);
            let best = next_halt.clone().max_pair(next_continue);
            activation::sigmoid(best.mask_where(is_last, next_halt))
        });
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
            question,
            step_index,
            target_q_continue,
            puzzle: puzzle.map(|rows| (rows, carry_data_ids)),
        };
        (carry, out)
    }
}
