//! diffusers' `AutoencoderKL`: the KL-regularised autoencoder whose latent space latent
//! diffusion (Stable Diffusion) runs in.
//!
//! Paper: Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models"
//! (CVPR 2022), the "KL-f8" first stage.
//! Reference: diffusers 0.42 `models/autoencoders/autoencoder_kl.py` and `vae.py` (`Encoder`,
//! `Decoder`, `DiagonalGaussianDistribution`), `unets/unet_2d_blocks.py` (`DownEncoderBlock2D`,
//! `UpDecoderBlock2D`, `UNetMidBlock2D`), `resnet.py` (`ResnetBlock2D`), `downsampling.py`,
//! `upsampling.py` and `attention_processor.py` (`Attention` with `AttnProcessor2_0`).
//! Names and config keys are diffusers', so a diffusers `vae/` folder (config.json +
//! diffusion_pytorch_model.safetensors) loads 1:1 with `zoo_core::weights::load_into`.
//! Checkpoints: any diffusers AutoencoderKL in safetensors (e.g. the `vae/` of Stable Diffusion
//! 1.x/2.x, sd-vae-ft-mse, SDXL's VAE), and those `zoo vae train --preset kl-tiny` writes.
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::distributions::DiagonalGaussianDistribution;
use crate::layers::{Conv2d, GroupNorm, Linear};
use crate::{Error, Result};

/// diffusers' `resnet_eps` for the autoencoder's blocks and norms.
const EPS: f64 = 1e-6;

/// `act_fn` of the config.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Silu,
    Relu,
    Gelu,
    Mish,
}

impl Activation {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "mish" => Activation::Mish,
            _ => {
                return Err(Error::Config(format!(
                    "AutoencoderKL: act_fn '{s}' is not supported (silu, swish, relu, gelu, mish)"
                )))
            }
        })
    }

    fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Silu => x.f_silu()?,
            Activation::Relu => x.f_relu()?,
            Activation::Gelu => x.f_gelu("none")?,
            Activation::Mish => x.f_mish()?,
        })
    }
}

/// `ResnetBlock2D` without a time embedding (temb_channels=None), pre-norm, scale factor 1.
/// Shapes: (B, in, H, W) -> (B, out, H, W).
#[derive(Debug)]
struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
}

impl ResnetBlock2D {
    fn new(p: nn::Path, i: i64, o: i64, groups: i64, act: Activation) -> Result<Self> {
        Ok(ResnetBlock2D {
            norm1: GroupNorm::new(&p / "norm1", groups, i, EPS)?,
            conv1: Conv2d::new(&p / "conv1", i, o, 3, 1, 1)?,
            norm2: GroupNorm::new(&p / "norm2", groups, o, EPS)?,
            conv2: Conv2d::new(&p / "conv2", o, o, 3, 1, 1)?,
            conv_shortcut: if i != o {
                Some(Conv2d::new(&p / "conv_shortcut", i, o, 1, 1, 0)?)
            } else {
                None
            },
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.act.forward(&self.norm1.forward(x)?)?)?;
        let h = self.conv2.forward(&self.act.forward(&self.norm2.forward(&h)?)?)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.shallow_clone(),
        };
        Ok(skip.f_add(&h)?)
    }
}

/// The mid-block `Attention`: one head over all H*W positions, group norm first, residual.
/// Shapes: (B, C, H, W) -> (B, C, H, W).
#[derive(Debug)]
struct Attention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl Attention {
    fn new(p: nn::Path, c: i64, groups: i64) -> Result<Self> {
        Ok(Attention {
            group_norm: GroupNorm::new(&p / "group_norm", groups, c, EPS)?,
            to_q: Linear::new(&p / "to_q", c, c)?,
            to_k: Linear::new(&p / "to_k", c, c)?,
            to_v: Linear::new(&p / "to_v", c, c)?,
            to_out: Linear::new(&p / "to_out" / 0, c, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        let &[b, c, h, w] = size.as_slice() else {
            return Err(Error::Input(format!("attention: expected (B, C, H, W), got {size:?}")));
        };
        // (B, HW, C)
        let hs = self.group_norm.forward(x)?.f_view([b, c, h * w])?.f_transpose(1, 2)?;
        let q = self.to_q.forward(&hs)?;
        let k = self.to_k.forward(&hs)?;
        let v = self.to_v.forward(&hs)?;
        // heads = C / attention_head_dim = 1, so the scale is 1/sqrt(C). The softmax runs in f32
        // (diffusers' upcast_softmax) whatever the model's dtype.
        let scores = q.f_matmul(&k.f_transpose(1, 2)?)?.f_mul_scalar(1.0 / (c as f64).sqrt())?;
        let probs = scores.f_softmax(-1, Kind::Float)?.f_to_kind(v.kind())?;
        let out = self.to_out.forward(&probs.f_matmul(&v)?)?; // (B, HW, C)
        let out = out.f_transpose(1, 2)?.f_reshape([b, c, h, w])?;
        Ok(out.f_add(x)?)
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, (attention, resnet).
#[derive(Debug)]
struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
}

impl MidBlock {
    fn new(p: nn::Path, c: i64, groups: i64, act: Activation, attention: bool) -> Result<Self> {
        let resnets = vec![
            ResnetBlock2D::new(&p / "resnets" / 0, c, c, groups, act)?,
            ResnetBlock2D::new(&p / "resnets" / 1, c, c, groups, act)?,
        ];
        let attentions =
            if attention { vec![Attention::new(&p / "attentions" / 0, c, groups)?] } else { Vec::new() };
        Ok(MidBlock { resnets, attentions })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x)?;
        if let Some(a) = self.attentions.first() {
            h = a.forward(&h)?;
        }
        self.resnets[1].forward(&h)
    }
}

/// `DownEncoderBlock2D`: resnets, then (except in the last block) `Downsample2D` with
/// padding 0: pad right and bottom by one, 3x3 conv with stride 2. (B, in, H, W) -> (B, out, H/2, W/2).
#[derive(Debug)]
struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsample: Option<Conv2d>,
}

impl DownEncoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward(&h)?;
        }
        if let Some(conv) = &self.downsample {
            h = conv.forward(&h.f_constant_pad_nd([0, 1, 0, 1])?)?;
        }
        Ok(h)
    }
}

/// `UpDecoderBlock2D`: resnets, then (except in the last block) `Upsample2D`: nearest x2 and a
/// 3x3 conv. (B, in, H, W) -> (B, out, 2H, 2W).
#[derive(Debug)]
struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsample: Option<Conv2d>,
}

impl UpDecoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward(&h)?;
        }
        if let Some(conv) = &self.upsample {
            let size = h.size();
            let (hh, ww) = (size[2], size[3]);
            // diffusers upsamples bf16 in f32 (no bf16 nearest kernel in older PyTorch).
            let kind = h.kind();
            let up = if kind == Kind::BFloat16 { h.f_to_kind(Kind::Float)? } else { h };
            let up = up.f_upsample_nearest2d([2 * hh, 2 * ww], None, None)?.f_to_kind(kind)?;
            h = conv.forward(&up)?;
        }
        Ok(h)
    }
}

fn default_true() -> bool {
    true
}

/// The keys of diffusers' AutoencoderKL config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderKLConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    pub act_fn: String,
    pub latent_channels: i64,
    pub norm_num_groups: i64,
    pub sample_size: i64,
    /// Latents for diffusion are `(z - shift_factor) * scaling_factor`.
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// The pipelines run this VAE in f32 even when the rest is f16.
    #[serde(default = "default_true")]
    pub force_upcast: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

impl AutoencoderKLConfig {
    /// Stable Diffusion 1.x/2.x's VAE (`vae/config.json` of those repositories).
    pub fn stable_diffusion() -> Self {
        AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 512,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }

    /// Small enough for unit tests: 16x16 RGB -> 4x8x8 latents.
    pub fn tiny() -> Self {
        AutoencoderKLConfig {
            down_block_types: vec!["DownEncoderBlock2D".into(); 2],
            up_block_types: vec!["UpDecoderBlock2D".into(); 2],
            block_out_channels: vec![8, 16],
            layers_per_block: 1,
            norm_num_groups: 4,
            sample_size: 16,
            ..Self::stable_diffusion()
        }
    }

    /// Spatial downsampling factor of the latents: 2^(blocks - 1).
    pub fn downsample_factor(&self) -> i64 {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("AutoencoderKL config: {m}")));
        let n = self.block_out_channels.len();
        if n == 0 || n > 12 {
            return bad(format!("block_out_channels needs 1 to 12 entries, has {n}"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "{} down_block_types and {} up_block_types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self.down_block_types.iter().find(|t| *t != "DownEncoderBlock2D") {
            return bad(format!("down block type '{t}' is not supported (DownEncoderBlock2D)"));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return bad(format!("up block type '{t}' is not supported (UpDecoderBlock2D)"));
        }
        let sizes = [self.in_channels, self.out_channels, self.latent_channels, self.norm_num_groups];
        if sizes.iter().any(|&s| s < 1) || self.layers_per_block < 1 {
            return bad("channels, groups and layers_per_block must be at least 1".into());
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c < 1 || c % self.norm_num_groups != 0) {
            return bad(format!(
                "block channel count {c} is not a positive multiple of norm_num_groups {}",
                self.norm_num_groups
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return bad(format!("scaling_factor must be positive, got {}", self.scaling_factor));
        }
        Activation::parse(&self.act_fn)?;
        Ok(())
    }
}

/// `Encoder` with double_z: image -> posterior parameters (mean and logvar channels).
#[derive(Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

impl Encoder {
    fn new(p: nn::Path, cfg: &AutoencoderKLConfig, act: Activation) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let mut down_blocks = Vec::new();
        let mut prev = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let bp = &p / "down_blocks" / i;
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::new(&bp / "resnets" / j, if j == 0 { prev } else { out }, out, g, act)
                })
                .collect::<Result<Vec<_>>>()?;
            let downsample = if i + 1 < ch.len() {
                Some(Conv2d::new(&bp / "downsamplers" / 0 / "conv", out, out, 3, 2, 0)?)
            } else {
                None
            };
            down_blocks.push(DownEncoderBlock2D { resnets, downsample });
            prev = out;
        }
        Ok(Encoder {
            conv_in: Conv2d::new(&p / "conv_in", cfg.in_channels, ch[0], 3, 1, 1)?,
            down_blocks,
            mid_block: MidBlock::new(&p / "mid_block", prev, g, act, cfg.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", g, prev, EPS)?,
            conv_out: Conv2d::new(&p / "conv_out", prev, 2 * cfg.latent_channels, 3, 1, 1)?,
            act,
        })
    }

    /// Shapes: (B, in_channels, H, W) -> (B, 2 * latent_channels, H/f, W/f).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for b in &self.down_blocks {
            h = b.forward(&h)?;
        }
        let h = self.mid_block.forward(&h)?;
        let h = self.act.forward(&self.conv_norm_out.forward(&h)?)?;
        self.conv_out.forward(&h)
    }
}

/// `Decoder`: latents -> image.
#[derive(Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

impl Decoder {
    fn new(p: nn::Path, cfg: &AutoencoderKLConfig, act: Activation) -> Result<Self> {
        let rev: Vec<i64> = cfg.block_out_channels.iter().rev().copied().collect();
        let g = cfg.norm_num_groups;
        let mut up_blocks = Vec::new();
        let mut prev = rev[0];
        for (i, &out) in rev.iter().enumerate() {
            let bp = &p / "up_blocks" / i;
            // One resnet more than the encoder's blocks have, as in diffusers.
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::new(&bp / "resnets" / j, if j == 0 { prev } else { out }, out, g, act)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsample = if i + 1 < rev.len() {
                Some(Conv2d::new(&bp / "upsamplers" / 0 / "conv", out, out, 3, 1, 1)?)
            } else {
                None
            };
            up_blocks.push(UpDecoderBlock2D { resnets, upsample });
            prev = out;
        }
        Ok(Decoder {
            conv_in: Conv2d::new(&p / "conv_in", cfg.latent_channels, rev[0], 3, 1, 1)?,
            mid_block: MidBlock::new(&p / "mid_block", rev[0], g, act, cfg.mid_block_add_attention)?,
            up_blocks,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", g, prev, EPS)?,
            conv_out: Conv2d::new(&p / "conv_out", prev, cfg.out_channels, 3, 1, 1)?,
            act,
        })
    }

    /// Shapes: (B, latent_channels, h, w) -> (B, out_channels, h*f, w*f).
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let h = self.conv_in.forward(z)?;
        let mut h = self.mid_block.forward(&h)?;
        for b in &self.up_blocks {
            h = b.forward(&h)?;
        }
        let h = self.act.forward(&self.conv_norm_out.forward(&h)?)?;
        self.conv_out.forward(&h)
    }
}

#[derive(Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    pub cfg: AutoencoderKLConfig,
}

impl AutoencoderKL {
    pub fn new(p: nn::Path, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.validate()?;
        let act = Activation::parse(&cfg.act_fn)?;
        let l = cfg.latent_channels;
        Ok(AutoencoderKL {
            encoder: Encoder::new(&p / "encoder", cfg, act)?,
            decoder: Decoder::new(&p / "decoder", cfg, act)?,
            quant_conv: if cfg.use_quant_conv {
                Some(Conv2d::new(&p / "quant_conv", 2 * l, 2 * l, 1, 1, 0)?)
            } else {
                None
            },
            post_quant_conv: if cfg.use_post_quant_conv {
                Some(Conv2d::new(&p / "post_quant_conv", l, l, 1, 1, 0)?)
            } else {
                None
            },
            cfg: cfg.clone(),
        })
    }

    fn check_image(&self, x: &Tensor) -> Result<()> {
        let size = x.size();
        let f = self.cfg.downsample_factor();
        match size.as_slice() {
            &[_, c, h, w] if c == self.cfg.in_channels && h % f == 0 && w % f == 0 && h > 0 && w > 0 => {
                Ok(())
            }
            _ => Err(Error::Input(format!(
                "AutoencoderKL expects images (B, {}, H, W) with H and W multiples of {f}, got {size:?}",
                self.cfg.in_channels
            ))),
        }
    }

    /// q(z|x). Shapes: (B, in_channels, H, W) in [-1, 1] -> posterior over
    /// (B, latent_channels, H/f, W/f), f = 2^(blocks - 1).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        self.check_image(x)?;
        let h = self.encoder.forward(x)?;
        let moments = match &self.quant_conv {
            Some(q) => q.forward(&h)?,
            None => h,
        };
        DiagonalGaussianDistribution::from_parameters(&moments)
    }

    /// The reconstruction, unclamped. Shapes: (B, latent_channels, h, w) -> (B, out_channels, h*f, w*f).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let size = z.size();
        if size.len() != 4 || size[1] != self.cfg.latent_channels {
            return Err(Error::Input(format!(
                "AutoencoderKL expects latents (B, {}, h, w), got {size:?}",
                self.cfg.latent_channels
            )));
        }
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(z)?,
            None => z.shallow_clone(),
        };
        self.decoder.forward(&z)
    }

    /// diffusers' `forward`: encode, take the posterior mode (or a sample), decode.
    pub fn forward(&self, x: &Tensor, sample_posterior: bool) -> Result<Tensor> {
        let q = self.encode(x)?;
        let z = if sample_posterior { q.sample()? } else { q.mode() };
        self.decode(&z)
    }

    /// Latents as a diffusion model sees them: (z - shift_factor) * scaling_factor.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let shift = self.cfg.shift_factor.unwrap_or(0.0);
        Ok(z.f_sub_scalar(shift)?.f_mul_scalar(self.cfg.scaling_factor)?)
    }

    /// The inverse of [`AutoencoderKL::scale_latents`], before [`AutoencoderKL::decode`].
    pub fn unscale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let shift = self.cfg.shift_factor.unwrap_or(0.0);
        Ok(z.f_div_scalar(self.cfg.scaling_factor)?.f_add_scalar(shift)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn shapes_and_diffusers_names() {
        let vs = VarStore::new(Device::Cpu);
        let m = AutoencoderKL::new(vs.root(), &AutoencoderKLConfig::tiny()).unwrap();
        let x = Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2 - 1;
        let q = m.encode(&x).unwrap();
        assert_eq!(q.mean.size(), vec![2, 4, 8, 8]);
        assert_eq!(m.decode(&q.mode()).unwrap().size(), vec![2, 3, 16, 16]);
        assert_eq!(m.forward(&x.narrow(2, 0, 8).narrow(3, 0, 8), true).unwrap().size(), vec![2, 3, 8, 8]);
        let names = vs.variables();
        for k in [
            "encoder.down_blocks.0.downsamplers.0.conv.weight",
            "encoder.mid_block.attentions.0.to_out.0.bias",
            "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
            "decoder.up_blocks.0.upsamplers.0.conv.weight",
            "quant_conv.weight",
            "post_quant_conv.bias",
        ] {
            assert!(names.contains_key(k), "no {k}");
        }
        // As many tensors as the state_dict of diffusers' AutoencoderKL with this config.
        assert_eq!(names.len(), 124);
    }

    #[test]
    fn bad_inputs_and_configs_are_errors() {
        let vs = VarStore::new(Device::Cpu);
        let m = AutoencoderKL::new(vs.root(), &AutoencoderKLConfig::tiny()).unwrap();
        let e = m.encode(&Tensor::zeros([1, 1, 16, 16], (Kind::Float, Device::Cpu))).unwrap_err();
        assert!(e.to_string().contains("(B, 3, H, W)"), "{e}");
        assert!(m.encode(&Tensor::zeros([1, 3, 15, 16], (Kind::Float, Device::Cpu))).is_err());
        assert!(m.decode(&Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu))).is_err());
        for cfg in [
            AutoencoderKLConfig { norm_num_groups: 3, ..AutoencoderKLConfig::tiny() },
            AutoencoderKLConfig { act_fn: "tanh".into(), ..AutoencoderKLConfig::tiny() },
            AutoencoderKLConfig {
                up_block_types: vec!["UpDecoderBlock2D".into()],
                ..AutoencoderKLConfig::tiny()
            },
            AutoencoderKLConfig {
                down_block_types: vec!["CrossAttnDownBlock2D".into(); 2],
                ..AutoencoderKLConfig::tiny()
            },
        ] {
            assert!(AutoencoderKL::new(VarStore::new(Device::Cpu).root(), &cfg).is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn scaling_reads_the_config() {
        let cfg = AutoencoderKLConfig {
            scaling_factor: 0.5,
            shift_factor: Some(0.25),
            ..AutoencoderKLConfig::tiny()
        };
        let m = AutoencoderKL::new(VarStore::new(Device::Cpu).root(), &cfg).unwrap();
        let z = Tensor::from_slice(&[1.25f32]);
        assert_eq!(m.scale_latents(&z).unwrap().double_value(&[0]), 0.5);
        assert_eq!(m.unscale_latents(&m.scale_latents(&z).unwrap()).unwrap().double_value(&[0]), 1.25);
    }
}
