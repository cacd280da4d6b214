//! DCGAN (Radford, Metz & Chintala 2016), as the PyTorch examples repo builds it
//! (`examples/dcgan/main.py`): a generator of transposed convolutions with BatchNorm and ReLU,
//! ending in Tanh, and a discriminator of strided convolutions with BatchNorm and LeakyReLU(0.2).
//!
//! Parameter names are those of the recipe's `nn.Sequential` `main`: `main.0.weight`,
//! `main.1.weight`/`bias`/`running_mean`/`running_var`/`num_batches_tracked`, ... so
//! `torch.save(netG.state_dict())`, converted with tools/convert_to_safetensors.py, loads 1:1.
//! The layer index counts every module of the Sequential, ReLUs and Tanh included.
//!
//! Departures from the recipe, each optional and off in its 64x64 preset:
//! - other sizes: one up/down block per doubling, so 32x32 (3 blocks) or 16x16 (2 blocks);
//! - class-conditional: the generator concatenates a learned class embedding (`label_emb`,
//!   `nz` wide) to z; the discriminator appends a learned per-class image plane (`label_emb`,
//!   `image_size^2` wide) as an extra input channel;
//! - the discriminator's normalisation may be spectral norm (no BatchNorm, as in SN-GAN) or
//!   none (for WGAN-GP, whose penalty is per sample);
//! - the discriminator returns logits: the recipe's final Sigmoid has no parameters, and
//!   the losses use the numerically stable `*_with_logits` forms.
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::Tensor;

use crate::layers::{check_images, BatchNorm2d, Conv, ConvSpec};
use crate::{Error, Result};

/// The discriminator's normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// BatchNorm after every conv but the first and last (the recipe).
    #[default]
    Batch,
    /// Spectral norm on every conv, no BatchNorm.
    Spectral,
    /// Neither.
    None,
}

/// The recipe's command-line settings (`--nz --ngf --ndf --imageSize`, and `nc` from the
/// dataset), plus the options above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DcganConfig {
    /// Latent size.
    pub nz: i64,
    /// Generator width (channels of its last hidden layer).
    pub ngf: i64,
    /// Discriminator width (channels of its first layer).
    pub ndf: i64,
    /// Image channels: 3 for RGB, 1 for MNIST.
    pub nc: i64,
    /// Image side: 16, 32, 64 or 128.
    pub image_size: i64,
    /// Classes of a conditional model; 0 for an unconditional one.
    #[serde(default)]
    pub num_classes: i64,
    #[serde(default)]
    pub d_norm: Norm,
}

impl DcganConfig {
    /// The recipe's defaults: 64x64 RGB, nz 100, ngf = ndf = 64.
    pub fn dcgan_64() -> Self {
        DcganConfig { nz: 100, ngf: 64, ndf: 64, nc: 3, image_size: 64, num_classes: 0, d_norm: Norm::Batch }
    }

    /// 32x32 RGB, three blocks each way.
    pub fn dcgan_32() -> Self {
        DcganConfig { image_size: 32, ..Self::dcgan_64() }
    }

    /// A tiny model for tests: 16x16, nz 8, 8 filters.
    pub fn tiny() -> Self {
        DcganConfig { nz: 8, ngf: 8, ndf: 8, nc: 3, image_size: 16, num_classes: 0, d_norm: Norm::Batch }
    }

    /// Up- (or down-) sampling blocks between 4x4 and the image: image_size = 4 * 2^blocks.
    pub fn blocks(&self) -> Result<i64> {
        match self.image_size {
            16 => Ok(2),
            32 => Ok(3),
            64 => Ok(4),
            128 => Ok(5),
            s => Err(Error::Config(format!("DCGAN image_size {s} is not supported: use 16, 32, 64 or 128"))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.blocks()?;
        for (k, v) in [("nz", self.nz), ("ngf", self.ngf), ("ndf", self.ndf), ("nc", self.nc)] {
            if v < 1 {
                return Err(Error::Config(format!("DCGAN {k} must be at least 1, got {v}")));
            }
        }
        if self.num_classes < 0 {
            return Err(Error::Config(format!(
                "num_classes must be 0 (unconditional) or more, got {}",
                self.num_classes
            )));
        }
        Ok(())
    }
}

/// Checks labels against a model's classes: (B) i64 in 0..num_classes for a conditional model.
fn check_labels(labels: Option<&Tensor>, num_classes: i64, batch: i64) -> Result<()> {
    match (labels, num_classes) {
        (None, 0) => Ok(()),
        (Some(_), 0) => Err(Error::Input("this model is unconditional: it takes no class labels".into())),
        (None, n) => Err(Error::Input(format!("this model is conditional: give a class in 0..{n}"))),
        (Some(y), n) => {
            if y.size() != [batch] {
                return Err(Error::Input(format!("labels have shape {:?}, expected ({batch})", y.size())));
            }
            if batch > 0 {
                let (lo, hi) = (y.f_min()?.f_int64_value(&[])?, y.f_max()?.f_int64_value(&[])?);
                if lo < 0 || hi >= n {
                    return Err(Error::Input(format!("class labels must be in 0..{n}, got {lo}..={hi}")));
                }
            }
            Ok(())
        }
    }
}

enum Layer {
    Conv(Conv),
    Bn(BatchNorm2d),
    Relu,
    LeakyRelu,
    Tanh,
}

impl Layer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match self {
            Layer::Conv(c) => c.forward_t(x, train)?,
            Layer::Bn(b) => b.forward_t(x, train)?,
            Layer::Relu => x.f_relu()?,
            // tch's leaky_relu has the fixed slope 0.01; zoo_core::ops passes 0.2 to libtorch.
            Layer::LeakyRelu => zoo_core::ops::leaky_relu(x, 0.2)?,
            Layer::Tanh => x.f_tanh()?,
        })
    }
}

/// An `nn.Sequential`: layers numbered as PyTorch numbers them.
struct Sequential {
    layers: Vec<Layer>,
    /// On the CPU, the input of this layer goes channels-last, and so does everything after it
    /// up to the output, which comes back in NCHW order. oneDNN then reads and writes the
    /// activations as they are instead of converting each to its blocked layout and back at every
    /// convolution call (forward, input and weight gradient): the DCGAN-64 step takes ~4% less
    /// time (docs/benchmarks.md). Values agree up to float rounding.
    channels_last_from: usize,
}

impl Sequential {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            if i == self.channels_last_from && h.device() == tch::Device::Cpu {
                h = zoo_core::ops::channels_last(&h)?;
            }
            h = l.forward_t(&h, train)?;
        }
        Ok(if h.is_contiguous() { h } else { zoo_core::ops::nchw(&h)? })
    }
}

/// The DCGAN generator.
pub struct Generator {
    pub cfg: DcganConfig,
    main: Sequential,
    label_emb: Option<Tensor>,
}

impl Generator {
    pub fn new(p: &nn::Path, cfg: &DcganConfig) -> Result<Self> {
        cfg.validate()?;
        let blocks = cfg.blocks()?;
        let main = p / "main";
        let mut layers = Vec::new();
        let conv = |layers: &mut Vec<Layer>, cin, cout, stride, padding| -> Result<()> {
            let s = ConvSpec {
                cin,
                cout,
                kernel: 4,
                stride,
                padding,
                transposed: true,
                bias: false,
                spectral: false,
            };
            layers.push(Layer::Conv(Conv::new(&(&main / layers.len()), s)?));
            Ok(())
        };
        let cin = if cfg.num_classes > 0 { 2 * cfg.nz } else { cfg.nz };
        // 1. (nz, 1, 1) -> (ngf * 2^(blocks-1), 4, 4); 2. halve the channels, double the side.
        let mut ch = cfg.ngf << (blocks - 1);
        conv(&mut layers, cin, ch, 1, 0)?;
        layers.push(Layer::Bn(BatchNorm2d::new(&(&main / layers.len()), ch)?));
        layers.push(Layer::Relu);
        for _ in 1..blocks {
            conv(&mut layers, ch, ch / 2, 2, 1)?;
            ch /= 2;
            layers.push(Layer::Bn(BatchNorm2d::new(&(&main / layers.len()), ch)?));
            layers.push(Layer::Relu);
        }
        // 3. (ngf, S/2, S/2) -> (nc, S, S) in [-1, 1].
        conv(&mut layers, ch, cfg.nc, 2, 1)?;
        layers.push(Layer::Tanh);
        let label_emb = if cfg.num_classes > 0 {
            Some((p / "label_emb").f_var(
                "weight",
                &[cfg.num_classes, cfg.nz],
                Init::Randn { mean: 0.0, stdev: 1.0 },
            )?)
        } else {
            None
        };
        // (the first layer's output is (B, C, 4, 4) from a (B, nz, 1, 1) latent)
        Ok(Generator { cfg: cfg.clone(), main: Sequential { layers, channels_last_from: 1 }, label_emb })
    }

    /// The latent shape for `n` samples: (n, nz, 1, 1), as the recipe draws it.
    pub fn latent_shape(&self, n: i64) -> Vec<i64> {
        vec![n, self.cfg.nz, 1, 1]
    }

    /// Shapes: z (B, nz, 1, 1) [, labels (B) i64] -> images (B, nc, S, S) in [-1, 1].
    pub fn forward_t(&self, z: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let nz = self.cfg.nz;
        let b = match z.size()[..] {
            [b, c, 1, 1] if c == nz => b,
            ref s => {
                return Err(Error::Input(format!(
                    "the generator takes latents of shape (B, {nz}, 1, 1), got {s:?}"
                )))
            }
        };
        check_labels(labels, self.cfg.num_classes, b)?;
        let x = match (&self.label_emb, labels) {
            (Some(emb), Some(y)) => {
                let e = emb.f_index_select(0, y)?.f_view([b, nz, 1, 1])?;
                Tensor::f_cat(&[z, &e], 1)?
            }
            _ => z.shallow_clone(),
        };
        self.main.forward_t(&x, train)
    }
}

/// The DCGAN discriminator.
pub struct Discriminator {
    pub cfg: DcganConfig,
    main: Sequential,
    label_emb: Option<Tensor>,
}

impl Discriminator {
    pub fn new(p: &nn::Path, cfg: &DcganConfig) -> Result<Self> {
        cfg.validate()?;
        let blocks = cfg.blocks()?;
        let main = p / "main";
        let spectral = cfg.d_norm == Norm::Spectral;
        let mut layers = Vec::new();
        let conv = |layers: &mut Vec<Layer>, cin, cout, stride, padding| -> Result<()> {
            let s =
                ConvSpec { cin, cout, kernel: 4, stride, padding, transposed: false, bias: false, spectral };
            layers.push(Layer::Conv(Conv::new(&(&main / layers.len()), s)?));
            Ok(())
        };
        let cin = if cfg.num_classes > 0 { cfg.nc + 1 } else { cfg.nc };
        // 1. (nc, S, S) -> (ndf, S/2, S/2), no norm on the first layer.
        conv(&mut layers, cin, cfg.ndf, 2, 1)?;
        layers.push(Layer::LeakyRelu);
        // 2. double the channels, halve the side, down to 4x4.
        let mut ch = cfg.ndf;
        for _ in 1..blocks {
            conv(&mut layers, ch, ch * 2, 2, 1)?;
            ch *= 2;
            if cfg.d_norm == Norm::Batch {
                layers.push(Layer::Bn(BatchNorm2d::new(&(&main / layers.len()), ch)?));
            }
            layers.push(Layer::LeakyRelu);
        }
        // 3. (ndf * 2^(blocks-1), 4, 4) -> (1, 1, 1): one logit.
        conv(&mut layers, ch, 1, 1, 0)?;
        let label_emb = if cfg.num_classes > 0 {
            let side = cfg.image_size * cfg.image_size;
            Some((p / "label_emb").f_var(
                "weight",
                &[cfg.num_classes, side],
                Init::Randn { mean: 0.0, stdev: 1.0 },
            )?)
        } else {
            None
        };
        Ok(Discriminator { cfg: cfg.clone(), main: Sequential { layers, channels_last_from: 0 }, label_emb })
    }

    /// Shapes: images (B, nc, S, S) [, labels (B)] -> logits (B).
    pub fn forward_t(&self, x: &Tensor, labels: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let c = &self.cfg;
        check_images(x, c.nc, c.image_size, "the discriminator")?;
        let b = x.size()[0];
        check_labels(labels, c.num_classes, b)?;
        let x = match (&self.label_emb, labels) {
            (Some(emb), Some(y)) => {
                let plane = emb.f_index_select(0, y)?.f_view([b, 1, c.image_size, c.image_size])?;
                Tensor::f_cat(&[x, &plane.f_to_kind(x.kind())?], 1)?
            }
            _ => x.shallow_clone(),
        };
        Ok(self.main.forward_t(&x, train)?.f_view([b])?)
    }

    /// The spectrally normalised layers' sigma estimates (empty without spectral norm).
    pub fn sigmas(&self) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for l in &self.main.layers {
            if let Layer::Conv(Conv { weight: crate::layers::Weight::Spectral(sn), .. }) = l {
                out.push(sn.sigma()?);
            }
        }
        Ok(out)
    }
}

/// Parameter count of the trainable variables of a VarStore.
pub fn num_params(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    fn names(vs: &VarStore) -> Vec<String> {
        let mut n: Vec<String> = vs.variables().into_keys().collect();
        n.sort();
        n
    }

    #[test]
    fn recipe_names_and_shapes_64() {
        let cfg = DcganConfig::dcgan_64();
        let gvs = VarStore::new(Device::Cpu);
        let g = Generator::new(&gvs.root(), &cfg).unwrap();
        let n = names(&gvs);
        // ConvTranspose at 0, 3, 6, 9, 12; BatchNorm at 1, 4, 7, 10 (5 keys each).
        assert_eq!(n.len(), 5 + 4 * 5);
        for k in ["main.0.weight", "main.1.num_batches_tracked", "main.10.running_var", "main.12.weight"] {
            assert!(n.contains(&k.to_string()), "{k} not in {n:?}");
        }
        assert_eq!(gvs.variables()["main.0.weight"].size(), [100, 512, 4, 4]);
        assert_eq!(gvs.variables()["main.12.weight"].size(), [64, 3, 4, 4]);
        // The recipe's netG has 3,576,704 parameters.
        assert_eq!(num_params(&gvs), 3_576_704);
        let z = Tensor::randn([2, 100, 1, 1], (Kind::Float, Device::Cpu));
        let x = g.forward_t(&z, None, false).unwrap();
        assert_eq!(x.size(), [2, 3, 64, 64]);
        assert!(x.abs().max().double_value(&[]) <= 1.0);

        let dvs = VarStore::new(Device::Cpu);
        let d = Discriminator::new(&dvs.root(), &cfg).unwrap();
        let n = names(&dvs);
        for k in ["main.0.weight", "main.3.running_mean", "main.9.weight", "main.11.weight"] {
            assert!(n.contains(&k.to_string()), "{k} not in {n:?}");
        }
        // The recipe's netD has 2,765,568 parameters.
        assert_eq!(num_params(&dvs), 2_765_568);
        assert_eq!(d.forward_t(&x, None, true).unwrap().size(), [2]);
    }

    #[test]
    fn init_statistics() {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let _ = Generator::new(&vs.root(), &DcganConfig::dcgan_32()).unwrap();
        let v = vs.variables();
        let w = &v["main.0.weight"];
        let (m, s) = (w.mean(Kind::Float).double_value(&[]), w.std(true).double_value(&[]));
        assert!(m.abs() < 1e-3 && (s - 0.02).abs() < 1e-3, "conv mean {m} std {s}");
        let g = &v["main.1.weight"];
        let (m, s) = (g.mean(Kind::Float).double_value(&[]), g.std(true).double_value(&[]));
        assert!((m - 1.0).abs() < 0.01 && (s - 0.02).abs() < 0.01, "bn mean {m} std {s}");
        assert_eq!(v["main.1.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn sizes_conditional_and_spectral() {
        for size in [16, 32] {
            let cfg = DcganConfig {
                image_size: size,
                num_classes: 10,
                d_norm: Norm::Spectral,
                ..DcganConfig::tiny()
            };
            let (gvs, dvs) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
            let g = Generator::new(&gvs.root(), &cfg).unwrap();
            let d = Discriminator::new(&dvs.root(), &cfg).unwrap();
            let z = Tensor::randn([3, 8, 1, 1], (Kind::Float, Device::Cpu));
            let y = Tensor::from_slice(&[0i64, 9, 4]);
            let x = g.forward_t(&z, Some(&y), true).unwrap();
            assert_eq!(x.size(), [3, 3, size, size]);
            assert_eq!(d.forward_t(&x, Some(&y), true).unwrap().size(), [3]);
            assert!(dvs.variables().contains_key("main.0.weight_orig"));
            assert!(!dvs.variables().keys().any(|k| k.contains("running")));
            assert_eq!(d.sigmas().unwrap().len() as i64, cfg.blocks().unwrap() + 1);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cfg = DcganConfig { num_classes: 10, ..DcganConfig::tiny() };
        let vs = VarStore::new(Device::Cpu);
        let g = Generator::new(&vs.root(), &cfg).unwrap();
        let z = Tensor::zeros([2, 8, 1, 1], (Kind::Float, Device::Cpu));
        let e = g.forward_t(&z, None, false).err().unwrap().to_string();
        assert!(e.contains("conditional"), "{e}");
        let e = g.forward_t(&z, Some(&Tensor::from_slice(&[0i64, 10])), false).err().unwrap().to_string();
        assert!(e.contains("0..10"), "{e}");
        let e = g
            .forward_t(&Tensor::zeros([2, 7], (Kind::Float, Device::Cpu)), None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("(B, 8, 1, 1)"), "{e}");
        let vs = VarStore::new(Device::Cpu);
        let d = Discriminator::new(&vs.root(), &DcganConfig::tiny()).unwrap();
        let e = d
            .forward_t(&Tensor::zeros([2, 1, 16, 16], (Kind::Float, Device::Cpu)), None, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("(B, 3, 16, 16)"), "{e}");
        let bad = DcganConfig { image_size: 28, ..DcganConfig::tiny() };
        assert!(Generator::new(&VarStore::new(Device::Cpu).root(), &bad).is_err());
    }
}
