//! The training order (reference `_iter_train` / `_sample_batch`): the seeded group
//! sampler and its resumable state.

use crate::error::DataError;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;

use super::batch::{local_range, HostBatch};
use super::set::PuzzleSet;
use super::split::PuzzleSplit;

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
