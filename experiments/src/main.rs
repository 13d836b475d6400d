//! `recursa`: looped reasoning models (TRM, HRM, DIS) on burn, from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recursa::verify;
use recursa_core::error::exit_code;
use recursa_core::experiment::ExperimentConfig;
use recursa_core::registry::{self, Axis};

/// Keeps freed memory for reuse: the system allocator returns every large tensor
/// buffer to the OS, and the page faults of the next one cost a fifth of a CPU step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "recursa",
    version,
    about = "Looped reasoning models (TRM, HRM, DIS) on burn",
    after_help = "Quick start (CPU, about 3 minutes; held-out accuracy climbs from 0 to >95%):\n  recursa train --config experiments/configs/quick-flip.toml\n  recursa plot runs/quick-flip\n\nCompare TRM and DIS at the same number of forward passes:\n  recursa train --config experiments/configs/quick-trm.toml\n  recursa train --config experiments/configs/quick-dis.toml\n  recursa plot runs/quick-trm runs/quick-dis --x forward-passes\n\nA paper run (build its data once, then train on a GPU build, --features cuda):\n  recursa data arc --subsets training,evaluation,concept --test-set evaluation --num-aug 1000 --out data/arc1concept-aug-1000\n  recursa train --config experiments/configs/dis-compact.toml --backend cuda\n  recursa eval runs/dis-compact --backend cuda\n\nCheck this build against the reference PyTorch code:\n  recursa verify-reference tests/fixtures/*.safetensors\n\nExit status: 0 success, 1 a check failed (verify-reference), 2 usage error, 3 invalid input (experiment file, dataset, checkpoint, weights), 4 I/O failure (missing file, permissions, full disk), 5 backend unavailable, 6 the run failed (non-finite loss, a rank stopped).\n\nMore: recursa COMMAND --help, recursa plugins, recursa backends, README.md and docs/."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a reference fixture (kind read from its metadata) and compare every output.
    ///
    /// Prints one JSON line per compared tensor (max absolute / relative error,
    /// tolerance, verdict) and a final verdict line. Exits 0 only if all pass.
    #[command(
        after_help = "Example:\n  recursa verify-reference tests/fixtures/trm_forward_shared.safetensors --backend cpu"
    )]
    VerifyReference {
        /// Fixture files (`.safetensors` from the reference generator).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Device to run on: cpu, ndarray, cuda, cuda:N, wgpu, tch.
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// Train an experiment file; metrics go to RUN/metrics.jsonl, checkpoints to RUN/checkpoints, curves to RUN/curves.png.
    #[command(
        after_help = "Examples:\n  recursa train --config experiments/configs/quick-flip.toml\n  recursa train --config experiments/configs/quick-flip.toml --set train.steps=50 --out runs/short\n  recursa train --config experiments/configs/quick-flip.toml --out runs/short --resume"
    )]
    Train {
        /// Experiment file (TOML) with [net], [schedule], [target], [halting], [train] and [data].
        #[arg(long)]
        config: PathBuf,
        /// Device to train on: cpu, ndarray, cuda, cuda:N, wgpu, tch; several devices of one
        /// backend, comma-separated (cpu,cpu or cuda:0,cuda:1), train data-parallel.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Run directory (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a config value, e.g. --set train.steps=100 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue the run in --out (or runs/<config name>) from its latest checkpoint.
        #[arg(long)]
        resume: bool,
        /// Stop after this optimizer step with a checkpoint (continue later with --resume).
        #[arg(long)]
        until: Option<usize>,
        /// Check everything (config, overrides, data, backend, model; with --resume the
        /// run's config and checkpoint) and exit without writing or training.
        #[arg(long)]
        check: bool,
    },
    /// Draw the training curves of one or more runs into one PNG, and their numbers into a CSV.
    ///
    /// Panels: training loss (log scale), training exact accuracy, evaluation exact
    /// accuracy and evaluation token accuracy, one colour per run, named by its directory.
    /// `recursa train` draws RUN/curves.png by itself when it ends.
    #[command(
        after_help = "Examples:\n  recursa plot runs/quick-flip\n      writes runs/quick-flip/curves.png and runs/quick-flip/curves.csv, x = optimizer step\n  recursa plot runs/trm runs/dis --x forward-passes --out plots/trm-vs-dis.png\n      compares two runs by network calls spent (fair across schedules and batch sizes)\n  recursa plot runs/a --x examples --linear-loss\n\nThe CSV next to the PNG has one row per point: run,panel,step,<x>,value."
    )]
    Plot {
        /// Run directories written by `recursa train` (or their metrics.jsonl files).
        #[arg(required = true, value_name = "RUN")]
        runs: Vec<PathBuf>,
        /// The PNG to write; the CSV goes next to it [default: RUN/curves.png for one run,
        /// compare-A-B.png beside the first run for several].
        #[arg(long, value_name = "FILE.png")]
        out: Option<PathBuf>,
        /// X axis [default: step for one run, forward-passes for several].
        #[arg(long, value_enum)]
        x: Option<recursa::plot::XAxis>,
        /// Draw the training loss on a linear axis instead of a logarithmic one.
        #[arg(long)]
        linear_loss: bool,
    },
    /// Evaluate a run's checkpoint on its test split (ARC builds: voting, pass@K, submission.json).
    ///
    /// Rolls every test example out for the halting policy's maximum steps with the
    /// EMA weights when the run keeps them. Writes metrics.json, and for ARC
    /// datasets submission.json and eval_result.json (the vote tables), into
    /// RUN/eval/step-N.
    #[command(
        after_help = "Examples:\n  recursa eval runs/quick-flip\n  recursa eval runs/trm-arc1 --backend cuda --batch 768\n  recursa eval runs/trm-arc1 --checkpoint runs/trm-arc1/checkpoints/step-100000 --reference-quirks\n  recursa render --subset evaluation --eval-result runs/trm-arc1/eval/step-100000/eval_result.json --out renders/"
    )]
    Eval {
        /// The run directory (config.toml, checkpoints/).
        run: PathBuf,
        /// A checkpoint directory (default: the run's latest).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Evaluate on this dataset directory instead of the run's [data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Device: cpu, ndarray, cuda, cuda:N, wgpu, tch.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Rows per batch (default: the run's global batch size).
        #[arg(long)]
        batch: Option<usize>,
        /// ARC voting exactly as the reference, its two defects included (see docs/data.md).
        #[arg(long)]
        reference_quirks: bool,
        /// Output directory (default: RUN/eval/step-N).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure training-step and evaluation throughput (examples/s, tokens/s, TFLOP/s, MFU).
    #[command(
        after_help = "Examples:\n  recursa bench --config experiments/configs/quick-flip.toml\n  recursa bench --config experiments/configs/trm-arc1.toml --backend cuda --batch 768 --peak-tflops 989"
    )]
    Bench {
        /// Experiment file (TOML); its [train] section gives the batch size.
        #[arg(long)]
        config: PathBuf,
        /// Device: cpu, ndarray, cuda, cuda:N, wgpu, tch.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Timed training steps (after 2 warm-up steps).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Batch size (default: the experiment's train.global_batch_size).
        #[arg(long)]
        batch: Option<usize>,
        /// Peak TFLOP/s of the device, to report model-FLOPs utilisation.
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// Float type of every tensor (bf16 and f16 on GPU backends).
        #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
        dtype: String,
        /// Print only the result as one JSON object (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Convert an official PyTorch TRM checkpoint (torch.save state dict) to safetensors for an experiment.
    #[command(
        after_help = "Example:\n  recursa import-torch --checkpoint step_518071 --config experiments/configs/trm-arc1.toml --out trm-arc1.safetensors\n  recursa train --config experiments/configs/trm-arc1.toml --set train.init_from=\"trm-arc1.safetensors\""
    )]
    ImportTorch {
        /// The PyTorch checkpoint (keys `_orig_mod.model.inner.*`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The experiment whose network the weights are for.
        #[arg(long)]
        config: PathBuf,
        /// Output safetensors file (reference names).
        #[arg(long)]
        out: PathBuf,
    },
    /// Draw ARC tasks (and predictions with their vote tables) as PNG files and one HTML page.
    #[command(
        after_help = "Example:\n  recursa render --subset evaluation --tasks 00576224,31d5ba1a --out renders/\n  recursa render --subset evaluation --first 20 --submission submission.json --out renders/"
    )]
    Render {
        /// Raw ARC subset: training, evaluation, training2, evaluation2, concept.
        #[arg(long, default_value = "evaluation")]
        subset: String,
        /// Raw JSON prefix.
        #[arg(long, default_value = "data/raw/arc/arc-agi")]
        input_prefix: PathBuf,
        /// Task ids, comma-separated (default: the first 10).
        #[arg(long, value_delimiter = ',')]
        tasks: Vec<String>,
        /// The first N tasks instead of --tasks.
        #[arg(long)]
        first: Option<usize>,
        /// Predictions in the evaluator's submission.json format.
        #[arg(long)]
        submission: Option<PathBuf>,
        /// Vote tables from `recursa eval` (RUN/eval/step-N/eval_result.json) instead of --submission.
        #[arg(long, conflicts_with = "submission")]
        eval_result: Option<PathBuf>,
        /// Output directory (index.html and one PNG per task).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build datasets in the reference on-disk format.
    #[command(subcommand)]
    Data(DataCommand),
    /// List the registered plugins on each axis with their docs and fields.
    Plugins,
    /// List the backends, whether this binary has them, and whether their device answers.
    Backends,
    /// Print an experiment's resolved configuration, parameter count and network calls.
    #[command(after_help = "Example:\n  recursa inspect experiments/configs/trm-arc1.toml")]
    Inspect {
        /// Experiment file (TOML).
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Build an ARC dataset (reference build_arc_dataset.py semantics), seeded and deterministic.
    #[command(
        after_help = "Example (the TRM paper's ARC-AGI-1 set, about 7 GB):\n  recursa data arc --subsets training,evaluation,concept --test-set evaluation --num-aug 1000 --out data/arc1-aug-1000\nA small one:\n  recursa data arc --subsets evaluation --test-set evaluation --num-aug 8 --out data/arc-eval-aug8"
    )]
    Arc {
        /// Subsets to read, comma-separated: training, evaluation, training2, evaluation2, concept.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "training,evaluation,concept"
        )]
        subsets: Vec<String>,
        /// The subset whose test pairs form the test split ("" for none).
        #[arg(long, default_value = "evaluation")]
        test_set: String,
        /// Augmentations per task (dihedral transform + colour permutation).
        #[arg(long, default_value_t = 1000)]
        num_aug: usize,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (must not exist; written whole or not at all).
        #[arg(long)]
        out: PathBuf,
        /// Raw JSON prefix: subset S is read from PREFIX_S_challenges.json and PREFIX_S_solutions.json.
        #[arg(long, default_value = "data/raw/arc/arc-agi")]
        input_prefix: PathBuf,
        /// Worker threads (default: all cores); the output does not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Only the first N tasks of each subset (small sets for quick runs).
        #[arg(long)]
        max_tasks: Option<usize>,
    },
    /// Build a Sudoku dataset from a CSV (source,question,answer,rating), reference semantics.
    Sudoku {
        /// Training puzzles: a CSV with the header source,question,answer,rating.
        #[arg(long)]
        csv: PathBuf,
        /// Test puzzles in the same schema (default: no test split).
        #[arg(long)]
        test_csv: Option<PathBuf>,
        /// Output directory (must not exist; written whole or not at all).
        #[arg(long)]
        out: PathBuf,
        /// Keep this many training puzzles (seeded subsample).
        #[arg(long)]
        subsample: Option<usize>,
        /// Keep only puzzles whose rating is at least this.
        #[arg(long)]
        min_difficulty: Option<i64>,
        /// Augmentations per puzzle (digit permutation, transpose, band/stack/row/column permutations).
        #[arg(long, default_value_t = 0)]
        num_aug: usize,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Build a Maze dataset from a CSV (`# SGo` alphabet), reference semantics.
    Maze {
        /// Training puzzles: a CSV with the header source,question,answer,rating.
        #[arg(long)]
        csv: PathBuf,
        /// Test puzzles in the same schema (default: no test split).
        #[arg(long)]
        test_csv: Option<PathBuf>,
        /// Output directory (must not exist; written whole or not at all).
        #[arg(long)]
        out: PathBuf,
        /// Keep this many training mazes (seeded subsample).
        #[arg(long)]
        subsample: Option<usize>,
        /// Add the 8 dihedral transforms of each maze.
        #[arg(long)]
        aug: bool,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Build an N-Queens dataset (the DIS repository's builder).
    Nqueens {
        /// Board side.
        #[arg(long = "size", default_value_t = 8)]
        board_size: usize,
        /// Training puzzles.
        #[arg(long, default_value_t = 800)]
        num_train: usize,
        /// Test puzzles.
        #[arg(long, default_value_t = 200)]
        num_test: usize,
        /// Augmentations per training puzzle.
        #[arg(long, default_value_t = 8)]
        num_aug: usize,
        /// Queens given in each puzzle (default: as the builder chooses).
        #[arg(long)]
        num_given: Option<usize>,
        /// Keep puzzles with several completions (the DIS source's behaviour).
        #[arg(long)]
        no_unique: bool,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (must not exist; written whole or not at all).
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate Sudoku puzzles with a unique solution as a CSV (a stand-in for Sudoku-Extreme).
    GenerateSudoku {
        /// 4, 6 or 9.
        #[arg(long, default_value_t = 9)]
        size: usize,
        /// Puzzles to write.
        #[arg(long)]
        count: usize,
        /// Keep puzzles whose backtracking guess count is at least this.
        #[arg(long, default_value_t = 0)]
        min_rating: u64,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (must not exist; written whole or not at all).
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate mazes with a marked shortest path as a CSV (a stand-in for Maze-Hard).
    GenerateMaze {
        /// Side of the square maze (cells, walls included).
        #[arg(long, default_value_t = 30)]
        size: usize,
        /// Mazes to write.
        #[arg(long)]
        count: usize,
        /// Keep mazes whose shortest path is longer than this (Maze-Hard: 110).
        #[arg(long, default_value_t = 110)]
        min_path_len: usize,
        /// Percentage of extra walls opened to make loops.
        #[arg(long, default_value_t = 5)]
        loop_percent: u32,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output CSV (source,question,answer,rating).
        #[arg(long)]
        out: PathBuf,
    },
}

fn data_arc(cmd: DataCommand) -> recursa_core::Result<bool> {
    let err = recursa_core::Error::from_data;
    let show = |v: serde_json::Value| {
        println!("{}", serde_json::to_string_pretty(&v).expect("plain data"))
    };
    let cmd = match cmd {
        DataCommand::Sudoku {
            csv,
            test_csv,
            out,
            subsample,
            min_difficulty,
            num_aug,
            seed,
        } => {
            let mut o = recursa_data::SudokuBuildOptions::new(csv, test_csv, out);
            (o.subsample_size, o.min_difficulty, o.num_aug, o.seed) =
                (subsample, min_difficulty, num_aug, seed);
            show(
                serde_json::to_value(recursa_data::build_sudoku(&o).map_err(err)?)
                    .expect("plain data"),
            );
            return Ok(true);
        }
        DataCommand::Maze {
            csv,
            test_csv,
            out,
            subsample,
            aug,
            seed,
        } => {
            let mut o = recursa_data::MazeBuildOptions::new(csv, test_csv, out);
            (o.subsample_size, o.aug, o.seed) = (subsample, aug, seed);
            show(
                serde_json::to_value(recursa_data::build_maze(&o).map_err(err)?)
                    .expect("plain data"),
            );
            return Ok(true);
        }
        DataCommand::Nqueens {
            board_size,
            num_train,
            num_test,
            num_aug,
            num_given,
            no_unique,
            seed,
            out,
        } => {
            let mut o = recursa_data::NQueensBuildOptions::new(out);
            (o.board_size, o.num_train, o.num_test, o.num_aug, o.seed) =
                (board_size, num_train, num_test, num_aug, seed);
            (o.num_given, o.unique) = (num_given, !no_unique);
            show(
                serde_json::to_value(recursa_data::build_nqueens(&o).map_err(err)?)
                    .expect("plain data"),
            );
            return Ok(true);
        }
        DataCommand::GenerateSudoku {
            size,
            count,
            min_rating,
            seed,
            out,
        } => {
            let o = recursa_data::SudokuGenerateOptions {
                size,
                count,
                min_rating,
                seed,
                out,
            };
            show(
                serde_json::to_value(recursa_data::generate_sudoku_csv(&o).map_err(err)?)
                    .expect("plain data"),
            );
            return Ok(true);
        }
        DataCommand::GenerateMaze {
            size,
            count,
            min_path_len,
            loop_percent,
            seed,
            out,
        } => {
            let mut o = recursa_data::MazeGenerateOptions::new(count, out);
            (o.size, o.min_path_len, o.loop_percent, o.seed) =
                (size, min_path_len, loop_percent, seed);
            show(
                serde_json::to_value(recursa_data::generate_maze_csv(&o).map_err(err)?)
                    .expect("plain data"),
            );
            return Ok(true);
        }
        arc => arc,
    };
    let DataCommand::Arc {
        subsets,
        test_set,
        num_aug,
        seed,
        out,
        input_prefix,
        threads,
        max_tasks,
    } = cmd
    else {
        unreachable!("every other data command returned above");
    };
    let mut opts = recursa_data::ArcBuildOptions::new(input_prefix, out);
    opts.subsets = subsets;
    opts.test_set = (!test_set.is_empty()).then_some(test_set);
    opts.num_aug = num_aug;
    opts.seed = seed;
    opts.threads = threads;
    opts.max_tasks = max_tasks;
    let summary = recursa_data::build_arc(&opts).map_err(recursa_core::Error::from_data)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).expect("plain data serialises")
    );
    Ok(true)
}

fn import_torch(
    checkpoint: &std::path::Path,
    config: &std::path::Path,
    out: &std::path::Path,
) -> recursa_core::Result<bool> {
    let experiment = ExperimentConfig::load(config)?;
    let device = recursa_backends::device("cpu")?;
    let mut net = recursa_core::model::Net::new(&experiment.net, experiment.seed, &device)?;
    let report = recursa_core::weights::import_torch(&mut net, checkpoint)?;
    if let Some((found, expected)) = &report.puzzle_table_reset {
        eprintln!("puzzle embedding table {found:?} replaced by its mean row repeated to {expected:?} (as pretrain.py does)");
    }
    recursa_core::weights::save_net_file(&net, out, None)?;
    println!(
        "{}: {} tensors imported from {}",
        out.display(),
        report.tensors,
        checkpoint.display()
    );
    Ok(true)
}

fn main() -> ExitCode {
    // Die quietly when the reader of stdout goes away (`recursa ... | head`), as
    // command-line tools do, instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::VerifyReference { files, backend } => verify_reference(&files, &backend),
        Command::Train {
            config,
            backend,
            out,
            overrides,
            resume,
            until,
            check,
        } => {
            let prepared = recursa::train::prepare(&config, &backend, out, &overrides, resume);
            match (prepared, check) {
                (Err(e), _) => Err(e),
                (Ok(p), true) => {
                    println!(
                        "{}: ok ({} parameters; run directory {}, nothing written)",
                        config.display(),
                        recursa::thousands(p.trainer.model.net.num_trainable_params()),
                        p.run_dir.display()
                    );
                    Ok(true)
                }
                (Ok(p), false) => recursa::train::run(p, until).map(|r| {
                    if let Some(r) = r {
                        println!(
                            "final evaluation at step {}: exact accuracy {:.4} on {} held-out examples",
                            r.step, r.exact_accuracy, r.examples
                        );
                    }
                    true
                }),
            }
        }
        Command::Plot {
            runs,
            out,
            x,
            linear_loss,
        } => {
            let mut opts = recursa::plot::PlotOptions::new(runs);
            (opts.out, opts.x, opts.linear_loss) = (out, x, linear_loss);
            recursa::plot::plot(&opts).map(|s| {
                for w in &s.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: {} run(s) ({}), x = {}, {} points; numbers in {}",
                    s.png.display(),
                    s.runs.len(),
                    s.runs.join(", "),
                    s.x.csv_name(),
                    s.points,
                    s.csv.display()
                );
                true
            })
        }
        Command::Data(cmd) => {
            recursa::progress::install_data_progress();
            data_arc(cmd)
        }
        Command::Render { subset, input_prefix, tasks, first, submission, eval_result, out } => {
            use recursa_data::render::{render_arc, RenderOptions, TaskSelection};
            let mut opts = RenderOptions::subset(input_prefix, subset, out);
            opts.tasks = match (first, tasks.is_empty()) {
                (Some(n), _) => TaskSelection::First(n),
                (None, false) => TaskSelection::Ids(tasks),
                (None, true) => TaskSelection::First(10),
            };
            opts.submission = submission;
            opts.eval_result = eval_result;
            render_arc(&opts).map_err(recursa_core::Error::from_data).map(|summary| {
                for w in &summary.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: {} tasks, {} PNG files", summary.index.display(), summary.tasks.len(), summary.pngs.len());
                true
            })
        }
        Command::Eval { run, checkpoint, data, backend, batch, reference_quirks, out } => {
            let opts = recursa::eval::EvalOptions { run, checkpoint, data, backend, batch, reference_quirks, out };
            recursa::eval::eval(&opts).map(|r| {
                println!("{}", recursa::eval::summary(&r));
                true
            })
        }
        Command::ImportTorch { checkpoint, config, out } => import_torch(&checkpoint, &config, &out),
        Command::Bench { config, backend, steps, batch, peak_tflops, dtype, json } => {
            ExperimentConfig::load(&config).and_then(|e| recursa::bench::bench(&e, &backend, &dtype, steps, batch, peak_tflops)).map(|r| {
                if json {
                    println!("{}", serde_json::to_string(&r).expect("plain data"));
                    return true;
                }
                println!("model FLOPs assumed: {:.3e} per training step (forward of every call, plus 2x forward for the calls with gradient and the LM head), {:.3e} per evaluated example", r.train_flops_per_step, r.eval_flops_per_example);
                println!("train: {:.1} examples/s, {:.0} tokens/s, {:.3} TFLOP/s{}", r.train_examples_per_s, r.train_tokens_per_s, r.train_tflops,
                    r.mfu.map(|m| format!(", MFU {:.1}%", 100.0 * m)).unwrap_or_default());
                println!("eval:  {:.1} examples/s (rollouts of the halting policy's maximum steps)", r.eval_examples_per_s);
                if let Some(bytes) = r.peak_rss_bytes {
                    println!("peak memory (RSS): {:.2} GB", bytes as f64 / 1e9);
                }
                println!("{}", serde_json::to_string(&r).expect("plain data"));
                true
            })
        }
        Command::Plugins => {
            print_plugins();
            Ok(true)
        }
        Command::Backends => {
            print_backends();
            Ok(true)
        }
        Command::Inspect { config } => inspect(&config),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(exit_code::CHECK_FAILED),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn verify_reference(files: &[PathBuf], backend: &str) -> recursa_core::Result<bool> {
    let device = recursa_backends::device(backend)?;
    let mut all_ok = true;
    for file in files {
        let report = verify::verify_file(file, &device)?;
        for c in &report.comparisons {
            println!(
                "{}",
                serde_json::to_string(c).expect("plain data serialises")
            );
        }
        let failed = report.comparisons.iter().filter(|c| !c.ok).count();
        let verdict = if report.passed() { "pass" } else { "FAIL" };
        println!(
            "{}",
            serde_json::json!({
                "verdict": verdict,
                "file": report.file,
                "kind": report.kind,
                "backend": backend,
                "tensors": report.comparisons.len(),
                "failed": failed,
            })
        );
        eprintln!(
            "{verdict}: {} ({}, {backend}): {} tensors compared, {failed} outside tolerance",
            report.file,
            report.kind,
            report.comparisons.len()
        );
        all_ok &= report.passed();
    }
    Ok(all_ok)
}

fn print_plugins() {
    for axis in Axis::ALL {
        println!("[{}]", axis.key());
        for p in registry::plugins().into_iter().filter(|p| p.axis == axis) {
            println!("  {:<14} {}", p.name, p.doc);
            for f in p.fields {
                println!("  {:<14}   {} : {}", "", f.name, f.doc);
            }
        }
        println!();
    }
}

fn print_backends() {
    println!("{:<6} {:<10} {:<9} device", "name", "feature", "compiled");
    for b in recursa_backends::backends() {
        let device = if b.compiled {
            match recursa_backends::probe(b.name) {
                Ok(d) => format!("ok: {d}"),
                Err(e) => format!("unavailable: {e}"),
            }
        } else {
            "-".into()
        };
        println!(
            "{:<6} {:<10} {:<9} {}",
            b.name,
            b.feature,
            if b.compiled { "yes" } else { "no" },
            device
        );
        println!("       {}", b.doc);
    }
}

fn inspect(path: &std::path::Path) -> recursa_core::Result<bool> {
    let config = ExperimentConfig::load(path)?;
    let device = recursa_backends::device("cpu")?;
    let model = config.build(&device)?;
    let calls = model.schedule.calls_per_step();
    let max_steps = model.halting.max_steps();
    println!("experiment: {}", path.display());
    println!(
        "parameters: {}",
        recursa::thousands(model.net.num_trainable_params())
    );
    println!(
        "positions:  {} ({} puzzle prefix + {} tokens)",
        config.net.total_len(),
        config.net.prefix_len(),
        config.net.seq_len
    );
    println!(
        "schedule:   {} ({} network calls per step: {} with gradient, {} without)",
        model.schedule.name(),
        calls.total(),
        calls.with_grad,
        calls.without_grad
    );
    println!("target:     {}", model.target.name());
    println!(
        "halting:    {} (at most {max_steps} steps: {} network calls per example)",
        model.halting.name(),
        max_steps * calls.total()
    );
    println!(
        "\nresolved config:\n{}",
        toml::to_string_pretty(&config).map_err(|e| recursa_core::Error::Other(e.to_string()))?
    );
    Ok(true)
}
