//! `recursa eval`: score a run's checkpoint on its test split.

use std::path::PathBuf;

use recursa_core::train::trajectories::Trajectories;
use recursa_core::Result;

use crate::eval::{eval, summary, EvalOptions};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The run directory (config.toml, checkpoints/).
    pub run: PathBuf,
    /// A checkpoint directory (default: the run's latest).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Evaluate on this dataset directory instead of the run's [data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Device: cpu, ndarray, cuda, cuda:N, wgpu, tch.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Rows per batch (default: the run's global batch size).
    #[arg(long)]
    pub batch: Option<usize>,
    /// ARC voting exactly as the reference, its two defects included (see docs/data.md).
    #[arg(long)]
    pub reference_quirks: bool,
    /// Output directory (default: RUN/eval/step-N, or step-N-trajectories-K).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Roll each example out K times with noise on z_H; the halting head picks one (PTRM).
    #[arg(long, value_name = "K")]
    pub trajectories: Option<usize>,
    /// Standard deviation of the noise added to z_H before every step (with --trajectories).
    #[arg(
        long,
        value_name = "SIGMA",
        default_value_t = 0.1,
        requires = "trajectories"
    )]
    pub latent_noise: f64,
    /// Seed of the noise (with --trajectories).
    #[arg(long, default_value_t = 0, requires = "trajectories")]
    pub noise_seed: u64,
}

impl From<EvalArgs> for EvalOptions {
    fn from(a: EvalArgs) -> EvalOptions {
        EvalOptions {
            run: a.run,
            checkpoint: a.checkpoint,
            data: a.data,
            backend: a.backend,
            batch: a.batch,
            reference_quirks: a.reference_quirks,
            out: a.out,
            trajectories: a.trajectories.map(|count| Trajectories {
                count,
                latent_noise: a.latent_noise,
                seed: a.noise_seed,
            }),
        }
    }
}

/// Evaluates and prints the summary.
pub fn run(args: EvalArgs) -> Result<bool> {
    let r = eval(&args.into())?;
    println!("{}", summary(&r));
    Ok(true)
}
