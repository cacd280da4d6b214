//! Text-to-speech: a Glow-TTS-style flow acoustic model and what it needs.
//!
//! - [`text`]: English normalisation, the character and phoneme symbol sets, text -> ids;
//! - [`espeak`]: espeak-ng as a program: phonemes, and rendered speech for the corpus;
//! - [`corpus`]: corpora in the LJSpeech layout, the sentence generator, rendering a corpus;
//! - [`mas`]: monotonic alignment search, text tokens to mel frames.
pub mod corpus;
pub mod espeak;
pub mod mas;
pub mod text;

pub use corpus::{Corpus, Utterance};
pub use mas::monotonic_alignment_search;
pub use text::{normalize, text_to_ids, Encoded, Symbols};
