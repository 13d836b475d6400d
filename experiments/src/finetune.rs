//! `recursa finetune`: test-time fine-tuning on the demonstrations of test tasks
//! (arXiv 2511.02886: full fine-tuning of a pretrained TRM on the test tasks' train
//! pairs beat tuning only the task embeddings, and LoRA).
//!
//! An ARC build holds, for every test task, its demonstration pairs in the train
//! split (every augmentation a puzzle of the task's group, with its own identifier
//! and puzzle-embedding row) and its test inputs in the test split. Fine-tuning keeps
//! only the chosen tasks' puzzles of both splits (identifiers unchanged, so the
//! checkpoint's puzzle table fits), starts from the checkpoint's weights (its EMA
//! copy when it has one, which is what evaluation scores), trains every parameter
//! and the puzzle rows for `steps` steps with a fresh optimizer, and scores the
//! chosen tasks with the voting evaluator before and after.
//!
//! | recursa            | paper                                     |
//! |--------------------|-------------------------------------------|
//! | `tasks`            | the test tasks adapted to                 |
//! | `steps`, `lr`      | post-training steps and learning rate     |
//! | (train split rows) | the augmented demonstration pairs         |
//! | voting evaluator   | voting over augmentations at evaluation   |
//!
//! Not done here: the paper's first quarter of embedding-only steps, and re-initialised
//! task embeddings for variants the checkpoint never saw (in an ARC build every test
//! task's puzzles already have trained rows).
//!
//! The output directory is a run directory (`config.toml`, `metrics.jsonl`,
//! `checkpoints/`), so `recursa eval` and `recursa plot` work on it; its `[data]` is
//! the whole dataset, so `recursa eval` there scores every test task.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;

use recursa_core::experiment::{parse_table, ExperimentConfig};
use recursa_core::train::checkpoint;
use recursa_core::train::data::{data_error, rows, PuzzleSplit};
use recursa_core::train::fit::evaluate_observed;
use recursa_core::train::trainer::Trainer;
use recursa_core::weights::write_atomic;
use recursa_core::{Error, Result};
use recursa_data::arc_eval::ArcEvaluator;
use serde::Serialize;

use crate::progress::EvalProgress;
use crate::tasks;
use crate::train::{arc_evaluator, prepare_table, run_with};

/// What `recursa finetune` is asked to do.
pub struct FinetuneOptions {
    /// The pretrained run (its `config.toml` and `checkpoints/`).
    pub run: PathBuf,
    /// A checkpoint directory; default: the run's latest.
    pub checkpoint: Option<PathBuf>,
    /// Test tasks to adapt to, by name; empty: every test task.
    pub tasks: Vec<String>,
    /// Optimizer steps of fine-tuning.
    pub steps: usize,
    /// Learning rate of the dense parameters; default: the run's.
    pub lr: Option<f64>,
    /// Rows per step; default: the run's global batch size, capped at what one epoch
    /// of the chosen tasks always fills.
    pub batch: Option<usize>,
    pub backend: String,
    /// The fine-tuned run's directory; default `RUN/finetune/step-N`.
    pub out: Option<PathBuf>,
    /// Train without the run's EMA (evaluation then scores the trained weights).
    pub no_ema: bool,
}

/// Scores of the chosen tasks at one point.
#[derive(Debug, Serialize)]
pub struct Scores {
    pub exact_accuracy: f64,
    /// Token accuracy over the labelled cells.
    pub accuracy: f64,
    /// `ARC/pass@K` -> value over the chosen tasks.
    pub arc: BTreeMap<String, f64>,
}

/// What `recursa finetune` did, as written to `finetune.json`.
#[derive(Debug, Serialize)]
pub struct FinetuneReport {
    pub checkpoint: PathBuf,
    pub tasks: Vec<String>,
    pub steps: usize,
    pub batch: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    pub before: Scores,
    pub after: Scores,
    pub out: PathBuf,
}

/// Fine-tunes a run's checkpoint on the chosen test tasks' demonstrations and scores
/// those tasks before and after; writes the fine-tuned run and `finetune.json`.
pub fn finetune(opts: &FinetuneOptions) -> Result<FinetuneReport> {
    if opts.steps == 0 {
        return Err(Error::config("--steps", "must be at least 1"));
    }
    let config_path = opts.run.join("config.toml");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let source = config_path.display().to_string();
    let experiment = ExperimentConfig::from_toml(&text, &source)?;
    let data = experiment
        .data
        .clone()
        .ok_or_else(|| Error::config(format!("{source}: data"), "missing [data] section"))?;
    let (train, test) = tasks::load(&data, experiment.seed)?;
    let new_evaluator = || -> Result<ArcEvaluator> {
        arc_evaluator(Some(&data), &test, false)?.ok_or_else(|| {
            Error::config(
                format!("{source}: data"),
                "fine-tuning needs an ARC build (test_puzzles.json beside the splits)",
            )
        })
    };
    let mut evaluator = new_evaluator()?;
    let known: BTreeSet<String> = evaluator
        .task_names()
        .into_iter()
        .map(String::from)
        .collect();
    let chosen: BTreeSet<String> = if opts.tasks.is_empty() {
        known.clone()
    } else {
        opts.tasks.iter().cloned().collect()
    };
    if let Some(unknown) = chosen.iter().find(|t| !known.contains(*t)) {
        return Err(Error::config(
            "--tasks",
            format!(
                "{unknown} is not a test task of {} ({} test tasks there)",
                data.dataset_dirs()
                    .first()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                known.len()
            ),
        ));
    }
    evaluator
        .retain_tasks(|t| chosen.contains(t))
        .map_err(data_error)?;
    let mine = |evaluator: &ArcEvaluator, id: i32| {
        evaluator.task_of(id).is_some_and(|t| chosen.contains(t))
    };
    let train = train
        .keep_puzzles(|id| mine(&evaluator, id))
        .map_err(data_error)?;
    let test = test
        .keep_puzzles(|id| mine(&evaluator, id))
        .map_err(data_error)?;

    // The group sampler fills each batch from one puzzle per group and drops an
    // epoch's partial batch, so a batch must fit what every epoch surely yields.
    let per_epoch = surely_per_epoch(&train);
    if per_epoch == 0 {
        return Err(Error::config(
            "--tasks",
            "the chosen tasks have a puzzle without demonstration rows in the train split: nothing to fine-tune on",
        ));
    }
    let run_batch = experiment.train.as_ref().map_or(1, |t| t.global_batch_size);
    let batch = match opts.batch {
        Some(b) if b == 0 || b > per_epoch => {
            return Err(Error::config(
                "--batch",
                format!("{b}: an epoch of the chosen tasks' demonstrations always fills only {per_epoch} rows"),
            ))
        }
        Some(b) => b,
        None => run_batch.min(per_epoch),
    };

    let checkpoint = match &opts.checkpoint {
        Some(c) => c.clone(),
        None => checkpoint::latest(&opts.run.join("checkpoints"))?,
    };
    let weights = ["ema.safetensors", "model.safetensors"]
        .iter()
        .map(|f| checkpoint.join(f))
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::config(
                format!("{}", checkpoint.display()),
                "no model.safetensors in the checkpoint",
            )
        })?;
    let step = checkpoint
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("step-")?.parse::<usize>().ok())
        .unwrap_or(0);
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.run.join("finetune").join(format!("step-{step}")));

    if out.join("config.toml").exists() {
        return Err(Error::Usage(format!(
            "{}: a fine-tuned run is already there; pass --out to write another",
            out.display()
        )));
    }

    // The run's experiment, restarted from the checkpoint's weights.
    let mut table = parse_table(&text, &source)?;
    if let Some(t) = table.get_mut("train").and_then(|t| t.as_table_mut()) {
        t.remove("epochs");
        if opts.no_ema {
            t.remove("ema");
        }
    }
    match experiment.train.as_ref().and_then(|t| t.ema) {
        Some(rate) if !opts.no_ema && (opts.steps as f64) * (1.0 - rate) < 1.0 => eprintln!(
            "warning: the run's EMA ({rate}) over {} steps keeps most of the pretrained weights in what is scored; pass --no-ema or more --steps",
            opts.steps
        ),
        _ => {}
    }
    let mut overrides = vec![
        format!("train.steps={}", opts.steps),
        format!("train.global_batch_size={batch}"),
        format!("train.init_from={:?}", weights.display().to_string()),
        format!("train.lr_warmup_steps={}", opts.steps / 10),
        format!("train.eval_interval={}", opts.steps),
        format!("train.checkpoint_interval={}", opts.steps),
        "train.micro_batches=1".to_string(),
    ];
    if let Some(lr) = opts.lr {
        overrides.push(format!("train.lr={lr:e}"));
    }
    let mut prepared = prepare_table(
        &text,
        table,
        &source,
        &opts.backend,
        out.clone(),
        &overrides,
        false,
        None,
    )?;
    prepared.train_set = train;
    prepared.test_set = test.clone();

    eprintln!(
        "fine-tuning {} on {} task(s): {} demonstration rows, {} test rows, {} steps of {batch}",
        weights.display(),
        chosen.len(),
        rows(&prepared.train_set),
        rows(&test),
        opts.steps
    );
    let before = score(&prepared.trainer, &test, batch, new_evaluator()?, &chosen)?;
    let train_examples = rows(&prepared.train_set);
    run_with(prepared, None, Some(evaluator))?;
    // Score the fine-tuned checkpoint as `recursa eval` would.
    let mut trainer = Trainer::new(
        &ExperimentConfig::from_toml(
            &std::fs::read_to_string(out.join("config.toml")).map_err(|e| Error::io(&out, e))?,
            &out.join("config.toml").display().to_string(),
        )?,
        &recursa_backends::device(&opts.backend)?,
    )?;
    trainer.resume_from(&checkpoint::latest(&out.join("checkpoints"))?)?;
    let after = score(&trainer, &test, batch, new_evaluator()?, &chosen)?;
    let report = FinetuneReport {
        checkpoint,
        tasks: chosen.into_iter().collect(),
        steps: opts.steps,
        batch,
        train_examples,
        test_examples: rows(&test),
        before,
        after,
        out: out.clone(),
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Other(e.to_string()))?;
    write_atomic(&out.join("finetune.json"), &json)?;
    Ok(report)
}

/// Rows every epoch of the group sampler surely yields: per group, its smallest puzzle.
fn surely_per_epoch(split: &PuzzleSplit) -> usize {
    split
        .sets()
        .iter()
        .map(|set| {
            let (p, g) = (set.puzzle_indices(), set.group_indices());
            (0..set.groups())
                .map(|i| (g[i]..g[i + 1]).map(|j| p[j + 1] - p[j]).min().unwrap_or(0))
                .sum::<usize>()
        })
        .min()
        .unwrap_or(0)
}

/// The chosen tasks' scores of `trainer`'s weights.
fn score(
    trainer: &Trainer,
    test: &PuzzleSplit,
    batch: usize,
    mut evaluator: ArcEvaluator,
    chosen: &BTreeSet<String>,
) -> Result<Scores> {
    evaluator
        .retain_tasks(|t| chosen.contains(t))
        .map_err(data_error)?;
    let mut progress = EvalProgress::new(Some(evaluator));
    let r = evaluate_observed(trainer, test, batch, &mut progress)?;
    let arc = progress
        .finish()
        .map(|a| a.result().metrics)
        .unwrap_or_default();
    Ok(Scores {
        exact_accuracy: r.exact_accuracy,
        accuracy: r.accuracy,
        arc,
    })
}

/// The report as the command prints it.
pub fn summary(r: &FinetuneReport) -> String {
    let line = |s: &Scores| {
        let mut parts = vec![
            format!("exact accuracy {:.4}", s.exact_accuracy),
            format!("token accuracy {:.4}", s.accuracy),
        ];
        for k in ["ARC/pass@1", "ARC/pass@2"] {
            if let Some(v) = s.arc.get(k) {
                parts.push(format!("{k} {v:.4}"));
            }
        }
        parts.join(", ")
    };
    format!(
        "{} task(s), {} steps of {} on {} demonstration rows\nbefore: {}\nafter:  {}\nwritten to {}",
        r.tasks.len(),
        r.steps,
        r.batch,
        r.train_examples,
        line(&r.before),
        line(&r.after),
        r.out.display()
    )
}
