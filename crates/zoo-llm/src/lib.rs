//! zoo-llm: decoder-only transformers (GPT-2, Llama family), tokenizers, sampling and the training stages.
//!
//! The models land here with their issues; see docs/architecture.md for the plan of the crate.
