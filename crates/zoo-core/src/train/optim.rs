//! AdamW (Loshchilov & Hutter), the update of `torch.optim.AdamW` with decoupled weight decay,
//! written out on tensors so its state can be saved with a checkpoint and a resumed run
//! continues exactly (tch's built-in optimisers keep their state inside libtorch).
//!
//! Parameter groups follow nanoGPT: matrices and embeddings (dim >= 2) decay; biases and
//! norm gains (dim < 2) do not. [`AdamW::with_decay_rule`] takes another rule.
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

struct Param {
    name: String,
    var: Tensor,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    params: Vec<Param>,
    step: u64,
}

impl AdamW {
    /// All trainable variables of `vs`, with nanoGPT's decay rule (dim >= 2 decays).
    pub fn new(vs: &VarStore, cfg: AdamWConfig) -> Self {
        Self::with_decay_rule(vs, cfg, |_, t| t.dim() >= 2)
    }

    /// All trainable variables of `vs`; `decay(name, var)` says which get weight decay.
    pub fn with_decay_rule(vs: &VarStore, cfg: AdamWConfig, decay: impl Fn(&str, &Tensor) -> bool) -> Self {
        let mut vars: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| Param {
                decay: decay(&name, &var),
                m: var.zeros_like(),
                v: var.zeros_like(),
                name,
                var,
            })
            .collect();
        AdamW { cfg, params, step: 0 }
    }

    /// Steps taken so far (the bias correction uses it).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// (number of decayed, number of not-decayed) parameter elements.
    pub fn group_sizes(&self) -> (i64, i64) {
        self.params.iter().fold((0, 0), |(d, n), p| {
            let k = p.var.numel() as i64;
            if p.decay {
                (d + k, n)
            } else {
                (d, n + k)
            }
        })
    }

    /// The trainable variables this optimiser updates.
    pub fn variables(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.var.shallow_clone()).collect()
    }

    /// Drops the gradients (PyTorch's default `zero_grad(set_to_none=True)`): the next backward
    /// stores fresh ones, and a variable it does not reach keeps none, so [`AdamW::step`] leaves
    /// it alone as `torch.optim.AdamW` does.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            crate::ops::clear_grad(&p.var);
        }
    }

    /// One update at learning rate `lr`. Variables without a gradient are left alone.
    ///
    /// The arithmetic is libtorch's fused AdamW kernel (`torch._fused_adamw_`, what
    /// `torch.optim.AdamW(fused=True)` runs): per variable, w *= 1 - lr wd (decaying group
    /// only), m = lerp(m, g, 1 - beta1), v = beta2 v + (1 - beta2) g^2, and
    /// w -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), in one vectorised pass instead of one
    /// kernel per step of that formula.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        let c = &self.cfg;
        for decay in [true, false] {
            let (group, grads): (Vec<&Param>, Vec<Tensor>) = self
                .params
                .iter()
                .filter(|p| p.decay == decay)
                .map(|p| (p, p.var.grad()))
                .filter(|(_, g)| g.defined())
                .unzip();
            crate::ops::fused_adamw(
                &group.iter().map(|p| &p.var).collect::<Vec<_>>(),
                &grads.iter().collect::<Vec<_>>(),
                &group.iter().map(|p| &p.m).collect::<Vec<_>>(),
                &group.iter().map(|p| &p.v).collect::<Vec<_>>(),
                self.step,
                lr,
                (c.beta1, c.beta2),
                if decay { c.weight_decay } else { 0.0 },
                c.eps,
            )?;
        }
        Ok(())
    }

    /// The state to checkpoint: moments by variable name, and the step count.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::from_slice(&[self.step as i64]))];
        for p in &self.params {
            out.push((format!("exp_avg.{}", p.name), p.m.shallow_clone()));
            out.push((format!("exp_avg_sq.{}", p.name), p.v.shallow_clone()));
        }
        out
    }

    /// Restores [`AdamW::state`]; every moment must be present with the variable's shape.
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let get = |k: &str| state.iter().find(|(n, _)| n == k).map(|(_, t)| t);
        let step = get("step").ok_or_else(|| Error::Weights("optimizer state has no 'step'".into()))?;
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                for (prefix, dst) in [("exp_avg", &mut p.m), ("exp_avg_sq", &mut p.v)] {
                    let key = format!("{prefix}.{}", p.name);
                    let src =
                        get(&key).ok_or_else(|| Error::Weights(format!("optimizer state has no '{key}'")))?;
                    if src.size() != dst.size() {
                        return Err(Error::Weights(format!(
                            "optimizer state '{key}' has shape {:?}, the variable {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.f_copy_(src)?;
                }
            }
            Ok(())
        })?;
        self.step = step.f_int64_value(&[0])? as u64;
        Ok(())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
pub fn clip_grad_norm(vars: &[Tensor], max_norm: f64) -> Result<f64> {
    let grads: Vec<Tensor> = vars.iter().map(Tensor::grad).filter(Tensor::defined).collect();
    if grads.is_empty() {
        return Ok(0.0);
    }
    let norms = grads
        .iter()
        .map(|g| g.f_norm().and_then(|n| n.f_to_kind(Kind::Float)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let total = Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?;
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        tch::no_grad(|| -> Result<()> {
            for mut g in grads {
                let _ = g.f_mul_scalar_(coef)?;
            }
            Ok(())
        })?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    /// w = [1, -2] (decayed) and b = [0.5] (not decayed), loss = sum(w^2) + 3b, three steps,
    /// against the update rule of torch.optim.AdamW's documentation written out in f64.
    #[test]
    fn matches_the_documented_update() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]));
        let b = vs.root().var_copy("b", &Tensor::from_slice(&[0.5f32]));
        let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.1, ..Default::default() };
        let mut opt = AdamW::new(&vs, cfg.clone());
        assert_eq!(opt.group_sizes(), (2, 1));

        // The same algorithm in plain f64, written from PyTorch's documentation.
        let (mut pw, mut pb) = (vec![1.0f64, -2.0], 0.5f64);
        let (mut mw, mut vw, mut mb, mut vb) = (vec![0.0; 2], vec![0.0; 2], 0.0, 0.0);
        for step in 1..=3 {
            opt.zero_grad();
            let loss = w.square().sum(Kind::Float) + &b * 3.0;
            loss.sum(Kind::Float).backward();
            opt.step(cfg.lr).unwrap();
            let t = step as f64;
            let (bc1, bc2) = (1.0 - 0.9f64.powf(t), 1.0 - 0.999f64.powf(t));
            for i in 0..2 {
                let g = 2.0 * pw[i];
                pw[i] *= 1.0 - 0.1 * 0.1;
                mw[i] = 0.9 * mw[i] + 0.1 * g;
                vw[i] = 0.999 * vw[i] + 0.001 * g * g;
                pw[i] -= 0.1 * (mw[i] / bc1) / ((vw[i] / bc2).sqrt() + 1e-8);
            }
            mb = 0.9 * mb + 0.1 * 3.0;
            vb = 0.999 * vb + 0.001 * 9.0;
            pb -= 0.1 * (mb / bc1) / ((vb / bc2).sqrt() + 1e-8);
        }
        let got: Vec<f32> = Vec::try_from(w.view([-1])).unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - pw[i]).abs() < 1e-5, "{got:?} vs {pw:?}");
        }
        assert!((b.double_value(&[0]) - pb).abs() < 1e-5);
    }

    #[test]
    fn zero_grad_drops_gradients_and_unreached_variables_stay_put() {
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().var_copy("a", &Tensor::from_slice(&[1.0f32, 2.0]));
        let b = vs.root().var_copy("b", &Tensor::from_slice(&[3.0f32]));
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        (a.sum(Kind::Float) + b.sum(Kind::Float)).backward();
        opt.step(0.1).unwrap();
        opt.zero_grad();
        assert!(!a.grad().defined() && !b.grad().defined());
        // two backward passes after zero_grad add up; b, not reached, keeps no gradient
        a.square().sum(Kind::Float).backward();
        (&a * 3.0).sum(Kind::Float).backward();
        let want: Vec<f32> = Vec::try_from(&a * 2.0 + 3.0).unwrap();
        assert_eq!(Vec::<f32>::try_from(a.grad()).unwrap(), want);
        assert!(!b.grad().defined());
        let b_before = b.double_value(&[0]);
        opt.step(0.1).unwrap();
        assert_eq!(b.double_value(&[0]), b_before, "torch.optim.AdamW skips a variable without a gradient");
    }

    #[test]
    fn state_round_trip_continues_exactly() {
        let run = |split: Option<usize>| -> Vec<f32> {
            let vs = VarStore::new(Device::Cpu);
            let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 3.0]));
            let mut opt = AdamW::new(&vs, AdamWConfig::default());
            for i in 0..6 {
                if Some(i) == split {
                    let state: Vec<(String, Tensor)> =
                        opt.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
                    opt = AdamW::new(&vs, AdamWConfig::default());
                    opt.load_state(&state).unwrap();
                }
                opt.zero_grad();
                (w.pow_tensor_scalar(3)).sum(Kind::Float).backward();
                opt.step(0.05).unwrap();
            }
            Vec::try_from(&w).unwrap()
        };
        assert_eq!(run(None), run(Some(3)));
    }

    #[test]
    fn load_state_names_what_is_missing() {
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("w", &[2], nn::Init::Const(0.0));
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let e = opt.load_state(&[("step".into(), Tensor::from_slice(&[1i64]))]).unwrap_err();
        assert!(e.to_string().contains("exp_avg.w"), "{e}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().var_copy("a", &Tensor::from_slice(&[3.0f32]));
        let b = vs.root().var_copy("b", &Tensor::from_slice(&[4.0f32]));
        (a.square() * 0.5 + b.square() * 0.5).sum(Kind::Float).backward();
        let before = clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        let after = (a.grad().square() + b.grad().square()).sqrt().double_value(&[0]);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        // Under the limit nothing changes.
        let n = clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 10.0).unwrap();
        assert!((n - 1.0).abs() < 1e-5);
    }
}
