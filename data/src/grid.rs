//! ARC grids and their token encoding.
//!
//! The encoding is the reference one (`np_grid_to_seq_translational_augment` in
//! `dataset/build_arc_dataset.py`): a 30x30 canvas, PAD 0, EOS 1, colour `c` -> `c + 2`,
//! the grid placed at a (possibly translated) top-left offset, EOS tokens on the row below
//! the grid (grid columns only) and on the column right of the grid (grid rows only),
//! nothing at the corner.

use sha2::{Digest, Sha256};

/// Largest grid side ARC allows, and the canvas side.
pub const ARC_MAX_GRID_SIZE: usize = 30;
/// Sequence length of an encoded grid (30 x 30).
pub const ARC_SEQ_LEN: usize = ARC_MAX_GRID_SIZE * ARC_MAX_GRID_SIZE;
/// Padding token (also the ignored label id in the reference arrays).
pub const PAD_TOKEN: u8 = 0;
/// End-of-grid marker token.
pub const EOS_TOKEN: u8 = 1;
/// Offset added to a colour to get its token.
pub const COLOUR_OFFSET: u8 = 2;
/// PAD + EOS + ten colours.
pub const ARC_VOCAB_SIZE: usize = 12;

/// A dense, row-major grid of colours 0..=9 (at most 255 x 255; ARC grids are at most 30 x 30).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grid {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl Grid {
    /// A grid from row-major data. Returns `None` if `data.len() != rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<u8>) -> Option<Grid> {
        (rows.checked_mul(cols) == Some(data.len())).then_some(Grid { rows, cols, data })
    }

    /// Validates a JSON grid with the reference rules (`arc_grid_to_np`): two-dimensional
    /// (rectangular), at most 30 x 30, colours in 0..=9. Unlike the reference, an empty grid
    /// (`[]` or `[[]]`) is rejected too. The error is a human-readable reason.
    pub fn from_nested(rows: &[Vec<i64>]) -> Result<Grid, String> {
        let nrows = rows.len();
        let ncols = rows.first().map_or(0, Vec::len);
        if nrows == 0 || ncols == 0 {
            return Err(format!("empty grid ({nrows}x{ncols})"));
        }
        if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != ncols) {
            return Err(format!(
                "ragged grid: row {r} has {} columns, row 0 has {ncols}",
                row.len()
            ));
        }
        if nrows > ARC_MAX_GRID_SIZE || ncols > ARC_MAX_GRID_SIZE {
            return Err(format!(
                "grid is {nrows}x{ncols}, larger than {ARC_MAX_GRID_SIZE}x{ARC_MAX_GRID_SIZE}"
            ));
        }
        let mut data = Vec::with_capacity(nrows * ncols);
        for (r, row) in rows.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                if !(0..=9).contains(&v) {
                    return Err(format!("colour {v} at row {r}, column {c} is outside 0-9"));
                }
                data.push(v as u8);
            }
        }
        Ok(Grid {
            rows: nrows,
            cols: ncols,
            data,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major cells.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Cell at row `r`, column `c` (panics out of range, like slice indexing).
    pub fn get(&self, r: usize, c: usize) -> u8 {
        self.data[r * self.cols + c]
    }

    /// The grid as nested rows, the JSON layout.
    pub fn to_nested(&self) -> Vec<Vec<u8>> {
        if self.cols == 0 {
            return vec![Vec::new(); self.rows];
        }
        self.data.chunks(self.cols).map(<[u8]>::to_vec).collect()
    }

    /// The reference `grid_hash`: hex SHA-256 of one byte per dimension followed by the
    /// uint8 cells in C order.
    pub fn hash_hex(&self) -> String {
        let mut h = Sha256::new();
        // Dimensions are < 256 for every grid this crate builds (ARC grids and crops are
        // at most 30x30); the reference `to_bytes(1)` would raise otherwise.
        h.update([self.rows as u8, self.cols as u8]);
        h.update(&self.data);
        hex(&h.finalize())
    }
}

/// Lower-case hex of a byte string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Writes `grid` onto a 900-token canvas at offset (`pad_r`, `pad_c`) with its EOS markers.
///
/// `canvas` must be `ARC_SEQ_LEN` long and is overwritten. The caller guarantees
/// `pad_r + rows <= 30` and `pad_c + cols <= 30`.
pub fn encode_grid_into(grid: &Grid, pad_r: usize, pad_c: usize, canvas: &mut [u8]) {
    debug_assert_eq!(canvas.len(), ARC_SEQ_LEN);
    debug_assert!(pad_r + grid.rows <= ARC_MAX_GRID_SIZE && pad_c + grid.cols <= ARC_MAX_GRID_SIZE);
    canvas.fill(PAD_TOKEN);
    for r in 0..grid.rows {
        let dst = (pad_r + r) * ARC_MAX_GRID_SIZE + pad_c;
        let src = &grid.data[r * grid.cols..(r + 1) * grid.cols];
        for (d, &s) in canvas[dst..dst + grid.cols].iter_mut().zip(src) {
            *d = s + COLOUR_OFFSET;
        }
    }
    let (eos_row, eos_col) = (pad_r + grid.rows, pad_c + grid.cols);
    if eos_row < ARC_MAX_GRID_SIZE {
        let start = eos_row * ARC_MAX_GRID_SIZE;
        canvas[start + pad_c..start + eos_col].fill(EOS_TOKEN);
    }
    if eos_col < ARC_MAX_GRID_SIZE {
        for r in pad_r..eos_row {
            canvas[r * ARC_MAX_GRID_SIZE + eos_col] = EOS_TOKEN;
        }
    }
}

/// [`encode_grid_into`] into a fresh canvas.
pub fn encode_grid(grid: &Grid, pad_r: usize, pad_c: usize) -> Vec<u8> {
    let mut canvas = vec![PAD_TOKEN; ARC_SEQ_LEN];
    encode_grid_into(grid, pad_r, pad_c, &mut canvas);
    canvas
}

/// The reference evaluator's `_crop`: the largest top-left rectangle of a 30x30 token grid
/// that contains only colour tokens (2..=11), decoded back to colours.
///
/// Rows are scanned top-down; the usable width shrinks to the first non-colour token of each
/// row, and the rectangle with the largest area wins (the first one on ties). `tokens` must
/// hold 900 values.
pub fn crop_tokens(tokens: &[i32]) -> Grid {
    debug_assert_eq!(tokens.len(), ARC_SEQ_LEN);
    let n = ARC_MAX_GRID_SIZE;
    let mut num_c = n;
    let (mut best_area, mut best) = (0usize, (0usize, 0usize));
    for num_r in 1..=n {
        let row = &tokens[(num_r - 1) * n..num_r * n];
        if let Some(c) = row[..num_c].iter().position(|&x| !(2..=11).contains(&x)) {
            num_c = c;
        }
        let area = num_r * num_c;
        if area > best_area {
            best_area = area;
            best = (num_r, num_c);
        }
    }
    let (rows, cols) = best;
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        // Every cell inside the rectangle is a colour token, so `x - 2` is in 0..=9.
        data.extend(tokens[r * n..r * n + cols].iter().map(|&x| (x - 2) as u8));
    }
    Grid { rows, cols, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_places_eos_without_corner() {
        let g = Grid::new(2, 3, vec![0, 1, 2, 3, 4, 5]).unwrap();
        let c = encode_grid(&g, 1, 2);
        let at = |r: usize, col: usize| c[r * 30 + col];
        assert_eq!(at(1, 2), 2);
        assert_eq!(at(2, 4), 7);
        assert_eq!(at(3, 2), EOS_TOKEN);
        assert_eq!(at(3, 4), EOS_TOKEN);
        assert_eq!(at(1, 5), EOS_TOKEN);
        assert_eq!(at(2, 5), EOS_TOKEN);
        assert_eq!(at(3, 5), PAD_TOKEN);
        assert_eq!(at(0, 2), PAD_TOKEN);
    }

    #[test]
    fn crop_inverts_encoding() {
        let g = Grid::new(3, 2, vec![9, 8, 7, 6, 5, 4]).unwrap();
        let toks: Vec<i32> = encode_grid(&g, 0, 0).into_iter().map(i32::from).collect();
        assert_eq!(crop_tokens(&toks), g);
        let full = Grid::new(30, 30, vec![3; 900]).unwrap();
        let toks: Vec<i32> = encode_grid(&full, 0, 0)
            .into_iter()
            .map(i32::from)
            .collect();
        assert_eq!(crop_tokens(&toks), full);
        assert_eq!(crop_tokens(&[0; 900]).rows(), 0);
    }
}
