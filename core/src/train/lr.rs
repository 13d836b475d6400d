//! Learning-rate schedule: linear warmup from step 1, then cosine to `min_ratio`
//! (reference `cosine_schedule_with_warmup_lr_lambda`; constant after warmup when
//! `min_ratio` is 1, as in the TRM runs).

use serde::{Deserialize, Serialize};

/// Warmup and cosine decay; one per optimizer, each with its own base rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// Steps of linear warmup (reference `lr_warmup_steps`).
    pub warmup_steps: usize,
    /// Total optimizer steps of the run.
    pub total_steps: usize,
    /// Final rate as a fraction of the base (reference `lr_min_ratio`; 1 = constant).
    pub min_ratio: f64,
}

impl LrSchedule {
    /// The rate at 1-based optimizer step `step` for base rate `base`.
    pub fn lr(&self, base: f64, step: usize) -> f64 {
        if step < self.warmup_steps {
            return base * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let progress = (step - self.warmup_steps) as f64
            / (self.total_steps.saturating_sub(self.warmup_steps)).max(1) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        base * (self.min_ratio + (1.0 - self.min_ratio) * cosine).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_lambda() {
        let s = LrSchedule {
            warmup_steps: 2,
            total_steps: 10,
            min_ratio: 1.0,
        };
        // The fixture's rates: step 1 = base/2, step 2 = base.
        assert_eq!(s.lr(1e-3, 1), 5e-4);
        assert_eq!(s.lr(1e-3, 2), 1e-3);
        assert_eq!(s.lr(1e-3, 9), 1e-3);
        let c = LrSchedule {
            warmup_steps: 0,
            total_steps: 100,
            min_ratio: 0.1,
        };
        assert!((c.lr(1.0, 0) - 1.0).abs() < 1e-12);
        assert!((c.lr(1.0, 50) - 0.55).abs() < 1e-12);
        assert!((c.lr(1.0, 100) - 0.1).abs() < 1e-12);
    }
}
