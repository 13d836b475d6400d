//! The puzzle CSV reader: clear errors (file, row, field) and no panics on random bytes.

use recursa_data::augment::DetRng;
use recursa_data::csv_puzzles::{parse_puzzle_csv, write_puzzle_csv, PuzzleKind, PuzzleRecord};
use recursa_data::DataError;
use std::path::Path;

const SUDOKU_Q: &str =
    "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..";
const SUDOKU_A: &str =
    "483921657967345821251876493548132976729564138136798245372689514814253769695417382";

fn sudoku_csv(rows: &[String]) -> Vec<u8> {
    let mut s = String::from("source,question,answer,rating\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

fn err_text(bytes: &[u8], kind: PuzzleKind) -> String {
    match parse_puzzle_csv(bytes, Path::new("puzzles.csv"), kind) {
        Ok(r) => panic!("expected an error, got {} records", r.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_valid_sudoku() {
    let csv = sudoku_csv(&[format!("src,{SUDOKU_Q},{SUDOKU_A},12")]);
    let recs = parse_puzzle_csv(&csv, Path::new("x.csv"), PuzzleKind::Sudoku).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].row, 2);
    assert_eq!(recs[0].rating, 12);
    assert_eq!(recs[0].question, SUDOKU_Q);
}

#[test]
fn errors_name_file_row_and_field() {
    let good = format!("src,{SUDOKU_Q},{SUDOKU_A},1");
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![good.clone(), format!("src,{},{SUDOKU_A},1", &SUDOKU_Q[1..])],
            "row 3, question",
            "80 characters",
        ),
        (
            vec![format!("src,{SUDOKU_Q},{}x,1", &SUDOKU_A[..80])],
            "row 2, answer",
            "'x'",
        ),
        (
            vec![format!("src,{},{SUDOKU_A},1", SUDOKU_Q.replace('3', "a"))],
            "row 2, question",
            "'a'",
        ),
        (
            vec![good.clone(), format!("src,{SUDOKU_Q},{SUDOKU_A},hard")],
            "row 3, rating",
            "not an integer",
        ),
        (
            vec![format!("src,{SUDOKU_Q},{SUDOKU_A}")],
            "row 2, record",
            "3 field(s)",
        ),
        (
            // An answer that changes a given.
            vec![format!(
                "src,{SUDOKU_Q},{}4{},1",
                &SUDOKU_A[..2],
                &SUDOKU_A[3..]
            )],
            "row 2, answer",
            "question gives",
        ),
    ];
    for (rows, place, what) in cases {
        let e = err_text(&sudoku_csv(&rows), PuzzleKind::Sudoku);
        assert!(e.contains("puzzles.csv"), "{e}");
        assert!(e.contains(place), "{e} lacks {place}");
        assert!(e.contains(what), "{e} lacks {what}");
    }
    let e = err_text(b"source,question,rating\nx,y,1\n", PuzzleKind::Sudoku);
    assert!(
        e.contains("row 1, header") && e.contains("\"answer\""),
        "{e}"
    );
    let e = err_text(b"", PuzzleKind::Maze);
    assert!(e.contains("empty file"), "{e}");
}

#[test]
fn maze_alphabet_and_square() {
    let q = "S  #    G";
    let ok = format!("source,question,answer,rating\nm,{q},Soo#   oG,4\n");
    let recs = parse_puzzle_csv(ok.as_bytes(), Path::new("m.csv"), PuzzleKind::Maze).unwrap();
    assert_eq!(recs.len(), 1);
    let bad = format!("source,question,answer,rating\nm,{q},Soo#.  oG,4\n");
    let e = err_text(bad.as_bytes(), PuzzleKind::Maze);
    assert!(e.contains("row 2, answer") && e.contains("'.'"), "{e}");
    let bad = "source,question,answer,rating\nm,S  #   G,S  #   G,4\n";
    let e = err_text(bad.as_bytes(), PuzzleKind::Maze);
    assert!(e.contains("not a square"), "{e}");
}

#[test]
fn write_then_read_round_trip_and_refuse_existing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.csv");
    let recs = vec![PuzzleRecord {
        row: 0,
        source: "a,\"b\"".into(),
        question: "S  #    G".into(),
        answer: "Soo#   oG".into(),
        rating: 7,
    }];
    write_puzzle_csv(&out, &recs).unwrap();
    let back = recursa_data::read_puzzle_csv(&out, PuzzleKind::Maze).unwrap();
    assert_eq!(back[0].source, recs[0].source);
    assert_eq!(back[0].answer, recs[0].answer);
    assert!(matches!(
        write_puzzle_csv(&out, &recs),
        Err(DataError::OutputExists { .. })
    ));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = DetRng::derive(5, "fuzz", &["puzzle-csv"]);
    let good = sudoku_csv(&[format!("src,{SUDOKU_Q},{SUDOKU_A},1")]);
    let alphabet = b",\"\r\n.0123456789# SGox\xE9\xFF";
    for i in 0..4000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let n = rng.below(300) as usize;
            (0..n).map(|_| rng.below(256) as u8).collect()
        } else {
            // Mutations of a valid file reach the field checks.
            let mut b = good.clone();
            for _ in 0..1 + rng.below(5) {
                let at = rng.below(b.len() as u32) as usize;
                match rng.below(3) {
                    0 => b[at] = alphabet[rng.below(alphabet.len() as u32) as usize],
                    1 => {
                        b.remove(at);
                    }
                    _ => b.insert(at, alphabet[rng.below(alphabet.len() as u32) as usize]),
                }
            }
            b
        };
        for kind in [PuzzleKind::Sudoku, PuzzleKind::Maze] {
            let _ = parse_puzzle_csv(&bytes, Path::new("fuzz.csv"), kind);
        }
    }
}
