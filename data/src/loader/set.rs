//! The arrays of one set (`{set}__inputs.npy`, ...): memory-mapped inputs and labels,
//! index arrays in memory, every header, shape and index checked when opened.

use crate::error::DataError;
use crate::format::DatasetMetadata;
use crate::npy::{parse_npy_header, NpyDtype, NpyHeader};
use memmap2::Mmap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::HostBatch;
use super::IGNORE_LABEL_ID;

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
pub(crate) struct Layout {
    seq_len: usize,
    num_puzzle_identifiers: i64,
    pad_id: i32,
    ignore_label_id: Option<i64>,
    blank_identifier_id: i32,
}

impl Layout {
    /// Checks the fields of `meta`; `path` is the `dataset.json` named in errors.
    pub(crate) fn check(meta: &DatasetMetadata, path: &Path) -> Result<Layout, DataError> {
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
pub(crate) enum Origin {
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

    pub(crate) fn metadata_path(&self) -> PathBuf {
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
