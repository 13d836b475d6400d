//! `recursa train`: prepare a run (or check it) and train it.

use std::path::PathBuf;

use std::time::Duration;

use recursa_core::train::process_group::GroupConfig;
use recursa_core::train::trainer::EvalResult;
use recursa_core::{Error, Result};

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
    #[command(flatten)]
    pub group: GroupArgs,
}

/// One rank of a run across processes (`recursa launch` sets these for each rank).
#[derive(clap::Args)]
pub struct GroupArgs {
    /// Train as one of N processes (ranks), gradients summed over all of them; rank
    /// 0 writes the run. Needs --rank (recursa launch gives both).
    #[arg(long, value_name = "N", requires = "rank")]
    pub world: Option<usize>,
    /// This process's rank, 0..N-1.
    #[arg(long, value_name = "R", requires = "world")]
    pub rank: Option<usize>,
    /// HOST:PORT where rank 0 listens and the others connect.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:29500")]
    pub coordinator: String,
    /// This rank's index on its machine: `--backend cuda` trains on cuda:LOCAL_RANK.
    #[arg(long, value_name = "I", default_value_t = 0)]
    pub local_rank: usize,
    /// Seconds a rank waits for the others (to join, or at an exchange) before it
    /// stops with an error naming the rank it waited for.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

/// Trains (or, with `--check`, only prepares) the run; prints the final evaluation.
pub fn run(args: TrainArgs) -> Result<bool> {
    // A world of one is a plain run (`recursa launch --nproc 1`).
    let alone = args.group.world == Some(1) && args.group.rank == Some(0);
    if let (Some(world), Some(rank), false) = (args.group.world, args.group.rank, alone) {
        if args.check {
            return Err(Error::Usage(
                "--check runs alone: drop --world/--rank to check a run".into(),
            ));
        }
        let me = crate::distributed::Rank {
            group: GroupConfig {
                rank,
                world,
                coordinator: args.group.coordinator.clone(),
                timeout: Duration::from_secs(args.group.timeout),
            },
            local_rank: args.group.local_rank,
        };
        let result = crate::distributed::train_in_group(
            &args.config,
            &args.backend,
            args.out,
            &args.overrides,
            args.resume,
            args.until,
            &me,
        )?;
        if let Some(r) = result {
            print_final(&r);
        }
        return Ok(true);
    }
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
        print_final(&r);
    }
    Ok(true)
}

fn print_final(r: &EvalResult) {
    println!(
        "final evaluation at step {}: exact accuracy {:.4} on {} held-out examples",
        r.step, r.exact_accuracy, r.examples
    );
}
