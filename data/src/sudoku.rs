//! Sudoku: the dataset builder (reference `dataset/build_sudoku_dataset.py`), its
//! augmentations, a solution-counting solver and an offline puzzle generator.
//!
//! Builder pipeline, as in the reference:
//! 1. Read `train` and `test` CSV files (`source,question,answer,rating`), keeping records with
//!    `rating >= min_difficulty` when that is set.
//! 2. Train only: subsample `subsample_size` records uniformly without replacement.
//! 3. Train only: each puzzle is a group `[original, num_aug augmentations]`; an augmentation
//!    permutes the digits (blank kept), transposes with probability 1/2, permutes the bands and
//!    the rows inside each band, the stacks and the columns inside each stack.
//! 4. Tokens: PAD 0, blank 1, digit `d` -> `d + 1` (the reference stores `cell + 1` with blank
//!    cells as 0); `seq_len` 81 and `vocab_size` 11 for 9x9.
//!
//! Departures (also in `docs/data-puzzles.md`):
//! * Random draws come from ChaCha20 streams ([`DetRng`]) keyed by the seed, not numpy's global
//!   generator: the subsample from one stream, each puzzle's augmentations from its own.
//! * 4x4 and 6x6 grids are accepted too (the reference asserts 81 cells): `seq_len` n², vocab
//!   `n + 2`. 6x6 boxes are 2 rows x 3 columns, so a transpose would break them: it is never
//!   drawn for 6x6; bands are 2 rows and stacks 3 columns.
//! * The reader rejects answers that disagree with a given (the reference does not check).

use crate::augment::DetRng;
use crate::csv_puzzles::{
    check_output_free, read_puzzle_csv, subsample_indices, write_puzzle_csv, BuildSummary,
    PuzzleKind, PuzzleRecord, SplitWriter, TempOutput,
};
use crate::error::DataError;
use crate::format::SplitSummary;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Shapes, validity and the solver
// ---------------------------------------------------------------------------------------

/// The geometry of a Sudoku: side `n` and box size `box_rows x box_cols` (`n = box_rows *
/// box_cols`). Cells hold 0 for a blank and `1..=n` for a digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SudokuShape {
    pub n: usize,
    pub box_rows: usize,
    pub box_cols: usize,
}

impl SudokuShape {
    /// The supported shapes: 4 (2x2 boxes), 6 (2x3 boxes: 2 rows by 3 columns), 9 (3x3).
    pub fn for_size(n: usize) -> Result<SudokuShape, DataError> {
        let (box_rows, box_cols) = match n {
            4 => (2, 2),
            6 => (2, 3),
            9 => (3, 3),
            _ => {
                return Err(DataError::InvalidOptions(format!(
                    "Sudoku size {n} is not supported (4, 6 or 9)"
                )))
            }
        };
        Ok(SudokuShape {
            n,
            box_rows,
            box_cols,
        })
    }

    /// Number of cells.
    pub fn cells(&self) -> usize {
        self.n * self.n
    }

    /// Box index of cell (r, c).
    fn box_of(&self, r: usize, c: usize) -> usize {
        (r / self.box_rows) * (self.n / self.box_cols) + c / self.box_cols
    }

    /// Tokens per example: one per cell.
    pub fn seq_len(&self) -> usize {
        self.cells()
    }

    /// PAD, blank and `n` digits (11 for 9x9, the reference value).
    pub fn vocab_size(&self) -> usize {
        self.n + 2
    }
}

/// Whether `grid` (0 = blank) is a complete, valid solution.
pub fn is_valid_solution(shape: &SudokuShape, grid: &[u8]) -> bool {
    grid.len() == shape.cells()
        && grid.iter().all(|&d| (1..=shape.n as u8).contains(&d))
        && Constraints::from_grid(shape, grid).is_some()
}

/// Row / column / box digit masks (bit `d` set = digit `d` used).
struct Constraints {
    rows: Vec<u32>,
    cols: Vec<u32>,
    boxes: Vec<u32>,
}

impl Constraints {
    /// The masks of the givens, or `None` if two givens clash or a cell is out of range.
    fn from_grid(shape: &SudokuShape, grid: &[u8]) -> Option<Constraints> {
        let n = shape.n;
        let mut c = Constraints {
            rows: vec![0; n],
            cols: vec![0; n],
            boxes: vec![0; n],
        };
        for (i, &d) in grid.iter().enumerate() {
            if d == 0 {
                continue;
            }
            if d as usize > n {
                return None;
            }
            let (r, col) = (i / n, i % n);
            let bit = 1u32 << d;
            let b = shape.box_of(r, col);
            if (c.rows[r] | c.cols[col] | c.boxes[b]) & bit != 0 {
                return None;
            }
            c.rows[r] |= bit;
            c.cols[col] |= bit;
            c.boxes[b] |= bit;
        }
        Some(c)
    }

    fn toggle(&mut self, shape: &SudokuShape, i: usize, d: u8) {
        let (r, c) = (i / shape.n, i % shape.n);
        let bit = 1u32 << d;
        self.rows[r] ^= bit;
        self.cols[c] ^= bit;
        self.boxes[shape.box_of(r, c)] ^= bit;
    }
}

/// A backtracking search with the minimum-remaining-values rule: at every step it fills the
/// blank with the fewest candidates, so forced cells never count as guesses.
struct Search<'a> {
    shape: SudokuShape,
    grid: Vec<u8>,
    cons: Constraints,
    /// Stop after this many solutions.
    limit: usize,
    solutions: usize,
    first: Option<Vec<u8>>,
    /// Values tried at cells that had two or more candidates.
    guesses: u64,
    /// Candidate order for the generator (None: ascending digits).
    rng: Option<&'a mut DetRng>,
}

impl Search<'_> {
    /// The blank with the fewest candidates and its candidate mask; `None` when full.
    fn pick(&self) -> Option<(usize, u32)> {
        let n = self.shape.n;
        let all = ((1u32 << (n + 1)) - 1) & !1;
        let mut best: Option<(usize, u32, u32)> = None;
        for (i, _) in self.grid.iter().enumerate().filter(|(_, &d)| d == 0) {
            let (r, c) = (i / n, i % n);
            let used =
                self.cons.rows[r] | self.cons.cols[c] | self.cons.boxes[self.shape.box_of(r, c)];
            let cand = all & !used;
            let count = cand.count_ones();
            if best.is_none_or(|(_, _, k)| count < k) {
                best = Some((i, cand, count));
                if count <= 1 {
                    break;
                }
            }
        }
        best.map(|(i, cand, _)| (i, cand))
    }

    fn run(&mut self) {
        if self.solutions >= self.limit {
            return;
        }
        let Some((i, cand)) = self.pick() else {
            self.solutions += 1;
            if self.first.is_none() {
                self.first = Some(self.grid.clone());
            }
            return;
        };
        let mut digits: Vec<u8> = (1..=self.shape.n as u8)
            .filter(|d| cand & (1 << d) != 0)
            .collect();
        if let Some(rng) = self.rng.as_deref_mut() {
            rng.shuffle(&mut digits);
        }
        let branching = digits.len() > 1;
        for d in digits {
            if self.solutions >= self.limit {
                return;
            }
            if branching {
                self.guesses += 1;
            }
            self.grid[i] = d;
            self.cons.toggle(&self.shape, i, d);
            self.run();
            self.cons.toggle(&self.shape, i, d);
            self.grid[i] = 0;
        }
    }
}

/// The outcome of [`solve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolveResult {
    /// Solutions found, at most the limit.
    pub solutions: usize,
    /// The first solution found (cells 1..=n).
    pub first: Option<Vec<u8>>,
    /// Values tried at cells with two or more candidates before the search stopped.
    pub guesses: u64,
}

/// Searches `grid` (0 = blank) for up to `limit` solutions. Clashing givens give 0 solutions.
pub fn solve(shape: &SudokuShape, grid: &[u8], limit: usize) -> SolveResult {
    let Some(cons) = (grid.len() == shape.cells())
        .then(|| Constraints::from_grid(shape, grid))
        .flatten()
    else {
        return SolveResult {
            solutions: 0,
            first: None,
            guesses: 0,
        };
    };
    let mut s = Search {
        shape: *shape,
        grid: grid.to_vec(),
        cons,
        limit,
        solutions: 0,
        first: None,
        guesses: 0,
        rng: None,
    };
    s.run();
    SolveResult {
        solutions: s.solutions,
        first: s.first,
        guesses: s.guesses,
    }
}

/// Number of solutions of `grid`, counting at most to `limit` (2 answers "unique or not").
pub fn count_solutions(shape: &SudokuShape, grid: &[u8], limit: usize) -> usize {
    solve(shape, grid, limit).solutions
}

// ---------------------------------------------------------------------------------------
// Augmentation
// ---------------------------------------------------------------------------------------

/// One Sudoku augmentation, the reference `shuffle_sudoku`: the board is optionally
/// transposed, then output cell (i, j) takes cell (`row_perm[i]`, `col_perm[j]`), then every
/// digit `d` becomes `digit_map[d]` (`digit_map[0] = 0` keeps blanks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SudokuAugmentation {
    pub shape: SudokuShape,
    pub digit_map: Vec<u8>,
    pub transpose: bool,
    pub row_perm: Vec<usize>,
    pub col_perm: Vec<usize>,
}

impl SudokuAugmentation {
    /// Draws an augmentation in the reference order: digit permutation, transpose flag, band
    /// order, rows inside each band, stack order, columns inside each stack.
    pub fn random(shape: &SudokuShape, rng: &mut DetRng) -> SudokuAugmentation {
        let mut digit_map: Vec<u8> = (0..=shape.n as u8).collect();
        rng.shuffle(&mut digit_map[1..]);
        // Departure: with non-square boxes (6x6) a transpose breaks the boxes; never drawn.
        let transpose = shape.box_rows == shape.box_cols && rng.below(2) == 1;
        let row_perm = Self::block_permutation(rng, shape.n / shape.box_rows, shape.box_rows);
        let col_perm = Self::block_permutation(rng, shape.n / shape.box_cols, shape.box_cols);
        SudokuAugmentation {
            shape: *shape,
            digit_map,
            transpose,
            row_perm,
            col_perm,
        }
    }

    /// A permutation of `blocks * size` lines that keeps lines of a block together: the block
    /// order is shuffled, then the lines inside each block.
    fn block_permutation(rng: &mut DetRng, blocks: usize, size: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..blocks).collect();
        rng.shuffle(&mut order);
        let mut perm = Vec::with_capacity(blocks * size);
        for b in order {
            let mut inner: Vec<usize> = (0..size).collect();
            rng.shuffle(&mut inner);
            perm.extend(inner.into_iter().map(|k| b * size + k));
        }
        perm
    }

    /// Applies the augmentation to a board (0 = blank).
    pub fn apply(&self, board: &[u8]) -> Vec<u8> {
        let n = self.shape.n;
        let src = |r: usize, c: usize| {
            if self.transpose {
                board[c * n + r]
            } else {
                board[r * n + c]
            }
        };
        let mut out = Vec::with_capacity(n * n);
        for &r in &self.row_perm {
            for &c in &self.col_perm {
                out.push(self.digit_map[src(r, c) as usize]);
            }
        }
        out
    }

    /// Undoes [`SudokuAugmentation::apply`] (the reference has no inverse; every step is a
    /// bijection, so one exists).
    pub fn invert(&self, board: &[u8]) -> Vec<u8> {
        let n = self.shape.n;
        let mut inv_digit = vec![0u8; self.digit_map.len()];
        for (d, &m) in self.digit_map.iter().enumerate() {
            inv_digit[m as usize] = d as u8;
        }
        let mut out = vec![0u8; n * n];
        for (i, &r) in self.row_perm.iter().enumerate() {
            for (j, &c) in self.col_perm.iter().enumerate() {
                let (sr, sc) = if self.transpose { (c, r) } else { (r, c) };
                out[sr * n + sc] = inv_digit[board[i * n + j] as usize];
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------

/// Options of [`build_sudoku`], mirroring the reference `DataProcessConfig`.
#[derive(Clone, Debug, Serialize)]
pub struct SudokuBuildOptions {
    /// The train CSV (the reference downloads `train.csv` of `sapientinc/sudoku-extreme`).
    pub train_csv: PathBuf,
    /// The test CSV; `None`: no `test/` split (the reference always builds one).
    pub test_csv: Option<PathBuf>,
    /// Output directory; must not exist.
    pub out: PathBuf,
    /// Keep this many train records, drawn without replacement (reference `subsample_size`).
    pub subsample_size: Option<usize>,
    /// Keep records with `rating >= min_difficulty`, both splits (reference `min_difficulty`).
    pub min_difficulty: Option<i64>,
    /// Augmentations per train puzzle (reference `num_aug`, default 0; TRM uses 1000).
    pub num_aug: usize,
    /// Seed of the subsample and the augmentations.
    pub seed: u64,
}

impl SudokuBuildOptions {
    /// The reference defaults (no subsample, no difficulty filter, no augmentation), seed 42.
    pub fn new(
        train_csv: impl Into<PathBuf>,
        test_csv: Option<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> SudokuBuildOptions {
        SudokuBuildOptions {
            train_csv: train_csv.into(),
            test_csv,
            out: out.into(),
            subsample_size: None,
            min_difficulty: None,
            num_aug: 0,
            seed: 42,
        }
    }
}

/// Converts a CSV question / answer to cells (0 = blank). The reader has validated them.
fn sudoku_cells(s: &str) -> Vec<u8> {
    s.bytes()
        .map(|b| if b == b'.' { 0 } else { b.wrapping_sub(b'0') })
        .collect()
}

/// Cells to tokens: the reference stores `cell + 1` (blank 1, digit d -> d + 1, PAD 0).
fn sudoku_tokens(cells: &[u8]) -> Vec<u8> {
    cells.iter().map(|&c| c + 1).collect()
}

/// Reads one CSV, applies the difficulty filter and returns the shape and records.
fn load_split(
    path: &Path,
    min_difficulty: Option<i64>,
) -> Result<(Option<SudokuShape>, Vec<PuzzleRecord>), DataError> {
    let mut recs = read_puzzle_csv(path, PuzzleKind::Sudoku)?;
    recs.retain(|r| min_difficulty.is_none_or(|m| r.rating >= m));
    let shape = match recs.first() {
        Some(r) => Some(SudokuShape::for_size(
            crate::csv_puzzles::square_side(r.question.len()).unwrap_or(0),
        )?),
        None => None,
    };
    Ok((shape, recs))
}

/// Builds the Sudoku dataset into `opts.out` (train/, test/ if `test_csv`, identifiers.json).
///
/// Written into a temporary sibling directory renamed at the end; an existing `opts.out` is an
/// error and is never touched. Deterministic for a given seed.
pub fn build_sudoku(opts: &SudokuBuildOptions) -> Result<BuildSummary, DataError> {
    let start = Instant::now();
    check_output_free(&opts.out)?;
    let (train_shape, mut train) = load_split(&opts.train_csv, opts.min_difficulty)?;
    let test = match &opts.test_csv {
        Some(p) => Some((p, load_split(p, opts.min_difficulty)?)),
        None => None,
    };
    let shape = train_shape
        .or_else(|| test.as_ref().and_then(|(_, (s, _))| *s))
        .ok_or_else(|| DataError::InvalidOptions("no Sudoku records after filtering".into()))?;
    if let Some((p, (Some(s), _))) = &test {
        if *s != shape {
            return Err(DataError::InvalidOptions(format!(
                "{}: {}x{} Sudoku, the train file has {}x{}",
                p.display(),
                s.n,
                s.n,
                shape.n,
                shape.n
            )));
        }
    }
    if let Some(k) = opts.subsample_size {
        if k < train.len() {
            let mut rng = DetRng::derive(opts.seed, "sudoku-subsample", &[]);
            let idx = subsample_indices(&mut rng, train.len(), k);
            train = idx.into_iter().map(|i| train[i].clone()).collect();
        }
    }
    if opts.num_aug > (i32::MAX as usize) / train.len().max(1) {
        return Err(DataError::InvalidOptions(format!(
            "num_aug {} is too large",
            opts.num_aug
        )));
    }

    let tmp = TempOutput::next_to(&opts.out)?;
    let train_summary = write_sudoku_split(&tmp.path, "train", &shape, &train, opts)?;
    let (test_summary, test_in_train) = match &test {
        Some((_, (_, recs))) => {
            let seen: HashSet<&str> = train.iter().map(|r| r.question.as_str()).collect();
            let leaks = recs
                .iter()
                .filter(|r| seen.contains(r.question.as_str()))
                .count();
            (
                write_sudoku_split(&tmp.path, "test", &shape, recs, opts)?,
                leaks,
            )
        }
        None => (SplitSummary::default(), 0),
    };
    tmp.commit(&opts.out)?;
    Ok(BuildSummary {
        out: opts.out.clone(),
        train: train_summary,
        test: test_summary,
        seq_len: shape.seq_len(),
        vocab_size: shape.vocab_size(),
        test_in_train,
        elapsed: start.elapsed(),
    })
}

/// Writes one split; augmentations (train only) come from one stream per source puzzle.
fn write_sudoku_split(
    root: &Path,
    split: &str,
    shape: &SudokuShape,
    recs: &[PuzzleRecord],
    opts: &SudokuBuildOptions,
) -> Result<SplitSummary, DataError> {
    let num_aug = if split == "train" { opts.num_aug } else { 0 };
    let mut w = SplitWriter::create(root, split, shape.seq_len())?;
    // Groups are built in parallel chunks and written in order: output is thread-independent.
    for (chunk_no, chunk) in recs.chunks(256).enumerate() {
        let groups: Vec<Vec<(Vec<u8>, Vec<u8>)>> = chunk
            .par_iter()
            .enumerate()
            .map(|(k, r)| {
                let index = (chunk_no * 256 + k).to_string();
                sudoku_group(shape, r, num_aug, opts.seed, &index)
            })
            .collect();
        for g in &groups {
            w.push_group(g)?;
        }
        let done = (chunk_no * 256 + chunk.len()).min(recs.len());
        crate::progress::report(&format!("sudoku build: {split} puzzles"), done, recs.len());
    }
    w.finish(shape.vocab_size())
}

/// One group: the original puzzle then `num_aug` augmentations, as token rows.
fn sudoku_group(
    shape: &SudokuShape,
    r: &PuzzleRecord,
    num_aug: usize,
    seed: u64,
    index: &str,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (q, a) = (sudoku_cells(&r.question), sudoku_cells(&r.answer));
    let mut rows = vec![(sudoku_tokens(&q), sudoku_tokens(&a))];
    if num_aug > 0 {
        let mut rng = DetRng::derive(seed, "sudoku-augment", &[index]);
        for _ in 0..num_aug {
            let aug = SudokuAugmentation::random(shape, &mut rng);
            rows.push((sudoku_tokens(&aug.apply(&q)), sudoku_tokens(&aug.apply(&a))));
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------

/// One generated puzzle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedSudoku {
    /// Cells, 0 = blank.
    pub question: Vec<u8>,
    /// The unique solution.
    pub answer: Vec<u8>,
    /// Guesses of [`solve`] on the final puzzle (0: solvable by forced cells alone).
    pub guesses: u64,
}

/// Generates one puzzle: a random full grid, then clues removed in random order, each removal
/// kept only if the puzzle still has exactly one solution. The result is minimal: no single
/// remaining clue can be removed.
pub fn generate_sudoku(shape: &SudokuShape, rng: &mut DetRng) -> GeneratedSudoku {
    let answer = random_full_grid(shape, rng);
    let mut question = answer.clone();
    let mut order: Vec<usize> = (0..shape.cells()).collect();
    rng.shuffle(&mut order);
    for i in order {
        let d = question[i];
        question[i] = 0;
        if count_solutions(shape, &question, 2) != 1 {
            question[i] = d;
        }
    }
    let guesses = solve(shape, &question, 1).guesses;
    GeneratedSudoku {
        question,
        answer,
        guesses,
    }
}

/// A uniformly-seeded random complete grid: the solver run on an empty grid with candidates
/// tried in random order.
fn random_full_grid(shape: &SudokuShape, rng: &mut DetRng) -> Vec<u8> {
    let empty = vec![0u8; shape.cells()];
    let mut s = Search {
        shape: *shape,
        cons: Constraints::from_grid(shape, &empty).expect("an empty grid has no clash"),
        grid: empty,
        limit: 1,
        solutions: 0,
        first: None,
        guesses: 0,
        rng: Some(rng),
    };
    s.run();
    // Every supported shape has solutions, and the search is exhaustive.
    s.first.expect("an empty Sudoku always has a solution")
}

/// Options of [`generate_sudoku_csv`].
#[derive(Clone, Debug, Serialize)]
pub struct SudokuGenerateOptions {
    /// Side: 4, 6 or 9.
    pub size: usize,
    /// Puzzles to write.
    pub count: usize,
    /// Keep only puzzles with at least this many solver guesses (0: keep all).
    pub min_rating: u64,
    /// Seed; puzzle attempt `k` uses its own stream, so the file is thread-independent.
    pub seed: u64,
    /// Output CSV; must not exist.
    pub out: PathBuf,
}

/// What a generator produced.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateSummary {
    pub out: PathBuf,
    /// Records written.
    pub count: usize,
    /// Candidates generated (rejected ones included: duplicates, too easy / too short).
    pub attempts: usize,
    /// Mean of the `rating` column.
    pub mean_rating: f64,
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Renders cells as a CSV field: `.` for a blank, digits otherwise.
fn cells_text(cells: &[u8], blank: char) -> String {
    cells
        .iter()
        .map(|&d| if d == 0 { blank } else { char::from(b'0' + d) })
        .collect()
}

/// Generates `count` distinct Sudoku puzzles with unique solutions into a CSV file with the
/// reference schema (`source` = `recursa-gen-sudoku{n}`, `rating` = solver guesses).
/// Written atomically; an existing `out` is refused. Duplicate questions are skipped; after
/// `20 * count + 1000` candidates it gives up with an error (small sizes have few puzzles).
pub fn generate_sudoku_csv(opts: &SudokuGenerateOptions) -> Result<GenerateSummary, DataError> {
    let start = Instant::now();
    check_output_free(&opts.out)?;
    let shape = SudokuShape::for_size(opts.size)?;
    let max_attempts = opts.count.saturating_mul(20).saturating_add(1000);
    let size = opts.size.to_string();
    let source = format!("recursa-gen-sudoku{}", opts.size);
    let (records, attempts) = collect_distinct(opts.count, max_attempts, |k| {
        let mut rng = DetRng::derive(opts.seed, "sudoku-generate", &[&size, &k.to_string()]);
        let p = generate_sudoku(&shape, &mut rng);
        (p.guesses >= opts.min_rating).then(|| PuzzleRecord {
            row: 0,
            source: source.clone(),
            question: cells_text(&p.question, '.'),
            answer: cells_text(&p.answer, '.'),
            rating: p.guesses as i64,
        })
    })?;
    write_puzzle_csv(&opts.out, &records)?;
    Ok(GenerateSummary {
        out: opts.out.clone(),
        count: records.len(),
        attempts,
        mean_rating: mean_rating(&records),
        elapsed: start.elapsed(),
    })
}

/// Mean of the ratings (0 for none).
pub(crate) fn mean_rating(records: &[PuzzleRecord]) -> f64 {
    if records.is_empty() {
        return 0.0;
    }
    records.iter().map(|r| r.rating as f64).sum::<f64>() / records.len() as f64
}

/// Runs `make(k)` for attempts k = 0, 1, ... (in parallel batches, consumed in order) and keeps
/// the first `count` accepted records with distinct questions. Returns them and the number of
/// attempts consumed; fails after `max_attempts`.
pub(crate) fn collect_distinct<F>(
    count: usize,
    max_attempts: usize,
    make: F,
) -> Result<(Vec<PuzzleRecord>, usize), DataError>
where
    F: Fn(usize) -> Option<PuzzleRecord> + Sync,
{
    let mut out = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    let mut next = 0usize;
    let batch = rayon::current_num_threads().max(1) * 16;
    while out.len() < count {
        if next >= max_attempts {
            return Err(DataError::InvalidOptions(format!(
                "only {} distinct puzzles passed the filters in {max_attempts} attempts \
                 ({count} asked); lower the count or the filter",
                out.len()
            )));
        }
        let end = (next + batch).min(max_attempts);
        let made: Vec<Option<PuzzleRecord>> = (next..end).into_par_iter().map(&make).collect();
        for (k, rec) in (next..end).zip(made) {
            next = k + 1;
            if let Some(r) = rec {
                if seen.insert(r.question.clone()) {
                    out.push(r);
                    if out.len() == count {
                        break;
                    }
                }
            }
        }
        crate::progress::report("generate: distinct puzzles", out.len(), count);
    }
    Ok((out, next))
}
