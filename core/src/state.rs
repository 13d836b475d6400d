//! The state a supervision step reads and writes: the batch, the carried latents and
//! episode bookkeeping, the step's outputs, what the halting policy sees. Plain data,
//! shared by the three plugin axes and the step ([`crate::step`]).

use burn::tensor::{Bool, Int, Tensor};

use crate::B;

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
    pub episode: Option<Episode>,
}

/// A supervision target's per-episode state, as named integer tensors of one row per
/// batch row (`[batch, ..]`): DIS's path, dis-corrupt's reveal order and replacement
/// tokens. The target gives it meaning (each keeps a typed view of its own); the step
/// keeps it for rows that continue, and a checkpoint stores it, by name.
#[derive(Clone, Debug, Default)]
pub struct Episode {
    parts: Vec<(String, Tensor<B, 3, Int>)>,
}

impl Episode {
    /// `self` with the part `name` (a later part of the same name replaces it).
    pub fn with(mut self, name: &str, part: Tensor<B, 3, Int>) -> Episode {
        self.parts.retain(|(n, _)| n != name);
        self.parts.push((name.to_string(), part));
        self
    }

    /// The part `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&Tensor<B, 3, Int>> {
        self.parts.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Every part, in the order they were added.
    pub fn parts(&self) -> &[(String, Tensor<B, 3, Int>)] {
        &self.parts
    }

    /// Rows where `take` is set from `fresh` (the same parts), the others from `self`.
    /// A part `fresh` lacks is kept as it is.
    pub fn replace_rows(self, take: &Tensor<B, 1, Bool>, fresh: &Episode) -> Episode {
        let parts = self
            .parts
            .into_iter()
            .map(|(name, old)| match fresh.get(&name) {
                Some(new) => {
                    let [rows, k, seq] = old.dims();
                    let take = take.clone().reshape([rows, 1, 1]).expand([rows, k, seq]);
                    (name, old.mask_where(take, new.clone()))
                }
                None => (name, old),
            })
            .collect();
        Episode { parts }
    }
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
    /// The training target for `q_continue` from the halting policy's
    /// [`HaltingPolicy::continue_target`] (act-q's Q-learning target), if any. `[batch]`
    pub target_q_continue: Option<Tensor<B, 1>>,
    /// The puzzle-embedding rows used (in training: the leaf whose gradient
    /// trains the table), with their ids. `[batch, puzzle_emb_ndim]`, `[batch]`
    pub puzzle: Option<(Tensor<B, 2>, Tensor<B, 1, Int>)>,
}

/// What a halting policy sees after a supervision step.
pub struct HaltInput<'a> {
    /// Supervision steps taken by each row, this one included. `[batch]`
    pub steps: &'a Tensor<B, 1, Int>,
    /// Halting logit of each row. `[batch]`
    pub q_halt: &'a Tensor<B, 1>,
    /// Continue logit of each row. `[batch]`
    pub q_continue: &'a Tensor<B, 1>,
    /// Training (Q halting and exploration apply) or evaluation (always run the maximum).
    pub training: bool,
}
