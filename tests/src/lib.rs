//! Test support: an independent, deliberately naive f64 implementation of the TRM
//! forward pass, written from the reference PyTorch (`trm.py`, `layers.py`) with
//! plain loops over host arrays and nothing from burn.
//!
//! It is the yardstick for configurations the reference fixtures do not cover
//! (mlp_t, learned or no positions, other prefix lengths, odd sequence lengths,
//! other cycle counts). It is itself checked against the shared reference fixture
//! (`tests/naive_reference.rs`), so agreement with it is agreement with the reference.

pub mod naive;

/// The repository's `tests/fixtures` directory.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// `experiments/configs/quick-flip.toml` with its `[halting]` table replaced by `halting`
/// (the table's lines, `name = "..."` first).
pub fn quick_flip_with_halting(halting: &str) -> String {
    let path = repo_root().join("experiments/configs/quick-flip.toml");
    let text = std::fs::read_to_string(&path).expect("quick-flip.toml is checked in");
    let start = text
        .find("[halting]")
        .expect("quick-flip.toml has [halting]");
    let end = text.find("[train]").expect("quick-flip.toml has [train]");
    format!("{}[halting]\n{halting}\n\n{}", &text[..start], &text[end..])
}

/// A tiny experiment on a generated 2x2 task (4 tokens, width 16, one block) with the
/// given plugin tables (their lines, `name = "..."` first) and extra `[net]` lines:
/// 60 steps of 32, for tests that train every combination of options.
pub fn tiny_experiment(schedule: &str, target: &str, halting: &str, net_extra: &str) -> String {
    format!(
        r#"seed = 3
[net]
seq_len = 4
vocab_size = 5
num_puzzle_identifiers = 2
puzzle_emb_ndim = 16
puzzle_emb_len = 1
hidden_size = 16
num_heads = 2
l_layers = 1
{net_extra}
[schedule]
{schedule}
[target]
{target}
[halting]
{halting}
[train]
steps = 60
global_batch_size = 32
lr = 3e-3
lr_warmup_steps = 1
[data]
name = "generated-grid"
size = 2
colors = 4
transform = "shift-colors"
train_examples = 100
test_examples = 20
"#
    )
}

/// Gives the tensors the reference zero-initialises (the puzzle table, the Q head)
/// values uniform in [-0.5, 0.5) drawn from `seed`, so that tests exercise those
/// paths too. The weights go through a safetensors round trip, so this works on
/// any backend's device.
pub fn randomize_zero_inits<B: burn::tensor::backend::Backend>(
    net: &mut recursa_core::model::ReasoningNet<B>,
    seed: u64,
) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut state = recursa_core::weights::net_state_dict(net);
    for name in [
        "inner.puzzle_emb.weights",
        "inner.q_head.weight",
        "inner.q_head.bias",
    ] {
        if let Some(t) = state.get_mut(name) {
            t.values
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-0.5..0.5));
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = state
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.shape.clone(),
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes.iter().map(|(n, s, b)| {
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
        (
            n.clone(),
            view.expect("shape and byte length come from one tensor"),
        )
    });
    let file = safetensors::serialize(views, &None).expect("in-memory serialisation");
    recursa_core::weights::load_net(net, &file, "random", "")
        .expect("the names and shapes come from this network");
}
