//! Glow-TTS (Kim, Kim, Kong & Yoon 2020, "Glow-TTS: A Generative Flow for Text-to-Speech via
//! Monotonic Alignment Search"), after the reference jaywalnut310/glow-tts (`models.py`,
//! `modules.py`, `attentions.py`); our own code and checkpoints.
//!
//! - [`TextEncoder`]: symbol embedding, a conv pre-net, transformer layers, and per token the
//!   mean (and log-std) of a Gaussian over mel frames (`proj_m`, `proj_s`) plus a log-duration
//!   from the [`DurationPredictor`] (on the encoder output with its gradient stopped);
//! - [`FlowDecoder`]: mel frames (B, n_mels, T) -> z through `n_blocks_dec` steps of
//!   [`ActNorm`], [`Invertible1x1Conv`] and an [`AffineCoupling`] whose conditioner is a
//!   WaveNet-like stack ([`CouplingNet`]), after squeezing pairs of frames into channels;
//! - training ([`GlowTts::loss`]): z of the real mel, the log-likelihood of every frame under
//!   every token's Gaussian, monotonic alignment search ([`super::mas`]) for the best hard
//!   alignment, then the exact negative log-likelihood of the mel under that alignment (the
//!   flow's log-determinant included) and an L2 loss on log-durations;
//! - inference ([`GlowTts::infer`]): durations from the predictor (times `length_scale`,
//!   rounded up), each token's Gaussian repeated over its frames, z = mean + noise_scale * std *
//!   eps, and the decoder run backwards.
//!
//! Padding: every tensor carries a mask (B, 1, T); the decoder keeps padded frames at zero and
//! counts only real frames in its log-determinant, so a batch of different lengths gives each
//! example the likelihood it would have alone.
//!
//! Departures from the reference, with reasons:
//! - the encoder's attention has no relative position embeddings (the reference's window of 4):
//!   order comes from the conv pre-net and the FFN's kernel-3 convs. Simpler, and our sentences
//!   are short;
//! - the 1x1 convs of the decoder mix all channels (zoo-flow's [`Invertible1x1Conv`], LU
//!   parameterised) rather than groups of 4 (`InvConvNear`): with 80 mels x 2 that is a 160 x 160
//!   matrix per step, cheap at this size;
//! - no dropout inside the decoder's couplings (the reference's p_dropout_dec 0.05), as
//!   zoo-flow's coupling interface has no training flag; the encoder keeps its dropout;
//! - squeezing orders the channels as zoo-flow's [`squeeze`] (frame-major within a channel), a
//!   fixed permutation of the reference's.
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::mas::{durations, monotonic_alignment_search};
use crate::layers::{squeeze, unsqueeze, ActNorm, AffineCoupling, Conditioner, Flow, Invertible1x1Conv};
use crate::{Error, Result};

/// The `model` section of a Glow-TTS config (jaywalnut310/glow-tts `configs/base.json` key
/// names, the subset this model uses), plus the vocabulary and mel sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlowTtsConfig {
    /// Symbols (the embedding's rows).
    pub n_vocab: i64,
    /// Mel bands.
    pub out_channels: i64,
    pub hidden_channels: i64,
    /// Width of the encoder's feed-forward layers.
    pub filter_channels: i64,
    /// Width of the duration predictor.
    pub filter_channels_dp: i64,
    /// Kernel of the encoder's feed-forward convs and the duration predictor.
    pub kernel_size: i64,
    pub p_dropout: f64,
    pub n_layers_enc: i64,
    pub n_heads: i64,
    /// Conv layers of the encoder's pre-net (0: none).
    #[serde(default = "default_prenet_layers")]
    pub prenet_layers: i64,
    pub n_blocks_dec: i64,
    pub hidden_channels_dec: i64,
    pub kernel_size_dec: i64,
    pub dilation_rate: i64,
    /// Layers of each coupling's WaveNet-like stack.
    pub n_block_layers: i64,
    /// Frames squeezed into channels before the decoder's flow.
    pub n_sqz: i64,
    /// Predict only the means; the log-std is 0.
    pub mean_only: bool,
}

fn default_prenet_layers() -> i64 {
    3
}

impl GlowTtsConfig {
    /// The reference's base model (about 28M parameters with 80 mels).
    pub fn base(n_vocab: i64, out_channels: i64) -> Self {
        GlowTtsConfig {
            n_vocab,
            out_channels,
            hidden_channels: 192,
            filter_channels: 768,
            filter_channels_dp: 256,
            kernel_size: 3,
            p_dropout: 0.1,
            n_layers_enc: 6,
            n_heads: 2,
            prenet_layers: 3,
            n_blocks_dec: 12,
            hidden_channels_dec: 192,
            kernel_size_dec: 5,
            dilation_rate: 1,
            n_block_layers: 4,
            n_sqz: 2,
            mean_only: true,
        }
    }

    /// A model for tests: every part present, a few thousand parameters.
    pub fn tiny(n_vocab: i64, out_channels: i64) -> Self {
        GlowTtsConfig {
            n_vocab,
            out_channels,
            hidden_channels: 8,
            filter_channels: 16,
            filter_channels_dp: 8,
            kernel_size: 3,
            p_dropout: 0.0,
            n_layers_enc: 1,
            n_heads: 2,
            prenet_layers: 1,
            n_blocks_dec: 2,
            hidden_channels_dec: 8,
            kernel_size_dec: 3,
            dilation_rate: 2,
            n_block_layers: 2,
            n_sqz: 2,
            mean_only: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("glow-tts config: {msg}")));
        for (name, v) in [
            ("n_vocab", self.n_vocab),
            ("out_channels", self.out_channels),
            ("hidden_channels", self.hidden_channels),
            ("filter_channels", self.filter_channels),
            ("filter_channels_dp", self.filter_channels_dp),
            ("kernel_size", self.kernel_size),
            ("n_layers_enc", self.n_layers_enc),
            ("n_heads", self.n_heads),
            ("n_blocks_dec", self.n_blocks_dec),
            ("hidden_channels_dec", self.hidden_channels_dec),
            ("kernel_size_dec", self.kernel_size_dec),
            ("dilation_rate", self.dilation_rate),
            ("n_block_layers", self.n_block_layers),
            ("n_sqz", self.n_sqz),
        ] {
            if v < 1 {
                return bad(format!("{name} must be positive, got {v}"));
            }
        }
        if self.hidden_channels % self.n_heads != 0 {
            return bad(format!(
                "hidden_channels {} is not divisible by n_heads {}",
                self.hidden_channels, self.n_heads
            ));
        }
        if self.kernel_size % 2 == 0 || self.kernel_size_dec % 2 == 0 {
            return bad("kernel_size and kernel_size_dec must be odd (symmetric padding)".into());
        }
        if self.out_channels * self.n_sqz < 2 {
            return bad("the decoder needs at least 2 channels after squeezing".into());
        }
        if !(0.0..1.0).contains(&self.p_dropout) {
            return bad(format!("p_dropout must be in [0, 1), got {}", self.p_dropout));
        }
        if self.prenet_layers < 0 {
            return bad(format!("prenet_layers must be >= 0, got {}", self.prenet_layers));
        }
        Ok(())
    }
}

/// (B) lengths -> (B, 1, T) float mask, 1 inside.
pub fn sequence_mask(lengths: &Tensor, t: i64, kind: Kind) -> Result<Tensor> {
    let ar = Tensor::f_arange(t, (Kind::Int64, lengths.device()))?;
    Ok(ar.f_unsqueeze(0)?.f_lt_tensor(&lengths.f_unsqueeze(1)?)?.f_to_kind(kind)?.f_unsqueeze(1)?)
}

/// A conv1d with "same" padding: tch's `Conv1D` variables (`weight`, `bias`), applied through
/// the fallible call (tch keeps the padding private, so it is kept here).
struct Conv {
    c: nn::Conv1D,
    padding: i64,
    dilation: i64,
}

impl Conv {
    fn new(p: nn::Path, c_in: i64, c_out: i64, k: i64, dilation: i64) -> Self {
        let padding = dilation * (k - 1) / 2;
        let cfg = nn::ConvConfig { padding, dilation, ..Default::default() };
        Conv { c: nn::conv1d(p, c_in, c_out, k, cfg), padding, dilation }
    }

    fn zeros(p: nn::Path, c_in: i64, c_out: i64) -> Self {
        let cfg = nn::ConvConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        Conv { c: nn::conv1d(p, c_in, c_out, 1, cfg), padding: 0, dilation: 1 }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv1d(&self.c.ws, self.c.bs.as_ref(), 1, self.padding, self.dilation, 1)?)
    }
}

/// LayerNorm over the channels of (B, C, T) (the reference's `attentions.LayerNorm`).
struct ChannelNorm {
    gamma: Tensor,
    beta: Tensor,
    c: i64,
}

impl ChannelNorm {
    fn new(p: nn::Path, c: i64) -> Self {
        ChannelNorm { gamma: p.ones("gamma", &[c]), beta: p.zeros("beta", &[c]), c }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y =
            x.f_transpose(1, 2)?.f_layer_norm([self.c], Some(&self.gamma), Some(&self.beta), 1e-5, false)?;
        Ok(y.f_transpose(1, 2)?)
    }
}

fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    Ok(if train && p > 0.0 { x.f_dropout(p, true)? } else { x.shallow_clone() })
}

/// The encoder's pre-net: conv - norm - ReLU - dropout layers and a zero-initialised
/// projection added to the input (the reference's `ConvReluNorm`).
struct Prenet {
    conv_layers: Vec<Conv>,
    norm_layers: Vec<ChannelNorm>,
    proj: Conv,
}

impl Prenet {
    fn new(p: nn::Path, c: i64, k: i64, n: i64) -> Self {
        let conv_layers = (0..n).map(|i| Conv::new(&p / "conv_layers" / i, c, c, k, 1)).collect();
        let norm_layers = (0..n).map(|i| ChannelNorm::new(&p / "norm_layers" / i, c)).collect();
        Prenet { conv_layers, norm_layers, proj: Conv::zeros(&p / "proj", c, c) }
    }

    fn forward(&self, x: &Tensor, mask: &Tensor, p_drop: f64, train: bool) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (conv, norm) in self.conv_layers.iter().zip(&self.norm_layers) {
            h = conv.forward(&h.f_mul(mask)?)?;
            h = dropout(&norm.forward(&h)?.f_relu()?, p_drop, train)?;
        }
        Ok(x.f_add(&self.proj.forward(&h)?)?.f_mul(mask)?)
    }
}

/// Multi-head self-attention with 1x1 conv projections (`conv_q`, `conv_k`, `conv_v`, `conv_o`).
struct SelfAttention {
    conv_q: Conv,
    conv_k: Conv,
    conv_v: Conv,
    conv_o: Conv,
    n_heads: i64,
}

impl SelfAttention {
    fn new(p: nn::Path, c: i64, n_heads: i64) -> Self {
        SelfAttention {
            conv_q: Conv::new(&p / "conv_q", c, c, 1, 1),
            conv_k: Conv::new(&p / "conv_k", c, c, 1, 1),
            conv_v: Conv::new(&p / "conv_v", c, c, 1, 1),
            conv_o: Conv::new(&p / "conv_o", c, c, 1, 1),
            n_heads,
        }
    }

    /// Shapes: x (B, C, T), attn_mask (B, 1, T, T) -> (B, C, T).
    fn forward(&self, x: &Tensor, attn_mask: &Tensor, p_drop: f64, train: bool) -> Result<Tensor> {
        let [b, c, t] = x.size()[..] else {
            return Err(Error::Input(format!("attention: expected (B, C, T), got {:?}", x.size())));
        };
        let (nh, hs) = (self.n_heads, c / self.n_heads);
        // (B, C, T) -> (B, nh, T, hs)
        let heads = |y: Tensor| -> Result<Tensor> { Ok(y.f_view([b, nh, hs, t])?.f_transpose(2, 3)?) };
        let q = heads(self.conv_q.forward(x)?)?;
        let k = heads(self.conv_k.forward(x)?)?;
        let v = heads(self.conv_v.forward(x)?)?;
        let scores = q.f_matmul(&k.f_transpose(2, 3)?)?.f_div_scalar((hs as f64).sqrt())?;
        let scores = scores.f_masked_fill(&attn_mask.f_eq(0.0)?, -1e4)?;
        let p = dropout(&scores.f_softmax(-1, scores.kind())?, p_drop, train)?;
        let o = p.f_matmul(&v)?.f_transpose(2, 3)?.f_contiguous()?.f_view([b, c, t])?; // (B, C, T)
        self.conv_o.forward(&o)
    }
}

/// conv - ReLU - dropout - conv, masked (the reference's `FFN`).
struct Ffn {
    conv_1: Conv,
    conv_2: Conv,
}

impl Ffn {
    fn forward(&self, x: &Tensor, mask: &Tensor, p_drop: f64, train: bool) -> Result<Tensor> {
        let h = self.conv_1.forward(&x.f_mul(mask)?)?.f_relu()?;
        let h = dropout(&h, p_drop, train)?;
        Ok(self.conv_2.forward(&h.f_mul(mask)?)?.f_mul(mask)?)
    }
}

/// Predicts log-durations (in frames) of the tokens: two conv - ReLU - norm - dropout layers
/// and a 1x1 projection.
pub struct DurationPredictor {
    conv_1: Conv,
    norm_1: ChannelNorm,
    conv_2: Conv,
    norm_2: ChannelNorm,
    proj: Conv,
    p_dropout: f64,
}

impl DurationPredictor {
    fn new(p: nn::Path, c_in: i64, filter: i64, k: i64, p_dropout: f64) -> Self {
        DurationPredictor {
            conv_1: Conv::new(&p / "conv_1", c_in, filter, k, 1),
            norm_1: ChannelNorm::new(&p / "norm_1", filter),
            conv_2: Conv::new(&p / "conv_2", filter, filter, k, 1),
            norm_2: ChannelNorm::new(&p / "norm_2", filter),
            proj: Conv::new(&p / "proj", filter, 1, 1, 1),
            p_dropout,
        }
    }

    /// Shapes: x (B, C, T), mask (B, 1, T) -> log-durations (B, 1, T).
    pub fn forward(&self, x: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv_1.forward(&x.f_mul(mask)?)?.f_relu()?;
        let h = dropout(&self.norm_1.forward(&h)?, self.p_dropout, train)?;
        let h = self.conv_2.forward(&h.f_mul(mask)?)?.f_relu()?;
        let h = dropout(&self.norm_2.forward(&h)?, self.p_dropout, train)?;
        Ok(self.proj.forward(&h.f_mul(mask)?)?.f_mul(mask)?)
    }
}

/// What the text encoder gives per token.
pub struct Encoded {
    /// Prior means, (B, out_channels, T_text).
    pub mean: Tensor,
    /// Prior log-stds, (B, out_channels, T_text) (zeros with `mean_only`).
    pub log_std: Tensor,
    /// Predicted log-durations in frames, (B, 1, T_text).
    pub log_duration: Tensor,
    /// (B, 1, T_text)
    pub mask: Tensor,
}

/// Symbols -> per-token Gaussians over mel frames, and durations.
pub struct TextEncoder {
    emb: Tensor,
    prenet: Option<Prenet>,
    attn_layers: Vec<SelfAttention>,
    norm_layers_1: Vec<ChannelNorm>,
    ffn_layers: Vec<Ffn>,
    norm_layers_2: Vec<ChannelNorm>,
    proj_m: Conv,
    proj_s: Option<Conv>,
    proj_w: DurationPredictor,
    cfg: GlowTtsConfig,
}

impl TextEncoder {
    pub fn new(p: nn::Path, cfg: &GlowTtsConfig) -> Self {
        let h = cfg.hidden_channels;
        let emb =
            p.var("emb", &[cfg.n_vocab, h], nn::Init::Randn { mean: 0.0, stdev: (h as f64).powf(-0.5) });
        let prenet = (cfg.prenet_layers > 0).then(|| Prenet::new(&p / "pre", h, 5, cfg.prenet_layers));
        let e = &p / "encoder";
        let n = cfg.n_layers_enc;
        let ffn = |i: i64| Ffn {
            conv_1: Conv::new(&e / "ffn_layers" / i / "conv_1", h, cfg.filter_channels, cfg.kernel_size, 1),
            conv_2: Conv::new(&e / "ffn_layers" / i / "conv_2", cfg.filter_channels, h, cfg.kernel_size, 1),
        };
        TextEncoder {
            emb,
            prenet,
            attn_layers: (0..n).map(|i| SelfAttention::new(&e / "attn_layers" / i, h, cfg.n_heads)).collect(),
            norm_layers_1: (0..n).map(|i| ChannelNorm::new(&e / "norm_layers_1" / i, h)).collect(),
            ffn_layers: (0..n).map(ffn).collect(),
            norm_layers_2: (0..n).map(|i| ChannelNorm::new(&e / "norm_layers_2" / i, h)).collect(),
            proj_m: Conv::new(&p / "proj_m", h, cfg.out_channels, 1, 1),
            proj_s: (!cfg.mean_only).then(|| Conv::new(&p / "proj_s", h, cfg.out_channels, 1, 1)),
            proj_w: DurationPredictor::new(
                &p / "proj_w",
                h,
                cfg.filter_channels_dp,
                cfg.kernel_size,
                cfg.p_dropout,
            ),
            cfg: cfg.clone(),
        }
    }

    /// Shapes: ids (B, T_text) int64, lengths (B) -> [`Encoded`].
    pub fn forward(&self, ids: &Tensor, lengths: &Tensor, train: bool) -> Result<Encoded> {
        let [_, t] = ids.size()[..] else {
            return Err(Error::Input(format!("text encoder: ids must be (B, T), got {:?}", ids.size())));
        };
        let (h, p_drop) = (self.cfg.hidden_channels, self.cfg.p_dropout);
        let x = Tensor::f_embedding(&self.emb, ids, -1, false, false)?.f_mul_scalar((h as f64).sqrt())?;
        let mut x = x.f_transpose(1, 2)?; // (B, H, T)
        let mask = sequence_mask(lengths, t, x.kind())?;
        if let Some(pre) = &self.prenet {
            x = pre.forward(&x, &mask, p_drop, train)?;
        }
        // (B, 1, T, T): attend only between real tokens
        let attn_mask = mask.f_unsqueeze(2)?.f_mul(&mask.f_unsqueeze(-1)?)?;
        x = x.f_mul(&mask)?;
        for i in 0..self.attn_layers.len() {
            let y = self.attn_layers[i].forward(&x, &attn_mask, p_drop, train)?;
            x = self.norm_layers_1[i].forward(&x.f_add(&dropout(&y, p_drop, train)?)?)?;
            let y = self.ffn_layers[i].forward(&x, &mask, p_drop, train)?;
            x = self.norm_layers_2[i].forward(&x.f_add(&dropout(&y, p_drop, train)?)?)?;
        }
        x = x.f_mul(&mask)?;
        let mean = self.proj_m.forward(&x)?.f_mul(&mask)?;
        let log_std = match &self.proj_s {
            Some(s) => s.forward(&x)?.f_mul(&mask)?,
            None => mean.f_zeros_like()?,
        };
        // The duration predictor must not shape the text representation.
        let log_duration = self.proj_w.forward(&x.f_detach()?, &mask, train)?;
        Ok(Encoded { mean, log_std, log_duration, mask })
    }
}

/// The conditioner of a decoder coupling: a 1x1 `start`, `n_block_layers` dilated convs with a
/// tanh * sigmoid gate and residual / skip 1x1 convs (`wn`), and a zero-initialised 1x1 `end`,
/// so every coupling starts as the identity. It takes the frame mask as its conditioning input
/// and zeroes its output on padding (log s = 0 and shift 0 there).
pub struct CouplingNet {
    start: Conv,
    in_layers: Vec<Conv>,
    res_skip_layers: Vec<Conv>,
    end: Conv,
    hidden: i64,
}

impl CouplingNet {
    fn new(p: nn::Path, c_a: i64, c_b: i64, cfg: &GlowTtsConfig) -> Self {
        let h = cfg.hidden_channels_dec;
        let n = cfg.n_block_layers;
        let wn = &p / "wn";
        let in_layers = (0..n)
            .map(|i| {
                let dilation = cfg.dilation_rate.pow(i as u32);
                Conv::new(&wn / "in_layers" / i, h, 2 * h, cfg.kernel_size_dec, dilation)
            })
            .collect();
        let res_skip_layers = (0..n)
            .map(|i| Conv::new(&wn / "res_skip_layers" / i, h, if i < n - 1 { 2 * h } else { h }, 1, 1))
            .collect();
        CouplingNet {
            start: Conv::new(&p / "start", c_a, h, 1, 1),
            in_layers,
            res_skip_layers,
            end: Conv::zeros(&p / "end", h, 2 * c_b),
            hidden: h,
        }
    }
}

impl Conditioner for CouplingNet {
    fn forward(&self, x_a: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let mask = cond.ok_or_else(|| Error::Input("glow-tts coupling: the frame mask is missing".into()))?;
        let h = self.hidden;
        let mut x = self.start.forward(x_a)?.f_mul(mask)?;
        let mut skip: Option<Tensor> = None;
        let n = self.in_layers.len();
        for (i, (inl, rs)) in self.in_layers.iter().zip(&self.res_skip_layers).enumerate() {
            let a = inl.forward(&x)?;
            let acts = a.f_narrow(1, 0, h)?.f_tanh()?.f_mul(&a.f_narrow(1, h, h)?.f_sigmoid()?)?;
            let r = rs.forward(&acts)?;
            let s = if i < n - 1 {
                x = x.f_add(&r.f_narrow(1, 0, h)?)?.f_mul(mask)?;
                r.f_narrow(1, h, h)?
            } else {
                r
            };
            skip = Some(match skip {
                Some(acc) => acc.f_add(&s)?,
                None => s,
            });
        }
        let skip = skip.ok_or_else(|| Error::Config("glow-tts coupling without layers".into()))?;
        Ok(self.end.forward(&skip.f_mul(mask)?)?.f_mul(mask)?)
    }
}

/// One step of the decoder's flow.
struct FlowBlock {
    actnorm: ActNorm,
    invconv: Invertible1x1Conv,
    coupling: AffineCoupling<CouplingNet>,
}

/// The flow over mel frames: squeeze `n_sqz` frames into channels, `n_blocks_dec` steps of
/// ActNorm, invertible 1x1 conv and affine coupling, all masked.
pub struct FlowDecoder {
    flows: Vec<FlowBlock>,
    n_sqz: i64,
    channels: i64,
}

impl FlowDecoder {
    pub fn new(p: nn::Path, cfg: &GlowTtsConfig) -> Result<Self> {
        let c = cfg.out_channels * cfg.n_sqz;
        let (c_a, c_b) = (c / 2, c - c / 2);
        let mut flows = Vec::new();
        for i in 0..cfg.n_blocks_dec {
            let b = &p / "flows" / i;
            flows.push(FlowBlock {
                actnorm: ActNorm::new(&b / "actnorm", c),
                invconv: Invertible1x1Conv::new(&b / "invconv", c, true)?,
                coupling: AffineCoupling::new(CouplingNet::new(&b / "coupling", c_a, c_b, cfg), c)?,
            });
        }
        Ok(FlowDecoder { flows, n_sqz: cfg.n_sqz, channels: cfg.out_channels })
    }

    fn check(&self, y: &Tensor, mask: &Tensor, what: &str) -> Result<()> {
        match (&y.size()[..], &mask.size()[..]) {
            ([b, c, t], [mb, 1, mt]) if *c == self.channels && b == mb && t == mt && t % self.n_sqz == 0 => {
                Ok(())
            }
            (ys, ms) => Err(Error::Input(format!(
                "glow-tts decoder {what}: expected (B, {}, T) with T a multiple of {} and a mask (B, 1, T), \
                 got {ys:?} and {ms:?}",
                self.channels, self.n_sqz
            ))),
        }
    }

    /// The squeezed mask (B, 1, T / n_sqz) and the real squeezed frames per example (B).
    fn squeezed_mask(&self, mask: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = mask.size()[2];
        let m = mask.f_slice(2, self.n_sqz - 1, t, self.n_sqz)?;
        let len = m.f_sum_dim_intlist([1i64, 2].as_slice(), false, m.kind())?;
        Ok((m, len))
    }

    /// Shapes: y (B, C, T), mask (B, 1, T) -> (z (B, C, T), log|det dz/dy| (B)) over the real
    /// frames. The first call initialises each ActNorm from the real frames of its input.
    pub fn forward(&self, y: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(y, mask, "input")?;
        let (m, len) = self.squeezed_mask(mask)?;
        let mut x = squeeze(&y.f_mul(mask)?, self.n_sqz)?.f_mul(&m)?;
        let mut logdet = len.f_zeros_like()?;
        for f in &self.flows {
            if !f.actnorm.is_initialized()? {
                // Statistics of the real frames only: gather them into one (1, C, N) sequence.
                let keep = m.f_reshape([-1])?.f_gt(0.5)?;
                let cols = x.f_transpose(1, 2)?.f_reshape([-1, x.size()[1]])?.f_index(&[Some(keep)])?;
                f.actnorm.initialize(&cols.f_transpose(0, 1)?.f_unsqueeze(0)?)?;
            }
            // ActNorm and the 1x1 conv act per frame: their log-dets scale with the real length.
            let (z, _) = f.actnorm.forward(&x, None)?;
            let ls = f.actnorm.log_scale()?;
            logdet = logdet.f_add(&len.f_mul(&ls.f_sum(ls.kind())?)?)?;
            let (z, _) = f.invconv.forward(&z.f_mul(&m)?, None)?;
            logdet = logdet.f_add(&len.f_mul(&f.invconv.log_det_w()?)?)?;
            let (z, ld) = f.coupling.forward(&z, Some(&m))?;
            logdet = logdet.f_add(&ld)?;
            x = z.f_mul(&m)?;
        }
        Ok((unsqueeze(&x, self.n_sqz)?.f_mul(mask)?, logdet))
    }

    /// Shapes: z (B, C, T), mask (B, 1, T) -> y (B, C, T).
    pub fn inverse(&self, z: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.check(z, mask, "inverse input")?;
        let (m, _) = self.squeezed_mask(mask)?;
        let mut x = squeeze(&z.f_mul(mask)?, self.n_sqz)?.f_mul(&m)?;
        for f in self.flows.iter().rev() {
            x = f.coupling.inverse(&x, Some(&m))?.f_mul(&m)?;
            x = f.invconv.inverse(&x, None)?;
            x = f.actnorm.inverse(&x, None)?.f_mul(&m)?;
        }
        Ok(unsqueeze(&x, self.n_sqz)?.f_mul(mask)?)
    }
}

/// The losses of one batch, and the alignment found.
pub struct Losses {
    /// Negative log-likelihood of the mel per real mel value, in nats (0.5 ln 2 pi included).
    pub mle: Tensor,
    /// Mean squared error of the predicted log-durations against the alignment's.
    pub duration: Tensor,
    /// The hard alignment (B, T_text, T_mel).
    pub attn: Tensor,
}

/// What [`GlowTts::infer`] returns.
pub struct Inferred {
    /// Log-mels (B, out_channels, T), zero beyond each length.
    pub mel: Tensor,
    /// Frames per example, (B) int64.
    pub lengths: Tensor,
    /// Frames per token, (B, T_text).
    pub durations: Tensor,
}

/// The whole model.
pub struct GlowTts {
    pub encoder: TextEncoder,
    pub decoder: FlowDecoder,
    pub cfg: GlowTtsConfig,
}

impl GlowTts {
    /// Variables under `encoder` and `decoder`.
    pub fn new(p: nn::Path, cfg: &GlowTtsConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(GlowTts {
            encoder: TextEncoder::new(&p / "encoder", cfg),
            decoder: FlowDecoder::new(&p / "decoder", cfg)?,
            cfg: cfg.clone(),
        })
    }

    /// Training losses. Shapes: ids (B, T_text) int64, text_lengths (B), mel (B, C, T_mel),
    /// mel_lengths (B). Mels are cut to a multiple of n_sqz frames.
    pub fn loss(
        &self,
        ids: &Tensor,
        text_lengths: &Tensor,
        mel: &Tensor,
        mel_lengths: &Tensor,
        train: bool,
    ) -> Result<Losses> {
        let n_sqz = self.cfg.n_sqz;
        let t_mel = mel.size().get(2).copied().unwrap_or(0) / n_sqz * n_sqz;
        let mel = mel.f_narrow(2, 0, t_mel)?;
        let mel_lengths = mel_lengths.f_div_scalar_mode(n_sqz, "floor")?.f_mul_scalar(n_sqz)?;
        let enc = self.encoder.forward(ids, text_lengths, train)?;
        let y_mask = sequence_mask(&mel_lengths, t_mel, mel.kind())?;
        // 1. the flow: mel -> z
        let (z, logdet) = self.decoder.forward(&mel, &y_mask)?;
        // 2. log N(z_j; mean_i, std_i) for every token i and frame j: (B, T_text, T_mel)
        let (m, logs) = (&enc.mean, &enc.log_std);
        let inv_var = logs.f_mul_scalar(-2.0)?.f_exp()?; // (B, C, T_text)
        let c_dims: &[i64] = &[1];
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let logp = tch::no_grad(|| -> Result<Tensor> {
            let p1 = logs
                .f_neg()?
                .f_sub_scalar(half_log_2pi)?
                .f_sum_dim_intlist(c_dims, false, logs.kind())?
                .f_unsqueeze(-1)?;
            let p2 = inv_var.f_transpose(1, 2)?.f_matmul(&z.f_square()?)?.f_mul_scalar(-0.5)?;
            let p3 = m.f_mul(&inv_var)?.f_transpose(1, 2)?.f_matmul(&z)?;
            let p4 = m
                .f_square()?
                .f_mul(&inv_var)?
                .f_mul_scalar(-0.5)?
                .f_sum_dim_intlist(c_dims, false, m.kind())?
                .f_unsqueeze(-1)?;
            Ok(p1.f_add(&p2)?.f_add(&p3)?.f_add(&p4)?)
        })?;
        // 3. the best monotonic alignment
        let attn = monotonic_alignment_search(&logp, text_lengths, &mel_lengths)?;
        // 4. each frame's Gaussian: (B, C, T_text) @ (B, T_text, T_mel)
        let m_y = m.f_matmul(&attn)?;
        let logs_y = logs.f_matmul(&attn)?;
        let n_values = y_mask.f_sum(Kind::Float)?.f_mul_scalar(self.cfg.out_channels as f64)?;
        let quad = z.f_sub(&m_y)?.f_square()?.f_mul(&logs_y.f_mul_scalar(-2.0)?.f_exp()?)?.f_mul(&y_mask)?;
        let nll = logs_y
            .f_mul(&y_mask)?
            .f_sum(Kind::Float)?
            .f_add(&quad.f_sum(Kind::Float)?.f_mul_scalar(0.5)?)?
            .f_sub(&logdet.f_sum(Kind::Float)?)?;
        let mle = nll.f_div(&n_values)?.f_add_scalar(half_log_2pi)?;
        // 5. durations: log of the frames MAS gave each token
        let target = durations(&attn)?.f_unsqueeze(1)?.f_add_scalar(1e-8)?.f_log()?.f_mul(&enc.mask)?;
        let duration = enc
            .log_duration
            .f_sub(&target)?
            .f_square()?
            .f_sum(Kind::Float)?
            .f_div(&enc.mask.f_sum(Kind::Float)?)?;
        Ok(Losses { mle, duration, attn })
    }

    /// Text -> log-mel. `noise_scale` multiplies the prior's std (the reference uses 0.667),
    /// `length_scale` the durations (> 1 speaks slower). The prior's noise comes from `rng` when
    /// given (the same seed, the same mel, whatever other threads draw), else from libtorch's
    /// generator. Shapes: ids (B, T_text), lengths (B) -> [`Inferred`].
    pub fn infer(
        &self,
        ids: &Tensor,
        lengths: &Tensor,
        noise_scale: f64,
        length_scale: f64,
        rng: Option<&mut rand::rngs::StdRng>,
    ) -> Result<Inferred> {
        let valid =
            noise_scale.is_finite() && noise_scale >= 0.0 && length_scale.is_finite() && length_scale > 0.0;
        if !valid {
            return Err(Error::Input(format!(
                "noise scale must be >= 0 and length scale > 0, got {noise_scale} and {length_scale}"
            )));
        }
        let enc = self.encoder.forward(ids, lengths, false)?;
        let w = enc.log_duration.f_exp()?.f_mul(&enc.mask)?.f_mul_scalar(length_scale)?;
        let w = w.f_ceil()?.f_squeeze_dim(1)?; // (B, T_text)
        let n_sqz = self.cfg.n_sqz;
        // At least one frame, then up to a multiple of n_sqz.
        let y_len = w.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?.f_clamp_min(1.0)?;
        let y_len =
            y_len.f_div_scalar(n_sqz as f64)?.f_ceil()?.f_mul_scalar(n_sqz as f64)?.f_to_kind(Kind::Int64)?;
        let t_mel = y_len.f_max()?.f_int64_value(&[])?;
        let y_mask = sequence_mask(&y_len, t_mel, enc.mean.kind())?;
        let attn = path_from_durations(&w, t_mel)?.f_mul(&y_mask)?;
        let m_y = enc.mean.f_matmul(&attn)?;
        let logs_y = enc.log_std.f_matmul(&attn)?;
        let eps = match rng {
            Some(r) => {
                zoo_core::seed::randn(&m_y.size(), r)?.f_to_kind(m_y.kind())?.f_to_device(m_y.device())?
            }
            None => m_y.f_randn_like()?,
        };
        let z = m_y.f_add(&logs_y.f_exp()?.f_mul(&eps)?.f_mul_scalar(noise_scale)?)?.f_mul(&y_mask)?;
        let mel = self.decoder.inverse(&z, &y_mask)?;
        Ok(Inferred { mel, lengths: y_len, durations: w })
    }
}

/// Hard alignment from whole-frame durations: token i owns frames [sum_{k<i} w_k, sum_{k<=i} w_k).
/// Shapes: (B, T_text) -> (B, T_text, T_mel).
pub fn path_from_durations(w: &Tensor, t_mel: i64) -> Result<Tensor> {
    let end = w.f_cumsum(1, Kind::Float)?; // (B, T_text)
    let start = end.f_sub(w)?;
    let j = Tensor::f_arange(t_mel, (Kind::Float, w.device()))?.f_view([1, 1, t_mel])?;
    let after_start = j.f_ge_tensor(&start.f_unsqueeze(-1)?)?;
    let before_end = j.f_lt_tensor(&end.f_unsqueeze(-1)?)?;
    Ok(after_start.f_logical_and(&before_end)?.f_to_kind(w.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::tests::{brute_logdet, max_diff};
    use tch::nn::{OptimizerConfig, VarStore};
    use tch::Device;

    /// Gives the zero-initialised `end` convs of the couplings random weights, so the flow is
    /// not the identity.
    fn randomize_zero_init(vs: &VarStore) {
        tch::no_grad(|| {
            for (name, v) in vs.variables() {
                if name.contains("end") {
                    v.shallow_clone().f_copy_(&(Tensor::randn_like(&v) * 0.1)).unwrap();
                }
            }
        });
    }

    /// The tiny model in f64 with every zero-initialised layer randomised, so the flow is not
    /// the identity, and its ActNorms initialised from `init`.
    fn tiny_decoder(n_mels: i64, init: &Tensor, init_mask: &Tensor) -> (VarStore, FlowDecoder) {
        let mut vs = VarStore::new(Device::Cpu);
        let cfg = GlowTtsConfig::tiny(10, n_mels);
        let dec = FlowDecoder::new(vs.root() / "decoder", &cfg).unwrap();
        vs.double();
        randomize_zero_init(&vs);
        let _ = dec.forward(init, init_mask).unwrap();
        (vs, dec)
    }

    #[test]
    fn decoder_inverts_with_padding() {
        let mask = sequence_mask(&Tensor::from_slice(&[8i64, 6]), 8, Kind::Double).unwrap();
        let y = Tensor::randn([2, 3, 8], (Kind::Double, Device::Cpu)) * &mask;
        let (_vs, dec) = tiny_decoder(3, &y, &mask);
        let (z, ld) = dec.forward(&y, &mask).unwrap();
        assert_eq!(z.size(), vec![2, 3, 8]);
        assert_eq!(ld.size(), vec![2]);
        // Padding stays zero; the inverse gives the input back.
        assert_eq!(z.narrow(2, 6, 2).get(1).abs().max().double_value(&[]), 0.0);
        let back = dec.inverse(&z, &mask).unwrap();
        assert!(max_diff(&back, &y) < 1e-10, "{}", max_diff(&back, &y));
        // An example's z and log-det do not depend on the padding of the batch.
        let alone = y.narrow(0, 1, 1).narrow(2, 0, 6);
        let m1 = sequence_mask(&Tensor::from_slice(&[6i64]), 6, Kind::Double).unwrap();
        let (z1, ld1) = dec.forward(&alone, &m1).unwrap();
        assert!(max_diff(&z1, &z.narrow(0, 1, 1).narrow(2, 0, 6)) < 1e-10);
        assert!((ld1.double_value(&[0]) - ld.double_value(&[1])).abs() < 1e-9);
    }

    #[test]
    fn decoder_f32_inverts_within_1e4() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = GlowTtsConfig { n_blocks_dec: 4, ..GlowTtsConfig::tiny(10, 8) };
        let dec = FlowDecoder::new(vs.root(), &cfg).unwrap();
        randomize_zero_init(&vs);
        let mask = sequence_mask(&Tensor::from_slice(&[40i64, 22]), 40, Kind::Float).unwrap();
        let y = Tensor::randn([2, 8, 40], (Kind::Float, Device::Cpu)) * &mask;
        let (z, _) = dec.forward(&y, &mask).unwrap();
        let err = max_diff(&dec.inverse(&z, &mask).unwrap(), &y);
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn decoder_logdet_matches_brute_force_on_the_real_frames() {
        let mask = sequence_mask(&Tensor::from_slice(&[6i64, 4]), 6, Kind::Double).unwrap();
        let y = Tensor::randn([2, 2, 6], (Kind::Double, Device::Cpu)) * &mask;
        let (_vs, dec) = tiny_decoder(2, &y, &mask);
        let (_, ld) = dec.forward(&y, &mask).unwrap();
        for (e, len) in [(0i64, 6i64), (1, 4)] {
            // The map from the example's real frames (1, 2, len) to its z on those frames.
            let m = mask.narrow(0, e, 1);
            let f = |x: &Tensor| {
                let padded = x.constant_pad_nd([0, 6 - len]);
                dec.forward(&padded, &m).unwrap().0.narrow(2, 0, len)
            };
            let brute = brute_logdet(&f, &y.narrow(0, e, 1).narrow(2, 0, len));
            let ours = ld.double_value(&[e]);
            assert!(ours.abs() > 1e-3, "trivial log-det {ours}");
            assert!((ours - brute).abs() < 1e-8, "example {e}: {ours} vs brute force {brute}");
        }
    }

    #[test]
    fn durations_make_a_path() {
        let w = Tensor::from_slice(&[2.0f32, 1.0, 3.0, 1.0, 1.0, 0.0]).view([2, 3]);
        let p = path_from_durations(&w, 6).unwrap();
        let tokens: Vec<i64> = Vec::try_from(&p.get(0).argmax(0, false)).unwrap();
        assert_eq!(tokens, vec![0, 0, 1, 2, 2, 2]);
        assert_eq!(p.get(1).sum(Kind::Float).double_value(&[]), 2.0);
        assert_eq!(max_diff(&durations(&p).unwrap(), &w), 0.0);
    }

    #[test]
    fn loss_and_inference_run_on_the_tiny_model() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let cfg = GlowTtsConfig::tiny(12, 4);
        let model = GlowTts::new(vs.root(), &cfg).unwrap();
        let ids = Tensor::from_slice(&[1i64, 5, 7, 2, 3, 4, 0, 0]).view([2, 4]);
        let tl = Tensor::from_slice(&[4i64, 2]);
        let mel = Tensor::randn([2, 4, 11], (Kind::Float, Device::Cpu));
        let ml = Tensor::from_slice(&[11i64, 7]);
        let l = model.loss(&ids, &tl, &mel, &ml, true).unwrap();
        let (mle, dur) = (l.mle.double_value(&[]), l.duration.double_value(&[]));
        assert!(mle.is_finite() && dur.is_finite() && dur >= 0.0, "{mle} {dur}");
        // Mels are cut to 10 and 6 frames; every real frame has one token.
        assert_eq!(l.attn.size(), vec![2, 4, 10]);
        let per_frame = l.attn.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        assert_eq!(per_frame.get(0).min().double_value(&[]), 1.0);
        assert_eq!(per_frame.get(1).sum(Kind::Float).double_value(&[]), 6.0);
        // Gradients reach the encoder and the decoder.
        (&l.mle + &l.duration).backward();
        let with_grad = vs.trainable_variables().iter().filter(|v| v.grad().defined()).count();
        assert!(with_grad > vs.trainable_variables().len() / 2);
        // Inference: lengths are multiples of n_sqz, longer with a larger length scale.
        let out = tch::no_grad(|| model.infer(&ids, &tl, 0.667, 1.0, None)).unwrap();
        let slow = tch::no_grad(|| model.infer(&ids, &tl, 0.667, 3.0, None)).unwrap();
        let (a, b): (Vec<i64>, Vec<i64>) =
            (Vec::try_from(&out.lengths).unwrap(), Vec::try_from(&slow.lengths).unwrap());
        assert!(a.iter().all(|&n| n >= 2 && n % 2 == 0), "{a:?}");
        assert!(b[0] > a[0], "{a:?} {b:?}");
        assert_eq!(out.mel.size()[..2], [2, 4]);
        assert!(out.mel.isfinite().all().int64_value(&[]) == 1);
        // At noise 0 the output is deterministic.
        let d1 = tch::no_grad(|| model.infer(&ids, &tl, 0.0, 1.0, None)).unwrap();
        let d2 = tch::no_grad(|| model.infer(&ids, &tl, 0.0, 1.0, None)).unwrap();
        assert_eq!(max_diff(&d1.mel, &d2.mel), 0.0);
        assert!(model.infer(&ids, &tl, -1.0, 1.0, None).is_err());
    }

    #[test]
    fn mle_is_the_gaussian_nll_under_the_alignment_and_training_lowers_it() {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let model = GlowTts::new(vs.root(), &GlowTtsConfig::tiny(12, 4)).unwrap();
        let ids = Tensor::from_slice(&[1i64, 5, 7, 2, 3, 4, 0, 0]).view([2, 4]);
        let tl = Tensor::from_slice(&[4i64, 2]);
        let mel = Tensor::randn([2, 4, 10], (Kind::Float, Device::Cpu));
        let ml = Tensor::from_slice(&[10i64, 6]);
        let l = model.loss(&ids, &tl, &mel, &ml, false).unwrap();
        // The same number written out: -(sum of log N(z; mean, std) over real values + log-det)
        // per real value.
        let enc = model.encoder.forward(&ids, &tl, false).unwrap();
        let mask = sequence_mask(&ml, 10, Kind::Float).unwrap();
        let (z, logdet) = model.decoder.forward(&mel, &mask).unwrap();
        let (m, s) = (enc.mean.matmul(&l.attn), enc.log_std.matmul(&l.attn));
        let log_n = (-&s - 0.5 * (2.0 * std::f64::consts::PI).ln()) - ((&z - &m) / s.exp()).square() * 0.5;
        let n = mask.sum(Kind::Float).double_value(&[]) * 4.0;
        let want = -((log_n * &mask).sum(Kind::Float).double_value(&[])
            + logdet.sum(Kind::Float).double_value(&[]))
            / n;
        let got = l.mle.double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // 40 Adam steps on this batch: the NLL and the duration loss fall.
        let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
        let mut losses = Vec::new();
        for _ in 0..40 {
            let l = model.loss(&ids, &tl, &mel, &ml, true).unwrap();
            losses.push((l.mle.double_value(&[]), l.duration.double_value(&[])));
            opt.backward_step(&(&l.mle + &l.duration));
        }
        let (first, last) = (losses[0], losses[39]);
        println!("mle {:.3} -> {:.3}, duration {:.3} -> {:.3}", first.0, last.0, first.1, last.1);
        assert!(last.0 < first.0 - 0.3, "{losses:?}");
        assert!(last.1 < 0.5 * first.1, "{losses:?}");
    }

    #[test]
    fn configs_validate_and_parse() {
        GlowTtsConfig::base(60, 80).validate().unwrap();
        GlowTtsConfig::tiny(60, 80).validate().unwrap();
        let bad = GlowTtsConfig { n_heads: 3, ..GlowTtsConfig::tiny(60, 80) };
        assert!(bad.validate().unwrap_err().to_string().contains("n_heads"));
        let bad = GlowTtsConfig { kernel_size_dec: 4, ..GlowTtsConfig::tiny(60, 80) };
        assert!(bad.validate().is_err());
        let json = serde_json::to_string(&GlowTtsConfig::base(60, 80)).unwrap();
        assert_eq!(serde_json::from_str::<GlowTtsConfig>(&json).unwrap(), GlowTtsConfig::base(60, 80));
        let vs = VarStore::new(Device::Cpu);
        let model = GlowTts::new(vs.root(), &GlowTtsConfig::tiny(10, 4)).unwrap();
        let mel = Tensor::zeros([1, 5, 8], (Kind::Float, Device::Cpu));
        let mask = Tensor::ones([1, 1, 8], (Kind::Float, Device::Cpu));
        assert!(model.decoder.forward(&mel, &mask).unwrap_err().to_string().contains("(B, 4, T)"));
    }
}
