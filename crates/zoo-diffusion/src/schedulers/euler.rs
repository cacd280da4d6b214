//! Euler: the first-order sampler of Karras et al. 2022 ("Elucidating the Design Space of
//! Diffusion-Based Generative Models", algorithm 2 without churn) on the sigma parametrisation
//! x = x0 + sigma * eps. Mirrors diffusers' `EulerDiscreteScheduler` (linear interpolation of
//! sigmas, optional Karras sigmas, s_churn = 0).
use tch::Tensor;

use super::{
    cached_step_index, check_steps, index_for_timestep, interp_index, karras_sigmas, scale_by_sigma,
    sigma_to_t, spaced_timesteps, FinalSigmas, NoiseTable, PredictionType, Scheduler, SchedulerConfig,
    SchedulerOutput, TimestepSpacing,
};
use crate::{Error, Result};

/// The sigma table of the sigma-based schedulers: sqrt((1 - alpha_bar) / alpha_bar) per
/// training timestep, float32; with zero terminal SNR the last alpha_bar is 2^-24 (as diffusers)
/// so that sigma stays finite.
pub(crate) fn train_sigmas(cfg: &SchedulerConfig) -> Result<(NoiseTable, Vec<f32>)> {
    let mut table = NoiseTable::new(cfg)?;
    if cfg.rescale_betas_zero_snr {
        if let Some(last) = table.alphas_cumprod.last_mut() {
            *last = 2f32.powi(-24);
        }
    }
    let sigmas = table.sigmas()?;
    Ok((table, sigmas))
}

/// diffusers' float inference timesteps of the Euler schedulers (float32 values).
pub(crate) fn float_timesteps(cfg: &SchedulerConfig, n: usize) -> Vec<f64> {
    let spacing = cfg.spacing(TimestepSpacing::Linspace);
    spaced_timesteps(spacing, cfg.num_train_timesteps, n, cfg.steps_offset)
        .into_iter()
        .map(|t| t as f32 as f64)
        .collect()
}

/// The standard deviation of the initial noise: the largest sigma, or sqrt(sigma^2 + 1) with
/// `leading` spacing (diffusers' rule).
pub(crate) fn init_sigma(cfg: &SchedulerConfig, sigmas: &[f32]) -> f64 {
    let max = sigmas.iter().cloned().fold(0.0f32, f32::max);
    match cfg.spacing(TimestepSpacing::Linspace) {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
        TimestepSpacing::Leading => (max * max + 1.0).powf(0.5) as f64,
    }
}

pub struct Euler {
    cfg: SchedulerConfig,
    table: NoiseTable,
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    /// One more than the timesteps: the last is 0 (or sigma_min).
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl Euler {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        let (table, train_sigmas) = train_sigmas(cfg)?;
        let timesteps: Vec<f64> = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        let mut sigmas: Vec<f32> = train_sigmas.iter().rev().cloned().collect();
        sigmas.push(0.0);
        Ok(Euler { cfg: cfg.clone(), table, train_sigmas, timesteps, sigmas, step_index: None })
    }

    /// The current sigmas (one per timestep, then the final one).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn index(&mut self, timestep: f64) -> Result<usize> {
        cached_step_index(&mut self.step_index, &self.timesteps, timestep)
    }
}

impl Scheduler for Euler {
    fn name(&self) -> &'static str {
        if self.cfg.use_karras_sigmas {
            "euler-karras"
        } else {
            "euler"
        }
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        let mut timesteps = float_timesteps(&self.cfg, n);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp_index(t, &self.train_sigmas)).collect();
        if self.cfg.use_karras_sigmas {
            let log_sigmas: Vec<f32> = self.train_sigmas.iter().map(|s| s.ln()).collect();
            let lo = self.cfg.sigma_min.unwrap_or(sigmas[n - 1]);
            let hi = self.cfg.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(lo, hi, n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas) as f32 as f64).collect();
        }
        let last = match self.cfg.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => self.train_sigmas[0] as f64,
        };
        sigmas.push(last);
        self.sigmas = sigmas.into_iter().map(|s| s as f32).collect();
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
        let next = *self.sigmas.get(i + 1).ok_or_else(|| {
            Error::Input("Euler: stepped past the last timestep; call set_timesteps again".into())
        })?;
        let x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => sample.f_sub(&model_output.f_mul_scalar(sigma as f64)?)?,
            PredictionType::VPrediction => {
                let c = -sigma / (sigma * sigma + 1.0).powf(0.5);
                model_output
                    .f_mul_scalar(c as f64)?
                    .f_add(&sample.f_div_scalar((sigma * sigma + 1.0) as f64)?)?
            }
            PredictionType::Sample => model_output.shallow_clone(),
        };
        let derivative = sample.f_sub(&x0)?.f_div_scalar(sigma as f64)?;
        let dt = next - sigma;
        let prev = sample.f_add(&derivative.f_mul_scalar(dt as f64)?)?;
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
}

impl Euler {
    /// The training noise table (for a v-prediction target).
    pub fn table(&self) -> &NoiseTable {
        &self.table
    }
}

/// x0 + sigma(t) noise for the sigma-based schedulers. Shapes: (B, ...), timesteps (B).
pub(crate) fn sigma_add_noise(
    schedule: &[f64],
    sigmas: &[f32],
    original: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<Tensor> {
    let ts = Vec::<f64>::try_from(timesteps.f_to_kind(tch::Kind::Double)?.f_view([-1])?)?;
    let per: Vec<f32> =
        ts.iter().map(|&t| index_for_timestep(schedule, t).map(|i| sigmas[i])).collect::<Result<_>>()?;
    let size = original.size();
    if size.first() != Some(&(per.len() as i64)) {
        return Err(Error::Input(format!("{} timesteps for a batch of shape {size:?}", per.len())));
    }
    let mut shape = vec![per.len() as i64];
    shape.extend(std::iter::repeat_n(1, size.len() - 1));
    let sigma = Tensor::from_slice(&per)
        .to_device(original.device())
        .to_kind(original.kind())
        .f_view(shape.as_slice())?;
    Ok(original.f_add(&noise.f_mul(&sigma)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn sigmas_and_init_noise() {
        let mut s = Euler::new(&SchedulerConfig::default()).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps().len(), 10);
        assert_eq!(s.timesteps()[0], 999.0);
        assert_eq!(s.sigmas().len(), 11);
        assert_eq!(*s.sigmas().last().unwrap(), 0.0);
        // sigma at t = 999 of the linear schedule is about 157.4.
        let t = NoiseTable::new(&SchedulerConfig::default()).unwrap();
        let a = t.alphas_cumprod[999] as f64;
        assert!((s.init_noise_sigma() - ((1.0 - a) / a).sqrt()).abs() < 1e-3);
        assert!(s.sigmas().windows(2).all(|w| w[1] < w[0]));
    }

    /// With the true x0 as the prediction, one Euler step to sigma 0 lands on x0.
    #[test]
    fn a_perfect_prediction_lands_on_x0() {
        let cfg = SchedulerConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        let mut s = Euler::new(&cfg).unwrap();
        s.set_timesteps(1).unwrap();
        let x0 = Tensor::from_slice(&[0.5f32, -0.5]).view([1, 2, 1, 1]);
        let eps = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2, 1, 1]);
        let t = s.timesteps()[0];
        let xt = s.add_noise(&x0, &eps, &Tensor::from_slice(&[t])).unwrap();
        let out = s.step(&x0, t, &xt).unwrap().prev_sample;
        assert!((&out - &x0).abs().max().double_value(&[]) < 1e-5);
        let z = Tensor::zeros([1, 2, 1, 1], (Kind::Float, Device::Cpu));
        assert!(s.step(&z, t, &z).is_err(), "a step past the end is an error");
    }

    #[test]
    fn karras_sigmas_span_the_interpolated_range() {
        let cfg = SchedulerConfig { use_karras_sigmas: true, ..Default::default() };
        let mut k = Euler::new(&cfg).unwrap();
        k.set_timesteps(8).unwrap();
        let mut p = Euler::new(&SchedulerConfig::default()).unwrap();
        p.set_timesteps(8).unwrap();
        assert!((k.sigmas()[0] - p.sigmas()[0]).abs() < 1e-3);
        assert!((k.sigmas()[7] - p.sigmas()[7]).abs() < 1e-5);
        assert!((k.timesteps()[0] - 999.0).abs() < 1e-2);
    }
}
