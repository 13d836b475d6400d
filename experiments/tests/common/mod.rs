//! What the CLI test files share: the repository root, the binary as a user runs
//! it, fresh temporary directories.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The repository root (configs and fixtures are relative to it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the binary in the root with extra environment variables, stderr a pipe
/// (not a terminal, as under nohup or Slurm): (exit code, stdout, stderr).
pub fn recursa_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recursa"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .expect("the recursa binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// [`recursa_env`] with the environment as it is.
pub fn recursa(args: &[&str]) -> (i32, String, String) {
    recursa_env(args, &[])
}

/// A fresh, empty `recursa-{name}-{pid}` directory under the system's temp dir.
pub fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recursa-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
