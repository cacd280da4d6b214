//! DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
//! Probabilistic Models"), multistep, order 1 or 2 (2M), midpoint or Heun second-order rule,
//! optional Karras sigmas. Mirrors diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"`; the SDE variants and order 3 are not implemented.
use tch::Tensor;

use super::{
    check_steps, index_for_timestep, interp_index, karras_sigmas, multistep_timesteps, sigma_to_t,
    threshold_sample, BetaSchedule, FinalSigmas, NoiseTable, PredictionType, Scheduler, SchedulerConfig,
    SchedulerOutput, SolverType, TimestepSpacing,
};
use crate::{Error, Result};

pub struct DpmSolverMultistep {
    cfg: SchedulerConfig,
    table: NoiseTable,
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    step_index: Option<usize>,
    /// The last `solver_order` data predictions, oldest first (the multistep history).
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
}

/// (alpha_t, sigma_t) of the VP process at sigma = sigma_t / alpha_t.
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).powf(0.5);
    (alpha, sigma * alpha)
}

impl DpmSolverMultistep {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        if cfg.solver_order > 2 {
            return Err(Error::Config(format!(
                "scheduler config key 'solver_order': {} is not supported by DPM-Solver++ (1 or 2)",
                cfg.solver_order
            )));
        }
        let (table, train_sigmas) = super::euler::train_sigmas(cfg)?;
        let timesteps: Vec<f64> = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        let order = cfg.solver_order;
        Ok(DpmSolverMultistep {
            cfg: cfg.clone(),
            table,
            sigmas: train_sigmas.clone(),
            train_sigmas,
            timesteps,
            step_index: None,
            model_outputs: (0..order).map(|_| None).collect(),
            lower_order_nums: 0,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn table(&self) -> &NoiseTable {
        &self.table
    }

    /// The model output as a data (x0) prediction.
    fn convert(&self, out: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i]);
        let x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => {
                sample.f_sub(&out.f_mul_scalar(sigma_t as f64)?)?.f_div_scalar(alpha_t as f64)?
            }
            PredictionType::Sample => out.shallow_clone(),
            PredictionType::VPrediction => {
                sample.f_mul_scalar(alpha_t as f64)?.f_sub(&out.f_mul_scalar(sigma_t as f64)?)?
            }
        };
        if self.cfg.thresholding {
            threshold_sample(&x0, self.cfg.dynamic_thresholding_ratio, self.cfg.sample_max_value)
        } else {
            Ok(x0)
        }
    }

    fn lambda(alpha: f32, sigma: f32) -> f32 {
        alpha.ln() - sigma.ln()
    }

    fn first_order(&self, x0: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = Self::lambda(alpha_t, sigma_t) - Self::lambda(alpha_s, sigma_s);
        let c_x = sigma_t / sigma_s;
        let c_d = alpha_t * ((-h).exp() - 1.0);
        Ok(sample.f_mul_scalar(c_x as f64)?.f_sub(&x0.f_mul_scalar(c_d as f64)?)?)
    }

    fn second_order(&self, m0: &Tensor, m1: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let lambda_t = Self::lambda(alpha_t, sigma_t);
        let lambda_s0 = Self::lambda(alpha_s0, sigma_s0);
        let lambda_s1 = Self::lambda(alpha_s1, sigma_s1);
        let (h, h0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h0 / h;
        let d1 = m0.f_sub(m1)?.f_mul_scalar((1.0 / r0) as f64)?;
        let em1 = (-h).exp() - 1.0;
        let x = sample
            .f_mul_scalar((sigma_t / sigma_s0) as f64)?
            .f_sub(&m0.f_mul_scalar((alpha_t * em1) as f64)?)?;
        // diffusers reads UniPC's rule names (bh1, bh2, logrho) as midpoint.
        Ok(match self.cfg.solver_type {
            SolverType::Heun => x.f_add(&d1.f_mul_scalar((alpha_t * (em1 / h + 1.0)) as f64)?)?,
            _ => x.f_sub(&d1.f_mul_scalar((0.5 * (alpha_t * em1)) as f64)?)?,
        })
    }
}

impl Scheduler for DpmSolverMultistep {
    fn name(&self) -> &'static str {
        if self.cfg.use_karras_sigmas {
            "dpm++2m-karras"
        } else {
            "dpm++2m"
        }
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        let t_train = self.cfg.num_train_timesteps;
        // Timesteps whose log-SNR is below lambda_min_clipped are never visited.
        let last = match self.cfg.lambda_min_clipped {
            None => t_train,
            Some(clip) => {
                let lambdas: Vec<f32> = self
                    .table
                    .alphas_cumprod
                    .iter()
                    .rev()
                    .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
                    .collect();
                t_train - lambdas.iter().filter(|&&l| (l as f64) < clip).count()
            }
        };
        let spacing = self.cfg.spacing(TimestepSpacing::Linspace);
        let mut timesteps = multistep_timesteps(spacing, last, t_train, n, self.cfg.steps_offset);
        let mut sigmas: Vec<f64>;
        if self.cfg.use_karras_sigmas {
            let log_sigmas: Vec<f32> = self.train_sigmas.iter().map(|s| s.ln()).collect();
            let lo = self.cfg.sigma_min.unwrap_or(self.train_sigmas[0] as f64);
            let hi = self.cfg.sigma_max.unwrap_or(self.train_sigmas[t_train - 1] as f64);
            sigmas = karras_sigmas(lo, hi, n);
            let round = self.cfg.beta_schedule != BetaSchedule::SquaredcosCapV2;
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    // rounded, then cast to int64 (which truncates) as diffusers does
                    (if round { t.round_ties_even() } else { t }).trunc()
                })
                .collect();
        } else {
            sigmas = timesteps.iter().map(|&t| interp_index(t, &self.train_sigmas)).collect();
        }
        sigmas.push(match self.cfg.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => self.train_sigmas[0] as f64,
        });
        self.sigmas = sigmas.into_iter().map(|s| s as f32).collect();
        self.timesteps = timesteps;
        self.step_index = None;
        self.model_outputs = (0..self.cfg.solver_order).map(|_| None).collect();
        self.lower_order_nums = 0;
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
        let i = match self.step_index {
            Some(i) => i,
            None => {
                // diffusers falls back to the last index for a timestep it does not know.
                index_for_timestep(&self.timesteps, timestep)
                    .unwrap_or(self.timesteps.len().saturating_sub(1))
            }
        };
        let n = self.timesteps.len();
        if i + 1 >= self.sigmas.len() {
            return Err(Error::Input(
                "DPM-Solver: stepped past the last timestep; call set_timesteps again".into(),
            ));
        }
        let c = &self.cfg;
        let lower_order_final = i == n - 1
            && (c.euler_at_final
                || (c.lower_order_final && n < 15)
                || c.final_sigmas_type == FinalSigmas::Zero);
        let lower_order_second = i + 2 == n && c.lower_order_final && n < 15;

        let x0 = self.convert(model_output, sample, i)?;
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(x0.shallow_clone());
        }
        let prev = if c.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(&x0, sample, i)?
        } else {
            let _ = lower_order_second; // order 3 is not implemented, so order 2 is the ceiling
            let k = self.model_outputs.len();
            match (&self.model_outputs[k - 1], &self.model_outputs[k - 2]) {
                (Some(m0), Some(m1)) => self.second_order(m0, m1, sample, i)?,
                _ => return Err(Error::Input("DPM-Solver: missing history".into())),
            }
        };
        if self.lower_order_nums < c.solver_order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        Ok(SchedulerOutput { prev_sample: prev, pred_original_sample: Some(x0) })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        vp_add_noise(&self.timesteps, &self.sigmas, original, noise, timesteps)
    }

    fn is_stochastic(&self) -> bool {
        false
    }
}

/// alpha_t x0 + sigma_t noise at the sigma of each (inference) timestep, for the multistep
/// solvers that work on alpha_t, sigma_t. Shapes: (B, ...), timesteps (B).
pub(crate) fn vp_add_noise(
    schedule: &[f64],
    sigmas: &[f32],
    original: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<Tensor> {
    let ts = Vec::<f64>::try_from(timesteps.f_to_kind(tch::Kind::Double)?.f_view([-1])?)?;
    let size = original.size();
    if size.first() != Some(&(ts.len() as i64)) {
        return Err(Error::Input(format!("{} timesteps for a batch of shape {size:?}", ts.len())));
    }
    let mut a = Vec::new();
    let mut s = Vec::new();
    for t in ts {
        let (at, st) = alpha_sigma(sigmas[index_for_timestep(schedule, t)?]);
        a.push(at);
        s.push(st);
    }
    let mut shape = vec![a.len() as i64];
    shape.extend(std::iter::repeat_n(1, size.len() - 1));
    let dev = original.device();
    let a = Tensor::from_slice(&a).to_device(dev).to_kind(original.kind()).f_view(shape.as_slice())?;
    let s = Tensor::from_slice(&s).to_device(dev).to_kind(original.kind()).f_view(shape.as_slice())?;
    Ok(original.f_mul(&a)?.f_add(&noise.f_mul(&s)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn timesteps_and_a_perfect_prediction() {
        let cfg = SchedulerConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        let mut s = DpmSolverMultistep::new(&cfg).unwrap();
        s.set_timesteps(4).unwrap();
        // linspace(0, 999, 5).round() reversed without the 0
        assert_eq!(s.timesteps(), &[999.0, 749.0, 500.0, 250.0]);
        // A model that always predicts the true x0 reaches it at the final step.
        let x0 = Tensor::from_slice(&[0.25f32, -0.75]).view([2, 1, 1, 1]);
        let mut x = Tensor::from_slice(&[1.0f32, -2.0]).view([2, 1, 1, 1]);
        for &t in s.timesteps().to_vec().iter() {
            x = s.step(&x0, t, &x).unwrap().prev_sample;
        }
        assert!((&x - &x0).abs().max().double_value(&[]) < 1e-5);
        let z = Tensor::zeros([2, 1, 1, 1], (Kind::Float, Device::Cpu));
        assert!(s.step(&z, 250.0, &z).is_err());
    }
}
