//! Verification checks can fail, the evaluator's quirk switch works, and builds are
//! independent of the thread count.

use recursa_data::arc::{build_arc, ArcBuildOptions};
use recursa_data::arc_eval::{ArcEvalBatch, ArcEvalOptions, ArcEvaluator, ExactAccuracy};
use recursa_data::grid::encode_grid;
use recursa_data::grid::Grid;
use recursa_data::{verify_arc_dataset, verify_arc_eval};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Copies a fixture (and its sidecar) into `dir`, with `edit` applied to one I32 tensor.
fn corrupted_copy(dir: &Path, stem: &str, tensor: &str, edit: impl Fn(&mut Vec<i32>)) -> PathBuf {
    let src = fixture(&format!("{stem}.safetensors"));
    let bytes = std::fs::read(&src).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for t in owned.iter_mut().filter(|t| t.0 == tensor) {
        let mut v: Vec<i32> =
            t.3.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        edit(&mut v);
        t.3 = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    let views: HashMap<String, TensorView> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = dir.join(format!("{stem}.safetensors"));
    let data = safetensors::serialize(&views, meta.metadata()).unwrap();
    std::fs::write(&out, data).unwrap();
    std::fs::copy(
        fixture(&format!("{stem}.json")),
        dir.join(format!("{stem}.json")),
    )
    .unwrap();
    out
}

#[test]
fn corrupted_dataset_fixture_fails() {
    let dir = tempfile::tempdir().unwrap();
    // One token of one train row changed.
    let p = corrupted_copy(dir.path(), "arc_dataset_shared_aug8", "train.inputs", |v| {
        v[5 * 900 + 3] ^= 1
    });
    let checks = verify_arc_dataset(&p).unwrap();
    let failing: Vec<_> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        failing,
        vec!["train/reference rows regenerated from their names"],
        "{checks:#?}"
    );

    // A test label changed.
    let p = corrupted_copy(dir.path(), "arc_dataset_shared_aug0", "test.labels", |v| {
        v[1] = 11
    });
    let checks = verify_arc_dataset(&p).unwrap();
    assert!(
        checks.iter().any(|c| !c.ok && c.name.starts_with("test/")),
        "{checks:#?}"
    );

    // Structure: a puzzle moved into another group.
    let p = corrupted_copy(
        dir.path(),
        "arc_dataset_shared_aug8",
        "train.group_indices",
        |v| v[1] += 1,
    );
    let checks = verify_arc_dataset(&p).unwrap();
    assert!(
        checks.iter().any(|c| !c.ok && c.name == "train/structure"),
        "{checks:#?}"
    );
}

#[test]
fn corrupted_eval_fixture_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Replace the prediction of row 0 (a correct answer) with noise.
    let p = corrupted_copy(dir.path(), "arc_eval_shared", "batch0.preds", |v| {
        for x in &mut v[..900] {
            *x = 5;
        }
    });
    let checks = verify_arc_eval(&p).unwrap();
    assert!(
        checks
            .iter()
            .any(|c| !c.ok && c.name == "default/submission.json"),
        "{checks:#?}"
    );
    assert!(
        checks
            .iter()
            .any(|c| !c.ok && c.name == "default/vote tables"),
        "{checks:#?}"
    );
}

/// A tiny evaluator: one task "t" with one test pair, identifiers [blank, t, t|||t4|||...].
fn tiny_evaluator(quirks: bool) -> (ArcEvaluator, Grid, Grid) {
    let input = Grid::new(1, 2, vec![1, 2]).unwrap();
    let output = Grid::new(1, 2, vec![3, 4]).unwrap();
    let ids = br#"["<blank>", "t", "t|||t4|||0123456789"]"#;
    let tp = br#"{"t": {"train": [], "test": [{"input": [[1, 2]], "output": [[3, 4]]}]}}"#;
    let opts = ArcEvalOptions {
        reference_quirks: quirks,
        ..ArcEvalOptions::default()
    };
    let ev = ArcEvaluator::from_json(ids, Path::new("ids.json"), tp, Path::new("tp.json"), opts)
        .unwrap();
    (ev, input, output)
}

fn toks(g: &Grid) -> Vec<i32> {
    encode_grid(g, 0, 0).into_iter().map(i32::from).collect()
}

#[test]
fn blank_rows_keep_their_q_unless_quirks() {
    // Rows: [blank, wrong answer A, correct answer], q = [10, -10, 0]. Without quirks the
    // wrong answer has sigmoid(-10) and the correct one sigmoid(0) = 0.5, so the correct one
    // ranks first. With the reference quirk the blank row's q (10) shifts onto the wrong
    // answer, which then ranks first.
    for quirks in [false, true] {
        let (mut ev, input, output) = tiny_evaluator(quirks);
        let wrong = Grid::new(1, 2, vec![7, 7]).unwrap();
        let inputs: Vec<i32> = [vec![0; 900], toks(&input), toks(&input)].concat();
        let preds: Vec<i32> = [vec![0; 900], toks(&wrong), toks(&output)].concat();
        ev.update_batch(&ArcEvalBatch {
            inputs: &inputs,
            puzzle_identifiers: &[0, 1, 1],
            preds: &preds,
            q_halt_logits: &[10.0, -10.0, 0.0],
        })
        .unwrap();
        let r = ev.result();
        let pass1 = r.pass_at[0].1;
        assert_eq!(pass1, if quirks { 0.0 } else { 1.0 }, "quirks {quirks}");
    }
}

#[test]
fn each_evaluation_starts_fresh_unless_quirks() {
    for quirks in [false, true] {
        let (mut ev, input, _) = tiny_evaluator(quirks);
        // Evaluation 1: three votes for a wrong answer.
        let wrong = Grid::new(1, 1, vec![9]).unwrap();
        let three = |g: &Grid| [toks(g), toks(g), toks(g)].concat();
        ev.begin_eval();
        ev.update_batch(&ArcEvalBatch {
            inputs: &three(&input),
            puzzle_identifiers: &[1, 1, 1],
            preds: &three(&wrong),
            q_halt_logits: &[0.0; 3],
        })
        .unwrap();
        assert_eq!(ev.result().pass_at[0].1, 0.0);
        // Evaluation 2: one vote for the right answer, through the augmented puzzle
        // (t4 = mirror left-right, so the answer is written mirrored).
        ev.begin_eval();
        let mirrored_in = Grid::new(1, 2, vec![2, 1]).unwrap();
        let mirrored_out = Grid::new(1, 2, vec![4, 3]).unwrap();
        ev.update_batch(&ArcEvalBatch {
            inputs: &toks(&mirrored_in),
            puzzle_identifiers: &[2],
            preds: &toks(&mirrored_out),
            q_halt_logits: &[0.0],
        })
        .unwrap();
        let r = ev.result();
        assert_eq!(
            r.pass_at[0].1,
            if quirks { 0.0 } else { 1.0 },
            "quirks {quirks}"
        );
        assert_eq!(r.pass_at[1].1, 1.0);
        // Submission: attempt_1 is the top answer, attempt_2 pads (fresh) or the runner-up.
        let sub = String::from_utf8(r.submission_json()).unwrap();
        if quirks {
            assert_eq!(
                sub,
                r#"{"t": [{"attempt_1": [[9]], "attempt_2": [[3, 4]]}]}"#
            );
        } else {
            assert_eq!(
                sub,
                r#"{"t": [{"attempt_1": [[3, 4]], "attempt_2": [[3, 4]]}]}"#
            );
        }
    }
}

#[test]
fn test_input_without_predictions_counts_as_wrong() {
    let (ev, _, _) = tiny_evaluator(false);
    let r = ev.result();
    assert_eq!(r.pass_at[0].1, 0.0);
    assert_eq!(
        String::from_utf8(r.submission_json()).unwrap(),
        r#"{"t": []}"#
    );
}

#[test]
fn bad_batches_are_errors() {
    let (mut ev, input, _) = tiny_evaluator(false);
    let e = ev
        .update_batch(&ArcEvalBatch {
            inputs: &toks(&input),
            puzzle_identifiers: &[7],
            preds: &toks(&input),
            q_halt_logits: &[0.0],
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("identifier 7"), "{e}");
    let e = ev
        .update_batch(&ArcEvalBatch {
            inputs: &toks(&input),
            puzzle_identifiers: &[1],
            preds: &[0; 10],
            q_halt_logits: &[0.0],
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("preds"), "{e}");
}

#[test]
fn exact_accuracy_counts_rows_with_valid_labels() {
    let mut acc = ExactAccuracy::new(-100);
    let labels = [1, 2, -100, /**/ 3, 4, 5, /**/ -100, -100, -100];
    let preds = [1, 2, 9, /**/ 3, 0, 5, /**/ 7, 7, 7];
    acc.update(&preds, &labels, 3).unwrap();
    assert_eq!(acc.counts(), (1, 2));
    assert_eq!(acc.result(), Some(0.5));
    assert!(acc.update(&preds, &labels[..8], 3).is_err());
}

#[test]
fn build_is_independent_of_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("raw/arc/arc-agi");
    let mut outs = Vec::new();
    for threads in [1, 2, 3] {
        let mut opts = ArcBuildOptions::new(&src, dir.path().join(format!("out{threads}")));
        opts.subsets = vec!["concept".into(), "evaluation2".into()];
        opts.test_set = Some("evaluation2".into());
        opts.num_aug = 3;
        opts.threads = Some(threads);
        let s = build_arc(&opts).unwrap();
        assert_eq!((s.train.groups, s.test.groups), (280, 120));
        outs.push(opts.out.clone());
    }
    for f in [
        "train/all__inputs.npy",
        "train/all__labels.npy",
        "train/all__puzzle_identifiers.npy",
        "test/all__inputs.npy",
        "identifiers.json",
        "test_puzzles.json",
        "train/dataset.json",
    ] {
        let a = std::fs::read(outs[0].join(f)).unwrap();
        for o in &outs[1..] {
            assert!(a == std::fs::read(o.join(f)).unwrap(), "{f} differs");
        }
    }
}
