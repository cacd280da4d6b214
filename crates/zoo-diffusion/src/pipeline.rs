//! Model folders and the denoising loop.
//!
//! A model is found from `--model`:
//! - a diffusers UNet folder: `config.json` + `diffusion_pytorch_model.safetensors`, with an
//!   optional `scheduler_config.json` beside them;
//! - a diffusers pipeline folder: `unet/` and `scheduler/scheduler_config.json`
//!   (google/ddpm-cifar10-32's layout);
//! - a zoo training run: its `model/` folder (written by `zoo diffusion train`);
//! - a preset name (`models/diffusion/<name>.json`), whose weights are the folder
//!   `models/diffusion/<name>/` when it exists (architecture only otherwise).
//!
//! Class conditioning and classifier-free guidance (Ho & Salimans 2022): zoo trains
//! class-conditional models with `num_class_embeds = classes + 1`, the last id being the null
//! class (the label is replaced by it at random during training); the model folder's `zoo.json`
//! says `{"null_class": K}`. Sampling with guidance scale g runs the UNet on the class and on
//! the null class and uses `uncond + g * (cond - uncond)`. diffusers class-conditional models
//! without a null class sample with g = 1 only.
//!
//! Order of draws: [`sample`] seeds libtorch's generator with the seed, draws the initial noise
//! `randn(B, C, H, W)` first, and the stochastic schedulers draw their step noise after it, as
//! diffusers' DDPMPipeline/DDIMPipeline do after `torch.manual_seed(seed)`.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::schedulers::{Scheduler, SchedulerConfig};
use crate::unet::{legacy_attention_remap, UNet2DConfig, UNet2DModel};
use crate::{Error, Result};

/// zoo's additions to a model folder (`zoo.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZooMeta {
    /// The class id of "no class", for classifier-free guidance.
    #[serde(default)]
    pub null_class: Option<i64>,
    /// What the model was trained on, for the record.
    #[serde(default)]
    pub data: Option<String>,
}

/// Where a model's parts are.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub unet: UNet2DConfig,
    pub scheduler: SchedulerConfig,
    /// Keys of the scheduler config that zoo ignored.
    pub ignored_scheduler_keys: Vec<String>,
    /// The folder holding `diffusion_pytorch_model.safetensors`, if there are weights.
    pub weights: Option<PathBuf>,
    pub meta: ZooMeta,
    /// What `--model` named, for messages.
    pub name: String,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = zoo_core::presets::read(path)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Core(zoo_core::Error::bad_file(path, format!("not valid JSON: {e}"))))
}

fn read_scheduler(path: &Path) -> Result<(SchedulerConfig, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| zoo_core::Error::io(path, e))?;
    SchedulerConfig::from_json(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

impl ModelSpec {
    /// Resolves `--model DIR|PRESET` (see the module docs).
    pub fn resolve(spec: &str) -> Result<ModelSpec> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Self::from_dir(path, spec);
        }
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            return Self::from_preset_file(path, spec);
        }
        if spec.contains('/') || spec.contains('\\') {
            return Err(Error::Config(format!("--model {spec}: no such folder")));
        }
        let preset = zoo_core::presets::find_preset("diffusion", spec)?;
        Self::from_preset_file(&preset.path, spec)
    }

    fn from_preset_file(path: &Path, name: &str) -> Result<ModelSpec> {
        let v = read_json(path)?;
        let unet = UNet2DConfig::from_value(
            v.get("model")
                .ok_or_else(|| Error::Config(format!("{}: a preset needs a \"model\"", path.display())))?,
        )
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let (scheduler, ignored) = match v.get("scheduler") {
            Some(s) => SchedulerConfig::from_value(s)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
            None => (SchedulerConfig::default(), Vec::new()),
        };
        let dir = path.with_extension("");
        let (weights, meta) = if dir.join("diffusion_pytorch_model.safetensors").is_file() {
            (Some(dir.clone()), read_meta(&dir)?)
        } else {
            (None, ZooMeta { null_class: preset_null_class(&v), data: None })
        };
        Ok(ModelSpec {
            unet,
            scheduler,
            ignored_scheduler_keys: ignored,
            weights,
            meta,
            name: name.to_string(),
        })
    }

    fn from_dir(dir: &Path, name: &str) -> Result<ModelSpec> {
        if dir.join("model").join("config.json").is_file() {
            return Self::from_dir(&dir.join("model"), name); // a zoo run folder
        }
        let (unet_dir, sched_path) = if dir.join("unet").join("config.json").is_file() {
            (dir.join("unet"), dir.join("scheduler").join("scheduler_config.json"))
        } else if dir.join("config.json").is_file() {
            (dir.to_path_buf(), dir.join("scheduler_config.json"))
        } else {
            return Err(Error::Config(format!(
                "--model {}: no config.json (or unet/config.json) in this folder; give a diffusers UNet or pipeline folder, a zoo run, or a preset name",
                dir.display()
            )));
        };
        let unet = UNet2DConfig::from_value(&read_json(&unet_dir.join("config.json"))?)
            .map_err(|e| Error::Config(format!("{}: {e}", unet_dir.join("config.json").display())))?;
        let (scheduler, ignored) = if sched_path.is_file() {
            read_scheduler(&sched_path)?
        } else {
            let alt = unet_dir.parent().map(|p| p.join("scheduler").join("scheduler_config.json"));
            match alt.filter(|p| p.is_file()) {
                Some(p) => read_scheduler(&p)?,
                None => (SchedulerConfig::default(), Vec::new()),
            }
        };
        let meta = read_meta(dir)?;
        Ok(ModelSpec {
            unet,
            scheduler,
            ignored_scheduler_keys: ignored,
            weights: Some(unet_dir),
            meta,
            name: name.to_string(),
        })
    }
}

fn preset_null_class(v: &Value) -> Option<i64> {
    v.get("train").and_then(|t| t.get("null_class")).and_then(Value::as_i64)
}

fn read_meta(dir: &Path) -> Result<ZooMeta> {
    let p = dir.join("zoo.json");
    if !p.is_file() {
        return Ok(ZooMeta::default());
    }
    serde_json::from_value(read_json(&p)?).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
}

/// A UNet with its scheduler config, ready to sample.
pub struct DiffusionModel {
    pub vs: VarStore,
    pub unet: UNet2DModel,
    pub spec: ModelSpec,
}

impl DiffusionModel {
    /// Builds the UNet of `spec` on `device` in `kind`; loads the weights strictly (renaming
    /// legacy attention names), or fails when `require_weights` and there are none.
    pub fn load(spec: ModelSpec, device: Device, kind: Kind, require_weights: bool) -> Result<Self> {
        let mut vs = VarStore::new(device);
        let unet = UNet2DModel::new(vs.root(), &spec.unet)?;
        if kind != Kind::Float {
            vs.set_kind(kind);
        }
        match &spec.weights {
            Some(dir) => {
                let files = zoo_core::weights::weight_files(dir)?;
                for f in &files {
                    zoo_core::weights::load_into(&vs, f, &legacy_attention_remap)?;
                }
            }
            None if require_weights => {
                return Err(Error::Config(format!(
                    "--model {}: this preset has no trained weights (no folder {}); train it with `zoo diffusion train --preset {}` and sample from the run folder, or give a model folder",
                    spec.name,
                    zoo_core::presets::models_dir().join("diffusion").join(&spec.name).display(),
                    spec.name
                )))
            }
            None => {}
        }
        Ok(DiffusionModel { vs, unet, spec })
    }

    /// Classes a user may ask for (the null class excluded); None for unconditional models.
    pub fn num_classes(&self) -> Option<i64> {
        let n = self.spec.unet.num_class_embeds?;
        Some(if self.spec.meta.null_class.is_some() { n - 1 } else { n })
    }
}

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub num_samples: i64,
    pub steps: usize,
    /// One class for every sample, or None: classes `class_offset`, `class_offset + 1`, ...
    /// in turn, modulo the number of classes (class-conditional models only).
    pub class: Option<i64>,
    /// Where the classes in turn start (for a batch that continues another).
    pub class_offset: i64,
    /// Classifier-free guidance scale (1: no guidance).
    pub guidance_scale: f64,
    pub seed: u64,
    /// Keep x_t after this many evenly spaced steps (for the denoising strip); 0 keeps none.
    pub keep_frames: usize,
}

/// The samples, and the trajectory frames when asked for.
pub struct SampleOutput {
    /// (B, C, H, W), in [-1, 1] (clamped).
    pub images: Tensor,
    /// (B, C, H, W) frames of x_t from pure noise to the result, clamped to [-1, 1].
    pub frames: Vec<Tensor>,
    pub classes: Option<Vec<i64>>,
}

/// Runs the reverse process: `steps` steps of `scheduler` with `model`'s UNet.
/// `on_step(i, n)` is called after each step (for a progress bar).
pub fn sample(
    model: &DiffusionModel,
    scheduler: &mut dyn Scheduler,
    o: &SampleOptions,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<SampleOutput> {
    let cfg = &model.spec.unet;
    if o.num_samples < 1 {
        return Err(Error::Config(format!("--num-samples {}: must be at least 1", o.num_samples)));
    }
    if !(o.guidance_scale.is_finite() && o.guidance_scale >= 0.0) {
        return Err(Error::Config(format!("--guidance-scale {}: must be 0 or more", o.guidance_scale)));
    }
    // 1. class labels (and the null class for guidance)
    let labels: Option<Vec<i64>> = match (model.num_classes(), o.class) {
        (None, Some(_)) => {
            return Err(Error::Config(format!("--class: {} is an unconditional model", model.spec.name)))
        }
        (None, None) => None,
        (Some(k), Some(c)) if c < 0 || c >= k => {
            return Err(Error::Config(format!("--class {c}: this model has classes 0..={}", k - 1)))
        }
        (Some(_), Some(c)) => Some(vec![c; o.num_samples as usize]),
        (Some(k), None) => Some((0..o.num_samples).map(|i| (o.class_offset + i).rem_euclid(k)).collect()),
    };
    let guided = o.guidance_scale != 1.0;
    let null = match (guided, &labels, model.spec.meta.null_class) {
        (false, _, _) => None,
        (true, None, _) => {
            return Err(Error::Config("--guidance-scale: guidance needs a class-conditional model".into()))
        }
        (true, Some(_), None) => {
            return Err(Error::Config(format!(
                "--guidance-scale: {} has no null class (zoo.json null_class), so it samples with guidance 1 only",
                model.spec.name
            )))
        }
        (true, Some(_), Some(n)) => Some(n),
    };
    let device = model.vs.device();
    let kind = model.vs.root().kind();
    let label_t = labels.as_ref().map(|l| Tensor::from_slice(l).to_device(device));
    let both_t = match (&labels, null) {
        (Some(l), Some(n)) => {
            let mut v = l.clone();
            v.extend(std::iter::repeat_n(n, l.len()));
            Some(Tensor::from_slice(&v).to_device(device))
        }
        _ => None,
    };

    // 2. the initial noise: the first draw after seeding
    let (h, w) = cfg.sample_hw();
    zoo_core::seed::seed_all(o.seed);
    let shape = [o.num_samples, cfg.in_channels, h, w];
    let noise = Tensor::f_randn(shape, (Kind::Float, Device::Cpu))?.f_to_device(device)?.f_to_kind(kind)?;
    scheduler.set_timesteps(o.steps)?;
    let mut x = noise.f_mul_scalar(scheduler.init_noise_sigma())?;

    // 3. the denoising loop
    let timesteps = scheduler.timesteps().to_vec();
    let n = timesteps.len();
    let keep: Vec<usize> = if o.keep_frames == 0 {
        Vec::new()
    } else {
        (1..=o.keep_frames).map(|k| (k * n).div_ceil(o.keep_frames)).collect()
    };
    let mut frames = Vec::new();
    if o.keep_frames > 0 {
        frames
            .push(x.f_div_scalar(scheduler.init_noise_sigma())?.f_clamp(-1.0, 1.0)?.f_to_kind(Kind::Float)?);
    }
    tch::no_grad(|| -> Result<()> {
        for (i, &t) in timesteps.iter().enumerate() {
            let inp = scheduler.scale_model_input(&x, t)?;
            let t_tensor = Tensor::from_slice(&[t]).to_device(device);
            let out = match (&both_t, &label_t) {
                (Some(both), _) => {
                    let o2 = model.unet.forward(&Tensor::f_cat(&[&inp, &inp], 0)?, &t_tensor, Some(both))?;
                    let parts = o2.f_chunk(2, 0)?;
                    let (cond, uncond) = (&parts[0], &parts[1]);
                    uncond.f_add(&cond.f_sub(uncond)?.f_mul_scalar(o.guidance_scale)?)?
                }
                (None, l) => model.unet.forward(&inp, &t_tensor, l.as_ref())?,
            };
            x = scheduler.step(&out, t, &x)?.prev_sample;
            if keep.contains(&(i + 1)) {
                frames.push(x.f_clamp(-1.0, 1.0)?.f_to_kind(Kind::Float)?);
            }
            on_step(i + 1, n);
        }
        Ok(())
    })?;
    Ok(SampleOutput { images: x.f_clamp(-1.0, 1.0)?.f_to_kind(Kind::Float)?, frames, classes: labels })
}

/// Writes a diffusers-format UNet folder: config.json, diffusion_pytorch_model.safetensors,
/// scheduler_config.json and zoo.json.
pub fn save_model_folder(
    dir: &Path,
    vs: &VarStore,
    unet: &UNet2DConfig,
    scheduler: &SchedulerConfig,
    meta: &ZooMeta,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| zoo_core::Error::io(dir, e))?;
    let mut cfg = serde_json::to_value(unet).map_err(|e| Error::Config(e.to_string()))?;
    if let Some(m) = cfg.as_object_mut() {
        m.insert("_class_name".into(), Value::String("UNet2DModel".into()));
    }
    let write = |name: &str, v: &Value| -> Result<()> {
        let text = serde_json::to_string_pretty(v).map_err(|e| Error::Config(e.to_string()))?;
        zoo_core::fsutil::atomic_write(&dir.join(name), |f| {
            use std::io::Write;
            f.write_all(text.as_bytes()).map_err(|e| zoo_core::Error::io(dir.join(name), e))
        })?;
        Ok(())
    };
    write("config.json", &cfg)?;
    let mut s = serde_json::to_value(scheduler).map_err(|e| Error::Config(e.to_string()))?;
    if let Some(m) = s.as_object_mut() {
        m.entry("_class_name").or_insert(Value::String("DDPMScheduler".into()));
        m.retain(|_, v| !v.is_null());
    }
    write("scheduler_config.json", &s)?;
    write("zoo.json", &serde_json::to_value(meta).map_err(|e| Error::Config(e.to_string()))?)?;
    zoo_core::weights::save_varstore(vs, &dir.join("diffusion_pytorch_model.safetensors"))?;
    Ok(())
}
