//! N-Queens: a generator-builder ported from the N-Queens builder of
//! `machinestein/Deep-Improvement-Supervision` (`dataset/build_nqueens_dataset.py`, commit
//! `032f1160`); the TRM reference repository has none.
//!
//! As there: an `n x n` board is `n * n` tokens, PAD 0, empty 1, queen 2 (`vocab_size` 3); the
//! label is a random complete placement (randomised backtracking, one queen per row) and the
//! input keeps `k` of its queens, `k` fixed or uniform in `0..n`; train puzzles get `num_aug`
//! dihedral copies; the test split is never augmented; `dataset.json` is the reference one
//! with one identifier.
//!
//! Departures (documented in `docs/data-puzzles.md`):
//! * `unique` (default on): the builder adds further queens of the label, in random order,
//!   until the partial placement has exactly one completion, so the label is the only correct
//!   answer. The source builder keeps `k` queens even when many completions exist (an empty
//!   board with any one of the 92 8x8 solutions as its label).
//! * Augmentation `i` (1-based) uses dihedral id `i % 8`; the source uses `(i - 1) % 8`, whose
//!   first augmentation is the identity, a copy of the original. For `num_aug = 8` both give the
//!   same group up to order.
//! * Test puzzles whose input is a dihedral image of a train input are redrawn (the source
//!   does not check), so the test split measures generalisation.
//! * ChaCha20 streams ([`DetRng`]) per split and puzzle instead of numpy generators;
//!   `dataset.json` uses Python's default separators like the TRM builders (the source
//!   indents it).

use crate::augment::{dihedral_transform, DetRng};
use crate::csv_puzzles::{check_output_free, BuildSummary, SplitWriter, TempOutput};
use crate::error::DataError;
use crate::grid::Grid;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

/// Token of an empty cell.
pub const EMPTY_TOKEN: u8 = 1;
/// Token of a queen.
pub const QUEEN_TOKEN: u8 = 2;
/// PAD, empty, queen.
pub const NQUEENS_VOCAB_SIZE: usize = 3;

/// Options of [`build_nqueens`] (the source `DataProcessConfig`).
#[derive(Clone, Debug, Serialize)]
pub struct NQueensBuildOptions {
    /// Board side `n` (4..=32; default 8).
    pub board_size: usize,
    /// Train puzzles (default 800).
    pub num_train: usize,
    /// Test puzzles (default 200).
    pub num_test: usize,
    /// Dihedral copies per train puzzle (default 8).
    pub num_aug: usize,
    /// Queens kept in the input; `None`: uniform in `0..n` per puzzle. With `unique`, this is
    /// a minimum.
    pub num_given: Option<usize>,
    /// Add queens until the completion is unique (see the module notes; default true).
    pub unique: bool,
    /// Seed (default 42).
    pub seed: u64,
    /// Output directory; must not exist.
    pub out: PathBuf,
}

impl NQueensBuildOptions {
    /// The source defaults: 8x8, 800 train, 200 test, 8 augmentations, random `k`, seed 42,
    /// plus `unique = true`.
    pub fn new(out: impl Into<PathBuf>) -> NQueensBuildOptions {
        NQueensBuildOptions {
            board_size: 8,
            num_train: 800,
            num_test: 200,
            num_aug: 8,
            num_given: None,
            unique: true,
            seed: 42,
            out: out.into(),
        }
    }
}

/// A placement: `cols[r]` is the column of the queen in row `r`, `None` if the row is empty.
pub type Placement = Vec<Option<usize>>;

/// Column, diagonal and anti-diagonal occupancy while placing queens row by row.
#[derive(Clone, Copy, Default)]
struct Attacks {
    cols: u64,
    diag: u128,
    anti: u128,
}

impl Attacks {
    fn free(&self, n: usize, r: usize, c: usize) -> bool {
        self.cols & (1 << c) == 0
            && self.diag & (1 << (r + n - c)) == 0
            && self.anti & (1 << (r + c)) == 0
    }

    fn with(self, n: usize, r: usize, c: usize) -> Attacks {
        Attacks {
            cols: self.cols | (1 << c),
            diag: self.diag | (1 << (r + n - c)),
            anti: self.anti | (1 << (r + c)),
        }
    }
}

/// Counts the completions of `partial` (queens already placed are kept), up to `limit`.
/// Rows with a queen must hold it; a clash among the given queens gives 0.
pub fn count_completions(n: usize, partial: &Placement, limit: usize) -> usize {
    fn go(n: usize, r: usize, a: Attacks, partial: &Placement, limit: usize, found: &mut usize) {
        if *found >= limit {
            return;
        }
        if r == n {
            *found += 1;
            return;
        }
        match partial[r] {
            Some(c) => {
                if c < n && a.free(n, r, c) {
                    go(n, r + 1, a.with(n, r, c), partial, limit, found);
                }
            }
            None => {
                for c in 0..n {
                    if a.free(n, r, c) {
                        go(n, r + 1, a.with(n, r, c), partial, limit, found);
                    }
                }
            }
        }
    }
    let mut found = 0;
    if partial.len() == n {
        go(n, 0, Attacks::default(), partial, limit, &mut found);
    }
    found
}

/// A random complete placement: backtracking row by row, columns tried in random order
/// (the source `generate_nqueens_solution`).
pub fn random_solution(n: usize, rng: &mut DetRng) -> Placement {
    fn go(n: usize, r: usize, a: Attacks, rng: &mut DetRng, out: &mut Placement) -> bool {
        if r == n {
            return true;
        }
        let mut cols: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut cols);
        for c in cols {
            if a.free(n, r, c) {
                out[r] = Some(c);
                if go(n, r + 1, a.with(n, r, c), rng, out) {
                    return true;
                }
            }
        }
        out[r] = None;
        false
    }
    let mut out = vec![None; n];
    go(n, 0, Attacks::default(), rng, &mut out);
    out
}

/// Whether `p` places `n` non-attacking queens.
pub fn is_valid_solution(n: usize, p: &Placement) -> bool {
    p.len() == n && p.iter().all(Option::is_some) && count_completions(n, p, 1) == 1
}

/// The board tokens of a placement (row-major, empty 1, queen 2).
pub fn placement_tokens(n: usize, p: &Placement) -> Vec<u8> {
    let mut t = vec![EMPTY_TOKEN; n * n];
    for (r, c) in p.iter().enumerate() {
        if let Some(c) = c {
            t[r * n + c] = QUEEN_TOKEN;
        }
    }
    t
}

/// One puzzle: the label placement and the input that keeps some of its queens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NQueensPuzzle {
    pub input: Placement,
    pub label: Placement,
}

/// Draws one puzzle: a random solution, `k` of its queens kept (`num_given` or uniform in
/// `0..n`), then, if `unique`, more of its queens in random order until the completion is
/// unique.
pub fn generate_nqueens(
    n: usize,
    num_given: Option<usize>,
    unique: bool,
    rng: &mut DetRng,
) -> NQueensPuzzle {
    let label = random_solution(n, rng);
    let k = num_given
        .unwrap_or_else(|| rng.below(n as u32) as usize)
        .min(n);
    let mut rows: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut rows);
    let mut input = vec![None; n];
    for &r in &rows[..k] {
        input[r] = label[r];
    }
    if unique {
        for &r in &rows[k..] {
            if count_completions(n, &input, 2) == 1 {
                break;
            }
            input[r] = label[r];
        }
    }
    NQueensPuzzle { input, label }
}

/// Builds the N-Queens dataset into `opts.out` (train/, test/, identifiers.json), written into
/// a temporary sibling directory renamed at the end; an existing `opts.out` is refused.
pub fn build_nqueens(opts: &NQueensBuildOptions) -> Result<BuildSummary, DataError> {
    let start = Instant::now();
    check_output_free(&opts.out)?;
    let n = opts.board_size;
    if !(4..=32).contains(&n) {
        return Err(DataError::InvalidOptions(format!(
            "board size {n} is outside 4..=32 (no solutions below 4 except 1)"
        )));
    }
    let train = draw_split(opts, "train", opts.num_train, &HashSet::new())?;
    // Every dihedral image of every train input: test inputs must avoid them.
    let mut seen = HashSet::new();
    for p in &train {
        let g = token_grid(n, &p.input);
        for t in 0..8 {
            seen.insert(dihedral_transform(&g, t).data().to_vec());
        }
    }
    let test = draw_split(opts, "test", opts.num_test, &seen)?;

    let tmp = TempOutput::next_to(&opts.out)?;
    let mut w = SplitWriter::create(&tmp.path, "train", n * n)?;
    for p in &train {
        let (inp, lab) = (token_grid(n, &p.input), token_grid(n, &p.label));
        let group: Vec<(Vec<u8>, Vec<u8>)> = (0..=opts.num_aug)
            .map(|i| {
                let t = (i % 8) as u8; // departure: the source uses (i - 1) % 8 for i >= 1
                (
                    dihedral_transform(&inp, t).data().to_vec(),
                    dihedral_transform(&lab, t).data().to_vec(),
                )
            })
            .collect();
        w.push_group(&group)?;
    }
    let train_summary = w.finish(NQUEENS_VOCAB_SIZE)?;
    let mut w = SplitWriter::create(&tmp.path, "test", n * n)?;
    for p in &test {
        w.push_group(&[(placement_tokens(n, &p.input), placement_tokens(n, &p.label))])?;
    }
    let test_summary = w.finish(NQUEENS_VOCAB_SIZE)?;
    tmp.commit(&opts.out)?;
    Ok(BuildSummary {
        out: opts.out.clone(),
        train: train_summary,
        test: test_summary,
        seq_len: n * n,
        vocab_size: NQUEENS_VOCAB_SIZE,
        test_in_train: 0,
        elapsed: start.elapsed(),
    })
}

/// The tokens of a placement as an `n x n` grid (for dihedral transforms).
fn token_grid(n: usize, p: &Placement) -> Grid {
    // placement_tokens returns n * n tokens.
    Grid::new(n, n, placement_tokens(n, p)).expect("n * n tokens")
}

/// Draws `count` puzzles for `split`, skipping those whose input tokens are in `exclude`;
/// attempt `k` uses its own stream. Gives up after `100 * count + 1000` attempts.
fn draw_split(
    opts: &NQueensBuildOptions,
    split: &str,
    count: usize,
    exclude: &HashSet<Vec<u8>>,
) -> Result<Vec<NQueensPuzzle>, DataError> {
    let n = opts.board_size;
    let max_attempts = count.saturating_mul(100).saturating_add(1000);
    let size = n.to_string();
    let mut out = Vec::with_capacity(count);
    let mut k = 0usize;
    while out.len() < count {
        if k >= max_attempts {
            return Err(DataError::InvalidOptions(format!(
                "{split}: only {} of {count} puzzles avoid the train inputs after {max_attempts} \
                 attempts; the {n}x{n} board has too few distinct puzzles",
                out.len()
            )));
        }
        let mut rng = DetRng::derive(opts.seed, "nqueens", &[split, &size, &k.to_string()]);
        k += 1;
        let p = generate_nqueens(n, opts.num_given, opts.unique, &mut rng);
        if !exclude.contains(&placement_tokens(n, &p.input)) {
            out.push(p);
        }
    }
    Ok(out)
}
