//! Tokenizers: Hugging Face `tokenizer.json` files (through the `tokenizers` crate), a
//! character-level tokenizer for tiny corpora, raw bytes for models without a tokenizer, a
//! byte-level BPE trainer, and streaming decoding that never splits a UTF-8 character.
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::{Error, Result};

/// A character-level tokenizer: one id per distinct character of a text, in code-point order
/// (nanoGPT's `shakespeare_char`). Saved as a Hugging Face `tokenizer.json` that the
/// `tokenizers` library (and so transformers) reads too: a BPE model whose vocabulary is the
/// characters, with no merges, no pre-tokenizer and a `Fuse` decoder, which splits text into
/// characters and joins them back. zoo recognises that shape and encodes with this type, which
/// reports a character outside the vocabulary instead of dropping it as BPE without an
/// unknown token does. The older `{"type": "char", "chars": [...]}` files still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharTokenizer {
    #[serde(rename = "type")]
    kind: String,
    chars: Vec<char>,
    #[serde(skip)]
    index: HashMap<char, i64>,
}

impl CharTokenizer {
    /// The vocabulary of `text`: its distinct characters, sorted.
    pub fn from_text(text: &str) -> Result<Self> {
        let chars: Vec<char> = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
        if chars.is_empty() {
            return Err(Error::Tokenizer("cannot build a char tokenizer from an empty text".into()));
        }
        Ok(Self::from_chars(chars))
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let index = chars.iter().enumerate().map(|(i, c)| (*c, i as i64)).collect();
        CharTokenizer { kind: "char".into(), chars, index }
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        text.chars()
            .map(|c| {
                self.index.get(&c).copied().ok_or_else(|| {
                    Error::Tokenizer(format!("character {c:?} is not in the char tokenizer's vocabulary"))
                })
            })
            .collect()
    }

    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        ids.iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.chars.get(i))
                    .ok_or_else(|| Error::Tokenizer(format!("token id {i} is outside the char vocabulary")))
            })
            .collect()
    }

    /// The Hugging Face `tokenizer.json` form (see the type's documentation).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let vocab: serde_json::Map<String, serde_json::Value> =
            self.chars.iter().enumerate().map(|(i, c)| (c.to_string(), serde_json::json!(i))).collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": []
            }
        })
    }

    /// The char tokenizer a `tokenizer.json` holds in [`CharTokenizer::to_hf_json`]'s shape:
    /// a merge-less BPE over single characters with ids 0..n, a `Fuse` decoder and nothing
    /// else; `None` for any other tokenizer.
    fn from_hf_json(v: &serde_json::Value) -> Option<Self> {
        let model = v.get("model")?;
        let plain = |k: &str| v.get(k).is_none_or(serde_json::Value::is_null);
        let shape_ok = model.get("type")?.as_str()? == "BPE"
            && model.get("merges")?.as_array()?.is_empty()
            && v.get("decoder")?.get("type")?.as_str()? == "Fuse"
            && v.get("added_tokens").and_then(|a| a.as_array()).is_none_or(Vec::is_empty)
            && ["normalizer", "pre_tokenizer", "post_processor"].iter().all(|k| plain(k));
        if !shape_ok {
            return None;
        }
        let vocab = model.get("vocab")?.as_object()?;
        let mut chars = vec![None; vocab.len()];
        for (piece, id) in vocab {
            let mut it = piece.chars();
            let (Some(c), None) = (it.next(), it.next()) else { return None };
            let slot = chars.get_mut(usize::try_from(id.as_u64()?).ok()?)?;
            if slot.replace(c).is_some() {
                return None;
            }
        }
        Some(Self::from_chars(chars.into_iter().collect::<Option<Vec<char>>>()?))
    }
}

/// Any of the tokenizers zoo reads.
#[derive(Clone)]
pub enum Tokenizer {
    Hf(Box<tokenizers::Tokenizer>),
    Char(CharTokenizer),
    /// Token id = byte value (0..=255): for models made from a preset, which have no
    /// tokenizer of their own.
    Bytes,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

fn tok_err(path: &Path) -> impl Fn(tokenizers::Error) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{}: {e}", path.display()))
}

impl Tokenizer {
    /// Reads a `tokenizer.json`: a Hugging Face tokenizer, or zoo's char tokenizer.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Tokenizer(format!("{}: not valid JSON: {e}", path.display())))?;
        if v.get("type").and_then(|t| t.as_str()) == Some("char") {
            let c: CharTokenizer = serde_json::from_value(v)
                .map_err(|e| Error::Tokenizer(format!("{}: bad char tokenizer: {e}", path.display())))?;
            return Ok(Tokenizer::Char(CharTokenizer::from_chars(c.chars)));
        }
        if let Some(c) = CharTokenizer::from_hf_json(&v) {
            return Ok(Tokenizer::Char(c));
        }
        let t = text.parse::<tokenizers::Tokenizer>().map_err(tok_err(path))?;
        Ok(Tokenizer::Hf(Box::new(t)))
    }

    /// The `tokenizer.json` of a model folder, if it has one.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let p = dir.join("tokenizer.json");
        if p.is_file() {
            Self::from_file(&p).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes the tokenizer as JSON (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = match self {
            Tokenizer::Hf(t) => t.to_string(true).map_err(tok_err(path))?,
            Tokenizer::Char(c) => {
                serde_json::to_string_pretty(&c.to_hf_json()).map_err(|e| Error::Tokenizer(e.to_string()))?
            }
            Tokenizer::Bytes => return Err(Error::Tokenizer("the byte tokenizer has no file".into())),
        };
        Ok(zoo_core::fsutil::atomic_write_bytes(path, text.as_bytes())?)
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Tokenizer::Hf(_) => "tokenizer.json",
            Tokenizer::Char(_) => "char-level",
            Tokenizer::Bytes => "raw bytes",
        }
    }

    /// Ids the tokenizer can decode: 0..vocab_size (with added tokens).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Hf(t) => t.get_vocab_size(true),
            Tokenizer::Char(c) => c.vocab_size(),
            Tokenizer::Bytes => 256,
        }
    }

    /// Token ids of `text`, with the special tokens the tokenizer adds to an input (e.g.
    /// Llama's `<s>`), as `tokenizer(text)` does in transformers.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        match self {
            Tokenizer::Hf(t) => {
                let enc = t.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
                Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
            }
            Tokenizer::Char(c) => c.encode(text),
            Tokenizer::Bytes => Ok(text.bytes().map(i64::from).collect()),
        }
    }

    /// Token ids of `text` without the special tokens the tokenizer would add: for text that
    /// already holds them, such as a rendered chat template (transformers'
    /// `apply_chat_template` encodes with `add_special_tokens=False` for the same reason).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<i64>> {
        match self {
            Tokenizer::Hf(t) => {
                let enc = t.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
                Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
            }
            _ => self.encode(text),
        }
    }

    /// Text of `ids`, special tokens left out. Incomplete UTF-8 sequences become U+FFFD.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let bad = |i: i64| Error::Tokenizer(format!("token id {i} is outside the vocabulary"));
        match self {
            Tokenizer::Hf(t) => {
                let ids =
                    ids.iter().map(|&i| u32::try_from(i).map_err(|_| bad(i))).collect::<Result<Vec<_>>>()?;
                t.decode(&ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
            }
            Tokenizer::Char(c) => c.decode(ids),
            Tokenizer::Bytes => {
                let bytes =
                    ids.iter().map(|&i| u8::try_from(i).map_err(|_| bad(i))).collect::<Result<Vec<_>>>()?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// The id of a special token such as `<|endoftext|>`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        match self {
            Tokenizer::Hf(t) => t.token_to_id(token).map(i64::from),
            _ => None,
        }
    }

    /// Each token as the tokenizer stores it (e.g. GPT-2's `Ġworld`), for display.
    pub fn pieces(&self, ids: &[i64]) -> Vec<String> {
        ids.iter()
            .map(|&i| match self {
                Tokenizer::Hf(t) => u32::try_from(i).ok().and_then(|i| t.id_to_token(i)).unwrap_or_default(),
                _ => self.decode(&[i]).unwrap_or_default(),
            })
            .collect()
    }
}

/// Streaming decoder: turns tokens into text as they arrive, holding back a token whose bytes
/// end inside a UTF-8 character (byte-level BPE splits multi-byte characters across tokens)
/// until the character is complete. The same approach as transformers' `TextStreamer`: the
/// text of the tokens since the last emitted chunk is decoded with the chunk's tokens as
/// context (so decoders that treat the first token specially, e.g. SentencePiece's leading
/// space, see the same context as a full decode) and emitted when it ends in a whole character.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<i64>,
    prefix: usize,
    read: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder { tok, ids: Vec::new(), prefix: 0, read: 0 }
    }

    /// Adds one token; returns the new text, if a whole character (or more) is complete.
    pub fn step(&mut self, id: i64) -> Result<Option<String>> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        self.ids.push(id);
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            if let Some(new) = now.strip_prefix(before.as_str()) {
                let new = new.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                return Ok(Some(new));
            }
        }
        Ok(None)
    }

    /// What is still held back at the end (an incomplete character decodes to U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.strip_prefix(before.as_str()).filter(|s| !s.is_empty()).map(str::to_string))
    }
}

/// Trains a byte-level BPE tokenizer (GPT-2's scheme: bytes mapped to printable characters,
/// GPT-2's pre-tokenizer regex, merges learned from the files) with `<|endoftext|>` as its
/// one special token. `vocab_size` counts the 256 byte tokens and the special token.
pub fn train_bpe(files: &[&Path], vocab_size: usize) -> Result<Tokenizer> {
    let min = 256 + 1;
    if vocab_size < min {
        return Err(Error::Input(format!(
            "--vocab-size {vocab_size} is too small: byte-level BPE needs at least {min} (256 bytes + <|endoftext|>)"
        )));
    }
    let mut names = Vec::new();
    for f in files {
        if !f.is_file() {
            return Err(Error::io(f, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        std::str::from_utf8(&std::fs::read(f).map_err(|e| Error::io(f, e))?)
            .map_err(|e| Error::Input(format!("{}: not UTF-8 text ({e})", f.display())))?;
        names.push(f.to_string_lossy().into_owned());
    }
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    let byte_level = ByteLevel::new(false, true, true);
    let mut t = tokenizers::Tokenizer::new(BPE::default());
    t.with_pre_tokenizer(Some(byte_level));
    t.with_decoder(Some(byte_level));
    t.with_post_processor(Some(byte_level));
    t.train_from_files(&mut trainer, names).map_err(|e| Error::Tokenizer(format!("BPE training: {e}")))?;
    Ok(Tokenizer::Hf(Box::new(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The café serves crème brûlée. 日本語のテキスト. The café, the café!\n\
        Naïve bees buzz in the breeze; the bees see the sea. 日本語 and café again.\n";

    fn bpe(dir: &Path, vocab: usize) -> Tokenizer {
        let p = dir.join("corpus.txt");
        std::fs::write(&p, TEXT.repeat(4)).unwrap();
        train_bpe(&[&p], vocab).unwrap()
    }

    #[test]
    fn char_tokenizer_round_trips_and_saves() {
        let dir = tempfile::tempdir().unwrap();
        let c = CharTokenizer::from_text("hello world").unwrap();
        assert_eq!(c.vocab_size(), 8);
        let t = Tokenizer::Char(c);
        let ids = t.encode("hold").unwrap();
        assert_eq!(ids, [3, 5, 4, 1]); // " dehlorw": ' '=0 d=1 e=2 h=3 l=4 o=5 r=6 w=7
        assert_eq!(t.decode(&ids).unwrap(), "hold");
        let p = dir.path().join("tokenizer.json");
        t.save(&p).unwrap();
        let back = Tokenizer::from_file(&p).unwrap();
        assert!(matches!(back, Tokenizer::Char(_)));
        assert_eq!(back.encode("world").unwrap(), t.encode("world").unwrap());
        // The same file is a Hugging Face tokenizer with the same ids and text.
        let hf = tokenizers::Tokenizer::from_file(&p).unwrap();
        assert_eq!(hf.encode("hold", true).unwrap().get_ids(), [3, 5, 4, 1]);
        assert_eq!(hf.decode(&[3, 5, 4, 1], true).unwrap(), "hold");
        let e = t.encode("hex").unwrap_err().to_string();
        assert!(e.contains("'x'"), "{e}");
        assert!(t.decode(&[8]).is_err());
        assert!(CharTokenizer::from_text("").is_err());
    }

    #[test]
    fn bpe_trains_round_trips_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let t = bpe(dir.path(), 300);
        assert_eq!(t.vocab_size(), 300);
        let text = "The café sees 日本語 bees.";
        let ids = t.encode(text).unwrap();
        assert!(ids.len() < text.len(), "merges shorten the text");
        assert_eq!(t.decode(&ids).unwrap(), text);
        let p = dir.path().join("tokenizer.json");
        t.save(&p).unwrap();
        let back = Tokenizer::from_file(&p).unwrap();
        assert_eq!(back.encode(text).unwrap(), ids);
        assert_eq!(back.token_id("<|endoftext|>"), Some(0));
        let e = train_bpe(&[&p], 100).err().unwrap().to_string();
        assert!(e.contains("at least 257"), "{e}");
    }

    /// Streaming over tokens that split multi-byte characters emits whole characters only,
    /// and the chunks add up to the full decode.
    #[test]
    fn streaming_never_splits_a_character() {
        let dir = tempfile::tempdir().unwrap();
        // A small vocabulary leaves the rarer multi-byte characters split into byte tokens.
        let t = bpe(dir.path(), 260);
        let text = "crème brûlée, 日本語!";
        let ids = t.encode(text).unwrap();
        let splits = ids.iter().filter(|&&i| t.decode(&[i]).unwrap().contains('\u{FFFD}')).count();
        assert!(splits > 0, "the test needs tokens that hold part of a character");
        let mut s = StreamDecoder::new(&t);
        let mut chunks = Vec::new();
        for &i in &ids {
            if let Some(c) = s.step(i).unwrap() {
                chunks.push(c);
            }
        }
        assert!(s.finish().unwrap().is_none());
        assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')), "{chunks:?}");
        assert_eq!(chunks.concat(), text);
        assert!(chunks.len() > 5);

        // Bytes: a character cut off at the end comes out as U+FFFD only from finish().
        let b = Tokenizer::Bytes;
        let mut s = StreamDecoder::new(&b);
        let mut out = String::new();
        for &byte in "é".as_bytes().iter().chain("日".as_bytes()[..2].iter()) {
            out.extend(s.step(byte as i64).unwrap());
        }
        assert_eq!(out, "é");
        assert_eq!(s.finish().unwrap().as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, "{not json").unwrap();
        assert!(Tokenizer::from_file(&p).unwrap_err().to_string().contains("not valid JSON"));
        std::fs::write(&p, "{\"model\": 3}").unwrap();
        assert!(Tokenizer::from_file(&p).unwrap_err().to_string().contains("tokenizer.json"));
        assert!(Tokenizer::from_dir(dir.path().join("none").as_path()).unwrap().is_none());
    }
}
