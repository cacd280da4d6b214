//! The diagonal Gaussian posterior q(z|x), the standard-normal prior, the analytic KL between
//! them, and the decoder likelihoods p(x|z). All log-densities are in nats, summed over every
//! dimension but the batch: one number per image.
//!
//! `DiagonalGaussianDistribution` mirrors diffusers' (`models/autoencoders/vae.py`): the encoder
//! output is split into mean and log-variance along dim 1, the log-variance is clamped to
//! [-30, 20], and `kl()` is the KL to N(0, I).
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::{Error, Result};

const LOG_2PI: f64 = 1.837_877_066_409_345_5;

/// Sums all dims but the first (the batch). Shapes: (B, ..) -> (B,).
pub fn sum_per_item(t: &Tensor) -> Result<Tensor> {
    let dims: Vec<i64> = (1..t.dim() as i64).collect();
    if dims.is_empty() {
        return Ok(t.shallow_clone());
    }
    Ok(t.f_sum_dim_intlist(dims.as_slice(), false, t.kind())?)
}

/// A Gaussian with diagonal covariance: the posterior of every VAE here.
#[derive(Debug)]
pub struct DiagonalGaussianDistribution {
    pub mean: Tensor,
    /// Clamped to [-30, 20], as diffusers does, so exp() neither underflows nor overflows.
    pub logvar: Tensor,
    pub std: Tensor,
    pub var: Tensor,
}

impl DiagonalGaussianDistribution {
    /// Shapes: mean and logvar (B, ..) of the same shape.
    pub fn new(mean: Tensor, logvar: Tensor) -> Result<Self> {
        if mean.size() != logvar.size() {
            return Err(Error::Input(format!(
                "posterior: mean {:?} and logvar {:?} differ in shape",
                mean.size(),
                logvar.size()
            )));
        }
        let logvar = logvar.f_clamp(-30.0, 20.0)?;
        let std = logvar.f_mul_scalar(0.5)?.f_exp()?;
        let var = logvar.f_exp()?;
        Ok(DiagonalGaussianDistribution { mean, logvar, std, var })
    }

    /// diffusers' constructor: `parameters` (B, 2C, ..) holds the mean in its first C channels
    /// and the log-variance in the last C.
    pub fn from_parameters(parameters: &Tensor) -> Result<Self> {
        let c = parameters.size().get(1).copied().unwrap_or(0);
        if c % 2 != 0 || c == 0 {
            return Err(Error::Input(format!(
                "posterior parameters {:?}: need an even, non-zero dim 1",
                parameters.size()
            )));
        }
        let parts = parameters.f_chunk(2, 1)?;
        Self::new(parts[0].shallow_clone(), parts[1].shallow_clone())
    }

    /// A draw with the reparameterisation trick: mean + std * eps, eps ~ N(0, I) from libtorch's
    /// generator, so gradients flow to mean and logvar.
    pub fn sample(&self) -> Result<Tensor> {
        let eps = self.mean.f_randn_like()?;
        self.sample_with(&eps)
    }

    /// mean + std * `noise` for a given standard-normal `noise` of the posterior's shape.
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.size() != self.mean.size() {
            return Err(Error::Input(format!(
                "posterior noise {:?} does not match the latent shape {:?}",
                noise.size(),
                self.mean.size()
            )));
        }
        Ok(self.mean.f_add(&self.std.f_mul(noise)?)?)
    }

    /// The most likely latent: the mean.
    pub fn mode(&self) -> Tensor {
        self.mean.shallow_clone()
    }

    /// KL(q || N(0, I)) per item in nats, analytically: 0.5 * sum(mean² + var - 1 - logvar).
    /// Shapes: (B, ..) -> (B,).
    pub fn kl(&self) -> Result<Tensor> {
        let t = self.mean.f_square()?.f_add(&self.var)?.f_sub_scalar(1.0)?.f_sub(&self.logvar)?;
        Ok(sum_per_item(&t)?.f_mul_scalar(0.5)?)
    }

    /// log q(z) per item. Shapes: z (B, ..) or (K, B, ..) -> (B,) or (K, B).
    pub fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        let lead = z.dim() as i64 - self.mean.dim() as i64;
        let t = z
            .f_sub(&self.mean)?
            .f_square()?
            .f_div(&self.var)?
            .f_add(&self.logvar)?
            .f_add_scalar(LOG_2PI)?
            .f_mul_scalar(-0.5)?;
        sum_trailing(&t, lead + 1)
    }
}

/// log N(z; 0, I) per item. Shapes: (B, ..) -> (B,), or (K, B, ..) -> (K, B) with `lead` = 2.
pub fn standard_normal_log_prob(z: &Tensor, lead: i64) -> Result<Tensor> {
    let t = z.f_square()?.f_add_scalar(LOG_2PI)?.f_mul_scalar(-0.5)?;
    sum_trailing(&t, lead)
}

/// Sums every dim after the first `lead` dims.
fn sum_trailing(t: &Tensor, lead: i64) -> Result<Tensor> {
    let dims: Vec<i64> = (lead..t.dim() as i64).collect();
    if dims.is_empty() {
        return Ok(t.shallow_clone());
    }
    Ok(t.f_sum_dim_intlist(dims.as_slice(), false, t.kind())?)
}

/// The decoder's likelihood, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LikelihoodConfig {
    /// Independent Bernoulli pixels on the decoder's logits; targets in [0, 1] (the pixel
    /// intensities, as in the PyTorch example, which treats grey levels as probabilities).
    Bernoulli,
    /// Independent Gaussian pixels around the decoder's output with one standard deviation
    /// `exp(log_sigma)` for all pixels, learned when `learned` (the sigma-VAE of Rybkin et al.
    /// 2021) and fixed otherwise.
    Gaussian { log_sigma: f64, learned: bool },
}

/// The likelihood with its variable (the learned log-sigma), made by the model's `new`.
#[derive(Debug)]
pub enum Likelihood {
    Bernoulli,
    Gaussian { log_sigma: Tensor },
}

impl Likelihood {
    /// A learned Gaussian scale is the variable `log_sigma` under `p`.
    pub fn new(p: &nn::Path, cfg: &LikelihoodConfig) -> Result<Self> {
        Ok(match *cfg {
            LikelihoodConfig::Bernoulli => Likelihood::Bernoulli,
            LikelihoodConfig::Gaussian { log_sigma, learned: true } => {
                Likelihood::Gaussian { log_sigma: p.f_var("log_sigma", &[1], nn::Init::Const(log_sigma))? }
            }
            LikelihoodConfig::Gaussian { log_sigma, learned: false } => Likelihood::Gaussian {
                log_sigma: Tensor::f_from_slice(&[log_sigma as f32])?.f_to_device(p.device())?,
            },
        })
    }

    /// -log p(x | decoder output) per image, in nats. Shapes: out (.., B, C, H, W) (logits or
    /// means), x (B, C, H, W) -> (.., B).
    pub fn nll(&self, out: &Tensor, x: &Tensor) -> Result<Tensor> {
        let lead = out.dim() as i64 - 3;
        let x = x.f_expand_as(out)?;
        let t = match self {
            // BCE with logits: max(l, 0) - l * x + log(1 + exp(-|l|)), stable for any logit.
            Likelihood::Bernoulli => {
                out.f_binary_cross_entropy_with_logits::<Tensor>(&x, None, None, tch::Reduction::None)?
            }
            Likelihood::Gaussian { log_sigma } => {
                let inv_var = log_sigma.f_mul_scalar(-2.0)?.f_exp()?;
                out.f_sub(&x)?
                    .f_square()?
                    .f_mul(&inv_var)?
                    .f_mul_scalar(0.5)?
                    .f_add(log_sigma)?
                    .f_add_scalar(0.5 * LOG_2PI)?
            }
        };
        sum_trailing(&t, lead)
    }

    /// The mean of p(x | decoder output): sigmoid of the logits, or the Gaussian mean.
    pub fn mean(&self, out: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Likelihood::Bernoulli => out.f_sigmoid()?,
            Likelihood::Gaussian { .. } => out.shallow_clone(),
        })
    }
}

/// (recon, kl) per image in nats, the two terms of the negative ELBO, with one posterior
/// sample: recon = -log p(x|z), z ~ q(z|x). Shapes: x (B, C, H, W) -> ((B,), (B,)).
pub fn elbo_terms(
    posterior: &DiagonalGaussianDistribution,
    likelihood: &Likelihood,
    decode: impl Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let z = posterior.sample()?;
    let out = decode(&z)?;
    Ok((likelihood.nll(&out, x)?, posterior.kl()?))
}

/// Mean over the batch of a per-image quantity, as f64.
pub fn batch_mean(t: &Tensor) -> Result<f64> {
    Ok(t.f_mean(Kind::Double)?.f_double_value(&[])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    #[test]
    fn kl_has_the_closed_form_and_is_zero_at_the_prior() {
        let q = DiagonalGaussianDistribution::new(t(&[0.0, 0.0], &[1, 2]), t(&[0.0, 0.0], &[1, 2])).unwrap();
        assert_eq!(q.kl().unwrap().double_value(&[0]), 0.0);
        // mu = 1, logvar = ln 2: 0.5 * (1 + 2 - 1 - ln 2).
        let q = DiagonalGaussianDistribution::new(t(&[1.0], &[1, 1]), t(&[2f32.ln()], &[1, 1])).unwrap();
        let want = 0.5 * (2.0 - 2f64.ln());
        assert!((q.kl().unwrap().double_value(&[0]) - want).abs() < 1e-6);
    }

    #[test]
    fn kl_matches_a_monte_carlo_estimate() {
        tch::manual_seed(3);
        let mean = Tensor::randn([2, 6], (Kind::Double, Device::Cpu));
        let logvar = Tensor::randn([2, 6], (Kind::Double, Device::Cpu)) * 0.5;
        let q = DiagonalGaussianDistribution::new(mean, logvar).unwrap();
        // KL = E_q[log q(z) - log p(z)], averaged over 200k draws.
        let z = q.mean.unsqueeze(0)
            + q.std.unsqueeze(0) * Tensor::randn([200_000, 2, 6], (Kind::Double, Device::Cpu));
        let est = (q.log_prob(&z).unwrap() - standard_normal_log_prob(&z, 2).unwrap()).mean_dim(
            0,
            false,
            Kind::Double,
        );
        let exact = q.kl().unwrap();
        for b in 0..2 {
            let (e, x) = (est.double_value(&[b]), exact.double_value(&[b]));
            assert!((e - x).abs() < 0.05 * x.max(1.0), "item {b}: MC {e} vs analytic {x}");
        }
    }

    #[test]
    fn logvar_is_clamped_like_diffusers() {
        let q =
            DiagonalGaussianDistribution::new(t(&[0.0, 0.0], &[1, 2]), t(&[-100.0, 100.0], &[1, 2])).unwrap();
        assert_eq!(Vec::<f32>::try_from(q.logvar.view([-1])).unwrap(), vec![-30.0, 20.0]);
        let p = DiagonalGaussianDistribution::from_parameters(&t(&[1.0, 2.0, 3.0, 4.0], &[1, 4])).unwrap();
        assert_eq!(Vec::<f32>::try_from(p.mean.view([-1])).unwrap(), vec![1.0, 2.0]);
        assert!(DiagonalGaussianDistribution::from_parameters(&t(&[1.0, 2.0, 3.0], &[1, 3])).is_err());
        assert!(p.sample_with(&Tensor::zeros([3], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn reparameterised_samples_carry_gradients() {
        let mean = t(&[0.5, -1.0], &[1, 2]).set_requires_grad(true);
        let logvar = t(&[0.0, 1.0], &[1, 2]).set_requires_grad(true);
        let q = DiagonalGaussianDistribution::new(mean.shallow_clone(), logvar.shallow_clone()).unwrap();
        let noise = t(&[1.0, 2.0], &[1, 2]);
        q.sample_with(&noise).unwrap().sum(Kind::Float).backward();
        // d/dmean = 1; d/dlogvar = 0.5 * exp(0.5 * logvar) * noise.
        assert_eq!(Vec::<f32>::try_from(mean.grad().view([-1])).unwrap(), vec![1.0, 1.0]);
        let g = Vec::<f32>::try_from(logvar.grad().view([-1])).unwrap();
        assert!((g[0] - 0.5).abs() < 1e-6 && (g[1] as f64 - 0.5f64.exp() * 2.0 * 0.5).abs() < 1e-5, "{g:?}");
    }

    #[test]
    fn likelihoods_on_known_values() {
        let x = t(&[1.0, 0.0, 0.25, 0.75], &[1, 1, 2, 2]);
        // Logit 0 is probability 1/2 per pixel whatever the target: 4 ln 2.
        let nll =
            Likelihood::Bernoulli.nll(&Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu)), &x).unwrap();
        assert!((nll.double_value(&[0]) - 4.0 * 2f64.ln()).abs() < 1e-5);
        // A Gaussian with sigma 1 at the target: 4 * 0.5 * ln(2 pi); 1 away adds 0.5 per pixel.
        let g = Likelihood::Gaussian { log_sigma: Tensor::from_slice(&[0.0f32]) };
        let at = g.nll(&x, &x).unwrap().double_value(&[0]);
        assert!((at - 2.0 * LOG_2PI).abs() < 1e-5);
        let off = g.nll(&(&x + 1.0), &x).unwrap().double_value(&[0]);
        assert!((off - at - 2.0).abs() < 1e-5);
        // With a leading sample dim: (K, B, C, H, W) -> (K, B).
        let out = Tensor::zeros([3, 1, 1, 2, 2], (Kind::Float, Device::Cpu));
        assert_eq!(Likelihood::Bernoulli.nll(&out, &x).unwrap().size(), vec![3, 1]);
    }
}
