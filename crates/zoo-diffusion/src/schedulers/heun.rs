//! Heun: the second-order sampler of Karras et al. 2022 ("Elucidating the Design Space of
//! Diffusion-Based Generative Models", algorithm 1) on x = x0 + sigma * eps: an Euler step to the
//! next sigma, then a correction with the mean of the slopes at both ends. Mirrors diffusers'
//! `HeunDiscreteScheduler` (optional Karras sigmas; exponential and beta sigmas not implemented).
//!
//! Every step but the last takes two model calls, so `timesteps()` lists each timestep after the
//! first twice (2n - 1 entries for n steps): the usual loop over `timesteps()` makes the calls.
//!
//! diffusers' HeunDiscreteScheduler defaults to `beta_start` 0.00085 and `beta_end` 0.012
//! (Stable Diffusion's); zoo's config defaults are DDPM's for every scheduler, so a config for Heun
//! should give both (diffusers' saved configs always do).
use tch::Tensor;

use super::euler::{float_timesteps, init_sigma, sigma_add_noise, train_sigmas};
use super::{
    cached_step_index, check_steps, interp_index, karras_sigmas, scale_by_sigma, sigma_to_t, NoiseTable,
    PredictionType, Scheduler, SchedulerConfig, SchedulerOutput,
};
use crate::{Error, Result};

/// What the first half of a step leaves for the second.
struct FirstHalf {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

pub struct Heun {
    cfg: SchedulerConfig,
    table: NoiseTable,
    train_sigmas: Vec<f32>,
    /// t0, t1, t1, t2, t2, ... (2n - 1)
    timesteps: Vec<f64>,
    /// s0, s1, s1, s2, s2, ..., s_{n-1}, s_{n-1}, 0 (2n)
    sigmas: Vec<f32>,
    step_index: Option<usize>,
    first_half: Option<FirstHalf>,
}

impl Heun {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        let (table, train_sigmas) = train_sigmas(cfg)?;
        let mut s = Heun {
            cfg: cfg.clone(),
            table,
            train_sigmas,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: None,
            first_half: None,
        };
        s.set_timesteps(cfg.num_train_timesteps)?;
        Ok(s)
    }

    /// The current sigmas (one per entry of `timesteps()`, then 0).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The training noise table (for a v-prediction target).
    pub fn table(&self) -> &NoiseTable {
        &self.table
    }

    fn index(&mut self, timestep: f64) -> Result<usize> {
        cached_step_index(&mut self.step_index, &self.timesteps, timestep)
    }
}

impl Scheduler for Heun {
    fn name(&self) -> &'static str {
        "heun"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        let mut timesteps = float_timesteps(&self.cfg, n);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp_index(t, &self.train_sigmas)).collect();
        if self.cfg.use_karras_sigmas {
            // diffusers' Heun has no sigma_min / sigma_max keys: the range is the interpolated one.
            let log_sigmas: Vec<f32> = self.train_sigmas.iter().map(|s| s.ln()).collect();
            sigmas = karras_sigmas(sigmas[n - 1], sigmas[0], n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas) as f32 as f64).collect();
        }
        sigmas.push(0.0);
        let sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).collect();
        self.sigmas = std::iter::once(sigmas[0])
            .chain(sigmas[1..n].iter().flat_map(|&s| [s, s]))
            .chain(std::iter::once(sigmas[n]))
            .collect();
        self.timesteps =
            std::iter::once(timesteps[0]).chain(timesteps[1..].iter().flat_map(|&t| [t, t])).collect();
        self.step_index = None;
        self.first_half = None;
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
        if i + 1 >= self.sigmas.len() {
            return Err(Error::Input(
                "Heun: stepped past the last timestep; call set_timesteps again".into(),
            ));
        }
        let first = self.first_half.is_none();
        // The second call of a step evaluates the model at the end of the Euler step.
        let (sigma, sigma_next) =
            if first { (self.sigmas[i], self.sigmas[i + 1]) } else { (self.sigmas[i - 1], self.sigmas[i]) };
        let at = if first { sigma } else { sigma_next };
        let mut x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => sample.f_sub(&model_output.f_mul_scalar(at as f64)?)?,
            PredictionType::VPrediction => {
                let c = -at / (at * at + 1.0).sqrt();
                model_output.f_mul_scalar(c as f64)?.f_add(&sample.f_div_scalar((at * at + 1.0) as f64)?)?
            }
            PredictionType::Sample => model_output.shallow_clone(),
        };
        if self.cfg.clip_sample.unwrap_or(false) {
            x0 = x0.f_clamp(-self.cfg.clip_sample_range, self.cfg.clip_sample_range)?;
        }
        let prev = match self.first_half.take() {
            None => {
                let derivative = sample.f_sub(&x0)?.f_div_scalar(sigma as f64)?;
                let dt = sigma_next - sigma;
                let prev = sample.f_add(&derivative.f_mul_scalar(dt as f64)?)?;
                self.first_half = Some(FirstHalf { derivative, dt, sample: sample.shallow_clone() });
                prev
            }
            Some(h) => {
                let d = sample.f_sub(&x0)?.f_div_scalar(sigma_next as f64)?;
                let d = h.derivative.f_add(&d)?.f_div_scalar(2.0)?;
                h.sample.f_add(&d.f_mul_scalar(h.dt as f64)?)?
            }
        };
        self.step_index = Some(i + 1);
        Ok(SchedulerOutput { prev_sample: prev, pred_original_sample: Some(x0) })
    }

    /// x0 + sigma(t) noise, t looked up in the inference timesteps.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        sigma_add_noise(&self.timesteps, &self.sigmas, original, noise, timesteps)
    }

    fn is_stochastic(&self) -> bool {
        false
    }

    fn order(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn timesteps_repeat_and_sigmas_pair_up() {
        let mut s = Heun::new(&SchedulerConfig::default()).unwrap();
        assert_eq!(s.timesteps().len(), 2 * 1000 - 1);
        s.set_timesteps(4).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 666.0, 666.0, 333.0, 333.0, 0.0, 0.0]);
        let sig = s.sigmas();
        assert_eq!(sig.len(), 8);
        assert_eq!((sig[1], sig[3], sig[5]), (sig[2], sig[4], sig[6]));
        assert_eq!(sig[7], 0.0);
        // np.linspace(0, 999, 1) is [0]
        s.set_timesteps(1).unwrap();
        assert_eq!(s.timesteps(), &[0.0]);
        assert_eq!(s.sigmas().len(), 2);
    }

    /// With the true x0 as the prediction, both slopes point at x0, so every full step lands on
    /// the x0 + sigma eps of the next sigma, and the last on x0.
    #[test]
    fn a_perfect_prediction_lands_on_x0() {
        let cfg = SchedulerConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        let mut s = Heun::new(&cfg).unwrap();
        s.set_timesteps(5).unwrap();
        let x0 = Tensor::from_slice(&[0.5f32, -0.25]).view([2, 1, 1, 1]);
        let eps = Tensor::from_slice(&[1.0f32, -1.5]).view([2, 1, 1, 1]);
        let t0 = s.timesteps()[0];
        let mut x = s.add_noise(&x0, &eps, &Tensor::from_slice(&[t0, t0])).unwrap();
        for t in s.timesteps().to_vec() {
            let _ = s.scale_model_input(&x, t).unwrap();
            x = s.step(&x0, t, &x).unwrap().prev_sample;
        }
        assert!((&x - &x0).abs().max().double_value(&[]) < 1e-5);
        let z = Tensor::zeros([2, 1, 1, 1], (Kind::Float, Device::Cpu));
        assert!(s.step(&z, 0.0, &z).is_err(), "a step past the end is an error");
    }
}
