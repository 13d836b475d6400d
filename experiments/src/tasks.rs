//! Where an experiment's examples come from: a dataset directory built by
//! `recursa data ...` (`[data] name = "dataset"`), or a small generated task for
//! quick CPU runs (`[data] name = "generated-grid"`).
//!
//! The question is a random `size x size` grid of colours 1..=colors and the
//! answer is a fixed transform of it. Test grids never occur in training, so
//! exact accuracy on them measures learning the transform, not memorising.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recursa_core::experiment::DataConfig;
use recursa_core::train::data::{data_error, split_from_examples, PuzzleSplit};
use recursa_core::{Error, Result};

/// The train and test splits of `data` (`seed` fixes generated tasks).
pub fn load(data: &DataConfig, seed: u64) -> Result<(PuzzleSplit, PuzzleSplit)> {
    match data {
        DataConfig::Dataset { path, .. } => {
            let dirs = data.dataset_dirs();
            let field = if path.is_some() {
                "data.path"
            } else {
                "data.paths"
            };
            for dir in &dirs {
                if !dir.is_dir() {
                    return Err(Error::config(
                        field,
                        format!(
                            "{}: no dataset there; build it with `recursa data arc|sudoku|maze|nqueens ... --out {}` \
                             (the experiment file's comment gives the command)",
                            dir.display(),
                            dir.display()
                        ),
                    ));
                }
            }
            let open = |split| PuzzleSplit::open_merged(&dirs, split).map_err(data_error);
            Ok((open("train")?, open("test")?))
        }
        DataConfig::GeneratedGrid { .. } => generate(data, seed),
    }
}

/// Inputs, labels and puzzle ids of generated examples, row-major.
#[derive(Default)]
pub struct Generated {
    pub inputs: Vec<i32>,
    pub labels: Vec<i32>,
    pub puzzle_identifiers: Vec<i32>,
}

impl Generated {
    fn into_split(self, cells: usize, colors: usize) -> Result<PuzzleSplit> {
        split_from_examples(
            cells,
            colors + 1,
            2,
            self.inputs,
            self.labels,
            self.puzzle_identifiers,
        )
    }
}

/// The transforms a generated grid task can ask for.
const TRANSFORMS: &[&str] = &["flip", "transpose", "rotate", "shift-colors"];

fn transform(name: &str, grid: &[i32], size: usize, colors: usize) -> Vec<i32> {
    let at = |r: usize, c: usize| grid[r * size + c];
    (0..size * size)
        .map(|i| {
            let (r, c) = (i / size, i % size);
            match name {
                "flip" => at(r, size - 1 - c),
                "transpose" => at(c, r),
                "rotate" => at(size - 1 - c, r), // 90 degrees clockwise
                _ => at(r, c) % colors as i32 + 1, // shift-colors
            }
        })
        .collect()
}

/// Train and test splits for a generated task, fixed by `seed`. Vocabulary
/// 0..=colors (0 unused), puzzle identifier 1 for all (0 is the blank id).
pub fn generate(data: &DataConfig, seed: u64) -> Result<(PuzzleSplit, PuzzleSplit)> {
    let DataConfig::GeneratedGrid { size, colors, .. } = data else {
        return Err(Error::config("data.name", "not a generated task"));
    };
    let (train, test) = generate_examples(data, seed)?;
    Ok((
        train.into_split(size * size, *colors)?,
        test.into_split(size * size, *colors)?,
    ))
}

/// The examples of a generated task, before they become splits.
pub fn generate_examples(data: &DataConfig, seed: u64) -> Result<(Generated, Generated)> {
    let DataConfig::GeneratedGrid {
        size,
        colors,
        transform: name,
        train_examples,
        test_examples,
    } = data
    else {
        return Err(Error::config("data.name", "not a generated task"));
    };
    if !TRANSFORMS.contains(&name.as_str()) {
        return Err(Error::config(
            "data.transform",
            format!("`{name}`; known: {}", TRANSFORMS.join(", ")),
        ));
    }
    if *size == 0 || *colors < 2 {
        return Err(Error::config(
            "data",
            "size must be at least 1 and colors at least 2",
        ));
    }
    let cells = size * size;
    let distinct = (*colors as f64).powi(cells as i32);
    if ((train_examples + test_examples) as f64) > distinct / 2.0 {
        return Err(Error::config(
            "data.train_examples",
            format!(
                "{} + {} examples do not fit in {distinct} distinct grids",
                train_examples, test_examples
            ),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6772_6964);
    let mut seen = HashSet::new();
    let mut split = |n: usize| {
        let mut ex = Generated::default();
        while ex.puzzle_identifiers.len() < n {
            let grid: Vec<i32> = (0..cells)
                .map(|_| rng.random_range(1..=*colors as i32))
                .collect();
            if seen.insert(grid.clone()) {
                ex.labels.extend(transform(name, &grid, *size, *colors));
                ex.inputs.extend(grid);
                ex.puzzle_identifiers.push(1);
            }
        }
        ex
    };
    let train = split(*train_examples);
    let test = split(*test_examples);
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_are_what_they_say() {
        let g = [1, 2, 3, 4]; // [[1,2],[3,4]]
        assert_eq!(transform("flip", &g, 2, 4), vec![2, 1, 4, 3]);
        assert_eq!(transform("transpose", &g, 2, 4), vec![1, 3, 2, 4]);
        assert_eq!(transform("rotate", &g, 2, 4), vec![3, 1, 4, 2]);
        assert_eq!(transform("shift-colors", &g, 2, 4), vec![2, 3, 4, 1]);
    }

    #[test]
    fn test_grids_are_unseen() {
        let data = DataConfig::GeneratedGrid {
            size: 3,
            colors: 3,
            transform: "rotate".into(),
            train_examples: 200,
            test_examples: 50,
        };
        let (train, test) = generate_examples(&data, 0).unwrap();
        let grids: HashSet<_> = train.inputs.chunks(9).collect();
        assert!(test.inputs.chunks(9).all(|g| !grids.contains(g)));
        let (train, test) = generate(&data, 0).unwrap();
        let rows = |s: &PuzzleSplit| s.sets().iter().map(|s| s.rows()).sum::<usize>();
        assert_eq!((rows(&train), rows(&test)), (200, 50));
    }
}
