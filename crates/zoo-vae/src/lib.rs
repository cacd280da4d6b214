//! zoo-vae: variational autoencoders, including the AutoencoderKL of latent diffusion.
//!
//! - [`mlp`]: the classic 784-400-20 VAE of the PyTorch examples repo (Kingma & Welling 2014).
//! - [`conv`]: a convolutional VAE with configurable latent size; beta-VAE is the same model
//!   trained with `beta` in the loss (Higgins et al. 2017).
//! - [`autoencoder_kl`]: diffusers' `AutoencoderKL` (Rombach et al. 2022), loading a diffusers
//!   `vae/` folder 1:1.
//! - [`distributions`]: the diagonal Gaussian posterior, analytic KL and the decoder likelihoods.
//! - [`model`]: one type over the three models, with the model-folder format of `zoo vae`.
//! - [`train`]: the training task, the datasets and the evaluation (ELBO, importance-weighted NLL).
//!
//! Image conventions: the MLP and conv VAEs see images in [0, 1] (the pixel intensities of the
//! PyTorch example, which its Bernoulli likelihood needs); AutoencoderKL sees [-1, 1], as in
//! diffusers. [`model::Vae`] converts from zoo's [-1, 1] image tensors at its boundary.
pub mod autoencoder_kl;
pub mod conv;
pub mod distributions;
pub mod mlp;
pub mod model;
pub mod train;

pub use autoencoder_kl::{AutoencoderKL, AutoencoderKLConfig};
pub use distributions::{DiagonalGaussianDistribution, Likelihood};
pub use model::{ModelConfig, Vae};

/// Errors of zoo-vae.
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

impl From<Error> for zoo_core::Error {
    /// The training loop's [`zoo_core::train::TrainTask`] returns zoo-core errors.
    fn from(e: Error) -> Self {
        match e {
            Error::Core(e) => e,
            Error::Torch(e) => zoo_core::Error::Torch(e),
            Error::Config(m) => zoo_core::Error::Config(m),
            Error::Input(m) => zoo_core::Error::Shape(m),
        }
    }
}

/// Refuses the first size below 1, naming it: `sizes` are (config key, value) of `what`.
pub(crate) fn sizes_at_least_one(what: &str, sizes: &[(&str, i64)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v < 1) {
        Some((name, v)) => Err(Error::Config(format!("{what}: {name} must be at least 1, got {v}"))),
        None => Ok(()),
    }
}
