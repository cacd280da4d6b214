//! Training a UNet to denoise (Ho et al. 2020, algorithm 1), on zoo-core's training loop.
//!
//! Each step: a batch x0 from the data (randomly mirrored left to right where that makes sense:
//! not for digits), a uniform timestep t in 0..T and noise e per image, x_t = sqrt(a_t) x0 +
//! sqrt(1 - a_t) e, and the mean squared error between the UNet's output at (x_t, t) and the
//! target: e for the epsilon objective, v = sqrt(a_t) e - sqrt(1 - a_t) x0 for v-prediction
//! (Salimans & Ho 2022). This is diffusers' examples/unconditional_image_generation recipe.
//!
//! Class-conditional presets with a `null_class` learn classifier-free guidance (Ho & Salimans
//! 2022): each label is replaced by the null class with probability `class_dropout`.
//!
//! An exponential moving average of the weights (zoo_core::train::Ema, with diffusers' warmup)
//! is what the run samples from and what it saves as its model.
//!
//! Randomness: data order from an [`EpochShuffler`] (a function of seed and step), flips and
//! class dropout from the loop's per-step `rand` generator, timesteps and noise from libtorch's
//! generator, which the loop seeds at every step; resume is therefore exact.
use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use zoo_core::data::{DataSpec, EpochShuffler, ImageFolder, ImageFolderOptions, Mnist, Split};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::{Outcome, Reporter};
use zoo_core::train::{AdamW, AdamWConfig, Ema, LoopConfig, LrSchedule, StepOutput, TrainTask, Trainer};

use crate::pipeline::{self, DiffusionModel, ModelSpec, SampleOptions, ZooMeta};
use crate::schedulers::{self, NoiseTable, PredictionType, SchedulerConfig};
use crate::unet::{UNet2DConfig, UNet2DModel};
use crate::{Error, Result};

/// What the UNet learns to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The noise e (Ho et al. 2020).
    #[default]
    Epsilon,
    /// v = sqrt(a_t) e - sqrt(1 - a_t) x0 (Salimans & Ho 2022).
    #[serde(alias = "v")]
    VPrediction,
}

impl Objective {
    /// The scheduler's `prediction_type` for a model trained with this objective.
    pub fn prediction_type(self) -> PredictionType {
        match self {
            Objective::Epsilon => PredictionType::Epsilon,
            Objective::VPrediction => PredictionType::VPrediction,
        }
    }
}

fn d_ema() -> f64 {
    0.9999
}
fn d_class_dropout() -> f64 {
    0.1
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_log() -> u64 {
    50
}
fn d_sample_steps() -> usize {
    50
}
fn d_ddim() -> String {
    "ddim".into()
}
fn d_one() -> f64 {
    1.0
}
fn d_samples() -> i64 {
    16
}
fn d_keep() -> usize {
    3
}

/// The training recipe of a preset (`"train"` in models/diffusion/*.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// AdamW's peak learning rate, reached after `warmup_steps` and then held (as DDPM).
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    pub steps: u64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub clip_grad: Option<f64>,
    #[serde(default = "d_ema")]
    pub ema_decay: f64,
    #[serde(default)]
    pub objective: Objective,
    /// Mirror images left to right at random (ignored for MNIST: digits are not symmetric).
    #[serde(default)]
    pub hflip: bool,
    /// The UNet's dropout while training (its config's `dropout`).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// The class id meaning "no class" (the last of `num_class_embeds`), for classifier-free
    /// guidance; None trains a plain class-conditional (or unconditional) model.
    #[serde(default)]
    pub null_class: Option<i64>,
    /// Probability of replacing a label by the null class.
    #[serde(default = "d_class_dropout")]
    pub class_dropout: f64,
    #[serde(default = "d_log")]
    pub log_every: u64,
    #[serde(default)]
    pub sample_every: Option<u64>,
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    #[serde(default = "d_keep")]
    pub keep_checkpoints: usize,
    /// The sample grids: scheduler, steps, guidance scale and number of images.
    #[serde(default = "d_ddim")]
    pub sample_scheduler: String,
    #[serde(default = "d_sample_steps")]
    pub sample_steps: usize,
    #[serde(default = "d_one")]
    pub sample_guidance_scale: f64,
    #[serde(default = "d_samples")]
    pub num_samples: i64,
}

impl TrainConfig {
    /// Checks values against each other and the model; errors name the key.
    pub fn validate(&self, model: &UNet2DConfig) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::Config(format!("train setting '{k}': {why}")));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} is not positive", self.lr));
        }
        if !(0.0..=1.0).contains(&self.ema_decay) {
            return bad("ema_decay", format!("{} is not in [0, 1]", self.ema_decay));
        }
        if !(0.0..1.0).contains(&self.class_dropout) {
            return bad("class_dropout", format!("{} is not in [0, 1)", self.class_dropout));
        }
        if let Some(d) = self.dropout {
            if !(0.0..1.0).contains(&d) {
                return bad("dropout", format!("{d} is not in [0, 1)"));
            }
        }
        if self.log_every == 0 {
            return bad("log_every", "must be at least 1".into());
        }
        if self.num_samples < 1 {
            return bad("num_samples", "must be at least 1".into());
        }
        if let Some(n) = self.null_class {
            match model.num_class_embeds {
                Some(k) if n == k - 1 && k >= 2 => {}
                Some(k) => {
                    return bad(
                        "null_class",
                        format!("must be the last class id, {} (num_class_embeds {k})", k - 1),
                    )
                }
                None => {
                    return bad("null_class", "the model has no class embedding (num_class_embeds)".into())
                }
            }
        }
        schedulers::build(&self.sample_scheduler, &SchedulerConfig::default())?;
        Ok(())
    }

    /// The learning rate: linear warmup, then constant.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule::WarmupLinear {
            lr: self.lr,
            min_lr: self.lr,
            warmup_steps: self.warmup_steps,
            decay_steps: self.steps.max(self.warmup_steps),
        }
    }
}

/// A preset: `models/diffusion/<name>.json` with `model` (a UNet config.json), `scheduler` (a
/// scheduler_config.json) and `train`.
#[derive(Debug, Clone)]
pub struct Preset {
    pub model: UNet2DConfig,
    pub scheduler: SchedulerConfig,
    pub train: TrainConfig,
}

impl Preset {
    pub fn load(path: &Path) -> Result<Preset> {
        let text = zoo_core::presets::read(path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Core(zoo_core::Error::bad_file(path, format!("not valid JSON: {e}"))))?;
        Self::from_value(&v).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn from_value(v: &Value) -> Result<Preset> {
        let model = UNet2DConfig::from_value(
            v.get("model").ok_or_else(|| Error::Config("a preset needs a \"model\"".into()))?,
        )?;
        let scheduler = match v.get("scheduler") {
            Some(s) => SchedulerConfig::from_value(s)?.0,
            None => SchedulerConfig::default(),
        };
        let train: TrainConfig = serde_json::from_value(
            v.get("train")
                .cloned()
                .ok_or_else(|| Error::Config("a preset needs \"train\" settings".into()))?,
        )
        .map_err(|e| Error::Config(format!("train settings: {e}")))?;
        train.validate(&model)?;
        Ok(Preset { model, scheduler, train })
    }

    /// Preset `name` of models/diffusion/ (an unknown name lists the known ones).
    pub fn find(name: &str) -> Result<Preset> {
        let p = zoo_core::presets::find_preset("diffusion", name)?;
        Self::load(&p.path)
    }

    /// The UNet config the run trains: the preset's, with the training dropout.
    pub fn unet_config(&self) -> UNet2DConfig {
        let mut c = self.model.clone();
        if let Some(d) = self.train.dropout {
            c.dropout = d;
        }
        c
    }

    /// The scheduler config saved with the model: the preset's, with the objective's prediction type.
    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig { prediction_type: self.train.objective.prediction_type(), ..self.scheduler.clone() }
    }
}

/// Images of the procedural shapes set a run trains on.
pub const SHAPES_IMAGES: i64 = 4096;

enum Source {
    Mnist(Mnist),
    Folder(ImageFolder),
    Tensor { images: Tensor, labels: Tensor },
}

/// Training images as (B, C, H, W) f32 in [-1, 1], with labels where the data has them.
pub struct TrainData {
    source: Source,
    /// Classes of the labels (None: unlabelled images).
    pub classes: Option<i64>,
    /// Whether mirroring makes sense (not for digits).
    pub flips_ok: bool,
    pub len: usize,
}

impl TrainData {
    /// Opens `spec` for a model taking `channels` x `h` x `w` images. MNIST (10 classes) is
    /// padded to 32x32 for 32x32 models; `shapes` makes [`SHAPES_IMAGES`] images (3 classes)
    /// from `seed`; an image folder is unlabelled.
    pub fn open(spec: &DataSpec, channels: i64, (h, w): (i64, i64), seed: u64) -> Result<TrainData> {
        match spec {
            DataSpec::Mnist(dir) => {
                if channels != 1 || !((h, w) == (28, 28) || (h, w) == (32, 32)) {
                    return Err(Error::Config(format!(
                        "--data {spec}: MNIST is 1x28x28 (1x32x32 padded) but the model takes {channels}x{h}x{w}; pick an MNIST preset (mnist-32)"
                    )));
                }
                let m = Mnist::load(dir, Split::Train)?;
                let m = if h == 32 { m.pad_to_32()? } else { m };
                let len = m.len();
                Ok(TrainData { source: Source::Mnist(m), classes: Some(10), flips_ok: false, len })
            }
            DataSpec::Images(dir) => {
                let opts =
                    ImageFolderOptions { size: (h, w), center_crop: true, random_flip: false, channels };
                let f = ImageFolder::open(dir, opts)?;
                let len = f.len();
                Ok(TrainData { source: Source::Folder(f), classes: None, flips_ok: true, len })
            }
            DataSpec::Shapes => {
                if h != w {
                    return Err(Error::Config(format!(
                        "--data shapes: the shapes are square, the model takes {h}x{w}"
                    )));
                }
                let (images, labels) = zoo_core::data::shapes(SHAPES_IMAGES, h, seed);
                let images = zoo_core::image::to_channels(&images, channels)?;
                let classes = zoo_core::data::shapes::CLASS_NAMES.len() as i64;
                Ok(TrainData {
                    source: Source::Tensor { images, labels },
                    classes: Some(classes),
                    flips_ok: true,
                    len: SHAPES_IMAGES as usize,
                })
            }
            other => Err(Error::Config(format!("--data {other}: use mnist:DIR, images:DIR or shapes"))),
        }
    }

    /// The images (and labels) at `idx`, on the CPU.
    fn batch(&self, idx: &[usize], rng: &mut StdRng) -> Result<(Tensor, Option<Tensor>)> {
        Ok(match &self.source {
            Source::Mnist(m) => {
                let (x, y) = m.batch(idx)?;
                (x, Some(y))
            }
            Source::Folder(f) => (f.batch(idx, rng)?, None),
            Source::Tensor { images, labels } => {
                let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                let i = Tensor::f_from_slice(&i)?;
                (images.f_index_select(0, &i)?, Some(labels.f_index_select(0, &i)?))
            }
        })
    }
}

/// The diffusion [`TrainTask`]: the UNet being trained, its EMA and a second UNet that holds
/// the EMA weights for sampling.
pub struct DiffusionTask {
    pub unet: UNet2DModel,
    pub preset: Preset,
    /// The model sampled from and saved: the EMA weights, the run's scheduler config.
    pub ema_model: DiffusionModel,
    ema: Ema,
    table: NoiseTable,
    data: TrainData,
    shuffler: EpochShuffler,
    flip: bool,
    /// The class count the labels use (None: unconditional training).
    classes: Option<i64>,
    seed: u64,
    data_name: String,
}

impl DiffusionTask {
    /// Creates the UNet's variables in `vs` (initial weights from libtorch's generator: seed it
    /// first) and the EMA copy.
    pub fn new(vs: &VarStore, preset: Preset, data: TrainData, data_name: &str, seed: u64) -> Result<Self> {
        let cfg = preset.unet_config();
        let unet = UNet2DModel::new(vs.root(), &cfg)?;
        let classes = match (cfg.num_class_embeds, data.classes) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::Config(format!(
                    "--data {data_name}: the model is class-conditional but these images have no labels; pick an unconditional preset"
                )))
            }
            (Some(k), Some(c)) => {
                let usable = if preset.train.null_class.is_some() { k - 1 } else { k };
                if c > usable {
                    return Err(Error::Config(format!(
                        "--data {data_name}: {c} classes, but the model has {usable} (num_class_embeds {k}); pick a preset made for this data"
                    )));
                }
                Some(c)
            }
        };
        let ema = Ema::new(vs, preset.train.ema_decay, true)?;
        let ema_vs = VarStore::new(vs.device());
        let ema_unet = UNet2DModel::new(ema_vs.root(), &cfg)?;
        let spec = ModelSpec {
            unet: cfg.clone(),
            scheduler: preset.scheduler_config(),
            ignored_scheduler_keys: Vec::new(),
            weights: None,
            meta: ZooMeta { null_class: preset.train.null_class, data: Some(data_name.to_string()) },
            name: "the model being trained".into(),
        };
        let table = NoiseTable::new(&preset.scheduler)?;
        let shuffler = EpochShuffler::new(data.len, preset.train.batch_size, seed);
        let flip = preset.train.hflip && data.flips_ok;
        Ok(DiffusionTask {
            unet,
            ema_model: DiffusionModel { vs: ema_vs, unet: ema_unet, spec },
            ema,
            table,
            data,
            shuffler,
            flip,
            classes,
            seed,
            data_name: data_name.to_string(),
            preset,
        })
    }

    /// Training images.
    pub fn data_len(&self) -> usize {
        self.data.len
    }

    /// Whether batches are mirrored at random.
    pub fn flips(&self) -> bool {
        self.flip
    }

    /// The loop settings of the preset's recipe.
    pub fn loop_config(&self) -> LoopConfig {
        let t = &self.preset.train;
        LoopConfig {
            steps: t.steps,
            grad_accum: 1,
            clip_grad: t.clip_grad,
            log_every: t.log_every,
            eval_every: None,
            sample_every: t.sample_every,
            checkpoint_every: t.checkpoint_every,
            keep_checkpoints: t.keep_checkpoints,
            seed: self.seed,
        }
    }

    /// AdamW over `vs` with the recipe's learning rate and weight decay.
    pub fn optimizer(&self, vs: &VarStore) -> AdamW {
        let t = &self.preset.train;
        AdamW::new(vs, AdamWConfig { lr: t.lr, weight_decay: t.weight_decay, ..Default::default() })
    }

    /// Copies the EMA weights into [`DiffusionTask::ema_model`].
    pub fn sync_ema(&self) -> Result<()> {
        Ok(self.ema.copy_to(&self.ema_model.vs)?)
    }

    /// Samples `num_samples` images from the EMA weights with the recipe's sampler (classes in
    /// turn for a class-conditional model). Reseeds libtorch's generator with `seed`.
    pub fn sample_images(
        &self,
        num_samples: i64,
        seed: u64,
        keep_frames: usize,
    ) -> Result<pipeline::SampleOutput> {
        self.sync_ema()?;
        let t = &self.preset.train;
        let mut sched = schedulers::build(&t.sample_scheduler, &self.ema_model.spec.scheduler)?;
        let guidance = if self.preset.train.null_class.is_some() { t.sample_guidance_scale } else { 1.0 };
        let o = SampleOptions {
            num_samples,
            steps: t.sample_steps,
            class: None,
            class_offset: 0,
            guidance_scale: guidance,
            seed,
            keep_frames,
        };
        pipeline::sample(&self.ema_model, sched.as_mut(), &o, &mut |_, _| {})
    }

    /// Writes the EMA model as a diffusers UNet folder (plus zoo.json): what `zoo diffusion
    /// sample --model` loads.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        self.sync_ema()?;
        let s = &self.ema_model.spec;
        pipeline::save_model_folder(dir, &self.ema_model.vs, &s.unet, &s.scheduler, &s.meta)
    }

    /// The configuration a run records (and a resumed run must repeat).
    pub fn run_config(&self, preset_name: &str) -> Value {
        json!({
            "preset": preset_name,
            "data": self.data_name,
            "seed": self.seed,
            "model": self.ema_model.spec.unet,
            "scheduler": self.ema_model.spec.scheduler,
            "train": self.preset.train,
        })
    }
}

impl TrainTask for DiffusionTask {
    fn loss(&mut self, step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        let device = self.ema_model.vs.device();
        // 1. the batch, mirrored and with labels dropped to the null class at random
        let idx = self.shuffler.batch_at(step);
        let (mut x0, labels) = self.data.batch(&idx, rng)?;
        let b = idx.len() as i64;
        if self.flip {
            let mask: Vec<bool> = (0..b).map(|_| rng.gen_bool(0.5)).collect();
            let mask = Tensor::f_from_slice(&mask)?.f_view([b, 1, 1, 1])?;
            x0 = x0.f_flip([3])?.f_where_self(&mask, &x0)?;
        }
        let labels = match (self.classes, labels, self.preset.train.null_class) {
            (None, _, _) | (_, None, _) => None,
            (Some(_), Some(l), None) => Some(l),
            (Some(_), Some(l), Some(null)) => {
                let p = self.preset.train.class_dropout;
                let mut v = Vec::<i64>::try_from(&l).map_err(zoo_core::Error::Torch)?;
                for y in v.iter_mut() {
                    if rng.gen::<f64>() < p {
                        *y = null;
                    }
                }
                Some(Tensor::f_from_slice(&v)?)
            }
        };
        let x0 = x0.f_to_device(device)?;
        let labels = labels.map(|l| l.to_device(device));
        // 2. timesteps and noise (libtorch's generator, seeded for this step)
        let t_train = self.table.alphas_cumprod.len() as i64;
        let t = Tensor::f_randint(t_train, [b], (Kind::Int64, Device::Cpu))?.f_to_device(device)?;
        let noise = Tensor::f_randn(x0.size(), (Kind::Float, Device::Cpu))?.f_to_device(device)?;
        let xt = self.table.add_noise(&x0, &noise, &t)?;
        let target = self.table.target(self.preset.train.objective.prediction_type(), &x0, &noise, &t)?;
        // 3. the UNet's prediction and the loss
        let pred = self.unet.forward_t(&xt, &t, labels.as_ref(), true)?;
        let loss = pred.f_mse_loss(&target, tch::Reduction::Mean)?;
        Ok(StepOutput { loss, metrics: Vec::new() })
    }

    fn after_step(&mut self, _step: u64) -> zoo_core::Result<()> {
        self.ema.update()
    }

    fn sample(&mut self, step: u64, dir: &Path) -> zoo_core::Result<()> {
        let n = self.preset.train.num_samples;
        let out = self.sample_images(n, self.seed, 0)?;
        zoo_core::image::save_image(
            &out.images.to_device(Device::Cpu),
            &dir.join(format!("step-{step:06}.png")),
        )
    }

    fn extra_state(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        vec![("ema", self.ema.state())]
    }

    fn load_extra_state(&mut self, dir: &Path) -> zoo_core::Result<()> {
        let state = zoo_core::weights::load(&dir.join("ema.safetensors"))?;
        self.ema.load_state(&state)
    }
}

/// Trains `task` (whose UNet lives in `vs`) in `run`: from the run's latest checkpoint when
/// there is one, to the recipe's `steps`. `should_stop` replaces the Ctrl-C check (tests).
pub fn train(
    run: &RunDir,
    vs: &VarStore,
    task: &mut DiffusionTask,
    reporter: &mut dyn Reporter,
    should_stop: Option<fn() -> bool>,
) -> Result<(u64, Outcome)> {
    let opt = task.optimizer(vs);
    let mut tr = Trainer::new(run, vs, opt, task.preset.train.schedule(), task.loop_config())?;
    if let Some(f) = should_stop {
        tr.should_stop = f;
    }
    let start = tr.resume_to_continue(task)?;
    let out = tr.run(task, start, reporter)?;
    Ok((start, out))
}
