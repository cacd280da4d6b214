//! DDIM: "Denoising Diffusion Implicit Models" (Song et al. 2021). Deterministic with eta = 0;
//! eta = 1 is DDPM-like ancestral sampling. Mirrors diffusers' `DDIMScheduler`.
use tch::Tensor;

use super::{
    check_steps, clip_or_threshold, spaced_timesteps, NoiseTable, PredictionType, Scheduler, SchedulerConfig,
    SchedulerOutput, TimestepSpacing,
};
use crate::{Error, Result};

pub struct Ddim {
    cfg: SchedulerConfig,
    table: NoiseTable,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
    /// The weight of fresh noise in each step (0: deterministic DDIM).
    pub eta: f64,
}

impl Ddim {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        let table = NoiseTable::new(cfg)?;
        let final_alpha_cumprod =
            if cfg.set_alpha_to_one.unwrap_or(true) { 1.0 } else { table.alphas_cumprod[0] };
        let timesteps = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(Ddim {
            cfg: cfg.clone(),
            table,
            final_alpha_cumprod,
            timesteps,
            num_inference_steps: None,
            eta: 0.0,
        })
    }

    /// The same scheduler with noise weight `eta` (>= 0).
    pub fn with_eta(mut self, eta: f64) -> Result<Self> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::Config(format!("--eta {eta}: must be 0 or more")));
        }
        self.eta = eta;
        Ok(self)
    }
}

impl Scheduler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
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
        self.num_inference_steps = Some(n);
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
        let n = self
            .num_inference_steps
            .ok_or_else(|| Error::Input("DDIM: call set_timesteps before step".into()))?;
        let t = timestep as i64;
        if t < 0 || t as usize >= self.cfg.num_train_timesteps {
            return Err(Error::Input(format!("timestep {timestep} is out of range")));
        }
        // As diffusers: the previous timestep is t - T / n, whatever the spacing.
        let prev_t = t - (self.cfg.num_train_timesteps / n) as i64;
        let a_t = self.table.alphas_cumprod[t as usize];
        let a_prev =
            if prev_t >= 0 { self.table.alphas_cumprod[prev_t as usize] } else { self.final_alpha_cumprod };
        let b_t = 1.0 - a_t;

        // 1. x0 and epsilon from the model output
        let (x0, eps) = match self.cfg.prediction_type {
            PredictionType::Epsilon => (
                sample
                    .f_sub(&model_output.f_mul_scalar(b_t.powf(0.5) as f64)?)?
                    .f_div_scalar(a_t.powf(0.5) as f64)?,
                model_output.shallow_clone(),
            ),
            PredictionType::Sample => (
                model_output.shallow_clone(),
                sample
                    .f_sub(&model_output.f_mul_scalar(a_t.powf(0.5) as f64)?)?
                    .f_div_scalar(b_t.powf(0.5) as f64)?,
            ),
            PredictionType::VPrediction => (
                sample
                    .f_mul_scalar(a_t.powf(0.5) as f64)?
                    .f_sub(&model_output.f_mul_scalar(b_t.powf(0.5) as f64)?)?,
                model_output
                    .f_mul_scalar(a_t.powf(0.5) as f64)?
                    .f_add(&sample.f_mul_scalar(b_t.powf(0.5) as f64)?)?,
            ),
        };
        // 2. clip or threshold x0 (epsilon is not recomputed: use_clipped_model_output = false)
        let x0 = clip_or_threshold(x0, &self.cfg, true)?;

        // 3. sigma_t(eta), formula 16 of the paper
        let b_prev = 1.0 - a_prev;
        let variance = b_prev / b_t * (1.0 - a_t / a_prev);
        let std = (self.eta as f32) * variance.powf(0.5);

        // 4. x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - std^2) eps (+ std z)
        let dir = eps.f_mul_scalar((1.0 - a_prev - std.powi(2)).powf(0.5) as f64)?;
        let mut prev = x0.f_mul_scalar(a_prev.powf(0.5) as f64)?.f_add(&dir)?;
        if self.eta > 0.0 {
            let noise = Tensor::f_randn(model_output.size(), (model_output.kind(), model_output.device()))?;
            prev = prev.f_add(&noise.f_mul_scalar(std as f64)?)?;
        }
        Ok(SchedulerOutput { prev_sample: prev, pred_original_sample: Some(x0) })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        self.table.add_noise(original, noise, timesteps)
    }

    fn is_stochastic(&self) -> bool {
        self.eta > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// With the true noise as the model output, deterministic DDIM walks x_t back to x0 along
    /// the forward process: every step lands on add_noise(x0, eps, t_prev).
    #[test]
    fn deterministic_steps_follow_the_forward_process() {
        let cfg = SchedulerConfig { clip_sample: Some(false), ..Default::default() };
        let mut s = Ddim::new(&cfg).unwrap();
        s.set_timesteps(5).unwrap();
        assert_eq!(s.timesteps(), &[800.0, 600.0, 400.0, 200.0, 0.0]);
        let x0 = Tensor::from_slice(&[0.3f32, -0.7, 0.2, 0.9]).view([1, 1, 2, 2]);
        let eps = Tensor::from_slice(&[0.5f32, 1.0, -1.5, 0.1]).view([1, 1, 2, 2]);
        let mut x = s.add_noise(&x0, &eps, &Tensor::from_slice(&[800i64])).unwrap();
        for &t in &[800i64, 600, 400, 200] {
            x = s.step(&eps, t as f64, &x).unwrap().prev_sample;
            let want = s.add_noise(&x0, &eps, &Tensor::from_slice(&[t - 200])).unwrap();
            let d = (&x - &want).abs().max().double_value(&[]);
            assert!(d < 1e-5, "t {t}: {d}");
        }
        assert!(!s.is_stochastic());
        assert!(Ddim::new(&cfg).unwrap().with_eta(-1.0).is_err());
        let z = Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu));
        assert!(Ddim::new(&cfg).unwrap().step(&z, 10.0, &z).is_err(), "step before set_timesteps");
    }
}
