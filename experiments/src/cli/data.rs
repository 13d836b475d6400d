//! `recursa data ...`: dataset builders and generators, each an `Args` struct turned
//! into the builder's options.

use std::path::PathBuf;

use clap::Subcommand;
use recursa_core::{Error, Result};
use recursa_data::{
    ArcBuildOptions, MazeBuildOptions, MazeGenerateOptions, NQueensBuildOptions,
    SudokuBuildOptions, SudokuGenerateOptions,
};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Build an ARC dataset (reference build_arc_dataset.py semantics), seeded and deterministic.
    #[command(
        after_help = "Example (the TRM paper's ARC-AGI-1 set, about 7 GB):\n  recursa data arc --subsets training,evaluation,concept --test-set evaluation --num-aug 1000 --out data/arc1-aug-1000\nA small one:\n  recursa data arc --subsets evaluation --test-set evaluation --num-aug 8 --out data/arc-eval-aug8"
    )]
    Arc(ArcArgs),
    /// Build a Sudoku dataset from a CSV (source,question,answer,rating), reference semantics.
    Sudoku(SudokuArgs),
    /// Build a Maze dataset from a CSV (`# SGo` alphabet), reference semantics.
    Maze(MazeArgs),
    /// Build an N-Queens dataset (the DIS repository's builder).
    Nqueens(NqueensArgs),
    /// Generate Sudoku puzzles with a unique solution as a CSV (a stand-in for Sudoku-Extreme).
    GenerateSudoku(GenerateSudokuArgs),
    /// Generate mazes with a marked shortest path as a CSV (a stand-in for Maze-Hard).
    GenerateMaze(GenerateMazeArgs),
}

#[derive(clap::Args)]
pub struct ArcArgs {
    /// Subsets to read, comma-separated: training, evaluation, training2, evaluation2, concept.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "training,evaluation,concept"
    )]
    pub subsets: Vec<String>,
    /// The subset whose test pairs form the test split ("" for none).
    #[arg(long, default_value = "evaluation")]
    pub test_set: String,
    /// Augmentations per task (dihedral transform + colour permutation).
    #[arg(long, default_value_t = 1000)]
    pub num_aug: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory (must not exist; written whole or not at all).
    #[arg(long)]
    pub out: PathBuf,
    /// Raw JSON prefix: subset S is read from PREFIX_S_challenges.json and PREFIX_S_solutions.json.
    #[arg(long, default_value = "data/raw/arc/arc-agi")]
    pub input_prefix: PathBuf,
    /// Worker threads (default: all cores); the output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only the first N tasks of each subset (small sets for quick runs).
    #[arg(long)]
    pub max_tasks: Option<usize>,
}

#[derive(clap::Args)]
pub struct SudokuArgs {
    /// Training puzzles: a CSV with the header source,question,answer,rating.
    #[arg(long)]
    pub csv: PathBuf,
    /// Test puzzles in the same schema (default: no test split).
    #[arg(long)]
    pub test_csv: Option<PathBuf>,
    /// Output directory (must not exist; written whole or not at all).
    #[arg(long)]
    pub out: PathBuf,
    /// Keep this many training puzzles (seeded subsample).
    #[arg(long)]
    pub subsample: Option<usize>,
    /// Keep only puzzles whose rating is at least this.
    #[arg(long)]
    pub min_difficulty: Option<i64>,
    /// Augmentations per puzzle (digit permutation, transpose, band/stack/row/column permutations).
    #[arg(long, default_value_t = 0)]
    pub num_aug: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(clap::Args)]
pub struct MazeArgs {
    /// Training puzzles: a CSV with the header source,question,answer,rating.
    #[arg(long)]
    pub csv: PathBuf,
    /// Test puzzles in the same schema (default: no test split).
    #[arg(long)]
    pub test_csv: Option<PathBuf>,
    /// Output directory (must not exist; written whole or not at all).
    #[arg(long)]
    pub out: PathBuf,
    /// Keep this many training mazes (seeded subsample).
    #[arg(long)]
    pub subsample: Option<usize>,
    /// Add the 8 dihedral transforms of each maze.
    #[arg(long)]
    pub aug: bool,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(clap::Args)]
pub struct NqueensArgs {
    /// Board side.
    #[arg(long = "size", default_value_t = 8)]
    pub board_size: usize,
    /// Training puzzles.
    #[arg(long, default_value_t = 800)]
    pub num_train: usize,
    /// Test puzzles.
    #[arg(long, default_value_t = 200)]
    pub num_test: usize,
    /// Augmentations per training puzzle.
    #[arg(long, default_value_t = 8)]
    pub num_aug: usize,
    /// Queens given in each puzzle (default: as the builder chooses).
    #[arg(long)]
    pub num_given: Option<usize>,
    /// Keep puzzles with several completions (the DIS source's behaviour).
    #[arg(long)]
    pub no_unique: bool,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory (must not exist; written whole or not at all).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct GenerateSudokuArgs {
    /// 4, 6 or 9.
    #[arg(long, default_value_t = 9)]
    pub size: usize,
    /// Puzzles to write.
    #[arg(long)]
    pub count: usize,
    /// Keep puzzles whose backtracking guess count is at least this.
    #[arg(long, default_value_t = 0)]
    pub min_rating: u64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory (must not exist; written whole or not at all).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct GenerateMazeArgs {
    /// Side of the square maze (cells, walls included).
    #[arg(long, default_value_t = 30)]
    pub size: usize,
    /// Mazes to write.
    #[arg(long)]
    pub count: usize,
    /// Keep mazes whose shortest path is longer than this (Maze-Hard: 110).
    #[arg(long, default_value_t = 110)]
    pub min_path_len: usize,
    /// Percentage of extra walls opened to make loops.
    #[arg(long, default_value_t = 5)]
    pub loop_percent: u32,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output CSV (source,question,answer,rating).
    #[arg(long)]
    pub out: PathBuf,
}

impl From<ArcArgs> for ArcBuildOptions {
    fn from(a: ArcArgs) -> ArcBuildOptions {
        let mut o = ArcBuildOptions::new(a.input_prefix, a.out);
        o.subsets = a.subsets;
        o.test_set = (!a.test_set.is_empty()).then_some(a.test_set);
        (o.num_aug, o.seed, o.threads, o.max_tasks) = (a.num_aug, a.seed, a.threads, a.max_tasks);
        o
    }
}

impl From<SudokuArgs> for SudokuBuildOptions {
    fn from(a: SudokuArgs) -> SudokuBuildOptions {
        let mut o = SudokuBuildOptions::new(a.csv, a.test_csv, a.out);
        (o.subsample_size, o.min_difficulty, o.num_aug, o.seed) =
            (a.subsample, a.min_difficulty, a.num_aug, a.seed);
        o
    }
}

impl From<MazeArgs> for MazeBuildOptions {
    fn from(a: MazeArgs) -> MazeBuildOptions {
        let mut o = MazeBuildOptions::new(a.csv, a.test_csv, a.out);
        (o.subsample_size, o.aug, o.seed) = (a.subsample, a.aug, a.seed);
        o
    }
}

impl From<NqueensArgs> for NQueensBuildOptions {
    fn from(a: NqueensArgs) -> NQueensBuildOptions {
        let mut o = NQueensBuildOptions::new(a.out);
        (o.board_size, o.num_train, o.num_test, o.num_aug, o.seed) =
            (a.board_size, a.num_train, a.num_test, a.num_aug, a.seed);
        (o.num_given, o.unique) = (a.num_given, !a.no_unique);
        o
    }
}

impl From<GenerateSudokuArgs> for SudokuGenerateOptions {
    fn from(a: GenerateSudokuArgs) -> SudokuGenerateOptions {
        SudokuGenerateOptions {
            size: a.size,
            count: a.count,
            min_rating: a.min_rating,
            seed: a.seed,
            out: a.out,
        }
    }
}

impl From<GenerateMazeArgs> for MazeGenerateOptions {
    fn from(a: GenerateMazeArgs) -> MazeGenerateOptions {
        let mut o = MazeGenerateOptions::new(a.count, a.out);
        (o.size, o.min_path_len, o.loop_percent, o.seed) =
            (a.size, a.min_path_len, a.loop_percent, a.seed);
        o
    }
}

/// Builds (or generates) and prints the summary as JSON.
pub fn run(command: DataCommand) -> Result<bool> {
    crate::progress::install_data_progress();
    let err = Error::from_data;
    let summary = match command {
        DataCommand::Arc(a) => to_json(recursa_data::build_arc(&a.into()).map_err(err)?),
        DataCommand::Sudoku(a) => to_json(recursa_data::build_sudoku(&a.into()).map_err(err)?),
        DataCommand::Maze(a) => to_json(recursa_data::build_maze(&a.into()).map_err(err)?),
        DataCommand::Nqueens(a) => to_json(recursa_data::build_nqueens(&a.into()).map_err(err)?),
        DataCommand::GenerateSudoku(a) => {
            to_json(recursa_data::generate_sudoku_csv(&a.into()).map_err(err)?)
        }
        DataCommand::GenerateMaze(a) => {
            to_json(recursa_data::generate_maze_csv(&a.into()).map_err(err)?)
        }
    };
    println!("{summary}");
    Ok(true)
}

fn to_json(summary: impl serde::Serialize) -> String {
    serde_json::to_string_pretty(&summary).expect("plain data serialises")
}
