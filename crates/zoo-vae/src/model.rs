//! One type over the three VAEs, and the model folder `zoo vae` reads and writes.
//!
//! A model folder is `config.json` plus the weights:
//! - MLP and conv VAEs: `{"model": "mlp" | "conv", ...}` and `model.safetensors`;
//! - AutoencoderKL: diffusers' config (with `"_class_name": "AutoencoderKL"`) and
//!   `diffusion_pytorch_model.safetensors`, i.e. a diffusers `vae/` folder, so a folder written
//!   here loads in diffusers and a diffusers folder loads here.
//!
//! [`Vae`] takes and returns images in zoo's convention, [-1, 1], and converts to each model's
//! own range ([0, 1] for the MLP and conv VAEs).
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::{nn::VarStore, Device, Kind, Tensor};
use zoo_core::weights;

use crate::autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
use crate::conv::{ConvConfig, ConvVae};
use crate::distributions::{DiagonalGaussianDistribution, Likelihood};
use crate::mlp::{MlpConfig, MlpVae};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Mlp(MlpConfig),
    Conv(ConvConfig),
    Kl(AutoencoderKLConfig),
}

impl ModelConfig {
    /// Reads a zoo VAE config (`"model": "mlp" | "conv"`) or a diffusers AutoencoderKL config.
    pub fn from_json(v: &Value) -> Result<Self> {
        let parse_err = |e: serde_json::Error| Error::Config(format!("VAE config: {e}"));
        if v.get("_class_name").and_then(Value::as_str) == Some("AutoencoderKL") {
            return Ok(ModelConfig::Kl(serde_json::from_value(v.clone()).map_err(parse_err)?));
        }
        match v.get("model").and_then(Value::as_str) {
            Some("mlp") => Ok(ModelConfig::Mlp(serde_json::from_value(v.clone()).map_err(parse_err)?)),
            Some("conv") => Ok(ModelConfig::Conv(serde_json::from_value(v.clone()).map_err(parse_err)?)),
            Some(other) => Err(Error::Config(format!("VAE config: unknown model '{other}' (mlp, conv)"))),
            None => match v.get("_class_name").and_then(Value::as_str) {
                Some(c) => Err(Error::Config(format!("VAE config: _class_name '{c}' is not AutoencoderKL"))),
                None => Err(Error::Config(
                    "VAE config: neither \"model\": \"mlp\" | \"conv\" nor a diffusers AutoencoderKL \
                     config (\"_class_name\": \"AutoencoderKL\")"
                        .into(),
                )),
            },
        }
    }

    pub fn to_json(&self) -> Value {
        let (tag, v) = match self {
            ModelConfig::Mlp(c) => (("model", "mlp"), serde_json::to_value(c)),
            ModelConfig::Conv(c) => (("model", "conv"), serde_json::to_value(c)),
            ModelConfig::Kl(c) => (("_class_name", "AutoencoderKL"), serde_json::to_value(c)),
        };
        // Serialising plain structs of numbers and strings cannot fail.
        let mut v = v.unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert(tag.0.into(), Value::String(tag.1.into()));
        }
        v
    }

    /// (C, H, W) of the images the model is built for (AutoencoderKL: `sample_size`, though it
    /// takes any multiple of its downsampling factor).
    pub fn image_shape(&self) -> [i64; 3] {
        match self {
            ModelConfig::Mlp(c) => [c.in_channels, c.image_size, c.image_size],
            ModelConfig::Conv(c) => [c.in_channels, c.image_size, c.image_size],
            ModelConfig::Kl(c) => [c.in_channels, c.sample_size, c.sample_size],
        }
    }

    /// Name of the weights file in a model folder.
    pub fn weights_file(&self) -> &'static str {
        match self {
            ModelConfig::Kl(_) => "diffusion_pytorch_model.safetensors",
            _ => "model.safetensors",
        }
    }
}

#[derive(Debug)]
pub enum Net {
    Mlp(MlpVae),
    Conv(ConvVae),
    Kl(Box<AutoencoderKL>),
}

/// A VAE with its variables.
pub struct Vae {
    pub vs: VarStore,
    pub net: Net,
    pub config: ModelConfig,
}

impl std::fmt::Debug for Vae {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vae").field("config", &self.config).finish()
    }
}

impl Vae {
    /// A freshly initialised model (PyTorch's default initialisation) on `device`, in f32.
    pub fn new(config: &ModelConfig, device: Device) -> Result<Vae> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let net = match config {
            ModelConfig::Mlp(c) => Net::Mlp(MlpVae::new(root, c)?),
            ModelConfig::Conv(c) => Net::Conv(ConvVae::new(root, c)?),
            ModelConfig::Kl(c) => Net::Kl(Box::new(AutoencoderKL::new(root, c)?)),
        };
        Ok(Vae { vs, net, config: config.clone() })
    }

    /// Loads a model folder (see the module docs) strictly; `kind` is the weights' dtype.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Vae> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            zoo_core::Error::Config(format!(
                "{}: {e}; a VAE model folder holds config.json and its weights (see `zoo vae train`)",
                cfg_path.display()
            ))
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| zoo_core::Error::bad_file(&cfg_path, e))?;
        let config =
            ModelConfig::from_json(&v).map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
        let mut vae = Vae::new(&config, device)?;
        match kind {
            Kind::Half => vae.vs.half(),
            Kind::BFloat16 => vae.vs.bfloat16(),
            _ => {}
        }
        weights::load_into(&vae.vs, dir, &weights::keep_names)?;
        Ok(vae)
    }

    /// Writes config.json and the weights into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| zoo_core::Error::io(dir, e))?;
        let cfg_path = dir.join("config.json");
        let text =
            serde_json::to_string_pretty(&self.config.to_json()).map_err(|e| Error::Config(e.to_string()))?;
        zoo_core::fsutil::atomic_write(&cfg_path, |w| {
            w.write_all(text.as_bytes()).map_err(|e| zoo_core::Error::io(&cfg_path, e))
        })?;
        weights::save_varstore(&self.vs, &dir.join(self.config.weights_file()))?;
        Ok(dir.to_path_buf())
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.vs.variables().values().next().map(Tensor::kind).unwrap_or(Kind::Float)
    }

    /// The decoder likelihood, for the MLP and conv VAEs (AutoencoderKL has none).
    pub fn likelihood(&self) -> Option<&Likelihood> {
        match &self.net {
            Net::Mlp(m) => Some(&m.likelihood),
            Net::Conv(m) => Some(&m.likelihood),
            Net::Kl(_) => None,
        }
    }

    /// Checks images against the model: (B, C, H, W) with the model's C and, for the MLP and
    /// conv VAEs, its H and W.
    pub fn check_images(&self, x: &Tensor) -> Result<()> {
        let size = x.size();
        let [c, h, w] = self.config.image_shape();
        let ok = match (&self.config, size.as_slice()) {
            (ModelConfig::Kl(k), &[_, xc, xh, xw]) => {
                let f = k.downsample_factor();
                xc == c && xh > 0 && xw > 0 && xh % f == 0 && xw % f == 0
            }
            (_, &[_, xc, xh, xw]) => (xc, xh, xw) == (c, h, w),
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let want = match &self.config {
            ModelConfig::Kl(k) => format!("{c} channels, sides multiples of {}", k.downsample_factor()),
            _ => format!("{c}x{h}x{w} (channels x height x width)"),
        };
        let got = match size.as_slice() {
            &[_, xc, xh, xw] => format!("{xc}x{xh}x{xw}"),
            s => format!("{s:?}"),
        };
        Err(Error::Input(format!("the model takes images of {want}, got {got}")))
    }

    /// Images in [-1, 1] -> the model's input range.
    pub fn to_model_space(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.f_to_device(self.device())?.f_to_kind(self.kind())?;
        Ok(match self.net {
            Net::Kl(_) => x,
            _ => x.f_add_scalar(1.0)?.f_mul_scalar(0.5)?,
        })
    }

    /// The model's output range -> images in [-1, 1] (f32).
    pub fn from_model_space(&self, y: &Tensor) -> Result<Tensor> {
        let y = y.f_to_kind(Kind::Float)?;
        Ok(match self.net {
            Net::Kl(_) => y,
            _ => y.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?,
        })
    }

    /// q(z|x) for inputs already in the model's range.
    /// Shapes: (B, C, H, W) -> posterior over (B, latent_dim) or (B, latent_channels, h, w).
    pub fn encode_model_space(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        self.check_images(x)?;
        match &self.net {
            Net::Mlp(m) => m.encode(x),
            Net::Conv(m) => m.encode(x),
            Net::Kl(m) => m.encode(x),
        }
    }

    /// The decoder's raw output: logits (Bernoulli), means (Gaussian) or the KL reconstruction.
    /// Shapes: (B, latent..) -> (B, C, H, W).
    pub fn decode_raw(&self, z: &Tensor) -> Result<Tensor> {
        match &self.net {
            Net::Mlp(m) => m.decode(z),
            Net::Conv(m) => m.decode(z),
            Net::Kl(m) => m.decode(z),
        }
    }

    /// The latent shape without the batch, for images of `h` x `w`.
    pub fn latent_shape(&self, h: i64, w: i64) -> Vec<i64> {
        match &self.config {
            ModelConfig::Mlp(c) => vec![c.latent_dim],
            ModelConfig::Conv(c) => vec![c.latent_dim],
            ModelConfig::Kl(c) => {
                let f = c.downsample_factor();
                vec![c.latent_channels, h / f, w / f]
            }
        }
    }

    /// Checks latents against the model: (B, latent_dim), or (B, latent_channels, h, w).
    pub fn check_latents(&self, z: &Tensor) -> Result<()> {
        let size = z.size();
        let (ok, want) = match &self.config {
            ModelConfig::Mlp(MlpConfig { latent_dim: l, .. })
            | ModelConfig::Conv(ConvConfig { latent_dim: l, .. }) => {
                (size.len() == 2 && size[1] == *l, format!("(B, {l})"))
            }
            ModelConfig::Kl(c) => (
                size.len() == 4 && size[1] == c.latent_channels && size[2] > 0 && size[3] > 0,
                format!("(B, {}, h, w)", c.latent_channels),
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Input(format!("the model takes latents of shape {want}, got {size:?}")))
        }
    }

    /// q(z|x) for images in [-1, 1]. Shapes: (B, C, H, W) -> posterior over (B, latent..).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        self.check_images(x)?;
        self.encode_model_space(&self.to_model_space(x)?)
    }

    /// The decoder's mean image in [-1, 1], f32. Shapes: (B, latent..) -> (B, C, H, W).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.check_latents(z)?;
        let z = z.f_to_device(self.device())?.f_to_kind(self.kind())?;
        let raw = self.decode_raw(&z)?;
        let mean = match self.likelihood() {
            Some(l) => l.mean(&raw)?,
            None => raw,
        };
        self.from_model_space(&mean)
    }

    /// Deterministic reconstruction through the posterior mean, [-1, 1] -> [-1, 1].
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(x)?.mode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_round_trip_and_errors_are_clear() {
        for cfg in [
            ModelConfig::Mlp(MlpConfig::tiny()),
            ModelConfig::Conv(ConvConfig::tiny()),
            ModelConfig::Kl(AutoencoderKLConfig::tiny()),
        ] {
            assert_eq!(ModelConfig::from_json(&cfg.to_json()).unwrap(), cfg);
        }
        let e = ModelConfig::from_json(&json!({"model": "gan"})).unwrap_err().to_string();
        assert!(e.contains("unknown model 'gan'"), "{e}");
        let e = ModelConfig::from_json(&json!({"_class_name": "UNet2DModel"})).unwrap_err().to_string();
        assert!(e.contains("UNet2DModel"), "{e}");
        let e = ModelConfig::from_json(&json!({"model": "mlp", "in_channels": 1})).unwrap_err().to_string();
        assert!(e.contains("missing field"), "{e}");
    }

    #[test]
    fn save_load_round_trip_and_input_checks() {
        let dir = tempfile::tempdir().unwrap();
        let vae = Vae::new(&ModelConfig::Conv(ConvConfig::tiny()), Device::Cpu).unwrap();
        vae.save(dir.path()).unwrap();
        let back = Vae::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu)) * 2 - 1;
        assert!(vae.reconstruct(&x).unwrap().equal(&back.reconstruct(&x).unwrap()));
        let e = vae.encode(&Tensor::zeros([1, 1, 8, 8], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
        assert_eq!(e, "the model takes images of 3x8x8 (channels x height x width), got 1x8x8");
        // Weights of another model do not load.
        let other = tempfile::tempdir().unwrap();
        Vae::new(&ModelConfig::Mlp(MlpConfig::tiny()), Device::Cpu).unwrap().save(other.path()).unwrap();
        std::fs::copy(dir.path().join("config.json"), other.path().join("config.json")).unwrap();
        let e = Vae::load(other.path(), Device::Cpu, Kind::Float).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("unexpected"), "{e}");
    }
}
