//! Adversarial losses on discriminator logits, and the gradient penalties.
//!
//! - `bce`: the non-saturating loss of Goodfellow et al. (2014) as the DCGAN recipe writes it
//!   (BCE with target 1 for real, 0 for fake; the generator's target is 1).
//! - `hinge`: Lim & Ye (2017), as in SN-GAN and BigGAN.
//! - `wgan-gp`: Gulrajani et al. (2017): critic scores, plus the penalty
//!   (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat of real and fake images.
//! - R1 (Mescheder et al. 2018): (gamma / 2) E ||grad D(x)||^2 on real images.
//! - mode seeking (Mao et al. 2019, MSGAN): a generator term against two latents giving one image.
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    #[serde(rename = "bce")]
    Bce,
    #[serde(rename = "hinge")]
    Hinge,
    #[serde(rename = "wgan-gp")]
    WganGp,
}

impl Loss {
    /// The discriminator's loss. Shapes: logits (B), (B) -> scalar.
    pub fn d_loss(self, real: &Tensor, fake: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Loss::Bce => {
                let r = real.f_binary_cross_entropy_with_logits::<Tensor>(
                    &real.f_ones_like()?,
                    None,
                    None,
                    Reduction::Mean,
                )?;
                let f = fake.f_binary_cross_entropy_with_logits::<Tensor>(
                    &fake.f_zeros_like()?,
                    None,
                    None,
                    Reduction::Mean,
                )?;
                r.f_add(&f)?
            }
            Loss::Hinge => {
                let r = real.f_neg()?.f_add_scalar(1.0)?.f_relu()?.f_mean(Kind::Float)?;
                let f = fake.f_add_scalar(1.0)?.f_relu()?.f_mean(Kind::Float)?;
                r.f_add(&f)?
            }
            Loss::WganGp => fake.f_mean(Kind::Float)?.f_sub(&real.f_mean(Kind::Float)?)?,
        })
    }

    /// The generator's loss. Shapes: logits of fakes (B) -> scalar.
    pub fn g_loss(self, fake: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Loss::Bce => fake.f_binary_cross_entropy_with_logits::<Tensor>(
                &fake.f_ones_like()?,
                None,
                None,
                Reduction::Mean,
            )?,
            Loss::Hinge | Loss::WganGp => fake.f_mean(Kind::Float)?.f_neg()?,
        })
    }

    /// What D(x) and D(G(z)) are reported as: the probability for BCE (as the recipe prints
    /// them), the raw score for the others. Shapes: (B) -> scalar.
    pub fn report(self, logits: &Tensor) -> Result<f64> {
        let t = match self {
            Loss::Bce => logits.f_sigmoid()?,
            _ => logits.shallow_clone(),
        };
        Ok(t.f_mean(Kind::Float)?.f_double_value(&[])?)
    }
}

/// Per-sample squared gradient norms of `outputs.sum()` with respect to `inputs`, kept in the
/// graph so they can be minimised. Shapes: outputs (B), inputs (B, ...) -> (B).
fn grad_norm_sq(outputs: &Tensor, inputs: &Tensor) -> Result<Tensor> {
    let total = outputs.f_sum(Kind::Float)?;
    let grads = Tensor::f_run_backward(&[&total], &[inputs], true, true)?;
    let g = &grads[0];
    let b = g.size()[0];
    Ok(g.f_reshape([b, -1])?.f_square()?.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?)
}

/// WGAN-GP's penalty E (||grad D(x_hat)||_2 - 1)^2, with x_hat = eps x + (1 - eps) x_fake and
/// eps ~ U(0, 1) per sample (drawn from libtorch's generator). `d` maps images to logits (B).
pub fn gradient_penalty(
    d: &dyn Fn(&Tensor) -> Result<Tensor>,
    real: &Tensor,
    fake: &Tensor,
) -> Result<Tensor> {
    let b = real.size()[0];
    let eps = Tensor::f_rand([b, 1, 1, 1], (real.kind(), real.device()))?;
    let x_hat = real
        .f_mul(&eps)?
        .f_add(&fake.detach().f_mul(&eps.f_neg()?.f_add_scalar(1.0)?)?)?
        .f_detach()?
        .f_set_requires_grad(true)?;
    let n2 = grad_norm_sq(&d(&x_hat)?, &x_hat)?;
    Ok(n2.f_add_scalar(1e-12)?.f_sqrt()?.f_sub_scalar(1.0)?.f_square()?.f_mean(Kind::Float)?)
}

/// R1's E ||grad D(x)||^2 over real images (the caller scales it by gamma / 2). `real` must
/// require grad and `logits` must come from it.
pub fn r1_penalty(logits: &Tensor, real: &Tensor) -> Result<Tensor> {
    Ok(grad_norm_sq(logits, real)?.f_mean(Kind::Float)?)
}

/// MSGAN's mode-seeking term for a batch whose two halves are pairs (same class, different
/// latents): 1 / (mean |x1 - x2| / mean |z1 - z2| + 1e-5). Shapes: fakes (B, ...), z (B, ...)
/// with B even -> scalar.
pub fn mode_seeking_loss(fake: &Tensor, z: &Tensor) -> Result<Tensor> {
    let b = fake.size()[0];
    if b % 2 != 0 || z.size()[0] != b {
        return Err(Error::Input(format!(
            "mode seeking needs an even batch of fakes and as many latents, got {b} and {}",
            z.size()[0]
        )));
    }
    let h = b / 2;
    let dist = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_narrow(0, 0, h)?.f_sub(&t.f_narrow(0, h, h)?)?.f_abs()?.f_mean(Kind::Float)?)
    };
    let ratio = dist(fake)?.f_div(&dist(z)?)?;
    Ok(ratio.f_add_scalar(1e-5)?.f_reciprocal()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn losses_on_known_logits() {
        let (real, fake) = (t(&[2.0, -1.0]), t(&[0.0, 3.0]));
        let sp = |x: f64| (1.0 + x.exp()).ln(); // softplus
                                                // BCE: real -> softplus(-x), fake -> softplus(x).
        let want = (sp(-2.0) + sp(1.0)) / 2.0 + (sp(0.0) + sp(3.0)) / 2.0;
        let got = Loss::Bce.d_loss(&real, &fake).unwrap().double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} {want}");
        let got = Loss::Bce.g_loss(&fake).unwrap().double_value(&[]);
        assert!((got - (sp(0.0) + sp(-3.0)) / 2.0).abs() < 1e-6);
        // Hinge: relu(1 - 2) + relu(1 + 1) = 0 + 2; relu(1 + 0) + relu(1 + 3) = 1 + 4.
        let got = Loss::Hinge.d_loss(&real, &fake).unwrap().double_value(&[]);
        assert!((got - (2.0 / 2.0 + 5.0 / 2.0)).abs() < 1e-6, "{got}");
        assert!((Loss::Hinge.g_loss(&fake).unwrap().double_value(&[]) + 1.5).abs() < 1e-6);
        // WGAN: mean fake - mean real = 1.5 - 0.5.
        assert!((Loss::WganGp.d_loss(&real, &fake).unwrap().double_value(&[]) - 1.0).abs() < 1e-6);
        let p = Loss::Bce.report(&t(&[0.0, 0.0])).unwrap();
        assert!((p - 0.5).abs() < 1e-9);
        assert!((Loss::Hinge.report(&real).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn penalties_on_a_linear_critic() {
        // D(x) = sum(w * x) has gradient w everywhere: ||w||^2 = 4 * 0.25 * 3 = 3 for w = 0.5.
        let w = Tensor::full([1, 3, 2, 2], 0.5, (Kind::Float, Device::Cpu));
        let d = |x: &Tensor| -> Result<Tensor> {
            Ok((x * &w).sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float))
        };
        let real = Tensor::randn([5, 3, 2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let r1 = r1_penalty(&d(&real).unwrap(), &real).unwrap().double_value(&[]);
        assert!((r1 - 3.0).abs() < 1e-5, "{r1}");
        let fake = Tensor::randn([5, 3, 2, 2], (Kind::Float, Device::Cpu));
        let gp = gradient_penalty(&d, &real.detach(), &fake).unwrap().double_value(&[]);
        let want = (3.0f64.sqrt() - 1.0).powi(2);
        assert!((gp - want).abs() < 1e-5, "{gp} {want}");
    }

    #[test]
    fn names_parse() {
        let l: Loss = serde_json::from_str("\"wgan-gp\"").unwrap();
        assert_eq!(l, Loss::WganGp);
        assert!(serde_json::from_str::<Loss>("\"lsgan\"").is_err());
    }

    #[test]
    fn mode_seeking_is_small_when_pairs_differ_and_large_when_they_collapse() {
        let z = Tensor::randn([8, 4, 1, 1], (Kind::Float, Device::Cpu));
        let (z1, z2) = (z.narrow(0, 0, 4), z.narrow(0, 4, 4));
        let dz = (&z1 - &z2).abs().mean(Kind::Float).double_value(&[]);
        // images that move with their latents: ratio 2 -> 1 / 2
        let x = z.repeat([1, 1, 3, 3]) * 2.0;
        let l = mode_seeking_loss(&x, &z).unwrap().double_value(&[]);
        assert!((l - 0.5).abs() < 1e-4, "{l}");
        // a generator that ignores z: the loss is 1 / 1e-5 times dz
        let same = Tensor::cat(&[&z1.repeat([1, 1, 3, 3]), &z1.repeat([1, 1, 3, 3])], 0);
        let l = mode_seeking_loss(&same, &z).unwrap().double_value(&[]);
        assert!((l - 1e5).abs() < 1.0, "{l} (dz {dz})");
        // it pulls the halves apart
        let x = x.detach().set_requires_grad(true);
        mode_seeking_loss(&x, &z).unwrap().backward();
        let g = x.grad();
        let push = ((&x.narrow(0, 0, 4) - &x.narrow(0, 4, 4)) * g.narrow(0, 0, 4)).sum(Kind::Float);
        assert!(push.double_value(&[]) < 0.0, "a descent step must move the halves apart");
        assert!(mode_seeking_loss(&x.narrow(0, 0, 3), &z.narrow(0, 0, 3)).is_err());
        assert!(mode_seeking_loss(&x, &z.narrow(0, 0, 6)).is_err());
    }
}
