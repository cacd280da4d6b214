//! The classic fully connected VAE: 784 -> 400 -> 20 -> 400 -> 784 on MNIST.
//!
//! Paper: Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014).
//! Reference: `vae/main.py` of github.com/pytorch/examples (layer names `fc1, fc21, fc22, fc3,
//! fc4`, so its `state_dict`, saved as safetensors, loads 1:1). The example decodes to
//! probabilities with a sigmoid and applies `binary_cross_entropy`; here the decoder returns
//! logits and the Bernoulli likelihood uses the equivalent, numerically stable BCE with logits.
//! A Gaussian decoder (fixed or learned variance) is the other option.
//! Checkpoints: the ones `zoo vae train --preset mlp-mnist` writes.
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::distributions::{DiagonalGaussianDistribution, Likelihood, LikelihoodConfig};
use crate::Result;
use zoo_core::layers::Linear;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Image channels; images are flattened to in_channels * image_size² inputs.
    pub in_channels: i64,
    pub image_size: i64,
    pub hidden_dim: i64,
    pub latent_dim: i64,
    pub likelihood: LikelihoodConfig,
}

impl MlpConfig {
    /// The PyTorch example: 28x28 grey, 400 hidden units, 20 latents, Bernoulli.
    pub fn mnist() -> Self {
        MlpConfig {
            in_channels: 1,
            image_size: 28,
            hidden_dim: 400,
            latent_dim: 20,
            likelihood: LikelihoodConfig::Bernoulli,
        }
    }

    pub fn tiny() -> Self {
        MlpConfig {
            in_channels: 1,
            image_size: 8,
            hidden_dim: 16,
            latent_dim: 2,
            likelihood: LikelihoodConfig::Bernoulli,
        }
    }

    pub fn input_dim(&self) -> i64 {
        self.in_channels * self.image_size * self.image_size
    }

    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("in_channels", self.in_channels),
            ("image_size", self.image_size),
            ("hidden_dim", self.hidden_dim),
            ("latent_dim", self.latent_dim),
        ];
        crate::sizes_at_least_one("mlp VAE", &sizes)?;
        Ok(())
    }
}

#[derive(Debug)]
pub struct MlpVae {
    fc1: Linear,
    fc21: Linear,
    fc22: Linear,
    fc3: Linear,
    fc4: Linear,
    pub likelihood: Likelihood,
    pub cfg: MlpConfig,
}

impl MlpVae {
    pub fn new(p: nn::Path, cfg: &MlpConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, h, z) = (cfg.input_dim(), cfg.hidden_dim, cfg.latent_dim);
        Ok(MlpVae {
            fc1: Linear::new(&p / "fc1", d, h)?,
            fc21: Linear::new(&p / "fc21", h, z)?,
            fc22: Linear::new(&p / "fc22", h, z)?,
            fc3: Linear::new(&p / "fc3", z, h)?,
            fc4: Linear::new(&p / "fc4", h, d)?,
            likelihood: Likelihood::new(&p, &cfg.likelihood)?,
            cfg: cfg.clone(),
        })
    }

    /// q(z|x). Shapes: (B, C, H, W) in [0, 1] -> posterior over (B, latent_dim).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        let b = x.size().first().copied().unwrap_or(0);
        let h1 = self.fc1.forward(&x.f_reshape([b, self.cfg.input_dim()])?)?.f_relu()?;
        DiagonalGaussianDistribution::new(self.fc21.forward(&h1)?, self.fc22.forward(&h1)?)
    }

    /// The decoder's output (logits for Bernoulli, means for Gaussian).
    /// Shapes: (.., latent_dim) -> (.., C, H, W).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let out = self.fc4.forward(&self.fc3.forward(z)?.f_relu()?)?;
        let mut shape = z.size();
        shape.pop();
        let s = self.cfg.image_size;
        shape.extend([self.cfg.in_channels, s, s]);
        Ok(out.f_reshape(shape.as_slice())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn shapes_and_names() {
        let vs = VarStore::new(Device::Cpu);
        let m = MlpVae::new(vs.root(), &MlpConfig::tiny()).unwrap();
        let x = Tensor::rand([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let q = m.encode(&x).unwrap();
        assert_eq!(q.mean.size(), vec![3, 2]);
        assert_eq!(m.decode(&q.mean).unwrap().size(), vec![3, 1, 8, 8]);
        assert_eq!(
            m.decode(&Tensor::zeros([5, 3, 2], (Kind::Float, Device::Cpu))).unwrap().size(),
            vec![5, 3, 1, 8, 8]
        );
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(names[..2], ["fc1.bias".to_string(), "fc1.weight".to_string()]);
        assert_eq!(names.len(), 10);
        // A wrong input size is an error, not a panic.
        assert!(m.encode(&Tensor::zeros([2, 1, 9, 9], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn learned_sigma_is_a_variable() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = MlpConfig {
            likelihood: LikelihoodConfig::Gaussian { log_sigma: -1.0, learned: true },
            ..MlpConfig::tiny()
        };
        MlpVae::new(vs.root(), &cfg).unwrap();
        assert_eq!(vs.variables()["log_sigma"].double_value(&[0]), -1.0);
        let vs = VarStore::new(Device::Cpu);
        let cfg = MlpConfig {
            likelihood: LikelihoodConfig::Gaussian { log_sigma: -1.0, learned: false },
            ..MlpConfig::tiny()
        };
        MlpVae::new(vs.root(), &cfg).unwrap();
        assert!(!vs.variables().contains_key("log_sigma"));
        let e = MlpVae::new(vs.root(), &MlpConfig { latent_dim: 0, ..MlpConfig::tiny() })
            .unwrap_err()
            .to_string();
        assert_eq!(e, "mlp VAE: latent_dim must be at least 1, got 0");
    }
}
