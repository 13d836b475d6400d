//! `recursa inspect`: an experiment's resolved configuration, parameters and network calls.

use std::path::PathBuf;

use recursa_core::experiment::ExperimentConfig;
use recursa_core::{Error, Result};

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Experiment file (TOML).
    pub config: PathBuf,
}

/// Builds the model on the CPU and prints what it is.
pub fn run(args: InspectArgs) -> Result<bool> {
    let path = &args.config;
    let config = ExperimentConfig::load(path)?;
    let device = recursa_backends::device("cpu")?;
    let model = config.build(&device)?;
    let calls = model.schedule.calls_per_step();
    let max_steps = model.halting.max_steps();
    println!("experiment: {}", path.display());
    println!(
        "parameters: {}",
        crate::thousands(model.net.num_trainable_params())
    );
    println!(
        "positions:  {} ({} puzzle prefix + {} tokens)",
        config.net.total_len(),
        config.net.prefix_len(),
        config.net.seq_len
    );
    println!(
        "schedule:   {} ({} network calls per step: {} with gradient, {} without)",
        model.schedule.name(),
        calls.total(),
        calls.with_grad,
        calls.without_grad
    );
    println!("target:     {}", model.target.name());
    println!(
        "halting:    {} (at most {max_steps} steps: {} network calls per example)",
        model.halting.name(),
        max_steps * calls.total()
    );
    println!(
        "\nresolved config:\n{}",
        toml::to_string_pretty(&config).map_err(|e| Error::Other(e.to_string()))?
    );
    Ok(true)
}
