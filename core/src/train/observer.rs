//! What the fit loop reports while it runs, and where it logs.
//!
//! Core prints nothing: [`fit`](crate::train::fit::fit) hands every metrics line,
//! evaluation batch and checkpoint to a caller's [`FitObserver`] (the CLI draws a
//! progress bar and adds ARC pass@K), and logs through [`MetricsLog`]
//! (`metrics.jsonl` and TensorBoard event files, the same numbers in both).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::train::data::HostBatch;
use crate::train::tensorboard::EventWriter;
use crate::{Error, Result};

/// Told what the fit loop does; every method has a do-nothing default.
pub trait FitObserver {
    /// Training runs from step `first` to step `stop` (of `total`).
    fn started(&mut self, _first: usize, _stop: usize, _total: usize) {}
    /// One metrics line as logged (`kind` is `train` or `eval`).
    fn record(&mut self, _line: &serde_json::Value) {}
    /// An evaluation of `batches` batches starts at training step `step`.
    fn eval_started(&mut self, _step: usize, _batches: usize) {}
    /// One evaluation batch is done: its rows, the argmax predictions
    /// (`[rows * seq_len]`) and the halting logits (`[rows]`), e.g. for ARC voting.
    fn eval_batch(&mut self, _host: &HostBatch, _preds: &[i32], _q_halt: &[f32]) -> Result<()> {
        Ok(())
    }
    /// The evaluation is over: metrics to add to its line (e.g. `ARC/pass@2`).
    fn eval_metrics(&mut self) -> Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }
    /// A checkpoint was written.
    fn saved(&mut self, _checkpoint: &Path) {}
}

/// Reports nothing (library callers that only want the result).
pub struct Silent;

impl FitObserver for Silent {}

/// A run's logs: `metrics.jsonl` (one JSON object per line) and the same numbers
/// as TensorBoard scalars under `tensorboard/`.
pub struct MetricsLog {
    jsonl_path: PathBuf,
    jsonl: File,
    events: EventWriter,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` for appending and starts a fresh TensorBoard
    /// event file that replays the lines already there: after a resume (which cuts
    /// `metrics.jsonl` back to its checkpoint) TensorBoard shows exactly the file's
    /// steps, once each. Replayed events carry the time of the replay.
    pub fn open(run_dir: &Path) -> Result<MetricsLog> {
        let jsonl_path = run_dir.join("metrics.jsonl");
        let tb_dir = run_dir.join("tensorboard");
        if let Ok(entries) = std::fs::read_dir(&tb_dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains("tfevents") {
                    std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                }
            }
        }
        let mut events = EventWriter::create(&tb_dir)?;
        match std::fs::read_to_string(&jsonl_path) {
            Ok(text) => {
                for line in text.lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                        events.metrics_line(&v)?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&jsonl_path, e)),
        }
        events.flush()?;
        let jsonl = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .map_err(|e| Error::io(&jsonl_path, e))?;
        Ok(MetricsLog {
            jsonl_path,
            jsonl,
            events,
        })
    }

    /// Appends one line to both logs.
    pub fn write(&mut self, line: &serde_json::Value) -> Result<()> {
        writeln!(self.jsonl, "{line}").map_err(|e| Error::io(&self.jsonl_path, e))?;
        self.events.metrics_line(line)
    }

    /// Hands everything written so far to the operating system (no fsync: a crash
    /// may lose the last lines, which a resume writes again).
    pub fn flush(&mut self) -> Result<()> {
        self.jsonl
            .flush()
            .map_err(|e| Error::io(&self.jsonl_path, e))?;
        self.events.flush()
    }
}
