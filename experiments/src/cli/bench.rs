//! `recursa bench`: training-step and evaluation throughput, peak memory.

use std::path::PathBuf;

use recursa_core::experiment::ExperimentConfig;
use recursa_core::train::config::MicroBatches;
use recursa_core::Result;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Experiment file (TOML); its [train] section gives the batch size.
    #[arg(long)]
    pub config: PathBuf,
    /// Device: cpu, ndarray, cuda, cuda:N, wgpu, tch; several devices of one backend,
    /// comma-separated (cpu,cpu: one replica per core, batch rows cut between them).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Timed training steps (after 2 warm-up steps); throughput is from the median step.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Batch size (default: the experiment's train.global_batch_size).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak TFLOP/s of the device, to report model-FLOPs utilisation.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Float type of every tensor (bf16 and f16 are meant for GPU backends; the CPU runs them slowly)
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub dtype: String,
    /// Micro-batches per step: a count, or auto (the fewest that fit in the device's
    /// free memory; default: the experiment's train.micro_batches).
    #[arg(long)]
    pub micro_batches: Option<MicroBatches>,
    /// Print only the result as one JSON object (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark; prints figures and a JSON line (only the JSON with `--json`).
pub fn run(args: BenchArgs) -> Result<bool> {
    let e = ExperimentConfig::load(&args.config)?;
    let r = crate::bench::bench(
        &e,
        &args.backend,
        &args.dtype,
        args.steps,
        args.batch,
        args.micro_batches,
        args.peak_tflops,
    )?;
    let json = serde_json::to_string(&r).expect("plain data");
    if args.json {
        println!("{json}");
        return Ok(true);
    }
    println!(
        "model FLOPs assumed: {:.3e} per training step (forward of every call, plus 2x forward for the calls with gradient and the LM head), {:.3e} per evaluated example",
        r.train_flops_per_step, r.eval_flops_per_example
    );
    println!(
        "train: {:.1} examples/s, {:.0} tokens/s, {:.3} TFLOP/s{} (median of {} steps; mean {:.1} examples/s)",
        r.train_examples_per_s,
        r.train_tokens_per_s,
        r.train_tflops,
        r.mfu
            .map(|m| format!(", MFU {:.1}%", 100.0 * m))
            .unwrap_or_default(),
        r.train_steps,
        r.train_examples_per_s_mean,
    );
    if r.micro_batches > 1 {
        println!(
            "micro-batches: {} of {} rows per step",
            r.micro_batches,
            r.batch / r.micro_batches
        );
    }
    println!(
        "eval:  {:.1} examples/s (rollouts of the halting policy's maximum steps)",
        r.eval_examples_per_s
    );
    if let Some(bytes) = r.peak_rss_bytes {
        println!("peak memory (RSS): {:.2} GB", bytes as f64 / 1e9);
    }
    println!("{json}");
    Ok(true)
}
