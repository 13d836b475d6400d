//! `recursa train`: run an experiment file from scratch or resume it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use recursa_core::experiment::ExperimentConfig;
use recursa_core::train::data::{check_split, rows};
use recursa_core::train::trainer::{fit, EvalResult, Trainer};
use recursa_core::{Error, Result};

use crate::tasks;

/// Applies `--set a.b=value` overrides to experiment TOML text. The value is read
/// as TOML (`3`, `1e-3`, `true`, `"rope"`), or as a string when it is not.
pub fn apply_overrides(text: &str, source: &str, overrides: &[String]) -> Result<String> {
    if overrides.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml::Table = toml::from_str(text)
        .map_err(|e| Error::config(source, format!("not valid TOML: {}", e.message())))?;
    for o in overrides {
        let (path, value) = o.split_once('=').ok_or_else(|| {
            Error::config(
                format!("--set {o}"),
                "expected KEY=VALUE, e.g. train.steps=100",
            )
        })?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let keys: Vec<&str> = path.split('.').collect();
        let (last, tables) = keys.split_last().expect("split always yields one part");
        let mut table = &mut doc;
        for k in tables {
            table = table
                .entry(k.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    Error::config(format!("--set {o}"), format!("`{k}` is not a table"))
                })?;
        }
        table.insert(last.to_string(), value);
    }
    Ok(toml::to_string(&doc).expect("a TOML table serialises"))
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
    let source = config_path.display().to_string();
    let run_dir = out.unwrap_or_else(|| {
        PathBuf::from("runs").join(
            config_path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or("run".into()),
        )
    });
    let mut text = if resume {
        // The run's own resolved config, so a resumed run is the same run.
        let resolved = run_dir.join("config.toml");
        std::fs::read_to_string(&resolved).map_err(|e| Error::io(&resolved, e))?
    } else {
        let raw = std::fs::read_to_string(config_path).map_err(|e| Error::io(config_path, e))?;
        apply_overrides(&raw, &source, overrides)?
    };
    let mut experiment = ExperimentConfig::from_toml(&text, &source)?;
    let data = experiment
        .data
        .as_ref()
        .ok_or_else(|| Error::config(format!("{source}: data"), "missing [data] section"))?;
    let (train_set, test_set) = tasks::load(data, experiment.seed)?;
    // A dataset decides the size of the puzzle table unless the experiment does.
    let ids = train_set.metadata().num_puzzle_identifiers as usize;
    if experiment.net.num_puzzle_identifiers == 1 && ids > 1 {
        text = apply_overrides(
            &text,
            &source,
            &[format!("net.num_puzzle_identifiers={ids}")],
        )?;
        experiment = ExperimentConfig::from_toml(&text, &source)?;
    }
    // Epochs become steps as the reference counts them, from the training split.
    if let Some(epochs) = experiment.train.as_ref().and_then(|t| t.epochs) {
        let t = experiment.train.as_ref().expect("epochs came from [train]");
        let m = train_set.metadata();
        let steps = epochs * m.total_groups as f64 * m.mean_puzzle_examples
            / t.global_batch_size.max(1) as f64;
        if t.steps != 0 && t.steps != steps as usize {
            return Err(Error::config(
                format!("{source}: train.steps"),
                format!(
                    "{} and train.epochs = {epochs} ({} steps) disagree; give one",
                    t.steps, steps as usize
                ),
            ));
        }
        if t.steps == 0 {
            text = apply_overrides(&text, &source, &[format!("train.steps={}", steps as usize)])?;
            experiment = ExperimentConfig::from_toml(&text, &source)?;
        }
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
        .map_err(|e| Error::Other(format!("{source}: {e}")))?;
    }

    if !resume {
        if run_dir.join("config.toml").exists() {
            return Err(Error::Other(format!(
                "{}: a run is already there; pass --resume to continue it or --out to start another",
                run_dir.display()
            )));
        }
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        recursa_core::weights::write_atomic(&run_dir.join("config.toml"), text.as_bytes())?;
    }
    let devices = backend
        .split(',')
        .map(recursa_backends::device)
        .collect::<Result<Vec<_>>>()?;
    let mut trainer = Trainer::new_data_parallel(&text, &source, &devices)?;
    if resume {
        trainer.resume(&run_dir.join("checkpoints"))?;
        eprintln!("resumed {} at step {}", run_dir.display(), trainer.step);
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
    let log_path = run_dir.join("metrics.jsonl");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let result = fit(
        &mut trainer,
        &train_set,
        &test_set,
        &run_dir,
        &text,
        until,
        &mut log,
    );
    // The curves so far, also after --until or a stop on a non-finite loss.
    crate::plot::curves_after_training(&run_dir);
    result
}
