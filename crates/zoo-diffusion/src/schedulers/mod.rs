//! Noise schedulers: one [`Scheduler`] trait, one file per algorithm, configured from diffusers'
//! `scheduler_config.json`.
//!
//! Each algorithm mirrors its diffusers class (0.42) operation for operation, including the
//! float32 arithmetic of the beta and sigma tables, so that tests/tests/diffusion_schedulers.rs
//! can match diffusers step by step (relative 1e-5) on every algorithm x beta schedule x
//! prediction type.
//!
//! Random draws: the stochastic schedulers (DDPM, DDIM with eta > 0, Euler ancestral) draw their
//! noise with `Tensor::randn` from libtorch's default generator, one draw of the sample's shape
//! per step, at the same point of the step as diffusers' `randn_tensor(generator=None)`. A loop
//! seeded with [`zoo_core::seed::seed_all`] therefore draws what diffusers draws after
//! `torch.manual_seed`.
//!
//! Config keys: the field names of diffusers' scheduler configs. Keys zoo does not use
//! (`_class_name`, `_diffusers_version`, `use_exponential_sigmas`, ...) are ignored; [`SchedulerConfig::from_json`]
//! returns their names so that the CLI can list them with `-v`. A key with a wrong value is an
//! error that names the key.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tch::{Kind, Tensor};

use crate::{Error, Result};

pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod lms;
pub mod pndm;
pub mod unipc;

pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpm_solver::DpmSolverMultistep;
pub use euler::Euler;
pub use euler_ancestral::EulerAncestral;
pub use heun::Heun;
pub use lms::Lms;
pub use pndm::Pndm;
pub use unipc::UniPcMultistep;

/// How the betas of the forward process are laid out over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, T)` (Ho et al. 2020).
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (latent diffusion).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal 2021, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
    /// `sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start` (GeoDiff).
    Sigmoid,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise that was added.
    Epsilon,
    /// v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x0 (Salimans & Ho 2022).
    VPrediction,
    /// The clean sample x0.
    Sample,
}

/// How `set_timesteps(n)` picks n of the training timesteps (Lin et al. 2023, table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

/// The variance of DDPM's reverse step. diffusers' `learned`, `learned_range` (models that
/// predict their variance) and `fixed_large_log` (NaN in diffusers) are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    FixedSmall,
    FixedSmallLog,
    FixedLarge,
}

/// DPM-Solver's algorithm: zoo implements the data-prediction form, DPM-Solver++.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlgorithmType {
    #[serde(rename = "dpmsolver++")]
    DpmSolverPlusPlus,
}

/// The second-order update rule. DPM-Solver uses `midpoint` or `heun` and reads the UniPC names
/// as `midpoint`; UniPC uses `bh1` or `bh2` and reads the DPM-Solver names as `bh2` (as diffusers
/// does in both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverType {
    Midpoint,
    Heun,
    Logrho,
    Bh1,
    Bh2,
}

/// The last sigma of a sigma schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// A scheduler config with diffusers' key names. Keys whose default differs between diffusers'
/// schedulers (`timestep_spacing`, `clip_sample`, `variance_type`, `set_alpha_to_one`) are
/// options; each algorithm fills in its own default. (Not so the betas: HeunDiscreteScheduler
/// defaults to 0.00085 / 0.012, zoo to DDPM's 0.0001 / 0.02 for every algorithm.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// diffusers' class name; picks the algorithm when the user names none.
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Betas given outright (one per training timestep); `beta_schedule` is then unused.
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    /// `leading` for DDPM and DDIM, `linspace` for the sigma-based schedulers.
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: usize,
    /// Clip the predicted x0 to `clip_sample_range` (DDPM, DDIM; default true there).
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// Dynamic thresholding of the predicted x0 (Saharia et al. 2022).
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    /// Rescale the betas to zero terminal SNR (Lin et al. 2023).
    pub rescale_betas_zero_snr: bool,
    /// DDPM's reverse variance (default `fixed_small`).
    pub variance_type: Option<VarianceType>,
    /// DDIM, PNDM: alpha_bar before the first step is 1 (else alpha_bar[0]). Default true for
    /// DDIM, false for PNDM.
    pub set_alpha_to_one: Option<bool>,
    /// PNDM: PLMS steps only (Stable Diffusion's setting), without the Runge-Kutta warm-up.
    pub skip_prk_steps: bool,
    /// Euler, Heun, LMS, DPM-Solver, UniPC: sigmas spaced as Karras et al. 2022 (rho = 7).
    pub use_karras_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// DPM-Solver: 1 or 2 (2M); UniPC: 1 to 3.
    pub solver_order: usize,
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    /// UniPC: solve for the data prediction x0 (UniPC's default) rather than the noise.
    pub predict_x0: bool,
    /// UniPC: the step indices whose corrector is skipped.
    pub disable_corrector: Vec<usize>,
    pub euler_at_final: bool,
    pub final_sigmas_type: FinalSigmas,
    pub lambda_min_clipped: Option<f64>,
}

impl Default for SchedulerConfig {
    /// diffusers' defaults (DDPMScheduler's where they differ).
    fn default() -> Self {
        SchedulerConfig {
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            clip_sample: None,
            clip_sample_range: 1.0,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            rescale_betas_zero_snr: false,
            variance_type: None,
            set_alpha_to_one: None,
            skip_prk_steps: false,
            use_karras_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            solver_order: 2,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            predict_x0: true,
            disable_corrector: Vec::new(),
            euler_at_final: false,
            final_sigmas_type: FinalSigmas::Zero,
            lambda_min_clipped: None,
        }
    }
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json`. Returns the config and the keys it ignored (metadata
    /// such as `_diffusers_version` is ignored without being listed). Every key is checked on
    /// its own first, so a wrong value is reported with its key.
    pub fn from_json(text: &str) -> Result<(SchedulerConfig, Vec<String>)> {
        // Python's json.dumps writes -Infinity for diffusers' default lambda_min_clipped.
        let text = text.replace("-Infinity", "null");
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("scheduler config is not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// As [`SchedulerConfig::from_json`], from parsed JSON.
    pub fn from_value(v: &Value) -> Result<(SchedulerConfig, Vec<String>)> {
        let map =
            v.as_object().ok_or_else(|| Error::Config("scheduler config must be a JSON object".into()))?;
        let known = known_keys();
        let mut kept = Map::new();
        let mut ignored = Vec::new();
        for (k, val) in map {
            if !known.contains(k) {
                if !k.starts_with('_') {
                    ignored.push(k.clone());
                }
                continue;
            }
            let one: Map<String, Value> = [(k.clone(), val.clone())].into_iter().collect();
            serde_json::from_value::<SchedulerConfig>(Value::Object(one))
                .map_err(|e| Error::Config(format!("scheduler config key '{k}': {e}")))?;
            kept.insert(k.clone(), val.clone());
        }
        let cfg: SchedulerConfig = serde_json::from_value(Value::Object(kept))
            .map_err(|e| Error::Config(format!("scheduler config: {e}")))?;
        cfg.validate()?;
        Ok((cfg, ignored))
    }

    /// Checks values that parse but cannot work; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::Config(format!("scheduler config key '{k}': {why}")));
        if self.num_train_timesteps < 2 {
            return bad(
                "num_train_timesteps",
                format!("{} is too few (at least 2)", self.num_train_timesteps),
            );
        }
        for (k, b) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if !(b.is_finite() && b > 0.0 && b < 1.0) {
                return bad(k, format!("{b} is not in (0, 1)"));
            }
        }
        if let Some(tb) = &self.trained_betas {
            if tb.len() != self.num_train_timesteps {
                return bad(
                    "trained_betas",
                    format!("{} values for num_train_timesteps {}", tb.len(), self.num_train_timesteps),
                );
            }
            if let Some(b) = tb.iter().find(|b| !(b.is_finite() && **b > 0.0 && **b < 1.0)) {
                return bad("trained_betas", format!("{b} is not in (0, 1)"));
            }
        }
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            return bad("clip_sample_range", format!("{} is not positive", self.clip_sample_range));
        }
        if !(self.dynamic_thresholding_ratio > 0.0 && self.dynamic_thresholding_ratio <= 1.0) {
            return bad(
                "dynamic_thresholding_ratio",
                format!("{} is not in (0, 1]", self.dynamic_thresholding_ratio),
            );
        }
        if self.sample_max_value.is_nan() || self.sample_max_value < 1.0 {
            return bad("sample_max_value", format!("{} is below 1", self.sample_max_value));
        }
        if !(1..=3).contains(&self.solver_order) {
            return bad("solver_order", format!("{} is not supported (1 to 3)", self.solver_order));
        }
        for (k, s) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(s) = s {
                if !(s.is_finite() && s > 0.0) {
                    return bad(k, format!("{s} is not positive"));
                }
            }
        }
        Ok(())
    }

    fn spacing(&self, default: TimestepSpacing) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(default)
    }
}

fn known_keys() -> Vec<String> {
    let cfg = SchedulerConfig { class_name: Some(String::new()), ..Default::default() };
    match serde_json::to_value(&cfg) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// What one step gives back.
pub struct SchedulerOutput {
    /// x_{t-1}. Shapes: as the sample.
    pub prev_sample: Tensor,
    /// The model's estimate of x0 at this step, where the algorithm forms one.
    pub pred_original_sample: Option<Tensor>,
}

/// A diffusion sampler: turns model outputs into the next, less noisy sample.
///
/// Use: `set_timesteps(n)`, draw the initial noise, multiply it by `init_noise_sigma()`, then
/// for each `t` of `timesteps()`: `x_in = scale_model_input(x, t)`, run the model on `(x_in, t)`
/// and `x = step(output, t, x).prev_sample`. Multistep history lives inside the scheduler;
/// `set_timesteps` resets it.
pub trait Scheduler: Send {
    /// The name [`build`] knows it by.
    fn name(&self) -> &'static str;
    fn config(&self) -> &SchedulerConfig;
    /// Picks `n` inference timesteps (and resets the step state).
    fn set_timesteps(&mut self, n: usize) -> Result<()>;
    /// The inference timesteps, noisiest first (what the model is given as `t`).
    fn timesteps(&self) -> &[f64];
    /// The standard deviation of the initial noise.
    fn init_noise_sigma(&self) -> f64;
    /// Scales the model input at `timestep` (the sigma-based schedulers divide by sqrt(sigma^2 + 1)).
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor>;
    /// One reverse step from `timestep`. Shapes: model_output and sample (B, C, H, W).
    fn step(&mut self, model_output: &Tensor, timestep: f64, sample: &Tensor) -> Result<SchedulerOutput>;
    /// The forward process at a batch of timesteps. Shapes: original, noise (B, ...), timesteps (B).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor>;
    /// Whether `step` draws from libtorch's generator.
    fn is_stochastic(&self) -> bool;
    /// Model calls per step (diffusers' `order`): the timesteps list holds `order` entries per
    /// step, which is how img2img finds where a part-way schedule starts.
    fn order(&self) -> usize {
        1
    }
}

/// The schedulers [`build`] makes, with a line each.
pub const SCHEDULERS: &[(&str, &str)] = &[
    ("ddpm", "DDPM (Ho et al. 2020): ancestral sampling, stochastic; as many steps as training used is best"),
    ("ddim", "DDIM (Song et al. 2021): deterministic (eta 0), good in 50 steps; --eta > 0 adds noise"),
    ("euler", "Euler (Karras et al. 2022, k-diffusion): first-order ODE solver on sigmas, deterministic"),
    ("euler-ancestral", "Euler ancestral: Euler with fresh noise each step, stochastic"),
    ("dpm++2m", "DPM-Solver++ 2M (Lu et al. 2022): second-order multistep, deterministic, good in 20 steps"),
    ("dpm++2m-karras", "DPM-Solver++ 2M with Karras sigmas"),
    (
        "pndm",
        "PNDM/PLMS (Liu et al. 2022): 4th-order linear multistep; Runge-Kutta warm-up unless skip_prk_steps",
    ),
    ("heun", "Heun (Karras et al. 2022): second-order ODE solver, two model calls per step (2n-1 in all)"),
    ("lms", "LMS: 4th-order linear multistep on sigmas (k-diffusion's sample_lms), deterministic"),
    (
        "unipc",
        "UniPC (Zhao et al. 2023): bh2 predictor-corrector multistep, deterministic, good in 10-20 steps",
    ),
];

/// Makes scheduler `name` (see [`SCHEDULERS`]) from `cfg`. diffusers' class names
/// (`DDIMScheduler`, ...) are accepted too.
pub fn build(name: &str, cfg: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    let key = match name {
        "DDPMScheduler" => "ddpm",
        "DDIMScheduler" => "ddim",
        "EulerDiscreteScheduler" => "euler",
        "EulerAncestralDiscreteScheduler" => "euler-ancestral",
        "DPMSolverMultistepScheduler" => "dpm++2m",
        "PNDMScheduler" => "pndm",
        "HeunDiscreteScheduler" => "heun",
        "LMSDiscreteScheduler" => "lms",
        "UniPCMultistepScheduler" => "unipc",
        other => other,
    };
    Ok(match key {
        "ddpm" => Box::new(Ddpm::new(cfg)?),
        "ddim" => Box::new(Ddim::new(cfg)?),
        "euler" => Box::new(Euler::new(cfg)?),
        "euler-ancestral" => Box::new(EulerAncestral::new(cfg)?),
        "dpm++2m" => Box::new(DpmSolverMultistep::new(cfg)?),
        "dpm++2m-karras" => {
            let mut c = cfg.clone();
            c.use_karras_sigmas = true;
            Box::new(DpmSolverMultistep::new(&c)?)
        }
        "pndm" => Box::new(Pndm::new(cfg)?),
        "heun" => Box::new(Heun::new(cfg)?),
        "lms" => Box::new(Lms::new(cfg)?),
        "unipc" => Box::new(UniPcMultistep::new(cfg)?),
        _ => {
            let names: Vec<&str> = SCHEDULERS.iter().map(|(n, _)| *n).collect();
            return Err(Error::Config(format!(
                "unknown scheduler '{name}': known ones are {}",
                names.join(", ")
            )));
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Tables shared by the algorithms.

/// betas and alpha_bar = cumprod(1 - beta), in float32 as diffusers computes them.
#[derive(Debug, Clone)]
pub struct NoiseTable {
    pub betas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseTable {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let n = cfg.num_train_timesteps as i64;
        let opts = (Kind::Float, tch::Device::Cpu);
        let mut betas = match (&cfg.trained_betas, cfg.beta_schedule) {
            (Some(tb), _) => Tensor::from_slice(tb).to_kind(Kind::Float),
            (None, BetaSchedule::Linear) => Tensor::f_linspace(cfg.beta_start, cfg.beta_end, n, opts)?,
            (None, BetaSchedule::ScaledLinear) => {
                Tensor::f_linspace(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n, opts)?
                    .f_pow_tensor_scalar(2)?
            }
            (None, BetaSchedule::SquaredcosCapV2) => {
                Tensor::from_slice(&cosine_betas(cfg.num_train_timesteps, 0.999)).to_kind(Kind::Float)
            }
            (None, BetaSchedule::Sigmoid) => Tensor::f_linspace(-6.0, 6.0, n, opts)?
                .f_sigmoid()?
                .f_mul_scalar(cfg.beta_end - cfg.beta_start)?
                .f_add_scalar(cfg.beta_start)?,
        };
        if cfg.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas)?;
        }
        let alphas = betas.f_neg()?.f_add_scalar(1.0)?;
        let alphas_cumprod = alphas.f_cumprod(0, Kind::Float)?;
        Ok(NoiseTable { betas: to_vec(&betas)?, alphas_cumprod: to_vec(&alphas_cumprod)? })
    }

    /// sigma_t = sqrt((1 - alpha_bar) / alpha_bar) for every training timestep (float32),
    /// computed by libtorch on the whole table as diffusers does: libtorch's pow(x, 0.5) is not
    /// always the correctly rounded square root (about 1 entry in 6 differs in the last bit),
    /// and UniPC's noise form carries such differences to ~1e-5 of the sample.
    pub fn sigmas(&self) -> Result<Vec<f32>> {
        let ac = Tensor::from_slice(&self.alphas_cumprod);
        to_vec(&ac.f_neg()?.f_add_scalar(1.0)?.f_div(&ac)?.f_pow_tensor_scalar(0.5)?)
    }

    /// sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) noise at each sample's timestep.
    /// Shapes: original, noise (B, ...), timesteps (B) integer -> (B, ...).
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let ac =
            Tensor::from_slice(&self.alphas_cumprod).to_device(original.device()).to_kind(original.kind());
        let t = timesteps.to_device(original.device()).to_kind(Kind::Int64);
        check_timestep_range(&t, self.alphas_cumprod.len())?;
        let a = ac.f_index_select(0, &t.flatten(0, -1))?;
        let shape = broadcast_shape(original, a.size()[0])?;
        let sqrt_a = a.f_sqrt()?.f_view(shape.as_slice())?;
        let sqrt_1ma = a.f_neg()?.f_add_scalar(1.0)?.f_sqrt()?.f_view(shape.as_slice())?;
        Ok(original.f_mul(&sqrt_a)?.f_add(&noise.f_mul(&sqrt_1ma)?)?)
    }

    /// The v-prediction target sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) x0.
    /// Shapes: sample, noise (B, ...), timesteps (B) integer -> (B, ...).
    pub fn velocity(&self, sample: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let ac = Tensor::from_slice(&self.alphas_cumprod).to_device(sample.device()).to_kind(sample.kind());
        let t = timesteps.to_device(sample.device()).to_kind(Kind::Int64);
        check_timestep_range(&t, self.alphas_cumprod.len())?;
        let a = ac.f_index_select(0, &t.flatten(0, -1))?;
        let shape = broadcast_shape(sample, a.size()[0])?;
        let sqrt_a = a.f_sqrt()?.f_view(shape.as_slice())?;
        let sqrt_1ma = a.f_neg()?.f_add_scalar(1.0)?.f_sqrt()?.f_view(shape.as_slice())?;
        Ok(noise.f_mul(&sqrt_a)?.f_sub(&sample.f_mul(&sqrt_1ma)?)?)
    }

    /// What a model of `prediction` type learns to output for the noised `sample` at
    /// `timesteps`: the noise, v, or the clean sample. (At high noise a v or sample target
    /// weights the clean sample's error by about 1 where epsilon weights it by the SNR.)
    pub fn target(
        &self,
        prediction: PredictionType,
        sample: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        match prediction {
            PredictionType::Epsilon => Ok(noise.shallow_clone()),
            PredictionType::VPrediction => self.velocity(sample, noise, timesteps),
            PredictionType::Sample => Ok(sample.shallow_clone()),
        }
    }
}

fn check_timestep_range(t: &Tensor, n: usize) -> Result<()> {
    if t.numel() == 0 {
        return Ok(());
    }
    let lo = t.f_min()?.f_int64_value(&[])?;
    let hi = t.f_max()?.f_int64_value(&[])?;
    if lo < 0 || hi >= n as i64 {
        return Err(Error::Input(format!("timesteps must be in 0..{n}, got {lo}..={hi}")));
    }
    Ok(())
}

fn broadcast_shape(x: &Tensor, b: i64) -> Result<Vec<i64>> {
    let size = x.size();
    if size.first() != Some(&b) {
        return Err(Error::Input(format!("{b} timesteps for a batch of shape {size:?}")));
    }
    let mut shape = vec![b];
    shape.extend(std::iter::repeat_n(1, size.len() - 1));
    Ok(shape)
}

/// The squaredcos_cap_v2 betas, in float64 as diffusers' `betas_for_alpha_bar` (note the float
/// division i / T: two Rust ports computed it in integers and got a different schedule).
pub fn cosine_betas(n: usize, max_beta: f64) -> Vec<f64> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// Lin et al. 2023, algorithm 1: shift and scale sqrt(alpha_bar) so the last is 0.
fn rescale_zero_terminal_snr(betas: &Tensor) -> Result<Tensor> {
    let alphas = betas.f_neg()?.f_add_scalar(1.0)?;
    let ac = alphas.f_cumprod(0, Kind::Float)?;
    let mut s = ac.f_sqrt()?;
    let n = s.size()[0];
    let s0 = s.f_get(0)?.f_double_value(&[])? as f32;
    let st = s.f_get(n - 1)?.f_double_value(&[])? as f32;
    s = s.f_sub_scalar(st as f64)?;
    s = s.f_mul_scalar((s0 / (s0 - st)) as f64)?;
    let ab = s.f_pow_tensor_scalar(2)?;
    let ratio = ab.f_slice(0, 1, n, 1)?.f_div(&ab.f_slice(0, 0, n - 1, 1)?)?;
    let alphas = Tensor::f_cat(&[ab.f_slice(0, 0, 1, 1)?, ratio], 0)?;
    Ok(alphas.f_neg()?.f_add_scalar(1.0)?)
}

pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_contiguous()?.f_view([-1])?)?)
}

/// Inference timesteps as diffusers' DDPM/DDIM/Euler lay them out (before any cast).
/// `linspace` keeps fractions; callers round or not as their diffusers class does.
pub fn spaced_timesteps(spacing: TimestepSpacing, t_train: usize, n: usize, steps_offset: usize) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (t_train - 1) as f64, n).into_iter().rev().collect(),
        TimestepSpacing::Leading => {
            let ratio = t_train / n;
            (0..n).rev().map(|i| (i * ratio + steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t_train as f64 / n as f64;
            np_arange_desc(t_train as f64, ratio).into_iter().map(|v| v.round_ties_even() - 1.0).collect()
        }
    }
}

/// The inference timesteps of the multistep solvers (DPM-Solver, UniPC): `n` of the first
/// `last` training timesteps, noisiest first, the clean end (t = 0 for `linspace`) left out.
pub(crate) fn multistep_timesteps(
    spacing: TimestepSpacing,
    last: usize,
    t_train: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<f64> = np_linspace(0.0, last as f64 - 1.0, n + 1)
                .into_iter()
                .map(f64::round_ties_even)
                .rev()
                .collect();
            v.pop();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = last / (n + 1);
            (1..=n).rev().map(|i| (i * ratio + steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => np_arange_desc(last as f64, t_train as f64 / n as f64)
            .into_iter()
            .map(|v| v.round_ties_even() - 1.0)
            .collect(),
    }
}

/// `np.linspace(start, stop, n)`: start + i * step, the last value exactly `stop`.
pub(crate) fn np_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// `np.arange(start, 0, -step)` for positive `start` and `step`.
pub(crate) fn np_arange_desc(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * -step).collect()
}

/// `np.interp(x, arange(len(fp)), fp)`.
pub(crate) fn interp_index(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// diffusers' `_sigma_to_t`: the fractional training timestep of `sigma`, interpolating
/// log-sigma linearly. `log_sigmas` ascending (float32, as numpy keeps them).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let count = log_sigmas.iter().filter(|&&l| log_sigma - l as f64 >= 0.0).count();
    let low_idx = count.saturating_sub(1).min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx] as f64;
    let high = log_sigmas[high_idx] as f64;
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. 2022, eq. 5 with rho = 7: `n` sigmas from `sigma_max` down to `sigma_min`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n).into_iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
}

/// Clips or dynamically thresholds a predicted x0, as the config says.
pub(crate) fn clip_or_threshold(x0: Tensor, cfg: &SchedulerConfig, clip_default: bool) -> Result<Tensor> {
    if cfg.thresholding {
        threshold_sample(&x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    } else if cfg.clip_sample.unwrap_or(clip_default) {
        Ok(x0.f_clamp(-cfg.clip_sample_range, cfg.clip_sample_range)?)
    } else {
        Ok(x0)
    }
}

/// Dynamic thresholding (Saharia et al. 2022): per sample, s = the `ratio` quantile of |x|,
/// clamped to [1, max]; x is clamped to [-s, s] and divided by s.
pub(crate) fn threshold_sample(x: &Tensor, ratio: f64, max: f64) -> Result<Tensor> {
    let size = x.size();
    let kind = x.kind();
    let flat = x.f_to_kind(Kind::Float)?.f_reshape([size[0], -1])?;
    let s = flat.f_abs()?.f_quantile_scalar(ratio, 1, false, "linear")?.f_clamp(1.0, max)?.f_unsqueeze(1)?;
    let neg = s.f_neg()?;
    let out = flat.f_clamp_tensor(Some(&neg), Some(&s))?.f_div(&s)?;
    Ok(out.f_reshape(size.as_slice())?.f_to_kind(kind)?)
}

/// Index of `timestep` in `schedule` as diffusers' `index_for_timestep`: the second match when
/// a timestep repeats (so a sampler started mid-schedule skips no sigma), else the first.
pub(crate) fn index_for_timestep(schedule: &[f64], timestep: f64) -> Result<usize> {
    let hits: Vec<usize> =
        schedule.iter().enumerate().filter(|(_, &t)| t == timestep).map(|(i, _)| i).collect();
    match hits.len() {
        0 => Err(Error::Input(format!("timestep {timestep} is not one of the scheduler's timesteps"))),
        1 => Ok(hits[0]),
        _ => Ok(hits[1]),
    }
}

/// The step index of a sigma scheduler (Euler, Euler ancestral): found from `timestep` on the
/// first call after `set_timesteps` (diffusers' `_init_step_index`), then the remembered one.
pub(crate) fn cached_step_index(
    cached: &mut Option<usize>,
    schedule: &[f64],
    timestep: f64,
) -> Result<usize> {
    match *cached {
        Some(i) => Ok(i),
        None => {
            let i = index_for_timestep(schedule, timestep)?;
            *cached = Some(i);
            Ok(i)
        }
    }
}

/// The model input of a sigma scheduler: sample / sqrt(sigma^2 + 1).
pub(crate) fn scale_by_sigma(sample: &Tensor, sigma: f32) -> Result<Tensor> {
    Ok(sample.f_div_scalar((sigma * sigma + 1.0).powf(0.5) as f64)?)
}

pub(crate) fn check_steps(n: usize, t_train: usize) -> Result<()> {
    if n == 0 || n > t_train {
        return Err(Error::Config(format!(
            "--steps {n}: the number of sampling steps must be in 1..={t_train} (the model's training timesteps)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> SchedulerConfig {
        SchedulerConfig::from_json(json).unwrap().0
    }

    #[test]
    fn linear_and_scaled_linear_betas_match_closed_forms() {
        let t =
            NoiseTable::new(&cfg(r#"{"num_train_timesteps": 11, "beta_start": 0.001, "beta_end": 0.021}"#))
                .unwrap();
        for (i, b) in t.betas.iter().enumerate() {
            assert!((*b as f64 - (0.001 + 0.002 * i as f64)).abs() < 1e-7, "{i}: {b}");
        }
        let mut prod = 1.0f64;
        for (i, a) in t.alphas_cumprod.iter().enumerate() {
            prod *= 1.0 - t.betas[i] as f64;
            assert!((*a as f64 - prod).abs() < 1e-6);
        }
        let s = NoiseTable::new(&cfg(
            r#"{"num_train_timesteps": 5, "beta_start": 0.0001, "beta_end": 0.0081, "beta_schedule": "scaled_linear"}"#,
        ))
        .unwrap();
        // sqrt: 0.01 .. 0.09 in steps of 0.02
        for (i, b) in s.betas.iter().enumerate() {
            let r = 0.01 + 0.02 * i as f64;
            assert!((*b as f64 - r * r).abs() < 1e-7, "{i}: {b}");
        }
    }

    #[test]
    fn cosine_betas_use_float_division() {
        let b = cosine_betas(1000, 0.999);
        // alpha_bar(t) = cos^2((t + s) / (1 + s) pi / 2); beta_0 = 1 - alpha_bar(1/T) / alpha_bar(0).
        let ab = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
        assert!((b[0] - (1.0 - ab(0.001) / ab(0.0))).abs() < 1e-15);
        assert!(b[0] > 1e-5 && b[0] < 1e-4, "{}", b[0]);
        // The last beta is capped at 0.999 (alpha_bar(1) = cos^2(pi/2) = 0).
        assert_eq!(b[999], 0.999);
        // Integer division would make every t1 = t2 = 0 and every beta 0.
        assert!(b.iter().all(|&x| x > 0.0));
        assert!(b.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn sigmoid_betas_span_the_range() {
        let t = NoiseTable::new(&cfg(r#"{"beta_schedule": "sigmoid", "num_train_timesteps": 100}"#)).unwrap();
        let s6 = 1.0 / (1.0 + (6.0f64).exp());
        assert!((t.betas[0] as f64 - (s6 * (0.02 - 0.0001) + 0.0001)).abs() < 1e-7);
        assert!((t.betas[99] as f64 - ((1.0 - s6) * (0.02 - 0.0001) + 0.0001)).abs() < 1e-7);
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero() {
        let t = NoiseTable::new(&cfg(r#"{"rescale_betas_zero_snr": true}"#)).unwrap();
        assert_eq!(*t.alphas_cumprod.last().unwrap(), 0.0);
        let plain = NoiseTable::new(&SchedulerConfig::default()).unwrap();
        assert!((t.alphas_cumprod[0] - plain.alphas_cumprod[0]).abs() < 1e-6);
    }

    #[test]
    fn timestep_spacings() {
        use TimestepSpacing::*;
        assert_eq!(spaced_timesteps(Leading, 1000, 4, 1), vec![751.0, 501.0, 251.0, 1.0]);
        assert_eq!(spaced_timesteps(Trailing, 1000, 4, 0), vec![999.0, 749.0, 499.0, 249.0]);
        let l = spaced_timesteps(Linspace, 1000, 4, 0);
        assert_eq!(l, vec![999.0, 666.0, 333.0, 0.0]);
        // numpy's round is half to even: linspace(0, 999, 7) has 832.5 -> 832 and 166.5 -> 166.
        let l7: Vec<f64> =
            spaced_timesteps(Linspace, 1000, 7, 0).iter().map(|v| v.round_ties_even()).collect();
        assert_eq!(l7, vec![999.0, 832.0, 666.0, 500.0, 333.0, 166.0, 0.0]);
        assert_eq!(spaced_timesteps(Trailing, 1000, 3, 0), vec![999.0, 666.0, 332.0]);
    }

    #[test]
    fn add_noise_per_sample_timestep() {
        let t = NoiseTable::new(&SchedulerConfig::default()).unwrap();
        let x = Tensor::ones([3, 2, 2, 2], (Kind::Float, tch::Device::Cpu));
        let n = Tensor::zeros([3, 2, 2, 2], (Kind::Float, tch::Device::Cpu)) + 2.0;
        let ts = Tensor::from_slice(&[0i64, 500, 999]);
        let y = t.add_noise(&x, &n, &ts).unwrap();
        for (i, &ti) in [0usize, 500, 999].iter().enumerate() {
            let a = t.alphas_cumprod[ti] as f64;
            let want = a.sqrt() + 2.0 * (1.0 - a).sqrt();
            let got = y.double_value(&[i as i64, 1, 1, 0]);
            assert!((got - want).abs() < 1e-5, "{ti}: {got} vs {want}");
        }
        let e = t.add_noise(&x, &n, &Tensor::from_slice(&[0i64, 1, 1000])).unwrap_err();
        assert!(e.to_string().contains("0..1000"), "{e}");
        let e = t.add_noise(&x, &n, &Tensor::from_slice(&[0i64, 1])).unwrap_err();
        assert!(e.to_string().contains("2 timesteps"), "{e}");
    }

    #[test]
    fn training_targets_follow_the_prediction_type() {
        // DDPM's linear betas: alpha_bar is about 1 at t = 0 and 4e-5 at t = 999.
        let t = NoiseTable::new(&SchedulerConfig::default()).unwrap();
        let x = Tensor::ones([2, 3], (Kind::Float, tch::Device::Cpu)) * 0.5;
        let n = Tensor::ones([2, 3], (Kind::Float, tch::Device::Cpu)) * -2.0;
        let ts = Tensor::from_slice(&[0i64, 999]);
        let at = |y: &Tensor, i: i64| y.double_value(&[i, 1]);
        let eps = t.target(PredictionType::Epsilon, &x, &n, &ts).unwrap();
        assert_eq!((at(&eps, 0), at(&eps, 1)), (-2.0, -2.0));
        let x0 = t.target(PredictionType::Sample, &x, &n, &ts).unwrap();
        assert_eq!((at(&x0, 0), at(&x0, 1)), (0.5, 0.5));
        // v is the noise when almost no noise was added, minus the clean sample at the end.
        let v = t.target(PredictionType::VPrediction, &x, &n, &ts).unwrap();
        assert!((at(&v, 0) + 2.0).abs() < 0.01 && (at(&v, 1) + 0.5).abs() < 0.02, "{v}");
        for i in [0usize, 999] {
            let a = t.alphas_cumprod[i] as f64;
            let want = a.sqrt() * -2.0 - (1.0 - a).sqrt() * 0.5;
            assert!((at(&v, (i / 999) as i64) - want).abs() < 1e-6);
        }
    }

    #[test]
    fn config_errors_name_the_key_and_unknown_keys_are_listed() {
        let e = SchedulerConfig::from_json(r#"{"beta_schedule": "quadratic"}"#).unwrap_err().to_string();
        assert!(e.contains("'beta_schedule'") && e.contains("quadratic"), "{e}");
        let e = SchedulerConfig::from_json(r#"{"num_train_timesteps": "many"}"#).unwrap_err().to_string();
        assert!(e.contains("'num_train_timesteps'"), "{e}");
        let e = SchedulerConfig::from_json(r#"{"beta_end": 1.5}"#).unwrap_err().to_string();
        assert!(e.contains("'beta_end'"), "{e}");
        let e =
            SchedulerConfig::from_json(r#"{"algorithm_type": "sde-dpmsolver++"}"#).unwrap_err().to_string();
        assert!(e.contains("'algorithm_type'"), "{e}");
        let e = SchedulerConfig::from_json(r#"{"trained_betas": [0.1, 0.2]}"#).unwrap_err().to_string();
        assert!(e.contains("'trained_betas'") && e.contains("2 values"), "{e}");
        let (c, ignored) = SchedulerConfig::from_json(
            r#"{"_class_name": "DDIMScheduler", "_diffusers_version": "0.1", "use_beta_sigmas": true,
                "prediction_type": "v_prediction", "lambda_min_clipped": -Infinity}"#,
        )
        .unwrap();
        assert_eq!(ignored, vec!["use_beta_sigmas".to_string()]);
        assert_eq!(c.class_name.as_deref(), Some("DDIMScheduler"));
        assert_eq!(c.prediction_type, PredictionType::VPrediction);
    }

    #[test]
    fn unknown_scheduler_lists_the_known_ones() {
        let e = build("plms", &SchedulerConfig::default()).err().unwrap().to_string();
        assert!(e.contains("unknown scheduler 'plms'") && e.contains("dpm++2m-karras"), "{e}");
        for (name, _) in SCHEDULERS {
            assert_eq!(build(name, &SchedulerConfig::default()).unwrap().name(), *name);
        }
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let t = NoiseTable::new(&SchedulerConfig::default()).unwrap();
        let sig = t.sigmas().unwrap();
        let logs: Vec<f32> = sig.iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(sig[321] as f64, &logs) - 321.0).abs() < 1e-3);
        let mid = ((sig[10] as f64).ln() + (sig[11] as f64).ln()) / 2.0;
        assert!((sigma_to_t(mid.exp(), &logs) - 10.5).abs() < 1e-3);
    }
}
