//! Property tests of the augmentations (seeded random cases, no extra dependency).

use recursa_data::augment::{
    dihedral_transform, inverse_dihedral_transform, parse_puzzle_name, Augmentation, ColourMap,
    DetRng,
};
use recursa_data::grid::Grid;

fn random_grid(rng: &mut DetRng) -> Grid {
    let rows = 1 + rng.below(30) as usize;
    let cols = 1 + rng.below(30) as usize;
    let data = (0..rows * cols).map(|_| rng.below(10) as u8).collect();
    Grid::new(rows, cols, data).unwrap()
}

#[test]
fn augmentation_then_inverse_is_identity() {
    let mut rng = DetRng::derive(7, "test", &["inverse"]);
    for case in 0..400 {
        let g = random_grid(&mut rng);
        for tid in 0..8u8 {
            assert_eq!(
                inverse_dihedral_transform(&dihedral_transform(&g, tid), tid),
                g,
                "tid {tid}"
            );
            let aug = Augmentation {
                dihedral: tid,
                ..Augmentation::random(&mut rng)
            };
            assert_eq!(aug.colours.0[0], 0, "colour 0 is kept");
            assert!(aug.colours.is_permutation());
            assert_eq!(
                aug.invert(&aug.apply(&g)),
                g,
                "case {case} tid {tid} map {:?}",
                aug.colours
            );
            // The inverse also works through the puzzle name, as the evaluator uses it.
            let name = aug.puzzle_name("task");
            let (task, decoded) = parse_puzzle_name(&name).unwrap();
            assert_eq!((task, decoded), ("task", aug));
            assert_eq!(decoded.invert(&aug.apply(&g)), g);
        }
    }
}

#[test]
fn dihedral_group_laws() {
    let mut rng = DetRng::derive(7, "test", &["group"]);
    let g = random_grid(&mut rng);
    // Rotations compose: t1 twice is t2, t1 three times is t3; reflections are involutions.
    let r1 = |x: &Grid| dihedral_transform(x, 1);
    assert_eq!(r1(&r1(&g)), dihedral_transform(&g, 2));
    assert_eq!(r1(&r1(&r1(&g))), dihedral_transform(&g, 3));
    for t in 4..8 {
        assert_eq!(dihedral_transform(&dihedral_transform(&g, t), t), g);
    }
    assert_eq!(
        ColourMap([0, 3, 1, 2, 4, 5, 6, 7, 8, 9]).inverse().0,
        [0, 2, 3, 1, 4, 5, 6, 7, 8, 9]
    );
}

#[test]
fn random_draws_are_uniform_enough() {
    let mut rng = DetRng::derive(1, "test", &["uniform"]);
    let mut counts = [0usize; 8];
    for _ in 0..80_000 {
        counts[rng.below(8) as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (9_000..11_000).contains(&c)),
        "{counts:?}"
    );
}
