//! Timings for docs/data-puzzles.md (ignored by default):
//! `CARGO_TARGET_DIR=target/data2 cargo test -p recursa-data --release --test puzzles_measure -- --ignored --nocapture`
//! Output goes to `$PUZZLES_MEASURE_DIR` (default: a temporary directory).

use recursa_data::*;
use std::path::PathBuf;
use std::time::Instant;

fn size_of(p: &std::path::Path) -> u64 {
    if p.is_file() {
        return p.metadata().unwrap().len();
    }
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| size_of(&e.unwrap().path()))
        .sum()
}

#[test]
#[ignore]
fn measure_generators_and_builders() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("PUZZLES_MEASURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let p = |n: &str| root.join(n);
    for (size, count) in [(4, 1000), (6, 1000), (9, 1000)] {
        let s = generate_sudoku_csv(&SudokuGenerateOptions {
            size,
            count,
            min_rating: 0,
            seed: 1,
            out: p(&format!("sudoku{size}.csv")),
        })
        .unwrap();
        println!(
            "generate-sudoku size {size}: {} puzzles, {} attempts, mean guesses {:.2}, {:.2} s, {} bytes",
            s.count, s.attempts, s.mean_rating, s.elapsed.as_secs_f64(), size_of(&s.out)
        );
    }
    let s = generate_sudoku_csv(&SudokuGenerateOptions {
        size: 9,
        count: 200,
        min_rating: 0,
        seed: 2,
        out: p("sudoku9-test.csv"),
    })
    .unwrap();
    println!(
        "generate-sudoku size 9 (test): {} in {:.2} s",
        s.count,
        s.elapsed.as_secs_f64()
    );
    for (name, seed, count) in [("maze30.csv", 1, 1000), ("maze30-test.csv", 2, 200)] {
        let s = generate_maze_csv(&MazeGenerateOptions {
            seed,
            ..MazeGenerateOptions::new(count, p(name))
        })
        .unwrap();
        println!(
            "generate-maze 30 (>110): {} mazes, {} attempts, mean path {:.1}, {:.2} s, {} bytes",
            s.count,
            s.attempts,
            s.mean_rating,
            s.elapsed.as_secs_f64(),
            size_of(&s.out)
        );
    }
    let t = Instant::now();
    let mut o = SudokuBuildOptions::new(
        p("sudoku9.csv"),
        Some(p("sudoku9-test.csv")),
        p("sudoku-ds"),
    );
    o.num_aug = 1000;
    let b = build_sudoku(&o).unwrap();
    println!(
        "build sudoku 1000 x (1 + 1000 aug): train {:?} test {:?}, {:.2} s, {} bytes",
        b.train,
        b.test,
        t.elapsed().as_secs_f64(),
        size_of(&b.out)
    );
    let t = Instant::now();
    let mut o = MazeBuildOptions::new(p("maze30.csv"), Some(p("maze30-test.csv")), p("maze-ds"));
    o.aug = true;
    let b = build_maze(&o).unwrap();
    println!(
        "build maze 1000 x 8 dihedral: train {:?} test {:?}, {:.2} s, {} bytes",
        b.train,
        b.test,
        t.elapsed().as_secs_f64(),
        size_of(&b.out)
    );
    let b = build_nqueens(&NQueensBuildOptions::new(p("nqueens-ds"))).unwrap();
    println!(
        "build nqueens 8x8 defaults: train {:?} test {:?}, {:.2} s, {} bytes",
        b.train,
        b.test,
        b.elapsed.as_secs_f64(),
        size_of(&b.out)
    );
}
