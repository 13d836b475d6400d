//! CGAR (Curriculum-Guided Adaptive Recursion, arXiv 2511.08653): two additions to TRM
//! training, each an option of an existing plugin.
//!
//! * Progressive depth curriculum: the recursion depth (T, n) grows with the fraction
//!   of training done, ρ. The paper's stages for T = 3, n = 6 are (1, 2) while
//!   ρ < 0.3, (2, 4) while ρ < 0.6, then (3, 6); evaluation always runs the full depth.
//!   recursa: the `curriculum` field of the `trm` and `dis` schedules, a list of
//!   [`DepthStage`]s.
//! * Hierarchical supervision weighting: supervision step t weighted `λ^(t-1)`
//!   (λ = 0.7), so early steps, which see the least refined latents, weigh most.
//!   recursa: the `step_decay` field of the `final-answer` and `dis-linear-path`
//!   targets, a per-row weight of the language-model loss.
//!
//! | recursa              | CGAR code                    | paper        |
//! |----------------------|------------------------------|--------------|
//! | `until`              | the 0.3 / 0.6 thresholds     | ρ = e / E    |
//! | `h_cycles`, `l_cycles` of a stage | `set_curriculum_depth` | (T_s, n_s) |
//! | `step_decay`         | `supervision_decay`          | λ            |
//! | `steps` (1-based)    | `carry.steps + 1`            | t            |
//!
//! Two differences from the authors' code, on purpose: progress is counted in optimizer
//! steps (recursa's runs are step-budgeted; their code counts epochs), and the weight is
//! per row, from each row's own step, on the language-model loss only (their code
//! multiplies the whole ACT loss, Q terms included, by one scalar `λ^mean(steps)` per
//! batch). The paper writes `w_t = λ^(t-1) / Z_λ` without defining Z_λ; the code does not
//! normalise, and neither does recursa.

use burn::tensor::{Int, Tensor};
use recursa_core::error::check_count;
use recursa_core::schedule::MAX_CYCLES;
use recursa_core::{Error, Result, B};
use serde::{Deserialize, Serialize};

/// One stage of a depth curriculum: T and n while the fraction of training done is below `until`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthStage {
    /// The stage ends when this fraction of the training steps is done, in (0, 1].
    pub until: f64,
    /// T during the stage.
    pub h_cycles: usize,
    /// n during the stage.
    pub l_cycles: usize,
}

/// The stage that applies at `progress` (fraction of training done), or `None` once
/// the last stage has ended: then the schedule's own depth applies.
pub fn stage_at(stages: &[DepthStage], progress: f64) -> Option<DepthStage> {
    stages.iter().copied().find(|s| progress < s.until)
}

/// Checks a curriculum: `until` strictly rising in (0, 1], every stage's T and n at
/// least 1 and at most the full depth's. Errors name `schedule.curriculum[i]`.
pub fn check_curriculum(stages: &[DepthStage], t: usize, n: usize) -> Result<()> {
    let mut previous = 0.0;
    for (i, s) in stages.iter().enumerate() {
        let field = |f: &str| format!("schedule.curriculum[{i}].{f}");
        if !(s.until > previous && s.until <= 1.0) {
            return Err(Error::config(
                field("until"),
                format!("{}: must rise from stage to stage, in (0, 1]", s.until),
            ));
        }
        previous = s.until;
        check_count(&field("h_cycles"), s.h_cycles, MAX_CYCLES)?;
        check_count(&field("l_cycles"), s.l_cycles, MAX_CYCLES)?;
        if s.h_cycles > t || s.l_cycles > n {
            let deeper = if s.h_cycles > t {
                "h_cycles"
            } else {
                "l_cycles"
            };
            return Err(Error::config(
                field(deeper),
                format!(
                    "stage ({}, {}) is deeper than the schedule's h_cycles = {t}, l_cycles = {n}, which evaluation runs",
                    s.h_cycles, s.l_cycles
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a `step_decay` λ: finite and in (0, 1].
pub fn check_step_decay(decay: Option<f64>) -> Result<()> {
    match decay {
        Some(l) if !(l.is_finite() && l > 0.0 && l <= 1.0) => Err(Error::config(
            "target.step_decay",
            format!("{l}: must be in (0, 1]"),
        )),
        _ => Ok(()),
    }
}

/// CGAR's weight of each row's loss, `λ^(t-1)`, for `steps` = t (the step just
/// taken, counting from 1). `[batch]`
pub fn step_weights(steps: &Tensor<B, 1, Int>, decay: f64) -> Tensor<B, 1> {
    // λ^(t-1) = exp((t - 1) ln λ)
    ((steps.clone().float() - 1.0) * decay.ln()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper() -> Vec<DepthStage> {
        vec![
            DepthStage {
                until: 0.3,
                h_cycles: 1,
                l_cycles: 2,
            },
            DepthStage {
                until: 0.6,
                h_cycles: 2,
                l_cycles: 4,
            },
        ]
    }

    #[test]
    fn the_paper_curriculum_deepens_at_30_and_60_percent() {
        let s = paper();
        let depth = |p| stage_at(&s, p).map(|s| (s.h_cycles, s.l_cycles));
        assert_eq!(depth(0.0), Some((1, 2)));
        assert_eq!(depth(0.299), Some((1, 2)));
        assert_eq!(depth(0.3), Some((2, 4)));
        assert_eq!(depth(0.599), Some((2, 4)));
        assert_eq!(depth(0.6), None);
        assert_eq!(depth(1.0), None);
        check_curriculum(&s, 3, 6).unwrap();
    }

    #[test]
    fn a_curriculum_out_of_order_or_too_deep_is_refused_by_field() {
        let mut s = paper();
        s[1].until = 0.2;
        let e = check_curriculum(&s, 3, 6).unwrap_err().to_string();
        assert!(e.contains("schedule.curriculum[1].until"), "{e}");
        let e = check_curriculum(&paper(), 1, 6).unwrap_err().to_string();
        assert!(
            e.contains("schedule.curriculum[1]") && e.contains("deeper"),
            "{e}"
        );
        let e = check_step_decay(Some(1.5)).unwrap_err().to_string();
        assert!(e.contains("target.step_decay"), "{e}");
    }

    #[test]
    fn step_weights_are_powers_of_the_decay() {
        let device = Default::default();
        let steps = Tensor::<B, 1, Int>::from_ints([1, 2, 3, 16], &device);
        let w: Vec<f32> = step_weights(&steps, 0.7).into_data().to_vec().unwrap();
        let want = [1.0, 0.7, 0.49, 0.7f32.powi(15)];
        for (w, want) in w.iter().zip(want) {
            assert!((w - want).abs() < 1e-6 * want.max(1.0), "{w} vs {want}");
        }
    }
}
