//! Data-parallel training on two CPU devices against one device with the same
//! global batch.
//!
//! Two devices with one micro-batch each compute exactly what one device computes
//! with two micro-batches: the same rows per micro-batch, the same exploration
//! streams, gradients summed in the same order (two addends), puzzle rows
//! gathered in rank order. So losses and every weight, the puzzle table
//! included, must agree to the bit; and against one device with one batch of
//! all the rows, to rounding.

use recursa_core::train::data::{sampled_batches, HostBatch};
use recursa_core::train::trainer::Trainer;
use recursa_core::weights::net_state_dict;
use recursa_plugins as _;
use recursa_tests::repo_root;

const STEPS: usize = 4;

fn quick(micro_batches: usize) -> String {
    let path = repo_root().join("experiments/configs/quick-flip.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let set = [
        "train.global_batch_size=32".to_string(),
        format!("train.micro_batches={micro_batches}"),
    ];
    recursa::train::apply_overrides(&text, "quick-flip.toml", &set).unwrap()
}

fn batches(text: &str) -> Vec<HostBatch> {
    let e = recursa_core::experiment::ExperimentConfig::from_toml(text, "q.toml").unwrap();
    let (train, _) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    sampled_batches(&train, 32, e.seed)
        .unwrap()
        .take(STEPS)
        .map(Result::unwrap)
        .collect()
}

/// Losses of `STEPS` steps and the weights after them.
fn run(text: &str, devices: &[&str]) -> (Vec<f64>, Vec<(String, Vec<f32>)>) {
    let devices: Vec<_> = devices
        .iter()
        .map(|d| recursa_backends::device(d).unwrap())
        .collect();
    let mut t = Trainer::new_data_parallel(text, "q.toml", &devices).unwrap();
    assert_eq!(t.world(), devices.len());
    let losses = batches(text)
        .iter()
        .map(|b| t.train_step(b).unwrap().lm_loss)
        .collect();
    let mut weights: Vec<_> = net_state_dict(&t.model.net)
        .into_iter()
        .map(|(k, v)| (k, v.values))
        .collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    (losses, weights)
}

#[test]
fn two_cpu_devices_train_like_one_device_with_the_same_global_batch() {
    let _one_group = GROUP.lock().unwrap();
    let (one_losses, one_weights) = run(&quick(2), &["cpu"]);
    let (two_losses, two_weights) = run(&quick(1), &["cpu", "cpu"]);
    assert_eq!(
        one_losses, two_losses,
        "losses, 1 device x 2 micro-batches vs 2 devices"
    );
    assert!(one_weights.iter().any(|(k, _)| k.contains("puzzle_emb")));
    for ((name, a), (other, b)) in one_weights.iter().zip(&two_weights) {
        assert_eq!(name, other);
        assert!(a == b, "{name} differs between one and two devices");
    }

    // One device, one batch of all rows: the same step up to summation order.
    let (whole_losses, _) = run(&quick(1), &["cpu"]);
    for (a, b) in whole_losses.iter().zip(&two_losses) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "{a} vs {b}");
    }
}

#[test]
fn a_global_batch_that_does_not_split_over_the_devices_is_refused() {
    let text = quick(1).replace("global_batch_size = 32", "global_batch_size = 33");
    let devices = vec![recursa_backends::device("cpu").unwrap(); 2];
    let e = Trainer::new_data_parallel(&text, "q.toml", &devices)
        .err()
        .expect("33 rows do not split over 2 devices")
        .to_string();
    assert!(
        e.contains("global_batch_size") && e.contains("2 devices"),
        "{e}"
    );
}

#[test]
fn a_data_parallel_run_resumes_exactly() {
    let text = quick(1);
    let devices = vec![recursa_backends::device("cpu").unwrap(); 2];
    let batches = batches(&text);
    let steps = |t: &mut Trainer, range: std::ops::Range<usize>| -> Vec<f64> {
        batches[range]
            .iter()
            .map(|b| t.train_step(b).unwrap().lm_loss)
            .collect()
    };
    let dir = std::env::temp_dir().join(format!("recursa-dp-resume-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    // Collective groups are per process: one run at a time.
    let (straight, resumed) = {
        let _one_group = GROUP.lock().unwrap();
        let mut a = Trainer::new_data_parallel(&text, "q.toml", &devices).unwrap();
        let straight = steps(&mut a, 0..STEPS);
        drop(a);
        let mut b = Trainer::new_data_parallel(&text, "q.toml", &devices).unwrap();
        let mut resumed = steps(&mut b, 0..2);
        b.save(&dir, &text).unwrap();
        drop(b);
        let mut c = Trainer::new_data_parallel(&text, "q.toml", &devices).unwrap();
        c.resume(&dir).unwrap();
        assert_eq!(c.step, 2);
        resumed.extend(steps(&mut c, 2..STEPS));
        (straight, resumed)
    };
    assert_eq!(straight, resumed);
    // Both ranks' carries are in the checkpoint.
    let latest = recursa_core::train::checkpoint::latest(&dir).unwrap();
    assert!(latest.join("carry-0.safetensors").exists());
    assert!(latest.join("carry-1.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Tests that build a data-parallel group take this first.
static GROUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn two_cpu_devices_evaluate_like_one_device() {
    let text = quick(1);
    let e = recursa_core::experiment::ExperimentConfig::from_toml(&text, "q.toml").unwrap();
    let (train, test) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    let eval = |devices: &[&str]| {
        let devices: Vec<_> = devices
            .iter()
            .map(|d| recursa_backends::device(d).unwrap())
            .collect();
        let mut t = Trainer::new_data_parallel(&text, "q.toml", &devices).unwrap();
        // A trained model (two steps), so that predictions are not all alike.
        for b in sampled_batches(&train, 32, e.seed).unwrap().take(2) {
            t.train_step(&b.unwrap()).unwrap();
        }
        let mut preds = Vec::new();
        let r = t
            .evaluate_with(&test, 24, |host, p, q| {
                assert_eq!(p.len(), host.rows * host.seq_len);
                assert_eq!(q.len(), host.rows);
                preds.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
        (r, preds)
    };
    let _one_group = GROUP.lock().unwrap();
    let (one, one_preds) = eval(&["cpu"]);
    let (two, two_preds) = eval(&["cpu", "cpu"]);
    // Each batch's rows are cut over the two devices: the predictions and counts are
    // the same, the token accuracy (a float32 sum in another order) to rounding.
    assert_eq!(one_preds, two_preds);
    assert_eq!(one.examples, two.examples);
    assert_eq!(one.exact_accuracy, two.exact_accuracy);
    assert!((one.accuracy - two.accuracy).abs() <= 1e-6 * one.accuracy.abs());
}
