//! Importing an official PyTorch TRM checkpoint (`torch.save` zip, `_orig_mod.model.`
//! keys). `tests/fixtures/torch/trm_forward_shared.pt` was written by
//! `tests/fixtures/torch/make_checkpoint.py` from the reference fixture's weights,
//! with the puzzle table cut to 7 rows.

use recursa::verify::compare::Fixture;
use recursa_core::model::ReasoningNet;
use recursa_core::weights::{import_torch, net_state_dict, read_f32};
use recursa_core::B;
use recursa_tests::fixture;
use safetensors::SafeTensors;

#[test]
fn a_torch_checkpoint_imports_with_the_puzzle_table_reset_to_its_mean() {
    let fx = Fixture::open(&fixture("trm_forward_shared.safetensors")).unwrap();
    let net_config = fx.config().unwrap().net_config(0, 0).unwrap();
    let device = recursa_backends::device("cpu").unwrap();
    let mut net = ReasoningNet::<B>::new(&net_config, 5, &device).unwrap();
    let report = import_torch(&mut net, &fixture("torch/trm_forward_shared.pt")).unwrap();
    assert_eq!(report.tensors, 15);
    assert_eq!(report.puzzle_table_reset, Some((vec![7, 64], vec![10, 64])));

    let st = SafeTensors::deserialize(&fx.bytes).unwrap();
    let state = net_state_dict(&net);
    for (name, got) in &state {
        let want = read_f32(&st, &fx.file, name).unwrap();
        if name == "inner.puzzle_emb.weights" {
            let mean: Vec<f32> = (0..64)
                .map(|j| ((0..7).map(|i| want.values[i * 64 + j] as f64).sum::<f64>() / 7.0) as f32)
                .collect();
            for row in got.values.chunks(64) {
                assert_eq!(row, &mean[..]);
            }
        } else {
            assert_eq!(got.values, want.values, "{name}");
        }
    }
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_named_in_the_error() {
    let fx = Fixture::open(&fixture("trm_forward_shared.safetensors")).unwrap();
    let net_config = fx.config().unwrap().net_config(0, 0).unwrap();
    let device = recursa_backends::device("cpu").unwrap();
    let mut net = ReasoningNet::<B>::new(&net_config, 5, &device).unwrap();
    let e = import_torch(&mut net, &fixture("README.md"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("README.md") && e.contains("PyTorch"), "{e}");
}
