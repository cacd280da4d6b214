//! The few layers the VAEs are built of, with fallible forwards (`f_*` calls), so a bad input
//! shape is an error message instead of a panic, and PyTorch's default initialisation (uniform
//! in ±1/sqrt(fan_in) for weights and biases, as `nn.Linear` and `nn.Conv2d` do), so a model
//! trained here starts where the PyTorch reference starts.
use tch::{nn, Tensor};

use crate::Result;

fn uniform(bound: f64) -> nn::Init {
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Linear`, its forward through zoo-core's `ops::linear` (oneDNN's matmul for training-sized
/// products). Shapes: (.., in) -> (.., out).
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(p: nn::Path, i: i64, o: i64) -> Result<Self> {
        let b = 1.0 / (i as f64).sqrt();
        Ok(Linear {
            weight: p.f_var("weight", &[o, i], uniform(b))?,
            bias: p.f_var("bias", &[o], uniform(b))?,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(zoo_core::ops::linear(x, &self.weight, Some(&self.bias))?)
    }
}

/// `nn.Conv2d` with a square kernel. Shapes: (B, in, H, W) -> (B, out, H', W').
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn new(p: nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> Result<Self> {
        let b = 1.0 / ((i * k * k) as f64).sqrt();
        Ok(Conv2d {
            weight: p.f_var("weight", &[o, i, k, k], uniform(b))?,
            bias: p.f_var("bias", &[o], uniform(b))?,
            stride,
            padding,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        // zoo_core's conv2d: Winograd for the 3x3 stride-1 convolutions (AutoencoderKL's)
        Ok(zoo_core::ops::conv2d(x, &self.weight, Some(&self.bias), [s, s], [p, p])?)
    }
    /// `relu(self.forward(x))`, fused where zoo_core's kernels run the layer.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        Ok(zoo_core::ops::conv2d_relu(x, &self.weight, Some(&self.bias), [s, s], [p, p])?)
    }
}

/// `nn.ConvTranspose2d` with a square kernel. Shapes: (B, in, H, W) -> (B, out, H', W').
#[derive(Debug)]
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Tensor,
    stride: i64,
    padding: i64,
}

impl ConvTranspose2d {
    pub fn new(p: nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> Result<Self> {
        // PyTorch computes fan_in from the weight's dim 1, which is `out` for a transposed conv.
        let b = 1.0 / ((o * k * k) as f64).sqrt();
        Ok(ConvTranspose2d {
            weight: p.f_var("weight", &[i, o, k, k], uniform(b))?,
            bias: p.f_var("bias", &[o], uniform(b))?,
            stride,
            padding,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        Ok(zoo_core::ops::conv_transpose2d(x, &self.weight, Some(&self.bias), [s, s], [p, p])?)
    }
    /// `relu(self.forward(x))`, fused where zoo_core's kernels run the layer.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        Ok(zoo_core::ops::conv_transpose2d_relu(x, &self.weight, Some(&self.bias), [s, s], [p, p])?)
    }
}

/// `nn.GroupNorm` with affine parameters. Shapes: (B, C, ..) -> (B, C, ..).
#[derive(Debug)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub fn new(p: nn::Path, groups: i64, channels: i64, eps: f64) -> Result<Self> {
        Ok(GroupNorm {
            weight: p.f_var("weight", &[channels], nn::Init::Const(1.0))?,
            bias: p.f_var("bias", &[channels], nn::Init::Const(0.0))?,
            groups,
            eps,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps, true)?)
    }
}
