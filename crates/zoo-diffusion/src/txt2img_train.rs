//! Training a text-to-image model from nothing, on the CPU: latent diffusion (Rombach et al.
//! 2022, "High-Resolution Image Synthesis with Latent Diffusion Models") on zoo-core's captioned
//! scenes ([`zoo_core::data::scenes`]), in two stages, each an exactly resumable run:
//!
//! 1. the KL autoencoder (zoo-vae's [`AutoencoderKL`] with L1 + a small KL term, as latent
//!    diffusion's first stage without its perceptual and GAN terms), then its latent
//!    `scaling_factor` (1 / std of the latents, the LDM paper's appendix G);
//! 2. a CLIP-architecture text encoder ([`CLIPTextModel`]) and the conditional UNet
//!    ([`UNet2DConditionModel`]) together, from scratch, on the frozen autoencoder's latents.
//!    The text encoder is trained jointly, as LDM trained its transformer text encoder on LAION:
//!    the captions are a closed, compositional language, and joint training spends every step
//!    on exactly the features the denoiser needs (a contrastive pre-training would need an image
//!    tower and budget of its own). Captions are dropped to the empty prompt with probability
//!    `caption_dropout`, so the model also learns the unconditional prediction that
//!    classifier-free guidance needs.
//!
//! The tokenizer is a CLIP tokenizer whose BPE merges spell each word of the captions as one
//! token ([`crate::clip::write_word_tokenizer`]); its window (`max_length`) is the text
//! encoder's context length.
//!
//! The result is a diffusers Stable Diffusion folder (`model_index.json`, `unet/`, `vae/`,
//! `text_encoder/`, `tokenizer/`, `scheduler/`), which [`StableDiffusion::load`] (and `zoo
//! txt2img --model`) reads like any other. A run folder holds:
//!
//! ```text
//! <out>/recipe.json   the recipe the run was started with (a resumed run must repeat it)
//! <out>/vae/          stage 1's run (metrics, samples, checkpoints) and vae/model/
//! <out>/ldm/          stage 2's run; ldm/latents.safetensors caches the training latents
//! <out>/model/        the pipeline folder, written when stage 2 ends
//! ```
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use zoo_core::data::scenes::{self, Split, CELLS, COLOURS, SHAPES, SIZES};
use zoo_core::data::EpochShuffler;
use zoo_core::run::RunDir;
use zoo_core::train::trainer::{Outcome, Reporter};
use zoo_core::train::{AdamW, AdamWConfig, Ema, LoopConfig, LrSchedule, StepOutput, TrainTask, Trainer};
use zoo_vae::model::{ModelConfig, Vae};
use zoo_vae::train::{Dataset, Source, VaeTask};
use zoo_vae::{AutoencoderKL, AutoencoderKLConfig};

use crate::clip::{write_word_tokenizer, CLIPTextConfig, CLIPTextModel, ClipTokenizer};
use crate::schedulers::{self, NoiseTable, SchedulerConfig};
use crate::stable_diffusion::{Edit, StableDiffusion, Txt2ImgOptions};
use crate::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::{Error, Result};

/// Scenes of the autoencoder's test split (held-out combinations, another seed).
const VAE_TEST_SCENES: usize = 512;
/// Scene indices from here on are never trained on: evaluation prompts come from there.
pub const EVAL_START: u64 = 1 << 40;

fn d_keep() -> usize {
    2
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_log() -> u64 {
    50
}
fn d_sample_steps() -> usize {
    25
}
fn d_guidance() -> f64 {
    3.0
}

/// Stage 1: the autoencoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeStage {
    /// A diffusers AutoencoderKL `config.json` (its `scaling_factor` is computed after training).
    pub model: AutoencoderKLConfig,
    /// zoo-vae's training settings (`steps`, `batch_size`, `lr`, `beta`, `recon`, `eval_every`).
    pub train: zoo_vae::train::TrainConfig,
    /// Distinct training scenes.
    pub scenes: usize,
    /// Train on random squares of this many pixels (None: whole images).
    #[serde(default)]
    pub crop: Option<i64>,
}

/// Stage 2: the text encoder and the UNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdmTrain {
    pub batch_size: usize,
    /// AdamW's peak learning rate, after `warmup_steps`, then half a cosine down to `min_lr`.
    pub lr: f64,
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    pub steps: u64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub clip_grad: Option<f64>,
    /// The EMA of both models' weights is what is sampled from and shipped.
    pub ema_decay: f64,
    /// Probability of training a caption as the empty prompt (for classifier-free guidance).
    pub caption_dropout: f64,
    /// Distinct training scenes (their latents are computed once and cached in the run).
    pub scenes: usize,
    #[serde(default = "d_log")]
    pub log_every: u64,
    #[serde(default)]
    pub sample_every: Option<u64>,
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    #[serde(default = "d_keep")]
    pub keep_checkpoints: usize,
    /// The sample grids: DDIM steps and guidance scale.
    #[serde(default = "d_sample_steps")]
    pub sample_steps: usize,
    #[serde(default = "d_guidance")]
    pub sample_guidance_scale: f64,
    /// Write the pipeline's UNet and text encoder weights in f16 (half the size; they load into
    /// f32 models as well). The VAE stays f32, as diffusers' `force_upcast` runs it.
    #[serde(default)]
    pub save_f16: bool,
}

/// A text-to-image recipe (`models/txt2img/<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub description: String,
    /// Seed of the scenes, of the initial weights and of the runs' randomness.
    pub seed: u64,
    /// Image side in pixels (the scenes are drawn at 64).
    pub image_size: i64,
    /// Token ids a prompt, bos and eos included: the tokenizer's window and the text encoder's
    /// `max_position_embeddings`.
    pub max_length: usize,
    pub vae: VaeStage,
    /// A CLIPTextConfig without the keys the tokenizer decides (`vocab_size`, the token ids,
    /// `max_position_embeddings`).
    pub text_encoder: Value,
    /// A diffusers UNet2DConditionModel `config.json`.
    pub unet: Value,
    /// A diffusers `scheduler_config.json` (the noise schedule of training and sampling).
    pub scheduler: Value,
    pub train: LdmTrain,
}

/// Every word the scenes' captions use, shapes' plurals included.
pub fn caption_words() -> Vec<String> {
    let mut w: Vec<String> =
        ["a", "an", "and", "two", "in", "the", "to", "of", "left", "right", "above", "below"]
            .iter()
            .chain(&SHAPES)
            .chain(COLOURS.iter().map(|c| &c.0))
            .chain(SIZES.iter().map(|s| &s.0))
            .flat_map(|w| w.split(' '))
            .chain(CELLS.iter().flat_map(|c| c.split(' ')))
            .map(String::from)
            .chain(SHAPES.iter().map(|s| format!("{s}s")))
            .collect();
    w.sort();
    w.dedup();
    w
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe> {
        let text = zoo_core::presets::read(path)?;
        let r: Recipe = serde_json::from_str(&text).map_err(|e| {
            Error::Core(zoo_core::Error::bad_file(path, format!("not a text-to-image recipe: {e}")))
        })?;
        r.validate().map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(r)
    }

    /// The UNet config, checked.
    pub fn unet_config(&self) -> Result<UNet2DConditionConfig> {
        UNet2DConditionConfig::from_value(&self.unet)
    }

    /// The text encoder's config for a tokenizer.
    pub fn text_encoder_config(&self, tok: &ClipTokenizer) -> Result<CLIPTextConfig> {
        let mut v = self.text_encoder.clone();
        let m = v.as_object_mut().ok_or_else(|| Error::Config("text_encoder: not a JSON object".into()))?;
        for (k, x) in [
            ("vocab_size", tok.vocab_size() as i64),
            ("bos_token_id", tok.bos_token_id()),
            ("eos_token_id", tok.eos_token_id()),
            ("pad_token_id", tok.pad_token_id()),
            ("max_position_embeddings", self.max_length as i64),
        ] {
            if m.insert(k.into(), json!(x)).is_some() {
                return Err(Error::Config(format!(
                    "text_encoder: '{k}' comes from the tokenizer; leave it out"
                )));
            }
        }
        CLIPTextConfig::from_value(&v)
    }

    pub fn scheduler_config(&self) -> Result<SchedulerConfig> {
        Ok(SchedulerConfig::from_value(&self.scheduler)?.0)
    }

    /// Checks the parts against each other; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::Config(format!("recipe key '{k}': {why}")));
        self.vae.model.validate()?;
        self.vae.train.validate()?;
        let f = self.vae.model.downsample_factor();
        if self.image_size < 8 || self.image_size % f != 0 {
            return bad("image_size", format!("{} is not a multiple of the VAE factor {f}", self.image_size));
        }
        if !(4..=77).contains(&self.max_length) {
            return bad("max_length", format!("{} is not in 4..=77", self.max_length));
        }
        let unet = self.unet_config()?;
        if unet.in_channels != self.vae.model.latent_channels || unet.out_channels != unet.in_channels {
            return bad(
                "unet",
                format!(
                    "in/out channels must be the VAE's {} latent channels",
                    self.vae.model.latent_channels
                ),
            );
        }
        let side = self.image_size / f;
        if side % (1 << unet.downsamples()) != 0 {
            return bad("unet", format!("{side}x{side} latents do not halve {} times", unet.downsamples()));
        }
        self.scheduler_config()?;
        let t = &self.train;
        if t.batch_size == 0 || t.scenes == 0 || self.vae.scenes == 0 || t.log_every == 0 {
            return bad("train", "batch_size, scenes and log_every must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return bad(
                "train.lr",
                format!("lr {} and min_lr {} must satisfy 0 <= min_lr <= lr, lr > 0", t.lr, t.min_lr),
            );
        }
        if !(0.0..=1.0).contains(&t.ema_decay) {
            return bad("train.ema_decay", format!("{} is not in [0, 1]", t.ema_decay));
        }
        if t.warmup_steps > t.steps {
            return bad(
                "train.warmup_steps",
                format!("{} is more than the {} steps", t.warmup_steps, t.steps),
            );
        }
        if let Some(c) = self.vae.crop {
            if c < f || c > self.image_size || c % f != 0 {
                return bad("vae.crop", format!("{c} is not a multiple of {f} up to image_size"));
            }
        }
        if !(0.0..1.0).contains(&t.caption_dropout) {
            return bad("train.caption_dropout", format!("{} is not in [0, 1)", t.caption_dropout));
        }
        Ok(())
    }
}

/// The folders of a run (see the module docs).
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub root: PathBuf,
}

impl RunPaths {
    pub fn recipe(&self) -> PathBuf {
        self.root.join("recipe.json")
    }
    pub fn vae_run(&self) -> PathBuf {
        self.root.join("vae")
    }
    pub fn vae_model(&self) -> PathBuf {
        self.root.join("vae").join("model")
    }
    pub fn ldm_run(&self) -> PathBuf {
        self.root.join("ldm")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("ldm").join("tokenizer")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model")
    }
}

/// Starts a run in `out`, or (with `resume`) checks that `out` holds a run of this recipe.
pub fn open_run(recipe: &Recipe, out: &Path, resume: bool) -> Result<RunPaths> {
    let paths = RunPaths { root: out.to_path_buf() };
    let want = serde_json::to_value(recipe).map_err(|e| Error::Config(e.to_string()))?;
    let path = paths.recipe();
    match (path.is_file(), resume) {
        (true, false) => Err(Error::Config(format!(
            "{} already holds a run: resume it, or choose another output folder",
            out.display()
        ))),
        (false, true) => {
            Err(Error::Config(format!("{} holds no text-to-image run to resume", out.display())))
        }
        (true, true) => {
            let text = std::fs::read_to_string(&path).map_err(|e| zoo_core::Error::io(&path, e))?;
            let had: Value = serde_json::from_str(&text).map_err(|e| zoo_core::Error::bad_file(&path, e))?;
            if had != want {
                return Err(Error::Config(format!(
                    "{} was started with another recipe; resume it with its own ({})",
                    out.display(),
                    path.display()
                )));
            }
            Ok(paths)
        }
        (false, false) => {
            std::fs::create_dir_all(out).map_err(|e| zoo_core::Error::io(out, e))?;
            let text = serde_json::to_string_pretty(&want).map_err(|e| Error::Config(e.to_string()))?;
            zoo_core::fsutil::atomic_write_bytes(&path, text.as_bytes())?;
            Ok(paths)
        }
    }
}

/// Stage 1: trains the autoencoder in `<out>/vae` (resuming its latest checkpoint) and writes
/// `<out>/vae/model/` with the latent scaling factor. Does nothing when that folder exists.
pub fn train_vae(
    recipe: &Recipe,
    paths: &RunPaths,
    device: Device,
    reporter: &mut dyn Reporter,
    should_stop: Option<fn() -> bool>,
) -> Result<Outcome> {
    let s = &recipe.vae;
    let steps = s.train.total_steps(s.scenes)?;
    if paths.vae_model().join("config.json").is_file() {
        return Ok(Outcome { steps, interrupted: false, last: Value::Null });
    }
    let resume = paths.vae_run().join("config.json").is_file();
    let run =
        RunDir::create(&paths.vae_run(), &json!({"stage": "vae", "recipe": s, "seed": recipe.seed}), resume)?;
    zoo_core::seed::seed_all(recipe.seed);
    let mut cfg = s.model.clone();
    cfg.sample_size = recipe.image_size;
    let vae = Vae::new(&ModelConfig::Kl(cfg.clone()), device)?;
    let size = recipe.image_size;
    let data = Dataset {
        train: Source::Scenes {
            seed: recipe.seed,
            split: Split::Train,
            len: s.scenes,
            size,
            crop: s.crop.unwrap_or(size),
        },
        test: Source::Scenes {
            seed: recipe.seed ^ 0x7e57,
            split: Split::HeldOut,
            len: VAE_TEST_SCENES,
            size,
            crop: size,
        },
    };
    let mut task = VaeTask::new(&vae, &data, s.train.clone(), recipe.seed)?;
    task.eval_images = Some(VAE_TEST_SCENES);
    let every = s.train.eval_every.unwrap_or(steps).max(1);
    let loop_cfg = LoopConfig {
        steps,
        grad_accum: 1,
        clip_grad: s.train.clip_grad,
        log_every: every.min(50),
        eval_every: Some(every),
        sample_every: Some(every),
        checkpoint_every: Some(every),
        keep_checkpoints: 2,
        seed: recipe.seed,
    };
    let opt = AdamW::new(
        &vae.vs,
        AdamWConfig { lr: s.train.lr, weight_decay: s.train.weight_decay, ..Default::default() },
    );
    let mut tr = Trainer::new(&run, &vae.vs, opt, LrSchedule::Constant { lr: s.train.lr }, loop_cfg)?;
    if let Some(f) = should_stop {
        tr.should_stop = f;
    }
    let start = tr.resume(&mut task)?;
    let out = tr.run(&mut task, start, reporter)?;
    if out.interrupted {
        return Ok(out);
    }
    // The scaling factor that gives the diffusion model unit-variance latents.
    let whole = Source::Scenes { seed: recipe.seed, split: Split::Train, len: s.scenes, size, crop: size };
    let sf = zoo_vae::train::latent_scaling_factor(&vae, &whole, 512)?;
    cfg.scaling_factor = sf;
    let shipped = Vae { vs: vae.vs, net: vae.net, config: ModelConfig::Kl(cfg) };
    let tmp = paths.vae_run().join(".model.partial");
    shipped.save(&tmp)?;
    std::fs::rename(&tmp, paths.vae_model()).map_err(|e| zoo_core::Error::io(paths.vae_model(), e))?;
    Ok(out)
}

/// The stage-2 [`TrainTask`]: the text encoder and UNet being trained (in one VarStore, under
/// `text_encoder.` and `unet.`), their EMA, and a pipeline holding the EMA weights for samples.
pub struct LdmTask {
    pub text_encoder: CLIPTextModel,
    pub unet: UNet2DConditionModel,
    /// The EMA weights with the frozen VAE, the tokenizer and the recipe's schedule.
    pub pipe: StableDiffusion,
    ema: Ema,
    table: NoiseTable,
    /// Scaled latents (N, C, h, w) and token ids (N, max_length) of the training scenes.
    latents: Tensor,
    ids: Tensor,
    /// The ids of the empty prompt (1, max_length).
    empty: Tensor,
    shuffler: EpochShuffler,
    recipe: Recipe,
    /// The captions of the sample grid.
    pub sample_prompts: Vec<String>,
}

/// The variables under `prefix`, renamed without it, in `kind`.
fn strip_prefix(vs: &VarStore, prefix: &str, kind: Kind) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(prefix).map(|s| (s.to_string(), t.to_kind(kind))))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Renders and encodes scenes `0..n` of the training split: latents (n, C, h, w) scaled by the
/// VAE's `scaling_factor` (posterior means).
fn encode_scenes(vae: &AutoencoderKL, seed: u64, n: usize, size: i64, device: Device) -> Result<Tensor> {
    let mut latents = Vec::new();
    for start in (0..n).step_by(256) {
        let m = 256.min(n - start);
        let (x, _) = scenes::scenes(seed, start as u64, m, Split::Train, size);
        let z = tch::no_grad(|| -> Result<Tensor> { Ok(vae.encode(&x.f_to_device(device)?)?.mean) })?;
        latents.push(z.f_mul_scalar(vae.cfg.scaling_factor)?);
    }
    Ok(Tensor::f_cat(&latents, 0)?)
}

impl LdmTask {
    /// Builds the models in `vs` (initial weights from libtorch's generator: seed it first),
    /// the EMA pipeline, and the training latents (from `cache` when it holds them, else
    /// computed and written there).
    pub fn new(vs: &VarStore, recipe: &Recipe, paths: &RunPaths, cache: &Path) -> Result<Self> {
        let device = vs.device();
        let tok_dir = paths.tokenizer();
        let words = caption_words();
        let wr: Vec<&str> = words.iter().map(String::as_str).collect();
        write_word_tokenizer(&tok_dir, &wr, recipe.max_length)?;
        let tokenizer = ClipTokenizer::from_dir(&tok_dir)?;
        let te_cfg = recipe.text_encoder_config(&tokenizer)?;
        let unet_cfg = recipe.unet_config()?;
        let text_encoder = CLIPTextModel::new(vs.root() / "text_encoder", &te_cfg)?;
        let unet = UNet2DConditionModel::new(vs.root() / "unet", &unet_cfg)?;
        if unet.cross_attention_dim() != te_cfg.hidden_size {
            return Err(Error::Config(format!(
                "recipe: the UNet's cross_attention_dim must be the text encoder's hidden_size {}",
                te_cfg.hidden_size
            )));
        }
        let ema = Ema::new(vs, recipe.train.ema_decay, true)?;
        let ema_vs = VarStore::new(device);
        let ema_te = CLIPTextModel::new(ema_vs.root() / "text_encoder", &te_cfg)?;
        let ema_unet = UNet2DConditionModel::new(ema_vs.root() / "unet", &unet_cfg)?;
        let (vae, vae_vs) =
            crate::stable_diffusion::load_part(&paths.vae_model(), device, Kind::Float, |vs, v| {
                let cfg: AutoencoderKLConfig = serde_json::from_value(v.clone())
                    .map_err(|e| Error::Config(format!("AutoencoderKL config: {e}")))?;
                Ok(AutoencoderKL::new(vs.root(), &cfg)?)
            })?;
        let scheduler = recipe.scheduler_config()?;
        let table = NoiseTable::new(&scheduler)?;

        // The training latents and captions.
        let n = recipe.train.scenes;
        let latents = match zoo_core::weights::load(cache) {
            Ok(t) => t
                .into_iter()
                .find(|(k, _)| k == "latents")
                .map(|(_, t)| t)
                .filter(|t| t.size().first() == Some(&(n as i64)))
                .ok_or_else(|| Error::Config(format!("{}: not the latents of {n} scenes", cache.display())))?
                .f_to_device(device)?,
            Err(_) => {
                let z = encode_scenes(&vae, recipe.seed, n, recipe.image_size, device)?;
                zoo_core::weights::save(cache, &[("latents".into(), z.f_to_device(Device::Cpu)?)], None)?;
                z
            }
        };
        let captions: Vec<String> =
            (0..n as u64).map(|i| scenes::Scene::generate(recipe.seed, i, Split::Train).caption).collect();
        let ids = tokenizer.encode_batch(&captions)?.input_ids.f_to_device(device)?;
        let empty = tokenizer.encode_batch(&[""])?.input_ids.f_to_device(device)?;
        let shuffler = EpochShuffler::new(n, recipe.train.batch_size, recipe.seed);

        // The sample grid: 8 seen and 8 held-out captions of scenes never trained on.
        let mut sample_prompts = Vec::new();
        for split in [Split::Train, Split::HeldOut] {
            for i in 0..8 {
                sample_prompts.push(scenes::Scene::generate(recipe.seed, EVAL_START + i, split).caption);
            }
        }
        let pipe = StableDiffusion {
            unet: ema_unet,
            unet_vs: ema_vs,
            vae,
            vae_vs,
            text_encoder: ema_te,
            tokenizer,
            scheduler,
            scheduler_class: Some("DDIMScheduler".into()),
            dir: paths.model(),
        };
        Ok(LdmTask {
            text_encoder,
            unet,
            pipe,
            ema,
            table,
            latents,
            ids,
            empty,
            shuffler,
            recipe: recipe.clone(),
            sample_prompts,
        })
    }

    /// The loop settings of the recipe.
    pub fn loop_config(&self) -> LoopConfig {
        let t = &self.recipe.train;
        LoopConfig {
            steps: t.steps,
            grad_accum: 1,
            clip_grad: t.clip_grad,
            log_every: t.log_every,
            eval_every: None,
            sample_every: t.sample_every,
            checkpoint_every: t.checkpoint_every,
            keep_checkpoints: t.keep_checkpoints,
            seed: self.recipe.seed,
        }
    }

    pub fn schedule(&self) -> LrSchedule {
        let t = &self.recipe.train;
        LrSchedule::WarmupCosine {
            lr: t.lr,
            min_lr: t.min_lr,
            warmup_steps: t.warmup_steps,
            decay_steps: t.steps,
        }
    }

    /// Copies the EMA weights into [`LdmTask::pipe`].
    pub fn sync_ema(&self) -> Result<()> {
        Ok(self.ema.copy_to(&self.pipe.unet_vs)?)
    }

    /// One image per prompt with the pipeline's EMA weights, DDIM; (B, 3, H, W) in [0, 1].
    pub fn sample_grid(&self, prompts: &[String], steps: usize, guidance: f64, seed: u64) -> Result<Tensor> {
        self.sync_ema()?;
        let mut images = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let mut sched = schedulers::build("ddim", &self.pipe.scheduler)?;
            let o = Txt2ImgOptions {
                prompt: p.clone(),
                negative_prompt: None,
                steps,
                guidance_scale: guidance,
                seed: seed + i as u64,
                height: None,
                width: None,
                num_samples: 1,
            };
            images.push(self.pipe.generate(sched.as_mut(), &o, &Edit::None, &mut |_, _| {})?.images);
        }
        Ok(Tensor::f_cat(&images, 0)?)
    }

    /// Writes the EMA model as a diffusers Stable Diffusion folder.
    pub fn save_pipeline(&self, dir: &Path, paths: &RunPaths) -> Result<()> {
        self.sync_ema()?;
        let tmp = dir.with_extension("partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| zoo_core::Error::io(&tmp, e))?;
        }
        let write_json = |path: PathBuf, v: &Value| -> Result<()> {
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).map_err(|e| zoo_core::Error::io(p, e))?;
            }
            let text = serde_json::to_string_pretty(v).map_err(|e| Error::Config(e.to_string()))?;
            Ok(zoo_core::fsutil::atomic_write_bytes(&path, text.as_bytes())?)
        };
        let with = |v: Value, extra: Value| -> Value {
            let mut v = v;
            if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                for (k, x) in e {
                    m.insert(k.clone(), x.clone());
                }
                m.retain(|_, x| !x.is_null());
            }
            v
        };
        let kind = if self.recipe.train.save_f16 { Kind::Half } else { Kind::Float };
        // unet/
        let unet_cfg = serde_json::to_value(&self.unet.config).map_err(|e| Error::Config(e.to_string()))?;
        write_json(
            tmp.join("unet/config.json"),
            &with(unet_cfg, json!({"_class_name": "UNet2DConditionModel"})),
        )?;
        zoo_core::weights::save(
            &tmp.join("unet/diffusion_pytorch_model.safetensors"),
            &strip_prefix(&self.pipe.unet_vs, "unet.", kind),
            None,
        )?;
        // text_encoder/
        let te_cfg =
            serde_json::to_value(&self.text_encoder.config).map_err(|e| Error::Config(e.to_string()))?;
        let dtype = if self.recipe.train.save_f16 { "float16" } else { "float32" };
        let te_extra = json!({"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "torch_dtype": dtype});
        write_json(tmp.join("text_encoder/config.json"), &with(te_cfg, te_extra))?;
        zoo_core::weights::save(
            &tmp.join("text_encoder/model.safetensors"),
            &strip_prefix(&self.pipe.unet_vs, "text_encoder.", kind),
            None,
        )?;
        // vae/, tokenizer/: the stage-1 model and the run's tokenizer, as they are
        for (from, to) in [(paths.vae_model(), tmp.join("vae")), (paths.tokenizer(), tmp.join("tokenizer"))] {
            std::fs::create_dir_all(&to).map_err(|e| zoo_core::Error::io(&to, e))?;
            for e in std::fs::read_dir(&from).map_err(|e| zoo_core::Error::io(&from, e))? {
                let p = e.map_err(|e| zoo_core::Error::io(&from, e))?.path();
                if p.is_file() {
                    if let Some(name) = p.file_name() {
                        std::fs::copy(&p, to.join(name)).map_err(|e| zoo_core::Error::io(&p, e))?;
                    }
                }
            }
        }
        // scheduler/ and model_index.json
        let s = serde_json::to_value(&self.pipe.scheduler).map_err(|e| Error::Config(e.to_string()))?;
        write_json(
            tmp.join("scheduler/scheduler_config.json"),
            &with(s, json!({"_class_name": "DDIMScheduler"})),
        )?;
        write_json(
            tmp.join("model_index.json"),
            &json!({
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": "0.30.0",
                "feature_extractor": [null, null],
                "requires_safety_checker": false,
                "safety_checker": [null, null],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"]
            }),
        )?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| zoo_core::Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| zoo_core::Error::io(dir, e))?;
        Ok(())
    }
}

impl TrainTask for LdmTask {
    fn loss(&mut self, step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        let device = self.latents.device();
        // 1. the batch, with captions dropped to the empty prompt at random
        let idx: Vec<i64> = self.shuffler.batch_at(step).into_iter().map(|i| i as i64).collect();
        let b = idx.len() as i64;
        let idx = Tensor::f_from_slice(&idx)?.f_to_device(device)?;
        let z0 = self.latents.f_index_select(0, &idx)?;
        let p = self.recipe.train.caption_dropout;
        let drop: Vec<bool> = (0..b).map(|_| rng.gen::<f64>() < p).collect();
        let drop = Tensor::f_from_slice(&drop)?.f_view([b, 1])?.f_to_device(device)?;
        let ids =
            self.empty.f_expand([b, -1], false)?.f_where_self(&drop, &self.ids.f_index_select(0, &idx)?)?;
        // 2. timesteps and noise (libtorch's generator, seeded for this step)
        let t_train = self.table.alphas_cumprod.len() as i64;
        let t = Tensor::f_randint(t_train, [b], (Kind::Int64, Device::Cpu))?.f_to_device(device)?;
        let noise = Tensor::f_randn(z0.size(), (Kind::Float, Device::Cpu))?.f_to_device(device)?;
        let zt = self.table.add_noise(&z0, &noise, &t)?;
        // 3. the text features and the UNet's noise prediction
        let text = self.text_encoder.forward_t(&ids, true)?.last_hidden_state;
        let pred = self.unet.forward_t(&zt, &t, &text, true)?;
        // The target the recipe scheduler's prediction_type names.
        let target = self.table.target(self.pipe.scheduler.prediction_type, &z0, &noise, &t)?;
        let loss = pred.f_mse_loss(&target, tch::Reduction::Mean)?;
        Ok(StepOutput { loss, metrics: Vec::new() })
    }

    fn after_step(&mut self, _step: u64) -> zoo_core::Result<()> {
        self.ema.update()
    }

    fn sample(&mut self, step: u64, dir: &Path) -> zoo_core::Result<()> {
        let t = &self.recipe.train;
        let images = self.sample_grid(&self.sample_prompts, t.sample_steps, t.sample_guidance_scale, 0)?;
        let images = images.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?.f_to_device(Device::Cpu)?;
        zoo_core::image::save_image(&images, &dir.join(format!("step-{step:06}.png")))?;
        let list = dir.join("prompts.txt");
        if !list.exists() {
            std::fs::write(&list, self.sample_prompts.join("\n") + "\n")
                .map_err(|e| zoo_core::Error::io(&list, e))?;
        }
        Ok(())
    }

    fn extra_state(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        vec![("ema", self.ema.state())]
    }

    fn load_extra_state(&mut self, dir: &Path) -> zoo_core::Result<()> {
        let state = zoo_core::weights::load(&dir.join("ema.safetensors"))?;
        self.ema.load_state(&state)
    }
}

/// Stage 2: trains the text encoder and UNet in `<out>/ldm` (resuming its latest checkpoint)
/// and writes the pipeline folder `<out>/model/` when done.
pub fn train_ldm(
    recipe: &Recipe,
    paths: &RunPaths,
    device: Device,
    reporter: &mut dyn Reporter,
    should_stop: Option<fn() -> bool>,
) -> Result<Outcome> {
    if !paths.vae_model().join("config.json").is_file() {
        return Err(Error::Config(format!(
            "{}: train the autoencoder first (stage 1)",
            paths.vae_model().display()
        )));
    }
    let resume = paths.ldm_run().join("config.json").is_file();
    let run_cfg = json!({"stage": "ldm", "seed": recipe.seed, "text_encoder": recipe.text_encoder,
                         "unet": recipe.unet, "scheduler": recipe.scheduler, "train": recipe.train});
    let run = RunDir::create(&paths.ldm_run(), &run_cfg, resume)?;
    zoo_core::seed::seed_all(recipe.seed);
    let vs = VarStore::new(device);
    let mut task = LdmTask::new(&vs, recipe, paths, &paths.ldm_run().join("latents.safetensors"))?;
    let t = &recipe.train;
    let opt = AdamW::new(&vs, AdamWConfig { lr: t.lr, weight_decay: t.weight_decay, ..Default::default() });
    let mut tr = Trainer::new(&run, &vs, opt, task.schedule(), task.loop_config())?;
    if let Some(f) = should_stop {
        tr.should_stop = f;
    }
    let start = tr.resume(&mut task)?;
    let out = tr.run(&mut task, start, reporter)?;
    if !out.interrupted {
        task.save_pipeline(&paths.model(), paths)?;
    }
    Ok(out)
}
