//! PyTorch's basic layers as the families share them: `nn.Linear`, `nn.Conv2d`,
//! `nn.ConvTranspose2d`, `nn.GroupNorm` and `nn.LayerNorm`, with PyTorch's parameter names, with
//! fallible forwards (`f_*` calls), so a bad input shape is an error message instead of a panic,
//! and with PyTorch's default initialisation (uniform in ±1/sqrt(fan_in) for weights and biases,
//! as `nn.Linear` and `nn.Conv2d` do), so a model trained here starts where the PyTorch reference
//! starts. The products run through [`crate::ops`] (oneDNN matmuls, Winograd convolutions).
use tch::{nn, Tensor};

use crate::{Error, Result};

fn uniform(bound: f64) -> nn::Init {
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// `nn.Linear`, its forward through zoo-core's `ops::linear` (oneDNN's matmul for training-sized
/// products). Shapes: (.., in) -> (.., out).
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(p: nn::Path, i: i64, o: i64) -> Result<Self> {
        Self::with_bias(p, i, o, true)
    }

    /// `nn.Linear(i, o, bias=bias)`.
    pub fn with_bias(p: nn::Path, i: i64, o: i64, bias: bool) -> Result<Self> {
        let b = 1.0 / (i as f64).sqrt();
        Ok(Linear {
            weight: p.f_var("weight", &[o, i], uniform(b))?,
            bias: if bias { Some(p.f_var("bias", &[o], uniform(b))?) } else { None },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::linear(x, &self.weight, self.bias.as_ref())
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
        // ops::conv2d: Winograd for the 3x3 stride-1 convolutions (AutoencoderKL's)
        crate::ops::conv2d(x, &self.weight, Some(&self.bias), [s, s], [p, p])
    }
    /// `relu(self.forward(x))`, fused where zoo_core's kernels run the layer.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        crate::ops::conv2d_relu(x, &self.weight, Some(&self.bias), [s, s], [p, p])
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
        crate::ops::conv_transpose2d(x, &self.weight, Some(&self.bias), [s, s], [p, p])
    }
    /// `relu(self.forward(x))`, fused where zoo_core's kernels run the layer.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.stride, self.padding);
        crate::ops::conv_transpose2d_relu(x, &self.weight, Some(&self.bias), [s, s], [p, p])
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
    /// Errors when `groups` does not divide `channels` (the message names `norm_num_groups`,
    /// the config key that sets it in every diffusers model).
    pub fn new(p: nn::Path, groups: i64, channels: i64, eps: f64) -> Result<Self> {
        if groups <= 0 || channels % groups != 0 {
            return Err(Error::Config(format!(
                "norm_num_groups: {groups} groups do not divide {channels} channels"
            )));
        }
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

/// `nn.LayerNorm` over the last dimension, with affine parameters. Shapes: (.., C) -> (.., C).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, channels: i64, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: p.f_var("weight", &[channels], nn::Init::Const(1.0))?,
            bias: p.f_var("bias", &[channels], nn::Init::Const(0.0))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.size();
        Ok(x.f_layer_norm(&c, Some(&self.weight), Some(&self.bias), self.eps, true)?)
    }
}
