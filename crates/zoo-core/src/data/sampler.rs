//! Batch index samplers shared by the training loops.
//!
//! [`EpochShuffler`] is a pure function of (seed, step), so a resumed run recreates its exact
//! position in the data from the step counter alone, without saving any RNG state.
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// `batch` indices in `0..n` drawn uniformly: without repeats when `batch <= n`, with repeats
/// otherwise. Empty when `n` is 0.
pub fn random_batch_indices(n: usize, batch: usize, rng: &mut impl Rng) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    if batch <= n {
        rand::seq::index::sample(rng, n, batch).into_vec()
    } else {
        (0..batch).map(|_| rng.gen_range(0..n)).collect()
    }
}

/// Shuffles `0..n` once per epoch and cuts the shuffled stream into batches.
///
/// The data is one endless stream, epoch after epoch: batch `step` holds stream positions
/// `step * batch .. (step + 1) * batch`, position p being item `perm(p / n)[p % n]`. So every
/// item is seen exactly once per epoch, and a batch may straddle two epochs.
#[derive(Debug)]
pub struct EpochShuffler {
    n: usize,
    batch: usize,
    seed: u64,
    /// The last permutation made, since consecutive steps almost always share an epoch.
    cache: Mutex<Option<(u64, Arc<Vec<usize>>)>>,
}

impl Clone for EpochShuffler {
    fn clone(&self) -> Self {
        EpochShuffler::new(self.n, self.batch, self.seed)
    }
}

impl EpochShuffler {
    /// A shuffler over `n` items in batches of `batch`. With `n` or `batch` 0 every batch is empty.
    pub fn new(n: usize, batch: usize, seed: u64) -> EpochShuffler {
        EpochShuffler { n, batch, seed, cache: Mutex::new(None) }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The epoch the first item of batch `step` belongs to: `step * batch / n`.
    pub fn epoch_at(&self, step: u64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let epoch = u128::from(step) * self.batch as u128 / self.n as u128;
        u64::try_from(epoch).unwrap_or(u64::MAX)
    }

    /// The item indices of batch `step` (0-based).
    pub fn batch_at(&self, step: u64) -> Vec<usize> {
        if self.n == 0 || self.batch == 0 {
            return Vec::new();
        }
        let (n, start) = (self.n as u128, u128::from(step) * self.batch as u128);
        let mut out = Vec::with_capacity(self.batch);
        let mut current: Option<(u64, Arc<Vec<usize>>)> = None;
        for p in start..start + self.batch as u128 {
            // Epochs past u64::MAX are unreachable in practice; saturate rather than wrap.
            let epoch = u64::try_from(p / n).unwrap_or(u64::MAX);
            let perm = match &current {
                Some((e, perm)) if *e == epoch => perm.clone(),
                _ => {
                    let perm = self.permutation(epoch);
                    current = Some((epoch, perm.clone()));
                    perm
                }
            };
            out.push(perm[(p % n) as usize]);
        }
        out
    }

    /// The order of epoch `epoch`: `0..n` shuffled by an RNG seeded from (seed, epoch).
    pub fn permutation(&self, epoch: u64) -> Arc<Vec<usize>> {
        // A poisoned lock only means another thread panicked mid-update; recomputing is safe.
        if let Ok(cache) = self.cache.lock() {
            if let Some((e, perm)) = cache.as_ref() {
                if *e == epoch {
                    return perm.clone();
                }
            }
        }
        let mut perm: Vec<usize> = (0..self.n).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(epoch_seed(self.seed, epoch)));
        let perm = Arc::new(perm);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((epoch, perm.clone()));
        }
        perm
    }
}

/// `seed ^ epoch` with the epoch spread over all 64 bits first: with a plain xor, seed 0 at
/// epoch 1 and seed 1 at epoch 0 would shuffle alike, so runs with neighbouring seeds would
/// see the same orders.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_batches() {
        let mut rng = StdRng::seed_from_u64(0);
        let b = random_batch_indices(10, 10, &mut rng);
        let mut sorted = b.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let b = random_batch_indices(3, 50, &mut rng);
        assert_eq!(b.len(), 50);
        assert!(b.iter().all(|&i| i < 3));
        assert!(random_batch_indices(0, 4, &mut rng).is_empty());
    }

    #[test]
    fn each_epoch_is_a_permutation() {
        let s = EpochShuffler::new(10, 4, 7);
        // 30 items = 3 epochs; batch 2 straddles epochs 0 and 1.
        let stream: Vec<usize> = (0..30 / 4 + 1).flat_map(|step| s.batch_at(step)).collect();
        for epoch in 0..3 {
            let mut items = stream[epoch * 10..epoch * 10 + 10].to_vec();
            items.sort();
            assert_eq!(items, (0..10).collect::<Vec<_>>(), "epoch {epoch}");
        }
        assert_ne!(stream[..10], stream[10..20]);
        assert_eq!(s.epoch_at(2), 0);
        assert_eq!(s.epoch_at(3), 1);
        assert_eq!(s.batch_at(2)[..2], s.permutation(0)[8..]);
        assert_eq!(s.batch_at(2)[2..], s.permutation(1)[..2]);
    }

    #[test]
    fn resume_recreates_batches() {
        let a = EpochShuffler::new(100, 16, 3);
        let later: Vec<_> = (0..40).map(|step| a.batch_at(step)).collect();
        // A fresh shuffler (as after a restart) gives the same batch for any step, in any order.
        let b = EpochShuffler::new(100, 16, 3);
        for step in (0..40).rev() {
            assert_eq!(b.batch_at(step), later[step as usize]);
        }
        assert_ne!(EpochShuffler::new(100, 16, 4).batch_at(0), later[0]);
        // Neighbouring seeds do not replay each other's epochs.
        assert_ne!(
            *EpochShuffler::new(100, 16, 0).permutation(1),
            *EpochShuffler::new(100, 16, 1).permutation(0)
        );
    }

    #[test]
    fn degenerate_sizes() {
        assert!(EpochShuffler::new(0, 4, 0).batch_at(5).is_empty());
        assert!(EpochShuffler::new(4, 0, 0).batch_at(5).is_empty());
        // Batch larger than the dataset: spans several epochs, each item once per epoch.
        let b = EpochShuffler::new(3, 7, 1).batch_at(0);
        assert_eq!(b.len(), 7);
        for epoch in 0..2 {
            let mut e = b[epoch * 3..epoch * 3 + 3].to_vec();
            e.sort();
            assert_eq!(e, vec![0, 1, 2]);
        }
        assert_eq!(EpochShuffler::new(3, 7, 1).batch_at(u64::MAX).len(), 7);
    }
}
