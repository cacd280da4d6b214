//! The blocks of diffusers' UNets, with diffusers' attribute names as path segments: the
//! sinusoidal `Timesteps` projection and `TimestepEmbedding`, and the down / mid / up blocks
//! (DownBlock2D, AttnDownBlock2D, CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn and the up
//! mirrors), built from zoo-core's shared ResnetBlock2D, Attention and samplers and from
//! [`super::transformer::Transformer2DModel`].
use tch::{nn, Kind, Tensor};
pub use zoo_core::blocks::{Act, ResnetOpts};
use zoo_core::blocks::{Attention, Downsample2D, ResnetBlock2D, Upsample2D};
use zoo_core::layers::Linear;

use super::transformer::{Transformer2DModel, TransformerOpts};
use crate::{Error, Result};

/// The sinusoidal embedding of (fractional) timesteps, diffusers' `get_timestep_embedding`
/// with max period 10000. Shapes: (B) -> (B, dim).
pub fn timestep_embedding(t: &Tensor, dim: i64, flip_sin_to_cos: bool, freq_shift: f64) -> Result<Tensor> {
    let half = dim / 2;
    let exponent = Tensor::f_arange(half, (Kind::Float, t.device()))?
        .f_mul_scalar(-(10000f64.ln()))?
        .f_div_scalar(half as f64 - freq_shift)?;
    let freqs = exponent.f_exp()?;
    let args = t.f_to_kind(Kind::Float)?.f_unsqueeze(1)?.f_mul(&freqs.f_unsqueeze(0)?)?;
    let (sin, cos) = (args.f_sin()?, args.f_cos()?);
    let emb = if flip_sin_to_cos { Tensor::f_cat(&[cos, sin], -1)? } else { Tensor::f_cat(&[sin, cos], -1)? };
    Ok(if dim % 2 == 1 { emb.f_constant_pad_nd([0, 1, 0, 0])? } else { emb })
}

/// diffusers' `Timesteps` projection (its settings) and `TimestepEmbedding` (linear_1, act,
/// linear_2: the MLP on the sinusoidal embedding).
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    act: Act,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl TimestepEmbedding {
    /// `cin`: the sinusoid's width (the first block's channels); `dim`: the embedding's.
    pub fn new(
        p: nn::Path,
        cin: i64,
        dim: i64,
        act: Act,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: Linear::new(&p / "linear_1", cin, dim)?,
            linear_2: Linear::new(&p / "linear_2", dim, dim)?,
            act,
            flip_sin_to_cos,
            freq_shift,
        })
    }

    /// The embedding of timesteps (B) or (1) (integer or fractional, broadcast to `b`), in
    /// `kind` on `device`. Shapes: -> (B, dim).
    pub fn embed(&self, timesteps: &Tensor, b: i64, kind: Kind, device: tch::Device) -> Result<Tensor> {
        let t = timesteps.f_to_kind(Kind::Float)?.f_to_device(device)?.f_reshape([-1])?;
        let t = if t.size()[0] == b { t } else { t.f_expand([b], false)? };
        let cin = self.linear_1.weight.size()[1];
        let x = timestep_embedding(&t, cin, self.flip_sin_to_cos, self.freq_shift)?.f_to_kind(kind)?;
        Ok(self.linear_2.forward(&self.act.apply(&self.linear_1.forward(&x)?)?)?)
    }
}

/// Checks a UNet input: (B, `in_channels`, H, W) with H and W multiples of 2^`downsamples`.
/// Returns B.
pub fn check_sample(sample: &Tensor, in_channels: i64, downsamples: u32) -> Result<i64> {
    let (b, c, h, w) = sample
        .size4()
        .map_err(|_| Error::Input(format!("UNet input must be (B, C, H, W), got {:?}", sample.size())))?;
    if c != in_channels {
        return Err(Error::Input(format!("UNet input has {c} channels, the model takes {in_channels}")));
    }
    let m = 1i64 << downsamples;
    if h % m != 0 || w % m != 0 {
        return Err(Error::Input(format!("UNet input {h}x{w}: height and width must be multiples of {m}")));
    }
    Ok(b)
}

/// The attention layer that follows each resnet of a block.
#[derive(Debug)]
enum BlockAttention {
    /// AttnDownBlock2D / AttnUpBlock2D: self-attention over the pixels.
    Spatial(Attention),
    /// CrossAttnDownBlock2D / CrossAttnUpBlock2D / UNetMidBlock2DCrossAttn: a
    /// Transformer2DModel attending to the text.
    Transformer(Transformer2DModel),
}

impl BlockAttention {
    fn forward(&self, x: &Tensor, text: Option<&Tensor>) -> Result<Tensor> {
        match (self, text) {
            (BlockAttention::Spatial(a), _) => Ok(a.forward(x, None)?),
            (BlockAttention::Transformer(t), Some(text)) => t.forward(x, text),
            (BlockAttention::Transformer(_), None) => {
                Err(Error::Input("a cross-attention UNet needs encoder hidden states (the text)".into()))
            }
        }
    }
}

/// Where a block gets its attention settings.
#[derive(Debug, Clone, Copy)]
pub struct AttnOpts {
    /// Head width of the pixel self-attention (None: one head).
    pub head_dim: Option<i64>,
    pub groups: i64,
    pub eps: f64,
    /// The cross-attention blocks' settings (UNet2DConditionModel; None in UNet2DModel).
    pub transformer: Option<TransformerOpts>,
}

impl AttnOpts {
    /// The attention of a block `kind` of `role` ("down", "up", "mid"), or None for blocks
    /// without one; an error for block types this UNet cannot build.
    fn build(&self, p: nn::Path, kind: &str, role: &str, channels: i64) -> Result<Option<BlockAttention>> {
        let plain = format!("{}Block2D", capitalise(role));
        if kind == plain {
            return Ok(None);
        }
        if kind == format!("Attn{plain}") {
            let hd = self.head_dim.unwrap_or(channels);
            return Ok(Some(BlockAttention::Spatial(Attention::spatial(
                p,
                channels,
                hd,
                Some(self.groups),
                self.eps,
                1.0,
            )?)));
        }
        if kind == format!("CrossAttn{plain}") {
            return match &self.transformer {
                Some(t) => Ok(Some(BlockAttention::Transformer(Transformer2DModel::new(p, channels, t)?))),
                None => Err(Error::Config(format!(
                    "UNet config key '{role}_block_types': '{kind}' needs a text-conditioned UNet \
                     (UNet2DConditionModel with cross_attention_dim)"
                ))),
            };
        }
        let mut known = vec![plain.clone(), format!("Attn{plain}")];
        if self.transformer.is_some() {
            known.push(format!("CrossAttn{plain}"));
        }
        Err(Error::Config(format!(
            "UNet config key '{role}_block_types': '{kind}' is not supported ({})",
            known.join(", ")
        )))
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// DownBlock2D (no attentions), AttnDownBlock2D or CrossAttnDownBlock2D (an attention after
/// each resnet).
#[derive(Debug)]
pub struct DownBlock {
    pub kind: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<BlockAttention>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: nn::Path,
        kind: &str,
        layers: usize,
        cin: i64,
        cout: i64,
        add_downsample: bool,
        downsample_padding: i64,
        ro: &ResnetOpts,
        ao: &AttnOpts,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let c = if i == 0 { cin } else { cout };
            resnets.push(ResnetBlock2D::new(&p / "resnets" / i, c, cout, ro)?);
            attentions.extend(ao.build(&p / "attentions" / i, kind, "down", cout)?);
        }
        let downsampler = if add_downsample {
            Some(Downsample2D::new(&p / "downsamplers" / 0, cout, downsample_padding)?)
        } else {
            None
        };
        Ok(DownBlock { kind: kind.to_string(), resnets, attentions, downsampler })
    }

    /// Shapes: (B, Cin, H, W), text (B, S, D) -> (B, Cout, H', W') and the skip outputs for
    /// the up path.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        text: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = x.shallow_clone();
        let mut skips = Vec::new();
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, Some(temb), train)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h, text)?;
            }
            skips.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            skips.push(h.shallow_clone());
        }
        Ok((h, skips))
    }
}

/// The middle of a UNet: UNetMidBlock2D (resnet, pixel self-attention, resnet) or
/// UNetMidBlock2DCrossAttn (resnet, then a Transformer2DModel and a resnet per layer).
#[derive(Debug)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<BlockAttention>,
}

impl MidBlock {
    /// `kind`: diffusers' `mid_block_type`. `attn_groups`: the norm groups of the pixel
    /// attention (see [`zoo_core::blocks::UNetMidBlock2D`]).
    pub fn new(
        p: nn::Path,
        kind: &str,
        c: i64,
        add_attention: bool,
        attn_groups: Option<i64>,
        ro: &ResnetOpts,
        ao: &AttnOpts,
    ) -> Result<Self> {
        let mut resnets = vec![ResnetBlock2D::new(&p / "resnets" / 0, c, c, ro)?];
        let mut attentions = Vec::new();
        match (kind, &ao.transformer) {
            ("UNetMidBlock2D", _) => {
                if add_attention {
                    let groups = attn_groups.or((!ro.scale_shift).then_some(ro.groups));
                    let hd = ao.head_dim.unwrap_or(c);
                    let a = Attention::spatial(
                        &p / "attentions" / 0,
                        c,
                        hd,
                        groups,
                        ro.eps,
                        ro.output_scale_factor,
                    )?;
                    attentions.push(BlockAttention::Spatial(a));
                }
            }
            ("UNetMidBlock2DCrossAttn", Some(t)) => {
                attentions.push(BlockAttention::Transformer(Transformer2DModel::new(
                    &p / "attentions" / 0,
                    c,
                    t,
                )?));
            }
            (other, _) => {
                let known = if ao.transformer.is_some() {
                    "UNetMidBlock2D, UNetMidBlock2DCrossAttn"
                } else {
                    "UNetMidBlock2D"
                };
                return Err(Error::Config(format!(
                    "UNet config key 'mid_block_type': '{other}' is not supported ({known})"
                )));
            }
        }
        resnets.push(ResnetBlock2D::new(&p / "resnets" / 1, c, c, ro)?);
        Ok(MidBlock { resnets, attentions })
    }

    /// Shapes: (B, C, H, W), text (B, S, D) -> (B, C, H, W).
    pub fn forward(&self, x: &Tensor, temb: &Tensor, text: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, Some(temb), train)?;
        if let Some(a) = self.attentions.first() {
            h = a.forward(&h, text)?;
        }
        Ok(self.resnets[1].forward(&h, Some(temb), train)?)
    }
}

/// UpBlock2D, AttnUpBlock2D or CrossAttnUpBlock2D: each resnet takes the running features
/// concatenated with one skip output of the down path.
#[derive(Debug)]
pub struct UpBlock {
    pub kind: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<BlockAttention>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: nn::Path,
        kind: &str,
        layers: usize,
        cin: i64,
        prev_out: i64,
        cout: i64,
        add_upsample: bool,
        ro: &ResnetOpts,
        ao: &AttnOpts,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { cin } else { cout };
            let c = if i == 0 { prev_out } else { cout };
            resnets.push(ResnetBlock2D::new(&p / "resnets" / i, c + skip, cout, ro)?);
            attentions.extend(ao.build(&p / "attentions" / i, kind, "up", cout)?);
        }
        let upsampler = if add_upsample { Some(Upsample2D::new(&p / "upsamplers" / 0, cout)?) } else { None };
        Ok(UpBlock { kind: kind.to_string(), resnets, attentions, upsampler })
    }

    /// Shapes: (B, Cprev, H, W) and skips, text (B, S, D) -> (B, Cout, H', W'). Consumes skips
    /// from the end.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        text: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (i, r) in self.resnets.iter().enumerate() {
            let s = skips.pop().ok_or_else(|| Error::Input("UNet: ran out of skip connections".into()))?;
            h = r.forward(&Tensor::f_cat(&[h, s], 1)?, Some(temb), train)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h, text)?;
            }
        }
        if let Some(u) = &self.upsampler {
            h = u.forward(&h)?;
        }
        Ok(h)
    }
}
