//! Training and evaluation: the datasets, the [`TrainTask`] of every VAE here, the test ELBO
//! and the importance-weighted NLL estimate.
//!
//! The loss is the negative ELBO with a weight on the KL term, in nats per image:
//! `recon + beta * KL`, each summed over the pixels (latents) of an image and averaged over the
//! batch. For the MLP and conv VAEs `recon` is -log p(x|z) under the decoder's likelihood, one
//! posterior sample per image (as the PyTorch example, whose printed loss is this sum with
//! beta = 1). For AutoencoderKL `recon` is the L1 (or L2) distance summed over the pixels, with a
//! small `beta` (latent diffusion's first stage uses 1e-6, plus perceptual and GAN terms that are
//! not here).
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
pub use zoo_core::data::DataSpec;
use zoo_core::data::{EpochShuffler, ImageFolder, ImageFolderOptions, Mnist, Split};
use zoo_core::train::{StepOutput, TrainTask};

use crate::distributions::{batch_mean, standard_normal_log_prob, sum_per_item};
use crate::model::{Net, Vae};
use crate::{Error, Result};

/// Images of the procedural shapes set per split.
const SHAPES_TRAIN: i64 = 4096;
const SHAPES_TEST: i64 = 512;

/// One split of a dataset; batches come out as (B, C, H, W) f32 in [-1, 1].
#[derive(Debug)]
pub enum Source {
    Mnist(Mnist),
    Folder {
        folder: ImageFolder,
        indices: Vec<usize>,
    },
    Tensor(Tensor),
    /// Captioned scenes `0..len` of `seed` ([`zoo_core::data::scenes`]), rendered on demand at
    /// `size` pixels a side; with `crop` < `size`, a random `crop`-pixel square of each (a
    /// convolutional autoencoder trains on crops at a fraction of the cost, as Stable
    /// Diffusion's VAE trained on 256-pixel crops for 512-pixel images).
    Scenes {
        seed: u64,
        split: zoo_core::data::scenes::Split,
        len: usize,
        size: i64,
        crop: i64,
    },
}

impl Source {
    pub fn len(&self) -> usize {
        match self {
            Source::Mnist(m) => m.len(),
            Source::Folder { indices, .. } => indices.len(),
            Source::Tensor(t) => t.size().first().copied().unwrap_or(0) as usize,
            Source::Scenes { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` images of this split (fewer if it is smaller), without augmentation.
    pub fn head(&self, n: usize) -> Result<Tensor> {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.batch(&idx, &mut StdRng::seed_from_u64(0))
    }

    /// The images at positions `idx` of this split.
    pub fn batch(&self, idx: &[usize], rng: &mut StdRng) -> Result<Tensor> {
        Ok(match self {
            Source::Mnist(m) => m.batch(idx)?.0,
            Source::Folder { folder, indices } => {
                let picked: Vec<usize> = idx.iter().filter_map(|&i| indices.get(i).copied()).collect();
                folder.batch(&picked, rng)?
            }
            Source::Tensor(t) => {
                let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                t.f_index_select(0, &Tensor::f_from_slice(&i)?)?
            }
            Source::Scenes { seed, split, size, crop, .. } => {
                let (size, crop) = (*size, (*crop).clamp(1, *size));
                let mut images = Vec::with_capacity(idx.len());
                for &i in idx {
                    let x = zoo_core::data::scenes::Scene::generate(*seed, i as u64, *split).render(size);
                    images.push(if crop < size {
                        let (top, left) = (rng.gen_range(0..=size - crop), rng.gen_range(0..=size - crop));
                        x.f_narrow(1, top, crop)?.f_narrow(2, left, crop)?
                    } else {
                        x
                    });
                }
                if images.is_empty() {
                    return Err(Error::Config("an empty batch of scenes".into()));
                }
                Tensor::f_stack(&images, 0)?
            }
        })
    }
}

#[derive(Debug)]
pub struct Dataset {
    pub train: Source,
    pub test: Source,
}

impl Dataset {
    /// Opens `spec` for a model that takes (C, H, W) images.
    pub fn open(spec: &DataSpec, [c, h, w]: [i64; 3], seed: u64) -> Result<Dataset> {
        match spec {
            DataSpec::Mnist(dir) => {
                if c != 1 || !((h, w) == (28, 28) || (h, w) == (32, 32)) {
                    return Err(Error::Config(format!(
                        "MNIST is 1x28x28 (or 1x32x32 padded) but the model takes {c}x{h}x{w}; pick an MNIST preset"
                    )));
                }
                let load = |split| -> Result<Mnist> {
                    let m = Mnist::load(dir, split)?;
                    Ok(if h == 32 { m.pad_to_32()? } else { m })
                };
                Ok(Dataset {
                    train: Source::Mnist(load(Split::Train)?),
                    test: Source::Mnist(load(Split::Test)?),
                })
            }
            DataSpec::Images(dir) => {
                let opts =
                    ImageFolderOptions { size: (h, w), center_crop: true, random_flip: false, channels: c };
                let folder = ImageFolder::open(dir, opts)?;
                let n = folder.len();
                let (train, test): (Vec<usize>, Vec<usize>) = if n < 10 {
                    ((0..n).collect(), (0..n).collect())
                } else {
                    (0..n).partition(|i| i % 10 != 9)
                };
                Ok(Dataset {
                    train: Source::Folder { folder: folder.clone(), indices: train },
                    test: Source::Folder { folder, indices: test },
                })
            }
            DataSpec::Shapes => {
                if h != w {
                    return Err(Error::Config(format!("the shapes set is square; the model takes {h}x{w}")));
                }
                let make = |n, s| -> Result<Tensor> {
                    let (x, _) = zoo_core::data::shapes(n, h, s);
                    Ok(zoo_core::image::to_channels(&x, c)?)
                };
                // Different seeds, so the test images are not training images.
                Ok(Dataset {
                    train: Source::Tensor(make(SHAPES_TRAIN, seed)?),
                    test: Source::Tensor(make(SHAPES_TEST, seed.wrapping_add(1_000_003))?),
                })
            }
            other => {
                Err(Error::Config(format!("--data {other}: a VAE trains on mnist:DIR, images:DIR or shapes")))
            }
        }
    }
}

/// The reconstruction term of AutoencoderKL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Recon {
    #[default]
    L1,
    L2,
}

fn one() -> f64 {
    1.0
}
fn default_iw_samples() -> usize {
    500
}

/// The training recipe of a preset (`"train"` in models/vae/*.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// Adam(W)'s learning rate, constant.
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Weight of the KL term: 1 for a VAE, > 1 for a beta-VAE, ~1e-6 for AutoencoderKL.
    #[serde(default = "one")]
    pub beta: f64,
    /// Length of the run in passes over the training set, unless `steps` is given.
    #[serde(default)]
    pub epochs: Option<f64>,
    #[serde(default)]
    pub steps: Option<u64>,
    #[serde(default)]
    pub clip_grad: Option<f64>,
    /// Test-set evaluation every this many steps (default: once per epoch).
    #[serde(default)]
    pub eval_every: Option<u64>,
    /// AutoencoderKL's reconstruction term.
    #[serde(default)]
    pub recon: Recon,
    /// Samples k of the importance-weighted NLL estimate at the end of training.
    #[serde(default = "default_iw_samples")]
    pub iw_samples: usize,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("train: batch_size must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::Config("train: lr must be > 0 and beta >= 0".into()));
        }
        if let Some(e) = self.epochs {
            if !(e.is_finite() && e > 0.0) {
                return Err(Error::Config(format!("train: epochs must be > 0, got {e}")));
            }
        }
        Ok(())
    }

    /// Optimiser steps for `n_train` training images: `steps`, else ceil(epochs * n / batch).
    pub fn total_steps(&self, n_train: usize) -> Result<u64> {
        match (self.steps, self.epochs) {
            (Some(s), _) if s > 0 => Ok(s),
            (None, Some(e)) => Ok(((e * n_train as f64) / self.batch_size as f64).ceil().max(1.0) as u64),
            _ => Err(Error::Config("train: give steps (> 0) or epochs".into())),
        }
    }
}

/// A preset: `models/vae/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    #[serde(default)]
    pub description: String,
    /// A model config (see [`crate::ModelConfig::from_json`]).
    pub model: serde_json::Value,
    pub train: TrainConfig,
}

impl Preset {
    /// The preset `name` of models/vae/ (or built into zoo).
    pub fn find(name: &str) -> Result<Preset> {
        Self::load(&zoo_core::presets::find_preset("vae", name)?.path)
    }

    pub fn load(path: &Path) -> Result<Preset> {
        let text = zoo_core::presets::read(path)?;
        let p: Preset = serde_json::from_str(&text).map_err(|e| zoo_core::Error::bad_file(path, e))?;
        crate::ModelConfig::from_json(&p.model)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        p.train.validate()?;
        Ok(p)
    }
}

/// -log p(x|z) per image from the decoder's raw output, in the model's range.
/// Shapes: raw (.., B, C, H, W), x (B, C, H, W) -> (.., B).
pub fn recon_term(vae: &Vae, raw: &Tensor, x: &Tensor, recon: Recon) -> Result<Tensor> {
    match vae.likelihood() {
        Some(l) => l.nll(raw, x),
        None => {
            let d = raw.f_sub(x)?;
            let d = match recon {
                Recon::L1 => d.f_abs()?,
                Recon::L2 => d.f_square()?,
            };
            sum_per_item(&d.f_to_kind(Kind::Float)?)
        }
    }
}

/// (recon, kl) per image with one posterior sample; `x` in the model's range.
/// Shapes: (B, C, H, W) -> ((B,), (B,)).
pub fn loss_terms(vae: &Vae, x: &Tensor, recon: Recon) -> Result<(Tensor, Tensor)> {
    let q = vae.encode_model_space(x)?;
    let z = q.sample()?;
    let raw = vae.decode_raw(&z)?;
    Ok((recon_term(vae, &raw, x, recon)?, q.kl()?.f_to_kind(Kind::Float)?))
}

/// Test-set averages per image, in nats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElboStats {
    pub recon: f64,
    pub kl: f64,
    /// recon + kl: the negative ELBO (for beta = 1 the loss the PyTorch example prints).
    pub loss: f64,
    pub images: usize,
}

fn first_n(source: &Source, max_images: Option<usize>) -> usize {
    max_images.map_or(source.len(), |m| m.min(source.len()))
}

/// The negative ELBO over (the first `max_images` of) a split, one posterior sample per
/// image. Draws from libtorch's generator: seed it first for a repeatable number.
pub fn evaluate_elbo(
    vae: &Vae,
    source: &Source,
    batch: usize,
    recon: Recon,
    max_images: Option<usize>,
) -> Result<ElboStats> {
    let n = first_n(source, max_images);
    let batch = batch.max(1);
    let mut rng = StdRng::seed_from_u64(0);
    let (mut r_sum, mut k_sum) = (0.0, 0.0);
    tch::no_grad(|| -> Result<()> {
        for start in (0..n).step_by(batch) {
            let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
            let x = vae.to_model_space(&source.batch(&idx, &mut rng)?)?;
            let (r, k) = loss_terms(vae, &x, recon)?;
            r_sum += r.f_sum(Kind::Double)?.f_double_value(&[])?;
            k_sum += k.f_sum(Kind::Double)?.f_double_value(&[])?;
        }
        Ok(())
    })?;
    let d = n.max(1) as f64;
    Ok(ElboStats { recon: r_sum / d, kl: k_sum / d, loss: (r_sum + k_sum) / d, images: n })
}

/// log p(x) per image estimated with `k` importance samples from q(z|x) (Burda et al. 2016):
/// logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k; `x` in the model's range.
/// Shapes: (B, C, H, W) -> (B,).
pub fn iw_log_likelihood(vae: &Vae, x: &Tensor, k: usize) -> Result<Tensor> {
    if vae.likelihood().is_none() {
        return Err(Error::Config(
            "the importance-weighted NLL needs a decoder likelihood; AutoencoderKL has none".into(),
        ));
    }
    if k == 0 {
        return Err(Error::Config("importance samples k must be at least 1".into()));
    }
    let q = vae.encode_model_space(x)?;
    let per_sample = x.numel().max(1);
    // Chunks of samples of about 8M decoded pixels.
    let chunk = (8_000_000 / per_sample).clamp(1, k);
    let mut logw = Vec::new();
    let mut done = 0;
    while done < k {
        let kc = chunk.min(k - done) as i64;
        let mut shape = vec![kc];
        shape.extend(q.mean.size());
        let eps = Tensor::f_randn(shape.as_slice(), (q.mean.kind(), q.mean.device()))?;
        let z = q.mean.f_unsqueeze(0)?.f_add(&q.std.f_unsqueeze(0)?.f_mul(&eps)?)?; // (kc, B, L..)
        let raw = vae.decode_raw(&z)?; // (kc, B, C, H, W)
        let log_px = recon_term(vae, &raw, x, Recon::L1)?.f_neg()?;
        let log_pz = standard_normal_log_prob(&z, 2)?;
        let log_qz = q.log_prob(&z)?;
        logw.push(log_px.f_add(&log_pz)?.f_sub(&log_qz)?.f_to_kind(Kind::Double)?);
        done += kc as usize;
    }
    let logw = Tensor::f_cat(&logw, 0)?; // (k, B)
    Ok(logw.f_logsumexp([0], false)?.f_sub_scalar((k as f64).ln())?)
}

/// The importance-weighted NLL (nats per image) over the first `max_images` of a split.
/// `on_progress(done, total)` is called after each batch (images scored so far, of all).
pub fn evaluate_iw_nll(
    vae: &Vae,
    source: &Source,
    k: usize,
    batch: usize,
    max_images: Option<usize>,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<f64> {
    let n = first_n(source, max_images);
    let mut rng = StdRng::seed_from_u64(0);
    let mut sum = 0.0;
    tch::no_grad(|| -> Result<()> {
        for start in (0..n).step_by(batch.max(1)) {
            let idx: Vec<usize> = (start..(start + batch.max(1)).min(n)).collect();
            let x = vae.to_model_space(&source.batch(&idx, &mut rng)?)?;
            sum -= iw_log_likelihood(vae, &x, k)?.f_sum(Kind::Double)?.f_double_value(&[])?;
            on_progress(start + idx.len(), n);
        }
        Ok(())
    })?;
    Ok(sum / n.max(1) as f64)
}

/// Saves a grid of prior samples and of reconstructions (inputs in the top half, outputs
/// below). Returns the files written.
pub fn write_pictures(vae: &Vae, test: &Source, dir: &Path, stem: &str, n: usize) -> Result<Vec<PathBuf>> {
    let [_, h, w] = vae.config.image_shape();
    let mut shape = vec![n as i64];
    shape.extend(vae.latent_shape(h, w));
    let mut rng = StdRng::seed_from_u64(0);
    let (samples, rec) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
        let z = Tensor::f_randn(shape.as_slice(), (Kind::Float, vae.device()))?;
        let samples = vae.decode(&z)?;
        let m = (n / 2).min(test.len()).max(1);
        let x = test.batch(&(0..m).collect::<Vec<_>>(), &mut rng)?;
        let r = vae.reconstruct(&x)?;
        Ok((samples, reconstruction_grid(&x, &r)?))
    })?;
    let s_path = dir.join(format!("{stem}-samples.png"));
    let r_path = dir.join(format!("{stem}-reconstructions.png"));
    zoo_core::image::save_image(&samples.f_clamp(-1.0, 1.0)?, &s_path)?;
    zoo_core::image::save_image(&rec, &r_path)?;
    Ok(vec![s_path, r_path])
}

/// Inputs over outputs: a grid with the inputs in the upper rows and their reconstructions in
/// the rows below, each row `cols` wide. Shapes: 2 x (B, C, H, W) -> (C, H', W').
pub fn reconstruction_grid(x: &Tensor, rec: &Tensor) -> Result<Tensor> {
    let b = x.size().first().copied().unwrap_or(1);
    let cols = ((b as f64).sqrt().ceil() as i64 * 2).min(b).max(1);
    let rows_of = |t: &Tensor| -> Result<Tensor> {
        // Pad to a whole number of rows with black images, so inputs and outputs line up.
        let extra = (cols - b % cols) % cols;
        let t = t.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Float)?.f_clamp(-1.0, 1.0)?;
        if extra == 0 {
            return Ok(t);
        }
        let mut shape = t.size();
        shape[0] = extra;
        Ok(Tensor::f_cat(&[t, Tensor::f_full(shape.as_slice(), -1.0, (Kind::Float, tch::Device::Cpu))?], 0)?)
    };
    let both = Tensor::f_cat(&[rows_of(x)?, rows_of(rec)?], 0)?;
    Ok(zoo_core::image::make_grid(
        &both,
        cols,
        zoo_core::image::GRID_PADDING,
        zoo_core::image::GRID_PAD_VALUE,
    )?)
}

/// 1 / std of posterior samples of (up to) `n` training images: the `scaling_factor` that
/// gives latent diffusion unit-variance latents, computed as latent diffusion's authors did
/// (Rombach et al. 2022, appendix G), after training the autoencoder.
pub fn latent_scaling_factor(vae: &Vae, source: &Source, n: usize) -> Result<f64> {
    let n = n.min(source.len()).max(1);
    let mut rng = StdRng::seed_from_u64(0);
    let x = source.batch(&(0..n).collect::<Vec<_>>(), &mut rng)?;
    let std = tch::no_grad(|| -> Result<f64> {
        let z = vae.encode(&x)?.sample()?;
        Ok(z.f_std(true)?.f_double_value(&[])?)
    })?;
    if !(std.is_finite() && std > 0.0) {
        return Err(Error::Config(format!("latent std is {std}; cannot compute a scaling factor")));
    }
    Ok(1.0 / std)
}

/// The training task of every VAE here.
pub struct VaeTask<'a> {
    pub vae: &'a Vae,
    pub data: &'a Dataset,
    pub cfg: TrainConfig,
    shuffler: EpochShuffler,
    /// Cap on test images for the periodic evaluation (None: the whole test split).
    pub eval_images: Option<usize>,
    pub seed: u64,
}

impl<'a> VaeTask<'a> {
    pub fn new(vae: &'a Vae, data: &'a Dataset, cfg: TrainConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        if data.train.is_empty() {
            return Err(Error::Config("the training split is empty".into()));
        }
        let shuffler = EpochShuffler::new(data.train.len(), cfg.batch_size, seed);
        Ok(VaeTask { vae, data, cfg, shuffler, eval_images: None, seed })
    }

    /// Steps per pass over the training set (rounded up).
    pub fn steps_per_epoch(&self) -> u64 {
        (self.data.train.len() as u64).div_ceil(self.cfg.batch_size as u64)
    }

    fn step_loss(&self, step: u64, rng: &mut StdRng) -> Result<StepOutput> {
        let idx = self.shuffler.batch_at(step);
        let x = self.vae.to_model_space(&self.data.train.batch(&idx, rng)?)?;
        let (recon, kl) = loss_terms(self.vae, &x, self.cfg.recon)?;
        let per_image = recon.f_add(&kl.f_mul_scalar(self.cfg.beta)?)?;
        let loss = per_image.f_mean(Kind::Float)?;
        let metrics = vec![("recon".to_string(), batch_mean(&recon)?), ("kl".to_string(), batch_mean(&kl)?)];
        Ok(StepOutput { loss, metrics })
    }

    fn eval_inner(&mut self, step: u64) -> Result<Vec<(String, f64)>> {
        zoo_core::seed::seed_all(zoo_core::seed::step_seed(self.seed, 1, step));
        let s = evaluate_elbo(self.vae, &self.data.test, 500, self.cfg.recon, self.eval_images)?;
        let mut out = vec![
            ("test_loss".to_string(), s.recon + self.cfg.beta * s.kl),
            ("test_recon".to_string(), s.recon),
            ("test_kl".to_string(), s.kl),
        ];
        if matches!(self.vae.net, Net::Mlp(_) | Net::Conv(_)) {
            out.push(("test_elbo".to_string(), -s.loss));
        }
        Ok(out)
    }
}

impl TrainTask for VaeTask<'_> {
    fn loss(&mut self, step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        Ok(self.step_loss(step, rng)?)
    }

    fn eval(&mut self, step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        Ok(self.eval_inner(step)?)
    }

    fn sample(&mut self, step: u64, dir: &Path) -> zoo_core::Result<()> {
        write_pictures(self.vae, &self.data.test, dir, &format!("step-{step:06}"), 64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::ConvConfig;
    use crate::distributions::LikelihoodConfig;
    use crate::mlp::MlpConfig;
    use crate::ModelConfig;
    use tch::Device;

    #[test]
    fn data_specs_parse() {
        assert_eq!("shapes".parse::<DataSpec>().unwrap(), DataSpec::Shapes);
        assert_eq!("mnist:/d".parse::<DataSpec>().unwrap(), DataSpec::Mnist("/d".into()));
        assert_eq!("images:x/y".parse::<DataSpec>().unwrap().to_string(), "images:x/y");
        for bad in ["mnist:", "cifar:/x", "", "shape"] {
            assert!(bad.parse::<DataSpec>().is_err(), "{bad}");
        }
        let e = Dataset::open(&DataSpec::Wav("x".into()), [1, 28, 28], 0).unwrap_err();
        assert!(e.to_string().contains("a VAE trains on mnist:DIR, images:DIR or shapes"), "{e}");
        let e = Dataset::open(&DataSpec::Mnist("/nonexistent".into()), [3, 28, 28], 0).unwrap_err();
        assert!(e.to_string().contains("1x28x28"), "{e}");
        let e = Dataset::open(&DataSpec::Mnist("/nonexistent".into()), [1, 28, 28], 0).unwrap_err();
        assert!(e.to_string().contains("/nonexistent"), "{e}");
    }

    #[test]
    fn steps_from_epochs() {
        let cfg = TrainConfig {
            batch_size: 128,
            lr: 1e-3,
            weight_decay: 0.0,
            beta: 1.0,
            epochs: Some(10.0),
            steps: None,
            clip_grad: None,
            eval_every: None,
            recon: Recon::L1,
            iw_samples: 500,
        };
        assert_eq!(cfg.total_steps(60000).unwrap(), 4688);
        assert_eq!(TrainConfig { steps: Some(7), ..cfg.clone() }.total_steps(60000).unwrap(), 7);
        assert!(TrainConfig { epochs: None, ..cfg.clone() }.total_steps(10).is_err());
        assert!(TrainConfig { batch_size: 0, ..cfg }.validate().is_err());
    }

    /// The importance-weighted bound lies above the ELBO (Jensen), up to sampling noise; and
    /// with a decoder that ignores z (fc4's weight zero) and a posterior equal to the prior,
    /// every importance weight is p(x), so the estimate is exact.
    #[test]
    fn iw_estimate_bounds_the_elbo_and_is_exact_when_z_is_ignored() {
        let vae = Vae::new(&ModelConfig::Mlp(MlpConfig::tiny()), Device::Cpu).unwrap();
        let x = Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu)).round();
        let iw = iw_log_likelihood(&vae, &x, 200).unwrap();
        let neg_elbo = tch::no_grad(|| {
            let draws: Vec<Tensor> = (0..200)
                .map(|_| {
                    let (r, k) = loss_terms(&vae, &x, Recon::L1).unwrap();
                    r + k
                })
                .collect();
            Tensor::stack(&draws, 0).mean_dim(0, false, Kind::Float)
        });
        for b in 0..4 {
            let (nll, bound) = (-iw.double_value(&[b]), neg_elbo.double_value(&[b]));
            assert!(nll <= bound + 0.05, "item {b}: IW NLL {nll} above the negative ELBO {bound}");
        }

        let vars = vae.vs.variables();
        tch::no_grad(|| {
            for k in ["fc4.weight", "fc21.weight", "fc21.bias", "fc22.weight", "fc22.bias"] {
                let _ = vars[k].shallow_clone().zero_();
            }
        });
        let iw = iw_log_likelihood(&vae, &x, 50).unwrap();
        let logits = vars["fc4.bias"].view([1, 1, 8, 8]).expand([4, 1, 8, 8], false);
        let exact = crate::Likelihood::Bernoulli.nll(&logits, &x).unwrap().neg();
        assert!((iw - exact).abs().max().double_value(&[]) < 1e-4);
    }

    #[test]
    fn gaussian_conv_loss_terms_and_shapes_data() {
        let cfg = ConvConfig {
            likelihood: LikelihoodConfig::Gaussian { log_sigma: 0.0, learned: false },
            ..ConvConfig::tiny()
        };
        let vae = Vae::new(&ModelConfig::Conv(cfg), Device::Cpu).unwrap();
        let data = Dataset::open(&DataSpec::Shapes, [3, 8, 8], 0).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (4096, 512));
        let mut rng = StdRng::seed_from_u64(0);
        let x = vae.to_model_space(&data.train.batch(&[0, 1, 2], &mut rng).unwrap()).unwrap();
        let (r, k) = loss_terms(&vae, &x, Recon::L1).unwrap();
        assert_eq!((r.size(), k.size()), (vec![3], vec![3]));
        // Each pixel costs at least the Gaussian's normaliser 0.5 ln(2 pi) with sigma = 1.
        assert!(r.min().double_value(&[]) > 192.0 * 0.918, "{r}");
        assert!(k.min().double_value(&[]) >= 0.0);
    }
}

/// A training run as `zoo vae train` makes it: a preset (or, resuming, the run's own recipe),
/// data, and where the run folder goes.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub data: DataSpec,
    /// A preset of models/vae/; `None` only when resuming (the run's own recipe).
    pub preset: Option<String>,
    /// The run folder: config.json, metrics.jsonl, loss.png, samples/, checkpoints/, model/, eval.json.
    pub out: PathBuf,
    /// Optimiser steps or passes over the training set (default: the preset's; resuming, the run's).
    pub steps: Option<u64>,
    pub epochs: Option<f64>,
    /// Importance samples of the final NLL estimate (0 skips it; default: the preset's).
    pub iw_samples: Option<usize>,
    /// Test images of the final NLL estimate (default: all).
    pub iw_images: Option<usize>,
    /// Test images of each periodic evaluation (default: all).
    pub eval_images: Option<usize>,
    /// Evaluate, draw samples and checkpoint every this many steps (default: the preset's, else an epoch).
    pub eval_every: Option<u64>,
    pub resume: bool,
    pub seed: u64,
    pub device: tch::Device,
}

/// What [`train`] is about to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub preset: String,
    pub train_images: usize,
    pub test_images: usize,
    pub steps: u64,
    pub start: u64,
    pub batch_size: usize,
}

/// What [`train`] did: the trained model and its test scores, or an interrupted run.
pub struct Trained {
    pub steps: u64,
    pub interrupted: bool,
    pub vae: Vae,
    /// The model folder (`out/model`), unless interrupted.
    pub model: Option<PathBuf>,
    pub elbo: Option<ElboStats>,
    /// (importance-weighted NLL, images) when estimated.
    pub iw_nll: Option<(f64, usize)>,
    pub iw_samples: usize,
    pub beta: f64,
    /// `out/eval.json`'s contents.
    pub summary: serde_json::Value,
}

/// Trains a VAE from a preset into a run folder, or resumes one, then writes the model to
/// `out/model/` and its test scores to `out/eval.json`: the recipe of `zoo vae train`.
/// `on_plan` hears what the run will do; `on_iw(done, total)` follows the final NLL estimate.
pub fn train(
    opts: &TrainOptions,
    reporter: &mut dyn zoo_core::train::trainer::Reporter,
    on_plan: &mut dyn FnMut(&Plan),
    on_iw: &mut dyn FnMut(usize, usize),
) -> Result<Trained> {
    use serde_json::json;
    use zoo_core::run::RunDir;
    use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, Trainer};
    // 1. The recipe: the preset's, or the run's own when resuming.
    let (preset_name, mut preset) = match (&opts.preset, opts.resume) {
        (Some(name), _) => (name.clone(), Preset::find(name)?),
        (None, true) => {
            let cfg = RunDir::open(&opts.out)?.config()?;
            let mut p: Preset = serde_json::from_value(cfg["preset_config"].clone()).map_err(|_| {
                Error::Config(format!("{}: config.json has no valid preset_config", opts.out.display()))
            })?;
            // The run's own length, unless steps or epochs change it below.
            p.train.steps = cfg["steps"].as_u64();
            (cfg["preset"].as_str().unwrap_or("").to_string(), p)
        }
        (None, false) => return Err(Error::Config("a new run needs a preset (see models/vae/)".into())),
    };
    if let Some(s) = opts.steps {
        preset.train.steps = Some(s);
    }
    if let Some(e) = opts.epochs {
        preset.train.epochs = Some(e);
        preset.train.steps = None;
    }
    if let Some(k) = opts.iw_samples {
        preset.train.iw_samples = k;
    }
    preset.train.validate()?;
    let model_cfg = crate::ModelConfig::from_json(&preset.model)?;

    // 2. Model (initial weights from the seed) and data.
    zoo_core::seed::seed_all(opts.seed);
    let vae = Vae::new(&model_cfg, opts.device)?;
    let data = Dataset::open(&opts.data, model_cfg.image_shape(), opts.seed)?;
    let mut task = VaeTask::new(&vae, &data, preset.train.clone(), opts.seed)?;
    task.eval_images = opts.eval_images;
    let steps = preset.train.total_steps(data.train.len())?;
    let every = opts.eval_every.or(preset.train.eval_every).unwrap_or_else(|| task.steps_per_epoch()).max(1);
    let loop_cfg = LoopConfig {
        steps,
        grad_accum: 1,
        clip_grad: preset.train.clip_grad,
        log_every: every.min(50),
        eval_every: Some(every),
        sample_every: Some(every),
        checkpoint_every: Some(every),
        keep_checkpoints: 3,
        seed: opts.seed,
    };

    // 3. The run folder; a resumed run must be the same recipe (its length may change).
    let run_cfg = json!({
        "preset": preset_name,
        "data": opts.data.to_string(),
        "seed": opts.seed,
        "steps": steps,
        "preset_config": {"description": preset.description, "model": preset.model,
                          "train": TrainConfig { steps: None, epochs: None, ..preset.train.clone() }},
    });
    let run =
        RunDir::create_or_resume(&opts.out, &run_cfg, opts.resume, &zoo_core::run::LENGTH_AND_REPORTING)?;
    let opt = AdamW::new(
        &vae.vs,
        AdamWConfig { lr: preset.train.lr, weight_decay: preset.train.weight_decay, ..Default::default() },
    );
    let mut trainer =
        Trainer::new(&run, &vae.vs, opt, LrSchedule::Constant { lr: preset.train.lr }, loop_cfg)?;
    let start = trainer.resume(&mut task)?;
    on_plan(&Plan {
        preset: preset_name,
        train_images: data.train.len(),
        test_images: data.test.len(),
        steps,
        start,
        batch_size: preset.train.batch_size,
    });
    let t0 = std::time::Instant::now();
    let outcome = trainer.run(&mut task, start, reporter)?;
    let train_s = t0.elapsed().as_secs_f64();
    drop(trainer);
    drop(task);
    let (k, beta) = (preset.train.iw_samples, preset.train.beta);
    if outcome.interrupted {
        let summary = json!({"steps": outcome.steps, "interrupted": true});
        return Ok(Trained {
            steps: outcome.steps,
            interrupted: true,
            vae,
            model: None,
            elbo: None,
            iw_nll: None,
            iw_samples: k,
            beta,
            summary,
        });
    }

    // 4. The model folder; AutoencoderKL gets the scaling factor of its own latents.
    let mut vae = vae;
    if matches!(vae.config, crate::ModelConfig::Kl(_)) {
        let s = latent_scaling_factor(&vae, &data.train, 256)?;
        if let crate::ModelConfig::Kl(c) = &mut vae.config {
            c.scaling_factor = s;
        }
    }
    let model_dir = vae.save(&opts.out.join("model"))?;

    // 5. Final evaluation on the test split.
    let t1 = std::time::Instant::now();
    zoo_core::seed::seed_all(opts.seed);
    let elbo = evaluate_elbo(&vae, &data.test, 500, preset.train.recon, None)?;
    let iw = if k > 0 && vae.likelihood().is_some() {
        let n = opts.iw_images.unwrap_or(data.test.len());
        let batch =
            (2_000_000 / (k * vae.config.image_shape().iter().product::<i64>() as usize)).clamp(1, 100);
        Some((evaluate_iw_nll(&vae, &data.test, k, batch, Some(n), on_iw)?, n))
    } else {
        None
    };
    let summary = json!({
        "steps": outcome.steps,
        "train_seconds": train_s,
        "test_images": elbo.images,
        "test_recon": elbo.recon,
        "test_kl": elbo.kl,
        "test_loss": elbo.loss,
        "iw_nll": iw.map(|(v, _)| v),
        "iw_samples": iw.map(|_| k),
        "iw_images": iw.map(|(_, n)| n),
        "eval_seconds": t1.elapsed().as_secs_f64(),
        "model": model_dir.display().to_string(),
    });
    let p = opts.out.join("eval.json");
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Config(e.to_string()))?;
    zoo_core::fsutil::atomic_write_bytes(&p, text.as_bytes())?;
    Ok(Trained {
        steps: outcome.steps,
        interrupted: false,
        vae,
        model: Some(model_dir),
        elbo: Some(elbo),
        iw_nll: iw,
        iw_samples: k,
        beta,
        summary,
    })
}
