//! The `recursa` binary as a user runs it.

mod common;

use common::recursa;

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
    // A fixture of a kind this release does not know: named, with the supported kinds.
    let dir = std::env::temp_dir().join(format!("recursa-kind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mystery.safetensors");
    let bytes = 1.0f32.to_le_bytes();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &bytes).unwrap();
    let metadata = std::collections::HashMap::from([(
        "fixture".to_string(),
        r#"{"kind": "mystery"}"#.to_string(),
    )]);
    let file = safetensors::serialize([("x".to_string(), view)], &Some(metadata)).unwrap();
    std::fs::write(&path, file).unwrap();
    let (code, _, err) = recursa(&["verify-reference", path.to_str().unwrap()]);
    assert_eq!(code, 3, "invalid input");
    assert!(
        err.contains("`mystery`") && err.contains("supported: trm_forward"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
    // Not a safetensors file at all.
    let (code, _, err) = recursa(&["verify-reference", "Cargo.toml"]);
    assert_eq!(code, 3, "invalid input");
    assert!(
        err.contains("Cargo.toml") && err.contains("not a safetensors file"),
        "{err}"
    );
    let (code, _, err) = recursa(&["verify-reference", "no/such/file.safetensors"]);
    assert_eq!(code, 4, "I/O");
    assert!(err.contains("no/such/file.safetensors"), "{err}");
    let (code, _, err) = recursa(&[
        "verify-reference",
        "--backend",
        "tpu",
        "tests/fixtures/trm_forward_shared.safetensors",
    ]);
    assert_eq!(code, 5, "backend");
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
    assert!(out.contains("parameters: 5,028,866"), "{out}");
    assert!(out.contains("336 network calls per example"), "{out}");
}

fn train_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .collect()
}

#[test]
fn a_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    resumes_bit_identically("quick-flip", "experiments/configs/quick-flip.toml");
}

/// DIS keeps a per-episode state (its path) in the carry: the checkpoint must hold it.
#[test]
fn a_resumed_dis_run_is_bit_identical_to_an_uninterrupted_one() {
    resumes_bit_identically("quick-dis", "experiments/configs/quick-dis.toml");
}

fn resumes_bit_identically(name: &str, config: &str) {
    let dir = std::env::temp_dir().join(format!("recursa-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let common = [
        "--set",
        "train.steps=10",
        "--set",
        "train.eval_interval=5",
        "--set",
        "train.global_batch_size=16",
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["train", "--config", config];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        let (code, out, err) = recursa(&args);
        assert_eq!(code, 0, "{out}\n{err}");
    };
    run(&["--out", a.to_str().unwrap()]);
    // Interrupted at step 6 (mid-episode: max_steps is 4), then resumed in a new process.
    run(&["--out", b.to_str().unwrap(), "--until", "6"]);
    assert_eq!(train_lines(&b.join("metrics.jsonl")).len(), 6);
    // The resume repeats the run's --set: the file must agree with the run's config.
    run(&["--out", b.to_str().unwrap(), "--resume"]);
    let (la, lb) = (
        train_lines(&a.join("metrics.jsonl")),
        train_lines(&b.join("metrics.jsonl")),
    );
    assert_eq!(la.len(), 10);
    assert_eq!(lb.len(), 10);
    for (x, y) in la.iter().zip(&lb) {
        for key in [
            "step",
            "lm_loss",
            "q_halt_loss",
            "accuracy",
            "exact_accuracy",
            "lr",
        ] {
            assert_eq!(x[key], y[key], "{key} at step {}", x["step"]);
        }
    }
    // A second fresh run into an existing run directory is refused, not overwritten.
    let (code, _, err) = recursa(&["train", "--config", config, "--out", a.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("--resume"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--help` of the command and of every subcommand, and the plugin list: the
/// command line is an interface, so a change of it shows up as a snapshot diff.
#[test]
fn help_and_plugin_list_snapshots() {
    let (code, top, _) = recursa(&["--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("help", top);
    // Subcommands as the top-level help lists them, so a new one is covered too.
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for c in &commands {
        let (code, out, err) = recursa(&[c, "--help"]);
        assert_eq!(code, 0, "{c}: {err}");
        insta::assert_snapshot!(format!("help_{c}"), out);
    }
    let (code, data, _) = recursa(&["data", "--help"]);
    assert_eq!(code, 0);
    for l in data
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
    {
        let Some(sub) = l.split_whitespace().next().filter(|s| *s != "help") else {
            continue;
        };
        let (code, out, err) = recursa(&["data", sub, "--help"]);
        assert_eq!(code, 0, "data {sub}: {err}");
        insta::assert_snapshot!(format!("help_data_{sub}"), out);
    }
    let (code, plugins, err) = recursa(&["plugins"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("plugins", plugins);
}

/// A fake run directory: `metrics.jsonl` with train lines at steps 1..=steps (batch 8,
/// `calls` network calls per example) and an eval line every 5 steps.
fn fake_run(dir: &std::path::Path, steps: usize, calls: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for s in 1..=steps {
        let line = serde_json::json!({
            "kind": "train", "step": s, "lr": 1e-3, "lm_loss": 2.0 / s as f64,
            "q_halt_loss": 0.1, "accuracy": 0.5, "exact_accuracy": s as f64 / steps as f64,
            "q_halt_accuracy": 0.9, "steps": 2.0, "count": 8,
            "net_calls_per_example": calls, "net_calls_with_grad": 2,
            "net_calls_total": s * 8 * calls, "examples_per_s": 100.0, "tokens_per_s": 900.0,
        });
        text += &format!("{line}\n");
        if s % 5 == 0 {
            let line = serde_json::json!({
                "kind": "eval", "step": s, "exact_accuracy": s as f64 / (2 * steps) as f64,
                "accuracy": 0.5, "examples": 32, "seconds": 0.1, "net_calls_per_example": calls,
            });
            text += &format!("{line}\n");
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    std::fs::write(dir.join("config.toml"), "[train]\nglobal_batch_size = 8\n").unwrap();
}

#[test]
fn plot_draws_two_runs_into_a_png_and_a_csv() {
    let dir = std::env::temp_dir().join(format!("recursa-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    fake_run(&a, 20, 6);
    fake_run(&b, 10, 18);
    let out = dir.join("out").join("X.png");
    let (code, stdout, err) = recursa(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--x",
        "forward-passes",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(
        stdout.contains("X.png") && stdout.contains("X.csv"),
        "{stdout}"
    );

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.width, 1280);
    assert!(info.height > 700, "{}", info.height);

    let csv = std::fs::read_to_string(dir.join("out").join("X.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("run,panel,step,forward_passes,value"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let count =
        |run: &str, panel: &str| rows.iter().filter(|r| r[0] == run && r[1] == panel).count();
    assert_eq!(count("a", "train_lm_loss"), 20);
    assert_eq!(count("b", "train_lm_loss"), 10);
    assert_eq!(count("a", "eval_exact_accuracy"), 4);
    assert_eq!(count("b", "eval_accuracy"), 2);
    // Forward passes: step 10 of b is 10 * 8 * 18.
    assert!(
        rows.iter()
            .any(|r| r[..4] == ["b", "eval_exact_accuracy", "10", "1440"]),
        "{csv}"
    );

    // One run: the default picture is RUN/curves.png; examples on the x axis.
    let (code, stdout, err) = recursa(&["plot", a.to_str().unwrap(), "--x", "examples"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(a.join("curves.png").is_file() && a.join("curves.csv").is_file());
    let csv = std::fs::read_to_string(a.join("curves.csv")).unwrap();
    assert!(csv.contains("a,train_lm_loss,20,160,0.1\n"), "{csv}");

    // Errors name the file and the line, or say the run is empty.
    std::fs::write(b.join("metrics.jsonl"), "{\"kind\":\"train\"}\n").unwrap();
    let (code, _, err) = recursa(&["plot", b.to_str().unwrap()]);
    assert_eq!(code, 3, "invalid input");
    assert!(err.contains("metrics.jsonl:1: no `step`"), "{err}");
    std::fs::write(b.join("metrics.jsonl"), "").unwrap();
    let (code, _, err) = recursa(&["plot", b.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(err.contains("nothing to plot"), "{err}");
    let (code, _, err) = recursa(&["plot", dir.join("none").to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(err.contains("none: no such run directory"), "{err}");

    let (code, help, _) = recursa(&["plot", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("recursa plot runs/") && help.contains("forward-passes"),
        "{help}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `recursa train` of quick-arc.toml shrunk to a tiny network (width 16, one block,
/// 2 steps of 4, 2 supervision steps) on the dataset `data`, into `run`, with more
/// arguments and `--set key=value` overrides.
fn train_tiny_arc(
    data: &std::path::Path,
    run: &std::path::Path,
    more: &[&str],
    sets: &[&str],
    before: &[&str],
) -> (i32, String, String) {
    let mut args: Vec<String> = before.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "train",
            "--config",
            "experiments/configs/quick-arc.toml",
            "--out",
            run.to_str().unwrap(),
        ]
        .iter()
        .chain(more)
        .map(|s| s.to_string()),
    );
    let tiny = [
        format!("data.path=\"{}\"", data.display()),
        "train.steps=2".into(),
        "train.global_batch_size=4".into(),
        "net.hidden_size=16".into(),
        "net.puzzle_emb_ndim=16".into(),
        "net.num_heads=1".into(),
        "net.l_layers=1".into(),
        "halting.max_steps=2".into(),
    ];
    for kv in tiny.iter().map(String::as_str).chain(sets.iter().copied()) {
        args.extend(["--set".to_string(), kv.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    recursa(&args)
}

/// The ARC path end to end through the command line: build a small dataset,
/// train a tiny model on it for two steps (data-parallel on two CPU devices),
/// evaluate with voting, and draw the vote tables.
#[test]
fn arc_data_train_eval_render() {
    let dir = std::env::temp_dir().join(format!("recursa-arc-e2e-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("arc");
    let (code, _, err) = recursa(&[
        "data",
        "arc",
        "--subsets",
        "training,evaluation",
        "--test-set",
        "evaluation",
        "--max-tasks",
        "3",
        "--num-aug",
        "2",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let run = dir.join("run");
    // Data-parallel on two CPU devices.
    let (code, _, err) = train_tiny_arc(&data, &run, &["--backend", "cpu,cpu"], &[], &[]);
    assert_eq!(code, 0, "{err}");
    // The dataset's identifier count sized the puzzle table, and the run says so.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("identifiers.json")).unwrap())
            .unwrap();
    let n = ids.as_array().unwrap().len();
    assert!(
        config.contains(&format!("num_puzzle_identifiers = {n}")),
        "{config}"
    );

    // Every evaluation during training ran the voting evaluator (as the reference).
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    assert!(!evals.is_empty(), "{metrics}");
    for e in &evals {
        for k in ["ARC/pass@1", "ARC/pass@2", "ARC/pass@1000"] {
            assert!(
                e[k].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)),
                "{e}"
            );
        }
    }
    assert!(err.contains("ARC/pass@2"), "{err}");
    // The same run as two processes: the evaluation is sharded over the ranks and
    // rank 0's voting evaluator gets every batch.
    let run2 = dir.join("run-2-processes");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = train_tiny_arc(
        &data,
        &run2,
        &[],
        &[],
        &[
            "launch",
            "--nproc",
            "2",
            "--coordinator",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "60",
            "--",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let evals2: Vec<serde_json::Value> = std::fs::read_to_string(run2.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    assert_eq!(evals.len(), evals2.len());
    // Two devices in one process cut each batch's rows between them, two processes
    // take whole batches: the votes, counts and exact accuracy agree exactly, the
    // token accuracy (a float32 sum, added in another order) to float32 rounding.
    for (a, b) in evals.iter().zip(&evals2) {
        for (k, v) in a.as_object().unwrap() {
            match k.as_str() {
                "seconds" => {}
                "accuracy" => {
                    let (x, y) = (v.as_f64().unwrap(), b[k].as_f64().unwrap());
                    assert!((x - y).abs() <= 1e-6 * x.abs(), "{k}: {x} vs {y}");
                }
                _ => assert_eq!(v, &b[k], "{k}: in-process vs two processes"),
            }
        }
    }
    let (code, out, err) = recursa(&["eval", run.to_str().unwrap(), "--batch", "8"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ARC/pass@2"), "{out}");
    let eval_dir = run.join("eval/step-2");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("metrics.json")).unwrap())
            .unwrap();
    let pass2 = metrics["arc"]["ARC/pass@2"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&pass2), "{metrics}");
    // Two attempts for every test input of every evaluation task.
    let submission: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("submission.json")).unwrap())
            .unwrap();
    let tasks = submission.as_object().unwrap();
    assert_eq!(tasks.len(), 3, "{submission}");
    for inputs in tasks.values() {
        for attempts in inputs.as_array().unwrap() {
            assert!(attempts.get("attempt_1").is_some() && attempts.get("attempt_2").is_some());
        }
    }
    // PTRM: two noisy trajectories per test input, picked by q_halt, voted as usual.
    let (code, out, err) = recursa(&[
        "eval",
        run.to_str().unwrap(),
        "--batch",
        "8",
        "--trajectories",
        "2",
        "--latent-noise",
        "0.2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 noisy trajectories per example"), "{out}");
    let noisy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/step-2-trajectories-2/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(noisy["trajectories"]["count"], 2, "{noisy}");
    assert_eq!(
        noisy["net_calls_per_example"].as_u64().unwrap(),
        2 * metrics["net_calls_per_example"].as_u64().unwrap()
    );
    assert!(noisy["arc"]["ARC/pass@2"].as_f64().is_some(), "{noisy}");

    // Test-time fine-tuning on one evaluation task's demonstrations.
    let task = tasks.keys().next().unwrap().clone();
    let finetune = |run: &std::path::Path, steps: &str, out: &std::path::Path| {
        recursa(&[
            "finetune",
            run.to_str().unwrap(),
            "--tasks",
            &task,
            "--steps",
            steps,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let tuned = dir.join("tuned");
    let (code, out, err) = finetune(&run, "2", &tuned);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("before:") && out.contains("after:"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tuned.join("finetune.json")).unwrap())
            .unwrap();
    assert_eq!(report["tasks"], serde_json::json!([task]), "{report}");
    for when in ["before", "after"] {
        let p = report[when]["arc"]["ARC/pass@2"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{report}");
    }
    // The demonstrations of that task only: its augmentations' train pairs.
    let rows = report["train_examples"].as_u64().unwrap();
    assert!(rows > 0 && rows < 40, "{report}");
    assert!(tuned.join("checkpoints/step-000002").is_dir());
    // Any schedule fine-tunes: the same for a DIS run on the same data.
    let dis_run = dir.join("dis-run");
    let dis = [
        "net.step_embeddings=4",
        "schedule.name=\"dis\"",
        "target.name=\"dis-linear-path\"",
        "target.steps=2",
    ];
    let (code, _, err) = train_tiny_arc(&data, &dis_run, &[], &dis, &[]);
    assert_eq!(code, 0, "{err}");
    let dis_tuned = dir.join("dis-tuned");
    let (code, out, err) = finetune(&dis_run, "1", &dis_tuned);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("after:"), "{out}");
    assert!(dis_tuned.join("finetune.json").exists());

    let (code, _, err) = recursa(&[
        "finetune",
        run.to_str().unwrap(),
        "--tasks",
        "not-a-task",
        "--out",
        dir.join("never").to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--tasks") && err.contains("not-a-task"),
        "{err}"
    );
    assert!(!dir.join("never").exists());

    let renders = dir.join("renders");
    let (code, _, err) = recursa(&[
        "render",
        "--subset",
        "evaluation",
        "--first",
        "3",
        "--eval-result",
        eval_dir.join("eval_result.json").to_str().unwrap(),
        "--out",
        renders.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(renders.join("index.html").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_dataset_names_the_command_that_builds_it() {
    let (code, _, err) = recursa(&[
        "train",
        "--config",
        "experiments/configs/quick-arc.toml",
        "--set",
        "data.path=\"/nonexistent/arc\"",
        "--out",
        "/tmp/recursa-never-written",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("data.path") && err.contains("recursa data"),
        "{err}"
    );
    assert!(!std::path::Path::new("/tmp/recursa-never-written").exists());
}

/// A paper config (its length given in epochs of a dataset that is not built
/// here) benchmarks without its data: the benchmark feeds random tokens.
#[test]
fn bench_runs_a_paper_config_without_its_dataset() {
    // One timed step of `config` (under experiments/configs) on `batch` rows, with `more`.
    let bench_of = |config: &str, batch: &str, more: &[&str]| {
        let config = format!("experiments/configs/{config}.toml");
        let mut args = vec![
            "bench", "--config", &config, "--batch", batch, "--steps", "1",
        ];
        args.extend_from_slice(more);
        recursa(&args)
    };
    let bench = |more: &[&str]| bench_of("dis-compact", "1", more);
    let (code, out, err) = bench(&["--dtype", "f32"]);
    assert_eq!(code, 0, "{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(
        last["train_examples_per_s"].as_f64().unwrap() > 0.0,
        "{out}"
    );
    assert_eq!(last["dtype"], "f32");
    assert!(out.contains("peak memory (RSS)"), "{out}");
    // One time per timed step; with one step the median and the mean agree.
    let times = last["train_step_seconds"].as_array().unwrap();
    assert_eq!(times.len(), 1, "{out}");
    let per_s = |key: &str| last[key].as_f64().unwrap();
    assert!(
        (per_s("train_examples_per_s") - per_s("train_examples_per_s_mean")).abs()
            <= 1e-9 * per_s("train_examples_per_s"),
        "{out}"
    );
    assert!(
        (per_s("train_examples_per_s") * times[0].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{out}"
    );
    // No timed step is a usage error, not a NaN throughput.
    let (code, _, err) = recursa(&[
        "bench",
        "--config",
        "experiments/configs/dis-compact.toml",
        "--steps",
        "0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--steps must be at least 1"), "{err}");
    // `--json` prints the result alone, with the peak memory the wrapper compares.
    let (code, out, err) = bench(&["--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let only: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rss = only["peak_rss_bytes"].as_u64().unwrap();
    // dis-compact's parameters alone take megabytes; under 4 GB at batch 1.
    assert!(rss > 1_000_000 && rss < 4_000_000_000, "{rss}");
    // Half precision runs on the CPU too (burn-flex's bf16 kernels), and says so.
    let (code, out, err) = bench(&["--dtype", "bf16", "--json"]);
    assert_eq!(code, 0, "{err}");
    let half: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(half["dtype"], "bf16", "{out}");
    assert!(
        half["train_examples_per_s"].as_f64().unwrap() > 0.0,
        "{out}"
    );
    let quick = |more: &[&str]| bench_of("quick-flip", "8", &[&["--json"], more].concat());
    // Two CPU devices (data-parallel, evaluation rows cut between them).
    let (code, out, err) = quick(&["--backend", "cpu,cpu"]);
    assert_eq!(code, 0, "{err}");
    let two: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(two["backend"], "cpu,cpu");
    assert!(two["eval_examples_per_s"].as_f64().unwrap() > 0.0, "{out}");
    // Micro-batches: a count, or the fewest that fit (one, with the CPU's memory).
    let micro = |m: &str| quick(&["--micro-batches", m]);
    for (m, want) in [("4", 4), ("auto", 1)] {
        let (code, out, err) = micro(m);
        assert_eq!(code, 0, "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["micro_batches"], want, "--micro-batches {m}: {out}");
    }
    let (code, _, err) = micro("3");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("3 micro-batches do not divide the batch of 8"),
        "{err}"
    );
    let (code, _, err) = micro("some");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--micro-batches"), "{err}");
}
