//! The fit loop: train to the end (or to a stop), evaluating, logging, checkpointing
//! and reporting to an observer; core prints nothing.

use std::path::Path;
use std::time::Instant;

use crate::train::data::{data_error, test_batches, GroupSampler, Prefetch, PuzzleSplit};
use crate::train::observer::{FitObserver, MetricsLog};
use crate::train::trainer::{EvalResult, Trainer};
use crate::{Error, Result};

/// Runs `trainer` to `config.steps` (or to step `until`, leaving a checkpoint to
/// resume from), evaluating, logging to `run_dir/metrics.jsonl` and
/// `run_dir/tensorboard/` (see [`MetricsLog`]), checkpointing into
/// `run_dir/checkpoints`, and reporting to `observer`. Stops with a saved state and
/// an error when the loss stops being finite. `None` when stopped before the end.
pub fn fit(
    trainer: &mut Trainer,
    train: &PuzzleSplit,
    test: &PuzzleSplit,
    run_dir: &Path,
    experiment_toml: &str,
    until: Option<usize>,
    observer: &mut dyn FitObserver,
) -> Result<Option<EvalResult>> {
    let cfg = trainer.config.clone();
    let checkpoints = run_dir.join("checkpoints");
    let eval_every = if cfg.eval_interval == 0 {
        cfg.steps
    } else {
        cfg.eval_interval
    };
    let save_every = if cfg.checkpoint_interval == 0 {
        eval_every
    } else {
        cfg.checkpoint_interval
    };
    let tokens_per_step = (cfg.global_batch_size * train.metadata().seq_len as usize) as f64;
    // Ranks 1.. of a group of processes train and evaluate but write nothing.
    let mut log = match trainer.is_leader() {
        true => Some(MetricsLog::open(run_dir)?),
        false => None,
    };
    // The group sampler runs ahead on a background thread; each batch carries the
    // sampler state after it, which is what a checkpoint records.
    let sampler = GroupSampler::resume(train, cfg.global_batch_size, trainer.seed, trainer.sampler)
        .map_err(data_error)?;
    let mut batches =
        Prefetch::new_fallible(sampler.into_host_batches(0, 1).map_err(data_error)?, 2)
            .map_err(data_error)?;
    let start = Instant::now();
    let first = trainer.step;
    // Forward-pass accounting: network calls per example in step s (a depth curriculum
    // makes it grow), the act-q bootstrap pass included, and their running sum.
    let calls_at = |model: &crate::step::LoopedModel, s: usize| {
        let progress = crate::train::trainer::progress_at(s, cfg.steps);
        let calls = model.calls_per_step_at(Some(progress));
        (calls, calls.total() * (1 + model.halting.extra_passes()))
    };
    let mut calls_so_far: usize = (1..=first).map(|s| calls_at(&trainer.model, s).1).sum();
    let mut last_eval = None;
    let stop = until.unwrap_or(cfg.steps).min(cfg.steps);
    observer.started(first, stop, cfg.steps);
    while trainer.step < stop {
        let next = batches
            .next()
            .ok_or_else(|| Error::Other("the training sampler stopped".into()))?
            .map_err(data_error)?;
        let m = trainer.train_step(&next.batch)?;
        if let Some(plan) = trainer.micro_batch_plan.take() {
            let line = serde_json::json!({
                "kind": "micro_batches", "step": trainer.step, "rows": next.batch.rows / trainer.world(),
                "micro_batches": plan.micro_batches, "bytes_per_row": plan.per_row,
                "need_bytes": plan.need, "budget_bytes": plan.budget,
                "first_step_bytes": plan.first_step,
            });
            if let Some(log) = &mut log {
                log.write(&line)?;
            }
            observer.record(&line);
        }
        trainer.sampler = next.state_after;
        let step = trainer.step;
        if !(m.lm_loss.is_finite() && m.q_halt_loss.is_finite()) {
            let saved = trainer.save(&checkpoints, experiment_toml)?;
            return Err(Error::Other(format!(
                "step {step}: the loss is not finite (lm_loss {}, q_halt_loss {}); state saved in {}",
                m.lm_loss,
                m.q_halt_loss,
                saved.display()
            )));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let rate = (step - first) as f64 / elapsed.max(1e-9);
        // Forward-pass accounting: network calls per example in this supervision
        // step, and in all optimizer steps so far (every row makes one step each).
        let (calls, per_example) = calls_at(&trainer.model, step);
        calls_so_far += per_example;
        let line = serde_json::json!({
            "kind": "train", "step": step, "lr": trainer.schedule.lr(cfg.lr, step),
            "lm_loss": m.lm_loss, "q_halt_loss": m.q_halt_loss, "accuracy": m.accuracy,
            "exact_accuracy": m.exact_accuracy, "q_halt_accuracy": m.q_halt_accuracy,
            "steps": m.steps, "count": m.count,
            "net_calls_per_example": per_example, "net_calls_with_grad": calls.with_grad,
            "net_calls_total": calls_so_far * cfg.global_batch_size,
            "examples_per_s": rate * cfg.global_batch_size as f64, "tokens_per_s": rate * tokens_per_step,
        });
        if let Some(log) = &mut log {
            log.write(&line)?;
        }
        observer.record(&line);
        if step.is_multiple_of(eval_every) || step == cfg.steps {
            let r = evaluate_observed(trainer, test, cfg.global_batch_size, observer)?;
            let mut line = serde_json::json!({ "kind": "eval", "step": step, "exact_accuracy": r.exact_accuracy,
                "accuracy": r.accuracy, "examples": r.examples, "seconds": r.seconds,
                "net_calls_per_example": r.net_calls_per_example });
            for (k, v) in observer.eval_metrics()? {
                line[k] = serde_json::json!(v);
            }
            if let Some(log) = &mut log {
                log.write(&line)?;
            }
            observer.record(&line);
            last_eval = Some(r);
        }
        if step.is_multiple_of(save_every) || step == stop {
            let saved = trainer.save(&checkpoints, experiment_toml)?;
            observer.saved(&saved);
        }
        if let Some(log) = &mut log {
            log.flush()?;
        }
    }
    if trainer.step < cfg.steps {
        return Ok(None);
    }
    Ok(last_eval)
}

/// [`Trainer::evaluate`] with every batch reported to `observer`.
pub fn evaluate_observed(
    trainer: &Trainer,
    test: &PuzzleSplit,
    batch_size: usize,
    observer: &mut dyn FitObserver,
) -> Result<EvalResult> {
    let mut batches = 0;
    for set in test.sets() {
        batches += test_batches(set, batch_size, 0, 1)
            .map_err(data_error)?
            .len();
    }
    observer.eval_started(trainer.step, batches);
    trainer.evaluate_with(test, batch_size, |host, preds, q| {
        observer.eval_batch(host, preds, q)
    })
}
