//! `recursa train`: run an experiment file from scratch or resume it.

use std::path::{Path, PathBuf};

use recursa_core::experiment::{
    parse_table, read_table, DataConfig, ExperimentConfig, Origin, Override,
};
use recursa_core::train::data::{check_split, data_error, rows, PuzzleSplit};
use recursa_core::train::fit::fit;
use recursa_core::train::process_group::ProcessGroup;
use recursa_core::train::trainer::{EvalResult, Trainer};
use recursa_core::{Error, Result};
use recursa_data::arc_eval::{ArcEvalOptions, ArcEvaluator};

use crate::tasks;

/// Applies `--set a.b=value` overrides to experiment TOML text and returns the
/// resolved text. The value is read as TOML (`3`, `1e-3`, `true`, `"rope"`), or as
/// a string when it is not.
pub fn apply_overrides(text: &str, source: &str, overrides: &[String]) -> Result<String> {
    let mut table = parse_table(text, source)?;
    for o in overrides {
        Override::parse(o)?.apply(&mut table)?;
    }
    Ok(toml::to_string(&table).expect("a TOML table serialises"))
}

/// Fields a resumed run may take from the experiment file instead of its own
/// config: how long it runs, how often it evaluates and saves, what it keeps.
pub const RESUMABLE_CHANGES: [&str; 7] = [
    "train.steps",
    "train.epochs",
    "train.eval_interval",
    "train.checkpoint_interval",
    "train.keep_checkpoints",
    // How the global batch is cut: with ranks x micro-batches unchanged (2 ranks of
    // 1 -> 1 process of 2) the resumed run is exact; the checkpoint refuses others.
    "train.micro_batches",
    // What `micro_batches = "auto"` may fill; a resumed run keeps the saved count.
    "train.auto_memory_mb",
];

/// Every `a.b.c = value` leaf of a TOML table, by dotted key.
fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut std::collections::BTreeMap<String, String>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

/// The keys whose values differ between two experiment tables: `(key, run, file)`,
/// `-` for an absent key.
pub fn config_changes(run: &toml::Table, file: &toml::Table) -> Vec<(String, String, String)> {
    let (mut a, mut b) = Default::default();
    flatten("", run, &mut a);
    flatten("", file, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |m: &std::collections::BTreeMap<String, String>| {
                m.get(k).cloned().unwrap_or_else(|| "-".into())
            };
            (k.clone(), show(&a), show(&b))
        })
        .collect()
}

/// Removes the dotted `path` from `table`, if there.
fn remove_key(table: &mut toml::Table, path: &[String]) {
    let Some((last, tables)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for k in tables {
        match t.get_mut(k).and_then(|v| v.as_table_mut()) {
            Some(inner) => t = inner,
            None => return,
        }
    }
    t.remove(last);
}

/// An experiment made ready to train: parsed, checked against its data, with
/// what the data decides (puzzle identifiers, steps from epochs) filled in.
pub(crate) struct Resolved {
    pub(crate) experiment: ExperimentConfig,
    table: toml::Table,
    pub(crate) train_set: PuzzleSplit,
    pub(crate) test_set: PuzzleSplit,
}

/// Parses `table`, loads its data and fills in what the data decides.
pub(crate) fn resolve(mut table: toml::Table, origin: &Origin) -> Result<Resolved> {
    let source = origin.source;
    let mut experiment = ExperimentConfig::from_table(table.clone(), origin)?;
    let data = experiment
        .data
        .as_ref()
        .ok_or_else(|| Error::config(format!("{source}: data"), "missing [data] section"))?;
    let (train_set, test_set) = tasks::load(data, experiment.seed)?;
    let mut derived = Vec::new();
    // A dataset decides the size of the puzzle table unless the experiment does.
    let ids = train_set.metadata().num_puzzle_identifiers as usize;
    if experiment.net.num_puzzle_identifiers == 1 && ids > 1 {
        derived.push(format!("net.num_puzzle_identifiers={ids}"));
    }
    // Epochs become steps as the reference counts them, from the training split.
    if let Some(t) = experiment.train.as_ref() {
        if let Some(epochs) = t.epochs {
            let m = train_set.metadata();
            let steps = (epochs * m.total_groups as f64 * m.mean_puzzle_examples
                / t.global_batch_size.max(1) as f64) as usize;
            if t.steps != 0 && t.steps != steps {
                return Err(Error::config(
                    format!("{source}: train.steps"),
                    format!(
                        "{} and train.epochs = {epochs} ({steps} steps) disagree; give one",
                        t.steps
                    ),
                ));
            }
            derived.push(format!("train.steps={steps}"));
        }
    }
    if !derived.is_empty() {
        for d in &derived {
            Override::parse(d)?.apply(&mut table)?;
        }
        experiment = ExperimentConfig::from_table(table.clone(), origin)?;
    }
    let net = &experiment.net;
    for (what, split) in [("train split", &train_set), ("test split", &test_set)] {
        check_split(
            what,
            split,
            net.seq_len,
            net.vocab_size,
            net.num_puzzle_identifiers,
        )
        .map_err(|e| Error::Input(format!("{source}: {e}")))?;
    }
    Ok(Resolved {
        experiment,
        table,
        train_set,
        test_set,
    })
}

/// Keeps the lines of a metrics file up to `step` (and drops a half-written last
/// line), atomically: after a crash and `--resume` from the checkpoint at `step`,
/// the steps the killed process logged past it are trained again, so every step
/// is in the file once.
pub fn truncate_metrics(path: &Path, step: usize) -> Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.split_inclusive('\n') {
        let keep = line.ends_with('\n')
            && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                v.get("step")
                    .and_then(|s| s.as_u64())
                    .is_none_or(|s| s as usize <= step)
            });
        if keep {
            kept.push_str(line);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        recursa_core::weights::write_atomic(path, kept.as_bytes())?;
    }
    Ok(dropped)
}

/// What rank 0 of a group of processes sends the other ranks once it has resolved
/// the run (`crate::distributed` follows it).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct GroupStart {
    /// The resolved experiment (the run's config.toml).
    pub(crate) text: String,
    pub(crate) source: String,
    pub(crate) run_dir: PathBuf,
    pub(crate) resume: bool,
}

/// A run made ready by [`prepare`]: everything checked, nothing written yet.
pub struct Prepared {
    pub trainer: Trainer,
    pub train_set: PuzzleSplit,
    pub test_set: PuzzleSplit,
    pub run_dir: PathBuf,
    /// The resolved experiment, as the run's config.toml holds it.
    pub text: String,
    /// Its `[data]`.
    pub data: Option<DataConfig>,
    source: String,
    backend: String,
    resume: bool,
    /// `key old -> new` for each RESUMABLE_CHANGES field this resume changes.
    changed: Vec<String>,
}

/// Trains `config_path` on `backend` (one device, or several comma-separated
/// devices of one backend for data parallelism, e.g. `cpu,cpu` or `cuda:0,cuda:1`);
/// `out` is the run directory (default `runs/<config name>`). With `resume`,
/// continues the run in `out` exactly; with `until`, stops after that step with a
/// checkpoint.
pub fn train(
    config_path: &Path,
    backend: &str,
    out: Option<PathBuf>,
    overrides: &[String],
    resume: bool,
    until: Option<usize>,
) -> Result<Option<EvalResult>> {
    run(
        prepare(config_path, backend, out, overrides, resume)?,
        until,
    )
}

/// Checks everything a run needs (the experiment file and its overrides, the
/// data, the backend, the model, on `resume` the run's config and checkpoint)
/// without writing anything: `recursa train --check`, and the first half of
/// [`train`].
pub fn prepare(
    config_path: &Path,
    backend: &str,
    out: Option<PathBuf>,
    overrides: &[String],
    resume: bool,
) -> Result<Prepared> {
    let source = config_path.display().to_string();
    let run_dir = out.unwrap_or_else(|| default_run_dir(config_path));
    let raw = std::fs::read_to_string(config_path).map_err(|e| Error::io(config_path, e))?;
    let table = read_table(config_path)?;
    prepare_table(
        &raw, table, &source, backend, run_dir, overrides, resume, None,
    )
}

/// [`prepare`] on rank 0 of a group of processes: sends the other ranks the resolved
/// experiment and joins the trainer to the group before it resumes (the
/// checkpoint goes to the other ranks too). `backend` is this rank's one device.
pub fn prepare_in_group(
    config_path: &Path,
    backend: &str,
    out: Option<PathBuf>,
    overrides: &[String],
    resume: bool,
    group: ProcessGroup,
) -> Result<Prepared> {
    let source = config_path.display().to_string();
    let run_dir = out.unwrap_or_else(|| default_run_dir(config_path));
    let raw = std::fs::read_to_string(config_path).map_err(|e| Error::io(config_path, e))?;
    let table = read_table(config_path)?;
    prepare_table(
        &raw,
        table,
        &source,
        backend,
        run_dir,
        overrides,
        resume,
        Some(group),
    )
}

/// `runs/<config name>`.
fn default_run_dir(config_path: &Path) -> PathBuf {
    PathBuf::from("runs").join(
        config_path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or("run".into()),
    )
}

/// [`prepare`] for an experiment already read: its text `raw` (for messages), its
/// table, and where it came from (`source`); with `group`, as rank 0 of it
/// ([`prepare_in_group`]).
#[allow(clippy::too_many_arguments)]
pub fn prepare_table(
    raw: &str,
    mut table: toml::Table,
    source: &str,
    backend: &str,
    run_dir: PathBuf,
    overrides: &[String],
    resume: bool,
    group: Option<ProcessGroup>,
) -> Result<Prepared> {
    let source = source.to_string();
    // Everything is checked (config, data, backend, model, checkpoint) before
    // anything is written, so a failing run leaves no directory behind.
    let overrides = overrides
        .iter()
        .map(|o| Override::parse(o))
        .collect::<Result<Vec<_>>>()?;
    for o in &overrides {
        o.apply(&mut table)?;
    }
    let origin = Origin {
        text: raw,
        source: &source,
        overrides: &overrides,
    };
    let mut resolved = resolve(table, &origin)?;
    let run_config = run_dir.join("config.toml");
    let mut changed = Vec::new();
    if resume {
        // The run's own config is the truth: the file (with this command's --set)
        // must agree with it, except that `--set` may change what
        // RESUMABLE_CHANGES lists; other differences of those keep the run's value.
        let run_text =
            std::fs::read_to_string(&run_config).map_err(|e| Error::io(&run_config, e))?;
        let run_source = run_config.display().to_string();
        let run_table = parse_table(&run_text, &run_source)?;
        let set_here = |key: &str| {
            overrides.iter().any(|o| {
                let k = o.key.join(".");
                k == key || (key == "train.steps" && k == "train.epochs")
            })
        };
        let mut refused = Vec::new();
        let mut kept = Vec::new();
        for (key, run, file) in config_changes(&run_table, &resolved.table) {
            if !RESUMABLE_CHANGES.contains(&key.as_str()) {
                refused.push(format!("{key}: run {run}, now {file}"));
            } else if set_here(&key) {
                changed.push(format!("{key} {run} -> {file}"));
            } else {
                kept.push(key);
            }
        }
        if !refused.is_empty() {
            return Err(Error::config(
                format!("{source} (--resume {})", run_dir.display()),
                format!(
                    "differs from the run's config.toml in {}. Pass the --set the run started with; on resume only {} may change, with --set",
                    refused.join("; "),
                    RESUMABLE_CHANGES.join(", ")
                ),
            ));
        }
        if !kept.is_empty() {
            let mut table = resolved.table.clone();
            for key in &kept {
                let path: Vec<String> = key.split('.').map(str::to_string).collect();
                let mut value = Some(toml::Value::Table(run_table.clone()));
                for k in &path {
                    value = value.and_then(|v| v.as_table().and_then(|t| t.get(k)).cloned());
                }
                match value {
                    Some(value) => Override {
                        arg: key.clone(),
                        key: path,
                        value,
                    }
                    .apply(&mut table)?,
                    None => remove_key(&mut table, &path),
                }
            }
            let origin = Origin {
                text: &run_text,
                source: &run_source,
                overrides: &[],
            };
            resolved.experiment = ExperimentConfig::from_table(table.clone(), &origin)?;
            resolved.table = table;
        }
    } else if run_config.exists() {
        return Err(Error::Usage(format!(
            "{}: a run is already there; pass --resume to continue it or --out to start another",
            run_dir.display()
        )));
    }
    let Resolved {
        experiment,
        table,
        train_set,
        test_set,
    } = resolved;
    let text = toml::to_string(&table).expect("a TOML table serialises");
    if let Some(t) = &experiment.train {
        for w in t.warnings() {
            eprintln!("warning: {w}");
        }
    }
    let devices = backend
        .split(',')
        .map(recursa_backends::device)
        .collect::<Result<Vec<_>>>()?;
    let mut trainer =
        Trainer::new_data_parallel(&text, &source, &devices).map_err(|e| match e {
            Error::Config { field, message } if !field.starts_with(&source) => {
                Error::config(format!("{source}: {field}"), message)
            }
            other => other,
        })?;
    if let Some(group) = group {
        let start = GroupStart {
            text: text.clone(),
            source: source.clone(),
            run_dir: run_dir.clone(),
            resume,
        };
        group.broadcast(serde_json::to_vec(&start).expect("plain data"))?;
        trainer.join_group(group)?;
    }
    if resume {
        trainer.resume(&run_dir.join("checkpoints"))?;
    }
    Ok(Prepared {
        trainer,
        train_set,
        test_set,
        run_dir,
        text,
        data: experiment.data.clone(),
        source,
        backend: backend.to_string(),
        resume,
        changed,
    })
}

/// Runs a prepared run to its end (or to step `until`): writes the run directory
/// (on resume: cuts metrics.jsonl back to the checkpoint), then trains.
pub fn run(prepared: Prepared, until: Option<usize>) -> Result<Option<EvalResult>> {
    let arc = arc_evaluator(prepared.data.as_ref(), &prepared.test_set, false)?;
    run_with(prepared, until, arc)
}

/// [`run`] with the ARC voting evaluator given (e.g. one scoring only some tasks).
pub fn run_with(
    prepared: Prepared,
    until: Option<usize>,
    arc: Option<ArcEvaluator>,
) -> Result<Option<EvalResult>> {
    let Prepared {
        mut trainer,
        train_set,
        test_set,
        run_dir,
        text,
        data: _,
        source,
        backend,
        resume,
        changed,
    } = prepared;
    let run_config = run_dir.join("config.toml");
    let log_path = run_dir.join("metrics.jsonl");
    if resume {
        // A resumed run trains again the steps after its checkpoint.
        let dropped = truncate_metrics(&log_path, trainer.step)?;
        if !changed.is_empty() {
            recursa_core::weights::write_atomic(&run_config, text.as_bytes())?;
            eprintln!("resuming with {}", changed.join(", "));
        }
        eprintln!(
            "resumed {} at step {}{}",
            run_dir.display(),
            trainer.step,
            if dropped > 0 {
                format!(" ({dropped} metrics lines after it dropped)")
            } else {
                String::new()
            }
        );
    }
    let created = !resume && !run_dir.exists();
    if !resume {
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        recursa_core::weights::write_atomic(&run_config, text.as_bytes())?;
    }
    let calls = trainer.model.schedule.calls_per_step();
    eprintln!(
        "{source}: {} parameters, {} train / {} test examples, {} network calls per supervision step, backend {backend}, run {}",
        crate::thousands(trainer.model.net.num_trainable_params()),
        rows(&train_set),
        rows(&test_set),
        calls.total(),
        run_dir.display()
    );
    let mut progress = crate::progress::TrainProgress::new(arc);
    let result = fit(
        &mut trainer,
        &train_set,
        &test_set,
        &run_dir,
        &text,
        until,
        &mut progress,
    );
    progress.finish(trainer.step, trainer.config.steps);
    if result.is_err() && !resume && !run_dir.join("checkpoints").exists() {
        // A new run that stopped before its first checkpoint (a step that failed,
        // `micro_batches = "auto"` finding no count that fits) could neither be
        // resumed nor started again in its directory: it leaves nothing behind.
        let _ = std::fs::remove_file(&run_config);
        let _ = std::fs::remove_file(&log_path);
        let _ = std::fs::remove_dir_all(run_dir.join("tensorboard"));
        if created {
            let _ = std::fs::remove_dir(&run_dir);
        }
        return result;
    }
    // The curves so far, also after --until or a stop on a non-finite loss.
    crate::plot::curves_after_training(&run_dir);
    result
}

/// The ARC voting evaluator for a dataset that is an ARC build (`test_puzzles.json`
/// beside its splits), so that every periodic evaluation logs pass@K. With several
/// directories, the first one's puzzles and identifiers (as the reference's
/// evaluator reads `data_paths[0]`); `test` (the loaded test split) gives the blank
/// identifier. `reference_quirks`: see `ArcEvalOptions`.
pub fn arc_evaluator(
    data: Option<&DataConfig>,
    test: &PuzzleSplit,
    reference_quirks: bool,
) -> Result<Option<ArcEvaluator>> {
    let Some(dir) = data.and_then(|d| d.dataset_dirs().into_iter().next()) else {
        return Ok(None);
    };
    if !dir.join("test_puzzles.json").exists() {
        return Ok(None);
    }
    let options = ArcEvalOptions {
        reference_quirks,
        blank_identifier_id: test.metadata().blank_identifier_id as i32,
        ..ArcEvalOptions::default()
    };
    ArcEvaluator::from_dir(&dir, options)
        .map(Some)
        .map_err(data_error)
}
