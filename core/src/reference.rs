//! The reference PyTorch configuration dict, read with its own names.
//!
//! Fixture files and PyTorch checkpoints carry the config the reference model was
//! built from (`TinyRecursiveReasoningModel_ACTV1Config` and relatives). Unknown
//! keys are ignored here as pydantic ignores them there.

use serde::Deserialize;

use crate::model::{NetConfig, PosEncoding};
use crate::{Error, Result};

fn d_expansion() -> f64 {
    4.0
}
fn d_eps() -> f64 {
    1e-5
}
fn d_theta() -> f64 {
    10000.0
}
fn d_len() -> usize {
    16
}
fn d_true() -> bool {
    true
}
fn d_dtype() -> String {
    "bfloat16".into()
}

/// A reference model config, key for key (defaults as in the reference).
#[allow(non_snake_case)]
#[derive(Clone, Debug, Deserialize)]
pub struct ReferenceConfig {
    pub batch_size: usize,
    pub seq_len: usize,
    #[serde(default)]
    pub puzzle_emb_ndim: usize,
    pub num_puzzle_identifiers: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub H_cycles: usize,
    #[serde(default)]
    pub L_cycles: usize,
    #[serde(default)]
    pub H_layers: usize,
    #[serde(default)]
    pub L_layers: usize,
    pub hidden_size: usize,
    #[serde(default = "d_expansion")]
    pub expansion: f64,
    pub num_heads: usize,
    pub pos_encodings: String,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    pub halt_max_steps: usize,
    #[serde(default)]
    pub halt_exploration_prob: f64,
    #[serde(default = "d_dtype")]
    pub forward_dtype: String,
    #[serde(default)]
    pub mlp_t: bool,
    #[serde(default = "d_len")]
    pub puzzle_emb_len: usize,
    #[serde(default = "d_true")]
    pub no_ACT_continue: bool,
}

impl ReferenceConfig {
    /// Parses the config JSON string stored in a fixture or checkpoint.
    pub fn from_json(json: &str, source: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| Error::config(format!("{source}: config"), e.to_string()))
    }

    /// The network shape. `h_layers` is taken as given: TRM ignores `H_layers`,
    /// so the caller zeroes it for TRM-like models.
    pub fn net_config(&self, h_layers: usize, step_embeddings: usize) -> Result<NetConfig> {
        let pos_encodings = match self.pos_encodings.as_str() {
            "rope" => PosEncoding::Rope,
            "learned" => PosEncoding::Learned,
            "none" | "" => PosEncoding::None,
            other => {
                return Err(Error::config(
                    "pos_encodings",
                    format!("`{other}`; known: rope, learned, none"),
                ))
            }
        };
        let net = NetConfig {
            seq_len: self.seq_len,
            vocab_size: self.vocab_size,
            num_puzzle_identifiers: self.num_puzzle_identifiers,
            puzzle_emb_ndim: self.puzzle_emb_ndim,
            puzzle_emb_len: self.puzzle_emb_len,
            hidden_size: self.hidden_size,
            num_heads: self.num_heads,
            expansion: self.expansion,
            l_layers: self.L_layers,
            h_layers,
            pos_encodings,
            rope_theta: self.rope_theta,
            rms_norm_eps: self.rms_norm_eps,
            mlp_t: self.mlp_t,
            step_embeddings,
            // The reference code has SwiGLU only.
            mlp_kind: crate::model::MlpKind::Swiglu,
            conv_kernel: 2,
        };
        net.validate()?;
        Ok(net)
    }
}
