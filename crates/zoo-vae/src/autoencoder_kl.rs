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
use tch::{nn, Tensor};
use zoo_core::blocks::{Act, Downsample2D, ResnetBlock2D, ResnetOpts, UNetMidBlock2D, Upsample2D};
use zoo_core::layers::{Conv2d, GroupNorm};

use crate::distributions::DiagonalGaussianDistribution;
use crate::{Error, Result};

/// diffusers' `resnet_eps` for the autoencoder's blocks and norms.
const EPS: f64 = 1e-6;

fn resnets(p: &nn::Path, n: i64, cin: i64, cout: i64, o: &ResnetOpts) -> Result<Vec<ResnetBlock2D>> {
    (0..n)
        .map(|j| Ok(ResnetBlock2D::new(p / "resnets" / j, if j == 0 { cin } else { cout }, cout, o)?))
        .collect()
}

/// `DownEncoderBlock2D`: resnets, then (except in the last block) `Downsample2D` with
/// padding 0. (B, in, H, W) -> (B, out, H/2, W/2).
#[derive(Debug)]
struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsample: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward(&h, None, false)?;
        }
        if let Some(d) = &self.downsample {
            h = d.forward(&h)?;
        }
        Ok(h)
    }
}

/// `UpDecoderBlock2D`: resnets, then (except in the last block) `Upsample2D`.
/// (B, in, H, W) -> (B, out, 2H, 2W).
#[derive(Debug)]
struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsample: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward(&h, None, false)?;
        }
        if let Some(u) = &self.upsample {
            h = u.forward(&h)?;
        }
        Ok(h)
    }
}

fn default_true() -> bool {
    true
}
fn default_sample_size() -> i64 {
    32
}
fn default_scaling_factor() -> f64 {
    0.18215
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
    #[serde(default = "default_sample_size")]
    pub sample_size: i64,
    /// Latents for diffusion are `(z - shift_factor) * scaling_factor`. (SD 1.x's config.json
    /// predates this key: diffusers' default is SD's 0.18215.)
    #[serde(default = "default_scaling_factor")]
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
        Act::parse(&self.act_fn)?;
        Ok(())
    }
}

/// `Encoder` with double_z: image -> posterior parameters (mean and logvar channels).
#[derive(Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Act,
}

impl Encoder {
    fn new(p: nn::Path, cfg: &AutoencoderKLConfig, o: &ResnetOpts) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let mut down_blocks = Vec::new();
        let mut prev = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let bp = &p / "down_blocks" / i;
            let downsample = if i + 1 < ch.len() {
                Some(Downsample2D::new(&bp / "downsamplers" / 0, out, 0)?)
            } else {
                None
            };
            down_blocks.push(DownEncoderBlock2D {
                resnets: resnets(&bp, cfg.layers_per_block, prev, out, o)?,
                downsample,
            });
            prev = out;
        }
        Ok(Encoder {
            conv_in: Conv2d::new(&p / "conv_in", cfg.in_channels, ch[0], 3, 1, 1)?,
            down_blocks,
            mid_block: UNetMidBlock2D::new(
                &p / "mid_block",
                prev,
                cfg.mid_block_add_attention,
                None,
                None,
                o,
            )?,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", o.groups, prev, EPS)?,
            conv_out: Conv2d::new(&p / "conv_out", prev, 2 * cfg.latent_channels, 3, 1, 1)?,
            act: o.act,
        })
    }

    /// Shapes: (B, in_channels, H, W) -> (B, 2 * latent_channels, H/f, W/f).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for b in &self.down_blocks {
            h = b.forward(&h)?;
        }
        let h = self.mid_block.forward(&h, None, false)?;
        let h = self.act.apply(&self.conv_norm_out.forward(&h)?)?;
        Ok(self.conv_out.forward(&h)?)
    }
}

/// `Decoder`: latents -> image.
#[derive(Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Act,
}

impl Decoder {
    fn new(p: nn::Path, cfg: &AutoencoderKLConfig, o: &ResnetOpts) -> Result<Self> {
        let rev: Vec<i64> = cfg.block_out_channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut prev = rev[0];
        for (i, &out) in rev.iter().enumerate() {
            let bp = &p / "up_blocks" / i;
            let upsample =
                if i + 1 < rev.len() { Some(Upsample2D::new(&bp / "upsamplers" / 0, out)?) } else { None };
            // One resnet more than the encoder's blocks have, as in diffusers.
            up_blocks.push(UpDecoderBlock2D {
                resnets: resnets(&bp, cfg.layers_per_block + 1, prev, out, o)?,
                upsample,
            });
            prev = out;
        }
        Ok(Decoder {
            conv_in: Conv2d::new(&p / "conv_in", cfg.latent_channels, rev[0], 3, 1, 1)?,
            mid_block: UNetMidBlock2D::new(
                &p / "mid_block",
                rev[0],
                cfg.mid_block_add_attention,
                None,
                None,
                o,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", o.groups, prev, EPS)?,
            conv_out: Conv2d::new(&p / "conv_out", prev, cfg.out_channels, 3, 1, 1)?,
            act: o.act,
        })
    }

    /// Shapes: (B, latent_channels, h, w) -> (B, out_channels, h*f, w*f).
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let h = self.conv_in.forward(z)?;
        let mut h = self.mid_block.forward(&h, None, false)?;
        for b in &self.up_blocks {
            h = b.forward(&h)?;
        }
        let h = self.act.apply(&self.conv_norm_out.forward(&h)?)?;
        Ok(self.conv_out.forward(&h)?)
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
        let o = ResnetOpts::plain(cfg.norm_num_groups, EPS, Act::parse(&cfg.act_fn)?);
        let l = cfg.latent_channels;
        Ok(AutoencoderKL {
            encoder: Encoder::new(&p / "encoder", cfg, &o)?,
            decoder: Decoder::new(&p / "decoder", cfg, &o)?,
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
    use tch::{nn::VarStore, Device, Kind};

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
