//! Progress of long data jobs (dataset builds, generators), reported to a sink the
//! program installs once (the CLI draws a bar); silent when none is, as the `log`
//! crate's logger. A global hook keeps every builder's options free of callbacks.

use std::sync::OnceLock;

/// Receives `done` of `total` units of the job `what` (e.g. `arc build: tasks`).
pub trait ProgressSink: Send + Sync {
    fn update(&self, what: &str, done: u64, total: u64);
}

static SINK: OnceLock<Box<dyn ProgressSink>> = OnceLock::new();

/// Installs the process's sink; only the first call has an effect.
pub fn set_sink(sink: Box<dyn ProgressSink>) {
    let _ = SINK.set(sink);
}

/// Reports progress to the installed sink, if any.
pub fn report(what: &str, done: usize, total: usize) {
    if let Some(sink) = SINK.get() {
        sink.update(what, done as u64, total as u64);
    }
}
