//! The reasoning network shared by every recursion schedule.
//!
//! One [`ReasoningNet`] holds the input embeddings (tokens, puzzle prefix, positions,
//! optional step embedding), the levels of blocks (`L_level` is TRM's single network
//! `net`; HRM and the baseline add an `H_level`), the heads and the initial states.
//! Which level is called when is the [`crate::RecursionSchedule`]'s business.
//!
//! | recursa               | reference `state_dict`                     | paper      |
//! |-----------------------|--------------------------------------------|------------|
//! | `embed_tokens`        | `inner.embed_tokens.embedding_weight`      | input emb. |
//! | `embed_pos`           | `inner.embed_pos.embedding_weight`         | (learned positions) |
//! | `timestep_embed`      | `inner.timestep_embed.embedding_weight`    | DIS step embedding |
//! | `puzzle_emb.weights`  | `inner.puzzle_emb.weights` (buffer)        | task embedding |
//! | `l_level`             | `inner.L_level.layers.{i}.*`               | net (TRM), f_L (HRM) |
//! | `h_level`             | `inner.H_level.layers.{i}.*`               | f_H (HRM)  |
//! | `lm_head`             | `inner.lm_head.weight` (transposed)        | output head |
//! | `q_head`              | `inner.q_head.{weight,bias}`               | halting head |
//! | `h_init`, `l_init`    | `inner.H_init`, `inner.L_init` (buffers)   | y_0, z_0   |

pub mod fused;
pub mod init;
pub mod layers;
pub mod names;
pub mod no_grad;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::{backend::Backend, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use init::InitRng;

/// The network on recursa's backend.
pub type Net = ReasoningNet<crate::B>;
use layers::{casted_embedding, casted_linear, Attention, Block, Level, Mixer, Rope, SwiGlu};

/// 1/sqrt(2), keeping the variance of `token + position`: the reference's literal,
/// which differs from `FRAC_1_SQRT_2` in the tenth digit.
#[allow(clippy::approx_constant)]
const LEARNED_POS_SCALE: f64 = 0.707106781;

/// How positions enter the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEncoding {
    /// Rotary embeddings on q and k (rotate-half layout).
    #[default]
    Rope,
    /// A learned table added to the input embedding, scaled by 1/sqrt(2).
    Learned,
    /// No position information (TRM Sudoku with `mlp_t`).
    None,
}

/// The channel MLP of every block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlpKind {
    /// SwiGLU, `down(silu(gate) * up)` (TRM, HRM, DIS).
    #[default]
    Swiglu,
    /// URM's ConvSwiGLU: a short depthwise convolution over positions (width
    /// `conv_kernel`) and a SiLU between the gated product and `down`.
    ConvSwiglu,
}

fn default_conv_kernel() -> usize {
    2
}
fn default_num_puzzle_identifiers() -> usize {
    1
}
fn default_expansion() -> f64 {
    4.0
}
fn default_puzzle_emb_len() -> usize {
    16
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}

/// Shape of the reasoning network. Field names follow the reference config
/// (lower-cased); defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Tokens per example (900 for ARC's 30x30 canvas).
    pub seq_len: usize,
    /// Token vocabulary (ARC: PAD, EOS and 10 colours = 12).
    pub vocab_size: usize,
    /// Rows of the puzzle-embedding table, blank id 0 included. Default 1; a
    /// dataset's `identifiers.json` decides it for training (876,406 for ARC-AGI-1
    /// with 1000 augmentations), and the table is a buffer, not a parameter.
    #[serde(default = "default_num_puzzle_identifiers")]
    pub num_puzzle_identifiers: usize,
    /// Width of one puzzle embedding; 0 disables the puzzle prefix.
    #[serde(default)]
    pub puzzle_emb_ndim: usize,
    /// Prefix positions the puzzle embedding occupies; 0 = ceil(ndim / hidden). Default 16.
    #[serde(default = "default_puzzle_emb_len")]
    pub puzzle_emb_len: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Attention heads (head_dim = hidden / heads).
    pub num_heads: usize,
    /// SwiGLU expansion (intermediate = round(expansion*h*2/3) up to a multiple of 256). Default 4.
    #[serde(default = "default_expansion")]
    pub expansion: f64,
    /// Blocks in `L_level` (TRM's net).
    pub l_layers: usize,
    /// Blocks in `H_level` (HRM, baseline); 0 = no H level.
    #[serde(default)]
    pub h_layers: usize,
    /// `rope` (default), `learned` or `none`.
    #[serde(default)]
    pub pos_encodings: PosEncoding,
    /// RoPE base. Default 10000.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon. Default 1e-5.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Replace attention by a SwiGLU across the sequence axis (TRM Sudoku). Default false.
    #[serde(default)]
    pub mlp_t: bool,
    /// Rows of a learned per-step embedding added to x (DIS: halt_max_steps + 2); 0 = none.
    #[serde(default)]
    pub step_embeddings: usize,
    /// The blocks' channel MLP: `swiglu` (default) or `conv-swiglu` (URM).
    #[serde(default)]
    pub mlp_kind: MlpKind,
    /// Width of ConvSwiGLU's convolution over positions (URM: 2, the position and the one before). Default 2.
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: usize,
}

impl NetConfig {
    /// Prefix positions taken by the puzzle embedding.
    ///
    /// Without a puzzle embedding there is no prefix. (The reference would still
    /// reserve `puzzle_emb_len` positions in the carry and then fail on a shape
    /// mismatch; recursa reads `puzzle_emb_ndim = 0` as "no prefix".)
    pub fn prefix_len(&self) -> usize {
        match (self.puzzle_emb_ndim, self.puzzle_emb_len) {
            (0, _) => 0,
            (ndim, 0) => ndim.div_ceil(self.hidden_size),
            (_, len) => len,
        }
    }

    /// Positions the network sees: puzzle prefix + tokens.
    pub fn total_len(&self) -> usize {
        self.prefix_len() + self.seq_len
    }

    /// A parameter count from the shape alone (blocks and embeddings), to refuse
    /// absurd sizes before any memory is allocated.
    fn approx_dense_params(&self) -> f64 {
        let h = self.hidden_size as f64;
        let inter = |width: f64| (self.expansion * width * 2.0 / 3.0 / 256.0).ceil() * 256.0;
        let mixer = if self.mlp_t {
            let l = self.total_len() as f64;
            3.0 * l * inter(l)
        } else {
            4.0 * h * h
        };
        let block = mixer + 3.0 * h * inter(h);
        let blocks = (self.l_layers + self.h_layers) as f64 * block;
        let embeddings =
            (2.0 * self.vocab_size as f64 + self.seq_len as f64 + self.step_embeddings as f64) * h;
        blocks + embeddings
    }

    /// Rejects shapes the network cannot be built with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("seq_len", self.seq_len),
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        // Upper bounds: far above any published run, low enough that sizes cannot
        // overflow or ask the allocator for more than a machine has.
        let caps = [
            ("seq_len", self.seq_len, 1 << 20),
            ("vocab_size", self.vocab_size, 1 << 20),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_heads", self.num_heads, self.hidden_size),
            (
                "num_puzzle_identifiers",
                self.num_puzzle_identifiers,
                1 << 27,
            ),
            ("puzzle_emb_ndim", self.puzzle_emb_ndim, 1 << 16),
            ("puzzle_emb_len", self.puzzle_emb_len, 1 << 12),
            ("l_layers", self.l_layers, 256),
            ("h_layers", self.h_layers, 256),
            ("step_embeddings", self.step_embeddings, 1 << 16),
        ];
        for (field, value, max) in caps {
            if value > max {
                return Err(Error::config(field, format!("{value}: at most {max}")));
            }
        }
        if self.puzzle_emb_ndim > 0 && self.num_puzzle_identifiers == 0 {
            return Err(Error::config(
                "num_puzzle_identifiers",
                "must be at least 1 when puzzle_emb_ndim > 0",
            ));
        }
        if !self.mlp_t {
            if !self.hidden_size.is_multiple_of(self.num_heads) {
                return Err(Error::config(
                    "num_heads",
                    format!(
                        "{} does not divide hidden_size {}",
                        self.num_heads, self.hidden_size
                    ),
                ));
            }
            let head_dim = self.hidden_size / self.num_heads;
            if self.pos_encodings == PosEncoding::Rope && !head_dim.is_multiple_of(2) {
                return Err(Error::config(
                    "num_heads",
                    format!("rope needs an even head_dim, got {head_dim}"),
                ));
            }
        }
        if self.puzzle_emb_ndim > self.prefix_len() * self.hidden_size {
            return Err(Error::config(
                "puzzle_emb_len",
                format!(
                    "{} positions of width {} cannot hold puzzle_emb_ndim {}",
                    self.prefix_len(),
                    self.hidden_size,
                    self.puzzle_emb_ndim
                ),
            ));
        }
        if !(self.expansion.is_finite() && self.expansion > 0.0 && self.expansion <= 64.0) {
            return Err(Error::config(
                "expansion",
                format!("{}: must be in (0, 64]", self.expansion),
            ));
        }
        for (field, value) in [
            ("rope_theta", self.rope_theta),
            ("rms_norm_eps", self.rms_norm_eps),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::config(
                    field,
                    format!("{value}: must be a finite number > 0"),
                ));
            }
        }
        if self.mlp_kind == MlpKind::ConvSwiglu && !(1..=64).contains(&self.conv_kernel) {
            return Err(Error::config(
                "conv_kernel",
                format!("{}: must be between 1 and 64", self.conv_kernel),
            ));
        }
        if self.l_layers + self.h_layers == 0 {
            return Err(Error::config(
                "l_layers",
                "the network needs at least one block",
            ));
        }
        let table = self.num_puzzle_identifiers as u128 * self.puzzle_emb_ndim as u128;
        if table > 1 << 32 {
            return Err(Error::config(
                "num_puzzle_identifiers",
                format!(
                    "a puzzle table of {table} values (identifiers x puzzle_emb_ndim) is over 2^32"
                ),
            ));
        }
        let params = self.approx_dense_params();
        if params > (1u128 << 32) as f64 {
            return Err(Error::config(
                "hidden_size",
                format!("about {params:.3e} parameters: over 2^32"),
            ));
        }
        Ok(())
    }
}

/// The sparse puzzle-embedding table, a buffer: trained only by SignSGD on the rows
/// of each batch, never by the dense optimizer.
#[derive(Module, Debug)]
pub struct PuzzleEmbedding<B: Backend> {
    pub weights: Param<Tensor<B, 2>>,
}

/// The reasoning network: embeddings, levels, heads and initial states (table above).
#[derive(Module, Debug)]
pub struct ReasoningNet<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub embed_pos: Option<Embedding<B>>,
    pub timestep_embed: Option<Embedding<B>>,
    pub puzzle_emb: Option<PuzzleEmbedding<B>>,
    pub l_level: Level<B>,
    pub h_level: Option<Level<B>>,
    pub lm_head: Linear<B>,
    pub q_head: Linear<B>,
    pub h_init: Param<Tensor<B, 1>>,
    pub l_init: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub config: NetConfig,
}

fn buffer<B: Backend, const D: usize>(t: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(t).set_require_grad(false)
}

impl<B: Backend> ReasoningNet<B> {
    /// Builds the network with the reference initialisation, fixed by `seed`.
    pub fn new(config: &NetConfig, seed: u64, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let c = config;
        let rng = &mut InitRng::new(seed);
        let embed_std = 1.0 / (c.hidden_size as f64).sqrt();
        let level = |layers: usize, rng: &mut InitRng| Level {
            layers: (0..layers)
                .map(|_| Block {
                    mixer: if c.mlp_t {
                        Mixer::MlpT(SwiGlu::new(c.total_len(), c.expansion, rng, device))
                    } else {
                        Mixer::SelfAttn(Attention::new(c.hidden_size, c.num_heads, rng, device))
                    },
                    mlp: match c.mlp_kind {
                        MlpKind::Swiglu => SwiGlu::new(c.hidden_size, c.expansion, rng, device),
                        MlpKind::ConvSwiglu => SwiGlu::with_conv(
                            c.hidden_size,
                            c.expansion,
                            c.conv_kernel,
                            rng,
                            device,
                        ),
                    },
                    eps: c.rms_norm_eps,
                })
                .collect(),
        };
        let embed_tokens = casted_embedding(c.vocab_size, c.hidden_size, embed_std, rng, device);
        let embed_pos = (c.pos_encodings == PosEncoding::Learned)
            .then(|| casted_embedding(c.total_len(), c.hidden_size, embed_std, rng, device));
        let timestep_embed = (c.step_embeddings > 0)
            .then(|| casted_embedding(c.step_embeddings, c.hidden_size, embed_std, rng, device));
        // The reference zero-initialises the puzzle table ("init_std=0").
        let puzzle_emb = (c.puzzle_emb_ndim > 0).then(|| PuzzleEmbedding {
            weights: buffer(Tensor::zeros(
                [c.num_puzzle_identifiers, c.puzzle_emb_ndim],
                device,
            )),
        });
        let h_level = (c.h_layers > 0).then(|| level(c.h_layers, rng));
        let l_level = level(c.l_layers, rng);
        let lm_head = casted_linear(c.hidden_size, c.vocab_size, false, rng, device);
        // Q head starts (almost) at "never halt": weight 0, bias -5, as in the reference.
        let mut q_head = casted_linear(c.hidden_size, 2, true, rng, device);
        q_head.weight = Param::from_tensor(Tensor::zeros([c.hidden_size, 2], device));
        q_head.bias = Some(Param::from_tensor(Tensor::full([2], -5.0, device)));
        let h_init = buffer(rng.trunc_normal([c.hidden_size], 1.0, device));
        let l_init = buffer(rng.trunc_normal([c.hidden_size], 1.0, device));
        let mut net = ReasoningNet {
            embed_tokens,
            embed_pos,
            timestep_embed,
            puzzle_emb,
            l_level,
            h_level,
            lm_head,
            q_head,
            h_init,
            l_init,
            config: c.clone(),
        };
        names::stable_param_ids(&mut net);
        Ok(net)
    }

    /// The puzzle-embedding rows of `puzzle_ids`, `[batch, puzzle_emb_ndim]`, or
    /// `None` without a puzzle embedding. In training the rows are a detached copy
    /// that requires grad (the reference's `local_weights`): its gradient feeds the
    /// sparse SignSGD update of the table, which no dense optimizer touches.
    pub fn puzzle_rows(
        &self,
        puzzle_ids: Tensor<B, 1, Int>,
        training: bool,
    ) -> Option<Tensor<B, 2>> {
        let table = self.puzzle_emb.as_ref()?;
        let rows = table.weights.val().select(0, puzzle_ids).detach();
        Some(if training { rows.require_grad() } else { rows })
    }

    /// The embedded question x: `sqrt(hidden) * [puzzle prefix ; tokens]`, with the
    /// step embedding (DIS) and learned positions added before the scale.
    ///
    /// # Shapes
    /// `tokens: [batch, seq_len]`, `puzzle: [batch, puzzle_emb_ndim]` (from
    /// [`Self::puzzle_rows`]), `step: [batch]` -> `[batch, prefix + seq_len, hidden]`
    pub fn input_embeddings(
        &self,
        tokens: Tensor<B, 2, Int>,
        puzzle: Option<Tensor<B, 2>>,
        step: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 3> {
        let c = &self.config;
        let [batch, seq] = tokens.dims();
        // DIS: one step vector added at every position, prefix included. At the
        // tokens' positions it is summed in their lookup (one product, no broadcast
        // add over every position).
        let step = match (&self.timestep_embed, step) {
            (Some(table), Some(step)) => Some((table, step.unsqueeze_dim::<2>(1))),
            _ => None,
        };
        let mut emb = match &step {
            Some((table, step)) => lookup_sum([
                (&self.embed_tokens, tokens),
                (*table, step.clone().expand([batch, seq])),
            ]),
            None => lookup_sum([(&self.embed_tokens, tokens)]),
        };
        if let Some(puzzle) = puzzle {
            let prefix = c.prefix_len();
            let pad = prefix * c.hidden_size - c.puzzle_emb_ndim;
            let puzzle = if pad > 0 {
                let zeros = Tensor::zeros([batch, pad], &puzzle.device());
                Tensor::cat(vec![puzzle, zeros], 1)
            } else {
                puzzle
            };
            let mut puzzle = puzzle.reshape([batch, prefix, c.hidden_size]);
            if let Some((table, step)) = step {
                puzzle = puzzle + lookup_sum([(table, step)]);
            }
            emb = Tensor::cat(vec![puzzle, emb], 1);
        }
        if let Some(pos) = &self.embed_pos {
            emb = (emb + pos.weight.val().unsqueeze::<3>()) * LEARNED_POS_SCALE;
        }
        emb * (c.hidden_size as f64).sqrt()
    }

    /// The RoPE tables for this network, if it uses rotary positions.
    pub fn rope(&self, device: &B::Device) -> Option<Rope<B>> {
        let c = &self.config;
        (c.pos_encodings == PosEncoding::Rope && !c.mlp_t).then(|| {
            Rope::new(
                c.total_len(),
                c.hidden_size / c.num_heads,
                c.rope_theta,
                device,
            )
        })
    }

    /// Token logits from the answer state y = z_H, puzzle prefix dropped.
    ///
    /// # Shapes
    /// `z_h: [batch, prefix + seq_len, hidden]` -> `[batch, seq_len, vocab]`
    pub fn lm_head(&self, z_h: Tensor<B, 3>) -> Tensor<B, 3> {
        let prefix = self.config.prefix_len();
        layers::linear_rows(&self.lm_head, z_h).narrow(1, prefix, self.config.seq_len)
    }

    /// Halting logits `(q_halt, q_continue)` read from the first position of z_H.
    ///
    /// # Shapes
    /// `z_h: [batch, positions, hidden]` -> `([batch], [batch])`
    pub fn q_head(&self, z_h: Tensor<B, 3>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let [batch, _, hidden] = z_h.dims();
        let first = z_h.narrow(1, 0, 1).reshape([batch, hidden]);
        let q = self.q_head.forward(first);
        let q_halt = q.clone().narrow(1, 0, 1).reshape([batch]);
        let q_continue = q.narrow(1, 1, 1).reshape([batch]);
        (q_halt, q_continue)
    }

    /// Trainable dense parameters (buffers excluded), as the reference counts them.
    pub fn num_trainable_params(&self) -> usize {
        let buffers = self.h_init.shape().num_elements()
            + self.l_init.shape().num_elements()
            + self
                .puzzle_emb
                .as_ref()
                .map_or(0, |p| p.weights.shape().num_elements());
        self.num_params() - buffers
    }
}

/// Embedding lookups summed, `sum_i table_i[ids_i]`, written as one product
/// `[one_hot(ids_1) | one_hot(ids_2) | ..] @ [table_1; table_2; ..]`: each row
/// is its tables' rows exactly (one table) or their sum rounded once, as adding
/// them would give. The backward is a matmul instead of a scatter-add, so the
/// gradient does not depend on the order in which a GPU's atomics add up repeated
/// ids (runs repeat bit for bit). The vocabularies here are small (12 for ARC),
/// so the matmul costs nothing next to the network.
///
/// # Shapes
/// `ids_i: [batch, seq]` (all alike) -> `[batch, seq, hidden]`
fn lookup_sum<B: Backend, const N: usize>(
    lookups: [(&Embedding<B>, Tensor<B, 2, Int>); N],
) -> Tensor<B, 3> {
    let mut hots = Vec::with_capacity(N);
    let mut tables = Vec::with_capacity(N);
    for (table, ids) in lookups {
        let rows = table.weight.dims()[0];
        hots.push(ids.one_hot::<3>(rows).equal_elem(1));
        tables.push(table.weight.val());
    }
    // One table as it is: a cat would add a node to the autodiff graph.
    let (hot, table) = match (hots.pop(), tables.pop()) {
        (Some(hot), Some(table)) if N == 1 => (hot, table),
        (hot, table) => {
            hots.extend(hot);
            tables.extend(table);
            (Tensor::cat(hots, 2), Tensor::cat(tables, 0))
        }
    };
    // A float one-hot made on the table's device (an int-to-float cast would
    // leave it off the autodiff graph's device kind).
    let one_hot = Tensor::zeros(hot.dims(), &table.device()).mask_fill(hot, 1.0);
    layers::matmul_rows(one_hot, table)
}
