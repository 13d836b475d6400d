//! What a researcher coming from the PyTorch reference relies on: TensorBoard,
//! readable logs under a non-terminal, checkpoint retention, configs that extend
//! others, several datasets in one run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{recursa, recursa_env, root};

fn temp(name: &str) -> PathBuf {
    common::temp(&format!("tools-{name}"))
}

/// quick-flip, made small: 40 steps, evaluations every 20.
const SMALL: [&str; 8] = [
    "--set",
    "train.steps=40",
    "--set",
    "train.eval_interval=20",
    "--set",
    "data.train_examples=512",
    "--set",
    "data.test_examples=64",
];

fn train_small(run: &Path, more: &[impl AsRef<str>]) -> (i32, String, String) {
    let mut args = vec![
        "train",
        "--config",
        "experiments/configs/quick-flip.toml",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(&SMALL);
    args.extend(more.iter().map(|m| m.as_ref()));
    recursa(&args)
}

/// An experiment file that extends `base` with `rest`.
fn extending(base: &Path, rest: &str) -> String {
    format!("extends = {:?}\n{rest}", base.to_str().unwrap())
}

/// `recursa train --config CONFIG --check` fails as invalid input, saying every needle.
fn check_fails(config: &Path, needles: &[&str]) {
    let (code, _, err) = recursa(&["train", "--config", config.to_str().unwrap(), "--check"]);
    assert_eq!(code, 3, "{err}");
    for n in needles {
        assert!(err.contains(n), "{n}: {err}");
    }
}

/// A Python with the `tensorboard` package: `RECURSA_PYTHON`, or a virtual
/// environment made once under `target/` (pip install from PyPI).
fn tensorboard_python() -> PathBuf {
    if let Ok(p) = std::env::var("RECURSA_PYTHON") {
        return p.into();
    }
    let venv = root().join("target").join("tensorboard-venv");
    let python = venv.join("bin").join("python");
    let has_tensorboard = |py: &Path| {
        Command::new(py)
            .args(["-c", "import tensorboard"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_tensorboard(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv", venv.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            made,
            "python3 -m venv {} failed (python3 is needed for this test)",
            venv.display()
        );
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "-q", "tensorboard"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "pip install tensorboard failed (set RECURSA_PYTHON to a Python that has it)"
        );
    }
    python
}

/// Every scalar TensorBoard reads from `dir`: tag -> [(step, value)].
fn read_tensorboard(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let out = Command::new(tensorboard_python())
        .args(["-c", script, dir.to_str().unwrap()])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// TensorBoard (the Python package) reads the run's scalars and finds exactly the
/// numbers of metrics.jsonl, once per step, also after a stop and a resume.
#[test]
fn tensorboard_reads_the_metrics_of_a_resumed_run() {
    let dir = temp("tb");
    let run = dir.join("run");
    let (code, _, err) = train_small(&run, &["--until", "25"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = train_small(&run, &["--resume"]);
    assert_eq!(code, 0, "{err}");

    let scalars = read_tensorboard(&run.join("tensorboard"));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut expected: std::collections::BTreeMap<String, Vec<(i64, f32)>> = Default::default();
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let kind = v["kind"].as_str().unwrap();
        let step = v["step"].as_i64().unwrap();
        for (k, x) in v.as_object().unwrap() {
            if let (true, Some(x)) = (k != "step", x.as_f64()) {
                expected
                    .entry(format!("{kind}/{k}"))
                    .or_default()
                    .push((step, x as f32));
            }
        }
    }
    assert_eq!(expected["train/lm_loss"].len(), 40, "one line per step");
    assert_eq!(expected["eval/exact_accuracy"].len(), 2);
    let tags: Vec<&String> = scalars.keys().collect();
    assert_eq!(tags, expected.keys().collect::<Vec<_>>());
    for (tag, points) in &expected {
        let read: Vec<(i64, f32)> = scalars[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(&read, points, "{tag}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Under a non-terminal the progress is a few plain lines, not one per step.
#[test]
fn logs_under_a_non_terminal_stay_short() {
    let dir = temp("lines");
    let run = dir.join("run");
    let mut args = vec![
        "train",
        "--config",
        "experiments/configs/quick-flip.toml",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "train.steps=300",
        "--set",
        "train.eval_interval=100",
    ];
    args.extend_from_slice(&SMALL[4..]);
    let (code, out, err) = recursa_env(&args, &[("RECURSA_PROGRESS_SECONDS", "2")]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains('\r'), "{err}");
    // A line every 2 s, the evaluations and their checkpoints, the header, the
    // curves: far fewer lines than steps, and more than the end alone.
    let lines = err.lines().count();
    assert!(lines < 80, "{lines} lines for 300 steps:\n{err}");
    let progress = err.lines().filter(|l| l.starts_with("train ")).count();
    assert!(progress >= 2, "{err}");
    assert_eq!(err.matches("eval at step").count(), 3, "{err}");
    assert!(err.contains("train 300/300 | loss"), "{err}");
    assert!(out.contains("final evaluation at step 300"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

fn steps_kept(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    names
}

/// A checkpoint every 10 steps, keeping `keep`.
fn keeping(keep: &str) -> Vec<String> {
    ["--set", "train.checkpoint_interval=10", "--set"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("train.keep_checkpoints={keep}")])
        .collect()
}

#[test]
fn keep_checkpoints_keeps_all_or_the_newest_n_and_eval_reads_any() {
    let dir = temp("keep");
    let all = dir.join("all");
    let (code, _, err) = train_small(&all, &keeping("\"all\""));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        steps_kept(&all),
        ["step-000010", "step-000020", "step-000030", "step-000040"]
    );
    // An older checkpoint evaluates like the latest.
    let (code, out, err) = recursa(&[
        "eval",
        all.to_str().unwrap(),
        "--checkpoint",
        all.join("checkpoints/step-000020").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("step 20: exact accuracy"), "{out}");
    // Its evaluation equals the one logged during training at step 20.
    let logged = std::fs::read_to_string(all.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "eval" && v["step"] == 20)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(all.join("eval/step-20/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["exact_accuracy"], logged["exact_accuracy"]);
    assert_eq!(report["accuracy"], logged["accuracy"]);

    let two = dir.join("two");
    let (code, _, err) = train_small(&two, &keeping("2"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(steps_kept(&two), ["step-000030", "step-000040"]);

    // Nonsense values are config errors naming the field.
    for bad in ["0", "\"some\"", "-1"] {
        let set = format!("train.keep_checkpoints={bad}");
        let (code, _, err) = train_small(&dir.join("bad"), &["--set", &set, "--check"]);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("keep_checkpoints"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_config_extends_another() {
    let dir = temp("extends");
    let base = root().join("experiments/configs/quick-flip.toml");
    let child = dir.join("child.toml");
    std::fs::write(
        &child,
        extending(&base, "[train]\nsteps = 7\n[schedule]\nl_cycles = 3\n"),
    )
    .unwrap();
    let (code, out, err) = recursa(&["inspect", child.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("steps = 7"), "{out}");
    assert!(out.contains("l_cycles = 3"), "{out}");
    // The rest is the base's: its width, its schedule's other field, its data.
    assert!(
        out.contains("hidden_size = 64") && out.contains("h_cycles = 2"),
        "{out}"
    );
    assert!(out.contains("generated-grid"), "{out}");

    // A grandchild, relative to its own directory.
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("sub/grand.toml"),
        "extends = \"../child.toml\"\n[train]\nlr = 2e-3\n",
    )
    .unwrap();
    let (code, out, err) = recursa(&["inspect", dir.join("sub/grand.toml").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("steps = 7") && out.contains("lr = 0.002"),
        "{out}"
    );

    // A typo in the child is an unknown key; a cycle names the files.
    std::fs::write(&child, extending(&base, "[train]\nstepz = 7\n")).unwrap();
    check_fails(&child, &["stepz"]);
    std::fs::write(dir.join("a.toml"), "extends = \"b.toml\"\n").unwrap();
    std::fs::write(dir.join("b.toml"), "extends = \"a.toml\"\n").unwrap();
    let (code, _, err) = recursa(&["inspect", dir.join("a.toml").to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("cycle") && err.contains("a.toml") && err.contains("b.toml"),
        "{err}"
    );
    std::fs::write(dir.join("a.toml"), "extends = \"missing.toml\"\n").unwrap();
    let (code, _, err) = recursa(&["inspect", dir.join("a.toml").to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("a.toml: extends (line 1)") && err.contains("missing.toml"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn nqueens(out: &Path, size: &str, seed: &str, train: &str) {
    let (code, _, err) = recursa(&[
        "data",
        "nqueens",
        "--size",
        size,
        "--num-train",
        train,
        "--num-test",
        "8",
        "--num-aug",
        "1",
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// `[data] paths = [...]` trains on several datasets as one, as the reference's
/// `data_paths`: groups add up, and datasets that disagree are an error.
#[test]
fn several_data_paths_train_as_one() {
    let dir = temp("paths");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    nqueens(&a, "8", "1", "24");
    nqueens(&b, "8", "2", "40");
    nqueens(&c, "7", "3", "24");
    let config = dir.join("two.toml");
    let base = root().join("experiments/configs/quick-sudoku.toml");
    let write = |paths: &[&Path]| {
        let list: Vec<String> = paths
            .iter()
            .map(|p| format!("{:?}", p.to_str().unwrap()))
            .collect();
        let rest = format!(
            "[net]\nseq_len = 64\n[train]\nsteps = 4\nglobal_batch_size = 8\neval_interval = 4\n[data]\nname = \"dataset\"\npaths = [{}]\n",
            list.join(", ")
        );
        std::fs::write(&config, extending(&base, &rest)).unwrap();
    };
    write(&[&a, &b]);
    let run = dir.join("run");
    let (code, _, err) = recursa(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // 24 + 40 training puzzles (each with its augmentation), 8 + 8 test puzzles.
    assert!(err.contains("128 train / 16 test examples"), "{err}");

    write(&[&a, &c]);
    check_fails(&config, &["seq_len", "dataset.json"]);

    std::fs::write(&config, extending(&base, "[data]\nname = \"dataset\"\n")).unwrap();
    check_fails(&config, &["data.path"]);
    std::fs::remove_dir_all(&dir).ok();
}
