//! PNDM: "Pseudo Numerical Methods for Diffusion Models on Manifolds" (Liu et al. 2022). A
//! 4th-order linear multistep method (PLMS) on the DDIM transfer of eq. 9, warmed up either by
//! three pseudo Runge-Kutta steps (4 model calls each) or, with `skip_prk_steps` (Stable
//! Diffusion's setting), by lower-order multistep steps. Mirrors diffusers' `PNDMScheduler`.
//!
//! The schedule repeats timesteps: with `skip_prk_steps` the second one appears twice (n + 1
//! model calls for n steps); without, the Runge-Kutta half steps take 12 calls and the schedule
//! has n + 9 entries. `step` follows a call counter, not the timestep, so the loop must visit
//! `timesteps()` in order.
use tch::Tensor;

use super::{
    check_steps, spaced_timesteps, NoiseTable, PredictionType, Scheduler, SchedulerConfig, SchedulerOutput,
    TimestepSpacing,
};
use crate::{Error, Result};

/// The order of the multistep formula (and the number of Runge-Kutta warm-up points).
const PNDM_ORDER: usize = 4;

pub struct Pndm {
    cfg: SchedulerConfig,
    table: NoiseTable,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    /// The Runge-Kutta part of `timesteps` (empty with `skip_prk_steps`).
    prk_timesteps: Vec<i64>,
    num_inference_steps: Option<usize>,
    /// Calls of `step` since `set_timesteps`.
    counter: usize,
    /// The model outputs of the last (up to 4) full steps, oldest first.
    ets: Vec<Tensor>,
    /// The Runge-Kutta sum of the model outputs of the current step so far.
    cur_model_output: Option<Tensor>,
    /// The sample a Runge-Kutta step (or the first PLMS pair) started from.
    cur_sample: Option<Tensor>,
}

impl Pndm {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        if cfg.prediction_type == PredictionType::Sample {
            return Err(Error::Config(
                "scheduler config key 'prediction_type': PNDM takes epsilon or v_prediction, not sample"
                    .into(),
            ));
        }
        let table = NoiseTable::new(cfg)?;
        let final_alpha_cumprod =
            if cfg.set_alpha_to_one.unwrap_or(false) { 1.0 } else { table.alphas_cumprod[0] };
        let timesteps = (0..cfg.num_train_timesteps).rev().map(|t| t as f64).collect();
        Ok(Pndm {
            cfg: cfg.clone(),
            table,
            final_alpha_cumprod,
            timesteps,
            prk_timesteps: Vec::new(),
            num_inference_steps: None,
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
        })
    }

    /// alpha_bar at training timestep `t`; before the start (t < 0) the final alpha_bar.
    fn alpha_bar(&self, t: i64) -> Result<f32> {
        if t < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        self.table.alphas_cumprod.get(t as usize).copied().ok_or_else(|| {
            Error::Input(format!(
                "PNDM: timestep {t} is outside the training range 0..{}",
                self.table.alphas_cumprod.len()
            ))
        })
    }

    /// Eq. 9 of the paper: x_{t-delta} from x_t and the (combined) noise estimate.
    fn prev_sample(&self, sample: &Tensor, t: i64, prev_t: i64, model_output: &Tensor) -> Result<Tensor> {
        let a_t = self.alpha_bar(t)?;
        let a_prev = self.alpha_bar(prev_t)?;
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let eps = match self.cfg.prediction_type {
            PredictionType::VPrediction => model_output
                .f_mul_scalar(a_t.sqrt() as f64)?
                .f_add(&sample.f_mul_scalar(b_t.sqrt() as f64)?)?,
            _ => model_output.shallow_clone(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        Ok(sample
            .f_mul_scalar(sample_coeff as f64)?
            .f_sub(&eps.f_mul_scalar((a_prev - a_t) as f64)?.f_div_scalar(denom as f64)?)?)
    }

    /// One of the 12 Runge-Kutta calls: four per step, at t, t - h/2 (twice) and t - h.
    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        ratio: i64,
    ) -> Result<Tensor> {
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { ratio / 2 };
        let prev_t = timestep - diff_to_prev;
        let t = self.prk_timesteps[self.counter / 4 * 4];
        let add = |acc: &Option<Tensor>, w: f64| -> Result<Tensor> {
            let term = model_output.f_mul_scalar(w)?;
            Ok(match acc {
                Some(a) => a.f_add(&term)?,
                None => term,
            })
        };
        let eps = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add(&self.cur_model_output, 1.0 / 6.0)?);
                self.ets.push(model_output.shallow_clone());
                self.cur_sample = Some(sample.shallow_clone());
                model_output.shallow_clone()
            }
            1 | 2 => {
                self.cur_model_output = Some(add(&self.cur_model_output, 1.0 / 3.0)?);
                model_output.shallow_clone()
            }
            _ => {
                let combined = add(&self.cur_model_output, 1.0 / 6.0)?;
                self.cur_model_output = None;
                combined
            }
        };
        let start = self.cur_sample.as_ref().unwrap_or(sample).shallow_clone();
        self.prev_sample(&start, t, prev_t, &eps)
    }

    /// A linear multistep call: Adams-Bashforth of order len(ets) on the stored noise estimates.
    fn step_plms(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        ratio: i64,
    ) -> Result<Tensor> {
        if !self.cfg.skip_prk_steps && self.ets.len() < 3 {
            return Err(Error::Input("PNDM: the Runge-Kutta warm-up has not run; call set_timesteps".into()));
        }
        let mut t = timestep;
        let mut prev_t = timestep - ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.shallow_clone());
        } else {
            // The second call (skip_prk_steps) redoes the first step with the mean of its two
            // noise estimates: a second-order warm-up.
            prev_t = timestep;
            t = timestep + ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let mut start = sample.shallow_clone();
        let eps = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.shallow_clone());
            model_output.shallow_clone()
        } else if k == 1 && self.counter == 1 {
            if let Some(s) = self.cur_sample.take() {
                start = s;
            }
            model_output.f_add(&e[0])?.f_div_scalar(2.0)?
        } else if k == 2 {
            e[1].f_mul_scalar(3.0)?.f_sub(&e[0])?.f_div_scalar(2.0)?
        } else if k == 3 {
            e[2].f_mul_scalar(23.0)?
                .f_sub(&e[1].f_mul_scalar(16.0)?)?
                .f_add(&e[0].f_mul_scalar(5.0)?)?
                .f_div_scalar(12.0)?
        } else {
            e[k - 1]
                .f_mul_scalar(55.0)?
                .f_sub(&e[k - 2].f_mul_scalar(59.0)?)?
                .f_add(&e[k - 3].f_mul_scalar(37.0)?)?
                .f_sub(&e[k - 4].f_mul_scalar(9.0)?)?
                .f_mul_scalar(1.0 / 24.0)?
        };
        self.prev_sample(&start, t, prev_t, &eps)
    }
}

impl Scheduler for Pndm {
    fn name(&self) -> &'static str {
        "pndm"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let t_train = self.cfg.num_train_timesteps;
        check_steps(n, t_train)?;
        if !self.cfg.skip_prk_steps && n < PNDM_ORDER {
            return Err(Error::Config(format!(
                "--steps {n}: PNDM's Runge-Kutta warm-up needs at least {PNDM_ORDER} steps (or skip_prk_steps)"
            )));
        }
        let spacing = self.cfg.spacing(TimestepSpacing::Leading);
        // ascending, as diffusers builds them
        let base: Vec<i64> = spaced_timesteps(spacing, t_train, n, self.cfg.steps_offset)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect();
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.cfg.skip_prk_steps {
            let mut v = base[..n - 1].to_vec();
            if n >= 2 {
                v.push(base[n - 2]);
            }
            v.push(base[n - 1]);
            v.reverse();
            (Vec::new(), v)
        } else {
            // Each of the last four timesteps and its half step, every point but the two ends
            // visited twice: t, t-h/2, t-h/2, t-h, t-h, ... (12 calls).
            let half = (t_train / n / 2) as i64;
            let mut pts: Vec<i64> = base[n - PNDM_ORDER..].iter().flat_map(|&t| [t, t + half]).collect();
            pts.pop();
            let doubled: Vec<i64> = pts.iter().flat_map(|&t| [t, t]).collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let plms: Vec<i64> = base[..n - 3].iter().rev().copied().collect();
            (prk, plms)
        };
        self.timesteps = prk.iter().chain(&plms).map(|&t| t as f64).collect();
        self.prk_timesteps = prk;
        self.num_inference_steps = Some(n);
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output = None;
        self.cur_sample = None;
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
            .ok_or_else(|| Error::Input("PNDM: call set_timesteps before step".into()))?;
        if self.counter >= self.timesteps.len() {
            return Err(Error::Input(
                "PNDM: stepped past the last timestep; call set_timesteps again".into(),
            ));
        }
        if timestep.fract() != 0.0 {
            return Err(Error::Input(format!("PNDM: timestep {timestep} is not an integer")));
        }
        let t = timestep as i64;
        let ratio = (self.cfg.num_train_timesteps / n) as i64;
        let prev = if self.counter < self.prk_timesteps.len() && !self.cfg.skip_prk_steps {
            self.step_prk(model_output, t, sample, ratio)?
        } else {
            self.step_plms(model_output, t, sample, ratio)?
        };
        self.counter += 1;
        Ok(SchedulerOutput { prev_sample: prev, pred_original_sample: None })
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        self.table.add_noise(original, noise, timesteps)
    }

    fn is_stochastic(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn pndm(skip: bool) -> Pndm {
        Pndm::new(&SchedulerConfig { skip_prk_steps: skip, ..Default::default() }).unwrap()
    }

    #[test]
    fn schedules_repeat_as_diffusers() {
        let mut s = pndm(true);
        s.set_timesteps(10).unwrap();
        let want = [900.0, 800.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0];
        assert_eq!(s.timesteps(), &want);
        let mut s = pndm(false);
        s.set_timesteps(10).unwrap();
        let want = [
            900.0, 850.0, 850.0, 800.0, 800.0, 750.0, 750.0, 700.0, 700.0, 650.0, 650.0, 600.0, 600.0, 500.0,
            400.0, 300.0, 200.0, 100.0, 0.0,
        ];
        assert_eq!(s.timesteps(), &want);
        assert!(s.set_timesteps(3).is_err(), "the warm-up needs 4 steps");
        let mut s = pndm(true);
        s.set_timesteps(1).unwrap();
        assert_eq!(s.timesteps(), &[0.0]);
    }

    /// With the true noise as the model output, every PLMS combination of it is that noise and
    /// eq. 9 is DDIM's deterministic step, which recovers x0 at the end.
    #[test]
    fn the_true_noise_leads_back_to_x0() {
        for skip in [true, false] {
            let mut s = pndm(skip);
            s.set_timesteps(8).unwrap();
            let x0 = Tensor::from_slice(&[0.3f32, -0.6]).view([2, 1, 1, 1]);
            let eps = Tensor::from_slice(&[0.9f32, 0.4]).view([2, 1, 1, 1]);
            let t0 = s.timesteps()[0];
            let mut x = s.add_noise(&x0, &eps, &Tensor::from_slice(&[t0, t0])).unwrap();
            for t in s.timesteps().to_vec() {
                x = s.step(&eps, t, &x).unwrap().prev_sample;
            }
            // the last step lands on alpha_bar[0], not 1
            let a0 = s.table.alphas_cumprod[0] as f64;
            let want = &x0 * a0.sqrt() + &eps * (1.0 - a0).sqrt();
            let err = (&x - &want).abs().max().double_value(&[]);
            assert!(err < 1e-4, "skip_prk_steps {skip}: {err}");
            let z = Tensor::zeros([2, 1, 1, 1], (Kind::Float, Device::Cpu));
            assert!(s.step(&z, 0.0, &z).is_err(), "a step past the end is an error");
        }
    }

    #[test]
    fn sample_prediction_is_refused() {
        let cfg = SchedulerConfig { prediction_type: PredictionType::Sample, ..Default::default() };
        let e = Pndm::new(&cfg).err().unwrap().to_string();
        assert!(e.contains("'prediction_type'"), "{e}");
    }
}
