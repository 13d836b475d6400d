//! `recursa plot`: the curves of one or more runs as a PNG and a CSV.

use std::path::PathBuf;

use recursa_core::Result;

use crate::plot::{plot, PlotOptions};

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run directories written by `recursa train` (or their metrics.jsonl files).
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write; the CSV goes next to it [default: RUN/curves.png for one run,
    /// compare-A-B.png beside the first run for several].
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
    /// X axis [default: step for one run, forward-passes for several].
    #[arg(long, value_enum)]
    pub x: Option<crate::plot::XAxis>,
    /// Draw the training loss on a linear axis instead of a logarithmic one.
    #[arg(long)]
    pub linear_loss: bool,
}

impl From<PlotArgs> for PlotOptions {
    fn from(a: PlotArgs) -> PlotOptions {
        PlotOptions {
            runs: a.runs,
            out: a.out,
            x: a.x,
            linear_loss: a.linear_loss,
        }
    }
}

/// Draws the picture; prints where it went and any warning.
pub fn run(args: PlotArgs) -> Result<bool> {
    let s = plot(&args.into())?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: {} run(s) ({}), x = {}, {} points; numbers in {}",
        s.png.display(),
        s.runs.len(),
        s.runs.join(", "),
        s.x.csv_name(),
        s.points,
        s.csv.display()
    );
    Ok(true)
}
