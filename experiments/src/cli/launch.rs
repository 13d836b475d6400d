//! `recursa launch`: start the ranks of a run across processes on this machine.

use std::time::Duration;

use recursa_core::Result;

#[derive(clap::Args)]
pub struct LaunchArgs {
    /// Ranks (processes) to start on this machine, one device each.
    #[arg(long, value_name = "N")]
    pub nproc: usize,
    /// Machines in the run; each runs `recursa launch` with its --node-rank.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's index, 0..M-1; its ranks are NODE_RANK*N .. NODE_RANK*N+N-1.
    #[arg(long, value_name = "I", default_value_t = 0)]
    pub node_rank: usize,
    /// HOST:PORT of rank 0 (on node 0), where the others connect.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:29500")]
    pub coordinator: String,
    /// Seconds a rank waits for the others before it stops with an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// The command each rank runs: train --config FILE [...].
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Starts the ranks and waits for them; fails when one of them does.
pub fn run(args: LaunchArgs) -> Result<bool> {
    let l = crate::distributed::Launch {
        nproc: args.nproc,
        nnodes: args.nnodes,
        node_rank: args.node_rank,
        coordinator: args.coordinator,
        timeout: Duration::from_secs(args.timeout),
    };
    crate::distributed::launch(&l, &args.command)?;
    Ok(true)
}
