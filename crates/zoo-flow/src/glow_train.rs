//! Training and evaluating [`Glow`] on 8-bit images (MNIST), model folders, and the
//! bits-per-dimension metric.
//!
//! As openai/glow's `train.py`: the data-dependent ActNorm init on a first batch of
//! `init_batch_size` images, then Adam on the mean bits per dimension of dequantised batches,
//! with a linear warmup (then, here, a cosine decay to `min_lr`). One dequantisation sample per
//! image; the test metric is the mean over the first `eval_images` test images of
//! `(-log p(y) + D n_bits_x ln 2) / (D ln 2)`, an upper bound on the discrete NLL (Theis et al.
//! 2016) in expectation over the noise, drawn from a fixed seed, so successive evaluations see
//! the same y.
//!
//! `data_config.binarize` trains and tests on stochastically binarised images instead (each
//! pixel 1 with probability x / 255, redrawn every step; the test set's binarisation from a fixed
//! seed), with `n_bits_x` = 1: the setting of the VAE literature's "dynamically binarised
//! MNIST", whose NLL the Bernoulli VAEs of zoo-vae bound (see docs/flow.md).
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};
use zoo_core::data::{EpochShuffler, Mnist, Split};
use zoo_core::train::{LrSchedule, StepOutput, TrainTask};

use crate::glow::{Config, Glow};
use crate::train::to_core;
use crate::{Error, Result};

/// Seed of the evaluation's dequantisation noise and test binarisation.
pub const EVAL_SEED: u64 = 1234;
/// libtorch seed of the sample grids, so the grids of successive evaluations are comparable.
pub const SAMPLE_SEED: i64 = 4321;
/// Test images per forward pass in evaluation.
const EVAL_BATCH: i64 = 100;

/// What the training images are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Stochastic binarisation (needs `n_bits_x` = 1).
    #[serde(default)]
    pub binarize: bool,
}

/// The recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: i64,
    /// Images of the batch that initialises ActNorm (openai/glow's `n_batch_init`).
    pub init_batch_size: i64,
    /// Peak learning rate of Adam.
    pub learning_rate: f64,
    /// The cosine decay ends here, at the last step.
    pub min_lr: f64,
    /// Linear warmup from 0 over this many steps.
    pub warmup_steps: u64,
    pub steps: u64,
    /// Clip the global gradient norm to this value (none: no clipping).
    #[serde(default)]
    pub clip_grad: Option<f64>,
}

/// A preset, or the config.json of a model folder. Unknown keys are errors (a typo in a preset
/// would otherwise silently fall back to a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlowFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub glow_config: Config,
    #[serde(default)]
    pub data_config: DataConfig,
    pub train_config: TrainConfig,
}

impl GlowFile {
    /// The test preset: [`Config::tiny`] (8x8 images) and a short recipe.
    pub fn tiny() -> Self {
        GlowFile {
            description: None,
            glow_config: Config::tiny(),
            data_config: DataConfig::default(),
            train_config: TrainConfig {
                batch_size: 16,
                init_batch_size: 32,
                learning_rate: 5e-3,
                min_lr: 5e-4,
                warmup_steps: 5,
                steps: 30,
                clip_grad: Some(50.0),
            },
        }
    }

    /// Whether a parsed JSON file is a Glow file (has `glow_config`), rather than WaveGlow's.
    pub fn is_glow_json(v: &serde_json::Value) -> bool {
        v.get("glow_config").is_some()
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = zoo_core::presets::read(path)?;
        let f: GlowFile = serde_json::from_str(&text)
            .map_err(|e| Error::ConfigFile { path: path.to_path_buf(), msg: e.to_string() })?;
        f.validate().map_err(|e| Error::ConfigFile { path: path.to_path_buf(), msg: e.to_string() })?;
        Ok(f)
    }

    pub fn validate(&self) -> Result<()> {
        self.glow_config.validate()?;
        let t = &self.train_config;
        if t.batch_size < 1 || t.init_batch_size < 1 {
            return Err(Error::Config(format!(
                "train_config: batch_size and init_batch_size must be >= 1, got {} and {}",
                t.batch_size, t.init_batch_size
            )));
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0 && t.min_lr.is_finite() && t.min_lr >= 0.0)
        {
            return Err(Error::Config("train_config: learning_rate must be > 0 and min_lr >= 0".into()));
        }
        if t.clip_grad.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err(Error::Config("train_config: clip_grad must be > 0".into()));
        }
        if self.data_config.binarize && self.glow_config.n_bits_x != 1 {
            return Err(Error::Config(format!(
                "data_config.binarize needs glow_config.n_bits_x = 1, got {}",
                self.glow_config.n_bits_x
            )));
        }
        Ok(())
    }

    /// Warmup to `learning_rate`, cosine to `min_lr` at the last step.
    pub fn schedule(&self) -> LrSchedule {
        let t = &self.train_config;
        LrSchedule::WarmupCosine {
            lr: t.learning_rate,
            min_lr: t.min_lr,
            warmup_steps: t.warmup_steps.min(t.steps),
            decay_steps: t.steps,
        }
    }
}

/// A Glow with its variables and recipe.
pub struct GlowModel {
    pub vs: VarStore,
    pub model: Glow,
    pub file: GlowFile,
}

impl GlowModel {
    /// A freshly initialised model on `device` (f32; ActNorm not yet initialised).
    pub fn new(file: &GlowFile, device: Device) -> Result<Self> {
        file.validate()?;
        let vs = VarStore::new(device);
        let model = Glow::new(vs.root(), &file.glow_config)?;
        Ok(GlowModel { vs, model, file: file.clone() })
    }

    /// Loads a model folder strictly (every tensor by name and shape).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join(crate::waveglow::CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(Error::Config(format!(
                "{} is not a Glow model folder (no config.json); make one with `zoo flow train --preset glow-mnist`",
                dir.display()
            )));
        }
        let file = GlowFile::from_json_file(&cfg_path)?;
        let m = GlowModel::new(&file, device)?;
        zoo_core::weights::load_into(
            &m.vs,
            &dir.join(crate::waveglow::WEIGHTS_FILE),
            &zoo_core::weights::keep_names,
        )?;
        if !m.model.is_initialized()? {
            return Err(Error::Config(format!(
                "{}: the model's ActNorm layers were never initialised",
                dir.display()
            )));
        }
        Ok(m)
    }

    /// Writes config.json and model.safetensors into `dir`; returns the weights' path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg_path = dir.join(crate::waveglow::CONFIG_FILE);
        let text = serde_json::to_string_pretty(&self.file).map_err(|e| Error::Config(e.to_string()))?;
        zoo_core::fsutil::atomic_write(&cfg_path, |w| {
            std::io::Write::write_all(w, text.as_bytes()).map_err(|e| zoo_core::Error::io(&cfg_path, e))
        })?;
        let p = dir.join(crate::waveglow::WEIGHTS_FILE);
        zoo_core::weights::save_varstore(&self.vs, &p)?;
        Ok(p)
    }

    /// Trainable parameters.
    pub fn n_params(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    /// Pixels (B, C, S, S) 0..=255 -> the model's input y: binarised first when the recipe says
    /// so (libtorch's generator), then [`Glow::preprocess`].
    pub fn prepare(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = pixels.f_to_device(self.vs.device())?.f_to_kind(Kind::Float)?;
        let x = if self.file.data_config.binarize { binarize(&x)? } else { x };
        self.model.preprocess(&x)
    }

    /// Mean test bits per dimension over `images` (N, C, S, S) u8. The dequantisation noise
    /// (and the binarisation) come from a `rand` generator seeded with [`EVAL_SEED`], not from
    /// libtorch's global one: the same images always get the same number, whatever else runs.
    pub fn test_bits_per_dim(&self, images: &Tensor) -> Result<f64> {
        let n = images.size().first().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::Data("no test images to evaluate".into()));
        }
        let mut rng = StdRng::seed_from_u64(EVAL_SEED);
        let mut uniform = |shape: &[i64]| -> Result<Tensor> {
            let k: i64 = shape.iter().product();
            let v: Vec<f32> = (0..k).map(|_| rng.gen::<f32>()).collect();
            Ok(Tensor::f_from_slice(&v)?.f_reshape(shape)?)
        };
        let mut total = 0.0;
        tch::no_grad(|| -> Result<()> {
            for start in (0..n).step_by(EVAL_BATCH as usize) {
                let len = EVAL_BATCH.min(n - start);
                let px = images.f_narrow(0, start, len)?.f_to_kind(Kind::Float)?;
                let px = if self.file.data_config.binarize {
                    // 255 where u < x / 255
                    uniform(&px.size())?
                        .f_lt_tensor(&px.f_div_scalar(255.0)?)?
                        .f_to_kind(Kind::Float)?
                        .f_mul_scalar(255.0)?
                } else {
                    px
                };
                let y = self.model.preprocess_with_noise(&px, &uniform(&px.size())?)?;
                total += self.model.bits_per_dim(&y)?.f_sum(Kind::Double)?.f_double_value(&[])?;
            }
            Ok(())
        })?;
        Ok(total / n as f64)
    }

    /// A grid picture of `n` samples at `temperature` (libtorch's generator seeded with
    /// [`SAMPLE_SEED`]), written to `path`.
    pub fn write_samples(&self, n: i64, temperature: f64, path: &Path) -> Result<()> {
        tch::manual_seed(SAMPLE_SEED);
        let y = tch::no_grad(|| self.model.sample(n, temperature, self.vs.device()))?;
        let img = self.model.postprocess(&y)?.f_to_device(Device::Cpu)?;
        zoo_core::image::save_image(&img, path)?;
        Ok(())
    }
}

/// Each value 255 with probability x / 255, else 0. Shapes: any -> same.
pub fn binarize(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_div_scalar(255.0)?.f_clamp(0.0, 1.0)?.f_bernoulli()?.f_mul_scalar(255.0)?)
}

/// MNIST's train and test images, (N, 1, S, S) u8, for a model of side S: 28, or 32 with the
/// digits padded by 2 pixels of background on each side (openai/glow's MNIST layout).
pub fn load_mnist(dir: &Path, cfg: &Config) -> Result<(Tensor, Tensor)> {
    let s = cfg.image_size;
    if cfg.in_channels != 1 || !(s == 28 || s == 32) {
        return Err(Error::Data(format!(
            "MNIST is 1x28x28 (or 1x32x32 padded) but the model takes {}x{s}x{s}; use the glow-mnist preset",
            cfg.in_channels
        )));
    }
    let load = |split| -> Result<Tensor> {
        let m = Mnist::load(dir, split)?;
        let m = if s == 32 { m.pad_to_32()? } else { m };
        Ok(m.images)
    };
    Ok((load(Split::Train)?, load(Split::Test)?))
}

/// The Glow training task for zoo-core's `Trainer`. The loss is the mean bits per dimension of
/// the batch.
pub struct GlowTask<'a> {
    pub glow: &'a GlowModel,
    train: &'a Tensor,
    test: &'a Tensor,
    shuffler: EpochShuffler,
    /// Test images used by each evaluation (the first ones).
    pub eval_images: usize,
    /// Samples per grid, and their temperature.
    pub n_samples: i64,
    pub temperature: f64,
    notes: Vec<String>,
}

impl<'a> GlowTask<'a> {
    /// `train` and `test`: (N, C, S, S) pixels 0..=255 for this model; `seed` orders the epochs.
    pub fn new(glow: &'a GlowModel, train: &'a Tensor, test: &'a Tensor, seed: u64) -> Result<Self> {
        let cfg = &glow.file.glow_config;
        let s = cfg.image_size;
        for (name, t) in [("training", train), ("test", test)] {
            match t.size()[..] {
                [n, c, h, w] if n > 0 && c == cfg.in_channels && h == s && w == s => {}
                ref got => {
                    return Err(Error::Data(format!(
                        "{name} images are {got:?}; the model takes (N, {}, {s}, {s}) with N >= 1",
                        cfg.in_channels
                    )))
                }
            }
        }
        let n = train.size()[0] as usize;
        let shuffler = EpochShuffler::new(n, glow.file.train_config.batch_size as usize, seed);
        Ok(GlowTask {
            glow,
            train,
            test,
            shuffler,
            eval_images: 1000,
            n_samples: 64,
            temperature: 0.7,
            notes: Vec::new(),
        })
    }

    fn images(&self, idx: &[usize]) -> Result<Tensor> {
        let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        Ok(self.train.f_index_select(0, &Tensor::f_from_slice(&i)?)?)
    }

    fn step_loss(&mut self, step: u64, rng: &mut StdRng) -> Result<StepOutput> {
        let model = &self.glow.model;
        if !model.is_initialized()? {
            // openai/glow's data-dependent init: one forward pass over a larger batch
            let n = self.train.size()[0] as usize;
            let idx = zoo_core::data::random_batch_indices(
                n,
                self.glow.file.train_config.init_batch_size as usize,
                rng,
            );
            let y = self.glow.prepare(&self.images(&idx)?)?;
            let _ = tch::no_grad(|| model.forward(&y))?;
            self.notes.push(format!("ActNorm initialised from {} training images", idx.len()));
        }
        let y = self.glow.prepare(&self.images(&self.shuffler.batch_at(step))?)?;
        let loss = model.bits_per_dim(&y)?.f_mean(Kind::Float)?;
        Ok(StepOutput { loss, metrics: vec![] })
    }

    /// The first `eval_images` test images.
    fn test_head(&self) -> Result<Tensor> {
        let n = self.test.size()[0].min(self.eval_images.max(1) as i64);
        Ok(self.test.f_narrow(0, 0, n)?)
    }
}

impl TrainTask for GlowTask<'_> {
    fn loss(&mut self, step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        self.step_loss(step, rng).map_err(to_core)
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let bits = self.test_head().and_then(|t| self.glow.test_bits_per_dim(&t)).map_err(to_core)?;
        let d = self.glow.file.glow_config.n_dims() as f64;
        Ok(vec![
            ("test_bits_per_dim".into(), bits),
            ("test_nll_nats".into(), bits * d * std::f64::consts::LN_2),
        ])
    }

    fn sample(&mut self, step: u64, dir: &Path) -> zoo_core::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| zoo_core::Error::io(dir, e))?;
        let path = dir.join(format!("step-{step:06}.png"));
        self.glow.write_samples(self.n_samples, self.temperature, &path).map_err(to_core)?;
        self.notes.push(format!("samples (temperature {}) in {}", self.temperature, path.display()));
        Ok(())
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/flow");
        let f = GlowFile::from_json_file(&dir.join("glow-mnist.json")).unwrap();
        assert_eq!((f.glow_config.image_size, f.glow_config.in_channels), (28, 1));
        let text = std::fs::read_to_string(dir.join("glow-mnist.json")).unwrap();
        assert!(GlowFile::is_glow_json(&serde_json::from_str(&text).unwrap()));
        let wg = std::fs::read_to_string(dir.join("waveglow-8k-small.json")).unwrap();
        assert!(!GlowFile::is_glow_json(&serde_json::from_str(&wg).unwrap()));
        let mut bad = GlowFile::tiny();
        bad.data_config.binarize = true;
        assert!(bad.validate().unwrap_err().to_string().contains("n_bits_x = 1"));
        bad.glow_config.n_bits_x = 1;
        bad.validate().unwrap();
        bad.train_config.batch_size = 0;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn binarize_gives_0_or_255_with_the_pixel_probability() {
        tch::manual_seed(0);
        let x = Tensor::full([20000], 64.0, (Kind::Float, Device::Cpu));
        let b = binarize(&x).unwrap();
        let ones = b.eq(255.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((ones - 64.0 / 255.0).abs() < 0.02, "{ones}");
        assert_eq!(b.eq(0.0).logical_or(&b.eq(255.0)).all().int64_value(&[]), 1);
    }

    #[test]
    fn model_folders_round_trip_and_bad_folders_are_errors() {
        tch::manual_seed(0);
        let file = GlowFile::tiny();
        let m = GlowModel::new(&file, Device::Cpu).unwrap();
        let px = Tensor::randint(256, [8, 1, 8, 8], (Kind::Uint8, Device::Cpu));
        let dir = tempfile::tempdir().unwrap();
        // an uninitialised model does not load
        m.save(dir.path()).unwrap();
        assert!(GlowModel::load(dir.path(), Device::Cpu)
            .err()
            .unwrap()
            .to_string()
            .contains("never initialised"));
        let bits = m.test_bits_per_dim(&px).unwrap();
        m.save(dir.path()).unwrap();
        let back = GlowModel::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(back.test_bits_per_dim(&px).unwrap(), bits);
        let e = GlowModel::load(&dir.path().join("nope"), Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("not a Glow model folder"), "{e}");
        // a task refuses images of the wrong size
        let wrong = Tensor::zeros([4, 1, 28, 28], (Kind::Uint8, Device::Cpu));
        let e = GlowTask::new(&m, &wrong, &px, 0).err().unwrap().to_string();
        assert!(e.contains("the model takes (N, 1, 8, 8)"), "{e}");
        let e = load_mnist(Path::new("/nonexistent"), &Config::tiny()).unwrap_err().to_string();
        assert!(e.contains("MNIST is 1x28x28"), "{e}");
    }
}

/// A Glow training run as `zoo flow train` makes it for a Glow preset.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The MNIST folder (IDX files).
    pub mnist: PathBuf,
    /// The recipe: a preset's file, or the run's own when resuming.
    pub file: GlowFile,
    /// The preset's name, kept in the run's config ("" when unknown).
    pub preset: String,
    /// The run folder: config.json, metrics.jsonl, loss.png, samples/, checkpoints/, model/, eval.json.
    pub out: PathBuf,
    /// Optimiser steps (default: the file's).
    pub steps: Option<u64>,
    /// Evaluate, draw samples and checkpoint every this many steps (default: steps / 5).
    pub eval_every: Option<u64>,
    /// Test images of each periodic evaluation (the first ones); the final one uses all.
    pub eval_images: usize,
    pub resume: bool,
    pub seed: u64,
    pub device: Device,
}

/// What [`train`] is about to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub params: i64,
    pub train_images: i64,
    pub test_images: i64,
    pub steps: u64,
    pub start: u64,
}

/// What [`train`] did: the model folder and the whole test split's bits per dimension, unless
/// the run was interrupted (then `model` is `None`).
#[derive(Debug, Clone)]
pub struct Trained {
    pub steps: u64,
    pub model: Option<PathBuf>,
    /// `out/eval.json`'s contents (test bits/dim and nats per image, times).
    pub summary: serde_json::Value,
}

/// Trains a Glow on MNIST into a run folder, or resumes one, then writes the model to
/// `out/model/` and the test split's bits per dimension to `out/eval.json`: the recipe of
/// `zoo flow train` with a Glow preset.
pub fn train(
    opts: &TrainOptions,
    reporter: &mut dyn zoo_core::train::trainer::Reporter,
    on_plan: &mut dyn FnMut(&Plan),
) -> Result<Trained> {
    use serde_json::json;
    use zoo_core::run::RunDir;
    use zoo_core::train::{AdamW, AdamWConfig, Trainer};
    if opts.eval_images == 0 {
        return Err(Error::Input("the periodic evaluation needs at least 1 test image".into()));
    }
    let mut file = opts.file.clone();
    if let Some(s) = opts.steps {
        file.train_config.steps = s;
    }
    file.validate()?;
    let steps = file.train_config.steps;
    // 1. Data and model (initial weights from the seed).
    let (train_set, test_set) = load_mnist(&opts.mnist, &file.glow_config)?;
    zoo_core::seed::seed_all(opts.seed);
    let glow = GlowModel::new(&file, opts.device)?;
    let mut task = GlowTask::new(&glow, &train_set, &test_set, opts.seed)?;
    task.eval_images = opts.eval_images;
    let loop_cfg =
        crate::train::loop_config(steps, opts.eval_every, file.train_config.clip_grad, true, opts.seed);
    // 2. The run folder; a resumed run must be the same recipe (its length may change).
    let mut stored = file.clone();
    stored.train_config.steps = 0;
    let data = zoo_core::data::DataSpec::Mnist(opts.mnist.clone()).to_string();
    let run_cfg = json!({"preset": opts.preset, "data": data, "seed": opts.seed, "glow_file": stored});
    let run =
        RunDir::create_or_resume(&opts.out, &run_cfg, opts.resume, &zoo_core::run::LENGTH_AND_REPORTING)?;
    let t = &file.train_config;
    let opt =
        AdamW::new(&glow.vs, AdamWConfig { lr: t.learning_rate, weight_decay: 0.0, ..Default::default() });
    let mut trainer = Trainer::new(&run, &glow.vs, opt, file.schedule(), loop_cfg)?;
    let start = trainer.resume_to_continue(&mut task)?;
    on_plan(&Plan {
        params: glow.n_params(),
        train_images: train_set.size()[0],
        test_images: test_set.size()[0],
        steps,
        start,
    });
    let t0 = std::time::Instant::now();
    let outcome = trainer.run(&mut task, start, reporter)?;
    if outcome.interrupted {
        return Ok(Trained { steps: outcome.steps, model: None, summary: json!({"interrupted": true}) });
    }
    let train_s = t0.elapsed().as_secs_f64();
    drop(trainer);
    drop(task);
    let model_dir = opts.out.join("model");
    glow.save(&model_dir)?;
    // 3. The whole test split.
    let t1 = std::time::Instant::now();
    let bits = glow.test_bits_per_dim(&test_set)?;
    let d = file.glow_config.n_dims() as f64;
    let summary = json!({
        "steps": outcome.steps,
        "train_seconds": train_s,
        "test_images": test_set.size()[0],
        "test_bits_per_dim": bits,
        "test_nll_nats": bits * d * std::f64::consts::LN_2,
        "eval_seconds": t1.elapsed().as_secs_f64(),
        "model": model_dir.display().to_string(),
    });
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Input(e.to_string()))?;
    zoo_core::fsutil::atomic_write_bytes(&opts.out.join("eval.json"), text.as_bytes())?;
    Ok(Trained { steps: outcome.steps, model: Some(model_dir), summary })
}
