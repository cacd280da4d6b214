//! One module per subcommand.
pub mod convert;
pub mod demo;
pub mod diffusion;
pub mod eval;
pub mod flow;
pub mod gan;
pub mod info;
pub mod inspect;
pub mod llm;
pub mod llm_train;
pub mod tts;
pub mod txt2img;
pub mod vae;
