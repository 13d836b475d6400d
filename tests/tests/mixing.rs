//! Mixing: every schedule with every target and every halting policy trains on a
//! tiny generated task and its loss falls; illegal combinations are config
//! errors. Also the forward-pass accounting of the paper (TRM 336, DIS 18).

use recursa_core::experiment::ExperimentConfig;
use recursa_core::train::data::sampled_batches;
use recursa_core::train::trainer::Trainer;
use recursa_plugins as _;
use recursa_tests::repo_root;
use recursa_tests::tiny_experiment as experiment;

const SCHEDULES: &[&str] = &[
    "name = \"trm\"\nh_cycles = 2\nl_cycles = 1",
    "name = \"hrm\"\nh_cycles = 2\nl_cycles = 1",
    "name = \"dis\"\nh_cycles = 1\nl_cycles = 2",
    "name = \"direct\"",
];
const TARGETS: &[&str] = &[
    "name = \"final-answer\"",
    "name = \"dis-linear-path\"\nsteps = 3",
    "name = \"dis-corrupt\"\nsteps = 3\ncorruption = \"replace\"\nreplace_tokens = [1, 5]\nstep_weights = true",
];
const HALTING: &[&str] = &[
    "name = \"act-halt\"\nmax_steps = 3\nexploration = 0.5",
    "name = \"act-q\"\nmax_steps = 3\nexploration = 0.5",
    "name = \"fixed\"\nsteps = 3",
];

#[test]
fn every_legal_combination_trains_and_its_loss_falls() {
    for schedule in SCHEDULES {
        for target in TARGETS {
            for halting in HALTING {
                let text = experiment(
                    schedule,
                    target,
                    halting,
                    "h_layers = 1\nstep_embeddings = 5",
                );
                let what = format!(
                    "{} | {} | {}",
                    schedule.lines().next().unwrap(),
                    target.lines().next().unwrap(),
                    halting.lines().next().unwrap()
                );
                train_60(&text, &what);
            }
        }
    }
}

/// Trains `text` for 60 steps and checks that the loss fell: six steps are two
/// episodes of three, so like is compared with like (the per-step targets and
/// weights of DIS differ along an episode).
fn train_60(text: &str, what: &str) -> Trainer {
    let device = recursa_backends::device("cpu").unwrap();
    let e = ExperimentConfig::from_toml(text, "mix.toml").unwrap();
    let (train, _) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    let batch = e.train.as_ref().unwrap().global_batch_size;
    let batches = sampled_batches(&train, batch, e.seed).unwrap();
    let mut t = Trainer::new(&e, &device).unwrap();
    let losses: Vec<f64> = batches
        .take(60)
        .map(|b| t.train_step(&b.unwrap()).unwrap().lm_loss)
        .collect();
    let (first, last) = (
        losses[..6].iter().sum::<f64>(),
        losses[54..].iter().sum::<f64>(),
    );
    assert!(losses.iter().all(|l| l.is_finite()), "{what}: {losses:?}");
    assert!(last < 0.9 * first, "{what}: loss did not fall: {losses:?}");
    t
}

#[test]
fn every_post_trm_option_trains_with_trm_and_dis() {
    // (schedule, target, halting) of TRM and of DIS, then each later method's option
    // on the schedule, the target or the network (cgar.rs, trm.rs, layers.rs).
    // The gradient boundary moved from TRM's last cycle of 2 calls (of 4) and DIS's 3
    // (of 3): TRM with one z update more, DIS with one less.
    let bases = [
        (SCHEDULES[0], TARGETS[0], HALTING[0], "grad_calls = 3"),
        (SCHEDULES[2], TARGETS[1], HALTING[2], "grad_calls = 2"),
    ];
    for (schedule, target, halting, truncation) in bases {
        let options: [(&str, &str, &str); 4] = [
            // CGAR's depth curriculum: (1, 1) for the first half of training.
            (
                "curriculum = [{ until = 0.5, h_cycles = 1, l_cycles = 1 }]",
                "",
                "",
            ),
            // URM's truncated backpropagation through loops.
            (truncation, "", ""),
            // CGAR's step weights.
            ("", "step_decay = 0.7", ""),
            // URM's ConvSwiGLU.
            ("", "", "mlp_kind = \"conv-swiglu\""),
        ];
        for (s, t, n) in options {
            let text = experiment(
                &format!("{schedule}\n{s}"),
                &format!("{target}\n{t}"),
                halting,
                &format!("h_layers = 1\nstep_embeddings = 5\n{n}"),
            );
            let what = format!("{} + {s}{t}{n}", schedule.lines().next().unwrap());
            let mut trainer = train_60(&text, &what);
            // PTRM: evaluation with noisy trajectories works on what was trained.
            let e = ExperimentConfig::from_toml(&text, "mix.toml").unwrap();
            let (_, test) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
            trainer.eval_trajectories = Some(recursa_core::train::trajectories::Trajectories {
                count: 3,
                latent_noise: 0.1,
                seed: 1,
            });
            let r = trainer.evaluate(&test, 8).unwrap();
            assert!(r.accuracy.is_finite() && r.examples == 20, "{what}: {r:?}");
        }
    }
}

#[test]
fn illegal_combinations_are_config_errors() {
    let cases = [
        (SCHEDULES[1], "", "h_layers"), // hrm without an H level
        (SCHEDULES[3], "", "h_layers"), // direct without an H level
        (SCHEDULES[2], "h_layers = 1", "step_embeddings"), // dis without a step embedding
    ];
    for (schedule, extra, field) in cases {
        let text = experiment(schedule, TARGETS[0], HALTING[2], extra);
        // Refused at load, before any model is built.
        let err = ExperimentConfig::from_toml(&text, "mix.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("mix.toml: net.{field}")),
            "{schedule}: {err}"
        );
    }
}

#[test]
fn the_supervision_steps_of_dis_are_checked_together() {
    // halting: 3 steps; the target's path and the step embedding say otherwise.
    let dis = SCHEDULES[2];
    let path4 = "name = \"dis-linear-path\"\nsteps = 4";
    for (target, rows, expect) in [
        (
            path4,
            5,
            vec!["halting policy's 3 supervision steps", "target.steps = 4"],
        ),
        (TARGETS[1], 6, vec!["net.step_embeddings = 6 (N + 2)"]),
        (
            path4,
            6,
            vec!["target.steps = 4", "net.step_embeddings = 6 (N + 2)"],
        ),
    ] {
        let extra = format!("h_layers = 1\nstep_embeddings = {rows}");
        let text = experiment(dis, target, HALTING[2], &extra);
        // Refused at load, before any run directory is written.
        let err = ExperimentConfig::from_toml(&text, "mix.toml")
            .unwrap_err()
            .to_string();
        for part in expect {
            assert!(err.contains(part), "{err} should name {part}");
        }
        assert!(err.contains("must agree on N"), "{err}");
    }
    // Agreeing: 3 steps, a path of 3, 5 embedding rows.
    let ok = experiment(
        dis,
        TARGETS[1],
        HALTING[2],
        "h_layers = 1\nstep_embeddings = 5",
    );
    ExperimentConfig::from_toml(&ok, "mix.toml").unwrap();
    // TRM has no step embedding: only the target and the halting policy must agree.
    let trm = experiment(SCHEDULES[0], path4, HALTING[2], "");
    let err = ExperimentConfig::from_toml(&trm, "mix.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("target.steps = 4") && !err.contains("step_embeddings"),
        "{err}"
    );
}

#[test]
fn forward_pass_accounting_matches_the_papers() {
    let device = recursa_backends::device("cpu").unwrap();
    let calls = |config: &str| {
        let e =
            ExperimentConfig::load(&repo_root().join("experiments/configs").join(config)).unwrap();
        let m = e.build(&device).unwrap();
        (
            m.halting.max_steps() * m.schedule.calls_per_step().total(),
            m.net.num_trainable_params(),
        )
    };
    // TRM paper: 16 supervision steps x 3 cycles x (6 + 1) calls.
    assert_eq!(calls("trm-paper-recursion.toml").0, 336);
    // DIS: 6 steps x 1 cycle x (2 + 1) calls, with ~0.86M parameters ("0.8M").
    let (dis_calls, dis_params) = calls("dis-compact.toml");
    assert_eq!(dis_calls, 18);
    assert_eq!(dis_params, 860_674);
}
