//! Checks of the builder and the evaluator against the reference fixtures
//! (`tests/fixtures/arc_dataset_shared_aug{0,8}` and `arc_eval_shared`, see the fixture
//! README). Each function returns a list of [`Check`]s; the CLI prints them.
//!
//! The builder's random draws differ from numpy's, so the dataset checks follow the README:
//! deterministic parts exactly, random parts as sets keyed by puzzle name (each name of both
//! builds is decoded, its grids regenerated with this crate's augmentation code and its rows
//! checked; train rows up to translation, with at least one untranslated example).

use crate::arc::{
    build_arc_from_subsets, parse_arc_subset, ArcBuildOptions, ArcSubset, ExampleKind,
};
use crate::arc_eval::{ArcEvalBatch, ArcEvalOptions, ArcEvaluator};
use crate::augment::parse_puzzle_name;
use crate::error::DataError;
use crate::format::DatasetMetadata;
use crate::grid::{encode_grid, Grid, ARC_MAX_GRID_SIZE, ARC_SEQ_LEN};
use crate::json::Ordered;
use crate::npy::{read_npy, NpyDtype};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The outcome of one comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixture access
// ---------------------------------------------------------------------------------------

/// A loaded fixture: tensors (owned), the `config` / `fixture` metadata and the sidecar.
struct Fixture {
    path: PathBuf,
    tensors: HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    config: Value,
    sidecar: Value,
}

impl Fixture {
    fn load(path: &Path, kind: &str) -> Result<Fixture, DataError> {
        let ferr = |m: String| DataError::fixture(path, m);
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| ferr(format!("not a safetensors file: {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let parse = |k: &str| -> Result<Value, DataError> {
            let s = meta
                .get(k)
                .ok_or_else(|| ferr(format!("metadata lacks {k:?}")))?;
            serde_json::from_str(s).map_err(|e| ferr(format!("metadata {k:?}: {e}")))
        };
        let fixture = parse("fixture")?;
        let config = parse("config")?;
        let found = fixture
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        if found != kind {
            return Err(ferr(format!(
                "fixture kind is {found:?}, expected {kind:?}"
            )));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| ferr(format!("not a safetensors file: {e}")))?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                (
                    name,
                    (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
                )
            })
            .collect();
        let sidecar_path = path.with_extension("json");
        let sb = std::fs::read(&sidecar_path).map_err(|e| DataError::io(&sidecar_path, e))?;
        let sidecar = serde_json::from_slice(&sb).map_err(|e| DataError::json(&sidecar_path, e))?;
        Ok(Fixture {
            path: path.to_path_buf(),
            tensors,
            config,
            sidecar,
        })
    }

    fn tensor(
        &self,
        name: &str,
        dtype: safetensors::Dtype,
    ) -> Result<(&[usize], &[u8]), DataError> {
        let (d, shape, data) = self
            .tensors
            .get(name)
            .ok_or_else(|| DataError::fixture(&self.path, format!("no tensor {name:?}")))?;
        if *d != dtype {
            return Err(DataError::fixture(
                &self.path,
                format!("tensor {name:?} is {d:?}, expected {dtype:?}"),
            ));
        }
        Ok((shape, data))
    }

    fn i32s(&self, name: &str) -> Result<(Vec<usize>, Vec<i32>), DataError> {
        let (shape, data) = self.tensor(name, safetensors::Dtype::I32)?;
        let v = data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((shape.to_vec(), v))
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>, DataError> {
        let (_, data) = self.tensor(name, safetensors::Dtype::F32)?;
        Ok(data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn f64_scalar(&self, name: &str) -> Result<f64, DataError> {
        let (_, data) = self.tensor(name, safetensors::Dtype::F64)?;
        let b: [u8; 8] = data.try_into().map_err(|_| {
            DataError::fixture(&self.path, format!("{name:?} is not an f64 scalar"))
        })?;
        Ok(f64::from_le_bytes(b))
    }

    fn side(&self, key: &str) -> Result<&Value, DataError> {
        self.sidecar.get(key).ok_or_else(|| {
            DataError::fixture(
                self.path.with_extension("json"),
                format!("sidecar lacks {key:?}"),
            )
        })
    }
}

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, DataError> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("recursa-verify-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| DataError::io(&p, e))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Dataset arrays of one split (ours or the fixture's)
// ---------------------------------------------------------------------------------------

/// The puzzles of one group: (name, row range).
type Group = Vec<(String, std::ops::Range<usize>)>;

/// One split's arrays, as i32.
struct SplitArrays {
    inputs: Vec<i32>,
    labels: Vec<i32>,
    puzzle_identifiers: Vec<i32>,
    puzzle_indices: Vec<i32>,
    group_indices: Vec<i32>,
}

impl SplitArrays {
    fn from_fixture(f: &Fixture, split: &str) -> Result<SplitArrays, DataError> {
        let get = |k: &str| f.i32s(&format!("{split}.{k}")).map(|(_, v)| v);
        Ok(SplitArrays {
            inputs: get("inputs")?,
            labels: get("labels")?,
            puzzle_identifiers: get("puzzle_identifiers")?,
            puzzle_indices: get("puzzle_indices")?,
            group_indices: get("group_indices")?,
        })
    }

    /// Reads our `.npy` files, checking the reference dtypes and shapes.
    fn from_dir(
        dir: &Path,
        checks: &mut Vec<Check>,
        split: &str,
    ) -> Result<SplitArrays, DataError> {
        let mut load = |k: &str, dtype: NpyDtype, rank: usize| -> Result<Vec<i32>, DataError> {
            let path = dir.join(format!("all__{k}.npy"));
            let a = read_npy(&path)?;
            let ok = a.dtype == dtype
                && a.shape.len() == rank
                && (rank == 1 || a.shape[1] == ARC_SEQ_LEN);
            checks.push(Check::new(
                format!("{split}/all__{k}.npy dtype"),
                ok,
                format!("{} {:?}", a.dtype.descr(), a.shape),
            ));
            let v = a
                .to_i64()
                .ok_or_else(|| DataError::npy(&path, "not an integer array"))?;
            Ok(v.into_iter().map(|x| x as i32).collect())
        };
        Ok(SplitArrays {
            inputs: load("inputs", NpyDtype::U8, 2)?,
            labels: load("labels", NpyDtype::U8, 2)?,
            puzzle_identifiers: load("puzzle_identifiers", NpyDtype::I32, 1)?,
            puzzle_indices: load("puzzle_indices", NpyDtype::I32, 1)?,
            group_indices: load("group_indices", NpyDtype::I32, 1)?,
        })
    }

    fn row(&self, labels: bool, i: usize) -> &[i32] {
        let a = if labels { &self.labels } else { &self.inputs };
        &a[i * ARC_SEQ_LEN..(i + 1) * ARC_SEQ_LEN]
    }

    /// Checks the index arrays and returns, per group, the puzzles as (name, row range).
    fn groups(&self, ids: &[String]) -> Result<Vec<Group>, String> {
        let (pi, gi) = (&self.puzzle_indices, &self.group_indices);
        let rows = self.inputs.len() / ARC_SEQ_LEN;
        if self.inputs.len() != self.labels.len() || !self.inputs.len().is_multiple_of(ARC_SEQ_LEN)
        {
            return Err("inputs / labels sizes differ or are not multiples of 900".into());
        }
        if pi.len() != self.puzzle_identifiers.len() + 1
            || pi.first() != Some(&0)
            || *pi.last().unwrap_or(&-1) as usize != rows
        {
            return Err(format!(
                "puzzle_indices {} entries / last {:?} vs {rows} rows",
                pi.len(),
                pi.last()
            ));
        }
        if gi.first() != Some(&0)
            || *gi.last().unwrap_or(&-1) as usize != self.puzzle_identifiers.len()
        {
            return Err("group_indices do not span the puzzles".into());
        }
        if pi.windows(2).any(|w| w[0] >= w[1]) || gi.windows(2).any(|w| w[0] >= w[1]) {
            return Err("indices are not strictly increasing".into());
        }
        let mut out = Vec::new();
        for g in gi.windows(2) {
            let mut group = Vec::new();
            for p in g[0] as usize..g[1] as usize {
                let id = self.puzzle_identifiers[p];
                let name = usize::try_from(id)
                    .ok()
                    .and_then(|i| ids.get(i))
                    .ok_or_else(|| format!("puzzle identifier {id} out of range"))?;
                group.push((name.clone(), pi[p] as usize..pi[p + 1] as usize));
            }
            out.push(group);
        }
        Ok(out)
    }
}

/// Where the encoded grid of a canvas starts: the first non-PAD token, which is always the
/// grid's top-left cell (EOS markers sit below and to the right of the grid).
fn offset_of(canvas: &[i32]) -> Option<(usize, usize)> {
    canvas
        .iter()
        .position(|&t| t != 0)
        .map(|p| (p / ARC_MAX_GRID_SIZE, p % ARC_MAX_GRID_SIZE))
}

/// A task's (train split, test split) pairs before augmentation.
type TaskPairs = (Vec<(Grid, Grid)>, Vec<(Grid, Grid)>);

/// Checks every puzzle of a split against grids regenerated from its name: test split rows
/// exactly (no translation), train rows up to a shared in-range translation, with at least one
/// untranslated example per puzzle. Returns error descriptions.
fn check_rows(
    arrays: &SplitArrays,
    groups: &[Group],
    tasks: &HashMap<String, TaskPairs>,
    split: &str,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, range) in groups.iter().flatten() {
        let (task, aug) = match parse_puzzle_name(name) {
            Ok(x) => x,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if name.contains('|') && aug.colours.0[0] != 0 {
            errors.push(format!("{name}: colour map moves 0"));
        }
        let Some((train, test)) = tasks.get(task) else {
            errors.push(format!("{name}: unknown task"));
            continue;
        };
        let pairs = if split == "test" { test } else { train };
        if pairs.len() != range.len() {
            errors.push(format!(
                "{name}: {} rows, expected {}",
                range.len(),
                pairs.len()
            ));
            continue;
        }
        let mut untranslated = 0;
        for ((inp, out), row) in pairs.iter().zip(range.clone()) {
            let (gi, go) = (aug.apply(inp), aug.apply(out));
            let (ri, ro) = (arrays.row(false, row), arrays.row(true, row));
            let Some((pr, pc)) = offset_of(ri) else {
                errors.push(format!("{name}: row {row} is empty"));
                continue;
            };
            let fits = pr + gi.rows().max(go.rows()) <= ARC_MAX_GRID_SIZE
                && pc + gi.cols().max(go.cols()) <= ARC_MAX_GRID_SIZE;
            let same = |g: &Grid, r: &[i32]| {
                encode_grid(g, pr, pc)
                    .iter()
                    .zip(r)
                    .all(|(&a, &b)| i32::from(a) == b)
            };
            if !fits || !same(&gi, ri) || !same(&go, ro) {
                errors.push(format!(
                    "{name}: row {row} does not match its regenerated pair at offset ({pr}, {pc})"
                ));
            }
            if (pr, pc) == (0, 0) {
                untranslated += 1;
            } else if split == "test" {
                errors.push(format!("{name}: test row {row} is translated"));
            }
        }
        if untranslated == 0 {
            errors.push(format!("{name}: no untranslated example"));
        }
    }
    errors
}

/// Per task: (group size, examples per puzzle), and structural errors.
fn structure(groups: &[Group]) -> (BTreeMap<String, (usize, usize)>, Vec<String>) {
    let mut map = BTreeMap::new();
    let mut errors = Vec::new();
    for g in groups {
        let first = &g[0].0;
        if first.contains('|') {
            errors.push(format!("group starts with an augmented puzzle {first}"));
        }
        let n = g[0].1.len();
        for (name, r) in g {
            let task = name.split('|').next().unwrap_or("");
            if task != first {
                errors.push(format!("{name} is in the group of {first}"));
            }
            if r.len() != n {
                errors.push(format!("{name} has {} examples, {first} has {n}", r.len()));
            }
        }
        if map.insert(first.clone(), (g.len(), n)).is_some() {
            errors.push(format!("task {first} has two groups"));
        }
    }
    (map, errors)
}

/// Equality up to one unit in the last place. Only used for floats read from the JSON
/// sidecar: serde_json's default float parser is not always correctly rounded (the exact
/// comparisons use the f64 tensors of the fixture).
fn ulp_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
}

fn summarize(errors: &[String]) -> String {
    match errors.len() {
        0 => "ok".into(),
        n => format!(
            "{n} problem(s): {}",
            errors
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// The sidecar's input subset as a subset, with tasks in `task_order_in_input_json`.
fn sidecar_subset(f: &Fixture, name: &str) -> Result<ArcSubset, DataError> {
    let ch = f.side("input_subset_challenges")?;
    let so = f.side("input_subset_solutions")?;
    let order: Vec<String> = serde_json::from_value(f.side("task_order_in_input_json")?.clone())
        .map_err(|e| DataError::fixture(&f.path, format!("task_order_in_input_json: {e}")))?;
    let ordered = |v: &Value| -> Result<Vec<u8>, DataError> {
        let items = order
            .iter()
            .map(|t| {
                v.get(t).map(|x| (t.clone(), x.clone())).ok_or_else(|| {
                    DataError::fixture(&f.path, format!("sidecar input lacks task {t}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        serde_json::to_vec(&Ordered(items)).map_err(|e| DataError::fixture(&f.path, e.to_string()))
    };
    let sidecar = f.path.with_extension("json");
    parse_arc_subset(
        name,
        &ordered(ch)?,
        &sidecar.join("input_subset_challenges"),
        Some((&ordered(so)?, &sidecar.join("input_subset_solutions"))),
    )
}

/// Checks the Rust ARC builder against an `arc_dataset` fixture.
pub fn verify_arc_dataset(fixture: &Path) -> Result<Vec<Check>, DataError> {
    let f = Fixture::load(fixture, "arc_dataset")?;
    let bc = f.side("builder_config")?;
    let ferr = |m: &str| DataError::fixture(fixture, m.to_string());
    let num_aug = f
        .config
        .get("num_aug")
        .and_then(Value::as_u64)
        .ok_or_else(|| ferr("config lacks num_aug"))?;
    let seed = f
        .config
        .get("seed")
        .and_then(Value::as_u64)
        .ok_or_else(|| ferr("config lacks seed"))?;
    let subsets: Vec<String> =
        serde_json::from_value(bc.get("subsets").cloned().unwrap_or(Value::Null))
            .map_err(|_| ferr("builder_config.subsets"))?;
    let test_set = bc
        .get("test_set_name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let start = bc
        .get("puzzle_identifiers_start")
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;

    let subs = subsets
        .iter()
        .map(|s| sidecar_subset(&f, s))
        .collect::<Result<Vec<_>, _>>()?;
    let scratch = Scratch::new()?;
    let out = scratch.0.join("out");
    let mut opts = ArcBuildOptions::new("", &out);
    opts.subsets = subsets.clone();
    opts.test_set = test_set;
    opts.num_aug = num_aug as usize;
    opts.seed = seed;
    opts.puzzle_identifiers_start = start;
    build_arc_from_subsets(&subs, &opts, std::time::Instant::now())?;

    let mut checks = Vec::new();
    // Regenerable pairs per task (train split pairs, test split pairs).
    let tasks: HashMap<String, TaskPairs> = subs
        .iter()
        .flat_map(|s| s.tasks.iter().map(move |t| (s, t)))
        .map(|(s, t)| {
            let is_test = opts.test_set.as_deref() == Some(s.name.as_str());
            let (mut tr, mut te) = (Vec::new(), Vec::new());
            for (k, exs) in &t.parts {
                let dst = if *k == ExampleKind::Test && is_test {
                    &mut te
                } else {
                    &mut tr
                };
                dst.extend(exs.iter().map(|e| (e.input.clone(), e.output.clone())));
            }
            (t.name.clone(), (tr, te))
        })
        .collect();

    let read_json = |p: PathBuf| -> Result<Value, DataError> {
        let b = std::fs::read(&p).map_err(|e| DataError::io(&p, e))?;
        serde_json::from_slice(&b).map_err(|e| DataError::json(&p, e))
    };

    // JSON outputs.
    for split in ["train", "test"] {
        let key = format!("{split}/dataset.json");
        let ours: Option<DatasetMetadata> = serde_json::from_value(read_json(out.join(&key))?).ok();
        let theirs: Option<DatasetMetadata> = serde_json::from_value(f.side(&key)?.clone()).ok();
        checks.push(Check::new(
            key,
            ours.is_some() && ours == theirs,
            format!("ours {ours:?}, reference {theirs:?}"),
        ));
    }
    let tp_ok = read_json(out.join("test_puzzles.json"))? == *f.side("test_puzzles.json")?;
    checks.push(Check::new(
        "test_puzzles.json",
        tp_ok,
        if tp_ok { "equal" } else { "differs" },
    ));

    let our_ids: Vec<String> = serde_json::from_value(read_json(out.join("identifiers.json"))?)
        .map_err(|e| DataError::json(out.join("identifiers.json"), e))?;
    let their_ids: Vec<String> = serde_json::from_value(f.side("identifiers.json")?.clone())
        .map_err(|_| ferr("identifiers.json is not a list of strings"))?;
    let per_task = |ids: &[String]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in ids.iter().skip(start as usize) {
            *m.entry(n.split('|').next().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
        m
    };
    let unique = our_ids
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len()
        == our_ids.len();
    let ids_ok = our_ids.len() == their_ids.len()
        && our_ids.iter().take(start as usize).all(|n| n == "<blank>")
        && unique
        && per_task(&our_ids) == per_task(&their_ids);
    checks.push(Check::new(
        "identifiers.json",
        ids_ok,
        format!(
            "{} vs {} identifiers, unique {unique}, puzzles per task equal {}",
            our_ids.len(),
            their_ids.len(),
            per_task(&our_ids) == per_task(&their_ids)
        ),
    ));

    for split in ["train", "test"] {
        let ours = SplitArrays::from_dir(&out.join(split), &mut checks, split)?;
        let theirs = SplitArrays::from_fixture(&f, split)?;
        let (og, tg) = match (ours.groups(&our_ids), theirs.groups(&their_ids)) {
            (Ok(o), Ok(t)) => (o, t),
            (o, t) => {
                let detail = format!("ours: {:?}; reference: {:?}", o.err(), t.err());
                checks.push(Check::new(format!("{split}/indices"), false, detail));
                continue;
            }
        };
        let (os, oe) = structure(&og);
        let (ts, te) = structure(&tg);
        let mut errs = oe;
        errs.extend(te);
        if os != ts {
            errs.push(format!(
                "per task (group size, examples per puzzle): ours {os:?}, reference {ts:?}"
            ));
        }
        checks.push(Check::new(
            format!("{split}/structure"),
            errs.is_empty(),
            summarize(&errs),
        ));

        let e = check_rows(&theirs, &tg, &tasks, split);
        checks.push(Check::new(
            format!("{split}/reference rows regenerated from their names"),
            e.is_empty(),
            summarize(&e),
        ));
        let e = check_rows(&ours, &og, &tasks, split);
        checks.push(Check::new(
            format!("{split}/our rows regenerated from their names"),
            e.is_empty(),
            summarize(&e),
        ));

        // Puzzles present in both builds (always the originals): compare rows directly,
        // exactly for the test split, and the untranslated examples for the train split.
        let index = |g: &[Group]| -> HashMap<String, std::ops::Range<usize>> {
            g.iter().flatten().cloned().collect()
        };
        let (oi, ti) = (index(&og), index(&tg));
        let mut errs = Vec::new();
        let mut common = 0;
        for (name, tr) in &ti {
            let Some(or) = oi.get(name) else { continue };
            common += 1;
            for (a, b) in or.clone().zip(tr.clone()) {
                let untranslated =
                    |arr: &SplitArrays, r| offset_of(arr.row(false, r)) == Some((0, 0));
                let compare =
                    split == "test" || (untranslated(&ours, a) && untranslated(&theirs, b));
                if compare
                    && (ours.row(false, a) != theirs.row(false, b)
                        || ours.row(true, a) != theirs.row(true, b))
                {
                    errs.push(format!("{name}: row {a} (ours) != row {b} (reference)"));
                }
            }
        }
        if common < tasks.len() {
            errs.push(format!(
                "only {common} puzzle names in common, expected at least {}",
                tasks.len()
            ));
        }
        checks.push(Check::new(
            format!("{split}/rows of puzzles in both builds"),
            errs.is_empty(),
            format!("{common} common puzzles; {}", summarize(&errs)),
        ));
    }
    Ok(checks)
}

/// Checks the Rust ARC evaluator against an `arc_eval` fixture: pass@K exactly, the
/// submission and the vote tables; with and without `reference_quirks` (the fixture's blank
/// rows are only trailing padding, so both must agree).
pub fn verify_arc_eval(fixture: &Path) -> Result<Vec<Check>, DataError> {
    let f = Fixture::load(fixture, "arc_eval")?;
    let sidecar = fixture.with_extension("json");
    let to_bytes = |k: &str| -> Result<Vec<u8>, DataError> {
        serde_json::to_vec(f.side(k)?).map_err(|e| DataError::json(&sidecar, e))
    };
    let (ids, tps) = (
        to_bytes("identifiers.json")?,
        to_bytes("test_puzzles.json")?,
    );
    let (_, nb) = f.i32s("num_batches")?;
    let num_batches = nb.first().copied().unwrap_or(0).max(0) as usize;
    let args = f.side("evaluator_args")?;
    let mut base = ArcEvalOptions::default();
    if let Some(k) = args.get("submission_K").and_then(Value::as_u64) {
        base.submission_k = k as usize;
    }
    if let Some(ks) = args.get("pass_Ks").and_then(Value::as_array) {
        base.pass_ks = ks
            .iter()
            .filter_map(Value::as_u64)
            .map(|k| k as usize)
            .collect();
    }
    if let Some(b) = args.get("blank_identifier_id").and_then(Value::as_i64) {
        base.blank_identifier_id = b as i32;
    }

    let mut batches = Vec::new();
    for i in 0..num_batches {
        let g = |k: &str| f.i32s(&format!("batch{i}.{k}")).map(|(_, v)| v);
        batches.push((
            g("inputs")?,
            g("puzzle_identifiers")?,
            g("preds")?,
            f.f32s(&format!("batch{i}.q_halt_logits"))?,
        ));
    }

    let mut checks = Vec::new();
    for quirks in [false, true] {
        let tag = if quirks {
            "reference_quirks"
        } else {
            "default"
        };
        let opts = ArcEvalOptions {
            reference_quirks: quirks,
            ..base.clone()
        };
        let mut ev = ArcEvaluator::from_json(&ids, &sidecar, &tps, &sidecar, opts)?;
        ev.begin_eval();
        for (inputs, pids, preds, q) in &batches {
            ev.update_batch(&ArcEvalBatch {
                inputs,
                puzzle_identifiers: pids,
                preds,
                q_halt_logits: q,
            })?;
        }
        let res = ev.result();
        for (k, v) in &res.pass_at {
            let want = f.f64_scalar(&format!("result.pass@{k}"))?;
            let side = f
                .side("expected_metrics")?
                .get(format!("ARC/pass@{k}"))
                .and_then(Value::as_f64);
            checks.push(Check::new(
                format!("{tag}/pass@{k}"),
                *v == want && side.is_some_and(|s| ulp_close(s, want)),
                format!("ours {v:?}, reference {want:?}"),
            ));
        }
        let ours: Value = serde_json::from_slice(&res.submission_json())
            .map_err(|e| DataError::json(&sidecar, e))?;
        let sub_ok = ours == *f.side("submission.json")?;
        checks.push(Check::new(
            format!("{tag}/submission.json"),
            sub_ok,
            if sub_ok { "equal" } else { "differs" },
        ));

        // Vote tables, keyed "task#i".
        let want = f.side("ranking_per_test_input")?;
        let mut errs = Vec::new();
        let mut compared = 0;
        for (name, tables) in &res.rankings {
            for (i, table) in tables.iter().enumerate() {
                let key = format!("{name}#{i}");
                let Some(w) = want.get(&key).and_then(Value::as_array) else {
                    if !table.is_empty() {
                        errs.push(format!("{key}: reference has no ranking"));
                    }
                    continue;
                };
                compared += 1;
                let same = w.len() == table.len()
                    && w.iter().zip(table).all(|(w, r)| {
                        w.get("pred_hash").and_then(Value::as_str) == Some(r.pred_hash.as_str())
                            && w.get("votes").and_then(Value::as_u64) == Some(r.votes as u64)
                            && w.get("mean_q")
                                .and_then(Value::as_f64)
                                .is_some_and(|q| ulp_close(q, r.mean_q))
                            && w.get("is_correct").and_then(Value::as_bool) == Some(r.is_correct)
                            && w.get("grid") == serde_json::to_value(&r.grid).ok().as_ref()
                    });
                if !same {
                    let ours: Vec<String> = table
                        .iter()
                        .map(|r| {
                            format!(
                                "{}:{}:{:?}:{}:{:?}",
                                &r.pred_hash[..8],
                                r.votes,
                                r.mean_q,
                                r.is_correct,
                                r.grid
                            )
                        })
                        .collect();
                    errs.push(format!(
                        "{key}: vote table differs: ours [{}]",
                        ours.join(", ")
                    ));
                }
            }
        }
        if compared != want.as_object().map_or(0, |m| m.len()) {
            errs.push(format!(
                "compared {compared} tables, reference has {}",
                want.as_object().map_or(0, |m| m.len())
            ));
        }
        checks.push(Check::new(
            format!("{tag}/vote tables"),
            errs.is_empty(),
            summarize(&errs),
        ));
    }
    Ok(checks)
}
