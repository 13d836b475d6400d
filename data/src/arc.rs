//! The ARC dataset builder: the semantics of the reference `dataset/build_arc_dataset.py`
//! (`convert_dataset`), with its own deterministic random source.
//!
//! Pipeline, as in the reference:
//! 1. Each subset `S` is read from `{prefix}_{S}_challenges.json`, with test outputs from
//!    `{prefix}_{S}_solutions.json`.
//! 2. The tasks of each subset are shuffled. In the test-set subset a task's `train` pairs go
//!    to the train split and its `test` pairs to the test split; other subsets go wholly to the
//!    train split, keeping the order of the `train` / `test` keys of the JSON object (ARC-AGI-1
//!    files list `test` first, so those pairs come first).
//! 3. Each task gets up to `num_aug` augmentations (random dihedral id 0..=7 plus a colour
//!    permutation keeping 0), rejected when the multiset of (input, output) pairs equals one
//!    already in the group, with at most `5 * num_aug` draws. A group is
//!    `[original, augmentations...]`; augmented names are `task|||t{id}|||{map digits}`.
//! 4. Every pair is encoded on a 30x30 canvas (see [`crate::grid`]). In the train split all
//!    examples of a puzzle but one (drawn uniformly) are translated by a random offset shared by
//!    input and output, drawn uniformly in `0..=30 - max(rows)` and `0..=30 - max(cols)`.
//!    The test split is never translated.
//! 5. Output: `train/` and `test/` with `all__{inputs,labels}.npy` (uint8 `[N, 900]`),
//!    `all__puzzle_identifiers.npy`, `all__puzzle_indices.npy`, `all__group_indices.npy`
//!    (int32) and `dataset.json`, plus `identifiers.json` and `test_puzzles.json`.
//!
//! Departures from the reference (all documented in `docs/data.md`):
//! * Random draws come from per-task ChaCha20 streams ([`DetRng`]) derived from the seed, the
//!   subset and the task name, not from numpy's global generator. The output is identical for
//!   any thread count, and it does not depend on `PYTHONHASHSEED` (reference behaviour 2).
//! * Identifiers are numbered in train-split order, which is what the reference does whenever
//!   its split order is deterministic (see [`assign`]).
//! * A missing solutions file is an error unless [`ArcBuildOptions::dummy_missing_solutions`]
//!   is set (the reference always fills `[[0]]`); a test set that is not among the subsets is
//!   an error; empty grids are rejected.

use crate::atomic::{check_output_free, TempDir};
use crate::augment::{Augmentation, DetRng};
use crate::error::DataError;
use crate::format::{write_json, DatasetMetadata, SplitSummary};
use crate::grid::{encode_grid_into, Grid, ARC_MAX_GRID_SIZE, ARC_SEQ_LEN, ARC_VOCAB_SIZE};
use crate::json::Ordered;
use crate::npy::{write_npy_i32, NpyDtype, NpyWriter};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The reference `ARCAugmentRetriesFactor`: at most `5 * num_aug` draws per task.
pub const AUGMENT_RETRIES_FACTOR: usize = 5;

/// Subsets shipped in `data/raw/arc` (any other name with files under the prefix works too).
pub const KNOWN_SUBSETS: [&str; 5] = [
    "training",
    "evaluation",
    "training2",
    "evaluation2",
    "concept",
];

/// Where a list of pairs sits inside a task object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ExampleKind {
    /// The `train` (demonstration) pairs.
    Train,
    /// The `test` pairs.
    Test,
}

impl ExampleKind {
    /// The JSON key.
    pub fn key(self) -> &'static str {
        match self {
            ExampleKind::Train => "train",
            ExampleKind::Test => "test",
        }
    }
}

/// One input/output pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcExample {
    pub input: Grid,
    pub output: Grid,
}

/// One ARC task with its pair lists in JSON key order.
#[derive(Clone, Debug, PartialEq)]
pub struct ArcTask {
    pub name: String,
    pub parts: Vec<(ExampleKind, Vec<ArcExample>)>,
}

impl ArcTask {
    /// All pairs of one kind, in order.
    pub fn examples(&self, kind: ExampleKind) -> impl Iterator<Item = &ArcExample> {
        self.parts
            .iter()
            .filter(move |(k, _)| *k == kind)
            .flat_map(|(_, v)| v.iter())
    }
}

/// The tasks of one subset file, in file order.
#[derive(Clone, Debug)]
pub struct ArcSubset {
    pub name: String,
    /// The challenges file (used in messages).
    pub source: PathBuf,
    pub tasks: Vec<ArcTask>,
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawExample {
    input: Vec<Vec<i64>>,
    #[serde(default)]
    output: Option<Vec<Vec<i64>>>,
}

type RawChallenges = Ordered<Ordered<Vec<RawExample>>>;
type RawSolutions = Ordered<Vec<Vec<Vec<i64>>>>;
/// Task name -> its solution grids.
type SolutionIndex<'a> = HashMap<&'a str, &'a Vec<Vec<Vec<i64>>>>;

/// `{prefix}_{subset}_{kind}.json`, the reference file naming.
fn subset_file(prefix: &Path, subset: &str, kind: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!("_{subset}_{kind}.json"));
    PathBuf::from(s)
}

/// Reads one subset from `{prefix}_{subset}_challenges.json` and `..._solutions.json`.
///
/// Without a solutions file this is an error, unless `dummy_missing_solutions` is set: then
/// test outputs default to `[[0]]` like the reference.
pub fn load_arc_subset(
    prefix: &Path,
    subset: &str,
    dummy_missing_solutions: bool,
) -> Result<ArcSubset, DataError> {
    if subset.is_empty()
        || !subset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(DataError::InvalidOptions(format!(
            "subset name {subset:?} must be non-empty ASCII letters, digits, '_' or '-'"
        )));
    }
    let cpath = subset_file(prefix, subset, "challenges");
    let spath = subset_file(prefix, subset, "solutions");
    let challenges = std::fs::read(&cpath).map_err(|e| DataError::io(&cpath, e))?;
    let solutions = match std::fs::read(&spath) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dummy_missing_solutions => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::MissingSolutions {
                path: spath,
                message: "file not found (set dummy_missing_solutions to fill test outputs with [[0]] like the reference)".into(),
            })
        }
        Err(e) => return Err(DataError::io(&spath, e)),
    };
    parse_arc_subset(
        subset,
        &challenges,
        &cpath,
        solutions.as_deref().map(|b| (b, spath.as_path())),
    )
}

/// Parses a challenges file (and optionally its solutions) from bytes. Paths are only used
/// in messages. Never panics on any input.
pub fn parse_arc_subset(
    subset: &str,
    challenges: &[u8],
    challenges_path: &Path,
    solutions: Option<(&[u8], &Path)>,
) -> Result<ArcSubset, DataError> {
    let raw: RawChallenges =
        serde_json::from_slice(challenges).map_err(|e| DataError::json(challenges_path, e))?;
    let sols: Option<(RawSolutions, &Path)> = match solutions {
        Some((bytes, p)) => Some((
            serde_json::from_slice(bytes).map_err(|e| DataError::json(p, e))?,
            p,
        )),
        None => None,
    };
    let sol_map: Option<(SolutionIndex, &Path)> = sols
        .as_ref()
        .map(|(s, p)| (s.0.iter().map(|(k, v)| (k.as_str(), v)).collect(), *p));

    let mut tasks = Vec::with_capacity(raw.0.len());
    for (name, raw_task) in &raw.0 {
        let task_sols = match &sol_map {
            Some((m, p)) => Some((
                *m.get(name.as_str())
                    .ok_or_else(|| DataError::MissingSolutions {
                        path: p.to_path_buf(),
                        message: format!("no entry for task {name}"),
                    })?,
                *p,
            )),
            None => None,
        };
        let fill_dummy = task_sols.is_none();
        tasks.push(convert_task(
            name,
            raw_task,
            task_sols,
            challenges_path,
            fill_dummy,
        )?);
    }
    Ok(ArcSubset {
        name: subset.to_string(),
        source: challenges_path.to_path_buf(),
        tasks,
    })
}

/// Parses a `test_puzzles.json` file (tasks with their test outputs inline) from bytes,
/// keeping the task order. Every test pair must have an output. Never panics.
pub fn parse_test_puzzles(bytes: &[u8], path: &Path) -> Result<Vec<ArcTask>, DataError> {
    let raw: RawChallenges = serde_json::from_slice(bytes).map_err(|e| DataError::json(path, e))?;
    raw.0
        .iter()
        .map(|(name, t)| convert_task(name, t, None, path, false))
        .collect()
}

/// Validates one raw task and merges its solutions (`solutions[i]` is the output of
/// `test[i]`, as in the reference). Without solutions, missing test outputs become `[[0]]`
/// if `fill_dummy`, else they are an error.
fn convert_task(
    name: &str,
    raw: &Ordered<Vec<RawExample>>,
    solutions: Option<(&Vec<Vec<Vec<i64>>>, &Path)>,
    path: &Path,
    fill_dummy: bool,
) -> Result<ArcTask, DataError> {
    let task_err = |message: String| DataError::InvalidTask {
        path: path.to_path_buf(),
        task: name.to_string(),
        message,
    };
    let grid = |field: String, g: &[Vec<i64>], p: &Path| {
        Grid::from_nested(g).map_err(|message| DataError::InvalidGrid {
            path: p.to_path_buf(),
            task: name.to_string(),
            field,
            message,
        })
    };
    let mut parts = Vec::new();
    let mut num_test = 0;
    for (key, examples) in &raw.0 {
        let kind = match key.as_str() {
            "train" => ExampleKind::Train,
            "test" => ExampleKind::Test,
            other => {
                return Err(task_err(format!(
                    "unknown example list {other:?} (expected train / test)"
                )))
            }
        };
        let mut out = Vec::with_capacity(examples.len());
        for (i, ex) in examples.iter().enumerate() {
            let input = grid(format!("{key}[{i}].input"), &ex.input, path)?;
            let output = match (kind, solutions, &ex.output) {
                (ExampleKind::Test, Some((sols, sp)), _) => {
                    let s = sols.get(i).ok_or_else(|| DataError::MissingSolutions {
                        path: sp.to_path_buf(),
                        message: format!(
                            "task {name} has {} solution(s), test[{i}] has none",
                            sols.len()
                        ),
                    })?;
                    grid(format!("solution[{i}]"), s, sp)?
                }
                (_, _, Some(o)) => grid(format!("{key}[{i}].output"), o, path)?,
                (ExampleKind::Test, None, None) if fill_dummy => {
                    Grid::new(1, 1, vec![0]).expect("a 1x1 grid has one cell")
                }
                (_, _, None) => {
                    return Err(task_err(format!("{key}[{i}] has no output")));
                }
            };
            out.push(ArcExample { input, output });
        }
        if kind == ExampleKind::Test {
            num_test += out.len();
        }
        parts.push((kind, out));
    }
    if let Some((sols, sp)) = solutions {
        if sols.len() > num_test {
            // The reference fails with an IndexError here.
            return Err(DataError::MissingSolutions {
                path: sp.to_path_buf(),
                message: format!(
                    "task {name} has {} solutions for {num_test} test input(s)",
                    sols.len()
                ),
            });
        }
    }
    Ok(ArcTask {
        name: name.to_string(),
        parts,
    })
}

// ---------------------------------------------------------------------------------------
// Options and summary
// ---------------------------------------------------------------------------------------

/// Options of [`build_arc`], mirroring the reference `DataProcessConfig`.
#[derive(Clone, Debug, Serialize)]
pub struct ArcBuildOptions {
    /// File prefix: subset `S` is read from `{input_prefix}_{S}_challenges.json` and
    /// `{input_prefix}_{S}_solutions.json`, e.g. `data/raw/arc/arc-agi`.
    pub input_prefix: PathBuf,
    /// Subsets to read, in order (`training`, `evaluation`, `training2`, `evaluation2`,
    /// `concept`, ...).
    pub subsets: Vec<String>,
    /// The subset whose `test` pairs form the test split (its `train` pairs still go to the
    /// train split). `None`: no test split. Must be one of `subsets`.
    pub test_set: Option<String>,
    /// Augmentations per task (the reference default is 1000).
    pub num_aug: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Output directory; must not exist.
    pub out: PathBuf,
    /// First puzzle identifier (0 is the blank id); the reference `puzzle_identifiers_start`.
    pub puzzle_identifiers_start: u32,
    /// Fill test outputs with `[[0]]` when a solutions file is missing (reference behaviour)
    /// instead of failing.
    pub dummy_missing_solutions: bool,
    /// Worker threads (`None`: rayon's global pool). The output does not depend on it.
    pub threads: Option<usize>,
    /// Keep only the first N tasks of each subset, in file order (small sets for quick
    /// runs and tests). `None`: every task, as the reference.
    pub max_tasks: Option<usize>,
}

impl ArcBuildOptions {
    /// The ARC-AGI-1 recipe of the TRM paper: subsets `training`, `evaluation`, `concept`,
    /// test set `evaluation`, 1000 augmentations, seed 42.
    pub fn new(input_prefix: impl Into<PathBuf>, out: impl Into<PathBuf>) -> ArcBuildOptions {
        ArcBuildOptions {
            input_prefix: input_prefix.into(),
            subsets: vec!["training".into(), "evaluation".into(), "concept".into()],
            test_set: Some("evaluation".into()),
            num_aug: 1000,
            seed: 42,
            out: out.into(),
            puzzle_identifiers_start: 1,
            dummy_missing_solutions: false,
            threads: None,
            max_tasks: None,
        }
    }
}

/// What [`build_arc`] produced.
#[derive(Clone, Debug, Serialize)]
pub struct ArcBuildSummary {
    pub out: PathBuf,
    pub train: SplitSummary,
    /// All zero when there is no test split.
    pub test: SplitSummary,
    /// Including the blank id 0 (the `num_puzzle_identifiers` of `dataset.json`).
    pub num_identifiers: usize,
    /// Tasks whose group has fewer than `num_aug + 1` puzzles: (task, group size). The
    /// reference prints these as "augmentation not full".
    pub short_groups: Vec<(String, usize)>,
    /// Wall time of the whole build, reading included.
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------

/// Reads the subsets named in `opts` and builds the dataset into `opts.out`.
///
/// The output is written into a temporary sibling directory that is renamed to `opts.out` at
/// the end; on error nothing is left behind. An existing `opts.out` is an error and is never
/// touched.
pub fn build_arc(opts: &ArcBuildOptions) -> Result<ArcBuildSummary, DataError> {
    let start = Instant::now();
    check_output_free(&opts.out)?;
    if opts.subsets.is_empty() {
        return Err(DataError::InvalidOptions("no subsets given".into()));
    }
    let subsets = opts
        .subsets
        .iter()
        .map(|s| load_arc_subset(&opts.input_prefix, s, opts.dummy_missing_solutions))
        .map(|s| {
            s.map(|mut s| {
                s.tasks.truncate(opts.max_tasks.unwrap_or(usize::MAX));
                s
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    build_arc_from_subsets(&subsets, opts, start)
}

/// Builds from subsets already in memory (`opts.input_prefix`, `opts.subsets` and
/// `opts.dummy_missing_solutions` are ignored). `start` is when the build began, for the
/// summary.
pub fn build_arc_from_subsets(
    subsets: &[ArcSubset],
    opts: &ArcBuildOptions,
    start: Instant,
) -> Result<ArcBuildSummary, DataError> {
    check_output_free(&opts.out)?;
    if let Some(ts) = &opts.test_set {
        // Departure: the reference silently builds without a test split here.
        if !subsets.iter().any(|s| &s.name == ts) {
            return Err(DataError::InvalidOptions(format!(
                "test set {ts:?} is not one of the subsets"
            )));
        }
    }
    if opts.num_aug > u32::MAX as usize / (AUGMENT_RETRIES_FACTOR + 1) {
        return Err(DataError::InvalidOptions(format!(
            "num_aug {} is too large",
            opts.num_aug
        )));
    }
    let run = || build_into_temp(subsets, opts, start);
    match opts.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .map_err(|e| DataError::InvalidOptions(format!("thread pool: {e}")))?
            .install(run),
        None => run(),
    }
}

/// One task in processing order, with where its pairs go.
struct TaskJob<'a> {
    subset: &'a str,
    task: &'a ArcTask,
    /// Whether the task belongs to the test set (its `test` pairs form the test split).
    is_test: bool,
    source: &'a Path,
}

/// The task processing order: subsets in order, each shuffled (the reference
/// `np.random.shuffle(puzzles)`), here with a stream per subset.
fn processing_order<'a>(subsets: &'a [ArcSubset], opts: &ArcBuildOptions) -> Vec<TaskJob<'a>> {
    let mut jobs = Vec::new();
    for s in subsets {
        let mut idx: Vec<usize> = (0..s.tasks.len()).collect();
        DetRng::derive(opts.seed, "shuffle-tasks", &[&s.name]).shuffle(&mut idx);
        let is_test = opts.test_set.as_deref() == Some(s.name.as_str());
        jobs.extend(idx.into_iter().map(|i| TaskJob {
            subset: &s.name,
            task: &s.tasks[i],
            is_test,
            source: &s.source,
        }));
    }
    jobs
}

/// The rows of one task, ready to append to the split files.
struct TaskRows {
    /// Puzzle names in group order (original first).
    names: Vec<String>,
    /// Train split: encoded inputs / labels, `names.len() * train_per_puzzle` rows.
    train_inputs: Vec<u8>,
    train_labels: Vec<u8>,
    train_per_puzzle: usize,
    /// Test split (test-set tasks only).
    test_inputs: Vec<u8>,
    test_labels: Vec<u8>,
    test_per_puzzle: usize,
    is_test: bool,
}

/// A pair after augmentation, and the split it goes to (`true`: test split).
type Pair = (Grid, Grid);

/// Splits a task's pairs by destination (the reference `dest_mapping`), in JSON key order.
fn destination_pairs(job: &TaskJob) -> (Vec<Pair>, Vec<Pair>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (kind, examples) in &job.task.parts {
        let dest = if *kind == ExampleKind::Test && job.is_test {
            &mut test
        } else {
            &mut train
        };
        dest.extend(examples.iter().map(|e| (e.input.clone(), e.output.clone())));
    }
    (train, test)
}

/// The reference `puzzle_hash` criterion as an exact key: the sorted multiset of
/// (input, output) pairs over both splits, each grid as `[rows, cols, cells...]`.
/// Equal keys mean equal puzzles (the reference compares SHA-256 digests of the same data).
fn puzzle_key(train: &[Pair], test: &[Pair]) -> Vec<u8> {
    let mut items: Vec<Vec<u8>> = train
        .iter()
        .chain(test)
        .map(|(i, o)| {
            let mut v = Vec::with_capacity(4 + i.data().len() + o.data().len());
            for g in [i, o] {
                // Grids are at most 30x30.
                v.extend([g.rows() as u8, g.cols() as u8]);
                v.extend_from_slice(g.data());
            }
            v
        })
        .collect();
    items.sort_unstable();
    items.concat()
}

/// The group of a task: the original and up to `num_aug` distinct augmentations, drawn like
/// the reference `convert_single_arc_puzzle` (at most `5 * num_aug` draws, duplicates of any
/// earlier member rejected). Returns (augmentation, train pairs, test pairs) per puzzle.
fn augment_group(
    job: &TaskJob,
    opts: &ArcBuildOptions,
) -> Vec<(Augmentation, Vec<Pair>, Vec<Pair>)> {
    let (train, test) = destination_pairs(job);
    let mut group = Vec::with_capacity(opts.num_aug + 1);
    if opts.num_aug > 0 {
        // Keys are our own data (no HashDoS concern): rustc's fast hasher.
        let mut seen: rustc_hash::FxHashSet<Vec<u8>> = Default::default();
        seen.insert(puzzle_key(&train, &test));
        let mut rng = DetRng::derive(opts.seed, "augment", &[job.subset, &job.task.name]);
        for _ in 0..AUGMENT_RETRIES_FACTOR * opts.num_aug {
            let aug = Augmentation::random(&mut rng);
            let map = |pairs: &[Pair]| -> Vec<Pair> {
                pairs
                    .iter()
                    .map(|(i, o)| (aug.apply(i), aug.apply(o)))
                    .collect()
            };
            let (atrain, atest) = (map(&train), map(&test));
            if seen.insert(puzzle_key(&atrain, &atest)) {
                group.push((aug, atrain, atest));
            }
            if group.len() >= opts.num_aug {
                break;
            }
        }
    }
    group.insert(0, (Augmentation::IDENTITY, train, test));
    group
}

/// Encodes the pairs of one puzzle. In the train split, all examples but one drawn uniformly
/// are translated (the reference `no_aug_id`); offsets are uniform in `0..=30 - max(rows)` and
/// `0..=30 - max(cols)` over input and output, row offset drawn first.
fn encode_puzzle(
    pairs: &[Pair],
    translate: Option<&mut DetRng>,
    inputs: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) {
    let mut rng = translate;
    // `pairs` is non-empty here (checked by the caller); `len` fits u32 (JSON lists of grids).
    let keep = rng.as_mut().map(|r| r.below(pairs.len() as u32) as usize);
    for (idx, (inp, out)) in pairs.iter().enumerate() {
        let (mut pad_r, mut pad_c) = (0, 0);
        if let (Some(r), Some(keep)) = (rng.as_mut(), keep) {
            if idx != keep {
                let max_r = ARC_MAX_GRID_SIZE - inp.rows().max(out.rows());
                let max_c = ARC_MAX_GRID_SIZE - inp.cols().max(out.cols());
                pad_r = r.below(max_r as u32 + 1) as usize;
                pad_c = r.below(max_c as u32 + 1) as usize;
            }
        }
        let mut canvas = [0u8; ARC_SEQ_LEN];
        for (grid, dst) in [(inp, &mut *inputs), (out, &mut *labels)] {
            encode_grid_into(grid, pad_r, pad_c, &mut canvas);
            dst.extend_from_slice(&canvas);
        }
    }
}

/// Augments and encodes one task.
fn process_task(job: &TaskJob, opts: &ArcBuildOptions) -> Result<TaskRows, DataError> {
    let group = augment_group(job, opts);
    let (n_train, n_test) = (group[0].1.len(), group[0].2.len());
    let task_err = |message: &str| DataError::InvalidTask {
        path: job.source.to_path_buf(),
        task: job.task.name.clone(),
        message: message.to_string(),
    };
    // The reference would fail in np.random.randint(0, 0) on these.
    if n_train == 0 {
        return Err(task_err("no pairs for the train split"));
    }
    if job.is_test && n_test == 0 {
        return Err(task_err("no test pairs for the test split"));
    }
    let mut rows = TaskRows {
        names: Vec::with_capacity(group.len()),
        train_inputs: Vec::with_capacity(group.len() * n_train * ARC_SEQ_LEN),
        train_labels: Vec::with_capacity(group.len() * n_train * ARC_SEQ_LEN),
        train_per_puzzle: n_train,
        test_inputs: Vec::new(),
        test_labels: Vec::new(),
        test_per_puzzle: n_test,
        is_test: job.is_test,
    };
    let mut rng = DetRng::derive(opts.seed, "translate", &[job.subset, &job.task.name]);
    for (i, (aug, train, test)) in group.iter().enumerate() {
        rows.names.push(if i == 0 {
            job.task.name.clone()
        } else {
            aug.puzzle_name(&job.task.name)
        });
        encode_puzzle(
            train,
            Some(&mut rng),
            &mut rows.train_inputs,
            &mut rows.train_labels,
        );
        if job.is_test {
            encode_puzzle(test, None, &mut rows.test_inputs, &mut rows.test_labels);
        }
    }
    Ok(rows)
}

/// Index arrays and counts of one split, accumulated in order.
struct SplitIndex {
    puzzle_identifiers: Vec<i32>,
    puzzle_indices: Vec<i32>,
    group_indices: Vec<i32>,
    examples: usize,
}

impl SplitIndex {
    fn new() -> SplitIndex {
        SplitIndex {
            puzzle_identifiers: Vec::new(),
            puzzle_indices: vec![0],
            group_indices: vec![0],
            examples: 0,
        }
    }

    /// Appends one group whose puzzles have `per_puzzle` examples each.
    fn push_group(&mut self, ids: &[i32], per_puzzle: usize) -> Result<(), DataError> {
        let too_big = || {
            DataError::InvalidOptions(
                "dataset exceeds the int32 indices of the reference format".into(),
            )
        };
        for &id in ids {
            self.examples += per_puzzle;
            self.puzzle_indices
                .push(i32::try_from(self.examples).map_err(|_| too_big())?);
            self.puzzle_identifiers.push(id);
        }
        self.group_indices
            .push(i32::try_from(self.puzzle_identifiers.len()).map_err(|_| too_big())?);
        Ok(())
    }

    fn summary(&self) -> SplitSummary {
        SplitSummary {
            groups: self.group_indices.len() - 1,
            puzzles: self.puzzle_identifiers.len(),
            examples: self.examples,
        }
    }
}

/// Open row files of one split.
struct SplitFiles {
    dir: PathBuf,
    inputs: NpyWriter,
    labels: NpyWriter,
    index: SplitIndex,
}

impl SplitFiles {
    fn create(root: &Path, split: &str) -> Result<SplitFiles, DataError> {
        let dir = root.join(split);
        std::fs::create_dir(&dir).map_err(|e| DataError::io(&dir, e))?;
        let open = |k: &str| {
            NpyWriter::create_rows(
                &dir.join(format!("all__{k}.npy")),
                NpyDtype::U8,
                &[ARC_SEQ_LEN],
            )
        };
        Ok(SplitFiles {
            inputs: open("inputs")?,
            labels: open("labels")?,
            dir,
            index: SplitIndex::new(),
        })
    }

    /// Writes the index arrays and `dataset.json`; closes the row files.
    fn finish(self, num_identifiers: usize) -> Result<SplitSummary, DataError> {
        let summary = self.index.summary();
        self.inputs.finish_rows(summary.examples)?;
        self.labels.finish_rows(summary.examples)?;
        let ix = &self.index;
        for (k, v) in [
            ("puzzle_identifiers", &ix.puzzle_identifiers),
            ("puzzle_indices", &ix.puzzle_indices),
            ("group_indices", &ix.group_indices),
        ] {
            write_npy_i32(&self.dir.join(format!("all__{k}.npy")), &[v.len()], v)?;
        }
        let meta = DatasetMetadata::arc(num_identifiers, &summary);
        write_json(&self.dir.join("dataset.json"), &meta)?;
        Ok(summary)
    }
}

impl DatasetMetadata {
    /// The ARC builder's metadata: PAD 0, ignored label 0 (the stored labels keep PAD = 0;
    /// the reference loader maps it to -100 only when batching), blank id 0, vocab 12.
    fn arc(num_identifiers: usize, s: &SplitSummary) -> DatasetMetadata {
        DatasetMetadata {
            pad_id: 0,
            ignore_label_id: Some(0),
            blank_identifier_id: 0,
            vocab_size: ARC_VOCAB_SIZE as i64,
            seq_len: ARC_SEQ_LEN as i64,
            num_puzzle_identifiers: num_identifiers as i64,
            total_groups: s.groups as i64,
            mean_puzzle_examples: s.examples as f64 / s.puzzles as f64,
            total_puzzles: s.puzzles as i64,
            sets: vec!["all".into()],
        }
    }
}

/// The serialised form of a test puzzle in `test_puzzles.json`.
#[derive(Serialize)]
struct JsonExample {
    input: Vec<Vec<u8>>,
    output: Vec<Vec<u8>>,
}

fn task_json(task: &ArcTask) -> Ordered<Vec<JsonExample>> {
    Ordered(
        task.parts
            .iter()
            .map(|(k, exs)| {
                let v = exs
                    .iter()
                    .map(|e| JsonExample {
                        input: e.input.to_nested(),
                        output: e.output.to_nested(),
                    })
                    .collect();
                (k.key().to_string(), v)
            })
            .collect(),
    )
}

/// Puzzle identifiers, numbered by first appearance.
///
/// The reference numbers them while walking its splits in dict order, which is train first
/// unless the first task processed belongs to the test set, and then depends on
/// `PYTHONHASHSEED`. Every puzzle appears in the train split and the test split lists a
/// subsequence of the train order, so numbering in train order gives the same ids in every
/// deterministic case. Duplicate names (a task listed in two subsets) share one id, like the
/// reference dict.
struct Identifiers {
    map: HashMap<String, i32>,
    names: Vec<String>,
}

impl Identifiers {
    fn assign(&mut self, name: &str) -> Result<i32, DataError> {
        if let Some(&id) = self.map.get(name) {
            return Ok(id);
        }
        let id = i32::try_from(self.names.len())
            .map_err(|_| DataError::InvalidOptions("more than 2^31 puzzle identifiers".into()))?;
        self.map.insert(name.to_string(), id);
        self.names.push(name.to_string());
        Ok(id)
    }
}

/// Everything the writer accumulates.
struct Writer {
    train: SplitFiles,
    test: Option<SplitFiles>,
    ids: Identifiers,
    short_groups: Vec<(String, usize)>,
    num_aug: usize,
}

impl Writer {
    /// Appends one task's rows and index entries.
    fn push(&mut self, rows: TaskRows) -> Result<(), DataError> {
        let ids = rows
            .names
            .iter()
            .map(|n| self.ids.assign(n))
            .collect::<Result<Vec<_>, _>>()?;
        if rows.names.len() < self.num_aug + 1 {
            self.short_groups
                .push((rows.names[0].clone(), rows.names.len()));
        }
        self.train.inputs.write(&rows.train_inputs)?;
        self.train.labels.write(&rows.train_labels)?;
        self.train.index.push_group(&ids, rows.train_per_puzzle)?;
        if rows.is_test {
            // A test split exists whenever a test-set task does.
            if let Some(test) = &mut self.test {
                test.inputs.write(&rows.test_inputs)?;
                test.labels.write(&rows.test_labels)?;
                test.index.push_group(&ids, rows.test_per_puzzle)?;
            }
        }
        Ok(())
    }
}

/// Runs the build into a temporary directory and renames it to `opts.out`.
fn build_into_temp(
    subsets: &[ArcSubset],
    opts: &ArcBuildOptions,
    start: Instant,
) -> Result<ArcBuildSummary, DataError> {
    let jobs = processing_order(subsets, opts);
    let tmp = TempDir::next_to(&opts.out)?;
    let has_test = jobs.iter().any(|j| j.is_test);
    let mut ids = Identifiers {
        map: HashMap::new(),
        names: Vec::new(),
    };
    for _ in 0..opts.puzzle_identifiers_start {
        ids.names.push("<blank>".into());
    }
    let mut writer = Writer {
        train: SplitFiles::create(&tmp.path, "train")?,
        test: if has_test {
            Some(SplitFiles::create(&tmp.path, "test")?)
        } else {
            None
        },
        ids,
        short_groups: Vec::new(),
        num_aug: opts.num_aug,
    };

    // Tasks are processed in parallel chunks; a writer thread appends finished chunks in
    // order, so the files do not depend on scheduling.
    let chunk = (rayon::current_num_threads() * 4).max(4);
    let mut summary = std::thread::scope(|scope| -> Result<ArcBuildSummary, DataError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<TaskRows>>(1);
        let handle = scope.spawn(move || -> Result<Writer, DataError> {
            for rows in rx {
                for r in rows {
                    writer.push(r)?;
                }
            }
            Ok(writer)
        });
        let mut result = Ok(());
        let mut done = 0;
        for part in jobs.chunks(chunk) {
            match part
                .par_iter()
                .map(|j| process_task(j, opts))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(rows) => {
                    done += part.len();
                    crate::progress::report("arc build: tasks", done, jobs.len());
                    if tx.send(rows).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let w = handle
            .join()
            .map_err(|_| DataError::InvalidOptions("internal: writer thread panicked".into()))??;
        result?;
        writer_finish(w, &tmp.path, &jobs, opts)
    })?;
    crate::fault::point("arc-build", 0);
    tmp.commit(&opts.out)?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// Closes the split files and writes `identifiers.json` and `test_puzzles.json`.
fn writer_finish(
    w: Writer,
    root: &Path,
    jobs: &[TaskJob],
    opts: &ArcBuildOptions,
) -> Result<ArcBuildSummary, DataError> {
    let num_identifiers = w.ids.names.len();
    let train = w.train.finish(num_identifiers)?;
    let test = match w.test {
        Some(t) => t.finish(num_identifiers)?,
        None => SplitSummary::default(),
    };
    write_json(&root.join("identifiers.json"), &w.ids.names)?;
    // Test puzzles in processing order; a repeated name keeps its first position and the last
    // content, like the reference dict.
    let mut test_puzzles: Vec<(String, Ordered<Vec<JsonExample>>)> = Vec::new();
    let mut pos: HashMap<&str, usize> = HashMap::new();
    for j in jobs.iter().filter(|j| j.is_test) {
        let v = task_json(j.task);
        match pos.get(j.task.name.as_str()) {
            Some(&i) => test_puzzles[i].1 = v,
            None => {
                pos.insert(&j.task.name, test_puzzles.len());
                test_puzzles.push((j.task.name.clone(), v));
            }
        }
    }
    write_json(&root.join("test_puzzles.json"), &Ordered(test_puzzles))?;
    Ok(ArcBuildSummary {
        out: opts.out.clone(),
        train,
        test,
        num_identifiers,
        short_groups: w.short_groups,
        elapsed: Duration::ZERO,
    })
}
