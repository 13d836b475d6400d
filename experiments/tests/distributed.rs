//! Training across processes on localhost: `recursa launch` and `recursa train
//! --world/--rank`, against one process with the same global batch.
//!
//! Two ranks with one micro-batch each compute what one process computes with two
//! micro-batches (the same rows, exploration streams and summation order), so the
//! logged losses and the saved weights must agree to the bit. Every process here
//! has a `--timeout`, so each test ends by itself even when something hangs.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{recursa, recursa_env, root, temp};

const SETS: [&str; 6] = [
    "--set",
    "train.steps=6",
    "--set",
    "train.eval_interval=3",
    "--set",
    "train.global_batch_size=32",
];

/// A loopback address with a port nothing listens on now.
fn free_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// `recursa train` of quick-flip (6 steps of 32 rows) into `out`, with `more`.
fn train_args<'a>(out: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--config",
        "experiments/configs/quick-flip.toml",
        "--out",
        out,
    ];
    args.extend_from_slice(&SETS);
    args.extend_from_slice(more);
    args
}

/// `recursa launch --nproc 2` of [`train_args`].
fn launch2(out: &Path, more: &[&str]) -> (i32, String, String) {
    launch2_at(&free_address(), "60", out, more)
}

/// [`launch2`] with the coordinator at `at` and a timeout of `timeout` seconds.
fn launch2_at(at: &str, timeout: &str, out: &Path, more: &[&str]) -> (i32, String, String) {
    let mut args = vec!["launch", "--nproc", "2", "--coordinator", at];
    args.extend(["--timeout", timeout, "--"]);
    args.extend(train_args(out.to_str().unwrap(), more));
    recursa(&args)
}

/// The logged training numbers of a run (throughput, which varies, left out).
fn train_numbers(run: &Path) -> Vec<Vec<serde_json::Value>> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| {
            [
                "step",
                "lm_loss",
                "q_halt_loss",
                "accuracy",
                "exact_accuracy",
                "steps",
                "lr",
            ]
            .iter()
            .map(|k| v[*k].clone())
            .collect()
        })
        .collect()
}

/// The logged evaluation numbers of a run (its time left out).
fn eval_numbers(run: &Path) -> Vec<Vec<serde_json::Value>> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .map(|v| {
            ["step", "exact_accuracy", "accuracy", "examples"]
                .iter()
                .map(|k| v[*k].clone())
                .collect()
        })
        .collect()
}

fn model(run: &Path, step: usize) -> Vec<u8> {
    std::fs::read(run.join(format!("checkpoints/step-{step:06}/model.safetensors"))).unwrap()
}

#[test]
fn two_processes_train_like_one_and_resume_exactly() {
    let dir = temp("dist-same");
    let (one, two, cut) = (dir.join("one"), dir.join("two"), dir.join("cut"));
    let (code, _, err) = recursa(&train_args(
        one.to_str().unwrap(),
        &["--set", "train.micro_batches=2"],
    ));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = launch2(&two, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("final evaluation at step 6"), "{out}");
    assert!(err.contains("ranks 0..1 of 2 started"), "{err}");

    // Bit for bit: every logged loss, the sharded evaluation, the weights.
    let numbers = train_numbers(&one);
    assert_eq!(numbers.len(), 6);
    assert_eq!(numbers, train_numbers(&two));
    assert_eq!(eval_numbers(&one).len(), 2);
    assert_eq!(eval_numbers(&one), eval_numbers(&two));
    assert!(model(&one, 6) == model(&two, 6), "weights differ");
    // Rank 0 wrote the checkpoint, with rank 1's carry in it.
    for f in ["carry-0.safetensors", "carry-1.safetensors", "trainer.json"] {
        assert!(two.join("checkpoints/step-000006").join(f).exists(), "{f}");
    }

    // Stopped after step 3, resumed by two new processes: the same run.
    let (code, _, err) = launch2(&cut, &["--until", "3"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = launch2(&cut, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("resumed") && err.contains("at step 3"),
        "{err}"
    );
    assert_eq!(train_numbers(&cut), numbers);
    assert!(model(&cut, 6) == model(&two, 6), "resumed weights differ");

    // A 2-rank checkpoint resumes in one process with 2 micro-batches (the same
    // pieces of the global batch) exactly; with 1 micro-batch it is refused.
    let (code, _, err) = launch2(&cut.with_extension("b"), &["--until", "3"]);
    assert_eq!(code, 0, "{err}");
    let solo = cut.with_extension("b");
    let (code, _, err) = recursa(&train_args(solo.to_str().unwrap(), &["--resume"]));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("holds 2 carries") && err.contains("train.micro_batches = 2"),
        "{err}"
    );
    let (code, _, err) = recursa(&train_args(
        solo.to_str().unwrap(),
        &["--resume", "--set", "train.micro_batches=2"],
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(train_numbers(&solo), numbers);
    assert!(
        model(&solo, 6) == model(&two, 6),
        "weights differ after 2 -> 1 process"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts rank `rank` of 2 of [`train_args`] by hand, with `RECURSA_FAULT=fault`.
fn spawn_rank(
    run: &Path,
    at: &str,
    rank: &str,
    fault: Option<&str>,
    more: &[&str],
) -> std::process::Child {
    let mut args = train_args(run.to_str().unwrap(), more);
    args.extend(["--world", "2", "--rank", rank, "--coordinator", at]);
    args.extend(["--timeout", "60"]);
    let mut c = Command::new(env!("CARGO_BIN_EXE_recursa"));
    c.args(&args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(f) = fault {
        c.env("RECURSA_FAULT", f);
    }
    c.spawn().unwrap()
}

#[test]
fn a_killed_rank_stops_the_others_and_the_checkpoint_stays() {
    let dir = temp("dist-kill");
    let run = dir.join("run");
    let at = free_address();
    let rank = |r: &str, fault: Option<&str>| spawn_rank(&run, &at, r, fault, &[]);
    let start = Instant::now();
    let zero = rank("0", None);
    // Rank 1 dies (SIGKILL) in step 4, after the checkpoint of step 3.
    let one = rank("1", Some("train-step:4"));
    let zero = zero.wait_with_output().unwrap();
    let one = one.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(zero.status.code(), Some(6), "{err}");
    assert!(err.contains("rank 1 stopped"), "{err}");
    assert_eq!(one.status.code(), None, "rank 1 was killed");
    // Far below the 60 s timeout: the closed connection is seen at once.
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "{:?}",
        start.elapsed()
    );
    // The checkpoint of step 3 is complete and the run resumes from it.
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-000003");
    let (code, _, err) = launch2(&run, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(train_numbers(&run).len(), 6);

    // Rank 0 dies while it writes the checkpoint of step 4 (written, not yet
    // published): rank 1 stops naming it, and step 2's checkpoint is the latest.
    let run = dir.join("run-b");
    let rank = |r: &str, fault: Option<&str>| {
        spawn_rank(
            &run,
            &at,
            r,
            fault,
            &["--set", "train.checkpoint_interval=2"],
        )
    };
    let zero = rank("0", Some("checkpoint:4"));
    let one = rank("1", None);
    let one = one.wait_with_output().unwrap();
    let zero = zero.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&one.stderr);
    assert_eq!(one.status.code(), Some(6), "{err}");
    assert!(
        err.contains("rank 0 (the coordinator") && err.contains("stopped"),
        "{err}"
    );
    assert_eq!(zero.status.code(), None, "rank 0 was killed");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-000002");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn faults_at_start_are_clear_errors() {
    let dir = temp("dist-errors");
    let run = dir.join("run");
    let out = run.to_str().unwrap();

    // The coordinator's port is taken: rank 0 says so, and launch names rank 0.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
    let (code, _, err) = launch2_at(&at, "5", &run, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("port is taken") && err.contains(&at), "{err}");
    assert!(err.contains("recursa launch: rank"), "{err}");
    assert!(!run.exists(), "nothing written");

    // A rank whose coordinator never comes.
    let lonely = free_address();
    let mut args = train_args(out, &[]);
    args.extend([
        "--world",
        "2",
        "--rank",
        "1",
        "--coordinator",
        &lonely,
        "--timeout",
        "1",
    ]);
    let (code, _, err) = recursa(&args);
    assert_eq!(code, 6);
    assert!(err.contains("rank 1 cannot reach the coordinator"), "{err}");

    // Rank 0 refuses the run (a typo): the other rank stops with its reason.
    let (code, _, err) = launch2(&run, &["--set", "train.stepz=3"]);
    assert_ne!(code, 0);
    assert!(err.contains("stepz"), "{err}");
    assert!(!run.exists(), "nothing written");

    // `micro_batches = "auto"` chooses on one device: refused across processes.
    let (code, _, err) = launch2(&run, &["--set", "train.micro_batches=auto"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("\"auto\" chooses the count on one device"),
        "{err}"
    );
    assert!(!run.exists(), "nothing written");

    // One rank is a plain run.
    let solo = dir.join("solo");
    let mut args = vec!["launch", "--nproc", "1", "--coordinator", &at, "--"];
    args.extend(train_args(
        solo.to_str().unwrap(),
        &["--set", "train.steps=1"],
    ));
    let (code, _, err) = recursa(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(train_numbers(&solo).len(), 1);

    // Arguments that launch sets itself, and commands it does not run.
    let (code, _, err) = recursa(&["launch", "--nproc", "2", "--", "train", "--world", "2"]);
    assert_eq!(code, 2);
    assert!(err.contains("--world is set by recursa launch"), "{err}");
    let (code, _, err) = recursa(&["launch", "--nproc", "2", "--", "eval", "runs/x"]);
    assert_eq!(code, 2);
    assert!(err.contains("recursa launch runs `train`"), "{err}");
    let (code, _, err) = recursa_env(
        &[
            "train",
            "--config",
            "experiments/configs/quick-flip.toml",
            "--world",
            "2",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--rank"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
