//! TRM forward parity with the reference fixture `trm_forward_shared` (3 eval ACT steps).

use std::collections::HashMap;

use recursa::verify;
use recursa::verify::compare::{self, Fixture, Tolerance};
use recursa_core::reference::ReferenceConfig;
use recursa_core::weights::{read_f32, HostTensor};
use recursa_tests::{fixture, naive};
use safetensors::SafeTensors;

fn cpu() -> recursa_core::Device {
    recursa_backends::device("cpu").expect("cpu is always compiled in")
}

#[test]
fn trm_forward_matches_the_reference_on_cpu() {
    let report = verify::verify_file(&fixture("trm_forward_shared.safetensors"), &cpu()).unwrap();
    assert_eq!(report.kind, "trm_forward");
    // 3 steps x (logits, q_halt, q_continue, z_H, z_L, halted, steps)
    assert_eq!(report.comparisons.len(), 21);
    for c in &report.comparisons {
        assert!(c.ok, "{} outside tolerance: {c:?}", c.tensor);
        if c.tensor.ends_with("halted") || c.tensor.ends_with("steps") {
            assert!(
                matches!(c.tolerance, Tolerance::Exact),
                "{} must be exact",
                c.tensor
            );
        }
    }
    assert!(report.passed());
}

#[test]
fn a_wrong_schedule_fails_verification() {
    // The comparison must be able to fail: the same weights with n = 3 instead of 2.
    let fx = Fixture::open(&fixture("trm_forward_shared.safetensors")).unwrap();
    let model = compare::model_from_reference(&fx, &cpu()).unwrap();
    let wrong = recursa_core::step::LoopedModel::new(
        model.net,
        Box::new(recursa_plugins::Trm::new(2, 3)),
        model.target,
        model.halting,
    )
    .unwrap();
    let st = SafeTensors::deserialize(&fx.bytes).unwrap();
    let batch = compare::read_batch(&st, &fx.file, "", &cpu()).unwrap();
    let mut ctx = recursa_core::step::StepContext::eval();
    let (_, out) = wrong.step(wrong.initial_carry(&batch), &batch, &mut ctx);
    let want = read_f32(&st, &fx.file, "step1.logits").unwrap();
    let got = out.logits.into_data().to_vec::<f32>().unwrap();
    let c = compare::compare_f32(
        "step1.logits",
        want.shape.clone(),
        &got,
        &want.values,
        1e-4,
        1e-4,
    );
    assert!(!c.ok && c.max_abs_err > 1e-2, "{c:?}");
}

#[test]
fn the_naive_yardstick_matches_the_reference_too() {
    // tests/src/naive.rs is the reference for configurations without fixtures;
    // here it earns that role on the configuration that has one.
    let fx = Fixture::open(&fixture("trm_forward_shared.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&fx.bytes).unwrap();
    let cfg: ReferenceConfig = fx.config().unwrap();
    let net = cfg.net_config(0, 0).unwrap();
    let weights: HashMap<String, HostTensor> = st
        .names()
        .into_iter()
        .filter(|n| n.starts_with("inner."))
        .map(|n| (n.clone(), read_f32(&st, &fx.file, n).unwrap()))
        .collect();
    let w = naive::Weights(weights);
    let (_, inputs) = compare::read_i32(&st, &fx.file, "batch.inputs").unwrap();
    let (_, ids) = compare::read_i32(&st, &fx.file, "batch.puzzle_identifiers").unwrap();
    let want = read_f32(&st, &fx.file, "step3.logits").unwrap();
    let want_q = read_f32(&st, &fx.file, "step3.q_halt_logits").unwrap();
    for b in 0..cfg.batch_size {
        let tokens = &inputs[b * cfg.seq_len..(b + 1) * cfg.seq_len];
        let x = naive::input_embeddings(tokens, ids[b], &w, &net);
        let (mut y, mut z) = naive::initial_latents(&w, &net);
        let mut out = None;
        for _ in 0..3 {
            let o = naive::trm_step(&y, &z, &x, &w, &net, cfg.H_cycles, cfg.L_cycles);
            (y, z) = (o.y.clone(), o.z.clone());
            out = Some(o);
        }
        let out = out.unwrap();
        let n = cfg.seq_len * cfg.vocab_size;
        for (i, (&g, &r)) in out
            .logits
            .v
            .iter()
            .zip(&want.values[b * n..(b + 1) * n])
            .enumerate()
        {
            assert!(
                (g - r as f64).abs() < 1e-4 + 1e-4 * (r as f64).abs(),
                "row {b} logit {i}: {g} vs {r}"
            );
        }
        assert!((out.q_halt - want_q.values[b] as f64).abs() < 5e-5);
    }
}
