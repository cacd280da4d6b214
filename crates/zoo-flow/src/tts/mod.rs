//! Text-to-speech: a Glow-TTS-style flow acoustic model and what it needs.
//!
//! - [`text`]: English normalisation, the character and phoneme symbol sets, text -> ids;
//! - [`espeak`]: espeak-ng as a program: phonemes, and rendered speech for the corpus;
//! - [`evaluate`]: intelligibility through the listener, mel L1 and mel-cepstral distortion
//!   against the corpus, real-time factor;
//! - [`corpus`]: corpora in the LJSpeech layout, the sentence generator, rendering a corpus;
//! - [`listener`]: a spoken-digit classifier trained on FSDD, the listener of the
//!   intelligibility test;
//! - [`mas`]: monotonic alignment search, text tokens to mel frames;
//! - [`glow_tts`]: the Glow-TTS acoustic model: text encoder, duration predictor, flow decoder,
//!   its training loss and inference;
//! - [`model`]: presets and model folders (model, symbols, mel settings, recipe), and speech
//!   from text: Glow-TTS then Griffin-Lim;
//! - [`train`]: training on an LJSpeech-layout corpus with zoo-core's Trainer (exact resume).
pub mod corpus;
pub mod espeak;
pub mod evaluate;
pub mod glow_tts;
pub mod listener;
pub mod mas;
pub mod model;
pub mod text;
pub mod train;

pub use corpus::{Corpus, Utterance};
pub use glow_tts::{GlowTts, GlowTtsConfig};
pub use mas::monotonic_alignment_search;
pub use model::{SpeakOptions, Speech, TtsFile, TtsModel, Vocoding, WaveGlowVoice};
pub use text::{normalize, text_to_ids, Encoded, Symbols};
pub use train::{TrainSpec, Training};
