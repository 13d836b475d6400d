//! Fault injection for the crash tests: with `RECURSA_FAULT=<point>:<step>` the
//! process SIGKILLs itself when it reaches `point` at optimizer step `step`, as
//! `kill -9` would at that instant, so a test can stop a run at an exact place.
//!
//! Points: `train-step` (after backward, before the optimizer), `checkpoint`
//! (the step directory written, not yet published), `arc-build` (the dataset's
//! temporary directory written, not yet renamed; step 0). Unset, nothing happens.

use std::sync::OnceLock;

/// The fault this process was started with, read once.
fn armed() -> &'static Option<(String, usize)> {
    static FAULT: OnceLock<Option<(String, usize)>> = OnceLock::new();
    FAULT.get_or_init(|| {
        let spec = std::env::var("RECURSA_FAULT").ok()?;
        let (point, step) = spec.split_once(':').unwrap_or((spec.as_str(), "0"));
        Some((point.to_string(), step.parse().ok()?))
    })
}

/// Kills this process with SIGKILL if `RECURSA_FAULT` names `point` at `step`.
pub fn point(point: &str, step: usize) {
    if let Some((p, s)) = armed() {
        if p == point && *s == step {
            eprintln!("RECURSA_FAULT: killing the process at {point}:{step}");
            kill_self();
        }
    }
}

#[cfg(unix)]
fn kill_self() {
    // SAFETY: kill(2) on our own pid with a signal that cannot be caught.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_self() {
    std::process::abort();
}
