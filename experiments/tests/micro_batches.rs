//! `train.micro_batches = "auto"` from the command line: the count it chooses from
//! the memory free trains exactly as that count given by hand, and a resumed run
//! keeps it.

mod common;

use std::path::Path;

use common::{recursa, temp};

/// `recursa train` of quick-flip (4 steps of 64 rows) into `out`, with `more`.
fn train(out: &Path, more: &[&str]) -> (i32, String) {
    let mut args = vec![
        "train",
        "--config",
        "experiments/configs/quick-flip.toml",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "train.steps=4",
        "--set",
        "train.eval_interval=4",
        "--set",
        "train.global_batch_size=64",
    ];
    args.extend_from_slice(more);
    let (code, stdout, stderr) = recursa(&args);
    (code, stdout + &stderr)
}

/// The metrics lines of `kind` in a run.
fn lines(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// The logged training numbers (throughput, which varies, left out).
fn train_numbers(run: &Path) -> Vec<Vec<serde_json::Value>> {
    let keys = ["step", "lm_loss", "q_halt_loss", "accuracy", "steps", "lr"];
    lines(run, "train")
        .iter()
        .map(|v| keys.iter().map(|k| v[*k].clone()).collect())
        .collect()
}

fn model(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("checkpoints/step-000004/model.safetensors")).unwrap()
}

fn carries(run: &Path) -> usize {
    std::fs::read_dir(run.join("checkpoints/step-000004"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("carry-"))
        .count()
}

/// The first step, measured by the binary's counting allocator, took no more than
/// the plan said it would (to 10%), and the plan kept to its budget.
fn assert_fits(plan: &serde_json::Value) {
    let number = |k: &str| plan[k].as_f64().unwrap_or_else(|| panic!("{k}: {plan}"));
    let (need, budget) = (number("need_bytes"), number("budget_bytes"));
    assert!(need <= budget, "{plan}");
    assert!(number("first_step_bytes") <= 1.1 * need, "{plan}");
}

#[test]
fn auto_micro_batches_train_as_the_count_they_choose() {
    let dir = temp("micro-auto");

    // Room to spare: one micro-batch, and the probes before it change nothing.
    let (auto, one) = (dir.join("auto"), dir.join("one"));
    let (code, out) = train(&auto, &["--set", "train.micro_batches=\"auto\""]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("train.micro_batches = \"auto\": 1 micro-batches of 64 rows"),
        "{out}"
    );
    let (code, out) = train(&one, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(train_numbers(&auto), train_numbers(&one));
    assert!(model(&auto) == model(&one), "the probes changed the run");
    let plan = &lines(&auto, "micro_batches")[0];
    assert_eq!(plan["micro_batches"], 1);
    let (need, per_row) = (
        plan["need_bytes"].as_f64().unwrap(),
        plan["bytes_per_row"].as_f64().unwrap(),
    );
    assert!(per_row > 0.0 && need > 64.0 * per_row, "{plan}");
    assert_fits(plan);

    // A budget between the step's needs with 1 and 2 micro-batches: a split, cut
    // at step 2 and resumed with the count it chose.
    let budget = format!("train.auto_memory_mb={}", (need - 20.0 * per_row) / 1e6);
    let split = dir.join("split");
    let sets = [
        "--set",
        "train.micro_batches=\"auto\"",
        "--set",
        budget.as_str(),
    ];
    let (code, out) = train(&split, &[&sets[..], &["--until", "2"]].concat());
    assert_eq!(code, 0, "{out}");
    let (code, out) = train(&split, &[&sets[..], &["--resume"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("micro-batches of"),
        "the resumed run chose again: {out}"
    );
    let plans = lines(&split, "micro_batches");
    assert_eq!(plans.len(), 1, "{plans:?}");
    assert_fits(&plans[0]);
    let m = plans[0]["micro_batches"].as_u64().unwrap() as usize;
    assert!(m >= 2, "{plans:?}");
    assert_eq!(carries(&split), m);
    let fixed = dir.join("fixed");
    let (code, out) = train(&fixed, &["--set", &format!("train.micro_batches={m}")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(train_numbers(&split), train_numbers(&fixed));
    assert!(
        model(&split) == model(&fixed),
        "auto's {m} micro-batches differ from {m} by hand"
    );

    // No room for one example: a clear error, and no run directory.
    let none = dir.join("none");
    let (code, out) = train(
        &none,
        &[
            "--set",
            "train.micro_batches=\"auto\"",
            "--set",
            "train.auto_memory_mb=0.001",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("train.micro_batches") && out.contains("one example per micro-batch needs"),
        "{out}"
    );
    assert!(!none.exists(), "the refused run left {}", none.display());
    // So the same directory takes the run again.
    let (code, out) = train(&none, &["--set", "train.micro_batches=\"auto\""]);
    assert_eq!(code, 0, "{out}");

    // A budget with a fixed count is read by nothing, and the run says so.
    let (code, out) = train(&dir.join("budget"), &["--set", "train.auto_memory_mb=100"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: train.auto_memory_mb is read only with train.micro_batches = \"auto\""
        ),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn auto_micro_batches_are_for_one_device() {
    let dir = temp("micro-auto-two");
    let (code, out) = train(
        &dir.join("run"),
        &[
            "--backend",
            "cpu,cpu",
            "--set",
            "train.micro_batches=\"auto\"",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("\"auto\" chooses the count on one device"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
