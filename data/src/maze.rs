//! Mazes: the dataset builder (reference `dataset/build_maze_dataset.py`), a BFS shortest-path
//! solver and an offline maze generator.
//!
//! Builder, as in the reference: train and test CSV files (`source,question,answer,rating`)
//! of square mazes over the alphabet `# SGo` (wall, open, start, goal, path); the train split
//! is optionally subsampled; with `aug` every train maze becomes a group of its 8 dihedral
//! transforms (ids 0..7 of [`crate::augment::dihedral_transform`], identity first); tokens are
//! `CHARSET.index(c) + 1` (`#` 1, ` ` 2, `S` 3, `G` 4, `o` 5, PAD 0), `vocab_size` 6 and
//! `seq_len` = cells (900 for 30x30).
//!
//! Departures: the subsample draws from a ChaCha20 stream ([`DetRng`]) instead of numpy's
//! global generator; the test file is optional; both files must have the same grid size (the
//! reference would write two splits of different `seq_len`, which its loader rejects).

use crate::augment::{dihedral_transform, DetRng};
use crate::csv_puzzles::{
    check_output_free, read_puzzle_csv, square_side, subsample_indices, write_puzzle_csv,
    BuildSummary, PuzzleKind, PuzzleRecord, SplitWriter, TempOutput, MAZE_CHARSET,
};
use crate::error::DataError;
use crate::format::SplitSummary;
use crate::grid::Grid;
use crate::sudoku::{collect_distinct, mean_rating, GenerateSummary};
use serde::Serialize;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Wall character.
pub const WALL: u8 = b'#';
/// Open cell character.
pub const OPEN: u8 = b' ';
/// Start character.
pub const START: u8 = b'S';
/// Goal character.
pub const GOAL: u8 = b'G';
/// Path marker of the answer.
pub const PATH: u8 = b'o';
/// PAD + the five characters.
pub const MAZE_VOCAB_SIZE: usize = MAZE_CHARSET.len() + 1;

// ---------------------------------------------------------------------------------------
// Shortest paths
// ---------------------------------------------------------------------------------------

/// Breadth-first distances (in moves, 4-neighbourhood) from `from` over the non-wall cells
/// of an `n x n` maze; `None` for unreachable cells. Also returns each cell's BFS parent.
pub fn bfs(maze: &[u8], n: usize, from: usize) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut dist = vec![None; maze.len()];
    let mut parent = vec![usize::MAX; maze.len()];
    let mut queue = VecDeque::new();
    if from < maze.len() && maze[from] != WALL {
        dist[from] = Some(0);
        queue.push_back(from);
    }
    while let Some(i) = queue.pop_front() {
        let d = dist[i].unwrap_or(0);
        for j in neighbours(i, n) {
            if maze[j] != WALL && dist[j].is_none() {
                dist[j] = Some(d + 1);
                parent[j] = i;
                queue.push_back(j);
            }
        }
    }
    (dist, parent)
}

/// The 4-neighbours of cell `i` inside the grid, in the fixed order up, down, left, right.
fn neighbours(i: usize, n: usize) -> impl Iterator<Item = usize> {
    let (r, c) = (i / n, i % n);
    [
        (r > 0).then(|| i - n),
        (r + 1 < n).then(|| i + n),
        (c > 0).then(|| i - 1),
        (c + 1 < n).then(|| i + 1),
    ]
    .into_iter()
    .flatten()
}

/// One shortest path from `S` to `G` (cell indices, both ends included), the first one BFS
/// finds with the neighbour order up, down, left, right; `None` if there is no `S`, no `G` or
/// no path.
pub fn shortest_path(maze: &[u8], n: usize) -> Option<Vec<usize>> {
    let s = maze.iter().position(|&c| c == START)?;
    let g = maze.iter().position(|&c| c == GOAL)?;
    let (dist, parent) = bfs(maze, n, s);
    dist.get(g).copied().flatten()?;
    let mut path = vec![g];
    while let Some(&last) = path.last() {
        if last == s {
            break;
        }
        path.push(parent[last]);
    }
    path.reverse();
    Some(path)
}

/// The answer of a maze: the question with the cells strictly between `S` and `G` on `path`
/// marked `o` (the reference answers keep `S` and `G`).
pub fn mark_path(maze: &[u8], path: &[usize]) -> Vec<u8> {
    let mut out = maze.to_vec();
    for &i in path.iter().skip(1).take(path.len().saturating_sub(2)) {
        out[i] = PATH;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------

/// Options of [`generate_maze`] and [`generate_maze_csv`].
#[derive(Clone, Debug, Serialize)]
pub struct MazeGenerateOptions {
    /// Side of the square grid (default 30, the Maze-Hard size). At least 3.
    pub size: usize,
    /// Mazes to write.
    pub count: usize,
    /// Keep only mazes whose shortest S-G path has more than this many moves (Maze-Hard: 110).
    pub min_path_len: usize,
    /// Percentage (0..=100) of the walls left between two adjacent cells after carving that
    /// are opened, creating loops, so that shortest paths are not the only paths.
    pub loop_percent: u32,
    /// Seed; maze attempt `k` uses its own stream, so the file is thread-independent.
    pub seed: u64,
    /// Output CSV; must not exist.
    pub out: PathBuf,
}

impl MazeGenerateOptions {
    /// 30x30, path longer than 110, 5% loops, seed 42.
    pub fn new(count: usize, out: impl Into<PathBuf>) -> MazeGenerateOptions {
        MazeGenerateOptions {
            size: 30,
            count,
            min_path_len: 110,
            loop_percent: 5,
            seed: 42,
            out: out.into(),
        }
    }
}

/// One generated maze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedMaze {
    /// `n * n` characters from `# SG`.
    pub question: Vec<u8>,
    /// The question with one shortest path marked `o`.
    pub answer: Vec<u8>,
    /// Moves of the shortest path.
    pub path_len: usize,
}

/// Generates one maze, or `None` if no goal is far enough from the drawn start.
///
/// Layout: "cells" sit at even coordinates `(2i, 2j)`; the recursive backtracker (depth-first
/// search from a random cell, random neighbour order) opens the cells and the wall cell
/// between each cell and the neighbour it carves to, giving a perfect maze (a spanning tree).
/// For even `n` the last row and column hold no cells and stay walls; the grid edge is the
/// outer wall. Then `loop_percent`% of the remaining walls between two cells are opened.
/// Start: a uniform open cell. Goal: uniform among the open cells more than
/// `min_path_len` moves away (BFS), which is the same distribution as drawing S and G
/// uniformly and keeping pairs that pass the threshold, given the maze and the start.
pub fn generate_maze(
    n: usize,
    min_path_len: usize,
    loop_percent: u32,
    rng: &mut DetRng,
) -> Option<GeneratedMaze> {
    let mut maze = carve_perfect_maze(n, rng);
    open_loops(&mut maze, n, loop_percent, rng);
    let open: Vec<usize> = (0..maze.len()).filter(|&i| maze[i] == OPEN).collect();
    let s = open[rng.below(open.len() as u32) as usize];
    let (dist, _) = bfs(&maze, n, s);
    let far: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&i| dist[i].is_some_and(|d| d > min_path_len))
        .collect();
    if far.is_empty() {
        return None;
    }
    let g = far[rng.below(far.len() as u32) as usize];
    maze[s] = START;
    maze[g] = GOAL;
    let path = shortest_path(&maze, n)?;
    Some(GeneratedMaze {
        answer: mark_path(&maze, &path),
        path_len: path.len() - 1,
        question: maze,
    })
}

/// An `n x n` grid of walls with a perfect maze carved over the even-coordinate cells.
fn carve_perfect_maze(n: usize, rng: &mut DetRng) -> Vec<u8> {
    let m = n.div_ceil(2); // cells per side: even coordinates 0, 2, .., <= n - 1
    let mut maze = vec![WALL; n * n];
    let mut visited = vec![false; m * m];
    let start = rng.below((m * m) as u32) as usize;
    let mut stack = vec![start];
    visited[start] = true;
    maze[(start / m) * 2 * n + (start % m) * 2] = OPEN;
    while let Some(&cell) = stack.last() {
        let (ci, cj) = (cell / m, cell % m);
        let mut next: Vec<(usize, usize)> = [
            (ci > 0).then(|| (ci - 1, cj)),
            (ci + 1 < m).then(|| (ci + 1, cj)),
            (cj > 0).then(|| (ci, cj - 1)),
            (cj + 1 < m).then(|| (ci, cj + 1)),
        ]
        .into_iter()
        .flatten()
        .filter(|&(a, b)| !visited[a * m + b])
        .collect();
        if next.is_empty() {
            stack.pop();
            continue;
        }
        rng.shuffle(&mut next);
        let (a, b) = next[0];
        visited[a * m + b] = true;
        // Open the target cell and the wall cell between (the midpoint in grid coordinates).
        maze[2 * a * n + 2 * b] = OPEN;
        maze[(ci + a) * n + (cj + b)] = OPEN;
        stack.push(a * m + b);
    }
    maze
}

/// Opens each wall that separates two horizontally or vertically adjacent cells with
/// probability `percent / 100`, in row-major order.
fn open_loops(maze: &mut [u8], n: usize, percent: u32, rng: &mut DetRng) {
    if percent == 0 {
        return;
    }
    let last = if n.is_multiple_of(2) { n - 1 } else { n }; // the cell region is [0, last)
    for r in 0..last {
        for c in 0..last {
            let i = r * n + c;
            // A wall between cells has exactly one odd coordinate.
            if maze[i] == WALL && (r % 2) + (c % 2) == 1 && rng.below(100) < percent {
                maze[i] = OPEN;
            }
        }
    }
}

/// Generates `count` distinct mazes into a CSV file with the reference schema (`source` =
/// `recursa-gen-maze{n}`, `rating` = shortest-path length in moves). Written atomically; an
/// existing `out` is refused. Gives up after `50 * count + 1000` attempts.
pub fn generate_maze_csv(opts: &MazeGenerateOptions) -> Result<GenerateSummary, DataError> {
    let start = Instant::now();
    check_output_free(&opts.out)?;
    if opts.size < 3 || opts.size > 256 {
        return Err(DataError::InvalidOptions(format!(
            "maze size {} is outside 3..=256",
            opts.size
        )));
    }
    if opts.loop_percent > 100 {
        return Err(DataError::InvalidOptions(format!(
            "loop_percent {} is above 100",
            opts.loop_percent
        )));
    }
    let size = opts.size.to_string();
    let source = format!("recursa-gen-maze{}", opts.size);
    let max_attempts = opts.count.saturating_mul(50).saturating_add(1000);
    let (records, attempts) = collect_distinct(opts.count, max_attempts, |k| {
        let mut rng = DetRng::derive(opts.seed, "maze-generate", &[&size, &k.to_string()]);
        let m = generate_maze(opts.size, opts.min_path_len, opts.loop_percent, &mut rng)?;
        Some(PuzzleRecord {
            row: 0,
            source: source.clone(),
            // The alphabet is ASCII.
            question: String::from_utf8_lossy(&m.question).into_owned(),
            answer: String::from_utf8_lossy(&m.answer).into_owned(),
            rating: m.path_len as i64,
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

// ---------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------

/// Options of [`build_maze`], mirroring the reference `DataProcessConfig`.
#[derive(Clone, Debug, Serialize)]
pub struct MazeBuildOptions {
    /// The train CSV (the reference downloads `train.csv` of `sapientinc/maze-30x30-hard-1k`).
    pub train_csv: PathBuf,
    /// The test CSV; `None`: no `test/` split.
    pub test_csv: Option<PathBuf>,
    /// Output directory; must not exist.
    pub out: PathBuf,
    /// Keep this many train records, drawn without replacement (reference `subsample_size`).
    pub subsample_size: Option<usize>,
    /// Add the 8 dihedral transforms of every train maze (reference `aug`, default false).
    pub aug: bool,
    /// Seed of the subsample.
    pub seed: u64,
}

impl MazeBuildOptions {
    /// The reference defaults (no subsample, no augmentation), seed 42.
    pub fn new(
        train_csv: impl Into<PathBuf>,
        test_csv: Option<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> MazeBuildOptions {
        MazeBuildOptions {
            train_csv: train_csv.into(),
            test_csv,
            out: out.into(),
            subsample_size: None,
            aug: false,
            seed: 42,
        }
    }
}

/// Token of a maze character: its index in `# SGo` plus one (the reference `char2id`).
fn maze_token(c: u8) -> u8 {
    MAZE_CHARSET
        .iter()
        .position(|&x| x == c)
        .map_or(0, |p| p as u8 + 1)
}

/// Builds the maze dataset into `opts.out` (train/, test/ if `test_csv`, identifiers.json).
/// Written into a temporary sibling directory renamed at the end; an existing `opts.out` is an
/// error and is never touched.
pub fn build_maze(opts: &MazeBuildOptions) -> Result<BuildSummary, DataError> {
    let start = Instant::now();
    check_output_free(&opts.out)?;
    let mut train = read_puzzle_csv(&opts.train_csv, PuzzleKind::Maze)?;
    let test = match &opts.test_csv {
        Some(p) => Some((p, read_puzzle_csv(p, PuzzleKind::Maze)?)),
        None => None,
    };
    let cells = train
        .first()
        .or_else(|| test.as_ref().and_then(|(_, t)| t.first()))
        .map(|r| r.question.len())
        .ok_or_else(|| DataError::InvalidOptions("no maze records".into()))?;
    if let Some((p, t)) = &test {
        if let Some(r) = t.iter().find(|r| r.question.len() != cells) {
            return Err(DataError::InvalidOptions(format!(
                "{}: row {} has {} cells, the train file has {cells}",
                p.display(),
                r.row,
                r.question.len()
            )));
        }
    }
    let n = square_side(cells).unwrap_or(0);
    if let Some(k) = opts.subsample_size {
        if k < train.len() {
            let mut rng = DetRng::derive(opts.seed, "maze-subsample", &[]);
            let idx = subsample_indices(&mut rng, train.len(), k);
            train = idx.into_iter().map(|i| train[i].clone()).collect();
        }
    }
    let tmp = TempOutput::next_to(&opts.out)?;
    let train_summary = write_maze_split(&tmp.path, "train", n, &train, opts.aug)?;
    let (test_summary, test_in_train) = match &test {
        Some((_, recs)) => {
            let seen: HashSet<&str> = train.iter().map(|r| r.question.as_str()).collect();
            let leaks = recs
                .iter()
                .filter(|r| seen.contains(r.question.as_str()))
                .count();
            (write_maze_split(&tmp.path, "test", n, recs, false)?, leaks)
        }
        None => (SplitSummary::default(), 0),
    };
    tmp.commit(&opts.out)?;
    Ok(BuildSummary {
        out: opts.out.clone(),
        train: train_summary,
        test: test_summary,
        seq_len: cells,
        vocab_size: MAZE_VOCAB_SIZE,
        test_in_train,
        elapsed: start.elapsed(),
    })
}

/// Writes one split: a group per maze, of 8 dihedral transforms when `aug`, else 1.
fn write_maze_split(
    root: &Path,
    split: &str,
    n: usize,
    recs: &[PuzzleRecord],
    aug: bool,
) -> Result<SplitSummary, DataError> {
    let mut w = SplitWriter::create(root, split, n * n)?;
    let grid = |s: &str| {
        let tokens = s.bytes().map(maze_token).collect();
        // The reader checked that every field has n * n cells.
        Grid::new(n, n, tokens).expect("validated maze length")
    };
    for (i, r) in recs.iter().enumerate() {
        if i % 64 == 63 || i + 1 == recs.len() {
            crate::progress::report(&format!("maze build: {split} puzzles"), i + 1, recs.len());
        }
        let (q, a) = (grid(&r.question), grid(&r.answer));
        let group: Vec<(Vec<u8>, Vec<u8>)> = (0..if aug { 8 } else { 1 })
            .map(|t| {
                (
                    dihedral_transform(&q, t).data().to_vec(),
                    dihedral_transform(&a, t).data().to_vec(),
                )
            })
            .collect();
        w.push_group(&group)?;
    }
    w.finish(MAZE_VOCAB_SIZE)
}
