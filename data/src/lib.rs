//! Dataset builders, loaders and evaluators for recursa.
//!
//! * [`arc`]: the ARC dataset builder (reference `dataset/build_arc_dataset.py`).
//! * [`atomic`]: writing a file whole or not at all (every writer uses it).
//! * [`augment`]: dihedral transforms, colour maps, puzzle names, the deterministic RNG.
//! * [`arc_eval`]: the ARC voting evaluator (reference `evaluators/arc.py`) and an
//!   exact-accuracy evaluator for other tasks.
//! * [`canvas`]: an RGB8 raster with a 3x5 pixel font and PNG encoding (pictures, plots).
//! * [`npy`]: a minimal `.npy` reader / writer.
//! * [`loader`]: reading a built dataset: memory-mapped sets, the seeded training sampler,
//!   evaluation batches and a prefetching thread.
//! * [`progress`]: progress of builds and generators, to a sink the program installs.
//! * [`verify`]: checks against the reference fixtures (`recursa verify-reference`).
//!
//! This crate does not depend on burn. See `docs/data.md` for the on-disk format.

pub mod arc;
pub mod arc_eval;
pub mod atomic;
pub mod augment;
pub mod canvas;
pub mod error;
pub mod fault;
pub mod format;
pub mod grid;
mod json;
pub mod loader;
pub mod npy;
pub mod progress;
pub mod verify;

pub use arc::{build_arc, ArcBuildOptions, ArcBuildSummary};
pub use arc_eval::{ArcEvalBatch, ArcEvalOptions, ArcEvalResult, ArcEvaluator, ExactAccuracy};
pub use error::DataError;
pub use format::{DatasetMetadata, SplitSummary};
pub use loader::{
    local_range, test_batches, GlobalBatch, GroupSampler, HostBatch, Prefetch, PuzzleArrays,
    PuzzleSet, PuzzleSplit, SamplerState, TestBatches, TokenArray, TrainBatch, TrainBatches,
    IGNORE_LABEL_ID,
};
pub use verify::{verify_arc_dataset, verify_arc_eval, Check};
pub mod render;
pub use render::{
    render_arc, render_dir, render_html, render_task_png, ArcSource, Candidate, RenderOptions,
    RenderSummary, TaskRender, TaskSelection,
};

// Single-example puzzle datasets (docs/data-puzzles.md).
pub mod csv_puzzles;
pub mod maze;
pub mod nqueens;
pub mod sudoku;
pub use csv_puzzles::{parse_puzzle_csv, read_puzzle_csv, BuildSummary, PuzzleKind, PuzzleRecord};
pub use maze::{build_maze, generate_maze_csv, MazeBuildOptions, MazeGenerateOptions};
pub use nqueens::{build_nqueens, NQueensBuildOptions};
pub use sudoku::{
    build_sudoku, generate_sudoku_csv, GenerateSummary, SudokuBuildOptions, SudokuGenerateOptions,
};
