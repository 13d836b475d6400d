//! The `recursa` command line: one module per subcommand, each a `clap::Args` struct
//! (turned into the library's options where it has them) and a `run`.

pub mod bench;
pub mod data;
pub mod eval;
pub mod finetune;
pub mod import_torch;
pub mod inspect;
pub mod launch;
pub mod listing;
pub mod plot;
pub mod render;
pub mod train;
pub mod verify_reference;

use clap::{Parser, Subcommand};
use recursa_core::Result;

#[derive(Parser)]
#[command(
    name = "recursa",
    version,
    about = "Looped reasoning models (TRM, HRM, DIS) on burn",
    after_help = "Quick start (CPU, about 3 minutes; held-out accuracy climbs from 0 to >95%):\n  recursa train --config experiments/configs/quick-flip.toml\n  recursa plot runs/quick-flip\n\nCompare TRM and DIS at the same number of forward passes:\n  recursa train --config experiments/configs/quick-trm.toml\n  recursa train --config experiments/configs/quick-dis.toml\n  recursa plot runs/quick-trm runs/quick-dis --x forward-passes\n\nA paper run (build its data once, then train on a GPU build, --features cuda):\n  recursa data arc --subsets training,evaluation,concept --test-set evaluation --num-aug 1000 --out data/arc1concept-aug-1000\n  recursa train --config experiments/configs/dis-compact.toml --backend cuda\n  recursa eval runs/dis-compact --backend cuda\n\nCheck this build against the reference PyTorch code:\n  recursa verify-reference tests/fixtures/*.safetensors\n\nExit status: 0 success, 1 a check failed (verify-reference), 2 usage error, 3 invalid input (experiment file, dataset, checkpoint, weights), 4 I/O failure (missing file, permissions, full disk), 5 backend unavailable, 6 the run failed (non-finite loss, a rank stopped).\n\nMore: recursa COMMAND --help, recursa plugins, recursa backends, README.md and docs/."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a reference fixture (kind read from its metadata) and compare every output.
    ///
    /// Prints one JSON line per compared tensor (max absolute / relative error,
    /// tolerance, verdict) and a final verdict line. Exits 0 only if all pass.
    #[command(
        after_help = "Example:\n  recursa verify-reference tests/fixtures/trm_forward_shared.safetensors --backend cpu"
    )]
    VerifyReference(verify_reference::VerifyReferenceArgs),
    /// Train an experiment file; metrics go to RUN/metrics.jsonl, checkpoints to RUN/checkpoints, curves to RUN/curves.png.
    #[command(
        after_help = "Examples:\n  recursa train --config experiments/configs/quick-flip.toml\n  recursa train --config experiments/configs/quick-flip.toml --set train.steps=50 --out runs/short\n  recursa train --config experiments/configs/quick-flip.toml --out runs/short --resume"
    )]
    Train(train::TrainArgs),
    /// Start the ranks of a run across processes on this machine and watch them (torchrun).
    ///
    /// Each rank is `recursa COMMAND --world W --rank R --local-rank I --coordinator
    /// HOST:PORT`, one device each; gradients are summed over every rank, and rank 0
    /// writes the run. When a rank fails, the others stop and launch names it.
    #[command(
        after_help = "Examples:\n  recursa launch --nproc 2 -- train --config experiments/configs/quick-flip.toml\n  recursa launch --nproc 4 -- train --config experiments/configs/trm-arc1.toml --backend cuda\n  recursa launch --nproc 8 --nnodes 2 --node-rank 0 --coordinator 10.0.0.1:29500 -- train --config experiments/configs/trm-arc1.toml --backend cuda\n\nMore: docs/distributed.md."
    )]
    Launch(launch::LaunchArgs),
    /// Draw the training curves of one or more runs into one PNG, and their numbers into a CSV.
    ///
    /// Panels: training loss (log scale), training exact accuracy, evaluation exact
    /// accuracy and evaluation token accuracy, one colour per run, named by its directory.
    /// `recursa train` draws RUN/curves.png by itself when it ends.
    #[command(
        after_help = "Examples:\n  recursa plot runs/quick-flip\n      writes runs/quick-flip/curves.png and runs/quick-flip/curves.csv, x = optimizer step\n  recursa plot runs/trm runs/dis --x forward-passes --out plots/trm-vs-dis.png\n      compares two runs by network calls spent (fair across schedules and batch sizes)\n  recursa plot runs/a --x examples --linear-loss\n\nThe CSV next to the PNG has one row per point: run,panel,step,<x>,value."
    )]
    Plot(plot::PlotArgs),
    /// Evaluate a run's checkpoint on its test split (ARC builds: voting, pass@K, submission.json).
    ///
    /// Rolls every test example out for the halting policy's maximum steps with the
    /// EMA weights when the run keeps them. Writes metrics.json, and for ARC
    /// datasets submission.json and eval_result.json (the vote tables), into
    /// RUN/eval/step-N.
    #[command(
        after_help = "Examples:\n  recursa eval runs/quick-flip\n  recursa eval runs/trm-arc1 --backend cuda --batch 768\n  recursa eval runs/trm-arc1 --checkpoint runs/trm-arc1/checkpoints/step-100000 --reference-quirks\n  recursa render --subset evaluation --eval-result runs/trm-arc1/eval/step-100000/eval_result.json --out renders/"
    )]
    Eval(eval::EvalArgs),
    /// Fine-tune a checkpoint on test tasks' demonstration pairs, then score those tasks by voting.
    ///
    /// Keeps the chosen tasks' puzzles of an ARC build (demonstrations from the train
    /// split, test inputs from the test split), trains every parameter from the
    /// checkpoint's weights with a fresh optimizer, and prints pass@K before and
    /// after. The fine-tuned run goes to RUN/finetune/step-N with finetune.json.
    #[command(after_help = "Examples:
  recursa finetune runs/quick-arc --tasks 00576224,009d5c81 --steps 200
  recursa finetune runs/trm-arc1 --steps 2000 --lr 1e-4 --backend cuda")]
    Finetune(finetune::FinetuneArgs),
    /// Measure training-step and evaluation throughput (examples/s, tokens/s, TFLOP/s, MFU).
    #[command(
        after_help = "Examples:\n  recursa bench --config experiments/configs/quick-flip.toml\n  recursa bench --config experiments/configs/trm-arc1.toml --backend cuda --batch 768 --peak-tflops 989"
    )]
    Bench(bench::BenchArgs),
    /// Convert an official PyTorch TRM checkpoint (torch.save state dict) to safetensors for an experiment.
    #[command(
        after_help = "Example:\n  recursa import-torch --checkpoint step_518071 --config experiments/configs/trm-arc1.toml --out trm-arc1.safetensors\n  recursa train --config experiments/configs/trm-arc1.toml --set train.init_from=\"trm-arc1.safetensors\""
    )]
    ImportTorch(import_torch::ImportTorchArgs),
    /// Draw ARC tasks (and predictions with their vote tables) as PNG files and one HTML page.
    #[command(
        after_help = "Example:\n  recursa render --subset evaluation --tasks 00576224,31d5ba1a --out renders/\n  recursa render --subset evaluation --first 20 --submission submission.json --out renders/"
    )]
    Render(render::RenderArgs),
    /// Build datasets in the reference on-disk format.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// List the registered plugins on each axis with their docs and fields.
    Plugins,
    /// List the backends, whether this binary has them, and whether their device answers.
    Backends,
    /// Print an experiment's resolved configuration, parameter count and network calls.
    #[command(after_help = "Example:\n  recursa inspect experiments/configs/trm-arc1.toml")]
    Inspect(inspect::InspectArgs),
}

/// Runs one subcommand: `Ok(false)` when a check it ran failed (verify-reference).
pub fn run(command: Command) -> Result<bool> {
    match command {
        Command::VerifyReference(a) => verify_reference::run(a),
        Command::Train(a) => train::run(a),
        Command::Launch(a) => launch::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Bench(a) => bench::run(a),
        Command::ImportTorch(a) => import_torch::run(a),
        Command::Render(a) => render::run(a),
        Command::Data(c) => data::run(c),
        Command::Plugins => {
            listing::plugins();
            Ok(true)
        }
        Command::Backends => {
            listing::backends();
            Ok(true)
        }
        Command::Inspect(a) => inspect::run(a),
    }
}
