//! `recursa bench`: training-step and evaluation throughput of an experiment's
//! model on a backend, with the model FLOPs it assumed. Figures, not tests.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recursa_core::experiment::ExperimentConfig;
use recursa_core::model::{layers::swiglu_intermediate, NetConfig};
use recursa_core::train::config::MicroBatches;
use recursa_core::train::data::{split_from_examples, HostBatch};
use recursa_core::train::trainer::Trainer;
use recursa_core::{Error, Result};
use serde::Serialize;

/// Forward FLOPs of one network call (one level of blocks) for one example.
pub fn net_call_flops(c: &NetConfig) -> f64 {
    let (s, h) = (c.total_len() as f64, c.hidden_size as f64);
    let inter = swiglu_intermediate(c.hidden_size, c.expansion) as f64;
    let mlp = 2.0 * s * 3.0 * h * inter;
    let mixer = if c.mlp_t {
        let inter_t = swiglu_intermediate(c.total_len(), c.expansion) as f64;
        2.0 * h * 3.0 * s * inter_t
    } else {
        // q|k|v and o projections, then scores and the weighted sum.
        2.0 * s * 4.0 * h * h + 2.0 * 2.0 * s * s * h
    };
    c.l_layers as f64 * (mlp + mixer)
}

/// What one benchmark measured.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub backend: String,
    pub dtype: String,
    pub batch: usize,
    pub seq_len: usize,
    pub train_steps: usize,
    /// All timed steps together.
    pub train_seconds: f64,
    /// Each timed step, in order.
    pub train_step_seconds: Vec<f64>,
    /// From the median step, as the reference's benchmark reports its own: the
    /// first steps still fault in fresh memory pages, which a long run pays once.
    pub train_examples_per_s: f64,
    /// From the mean step (all timed steps together).
    pub train_examples_per_s_mean: f64,
    /// From the median step.
    pub train_tokens_per_s: f64,
    pub train_flops_per_step: f64,
    pub train_tflops: f64,
    pub eval_examples_per_s: f64,
    pub eval_flops_per_example: f64,
    pub mfu: Option<f64>,
    /// The process's peak resident memory (RSS) after training and evaluation, in
    /// bytes: what the side-by-side benchmark compares with the reference's.
    pub peak_rss_bytes: Option<u64>,
    /// Micro-batches per training step (chosen at the first step for `auto`).
    pub micro_batches: usize,
}

/// The process's peak resident set size so far, in bytes (`getrusage`); `None`
/// where the platform does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes into the zeroed struct it is given and nothing else.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        // Linux reports kibibytes, macOS bytes.
        let unit = if cfg!(target_os = "macos") { 1 } else { 1024 };
        u64::try_from(usage.ru_maxrss).ok().map(|kib| kib * unit)
    }
    #[cfg(not(unix))]
    None
}

/// Times `steps` training steps (after 2 warm-up steps) and one full-depth
/// evaluation of `batch` random examples.
pub fn bench(
    experiment: &ExperimentConfig,
    backend: &str,
    dtype: &str,
    steps: usize,
    batch: Option<usize>,
    micro_batches: Option<MicroBatches>,
    peak_tflops: Option<f64>,
) -> Result<BenchResult> {
    if steps == 0 {
        return Err(Error::Usage(
            "bench: --steps must be at least 1 (timed training steps)".into(),
        ));
    }
    let mut experiment_train = experiment
        .train
        .clone()
        .ok_or_else(|| Error::config("train", "bench needs a [train] section"))?;
    if let Some(b) = batch {
        experiment_train.global_batch_size = b;
    }
    if let Some(m) = micro_batches {
        experiment_train.micro_batches = m;
    }
    if let MicroBatches::Count(m) = experiment_train.micro_batches {
        if !experiment_train.global_batch_size.is_multiple_of(m) {
            return Err(Error::Usage(format!(
                "bench: {m} micro-batches do not divide the batch of {} (--batch, --micro-batches)",
                experiment_train.global_batch_size
            )));
        }
    }
    // The run's length only shapes the learning-rate schedule; paper configs give
    // it in epochs of a dataset the benchmark does not read.
    experiment_train.steps = steps + 2;
    experiment_train.epochs = None;
    let batch = experiment_train.global_batch_size;
    let c = &experiment.net;
    // Random tokens: throughput does not depend on the data.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tokens = |rng: &mut ChaCha8Rng| -> Vec<i32> {
        (0..batch * c.seq_len)
            .map(|_| rng.random_range(0..c.vocab_size as i32))
            .collect()
    };
    let host = HostBatch {
        rows: batch,
        seq_len: c.seq_len,
        inputs: tokens(&mut rng),
        labels: tokens(&mut rng),
        puzzle_identifiers: (0..batch)
            .map(|_| rng.random_range(0..c.num_puzzle_identifiers.max(1) as i32))
            .collect(),
        effective: batch,
    };
    // One device, or several of one backend (data-parallel, `cpu,cpu`).
    let devices = backend
        .split(',')
        .map(recursa_backends::device)
        .collect::<Result<Vec<_>>>()?;
    for device in &devices {
        recursa_backends::set_float_dtype(device, dtype)?;
    }
    let device = devices[0].clone();
    let exp = ExperimentConfig {
        train: Some(experiment_train),
        ..clone_experiment(experiment)?
    };
    let text = toml::to_string(&exp).map_err(|err| Error::Other(err.to_string()))?;
    let mut trainer = Trainer::new_data_parallel(&text, "bench", &devices)?;
    for _ in 0..2 {
        trainer.train_step(&host)?;
    }
    let sync = || recursa_core::sync(&device);
    sync()?;
    let mut train_step_seconds = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        trainer.train_step(&host)?;
        sync()?;
        train_step_seconds.push(start.elapsed().as_secs_f64());
    }
    let train_seconds = train_step_seconds.iter().sum::<f64>();
    let step_seconds = median(&train_step_seconds);

    let calls = trainer.model.schedule.calls_per_step();
    let call = net_call_flops(c);
    let head = 2.0 * c.seq_len as f64 * c.hidden_size as f64 * c.vocab_size as f64;
    // Backward costs twice the forward, for the calls that carry gradient.
    let per_example =
        calls.without_grad as f64 * call + 3.0 * (calls.with_grad as f64 * call + head);
    let train_flops_per_step = per_example * batch as f64;
    let per_s = 1.0 / step_seconds;

    let eval_rows = split_from_examples(
        c.seq_len,
        c.vocab_size,
        c.num_puzzle_identifiers,
        host.inputs,
        host.labels,
        host.puzzle_identifiers,
    )?;
    let eval = trainer.evaluate(&eval_rows, batch)?;
    let max_steps = trainer.model.halting.max_steps() as f64;
    let eval_flops_per_example = max_steps * (calls.total() as f64 * call + head);
    let train_tflops = train_flops_per_step * per_s / 1e12;
    Ok(BenchResult {
        backend: backend.to_string(),
        dtype: dtype.to_string(),
        batch,
        seq_len: c.seq_len,
        train_steps: steps,
        train_seconds,
        train_examples_per_s: per_s * batch as f64,
        train_examples_per_s_mean: (steps * batch) as f64 / train_seconds,
        train_step_seconds,
        train_tokens_per_s: per_s * (batch * c.seq_len) as f64,
        train_flops_per_step,
        train_tflops,
        eval_examples_per_s: batch as f64 / eval.seconds,
        eval_flops_per_example,
        mfu: peak_tflops.map(|p| train_tflops / p),
        peak_rss_bytes: peak_rss_bytes(),
        micro_batches: trainer.micro_batches(),
    })
}

/// The middle value of `xs` (the mean of the two middle ones for an even count);
/// NaN for none.
fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn clone_experiment(e: &ExperimentConfig) -> Result<ExperimentConfig> {
    let text = toml::to_string(e).map_err(|err| Error::Other(err.to_string()))?;
    ExperimentConfig::from_toml(&text, "bench")
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        // The first step's page faults do not move it.
        assert_eq!(median(&[9.0, 1.0, 1.5]), 1.5);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
