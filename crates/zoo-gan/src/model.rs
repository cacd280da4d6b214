//! One type over the architectures, presets, and the model folder format of `zoo gan`.
//!
//! A model folder is `config.json` (a [`ModelConfig`]: `{"arch": "dcgan", "nz": 100, ...}` or
//! `{"arch": "stylegan2", "z_dim": 128, ...}`), `generator.safetensors` and, when training wrote
//! it, `discriminator.safetensors`. The generator file of a DCGAN is the recipe's netG state
//! dict, key for key; a StyleGAN2's has stylegan2-ada-pytorch's names.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use zoo_core::weights;

use crate::dcgan::{self, DcganConfig};
use crate::loss::Loss;
use crate::stylegan2;
use crate::{Error, Result};

/// The architecture and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch")]
pub enum ModelConfig {
    #[serde(rename = "dcgan")]
    Dcgan(DcganConfig),
    #[serde(rename = "stylegan2")]
    StyleGan2(stylegan2::Config),
}

/// What `--truncation` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationSpace {
    /// Latent values outside [-T, T] are redrawn (BigGAN's trick; DCGAN).
    Z,
    /// w is pulled towards the mean w: w_avg + psi (w - w_avg) (StyleGAN's trick).
    W,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Dcgan(c) => c.validate(),
            ModelConfig::StyleGan2(c) => c.validate(),
        }
    }

    /// (channels, size) of the images.
    pub fn image_shape(&self) -> (i64, i64) {
        match self {
            ModelConfig::Dcgan(c) => (c.nc, c.image_size),
            ModelConfig::StyleGan2(c) => (c.img_channels, c.img_resolution),
        }
    }

    /// Classes of a conditional model, 0 for an unconditional one.
    pub fn num_classes(&self) -> i64 {
        match self {
            ModelConfig::Dcgan(c) => c.num_classes,
            ModelConfig::StyleGan2(_) => 0,
        }
    }

    pub fn arch(&self) -> &'static str {
        match self {
            ModelConfig::Dcgan(_) => "dcgan",
            ModelConfig::StyleGan2(_) => "stylegan2",
        }
    }

    pub fn truncation_space(&self) -> TruncationSpace {
        match self {
            ModelConfig::Dcgan(_) => TruncationSpace::Z,
            ModelConfig::StyleGan2(_) => TruncationSpace::W,
        }
    }

    /// Reads a model folder's `config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_file(&dir.join("config.json"))
    }

    /// Reads a config file.
    pub fn load_file(p: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(p).map_err(|e| zoo_core::Error::io(p, e))?;
        let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| zoo_core::Error::bad_file(p, e))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

enum GenNet {
    Dcgan(dcgan::Generator),
    StyleGan2(stylegan2::Generator),
}

enum DiscNet {
    Dcgan(dcgan::Discriminator),
    StyleGan2(stylegan2::Discriminator),
}

/// StyleGAN2 is unconditional.
fn no_labels(labels: Option<&Tensor>) -> Result<()> {
    match labels {
        Some(_) => Err(Error::Input("this model is unconditional: it takes no class labels".into())),
        None => Ok(()),
    }
}

/// A generator with its own VarStore.
pub struct Generator {
    pub cfg: ModelConfig,
    pub vs: VarStore,
    net: GenNet,
}

impl Generator {
    /// A freshly initialised generator (weights from libtorch's generator).
    pub fn new(cfg: &ModelConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let vs = VarStore::new(device);
        let net = match cfg {
            ModelConfig::Dcgan(c) => GenNet::Dcgan(dcgan::Generator::new(&vs.root(), c)?),
            ModelConfig::StyleGan2(c) => GenNet::StyleGan2(stylegan2::Generator::new(&vs.root(), c)?),
        };
        Ok(Generator { cfg: cfg.clone(), vs, net })
    }

    /// A model folder's generator (config.json + generator.safetensors), strictly loaded, in
    /// `kind` on `device`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let cfg = ModelConfig::load(dir)?;
        Self::load_weights(&cfg, &dir.join("generator.safetensors"), device, kind)
    }

    /// A generator of `cfg` with the weights of one safetensors file (e.g. the recipe's netG
    /// after tools/convert_to_safetensors.py).
    pub fn load_weights(cfg: &ModelConfig, file: &Path, device: Device, kind: Kind) -> Result<Self> {
        let mut g = Self::new(cfg, device)?;
        weights::load_into(&g.vs, file, &weights::keep_names)?;
        set_float_kind(&mut g.vs, kind);
        Ok(g)
    }

    /// The latent shape for `n` samples ((n, nz, 1, 1) for DCGAN, (n, z_dim) for StyleGAN2).
    pub fn latent_shape(&self, n: i64) -> Vec<i64> {
        match &self.net {
            GenNet::Dcgan(g) => g.latent_shape(n),
            GenNet::StyleGan2(g) => vec![n, g.cfg.z_dim],
        }
    }

    /// Training mode: BatchNorm batch statistics (DCGAN); random noise, unfused modulated
    /// convs and w_avg tracking (StyleGAN2). Eval mode: running statistics; constant noise.
    /// Shapes: z (latent_shape(B)) [, labels (B) i64] -> images (B, C, S, S) in [-1, 1]
    /// (StyleGAN2's have no tanh: roughly in [-1, 1]).
    pub fn forward_t(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        self.forward_psi(z, labels, train, None)
    }

    fn forward_psi(
        &self,
        z: &Tensor,
        labels: Option<&Tensor>,
        train: bool,
        psi: Option<f64>,
    ) -> Result<Tensor> {
        match &self.net {
            GenNet::Dcgan(g) => match psi {
                None => g.forward_t(z, labels, train),
                Some(_) => Err(Error::Input(
                    "a DCGAN truncates its latents, not w: draw them with sample::seeded_latents".into(),
                )),
            },
            GenNet::StyleGan2(g) => {
                no_labels(labels)?;
                let mode = if train { stylegan2::Mode::train() } else { stylegan2::Mode::eval() };
                g.forward(z, psi.unwrap_or(1.0), None, mode)
            }
        }
    }

    /// A training forward with StyleGAN2's style mixing regularisation: with probability
    /// `style_mixing_prob` the ws from a random layer on come from a second random latent
    /// (drawn from libtorch's generator). Without mixing it is `forward_t(z, labels, true)`.
    pub fn forward_train(
        &self,
        z: &Tensor,
        labels: Option<&Tensor>,
        style_mixing_prob: f64,
    ) -> Result<Tensor> {
        match &self.net {
            GenNet::StyleGan2(g) if style_mixing_prob > 0.0 => {
                no_labels(labels)?;
                let mix = g.draw_mixing(z, style_mixing_prob)?;
                let mix = mix.as_ref().map(|(z2, cutoff)| stylegan2::StyleMix { z: z2, cutoff: *cutoff });
                g.forward(z, 1.0, mix.as_ref(), stylegan2::Mode::train())
            }
            GenNet::Dcgan(_) if style_mixing_prob > 0.0 => {
                Err(Error::Config("style mixing needs a StyleGAN2 model".into()))
            }
            _ => self.forward_t(z, labels, true),
        }
    }

    /// Copies the variables that are not trained (buffers) from `src`, a generator of the same
    /// config. For a StyleGAN2 EMA generator: its `w_avg` then follows the live generator's, as
    /// NVIDIA copies buffers into G_ema instead of averaging them. A DCGAN keeps the average of
    /// its BatchNorm statistics (nothing is copied).
    pub fn copy_buffers_from(&self, src: &Generator) -> Result<()> {
        if !matches!(self.net, GenNet::StyleGan2(_)) {
            return Ok(());
        }
        let theirs = src.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, mut ours) in self.vs.variables() {
                if ours.requires_grad() {
                    continue;
                }
                let t = theirs
                    .get(&name)
                    .ok_or_else(|| Error::Config(format!("copying buffers: the source has no '{name}'")))?;
                ours.f_copy_(t)?;
            }
            Ok(())
        })
    }

    /// Images for latents in eval mode, without gradients, in batches of at most 256.
    /// Shapes: z (N, ...) [, labels (N)] -> (N, C, S, S) f32 in [-1, 1] on the CPU.
    pub fn generate(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        self.generate_with(z, labels, None)
    }

    /// [`Generator::generate`] with StyleGAN's truncation `psi` on w (see
    /// [`ModelConfig::truncation_space`]; a DCGAN refuses it).
    pub fn generate_with(&self, z: &Tensor, labels: Option<&Tensor>, psi: Option<f64>) -> Result<Tensor> {
        let n = z.size().first().copied().unwrap_or(0);
        let (device, kind) = (self.vs.device(), self.vs.kind());
        let mut out = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for start in (0..n).step_by(256) {
                let len = (n - start).min(256);
                let zb = z.f_narrow(0, start, len)?.f_to_device(device)?.f_to_kind(kind)?;
                let yb = match labels {
                    Some(y) => Some(y.f_narrow(0, start, len)?.f_to_device(device)?),
                    None => None,
                };
                let x = self.forward_psi(&zb, yb.as_ref(), false, psi)?;
                out.push(x.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?);
            }
            Ok(())
        })?;
        if out.is_empty() {
            return Err(Error::Input("no latents to generate from".into()));
        }
        Ok(Tensor::f_cat(&out, 0)?)
    }
}

/// A discriminator with its own VarStore.
pub struct Discriminator {
    pub cfg: ModelConfig,
    pub vs: VarStore,
    net: DiscNet,
}

impl Discriminator {
    pub fn new(cfg: &ModelConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let vs = VarStore::new(device);
        let net = match cfg {
            ModelConfig::Dcgan(c) => DiscNet::Dcgan(dcgan::Discriminator::new(&vs.root(), c)?),
            ModelConfig::StyleGan2(c) => DiscNet::StyleGan2(stylegan2::Discriminator::new(&vs.root(), c)?),
        };
        Ok(Discriminator { cfg: cfg.clone(), vs, net })
    }

    /// Shapes: images (B, C, S, S) [, labels (B)] -> logits (B).
    pub fn forward_t(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        match &self.net {
            DiscNet::Dcgan(d) => d.forward_t(x, labels, train),
            DiscNet::StyleGan2(d) => {
                no_labels(labels)?;
                d.forward(x)
            }
        }
    }
}

/// Converts the floating-point variables only (the BatchNorm counters stay i64).
pub fn set_float_kind(vs: &mut VarStore, kind: Kind) {
    match kind {
        Kind::Half => vs.half(),
        Kind::BFloat16 => vs.bfloat16(),
        Kind::Double => vs.double(),
        _ => vs.float(),
    }
}

/// Writes a model folder: config.json, generator.safetensors and, if given,
/// discriminator.safetensors. Returns the folder.
pub fn save_model(dir: &Path, g: &Generator, d: Option<&Discriminator>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| zoo_core::Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(&g.cfg).map_err(|e| Error::Config(e.to_string()))?;
    let p = dir.join("config.json");
    zoo_core::fsutil::atomic_write(&p, |w| {
        std::io::Write::write_all(w, text.as_bytes()).map_err(|e| zoo_core::Error::io(&p, e))
    })?;
    weights::save_varstore(&g.vs, &dir.join("generator.safetensors"))?;
    if let Some(d) = d {
        weights::save_varstore(&d.vs, &dir.join("discriminator.safetensors"))?;
    }
    Ok(dir.to_path_buf())
}

/// How a preset trains its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// Generator steps in the whole run.
    pub steps: u64,
    pub loss: Loss,
    pub lr_g: f64,
    pub lr_d: f64,
    /// Adam's betas (the recipe: 0.5, 0.999).
    pub beta1: f64,
    pub beta2: f64,
    /// Discriminator steps per generator step (WGAN-GP uses 5), each on a new batch.
    #[serde(default = "one")]
    pub d_steps: u32,
    /// Weight of WGAN-GP's gradient penalty.
    #[serde(default = "ten")]
    pub gp_weight: f64,
    /// R1 weight gamma (0: off); the penalty is (gamma / 2) E ||grad D(x)||^2.
    #[serde(default)]
    pub r1_gamma: f64,
    /// Lazy regularisation (StyleGAN2): R1 every this many D steps, scaled up by it.
    #[serde(default = "one_u64")]
    pub r1_every: u64,
    /// Decay of an EMA of the generator's weights, which is what gets saved (none: the raw weights).
    #[serde(default)]
    pub ema_decay: Option<f64>,
    /// Ramp the EMA decay up as min(ema_decay, (1 + n) / (10 + n)) at update n, so early
    /// samples are not dominated by the initial weights (short runs).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ema_warmup: bool,
    /// StyleGAN2's style mixing regularisation: the probability that a training fake takes its
    /// later ws from a second latent (0.9 in the paper; 0: off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub style_mixing_prob: f64,
    /// Weight of the mode-seeking term (Mao et al. 2019, MSGAN; 0: off). Each batch of fakes is
    /// two halves with the same classes and different latents, and the generator also minimises
    /// 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + 1e-5): two latents may not give one image,
    /// which is how conditional GANs collapse to one image per class.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode_seeking: f64,
    #[serde(default = "fifty")]
    pub log_every: u64,
    #[serde(default = "five_hundred")]
    pub sample_every: u64,
    #[serde(default = "five_hundred")]
    pub checkpoint_every: u64,
}

fn one() -> u32 {
    1
}
fn one_u64() -> u64 {
    1
}
fn ten() -> f64 {
    10.0
}
fn fifty() -> u64 {
    50
}
fn five_hundred() -> u64 {
    500
}
// Settings added later are left out of a run's config.json at their defaults, so runs started
// before them still resume (a resumed run must have the same settings).
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl TrainConfig {
    pub fn validate(&self, model: &ModelConfig) -> Result<()> {
        if self.batch_size == 0 || self.steps == 0 || self.d_steps == 0 || self.r1_every == 0 {
            return Err(Error::Config("batch_size, steps, d_steps and r1_every must be at least 1".into()));
        }
        if self.log_every == 0 || self.sample_every == 0 || self.checkpoint_every == 0 {
            return Err(Error::Config(
                "log_every, sample_every and checkpoint_every must be at least 1".into(),
            ));
        }
        for (k, v) in [("lr_g", self.lr_g), ("lr_d", self.lr_d)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::Config(format!("{k} must be a positive number, got {v}")));
            }
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(Error::Config("beta1 and beta2 must be in [0, 1)".into()));
        }
        if self.r1_gamma < 0.0 || self.gp_weight < 0.0 {
            return Err(Error::Config("r1_gamma and gp_weight must not be negative".into()));
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::Config(format!("ema_decay must be in [0, 1), got {d}")));
            }
        }
        if !(0.0..=1.0).contains(&self.style_mixing_prob) {
            return Err(Error::Config(format!(
                "style_mixing_prob must be in [0, 1], got {}",
                self.style_mixing_prob
            )));
        }
        if !(self.mode_seeking >= 0.0 && self.mode_seeking.is_finite()) {
            return Err(Error::Config(format!(
                "mode_seeking must be a weight >= 0, got {}",
                self.mode_seeking
            )));
        }
        if self.mode_seeking > 0.0 && self.batch_size % 2 != 0 {
            return Err(Error::Config(format!(
                "mode_seeking pairs the fakes of a batch: batch_size must be even, got {}",
                self.batch_size
            )));
        }
        match model {
            ModelConfig::Dcgan(c) => {
                if self.loss == Loss::WganGp && c.d_norm == dcgan::Norm::Batch {
                    return Err(Error::Config(
                        "WGAN-GP penalises each sample's gradient, which BatchNorm in the discriminator mixes across \
                         the batch: set the model's d_norm to \"none\" (or \"spectral\")"
                            .into(),
                    ));
                }
                if self.style_mixing_prob > 0.0 {
                    return Err(Error::Config(
                        "style_mixing_prob needs a StyleGAN2 model; set it to 0".into(),
                    ));
                }
            }
            ModelConfig::StyleGan2(c) => c.check_batch(self.batch_size as i64)?,
        }
        Ok(())
    }
}

/// A preset: `models/gan/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    #[serde(default)]
    pub description: String,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

impl Preset {
    /// The preset `name` of models/gan/ (or built into zoo).
    pub fn find(name: &str) -> Result<Self> {
        Self::load(&zoo_core::presets::find_preset("gan", name)?.path)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = zoo_core::presets::read(path)?;
        let p: Preset = serde_json::from_str(&text).map_err(|e| zoo_core::Error::bad_file(path, e))?;
        p.model.validate()?;
        p.train.validate(&p.model)?;
        Ok(p)
    }

    /// A preset as JSON (for a run's config.json).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse() {
        let dir = zoo_core::presets::models_dir().join("gan");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "json") {
                Preset::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 2, "{n} presets in {}", dir.display());
    }

    #[test]
    fn model_folder_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ModelConfig::Dcgan(DcganConfig::tiny());
        let g = Generator::new(&cfg, Device::Cpu).unwrap();
        save_model(dir.path(), &g, None).unwrap();
        let g2 = Generator::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        let z = Tensor::randn(g.latent_shape(3), (Kind::Float, Device::Cpu));
        assert!(g.generate(&z, None).unwrap().equal(&g2.generate(&z, None).unwrap()));
        // Another size does not fit, and says which tensors.
        let other = ModelConfig::Dcgan(DcganConfig { ngf: 4, ..DcganConfig::tiny() });
        let e = Generator::load_weights(
            &other,
            &dir.path().join("generator.safetensors"),
            Device::Cpu,
            Kind::Float,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("wrong shape") && e.contains("main.0.weight"), "{e}");
        let e = ModelConfig::load(&dir.path().join("none")).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        let bad: Result<ModelConfig, _> = serde_json::from_str(r#"{"arch": "biggan"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn stylegan2_model_folder_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ModelConfig::StyleGan2(stylegan2::Config::tiny());
        let g = Generator::new(&cfg, Device::Cpu).unwrap();
        assert_eq!(g.latent_shape(3), [3, 16]);
        assert_eq!(cfg.truncation_space(), TruncationSpace::W);
        save_model(dir.path(), &g, None).unwrap();
        let back = Generator::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        assert_eq!(back.cfg, cfg);
        let z = Tensor::randn([2, 16], (Kind::Float, Device::Cpu));
        // Eval mode uses the stored constant noise: same weights, same images.
        assert!(g.generate(&z, None).unwrap().equal(&back.generate(&z, None).unwrap()));
        assert!(!g.generate_with(&z, None, Some(0.5)).unwrap().equal(&g.generate(&z, None).unwrap()));
        let e = back.generate(&z, Some(&Tensor::from_slice(&[0i64, 1]))).unwrap_err().to_string();
        assert!(e.contains("unconditional"), "{e}");
        // A DCGAN refuses psi and style mixing.
        let dc = Generator::new(&ModelConfig::Dcgan(DcganConfig::tiny()), Device::Cpu).unwrap();
        let zd = Tensor::randn(dc.latent_shape(2), (Kind::Float, Device::Cpu));
        assert!(dc.generate_with(&zd, None, Some(0.5)).is_err());
        assert!(dc.forward_train(&zd, None, 0.5).is_err());
    }

    #[test]
    fn stylegan2_train_settings_are_checked() {
        let model = ModelConfig::StyleGan2(stylegan2::Config::tiny());
        let base: TrainConfig = serde_json::from_value(serde_json::json!({
            "batch_size": 8, "steps": 1, "loss": "bce", "lr_g": 0.002, "lr_d": 0.002, "beta1": 0.0, "beta2": 0.99,
            "style_mixing_prob": 0.9}))
        .unwrap();
        base.validate(&model).unwrap();
        // Batches must split into minibatch-stddev groups of 4.
        let e = TrainConfig { batch_size: 6, ..base.clone() }.validate(&model).unwrap_err().to_string();
        assert!(e.contains("groups of 4"), "{e}");
        let e =
            TrainConfig { style_mixing_prob: 1.5, ..base.clone() }.validate(&model).unwrap_err().to_string();
        assert!(e.contains("style_mixing_prob"), "{e}");
        let e = TrainConfig { mode_seeking: -1.0, ..base.clone() }.validate(&model).unwrap_err().to_string();
        assert!(e.contains("mode_seeking"), "{e}");
        let dc = ModelConfig::Dcgan(DcganConfig::tiny());
        let odd = TrainConfig { mode_seeking: 1.0, batch_size: 7, style_mixing_prob: 0.0, ..base.clone() };
        assert!(odd.validate(&dc).unwrap_err().to_string().contains("even"));
        assert!(base.validate(&dc).unwrap_err().to_string().contains("StyleGAN2"));
        // The later settings are left out of a run's JSON at their defaults (old runs resume).
        let plain = TrainConfig { style_mixing_prob: 0.0, ..base };
        let v = serde_json::to_value(&plain).unwrap();
        assert!(v.get("style_mixing_prob").is_none() && v.get("ema_warmup").is_none(), "{v}");
        assert!(v.get("mode_seeking").is_none(), "{v}");
    }

    #[test]
    fn wgan_gp_with_batch_norm_is_refused() {
        let text = r#"{"model": {"arch": "dcgan", "nz": 8, "ngf": 8, "ndf": 8, "nc": 3, "image_size": 16},
            "train": {"batch_size": 4, "steps": 1, "loss": "wgan-gp", "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9}}"#;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, text).unwrap();
        assert!(Preset::load(&p).unwrap_err().to_string().contains("d_norm"));
    }
}
