//! One split (`train` or `test`) of a dataset: its `dataset.json` and its sets.

use crate::error::DataError;
use crate::format::DatasetMetadata;
use std::path::{Path, PathBuf};

use super::set::{Layout, Origin, PuzzleArrays, PuzzleSet, TokenArray};

/// One split (`train` or `test`) of a dataset: its `dataset.json` and its sets, in the order
/// of `metadata.sets`.
#[derive(Clone, Debug)]
pub struct PuzzleSplit {
    metadata: DatasetMetadata,
    sets: Vec<PuzzleSet>,
}

impl PuzzleSplit {
    /// Opens `dataset_dir/split` (`split` is `train` or `test`, or any directory name).
    pub fn open(dataset_dir: &Path, split: &str) -> Result<PuzzleSplit, DataError> {
        let dir = dataset_dir.join(split);
        let meta_path = dir.join("dataset.json");
        let bytes = std::fs::read(&meta_path).map_err(|e| DataError::io(&meta_path, e))?;
        let metadata: DatasetMetadata =
            serde_json::from_slice(&bytes).map_err(|e| DataError::json(&meta_path, e))?;
        Layout::check(&metadata, &meta_path)?;
        let sets = metadata
            .sets
            .iter()
            .map(|s| PuzzleSet::open(&dir, s, &metadata))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PuzzleSplit { metadata, sets })
    }

    /// A split held in memory; `sets` must be named as `metadata.sets`, in that order.
    pub fn from_memory(
        metadata: DatasetMetadata,
        sets: Vec<(String, PuzzleArrays)>,
    ) -> Result<PuzzleSplit, DataError> {
        let meta_path = Origin::Memory.metadata_path();
        Layout::check(&metadata, &meta_path)?;
        let names: Vec<&str> = sets.iter().map(|(n, _)| n.as_str()).collect();
        if names != metadata.sets {
            return Err(DataError::dataset(
                meta_path,
                "sets",
                format!(
                    "{:?}, but the arrays given are for {names:?}",
                    metadata.sets
                ),
            ));
        }
        let sets = sets
            .into_iter()
            .map(|(n, a)| PuzzleSet::from_memory(&n, a, &metadata))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PuzzleSplit { metadata, sets })
    }

    /// Several datasets' split `split` as one, as the reference's `data_paths` merges
    /// them: the first dataset's sets keep their names and the i-th's get `i` appended
    /// (`all`, `all1`, ...; set-major order, as the reference iterates them); the
    /// layouts, sets and identifier counts must agree. Groups, puzzles and identifier
    /// counts add up (the puzzle table is sized by the sum, as the reference's) and the
    /// mean examples per puzzle is the puzzle-weighted mean. Identifiers are not
    /// renumbered: datasets built with one identifier map (`identifiers.json`) share it.
    pub fn open_merged(dataset_dirs: &[PathBuf], split: &str) -> Result<PuzzleSplit, DataError> {
        let splits = dataset_dirs
            .iter()
            .map(|d| PuzzleSplit::open(d, split))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = splits.first() else {
            return Err(DataError::InvalidOptions(
                "no dataset directories given".into(),
            ));
        };
        if splits.len() == 1 {
            return Ok(first.clone());
        }
        let mut meta = first.metadata.clone();
        let (mut puzzles, mut examples, mut groups, mut ids) = (0, 0.0, 0, 0);
        for (dir, s) in dataset_dirs.iter().zip(&splits) {
            let m = &s.metadata;
            let path = dir.join(split).join("dataset.json");
            let differs = |field: &str, mine: String, first: String| {
                DataError::dataset(
                    path.clone(),
                    field,
                    format!(
                        "{mine}, but {} has {first}; merged datasets must agree",
                        dataset_dirs[0].join(split).join("dataset.json").display()
                    ),
                )
            };
            let f = &first.metadata;
            for (field, mine, theirs) in [
                ("seq_len", m.seq_len, f.seq_len),
                ("vocab_size", m.vocab_size, f.vocab_size),
                ("pad_id", m.pad_id, f.pad_id),
                (
                    "blank_identifier_id",
                    m.blank_identifier_id,
                    f.blank_identifier_id,
                ),
                (
                    "num_puzzle_identifiers",
                    m.num_puzzle_identifiers,
                    f.num_puzzle_identifiers,
                ),
            ] {
                if mine != theirs {
                    return Err(differs(field, mine.to_string(), theirs.to_string()));
                }
            }
            if m.ignore_label_id != f.ignore_label_id {
                return Err(differs(
                    "ignore_label_id",
                    format!("{:?}", m.ignore_label_id),
                    format!("{:?}", f.ignore_label_id),
                ));
            }
            if m.sets != f.sets {
                return Err(differs(
                    "sets",
                    format!("{:?}", m.sets),
                    format!("{:?}", f.sets),
                ));
            }
            puzzles += m.total_puzzles;
            examples += m.mean_puzzle_examples * m.total_puzzles as f64;
            groups += m.total_groups;
            ids += m.num_puzzle_identifiers;
        }
        meta.total_puzzles = puzzles;
        meta.total_groups = groups;
        meta.num_puzzle_identifiers = ids;
        meta.mean_puzzle_examples = examples / puzzles.max(1) as f64;
        let mut sets = Vec::new();
        for (k, name) in first.metadata.sets.iter().enumerate() {
            for (i, s) in splits.iter().enumerate() {
                let alias = if i == 0 {
                    name.clone()
                } else {
                    format!("{name}{i}")
                };
                sets.push(s.sets[k].renamed(&alias));
            }
        }
        meta.sets = sets.iter().map(|s| s.name().to_string()).collect();
        Ok(PuzzleSplit {
            metadata: meta,
            sets,
        })
    }

    /// The puzzles whose identifier `keep` accepts, in memory, with their groups (a group
    /// with none left is dropped) and every row of each; identifiers are not renumbered,
    /// so the puzzle table of a model trained on `self` still fits; sets left empty are
    /// dropped. For test-time fine-tuning on chosen tasks. Errors if nothing is left.
    pub fn keep_puzzles(&self, keep: impl Fn(i32) -> bool) -> Result<PuzzleSplit, DataError> {
        let mut sets = Vec::new();
        let (mut total_groups, mut total_puzzles, mut total_rows) = (0, 0, 0);
        for set in &self.sets {
            let (ids, puzzle_indices, group_indices) = (
                set.puzzle_identifiers(),
                set.puzzle_indices(),
                set.group_indices(),
            );
            let mut a = PuzzleArrays {
                inputs: TokenArray::I64(Vec::new()),
                labels: TokenArray::I64(Vec::new()),
                puzzle_identifiers: Vec::new(),
                puzzle_indices: vec![0],
                group_indices: vec![0],
            };
            let (mut inputs, mut labels) = (Vec::new(), Vec::new());
            for g in 0..set.groups() {
                let before = a.puzzle_identifiers.len();
                for p in group_indices[g]..group_indices[g + 1] {
                    if !keep(ids[p]) {
                        continue;
                    }
                    for row in puzzle_indices[p]..puzzle_indices[p + 1] {
                        // Rows below `rows()` exist: puzzle_indices was checked on load.
                        inputs.extend(set.input_row(row).unwrap_or_default());
                        labels.extend(set.label_row(row).unwrap_or_default());
                    }
                    a.puzzle_identifiers.push(ids[p]);
                    a.puzzle_indices.push((inputs.len() / set.seq_len()) as i32);
                }
                if a.puzzle_identifiers.len() > before {
                    a.group_indices.push(a.puzzle_identifiers.len() as i32);
                }
            }
            if a.puzzle_identifiers.is_empty() {
                // A set with none of the tasks is left out (the sampler walks sets in turn).
                continue;
            }
            total_groups += a.group_indices.len() - 1;
            total_puzzles += a.puzzle_identifiers.len();
            total_rows += inputs.len() / set.seq_len();
            a.inputs = TokenArray::I64(inputs);
            a.labels = TokenArray::I64(labels);
            sets.push((set.name().to_string(), a));
        }
        if total_puzzles == 0 {
            return Err(DataError::InvalidOptions(
                "no puzzle of the split belongs to the chosen tasks".into(),
            ));
        }
        let mut metadata = self.metadata.clone();
        metadata.sets = sets.iter().map(|(name, _)| name.clone()).collect();
        metadata.total_groups = total_groups as i64;
        metadata.total_puzzles = total_puzzles as i64;
        metadata.mean_puzzle_examples = total_rows as f64 / total_puzzles as f64;
        PuzzleSplit::from_memory(metadata, sets)
    }

    /// The split's `dataset.json`.
    pub fn metadata(&self) -> &DatasetMetadata {
        &self.metadata
    }

    /// The sets, in the order of `metadata().sets`.
    pub fn sets(&self) -> &[PuzzleSet] {
        &self.sets
    }

    /// The set called `name`.
    pub fn set(&self, name: &str) -> Option<&PuzzleSet> {
        self.sets.iter().find(|s| s.name() == name)
    }
}
