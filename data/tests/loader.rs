//! The dataset loader: memory-mapped sets read back what the builders wrote, the training
//! sampler keeps the reference semantics and is reproducible, evaluation batches cover every
//! row once, and malformed files give errors that name the file.

use recursa_data::arc::{build_arc, ArcBuildOptions};
use recursa_data::augment::DetRng;
use recursa_data::loader::{
    local_range, test_batches, GlobalBatch, GroupSampler, HostBatch, Prefetch, PuzzleArrays,
    PuzzleSet, PuzzleSplit, SamplerState, TokenArray, IGNORE_LABEL_ID,
};
use recursa_data::npy::{npy_header, read_npy, write_npy_i32, NpyDtype};
use recursa_data::DatasetMetadata;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const SEQ: usize = 4;

fn meta(num_ids: i64, sets: &[&str]) -> DatasetMetadata {
    DatasetMetadata {
        pad_id: 0,
        ignore_label_id: Some(0),
        blank_identifier_id: 0,
        vocab_size: 256,
        seq_len: SEQ as i64,
        num_puzzle_identifiers: num_ids,
        total_groups: 0,
        mean_puzzle_examples: 0.0,
        total_puzzles: 0,
        sets: sets.iter().map(|s| s.to_string()).collect(),
    }
}

/// A random set: `groups` groups of 1-4 puzzles of 0-5 rows (some groups have a puzzle of 0
/// rows, none has only empty puzzles). Row `r` holds tokens `1 + (r + j) % 200` for inputs
/// and `(r * 3 + j) % 5` for labels (0 is the ignored label). Puzzle `p` has identifier
/// `1 + p`.
fn synthetic(seed: u64, groups: usize) -> PuzzleArrays {
    let mut rng = DetRng::derive(seed, "loader-test", &[]);
    let (mut pi, mut gi, mut ids) = (vec![0i32], vec![0i32], Vec::new());
    let mut rows = 0i32;
    for _ in 0..groups {
        let puzzles = 1 + rng.below(4);
        for k in 0..puzzles {
            let n = if k == 0 {
                1 + rng.below(5)
            } else {
                rng.below(6)
            };
            rows += n as i32;
            pi.push(rows);
            ids.push(ids.len() as i32 + 1);
        }
        gi.push(ids.len() as i32);
    }
    let n = rows as usize;
    let inputs: Vec<i32> = (0..n * SEQ)
        .map(|i| 1 + ((i / SEQ + i % SEQ) % 200) as i32)
        .collect();
    let labels: Vec<i32> = (0..n * SEQ)
        .map(|i| ((i / SEQ * 3 + i % SEQ) % 5) as i32)
        .collect();
    PuzzleArrays {
        inputs: inputs.into(),
        labels: labels.into(),
        puzzle_identifiers: ids,
        puzzle_indices: pi,
        group_indices: gi,
    }
}

fn memory_split(seed: u64, groups: usize) -> PuzzleSplit {
    let arrays = synthetic(seed, groups);
    let num_ids = arrays.puzzle_identifiers.len() as i64 + 1;
    PuzzleSplit::from_memory(meta(num_ids, &["all"]), vec![("all".into(), arrays)]).unwrap()
}

/// The group of each puzzle.
fn group_of_puzzle(set: &PuzzleSet) -> Vec<usize> {
    let gi = set.group_indices();
    let mut out = vec![0; set.puzzles()];
    for g in 0..set.groups() {
        out[gi[g]..gi[g + 1]].fill(g);
    }
    out
}

/// Consecutive runs of one puzzle in a batch: (puzzle, rows).
fn runs(b: &GlobalBatch) -> Vec<(usize, Vec<usize>)> {
    let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
    for (&r, &p) in b.rows.iter().zip(&b.puzzles) {
        match out.last_mut() {
            Some((q, rows)) if *q == p => rows.push(r),
            _ => out.push((p, vec![r])),
        }
    }
    out
}

const GOOD_TASKS: &str = r#"{
 "t1": {"train": [{"input": [[1, 2]], "output": [[3]]}, {"input": [[4]], "output": [[5, 6]]}],
        "test": [{"input": [[0, 1], [2, 3]]}]},
 "t2": {"train": [{"input": [[7]], "output": [[8]]}, {"input": [[9, 9]], "output": [[1]]},
                  {"input": [[2], [3]], "output": [[4]]}],
        "test": [{"input": [[5]]}]},
 "t3": {"train": [{"input": [[1, 1, 1]], "output": [[2, 2, 2]]}, {"input": [[3]], "output": [[3]]}],
        "test": [{"input": [[6]]}, {"input": [[7, 7]]}]}
}"#;
const GOOD_SOLUTIONS: &str = r#"{"t1": [[[9]]], "t2": [[[1, 2]]], "t3": [[[3]], [[4, 4]]]}"#;

/// Builds a tiny ARC dataset (3 tasks, 4 augmentations) into `dir/out`.
fn tiny_arc(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("arc_ev_challenges.json"), GOOD_TASKS).unwrap();
    std::fs::write(dir.join("arc_ev_solutions.json"), GOOD_SOLUTIONS).unwrap();
    let out = dir.join("out");
    let mut opts = ArcBuildOptions::new(dir.join("arc"), &out);
    opts.subsets = vec!["ev".into()];
    opts.test_set = Some("ev".into());
    opts.num_aug = 4;
    build_arc(&opts).unwrap();
    out
}

/// Copies a split directory so that one file can be damaged.
fn copy_split(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn open_err(dataset: &Path) -> String {
    PuzzleSplit::open(dataset, "train").unwrap_err().to_string()
}

// ---------------------------------------------------------------------------------------
// Reading files
// ---------------------------------------------------------------------------------------

#[test]
fn arc_set_reads_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = tiny_arc(dir.path());
    for split in ["train", "test"] {
        let s = PuzzleSplit::open(&out, split).unwrap();
        assert_eq!(s.metadata().sets, vec!["all".to_string()]);
        let set = &s.sets()[0];
        assert!(set.is_memory_mapped());
        assert_eq!(set.seq_len(), 900);
        let d = out.join(split);
        let npy = |k: &str| read_npy(&d.join(format!("all__{k}.npy"))).unwrap();
        let (inputs, labels) = (npy("inputs"), npy("labels"));
        assert_eq!(inputs.shape, vec![set.rows(), 900]);
        let (inputs, labels) = (inputs.to_i64().unwrap(), labels.to_i64().unwrap());
        for r in 0..set.rows() {
            assert_eq!(set.input_row(r).unwrap(), inputs[r * 900..(r + 1) * 900]);
            assert_eq!(set.label_row(r).unwrap(), labels[r * 900..(r + 1) * 900]);
        }
        assert!(set.input_row(set.rows()).is_none());
        let as_usize = |k: &str| -> Vec<usize> {
            npy(k)
                .to_i64()
                .unwrap()
                .iter()
                .map(|&v| v as usize)
                .collect()
        };
        assert_eq!(set.puzzle_indices(), as_usize("puzzle_indices"));
        assert_eq!(set.group_indices(), as_usize("group_indices"));
        let ids: Vec<i32> = npy("puzzle_identifiers")
            .to_i64()
            .unwrap()
            .iter()
            .map(|&v| v as i32)
            .collect();
        assert_eq!(set.puzzle_identifiers(), ids);
        assert_eq!(set.puzzles(), ids.len());
        assert_eq!(set.groups() as i64, s.metadata().total_groups);

        // Collation: ignored label 0 becomes -100, inputs are unchanged.
        let rows: Vec<usize> = (0..set.rows()).collect();
        let pids: Vec<i32> = rows
            .iter()
            .map(|&r| ids[set.puzzle_of_row(r).unwrap()])
            .collect();
        let b = set.gather(&rows, &pids, rows.len() + 2).unwrap();
        for (i, (&got, &raw)) in b.labels.iter().zip(&labels).enumerate() {
            let want = if raw == 0 { -100 } else { raw as i32 };
            assert_eq!(got, want, "label {i}");
        }
        assert_eq!(
            &b.inputs[..inputs.len()],
            inputs.iter().map(|&v| v as i32).collect::<Vec<_>>()
        );
        // Two padding rows.
        assert!(b.inputs[inputs.len()..].iter().all(|&v| v == 0));
        assert!(b.labels[labels.len()..].iter().all(|&v| v == -100));
        assert_eq!(&b.puzzle_identifiers[rows.len()..], &[0, 0]);
        assert_eq!((b.rows, b.effective), (rows.len() + 2, rows.len()));
    }
}

/// Writes one set of `synthetic` arrays to `dir` with `dtype` token files.
fn write_set(dir: &Path, a: &PuzzleArrays, dtype: NpyDtype) {
    std::fs::create_dir_all(dir).unwrap();
    let rows = a.inputs.len() / SEQ;
    for (k, t) in [("inputs", &a.inputs), ("labels", &a.labels)] {
        let TokenArray::I32(v) = t else { panic!() };
        let mut bytes = npy_header(dtype, &[rows, SEQ]);
        for &x in v {
            match dtype {
                NpyDtype::U8 => bytes.push(x as u8),
                NpyDtype::I32 => bytes.extend(x.to_le_bytes()),
                _ => bytes.extend(i64::from(x).to_le_bytes()),
            }
        }
        std::fs::write(dir.join(format!("all__{k}.npy")), bytes).unwrap();
    }
    for (k, v) in [
        ("puzzle_identifiers", &a.puzzle_identifiers),
        ("puzzle_indices", &a.puzzle_indices),
        ("group_indices", &a.group_indices),
    ] {
        write_npy_i32(&dir.join(format!("all__{k}.npy")), &[v.len()], v).unwrap();
    }
    let m = meta(a.puzzle_identifiers.len() as i64 + 1, &["all"]);
    std::fs::write(dir.join("dataset.json"), serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn token_dtypes_u8_i32_i64_and_memory_agree() {
    let dir = tempfile::tempdir().unwrap();
    let a = synthetic(5, 12);
    let mem = memory_split(5, 12);
    let rows: Vec<usize> = (0..mem.sets()[0].rows()).rev().step_by(2).collect();
    let ids = vec![1; rows.len()];
    let want = mem.sets()[0].gather(&rows, &ids, rows.len() + 1).unwrap();
    assert!(!mem.sets()[0].is_memory_mapped());
    for (name, dtype) in [
        ("u8", NpyDtype::U8),
        ("i32", NpyDtype::I32),
        ("i64", NpyDtype::I64),
    ] {
        write_set(&dir.path().join(name).join("train"), &a, dtype);
        let s = PuzzleSplit::open(&dir.path().join(name), "train").unwrap();
        assert_eq!(
            s.sets()[0].gather(&rows, &ids, rows.len() + 1).unwrap(),
            want,
            "{name}"
        );
    }
}

#[test]
fn damaged_files_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = tiny_arc(dir.path());
    let case = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let d = dir.path().join(name);
        copy_split(&out.join("train"), &d.join("train"));
        edit(&d.join("train"));
        open_err(&d)
    };

    // Truncated token file.
    let e = case("trunc", &|d| {
        let p = d.join("all__inputs.npy");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 7]).unwrap();
    });
    assert!(
        e.contains("all__inputs.npy") && e.contains("truncated"),
        "{e}"
    );

    // Trailing bytes.
    let e = case("trail", &|d| {
        let p = d.join("all__labels.npy");
        let mut b = std::fs::read(&p).unwrap();
        b.push(0);
        std::fs::write(&p, b).unwrap();
    });
    assert!(
        e.contains("all__labels.npy") && e.contains("trailing"),
        "{e}"
    );

    // Garbled header.
    let e = case("garbled", &|d| {
        let p = d.join("all__puzzle_indices.npy");
        let mut b = std::fs::read(&p).unwrap();
        b[12] = b'#';
        b[20] = b'?';
        std::fs::write(&p, b).unwrap();
    });
    assert!(
        e.contains("all__puzzle_indices.npy") && e.contains("header"),
        "{e}"
    );

    // Not a .npy file, and an empty one.
    let e = case("text", &|d| {
        std::fs::write(d.join("all__group_indices.npy"), "hello").unwrap()
    });
    assert!(
        e.contains("all__group_indices.npy") && e.contains("magic"),
        "{e}"
    );
    let e = case("empty", &|d| {
        std::fs::write(d.join("all__labels.npy"), "").unwrap()
    });
    assert!(e.contains("all__labels.npy") && e.contains("empty"), "{e}");

    // A float dtype.
    let e = case("float", &|d| {
        let pi = read_npy(&d.join("all__puzzle_indices.npy")).unwrap();
        let mut b = npy_header(NpyDtype::F32, &pi.shape);
        b.extend(
            pi.to_i64()
                .unwrap()
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes()),
        );
        std::fs::write(d.join("all__puzzle_indices.npy"), b).unwrap();
    });
    assert!(
        e.contains("all__puzzle_indices.npy") && e.contains("<f4"),
        "{e}"
    );

    // Missing file.
    let e = case("missing", &|d| {
        std::fs::remove_file(d.join("all__labels.npy")).unwrap()
    });
    assert!(e.contains("all__labels.npy"), "{e}");

    // Index arrays that disagree with each other.
    let rewrite = |d: &Path, k: &str, f: &dyn Fn(&mut Vec<i32>)| {
        let p = d.join(format!("all__{k}.npy"));
        let mut v: Vec<i32> = read_npy(&p)
            .unwrap()
            .to_i64()
            .unwrap()
            .iter()
            .map(|&x| x as i32)
            .collect();
        f(&mut v);
        write_npy_i32(&p, &[v.len()], &v).unwrap();
    };
    let e = case("decreasing", &|d| {
        rewrite(d, "puzzle_indices", &|v| v[2] = v[1] - 1)
    });
    assert!(
        e.contains("all__puzzle_indices.npy") && e.contains("puzzle_indices[2]"),
        "{e}"
    );
    let e = case("end", &|d| {
        rewrite(d, "puzzle_indices", &|v| {
            let n = v.len();
            v[n - 1] -= 1
        })
    });
    assert!(
        e.contains("all__puzzle_indices.npy") && e.contains("number of rows"),
        "{e}"
    );
    let e = case("start", &|d| rewrite(d, "group_indices", &|v| v[0] = 1));
    assert!(
        e.contains("all__group_indices.npy") && e.contains("group_indices[0]"),
        "{e}"
    );
    let e = case("gend", &|d| {
        rewrite(d, "group_indices", &|v| {
            v.pop();
        })
    });
    assert!(
        e.contains("all__group_indices.npy") && e.contains("number of puzzles"),
        "{e}"
    );
    let e = case("len", &|d| rewrite(d, "puzzle_identifiers", &|v| v.push(1)));
    assert!(
        e.contains("all__puzzle_indices.npy") && e.contains("one per entry of puzzle_identifiers"),
        "{e}"
    );
    let e = case("id", &|d| {
        rewrite(d, "puzzle_identifiers", &|v| v[3] = 1 << 30)
    });
    assert!(
        e.contains("all__puzzle_identifiers.npy") && e.contains("puzzle_identifiers[3]"),
        "{e}"
    );

    // Labels of another shape; rows of another length than dataset.json says.
    let e = case("labshape", &|d| {
        let mut b = npy_header(NpyDtype::U8, &[2, 900]);
        b.extend([0u8; 1800]);
        std::fs::write(d.join("all__labels.npy"), b).unwrap();
    });
    assert!(e.contains("all__labels.npy") && e.contains("shape"), "{e}");
    let e = case("seqlen", &|d| {
        let p = d.join("dataset.json");
        let s = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"seq_len\": 900", "\"seq_len\": 30");
        std::fs::write(p, s).unwrap();
    });
    assert!(
        e.contains("all__inputs.npy") && e.contains("seq_len 30"),
        "{e}"
    );

    // Metadata that cannot be used.
    let e = case("blank", &|d| {
        let p = d.join("dataset.json");
        let s = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"blank_identifier_id\": 0", "\"blank_identifier_id\": -1");
        std::fs::write(p, s).unwrap();
    });
    assert!(
        e.contains("dataset.json") && e.contains("blank_identifier_id"),
        "{e}"
    );
    let e = case("sets", &|d| {
        let p = d.join("dataset.json");
        let s = std::fs::read_to_string(&p)
            .unwrap()
            .replace("[\"all\"]", "[\"../all\"]");
        std::fs::write(p, s).unwrap();
    });
    assert!(e.contains("dataset.json") && e.contains("sets[0]"), "{e}");
}

#[test]
fn memory_sets_are_checked_like_files() {
    let m = meta(100, &["all"]);
    let good = synthetic(1, 5);
    let err = |f: &dyn Fn(&mut PuzzleArrays)| {
        let mut a = good.clone();
        f(&mut a);
        PuzzleSet::from_memory("all", a, &m)
            .unwrap_err()
            .to_string()
    };
    let e = err(&|a| a.inputs = TokenArray::U8(vec![0; 5]));
    assert!(
        e.contains("<memory>/all__inputs") && e.contains("seq_len 4"),
        "{e}"
    );
    let e = err(&|a| a.labels = TokenArray::U8(vec![0; SEQ]));
    assert!(e.contains("<memory>/all__labels"), "{e}");
    let e = err(&|a| a.group_indices[1] = -1);
    assert!(
        e.contains("<memory>/all__group_indices") && e.contains("group_indices[1]"),
        "{e}"
    );
    let e = err(&|a| a.puzzle_identifiers[0] = 100);
    assert!(e.contains("puzzle_identifiers[0]"), "{e}");
    // Names must match the metadata.
    let e = PuzzleSplit::from_memory(meta(100, &["a"]), vec![("b".into(), good)]).unwrap_err();
    assert!(e.to_string().contains("sets"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Training order
// ---------------------------------------------------------------------------------------

#[test]
fn sampler_epochs_follow_the_reference_rules() {
    let split = memory_split(7, 40);
    let set = &split.sets()[0];
    let group = group_of_puzzle(set);
    let (pi, ids) = (set.puzzle_indices(), set.puzzle_identifiers());
    let batch = 16;
    let mut sampler = GroupSampler::new(&split, batch, 3).unwrap();
    let mut epoch_groups: HashSet<usize> = HashSet::new();
    let mut epoch = 0;
    let mut epochs_seen = 0;
    let mut batch_in_epoch = 0;
    let mut picked_puzzles: HashSet<usize> = HashSet::new();
    for _ in 0..200 {
        let b = sampler.next_batch();
        assert_eq!(b.set, 0);
        assert_eq!(b.rows.len(), batch, "every batch is full");
        assert_eq!(b.puzzles.len(), batch);
        if b.state_after.epoch != epoch {
            assert_eq!(b.state_after.epoch, epoch + 1);
            epoch += 1;
            epochs_seen += 1;
            epoch_groups.clear();
            batch_in_epoch = 0;
        }
        batch_in_epoch += 1;
        assert_eq!(
            b.state_after,
            SamplerState {
                epoch,
                batch: batch_in_epoch
            }
        );
        let rs = runs(&b);
        for (k, (p, rows)) in rs.iter().enumerate() {
            let g = group[*p];
            assert!(
                epoch_groups.insert(g),
                "group {g} visited twice in epoch {epoch}"
            );
            picked_puzzles.insert(*p);
            let size = pi[p + 1] - pi[*p];
            // A whole puzzle, except the last one of a batch, which may be cut.
            if k + 1 < rs.len() {
                assert_eq!(rows.len(), size);
            } else {
                assert!(rows.len() <= size);
            }
            let distinct: HashSet<_> = rows.iter().collect();
            assert_eq!(distinct.len(), rows.len(), "rows of a puzzle are distinct");
            assert!(rows.iter().all(|&r| (pi[*p]..pi[p + 1]).contains(&r)));
        }
        for (&p, &id) in b.puzzles.iter().zip(&b.puzzle_identifiers) {
            assert_eq!(id, ids[p]);
        }
    }
    assert!(epochs_seen >= 3, "{epochs_seen}");
    // Over many epochs every non-empty puzzle is picked at least once.
    let non_empty = (0..set.puzzles()).filter(|&p| pi[p + 1] > pi[p]).count();
    assert_eq!(picked_puzzles.len(), non_empty);
}

#[test]
fn sampler_is_deterministic_and_resumes() {
    let split = memory_split(9, 30);
    let first: Vec<GlobalBatch> = GroupSampler::new(&split, 8, 42).unwrap().take(60).collect();
    let again: Vec<GlobalBatch> = GroupSampler::new(&split, 8, 42).unwrap().take(60).collect();
    assert_eq!(first, again);
    let other: Vec<GlobalBatch> = GroupSampler::new(&split, 8, 43).unwrap().take(60).collect();
    assert_ne!(first, other);
    // Epochs differ from each other.
    assert!(first.iter().any(|b| b.state_after.epoch > 1));
    let e0: Vec<_> = first.iter().filter(|b| b.state_after.epoch == 0).collect();
    let e1: Vec<_> = first.iter().filter(|b| b.state_after.epoch == 1).collect();
    assert_ne!(e0[0].rows, e1[0].rows);

    // Resuming from any saved state (through JSON) continues with the same batches,
    // across epoch boundaries too.
    for k in [0, 1, 5, 17, 33, 40] {
        let state = first[k].state_after;
        let json = serde_json::to_string(&state).unwrap();
        let state: SamplerState = serde_json::from_str(&json).unwrap();
        let mut s = GroupSampler::resume(&split, 8, 42, state).unwrap();
        assert_eq!(s.state(), state);
        let rest: Vec<GlobalBatch> = (0..15).map(|_| s.next_batch()).collect();
        assert_eq!(rest[..], first[k + 1..k + 16], "resume after batch {k}");
    }
    assert_eq!(
        GroupSampler::resume(&split, 8, 42, SamplerState::default())
            .unwrap()
            .next_batch(),
        first[0]
    );
    // A state beyond its epoch is an error.
    let e = GroupSampler::resume(
        &split,
        8,
        42,
        SamplerState {
            epoch: 2,
            batch: 10_000,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("epoch 2 has only"), "{e}");
}

#[test]
fn sampler_rejects_impossible_settings() {
    let split = memory_split(2, 6);
    let err = |b: usize| GroupSampler::new(&split, b, 0).err().unwrap().to_string();
    assert!(err(0).contains("global batch size is 0"));
    let e = err(10_000);
    assert!(
        e.contains("set 'all'") && e.contains("global batch size 10000"),
        "{e}"
    );
    // An empty group.
    let mut a = synthetic(2, 3);
    a.group_indices.insert(1, 0);
    let s = PuzzleSplit::from_memory(meta(100, &["all"]), vec![("all".into(), a)]).unwrap();
    let e = GroupSampler::new(&s, 1, 0).err().unwrap().to_string();
    assert!(e.contains("group 0 has no puzzles"), "{e}");
    // World sizes.
    assert!(local_range(8, 0, 3)
        .unwrap_err()
        .to_string()
        .contains("multiple"));
    assert!(local_range(8, 2, 2).is_err());
    assert!(local_range(0, 0, 1).is_err());
    assert_eq!(local_range(8, 1, 2).unwrap(), 4..8);
    let s = GroupSampler::new(&split, 4, 0).unwrap();
    assert!(s.into_host_batches(0, 3).is_err());
}

#[test]
fn sampler_walks_sets_in_order() {
    let (a, b) = (synthetic(11, 20), synthetic(12, 25));
    let split = PuzzleSplit::from_memory(
        meta(200, &["first", "second"]),
        vec![("first".into(), a), ("second".into(), b)],
    )
    .unwrap();
    assert_eq!(split.set("second").unwrap().name(), "second");
    let batches: Vec<GlobalBatch> = GroupSampler::new(&split, 6, 1).unwrap().take(80).collect();
    let mut last = (0u64, 0usize);
    let mut seen = HashSet::new();
    for b in &batches {
        let key = (b.state_after.epoch, b.set);
        assert!(key >= last, "sets in order within an epoch");
        last = key;
        seen.insert(key);
        let set = &split.sets()[b.set];
        assert!(b.rows.iter().all(|&r| r < set.rows()));
    }
    assert!(seen.contains(&(0, 0)) && seen.contains(&(0, 1)) && seen.contains(&(1, 0)));
}

#[test]
fn rank_slices_concatenate_to_the_global_batch() {
    let split = memory_split(4, 30);
    let set = &split.sets()[0];
    let globals: Vec<GlobalBatch> = GroupSampler::new(&split, 8, 5).unwrap().take(10).collect();
    let ranks: Vec<Vec<_>> = (0..2)
        .map(|r| {
            GroupSampler::new(&split, 8, 5)
                .unwrap()
                .into_host_batches(r, 2)
                .unwrap()
                .take(10)
                .map(Result::unwrap)
                .collect()
        })
        .collect();
    for (i, g) in globals.iter().enumerate() {
        let (r0, i0) = g.local(0, 2).unwrap();
        let (r1, i1) = g.local(1, 2).unwrap();
        assert_eq!([r0, r1].concat(), g.rows);
        assert_eq!([i0, i1].concat(), g.puzzle_identifiers);
        let whole = set.gather(&g.rows, &g.puzzle_identifiers, 8).unwrap();
        let (a, b) = (&ranks[0][i], &ranks[1][i]);
        assert_eq!(
            (a.state_after, a.batch.rows, a.batch.effective),
            (g.state_after, 4, 8)
        );
        assert_eq!(
            [&a.batch.inputs[..], &b.batch.inputs[..]].concat(),
            whole.inputs
        );
        assert_eq!(
            [&a.batch.labels[..], &b.batch.labels[..]].concat(),
            whole.labels
        );
        assert_eq!(
            [
                &a.batch.puzzle_identifiers[..],
                &b.batch.puzzle_identifiers[..]
            ]
            .concat(),
            whole.puzzle_identifiers
        );
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation order
// ---------------------------------------------------------------------------------------

#[test]
fn test_batches_cover_every_row_once() {
    let split = memory_split(8, 25);
    let set = &split.sets()[0];
    let n = set.rows();
    let (pi, ids) = (set.puzzle_indices(), set.puzzle_identifiers());
    let id_of_row = |r: usize| {
        ids[(0..set.puzzles())
            .find(|&p| pi[p] <= r && r < pi[p + 1])
            .unwrap()]
    };
    // Row r's first input token is 1 + r % 200 (see `synthetic`), which identifies it.
    let row_of = |b: &HostBatch, i: usize| (b.inputs[i * SEQ] - 1) as usize;
    for (global, world) in [(6, 1), (6, 2), (6, 3), (n, 1), (n + 4, 2), (4, 4)] {
        let mut seen = vec![0; n];
        let mut counts = Vec::new();
        for rank in 0..world {
            let it = test_batches(set, global, rank, world).unwrap();
            assert_eq!(it.len(), n.div_ceil(global));
            let batches: Vec<HostBatch> = it.map(Result::unwrap).collect();
            counts.push(batches.len());
            for (k, b) in batches.iter().enumerate() {
                assert_eq!(b.rows, global / world);
                assert_eq!(b.effective, n.min((k + 1) * global) - k * global);
                let first = k * global + rank * (global / world);
                for i in 0..b.rows {
                    let r = first + i;
                    let real = r < n.min((k + 1) * global);
                    if real {
                        assert_eq!(row_of(b, i) % 200, r % 200);
                        seen[r] += 1;
                        assert_eq!(b.puzzle_identifiers[i], id_of_row(r), "row {r}");
                    } else {
                        assert!(b.inputs[i * SEQ..(i + 1) * SEQ].iter().all(|&v| v == 0));
                        assert!(b.labels[i * SEQ..(i + 1) * SEQ]
                            .iter()
                            .all(|&v| v == IGNORE_LABEL_ID));
                        assert_eq!(b.puzzle_identifiers[i], 0);
                    }
                }
            }
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "global {global} world {world}"
        );
        assert!(
            counts.iter().all(|&c| c == counts[0]),
            "same batch count on every rank"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Prefetching
// ---------------------------------------------------------------------------------------

#[test]
fn prefetch_yields_the_plain_sequence() {
    let split = memory_split(6, 30);
    let set = &split.sets()[0];
    let plain: Vec<HostBatch> = test_batches(set, 5, 0, 1)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for depth in [0, 1, 2, 8] {
        let pre = Prefetch::new_fallible(test_batches(set, 5, 0, 1).unwrap(), depth).unwrap();
        let got: Vec<HostBatch> = pre.map(Result::unwrap).collect();
        assert_eq!(got, plain, "depth {depth}");
    }
    let train = |s| {
        GroupSampler::new(&split, 4, s)
            .unwrap()
            .into_host_batches(0, 1)
            .unwrap()
    };
    let plain: Vec<_> = train(2).take(25).map(Result::unwrap).collect();
    let got: Vec<_> = Prefetch::new_fallible(train(2), 2)
        .unwrap()
        .take(25)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, plain);
    // Dropping a prefetch of an endless iterator stops its thread (the drop joins it).
    let mut p = Prefetch::new(0u64.., 2).unwrap();
    assert_eq!(p.next().unwrap().unwrap(), 0);
    drop(p);
}

#[test]
fn prefetch_reports_a_producer_panic() {
    let it = (0..5).inspect(|&i| {
        if i == 3 {
            panic!("row gather failed at {i}");
        }
    });
    let got: Vec<_> = Prefetch::new(it, 1).unwrap().collect();
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[..3]
            .iter()
            .map(|r| *r.as_ref().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let e = got[3].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("panicked") && e.contains("row gather failed at 3"),
        "{e}"
    );
}

#[test]
fn gather_rejects_bad_requests() {
    let split = memory_split(3, 5);
    let set = &split.sets()[0];
    assert!(set.gather(&[0, 1], &[1], 2).is_err());
    assert!(set.gather(&[0, 1], &[1, 1], 1).is_err());
    assert!(set.gather(&[set.rows()], &[1], 1).is_err());
    assert!(set.gather(&[0], &[-1], 1).is_err());
    assert!(set.gather(&[0], &[1000], 1).is_err());
    let b = set.gather(&[], &[], 3).unwrap();
    assert_eq!(
        (b.rows, b.effective, b.puzzle_identifiers),
        (3, 0, vec![0, 0, 0])
    );
}

#[test]
fn keeping_some_puzzles_keeps_their_rows_groups_and_identifiers() {
    let split = memory_split(11, 12);
    let set = &split.sets()[0];
    // Keep the puzzles with an even identifier.
    let kept = split.keep_puzzles(|id| id % 2 == 0).unwrap();
    let k = &kept.sets()[0];
    assert!(k.puzzle_identifiers().iter().all(|id| id % 2 == 0));
    let want: Vec<i32> = set
        .puzzle_identifiers()
        .iter()
        .copied()
        .filter(|id| id % 2 == 0)
        .collect();
    assert_eq!(k.puzzle_identifiers(), want.as_slice());
    // Every kept puzzle has exactly its original rows, in order.
    for (new_p, &id) in k.puzzle_identifiers().iter().enumerate() {
        let old_p = set
            .puzzle_identifiers()
            .iter()
            .position(|&i| i == id)
            .unwrap();
        let (o, n) = (set.puzzle_indices(), k.puzzle_indices());
        assert_eq!(o[old_p + 1] - o[old_p], n[new_p + 1] - n[new_p]);
        for j in 0..o[old_p + 1] - o[old_p] {
            assert_eq!(set.input_row(o[old_p] + j), k.input_row(n[new_p] + j));
            assert_eq!(set.label_row(o[old_p] + j), k.label_row(n[new_p] + j));
        }
    }
    // Groups left without puzzles are dropped; the identifier count is the original's.
    let groups_with_even = (0..set.groups())
        .filter(|&g| {
            let gi = set.group_indices();
            (gi[g]..gi[g + 1]).any(|p| set.puzzle_identifiers()[p] % 2 == 0)
        })
        .count();
    assert_eq!(k.groups(), groups_with_even);
    let m = kept.metadata();
    assert_eq!(m.total_groups as usize, groups_with_even);
    assert_eq!(m.total_puzzles as usize, want.len());
    assert_eq!(
        m.num_puzzle_identifiers,
        split.metadata().num_puzzle_identifiers
    );
    // Nothing kept is an error.
    assert!(split.keep_puzzles(|_| false).is_err());
}
