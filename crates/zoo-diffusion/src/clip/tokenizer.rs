//! CLIP's tokenizer as transformers' `CLIPTokenizer` (transformers/models/clip/
//! tokenization_clip.py) builds it, and Stable Diffusion's way of batching prompts.
//!
//! The pipeline, run by the `tokenizers` crate:
//! - normalizer: NFC, every run of whitespace to one space, lower case;
//! - pre-tokenizer: CLIP's regex (the two special tokens, the English contractions, runs of
//!   letters, single digits, runs of other non-space characters), whitespace dropped, then
//!   byte-level (GPT-2's byte-to-unicode map, no prefix space);
//! - model: BPE over `vocab` and `merges` whose word-final symbols end in `</w>`, unknown
//!   token `<|endoftext|>`;
//! - `<|startoftext|>` before and `<|endoftext|>` after the text;
//! - decoding: byte-level, then `</w>` becomes a space and the ends are trimmed.
//!
//! A tokenizer folder holds `vocab.json` + `merges.txt`, or `tokenizer.json`, with
//! `tokenizer_config.json` and `special_tokens_map.json` for the special tokens and
//! `model_max_length`. As in transformers, only the vocabulary, the merges and the added
//! tokens of a `tokenizer.json` are used: `CLIPTokenizer` rebuilds the pipeline above from them.
//!
//! Every special token (bos, eos, unk and pad) is an added token, matched in the raw text
//! before normalization. This includes Stable Diffusion 2's pad token "!": as with
//! transformers, "hi!!" is `hi</w> ! !` there, not `hi</w> !!</w>`.
//!
//! Batches are encoded as diffusers' Stable Diffusion pipelines do: truncated to
//! `model_max_length` (77) ids including bos and eos, padded with the pad token (SD 1.x pads
//! with `<|endoftext|>`, SD 2.x with "!"). A long prompt is not an error: the text of the dropped
//! tokens comes back (diffusers prints it in a warning).
use std::path::Path;

use serde_json::{json, Value};
use tch::Tensor;
use tokenizers::AddedToken;

use crate::{Error, Result};

/// Ids of a batch of prompts, padded and truncated to `model_max_length`.
#[derive(Debug)]
pub struct ClipBatch {
    /// (B, model_max_length) int64.
    pub input_ids: Tensor,
    /// Per prompt, the text truncation dropped (diffusers' warning text), if any.
    pub truncated: Vec<Option<String>>,
}

/// The tokenizer of a CLIP text encoder.
#[derive(Clone)]
pub struct ClipTokenizer {
    tok: tokenizers::Tokenizer,
    model_max_length: usize,
    bos: u32,
    eos: u32,
    pad: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("model_max_length", &self.model_max_length)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

/// The special tokens and length a tokenizer folder configures, with CLIPTokenizer's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTokenizerConfig {
    pub bos_token: String,
    pub eos_token: String,
    pub unk_token: String,
    pub pad_token: String,
    /// Ids per prompt, bos and eos included.
    pub model_max_length: usize,
}

impl Default for ClipTokenizerConfig {
    fn default() -> Self {
        ClipTokenizerConfig {
            bos_token: "<|startoftext|>".into(),
            eos_token: "<|endoftext|>".into(),
            unk_token: "<|endoftext|>".into(),
            pad_token: "<|endoftext|>".into(),
            model_max_length: 77,
        }
    }
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Core(zoo_core::Error::bad_file(path, msg))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| zoo_core::Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not valid JSON: {e}")))
}

/// A special token as tokenizer configs write it: a string, or an AddedToken's fields.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl ClipTokenizerConfig {
    /// Reads `tokenizer_config.json`, then `special_tokens_map.json` (whose tokens win, as in
    /// transformers); keys and files that are absent keep the defaults. A `model_max_length`
    /// that is absent or not a small integer (transformers writes 1e30 for "no limit") is 77,
    /// CLIP's context length.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut cfg = ClipTokenizerConfig::default();
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let v = read_json(&path)?;
            for (key, slot) in [
                ("bos_token", &mut cfg.bos_token),
                ("eos_token", &mut cfg.eos_token),
                ("unk_token", &mut cfg.unk_token),
                ("pad_token", &mut cfg.pad_token),
            ] {
                match v.get(key) {
                    None | Some(Value::Null) => {}
                    Some(t) => {
                        *slot = token_content(t)
                            .ok_or_else(|| bad(&path, format!("'{key}' is neither a string nor a token")))?
                    }
                }
            }
            if let Some(n) = v.get("model_max_length").and_then(Value::as_u64) {
                if (3..=1 << 20).contains(&n) {
                    cfg.model_max_length = n as usize;
                }
            }
        }
        Ok(cfg)
    }
}

/// The pipeline CLIPTokenizer sets up around its BPE model, as `tokenizer.json` fields.
fn pipeline(vocab: Value, merges: Value, unk: &str, added_tokens: Value) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split",
             "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    })
}

/// `merges.txt`: one "left right" pair a line after an optional `#version` line.
fn read_merges(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| zoo_core::Error::io(path, e))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        match line.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => merges.push(json!([a, b])),
            _ => {
                return Err(bad(path, format!("line {}: a merge is two tokens separated by a space", i + 1)))
            }
        }
    }
    Ok(Value::Array(merges))
}

impl ClipTokenizer {
    /// Loads a tokenizer folder (see the module docs): `tokenizer.json` when present, else
    /// `vocab.json` + `merges.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg = ClipTokenizerConfig::from_dir(dir)?;
        let json_path = dir.join("tokenizer.json");
        let (vocab, merges, added, source) = if json_path.is_file() {
            let mut v = read_json(&json_path)?;
            let model = v.get_mut("model").ok_or_else(|| bad(&json_path, "no \"model\""))?;
            if model.get("type").and_then(Value::as_str).is_some_and(|t| t != "BPE") {
                return Err(bad(&json_path, "not a BPE tokenizer, so not CLIP's"));
            }
            let vocab =
                model.get_mut("vocab").map(Value::take).ok_or_else(|| bad(&json_path, "no model vocab"))?;
            let merges = model.get_mut("merges").map(Value::take).unwrap_or(json!([]));
            let added = v.get_mut("added_tokens").map(Value::take).unwrap_or(json!([]));
            (vocab, merges, added, json_path)
        } else {
            let vocab_path = dir.join("vocab.json");
            let merges_path = dir.join("merges.txt");
            if !vocab_path.is_file() || !merges_path.is_file() {
                return Err(bad(
                    dir,
                    "not a CLIP tokenizer folder: it needs tokenizer.json, or vocab.json and merges.txt",
                ));
            }
            (read_json(&vocab_path)?, read_merges(&merges_path)?, json!([]), vocab_path)
        };
        if !vocab.is_object() {
            return Err(bad(&source, "the vocabulary is not a map of token to id"));
        }
        let spec = pipeline(vocab, merges, &cfg.unk_token, added);
        let mut tok = spec
            .to_string()
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| bad(&source, format!("bad BPE vocabulary or merges: {e}")))?;
        Self::added_tokens_decoder(&mut tok, dir)?;
        let specials: Vec<AddedToken> = [&cfg.bos_token, &cfg.eos_token, &cfg.unk_token, &cfg.pad_token]
            .into_iter()
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        tok.add_special_tokens(&specials);
        let id = |t: &str, key: &str| {
            tok.token_to_id(t).ok_or_else(|| bad(&source, format!("{key} '{t}' is not in the vocabulary")))
        };
        Ok(ClipTokenizer {
            bos: id(&cfg.bos_token, "bos_token")?,
            eos: id(&cfg.eos_token, "eos_token")?,
            pad: id(&cfg.pad_token, "pad_token")?,
            model_max_length: cfg.model_max_length,
            tok,
        })
    }

    /// Tokens a `tokenizer_config.json` adds by id (`added_tokens_decoder`, transformers >= 4.34),
    /// e.g. textual-inversion tokens.
    fn added_tokens_decoder(tok: &mut tokenizers::Tokenizer, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer_config.json");
        if !path.is_file() {
            return Ok(());
        }
        let v = read_json(&path)?;
        let Some(map) = v.get("added_tokens_decoder").and_then(Value::as_object) else {
            return Ok(());
        };
        let mut entries: Vec<(u64, &Value)> = Vec::new();
        for (id, t) in map {
            let id = id
                .parse::<u64>()
                .map_err(|_| bad(&path, format!("added token id '{id}' is not a number")))?;
            entries.push((id, t));
        }
        entries.sort_by_key(|(id, _)| *id);
        for (id, t) in entries {
            let content =
                token_content(t).ok_or_else(|| bad(&path, format!("added token {id} has no content")))?;
            let flag = |k: &str, d: bool| t.get(k).and_then(Value::as_bool).unwrap_or(d);
            let special = flag("special", false);
            let token = AddedToken::from(content, special)
                .single_word(flag("single_word", false))
                .lstrip(flag("lstrip", false))
                .rstrip(flag("rstrip", false))
                .normalized(flag("normalized", !special));
            if special {
                tok.add_special_tokens(&[token]);
            } else {
                tok.add_tokens(&[token]);
            }
        }
        Ok(())
    }

    /// Ids per prompt after padding or truncation, bos and eos included (77 for CLIP).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    pub fn bos_token_id(&self) -> i64 {
        i64::from(self.bos)
    }

    pub fn eos_token_id(&self) -> i64 {
        i64::from(self.eos)
    }

    pub fn pad_token_id(&self) -> i64 {
        i64::from(self.pad)
    }

    /// Ids the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// The ids of `text` between bos and eos, neither added nor truncated.
    fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tok.encode(text, false).map_err(|e| Error::Input(format!("CLIP tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `tokenizer(text).input_ids`: bos, the text's ids, eos; no padding, no truncation.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let ids = self.content_ids(text)?;
        let mut out = Vec::with_capacity(ids.len() + 2);
        out.push(self.bos_token_id());
        out.extend(ids.into_iter().map(i64::from));
        out.push(self.eos_token_id());
        Ok(out)
    }

    /// One prompt as Stable Diffusion encodes it: `tokenizer(text, padding="max_length",
    /// max_length=model_max_length, truncation=True)`, exactly `model_max_length` ids ending in
    /// eos then pads; and the text of the ids truncation dropped, if any.
    pub fn encode_padded(&self, text: &str) -> Result<(Vec<i64>, Option<String>)> {
        let n = self.model_max_length;
        let mut ids = self.content_ids(text)?;
        let keep = n.saturating_sub(2);
        let dropped = if ids.len() > keep { Some(self.decode_u32(&ids.split_off(keep))?) } else { None };
        let mut out = Vec::with_capacity(n);
        out.push(self.bos);
        out.extend(ids);
        out.push(self.eos);
        out.resize(n, self.pad);
        Ok((out.into_iter().map(i64::from).collect(), dropped))
    }

    /// A batch of prompts as Stable Diffusion encodes it (see [`ClipTokenizer::encode_padded`]).
    /// Shapes: B prompts -> input_ids (B, model_max_length) int64.
    pub fn encode_batch<S: AsRef<str>>(&self, prompts: &[S]) -> Result<ClipBatch> {
        let mut ids = Vec::with_capacity(prompts.len() * self.model_max_length);
        let mut truncated = Vec::with_capacity(prompts.len());
        for p in prompts {
            let (row, dropped) = self.encode_padded(p.as_ref())?;
            ids.extend(row);
            truncated.push(dropped);
        }
        let input_ids =
            Tensor::from_slice(&ids).f_view([prompts.len() as i64, self.model_max_length as i64])?;
        Ok(ClipBatch { input_ids, truncated })
    }

    /// `tokenizer.decode(ids)`: special tokens kept, `</w>` read as a space, ends trimmed.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids = ids
            .iter()
            .map(|&i| {
                u32::try_from(i).map_err(|_| Error::Input(format!("token id {i} is negative or too large")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.decode_u32(&ids)
    }

    fn decode_u32(&self, ids: &[u32]) -> Result<String> {
        let text = self.tok.decode(ids, false).map_err(|e| Error::Input(format!("CLIP tokenizer: {e}")))?;
        Ok(text.replace("</w>", " ").trim().to_string())
    }
}

/// GPT-2's byte-to-unicode table, in its order (which is the order of CLIP's first 256 vocabulary
/// entries): the printable bytes map to themselves, the others to U+0100, U+0101, ...
pub fn byte_symbols() -> Vec<char> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter().filter_map(char::from_u32).collect()
}

/// BPE merges learned on a word list (Sennrich et al. 2016): start from characters (the last
/// one carrying `</w>`), merge the most frequent adjacent pair (ties: the smallest pair) until
/// every word is one symbol. Applied in this order, the merges spell each word as one token.
fn learn_merges(words: &[String]) -> Vec<(String, String)> {
    let mut seqs: Vec<Vec<String>> = words
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut v: Vec<String> = w.chars().map(String::from).collect();
            if let Some(last) = v.last_mut() {
                last.push_str("</w>");
            }
            v
        })
        .collect();
    let mut merges = Vec::new();
    loop {
        let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
        for s in &seqs {
            for p in s.windows(2) {
                *counts.entry((p[0].as_str(), p[1].as_str())).or_default() += 1;
            }
        }
        let Some(((a, b), _)) = counts.iter().max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0))) else {
            break;
        };
        let (a, b) = (a.to_string(), b.to_string());
        for s in seqs.iter_mut() {
            let mut out = Vec::with_capacity(s.len());
            let mut i = 0;
            while i < s.len() {
                if i + 1 < s.len() && s[i] == a && s[i + 1] == b {
                    out.push(format!("{a}{b}"));
                    i += 2;
                } else {
                    out.push(s[i].clone());
                    i += 1;
                }
            }
            *s = out;
        }
        merges.push((a, b));
    }
    merges
}

/// Writes a CLIP tokenizer folder (`vocab.json`, `merges.txt`, `tokenizer_config.json`,
/// `special_tokens_map.json`) for a small closed vocabulary: CLIP's 512 byte symbols (so any
/// text still tokenizes, letter by letter), merges that make each of `words` (lower case) one
/// token, then `<|startoftext|>` and `<|endoftext|>` (also the pad token, as SD 1.x).
/// `CLIPTokenizer` and [`ClipTokenizer::from_dir`] load it. Returns the vocabulary size.
pub fn write_word_tokenizer(dir: &Path, words: &[&str], model_max_length: usize) -> Result<usize> {
    let mut words: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    words.sort();
    words.dedup();
    if let Some(w) = words.iter().find(|w| !w.chars().all(|c| c.is_ascii_alphabetic())) {
        return Err(Error::Config(format!("tokenizer word '{w}': only the letters a-z make one token")));
    }
    let merges = learn_merges(&words);
    let chars = byte_symbols();
    let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    vocab.extend(chars.iter().map(|c| format!("{c}</w>")));
    for (a, b) in &merges {
        let t = format!("{a}{b}");
        if !vocab.contains(&t) {
            vocab.push(t);
        }
    }
    vocab.extend(["<|startoftext|>".to_string(), "<|endoftext|>".to_string()]);
    std::fs::create_dir_all(dir).map_err(|e| zoo_core::Error::io(dir, e))?;
    let map: serde_json::Map<String, Value> =
        vocab.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let mut merges_txt = String::from("#version: 0.2\n");
    for (a, b) in &merges {
        merges_txt += &format!("{a} {b}\n");
    }
    let specials = json!({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"
    });
    let mut config = specials.clone();
    if let Some(m) = config.as_object_mut() {
        m.insert("model_max_length".into(), json!(model_max_length));
        m.insert("do_lower_case".into(), json!(true));
        m.insert("tokenizer_class".into(), json!("CLIPTokenizer"));
    }
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    for (name, text) in [
        ("vocab.json", serde_json::to_string(&Value::Object(map)).unwrap_or_default()),
        ("merges.txt", merges_txt),
        ("tokenizer_config.json", pretty(&config)),
        ("special_tokens_map.json", pretty(&specials)),
    ] {
        zoo_core::fsutil::atomic_write_bytes(&dir.join(name), text.as_bytes())?;
    }
    Ok(vocab.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGES: &[&str] =
        &["h i</w>", "h i", "l o", "lo w</w>", "! !</w>", "! !", "h e", "he l", "l o</w>", "hel lo</w>"];

    /// A tiny CLIP-style vocabulary: the 256 byte symbols, the same with `</w>`, the merges,
    /// then the two special tokens (ids 522, 523); padded with `pad`, 12 ids a prompt.
    fn folder(pad: &str, as_tokenizer_json: bool) -> tempfile::TempDir {
        let chars = byte_symbols();
        let mut vocab: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        vocab.extend(chars.iter().map(|c| format!("{c}</w>")));
        vocab.extend(MERGES.iter().map(|m| m.replace(' ', "")));
        vocab.extend(["<|startoftext|>".to_string(), "<|endoftext|>".to_string()]);
        let map: serde_json::Map<String, Value> =
            vocab.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        if as_tokenizer_json {
            // Only the model's vocabulary and merges count; the rest is CLIPTokenizer's.
            let t = json!({"model": {"type": "BPE", "vocab": map, "merges": MERGES}, "normalizer": null});
            std::fs::write(p.join("tokenizer.json"), t.to_string()).unwrap();
        } else {
            std::fs::write(p.join("vocab.json"), Value::Object(map).to_string()).unwrap();
            std::fs::write(p.join("merges.txt"), format!("#version: 0.2\n{}\n", MERGES.join("\n"))).unwrap();
        }
        let cfg = json!({"tokenizer_class": "CLIPTokenizer", "model_max_length": 12,
            "bos_token": {"content": "<|startoftext|>", "normalized": true, "__type": "AddedToken"}});
        std::fs::write(p.join("tokenizer_config.json"), cfg.to_string()).unwrap();
        std::fs::write(p.join("special_tokens_map.json"), json!({"pad_token": pad}).to_string()).unwrap();
        dir
    }

    // Expected values: transformers 5.24's CLIPTokenizer.from_pretrained on the same files,
    // `tok(text, padding="max_length", max_length=12, truncation=True).input_ids`.
    const LONG: &str = "hiiiiiiiiiiiiiiiiiiiiii  lo w";
    const UNICODE: &str = "Hello, world's caf\u{e9} n't 123 \u{1f642}";

    #[test]
    fn sd1_style_matches_transformers() {
        let dir = folder("<|endoftext|>", false);
        let t = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(
            (t.bos_token_id(), t.eos_token_id(), t.pad_token_id(), t.model_max_length()),
            (522, 523, 523, 12)
        );
        let cases: &[(&str, &[i64])] = &[
            ("hi!!  HELLO low", &[522, 512, 516, 521, 515, 523, 523, 523, 523, 523, 523, 523]),
            ("hello!! ! hi", &[522, 521, 516, 256, 512, 523, 523, 523, 523, 523, 523, 523]),
            ("a <|endoftext|> b", &[522, 320, 523, 321, 523, 523, 523, 523, 523, 523, 523, 523]),
            ("", &[522, 523, 523, 523, 523, 523, 523, 523, 523, 523, 523, 523]),
            (LONG, &[522, 513, 72, 72, 72, 72, 72, 72, 72, 72, 72, 523]),
            (UNICODE, &[522, 521, 267, 86, 78, 81, 75, 323, 6, 338, 66, 523]),
        ];
        for (text, want) in cases {
            assert_eq!(t.encode_padded(text).unwrap().0, *want, "{text:?}");
        }
        assert_eq!(
            t.encode(UNICODE).unwrap(),
            vec![
                522, 521, 267, 86, 78, 81, 75, 323, 6, 338, 66, 64, 69, 127, 358, 333, 6, 339, 272, 273, 274,
                172, 253, 247, 480, 523
            ]
        );
        // diffusers' warning text: batch_decode(untruncated[:, 11:-1]).
        assert_eq!(t.encode_padded(LONG).unwrap().1.as_deref(), Some("iiiiiiiiiiii lo w"));
        assert_eq!(t.encode_padded(UNICODE).unwrap().1.as_deref(), Some("af\u{e9} n 't 1 2 3 \u{1f642}"));
        assert_eq!(t.encode_padded("hello!! ! hi").unwrap().1, None);
    }

    #[test]
    fn sd2_style_pads_with_its_pad_token_which_splits_text() {
        for as_json in [false, true] {
            let dir = folder("!", as_json);
            let t = ClipTokenizer::from_dir(dir.path()).unwrap();
            assert_eq!(t.pad_token_id(), 0);
            let b = t.encode_batch(&["hi!!  HELLO low", "hello!! ! hi", "", LONG]).unwrap();
            assert_eq!(b.input_ids.size(), vec![4, 12]);
            let rows: Vec<Vec<i64>> =
                (0..4).map(|i| Vec::<i64>::try_from(b.input_ids.get(i)).unwrap()).collect();
            assert_eq!(rows[0], vec![522, 512, 0, 0, 521, 515, 523, 0, 0, 0, 0, 0], "json: {as_json}");
            assert_eq!(rows[1], vec![522, 521, 0, 0, 0, 512, 523, 0, 0, 0, 0, 0]);
            assert_eq!(rows[2], vec![522, 523, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(rows[3], vec![522, 513, 72, 72, 72, 72, 72, 72, 72, 72, 72, 523]);
            assert_eq!(b.truncated, vec![None, None, None, Some("iiiiiiiiiiii lo w".to_string())]);
        }
    }

    #[test]
    fn decode_reads_word_ends_as_spaces() {
        let dir = folder("<|endoftext|>", false);
        let t = ClipTokenizer::from_dir(dir.path()).unwrap();
        let ids = t.encode("hi!!  HELLO low").unwrap();
        assert_eq!(t.decode(&ids).unwrap(), "<|startoftext|>hi !! hello low <|endoftext|>");
        assert_eq!(t.decode(&ids[1..ids.len() - 1]).unwrap(), "hi !! hello low");
        assert!(t.decode(&[-1]).is_err());
    }

    #[test]
    fn bad_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("vocab.json and merges.txt"), "{e}");
        // A special token the vocabulary lacks gets the next id, as in transformers.
        let dir = folder("<pad>", false);
        let t = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!((t.pad_token_id(), t.vocab_size()), (524, 525));
        let dir = folder("!", false);
        std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\nh i j\n").unwrap();
        let e = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("merges.txt") && e.contains("line 2"), "{e}");
        std::fs::write(dir.path().join("merges.txt"), "q z\n").unwrap();
        let e = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("vocab.json"), "{e}");
    }

    #[test]
    fn a_word_tokenizer_spells_each_word_as_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let words = ["a", "an", "red", "circle", "circles", "the", "top", "left", "right", "to", "two"];
        let n = write_word_tokenizer(dir.path(), &words, 16).unwrap();
        let tok = ClipTokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(tok.vocab_size(), n);
        assert_eq!(tok.model_max_length(), 16);
        for w in words {
            let ids = tok.encode(w).unwrap();
            assert_eq!(ids.len(), 3, "{w}: {ids:?}");
            assert_eq!(tok.decode(&ids[1..2]).unwrap(), w);
        }
        let (ids, cut) = tok.encode_padded("Two RED circles to the left").unwrap();
        assert_eq!((ids.len(), cut), (16, None));
        assert_eq!(ids[7..], [tok.pad_token_id(); 9]);
        // Other words still tokenize, letter by letter.
        assert_eq!(tok.encode("zebra").unwrap().len(), 7);
        assert!(write_word_tokenizer(dir.path(), &["red", "x-ray"], 16).is_err());
    }
}
