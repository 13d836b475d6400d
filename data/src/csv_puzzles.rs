//! Shared plumbing of the single-example puzzle datasets (Sudoku, Maze, N-Queens):
//!
//! * the reference CSV schema `source,question,answer,rating` (reader and atomic writer), used
//!   by `dataset/build_sudoku_dataset.py` and `dataset/build_maze_dataset.py`;
//! * a writer of the reference on-disk format for puzzles made of exactly one fixed-length
//!   example (`train/` and `test/` with `dataset.json` and `all__*.npy`, `identifiers.json`),
//!   written into a temporary directory that is renamed at the end, like [`crate::arc`].
//!
//! The temporary directory, the output check and the JSON writer are the ARC builder's.
//!
//! CSV dialect (read with the `csv` crate): comma-separated, optional double-quote quoting
//! with `""` as an escaped quote (as Python's `csv` module reads and writes by default), `\n`
//! or `\r\n` line ends. The reader
//! never panics, whatever the bytes; every error names the file, the 1-based row (the header is
//! row 1; a row is the physical line where a record starts) and the field.

pub(crate) use crate::atomic::check_output_free;
use crate::atomic::TempDir;
use crate::error::DataError;
use crate::format::{write_json, DatasetMetadata, SplitSummary};
use crate::npy::{write_npy_i32, NpyDtype, NpyWriter};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The column names of the reference CSV files, in order.
pub const CSV_COLUMNS: [&str; 4] = ["source", "question", "answer", "rating"];

/// Which puzzle a CSV file holds; decides the length and alphabet checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PuzzleKind {
    /// Sudoku of side 4, 6 or 9 (16, 36 or 81 characters). Question: `.` or `0` for a blank,
    /// `1..=n` for a given; answer: `1..=n` only, and it must agree with every given.
    Sudoku,
    /// A square maze (`n * n` characters), both fields from the reference alphabet `# SGo`.
    Maze,
}

/// The maze alphabet of the reference (`CHARSET`); token of `CHARSET[i]` is `i + 1`.
pub const MAZE_CHARSET: &[u8; 5] = b"# SGo";

/// One validated CSV record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PuzzleRecord {
    /// 1-based row of the record in its file (the header is row 1).
    pub row: usize,
    /// The `source` column (free text).
    pub source: String,
    /// The puzzle, one character per cell, row-major.
    pub question: String,
    /// The solution, same length as `question`.
    pub answer: String,
    /// The `rating` column (Sudoku-Extreme: a difficulty; generated Sudoku: solver guesses;
    /// generated mazes: shortest-path length).
    pub rating: i64,
}

/// Builds the error of one CSV field. `DataError` has no CSV variant yet, so this reuses
/// `InvalidGrid` with `task` = `row N`: the message reads `FILE: task row N, FIELD: ...`.
fn field_error(path: &Path, row: usize, field: &str, message: impl Into<String>) -> DataError {
    DataError::InvalidGrid {
        path: path.to_path_buf(),
        task: format!("row {row}"),
        field: field.to_string(),
        message: message.into(),
    }
}

/// Reads and validates a puzzle CSV file.
pub fn read_puzzle_csv(path: &Path, kind: PuzzleKind) -> Result<Vec<PuzzleRecord>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_puzzle_csv(&bytes, path, kind)
}

/// Parses and validates puzzle CSV bytes; `path` is only used in messages. Never panics.
///
/// The header must name the four columns `source,question,answer,rating` (any order; extra
/// columns are ignored), every record must have as many fields as the header, and every
/// record must have the cell count of the first one (the reference reshapes all rows to the
/// first row's size). Empty lines are skipped (the reference would crash on them).
pub fn parse_puzzle_csv(
    bytes: &[u8],
    path: &Path,
    kind: PuzzleKind,
) -> Result<Vec<PuzzleRecord>, DataError> {
    // A UTF-8 byte-order mark (spreadsheet exports) is not part of the first column name.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let records = split_csv(bytes, path)?;
    let mut iter = records.into_iter();
    let header = iter
        .next()
        .ok_or_else(|| field_error(path, 1, "header", "empty file (no header line)"))?;
    let columns = header_columns(&header, path)?;
    let mut out = Vec::new();
    let mut cells: Option<usize> = None;
    for rec in iter {
        let r = record_from_fields(&rec, &columns, header.fields.len(), path)?;
        let expected = *cells.get_or_insert(r.question.len());
        validate_record(&r, kind, expected, path)?;
        out.push(r);
    }
    Ok(out)
}

/// One raw CSV record: its starting row and its fields as bytes.
struct RawRecord {
    row: usize,
    fields: Vec<Vec<u8>>,
}

/// Splits CSV bytes into records with the `csv` crate (quotes, `""`, `\r\n`; empty
/// lines yield no record). Field counts are checked by the caller, naming the row.
fn split_csv(bytes: &[u8], path: &Path) -> Result<Vec<RawRecord>, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let line = |p: Option<&csv::Position>| p.map_or(0, |p| p.line() as usize);
    let mut records = Vec::new();
    for rec in reader.byte_records() {
        let rec =
            rec.map_err(|e| field_error(path, line(e.position()), "record", e.to_string()))?;
        records.push(RawRecord {
            row: line(rec.position()),
            fields: rec.iter().map(<[u8]>::to_vec).collect(),
        });
    }
    Ok(records)
}

/// Positions of the four required columns in the header.
fn header_columns(header: &RawRecord, path: &Path) -> Result<[usize; 4], DataError> {
    let mut pos = [0usize; 4];
    for (slot, name) in pos.iter_mut().zip(CSV_COLUMNS) {
        *slot = header
            .fields
            .iter()
            .position(|f| f.as_slice() == name.as_bytes())
            .ok_or_else(|| {
                field_error(
                    path,
                    header.row,
                    "header",
                    format!(
                        "missing column {name:?} (expected header {})",
                        CSV_COLUMNS.join(",")
                    ),
                )
            })?;
    }
    Ok(pos)
}

/// Converts one raw record to text fields and parses the rating.
fn record_from_fields(
    rec: &RawRecord,
    columns: &[usize; 4],
    width: usize,
    path: &Path,
) -> Result<PuzzleRecord, DataError> {
    if rec.fields.len() != width {
        return Err(field_error(
            path,
            rec.row,
            "record",
            format!(
                "has {} field(s), the header has {width} (missing or extra column)",
                rec.fields.len()
            ),
        ));
    }
    let text = |k: usize| -> Result<String, DataError> {
        // `columns[k] < width == fields.len()` was checked above.
        String::from_utf8(rec.fields[columns[k]].clone())
            .map_err(|_| field_error(path, rec.row, CSV_COLUMNS[k], "not valid UTF-8"))
    };
    let rating_text = text(3)?;
    let rating = rating_text.trim().parse::<i64>().map_err(|_| {
        field_error(
            path,
            rec.row,
            "rating",
            format!("{rating_text:?} is not an integer"),
        )
    })?;
    Ok(PuzzleRecord {
        row: rec.row,
        source: text(0)?,
        question: text(1)?,
        answer: text(2)?,
        rating,
    })
}

/// Checks lengths and alphabets of one record; `cells` is the cell count of the first record.
fn validate_record(
    r: &PuzzleRecord,
    kind: PuzzleKind,
    cells: usize,
    path: &Path,
) -> Result<(), DataError> {
    let err = |field: &str, m: String| field_error(path, r.row, field, m);
    let side = square_side(cells);
    for (field, value) in [("question", &r.question), ("answer", &r.answer)] {
        let len = value.len();
        match kind {
            PuzzleKind::Sudoku if !matches!(len, 16 | 36 | 81) => {
                return Err(err(
                    field,
                    format!("{len} characters; a Sudoku has 16, 36 or 81 (4x4, 6x6, 9x9)"),
                ))
            }
            PuzzleKind::Maze if square_side(len).is_none() => {
                return Err(err(
                    field,
                    format!("{len} characters is not a square number of cells"),
                ))
            }
            _ if len != cells => {
                return Err(err(
                    field,
                    format!("{len} characters, the first record has {cells}"),
                ))
            }
            _ => {}
        }
    }
    let side = side.unwrap_or(0);
    match kind {
        PuzzleKind::Sudoku => validate_sudoku_chars(r, side, path),
        PuzzleKind::Maze => {
            for (field, value) in [("question", &r.question), ("answer", &r.answer)] {
                if let Some((i, c)) = value
                    .bytes()
                    .enumerate()
                    .find(|(_, c)| !MAZE_CHARSET.contains(c))
                {
                    return Err(err(
                        field,
                        format!(
                            "character {:?} at cell {i} is not one of \"# SGo\"",
                            char::from(c)
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Sudoku alphabet: question `.`/`0`/`1..=n`, answer `1..=n` agreeing with every given.
/// (The agreement check is stricter than the reference, which does not look at it.)
fn validate_sudoku_chars(r: &PuzzleRecord, n: usize, path: &Path) -> Result<(), DataError> {
    let max = b'0' + n as u8;
    let err = |field: &str, m: String| field_error(path, r.row, field, m);
    for (i, (q, a)) in r.question.bytes().zip(r.answer.bytes()).enumerate() {
        if !(q == b'.' || (b'0'..=max).contains(&q)) {
            return Err(err(
                "question",
                format!(
                    "character {:?} at cell {i} is not '.', '0' or a digit 1-{n}",
                    char::from(q)
                ),
            ));
        }
        if !(b'1'..=max).contains(&a) {
            return Err(err(
                "answer",
                format!(
                    "character {:?} at cell {i} is not a digit 1-{n}",
                    char::from(a)
                ),
            ));
        }
        if q != b'.' && q != b'0' && q != a {
            return Err(err(
                "answer",
                format!(
                    "cell {i} is {:?} but the question gives {:?}",
                    char::from(a),
                    char::from(q)
                ),
            ));
        }
    }
    Ok(())
}

/// `Some(n)` if `cells == n * n`.
pub fn square_side(cells: usize) -> Option<usize> {
    let n = (cells as f64).sqrt().round() as usize;
    (n * n == cells).then_some(n)
}

/// Quotes a CSV field when it contains a comma, a quote or a line break (Python's
/// `QUOTE_MINIMAL`).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Writes records as CSV (header first) to `out` atomically: the text goes to a hidden
/// temporary sibling that is then hard-linked to `out`, which fails if `out` exists, so an
/// existing file is never replaced. Rows are written in the order given; `row` is ignored.
pub fn write_puzzle_csv(out: &Path, records: &[PuzzleRecord]) -> Result<(), DataError> {
    check_output_free(out)?;
    let mut text = String::with_capacity(records.len() * 200 + 32);
    text.push_str(&CSV_COLUMNS.join(","));
    text.push('\n');
    for r in records {
        let line = format!(
            "{},{},{},{}\n",
            csv_field(&r.source),
            csv_field(&r.question),
            csv_field(&r.answer),
            r.rating
        );
        text.push_str(&line);
    }
    write_file_atomic(out, text.as_bytes())
}

/// Writes `bytes` to `out`, which must not exist.
fn write_file_atomic(out: &Path, bytes: &[u8]) -> Result<(), DataError> {
    crate::atomic::write_new_atomic(out, bytes)
}

// ---------------------------------------------------------------------------------------
// The reference on-disk format for single-example puzzles
// ---------------------------------------------------------------------------------------

/// What a puzzle builder produced.
#[derive(Clone, Debug, Serialize)]
pub struct BuildSummary {
    /// The output directory.
    pub out: PathBuf,
    /// Train split counts (groups = source puzzles, puzzles = examples = groups x (1 + aug)).
    pub train: SplitSummary,
    /// Test split counts (all zero when there is no test split).
    pub test: SplitSummary,
    /// Tokens per example (`seq_len` of `dataset.json`).
    pub seq_len: usize,
    /// `vocab_size` of `dataset.json`, PAD included.
    pub vocab_size: usize,
    /// Test questions that also occur, un-augmented, among the train questions (a leak check;
    /// the reference does not look).
    pub test_in_train: usize,
    /// Wall time of the whole build.
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The ARC builder's temporary output directory, plus the `identifiers.json` every
/// puzzle dataset gets on commit.
pub(crate) struct TempOutput {
    pub(crate) path: PathBuf,
    dir: TempDir,
}

impl TempOutput {
    /// Creates a hidden temporary directory next to `out`; fails if `out` exists.
    pub(crate) fn next_to(out: &Path) -> Result<TempOutput, DataError> {
        check_output_free(out)?;
        let dir = TempDir::next_to(out)?;
        Ok(TempOutput {
            path: dir.path.clone(),
            dir,
        })
    }

    /// Writes `identifiers.json` (`["<blank>"]`: these builders use only the blank id, as the
    /// reference) and renames the directory to `out` unless `out` appeared meanwhile.
    pub(crate) fn commit(self, out: &Path) -> Result<(), DataError> {
        write_json(&self.path.join("identifiers.json"), &["<blank>"])?;
        self.dir.commit(out)
    }
}

/// Streams one split of single-example puzzles to `all__*.npy` files.
///
/// Every puzzle has exactly one example and identifier 0 (the reference Sudoku / Maze
/// builders); a group is a source puzzle with its augmentations.
pub(crate) struct SplitWriter {
    dir: PathBuf,
    seq_len: usize,
    inputs: NpyWriter,
    labels: NpyWriter,
    group_indices: Vec<i32>,
    examples: usize,
}

impl SplitWriter {
    /// Creates `root/split/` and its row files.
    pub(crate) fn create(root: &Path, split: &str, seq_len: usize) -> Result<Self, DataError> {
        let dir = root.join(split);
        std::fs::create_dir(&dir).map_err(|e| DataError::io(&dir, e))?;
        let open = |k: &str| {
            NpyWriter::create_rows(&dir.join(format!("all__{k}.npy")), NpyDtype::U8, &[seq_len])
        };
        Ok(SplitWriter {
            inputs: open("inputs")?,
            labels: open("labels")?,
            dir,
            seq_len,
            group_indices: vec![0],
            examples: 0,
        })
    }

    /// Appends one group: `rows` is `(input, label)` token rows, one puzzle each.
    pub(crate) fn push_group(&mut self, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), DataError> {
        for (inp, lab) in rows {
            if inp.len() != self.seq_len || lab.len() != self.seq_len {
                return Err(DataError::InvalidOptions(format!(
                    "internal: row of {} / {} tokens, seq_len is {}",
                    inp.len(),
                    lab.len(),
                    self.seq_len
                )));
            }
            self.inputs.write(inp)?;
            self.labels.write(lab)?;
        }
        self.examples += rows.len();
        let end = i32::try_from(self.examples).map_err(|_| {
            DataError::InvalidOptions("dataset exceeds the int32 indices of the format".into())
        })?;
        self.group_indices.push(end);
        Ok(())
    }

    /// Closes the row files, writes the index arrays and `dataset.json`.
    ///
    /// `dataset.json` copies the reference values: PAD 0, ignored label 0, blank id 0, one
    /// identifier, `mean_puzzle_examples` 1 and `total_puzzles` = the number of groups (sic:
    /// the reference writes the group count there even with augmentations; its loader only
    /// uses it to weight `mean_puzzle_examples`, which is 1 anyway).
    pub(crate) fn finish(self, vocab_size: usize) -> Result<SplitSummary, DataError> {
        let n = self.examples;
        self.inputs.finish_rows(n)?;
        self.labels.finish_rows(n)?;
        // `n` fits i32: checked in push_group.
        let puzzle_indices: Vec<i32> = (0..=n as i32).collect();
        let identifiers = vec![0i32; n];
        for (k, v) in [
            ("puzzle_identifiers", &identifiers),
            ("puzzle_indices", &puzzle_indices),
            ("group_indices", &self.group_indices),
        ] {
            write_npy_i32(&self.dir.join(format!("all__{k}.npy")), &[v.len()], v)?;
        }
        let groups = self.group_indices.len() - 1;
        let meta = DatasetMetadata {
            pad_id: 0,
            ignore_label_id: Some(0),
            blank_identifier_id: 0,
            vocab_size: vocab_size as i64,
            seq_len: self.seq_len as i64,
            num_puzzle_identifiers: 1,
            total_groups: groups as i64,
            mean_puzzle_examples: 1.0,
            total_puzzles: groups as i64,
            sets: vec!["all".into()],
        };
        write_json(&self.dir.join("dataset.json"), &meta)?;
        Ok(SplitSummary {
            groups,
            puzzles: n,
            examples: n,
        })
    }
}

/// Picks `k` of `n` indices uniformly without replacement, in random order (the reference
/// `np.random.choice(n, size=k, replace=False)`, here from a [`crate::augment::DetRng`]).
pub(crate) fn subsample_indices(
    rng: &mut crate::augment::DetRng,
    n: usize,
    k: usize,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    // Partial Fisher-Yates from the front: position i takes a uniform pick of the rest.
    for i in 0..k {
        let j = i + rng.below((n - i) as u32) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_and_crlf() {
        let csv = b"source,question,answer,rating\r\n\"a,b\",\"# \"\"SG\",#  G,3\r\n";
        let recs = split_csv(csv, Path::new("x.csv")).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].fields[0], b"a,b");
        assert_eq!(recs[1].fields[1], b"# \"SG");
        assert_eq!(recs[1].fields[3], b"3");
    }

    #[test]
    fn square_sides() {
        assert_eq!(square_side(900), Some(30));
        assert_eq!(square_side(81), Some(9));
        assert_eq!(square_side(80), None);
    }
}
