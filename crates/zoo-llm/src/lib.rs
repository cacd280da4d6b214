//! zoo-llm: decoder-only transformers (GPT-2, Llama family), tokenizers, sampling and the
//! training stages.
//!
//! - [`gpt2`] and [`llama`] (which also runs Mistral and Qwen2): models that load Hugging Face
//!   checkpoints as they are; [`model::Model`] holds either, [`config::ModelConfig`] reads
//!   `config.json` and picks one by `model_type`.
//! - [`attention`]: the KV cache, masks for left padding and sliding windows, fused attention.
//! - [`tokenizer`]: `tokenizer.json`, char-level and byte tokenizers, BPE training, streaming decode.
//! - [`sampling`] and [`generate`]: logits processors and the KV-cached generation loop.
//! - [`chat`]: chat templates from `tokenizer_config.json`, rendered as transformers does.
//! - [`arch`]: the architecture of a model as a diagram with shapes and parameter counts.
//! - [`train`]: the training stages: pretraining, SFT, reward model, PPO and DPO.
//! - [`demo`]: a tiny char-level GPT trained in seconds, for `zoo demo`.
pub mod arch;
pub mod attention;
pub mod chat;
pub mod config;
pub mod demo;
pub mod error;
pub mod generate;
pub mod gpt2;
pub mod llama;
pub mod model;
pub mod sampling;
pub mod score;
pub mod tokenizer;
pub mod train;

pub use attention::KvCache;
pub use config::ModelConfig;
pub use error::{Error, Result};
pub use model::{LoadedModel, Model, Weights};
pub use tokenizer::Tokenizer;
