//! diffusers' `Transformer2DModel` for continuous (image) inputs, as the cross-attention blocks of
//! UNet2DConditionModel use it: group norm, `proj_in` (a 1x1 conv, or a linear layer when
//! `use_linear_projection`), `BasicTransformerBlock`s (self-attention, cross-attention to the
//! text, GEGLU feed-forward, each pre-layer-normed and residual), `proj_out`, plus the input.
//!
//! Reference: diffusers 0.42 `models/transformers/transformer_2d.py`, `models/attention.py`
//! (BasicTransformerBlock, FeedForward, GEGLU in `activations.py`). Latent diffusion: Rombach et
//! al. 2022, the "SpatialTransformer" of the original repository.
use tch::{nn, Tensor};
use zoo_core::blocks::Attention;
use zoo_core::layers::{Conv2d, GroupNorm, LayerNorm, Linear};

use crate::Result;

/// `FeedForward` with `activation_fn="geglu"`: `net.0.proj` makes hidden and gate halves,
/// hidden * gelu(gate), then `net.2` back to `dim` (`net.1` is dropout, no weights).
#[derive(Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(p: nn::Path, dim: i64) -> Result<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj: Linear::new(&p / "net" / 0 / "proj", dim, 2 * inner)?,
            out: Linear::new(&p / "net" / 2, inner, dim)?,
        })
    }

    /// Shapes: (B, T, dim) -> (B, T, dim).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?.f_chunk(2, -1)?;
        Ok(self.out.forward(&h[0].f_mul(&h[1].f_gelu("none")?)?)?)
    }
}

/// `BasicTransformerBlock` with layer norms: x + attn1(norm1(x)) (self-attention, or attention
/// to the text alone when `only_cross_attention`), + attn2(norm2(x), text), + ff(norm3(x)).
#[derive(Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    attn1_to_text: bool,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(p: nn::Path, dim: i64, heads: i64, dim_head: i64, o: &TransformerOpts) -> Result<Self> {
        let ctx = o.cross_attention_dim;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::new(&p / "norm1", dim, 1e-5)?,
            attn1: Attention::new(
                &p / "attn1",
                dim,
                heads,
                dim_head,
                o.only_cross_attention.then_some(ctx),
                false,
            )?,
            attn1_to_text: o.only_cross_attention,
            norm2: LayerNorm::new(&p / "norm2", dim, 1e-5)?,
            attn2: Attention::new(&p / "attn2", dim, heads, dim_head, Some(ctx), false)?,
            norm3: LayerNorm::new(&p / "norm3", dim, 1e-5)?,
            ff: FeedForward::new(&p / "ff", dim)?,
        })
    }

    /// Shapes: (B, T, dim), text (B, S, cross_attention_dim) -> (B, T, dim).
    fn forward(&self, x: &Tensor, text: &Tensor) -> Result<Tensor> {
        let n = self.norm1.forward(x)?;
        let h = x.f_add(&self.attn1.forward(&n, self.attn1_to_text.then_some(text))?)?;
        let h = h.f_add(&self.attn2.forward(&self.norm2.forward(&h)?, Some(text))?)?;
        Ok(h.f_add(&self.ff.forward(&self.norm3.forward(&h)?)?)?)
    }
}

/// What the cross-attention blocks of one level share.
#[derive(Debug, Clone, Copy)]
pub struct TransformerOpts {
    /// Attention heads (diffusers' `num_attention_heads`, which SD configs call
    /// `attention_head_dim`); each head is channels / heads wide.
    pub heads: i64,
    pub cross_attention_dim: i64,
    /// `transformer_layers_per_block`.
    pub layers: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
    pub groups: i64,
}

/// A 1x1 conv or a linear layer, per `use_linear_projection`.
#[derive(Debug)]
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

impl Proj {
    fn new(p: nn::Path, cin: i64, cout: i64, linear: bool) -> Result<Self> {
        Ok(if linear {
            Proj::Linear(Linear::new(p, cin, cout)?)
        } else {
            Proj::Conv(Conv2d::new(p, cin, cout, 1, 1, 0)?)
        })
    }
}

/// `Transformer2DModel` over an image's pixels. Shapes: (B, C, H, W), text (B, S, D) -> (B, C, H, W).
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Proj,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
}

impl Transformer2DModel {
    pub fn new(p: nn::Path, channels: i64, o: &TransformerOpts) -> Result<Self> {
        if o.heads < 1 || channels % o.heads != 0 {
            return Err(crate::Error::Config(format!(
                "attention_head_dim: {} heads do not divide {channels} channels",
                o.heads
            )));
        }
        let dim_head = channels / o.heads;
        let inner = o.heads * dim_head;
        let lin = o.use_linear_projection;
        Ok(Transformer2DModel {
            norm: GroupNorm::new(&p / "norm", o.groups, channels, 1e-6)?,
            proj_in: Proj::new(&p / "proj_in", channels, inner, lin)?,
            transformer_blocks: (0..o.layers)
                .map(|i| {
                    BasicTransformerBlock::new(&p / "transformer_blocks" / i, inner, o.heads, dim_head, o)
                })
                .collect::<Result<_>>()?,
            proj_out: Proj::new(&p / "proj_out", inner, channels, lin)?,
        })
    }

    pub fn forward(&self, x: &Tensor, text: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let n = self.norm.forward(x)?;
        // (B, HW, inner): the 1x1 conv runs before the reshape, the linear layer after it.
        let tokens = |t: &Tensor| -> Result<Tensor> {
            let ch = t.size()[1];
            Ok(t.f_permute([0, 2, 3, 1])?.f_reshape([b, h * w, ch])?)
        };
        let mut s = match &self.proj_in {
            Proj::Conv(conv) => tokens(&conv.forward(&n)?)?,
            Proj::Linear(l) => l.forward(&tokens(&n)?)?,
        };
        for blk in &self.transformer_blocks {
            s = blk.forward(&s, text)?;
        }
        let image = |t: &Tensor| -> Result<Tensor> {
            let ch = t.size()[2];
            Ok(t.f_reshape([b, h, w, ch])?.f_permute([0, 3, 1, 2])?.f_contiguous()?)
        };
        let out = match &self.proj_out {
            Proj::Conv(conv) => conv.forward(&image(&s)?)?,
            Proj::Linear(l) => image(&l.forward(&s)?)?,
        };
        debug_assert_eq!(out.size()[1], c);
        Ok(out.f_add(x)?)
    }
}
