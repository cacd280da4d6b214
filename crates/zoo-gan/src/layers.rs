//! Layers the GANs share: convolutions (plain or spectrally normalised) and BatchNorm with
//! PyTorch's buffers, so state dicts of `nn.Conv2d`, `nn.ConvTranspose2d`, `nn.BatchNorm2d` and
//! `torch.nn.utils.spectral_norm` load 1:1 and ours load back into PyTorch.
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// F.normalize of a vector: x / max(||x||, eps).
fn normalize(x: &Tensor, eps: f64) -> Result<Tensor> {
    let n = x.f_norm()?.f_clamp_min(eps)?;
    Ok(x.f_div(&n)?)
}

/// Spectral normalisation (Miyato et al. 2018) as `torch.nn.utils.spectral_norm` does it:
/// the module's weight is `weight_orig / sigma`, sigma estimated by one power iteration per
/// training forward on the vectors `weight_u` (h) and `weight_v` (w), which are buffers updated
/// in place; in eval mode the stored vectors are used as they are.
pub struct SpectralNorm {
    pub weight_orig: Tensor,
    pub u: Tensor,
    pub v: Tensor,
    /// The weight dimension that indexes output features: 0 for Conv2d/Linear, 1 for
    /// ConvTranspose2d (PyTorch's default for each).
    pub dim: i64,
    pub eps: f64,
}

impl SpectralNorm {
    /// Creates `weight_orig` (N(0, std)) of `shape` and the normalised random `weight_u`,
    /// `weight_v` under `p`.
    pub fn new(p: &nn::Path, shape: &[i64], dim: i64, std: f64) -> Result<Self> {
        let weight_orig = p.f_var("weight_orig", shape, Init::Randn { mean: 0.0, stdev: std })?;
        let h = shape[dim as usize];
        let w: i64 = shape.iter().product::<i64>() / h.max(1);
        let u0 = normalize(&Tensor::f_randn([h], (Kind::Float, p.device()))?, 1e-12)?;
        let v0 = normalize(&Tensor::f_randn([w], (Kind::Float, p.device()))?, 1e-12)?;
        let u = p.add("weight_u", u0.f_to_kind(p.kind())?, false);
        let v = p.add("weight_v", v0.f_to_kind(p.kind())?, false);
        Ok(SpectralNorm { weight_orig, u, v, dim, eps: 1e-12 })
    }

    /// The weight as a (h, w) matrix, output features first.
    fn matrix(&self) -> Result<Tensor> {
        let w = if self.dim == 0 {
            self.weight_orig.shallow_clone()
        } else {
            self.weight_orig.f_transpose(0, self.dim)?
        };
        let h = w.size()[0];
        Ok(w.f_reshape([h, -1])?)
    }

    /// The normalised weight; with `train`, one power iteration first (updating u and v).
    pub fn weight(&self, train: bool) -> Result<Tensor> {
        let mat = self.matrix()?;
        let (u, v) = if train {
            tch::no_grad(|| -> Result<(Tensor, Tensor)> {
                let m = mat.detach();
                let v = normalize(&m.f_tr()?.f_mv(&self.u)?, self.eps)?;
                let u = normalize(&m.f_mv(&v)?, self.eps)?;
                self.v.shallow_clone().f_copy_(&v)?;
                self.u.shallow_clone().f_copy_(&u)?;
                Ok((u, v))
            })?
        } else {
            (self.u.detach(), self.v.detach())
        };
        let sigma = u.f_dot(&mat.f_mv(&v)?)?;
        Ok(self.weight_orig.f_div(&sigma)?)
    }

    /// The current estimate u^T W v of the largest singular value of `weight_orig`.
    pub fn sigma(&self) -> Result<f64> {
        let m = self.matrix()?.detach();
        Ok(self.u.f_dot(&m.f_mv(&self.v)?)?.f_double_value(&[])?)
    }
}

/// A convolution's weight: plain, or spectrally normalised.
pub enum Weight {
    Plain(Tensor),
    Spectral(SpectralNorm),
}

impl Weight {
    fn get(&self, train: bool) -> Result<Tensor> {
        match self {
            Weight::Plain(w) => Ok(w.shallow_clone()),
            Weight::Spectral(sn) => sn.weight(train),
        }
    }
}

/// `nn.Conv2d` or `nn.ConvTranspose2d` (square kernel, no groups), weights N(0, 0.02) as the
/// DCGAN recipe's `weights_init` sets them.
pub struct Conv {
    pub weight: Weight,
    pub bias: Option<Tensor>,
    pub stride: i64,
    pub padding: i64,
    pub transposed: bool,
}

/// How to build a [`Conv`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub cin: i64,
    pub cout: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub transposed: bool,
    pub bias: bool,
    pub spectral: bool,
}

impl Conv {
    pub fn new(p: &nn::Path, s: ConvSpec) -> Result<Self> {
        // PyTorch's layouts: Conv2d (out, in, k, k), ConvTranspose2d (in, out, k, k).
        let (shape, dim) = if s.transposed {
            ([s.cin, s.cout, s.kernel, s.kernel], 1)
        } else {
            ([s.cout, s.cin, s.kernel, s.kernel], 0)
        };
        let weight = if s.spectral {
            Weight::Spectral(SpectralNorm::new(p, &shape, dim, 0.02)?)
        } else {
            Weight::Plain(p.f_var("weight", &shape, Init::Randn { mean: 0.0, stdev: 0.02 })?)
        };
        let bias = if s.bias { Some(p.f_var("bias", &[s.cout], Init::Const(0.0))?) } else { None };
        Ok(Conv { weight, bias, stride: s.stride, padding: s.padding, transposed: s.transposed })
    }

    /// Shapes: (B, cin, H, W) -> (B, cout, H', W').
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.weight.get(train)?;
        let (s, p) = ([self.stride, self.stride], [self.padding, self.padding]);
        // zoo_core's convolutions: libtorch's, except few-channel image layers and 3x3 ones
        // (their docs)
        Ok(if self.transposed {
            zoo_core::ops::conv_transpose2d(x, &w, self.bias.as_ref(), s, p)?
        } else {
            zoo_core::ops::conv2d(x, &w, self.bias.as_ref(), s, p)?
        })
    }
}

/// `nn.BatchNorm2d` with its parameters (`weight` N(1, 0.02) and `bias` 0, as the DCGAN
/// recipe initialises them) and its three buffers, `running_mean`, `running_var` and the i64
/// scalar `num_batches_tracked`, so a saved state dict has exactly PyTorch's keys.
/// `num_batches_tracked` only counts (PyTorch uses it only when `momentum=None`).
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
    pub momentum: f64,
    pub eps: f64,
}

impl BatchNorm2d {
    pub fn new(p: &nn::Path, c: i64) -> Result<Self> {
        let weight = p.f_var("weight", &[c], Init::Randn { mean: 1.0, stdev: 0.02 })?;
        let bias = p.f_var("bias", &[c], Init::Const(0.0))?;
        let running_mean = p.f_zeros_no_train("running_mean", &[c])?;
        let running_var = p.f_zeros_no_train("running_var", &[c])?.f_fill_(1.0)?;
        let nbt = Tensor::f_zeros([], (Kind::Int64, p.device()))?;
        let num_batches_tracked = p.add("num_batches_tracked", nbt, false);
        Ok(BatchNorm2d {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// Batch statistics (and a running-average update) with `train`, running statistics
    /// without. Shapes: (B, C, H, W) -> (B, C, H, W).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            let _ = tch::no_grad(|| self.num_batches_tracked.shallow_clone().f_add_scalar_(1))?;
        }
        Ok(x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum,
            self.eps,
            false,
        )?)
    }
}

/// Checks a batch of images against what a network expects. Shapes: (B, C, H, W).
pub fn check_images(x: &Tensor, channels: i64, size: i64, what: &str) -> Result<()> {
    match x.size()[..] {
        [_, c, h, w] if c == channels && h == size && w == size => Ok(()),
        ref s => Err(Error::Input(format!(
            "{what} takes images of shape (B, {channels}, {size}, {size}), got {s:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn spectral_norm_converges_to_unit_sigma() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let sn = SpectralNorm::new(&vs.root(), &[8, 4, 3, 3], 0, 1.0).unwrap();
        for _ in 0..50 {
            let _ = sn.weight(true).unwrap();
        }
        // The normalised weight's true largest singular value, from an SVD.
        let w = sn.weight(false).unwrap().reshape([8, -1]);
        let s = w.svd(true, true).1.double_value(&[0]);
        assert!((s - 1.0).abs() < 1e-3, "sigma of the normalised weight {s}");
        let true_sigma = sn.matrix().unwrap().svd(true, true).1.double_value(&[0]);
        assert!((sn.sigma().unwrap() - true_sigma).abs() < 1e-3 * true_sigma);
        // Eval mode leaves u and v alone.
        let u = sn.u.copy();
        let _ = sn.weight(false).unwrap();
        assert!(u.equal(&sn.u));
    }

    #[test]
    fn transposed_spectral_norm_uses_dim_1() {
        let vs = VarStore::new(Device::Cpu);
        let sn = SpectralNorm::new(&vs.root(), &[4, 6, 4, 4], 1, 1.0).unwrap();
        assert_eq!(sn.u.size(), [6]);
        assert_eq!(sn.v.size(), [64]);
        let names: Vec<String> = vs.variables().into_keys().collect();
        for n in ["weight_orig", "weight_u", "weight_v"] {
            assert!(names.contains(&n.to_string()), "{names:?}");
        }
        assert_eq!(vs.trainable_variables().len(), 1);
    }

    #[test]
    fn batch_norm_keeps_pytorch_buffers() {
        let vs = VarStore::new(Device::Cpu);
        let bn = BatchNorm2d::new(&vs.root(), 3).unwrap();
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(names, ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]);
        let x = Tensor::randn([4, 3, 5, 5], (Kind::Float, Device::Cpu)) * 2.0 + 3.0;
        let y = bn.forward_t(&x, true).unwrap();
        assert_eq!(bn.num_batches_tracked.int64_value(&[]), 1);
        // Running mean moved 10% of the way to the batch mean (about 3).
        let m = bn.running_mean.mean(Kind::Float).double_value(&[]);
        assert!((m - 0.3).abs() < 0.05, "{m}");
        // Per-channel output mean ~ bias (0), std ~ weight (~1).
        let ym = y.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float);
        assert!(ym.abs().max().double_value(&[]) < 1e-4);
        let _ = bn.forward_t(&x, false).unwrap();
        assert_eq!(bn.num_batches_tracked.int64_value(&[]), 1);
    }

    #[test]
    fn conv_shapes_and_init() {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let spec = ConvSpec {
            cin: 64,
            cout: 32,
            kernel: 4,
            stride: 2,
            padding: 1,
            transposed: true,
            bias: false,
            spectral: false,
        };
        let c = Conv::new(&(vs.root() / "up"), spec).unwrap();
        let y = c.forward_t(&Tensor::zeros([2, 64, 8, 8], (Kind::Float, Device::Cpu)), true).unwrap();
        assert_eq!(y.size(), [2, 32, 16, 16]);
        let Weight::Plain(w) = &c.weight else { panic!("plain weight expected") };
        assert_eq!(w.size(), [64, 32, 4, 4]);
        let std = w.std(true).double_value(&[]);
        assert!((std - 0.02).abs() < 0.001, "{std}");
        let down = Conv::new(&(vs.root() / "down"), ConvSpec { transposed: false, ..spec }).unwrap();
        let y = down.forward_t(&Tensor::zeros([2, 64, 8, 8], (Kind::Float, Device::Cpu)), true).unwrap();
        assert_eq!(y.size(), [2, 32, 4, 4]);
    }
}
