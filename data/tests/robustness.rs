//! Malformed input: random bytes never panic, and errors name the file and the place.

use recursa_data::arc::{build_arc, parse_arc_subset, parse_test_puzzles, ArcBuildOptions};
use recursa_data::augment::DetRng;
use recursa_data::npy::{npy_header, parse_npy, read_npy, write_npy_i32, NpyDtype};
use std::path::Path;

fn random_bytes(rng: &mut DetRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

const GOOD: &str =
    r#"{"t1": {"train": [{"input": [[1, 2]], "output": [[3]]}], "test": [{"input": [[0]]}]}}"#;
const GOOD_SOL: &str = r#"{"t1": [[[5, 5]]]}"#;

#[test]
fn random_bytes_never_panic_json() {
    let mut rng = DetRng::derive(3, "fuzz", &["json"]);
    let p = Path::new("fuzz.json");
    for i in 0..3000 {
        let n = rng.below(200) as usize;
        let mut bytes = random_bytes(&mut rng, n);
        if i % 2 == 0 {
            // Mutate a valid file, so the parser gets deep into the structure.
            bytes = GOOD.as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u32) as usize;
                bytes[at] = b"{}[],:0123456789\"-.e ax"[rng.below(23) as usize];
            }
        }
        let _ = parse_arc_subset("s", &bytes, p, None);
        let _ = parse_arc_subset("s", GOOD.as_bytes(), p, Some((&bytes, p)));
        let _ = parse_test_puzzles(&bytes, p);
    }
}

#[test]
fn random_bytes_never_panic_npy() {
    let mut rng = DetRng::derive(3, "fuzz", &["npy"]);
    let p = Path::new("fuzz.npy");
    let mut valid = npy_header(NpyDtype::I32, &[2, 3]);
    valid.extend([0u8; 24]);
    for i in 0..5000 {
        let bytes = match i % 3 {
            0 => {
                let n = rng.below(300) as usize;
                random_bytes(&mut rng, n)
            }
            1 => {
                // Valid magic and version, random rest.
                let mut b = b"\x93NUMPY\x01\x00".to_vec();
                let n = rng.below(200) as usize;
                b.extend(random_bytes(&mut rng, n));
                b
            }
            _ => {
                let mut b = valid.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(b.len() as u32) as usize;
                    b[at] = rng.below(256) as u8;
                }
                let cut = rng.below(b.len() as u32 + 1) as usize;
                b.truncate(cut);
                b
            }
        };
        let _ = parse_npy(&bytes, p);
    }
}

fn subset_err(ch: &str, sol: Option<&str>) -> String {
    let cp = Path::new("arc-agi_x_challenges.json");
    let sp = Path::new("arc-agi_x_solutions.json");
    parse_arc_subset("x", ch.as_bytes(), cp, sol.map(|s| (s.as_bytes(), sp)))
        .unwrap_err()
        .to_string()
}

#[test]
fn error_messages_name_file_and_place() {
    let e = subset_err(r#"{"t1": {"train": [}"#, None);
    assert!(
        e.contains("arc-agi_x_challenges.json") && e.contains("malformed JSON"),
        "{e}"
    );

    let e = subset_err(GOOD, Some(r#"{"other": []}"#));
    assert!(
        e.contains("arc-agi_x_solutions.json")
            && e.contains("missing solutions")
            && e.contains("t1"),
        "{e}"
    );

    let e = subset_err(GOOD, Some(r#"{"t1": []}"#));
    assert!(
        e.contains("missing solutions") && e.contains("test[0]"),
        "{e}"
    );

    let big = format!(
        r#"{{"t2": {{"train": [{{"input": [{}], "output": [[1]]}}], "test": []}}}}"#,
        vec!["[1]"; 31].join(",")
    );
    let e = subset_err(&big, None);
    assert!(
        e.contains("task t2") && e.contains("train[0].input") && e.contains("31x1"),
        "{e}"
    );

    let e = subset_err(
        r#"{"t3": {"train": [{"input": [], "output": [[1]]}], "test": []}}"#,
        None,
    );
    assert!(e.contains("task t3") && e.contains("empty grid"), "{e}");
    let e = subset_err(
        r#"{"t3": {"train": [{"input": [[]], "output": [[1]]}], "test": []}}"#,
        None,
    );
    assert!(e.contains("empty grid"), "{e}");

    let e = subset_err(
        r#"{"t4": {"train": [{"input": [[1]], "output": [[1, 10]]}], "test": []}}"#,
        None,
    );
    assert!(
        e.contains("task t4")
            && e.contains("train[0].output")
            && e.contains("colour 10")
            && e.contains("column 1"),
        "{e}"
    );
    let e = subset_err(
        r#"{"t4": {"train": [{"input": [[-1]], "output": [[1]]}], "test": []}}"#,
        None,
    );
    assert!(e.contains("colour -1"), "{e}");

    let e = subset_err(
        r#"{"t5": {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}}"#,
        None,
    );
    assert!(e.contains("ragged"), "{e}");

    let e = subset_err(
        r#"{"t6": {"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}}"#,
        Some(r#"{"t6": [[[1, 2.5]]]}"#),
    );
    assert!(
        e.contains("arc-agi_x_solutions.json") && e.contains("malformed JSON"),
        "{e}"
    );
}

#[test]
fn npy_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    write_npy_i32(&p, &[4], &[1, 2, 3, 4]).unwrap();
    let full = std::fs::read(&p).unwrap();
    assert_eq!(read_npy(&p).unwrap().to_i64().unwrap(), vec![1, 2, 3, 4]);

    std::fs::write(&p, &full[..full.len() - 3]).unwrap();
    let e = read_npy(&p).unwrap_err().to_string();
    assert!(e.contains("a.npy") && e.contains("truncated"), "{e}");

    std::fs::write(&p, &full[..20]).unwrap();
    let e = read_npy(&p).unwrap_err().to_string();
    assert!(e.contains("a.npy") && e.contains("truncated header"), "{e}");

    std::fs::write(&p, b"not numpy at all").unwrap();
    let e = read_npy(&p).unwrap_err().to_string();
    assert!(e.contains("a.npy") && e.contains("magic"), "{e}");

    let mut bad = full.clone();
    let text = String::from_utf8_lossy(&bad[10..]).replace("<i4", "<c8");
    bad.truncate(10);
    bad.extend(text.as_bytes());
    std::fs::write(&p, &bad).unwrap();
    let e = read_npy(&p).unwrap_err().to_string();
    assert!(e.contains("unsupported dtype"), "{e}");
}

fn write_subset(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("arc_ev_challenges.json"), GOOD).unwrap();
    std::fs::write(dir.join("arc_ev_solutions.json"), GOOD_SOL).unwrap();
    dir.join("arc")
}

#[test]
fn existing_output_is_an_error_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = write_subset(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let mut opts = ArcBuildOptions::new(&prefix, &out);
    opts.subsets = vec!["ev".into()];
    opts.test_set = Some("ev".into());
    opts.num_aug = 2;
    let e = build_arc(&opts).unwrap_err().to_string();
    assert!(e.contains("already exists") && e.contains("out"), "{e}");
    let entries: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    // No temporary directory is left next to it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn failed_build_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = write_subset(dir.path());
    let out = dir.path().join("out");
    let mut opts = ArcBuildOptions::new(&prefix, &out);
    opts.subsets = vec!["ev".into(), "missing".into()];
    opts.test_set = Some("ev".into());
    let e = build_arc(&opts).unwrap_err().to_string();
    assert!(e.contains("arc_missing_challenges.json"), "{e}");
    // A test set that is not a subset.
    opts.subsets = vec!["ev".into()];
    opts.test_set = Some("evaluation".into());
    assert!(build_arc(&opts).is_err());
    // A test-set task without test pairs fails during the build: the temp dir is removed.
    std::fs::write(
        dir.path().join("arc_ev_challenges.json"),
        r#"{"t1": {"train": [{"input": [[1]], "output": [[1]]}], "test": []}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("arc_ev_solutions.json"), r#"{"t1": []}"#).unwrap();
    opts.test_set = Some("ev".into());
    let e = build_arc(&opts).unwrap_err().to_string();
    assert!(e.contains("task t1") && e.contains("no test pairs"), "{e}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "out" || n.ends_with(".tmp")),
        "{names:?}"
    );
}

#[test]
fn missing_solutions_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("arc_ev_challenges.json"), GOOD).unwrap();
    let mut opts = ArcBuildOptions::new(dir.path().join("arc"), dir.path().join("out"));
    opts.subsets = vec!["ev".into()];
    opts.test_set = Some("ev".into());
    opts.num_aug = 0;
    let e = build_arc(&opts).unwrap_err().to_string();
    assert!(
        e.contains("arc_ev_solutions.json") && e.contains("missing solutions"),
        "{e}"
    );
    // The reference behaviour on request: test outputs become [[0]].
    opts.dummy_missing_solutions = true;
    let s = build_arc(&opts).unwrap();
    assert_eq!((s.train.puzzles, s.test.examples), (1, 1));
    let tp = std::fs::read_to_string(dir.path().join("out/test_puzzles.json")).unwrap();
    assert!(tp.contains(r#""output": [[0]]"#), "{tp}");
}
