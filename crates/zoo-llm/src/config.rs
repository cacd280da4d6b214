//! Reading a checkpoint's `config.json`: `model_type` picks the model, required keys are
//! checked all at once (serde alone reports only the first missing one).
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{gpt2, llama, Error, Result};

/// A token id or a list of them: `eos_token_id` is a list in Llama 3 configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// The `model_type`s zoo builds, and the model that runs each.
pub const SUPPORTED: &[(&str, &str)] =
    &[("gpt2", "GPT-2"), ("llama", "Llama"), ("mistral", "Llama"), ("qwen2", "Llama")];

/// The largest size accepted for one dimension of a model, 2^24: real configs stay far below
/// (vocabularies of about 256k, contexts of about 1M positions), and a typo or a hostile file
/// (`"n_positions": 1000000000000000`) must be an error before anything is allocated.
pub const MAX_DIM: i64 = 1 << 24;

/// Refuses a size above [`MAX_DIM`], naming its key.
pub(crate) fn check_dim(key: &str, v: i64) -> std::result::Result<(), String> {
    if v > MAX_DIM {
        return Err(format!("\"{key}\" is {v}, more than the {MAX_DIM} zoo accepts for one dimension"));
    }
    Ok(())
}

/// This machine's memory (MemTotal of /proc/meminfo), None where it cannot be read.
fn memory_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// A parsed config of one of the supported families.
// One value per loaded model: boxing the larger variant would save bytes no one misses.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Gpt2(gpt2::Config),
    Llama(llama::Config),
}

impl ModelConfig {
    /// Reads a `config.json` (or a preset, which is one).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = zoo_core::presets::read(path)?;
        Self::from_json(&text, path)
    }

    /// Parses config JSON; `path` names its origin in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(Error::config(path, "not a JSON object"));
        };
        let supported = SUPPORTED.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ");
        let model_type = match obj.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(Error::config(
                    path,
                    format!("no \"model_type\" key: say which model this is (supported: {supported})"),
                ))
            }
        };
        let required = match model_type.as_str() {
            "gpt2" => gpt2::Config::REQUIRED,
            "llama" | "mistral" | "qwen2" => llama::Config::REQUIRED,
            other => {
                return Err(Error::config(
                    path,
                    format!("model_type '{other}' is not supported; supported types are {supported}"),
                ))
            }
        };
        let missing: Vec<&str> = required.iter().copied().filter(|k| !obj.contains_key(*k)).collect();
        if !missing.is_empty() {
            return Err(Error::config(
                path,
                format!("{model_type} config lacks required key(s): {}", missing.join(", ")),
            ));
        }
        let bad = |e: serde_path_to_error::Error<serde_json::Error>| {
            Error::config(path, format!("{model_type} config: \"{}\": {}", e.path(), e.inner()))
        };
        let cfg = match model_type.as_str() {
            "gpt2" => ModelConfig::Gpt2(serde_path_to_error::deserialize(v).map_err(bad)?),
            _ => ModelConfig::Llama(serde_path_to_error::deserialize(v).map_err(bad)?),
        };
        cfg.validate().map_err(|m| Error::config(path, m))?;
        Ok(cfg)
    }

    /// Checks the values, and that the weights fit in this machine's memory: tch's VarStore
    /// panics when an allocation fails, so a size no machine can hold must stop here.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            ModelConfig::Gpt2(c) => c.validate()?,
            ModelConfig::Llama(c) => c.validate()?,
        }
        if let Some(mem) = memory_bytes() {
            self.check_fits(mem)?;
        }
        Ok(())
    }

    /// The parameter count, as the terms of the keys that make it (approximate: the large
    /// matrices only), e.g. ("vocab_size", vocab x width for the embedding and an untied head).
    fn param_terms(&self) -> Vec<(&'static str, f64)> {
        match self {
            ModelConfig::Gpt2(c) => {
                let (v, p, e, l) =
                    (c.vocab_size as f64, c.n_positions as f64, c.n_embd as f64, c.n_layer as f64);
                let inner = c.n_inner.map_or(4.0 * e, |i| i as f64);
                let heads = if c.tie_word_embeddings { 1.0 } else { 2.0 };
                vec![
                    ("vocab_size", heads * v * e),
                    ("n_positions", p * e),
                    ("n_layer", l * (4.0 * e * e + 2.0 * e * inner)),
                ]
            }
            ModelConfig::Llama(c) => {
                let (v, h, i, l) = (
                    c.vocab_size as f64,
                    c.hidden_size as f64,
                    c.intermediate_size as f64,
                    c.num_hidden_layers as f64,
                );
                let (q, kv) =
                    ((c.num_attention_heads * c.head_dim()) as f64, (c.kv_heads() * c.head_dim()) as f64);
                let heads = if c.tie_word_embeddings { 1.0 } else { 2.0 };
                vec![
                    ("vocab_size", heads * v * h),
                    ("num_hidden_layers", l * (2.0 * h * q + 2.0 * h * kv + 3.0 * h * i)),
                ]
            }
        }
    }

    /// Refuses a model whose weights need more than `mem` bytes even at 2 bytes per parameter
    /// (f16/bf16, the smallest dtype zoo runs), naming the key whose term is largest.
    pub fn check_fits(&self, mem: f64) -> std::result::Result<(), String> {
        let terms = self.param_terms();
        let params: f64 = terms.iter().map(|t| t.1).sum();
        if params * 2.0 <= mem {
            return Ok(());
        }
        let key = terms.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map_or("vocab_size", |t| t.0);
        Err(format!(
            "\"{key}\" makes a model of {params:.3e} parameters, {:.1} GB even at 2 bytes each, more than this \
             machine's {:.1} GB of memory",
            params * 2.0 / 1e9,
            mem / 1e9
        ))
    }

    /// The config as `config.json` would hold it (with `model_type`).
    pub fn to_json(&self) -> Value {
        let (mut v, t) = match self {
            ModelConfig::Gpt2(c) => (serde_json::to_value(c), "gpt2".to_string()),
            ModelConfig::Llama(c) => (serde_json::to_value(c), c.model_type.clone()),
        };
        if let Ok(Value::Object(m)) = &mut v {
            m.insert("model_type".into(), Value::String(t));
        }
        v.unwrap_or(Value::Null)
    }

    pub fn vocab_size(&self) -> i64 {
        match self {
            ModelConfig::Gpt2(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    pub fn n_layers(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_layer as usize,
            ModelConfig::Llama(c) => c.num_hidden_layers as usize,
        }
    }

    /// The longest sequence the model takes: GPT-2's learned positions, or Llama's
    /// `max_position_embeddings` (RoPE has no hard limit, but quality ends there).
    pub fn context_len(&self) -> i64 {
        match self {
            ModelConfig::Gpt2(c) => c.n_positions,
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    pub fn eos_token_ids(&self) -> Vec<i64> {
        let e = match self {
            ModelConfig::Gpt2(c) => &c.eos_token_id,
            ModelConfig::Llama(c) => &c.eos_token_id,
        };
        e.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }

    pub fn model_type(&self) -> &str {
        match self {
            ModelConfig::Gpt2(_) => "gpt2",
            ModelConfig::Llama(c) => &c.model_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &Value) -> Result<ModelConfig> {
        ModelConfig::from_json(&v.to_string(), Path::new("config.json"))
    }

    /// Every key in REQUIRED is needed by serde, and every other key has a default: so the
    /// list the error prints is exactly the truth.
    #[test]
    fn required_lists_are_exact() {
        let full = [
            ModelConfig::Gpt2(gpt2::Config::tiny()).to_json(),
            ModelConfig::Llama(llama::Config::tiny()).to_json(),
        ];
        for (v, required) in full.iter().zip([gpt2::Config::REQUIRED, llama::Config::REQUIRED]) {
            assert!(parse(v).is_ok());
            for key in v.as_object().unwrap().keys() {
                let mut w = v.clone();
                w.as_object_mut().unwrap().remove(key);
                let r = parse(&w);
                if key == "model_type" {
                    assert!(r.is_err());
                } else if required.contains(&key.as_str()) {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains(&format!("lacks required key(s): {key}")), "{e}");
                } else {
                    assert!(r.is_ok(), "{key}: {:?}", r.err());
                }
            }
        }
    }

    #[test]
    fn sizes_that_cannot_be_allocated_are_refused_by_key() {
        let mut v = ModelConfig::Gpt2(gpt2::Config::tiny()).to_json();
        v["n_positions"] = serde_json::json!(1_000_000_000_000_000i64);
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.starts_with("config.json: \"n_positions\" is 1000000000000000, more than"), "{e}");
        let mut v = ModelConfig::Llama(llama::Config::tiny()).to_json();
        v["vocab_size"] = serde_json::json!(1_000_000_000_000i64);
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.starts_with("config.json: \"vocab_size\" is 1000000000000, more than"), "{e}");

        // Each size allowed, the whole too large: the largest term is named.
        let mut c = gpt2::Config::tiny();
        (c.vocab_size, c.n_embd, c.n_head) = (MAX_DIM, 1 << 16, 1);
        let e = ModelConfig::Gpt2(c.clone()).check_fits(64e9).unwrap_err();
        assert!(e.starts_with("\"vocab_size\" makes a model of 1."), "{e}");
        assert!(e.contains("e12 parameters,"), "{e}");
        assert!(e.ends_with("more than this machine's 64.0 GB of memory"), "{e}");
        assert!(ModelConfig::Gpt2(c).check_fits(4e12).is_ok());
        let mut c = llama::Config::tiny();
        c.num_hidden_layers = MAX_DIM;
        let e = ModelConfig::Llama(c).check_fits(64e9).unwrap_err();
        assert!(e.starts_with("\"num_hidden_layers\" makes a model of"), "{e}");
        // GPT-2 small fits in 1 GB.
        assert!(ModelConfig::Gpt2(gpt2::Config::gpt2()).check_fits(1e9).is_ok());
    }

    #[test]
    fn all_missing_keys_are_named_at_once() {
        let e = parse(&serde_json::json!({"model_type": "llama", "vocab_size": 10})).unwrap_err().to_string();
        assert!(e.starts_with("config.json: llama config lacks required key(s): hidden_size, "), "{e}");
        assert!(e.contains("num_attention_heads"), "{e}");
        let e = parse(&serde_json::json!({"model_type": "bert"})).unwrap_err().to_string();
        assert_eq!(
            e,
            "config.json: model_type 'bert' is not supported; supported types are gpt2, llama, mistral, qwen2"
        );
        let e = parse(&serde_json::json!({"n_embd": 3})).unwrap_err().to_string();
        assert!(e.contains("no \"model_type\""), "{e}");
        let mut v = ModelConfig::Gpt2(gpt2::Config::tiny()).to_json();
        v["n_head"] = serde_json::json!("four");
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.starts_with("config.json: gpt2 config: \"n_head\": invalid type: string"), "{e}");
    }

    #[test]
    fn eos_may_be_a_list() {
        let mut v = ModelConfig::Llama(llama::Config::tiny()).to_json();
        v["eos_token_id"] = serde_json::json!([7, 9]);
        assert_eq!(parse(&v).unwrap().eos_token_ids(), [7, 9]);
    }
}
