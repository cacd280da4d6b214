//! Learning-rate schedules, as a function of the optimiser step.
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    Constant {
        lr: f64,
    },
    /// nanoGPT's `get_lr`: linear warmup to `lr` over `warmup_steps` (step i gets
    /// lr * (i+1)/(warmup+1)), then half a cosine down to `min_lr` at `decay_steps`, then `min_lr`.
    WarmupCosine {
        lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        decay_steps: u64,
    },
    /// Linear warmup as above, then a straight line down to `min_lr` at `decay_steps`.
    WarmupLinear {
        lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        decay_steps: u64,
    },
}

impl LrSchedule {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("learning-rate schedule: {m}")));
        match *self {
            LrSchedule::Constant { lr } if !(lr.is_finite() && lr >= 0.0) => bad("lr must be >= 0"),
            LrSchedule::WarmupCosine { lr, min_lr, warmup_steps, decay_steps }
            | LrSchedule::WarmupLinear { lr, min_lr, warmup_steps, decay_steps } => {
                if !(lr.is_finite() && min_lr.is_finite() && lr >= 0.0 && min_lr >= 0.0) {
                    bad("lr and min_lr must be >= 0")
                } else if warmup_steps > decay_steps {
                    bad("warmup_steps must not exceed decay_steps")
                } else {
                    Ok(())
                }
            }
            LrSchedule::Constant { .. } => Ok(()),
        }
    }

    /// The learning rate for optimiser step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::WarmupCosine { lr, min_lr, warmup_steps, decay_steps }
            | LrSchedule::WarmupLinear { lr, min_lr, warmup_steps, decay_steps } => {
                if step < warmup_steps {
                    return lr * (step + 1) as f64 / (warmup_steps + 1) as f64;
                }
                if step >= decay_steps {
                    return min_lr;
                }
                let ratio = (step - warmup_steps) as f64 / (decay_steps - warmup_steps) as f64;
                let coeff = match self {
                    LrSchedule::WarmupCosine { .. } => 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()),
                    _ => 1.0 - ratio,
                };
                min_lr + coeff * (lr - min_lr)
            }
        }
    }

    /// The peak learning rate.
    pub fn peak(&self) -> f64 {
        match *self {
            LrSchedule::Constant { lr }
            | LrSchedule::WarmupCosine { lr, .. }
            | LrSchedule::WarmupLinear { lr, .. } => lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_follows_nanogpt() {
        let s = LrSchedule::WarmupCosine { lr: 1e-3, min_lr: 1e-4, warmup_steps: 100, decay_steps: 2000 };
        assert!((s.lr_at(0) - 1e-3 / 101.0).abs() < 1e-12);
        assert!((s.lr_at(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-12);
        assert!((s.lr_at(100) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(1050) - 5.5e-4).abs() < 1e-9, "midpoint is the mean of lr and min_lr");
        assert_eq!(s.lr_at(2000), 1e-4);
        assert_eq!(s.lr_at(5000), 1e-4);
        let lrs: Vec<f64> = (100..2000).map(|i| s.lr_at(i)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "decays monotonically");
    }

    #[test]
    fn linear_and_constant() {
        let s = LrSchedule::WarmupLinear { lr: 1.0, min_lr: 0.0, warmup_steps: 0, decay_steps: 10 };
        assert_eq!(s.lr_at(0), 1.0);
        assert!((s.lr_at(5) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr_at(10), 0.0);
        assert_eq!(LrSchedule::Constant { lr: 0.3 }.lr_at(77), 0.3);
    }

    #[test]
    fn validation_and_serde() {
        let s = LrSchedule::WarmupCosine { lr: 1.0, min_lr: 0.1, warmup_steps: 20, decay_steps: 10 };
        assert!(s.validate().unwrap_err().to_string().contains("warmup_steps"));
        let j = serde_json::to_string(&LrSchedule::Constant { lr: 0.5 }).unwrap();
        assert_eq!(j, r#"{"kind":"constant","lr":0.5}"#);
        assert_eq!(serde_json::from_str::<LrSchedule>(&j).unwrap(), LrSchedule::Constant { lr: 0.5 });
    }
}
