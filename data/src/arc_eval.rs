//! Evaluators: the ARC voting evaluator (reference `evaluators/arc.py`, class `ARC`) and an
//! exact-accuracy evaluator for tasks without voting (Sudoku, Maze, ...).
//!
//! ARC evaluation, as in the reference:
//! 1. For every non-blank row, the prediction and the input are cropped
//!    ([`crop_tokens`]), mapped back to the original frame with the inverse of the
//!    augmentation named by the row's puzzle identifier, and hashed ([`Grid::hash_hex`]).
//! 2. Each prediction is a vote `(pred hash, sigmoid(q_halt) in f64)` for
//!    (original task, input hash).
//! 3. For each test input of each test puzzle, candidates are ranked by vote count, then by
//!    mean sigmoid(q_halt), descending, with a stable sort (exact ties keep first-appearance
//!    order). pass@K is 1 if the true output is among the first K; a puzzle scores the mean
//!    over its test inputs, and pass@K is the mean over test puzzles (summed in
//!    `test_puzzles.json` order). A test input without votes counts as wrong and gets no
//!    submission entry.
//! 4. The submission lists the top `submission_k` grids per answered test input, padded with
//!    the first one.
//!
//! Two deliberate departures, both undone by [`ArcEvalOptions::reference_quirks`]:
//! * the reference removes blank-id rows from inputs, predictions and ids but not from the
//!   q_halt logits, and pairs them positionally; here every row keeps its own q;
//! * the reference keeps votes across evaluations (`aggregated_voting=True` never clears its
//!   state); here [`ArcEvaluator::begin_eval`] starts each evaluation fresh.

use crate::arc::{parse_test_puzzles, ExampleKind};
use crate::augment::{parse_puzzle_name, Augmentation};
use crate::error::DataError;
use crate::grid::{crop_tokens, Grid, ARC_SEQ_LEN};
use crate::json::{to_python_json, Ordered};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Options of [`ArcEvaluator`] (the reference constructor arguments plus the quirk switch).
#[derive(Clone, Debug, Serialize)]
pub struct ArcEvalOptions {
    /// Attempts per test input in the submission (reference `submission_K`, default 2).
    pub submission_k: usize,
    /// The K of the pass@K metrics (default 1, 2, 5, 10, 100, 1000).
    pub pass_ks: Vec<usize>,
    /// Rows with this puzzle identifier are padding and ignored (default 0).
    pub blank_identifier_id: i32,
    /// Reproduce the reference exactly, defects included: q values of blank rows shift onto
    /// later rows, and votes accumulate across evaluations. Default `false`.
    pub reference_quirks: bool,
}

impl Default for ArcEvalOptions {
    fn default() -> Self {
        ArcEvalOptions {
            submission_k: 2,
            pass_ks: vec![1, 2, 5, 10, 100, 1000],
            blank_identifier_id: 0,
            reference_quirks: false,
        }
    }
}

/// One evaluation batch: `B` rows of 900 tokens.
#[derive(Clone, Copy, Debug)]
pub struct ArcEvalBatch<'a> {
    /// `[B * 900]` input tokens.
    pub inputs: &'a [i32],
    /// `[B]` puzzle identifiers (indices into `identifiers.json`).
    pub puzzle_identifiers: &'a [i32],
    /// `[B * 900]` predicted tokens (argmax).
    pub preds: &'a [i32],
    /// `[B]` halting logits; the evaluator uses `sigmoid(f64(q))`.
    pub q_halt_logits: &'a [f32],
}

/// One ranked candidate answer of a test input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankedAnswer {
    pub pred_hash: String,
    pub votes: usize,
    pub mean_q: f64,
    pub grid: Vec<Vec<u8>>,
    pub is_correct: bool,
}

/// The attempts for one test input, each a grid as nested rows.
pub type Attempts = Vec<Vec<Vec<u8>>>;

/// Result of [`ArcEvaluator::result`].
#[derive(Clone, Debug, Serialize)]
pub struct ArcEvalResult {
    /// `ARC/pass@K` -> value, like the reference dict.
    pub metrics: BTreeMap<String, f64>,
    /// (K, pass@K) in `pass_ks` order.
    pub pass_at: Vec<(usize, f64)>,
    /// Per test puzzle (in `test_puzzles.json` order), per answered test input, the
    /// `submission_k` attempts.
    pub submission: Vec<(String, Vec<Attempts>)>,
    /// Per test puzzle and test input index, the ranked vote table (empty: no predictions).
    pub rankings: Vec<(String, Vec<Vec<RankedAnswer>>)>,
}

impl ArcEvalResult {
    /// The submission as the reference writes it:
    /// `{task: [{"attempt_1": grid, "attempt_2": grid}, ...]}`.
    pub fn submission_json(&self) -> Vec<u8> {
        let value = Ordered(
            self.submission
                .iter()
                .map(|(name, inputs)| {
                    let v: Vec<Ordered<&Vec<Vec<u8>>>> = inputs
                        .iter()
                        .map(|attempts| {
                            Ordered(
                                attempts
                                    .iter()
                                    .enumerate()
                                    .map(|(i, g)| (format!("attempt_{}", i + 1), g))
                                    .collect(),
                            )
                        })
                        .collect();
                    (name.clone(), v)
                })
                .collect(),
        );
        // Serialising nested vectors of integers and strings cannot fail.
        to_python_json(&value).expect("submission serialises")
    }

    /// Writes `submission.json` into `dir`.
    pub fn write_submission(&self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join("submission.json");
        std::fs::write(&path, self.submission_json()).map_err(|e| DataError::io(&path, e))
    }
}

/// A test puzzle: its name and (input hash, output hash) per test pair.
struct TestPuzzle {
    name: String,
    tests: Vec<(String, String)>,
}

/// A vote: (prediction hash, sigmoid(q)).
type Vote = (String, f64);

/// The ARC voting evaluator.
pub struct ArcEvaluator {
    opts: ArcEvalOptions,
    identifiers: Vec<String>,
    /// Decoded identifiers (original task name, augmentation), filled lazily.
    decoded: HashMap<i32, (String, Augmentation)>,
    test_puzzles: Vec<TestPuzzle>,
    /// Prediction hash -> grid.
    hmap: HashMap<String, Grid>,
    /// Task -> input hash -> votes in arrival order.
    votes: HashMap<String, HashMap<String, Vec<Vote>>>,
}

impl ArcEvaluator {
    /// Reads `identifiers.json` and `test_puzzles.json` from a dataset directory.
    pub fn from_dir(data_path: &Path, opts: ArcEvalOptions) -> Result<ArcEvaluator, DataError> {
        let ipath = data_path.join("identifiers.json");
        let tpath = data_path.join("test_puzzles.json");
        let ibytes = std::fs::read(&ipath).map_err(|e| DataError::io(&ipath, e))?;
        let tbytes = std::fs::read(&tpath).map_err(|e| DataError::io(&tpath, e))?;
        ArcEvaluator::from_json(&ibytes, &ipath, &tbytes, &tpath, opts)
    }

    /// Builds an evaluator from the bytes of `identifiers.json` and `test_puzzles.json`
    /// (paths are used in messages only).
    pub fn from_json(
        identifiers: &[u8],
        identifiers_path: &Path,
        test_puzzles: &[u8],
        test_puzzles_path: &Path,
        opts: ArcEvalOptions,
    ) -> Result<ArcEvaluator, DataError> {
        let ids: Vec<String> = serde_json::from_slice(identifiers)
            .map_err(|e| DataError::json(identifiers_path, e))?;
        let tasks = parse_test_puzzles(test_puzzles, test_puzzles_path)?;
        if let Some(t) = tasks
            .iter()
            .find(|t| t.examples(ExampleKind::Test).next().is_none())
        {
            // The reference would divide by zero when scoring it.
            return Err(DataError::InvalidTask {
                path: test_puzzles_path.to_path_buf(),
                task: t.name.clone(),
                message: "test puzzle without test pairs".into(),
            });
        }
        let test_puzzles = tasks
            .iter()
            .map(|t| TestPuzzle {
                name: t.name.clone(),
                tests: t
                    .examples(ExampleKind::Test)
                    .map(|e| (e.input.hash_hex(), e.output.hash_hex()))
                    .collect(),
            })
            .collect();
        Ok(ArcEvaluator {
            opts,
            identifiers: ids,
            decoded: HashMap::new(),
            test_puzzles,
            hmap: HashMap::new(),
            votes: HashMap::new(),
        })
    }

    /// Scores only the test puzzles `keep` accepts (by task name), e.g. the tasks a
    /// checkpoint was fine-tuned on. Errors if none is left.
    pub fn retain_tasks(&mut self, keep: impl Fn(&str) -> bool) -> Result<(), DataError> {
        self.test_puzzles.retain(|t| keep(&t.name));
        if self.test_puzzles.is_empty() {
            return Err(DataError::InvalidOptions(
                "none of the chosen tasks is a test puzzle of this dataset".into(),
            ));
        }
        Ok(())
    }

    /// The names of the test puzzles scored, in `test_puzzles.json` order.
    pub fn task_names(&self) -> Vec<&str> {
        self.test_puzzles.iter().map(|t| t.name.as_str()).collect()
    }

    /// The task an identifier belongs to (its puzzle name without the augmentation).
    pub fn task_of(&self, identifier: i32) -> Option<&str> {
        let name = self.identifiers.get(usize::try_from(identifier).ok()?)?;
        parse_puzzle_name(name).ok().map(|(task, _)| task)
    }

    /// Starts an evaluation: forgets earlier votes, unless `reference_quirks` (the reference
    /// with `aggregated_voting=True` keeps them).
    pub fn begin_eval(&mut self) {
        if !self.opts.reference_quirks {
            self.hmap.clear();
            self.votes.clear();
        }
    }

    /// The original task and augmentation of puzzle identifier `id`.
    fn decode(&mut self, id: i32, row: usize) -> Result<(String, Augmentation), DataError> {
        if let Some(d) = self.decoded.get(&id) {
            return Ok(d.clone());
        }
        let name = usize::try_from(id)
            .ok()
            .and_then(|i| self.identifiers.get(i))
            .ok_or_else(|| DataError::InvalidBatch {
                row,
                field: "puzzle_identifiers".into(),
                message: format!(
                    "identifier {id} is not in identifiers.json ({} entries)",
                    self.identifiers.len()
                ),
            })?;
        let (task, aug) = parse_puzzle_name(name)?;
        let d = (task.to_string(), aug);
        self.decoded.insert(id, d.clone());
        Ok(d)
    }

    /// Adds one batch of predictions (reference `update_batch`).
    pub fn update_batch(&mut self, batch: &ArcEvalBatch) -> Result<(), DataError> {
        let b = batch.puzzle_identifiers.len();
        let check = |field: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(DataError::InvalidBatch {
                    row: 0,
                    field: field.into(),
                    message: format!("length {len}, expected {want} for {b} rows"),
                })
            }
        };
        check("inputs", batch.inputs.len(), b * ARC_SEQ_LEN)?;
        check("preds", batch.preds.len(), b * ARC_SEQ_LEN)?;
        check("q_halt_logits", batch.q_halt_logits.len(), b)?;

        let q: Vec<f64> = batch
            .q_halt_logits
            .iter()
            .map(|&x| sigmoid(f64::from(x)))
            .collect();
        let kept: Vec<usize> = (0..b)
            .filter(|&r| batch.puzzle_identifiers[r] != self.opts.blank_identifier_id)
            .collect();
        for (k, &row) in kept.iter().enumerate() {
            // Reference quirk: q values are not masked, so the k-th kept row takes q[k].
            let q_row = if self.opts.reference_quirks {
                q[k]
            } else {
                q[row]
            };
            let (task, aug) = self.decode(batch.puzzle_identifiers[row], row)?;
            let span = row * ARC_SEQ_LEN..(row + 1) * ARC_SEQ_LEN;
            let input = aug.invert(&crop_tokens(&batch.inputs[span.clone()]));
            let pred = aug.invert(&crop_tokens(&batch.preds[span]));
            let pred_hash = pred.hash_hex();
            self.votes
                .entry(task)
                .or_default()
                .entry(input.hash_hex())
                .or_default()
                .push((pred_hash.clone(), q_row));
            self.hmap.insert(pred_hash, pred);
        }
        Ok(())
    }

    /// Votes, ranks and scores (reference `result` with one rank).
    pub fn result(&self) -> ArcEvalResult {
        let ks = &self.opts.pass_ks;
        let mut correct = vec![0.0f64; ks.len()];
        let mut submission = Vec::new();
        let mut rankings = Vec::new();
        for puzzle in &self.test_puzzles {
            let mut entries = Vec::new();
            let mut tables = Vec::new();
            let mut num_correct = vec![0usize; ks.len()];
            for (input_hash, label_hash) in &puzzle.tests {
                let ranked = self.rank(&puzzle.name, input_hash);
                if ranked.is_empty() {
                    tables.push(Vec::new());
                    continue;
                }
                for (i, &k) in ks.iter().enumerate() {
                    num_correct[i] +=
                        usize::from(ranked.iter().take(k).any(|(h, _, _)| h == label_hash));
                }
                let mut attempts: Vec<Vec<Vec<u8>>> = ranked
                    .iter()
                    .take(self.opts.submission_k)
                    // Every voted hash was stored in `hmap` with its vote (both are cleared together).
                    .map(|(h, _, _)| self.hmap[h].to_nested())
                    .collect();
                while attempts.len() < self.opts.submission_k {
                    attempts.push(attempts[0].clone());
                }
                entries.push(attempts);
                tables.push(
                    ranked
                        .iter()
                        .map(|(h, votes, mean_q)| RankedAnswer {
                            pred_hash: h.clone(),
                            votes: *votes,
                            mean_q: *mean_q,
                            grid: self.hmap[h].to_nested(),
                            is_correct: h == label_hash,
                        })
                        .collect(),
                );
            }
            for (c, n) in correct.iter_mut().zip(&num_correct) {
                *c += *n as f64 / puzzle.tests.len() as f64;
            }
            submission.push((puzzle.name.clone(), entries));
            rankings.push((puzzle.name.clone(), tables));
        }
        let n = self.test_puzzles.len() as f64;
        let pass_at: Vec<(usize, f64)> =
            ks.iter().zip(&correct).map(|(&k, &c)| (k, c / n)).collect();
        ArcEvalResult {
            metrics: pass_at
                .iter()
                .map(|(k, v)| (format!("ARC/pass@{k}"), *v))
                .collect(),
            pass_at,
            submission,
            rankings,
        }
    }

    /// Candidates for one test input: (pred hash, votes, mean q), sorted descending by
    /// (votes, mean q) with a stable sort, so exact ties keep first-appearance order.
    fn rank(&self, task: &str, input_hash: &str) -> Vec<(String, usize, f64)> {
        let Some(votes) = self.votes.get(task).and_then(|m| m.get(input_hash)) else {
            return Vec::new();
        };
        let mut order: Vec<(String, usize, f64)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (h, q) in votes {
            let i = *index.entry(h.as_str()).or_insert_with(|| {
                order.push((h.clone(), 0, 0.0));
                order.len() - 1
            });
            order[i].1 += 1;
            order[i].2 += q;
        }
        for e in &mut order {
            e.2 /= e.1 as f64;
        }
        // Python compares [count, mean]; NaN compares as "not less", i.e. equal here.
        order.sort_by(|a, b| {
            (b.1, b.2)
                .partial_cmp(&(a.1, a.2))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        order
    }
}

/// `1 / (1 + exp(-x))` in f64, as the reference `sigmoid` of a float64 tensor.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Exact accuracy for tasks without voting: the fraction of rows whose non-ignored labels are
/// all predicted correctly. Rows without any non-ignored label are not counted (as in the
/// reference loss-head metrics).
#[derive(Clone, Debug)]
pub struct ExactAccuracy {
    /// Label id to ignore (-100 in model batches).
    pub ignore_label_id: i32,
    correct: u64,
    total: u64,
}

impl ExactAccuracy {
    /// A fresh accumulator.
    pub fn new(ignore_label_id: i32) -> ExactAccuracy {
        ExactAccuracy {
            ignore_label_id,
            correct: 0,
            total: 0,
        }
    }

    /// Adds rows of `seq_len` predictions and labels.
    pub fn update(
        &mut self,
        preds: &[i32],
        labels: &[i32],
        seq_len: usize,
    ) -> Result<(), DataError> {
        if seq_len == 0 || preds.len() != labels.len() || !labels.len().is_multiple_of(seq_len) {
            return Err(DataError::InvalidBatch {
                row: 0,
                field: "preds/labels".into(),
                message: format!(
                    "lengths {} and {} are not equal multiples of seq_len {seq_len}",
                    preds.len(),
                    labels.len()
                ),
            });
        }
        for (p, l) in preds.chunks(seq_len).zip(labels.chunks(seq_len)) {
            let mut valid = false;
            let mut ok = true;
            for (&pi, &li) in p.iter().zip(l) {
                if li != self.ignore_label_id {
                    valid = true;
                    ok &= pi == li;
                }
            }
            if valid {
                self.total += 1;
                self.correct += u64::from(ok);
            }
        }
        Ok(())
    }

    /// (correct rows, counted rows).
    pub fn counts(&self) -> (u64, u64) {
        (self.correct, self.total)
    }

    /// Fraction of counted rows that are exactly right (`None` before any counted row).
    pub fn result(&self) -> Option<f64> {
        (self.total > 0).then(|| self.correct as f64 / self.total as f64)
    }

    /// Forgets all rows.
    pub fn reset(&mut self) {
        self.correct = 0;
        self.total = 0;
    }
}
