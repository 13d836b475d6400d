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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{NetConfig, ReasoningNet};
use crate::registry::{self, Axis};
use crate::step::LoopedModel;
use crate::train::config::TrainConfig;
use crate::train::trajectories::Trajectories;
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
    /// How evaluation rolls out: K noisy trajectories per example picked by the
    /// halting head (PTRM); absent: one plain rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<Trajectories>,
}

/// `[data]` of an experiment file: where the examples come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataConfig {
    /// A dataset directory in the reference format (`train/`, `test/`), as
    /// `recursa data arc|sudoku|maze|nqueens` writes it. Its `identifiers` count
    /// sets `net.num_puzzle_identifiers` when the experiment leaves it at 1.
    Dataset {
        /// The dataset directory (give this or `paths`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        /// Several dataset directories trained on as one (the reference's
        /// `data_paths`): their sets are walked in turn, their groups and puzzle
        /// identifier counts add up (see `PuzzleSplit::open_merged`). The test split
        /// and the ARC evaluator use the same directories.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        paths: Vec<PathBuf>,
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

/// One `--set KEY=VALUE` of the command line, parsed.
#[derive(Clone, Debug)]
pub struct Override {
    /// As the user wrote it, for error messages.
    pub arg: String,
    /// `train.steps` as `["train", "steps"]`.
    pub key: Vec<String>,
    /// Read as TOML (`3`, `1e-3`, `true`, `"rope"`), or as a string when it is not.
    pub value: toml::Value,
}

impl Override {
    /// Parses `KEY=VALUE`.
    pub fn parse(arg: &str) -> Result<Self> {
        let (key, value) = arg
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--set {arg}: expected KEY=VALUE, e.g. train.steps=100"
                ))
            })?;
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        Ok(Override {
            arg: arg.to_string(),
            key: key.trim().split('.').map(str::to_string).collect(),
            value,
        })
    }

    /// Writes the value into `doc`, creating tables on the way.
    pub fn apply(&self, doc: &mut toml::Table) -> Result<()> {
        let (last, tables) = self
            .key
            .split_last()
            .expect("split yields at least one part");
        let mut table = doc;
        for k in tables {
            table = table
                .entry(k.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    Error::config(
                        format!("--set {}", self.arg),
                        format!("`{k}` is not a table"),
                    )
                })?;
        }
        table.insert(last.clone(), self.value.clone());
        Ok(())
    }
}

/// Parses experiment TOML text into a table; a syntax error names `source` and the line.
pub fn parse_table(text: &str, source: &str) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| locate(text, s.start)).unwrap_or_default();
        Error::config(
            format!("{source}{line}"),
            format!("not valid TOML: {}", e.message().trim()),
        )
    })
}

impl ExperimentConfig {
    /// Parses and checks an experiment from TOML text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self> {
        Self::from_toml_with(text, source, &[])
    }

    /// Parses `text` with `--set` overrides applied on top, then checks every
    /// field (see [`ExperimentConfig::validate`]). Errors name the file, the key and
    /// its line, or the override that set the key.
    pub fn from_toml_with(text: &str, source: &str, overrides: &[Override]) -> Result<Self> {
        let mut table = parse_table(text, source)?;
        for o in overrides {
            o.apply(&mut table)?;
        }
        Self::from_table(
            table,
            &Origin {
                text,
                source,
                overrides,
            },
        )
    }

    /// Parses and checks an experiment already read into a table.
    pub fn from_table(table: toml::Table, origin: &Origin) -> Result<Self> {
        // Check plugin names first, so an unknown one lists the registered plugins.
        for axis in Axis::ALL {
            if let Some(t) = table.get(axis.key()) {
                let field = [axis.key().to_string(), "name".to_string()];
                match t.get("name").and_then(|n| n.as_str()) {
                    Some(name) => {
                        registry::find(axis, name)
                            .map_err(|e| Error::config(origin.name(&field), e.to_string()))?;
                    }
                    None => {
                        return Err(Error::config(
                            origin.name(&field),
                            format!("missing; known: {}", registry::known_names(axis)),
                        ))
                    }
                }
            }
        }
        let value = toml::Value::Table(table.clone());
        let config: ExperimentConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let mut path: Vec<String> = e
                .path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    _ => None,
                })
                .collect();
            let message = e.inner().to_string();
            // `unknown field `x`` names the key itself.
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next())
                .map(str::to_string);
            if let Some(key) = unknown {
                if path.last() != Some(&key) {
                    path.push(key);
                }
            } else if let [axis] = path.as_slice() {
                // Plugin tables are read through typetag, which hides the inner
                // key: find it from the value the message quotes.
                if let Some(key) = table
                    .get(axis)
                    .and_then(|t| t.as_table())
                    .and_then(|t| key_quoted_in(t, &message))
                {
                    path.push(key);
                }
            }
            Error::config(origin.name(&path), message.trim().to_string())
        })?;
        config.validate().map_err(|e| match e {
            Error::Config { field, message } => {
                let path: Vec<String> = field.split('.').map(str::to_string).collect();
                Error::config(origin.name(&path), message)
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Reads, parses and checks an experiment file (resolving `extends`, see
    /// [`read_table`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let source = path.display().to_string();
        let origin = Origin {
            text: &text,
            source: &source,
            overrides: &[],
        };
        Self::from_table(read_table(path)?, &origin)
    }

    /// Checks every field against its range and the plugins against the network,
    /// so that a run fails before it writes anything. Errors name the field
    /// (`train.lr`, `schedule.h_cycles`, `net.hidden_size`).
    pub fn validate(&self) -> Result<()> {
        self.net.validate().map_err(|e| e.within("net"))?;
        crate::step::check_plugins(
            &self.net,
            &*self.schedule.build()?,
            &*self.target.build()?,
            &*self.halting.build()?,
        )?;
        if let Some(train) = &self.train {
            train.validate().map_err(|e| e.within("train"))?;
        }
        if let Some(data) = &self.data {
            data.validate(&self.net).map_err(|e| e.within("data"))?;
        }
        if let Some(eval) = &self.eval {
            eval.validate().map_err(|e| e.within("eval"))?;
        }
        Ok(())
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

impl DataConfig {
    /// One dataset directory.
    pub fn dataset(path: impl Into<PathBuf>) -> DataConfig {
        DataConfig::Dataset {
            path: Some(path.into()),
            paths: Vec::new(),
        }
    }

    /// The dataset directories (`path`, or `paths` in order); none for a generated task.
    pub fn dataset_dirs(&self) -> Vec<PathBuf> {
        match self {
            DataConfig::Dataset { path, paths } => path.iter().chain(paths).cloned().collect(),
            DataConfig::GeneratedGrid { .. } => Vec::new(),
        }
    }

    /// Range checks of the generated task; a dataset directory is checked when it is read.
    pub fn validate(&self, net: &NetConfig) -> Result<()> {
        if let DataConfig::Dataset { path, paths } = self {
            return match (path, paths.is_empty()) {
                (None, true) => Err(Error::config(
                    "path",
                    "give path = \"DIR\" or paths = [\"DIR\", ...]",
                )),
                (Some(_), false) => Err(Error::config("paths", "give path or paths, not both")),
                _ => Ok(()),
            };
        }
        let DataConfig::GeneratedGrid {
            size,
            colors,
            transform,
            train_examples,
            test_examples,
        } = self
        else {
            return Ok(());
        };
        for (field, value, max) in [
            ("size", *size, 30),
            ("train_examples", *train_examples, 1 << 24),
            ("test_examples", *test_examples, 1 << 24),
        ] {
            if value == 0 || value > max {
                return Err(Error::config(
                    field,
                    format!("{value}: must be in 1..={max}"),
                ));
            }
        }
        if *colors == 0 || *colors + 1 > net.vocab_size {
            return Err(Error::config(
                "colors",
                format!(
                    "{colors}: needs 1..=vocab_size - 1 = {} (token 0 is padding)",
                    net.vocab_size.saturating_sub(1)
                ),
            ));
        }
        if size * size != net.seq_len {
            return Err(Error::config(
                "size",
                format!(
                    "a {size}x{size} grid is {} tokens, but net.seq_len is {}",
                    size * size,
                    net.seq_len
                ),
            ));
        }
        const TRANSFORMS: [&str; 4] = ["flip", "transpose", "rotate", "shift-colors"];
        if !TRANSFORMS.contains(&transform.as_str()) {
            return Err(Error::config(
                "transform",
                format!("unknown `{transform}`; known: {}", TRANSFORMS.join(", ")),
            ));
        }
        Ok(())
    }
}

/// Where an experiment's text came from, to name a key in errors: the file and its
/// line, or the `--set` override that wrote it.
pub struct Origin<'a> {
    /// The experiment file's text as the user wrote it.
    pub text: &'a str,
    /// Its path (or another name) for messages.
    pub source: &'a str,
    /// Overrides applied on top of `text`.
    pub overrides: &'a [Override],
}

impl Origin<'_> {
    /// `file: a.b (line N)`, or `--set a.b=v` when an override wrote `a.b` or a table above it.
    fn name(&self, path: &[String]) -> String {
        let key = path.join(".");
        if let Some(o) = self
            .overrides
            .iter()
            .rev()
            .find(|o| !path.is_empty() && (path.starts_with(&o.key) || o.key.starts_with(path)))
        {
            return format!("--set {}", o.arg);
        }
        match (key.is_empty(), line_of_key(self.text, path)) {
            (true, _) => self.source.to_string(),
            (false, Some(line)) => format!("{}: {key} (line {line})", self.source),
            (false, None) => format!("{}: {key}", self.source),
        }
    }
}

/// The key of `table` whose value a serde message quotes (`invalid type: string
/// "abc", expected usize`), when exactly one matches.
fn key_quoted_in(table: &toml::Table, message: &str) -> Option<String> {
    let quoted = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(format!("string {s:?}")),
        toml::Value::Integer(i) => Some(format!("integer `{i}`")),
        toml::Value::Float(f) => Some(format!("floating point `{f}`")),
        toml::Value::Boolean(b) => Some(format!("boolean `{b}`")),
        _ => None,
    };
    let mut hits = table
        .iter()
        .filter(|(k, v)| {
            k.as_str() != "name" && quoted(v).is_some_and(|q| message.contains(q.as_str()))
        })
        .map(|(k, _)| k.clone());
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

/// The line where `path` (`["train", "steps"]`) is set in TOML `text`, if found:
/// `steps = ...` under `[train]`, or `train.steps = ...` at the top.
fn line_of_key(text: &str, path: &[String]) -> Option<usize> {
    let (last, tables) = path.split_last()?;
    let mut section: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = header
                .trim()
                .split('.')
                .map(|s| s.trim().to_string())
                .collect();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let mut full = section.clone();
        full.extend(key.trim().split('.').map(|s| s.trim().to_string()));
        let (full_last, full_tables) = full.split_last()?;
        if full_last == last && full_tables == tables {
            return Some(i + 1);
        }
    }
    // A whole table (`[train]`) when the key itself is absent, e.g. a missing field.
    let header = format!("[{}]", path.join("."));
    text.lines().position(|l| l.trim() == header).map(|i| i + 1)
}

/// Reads the experiment file `path` with its `extends = "base.toml"` resolved
/// (relative to the file; a base may extend another). The file's keys override the
/// base's and tables merge key by key, except that a table giving `name` (a plugin
/// or `[data]` spelled out: `[schedule] name = "hrm"` over a TRM base) replaces the
/// base's whole table. A cycle of `extends` is an error naming the files.
pub fn read_table(path: &Path) -> Result<toml::Table> {
    read_extending(path, &mut Vec::new())
}

fn read_extending(path: &Path, chain: &mut Vec<PathBuf>) -> Result<toml::Table> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut table = parse_table(&text, &source)?;
    let Some(base) = table.remove("extends") else {
        return Ok(table);
    };
    let field = || match line_of_key(&text, &["extends".to_string()]) {
        Some(line) => format!("{source}: extends (line {line})"),
        None => format!("{source}: extends"),
    };
    let Some(base) = base.as_str() else {
        return Err(Error::config(
            field(),
            "must be a file name, e.g. \"trm-arc1.toml\"",
        ));
    };
    let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&key) {
        let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::config(
            field(),
            format!(
                "extends form a cycle: {} -> {}",
                names.join(" -> "),
                key.display()
            ),
        ));
    }
    if !base_path.is_file() {
        return Err(Error::config(
            field(),
            format!(
                "{}: no such file (the path is relative to the file)",
                base_path.display()
            ),
        ));
    }
    chain.push(key);
    let mut merged = read_extending(&base_path, chain)?;
    chain.pop();
    merge_over(&mut merged, table);
    Ok(merged)
}

/// `over`'s keys into `base`: tables merge, other values replace, and a table that
/// gives `name` replaces the base's whole.
fn merge_over(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) if !o.contains_key("name") => {
                merge_over(b, o)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// ` (line L)` for a byte offset into `text`.
fn locate(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!(", line {line}")
}
