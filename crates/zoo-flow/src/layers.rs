//! Flow layers: invertible maps with a tractable log-determinant.
//!
//! Every layer works on (B, C, T) tensors (channels by time; 2-D points are (B, 2, 1)) and
//! implements [`Flow`]: `forward` maps data x to z and returns log|det dz/dx| per example, shape
//! (B); `inverse` maps z back to x. The layers are those of WaveGlow (Prenger et al. 2018,
//! NVIDIA/waveglow `glow.py`), Glow (Kingma & Dhariwal 2018) and RealNVP (Dinh et al. 2017):
//! - [`Invertible1x1Conv`]: a learned channel mixing, initialised orthonormal with det +1 as
//!   WaveGlow does, optionally LU-parameterised as in Glow (log-det O(C) instead of O(C^3));
//! - [`AffineCoupling`]: half the channels scale and shift the other half, through any
//!   [`Conditioner`] (WaveGlow's WaveNet-like [`crate::wn::Wn`], or an MLP for 2-D flows);
//! - [`ActNorm`]: per-channel affine with Glow's data-dependent initialisation;
//! - [`squeeze`] / [`unsqueeze`]: fold time into channels (WaveGlow's grouping of samples);
//! - [`split_early`] / [`merge_early`]: multi-scale early outputs;
//! - [`Reverse`]: RealNVP's fixed channel reversal.
//!
//! Tests check inverse(forward(x)) == x and the log-dets against the brute-force
//! log|det J| of an autograd Jacobian in f64.
use tch::{nn, Kind, Tensor};

use crate::{Error, Result};

/// An invertible layer on (B, C, T) tensors, optionally conditioned on (B, C_cond, T).
pub trait Flow {
    /// Shapes: x (B, C, T) -> (z (B, C, T), log|det dz/dx| (B)).
    fn forward(&self, x: &Tensor, cond: Option<&Tensor>) -> Result<(Tensor, Tensor)>;
    /// Shapes: z (B, C, T) -> x (B, C, T).
    fn inverse(&self, z: &Tensor, cond: Option<&Tensor>) -> Result<Tensor>;
}

/// Checks a (B, C, T) input with `c` channels; returns (B, T).
pub(crate) fn check_bct(x: &Tensor, c: i64, what: &str) -> Result<(i64, i64)> {
    match x.size()[..] {
        [b, ch, t] if ch == c => Ok((b, t)),
        ref s => Err(Error::Input(format!("{what}: expected (B, {c}, T), got {s:?}"))),
    }
}

/// A per-example constant log-det: (B) filled with `v` (a 0-dim tensor), keeping its graph.
fn per_example(v: &Tensor, b: i64) -> Result<Tensor> {
    Ok(v.f_reshape([1])?.f_expand([b], false)?.f_contiguous()?)
}

/// The weights of an [`Invertible1x1Conv`].
enum InvWeight {
    /// W itself, as NVIDIA's `convinv.k.conv.weight` (C, C, 1).
    Plain { weight: Tensor },
    /// Glow's W = P L (U + diag(sign_s * exp(log_s))), L unit lower and U strictly upper
    /// triangular; P and sign_s stay fixed.
    Lu { perm: Tensor, lower: Tensor, upper: Tensor, log_s: Tensor, sign_s: Tensor },
}

/// Invertible 1x1 convolution: z = W x at every time step.
pub struct Invertible1x1Conv {
    w: InvWeight,
    c: i64,
}

impl Invertible1x1Conv {
    /// A random orthonormal W with det +1 (QR of a Gaussian matrix, first column negated when
    /// the determinant is -1, as WaveGlow does). Variables: `conv.weight` (C, C, 1), or with
    /// `lu` the factors `perm`, `lower`, `upper`, `log_s`, `sign_s` (perm and sign_s untrained).
    pub fn new(p: nn::Path, c: i64, lu: bool) -> Result<Self> {
        if c < 1 {
            return Err(Error::Config(format!("invertible 1x1 conv needs at least 1 channel, got {c}")));
        }
        let g = Tensor::f_randn([c, c], (Kind::Double, tch::Device::Cpu))?;
        let (q, _) = Tensor::f_linalg_qr(&g, "reduced")?;
        let q = if Tensor::f_linalg_det(&q)?.f_double_value(&[])? < 0.0 {
            let sign = Tensor::f_ones([c], (Kind::Double, tch::Device::Cpu))?;
            let _ = sign.f_get(0)?.f_fill_(-1.0)?;
            q.f_mul(&sign.f_unsqueeze(0)?)?
        } else {
            q
        };
        let dev = p.device();
        let kind = p.kind();
        let w = if lu {
            let (perm, lower, upper) = Tensor::f_linalg_lu(&q, true)?;
            let s = upper.f_diagonal(0, 0, 1)?;
            let vp = p.zeros_no_train("perm", &[c, c]);
            let vs = p.zeros_no_train("sign_s", &[c]);
            tch::no_grad(|| -> Result<()> {
                vp.shallow_clone().f_copy_(&perm)?;
                vs.shallow_clone().f_copy_(&s.f_sign()?)?;
                Ok(())
            })?;
            InvWeight::Lu {
                perm: vp,
                lower: p.f_var_copy("lower", &lower.f_tril(-1)?.f_to_kind(kind)?.f_to_device(dev)?)?,
                upper: p.f_var_copy("upper", &upper.f_triu(1)?.f_to_kind(kind)?.f_to_device(dev)?)?,
                log_s: p.f_var_copy("log_s", &s.f_abs()?.f_log()?.f_to_kind(kind)?.f_to_device(dev)?)?,
                sign_s: vs,
            }
        } else {
            let w0 = q.f_reshape([c, c, 1])?.f_to_kind(kind)?.f_to_device(dev)?;
            InvWeight::Plain { weight: (&p / "conv").f_var_copy("weight", &w0)? }
        };
        Ok(Invertible1x1Conv { w, c })
    }

    /// W, (C, C).
    pub fn weight(&self) -> Result<Tensor> {
        Ok(match &self.w {
            InvWeight::Plain { weight } => weight.f_reshape([self.c, self.c])?,
            InvWeight::Lu { perm, lower, upper, log_s, sign_s } => {
                let eye = Tensor::f_eye(self.c, (lower.kind(), lower.device()))?;
                let l = lower.f_tril(-1)?.f_add(&eye)?;
                let u = upper.f_triu(1)?.f_add(&sign_s.f_mul(&log_s.f_exp()?)?.f_diag_embed(0, -2, -1)?)?;
                perm.f_matmul(&l)?.f_matmul(&u)?
            }
        })
    }

    /// log|det W|, a 0-dim tensor.
    pub fn log_det_w(&self) -> Result<Tensor> {
        Ok(match &self.w {
            InvWeight::Plain { .. } => {
                let (_, logabs) = Tensor::f_linalg_slogdet(&self.weight()?.f_to_kind(Kind::Double)?)?;
                logabs.f_to_kind(self.weight()?.kind())?
            }
            InvWeight::Lu { log_s, .. } => log_s.f_sum(log_s.kind())?,
        })
    }
}

impl Flow for Invertible1x1Conv {
    /// Shapes: (B, C, T) -> ((B, C, T), (B)); the log-det is T log|det W|.
    fn forward(&self, x: &Tensor, _cond: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (b, t) = check_bct(x, self.c, "invertible 1x1 conv")?;
        let w = self.weight()?;
        let z = x.f_conv1d::<Tensor>(&w.f_unsqueeze(2)?, None, 1, 0, 1, 1)?;
        let logdet = per_example(&self.log_det_w()?.f_mul_scalar(t as f64)?, b)?;
        Ok((z, logdet))
    }

    fn inverse(&self, z: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        check_bct(z, self.c, "invertible 1x1 conv")?;
        let w = self.weight()?;
        // Inverted in f64 (as cheap as it is for C <= a few dozen), then back to the model's kind.
        let w_inv = Tensor::f_linalg_inv(&w.f_to_kind(Kind::Double)?)?.f_to_kind(w.kind())?;
        Ok(z.f_conv1d::<Tensor>(&w_inv.f_unsqueeze(2)?, None, 1, 0, 1, 1)?)
    }
}

/// What an [`AffineCoupling`] conditions on: given the unchanged half x_a (B, C_a, T) and an
/// optional conditioning input, it returns (B, 2 C_b, T): the shift b in the first C_b channels,
/// log s in the last C_b (the order of WaveGlow's `WN` output).
pub trait Conditioner {
    fn forward(&self, x_a: &Tensor, cond: Option<&Tensor>) -> Result<Tensor>;
}

/// Affine coupling: x = [x_a, x_b] along channels (x_a the first C/2), z = [x_a, exp(log s) *
/// x_b + b] with (b, log s) = net(x_a, cond). The log-det is the sum of log s.
pub struct AffineCoupling<N: Conditioner> {
    pub net: N,
    c: i64,
}

impl<N: Conditioner> AffineCoupling<N> {
    /// `c` channels in all, `c / 2` of them pass unchanged; `net` maps (B, c/2, T) to
    /// (B, 2 (c - c/2), T).
    pub fn new(net: N, c: i64) -> Result<Self> {
        if c < 2 {
            return Err(Error::Config(format!("an affine coupling needs at least 2 channels, got {c}")));
        }
        Ok(AffineCoupling { net, c })
    }

    fn halves(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n_half = self.c / 2;
        Ok((x.f_narrow(1, 0, n_half)?, x.f_narrow(1, n_half, self.c - n_half)?))
    }

    /// Shift and log-scale for x_b: ((B, C_b, T), (B, C_b, T)).
    fn shift_log_scale(&self, x_a: &Tensor, cond: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let n_b = self.c - self.c / 2;
        let out = self.net.forward(x_a, cond)?;
        if out.size().get(1) != Some(&(2 * n_b)) {
            return Err(Error::Input(format!(
                "coupling network gave {:?}, expected {} channels",
                out.size(),
                2 * n_b
            )));
        }
        Ok((out.f_narrow(1, 0, n_b)?, out.f_narrow(1, n_b, n_b)?))
    }

    /// The forward pass that also returns log s (B, C_b, T), which WaveGlow's loss sums.
    pub fn forward_with_log_s(&self, x: &Tensor, cond: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        check_bct(x, self.c, "affine coupling")?;
        let (x_a, x_b) = self.halves(x)?;
        let (b, log_s) = self.shift_log_scale(&x_a, cond)?;
        let z_b = log_s.f_exp()?.f_mul(&x_b)?.f_add(&b)?;
        Ok((Tensor::f_cat(&[&x_a, &z_b], 1)?, log_s))
    }
}

impl<N: Conditioner> Flow for AffineCoupling<N> {
    fn forward(&self, x: &Tensor, cond: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z, log_s) = self.forward_with_log_s(x, cond)?;
        let logdet = log_s.f_sum_dim_intlist([1i64, 2].as_slice(), false, log_s.kind())?;
        Ok((z, logdet))
    }

    fn inverse(&self, z: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        check_bct(z, self.c, "affine coupling")?;
        let (z_a, z_b) = self.halves(z)?;
        let (b, log_s) = self.shift_log_scale(&z_a, cond)?;
        let x_b = z_b.f_sub(&b)?.f_mul(&log_s.f_neg()?.f_exp()?)?;
        Ok(Tensor::f_cat(&[&z_a, &x_b], 1)?)
    }
}

/// ActNorm (Glow): z = (x + bias) * exp(f logs) per channel, f the log-scale factor. The first
/// forward pass sets bias and logs so that its batch comes out with zero mean and unit variance
/// per channel; the `initialized` flag is a saved, untrained variable, so a loaded model is not
/// re-initialised.
pub struct ActNorm {
    pub bias: Tensor,
    /// The stored variable: the log-scale divided by the log-scale factor.
    pub logs: Tensor,
    initialized: Tensor,
    c: i64,
    logscale_factor: f64,
}

impl ActNorm {
    /// Variables `bias` and `logs`, (1, C, 1), and `initialized`, (1); log-scale factor 1.
    pub fn new(p: nn::Path, c: i64) -> Self {
        Self::with_logscale_factor(p, c, 1.0)
    }

    /// As [`ActNorm::new`], with the log-scale stored divided by `factor` (openai/glow's
    /// `logscale_factor`, 3 there): the log-scale then moves `factor` times faster under Adam.
    pub fn with_logscale_factor(p: nn::Path, c: i64, factor: f64) -> Self {
        ActNorm {
            bias: p.zeros("bias", &[1, c, 1]),
            logs: p.zeros("logs", &[1, c, 1]),
            initialized: p.zeros_no_train("initialized", &[1]),
            c,
            logscale_factor: factor,
        }
    }

    /// The per-channel log-scale, (1, C, 1).
    pub fn log_scale(&self) -> Result<Tensor> {
        Ok(self.logs.f_mul_scalar(self.logscale_factor)?)
    }

    pub fn is_initialized(&self) -> Result<bool> {
        Ok(self.initialized.f_double_value(&[0])? != 0.0)
    }

    /// Data-dependent initialisation from a batch (B, C, T).
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        check_bct(x, self.c, "actnorm")?;
        tch::no_grad(|| -> Result<()> {
            let dims = [0i64, 2];
            let mean = x.f_mean_dim(dims.as_slice(), true, x.kind())?;
            let std = x.f_std_dim(dims.as_slice(), false, true)?;
            self.bias.shallow_clone().f_copy_(&mean.f_neg()?)?;
            let log_scale = std.f_add_scalar(1e-6)?.f_reciprocal()?.f_log()?;
            self.logs.shallow_clone().f_copy_(&log_scale.f_div_scalar(self.logscale_factor)?)?;
            let _ = self.initialized.shallow_clone().f_fill_(1.0)?;
            Ok(())
        })
    }
}

impl Flow for ActNorm {
    fn forward(&self, x: &Tensor, _cond: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (b, t) = check_bct(x, self.c, "actnorm")?;
        if !self.is_initialized()? {
            self.initialize(x)?;
        }
        let log_scale = self.log_scale()?;
        let z = x.f_add(&self.bias)?.f_mul(&log_scale.f_exp()?)?;
        let logdet = per_example(&log_scale.f_sum(log_scale.kind())?.f_mul_scalar(t as f64)?, b)?;
        Ok((z, logdet))
    }

    fn inverse(&self, z: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        check_bct(z, self.c, "actnorm")?;
        Ok(z.f_mul(&self.log_scale()?.f_neg()?.f_exp()?)?.f_sub(&self.bias)?)
    }
}

/// RealNVP's fixed permutation between couplings: the channel order reversed (log-det 0).
pub struct Reverse;

impl Flow for Reverse {
    fn forward(&self, x: &Tensor, _cond: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let b = x.size().first().copied().unwrap_or(0);
        Ok((x.f_flip([1])?, Tensor::f_zeros([b], (x.kind(), x.device()))?))
    }

    fn inverse(&self, z: &Tensor, _cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(z.f_flip([1])?)
    }
}

/// Folds time into channels: (B, C, T) -> (B, C f, T / f), with out[:, c f + k, t] =
/// x[:, c, t f + k]. For C = 1 this is WaveGlow's grouping of f consecutive samples
/// (`audio.unfold(1, f, f).permute(0, 2, 1)`) and, for the upsampled mel, its
/// `unfold(2, f, f).permute(0, 2, 1, 3).view(B, T / f, C f).permute(0, 2, 1)`.
/// T must be a multiple of f. The log-det of this permutation is 0.
pub fn squeeze(x: &Tensor, f: i64) -> Result<Tensor> {
    let [b, c, t] = x.size()[..] else {
        return Err(Error::Input(format!("squeeze: expected (B, C, T), got {:?}", x.size())));
    };
    if f < 1 || t % f != 0 {
        return Err(Error::Input(format!("squeeze: length {t} is not a multiple of the factor {f}")));
    }
    Ok(x.f_reshape([b, c, t / f, f])?.f_permute([0, 1, 3, 2])?.f_reshape([b, c * f, t / f])?)
}

/// The inverse of [`squeeze`]: (B, C f, T) -> (B, C, T f).
pub fn unsqueeze(z: &Tensor, f: i64) -> Result<Tensor> {
    let [b, cf, t] = z.size()[..] else {
        return Err(Error::Input(format!("unsqueeze: expected (B, C, T), got {:?}", z.size())));
    };
    if f < 1 || cf % f != 0 {
        return Err(Error::Input(format!("unsqueeze: {cf} channels are not a multiple of the factor {f}")));
    }
    Ok(z.f_reshape([b, cf / f, f, t])?.f_permute([0, 1, 3, 2])?.f_reshape([b, cf / f, t * f])?)
}

/// Multi-scale early output: the first `n` channels leave the flow as part of z, the rest go on.
/// Shapes: (B, C, T) -> ((B, n, T), (B, C - n, T)).
pub fn split_early(x: &Tensor, n: i64) -> Result<(Tensor, Tensor)> {
    let c = x.size().get(1).copied().unwrap_or(0);
    if n < 0 || n > c {
        return Err(Error::Input(format!("early output of {n} channels from {c}")));
    }
    Ok((x.f_narrow(1, 0, n)?, x.f_narrow(1, n, c - n)?))
}

/// The inverse of [`split_early`]: ((B, n, T), (B, C - n, T)) -> (B, C, T).
pub fn merge_early(early: &Tensor, rest: &Tensor) -> Result<Tensor> {
    Ok(Tensor::f_cat(&[early, rest], 1)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    /// The largest absolute difference of two tensors.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// log|det J| of x -> f(x) for one example x (1, C, T), by autograd in f64.
    pub fn brute_logdet(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor) -> f64 {
        let x = x.to_kind(Kind::Double).detach().set_requires_grad(true);
        let z = f(&x).reshape([-1]);
        let n = z.size()[0];
        assert_eq!(n, x.numel() as i64, "the map must keep the dimension");
        let rows: Vec<Tensor> = (0..n)
            .map(|i| {
                let g = Tensor::run_backward(&[z.get(i)], &[&x], true, false);
                g[0].reshape([-1])
            })
            .collect();
        let j = Tensor::stack(&rows, 0);
        let (_, logabs) = Tensor::linalg_slogdet(&j);
        logabs.double_value(&[])
    }

    /// A small MLP-like conditioner for tests: a 1x1 conv with random weights, so the
    /// coupling is not the identity, plus an optional conditioning term.
    pub struct TestNet {
        w: Tensor,
        wc: Option<Tensor>,
    }

    impl Conditioner for TestNet {
        fn forward(&self, x_a: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
            let mut h = x_a.f_conv1d::<Tensor>(&self.w, None, 1, 0, 1, 1)?.f_tanh()?;
            if let (Some(wc), Some(c)) = (&self.wc, cond) {
                h = h.f_add(&c.f_conv1d::<Tensor>(wc, None, 1, 0, 1, 1)?)?;
            }
            Ok(h)
        }
    }

    fn x(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Double, Device::Cpu))
    }

    #[test]
    fn inv_conv_inverts_and_logdet_matches_brute_force() {
        for lu in [false, true] {
            let mut vs = VarStore::new(Device::Cpu);
            let layer = Invertible1x1Conv::new(vs.root() / "c", 4, lu).unwrap();
            vs.double();
            // det +1 at init
            let det = layer.weight().unwrap().det().double_value(&[]);
            assert!((det - 1.0).abs() < 1e-6, "lu={lu}: det {det}");
            // perturb so W is not orthonormal (log-det nonzero)
            tch::no_grad(|| {
                for (_, v) in vs.variables() {
                    if v.requires_grad() {
                        let _ = v.shallow_clone().f_add_(&(Tensor::randn_like(&v) * 0.3)).unwrap();
                    }
                }
            });
            let input = x(&[2, 4, 3]);
            let (z, ld) = layer.forward(&input, None).unwrap();
            assert_eq!(z.size(), vec![2, 4, 3]);
            assert_eq!(ld.size(), vec![2]);
            let back = layer.inverse(&z, None).unwrap();
            assert!(max_diff(&back, &input) < 1e-9, "lu={lu}");
            let brute = brute_logdet(&|t| layer.forward(t, None).unwrap().0, &input.narrow(0, 0, 1));
            let ours = ld.double_value(&[0]);
            assert!(ours.abs() > 1e-3, "lu={lu}: trivial log-det {ours}");
            assert!((ours - brute).abs() < 1e-8, "lu={lu}: {ours} vs {brute}");
        }
    }

    #[test]
    fn inv_conv_f32_inverts_within_1e4() {
        let vs = VarStore::new(Device::Cpu);
        let layer = Invertible1x1Conv::new(vs.root(), 8, false).unwrap();
        let input = Tensor::randn([3, 8, 50], (Kind::Float, Device::Cpu));
        let (z, _) = layer.forward(&input, None).unwrap();
        assert!(max_diff(&layer.inverse(&z, None).unwrap(), &input) < 1e-4);
        assert!(layer.forward(&Tensor::zeros([3, 7, 5], (Kind::Float, Device::Cpu)), None).is_err());
        assert!(layer.inverse(&Tensor::zeros([3, 8], (Kind::Float, Device::Cpu)), None).is_err());
    }

    #[test]
    fn coupling_inverts_and_logdet_matches_brute_force() {
        for c in [4i64, 5] {
            let n_a = c / 2;
            let n_b = c - n_a;
            let net = TestNet { w: x(&[2 * n_b, n_a, 1]), wc: Some(x(&[2 * n_b, 3, 1])) };
            let layer = AffineCoupling::new(net, c).unwrap();
            let input = x(&[2, c, 3]);
            let cond = x(&[2, 3, 3]);
            let (z, ld) = layer.forward(&input, Some(&cond)).unwrap();
            assert_eq!(max_diff(&z.narrow(1, 0, n_a), &input.narrow(1, 0, n_a)), 0.0);
            let back = layer.inverse(&z, Some(&cond)).unwrap();
            assert!(max_diff(&back, &input) < 1e-10, "c={c}");
            let c0 = cond.narrow(0, 0, 1);
            let brute = brute_logdet(&|t| layer.forward(t, Some(&c0)).unwrap().0, &input.narrow(0, 0, 1));
            let ours = ld.double_value(&[0]);
            assert!(ours.abs() > 1e-3);
            assert!((ours - brute).abs() < 1e-8, "c={c}: {ours} vs {brute}");
        }
        let net = TestNet { w: x(&[2, 1, 1]), wc: None };
        assert!(AffineCoupling::new(net, 1).is_err());
        let bad_net = TestNet { w: x(&[3, 2, 1]), wc: None };
        let layer = AffineCoupling::new(bad_net, 4).unwrap();
        assert!(layer.forward(&x(&[1, 4, 2]), None).is_err());
    }

    #[test]
    fn actnorm_initialises_from_data_inverts_and_logdet_matches() {
        for factor in [1.0, 3.0] {
            actnorm_check(factor);
        }
    }

    fn actnorm_check(factor: f64) {
        let mut vs = VarStore::new(Device::Cpu);
        let layer = ActNorm::with_logscale_factor(vs.root(), 3, factor);
        vs.double();
        assert!(!layer.is_initialized().unwrap());
        let scale = Tensor::from_slice(&[0.5f64, 2.0, 7.0]).view([1, 3, 1]);
        let shift = Tensor::from_slice(&[1.0f64, -3.0, 10.0]).view([1, 3, 1]);
        let input = x(&[64, 3, 32]) * &scale + &shift;
        let (z, ld) = layer.forward(&input, None).unwrap();
        assert!(layer.is_initialized().unwrap());
        // per-channel zero mean and unit variance on the initialising batch
        let mean = z.mean_dim([0i64, 2].as_slice(), false, Kind::Double);
        let std = z.std_dim([0i64, 2].as_slice(), false, false);
        assert!(mean.abs().max().double_value(&[]) < 1e-9);
        assert!((std - 1.0).abs().max().double_value(&[]) < 1e-5);
        // the init happens once: a shifted batch is not normalised again
        let (z2, _) = layer.forward(&(&input + 5.0), None).unwrap();
        assert!(z2.mean(Kind::Double).double_value(&[]) > 1.0);
        assert!(max_diff(&layer.inverse(&z, None).unwrap(), &input) < 1e-10);
        let brute =
            brute_logdet(&|t| layer.forward(t, None).unwrap().0, &input.narrow(0, 0, 1).narrow(2, 0, 3));
        let (_, ld1) = layer.forward(&input.narrow(0, 0, 1).narrow(2, 0, 3), None).unwrap();
        assert!((ld1.double_value(&[0]) - brute).abs() < 1e-8);
        assert_eq!(ld.size(), vec![64]);
        // the stored variable is the log-scale over the factor
        assert!(max_diff(&(&layer.logs * factor), &layer.log_scale().unwrap()) == 0.0);
        assert!(layer.logs.abs().max().double_value(&[]) > 0.1);
    }

    #[test]
    fn squeeze_groups_samples_like_waveglow_and_inverts() {
        let a = Tensor::arange(12, (Kind::Double, Device::Cpu)).view([1, 1, 12]);
        let s = squeeze(&a, 4).unwrap();
        assert_eq!(s.size(), vec![1, 4, 3]);
        // channel k holds samples k, k + 4, k + 8
        let want = Tensor::from_slice(&[0.0f64, 4.0, 8.0, 1.0, 5.0, 9.0, 2.0, 6.0, 10.0, 3.0, 7.0, 11.0]);
        assert_eq!(max_diff(&s.reshape([-1]), &want), 0.0);
        // NVIDIA's unfold/permute for the (B, C, T) mel
        let m = x(&[2, 3, 8]);
        let nv = m.unfold(2, 4, 4).permute([0, 2, 1, 3]).contiguous().view([2, 2, 12]).permute([0, 2, 1]);
        assert_eq!(max_diff(&squeeze(&m, 4).unwrap(), &nv), 0.0);
        assert_eq!(max_diff(&unsqueeze(&squeeze(&m, 4).unwrap(), 4).unwrap(), &m), 0.0);
        assert!(squeeze(&m, 3).is_err());
        assert!(unsqueeze(&x(&[1, 3, 2]), 2).is_err());
    }

    #[test]
    fn early_split_and_reverse_invert() {
        let v = x(&[2, 6, 4]);
        let (e, r) = split_early(&v, 2).unwrap();
        assert_eq!((e.size()[1], r.size()[1]), (2, 4));
        assert_eq!(max_diff(&merge_early(&e, &r).unwrap(), &v), 0.0);
        assert!(split_early(&v, 7).is_err());
        let (z, ld) = Reverse.forward(&v, None).unwrap();
        assert_eq!(ld.abs().sum(Kind::Double).double_value(&[]), 0.0);
        assert_eq!(max_diff(&Reverse.inverse(&z, None).unwrap(), &v), 0.0);
        assert_eq!(max_diff(&z.select(1, 0), &v.select(1, 5)), 0.0);
    }
}
