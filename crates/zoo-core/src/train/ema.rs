//! Exponential moving average of weights (diffusion and GAN generators sample from it).
//!
//! shadow <- decay * shadow + (1 - decay) * weight after each optimiser step. With warmup the
//! decay used at update n is min(decay, (1 + n) / (10 + n)), as diffusers' EMAModel does, so
//! the average is not dominated by the random initial weights early in training.
use tch::{nn::VarStore, Tensor};

use crate::{Error, Result};

pub struct Ema {
    pub decay: f64,
    pub warmup: bool,
    updates: u64,
    /// (name, live variable, shadow copy), sorted by name.
    entries: Vec<(String, Tensor, Tensor)>,
}

impl Ema {
    /// Tracks every floating-point variable of `vs`, starting from their current values.
    pub fn new(vs: &VarStore, decay: f64, warmup: bool) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::Config(format!("EMA decay {decay} is not in [0, 1]")));
        }
        let mut entries: Vec<(String, Tensor, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.is_floating_point())
            .map(|(n, t)| {
                let shadow = t.detach().copy();
                (n, t, shadow)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Ema { decay, warmup, updates: 0, entries })
    }

    /// The decay the next update will use.
    pub fn current_decay(&self) -> f64 {
        if self.warmup {
            let n = self.updates as f64;
            self.decay.min((1.0 + n) / (10.0 + n))
        } else {
            self.decay
        }
    }

    pub fn update(&mut self) -> Result<()> {
        let w = 1.0 - self.current_decay();
        tch::no_grad(|| -> Result<()> {
            for (_, var, shadow) in &mut self.entries {
                let _ = shadow.f_lerp_(var, w)?;
            }
            Ok(())
        })?;
        self.updates += 1;
        Ok(())
    }

    /// The averaged weights by variable name, plus the update count (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            self.entries.iter().map(|(n, _, s)| (n.clone(), s.shallow_clone())).collect();
        v.push(("__ema_updates".into(), Tensor::from_slice(&[self.updates as i64])));
        v
    }

    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let get = |k: &str| state.iter().find(|(n, _)| n == k).map(|(_, t)| t);
        tch::no_grad(|| -> Result<()> {
            for (name, _, shadow) in &mut self.entries {
                let src = get(name).ok_or_else(|| Error::Weights(format!("EMA state has no '{name}'")))?;
                if src.size() != shadow.size() {
                    return Err(Error::Weights(format!("EMA state '{name}' has the wrong shape")));
                }
                shadow.f_copy_(src)?;
            }
            Ok(())
        })?;
        if let Some(n) = get("__ema_updates") {
            self.updates = n.f_int64_value(&[0])? as u64;
        }
        Ok(())
    }

    /// Copies the averaged weights into `vs` (a second copy of the model, used for sampling).
    pub fn copy_to(&self, vs: &VarStore) -> Result<()> {
        let vars = vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, _, shadow) in &self.entries {
                let mut dst = vars
                    .get(name)
                    .ok_or_else(|| Error::Weights(format!("EMA target has no variable '{name}'")))?
                    .shallow_clone();
                dst.f_copy_(shadow)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn averages_with_and_without_warmup() {
        let vs = VarStore::new(Device::Cpu);
        let mut w = vs.root().var_copy("w", &Tensor::from_slice(&[0.0f32]));
        let mut ema = Ema::new(&vs, 0.9, false).unwrap();
        let _ = tch::no_grad(|| w.fill_(1.0));
        ema.update().unwrap();
        ema.update().unwrap();
        // 1 - 0.9^2
        let got = ema.state()[0].1.double_value(&[0]);
        assert!((got - 0.19).abs() < 1e-6, "{got}");

        let mut warm = Ema::new(&vs, 0.999, true).unwrap();
        assert!((warm.current_decay() - 0.1).abs() < 1e-12);
        warm.update().unwrap();
        assert!((warm.current_decay() - 2.0 / 11.0).abs() < 1e-12);

        let other = VarStore::new(Device::Cpu);
        let v = other.root().var_copy("w", &Tensor::from_slice(&[5.0f32]));
        ema.copy_to(&other).unwrap();
        assert!((v.double_value(&[0]) - 0.19).abs() < 1e-6);
        assert!(Ema::new(&vs, 1.5, false).is_err());
    }
}
