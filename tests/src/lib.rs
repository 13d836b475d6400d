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
