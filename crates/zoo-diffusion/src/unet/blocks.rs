//! The blocks of diffusers' UNet2DModel, with diffusers' attribute names as path segments:
//! ResnetBlock2D, the attention block, Downsample2D, Upsample2D, the sinusoidal `Timesteps`
//! projection and `TimestepEmbedding`, and the down / mid / up blocks built from them.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// An `nn.Linear` run by `zoo_core::ops::linear`: oneDNN's matmul for training-sized products
/// (the attention projections over B x H W tokens). Shapes: (.., in) -> (.., out).
fn linear(l: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    Ok(zoo_core::ops::linear(x, &l.ws, l.bs.as_ref())?)
}

/// The nonlinearity of the resnets and the time embedding (`act_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Silu,
    Mish,
    Gelu,
}

impl Act {
    pub fn parse(s: &str) -> Result<Act> {
        match s {
            "silu" | "swish" => Ok(Act::Silu),
            "mish" => Ok(Act::Mish),
            "gelu" => Ok(Act::Gelu),
            _ => Err(Error::Config(format!(
                "UNet config key 'act_fn': '{s}' is not one of silu, swish, mish, gelu"
            ))),
        }
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::Silu => x.f_silu()?,
            Act::Mish => x.f_mish()?,
            Act::Gelu => x.f_gelu("none")?,
        })
    }
}

fn group_norm(p: nn::Path, groups: i64, channels: i64, eps: f64) -> Result<nn::GroupNorm> {
    if groups <= 0 || channels % groups != 0 {
        return Err(Error::Config(format!(
            "UNet config key 'norm_num_groups': {groups} groups do not divide {channels} channels"
        )));
    }
    Ok(nn::group_norm(p, groups, channels, nn::GroupNormConfig { eps, ..Default::default() }))
}

/// `nn.Conv2d` (square kernel, diffusers' `weight`/`bias`) run by `zoo_core::ops::conv2d`, so
/// the 3x3 stride-1 convolutions take its Winograd path.
#[derive(Debug)]
pub struct Conv {
    conv: nn::Conv2D,
    stride: i64,
    padding: i64,
}

impl Conv {
    pub fn new(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Self {
        let conv = nn::conv2d(p, cin, cout, k, nn::ConvConfig { stride, padding, ..Default::default() });
        Conv { conv, stride, padding }
    }

    /// Shapes: (B, Cin, H, W) -> (B, Cout, H', W').
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        Ok(zoo_core::ops::conv2d(x, &self.conv.ws, self.conv.bs.as_ref(), [s, s], [p, p])?)
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Conv {
    Conv::new(p, cin, cout, k, stride, padding)
}

/// ResnetBlock2D: GroupNorm, act, conv, + time embedding (added, or as scale and shift of the
/// second norm), GroupNorm, act, dropout, conv; a 1x1 shortcut when the channels change; the
/// sum divided by `output_scale_factor`.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: nn::GroupNorm,
    conv1: Conv,
    time_emb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: Conv,
    conv_shortcut: Option<Conv>,
    scale_shift: bool,
    output_scale_factor: f64,
    dropout: f64,
    act: Act,
}

/// What every resnet of a UNet shares.
#[derive(Debug, Clone, Copy)]
pub struct ResnetOpts {
    pub temb: i64,
    pub groups: i64,
    pub eps: f64,
    pub act: Act,
    pub scale_shift: bool,
    pub dropout: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(p: nn::Path, cin: i64, cout: i64, o: &ResnetOpts) -> Result<Self> {
        let temb_out = if o.scale_shift { 2 * cout } else { cout };
        Ok(ResnetBlock2D {
            norm1: group_norm(&p / "norm1", o.groups, cin, o.eps)?,
            conv1: conv(&p / "conv1", cin, cout, 3, 1, 1),
            time_emb_proj: nn::linear(&p / "time_emb_proj", o.temb, temb_out, Default::default()),
            norm2: group_norm(&p / "norm2", o.groups, cout, o.eps)?,
            conv2: conv(&p / "conv2", cout, cout, 3, 1, 1),
            conv_shortcut: (cin != cout).then(|| conv(&p / "conv_shortcut", cin, cout, 1, 1, 0)),
            scale_shift: o.scale_shift,
            output_scale_factor: o.output_scale_factor,
            dropout: o.dropout,
            act: o.act,
        })
    }

    /// Shapes: x (B, Cin, H, W), temb (B, T) -> (B, Cout, H, W).
    pub fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv1.forward(&self.act.apply(&self.norm1.forward(x))?)?;
        let t = linear(&self.time_emb_proj, &self.act.apply(temb)?)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?;
        let h = if self.scale_shift {
            let parts = t.f_chunk(2, 1)?;
            let n = self.norm2.forward(&h);
            n.f_mul(&parts[0].f_add_scalar(1.0)?)?.f_add(&parts[1])?
        } else {
            self.norm2.forward(&h.f_add(&t)?)
        };
        let h = self.act.apply(&h)?.f_dropout(self.dropout, train)?;
        let h = self.conv2.forward(&h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.shallow_clone(),
        };
        Ok(skip.f_add(&h)?.f_div_scalar(self.output_scale_factor)?)
    }
}

/// Self-attention over the pixels (diffusers' `Attention` with a group norm, residual
/// connection and `rescale_output_factor`, as UNet2DModel builds it).
#[derive(Debug)]
pub struct Attention {
    group_norm: Option<nn::GroupNorm>,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    rescale_output_factor: f64,
}

impl Attention {
    /// `groups` None: no norm (mid blocks with scale-shift resnets).
    pub fn new(
        p: nn::Path,
        channels: i64,
        head_dim: i64,
        groups: Option<i64>,
        eps: f64,
        rescale: f64,
    ) -> Result<Self> {
        if head_dim <= 0 || channels % head_dim != 0 {
            return Err(Error::Config(format!(
                "UNet config key 'attention_head_dim': {head_dim} does not divide {channels} channels"
            )));
        }
        let lin = |name: &str| nn::linear(&p / name, channels, channels, Default::default());
        Ok(Attention {
            group_norm: match groups {
                Some(g) => Some(group_norm(&p / "group_norm", g, channels, eps)?),
                None => None,
            },
            to_q: lin("to_q"),
            to_k: lin("to_k"),
            to_v: lin("to_v"),
            to_out: nn::linear(&p / "to_out" / 0, channels, channels, Default::default()),
            heads: channels / head_dim,
            rescale_output_factor: rescale,
        })
    }

    /// Shapes: (B, C, H, W) -> (B, C, H, W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let normed = match &self.group_norm {
            Some(g) => g.forward(x),
            None => x.shallow_clone(),
        };
        let seq = normed.f_view([b, c, h * w])?.f_transpose(1, 2)?; // (B, HW, C)
        let hd = c / self.heads;
        let split = |t: Tensor| t.f_view([b, h * w, self.heads, hd])?.f_transpose(1, 2); // (B, nh, HW, hd)
        let q = split(linear(&self.to_q, &seq)?)?;
        let k = split(linear(&self.to_k, &seq)?)?;
        let v = split(linear(&self.to_v, &seq)?)?;
        let a = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)?;
        let a = a.f_transpose(1, 2)?.f_reshape([b, h * w, c])?;
        let out = linear(&self.to_out, &a)?.f_transpose(1, 2)?.f_reshape([b, c, h, w])?;
        Ok(out.f_add(x)?.f_div_scalar(self.rescale_output_factor)?)
    }
}

/// A stride-2 3x3 conv; with `padding` 0 the input is first padded on the right and bottom
/// only (as diffusers does, so that odd and even sizes halve alike).
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv,
    padding: i64,
}

impl Downsample2D {
    pub fn new(p: nn::Path, channels: i64, padding: i64) -> Self {
        Downsample2D { conv: conv(&p / "conv", channels, channels, 3, 2, padding), padding }
    }

    /// Shapes: (B, C, H, W) -> (B, C, H/2, W/2).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.padding == 0 { x.f_constant_pad_nd([0, 1, 0, 1])? } else { x.shallow_clone() };
        self.conv.forward(&x)
    }
}

/// Nearest-neighbour 2x upsampling, then a 3x3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv,
}

impl Upsample2D {
    pub fn new(p: nn::Path, channels: i64) -> Self {
        Upsample2D { conv: conv(&p / "conv", channels, channels, 3, 1, 1) }
    }

    /// Shapes: (B, C, H, W) -> (B, C, 2H, 2W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.size4()?;
        let up = x.f_upsample_nearest2d([h * 2, w * 2], 2.0, 2.0)?;
        self.conv.forward(&up)
    }
}

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

/// linear_1, act, linear_2: the MLP on the sinusoidal embedding.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: nn::Linear,
    linear_2: nn::Linear,
    act: Act,
}

impl TimestepEmbedding {
    pub fn new(p: nn::Path, cin: i64, dim: i64, act: Act) -> Self {
        TimestepEmbedding {
            linear_1: nn::linear(&p / "linear_1", cin, dim, Default::default()),
            linear_2: nn::linear(&p / "linear_2", dim, dim, Default::default()),
            act,
        }
    }

    /// Shapes: (B, cin) -> (B, dim).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(&self.linear_2, &self.act.apply(&linear(&self.linear_1, x)?)?)
    }
}

/// DownBlock2D (no attentions) or AttnDownBlock2D (an attention after each resnet).
#[derive(Debug)]
pub struct DownBlock {
    pub kind: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
    downsampler: Option<Downsample2D>,
}

/// Where a block gets its attention settings.
#[derive(Debug, Clone, Copy)]
pub struct AttnOpts {
    pub head_dim: Option<i64>,
    pub groups: i64,
    pub eps: f64,
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
        let with_attn = match kind {
            "DownBlock2D" => false,
            "AttnDownBlock2D" => true,
            other => {
                return Err(Error::Config(format!(
                    "UNet config key 'down_block_types': '{other}' is not supported (DownBlock2D, AttnDownBlock2D)"
                )))
            }
        };
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let c = if i == 0 { cin } else { cout };
            resnets.push(ResnetBlock2D::new(&p / "resnets" / i, c, cout, ro)?);
            if with_attn {
                let hd = ao.head_dim.unwrap_or(cout);
                attentions.push(Attention::new(
                    &p / "attentions" / i,
                    cout,
                    hd,
                    Some(ao.groups),
                    ao.eps,
                    1.0,
                )?);
            }
        }
        let downsampler =
            add_downsample.then(|| Downsample2D::new(&p / "downsamplers" / 0, cout, downsample_padding));
        Ok(DownBlock { kind: kind.to_string(), resnets, attentions, downsampler })
    }

    /// Shapes: (B, Cin, H, W) -> (B, Cout, H', W') and the skip outputs for the up path.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = x.shallow_clone();
        let mut skips = Vec::new();
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, temb, train)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h)?;
            }
            skips.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            skips.push(h.shallow_clone());
        }
        Ok((h, skips))
    }

    pub fn num_skips(&self) -> usize {
        self.resnets.len() + usize::from(self.downsampler.is_some())
    }
}

/// UNetMidBlock2D: resnet, attention (unless `add_attention` is false), resnet.
#[derive(Debug)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<Attention>,
}

impl MidBlock {
    pub fn new(p: nn::Path, c: i64, add_attention: bool, ro: &ResnetOpts, ao: &AttnOpts) -> Result<Self> {
        let resnets = vec![
            ResnetBlock2D::new(&p / "resnets" / 0, c, c, ro)?,
            ResnetBlock2D::new(&p / "resnets" / 1, c, c, ro)?,
        ];
        // diffusers gives the mid attention no group norm when the resnets use scale-shift.
        let groups = (!ro.scale_shift).then_some(ao.groups);
        let attention = if add_attention {
            let hd = ao.head_dim.unwrap_or(c);
            Some(Attention::new(&p / "attentions" / 0, c, hd, groups, ao.eps, ro.output_scale_factor)?)
        } else {
            None
        };
        Ok(MidBlock { resnets, attention })
    }

    /// Shapes: (B, C, H, W) -> (B, C, H, W).
    pub fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, temb, train)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.resnets[1].forward(&h, temb, train)
    }
}

/// UpBlock2D or AttnUpBlock2D: each resnet takes the running features concatenated with one
/// skip output of the down path.
#[derive(Debug)]
pub struct UpBlock {
    pub kind: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Attention>,
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
        let with_attn = match kind {
            "UpBlock2D" => false,
            "AttnUpBlock2D" => true,
            other => {
                return Err(Error::Config(format!(
                    "UNet config key 'up_block_types': '{other}' is not supported (UpBlock2D, AttnUpBlock2D)"
                )))
            }
        };
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i == layers - 1 { cin } else { cout };
            let c = if i == 0 { prev_out } else { cout };
            resnets.push(ResnetBlock2D::new(&p / "resnets" / i, c + skip, cout, ro)?);
            if with_attn {
                let hd = ao.head_dim.unwrap_or(cout);
                attentions.push(Attention::new(
                    &p / "attentions" / i,
                    cout,
                    hd,
                    Some(ao.groups),
                    ao.eps,
                    1.0,
                )?);
            }
        }
        let upsampler = add_upsample.then(|| Upsample2D::new(&p / "upsamplers" / 0, cout));
        Ok(UpBlock { kind: kind.to_string(), resnets, attentions, upsampler })
    }

    /// Shapes: (B, Cprev, H, W) and skips -> (B, Cout, H', W'). Consumes skips from the end.
    pub fn forward(&self, x: &Tensor, skips: &mut Vec<Tensor>, temb: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (i, r) in self.resnets.iter().enumerate() {
            let s = skips.pop().ok_or_else(|| Error::Input("UNet: ran out of skip connections".into()))?;
            h = r.forward(&Tensor::f_cat(&[h, s], 1)?, temb, train)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h)?;
            }
        }
        if let Some(u) = &self.upsampler {
            h = u.forward(&h)?;
        }
        Ok(h)
    }
}
