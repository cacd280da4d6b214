//! DDPM: "Denoising Diffusion Probabilistic Models" (Ho et al. 2020), ancestral sampling.
//! Mirrors diffusers' `DDPMScheduler` (fixed variances; learned variances are not supported).
use tch::Tensor;

use super::{
    check_steps, clip_or_threshold, spaced_timesteps, NoiseTable, PredictionType, Scheduler, SchedulerConfig,
    SchedulerOutput, TimestepSpacing, VarianceType,
};
use crate::{Error, Result};

pub struct Ddpm {
    cfg: SchedulerConfig,
    table: NoiseTable,
    variance: VarianceType,
    timesteps: Vec<f64>,
}

impl Ddpm {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        let table = NoiseTable::new(cfg)?;
        let timesteps = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(Ddpm {
            cfg: cfg.clone(),
            table,
            variance: cfg.variance_type.unwrap_or(VarianceType::FixedSmall),
            timesteps,
        })
    }

    pub fn table(&self) -> &NoiseTable {
        &self.table
    }

    /// The timestep after `t` in the schedule, -1 after the last.
    fn previous_timestep(&self, t: f64) -> Result<i64> {
        let i =
            self.timesteps.iter().position(|&x| x == t).ok_or_else(|| {
                Error::Input(format!("timestep {t} is not one of the scheduler's timesteps"))
            })?;
        Ok(self.timesteps.get(i + 1).map_or(-1, |&p| p as i64))
    }
}

impl Scheduler for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        let spacing = self.cfg.spacing(TimestepSpacing::Leading);
        self.timesteps = spaced_timesteps(spacing, self.cfg.num_train_timesteps, n, self.cfg.steps_offset)
            .into_iter()
            .map(f64::round_ties_even)
            .collect();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<SchedulerOutput> {
        let t = timestep as usize;
        let prev_t = self.previous_timestep(timestep)?;
        // 1. alphas and betas (float32, as diffusers' 0-d tensors)
        let a_t = self.table.alphas_cumprod[t];
        let a_prev = if prev_t >= 0 { self.table.alphas_cumprod[prev_t as usize] } else { 1.0 };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;

        // 2. predicted x0 (formula 15 of the paper)
        let x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => sample
                .f_sub(&model_output.f_mul_scalar(b_t.powf(0.5) as f64)?)?
                .f_div_scalar(a_t.powf(0.5) as f64)?,
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => sample
                .f_mul_scalar(a_t.powf(0.5) as f64)?
                .f_sub(&model_output.f_mul_scalar(b_t.powf(0.5) as f64)?)?,
        };
        // 3. clip or threshold x0
        let x0 = clip_or_threshold(x0, &self.cfg, true)?;

        // 4-5. the posterior mean (formula 7)
        let c_x0 = a_prev.powf(0.5) * cur_beta / b_t;
        let c_xt = cur_alpha.powf(0.5) * b_prev / b_t;
        let mut prev = x0.f_mul_scalar(c_x0 as f64)?.f_add(&sample.f_mul_scalar(c_xt as f64)?)?;

        // 6. noise, drawn only for t > 0
        if t > 0 {
            let noise = Tensor::f_randn(model_output.size(), (model_output.kind(), model_output.device()))?;
            let var = (b_prev / b_t * cur_beta).max(1e-20);
            let scale = match self.variance {
                VarianceType::FixedSmall => var.powf(0.5),
                VarianceType::FixedSmallLog => (0.5 * var.ln()).exp(),
                VarianceType::FixedLarge => cur_beta.powf(0.5),
            };
            prev = prev.f_add(&noise.f_mul_scalar(scale as f64)?)?;
        }
        Ok(SchedulerOutput { prev_sample: prev, pred_original_sample: Some(x0) })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        self.table.add_noise(original, noise, timesteps)
    }

    fn is_stochastic(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn one_step_with_a_perfect_noise_prediction_recovers_x0() {
        let cfg = SchedulerConfig { clip_sample: Some(false), ..Default::default() };
        let mut s = Ddpm::new(&cfg).unwrap();
        s.set_timesteps(1000).unwrap();
        let x0 = Tensor::from_slice(&[0.5f32, -0.25, 0.75, 0.1]).view([1, 1, 2, 2]);
        let eps = Tensor::from_slice(&[1.0f32, -1.0, 0.5, 0.0]).view([1, 1, 2, 2]);
        // At t = 0 no noise is drawn and the step returns the predicted x0 exactly.
        let xt = s.add_noise(&x0, &eps, &Tensor::from_slice(&[0i64])).unwrap();
        let out = s.step(&eps, 0.0, &xt).unwrap();
        let d = (&out.prev_sample - &x0).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
        assert_eq!(out.prev_sample.size(), vec![1, 1, 2, 2]);
    }

    #[test]
    fn leading_timesteps_and_unknown_timestep() {
        let mut s = Ddpm::new(&SchedulerConfig::default()).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps()[0], 900.0);
        assert_eq!(*s.timesteps().last().unwrap(), 0.0);
        let x = Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu));
        assert!(s.step(&x, 901.0, &x).is_err());
        assert!(s.set_timesteps(0).is_err());
        assert!(s.set_timesteps(1001).is_err());
    }
}
