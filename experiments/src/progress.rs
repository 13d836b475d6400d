//! Progress on stderr: indicatif bars on a terminal; under nohup, Slurm or CI (stderr
//! not a terminal) one plain line every `RECURSA_PROGRESS_SECONDS` (default 10) and at
//! the end, so logs stay short and readable.
//!
//! [`TrainProgress`] is the CLI's [`FitObserver`]: it draws the training and
//! evaluation bars and, on ARC datasets, feeds every evaluation through the voting
//! evaluator so each periodic evaluation logs pass@K as the reference does.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use recursa_core::train::data::{data_error, HostBatch};
use recursa_core::train::observer::FitObserver;
use recursa_core::Result;
use recursa_data::arc_eval::{ArcEvalBatch, ArcEvaluator};
use recursa_data::progress::ProgressSink;

const BAR_TEMPLATE: &str = "{prefix} [{bar:30}] {pos}/{len} {msg} | {elapsed_precise} ETA {eta}";

/// Seconds between plain progress lines when stderr is not a terminal.
fn plain_interval() -> Duration {
    let secs = std::env::var("RECURSA_PROGRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

/// One task's progress: a bar on a terminal, periodic lines otherwise.
pub struct Progress {
    what: String,
    total: u64,
    bar: Option<ProgressBar>,
    start: Instant,
    last_line: Instant,
    interval: Duration,
    pos: u64,
    first: u64,
    message: String,
}

impl Progress {
    /// Progress of `what` (e.g. `train`, `eval`, `arc build`) over `total` units.
    pub fn new(what: &str, total: u64) -> Progress {
        Self::starting_at(what, 0, total)
    }

    /// As [`Self::new`], resuming at `first` (rates and ETA count from there).
    pub fn starting_at(what: &str, first: u64, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(BAR_TEMPLATE)
                    // A constant, checked by the test below.
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(what.to_string());
            bar.set_position(first);
            bar.reset_eta();
            bar
        });
        let now = Instant::now();
        Progress {
            what: what.to_string(),
            total,
            bar,
            start: now,
            last_line: now,
            interval: plain_interval(),
            pos: first,
            first,
            message: String::new(),
        }
    }

    /// Moves to `pos` with the figures `message` (e.g. `loss 0.41 | acc 0.93`).
    pub fn set(&mut self, pos: u64, message: String) {
        self.pos = pos;
        self.message = message;
        match &self.bar {
            Some(bar) => {
                bar.set_position(pos);
                bar.set_message(self.message.clone());
            }
            None if self.last_line.elapsed() >= self.interval => self.plain_line(),
            None => {}
        }
    }

    /// A line above the bar (or a plain line).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Ends the task; the plain mode prints its last state.
    pub fn finish(mut self) {
        match self.bar.take() {
            Some(bar) => bar.finish(),
            None => self.plain_line(),
        }
    }

    /// Ends the task and removes its bar (a sub-task such as one evaluation).
    pub fn finish_and_clear(mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn plain_line(&mut self) {
        self.last_line = Instant::now();
        let secs = self.start.elapsed().as_secs_f64();
        let rate = (self.pos - self.first.min(self.pos)) as f64 / secs.max(1e-9);
        let eta = self.total.saturating_sub(self.pos) as f64 / rate.max(1e-9);
        let sep = if self.message.is_empty() { "" } else { " | " };
        eprintln!(
            "{} {}/{}{sep}{} | {secs:.0}s, ETA {eta:.0}s",
            self.what, self.pos, self.total, self.message
        );
    }
}

/// Draws the data crate's progress reports (builds, generators) as [`Progress`] bars.
struct DataProgress(Mutex<Option<Progress>>);

impl ProgressSink for DataProgress {
    fn update(&self, what: &str, done: u64, total: u64) {
        // A panic elsewhere while holding the lock leaves a usable bar.
        let mut current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|p| p.what != what) {
            if let Some(old) = current.take() {
                old.finish();
            }
        }
        let p = current.get_or_insert_with(|| Progress::new(what, total));
        p.set(done, String::new());
        if done >= total {
            if let Some(p) = current.take() {
                p.finish();
            }
        }
    }
}

/// Shows the progress of data builds and generators on stderr.
pub fn install_data_progress() {
    recursa_data::progress::set_sink(Box::new(DataProgress(Mutex::new(None))));
}

/// Accuracy over the rows that halted in the last few steps (a step where no row
/// halted shows the recent figure, not 0).
#[derive(Default)]
pub struct RunningAccuracy {
    window: VecDeque<(f64, f64, f64)>,
}

impl RunningAccuracy {
    /// Steps the running figure covers.
    pub const STEPS: usize = 20;

    /// Adds one step: its halted-row count and the mean token and exact accuracy
    /// over them.
    pub fn add(&mut self, count: f64, accuracy: f64, exact: f64) {
        if self.window.len() == Self::STEPS {
            self.window.pop_front();
        }
        self.window
            .push_back((count, accuracy * count, exact * count));
    }

    /// (token accuracy, exact accuracy) over the window, `None` before any row halted.
    pub fn get(&self) -> Option<(f64, f64)> {
        let (n, a, e) = self
            .window
            .iter()
            .fold((0.0, 0.0, 0.0), |s, x| (s.0 + x.0, s.1 + x.1, s.2 + x.2));
        (n > 0.0).then(|| (a / n, e / n))
    }
}

/// An evaluation as the CLI shows it: a bar over its batches and, on ARC data, the
/// voting evaluator fed every batch (`recursa eval`, and each evaluation in training).
pub struct EvalProgress {
    bar: Option<Progress>,
    done: u64,
    arc: Option<ArcEvaluator>,
}

impl EvalProgress {
    /// `arc`: the voting evaluator for an ARC dataset.
    pub fn new(arc: Option<ArcEvaluator>) -> EvalProgress {
        EvalProgress {
            bar: None,
            done: 0,
            arc,
        }
    }

    /// Removes the bar; returns the voting evaluator with every batch in it.
    pub fn finish(mut self) -> Option<ArcEvaluator> {
        self.clear();
        self.arc
    }

    fn clear(&mut self) {
        if let Some(p) = self.bar.take() {
            p.finish_and_clear();
        }
    }
}

impl FitObserver for EvalProgress {
    fn eval_started(&mut self, _step: usize, batches: usize) {
        self.bar = Some(Progress::new("eval", batches as u64));
        self.done = 0;
        if let Some(arc) = &mut self.arc {
            arc.begin_eval();
        }
    }

    fn eval_batch(&mut self, host: &HostBatch, preds: &[i32], q_halt: &[f32]) -> Result<()> {
        self.done += 1;
        if let Some(p) = &mut self.bar {
            p.set(self.done, String::new());
        }
        if let Some(arc) = &mut self.arc {
            arc.update_batch(&ArcEvalBatch {
                inputs: &host.inputs,
                puzzle_identifiers: &host.puzzle_identifiers,
                preds,
                q_halt_logits: q_halt,
            })
            .map_err(data_error)?;
        }
        Ok(())
    }

    fn eval_metrics(&mut self) -> Result<Vec<(String, f64)>> {
        self.clear();
        Ok(match &self.arc {
            Some(arc) => arc.result().metrics.into_iter().collect(),
            None => Vec::new(),
        })
    }
}

/// The CLI's view of a training run: bars (or plain lines) for training and each
/// evaluation, evaluation summaries, and ARC pass@K when the test split is an ARC build.
pub struct TrainProgress {
    train: Option<Progress>,
    eval: EvalProgress,
    running: RunningAccuracy,
}

impl TrainProgress {
    /// `arc`: the voting evaluator for an ARC dataset, run at every evaluation.
    pub fn new(arc: Option<ArcEvaluator>) -> TrainProgress {
        TrainProgress {
            train: None,
            eval: EvalProgress::new(arc),
            running: RunningAccuracy::default(),
        }
    }

    fn say(&self, line: &str) {
        match &self.train {
            Some(p) => p.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Ends the bars; says how to continue when the run stopped early.
    pub fn finish(mut self, step: usize, total: usize) {
        if let Some(p) = self.train.take() {
            p.finish();
        }
        if step < total {
            eprintln!("stopped at step {step} of {total}; continue with --resume");
        }
    }
}

impl FitObserver for TrainProgress {
    fn started(&mut self, first: usize, _stop: usize, total: usize) {
        self.train = Some(Progress::starting_at("train", first as u64, total as u64));
    }

    fn record(&mut self, line: &serde_json::Value) {
        let num = |k: &str| line.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let step = num("step") as u64;
        match line.get("kind").and_then(|k| k.as_str()) {
            Some("train") => {
                self.running
                    .add(num("count"), num("accuracy"), num("exact_accuracy"));
                let acc = match self.running.get() {
                    Some((acc, exact)) => format!("acc {acc:.3} | exact {exact:.3}"),
                    None => "acc - | exact -".to_string(),
                };
                let message = format!(
                    "loss {:.4} | {acc} | {:.0} ex/s",
                    num("lm_loss"),
                    num("examples_per_s")
                );
                if let Some(p) = &mut self.train {
                    p.set(step, message);
                }
            }
            Some("eval") => {
                let mut s = format!(
                    "eval at step {step}: exact accuracy {:.4} ({} examples), token accuracy {:.4}, {} network calls per example",
                    num("exact_accuracy"),
                    num("examples"),
                    num("accuracy"),
                    num("net_calls_per_example")
                );
                if let Some(obj) = line.as_object() {
                    let arc: Vec<String> = obj
                        .iter()
                        .filter(|(k, _)| k.starts_with("ARC/"))
                        .filter_map(|(k, v)| v.as_f64().map(|v| format!("{k} {v:.4}")))
                        .collect();
                    if !arc.is_empty() {
                        s += &format!("; {}", arc.join(", "));
                    }
                }
                self.say(&s);
            }
            Some("micro_batches") => {
                let m = num("micro_batches");
                self.say(&format!(
                    "train.micro_batches = \"auto\": {m} micro-batches of {} rows ({:.1} MB per row; the step adds {:.0} of the {:.0} MB it may use)",
                    num("rows") / m.max(1.0),
                    num("bytes_per_row") / 1e6,
                    num("need_bytes") / 1e6,
                    num("budget_bytes") / 1e6
                ));
            }
            _ => {}
        }
    }

    fn eval_started(&mut self, step: usize, batches: usize) {
        self.eval.eval_started(step, batches);
    }

    fn eval_batch(&mut self, host: &HostBatch, preds: &[i32], q_halt: &[f32]) -> Result<()> {
        self.eval.eval_batch(host, preds, q_halt)
    }

    fn eval_metrics(&mut self) -> Result<Vec<(String, f64)>> {
        self.eval.eval_metrics()
    }

    fn saved(&mut self, checkpoint: &Path) {
        if self.train.as_ref().is_some_and(|p| p.bar.is_none()) {
            self.say(&format!("checkpoint {}", checkpoint.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_accuracy_covers_recent_halted_rows() {
        let mut r = RunningAccuracy::default();
        assert_eq!(r.get(), None);
        r.add(4.0, 0.5, 0.25);
        // A step where nothing halted keeps the recent figure.
        r.add(0.0, 0.0, 0.0);
        assert_eq!(r.get(), Some((0.5, 0.25)));
        r.add(4.0, 1.0, 1.0);
        assert_eq!(r.get(), Some((0.75, 0.625)));
        for _ in 0..RunningAccuracy::STEPS {
            r.add(2.0, 0.0, 0.0);
        }
        assert_eq!(r.get(), Some((0.0, 0.0)));
    }

    #[test]
    fn the_bar_template_is_valid() {
        // Progress::starting_at unwraps it; a terminal is not needed to check it.
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }
}
