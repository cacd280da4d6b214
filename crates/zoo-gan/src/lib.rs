//! zoo-gan: generators, discriminators and adversarial training.
//!
//! The models land here with their issues; see docs/architecture.md for the plan of the crate.
