//! zoo-diffusion: UNets, noise schedulers and diffusion pipelines.
//!
//! - [`clip`]: transformers' `CLIPTextModel` and `CLIPTokenizer`, the prompt encoder of Stable
//!   Diffusion, with transformers' weight names so a `text_encoder/` folder loads 1:1.
//! - [`schedulers`]: one [`schedulers::Scheduler`] trait and one file per algorithm (DDPM, DDIM,
//!   Euler, Euler ancestral, DPM-Solver++ 2M), configured from diffusers' `scheduler_config.json`.
//! - [`unet`]: diffusers' `UNet2DModel` (Ho et al. 2020, "Denoising Diffusion Probabilistic
//!   Models"), with diffusers' weight names so a `unet/` folder loads 1:1.
//! - [`pipeline`]: the denoising loop (unconditional and class-conditional, classifier-free
//!   guidance) and model folders.
//! - [`txt2img_train`]: a text-to-image model trained from nothing on the captioned scenes
//!   (autoencoder, then text encoder and UNet together); recipes under models/txt2img/.
//! - [`train`]: the denoising objective (epsilon or v), EMA and class dropout on zoo-core's
//!   training loop; presets under models/diffusion/.
pub mod adherence;
pub mod clip;
pub mod pipeline;
pub mod schedulers;
pub mod stable_diffusion;
pub mod train;
pub mod txt2img_train;
pub mod unet;

pub use clip::{CLIPTextConfig, CLIPTextModel, CLIPTextOutput, ClipBatch, ClipTokenizer};
pub use pipeline::{DiffusionModel, ModelSpec, SampleOptions};
pub use schedulers::{Scheduler, SchedulerConfig};
pub use stable_diffusion::StableDiffusion;
pub use unet::{UNet2DConditionConfig, UNet2DConditionModel, UNet2DConfig, UNet2DModel};

/// Errors of zoo-diffusion.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] zoo_core::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// The autoencoder of latent diffusion.
    #[error(transparent)]
    Vae(#[from] zoo_vae::Error),
    /// A model, scheduler or training setting that cannot work, with what to change.
    #[error("{0}")]
    Config(String),
    /// An input of the wrong size or kind, or a call out of order.
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
            Error::Vae(e) => e.into(),
            Error::Config(m) => zoo_core::Error::Config(m),
            Error::Input(m) => zoo_core::Error::Shape(m),
        }
    }
}
