//! `recursa verify-reference`: run reference fixtures and compare every output.

use std::path::PathBuf;

use recursa_core::Result;

use crate::verify;

#[derive(clap::Args)]
pub struct VerifyReferenceArgs {
    /// Fixture files (`.safetensors` from the reference generator).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Device to run on: cpu, ndarray, cuda, cuda:N, wgpu, tch.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

/// One JSON line per compared tensor and a verdict line per file; `Ok(false)` when a
/// comparison failed.
pub fn run(args: VerifyReferenceArgs) -> Result<bool> {
    let VerifyReferenceArgs { files, backend } = args;
    let device = recursa_backends::device(&backend)?;
    let mut all_ok = true;
    for file in &files {
        let report = verify::verify_file(file, &device)?;
        for c in &report.comparisons {
            println!(
                "{}",
                serde_json::to_string(c).expect("plain data serialises")
            );
        }
        let failed = report.comparisons.iter().filter(|c| !c.ok).count();
        let verdict = if report.passed() { "pass" } else { "FAIL" };
        println!(
            "{}",
            serde_json::json!({
                "verdict": verdict,
                "file": report.file,
                "kind": report.kind,
                "backend": backend,
                "tensors": report.comparisons.len(),
                "failed": failed,
            })
        );
        eprintln!(
            "{verdict}: {} ({}, {backend}): {} tensors compared, {failed} outside tolerance",
            report.file,
            report.kind,
            report.comparisons.len()
        );
        all_ok &= report.passed();
    }
    Ok(all_ok)
}
