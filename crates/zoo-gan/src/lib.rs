//! zoo-gan: generators, discriminators and adversarial training.
//!
//! - [`layers`]: convolutions with optional spectral norm (stored as PyTorch's `weight_orig`,
//!   `weight_u`, `weight_v`) and a BatchNorm that keeps PyTorch's three buffers.
//! - [`dcgan`]: the DCGAN of the PyTorch examples repo (Radford et al. 2016), parameter names
//!   of its `main.N` `nn.Sequential`, plus a class-conditional variant.
//! - [`stylegan2`]: a StyleGAN2-style generator (mapping network, modulated convolutions, noise,
//!   ToRGB skips, style mixing, truncation) and residual discriminator, with the names and
//!   semantics of NVIDIA's stylegan2-ada-pytorch.
//! - [`loss`]: non-saturating BCE, hinge and WGAN-GP losses; gradient penalty and R1.
//! - [`model`]: one type over the generators and discriminators, presets and model folders.
//! - [`train`]: the adversarial training loop (two networks, two optimisers, exact resume).
//! - [`sample`]: latents after seeding, truncation and spherical interpolation.
pub mod dcgan;
pub mod layers;
pub mod loss;
pub mod model;
pub mod sample;
pub mod stylegan2;
pub mod train;

/// Errors of zoo-gan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] zoo_core::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A model or training setting that cannot work, with what to change.
    #[error("{0}")]
    Config(String),
    /// An input of the wrong size or kind for the model.
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
