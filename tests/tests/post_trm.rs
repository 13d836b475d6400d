//! The mechanics of the methods after TRM (CGAR's depth curriculum and step weights,
//! URM's truncated backpropagation and ConvSwiGLU, PTRM's noisy trajectories): each
//! does what its paper says on a tiny network, and is the plain method when off.
//! Training with each of them is in `mixing.rs`.

use burn::tensor::{Int, Tensor};
use recursa_core::experiment::ExperimentConfig;
use recursa_core::step::{LoopedModel, StepContext};
use recursa_core::train::data::{device_batch, sampled_batches, HostBatch};
use recursa_core::train::loss::{act_loss, LossType};
use recursa_core::train::trainer::Trainer;
use recursa_core::train::trajectories::Trajectories;
use recursa_core::{Device, B};
use recursa_plugins as _;

/// The mixing tests' tiny experiment with `fixed` halting at 3 steps (DIS's N).
fn experiment_text(schedule: &str, target: &str, net_extra: &str) -> String {
    let net = format!("step_embeddings = 5\n{net_extra}");
    recursa_tests::tiny_experiment(schedule, target, "name = \"fixed\"\nsteps = 3", &net)
}

fn experiment(schedule: &str, target: &str, net_extra: &str) -> ExperimentConfig {
    ExperimentConfig::from_toml(
        &experiment_text(schedule, target, net_extra),
        "post-trm.toml",
    )
    .unwrap()
}

fn cpu() -> Device {
    recursa_backends::device("cpu").unwrap()
}

fn host_batch(e: &ExperimentConfig) -> HostBatch {
    let (train, _) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    sampled_batches(&train, 8, e.seed)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// Logits of one training step of `model` at `progress`.
fn logits(model: &LoopedModel, host: &HostBatch, progress: Option<f64>) -> Vec<f32> {
    let device = model.net.h_init.val().device();
    let batch = device_batch(host, &device);
    let mut ctx = StepContext::train(0);
    ctx.progress = progress;
    let (_, out) = model.step(model.initial_carry(&batch), &batch, &mut ctx);
    out.logits.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn truncated_backpropagation_moves_the_gradient_boundary_and_not_the_forward() {
    let device = cpu();
    let trm = |extra: &str| {
        experiment(
            &format!("name = \"trm\"\nh_cycles = 2\nl_cycles = 2\n{extra}"),
            "name = \"final-answer\"",
            "",
        )
    };
    let host = host_batch(&trm(""));
    // Does any gradient reach the token embedding (x enters only the z updates)?
    let x_gets_gradient = |e: &ExperimentConfig| {
        let model = e.build(&device).unwrap();
        let batch = device_batch(&host, &device);
        let (_, out) = model.step(
            model.initial_carry(&batch),
            &batch,
            &mut StepContext::train(0),
        );
        let grads = out.logits.clone().sum().backward();
        let g = model.net.embed_tokens.weight.grad(&grads);
        let nonzero = g.is_some_and(|g| g.abs().sum().into_scalar() > 0.0);
        (
            nonzero,
            out.logits
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap(),
        )
    };
    let (default_grad, default_logits) = x_gets_gradient(&trm(""));
    // Only the last call, y = net(y, z), with gradient: x is outside the graph.
    let (last_grad, last_logits) = x_gets_gradient(&trm("grad_calls = 1"));
    // All 2 x (2 + 1) calls with gradient.
    let (all_grad, all_logits) = x_gets_gradient(&trm("grad_calls = 6"));
    assert!(default_grad && all_grad && !last_grad);
    // The same forward: calls run with or without autodiff differ only in rounding
    // (the two paths' kernels accumulate in different orders; seen: 4e-7).
    for other in [&last_logits, &all_logits] {
        let worst = default_logits
            .iter()
            .zip(other)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "forward moved by {worst}");
    }
    let calls = |e: &ExperimentConfig| e.build(&cpu()).unwrap().schedule.calls_per_step();
    assert_eq!(
        (calls(&trm("")).with_grad, calls(&trm("")).without_grad),
        (3, 3)
    );
    let c = calls(&trm("grad_calls = 5"));
    assert_eq!((c.with_grad, c.without_grad), (5, 1));
    // More calls than the step makes is refused, naming the field.
    let text = experiment_text(
        "name = \"trm\"\nh_cycles = 2\nl_cycles = 2\ngrad_calls = 7",
        "name = \"final-answer\"",
        "",
    );
    let err = ExperimentConfig::from_toml(&text, "post-trm.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("schedule.grad_calls"), "{err}");
}

#[test]
fn a_depth_curriculum_runs_its_stage_in_training_and_the_full_depth_in_evaluation() {
    let stages = "curriculum = [{ until = 0.3, h_cycles = 1, l_cycles = 1 }, { until = 0.6, h_cycles = 2, l_cycles = 1 }]";
    for (name, target) in [
        ("trm", "name = \"final-answer\""),
        ("dis", "name = \"dis-linear-path\"\nsteps = 3"),
    ] {
        let schedule = |t: usize, n: usize, extra: &str| {
            format!("name = \"{name}\"\nh_cycles = {t}\nl_cycles = {n}\n{extra}")
        };
        let curriculum = experiment(&schedule(2, 2, stages), target, "")
            .build(&cpu())
            .unwrap();
        let fixed = |t, n| {
            experiment(&schedule(t, n, ""), target, "")
                .build(&cpu())
                .unwrap()
        };
        let host = host_batch(&experiment(&schedule(2, 2, ""), target, ""));
        // Same seed, same weights: a stage computes what a schedule of its depth does.
        assert_eq!(
            logits(&curriculum, &host, Some(0.0)),
            logits(&fixed(1, 1), &host, None)
        );
        assert_eq!(
            logits(&curriculum, &host, Some(0.45)),
            logits(&fixed(2, 1), &host, None)
        );
        assert_eq!(
            logits(&curriculum, &host, Some(0.6)),
            logits(&fixed(2, 2), &host, None)
        );
        assert_eq!(
            logits(&curriculum, &host, None),
            logits(&fixed(2, 2), &host, None)
        );
        assert_ne!(
            logits(&curriculum, &host, Some(0.0)),
            logits(&fixed(2, 2), &host, None)
        );
        let calls = |p| curriculum.calls_per_step_at(p).total();
        assert_eq!(
            (
                calls(Some(0.1)),
                calls(Some(0.5)),
                calls(Some(0.7)),
                calls(None)
            ),
            (2, 4, 6, 6)
        );
    }
    // Through the trainer: its first step (progress 0) runs the first stage.
    let first_loss = |schedule: &str| {
        let e = experiment(schedule, "name = \"final-answer\"", "");
        let mut t = Trainer::new(&e, &cpu()).unwrap();
        assert_eq!(t.progress(), 0.0);
        let loss = t.train_step(&host_batch(&e)).unwrap().lm_loss;
        // 60 steps in all: the next step is at 1/60.
        assert_eq!(t.progress(), 0.0);
        t.step += 1;
        assert!((t.progress() - 1.0 / 60.0).abs() < 1e-12);
        loss
    };
    let staged = first_loss(&format!(
        "name = \"trm\"\nh_cycles = 2\nl_cycles = 2\n{stages}"
    ));
    assert_eq!(
        staged,
        first_loss("name = \"trm\"\nh_cycles = 1\nl_cycles = 1")
    );
    assert_ne!(
        staged,
        first_loss("name = \"trm\"\nh_cycles = 2\nl_cycles = 2")
    );

    // A stage deeper than the full schedule is refused at load, by field.
    let text = experiment_text(
        "name = \"trm\"\nh_cycles = 2\nl_cycles = 2\ncurriculum = [{ until = 0.5, h_cycles = 3, l_cycles = 1 }]",
        "name = \"final-answer\"",
        "",
    );
    let err = ExperimentConfig::from_toml(&text, "post-trm.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("schedule.curriculum[0]"), "{err}");
}

#[test]
fn step_decay_weights_each_row_by_its_step() {
    let steps = Tensor::<B, 1, Int>::from_ints([1, 2, 3], &Default::default());
    for target in [
        "name = \"final-answer\"\nstep_decay = 0.7",
        "name = \"dis-linear-path\"\nsteps = 3\nstep_decay = 0.7",
    ] {
        let m = experiment("name = \"dis\"", target, "")
            .build(&cpu())
            .unwrap();
        let w: Vec<f32> = m
            .target
            .weight(&steps)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        for (w, want) in w.iter().zip([1.0, 0.7, 0.49]) {
            assert!((w - want).abs() < 1e-6, "{target}: {w} vs {want}");
        }
        let plain = experiment(
            "name = \"dis\"",
            target.split("\nstep_decay").next().unwrap(),
            "",
        );
        assert!(plain.build(&cpu()).unwrap().target.weight(&steps).is_none());
    }
    // Through a step and the loss: at step 2 every row's loss is halved by λ = 0.5.
    let lm_loss_at_step_2 = |target: &str| {
        let m = experiment("name = \"trm\"\nh_cycles = 1\nl_cycles = 1", target, "")
            .build(&cpu())
            .unwrap();
        let host = host_batch(&experiment(
            "name = \"trm\"\nh_cycles = 1\nl_cycles = 1",
            "name = \"final-answer\"",
            "",
        ));
        let batch = device_batch(&host, &cpu());
        let mut ctx = StepContext::train(0);
        let (carry, _) = m.step(m.initial_carry(&batch), &batch, &mut ctx);
        let (carry, out) = m.step(carry, &batch, &mut ctx);
        act_loss(&out, &carry, LossType::StablemaxCrossEntropy, |_| {
            (None, None)
        })
        .metrics
        .lm_loss
    };
    let plain = lm_loss_at_step_2("name = \"final-answer\"");
    let decayed = lm_loss_at_step_2("name = \"final-answer\"\nstep_decay = 0.5");
    assert!(plain > 0.0);
    assert!(
        (decayed - 0.5 * plain).abs() <= 1e-6 * plain,
        "{decayed} vs {plain}"
    );
}

#[test]
fn noisy_trajectories_are_the_plain_rollout_at_one_without_noise_and_fixed_by_their_seed() {
    let e = experiment(
        "name = \"trm\"\nh_cycles = 2\nl_cycles = 1",
        "name = \"final-answer\"",
        "",
    );
    let (_, test) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    let mut trainer = Trainer::new(&e, &cpu()).unwrap();
    // The reference initialises q_head to a constant (-5); a trained head varies.
    recursa_tests::randomize_zero_inits(&mut trainer.model.net, 9);
    let mut rollout = |t: Option<Trajectories>| {
        trainer.eval_trajectories = t;
        let mut q = Vec::new();
        let r = trainer
            .evaluate_with(&test, 5, |_, _, qs| {
                q.extend_from_slice(qs);
                Ok(())
            })
            .unwrap();
        (r.accuracy, r.net_calls_per_example, q)
    };
    let plain = rollout(None);
    let one = |noise| {
        Some(Trajectories {
            count: 1,
            latent_noise: noise,
            seed: 0,
        })
    };
    assert_eq!(rollout(one(0.0)), plain);
    let four = |seed| {
        Some(Trajectories {
            count: 4,
            latent_noise: 0.5,
            seed,
        })
    };
    let (a, b, c) = (rollout(four(1)), rollout(four(1)), rollout(four(2)));
    assert_eq!(a, b);
    assert_ne!(a.2, c.2);
    assert_ne!(a.2, plain.2);
    assert_eq!(a.1, 4 * plain.1);
    // One answer (and one q) per example, not per trajectory.
    assert_eq!(a.2.len(), plain.2.len());

    // An experiment's `[eval]` sets them for every evaluation; typos and nonsense are
    // refused by field.
    let with = |eval: &str| {
        let text = experiment_text(
            "name = \"trm\"\nh_cycles = 2\nl_cycles = 1",
            "name = \"final-answer\"",
            "",
        );
        ExperimentConfig::from_toml(&format!("{text}\n[eval]\n{eval}\n"), "post-trm.toml")
    };
    let e = with("trajectories = 4\nlatent_noise = 0.5\nnoise_seed = 1").unwrap();
    let trainer = Trainer::new(&e, &cpu()).unwrap();
    assert_eq!(trainer.eval_trajectories, four(1));
    let err = with("trajectories = 0").unwrap_err().to_string();
    assert!(err.contains("eval.trajectories"), "{err}");
    let err = with("noise = 0.1").unwrap_err().to_string();
    assert!(
        err.contains("unknown field `noise`") && err.contains("eval"),
        "{err}"
    );
}
