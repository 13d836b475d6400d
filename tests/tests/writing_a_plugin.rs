//! The example of docs/writing-a-plugin.md, compiled and run: a new halting
//! policy in one file. Everything between the two `---` markers is the plugin.

// --- the plugin -------------------------------------------------------------
use burn::tensor::{activation, Bool, Tensor};
use rand_chacha::ChaCha8Rng;
use recursa_core::registry::Plugin;
use recursa_core::state::{HaltInput, StepOutput};
use recursa_core::train::loss::bce_with_logits_sum;
use recursa_core::{Error, HaltingPolicy, Result, B};
use serde::{Deserialize, Serialize};

/// halt when sigmoid(q_halt) >= confidence (training); evaluation runs max_steps
///
/// Halts a row in training once the halting head is at least `confidence` sure
/// that its answer is right.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Plugin)]
#[serde(deny_unknown_fields)]
#[plugin(halting = "confident-halt")]
pub struct ConfidentHalt {
    /// most supervision steps
    pub max_steps: usize,
    /// probability threshold in (0, 1)
    pub confidence: f64,
}

impl HaltingPolicy for ConfidentHalt {
    /// Runs when the experiment file is read: a wrong value names its field.
    fn check_fields(&self) -> Result<()> {
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Error::config("halting.confidence", "must be in (0, 1)"));
        }
        Ok(())
    }

    fn max_steps(&self) -> usize {
        self.max_steps
    }

    fn halted(&self, input: &HaltInput, _rng: &mut ChaCha8Rng) -> Tensor<B, 1, Bool> {
        let last = input
            .steps
            .clone()
            .greater_equal_elem(self.max_steps as i64);
        if !input.training {
            return last;
        }
        let sure = activation::sigmoid(input.q_halt.clone()).greater_equal_elem(self.confidence);
        last.bool_or(sure)
    }

    /// Trains the halting head as ACT does: BCE against "the answer is right".
    fn q_loss(
        &self,
        out: &StepOutput,
        seq_is_correct: &Tensor<B, 1>,
    ) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        (
            Some(bce_with_logits_sum(
                out.q_halt_logits.clone(),
                seq_is_correct.clone(),
            )),
            None,
        )
    }
}
// --- end of the plugin ------------------------------------------------------

use recursa_core::experiment::ExperimentConfig;
use recursa_core::registry;
use recursa_core::train::trainer::Trainer;
use recursa_plugins as _;

#[test]
fn the_example_plugin_is_registered_and_trains() {
    let entry = registry::find(registry::Axis::Halting, "confident-halt").unwrap();
    assert_eq!(entry.fields.len(), 2);
    let text = recursa_tests::quick_flip_with_halting(
        "name = \"confident-halt\"\nmax_steps = 4\nconfidence = 0.9",
    );
    let e = ExperimentConfig::from_toml(&text, "quick-flip.toml").unwrap();
    let (train, _) = recursa::tasks::generate(e.data.as_ref().unwrap(), e.seed).unwrap();
    let batch = e.train.as_ref().unwrap().global_batch_size;
    let mut batches = recursa_core::train::data::sampled_batches(&train, batch, e.seed).unwrap();
    let mut t = Trainer::new(&e, &recursa_backends::device("cpu").unwrap()).unwrap();
    for _ in 0..4 {
        let m = t.train_step(&batches.next().unwrap().unwrap()).unwrap();
        assert!(m.lm_loss.is_finite() && m.q_halt_loss > 0.0, "{m:?}");
    }
    // Its own config errors come back through the experiment file, at load.
    let err = ExperimentConfig::from_toml(
        &recursa_tests::quick_flip_with_halting(
            "name = \"confident-halt\"\nmax_steps = 4\nconfidence = 2.0",
        ),
        "q.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("q.toml: halting.confidence"), "{err}");
}
