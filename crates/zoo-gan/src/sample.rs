//! Latents: drawn after seeding (for parity with PyTorch), truncated, interpolated.
use tch::{Device, Kind, Tensor};

use crate::model::Generator;
use crate::{Error, Result};

/// Seeds libtorch with `seed` and draws the latents of `n` samples as the first draw, so the
/// same seed gives the latent `torch.manual_seed(seed); torch.randn(shape)` gives ((n, nz, 1, 1)
/// for DCGAN, on the CPU). With `truncation` T, values with |z| > T are redrawn until none is
/// left (the truncation trick of BigGAN; the first draw is then no longer PyTorch's alone).
pub fn seeded_latents(g: &Generator, n: i64, seed: u64, truncation: Option<f64>) -> Result<Tensor> {
    if n < 1 {
        return Err(Error::Input(format!("the number of samples must be at least 1, got {n}")));
    }
    zoo_core::seed::seed_all(seed);
    let z = Tensor::f_randn(g.latent_shape(n), (Kind::Float, Device::Cpu))?;
    match truncation {
        None => Ok(z),
        Some(t) => truncate(z, t),
    }
}

/// Redraws the entries of `z` outside [-t, t] from N(0, 1) until all are inside.
pub fn truncate(mut z: Tensor, t: f64) -> Result<Tensor> {
    if !(t > 0.0 && t.is_finite()) {
        return Err(Error::Input(format!("--truncation must be a positive number, got {t}")));
    }
    // Each round keeps a fraction P(|z| <= t) of the rest, so this ends quickly even for small t.
    for _ in 0..10_000 {
        let outside = z.f_abs()?.f_gt(t)?;
        if outside.f_any()?.f_int64_value(&[])? == 0 {
            return Ok(z);
        }
        let fresh = z.f_randn_like()?;
        z = z.f_where_self(&outside.f_logical_not()?, &fresh)?;
    }
    Err(Error::Input(format!("--truncation {t} is too small to draw latents inside it")))
}

/// Spherical interpolation between `a` and `b` at fractions `ts` (0 gives a, 1 gives b), as
/// for Gaussian latents (White 2016): the path keeps the norm a Gaussian sample would have.
/// Shapes: a, b (1, ...) -> (len(ts), ...).
pub fn slerp(a: &Tensor, b: &Tensor, ts: &[f64]) -> Result<Tensor> {
    if a.size() != b.size() {
        return Err(Error::Input(format!("slerp: latents of shapes {:?} and {:?}", a.size(), b.size())));
    }
    let (fa, fb) =
        (a.f_flatten(0, -1)?.f_to_kind(Kind::Double)?, b.f_flatten(0, -1)?.f_to_kind(Kind::Double)?);
    let cos = fa.f_dot(&fb)?.f_double_value(&[])?
        / (fa.f_norm()?.f_double_value(&[])? * fb.f_norm()?.f_double_value(&[])?).max(1e-12);
    let omega = cos.clamp(-1.0, 1.0).acos();
    let frames = ts
        .iter()
        .map(|&t| -> Result<Tensor> {
            let (wa, wb) = if omega.sin().abs() < 1e-6 {
                (1.0 - t, t) // (anti)parallel: fall back to a straight line
            } else {
                (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
            };
            Ok(a.f_mul_scalar(wa)?.f_add(&b.f_mul_scalar(wb)?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::f_cat(&frames, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slerp_ends_and_norm() {
        let a = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let b = Tensor::from_slice(&[0.0f32, 1.0]).view([1, 2]);
        let p = slerp(&a, &b, &[0.0, 0.5, 1.0]).unwrap();
        assert_eq!(p.size(), [3, 2]);
        assert!(p.get(0).allclose(&a.get(0), 1e-6, 1e-6, false));
        assert!(p.get(2).allclose(&b.get(0), 1e-6, 1e-6, false));
        // Halfway on the unit circle: (cos 45, sin 45), norm 1 (a straight line gives 0.707).
        let mid: Vec<f32> = Vec::try_from(p.get(1)).unwrap();
        assert!((mid[0] - 0.5f32.sqrt()).abs() < 1e-6 && (mid[1] - 0.5f32.sqrt()).abs() < 1e-6);
        assert!(slerp(&a, &Tensor::zeros([1, 3], (Kind::Float, Device::Cpu)), &[0.5]).is_err());
    }

    #[test]
    fn truncation_bounds_values() {
        let z = Tensor::randn([1000, 8], (Kind::Float, Device::Cpu));
        let t = truncate(z.copy(), 0.5).unwrap();
        assert!(t.abs().max().double_value(&[]) <= 0.5);
        // Entries already inside are kept.
        let inside = z.abs().le(0.5);
        assert!(t.masked_select(&inside).equal(&z.masked_select(&inside)));
        assert!(truncate(z, 0.0).is_err());
    }
}
