//! zoo-flow: normalizing flows: flow layers, WaveGlow and density flows.
//!
//! The models land here with their issues; see docs/architecture.md for the plan of the crate.
