//! `recursa finetune`: adapt a checkpoint to test tasks' demonstrations, then score them.

use std::path::PathBuf;

use recursa_core::Result;

use crate::finetune::{finetune, summary, FinetuneOptions};

#[derive(clap::Args)]
pub struct FinetuneArgs {
    /// The pretrained run directory (config.toml, checkpoints/); its data must be an ARC build.
    pub run: PathBuf,
    /// Test tasks to adapt to, comma-separated (default: every test task).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Optimizer steps of fine-tuning.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Learning rate of the dense parameters (default: the run's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Rows per step (default: the run's global batch size, capped at what the tasks fill).
    #[arg(long)]
    pub batch: Option<usize>,
    /// A checkpoint directory (default: the run's latest).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Device: cpu, ndarray, cuda, cuda:N, wgpu, tch.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// The fine-tuned run's directory (default: RUN/finetune/step-N).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train without the run's EMA, so that the scores are of the fine-tuned weights themselves.
    #[arg(long)]
    pub no_ema: bool,
}

impl From<FinetuneArgs> for FinetuneOptions {
    fn from(a: FinetuneArgs) -> FinetuneOptions {
        FinetuneOptions {
            run: a.run,
            checkpoint: a.checkpoint,
            tasks: a.tasks,
            steps: a.steps,
            lr: a.lr,
            batch: a.batch,
            backend: a.backend,
            out: a.out,
            no_ema: a.no_ema,
        }
    }
}

/// Fine-tunes, scores and prints the summary.
pub fn run(args: FinetuneArgs) -> Result<bool> {
    let r = finetune(&args.into())?;
    println!("{}", summary(&r));
    Ok(true)
}
