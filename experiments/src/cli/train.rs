//! `recursa train`: prepare a run (or check it) and train it.

use std::path::PathBuf;

use recursa_core::Result;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Experiment file (TOML) with [net], [schedule], [target], [halting], [train] and [data].
    #[arg(long)]
    pub config: PathBuf,
    /// Device to train on: cpu, ndarray, cuda, cuda:N, wgpu, tch; several devices of one
    /// backend, comma-separated (cpu,cpu or cuda:0,cuda:1), train data-parallel.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a config value, e.g. --set train.steps=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in --out (or runs/<config name>) from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this optimizer step with a checkpoint (continue later with --resume).
    #[arg(long)]
    pub until: Option<usize>,
    /// Check everything (config, overrides, data, backend, model; with --resume the
    /// run's config and checkpoint) and exit without writing or training.
    #[arg(long)]
    pub check: bool,
}

/// Trains (or, with `--check`, only prepares) the run; prints the final evaluation.
pub fn run(args: TrainArgs) -> Result<bool> {
    let p = crate::train::prepare(
        &args.config,
        &args.backend,
        args.out,
        &args.overrides,
        args.resume,
    )?;
    if args.check {
        println!(
            "{}: ok ({} parameters; run directory {}, nothing written)",
            args.config.display(),
            crate::thousands(p.trainer.model.net.num_trainable_params()),
            p.run_dir.display()
        );
        return Ok(true);
    }
    if let Some(r) = crate::train::run(p, args.until)? {
        println!(
            "final evaluation at step {}: exact accuracy {:.4} on {} held-out examples",
            r.step, r.exact_accuracy, r.examples
        );
    }
    Ok(true)
}
