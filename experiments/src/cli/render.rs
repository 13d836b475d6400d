//! `recursa render`: ARC tasks, predictions and vote tables as PNG files and a page.

use std::path::PathBuf;

use recursa_core::{Error, Result};
use recursa_data::render::{render_arc, RenderOptions, TaskSelection};

#[derive(clap::Args)]
pub struct RenderArgs {
    /// Raw ARC subset: training, evaluation, training2, evaluation2, concept.
    #[arg(long, default_value = "evaluation")]
    pub subset: String,
    /// Raw JSON prefix.
    #[arg(long, default_value = "data/raw/arc/arc-agi")]
    pub input_prefix: PathBuf,
    /// Task ids, comma-separated (default: the first 10).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// The first N tasks instead of --tasks.
    #[arg(long)]
    pub first: Option<usize>,
    /// Predictions in the evaluator's submission.json format.
    #[arg(long)]
    pub submission: Option<PathBuf>,
    /// Vote tables from `recursa eval` (RUN/eval/step-N/eval_result.json) instead of --submission.
    #[arg(long, conflicts_with = "submission")]
    pub eval_result: Option<PathBuf>,
    /// Output directory (index.html and one PNG per task).
    #[arg(long)]
    pub out: PathBuf,
}

impl From<RenderArgs> for RenderOptions {
    fn from(a: RenderArgs) -> RenderOptions {
        let mut opts = RenderOptions::subset(a.input_prefix, a.subset, a.out);
        opts.tasks = match (a.first, a.tasks.is_empty()) {
            (Some(n), _) => TaskSelection::First(n),
            (None, false) => TaskSelection::Ids(a.tasks),
            (None, true) => TaskSelection::First(10),
        };
        opts.submission = a.submission;
        opts.eval_result = a.eval_result;
        opts
    }
}

/// Renders and prints where the page is.
pub fn run(args: RenderArgs) -> Result<bool> {
    let summary = render_arc(&args.into()).map_err(Error::from_data)?;
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: {} tasks, {} PNG files",
        summary.index.display(),
        summary.tasks.len(),
        summary.pngs.len()
    );
    Ok(true)
}
