//! A convolutional VAE with a configurable latent size; a beta-VAE is this model trained with
//! `beta` > 1 weighting the KL term.
//!
//! Papers: Kingma & Welling 2014 (the VAE); Higgins et al., "beta-VAE: Learning Basic Visual
//! Concepts with a Constrained Variational Framework" (ICLR 2017); the layout follows Burgess et
//! al., "Understanding disentangling in beta-VAE" (2018): 4x4 convolutions with stride 2, then
//! fully connected layers to the posterior, and the mirror image in the decoder.
//! Reference: no single checkpoint format; names follow PyTorch habits (`encoder.convs.i`,
//! `fc_mu`, `fc_logvar`, `decoder.deconvs.i`). Checkpoints: those `zoo vae train` writes.
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::distributions::{DiagonalGaussianDistribution, Likelihood, LikelihoodConfig};
use crate::{Error, Result};
use zoo_core::layers::{Conv2d, ConvTranspose2d, Linear};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvConfig {
    pub in_channels: i64,
    /// Square images; must be divisible by 2^len(channels).
    pub image_size: i64,
    /// Output channels of each stride-2 convolution of the encoder (the decoder mirrors them).
    pub channels: Vec<i64>,
    pub hidden_dim: i64,
    pub latent_dim: i64,
    pub likelihood: LikelihoodConfig,
}

impl ConvConfig {
    /// 28x28 grey: 28 -> 14 -> 7 with 32 and 64 channels, 256 hidden, 20 latents, Bernoulli.
    pub fn mnist() -> Self {
        ConvConfig {
            in_channels: 1,
            image_size: 28,
            channels: vec![32, 64],
            hidden_dim: 256,
            latent_dim: 20,
            likelihood: LikelihoodConfig::Bernoulli,
        }
    }

    pub fn tiny() -> Self {
        ConvConfig {
            in_channels: 3,
            image_size: 8,
            channels: vec![4, 8],
            hidden_dim: 16,
            latent_dim: 3,
            likelihood: LikelihoodConfig::Gaussian { log_sigma: -1.0, learned: true },
        }
    }

    /// Side of the smallest feature map.
    pub fn bottom_size(&self) -> i64 {
        self.image_size >> self.channels.len()
    }

    pub fn validate(&self) -> Result<()> {
        let levels = self.channels.len() as u32;
        if self.channels.is_empty() || levels > 16 {
            return Err(Error::Config("conv VAE: `channels` needs 1 to 16 entries".into()));
        }
        let sizes = [
            ("in_channels", self.in_channels),
            ("image_size", self.image_size),
            ("hidden_dim", self.hidden_dim),
            ("latent_dim", self.latent_dim),
        ];
        crate::sizes_at_least_one("conv VAE", &sizes)?;
        if let Some(c) = self.channels.iter().find(|&&c| c < 1) {
            return Err(Error::Config(format!(
                "conv VAE: every entry of `channels` must be at least 1, got {c}"
            )));
        }
        if self.image_size % (1 << levels) != 0 {
            return Err(Error::Config(format!(
                "conv VAE: image_size {} is not divisible by 2^{levels} (one halving per entry of `channels`)",
                self.image_size
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct ConvVae {
    convs: Vec<Conv2d>,
    enc_fc: Linear,
    fc_mu: Linear,
    fc_logvar: Linear,
    dec_fc1: Linear,
    dec_fc2: Linear,
    deconvs: Vec<ConvTranspose2d>,
    pub likelihood: Likelihood,
    pub cfg: ConvConfig,
}

impl ConvVae {
    pub fn new(p: nn::Path, cfg: &ConvConfig) -> Result<Self> {
        cfg.validate()?;
        let enc = &p / "encoder";
        let dec = &p / "decoder";
        let mut convs = Vec::new();
        let mut prev = cfg.in_channels;
        for (i, &c) in cfg.channels.iter().enumerate() {
            convs.push(Conv2d::new(&enc / "convs" / i, prev, c, 4, 2, 1)?);
            prev = c;
        }
        let s = cfg.bottom_size();
        let flat = prev * s * s;
        let mut deconvs = Vec::new();
        let rev: Vec<i64> = cfg.channels.iter().rev().copied().collect();
        for i in 0..rev.len() {
            let out = rev.get(i + 1).copied().unwrap_or(cfg.in_channels);
            deconvs.push(ConvTranspose2d::new(&dec / "deconvs" / i, rev[i], out, 4, 2, 1)?);
        }
        Ok(ConvVae {
            convs,
            enc_fc: Linear::new(&enc / "fc", flat, cfg.hidden_dim)?,
            fc_mu: Linear::new(&p / "fc_mu", cfg.hidden_dim, cfg.latent_dim)?,
            fc_logvar: Linear::new(&p / "fc_logvar", cfg.hidden_dim, cfg.latent_dim)?,
            dec_fc1: Linear::new(&dec / "fc1", cfg.latent_dim, cfg.hidden_dim)?,
            dec_fc2: Linear::new(&dec / "fc2", cfg.hidden_dim, flat)?,
            deconvs,
            likelihood: Likelihood::new(&p, &cfg.likelihood)?,
            cfg: cfg.clone(),
        })
    }

    /// q(z|x). Shapes: (B, C, S, S) in [0, 1] -> posterior over (B, latent_dim).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        let mut h = x.shallow_clone();
        for c in &self.convs {
            h = c.forward_relu(&h)?; // (B, c, S/2^i, S/2^i)
        }
        let h = self.enc_fc.forward(&h.f_flatten(1, -1)?)?.f_relu()?;
        DiagonalGaussianDistribution::new(self.fc_mu.forward(&h)?, self.fc_logvar.forward(&h)?)
    }

    /// The decoder's output (logits or means). Shapes: (.., latent_dim) -> (.., C, S, S).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let lead = z.size()[..z.dim().saturating_sub(1)].to_vec();
        let z = z.f_reshape([-1, self.cfg.latent_dim])?;
        let h = self.dec_fc2.forward(&self.dec_fc1.forward(&z)?.f_relu()?)?.f_relu()?;
        let (c, s) = (self.cfg.channels.last().copied().unwrap_or(1), self.cfg.bottom_size());
        let mut h = h.f_reshape([-1, c, s, s])?;
        for (i, d) in self.deconvs.iter().enumerate() {
            h = if i + 1 < self.deconvs.len() { d.forward_relu(&h)? } else { d.forward(&h)? };
        }
        let mut shape = lead;
        shape.extend([self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size]);
        Ok(h.f_reshape(shape.as_slice())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn shapes() {
        let vs = VarStore::new(Device::Cpu);
        let m = ConvVae::new(vs.root(), &ConvConfig::tiny()).unwrap();
        let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let q = m.encode(&x).unwrap();
        assert_eq!(q.mean.size(), vec![2, 3]);
        assert_eq!(m.decode(&q.sample().unwrap()).unwrap().size(), vec![2, 3, 8, 8]);
        assert_eq!(
            m.decode(&Tensor::zeros([4, 2, 3], (Kind::Float, Device::Cpu))).unwrap().size(),
            vec![4, 2, 3, 8, 8]
        );
        assert!(m.encode(&Tensor::zeros([2, 1, 8, 8], (Kind::Float, Device::Cpu))).is_err());
        let mnist = ConvVae::new(VarStore::new(Device::Cpu).root(), &ConvConfig::mnist()).unwrap();
        let q = mnist.encode(&Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu))).unwrap();
        assert_eq!(mnist.decode(&q.mean).unwrap().size(), vec![2, 1, 28, 28]);
    }

    #[test]
    fn bad_configs_are_errors() {
        let vs = VarStore::new(Device::Cpu);
        let e = ConvVae::new(vs.root(), &ConvConfig { image_size: 10, ..ConvConfig::tiny() }).unwrap_err();
        assert!(e.to_string().contains("divisible"), "{e}");
        assert!(ConvVae::new(vs.root(), &ConvConfig { channels: vec![], ..ConvConfig::tiny() }).is_err());
    }
}
