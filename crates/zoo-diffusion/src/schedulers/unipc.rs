//! UniPC: "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"
//! (Zhao et al. 2023). A multistep predictor (UniP) in log-SNR time, and a corrector (UniC) that
//! refines each new sample with the model output computed at it, at no extra model call.
//! Mirrors diffusers' `UniPCMultistepScheduler`: B(h) of type bh1 or bh2, order 1 to 3, the data
//! (x0) or noise form (`predict_x0`), `lower_order_final`, `disable_corrector`, Karras sigmas.
//! The flow-matching options and `solver_p` are not implemented.
use tch::Tensor;

use super::dpm_solver::vp_add_noise;
use super::{
    check_steps, index_for_timestep, interp_index, karras_sigmas, multistep_timesteps, sigma_to_t,
    threshold_sample, FinalSigmas, NoiseTable, PredictionType, Scheduler, SchedulerConfig, SchedulerOutput,
    SolverType, TimestepSpacing,
};
use crate::{Error, Result};

pub struct UniPcMultistep {
    cfg: SchedulerConfig,
    table: NoiseTable,
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    /// One more than the timesteps: the last is 0 or sigma_min (`final_sigmas_type`).
    sigmas: Vec<f32>,
    step_index: Option<usize>,
    /// The converted model outputs of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    /// The sample the last predictor started from (what the corrector corrects).
    last_sample: Option<Tensor>,
    /// The order of the last predictor, which the next corrector uses too.
    this_order: usize,
    lower_order_nums: usize,
}

/// alpha_t, sigma_t and the log-SNR lambda_t = log(alpha_t / sigma_t) at one sigma, as float32
/// 0-d tensors.
///
/// UniPC's coefficients are computed with libtorch's own scalar kernels, operation for
/// operation as diffusers does: its noise form (`predict_x0` false) amplifies the last-bit
/// differences between libtorch's pow/log/expm1 and Rust's f32 functions to ~1e-5 of the sample
/// after a few steps.
struct Point {
    alpha: Tensor,
    sigma: Tensor,
    lambda: Tensor,
}

fn point(sigma: f32) -> Result<Point> {
    let s = Tensor::from(sigma);
    let alpha = s.f_pow_tensor_scalar(2)?.f_add_scalar(1)?.f_pow_tensor_scalar(0.5)?.f_reciprocal()?;
    let sigma = s.f_mul(&alpha)?;
    let lambda = alpha.f_log()?.f_sub(&sigma.f_log()?)?;
    Ok(Point { alpha, sigma, lambda })
}

/// What the predictor and the corrector share: h phi_1(h), B(h), the ratios r_k of the earlier
/// log-SNR steps to this one (then 1), the matrix R of their powers and b, the right-hand side
/// of the order conditions R rho = b.
struct Coefficients {
    h_phi_1: Tensor,
    b_h: Tensor,
    rks: Vec<Tensor>,
    r: Tensor,
    b: Tensor,
}

impl UniPcMultistep {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        // A last step to sigma 0 has lambda = inf: diffusers then returns inf or NaN for the
        // noise form and for a last step of order 2 or more. zoo refuses those configs.
        if cfg.final_sigmas_type == FinalSigmas::Zero {
            if !cfg.predict_x0 {
                return Err(Error::Config(
                    "scheduler config key 'predict_x0': false needs final_sigmas_type sigma_min \
                     (UniPC's noise form cannot step to sigma 0)"
                        .into(),
                ));
            }
            if !cfg.lower_order_final && cfg.solver_order > 1 {
                return Err(Error::Config(
                    "scheduler config key 'lower_order_final': false needs final_sigmas_type sigma_min \
                     (a multistep last step to sigma 0 diverges)"
                        .into(),
                ));
            }
        }
        let (table, train_sigmas) = super::euler::train_sigmas(cfg)?;
        let timesteps: Vec<f64> = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(UniPcMultistep {
            cfg: cfg.clone(),
            table,
            sigmas: train_sigmas.clone(),
            train_sigmas,
            timesteps,
            step_index: None,
            model_outputs: (0..cfg.solver_order).map(|_| None).collect(),
            last_sample: None,
            this_order: 0,
            lower_order_nums: 0,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn table(&self) -> &NoiseTable {
        &self.table
    }

    /// bh1: B(h) = h; bh2 (and diffusers' fallback for DPM-Solver's rule names): B(h) = e^h - 1.
    fn bh1(&self) -> bool {
        self.cfg.solver_type == SolverType::Bh1
    }

    /// The model output as x0 (`predict_x0`) or as the noise.
    fn convert(&self, out: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let Point { alpha: a, sigma: s, .. } = point(self.sigmas[i])?;
        if self.cfg.predict_x0 {
            let x0 = match self.cfg.prediction_type {
                PredictionType::Epsilon => sample.f_sub(&s.f_mul(out)?)?.f_div(&a)?,
                PredictionType::Sample => out.shallow_clone(),
                PredictionType::VPrediction => a.f_mul(sample)?.f_sub(&s.f_mul(out)?)?,
            };
            if self.cfg.thresholding {
                threshold_sample(&x0, self.cfg.dynamic_thresholding_ratio, self.cfg.sample_max_value)
            } else {
                Ok(x0)
            }
        } else {
            Ok(match self.cfg.prediction_type {
                PredictionType::Epsilon => out.shallow_clone(),
                PredictionType::Sample => sample.f_sub(&a.f_mul(out)?)?.f_div(&s)?,
                PredictionType::VPrediction => a.f_mul(out)?.f_add(&s.f_mul(sample)?)?,
            })
        }
    }

    /// From `s0` to `t`, with the earlier points `prev` (one step back first).
    fn coefficients(&self, t: &Point, s0: &Point, prev: &[Point], order: usize) -> Result<Coefficients> {
        let h = t.lambda.f_sub(&s0.lambda)?;
        let mut rks = Vec::with_capacity(order);
        for p in prev {
            rks.push(p.lambda.f_sub(&s0.lambda)?.f_div(&h)?);
        }
        rks.push(Tensor::from(1f32));
        let hh = if self.cfg.predict_x0 { h.f_neg()? } else { h };
        let h_phi_1 = hh.f_expm1()?;
        let mut h_phi_k = h_phi_1.f_div(&hh)?.f_sub_scalar(1)?;
        let b_h = if self.bh1() { hh.shallow_clone() } else { hh.f_expm1()? };
        let rks_t = Tensor::f_stack(&rks, 0)?;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        let mut factorial: i64 = 1;
        for i in 1..=order as i64 {
            r.push(rks_t.f_pow_tensor_scalar(i - 1)?);
            b.push(h_phi_k.f_mul_scalar(factorial)?.f_div(&b_h)?);
            factorial *= i + 1;
            h_phi_k = h_phi_k.f_div(&hh)?.f_sub_scalar(1.0 / factorial as f64)?;
        }
        Ok(Coefficients { h_phi_1, b_h, rks, r: Tensor::f_stack(&r, 0)?, b: Tensor::f_stack(&b, 0)? })
    }

    /// The `k`-th earlier converted output, k = 0 the newest.
    fn history(&self, k: usize) -> Result<&Tensor> {
        let n = self.model_outputs.len();
        n.checked_sub(k + 1).and_then(|j| self.model_outputs[j].as_ref()).ok_or_else(|| {
            Error::Input("UniPC: missing history; call set_timesteps and step in order".into())
        })
    }

    fn earlier_point(&self, i: usize, back: usize) -> Result<Point> {
        let j = i.checked_sub(back).ok_or_else(|| {
            Error::Input("UniPC: missing history; call set_timesteps and step in order".into())
        })?;
        point(self.sigmas[j])
    }

    /// x_t_ = sigma_t / sigma_s0 x - alpha_t h phi_1 m0 (data form), or its noise-form twin
    /// alpha_t / alpha_s0 x - sigma_t h phi_1 m0; and alpha_t B(h) (sigma_t B(h)), the factor of
    /// the correction terms.
    fn base(
        &self,
        x: &Tensor,
        m0: &Tensor,
        t: &Point,
        s0: &Point,
        c: &Coefficients,
    ) -> Result<(Tensor, Tensor)> {
        let (ratio, w) = if self.cfg.predict_x0 {
            (t.sigma.f_div(&s0.sigma)?, &t.alpha)
        } else {
            (t.alpha.f_div(&s0.alpha)?, &t.sigma)
        };
        let x_t = ratio.f_mul(x)?.f_sub(&w.f_mul(&c.h_phi_1)?.f_mul(m0)?)?;
        Ok((x_t, w.f_mul(&c.b_h)?))
    }

    /// D_k = (m_k - m_0) / r_k for the `n` earlier outputs, stacked on dim 1: (B, n, C, H, W).
    fn differences(&self, m0: &Tensor, c: &Coefficients, n: usize) -> Result<Tensor> {
        let mut d = Vec::with_capacity(n);
        for k in 0..n {
            d.push(self.history(k + 1)?.f_sub(m0)?.f_div(&c.rks[k])?);
        }
        Ok(Tensor::f_stack(&d, 1)?)
    }

    /// UniP: the next sample from `x` at step `i` (model_outputs already hold this step's output).
    fn predictor(&self, x: &Tensor, order: usize, i: usize) -> Result<Tensor> {
        let t = point(self.sigmas[i + 1])?;
        let s0 = point(self.sigmas[i])?;
        let prev: Vec<Point> = (1..order).map(|k| self.earlier_point(i, k)).collect::<Result<_>>()?;
        let c = self.coefficients(&t, &s0, &prev, order)?;
        let m0 = self.history(0)?;
        let (x_t, scale) = self.base(x, m0, &t, &s0, &c)?;
        if order == 1 {
            // No correction term. (diffusers still multiplies B(h) by a zero here, which is NaN
            // when the last sigma is 0 and B(h) = h is infinite: bh1 ends in NaN there.)
            return Ok(x_t);
        }
        let (device, kind) = (x.device(), x.kind());
        let rhos = if order == 2 {
            Tensor::f_ones([1], (kind, device))?.f_mul_scalar(0.5)?
        } else {
            let k = (order - 1) as i64;
            let r = c.r.f_slice(0, 0, k, 1)?.f_slice(1, 0, k, 1)?;
            Tensor::f_linalg_solve(&r, &c.b.f_slice(0, 0, k, 1)?, true)?
                .f_to_device(device)?
                .f_to_kind(kind)?
        };
        let d = self.differences(m0, &c, order - 1)?;
        let res = Tensor::f_einsum("k,bkc...->bc...", &[&rhos, &d], None::<i64>)?;
        Ok(x_t.f_sub(&scale.f_mul(&res)?)?)
    }

    /// UniC: corrects `this_sample` (step i's input, made by the predictor of step i - 1 from
    /// `last_sample`) with step i's converted output `model_t`. Runs before model_outputs move on.
    fn corrector(&self, model_t: &Tensor, last_sample: &Tensor, order: usize, i: usize) -> Result<Tensor> {
        let t = point(self.sigmas[i])?;
        let s0 = self.earlier_point(i, 1)?;
        let prev: Vec<Point> = (1..order).map(|k| self.earlier_point(i, k + 1)).collect::<Result<_>>()?;
        let c = self.coefficients(&t, &s0, &prev, order)?;
        let m0 = self.history(0)?;
        let (x_t, scale) = self.base(last_sample, m0, &t, &s0, &c)?;
        let (device, kind) = (last_sample.device(), last_sample.kind());
        let rhos = if order == 1 {
            Tensor::f_ones([1], (kind, device))?.f_mul_scalar(0.5)?
        } else {
            Tensor::f_linalg_solve(&c.r, &c.b, true)?.f_to_device(device)?.f_to_kind(kind)?
        };
        let last = order as i64 - 1;
        let d_t = rhos.f_get(last)?.f_mul(&model_t.f_sub(m0)?)?;
        let total = if order > 1 {
            let d = self.differences(m0, &c, order - 1)?;
            let res = Tensor::f_einsum("k,bkc...->bc...", &[&rhos.f_slice(0, 0, last, 1)?, &d], None::<i64>)?;
            res.f_add(&d_t)?
        } else {
            d_t
        };
        Ok(x_t.f_sub(&scale.f_mul(&total)?)?)
    }
}

impl Scheduler for UniPcMultistep {
    fn name(&self) -> &'static str {
        "unipc"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        let t_train = self.cfg.num_train_timesteps;
        let spacing = self.cfg.spacing(TimestepSpacing::Linspace);
        let mut timesteps = multistep_timesteps(spacing, t_train, t_train, n, self.cfg.steps_offset);
        let last;
        let mut sigmas: Vec<f64>;
        if self.cfg.use_karras_sigmas {
            let log_sigmas: Vec<f32> = self.train_sigmas.iter().map(|s| s.ln()).collect();
            let lo = self.cfg.sigma_min.unwrap_or(self.train_sigmas[0] as f64);
            let hi = self.cfg.sigma_max.unwrap_or(self.train_sigmas[t_train - 1] as f64);
            sigmas = karras_sigmas(lo, hi, n);
            timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even()).collect();
            last = sigmas[n - 1];
        } else {
            sigmas = timesteps.iter().map(|&t| interp_index(t, &self.train_sigmas)).collect();
            last = self.train_sigmas[0] as f64;
        }
        sigmas.push(match self.cfg.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => last,
        });
        self.sigmas = sigmas.into_iter().map(|s| s as f32).collect();
        self.timesteps = timesteps;
        self.step_index = None;
        self.model_outputs = (0..self.cfg.solver_order).map(|_| None).collect();
        self.last_sample = None;
        self.this_order = 0;
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
        let n = self.timesteps.len();
        let i = match self.step_index {
            Some(i) => i,
            // diffusers falls back to the last index for a timestep it does not know.
            None => index_for_timestep(&self.timesteps, timestep).unwrap_or(n.saturating_sub(1)),
        };
        if i >= n || i + 1 >= self.sigmas.len() {
            return Err(Error::Input(
                "UniPC: stepped past the last timestep; call set_timesteps again".into(),
            ));
        }
        let model_t = self.convert(model_output, sample, i)?;
        let use_corrector = i > 0 && !self.cfg.disable_corrector.contains(&(i - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(&model_t, last, self.this_order, i)?,
            _ => sample.shallow_clone(),
        };
        self.model_outputs.rotate_left(1);
        if let Some(slot) = self.model_outputs.last_mut() {
            *slot = Some(model_t.shallow_clone());
        }
        let order = self.cfg.solver_order;
        let this_order = if self.cfg.lower_order_final { order.min(n - i) } else { order };
        self.this_order = this_order.min(self.lower_order_nums + 1);
        let prev = self.predictor(&sample, self.this_order, i)?;
        self.last_sample = Some(sample);
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        let x0 = if self.cfg.predict_x0 { Some(model_t) } else { None };
        Ok(SchedulerOutput { prev_sample: prev, pred_original_sample: x0 })
    }

    /// alpha_t x0 + sigma_t noise at the sigma of each (inference) timestep.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        vp_add_noise(&self.timesteps, &self.sigmas, original, noise, timesteps)
    }

    fn is_stochastic(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn configs_that_diverge_at_sigma_zero_are_refused() {
        let c = SchedulerConfig { predict_x0: false, ..Default::default() };
        let e = UniPcMultistep::new(&c).err().unwrap().to_string();
        assert!(e.contains("'predict_x0'"), "{e}");
        let c = SchedulerConfig { lower_order_final: false, ..Default::default() };
        let e = UniPcMultistep::new(&c).err().unwrap().to_string();
        assert!(e.contains("'lower_order_final'"), "{e}");
        let ok = SchedulerConfig {
            predict_x0: false,
            final_sigmas_type: FinalSigmas::SigmaMin,
            ..Default::default()
        };
        assert!(UniPcMultistep::new(&ok).is_ok());
    }

    /// With the true x0 as every prediction, each predictor lands on alpha x0 + sigma eps of the
    /// next sigma and every correction term is zero; the last step lands on x0. Every order and
    /// rule, including bh1, whose last step diffusers leaves NaN.
    #[test]
    fn a_perfect_prediction_lands_on_x0() {
        for (order, solver_type) in
            [(1, SolverType::Bh2), (2, SolverType::Bh2), (3, SolverType::Bh2), (2, SolverType::Bh1)]
        {
            let cfg = SchedulerConfig {
                prediction_type: PredictionType::Sample,
                solver_order: order,
                solver_type,
                ..Default::default()
            };
            let mut s = UniPcMultistep::new(&cfg).unwrap();
            s.set_timesteps(6).unwrap();
            assert_eq!(s.timesteps(), &[999.0, 832.0, 666.0, 500.0, 333.0, 166.0]);
            let x0 = Tensor::from_slice(&[0.25f32, -0.75]).view([2, 1, 1, 1]);
            let eps = Tensor::from_slice(&[1.0f32, -2.0]).view([2, 1, 1, 1]);
            let t0 = s.timesteps()[0];
            let mut x = s.add_noise(&x0, &eps, &Tensor::from_slice(&[t0, t0])).unwrap();
            for t in s.timesteps().to_vec() {
                x = s.step(&x0, t, &x).unwrap().prev_sample;
            }
            let err = (&x - &x0).abs().max().double_value(&[]);
            assert!(err < 1e-5, "order {order} {solver_type:?}: {err}");
            let z = Tensor::zeros([2, 1, 1, 1], (Kind::Float, Device::Cpu));
            assert!(s.step(&z, 166.0, &z).is_err());
        }
    }
}
