//! zoo-flow: normalizing flows: flow layers, WaveGlow and density flows.
//!
//! - [`layers`]: the invertible layers (1x1 conv, affine coupling, ActNorm, squeeze, early
//!   outputs), each with a forward pass that returns its log-determinant and an inverse;
//! - [`wn`]: WaveGlow's WaveNet-like coupling conditioner;
//! - [`waveglow`]: the WaveGlow vocoder (NVIDIA's module names), its loss, presets, model folders;
//! - [`denoiser`]: WaveGlow's bias-spectrum denoiser;
//! - [`train`]: training WaveGlow on a folder of WAVs, and copy-synthesis metrics;
//! - [`density`]: RealNVP / Glow on 2-D toy densities;
//! - [`glow`]: multi-scale Glow for images (MNIST), bits per dimension;
//! - [`glow_train`]: training Glow on MNIST, model folders, test bits/dim and sample grids;
//! - [`tts`]: text-to-speech: text front end, LJSpeech-layout corpora, Glow-TTS.
pub mod denoiser;
pub mod density;
pub mod error;
pub mod glow;
pub mod glow_train;
pub mod layers;
pub mod train;
pub mod tts;
pub mod waveglow;
pub mod wn;

pub use error::{Error, Result};
