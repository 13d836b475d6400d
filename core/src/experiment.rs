//! The experiment file: one TOML that names the network shape and a plugin on each axis.
//!
//! ```toml
//! seed = 0
//! [net]
//! seq_len = 900
//! vocab_size = 12
//! # ... every NetConfig field
//! [schedule]
//! name = "trm"
//! h_cycles = 3
//! l_cycles = 4
//! [target]
//! name = "final-answer"
//! [halting]
//! name = "act-halt"
//! max_steps = 16
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{NetConfig, ReasoningNet};
use crate::registry::{self, Axis};
use crate::step::LoopedModel;
use crate::train::trainer::TrainConfig;
use crate::{Device, Error, HaltingConfig, Result, ScheduleConfig, TargetConfig};

/// A parsed experiment file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Fixes initialisation (and, in training, data order and exploration).
    #[serde(default)]
    pub seed: u64,
    /// The reasoning network.
    pub net: NetConfig,
    /// Axis 1: which network calls a supervision step makes.
    pub schedule: Box<dyn ScheduleConfig>,
    /// Axis 2: what each supervision step is trained against.
    pub target: Box<dyn TargetConfig>,
    /// Axis 3: whether a sample gets another supervision step.
    pub halting: Box<dyn HaltingConfig>,
    /// How to train (needed by `recursa train`).
    #[serde(default)]
    pub train: Option<TrainConfig>,
    /// Where the examples come from (needed by `recursa train`).
    #[serde(default)]
    pub data: Option<DataConfig>,
}

/// `[data]` of an experiment file: where the examples come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataConfig {
    /// A dataset directory in the reference format (`train/`, `test/`), as
    /// `recursa data arc|sudoku|maze|nqueens` writes it. Its `identifiers` count
    /// sets `net.num_puzzle_identifiers` when the experiment leaves it at 1.
    Dataset {
        /// The dataset directory.
        path: std::path::PathBuf,
    },
    /// A small generated grid task for quick CPU runs: the answer is the
    /// question grid transformed (`transform`: `flip`, `transpose`, `rotate`, `shift-colors`).
    GeneratedGrid {
        /// Side of the square grid.
        size: usize,
        /// Colours used (tokens 1..=colors; 0 is padding).
        colors: usize,
        /// The transform to learn.
        transform: String,
        /// Training examples.
        train_examples: usize,
        /// Held-out test examples (never seen in training).
        test_examples: usize,
    },
}

impl ExperimentConfig {
    /// Parses an experiment from TOML text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self> {
        // Check plugin names first, so an unknown one lists the registered plugins.
        let value: toml::Value = toml::from_str(text)
            .map_err(|e| Error::config(source, format!("not valid TOML: {}", e.message())))?;
        for axis in Axis::ALL {
            if let Some(table) = value.get(axis.key()) {
                match table.get("name").and_then(|n| n.as_str()) {
                    Some(name) => {
                        registry::find(axis, name).map_err(|e| {
                            Error::config(format!("{source}: {}.name", axis.key()), e.to_string())
                        })?;
                    }
                    None => {
                        return Err(Error::config(
                            format!("{source}: {}.name", axis.key()),
                            format!("missing; known: {}", registry::known_names(axis)),
                        ))
                    }
                }
            }
        }
        let config: ExperimentConfig = toml::from_str(text).map_err(|e| {
            let field = e.span().map(|s| locate(text, s.start)).unwrap_or_default();
            Error::config(format!("{source}{field}"), e.message().to_string())
        })?;
        config.net.validate().map_err(|e| match e {
            Error::Config { field, message } => {
                Error::config(format!("{source}: net.{field}"), message)
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Reads and parses an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Builds the model this experiment describes, initialised from `seed`.
    pub fn build(&self, device: &Device) -> Result<LoopedModel> {
        let net = ReasoningNet::new(&self.net, self.seed, device)?;
        LoopedModel::new(
            net,
            self.schedule.build()?,
            self.target.build()?,
            self.halting.build()?,
        )
    }
}

/// ` (line L)` for a byte offset into `text`.
fn locate(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!(", line {line}")
}
