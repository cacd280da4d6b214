//! zoo-diffusion: UNets, noise schedulers and diffusion pipelines.
//!
//! The models land here with their issues; see docs/architecture.md for the plan of the crate.
