//! `recursa eval`: evaluate a run's checkpoint on its test split.
//!
//! Every example is rolled out for the halting policy's maximum steps (as during
//! training). Exact and token accuracy are always reported; when the dataset is an
//! ARC build (`identifiers.json` and `test_puzzles.json` beside the splits), the
//! predictions also go through the ARC voting evaluator: inverse augmentation,
//! votes ranked by count then mean sigmoid(q_halt), pass@K per task, and a
//! `submission.json` with two attempts per test input.
//!
//! With `trajectories` (PTRM, `recursa_core::train::trajectories`) each example is
//! rolled out K times with noise on z_H and the halting head picks one.

use std::path::PathBuf;

use recursa_core::experiment::{DataConfig, ExperimentConfig};
use recursa_core::train::checkpoint;
use recursa_core::train::data::rows;
use recursa_core::train::fit::evaluate_observed;
use recursa_core::train::trainer::{EvalResult, Trainer};
use recursa_core::train::trajectories::Trajectories;
use recursa_core::weights::write_atomic;
use recursa_core::{Error, Result};
use recursa_data::arc_eval::ArcEvalResult;
use serde::Serialize;

use crate::progress::EvalProgress;
use crate::tasks;

/// What `recursa eval` is asked to do.
pub struct EvalOptions {
    /// The run directory (its `config.toml` and `checkpoints/`).
    pub run: PathBuf,
    /// A checkpoint directory (`RUN/checkpoints/step-N`); default: the latest.
    pub checkpoint: Option<PathBuf>,
    /// A dataset directory to evaluate on instead of the run's `[data]`.
    pub data: Option<PathBuf>,
    pub backend: String,
    /// Rows per evaluation batch; default: the run's global batch size.
    pub batch: Option<usize>,
    /// ARC voting with the reference's two defects restored (see docs/data.md).
    pub reference_quirks: bool,
    /// Where outputs go; default `RUN/eval/step-N` (`step-N-trajectories-K` with noise or K > 1).
    pub out: Option<PathBuf>,
    /// K noisy trajectories per example, picked by the halting head (PTRM); `None`: one, no noise.
    pub trajectories: Option<Trajectories>,
}

/// What `recursa eval` found, as written to `metrics.json`.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub checkpoint: PathBuf,
    pub step: usize,
    pub examples: usize,
    pub exact_accuracy: f64,
    pub accuracy: f64,
    pub net_calls_per_example: usize,
    pub seconds: f64,
    /// Trajectories per example and their noise, when asked for (PTRM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trajectories: Option<TrajectoriesReport>,
    /// `ARC/pass@K` -> value, when the dataset is an ARC build.
    pub arc: Option<std::collections::BTreeMap<String, f64>>,
    pub out: PathBuf,
}

/// The noisy-trajectory settings as `metrics.json` records them.
#[derive(Debug, Serialize)]
pub struct TrajectoriesReport {
    pub count: usize,
    pub latent_noise: f64,
    pub seed: u64,
}

/// Evaluates a run's checkpoint; writes `metrics.json` (and for ARC
/// `submission.json` and `eval_result.json`) into the output directory.
pub fn eval(opts: &EvalOptions) -> Result<EvalReport> {
    let config_path = opts.run.join("config.toml");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let source = config_path.display().to_string();
    let experiment = ExperimentConfig::from_toml(&text, &source)?;
    let data = match (&opts.data, &experiment.data) {
        (Some(path), _) => DataConfig::dataset(path),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            return Err(Error::config(
                format!("{source}: data"),
                "missing [data] section; pass --data DIR",
            ))
        }
    };
    let (_, test) = tasks::load(&data, experiment.seed)?;
    let checkpoint = match &opts.checkpoint {
        Some(c) => c.clone(),
        None => checkpoint::latest(&opts.run.join("checkpoints"))?,
    };
    let device = recursa_backends::device(&opts.backend)?;
    let mut trainer = Trainer::new(&experiment, &device)?;
    trainer.resume_from(&checkpoint)?;
    // The command line's trajectories, else the experiment's `[eval]`.
    if let Some(t) = &opts.trajectories {
        t.validate()?;
        trainer.eval_trajectories = Some(*t);
    }
    let trajectories = trainer.eval_trajectories;
    let batch = opts
        .batch
        .unwrap_or(trainer.config.global_batch_size)
        .max(1);
    let out = opts.out.clone().unwrap_or_else(|| {
        let name = match trajectories {
            Some(t) if t.count > 1 || t.latent_noise > 0.0 => {
                format!("step-{}-trajectories-{}", trainer.step, t.count)
            }
            _ => format!("step-{}", trainer.step),
        };
        opts.run.join("eval").join(name)
    });
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;

    let arc = crate::train::arc_evaluator(Some(&data), &test, opts.reference_quirks)?;
    eprintln!(
        "evaluating {} (step {}) on {} test examples, {} per batch, backend {}",
        checkpoint.display(),
        trainer.step,
        rows(&test),
        batch,
        opts.backend
    );
    let mut progress = EvalProgress::new(arc);
    let result: EvalResult = evaluate_observed(&trainer, &test, batch, &mut progress)?;
    let arc = progress.finish();
    let arc_result: Option<ArcEvalResult> = arc.map(|a| a.result());
    if let Some(r) = &arc_result {
        let submission = out.join("submission.json");
        write_atomic(&submission, &r.submission_json())?;
        let full = serde_json::to_vec(r).map_err(|e| Error::Other(e.to_string()))?;
        write_atomic(&out.join("eval_result.json"), &full)?;
    }
    let report = EvalReport {
        checkpoint,
        step: result.step,
        examples: result.examples,
        exact_accuracy: result.exact_accuracy,
        accuracy: result.accuracy,
        net_calls_per_example: result.net_calls_per_example,
        seconds: result.seconds,
        trajectories: trajectories.map(|t| TrajectoriesReport {
            count: t.count,
            latent_noise: t.latent_noise,
            seed: t.seed,
        }),
        arc: arc_result.map(|r| r.metrics),
        out: out.clone(),
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Other(e.to_string()))?;
    write_atomic(&out.join("metrics.json"), &json)?;
    Ok(report)
}

/// The report as the command prints it.
pub fn summary(r: &EvalReport) -> String {
    let mut s = format!(
        "step {}: exact accuracy {:.4}, token accuracy {:.4} on {} examples ({} network calls each, {:.1} s)\n",
        r.step, r.exact_accuracy, r.accuracy, r.examples, r.net_calls_per_example, r.seconds
    );
    if let Some(t) = &r.trajectories {
        s += &format!(
            "{} noisy trajectories per example (sigma {}, seed {}), picked by q_halt\n",
            t.count, t.latent_noise, t.seed
        );
    }
    if let Some(arc) = &r.arc {
        let line: Vec<String> = arc.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        s += &format!("{}\n", line.join(", "));
    }
    s += &format!("written to {}", r.out.display());
    s
}
