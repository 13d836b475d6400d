//! The evaluation rollout relies on the halting contract: in evaluation every policy
//! runs its maximum, so a batch halts together after `max_steps` steps. A policy that
//! leaves a row running is refused with an error naming it, not scored on a partial
//! rollout.

use burn::tensor::{Bool, Tensor};
use rand_chacha::ChaCha8Rng;
use recursa_core::experiment::ExperimentConfig;
use recursa_core::registry::Plugin;
use recursa_core::state::HaltInput;
use recursa_core::train::trainer::Trainer;
use recursa_core::{HaltingPolicy, B};
use recursa_plugins as _;
use serde::{Deserialize, Serialize};

/// never halts a row, not even in evaluation (breaks the halting contract)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(halting = "never-halt")]
pub struct NeverHalt {
    /// supervision steps it claims as its maximum
    pub max_steps: usize,
}

impl HaltingPolicy for NeverHalt {
    fn max_steps(&self) -> usize {
        self.max_steps
    }

    fn halted(&self, input: &HaltInput, _rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool> {
        input.steps.clone().lower_elem(0)
    }
}

fn evaluate(halting: &str) -> Result<f64, String> {
    let e = ExperimentConfig::from_toml(
        &recursa_tests::quick_flip_with_halting(halting),
        "quick-flip.toml",
    )
    .unwrap();
    let (_, test) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    let t = Trainer::new(&e, &recursa_backends::device("cpu").unwrap()).unwrap();
    t.evaluate(&test, 64)
        .map(|r| r.exact_accuracy)
        .map_err(|e| e.to_string())
}

#[test]
fn a_policy_that_does_not_halt_in_evaluation_is_refused() {
    let err = evaluate("name = \"never-halt\"\nmax_steps = 2").unwrap_err();
    assert!(
        err.contains("`never-halt`") && err.contains("after its 2 steps"),
        "{err}"
    );
    // A policy that keeps the contract is scored.
    let acc = evaluate("name = \"fixed\"\nsteps = 2").unwrap();
    assert!((0.0..=1.0).contains(&acc), "{acc}");
}
