//! Glow for images (Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1
//! Convolutions"), with the semantics of openai/glow `model.py` (also followed by the PyTorch
//! ports, e.g. rosinality/glow-pytorch). Our own checkpoints only (no converter for openai's).
//!
//! Multi-scale architecture, for each of `n_levels` levels:
//! 1. squeeze: space-to-depth 2x2, (B, C, H, W) -> (B, 4C, H/2, W/2) ([`squeeze2d`]);
//! 2. `depth` steps of flow: [`ActNorm`] (data-dependent init, log-scale factor 3 as
//!    openai/glow), [`Invertible1x1Conv`] (optionally LU-decomposed) and an [`AffineCoupling`]
//!    whose conditioner ([`CouplingNet`]) is conv3x3 - ReLU - conv1x1 - ReLU - conv3x3 (the last
//!    zero-initialised), with openai/glow's scale sigmoid(h + 2);
//! 3. all levels but the last: half the channels leave as z, with a Gaussian prior whose mean
//!    and log-std come from a zero-initialised conv of the other half ([`SplitPrior`]); the
//!    other half goes on to the next level. The last level's output has a learned prior too.
//!
//! The flow layers of [`crate::layers`] work on (B, C, T): inside a level the H x W plane is
//! flattened into T, which gives exactly Glow's ActNorm statistics (over batch and pixels) and
//! log-dets (H W log|det W| for the 1x1 conv); only the coupling's CNN sees (B, C, H, W).
//!
//! Data (openai/glow's convention): 8-bit pixels x (reduced to `n_bits_x` bits by
//! floor(x / 2^(8 - n_bits_x))), uniform dequantisation y = (x + u) / 2^n_bits_x - 0.5,
//! u ~ U[0, 1)^D. The flow gives the density of y; the discrete NLL bound in bits per dimension is
//! `(-log p(y) + D n_bits_x ln 2) / (D ln 2)` ([`Glow::bits_per_dim`]).
//!
//! Departures from openai/glow, with reasons:
//! - the conditioner's hidden convs are plain convs with a bias and N(0, 0.05) weights, zero
//!   padding, as rosinality/glow-pytorch (openai: bias-free convs each followed by an ActNorm,
//!   and an extra input channel that marks the padding). Measured on MNIST: the ActNorm variant
//!   was no better after 520 steps (2.81 vs 2.70 test bits/dim) and about 25% slower per step;
//! - the coupling's and the priors' output channels are split in halves (shift | scale,
//!   mean | log-std) rather than interleaved (0::2 | 1::2): a permutation of zero-initialised
//!   outputs, so the same model family;
//! - the last level's prior learns a mean and log-std per position (C, H, W) directly, the
//!   log-std stored divided by 3 as in openai/glow's zero convs (openai: a zero-initialised conv
//!   of a zero input, i.e. per channel except near the border).
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::layers::{ActNorm, AffineCoupling, Conditioner, Flow, Invertible1x1Conv};
use crate::{Error, Result};

/// openai/glow's `logscale_factor`: log-scales are stored divided by 3 (ActNorm's, and the
/// output scale of zero-initialised convs), so that Adam moves them 3 times faster.
const LOGSCALE_FACTOR: f64 = 3.0;

/// Space-to-depth: (B, C, H, W) -> (B, 4C, H/2, W/2), with out[:, 4c + 2dy + dx, i, j] =
/// x[:, c, 2i + dy, 2j + dx] (openai/glow's `squeeze2d` in NCHW order). H and W must be even.
pub fn squeeze2d(x: &Tensor) -> Result<Tensor> {
    let [b, c, h, w] = x.size()[..] else {
        return Err(Error::Input(format!("squeeze2d: expected (B, C, H, W), got {:?}", x.size())));
    };
    if h % 2 != 0 || w % 2 != 0 {
        return Err(Error::Input(format!("squeeze2d: {h}x{w} is not divisible by 2")));
    }
    Ok(x.f_reshape([b, c, h / 2, 2, w / 2, 2])?.f_permute([0, 1, 3, 5, 2, 4])?.f_reshape([
        b,
        4 * c,
        h / 2,
        w / 2,
    ])?)
}

/// The inverse of [`squeeze2d`]: (B, 4C, H, W) -> (B, C, 2H, 2W).
pub fn unsqueeze2d(z: &Tensor) -> Result<Tensor> {
    let [b, c4, h, w] = z.size()[..] else {
        return Err(Error::Input(format!("unsqueeze2d: expected (B, C, H, W), got {:?}", z.size())));
    };
    if c4 % 4 != 0 {
        return Err(Error::Input(format!("unsqueeze2d: {c4} channels are not a multiple of 4")));
    }
    let c = c4 / 4;
    Ok(z.f_reshape([b, c, 2, 2, h, w])?.f_permute([0, 1, 4, 2, 5, 3])?.f_reshape([b, c, 2 * h, 2 * w])?)
}

/// A 2-D convolution, stride 1, "same" padding for odd kernels.
struct Conv2d {
    ws: Tensor,
    bs: Tensor,
    padding: i64,
}

impl Conv2d {
    /// Variables `weight` (out, in, k, k), N(0, std) or zeros when `std` is 0, and `bias` (out),
    /// zeros.
    fn new(p: nn::Path, c_in: i64, c_out: i64, k: i64, std: f64) -> Self {
        let init = if std > 0.0 { nn::Init::Randn { mean: 0.0, stdev: std } } else { nn::Init::Const(0.0) };
        Conv2d {
            ws: p.var("weight", &[c_out, c_in, k, k], init),
            bs: p.var("bias", &[c_out], nn::Init::Const(0.0)),
            padding: k / 2,
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(&self.ws, Some(&self.bs), [1, 1], [self.padding, self.padding], [1, 1], 1)?)
    }
}

/// openai/glow's `conv2d_zeros`: a zero-initialised 3x3 conv whose output is scaled per channel
/// by exp(3 logs) (logs zero-initialised), so the layer starts as the zero map. Variables
/// `conv.weight`, `conv.bias`, `logs` (1, out, 1, 1).
struct ZeroConv2d {
    conv: Conv2d,
    logs: Tensor,
}

impl ZeroConv2d {
    fn new(p: nn::Path, c_in: i64, c_out: i64) -> Self {
        ZeroConv2d {
            conv: Conv2d::new(&p / "conv", c_in, c_out, 3, 0.0),
            logs: p.zeros("logs", &[1, c_out, 1, 1]),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.conv.forward(x)?.f_mul(&self.logs.f_mul_scalar(LOGSCALE_FACTOR)?.f_exp()?)?)
    }
}

/// The conditioner of Glow's affine coupling (openai/glow's `f`): conv3x3 (`l_1`) - ReLU -
/// conv1x1 (`l_2`) - ReLU - zero-initialised conv3x3 (`l_last`), on a (side x side) plane.
/// Its raw output h = [t | r] gives openai/glow's coupling z_b = (x_b + t) * sigmoid(r + 2),
/// handed to [`AffineCoupling`] as shift s t and log-scale log s, s = sigmoid(r + 2): the same
/// map, whose log-det is the sum of log s. At init (h = 0) every coupling scales by
/// sigmoid(2) = 0.88, as in the reference.
pub struct CouplingNet {
    l_1: Conv2d,
    l_2: Conv2d,
    l_last: ZeroConv2d,
    side: i64,
}

impl CouplingNet {
    /// `c_a` input channels, `2 c_b` outputs, `width` hidden channels, planes of side x side.
    pub fn new(p: nn::Path, c_a: i64, c_b: i64, width: i64, side: i64) -> Self {
        CouplingNet {
            l_1: Conv2d::new(&p / "l_1", c_a, width, 3, 0.05),
            l_2: Conv2d::new(&p / "l_2", width, width, 1, 0.05),
            l_last: ZeroConv2d::new(&p / "l_last", width, 2 * c_b),
            side,
        }
    }
}

impl Conditioner for CouplingNet {
    /// Shapes: x_a (B, C_a, side * side) -> (B, 2 C_b, side * side) = [shift | log-scale].
    fn forward(&self, x_a: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        let [b, c_a, t] = x_a.size()[..] else {
            return Err(Error::Input(format!("glow coupling: expected (B, C, T), got {:?}", x_a.size())));
        };
        if t != self.side * self.side {
            return Err(Error::Input(format!("glow coupling: {t} positions for a {0}x{0} plane", self.side)));
        }
        let x = x_a.f_reshape([b, c_a, self.side, self.side])?;
        let h = self.l_1.forward(&x)?.f_relu()?;
        let h = self.l_2.forward(&h)?.f_relu()?;
        let h = self.l_last.forward(&h)?; // (B, 2 C_b, side, side)
        let c_b = h.size()[1] / 2;
        let pre = h.f_narrow(1, c_b, c_b)?.f_add_scalar(2.0)?;
        let shift = h.f_narrow(1, 0, c_b)?.f_mul(&pre.f_sigmoid()?)?;
        Ok(Tensor::f_cat(&[shift, pre.f_log_sigmoid()?], 1)?.f_reshape([b, 2 * c_b, t])?)
    }
}

/// One step of flow: ActNorm, invertible 1x1 conv, affine coupling, on (B, C, H W).
pub struct FlowStep {
    pub actnorm: ActNorm,
    pub invconv: Invertible1x1Conv,
    pub coupling: AffineCoupling<CouplingNet>,
}

impl FlowStep {
    pub fn new(p: nn::Path, c: i64, side: i64, width: i64, lu: bool) -> Result<Self> {
        let c_a = c / 2;
        Ok(FlowStep {
            actnorm: ActNorm::with_logscale_factor(&p / "actnorm", c, LOGSCALE_FACTOR),
            invconv: Invertible1x1Conv::new(&p / "invconv", c, lu)?,
            coupling: AffineCoupling::new(CouplingNet::new(&p / "coupling", c_a, c - c_a, width, side), c)?,
        })
    }
}

impl Flow for FlowStep {
    fn forward(&self, x: &Tensor, _cond: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (h, ld1) = self.actnorm.forward(x, None)?;
        let (h, ld2) = self.invconv.forward(&h, None)?;
        let (h, ld3) = self.coupling.forward(&h, None)?;
        Ok((h, ld1.f_add(&ld2)?.f_add(&ld3)?))
    }

    fn inverse(&self, z: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        let h = self.coupling.inverse(z, None)?;
        let h = self.invconv.inverse(&h, None)?;
        self.actnorm.inverse(&h, None)
    }
}

/// log N(z; mean, exp(logs)^2) summed over all but the batch dimension. Shapes: (B, ...) -> (B).
pub fn gaussian_log_p(z: &Tensor, mean: &Tensor, logs: &Tensor) -> Result<Tensor> {
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    let per = z
        .f_sub(mean)?
        .f_square()?
        .f_mul(&logs.f_mul_scalar(-2.0)?.f_exp()?)?
        .f_add(&logs.f_mul_scalar(2.0)?)?
        .f_add_scalar(ln_2pi)?
        .f_mul_scalar(-0.5)?;
    let b = z.size().first().copied().unwrap_or(0);
    Ok(per.f_reshape([b, -1])?.f_sum_dim_intlist([1i64].as_slice(), false, per.kind())?)
}

/// The prior of the channels that leave at a split (openai/glow's `split2d_prior`): mean and
/// log-std of z_2 from a zero-initialised conv of the channels that stay, z_1.
pub struct SplitPrior {
    conv: ZeroConv2d,
}

impl SplitPrior {
    /// Shapes: z_1 (B, C, H, W) -> (mean, logs), each (B, C, H, W).
    pub fn params(&self, z1: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.conv.forward(z1)?;
        let c = h.size()[1] / 2;
        Ok((h.f_narrow(1, 0, c)?, h.f_narrow(1, c, c)?))
    }
}

/// Glow's settings; the names are openai/glow's hyperparameters (`n_levels`, `depth`, `width`,
/// `n_bits_x`, `image_size`) plus the image's channels and the LU switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Channels of the images (1 for MNIST).
    pub in_channels: i64,
    /// Height = width of the images.
    pub image_size: i64,
    /// Levels L; the image side must be divisible by 2^L.
    pub n_levels: i64,
    /// Steps of flow K per level.
    pub depth: i64,
    /// Hidden channels of the coupling networks.
    pub width: i64,
    /// Bits per pixel the model sees (8: every grey level; fewer: openai/glow's reduction).
    pub n_bits_x: u32,
    /// LU-decomposed 1x1 convs (log-det O(C), Glow's option) instead of plain W.
    pub lu_decomposed: bool,
}

impl Config {
    /// A small Glow for 28x28 MNIST: 2 levels (28 -> 14 -> 7) of 8 steps, 128 hidden channels.
    pub fn mnist() -> Self {
        Config {
            in_channels: 1,
            image_size: 28,
            n_levels: 2,
            depth: 8,
            width: 128,
            n_bits_x: 8,
            lu_decomposed: true,
        }
    }

    /// For tests: 1x8x8 images, 2 levels of 2 steps, 8 hidden channels.
    pub fn tiny() -> Self {
        Config {
            in_channels: 1,
            image_size: 8,
            n_levels: 2,
            depth: 2,
            width: 8,
            n_bits_x: 8,
            lu_decomposed: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("glow config: {m}")));
        if self.in_channels < 1
            || self.image_size < 1
            || self.n_levels < 1
            || self.depth < 1
            || self.width < 1
        {
            return bad(format!("sizes must be positive, got {self:?}"));
        }
        if self.n_levels > 8 || self.image_size % (1i64 << self.n_levels) != 0 {
            return bad(format!(
                "image_size {} must be divisible by 2^n_levels = 2^{} (each level halves the side)",
                self.image_size, self.n_levels
            ));
        }
        if !(1..=8).contains(&self.n_bits_x) {
            return bad(format!("n_bits_x must be 1..=8, got {}", self.n_bits_x));
        }
        Ok(())
    }

    /// Dimensions D of an image, C H W.
    pub fn n_dims(&self) -> i64 {
        self.in_channels * self.image_size * self.image_size
    }

    /// Channels and side of level `i`'s steps: 4 C 2^i channels on planes of side S / 2^(i+1).
    pub fn level_shape(&self, i: i64) -> (i64, i64) {
        (4 * self.in_channels * (1 << i), self.image_size >> (i + 1))
    }

    /// Quantisation bins per pixel, 2^n_bits_x.
    pub fn n_bins(&self) -> f64 {
        f64::from(1u32 << self.n_bits_x)
    }
}

/// A level: its steps of flow and, for all but the last level, the prior of its split.
struct Level {
    steps: Vec<FlowStep>,
    split: Option<SplitPrior>,
    c: i64,
    side: i64,
}

/// What [`Glow::encode`] computes.
pub struct Encoded {
    /// One latent per level: the half split off at each level, (B, C_i / 2, S_i, S_i), and the
    /// last level's output, (B, C_L, S_L, S_L).
    pub zs: Vec<Tensor>,
    /// log|det dz/dy| of the flow, (B).
    pub logdet: Tensor,
    /// log p(z) under the learned priors, (B).
    pub log_pz: Tensor,
}

/// Glow on (B, C, S, S) images in the preprocessed space y (see [`Glow::preprocess`]).
pub struct Glow {
    pub cfg: Config,
    levels: Vec<Level>,
    /// The last level's prior, (1, C_L, S_L, S_L) each; the log-std is `LOGSCALE_FACTOR` times
    /// the stored `top_logs`.
    top_mean: Tensor,
    top_logs: Tensor,
}

impl Glow {
    /// Variables: `levels.{i}.steps.{k}.{actnorm,invconv,coupling.{l_1,l_2,l_last}}`,
    /// `levels.{i}.split.conv.*` (all levels but the last), `prior.{mean,logs}`.
    pub fn new(p: nn::Path, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let mut levels = Vec::new();
        for i in 0..cfg.n_levels {
            let q = &p / "levels" / i;
            let (c, side) = cfg.level_shape(i);
            let steps = (0..cfg.depth)
                .map(|k| FlowStep::new(&q / "steps" / k, c, side, cfg.width, cfg.lu_decomposed))
                .collect::<Result<_>>()?;
            let split = (i + 1 < cfg.n_levels)
                .then(|| SplitPrior { conv: ZeroConv2d::new(&q / "split" / "conv", c / 2, c) });
            levels.push(Level { steps, split, c, side });
        }
        let (c, side) = cfg.level_shape(cfg.n_levels - 1);
        let top = &p / "prior";
        Ok(Glow {
            cfg: cfg.clone(),
            levels,
            top_mean: top.zeros("mean", &[1, c, side, side]),
            top_logs: top.zeros("logs", &[1, c, side, side]),
        })
    }

    /// Mean and log-std of the last level's prior, (1, C_L, S_L, S_L) each.
    fn top_prior(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.top_mean.shallow_clone(), self.top_logs.f_mul_scalar(LOGSCALE_FACTOR)?))
    }

    /// Checks that x is (B, C, S, S) for this model; returns B.
    fn check_images(&self, x: &Tensor) -> Result<i64> {
        let (c, s) = (self.cfg.in_channels, self.cfg.image_size);
        match x.size()[..] {
            [b, xc, h, w] if xc == c && h == s && w == s => Ok(b),
            ref got => Err(Error::Input(format!("glow: expected images (B, {c}, {s}, {s}), got {got:?}"))),
        }
    }

    /// Whether every ActNorm has been initialised (by a first forward pass, or loaded).
    pub fn is_initialized(&self) -> Result<bool> {
        for l in &self.levels {
            for s in &l.steps {
                if !s.actnorm.is_initialized()? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The flow and the priors. Shapes: y (B, C, S, S) -> see [`Encoded`].
    pub fn encode(&self, y: &Tensor) -> Result<Encoded> {
        let b = self.check_images(y)?;
        let mut h = y.shallow_clone();
        let mut logdet = Tensor::f_zeros([b], (y.kind(), y.device()))?;
        let mut log_pz = Tensor::f_zeros([b], (y.kind(), y.device()))?;
        let mut zs = Vec::with_capacity(self.levels.len());
        for level in &self.levels {
            // 1. squeeze, 2. steps of flow on the flattened plane
            let (c, s) = (level.c, level.side);
            let mut flat = squeeze2d(&h)?.f_reshape([b, c, s * s])?;
            for step in &level.steps {
                let (out, ld) = step.forward(&flat, None)?;
                logdet = logdet.f_add(&ld)?;
                flat = out;
            }
            h = flat.f_reshape([b, c, s, s])?;
            // 3. split (half leaves with a prior conditioned on the other half), or the top prior
            match &level.split {
                Some(prior) => {
                    let (z1, z2) = (h.f_narrow(1, 0, c / 2)?, h.f_narrow(1, c / 2, c / 2)?);
                    let (mean, logs) = prior.params(&z1)?;
                    log_pz = log_pz.f_add(&gaussian_log_p(&z2, &mean, &logs)?)?;
                    zs.push(z2);
                    h = z1;
                }
                None => {
                    let (mean, logs) = self.top_prior()?;
                    log_pz = log_pz.f_add(&gaussian_log_p(&h, &mean, &logs)?)?;
                    zs.push(h.shallow_clone());
                }
            }
        }
        Ok(Encoded { zs, logdet, log_pz })
    }

    /// Shapes: y (B, C, S, S) -> (zs as in [`Encoded`], log|det dz/dy| (B)).
    pub fn forward(&self, y: &Tensor) -> Result<(Vec<Tensor>, Tensor)> {
        let e = self.encode(y)?;
        Ok((e.zs, e.logdet))
    }

    /// log p(y) in nats, the continuous density of the preprocessed images. Shapes: (B, C, S, S)
    /// -> (B).
    pub fn log_prob(&self, y: &Tensor) -> Result<Tensor> {
        let e = self.encode(y)?;
        Ok(e.log_pz.f_add(&e.logdet)?)
    }

    /// The discrete NLL bound of the quantised images in bits per dimension,
    /// (-log p(y) + D n_bits_x ln 2) / (D ln 2). Shapes: (B, C, S, S) -> (B).
    pub fn bits_per_dim(&self, y: &Tensor) -> Result<Tensor> {
        let d = self.cfg.n_dims() as f64;
        Ok(self
            .log_prob(y)?
            .f_neg()?
            .f_div_scalar(d * std::f64::consts::LN_2)?
            .f_add_scalar(f64::from(self.cfg.n_bits_x))?)
    }

    /// Runs the levels backwards; `z_at(i, z1)` gives level i's latent (the split-off half given
    /// the half z1 that stays, or, for the last level, its whole output with z1 = None).
    fn reverse(&self, z_at: &mut dyn FnMut(usize, Option<&Tensor>) -> Result<Tensor>) -> Result<Tensor> {
        let mut h: Option<Tensor> = None;
        for (i, level) in self.levels.iter().enumerate().rev() {
            let (c, s) = (level.c, level.side);
            let z = z_at(i, h.as_ref())?;
            let want_c = if h.is_some() { c / 2 } else { c };
            let batch_ok = h.as_ref().is_none_or(|z1| z1.size().first() == z.size().first());
            if z.dim() != 4 || z.size()[1..] != [want_c, s, s] || !batch_ok {
                return Err(Error::Input(format!(
                    "glow inverse: level {i} expects (B, {want_c}, {s}, {s}) latents, got {:?}",
                    z.size()
                )));
            }
            let full = match &h {
                Some(z1) => Tensor::f_cat(&[z1, &z], 1)?,
                None => z,
            };
            let b = full.size()[0];
            let mut flat = full.f_reshape([b, c, s * s])?;
            for step in level.steps.iter().rev() {
                flat = step.inverse(&flat, None)?;
            }
            h = Some(unsqueeze2d(&flat.f_reshape([b, c, s, s])?)?);
        }
        h.ok_or_else(|| Error::Config("glow has no levels".into()))
    }

    /// The inverse of [`Glow::forward`]: zs (one per level, shapes as in [`Encoded`]) -> y
    /// (B, C, S, S).
    pub fn inverse(&self, zs: &[Tensor]) -> Result<Tensor> {
        if zs.len() != self.levels.len() {
            return Err(Error::Input(format!(
                "glow inverse: {} latents for {} levels",
                zs.len(),
                self.levels.len()
            )));
        }
        self.reverse(&mut |i, _| Ok(zs[i].shallow_clone()))
    }

    /// n samples y (n, C, S, S): every latent drawn from its prior with the standard deviation
    /// scaled by `temperature` (openai/glow's `eps_std`; 0.7 is the usual choice).
    pub fn sample(&self, n: i64, temperature: f64, device: Device) -> Result<Tensor> {
        if n < 1 || !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::Input(format!(
                "glow sample: need n >= 1 and a temperature >= 0, got {n} and {temperature}"
            )));
        }
        let kind = self.top_mean.kind();
        self.reverse(&mut |i, z1| {
            let (mean, logs) = match (z1, &self.levels[i].split) {
                (Some(z1), Some(prior)) => prior.params(z1)?,
                _ => {
                    let shape = [n, self.levels[i].c, self.levels[i].side, self.levels[i].side];
                    let (mean, logs) = self.top_prior()?;
                    (mean.f_expand(shape, false)?, logs.f_expand(shape, false)?)
                }
            };
            let eps = Tensor::f_randn(mean.size(), (kind, device))?;
            Ok(mean.f_add(&logs.f_exp()?.f_mul(&eps)?.f_mul_scalar(temperature)?)?)
        })
    }

    /// 8-bit pixels (B, C, S, S), values 0..=255 of any kind, -> y = (x' + u) / 2^n_bits_x - 0.5
    /// in [-0.5, 0.5), x' = floor(x / 2^(8 - n_bits_x)), u ~ U[0, 1) per value from libtorch's
    /// generator (openai/glow's `preprocess` plus its dequantisation noise).
    pub fn preprocess(&self, pixels: &Tensor) -> Result<Tensor> {
        self.check_images(pixels)?;
        let u = Tensor::f_rand(pixels.size(), (self.top_mean.kind(), self.top_mean.device()))?;
        self.preprocess_with_noise(pixels, &u)
    }

    /// As [`Glow::preprocess`] with the dequantisation noise u (same shape, values in [0, 1))
    /// given.
    pub fn preprocess_with_noise(&self, pixels: &Tensor, u: &Tensor) -> Result<Tensor> {
        self.check_images(pixels)?;
        if u.size() != pixels.size() {
            return Err(Error::Input(format!("glow: noise {:?} for pixels {:?}", u.size(), pixels.size())));
        }
        let (kind, device) = (self.top_mean.kind(), self.top_mean.device());
        let x = pixels.f_to_kind(kind)?.f_to_device(device)?;
        let x = if self.cfg.n_bits_x < 8 {
            x.f_div_scalar(f64::from(1u32 << (8 - self.cfg.n_bits_x)))?.f_floor()?
        } else {
            x
        };
        let u = u.f_to_kind(kind)?.f_to_device(device)?;
        Ok(x.f_add(&u)?.f_div_scalar(self.cfg.n_bins())?.f_sub_scalar(0.5)?)
    }

    /// y (B, C, S, S) -> images in the zoo convention, [-1, 1], quantised to the model's
    /// 2^n_bits_x levels (openai/glow's `postprocess`).
    pub fn postprocess(&self, y: &Tensor) -> Result<Tensor> {
        let bins = self.cfg.n_bins();
        Ok(y.f_add_scalar(0.5)?
            .f_mul_scalar(bins)?
            .f_floor()?
            .f_clamp(0.0, bins - 1.0)?
            .f_div_scalar((bins - 1.0).max(1.0) / 2.0)?
            .f_sub_scalar(1.0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::tests::{brute_logdet, max_diff};
    use tch::nn::VarStore;
    use tch::Kind;

    /// Replaces every zero-initialised output layer with small random values, so couplings and
    /// priors are not the identity / standard normal.
    fn randomise_zero_inits(vs: &VarStore) {
        tch::no_grad(|| {
            for (name, v) in vs.variables() {
                if name.contains("l_last") || name.contains("split") || name.starts_with("prior") {
                    v.shallow_clone().f_copy_(&(Tensor::randn_like(&v) * 0.1)).unwrap();
                }
            }
        });
    }

    fn pixels(b: i64, cfg: &Config) -> Tensor {
        Tensor::randint(256, [b, cfg.in_channels, cfg.image_size, cfg.image_size], (Kind::Uint8, Device::Cpu))
    }

    #[test]
    fn squeeze2d_is_space_to_depth_and_inverts() {
        let x = Tensor::arange(16, (Kind::Double, Device::Cpu)).view([1, 1, 4, 4]);
        let s = squeeze2d(&x).unwrap();
        assert_eq!(s.size(), vec![1, 4, 2, 2]);
        // channel 2 dy + dx holds the pixels at (2i + dy, 2j + dx)
        let want = [0.0, 2.0, 8.0, 10.0, 1.0, 3.0, 9.0, 11.0, 4.0, 6.0, 12.0, 14.0, 5.0, 7.0, 13.0, 15.0];
        assert_eq!(Vec::<f64>::try_from(&s.reshape([-1])).unwrap(), want);
        let m = Tensor::randn([2, 3, 6, 4], (Kind::Double, Device::Cpu));
        assert_eq!(max_diff(&unsqueeze2d(&squeeze2d(&m).unwrap()).unwrap(), &m), 0.0);
        assert!(squeeze2d(&Tensor::zeros([1, 1, 3, 4], (Kind::Float, Device::Cpu))).is_err());
        assert!(unsqueeze2d(&Tensor::zeros([1, 3, 2, 2], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn coupling_and_step_invert_and_logdet_matches_brute_force() {
        let mut vs = VarStore::new(Device::Cpu);
        let step = FlowStep::new(vs.root() / "s", 4, 3, 6, true).unwrap();
        vs.double();
        randomise_zero_inits(&vs);
        let x = Tensor::randn([5, 4, 9], (Kind::Double, Device::Cpu));
        let (z, ld) = step.forward(&x, None).unwrap();
        assert!(max_diff(&step.inverse(&z, None).unwrap(), &x) < 1e-10);
        // the coupling alone: x_a passes, the scale is sigmoid(r + 2) in (0, 1)
        let (zc, ldc) = step.coupling.forward(&x, None).unwrap();
        assert_eq!(max_diff(&zc.narrow(1, 0, 2), &x.narrow(1, 0, 2)), 0.0);
        assert!(ldc.max().double_value(&[]) < 0.0);
        assert!(max_diff(&step.coupling.inverse(&zc, None).unwrap(), &x) < 1e-10);
        let x0 = x.narrow(0, 0, 1);
        let brute = brute_logdet(&|t| step.coupling.forward(t, None).unwrap().0, &x0);
        assert!((ldc.double_value(&[0]) - brute).abs() < 1e-8, "{} vs {brute}", ldc.double_value(&[0]));
        let brute = brute_logdet(&|t| step.forward(t, None).unwrap().0, &x0);
        assert!((ld.double_value(&[0]) - brute).abs() < 1e-8, "{} vs {brute}", ld.double_value(&[0]));
        // the plane size is checked
        assert!(step.coupling.forward(&Tensor::randn([1, 4, 8], (Kind::Double, Device::Cpu)), None).is_err());
    }

    #[test]
    fn glow_inverts_and_logdet_matches_brute_force() {
        for cfg in [
            Config { image_size: 4, depth: 2, width: 4, ..Config::tiny() },
            Config {
                in_channels: 3,
                image_size: 2,
                n_levels: 1,
                depth: 2,
                width: 4,
                lu_decomposed: false,
                ..Config::tiny()
            },
        ] {
            tch::manual_seed(0);
            let mut vs = VarStore::new(Device::Cpu);
            let glow = Glow::new(vs.root(), &cfg).unwrap();
            vs.double();
            let y = glow.preprocess(&pixels(16, &cfg)).unwrap();
            assert!(!glow.is_initialized().unwrap());
            let _ = glow.forward(&y).unwrap(); // ActNorm's data-dependent init
            assert!(glow.is_initialized().unwrap());
            randomise_zero_inits(&vs);
            let (zs, ld) = glow.forward(&y).unwrap();
            assert_eq!(zs.len() as i64, cfg.n_levels);
            let total: i64 = zs.iter().map(|z| z.numel() as i64).sum();
            assert_eq!(total, 16 * cfg.n_dims());
            assert!(max_diff(&glow.inverse(&zs).unwrap(), &y) < 1e-10, "{cfg:?}");
            let flat = |t: &Tensor| {
                let (zs, _) = glow.forward(t).unwrap();
                Tensor::cat(&zs.iter().map(|z| z.reshape([-1])).collect::<Vec<_>>(), 0)
            };
            let brute = brute_logdet(&flat, &y.narrow(0, 0, 1));
            let ours = ld.double_value(&[0]);
            assert!(ours.abs() > 1e-2 && (ours - brute).abs() < 1e-8, "{cfg:?}: {ours} vs {brute}");
        }
    }

    #[test]
    fn f32_glow_inverts_within_1e4_and_samples() {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let cfg = Config::tiny();
        let glow = Glow::new(vs.root(), &cfg).unwrap();
        let y = glow.preprocess(&pixels(8, &cfg)).unwrap();
        assert!(y.min().double_value(&[]) >= -0.5 && y.max().double_value(&[]) < 0.5);
        let _ = glow.forward(&y).unwrap();
        randomise_zero_inits(&vs);
        let (zs, _) = glow.forward(&y).unwrap();
        assert_eq!(zs[0].size(), vec![8, 2, 4, 4]);
        assert_eq!(zs[1].size(), vec![8, 8, 2, 2]);
        assert!(max_diff(&glow.inverse(&zs).unwrap(), &y) < 1e-4);
        let s = glow.sample(3, 0.7, Device::Cpu).unwrap();
        assert_eq!(s.size(), vec![3, 1, 8, 8]);
        // temperature 0 is the mode path: deterministic
        let m1 = glow.sample(2, 0.0, Device::Cpu).unwrap();
        assert_eq!(max_diff(&m1, &glow.sample(2, 0.0, Device::Cpu).unwrap()), 0.0);
        let img = glow.postprocess(&s).unwrap();
        assert!(img.min().double_value(&[]) >= -1.0 && img.max().double_value(&[]) <= 1.0);
        // pixel 255 maps back to 255 (= 1.0), pixel 0 to -1
        let p = Tensor::from_slice(&[0u8, 255, 128, 7]).view([1, 1, 2, 2]).repeat([1, 1, 4, 4]);
        let back = glow.postprocess(&glow.preprocess(&p).unwrap()).unwrap();
        let want = p.to_kind(Kind::Float) / 127.5 - 1.0;
        assert!(max_diff(&back, &want) < 1e-6);
    }

    #[test]
    fn log_prob_is_the_prior_plus_the_logdet_and_bits_use_the_formula() {
        tch::manual_seed(2);
        let mut vs = VarStore::new(Device::Cpu);
        let cfg = Config::tiny();
        let glow = Glow::new(vs.root(), &cfg).unwrap();
        vs.double();
        let y = glow.preprocess(&pixels(4, &cfg)).unwrap();
        // zero-initialised priors are standard normal
        let (zs, ld) = glow.forward(&y).unwrap();
        let sq: Tensor = zs
            .iter()
            .map(|z| z.square().reshape([4, -1]).sum_dim_intlist([1i64].as_slice(), false, Kind::Double))
            .sum::<Tensor>();
        let d = cfg.n_dims() as f64;
        let want = sq * -0.5 - 0.5 * d * (2.0 * std::f64::consts::PI).ln() + &ld;
        assert!(max_diff(&glow.log_prob(&y).unwrap(), &want) < 1e-9);
        let bits = glow.bits_per_dim(&y).unwrap();
        let want_bits = -want / (d * std::f64::consts::LN_2) + 8.0;
        assert!(max_diff(&bits, &want_bits) < 1e-9);
        // fewer bits: openai's floor(x / 2^(8 - n)) before the noise
        let g1 =
            Glow::new(VarStore::new(Device::Cpu).root(), &Config { n_bits_x: 1, ..cfg.clone() }).unwrap();
        let p = Tensor::from_slice(&[0u8, 127, 128, 255]).view([1, 1, 2, 2]).repeat([1, 1, 4, 4]);
        let y1 = g1.preprocess(&p).unwrap();
        // the 2x2 tile [[0, 127], [128, 255]] -> bins 0, 0, 1, 1 -> y < 0, < 0, >= 0, >= 0
        let low = y1.lt(0.0).narrow(2, 0, 2).narrow(3, 0, 2).reshape([-1]);
        assert_eq!(Vec::<bool>::try_from(&low).unwrap(), vec![true, true, false, false]);
    }

    #[test]
    fn bad_configs_and_inputs_are_errors() {
        let vs = VarStore::new(Device::Cpu);
        for bad in [
            Config { image_size: 28, n_levels: 3, ..Config::tiny() },
            Config { n_bits_x: 0, ..Config::tiny() },
            Config { n_bits_x: 9, ..Config::tiny() },
            Config { depth: 0, ..Config::tiny() },
        ] {
            let e = Glow::new(vs.root(), &bad).err().unwrap().to_string();
            assert!(e.starts_with("glow config"), "{e}");
        }
        let cfg = Config::tiny();
        let glow = Glow::new(vs.root() / "g", &cfg).unwrap();
        let f = |s: &[i64]| Tensor::zeros(s, (Kind::Float, Device::Cpu));
        for shape in [&[2, 1, 7, 7][..], &[2, 3, 8, 8], &[1, 8, 8], &[2, 1, 8, 16]] {
            let e = glow.log_prob(&f(shape)).err().unwrap().to_string();
            assert!(e.contains("expected images (B, 1, 8, 8)"), "{e}");
            assert!(glow.preprocess(&f(shape)).is_err());
        }
        assert!(glow
            .inverse(&[f(&[1, 2, 4, 4])])
            .err()
            .unwrap()
            .to_string()
            .contains("1 latents for 2 levels"));
        let e = glow.inverse(&[f(&[1, 2, 4, 4]), f(&[1, 4, 2, 2])]).err().unwrap().to_string();
        assert!(e.contains("level 1 expects (B, 8, 2, 2)"), "{e}");
        assert!(glow.sample(0, 0.7, Device::Cpu).is_err());
        assert!(glow.sample(2, f64::NAN, Device::Cpu).is_err());
    }
}
