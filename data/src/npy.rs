//! A minimal `.npy` writer and reader (format version 1.0 written; 1.0-3.0 read),
//! little-endian, C order, for the dtypes the dataset files use. Hand-written rather than
//! a crate: the builders must write the reference's files byte for byte (header padding,
//! dict spelling), which the fixtures compare.
//!
//! Header layout (numpy `format.py`): magic `\x93NUMPY`, major, minor, a little-endian header
//! length (u16 for 1.0, u32 for 2.0/3.0), then a Python dict literal
//! `{'descr': '<i4', 'fortran_order': False, 'shape': (3, 900), }` padded with spaces and a
//! final `\n` so that the data starts at a multiple of 64 bytes.

use crate::error::DataError;
use std::io::{Seek, Write};
use std::path::Path;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
const ALIGN: usize = 64;

/// Element types supported by this reader / writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    /// `|u1`
    U8,
    /// `<i4`
    I32,
    /// `<i8`
    I64,
    /// `<f4`
    F32,
    /// `<f8`
    F64,
}

impl NpyDtype {
    /// The numpy `descr` string.
    pub fn descr(self) -> &'static str {
        match self {
            NpyDtype::U8 => "|u1",
            NpyDtype::I32 => "<i4",
            NpyDtype::I64 => "<i8",
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::U8 => 1,
            NpyDtype::I32 | NpyDtype::F32 => 4,
            NpyDtype::I64 | NpyDtype::F64 => 8,
        }
    }

    fn from_descr(descr: &str) -> Option<NpyDtype> {
        Some(match descr {
            "|u1" | "<u1" | "u1" => NpyDtype::U8,
            "<i4" => NpyDtype::I32,
            "<i8" => NpyDtype::I64,
            "<f4" => NpyDtype::F32,
            "<f8" => NpyDtype::F64,
            _ => return None,
        })
    }
}

/// A decoded array: its shape, dtype and raw little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Shape in C order (empty for a scalar).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: NpyDtype,
    /// `product(shape) * dtype.size()` little-endian bytes.
    pub bytes: Vec<u8>,
}

impl NpyArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements widened to `i64` (integer dtypes only).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        Some(match self.dtype {
            NpyDtype::U8 => b.iter().map(|&x| i64::from(x)).collect(),
            NpyDtype::I32 => b
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            NpyDtype::I64 => b
                .chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    i64::from_le_bytes(a)
                })
                .collect(),
            NpyDtype::F32 | NpyDtype::F64 => return None,
        })
    }
}

/// The version-1.0 header for an array of `dtype` and `shape`, padded to 64 bytes.
pub fn npy_header(dtype: NpyDtype, shape: &[usize]) -> Vec<u8> {
    npy_header_min_len(dtype, shape, 0)
}

/// [`npy_header`] padded with spaces to at least `min_len` bytes (keeping the 64-byte
/// alignment), so that a header can be rewritten in place once the row count is known.
fn npy_header_min_len(dtype: NpyDtype, shape: &[usize], min_len: usize) -> Vec<u8> {
    let shape_str = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_str}, }}",
        dtype.descr()
    );
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let mut total = unpadded.div_ceil(ALIGN) * ALIGN;
    if total < min_len {
        total = min_len.div_ceil(ALIGN) * ALIGN;
    }
    dict.push_str(&" ".repeat(total - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // Shapes here have at most a few dimensions, so the header is far below 65535 bytes.
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Streams the data of one array into a file after writing its header; `finish` checks that
/// exactly the announced number of bytes was written.
pub struct NpyWriter {
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    expected: usize,
    written: usize,
    dtype: NpyDtype,
    row_bytes: usize,
    /// `Some` for files created by [`NpyWriter::create_rows`].
    row_shape: Option<Vec<usize>>,
}

impl NpyWriter {
    /// Creates `path` and writes the header.
    pub fn create(path: &Path, dtype: NpyDtype, shape: &[usize]) -> Result<NpyWriter, DataError> {
        let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        file.write_all(&npy_header(dtype, shape))
            .map_err(|e| DataError::io(path, e))?;
        Ok(NpyWriter {
            path: path.to_path_buf(),
            file,
            expected: shape.iter().fold(dtype.size(), |a, &d| a.saturating_mul(d)),
            written: 0,
            dtype,
            row_bytes: 0,
            row_shape: None,
        })
    }

    /// Creates `path` for an array of shape `[rows, row_shape...]` whose row count is only
    /// known at the end ([`NpyWriter::finish_rows`]): room for the header is reserved and the
    /// header is rewritten in place.
    pub fn create_rows(
        path: &Path,
        dtype: NpyDtype,
        row_shape: &[usize],
    ) -> Result<NpyWriter, DataError> {
        let mut shape = vec![usize::MAX];
        shape.extend_from_slice(row_shape);
        let mut w = NpyWriter::create(path, dtype, &shape)?;
        w.expected = usize::MAX;
        w.row_bytes = row_shape.iter().product::<usize>() * dtype.size();
        w.dtype = dtype;
        w.row_shape = Some(row_shape.to_vec());
        Ok(w)
    }

    /// Finishes a file made by [`NpyWriter::create_rows`] holding `rows` rows.
    pub fn finish_rows(mut self, rows: usize) -> Result<(), DataError> {
        let Some(row_shape) = self.row_shape.take() else {
            return Err(DataError::npy(
                &self.path,
                "internal: finish_rows on a sized writer",
            ));
        };
        let mut full = vec![usize::MAX];
        full.extend_from_slice(&row_shape);
        let reserved = npy_header(self.dtype, &full).len();
        let mut shape = vec![rows];
        shape.extend_from_slice(&row_shape);
        let header = npy_header_min_len(self.dtype, &shape, reserved);
        if header.len() != reserved {
            return Err(DataError::npy(
                &self.path,
                "internal: header does not fit its reserved room",
            ));
        }
        self.expected = rows * self.row_bytes;
        let path = self.path.clone();
        let io = |e| DataError::io(&path, e);
        self.file.flush().map_err(io)?;
        let f = self.file.get_mut();
        f.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        f.write_all(&header).map_err(io)?;
        self.finish()
    }

    /// Appends raw little-endian element bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        self.written += bytes.len();
        self.file
            .write_all(bytes)
            .map_err(|e| DataError::io(&self.path, e))
    }

    /// Flushes and checks the byte count.
    pub fn finish(mut self) -> Result<(), DataError> {
        if self.written != self.expected {
            return Err(DataError::npy(
                &self.path,
                format!(
                    "internal: wrote {} data bytes, header announced {}",
                    self.written, self.expected
                ),
            ));
        }
        self.file.flush().map_err(|e| DataError::io(&self.path, e))
    }
}

/// Writes a `uint8` array.
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<(), DataError> {
    let mut w = NpyWriter::create(path, NpyDtype::U8, shape)?;
    w.write(data)?;
    w.finish()
}

/// Writes an `int32` array.
pub fn write_npy_i32(path: &Path, shape: &[usize], data: &[i32]) -> Result<(), DataError> {
    let mut w = NpyWriter::create(path, NpyDtype::I32, shape)?;
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.write(&bytes)?;
    w.finish()
}

/// Reads and parses a `.npy` file.
pub fn read_npy(path: &Path) -> Result<NpyArray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy(&bytes, path)
}

/// Parses `.npy` bytes; `path` is only used in error messages. Never panics.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NpyArray, DataError> {
    let header = parse_npy_header(bytes, path)?;
    Ok(NpyArray {
        bytes: bytes[header.data_offset..].to_vec(),
        shape: header.shape,
        dtype: header.dtype,
    })
}

/// The parsed header of a `.npy` file, checked against the file length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: NpyDtype,
    /// Shape in C order (empty for a scalar).
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: usize,
    /// `product(shape) * dtype.size()`.
    pub data_len: usize,
}

/// Parses and checks the header at the start of `bytes`, a whole `.npy` file: magic,
/// version, dtype, C order, and that the file holds exactly header + data (a truncated file
/// or trailing bytes are errors). The data itself is not read, so this works on a memory
/// map without touching its pages. `path` is only used in error messages. Never panics.
pub fn parse_npy_header(bytes: &[u8], path: &Path) -> Result<NpyHeader, DataError> {
    let err = |m: String| DataError::npy(path, m);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err(
            "missing \\x93NUMPY magic (truncated or not a .npy file)".into(),
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err("truncated header length".into()));
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        _ => return Err(err(format!("unsupported format version {major}.{minor}"))),
    };
    let data_start = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| err(format!("truncated header ({header_len} bytes announced)")))?;
    let header = std::str::from_utf8(&bytes[start..data_start])
        .map_err(|_| err("header is not valid text".into()))?;
    let (dtype, fortran, shape) =
        parse_header(header).map_err(|m| err(format!("header {header:?}: {m}")))?;
    if fortran {
        return Err(err("fortran_order arrays are not supported".into()));
    }
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| err(format!("shape {shape:?} overflows")))?;
    let data_len = bytes.len() - data_start;
    if data_len != count {
        return Err(err(format!(
            "shape {shape:?} of {} needs {count} data bytes, file has {data_len} (truncated or trailing data)",
            dtype.descr(),
        )));
    }
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset: data_start,
        data_len: count,
    })
}

/// Parses the header dict: returns (dtype, fortran_order, shape).
fn parse_header(header: &str) -> Result<(NpyDtype, bool, Vec<usize>), String> {
    let h = header.trim();
    let inner = h
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or("not a dict literal")?;
    let value_of = |key: &str| -> Result<&str, String> {
        let pat = format!("'{key}':");
        let at = inner.find(&pat).ok_or(format!("missing key '{key}'"))?;
        Ok(inner[at + pat.len()..].trim_start())
    };
    let descr_v = value_of("descr")?;
    let descr = descr_v
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or("descr is not a string")?;
    let dtype = NpyDtype::from_descr(descr).ok_or(format!("unsupported dtype '{descr}'"))?;
    let fo = value_of("fortran_order")?;
    let fortran = if fo.starts_with("False") {
        false
    } else if fo.starts_with("True") {
        true
    } else {
        return Err("fortran_order is not a bool".into());
    };
    let sv = value_of("shape")?;
    let body = sv
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("shape is not a tuple")?;
    let shape = body
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension '{s}'"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, fortran, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_numpy() {
        // np.save of np.zeros((22, 900), np.uint8) and np.zeros(7, np.int32)
        let h = npy_header(NpyDtype::U8, &[22, 900]);
        assert_eq!(h.len() % 64, 0);
        assert!(std::str::from_utf8(&h[10..])
            .unwrap()
            .starts_with("{'descr': '|u1', 'fortran_order': False, 'shape': (22, 900), }"));
        let h = npy_header(NpyDtype::I32, &[7]);
        assert!(std::str::from_utf8(&h[10..])
            .unwrap()
            .contains("'shape': (7,), }"));
        assert_eq!(*h.last().unwrap(), b'\n');
    }

    #[test]
    fn round_trip() {
        let mut bytes = npy_header(NpyDtype::I32, &[3]);
        bytes.extend([1i32, -2, 3].iter().flat_map(|x| x.to_le_bytes()));
        let a = parse_npy(&bytes, Path::new("x.npy")).unwrap();
        assert_eq!(a.shape, vec![3]);
        assert_eq!(a.to_i64().unwrap(), vec![1, -2, 3]);
        assert!(parse_npy(&bytes[..bytes.len() - 1], Path::new("x.npy")).is_err());
    }
}
