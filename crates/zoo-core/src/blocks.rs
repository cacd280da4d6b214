//! The building blocks that diffusers' UNets and autoencoders share, written once: the
//! activation of `act_fn`, `ResnetBlock2D`, `Attention`, `Downsample2D`, `Upsample2D` and
//! `UNetMidBlock2D`. zoo-diffusion's UNet2DModel and UNet2DConditionModel and zoo-vae's
//! AutoencoderKL are built from them, as diffusers builds its models from the same classes.
//!
//! Reference: diffusers 0.42 `models/resnet.py` (ResnetBlock2D), `models/attention_processor.py`
//! (`Attention` run by `AttnProcessor2_0`), `models/downsampling.py`, `models/upsampling.py`,
//! `models/unets/unet_2d_blocks.py` (UNetMidBlock2D). Path segments are diffusers' attribute
//! names (`norm1`, `conv_shortcut`, `to_out.0`, `downsamplers.0.conv`, ...), so checkpoints load
//! 1:1.
use tch::{nn, Kind, Tensor};

use crate::layers::{Conv2d, GroupNorm, Linear};
use crate::{Error, Result};

/// The nonlinearity of a config's `act_fn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Silu,
    Mish,
    Gelu,
    Relu,
}

impl Act {
    pub fn parse(s: &str) -> Result<Act> {
        match s {
            "silu" | "swish" => Ok(Act::Silu),
            "mish" => Ok(Act::Mish),
            "gelu" => Ok(Act::Gelu),
            "relu" => Ok(Act::Relu),
            _ => Err(Error::Config(format!("act_fn '{s}' is not supported (silu, swish, mish, gelu, relu)"))),
        }
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::Silu => x.f_silu()?,
            Act::Mish => x.f_mish()?,
            Act::Gelu => x.f_gelu("none")?,
            Act::Relu => x.f_relu()?,
        })
    }
}

/// What every resnet of a model shares.
#[derive(Debug, Clone, Copy)]
pub struct ResnetOpts {
    /// `temb_channels`: the time embedding's width, None for the autoencoder's resnets.
    pub temb: Option<i64>,
    pub groups: i64,
    pub eps: f64,
    pub act: Act,
    /// `time_embedding_norm == "scale_shift"`: the embedding scales and shifts the second norm.
    pub scale_shift: bool,
    pub dropout: f64,
    pub output_scale_factor: f64,
}

impl ResnetOpts {
    /// The autoencoder's resnets: no time embedding, no dropout, output scale 1.
    pub fn plain(groups: i64, eps: f64, act: Act) -> Self {
        ResnetOpts {
            temb: None,
            groups,
            eps,
            act,
            scale_shift: false,
            dropout: 0.0,
            output_scale_factor: 1.0,
        }
    }
}

/// ResnetBlock2D: GroupNorm, act, conv, + time embedding (added, or as scale and shift of the
/// second norm), GroupNorm, act, dropout, conv; a 1x1 shortcut when the channels change; the
/// sum divided by `output_scale_factor`.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    o: ResnetOpts,
}

impl ResnetBlock2D {
    pub fn new(p: nn::Path, cin: i64, cout: i64, o: &ResnetOpts) -> Result<Self> {
        let temb_out = if o.scale_shift { 2 * cout } else { cout };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::new(&p / "norm1", o.groups, cin, o.eps)?,
            conv1: Conv2d::new(&p / "conv1", cin, cout, 3, 1, 1)?,
            time_emb_proj: match o.temb {
                Some(t) => Some(Linear::new(&p / "time_emb_proj", t, temb_out)?),
                None => None,
            },
            norm2: GroupNorm::new(&p / "norm2", o.groups, cout, o.eps)?,
            conv2: Conv2d::new(&p / "conv2", cout, cout, 3, 1, 1)?,
            conv_shortcut: if cin != cout {
                Some(Conv2d::new(&p / "conv_shortcut", cin, cout, 1, 1, 0)?)
            } else {
                None
            },
            o: *o,
        })
    }

    /// Shapes: x (B, Cin, H, W), temb (B, T) -> (B, Cout, H, W). `temb` is ignored by a block
    /// made without a time embedding.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let act = self.o.act;
        let h = self.conv1.forward(&act.apply(&self.norm1.forward(x)?)?)?;
        let t = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(proj.forward(&act.apply(t)?)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?),
            _ => None,
        };
        let h = match t {
            Some(t) if self.o.scale_shift => {
                let parts = t.f_chunk(2, 1)?;
                self.norm2.forward(&h)?.f_mul(&parts[0].f_add_scalar(1.0)?)?.f_add(&parts[1])?
            }
            None if self.o.scale_shift => {
                return Err(Error::Shape("a scale-shift resnet needs a time embedding".into()))
            }
            Some(t) => self.norm2.forward(&h.f_add(&t)?)?,
            None => self.norm2.forward(&h)?,
        };
        let h = act.apply(&h)?.f_dropout(self.o.dropout, train)?;
        let h = self.conv2.forward(&h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.shallow_clone(),
        };
        let out = skip.f_add(&h)?;
        Ok(if self.o.output_scale_factor == 1.0 {
            out
        } else {
            out.f_div_scalar(self.o.output_scale_factor)?
        })
    }
}

/// diffusers' `Attention`: multi-head scaled dot-product attention over a sequence, as self- or
/// cross-attention (`context`), and over the pixels of an image (an input of (B, C, H, W) is
/// read as H*W tokens, optionally group-normed first, with the residual connection and
/// `rescale_output_factor` of the UNet and autoencoder attention blocks).
#[derive(Debug)]
pub struct Attention {
    group_norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    residual_connection: bool,
    rescale_output_factor: f64,
}

impl Attention {
    /// The attention of transformer blocks: `heads` x `dim_head` wide, projections without bias
    /// unless `bias`, keys and values from `cross_attention_dim` features when given.
    /// Shapes: (B, T, query_dim), context (B, S, cross_attention_dim) -> (B, T, query_dim).
    pub fn new(
        p: nn::Path,
        query_dim: i64,
        heads: i64,
        dim_head: i64,
        cross_attention_dim: Option<i64>,
        bias: bool,
    ) -> Result<Self> {
        if heads < 1 || dim_head < 1 {
            return Err(Error::Config(format!("attention with {heads} heads of width {dim_head}")));
        }
        let inner = heads * dim_head;
        let kv = cross_attention_dim.unwrap_or(query_dim);
        Ok(Attention {
            group_norm: None,
            to_q: Linear::with_bias(&p / "to_q", query_dim, inner, bias)?,
            to_k: Linear::with_bias(&p / "to_k", kv, inner, bias)?,
            to_v: Linear::with_bias(&p / "to_v", kv, inner, bias)?,
            to_out: Linear::new(&p / "to_out" / 0, inner, query_dim)?,
            heads,
            residual_connection: false,
            rescale_output_factor: 1.0,
        })
    }

    /// The self-attention over pixels of UNet2DModel's attention blocks, the mid blocks and the
    /// autoencoder: heads of `head_dim` channels, a group norm when `groups` is given, biased
    /// projections, the residual added and the sum divided by `rescale_output_factor`.
    /// Shapes: (B, C, H, W) -> (B, C, H, W).
    pub fn spatial(
        p: nn::Path,
        channels: i64,
        head_dim: i64,
        groups: Option<i64>,
        eps: f64,
        rescale_output_factor: f64,
    ) -> Result<Self> {
        if head_dim <= 0 || channels % head_dim != 0 {
            return Err(Error::Config(format!(
                "attention_head_dim: {head_dim} does not divide {channels} channels"
            )));
        }
        let group_norm = match groups {
            Some(g) => Some(GroupNorm::new(&p / "group_norm", g, channels, eps)?),
            None => None,
        };
        let mut a = Self::new(p, channels, channels / head_dim, head_dim, None, true)?;
        a.group_norm = group_norm;
        a.residual_connection = true;
        a.rescale_output_factor = rescale_output_factor;
        Ok(a)
    }

    /// Shapes: (B, T, C) or (B, C, H, W), context (B, S, D) -> the input's shape.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let size = x.size();
        let normed = match &self.group_norm {
            Some(g) => g.forward(x)?,
            None => x.shallow_clone(),
        };
        let seq = match *size.as_slice() {
            [b, c, h, w] => normed.f_view([b, c, h * w])?.f_transpose(1, 2)?, // (B, HW, C)
            [_, _, _] => normed,
            _ => {
                return Err(Error::Shape(format!("attention takes (B, T, C) or (B, C, H, W), got {size:?}")))
            }
        };
        let ctx = context.unwrap_or(&seq);
        let q = self.to_q.forward(&seq)?;
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        let (b, t, inner) = q.size3()?;
        let dh = inner / self.heads;
        let split = |y: &Tensor| -> Result<Tensor> {
            let s = y.size()[1];
            Ok(y.f_view([b, s, self.heads, dh])?.f_transpose(1, 2)?) // (B, nh, S, hd)
        };
        let a = Tensor::f_scaled_dot_product_attention::<Tensor>(
            &split(&q)?,
            &split(&k)?,
            &split(&v)?,
            None,
            0.0,
            false,
            None,
            false,
        )?;
        let a = a.f_transpose(1, 2)?.f_reshape([b, t, inner])?;
        let out = self.to_out.forward(&a)?;
        let out = match *size.as_slice() {
            [b, c, h, w] => out.f_transpose(1, 2)?.f_reshape([b, c, h, w])?,
            _ => out,
        };
        let out = if self.residual_connection { out.f_add(x)? } else { out };
        Ok(if self.rescale_output_factor == 1.0 {
            out
        } else {
            out.f_div_scalar(self.rescale_output_factor)?
        })
    }
}

/// A stride-2 3x3 conv; with `padding` 0 the input is first padded on the right and bottom
/// only (as diffusers does, so that odd and even sizes halve alike).
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    padding: i64,
}

impl Downsample2D {
    pub fn new(p: nn::Path, channels: i64, padding: i64) -> Result<Self> {
        Ok(Downsample2D { conv: Conv2d::new(&p / "conv", channels, channels, 3, 2, padding)?, padding })
    }

    /// Shapes: (B, C, H, W) -> (B, C, H/2, W/2).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.padding == 0 {
            self.conv.forward(&x.f_constant_pad_nd([0, 1, 0, 1])?)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour 2x upsampling, then a 3x3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(p: nn::Path, channels: i64) -> Result<Self> {
        Ok(Upsample2D { conv: Conv2d::new(&p / "conv", channels, channels, 3, 1, 1)? })
    }

    /// Shapes: (B, C, H, W) -> (B, C, 2H, 2W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.size4()?;
        // diffusers upsamples bf16 in f32 (older PyTorch had no bf16 nearest kernel); the
        // values are the same either way, the round trip keeps the kernels' order of work.
        let kind = x.kind();
        let up = if kind == Kind::BFloat16 { x.f_to_kind(Kind::Float)? } else { x.shallow_clone() };
        let up = up.f_upsample_nearest2d([h * 2, w * 2], 2.0, 2.0)?.f_to_kind(kind)?;
        self.conv.forward(&up)
    }
}

/// UNetMidBlock2D: resnet, self-attention over the pixels (unless `add_attention` is false),
/// resnet.
#[derive(Debug)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<Attention>,
}

impl UNetMidBlock2D {
    /// `head_dim` None: one head over all channels. `attn_groups`: diffusers'
    /// `attn_groups` (None falls back to the resnets' groups for "default" resnets and to no
    /// norm for scale-shift ones). The attention's output is divided by the resnets'
    /// `output_scale_factor`, as in diffusers.
    pub fn new(
        p: nn::Path,
        c: i64,
        add_attention: bool,
        head_dim: Option<i64>,
        attn_groups: Option<i64>,
        ro: &ResnetOpts,
    ) -> Result<Self> {
        let resnets = vec![
            ResnetBlock2D::new(&p / "resnets" / 0, c, c, ro)?,
            ResnetBlock2D::new(&p / "resnets" / 1, c, c, ro)?,
        ];
        let groups = attn_groups.or((!ro.scale_shift).then_some(ro.groups));
        let attention = if add_attention {
            let hd = head_dim.unwrap_or(c);
            Some(Attention::spatial(&p / "attentions" / 0, c, hd, groups, ro.eps, ro.output_scale_factor)?)
        } else {
            None
        };
        Ok(UNetMidBlock2D { resnets, attention })
    }

    /// Shapes: (B, C, H, W) -> (B, C, H, W).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, temb, train)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h, None)?;
        }
        self.resnets[1].forward(&h, temb, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    fn close(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn attention_matches_the_written_out_softmax() {
        let vs = VarStore::new(Device::Cpu);
        let a = Attention::new(vs.root() / "a", 8, 2, 3, Some(5), false).unwrap();
        let x = Tensor::randn([2, 4, 8], (Kind::Float, Device::Cpu));
        let ctx = Tensor::randn([2, 6, 5], (Kind::Float, Device::Cpu));
        let y = a.forward(&x, Some(&ctx)).unwrap();
        // By hand: per head, softmax(q k^T / sqrt(3)) v.
        let q = x.matmul(&a.to_q.weight.tr()).view([2, 4, 2, 3]).transpose(1, 2);
        let k = ctx.matmul(&a.to_k.weight.tr()).view([2, 6, 2, 3]).transpose(1, 2);
        let v = ctx.matmul(&a.to_v.weight.tr()).view([2, 6, 2, 3]).transpose(1, 2);
        let p = (q.matmul(&k.transpose(2, 3)) / 3f64.sqrt()).softmax(-1, Kind::Float);
        let o = p.matmul(&v).transpose(1, 2).reshape([2, 4, 6]);
        let want = o.matmul(&a.to_out.weight.tr()) + a.to_out.bias.as_ref().unwrap();
        assert!(close(&y, &want) < 1e-5);
        assert!(a.to_q.bias.is_none() && vs.variables().contains_key("a.to_out.0.bias"));
    }

    #[test]
    fn spatial_attention_is_residual_and_named_as_diffusers() {
        let vs = VarStore::new(Device::Cpu);
        let a = Attention::spatial(vs.root() / "attn", 8, 4, Some(2), 1e-6, 2.0).unwrap();
        let x = Tensor::randn([1, 8, 3, 5], (Kind::Float, Device::Cpu));
        let y = a.forward(&x, None).unwrap();
        assert_eq!(y.size(), [1, 8, 3, 5]);
        // With a zero output projection the block is x / rescale.
        tch::no_grad(|| {
            for t in [&a.to_out.weight, a.to_out.bias.as_ref().unwrap()] {
                let _ = t.shallow_clone().zero_();
            }
        });
        assert!(close(&a.forward(&x, None).unwrap(), &(&x / 2.0)) < 1e-6);
        for k in ["attn.group_norm.weight", "attn.to_q.bias", "attn.to_out.0.weight"] {
            assert!(vs.variables().contains_key(k), "{k}");
        }
        assert!(Attention::spatial(vs.root() / "b", 8, 3, None, 1e-6, 1.0).is_err());
    }

    #[test]
    fn resnet_time_embedding_and_errors() {
        let vs = VarStore::new(Device::Cpu);
        let o = ResnetOpts { temb: Some(6), ..ResnetOpts::plain(2, 1e-5, Act::Silu) };
        let r = ResnetBlock2D::new(vs.root() / "r", 4, 6, &o).unwrap();
        let x = Tensor::randn([2, 4, 5, 5], (Kind::Float, Device::Cpu));
        let t = Tensor::randn([2, 6], (Kind::Float, Device::Cpu));
        let with = r.forward(&x, Some(&t), false).unwrap();
        assert_eq!(with.size(), [2, 6, 5, 5]);
        assert!(close(&with, &r.forward(&x, None, false).unwrap()) > 1e-4, "temb had no effect");
        let ss = ResnetOpts { scale_shift: true, ..o };
        let r = ResnetBlock2D::new(vs.root() / "s", 4, 4, &ss).unwrap();
        assert!(r.forward(&x, None, false).is_err());
        assert!(ResnetBlock2D::new(vs.root() / "bad", 3, 4, &o)
            .unwrap_err()
            .to_string()
            .contains("norm_num_groups"));
    }

    #[test]
    fn samplers_halve_and_double() {
        let vs = VarStore::new(Device::Cpu);
        let x = Tensor::randn([1, 2, 8, 6], (Kind::Float, Device::Cpu));
        assert_eq!(
            Downsample2D::new(vs.root() / "d0", 2, 0).unwrap().forward(&x).unwrap().size(),
            [1, 2, 4, 3]
        );
        assert_eq!(
            Downsample2D::new(vs.root() / "d1", 2, 1).unwrap().forward(&x).unwrap().size(),
            [1, 2, 4, 3]
        );
        assert_eq!(Upsample2D::new(vs.root() / "u", 2).unwrap().forward(&x).unwrap().size(), [1, 2, 16, 12]);
        let m =
            UNetMidBlock2D::new(vs.root() / "m", 4, true, None, None, &ResnetOpts::plain(2, 1e-6, Act::Silu))
                .unwrap();
        let y = Tensor::randn([1, 4, 3, 3], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward(&y, None, false).unwrap().size(), [1, 4, 3, 3]);
        assert!(vs.variables().contains_key("m.attentions.0.group_norm.bias"));
    }
}
