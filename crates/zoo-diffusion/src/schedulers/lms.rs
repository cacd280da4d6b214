//! LMS: a linear multistep (Adams-Bashforth) solver of the probability-flow ODE
//! dx/dsigma = (x - x0) / sigma, from k-diffusion's `sample_lms` (Crowson). Each step integrates
//! the Lagrange polynomial through the last `order` slopes over [sigma_i, sigma_{i+1}]. Mirrors
//! diffusers' `LMSDiscreteScheduler` (order 4, optional Karras sigmas).
//!
//! diffusers integrates each Lagrange basis polynomial numerically (scipy's `quad`, epsrel 1e-4,
//! on a float32 integrand); zoo integrates it exactly: the polynomial is expanded about
//! sigma_i and integrated term by term in f64.
use tch::Tensor;

use super::euler::{float_timesteps, init_sigma, sigma_add_noise, train_sigmas};
use super::{
    cached_step_index, check_steps, interp_index, karras_sigmas, scale_by_sigma, sigma_to_t, NoiseTable,
    PredictionType, Scheduler, SchedulerConfig, SchedulerOutput,
};
use crate::{Error, Result};

pub struct Lms {
    cfg: SchedulerConfig,
    table: NoiseTable,
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    /// One more than the timesteps: the last is 0.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
    /// The last `order` slopes (x - x0) / sigma, oldest first.
    derivatives: Vec<Tensor>,
    order: usize,
}

impl Lms {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        let (table, train_sigmas) = train_sigmas(cfg)?;
        let timesteps: Vec<f64> = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        let mut sigmas: Vec<f32> = train_sigmas.iter().rev().cloned().collect();
        sigmas.push(0.0);
        Ok(Lms {
            cfg: cfg.clone(),
            table,
            train_sigmas,
            timesteps,
            sigmas,
            step_index: None,
            derivatives: Vec::new(),
            order: 4,
        })
    }

    /// The same scheduler with a multistep formula of order `order` (diffusers' `step(order=)`,
    /// default 4).
    pub fn with_order(mut self, order: usize) -> Result<Self> {
        if order == 0 {
            return Err(Error::Config("LMS order: must be at least 1".into()));
        }
        self.order = order;
        Ok(self)
    }

    /// The current sigmas (one per timestep, then 0).
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

/// The integral over [sigma_i, sigma_{i+1}] of the `j`-th Lagrange basis polynomial through
/// sigma_i, sigma_{i-1}, ..., sigma_{i-order+1}: the weight of the slope `j` steps back.
fn lms_coefficient(sigmas: &[f32], order: usize, i: usize, j: usize) -> f64 {
    let s = |k: usize| sigmas[i - k] as f64;
    let origin = s(0);
    // Coefficients of the numerator in u = tau - sigma_i, lowest power first.
    let mut poly = vec![1.0f64];
    let mut denom = 1.0f64;
    for k in (0..order).filter(|&k| k != j) {
        let root = s(k) - origin;
        let mut next = vec![0.0; poly.len() + 1];
        for (p, &c) in poly.iter().enumerate() {
            next[p + 1] += c;
            next[p] -= c * root;
        }
        poly = next;
        denom *= s(j) - s(k);
    }
    let h = sigmas[i + 1] as f64 - origin;
    let integral: f64 =
        poly.iter().enumerate().map(|(p, &c)| c * h.powi(p as i32 + 1) / (p + 1) as f64).sum();
    integral / denom
}

impl Scheduler for Lms {
    fn name(&self) -> &'static str {
        "lms"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        let mut timesteps = float_timesteps(&self.cfg, n);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp_index(t, &self.train_sigmas)).collect();
        if self.cfg.use_karras_sigmas {
            // diffusers' LMS takes the range from the interpolated sigmas, not sigma_min/max.
            let log_sigmas: Vec<f32> = self.train_sigmas.iter().map(|s| s.ln()).collect();
            sigmas = karras_sigmas(sigmas[n - 1], sigmas[0], n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas) as f32 as f64).collect();
        }
        sigmas.push(0.0);
        self.sigmas = sigmas.into_iter().map(|s| s as f32).collect();
        self.timesteps = timesteps;
        self.step_index = None;
        self.derivatives.clear();
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
            return Err(Error::Input("LMS: stepped past the last timestep; call set_timesteps again".into()));
        }
        let sigma = self.sigmas[i];
        let x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => sample.f_sub(&model_output.f_mul_scalar(sigma as f64)?)?,
            PredictionType::VPrediction => {
                let c = -sigma / (sigma * sigma + 1.0).sqrt();
                model_output
                    .f_mul_scalar(c as f64)?
                    .f_add(&sample.f_div_scalar((sigma * sigma + 1.0) as f64)?)?
            }
            PredictionType::Sample => model_output.shallow_clone(),
        };
        self.derivatives.push(sample.f_sub(&x0)?.f_div_scalar(sigma as f64)?);
        if self.derivatives.len() > self.order {
            let _ = self.derivatives.remove(0);
        }
        // diffusers takes min(i + 1, order) here, which differs only when sampling starts
        // mid-schedule; there it would weight the one slope with a higher-order coefficient,
        // while zoo takes the order the stored slopes allow.
        let order = (i + 1).min(self.order).min(self.derivatives.len());
        let mut update: Option<Tensor> = None;
        for (j, d) in self.derivatives.iter().rev().take(order).enumerate() {
            let term = d.f_mul_scalar(lms_coefficient(&self.sigmas, order, i, j))?;
            update = Some(match update {
                None => term,
                Some(u) => u.f_add(&term)?,
            });
        }
        let prev = match update {
            Some(u) => sample.f_add(&u)?,
            None => sample.shallow_clone(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The weights integrate polynomials of degree < order exactly: their sum is the interval
    /// length, and for order 1 the one weight is sigma_{i+1} - sigma_i (an Euler step).
    #[test]
    fn coefficients_integrate_polynomials() {
        let sig = [10.0f32, 6.0, 3.5, 2.0, 0.8, 0.0];
        let i = 4;
        let h = (sig[5] - sig[4]) as f64;
        assert!((lms_coefficient(&sig, 1, i, 0) - h).abs() < 1e-12);
        for order in 1..=4 {
            let c: Vec<f64> = (0..order).map(|j| lms_coefficient(&sig, order, i, j)).collect();
            let sum: f64 = c.iter().sum();
            assert!((sum - h).abs() < 1e-12, "order {order}: {sum} vs {h}");
            // integral of tau^(order-1) from sigma_i to sigma_{i+1}
            let p = order as i32 - 1;
            let exact = ((sig[5] as f64).powi(p + 1) - (sig[4] as f64).powi(p + 1)) / (p + 1) as f64;
            let got: f64 = c.iter().enumerate().map(|(j, cj)| cj * (sig[i - j] as f64).powi(p)).sum();
            assert!((got - exact).abs() < 1e-9, "order {order}: {got} vs {exact}");
        }
    }

    #[test]
    fn a_perfect_prediction_lands_on_x0() {
        let cfg = SchedulerConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        let mut s = Lms::new(&cfg).unwrap();
        s.set_timesteps(6).unwrap();
        assert_eq!(s.timesteps().len(), 6);
        let x0 = Tensor::from_slice(&[0.5f32, -0.25]).view([2, 1, 1, 1]);
        let eps = Tensor::from_slice(&[1.0f32, -1.5]).view([2, 1, 1, 1]);
        let t0 = s.timesteps()[0];
        let mut x = s.add_noise(&x0, &eps, &Tensor::from_slice(&[t0, t0])).unwrap();
        for t in s.timesteps().to_vec() {
            x = s.step(&x0, t, &x).unwrap().prev_sample;
        }
        assert!((&x - &x0).abs().max().double_value(&[]) < 1e-4);
        let z = Tensor::zeros([2, 1, 1, 1], (Kind::Float, Device::Cpu));
        assert!(s.step(&z, 0.0, &z).is_err(), "a step past the end is an error");
        assert!(Lms::new(&cfg).unwrap().with_order(0).is_err());
    }
}
