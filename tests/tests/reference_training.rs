//! Training parity with the reference: `stablemax_cases` and `trm_train_step_shared`
//! (losses, metrics, carry, every gradient, AdamATan2 and SignSGD on the stored
//! gradients, and all of train step 2), through the code of `recursa verify-reference`.

use recursa::verify;
use recursa::verify::compare::Tolerance;
use recursa_tests::fixture;

fn cpu() -> recursa_core::Device {
    recursa_backends::device("cpu").unwrap()
}

fn assert_all_pass(report: &verify::Report) {
    assert!(!report.comparisons.is_empty());
    for c in &report.comparisons {
        assert!(c.ok, "{} outside tolerance: {c:?}", c.tensor);
    }
}

#[test]
fn stablemax_cases_match_in_f64() {
    let report = verify::verify_file(&fixture("stablemax_cases.safetensors"), &cpu()).unwrap();
    assert_eq!(report.kind, "stablemax");
    // 5 cases x (loss, log_stablemax, grad, softmax loss)
    assert_eq!(report.comparisons.len(), 20);
    assert_all_pass(&report);
    let extreme = report
        .comparisons
        .iter()
        .find(|c| c.tensor == "extreme.stablemax_loss")
        .unwrap();
    assert!(matches!(extreme.tolerance, Tolerance::Close { rtol, .. } if rtol <= 1e-12));
}

#[test]
fn trm_train_steps_match_the_reference() {
    let report =
        verify::verify_file(&fixture("trm_train_step_shared.safetensors"), &cpu()).unwrap();
    assert_eq!(report.kind, "trm_train_step");
    assert_all_pass(&report);
    let names: Vec<&str> = report
        .comparisons
        .iter()
        .map(|c| c.tensor.as_str())
        .collect();
    for needle in [
        "loss.total",
        "metric.exact_accuracy",
        "carry.halted",
        "grad.inner.L_level.layers.0.self_attn.qkv_proj.weight",
        "grad.puzzle_emb.local_weights",
        "after.inner.lm_head.weight",
        "after.inner.puzzle_emb.weights",
        "after.inner.H_init",
        "step2.carry.current_data.inputs",
        "step2.grad.inner.q_head.bias",
        "step2.after.inner.embed_tokens.embedding_weight",
    ] {
        assert!(names.contains(&needle), "{needle} was not compared");
    }
    // Every gradient of every trainable tensor, at both steps (12 tensors + the puzzle rows).
    assert_eq!(names.iter().filter(|n| n.starts_with("grad.")).count(), 13);
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("step2.grad."))
            .count(),
        13
    );
}
