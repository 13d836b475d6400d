//! Reliability as a user meets it: bad configs refused before anything is written,
//! errors that name the file, key and line (or the `--set`), resumes that refuse a
//! changed config, metrics that hold each step once after a crash, runs that
//! repeat bit for bit, `kill -9` at exact points and at a random one, and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::root;

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_recursa"));
    c.args(args).current_dir(root()).env_remove("RECURSA_FAULT");
    c
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out: Output = command(args).output().expect("the recursa binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn temp(name: &str) -> PathBuf {
    common::temp(&format!("rel-{name}"))
}

/// quick-flip made small: 12 steps of 16 rows, a checkpoint every 2 steps.
const SMALL: [&str; 8] = [
    "train.steps=12",
    "train.global_batch_size=16",
    "train.checkpoint_interval=2",
    "train.eval_interval=6",
    "data.train_examples=256",
    "data.test_examples=32",
    "net.hidden_size=32",
    "net.puzzle_emb_ndim=32",
];

fn train_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--config",
        "experiments/configs/quick-flip.toml",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for kv in SMALL.iter().chain(extra) {
        args.push("--set".into());
        args.push(kv.to_string());
    }
    args
}

fn train(out: &Path, extra: &[&str], more: &[&str], fault: Option<&str>) -> (Option<i32>, String) {
    let mut args = train_args(out, extra);
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = command(&args);
    if let Some(f) = fault {
        c.env("RECURSA_FAULT", f);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The final weights of a run, as bytes.
fn final_weights(run: &Path) -> Vec<u8> {
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    std::fs::read(
        run.join("checkpoints")
            .join(latest.trim())
            .join("model.safetensors"),
    )
    .unwrap()
}

/// The metrics lines without their timings: what two equal runs must share.
fn metrics(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.retain(|k, _| !(k.ends_with("_per_s") || k == "seconds"));
            v.to_string()
        })
        .collect()
}

#[test]
fn nonsense_values_are_refused_before_a_run_directory_exists() {
    let dir = temp("nonsense");
    let cases = [
        ("train.global_batch_size=0", "train.global_batch_size"),
        ("train.lr=-1.0", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("train.beta2=1.5", "train.beta2"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.lr_min_ratio=2.0", "train.lr_min_ratio"),
        ("train.epochs=-3.0", "train.epochs"),
        ("train.micro_batches=3", "train.micro_batches"),
        ("train.micro_batches=\"most\"", "train.micro_batches"),
        ("train.auto_memory_mb=-1.0", "train.auto_memory_mb"),
        ("halting.max_steps=0", "halting.max_steps"),
        ("halting.exploration=1.5", "halting.exploration"),
        ("schedule.h_cycles=0", "schedule.h_cycles"),
        ("schedule.l_cycles=0", "schedule.l_cycles"),
        ("net.hidden_size=1000000000000", "net.hidden_size"),
        ("net.rms_norm_eps=0.0", "net.rms_norm_eps"),
        ("data.size=4", "data.size"),
        ("data.colors=0", "data.colors"),
        ("data.transform=\"mirror\"", "data.transform"),
    ];
    for (set, field) in cases {
        let out = dir.join("run");
        let (code, err) = train(&out, &[set], &[], None);
        assert_eq!(code, Some(3), "{set}: {err}");
        assert!(
            err.contains(&format!("--set {set}")) || err.contains(field),
            "{set} should be named: {err}"
        );
        assert!(!out.exists(), "{set}: {} was written", out.display());
    }
    // The same through the file itself: the file, the key and its line.
    let text = std::fs::read_to_string(root().join("experiments/configs/quick-flip.toml")).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, text.replace("lr = 1e-3", "lr = -1e-3")).unwrap();
    let out = dir.join("run");
    let (code, err) = run(&[
        "train",
        "--config",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("bad.toml: train.lr (line 34)") && err.contains("-0.001"),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_name_the_key_and_the_override() {
    let dir = temp("names");
    let out = dir.join("run");
    // A bad --set value names the override, not a line of a re-serialised file.
    let (code, err) = train(&out, &["train.steps=abc"], &[], None);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("--set train.steps=abc") && err.contains("invalid type"),
        "{err}"
    );
    assert!(!err.contains("line"), "{err}");
    // A TOML type error in the file names the key and the line.
    let text = std::fs::read_to_string(root().join("experiments/configs/quick-flip.toml")).unwrap();
    let file = dir.join("typed.toml");
    std::fs::write(&file, text.replace("steps = 600", "steps = \"600\"")).unwrap();
    let (code, err) = run(&["inspect", file.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("typed.toml: train.steps (line 32)"), "{err}");
    // So does a wrong type inside a plugin table (read through typetag).
    std::fs::write(&file, text.replace("h_cycles = 2", "h_cycles = \"two\"")).unwrap();
    let (code, err) = run(&["inspect", file.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("typed.toml: schedule.h_cycles (line 20)"),
        "{err}"
    );
    // A --set without `=` is a usage error.
    let (code, err) = train(&out, &["train.steps"], &[], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn exit_codes_tell_input_io_usage_backend_and_check_failures_apart() {
    let dir = temp("codes");
    // Usage: clap's own code.
    assert_eq!(run(&["train", "--no-such-flag"]).0, Some(2));
    // I/O: a file that is not there.
    let (code, err) = run(&["inspect", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, Some(4), "{err}");
    // Input: a config that does not parse.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "seed = [").unwrap();
    let (code, err) = run(&["inspect", bad.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("bad.toml, line 1"), "{err}");
    // Backend: one this binary was not built with.
    if !cfg!(feature = "cuda") {
        let (code, err) = run(&[
            "verify-reference",
            "tests/fixtures/stablemax_cases.safetensors",
            "--backend",
            "cuda",
        ]);
        assert_eq!(code, Some(5), "{err}");
    }
    // A check that fails: a fixture whose stored loss is changed.
    let fixture = std::fs::read(root().join("tests/fixtures/stablemax_cases.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&fixture).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&fixture).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let (_, dtype, _, data) = tensors
        .iter_mut()
        .find(|(n, ..)| n == "random.stablemax_loss")
        .expect("a stored loss");
    assert_eq!(*dtype, safetensors::Dtype::F64);
    let loss = f64::from_le_bytes(data[..8].try_into().unwrap());
    data[..8].copy_from_slice(&(loss * 1.5 + 1.0).to_le_bytes());
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let changed = dir.join("changed.safetensors");
    std::fs::write(
        &changed,
        safetensors::serialize(views, &meta.metadata().clone()).unwrap(),
    )
    .unwrap();
    let (code, err) = run(&["verify-reference", changed.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("FAIL"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resume_refuses_a_changed_config_and_takes_a_new_length() {
    let dir = temp("resume");
    let out = dir.join("run");
    let (code, err) = train(&out, &[], &["--until", "4"], None);
    assert_eq!(code, Some(0), "{err}");
    // The network changed: refused, with the field and both values.
    let (code, err) = train(&out, &["net.hidden_size=64"], &["--resume"], None);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("net.hidden_size: run 32, now 64"), "{err}");
    // The file without the run's --set of train.steps: the run keeps its own length.
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        "experiments/configs/quick-flip.toml".into(),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--resume".into(),
        "--until".into(),
        "6".into(),
    ];
    for kv in SMALL.iter().filter(|kv| !kv.starts_with("train.steps")) {
        args.push("--set".into());
        args.push(kv.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = run(&args);
    assert_eq!(code, Some(0), "{err}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("steps = 12"), "{config}");
    // --set train.steps on resume lengthens the run, and the run's config says so.
    let (code, err) = train(&out, &["train.steps=14"], &["--resume"], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("train.steps 12 -> 14"), "{err}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("steps = 14"), "{config}");
    let last: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .rfind(|l| l.contains("\"train\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["step"], 14);
    std::fs::remove_dir_all(&dir).ok();
}

/// Two fresh runs with one seed, a run killed mid-step, one killed mid-checkpoint
/// and one killed from outside at a random moment: after `--resume`, all end with
/// the same weights, byte for byte, and the same metrics, each step once.
#[test]
fn runs_repeat_bit_for_bit_and_survive_kill_9() {
    let dir = temp("kill");
    let reference = dir.join("a");
    let (code, err) = train(&reference, &[], &[], None);
    assert_eq!(code, Some(0), "{err}");
    let (weights, lines) = (final_weights(&reference), metrics(&reference));
    assert_eq!(lines.iter().filter(|l| l.contains("\"train\"")).count(), 12);

    let again = dir.join("b");
    assert_eq!(train(&again, &[], &[], None).0, Some(0));
    assert!(
        final_weights(&again) == weights,
        "two runs with one seed differ"
    );
    assert_eq!(metrics(&again), lines);

    for fault in ["train-step:5", "checkpoint:6", "train-step:7"] {
        let run = dir.join(fault.replace(':', "-"));
        let (code, err) = train(&run, &[], &[], Some(fault));
        assert_eq!(
            code, None,
            "{fault}: the process should die by SIGKILL: {err}"
        );
        // The newest published checkpoint is complete, whatever was cut short.
        let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
        assert!(run
            .join("checkpoints")
            .join(latest.trim())
            .join("trainer.json")
            .exists());
        let (code, err) = train(&run, &[], &["--resume"], None);
        assert_eq!(code, Some(0), "{fault}: {err}");
        assert!(
            final_weights(&run) == weights,
            "{fault}: resumed weights differ"
        );
        assert_eq!(metrics(&run), lines, "{fault}: metrics differ");
    }

    // kill -9 from outside, once the run is under way.
    let run = dir.join("outside");
    let args = train_args(&run, &["train.steps=12"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = command(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let logged = std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if logged >= 3 || started.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    // Killed, or finished before the signal (then --resume has nothing to do).
    let _ = status;
    let (code, err) = train(&run, &[], &["--resume"], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        final_weights(&run) == weights,
        "killed from outside: weights differ"
    );
    assert_eq!(metrics(&run), lines, "killed from outside: metrics differ");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_arc_build_killed_midway_leaves_no_output() {
    let dir = temp("arc-kill");
    let out = dir.join("arc");
    let args = [
        "data",
        "arc",
        "--subsets",
        "evaluation",
        "--test-set",
        "evaluation",
        "--max-tasks",
        "2",
        "--num-aug",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let status = command(&args)
        .env("RECURSA_FAULT", "arc-build:0")
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), None, "the build should die by SIGKILL");
    assert!(!out.exists(), "a killed build left {}", out.display());
    // The next build completes and sweeps the dead one's temporary directory.
    let (code, err) = run(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.join("train/dataset.json").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

/// After a crash the killed process's steps past the checkpoint are gone from
/// metrics.jsonl, so `recursa plot` reads one curve.
#[test]
fn plot_reads_one_curve_after_a_crash() {
    let dir = temp("plot");
    let run_dir = dir.join("run");
    // Killed while writing the checkpoint of step 6: steps 5 and 6 were logged.
    let (code, _) = train(&run_dir, &[], &[], Some("checkpoint:6"));
    assert_eq!(code, None);
    let (code, err) = train(&run_dir, &[], &["--resume"], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("metrics lines after it dropped"), "{err}");
    let (code, err) = run(&["plot", run_dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let csv = std::fs::read_to_string(run_dir.join("curves.csv")).unwrap();
    let loss_steps: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(",train loss,") || l.contains(",loss,"))
        .map(|l| l.split(',').nth(2).unwrap())
        .collect();
    let mut unique = loss_steps.clone();
    unique.dedup();
    assert_eq!(loss_steps, unique, "{csv}");
    std::fs::remove_dir_all(&dir).ok();
}
