//! The training loop's parts: gradient accumulation, EMA, global-norm clipping,
//! the Q-learning halting loss, and that a tiny TRM learns a held-out task.

use burn::module::Param;
use burn::tensor::Tensor;
use recursa_core::experiment::ExperimentConfig;
use recursa_core::model::names::{visit_net, Layout, Role, WeightVisitor};
use recursa_core::model::Net;
use recursa_core::train::clip::clip_global_norm;
use recursa_core::train::data::{GroupSampler, HostBatch, PuzzleSplit};
use recursa_core::train::trainer::Trainer;
use recursa_core::weights::net_state_dict;
use recursa_core::B;
use recursa_plugins as _;
use recursa_tests::repo_root;

/// The quick-flip experiment with `overrides`, its training batches in sampler
/// order and its test split.
fn quick(overrides: &[&str]) -> (ExperimentConfig, Batches, PuzzleSplit) {
    let path = repo_root().join("experiments/configs/quick-flip.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let text = recursa::train::apply_overrides(&text, "quick-flip.toml", &overrides).unwrap();
    let e = ExperimentConfig::from_toml(&text, "quick-flip.toml").unwrap();
    let (train, test) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    let batch = e.train.as_ref().unwrap().global_batch_size;
    let sampler = GroupSampler::new(&train, batch, e.seed).unwrap();
    (e, Batches(sampler), test)
}

/// The training sampler, one global batch at a time.
struct Batches(GroupSampler);

impl Batches {
    fn next(&mut self) -> HostBatch {
        let b = self.0.next_batch();
        self.0.sets()[b.set]
            .gather(&b.rows, &b.puzzle_identifiers, b.rows.len())
            .unwrap()
    }
}

fn cpu() -> recursa_core::Device {
    recursa_backends::device("cpu").unwrap()
}

#[test]
fn micro_batches_give_the_loss_and_update_of_one_batch() {
    let (whole, mut train, _) = quick(&["train.global_batch_size=32", "train.lr=1e-4"]);
    let (split, _, _) = quick(&[
        "train.global_batch_size=32",
        "train.lr=1e-4",
        "train.micro_batches=4",
    ]);
    let mut a = Trainer::new(&whole, &cpu()).unwrap();
    let mut b = Trainer::new(&split, &cpu()).unwrap();
    let batch = train.next();
    let (ma, mb) = (a.train_step(&batch).unwrap(), b.train_step(&batch).unwrap());
    assert!(
        (ma.lm_loss - mb.lm_loss).abs() <= 1e-9 * ma.lm_loss.abs(),
        "{} vs {}",
        ma.lm_loss,
        mb.lm_loss
    );
    assert!((ma.q_halt_loss - mb.q_halt_loss).abs() <= 1e-5 * ma.q_halt_loss.abs().max(1e-3));
    // AdamATan2's first step is sign-like (fixture README, quirk 9): the summed
    // gradients agree, so every element moves the same way except where a gradient
    // is so close to 0 that summation order flips its sign.
    let (pa, pb) = (net_state_dict(&a.model.net), net_state_dict(&b.model.net));
    let (mut total, mut differ) = (0usize, 0usize);
    for (name, t) in &pa {
        for (x, y) in t.values.iter().zip(&pb[name].values) {
            total += 1;
            let d = (x - y).abs();
            assert!(d <= 2.0 * 1e-4 * 1.1 + 1e-6, "{name}: {x} vs {y}");
            differ += usize::from(d > 1e-6);
        }
    }
    assert!(differ * 1000 < total, "{differ} of {total} elements differ");
}

#[test]
fn ema_averages_the_dense_parameters_and_takes_the_buffers_as_trained() {
    let (e, mut train, _) = quick(&["train.ema=0.75"]);
    let mut t = Trainer::new(&e, &cpu()).unwrap();
    let before = net_state_dict(&t.model.net);
    t.train_step(&train.next()).unwrap();
    let after = net_state_dict(&t.model.net);
    let ema = net_state_dict(t.ema.as_ref().unwrap());
    // The step moved the puzzle table, so the buffers' check below can fail.
    let table = "inner.puzzle_emb.weights";
    assert_ne!(before[table].values, after[table].values);
    for (name, w) in &ema {
        // Buffers (the puzzle table, H_init, L_init) are the trained network's, as the
        // reference's `ema_copy` (a deep copy of the model with parameters overwritten).
        let buffer = name.ends_with("_init") || name.contains("puzzle_emb");
        for ((&e, &b), &a) in w
            .values
            .iter()
            .zip(&before[name].values)
            .zip(&after[name].values)
        {
            let want = if buffer { a } else { 0.75 * b + 0.25 * a };
            assert!((e - want).abs() <= 1e-6, "{name}: {e} vs {want}");
        }
    }
}

#[test]
fn clipping_scales_the_global_gradient_norm() {
    use burn::optim::GradientsParams;
    use recursa_core::step::StepContext;
    use recursa_core::train::loss::{act_loss, LossType};
    let (e, mut train, _) = quick(&[]);
    let device = cpu();
    let mut model = e.build(&device).unwrap();
    let batch = recursa_core::train::data::device_batch(&train.next(), &device);
    let (carry, out) = model.step(
        model.initial_carry(&batch),
        &batch,
        &mut StepContext::train(0),
    );
    let loss = act_loss(&out, &carry, LossType::StablemaxCrossEntropy, |sc| {
        model.halting.q_loss(&out, sc)
    });
    let mut grads = GradientsParams::from_grads(loss.total.backward(), &model.net);
    let norm = |net: &mut Net, g: &GradientsParams| {
        // Square root of the sum of squares over every dense parameter's gradient.
        struct SumSq<'a>(&'a GradientsParams, f64);
        impl WeightVisitor<B> for SumSq<'_> {
            fn visit<const D: usize>(
                &mut self,
                _: &str,
                _: Role,
                _: Layout,
                p: &mut Param<Tensor<B, D>>,
            ) {
                if let Some(g) = self.0.get::<recursa_core::Inner, D>(p.id) {
                    self.1 += g.square().sum().into_scalar() as f64;
                }
            }
        }
        let mut sum = SumSq(g, 0.0);
        visit_net(net, &mut sum);
        sum.1.sqrt()
    };
    let before = norm(&mut model.net, &grads);
    assert!(before > 0.0);
    clip_global_norm(&mut model.net, &mut grads, before / 4.0);
    let after = norm(&mut model.net, &grads);
    assert!(
        (after - before / 4.0).abs() < 1e-3 * before,
        "{before} -> {after}"
    );
    // A bound above the norm leaves the gradients alone.
    clip_global_norm(&mut model.net, &mut grads, before);
    assert!((norm(&mut model.net, &grads) - after).abs() < 1e-6 * before);
}

#[test]
fn act_q_trains_the_continue_logit() {
    let (e, mut train, _) = quick(&["halting.name=\"act-q\"", "train.global_batch_size=16"]);
    let batch = train.next();
    let mut t = Trainer::new(&e, &cpu()).unwrap();
    let m = t.train_step(&batch).unwrap();
    assert!(
        m.q_continue_loss > 0.0 && m.q_continue_loss.is_finite(),
        "{m:?}"
    );
    let (e, _, _) = quick(&["train.global_batch_size=16"]);
    let mut t = Trainer::new(&e, &cpu()).unwrap();
    assert_eq!(
        t.train_step(&batch).unwrap().q_continue_loss,
        0.0,
        "act-halt has no continue loss"
    );
}

#[test]
fn a_tiny_trm_learns_to_flip_unseen_grids() {
    // The README's quick experiment, shortened: learning, not wall time, is checked.
    let (e, mut train, test) = quick(&[]);
    let mut t = Trainer::new(&e, &cpu()).unwrap();
    let steps = e.train.as_ref().unwrap().steps;
    let first = t.evaluate(&test, 256).unwrap();
    for _ in 0..steps {
        t.train_step(&train.next()).unwrap();
    }
    let last = t.evaluate(&test, 256).unwrap();
    assert!(first.exact_accuracy < 0.05, "{first:?}");
    assert!(
        last.exact_accuracy > 0.95,
        "held-out exact accuracy {:.4} after {steps} steps",
        last.exact_accuracy
    );
}

/// Two trainings with one seed on `cpu` (burn-flex), in this test process (the
/// system allocator, not the binary's mimalloc), are equal bit for bit: losses at
/// every step and every weight after it.
#[test]
fn two_cpu_trainings_with_one_seed_are_bitwise_equal_under_the_system_allocator() {
    let run = || {
        let (e, mut train, _) = quick(&["train.global_batch_size=32"]);
        let mut t = Trainer::new(&e, &cpu()).unwrap();
        let losses: Vec<f64> = (0..6)
            .map(|_| t.train_step(&train.next()).unwrap().lm_loss)
            .collect();
        let mut weights: Vec<(String, Vec<f32>)> = net_state_dict(&t.model.net)
            .into_iter()
            .map(|(name, w)| (name, w.values))
            .collect();
        weights.sort_by(|x, y| x.0.cmp(&y.0));
        (losses, weights)
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0, b.0, "losses differ");
    assert!(a.1 == b.1, "weights differ");
}
