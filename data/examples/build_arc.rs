//! Builds an ARC dataset, like the future `recursa data arc` command.
//!
//! ```text
//! cargo run --release -p recursa-data --example build_arc -- \
//!     --subsets training,evaluation,concept --test-set evaluation \
//!     --num-aug 1000 --seed 42 --out data/arc-aug-1000
//! ```
//! Other flags: `--input-prefix` (default `data/raw/arc/arc-agi`), `--threads N`.

use recursa_data::{build_arc, ArcBuildOptions};

fn main() {
    let mut opts = ArcBuildOptions::new("data/raw/arc/arc-agi", "data/arc-aug-1000");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            eprintln!("{flag} needs a value");
            std::process::exit(2);
        };
        let num = |v: &str| -> u64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{flag}: not a number: {v}");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--subsets" => opts.subsets = value.split(',').map(str::to_string).collect(),
            "--test-set" => opts.test_set = (!value.is_empty()).then(|| value.clone()),
            "--num-aug" => opts.num_aug = num(value) as usize,
            "--seed" => opts.seed = num(value),
            "--out" => opts.out = value.into(),
            "--input-prefix" => opts.input_prefix = value.into(),
            "--threads" => opts.threads = Some(num(value) as usize),
            _ => {
                eprintln!("unknown flag {flag}");
                std::process::exit(2);
            }
        }
    }
    match build_arc(&opts) {
        Ok(summary) => println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
