//! Every compiled-in backend against the CPU default: a snapshot of a fixed small
//! model's forward outputs per backend, and agreement with the CPU on forward and
//! on one training step.
//!
//! Which backends run is decided by cargo features (`--features wgpu`, `cuda`,
//! `tch`); the device of each can be changed with `RECURSA_TEST_WGPU`
//! (default `wgpu`), `RECURSA_TEST_CUDA` (default `cuda`), `RECURSA_TEST_TCH`
//! (default `tch`). A compiled backend whose device is missing fails the test:
//! compiling it in is the request to check it. `RECURSA_TEST_BACKENDS=cpu,wgpu`
//! narrows the run to those names (CI compiles `cuda` without a GPU this way).

use recursa_core::experiment::ExperimentConfig;
use recursa_core::state::Batch;
use recursa_core::step::StepContext;
use recursa_core::train::data::HostBatch;
use recursa_core::train::trainer::Trainer;
use recursa_core::weights::net_state_dict;
use recursa_core::Device;
// Link the plugins: their inventory/typetag registrations live in that crate.
use recursa_plugins as _;

/// A small TRM with a puzzle prefix and RoPE: every layer kind of the ARC model.
const SMALL: &str = r#"
seed = 7
[net]
seq_len = 12
vocab_size = 6
num_puzzle_identifiers = 4
puzzle_emb_ndim = 32
puzzle_emb_len = 2
hidden_size = 32
num_heads = 4
l_layers = 2
[schedule]
name = "trm"
h_cycles = 2
l_cycles = 2
[target]
name = "final-answer"
[halting]
name = "act-halt"
max_steps = 3
exploration = 0.0
[train]
steps = 1
global_batch_size = 8
lr = 1e-3
lr_warmup_steps = 0
"#;

const ROWS: usize = 8;

/// The backends compiled into this test binary, by device spec.
fn compiled() -> Vec<String> {
    let env = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let mut specs = vec!["cpu".to_string()];
    if cfg!(feature = "wgpu") {
        specs.push(env("RECURSA_TEST_WGPU", "wgpu"));
    }
    if cfg!(feature = "cuda") {
        specs.push(env("RECURSA_TEST_CUDA", "cuda"));
    }
    if cfg!(feature = "tch") {
        specs.push(env("RECURSA_TEST_TCH", "tch"));
    }
    if let Ok(only) = std::env::var("RECURSA_TEST_BACKENDS") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        specs.retain(|s| s == "cpu" || wanted.contains(&s.split(':').next().unwrap_or(s)));
    }
    specs
}

fn device(spec: &str) -> Device {
    recursa_backends::device(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

fn experiment() -> ExperimentConfig {
    ExperimentConfig::from_toml(SMALL, "small.toml").unwrap()
}

/// Deterministic tokens, different in every row.
fn examples() -> HostBatch {
    let s = 12;
    let inputs: Vec<i32> = (0..ROWS * s)
        .map(|i| 1 + ((i * 7 + (i / s) * 3) % 5) as i32)
        .collect();
    let labels: Vec<i32> = inputs.iter().map(|t| 1 + (t % 5)).collect();
    HostBatch {
        rows: ROWS,
        seq_len: s,
        inputs,
        labels,
        puzzle_identifiers: (0..ROWS).map(|r| (r % 4) as i32).collect(),
        effective: ROWS,
    }
}

fn batch(device: &Device) -> Batch {
    recursa_core::train::data::device_batch(&examples(), device)
}

/// Two evaluation steps: the logits and halting logits after each.
struct Forward {
    logits: Vec<Vec<f32>>,
    q_halt: Vec<Vec<f32>>,
}

fn forward(spec: &str) -> Forward {
    let device = device(spec);
    let mut model = experiment().build(&device).unwrap();
    recursa_tests::randomize_zero_inits(&mut model.net, 11);
    let batch = batch(&device);
    let mut carry = model.initial_carry_on(&batch, &device);
    let mut ctx = StepContext::eval();
    let (mut logits, mut q_halt) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (next, out) = model.step_with(&model.net, carry, &batch, &mut ctx);
        carry = next;
        logits.push(out.logits.into_data().to_vec::<f32>().unwrap());
        q_halt.push(out.q_halt_logits.into_data().to_vec::<f32>().unwrap());
    }
    Forward { logits, q_halt }
}

/// Values rounded to 3 decimals (so the snapshot survives summation-order noise),
/// argmax tokens exactly.
fn snapshot_text(f: &Forward) -> String {
    let mut out = String::new();
    let v = 6;
    for (k, (logits, q)) in f.logits.iter().zip(&f.q_halt).enumerate() {
        out += &format!("step {}\n", k + 1);
        out += &format!(
            "  q_halt {:?}\n",
            q.iter().map(|x| r3(*x)).collect::<Vec<_>>()
        );
        let argmax: Vec<usize> = logits
            .chunks(v)
            .map(|c| {
                (0..v)
                    .max_by(|&a, &b| c[a].total_cmp(&c[b]))
                    .expect("the vocabulary is not empty")
            })
            .collect();
        out += &format!("  argmax {argmax:?}\n");
        for (row, l) in logits.chunks(12 * v).take(2).enumerate() {
            out += &format!(
                "  logits row {row} first 3 positions {:?}\n",
                l[..3 * v].iter().map(|x| r3(*x)).collect::<Vec<_>>()
            );
        }
        out += &format!("  logits sum {}\n", r3(logits.iter().sum::<f32>() / 100.0));
    }
    out
}

fn r3(x: f32) -> f32 {
    // Adding 0.0 turns -0.0 into 0.0, so a sign flip at zero is not a change.
    (x * 1000.0).round() / 1000.0 + 0.0
}

#[test]
fn forward_snapshot_per_backend() {
    for spec in compiled() {
        let name = spec.split(':').next().unwrap_or("cpu").to_string();
        insta::assert_snapshot!(format!("forward_{name}"), snapshot_text(&forward(&spec)));
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn compiled_backends_agree_with_the_cpu_on_forward() {
    let cpu = forward("cpu");
    for spec in compiled().into_iter().skip(1) {
        let other = forward(&spec);
        for k in 0..2 {
            let d = max_abs_diff(&cpu.logits[k], &other.logits[k]);
            assert!(d < 1e-3, "{spec}: step {} logits differ by {d}", k + 1);
            let d = max_abs_diff(&cpu.q_halt[k], &other.q_halt[k]);
            assert!(d < 1e-3, "{spec}: step {} q_halt differs by {d}", k + 1);
        }
    }
}

/// One optimizer step: the logged loss and every parameter afterwards.
fn train_step(spec: &str) -> (f64, Vec<(String, Vec<f32>)>) {
    let device = device(spec);
    let mut trainer = Trainer::new(&experiment(), &device).unwrap();
    recursa_tests::randomize_zero_inits(&mut trainer.model.net, 11);
    let m = trainer.train_step(&examples()).unwrap();
    let mut state: Vec<_> = net_state_dict(&trainer.model.net)
        .into_iter()
        .map(|(name, t)| (name, t.values))
        .collect();
    state.sort_by(|a, b| a.0.cmp(&b.0));
    (m.lm_loss, state)
}

#[test]
fn compiled_backends_agree_with_the_cpu_on_a_training_step() {
    let (cpu_loss, cpu_state) = train_step("cpu");
    assert!(cpu_loss.is_finite() && cpu_loss > 0.0);
    for spec in compiled().into_iter().skip(1) {
        let (loss, state) = train_step(&spec);
        assert!(
            (loss - cpu_loss).abs() < 1e-4 * cpu_loss.abs().max(1.0),
            "{spec}: loss {loss} vs cpu {cpu_loss}"
        );
        for ((name, a), (other, b)) in cpu_state.iter().zip(&state) {
            assert_eq!(name, other);
            // One AdamATan2 step moves a weight by about lr = 1e-3; agreement to
            // 1e-5 means the gradients agreed in direction and size.
            let d = max_abs_diff(a, b);
            assert!(
                d < 1e-5,
                "{spec}: parameter {name} differs by {d} after one step"
            );
        }
    }
}
