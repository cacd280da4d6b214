//! Seeding: one `--seed` for libtorch's generator and for `rand`.
//!
//! Order of draws, which the pipelines rely on for parity with PyTorch: [`seed_all`] seeds
//! libtorch's default generator exactly as `torch.manual_seed(seed)` does, so the first tensor
//! drawn afterwards (`Tensor::randn`, e.g. a diffusion pipeline's initial noise or a GAN's
//! latent) equals the one PyTorch draws after `torch.manual_seed(seed)` with the same shape,
//! dtype and device. Draws made with `rand` (data order, augmentation) use a separate generator
//! and never advance libtorch's.
//!
//! Training derives its randomness from `(seed, step)` with [`step_seed`] instead of carrying
//! generator state along, so a run resumed at step k draws what the uninterrupted run drew.
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Seeds libtorch (CPU and every CUDA device) and returns a `rand` generator from the same seed.
/// Standard normal noise of `shape` (f32, CPU) from `rng` (Box-Muller), not from libtorch's
/// generator: a draw that must repeat for a seed whatever other threads take from the global
/// generator meanwhile (libtorch has one per process).
pub fn randn(shape: &[i64], rng: &mut StdRng) -> crate::Result<tch::Tensor> {
    use rand::Rng;
    let n: i64 = shape.iter().product();
    let mut v = Vec::with_capacity(n.max(0) as usize);
    while (v.len() as i64) < n {
        let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: the log is finite
        let u2: f64 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        v.push((r * t.cos()) as f32);
        if (v.len() as i64) < n {
            v.push((r * t.sin()) as f32);
        }
    }
    Ok(tch::Tensor::f_from_slice(&v)?.f_reshape(shape)?)
}

pub fn seed_all(seed: u64) -> StdRng {
    // torch.manual_seed takes the seed's bits as a u64; tch's i64 carries the same bits.
    tch::manual_seed(seed as i64);
    StdRng::seed_from_u64(seed)
}

/// A seed for one step of one random stream of a run, well mixed (SplitMix64), so that nearby
/// steps and streams get unrelated seeds.
pub fn step_seed(seed: u64, stream: u64, step: u64) -> u64 {
    let mut z = seed ^ splitmix(stream.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ splitmix(step);
    z = splitmix(z);
    z
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seeds libtorch and `rand` for step `step` of a run seeded with `seed`.
pub fn seed_step(seed: u64, step: u64) -> StdRng {
    seed_all(step_seed(seed, 0, step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randn_is_standard_normal_and_repeats_for_a_seed() {
        let a = randn(&[3, 4000], &mut StdRng::seed_from_u64(5)).unwrap();
        let b = randn(&[3, 4000], &mut StdRng::seed_from_u64(5)).unwrap();
        assert_eq!(a.size(), vec![3, 4000]);
        assert!(a.equal(&b));
        assert!(a.mean(tch::Kind::Float).double_value(&[]).abs() < 0.03);
        assert!((a.std(true).double_value(&[]) - 1.0).abs() < 0.03);
        assert_eq!(randn(&[5], &mut StdRng::seed_from_u64(1)).unwrap().size(), vec![5]);
    }

    // Tests that draw from libtorch's global generator live in tests/tests/core_golden.rs, a
    // binary of their own, since parallel tests in this one would interleave their draws.

    #[test]
    fn step_seeds_differ_and_repeat() {
        let s: std::collections::HashSet<u64> = (0..1000).map(|i| step_seed(1, 0, i)).collect();
        assert_eq!(s.len(), 1000);
        assert_ne!(step_seed(1, 0, 5), step_seed(1, 1, 5));
        assert_ne!(step_seed(1, 0, 5), step_seed(2, 0, 5));
        assert_eq!(step_seed(9, 2, 5), step_seed(9, 2, 5));
    }
}
