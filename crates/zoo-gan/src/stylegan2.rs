//! A StyleGAN2-style generator and residual discriminator (Karras et al. 2020, "Analyzing and
//! Improving the Image Quality of StyleGAN"), with the semantics of NVIDIA's
//! stylegan2-ada-pytorch `training/networks.py` (G architecture "skip", D architecture "resnet");
//! rosinality's stylegan2-pytorch `model.py` builds the same networks under other names.
//!
//! - Mapping: z -> normalise its second moment (pixel norm) -> `mapping_layers` equalised-lr
//!   linear layers with leaky ReLU and a learning-rate multiplier (0.01 in the paper) -> w,
//!   broadcast to one w per synthesis layer (`num_ws`). A running mean of w (`w_avg`, updated in
//!   training) is the centre of the truncation trick: w' = w_avg + psi (w - w_avg).
//! - Synthesis: a learned 4x4 constant, then per resolution a 3x3 modulated conv that upsamples
//!   (not at 4x4) and one that does not, each followed by noise (per-pixel, a learned per-layer
//!   strength), bias and leaky ReLU; a 1x1 modulated (not demodulated) ToRGB per resolution whose
//!   outputs are summed after upsampling the running image ("skip" generator).
//! - Discriminator: a 1x1 fromRGB, then residual blocks (two 3x3 convs, the second downsampling,
//!   plus a 1x1 downsampling skip, summed with gain sqrt(1/2)), then minibatch standard deviation,
//!   a 3x3 conv, a linear layer and the logit.
//! - Every weight is stored N(0, 1) (N(0, 1/lr_multiplier) in the mapping) and scaled at run time
//!   by lr_multiplier / sqrt(fan_in): the equalised learning rate.
//! - Resampling uses the paper's FIR filter [1, 3, 3, 1] (`resample_filter`), not bilinear, with
//!   NVIDIA's `upfirdn2d` padding, so the blur and its alignment are the reference's.
//!
//! Parameter names are those of stylegan2-ada-pytorch's `state_dict()`: `mapping.fc0.weight`,
//! `mapping.w_avg`, `synthesis.b4.const`, `synthesis.b8.conv0.affine.weight`,
//! `synthesis.b8.conv0.noise_strength`, `synthesis.b8.conv0.noise_const`,
//! `synthesis.b8.torgb.weight`, `b32.fromrgb.weight`, `b32.skip.weight`, `b4.fc.weight`, `b4.out.bias`, ... Not kept: its
//! `resample_filter` buffers (the filter is a config value here) and the label embedding
//! (unconditional only). Loading one of NVIDIA's pickles is not implemented (they need their code
//! to unpickle) and has not been tried.
//!
//! Left out against the paper: path-length regularisation, mixed precision and `conv_clamp`,
//! conditioning, lazy regularisation's Adam adjustment (see docs/gan.md), and the "orig" and
//! "resnet" generator / "skip" discriminator variants.
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use crate::layers::check_images;
use crate::{Error, Result};

/// Leaky ReLU's slope and the gain that keeps unit variance after it (NVIDIA's `bias_act`).
const LRELU_SLOPE: f64 = 0.2;
const LRELU_GAIN: f64 = std::f64::consts::SQRT_2;

// --------------------------------------------------------------------------------------------
// 1. FIR resampling
// --------------------------------------------------------------------------------------------

/// The 2-D filter of `taps`: their outer product, normalised to sum 1. Shapes: -> (f, f) f32.
pub fn setup_filter(taps: &[f64], device: Device) -> Result<Tensor> {
    let t = Tensor::f_from_slice(taps)?.f_to_kind(Kind::Float)?.f_to_device(device)?;
    let f = t.f_outer(&t)?;
    Ok(f.f_div(&f.f_sum(Kind::Float)?)?)
}

/// Upsample by inserting zeros, pad, filter with the 2-D FIR filter `f` (times `gain`),
/// downsample by keeping every `down`-th pixel: NVIDIA's `upfirdn2d` with the same padding on
/// both axes. `pad` = (before, after), with respect to the upsampled image.
/// Shapes: (B, C, H, W) -> (B, C, (H up + p0 + p1 - f + 1) / down, ...).
pub fn upfirdn2d(x: &Tensor, f: &Tensor, up: i64, down: i64, pad: (i64, i64), gain: f64) -> Result<Tensor> {
    let [b, c, h, w] = size4(x)?;
    let [fh, fw] = f.size()[..] else {
        return Err(Error::Config(format!("upfirdn2d: the filter must be 2-D, got {:?}", f.size())));
    };
    let mut x = x.shallow_clone();
    if up > 1 {
        x = x.f_reshape([b, c, h, 1, w, 1])?.f_constant_pad_nd([0, up - 1, 0, 0, 0, up - 1])?.f_reshape([
            b,
            c,
            h * up,
            w * up,
        ])?;
    }
    if pad.0 < 0 || pad.1 < 0 {
        return Err(Error::Config(format!("upfirdn2d: negative padding {pad:?}")));
    }
    x = x.f_constant_pad_nd([pad.0, pad.1, pad.0, pad.1])?;
    // Convolution (not correlation) with f, channel by channel: a depthwise conv (groups = C),
    // which libtorch runs ~20x faster on the CPU than folding the channels into the batch.
    let k = f.f_flip([0, 1])?.f_mul_scalar(gain)?.f_to_kind(x.kind())?.f_reshape([1, 1, fh, fw])?;
    let mut y = x.f_conv2d::<Tensor>(&k.f_repeat([c, 1, 1, 1])?, None, [1, 1], [0, 0], [1, 1], c)?;
    if down > 1 {
        y = y.f_slice(2, 0, None, down)?.f_slice(3, 0, None, down)?;
    }
    Ok(y)
}

/// 2x upsampling of an image with the FIR filter (NVIDIA's `upsample2d`). Shapes: (B, C, H, W)
/// -> (B, C, 2H, 2W).
pub fn upsample2d(x: &Tensor, f: &Tensor) -> Result<Tensor> {
    let fw = f.size()[1];
    upfirdn2d(x, f, 2, 1, ((fw + 1) / 2, (fw - 2) / 2), 4.0)
}

fn size4(x: &Tensor) -> Result<[i64; 4]> {
    match x.size()[..] {
        [b, c, h, w] => Ok([b, c, h, w]),
        ref s => Err(Error::Input(format!("expected a (B, C, H, W) tensor, got {s:?}"))),
    }
}

/// `act(x + b) * gain` with the bias broadcast over dimension 1.
fn bias_act(x: &Tensor, b: Option<&Tensor>, lrelu: bool, gain: f64) -> Result<Tensor> {
    let mut x = x.shallow_clone();
    if let Some(b) = b {
        let mut shape = vec![1i64; x.dim()];
        shape[1] = -1;
        x = x.f_add(&b.f_to_kind(x.kind())?.f_reshape(shape)?)?;
    }
    if lrelu {
        x = zoo_core::ops::leaky_relu(&x, LRELU_SLOPE)?;
    }
    Ok(if gain != 1.0 { x.f_mul_scalar(gain)? } else { x })
}

// --------------------------------------------------------------------------------------------
// 2. Equalised learning-rate layers
// --------------------------------------------------------------------------------------------

/// A linear layer with equalised learning rate (NVIDIA's `FullyConnectedLayer`, rosinality's
/// `EqualLinear`): `weight` is stored N(0, 1/lr) and used times `lr / sqrt(in)`, `bias` used
/// times `lr`. Adam's steps on the stored values are then the same size for every layer, and
/// lr < 1 slows a layer down (the mapping network's 0.01).
pub struct FullyConnectedLayer {
    pub weight: Tensor,
    pub bias: Tensor,
    pub weight_gain: f64,
    pub bias_gain: f64,
    pub lrelu: bool,
}

impl FullyConnectedLayer {
    pub fn new(
        p: &nn::Path,
        cin: i64,
        cout: i64,
        lrelu: bool,
        lr_multiplier: f64,
        bias_init: f64,
    ) -> Result<Self> {
        let weight =
            p.f_var("weight", &[cout, cin], Init::Randn { mean: 0.0, stdev: 1.0 / lr_multiplier })?;
        let bias = p.f_var("bias", &[cout], Init::Const(bias_init))?;
        Ok(FullyConnectedLayer {
            weight,
            bias,
            weight_gain: lr_multiplier / (cin as f64).sqrt(),
            bias_gain: lr_multiplier,
            lrelu,
        })
    }

    /// Shapes: (B, in) -> (B, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.f_to_kind(x.kind())?.f_mul_scalar(self.weight_gain)?;
        let b = self.bias.f_mul_scalar(self.bias_gain)?;
        bias_act(&x.f_matmul(&w.f_tr()?)?, Some(&b), self.lrelu, if self.lrelu { LRELU_GAIN } else { 1.0 })
    }
}

/// A convolution with equalised learning rate (NVIDIA's `Conv2dLayer`), "same" padding, and
/// optional 2x downsampling: FIR blur, then a stride-2 conv (for 1x1: blur and subsample, then
/// the conv), as NVIDIA's `conv2d_resample` does it.
pub struct Conv2dLayer {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub weight_gain: f64,
    pub lrelu: bool,
    down: bool,
    filter: Tensor,
}

/// What a [`Conv2dLayer`] has: a bias, leaky ReLU (else linear), 2x downsampling.
#[derive(Debug, Clone, Copy)]
struct ConvOpts {
    bias: bool,
    lrelu: bool,
    down: bool,
}

/// Bias and leaky ReLU, no resampling: most of the discriminator's convs.
const CONV_LRELU: ConvOpts = ConvOpts { bias: true, lrelu: true, down: false };

impl Conv2dLayer {
    fn new(p: &nn::Path, cin: i64, cout: i64, kernel: i64, opts: ConvOpts, filter: &Tensor) -> Result<Self> {
        let weight =
            p.f_var("weight", &[cout, cin, kernel, kernel], Init::Randn { mean: 0.0, stdev: 1.0 })?;
        let bias = if opts.bias { Some(p.f_var("bias", &[cout], Init::Const(0.0))?) } else { None };
        Ok(Conv2dLayer {
            weight,
            bias,
            weight_gain: 1.0 / ((cin * kernel * kernel) as f64).sqrt(),
            lrelu: opts.lrelu,
            down: opts.down,
            filter: filter.shallow_clone(),
        })
    }

    /// Shapes: (B, in, H, W) -> (B, out, H, W), or (B, out, H/2, W/2) when downsampling.
    /// `gain` multiplies the activation's own gain (the residual blocks' sqrt(1/2)).
    fn forward(&self, x: &Tensor, gain: f64) -> Result<Tensor> {
        let w = self.weight.f_to_kind(x.kind())?.f_mul_scalar(self.weight_gain)?;
        let k = w.size()[3];
        let p = k / 2;
        let y = if self.down {
            let fw = self.filter.size()[1];
            let pad = (p + (fw - 1) / 2, p + (fw - 2) / 2);
            if k == 1 {
                let x = upfirdn2d(x, &self.filter, 1, 2, pad, 1.0)?;
                x.f_conv2d::<Tensor>(&w, None, [1, 1], [0, 0], [1, 1], 1)?
            } else {
                let x = upfirdn2d(x, &self.filter, 1, 1, pad, 1.0)?;
                x.f_conv2d::<Tensor>(&w, None, [2, 2], [0, 0], [1, 1], 1)?
            }
        } else {
            x.f_conv2d::<Tensor>(&w, None, [1, 1], [p, p], [1, 1], 1)?
        };
        let act_gain = if self.lrelu { LRELU_GAIN } else { 1.0 };
        bias_act(&y, self.bias.as_ref(), self.lrelu, act_gain * gain)
    }
}

// --------------------------------------------------------------------------------------------
// 3. Modulated convolution
// --------------------------------------------------------------------------------------------

/// Per-sample weights: `weight` scaled by each sample's style on the input channels and, with
/// `demodulate`, each output filter divided by its L2 norm (plus 1e-8 under the square root), so
/// unit-variance inputs give unit-variance outputs.
/// Shapes: weight (O, I, k, k), styles (B, I) -> (B, O, I, k, k).
pub fn modulated_weight(weight: &Tensor, styles: &Tensor, demodulate: bool) -> Result<Tensor> {
    let [b, i] = styles.size()[..] else {
        return Err(Error::Input(format!("styles must be (B, I), got {:?}", styles.size())));
    };
    let w = weight.f_unsqueeze(0)?.f_mul(&styles.f_reshape([b, 1, i, 1, 1])?)?;
    if !demodulate {
        return Ok(w);
    }
    let d = w
        .f_square()?
        .f_sum_dim_intlist([2i64, 3, 4].as_slice(), true, w.kind())?
        .f_add_scalar(1e-8)?
        .f_rsqrt()?;
    Ok(w.f_mul(&d)?)
}

/// The padding of NVIDIA's `conv2d_resample` for a stride-2 transposed k x k conv followed by the
/// FIR filter (fw taps): (transposed conv padding, filter padding before, after).
fn up_conv_pads(k: i64, fw: i64) -> (i64, i64, i64) {
    let p = k / 2;
    let p0 = p + (fw + 1) / 2 - (k - 1);
    let p1 = p + (fw - 2) / 2 - (k - 2);
    let pt = (-p0).min(-p1).max(0);
    (pt, p0 + pt, p1 + pt)
}

/// A modulated convolution with "same" padding, optionally upsampling 2x (`up_filter`: a
/// stride-2 transposed conv, then the FIR filter with gain 4, which equals zero-insertion + FIR
/// + a true convolution with the weight, NVIDIA's and rosinality's up-conv).
///
/// `fused` runs it as NVIDIA's fused op: per-sample weights ([`modulated_weight`]) in one
/// grouped convolution (groups = batch). Otherwise the activations are scaled instead: x times
/// the styles, a plain conv with the shared weight, times the demodulation coefficients, which
/// is the same function and much faster to train on the CPU (NVIDIA trains this way too).
/// `noise` is added after the conv, before the caller's bias.
/// Shapes: x (B, I, H, W), weight (O, I, k, k), styles (B, I), noise broadcastable to the
/// output -> (B, O, H, W), or (B, O, 2H, 2W) when upsampling.
pub fn modulated_conv2d(
    x: &Tensor,
    weight: &Tensor,
    styles: &Tensor,
    noise: Option<&Tensor>,
    demodulate: bool,
    up_filter: Option<&Tensor>,
    fused: bool,
) -> Result<Tensor> {
    let [b, i, h, w] = size4(x)?;
    let [o, wi, kh, kw] = size4(weight)?;
    if wi != i || kh != kw || styles.size() != [b, i] {
        return Err(Error::Input(format!(
            "modulated_conv2d: input {:?}, weight {:?}, styles {:?} do not fit",
            x.size(),
            weight.size(),
            styles.size()
        )));
    }
    let weight = weight.f_to_kind(x.kind())?;
    let styles = styles.f_to_kind(x.kind())?;
    let k = kh;
    // conv: (N, I', H, W) -> (N, O', H', W') with weights w (O', I'/g, k, k), `groups` of them.
    let conv = |x: &Tensor, w: &Tensor, groups: i64| -> Result<Tensor> {
        match up_filter {
            None => Ok(x.f_conv2d::<Tensor>(w, None, [1, 1], [k / 2, k / 2], [1, 1], groups)?),
            Some(f) => {
                // conv_transpose2d takes (I', O'/g, k, k): swap in and out within each group.
                let (og, ii) = (w.size()[0] / groups, w.size()[1]);
                let wt = w.f_reshape([groups, og, ii, k, k])?.f_transpose(1, 2)?;
                let wt = wt.f_reshape([groups * ii, og, k, k])?;
                let (pt, p0, p1) = up_conv_pads(k, f.size()[1]);
                let y =
                    x.f_conv_transpose2d::<Tensor>(&wt, None, [2, 2], [pt, pt], [0, 0], groups, [1, 1])?;
                upfirdn2d(&y, f, 1, 1, (p0, p1), 4.0)
            }
        }
    };
    let y = if fused {
        let wb = modulated_weight(&weight, &styles, demodulate)?; // (B, O, I, k, k)
        let y = conv(&x.f_reshape([1, b * i, h, w])?, &wb.f_reshape([b * o, i, k, k])?, b)?;
        let (ho, wo) = (y.size()[2], y.size()[3]);
        y.f_reshape([b, o, ho, wo])?
    } else {
        let y = conv(&x.f_mul(&styles.f_reshape([b, i, 1, 1])?)?, &weight, 1)?;
        if demodulate {
            // sum over (I, k, k) of (w s)^2 = (sum_kk w^2) @ s^2: the norms without (B, O, I, k, k).
            // (O, I)
            let w2 = weight.f_square()?.f_sum_dim_intlist([2i64, 3].as_slice(), false, weight.kind())?;
            let d = styles.f_square()?.f_matmul(&w2.f_tr()?)?.f_add_scalar(1e-8)?.f_rsqrt()?; // (B, O)
            y.f_mul(&d.f_reshape([b, o, 1, 1])?)?
        } else {
            y
        }
    };
    Ok(match noise {
        Some(n) => y.f_add(n)?,
        None => y,
    })
}

// --------------------------------------------------------------------------------------------
// 4. Generator parts
// --------------------------------------------------------------------------------------------

/// Where the per-pixel noise of the synthesis layers comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseMode {
    /// Fresh N(0, 1) per sample and forward, from libtorch's generator (training).
    Random,
    /// Each layer's stored `noise_const` image (NVIDIA's default for sampling): the image is a
    /// function of z alone.
    Const,
    /// No noise.
    None,
}

/// How a generator forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub noise: NoiseMode,
    /// One grouped conv per modulated conv (see [`modulated_conv2d`]); the same function.
    pub fused_modconv: bool,
    /// Move the running mean of w towards this batch's mean w (training).
    pub update_w_avg: bool,
}

impl Mode {
    /// Training: random noise, unfused convs, w_avg tracked.
    pub fn train() -> Self {
        Mode { noise: NoiseMode::Random, fused_modconv: false, update_w_avg: true }
    }

    /// Sampling: constant noise, fused convs, w_avg left alone.
    pub fn eval() -> Self {
        Mode { noise: NoiseMode::Const, fused_modconv: true, update_w_avg: false }
    }
}

/// A modulated 3x3 conv (upsampling or not), noise with a learned strength, bias and leaky ReLU
/// (NVIDIA's `SynthesisLayer`). `affine` maps w to the styles, one per input channel, its bias
/// starting at 1 so the styles start near 1.
pub struct SynthesisLayer {
    pub affine: FullyConnectedLayer,
    pub weight: Tensor,
    pub bias: Tensor,
    /// Scalar, starts at 0: the noise is off until training turns it on.
    pub noise_strength: Tensor,
    /// (res, res) buffer: the noise in [`NoiseMode::Const`].
    pub noise_const: Tensor,
    pub resolution: i64,
    up_filter: Option<Tensor>,
}

impl SynthesisLayer {
    fn new(
        p: &nn::Path,
        cin: i64,
        cout: i64,
        w_dim: i64,
        resolution: i64,
        up_filter: Option<&Tensor>,
    ) -> Result<Self> {
        let affine = FullyConnectedLayer::new(&(p / "affine"), w_dim, cin, false, 1.0, 1.0)?;
        let weight = p.f_var("weight", &[cout, cin, 3, 3], Init::Randn { mean: 0.0, stdev: 1.0 })?;
        let noise_const =
            p.add("noise_const", Tensor::f_randn([resolution, resolution], (p.kind(), p.device()))?, false);
        let noise_strength = p.f_zeros("noise_strength", &[])?;
        let bias = p.f_zeros("bias", &[cout])?;
        Ok(SynthesisLayer {
            affine,
            weight,
            bias,
            noise_strength,
            noise_const,
            resolution,
            up_filter: up_filter.map(|f| f.shallow_clone()),
        })
    }

    /// Shapes: x (B, in, r, r) (r = res/2 when upsampling), w (B, w_dim) -> (B, out, res, res).
    fn forward(&self, x: &Tensor, w: &Tensor, mode: &Mode) -> Result<Tensor> {
        let styles = self.affine.forward(w)?;
        let b = x.size()[0];
        let res = self.resolution;
        let strength = self.noise_strength.f_to_kind(x.kind())?;
        let noise = match mode.noise {
            NoiseMode::Random => {
                Some(Tensor::f_randn([b, 1, res, res], (x.kind(), x.device()))?.f_mul(&strength)?)
            }
            NoiseMode::Const => Some(self.noise_const.f_to_kind(x.kind())?.f_mul(&strength)?),
            NoiseMode::None => None,
        };
        let y = modulated_conv2d(
            x,
            &self.weight,
            &styles,
            noise.as_ref(),
            true,
            self.up_filter.as_ref(),
            mode.fused_modconv,
        )?;
        bias_act(&y, Some(&self.bias), true, LRELU_GAIN)
    }
}

/// A 1x1 modulated conv to image channels, without demodulation (NVIDIA's `ToRGBLayer`): the
/// styles carry the equalised-lr gain 1/sqrt(in).
pub struct ToRgbLayer {
    pub affine: FullyConnectedLayer,
    pub weight: Tensor,
    pub bias: Tensor,
    weight_gain: f64,
}

impl ToRgbLayer {
    fn new(p: &nn::Path, cin: i64, img_channels: i64, w_dim: i64) -> Result<Self> {
        let affine = FullyConnectedLayer::new(&(p / "affine"), w_dim, cin, false, 1.0, 1.0)?;
        let weight = p.f_var("weight", &[img_channels, cin, 1, 1], Init::Randn { mean: 0.0, stdev: 1.0 })?;
        let bias = p.f_zeros("bias", &[img_channels])?;
        Ok(ToRgbLayer { affine, weight, bias, weight_gain: 1.0 / (cin as f64).sqrt() })
    }

    /// Shapes: x (B, in, r, r), w (B, w_dim) -> (B, img_channels, r, r).
    fn forward(&self, x: &Tensor, w: &Tensor, fused: bool) -> Result<Tensor> {
        let styles = self.affine.forward(w)?.f_mul_scalar(self.weight_gain)?;
        let y = modulated_conv2d(x, &self.weight, &styles, None, false, None, fused)?;
        bias_act(&y, Some(&self.bias), false, 1.0)
    }
}

/// One resolution of the synthesis network (NVIDIA's `SynthesisBlock`, architecture "skip").
/// The 4x4 block starts from `const` and has one conv; the others upsample in `conv0`.
pub struct SynthesisBlock {
    pub resolution: i64,
    pub r#const: Option<Tensor>,
    pub conv0: Option<SynthesisLayer>,
    pub conv1: SynthesisLayer,
    pub torgb: ToRgbLayer,
    filter: Tensor,
}

impl SynthesisBlock {
    /// The ws this block's convs use (its ToRGB shares the next block's first w).
    fn num_conv(&self) -> i64 {
        if self.conv0.is_some() {
            2
        } else {
            1
        }
    }

    /// Shapes: x (B, in, res/2, res/2) or None (4x4), img (B, C, res/2, res/2) or None,
    /// ws (B, num_conv + 1, w_dim) -> x (B, out, res, res), img (B, C, res, res).
    fn forward(
        &self,
        x: Option<&Tensor>,
        img: Option<&Tensor>,
        ws: &Tensor,
        mode: &Mode,
    ) -> Result<(Tensor, Tensor)> {
        let b = ws.size()[0];
        let wi = |i: i64| ws.f_select(1, i);
        let x = match (&self.r#const, &self.conv0, x) {
            (Some(c), _, _) => {
                let x = c.f_unsqueeze(0)?.f_repeat([b, 1, 1, 1])?.f_to_kind(ws.kind())?;
                self.conv1.forward(&x, &wi(0)?, mode)?
            }
            (None, Some(conv0), Some(x)) => {
                let x = conv0.forward(x, &wi(0)?, mode)?;
                self.conv1.forward(&x, &wi(1)?, mode)?
            }
            _ => return Err(Error::Input(format!("synthesis block {} has no input", self.resolution))),
        };
        let y = self.torgb.forward(&x, &wi(self.num_conv())?, mode.fused_modconv)?;
        let img = match img {
            Some(img) => upsample2d(img, &self.filter)?.f_add(&y)?,
            None => y,
        };
        Ok((x, img))
    }
}

/// The synthesis network: ws (one per layer) -> image.
pub struct SynthesisNetwork {
    pub blocks: Vec<SynthesisBlock>,
    pub num_ws: i64,
}

impl SynthesisNetwork {
    fn new(p: &nn::Path, cfg: &Config) -> Result<Self> {
        let filter = setup_filter(&cfg.resample_filter, p.device())?;
        let mut blocks = Vec::new();
        let mut num_ws = 0;
        for res in cfg.resolutions() {
            let bp = p / format!("b{res}");
            let cout = cfg.channels(res);
            let (r#const, conv0) = if res == 4 {
                (Some(bp.f_var("const", &[cout, 4, 4], Init::Randn { mean: 0.0, stdev: 1.0 })?), None)
            } else {
                let cin = cfg.channels(res / 2);
                (None, Some(SynthesisLayer::new(&(&bp / "conv0"), cin, cout, cfg.w_dim, res, Some(&filter))?))
            };
            let conv1 = SynthesisLayer::new(&(&bp / "conv1"), cout, cout, cfg.w_dim, res, None)?;
            let torgb = ToRgbLayer::new(&(&bp / "torgb"), cout, cfg.img_channels, cfg.w_dim)?;
            let block = SynthesisBlock {
                resolution: res,
                r#const,
                conv0,
                conv1,
                torgb,
                filter: filter.shallow_clone(),
            };
            num_ws += block.num_conv();
            blocks.push(block);
        }
        Ok(SynthesisNetwork { blocks, num_ws: num_ws + 1 })
    }

    /// Shapes: ws (B, num_ws, w_dim) -> images (B, C, S, S), roughly in [-1, 1] (no tanh).
    pub fn forward(&self, ws: &Tensor, mode: &Mode) -> Result<Tensor> {
        let (mut x, mut img): (Option<Tensor>, Option<Tensor>) = (None, None);
        let mut w_idx = 0;
        for block in &self.blocks {
            let n = block.num_conv();
            let cur = ws.f_narrow(1, w_idx, n + 1)?;
            let (nx, nimg) = block.forward(x.as_ref(), img.as_ref(), &cur, mode)?;
            (x, img) = (Some(nx), Some(nimg));
            w_idx += n;
        }
        img.ok_or_else(|| Error::Config("the synthesis network has no blocks".into()))
    }
}

/// The mapping network: z -> w, with the running mean `w_avg` for truncation.
pub struct MappingNetwork {
    pub fcs: Vec<FullyConnectedLayer>,
    /// (w_dim) buffer.
    pub w_avg: Tensor,
    pub w_avg_beta: f64,
    pub num_ws: i64,
}

impl MappingNetwork {
    fn new(p: &nn::Path, cfg: &Config, num_ws: i64) -> Result<Self> {
        let mut fcs = Vec::new();
        for i in 0..cfg.mapping_layers {
            let cin = if i == 0 { cfg.z_dim } else { cfg.w_dim };
            fcs.push(FullyConnectedLayer::new(
                &(p / format!("fc{i}")),
                cin,
                cfg.w_dim,
                true,
                cfg.mapping_lr_multiplier,
                0.0,
            )?);
        }
        let w_avg = p.f_zeros_no_train("w_avg", &[cfg.w_dim])?;
        Ok(MappingNetwork { fcs, w_avg, w_avg_beta: cfg.w_avg_beta, num_ws })
    }

    /// Shapes: z (B, z_dim) -> w (B, w_dim).
    pub fn forward_w(&self, z: &Tensor, update_w_avg: bool) -> Result<Tensor> {
        // Pixel norm: unit second moment per sample.
        let ms = z.f_square()?.f_mean_dim([1i64].as_slice(), true, z.kind())?;
        let mut x = z.f_mul(&ms.f_add_scalar(1e-8)?.f_rsqrt()?)?;
        for fc in &self.fcs {
            x = fc.forward(&x)?;
        }
        if update_w_avg {
            tch::no_grad(|| -> Result<()> {
                let mean = x.f_detach()?.f_mean_dim([0i64].as_slice(), false, x.kind())?;
                let new = mean.f_lerp(&self.w_avg.f_to_kind(x.kind())?, self.w_avg_beta)?;
                self.w_avg.shallow_clone().f_copy_(&new)?;
                Ok(())
            })?;
        }
        Ok(x)
    }

    /// Truncation around `w_avg`: w_avg + psi (w - w_avg). Shapes: (B, ..., w_dim) -> same.
    pub fn truncate(&self, w: &Tensor, psi: f64) -> Result<Tensor> {
        if psi == 1.0 {
            return Ok(w.shallow_clone());
        }
        Ok(self.w_avg.f_to_kind(w.kind())?.f_lerp(w, psi)?)
    }

    /// Shapes: z (B, z_dim) -> ws (B, num_ws, w_dim), truncated with `psi`.
    pub fn forward(&self, z: &Tensor, psi: f64, update_w_avg: bool) -> Result<Tensor> {
        let w = self.forward_w(z, update_w_avg)?;
        let ws = w.f_unsqueeze(1)?.f_repeat([1, self.num_ws, 1])?;
        self.truncate(&ws, psi)
    }
}

/// A second latent for style mixing: ws from `cutoff` on come from `z`.
pub struct StyleMix<'a> {
    pub z: &'a Tensor,
    pub cutoff: i64,
}

// --------------------------------------------------------------------------------------------
// 5. Discriminator parts
// --------------------------------------------------------------------------------------------

/// A residual block at one resolution (NVIDIA's `DiscriminatorBlock`, architecture "resnet"):
/// fromRGB (first block only), conv0, downsampling conv1, and a 1x1 downsampling skip.
pub struct DiscriminatorBlock {
    pub resolution: i64,
    pub fromrgb: Option<Conv2dLayer>,
    pub conv0: Conv2dLayer,
    pub conv1: Conv2dLayer,
    pub skip: Conv2dLayer,
}

impl DiscriminatorBlock {
    /// Shapes: x (B, tmp, r, r) (or the image (B, C, r, r) for the first block) -> (B, out, r/2, r/2).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = match &self.fromrgb {
            Some(f) => f.forward(x, 1.0)?,
            None => x.shallow_clone(),
        };
        // The two paths are summed with gain sqrt(1/2) each, keeping unit variance.
        let g = std::f64::consts::FRAC_1_SQRT_2;
        let y = self.skip.forward(&x, g)?;
        let x = self.conv0.forward(&x, 1.0)?;
        let x = self.conv1.forward(&x, g)?;
        Ok(y.f_add(&x)?)
    }
}

/// Minibatch standard deviation (Karras et al. 2018, as NVIDIA's `MinibatchStdLayer`): the batch
/// is split into groups of `group_size` (sample i in group i mod B/G); per group, the standard
/// deviation of each feature over the group, averaged over (channels/F, H, W), is appended as F
/// constant channels. Shapes: (B, C, H, W) -> (B, C + F, H, W).
pub fn minibatch_stddev(x: &Tensor, group_size: i64, num_channels: i64) -> Result<Tensor> {
    let [n, c, h, w] = size4(x)?;
    let g = group_size.min(n);
    let f = num_channels;
    if g < 1 || n % g != 0 || c % f != 0 {
        return Err(Error::Input(format!(
            "minibatch stddev: a batch of {n} does not split into groups of {g} (or {c} channels into {f})"
        )));
    }
    let y = x.f_reshape([g, -1, f, c / f, h, w])?;
    let y = y.f_sub(&y.f_mean_dim([0i64].as_slice(), true, x.kind())?)?;
    let y = y.f_square()?.f_mean_dim([0i64].as_slice(), false, x.kind())?.f_add_scalar(1e-8)?.f_sqrt()?;
    let y = y.f_mean_dim([2i64, 3, 4].as_slice(), false, x.kind())?; // (B/G, F)
    let y = y.f_reshape([-1, f, 1, 1])?.f_repeat([g, 1, h, w])?;
    Ok(Tensor::f_cat(&[x, &y], 1)?)
}

/// The 4x4 end of the discriminator (NVIDIA's `DiscriminatorEpilogue`): minibatch stddev, 3x3
/// conv, linear + leaky ReLU, linear to one logit.
pub struct DiscriminatorEpilogue {
    pub conv: Conv2dLayer,
    pub fc: FullyConnectedLayer,
    pub out: FullyConnectedLayer,
    mbstd_group_size: i64,
    mbstd_num_channels: i64,
}

impl DiscriminatorEpilogue {
    /// Shapes: (B, C, 4, 4) -> (B, 1).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.mbstd_num_channels > 0 {
            minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)?
        } else {
            x.shallow_clone()
        };
        let x = self.conv.forward(&x, 1.0)?;
        let x = self.fc.forward(&x.f_flatten(1, -1)?)?;
        self.out.forward(&x)
    }
}

// --------------------------------------------------------------------------------------------
// 6. Config
// --------------------------------------------------------------------------------------------

/// The settings, with the keyword names of stylegan2-ada-pytorch's `Generator(...)` and
/// `Discriminator(...)` (flattened: `mapping_layers` is its `mapping_kwargs.num_layers`,
/// `mapping_lr_multiplier` its `mapping_kwargs.lr_multiplier`, `mbstd_*` its `epilogue_kwargs`).
/// G and D share `channel_base`/`channel_max`, as in NVIDIA's training configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Latent z size.
    pub z_dim: i64,
    /// Intermediate latent w size (and the mapping network's width).
    pub w_dim: i64,
    /// Image side: a power of two, at least 8.
    pub img_resolution: i64,
    /// 1 (grey) or 3 (RGB).
    pub img_channels: i64,
    /// Channels at resolution r: min(channel_base / r, channel_max).
    pub channel_base: i64,
    pub channel_max: i64,
    /// Linear layers of the mapping network (8 in the paper).
    pub mapping_layers: i64,
    /// The mapping network's learning-rate multiplier (0.01 in the paper).
    pub mapping_lr_multiplier: f64,
    /// Decay of the running mean of w (0.995).
    pub w_avg_beta: f64,
    /// Minibatch-stddev group size (4); batches must split into groups of min(this, B).
    pub mbstd_group_size: i64,
    /// Minibatch-stddev features (1; 0 turns the layer off).
    pub mbstd_num_channels: i64,
    /// The 1-D FIR taps of the resampling filter ([1, 3, 3, 1]), an even number of them.
    pub resample_filter: Vec<f64>,
}

impl Config {
    /// A tiny model for tests: 16x16 RGB, z = w = 16, 2 mapping layers, 16/16/8 channels.
    pub fn tiny() -> Self {
        Config {
            z_dim: 16,
            w_dim: 16,
            img_resolution: 16,
            img_channels: 3,
            channel_base: 128,
            channel_max: 16,
            mapping_layers: 2,
            mapping_lr_multiplier: 0.01,
            w_avg_beta: 0.995,
            mbstd_group_size: 4,
            mbstd_num_channels: 1,
            resample_filter: vec![1.0, 3.0, 3.0, 1.0],
        }
    }

    /// The block resolutions of the generator: 4, 8, ..., img_resolution.
    pub fn resolutions(&self) -> Vec<i64> {
        let mut v = Vec::new();
        let mut r = 4;
        while r <= self.img_resolution {
            v.push(r);
            r *= 2;
        }
        v
    }

    /// Channels at resolution `res`.
    pub fn channels(&self, res: i64) -> i64 {
        (self.channel_base / res).min(self.channel_max)
    }

    /// The number of ws the synthesis network takes: 2 per resolution (1 at 4x4), plus the
    /// last ToRGB's.
    pub fn num_ws(&self) -> i64 {
        2 * self.resolutions().len() as i64
    }

    pub fn validate(&self) -> Result<()> {
        let r = self.img_resolution;
        if r < 8 || r & (r - 1) != 0 {
            return Err(Error::Config(format!(
                "StyleGAN2 img_resolution must be a power of two >= 8, got {r}"
            )));
        }
        for (k, v) in [
            ("z_dim", self.z_dim),
            ("w_dim", self.w_dim),
            ("img_channels", self.img_channels),
            ("mapping_layers", self.mapping_layers),
            ("mbstd_group_size", self.mbstd_group_size),
        ] {
            if v < 1 {
                return Err(Error::Config(format!("StyleGAN2 {k} must be at least 1, got {v}")));
            }
        }
        if self.channels(r) < 1 {
            return Err(Error::Config(format!(
                "StyleGAN2 channel_base {} gives no channels at {r}x{r}: it must be at least {r}",
                self.channel_base
            )));
        }
        if self.channel_max < 1 {
            return Err(Error::Config(format!(
                "StyleGAN2 channel_max must be at least 1, got {}",
                self.channel_max
            )));
        }
        if self.mbstd_num_channels < 0
            || (self.mbstd_num_channels > 0 && self.channels(4) % self.mbstd_num_channels != 0)
        {
            return Err(Error::Config(format!(
                "StyleGAN2 mbstd_num_channels {} must be 0 or divide the {} channels at 4x4",
                self.mbstd_num_channels,
                self.channels(4)
            )));
        }
        if !(self.mapping_lr_multiplier > 0.0 && self.mapping_lr_multiplier.is_finite()) {
            return Err(Error::Config(format!(
                "StyleGAN2 mapping_lr_multiplier must be positive, got {}",
                self.mapping_lr_multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.w_avg_beta) {
            return Err(Error::Config(format!(
                "StyleGAN2 w_avg_beta must be in [0, 1], got {}",
                self.w_avg_beta
            )));
        }
        let f = &self.resample_filter;
        if f.is_empty()
            || f.len() % 2 != 0
            || f.iter().any(|t| !t.is_finite())
            || f.iter().sum::<f64>() == 0.0
        {
            return Err(Error::Config(format!(
                "StyleGAN2 resample_filter must be an even number of finite taps with a non-zero sum (e.g. [1, 3, 3, 1]), got {f:?}"
            )));
        }
        Ok(())
    }

    /// The batch sizes the discriminator takes: those that split into minibatch-stddev groups.
    pub fn check_batch(&self, batch: i64) -> Result<()> {
        let g = self.mbstd_group_size.min(batch);
        if self.mbstd_num_channels > 0 && (g < 1 || batch % g != 0) {
            return Err(Error::Config(format!(
                "a batch of {batch} does not split into minibatch-stddev groups of {}: use a multiple of it",
                self.mbstd_group_size
            )));
        }
        Ok(())
    }
}

// --------------------------------------------------------------------------------------------
// 7. Generator and discriminator
// --------------------------------------------------------------------------------------------

/// The generator: mapping + synthesis.
pub struct Generator {
    pub cfg: Config,
    pub mapping: MappingNetwork,
    pub synthesis: SynthesisNetwork,
}

impl Generator {
    pub fn new(p: &nn::Path, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let synthesis = SynthesisNetwork::new(&(p / "synthesis"), cfg)?;
        let mapping = MappingNetwork::new(&(p / "mapping"), cfg, synthesis.num_ws)?;
        Ok(Generator { cfg: cfg.clone(), mapping, synthesis })
    }

    pub fn num_ws(&self) -> i64 {
        self.synthesis.num_ws
    }

    /// z -> image. `truncation_psi` pulls every w towards `w_avg` (1: off, 0: the mean image);
    /// `mixing` takes the ws from `cutoff` on from a second latent (style mixing).
    /// Shapes: z (B, z_dim) [, mixing.z (B, z_dim)] -> (B, img_channels, S, S).
    pub fn forward(
        &self,
        z: &Tensor,
        truncation_psi: f64,
        mixing: Option<&StyleMix>,
        mode: Mode,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let b = match z.size()[..] {
            [b, d] if d == c.z_dim => b,
            ref s => {
                return Err(Error::Input(format!(
                    "the generator takes latents of shape (B, {}), got {s:?}",
                    c.z_dim
                )))
            }
        };
        if !truncation_psi.is_finite() {
            return Err(Error::Input(format!(
                "truncation psi must be a finite number, got {truncation_psi}"
            )));
        }
        // 1. z -> ws (B, num_ws, w_dim).
        let mut ws = self.mapping.forward(z, truncation_psi, mode.update_w_avg)?;
        // 2. Style mixing: the later layers from the second latent (which leaves w_avg alone).
        if let Some(m) = mixing {
            let n = self.num_ws();
            if m.z.size() != [b, c.z_dim] || !(0..=n).contains(&m.cutoff) {
                return Err(Error::Input(format!(
                    "style mixing needs a second latent of shape ({b}, {}) and a cutoff in 0..={n}, got {:?} and {}",
                    c.z_dim,
                    m.z.size(),
                    m.cutoff
                )));
            }
            let ws2 = self.mapping.forward(m.z, truncation_psi, false)?;
            ws = Tensor::f_cat(&[ws.f_narrow(1, 0, m.cutoff)?, ws2.f_narrow(1, m.cutoff, n - m.cutoff)?], 1)?;
        }
        // 3. ws -> image.
        self.synthesis.forward(&ws, &mode)
    }

    /// Training's random style mixing (NVIDIA's `style_mixing_prob`): with probability `prob`,
    /// a fresh latent and a cutoff uniform in 1..num_ws, drawn from libtorch's generator.
    /// Shapes: z (B, z_dim) -> (B, z_dim), cutoff.
    pub fn draw_mixing(&self, z: &Tensor, prob: f64) -> Result<Option<(Tensor, i64)>> {
        if prob <= 0.0 {
            return Ok(None);
        }
        let cutoff =
            Tensor::f_randint_low(1, self.num_ws(), [1], (Kind::Int64, Device::Cpu))?.f_int64_value(&[0])?;
        let u = Tensor::f_rand([1], (Kind::Float, Device::Cpu))?.f_double_value(&[0])?;
        if u >= prob {
            return Ok(None);
        }
        Ok(Some((z.f_randn_like()?, cutoff)))
    }
}

/// The residual discriminator: blocks from img_resolution down to 8, then the 4x4 epilogue.
pub struct Discriminator {
    pub cfg: Config,
    pub blocks: Vec<DiscriminatorBlock>,
    pub b4: DiscriminatorEpilogue,
}

impl Discriminator {
    pub fn new(p: &nn::Path, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let filter = setup_filter(&cfg.resample_filter, p.device())?;
        let mut blocks = Vec::new();
        let conv = |p: nn::Path, cin, cout, k, opts| Conv2dLayer::new(&p, cin, cout, k, opts, &filter);
        for res in cfg.resolutions().into_iter().rev().filter(|&r| r > 4) {
            let bp = p / format!("b{res}");
            let (tmp, out) = (cfg.channels(res), cfg.channels(res / 2));
            let fromrgb = if res == cfg.img_resolution {
                Some(conv(&bp / "fromrgb", cfg.img_channels, tmp, 1, CONV_LRELU)?)
            } else {
                None
            };
            blocks.push(DiscriminatorBlock {
                resolution: res,
                fromrgb,
                conv0: conv(&bp / "conv0", tmp, tmp, 3, CONV_LRELU)?,
                conv1: conv(&bp / "conv1", tmp, out, 3, ConvOpts { down: true, ..CONV_LRELU })?,
                skip: conv(&bp / "skip", tmp, out, 1, ConvOpts { bias: false, lrelu: false, down: true })?,
            });
        }
        let c4 = cfg.channels(4);
        let bp = p / "b4";
        let b4 = DiscriminatorEpilogue {
            conv: conv(&bp / "conv", c4 + cfg.mbstd_num_channels, c4, 3, CONV_LRELU)?,
            fc: FullyConnectedLayer::new(&(&bp / "fc"), c4 * 16, c4, true, 1.0, 0.0)?,
            out: FullyConnectedLayer::new(&(&bp / "out"), c4, 1, false, 1.0, 0.0)?,
            mbstd_group_size: cfg.mbstd_group_size,
            mbstd_num_channels: cfg.mbstd_num_channels,
        };
        Ok(Discriminator { cfg: cfg.clone(), blocks, b4 })
    }

    /// Shapes: images (B, C, S, S) -> logits (B).
    pub fn forward(&self, img: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        check_images(img, c.img_channels, c.img_resolution, "the discriminator")?;
        let b = img.size()[0];
        c.check_batch(b).map_err(|e| Error::Input(e.to_string()))?;
        let mut x = img.shallow_clone();
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(self.b4.forward(&x)?.f_reshape([b])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    fn cpu() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.size(), b.size());
        (a - b).abs().max().double_value(&[])
    }

    /// A tiny generator with noise and w_avg turned on, so they change the output.
    fn tiny_generator(vs: &VarStore) -> Generator {
        let g = Generator::new(&vs.root(), &Config::tiny()).unwrap();
        tch::no_grad(|| {
            for (n, mut v) in vs.variables() {
                if n.ends_with("noise_strength") {
                    let _ = v.fill_(0.3);
                }
                if n.ends_with("w_avg") {
                    v.copy_(&Tensor::randn([16], cpu()));
                }
            }
        });
        g
    }

    #[test]
    fn names_shapes_and_ws() {
        let cfg = Config::tiny();
        let vs = VarStore::new(Device::Cpu);
        let g = Generator::new(&vs.root(), &cfg).unwrap();
        assert_eq!(g.num_ws(), 6); // 4: conv1; 8, 16: conv0 + conv1; + the last ToRGB
        assert_eq!(cfg.num_ws(), 6);
        let v = vs.variables();
        for (k, s) in [
            ("mapping.fc0.weight", vec![16, 16]),
            ("mapping.fc1.bias", vec![16]),
            ("mapping.w_avg", vec![16]),
            ("synthesis.b4.const", vec![16, 4, 4]),
            ("synthesis.b4.conv1.weight", vec![16, 16, 3, 3]),
            ("synthesis.b4.conv1.noise_strength", vec![]),
            ("synthesis.b16.conv0.weight", vec![8, 16, 3, 3]),
            ("synthesis.b16.conv0.affine.weight", vec![16, 16]),
            ("synthesis.b16.conv0.noise_const", vec![16, 16]),
            ("synthesis.b16.torgb.weight", vec![3, 8, 1, 1]),
            ("synthesis.b16.torgb.affine.bias", vec![8]),
        ] {
            assert_eq!(v.get(k).map(|t| t.size()), Some(s), "{k}");
        }
        assert!(!v.contains_key("synthesis.b4.conv0.weight"));
        assert!(!v["mapping.w_avg"].requires_grad() && !v["synthesis.b8.conv1.noise_const"].requires_grad());
        let z = Tensor::randn([2, 16], cpu());
        for mode in [Mode::train(), Mode::eval()] {
            assert_eq!(g.forward(&z, 1.0, None, mode).unwrap().size(), [2, 3, 16, 16]);
        }

        let dvs = VarStore::new(Device::Cpu);
        let d = Discriminator::new(&dvs.root(), &cfg).unwrap();
        let v = dvs.variables();
        for (k, s) in [
            ("b16.fromrgb.weight", vec![8, 3, 1, 1]),
            ("b16.conv0.weight", vec![8, 8, 3, 3]),
            ("b16.conv1.weight", vec![16, 8, 3, 3]),
            ("b16.skip.weight", vec![16, 8, 1, 1]),
            ("b8.conv1.bias", vec![16]),
            ("b4.conv.weight", vec![16, 17, 3, 3]),
            ("b4.fc.weight", vec![16, 256]),
            ("b4.out.weight", vec![1, 16]),
        ] {
            assert_eq!(v.get(k).map(|t| t.size()), Some(s), "{k}");
        }
        assert!(!v.contains_key("b8.fromrgb.weight") && !v.contains_key("b16.skip.bias"));
        assert_eq!(d.forward(&Tensor::randn([8, 3, 16, 16], cpu())).unwrap().size(), [8]);
        // 6 does not split into groups of 4; 2 is one group of 2.
        assert!(d.forward(&Tensor::randn([6, 3, 16, 16], cpu())).is_err());
        assert_eq!(d.forward(&Tensor::randn([2, 3, 16, 16], cpu())).unwrap().size(), [2]);
    }

    #[test]
    fn equalised_lr_scales_weights_and_gradients() {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let (cin, cout, lr) = (64, 32, 0.01);
        let fc = FullyConnectedLayer::new(&vs.root(), cin, cout, false, lr, 0.5).unwrap();
        // Stored N(0, 1/lr), used times lr/sqrt(in): the effective weight is N(0, 1/in).
        let s = fc.weight.std(true).double_value(&[]);
        assert!((s * lr - 1.0).abs() < 0.05, "stored std {s}");
        assert!((fc.weight_gain - lr / 8.0).abs() < 1e-12 && fc.bias_gain == lr);
        let x = Tensor::randn([5, cin], cpu());
        let y = fc.forward(&x).unwrap();
        let want = x.matmul(&(&fc.weight * fc.weight_gain).tr()) + 0.5 * lr;
        assert!(max_diff(&y, &want) < 1e-5);
        // dL/dW_stored = gain * dL/dW_effective: for L = sum(y), every row is gain * sum_b x.
        y.sum(Kind::Float).backward();
        let g = fc.weight.grad();
        let want =
            x.sum_dim_intlist([0i64].as_slice(), false, Kind::Float).unsqueeze(0).expand([cout, cin], false)
                * fc.weight_gain;
        assert!(max_diff(&g, &want) < 1e-6);
        assert!((fc.bias.grad().double_value(&[0]) - 5.0 * lr).abs() < 1e-6);

        // A conv's effective weight: stored N(0, 1) times 1/sqrt(in k k).
        let c = Conv2dLayer::new(
            &(vs.root() / "c"),
            8,
            4,
            3,
            ConvOpts { bias: true, lrelu: false, down: false },
            &setup_filter(&[1.0, 1.0], Device::Cpu).unwrap(),
        )
        .unwrap();
        assert!((c.weight_gain - 1.0 / 72f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn demodulated_weights_have_unit_norm_and_keep_unit_variance() {
        tch::manual_seed(1);
        let weight = Tensor::randn([32, 64, 3, 3], cpu());
        let styles = Tensor::randn([4, 64], cpu()) * 3.0 + 1.0;
        let w = modulated_weight(&weight, &styles, true).unwrap();
        assert_eq!(w.size(), [4, 32, 64, 3, 3]);
        let norms = w.square().sum_dim_intlist([2i64, 3, 4].as_slice(), false, Kind::Float).sqrt();
        assert!(max_diff(&norms, &Tensor::ones([4, 32], cpu())) < 1e-5, "norms {norms}");
        // Without demodulation the norms follow the styles.
        let raw = modulated_weight(&weight, &styles, false).unwrap();
        let n = raw.square().sum_dim_intlist([2i64, 3, 4].as_slice(), false, Kind::Float).sqrt();
        assert!(n.mean(Kind::Float).double_value(&[]) > 10.0);
        // Unit-variance input (away from the zero padding) -> unit-variance output.
        let x = Tensor::randn([4, 64, 32, 32], cpu());
        let y = modulated_conv2d(&x, &weight, &styles, None, true, None, true).unwrap();
        let inner = y.narrow(2, 1, 30).narrow(3, 1, 30);
        let var = inner.var(true).double_value(&[]);
        assert!((var - 1.0).abs() < 0.1, "output variance {var}");
    }

    #[test]
    fn fused_and_unfused_modconv_agree() {
        tch::manual_seed(2);
        let f = setup_filter(&[1.0, 3.0, 3.0, 1.0], Device::Cpu).unwrap();
        let x = Tensor::randn([3, 6, 8, 8], cpu());
        let styles = Tensor::randn([3, 6], cpu());
        let noise = Tensor::randn([3, 1, 16, 16], cpu());
        for (k, demod, up) in [(3, true, false), (3, true, true), (1, false, false)] {
            let weight = Tensor::randn([5, 6, k, k], cpu());
            let fl = if up { Some(&f) } else { None };
            let n = if up { Some(&noise) } else { None };
            let a = modulated_conv2d(&x, &weight, &styles, n, demod, fl, true).unwrap();
            let b = modulated_conv2d(&x, &weight, &styles, n, demod, fl, false).unwrap();
            assert_eq!(a.size(), [3, 5, if up { 16 } else { 8 }, if up { 16 } else { 8 }]);
            assert!(max_diff(&a, &b) < 1e-4, "k {k} up {up}: {}", max_diff(&a, &b));
        }
        assert!(modulated_conv2d(&x, &Tensor::randn([5, 4, 3, 3], cpu()), &styles, None, true, None, true)
            .is_err());
    }

    #[test]
    fn up_conv_equals_zero_insertion_fir_and_true_convolution() {
        // The transposed-conv path against the definition: upfirdn2d(up 2, pad 3/2, gain 4),
        // then a convolution with the kernel (correlation with the flipped kernel).
        tch::manual_seed(3);
        let f = setup_filter(&[1.0, 3.0, 3.0, 1.0], Device::Cpu).unwrap();
        let x = Tensor::randn([2, 4, 5, 5], cpu());
        let weight = Tensor::randn([3, 4, 3, 3], cpu());
        let styles = Tensor::ones([2, 4], cpu());
        let got = modulated_conv2d(&x, &weight, &styles, None, false, Some(&f), false).unwrap();
        let up = upfirdn2d(&x, &f, 2, 1, (3, 2), 4.0).unwrap();
        let want = up.conv2d::<Tensor>(&weight.flip([2, 3]), None, [1, 1], [0, 0], [1, 1], 1);
        assert!(max_diff(&got, &want) < 1e-5);
        // The filter keeps a constant image constant (away from the borders) and sums to 1.
        assert!((f.sum(Kind::Float).double_value(&[]) - 1.0).abs() < 1e-7);
        let ones = upsample2d(&Tensor::ones([1, 1, 6, 6], cpu()), &f).unwrap();
        assert_eq!(ones.size(), [1, 1, 12, 12]);
        assert!(max_diff(&ones.narrow(2, 2, 8).narrow(3, 2, 8), &Tensor::ones([1, 1, 8, 8], cpu())) < 1e-6);
    }

    #[test]
    fn truncation_to_zero_gives_the_mean_image() {
        tch::manual_seed(4);
        let vs = VarStore::new(Device::Cpu);
        let g = tiny_generator(&vs);
        let z = Tensor::randn([4, 16], cpu());
        let x = g.forward(&z, 0.0, None, Mode::eval()).unwrap();
        for i in 1..4 {
            assert!(max_diff(&x.get(i), &x.get(0)) < 1e-6);
        }
        // psi = 1 gives different images, and psi between moves towards the mean image.
        let x1 = g.forward(&z, 1.0, None, Mode::eval()).unwrap();
        assert!(max_diff(&x1.get(1), &x1.get(0)) > 1e-2);
        let xh = g.forward(&z, 0.5, None, Mode::eval()).unwrap();
        let d = |a: &Tensor| (a - &x).square().mean(Kind::Float).double_value(&[]);
        assert!(d(&xh) < d(&x1));
        // The truncated w lies on the line from w_avg to w.
        let w = g.mapping.forward_w(&z, false).unwrap();
        let t = g.mapping.truncate(&w, 0.25).unwrap();
        assert!(max_diff(&t, &(&g.mapping.w_avg + (&w - &g.mapping.w_avg) * 0.25)) < 1e-6);
    }

    #[test]
    fn style_mixing_takes_later_layers_from_the_second_latent() {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let g = tiny_generator(&vs);
        let (z1, z2) = (Tensor::randn([2, 16], cpu()), Tensor::randn([2, 16], cpu()));
        let x1 = g.forward(&z1, 1.0, None, Mode::eval()).unwrap();
        let x2 = g.forward(&z2, 1.0, None, Mode::eval()).unwrap();
        let mix = |cutoff| g.forward(&z1, 1.0, Some(&StyleMix { z: &z2, cutoff }), Mode::eval()).unwrap();
        let m = mix(3);
        assert!(max_diff(&m, &x1) > 1e-3 && max_diff(&m, &x2) > 1e-3);
        // The ends: cutoff num_ws is z1 alone, 0 is z2 alone; mixing a latent with itself is a no-op.
        assert!(max_diff(&mix(6), &x1) < 1e-6);
        assert!(max_diff(&mix(0), &x2) < 1e-6);
        let same = g.forward(&z1, 1.0, Some(&StyleMix { z: &z1, cutoff: 3 }), Mode::eval()).unwrap();
        assert!(max_diff(&same, &x1) < 1e-6);
        assert!(g.forward(&z1, 1.0, Some(&StyleMix { z: &z2, cutoff: 7 }), Mode::eval()).is_err());
    }

    #[test]
    fn noise_modes_and_w_avg_tracking() {
        tch::manual_seed(6);
        let vs = VarStore::new(Device::Cpu);
        let g = tiny_generator(&vs);
        let z = Tensor::randn([2, 16], cpu());
        let eval = |noise| Mode { noise, ..Mode::eval() };
        let c1 = g.forward(&z, 1.0, None, eval(NoiseMode::Const)).unwrap();
        let c2 = g.forward(&z, 1.0, None, eval(NoiseMode::Const)).unwrap();
        assert!(c1.equal(&c2));
        let r1 = g.forward(&z, 1.0, None, eval(NoiseMode::Random)).unwrap();
        let r2 = g.forward(&z, 1.0, None, eval(NoiseMode::Random)).unwrap();
        assert!(max_diff(&r1, &r2) > 1e-3);
        let n = g.forward(&z, 1.0, None, eval(NoiseMode::None)).unwrap();
        assert!(max_diff(&n, &c1) > 1e-3);
        // Eval leaves w_avg alone; training moves it (1 - beta) of the way to the batch mean.
        let before = g.mapping.w_avg.copy();
        let _ = g.forward(&z, 1.0, None, Mode::eval()).unwrap();
        assert!(g.mapping.w_avg.equal(&before));
        let w = tch::no_grad(|| g.mapping.forward_w(&z, false)).unwrap();
        let _ = g.forward(&z, 1.0, None, Mode::train()).unwrap();
        let want = &before + (w.mean_dim([0i64].as_slice(), false, Kind::Float) - &before) * (1.0 - 0.995);
        assert!(max_diff(&g.mapping.w_avg, &want) < 1e-6);
    }

    #[test]
    fn minibatch_stddev_by_hand() {
        // Two groups of two (samples 0, 2 and 1, 3), one feature.
        let x = Tensor::from_slice(&[0.0f32, 10.0, 2.0, 10.0]).reshape([4, 1, 1, 1]);
        let y = minibatch_stddev(&x, 2, 1).unwrap();
        assert_eq!(y.size(), [4, 2, 1, 1]);
        let s: Vec<f32> = Vec::try_from(y.select(1, 1).flatten(0, -1)).unwrap();
        assert!((s[0] - 1.0).abs() < 1e-4 && s[1].abs() < 1e-3 && (s[2] - 1.0).abs() < 1e-4, "{s:?}");
    }

    #[test]
    fn bad_configs_are_errors() {
        let bad = |c: Config| c.validate().unwrap_err().to_string();
        assert!(bad(Config { img_resolution: 28, ..Config::tiny() }).contains("power of two"));
        assert!(bad(Config { channel_base: 8, ..Config::tiny() }).contains("channel_base"));
        assert!(bad(Config { resample_filter: vec![1.0, 2.0, 1.0], ..Config::tiny() }).contains("even"));
        assert!(bad(Config { mbstd_num_channels: 3, ..Config::tiny() }).contains("mbstd"));
        assert!(Config::tiny().check_batch(6).is_err() && Config::tiny().check_batch(3).is_ok());
        let vs = VarStore::new(Device::Cpu);
        let g = Generator::new(&vs.root(), &Config::tiny()).unwrap();
        let e = g.forward(&Tensor::zeros([2, 8], cpu()), 1.0, None, Mode::eval()).err().unwrap();
        assert!(e.to_string().contains("(B, 16)"), "{e}");
    }
}
