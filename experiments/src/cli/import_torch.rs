//! `recursa import-torch`: an official PyTorch TRM checkpoint as reference-named safetensors.

use std::path::PathBuf;

use recursa_core::experiment::ExperimentConfig;
use recursa_core::Result;

#[derive(clap::Args)]
pub struct ImportTorchArgs {
    /// The PyTorch checkpoint (keys `_orig_mod.model.inner.*`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The experiment whose network the weights are for.
    #[arg(long)]
    pub config: PathBuf,
    /// Output safetensors file (reference names).
    #[arg(long)]
    pub out: PathBuf,
}

/// Converts the checkpoint for the experiment's network and writes it atomically.
pub fn run(args: ImportTorchArgs) -> Result<bool> {
    let experiment = ExperimentConfig::load(&args.config)?;
    let device = recursa_backends::device("cpu")?;
    let mut net = recursa_core::model::Net::new(&experiment.net, experiment.seed, &device)?;
    let report = recursa_core::weights::import_torch(&mut net, &args.checkpoint)?;
    if let Some((found, expected)) = &report.puzzle_table_reset {
        eprintln!("puzzle embedding table {found:?} replaced by its mean row repeated to {expected:?} (as pretrain.py does)");
    }
    recursa_core::weights::save_net_file(&net, &args.out, None)?;
    println!(
        "{}: {} tensors imported from {}",
        args.out.display(),
        report.tensors,
        args.checkpoint.display()
    );
    Ok(true)
}
