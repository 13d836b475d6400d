//! Training across processes: `recursa train --world N --rank R --coordinator
//! HOST:PORT` runs one rank, and `recursa launch --nproc N -- train ...` starts the
//! ranks of one machine and watches them (torchrun's two halves).
//!
//! Rank 0 is the run: it resolves the experiment (file, `--set`, the run's own
//! config on `--resume`), writes the run directory and the checkpoints, and sends
//! the other ranks the resolved experiment and, on resume, its checkpoint. The
//! other ranks read only the dataset (at the path the experiment names) and write
//! nothing. See docs/distributed.md.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use recursa_core::experiment::{parse_table, Origin};
use recursa_core::train::fit::fit;
use recursa_core::train::observer::Silent;
use recursa_core::train::process_group::{GroupConfig, ProcessGroup};
use recursa_core::train::trainer::{EvalResult, Trainer};
use recursa_core::{Error, Result};

use crate::train::GroupStart;

/// What every rank's hello names: ranks of another version are refused.
const VERSION: &str = concat!("recursa ", env!("CARGO_PKG_VERSION"));

/// The device a rank trains on: `backend`, or for an accelerator given without an
/// index (`cuda`, `wgpu`), the one numbered `local_rank` (one process per GPU).
pub fn rank_device(backend: &str, local_rank: usize) -> Result<String> {
    if backend.contains(',') {
        return Err(Error::Usage(format!(
            "--backend {backend}: a rank of a group of processes trains on one device (start one rank per device)"
        )));
    }
    Ok(match backend {
        "cuda" | "wgpu" => format!("{backend}:{local_rank}"),
        other => other.to_string(),
    })
}

/// One rank's place: the group, and its index on its machine (which GPU).
pub struct Rank {
    pub group: GroupConfig,
    pub local_rank: usize,
}

/// `recursa train` as one rank of a group: joins it, then rank 0 prepares and
/// trains the run while the others follow. A rank that fails tells the others why.
pub fn train_in_group(
    config_path: &std::path::Path,
    backend: &str,
    out: Option<PathBuf>,
    overrides: &[String],
    resume: bool,
    until: Option<usize>,
    me: &Rank,
) -> Result<Option<EvalResult>> {
    let device = rank_device(backend, me.local_rank)?;
    let group = ProcessGroup::join(&me.group, VERSION)?;
    let stop_others = group.aborter();
    let rank = group.rank;
    let result = if rank == 0 {
        lead(config_path, &device, out, overrides, resume, until, group)
    } else {
        follow(group, &device).map(|_| None)
    };
    if let Err(e) = &result {
        stop_others.abort(&if rank == 0 {
            format!("rank 0: {e}")
        } else {
            e.to_string()
        });
    }
    result
}

/// Rank 0: [`crate::train::prepare`] and [`crate::train::run`], telling the others
/// what to train.
fn lead(
    config_path: &std::path::Path,
    device: &str,
    out: Option<PathBuf>,
    overrides: &[String],
    resume: bool,
    until: Option<usize>,
    group: ProcessGroup,
) -> Result<Option<EvalResult>> {
    let p = crate::train::prepare_in_group(config_path, device, out, overrides, resume, group)?;
    p.trainer
        .group()
        .expect("prepare_in_group joined the trainer to the group")
        .broadcast(serde_json::to_vec(&until).expect("plain data"))?;
    crate::train::run(p, until)
}

/// Ranks 1..: build the run rank 0 describes, restore its checkpoint, and train.
fn follow(group: ProcessGroup, device: &str) -> Result<()> {
    let start: GroupStart = serde_json::from_slice(&group.broadcast(Vec::new())?)
        .map_err(|e| Error::Other(format!("rank {}: the start message: {e}", group.rank)))?;
    let origin = Origin {
        text: &start.text,
        source: &start.source,
        overrides: &[],
    };
    let resolved = crate::train::resolve(parse_table(&start.text, &start.source)?, &origin)?;
    let device = recursa_backends::device(device)?;
    let mut trainer = Trainer::new(&resolved.experiment, &device)?;
    trainer.join_group(group)?;
    if start.resume {
        trainer.resume(&start.run_dir.join("checkpoints"))?;
    }
    let until: Option<usize> = serde_json::from_slice(
        &trainer
            .group()
            .expect("joined above")
            .broadcast(Vec::new())?,
    )
    .map_err(|e| Error::Other(format!("the start message: {e}")))?;
    fit(
        &mut trainer,
        &resolved.train_set,
        &resolved.test_set,
        &start.run_dir,
        &start.text,
        until,
        &mut Silent,
    )?;
    Ok(())
}

/// Where `recursa launch` puts its ranks.
pub struct Launch {
    /// Ranks on this machine.
    pub nproc: usize,
    /// Machines in the run, and this one's index.
    pub nnodes: usize,
    pub node_rank: usize,
    pub coordinator: String,
    pub timeout: Duration,
}

/// Starts `nproc` ranks of `recursa <command>` on this machine and waits for them.
/// When one fails, the others are given a moment to stop by themselves (rank 0
/// tells them), then stopped; the error names the rank that failed first.
pub fn launch(l: &Launch, command: &[String]) -> Result<()> {
    if command.first().map(String::as_str) != Some("train") {
        return Err(Error::Usage(
            "recursa launch runs `train`: recursa launch --nproc N -- train --config FILE ..."
                .into(),
        ));
    }
    for own in [
        "--world",
        "--rank",
        "--local-rank",
        "--coordinator",
        "--timeout",
    ] {
        if command
            .iter()
            .any(|a| a == own || a.starts_with(&format!("{own}=")))
        {
            return Err(Error::Usage(format!(
                "{own} is set by recursa launch for each rank; give it to launch (or drop it)"
            )));
        }
    }
    if l.nproc == 0 || l.nnodes == 0 || l.node_rank >= l.nnodes {
        return Err(Error::Usage(format!(
            "--nproc {} --nnodes {} --node-rank {}: need at least one rank per node and a node rank below --nnodes",
            l.nproc, l.nnodes, l.node_rank
        )));
    }
    let world = l.nproc * l.nnodes;
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("recursa launch: {e}")))?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..l.nproc {
        let rank = l.node_rank * l.nproc + local;
        let child = Command::new(&exe)
            .args(command)
            .args(["--world", &world.to_string(), "--rank", &rank.to_string()])
            .args([
                "--local-rank",
                &local.to_string(),
                "--coordinator",
                &l.coordinator,
            ])
            .args(["--timeout", &l.timeout.as_secs().to_string()])
            .spawn();
        match child {
            Ok(c) => children.push((rank, c)),
            Err(e) => {
                stop(&mut children, Duration::ZERO);
                return Err(Error::Other(format!(
                    "recursa launch: cannot start rank {rank}: {e}"
                )));
            }
        }
    }
    eprintln!(
        "recursa launch: ranks {}..{} of {world} started, coordinator {}",
        l.node_rank * l.nproc,
        (l.node_rank + 1) * l.nproc - 1,
        l.coordinator
    );
    loop {
        let mut failed: Vec<(usize, ExitStatus)> = Vec::new();
        let mut running = 0;
        for (rank, child) in &mut children {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => failed.push((*rank, status)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => running += 1,
            }
        }
        if let Some(&(rank, status)) = failed
            .iter()
            .find(|(_, s)| s.code().is_none())
            .or(failed.first())
        {
            // The others hear from rank 0 (or see it go) and stop by themselves.
            stop(&mut children, Duration::from_secs(10));
            return Err(Error::Other(format!(
                "recursa launch: rank {rank} {}; every rank of this machine has stopped",
                describe(status)
            )));
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// "exited with status 6" or "was killed by signal 9".
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("stopped ({status})"),
    }
}

/// Waits up to `grace` for the children to exit, then kills those still running.
fn stop(children: &mut [(usize, Child)], grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && children
            .iter_mut()
            .any(|(_, c)| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, child) in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}
