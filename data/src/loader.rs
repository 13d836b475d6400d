//! Reading a built dataset for training and evaluation: the semantics of the reference
//! `puzzle_dataset.py` (`PuzzleDataset`), seeded and deterministic.
//!
//! * [`PuzzleSet`]: the arrays of one set (`{set}__inputs.npy`, ...). Inputs and labels are
//!   memory-mapped (the reference `np.load(..., mmap_mode="r")`); the index arrays are read
//!   into memory, as in the reference. Every header, shape and index array is checked when
//!   the set is opened. [`PuzzleSet::from_memory`] builds the same type from vectors, so
//!   generated tasks take the same path as files.
//! * [`PuzzleSplit`]: `dataset.json` of a split plus its sets.
//! * [`GroupSampler`]: the training order (reference `_iter_train` / `_sample_batch`): every
//!   epoch walks the groups in a fresh random order, takes one random puzzle per group and
//!   packs its examples into global batches; the last partial batch is dropped. Our own
//!   code, not burn's data loader: exact resume needs the sampler's position as plain state
//!   (`SamplerState`), and the batches must not depend on thread scheduling.
//! * [`test_batches`]: the evaluation order (reference `_iter_test`): all rows in order, the
//!   last batch padded with blank rows.
//! * [`PuzzleSet::gather`] collates rows into a [`HostBatch`] (reference `_collate_batch`),
//!   and [`Prefetch`] runs any batch iterator on a background thread.
//!
//! See `docs/data.md` ("Loading a dataset") for the departures from the reference.

use crate::arc::DatasetMetadata;
use crate::error::DataError;
use crate::npy::{parse_npy_header, NpyDtype, NpyHeader};
use memmap2::Mmap;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The label value the losses ignore (reference `IGNORE_LABEL_ID`).
pub const IGNORE_LABEL_ID: i32 = -100;

// ---------------------------------------------------------------------------------------
// Arrays of one set
// ---------------------------------------------------------------------------------------

/// Token rows held in memory, for [`PuzzleSet::from_memory`]: `rows * seq_len` elements in
/// row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenArray {
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl TokenArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TokenArray::U8(v) => v.len(),
            TokenArray::I32(v) => v.len(),
            TokenArray::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for TokenArray {
    fn from(v: Vec<u8>) -> Self {
        TokenArray::U8(v)
    }
}

impl From<Vec<i32>> for TokenArray {
    fn from(v: Vec<i32>) -> Self {
        TokenArray::I32(v)
    }
}

impl From<Vec<i64>> for TokenArray {
    fn from(v: Vec<i64>) -> Self {
        TokenArray::I64(v)
    }
}

/// The arrays of one set built in memory, with the meaning of the files of the same names.
#[derive(Clone, Debug, PartialEq)]
pub struct PuzzleArrays {
    /// `[rows, seq_len]` input tokens.
    pub inputs: TokenArray,
    /// `[rows, seq_len]` label tokens (`ignore_label_id` where no loss applies).
    pub labels: TokenArray,
    /// `[puzzles]` identifier of each puzzle.
    pub puzzle_identifiers: Vec<i32>,
    /// `[puzzles + 1]`: rows of puzzle `p` are `puzzle_indices[p]..puzzle_indices[p + 1]`.
    pub puzzle_indices: Vec<i32>,
    /// `[groups + 1]`: puzzles of group `g` are `group_indices[g]..group_indices[g + 1]`.
    pub group_indices: Vec<i32>,
}

/// Token storage: a memory map of a `.npy` file, or vectors.
enum Tokens {
    Mapped {
        map: Mmap,
        /// Byte offset of the first element (after the header).
        offset: usize,
        dtype: NpyDtype,
    },
    Owned(TokenArray),
}

impl Tokens {
    /// Copies elements `start..start + out.len()` into `out` as `i32`, replacing the value
    /// `ignore` (when given) by [`IGNORE_LABEL_ID`]. Returns the first value that does not fit
    /// `i32` (only possible for int64 data). The range must be in bounds (callers check rows).
    fn copy_into(&self, start: usize, out: &mut [i32], ignore: Option<i64>) -> Result<(), i64> {
        let n = out.len();
        match self {
            Tokens::Mapped { map, offset, dtype } => {
                let size = dtype.size();
                let bytes = &map[offset + start * size..offset + (start + n) * size];
                match dtype {
                    NpyDtype::U8 => fill(out, bytes.iter().map(|&b| i64::from(b)), ignore),
                    NpyDtype::I32 => fill(
                        out,
                        bytes
                            .chunks_exact(4)
                            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
                        ignore,
                    ),
                    // Only the three integer dtypes are accepted when a set is opened.
                    _ => fill(
                        out,
                        bytes.chunks_exact(8).map(|c| {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(c);
                            i64::from_le_bytes(a)
                        }),
                        ignore,
                    ),
                }
            }
            Tokens::Owned(TokenArray::U8(v)) => fill(
                out,
                v[start..start + n].iter().map(|&x| i64::from(x)),
                ignore,
            ),
            Tokens::Owned(TokenArray::I32(v)) => fill(
                out,
                v[start..start + n].iter().map(|&x| i64::from(x)),
                ignore,
            ),
            Tokens::Owned(TokenArray::I64(v)) => {
                fill(out, v[start..start + n].iter().copied(), ignore)
            }
        }
    }

    /// Elements `start..start + n` widened to `i64` (in bounds, as for `copy_into`).
    fn to_i64(&self, start: usize, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        match self {
            Tokens::Mapped { map, offset, dtype } => {
                let size = dtype.size();
                let bytes = &map[offset + start * size..offset + (start + n) * size];
                out.extend(decode_ints(*dtype, bytes));
            }
            Tokens::Owned(TokenArray::U8(v)) => {
                out.extend(v[start..start + n].iter().map(|&x| i64::from(x)))
            }
            Tokens::Owned(TokenArray::I32(v)) => {
                out.extend(v[start..start + n].iter().map(|&x| i64::from(x)))
            }
            Tokens::Owned(TokenArray::I64(v)) => out.extend_from_slice(&v[start..start + n]),
        }
        out
    }
}

/// Writes `values` into `out` as `i32`, mapping `ignore` to [`IGNORE_LABEL_ID`].
fn fill(
    out: &mut [i32],
    values: impl Iterator<Item = i64>,
    ignore: Option<i64>,
) -> Result<(), i64> {
    for (o, v) in out.iter_mut().zip(values) {
        *o = if Some(v) == ignore {
            IGNORE_LABEL_ID
        } else {
            i32::try_from(v).map_err(|_| v)?
        };
    }
    Ok(())
}

/// Little-endian integer elements widened to `i64` (integer dtypes; floats give nothing,
/// they are rejected before this is called).
fn decode_ints(dtype: NpyDtype, bytes: &[u8]) -> Box<dyn Iterator<Item = i64> + '_> {
    match dtype {
        NpyDtype::U8 => Box::new(bytes.iter().map(|&b| i64::from(b))),
        NpyDtype::I32 => Box::new(
            bytes
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        ),
        NpyDtype::I64 => Box::new(bytes.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            i64::from_le_bytes(a)
        })),
        NpyDtype::F32 | NpyDtype::F64 => Box::new(std::iter::empty()),
    }
}

/// Memory-maps a `.npy` file and checks its header against the file length.
fn map_npy(path: &Path) -> Result<(Mmap, NpyHeader), DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len == 0 {
        return Err(DataError::npy(path, "empty file"));
    }
    // SAFETY: the map is only read. Dataset files are written once by a builder and then
    // only read; like numpy's `mmap_mode="r"`, this assumes no other process truncates or
    // rewrites the file while it is open (that is outside what a reader can guard against).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
    let header = parse_npy_header(&map, path)?;
    Ok((map, header))
}

/// Checks that an array has one of the `allowed` dtypes.
fn check_int_dtype(path: &Path, header: &NpyHeader, allowed: &[NpyDtype]) -> Result<(), DataError> {
    if allowed.contains(&header.dtype) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|d| d.descr()).collect();
    Err(DataError::npy(
        path,
        format!(
            "dtype {} is not supported here (expected one of {})",
            header.dtype.descr(),
            names.join(", ")
        ),
    ))
}

/// Reads a one-dimensional int32 / int64 `.npy` file (the index arrays) into memory.
fn read_index_npy(path: &Path) -> Result<Vec<i64>, DataError> {
    let (map, header) = map_npy(path)?;
    check_int_dtype(path, &header, &[NpyDtype::I32, NpyDtype::I64])?;
    if header.shape.len() != 1 {
        return Err(DataError::npy(
            path,
            format!("shape {:?}: expected one dimension", header.shape),
        ));
    }
    let data = &map[header.data_offset..header.data_offset + header.data_len];
    Ok(decode_ints(header.dtype, data).collect())
}

/// The values of `dataset.json` that loading needs, checked once.
#[derive(Clone, Copy, Debug)]
struct Layout {
    seq_len: usize,
    num_puzzle_identifiers: i64,
    pad_id: i32,
    ignore_label_id: Option<i64>,
    blank_identifier_id: i32,
}

impl Layout {
    /// Checks the fields of `meta`; `path` is the `dataset.json` named in errors.
    fn check(meta: &DatasetMetadata, path: &Path) -> Result<Layout, DataError> {
        let bad = |field: &str, message: String| DataError::dataset(path, field, message);
        let seq_len = usize::try_from(meta.seq_len)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                bad(
                    "seq_len",
                    format!("{} is not a positive length", meta.seq_len),
                )
            })?;
        if !(1..=i64::from(i32::MAX) + 1).contains(&meta.num_puzzle_identifiers) {
            return Err(bad(
                "num_puzzle_identifiers",
                format!(
                    "{} is outside 1..=2^31 (int32 identifiers, blank included)",
                    meta.num_puzzle_identifiers
                ),
            ));
        }
        if !(0..meta.vocab_size).contains(&meta.pad_id) {
            return Err(bad(
                "pad_id",
                format!(
                    "{} is outside the vocabulary 0..{}",
                    meta.pad_id, meta.vocab_size
                ),
            ));
        }
        if !(0..meta.num_puzzle_identifiers).contains(&meta.blank_identifier_id) {
            return Err(bad(
                "blank_identifier_id",
                format!(
                    "{} is outside 0..{} (num_puzzle_identifiers)",
                    meta.blank_identifier_id, meta.num_puzzle_identifiers
                ),
            ));
        }
        if meta.sets.is_empty() {
            return Err(bad("sets", "no sets listed".into()));
        }
        for (i, s) in meta.sets.iter().enumerate() {
            // Names become file name prefixes `{set}__*.npy` inside the split directory.
            if s.is_empty() || s.contains(['/', '\\']) {
                return Err(bad(
                    &format!("sets[{i}]"),
                    format!("{s:?} is not a plain file name prefix"),
                ));
            }
            if meta.sets[..i].contains(s) {
                return Err(bad(&format!("sets[{i}]"), format!("{s:?} is listed twice")));
            }
        }
        // The checks above put both ids in 0..2^31 and pad_id below vocab_size.
        let to_i32 = |v: i64, field: &str| {
            i32::try_from(v).map_err(|_| bad(field, format!("{v} does not fit int32")))
        };
        Ok(Layout {
            seq_len,
            num_puzzle_identifiers: meta.num_puzzle_identifiers,
            pad_id: to_i32(meta.pad_id, "pad_id")?,
            ignore_label_id: meta.ignore_label_id,
            blank_identifier_id: to_i32(meta.blank_identifier_id, "blank_identifier_id")?,
        })
    }
}

/// Where a set comes from, for error messages.
#[derive(Clone, Debug)]
enum Origin {
    Dir(PathBuf),
    Memory,
}

impl Origin {
    /// The file (or, for memory sets, the pseudo-path `<memory>/{set}__{field}`) of a field.
    fn path(&self, set: &str, field: &str) -> PathBuf {
        match self {
            Origin::Dir(d) => d.join(format!("{set}__{field}.npy")),
            Origin::Memory => PathBuf::from(format!("<memory>/{set}__{field}")),
        }
    }

    fn metadata_path(&self) -> PathBuf {
        match self {
            Origin::Dir(d) => d.join("dataset.json"),
            Origin::Memory => PathBuf::from("<memory>/dataset.json"),
        }
    }
}

struct SetInner {
    name: String,
    origin: Origin,
    layout: Layout,
    rows: usize,
    inputs: Tokens,
    labels: Tokens,
    puzzle_identifiers: Vec<i32>,
    puzzle_indices: Vec<usize>,
    group_indices: Vec<usize>,
}

/// The arrays of one set of a split, checked for consistency.
///
/// Cloning is cheap (the arrays are shared), so a set can be handed to a background thread.
#[derive(Clone)]
pub struct PuzzleSet(Arc<SetInner>, Option<Arc<str>>);

impl std::fmt::Debug for PuzzleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PuzzleSet")
            .field("name", &self.name())
            .field("origin", &self.0.origin)
            .field("rows", &self.0.rows)
            .field("puzzles", &self.puzzles())
            .field("groups", &self.groups())
            .field("seq_len", &self.0.layout.seq_len)
            .field("memory_mapped", &self.is_memory_mapped())
            .finish()
    }
}

impl PuzzleSet {
    /// Opens set `name` of the split directory `dir` (which holds `dataset.json`, given here
    /// already parsed as `meta`): maps `{name}__inputs.npy` / `{name}__labels.npy` and reads
    /// the three index arrays, checking dtypes, shapes, file lengths and indices.
    pub fn open(dir: &Path, name: &str, meta: &DatasetMetadata) -> Result<PuzzleSet, DataError> {
        let origin = Origin::Dir(dir.to_path_buf());
        let layout = Layout::check(meta, &origin.metadata_path())?;
        if !meta.sets.iter().any(|s| s == name) {
            return Err(DataError::dataset(
                origin.metadata_path(),
                "sets",
                format!("{:?} does not list set {name:?}", meta.sets),
            ));
        }
        let open_rows = |field: &str| -> Result<(Tokens, Vec<usize>), DataError> {
            let path = origin.path(name, field);
            let (map, header) = map_npy(&path)?;
            check_int_dtype(
                &path,
                &header,
                &[NpyDtype::U8, NpyDtype::I32, NpyDtype::I64],
            )?;
            let tokens = Tokens::Mapped {
                map,
                offset: header.data_offset,
                dtype: header.dtype,
            };
            Ok((tokens, header.shape))
        };
        let (inputs, in_shape) = open_rows("inputs")?;
        let rows = check_row_shape(&origin.path(name, "inputs"), &in_shape, layout.seq_len)?;
        let (labels, lab_shape) = open_rows("labels")?;
        if lab_shape != in_shape {
            return Err(DataError::dataset(
                origin.path(name, "labels"),
                "shape",
                format!("{lab_shape:?} differs from the inputs shape {in_shape:?}"),
            ));
        }
        let index = |field: &str| read_index_npy(&origin.path(name, field));
        let ids = index("puzzle_identifiers")?;
        let puzzle_indices = index("puzzle_indices")?;
        let group_indices = index("group_indices")?;
        Self::assemble(
            name,
            origin,
            layout,
            rows,
            (inputs, labels),
            (ids, puzzle_indices, group_indices),
        )
    }

    /// A set held in memory (e.g. a task generated on the fly), checked like a file set.
    /// `meta` supplies `seq_len`, the pad / ignore / blank ids and the identifier count;
    /// errors name pseudo-paths `<memory>/{name}__{field}`.
    pub fn from_memory(
        name: &str,
        arrays: PuzzleArrays,
        meta: &DatasetMetadata,
    ) -> Result<PuzzleSet, DataError> {
        let origin = Origin::Memory;
        let layout = Layout::check(meta, &origin.metadata_path())?;
        let n = arrays.inputs.len();
        if !n.is_multiple_of(layout.seq_len) {
            return Err(DataError::dataset(
                origin.path(name, "inputs"),
                "length",
                format!(
                    "{n} tokens are not a whole number of rows of seq_len {}",
                    layout.seq_len
                ),
            ));
        }
        if arrays.labels.len() != n {
            return Err(DataError::dataset(
                origin.path(name, "labels"),
                "length",
                format!("{} tokens, the inputs have {n}", arrays.labels.len()),
            ));
        }
        let widen = |v: Vec<i32>| v.into_iter().map(i64::from).collect::<Vec<_>>();
        Self::assemble(
            name,
            origin,
            layout,
            n / layout.seq_len,
            (Tokens::Owned(arrays.inputs), Tokens::Owned(arrays.labels)),
            (
                widen(arrays.puzzle_identifiers),
                widen(arrays.puzzle_indices),
                widen(arrays.group_indices),
            ),
        )
    }

    /// Checks the index arrays against each other and the row count.
    fn assemble(
        name: &str,
        origin: Origin,
        layout: Layout,
        rows: usize,
        (inputs, labels): (Tokens, Tokens),
        (ids, puzzle_indices, group_indices): (Vec<i64>, Vec<i64>, Vec<i64>),
    ) -> Result<PuzzleSet, DataError> {
        let puzzles = ids.len();
        let path_ids = origin.path(name, "puzzle_identifiers");
        let mut puzzle_identifiers = Vec::with_capacity(puzzles);
        for (i, &id) in ids.iter().enumerate() {
            if !(0..layout.num_puzzle_identifiers).contains(&id) {
                return Err(DataError::dataset(
                    &path_ids,
                    format!("puzzle_identifiers[{i}]"),
                    format!(
                        "{id} is outside 0..{} (num_puzzle_identifiers of dataset.json)",
                        layout.num_puzzle_identifiers
                    ),
                ));
            }
            // In 0..num_puzzle_identifiers <= 2^31, so it fits i32.
            puzzle_identifiers.push(id as i32);
        }
        let puzzle_indices = check_offsets(
            &origin.path(name, "puzzle_indices"),
            "puzzle_indices",
            &puzzle_indices,
            (puzzles, "entry of puzzle_identifiers"),
            rows,
            "rows",
        )?;
        let groups = group_indices.len().saturating_sub(1);
        let group_indices = check_offsets(
            &origin.path(name, "group_indices"),
            "group_indices",
            &group_indices,
            (groups, "group"),
            puzzles,
            "puzzles",
        )?;
        Ok(PuzzleSet(
            Arc::new(SetInner {
                name: name.to_string(),
                origin,
                layout,
                rows,
                inputs,
                labels,
                puzzle_identifiers,
                puzzle_indices,
                group_indices,
            }),
            None,
        ))
    }

    /// The set name (`all` for the builders of this crate).
    pub fn name(&self) -> &str {
        self.1.as_deref().unwrap_or(&self.0.name)
    }

    /// The same arrays under another set name (a merged split names the sets of its
    /// second dataset `all1`, as the reference loader does).
    pub fn renamed(&self, name: &str) -> PuzzleSet {
        PuzzleSet(self.0.clone(), Some(name.into()))
    }

    /// Number of examples (rows of the inputs and labels).
    pub fn rows(&self) -> usize {
        self.0.rows
    }

    /// Number of puzzles.
    pub fn puzzles(&self) -> usize {
        self.0.puzzle_identifiers.len()
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        // At least one entry: checked when the set was assembled.
        self.0.group_indices.len() - 1
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        self.0.layout.seq_len
    }

    /// Whether inputs and labels are memory-mapped files (as opposed to vectors).
    pub fn is_memory_mapped(&self) -> bool {
        matches!(self.0.inputs, Tokens::Mapped { .. })
    }

    /// `[puzzles]` identifier of each puzzle.
    pub fn puzzle_identifiers(&self) -> &[i32] {
        &self.0.puzzle_identifiers
    }

    /// `[puzzles + 1]` first row of each puzzle, then the row count.
    pub fn puzzle_indices(&self) -> &[usize] {
        &self.0.puzzle_indices
    }

    /// `[groups + 1]` first puzzle of each group, then the puzzle count.
    pub fn group_indices(&self) -> &[usize] {
        &self.0.group_indices
    }

    /// The puzzle whose rows contain `row` (`None` past the end). Empty puzzles contain no
    /// row, as in the reference `searchsorted(puzzle_indices, row, side="right") - 1`.
    pub fn puzzle_of_row(&self, row: usize) -> Option<usize> {
        if row >= self.0.rows {
            return None;
        }
        // puzzle_indices[0] == 0 <= row, so the partition point is at least 1.
        Some(self.0.puzzle_indices.partition_point(|&s| s <= row) - 1)
    }

    /// The stored input tokens of `row`, as they are on disk (`None` past the end).
    pub fn input_row(&self, row: usize) -> Option<Vec<i64>> {
        (row < self.0.rows).then(|| self.0.inputs.to_i64(row * self.seq_len(), self.seq_len()))
    }

    /// The stored label tokens of `row`, as they are on disk (`None` past the end).
    pub fn label_row(&self, row: usize) -> Option<Vec<i64>> {
        (row < self.0.rows).then(|| self.0.labels.to_i64(row * self.seq_len(), self.seq_len()))
    }

    /// Collates `rows` (with the puzzle identifier of each) into a batch of `pad_to` rows, as
    /// the reference `_collate_batch`: tokens become `i32`, labels equal to `ignore_label_id`
    /// become [`IGNORE_LABEL_ID`], and rows past `rows.len()` are padding (inputs `pad_id`,
    /// labels [`IGNORE_LABEL_ID`], identifier `blank_identifier_id`). `effective` is set to
    /// `rows.len()`; batch iterators overwrite it with the global count.
    pub fn gather(
        &self,
        rows: &[usize],
        puzzle_ids: &[i32],
        pad_to: usize,
    ) -> Result<HostBatch, DataError> {
        let inner = &*self.0;
        let bad =
            |m: String| DataError::InvalidOptions(format!("gather from set '{}': {m}", inner.name));
        if rows.len() != puzzle_ids.len() {
            return Err(bad(format!(
                "{} rows but {} puzzle identifiers",
                rows.len(),
                puzzle_ids.len()
            )));
        }
        if rows.len() > pad_to {
            return Err(bad(format!(
                "{} rows do not fit a batch of {pad_to}",
                rows.len()
            )));
        }
        let l = inner.layout;
        let s = l.seq_len;
        let cells = pad_to
            .checked_mul(s)
            .ok_or_else(|| bad(format!("a batch of {pad_to} rows of {s} tokens overflows")))?;
        let mut inputs = vec![l.pad_id; cells];
        let mut labels = vec![IGNORE_LABEL_ID; cells];
        if let Some((i, id)) = puzzle_ids
            .iter()
            .enumerate()
            .find(|(_, &id)| !(0..l.num_puzzle_identifiers).contains(&i64::from(id)))
        {
            return Err(bad(format!(
                "puzzle identifier {id} (entry {i}) is outside 0..{}",
                l.num_puzzle_identifiers
            )));
        }
        let mut puzzle_identifiers = vec![l.blank_identifier_id; pad_to];
        puzzle_identifiers[..rows.len()].copy_from_slice(puzzle_ids);
        for (i, &r) in rows.iter().enumerate() {
            if r >= inner.rows {
                return Err(bad(format!(
                    "row {r} is past the end ({} rows)",
                    inner.rows
                )));
            }
            let out = i * s..(i + 1) * s;
            let too_big = |field: &str, v: i64| {
                DataError::dataset(
                    inner.origin.path(&inner.name, field),
                    format!("row {r}"),
                    format!("token {v} does not fit int32"),
                )
            };
            inner
                .inputs
                .copy_into(r * s, &mut inputs[out.clone()], None)
                .map_err(|v| too_big("inputs", v))?;
            inner
                .labels
                .copy_into(r * s, &mut labels[out], l.ignore_label_id)
                .map_err(|v| too_big("labels", v))?;
        }
        Ok(HostBatch {
            rows: pad_to,
            seq_len: s,
            inputs,
            labels,
            puzzle_identifiers,
            effective: rows.len(),
        })
    }
}

/// Checks `[rows, seq_len]`; returns the row count.
fn check_row_shape(path: &Path, shape: &[usize], seq_len: usize) -> Result<usize, DataError> {
    match *shape {
        [rows, s] if s == seq_len => Ok(rows),
        [_, s] => Err(DataError::dataset(
            path,
            "shape",
            format!("rows of {s} tokens, dataset.json says seq_len {seq_len}"),
        )),
        _ => Err(DataError::dataset(
            path,
            "shape",
            format!("{shape:?}: expected [rows, seq_len]"),
        )),
    }
}

/// Checks an offsets array (`puzzle_indices` or `group_indices`): `count + 1` entries,
/// starting at 0, non-decreasing, ending at `end` (the number of `what`). `counted` says
/// what `count` counts, for the message.
fn check_offsets(
    path: &Path,
    field: &str,
    values: &[i64],
    (count, counted): (usize, &str),
    end: usize,
    what: &str,
) -> Result<Vec<usize>, DataError> {
    let bad = |f: String, m: String| DataError::dataset(path, f, m);
    if values.len() != count + 1 {
        return Err(bad(
            field.into(),
            format!(
                "{} entries, expected {} (one per {counted}, plus one)",
                values.len(),
                count + 1
            ),
        ));
    }
    if values[0] != 0 {
        return Err(bad(
            format!("{field}[0]"),
            format!("{} instead of 0", values[0]),
        ));
    }
    for i in 1..values.len() {
        if values[i] < values[i - 1] {
            return Err(bad(
                format!("{field}[{i}]"),
                format!(
                    "{} is below the previous entry {} (must not decrease)",
                    values[i],
                    values[i - 1]
                ),
            ));
        }
    }
    let last = values[count];
    if usize::try_from(last).ok() != Some(end) {
        return Err(bad(
            format!("{field}[{count}]"),
            format!("{last}, expected the number of {what} ({end})"),
        ));
    }
    // Non-decreasing from 0 to `end`: every entry is in 0..=end.
    Ok(values.iter().map(|&v| v as usize).collect())
}

// ---------------------------------------------------------------------------------------
// A split
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------

/// A collated batch on the host, ready to become tensors: `[rows, seq_len]` inputs and
/// labels (row-major) and `[rows]` puzzle identifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostBatch {
    /// Rows of this (local) batch, padding included.
    pub rows: usize,
    pub seq_len: usize,
    pub inputs: Vec<i32>,
    /// Labels, with ignored positions (and padding rows) at [`IGNORE_LABEL_ID`].
    pub labels: Vec<i32>,
    pub puzzle_identifiers: Vec<i32>,
    /// Real (non-padding) rows of the *global* batch this batch is a slice of: the
    /// reference `global_effective_batch_size`, by which losses are normalised.
    pub effective: usize,
}

/// Rows `[rank * local, (rank + 1) * local)` of a global batch, `local = global / world`.
/// Errors if the global batch is 0, not divisible by `world`, or `rank >= world`.
pub fn local_range(
    global_batch: usize,
    rank: usize,
    world: usize,
) -> Result<Range<usize>, DataError> {
    if global_batch == 0 {
        return Err(DataError::InvalidOptions("global batch size is 0".into()));
    }
    if world == 0 || rank >= world {
        return Err(DataError::InvalidOptions(format!(
            "rank {rank} is not in a world of {world}"
        )));
    }
    if !global_batch.is_multiple_of(world) {
        return Err(DataError::InvalidOptions(format!(
            "global batch size {global_batch} is not a multiple of the world size {world}"
        )));
    }
    let local = global_batch / world;
    Ok(rank * local..(rank + 1) * local)
}

// ---------------------------------------------------------------------------------------
// Training order
// ---------------------------------------------------------------------------------------

/// Where a [`GroupSampler`] is: `batch` batches of epoch `epoch` have been produced.
/// Saving it with a checkpoint and passing it to [`GroupSampler::resume`] continues with the
/// same batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SamplerState {
    pub epoch: u64,
    pub batch: usize,
}

/// One global training batch: example rows of one set and the puzzle of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalBatch {
    /// Index of the set (in [`PuzzleSplit::sets`]) the rows belong to.
    pub set: usize,
    /// Example rows, `global_batch` of them.
    pub rows: Vec<usize>,
    /// The puzzle each row was taken from.
    pub puzzles: Vec<usize>,
    /// `puzzle_identifiers[puzzle]` of each row.
    pub puzzle_identifiers: Vec<i32>,
    /// The sampler state right after this batch: resuming from it yields the next batch.
    pub state_after: SamplerState,
}

impl GlobalBatch {
    /// The rows and identifiers of `rank` in a world of `world` (see [`local_range`]).
    pub fn local(&self, rank: usize, world: usize) -> Result<(&[usize], &[i32]), DataError> {
        let r = local_range(self.rows.len(), rank, world)?;
        Ok((&self.rows[r.clone()], &self.puzzle_identifiers[r]))
    }
}

/// The walk through one set during one epoch.
struct Walk {
    rng: ChaCha8Rng,
    /// Group order of the epoch.
    order: Vec<usize>,
    /// Next position in `order`.
    next: usize,
}

/// The training sampler (reference `_iter_train` / `_sample_batch`), seeded.
///
/// Per epoch and per set (sets in the order of the split): the groups are permuted with a
/// ChaCha8 generator keyed by (seed, epoch, set index); the walk visits each group once,
/// picks one of its puzzles uniformly and appends `min(puzzle size, room left)` of that
/// puzzle's examples, distinct and in random order, until the global batch is full. A batch
/// never mixes sets. The partial batch at the end of a set's walk is dropped. The sampler is
/// endless: after the last set of an epoch it starts the next epoch.
pub struct GroupSampler {
    sets: Vec<PuzzleSet>,
    global_batch: usize,
    seed: u64,
    epoch: u64,
    /// Batches produced in the current epoch.
    batch: usize,
    /// Set being walked.
    set: usize,
    walk: Walk,
    /// Scratch for drawing rows without replacement.
    scratch: Vec<usize>,
}

/// Puzzles larger than this are sampled with a sparse Fisher-Yates (same draws, same result)
/// instead of materialising all their row offsets.
const DENSE_SAMPLE_MAX: usize = 4096;

impl GroupSampler {
    /// A sampler at the start of epoch 0.
    ///
    /// Errors if `global_batch` is 0, if a set has no group or an empty group, or if some
    /// set cannot fill one batch in every epoch (the sum over its groups of the smallest
    /// puzzle size is below `global_batch`; such a set would be skipped silently, or the
    /// sampler would never produce a batch).
    pub fn new(
        split: &PuzzleSplit,
        global_batch: usize,
        seed: u64,
    ) -> Result<GroupSampler, DataError> {
        GroupSampler::resume(split, global_batch, seed, SamplerState::default())
    }

    /// A sampler continuing from `state` (e.g. [`GlobalBatch::state_after`] of the last batch
    /// trained on). The epoch is replayed from its start, so this costs up to one epoch of
    /// sampling (indices only, no token data). Errors as [`GroupSampler::new`], or if the
    /// epoch of `state` has fewer than `state.batch` batches.
    pub fn resume(
        split: &PuzzleSplit,
        global_batch: usize,
        seed: u64,
        state: SamplerState,
    ) -> Result<GroupSampler, DataError> {
        if global_batch == 0 {
            return Err(DataError::InvalidOptions("global batch size is 0".into()));
        }
        for set in split.sets() {
            check_fills_batch(set, global_batch)?;
        }
        let sets = split.sets().to_vec();
        // A split has at least one set: its metadata was checked to list one.
        let walk = Walk::start(seed, state.epoch, 0, &sets[0]);
        let mut s = GroupSampler {
            sets,
            global_batch,
            seed,
            epoch: state.epoch,
            batch: 0,
            set: 0,
            walk,
            scratch: Vec::new(),
        };
        for done in 0..state.batch {
            if s.next_in_epoch().is_none() {
                return Err(DataError::InvalidOptions(format!(
                    "sampler state {state:?}: epoch {} has only {done} batches of {global_batch}",
                    state.epoch
                )));
            }
        }
        Ok(s)
    }

    /// The current position (what [`GlobalBatch::state_after`] of the last batch said).
    pub fn state(&self) -> SamplerState {
        SamplerState {
            epoch: self.epoch,
            batch: self.batch,
        }
    }

    /// Rows per global batch.
    pub fn global_batch(&self) -> usize {
        self.global_batch
    }

    /// The sets sampled from, in order.
    pub fn sets(&self) -> &[PuzzleSet] {
        &self.sets
    }

    /// The next global batch (moving on to the next epoch when this one is done).
    pub fn next_batch(&mut self) -> GlobalBatch {
        loop {
            if let Some(b) = self.next_in_epoch() {
                return b;
            }
            self.epoch += 1;
            self.batch = 0;
            self.set = 0;
            self.walk = Walk::start(self.seed, self.epoch, 0, &self.sets[0]);
        }
    }

    /// The next batch of the current epoch, or `None` when the epoch is over.
    fn next_in_epoch(&mut self) -> Option<GlobalBatch> {
        loop {
            if let Some(mut b) = self.fill() {
                self.batch += 1;
                b.state_after = self.state();
                return Some(b);
            }
            // The walk of this set ended with a partial batch, dropped as in the reference.
            if self.set + 1 == self.sets.len() {
                return None;
            }
            self.set += 1;
            self.walk = Walk::start(self.seed, self.epoch, self.set, &self.sets[self.set]);
        }
    }

    /// Packs one batch from the current walk (reference `_sample_batch`); `None` if the walk
    /// ends before the batch is full.
    fn fill(&mut self) -> Option<GlobalBatch> {
        let set = &self.sets[self.set];
        let (gi, pi, ids) = (
            set.group_indices(),
            set.puzzle_indices(),
            set.puzzle_identifiers(),
        );
        let size = self.global_batch;
        let mut rows = Vec::with_capacity(size);
        let mut puzzles = Vec::with_capacity(size);
        let mut puzzle_identifiers = Vec::with_capacity(size);
        while rows.len() < size {
            let &g = self.walk.order.get(self.walk.next)?;
            self.walk.next += 1;
            let puzzle = gi[g] + below(&mut self.walk.rng, gi[g + 1] - gi[g]);
            let (start, n) = (pi[puzzle], pi[puzzle + 1] - pi[puzzle]);
            let take = n.min(size - rows.len());
            let before = rows.len();
            sample_without_replacement(&mut self.walk.rng, n, take, &mut self.scratch, &mut rows);
            for r in &mut rows[before..] {
                *r += start;
            }
            puzzles.resize(rows.len(), puzzle);
            puzzle_identifiers.resize(rows.len(), ids[puzzle]);
        }
        Some(GlobalBatch {
            set: self.set,
            rows,
            puzzles,
            puzzle_identifiers,
            state_after: SamplerState::default(),
        })
    }

    /// Collated batches of `rank` in a world of `world`, as an iterator (endless) that can
    /// run inside a [`Prefetch`].
    pub fn into_host_batches(self, rank: usize, world: usize) -> Result<TrainBatches, DataError> {
        let local = local_range(self.global_batch, rank, world)?;
        Ok(TrainBatches {
            sampler: self,
            local,
        })
    }
}

impl Iterator for GroupSampler {
    type Item = GlobalBatch;

    /// Never `None`: the sampler is endless.
    fn next(&mut self) -> Option<GlobalBatch> {
        Some(self.next_batch())
    }
}

impl Walk {
    /// The walk of set `set_index` in `epoch`: a fresh generator and group permutation.
    fn start(seed: u64, epoch: u64, set_index: usize, set: &PuzzleSet) -> Walk {
        let mut rng = epoch_rng(seed, epoch, set_index);
        let mut order: Vec<usize> = (0..set.groups()).collect();
        // Fisher-Yates.
        for i in (1..order.len()).rev() {
            let j = below(&mut rng, i + 1);
            order.swap(i, j);
        }
        Walk {
            rng,
            order,
            next: 0,
        }
    }
}

/// The generator of one (epoch, set): ChaCha8 keyed by the seed, the epoch and the set index
/// (little-endian, bytes 0..8, 8..16 and 16..24; the rest a fixed tag).
fn epoch_rng(seed: u64, epoch: u64, set_index: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&(set_index as u64).to_le_bytes());
    key[24..].copy_from_slice(b"grpsampl");
    ChaCha8Rng::from_seed(key)
}

/// Uniform integer in `0..n` (Lemire's method, unbiased); `n <= 1` gives 0 without a draw.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let n = n as u64;
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(n);
        if (m as u64) >= threshold {
            return (m >> 64) as usize;
        }
    }
}

/// Appends `k` distinct values of `0..n` in random order to `out` (the reference
/// `np.random.choice(n, k, replace=False)`): a partial Fisher-Yates from the front. Large `n`
/// keeps only the displaced entries in a map; the draws and the result are the same.
fn sample_without_replacement(
    rng: &mut ChaCha8Rng,
    n: usize,
    k: usize,
    scratch: &mut Vec<usize>,
    out: &mut Vec<usize>,
) {
    let k = k.min(n);
    if n <= DENSE_SAMPLE_MAX {
        scratch.clear();
        scratch.extend(0..n);
        for i in 0..k {
            let j = i + below(rng, n - i);
            scratch.swap(i, j);
            out.push(scratch[i]);
        }
    } else {
        let mut displaced: HashMap<usize, usize> = HashMap::with_capacity(2 * k);
        for i in 0..k {
            let j = i + below(rng, n - i);
            let at_j = displaced.get(&j).copied().unwrap_or(j);
            let at_i = displaced.get(&i).copied().unwrap_or(i);
            displaced.insert(j, at_i);
            out.push(at_j);
        }
    }
}

/// Errors unless every epoch can fill at least one batch from `set` (see
/// [`GroupSampler::new`]).
fn check_fills_batch(set: &PuzzleSet, global_batch: usize) -> Result<(), DataError> {
    let (gi, pi) = (set.group_indices(), set.puzzle_indices());
    let bad = |m: String| DataError::InvalidOptions(format!("set '{}': {m}", set.name()));
    if set.groups() == 0 {
        return Err(bad("no groups to sample from".into()));
    }
    let (mut least, mut most) = (0usize, 0usize);
    for g in 0..set.groups() {
        if gi[g] == gi[g + 1] {
            return Err(bad(format!(
                "group {g} has no puzzles (group_indices[{g}] == group_indices[{}])",
                g + 1
            )));
        }
        let sizes = (gi[g]..gi[g + 1]).map(|p| pi[p + 1] - pi[p]);
        let (lo, hi) = sizes.fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
        least += lo;
        most += hi;
    }
    if least < global_batch {
        return Err(bad(format!(
            "one epoch is only sure to yield {least} rows (at most {most}), fewer than the global batch size {global_batch}"
        )));
    }
    Ok(())
}

/// Collated training batches of one rank: see [`GroupSampler::into_host_batches`].
pub struct TrainBatches {
    sampler: GroupSampler,
    local: Range<usize>,
}

/// One collated training batch with the sampler state to resume after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainBatch {
    /// Index of the set the rows come from.
    pub set: usize,
    /// Save this with a checkpoint taken after training on this batch.
    pub state_after: SamplerState,
    pub batch: HostBatch,
}

impl TrainBatches {
    /// The sampler (its state is that of the last batch produced, which with a [`Prefetch`]
    /// is ahead of the last batch consumed: use [`TrainBatch::state_after`] instead).
    pub fn sampler(&self) -> &GroupSampler {
        &self.sampler
    }
}

impl Iterator for TrainBatches {
    type Item = Result<TrainBatch, DataError>;

    /// Never `None`; an error only for data that cannot be converted (int64 tokens beyond
    /// int32).
    fn next(&mut self) -> Option<Self::Item> {
        let g = self.sampler.next_batch();
        let r = self.local.clone();
        let set = &self.sampler.sets[g.set];
        let host = set.gather(
            &g.rows[r.clone()],
            &g.puzzle_identifiers[r.clone()],
            r.len(),
        );
        Some(host.map(|mut batch| {
            batch.effective = g.rows.len();
            TrainBatch {
                set: g.set,
                state_after: g.state_after,
                batch,
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation order
// ---------------------------------------------------------------------------------------

/// Sequential batches of all rows of `set` (reference `_iter_test`): global batch `b` covers
/// rows `b * global_batch..min((b + 1) * global_batch, rows)`; `rank` gets its slice
/// (see [`local_range`]) padded to `global_batch / world` rows with blank rows, and
/// `effective` is the number of real rows of the global batch. Every rank gets the same
/// number of batches, `ceil(rows / global_batch)`.
pub fn test_batches(
    set: &PuzzleSet,
    global_batch: usize,
    rank: usize,
    world: usize,
) -> Result<TestBatches, DataError> {
    let local = local_range(global_batch, rank, world)?;
    Ok(TestBatches {
        set: set.clone(),
        global_batch,
        local,
        start: 0,
    })
}

/// The iterator of [`test_batches`].
pub struct TestBatches {
    set: PuzzleSet,
    global_batch: usize,
    local: Range<usize>,
    /// First row of the next global batch.
    start: usize,
}

impl TestBatches {
    /// Number of global batches left.
    fn remaining(&self) -> usize {
        // `start` passes the row count after the last batch.
        self.set
            .rows()
            .saturating_sub(self.start)
            .div_ceil(self.global_batch)
    }
}

impl Iterator for TestBatches {
    type Item = Result<HostBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let total = self.set.rows();
        if self.start >= total {
            return None;
        }
        let end = total.min(self.start + self.global_batch);
        let lo = (self.start + self.local.start).min(end);
        let hi = (self.start + self.local.end).min(end);
        let rows: Vec<usize> = (lo..hi).collect();
        let mut ids = Vec::with_capacity(rows.len());
        if let Some(mut p) = self.set.puzzle_of_row(lo) {
            let pi = self.set.puzzle_indices();
            let all_ids = self.set.puzzle_identifiers();
            for &r in &rows {
                // Rows are in order: step to the puzzle containing r (skipping empty ones).
                while pi[p + 1] <= r {
                    p += 1;
                }
                ids.push(all_ids[p]);
            }
        }
        let effective = end - self.start;
        self.start += self.global_batch;
        Some(self.set.gather(&rows, &ids, self.local.len()).map(|mut b| {
            b.effective = effective;
            b
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n, Some(n))
    }
}

impl ExactSizeIterator for TestBatches {}

// ---------------------------------------------------------------------------------------
// Prefetching
// ---------------------------------------------------------------------------------------

/// Runs an iterator on a background thread, keeping up to `depth` items ready in a bounded
/// channel, so that gathering rows overlaps with the work of the consumer.
///
/// Items arrive in the order of the iterator. Dropping the `Prefetch` stops the thread: its
/// next send fails, it returns, and the drop joins it (it finishes the item it is computing
/// first). A panic in the producer is not swallowed: the consumer gets one
/// `Err(DataError::LoaderPanicked(message))` after the items sent before it, then `None`.
pub struct Prefetch<T> {
    rx: Option<Receiver<Result<T, DataError>>>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Prefetches the items of `iter`.
    pub fn new<I>(iter: I, depth: usize) -> Result<Prefetch<T>, DataError>
    where
        I: Iterator<Item = T> + Send + 'static,
    {
        Prefetch::new_fallible(iter.map(Ok), depth)
    }

    /// Prefetches an iterator of results (such as [`TrainBatches`] or [`TestBatches`]); the
    /// items come out flattened: `Ok(item)` or the iterator's own error.
    pub fn new_fallible<I>(iter: I, depth: usize) -> Result<Prefetch<T>, DataError>
    where
        I: Iterator<Item = Result<T, DataError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(depth);
        let handle = std::thread::Builder::new()
            .name("recursa-prefetch".into())
            .spawn(move || produce(iter, tx))
            .map_err(|e| DataError::io("<prefetch thread>", e))?;
        Ok(Prefetch {
            rx: Some(rx),
            handle: Some(handle),
        })
    }
}

/// The producer loop: stops at the end of `iter` or when the consumer is gone.
fn produce<T, I: Iterator<Item = Result<T, DataError>>>(
    iter: I,
    tx: SyncSender<Result<T, DataError>>,
) {
    for item in iter {
        if tx.send(item).is_err() {
            return;
        }
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = Result<T, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rx = self.rx.as_ref()?;
        if let Ok(item) = rx.recv() {
            return Some(item);
        }
        // The sender is gone: the producer finished or panicked.
        self.rx = None;
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(()) => None,
            Err(payload) => Some(Err(DataError::LoaderPanicked(panic_message(
                payload.as_ref(),
            )))),
        }
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Closing the channel first makes a send blocked on a full channel fail.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            // A panic here was already printed by the panic hook, and a drop cannot return it.
            let _ = h.join();
        }
    }
}

/// The message of a panic payload (`&str` or `String`, the two `panic!` produces).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_and_dense_sampling_agree() {
        // The two paths of sample_without_replacement make the same draws and the same picks.
        for (n, k) in [(10, 10), (5000, 7), (DENSE_SAMPLE_MAX + 1, 300)] {
            let mut dense_rng = epoch_rng(1, 2, 3);
            let mut sparse_rng = epoch_rng(1, 2, 3);
            let mut dense = Vec::new();
            let mut scratch: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + below(&mut dense_rng, n - i);
                scratch.swap(i, j);
                dense.push(scratch[i]);
            }
            let mut sparse = Vec::new();
            sample_without_replacement(&mut sparse_rng, n, k, &mut Vec::new(), &mut sparse);
            assert_eq!(dense, sparse, "n={n} k={k}");
            let mut sorted = sparse.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), k);
            assert!(sorted.iter().all(|&x| x < n));
        }
    }

    #[test]
    fn below_is_in_range_and_covers() {
        let mut rng = epoch_rng(0, 0, 0);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let x = below(&mut rng, 7);
            seen[x] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(below(&mut rng, 1), 0);
    }
}
