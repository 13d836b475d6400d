//! The reference fixtures pass.

use recursa_data::{verify_arc_dataset, verify_arc_eval, Check};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn assert_all_ok(checks: &[Check]) {
    for c in checks {
        println!(
            "{:5} {} — {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    assert!(!checks.is_empty());
    assert!(
        checks.iter().all(|c| c.ok),
        "failing checks: {:#?}",
        checks.iter().filter(|c| !c.ok).collect::<Vec<_>>()
    );
}

#[test]
fn arc_dataset_aug0_matches_reference() {
    assert_all_ok(&verify_arc_dataset(&fixture("arc_dataset_shared_aug0.safetensors")).unwrap());
}

#[test]
fn arc_dataset_aug8_matches_reference() {
    assert_all_ok(&verify_arc_dataset(&fixture("arc_dataset_shared_aug8.safetensors")).unwrap());
}

#[test]
fn arc_eval_matches_reference() {
    let checks = verify_arc_eval(&fixture("arc_eval_shared.safetensors")).unwrap();
    assert_all_ok(&checks);
    let get = |n: &str| checks.iter().find(|c| c.name == n).unwrap().ok;
    assert!(get("default/pass@1") && get("default/pass@2") && get("default/pass@1000"));
}
