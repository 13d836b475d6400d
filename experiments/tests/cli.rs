//! The `recursa` binary as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn recursa(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recursa"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the recursa binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn verify_reference_passes_on_the_trm_fixture() {
    let (code, out, err) = recursa(&[
        "verify-reference",
        "tests/fixtures/trm_forward_shared.safetensors",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 22);
    assert!(lines[..21]
        .iter()
        .all(|l| l["ok"] == true && l["max_abs_err"].is_number()));
    assert_eq!(lines[21]["verdict"], "pass");
    assert!(err.contains("pass"), "{err}");
}

#[test]
fn verify_reference_refuses_what_it_cannot_check() {
    // A fixture of a kind this release does not run yet: named, with the supported kinds.
    let (code, _, err) = recursa(&["verify-reference", "tests/fixtures/dis_shared.safetensors"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`dis`") && err.contains("supported: trm_forward"),
        "{err}"
    );
    // Not a safetensors file at all.
    let (code, _, err) = recursa(&["verify-reference", "Cargo.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("Cargo.toml") && err.contains("not a safetensors file"),
        "{err}"
    );
    let (code, _, err) = recursa(&["verify-reference", "no/such/file.safetensors"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.safetensors"), "{err}");
    let (code, _, err) = recursa(&[
        "verify-reference",
        "--backend",
        "tpu",
        "tests/fixtures/trm_forward_shared.safetensors",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown backend `tpu`"), "{err}");
}

#[test]
fn plugins_lists_every_axis() {
    let (code, out, _) = recursa(&["plugins"]);
    assert_eq!(code, 0);
    for needle in [
        "[schedule]",
        "[target]",
        "[halting]",
        "trm",
        "final-answer",
        "act-halt",
        "fixed",
        "h_cycles",
    ] {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
}

#[test]
fn backends_lists_cpu_as_working() {
    let (code, out, _) = recursa(&["backends"]);
    assert_eq!(code, 0);
    let cpu = out.lines().find(|l| l.starts_with("cpu")).unwrap();
    assert!(cpu.contains("yes") && cpu.contains("ok"), "{out}");
    assert!(out.contains("cuda") && out.contains("wgpu") && out.contains("tch"));
}

#[test]
fn inspect_prints_the_parameter_count() {
    let (code, out, err) = recursa(&["inspect", "experiments/configs/trm-sudoku-mlpt.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("parameters: 5028866"), "{out}");
    assert!(out.contains("336 network calls per example"), "{out}");
}
