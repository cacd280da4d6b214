//! Adversarial training: alternating discriminator and generator steps, each network with its
//! own Adam, fixed-noise sample grids, metrics, checkpoints and exact resume.
//!
//! zoo_core's `Trainer` drives one optimiser; a GAN needs two, so this loop is its own but
//! keeps the core's conventions: a [`RunDir`], step `s` drawing all its randomness from
//! `seed_step(seed, s)` (data order comes from an [`EpochShuffler`] over the run's seed), and
//! checkpoints holding the weights and optimiser moments of both networks (and the BatchNorm
//! buffers and spectral-norm vectors, which are variables of their VarStores). A run resumed
//! at step k therefore computes the very losses the uninterrupted run computed from step k on.
//!
//! Step s (the recipe's order, `examples/dcgan/main.py`):
//! 1. `d_steps` times: a real batch and z; fake = G(z) (with StyleGAN2's style mixing when
//!    `style_mixing_prob` > 0); D loss on D(real) and D(fake.detach()),
//!    plus WGAN-GP's penalty or R1 (every `r1_every` D steps, scaled by it); Adam step on D.
//! 2. G loss on D(fake) with the updated D, for the last fake of step 1; Adam step on G;
//!    EMA update. (The EMA generator takes StyleGAN2's `w_avg` from the live one, not averaged.)
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};
use zoo_core::data::{DataSpec, EpochShuffler, ImageFolder, ImageFolderOptions, Mnist, Split};
use zoo_core::run::{CheckpointState, RunDir};
use zoo_core::train::trainer::Reporter;
use zoo_core::train::{AdamW, AdamWConfig, Ema};
use zoo_core::{seed, weights};

use crate::loss::{gradient_penalty, mode_seeking_loss, r1_penalty, Loss};
use crate::model::{save_model, Discriminator, Generator, ModelConfig, TrainConfig};
use crate::{Error, Result};

/// Takes a network's weights out of autograd until dropped (errors included). The generator's
/// step only uses G's gradients, so with D frozen its convolutions' backward computes the input's
/// gradient alone, not the weights': the recipe's `errG.backward()` computes both and the next
/// `netD.zero_grad()` throws D's away.
struct Frozen(Vec<Tensor>);

impl Frozen {
    fn new(vs: &tch::nn::VarStore) -> Self {
        let vars = vs.trainable_variables();
        for v in &vars {
            let _ = v.set_requires_grad(false);
        }
        Frozen(vars)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = v.set_requires_grad(true);
        }
    }
}

/// Images (and labels) to train on.
pub enum Dataset {
    /// Everything in memory: (N, C, S, S) f32 in [-1, 1] or u8 (MNIST), and (N) labels.
    Tensors { images: Tensor, labels: Tensor, bytes: bool, num_classes: i64 },
    /// A folder of images, decoded on access; no labels.
    Folder(ImageFolder),
}

/// The fixed-noise grid's size.
pub const GRID_SAMPLES: i64 = 64;
/// Images the procedural shapes set is made of.
pub const SHAPES_IMAGES: i64 = 4096;

impl Dataset {
    /// Opens `spec` for a model of `channels` x `size` x `size` images.
    /// MNIST (28x28) is padded to 32x32; shapes are drawn at the model's size.
    pub fn open(spec: &DataSpec, channels: i64, size: i64, seed: u64) -> Result<Dataset> {
        match spec {
            DataSpec::Mnist(dir) => {
                if channels != 1 || size != 32 {
                    return Err(Error::Config(format!(
                        "MNIST is grey and padded to 32x32 here: the model must have nc 1 and image_size 32, not nc {channels} and {size}"
                    )));
                }
                let m = Mnist::load(dir, Split::Train)?.pad_to_32()?;
                Ok(Dataset::Tensors { images: m.images, labels: m.labels, bytes: true, num_classes: 10 })
            }
            DataSpec::Shapes => {
                let (images, labels) = zoo_core::data::shapes(SHAPES_IMAGES, size, seed);
                let images = zoo_core::image::to_channels(&images, channels)?;
                Ok(Dataset::Tensors { images, labels, bytes: false, num_classes: 3 })
            }
            DataSpec::Images(dir) => {
                let opts =
                    ImageFolderOptions { size: (size, size), center_crop: true, random_flip: true, channels };
                Ok(Dataset::Folder(ImageFolder::open(dir, opts)?))
            }
            other => {
                Err(Error::Config(format!("--data {other}: a GAN trains on mnist:DIR, images:DIR or shapes")))
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::Tensors { labels, .. } => labels.size()[0] as usize,
            Dataset::Folder(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Classes of the labels (0 for an unlabelled folder).
    pub fn num_classes(&self) -> i64 {
        match self {
            Dataset::Tensors { num_classes, .. } => *num_classes,
            Dataset::Folder(_) => 0,
        }
    }

    /// Images (B, C, S, S) f32 in [-1, 1] and labels (B) i64 (for a labelled set) at `indices`.
    pub fn batch(&self, indices: &[usize], rng: &mut StdRng) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            Dataset::Tensors { images, labels, bytes, .. } => {
                let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let idx = Tensor::f_from_slice(&idx)?;
                let x = images.f_index_select(0, &idx)?;
                let x = if *bytes {
                    x.f_to_kind(Kind::Float)?.f_div_scalar(127.5)?.f_sub_scalar(1.0)?
                } else {
                    x
                };
                Ok((x, Some(labels.f_index_select(0, &idx)?)))
            }
            Dataset::Folder(f) => Ok((f.batch(indices, rng)?, None)),
        }
    }
}

/// Checks that `model` can train on `data` with `cfg` (before a run folder is made).
pub fn check_setup(model: &ModelConfig, data: &Dataset, cfg: &TrainConfig) -> Result<()> {
    cfg.validate(model)?;
    let nc = model.num_classes();
    if nc > 0 && data.num_classes() != nc {
        return Err(Error::Config(format!(
            "the model is conditional on {nc} classes but the data has {}",
            if data.num_classes() == 0 {
                "no labels".to_string()
            } else {
                format!("{} classes", data.num_classes())
            }
        )));
    }
    if data.len() < cfg.batch_size {
        return Err(Error::Config(format!(
            "{} training images, fewer than one batch of {}",
            data.len(),
            cfg.batch_size
        )));
    }
    Ok(())
}

/// One adversarial training run.
pub struct GanTrainer<'a> {
    pub run: &'a RunDir,
    pub g: &'a Generator,
    pub d: &'a Discriminator,
    pub data: &'a Dataset,
    pub cfg: TrainConfig,
    pub seed: u64,
    pub opt_g: AdamW,
    pub opt_d: AdamW,
    /// The EMA of G's weights, and a generator to sample from it.
    ema: Option<(Ema, Generator)>,
    shuffler: EpochShuffler,
    fixed: (Tensor, Option<Tensor>),
    /// Checked between steps; `zoo_core::train::interrupt_requested` by default.
    pub should_stop: fn() -> bool,
    /// Checkpoints to keep, newest first (0 keeps all).
    pub keep_checkpoints: usize,
    /// The metrics summed (and counted) since the last record, as the checkpoint resumed from
    /// left them (its step first), so the first record after a resume averages the same steps
    /// as an uninterrupted run's.
    window: (u64, Vec<(String, f64, u32)>),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub steps: u64,
    pub interrupted: bool,
    /// The last logged record.
    pub last: Value,
}

impl<'a> GanTrainer<'a> {
    pub fn new(
        run: &'a RunDir,
        g: &'a Generator,
        d: &'a Discriminator,
        data: &'a Dataset,
        cfg: TrainConfig,
        seed: u64,
    ) -> Result<Self> {
        check_setup(&g.cfg, data, &cfg)?;
        let nc = g.cfg.num_classes();
        let adam = |lr| AdamWConfig { lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: 0.0 };
        let opt_g = AdamW::new(&g.vs, adam(cfg.lr_g));
        let opt_d = AdamW::new(&d.vs, adam(cfg.lr_d));
        let ema = match cfg.ema_decay {
            Some(decay) => {
                Some((Ema::new(&g.vs, decay, cfg.ema_warmup)?, Generator::new(&g.cfg, g.vs.device())?))
            }
            None => None,
        };
        // The fixed noise comes from a stream of its own, the same on every resume.
        seed::seed_all(seed::step_seed(seed, 1, 0));
        let z = Tensor::f_randn(g.latent_shape(GRID_SAMPLES), (Kind::Float, Device::Cpu))?;
        let y = if nc > 0 {
            Some(Tensor::f_arange(GRID_SAMPLES, (Kind::Int64, Device::Cpu))?.f_remainder(nc)?)
        } else {
            None
        };
        let shuffler = EpochShuffler::new(data.len(), cfg.batch_size, seed);
        Ok(GanTrainer {
            run,
            g,
            d,
            data,
            cfg,
            seed,
            opt_g,
            opt_d,
            ema,
            shuffler,
            fixed: (z, y),
            should_stop: zoo_core::train::interrupt_requested,
            keep_checkpoints: 3,
            window: (0, Vec::new()),
        })
    }

    /// Loads the run's latest checkpoint, if any; drops metrics logged after it. Returns the
    /// step to start from (0 without a checkpoint).
    pub fn resume(&mut self) -> Result<u64> {
        let Some((dir, state)) = self.run.latest_checkpoint()? else {
            return Ok(0);
        };
        if state.seed != self.seed {
            return Err(Error::Config(format!(
                "--resume: the run was started with seed {}, not {}; resume with the same seed",
                state.seed, self.seed
            )));
        }
        weights::load_into(&self.g.vs, &dir.join("generator.safetensors"), &weights::keep_names)?;
        weights::load_into(&self.d.vs, &dir.join("discriminator.safetensors"), &weights::keep_names)?;
        self.opt_g.load_state(&weights::load(&dir.join("optimizer_g.safetensors"))?)?;
        self.opt_d.load_state(&weights::load(&dir.join("optimizer_d.safetensors"))?)?;
        if let Some((ema, _)) = &mut self.ema {
            ema.load_state(&weights::load(&dir.join("ema.safetensors"))?)?;
        }
        self.run.truncate_metrics_after(state.step)?;
        // (Checkpoints of earlier versions hold no window: the first record averages less.)
        let window = state.extra["metric_window"].as_array().map(|rows| {
            rows.iter()
                .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_f64()?, r[2].as_u64()? as u32)))
                .collect()
        });
        self.window = (state.step, window.unwrap_or_default());
        zoo_core::train::steps_left(state.step, self.cfg.steps)?;
        Ok(state.step)
    }

    fn checkpoint(&self, step: u64, window: &[(String, f64, u32)]) -> Result<PathBuf> {
        let vars = |vs: &tch::nn::VarStore| {
            let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut parts = vec![
            ("generator", vars(&self.g.vs)),
            ("discriminator", vars(&self.d.vs)),
            ("optimizer_g", self.opt_g.state()),
            ("optimizer_d", self.opt_d.state()),
        ];
        if let Some((ema, _)) = &self.ema {
            parts.push(("ema", ema.state()));
        }
        let window: Vec<Value> = window.iter().map(|(k, s, n)| json!([k, s, n])).collect();
        let state = CheckpointState { step, seed: self.seed, extra: json!({ "metric_window": window }) };
        let dir = self.run.save_checkpoint(&state, &parts)?;
        self.run.prune_checkpoints(self.keep_checkpoints)?;
        self.run.plot_losses()?;
        Ok(dir)
    }

    /// The generator to sample from: the EMA's when there is one (its weights refreshed).
    pub fn sampling_generator(&self) -> Result<&Generator> {
        match &self.ema {
            Some((ema, g)) => {
                ema.copy_to(&g.vs)?;
                g.copy_buffers_from(self.g)?;
                Ok(g)
            }
            None => Ok(self.g),
        }
    }

    /// Writes the fixed-noise grid after `step` steps to samples/step-NNNNNN.png.
    pub fn write_samples(&self, step: u64) -> Result<PathBuf> {
        let g = self.sampling_generator()?;
        let x = g.generate(&self.fixed.0, self.fixed.1.as_ref())?;
        let p = self.run.samples_dir().join(format!("step-{step:06}.png"));
        zoo_core::image::save_image(&x, &p)?;
        Ok(p)
    }

    /// Writes the model folder (config.json, the sampling generator, the discriminator).
    pub fn save_model(&self, dir: &Path) -> Result<PathBuf> {
        save_model(dir, self.sampling_generator()?, Some(self.d))
    }

    /// Random class labels for fakes of a conditional model. With the mode-seeking term the
    /// second half of the batch repeats the first half's labels. Shapes: -> (B) i64.
    fn fake_labels(&self, b: i64, device: Device) -> Result<Option<Tensor>> {
        let nc = self.g.cfg.num_classes();
        if nc == 0 {
            return Ok(None);
        }
        Ok(Some(if self.cfg.mode_seeking > 0.0 {
            let half = Tensor::f_randint(nc, [b / 2], (Kind::Int64, device))?;
            Tensor::f_cat(&[&half, &half], 0)?
        } else {
            Tensor::f_randint(nc, [b], (Kind::Int64, device))?
        }))
    }

    /// One generator step (with its `d_steps` discriminator steps); returns the step's numbers.
    pub fn step(&mut self, step: u64) -> Result<Vec<(&'static str, f64)>> {
        let device = self.g.vs.device();
        let loss = self.cfg.loss;
        let mut rng = seed::seed_step(self.seed, step);
        let mut m: Vec<(&'static str, f64)> = Vec::new();
        let mut fake = Tensor::new();
        let mut z = Tensor::new();
        let mut yf = None;
        // 1. Discriminator.
        for k in 0..self.cfg.d_steps {
            let d_index = step * self.cfg.d_steps as u64 + k as u64;
            let (real, y) = self.data.batch(&self.shuffler.batch_at(d_index), &mut rng)?;
            let real = real.f_to_device(device)?;
            let y = match y {
                Some(y) if self.g.cfg.num_classes() > 0 => Some(y.f_to_device(device)?),
                _ => None,
            };
            let b = real.size()[0];
            z = Tensor::f_randn(self.g.latent_shape(b), (Kind::Float, device))?;
            yf = self.fake_labels(b, device)?;
            fake = self.g.forward_train(&z, yf.as_ref(), self.cfg.style_mixing_prob)?;
            let r1 = self.cfg.r1_gamma > 0.0 && d_index % self.cfg.r1_every == 0;
            let real = if r1 { real.f_detach()?.f_set_requires_grad(true)? } else { real };
            self.opt_d.zero_grad();
            let out_real = self.d.forward_t(&real, y.as_ref(), true)?;
            let out_fake = self.d.forward_t(&fake.f_detach()?, yf.as_ref(), true)?;
            let mut loss_d = loss.d_loss(&out_real, &out_fake)?;
            if loss == Loss::WganGp {
                // Interpolates between reals and fakes of different classes carry the real labels.
                let d = |x: &Tensor| self.d.forward_t(x, y.as_ref(), true);
                let gp = gradient_penalty(&d, &real.f_detach()?, &fake)?;
                m.push(("gp", gp.f_double_value(&[])?));
                loss_d = loss_d.f_add(&gp.f_mul_scalar(self.cfg.gp_weight)?)?;
            }
            if r1 {
                let pen = r1_penalty(&out_real, &real)?;
                m.push(("r1", pen.f_double_value(&[])?));
                let w = self.cfg.r1_gamma / 2.0 * self.cfg.r1_every as f64;
                loss_d = loss_d.f_add(&pen.f_mul_scalar(w)?)?;
            }
            let ld = loss_d.f_double_value(&[])?;
            if !ld.is_finite() {
                return Err(Error::Config(format!(
                    "the discriminator's loss is {ld} at step {step}: lower the learning rates or check the data"
                )));
            }
            loss_d.backward();
            self.opt_d.step(self.cfg.lr_d)?;
            m.push(("loss_d", ld));
            m.push(("d_x", loss.report(&out_real)?));
            m.push(("d_g_z1", loss.report(&out_fake)?));
        }
        // 2. Generator, against the updated discriminator.
        self.opt_g.zero_grad();
        let _frozen = Frozen::new(&self.d.vs);
        let out = self.d.forward_t(&fake, yf.as_ref(), true)?;
        let mut loss_g = loss.g_loss(&out)?;
        if self.cfg.mode_seeking > 0.0 {
            let ms = mode_seeking_loss(&fake, &z)?;
            m.push(("mode_seeking", ms.f_double_value(&[])?));
            loss_g = loss_g.f_add(&ms.f_mul_scalar(self.cfg.mode_seeking)?)?;
        }
        let lg = loss_g.f_double_value(&[])?;
        if !lg.is_finite() {
            return Err(Error::Config(format!(
                "the generator's loss is {lg} at step {step}: lower the learning rates or check the data"
            )));
        }
        loss_g.backward();
        self.opt_g.step(self.cfg.lr_g)?;
        if let Some((ema, _)) = &mut self.ema {
            ema.update()?;
        }
        m.push(("loss_g", lg));
        m.push(("d_g_z2", loss.report(&out)?));
        Ok(m)
    }

    /// Runs from `start` (see [`GanTrainer::resume`]) to `cfg.steps`.
    pub fn run(&mut self, start: u64, reporter: &mut dyn Reporter) -> Result<Outcome> {
        let total = self.cfg.steps;
        if start == 0 {
            let mut rng = seed::seed_step(self.seed, u64::MAX);
            let (real, _) =
                self.data.batch(&self.shuffler.batch_at(0)[..self.cfg.batch_size.min(64)], &mut rng)?;
            zoo_core::image::save_image(&real, &self.run.samples_dir().join("real.png"))?;
        }
        reporter.start(start, total);
        let t0 = Instant::now();
        let mut last = Value::Null;
        let mut sums: Vec<(String, f64, u32)> =
            if self.window.0 == start && start > 0 { self.window.1.clone() } else { Vec::new() };
        for step in start..total {
            if (self.should_stop)() {
                let dir = self.checkpoint(step, &sums)?;
                reporter.event(&json!({"note": format!("interrupted at step {step}; checkpoint saved in {}", dir.display())}));
                reporter.finish();
                return Ok(Outcome { steps: step, interrupted: true, last });
            }
            let m = self.step(step)?;
            for (k, v) in &m {
                match sums.iter_mut().find(|(n, _, _)| n == k) {
                    Some(e) => {
                        e.1 += v;
                        e.2 += 1;
                    }
                    None => sums.push((k.to_string(), *v, 1)),
                }
            }
            let done = step + 1;
            let mut rec = Map::new();
            rec.insert("step".into(), json!(done));
            if done % self.cfg.log_every == 0 || done == total {
                // Means over the steps since the last record.
                for (k, s, n) in sums.drain(..) {
                    rec.insert(k, json!(s / n as f64));
                }
                rec.insert("elapsed_s".into(), json!(t0.elapsed().as_secs_f64()));
                last = Value::Object(rec.clone());
                self.run.log(&last)?;
                reporter.logged(&last);
            } else {
                for (k, v) in &m {
                    rec.insert((*k).into(), json!(v));
                }
            }
            reporter.step(&Value::Object(rec));
            if done % self.cfg.sample_every == 0 || done == total {
                self.write_samples(done)?;
            }
            if done % self.cfg.checkpoint_every == 0 || done == total {
                self.checkpoint(done, &sums)?;
            }
        }
        reporter.finish();
        Ok(Outcome { steps: total.max(start), interrupted: false, last })
    }
}

/// The model config with nothing but what the run needs, for a run's config.json.
pub fn run_config(
    preset_name: &str,
    data: &DataSpec,
    seed: u64,
    model: &ModelConfig,
    train: &TrainConfig,
) -> Value {
    json!({
        "preset": preset_name,
        "data": data.to_string(),
        "seed": seed,
        "model": model,
        "train": TrainConfig { steps: 0, ..train.clone() },
    })
}

/// A training run as `zoo gan train` makes it: a preset (or, resuming, the run's own recipe),
/// data, and where the run folder goes.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub data: DataSpec,
    /// A preset of models/gan/; `None` only when resuming (the run's own recipe).
    pub preset: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, samples/, checkpoints/, model/.
    pub out: PathBuf,
    /// Generator steps in total (default: the preset's; resuming, the run's).
    pub steps: Option<u64>,
    pub batch_size: Option<usize>,
    /// Sample grid and checkpoint every this many steps (default: the preset's).
    pub eval_every: Option<u64>,
    /// Continue the run in `out` from its latest checkpoint (same data, seed and recipe).
    pub resume: bool,
    pub seed: u64,
    pub device: Device,
}

/// What [`train`] did.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The preset's name ("" for a resumed run that never named one).
    pub preset: String,
    pub model_config: ModelConfig,
    pub start: u64,
    pub outcome: Outcome,
    /// The trained model folder (`out/model`), unless the run was interrupted.
    pub model: Option<PathBuf>,
    pub samples: PathBuf,
    pub seconds: f64,
}

/// What [`train`] is about to do (for a caller's one-line announcement).
#[derive(Debug, Clone)]
pub struct Plan {
    pub preset: String,
    pub arch: &'static str,
    pub images: usize,
    pub steps: u64,
    pub start: u64,
    pub batch_size: usize,
    pub generator_params: i64,
    pub discriminator_params: i64,
}

/// Trains a GAN from a preset into a run folder, or resumes one, and writes the trained model
/// to `out/model/`: the recipe of `zoo gan train`, for library users. `on_plan` hears what the
/// run will do before its first step.
pub fn train(
    opts: &TrainOptions,
    reporter: &mut dyn Reporter,
    on_plan: &mut dyn FnMut(&Plan),
) -> Result<Trained> {
    // 1. The recipe: the preset's, or the run's own when resuming.
    let old = if opts.resume { Some(RunDir::open(&opts.out)?.config()?) } else { None };
    let (preset_name, model_cfg, mut train_cfg) = match (&opts.preset, &old) {
        (Some(name), _) => {
            let p = crate::model::Preset::find(name)?;
            (name.clone(), p.model, p.train)
        }
        (None, Some(cfg)) => {
            let bad = |what: &str| {
                Error::Config(format!("{}: config.json has no valid {what}", opts.out.display()))
            };
            let model: ModelConfig =
                serde_json::from_value(cfg["model"].clone()).map_err(|_| bad("model"))?;
            let train: TrainConfig =
                serde_json::from_value(cfg["train"].clone()).map_err(|_| bad("train settings"))?;
            (cfg["preset"].as_str().unwrap_or("").to_string(), model, train)
        }
        (None, None) => return Err(Error::Config("a new run needs a preset (see models/gan/)".into())),
    };
    // The run's length is not part of its identity: a resumed run may go further.
    let steps =
        opts.steps.or_else(|| old.as_ref().and_then(|o| o["steps"].as_u64())).unwrap_or(train_cfg.steps);
    train_cfg.steps = steps;
    if let Some(b) = opts.batch_size {
        train_cfg.batch_size = b;
    }
    if let Some(s) = opts.eval_every {
        train_cfg.sample_every = s;
        train_cfg.checkpoint_every = s;
    }
    train_cfg.validate(&model_cfg)?;

    // 2. Networks (initial weights from the seed) and data.
    seed::seed_all(opts.seed);
    let gen = Generator::new(&model_cfg, opts.device)?;
    let disc = Discriminator::new(&model_cfg, opts.device)?;
    let (nc, size) = model_cfg.image_shape();
    let data = Dataset::open(&opts.data, nc, size, opts.seed)?;
    check_setup(&model_cfg, &data, &train_cfg)?;

    // 3. The run folder; a resumed run must be the same recipe.
    let mut run_cfg = run_config(&preset_name, &opts.data, opts.seed, &model_cfg, &train_cfg);
    run_cfg["steps"] = json!(steps);
    let run =
        RunDir::create_or_resume(&opts.out, &run_cfg, opts.resume, &zoo_core::run::LENGTH_AND_REPORTING)?;
    let mut trainer = GanTrainer::new(&run, &gen, &disc, &data, train_cfg.clone(), opts.seed)?;
    let start = trainer.resume()?;
    on_plan(&Plan {
        preset: preset_name.clone(),
        arch: model_cfg.arch(),
        images: data.len(),
        steps,
        start,
        batch_size: train_cfg.batch_size,
        generator_params: crate::dcgan::num_params(&gen.vs),
        discriminator_params: crate::dcgan::num_params(&disc.vs),
    });
    let t0 = Instant::now();
    let outcome = trainer.run(start, reporter)?;
    let model = if outcome.interrupted { None } else { Some(trainer.save_model(&opts.out.join("model"))?) };
    Ok(Trained {
        preset: preset_name,
        model_config: model_cfg,
        start,
        outcome,
        model,
        samples: run.samples_dir(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
