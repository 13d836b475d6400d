//! Properties of the Sudoku / Maze / N-Queens generators, augmentations and builders.

use recursa_data::augment::DetRng;
use recursa_data::maze::{generate_maze, GeneratedMaze, GOAL, PATH, START, WALL};
use recursa_data::npy::read_npy;
use recursa_data::nqueens::{
    count_completions, generate_nqueens, is_valid_solution as queens_valid, NQueensBuildOptions,
};
use recursa_data::sudoku::{
    count_solutions, generate_sudoku, is_valid_solution, SudokuAugmentation, SudokuShape,
};
use recursa_data::*;
use std::collections::VecDeque;
use std::path::Path;

const SIZES: [usize; 3] = [4, 6, 9];

#[test]
fn generated_sudoku_are_unique_and_solved_by_their_answer() {
    for n in SIZES {
        let shape = SudokuShape::for_size(n).unwrap();
        let count = if n == 9 { 15 } else { 40 };
        for k in 0..count {
            let mut rng = DetRng::derive(1, "test-sudoku", &[&n.to_string(), &k.to_string()]);
            let p = generate_sudoku(&shape, &mut rng);
            assert!(is_valid_solution(&shape, &p.answer), "n={n} k={k}");
            assert_eq!(count_solutions(&shape, &p.question, 3), 1, "n={n} k={k}");
            for (q, a) in p.question.iter().zip(&p.answer) {
                assert!(*q == 0 || q == a);
            }
            // Minimal: removing any clue breaks uniqueness.
            for i in (0..shape.cells()).filter(|&i| p.question[i] != 0) {
                let mut q = p.question.clone();
                q[i] = 0;
                assert!(count_solutions(&shape, &q, 2) > 1, "n={n} k={k} cell {i}");
            }
        }
    }
}

#[test]
fn sudoku_augmentations_keep_solutions_valid_and_invert() {
    for n in SIZES {
        let shape = SudokuShape::for_size(n).unwrap();
        let mut rng = DetRng::derive(2, "test-aug", &[&n.to_string()]);
        for _ in 0..30 {
            let p = generate_sudoku(&shape, &mut rng);
            let aug = SudokuAugmentation::random(&shape, &mut rng);
            let (q, a) = (aug.apply(&p.question), aug.apply(&p.answer));
            assert!(is_valid_solution(&shape, &a));
            // The augmented puzzle still has exactly its augmented answer as solution.
            assert_eq!(count_solutions(&shape, &q, 2), 1);
            assert_eq!(
                q.iter().filter(|&&d| d == 0).count(),
                p.question.iter().filter(|&&d| d == 0).count()
            );
            assert_eq!(aug.invert(&q), p.question);
            assert_eq!(aug.invert(&a), p.answer);
            if n == 6 {
                assert!(!aug.transpose);
            }
        }
    }
}

/// An independent BFS (not the library's) from S: distances over non-wall cells.
fn reference_distance(maze: &[u8], n: usize) -> Option<usize> {
    let s = maze.iter().position(|&c| c == START)?;
    let mut dist = vec![usize::MAX; maze.len()];
    dist[s] = 0;
    let mut q = VecDeque::from([s]);
    while let Some(i) = q.pop_front() {
        let (r, c) = ((i / n) as i64, (i % n) as i64);
        for (dr, dc) in [(0, 1), (1, 0), (0, -1), (-1, 0)] {
            let (rr, cc) = (r + dr, c + dc);
            if rr < 0 || cc < 0 || rr >= n as i64 || cc >= n as i64 {
                continue;
            }
            let j = (rr * n as i64 + cc) as usize;
            if maze[j] != WALL && dist[j] == usize::MAX {
                dist[j] = dist[i] + 1;
                q.push_back(j);
            }
        }
    }
    let g = maze.iter().position(|&c| c == GOAL)?;
    (dist[g] != usize::MAX).then_some(dist[g])
}

/// Checks that the `o` cells with S and G form a walk S..G of length `path_len`, on open
/// cells only, equal to the shortest distance.
fn check_maze(m: &GeneratedMaze, n: usize, min_len: usize) {
    let q = &m.question;
    assert_eq!(q.iter().filter(|&&c| c == START).count(), 1);
    assert_eq!(q.iter().filter(|&&c| c == GOAL).count(), 1);
    assert!(q.iter().all(|c| b"# SG".contains(c)));
    let best = reference_distance(q, n).expect("G reachable");
    assert_eq!(best, m.path_len);
    assert!(best > min_len);
    // The answer differs from the question only by 'o' on open cells.
    for (a, b) in q.iter().zip(&m.answer) {
        assert!(a == b || (*a == b' ' && *b == PATH));
    }
    let on_path = |i: usize| matches!(m.answer[i], PATH | START | GOAL);
    let marked = m.answer.iter().filter(|&&c| c == PATH).count();
    assert_eq!(marked + 1, best, "o cells = moves - 1");
    // Walk from S along marked cells: each step has exactly one unvisited marked neighbour.
    let mut cur = q.iter().position(|&c| c == START).unwrap();
    let mut visited = vec![false; q.len()];
    visited[cur] = true;
    for _ in 0..best {
        let (r, c) = (cur / n, cur % n);
        let next: Vec<usize> = [
            (r > 0).then(|| cur - n),
            (r + 1 < n).then(|| cur + n),
            (c > 0).then(|| cur - 1),
            (c + 1 < n).then(|| cur + 1),
        ]
        .into_iter()
        .flatten()
        .filter(|&j| on_path(j) && !visited[j])
        .collect();
        assert_eq!(next.len(), 1, "path is a simple chain");
        cur = next[0];
        visited[cur] = true;
    }
    assert_eq!(m.answer[cur], GOAL);
}

#[test]
fn generated_mazes_mark_a_shortest_path() {
    for (n, min_len, loops) in [(30, 110, 5), (11, 10, 0), (12, 8, 20), (7, 4, 50)] {
        let mut made = 0;
        for k in 0..60 {
            let mut rng = DetRng::derive(3, "test-maze", &[&n.to_string(), &k.to_string()]);
            if let Some(m) = generate_maze(n, min_len, loops, &mut rng) {
                check_maze(&m, n, min_len);
                made += 1;
            }
        }
        assert!(made > 10, "n={n}: only {made} of 60 attempts succeeded");
    }
}

#[test]
fn generated_nqueens_have_unique_completion() {
    for n in [4, 5, 8, 10] {
        for k in 0..50 {
            let mut rng = DetRng::derive(4, "test-queens", &[&n.to_string(), &k.to_string()]);
            let p = generate_nqueens(n, None, true, &mut rng);
            assert!(queens_valid(n, &p.label));
            assert_eq!(count_completions(n, &p.input, 2), 1);
            for (i, l) in p.input.iter().zip(&p.label) {
                assert!(i.is_none() || i == l);
            }
        }
    }
}

fn read_u8_rows(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let a = read_npy(path).unwrap();
    (a.shape.clone(), a.bytes)
}

fn read_i64(path: &Path) -> Vec<i64> {
    read_npy(path).unwrap().to_i64().unwrap()
}

#[test]
fn sudoku_generate_build_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |seed, name: &str| {
        let out = dir.path().join(name);
        let s = generate_sudoku_csv(&SudokuGenerateOptions {
            size: 9,
            count: 12,
            min_rating: 0,
            seed,
            out: out.clone(),
        })
        .unwrap();
        assert_eq!(s.count, 12);
        out
    };
    let (train, test) = (gen(1, "train.csv"), gen(2, "test.csv"));
    let mut opts = SudokuBuildOptions::new(&train, Some(test.clone()), dir.path().join("ds"));
    opts.num_aug = 3;
    opts.subsample_size = Some(10);
    let s = build_sudoku(&opts).unwrap();
    assert_eq!((s.train.groups, s.train.puzzles), (10, 40));
    assert_eq!((s.test.groups, s.test.puzzles), (12, 12));
    assert_eq!((s.seq_len, s.vocab_size), (81, 11));
    let ds = dir.path().join("ds");
    let (shape, inputs) = read_u8_rows(&ds.join("train/all__inputs.npy"));
    assert_eq!(shape, vec![40, 81]);
    assert!(inputs.iter().all(|&t| (1..=10).contains(&t)));
    let (_, labels) = read_u8_rows(&ds.join("train/all__labels.npy"));
    let sh = SudokuShape::for_size(9).unwrap();
    for row in labels.chunks(81) {
        let cells: Vec<u8> = row.iter().map(|t| t - 1).collect();
        assert!(is_valid_solution(&sh, &cells));
    }
    assert_eq!(
        read_i64(&ds.join("train/all__group_indices.npy")),
        vec![0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    );
    assert_eq!(
        read_i64(&ds.join("train/all__puzzle_indices.npy")).len(),
        41
    );
    assert_eq!(
        read_i64(&ds.join("test/all__puzzle_identifiers.npy")),
        vec![0; 12]
    );
    let meta = std::fs::read_to_string(ds.join("train/dataset.json")).unwrap();
    assert_eq!(
        meta,
        "{\"pad_id\": 0, \"ignore_label_id\": 0, \"blank_identifier_id\": 0, \"vocab_size\": 11, \
         \"seq_len\": 81, \"num_puzzle_identifiers\": 1, \"total_groups\": 10, \
         \"mean_puzzle_examples\": 1.0, \"total_puzzles\": 10, \"sets\": [\"all\"]}"
    );
    assert_eq!(
        std::fs::read_to_string(ds.join("identifiers.json")).unwrap(),
        "[\"<blank>\"]"
    );

    // Deterministic: a second build is byte-identical.
    let mut again = opts.clone();
    again.out = dir.path().join("ds2");
    build_sudoku(&again).unwrap();
    for f in [
        "train/all__inputs.npy",
        "train/all__labels.npy",
        "test/all__inputs.npy",
    ] {
        assert_eq!(
            std::fs::read(ds.join(f)).unwrap(),
            std::fs::read(dir.path().join("ds2").join(f)).unwrap()
        );
    }
    // Refuses an existing output and leaves it alone.
    assert!(matches!(
        build_sudoku(&opts),
        Err(DataError::OutputExists { .. })
    ));
    assert!(matches!(
        generate_sudoku_csv(&SudokuGenerateOptions {
            size: 4,
            count: 1,
            min_rating: 0,
            seed: 0,
            out: train
        }),
        Err(DataError::OutputExists { .. })
    ));
}

#[test]
fn small_sudoku_sizes_build() {
    let dir = tempfile::tempdir().unwrap();
    for n in [4usize, 6] {
        let csv = dir.path().join(format!("s{n}.csv"));
        generate_sudoku_csv(&SudokuGenerateOptions {
            size: n,
            count: 30,
            min_rating: 0,
            seed: 9,
            out: csv.clone(),
        })
        .unwrap();
        let mut o = SudokuBuildOptions::new(&csv, None, dir.path().join(format!("d{n}")));
        o.num_aug = 2;
        let s = build_sudoku(&o).unwrap();
        assert_eq!(
            (s.seq_len, s.vocab_size, s.train.puzzles),
            (n * n, n + 2, 90)
        );
        assert!(!dir.path().join(format!("d{n}/test")).exists());
    }
}

#[test]
fn maze_generate_build_with_dihedral_aug() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("maze.csv");
    let mut g = MazeGenerateOptions::new(6, &csv);
    g.size = 15;
    g.min_path_len = 30;
    let s = generate_maze_csv(&g).unwrap();
    assert_eq!(s.count, 6);
    assert!(s.mean_rating > 30.0);
    let recs = read_puzzle_csv(&csv, PuzzleKind::Maze).unwrap();
    for r in &recs {
        assert_eq!(
            reference_distance(r.question.as_bytes(), 15),
            Some(r.rating as usize)
        );
    }
    let mut o = MazeBuildOptions::new(&csv, Some(csv.clone()), dir.path().join("ds"));
    o.aug = true;
    let b = build_maze(&o).unwrap();
    assert_eq!(
        (b.train.groups, b.train.puzzles, b.test.puzzles),
        (6, 48, 6)
    );
    assert_eq!((b.seq_len, b.vocab_size, b.test_in_train), (225, 6, 6));
    let (shape, inputs) = read_u8_rows(&dir.path().join("ds/train/all__inputs.npy"));
    assert_eq!(shape, vec![48, 225]);
    // Token mapping: '#' 1, ' ' 2, 'S' 3, 'G' 4 (row 0 is the untransformed first maze).
    let expect: Vec<u8> = recs[0]
        .question
        .bytes()
        .map(|c| b"# SGo".iter().position(|&x| x == c).unwrap() as u8 + 1)
        .collect();
    assert_eq!(&inputs[..225], &expect[..]);
    // Every augmented label still has one S, one G, and path cells.
    let (_, labels) = read_u8_rows(&dir.path().join("ds/train/all__labels.npy"));
    for row in labels.chunks(225) {
        assert_eq!(row.iter().filter(|&&t| t == 3).count(), 1);
        assert!(row.contains(&5));
    }
}

#[test]
fn nqueens_build_matches_source_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = NQueensBuildOptions::new(dir.path().join("q"));
    o.num_train = 50;
    o.num_test = 20;
    let s = build_nqueens(&o).unwrap();
    assert_eq!(
        (s.train.groups, s.train.puzzles, s.test.puzzles),
        (50, 450, 20)
    );
    assert_eq!((s.seq_len, s.vocab_size), (64, 3));
    let (_, inputs) = read_u8_rows(&dir.path().join("q/train/all__inputs.npy"));
    assert!(inputs.iter().all(|&t| t == 1 || t == 2));
    // 4x4 with every queen given: the two solutions are mirror images, so no test puzzle can
    // avoid the train inputs: a clear error, nothing written.
    let mut small = NQueensBuildOptions::new(dir.path().join("q4"));
    small.board_size = 4;
    small.num_given = Some(4);
    small.num_train = 5;
    small.num_test = 5;
    assert!(build_nqueens(&small).is_err());
    assert!(!dir.path().join("q4").exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary left"
    );
}
