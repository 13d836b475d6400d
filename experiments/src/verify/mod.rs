//! `recursa verify-reference FILE`: rebuild what a reference fixture ran and compare.
//!
//! The fixture's `kind` (from its metadata, never its file name) selects what is run.
//! Every compared tensor gives one [`Comparison`]; the file passes when every float
//! tensor is within the fixture README's tolerance and every discrete one is exact.

pub mod compare;
pub mod dis;
pub mod train;

use std::path::Path;

use crate::tolerance::Tolerances;
use recursa_core::step::StepContext;
use recursa_core::{Device, Error, Result};
use serde::Serialize;

use compare::{
    check_float, check_int, model_from_reference, read_batch, Comparison, Fixture, Tolerance,
};

/// The fixture kinds this release can run.
pub const SUPPORTED_KINDS: &[&str] = &[
    "trm_forward",
    "trm_train_step",
    "hrm_forward",
    "baseline_forward",
    "dis",
    "stablemax",
    "arc_dataset",
    "arc_eval",
];

/// Everything checked in one fixture file.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub kind: String,
    pub comparisons: Vec<Comparison>,
}

impl Report {
    /// True when every comparison passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.comparisons.is_empty() && self.comparisons.iter().all(|c| c.ok)
    }
}

/// The data crate's checks (ARC builder and evaluator fixtures) as comparisons:
/// each is exact (sets keyed by puzzle name, pass@K in f64, the submission).
fn data_checks(
    checks: std::result::Result<Vec<recursa_data::Check>, recursa_data::DataError>,
) -> Result<Vec<Comparison>> {
    let checks = checks.map_err(Error::from_data)?;
    Ok(checks
        .into_iter()
        .map(|c| Comparison {
            tensor: c.name,
            shape: vec![],
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            mismatches: usize::from(!c.ok),
            tolerance: Tolerance::Exact,
            ok: c.ok,
            detail: Some(c.detail),
        })
        .collect())
}

/// Runs the fixture at `path` on `device` and compares every stored output.
pub fn verify_file(path: &Path, device: &Device) -> Result<Report> {
    let fx = Fixture::open(path)?;
    let comparisons = match fx.kind.as_str() {
        "trm_forward" | "hrm_forward" | "baseline_forward" => verify_forward(&fx, device)?,
        "dis" => dis::verify_dis(&fx, device)?,
        "trm_train_step" => train::verify_trm_train_step(&fx, device)?,
        "stablemax" => train::verify_stablemax(&fx, device)?,
        "arc_dataset" => data_checks(recursa_data::verify_arc_dataset(path))?,
        "arc_eval" => data_checks(recursa_data::verify_arc_eval(path))?,
        other => {
            return Err(Error::Input(format!(
                "{}: fixture kind `{other}` is not supported by this release (supported: {})",
                fx.file,
                SUPPORTED_KINDS.join(", ")
            )))
        }
    };
    Ok(Report {
        file: fx.file.clone(),
        kind: fx.kind.clone(),
        comparisons,
    })
}

/// `trm_forward`, `hrm_forward`, `baseline_forward`: K evaluation ACT steps from
/// the initial carry with one batch.
fn verify_forward(fx: &Fixture, device: &Device) -> Result<Vec<Comparison>> {
    let st = fx.tensors()?;
    let model = model_from_reference(fx, device)?;
    let tol = Tolerances::for_net(&model.net.config);
    let (act, q) = (tol.activations(), tol.q_logits());
    let (act_atol, act_rtol, q_atol) = (act.atol, act.rtol, q.atol);
    let batch = read_batch(&st, &fx.file, "", device)?;
    let steps = (1..)
        .take_while(|k| st.tensor(&format!("step{k}.logits")).is_ok())
        .count();
    if steps == 0 {
        return Err(Error::Input(format!(
            "{}: no `step1.logits` to compare",
            fx.file
        )));
    }
    let mut carry = model.initial_carry(&batch);
    let mut ctx = StepContext::eval();
    let mut out = Vec::new();
    for k in 1..=steps {
        let (next, step) = model.step(carry, &batch, &mut ctx);
        carry = next;
        let p = format!("step{k}.");
        out.push(check_float(
            &st,
            fx,
            &format!("{p}logits"),
            step.logits,
            act_atol,
            act_rtol,
        )?);
        out.push(check_float(
            &st,
            fx,
            &format!("{p}q_halt_logits"),
            step.q_halt_logits,
            q_atol,
            0.0,
        )?);
        out.push(check_float(
            &st,
            fx,
            &format!("{p}q_continue_logits"),
            step.q_continue_logits,
            q_atol,
            0.0,
        )?);
        out.push(check_float(
            &st,
            fx,
            &format!("{p}z_H"),
            carry.latents.z_h.clone(),
            act_atol,
            act_rtol,
        )?);
        if st.tensor(&format!("{p}z_L")).is_ok() {
            out.push(check_float(
                &st,
                fx,
                &format!("{p}z_L"),
                carry.latents.z_l.clone(),
                act_atol,
                act_rtol,
            )?);
        }
        out.push(check_int(
            &st,
            fx,
            &format!("{p}halted"),
            carry.halted.clone().int(),
        )?);
        out.push(check_int(
            &st,
            fx,
            &format!("{p}steps"),
            carry.steps.clone(),
        )?);
    }
    Ok(out)
}
