//! ARC augmentations: the eight dihedral transforms, colour permutations, their inverses,
//! the reference puzzle-name format, and the deterministic random source of the builder.
//!
//! Transform ids are those of the reference `dataset/common.py::dihedral_transform`:
//!
//! | id | transform | numpy |
//! |---|---|---|
//! | 0 | identity | `arr` |
//! | 1 | rotate 90 counter-clockwise | `rot90(arr, 1)` |
//! | 2 | rotate 180 | `rot90(arr, 2)` |
//! | 3 | rotate 90 clockwise | `rot90(arr, 3)` |
//! | 4 | mirror left-right | `fliplr(arr)` |
//! | 5 | mirror up-down | `flipud(arr)` |
//! | 6 | transpose | `arr.T` |
//! | 7 | anti-transpose | `fliplr(rot90(arr, 1))` |

use crate::error::DataError;
use crate::grid::Grid;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// Separator between the task id, the transform and the colour map in a puzzle name.
pub const PUZZLE_ID_SEPARATOR: &str = "|||";

/// `DIHEDRAL_INVERSE[t]` undoes transform `t` (the reference table).
pub const DIHEDRAL_INVERSE: [u8; 8] = [0, 3, 2, 1, 4, 5, 6, 7];

/// Applies dihedral transform `tid` (0..=7, see the module table). Ids above 7 act as the
/// identity, as in the reference.
pub fn dihedral_transform(grid: &Grid, tid: u8) -> Grid {
    map_and_transform(grid, &ColourMap::IDENTITY, tid)
}

/// `dihedral_transform(map[grid], tid)` in one pass.
///
/// Output cell (i, j) reads source cell `base + i * di + j * dj` (row-major), with the
/// strides of each transform derived from the numpy definitions in the module table.
fn map_and_transform(grid: &Grid, map: &ColourMap, tid: u8) -> Grid {
    let (h, w) = (grid.rows() as isize, grid.cols() as isize);
    let n = h * w;
    // (base, di, dj) such that out[i][j] = src[base + i*di + j*dj]
    let (base, di, dj) = match tid {
        1 => (w - 1, -1, w),       // out[i][j] = a[j][w-1-i]
        2 => (n - 1, -w, -1),      // a[h-1-i][w-1-j]
        3 => ((h - 1) * w, 1, -w), // a[h-1-j][i]
        4 => (w - 1, w, -1),       // a[i][w-1-j]
        5 => ((h - 1) * w, -w, 1), // a[h-1-i][j]
        6 => (0, 1, w),            // a[j][i]
        7 => (n - 1, -1, -w),      // a[h-1-j][w-1-i]
        _ => (0, w, 1),            // identity
    };
    let transposed = matches!(tid, 1 | 3 | 6 | 7);
    let (oh, ow) = if transposed { (w, h) } else { (h, w) };
    let src = grid.data();
    let mut data = Vec::with_capacity(n as usize);
    if n > 0 {
        for i in 0..oh {
            let row = base + i * di;
            for j in 0..ow {
                // In range for every (i, j) of the output shape by construction.
                let c = src[(row + j * dj) as usize];
                data.push(map.0.get(c as usize).copied().unwrap_or(c));
            }
        }
    }
    // The shape is a permutation of the input shape, so the length always matches.
    Grid::new(oh as usize, ow as usize, data).expect("dihedral transform preserves the cell count")
}

/// Undoes [`dihedral_transform`] with the same id.
pub fn inverse_dihedral_transform(grid: &Grid, tid: u8) -> Grid {
    dihedral_transform(
        grid,
        DIHEDRAL_INVERSE.get(tid as usize).copied().unwrap_or(0),
    )
}

/// A colour map: colour `c` becomes `self.0[c]`. The builder only draws permutations that
/// keep 0 (black) fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ColourMap(pub [u8; 10]);

impl ColourMap {
    /// The identity map.
    pub const IDENTITY: ColourMap = ColourMap([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    /// Whether the map is a permutation of 0..=9.
    pub fn is_permutation(&self) -> bool {
        let mut seen = [false; 10];
        self.0
            .iter()
            .all(|&c| c < 10 && !std::mem::replace(&mut seen[c as usize], true))
    }

    /// The inverse permutation (the reference computes it as `argsort(map)`).
    /// Only meaningful for a permutation.
    pub fn inverse(&self) -> ColourMap {
        let mut inv = [0u8; 10];
        for (c, &m) in self.0.iter().enumerate() {
            inv[(m % 10) as usize] = c as u8;
        }
        ColourMap(inv)
    }

    /// Maps every cell of `grid`. Cells above 9 are left unchanged (they do not occur in
    /// validated grids).
    pub fn apply(&self, grid: &Grid) -> Grid {
        let data = grid
            .data()
            .iter()
            .map(|&c| self.0.get(c as usize).copied().unwrap_or(c))
            .collect();
        // Same shape, same length.
        Grid::new(grid.rows(), grid.cols(), data).expect("colour map preserves the shape")
    }

    /// The ten digits of the map, as written in puzzle names.
    pub fn digits(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }
}

/// One augmentation: colour map first, then a dihedral transform (they commute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Augmentation {
    /// Dihedral transform id 0..=7.
    pub dihedral: u8,
    /// Colour permutation.
    pub colours: ColourMap,
}

impl Augmentation {
    /// The identity augmentation.
    pub const IDENTITY: Augmentation = Augmentation {
        dihedral: 0,
        colours: ColourMap::IDENTITY,
    };

    /// `dihedral_transform(map[grid], t)`, the reference `aug` grid function.
    pub fn apply(&self, grid: &Grid) -> Grid {
        map_and_transform(grid, &self.colours, self.dihedral)
    }

    /// `inv_map[inverse_dihedral_transform(grid, t)]`, the reference `inverse_aug` function.
    pub fn invert(&self, grid: &Grid) -> Grid {
        self.colours
            .inverse()
            .apply(&inverse_dihedral_transform(grid, self.dihedral))
    }

    /// The reference puzzle name `"{task}|||t{tid}|||{ten digits}"`.
    pub fn puzzle_name(&self, task: &str) -> String {
        format!(
            "{task}{PUZZLE_ID_SEPARATOR}t{}{PUZZLE_ID_SEPARATOR}{}",
            self.dihedral,
            self.colours.digits()
        )
    }

    /// Draws an augmentation like the reference `aug`: a transform id uniform in 0..8, then a
    /// uniform permutation of colours 1..=9 with 0 fixed.
    pub fn random(rng: &mut DetRng) -> Augmentation {
        let dihedral = rng.below(8) as u8;
        let mut colours = ColourMap::IDENTITY;
        rng.shuffle(&mut colours.0[1..]);
        Augmentation { dihedral, colours }
    }
}

/// Splits a puzzle name into its task id and augmentation.
///
/// A name without the separator is an un-augmented puzzle (`Augmentation::IDENTITY`), as in
/// the reference `inverse_aug`. Unlike the reference, a malformed suffix is an error instead of
/// a crash or a silent misreading: the name must be exactly `task|||t<0-7>|||<permutation of
/// the ten digits>`.
pub fn parse_puzzle_name(name: &str) -> Result<(&str, Augmentation), DataError> {
    let bad = |message: &str| DataError::InvalidPuzzleName {
        name: name.to_string(),
        message: message.to_string(),
    };
    let mut parts = name.split(PUZZLE_ID_SEPARATOR);
    // `split` always yields at least one item.
    let task = parts.next().unwrap_or("");
    let (Some(t), Some(perm)) = (parts.next(), parts.next()) else {
        if name.contains(PUZZLE_ID_SEPARATOR) {
            return Err(bad("expected task|||t<id>|||<colour map>"));
        }
        return Ok((task, Augmentation::IDENTITY));
    };
    if parts.next().is_some() {
        return Err(bad("too many '|||' separators"));
    }
    let dihedral = match t.as_bytes() {
        [b't', d @ b'0'..=b'7'] => d - b'0',
        _ => return Err(bad("transform must be t0..t7")),
    };
    let digits = perm.as_bytes();
    if digits.len() != 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("colour map must be ten digits"));
    }
    let mut map = [0u8; 10];
    for (m, d) in map.iter_mut().zip(digits) {
        *m = d - b'0';
    }
    let colours = ColourMap(map);
    if !colours.is_permutation() {
        return Err(bad("colour map is not a permutation of 0-9"));
    }
    Ok((task, Augmentation { dihedral, colours }))
}

/// The builder's random source: a ChaCha20 stream keyed by SHA-256 of a label.
///
/// Integers are drawn with Lemire's unbiased multiply-and-reject method on 32-bit outputs and
/// shuffles are Fisher-Yates from the end, both written here so that a dataset depends only on
/// the ChaCha20 stream (a fixed specification), not on the sampling code of a `rand` version.
pub struct DetRng(ChaCha20Rng);

impl DetRng {
    /// A stream for `(seed, purpose, parts...)`. Parts are length-prefixed, so distinct
    /// tuples give distinct keys.
    pub fn derive(seed: u64, purpose: &str, parts: &[&str]) -> DetRng {
        let mut h = Sha256::new();
        h.update(b"recursa-data/v1");
        h.update(seed.to_le_bytes());
        for p in std::iter::once(purpose).chain(parts.iter().copied()) {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        DetRng(ChaCha20Rng::from_seed(h.finalize().into()))
    }

    /// Uniform integer in `0..n` (`n >= 1`; `n == 0` returns 0).
    pub fn below(&mut self, n: u32) -> u32 {
        if n <= 1 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u64::from(self.0.next_u32()) * u64::from(n);
            if (m as u32) >= threshold {
                return (m >> 32) as u32;
            }
        }
    }

    /// Uniform random permutation of `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below((i + 1) as u32) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(rows: usize, cols: usize) -> Grid {
        Grid::new(
            rows,
            cols,
            (0..rows * cols).map(|i| (i % 10) as u8).collect(),
        )
        .unwrap()
    }

    #[test]
    fn matches_numpy_definitions() {
        // a = [[0,1,2],[3,4,5]]
        let a = g(2, 3);
        let t = |id| dihedral_transform(&a, id).to_nested();
        assert_eq!(t(1), vec![vec![2, 5], vec![1, 4], vec![0, 3]]); // rot90
        assert_eq!(t(2), vec![vec![5, 4, 3], vec![2, 1, 0]]);
        assert_eq!(t(3), vec![vec![3, 0], vec![4, 1], vec![5, 2]]);
        assert_eq!(t(4), vec![vec![2, 1, 0], vec![5, 4, 3]]);
        assert_eq!(t(5), vec![vec![3, 4, 5], vec![0, 1, 2]]);
        assert_eq!(t(6), vec![vec![0, 3], vec![1, 4], vec![2, 5]]);
        assert_eq!(t(7), vec![vec![5, 2], vec![4, 1], vec![3, 0]]);
    }

    #[test]
    fn names_round_trip() {
        let aug = Augmentation {
            dihedral: 6,
            colours: ColourMap([0, 9, 3, 6, 8, 4, 2, 7, 1, 5]),
        };
        let name = aug.puzzle_name("66e6c45b");
        assert_eq!(name, "66e6c45b|||t6|||0936842715");
        assert_eq!(parse_puzzle_name(&name).unwrap(), ("66e6c45b", aug));
        assert_eq!(
            parse_puzzle_name("abc").unwrap(),
            ("abc", Augmentation::IDENTITY)
        );
        assert!(parse_puzzle_name("abc|||t8|||0123456789").is_err());
        assert!(parse_puzzle_name("abc|||t1|||0123456788").is_err());
        assert!(parse_puzzle_name("abc|||t1").is_err());
    }
}
