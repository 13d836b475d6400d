//! `recursa`: looped reasoning models (TRM, HRM, DIS) on burn, from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recursa::verify;
use recursa_core::experiment::ExperimentConfig;
use recursa_core::registry::{self, Axis};

#[derive(Parser)]
#[command(
    name = "recursa",
    version,
    about = "Looped reasoning models (TRM, HRM, DIS) on burn",
    after_help = "Examples:\n  recursa verify-reference tests/fixtures/trm_forward_shared.safetensors\n  recursa inspect experiments/configs/trm-arc1.toml\n  recursa plugins\n  recursa backends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a reference fixture (kind read from its metadata) and compare every output.
    ///
    /// Prints one JSON line per compared tensor (max absolute / relative error,
    /// tolerance, verdict) and a final verdict line. Exits 0 only if all pass.
    #[command(
        after_help = "Example:\n  recursa verify-reference tests/fixtures/trm_forward_shared.safetensors --backend cpu"
    )]
    VerifyReference {
        /// Fixture files (`.safetensors` from the reference generator).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Device to run on: cpu, cuda, cuda:N, wgpu, tch.
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// List the registered plugins on each axis with their docs and fields.
    Plugins,
    /// List the backends, whether this binary has them, and whether their device answers.
    Backends,
    /// Print an experiment's resolved configuration, parameter count and network calls.
    #[command(after_help = "Example:\n  recursa inspect experiments/configs/trm-arc1.toml")]
    Inspect {
        /// Experiment file (TOML).
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::VerifyReference { files, backend } => verify_reference(&files, &backend),
        Command::Plugins => {
            print_plugins();
            Ok(true)
        }
        Command::Backends => {
            print_backends();
            Ok(true)
        }
        Command::Inspect { config } => inspect(&config),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn verify_reference(files: &[PathBuf], backend: &str) -> recursa_core::Result<bool> {
    let device = recursa_backends::device(backend)?;
    let mut all_ok = true;
    for file in files {
        let report = verify::verify_file(file, &device)?;
        for c in &report.comparisons {
            println!(
                "{}",
                serde_json::to_string(c).expect("plain data serialises")
            );
        }
        let failed = report.comparisons.iter().filter(|c| !c.ok).count();
        let verdict = if report.passed() { "pass" } else { "FAIL" };
        println!(
            "{}",
            serde_json::json!({
                "verdict": verdict,
                "file": report.file,
                "kind": report.kind,
                "backend": backend,
                "tensors": report.comparisons.len(),
                "failed": failed,
            })
        );
        eprintln!(
            "{verdict}: {} ({}, {backend}): {} tensors compared, {failed} outside tolerance",
            report.file,
            report.kind,
            report.comparisons.len()
        );
        all_ok &= report.passed();
    }
    Ok(all_ok)
}

fn print_plugins() {
    for axis in Axis::ALL {
        println!("[{}]", axis.key());
        for p in registry::plugins().into_iter().filter(|p| p.axis == axis) {
            println!("  {:<14} {}", p.name, p.doc);
            for f in p.fields {
                println!("  {:<14}   {} : {}", "", f.name, f.doc);
            }
        }
        println!();
    }
}

fn print_backends() {
    println!("{:<6} {:<10} {:<9} device", "name", "feature", "compiled");
    for b in recursa_backends::backends() {
        let device = if b.compiled {
            match recursa_backends::probe(b.name) {
                Ok(d) => format!("ok: {d}"),
                Err(e) => format!("unavailable: {e}"),
            }
        } else {
            "-".into()
        };
        println!(
            "{:<6} {:<10} {:<9} {}",
            b.name,
            b.feature,
            if b.compiled { "yes" } else { "no" },
            device
        );
        println!("       {}", b.doc);
    }
}

fn inspect(path: &std::path::Path) -> recursa_core::Result<bool> {
    let config = ExperimentConfig::load(path)?;
    let device = recursa_backends::device("cpu")?;
    let model = config.build(&device)?;
    let calls = model.schedule.calls_per_step();
    let max_steps = model.halting.max_steps();
    println!("experiment: {}", path.display());
    println!("parameters: {}", model.net.num_trainable_params());
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
        toml::to_string_pretty(&config).map_err(|e| recursa_core::Error::Other(e.to_string()))?
    );
    Ok(true)
}
