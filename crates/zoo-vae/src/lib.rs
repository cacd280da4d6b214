//! zoo-vae: variational autoencoders, including the AutoencoderKL of latent diffusion.
//!
//! The models land here with their issues; see docs/architecture.md for the plan of the crate.
