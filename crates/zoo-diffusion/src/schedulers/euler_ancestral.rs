//! Euler ancestral: Euler steps to sigma_down plus fresh noise of sigma_up (k-diffusion's
//! `sample_euler_ancestral`, eta = 1). Mirrors diffusers' `EulerAncestralDiscreteScheduler`,
//! which has no `sample` prediction (an error here too).
use tch::Tensor;

use super::euler::{float_timesteps, init_sigma, sigma_add_noise, train_sigmas};
use super::{
    cached_step_index, check_steps, interp_index, scale_by_sigma, NoiseTable, PredictionType, Scheduler,
    SchedulerConfig, SchedulerOutput,
};
use crate::{Error, Result};

pub struct EulerAncestral {
    cfg: SchedulerConfig,
    table: NoiseTable,
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl EulerAncestral {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        if cfg.prediction_type == PredictionType::Sample {
            return Err(Error::Config(
                "scheduler config key 'prediction_type': euler-ancestral supports epsilon and v_prediction, not sample"
                    .into(),
            ));
        }
        let (table, train_sigmas) = train_sigmas(cfg)?;
        let timesteps: Vec<f64> = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        let mut sigmas: Vec<f32> = train_sigmas.iter().rev().cloned().collect();
        sigmas.push(0.0);
        Ok(EulerAncestral { cfg: cfg.clone(), table, train_sigmas, timesteps, sigmas, step_index: None })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn table(&self) -> &NoiseTable {
        &self.table
    }

    fn index(&mut self, timestep: f64) -> Result<usize> {
        cached_step_index(&mut self.step_index, &self.timesteps, timestep)
    }
}

impl Scheduler for EulerAncestral {
    fn name(&self) -> &'static str {
        "euler-ancestral"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        let timesteps = float_timesteps(&self.cfg, n);
        let mut sigmas: Vec<f32> =
            timesteps.iter().map(|&t| interp_index(t, &self.train_sigmas) as f32).collect();
        sigmas.push(0.0);
        self.sigmas = sigmas;
        self.timesteps = timesteps;
        self.step_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        init_sigma(&self.cfg, &self.sigmas)
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self.index(timestep)?;
        scale_by_sigma(sample, self.sigmas[i])
    }

    fn step(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<SchedulerOutput> {
        let i = self.index(timestep)?;
        let sigma = self.sigmas[i];
        let to = *self
            .sigmas
            .get(i + 1)
            .ok_or_else(|| Error::Input("Euler ancestral: stepped past the last timestep".into()))?;
        let x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => sample.f_sub(&model_output.f_mul_scalar(sigma as f64)?)?,
            PredictionType::VPrediction => {
                let c = -sigma / (sigma * sigma + 1.0).powf(0.5);
                model_output
                    .f_mul_scalar(c as f64)?
                    .f_add(&sample.f_div_scalar((sigma * sigma + 1.0) as f64)?)?
            }
            PredictionType::Sample => {
                return Err(Error::Config("euler-ancestral does not support prediction_type sample".into()))
            }
        };
        // Split the move to sigma_to into a deterministic part (down) and fresh noise (up).
        let up = (to.powi(2) * (sigma.powi(2) - to.powi(2)) / sigma.powi(2)).powf(0.5);
        let down = (to.powi(2) - up.powi(2)).powf(0.5);
        let derivative = sample.f_sub(&x0)?.f_div_scalar(sigma as f64)?;
        let dt = down - sigma;
        let mut prev = sample.f_add(&derivative.f_mul_scalar(dt as f64)?)?;
        let noise = Tensor::f_randn(model_output.size(), (model_output.kind(), model_output.device()))?;
        prev = prev.f_add(&noise.f_mul_scalar(up as f64)?)?;
        self.step_index = Some(i + 1);
        Ok(SchedulerOutput { prev_sample: prev, pred_original_sample: Some(x0) })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        sigma_add_noise(&self.timesteps, &self.sigmas, original, noise, timesteps)
    }

    fn is_stochastic(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_prediction_is_refused_and_last_sigma_is_zero() {
        let cfg = SchedulerConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        let e = EulerAncestral::new(&cfg).err().unwrap().to_string();
        assert!(e.contains("prediction_type"), "{e}");
        let mut s = EulerAncestral::new(&SchedulerConfig::default()).unwrap();
        s.set_timesteps(4).unwrap();
        assert_eq!(s.sigmas().len(), 5);
        assert_eq!(s.sigmas()[4], 0.0);
        assert!(s.is_stochastic());
    }
}
